"""Sweeps on Dask: the README's example on the embedded cluster and on a separately started scheduler and worker,
re-runs that change nothing, failed jobs as rows, and bad specs refused in one line before any job starts."""
import os
import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from equiv_tools import InputError
from equiv_tools.analysis.sweep import RESULT_COLUMNS, run_job, sweep
from equiv_tools.core.sweep_spec import jobs_from_spec, read_spec

from .conftest import REPO

EXAMPLE = REPO / "docs" / "examples" / "sweep.yaml"


def test_the_readme_shows_the_example_spec():
    readme = (REPO / "README.md").read_text()
    assert "```yaml\n" + EXAMPLE.read_text() + "```" in readme


def _files(folder) -> dict:
    """Every file under ``folder``: relative path -> (bytes, modification time in ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The README's example on the embedded LocalCluster (2 workers), and the folder it wrote."""
    out = tmp_path_factory.mktemp("embedded")
    return sweep(EXAMPLE, out, workers=2, progress=False), out


def test_the_example_runs_on_the_embedded_cluster(embedded):
    table, out = embedded
    assert list(table.columns) == RESULT_COLUMNS
    assert list(table.run) == ["seed0", "seed1"]
    assert (table.status == "ok").all(), table.error.tolist()
    assert table.id_accuracy.between(0, 1).all() and table.ood_accuracy.between(0, 1).all()
    assert table.best_relation.notna().all() and table.best_relation_share.between(0, 1).all()
    assert list(table.recipe) == ["smooth", "smooth"] and list(table.steps) == [150, 150]
    assert list(table.residue_relation) == ["(a mod 10^2) + (b mod 10^2)"] * 2 and table.residue_relation_share.between(0, 1).all()
    assert pd.read_csv(out / "results.csv").run.tolist() == ["seed0", "seed1"]
    for run in table.run:
        assert (out / run / "model.safetensors").is_file()
        assert json.loads((out / run / "config.json").read_text())["training"]["seed"] == int(run[-1])


def test_rerunning_a_finished_sweep_changes_no_file(embedded):
    table, out = embedded
    before = _files(out)
    again = sweep(EXAMPLE, out, workers=1, progress=False)
    assert _files(out) == before
    pd.testing.assert_frame_equal(again, table)


def _start(args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_a_separate_scheduler_and_worker_on_loopback_give_the_same_table(embedded, tmp_path):
    table, _ = embedded
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = _start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(scheduler_file)])
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = _start(["distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"])
        from dask.distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
            remote = sweep(EXAMPLE, tmp_path / "out", client=client, progress=False)
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    measured = [c for c in RESULT_COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(remote[measured], table[measured])


def test_a_failed_job_is_a_row_and_the_others_finish(tmp_path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["base"]["training"]["steps"] = 20
    spec["grid"]["seed"] = [0, 1]
    (tmp_path / "seed1").mkdir()
    (tmp_path / "seed1" / "notes.txt").write_text("a folder that holds something else")
    table = sweep(spec, tmp_path, workers=1, progress=False)
    assert list(table.status) == ["ok", "error"]
    assert table.error[0] == "" or pd.isna(table.error[0])
    assert "seed1 already exists and is not empty" in table.error[1] and "\n" not in table.error[1]
    assert pd.isna(table.id_accuracy[1])


def test_a_worker_that_cannot_see_the_folder_says_so(tmp_path):
    job = jobs_from_spec(yaml.safe_load(EXAMPLE.read_text()))[0]
    row = run_job(job.to_dict(), str(tmp_path / "not-shared"))
    assert row["status"] == "error"
    assert "cannot see the output folder" in row["error"] and "shared" in row["error"]


BAD_SPECS = [
    ({"bases": {}}, "sweep spec: bases is not a field"),
    ({"base": {"task": {"kind": "addition"}}, "grid": {"seed": []}}, "grid.seed must be a non-empty list"),
    ({"base": {"task": {"kind": "addition"}}, "grid": {"seed": 3}}, "grid.seed must be a non-empty list"),
    ({"base": {"task": {"kind": "addition"}}}, "it lists no runs"),
    ({"base": {"task": {"kind": "addition"}}, "grid": {"seeds": [0]}}, "grid.seeds is not a field"),
    ({"base": {"task": {"kind": "addition"}}, "grid": {"seed": ["zero"]}}, "grid.seed must be a non-negative integer"),
    ({"base": {"task": {"kind": "addition"}, "training": {"lr": "fast"}}, "grid": {"seed": [0]}}, "lr must be a finite number"),
    ({"base": {"task": {"kind": "addition"}, "training": {"learning_rate": 1}}, "grid": {"seed": [0]}}, "learning_rate"),
    ({"base": {"task": {"kind": "addition"}, "model": {"layers": 2}}, "grid": {"seed": [0]}}, "layers"),
    ({"base": {"task": {"kind": "adition"}}, "grid": {"seed": [0]}}, "unknown task 'adition'"),
    ({"base": {"task": {"kind": "addition"}}, "runs": [{"name": "a"}, {"name": "a"}]}, "two runs are named 'a'"),
    ({"base": {"task": {"kind": "addition"}}, "grid": {"seed": [0]}, "evaluate": {"n": 0}}, "evaluate.n must be a positive integer"),
    ({"base": {"task": {"kind": "addition"}, "model": {"seed": 3}}, "grid": {"seed": [0]}}, "base.model.seed: give the seed as the run's own field"),
    ({"base": {"task": {"kind": ["addition"]}}, "grid": {"seed": [0]}}, "base.task.kind must be a name"),
    ({"base": {"task": {"kind": "addition"}}, "runs": [{"name": ".."}]}, "the run name '..' must be letters"),
    ({"base": {"task": {"kind": "addition", "train_digits": 1, "width": 2}, "training": {"n_train": 90, "n_test": 20}}, "grid": {"seed": [0]}},
     "n_train + n_test = 90 + 20 exceeds the 100 ID pairs"),
    ({"base": {"task": {"kind": "addition"}, "training": {"ood_digits": 9}}, "grid": {"seed": [0]}}, "OOD digits must satisfy"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS)
def test_bad_specs_are_refused_in_one_line(spec, message):
    with pytest.raises(InputError) as error:
        jobs_from_spec(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_cli_refuses_a_bad_spec_before_starting_anything(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("base:\n  task: {kind: addition}\ngrid:\n  seed: []\n")
    done = subprocess.run([sys.executable, "-m", "equiv_tools.cli", "sweep", str(spec), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["equiv-tools: error: sweep spec: grid.seed must be a non-empty list of values, got []"]
    assert not (tmp_path / "out").exists()  # refused before the sweep made its folder or started a cluster


def test_a_spec_file_reads_numbers_as_yaml_1_2_does(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("base:\n  task: {kind: addition}\n  training: {lr: 3e-3, steps: 10}\ngrid:\n  seed: [0]\n")
    job = jobs_from_spec(read_spec(path))[0]
    assert job.train_config().lr == 0.003 and job.train_config().steps == 10


def test_each_row_is_what_evaluate_and_discover_say_of_the_run_it_wrote(embedded):
    from equiv_tools import discover_relations, evaluate_run, load_run

    table, out = embedded
    for row in table.itertuples():
        run = load_run(out / row.run)
        measured = evaluate_run(run, n=500, seed=0)
        summary, _ = discover_relations(run.model, run.task, *run.task.sample_ood(500, seed=0))
        assert (row.id_accuracy, row.ood_accuracy) == (measured["id_accuracy"], measured["ood_accuracy"])
        assert (row.best_relation, row.best_relation_share) == (summary.relation.iloc[0], summary.accuracy.iloc[0])


def test_an_unfinished_run_resumes_and_a_foreign_or_interrupted_one_is_refused(tmp_path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["grid"]["seed"] = [0]
    spec["base"]["training"]["checkpoint_every"] = 50
    job = jobs_from_spec(spec)[0]
    from equiv_tools import train

    def stop_at_step_100(rows):
        if rows[0]["step"] == 100:
            raise KeyboardInterrupt  # the job is killed at step 100; its last checkpoint is step 50's

    with pytest.raises(KeyboardInterrupt):
        train(job.build_task(), tmp_path / "seed0", preset=job.preset, train_cfg=job.train_config(), model_overrides=job.model,
              progress=False, on_eval=stop_at_step_100)
    assert json.loads((tmp_path / "seed0" / "state.json").read_text())["step"] == 50
    row = run_job(job.to_dict(), str(tmp_path))
    assert row["status"] == "ok", row["error"]
    assert json.loads((tmp_path / "seed0" / "state.json").read_text())["step"] == 150
    other = dict(job.to_dict(), model={**job.model, "d_mlp": 32})
    (tmp_path / "seed0" / "sweep_result.json").unlink()
    assert "holds another run than this job's" in run_job(other, str(tmp_path))["error"]
    (tmp_path / "seed0" / "state.json").unlink()
    (tmp_path / "seed0" / "sweep_result.json").unlink(missing_ok=True)
    assert "interrupted before its first checkpoint" in run_job(job.to_dict(), str(tmp_path))["error"]


def test_a_cluster_whose_workers_run_several_threads_is_refused(tmp_path):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        with pytest.raises(InputError, match="a sweep needs one job at a time per worker process"):
            sweep(EXAMPLE, tmp_path, client=client, progress=False)
    with pytest.raises(InputError, match="give a client, or a scheduler address, or a number of workers"):
        sweep(EXAMPLE, tmp_path, client=object(), workers=2, progress=False)


def test_the_shipped_spec_is_valid_and_covers_three_sizes_by_five_seeds():
    jobs = jobs_from_spec(read_spec(REPO / "data" / "sweeps" / "across_runs" / "spec.yaml"))
    adders = [j for j in jobs if j.task["kind"] == "addition" and j.training == {"recipe": "smooth"}]
    sizes = {j.model["n_layers"] for j in adders}
    assert sizes == {1, 2, 3}
    assert all(sorted(j.seed for j in adders if j.model["n_layers"] == n) == [0, 1, 2, 3, 4] for n in sizes)
