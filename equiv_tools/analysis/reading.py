"""Reading what a model computes, layer by layer: attention patterns and the logit lens.

Both run the model teacher-forced on its own greedy answer (the prompt and all
answer digits but the last: ``task.n_ctx`` tokens) through ``run_with_cache``, so
the user's hooks apply, and label positions with ``task.position_names()``.
``correct_digit_lens`` teacher-forces the true answer instead and follows the
correct digit's probability through the depths.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task
from equiv_tools.forward.decoding import greedy_decode
from equiv_tools.forward.representations import residual_hooks


def answered_sequences(model, task: Task, a, b, batch_size: int = 4096) -> torch.Tensor:
    """The prompts of (a, b) followed by the model's greedy answer but its last token: int64 [n, n_ctx]."""
    a, b = task.check_operands(a, b)
    answers = task.decode_answer(greedy_decode(model, task, a, b, batch_size=batch_size))
    return torch.from_numpy(task.encode(a, b, answers)[:, : task.n_ctx])


@torch.no_grad()
def attention_weights(model, task: Task, a, b, batch_size: int = 4096) -> torch.Tensor:
    """Attention patterns of every layer and head on the answered sequences of (a, b): [n, layers, heads, query, key]."""
    tokens = answered_sequences(model, task, a, b, batch_size)
    if tokens.shape[0] == 0:
        raise InputError("attention patterns need at least one input")
    device = next(model.parameters()).device
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    parts = []
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(tokens[start : start + batch_size].to(device), names_filter=lambda name: name in names)
        parts.append(torch.stack([cache[name] for name in names], dim=1).float().cpu())  # [batch, layers, heads, query, key]
    return torch.cat(parts)


def _pattern_frame(task: Task, weights: torch.Tensor) -> pd.DataFrame:
    """Tidy rows from weights [layers, heads, query, key] (or with a leading item axis): causal entries only."""
    names = task.position_names()[: task.n_ctx]
    has_item = weights.dim() == 5
    array = weights.numpy() if has_item else weights.numpy()[None]
    item, layer, head, query, key = np.indices(array.shape).reshape(5, -1)
    keep = key <= query  # a query never attends ahead of itself
    frame = pd.DataFrame({
        "item": item[keep], "layer": layer[keep], "head": head[keep],
        "query": np.array(names)[query[keep]], "key": np.array(names)[key[keep]], "weight": array.reshape(-1)[keep],
    })
    return frame if has_item else frame.drop(columns="item")


def attention_patterns(model, task: Task, a, b, batch_size: int = 4096) -> pd.DataFrame:
    """Attention of every layer and head for each input: one row per item (index into a, b), layer, head, query, key
    (position names; keys at or before the query) with its weight."""
    return _pattern_frame(task, attention_weights(model, task, a, b, batch_size))


def mean_attention(model, task: Task, a, b, batch_size: int = 4096) -> pd.DataFrame:
    """Attention averaged over the inputs (a, b): one row per layer, head, query, key, with the mean weight."""
    return _pattern_frame(task, attention_weights(model, task, a, b, batch_size).mean(dim=0))


def true_sequences(task: Task, a, b) -> torch.Tensor:
    """The prompts of (a, b) followed by the true answer but its last token: int64 [n, n_ctx]."""
    return torch.from_numpy(task.encode(a, b)[:, : task.n_ctx])


@torch.no_grad()
def lens_probabilities(model, task: Task, tokens: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Answer-digit probabilities read from each residual depth of ``tokens`` (int64 [n, n_ctx]) through the final
    norm and unembedding: float32 [n, depths, answer_len, d_vocab_out].

    Depths are ``representations.residual_hooks(model)``: the embedding (``blocks.0.hook_resid_pre``), then each
    block's output, which is the next block's ``hook_resid_pre``. Positions are the ``answer_len`` positions that
    predict the answer digits (``prompt_len - 1`` onwards); the last depth gives the model's own output distribution.
    """
    if tokens.shape[0] == 0:
        raise InputError("the logit lens needs at least one input")
    device = next(model.parameters()).device
    hooks = residual_hooks(model)
    reading = slice(task.prompt_len - 1, task.prompt_len - 1 + task.answer_len)
    parts = []
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(tokens[start : start + batch_size].to(device), names_filter=lambda name: name in hooks)
        resid = torch.stack([cache[hook][:, reading] for hook in hooks], dim=1)  # [batch, depths, answer_len, d_model]
        parts.append(torch.softmax(model.unembed(model.ln_final(resid)).float(), dim=-1).cpu())
    return torch.cat(parts)


def logit_lens_probabilities(model, task: Task, a, b, batch_size: int = 4096) -> torch.Tensor:
    """``lens_probabilities`` on (a, b) teacher-forced on the model's own greedy answer: float32 [n, depths, answer_len, d_vocab_out]."""
    return lens_probabilities(model, task, answered_sequences(model, task, a, b, batch_size), batch_size)


def logit_lens(model, task: Task, a, b, batch_size: int = 4096) -> pd.DataFrame:
    """The logit lens on inputs (a, b), averaged over them: one row per depth, answer position and digit.

    Columns: layer (0 = the embedding, i = the output of block i - 1), hook, answer_position (a position name),
    digit, probability (mean over inputs) and top_share (share of inputs whose most likely digit it is).
    """
    probs = logit_lens_probabilities(model, task, a, b, batch_size)  # [n, depths, answer_len, vocab]
    n, depths, answer_len, vocab = probs.shape
    mean = probs.mean(dim=0).numpy()  # [depths, answer_len, vocab]
    top = torch.nn.functional.one_hot(probs.argmax(-1), vocab).float().mean(dim=0).numpy()  # [depths, answer_len, vocab]
    layer, position, digit = np.indices(mean.shape).reshape(3, -1)
    answer_names = np.array(task.position_names()[task.prompt_len :])
    return pd.DataFrame({
        "layer": layer, "hook": np.array(residual_hooks(model))[layer], "answer_position": answer_names[position],
        "digit": digit, "probability": mean.reshape(-1), "top_share": top.reshape(-1),
    })


def split_logit_lens(model, task: Task, n: int = 500, ood_digits=None, seed: int = 0, batch_size: int = 4096) -> pd.DataFrame:
    """``logit_lens`` on ``n`` random ID pairs and, where the task has them, ``n`` OOD pairs, with a split column (id, ood)."""
    frames = [logit_lens(model, task, *task.sample_id(n, seed=seed), batch_size=batch_size).assign(split="id")]
    if task.has_ood:
        frames.append(logit_lens(model, task, *task.sample_ood(n, ood_digits, seed=seed), batch_size=batch_size).assign(split="ood"))
    return pd.concat(frames, ignore_index=True)


def correct_digit_lens(model, task: Task, a, b, batch_size: int = 4096) -> pd.DataFrame:
    """The logit lens's probability of the correct answer digit, per input, answer position and depth.

    Each input is teacher-forced on its true answer, so at every answer position the correct digit is the true
    answer's digit there. Depths as in ``lens_probabilities``: 0 = the embedding, d = the residual stream before
    block d, the last = after the last block (read through the final norm: the model's own output).
    One row per input (index into a, b), position (a position name such as ``ans[10^0]``) and depth, in that order, with hook,
    p_correct (probability of the correct digit) and argmax_correct (whether it is the most likely digit).
    """
    a, b = task.check_operands(a, b)
    probs = lens_probabilities(model, task, true_sequences(task, a, b), batch_size)  # [n, depths, answer_len, vocab]
    n, depths, answer_len, _ = probs.shape
    correct = torch.from_numpy(task.encode_answer(task.truth(a, b)))[:, None, :, None].expand(n, depths, answer_len, 1)
    p_correct = probs.gather(-1, correct)[..., 0].transpose(1, 2).numpy()  # [n, answer_len, depths]
    argmax_correct = (probs.argmax(-1) == correct[..., 0]).transpose(1, 2).numpy()
    item, position, depth = np.indices(p_correct.shape).reshape(3, -1)
    return pd.DataFrame({
        "input": item, "position": np.array(task.position_names()[task.prompt_len :])[position], "depth": depth,
        "hook": np.array(residual_hooks(model))[depth], "p_correct": p_correct.reshape(-1), "argmax_correct": argmax_correct.reshape(-1),
    })


def correct_digit_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per position and depth of a ``correct_digit_lens`` frame: p_median, p_q25 and p_q75 (quantiles of p_correct over
    the inputs), argmax_share (share of inputs whose most likely digit is correct) and n_inputs."""
    groups = frame.groupby(["position", "depth"], sort=False)
    return groups.agg(
        p_median=("p_correct", "median"), p_q25=("p_correct", lambda p: p.quantile(0.25)),
        p_q75=("p_correct", lambda p: p.quantile(0.75)), argmax_share=("argmax_correct", "mean"), n_inputs=("input", "size"),
    ).reset_index()


def readable_depth(summary: pd.DataFrame, share: float = 0.5) -> dict:
    """Per position of a ``correct_digit_summary`` frame, the first depth whose argmax_share is at least ``share``
    (None where no depth reaches it): {position name: depth or None}, positions in the summary's order."""
    depths = {}
    for position, rows in summary.sort_values("depth", kind="stable").groupby("position", sort=False):
        readable = rows.depth[rows.argmax_share >= share]
        depths[position] = int(readable.iloc[0]) if len(readable) else None
    return depths
