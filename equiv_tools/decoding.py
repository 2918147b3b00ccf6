"""Batched greedy decoding and teacher-forced scoring.

Three ways to get a model's greedy answers, all giving the same tokens:

* ``naive_greedy_decode``: the baseline. For every answer digit, run the
  TransformerBridge over the whole prefix again.
* ``greedy_decode(..., guess=None)``: a lean, hook-free forward over the
  bridge's weights with a KV cache: the prompt once, then one position per digit.
* ``greedy_decode(..., guess=...)``: verification. The greedy answer equals a
  target iff, under teacher forcing on that target, the argmax at every answer
  position equals the target digit. So one forward pass verifies a guessed
  answer (e.g. a relation's) for a whole batch, and only the inputs where the
  guess is wrong are decoded. ``guess="auto"`` decodes a small pilot, picks the
  task's candidate relation that agrees best, and verifies the rest with it.

Work is chunked by ``batch_size``: a map of 10^6 inputs never holds more than
one chunk's activations or cache. Token arrays are int64 [n, positions].
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import InputError
from .relations import Relation
from .tasks import Task

_ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}
PILOT_SIZE = 512


class LeanModel:
    """A hook-free forward pass over a TransformerBridge's current weights, with an optional KV cache.

    Its logits match the bridge's to float rounding (about 1e-6). Build it
    again after the weights change: it copies the fused q/k/v weights.
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


def _slices(n: int, batch_size: int, progress: bool, desc: str):
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or len(starts) < 2, leave=False):
        yield slice(start, min(start + batch_size, n))


def _kv_decode(lean: LeanModel, prompt: torch.Tensor, answer_len: int) -> torch.Tensor:
    """Greedy answer tokens [batch, answer_len] for prompts [batch, prompt_len], with a KV cache."""
    cache: list = []
    logits = lean(prompt, cache, last_only=True)
    out = [logits[:, -1].argmax(-1)]
    for _ in range(answer_len - 1):
        out.append(lean(out[-1][:, None], cache)[:, -1].argmax(-1))
    return torch.stack(out, dim=1)


def _teacher_forced_argmax(lean: LeanModel, task: Task, prompt: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Argmax at each answer position given the target's earlier digits: [batch, answer_len]."""
    tokens = torch.cat([prompt, answer[:, :-1]], dim=1)
    return lean(tokens)[:, task.prompt_len - 1 :].argmax(-1)


def _guess_tokens(task: Task, values: np.ndarray) -> np.ndarray:
    """Answer tokens for guessed values; values the layout cannot hold become 0 (a guess, verified anyway)."""
    values = np.where((values >= 0) & (values < task.answer_limit), values, 0)
    return task.encode_answer(values)


def _pilot(lean: LeanModel, task: Task, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Optional[Relation]]:
    """Greedy tokens for the first ``PILOT_SIZE`` inputs, and the candidate relation most of them follow (or None)."""
    a, b = a[:PILOT_SIZE], b[:PILOT_SIZE]
    tokens = _decode(lean, task, task.encode_prompt(a, b), None, PILOT_SIZE, False)
    answers = task.decode_answer(tokens)
    best, best_share = None, 0.5
    for rel in task.relations():
        share = float(np.mean(rel(a, b) == answers))
        if share > best_share:
            best, best_share = rel, share
    return tokens, best


def guess_relation(model, task: Task, a, b) -> Optional[Relation]:
    """The candidate relation that agrees best with the model's greedy answers on a pilot of (a, b), if over half do.

    The pilot is the first ``PILOT_SIZE`` inputs, decoded with the KV cache. Its
    result is a ``guess`` for ``greedy_decode``; the answers never depend on it.
    """
    a, b = task.check_operands(a, b)
    return _pilot(LeanModel(model), task, a, b)[1]


def _decode(lean: LeanModel, task: Task, prompts: np.ndarray, guessed: Optional[np.ndarray], batch_size: int, progress: bool) -> np.ndarray:
    """Greedy answer tokens for prompts [n, prompt_len], verifying ``guessed`` answer tokens [n, answer_len] if given."""
    out = np.empty((len(prompts), task.answer_len), dtype=np.int64)
    for sl in _slices(len(prompts), batch_size, progress, "decoding"):
        prompt = torch.from_numpy(prompts[sl]).to(lean.device)
        if guessed is None:
            out[sl] = _kv_decode(lean, prompt, task.answer_len).cpu().numpy()
            continue
        target = torch.from_numpy(guessed[sl]).to(lean.device)
        verified = (_teacher_forced_argmax(lean, task, prompt, target) == target).all(dim=1)
        result = target.clone()
        wrong = (~verified).nonzero().squeeze(1)
        if wrong.numel():
            result[wrong] = _kv_decode(lean, prompt[wrong], task.answer_len)
        out[sl] = result.cpu().numpy()
    return out


@torch.no_grad()
def greedy_decode(
    model,
    task: Task,
    a,
    b,
    batch_size: int = 4096,
    guess: Union[None, str, Relation, np.ndarray] = "auto",
    progress: bool = False,
) -> np.ndarray:
    """The model's greedy answer tokens for operands ``a``, ``b``: int64 [n, answer_len].

    ``guess``: ``"auto"`` (``guess_relation`` on a pilot, then verify
    with it), a ``Relation`` or an array of guessed answers [n] to verify, or
    ``None`` for plain KV-cache decoding. The result does not depend on it.
    """
    a, b = task.check_operands(a, b)
    lean = LeanModel(model)
    if isinstance(guess, str):
        if guess != "auto":
            raise InputError(f"guess must be 'auto', None, a Relation or an array of answers, got {guess!r}")
        head, relation = _pilot(lean, task, a, b)  # the pilot's answers are kept, not decoded again
        if a.size <= PILOT_SIZE:
            return head
        guessed = None if relation is None else _guess_tokens(task, relation(a[PILOT_SIZE:], b[PILOT_SIZE:]))
        rest = _decode(lean, task, task.encode_prompt(a[PILOT_SIZE:], b[PILOT_SIZE:]), guessed, batch_size, progress)
        return np.concatenate([head, rest])
    guessed = None
    if isinstance(guess, Relation):
        guessed = _guess_tokens(task, guess(a, b))
    elif guess is not None:
        guessed = _guess_tokens(task, np.asarray(guess, dtype=np.int64).reshape(-1))
        if guessed.shape[0] != a.size:
            raise InputError(f"guess has {guessed.shape[0]} answers for {a.size} inputs")
    return _decode(lean, task, task.encode_prompt(a, b), guessed, batch_size, progress)


def predict(model, task: Task, a, b, **kwargs) -> np.ndarray:
    """The model's greedy answers as integers: int64 [n]."""
    return task.decode_answer(greedy_decode(model, task, a, b, **kwargs))


@torch.no_grad()
def naive_greedy_decode(model, task: Task, a, b, batch_size: int = 4096, progress: bool = False) -> np.ndarray:
    """Baseline greedy decoding through the bridge, re-running the whole prefix per digit: int64 [n, answer_len]."""
    a, b = task.check_operands(a, b)
    prompts = task.encode_prompt(a, b)
    device = next(model.parameters()).device
    out = np.empty((a.size, task.answer_len), dtype=np.int64)
    for sl in _slices(a.size, batch_size, progress, "naive decoding"):
        seq = torch.from_numpy(prompts[sl]).to(device)
        for _ in range(task.answer_len):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
        out[sl] = seq[:, task.prompt_len :].cpu().numpy()
    return out


@torch.no_grad()
def score_digits(model, task: Task, a, b, targets, batch_size: int = 4096) -> np.ndarray:
    """Teacher-forced per-digit correctness against ``targets`` (answers as integers [n]): bool [n, answer_len].

    Column 0 is the units digit. A row is all True iff the greedy answer equals the target.
    """
    a, b = task.check_operands(a, b)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if targets.size != a.size:
        raise InputError(f"{targets.size} targets for {a.size} inputs")
    target_tokens = task.encode_answer(targets)
    prompts = task.encode_prompt(a, b)
    lean = LeanModel(model)
    out = np.empty(target_tokens.shape, dtype=bool)
    for sl in _slices(a.size, batch_size, False, "scoring"):
        target = torch.from_numpy(target_tokens[sl]).to(lean.device)
        prompt = torch.from_numpy(prompts[sl]).to(lean.device)
        out[sl] = (_teacher_forced_argmax(lean, task, prompt, target) == target).cpu().numpy()
    return out
