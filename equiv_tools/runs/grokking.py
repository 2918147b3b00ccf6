"""When a run groks: the step at which test accuracy reaches a level and holds it."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from equiv_tools.core.errors import InputError


def grokked_step(metrics: pd.DataFrame, split: str = "id_test", level: float = 0.99, floor: float = 0.98,
                 margin: float = 0.2) -> Optional[int]:
    """The first evaluated step at which ``split`` accuracy reaches ``level`` and holds, or None.

    Holds: every later evaluation is at or above ``floor``, and the run went on for at least
    ``margin`` (a fraction) more steps, so a run that only touches the level at its end does not count.
    ``metrics``: a tidy metrics frame (step, split, loss, accuracy), as ``train`` returns.
    """
    rows = metrics[metrics.split == split].sort_values("step")
    if rows.empty:
        raise InputError(f"the metrics have no {split!r} rows; splits present: {sorted(metrics.split.unique())}")
    steps, acc = rows.step.to_numpy(), rows.accuracy.to_numpy()
    last = steps[-1]
    for i in range(len(steps)):
        if acc[i] >= level and (acc[i:] >= floor).all() and last >= (1 + margin) * steps[i]:
            return int(steps[i])
    return None


PHASES = ("memorisation", "circuit formation", "cleanup")


def grokking_phases(metrics: pd.DataFrame, level: float = 0.99) -> pd.DataFrame:
    """Nanda et al.'s three phases of a grokking run, from its metrics: one row per phase (phase, start, end).

    memorisation: from step 0 until train accuracy first reaches ``level``; circuit formation: from then
    until test loss first falls below its value at step 0 (chance level; until then the model does worse
    than chance on the test pairs); cleanup: from then to the end. ``metrics``: step, split, loss, accuracy
    with ``train`` and ``id_test`` rows. Raises InputError when the run never memorises or never recovers.
    """
    train = metrics[metrics.split == "train"].sort_values("step")
    test = metrics[metrics.split == "id_test"].sort_values("step")
    if train.empty or test.empty:
        raise InputError("grokking_phases needs 'train' and 'id_test' rows in the metrics")
    memorised = train[train.accuracy >= level]
    if memorised.empty:
        raise InputError(f"train accuracy never reaches {level}: the run did not memorise its training pairs")
    m = int(memorised.step.iloc[0])
    chance = float(test.loss.iloc[0])
    recovering = test[(test.step > m) & (test.loss < chance)]
    if recovering.empty:
        raise InputError(f"test loss never falls below its step-0 value {chance:.3f} after memorisation (step {m})")
    c, end = int(recovering.step.iloc[0]), int(test.step.iloc[-1])
    return pd.DataFrame({"phase": PHASES, "start": [0, m, c], "end": [m, c, end]})


def memorised_step(metrics: pd.DataFrame, level: float = 0.99) -> Optional[int]:
    """The first evaluated step at which train accuracy reaches ``level``, or None if it never does."""
    train = metrics[metrics.split == "train"].sort_values("step")
    reached = train[train.accuracy >= level]
    return None if reached.empty else int(reached.step.iloc[0])


def train_accuracy_floor(metrics: pd.DataFrame, level: float = 0.99) -> Optional[float]:
    """The lowest train accuracy from the step it first reaches ``level`` on (None if it never does). A run whose
    floor stays high memorised once; a low floor is a collapse, as large learning rates with Adam give
    (the slingshot: Thilak et al. 2022)."""
    step = memorised_step(metrics, level)
    if step is None:
        return None
    train = metrics[(metrics.split == "train") & (metrics.step >= step)]
    return float(train.accuracy.min())


def is_clean(metrics: pd.DataFrame, floor: float = 0.95, level: float = 0.99) -> bool:
    """Whether a run memorised without collapsing: train accuracy never below ``floor`` after it first reached ``level``."""
    lowest = train_accuracy_floor(metrics, level)
    return lowest is not None and lowest >= floor


def plateau(metrics: pd.DataFrame, ceiling: float = 0.10, level: float = 0.99) -> Optional[tuple[int, int]]:
    """The plateau after memorisation: (the step train accuracy first reaches ``level``, the last evaluated step
    from then on before test accuracy first rises above ``ceiling``). None when the run never memorises, when test
    accuracy is already above ``ceiling`` at memorisation (no plateau), or when no test evaluation follows."""
    start = memorised_step(metrics, level)
    if start is None:
        return None
    test = metrics[(metrics.split == "id_test") & (metrics.step >= start)].sort_values("step")
    above = (test.accuracy > ceiling).to_numpy()
    if not len(above) or above[0]:
        return None
    last = len(test) - 1 if not above.any() else above.argmax() - 1
    return start, int(test.step.iloc[last])
