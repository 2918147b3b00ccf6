"""A key for reusing what was computed from a model: it changes whenever the model could answer differently."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from equiv_tools.forward.lean import attached_hooks


@functools.lru_cache(maxsize=64)
def _position_weights(numel: int, device: str) -> torch.Tensor:
    """[numel] float64 weights from 1 to 2: a weighted sum changes when values move between positions."""
    return torch.linspace(1.0, 2.0, numel, dtype=torch.float64, device=device)


@torch.no_grad()
def weights_fingerprint(model) -> tuple[float, ...]:
    """One position-weighted float64 sum per parameter and buffer: it changes when any weight changes, however it
    was written (in place, through ``.data``, ``vector_to_parameters``, ``load_state_dict``). About 1 ms for the
    kit's models."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple(float(t.detach().reshape(-1).double() @ _position_weights(t.numel(), str(t.device))) for t in tensors)


def model_state(model) -> Optional[tuple]:
    """A key that changes when the model's weights, configuration or replaced ``forward`` methods change, or the
    model is replaced; None while hooks are attached (their effect cannot be keyed, so nothing computed under
    them may be reused)."""
    if attached_hooks(model):
        return None
    replaced = tuple((name, id(vars(module)["forward"])) for name, module in model.named_modules() if "forward" in vars(module))
    return id(model), weights_fingerprint(model), repr(sorted(model.cfg.to_dict().items())), replaced
