"""TransformerLens models: building them from presets, loading and writing run directories."""
from __future__ import annotations

import platform
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch
import transformer_lens.model_bridge.sources  # noqa: F401  (attaches TransformerBridge.boot_native)
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from equiv_tools.core.config import RunConfig
from equiv_tools.core.errors import InputError
from equiv_tools.core.rundir import RunDir
from equiv_tools.core.tasks import Task
from equiv_tools.forward.devices import resolve_device
from equiv_tools.runs.storage import load_tensors, save_tensors


def build_model(model_cfg: dict, device=None) -> TransformerBridge:
    """A freshly initialised TransformerBridge from a model config (see ``config.model_config``) on ``device`` (default CPU)."""
    return TransformerBridge.boot_native(TransformerBridgeConfig(**model_cfg), device=device)


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("equiv-tools", "torch", "transformer-lens", "numpy", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(command: Optional[list[str]] = None, **extra) -> dict:
    """Package versions and the command line that made a run."""
    argv = sys.argv if command is None else command
    return {"command": shlex.join(argv), "versions": package_versions(), **extra}


def check_weights(model: TransformerBridge, weights: dict[str, torch.Tensor], source: str) -> None:
    """Raise InputError unless ``weights`` has exactly the model's keys, shapes and a floating dtype."""
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(weights), set(weights) - set(expected)
    if missing or unexpected:
        raise InputError(
            f"{source} does not match the model in config.json: missing {sorted(missing)[:4]}, "
            f"unexpected {sorted(unexpected)[:4]}"
        )
    for key, tensor in sorted(weights.items()):  # sorted: the same first mismatch named every time
        if tensor.shape != expected[key].shape:
            raise InputError(
                f"{source} does not match the model in config.json: {key} has shape {tuple(tensor.shape)}, "
                f"the config expects {tuple(expected[key].shape)}"
            )
        if not tensor.dtype.is_floating_point:
            raise InputError(f"{source}: {key} has dtype {tensor.dtype}, expected a floating-point tensor")


def load_weights(model: TransformerBridge, path) -> None:
    weights = load_tensors(path)
    check_weights(model, weights, str(path))
    dtype = next(model.parameters()).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)


def save_weights(model: TransformerBridge, path) -> None:
    save_tensors(path, model.state_dict())


@dataclass(repr=False)
class Run:
    """A loaded run directory: its task, model (in eval mode) and config."""

    path: Path
    config: RunConfig
    model: TransformerBridge

    @property
    def task(self) -> Task:
        return self.config.task

    @property
    def dir(self) -> RunDir:
        """The run directory's files (config, metrics, checkpoints)."""
        return RunDir(self.path)

    def __repr__(self) -> str:
        preset = self.config.provenance.get("preset") or "imported"
        n_params = sum(p.numel() for p in self.model.parameters())
        return f"Run({self.path.name}: {self.task.describe()}, preset {preset}, {n_params:,} parameters, {self.path})"


def check_task_fits_model(task: Task, model_cfg: dict, source: str) -> None:
    """The task's layout must be the model's: same vocabulary, and the model's context is the task's sequence."""
    if model_cfg.get("d_vocab") != task.d_vocab or model_cfg.get("n_ctx") != task.n_ctx:
        raise InputError(
            f"{source}: the task {task.describe()} needs d_vocab={task.d_vocab} and n_ctx={task.n_ctx}, but the "
            f"model has d_vocab={model_cfg.get('d_vocab')} and n_ctx={model_cfg.get('n_ctx')}; the checkpoint was made for another task"
        )


def load_run(run_dir, device: str = "cpu", step: Optional[int] = None) -> Run:
    """Load a run directory, or a shipped run by name (``"add3_nano"``), onto ``device`` (cpu, cuda, cuda:N, auto).

    ``step`` loads checkpoint ``step`` of the series (``RunDir.checkpoint_steps()``) instead of the latest weights.
    """
    run_dir = RunDir.resolve(run_dir)
    config = run_dir.read_config()
    check_task_fits_model(config.task, config.model, str(run_dir.config_file))
    torch_device = resolve_device(device)
    try:
        model = build_model(config.model, device=torch_device)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{run_dir.config_file}: its model config cannot be built ({exc})") from None
    load_weights(model, run_dir.weights_file if step is None else run_dir.checkpoint_file(step))
    model.eval()
    return Run(run_dir.path, config, model)


def write_run(run_dir, config: RunConfig, model: TransformerBridge) -> Run:
    """Write a run directory without training history (config.json + model.safetensors)."""
    run_dir = RunDir(run_dir)
    run_dir.create(config)
    save_weights(model, run_dir.weights_file)
    model.eval()
    return Run(run_dir.path, config, model)
