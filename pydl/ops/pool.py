"""2-D pooling over NCHW arrays: max (with argmax for backward), average, global average.

    y, argmax = max_pool2d(x, 2)                  # argmax: int32 index h*W + w within each plane
    dx = max_pool2d_backward(dy, argmax, x.shape, 2)   # pool_size etc.: optional, the geometry of max_pool2d
    y = avg_pool2d(x, 3, stride=1, padding="same", count_include_pad=False)

pool_size and stride: int or (h, w); stride defaults to pool_size. padding: "valid", "same"
(output ceil(H / stride), extra pixel after, as TF/Keras), an int, (pad_h, pad_w),
((top, bottom), (left, right)) or (top, bottom, left, right); each side must be smaller than
the window. Max pooling ignores padding; a NaN in a window gives NaN. Average pooling divides
by the window size (count_include_pad=True) or by the number of input elements it covers.

CuPy arrays run the CUDA kernels of pydl.cuda.pool with the same checks, messages and results
(argmax identical; float32 sums in the CPU's order); mixing NumPy and CuPy arrays in one call is
a ValueError naming the arguments. max_pool2d_backward given the pooling geometry (pool_size,
stride, padding, as the layers pass it) checks that dy has the pooled shape and gathers each
input's gradient from the windows that cover it: on the GPU always (no atomics; without the
geometry it scatters with atomicAdd), on the CPU for 3x3 / stride 2 windows (otherwise the CPU
writes 2x2 blocks densely or scatters; every path gives the same bits).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .._validate import as_float_array, check_out_buffer, contiguous_aligned
from . import device
from .conv import _int_pair, resolve_padding

_INT32_LIMIT = 2**31


def _as_float_on(dev: str, x, name: str, op: str):
    if dev == "cuda":
        if not device.is_cuda(x):  # dispatch saw no array here (a list, a scalar): as the CPU would see it
            raise TypeError(f"[{op}] {name} must be a cupy.ndarray (the other arguments are on the GPU), "
                            f"got {type(x).__name__}")
        return device.as_float_cuda(x, name, op)
    return as_float_array(x, name, op)


def _geometry(shape, pool, st, pads, op: str) -> tuple[int, int]:
    """(P, Q) of NCHW `shape` pooled with these sizes; the checks and messages of the C++ kernels'."""
    H, W = shape[2], shape[3]
    if H < 1 or W < 1:
        raise ValueError(f"[{op}] input height and width must be positive, got ({H}, {W})")
    hp, wp = H + pads[0] + pads[1], W + pads[2] + pads[3]
    if pool[0] > hp or pool[1] > wp:
        raise ValueError(f"[{op}] pool_size {pool[0]}x{pool[1]} is larger than the padded input {hp}x{wp}")
    if H * W >= _INT32_LIMIT:
        raise ValueError(f"[{op}] planes of {H}x{W} are too large for int32 argmax")
    return (hp - pool[0]) // st[0] + 1, (wp - pool[1]) // st[1] + 1


def _cuda_geom(shape, pool, st, pads, PQ, op: str) -> tuple:
    """(H, W, P, Q, R, S, sh, sw, pt, pl) as the CUDA kernels take them (32-bit window arithmetic)."""
    H, W = shape[2], shape[3]
    if H + pads[0] + pads[1] + pool[0] + st[0] >= _INT32_LIMIT or \
            W + pads[2] + pads[3] + pool[1] + st[1] >= _INT32_LIMIT:
        raise ValueError(f"[{op}] input {tuple(shape)} with pool_size {pool}, stride {st} and padding {pads} is "
                         f"too large for the CUDA kernels (sizes + padding + window must stay below 2**31)")
    return (H, W, PQ[0], PQ[1], pool[0], pool[1], st[0], st[1], pads[0], pads[2])


def _pool_args(x, pool_size, stride, padding, op: str, dev: str = "cpu"):
    x = _as_float_on(dev, x, "x", op)
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


def _grad(dy, op: str, ndim: int = 4, dev: str = "cpu") -> np.ndarray:
    dy = _as_float_on(dev, dy, "dy", op)
    if dy.ndim != ndim:
        raise ValueError(f"[{op}] dy has {dy.ndim} dims {tuple(dy.shape)}, expected {ndim}")
    return dy


def max_pool2d(x, pool_size, stride=None, padding=0, return_argmax: bool = True, out=None):
    """(y, argmax) with y[n,c,p,q] the maximum of its window; argmax is None when not requested."""
    op = "max_pool2d"
    dev = device.dispatch(op, x=x, out=out)
    x, pool, st, pads = _pool_args(x, pool_size, stride, padding, op, dev)
    if dev == "cuda":
        from ..cuda import pool as cuda_pool
        PQ = _geometry(x.shape, pool, st, pads, op)
        geom = _cuda_geom(x.shape, pool, st, pads, PQ, op)
        if out is not None:
            device.check_out_cuda(out, x.shape[:2] + PQ, x.dtype, op, inputs={"x": x})
        return cuda_pool.max_pool2d(x, geom, bool(return_argmax), out)
    if out is not None:  # the binding checks shape and dtype
        check_out_buffer(out, op, inputs={"x": x})
    return _core.max_pool2d_forward(x, pool, st, pads, bool(return_argmax), False, out, None)


def max_pool2d_backward(dy, argmax, x_shape, pool_size=None, stride=None, padding=0, *,
                        check_argmax: bool = True) -> np.ndarray:
    """dx (shape x_shape): each dy[n,c,p,q] added at argmax[n,c,p,q] of its plane.

    pool_size, stride, padding (optional): the geometry max_pool2d ran with; when given, dy must
    have the pooled shape of x_shape (and the GPU gathers instead of scattering).
    check_argmax=False (with the geometry, on the GPU): skip the check that every argmax lies in
    its window, which reads a flag back from the device (a sync); for an argmax that max_pool2d
    returned for this geometry, as the pooling layers pass. The CPU always checks (it costs nothing)."""
    op = "max_pool2d_backward"
    if not isinstance(check_argmax, (bool, np.bool_)):
        raise TypeError(f"[{op}] check_argmax must be True or False, got {check_argmax!r}")
    dev = device.dispatch(op, dy=dy, argmax=argmax)
    dy = _grad(dy, op, dev=dev)
    shape = _x_shape(x_shape, op)
    arr_type = device.namespace(dev).ndarray if dev == "cuda" else np.ndarray
    if not isinstance(argmax, arr_type) or argmax.dtype != np.int32:
        raise ValueError(f"[{op}] argmax must be the int32 array returned by max_pool2d, got "
                         f"{getattr(argmax, 'dtype', type(argmax).__name__)}")
    if argmax.shape != dy.shape:
        raise ValueError(f"[{op}] argmax has shape {argmax.shape} but dy has shape {dy.shape}")
    geom = None
    windows = {}
    if pool_size is not None:
        pool = _int_pair(pool_size, "pool_size", op, 1)
        st = pool if stride is None else _int_pair(stride, "stride", op, 1)
        if shape[2] < 1 or shape[3] < 1:
            raise ValueError(f"[{op}] x_shape must have positive H and W, got {tuple(x_shape)}")
        pads = resolve_padding(padding, shape[2:], pool, st, op)
        if max(pads[:2]) >= pool[0] or max(pads[2:]) >= pool[1]:
            raise ValueError(f"[{op}] padding {pads} must be smaller than pool_size {pool} on each side")
        PQ = _geometry(shape, pool, st, pads, op)
        if tuple(dy.shape) != (shape[0], shape[1]) + PQ:
            raise ValueError(f"[{op}] dy has shape {tuple(dy.shape)}, expected {(shape[0], shape[1]) + PQ} from "
                             f"x_shape {tuple(shape)}, pool_size {pool}, stride {st} and padding {pads}")
        if dev == "cuda":
            geom = _cuda_geom(shape, pool, st, pads, PQ, op)
        windows = dict(pool=pool, stride=st, padding=pads)
    if dev == "cuda":
        from ..cuda import pool as cuda_pool
        _check_backward_shape(dy, shape, op)
        argmax = device.namespace(dev).ascontiguousarray(argmax)
        return cuda_pool.max_pool2d_backward(dy, argmax, tuple(shape), geom, op, check=bool(check_argmax))
    return _core.max_pool2d_backward(dy, contiguous_aligned(argmax), shape, **windows)


def _check_backward_shape(dy, shape, op: str) -> None:
    """The binding's checks of max_pool2d_backward's x_shape against dy (for the CUDA path)."""
    if not (shape[2] >= 1 and shape[3] >= 1 and shape[2] * shape[3] < _INT32_LIMIT):
        raise ValueError(f"[{op}] x_shape (H, W) must be positive and H*W < 2^31")
    if dy.shape[0] != shape[0] or dy.shape[1] != shape[1]:
        raise ValueError(f"[{op}] dy {tuple(dy.shape)} does not match x_shape (N, C) = ({shape[0]}, {shape[1]})")


def avg_pool2d(x, pool_size, stride=None, padding=0, count_include_pad: bool = True, out=None) -> np.ndarray:
    """y[n,c,p,q] = mean of its window (see the module docstring for the divisor)."""
    op = "avg_pool2d"
    dev = device.dispatch(op, x=x, out=out)
    x, pool, st, pads = _pool_args(x, pool_size, stride, padding, op, dev)
    if dev == "cuda":
        from ..cuda import pool as cuda_pool
        PQ = _geometry(x.shape, pool, st, pads, op)
        geom = _cuda_geom(x.shape, pool, st, pads, PQ, op)
        if out is not None:
            device.check_out_cuda(out, x.shape[:2] + PQ, x.dtype, op, inputs={"x": x})
        return cuda_pool.avg_pool2d(x, geom, bool(count_include_pad), out)
    if out is not None:  # the binding checks shape and dtype
        check_out_buffer(out, op, inputs={"x": x})
    return _core.avg_pool2d_forward(x, pool, st, pads, bool(count_include_pad), False, out)


def avg_pool2d_backward(dy, x_shape, pool_size, stride=None, padding=0, count_include_pad: bool = True) -> np.ndarray:
    """dx (shape x_shape): dy[n,c,p,q] / divisor spread over its window."""
    op = "avg_pool2d_backward"
    dev = device.dispatch(op, dy=dy)
    dy = _grad(dy, op, dev=dev)
    shape = _x_shape(x_shape, op)
    if shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"[{op}] x_shape must have positive H and W, got {tuple(x_shape)}")
    pool = _int_pair(pool_size, "pool_size", op, 1)
    st = pool if stride is None else _int_pair(stride, "stride", op, 1)
    pads = resolve_padding(padding, shape[2:], pool, st, op)
    if dev == "cuda":
        from ..cuda import pool as cuda_pool
        if min(pads) < 0 or max(pads[:2]) >= pool[0] or max(pads[2:]) >= pool[1]:
            raise ValueError(f"[{op}] padding ({pads[0]}, {pads[1]}, {pads[2]}, {pads[3]}) must be smaller than "
                             f"pool_size ({pool[0]}, {pool[1]})")
        PQ = _geometry(shape, pool, st, pads, op)
        want = (shape[0], shape[1]) + PQ
        if tuple(dy.shape) != want:
            raise ValueError(f"[{op}] dy has shape {tuple(dy.shape)}, expected {want}")
        geom = _cuda_geom(shape, pool, st, pads, PQ, op)
        return cuda_pool.avg_pool2d_backward(dy, tuple(shape), geom, bool(count_include_pad))
    return _core.avg_pool2d_backward(dy, shape, pool, st, pads, bool(count_include_pad), False)


def global_avg_pool2d(x) -> np.ndarray:
    """(N, C) means over each H x W plane."""
    op = "global_avg_pool2d"
    dev = device.dispatch(op, x=x)
    x = _as_float_on(dev, x, "x", op)
    if x.ndim != 4:
        raise ValueError(f"[{op}] x has {x.ndim} dims {tuple(x.shape)}, expected 4 (N, C, H, W) in NCHW layout")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"[{op}] x {tuple(x.shape)} has empty H x W planes")
    if dev == "cuda":
        from ..cuda import pool as cuda_pool
        return cuda_pool.global_avg_pool2d(x)
    return _core.global_avg_pool2d_forward(x)


def global_avg_pool2d_backward(dy, x_shape) -> np.ndarray:
    """dx[n,c,h,w] = dy[n,c] / (H*W)."""
    op = "global_avg_pool2d_backward"
    dev = device.dispatch(op, dy=dy)
    dy = _grad(dy, op, ndim=2, dev=dev)
    shape = _x_shape(x_shape, op)
    if dev == "cuda":
        from ..cuda import pool as cuda_pool
        if not (shape[2] >= 1 and shape[3] >= 1):
            raise ValueError(f"[{op}] x_shape must have N, C >= 0 and H, W >= 1")
        if tuple(dy.shape) != (shape[0], shape[1]):
            raise ValueError(f"[{op}] dy has shape {tuple(dy.shape)}, expected ({shape[0]}, {shape[1]})")
        return cuda_pool.global_avg_pool2d_backward(dy, tuple(shape))
    return _core.global_avg_pool2d_backward(dy, shape)
