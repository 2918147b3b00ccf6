"""Attention patterns and the logit lens, checked against direct computations from the cache and the weights."""
import numpy as np
import torch
import torch.nn.functional as F

from equiv_tools.forward.decoding import greedy_decode
from equiv_tools.analysis.reading import answered_sequences, attention_patterns, logit_lens, logit_lens_probabilities, mean_attention, split_logit_lens
from equiv_tools.forward.representations import residual_hooks
from tests.tolerance import assert_close

A, B = np.array([12, 345, 999, 1234]), np.array([678, 9, 1, 5678])


def test_attention_matches_softmax_of_queries_and_keys(add3_nano):
    model, task = add3_nano.model, add3_nano.task
    frame = attention_patterns(model, task, A, B)
    names = task.position_names()[: task.n_ctx]
    tokens = answered_sequences(model, task, A, B)
    assert tokens.shape == (4, task.n_ctx)
    _, cache = model.run_with_cache(tokens)
    for layer in range(model.cfg.n_layers):
        q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]  # [batch, pos, heads, d_head]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
        causal = torch.ones(task.n_ctx, task.n_ctx, dtype=torch.bool).tril()
        expected = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1).detach()  # [batch, heads, query, key]
        score_scale = scores.masked_fill(~causal, 0).abs().max()  # a softmax's weights inherit their scores' rounding
        for item, head, query, key in [(0, 0, 9, 3), (1, 2, 12, 4), (3, 1, 14, 14), (2, 0, 10, 0)]:
            row = frame[(frame.item == item) & (frame.layer == layer) & (frame["head"] == head) & (frame["query"] == names[query]) & (frame.key == names[key])]
            assert_close(row.weight.item(), expected[item, head, query, key], scale=score_scale)
    # each query's weights sum to one over the keys at or before it, and there are no others
    assert_close(frame.groupby(["item", "layer", "head", "query"]).weight.sum(), 1.0, scale=1.0)
    assert len(frame) == 4 * model.cfg.n_layers * model.cfg.n_heads * task.n_ctx * (task.n_ctx + 1) // 2
    mean = mean_attention(model, task, A, B).set_index(["layer", "head", "query", "key"]).weight
    by_hand = frame.groupby(["layer", "head", "query", "key"]).weight.mean()
    assert_close(mean.loc[by_hand.index], by_hand)


def test_logit_lens_matches_the_model_and_a_direct_computation(add3_nano):
    model, task = add3_nano.model, add3_nano.task
    probs = logit_lens_probabilities(model, task, A, B)  # [n, depths, answer_len, vocab]
    depths = len(residual_hooks(model))
    assert probs.shape == (4, depths, task.answer_len, 10)
    tokens = answered_sequences(model, task, A, B)
    reading = slice(task.prompt_len - 1, task.prompt_len - 1 + task.answer_len)
    logits, cache = model.run_with_cache(tokens)
    assert_close(probs[:, -1], torch.softmax(logits[:, reading], dim=-1), scale=logits[:, reading])  # the last depth is the model's output
    weights = model.state_dict()
    for depth, hook in enumerate(residual_hooks(model)):
        normed = F.layer_norm(cache[hook][:, reading], (model.cfg.d_model,), weights["ln_final.weight"], weights["ln_final.bias"], eps=1e-5)
        direct_logits = F.linear(normed, weights["unembed.weight"], weights["unembed.bias"])
        assert_close(probs[:, depth], torch.softmax(direct_logits, dim=-1), scale=direct_logits, what=hook)  # probabilities: their logits' rounding
    frame = logit_lens(model, task, A, B)
    assert_close(frame.groupby(["layer", "answer_position"]).probability.sum(), 1.0, scale=1.0)
    # at the last depth the most likely digit is the greedy answer's digit
    answers = greedy_decode(model, task, A, B)  # [n, answer_len]
    last = frame[frame.layer == depths - 1]
    for k, name in enumerate(task.position_names()[task.prompt_len :]):
        shares = last[last.answer_position == name].set_index("digit").top_share
        assert shares.tolist() == (np.bincount(answers[:, k], minlength=10) / 4).tolist()  # counts over 4: exact in float32


def test_split_logit_lens_has_both_splits(add3_nano):
    frame = split_logit_lens(add3_nano.model, add3_nano.task, n=50, ood_digits=4)
    assert set(frame.split) == {"id", "ood"}
    final = frame[(frame.layer == frame.layer.max()) & (frame.answer_position == "ans[10^0]")]
    assert_close(final.groupby("split").top_share.sum(), 1.0, scale=1.0)  # float32 shares k / 50, summed


def test_plots_draw_one_panel_per_layer_and_head(add3_nano):
    from equiv_tools.views.plots import plot_attention, plot_logit_lens

    model, task = add3_nano.model, add3_nano.task
    fig = plot_attention(mean_attention(model, task, A, B))
    assert len(fig.axes) == model.cfg.n_layers * model.cfg.n_heads
    assert fig.axes[0].get_yticklabels()[0].get_text() == "a[10^4]"
    fig = plot_logit_lens(split_logit_lens(model, task, n=20, ood_digits=4))
    assert [ax.get_title() for ax in fig.axes[:2]] == ["id layer 0", "id layer 1"] and len(fig.axes) == 2 * (model.cfg.n_layers + 1)
