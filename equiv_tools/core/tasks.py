"""What a problem is: operands, token layout, ground truth, ID/OOD splits and grids.

Two layouts:

* the paper's digit layout (``AdditionTask``, ``MultiplicationTask``,
  ``ModularDigitTask``): a vocabulary of the digits 0-9; both operands
  zero-padded to ``width`` digits, most significant first; then the answer,
  zero-padded to ``answer_len`` digits and written least significant first.
  349 + 705 with width 5 is ``00349 00705 450100``. The model sees the
  ``2 * width`` operand digits and decodes the answer greedily.
* the grokking layout (``ModularTask``): ``a b =`` and one answer token,
  vocabulary ``p + 1`` (``=`` is token ``p``).

Everything here is numpy (int64); token arrays have shape [batch, positions].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Optional, Sequence

import numpy as np

from equiv_tools.core import relations as R
from equiv_tools.core.errors import InputError

MAX_WIDTH = 9  # keeps products of two operands below 2**63


def parse_operand(text: str, name: str = "operand") -> int:
    """Parse a non-negative decimal integer typed by a user; raise InputError otherwise."""
    stripped = str(text).strip()
    if not stripped.isdigit() or not stripped.isascii():
        raise InputError(f"{name} must be a non-negative whole number written in digits 0-9, got {text!r}")
    return int(stripped)


def _as_int_array(x, name: str) -> np.ndarray:
    """Whole numbers (ints, or floats with integral values) as a flat int64 array; InputError otherwise."""
    try:
        arr = np.asarray(x)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise TypeError
        if arr.dtype.kind not in "iuf" and not (arr.dtype == object and all(isinstance(v, (int, np.integer)) for v in arr.flat)):
            raise TypeError
        if arr.dtype.kind == "f" and arr.size and np.abs(arr).max() >= 2**62:
            raise OverflowError
        return np.atleast_1d(arr.astype(np.int64)).reshape(-1)
    except OverflowError:
        raise InputError(f"{name} is too large: the kit handles operands of at most {MAX_WIDTH} digits") from None
    except (TypeError, ValueError):
        raise InputError(f"{name} must be whole numbers, got {x!r}") from None


def _digits_msb_first(values: np.ndarray, width: int) -> np.ndarray:
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers) % 10


def _digits_lsb_first(values: np.ndarray, width: int) -> np.ndarray:
    powers = 10 ** np.arange(width, dtype=np.int64)
    return (values[:, None] // powers) % 10


class Task:
    """Shared interface. Subclasses are frozen dataclasses."""

    kind: ClassVar[str]
    has_ood: ClassVar[bool]
    symbol: str  # the operation between the operands: '+' or '*'
    d_vocab: int
    prompt_len: int
    answer_len: int
    max_operand: int

    @property
    def n_ctx(self) -> int:
        """Positions the model sees: the prompt and all answer tokens but the last."""
        return self.prompt_len + self.answer_len - 1

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.answer_len

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def position_names(self) -> list[str]:
        """A name for every token position of a full sequence [seq_len]; the model sees the first ``n_ctx``."""
        raise NotImplementedError

    def check_operands(self, a, b) -> tuple[np.ndarray, np.ndarray]:
        """Validate operands and return them as int64 arrays of shape [n]."""
        a = _as_int_array(a, "a")
        b = _as_int_array(b, "b")
        if a.shape != b.shape:
            if a.size == 1:
                a = np.full_like(b, a[0])
            elif b.size == 1:
                b = np.full_like(a, b[0])
            else:
                raise InputError(f"a and b must have the same length, got {a.size} and {b.size}")
        for name, x in (("a", a), ("b", b)):
            if x.size and x.min() < 0:
                raise InputError(f"operand {name}={int(x.min())} is negative; the tasks take non-negative integers")
            if x.size and x.max() > self.max_operand:
                raise InputError(
                    f"operand {name}={int(x.max())} is too wide for {self.describe()}, which holds at most "
                    f"{self.max_operand}; use a smaller operand or a task with a larger width"
                )
        return a, b

    @property
    def id_size(self) -> int:
        """Number of ID pairs: ``id_limit**2``."""
        return self.id_limit**2

    def sample_id(self, n: int, seed: int = 0, replace: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``n`` uniform ID pairs, with or without replacement: (a, b), each [n]."""
        rng = np.random.default_rng(seed)
        if replace:
            return rng.integers(0, self.id_limit, n), rng.integers(0, self.id_limit, n)
        if n > self.id_size:
            raise InputError(f"cannot draw {n} distinct ID pairs: {self.describe()} has {self.id_size}")
        idx = rng.choice(self.id_size, size=n, replace=False)
        return idx // self.id_limit, idx % self.id_limit

    def truth(self, a, b) -> np.ndarray:
        a, b = self.check_operands(a, b)
        return self.relations()[0](a, b)

    def encode(self, a, b, answers=None) -> np.ndarray:
        """Full sequences, prompt then answer: [n, seq_len]. ``answers`` defaults to the truth."""
        a, b = self.check_operands(a, b)
        answers = self.truth(a, b) if answers is None else np.asarray(answers, dtype=np.int64).reshape(-1)
        return np.concatenate([self.encode_prompt(a, b), self.encode_answer(answers)], axis=1)

    def decode(self, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inverse of ``encode``: tokens [n, seq_len] -> (a, b, answer), each [n]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        a, b = self.decode_prompt(tokens[:, : self.prompt_len])
        return a, b, self.decode_answer(tokens[:, self.prompt_len :])

    def _check_answers(self, values) -> np.ndarray:
        values = _as_int_array(values, "answer")
        if values.size and (values.min() < 0 or values.max() >= self.answer_limit):
            raise InputError(f"answers must lie in [0, {self.answer_limit}) for {self.describe()}")
        return values

    def relations(self) -> list[R.Relation]:
        """Candidate relations; the first is the ground truth."""
        raise NotImplementedError

    def relation(self, name: str) -> R.Relation:
        for rel in self.relations():
            if rel.name == name:
                return rel
        names = ", ".join(r.name for r in self.relations())
        raise InputError(f"unknown relation {name!r} for {self.describe()}; candidates are: {names}")

    def grid(self, a_values: Sequence[int], b_values: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """All pairs of ``a_values`` x ``b_values``, a varying slowest: (a, b), each [len(a) * len(b)]."""
        a_values, b_values = _as_int_array(a_values, "a"), _as_int_array(b_values, "b")
        a, b = np.meshgrid(a_values, b_values, indexing="ij")
        return self.check_operands(a.reshape(-1), b.reshape(-1))

    def describe(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in asdict(self).items())
        return f"{type(self).__name__}({fields})"


@dataclass(frozen=True)
class DigitTask(Task):
    """The paper's digit layout. ID: both operands below ``10**train_digits``."""

    train_digits: int = 3
    width: int = 5

    d_vocab: ClassVar[int] = 10
    has_ood: ClassVar[bool] = True  # operands wider than train_digits are out of distribution

    def __post_init__(self):
        for name in ("train_digits", "width"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.width > MAX_WIDTH:
            raise InputError(f"width={self.width} is too large; the kit supports operands of at most {MAX_WIDTH} digits")
        if self.train_digits > self.width:
            raise InputError(
                f"train_digits={self.train_digits} does not fit width={self.width}; use width >= train_digits"
            )

    @property
    def prompt_len(self) -> int:
        return 2 * self.width

    @property
    def max_operand(self) -> int:
        return 10**self.width - 1

    def is_in_distribution(self, a, b) -> np.ndarray:
        """Whether both operands are below ``10**train_digits``: bool [n]."""
        a, b = self.check_operands(a, b)
        return (a < self.id_limit) & (b < self.id_limit)

    @property
    def id_limit(self) -> int:
        """ID operands lie below this: ``10**train_digits``."""
        return 10**self.train_digits

    def position_names(self) -> list[str]:
        """``a[10^4] .. a[10^0] b[10^4] .. b[10^0] ans[10^0] .. ans[10^5]`` for width 5: operands most significant first, the answer units first."""
        operand = [f"10^{k}" for k in range(self.width - 1, -1, -1)]
        return [f"a[{p}]" for p in operand] + [f"b[{p}]" for p in operand] + [f"ans[10^{k}]" for k in range(self.answer_len)]

    def encode_prompt(self, a, b) -> np.ndarray:
        """Operand digits, each operand most significant first: [n, 2 * width]."""
        a, b = self.check_operands(a, b)
        return np.concatenate([_digits_msb_first(a, self.width), _digits_msb_first(b, self.width)], axis=1)

    def decode_prompt(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.asarray(tokens, dtype=np.int64)
        powers = 10 ** np.arange(self.width - 1, -1, -1, dtype=np.int64)
        return tokens[:, : self.width] @ powers, tokens[:, self.width : 2 * self.width] @ powers

    @property
    def answer_limit(self) -> int:
        """Answers the layout can hold lie in [0, answer_limit)."""
        return 10**self.answer_len

    def encode_answer(self, values) -> np.ndarray:
        """Answer digits, least significant first: [n, answer_len]."""
        values = self._check_answers(values)
        return _digits_lsb_first(values, self.answer_len)

    def decode_answer(self, tokens) -> np.ndarray:
        """Answer digits [n, answer_len] (least significant first) -> integers [n]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        return tokens @ (10 ** np.arange(tokens.shape[1], dtype=np.int64))

    def residue_relation(self) -> R.Relation:
        """The paper's equivalence relation: each operand reduced mod 10^train_digits before the operation.
        (``relations()`` lists the truth first, then the residue relations for k = 1..width.)"""
        return self.relations()[self.train_digits]

    def id_split(self, seed: int = 0, n_train: Optional[int] = None, n_test: Optional[int] = None):
        """Disjoint random ID train and test pairs: ((a, b) train, (a, b) test).

        Defaults: 10,000 each (the paper's split) where the ID pairs number at
        least 20,000, else 70% and 30% of them; a size left out fills what the
        other leaves, up to its default. Sizes beyond the ID pairs are refused.
        """
        default_train, default_test = (10_000, 10_000) if self.id_size >= 20_000 else (round(0.7 * self.id_size), self.id_size - round(0.7 * self.id_size))
        if n_train is None:
            n_train = max(1, min(default_train, self.id_size - (n_test or 0)))
        if n_test is None:
            n_test = max(0, min(default_test, self.id_size - n_train))
        if n_train < 1 or n_test < 0:
            raise InputError(f"n_train must be positive and n_test non-negative, got {n_train} and {n_test}")
        if n_train + n_test > self.id_size:
            raise InputError(
                f"n_train + n_test = {n_train} + {n_test} exceeds the {self.id_size} ID pairs of {self.describe()}; "
                f"ask for at most {self.id_size} in all"
            )
        idx = np.random.default_rng(seed).choice(self.id_size, size=n_train + n_test, replace=False)
        a, b = idx // self.id_limit, idx % self.id_limit
        return (a[:n_train], b[:n_train]), (a[n_train:], b[n_train:])

    def sample_ood(self, n: int, digits: Optional[int] = None, seed: int = 0, mode: str = "both"):
        """``n`` OOD pairs: (a, b), each [n].

        ``mode="both"`` (the paper's test): both operands have exactly ``digits``
        digits, a high part with a non-zero leading digit over a
        ``train_digits``-digit low part. ``mode="either"``: operands below
        ``10**digits`` with at least one of them at least ``10**train_digits``.
        """
        digits = self.train_digits + 1 if digits is None else digits
        if not self.train_digits < digits <= self.width:
            raise InputError(
                f"OOD digits must satisfy train_digits < digits <= width, i.e. {self.train_digits} < digits <= "
                f"{self.width} for {self.describe()}; got {digits}"
            )
        if n < 1:
            raise InputError(f"n must be positive, got {n}")
        rng = np.random.default_rng(seed)
        if mode == "both":
            low, high = 10 ** (digits - 1), 10**digits
            return rng.integers(low, high, n), rng.integers(low, high, n)
        if mode == "either":
            limit, high = 10**self.train_digits, 10**digits
            a, b = np.empty(0, np.int64), np.empty(0, np.int64)
            while a.size < n:
                ca, cb = rng.integers(0, high, 2 * n), rng.integers(0, high, 2 * n)
                keep = (ca >= limit) | (cb >= limit)
                a, b = np.concatenate([a, ca[keep]]), np.concatenate([b, cb[keep]])
            return a[:n], b[:n]
        raise InputError(f"mode must be 'both' or 'either', got {mode!r}")


@dataclass(frozen=True)
class AdditionTask(DigitTask):
    """n-digit addition in the paper's layout; the answer has ``width + 1`` digits."""

    kind: ClassVar[str] = "addition"
    symbol: ClassVar[str] = "+"

    @property
    def answer_len(self) -> int:
        return self.width + 1

    def relations(self) -> list[R.Relation]:
        ks = range(1, self.width + 1)
        return [R.SUM] + [R.sum_of_residues(k) for k in ks] + [R.sum_mod(k) for k in ks]


@dataclass(frozen=True)
class MultiplicationTask(DigitTask):
    """n-digit multiplication in the paper's layout; the answer has ``2 * width`` digits."""

    train_digits: int = 2
    width: int = 4

    kind: ClassVar[str] = "multiplication"
    symbol: ClassVar[str] = "*"

    @property
    def answer_len(self) -> int:
        return 2 * self.width

    def relations(self) -> list[R.Relation]:
        ks = range(1, self.width + 1)
        return [R.PRODUCT] + [R.product_of_residues(k) for k in ks] + [R.product_mod(k) for k in ks]


_MODULAR_OPS = ("add", "mul")


def _check_modulus(p, op):
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 2:
        raise InputError(f"the modulus p must be an integer >= 2, got {p!r}")
    if op not in _MODULAR_OPS:
        raise InputError(f"op must be one of {_MODULAR_OPS}, got {op!r}")


@dataclass(frozen=True)
class ModularDigitTask(DigitTask):
    """(a op b) mod p in the digit layout; operands as digits, the answer as digits of [0, p)."""

    p: int = 113
    op: str = "add"

    kind: ClassVar[str] = "modular_digits"

    def __post_init__(self):
        super().__post_init__()
        _check_modulus(self.p, self.op)

    @property
    def symbol(self) -> str:
        return "+" if self.op == "add" else "*"

    @property
    def answer_len(self) -> int:
        return len(str(self.p - 1))

    def relations(self) -> list[R.Relation]:
        ks = range(1, self.width + 1)
        if self.op == "add":
            return [R.modular_sum(self.p)] + [R.modular_sum_of_residues(k, self.p) for k in ks]
        return [R.modular_product(self.p)] + [R.modular_product_of_residues(k, self.p) for k in ks]


@dataclass(frozen=True)
class ModularTask(Task):
    """(a op b) mod p in the grokking layout: tokens ``a b =``, one answer token; all p^2 pairs are ID."""

    p: int = 113
    op: str = "add"
    train_fraction: float = 0.3

    kind: ClassVar[str] = "modular"
    has_ood: ClassVar[bool] = False  # every pair a, b < p is in distribution
    prompt_len: ClassVar[int] = 3
    answer_len: ClassVar[int] = 1

    def __post_init__(self):
        _check_modulus(self.p, self.op)
        if not 0 < self.train_fraction < 1:
            raise InputError(f"train_fraction must lie strictly between 0 and 1, got {self.train_fraction}")

    @property
    def d_vocab(self) -> int:
        return self.p + 1

    @property
    def symbol(self) -> str:
        return "+" if self.op == "add" else "*"

    def is_in_distribution(self, a, b) -> np.ndarray:
        """Every valid pair is in the domain: bool [n], all True."""
        a, _ = self.check_operands(a, b)
        return np.ones(a.shape, dtype=bool)

    @property
    def max_operand(self) -> int:
        return self.p - 1

    def position_names(self) -> list[str]:
        """``a``, ``b``, ``=``, ``ans``."""
        return ["a", "b", "=", "ans"]

    def encode_prompt(self, a, b) -> np.ndarray:
        """Tokens ``a b =``: [n, 3]."""
        a, b = self.check_operands(a, b)
        return np.stack([a, b, np.full_like(a, self.p)], axis=1)

    def decode_prompt(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.asarray(tokens, dtype=np.int64)
        return tokens[:, 0], tokens[:, 1]

    @property
    def answer_limit(self) -> int:
        return self.p

    def encode_answer(self, values) -> np.ndarray:
        """The answer token: [n, 1]."""
        return self._check_answers(values)[:, None]

    def decode_answer(self, tokens) -> np.ndarray:
        return np.asarray(tokens, dtype=np.int64)[:, 0]

    def id_split(self, seed: int = 0, n_train: Optional[int] = None, n_test: Optional[int] = None):
        """All p^2 pairs, shuffled: a ``train_fraction`` share for training, the rest for testing."""
        total = self.p**2
        n_train = round(self.train_fraction * total) if n_train is None else n_train
        n_test = total - n_train if n_test is None else n_test
        if n_train < 1 or n_test < 0 or n_train + n_test > total:
            raise InputError(f"n_train={n_train} and n_test={n_test} do not fit the {total} pairs of {self.describe()}")
        idx = np.random.default_rng(seed).permutation(total)
        a, b = idx // self.p, idx % self.p
        return (a[:n_train], b[:n_train]), (a[n_train : n_train + n_test], b[n_train : n_train + n_test])

    @property
    def id_limit(self) -> int:
        """Every pair of operands below this is in distribution: ``p``."""
        return self.p

    def sample_ood(self, n: int, digits: Optional[int] = None, seed: int = 0, mode: str = "both"):
        raise InputError(f"{self.describe()} has no OOD split: every pair a, b < {self.p} is in its domain")

    def relations(self) -> list[R.Relation]:
        return [R.modular_sum(self.p) if self.op == "add" else R.modular_product(self.p)]


TASKS = {cls.kind: cls for cls in (AdditionTask, MultiplicationTask, ModularDigitTask, ModularTask)}


def make_task(kind: str, **fields) -> Task:
    """Build a task by its kind name (``addition``, ``multiplication``, ``modular_digits``, ``modular``)."""
    if kind not in TASKS:
        raise InputError(f"unknown task {kind!r}; choose one of: {', '.join(TASKS)}")
    cls = TASKS[kind]
    known = set(cls.__dataclass_fields__)
    unknown = set(fields) - known
    if unknown:
        raise InputError(f"{cls.__name__} has no field(s) {sorted(unknown)}; its fields are {sorted(known)}")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise InputError(f"cannot build {cls.__name__}: {exc}") from None


def task_from_dict(d: dict) -> Task:
    """Inverse of ``Task.to_dict``."""
    if not isinstance(d, dict) or "kind" not in d:
        raise InputError(f"a task description needs a 'kind' field, got {d!r}")
    fields = {k: v for k, v in d.items() if k != "kind"}
    return make_task(d["kind"], **fields)
