"""Launchers of kernels/metrics.cu: the per-sample reductions of the accuracy family and of the
MSE / MAE metrics. Arrays come from `pydl.ops.metrics` (C-contiguous CuPy arrays, shapes checked);
each call returns a host number (one device -> host copy of 8 bytes)."""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, function, kernel

THREADS = 256
WARPS = THREADS // 32
MAX_BLOCKS = 1024


def argmax_rows(x):
    """int64 (R,): the first index of each row's maximum over the last axis (NaN is the maximum)."""
    cp = cupy_module()
    D = int(x.shape[-1])
    R = int(x.size) // D if D else 0
    out = cp.empty((R,), dtype=np.int64)
    if R:
        kernel("metrics", "argmax_rows", x.dtype)((blocks(R, WARPS, MAX_BLOCKS),), (THREADS,),
                                                  (out, x, np.int64(R), np.int64(D)))
    return out


def count_equal(a, b) -> int:
    """#{i : a[i] == b[i]} for two int64 vectors of one length."""
    cp = cupy_module()
    n = int(a.size)
    count = cp.zeros((1,), dtype=np.uint64)
    if n:
        function("metrics", "count_equal")((blocks(n, THREADS, MAX_BLOCKS),), (THREADS,),
                                           (count, a, b, np.int64(n)))
    return int(count.get()[0])


def binary_hits(t, p, threshold) -> int:
    """#{i : t[i] == (p[i] > threshold)}; t float64, p float32/float64 of t's size, threshold in p's dtype."""
    cp = cupy_module()
    n = int(p.size)
    count = cp.zeros((1,), dtype=np.uint64)
    if n:
        kernel("metrics", "binary_hits", p.dtype)((blocks(n, THREADS, MAX_BLOCKS),), (THREADS,),
                                                  (count, t, p, np.int64(n), p.dtype.type(threshold)))
    return int(count.get()[0])


def diff_sum(t, p, squared: bool) -> float:
    """sum((t - p)^2) or sum(|t - p|) in double, deterministic; t and p of one dtype and size."""
    cp = cupy_module()
    n = int(p.size)
    if n == 0:
        return 0.0
    nb = blocks(n, THREADS, MAX_BLOCKS)
    partial = cp.empty((nb,), dtype=np.float64)
    kernel("metrics", "diff_sum", p.dtype)((nb,), (THREADS,), (partial, t, p, np.int64(n), np.int32(bool(squared))))
    out = cp.empty((1,), dtype=np.float64)
    function("metrics", "metric_reduce_partials")((1,), (THREADS,), (out, partial, np.int64(nb)))
    return float(out.get()[0])


__all__ = ["argmax_rows", "count_equal", "binary_hits", "diff_sum"]
