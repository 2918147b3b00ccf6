"""Fourier analysis and progress measures of modular-addition models (Nanda et al., 2023), as small pure functions.

For a ``ModularTask`` with modulus p, the Fourier basis over Z_p lives on the p number tokens 0..p-1 (the
``=`` token, p, is left out). Its components, in order: the constant, then cos and sin of each frequency
k = 1..p//2 (for even p the last frequency p/2 has only its cosine). The analyses:

* the embedding's norm per component and per frequency, and its top and key frequencies;
* each MLP neuron's dominant frequency over the p x p grid of inputs, and the key frequencies from the neurons;
* restricted loss (logits kept only along cos/sin of w_k(a+b) for the key frequencies k, plus each output's
  mean) and excluded loss (those directions removed), total weight norm and Fourier sparsity (Gini);

Every forward runs through the TransformerBridge (``model(tokens)``, ``run_with_cache``), so attached hooks
are honoured. Results are tidy DataFrames.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import ModularTask, Task
from equiv_tools.forward.lean import lean_forward
from equiv_tools.runs.models import Run

NEURON_HOOK = "blocks.0.mlp.hook_post"  # the MLP's activations after the ReLU: [batch, pos, d_mlp]
NEURON_THRESHOLD = 0.85  # a neuron belongs to its dominant frequency when that frequency explains this share of its variance


def modular_task(task: Task, what: str) -> ModularTask:
    if not isinstance(task, ModularTask):
        raise InputError(f"{what} needs a modular task (tokens a b =), got {task.describe()}")
    return task


# --- the basis -----------------------------------------------------------------------------------------


def fourier_components(p: int) -> pd.DataFrame:
    """One row per basis component of Z_p, in basis order: ``component`` (0..p-1), ``frequency`` (0 for the
    constant), ``kind`` ("const", "cos" or "sin")."""
    rows = [(0, "const")]
    for k in range(1, p // 2 + 1):
        rows.append((k, "cos"))
        if 2 * k != p:  # sin(pi x) vanishes on the integers
            rows.append((k, "sin"))
    return pd.DataFrame({"component": range(p), "frequency": [k for k, _ in rows], "kind": [kind for _, kind in rows]})


def fourier_basis(p: int) -> np.ndarray:
    """The orthonormal Fourier basis of functions on Z_p: [p components, p points], rows as ``fourier_components``."""
    x = np.arange(p)
    waves = {"const": lambda k: np.ones(p), "cos": lambda k: np.cos(2 * np.pi * k * x / p), "sin": lambda k: np.sin(2 * np.pi * k * x / p)}
    components = fourier_components(p)
    rows = [waves[kind](k) for k, kind in zip(components.frequency, components.kind)]
    basis = np.stack(rows)  # [component, x]
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


# --- the embedding -------------------------------------------------------------------------------------


def number_embedding(model, p: int) -> np.ndarray:
    """The embedding of the p number tokens, ``=`` left out: [p, d_model], float64."""
    return model.embed.weight.detach().double().cpu().numpy()[:p]


def embedding_fourier(model, p: int) -> pd.DataFrame:
    """The embedding in the Fourier basis: one row per component with ``component``, ``frequency``, ``kind`` and
    ``norm``, the L2 norm over d_model of that component's coefficients (``fourier_basis(p) @ W_E[:p]``, [p, d_model])."""
    coefficients = fourier_basis(p) @ number_embedding(model, p)  # [component, d_model]
    return fourier_components(p).assign(norm=np.linalg.norm(coefficients, axis=1))


def embedding_frequency_norms(model, p: int) -> pd.DataFrame:
    """One row per frequency k = 1..p//2: ``frequency``, ``norm`` (sqrt of the cos and sin components' squared
    norms) and ``share`` (its part of the embedding's squared norm outside the constant)."""
    frame = embedding_fourier(model, p)
    frame = frame[frame.kind != "const"].assign(square=lambda f: f.norm**2)
    per_frequency = frame.groupby("frequency", as_index=False).square.sum()
    return pd.DataFrame({"frequency": per_frequency.frequency, "norm": np.sqrt(per_frequency.square),
                         "share": per_frequency.square / per_frequency.square.sum()})


def top_frequencies(norms: pd.DataFrame, n: int = 5) -> list[int]:
    """The ``n`` frequencies of an ``embedding_frequency_norms`` frame with the largest norm, largest first."""
    return [int(k) for k in norms.sort_values("norm", ascending=False, kind="stable").frequency[:n]]


def embedding_key_frequencies(norms: pd.DataFrame, min_share: Optional[float] = None) -> list[int]:
    """Frequencies of an ``embedding_frequency_norms`` frame whose share is at least ``min_share`` (default: three
    times a flat spectrum's share, 3 / (p//2)), largest first."""
    min_share = 3 / len(norms) if min_share is None else min_share
    return [int(k) for k in norms[norms.share >= min_share].sort_values("share", ascending=False).frequency]


def gini(values) -> float:
    """Gini coefficient of non-negative values [n]: 0 when all are equal, towards 1 when one holds everything."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0 or x.sum() == 0:
        return 0.0
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * x) / (n * x.sum()))


def fourier_sparsity(model, p: int) -> float:
    """Gini coefficient of the embedding's per-frequency norms: near 1 when a few frequencies carry the embedding."""
    return gini(embedding_frequency_norms(model, p).norm)


def total_weight_norm(model) -> float:
    """The L2 norm of all the model's parameters together, sqrt(sum of squares): what weight decay shrinks."""
    return math.sqrt(sum(float((w.detach().double() ** 2).sum()) for w in model.parameters()))


# --- the model over all p^2 inputs ---------------------------------------------------------------------


def all_pair_tokens(task: ModularTask) -> torch.Tensor:
    """Tokens ``a b =`` of all p^2 pairs, a varying slowest: [p*p, 3]."""
    a, b = task.grid(range(task.p), range(task.p))
    return torch.from_numpy(task.encode_prompt(a, b))


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def grid_logits(model, task: ModularTask) -> torch.Tensor:
    """The logits at the last position for every pair: [p, p, d_vocab_out].

    The lean forward computes them where ``lean_forward(model)`` allows (the bridge's logits to float
    rounding, last position only); with hooks attached, the bridge does (hooks honoured).
    """
    tokens = all_pair_tokens(task).to(_device(model))  # [p*p, 3]
    lean = lean_forward(model)
    if lean is not None:
        logits = lean(tokens, logits_from=tokens.shape[1] - 1)[:, -1]  # [p*p, d_vocab_out]
    else:
        logits = model(tokens)[:, -1]
    return logits.double().cpu().reshape(task.p, task.p, -1)


@torch.no_grad()
def grid_neurons(model, task: ModularTask) -> np.ndarray:
    """The MLP's activations at the last position for every pair (``blocks.0.mlp.hook_post``): [p, p, d_mlp]."""
    _, cache = model.run_with_cache(all_pair_tokens(task).to(_device(model)), names_filter=NEURON_HOOK)
    return cache[NEURON_HOOK][:, -1].double().cpu().numpy().reshape(task.p, task.p, -1)


def neuron_frequencies(model, task: Task) -> pd.DataFrame:
    """Each neuron's dominant frequency: one row per neuron with ``neuron``, ``frequency`` and ``explained``.

    A neuron's activations over the grid [p, p] are written in the 2D Fourier basis (coefficients
    ``B @ acts @ B.T``, [p, p]); frequency k's terms are the components whose a-index and b-index are the
    constant or k's cos/sin, except constant x constant. ``explained`` is the share of the neuron's variance
    (all non-constant terms) in its best frequency's terms; a dead neuron gets frequency 0 and explained 0.
    """
    task = modular_task(task, "neuron_frequencies")
    basis, components = fourier_basis(task.p), fourier_components(task.p)
    coefficients = np.einsum("ia,jb,abn->ijn", basis, basis, grid_neurons(model, task), optimize=True) ** 2  # [p, p, d_mlp], squared
    variance = coefficients.sum(axis=(0, 1)) - coefficients[0, 0]  # [d_mlp]
    shares = []
    for k in range(1, task.p // 2 + 1):
        idx = [0, *components.index[components.frequency == k]]
        shares.append(coefficients[np.ix_(idx, idx)].sum(axis=(0, 1)) - coefficients[0, 0])  # [d_mlp]
    shares = np.stack(shares) / np.where(variance > 0, variance, 1.0)  # [frequency, d_mlp]
    dead = variance <= 1e-12
    return pd.DataFrame({"neuron": np.arange(shares.shape[1]), "frequency": np.where(dead, 0, shares.argmax(0) + 1),
                         "explained": np.where(dead, 0.0, shares.max(0))})


def neuron_activations(model, task: Task, neurons: Sequence[int]) -> pd.DataFrame:
    """The chosen neurons' activations at the last position over the p x p grid: one row per (neuron, a, b), with
    ``activation``. Pick neurons of a key frequency from ``neuron_frequencies`` (e.g. the most explained)."""
    task = modular_task(task, "neuron_activations")
    acts = grid_neurons(model, task)  # [p, p, d_mlp]
    a, b = np.meshgrid(np.arange(task.p), np.arange(task.p), indexing="ij")
    frames = [pd.DataFrame({"neuron": int(n), "a": a.reshape(-1), "b": b.reshape(-1), "activation": acts[:, :, n].reshape(-1)})
              for n in neurons]
    return pd.concat(frames, ignore_index=True)


def neuron_key_frequencies(neurons: pd.DataFrame, threshold: float = NEURON_THRESHOLD, min_neurons: Optional[int] = None) -> list[int]:
    """Frequencies that explain at least ``threshold`` of the variance of at least ``min_neurons`` neurons (default:
    1% of them, at least 1) in a ``neuron_frequencies`` frame; the largest clusters first."""
    min_neurons = max(1, math.ceil(0.01 * len(neurons))) if min_neurons is None else min_neurons
    counts = neurons[(neurons.explained >= threshold) & (neurons.frequency > 0)].frequency.value_counts()
    return [int(k) for k, count in counts.items() if count >= min_neurons]


# --- restricted and excluded loss ----------------------------------------------------------------------


def check_frequencies(p: int, frequencies: Sequence[int]) -> list[int]:
    """``frequencies`` as a list, refused unless each is a whole number in 1..p//2 and none repeats.

    Frequency k and p - k (and -k) name the same cos/sin pair, and 0 is the constant, which the restricted
    loss keeps anyway: counting a direction twice would remove it twice from the excluded logits.
    """
    out = []
    for k in frequencies:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InputError(f"frequencies must be whole numbers, got {k!r}")
        k = int(k)
        if not 1 <= k <= p // 2:
            alias = f"; {k} is the same frequency as {min(k % p, -k % p)}" if k % p and min(k % p, -k % p) else ""
            raise InputError(f"frequencies must lie in 1..{p // 2} for p = {p} (0 is the constant, and k and p - k are one frequency), "
                             f"got {k}{alias}")
        if k in out:
            raise InputError(f"frequency {k} is given twice; each key frequency counts once")
        out.append(k)
    return out


def sum_directions(p: int, frequencies: Sequence[int]) -> np.ndarray:
    """Unit vectors over the p x p grid along cos(w_k(a+b)) and sin(w_k(a+b)), w_k = 2 pi k / p, for each k:
    [directions, p, p]. They are orthogonal to each other and to the constant; a vanishing one (sin at k = p/2) is left out.
    ``frequencies`` are checked by ``check_frequencies``."""
    frequencies = check_frequencies(p, frequencies)
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    out = []
    for k in frequencies:
        for wave in (np.cos, np.sin):
            d = wave(2 * np.pi * k * (a + b) / p)
            if np.linalg.norm(d) > 1e-9:
                out.append(d / np.linalg.norm(d))
    return np.stack(out) if out else np.zeros((0, p, p))


def key_component(logits: torch.Tensor, p: int, frequencies: Sequence[int]) -> torch.Tensor:
    """The part of grid logits [p, p, vocab] along the key frequencies' cos/sin(w_k(a+b)) directions: [p, p, vocab]."""
    directions = torch.from_numpy(sum_directions(p, frequencies)).to(logits)  # [direction, p, p]
    coefficients = torch.einsum("dab,abv->dv", directions, logits)  # [direction, vocab]
    return torch.einsum("dab,dv->abv", directions, coefficients)


def _loss(logits: torch.Tensor, p: int, mask: Optional[np.ndarray]) -> float:
    """Mean cross-entropy of grid logits [p, p, vocab] against (a + b) mod p, over the pairs where ``mask`` [p, p] is True."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    keep = np.ones((p, p), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    target = torch.from_numpy((a + b)[keep] % p)
    return float(F.cross_entropy(logits[torch.from_numpy(keep)], target))


def fourier_losses(model, task: Task, frequencies: Sequence[int], excluded_mask: Optional[np.ndarray] = None) -> dict:
    """``loss`` and ``restricted_loss`` over all p^2 pairs, ``excluded_loss`` over ``excluded_mask`` [p, p]
    (default: all pairs; Nanda et al. use the training pairs).

    restricted: each output's logits keep only their mean over the grid and their parts along cos/sin(w_k(a+b))
    for the key ``frequencies`` k; excluded: the logits with those parts removed. Addition only.
    """
    task = modular_task(task, "restricted and excluded loss")
    if task.op != "add":
        raise InputError(f"restricted and excluded loss follow cos/sin(w(a+b)); {task.describe()} is not addition")
    frequencies = check_frequencies(task.p, frequencies)  # before the grid is run
    logits = grid_logits(model, task)  # [p, p, vocab]
    key = key_component(logits, task.p, frequencies)
    restricted = logits.mean(dim=(0, 1), keepdim=True) + key
    return {"loss": _loss(logits, task.p, None), "restricted_loss": _loss(restricted, task.p, None),
            "excluded_loss": _loss(logits - key, task.p, excluded_mask)}


def cos_logit_fit(model, task: Task, frequencies: Sequence[int]) -> tuple[pd.DataFrame, float]:
    """Nanda et al.'s closed form of the logits: logit(c | a, b) ~ sum_k alpha_k cos(w_k (a + b - c)), w_k = 2 pi k / p.

    Fits one coefficient per key frequency by least squares to the logits of the p number outputs over all
    p^2 inputs, each input's logits centred (softmax ignores a constant per input). Returns (one row per
    frequency: ``frequency``, ``coefficient``) and the fraction of the centred logits' variance the fit explains.
    """
    task = modular_task(task, "the cos(w(a + b - c)) fit of the logits")
    if task.op != "add":
        raise InputError(f"the logits follow cos(w(a + b - c)) for addition; {task.describe()} is not addition")
    frequencies = check_frequencies(task.p, frequencies)
    p = task.p
    logits = grid_logits(model, task)[:, :, :p].double()  # [a, b, c]
    logits = logits - logits.mean(dim=2, keepdim=True)
    a, b, c = torch.meshgrid(torch.arange(p), torch.arange(p), torch.arange(p), indexing="ij")
    waves = torch.stack([torch.cos(2 * math.pi * k * (a + b - c).double() / p) for k in frequencies])  # [k, a, b, c]
    coefficients = torch.einsum("kabc,abc->k", waves, logits) / waves.pow(2).sum(dim=(1, 2, 3))  # the waves are orthogonal
    residual = logits - torch.einsum("k,kabc->abc", coefficients, waves)
    explained = 1.0 - float(residual.pow(2).sum() / logits.pow(2).sum())
    return pd.DataFrame({"frequency": frequencies, "coefficient": coefficients.tolist()}), explained


def train_mask(run: Run) -> tuple[Optional[np.ndarray], str]:
    """([p, p] bool, True on the run's training pairs) and "train split" for runs trained here; (None, "all pairs") otherwise."""
    if run.config.training is None:
        return None, "all pairs"
    cfg = run.config.training
    (a, b), _ = run.task.id_split(cfg.seed, cfg.n_train, cfg.n_test)
    mask = np.zeros((run.task.p, run.task.p), dtype=bool)
    mask[a, b] = True
    return mask, "train split"


# --- one model ------------------------------------------------------------------


def key_frequencies(model, task: Task) -> list[int]:
    """The key frequencies from the neurons (``neuron_key_frequencies`` with its defaults)."""
    return neuron_key_frequencies(neuron_frequencies(model, task))


def progress_measures(model, task: Task, frequencies: Sequence[int], excluded_mask: Optional[np.ndarray] = None) -> pd.DataFrame:
    """One row: ``loss``, ``restricted_loss``, ``excluded_loss`` (see ``fourier_losses``, key ``frequencies``),
    ``total_weight_norm``, ``fourier_sparsity``."""
    task = modular_task(task, "progress_measures")
    return pd.DataFrame([{**fourier_losses(model, task, frequencies, excluded_mask),
                          "total_weight_norm": total_weight_norm(model), "fourier_sparsity": fourier_sparsity(model, task.p)}])


def fourier_summary(run: Run, n_top: int = 5) -> dict:
    """What ``equiv-tools fourier --json`` prints: p, the embedding's top and key frequencies, the neurons' key
    frequencies (``key_frequencies``, used for the losses) and the progress measures of the run's model."""
    task = modular_task(run.task, "fourier analysis")
    norms = embedding_frequency_norms(run.model, task.p)
    keys = key_frequencies(run.model, task)
    mask, excluded_on = train_mask(run)
    measures = progress_measures(run.model, task, keys, mask).iloc[0].to_dict()
    return {"run": str(run.path), "p": task.p, "embedding_top_frequencies": top_frequencies(norms, n_top),
            "embedding_key_frequencies": embedding_key_frequencies(norms), "key_frequencies": keys,
            **{k: float(v) for k, v in measures.items()}, "excluded_loss_pairs": excluded_on}
