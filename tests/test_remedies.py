"""Remedies: one interface, checked over every remedy; then what each one promises, on real models."""
import inspect
import json

import numpy as np
import pytest
import torch

import equiv_tools as et
from equiv_tools.analysis import remedies
from equiv_tools.analysis.rule_wrapper import correction, wrapped_tokens
from equiv_tools.analysis.scorecard import SCORECARD_KEYS, scorecard, setting_pairs
from equiv_tools.cli import REMEDY_OPTIONS, main
from equiv_tools.runs.storage import load_tensors

from .conftest import REPO

BUDGET = 30
OPTIONS = {"prime": {"k": 20}, "finetune": {"k": 20}, "wrap": {}, "retrain": {"k": 50}}


def _files(folder) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def remedied(tiny_run, tmp_path_factory):
    """Every remedy applied once to the tiny adder, and the source's files before and after."""
    before = _files(tiny_run.path)
    out = tmp_path_factory.mktemp("remedies")
    results = {name: remedy(tiny_run.path, out / name, budget=BUDGET, n=200, progress=False, **OPTIONS[name])
               for name, remedy in remedies.REMEDIES.items()}
    return before, _files(tiny_run.path), results


@pytest.mark.parametrize("name", list(remedies.REMEDIES))
def test_every_remedy_keeps_the_interface(name, remedied, tiny_run):
    before, after, results = remedied
    result = results[name]
    assert after == before  # the source run: every byte and mtime unchanged
    assert result.run_dir.path.name == name and result.run_dir.path != tiny_run.path
    assert set(result.scorecard) == set(SCORECARD_KEYS)
    assert result.cost["remedy"] == name
    assert result.cost["steps"] == {"wrap": 0, "retrain": result.cost["steps"]}.get(name, BUDGET) and result.cost["steps"] <= BUDGET
    if result.cost["steps"]:
        assert et.read_metrics(result.run_dir).step.max() == result.cost["steps"]
        assert result.cost["examples_seen"] == result.cost["steps"] * tiny_run.config.training.batch_size
    record = json.loads(result.run_dir.remedy_file.read_text())
    assert record["remedy"] == name and record["source"] == str(tiny_run.path) and record["cost"] == result.cost
    assert record["scorecard"] == result.scorecard == scorecard(et.load_run(result.run_dir), n=200)  # the card is the run's


@pytest.mark.parametrize("name", list(remedies.REMEDIES))
def test_every_remedy_refuses_a_run_without_ood_split_in_one_line(name, tmp_path):
    with pytest.raises(et.InputError) as refused:
        remedies.REMEDIES[name]("grok113", tmp_path / "out", n=10, progress=False)
    assert "no OOD split" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_priming_mixes_k_ood_pairs_into_the_id_data_and_k0_none(remedied, tiny_run, tmp_path):
    _, _, results = remedied
    a, b = results["prime"].run_dir.read_extra_pairs()
    task = tiny_run.task
    assert a.size == 20 and not task.is_in_distribution(a, b).any() and max(a.max(), b.max()) < 100
    control = remedies.prime(tiny_run.path, tmp_path / "k0", budget=5, k=0, n=50, progress=False)
    assert control.run_dir.read_extra_pairs() is None and control.cost["extra_examples"] == 0
    # training continued from the run's weights: step 0 of the new series is the source's model
    start = load_tensors(control.run_dir.checkpoint_file(0))
    assert all(torch.equal(start[k], v) for k, v in load_tensors(tiny_run.dir.weights_file).items())


def test_the_finetune_trains_on_pairs_failing_its_stage(remedied, tiny_run):
    _, _, results = remedied
    result = results["finetune"]
    record = json.loads(result.run_dir.remedy_file.read_text())
    options = record["options"]
    assert options["stage"] == record["source_scorecard"]["weakest_stage"]
    a, b = result.run_dir.read_extra_pairs()
    assert [np.array_equal(x, y) for x, y in zip((a, b), remedies.failing_pairs(tiny_run, options["stage"], 20))] == [True, True]
    task, n = tiny_run.task, tiny_run.task.train_digits
    answers, truth = et.predict(tiny_run.model, task, a, b), task.truth(a, b)
    on_residues = et.predict(tiny_run.model, task, a % 10**n, b % 10**n)
    digit_n = (answers // 10**n) % 10 == (truth // 10**n) % 10
    passed = {"reads_new_digits": answers != on_residues, "low_digits": answers % 10**n == truth % 10**n, "new_digit": digit_n,
              "carry_into_new_digit": (a % 10**n + b % 10**n >= 10**n) & digit_n,
              "recomposed": answers % 10 ** (n + 1) == truth % 10 ** (n + 1), "leading_digits": answers // 10 ** (n + 1) == truth // 10 ** (n + 1)}
    assert a.size > 0 and not passed[options["stage"]].any()  # every pair trained on fails the stage


@pytest.mark.parametrize("min_id_accuracy, kept", [(0.98, 50), (0.999, 0)])
def test_the_finetune_guard_keeps_the_latest_checkpoint_that_held_id_accuracy(min_id_accuracy, kept, add3_nano, tmp_path):
    """50 steps on add3_nano: the held-out ID accuracy goes 1.000 (step 0), 0.9885 (25), 0.995 (50)."""
    result = remedies.finetune("add3_nano", tmp_path / "ft", budget=50, k=200, min_id_accuracy=min_id_accuracy, n=300, progress=False)
    metrics = et.read_metrics(result.run_dir)
    id_test = metrics[metrics.split == "id_test"].set_index("step").accuracy
    assert id_test[0] == 1.0 and id_test[25] < 0.995 and 0.98 <= id_test[50] < 0.999
    assert json.loads(result.run_dir.remedy_file.read_text())["options"]["kept_step"] == kept
    weights = load_tensors(result.run_dir.weights_file)
    assert all(torch.equal(weights[k], v) for k, v in load_tensors(result.run_dir.checkpoint_file(kept)).items())
    assert result.run_dir.read_state_step() == kept and result.cost["steps"] == 50
    if kept == 0:  # rolled back: the weights are add3_nano's, and the run cannot resume from the rejected state
        assert all(torch.equal(weights[k], v) for k, v in load_tensors(add3_nano.dir.weights_file).items())
        with pytest.raises(et.InputError, match="keeps no optimizer state for step 0"):
            et.resume(result.run_dir, steps=60, progress=False)


def test_retraining_starts_fresh_and_stops_at_its_targets(tiny_run, tmp_path):
    result = remedies.retrain(tiny_run.path, tmp_path / "rt", budget=200, k=50, target_id=0.0, target_ood=0.0, n=50, progress=False)
    assert result.cost["steps"] == 50  # the first evaluation meets targets of 0
    start = load_tensors(result.run_dir.checkpoint_file(0))
    source_start = load_tensors(tiny_run.dir.checkpoint_file(0))  # a fresh model of the same size and seed: the source's own start
    assert all(torch.equal(start[k], v) for k, v in source_start.items())
    assert result.run_dir.read_extra_pairs()[0].size == 50
    assert json.loads(result.run_dir.remedy_file.read_text())["options"]["reached"] is True


def test_the_wrapper_adds_back_exactly_what_the_relation_drops():
    task = et.AdditionTask(train_digits=3, width=5)
    a, b = task.sample_ood(2000, seed=3)
    relation = task.residue_relation()
    assert np.array_equal(correction(task, relation, a, b), (a - a % 1000) + (b - b % 1000))
    following = task.encode_answer(relation(a, b))
    assert np.array_equal(task.decode_answer(wrapped_tokens(task, following, relation, a, b)), task.truth(a, b))
    off_by_one = task.encode_answer(relation(a, b) + 1)
    assert not np.any(task.decode_answer(wrapped_tokens(task, off_by_one, relation, a, b)) == task.truth(a, b))


def test_the_wrapper_is_exact_on_model_s2_and_only_as_good_as_the_relation_on_the_kits_adder(paper_dir, tmp_path):
    et.import_mingpt(paper_dir / "exploregpt-adder" / "model_s2.pt", tmp_path / "s2", et.AdditionTask(train_digits=3, width=5))
    s2 = remedies.wrap(tmp_path / "s2", tmp_path / "s2_wrapped", n=2000)
    assert s2.scorecard["wrapper"] == "(a mod 10^3) + (b mod 10^3)" and s2.scorecard["ood_accuracy"] == 1.0
    assert s2.scorecard["id_accuracy"] == 1.0  # on ID inputs the correction is 0
    add3 = remedies.wrap("add3_nano", tmp_path / "add3_wrapped", n=2000)
    before = json.loads(add3.run_dir.remedy_file.read_text())["source_scorecard"]
    assert add3.scorecard["ood_accuracy"] == before["relation_consistency"] < 1.0  # wrong exactly where the model leaves the rule
    add3_nano = et.load_run("add3_nano")
    for setting in ("5", "4-one-operand"):  # in every setting: right exactly where the model follows the rule
        a, b = setting_pairs(add3_nano.task, setting, 2000)
        follows = np.mean(et.predict(add3_nano.model, add3_nano.task, a, b) == add3_nano.task.residue_relation()(a, b))
        assert add3.scorecard["ood_accuracy_by_setting"][setting] == follows


def test_the_cost_table_reads_every_remedy_run(remedied, tiny_run):
    _, _, results = remedied
    table = remedies.remedy_table([r.run_dir for r in results.values()])
    assert list(table.remedy) == list(remedies.REMEDIES)
    before = scorecard(tiny_run, n=200)
    for row, result in zip(table.itertuples(), results.values()):
        assert row.ood_gain == pytest.approx(result.scorecard["ood_accuracy"] - before["ood_accuracy"], abs=1e-12)
        assert row.id_change == pytest.approx(result.scorecard["id_accuracy"] - before["id_accuracy"], abs=1e-12)
        assert row.steps == result.cost["steps"] and row.k == result.cost["extra_examples"]
    with pytest.raises(et.InputError, match="not made by a remedy"):
        remedies.remedy_table([REPO / "data" / "add3_nano"])


@pytest.mark.parametrize("name, options, message", [
    ("finetune", {"k": 0}, "k \\(OOD pairs\\) must be a whole number of at least 1"),
    ("retrain", {"target_ood": 1.5}, "target_ood must be a share between 0 and 1"),
    ("prime", {"budget": 0}, "budget \\(optimizer steps\\) must be a whole number of at least 1"),
    ("finetune", {"stage": "carry"}, "unknown stage 'carry'"),
    ("wrap", {"relation": "a - b"}, "unknown relation 'a - b'"),
])
def test_bad_remedy_options_are_refused_in_one_line_before_any_work(name, options, message, tmp_path):
    with pytest.raises(et.InputError, match=message) as refused:
        remedies.REMEDIES[name]("add3_nano", tmp_path / "out", progress=False, **options)
    assert "\n" not in str(refused.value) and not (tmp_path / "out").exists()


def test_the_cli_offers_every_remedy_with_options_it_really_takes():
    assert list(REMEDY_OPTIONS) == list(remedies.REMEDIES)
    for name, options in REMEDY_OPTIONS.items():
        assert options <= set(inspect.signature(remedies.REMEDIES[name]).parameters), name


def test_the_cli_runs_a_remedy_and_refuses_options_it_does_not_take(tmp_path, capsys):
    assert main(["remedy", "wrap", "add3_nano", "--out", str(tmp_path / "w"), "--n", "200", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cost"]["steps"] == 0 and result["scorecard"]["wrapper"] == "(a mod 10^3) + (b mod 10^3)"
    assert main(["remedy", "wrap", "add3_nano", "--out", str(tmp_path / "w2"), "--k", "5"]) == 2
    err = capsys.readouterr().err
    assert "drop --k" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "w2").exists()
    assert main(["remedy", "prime", "add3_nano", "--out", str(tmp_path / "w"), "--budget", "5"]) == 2
    assert "already exists" in capsys.readouterr().err
