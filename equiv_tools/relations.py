"""Candidate equivalence relations: a name and a vectorised function of the operands.

A relation says what a model might answer on an input, e.g. the paper's
``(a mod 10^3) + (b mod 10^3)``. Relations that reduce each operand also name
the in-distribution *representative* of an input, ``(a mod 10^k, b mod 10^k)``,
which the class map (``equiv_tools.discovery``) compares the model against.
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
