"""The paper's headline result, measured on its own checkpoints and on the kit's shipped models.

The paper's files (``exploregpt-adder/model_s2.pt``, ``model_51.pt``) are not
part of the kit. They are looked for in, in order: an explicit ``paper_dir``,
the environment variable ``EQUIV_TOOLS_PAPER_DIR``, and ``../shared/paper``
(relative to the working directory, then to the checkout). When they are
absent, their rows say ``"unavailable"`` and why.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from equiv_tools.analysis.discovery import discover_relations
from equiv_tools.analysis.evaluation import id_test_pairs
from equiv_tools.core.errors import InputError
from equiv_tools.core.paths import shipped_data_dir
from equiv_tools.core.rundir import shipped_runs
from equiv_tools.core.tasks import AdditionTask
from equiv_tools.forward.decoding import predict
from equiv_tools.runs.imports import load_mingpt
from equiv_tools.runs.models import Run, load_run

PAPER_ENV = "EQUIV_TOOLS_PAPER_DIR"
PAPER_CHECKPOINTS = ("model_s2.pt", "model_51.pt")
PAPER_TASK = AdditionTask(train_digits=3, width=5)
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: equiv_tools/analysis/reproduce.py -> the repository


def find_paper_dir(paper_dir=None, holding: str = "exploregpt-adder") -> tuple[Optional[Path], str]:
    """(the folder holding ``holding/``, or None; where it was found, or why it was not).

    ``holding`` names the material looked for: ``exploregpt-adder`` (the paper's checkpoints) or
    ``nanda-grokking`` (Nanda et al.'s grokked model), both found the same way.
    """
    if paper_dir is not None:
        candidates = [(Path(paper_dir), "--paper-dir")]
    elif os.environ.get(PAPER_ENV):
        candidates = [(Path(os.environ[PAPER_ENV]), f"${PAPER_ENV}")]
    else:
        candidates = [(Path.cwd().parent / "shared" / "paper", "../shared/paper"), (REPO_ROOT.parent / "shared" / "paper", "the checkout's ../shared/paper")]
    for path, source in candidates:
        if (path / holding).is_dir():
            return path, f"found via {source}: {path}"
    tried = ", ".join(f"{source} ({path})" for path, source in candidates)
    what = "the paper's checkpoints were" if holding == "exploregpt-adder" else f"{holding}/ was"
    return None, f"{what} not found (looked in {tried}); set {PAPER_ENV} or pass --paper-dir"


def paper_checkpoint(name: str = "model_s2.pt", paper_dir=None) -> tuple[Optional[Path], str]:
    """(path of one of the paper's checkpoints, or None; a sentence saying where it came from or why it is missing)."""
    folder, reason = find_paper_dir(paper_dir)
    if folder is None:
        return None, reason
    path = folder / "exploregpt-adder" / name
    return (path, reason) if path.is_file() else (None, f"{path} does not exist")


def load_paper_model(name: str = "model_s2.pt", paper_dir=None) -> Run:
    path, reason = paper_checkpoint(name, paper_dir)
    if path is None:
        raise InputError(reason)
    return load_mingpt(path, PAPER_TASK)


def summarize(run: Run, model_name: str, n: int, seed: int) -> dict:
    """One reproduce row: ID/OOD accuracy and the best relation on OOD inputs."""
    task = run.task
    (a, b), id_pairs = id_test_pairs(run, n, seed)
    row = {"model": model_name, "task": task.describe(), "id_accuracy": float(np.mean(predict(run.model, task, a, b) == task.truth(a, b))),
           "id_pairs": id_pairs}
    if not task.has_ood:
        return {**row, "ood_accuracy": None, "best_relation": None, "best_relation_accuracy": None}
    a, b = task.sample_ood(n, seed=seed)
    summary, _ = discover_relations(run.model, task, a, b)
    accuracy = summary.set_index("relation").accuracy
    return {**row, "ood_accuracy": float(accuracy[task.relations()[0].name]),  # the first candidate is the truth
            "best_relation": summary.relation.iloc[0], "best_relation_accuracy": float(summary.accuracy.iloc[0])}


def _unavailable(model_name: str, task: str, reason: str) -> dict:
    return {"model": model_name, "task": task, "id_accuracy": None, "id_pairs": None, "ood_accuracy": None, "best_relation": None,
            "best_relation_accuracy": None, "status": "unavailable", "reason": reason}


def reproduce(paper_dir=None, data_dir=None, n: int = 5000, seed: int = 0, device: str = "cpu") -> list[dict]:
    """Rows for the paper's addition checkpoints and every run directory in ``data_dir`` (default: ``shipped_data_dir()``)."""
    rows = []
    for name in PAPER_CHECKPOINTS:
        model_name = f"paper/{name}"
        path, reason = paper_checkpoint(name, paper_dir)
        if path is None:
            rows.append(_unavailable(model_name, PAPER_TASK.describe(), reason))
        else:
            rows.append({**summarize(load_mingpt(path, PAPER_TASK, device=device), model_name, n, seed), "status": "ok"})
    data_dir = shipped_data_dir() if data_dir is None else Path(data_dir)
    names = shipped_runs(data_dir)
    if not names:
        rows.append(_unavailable(f"kit/{data_dir}", "-", f"no run directories in {data_dir}"))
    for name in names:
        rows.append({**summarize(load_run(data_dir / name, device=device), f"kit/{name}", n, seed), "status": "ok"})
    return rows


def model_catalog(data_dir=None, paper_dir=None) -> dict[str, Callable[[], Run]]:
    """Models to choose from, label -> loader: every run directory in ``data_dir`` (default: ``shipped_data_dir()``),
    then the paper's checkpoints when they are found."""
    data_dir = shipped_data_dir() if data_dir is None else Path(data_dir)
    catalog = {f"kit/{name}": (lambda d=data_dir / name: load_run(d)) for name in shipped_runs(data_dir)}
    for name in PAPER_CHECKPOINTS:
        path, _ = paper_checkpoint(name, paper_dir)
        if path is not None:
            catalog[f"paper/{name}"] = lambda path=path: load_mingpt(path, PAPER_TASK)
    return catalog
