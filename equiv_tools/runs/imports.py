"""Foreign checkpoints as kit runs: the paper's minGPT adders, and Nanda et al.'s (2023) grokking models.

minGPT (``load_mingpt``, ``import_mingpt``): see ``mingpt_to_bridge`` for the mapping.

Nanda et al.'s grokking format (``load_grokking``, ``import_grokking``; one layer, 4 heads of
width 32, d_model 128, d_mlp 512, ReLU, no LayerNorm, learned positions for the 3 tokens ``a b =``, causal attention
scaled by 1/sqrt(d_head), no attention biases, no unembedding bias) is the
kit's ``grokking`` preset exactly, so the imported run's model config is that
preset's, sized by the task (d_vocab = d_vocab_out = p + 1). Only the weights'
orientation differs; the mapping (source [shape] -> bridge [shape]) is:

=============================  =====================  ==================================
source                          shape                  bridge (nn.Linear: out x in)
=============================  =====================  ==================================
embed.W_E                       [d_model, vocab]       embed.weight [vocab, d_model] (.T)
pos_embed.W_pos                 [n_ctx, d_model]       pos_embed.weight (as is)
blocks.0.attn.W_Q/W_K/W_V       [heads, d_head, d_m]   attn.q/k/v.weight [heads*d_head, d_m]
blocks.0.attn.W_O               [d_m, heads*d_head]    attn.o.weight (as is)
blocks.0.mlp.W_in, b_in         [d_mlp, d_m], [d_mlp]  mlp.in.weight, mlp.in.bias
blocks.0.mlp.W_out, b_out       [d_m, d_mlp], [d_m]    mlp.out.weight, mlp.out.bias
unembed.W_U                     [d_model, vocab_out]   unembed.weight [vocab_out, d_m] (.T)
=============================  =====================  ==================================

The bridge's attention biases (q, k, v, o) and unembedding bias, which the
format lacks, are set to zero.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import torch

from equiv_tools.core.config import PRESETS, RunConfig, model_config
from equiv_tools.core.errors import InputError
from equiv_tools.core.files import read_json
from equiv_tools.core.tasks import ModularTask, Task
from equiv_tools.forward.devices import resolve_device
from equiv_tools.runs.models import Run, build_model, check_task_fits_model, check_weights, provenance, write_run
from equiv_tools.runs.storage import load_tensors

GROKKING_FORMAT = "nanda-grokking"
GROKKING_KEYS = (
    "embed.W_E", "pos_embed.W_pos", "unembed.W_U",
    "blocks.0.attn.W_Q", "blocks.0.attn.W_K", "blocks.0.attn.W_V", "blocks.0.attn.W_O",
    "blocks.0.mlp.W_in", "blocks.0.mlp.b_in", "blocks.0.mlp.W_out", "blocks.0.mlp.b_out",
)
FN_NAMES = {"add": "add"}  # the source config's fn_name -> ModularTask.op; other functions of the paper have no kit task
# The source config's model fields -> the value the kit's ``grokking`` preset has (``p`` stands for the modulus).
GROKKING_MODEL_FIELDS = {
    "num_layers": PRESETS["grokking"]["n_layers"], "num_heads": PRESETS["grokking"]["n_heads"],
    "d_model": PRESETS["grokking"]["d_model"], "d_head": PRESETS["grokking"]["d_head"], "d_mlp": PRESETS["grokking"]["d_mlp"],
    "act_type": "ReLU", "use_ln": False, "n_ctx": 3, "d_vocab": "p + 1",
}


def grokking_shapes(p: int) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of Nanda et al.'s model at the ``grokking`` preset's size, for modulus ``p``."""
    g = PRESETS["grokking"]
    d_model, heads, d_head, d_mlp, vocab = g["d_model"], g["n_heads"], g["d_head"], g["d_mlp"], p + 1
    return {
        "embed.W_E": (d_model, vocab), "pos_embed.W_pos": (3, d_model), "unembed.W_U": (d_model, vocab),
        **{f"blocks.0.attn.W_{x}": (heads, d_head, d_model) for x in "QKV"}, "blocks.0.attn.W_O": (d_model, heads * d_head),
        "blocks.0.mlp.W_in": (d_mlp, d_model), "blocks.0.mlp.b_in": (d_mlp,),
        "blocks.0.mlp.W_out": (d_model, d_mlp), "blocks.0.mlp.b_out": (d_model,),
    }


def read_grokking_config(path) -> dict:
    """The task fields from the run's config JSON: ``{"p": ..., "op": ..., "train_fraction": ...}`` (those present)."""
    source = read_json(path)
    if not isinstance(source, dict) or "p" not in source:
        raise InputError(f"{path} is not a grokking run config: it has no field 'p'")
    fields = {"p": source["p"]}
    for name, expected in GROKKING_MODEL_FIELDS.items():
        if expected == "p + 1":
            expected = source["p"] + 1 if isinstance(source["p"], int) else None
        value = source.get(name, expected)
        same = value.lower() == expected.lower() if isinstance(value, str) and isinstance(expected, str) else value == expected
        if not same or type(value) is not type(expected):
            raise InputError(f"{path}: {name} is {value!r}, but the kit imports Nanda et al.'s model as its grokking preset, "
                             f"which has {name} = {expected!r}; this config describes another model")
    if "fn_name" in source:
        if source["fn_name"] not in FN_NAMES:
            raise InputError(f"{path}: fn_name {source['fn_name']!r} has no kit task; the kit imports {sorted(FN_NAMES)}")
        fields["op"] = FN_NAMES[source["fn_name"]]
    if "frac_train" in source:
        if not isinstance(source["frac_train"], (int, float)) or isinstance(source["frac_train"], bool):
            raise InputError(f"{path}: frac_train must be a number, got {source['frac_train']!r}")
        fields["train_fraction"] = source["frac_train"]
    return fields


def grokking_to_bridge(state: dict[str, torch.Tensor], source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """Map a state dict in Nanda et al.'s naming onto the bridge's keys (see the module docstring's table).

    Missing keys and keys the mapping does not use are refused: a dropped weight would change the model silently.
    """
    missing = [k for k in GROKKING_KEYS if k not in state]
    unused = sorted(set(state) - set(GROKKING_KEYS))
    if missing:
        raise InputError(f"{source} is not a grokking checkpoint in Nanda et al.'s format: it lacks {missing[:6]}")
    if unused:
        raise InputError(f"{source} holds weights the grokking mapping does not use: {unused[:6]}; it is not the one-layer "
                         "format the kit imports (no LayerNorm, no attention or unembedding biases)")
    for key, shape in grokking_shapes(int(state["embed.W_E"].shape[-1]) - 1).items():
        if tuple(state[key].shape) != shape:
            raise InputError(f"{source}: {key} has shape {tuple(state[key].shape)}, but the grokking preset (n_heads="
                             f"{PRESETS['grokking']['n_heads']}, d_head={PRESETS['grokking']['d_head']}, d_model="
                             f"{PRESETS['grokking']['d_model']}, d_mlp={PRESETS['grokking']['d_mlp']}) needs {shape}; "
                             "the kit imports Nanda et al.'s model size only")
    w = {k: v.float() for k, v in state.items()}
    heads_d_model = lambda t: t.reshape(-1, t.shape[-1])  # [heads, d_head, d_model] -> [heads*d_head, d_model], heads in order
    d_model = w["embed.W_E"].shape[0]
    out = {
        "embed.weight": w["embed.W_E"].T,  # [vocab, d_model]
        "pos_embed.weight": w["pos_embed.W_pos"],  # [n_ctx, d_model]
        "blocks.0.attn.q.weight": heads_d_model(w["blocks.0.attn.W_Q"]),
        "blocks.0.attn.k.weight": heads_d_model(w["blocks.0.attn.W_K"]),
        "blocks.0.attn.v.weight": heads_d_model(w["blocks.0.attn.W_V"]),
        "blocks.0.attn.o.weight": w["blocks.0.attn.W_O"],  # [d_model, heads*d_head]
        "blocks.0.mlp.in.weight": w["blocks.0.mlp.W_in"],  # [d_mlp, d_model]
        "blocks.0.mlp.in.bias": w["blocks.0.mlp.b_in"],
        "blocks.0.mlp.out.weight": w["blocks.0.mlp.W_out"],  # [d_model, d_mlp]
        "blocks.0.mlp.out.bias": w["blocks.0.mlp.b_out"],
        "unembed.weight": w["unembed.W_U"].T,  # [vocab_out, d_model]
        "unembed.bias": torch.zeros(w["unembed.W_U"].shape[1]),
    }
    for name in ("q", "k", "v"):
        out[f"blocks.0.attn.{name}.bias"] = torch.zeros(out[f"blocks.0.attn.{name}.weight"].shape[0])
    out["blocks.0.attn.o.bias"] = torch.zeros(d_model)
    return {k: v.contiguous() for k, v in out.items()}


def _imported_run(src: Path, task, cfg: dict, weights: dict[str, torch.Tensor], command, device=None, **source) -> Run:
    """A Run of ``weights`` (a bridge state dict, checked against the model) on a model built from ``cfg``, in eval
    mode, with no training config; its provenance records the file (name, sha256) and ``source``."""
    model = build_model(cfg, device=device)
    check_weights(model, weights, str(src))
    model.load_state_dict(weights, strict=True)
    model.eval()
    prov = provenance(command, imported_from=src.name, sha256=hashlib.sha256(src.read_bytes()).hexdigest(), **source)
    return Run(src, RunConfig(task, cfg, None, prov), model)


def load_grokking(src, config: Optional[str] = None, command: Optional[list[str]] = None) -> Run:
    """Load Nanda et al.'s grokked model (``WEIGHTS.safetensors``) in memory as a Run on the ``grokking`` preset, on the CPU.

    The task is ``ModularTask(p=...)``, p read from ``config`` (the run's config JSON) when given, else from the
    embedding: vocab = p + 1. The source's own training split is not reproduced, so the run has no training config.
    """
    src = Path(src)
    if not src.is_file():
        raise InputError(f"{src} does not exist")
    state = load_tensors(src)
    task_fields = {} if config is None else read_grokking_config(config)
    if "embed.W_E" in state and "p" not in task_fields:
        task_fields["p"] = int(state["embed.W_E"].shape[1]) - 1
    weights = grokking_to_bridge(state, str(src))
    task = ModularTask(**task_fields)  # checks p and the train fraction
    vocab = weights["embed.weight"].shape[0]
    if vocab != task.d_vocab:
        raise InputError(f"{src}: the embedding has {vocab} tokens, but p = {task.p} (from {config}) needs p + 1 = "
                         f"{task.d_vocab}; the config belongs to another model")
    return _imported_run(src, task, model_config(task, "grokking"), weights, command, format=GROKKING_FORMAT, preset="grokking",
                         **({"source_config": Path(config).name} if config is not None else {}))


def import_grokking(src, out_dir, config: Optional[str] = None, command: Optional[list[str]] = None) -> Run:
    """Import Nanda et al.'s grokked model as a run directory ``out_dir`` (config.json + model.safetensors)."""
    run = load_grokking(src, config, command)
    return write_run(out_dir, run.config, run.model)


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
    return _imported_run(src, task, cfg, weights, command, device=resolve_device(device), format="minGPT")


def import_mingpt(src, out_dir, task: Task, n_heads: int = 3, command: Optional[list[str]] = None) -> Run:
    """Import a minGPT checkpoint as a run directory ``out_dir`` (config.json + model.safetensors)."""
    run = load_mingpt(src, task, n_heads, command)
    return write_run(out_dir, run.config, run.model)
