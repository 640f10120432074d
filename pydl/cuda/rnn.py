"""CUDA launchers of the recurrent ops (SimpleRNN, LSTM, GRU over whole sequences).

The arrays come from `pydl.ops.rnn`, already validated: C-contiguous CuPy arrays of one dtype
(float32 or float64), shapes as documented there, mask (N, T) uint8. Matrix products run in
`pydl.cuda.gemm.gemm`; the point-wise cells in kernels/rnn.cu.

Forward: xw = x (N*T, C) @ W for all steps at once, then per step hu = h_{t-1} @ U (h_{t-1} .
rscale with recurrent dropout) and one fused cell kernel that adds the biases, applies the cell,
updates the state in place and writes the caches backward reads (the same (N, T, X) caches as the
CPU kernels: gates, hprev, cs, q).
Backward: per step (in reverse) one fused kernel gives the pre-activation gradients dG_t from dh
and the caches, then the product dG_t U^T gives the recurrent part of dh_{t-1}. When the plain
product would leave most of the GPU idle (few (64 x 64) output tiles), it runs split over the G
gates: dG_t viewed as (N*G, H) times U viewed as (H*G, H), whose diagonal blocks the next
step's kernel sums (rnn_split_sum in rnn.cu); each block then has a G times shorter inner loop.
After the loop: dW = x^T dGx, dU = (hprev . rscale)^T dGh, dx = dGx W^T (one GEMM each over all
N*T rows) and db, db_h the deterministic column sums of kernels/dense.cu.
"""
from __future__ import annotations

import numpy as np

from . import cupy_module, kernel

THREADS = 256
_MAX_GRID_Y = 65535
CELL_NAMES = {0: "tanh", 1: "relu", 2: "lstm", 3: "gru"}
GATES = {0: 1, 1: 1, 2: 4, 3: 3}
# Output tile of the small GEMM kernel: the unit in which split_factor counts blocks.
_TILE = 64


def grid(N: int, H: int) -> tuple:
    """Launch grid of the step kernels: x covers the H units exactly, y strides over the N rows."""
    return ((int(H) + THREADS - 1) // THREADS, max(1, min(int(N), _MAX_GRID_Y)))


def split_factor(N: int, H: int, G: int, sms: int) -> int:
    """S for the backward's per-step product dG_t U^T: G (split over the gates) when the split
    product (N*G x H*G, 64 x 64 tiles) still fits in about one wave of blocks on `sms`
    multiprocessors and the plain one (N x H) fills less than half of them, else 1."""
    if G == 1:
        return 1
    plain = -(-N // _TILE) * -(-H // _TILE)
    split = -(-(N * G) // _TILE) * -(-(H * G) // _TILE)
    return G if 2 * plain < sms and split <= sms else 1


def _gemm():
    from . import gemm as gemm_module
    return gemm_module


def forward(cell_id: int, x, W, U, b, b_h, h0, c0, mask, rscale):
    """(out, hT, cT, gates, hprev, cs, q) for rnn_forward; cT, cs only for the LSTM, q for the GRU."""
    cp = cupy_module()
    N, T, C = x.shape
    H, GH = U.shape
    dt = x.dtype
    lstm, gru = cell_id == 2, cell_id == 3
    out = cp.empty((N, T, H), dtype=dt)
    gates = cp.empty((N, T, GH), dtype=dt)
    hprev = cp.empty((N, T, H), dtype=dt)
    cs = cp.empty((N, T, H), dtype=dt) if lstm else None
    q = cp.empty((N, T, H), dtype=dt) if gru else None
    # the running state, updated in place by each step's kernel; it ends as h_T (c_T)
    h = h0.copy() if h0 is not None else cp.zeros((N, H), dtype=dt)
    c = (c0.copy() if c0 is not None else cp.zeros((N, H), dtype=dt)) if lstm else None
    if N == 0 or T == 0:
        return out, h, c, gates, hprev, cs, q
    gm = _gemm()
    xw = cp.empty((N * T, GH), dtype=dt)
    gm.gemm(x.reshape(N * T, C), W, xw, False, False, 1.0, 0.0)
    hu = cp.empty((N, GH), dtype=dt)
    g2 = grid(N, H)
    hmul = None
    if rscale is not None:  # the product's input h . rscale, kept beside the state
        hmul = cp.empty((N, H), dtype=dt)
        kernel("rnn", "rnn_scale_rows", dt)(g2, (THREADS,), (hmul, h, rscale, np.int64(N), np.int64(1),
                                                              np.int64(H)))
    src = hmul if hmul is not None else h
    bh = b_h if b_h is not None else (cp.zeros(GH, dtype=dt) if gru else b)
    no_mask = cp.zeros(1, dtype=cp.uint8)
    fn = kernel("rnn", f"rnn_fwd_{CELL_NAMES[cell_id]}", dt)
    head = (out, h, hmul if hmul is not None else h, c if c is not None else h, gates, hprev,
            cs if cs is not None else out, q if q is not None else out, xw, hu, b, bh,
            mask if mask is not None else no_mask, rscale if rscale is not None else b,
            np.int64(N), np.int64(T), np.int64(H))
    tail = (np.int32(mask is not None), np.int32(rscale is not None))
    for t in range(T):
        if t == 0 and h0 is None:
            hu.fill(0)
        else:
            gm.gemm(src, U, hu, False, False, 1.0, 0.0)
        fn(g2, (THREADS,), head + (np.int64(t),) + tail)
    return out, h, c, gates, hprev, cs, q


def backward(cell_id: int, cache, dout, dh_T, dc_T, need_dx: bool, split: int | None = None) -> dict:
    """The gradient dict of rnn_backward from a GPU cache. `split` forces the factor S of the
    per-step product (1 or G; default: split_factor for this GPU)."""
    cp = cupy_module()
    N, T, C, H = cache.N, cache.T, cache.C, cache.H
    G = GATES[cell_id]
    GH = G * H
    dt = cache.dtype
    lstm, gru = cell_id == 2, cell_id == 3
    dx = cp.empty((N, T, C), dtype=dt) if need_dx else None
    dW = cp.empty((C, GH), dtype=dt)
    dU = cp.empty((H, GH), dtype=dt)
    db = cp.empty(GH, dtype=dt)
    db_h = cp.empty(GH, dtype=dt) if gru else None
    if N == 0 or T == 0:
        dh0 = dh_T.copy() if dh_T is not None else cp.zeros((N, H), dtype=dt)
        dc0 = (dc_T.copy() if dc_T is not None else cp.zeros((N, H), dtype=dt)) if lstm else None
        for a in (dW, dU, db, db_h):
            if a is not None:
                a.fill(0)
        return {"dx": dx, "dh0": dh0, "dc0": dc0, "dW": dW, "dU": dU, "db": db, "db_h": db_h}
    gm = _gemm()
    if split is None:
        split = split_factor(N, H, G, gm.sm_count())
    S = int(split)
    if S not in (1, G):
        raise ValueError(f"[cuda.rnn] split must be 1 or G = {G}, got {split!r}")
    NT = N * T
    dgx = cp.empty((NT, GH), dtype=dt)
    dgh = cp.empty((NT, GH), dtype=dt) if gru else dgx
    dgs = cp.empty((N, GH), dtype=dt)  # this step's dGh, contiguous for the product
    dhr = cp.zeros((N * S, H * S), dtype=dt)  # dG_{t+1} U^T (split layout); none after step T-1
    dhd = dh_T.copy() if dh_T is not None else cp.zeros((N, H), dtype=dt)
    dc = (dc_T.copy() if dc_T is not None else cp.zeros((N, H), dtype=dt)) if lstm else None
    c0 = None
    if lstm:
        c0 = cache.c0 if cache.c0 is not None else cp.zeros((N, H), dtype=dt)
    mask, rscale = cache.mask, cache.rscale
    no_mask = cp.zeros(1, dtype=cp.uint8)
    # the product's operands: dG_t (N, GH) and U (H, GH), viewed as (N*S, GH/S) and (H*S, GH/S)
    a_view = dgs.reshape(N * S, GH // S)
    u_view = cache.U.reshape(H * S, GH // S)
    fn = kernel("rnn", f"rnn_bwd_{CELL_NAMES[cell_id]}", dt)
    g2 = grid(N, H)
    head = (dgx, dgh, dgs, dhd, dc if dc is not None else dhd, dhr, dout if dout is not None else dhr,
            cache.gates, cache.hprev, cache.cs if lstm else cache.gates, cache.q if gru else cache.gates,
            c0 if c0 is not None else dhr, mask if mask is not None else no_mask,
            rscale if rscale is not None else dhr, np.int64(N), np.int64(T), np.int64(H), np.int64(S))
    tail = (np.int32(mask is not None), np.int32(rscale is not None), np.int32(dout is not None))
    for t in range(T - 1, -1, -1):
        fn(g2, (THREADS,), head + (np.int64(t),) + tail)
        gm.gemm(a_view, u_view, dhr, False, True, 1.0, 0.0)
    dh0 = cp.empty((N, H), dtype=dt)
    kernel("rnn", "rnn_dh_total", dt)(g2, (THREADS,), (dh0, dhr, dhd, rscale if rscale is not None else dhr,
                                                       np.int64(N), np.int64(H), np.int64(S),
                                                       np.int32(rscale is not None)))
    gm.gemm(cache.x.reshape(NT, C), dgx, dW, True, False, 1.0, 0.0)
    hp = cache.hprev
    if rscale is not None:
        hp = cp.empty((N, T, H), dtype=dt)
        kernel("rnn", "rnn_scale_rows", dt)(g2, (THREADS,), (hp, cache.hprev, rscale, np.int64(N), np.int64(T),
                                                              np.int64(H)))
    gm.gemm(hp.reshape(NT, H), dgh, dU, True, False, 1.0, 0.0)
    from .nn import column_sums
    column_sums(dgx, db)
    if gru:
        column_sums(dgh, db_h)
    if dx is not None:
        gm.gemm(dgx, cache.W, dx.reshape(NT, C), False, True, 1.0, 0.0)
    return {"dx": dx, "dh0": dh0, "dc0": dc if lstm else None, "dW": dW, "dU": dU, "db": db, "db_h": db_h}


__all__ = ["forward", "backward", "grid", "split_factor", "CELL_NAMES", "GATES", "THREADS"]
