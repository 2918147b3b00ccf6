"""Relation discovery and class maps, on the paper's own checkpoints and on a model trained here."""
import numpy as np
import pytest

from equiv_tools import InputError, Relation
from equiv_tools.discovery import class_map, discover_relations
from equiv_tools.evaluation import evaluate_run
from equiv_tools.reproduce import PAPER_TASK, load_paper_model

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
    assert (cmap.frame.rep_a == a[:2000] % 1000).all()
    # an OOD input sits far closer to its representative than ID inputs sit to each other
    assert cmap.frame.distance.median() < 0.2 * cmap.unrelated_distance


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
    assert "0" in set(summary.relation) and len(summary) == len(task.relations()) + 1
    assert per_digit.groupby("relation").size().eq(task.answer_len).all()
    assert summary.accuracy.is_monotonic_decreasing
    with pytest.raises(InputError, match="names no ID representative"):
        class_map(tiny_run.model, task, a, b, relation=always_zero)
    with pytest.raises(InputError, match="unknown hook"):
        class_map(tiny_run.model, task, a, b, hook="blocks.9.hook_resid_post")
