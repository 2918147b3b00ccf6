"""Attention patterns and the logit lens, checked against direct computations from the cache and the weights."""
import numpy as np
import torch
import torch.nn.functional as F

from equiv_tools.forward.decoding import greedy_decode
from equiv_tools.analysis.reading import (
    answered_sequences, attention_patterns, correct_digit_lens, correct_digit_summary, logit_lens, logit_lens_probabilities, mean_attention,
    readable_depth, split_logit_lens,
)
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
    assert len(fig.axes) == model.cfg.n_layers * model.cfg.n_heads + 1  # and one colour bar for all
    assert fig.axes[0].get_yticklabels()[0].get_text() == "a[10^4]"
    fig = plot_logit_lens(split_logit_lens(model, task, n=20, ood_digits=4))
    assert [ax.get_title() for ax in fig.axes[:3]] == ["ID, embedding", "OOD, embedding", "ID, after block 0"]
    assert len(fig.axes) == 2 * (model.cfg.n_layers + 1) + 1


ZERO_BLOCK_0 = ("blocks.0.hook_resid_post", lambda x, hook: x * 0)


def test_correct_digit_lens_reads_the_answer_from_depth_2_on_add3_nano(add3_nano):
    """200 ID pairs: the model is always right, so the final depth is its own output; the embedding alone is not."""
    model, task = add3_nano.model, add3_nano.task
    a, b = task.sample_id(200, seed=0)
    frame = correct_digit_lens(model, task, a, b)
    depths = model.cfg.n_layers + 1
    assert len(frame) == 200 * task.answer_len * depths and frame.columns.tolist()[:3] == ["input", "position", "depth"]
    assert frame.p_correct.between(0, 1).all()
    # the final depth is the model's softmax on the true answer's sequence, at the true digits
    tokens = torch.from_numpy(task.encode(a, b))
    with torch.no_grad():
        logits = model(tokens[:, : task.n_ctx])[:, task.prompt_len - 1 :]  # [200, answer_len, vocab]
    direct = torch.softmax(logits, dim=-1).gather(-1, tokens[:, task.prompt_len :, None])[..., 0]  # [200, answer_len]
    final = frame[frame.depth == depths - 1]  # rows by input, then position
    assert_close(final.p_correct.to_numpy(), direct.reshape(-1), scale=logits)  # probabilities: their logits' rounding
    assert final.argmax_correct.all() and final.p_correct.min() > 0.999  # measured: every digit right, p >= 0.99935

    summary = correct_digit_summary(frame)
    assert summary.columns.tolist() == ["position", "depth", "p_median", "p_q25", "p_q75", "argmax_share", "n_inputs"]
    assert (summary.n_inputs == 200).all() and (summary.p_q25 <= summary.p_median).all() and (summary.p_median <= summary.p_q75).all()
    by_depth = frame.groupby("depth").argmax_correct.mean()  # measured: 0.0625, 0.593, 0.981, 1.0
    assert by_depth[0] < 0.1 and 0.5 < by_depth[1] < 0.7 and by_depth[2] > 0.95 and by_depth[3] == 1.0
    embedding = summary[summary.depth == 0].set_index("position")
    assert frame[frame.depth == 0].p_correct.median() < 0.1  # measured: 0.066
    assert (embedding.loc[["ans[10^0]", "ans[10^1]", "ans[10^2]"], "p_median"] < 0.05).all()  # measured: 0.032, 0.006, 0.014
    assert (embedding.loc[["ans[10^0]", "ans[10^1]", "ans[10^2]"], "argmax_share"] < 0.2).all()  # chance: 0.1; measured <= 0.145
    # the low digits (a sum with carries) become readable after block 1, the high ones (0 or a carry) after block 0
    assert readable_depth(summary) == {"ans[10^0]": 2, "ans[10^1]": 2, "ans[10^2]": 2, "ans[10^3]": 1, "ans[10^4]": 1, "ans[10^5]": 1}
    # on 4-digit pairs the model answers (a mod 10^3) + (b mod 10^3): the true thousands digit is never its top digit
    ood = readable_depth(correct_digit_summary(correct_digit_lens(model, task, *task.sample_ood(200, digits=4, seed=0))))
    assert ood["ans[10^3]"] is None and ood["ans[10^0]"] == 2  # measured: top digit correct for at most 10% at ans[10^3]


def test_correct_digit_lens_sees_the_users_hooks(add3_nano):
    """Zeroing the residual stream after block 0 leaves the embedding's reading as it was and wrecks every later depth."""
    model, task = add3_nano.model, add3_nano.task
    a, b = task.sample_id(200, seed=0)
    plain = correct_digit_lens(model, task, a, b)
    with model.hooks(fwd_hooks=[ZERO_BLOCK_0]):
        hooked = correct_digit_lens(model, task, a, b)
    model.add_hook(*ZERO_BLOCK_0)
    try:
        added = correct_digit_lens(model, task, a, b)
    finally:
        model.reset_hooks()
    assert added.equals(hooked)
    assert hooked[hooked.depth == 0].equals(plain[plain.depth == 0])
    final = hooked[hooked.depth == model.cfg.n_layers].argmax_correct.mean()
    assert 0.4 < final < 0.5  # measured: 0.456 (the constant output is right where a digit is always 0), against 1.0 unhooked
    assert correct_digit_lens(model, task, a, b).equals(plain)  # and the hook is gone


def test_correct_digit_lens_plot_marks_the_readable_depth(add3_nano):
    from equiv_tools.views.plots import plot_correct_digit_lens

    model, task = add3_nano.model, add3_nano.task
    summary = correct_digit_summary(correct_digit_lens(model, task, *task.sample_id(50, seed=0)))
    fig = plot_correct_digit_lens(summary)
    assert [ax.get_title() for ax in fig.axes] == task.position_names()[task.prompt_len :]
    marks = [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert marks == [readable_depth(summary)["ans[10^0]"]]
    assert fig.axes[0].lines[0].get_ydata().tolist() == summary[summary.position == "ans[10^0]"].p_median.tolist()
