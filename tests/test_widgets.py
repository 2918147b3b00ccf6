"""Widgets, driven without a browser: set a control's value, read the widget's state."""
import numpy as np
import pytest

from equiv_tools.decoding import naive_greedy_decode
from equiv_tools.widgets import EquivalenceExplorer, MapViewer


@pytest.fixture(scope="module")
def explorer():
    return EquivalenceExplorer(a=1349, b=2705, model="kit/add3_nano")


def test_explorer_shows_the_equivalence(explorer):
    r = explorer.result
    assert (r["answer"], r["truth"], r["rep_a"], r["rep_b"], r["rep_answer"]) == (1054, 4054, 349, 705, 1054)
    assert r["relation"] == "(a mod 10^3) + (b mod 10^3)" and r["matches_relation"] and not r["correct"]
    assert r["per_digit"] == [True, True, True, False, True, True]  # only the thousands digit is wrong
    assert "answers as 349 + 705" in explorer.answer.value and "1054" in explorer.answer.value


def test_explorer_bad_values_show_a_message_and_recover(explorer):
    explorer.a_text.value = "12x"
    assert explorer.result is None and "digits 0-9" in explorer.message.value
    explorer.a_text.value = "1234567"
    assert explorer.result is None and "too wide" in explorer.message.value
    explorer.a_text.value = "349"
    assert explorer.message.value == "" and explorer.result["answer"] == 1054 and explorer.result["in_distribution"] is False
    explorer.b_slider.value = 705  # sliding sets the text box, which updates the answer
    assert explorer.b_text.value == "705" and explorer.result["in_distribution"] and explorer.result["correct"]


def test_explorer_loads_any_run_directory(explorer, tiny_run):
    explorer.models.load_path("/nonexistent/run")
    assert "does not exist" in explorer.models.message.value
    explorer.models.load_path(str(tiny_run.path))
    assert explorer.models.label == f"dir/{tiny_run.path}" and explorer.models.message.value == ""
    explorer.a_text.value, explorer.b_text.value = "3", "14"
    expected = tiny_run.task.decode_answer(naive_greedy_decode(tiny_run.model, tiny_run.task, [3], [14]))[0]
    assert explorer.result["truth"] == 17 and explorer.result["answer"] == expected  # the loaded model's own answer


def test_map_viewer_state_and_figure(tiny_run):
    viewer = MapViewer(a_range=(0, 19), b_range=(0, 19), step=1, catalog={"tiny": lambda: tiny_run})
    frame = viewer.frame
    assert len(frame) == 400 and frame.a.min() == 0 and frame.b.max() == 19
    # the shares, recomputed from the bridge's own answers and plain arithmetic
    a, b = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    a, b = a.ravel(), b.ravel()
    answers = tiny_run.task.decode_answer(naive_greedy_decode(tiny_run.model, tiny_run.task, a, b))
    relation = viewer.relation.value
    rule = {"(a mod 10^1) + (b mod 10^1)": a % 10 + b % 10, "a + b": a + b}[relation]
    correct, matches = answers == a + b, (answers != a + b) & (answers == rule)
    assert 0 < correct.mean() < 1
    assert viewer.shares == {"correct": correct.mean(), "matches relation": matches.mean(), "other": (~correct & ~matches).mean()}
    image = np.asarray(viewer.figure.axes[0].images[0].get_array())
    assert image.shape == (20, 20)
    assert np.array_equal(image == 0, correct.reshape(20, 20))  # colour 0 = correct, rows are a
    assert bytes(viewer.plot.value).startswith(b"\x89PNG")

    before = dict(viewer.shares)
    viewer.relation.value = "(a + b) mod 10^1"
    assert viewer.shares["correct"] == before["correct"]  # same answers (cached), another relation
    assert len(viewer._cache) == 1

    viewer.a_range.value = (0, 99)
    viewer.step.value = 1
    viewer.b_range.value = (0, 99)
    assert len(viewer.frame) == 10_000 and viewer.message.value == ""  # 100 x 100 fits the cap


def test_map_viewer_caps_the_grid(add3_nano):
    viewer = MapViewer(a_range=(1000, 1009), b_range=(2000, 2009), catalog={"kit/add3_nano": lambda: add3_nano})
    assert viewer.shares["matches relation"] >= 0.9
    viewer.a_range.value, viewer.b_range.value = (0, 9999), (0, 9999)
    assert "at most 40,000" in viewer.message.value
    assert len(viewer.frame) == 100  # the last good map stays
