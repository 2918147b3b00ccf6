"""Activations at TransformerLens hook names, for comparing inputs' internal states."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task


def default_hook(model) -> str:
    """The residual stream after the last layer."""
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def residual_hooks(model) -> list[str]:
    """The residual stream at every depth: ``blocks.0.hook_resid_pre``, then each layer's ``hook_resid_post``."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]


@torch.no_grad()
def hidden_states_at(model, task: Task, a, b, hooks: Sequence[str], position: Optional[int] = None, batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """Activations at each of ``hooks`` and prompt ``position`` for the prompts of (a, b): hook -> [n, d] (float32, CPU).

    One ``run_with_cache`` pass per batch, so the user's hooks apply. Each hook's activations
    must be [batch, pos, ...]; trailing dims are flattened. ``position`` defaults to the last
    operand position (``prompt_len - 1``), where the model reads its first answer digit.
    """
    a, b = task.check_operands(a, b)
    hooks = list(hooks)
    position = task.prompt_len - 1 if position is None else position
    if not 0 <= position < task.prompt_len:
        raise InputError(f"position must lie in [0, {task.prompt_len}), the prompt's positions; got {position}")
    names = set(model.hook_dict)
    for hook in hooks:
        if hook not in names:
            raise InputError(f"unknown hook {hook!r}; try one of {sorted(n for n in names if 'resid' in n)[:6]}")
    prompts = torch.from_numpy(task.encode_prompt(a, b))
    device = next(model.parameters()).device
    parts: dict[str, list] = {hook: [] for hook in hooks}
    wanted = set(hooks)
    for start in range(0, len(prompts), batch_size):
        _, cache = model.run_with_cache(prompts[start : start + batch_size].to(device), names_filter=lambda name: name in wanted)
        for hook in hooks:
            act = cache[hook]
            if act.dim() < 3 or act.shape[1] != prompts.shape[1]:
                raise InputError(
                    f"hook {hook!r} gives activations of shape {tuple(act.shape)}; hidden states need hooks shaped "
                    "[batch, pos, ...] such as hook_resid_post, hook_attn_out, hook_mlp_out or attn.hook_z"
                )
            parts[hook].append(act[:, position].flatten(1).float().cpu())
    return {hook: torch.cat(p) if p else torch.empty(0) for hook, p in parts.items()}


def hidden_states(model, task: Task, a, b, hook: Optional[str] = None, position: Optional[int] = None, batch_size: int = 4096) -> torch.Tensor:
    """Activations at one ``hook`` (default: the last layer's residual stream) and prompt ``position``: [n, d]."""
    hook = hook or default_hook(model)
    return hidden_states_at(model, task, a, b, [hook], position, batch_size)[hook]
