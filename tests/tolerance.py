"""One rule for comparing float32 results in the tests: a tolerance that comes from the values, never a bare 1e-5.

Two float32 computations of the same quantity (the lean forward and the bridge, a batched run and a
row-by-row one, one CPU's kernels and another's) differ by rounding, and rounding is relative: each
float32 operation errs by at most eps32 = 2**-23 (about 1.19e-7) of the magnitudes it combines.
How far two results drift apart depends on the CPU (AVX2, AVX-512 and the portable kernels sum in
other orders), so a bare atol=1e-5 that holds on one machine fails on the next (logits reaching 9.6
that differed by 1.96e-5 on an AMD EPYC: 17 eps32 of their scale). The tolerance is therefore

    tolerance = ulps * eps32 * scale

* ``scale`` is the magnitude the rounding is relative to: by default max |expected| (for logits, the
  largest logit). A test names another where the error comes from elsewhere: a softmax's
  probabilities inherit the absolute error of their logits, so they take the logits' scale; a
  normalised logit difference takes the logits' scale over its denominator (``normalised_scale``).
* ``ulps`` is how many eps32 of the scale a few layers of float32 sums may accumulate: ``ULPS`` by
  default. On the tests' models (two or three layers, widths up to 128) the largest gap measured was
  19 eps32 of the scale (AVX-512 with threads, and the portable kernels on one thread), 17 on the AMD
  EPYC; ``ULPS`` leaves six times that, and is still far below a fault (a wrong weight, a missed
  hook or a stale cache moves logits by 1e-3 or more: thousands of times the tolerance's ulps).
* ``reference=`` (optional): the same quantity computed in float64 (e.g. on ``copy.deepcopy(model).double()``).
  Its gap max |expected - reference| is how far float32 rounding moved the expected value on this
  machine; the tolerance is then at least ``GAP_FACTOR`` times that gap, so a machine that rounds
  worse than the ones measured still passes while the tolerance stays tied to the values.

"Differs by more than rounding" is ``not is_close(...)``, with ulps a multiple of ``ULPS`` where a
later assert_close must be able to tell the two apart. Claims of the same arithmetic (not only the
same function) are made in float64 with tight tolerances written where they are made, and exact
quantities (tokens, argmax, counts, the same call twice) are compared with ==.
"""
from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23
ULPS = 128
GAP_FACTOR = 8


def as_array(x) -> np.ndarray:
    """A float64 numpy copy of a torch tensor, numpy array, pandas Series, list or Python number."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().double().numpy()
    elif hasattr(x, "to_numpy"):  # pandas
        x = x.to_numpy()
    return np.asarray(x, dtype=np.float64)


def magnitude(x) -> float:
    """max |x| over the finite entries (0.0 where there are none)."""
    x = as_array(x)
    finite = np.abs(x[np.isfinite(x)])
    return float(finite.max()) if finite.size else 0.0


def max_difference(actual, expected) -> float:
    """max |actual - expected| (expected may be a number); entries equal in both (infinities too) count 0, NaN counts inf."""
    actual, expected = as_array(actual), as_array(expected)
    if expected.ndim and actual.shape != expected.shape:
        raise AssertionError(f"shapes differ: actual {actual.shape}, expected {expected.shape}")
    expected = np.broadcast_to(expected, actual.shape)
    with np.errstate(invalid="ignore"):
        diff = np.where(actual == expected, 0.0, np.abs(actual - expected))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max()) if diff.size else 0.0


def float32_tolerance(scale, ulps: float = ULPS) -> float:
    """ulps * eps32 * scale, where ``scale`` is a number or values whose largest finite magnitude is the scale."""
    return ulps * EPS32 * magnitude(scale)


def _check(actual, expected, scale, ulps, reference) -> tuple[float, float, str]:
    """(max difference, tolerance, how the tolerance was made)."""
    scale_value = magnitude(expected if scale is None else scale)
    tol = float32_tolerance(scale_value, ulps)
    how = f"{ulps} x eps32 ({EPS32:.3g}) x scale {scale_value:.4g} ({'max |expected|' if scale is None else 'given'})"
    if reference is not None:
        gap = max_difference(expected, reference)
        if GAP_FACTOR * gap > tol:
            tol = GAP_FACTOR * gap
            how += f", raised to {GAP_FACTOR} x the gap {gap:.3g} between expected and its float64 reference"
    return max_difference(actual, expected), tol, how


def is_close(actual, expected, *, scale=None, ulps: float = ULPS, reference=None) -> bool:
    """Whether ``assert_close`` with these arguments passes."""
    diff, tol, _ = _check(actual, expected, scale, ulps, reference)
    return diff <= tol


def assert_close(actual, expected, *, scale=None, ulps: float = ULPS, reference=None, what: str = "") -> None:
    """Assert max |actual - expected| <= ulps * eps32 * scale (the module's rule; see its docstring).

    actual, expected: torch tensors, numpy arrays, pandas Series or Python numbers of one shape (expected may be a
    number). scale: a number, or values whose largest finite magnitude is the scale; default: expected's.
    reference: the same quantity computed in float64; the tolerance is at least GAP_FACTOR x its gap to ``expected``.
    """
    diff, tol, how = _check(actual, expected, scale, ulps, reference)
    assert diff <= tol, f"{what + ': ' if what else ''}max |actual - expected| = {diff:.3g} exceeds the tolerance {tol:.3g} = {how}"


def normalised_scale(logits, clean_value: float, corrupted_value: float) -> float:
    """The scale of a normalised logit difference (raw - corrupted) / (clean - corrupted): the logits' scale over the
    denominator, since each raw logit difference carries rounding relative to the logits it subtracts."""
    return magnitude(logits) / abs(clean_value - corrupted_value)


def normalised_logit_scale(model, task, clean, corrupted, answer_position: int) -> float:
    """``normalised_scale`` of ``patch_pair``'s normalised logit difference for clean and corrupted (a, b): the bridge's
    clean and corrupted runs give the logits and the denominator."""
    import torch

    from equiv_tools.analysis.patching import answered_tokens, logit_difference

    clean_tokens, corrupted_tokens = answered_tokens(model, task, *clean), answered_tokens(model, task, *corrupted)
    raw = logit_difference(task, clean_tokens, corrupted_tokens, answer_position)
    with torch.no_grad():
        clean_logits, corrupted_logits = model(clean_tokens[:, :-1]), model(corrupted_tokens[:, :-1])
    return normalised_scale(torch.cat([clean_logits, corrupted_logits]), float(raw(clean_logits)), float(raw(corrupted_logits)))
