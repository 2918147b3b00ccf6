"""Patching sweeps: the same numbers as transformer_lens.patching, exact where a patch restores the clean run, hooks honoured."""
import warnings

import numpy as np
import pytest
import torch
from transformer_lens import patching as tl_patching

from equiv_tools import InputError
from equiv_tools.analysis import patching as P
from equiv_tools.forward.lean import LeanModel, fast_path_blocker
from tests.tolerance import ULPS, assert_close, is_close, magnitude, normalised_logit_scale

CLEAN, CORRUPTED = (349, 705), (449, 705)  # one hundreds digit apart: 1054 vs 1154


@pytest.fixture(scope="module")
def pairs(add3_nano):
    """Whole sequences [8, 16] of 8 clean inputs and 8 corrupted ones (the hundreds digit of a moved by one), answered greedily."""
    model, task = add3_nano.model.eval(), add3_nano.task
    a, b = task.sample_id(8, seed=11)
    moved = a + np.where((a // 100) % 10 == 9, -900, 100)
    return P.answered_tokens(model, task, a, b), P.answered_tokens(model, task, moved, b)


@pytest.fixture(scope="module")
def logit_scale(add3_nano, pairs):
    """The largest |logit| of the pairs' clean and corrupted runs: the scale of the sweeps' float32 rounding (a raw logit
    difference subtracts logits of this size; a probability inherits its logits' absolute error)."""
    with torch.no_grad():
        return max(magnitude(add3_nano.model.eval()(t[:, :-1])) for t in pairs)


@pytest.fixture(scope="module")
def normalised(add3_nano):
    """The scale of CLEAN and CORRUPTED's normalised logit difference at the hundreds digit: the logits' over the denominator."""
    return normalised_logit_scale(add3_nano.model.eval(), add3_nano.task, CLEAN, CORRUPTED, answer_position=2)


def _metric(task, clean, corrupted):
    return P.logit_difference(task, clean, corrupted, answer_position=2)


def test_sweeps_equal_transformer_lens(add3_nano, pairs, logit_scale):
    model, task = add3_nano.model.eval(), add3_nano.task
    metric = _metric(task, *pairs)
    clean, corrupted = (t[:, :-1] for t in pairs)  # the patched runs' inputs [8, 15]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
    expected = tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    got = P.patch_resid_pre_by_pos(model, corrupted, clean, metric)
    assert got.shape == expected.shape == (3, 15)
    assert_close(got, expected, scale=logit_scale)
    assert expected.abs().max() > 1  # the patches move the metric
    expected = tl_patching.get_act_patch_attn_head_out_by_pos(model, corrupted, clean_cache, metric)
    got = P.patch_head_out_by_pos(model, corrupted, clean, metric)
    assert got.shape == expected.shape == (3, 15, 3)
    assert_close(got, expected, scale=logit_scale)


def test_every_kind_equals_the_bridge_with_hooks(add3_nano, pairs, logit_scale):
    """The lean sweep against the kit's own bridge sweep (one run_with_hooks per index), for every kind and shape."""
    model, task = add3_nano.model.eval(), add3_nano.task
    metric = P.clean_digit_probability(task, pairs[0])
    clean, corrupted = (t[:, :-1] for t in pairs)
    for kind, by in [("resid_mid", "layer_pos"), ("resid_post", "layer_pos"), ("attn_out", "layer_pos"), ("mlp_out", "layer_pos"), ("z", "layer_head")]:
        bridge = torch.stack([torch.stack(v) for v in P._sweep_bridge(model, corrupted, clean, metric, kind, by)])
        got = P.activation_patch(model, corrupted, clean, metric, kind, by)
        assert got.shape == (3, 15 if by == "layer_pos" else 3, task.answer_len)
        assert_close(got, bridge.reshape(got.shape), scale=logit_scale, what=kind)  # probabilities: their logits' rounding


def test_patching_the_whole_residual_stream_at_layer_0_gives_the_clean_run(add3_nano, pairs):
    model = add3_nano.model.eval()
    clean, corrupted = (t[:, :-1] for t in pairs)
    lean = LeanModel(model)
    with torch.no_grad():
        _, acts = lean.run_with_cache(clean, ["blocks.0.hook_resid_pre"])
        resid = acts["blocks.0.hook_resid_pre"]  # [8, 15, 48]
        patched = lean.forward(corrupted, patches={"blocks.0.hook_resid_pre": resid})
        assert torch.equal(patched, lean.forward(clean, record={}))  # bit for bit: the same operations as a clean run
        assert torch.equal(lean.forward(start=("blocks.0.hook_resid_pre", resid)), lean(clean))  # as the sweeps start
        assert_close(patched, model(clean))
        assert not is_close(lean(corrupted), lean(clean), ulps=10 * ULPS)  # the patch matters: ten tolerances and more


def test_normalised_logit_difference_on_one_hundreds_digit(add3_nano, normalised):
    model, task = add3_nano.model.eval(), add3_nano.task
    frame = P.patch_pair(model, task, CLEAN, CORRUPTED, sweeps=["resid_pre", "resid_post"])
    assert set(frame.answer_position) == {2} and set(frame.measure) == {"normalised_logit_diff"}
    value = frame[frame.kind == "resid_pre"].set_index(["layer", "position"]).value
    # at layer 0 only position 2 (a's hundreds digit) differs before the hundreds answer is read at position 11
    assert_close(value[(0, 2)], 1.0, scale=normalised)
    for position in (0, 1, 3, 4, 5, 6, 7, 8, 9):  # tokens that are the same in both inputs: the patch changes nothing
        assert_close(value[(0, position)], 0.0, scale=normalised, what=f"position {position}")
    post = frame[frame.kind == "resid_post"].set_index(["layer", "position"]).value
    assert_close(post[(2, 11)], 1.0, scale=normalised)  # after the last layer only the unembedding reads position 11
    assert_close(post[(2, 2)], 0.0, scale=normalised)  # ... and nothing reads position 2 any more


def test_undefined_normalisation_warns_and_reports_the_raw_difference(add3_nano):
    model, task = add3_nano.model.eval(), add3_nano.task
    # 1054 and 1154 agree at the units digit: the normalisation (raw - corrupted) / (clean - corrupted) would be 0 / 0 there
    with pytest.warns(UserWarning, match="undefined"):
        frame = P.patch_pair(model, task, CLEAN, CORRUPTED, sweeps=["resid_pre"], answer_position=0)
    assert set(frame.measure) == {"logit_diff"}
    # the raw difference is the same digit's logit minus itself, exactly 0.0 for every patch
    # fails if the undefined normalisation were applied all the same: 0 / 0 is NaN
    assert (frame.value == 0.0).all()
    # Through patch_pair the raw difference is 0 by construction (greedy answers make the normalisation undefined only
    # where the digits agree), so the fallback metric is checked where it is not 0: sequences that differ only in their
    # last answer digit, which no teacher-forced input contains, give the clean and the corrupted run the same logits.
    clean_tokens = P.answered_tokens(model, task, *CLEAN)  # [1, 16]
    other_tokens = clean_tokens.clone()
    other_tokens[:, -1] = (clean_tokens[:, -1] + 3) % 10
    last = task.answer_len - 1
    with pytest.warns(UserWarning, match="undefined"):
        metric, measure = P.normalised_logit_difference(model, task, clean_tokens, other_tokens, answer_position=last)
    assert measure == "logit_diff"
    with torch.no_grad():  # any run's logits: the corrupted input's
        logits = model(P.answered_tokens(model, task, *CORRUPTED)[:, :-1])  # [1, 15, d_vocab_out]
    read = logits[0, task.prompt_len - 1 + last]  # the logits that predict the last answer digit
    by_hand = read[clean_tokens[0, -1]] - read[other_tokens[0, -1]]  # the raw logit difference, from the bridge's logits
    assert abs(float(by_hand)) > 1  # not 0 by construction
    # fails if the undefined case reported anything but logit[clean digit] - logit[corrupted digit] (zeros, the other
    # digit's sign, a probability, a normalised value): the same two float32 logits subtracted, so equal exactly
    assert float(metric(logits)) == float(by_hand)


def test_clean_digit_probability_per_answer_position(add3_nano):
    model, task = add3_nano.model.eval(), add3_nano.task
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = P.patch_pair(model, task, CLEAN, CORRUPTED, sweeps=["resid_pre", "head_out_all_pos"], metric="probability")
    assert set(frame.answer_position) == set(range(task.answer_len))
    clean = P.answered_tokens(model, task, *CLEAN)
    with torch.no_grad():  # independently: the clean run's probabilities of its own digits
        logits = model(clean[:, :-1])[0, task.prompt_len - 1 :]
    probs = logits.softmax(-1)
    expected = probs[torch.arange(task.answer_len), clean[0, task.prompt_len :]]
    resid = frame[frame.kind == "resid_pre"]
    at = resid[(resid.layer == 2) & (resid.position == 14)].sort_values("answer_position").value.to_numpy()
    # patching the last position alone restores only the last answer position's probability
    assert_close(at[-1], expected[-1], scale=logits)  # a probability: its logits' rounding
    heads = frame[frame.kind == "head_out_all_pos"]
    assert len(heads) == 3 * 3 * task.answer_len and set(heads.position) == {-1}


def test_with_a_user_hook_the_sweep_is_the_bridges(add3_nano, pairs, logit_scale):
    model, task = add3_nano.model.eval(), add3_nano.task
    metric = _metric(task, *pairs)
    clean, corrupted = (t[:, :-1] for t in pairs)  # the patched runs' inputs [8, 15]
    unhooked = P.patch_resid_pre_by_pos(model, corrupted, clean, metric)
    model.add_hook("blocks.1.hook_attn_out", lambda act, hook: act * 0.5)
    try:
        assert fast_path_blocker(model) is not None
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(clean)
        expected = tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
        got = P.patch_resid_pre_by_pos(model, corrupted, clean, metric)
        assert fast_path_blocker(model) is not None  # still hooked afterwards
    finally:
        model.reset_hooks()
    assert_close(got, expected, scale=logit_scale)
    assert (got - unhooked).abs().max() > 0.1  # the hook changes the metric (an effect size, not a tolerance)


def test_activation_difference(add3_nano):
    model, task = add3_nano.model.eval(), add3_nano.task
    same = P.activation_difference(model, task, 349, 705, 349, 705, n_typical=32)
    assert (same.value == 0.0).all()  # the same tokens through the same shapes: the same bits, exactly 0
    frame = P.activation_difference(model, task, 1349, 2705, 349, 705, n_typical=32)
    value = frame.set_index(["kind", "layer", "position"]).value
    assert value[("resid_pre", 0, 0)] == 0.0  # the leading zero padding: the same token at the same position
    # independently: the residual stream at layer 0, a's thousands digit (position 1)
    x, r = P.answered_tokens(model, task, 1349, 2705)[:, :-1], P.answered_tokens(model, task, 349, 705)[:, :-1]
    typical = P.answered_tokens(model, task, *task.sample_id(32, seed=0))[:, :-1]
    with torch.no_grad():
        emb = lambda t: model.run_with_cache(t)[1]["blocks.0.hook_resid_pre"][:, 1]
        expected = (emb(x) - emb(r)).norm(dim=-1).mean() / emb(typical).norm(dim=-1).mean()
    assert_close(value[("resid_pre", 0, 1)], expected)  # a ratio of norms: rounding relative to itself


def test_heatmap_labels_positions(add3_nano, normalised):
    from equiv_tools.views.plots import plot_patching

    model, task = add3_nano.model.eval(), add3_nano.task
    frame = P.patch_pair(model, task, CLEAN, CORRUPTED, sweeps=["resid_pre", "head_out_all_pos"])
    fig = plot_patching(frame, task.position_names())
    assert len(fig.axes) == 4  # two heatmaps and their colour bars
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == task.position_names()[:15]
    assert_close(fig.axes[0].collections[0].get_array().reshape(3, 15)[0, 2], 1.0, scale=normalised)


def test_one_digit_apart_pairs():
    from equiv_tools import AdditionTask

    task = AdditionTask(train_digits=3, width=5)
    assert P.one_digit_apart(task, 349, 705, place=2) == ((349, 705), (449, 705))
    assert P.one_digit_apart(task, 1349, 2705, place=2, operand="b") == ((1349, 2705), (1349, 2805))
    assert P.one_digit_apart(task, 949, 705, place=2) == ((949, 705), (49, 705))  # the digit wraps: 9 -> 0


def test_a_metric_that_names_its_positions_gives_the_same_sweep(add3_nano, pairs, logit_scale):
    """The kit's metrics say which logits they read, so other positions are skipped; an opaque metric gets every position."""
    model, task = add3_nano.model.eval(), add3_nano.task
    clean, corrupted = (t[:, :-1] for t in pairs)
    for metric in (_metric(task, *pairs), P.clean_digit_probability(task, pairs[0])):
        opaque = lambda logits, metric=metric: metric(logits)  # no positions attribute
        for kind, by in P.SWEEPS.values():
            fast = P.activation_patch(model, corrupted, clean, metric, kind, by)
            full = P.activation_patch(model, corrupted, clean, opaque, kind, by)
            assert_close(fast, full, scale=logit_scale, what=kind)
    assert _metric(task, *pairs).positions == range(task.prompt_len + 1, task.prompt_len + 2)


def test_patching_leaves_the_model_in_the_mode_it_found(add3_nano):
    model, task = add3_nano.model.eval(), add3_nano.task
    expected = P.patch_pair(model, task, CLEAN, CORRUPTED, sweeps=["resid_pre"])
    expected_difference = P.activation_difference(model, task, 1349, 2705, 349, 705, n_typical=16)
    # The bridge has no dropout, so its numbers are the same in either mode and cannot show which one ran: a hook
    # records, at every forward, whether any module was in train mode (with a hook attached the kit runs the bridge).
    modes = []
    model.train()
    try:
        assert P.patch_pair(model, task, CLEAN, CORRUPTED, sweeps=["resid_pre"]).equals(expected)
        assert model.training
        assert P.activation_difference(model, task, 1349, 2705, 349, 705, n_typical=16).equals(expected_difference)
        assert model.training
        model.add_hook("blocks.0.hook_resid_pre", lambda act, hook: modes.append(any(m.training for m in model.modules())))
        P.patch_pair(model, task, CLEAN, CORRUPTED, sweeps=["resid_pre"])
        # fails if patch_pair ran in train mode (eval_mode a no-op, or only the top module's flag set): a True recorded
        assert len(modes) > 45 and not any(modes)  # 45 patched runs, and the greedy decoding before them
        assert model.training  # fails if eval_mode did not put the mode back
        modes.clear()
        P.activation_difference(model, task, 1349, 2705, 349, 705, n_typical=16)
        assert modes and not any(modes)  # fails if activation_difference ran in train mode
        assert model.training
        with pytest.raises(InputError, match="unknown sweep"):
            P.patch_pair(model, task, CLEAN, CORRUPTED, sweeps=["no such sweep"])
        assert model.training  # also after an error
    finally:
        model.reset_hooks()
        model.eval()
    assert not model.training
