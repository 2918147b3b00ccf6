"""Which rule does a model follow, found without a hand-written candidate list.

``search_relations`` enumerates a grammar of relations built from digit
truncations and the task's operation, ``(a mod 10^i) op (b mod 10^j)``,
optionally reduced ``mod 10^k`` (or ``mod p`` for a modular task), with
i, j < width (a truncation at the width is the whole operand) and
1 <= k <= width, and scores every one against the model's greedy answers,
decoded once. Given an input-digit sensitivity frame (``sensitivity.digit_sensitivity``),
the truncations are limited to the digits the model was seen to read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from equiv_tools.core.errors import InputError
from equiv_tools.core.relations import Relation, truncation_relation
from equiv_tools.core.tasks import DigitTask
from equiv_tools.forward.decoding import greedy_decode

TOLERANCE = 0.001  # relations this close to the best accuracy count as tied; the simplest of them comes first
MIN_ACCURACY = 0.5  # a rule fits when most inputs follow it; below, the search reports that none does


def relation_grammar(task: DigitTask) -> pd.DataFrame:
    """Every relation of the grammar for ``task``, one row each: relation (name), rule (the ``Relation``),
    a_mod, b_mod (truncation exponents i, j; <NA> keeps the operand whole), reduced_mod (10^k or p; <NA> for none),
    terms (how many ``mod`` reductions the expression holds) and exponents (i + j + k, 0 for a missing one and for p)."""
    cuts = [None, *range(1, task.width)]
    reductions = [(None, None), *((k, None) for k in range(1, task.width + 1))]
    p = getattr(task, "p", None)  # the modulus of a modular digit task
    if p is not None:
        reductions.append((None, p))
    rows = []
    for i in cuts:
        for j in cuts:
            for k, q in reductions:
                rule = truncation_relation(task.symbol, i, j, k, q)
                rows.append({
                    "relation": rule.name, "rule": rule, "a_mod": i, "b_mod": j,
                    "reduced_mod": 10**k if k is not None else q,
                    "terms": sum(x is not None for x in (i, j, k if q is None else q)),
                    "exponents": (i or 0) + (j or 0) + (k or 0),
                })
    frame = pd.DataFrame(rows)
    return frame.astype({"a_mod": "Int64", "b_mod": "Int64", "reduced_mod": "Int64"})


def read_digits(task: DigitTask, sensitivity: pd.DataFrame, threshold: float = 0.01) -> tuple[Optional[int], Optional[int]]:
    """How many low digits of a and of b the model reads: for each operand, one more than the highest position whose
    resampling changes some answer digit in more than ``threshold`` of inputs; None (the whole operand) when that is
    the highest position the inputs have. ``sensitivity``: a ``digit_sensitivity`` frame (one split)."""
    if "split" in sensitivity and sensitivity["split"].nunique() > 1:
        raise InputError("pass the sensitivity rows of one split, e.g. frame[frame.split == 'ood']")
    changes = sensitivity.groupby("operand_position", sort=False).agg(rate=("change_rate", "max"), n=("n", "max"))
    names = task.position_names()
    counts = []
    for operand in (names[: task.width], names[task.width : task.prompt_len]):  # most significant first
        present = [name for name in operand if changes.n[name] > 0]
        read = [k for k, name in enumerate(reversed(operand)) if changes.n[name] > 0 and changes.rate[name] > threshold]
        if not read:
            raise InputError("the sensitivity frame shows no operand digit that changes the answer; nothing to guide the search")
        counts.append(None if max(read) + 1 >= len(present) else max(read) + 1)
    return counts[0], counts[1]


def relation_values(grammar: pd.DataFrame, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each grammar row's answers on (a, b): int64 [relations, n]."""
    return np.stack([rule(a, b) for rule in grammar["rule"]])


def rank_simplest_first(frame: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Best accuracy first; among rows within ``tolerance`` of the best, fewest terms, then smallest exponents, then name."""
    tied = frame["accuracy"] >= frame["accuracy"].max() - tolerance
    head = frame[tied].sort_values(["terms", "exponents", "relation"], kind="stable")
    tail = frame[~tied].sort_values(["accuracy", "terms", "exponents", "relation"], ascending=[False, True, True, True], kind="stable")
    return pd.concat([head, tail]).reset_index(drop=True)


@dataclass(frozen=True)
class RelationSearch:
    """The grammar ranked against a model: ``frame`` best first, one row per relation, columns relation,
    accuracy (share of inputs where the model's greedy answer equals the relation's), terms, exponents,
    a_mod, b_mod, reduced_mod. ``rules`` holds the ``Relation`` objects in the same order (for ``class_map``).

    ``found``: the top rule's accuracy reaches ``min_accuracy``. Where it does not, no rule of the grammar
    fits: ``best`` refuses to name one, and ``note`` says so.
    """

    frame: pd.DataFrame
    rules: tuple[Relation, ...]
    min_accuracy: float = MIN_ACCURACY

    @property
    def found(self) -> bool:
        return bool(self.frame["accuracy"].iloc[0] >= self.min_accuracy)

    @property
    def note(self) -> str:
        """One line: the rule found and its accuracy, or that no rule fits (with the least bad one)."""
        top = self.frame.iloc[0]
        if self.found:
            return f"{top['relation']} fits {top['accuracy']:.3f} of the inputs"
        return f"no rule in the grammar fits (best: {top['relation']} at {top['accuracy']:.3f}, below {self.min_accuracy})"

    @property
    def best(self) -> Relation:
        """The rule found; InputError where none fits (``found`` is False): ``frame`` still ranks them all."""
        if not self.found:
            raise InputError(self.note + "; inspect .frame, or search with a lower min_accuracy")
        return self.rules[0]

    def relation(self, name: str) -> Relation:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise InputError(f"{name!r} is not in the grammar searched; the top one is {self.rules[0].name!r}")

    def summary(self) -> dict:
        top = self.frame.iloc[0]
        return {"relation": top["relation"], "accuracy": float(top["accuracy"]), "terms": int(top["terms"]),
                "searched": len(self.frame), "found": self.found, "note": self.note}


def search_relations(model, task: DigitTask, a, b, answers: Optional[np.ndarray] = None, batch_size: int = 4096,
                     tolerance: float = TOLERANCE, sensitivity: Optional[pd.DataFrame] = None,
                     min_accuracy: float = MIN_ACCURACY) -> RelationSearch:
    """Rank the grammar of ``task`` by agreement with the model's greedy answers on (a, b), each [n].

    The answers are decoded once with ``greedy_decode`` (the user's hooks apply) unless given as
    integers [n]; every relation is then scored with numpy. Among relations within ``tolerance``
    of the best accuracy, the one with the fewest terms (then the smallest exponents) comes first.
    With ``sensitivity`` (a ``digit_sensitivity`` frame of one split), only truncations to the digits the model
    reads are searched (``read_digits``). A top accuracy below ``min_accuracy`` means no rule fits (``found``).
    """
    if not isinstance(task, DigitTask):
        raise InputError(f"search_relations needs a task in the digit layout; {task.describe()} has no digits to truncate")
    a, b = task.check_operands(a, b)
    if a.size == 0:
        raise InputError("search_relations needs at least one input")
    if answers is None:
        answers = task.decode_answer(greedy_decode(model, task, a, b, batch_size=batch_size))
    answers = np.asarray(answers, dtype=np.int64).reshape(-1)
    if answers.size != a.size:
        raise InputError(f"{answers.size} answers for {a.size} inputs")
    grammar = relation_grammar(task)
    if sensitivity is not None:
        i, j = read_digits(task, sensitivity)
        keep = (grammar.a_mod.isna() if i is None else grammar.a_mod == i) & (grammar.b_mod.isna() if j is None else grammar.b_mod == j)
        grammar = grammar[keep.to_numpy(dtype=bool, na_value=False)].reset_index(drop=True)
    grammar["accuracy"] = (relation_values(grammar, a, b) == answers[None, :]).mean(axis=1)  # [relations]
    ranked = rank_simplest_first(grammar, tolerance)
    columns = ["relation", "accuracy", "terms", "exponents", "a_mod", "b_mod", "reduced_mod"]
    return RelationSearch(ranked[columns], tuple(ranked["rule"]), min_accuracy)


def search_report(run, n: int = 10_000, ood_digits: Optional[int] = None, seed: int = 0, top: int = 10) -> dict:
    """The ``equiv-tools relations --search --json`` object for a run: the grammar searched on ``n`` OOD pairs,
    its ``top`` relations (relation, accuracy), whether a rule fits (``found``) and the one-line ``note``."""
    a, b = run.task.sample_ood(n, ood_digits, seed=seed)
    search = search_relations(run.model, run.task, a, b)
    rows = search.frame.head(top)[["relation", "accuracy"]].to_dict("records")
    return {"ood_digits": run.task.train_digits + 1 if ood_digits is None else ood_digits, "n": int(a.size),
            "searched": len(search.frame), "relations": rows, "found": search.found, "note": search.note}
