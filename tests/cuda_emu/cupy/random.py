"""cupy.random on the emulator: NumPy's generators, results as device arrays."""
from __future__ import annotations

import numpy

from ._array import _from_numpy


def _wrap(r):
    return _from_numpy(numpy.asarray(r))


class _OnDevice:
    """A NumPy generator whose draws come back as device arrays."""

    def __init__(self, gen):
        self._g = gen

    def __getattr__(self, name):
        fn = getattr(self._g, name)
        return lambda *a, **k: _wrap(fn(*a, **k))


class Generator(_OnDevice):
    def __init__(self, seed=None):
        super().__init__(numpy.random.default_rng(seed))


class RandomState(_OnDevice):
    def __init__(self, seed=None):
        super().__init__(numpy.random.RandomState(seed))


def default_rng(seed=None):
    return Generator(seed)


_global = RandomState()


def seed(s=None):
    _global._g.seed(s)


def rand(*shape):
    return _global.rand(*shape)


def randn(*shape):
    return _global.randn(*shape)


def random(size=None):
    return _global.random_sample(size)


def uniform(low=0.0, high=1.0, size=None, dtype=float):
    return _from_numpy(numpy.asarray(_global._g.uniform(low, high, size), dtype=dtype))


def normal(loc=0.0, scale=1.0, size=None, dtype=float):
    return _from_numpy(numpy.asarray(_global._g.normal(loc, scale, size), dtype=dtype))


def standard_normal(size=None, dtype=float):
    return _from_numpy(numpy.asarray(_global._g.standard_normal(size), dtype=dtype))


def randint(low, high=None, size=None, dtype=int):
    return _wrap(_global._g.randint(low, high, size, dtype=dtype))
