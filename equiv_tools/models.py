"""TransformerLens models: building them from presets, loading run directories, importing minGPT files."""
from __future__ import annotations

import hashlib
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

from .config import RunConfig, require_new_run_dir
from .devices import resolve_device
from .errors import InputError
from .paths import shipped_data_dir, shipped_runs
from .storage import atomic_write_bytes, load_tensors, save_tensors
from .tasks import Task

WEIGHTS_FILE = "model.safetensors"


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

    def __repr__(self) -> str:
        preset = self.config.provenance.get("preset") or "imported"
        n_params = sum(p.numel() for p in self.model.parameters())
        return f"Run({self.path.name}: {self.task.describe()}, preset {preset}, {n_params:,} parameters, {self.path})"


def checkpoint_path(step: int) -> str:
    """The weights file of checkpoint ``step`` inside a run directory: ``checkpoints/step_NNNNNN.safetensors``."""
    return f"checkpoints/step_{step:06d}.safetensors"


def checkpoint_steps(run_dir) -> list[int]:
    """The steps of a run's saved weight series, ascending (``[]`` for imported runs)."""
    folder = resolve_run_dir(run_dir) / "checkpoints"
    names = (p.name.removesuffix(".safetensors") for p in folder.glob("step_*.safetensors") if ".optimizer." not in p.name)
    return sorted(int(name.removeprefix("step_")) for name in names if name.removeprefix("step_").isdigit())


def check_task_fits_model(task: Task, model_cfg: dict, source: str) -> None:
    """The task's layout must be the model's: same vocabulary, and the model's context is the task's sequence."""
    if model_cfg.get("d_vocab") != task.d_vocab or model_cfg.get("n_ctx") != task.n_ctx:
        raise InputError(
            f"{source}: the task {task.describe()} needs d_vocab={task.d_vocab} and n_ctx={task.n_ctx}, but the "
            f"model has d_vocab={model_cfg.get('d_vocab')} and n_ctx={model_cfg.get('n_ctx')}; the checkpoint was made for another task"
        )


def resolve_run_dir(run_dir) -> Path:
    """``run_dir`` itself if it exists; else a plain name (``"add3_nano"``) names a shipped run (see ``shipped_data_dir``)."""
    path = Path(run_dir)
    if path.exists() or path.name != str(run_dir):
        return path
    data_dir = shipped_data_dir()
    if (data_dir / path.name).is_dir():
        return data_dir / path.name
    names = ", ".join(shipped_runs(data_dir)) or "none"
    raise InputError(f"run directory {str(run_dir)!r} does not exist, and it is not a shipped run in {data_dir} (those are: {names})")


def load_run(run_dir, device: str = "cpu", weights: Optional[str] = None) -> Run:
    """Load a run directory, or a shipped run by name (``"add3_nano"``), onto ``device`` (cpu, cuda, cuda:N, auto).

    ``weights`` picks a file inside it (default ``model.safetensors``).
    """
    run_dir = resolve_run_dir(run_dir)
    config = RunConfig.read(run_dir)
    check_task_fits_model(config.task, config.model, str(run_dir / "config.json"))
    torch_device = resolve_device(device)
    try:
        model = build_model(config.model, device=torch_device)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{run_dir / 'config.json'}: its model config cannot be built ({exc})") from None
    load_weights(model, run_dir / (weights or WEIGHTS_FILE))
    model.eval()
    return Run(run_dir, config, model)


def write_run(run_dir, config: RunConfig, model: TransformerBridge) -> Run:
    """Write a run directory without training history (config.json + model.safetensors)."""
    run_dir = Path(run_dir)
    require_new_run_dir(run_dir, "pick a new output directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.json", config.to_json().encode())
    save_weights(model, run_dir / WEIGHTS_FILE)
    model.eval()
    return Run(run_dir, config, model)


# --- minGPT import -----------------------------------------------------------------------------

def _read_mingpt(src: Path) -> dict[str, torch.Tensor]:
    if not src.is_file():
        raise InputError(f"{src} does not exist")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign bytes; all mean "not a checkpoint"
        raise InputError(
            f"{src} is not a minGPT checkpoint: torch.load(weights_only=True) could not read it ({type(exc).__name__}); "
            "it is not a PyTorch file, or it holds objects other than tensors, which the kit never unpickles"
        ) from None
    if not isinstance(state, dict) or "transformer.wte.weight" not in state or "lm_head.weight" not in state:
        raise InputError(f"{src} is not a minGPT checkpoint: it lacks transformer.wte.weight and lm_head.weight")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{src} is not a minGPT checkpoint: it holds values that are not tensors")
    return state


MINGPT_MASK_BUFFER = ".attn.bias"  # transformer.h.{i}.attn.bias: minGPT's causal mask, not a weight


def mingpt_to_bridge(state: dict[str, torch.Tensor], n_heads: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """Map a minGPT state dict onto (model config fields, bridge state dict).

    minGPT: pre-LN blocks, ``c_attn`` [3*d_model, d_model] = q, k, v stacked (nn.Linear, out x in),
    tanh GELU, learned positions, final LayerNorm, ``lm_head`` without bias. A source key that the
    mapping does not use (other than the causal-mask buffers) is refused: it would be silently dropped.
    """
    d_vocab, d_model = state["transformer.wte.weight"].shape
    n_ctx = state["transformer.wpe.weight"].shape[0]
    n_layers = len({k.split(".")[2] for k in state if k.startswith("transformer.h.")})
    if d_model % n_heads:
        raise InputError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    d_mlp = state["transformer.h.0.mlp.c_fc.weight"].shape[0]
    cfg = dict(
        n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_model // n_heads, d_mlp=d_mlp,
        act_fn="gelu_new", normalization_type="LN", eps=1e-5, seed=0,
        n_ctx=n_ctx, d_vocab=d_vocab, d_vocab_out=state["lm_head.weight"].shape[0],
    )
    out = {
        "embed.weight": state["transformer.wte.weight"],
        "pos_embed.weight": state["transformer.wpe.weight"],
        "ln_final.weight": state["transformer.ln_f.weight"],
        "ln_final.bias": state["transformer.ln_f.bias"],
        "unembed.weight": state["lm_head.weight"],
        "unembed.bias": torch.zeros(state["lm_head.weight"].shape[0]),
    }
    for i in range(n_layers):
        src, dst = f"transformer.h.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            q, k, v = state[src + f"attn.c_attn.{part}"].chunk(3, dim=0)
            out.update({dst + f"attn.q.{part}": q, dst + f"attn.k.{part}": k, dst + f"attn.v.{part}": v})
            out[dst + f"attn.o.{part}"] = state[src + f"attn.c_proj.{part}"]
            out[dst + f"ln1.{part}"] = state[src + f"ln_1.{part}"]
            out[dst + f"ln2.{part}"] = state[src + f"ln_2.{part}"]
            out[dst + f"mlp.in.{part}"] = state[src + f"mlp.c_fc.{part}"]
            out[dst + f"mlp.out.{part}"] = state[src + f"mlp.c_proj.{part}"]
    used = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"}
    used |= {f"transformer.h.{i}.{part}" for i in range(n_layers) for part in _MINGPT_BLOCK_KEYS}
    unused = sorted(k for k in state if k not in used and not (k.startswith("transformer.h.") and k.endswith(MINGPT_MASK_BUFFER)))
    if unused:
        raise InputError(f"it holds weights the minGPT mapping does not use: {unused[:6]}; it is not the minGPT layout the kit imports")
    return cfg, {k: v.float().contiguous() for k, v in out.items()}


_MINGPT_BLOCK_KEYS = tuple(
    f"{module}.{part}" for module in ("attn.c_attn", "attn.c_proj", "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj") for part in ("weight", "bias")
)


def load_mingpt(src, task: Task, n_heads: int = 3, command: Optional[list[str]] = None, device: str = "cpu") -> Run:
    """Load a minGPT checkpoint (e.g. the paper's ``model_s2.pt``) in memory as a Run for ``task``, on ``device``.

    The file is read with ``torch.load(..., map_location="cpu", weights_only=True)``; nothing else is unpickled.
    ``n_heads`` cannot be read from the weights' shapes: minGPT's gpt-nano has 3.
    """
    src = Path(src)
    state = _read_mingpt(src)
    try:
        cfg, weights = mingpt_to_bridge(state, n_heads)
    except KeyError as exc:
        raise InputError(f"{src} is not a complete minGPT checkpoint: it lacks {exc}") from None
    except InputError as exc:
        raise InputError(f"{src}: {exc}") from None
    check_task_fits_model(task, cfg, str(src))
    model = build_model(cfg, device=resolve_device(device))
    check_weights(model, weights, str(src))
    model.load_state_dict(weights, strict=True)
    model.eval()
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    prov = provenance(command, imported_from=src.name, sha256=sha, format="minGPT")
    return Run(src, RunConfig(task, cfg, None, prov), model)


def import_mingpt(src, out_dir, task: Task, n_heads: int = 3, command: Optional[list[str]] = None) -> Run:
    """Import a minGPT checkpoint as a run directory ``out_dir`` (config.json + model.safetensors)."""
    run = load_mingpt(src, task, n_heads, command)
    return write_run(out_dir, run.config, run.model)
