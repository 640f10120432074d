"""GEMM on the GPU with pydl's own kernels (kernels/gemm.cu): the product every CUDA family calls.

    gemm(a, b, out, trans_a, trans_b, alpha, beta)    # out = alpha * op(a) @ op(b) + beta * out

All arrays are C-contiguous CuPy arrays of one dtype (float32 or float64); op(a) is a.T (a stored
(k, m)) when trans_a, op(b) is b.T (b stored (n, k)) when trans_b. `pydl.ops.gemm` validates user
input; this wrapper only re-checks what would make a kernel read or write out of bounds.

float32 picks a block tile by the number of blocks it gives against the GPU's multiprocessor
count: 128x128 (8x8 per thread) when there are enough tiles to fill every SM, then 128x64 (8x4),
then 64x64 (4x4) for small products. float64 runs the 64x64 tile (4x4 per thread) so that no
kernel spills. The 16-byte vector loads are used when every pointer is 16-byte aligned and every
leading dimension a multiple of the vector width; otherwise the scalar-load variant runs.
beta == 0 never reads `out`; alpha == 0 or k == 0 only scales `out` by beta (a and b unread);
m == 0 or n == 0 launches nothing.
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, kernel, scalar

THREADS = 256
# tile name -> (rows of C, columns of C) per block; the kernels are gemm_<tile>_<ta><tb>_<v|x>.
TILES = {"l": (128, 128), "m": (128, 64), "s": (64, 64)}
FLOAT64_TILES = ("s",)
_MAX_GRID = 2**31 - 1
_sm_counts: dict = {}


def sm_count() -> int:
    """Multiprocessors of the current GPU."""
    cp = cupy_module()
    dev = cp.cuda.Device()
    count = _sm_counts.get(dev.id)
    if count is None:
        count = int(cp.cuda.runtime.getDeviceProperties(dev.id)["multiProcessorCount"])
        _sm_counts[dev.id] = count
    return count


def _tiles(m: int, n: int, tile: str) -> int:
    bm, bn = TILES[tile]
    return ((m + bm - 1) // bm) * ((n + bn - 1) // bn)


def choose_tile(m: int, n: int, dtype, sms: int) -> str:
    """The block tile for an (m, n) output: the largest that still gives work to (almost) every SM."""
    if np.dtype(dtype) == np.float64:
        return "s"
    if _tiles(m, n, "l") >= sms:
        return "l"
    if 4 * _tiles(m, n, "m") >= 3 * sms:
        return "m"
    return "s"


def vector_ok(a, b, out) -> bool:
    """Whether the 16-byte load/store variant is safe: aligned pointers, leading dims a multiple of 16 bytes."""
    width = 16 // out.dtype.itemsize
    for x in (a, b, out):
        if x.data.ptr % 16 or x.shape[1] % width:
            return False
    return True


def _check(a, b, out, trans_a: bool, trans_b: bool):
    dtype = out.dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"[cuda.gemm] out must be float32 or float64, got {dtype}")
    for name, x in (("a", a), ("b", b), ("out", out)):
        if x.ndim != 2:
            raise ValueError(f"[cuda.gemm] {name} must be 2-D, got shape {tuple(x.shape)}")
        if x.dtype != dtype:
            raise ValueError(f"[cuda.gemm] {name} has dtype {x.dtype}, out has {dtype}")
        if not x.flags.c_contiguous:
            raise ValueError(f"[cuda.gemm] {name} must be C-contiguous")
    m, n = out.shape
    am, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, bn = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if am != m or bn != n or k != kb:
        raise ValueError(f"[cuda.gemm] shapes do not chain: a {tuple(a.shape)} (trans_a={trans_a}), "
                         f"b {tuple(b.shape)} (trans_b={trans_b}), out {tuple(out.shape)}")
    return m, n, k


def scale(out, beta: float) -> None:
    """out = beta * out in place (zeros without reading when beta == 0)."""
    total = out.size
    if total == 0:
        return
    fn = kernel("gemm", "gemm_scale", out.dtype)
    fn((blocks(total, THREADS),), (THREADS,), (out, np.int64(total), scalar(beta, out.dtype)))


def gemm(a, b, out, trans_a: bool, trans_b: bool, alpha: float, beta: float, tile: str | None = None) -> None:
    """out (m, n) = alpha * op(a) @ op(b) + beta * out on C-contiguous CuPy arrays of one dtype.

    `tile` ("l", "m", "s") overrides the automatic choice (float64 takes "s" only)."""
    trans_a, trans_b = bool(trans_a), bool(trans_b)
    m, n, k = _check(a, b, out, trans_a, trans_b)
    if m == 0 or n == 0:
        return
    alpha, beta = float(alpha), float(beta)
    if k == 0 or alpha == 0.0:
        scale(out, beta)
        return
    dtype = out.dtype
    if tile is None:
        tile = choose_tile(m, n, dtype, sm_count())
    elif tile not in TILES or (dtype == np.float64 and tile not in FLOAT64_TILES):
        raise ValueError(f"[cuda.gemm] no tile {tile!r} for {dtype}; float32 has {sorted(TILES)}, "
                         f"float64 {list(FLOAT64_TILES)}")
    grid = _tiles(m, n, tile)
    if grid > _MAX_GRID:
        raise ValueError(f"[cuda.gemm] output {m}x{n} needs {grid} blocks, more than a grid holds")
    name = f"gemm_{tile}_{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}_{'v' if vector_ok(a, b, out) else 'x'}"
    fn = kernel("gemm", name, dtype)
    fn((grid,), (THREADS,), (a, b, out, np.int64(m), np.int64(n), np.int64(k), np.int64(a.shape[1]),
                             np.int64(b.shape[1]), scalar(alpha, dtype), scalar(beta, dtype)))


__all__ = ["gemm", "scale", "choose_tile", "vector_ok", "sm_count", "TILES", "THREADS"]
