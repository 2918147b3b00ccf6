"""Equivalence maps over grids of (a, b): what the model answers, and whether that is the truth or a relation's answer."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from equiv_tools.core.relations import Relation
from equiv_tools.core.tasks import Task
from equiv_tools.forward.decoding import greedy_decode

CATEGORIES = ("correct", "matches relation", "other")
CHUNK = 2000


def answers_frame(model, task: Task, a, b, on_progress: Optional[Callable[[float], None]] = None) -> pd.DataFrame:
    """The model's greedy answers (hooks honoured) on pairs (a, b): columns a, b, answer, truth, digit_0.. (one row per pair).

    One ``greedy_decode`` over all pairs, in batches of 2,000; ``on_progress(fraction)`` is called after each.
    """
    a, b = task.check_operands(a, b)
    tokens = greedy_decode(model, task, a, b, batch_size=CHUNK, on_progress=on_progress)
    frame = pd.DataFrame({"a": a, "b": b, "answer": task.decode_answer(tokens), "truth": task.truth(a, b)})
    for j in range(task.answer_len):
        frame[f"digit_{j}"] = tokens[:, j]
    return frame


def grid_answers(
    model, task: Task, a_values: Sequence[int], b_values: Sequence[int], on_progress: Optional[Callable[[float], None]] = None
) -> pd.DataFrame:
    """``answers_frame`` over the grid a_values x b_values (a varying slowest)."""
    return answers_frame(model, task, *task.grid(a_values, b_values), on_progress=on_progress)


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


def _digit_shares(tokens: np.ndarray, source: str) -> pd.DataFrame:
    """Share of each token at each answer position of ``tokens`` [n, answer_len]: source, position, digit, share."""
    rows = []
    for j in range(tokens.shape[1]):
        digits, counts = np.unique(tokens[:, j], return_counts=True)
        rows.extend({"source": source, "position": j, "digit": int(d), "share": c / len(tokens)} for d, c in zip(digits, counts))
    return pd.DataFrame(rows)


def digit_distribution(frame: pd.DataFrame) -> pd.DataFrame:
    """Per answer position, the share of each output digit of the model in a ``grid_answers`` frame: source, position, digit, share."""
    positions = sorted((c for c in frame.columns if c.startswith("digit_")), key=lambda c: int(c.split("_")[1]))
    return _digit_shares(frame[positions].to_numpy(), "model")


def digit_distributions(task: Task, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's, the truth's and (in a ``classify`` frame) the relation's answer digits per position, tidy.

    Columns: source ("model", "truth", the relation's name), position (0 = units), digit, share.
    Answers too wide for the layout keep their low digits, as a model writing them would.
    """
    parts = [digit_distribution(frame), _digit_shares(task.encode_answer(frame["truth"].to_numpy() % task.answer_limit), "truth")]
    if "relation_answer" in frame:
        values = frame["relation_answer"].to_numpy() % task.answer_limit
        parts.append(_digit_shares(task.encode_answer(values), frame.attrs.get("relation", "relation")))
    return pd.concat(parts, ignore_index=True)
