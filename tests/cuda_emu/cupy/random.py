"""cupy.random on the emulator: NumPy's generators, results as device arrays."""
from __future__ import annotations

import numpy

from ._array import _from_numpy


def _wrap(r):
    return _from_numpy(numpy.asarray(r))


class Generator:
    def __init__(self, seed=None):
        self._g = numpy.random.default_rng(seed)

    def __getattr__(self, name):
        fn = getattr(self._g, name)
        return lambda *a, **k: _wrap(fn(*a, **k))


class RandomState:
    def __init__(self, seed=None):
        self._r = numpy.random.RandomState(seed)

    def __getattr__(self, name):
        fn = getattr(self._r, name)
        return lambda *a, **k: _wrap(fn(*a, **k))


def default_rng(seed=None):
    return Generator(seed)


_global = RandomState()


def seed(s=None):
    _global._r.seed(s)


def rand(*shape):
    return _global.rand(*shape)


def randn(*shape):
    return _global.randn(*shape)


def random(size=None):
    return _global.random_sample(size)


def uniform(low=0.0, high=1.0, size=None, dtype=float):
    return _from_numpy(numpy.asarray(_global._r.uniform(low, high, size), dtype=dtype))


def normal(loc=0.0, scale=1.0, size=None, dtype=float):
    return _from_numpy(numpy.asarray(_global._r.normal(loc, scale, size), dtype=dtype))


def standard_normal(size=None, dtype=float):
    return _from_numpy(numpy.asarray(_global._r.standard_normal(size), dtype=dtype))


def randint(low, high=None, size=None, dtype=int):
    return _wrap(_global._r.randint(low, high, size, dtype=dtype))
