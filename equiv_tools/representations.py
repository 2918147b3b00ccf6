"""Activations at TransformerLens hook names, for comparing inputs' internal states."""
from __future__ import annotations

from typing import Optional

import torch

from .errors import InputError
from .tasks import Task


def default_hook(model) -> str:
    """The residual stream after the last layer."""
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


@torch.no_grad()
def hidden_states(model, task: Task, a, b, hook: Optional[str] = None, position: Optional[int] = None, batch_size: int = 4096) -> torch.Tensor:
    """Activations at ``hook`` and prompt ``position`` for the prompts of (a, b): [n, d] (float32, CPU).

    ``hook`` is a TransformerLens hook name whose activations are [batch, pos, ...]; trailing dims are flattened.

    Defaults: the residual stream after the last layer, at the last operand
    position (``prompt_len - 1``), where the model reads its first answer digit.
    """
    a, b = task.check_operands(a, b)
    hook = hook or default_hook(model)
    position = task.prompt_len - 1 if position is None else position
    if not 0 <= position < task.prompt_len:
        raise InputError(f"position must lie in [0, {task.prompt_len}), the prompt's positions; got {position}")
    names = set(model.hook_dict)
    if hook not in names:
        raise InputError(f"unknown hook {hook!r}; try one of {sorted(n for n in names if 'resid' in n)[:6]}")
    prompts = torch.from_numpy(task.encode_prompt(a, b))
    device = next(model.parameters()).device
    parts = []
    for start in range(0, len(prompts), batch_size):
        _, cache = model.run_with_cache(prompts[start : start + batch_size].to(device), names_filter=lambda name: name == hook)
        act = cache[hook]
        if act.dim() < 3 or act.shape[1] != prompts.shape[1]:
            raise InputError(
                f"hook {hook!r} gives activations of shape {tuple(act.shape)}; hidden_states takes hooks shaped "
                "[batch, pos, ...] such as hook_resid_post, hook_attn_out, hook_mlp_out or attn.hook_z"
            )
        parts.append(act[:, position].flatten(1).float().cpu())
    return torch.cat(parts) if parts else torch.empty(0)
