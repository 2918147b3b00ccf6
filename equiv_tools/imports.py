"""Foreign grokking checkpoints: Nanda et al.'s (2023) modular-addition models as kit runs.

The format (one layer, 4 heads of width 32, d_model 128, d_mlp 512, ReLU, no
LayerNorm, learned positions for the 3 tokens ``a b =``, causal attention
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
format lacks, are set to zero. minGPT's importer lives in ``models``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import torch

from .config import RunConfig, model_config
from .errors import InputError
from .models import Run, build_model, check_weights, provenance, write_run
from .storage import load_tensors, read_json
from .tasks import ModularTask

GROKKING_FORMAT = "nanda-grokking"
GROKKING_KEYS = (
    "embed.W_E", "pos_embed.W_pos", "unembed.W_U",
    "blocks.0.attn.W_Q", "blocks.0.attn.W_K", "blocks.0.attn.W_V", "blocks.0.attn.W_O",
    "blocks.0.mlp.W_in", "blocks.0.mlp.b_in", "blocks.0.mlp.W_out", "blocks.0.mlp.b_out",
)
FN_NAMES = {"add": "add"}  # the source config's fn_name -> ModularTask.op; other functions of the paper have no kit task


def read_grokking_config(path) -> dict:
    """The task fields from the run's config JSON: ``{"p": ..., "op": ..., "train_fraction": ...}`` (those present)."""
    source = read_json(path)
    if not isinstance(source, dict) or "p" not in source:
        raise InputError(f"{path} is not a grokking run config: it has no field 'p'")
    fields = {"p": source["p"]}
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
    cfg = model_config(task, "grokking")
    model = build_model(cfg)
    check_weights(model, weights, str(src))
    model.load_state_dict(weights, strict=True)
    model.eval()
    prov = provenance(command, imported_from=src.name, sha256=hashlib.sha256(src.read_bytes()).hexdigest(),
                      format=GROKKING_FORMAT, preset="grokking",
                      **({"source_config": Path(config).name} if config is not None else {}))
    return Run(src, RunConfig(task, cfg, None, prov), model)


def import_grokking(src, out_dir, config: Optional[str] = None, command: Optional[list[str]] = None) -> Run:
    """Import Nanda et al.'s grokked model as a run directory ``out_dir`` (config.json + model.safetensors)."""
    run = load_grokking(src, config, command)
    return write_run(out_dir, run.config, run.model)
