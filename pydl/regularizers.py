"""Weight penalties, as in Keras.

    reg = L2(0.01)
    reg(w)          -> 0.01 * sum(w**2)        (a float, added to the reported loss)
    reg.gradient(w) -> 0.02 * w                (added to the weight's gradient)

L1: l1 * sum|w|, gradient l1 * sign(w) (0 at w == 0). L1L2 adds both. The arithmetic is
`pydl.ops.optim.l1l2_penalty` / `l1l2_gradient`, so CuPy weights stay on the GPU (the gradient
is a CuPy array; the penalty a float).
"""
from __future__ import annotations

import math

from . import registry
from .ops import optim as _ops


def _coef(value, name: str, who: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"[{who}] {name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"[{who}] {name} must be finite and >= 0, got {value!r}")
    return v


class Regularizer:
    def __call__(self, w) -> float:
        raise NotImplementedError

    def gradient(self, w):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@registry.regularizers.register
class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _coef(l1, "l1", type(self).__name__)
        self.l2 = _coef(l2, "l2", type(self).__name__)

    def __call__(self, w) -> float:
        return _ops.l1l2_penalty(w, self.l1, self.l2)

    def gradient(self, w):
        return _ops.l1l2_gradient(w, self.l1, self.l2)

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


@registry.regularizers.register
class L1(L1L2):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1, l2=0.0)

    def get_config(self):
        return {"l1": self.l1}


@registry.regularizers.register
class L2(L1L2):
    def __init__(self, l2=0.01):
        super().__init__(l1=0.0, l2=l2)

    def get_config(self):
        return {"l2": self.l2}


_ALIASES = {"l1": "L1", "l2": "L2", "l1_l2": "L1L2", "l1l2": "L1L2"}


def serialize(reg: Regularizer | None):
    return None if reg is None else registry.serialize(reg)


def get(identifier) -> Regularizer | None:
    """None, a name ("l2", "L2"), an instance, or a {"class_name", "config"} dict."""
    if identifier is None:
        return None
    return registry.resolve(registry.regularizers, identifier, Regularizer, _ALIASES, "regularizers.get")


def l1(l1=0.01) -> L1:
    """Keras's lower-case factory: an L1 penalty l1 * sum(|w|)."""
    return L1(l1=l1)


def l2(l2=0.01) -> L2:
    """Keras's lower-case factory: an L2 penalty l2 * sum(w^2)."""
    return L2(l2=l2)


def l1_l2(l1=0.01, l2=0.01) -> L1L2:  # noqa: F811  (Keras's defaults: 0.01 each)
    """Keras's lower-case factory: l1 * sum(|w|) + l2 * sum(w^2)."""
    return L1L2(l1=l1, l2=l2)


__all__ = ["Regularizer", "L1", "L2", "L1L2", "l1", "l2", "l1_l2", "get", "serialize"]
