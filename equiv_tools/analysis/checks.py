"""Checks for build-it-yourself exercises: a learner's hand-built result against the kit's own.

Each check computes the kit's answer with the kit's functions, compares the learner's with it, prints one
short message and returns True when they agree (to float rounding) or False when they differ. A wrong
answer raises nothing: the message says where the two differ and by how much and, when the learner's
result equals one of the typical mistakes the check tries, names it ("did you patch every position instead
of one?"); a result of the wrong shape is a wrong answer too. Arguments the kit cannot use (a result that is
still None, a layer the model lacks) raise ``InputError``.

* ``check_resid_pre_patch``: a ``run_with_hooks`` hook that copies the clean run's ``hook_resid_pre`` at one
  position into the corrupted run;
* ``check_logit_difference``: logit[clean digit] - logit[corrupted digit] at one answer position;
* ``check_head_ablation``: per-answer-digit accuracy with one attention head's output ``z`` ablated
  (``ablation.head_ablation``, zero or mean ablation);
* ``check_embedding_fourier``: a modular model's embedding norm per Fourier frequency.
"""
from __future__ import annotations

from itertools import islice
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from equiv_tools.analysis.ablation import head_ablation, head_ablation_hook, mean_head_output
from equiv_tools.analysis.fourier import embedding_fourier, embedding_frequency_norms, fourier_basis
from equiv_tools.analysis.patching import answered_tokens, eval_mode, hook_name, logit_difference, patch_resid_pre_by_pos
from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import Task
from equiv_tools.forward.decoding import greedy_decode, predict, score_digits

LOGIT_TOLERANCE = 1e-4  # of the largest logit: two float32 runs of the same computation agree far closer (README)
NORM_TOLERANCE = 1e-4  # of the largest norm: a float32 projection against the kit's float64 one
MAX_HINTS = 2  # mistakes named at most, in the order tried, when several give the learner's result

Mistakes = Iterator[tuple[str, np.ndarray]]  # (what the mistake would be, the result it gives), computed lazily


def _as_numpy(x, what: str) -> np.ndarray:
    """A float64 numpy copy of a tensor, array, pandas object, list or number."""
    if x is None:
        raise InputError(f"{what} is None: compute it first")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    elif hasattr(x, "to_numpy"):
        x = x.to_numpy()
    return np.asarray(x, dtype=np.float64)


def _compare(what: str, learner: np.ndarray, kit: np.ndarray, atol: float, locate: Callable[[tuple], str],
             mistakes: Callable[[], Mistakes], matched: str) -> bool:
    """Print whether ``learner`` equals ``kit`` within ``atol``; where not, the largest gap and the first mistake that explains it.

    ``locate(index)`` names an index of ``kit``; ``mistakes()`` yields (question, result) pairs, tried only when
    the learner's result differs (the first MAX_HINTS that equal it are named); ``matched`` ends the message of a match.
    """
    if learner.shape != kit.shape:
        print(f"your {what}: shape {learner.shape}, the kit's {kit.shape}: {locate(None)}")
        return False
    gap = np.abs(learner - kit)
    if not np.isfinite(learner).all() or gap.max() > atol:
        gap = np.where(np.isfinite(gap), gap, np.inf)
        index = np.unravel_index(int(np.argmax(gap)), gap.shape)
        message = f"your {what} and the kit's differ{locate(index)} by up to {gap.max():.3g}"
        hints = islice((question for question, result in mistakes()
                        if result.shape == learner.shape and np.abs(learner - result).max() <= atol), MAX_HINTS)
        print(message + "".join(f"{': ' if i == 0 else '; or '}{hint}" for i, hint in enumerate(hints)))
        return False
    print(f"your {what} and the kit's agree{matched}")
    return True


# ---- activation patching -------------------------------------------------------------------------------


def _all_logits(logits: torch.Tensor) -> torch.Tensor:
    """A 'metric' that keeps the whole patched run: logits [batch, pos, d_vocab_out] -> [batch * pos * d_vocab_out]."""
    return logits.flatten()


def check_resid_pre_patch(model, task: Task, clean_a, clean_b, corrupt_a, corrupt_b, layer: int, position: int,
                          learner_logits) -> bool:
    """Check a hand-written patch: the corrupted run with the clean run's ``blocks.{layer}.hook_resid_pre`` at ``position``.

    Both inputs run teacher-forced on the model's own greedy answer, as ``patch_pair`` runs them:
    ``answered_tokens(model, task, a, b)[:, :-1]``, int64 [n, n_ctx]. ``learner_logits``: the patched run's
    logits, [n, n_ctx, d_vocab_out] (or [n_ctx, d_vocab_out] for one pair). The kit's reference is
    ``patch_resid_pre_by_pos`` (the lean sweep where it may stand in), to LOGIT_TOLERANCE of the largest logit.
    Mistakes it names: no patch at all (the corrupted run), every position patched (the clean run), another
    position or layer, and the patch the other way round (clean run, corrupted activation).
    """
    if not 0 <= layer < model.cfg.n_layers:
        raise InputError(f"layer must lie in [0, {model.cfg.n_layers}), got {layer}")
    if not 0 <= position < task.n_ctx:
        raise InputError(f"position must lie in [0, {task.n_ctx}), got {position}")
    names = task.position_names()
    with eval_mode(model), torch.no_grad():
        clean = answered_tokens(model, task, clean_a, clean_b)[:, :-1]  # [n, n_ctx]
        corrupted = answered_tokens(model, task, corrupt_a, corrupt_b)[:, :-1]
        if clean.shape != corrupted.shape:
            raise InputError("clean and corrupted inputs must be as many")
        shape = (*corrupted.shape, model.cfg.d_vocab_out)
        every = patch_resid_pre_by_pos(model, corrupted, clean, _all_logits).reshape(model.cfg.n_layers, task.n_ctx, *shape)
    kit = every[layer, position].numpy()  # [n, n_ctx, d_vocab_out]
    learner = _as_numpy(learner_logits, "learner_logits")
    if learner.ndim == 2 and kit.shape[0] == 1:
        learner = learner[None]

    def locate(index) -> str:
        if index is None:
            return "[n inputs, n_ctx positions, d_vocab_out] (the logits run_with_hooks returns)"
        return f" at position {index[1]} ({names[index[1]]})" + (f" of input {index[0]}" if kit.shape[0] > 1 else "")

    def mistakes() -> Mistakes:
        device = next(model.parameters()).device
        with eval_mode(model), torch.no_grad():
            yield ("they are the corrupted run's logits, unpatched: was the hook attached (fwd_hooks=[(name, hook)]), did it "
                   "return the patched activation, and does the clean run differ at that position?"), model(corrupted.to(device)).cpu().numpy()
            yield "they are the clean run's logits: did you patch every position instead of one?", model(clean.to(device)).cpu().numpy()
        for p in range(task.n_ctx):
            if p != position:
                yield f"they are the kit's patch at position {p} ({names[p]}): did you patch position {p} instead of {position}?", every[layer, p].numpy()
        for other in range(model.cfg.n_layers):
            if other != layer:
                yield (f"they are the kit's patch entering layer {other}: did you hook blocks.{other}.hook_resid_pre "
                       f"instead of blocks.{layer}.hook_resid_pre?"), every[other, position].numpy()
        with eval_mode(model), torch.no_grad():
            swapped = patch_resid_pre_by_pos(model, clean, corrupted, _all_logits)[layer, position].reshape(shape).numpy()
        yield "they are the clean run with the corrupted activation: did you swap the clean and corrupted runs?", swapped

    scale = max(1.0, float(np.abs(kit).max()))
    return _compare("patched logits", learner, kit, LOGIT_TOLERANCE * scale, locate, mistakes,
                    f" (blocks.{layer}.hook_resid_pre at position {position}, {names[position]})")


# ---- logit difference -----------------------------------------------------------------------------------


def _answer_values(task: Task, values, n: int, what: str) -> np.ndarray:
    """Answers as integers [n]: one value for all inputs, or one per input."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    if values.size == 1:
        values = np.full(n, values[0])
    if values.size != n:
        raise InputError(f"{what}: {values.size} answers for {n} inputs")
    return values


def check_logit_difference(model, task: Task, a, b, learner_value, corrupted_answers, answer_position: Optional[int] = None,
                           clean_answers=None) -> bool:
    """Check a logit difference: logit[clean digit] - logit[corrupted digit] at one answer position.

    The logits are the model's on (a, b) teacher-forced on ``clean_answers`` (default: its own greedy answers),
    ``task.encode(a, b, clean_answers)[:, :n_ctx]``; the logits that predict answer digit ``answer_position``
    (0 = the first answer token, the units) sit one position before it, at ``prompt_len - 1 + answer_position``.
    The clean digit is that digit of ``clean_answers``, the corrupted one that digit of ``corrupted_answers``
    (integers [n], or one for all: e.g. the truth, or ``predict`` on a corrupted input). ``answer_position``
    defaults to the first where the two answers differ. ``learner_value``: the mean over the inputs (a
    number), or one value per input [n]. The kit's reference is ``patching.logit_difference``, the metric
    ``patch_pair`` normalises, to LOGIT_TOLERANCE of the largest logit.
    Mistakes it names: the sign (corrupted minus clean), the logits read at the answer digit's own position,
    another answer position (the next, the previous, or counted from the most significant digit),
    probabilities instead of logits, and a sum over the inputs instead of their mean.
    """
    a, b = task.check_operands(a, b)
    clean_answers = predict(model, task, a, b) if clean_answers is None else _answer_values(task, clean_answers, a.size, "clean_answers")
    clean_tokens = torch.from_numpy(task.encode(a, b, clean_answers))  # [n, seq_len]
    corrupted_tokens = torch.from_numpy(task.encode(a, b, _answer_values(task, corrupted_answers, a.size, "corrupted_answers")))
    answers = slice(task.prompt_len, task.seq_len)
    if answer_position is None:
        differ = (clean_tokens[:, answers] != corrupted_tokens[:, answers]).any(0).nonzero()
        if not len(differ):
            raise InputError("the clean and corrupted answers agree at every answer position: there is no logit difference to read")
        answer_position = int(differ[0])
    if not 0 <= answer_position < task.answer_len:
        raise InputError(f"answer_position must lie in [0, {task.answer_len}), got {answer_position}")
    with eval_mode(model), torch.no_grad():
        logits = model(clean_tokens[:, : task.n_ctx].to(next(model.parameters()).device)).cpu()  # [n, n_ctx, d_vocab_out]

    def per_input(position: int, read_at: Optional[int] = None, probabilities: bool = False) -> np.ndarray:
        """The kit's metric at ``position``, one value per input [n]; ``read_at`` moves the logits it reads (a mistake)."""
        source = logits
        if read_at is not None:  # the logits of position read_at put where the metric reads position ``position``'s
            source = logits.clone()
            source[:, task.prompt_len - 1 + position] = logits[:, read_at]
        if probabilities:
            source = source.softmax(-1)
        return np.array([float(logit_difference(task, clean_tokens[i : i + 1], corrupted_tokens[i : i + 1], position)(source[i : i + 1]))
                         for i in range(a.size)])

    learner = _as_numpy(learner_value, "learner_value")
    mean = learner.ndim == 0 or learner.size == 1 and a.size > 1
    reduce = (lambda values: np.asarray(values.mean())) if mean else (lambda values: values)
    learner = learner.reshape(()) if mean else learner
    names = task.position_names()
    where = f"answer position {answer_position} ({names[task.prompt_len + answer_position]})"

    def locate(index) -> str:
        if index is None:
            return "pass one number (the mean over the inputs) or one value per input"
        return "" if mean else f" at input {index[0]} ({a[index[0]]} + {b[index[0]]})"

    def mistakes() -> Mistakes:
        kit = per_input(answer_position)
        yield "it has the opposite sign: did you subtract the clean digit's logit from the corrupted one's?", reduce(-kit)
        own = task.prompt_len + answer_position
        if own < task.n_ctx:
            yield (f"it reads the logits at {names[own]}'s own position {own}: the logits that predict a token sit one "
                   f"position before it, at {own - 1}"), reduce(per_input(answer_position, read_at=own))
        others = {}  # answer position -> what it is, the first name kept
        for other, label in ((answer_position + 1, "the next answer position"), (answer_position - 1, "the previous answer position"),
                             (task.answer_len - 1 - answer_position, "the answer position counted from the most significant digit")):
            others.setdefault(other, label)
        for other, label in others.items():
            if other != answer_position and 0 <= other < task.answer_len:
                yield (f"it is the logit difference at {label}, {names[task.prompt_len + other]}: the answer is written "
                       f"units first, answer position {answer_position} is {names[task.prompt_len + answer_position]}"), reduce(per_input(other))
        yield "it is a difference of probabilities: subtract the logits themselves (before the softmax)", reduce(per_input(answer_position, probabilities=True))
        if mean and a.size > 1:
            yield f"it is the sum over the {a.size} inputs: take their mean", np.asarray(kit.sum())

    kit = reduce(per_input(answer_position))
    scale = max(1.0, float(logits.abs().max()))
    shown = f" at {where}: {float(kit):.3g}" if mean else f" at {where}, for each of the {a.size} inputs"
    return _compare("logit difference", learner, kit, LOGIT_TOLERANCE * scale, locate, mistakes, shown)


# ---- head ablation ----------------------------------------------------------------------------------------


def _accuracy_under(model, task: Task, a, b, targets, fwd_hooks: list, greedy: bool = False) -> np.ndarray:
    """Per-answer-digit accuracy under ``fwd_hooks``: [answer_len], units first. Teacher-forced (``score_digits``), or
    with ``greedy`` the greedy answer's digits compared with ``targets`` (a mistake the check names)."""
    with model.hooks(fwd_hooks=fwd_hooks):
        if greedy:
            return (greedy_decode(model, task, a, b) == task.encode_answer(targets)).mean(0)
        return score_digits(model, task, a, b, targets).mean(0)


def _zero_hook(layer: int, heads=slice(None), positions=slice(None)) -> tuple[str, Callable]:
    """A hook on ``blocks.{layer}.attn.hook_z`` ([batch, pos, n_heads, d_head]) that zeroes z[:, positions, heads]:
    the ablations a learner may write by mistake (a whole layer, or a position instead of a head)."""
    def hook(z, hook):
        z = z.clone()
        z[:, positions, heads] = 0.0
        return z

    return hook_name("z", layer), hook


def check_head_ablation(model, task: Task, a, b, layer: int, head: int, learner_accuracy_by_position,
                        ablation: str = "zero", targets=None) -> bool:
    """Check per-answer-digit accuracy with one attention head ablated, against ``ablation.head_ablation``.

    The ablation is a hook on ``blocks.{layer}.attn.hook_z`` ([batch, pos, n_heads, d_head]) that replaces head
    ``head``'s output at every position: ``ablation="zero"`` with zeros (the default), ``"mean"`` with its mean
    over the inputs at each position (from a ``run_with_cache`` of the same teacher-forced inputs). Accuracy is
    teacher-forced on ``targets`` (default: the truth), as ``score_digits`` measures it: for each answer
    position, the share of inputs whose digit there is the argmax given the target's earlier digits.
    ``learner_accuracy_by_position``: [answer_len], column 0 the units digit (``ans[10^0]``). The two agree to
    one input in n (a near-tie may fall either way).
    Mistakes it names: no ablation, the whole layer ablated, the head index used as a position (z[:, head]),
    another head or layer, the other ablation, the digits in reversed order, and greedy-decoded digits compared
    with the targets instead of teacher forcing.
    """
    a, b = task.check_operands(a, b)
    targets = task.truth(a, b) if targets is None else _answer_values(task, targets, a.size, "targets")
    kit_frame = head_ablation(model, task, a, b, [(layer, head)], ablation, targets)  # one row per answer digit
    kit = kit_frame.accuracy.to_numpy()
    learner = _as_numpy(learner_accuracy_by_position, "learner_accuracy_by_position")
    names = task.position_names()

    def locate(index) -> str:
        if index is None:
            return f"one accuracy per answer position, [{task.answer_len}], units first"
        return f" at answer position {index[0]} ({names[task.prompt_len + index[0]]})"

    def accuracy(heads, how: str = ablation) -> np.ndarray:
        """``head_ablation``'s accuracy [answer_len] with each (layer, head) of ``heads`` ablated alone."""
        return head_ablation(model, task, a, b, heads, how, targets).accuracy.to_numpy()

    def mistakes() -> Mistakes:
        yield "it is the model's accuracy without ablation: was the hook attached, and did it return the changed z?", kit_frame.intact.to_numpy()
        with eval_mode(model):
            yield (f"it is the accuracy with every head of layer {layer} ablated: z[:, :, {head}] is head {head} alone "
                   "(z is [batch, pos, head, d_head])"), _accuracy_under(model, task, a, b, targets, [_zero_hook(layer)])
            if head < task.n_ctx and ablation == "zero":
                yield (f"it is the accuracy with position {head} ablated in every head: did you write z[:, {head}] instead of "
                       f"z[:, :, {head}]? (z is [batch, pos, head, d_head])"), _accuracy_under(model, task, a, b, targets, [_zero_hook(layer, positions=head)])
        yield "it is the kit's accuracy in reversed order: column 0 is the units digit, ans[10^0]", kit[::-1]
        other_way = "mean" if ablation == "zero" else "zero"
        yield f"it is the accuracy with {other_way} ablation: this check asks for {ablation} ablation", accuracy([(layer, head)], other_way)
        for other in range(model.cfg.n_heads):
            if other != head:
                yield f"it is the accuracy with head {other} of layer {layer} ablated: did you ablate head {other}?", accuracy([(layer, other)])
        for other in range(model.cfg.n_layers):
            if other != layer:
                yield f"it is the accuracy with head {head} of layer {other} ablated: did you hook blocks.{other}.attn.hook_z?", accuracy([(other, head)])
        mean = mean_head_output(model, task, a, b, targets, layer) if ablation == "mean" else None
        with eval_mode(model):
            greedy = _accuracy_under(model, task, a, b, targets, [head_ablation_hook(layer, head, mean)], greedy=True)
        yield ("it is the greedy answer's digits compared with the targets: this check scores each digit teacher-forced "
               "(given the target's earlier digits), as score_digits does"), greedy

    return _compare("accuracy by answer position", learner, kit, 1.0 / a.size + 1e-9, locate, mistakes,
                    f" (head {head} of layer {layer}, {ablation}-ablated): " + ", ".join(f"{v:.3f}" for v in kit))


# ---- Fourier ----------------------------------------------------------------------------------------------


def check_embedding_fourier(model, p: int, learner_norms) -> bool:
    """Check the embedding's norm per Fourier frequency of Z_p: ``embedding_frequency_norms(model, p).norm``.

    Project the embedding of the p number tokens, ``W_E[:p]`` [p, d_model], onto the orthonormal Fourier
    basis over Z_p (the constant, then cos(2πkx/p) and sin(2πkx/p) for k = 1..p//2, each divided by its
    length, sqrt(p/2)), then take for each frequency k the L2 norm of its cos and sin coefficients together:
    sqrt(|cos_k|^2 + |sin_k|^2), over d_model. ``learner_norms``: [p // 2], entry k - 1 for frequency k.
    Compared to NORM_TOLERANCE of the largest norm. Mistakes it names: basis vectors not normalised (or an
    unnormalised FFT), squared norms, cos or sin alone, the two norms added, the constant kept at entry 0,
    the unembedding ``W_U`` instead of ``W_E``, and any other constant factor.
    """
    if not 2 < p <= model.cfg.d_vocab:
        raise InputError(f"p must lie in (2, {model.cfg.d_vocab}] for this model (d_vocab {model.cfg.d_vocab}), got {p}")
    frame = embedding_fourier(model, p)  # component, frequency, kind, norm
    kit = embedding_frequency_norms(model, p).norm.to_numpy()  # [p // 2]
    learner = _as_numpy(learner_norms, "learner_norms").reshape(-1)

    def locate(index) -> str:
        if index is None:
            extra = ": leave out the constant (frequency 0)" if learner.size == kit.size + 1 else ""
            return f"one norm per frequency k = 1..{p // 2}, entry k - 1 for frequency k{extra}"
        return f" at frequency {index[0] + 1}"

    def part(kind: str) -> np.ndarray:
        """The norm of the cos (or sin) coefficients alone per frequency [p // 2], 0 where there is none."""
        rows = frame[frame.kind == kind]
        return np.bincount(rows.frequency.to_numpy(), weights=rows.norm.to_numpy(), minlength=p // 2 + 1)[1:]

    def mistakes() -> Mistakes:
        yield f"they are the kit's times sqrt(p/2) = {np.sqrt(p / 2):.3g}: divide each cos and sin vector by its length (an FFT needs the same)", kit * np.sqrt(p / 2)
        yield ("they are the kit's divided by sqrt(2): an FFT with norm='ortho' splits each frequency between k and p - k; "
               "multiply by sqrt(2), or use the real cos and sin basis"), kit / np.sqrt(2)
        yield "they are the kit's squared: take the square root", kit**2
        yield "they are the cos coefficients' norms alone: add the sin coefficients' squares before the square root", part("cos")
        yield "they are the sin coefficients' norms alone: add the cos coefficients' squares before the square root", part("sin")
        yield "they are the cos norm plus the sin norm: take sqrt(cos norm^2 + sin norm^2)", part("cos") + part("sin")
        const = float(frame[frame.kind == "const"].norm.iloc[0])
        yield "they are shifted by one: entry 0 holds the constant; entry k - 1 should hold frequency k", np.concatenate([[const], kit[:-1]])
        unembed = model.W_U.detach().double().cpu().numpy()[:, :p].T  # [p, d_model]
        coefficients = fourier_basis(p) @ unembed  # [component, d_model]
        u = np.linalg.norm(coefficients, axis=1) ** 2
        per = np.bincount(frame.frequency.to_numpy(), weights=u, minlength=p // 2 + 1)[1:]
        yield "they are the unembedding's norms: project W_E[:p] (the embedding), not W_U", np.sqrt(per)
        ratio = learner / np.where(kit == 0, np.nan, kit)
        if np.isfinite(ratio).all() and np.ptp(ratio) <= NORM_TOLERANCE * max(1.0, abs(float(ratio.mean()))):
            yield f"they are the kit's times {ratio.mean():.4g}: check how you normalise the basis", kit * ratio.mean()

    return _compare("norms per frequency", learner, kit, NORM_TOLERANCE * max(1e-12, float(kit.max())), locate, mistakes,
                    f" (p = {p}; largest at frequency {int(np.argmax(kit)) + 1})")
