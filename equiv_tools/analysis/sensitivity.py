"""Which input digits does a model read? Resample one operand digit and count the answer digits that change.

For each operand digit position, every input gets a different digit there
(drawn at random, keeping the operand's digit count: a leading digit stays
non-zero, and padding zeros above the leading digit are never touched), the
model decodes greedily again, and each answer position's change rate is the
share of inputs whose answer digit there differs from the original answer's.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from equiv_tools.core.errors import InputError
from equiv_tools.core.tasks import DigitTask
from equiv_tools.forward.decoding import greedy_decode


def digit_count(x: np.ndarray) -> np.ndarray:
    """Digits of each non-negative integer, 0 having one: int64 [n]."""
    x = np.asarray(x, dtype=np.int64)
    count = np.ones_like(x)
    for k in range(1, 19):
        count += x >= 10**k
    return count


def resample_digit(task: DigitTask, a, b, position: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a', b', valid): operands [n] with the digit at prompt ``position`` replaced by a different random digit.

    ``position`` indexes ``task.position_names()`` (0 is a's most significant padded digit). Where the
    position lies above the operand's leading digit, ``valid`` [n] is False and the operands are unchanged;
    a leading digit (of an operand with two or more digits) is redrawn from 1-9, any other digit from 0-9.
    """
    a, b = task.check_operands(a, b)
    if not 0 <= position < task.prompt_len:
        raise InputError(f"position must index an operand digit, 0 to {task.prompt_len - 1}; got {position}")
    rng = np.random.default_rng([seed, position])
    x = a if position < task.width else b
    power = task.width - 1 - position % task.width
    digit = (x // 10**power) % 10
    count = digit_count(x)
    valid = power < count
    leading = (power == count - 1) & (count > 1)
    other_digit = (digit + rng.integers(1, 10, x.size)) % 10  # uniform over the 9 other digits
    other_leading = 1 + (digit - 1 + rng.integers(1, 9, x.size)) % 9  # uniform over the 8 other digits 1-9
    new = np.where(leading, other_leading, other_digit)
    changed = np.where(valid, x + (new - digit) * 10**power, x)
    return (changed, b, valid) if position < task.width else (a, changed, valid)


def digit_sensitivity(model, task: DigitTask, a, b, seed: int = 0, batch_size: int = 4096) -> pd.DataFrame:
    """Change rates on inputs (a, b), each [n]: one row per operand position x answer position.

    Columns: operand_position, answer_position (names from ``task.position_names()``), change_rate
    (NaN where no input has a digit there) and n (inputs with a digit there). All resampled inputs
    are decoded in one ``greedy_decode`` call, so the user's hooks apply.
    """
    if not isinstance(task, DigitTask):
        raise InputError(f"digit sensitivity needs a task in the digit layout, not {task.describe()}")
    a, b = task.check_operands(a, b)
    base = greedy_decode(model, task, a, b, batch_size=batch_size)  # [n, answer_len]
    resampled = [resample_digit(task, a, b, p, seed) for p in range(task.prompt_len)]
    new_a = np.concatenate([ra[valid] for ra, _, valid in resampled])
    new_b = np.concatenate([rb[valid] for _, rb, valid in resampled])
    new = greedy_decode(model, task, new_a, new_b, batch_size=batch_size)  # [sum of valid, answer_len]
    names = task.position_names()
    answer_names = names[task.prompt_len :]
    rows, start = [], 0
    for p, (_, _, valid) in enumerate(resampled):
        n = int(valid.sum())
        changed = new[start : start + n] != base[valid]  # [n, answer_len]
        start += n
        rates = changed.mean(axis=0) if n else np.full(task.answer_len, np.nan)
        rows.extend({"operand_position": names[p], "answer_position": answer_names[k], "change_rate": float(rates[k]), "n": n}
                    for k in range(task.answer_len))
    return pd.DataFrame(rows)


def input_sensitivity(model, task: DigitTask, n: int = 1000, ood_digits: Optional[int] = None, seed: int = 0,
                      batch_size: int = 4096) -> pd.DataFrame:
    """``digit_sensitivity`` on ``n`` random ID pairs and ``n`` OOD pairs (``task.sample_ood(n, ood_digits)``), with a split column (id, ood)."""
    id_frame = digit_sensitivity(model, task, *task.sample_id(n, seed=seed), seed=seed, batch_size=batch_size)
    ood_frame = digit_sensitivity(model, task, *task.sample_ood(n, ood_digits, seed=seed), seed=seed, batch_size=batch_size)
    return pd.concat([id_frame.assign(split="id"), ood_frame.assign(split="ood")], ignore_index=True)
