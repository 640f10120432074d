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

    gemm_batched(a, b, out)     # out[z] = a[z] @ b[z] for 3-D a (B, m, k), b (B, k, n), out (B, m, n)

runs every product of the batch in one launch (grid y = B), choosing its tile among BATCH_TILES by
the padded area it computes (batched_tile), so products of 64 rows or fewer take 64-row tiles.
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, kernel, scalar

THREADS = 256
# tile name -> (rows of C, columns of C) per block; the kernels are gemm_<tile>_<ta><tb>_<v|x>.
TILES = {"l": (128, 128), "m": (128, 64), "s": (64, 64)}
FLOAT64_TILES = ("s",)
_MAX_GRID = 2**31 - 1
_MAX_BATCH = 65535   # grid y
# Tiles of the batched kernels (gemmb_<tile>_<v|x>): the plain ones plus "h" = 64x128 (4x8 per thread).
BATCH_TILES = {"l": (128, 128), "m": (128, 64), "h": (64, 128), "s": (64, 64)}
# Throughput relative to "s" assumed by batched_tile (FMAs per shared-memory read of the register
# tile: 8x8 -> 4, 8x4 and 4x8 -> 2.7, 4x4 -> 2).
BATCH_TILE_SPEED = {"l": 1.6, "m": 1.3, "h": 1.3, "s": 1.0}
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


def batched_tile(m: int, n: int, batch: int, dtype, sms: int) -> str:
    """The tile of a batched (m, n) product: the least padded area / BATCH_TILE_SPEED among "s" and
    the larger tiles whose grid (over the whole batch) gives every multiprocessor a block."""
    if np.dtype(dtype) == np.float64:
        return "s"
    best, best_cost = "s", None
    for tile, (bm, bn) in BATCH_TILES.items():
        count = ((m + bm - 1) // bm) * ((n + bn - 1) // bn)
        if tile != "s" and count * batch < sms:
            continue
        cost = count * bm * bn / BATCH_TILE_SPEED[tile]
        if best_cost is None or cost < best_cost:
            best, best_cost = tile, cost
    return best


def gemm_batched(a, b, out, tile: str | None = None) -> None:
    """out[z] = a[z] @ b[z] for C-contiguous 3-D CuPy arrays a (B, m, k), b (B, k, n), out (B, m, n)
    of one dtype, in one launch. `tile` overrides batched_tile (float64 takes "s" only)."""
    dtype = out.dtype
    for name, x in (("a", a), ("b", b), ("out", out)):
        if x.ndim != 3 or x.dtype != dtype or not x.flags.c_contiguous:
            raise ValueError(f"[cuda.gemm_batched] {name} must be a C-contiguous 3-D {dtype} array, got "
                             f"{x.dtype} {tuple(x.shape)}")
    nb, m, k = a.shape
    if b.shape[:2] != (nb, k) or out.shape != (nb, m, b.shape[2]):
        raise ValueError(f"[cuda.gemm_batched] shapes do not chain: a {tuple(a.shape)}, b {tuple(b.shape)}, "
                         f"out {tuple(out.shape)}")
    n = b.shape[2]
    if nb == 0 or m == 0 or n == 0:
        return
    if k == 0:
        scale(out, 0.0)
        return
    if nb > _MAX_BATCH:
        raise ValueError(f"[cuda.gemm_batched] a batch of {nb} is more than one launch holds ({_MAX_BATCH})")
    if tile is None:
        tile = batched_tile(m, n, nb, dtype, sm_count())
    elif tile not in BATCH_TILES or (dtype == np.float64 and tile != "s"):
        raise ValueError(f"[cuda.gemm_batched] no tile {tile!r} for {dtype}")
    bm, bn = BATCH_TILES[tile]
    grid = ((m + bm - 1) // bm) * ((n + bn - 1) // bn)
    if grid > _MAX_GRID:
        raise ValueError(f"[cuda.gemm_batched] output {m}x{n} needs {grid} blocks, more than a grid holds")
    # vector loads: every operand 16-byte aligned and every row (so every batch stride) a multiple of 16 bytes
    width = 16 // out.dtype.itemsize
    vec = all(x.data.ptr % 16 == 0 for x in (a, b, out)) and k % width == 0 and n % width == 0
    fn = kernel("gemm", f"gemmb_{tile}_{'v' if vec else 'x'}", dtype)
    fn((grid, nb), (THREADS,), (a, b, out, np.int64(m), np.int64(n), np.int64(k), np.int64(m * k),
                                np.int64(k * n), np.int64(m * n)))


__all__ = ["gemm", "gemm_batched", "batched_tile", "BATCH_TILES", "scale", "choose_tile", "vector_ok", "sm_count", "TILES", "THREADS"]
