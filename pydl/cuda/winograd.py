"""Winograd convolution on the GPU (kernels/winograd.cu): F(2x2,3x3) and F(4x4,3x3) forward for 3x3
filters with stride 1 and dilation 1, any padding, float32 and float64.

    y = forward(x, w, b, out, y_shape, pads, act, mo)     # mo = 2 or 4 output rows/columns per tile

Four launches: the filter transform U (A*A, K, C), the input transform V (A*A, C, TP), one batched
GEMM M[xi] = U[xi] @ V[xi] over the A*A = 16 or 36 transform points (pydl.cuda.gemm.gemm_batched),
and the output transform with the bias and relu fused. A = mo + 2; TP is the tile count N * TH * TW
rounded up to a multiple of 4. Batches whose V and M would pass SCRATCH_LIMIT run in chunks of
whole images (chunk_images), the filter transform once.

F(4x4) does 4x fewer multiplies than the direct sum in its GEMM (F(2x2): 2.25x) at the cost of
transforms that move (A/mo)^2 = 2.25 (F(2x2): 4) times the input and output through memory; its
rounding error is ~10x the direct sum's (as on the CPU).
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, kernel
from .gemm import gemm_batched

THREADS = 256  # WINO_THREADS
ACT_CODES = {"linear": 0, "relu": 1}
# Most bytes of V and M one chunk of the batch may take: larger batches run in chunks of whole
# images (the filter transform once), so the scratch stays bounded where the implicit GEMM needs none.
SCRATCH_LIMIT = 1 << 30


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


def chunk_images(n: int, c: int, k: int, p: int, q: int, mo: int, itemsize: int) -> int:
    """Images per chunk: as many as keep one chunk's V and M within SCRATCH_LIMIT (at least 1)."""
    th, tw = (p + mo - 1) // mo, (q + mo - 1) // mo
    per_image = (mo + 2) ** 2 * (c + k) * th * tw * itemsize
    return max(1, min(int(n), SCRATCH_LIMIT // max(1, per_image)))


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
    u = cp.empty((a2, k, c), dtype=dtype)
    kernel("winograd", f"wino_filter_f{mo}", dtype)((blocks(k * c, THREADS),), (THREADS,), (w, u, np.int64(k * c)))
    step = chunk_images(n, c, k, p, q, mo, dtype.itemsize)
    for i in range(0, n, step):
        xi, yi = x[i:i + step], y[i:i + step]  # whole images: contiguous views
        th, tw, t, tp = tiles(int(xi.shape[0]), p, q, mo)
        v = cp.empty((a2, c, tp), dtype=dtype)
        kernel("winograd", f"wino_input_f{mo}", dtype)(
            (blocks(c * tp, THREADS),), (THREADS,),
            (xi, v, np.int32(c), np.int32(h), np.int32(wd), np.int32(th), np.int32(tw), np.int32(pads[0]),
             np.int32(pads[2]), np.int64(t), np.int64(tp)))
        m = cp.empty((a2, k, tp), dtype=dtype)
        gemm_batched(u, v, m)
        del v
        vec = q % mo == 0 and yi.data.ptr % 16 == 0
        kernel("winograd", f"wino_output_f{mo}", dtype)(
            (blocks(k * tp, THREADS),), (THREADS,),
            (m, w if b is None else b, yi, np.int32(k), np.int32(p), np.int32(q), np.int32(th), np.int32(tw),
             np.int64(t), np.int64(tp), np.int32(b is not None), np.int32(ACT_CODES[act]), np.int32(vec)))
        del m
    return y


__all__ = ["forward", "tiles", "scratch_bytes", "chunk_images", "SCRATCH_LIMIT"]
