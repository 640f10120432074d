"""CUDA wrappers of the pooling ops (kernels/pool.cu).

The arrays come from `pydl.ops.pool`, already validated: C-contiguous CuPy float32/float64 arrays
(argmax int32) of the shapes the geometry gives. `geom` is (H, W, P, Q, R, S, sh, sw, pt, pl),
every entry a non-negative int below 2**31. Nothing is launched for empty arrays.

- max_pool2d / avg_pool2d: one thread per output element; max pooling with 2x2 windows, stride 2,
  no padding and H = 2P, W = 2Q with W a multiple of 4 (fast_22) two outputs per thread with
  16-byte row loads, and its backward the matching two-window gather with 16-byte row stores;
  3x3 windows with stride 2 and padding 1 on such planes (fast_32) two outputs per thread too,
  and its backward two adjacent inputs per thread.
- max_pool2d_backward with the geometry: gather (one thread per input element, no atomics,
  deterministic, the CPU's sums). When some argmax does not lie in its own window (an argmax not
  made by max_pool2d with this geometry), dx is recomputed by the scatter, which accepts any
  in-plane index as the CPU does. That check reads one flag back (a device sync).
- max_pool2d_backward without the geometry: the scatter (atomicAdd into a zeroed dx) plus the
  in-plane index check.
"""
from __future__ import annotations

import numpy as np

from . import cupy_module, function, suffix

THREADS = 256
MAX_BLOCKS = 65535 * 32
WARP_PLANE_MAX = 1024  # global average: planes up to this size get one warp, larger ones a block
INT32_MAX = 2**31 - 1


def grid(n: int, threads: int = THREADS, max_blocks: int = MAX_BLOCKS) -> int:
    """Blocks for n threads' worth of work (the kernels loop grid-stride past max_blocks)."""
    return max(1, min((int(n) + threads - 1) // threads, max_blocks))


def gap_launch(planes: int, hw: int) -> tuple[str, int]:
    """(kernel base name, blocks) of the global average over `planes` planes of hw elements."""
    if hw <= WARP_PLANE_MAX:
        warps = THREADS // 32
        return "gap_forward_warp", max(1, min((planes + warps - 1) // warps, MAX_BLOCKS))
    return "gap_forward_block", max(1, min(planes, MAX_BLOCKS))


def max_kernel_name(R: int, S: int, want_argmax: bool) -> str:
    """The forward max kernel for an R x S window: unrolled 2x2 and 3x3, else the general loop."""
    base = "maxpool2d_fwd_k2" if (R, S) == (2, 2) else "maxpool2d_fwd_k3" if (R, S) == (3, 3) else "maxpool2d_fwd"
    return base + ("_argmax" if want_argmax else "")


def fast_22(geom) -> bool:
    """Whether the two-outputs-per-thread 2x2 / stride-2 kernels apply: windows 2x2, stride 2, no
    padding, H = 2P and W = 2Q (the windows tile the plane), W a multiple of 4."""
    H, W, P, Q, R, S, sh, sw, pt, pl = geom
    return (R, S, sh, sw, pt, pl) == (2, 2, 2, 2, 0, 0) and H == 2 * P and W == 2 * Q and W % 4 == 0


def fast_32(geom) -> bool:
    """Whether the two-outputs-per-thread 3x3 / stride-2 / padding-1 forward applies: H = 2P and
    W = 2Q with W a multiple of 4 (the padding then is 1 on every side)."""
    H, W, P, Q, R, S, sh, sw, pt, pl = geom
    return (R, S, sh, sw, pt, pl) == (3, 3, 2, 2, 1, 1) and H == 2 * P and W == 2 * Q and W % 4 == 0


_unread_flags: dict = {}


def _unread_flag(cp):
    dev = cp.cuda.Device().id
    flag = _unread_flags.get(dev)
    if flag is None:
        flag = _unread_flags[dev] = cp.zeros(1, dtype=np.int32)
    return flag


def _aligned(*pairs) -> bool:
    """Whether each (array, bytes) pair's data pointer is a multiple of bytes (user arrays may be views)."""
    return all(a.data.ptr % n == 0 for a, n in pairs)


def _fn(base: str, dtype):
    return function("pool", f"{base}_{suffix(dtype)}")


def _geom_args(total: int, geom) -> tuple:
    return (np.int64(total),) + tuple(np.int32(v) for v in geom)


def _argmax_error(op: str, hw: int) -> ValueError:
    return ValueError(f"[{op}] argmax holds indices outside [0, H*W) = [0, {hw})")


def max_pool2d(x, geom, want_argmax: bool, out=None):
    """(y, argmax or None) for x (N, C, H, W); y written into `out` when given."""
    cp = cupy_module()
    N, C = x.shape[:2]
    H, W, P, Q, R, S = geom[:6]
    y = out if out is not None else cp.empty((N, C, P, Q), dtype=x.dtype)
    am = cp.empty((N, C, P, Q), dtype=np.int32) if want_argmax else None
    total = N * C * P * Q
    fast = "22v" if fast_22(geom) else "32v" if fast_32(geom) else None
    if total and fast and _aligned((x, 16), (y, 2 * x.dtype.itemsize)):
        pairs = total // 2
        fn = _fn(f"maxpool2d_fwd_{fast}" + ("_argmax" if want_argmax else ""), x.dtype)
        args = ((y, am, x) if want_argmax else (y, x)) + (np.int64(pairs), np.int32(P), np.int32(Q))
        fn((grid(pairs),), (THREADS,), args)
    elif total:
        fn = _fn(max_kernel_name(R, S, want_argmax), x.dtype)
        args = ((y, am, x) if want_argmax else (y, x)) + _geom_args(total, geom)
        fn((grid(total),), (THREADS,), args)
    return y, am


def avg_pool2d(x, geom, count_include_pad: bool, out=None):
    cp = cupy_module()
    N, C = x.shape[:2]
    P, Q = geom[2], geom[3]
    y = out if out is not None else cp.empty((N, C, P, Q), dtype=x.dtype)
    total = N * C * P * Q
    if total:
        _fn("avgpool2d_fwd", x.dtype)((grid(total),), (THREADS,),
                                      (y, x) + _geom_args(total, geom) + (np.int32(bool(count_include_pad)),))
    return y


def _scatter(dy, argmax, x_shape, op: str):
    cp = cupy_module()
    N, C, H, W = x_shape
    dx = cp.zeros((N, C, H, W), dtype=dy.dtype)
    total = dy.size
    if total and H * W:
        bad = cp.zeros(1, dtype=np.int32)
        out = dy.shape[2] * dy.shape[3]
        _fn("maxpool2d_scatter", dy.dtype)((grid(total),), (THREADS,),
                                           (dx, dy, argmax, bad, np.int64(total), np.int64(out), np.int64(H * W)))
        if int(bad.item()):
            raise _argmax_error(op, H * W)
    return dx


def max_pool2d_backward(dy, argmax, x_shape, geom=None, op: str = "max_pool2d_backward", check: bool = True):
    """dx of max pooling: the gather when `geom` is known, else (or when an argmax lies outside its
    window) the scatter. check=False trusts the argmax to lie in its window (no flag read back)."""
    cp = cupy_module()
    N, C, H, W = x_shape
    if geom is None:
        return _scatter(dy, argmax, x_shape, op)
    total = N * C * H * W
    dx = cp.empty((N, C, H, W), dtype=dy.dtype)
    if total == 0:
        return dx
    # the flag the kernels raise for an argmax outside its window: a fresh zero when it is read
    # back, else a per-device scratch int nobody reads (no allocation, no memset launch)
    bad = cp.zeros(1, dtype=np.int32) if check else _unread_flag(cp)
    if fast_22(geom) and _aligned((dy, 2 * dy.dtype.itemsize), (argmax, 8)):
        pairs = total // 8  # two windows of four inputs each
        _fn("maxpool2d_bwd_22v", dy.dtype)((grid(pairs),), (THREADS,),
                                           (dx, dy, argmax, bad, np.int64(pairs), np.int32(geom[2]), np.int32(geom[3])))
    elif fast_32(geom):
        pairs = total // 2  # two adjacent inputs of one row per thread
        _fn("maxpool2d_bwd_32v", dy.dtype)((grid(pairs),), (THREADS,),
                                           (dx, dy, argmax, bad, np.int64(pairs), np.int32(geom[2]), np.int32(geom[3])))
    else:
        _fn("maxpool2d_bwd", dy.dtype)((grid(total),), (THREADS,), (dx, dy, argmax, bad) + _geom_args(total, geom))
    if check and int(bad.item()):
        return _scatter(dy, argmax, x_shape, op)
    return dx


def avg_pool2d_backward(dy, x_shape, geom, count_include_pad: bool):
    cp = cupy_module()
    N, C, H, W = x_shape
    total = N * C * H * W
    dx = cp.empty((N, C, H, W), dtype=dy.dtype)
    if total:
        _fn("avgpool2d_bwd", dy.dtype)((grid(total),), (THREADS,),
                                       (dx, dy) + _geom_args(total, geom) + (np.int32(bool(count_include_pad)),))
    return dx


def global_avg_pool2d(x):
    cp = cupy_module()
    N, C, H, W = x.shape
    y = cp.empty((N, C), dtype=x.dtype)
    planes, hw = N * C, H * W
    if planes and hw:
        base, blocks = gap_launch(planes, hw)
        _fn(base, x.dtype)((blocks,), (THREADS,), (y, x, np.int64(planes), np.int64(hw)))
    return y


def global_avg_pool2d_backward(dy, x_shape):
    cp = cupy_module()
    N, C, H, W = x_shape
    dx = cp.empty((N, C, H, W), dtype=dy.dtype)
    total = N * C * H * W
    if total and (H * W) % 4 == 0:  # dx is fresh, hence aligned
        quads = total // 4
        _fn("gap_backward4", dy.dtype)((grid(quads),), (THREADS,), (dx, dy, np.int64(quads), np.int64(H * W)))
    elif total:
        _fn("gap_backward", dy.dtype)((grid(total),), (THREADS,), (dx, dy, np.int64(total), np.int64(H * W)))
    return dx


__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "global_avg_pool2d",
           "global_avg_pool2d_backward", "grid", "gap_launch", "max_kernel_name", "fast_22", "fast_32"]
