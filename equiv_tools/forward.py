"""The one fast forward: a lean, hook-free pass over a TransformerBridge's weights, and when it may stand in.

The TransformerBridge is the reference. ``LeanModel`` computes the same logits
(the same arithmetic in a leaner order: equal to float rounding, about 1e-6) with less overhead and a KV cache, but only for
configurations it implements and only while no hook is attached: hooks change
what the bridge computes, and the lean forward has none. ``fast_path_blocker``
says whether it may be used; every kit function that runs a model asks it first
and runs the bridge otherwise.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import torch.nn.modules.module as torch_module
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.hook_points import HookPoint

_ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}

# Settings the lean forward implements, with the values it implements. Every other
# config field must either be free (sizes and metadata, read from the weights) or
# hold TransformerBridgeConfig's default; anything else runs on the bridge.
FAST_PATH_SETTINGS = {
    "act_fn": tuple(_ACTIVATIONS),
    "normalization_type": ("LN", None),
}
FREE_FIELDS = frozenset({
    "n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx", "eps", "seed",
    "architecture", "model_name", "initializer_range", "init_mode", "init_weights", "n_params", "device",
})
_DEFAULTS = TransformerBridgeConfig(d_model=8, d_head=4, n_layers=1, n_ctx=4, n_heads=2, d_vocab=4).to_dict()
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks")
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def unsupported_settings(cfg) -> dict:
    """Config fields (name -> value) that the lean forward does not implement; empty when it computes the bridge's forward."""
    out = {}
    for name, value in cfg.to_dict().items():
        if name in FAST_PATH_SETTINGS:
            if value not in FAST_PATH_SETTINGS[name]:
                out[name] = value
        elif name not in FREE_FIELDS and name in _DEFAULTS and value != _DEFAULTS[name]:
            out[name] = value
    return out


def attached_hooks(model) -> list[str]:
    """Names of the modules of ``model`` that carry a user's hook, plus ``"<global>"`` for torch's global module hooks.

    Hooks on HookPoints (``add_hook``, ``hooks()``, ``run_with_hooks``, raw torch hooks) count; so do
    torch hooks on other modules unless TransformerLens itself put them there (the bridge wires a
    few internal pre-hooks on its first forward).
    """
    names = ["<global>"] if any(getattr(torch_module, g) for g in _GLOBAL_HOOKS) else []
    for name, module in model.named_modules():
        hooks = [h for attr in _MODULE_HOOKS for h in getattr(module, attr).values()]
        if not isinstance(module, HookPoint):
            hooks = [h for h in hooks if not (getattr(h, "__module__", None) or "").startswith("transformer_lens.")]
        if hooks:
            names.append(name)
    return names


def fast_path_blocker(model) -> Optional[str]:
    """Why the lean forward may not stand in for ``model`` (hooks attached, or a setting it lacks), or None if it may."""
    hooks = attached_hooks(model)
    if hooks:
        return f"hooks are attached ({', '.join(hooks[:3])}{', ...' if len(hooks) > 3 else ''})"
    unsupported = unsupported_settings(model.cfg)
    if unsupported:
        return "the lean forward does not implement " + ", ".join(f"{k}={v!r}" for k, v in unsupported.items())
    return None




class LeanModel:
    """A hook-free forward pass over a TransformerBridge's current weights, with an optional KV cache.

    Its logits match the bridge's to float rounding (about 1e-6) where
    ``fast_path_blocker(model)`` is None; elsewhere it computes another model.
    Build it again after the weights change: it copies the fused q/k/v weights.
    """

    def __init__(self, model):
        cfg = model.cfg
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        self.n_heads, self.d_head, self.eps = cfg.n_heads, cfg.d_head, cfg.eps
        self.act = _ACTIVATIONS[cfg.act_fn]
        self.device = sd["embed.weight"].device
        self.embed, self.pos = sd["embed.weight"], sd["pos_embed.weight"]
        self.layers = []
        for i in range(cfg.n_layers):
            p = f"blocks.{i}."
            self.layers.append(
                dict(
                    ln1=(sd.get(p + "ln1.weight"), sd.get(p + "ln1.bias")),
                    qkv_w=torch.cat([sd[p + f"attn.{x}.weight"] for x in "qkv"]),
                    qkv_b=torch.cat([sd[p + f"attn.{x}.bias"] for x in "qkv"]),
                    o=(sd[p + "attn.o.weight"], sd[p + "attn.o.bias"]),
                    ln2=(sd.get(p + "ln2.weight"), sd.get(p + "ln2.bias")),
                    mlp_in=(sd[p + "mlp.in.weight"], sd[p + "mlp.in.bias"]),
                    mlp_out=(sd[p + "mlp.out.weight"], sd[p + "mlp.out.bias"]),
                )
            )
        self.ln_final = (sd.get("ln_final.weight"), sd.get("ln_final.bias"))
        self.unembed = (sd["unembed.weight"], sd.get("unembed.bias"))
        self.layer_norm = cfg.normalization_type == "LN"

    def _norm(self, x, wb):
        return F.layer_norm(x, x.shape[-1:], wb[0], wb[1], self.eps) if self.layer_norm else x

    def __call__(self, tokens: torch.Tensor, cache: Optional[list] = None, last_only: bool = False) -> torch.Tensor:
        """Logits [batch, pos, d_vocab_out] for ``tokens`` [batch, pos].

        With ``cache`` (a list, filled on the first call), ``tokens`` continue
        the cached prefix: the first call takes the prompt, later calls one
        position each. ``last_only`` returns logits for the last position only.
        """
        batch, n_new = tokens.shape
        start = cache[0][0].shape[2] if cache else 0
        h = self.embed[tokens] + self.pos[start : start + n_new]
        for i, layer in enumerate(self.layers):
            y = self._norm(h, layer["ln1"])
            q, k, v = F.linear(y, layer["qkv_w"], layer["qkv_b"]).view(batch, n_new, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
            if cache is not None:
                if len(cache) > i:
                    k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
                    cache[i] = (k, v)
                else:
                    cache.append((k, v))
            causal = n_new > 1
            if causal and start > 0:
                raise ValueError("LeanModel continues a cache one position at a time")
            z = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            h = h + F.linear(z.transpose(1, 2).reshape(batch, n_new, -1), *layer["o"])
            y = self._norm(h, layer["ln2"])
            h = h + F.linear(self.act(F.linear(y, *layer["mlp_in"])), *layer["mlp_out"])
        if last_only:
            h = h[:, -1:]
        return F.linear(self._norm(h, self.ln_final), *self.unembed)
