"""Activation patching: where does a model carry the information that makes two inputs' answers differ?

One generic sweep, ``activation_patch``, in the style of ``transformer_lens.patching``: run a
corrupted input, replace one activation (a layer x position, a layer x position x head, or a
layer x head over all positions) with its value from a clean run, and measure the output with a
``metric`` (logits [batch, pos, d_vocab_out] -> a scalar, or a 1-d tensor such as one value per
answer position). Named variants are ``functools.partial``s of it (``patch_resid_pre_by_pos``, ...).

Where ``forward.lean.lean_forward(model)`` gives a lean forward the sweep runs it: it starts each
patched run at the patched layer (the layers below cannot change) and batches the patched indices.
Otherwise it runs the bridge with ``run_with_hooks``, one forward per index, as TransformerLens does,
so the user's hooks apply and the answer is always the hooked model's.

``patch_pair`` wraps the sweep for a task: teacher-forced runs of a clean and a corrupted input
(each on the model's own greedy answer), metrics that fit arithmetic, and a tidy DataFrame with
columns kind, layer, position, head, answer_position, measure, value (-1 in position or head means
"all positions" or "not by head"; -1 in answer_position means "not per answer position").
``activation_difference`` measures an OOD input against its class-map representative.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task
from equiv_tools.forward.decoding import greedy_decode
from equiv_tools.forward.lean import LeanModel, lean_forward

KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
BY = ("layer_pos", "layer_pos_head", "layer_head")
MAX_ROWS = 8192  # sequences per batched lean forward: bounds memory, keeps the matrix products large

Metric = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PositionMetric:
    """A metric that reads the logits at ``positions`` only: logits [batch, pos, d_vocab_out] -> a scalar or [m].

    The lean sweep then leaves later positions out. The kit's metrics are built as these. Any other callable,
    a user's wrapper of a kit metric too (``functools.wraps`` copies attributes, never the class), counts as
    reading every position.
    """

    fn: Metric
    positions: range

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.fn(logits)


def hook_name(kind: str, layer: int) -> str:
    """The bridge's hook name for ``kind`` at ``layer``: resid_pre -> blocks.{layer}.hook_resid_pre, z -> blocks.{layer}.attn.hook_z."""
    if kind not in KINDS:
        raise InputError(f"unknown activation kind {kind!r}; choose one of {KINDS}")
    return f"blocks.{layer}.attn.hook_z" if kind == "z" else f"blocks.{layer}.hook_{kind}"


def _indices(by: str, n_pos: int, n_heads: int) -> list[tuple]:
    """The patched indices of one layer: (pos,), (pos, head) or (head,)."""
    if by == "layer_pos":
        return [(p,) for p in range(n_pos)]
    if by == "layer_pos_head":
        return [(p, h) for p in range(n_pos) for h in range(n_heads)]
    return [(h,) for h in range(n_heads)]


def _set(corrupted: torch.Tensor, clean: torch.Tensor, by: str, index: tuple) -> torch.Tensor:
    """``corrupted`` [batch, pos, ...] with the clean values at ``index`` (in place; the caller passes a copy)."""
    if by == "layer_pos":
        corrupted[:, index[0]] = clean[:, index[0]]
    elif by == "layer_pos_head":
        corrupted[:, index[0], index[1]] = clean[:, index[0], index[1]]
    else:
        corrupted[:, :, index[0]] = clean[:, :, index[0]]
    return corrupted


def _check(model, kind: str, by: str, corrupted: torch.Tensor, clean: torch.Tensor) -> None:
    hook_name(kind, 0)
    if by not in BY:
        raise InputError(f"by must be one of {BY}, got {by!r}")
    if by != "layer_pos" and kind != "z":
        raise InputError(f"patching by head needs kind='z' (the heads' outputs), got {kind!r}")
    if corrupted.shape != clean.shape:
        raise InputError(f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} differ in shape")


@torch.no_grad()
def _sweep_bridge(model, corrupted, clean, metric, kind, by) -> list:
    """One ``run_with_hooks`` per index, as transformer_lens.patching does: values [layer][index]."""
    names = {hook_name(kind, layer) for layer in range(model.cfg.n_layers)}
    _, clean_cache = model.run_with_cache(clean, names_filter=lambda name: name in names)
    out = []
    for layer in range(model.cfg.n_layers):
        name, values = hook_name(kind, layer), []
        for index in _indices(by, corrupted.shape[1], model.cfg.n_heads):
            hook = lambda act, hook, index=index, name=name: _set(act.clone(), clean_cache[name], by, index)
            values.append(torch.as_tensor(metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))))
        out.append(values)
    return out


@torch.no_grad()
def _sweep_lean(lean: LeanModel, model, corrupted, clean, metric, kind, by) -> list:
    """The same sweep on the lean forward: values [layer][index].

    Only what a patch can change is computed again, from the corrupted run's activations:
    - layers below the patch, and positions before the patched one (under the causal mask their
      keys, values and logits are the corrupted run's);
    - a patch at one position of layer L that is not resid_pre changes layer L's output at that
      position only (attention there read the unpatched resid_pre), so the run starts after layer L
      with that one position recomputed;
    - a sequence whose clean and corrupted activations are equal at the patched index is the
      corrupted run, so it is not run again;
    - a ``PositionMetric`` (the kit's own metrics) reads the logits at
      those positions only: later positions are not run, and the last layer computes queries,
      attention and MLP at the read positions only (``LeanModel.forward``'s ``logits_from``).
      A patch that can change none of them keeps the corrupted run's value.
    The remaining sequences of one position are run as one batch.
    """
    n_layers, batch, n_pos = model.cfg.n_layers, corrupted.shape[0], corrupted.shape[1]
    reads = metric.positions if isinstance(metric, PositionMetric) else range(n_pos)  # the logits' positions the metric reads
    names = [hook_name(kind, layer) for layer in range(n_layers)]
    kv_names = [f"blocks.{layer}.attn.hook_{x}" for layer in range(n_layers) for x in "kv"]
    resid = [f"blocks.{layer}.hook_resid_{s}" for layer in range(n_layers) for s in ("pre", "mid", "post")]
    _, clean_acts = lean.run_with_cache(clean, names)
    corr_logits, corr = lean.run_with_cache(corrupted, sorted(set(names + resid + kv_names)))
    kv = [tuple(corr[f"blocks.{j}.attn.hook_{x}"].transpose(1, 2).contiguous() for x in "kv") for j in range(n_layers)]  # [batch, n_heads, pos, d_head]
    corr_value = torch.as_tensor(metric(corr_logits))
    indices = _indices(by, n_pos, model.cfg.n_heads)
    if by == "layer_head":
        groups = [list(range(len(indices)))]
    else:
        groups = [[i for i, index in enumerate(indices) if index[0] == p] for p in range(n_pos)]
    step = max(1, MAX_ROWS // batch)
    out = []
    for layer, name in enumerate(names):
        values = [corr_value] * len(indices)  # a patch that changes nothing the metric reads
        differs = clean_acts[name] != corr[name]  # [batch, pos, ...]
        differs = differs.flatten(3).any(-1) if by != "layer_pos" else differs.flatten(2).any(-1)  # [batch, pos(, heads)]
        for group in groups:
            first = indices[group[0]][0] if by != "layer_head" else 0  # the first position the patch changes
            spreads = by == "layer_head" or kind == "resid_pre" or layer < n_layers - 1  # an attention layer follows the patch
            last = min(reads.stop - 1, n_pos - 1 if spreads else first)  # the last position to compute
            lo = max(first, reads.start)  # the first position whose logits are needed
            if lo > last:
                continue
            for at in range(0, len(group), step):
                chunk = group[at : at + step]
                changes = _changes(differs, by, [indices[i] for i in chunk])  # [len(chunk), batch]
                owner, src = changes.nonzero().unbind(1)  # [n]: each patched run's index in chunk and corrupted sequence
                if not len(src):
                    continue
                act = _patched(corr[name], clean_acts[name], by, src, torch.tensor([indices[i][-1] for i in chunk])[owner], first, last)
                cache = None
                if first:  # each [n, n_heads, first, d_head]; layers below the patch are not run
                    cache = [tuple(x[:, :, :first].index_select(0, src) for x in kv[j]) if j >= layer else None for j in range(n_layers)]
                new = lean.forward(start=_start(lean, kind, by, layer, act, corr, src, first, last), cache=cache, logits_from=lo - first)
                logits = corr_logits.repeat(len(chunk), 1, 1)  # [len(chunk) * batch, pos, vocab]: each index's patched run
                logits[owner * batch + src, lo : last + 1] = new  # new: [n, last + 1 - lo, vocab]
                for j, (i, count) in enumerate(zip(chunk, changes.sum(1).tolist())):
                    if count:
                        values[i] = torch.as_tensor(metric(logits[j * batch : (j + 1) * batch]))
        out.append(values)
    return out


def _changes(differs: torch.Tensor, by: str, chunk: list[tuple]) -> torch.Tensor:
    """Which sequences each patch of ``chunk`` (indices of one position, or heads) changes: bool [len(chunk), batch].

    ``differs`` [batch, pos(, heads)]: where the clean and corrupted activations differ.
    """
    if by == "layer_pos":
        return differs[:, [index[0] for index in chunk]].T  # [len(chunk), batch]
    heads = [index[-1] for index in chunk]
    if by == "layer_pos_head":
        return differs[:, chunk[0][0], heads].T  # [len(chunk), batch]
    return differs.any(1)[:, heads].T  # any position: [len(chunk), batch]


def _patched(corr: torch.Tensor, clean: torch.Tensor, by: str, src: torch.Tensor, heads: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """The patched activations of ``n`` runs: [n, ...] at position ``first`` (by position) or [n, last + 1 - first, n_heads, d_head] (``layer_head``).

    ``corr``, ``clean``: the corrupted and clean activations [batch, pos, ...]; ``src`` [n]: each run's sequence;
    ``heads`` [n]: each run's patched head (unused for ``layer_pos``).
    """
    if by == "layer_pos":
        return clean[src, first]
    rows = torch.arange(len(src))
    if by == "layer_pos_head":
        act = corr[src, first]  # [n, n_heads, d_head], a copy
        act[rows, heads] = clean[src, first, heads]
        return act
    act = corr[src, first : last + 1]  # [n, pos, n_heads, d_head], a copy
    act[rows, :, heads] = clean[src, first : last + 1, heads]
    return act


def _start(lean: LeanModel, kind: str, by: str, layer: int, act: torch.Tensor, corr: dict, src: torch.Tensor, first: int, last: int) -> tuple[str, torch.Tensor]:
    """Where a patched run begins: (a hook name, the residual stream there [rows, last + 1 - first, d_model] for positions first..last).

    ``act``: the patched activation, [rows, ...] at position ``first`` (by position) or [rows, pos, n_heads, d_head]
    at positions first..last (``layer_head``). ``corr``: the corrupted run's activations [batch, pos, ...];
    ``src`` [rows]: each row's corrupted sequence. Patched by position, every kind but resid_pre changes
    layer ``layer``'s output at ``first`` only: the run begins at its hook_resid_post.
    """
    p = f"blocks.{layer}."
    if by == "layer_head":  # resid_mid = resid_pre + attn_out, at every position
        return p + "hook_resid_mid", corr[p + "hook_resid_pre"][src, first : last + 1] + lean.attn_output(layer, act)
    if kind == "resid_pre":
        return p + "hook_resid_pre", torch.cat([act[:, None], corr[p + "hook_resid_pre"][src, first + 1 : last + 1]], dim=1)
    if kind == "resid_post":
        post = act
    elif kind in ("resid_mid", "mlp_out"):  # the bridge's hook_resid_mid feeds the MLP only: resid_post = resid_mid + mlp(patched)
        post = corr[p + "hook_resid_mid"][src, first] + (lean.mlp_output(layer, act) if kind == "resid_mid" else act)
    else:  # attn_out or z: resid_mid = resid_pre + attn_out, then the MLP
        mid = corr[p + "hook_resid_pre"][src, first] + (lean.attn_output(layer, act[:, None])[:, 0] if kind == "z" else act)
        post = mid + lean.mlp_output(layer, mid)
    return p + "hook_resid_post", torch.cat([post[:, None], corr[p + "hook_resid_post"][src, first + 1 : last + 1]], dim=1)


def activation_patch(
    model,
    corrupted_tokens: torch.Tensor,
    clean_tokens: torch.Tensor,
    metric: Metric,
    kind: str = "resid_pre",
    by: str = "layer_pos",
) -> torch.Tensor:
    """Patch ``kind`` from the clean run into the corrupted run at every index of ``by``; the metric of each patched run.

    tokens: int64 [batch, pos], both the same shape. ``metric``: logits [batch, pos, d_vocab_out] -> a scalar
    or a 1-d tensor [m]. ``kind``: one of KINDS (``z`` = the heads' outputs, ``attn.hook_z``). ``by``:
    ``layer_pos`` -> [n_layers, pos(, m)]; ``layer_pos_head`` -> [n_layers, pos, n_heads(, m)];
    ``layer_head`` (all positions) -> [n_layers, n_heads(, m)]. The model should be in eval mode.
    """
    _check(model, kind, by, corrupted_tokens, clean_tokens)
    device = next(model.parameters()).device
    corrupted, clean = corrupted_tokens.to(device), clean_tokens.to(device)
    lean = lean_forward(model)
    if lean is None:
        values = _sweep_bridge(model, corrupted, clean, metric, kind, by)
    else:
        values = _sweep_lean(lean, model, corrupted, clean, metric, kind, by)
    values = torch.stack([torch.stack(v) for v in values])  # [n_layers, n_indices(, m)]
    n_layers, n_pos, n_heads = model.cfg.n_layers, corrupted.shape[1], model.cfg.n_heads
    shape = {"layer_pos": (n_layers, n_pos), "layer_pos_head": (n_layers, n_pos, n_heads), "layer_head": (n_layers, n_heads)}[by]
    return values.reshape(*shape, *values.shape[2:]).float().cpu()  # [n_layers, n_pos(, n_heads)(, m)] or [n_layers, n_heads(, m)]


patch_resid_pre_by_pos = partial(activation_patch, kind="resid_pre", by="layer_pos")
patch_resid_mid_by_pos = partial(activation_patch, kind="resid_mid", by="layer_pos")
patch_resid_post_by_pos = partial(activation_patch, kind="resid_post", by="layer_pos")
patch_attn_out_by_pos = partial(activation_patch, kind="attn_out", by="layer_pos")
patch_mlp_out_by_pos = partial(activation_patch, kind="mlp_out", by="layer_pos")
patch_head_out_by_pos = partial(activation_patch, kind="z", by="layer_pos_head")
patch_head_out_all_pos = partial(activation_patch, kind="z", by="layer_head")


# ---- metrics that fit arithmetic -------------------------------------------------------------


def _answer_logits(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """The logits that predict each answer token: [batch, answer_len, d_vocab_out]."""
    return logits[:, task.prompt_len - 1 : task.prompt_len - 1 + task.answer_len]


def logit_difference(task: Task, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor, answer_position: int) -> Metric:
    """Metric: mean over the batch of logit[clean digit] - logit[corrupted digit] at ``answer_position`` (0 = first answer token).

    tokens: whole sequences, prompt and answer, int64 [batch, seq_len] (``answered_tokens``).
    """
    if not 0 <= answer_position < task.answer_len:
        raise InputError(f"answer_position must lie in [0, {task.answer_len}), got {answer_position}")
    column = task.prompt_len + answer_position
    clean_digit, corrupted_digit = clean_tokens[:, column], corrupted_tokens[:, column]  # [batch]

    def metric(logits):
        at = _answer_logits(task, logits)[:, answer_position]  # [batch, d_vocab_out]
        diff = at.gather(1, clean_digit[:, None].to(at.device)) - at.gather(1, corrupted_digit[:, None].to(at.device))
        return diff.mean()

    return PositionMetric(metric, range(task.prompt_len - 1 + answer_position, task.prompt_len + answer_position))  # the only logits it reads


def normalised_logit_difference(model, task: Task, clean_tokens, corrupted_tokens, answer_position: int) -> tuple[Metric, str]:
    """Metric: the logit difference scaled so the corrupted run gives 0 and the clean run 1, and its measure's name.

    Where the clean and corrupted digits at ``answer_position`` are equal (for every row) the
    normalisation is undefined: this warns and returns the raw logit difference, named "logit_diff".
    """
    raw = logit_difference(task, clean_tokens, corrupted_tokens, answer_position)
    with torch.no_grad():
        device = next(model.parameters()).device
        clean_value = float(raw(model(clean_tokens[:, :-1].to(device))))
        corrupted_value = float(raw(model(corrupted_tokens[:, :-1].to(device))))
    column = task.prompt_len + answer_position
    if torch.equal(clean_tokens[:, column], corrupted_tokens[:, column]) or clean_value == corrupted_value:
        warnings.warn(
            f"the clean and corrupted answers agree at answer position {answer_position}, so the normalised logit "
            "difference is undefined there; reporting the raw logit difference (clean_digit_probability still measures it)",
            stacklevel=2,
        )
        return raw, "logit_diff"
    def metric(logits):
        return (raw(logits) - corrupted_value) / (clean_value - corrupted_value)

    return PositionMetric(metric, raw.positions), "normalised_logit_diff"


def clean_digit_probability(task: Task, clean_tokens: torch.Tensor) -> Metric:
    """Metric: the mean probability of the clean answer's digit at each answer position: [answer_len].

    ``clean_tokens``: whole sequences int64 [batch, seq_len] (``answered_tokens``).
    """
    answers = clean_tokens[:, task.prompt_len : task.prompt_len + task.answer_len]  # [batch, answer_len]

    def metric(logits):
        probs = _answer_logits(task, logits).float().softmax(-1)
        return probs.gather(2, answers[..., None].to(probs.device))[..., 0].mean(0)

    return PositionMetric(metric, range(task.prompt_len - 1, task.prompt_len - 1 + task.answer_len))  # the logits it reads


# ---- ready-made pairs and tidy results ---------------------------------------------------------


def answered_tokens(model, task: Task, a, b) -> torch.Tensor:
    """Prompt and the model's greedy answer: int64 [n, seq_len]. ``[:, :-1]`` is a patched run's input (teacher forcing)."""
    a, b = task.check_operands(a, b)
    return torch.from_numpy(np.concatenate([task.encode_prompt(a, b), greedy_decode(model, task, a, b)], axis=1))


def patching_frame(values: torch.Tensor, kind: str, by: str, measure: str) -> pd.DataFrame:
    """A tidy frame from ``activation_patch``'s result: kind, layer, position, head, answer_position, measure, value."""
    v = values.numpy()
    if v.ndim == {"layer_pos": 2, "layer_pos_head": 3, "layer_head": 2}[by]:
        v = v[..., None]  # [..., 1]: a scalar metric
        answer_positions = [-1]
    else:
        answer_positions = list(range(v.shape[-1]))
    rows = []
    for idx in np.ndindex(*v.shape[:-1]):
        layer = idx[0]
        position = idx[1] if by != "layer_head" else -1
        head = {"layer_pos": -1, "layer_pos_head": idx[-1], "layer_head": idx[1]}[by]
        for k, ap in enumerate(answer_positions):
            rows.append((kind, layer, position, head, ap, measure, float(v[idx + (k,)])))
    return pd.DataFrame(rows, columns=["kind", "layer", "position", "head", "answer_position", "measure", "value"])


@contextmanager
def eval_mode(model):
    """Run ``model`` in eval mode (TransformerLens's patching requires it), then put back the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


SWEEPS = {  # name shown to users -> (kind, by)
    "resid_pre": ("resid_pre", "layer_pos"),
    "resid_mid": ("resid_mid", "layer_pos"),
    "resid_post": ("resid_post", "layer_pos"),
    "attn_out": ("attn_out", "layer_pos"),
    "mlp_out": ("mlp_out", "layer_pos"),
    "head_out_by_pos": ("z", "layer_pos_head"),
    "head_out_all_pos": ("z", "layer_head"),
}


def patch_pair(
    model,
    task: Task,
    clean: tuple,
    corrupted: tuple,
    sweeps: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
    metric: str = "logit_diff",
    answer_position: Optional[int] = None,
) -> pd.DataFrame:
    """Patch clean (a, b) into corrupted (a, b) for each of ``sweeps`` (keys of SWEEPS): a tidy DataFrame.

    ``metric``: ``"logit_diff"`` (normalised at ``answer_position``, default: the first position
    where the two greedy answers differ; the raw difference where they do not) or ``"probability"``
    (the clean digit's probability at every answer position). Operands may be ints or arrays.
    Runs in eval mode and leaves ``model`` in the mode it found it in.
    """
    with eval_mode(model):
        clean_tokens = answered_tokens(model, task, *clean)  # [n, seq_len]
        corrupted_tokens = answered_tokens(model, task, *corrupted)
        if clean_tokens.shape != corrupted_tokens.shape:
            raise InputError("clean and corrupted inputs must be as many")
        if metric == "probability":
            fn, measure = clean_digit_probability(task, clean_tokens), "clean_digit_probability"
        elif metric == "logit_diff":
            if answer_position is None:
                answers = slice(task.prompt_len, task.prompt_len + task.answer_len)
                differ = (clean_tokens[:, answers] != corrupted_tokens[:, answers]).any(0).nonzero()
                answer_position = int(differ[0]) if len(differ) else 0
            fn, measure = normalised_logit_difference(model, task, clean_tokens, corrupted_tokens, answer_position)
        else:
            raise InputError(f"metric must be 'logit_diff' or 'probability', got {metric!r}")
        frames = []
        for name in sweeps:
            if name not in SWEEPS:
                raise InputError(f"unknown sweep {name!r}; choose from {list(SWEEPS)}")
            kind, by = SWEEPS[name]
            frame = patching_frame(activation_patch(model, corrupted_tokens[:, :-1], clean_tokens[:, :-1], fn, kind, by), kind, by, measure)
            if metric == "logit_diff":
                frame["answer_position"] = answer_position
            frames.append(frame.assign(kind=name))
        return pd.concat(frames, ignore_index=True)


def one_digit_apart(task: Task, a: int, b: int, place: int, operand: str = "a", step: int = 1) -> tuple[tuple, tuple]:
    """A clean and a corrupted input that differ in one digit: ((a, b), (a', b)) with digit ``place`` (10^place) of ``operand`` moved by ``step`` (mod 10)."""
    value = a if operand == "a" else b
    digit = (value // 10**place) % 10
    moved = value + (((digit + step) % 10) - digit) * 10**place
    clean = (a, b)
    corrupted = (moved, b) if operand == "a" else (a, moved)
    task.check_operands(*clean)
    task.check_operands(*corrupted)
    return clean, corrupted


ACTIVATION_KINDS = ("resid_pre", "attn_out", "mlp_out", "resid_post")


@torch.no_grad()
def activation_difference(model, task: Task, a, b, rep_a, rep_b, kinds: Sequence[str] = ACTIVATION_KINDS, n_typical: int = 256, seed: int = 0) -> pd.DataFrame:
    """How far an input's activations lie from another's (an OOD input's from its class-map representative's).

    For every kind, layer and position: mean over pairs of ||act(a, b) - act(rep_a, rep_b)|| divided by the
    typical norm there (the mean ||act|| over ``n_typical`` ID inputs). Both runs are teacher-forced on their
    own greedy answers. Activations come from the bridge's ``run_with_cache``, so the user's hooks apply.
    Runs in eval mode and leaves ``model`` in the mode it found it in.
    A tidy frame: kind, layer, position, head (-1), answer_position (-1), measure, value.
    """
    names = [hook_name(kind, layer) for kind in kinds for layer in range(model.cfg.n_layers)]
    device = next(model.parameters()).device
    with eval_mode(model):
        x, r, typical = (answered_tokens(model, task, *ab)[:, :-1] for ab in ((a, b), (rep_a, rep_b), task.sample_id(n_typical, seed=seed)))
        acts = [model.run_with_cache(t.to(device), names_filter=lambda name: name in names)[1] for t in (x, r, typical)]
    rows = []
    for kind in kinds:
        for layer in range(model.cfg.n_layers):
            name = hook_name(kind, layer)
            ax, ar, at = (c[name].flatten(2) for c in acts)  # [n, pos, d]
            distance = (ax - ar).norm(dim=-1).mean(0) / at.norm(dim=-1).mean(0)  # [pos]
            rows += [(kind, layer, p, -1, -1, "relative_distance", float(d)) for p, d in enumerate(distance)]
    return pd.DataFrame(rows, columns=["kind", "layer", "position", "head", "answer_position", "measure", "value"])
