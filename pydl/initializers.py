"""Weight initializers, as in Keras.

    init = pydl.initializers.get("he_normal")
    W = init((784, 128))                 # float32 array

Fans: a Dense kernel has shape (in, out): fan_in = in, fan_out = out. A convolution kernel
has shape (K, C, R, S) (out-channels, in-channels, filter height, width): fan_in = C*R*S,
fan_out = K*R*S. Any other rank >= 3 follows the same rule (dims 0 and 1 scaled by the
product of the rest); a vector uses its length for both.

The normal variance-scaling initializers (GlorotNormal, HeNormal, LecunNormal) draw from a
normal truncated at two standard deviations, as Keras does, with the standard deviation
divided by 0.8796... so the *truncated* distribution has variance scale / fan.

Randomness: an initializer built without `seed` draws from pydl's global generator
(`pydl.seed(s)` makes a whole model reproducible). With `seed=s` it owns a generator seeded
with `s`: the sequence of arrays it produces is reproducible, and successive calls differ.
"""
from __future__ import annotations

import contextlib
import math
import threading

import numpy as np

from . import registry
from .random import get_rng

# Standard deviation of a unit normal truncated to [-2, 2].
_TRUNC_STD = 0.87962566103423978


def compute_fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of `shape` (see the module docstring)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


class _ShapesOnly(threading.local):
    budget = None  # elements still allowed while building weights that a file will overwrite


_SHAPES_ONLY = _ShapesOnly()


@contextlib.contextmanager
def shapes_only(max_elements: int):
    """Within this block initializers return uninitialised arrays (the caller overwrites them, as
    `load_model` does with the file's weights) and refuse to create more than `max_elements`
    elements in all: a ValueError before any allocation, however large the sizes asked for."""
    old = _SHAPES_ONLY.budget
    _SHAPES_ONLY.budget = int(max_elements)
    try:
        yield
    finally:
        _SHAPES_ONLY.budget = old


# No weight array can be larger than this (256 TiB): bigger shapes are refused with a clear error
# before NumPy's own "array is too big".
_MAX_WEIGHT_BYTES = 1 << 48


class Initializer:
    """Base class: `init(shape, dtype=float32) -> ndarray`."""

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"[{type(self).__name__}] seed must be a non-negative int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._rng = None if seed is None else np.random.default_rng(self.seed)

    def rng(self) -> np.random.Generator:
        return self._rng if self._rng is not None else get_rng()

    def __call__(self, shape, dtype=np.float32) -> np.ndarray:
        shape = _check_shape(shape, type(self).__name__)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"[{type(self).__name__}] dtype must be float32 or float64, got {dtype}")
        size = math.prod(shape)
        if size * dtype.itemsize > _MAX_WEIGHT_BYTES:
            raise ValueError(f"[Initializer {type(self).__name__}] weights of shape {shape} are larger than any "
                             f"memory (over 2^48 bytes of {dtype})")
        if _SHAPES_ONLY.budget is not None:
            if size > _SHAPES_ONLY.budget:
                raise ValueError(f"weights of shape {shape} exceed the {_SHAPES_ONLY.budget} elements left of "
                                 f"what the file holds")
            _SHAPES_ONLY.budget -= size
            return np.empty(shape, dtype)
        return np.ascontiguousarray(self.generate(shape), dtype=dtype)

    def generate(self, shape) -> np.ndarray:  # float64 values
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"seed": self.seed} if self.seed is not None else {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_shape(shape, who: str) -> tuple:
    try:
        shape = tuple(shape)
    except TypeError:
        shape = (shape,)
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(f"[{who}] shape must hold non-negative ints, got {shape}")
        out.append(int(d))
    return tuple(out)


def _truncated_normal(rng: np.random.Generator, shape, stddev: float, mean: float = 0.0) -> np.ndarray:
    """Normal(mean, stddev) truncated to mean +- 2 stddev, by resampling the tails."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    return mean + stddev * z


@registry.initializers.register
class Zeros(Initializer):
    def __init__(self):
        super().__init__(None)

    def generate(self, shape):
        return np.zeros(shape)


@registry.initializers.register
class Ones(Initializer):
    def __init__(self):
        super().__init__(None)

    def generate(self, shape):
        return np.ones(shape)


@registry.initializers.register
class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__(None)
        try:
            self.value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"[Constant] value must be a number, got {value!r}") from None
        if not math.isfinite(self.value):
            raise ValueError(f"[Constant] value must be finite, got {value!r}")

    def generate(self, shape):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


@registry.initializers.register
class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)
        if not self.stddev >= 0 or not math.isfinite(self.stddev) or not math.isfinite(self.mean):
            raise ValueError(f"[RandomNormal] need finite mean and stddev >= 0, got mean={mean!r} stddev={stddev!r}")

    def generate(self, shape):
        return self.rng().normal(self.mean, self.stddev, shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


@registry.initializers.register
class TruncatedNormal(Initializer):
    """Normal(mean, stddev) with draws beyond two standard deviations redrawn (as Keras)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)
        if not self.stddev >= 0 or not math.isfinite(self.stddev) or not math.isfinite(self.mean):
            raise ValueError(f"[TruncatedNormal] need finite mean and stddev >= 0, got {mean!r}, {stddev!r}")

    def generate(self, shape):
        return _truncated_normal(self.rng(), shape, self.stddev, self.mean)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


@registry.initializers.register
class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)
        if not (math.isfinite(self.minval) and math.isfinite(self.maxval)) or self.maxval < self.minval:
            raise ValueError(f"[RandomUniform] need finite minval <= maxval, got {minval!r}, {maxval!r}")

    def generate(self, shape):
        return self.rng().uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


@registry.initializers.register
class VarianceScaling(Initializer):
    """Variance scale / n, n = fan_in, fan_out or their mean (mode).

    distribution "truncated_normal": normal truncated at 2 sigma, sigma = sqrt(scale/n)/0.8796;
    "untruncated_normal": sigma = sqrt(scale/n); "uniform": U(-limit, limit), limit = sqrt(3 scale/n).
    """

    _modes = ("fan_in", "fan_out", "fan_avg")
    _dists = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        self.scale = float(scale)
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"[{type(self).__name__}] scale must be positive, got {scale!r}")
        if mode not in self._modes:
            raise ValueError(f"[{type(self).__name__}] mode must be one of {self._modes}, got {mode!r}")
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in self._dists:
            raise ValueError(f"[{type(self).__name__}] distribution must be one of {self._dists}, got {distribution!r}")
        self.mode, self.distribution = mode, distribution

    def generate(self, shape):
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        var = self.scale / max(1.0, n)
        if self.distribution == "truncated_normal":
            return _truncated_normal(self.rng(), shape, math.sqrt(var) / _TRUNC_STD)
        if self.distribution == "untruncated_normal":
            return self.rng().normal(0.0, math.sqrt(var), shape)
        limit = math.sqrt(3.0 * var)
        return self.rng().uniform(-limit, limit, shape)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                **super().get_config()}


class _FixedVarianceScaling(VarianceScaling):
    _fixed: tuple = ()

    def __init__(self, seed=None):
        scale, mode, dist = self._fixed
        super().__init__(scale, mode, dist, seed)

    def get_config(self):
        return Initializer.get_config(self)


@registry.initializers.register
class GlorotUniform(_FixedVarianceScaling):
    """U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    _fixed = (1.0, "fan_avg", "uniform")


@registry.initializers.register
class GlorotNormal(_FixedVarianceScaling):
    """Truncated normal (2 sigma) with variance 2 / (fan_in + fan_out)."""
    _fixed = (1.0, "fan_avg", "truncated_normal")


@registry.initializers.register
class HeUniform(_FixedVarianceScaling):
    """U(-limit, limit), limit = sqrt(6 / fan_in)."""
    _fixed = (2.0, "fan_in", "uniform")


@registry.initializers.register
class HeNormal(_FixedVarianceScaling):
    """Truncated normal (2 sigma) with variance 2 / fan_in."""
    _fixed = (2.0, "fan_in", "truncated_normal")


@registry.initializers.register
class LecunUniform(_FixedVarianceScaling):
    """U(-limit, limit), limit = sqrt(3 / fan_in)."""
    _fixed = (1.0, "fan_in", "uniform")


@registry.initializers.register
class LecunNormal(_FixedVarianceScaling):
    """Truncated normal (2 sigma) with variance 1 / fan_in."""
    _fixed = (1.0, "fan_in", "truncated_normal")


_ALIASES = {
    "zeros": "Zeros", "zero": "Zeros", "ones": "Ones", "one": "Ones", "constant": "Constant",
    "random_normal": "RandomNormal", "random_uniform": "RandomUniform", "truncated_normal": "TruncatedNormal",
    "variance_scaling": "VarianceScaling",
    "glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal",
    "he_uniform": "HeUniform", "he_normal": "HeNormal",
    "lecun_uniform": "LecunUniform", "lecun_normal": "LecunNormal",
}


def serialize(init: Initializer) -> dict:
    return registry.serialize(init)


def get(identifier) -> Initializer:
    """An Initializer from a name ("he_normal" or "HeNormal"), an instance, or a
    {"class_name": ..., "config": {...}} dict (resolved through pydl.registry only)."""
    return registry.resolve(registry.initializers, identifier, Initializer, _ALIASES, "initializers.get")


# Keras's snake_case names of the same classes
zeros, ones, constant = Zeros, Ones, Constant
random_normal, truncated_normal, random_uniform = RandomNormal, TruncatedNormal, RandomUniform
variance_scaling = VarianceScaling
glorot_uniform, glorot_normal, he_uniform, he_normal = GlorotUniform, GlorotNormal, HeUniform, HeNormal
lecun_uniform, lecun_normal = LecunUniform, LecunNormal

__all__ = ["zeros", "ones", "constant", "random_normal", "truncated_normal", "random_uniform", "variance_scaling",
           "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
           "Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "TruncatedNormal", "RandomUniform",
           "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
           "LecunNormal", "compute_fans", "get", "serialize"]
