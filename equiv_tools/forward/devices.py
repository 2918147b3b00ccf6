"""Where models run: ``cpu`` (the default), ``cuda``, ``cuda:N`` or ``auto`` (CUDA when there is one, else CPU)."""
from __future__ import annotations

import torch

from equiv_tools.core.errors import InputError

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"


def resolve_device(spec: str = "cpu") -> torch.device:
    """The torch device for ``spec``; InputError if it names CUDA where there is none, or is not a device name."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r} asked for, but torch finds no CUDA GPU here; use --device cpu (or auto)")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return torch.device("cuda", index)
    raise InputError(f"unknown device {spec!r}; choose {DEVICE_CHOICES}")
