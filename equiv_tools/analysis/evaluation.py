"""ID and OOD accuracy of a run, and predictions for user-supplied pairs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from equiv_tools.core.errors import InputError
from equiv_tools.core.files import atomic_write_bytes
from equiv_tools.core.tasks import parse_operand
from equiv_tools.forward.decoding import predict
from equiv_tools.runs.models import Run

ID_TEST_SPLIT = "held-out test split"
ID_SAMPLE = "ID sample (training split unknown)"


def id_test_pairs(run: Run, n: int, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """Up to ``n`` ID pairs to test on, and what they are: the run's own held-out split when it was trained
    here, else (imported runs) ``n`` distinct ID pairs sampled without replacement, which may include pairs it trained on."""
    cfg = run.config.training
    if cfg is None:
        return run.task.sample_id(min(n, run.task.id_size), seed=seed, replace=False), ID_SAMPLE
    _, (a, b) = run.task.id_split(cfg.seed, cfg.n_train, cfg.n_test)
    return (a[:n], b[:n]), ID_TEST_SPLIT


def all_pairs_accuracy(run: Run) -> dict:
    """Exact-match accuracy over every pair a, b < ``task.id_limit`` (p^2 pairs for the modular layout), for tasks
    without OOD split: ``{"all_pairs_accuracy": float, "n_all_pairs": int}``."""
    task = run.task
    if task.has_ood:
        raise InputError(f"{task.describe()} has operands of any width; all_pairs_accuracy is for tasks whose every pair is in distribution")
    a, b = task.grid(range(task.id_limit), range(task.id_limit))
    accuracy = float(np.mean(predict(run.model, task, a, b) == task.truth(a, b)))
    return {"all_pairs_accuracy": accuracy, "n_all_pairs": int(a.size)}


def evaluate_run(run: Run, n: int = 10_000, ood_digits: Optional[int] = None, seed: int = 0) -> dict:
    """Exact-match accuracy of greedy answers (hooks honoured) on ID pairs and on ``n`` OOD pairs (both operands long).

    ``id_pairs`` says whether the ID pairs are the run's held-out split or, for imported runs, an ID sample.
    A task without OOD split (the modular grokking layout) also gets ``all_pairs_accuracy`` over every pair of
    its domain (all p^2 pairs, whatever ``n``) and ``n_all_pairs``.
    """
    task = run.task
    (a, b), id_pairs = id_test_pairs(run, n, seed)
    result = {"run": str(run.path), "task": task.describe(), "id_accuracy": float(np.mean(predict(run.model, task, a, b) == task.truth(a, b))),
              "n_id": int(a.size), "id_pairs": id_pairs}
    if not task.has_ood:
        return {**result, **all_pairs_accuracy(run), "ood_accuracy": None, "n_ood": 0, "ood_digits": None, "seed": seed}
    ood_digits = task.train_digits + 1 if ood_digits is None else ood_digits
    oa, ob = task.sample_ood(n, ood_digits, seed=seed)
    ood_accuracy = float(np.mean(predict(run.model, task, oa, ob) == task.truth(oa, ob)))
    return {**result, "ood_accuracy": ood_accuracy, "n_ood": int(oa.size), "ood_digits": ood_digits, "seed": seed}


def read_pairs(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV with columns a,b of non-negative integers."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a CSV with columns a,b ({str(exc).splitlines()[0]})") from None
    if not {"a", "b"} <= set(frame.columns):
        raise InputError(f"{path} needs columns a and b, found {list(frame.columns)}")
    values = []
    for column in ("a", "b"):
        parsed = []
        for line, text in enumerate(frame[column], start=2):
            try:
                parsed.append(parse_operand(text, name=f"{column}"))
            except InputError as exc:
                raise InputError(f"{path}, line {line}: {exc}") from None
        values.append(np.array(parsed, dtype=object))
    return values[0], values[1]


def predict_csv(run: Run, input_path, output_path) -> pd.DataFrame:
    """Greedy answers for the pairs in ``input_path``; writes ``a,b,prediction`` to ``output_path``."""
    a, b = read_pairs(input_path)
    a, b = run.task.check_operands(a, b)
    frame = pd.DataFrame({"a": a, "b": b, "prediction": predict(run.model, run.task, a, b)})
    atomic_write_bytes(output_path, frame.to_csv(index=False).encode())
    return frame
