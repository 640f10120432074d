"""Recurrent layers: pydl's fused LSTM / GRU kernels vs torch.nn.LSTM / torch.nn.GRU (CPU, float32).

    python -m pydl.bench.bench_rnn            # T50 N32 I128 H256, 2 threads (the target) and 1 thread
    python -m pydl.bench.bench_rnn --quick    # 2 threads only, fewer rounds

Checks outputs and every gradient against PyTorch (same weights) first, then times, in one
process: forward (both libraries keeping what backward needs; PyTorch with autograd on),
forward in inference (pydl `keep_cache=False`, PyTorch under no_grad: neither keeps anything for
backward), and forward + backward through time (dx, dh0,
dW, dU, db). Rounds of pydl and PyTorch timings alternate and the medians are reported, which
keeps a noisy shared machine from favouring either side. Rate: GFLOP/s of the GEMMs,
2 * T * N * G*H * (C + H) forward and twice that again for backward.
"""
from __future__ import annotations

import os

import numpy as np

from . import common  # noqa: E402
from .common import HAVE_TORCH, Row, alternate, assert_close, print_rows, threads  # noqa: E402

import pydl  # noqa: E402
from pydl.ops import rnn_backward, rnn_forward  # noqa: E402

if HAVE_TORCH:
    import torch

GATES = {"lstm": 4, "gru": 3}


def _setup(cell, N, T, C, H, seed=0):
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    k = 1.0 / np.sqrt(H)
    p = {
        "x": rng.standard_normal((N, T, C)).astype(np.float32),
        "W": rng.uniform(-k, k, (C, G * H)).astype(np.float32),
        "U": rng.uniform(-k, k, (H, G * H)).astype(np.float32),
        "b": rng.uniform(-k, k, G * H).astype(np.float32),
        "b_h": rng.uniform(-k, k, G * H).astype(np.float32) if cell == "gru" else None,
        "h0": rng.standard_normal((N, H)).astype(np.float32) * 0.1,
        "c0": rng.standard_normal((N, H)).astype(np.float32) * 0.1 if cell == "lstm" else None,
        "dout": rng.standard_normal((N, T, H)).astype(np.float32),
    }
    return p


def _pydl_fns(cell, p):
    def fwd():
        return rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], h0=p["h0"], c0=p["c0"], b_h=p["b_h"])

    def fwd_infer():
        return rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], h0=p["h0"], c0=p["c0"], b_h=p["b_h"],
                           keep_cache=False)

    def fwd_bwd():
        out, hT, cT, cache = fwd()
        return out, rnn_backward(cell, p["dout"], None, None, cache)

    return fwd, fwd_infer, fwd_bwd


def _torch_fns(cell, p):
    N, T, C = p["x"].shape
    H = p["U"].shape[0]
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(C, H, batch_first=True)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(p["W"].T.copy()))
        m.weight_hh_l0.copy_(torch.from_numpy(p["U"].T.copy()))
        if cell == "gru":
            m.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
            m.bias_hh_l0.copy_(torch.from_numpy(p["b_h"]))
        else:  # pydl's single b = bias_ih + bias_hh
            m.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
            m.bias_hh_l0.zero_()
    x = torch.from_numpy(p["x"]).requires_grad_(True)
    h0 = torch.from_numpy(p["h0"])[None]
    state = (h0, torch.from_numpy(p["c0"])[None]) if cell == "lstm" else h0
    dout = torch.from_numpy(p["dout"])

    def fwd():
        return m(x, state)

    def fwd_infer():
        with torch.no_grad():
            return m(x, state)

    def fwd_bwd():
        m.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = m(x, state)
        out.backward(dout)
        return out

    return m, x, fwd, fwd_infer, fwd_bwd


def _check(cell, p, m, x, torch_fwd_bwd, pydl_fwd_bwd):
    out_t = torch_fwd_bwd()
    out, g = pydl_fwd_bwd()
    what = f"{cell} vs torch"
    assert_close(out, out_t.detach().numpy(), 1e-4, 1e-5, what + " outputs")
    assert_close(g["dx"], x.grad.numpy(), 1e-3, 1e-4, what + " dx")
    assert_close(g["dW"], m.weight_ih_l0.grad.numpy().T, 1e-3, 1e-3, what + " dW")
    assert_close(g["dU"], m.weight_hh_l0.grad.numpy().T, 1e-3, 1e-3, what + " dU")
    assert_close(g["db"], m.bias_ih_l0.grad.numpy(), 1e-3, 1e-3, what + " db")


def run(quick: bool = False, thread_counts=None) -> list[Row]:
    rows: list[Row] = []
    quick = quick or common.QUICK
    N, T, C, H = (32, 20, 128, 256) if quick else (32, 50, 128, 256)
    rounds = 3 if quick else 7
    if thread_counts is None:
        thread_counts = common.thread_list((2,) if quick else (2, 1))
    case_shape = f"T{T} N{N} I{C} H{H}"
    for nthreads, cell in [(t, c) for t in thread_counts for c in ("lstm", "gru")]:
        G = GATES[cell]
        flop_f = 2.0 * T * N * G * H * (C + H)
        p = _setup(cell, N, T, C, H)
        pf, pfi, pfb = _pydl_fns(cell, p)
        if not np.array_equal(pfi()[0], pf()[0]):
            raise AssertionError(f"{cell}: the inference forward differs from the training forward")
        with threads(nthreads):
            if not HAVE_TORCH:
                t = alternate({"f": pf, "fb": pfb}, rounds)
                rows.append(Row("rnn", f"{cell} forward {case_shape}", nthreads, "ms", t["f"] * 1e3,
                                note=f"{common.gflops(flop_f, t['f']):.0f} GFLOP/s"))
                rows.append(Row("rnn", f"{cell} fwd+bwd {case_shape}", nthreads, "ms", t["fb"] * 1e3,
                                note=f"{common.gflops(3 * flop_f, t['fb']):.0f} GFLOP/s"))
                continue
            m, x, tf, tfi, tfb = _torch_fns(cell, p)
            _check(cell, p, m, x, tfb, pfb)
            t = alternate({"pf": pf, "tf": tf, "pfi": pfi, "tfi": tfi, "pfb": pfb, "tfb": tfb}, rounds)
        rows.append(Row("rnn", f"{cell} forward {case_shape}", nthreads, "ms", t["pf"] * 1e3,
                        {"torch": t["tf"] * 1e3},
                        note=f"{common.gflops(flop_f, t['pf']):.0f} GFLOP/s; pydl/torch time {t['pf'] / t['tf']:.2f}x"))
        rows.append(Row("rnn", f"{cell} forward inference (no_grad) {case_shape}", nthreads, "ms", t["pfi"] * 1e3,
                        {"torch": t["tfi"] * 1e3}, note=f"pydl/torch time {t['pfi'] / t['tfi']:.2f}x"))
        rows.append(Row("rnn", f"{cell} fwd+bwd {case_shape}", nthreads, "ms", t["pfb"] * 1e3,
                        {"torch": t["tfb"] * 1e3},
                        note=f"{common.gflops(3 * flop_f, t['pfb']):.0f} GFLOP/s; "
                             f"pydl/torch time {t['pfb'] / t['tfb']:.2f}x"))
    print_rows(rows, "Recurrent layers (float32, CPU)",
               "ms per call, median of alternating rounds; GEMM FLOP = 2*T*N*G*H*(C+H) forward, x3 fwd+bwd")
    for r in rows:
        if r.note:
            print(f"  {r.case}: {r.note}")
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, nargs="*", default=None, help="thread counts (default: 2 1)")
    args = ap.parse_args()
    if args.quick:
        os.environ["PYDL_BENCH_QUICK"] = "1"
        common.QUICK = True
    pydl.seed(0)
    run(quick=args.quick, thread_counts=args.threads)
