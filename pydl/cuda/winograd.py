"""Winograd convolution on the GPU (kernels/winograd.cu): F(2x2,3x3) and F(4x4,3x3) forward for 3x3
filters with stride 1 and dilation 1, any padding, float32 and float64.

    y = forward(x, w, b, out, y_shape, pads, act, mo)     # mo = 2 or 4 output rows/columns per tile

Four launches: the filter transform U (A*A, K, C), the input transform V (A*A, C, TP), one batched
GEMM M[xi] = U[xi] @ V[xi] over the A*A = 16 or 36 transform points (pydl.cuda.gemm.gemm_batched),
and the output transform with the bias and relu fused. A = mo + 2; TP is the tile count N * TH * TW
rounded up to a multiple of 4. F(4x4) does 4x fewer multiplies than the direct sum in its GEMM
(F(2x2): 2.25x) at the cost of transforms that move (A/mo)^2 = 2.25 (F(2x2): 4) times the input
and output through memory; its rounding error is ~10x the direct sum's (as on the CPU).
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, kernel
from .gemm import gemm_batched

THREADS = 256  # WINO_THREADS
ACT_CODES = {"linear": 0, "relu": 1}


def tiles(n: int, p: int, q: int, mo: int) -> tuple[int, int, int, int]:
    """(TH, TW, T, TP): output tiles per column and row, tiles in all, T rounded up to a multiple of 4."""
    th, tw = (p + mo - 1) // mo, (q + mo - 1) // mo
    t = n * th * tw
    return th, tw, t, (t + 3) // 4 * 4


def scratch_bytes(x_shape, k: int, y_shape, mo: int, itemsize: int) -> int:
    """Bytes of the U, V and M buffers one forward call allocates."""
    n, c = int(x_shape[0]), int(x_shape[1])
    a2 = (mo + 2) ** 2
    _, _, _, tp = tiles(n, int(y_shape[2]), int(y_shape[3]), mo)
    return a2 * (k * c + c * tp + k * tp) * itemsize


def forward(x, w, b, out, y_shape, pads, act: str, mo: int):
    """y (N, K, P, Q) = act(conv2d(x, w) + b) with stride 1, dilation 1 and 3x3 w, into `out`
    (allocated when None). x, w, b: C-contiguous CuPy arrays of one dtype (validated by pydl.ops)."""
    cp = cupy_module()
    if mo not in (2, 4):
        raise ValueError(f"[cuda.winograd] mo must be 2 or 4, got {mo!r}")
    n, c, h, wd = (int(d) for d in x.shape)
    k = int(w.shape[0])
    p, q = int(y_shape[2]), int(y_shape[3])
    y = cp.empty((n, k, p, q), dtype=x.dtype) if out is None else out
    if y.size == 0:
        return y
    dtype = x.dtype
    a2 = (mo + 2) ** 2
    th, tw, t, tp = tiles(n, p, q, mo)
    u = cp.empty((a2, k, c), dtype=dtype)
    kernel("winograd", f"wino_filter_f{mo}", dtype)((blocks(k * c, THREADS),), (THREADS,), (w, u, np.int64(k * c)))
    v = cp.empty((a2, c, tp), dtype=dtype)
    kernel("winograd", f"wino_input_f{mo}", dtype)(
        (blocks(c * tp, THREADS),), (THREADS,),
        (x, v, np.int32(c), np.int32(h), np.int32(wd), np.int32(th), np.int32(tw), np.int32(pads[0]),
         np.int32(pads[2]), np.int64(t), np.int64(tp)))
    m = cp.empty((a2, k, tp), dtype=dtype)
    gemm_batched(u, v, m)
    del u, v
    vec = q % mo == 0 and y.data.ptr % 16 == 0
    kernel("winograd", f"wino_output_f{mo}", dtype)(
        (blocks(k * tp, THREADS),), (THREADS,),
        (m, w if b is None else b, y, np.int32(k), np.int32(p), np.int32(q), np.int32(th), np.int32(tw),
         np.int64(t), np.int64(tp), np.int32(b is not None), np.int32(ACT_CODES[act]), np.int32(vec)))
    return y


__all__ = ["forward", "tiles", "scratch_bytes"]
