"""Widgets, driven without a browser: set a control's value, read the widget's state.

Expected values come from the bridge (naive_greedy_decode, its softmax) and plain arithmetic, not from the widgets' own code.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from equiv_tools.views.widgets import base, equivalence, map_viewer
from equiv_tools.views.widgets import patching as patching_widget
from equiv_tools.core.config import RunConfig, model_config
from equiv_tools.forward.decoding import naive_greedy_decode
from equiv_tools.runs.models import Run, build_model
from equiv_tools.analysis.patching import patch_pair
from equiv_tools.core.tasks import ModularTask
from equiv_tools.views.widgets import EquivalenceExplorer, MapViewer, PatchingExplorer
from tests.tolerance import assert_close, magnitude, normalised_logit_scale

CHIP = re.compile(r"<span class='et-chip'[^>]*><span[^>]*>(\d+)</span><small class='et-prob'[^>]*>([\d.]+)</small></span>")


def bridge_answer(run, a, b):
    """The bridge's greedy answer tokens (units first), its teacher-forced probability of each, for one pair, and the largest
    |logit| there: the scale of the probabilities' float32 rounding (a probability inherits its logits' absolute error)."""
    task = run.task
    tokens = naive_greedy_decode(run.model, task, [a], [b])
    sequence = torch.from_numpy(task.encode([a], [b], task.decode_answer(tokens)))
    with torch.no_grad():
        logits = run.model(sequence[:, :-1])[:, task.prompt_len - 1 :]
    probs = torch.softmax(logits, dim=-1)[0]
    return tokens[0].tolist(), probs.gather(-1, sequence[0, task.prompt_len :, None])[:, 0].tolist(), magnitude(logits)


def chips(explorer):
    """(token, probability text) per chip, as shown: most significant first."""
    return CHIP.findall(explorer.answer.value)


@pytest.fixture(scope="module")
def grok_run():
    """The grokking layout (p = 113, one answer token): a random 1-layer model whose unembedding bias makes it answer 112."""
    task = ModularTask(p=113)
    cfg = model_config(task, n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.unembed.b_U[112] = 20.0
    return Run(Path("grok"), RunConfig(task, cfg, None, {}), model)


@pytest.fixture(scope="module")
def explorer():
    return EquivalenceExplorer(a=1349, b=2705, model="kit/add3_nano")


@pytest.fixture()
def switcher(add3_nano, tiny_run, grok_run):
    return EquivalenceExplorer(a=1349, b=2705, catalog={"kit/add3_nano": lambda: add3_nano, "tiny": lambda: tiny_run, "grok": lambda: grok_run})


@pytest.fixture()
def count_explains(monkeypatch):
    """How many times the widgets called explain_input: a list, one entry per call."""
    calls = []
    real = equivalence.explain_input
    for module in (equivalence, map_viewer):
        monkeypatch.setattr(module, "explain_input", lambda *args, **kw: calls.append(args[2:4]) or real(*args, **kw))
    return calls


def test_explorer_shows_the_equivalence(explorer, add3_nano):
    r = explorer.result
    assert (r["answer"], r["truth"], r["rep_a"], r["rep_b"], r["rep_answer"]) == (1054, 4054, 349, 705, 1054)
    assert r["relation"] == "(a mod 10^3) + (b mod 10^3)" and r["matches_relation"] and not r["correct"]
    assert r["per_digit"] == [True, True, True, False, True, True]  # only the thousands digit is wrong
    assert "answers as 349 + 705" in explorer.answer.value and "1054" in explorer.answer.value
    tokens, probs, logit_scale = bridge_answer(add3_nano, 1349, 2705)
    assert r["tokens"] == tokens == [4, 5, 0, 1, 0, 0]
    assert_close(r["probabilities"], probs, scale=logit_scale)
    # one chip per answer digit, most significant first, the probability under each
    assert chips(explorer) == [(str(t), f"{p:.2f}") for t, p in zip(tokens[::-1], r["probabilities"][::-1])]
    assert [t for t, _ in chips(explorer)] == list("001054")


def test_explorer_bad_values_show_a_message_and_recover(explorer):
    explorer.a_text.value = "12x"
    assert explorer.result is None and "digits 0-9" in explorer.message.value and explorer.answer.value == ""
    explorer.a_text.value = "1234567"
    assert explorer.result is None and "too wide" in explorer.message.value
    explorer.a_text.value = "349"
    assert explorer.message.value == "" and explorer.result["answer"] == 1054 and explorer.result["in_distribution"] is False
    explorer.b_slider.value = 705  # sliding sets the text box, which updates the answer
    assert explorer.b_text.value == "705" and explorer.result["in_distribution"] and explorer.result["correct"]


def test_text_and_sliders_follow_each_other_once(explorer, count_explains):
    b = int(explorer.b_text.value)
    explorer.a_text.value = "705"
    assert explorer.a_slider.value == 705 and explorer.result["a"] == 705
    explorer.b_slider.value = 349
    assert explorer.b_text.value == "349" and (explorer.result["a"], explorer.result["b"], explorer.result["answer"]) == (705, 349, 1054)
    explorer.a_text.value = " 0012 "  # read as 12; the box keeps what was typed
    assert explorer.a_slider.value == 12 and explorer.a_text.value == " 0012 " and explorer.result["a"] == 12
    assert count_explains == [(705, b), (705, 349), (12, 349)]  # one computation per change, no loop


def test_explorer_keeps_the_operands_across_models(switcher, tiny_run, grok_run):
    switcher.a_text.value, switcher.b_text.value = "12", "7"
    switcher.models.dropdown.value = "tiny"
    assert (switcher.a_text.value, switcher.b_text.value) == ("12", "7")
    assert (switcher.a_slider.value, switcher.b_slider.value, switcher.a_slider.max) == (12, 7, 99)
    tokens, _, _ = bridge_answer(tiny_run, 12, 7)
    assert (switcher.result["a"], switcher.result["b"]) == (12, 7) and switcher.result["tokens"] == tokens
    assert [t for t, _ in chips(switcher)] == [str(t) for t in tokens[::-1]]  # width 2: three answer digits

    switcher.models.dropdown.value = "grok"  # one answer token in [0, 113): one chip for the whole answer
    r = switcher.result
    tokens, probs, logit_scale = bridge_answer(grok_run, 12, 7)
    assert (r["a"], r["b"], r["answer"], r["truth"], r["tokens"]) == (12, 7, 112, 19, [112]) and tokens == [112]
    assert_close(r["probabilities"], probs, scale=logit_scale)
    assert chips(switcher) == [("112", f"{probs[0]:.2f}")] and r["rep_a"] is None

    switcher.a_text.value = "1349"  # too wide for p = 113: a message, and the operand stays as typed
    assert switcher.result is None and "too wide" in switcher.message.value and switcher.a_text.value == "1349"
    switcher.models.dropdown.value = "kit/add3_nano"
    assert switcher.message.value == "" and (switcher.result["a"], switcher.result["b"]) == (1349, 7)
    assert switcher.a_slider.value == 1349 and switcher.a_text.value == "1349"


def test_unknown_model_and_failing_loader_show_messages(add3_nano):
    catalog = {"kit/add3_nano": lambda: add3_nano, "broken": lambda: 1 / 0}
    explorer = EquivalenceExplorer(a=349, b=705, model="kit/nope", catalog=catalog)
    assert "kit/nope" in explorer.models.message.value and explorer.models.label == "kit/add3_nano"
    assert explorer.result["answer"] == 1054  # the first model's answer
    explorer.models.dropdown.value = "broken"
    assert explorer.result is None and "ZeroDivisionError" in explorer.message.value and explorer.models.message.value == ""
    viewer = MapViewer(model="broken", catalog=catalog, pair=(1, 2))
    assert viewer.frame is None and "ZeroDivisionError" in viewer.message.value and "ZeroDivisionError" in viewer.pair_readout.value
    viewer = MapViewer(a_range=(0, 9), b_range=(0, 9), model="kit/nope", catalog=catalog)
    assert "kit/nope" in viewer.models.message.value and len(viewer.frame) == 100


def test_explorer_loads_any_run_directory(explorer, tiny_run, count_explains):
    explorer.a_text.value, explorer.b_text.value = "3", "14"
    explorer.models.load_path("/nonexistent/run")
    assert "does not exist" in explorer.models.message.value
    count_explains.clear()
    explorer.models.load_path(str(tiny_run.path))
    assert explorer.models.label == f"dir/{tiny_run.path}" and explorer.models.message.value == ""
    assert len(count_explains) == 1  # the new choice only, not the first model in between
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

    viewer.a_to.value = 99
    viewer.b_to.value = 99
    assert len(viewer.frame) == 10_000 and viewer.message.value == ""  # 100 x 100 fits the cap
    viewer.a_from.value = 50
    assert viewer.message.value == "" and viewer.frame.a.min() == 50
    viewer.a_to.value = 10
    assert "a from (50) is above a to (10)" in viewer.message.value and viewer.frame.a.min() == 50  # the last good map stays


def test_map_viewer_opens_across_the_id_ood_boundary(add3_nano):
    viewer = MapViewer(catalog={"kit/add3_nano": lambda: add3_nano})
    assert [box.value for box in (viewer.a_from, viewer.a_to, viewer.b_from, viewer.b_to, viewer.step)] == [950, 1049, 950, 1049, 1]
    frame = viewer.frame
    assert len(frame) == 10_000 and frame.a.min() == 950 and frame.b.max() == 1049
    sample = frame.iloc[::37]  # the map's answers are the bridge's (checked on a sample: the bridge is slow)
    expected = add3_nano.task.decode_answer(naive_greedy_decode(add3_nano.model, add3_nano.task, sample.a, sample.b))
    assert np.array_equal(sample.answer.to_numpy(), expected)
    a, b, answer = frame.a.to_numpy(), frame.b.to_numpy(), frame.answer.to_numpy()
    correct = answer == a + b
    matches = ~correct & (answer == a % 1000 + b % 1000)
    assert viewer.shares == {"correct": correct.mean(), "matches relation": matches.mean(), "other": (~correct & ~matches).mean()}
    assert sum(share > 0 for share in viewer.shares.values()) > 1
    assert viewer.shares["correct"] > 0.2 and viewer.shares["matches relation"] > 0.5
    assert "correct: <b>" in viewer.readout.value and "(10,000 pairs)" in viewer.readout.value
    assert viewer.readout._dom_classes == ("et-map-readout",) and viewer.pair_readout._dom_classes == ("et-pair-readout",)


def test_map_viewer_pair_readout(add3_nano, count_explains):
    viewer = MapViewer(a_range=(990, 1009), b_range=(990, 1009), catalog={"kit/add3_nano": lambda: add3_nano})
    assert viewer.pair is None and "type a pair" in viewer.pair_readout.value
    viewer.pair_a.value, viewer.pair_b.value = "1349", "2705"
    assert (viewer.pair["answer"], viewer.pair["truth"], viewer.pair["category"]) == (1054, 4054, "matches relation")
    assert "1054" in viewer.pair_readout.value and "<b>matches relation</b>" in viewer.pair_readout.value
    viewer.pair_a.value, viewer.pair_b.value = "349", "705"
    assert (viewer.pair["answer"], viewer.pair["category"]) == (1054, "correct") and "<b>correct</b>" in viewer.pair_readout.value
    viewer.pair_a.value = "1349"
    viewer.relation.value = "a + b"  # the pair's category follows the relation
    assert (viewer.pair["answer"], viewer.pair["relation_answer"], viewer.pair["category"]) == (1054, 2054, "other")
    assert count_explains[-1] == (1349, 705) and len(count_explains) == 5  # the map's ranges did not recompute the pair
    viewer.pair_b.value = "27x5"
    assert viewer.pair is None and "digits 0-9" in viewer.pair_readout.value


def test_map_viewer_keeps_ranges_across_models(add3_nano, tiny_run):
    catalog = {"kit/add3_nano": lambda: add3_nano, "tiny": lambda: tiny_run}
    viewer = MapViewer(a_range=(990, 1009), b_range=(990, 1009), catalog=catalog, pair=(12, 7))
    viewer.models.dropdown.value = "tiny"  # 990..1009 does not fit a width-2 task: a message, the ranges stay
    assert "too wide" in viewer.message.value and (viewer.a_from.value, viewer.b_to.value) == (990, 1009)
    assert viewer.relation.value in {"a + b", "(a mod 10^1) + (b mod 10^1)"} and viewer.pair["a"] == 12
    expected = tiny_run.task.decode_answer(naive_greedy_decode(tiny_run.model, tiny_run.task, [12], [7]))[0]
    assert viewer.pair["answer"] == expected
    viewer.a_from.value, viewer.a_to.value, viewer.b_from.value, viewer.b_to.value = 0, 59, 0, 59
    assert viewer.message.value == "" and len(viewer.frame) == 3600


def test_map_viewer_caps_the_grid(add3_nano):
    viewer = MapViewer(a_range=(1000, 1009), b_range=(2000, 2009), catalog={"kit/add3_nano": lambda: add3_nano})
    assert viewer.shares["matches relation"] >= 0.9
    viewer.a_to.value, viewer.a_from.value = 9999, 0
    assert "at most 40,000" in viewer.message.value
    assert len(viewer.frame) == 100  # the last good map stays


def test_representation_explorer_slider_redraws_and_choices_recompute():
    from pathlib import Path

    from equiv_tools.views.widgets import RepresentationExplorer

    run_dir = Path(__file__).resolve().parents[1] / "data" / "add3_nano"
    explorer = RepresentationExplorer(run_dir, steps=[0, 1500], n=150)
    assert explorer.message.value == ""
    series = explorer.series
    score = series.separation.set_index("checkpoint").silhouette
    assert explorer.checkpoint.value == 1500 and f"silhouette <b>{score[1500]:.2f}</b>" in explorer.readout.value
    explorer.checkpoint.value = 0
    assert explorer.series is series  # the slider only redraws
    assert explorer.figure.axes[0].get_title() == f"0: silhouette {score[0]:.2f}"
    explorer.colour.value = "a mod 10"
    assert explorer.series is not series and explorer.series.colouring == "a mod 10"
    explorer.position.value = 0
    assert "position a[10^4]" in explorer.readout.value
    broken = RepresentationExplorer(run_dir, steps=[150])
    assert "no checkpoint for step" in broken.message.value and broken.series is None


@pytest.fixture()
def patcher(add3_nano, tiny_run):
    return PatchingExplorer(catalog={"kit/add3_nano": lambda: add3_nano, "tiny": lambda: tiny_run})


def heatmap(figure, panel: int = 0) -> np.ndarray:
    """The values a heatmap panel shows, rows bottom-up as drawn (layer 0 first)."""
    quad = figure.axes[2 * panel].collections[0]  # each panel is followed by its colour bar's axes
    rows = len(figure.axes[2 * panel].get_yticks())
    return np.asarray(quad.get_array()).reshape(rows, -1)


def test_patching_explorer_draws_patch_pairs_frame(patcher, add3_nano):
    model, task = add3_nano.model, add3_nano.task
    assert [box.value for box in (patcher.clean_a, patcher.clean_b, patcher.corrupted_a, patcher.corrupted_b)] == ["349", "705", "449", "705"]
    expected = patch_pair(model, task, (349, 705), (449, 705), sweeps=["resid_pre"])
    frame = patcher.frame
    assert frame[["kind", "layer", "position", "head", "answer_position", "measure"]].equals(expected.drop(columns="value"))
    assert frame.value.tolist() == expected.value.tolist()  # patch_pair with the same arguments: the same numbers, bit for bit
    grid = expected.pivot(index="layer", columns="position", values="value").to_numpy()  # [3 layers, 15 positions]
    assert heatmap(patcher.figure).tolist() == grid.tolist()  # drawn as computed
    # a's hundreds digit (position 2) is all that differs before layer 0: patching it there restores the clean run
    scale = normalised_logit_scale(model, task, (349, 705), (449, 705), answer_position=2)
    assert_close(grid[0, 2], 1.0, scale=scale)
    assert_close(np.delete(grid[0], 2), 0.0, scale=scale)
    assert 0.9 < grid[2, 11] < 1.1  # by layer 2 it sits at ans[10^1], the position that writes the hundreds digit
    assert (frame.measure == "normalised_logit_diff").all() and set(frame.answer_position) == {2}
    assert "(model: 1054)" in patcher.readout.value and "(model: 1154)" in patcher.readout.value
    assert "<b class='et-patch-position'>ans[10^2]</b>" in patcher.readout.value and patcher.message.value == ""

    patcher.sweep.value = "head_out_all_pos"  # one panel, heads as columns
    expected = patch_pair(model, task, (349, 705), (449, 705), sweeps=["head_out_all_pos"])
    assert heatmap(patcher.figure).tolist() == expected.pivot(index="layer", columns="head", values="value").to_numpy().tolist()
    assert "head" in patcher.readout.value.split("largest:")[1]


def test_patching_explorer_never_searches_for_a_relation(add3_nano, tiny_run, monkeypatch):
    """It shows no relation, so building it and updating it decode nothing for best_relation (with a hook attached,
    nothing is cached, and such a search took longer than the patching itself)."""
    calls = []
    monkeypatch.setattr(base, "best_relation", lambda *args, **kw: calls.append(args))
    patcher = PatchingExplorer(catalog={"kit/add3_nano": lambda: add3_nano, "tiny": lambda: tiny_run})
    patcher.sweep.value = "mlp_out"
    assert patcher.message.value == "" and patcher.frame is not None and calls == []


def test_patching_explorer_caches_per_model_state(patcher, add3_nano, monkeypatch):
    calls = []
    real = patching_widget.patch_pair
    monkeypatch.setattr(patching_widget, "patch_pair", lambda *args, **kw: calls.append(kw["sweeps"]) or real(*args, **kw))
    first = patcher.frame
    patcher.sweep.value = "mlp_out"
    patcher.sweep.value = "resid_pre"  # back to a cached choice: shown again, not recomputed
    assert calls == [["mlp_out"]] and patcher.frame is first
    add3_nano.model.add_hook("blocks.1.hook_attn_out", lambda act, hook: act * 0.5)
    try:
        patcher.sweep.value = "mlp_out"
        hooked = patcher.frame
        patcher.sweep.value = "resid_pre"
        assert calls == [["mlp_out"], ["mlp_out"], ["resid_pre"]]  # under hooks nothing comes from the cache
        expected = real(add3_nano.model, add3_nano.task, (349, 705), (449, 705), sweeps=["resid_pre"])  # the hooked model's numbers
        assert patcher.frame.value.tolist() == expected.value.tolist()  # the same call: bit for bit
        assert np.abs(patcher.frame.value.to_numpy() - first.value.to_numpy()).max() > 1e-3  # the hook matters (an effect size)
    finally:
        add3_nano.model.reset_hooks()
    patcher.sweep.value = "mlp_out"
    assert len(calls) == 3 and patcher.frame is not hooked  # the unhooked result, from the cache


def test_patching_explorer_bad_input_shows_a_message(patcher):
    patcher.corrupted_a.value = "4x9"
    assert patcher.frame is None and "digits 0-9" in patcher.message.value and patcher.readout.value == ""
    assert patcher.plot.layout.display == "none"
    patcher.corrupted_a.value = "1234567"
    assert patcher.frame is None and "too wide" in patcher.message.value
    patcher.corrupted_a.value = "359"  # the tens digit apart: "auto" measures the first answer digit that differs
    assert patcher.message.value == "" and patcher.plot.layout.display is None
    assert set(patcher.frame.answer_position) == {1} and "ans[10^1]</b>" in patcher.readout.value
    patcher.answer_position.value = 0  # the answers agree there: say so, and show the raw logit difference (0 by construction)
    assert "normalised logit difference is undefined" in patcher.message.value
    assert (patcher.frame.measure == "logit_diff").all() and (patcher.frame.value == 0).all()


def test_patching_explorer_follows_the_models_task(patcher, tiny_run):
    assert len(patcher.answer_position.options) == 1 + 6
    patcher.models.dropdown.value = "tiny"  # width 2: 349 does not fit, three answer positions
    assert "too wide" in patcher.message.value and len(patcher.answer_position.options) == 1 + 3
    patcher.clean_a.value, patcher.clean_b.value, patcher.corrupted_a.value, patcher.corrupted_b.value = "12", "7", "13", "7"
    expected = patch_pair(tiny_run.model, tiny_run.task, (12, 7), (13, 7), sweeps=["resid_pre"])
    assert patcher.message.value == "" and patcher.frame.value.tolist() == expected.value.tolist()  # the same call: bit for bit
