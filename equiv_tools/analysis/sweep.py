"""Sweeps: many runs on a Dask cluster, gathered into one tidy table, ``DIR/results.csv``.

Each job (``core.sweep_spec.Job``) trains its run into ``DIR/<run>`` (or loads it there when complete, or
resumes it when unfinished), measures ID and OOD accuracy, and finds the best relation and its share on OOD
inputs. The worker that runs a job writes its run directory, so on a real cluster ``DIR`` must be storage
that every worker sees at the same path. A job's result is kept in its run directory
(``RunDir.sweep_result_file``): re-running a finished sweep trains nothing and writes the same table.
Every job runs on one torch thread, so a result does not depend on the worker that computed it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from equiv_tools.core.errors import InputError
from equiv_tools.core.files import atomic_write_bytes, read_json, write_json
from equiv_tools.core.rundir import RunDir
from equiv_tools.core.sweep_spec import Job, jobs_from_spec, read_spec

RESULT_COLUMNS = ["run", "task", "preset", "n_layers", "d_model", "recipe", "seed", "steps", "id_accuracy", "ood_accuracy",
                  "best_relation", "best_relation_share", "residue_relation", "residue_relation_share", "id_floor_after_fit", "status", "error", "seconds"]
FIT = 0.99  # held-out ID accuracy at which a run counts as fitted, for ``id_floor_after_fit``
RESULTS_FILE = "results.csv"


def _job_row(job: Job) -> dict:
    """The columns that describe a job, before anything is measured."""
    row = dict.fromkeys(RESULT_COLUMNS)
    row.update(run=job.run, task=job.build_task().describe(), preset=job.preset, seed=job.seed, status="error", error="")
    model, training = job.model_config(), job.train_config()
    row.update(n_layers=model["n_layers"], d_model=model["d_model"], recipe=training.recipe, steps=training.steps)
    return row


@contextlib.contextmanager
def _one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train_or_reuse(job: Job, run_dir: RunDir, device: str) -> None:
    """Leave a finished run of ``job`` in ``run_dir``: train it, resume it, or check that the one there is this job's."""
    from equiv_tools.runs.training import resume, train

    cfg, model = job.train_config(), job.model_config()
    if not run_dir.config_file.is_file():
        run_dir.require_new("delete it, or give the run another name in the spec")
        train(job.build_task(), run_dir, preset=job.preset, train_cfg=cfg, model_overrides=job.model,
              command=["equiv-tools", "sweep", f"(run {job.run})"], progress=False, device=device)
        return
    if not run_dir.state_file.is_file():
        raise InputError(f"{run_dir} was interrupted before its first checkpoint (it has {run_dir.config_file.name} but no "
                         f"{run_dir.state_file.name}); delete it and run the sweep again")
    recorded = run_dir.read_config()
    if recorded.task.to_dict() != job.build_task().to_dict() or recorded.model != model or recorded.training != cfg:
        raise InputError(f"{run_dir} holds another run than this job's (its config.json differs in task, model or training); "
                         "delete it, or give the run another name in the spec")
    if run_dir.read_state_step() < cfg.steps:
        resume(run_dir, progress=False, device=device)


def id_floor_after_fit(metrics: pd.DataFrame) -> Optional[float]:
    """The lowest held-out ID accuracy (``id_test`` in metrics.csv) from the first evaluation at or above ``FIT`` on;
    None if the run never got there. Well below ``FIT``: the run jumped out of its minimum after fitting."""
    test = metrics[metrics.split == "id_test"].sort_values("step").accuracy.to_numpy()
    fitted = (test >= FIT).nonzero()[0]
    return None if len(fitted) == 0 else float(test[fitted[0]:].min())


def _measure(job: Job, run_dir: RunDir, device: str) -> dict:
    """ID and OOD accuracy (``evaluate_run``), the best of the task's relations on OOD inputs, and the share of OOD
    answers that follow the paper's relation (``DigitTask.residue_relation``: operands reduced mod 10^train_digits)."""
    from equiv_tools.analysis.discovery import discover_relations
    from equiv_tools.analysis.evaluation import evaluate_run
    from equiv_tools.forward.decoding import predict
    from equiv_tools.runs.models import load_run

    run = load_run(run_dir, device=device)
    result = evaluate_run(run, n=job.evaluate_n, seed=job.evaluate_seed)
    measured = {"id_accuracy": result["id_accuracy"], "ood_accuracy": result["ood_accuracy"],
                "id_floor_after_fit": id_floor_after_fit(run_dir.read_metrics())}
    if run.task.has_ood:
        a, b = run.task.sample_ood(job.evaluate_n, seed=job.evaluate_seed)
        summary, _ = discover_relations(run.model, run.task, a, b)
        residue = run.task.residue_relation()
        measured.update(best_relation=summary.relation.iloc[0], best_relation_share=float(summary.accuracy.iloc[0]),
                        residue_relation=residue.name,
                        residue_relation_share=float(np.mean(predict(run.model, run.task, a, b) == residue(a, b))))
    return measured


def run_job(job: dict, out: str, device: str = "cpu") -> dict:
    """Run one job (``Job.to_dict()``) into ``out/<run>``; return its result row. Runs on a Dask worker.

    Never raises for the job's own failures: a row with ``status="error"`` and the error in one line."""
    job = Job(**job)
    start = time.perf_counter()
    row = _job_row(job)
    try:
        if not Path(out).is_dir():
            raise InputError(f"the worker on {socket.gethostname()} cannot see the output folder {out}; "
                             "on a cluster, --out must be storage that every worker shares at the same path")
        run_dir = RunDir(Path(out) / job.run)
        if run_dir.sweep_result_file.is_file() and run_dir.weights_file.is_file():
            kept = read_json(run_dir.sweep_result_file)
            if kept.get("job") == job.to_dict() and set(kept.get("row", {})) == set(RESULT_COLUMNS):  # this job, this table's columns
                return kept["row"]
        with _one_torch_thread():
            _train_or_reuse(job, run_dir, device)
            row.update(_measure(job, run_dir, device))
        row.update(status="ok", seconds=round(time.perf_counter() - start, 1))
        write_json(run_dir.sweep_result_file, {"job": job.to_dict(), "row": row})
    except Exception as exc:  # a failed job is a row, never the end of the sweep
        message = " ".join(str(exc).split()) or type(exc).__name__
        row.update(status="error", error=f"{type(exc).__name__}: {message}", seconds=round(time.perf_counter() - start, 1))
    return row


@contextlib.contextmanager
def _dask_client(client, scheduler: Optional[str], workers: Optional[int]):
    """The client to submit to: the one given, one connected to ``scheduler``, or an embedded LocalCluster's."""
    from dask.distributed import Client, LocalCluster

    if client is not None:
        yield client
    elif scheduler is not None:
        with Client(scheduler, timeout="30s") as connected:
            yield connected
    else:
        n = workers or os.cpu_count() or 1
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as local:
            yield local


def sweep(spec, out, client=None, scheduler: Optional[str] = None, workers: Optional[int] = None, device: str = "cpu",
          progress: bool = True) -> pd.DataFrame:
    """Run every job of ``spec`` (a dict, or the path of a YAML file) on Dask; write and return ``out/results.csv``.

    ``client``: a ``dask.distributed.Client`` to use (its workers must run one thread each: ``--nthreads 1``); else
    ``scheduler`` (``tcp://HOST:PORT``) to connect to; else an embedded ``LocalCluster`` of ``workers`` processes
    (default: one per CPU core), one thread each. ``device`` is resolved on each worker.
    The table has one row per run, in spec order, with the columns ``RESULT_COLUMNS``; failed jobs are rows
    with their error. A bad spec raises InputError before any job starts.
    """
    from dask.distributed import as_completed

    if client is not None and (scheduler is not None or workers is not None):
        raise InputError("give a client, or a scheduler address, or a number of workers for an embedded cluster: one of them")
    jobs = jobs_from_spec(spec if isinstance(spec, dict) else read_spec(spec))
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; name a folder for the sweep's runs")
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    with _dask_client(client, scheduler, workers) as dask_client:
        threaded = {worker: n for worker, n in dask_client.nthreads().items() if n > 1}
        if threaded:
            raise InputError(f"{len(threaded)} Dask worker(s) run {max(threaded.values())} threads; a sweep needs one job at a time "
                             "per worker process (dask worker --nthreads 1), since jobs share a process's torch seed and threads")
        # longest first (steps x layers), so that no worker is left with a long job at the end while the others idle
        futures = {dask_client.submit(run_job, job.to_dict(), str(out), device, pure=False,
                                      priority=job.train_config().steps * job.model_config()["n_layers"]): job for job in jobs}
        bar = tqdm(total=len(jobs), desc="sweep", unit="run", disable=not progress)
        for future in as_completed(futures):
            job = futures[future]
            try:
                rows[job.run] = future.result()
            except Exception as exc:  # the worker died, or could not import the kit
                rows[job.run] = {**_job_row(job), "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
            bar.update()
        bar.close()
    table = pd.DataFrame([rows[job.run] for job in jobs], columns=RESULT_COLUMNS)
    _write_if_changed(out / RESULTS_FILE, table)
    return table


def _write_if_changed(path: Path, table: pd.DataFrame) -> None:
    """Write the table as CSV, unless the file already holds exactly that (a re-run changes no file)."""
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    data = buf.getvalue().encode()
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write_bytes(path, data)


def read_results(out) -> pd.DataFrame:
    """A sweep's ``results.csv`` from its folder ``out``."""
    path = Path(out) / RESULTS_FILE
    if not path.is_file():
        raise InputError(f"{out} has no {RESULTS_FILE}: run the sweep first (equiv-tools sweep SPEC --out {out})")
    return pd.read_csv(path)

