"""A model judged on several axes at once: ID and OOD accuracy, the rule it follows, where its errors arise,
what they cost, and at which stage its OOD failure sets in.

``scorecard(run)`` returns one JSON-ready dict (``equiv-tools scorecard RUN --json``); ``scorecard_table``
turns one or more of them into a tidy DataFrame (run, axis, setting, value) to compare models side by side.

The OOD axes are measured on ``n`` pairs per setting: ``"4"`` has both operands 4 digits long (the paper's
test, and ``evaluate``'s ``ood_accuracy``), ``"4-one-operand"`` one operand 4 digits long and the other in
distribution. The failure's stages, in the sense of Shintani (arXiv 2603.26828), as measured here on the
paper's layout, each a share of the OOD inputs at ``train_digits + 1`` digits (addition only):

* ``reads_new_digits``: the answer differs from the model's answer on the input's residues
  ``(a mod 10^n, b mod 10^n)``, so the new digits reach it at all (n = train_digits);
* ``low_digits``: the answer's n low digits are right (the in-distribution part of the sum survives);
* ``new_digit``: the answer digit 10^n is right; ``carry_into_new_digit``: the same, as a share of the inputs
  whose low parts carry into it;
* ``recomposed``: all digits up to 10^n are right, the answer is right apart from its leading digits;
* ``leading_digits``: the digits above 10^n are right.

A task without OOD split (the grokking layout) gets the ID axes only.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np
import pandas as pd

from equiv_tools.analysis.discovery import rank_relations
from equiv_tools.analysis.evaluation import id_test_pairs
from equiv_tools.analysis.rule_wrapper import answer_tokens, wrapper_relation
from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import AdditionTask, Task

Cost = Union[float, Sequence[float], Callable[[np.ndarray, np.ndarray], np.ndarray]]
STAGES = ("reads_new_digits", "low_digits", "new_digit", "carry_into_new_digit", "recomposed", "leading_digits")


def ood_settings(task: Task) -> list[str]:
    """The OOD settings a digit task's layout holds: ``"d"`` and ``"d-one-operand"`` for train_digits < d <= width."""
    if not task.has_ood:
        return []
    lengths = range(task.train_digits + 1, task.width + 1)
    return [str(d) for d in lengths] + [f"{d}-one-operand" for d in lengths]


def setting_pairs(task: Task, setting: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` OOD pairs (a, b), each [n], of a setting (``ood_settings``): both operands ``d`` digits long,
    or one of them (which one, at random) ``d`` digits long and the other in distribution."""
    if setting not in ood_settings(task):
        raise InputError(f"unknown OOD setting {setting!r} for {task.describe()}; choose one of: {', '.join(ood_settings(task)) or 'none'}")
    digits, _, one = setting.partition("-")
    if not one:
        return task.sample_ood(n, int(digits), seed=seed)
    rng = np.random.default_rng([seed, int(digits)])
    long = rng.integers(10 ** (int(digits) - 1), 10 ** int(digits), n)
    short = rng.integers(0, task.id_limit, n)
    first = rng.random(n) < 0.5
    return np.where(first, long, short), np.where(first, short, long)


def carries_out(task: Task, a, b) -> np.ndarray:
    """Whether the operands' low ``train_digits`` digits carry into the next digit of the sum: bool [n]."""
    a, b = task.check_operands(a, b)
    return a % task.id_limit + b % task.id_limit >= task.id_limit


def digit_names(task: Task) -> list[str]:
    """The answer digits' place values, units first: ``10^0``, ``10^1``, ..."""
    return [f"10^{j}" for j in range(task.answer_len)]


def _digit_weights(task: Task, cost: Cost):
    """A callable ``cost`` as it is, else its weight per answer digit [answer_len]; InputError for anything else."""
    if callable(cost):
        return cost
    try:
        weights = np.asarray(cost, dtype=float)
    except (TypeError, ValueError):
        weights = np.empty(0)
    if weights.ndim == 0:
        weights = np.full(task.answer_len, float(weights))
    if weights.shape != (task.answer_len,) or not np.isfinite(weights).all() or (weights < 0).any():
        raise InputError(f"cost must be one non-negative number per wrong digit or {task.answer_len} of them (units first), "
                         f"or a function of (answer, truth); got {cost!r}")
    return weights


def _cost(task: Task, tokens: np.ndarray, truth_tokens: np.ndarray, cost) -> tuple[float, str]:
    """The mean cost of the answers [n, answer_len] and how it was counted; ``cost`` from ``_digit_weights``."""
    if callable(cost):
        values = np.asarray(cost(task.decode_answer(tokens), task.decode_answer(truth_tokens)), dtype=float)
        if values.shape != (len(tokens),) or not np.isfinite(values).all():
            raise InputError(f"the cost function must return one finite number per answer, shape ({len(tokens)},); got shape {values.shape}")
        return float(values.mean()), "a function of (answer, truth)"
    return float(((tokens != truth_tokens) * cost).sum(axis=1).mean()), f"per wrong digit, units first: {cost.tolist()}"


def _by_digit(task: Task, right: np.ndarray) -> dict:
    return dict(zip(digit_names(task), map(float, right.mean(axis=0))))


def stage_passes(task: Task, tokens: np.ndarray, truth_tokens: np.ndarray, residue_tokens: np.ndarray, carry: np.ndarray) -> dict:
    """Per OOD input, whether it passes each stage (``STAGES``): bool [n] each; ``carry_into_new_digit`` is
    False on inputs without a carry (its share counts the inputs with one only)."""
    right, n = tokens == truth_tokens, task.train_digits
    return {
        "reads_new_digits": (tokens != residue_tokens).any(axis=1),
        "low_digits": right[:, :n].all(axis=1),
        "new_digit": right[:, n],
        "carry_into_new_digit": carry & right[:, n],
        "recomposed": right[:, : n + 1].all(axis=1),
        "leading_digits": right[:, n + 1 :].all(axis=1),
    }


def _stage_shares(passes: dict, carry: np.ndarray) -> dict:
    shares = {stage: float(ok.mean()) for stage, ok in passes.items()}
    shares["carry_into_new_digit"] = float(passes["carry_into_new_digit"][carry].mean()) if carry.any() else None
    return shares


def scorecard(run, n: int = 2000, cost: Cost = 1.0, seed: int = 0) -> dict:
    """Every axis of one run (a loaded ``Run``); the model's greedy answers, hooks honoured, its wrapper applied.

    ``cost``: what a wrong answer costs, for ``cost_weighted_error`` (the mean cost over the OOD pairs at
    ``train_digits + 1`` digits, over the ID pairs for a task without OOD split): one number per wrong digit,
    a number per answer digit (units first), or a function ``cost(answer, truth) -> [n]`` of the integers.
    Keys: see ``SCORECARD_KEYS``; the OOD ones are None for a task without OOD split.
    """
    if n < 1:
        raise InputError(f"n must be positive, got {n}")
    task = run.task
    cost = _digit_weights(task, cost)
    wrapper = wrapper_relation(run)  # read once: every answer below goes through it

    def decode(a, b):  # answer tokens [n, answer_len]
        return answer_tokens(run, a, b, wrapper)

    (a, b), id_pairs = id_test_pairs(run, n, seed)
    truth = task.encode_answer(task.truth(a, b))
    tokens = decode(a, b)
    right = tokens == truth
    card = {"run": run.path.name, "task": task.describe(), "n": n, "id_pairs": id_pairs, "wrapper": None,
            "id_accuracy": float(right.all(axis=1).mean()), "id_accuracy_by_digit": _by_digit(task, right)}
    if not task.has_ood:
        cost_value, cost_text = _cost(task, tokens, truth, cost)
        return {**card, **{key: None for key in OOD_KEYS}, "cost_weighted_error": cost_value, "cost": cost_text + " (ID pairs)"}
    card["wrapper"] = None if wrapper is None else wrapper.name
    headline = str(task.train_digits + 1)  # both operands one digit longer: the pairs every OOD axis below is measured on
    oa, ob = setting_pairs(task, headline, n, seed)
    truth_ood = task.encode_answer(task.truth(oa, ob))
    tokens_ood = decode(oa, ob)
    right_ood = tokens_ood == truth_ood
    by_setting = {}
    for setting in ood_settings(task):
        if setting == headline:
            by_setting[setting] = float(right_ood.all(axis=1).mean())
            continue
        sa, sb = setting_pairs(task, setting, n, seed)
        by_setting[setting] = float(np.mean(task.decode_answer(decode(sa, sb)) == task.truth(sa, sb)))
    ranked, _ = rank_relations(task, oa, ob, tokens_ood, task.relations())
    best = task.relation(ranked.relation.iloc[0])
    class_map = None
    if best.representative is not None:
        class_map = float((tokens_ood == decode(*best.representative(oa, ob))).all(axis=1).mean())
    wrong = ~right_ood.all(axis=1)
    cost_value, cost_text = _cost(task, tokens_ood, truth_ood, cost)
    card.update({
        "ood_accuracy": by_setting[headline], "ood_accuracy_by_setting": by_setting,
        "ood_accuracy_by_digit": _by_digit(task, right_ood),
        "best_relation": best.name, "relation_consistency": float(ranked.accuracy.iloc[0]),
        "class_map_agreement": class_map,
        "wrong_digit_share": _by_digit(task, ~right_ood[wrong]) if wrong.any() else None,
        "accuracy_by_carry": None, "stages": None, "weakest_stage": None,
        "cost_weighted_error": cost_value, "cost": cost_text + " (OOD pairs, both operands long)",
    })
    if isinstance(task, AdditionTask):
        carry_id, carry_ood = carries_out(task, a, b), carries_out(task, oa, ob)
        card["accuracy_by_carry"] = {
            split: {"carry": float(ok[carry].mean()) if carry.any() else None, "no carry": float(ok[~carry].mean()) if (~carry).any() else None}
            for split, ok, carry in (("id", right.all(axis=1), carry_id), ("ood", right_ood.all(axis=1), carry_ood))
        }
        residue_tokens = decode(*task.residue_relation().representative(oa, ob))
        card["stages"] = _stage_shares(stage_passes(task, tokens_ood, truth_ood, residue_tokens, carry_ood), carry_ood)
        card["weakest_stage"] = min((s for s in STAGES if card["stages"][s] is not None), key=lambda s: card["stages"][s])
    return card


OOD_KEYS = ("ood_accuracy", "ood_accuracy_by_setting", "ood_accuracy_by_digit", "best_relation", "relation_consistency",
            "class_map_agreement", "wrong_digit_share", "accuracy_by_carry", "stages", "weakest_stage")
SCORECARD_KEYS = ("run", "task", "n", "id_pairs", "wrapper", "id_accuracy", "id_accuracy_by_digit", *OOD_KEYS, "cost_weighted_error", "cost")


def scorecard_table(cards: Sequence[dict]) -> pd.DataFrame:
    """Scorecards side by side, tidy: one row per run, axis and setting, with its value.

    Axes: id_accuracy, ood_accuracy (setting: the OOD setting), relation_consistency (setting: the relation),
    class_map_agreement, id_digit_accuracy and ood_digit_accuracy (setting: the digit), accuracy_by_carry
    (setting: ``id, carry`` ...), stage (setting: the stage) and cost_weighted_error. Absent axes have no rows.
    """
    rows = []
    for card in cards:
        def add(axis, setting, value):
            if value is not None:
                rows.append({"run": card["run"], "axis": axis, "setting": setting, "value": float(value)})

        add("id_accuracy", "", card["id_accuracy"])
        for setting, value in (card["ood_accuracy_by_setting"] or {}).items():
            add("ood_accuracy", setting, value)
        add("relation_consistency", card["best_relation"] or "", card["relation_consistency"])
        add("class_map_agreement", card["best_relation"] or "", card["class_map_agreement"])
        for split in ("id", "ood"):
            for digit, value in (card[f"{split}_accuracy_by_digit"] or {}).items():
                add(f"{split}_digit_accuracy", digit, value)
        for split, shares in (card["accuracy_by_carry"] or {}).items():
            for carry, value in shares.items():
                add("accuracy_by_carry", f"{split}, {carry}", value)
        for stage, value in (card["stages"] or {}).items():
            add("stage", stage, value)
        add("cost_weighted_error", "", card["cost_weighted_error"])
    return pd.DataFrame(rows, columns=["run", "axis", "setting", "value"])
