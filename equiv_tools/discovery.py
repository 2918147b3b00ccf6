"""Which rule does a model apply to inputs it never saw? Relation ranking and OOD->ID class maps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .decoding import greedy_decode, predict
from .errors import InputError
from .relations import Relation
from .representations import default_hook, hidden_states
from .tasks import Task


def relation_tokens(task: Task, relation: Relation, a, b) -> np.ndarray:
    """A relation's answers as answer tokens [n, answer_len]; values too wide keep their low digits."""
    return task.encode_answer(relation(a, b) % task.answer_limit)


def rank_relations(task: Task, a, b, tokens: np.ndarray, relations: Sequence[Relation]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank ``relations`` by agreement with given answer tokens [n, answer_len]; see ``discover_relations``."""
    if not relations:
        raise InputError("no relations to rank")
    answers = task.decode_answer(tokens)
    summary, per_digit = [], []
    for rel in relations:
        summary.append({"relation": rel.name, "accuracy": float(np.mean(rel(a, b) == answers))})
        agreement = (relation_tokens(task, rel, a, b) == tokens).mean(axis=0)
        per_digit.extend({"relation": rel.name, "position": j, "agreement": float(x)} for j, x in enumerate(agreement))
    summary = pd.DataFrame(summary).sort_values("accuracy", ascending=False, kind="stable").reset_index(drop=True)
    return summary, pd.DataFrame(per_digit)


def discover_relations(
    model, task: Task, a, b, relations: Optional[Sequence[Relation]] = None, batch_size: int = 4096
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank relations (default: the task's candidates) by agreement with the model's greedy answers on (a, b).

    Returns ``(summary, per_digit)``: summary has columns relation, accuracy
    (share of exact matches), sorted best first; per_digit has relation,
    position (0 = units digit), agreement.
    """
    a, b = task.check_operands(a, b)
    relations = list(task.relations() if relations is None else relations)
    tokens = greedy_decode(model, task, a, b, batch_size=batch_size)
    return rank_relations(task, a, b, tokens, relations)


@dataclass
class ClassMap:
    """Each input's ID representative under ``relation``, and whether the model treats them alike.

    ``frame`` columns: a, b, rep_a, rep_b, answer (the model's on (a, b)),
    rep_answer (its answer on the representative), relation_answer, verified
    (answer == rep_answer), distance (hidden-state distance between input and
    representative at ``hook``/``position``). ``unrelated_distance`` is the
    median distance between representatives paired at random: the scale to
    read ``distance`` against.
    """

    relation: str
    hook: str
    position: int
    frame: pd.DataFrame
    unrelated_distance: float

    @property
    def verified_share(self) -> float:
        return float(self.frame["verified"].mean())

    def summary(self) -> dict:
        return {
            "relation": self.relation,
            "n": int(len(self.frame)),
            "verified_share": self.verified_share,
            "median_distance": float(self.frame["distance"].median()),
            "median_unrelated_distance": self.unrelated_distance,
            "hook": self.hook,
            "position": self.position,
        }


def class_map(
    model,
    task: Task,
    a,
    b,
    relation: Optional[Relation] = None,
    hook: Optional[str] = None,
    position: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 4096,
) -> ClassMap:
    """The OOD->ID class map of (a, b) under ``relation`` (default: the best-ranked relation that reduces operands)."""
    a, b = task.check_operands(a, b)
    tokens = greedy_decode(model, task, a, b, batch_size=batch_size)
    if relation is None:
        reducing = [r for r in task.relations() if r.representative is not None]
        if not reducing:
            raise InputError(f"{task.describe()} offers no relation that maps inputs onto ID representatives")
        summary, _ = rank_relations(task, a, b, tokens, reducing)
        relation = next(r for r in reducing if r.name == summary["relation"].iloc[0])
    if relation.representative is None:
        raise InputError(f"relation {relation.name!r} names no ID representative; pick one that reduces the operands")
    rep_a, rep_b = relation.representative(a, b)
    answer = task.decode_answer(tokens)
    rep_answer = predict(model, task, rep_a, rep_b, batch_size=batch_size, guess=relation)
    hook = hook or default_hook(model)
    position = task.prompt_len - 1 if position is None else position
    both = hidden_states(model, task, np.concatenate([a, rep_a]), np.concatenate([b, rep_b]), hook, position, batch_size)
    h, h_rep = both[: a.size], both[a.size :]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(h_rep)))
    unrelated = float((h_rep - h_rep[perm]).norm(dim=1).median()) if len(h_rep) > 1 else float("nan")
    frame = pd.DataFrame(
        {
            "a": a, "b": b, "rep_a": rep_a, "rep_b": rep_b, "answer": answer, "rep_answer": rep_answer,
            "relation_answer": relation(a, b), "verified": answer == rep_answer,
            "distance": (h - h_rep).norm(dim=1).numpy(),
        }
    )
    return ClassMap(relation.name, hook, position, frame, unrelated)


def relations_report(run, n: int = 10_000, ood_digits: Optional[int] = None, seed: int = 0) -> dict:
    """The ``equiv-tools relations --json`` object for a run, on ``n`` OOD pairs."""
    task = run.task
    a, b = task.sample_ood(n, ood_digits, seed=seed)
    summary, per_digit = discover_relations(run.model, task, a, b)
    rows = [
        {"relation": r.relation, "accuracy": r.accuracy, "per_digit": per_digit[per_digit.relation == r.relation].sort_values("position")["agreement"].tolist()}
        for r in summary.itertuples()
    ]
    return {"ood_digits": task.train_digits + 1 if ood_digits is None else ood_digits, "n": int(a.size), "relations": rows}


def best_relation(model, task: Task, n: int = 500, seed: int = 0) -> Relation:
    """The task's candidate relation that best matches the model on ``n`` OOD inputs (the truth for tasks without OOD)."""
    if task.kind == "modular":
        return task.relations()[0]
    a, b = task.sample_ood(n, seed=seed)
    summary, _ = discover_relations(model, task, a, b)
    return task.relation(summary.relation.iloc[0])


def explain_input(model, task: Task, a, b, relation: Optional[Relation] = None) -> dict:
    """What the model does with one input (a, b): its answer, the truth, and the ID input it treats it as.

    Keys: a, b, in_distribution, answer, truth, correct, per_digit (answer digit
    == truth digit, units first), relation, relation_answer, matches_relation,
    rep_a, rep_b (the relation's representative, None if it has none) and
    rep_answer (the model's answer on the representative).
    """
    a_arr, b_arr = task.check_operands(a, b)
    if a_arr.size != 1:
        raise InputError("explain_input takes one pair of operands")
    relation = relation or task.relations()[0]
    rep = relation.representative(a_arr, b_arr) if relation.representative is not None else None
    batch_a = a_arr if rep is None else np.concatenate([a_arr, rep[0]])
    batch_b = b_arr if rep is None else np.concatenate([b_arr, rep[1]])
    tokens = greedy_decode(model, task, batch_a, batch_b, guess=None)  # the input and its representative at once
    answers = task.decode_answer(tokens)
    answer, truth = int(answers[0]), int(task.truth(a_arr, b_arr)[0])
    rep_a = rep_b = rep_answer = None
    if rep is not None:
        rep_a, rep_b, rep_answer = int(rep[0][0]), int(rep[1][0]), int(answers[1])
    relation_answer = int(relation(a_arr, b_arr)[0])
    return {
        "a": int(a_arr[0]), "b": int(b_arr[0]),
        "in_distribution": bool(task.is_in_distribution(a_arr, b_arr)[0]),
        "answer": answer, "truth": truth, "correct": answer == truth,
        "per_digit": (tokens[0] == task.encode_answer([truth])[0]).tolist(),
        "relation": relation.name, "relation_answer": relation_answer, "matches_relation": answer == relation_answer,
        "rep_a": rep_a, "rep_b": rep_b, "rep_answer": rep_answer,
    }
