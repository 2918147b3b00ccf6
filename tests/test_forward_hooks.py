"""The lean forward's hook points hold the bridge's activations, and patching them changes what the bridge's hooks change."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from equiv_tools import AdditionTask, ModularTask
from equiv_tools.core.config import model_config
from equiv_tools.forward.lean import LeanModel, fast_path_blocker
from equiv_tools.runs.models import build_model
from tests.tolerance import ULPS, assert_close, is_close, magnitude


@pytest.fixture(scope="module")
def grokking():
    """A random grokking-preset model (no norm, relu) on ModularTask(p=13), with weights large enough to vary its answers."""
    task = ModularTask(p=13)
    torch.manual_seed(0)
    model = build_model(model_config(task, "grokking", seed=0))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval(), task


def _cases(add3_nano, grokking):
    task = add3_nano.task
    a, b = task.sample_ood(40, seed=1)
    nano_tokens = torch.from_numpy(task.encode(a, b, task.truth(a, b)))[:, :-1]  # [40, 15]
    model, mtask = grokking
    a, b = mtask.grid(range(13), range(0, 13, 2))
    return [(add3_nano.model.eval(), nano_tokens), (model, torch.from_numpy(mtask.encode_prompt(a, b)))]


def test_every_hook_point_matches_run_with_cache(add3_nano, grokking):
    for model, tokens in _cases(add3_nano, grokking):
        assert fast_path_blocker(model) is None
        lean = LeanModel(model)
        with torch.no_grad():
            logits, acts = lean.run_with_cache(tokens)
            expected_logits, cache = model.run_with_cache(tokens)
        expected_names = 2 + 12 * model.cfg.n_layers + (model.cfg.normalization_type == "LN")
        assert len(acts) == expected_names
        assert_close(logits, expected_logits, what="logits")
        for name, act in acts.items():
            assert act.shape == cache[name].shape, name
            assert_close(act, cache[name], what=name)  # each activation's rounding relative to its own magnitude


def _scale_head(activation, hook=None):
    out = activation.clone()
    out[:, :, 1] *= -2.0
    return out


def test_patches_change_what_the_bridges_hooks_change(add3_nano, grokking):
    for model, tokens in _cases(add3_nano, grokking):
        lean = LeanModel(model)
        with torch.no_grad():
            _, clean = model.run_with_cache(tokens.flip(0))
            for name, patch in [
                ("blocks.0.attn.hook_z", _scale_head),
                ("blocks.0.attn.hook_pattern", lambda x, hook=None: x.roll(1, dims=0)),
                ("blocks.0.hook_resid_pre", clean["blocks.0.hook_resid_pre"]),
                (f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post", clean[f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"]),
                ("hook_pos_embed", lambda x, hook=None: x * 0),
            ]:
                hook = patch if callable(patch) else (lambda x, hook, value=patch: value)
                expected = model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])
                got = lean.forward(tokens, patches={name: patch})
                # the patch matters: it moves the logits by over ten tolerances, so a forward that ignored it fails below
                assert not is_close(expected, model(tokens), ulps=10 * ULPS), name
                assert_close(got, expected, what=name)  # float32 rounding relative to the logits (a patched model's reach about 15)
            assert fast_path_blocker(model) is None  # run_with_hooks took its hooks off again


def test_starting_midway_reuses_upstream_activations(add3_nano):
    model, tokens = add3_nano.model.eval(), torch.from_numpy(add3_nano.task.encode_prompt(*add3_nano.task.sample_id(30, seed=4)))
    lean = LeanModel(model)
    with torch.no_grad():
        full, acts = lean.run_with_cache(tokens)
        for name in ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.2.hook_resid_post"):
            assert_close(lean.forward(start=(name, acts[name])), full, what=name)


def test_kv_cache_decoding_is_unchanged(add3_nano):
    task = add3_nano.task
    lean = LeanModel(add3_nano.model.eval())
    a, b = task.sample_ood(50, seed=3)
    tokens = torch.from_numpy(task.encode(a, b, task.truth(a, b)))[:, :-1]
    with torch.no_grad():
        full = lean(tokens)
        cache: list = []
        steps = [lean(tokens[:, : task.prompt_len], cache, last_only=True)[:, -1]]
        steps += [lean(tokens[:, i : i + 1], cache)[:, -1] for i in range(task.prompt_len, tokens.shape[1])]
    assert_close(torch.stack(steps, dim=1), full[:, task.prompt_len - 1 :])
    assert np.array_equal(torch.stack(steps, 1).argmax(-1).numpy(), full[:, task.prompt_len - 1 :].argmax(-1).numpy())


def test_a_patch_at_resid_mid_reaches_the_mlp_only_as_in_the_bridge(add3_nano):
    """TransformerLens 4.x's bridge: hook_resid_mid is ln2's input; the residual stream carries on unpatched."""
    model, task = add3_nano.model.eval(), add3_nano.task
    tokens = torch.from_numpy(task.encode_prompt(*task.sample_id(6, seed=2)))
    delta = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    lean = LeanModel(model)
    with torch.no_grad():
        expected = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_mid", lambda x, hook: x + delta)])
        got = lean.forward(tokens, patches={"blocks.1.hook_resid_mid": lambda x: x + delta})
        _, acts = lean.run_with_cache(tokens, ["blocks.1.hook_resid_mid"])
        mid = acts["blocks.1.hook_resid_mid"]
        by_hand = lean.forward(start=("blocks.1.hook_resid_post", mid + lean.mlp_output(1, mid + delta)))
    assert_close(got, expected)
    assert_close(by_hand, expected)


@pytest.mark.parametrize("preset", ["grokking", "nano"])
def test_differentiable_loss_and_gradients_equal_the_bridges(preset):
    """A training step through the lean forward (logits from the first answer position on) is the bridge's."""
    task = ModularTask(p=13) if preset == "grokking" else AdditionTask(train_digits=2, width=3)
    torch.manual_seed(0)
    model = build_model(model_config(task, preset, seed=0)).train()
    a, b = task.sample_id(64, seed=0) if preset == "nano" else task.grid(range(13), range(0, 13, 3))
    tokens = torch.from_numpy(task.encode(a, b, task.truth(a, b)))
    inputs, targets, first = tokens[:, :-1], tokens[:, task.prompt_len :], task.prompt_len - 1

    def loss_and_grads(logits):
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        model.zero_grad()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, magnitude(logits)

    expected_loss, expected, logit_scale = loss_and_grads(model(inputs)[:, first:])
    lean_loss, got, _ = loss_and_grads(LeanModel(model, differentiable=True)(inputs, logits_from=first))
    # a cross-entropy's rounding is relative to its logits and to the logsumexp (about the loss) it subtracts them from
    assert_close(lean_loss, expected_loss, scale=max(logit_scale, float(expected_loss)))
    assert set(got) == set(expected) and len(got) == len(list(model.parameters()))
    grad_scale = max(magnitude(g) for g in expected.values())  # every gradient sums terms of about this size
    for name in expected:
        assert expected[name].abs().max() > 0, name  # every parameter takes part in the loss
        assert_close(got[name], expected[name], scale=grad_scale, what=name)


def test_logits_from_gives_the_same_logits_at_those_positions(add3_nano, grokking):
    for model, tokens in _cases(add3_nano, grokking):
        # in float64, so that "the same arithmetic" can be checked to 1e-12 (float32 rounding differs with matrix shapes,
        # and logits_from may run a shared prefix once: see LeanModel.shared_prefix)
        lean = LeanModel(copy.deepcopy(model).double())
        with torch.no_grad():
            full = lean(tokens)
            scale = 1e-12 * full.abs().max()
            for first in range(tokens.shape[1]):
                assert (lean(tokens, logits_from=first) - full[:, first:]).abs().max() <= scale, first
            assert (lean(tokens, last_only=True) - full[:, -1:]).abs().max() <= scale
            _, acts = lean.run_with_cache(tokens, ["blocks.0.hook_resid_post"])
            started = lean.forward(start=("blocks.0.hook_resid_post", acts["blocks.0.hook_resid_post"]), logits_from=1)
            assert (started - full[:, 1:]).abs().max() <= scale
        with pytest.raises(ValueError):
            lean.forward(tokens, record={}, logits_from=1)
