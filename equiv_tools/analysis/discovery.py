"""Which rule does a model apply to inputs it never saw? Candidate relations ranked against its answers."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from equiv_tools.core.errors import InputError
from equiv_tools.core.relations import Relation
from equiv_tools.core.rundir import RunDir
from equiv_tools.core.tasks import Task
from equiv_tools.forward.decoding import greedy_decode, predict
from equiv_tools.runs.models import load_run


def relation_tokens(task: Task, relation: Relation, a, b) -> np.ndarray:
    """A relation's answers as answer tokens [n, answer_len]; values too wide keep their low digits."""
    return task.encode_answer(relation(a, b) % task.answer_limit)


def distinct_relations(relations: Sequence[Relation], a, b) -> list[tuple[Relation, list[str]]]:
    """Relations that differ somewhere on (a, b), each with the names of later ones equal to it on every input.

    The first of a group stands for it: in a task's candidate list the truth comes
    first, then simpler relations before more complex ones.
    """
    groups: list[tuple[Relation, np.ndarray, list[str]]] = []
    for rel in relations:
        values = rel(a, b)
        for first, first_values, equal in groups:
            if np.array_equal(values, first_values):
                equal.append(rel.name)
                break
        else:
            groups.append((rel, values, []))
    return [(rel, equal) for rel, _, equal in groups]


def rank_relations(task: Task, a, b, tokens: np.ndarray, relations: Sequence[Relation]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank ``relations`` by agreement with given answer tokens [n, answer_len]; see ``discover_relations``."""
    if not relations:
        raise InputError("no relations to rank")
    answers = task.decode_answer(tokens)
    summary, per_digit = [], []
    for rel, equal in distinct_relations(relations, a, b):
        summary.append({"relation": rel.name, "accuracy": float(np.mean(rel(a, b) == answers)), "equal_on_these_inputs": "; ".join(equal)})
        agreement = (relation_tokens(task, rel, a, b) == tokens).mean(axis=0)
        per_digit.extend({"relation": rel.name, "position": j, "agreement": float(x)} for j, x in enumerate(agreement))
    summary = pd.DataFrame(summary).sort_values("accuracy", ascending=False, kind="stable").reset_index(drop=True)
    return summary, pd.DataFrame(per_digit)


def discover_relations(
    model, task: Task, a, b, relations: Optional[Sequence[Relation]] = None, batch_size: int = 4096
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank relations (default: the task's candidates) by agreement with the model's greedy answers on (a, b).

    Returns ``(summary, per_digit)``: summary has columns relation, accuracy
    (share of exact matches) and equal_on_these_inputs (names of candidates that give the
    same answer on every input given, reported once under the first: the truth, or the
    simplest), sorted best first; per_digit has relation, position (0 = units digit), agreement.
    """
    a, b = task.check_operands(a, b)
    relations = list(task.relations() if relations is None else relations)
    tokens = greedy_decode(model, task, a, b, batch_size=batch_size)
    return rank_relations(task, a, b, tokens, relations)


def relations_report(run, n: int = 10_000, ood_digits: Optional[int] = None, seed: int = 0) -> dict:
    """The ``equiv-tools relations --json`` object for a run, on ``n`` OOD pairs."""
    task = run.task
    a, b = task.sample_ood(n, ood_digits, seed=seed)
    summary, per_digit = discover_relations(run.model, task, a, b)
    rows = [
        {"relation": r.relation, "accuracy": r.accuracy, "per_digit": per_digit[per_digit.relation == r.relation].sort_values("position")["agreement"].tolist(),
         "equal_on_these_inputs": [name for name in r.equal_on_these_inputs.split("; ") if name]}
        for r in summary.itertuples()
    ]
    return {"ood_digits": task.train_digits + 1 if ood_digits is None else ood_digits, "n": int(a.size), "relations": rows}


def relation_share_by_step(run_dir, relation: Relation, n: int = 1000, ood_digits: Optional[int] = None, seed: int = 0,
                           progress: bool = True, device: str = "cpu") -> pd.DataFrame:
    """Over a run's checkpoint series, the share of OOD answers that follow ``relation`` and that are correct.

    The same ``n`` OOD pairs for every checkpoint. Columns: step, relation_share, ood_accuracy (tidy: one row per checkpoint).
    """
    run_dir = RunDir.resolve(run_dir)
    steps = run_dir.checkpoint_steps()
    if not steps:
        raise InputError(f"{run_dir.path} has no checkpoint series ({run_dir.checkpoint_dir.name}/step_*.safetensors)")
    task = run_dir.read_config().task
    a, b = task.sample_ood(n, ood_digits, seed=seed)
    rule, truth, rows = relation(a, b), task.truth(a, b), []
    for step in tqdm(steps, desc="checkpoints", disable=not progress, leave=False):
        answers = predict(load_run(run_dir, step=step, device=device).model, task, a, b)
        rows.append({"step": step, "relation_share": float(np.mean(answers == rule)), "ood_accuracy": float(np.mean(answers == truth))})
    return pd.DataFrame(rows)


def best_relation(model, task: Task, n: int = 500, seed: int = 0) -> Relation:
    """The task's candidate relation that best matches the model on ``n`` OOD inputs (the truth for tasks without OOD)."""
    if not task.has_ood:
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
