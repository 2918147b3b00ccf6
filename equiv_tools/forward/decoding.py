"""Batched greedy decoding and teacher-forced scoring.

Three ways to get a model's greedy answers, all giving the same tokens:

* ``naive_greedy_decode``: the reference. For every answer digit, run the
  TransformerBridge, with whatever hooks the user attached, over the whole prefix again.
* ``greedy_decode(..., guess=None)``: the lean forward (``equiv_tools.forward.lean``)
  with a KV cache: the prompt once, then one position per digit.
* ``greedy_decode(..., guess=...)``: verification. The greedy answer equals a
  target iff, under teacher forcing on that target, the argmax at every answer
  position equals the target digit. So one forward pass verifies a guessed
  answer (e.g. a relation's) for a whole batch, and only the inputs where the
  guess is wrong are decoded. ``guess="auto"`` decodes a small pilot, picks the
  task's candidate relation that agrees best, and verifies the rest with it.

The fast paths run only where ``lean.lean_forward`` allows (no hooks
attached, a configuration the lean forward implements, and a probe that finds
it equal to the bridge); elsewhere ``greedy_decode`` is ``naive_greedy_decode``
and ``score_digits`` runs its teacher-forced pass through the bridge, so every
answer is the hooked model's.

Work is chunked by ``batch_size``: a map of 10^6 inputs never holds more than
one chunk's activations or cache. Token arrays are int64 [n, positions].
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from equiv_tools.core.errors import InputError
from equiv_tools.core.relations import Relation
from equiv_tools.core.tasks import Task
from equiv_tools.forward.lean import LeanModel, lean_forward

PILOT_SIZE = 512


def _slices(n: int, batch_size: int, progress: bool, desc: str, on_progress: Optional[Callable[[float], None]] = None):
    """Slices of ``batch_size`` over range(n); ``on_progress(fraction done)`` after each."""
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or len(starts) < 2, leave=False):
        yield slice(start, min(start + batch_size, n))
        if on_progress is not None:
            on_progress(min(start + batch_size, n) / n)


def _kv_decode(lean: LeanModel, prompt: torch.Tensor, answer_len: int) -> torch.Tensor:
    """Greedy answer tokens [batch, answer_len] for prompts [batch, prompt_len], with a KV cache.

    The prompt's shared prefix (if any) runs once per distinct prefix, the rest in row blocks.
    """
    out = []
    for _, block_prompt, cache in lean.pieces(prompt, prompt.shape[1] - 1, later_positions=answer_len - 1):
        cache = cache or []
        logits = lean(block_prompt, cache, last_only=True)
        block = [logits[:, -1].argmax(-1)]
        for _ in range(answer_len - 1):
            block.append(lean(block[-1][:, None], cache)[:, -1].argmax(-1))
        out.append(torch.stack(block, dim=1))
    return torch.cat(out)


def _teacher_forced_logits(forward, task: Task, prompt: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Logits at each answer position given the target's earlier digits: [batch, answer_len, d_vocab_out].

    ``forward`` maps tokens [batch, pos] to logits [batch, pos, d_vocab_out]: a ``LeanModel`` or the bridge itself.
    """
    tokens = torch.cat([prompt, answer[:, :-1]], dim=1)
    if isinstance(forward, LeanModel):  # the last layer computes the answer positions only
        return forward(tokens, logits_from=task.prompt_len - 1)
    return forward(tokens)[:, task.prompt_len - 1 :]


def _teacher_forced_argmax(forward, task: Task, prompt: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Argmax at each answer position given the target's earlier digits: [batch, answer_len]."""
    return _teacher_forced_logits(forward, task, prompt, answer).argmax(-1)


def _exact_forward(model) -> tuple[object, torch.device]:
    """(the lean forward where ``lean_forward`` allows, else the bridge itself; the model's device)."""
    return lean_forward(model) or model, next(model.parameters()).device


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
    None where the fast path is blocked (``lean_forward`` is None):
    the bridge then decodes without guesses.
    """
    a, b = task.check_operands(a, b)
    lean = lean_forward(model)
    return None if lean is None else _pilot(lean, task, a, b)[1]


def _decode(
    lean: LeanModel, task: Task, prompts: np.ndarray, guessed: Optional[np.ndarray], batch_size: int, progress: bool, on_progress=None
) -> np.ndarray:
    """Greedy answer tokens for prompts [n, prompt_len], verifying ``guessed`` answer tokens [n, answer_len] if given.

    The inputs whose guess fails are decoded together at the end, in full batches.
    """
    if guessed is None:
        out = np.empty((len(prompts), task.answer_len), dtype=np.int64)
        for sl in _slices(len(prompts), batch_size, progress, "decoding", on_progress):
            out[sl] = _kv_decode(lean, torch.from_numpy(prompts[sl]).to(lean.device), task.answer_len).cpu().numpy()
        return out
    wrong = []
    for sl in _slices(len(prompts), batch_size, progress, "verifying", on_progress):
        prompt, target = torch.from_numpy(prompts[sl]).to(lean.device), torch.from_numpy(guessed[sl]).to(lean.device)
        verified = (_teacher_forced_argmax(lean, task, prompt, target) == target).all(dim=1)
        wrong.append(sl.start + np.flatnonzero(~verified.cpu().numpy()))
    wrong = np.concatenate(wrong)
    out = guessed.copy()
    if len(wrong):
        out[wrong] = _decode(lean, task, prompts[wrong], None, batch_size, progress)
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
    on_progress: Optional[Callable[[float], None]] = None,
) -> np.ndarray:
    """The model's greedy answer tokens for operands ``a``, ``b``: int64 [n, answer_len].

    ``guess``: ``"auto"`` (``guess_relation`` on a pilot, then verify
    with it), a ``Relation`` or an array of guessed answers [n] to verify, or
    ``None`` for plain KV-cache decoding. The result does not depend on it.
    ``on_progress(fraction done)`` is called after each batch. Where
    ``lean_forward(model)`` is None (hooks attached, a setting the lean forward
    lacks, a probe that finds it apart from the bridge), this is ``naive_greedy_decode``: the bridge's answers.
    """
    a, b = task.check_operands(a, b)
    if isinstance(guess, str) and guess != "auto":
        raise InputError(f"guess must be 'auto', None, a Relation or an array of answers, got {guess!r}")
    guessed = None
    if isinstance(guess, Relation):
        guessed = _guess_tokens(task, guess(a, b))
    elif guess is not None and not isinstance(guess, str):
        guessed = _guess_tokens(task, np.asarray(guess, dtype=np.int64).reshape(-1))
        if guessed.shape[0] != a.size:
            raise InputError(f"guess has {guessed.shape[0]} answers for {a.size} inputs")
    lean = lean_forward(model)
    if lean is None:
        return naive_greedy_decode(model, task, a, b, batch_size=batch_size, progress=progress, on_progress=on_progress)
    if isinstance(guess, str):
        head, relation = _pilot(lean, task, a, b)  # the pilot's answers are kept, not decoded again
        if on_progress is not None:
            on_progress(len(head) / a.size)
        if a.size <= PILOT_SIZE:
            return head
        guessed = None if relation is None else _guess_tokens(task, relation(a[PILOT_SIZE:], b[PILOT_SIZE:]))
        report = None
        if on_progress is not None:  # a fraction of the rest -> of all inputs (the pilot's are done)
            report = lambda done: on_progress((PILOT_SIZE + done * (a.size - PILOT_SIZE)) / a.size)
        rest = _decode(lean, task, task.encode_prompt(a[PILOT_SIZE:], b[PILOT_SIZE:]), guessed, batch_size, progress, report)
        return np.concatenate([head, rest])
    return _decode(lean, task, task.encode_prompt(a, b), guessed, batch_size, progress, on_progress)


def predict(model, task: Task, a, b, **kwargs) -> np.ndarray:
    """The model's greedy answers as integers: int64 [n]."""
    return task.decode_answer(greedy_decode(model, task, a, b, **kwargs))


@torch.no_grad()
def naive_greedy_decode(model, task: Task, a, b, batch_size: int = 4096, progress: bool = False, on_progress=None) -> np.ndarray:
    """Baseline greedy decoding through the bridge, re-running the whole prefix per digit: int64 [n, answer_len].

    ``on_progress(fraction done)`` is called after each batch.
    """
    a, b = task.check_operands(a, b)
    prompts = task.encode_prompt(a, b)
    device = next(model.parameters()).device
    out = np.empty((a.size, task.answer_len), dtype=np.int64)
    for sl in _slices(a.size, batch_size, progress, "naive decoding", on_progress):
        seq = torch.from_numpy(prompts[sl]).to(device)
        for _ in range(task.answer_len):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
        out[sl] = seq[:, task.prompt_len :].cpu().numpy()
    return out


@torch.no_grad()
def score_digits(model, task: Task, a, b, targets, batch_size: int = 4096) -> np.ndarray:
    """Teacher-forced per-digit correctness against ``targets`` (answers as integers [n]): bool [n, answer_len].

    Column 0 is the units digit. A row is all True iff the greedy answer equals the target.
    Runs the lean forward where ``lean_forward`` allows, else the bridge with its hooks.
    """
    a, b = task.check_operands(a, b)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if targets.size != a.size:
        raise InputError(f"{targets.size} targets for {a.size} inputs")
    target_tokens = task.encode_answer(targets)
    prompts = task.encode_prompt(a, b)
    forward, device = _exact_forward(model)
    out = np.empty(target_tokens.shape, dtype=bool)
    for sl in _slices(a.size, batch_size, False, "scoring"):
        target = torch.from_numpy(target_tokens[sl]).to(device)
        prompt = torch.from_numpy(prompts[sl]).to(device)
        out[sl] = (_teacher_forced_argmax(forward, task, prompt, target) == target).cpu().numpy()
    return out


@torch.no_grad()
def answer_probabilities(model, task: Task, a, b, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The greedy answer tokens and the model's probability of each: (int64 [n, answer_len], float32 [n, answer_len]).

    Column 0 is the first answer token (the units digit in the digit layout). Each probability is the
    softmax at that answer position under teacher forcing on the greedy answer. Like ``score_digits``,
    runs the lean forward where ``lean_forward`` allows, else the bridge with its hooks.
    """
    a, b = task.check_operands(a, b)
    tokens = greedy_decode(model, task, a, b, batch_size=batch_size)
    prompts = task.encode_prompt(a, b)
    forward, device = _exact_forward(model)
    probs = np.empty(tokens.shape, dtype=np.float32)
    for sl in _slices(a.size, batch_size, False, "probabilities"):
        answer = torch.from_numpy(tokens[sl]).to(device)
        logits = _teacher_forced_logits(forward, task, torch.from_numpy(prompts[sl]).to(device), answer)
        probs[sl] = torch.softmax(logits.float(), dim=-1).gather(-1, answer[..., None])[..., 0].cpu().numpy()
    return tokens, probs
