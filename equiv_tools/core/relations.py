"""Candidate equivalence relations: a name and a vectorised function of the operands.

A relation says what a model might answer on an input, e.g. the paper's
``(a mod 10^3) + (b mod 10^3)``. Relations that reduce each operand also name
the in-distribution *representative* of an input, ``(a mod 10^k, b mod 10^k)``,
which the class map (``equiv_tools.analysis.discovery``) compares the model against.
Everything here is numpy on int64 arrays; no model is involved.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

Operands = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Relation:
    """A named rule ``fn(a, b) -> answer``; ``representative(a, b) -> (a', b')`` when it reduces operands.

    ``fn`` and ``representative`` take and return int64 arrays of shape [n].
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    representative: Optional[Callable[[np.ndarray, np.ndarray], Operands]] = None

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)), dtype=np.int64)


def _residues(k: int):
    m = 10**k
    return lambda a, b: (a % m, b % m)


def sum_of_residues(k: int) -> Relation:
    m = 10**k
    return Relation(f"(a mod 10^{k}) + (b mod 10^{k})", lambda a, b: a % m + b % m, _residues(k))


def sum_mod(k: int) -> Relation:
    m = 10**k
    return Relation(f"(a + b) mod 10^{k}", lambda a, b: (a + b) % m)


def product_of_residues(k: int) -> Relation:
    m = 10**k
    return Relation(f"(a mod 10^{k}) * (b mod 10^{k})", lambda a, b: (a % m) * (b % m), _residues(k))


def product_mod(k: int) -> Relation:
    m = 10**k
    return Relation(f"(a * b) mod 10^{k}", lambda a, b: (a * b) % m)


def modular_sum_of_residues(k: int, p: int) -> Relation:
    m = 10**k
    return Relation(f"((a mod 10^{k}) + (b mod 10^{k})) mod {p}", lambda a, b: (a % m + b % m) % p, _residues(k))


def modular_product_of_residues(k: int, p: int) -> Relation:
    m = 10**k
    return Relation(f"((a mod 10^{k}) * (b mod 10^{k})) mod {p}", lambda a, b: ((a % m) * (b % m)) % p, _residues(k))


SUM = Relation("a + b", lambda a, b: a + b)
PRODUCT = Relation("a * b", lambda a, b: a * b)


def modular_sum(p: int) -> Relation:
    return Relation(f"(a + b) mod {p}", lambda a, b: (a + b) % p)


def modular_product(p: int) -> Relation:
    return Relation(f"(a * b) mod {p}", lambda a, b: (a * b) % p)


_OPERATIONS = {"+": np.add, "*": np.multiply}


def truncation_relation(symbol: str, i: Optional[int] = None, j: Optional[int] = None,
                        k: Optional[int] = None, p: Optional[int] = None) -> Relation:
    """``(a mod 10^i) op (b mod 10^j)``, reduced ``mod 10^k`` or ``mod p`` when given; ``i`` or ``j`` None keeps that operand whole.

    ``symbol`` is the task's operation, ``"+"`` or ``"*"``. Names are those of the constructors
    above (``a + b``, ``(a + b) mod 10^2``, ``(a mod 10^3) + (b mod 10^3)``,
    ``((a mod 10^2) * (b mod 10^2)) mod 97``); a truncated operand gives a representative
    ``(a mod 10^i, b mod 10^j)``.
    """
    if k is not None and p is not None:
        raise ValueError("reduce mod 10^k or mod p, not both")
    op = _OPERATIONS[symbol]
    ma = None if i is None else 10**i
    mb = None if j is None else 10**j
    modulus = 10**k if k is not None else p
    core = f"{'a' if i is None else f'(a mod 10^{i})'} {symbol} {'b' if j is None else f'(b mod 10^{j})'}"
    name = core if modulus is None else f"({core}) mod {'10^' + str(k) if k is not None else p}"

    def operands(a, b):
        return (a if ma is None else a % ma), (b if mb is None else b % mb)

    def fn(a, b):
        value = op(*operands(a, b))
        return value if modulus is None else value % modulus

    return Relation(name, fn, None if i is None and j is None else operands)
