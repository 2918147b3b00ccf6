"""answer_probabilities: the greedy answer and the probability of each of its tokens, as the bridge computes them."""
import numpy as np
import pytest
import torch

from equiv_tools import InputError
from equiv_tools.forward.decoding import answer_probabilities, naive_greedy_decode
from equiv_tools.forward.lean import fast_path_blocker
from tests.tolerance import assert_close, magnitude

HOOK = "blocks.1.hook_attn_out"


def _bridge_probabilities(model, task, a, b):
    """The bridge's greedy tokens [n, answer_len], under teacher forcing on them its softmax probability of each, and
    the largest |logit| there: the scale of the probabilities' rounding (a probability inherits its logits' absolute error)."""
    answers = naive_greedy_decode(model, task, a, b)
    tokens = torch.from_numpy(task.encode(a, b, task.decode_answer(answers)))
    with torch.no_grad():
        logits = model(tokens[:, :-1])[:, task.prompt_len - 1 :]
    probs = torch.softmax(logits, dim=-1)
    return answers, probs.gather(-1, tokens[:, task.prompt_len :, None])[..., 0].numpy(), magnitude(logits)


def test_fast_path_gives_the_bridge_probabilities(tiny_run):
    task = tiny_run.task
    a, b = task.grid(range(100), range(0, 100, 3))  # ID and OOD pairs
    assert fast_path_blocker(tiny_run.model) is None
    expected_tokens, expected_probs, logit_scale = _bridge_probabilities(tiny_run.model, task, a, b)
    tokens, probs = answer_probabilities(tiny_run.model, task, a, b, batch_size=700)
    assert tokens.dtype == np.int64 and tokens.shape == probs.shape == (a.size, task.answer_len)
    assert np.array_equal(tokens, expected_tokens)
    assert_close(probs, expected_probs, scale=logit_scale)  # the lean forward's logits: the bridge's, up to float32 rounding
    assert probs.min() >= 1 / task.d_vocab and probs.max() <= 1  # the greedy token is the most probable one
    assert probs.min() < 0.9  # the tiny model is unsure somewhere: the values are not all ~1
    # other chunks: the same arithmetic, rounded differently where rows share a prefix (LeanModel.shared_prefix)
    assert_close(answer_probabilities(tiny_run.model, task, a, b, batch_size=7)[1], probs, scale=logit_scale)


def test_hooks_are_honoured(add3_nano):
    model, task = add3_nano.model, add3_nano.task
    a, b = task.grid(range(990, 1010), range(0, 1000, 50))
    _, unhooked = answer_probabilities(model, task, a, b)
    model.add_hook(HOOK, lambda x, hook: x * 0)
    try:
        assert fast_path_blocker(model) is not None
        expected_tokens, expected_probs, logit_scale = _bridge_probabilities(model, task, a, b)
        tokens, probs = answer_probabilities(model, task, a, b)
    finally:
        model.reset_hooks()
    assert np.array_equal(tokens, expected_tokens)
    assert_close(probs, expected_probs, scale=logit_scale)  # both through the hooked bridge
    assert np.abs(probs - unhooked).max() > 0.1  # the hook changed what the model computes


def test_bad_operands_are_refused(tiny_run):
    with pytest.raises(InputError, match="too wide"):
        answer_probabilities(tiny_run.model, tiny_run.task, [1000], [1])
