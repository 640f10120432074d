"""CUDA wrappers of the 2-D convolution ops (kernels/conv.cu): implicit-GEMM forward and backward.

The arrays come from `pydl.ops.conv`, already validated (C-contiguous CuPy float32/float64 arrays of
one dtype, NCHW x (N, C, H, W), w (K, C, R, S), matching shapes) together with the resolved
stride, padding (top, bottom, left, right) and dilation; these functions allocate the outputs,
launch the kernels and return CuPy arrays.

    forward:        y (N, K, P, Q)   one launch, grid (ceil(N*P*Q / BN), ceil(K / BM))
    backward data:  dx (N, C, H, W)  one launch, grid (ceil(N*H*W / BN), ceil(C / BM)); the
                    stride-1 kernel skips the divisibility test of the strided one
    backward filt:  dw (K, C, R, S)  grid (ceil(C*R*S / BN), ceil(K / BM), splits): the reduction
                    over N*P*Q is cut into `splits` fixed chunks when the output has too few tiles to
                    occupy the GPU (split_plan), each written to a scratch slice, then summed in
                    order by conv_split_sum; deterministic, no atomics
    bias gradient:  db (K,)          one block per channel, summed in double

Each of the three products picks its block tile BM x BN (choose_tile): float32 takes the 128x128
tile "l" or the 64x256 tile "w" (8 x 8 results per thread) when the product is large enough to give
every multiprocessor a block and the tile does not waste much more padding than the 64x64 tile "s"
(4 x 4 per thread), which float64 always runs.

The kernels keep coordinates inside one image in 32-bit ints: `check_limits` refuses (ValueError)
the shapes where a dimension, a padded extent or a dilated filter extent reaches 2^31.
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, kernel, winograd

THREADS = 256          # threads per block of every implicit-GEMM kernel
TILE_M = 64            # output-matrix rows per block of tile "s" (filters K, or input channels C for dx)
TILE_N = 64            # output-matrix columns per block of tile "s" (N*P*Q, N*H*W, or C*R*S for dw)
# tile name -> (rows BM, columns BN) of the output matrix per block; kernels conv_<op>[_<tile>]_<dtype>,
# the suffix left out for "s"
TILES = {"l": (128, 128), "w": (64, 256), "s": (TILE_M, TILE_N)}
FLOAT64_TILES = ("s",)
# Throughput of a tile relative to "s" assumed by choose_tile: an 8 x 8 register tile does 64 FMAs
# per four 16-byte shared-memory reads, the 4 x 4 tile 16 per two; "w" gathers 25% more operand
# elements per FMA than "l".
TILE_SPEED = {"l": 1.6, "w": 1.5, "s": 1.0}
# Tests set this to a tile name to force it on every float32 launch (float64 keeps "s").
FORCE_TILE = None
BIAS_THREADS = 256     # conv_bias_grad's block size
MIN_SPLIT_CHUNK = 256  # a weight-gradient split reduces at least this many (n, p, q) positions
SPLIT_BLOCKS_PER_SM = 2
_INT_LIMIT = 2**31     # every size a kernel keeps in an int stays below this
_MAX_GRID_X = 2**31 - 1
_MAX_GRID_YZ = 65535
_sm_counts: dict = {}
ACT_CODES = {"linear": 0, "relu": 1}


def sm_count() -> int:
    """Multiprocessors of the current GPU."""
    cp = cupy_module()
    dev = cp.cuda.Device()
    n = _sm_counts.get(dev.id)
    if n is None:
        n = _sm_counts[dev.id] = int(cp.cuda.runtime.getDeviceProperties(dev.id)["multiProcessorCount"])
    return n


def _tiles(n: int, t: int) -> int:
    return (int(n) + t - 1) // t


def geometry(x_shape, w_shape, out_hw, stride, pads, dilation) -> tuple:
    """The 15 sizes every kernel takes: N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw."""
    n, c, h, w = (int(d) for d in x_shape)
    k, _, r, s = (int(d) for d in w_shape)
    p, q = (int(d) for d in out_hw)
    return (n, c, h, w, k, r, s, p, q, int(stride[0]), int(stride[1]), int(pads[0]), int(pads[2]),
            int(dilation[0]), int(dilation[1]))


def check_limits(op: str, x_shape, w_shape, out_hw, stride, pads, dilation) -> None:
    """ValueError when a size would overflow the kernels' 32-bit in-image coordinates or a grid."""
    n, c, h, w, k, r, s, p, q, sh, sw, pt, pl, dh, dw = geometry(x_shape, w_shape, out_hw, stride, pads, dilation)
    sizes = {"N": n, "C": c, "H": h, "W": w, "K": k, "R": r, "S": s, "R*S": r * s,
             "padded H": h + pads[0] + pads[1], "padded W": w + pads[2] + pads[3],
             "dilated R": (r - 1) * dh + 1, "dilated S": (s - 1) * dw + 1, "P*stride": p * sh, "Q*stride": q * sw}
    big = [f"{name} = {v}" for name, v in sizes.items() if v >= _INT_LIMIT]
    if big:
        raise ValueError(f"[{op}] the CUDA kernels need every size below 2^31, got {', '.join(big)} "
                         f"(x {tuple(x_shape)}, w {tuple(w_shape)})")
    grids = {"N*P*Q": _tiles(n * p * q, TILE_N), "N*H*W": _tiles(n * h * w, TILE_N),
             "C*R*S": _tiles(c * r * s, TILE_N)}
    if max(grids.values()) > _MAX_GRID_X or max(_tiles(k, TILE_M), _tiles(c, TILE_M)) > _MAX_GRID_YZ:
        raise ValueError(f"[{op}] x {tuple(x_shape)} and w {tuple(w_shape)} need more thread blocks than a CUDA "
                         f"grid holds")


def tile_blocks(m: int, n: int, tile: str) -> int:
    """Blocks of an (m, n) output matrix in `tile`."""
    bm, bn = TILES[tile]
    return _tiles(m, bm) * _tiles(n, bn)


def choose_tile(m: int, n: int, dtype, sms: int, max_splits: int = 1) -> str:
    """The block tile of an (m, n) output product (grid z may add up to `max_splits` blocks per
    tile): the one with the least padded area / TILE_SPEED among "s" and the large tiles whose grid
    still gives every one of the `sms` multiprocessors a block. FORCE_TILE overrides for float32."""
    if np.dtype(dtype) == np.float64:
        return "s"
    if FORCE_TILE is not None:
        if FORCE_TILE not in TILES:
            raise ValueError(f"[cuda.conv] FORCE_TILE must be one of {sorted(TILES)}, got {FORCE_TILE!r}")
        return FORCE_TILE
    m, n = int(m), int(n)
    best, best_cost = "s", None
    for tile in ("s", "l", "w"):
        blocks = tile_blocks(m, n, tile)
        if tile != "s" and blocks * max(1, int(max_splits)) < sms:
            continue
        bm, bn = TILES[tile]
        cost = blocks * bm * bn / TILE_SPEED[tile]
        if best_cost is None or cost < best_cost:
            best, best_cost = tile, cost
    return best


def kernel_name(base: str, tile: str) -> str:
    """conv.cu's name of kernel `base` in `tile` (without the dtype suffix)."""
    return base if tile == "s" else f"{base}_{tile}"


def forward_grid(n: int, k: int, p: int, q: int, tile: str = "s") -> tuple:
    bm, bn = TILES[tile]
    return (max(1, _tiles(n * p * q, bn)), max(1, _tiles(k, bm)), 1)


def backward_data_grid(n: int, c: int, h: int, w: int, tile: str = "s") -> tuple:
    bm, bn = TILES[tile]
    return (max(1, _tiles(n * h * w, bn)), max(1, _tiles(c, bm)), 1)


def max_splits(npq: int) -> int:
    """The most chunks split_plan cuts a reduction over npq positions into."""
    return max(1, int(npq) // MIN_SPLIT_CHUNK)


def split_plan(npq: int, k: int, crs: int, sms: int, tile: str = "s") -> tuple[int, int]:
    """(splits, chunk) of the weight gradient's reduction over npq = N*P*Q positions: as many splits
    as keep the grid within SPLIT_BLOCKS_PER_SM blocks per multiprocessor (rounded down, so the last
    wave is not a nearly empty one), each at least MIN_SPLIT_CHUNK long, the chunk a multiple of 8
    (one slice); every split is non-empty. The plan depends only on the shapes, the tile and the SM
    count, so a GPU gives the same bits on every run."""
    npq, k, crs, sms = int(npq), int(k), int(crs), int(sms)
    if npq <= 0:
        return 1, 8
    tiles = max(1, tile_blocks(k, crs, tile))
    want = SPLIT_BLOCKS_PER_SM * max(1, sms) // tiles
    most = max_splits(npq)
    splits = max(1, min(want, most, _MAX_GRID_YZ))
    chunk = _tiles(_tiles(npq, splits), 8) * 8
    return _tiles(npq, chunk), chunk


def backward_filter_grid(k: int, crs: int, splits: int, tile: str = "s") -> tuple:
    bm, bn = TILES[tile]
    return (max(1, _tiles(crs, bn)), max(1, _tiles(k, bm)), int(splits))


def _i64(values) -> tuple:
    return tuple(np.int64(v) for v in values)


def forward(x, w, b, out, y_shape, stride, pads, dilation, act: str, algo: str = "implicit_gemm"):
    """y (N, K, P, Q) = act(conv2d(x, w) + b) into `out` (allocated when None); act "linear" or "relu".
    algo: "implicit_gemm", or "winograd_f2" / "winograd_f4" (3x3, stride 1, dilation 1: pydl.cuda.winograd)."""
    if algo in ("winograd_f2", "winograd_f4"):
        return winograd.forward(x, w, b, out, y_shape, pads, act, 2 if algo == "winograd_f2" else 4)
    if algo != "implicit_gemm":
        raise ValueError(f"[cuda.conv] algo must be 'implicit_gemm', 'winograd_f2' or 'winograd_f4', got {algo!r}")
    cp = cupy_module()
    n, k, p, q = (int(d) for d in y_shape)
    y = cp.empty((n, k, p, q), dtype=x.dtype) if out is None else out
    if y.size == 0:
        return y
    g = geometry(x.shape, w.shape, (p, q), stride, pads, dilation)
    tile = choose_tile(k, n * p * q, x.dtype, sm_count())
    fn = kernel("conv", kernel_name("conv_fwd", tile), x.dtype)
    fn(forward_grid(n, k, p, q, tile), (THREADS,),
       (x, w, w if b is None else b, y) + _i64(g) + (np.int32(b is not None), np.int32(ACT_CODES[act])))
    return y


def backward(dy, x, w, stride, pads, dilation, need_dx: bool, has_bias: bool):
    """(dx or None, dw, db or None) of conv2d, each freshly written."""
    cp = cupy_module()
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    p, q = dy.shape[2], dy.shape[3]
    g = _i64(geometry(x.shape, w.shape, (p, q), stride, pads, dilation))
    dtype = x.dtype
    sms = sm_count()
    dx = None
    if need_dx:
        dx = cp.empty(x.shape, dtype=dtype)
        if dx.size:
            unit = stride[0] == 1 and stride[1] == 1
            tile = choose_tile(c, n * h * wd, dtype, sms)
            fn = kernel("conv", kernel_name("conv_bwd_data_s1" if unit else "conv_bwd_data", tile), dtype)
            fn(backward_data_grid(n, c, h, wd, tile), (THREADS,), (dy, w, dx) + g)
    dw = cp.empty(w.shape, dtype=dtype)
    crs = c * r * s
    tile = choose_tile(k, crs, dtype, sms, max_splits(n * p * q))
    splits, chunk = split_plan(n * p * q, k, crs, sms, tile)
    part = dw if splits == 1 else cp.empty((splits,) + tuple(w.shape), dtype=dtype)
    fn = kernel("conv", kernel_name("conv_bwd_filter", tile), dtype)
    fn(backward_filter_grid(k, crs, splits, tile), (THREADS,), (dy, x, part) + g + (np.int64(chunk),))
    if splits > 1:
        count = dw.size
        fn = kernel("conv", "conv_split_sum", dtype)
        fn((blocks(count, THREADS),), (THREADS,), (dw, part, np.int64(count), np.int64(splits)))
    db = None
    if has_bias:
        db = cp.empty((k,), dtype=dtype)
        fn = kernel("conv", "conv_bias_grad", dtype)
        fn((min(k, _MAX_GRID_YZ),), (BIAS_THREADS,), (db, dy, np.int64(n), np.int64(k), np.int64(p * q)))
    return dx, dw, db


__all__ = ["forward", "backward", "check_limits", "geometry", "split_plan", "max_splits", "choose_tile", "tile_blocks",
           "kernel_name", "forward_grid", "backward_data_grid", "backward_filter_grid", "sm_count", "THREADS", "TILE_M",
           "TILE_N", "TILES", "FLOAT64_TILES", "TILE_SPEED"]
