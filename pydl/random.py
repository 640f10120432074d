"""One seed for everything random in pydl: initializers, dropout masks and shuffling.

`pydl.seed(s)` resets a single NumPy Generator. C++ kernels that draw random numbers
(dropout) take an explicit 64-bit seed drawn from it, so results do not depend on the
number of threads.
"""
from __future__ import annotations

import numpy as np

_rng = np.random.default_rng()


def seed(s: int) -> None:
    """Seed initializers, dropout and shuffling."""
    global _rng
    if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
        raise ValueError(f"[seed] s must be a non-negative int, got {s!r}")
    _rng = np.random.default_rng(int(s))


def get_rng() -> np.random.Generator:
    return _rng


def next_seed() -> int:
    """A fresh 63-bit seed for a C++ kernel's own counter-based generator."""
    return int(_rng.integers(0, 2**63 - 1))
