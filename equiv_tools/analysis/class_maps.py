"""OOD->ID class maps: each OOD input's in-distribution representative under a relation, and the evidence
that the model treats the two alike (same answer, nearby hidden states)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from equiv_tools.analysis.discovery import rank_relations
from equiv_tools.core.errors import InputError
from equiv_tools.core.relations import Relation
from equiv_tools.core.tasks import Task
from equiv_tools.forward.decoding import greedy_decode, predict
from equiv_tools.forward.representations import hidden_states_at, residual_hooks

COMPARISONS = ("representative", "same-answer ID pair", "other representative")


@dataclass
class ClassMap:
    """Each input's ID representative under ``relation``, and whether the model treats them alike.

    ``frame``, one row per input: a, b, rep_a, rep_b, answer (the model's on (a, b)),
    rep_answer (its answer on the representative), relation_answer, verified
    (answer == rep_answer), same_a, same_b (an ID pair other than the representative
    whose true answer is the representative's; -1 where there is none) and other
    (the row whose representative serves as "another representative", never itself).

    ``distances``, tidy: item (row of ``frame``), layer, hook, comparison, distance.
    At each depth of the residual stream (``layer`` 0 is ``blocks.0.hook_resid_pre``,
    layer i the output of block i - 1) and prompt ``position``, the distance from the
    input's hidden state to its representative's, to the same-answer ID pair's, and
    to another representative's. A representative much closer than a pair with the
    same answer is evidence that equal answers alone cannot explain.
    """

    relation: str
    position: int
    frame: pd.DataFrame
    distances: pd.DataFrame

    @property
    def verified_share(self) -> float:
        return float(self.frame["verified"].mean())

    def distance_summary(self) -> pd.DataFrame:
        """Median distance per layer (rows) and comparison (columns)."""
        table = self.distances.groupby(["layer", "hook", "comparison"], sort=False).distance.median().unstack("comparison")
        return table[list(COMPARISONS)].reset_index()

    def summary(self) -> dict:
        last = self.distance_summary().iloc[-1]
        return {
            "relation": self.relation,
            "n": int(len(self.frame)),
            "verified_share": self.verified_share,
            "hook": last["hook"],
            "position": self.position,
            **{f"median_distance_{c.replace(' ', '_').replace('-', '_')}": float(last[c]) for c in COMPARISONS},
        }


def _id_representatives(task: Task, relations: Sequence[Relation], a, b) -> list[Relation]:
    """The relations among ``relations`` that map every input given onto an ID representative."""
    return [r for r in relations if r.representative is not None and task.is_in_distribution(*r.representative(a, b)).all()]


def same_answer_pairs(task: Task, rep_a, rep_b, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each representative, a random ID pair with the same true answer that is not the representative itself.

    Drawn uniformly from the other pairs of its answer among all ID pairs (at most 10^6 of them, sampled
    beyond). Returns (a, b), each [n], -1 where there is none.
    """
    rng = np.random.default_rng(seed)
    pool_a, pool_b = task.sample_id(min(task.id_size, 1_000_000), seed=seed, replace=False)
    pool_truth = task.truth(pool_a, pool_b)
    order = np.argsort(pool_truth, kind="stable")
    pool_a, pool_b, pool_truth = pool_a[order], pool_b[order], pool_truth[order]
    rep_a, rep_b = np.asarray(rep_a), np.asarray(rep_b)
    target = task.truth(rep_a, rep_b)
    lo, hi = np.searchsorted(pool_truth, target, "left"), np.searchsorted(pool_truth, target, "right")
    count = hi - lo
    pick, is_self = np.minimum(lo, len(pool_truth) - 1), np.zeros(target.shape, dtype=bool)
    undrawn = count > 0
    while undrawn.any():  # draw again where the draw was the representative itself (and there is another pair)
        pick[undrawn] = lo[undrawn] + (rng.random(int(undrawn.sum())) * count[undrawn]).astype(np.int64)
        is_self = (pool_a[pick] == rep_a) & (pool_b[pick] == rep_b)
        undrawn = is_self & (count > 1)
    found = (count > 1) | ((count == 1) & ~is_self)
    return np.where(found, pool_a[pick], -1), np.where(found, pool_b[pick], -1)


def class_map(
    model,
    task: Task,
    a,
    b,
    relation: Optional[Relation] = None,
    position: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 4096,
) -> ClassMap:
    """The OOD->ID class map of (a, b) under ``relation``.

    ``relation`` must map every input onto an in-distribution representative
    (InputError otherwise); by default it is the best-ranked candidate that does.
    Answers are the model's greedy answers (hooks honoured); distances come from
    ``run_with_cache`` at every depth of the residual stream.
    """
    a, b = task.check_operands(a, b)
    if a.size == 0:
        raise InputError("class_map needs at least one input pair")
    tokens = greedy_decode(model, task, a, b, batch_size=batch_size)
    if relation is None:
        usable = _id_representatives(task, task.relations(), a, b)
        if not usable:
            raise InputError(f"{task.describe()} offers no relation that maps these inputs onto ID representatives")
        summary, _ = rank_relations(task, a, b, tokens, usable)
        relation = next(r for r in usable if r.name == summary["relation"].iloc[0])
    if relation.representative is None:
        raise InputError(f"relation {relation.name!r} names no ID representative; pick one that reduces the operands")
    rep_a, rep_b = relation.representative(a, b)
    outside = ~task.is_in_distribution(rep_a, rep_b)
    if outside.any():
        i = int(np.argmax(outside))
        raise InputError(
            f"relation {relation.name!r} maps {int(outside.sum())} of {a.size} inputs onto representatives outside the "
            f"training distribution (e.g. {a[i]}, {b[i]} -> {rep_a[i]}, {rep_b[i]}); a class map needs ID representatives: "
            "pick a relation that reduces the operands further"
        )
    same_a, same_b = same_answer_pairs(task, rep_a, rep_b, seed)
    has_same = same_a >= 0
    other = _derangement(a.size, seed)
    n = a.size
    states = hidden_states_at(
        model, task, np.concatenate([a, rep_a, np.where(has_same, same_a, rep_a)]),
        np.concatenate([b, rep_b, np.where(has_same, same_b, rep_b)]), residual_hooks(model), position, batch_size,
    )
    rows = []
    for layer, (hook, h) in enumerate(states.items()):
        h_in, h_rep, h_same = h[:n], h[n : 2 * n], h[2 * n :]
        same = np.where(has_same, (h_in - h_same).norm(dim=1).numpy(), np.nan)
        another = np.where(other >= 0, (h_in - h_rep[other]).norm(dim=1).numpy(), np.nan)
        for comparison, distance in zip(COMPARISONS, ((h_in - h_rep).norm(dim=1).numpy(), same, another)):
            rows.append(pd.DataFrame({"item": np.arange(n), "layer": layer, "hook": hook, "comparison": comparison, "distance": distance}))
    rep_answer = predict(model, task, rep_a, rep_b, batch_size=batch_size, guess=relation)
    answer = task.decode_answer(tokens)
    frame = pd.DataFrame(
        {
            "a": a, "b": b, "rep_a": rep_a, "rep_b": rep_b, "answer": answer, "rep_answer": rep_answer,
            "relation_answer": relation(a, b), "verified": answer == rep_answer, "same_a": same_a, "same_b": same_b, "other": other,
        }
    )
    position = task.prompt_len - 1 if position is None else position
    return ClassMap(relation.name, position, frame, pd.concat(rows, ignore_index=True))


def _derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (one cycle through a shuffled order); [n]. -1 for n = 1."""
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.roll(order, -1)
    return out
