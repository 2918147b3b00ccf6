"""The one fast forward: a lean, hook-free pass over a TransformerBridge's weights, and when it may stand in.

The TransformerBridge is the reference. ``LeanModel`` computes the same logits
(the same arithmetic in a leaner order: equal to float rounding, about 1e-6) with less overhead and a KV cache, but only for
configurations it implements and only while no hook is attached: hooks change
what the bridge computes, and the lean forward has none.

Every kit function that runs a model asks ``lean_forward(model)``. It checks two things, and returns
None (run the bridge) where either fails:

* ``fast_path_blocker``, the cheap gate: no hook attached, float32 or float64 parameters, and a
  configuration the lean forward implements;
* a probe: a few sequences of random tokens through both the lean forward and the bridge, whose
  logits must agree to float32 rounding. It catches what no list of settings names: a submodule's
  ``forward`` replaced by hand, a ``cfg`` edited after the model was built, and the like.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
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


LEAN_DTYPES = (torch.float32, torch.float64)


def fast_path_blocker(model) -> Optional[str]:
    """Why the lean forward may not stand in for ``model`` (hooks attached, parameters of a dtype it does not run,
    or a setting it lacks), or None if it may. The cheap first gate; ``lean_forward`` also probes."""
    hooks = attached_hooks(model)
    if hooks:
        return f"hooks are attached ({', '.join(hooks[:3])}{', ...' if len(hooks) > 3 else ''})"
    dtype = next(model.parameters()).dtype  # the parameters', not cfg.dtype: .half() leaves cfg as it was
    if dtype not in LEAN_DTYPES:
        return f"the parameters are {dtype}; the lean forward runs float32 and float64"
    unsupported = unsupported_settings(model.cfg)
    if unsupported:
        return "the lean forward does not implement " + ", ".join(f"{k}={v!r}" for k, v in unsupported.items())
    return None


PROBE_ROWS = 4  # random sequences the probe runs through both forwards
PROBE_TOLERANCE = 1e-4  # relative to the largest logit: float32 rounding of these models is about 1e-6


@torch.no_grad()
def probe_gap(lean: "LeanModel", model) -> float:
    """The largest difference between the lean forward's logits and the bridge's on ``PROBE_ROWS`` random full-length
    sequences, relative to the bridge's largest logit (at least 1). Seeded: the same sequences every time."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, lean.d_vocab, (PROBE_ROWS, lean.pos.shape[0]), generator=generator).to(lean.device)
    reference = model(tokens)
    mine = lean.forward(tokens)
    if mine.shape != reference.shape:
        return float("inf")
    scale = max(1.0, float(reference.abs().max()))
    return float((mine.to(reference.dtype) - reference).abs().max()) / scale


def lean_forward(model, differentiable: bool = False) -> Optional["LeanModel"]:
    """A ``LeanModel`` that stands in for ``model`` in this call, or None where the bridge must run:
    ``fast_path_blocker`` names a reason, or the probe finds the two forwards apart (``probe_gap`` above
    ``PROBE_TOLERANCE``). Ask again for each call: the model may have changed in between."""
    if fast_path_blocker(model) is not None:
        return None
    try:
        lean = LeanModel(model, differentiable=differentiable)
        agrees = probe_gap(lean, model) <= PROBE_TOLERANCE
    except Exception:  # a model the lean forward cannot even run (a weight removed, a shape changed): the bridge's turn
        return None
    return lean if agrees else None


def _causal_bias(n_q: int, offset: int, device) -> torch.Tensor:
    """[n_q, offset + n_q]: 0 where query j may see key position i (i <= offset + j), -inf elsewhere."""
    return torch.full((n_q, offset + n_q), float("-inf"), device=device).triu(offset + 1)


_STAGES = {"hook_resid_pre": 0, "hook_resid_mid": 1, "hook_resid_post": 2}

# Two ways the CPU forward avoids waste without changing what any row computes (float rounding aside:
# matrix kernels round differently for other shapes). GPUs take whole batches.
# * Row blocks. Rows are independent, so a batch runs in blocks of about BLOCK_TOKENS tokens: a
#   block's activations (3072 x d_mlp floats, 2.25 MiB at d_mlp 192) stay near the cache, and malloc
#   reuses their memory. A 1000 x 15 batch in one piece allocates 11 MiB tensors that glibc maps
#   afresh and unmaps on each free; the page faults of writing them cost more than the arithmetic.
# * Shared prefixes. Under the causal mask, positions < P depend on tokens[:, :P] only, so where many
#   rows share their first P tokens (4-digit operands written in 5 digits all begin with 0; a grid
#   holds each operand many times), those positions run once per distinct prefix and their keys and
#   values are copied to every row. P is chosen to save the most token-positions; it is used where it
#   saves at least SHARED_PREFIX_MIN_SAVING of the batch's tokens (4-digit OOD samples: P = 3, 18%).
BLOCK_TOKENS = 3072
SHARED_PREFIX_MIN_SAVING = 0.05


def hook_names(n_layers: int, layer_norm: bool) -> list[str]:
    """The hook points the lean forward exposes, in the order it passes them (the bridge's names)."""
    names = ["hook_embed", "hook_pos_embed"]
    for i in range(n_layers):
        p = f"blocks.{i}."
        names += [p + "hook_resid_pre"] + [p + f"attn.hook_{x}" for x in ("q", "k", "v", "pattern", "z")]
        names += [p + "hook_attn_out", p + "hook_resid_mid", p + "mlp.hook_pre", p + "mlp.hook_post", p + "hook_mlp_out", p + "hook_resid_post"]
    return names + (["ln_final.hook_normalized"] if layer_norm else [])


class LeanModel:
    """A forward pass over a TransformerBridge's current weights, with an optional KV cache and hook points.

    Its logits match the bridge's to float rounding (about 1e-6) where
    ``fast_path_blocker(model)`` is None; elsewhere it computes another model.
    Build it again after the weights change: it copies the fused q/k/v weights.

    Activations can be read (``record``) and replaced (``patches``) at the
    bridge's hook names (``hook_names``), with the bridge's shapes:
    hook_embed, hook_pos_embed, resid_pre/mid/post, attn_out, mlp_out
    [batch, pos, d_model]; attn.hook_q/k/v/z [batch, pos, n_heads, d_head];
    attn.hook_pattern [batch, n_heads, query_pos, key_pos]; mlp.hook_pre/post
    [batch, pos, d_mlp]; ln_final.hook_normalized [batch, pos, d_model] (with LayerNorm;
    normalised, before the weight and bias, as in the bridge). As in the bridge (TransformerLens
    4.x), a patch at hook_resid_mid changes the MLP's input only, not the residual stream
    that hook_resid_post adds the MLP's output to.
    """

    def __init__(self, model, differentiable: bool = False):
        """``differentiable``: keep autograd, so gradients reach the bridge's parameters (through the
        fused q/k/v cat); build it again after each optimiser step. Otherwise the weights are detached."""
        cfg = model.cfg
        if differentiable:
            sd = model.state_dict(keep_vars=True)
        else:
            sd = {k: v.detach() for k, v in model.state_dict().items()}
        self.n_layers, self.n_heads, self.d_head, self.eps = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.eps
        self.act = _ACTIVATIONS[cfg.act_fn]
        self.device = sd["embed.weight"].device
        self.embed, self.pos = sd["embed.weight"], sd["pos_embed.weight"]
        self.d_vocab = self.embed.shape[0]
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
        self.hook_names = hook_names(cfg.n_layers, self.layer_norm)

    def _norm(self, x, wb):
        return F.layer_norm(x, x.shape[-1:], wb[0], wb[1], self.eps) if self.layer_norm else x

    def attn_output(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s attention output [batch, pos, d_model] from its heads' outputs ``z`` [batch, pos, n_heads, d_head]."""
        return F.linear(z.reshape(*z.shape[:2], -1), *self.layers[layer]["o"])  # [batch, pos, n_heads * d_head] in

    def mlp_output(self, layer: int, resid_mid: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s MLP output [batch, pos, d_model] from the residual stream ``resid_mid`` [batch, pos, d_model]."""
        y = self._norm(resid_mid, self.layers[layer]["ln2"])
        return F.linear(self.act(F.linear(y, *self.layers[layer]["mlp_in"])), *self.layers[layer]["mlp_out"])

    def __call__(self, tokens: torch.Tensor, cache: Optional[list] = None, last_only: bool = False, logits_from: int = 0) -> torch.Tensor:
        """Logits [batch, pos, d_vocab_out] for ``tokens`` [batch, pos].

        With ``cache`` (a list, filled on the first call), ``tokens`` continue
        the cached prefix: the first call takes the prompt, later calls the
        positions that follow (one each when decoding). ``last_only`` returns logits for the last position only;
        ``logits_from`` those from that position on ([batch, pos - logits_from, d_vocab_out]).
        Without a cache, a batch on the CPU runs in row blocks after the prefix its rows share,
        if any (``pieces``; the prefix ends before ``logits_from``).
        """
        if cache is not None:
            return self.forward(tokens, cache=cache, last_only=last_only, logits_from=logits_from)
        if not 0 <= logits_from < tokens.shape[1]:
            raise ValueError(f"logits_from must lie in [0, {tokens.shape[1]}), got {logits_from}")
        outs = [
            self.forward(block, cache=block_cache, last_only=last_only, logits_from=0 if last_only else logits_from - prefix_len)
            for prefix_len, block, block_cache in self.pieces(tokens, tokens.shape[1] - 1 if last_only else logits_from)
        ]
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def pieces(self, tokens: torch.Tensor, max_prefix: int, later_positions: int = 0):
        """How the CPU forward runs ``tokens`` [batch, pos]: yields (P, a row block's tokens from position P on,
        its cache of positions < P or None), after the shared prefix (``shared_prefix``, P <= ``max_prefix``).

        ``later_positions``: positions a caller will add to each block's cache (decoding); blocks are sized
        for pos - P + later_positions tokens per row.
        """
        prefix_len, shared = self.shared_prefix(tokens, max_prefix)
        suffix = tokens[:, prefix_len:]
        for rows in self.row_blocks(suffix.shape[0], suffix.shape[1] + later_positions):
            yield prefix_len, suffix[rows], self.rows_of(shared, rows)

    def shared_prefix(self, tokens: torch.Tensor, max_len: int) -> tuple[int, Optional[tuple[list, torch.Tensor]]]:
        """(P, (every layer's keys and values [n_distinct, n_heads, P, d_head] for each distinct ``tokens[:, :P]``,
        each row's index into them [batch])): positions < P computed once per distinct prefix.
        (0, None) where no P <= ``max_len`` saves enough, off the CPU, or for tokens outside the vocabulary
        (the forward then raises as the bridge does).

        P maximises P x (rows - distinct prefixes of length P), the token-positions saved.
        """
        batch, n_pos = tokens.shape
        if self.device.type != "cpu" or batch < 2 or max_len < 1:
            return 0, None
        columns, ids = tokens.numpy(), np.zeros(batch, dtype=np.int64)
        if columns.min() < 0 or columns.max() >= self.d_vocab:
            return 0, None
        best_saving, best = 0, (0, None, None)
        for length in range(1, min(max_len, n_pos - 1) + 1):
            _, first, ids = np.unique(ids * self.d_vocab + columns[:, length - 1], return_index=True, return_inverse=True)
            saving = length * (batch - len(first))
            if saving > best_saving:
                best_saving, best = saving, (length, first, ids)
            if len(first) == batch:  # every row distinct from here on
                break
        length, first, ids = best
        if best_saving < SHARED_PREFIX_MIN_SAVING * batch * n_pos:
            return 0, None
        cache: list = []
        self.forward(tokens[torch.from_numpy(first), :length], cache=cache, last_only=True)
        return length, (cache, torch.from_numpy(ids))

    @staticmethod
    def rows_of(shared: Optional[tuple[list, torch.Tensor]], rows: slice) -> Optional[list]:
        """A new cache list (every layer's keys and values [len(rows), n_heads, P, d_head]) for ``rows``, from
        ``shared_prefix``'s result; None stays None."""
        if shared is None:
            return None
        cache, prefix_of = shared
        index = prefix_of[rows]
        return [(k[index], v[index]) for k, v in cache]

    def row_blocks(self, batch: int, positions: int) -> list[slice]:
        """Slices of ``range(batch)`` holding about ``BLOCK_TOKENS`` tokens each (sequences of ``positions`` tokens) on
        the CPU; one slice elsewhere."""
        rows = max(1, BLOCK_TOKENS // max(positions, 1)) if self.device.type == "cpu" else max(batch, 1)
        return [slice(start, start + rows) for start in range(0, max(batch, 1), rows)]

    def run_with_cache(self, tokens: torch.Tensor, names=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits [batch, pos, d_vocab_out] and the activations at ``names`` (default: every hook point), like the bridge's."""
        record = {name: None for name in (self.hook_names if names is None else names)}
        unknown = set(record) - set(self.hook_names)
        if unknown:
            raise KeyError(f"the lean forward has no hook point(s) {sorted(unknown)}")
        logits = self.forward(tokens, record=record)
        return logits, record

    def forward(
        self,
        tokens: Optional[torch.Tensor] = None,
        cache: Optional[list] = None,
        last_only: bool = False,
        patches: Optional[dict] = None,
        record: Optional[dict] = None,
        start: Optional[tuple[str, torch.Tensor]] = None,
        logits_from: int = 0,
    ) -> torch.Tensor:
        """Logits [batch, pos, d_vocab_out]: the one lean forward.

        ``tokens`` [batch, pos]; ``cache`` and ``last_only`` as in ``__call__``.
        ``patches``: hook name -> a tensor with the hook's shape (it replaces the
        activation) or a callable (activation -> new activation). ``record``: a dict
        whose keys are hook names; the forward fills in their (patched) activations.
        ``start``: (``blocks.{i}.hook_resid_pre``, ``_mid`` or ``_post``, the residual
        stream there [batch, pos, d_model]) begins the forward at that point, so
        activations upstream of a patch are reused instead of recomputed; ``tokens`` is then unused.
        With ``start``, ``cache`` may hold every layer's keys and values of earlier positions
        ([batch, n_heads, prefix, d_head] each): the forward then computes positions prefix.. only.
        ``logits_from`` (an index into this call's positions; not with ``patches`` or ``record``):
        return logits [batch, pos - logits_from, d_vocab_out] for positions logits_from.. only. The
        last layer then computes queries, attention output and MLP at those positions only (keys and
        values at all): the same arithmetic for those positions, whose logits nothing later can change.
        """
        hooked = bool(patches) or record is not None
        patches = patches or {}
        if logits_from and hooked:
            raise ValueError("logits_from computes the last layer at some positions only; it cannot record or patch")

        def point(name, x):
            patch = patches.get(name)
            if patch is not None:
                x = patch(x) if callable(patch) else patch.expand_as(x)
            if record is not None and name in record:
                record[name] = x
            return x

        if start is None:
            batch, n_new = tokens.shape
            pos0 = cache[0][0].shape[2] if cache else 0
            if pos0 + n_new > self.pos.shape[0]:
                raise ValueError(f"input length {pos0 + n_new} exceeds n_ctx={self.pos.shape[0]}")
            if hooked:
                h = point("hook_embed", F.embedding(tokens, self.embed)) + point("hook_pos_embed", self.pos[pos0 : pos0 + n_new].expand(batch, -1, -1))
            else:
                h = F.embedding(tokens, self.embed) + self.pos[pos0 : pos0 + n_new]
            first, stage = 0, 0
        else:
            name, h = start
            parts = name.split(".")
            if len(parts) != 3 or parts[0] != "blocks" or parts[2] not in _STAGES:
                raise ValueError(f"start must be blocks.<layer>.hook_resid_pre, _mid or _post; got {name!r}")
            first, stage = int(parts[1]), _STAGES[parts[2]]
            pos0 = cache[-1][0].shape[2] if cache else 0
            batch, n_new = h.shape[:2]
        if not 0 <= logits_from < n_new:
            raise ValueError(f"logits_from must lie in [0, {n_new}), got {logits_from}")
        if last_only and not hooked:
            logits_from = n_new - 1
        for i in range(first, self.n_layers):
            layer, p = self.layers[i], f"blocks.{i}."
            skip = stage if i == first else 0  # 1: begin at the MLP, 2: begin after the layer
            q_from = logits_from if i == self.n_layers - 1 else 0  # the first position this layer's output is needed at
            if skip and q_from:
                h = h[:, q_from:]
            if skip == 0:
                if hooked:
                    h = point(p + "hook_resid_pre", h)
                y = self._norm(h, layer["ln1"])
                if q_from:  # keys and values at every position, queries at q_from.. only
                    d = self.n_heads * self.d_head
                    q = F.linear(y[:, q_from:], layer["qkv_w"][:d], layer["qkv_b"][:d]).view(batch, n_new - q_from, self.n_heads, self.d_head).transpose(1, 2)  # [batch, n_heads, query_pos, d_head]
                    k, v = F.linear(y, layer["qkv_w"][d:], layer["qkv_b"][d:]).view(batch, n_new, 2, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # [2, batch, n_heads, pos, d_head]
                    h = h[:, q_from:]
                else:
                    qkv = F.linear(y, layer["qkv_w"], layer["qkv_b"]).view(batch, n_new, 3, self.n_heads, self.d_head)  # [batch, pos, 3, n_heads, d_head]
                    if hooked:  # each [batch, pos, n_heads, d_head], then [batch, n_heads, pos, d_head]
                        q, k, v = (point(p + f"attn.hook_{x}", qkv[:, :, j]).transpose(1, 2) for j, x in enumerate("qkv"))
                    else:
                        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [3, batch, n_heads, pos, d_head]
                if cache is not None:
                    if len(cache) > i:
                        k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
                        cache[i] = (k, v)
                    else:
                        cache.append((k, v))
                n_q, offset = q.shape[2], pos0 + q_from  # query j sees keys up to offset + j
                if hooked and (p + "attn.hook_pattern" in patches or (record is not None and p + "attn.hook_pattern" in record)):
                    scores = q @ k.transpose(-1, -2) / self.d_head**0.5 + _causal_bias(n_q, offset, h.device)  # [batch, n_heads, query_pos, key_pos]
                    z = point(p + "attn.hook_pattern", scores.softmax(-1)) @ v
                elif n_q == 1:  # the last position sees every key
                    z = F.scaled_dot_product_attention(q, k, v)  # [batch, n_heads, 1, d_head]
                else:  # for tiny heads, plain products normalised after the values beat softmax and the fused kernel
                    scores = (q @ k.transpose(-1, -2)) * self.d_head**-0.5 + _causal_bias(n_q, offset, h.device)  # [batch, n_heads, query_pos, key_pos]
                    weights = (scores - scores.amax(-1, keepdim=True)).exp()  # [batch, n_heads, query_pos, key_pos]
                    z = (weights @ v) / weights.sum(-1, keepdim=True)  # [batch, n_heads, query_pos, d_head]
                z = z.transpose(1, 2)  # [batch, query_pos, n_heads, d_head]
                if hooked:
                    h = h + point(p + "hook_attn_out", self.attn_output(i, point(p + "attn.hook_z", z)))
                else:
                    h = h + F.linear(z.reshape(batch, n_q, -1), *layer["o"])  # z as [batch, query_pos, n_heads * d_head]
            if skip <= 1:
                if hooked:
                    # As in the bridge: a patch at hook_resid_mid reaches the MLP's input only; the
                    # residual stream carries on unpatched (hook_resid_mid is the input of ln2).
                    y = self._norm(point(p + "hook_resid_mid", h), layer["ln2"])
                    post = point(p + "mlp.hook_post", self.act(point(p + "mlp.hook_pre", F.linear(y, *layer["mlp_in"]))))
                    h = point(p + "hook_resid_post", h + point(p + "hook_mlp_out", F.linear(post, *layer["mlp_out"])))
                else:
                    h = h + self.mlp_output(i, h)
        if last_only:
            h = h[:, -1:]
        if hooked and self.layer_norm:  # the bridge's hook_normalized comes before the weight and bias
            y = point("ln_final.hook_normalized", F.layer_norm(h, h.shape[-1:], None, None, self.eps))
            y = y * self.ln_final[0] + self.ln_final[1]
        else:
            y = self._norm(h, self.ln_final)
        return F.linear(y, *self.unembed)
