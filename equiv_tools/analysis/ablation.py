"""Head ablation: which answer digits break when one attention head's output is removed.

The ablation is a hook on ``blocks.{layer}.attn.hook_z`` ([batch, pos, n_heads, d_head]) that replaces one head's
output at every position, with zeros or with its mean over the inputs. Accuracy is teacher-forced per answer digit
(``score_digits``), through the bridge with the ablation and any hooks you attached.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task
from equiv_tools.forward.decoding import score_digits
from equiv_tools.analysis.patching import eval_mode, hook_name

ABLATIONS = ("zero", "mean")


def mean_head_output(model, task: Task, a, b, targets, layer: int) -> torch.Tensor:
    """Every head's output z at ``layer``, averaged over the teacher-forced inputs: [n_ctx, n_heads, d_head]."""
    name = hook_name("z", layer)
    tokens = torch.from_numpy(task.encode(a, b, targets))[:, : task.n_ctx].to(next(model.parameters()).device)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    return cache[name].mean(0)


def head_ablation_hook(layer: int, head: int, mean: Optional[torch.Tensor] = None) -> tuple[str, Callable]:
    """(hook name, hook) replacing head ``head``'s z at every position with zeros, or with ``mean`` [n_ctx, n_heads, d_head]."""
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0 if mean is None else mean[: z.shape[1], head].to(z.dtype)
        return z

    return hook_name("z", layer), hook


def head_ablation(model, task: Task, a, b, heads: Optional[Sequence[tuple[int, int]]] = None, ablation: str = "zero",
                  targets=None) -> pd.DataFrame:
    """Per-answer-digit accuracy with each head of ``heads`` ((layer, head) pairs; default: every head) ablated alone.

    ``targets``: the answers scored against (default: the truth). Tidy: one row per (layer, head, answer digit) with
    ``digit`` (its place: ``10^0`` is the units), ``read_at`` (the position whose logits give it: ``ans[10^1]`` for
    the hundreds digit), ``accuracy``, ``intact`` (the accuracy without ablation) and ``accuracy_drop`` (intact - accuracy).
    """
    if ablation not in ABLATIONS:
        raise InputError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)] if heads is None else list(heads)
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise InputError(f"no head {head} in layer {layer}: the model has {n_layers} layers of {n_heads} heads")
    a, b = task.check_operands(a, b)
    targets = task.truth(a, b) if targets is None else np.asarray(targets, dtype=np.int64)
    names = task.position_names()[task.prompt_len - 1 : task.prompt_len - 1 + task.answer_len]  # where each digit is read
    rows = []
    with eval_mode(model):
        intact = score_digits(model, task, a, b, targets).mean(0)  # [answer_len]
        means = {layer: mean_head_output(model, task, a, b, targets, layer) for layer in {l for l, _ in heads}} if ablation == "mean" else {}
        for layer, head in heads:
            with model.hooks(fwd_hooks=[head_ablation_hook(layer, head, means.get(layer))]):
                accuracy = score_digits(model, task, a, b, targets).mean(0)
            rows += [{"layer": layer, "head": head, "digit": f"10^{k}", "read_at": name, "accuracy": float(acc),
                      "intact": float(base), "accuracy_drop": float(base - acc)}
                     for k, (name, acc, base) in enumerate(zip(names, accuracy, intact))]
    return pd.DataFrame(rows)
