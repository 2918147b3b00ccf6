"""Relation discovery and class maps, on the paper's own checkpoints and on a model trained here."""
import numpy as np
import pytest

from equiv_tools import AdditionTask, InputError, Relation
from equiv_tools.analysis.class_maps import class_map, same_answer_pairs
from equiv_tools.analysis.discovery import discover_relations, distinct_relations
from equiv_tools.analysis.evaluation import evaluate_run
from equiv_tools.analysis.reproduce import PAPER_TASK, load_paper_model
from equiv_tools.core.relations import sum_of_residues
from equiv_tools.forward.representations import hidden_states

PAPER_RELATION = "(a mod 10^3) + (b mod 10^3)"


def test_model_s2_reproduces_the_paper(model_s2):
    result = evaluate_run(model_s2, n=5000, seed=0)
    assert result["id_accuracy"] == 1.0
    assert result["ood_accuracy"] == 0.0
    a, b = PAPER_TASK.sample_ood(5000, digits=4, seed=1)
    summary, per_digit = discover_relations(model_s2.model, PAPER_TASK, a, b)
    assert summary.relation.iloc[0] == PAPER_RELATION
    assert summary.accuracy.iloc[0] >= 0.999
    # the runner-up, (a + b) mod 10^3, agrees about half the time: exactly when the residues do not carry
    runner_up = summary.set_index("relation").accuracy["(a + b) mod 10^3"]
    assert 0.45 < runner_up < 0.55
    top = per_digit[per_digit.relation == PAPER_RELATION].sort_values("position")
    assert top.position.tolist() == list(range(6)) and top.agreement.min() >= 0.999
    cmap = class_map(model_s2.model, PAPER_TASK, a[:2000], b[:2000])
    assert cmap.relation == PAPER_RELATION
    assert cmap.verified_share >= 0.999
    assert (cmap.frame.rep_a == a[:2000] % 1000).all() and (cmap.frame.rep_b == b[:2000] % 1000).all()
    # an OOD input sits far closer to its representative than to an ID pair with the same answer, or to another representative
    last = cmap.distance_summary().iloc[-1]
    assert last["representative"] < 0.3 * last["same-answer ID pair"] < last["other representative"]


def test_class_map_representatives_are_in_distribution(add3_nano):
    task = add3_nano.task
    a, b = task.sample_ood(400, digits=4, seed=3)
    cmap = class_map(add3_nano.model, task, a, b)
    frame = cmap.frame
    assert (frame.rep_a < 1000).all() and (frame.rep_b < 1000).all()
    with pytest.raises(InputError, match=r"\(a mod 10\^4\) \+ \(b mod 10\^4\).*outside the training distribution"):
        class_map(add3_nano.model, task, a, b, relation=sum_of_residues(4))
    # the baselines: an ID pair with the representative's answer (never the representative), another row's representative
    found = frame.same_a >= 0
    assert found.mean() > 0.99
    assert np.array_equal(task.truth(frame.same_a[found], frame.same_b[found]), task.truth(frame.rep_a[found], frame.rep_b[found]))
    assert not ((frame.same_a == frame.rep_a) & (frame.same_b == frame.rep_b)).any()
    assert (frame.other != np.arange(len(frame))).all() and sorted(frame.other) == list(range(len(frame)))
    assert set(cmap.distances.layer) == set(range(task_layers(add3_nano) + 1))
    assert len(cmap.distances) == len(frame) * 3 * (task_layers(add3_nano) + 1)


def task_layers(run):
    return run.model.cfg.n_layers


def test_relations_equal_on_every_input_are_reported_once(add3_nano):
    task = add3_nano.task
    a, b = task.sample_ood(500, digits=4, seed=4)
    summary, per_digit = discover_relations(add3_nano.model, task, a, b)
    assert summary.relation.is_unique and "(a mod 10^4) + (b mod 10^4)" not in set(summary.relation)
    truth = summary.set_index("relation").loc["a + b"]
    assert set(truth.equal_on_these_inputs.split("; ")) == {"(a mod 10^4) + (b mod 10^4)", "(a mod 10^5) + (b mod 10^5)", "(a + b) mod 10^5"}
    assert set(per_digit.relation) == set(summary.relation)


def test_model_51_matches_its_readme(paper_dir):
    run = load_paper_model("model_51.pt", paper_dir)
    result = evaluate_run(run, n=5000, seed=0)
    # README, 5,000 pairs: ID 0.512, OOD 0.000, OOD matches (a mod 1000)+(b mod 1000) 0.449.
    # Binomial standard error at n=5000 is about 0.007; allow four of them.
    assert abs(result["id_accuracy"] - 0.512) < 0.03
    assert result["ood_accuracy"] < 0.005
    a, b = PAPER_TASK.sample_ood(5000, digits=4, seed=0)
    summary, _ = discover_relations(run.model, PAPER_TASK, a, b)
    assert abs(summary.set_index("relation").accuracy[PAPER_RELATION] - 0.449) < 0.03


def test_custom_relation_and_errors(tiny_run):
    task = tiny_run.task
    a, b = task.sample_ood(300, seed=0)
    always_zero = Relation("0", lambda a, b: np.zeros_like(a))
    summary, per_digit = discover_relations(tiny_run.model, task, a, b, relations=task.relations() + [always_zero])
    assert "0" in set(summary.relation) and summary.relation.is_unique
    assert len(summary) == len(distinct_relations(task.relations() + [always_zero], a, b)) == len(task.relations())  # (a mod 10^2) + (b mod 10^2) is a + b here
    assert per_digit.groupby("relation").size().eq(task.answer_len).all()
    assert summary.accuracy.is_monotonic_decreasing
    with pytest.raises(InputError, match="names no ID representative"):
        class_map(tiny_run.model, task, a, b, relation=always_zero)
    with pytest.raises(InputError, match="at least one input"):
        class_map(tiny_run.model, task, [], [])
    with pytest.raises(InputError, match="unknown hook"):
        hidden_states(tiny_run.model, task, a, b, hook="blocks.9.hook_resid_post")


def test_relation_share_by_step_follows_each_checkpoint(tiny_run):
    from equiv_tools.analysis.discovery import relation_share_by_step
    from equiv_tools.forward.decoding import naive_greedy_decode
    from equiv_tools.runs.models import load_run

    task, rule = tiny_run.task, sum_of_residues(1)
    shares = relation_share_by_step(tiny_run.path, rule, n=200, seed=7, progress=False)
    assert shares.step.tolist() == [0, 100, 200, 300]
    a, b = task.sample_ood(200, seed=7)
    for row in shares.itertuples():
        model = load_run(tiny_run.path, step=row.step).model
        answers = task.decode_answer(naive_greedy_decode(model, task, a, b))
        assert row.relation_share == np.mean(answers == a % 10 + b % 10) and row.ood_accuracy == np.mean(answers == a + b)


def test_same_answer_pairs_draw_uniformly_among_the_others():
    task = AdditionTask(train_digits=1, width=2)
    n = 6000
    # answer 2: (0, 2), (1, 1), (2, 0); the representative (0, 2) must get each of the other two half the time
    a, b = same_answer_pairs(task, np.zeros(n, dtype=np.int64), np.full(n, 2), seed=3)
    assert set(zip(a.tolist(), b.tolist())) == {(1, 1), (2, 0)}
    share = float(np.mean(a == 1))
    assert abs(share - 0.5) < 0.03  # binomial sd 0.0065; drawing the "next" pair after a self-draw gave 1/3 or 2/3
    a, b = same_answer_pairs(task, [0, 9, 1], [1, 9, 0], seed=0)  # answer 1 has one other pair; 18 has none
    assert a.tolist() == [1, -1, 0] and b.tolist() == [0, -1, 1]
