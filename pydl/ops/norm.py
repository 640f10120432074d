"""Layer normalisation over the last axis (one fused C++ kernel each way, `pydl._core.layernorm_*`).

    y = (x - mean) / sqrt(var + eps) * gamma + beta      (mean, biased var over the last axis)

x may have any rank >= 1; gamma and beta are (C,) with C = x.shape[-1], or None (1 and 0).
mean and rstd = 1/sqrt(var + eps) have x's shape without its last axis and x's dtype; pass them
to `layer_norm_backward`. Statistics use a two-pass scheme with double-precision chunk sums, so
a row of 1e6 values of 1e4 + noise keeps its variance; dgamma / dbeta are reduced in a fixed
order (the same bits for any thread count). float32 is the fast path, float64 is kept; float32
and float64 arrays may not be mixed; other numeric dtypes are cast to float32.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _core
from .._validate import as_float_array
from .attention import _float_dtype

__all__ = ["layer_norm", "layer_norm_backward"]


def _vec(a, name, op, dtype, C):
    if a is None:
        return None
    a = as_float_array(a, name, op, dtype)
    if a.shape != (C,):
        raise ValueError(f"[{op}] {name} has shape {a.shape}, expected (C,) = ({C},) for the last axis of x")
    return a


def _x(x, op, dtype):
    x = as_float_array(x, "x", op, dtype)
    if x.ndim < 1:
        raise ValueError(f"[{op}] x must have at least 1 dim, got a scalar")
    if x.shape[-1] == 0:
        raise ValueError(f"[{op}] x {x.shape} has an empty last axis (C = 0)")
    return x


def layer_norm(x, gamma=None, beta=None, eps: float = 1e-5):
    """Returns (y, mean, rstd): y like x; mean, rstd of shape x.shape[:-1]."""
    op = "layer_norm"
    dtype = _float_dtype(op, x=x, gamma=gamma, beta=beta)
    x = _x(x, op, dtype)
    C = x.shape[-1]
    gamma = _vec(gamma, "gamma", op, dtype, C)
    beta = _vec(beta, "beta", op, dtype, C)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(float(eps)) or eps < 0:
        raise ValueError(f"[{op}] eps must be a finite number >= 0, got {eps!r}")
    y = np.empty(x.shape, dtype)
    mean = np.empty(x.shape[:-1], dtype)
    rstd = np.empty(x.shape[:-1], dtype)
    _core.layernorm_forward(x, gamma, beta, float(eps), y, mean, rstd)
    return y, mean, rstd


def layer_norm_backward(dy, x, gamma, mean, rstd):
    """Returns (dx, dgamma, dbeta), all written fresh; gamma None means ones."""
    op = "layer_norm_backward"
    dtype = _float_dtype(op, dy=dy, x=x, gamma=gamma, mean=mean, rstd=rstd)
    x = _x(x, op, dtype)
    C = x.shape[-1]
    dy = as_float_array(dy, "dy", op, dtype)
    if dy.shape != x.shape:
        raise ValueError(f"[{op}] dy has shape {dy.shape}, expected x's shape {x.shape}")
    gamma = _vec(gamma, "gamma", op, dtype, C)
    mean = as_float_array(mean, "mean", op, dtype)
    rstd = as_float_array(rstd, "rstd", op, dtype)
    for name, a in (("mean", mean), ("rstd", rstd)):
        if a.shape != x.shape[:-1]:
            raise ValueError(f"[{op}] {name} has shape {a.shape}, expected x.shape[:-1] = {x.shape[:-1]}")
    dx = np.empty(x.shape, dtype)
    dgamma = np.empty((C,), dtype)
    dbeta = np.empty((C,), dtype)
    _core.layernorm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta)
    return dx, dgamma, dbeta
