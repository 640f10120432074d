"""2-D pooling over NCHW arrays: max (with argmax for backward), average, global average.

    y, argmax = max_pool2d(x, 2)                  # argmax: int32 index h*W + w within each plane
    dx = max_pool2d_backward(dy, argmax, x.shape)
    y = avg_pool2d(x, 3, stride=1, padding="same", count_include_pad=False)

pool_size and stride: int or (h, w); stride defaults to pool_size. padding: "valid", "same"
(output ceil(H / stride), extra pixel after, as TF/Keras), an int, (pad_h, pad_w),
((top, bottom), (left, right)) or (top, bottom, left, right); each side must be smaller than
the window. Max pooling ignores padding; a NaN in a window gives NaN. Average pooling divides
by the window size (count_include_pad=True) or by the number of input elements it covers.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .._validate import as_float_array, check_out_buffer, contiguous_aligned
from .conv import _int_pair, resolve_padding


def _pool_args(x, pool_size, stride, padding, op: str):
    x = as_float_array(x, "x", op)
    if x.ndim != 4:
        raise ValueError(f"[{op}] x has {x.ndim} dims {tuple(x.shape)}, expected 4 (N, C, H, W) in NCHW layout")
    pool = _int_pair(pool_size, "pool_size", op, 1)
    st = pool if stride is None else _int_pair(stride, "stride", op, 1)
    pads = resolve_padding(padding, x.shape[2:], pool, st, op)
    if max(pads[:2]) >= pool[0] or max(pads[2:]) >= pool[1]:  # checked here too: the kernels skip it for N*C = 0
        raise ValueError(f"[{op}] padding {pads} must be smaller than pool_size {pool} on each side")
    return x, pool, st, pads


def _x_shape(x_shape, op: str) -> list:
    try:
        shape = [int(d) for d in x_shape]
    except (TypeError, ValueError):  # not iterable, or entries like "a" or None
        raise ValueError(f"[{op}] x_shape must be a tuple (N, C, H, W), got {x_shape!r}") from None
    if len(shape) != 4 or min(shape) < 0:
        raise ValueError(f"[{op}] x_shape must be 4 non-negative sizes (N, C, H, W), got {tuple(x_shape)}")
    if math.prod(shape) >= 2**60:  # bytes of dx would not fit an int64 (NumPy's "array is too big")
        raise ValueError(f"[{op}] x_shape {tuple(shape)} is too large to allocate")
    return shape


def _grad(dy, op: str, ndim: int = 4) -> np.ndarray:
    dy = as_float_array(dy, "dy", op)
    if dy.ndim != ndim:
        raise ValueError(f"[{op}] dy has {dy.ndim} dims {tuple(dy.shape)}, expected {ndim}")
    return dy


def max_pool2d(x, pool_size, stride=None, padding=0, return_argmax: bool = True, out=None):
    """(y, argmax) with y[n,c,p,q] the maximum of its window; argmax is None when not requested."""
    op = "max_pool2d"
    x, pool, st, pads = _pool_args(x, pool_size, stride, padding, op)
    if out is not None:  # the binding checks shape and dtype
        check_out_buffer(out, op, inputs={"x": x})
    return _core.max_pool2d_forward(x, pool, st, pads, bool(return_argmax), False, out, None)


def max_pool2d_backward(dy, argmax, x_shape) -> np.ndarray:
    """dx (shape x_shape): each dy[n,c,p,q] added at argmax[n,c,p,q] of its plane."""
    op = "max_pool2d_backward"
    dy = _grad(dy, op)
    shape = _x_shape(x_shape, op)
    if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int32:
        raise ValueError(f"[{op}] argmax must be the int32 array returned by max_pool2d, got "
                         f"{getattr(argmax, 'dtype', type(argmax).__name__)}")
    if argmax.shape != dy.shape:
        raise ValueError(f"[{op}] argmax has shape {argmax.shape} but dy has shape {dy.shape}")
    return _core.max_pool2d_backward(dy, contiguous_aligned(argmax), shape)


def avg_pool2d(x, pool_size, stride=None, padding=0, count_include_pad: bool = True, out=None) -> np.ndarray:
    """y[n,c,p,q] = mean of its window (see the module docstring for the divisor)."""
    op = "avg_pool2d"
    x, pool, st, pads = _pool_args(x, pool_size, stride, padding, op)
    if out is not None:  # the binding checks shape and dtype
        check_out_buffer(out, op, inputs={"x": x})
    return _core.avg_pool2d_forward(x, pool, st, pads, bool(count_include_pad), False, out)


def avg_pool2d_backward(dy, x_shape, pool_size, stride=None, padding=0, count_include_pad: bool = True) -> np.ndarray:
    """dx (shape x_shape): dy[n,c,p,q] / divisor spread over its window."""
    op = "avg_pool2d_backward"
    dy = _grad(dy, op)
    shape = _x_shape(x_shape, op)
    if shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"[{op}] x_shape must have positive H and W, got {tuple(x_shape)}")
    pool = _int_pair(pool_size, "pool_size", op, 1)
    st = pool if stride is None else _int_pair(stride, "stride", op, 1)
    pads = resolve_padding(padding, shape[2:], pool, st, op)
    return _core.avg_pool2d_backward(dy, shape, pool, st, pads, bool(count_include_pad), False)


def global_avg_pool2d(x) -> np.ndarray:
    """(N, C) means over each H x W plane."""
    op = "global_avg_pool2d"
    x = as_float_array(x, "x", op)
    if x.ndim != 4:
        raise ValueError(f"[{op}] x has {x.ndim} dims {tuple(x.shape)}, expected 4 (N, C, H, W) in NCHW layout")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"[{op}] x {tuple(x.shape)} has empty H x W planes")
    return _core.global_avg_pool2d_forward(x)


def global_avg_pool2d_backward(dy, x_shape) -> np.ndarray:
    """dx[n,c,h,w] = dy[n,c] / (H*W)."""
    op = "global_avg_pool2d_backward"
    dy = _grad(dy, op, ndim=2)
    shape = _x_shape(x_shape, op)
    return _core.global_avg_pool2d_backward(dy, shape)
