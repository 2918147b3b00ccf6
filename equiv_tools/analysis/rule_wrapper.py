"""A rule placed around a model: where the model follows a relation, add back what the relation drops.

A model that answers ``relation(a, b)`` instead of the truth is repaired by ``answer + (truth - relation)``.
For the paper's adder, whose relation is ``(a mod 10^n) + (b mod 10^n)``, the correction is the sum of the
operands' high parts, ``(a - a mod 10^n) + (b - b mod 10^n)``. The wrapped answer is right exactly where the
model's answer equals the relation's, so the wrapper is only as good as the relation's consistency: on
inputs where the model does something else, it is wrong.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from equiv_tools.core.files import read_json
from equiv_tools.core.relations import Relation
from equiv_tools.core.rundir import RunDir
from equiv_tools.core.tasks import Task
from equiv_tools.forward.decoding import greedy_decode

WRAP = "wrap"  # the remedy name a wrapped run's remedy.json records


def correction(task: Task, relation: Relation, a, b) -> np.ndarray:
    """What the relation drops: ``truth(a, b) - relation(a, b)``, int64 [n]."""
    return task.truth(a, b) - relation(a, b)


def wrapped_tokens(task: Task, tokens: np.ndarray, relation: Relation, a, b) -> np.ndarray:
    """The model's answer tokens [n, answer_len] corrected by ``correction``; answers the layout cannot hold
    keep their low digits (as ``relation_tokens`` does)."""
    answers = task.decode_answer(tokens) + correction(task, relation, a, b)
    return task.encode_answer(answers % task.answer_limit)


def wrapper_relation(run) -> Optional[Relation]:
    """The relation a wrapped run (``remedies.wrap``) corrects by, or None for a run without a wrapper."""
    run_dir = RunDir(run.path)
    if not run_dir.remedy_file.is_file():
        return None
    record = read_json(run_dir.remedy_file)
    return run.task.relation(record["options"]["relation"]) if record.get("remedy") == WRAP else None


def answer_tokens(run, a, b, wrapper: Optional[Relation]) -> np.ndarray:
    """A run's greedy answer tokens [n, answer_len] (hooks honoured), corrected by ``wrapper`` unless it is None."""
    tokens = greedy_decode(run.model, run.task, a, b)
    return tokens if wrapper is None else wrapped_tokens(run.task, tokens, wrapper, a, b)


def run_answer_tokens(run, a, b) -> np.ndarray:
    """A run's greedy answer tokens [n, answer_len] (hooks honoured), with its wrapper applied if it has one."""
    return answer_tokens(run, a, b, wrapper_relation(run))
