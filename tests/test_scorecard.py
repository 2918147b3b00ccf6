"""The scorecard: every axis equals what the kit's own measures (or numpy by hand) give on the same pairs."""
import json

import numpy as np
import pytest

import equiv_tools as et
from equiv_tools.analysis.evaluation import evaluate_run
from equiv_tools.analysis.scorecard import SCORECARD_KEYS, STAGES, carries_out, ood_settings, scorecard, scorecard_table, setting_pairs
from equiv_tools.cli import main

from .conftest import REPO

N = 1000
RULE = "(a mod 10^3) + (b mod 10^3)"


@pytest.fixture(scope="module")
def card(add3_nano):
    return scorecard(add3_nano, n=N)


def test_the_headline_axes_are_evaluate_and_discover_on_the_same_pairs(add3_nano, card):
    assert set(card) == set(SCORECARD_KEYS)
    evaluation = evaluate_run(add3_nano, n=N)
    assert card["id_accuracy"] == evaluation["id_accuracy"] and card["id_pairs"] == evaluation["id_pairs"]
    assert card["ood_accuracy"] == evaluation["ood_accuracy"] == card["ood_accuracy_by_setting"]["4"]
    a, b = add3_nano.task.sample_ood(N, seed=0)
    summary, _ = et.discover_relations(add3_nano.model, add3_nano.task, a, b)
    assert card["best_relation"] == summary.relation.iloc[0] == RULE
    assert card["relation_consistency"] == summary.accuracy.iloc[0]


def test_per_digit_class_map_carry_and_stage_shares_by_hand(add3_nano, card):
    task = add3_nano.task
    a, b = task.sample_ood(N, seed=0)
    answers, truth = et.predict(add3_nano.model, task, a, b), task.truth(a, b)
    on_residues = et.predict(add3_nano.model, task, a % 1000, b % 1000)
    digit = lambda x, j: (x // 10**j) % 10  # noqa: E731
    for j in range(task.answer_len):
        assert card["ood_accuracy_by_digit"][f"10^{j}"] == pytest.approx(np.mean(digit(answers, j) == digit(truth, j)), abs=1e-12)
    assert card["class_map_agreement"] == pytest.approx(np.mean(answers == on_residues), abs=1e-12)
    stages = card["stages"]
    assert stages["reads_new_digits"] == pytest.approx(np.mean(answers != on_residues), abs=1e-12)
    assert stages["low_digits"] == pytest.approx(np.mean(answers % 1000 == truth % 1000), abs=1e-12)
    assert stages["recomposed"] == pytest.approx(np.mean(answers % 10_000 == truth % 10_000), abs=1e-12)
    assert stages["leading_digits"] == pytest.approx(np.mean(answers // 10_000 == truth // 10_000), abs=1e-12)
    carry = a % 1000 + b % 1000 >= 1000
    assert np.array_equal(carries_out(task, a, b), carry)
    assert stages["carry_into_new_digit"] == pytest.approx(np.mean(digit(answers, 3)[carry] == digit(truth, 3)[carry]), abs=1e-12)
    # the adder follows the residue rule: it ignores the new digits, gets the low ones, and the 10^3 digit only by chance
    assert stages["reads_new_digits"] < 0.05 and stages["low_digits"] > 0.95 and stages["new_digit"] < 0.2
    assert card["weakest_stage"] == min((s for s in STAGES), key=lambda s: stages[s]) == "reads_new_digits"
    wrong = answers != truth
    assert card["wrong_digit_share"]["10^3"] == pytest.approx(np.mean(digit(answers, 3)[wrong] != digit(truth, 3)[wrong]), abs=1e-12)


def test_cost_weighted_error_counts_what_the_user_says(add3_nano, card):
    task = add3_nano.task
    a, b = task.sample_ood(N, seed=0)
    answers, truth = et.predict(add3_nano.model, task, a, b), task.truth(a, b)
    wrong_digits = sum(((answers // 10**j) % 10 != (truth // 10**j) % 10) for j in range(task.answer_len))
    assert card["cost_weighted_error"] == pytest.approx(wrong_digits.mean(), abs=1e-12)
    thousands_only = scorecard(add3_nano, n=N, cost=[0, 0, 0, 2.5, 0, 0])
    assert thousands_only["cost_weighted_error"] == pytest.approx(2.5 * (1 - card["ood_accuracy_by_digit"]["10^3"]), abs=1e-12)
    distance = scorecard(add3_nano, n=N, cost=lambda answer, true: np.abs(answer - true))
    assert distance["cost_weighted_error"] == pytest.approx(np.abs(answers - truth).mean(), rel=1e-12)
    with pytest.raises(et.InputError, match="one per answer digit|6 of them"):
        scorecard(add3_nano, n=10, cost=[1, 2])


def test_ood_settings_hold_the_lengths_they_name():
    task = et.AdditionTask(train_digits=3, width=5)
    assert ood_settings(task) == ["4", "5", "4-one-operand", "5-one-operand"]
    a, b = setting_pairs(task, "5", 500)
    assert (a >= 10_000).all() and (b >= 10_000).all() and (a < 100_000).all() and (b < 100_000).all()
    a, b = setting_pairs(task, "4-one-operand", 500)
    long = (a >= 1000).astype(int) + (b >= 1000).astype(int)
    assert (long == 1).all() and (np.maximum(a, b) < 10_000).all() and 0.4 < np.mean(a >= 1000) < 0.6
    with pytest.raises(et.InputError, match="unknown OOD setting"):
        setting_pairs(task, "6", 10)


def test_a_task_without_ood_split_gets_the_id_axes_only():
    run = et.load_run("grok113")
    card = scorecard(run, n=500)
    assert card["id_accuracy"] > 0.99 and card["ood_accuracy"] is None and card["stages"] is None and card["best_relation"] is None
    assert card["cost_weighted_error"] == pytest.approx(1 - card["id_accuracy"], abs=1e-12)  # one answer digit
    table = scorecard_table([card])
    assert set(table.axis) == {"id_accuracy", "id_digit_accuracy", "cost_weighted_error"}


def test_the_table_puts_runs_side_by_side(add3_nano, card):
    other = scorecard(et.load_run("mul2_nano"), n=200)
    table = scorecard_table([card, other])
    assert list(table.columns) == ["run", "axis", "setting", "value"]
    assert set(table.run) == {"add3_nano", "mul2_nano"}
    row = table[(table.run == "add3_nano") & (table.axis == "ood_accuracy") & (table.setting == "4-one-operand")]
    assert row.value.item() == card["ood_accuracy_by_setting"]["4-one-operand"]
    assert table[(table.run == "mul2_nano") & (table.axis == "stage")].empty  # stages are measured for addition


def test_hooks_the_user_attached_reach_the_scorecard(add3_nano, card):
    with add3_nano.model.hooks(fwd_hooks=[("blocks.0.hook_attn_out", lambda x, hook: x * 0)]):
        broken = scorecard(add3_nano, n=200)
    assert card["id_accuracy"] == 1.0 and broken["id_accuracy"] < 0.5


def test_model_s2_follows_its_relation_on_every_4_digit_input_cli(paper_dir, tmp_path, capsys):
    assert main(["import-mingpt", str(paper_dir / "exploregpt-adder" / "model_s2.pt"), str(tmp_path / "s2"),
                 "--task", "addition", "--train-digits", "3"]) == 0
    capsys.readouterr()
    assert main(["scorecard", str(tmp_path / "s2"), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert {"id_accuracy", "ood_accuracy", "ood_accuracy_by_setting", "best_relation", "relation_consistency", "cost_weighted_error"} <= set(card)
    assert set(card["ood_accuracy_by_setting"]) >= {"4", "5", "4-one-operand"}
    assert card["best_relation"] == RULE and card["relation_consistency"] >= 0.999
    assert card["id_accuracy"] >= 0.999 and card["ood_accuracy"] == 0.0


def test_the_cli_compares_runs_and_plots_them(tmp_path, capsys):
    add3, mul2 = REPO / "data" / "add3_nano", REPO / "data" / "mul2_nano"
    assert main(["scorecard", str(add3), str(mul2), "--n", "200", "--plot", str(tmp_path / "cards.png")]) == 0
    out = capsys.readouterr().out
    assert "add3_nano" in out and "mul2_nano" in out and "OOD accuracy (4-one-operand)" in out
    assert (tmp_path / "cards.png").stat().st_size > 10_000
    assert main(["scorecard", str(add3), "--plot", str(tmp_path / "cards.pdf")]) == 2
    assert "must end in .png or .svg" in capsys.readouterr().err
