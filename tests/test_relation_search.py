"""search_relations: the grammar of truncations, its names, its ranking, and the rule it finds on real models."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from equiv_tools import AdditionTask, InputError, ModularDigitTask, ModularTask, MultiplicationTask
from equiv_tools.analysis.class_maps import class_map
from equiv_tools.analysis.discovery import discover_relations
from equiv_tools.analysis.relation_search import read_digits, relation_grammar, search_relations
from equiv_tools.analysis.reproduce import PAPER_TASK
from equiv_tools.analysis.sensitivity import digit_sensitivity
from equiv_tools.core import relations as R

PAPER_RELATION = "(a mod 10^3) + (b mod 10^3)"


def test_truncation_relation_names_and_values_are_those_of_the_hand_written_constructors():
    a = np.arange(0, 99_999, 37)
    b = (a * 7919) % 100_000
    pairs = [
        (R.SUM, R.truncation_relation("+")), (R.PRODUCT, R.truncation_relation("*")),
        (R.sum_of_residues(3), R.truncation_relation("+", 3, 3)), (R.sum_mod(2), R.truncation_relation("+", k=2)),
        (R.product_of_residues(2), R.truncation_relation("*", 2, 2)), (R.product_mod(4), R.truncation_relation("*", k=4)),
        (R.modular_sum_of_residues(2, 97), R.truncation_relation("+", 2, 2, p=97)), (R.modular_product(113), R.truncation_relation("*", p=113)),
    ]
    for hand, general in pairs:
        assert general.name == hand.name
        assert np.array_equal(general(a, b), hand(a, b))
    rep_a, rep_b = R.truncation_relation("+", 3, 2).representative(a, b)
    assert np.array_equal(rep_a, a % 1000) and np.array_equal(rep_b, b % 100)
    assert R.truncation_relation("+", k=3).representative is None


def test_grammar_size_and_terms():
    grammar = relation_grammar(AdditionTask(train_digits=3, width=5))
    # i, j in {whole, 1..4}; no reduction, mod 10^1..10^5
    assert len(grammar) == 5 * 5 * 6 and grammar.relation.is_unique
    terms = grammar.set_index("relation").terms
    assert terms["a + b"] == 0 and terms["(a + b) mod 10^3"] == 1 and terms[PAPER_RELATION] == 2
    assert terms["((a mod 10^3) + (b mod 10^3)) mod 10^4"] == 3
    modular = relation_grammar(ModularDigitTask(train_digits=2, width=3, p=97))
    assert len(modular) == 3 * 3 * 5 and "((a mod 10^2) + (b mod 10^2)) mod 97" in set(modular.relation)
    with pytest.raises(InputError, match="digit layout"):
        search_relations(None, ModularTask(p=7), [1], [2], answers=[3])


def test_scores_match_a_plain_loop_and_the_simplest_tie_comes_first():
    task = AdditionTask(train_digits=3, width=5)
    a, b = task.sample_ood(300, digits=4, seed=2)
    answers = R.sum_of_residues(3)(a, b)
    answers[:30] = (a + b)[:30]  # 10% follow the truth instead
    search = search_relations(None, task, a, b, answers=answers)
    frame = search.frame
    for row in frame.itertuples():
        hits = 0
        for x, y, answer in zip(a.tolist(), b.tolist(), answers.tolist()):
            x = x if pd.isna(row.a_mod) else x % 10 ** int(row.a_mod)
            y = y if pd.isna(row.b_mod) else y % 10 ** int(row.b_mod)
            value = x + y if pd.isna(row.reduced_mod) else (x + y) % int(row.reduced_mod)
            hits += value == answer
        assert row.accuracy == hits / len(a)
    assert frame.relation.tolist()[:3] == [PAPER_RELATION, f"({PAPER_RELATION}) mod 10^4", f"({PAPER_RELATION}) mod 10^5"]
    assert frame.accuracy.iloc[0] == 0.9
    assert frame.accuracy.is_monotonic_decreasing
    assert search.best is search.relation(PAPER_RELATION) and search.best.name == PAPER_RELATION


def test_model_s2_rule_found_without_candidates(model_s2):
    a, b = PAPER_TASK.sample_ood(3000, digits=4, seed=1)
    search = search_relations(model_s2.model, PAPER_TASK, a, b)
    assert search.frame.relation.iloc[0] == PAPER_RELATION
    assert search.frame.accuracy.iloc[0] >= 0.999
    # the equal mod 10^4 variant ranks after it: more terms
    assert search.frame.relation.iloc[1] == f"({PAPER_RELATION}) mod 10^4"
    # the Relation found is one class_map accepts
    cmap = class_map(model_s2.model, PAPER_TASK, a[:300], b[:300], relation=search.best)
    assert cmap.relation == PAPER_RELATION and cmap.verified_share >= 0.999


def test_mul2_nano_finds_the_rule_of_the_hand_written_list():
    from equiv_tools.runs.models import load_run

    run = load_run(Path(__file__).resolve().parents[1] / "data" / "mul2_nano")
    task = run.task
    assert isinstance(task, MultiplicationTask)
    a, b = task.sample_ood(2000, digits=3, seed=1)
    summary, _ = discover_relations(run.model, task, a, b)
    search = search_relations(run.model, task, a, b)
    assert search.frame.relation.iloc[0] == summary.relation.iloc[0] == "(a mod 10^2) * (b mod 10^2)"
    assert search.frame.accuracy.iloc[0] == summary.accuracy.iloc[0] > 0.8


def test_sensitivity_guides_the_search_to_the_digits_read(add3_nano):
    task = add3_nano.task
    a, b = task.sample_ood(200, digits=4, seed=5)
    frame = digit_sensitivity(add3_nano.model, task, a, b, seed=0)
    assert read_digits(task, frame) == (3, 3)  # the thousands digits change (almost) nothing
    guided = search_relations(add3_nano.model, task, a, b, sensitivity=frame)
    assert len(guided.frame) == 6  # (a mod 10^3) + (b mod 10^3), unreduced or reduced mod 10^1..10^5
    assert guided.best.name == PAPER_RELATION
    full = search_relations(add3_nano.model, task, a, b).frame.set_index("relation").accuracy
    assert guided.frame.accuracy.iloc[0] == full[PAPER_RELATION] == full.max()
    # a model reading every digit present keeps whole operands
    every = frame.assign(change_rate=1.0)
    assert read_digits(task, every) == (None, None)
