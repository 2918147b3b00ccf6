"""Equivalence maps over grids of (a, b): what the model answers, and whether that is the truth or a relation's answer."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from .decoding import greedy_decode, guess_relation
from .relations import Relation
from .tasks import Task

CATEGORIES = ("correct", "matches relation", "other")
CHUNK = 2000


def grid_answers(
    model, task: Task, a_values: Sequence[int], b_values: Sequence[int], on_progress: Optional[Callable[[float], None]] = None
) -> pd.DataFrame:
    """The model's greedy answers over the grid a_values x b_values: columns a, b, answer, truth (one row per pair).

    ``on_progress(fraction)`` is called after each chunk of 2,000 pairs.
    """
    a, b = task.grid(a_values, b_values)
    guess = guess_relation(model, task, a, b)  # once for the grid, not once per chunk
    tokens = np.empty((a.size, task.answer_len), dtype=np.int64)
    for start in range(0, a.size, CHUNK):
        sl = slice(start, start + CHUNK)
        tokens[sl] = greedy_decode(model, task, a[sl], b[sl], guess=guess)
        if on_progress is not None:
            on_progress(min(1.0, (start + CHUNK) / a.size))
    frame = pd.DataFrame({"a": a, "b": b, "answer": task.decode_answer(tokens), "truth": task.truth(a, b)})
    for j in range(task.answer_len):
        frame[f"digit_{j}"] = tokens[:, j]
    return frame


def classify(frame: pd.DataFrame, relation: Relation) -> pd.DataFrame:
    """Add relation_answer and category ('correct', 'matches relation', 'other') to a ``grid_answers`` frame."""
    relation_answer = relation(frame["a"].to_numpy(), frame["b"].to_numpy())
    answer = frame["answer"].to_numpy()
    category = np.where(answer == frame["truth"].to_numpy(), CATEGORIES[0], np.where(answer == relation_answer, CATEGORIES[1], CATEGORIES[2]))
    out = frame.assign(relation_answer=relation_answer, category=pd.Categorical(category, categories=CATEGORIES))
    out.attrs["relation"] = relation.name
    return out


def category_shares(frame: pd.DataFrame) -> dict:
    """Share of each category in a ``classify`` frame."""
    shares = frame["category"].value_counts(normalize=True)
    return {c: float(shares.get(c, 0.0)) for c in CATEGORIES}


def digit_distribution(frame: pd.DataFrame) -> pd.DataFrame:
    """Per answer position, the share of each output digit in a ``grid_answers`` frame: position, digit, share."""
    positions = [c for c in frame.columns if c.startswith("digit_")]
    rows = []
    for column in positions:
        counts = frame[column].value_counts(normalize=True)
        rows.extend({"position": int(column.split("_")[1]), "digit": int(d), "share": float(s)} for d, s in counts.items())
    return pd.DataFrame(rows).sort_values(["position", "digit"]).reset_index(drop=True)
