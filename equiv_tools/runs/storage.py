"""Named tensors in safetensors files, written atomically and read with validation (never unpickled)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from equiv_tools.core.errors import InputError
from equiv_tools.core.files import atomic_write_bytes


def save_tensors(path, tensors: dict[str, torch.Tensor]) -> None:
    """Save named tensors as safetensors, atomically."""
    data = save_safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write_bytes(path, data)


def load_tensors(path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupted file raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is missing")
    try:
        return load_safetensors_bytes(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise InputError(f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupted") from None
