"""Decoding: the fast paths give the naive loop's answers; teacher-forced scoring agrees with greedy decoding."""
import copy

import numpy as np
import pytest
import torch

from equiv_tools import InputError
from equiv_tools.forward.decoding import greedy_decode, naive_greedy_decode, predict, score_digits
from equiv_tools.forward.lean import LeanModel
from equiv_tools.core.relations import sum_of_residues
from tests.tolerance import assert_close


@pytest.fixture(scope="module")
def inputs(tiny_run):
    # every ID pair of the 1-digit task and every pair with a 2-digit operand: ID and OOD mixed
    return tiny_run.task.grid(range(100), range(0, 100, 3))


def test_lean_forward_matches_bridge(tiny_run, inputs):
    tokens = torch.from_numpy(tiny_run.task.encode(*inputs))[:, :-1]
    with torch.no_grad():
        assert_close(LeanModel(tiny_run.model)(tokens), tiny_run.model(tokens))  # float32 rounding relative to the logits


@pytest.mark.parametrize("guess", [None, "auto", "relation", "truth"])
def test_fast_paths_equal_naive(tiny_run, inputs, guess):
    task, a, b = tiny_run.task, *inputs
    expected = naive_greedy_decode(tiny_run.model, task, a, b, batch_size=512)
    guess = {"relation": sum_of_residues(1), "truth": task.truth(a, b)}.get(guess, guess)
    got = greedy_decode(tiny_run.model, task, a, b, batch_size=700, guess=guess)
    assert np.array_equal(got, expected)


def test_chunking_does_not_change_answers(tiny_run, inputs):
    task, a, b = tiny_run.task, *inputs
    assert np.array_equal(greedy_decode(tiny_run.model, task, a, b, batch_size=7), greedy_decode(tiny_run.model, task, a, b, batch_size=10_000))


def test_row_blocks_do_not_change_answers(tiny_run, inputs, monkeypatch):
    import equiv_tools.forward.lean as forward

    task, a, b = tiny_run.task, *inputs
    tokens = torch.from_numpy(task.encode(a, b, task.truth(a, b)))[:, :-1]
    lean64 = LeanModel(copy.deepcopy(tiny_run.model).double())  # float64: equal to 1e-12 where the arithmetic is the same
    with torch.no_grad():
        whole = lean64.forward(tokens)
        monkeypatch.setattr(forward, "BLOCK_TOKENS", 50)  # blocks of 8 rows, the last one partial
        assert len(lean64.row_blocks(*tokens.shape)) == -(-len(tokens) // 8) > 400
        assert torch.allclose(lean64(tokens), whole, rtol=0, atol=1e-12)
    for guess in (None, task.truth(a, b)):  # KV-cached decoding, and verification
        assert np.array_equal(greedy_decode(tiny_run.model, task, a, b, guess=guess), naive_greedy_decode(tiny_run.model, task, a, b))


def test_shared_prefixes_run_once_and_change_no_logits(tiny_run, inputs):
    task, a, b = tiny_run.task, *inputs
    tokens = torch.from_numpy(task.encode(a, b, task.truth(a, b)))[:, :-1]
    lean, first_needed = LeanModel(tiny_run.model), task.prompt_len - 1
    # brute force: the prefix length that saves the most token-positions, counting distinct prefixes directly
    savings = [0] + [length * (len(tokens) - len(torch.unique(tokens[:, :length], dim=0))) for length in range(1, first_needed + 1)]
    prefix_len, shared = lean.shared_prefix(tokens, first_needed)
    assert prefix_len == int(np.argmax(savings)) > 0 and savings[prefix_len] > 0.05 * tokens.numel()
    with torch.no_grad():
        _, keys = lean.run_with_cache(tokens, [f"blocks.{i}.attn.hook_k" for i in range(lean.n_layers)])
        assert shared[0][0][0].shape[0] == len(torch.unique(tokens[:, :prefix_len], dim=0))  # one row per distinct prefix
        for i, (k, v) in enumerate(lean.rows_of(shared, slice(None))):  # [batch, n_heads, prefix_len, d_head]
            assert_close(k, keys[f"blocks.{i}.attn.hook_k"][:, :prefix_len].transpose(1, 2), what=f"keys of layer {i}")
        # float32 rounding differs from CPU to CPU (1.96e-5 on logits reaching 9.6 on one AMD EPYC): a tolerance from the values
        model64 = copy.deepcopy(tiny_run.model).double()
        expected, reference = tiny_run.model(tokens)[:, first_needed:], model64(tokens)[:, first_needed:]  # reference: the rounding, measured
        assert_close(lean(tokens, logits_from=first_needed), expected, reference=reference)
        # the same arithmetic as one whole forward: in float64, equal to 1e-12 (float32 rounding differs by batch shape)
        lean64 = LeanModel(model64)
        assert torch.allclose(lean64(tokens, logits_from=first_needed), lean64.forward(tokens)[:, first_needed:], rtol=0, atol=1e-12)
    assert lean.shared_prefix(tokens[:1], first_needed) == (0, None)  # one row: nothing to share


def test_lean_forward_refuses_what_the_bridge_refuses(add3_nano):
    task, lean = add3_nano.task, LeanModel(add3_nano.model)
    a, b = task.sample_ood(20, digits=4, seed=0)
    tokens = torch.from_numpy(task.encode(a, b, task.truth(a, b)))  # [20, 16]: one more than n_ctx
    with torch.no_grad():
        with pytest.raises(ValueError, match="exceeds n_ctx=15"):
            add3_nano.model(tokens)
        with pytest.raises(ValueError, match="exceeds n_ctx=15"):
            lean(tokens, logits_from=9)  # via a shared prefix and its cache
        cache: list = []
        lean(tokens[:, :14], cache, last_only=True)
        with pytest.raises(ValueError, match="input length 16 exceeds n_ctx=15"):  # a cache continued past n_ctx
            lean(tokens[:, 14:16], cache)
        with pytest.raises(ValueError, match=r"logits_from must lie in \[0, 15\), got 100"):
            lean(tokens[:, :-1], last_only=True, logits_from=100)
        bad = tokens[:, :-1].clone()
        bad[-1, 2] = 10  # outside the vocabulary, in a prefix the other rows share
        for forward in (add3_nano.model, lean.forward, lambda t: lean(t, logits_from=9)):
            with pytest.raises(IndexError):
                forward(bad)


def test_teacher_forced_scoring_agrees_with_the_bridge(tiny_run, inputs):
    task, a, b = tiny_run.task, *inputs
    answers = task.decode_answer(naive_greedy_decode(tiny_run.model, task, a, b))  # the bridge's own greedy answers
    assert score_digits(tiny_run.model, task, a, b, answers).all()
    truth = task.truth(a, b)
    assert 0 < (answers == truth).mean() < 1  # the tiny model is right on some inputs and wrong on others
    tokens = torch.from_numpy(task.encode(a, b, truth))
    with torch.no_grad():  # per digit: the bridge's argmax under teacher forcing on the truth
        expected = (tiny_run.model(tokens[:, :-1])[:, task.prompt_len - 1 :].argmax(-1) == tokens[:, task.prompt_len :]).numpy()
    per_digit = score_digits(tiny_run.model, task, a, b, truth)
    assert np.array_equal(per_digit, expected)
    assert np.array_equal(per_digit.all(axis=1), answers == truth)


def test_decode_errors(tiny_run):
    with pytest.raises(InputError, match="too wide"):
        predict(tiny_run.model, tiny_run.task, [1000], [1])
    with pytest.raises(InputError, match="guess"):
        greedy_decode(tiny_run.model, tiny_run.task, [1], [1], guess="best")
    with pytest.raises(InputError, match="batch_size"):
        greedy_decode(tiny_run.model, tiny_run.task, [1], [1], batch_size=0, guess=None)


@pytest.mark.parametrize("guess", [None, "auto"])
def test_progress_reaches_one_and_answers_are_unchanged(tiny_run, inputs, guess):
    task, a, b = tiny_run.task, *inputs
    seen = []
    got = greedy_decode(tiny_run.model, task, a, b, batch_size=700, guess=guess, on_progress=seen.append)
    assert np.array_equal(got, naive_greedy_decode(tiny_run.model, task, a, b))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 1


def test_a_map_decodes_once_with_progress(tiny_run):
    from equiv_tools.analysis.maps import grid_answers

    task, seen = tiny_run.task, []
    frame = grid_answers(tiny_run.model, task, range(100), range(0, 100, 3), on_progress=seen.append)
    assert np.array_equal(frame["answer"].to_numpy(), task.decode_answer(naive_greedy_decode(tiny_run.model, task, *task.grid(range(100), range(0, 100, 3)))))
    assert seen == sorted(seen) and seen[-1] == 1.0
