"""Dense layer and element-wise activation benchmarks.

    python -m pydl.bench.bench_dense [--quick]

Dense forward + backward (batch 64, 784 -> 128, relu): pydl's fused kernels (GEMM + one epilogue
pass; backward dz in one pass, then dW = x^T dz, db, dx = dz W^T) against the same algebra in NumPy
and in PyTorch (explicit ops, and autograd), at 1 and 2 threads, in ms (ratio > 1: pydl faster).
Element-wise rows: relu and sigmoid on 4M float32 into a preallocated output, GB/s counting
4 bytes read + 4 bytes written per element.
"""
from __future__ import annotations

import os

import numpy as np

from . import common  # noqa: E402
from .common import HAVE_TORCH, Row, assert_close, gbps, print_rows, threads, timeit  # noqa: E402

import pydl  # noqa: E402
from pydl import _core, ops  # noqa: E402

if HAVE_TORCH:
    import torch


def _dense_rows(n_threads: int, quick: bool) -> list[Row]:
    rng = np.random.default_rng(0)
    N, C, K = 64, 784, 128
    x = rng.standard_normal((N, C)).astype(np.float32)
    W = (rng.standard_normal((C, K)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(K) * 0.1).astype(np.float32)
    dy = rng.standard_normal((N, K)).astype(np.float32)

    def pydl_fwd():
        return ops.dense_forward(x, W, b, "relu")

    def pydl_step():
        y = ops.dense_forward(x, W, b, "relu")
        return y, ops.dense_backward(dy, x, W, y, "relu")

    def np_fwd():
        return np.maximum(x @ W + b, 0)

    def np_step():
        y = np.maximum(x @ W + b, 0)
        dz = dy * (y > 0)
        return y, (dz @ W.T, x.T @ dz, dz.sum(axis=0))

    # correctness first
    y, (dx, dW, db) = pydl_step()
    ny, (ndx, ndW, ndb) = np_step()
    assert_close(y, ny, what="dense forward")
    for got, want, name in ((dx, ndx, "dx"), (dW, ndW, "dW"), (db, ndb, "db")):
        assert_close(got, want, rtol=1e-4, atol=1e-3, what=f"dense backward {name}")

    fwd = {"numpy": timeit(np_fwd)}
    step = {"numpy": timeit(np_step)}
    if HAVE_TORCH:
        tx, tW, tb, tdy = (torch.from_numpy(a) for a in (x, W, b, dy))
        tWa, tba = tW.clone().requires_grad_(True), tb.clone().requires_grad_(True)
        txa = tx.clone().requires_grad_(True)

        def torch_fwd():
            return torch.relu(torch.addmm(tb, tx, tW))

        def torch_step():
            ty = torch.relu(torch.addmm(tb, tx, tW))
            dz = tdy * (ty > 0)
            return ty, (dz @ tW.T, tx.T @ dz, dz.sum(0))

        def torch_autograd_step():
            txa.grad = tWa.grad = tba.grad = None
            ty = torch.relu(torch.addmm(tba, txa, tWa))
            ty.backward(tdy)
            return ty

        with torch.no_grad():
            ty, (tdx, tdW, tdb) = torch_step()
        assert_close(ty.numpy(), ny, what="torch forward")
        assert_close(tdW.numpy(), ndW, rtol=1e-4, atol=1e-3, what="torch dW")
        torch_autograd_step()
        assert_close(tWa.grad.numpy(), ndW, rtol=1e-4, atol=1e-3, what="torch autograd dW")
        with torch.no_grad():
            fwd["torch"] = timeit(torch_fwd)
            step["torch"] = timeit(torch_step)
        step["torch_autograd"] = timeit(torch_autograd_step)
    t_fwd, t_step = timeit(pydl_fwd), timeit(pydl_step)
    case = f"{N}x{C}->{K} relu"
    flop_note = f"{2 * N * C * K / 1e6:.1f} MFLOP fwd, {6 * N * C * K / 1e6:.1f} fwd+bwd"
    return [
        Row("dense", f"forward {case}", n_threads, "ms", t_fwd * 1e3, {k: v * 1e3 for k, v in fwd.items()}, flop_note),
        Row("dense", f"fwd+bwd {case}", n_threads, "ms", t_step * 1e3, {k: v * 1e3 for k, v in step.items()},
            flop_note),
    ]


def _elementwise_rows(n_threads: int, quick: bool) -> list[Row]:
    rng = np.random.default_rng(1)
    n = 4 * 1024 * 1024
    x = rng.standard_normal(n).astype(np.float32) * 4
    out = np.empty_like(x)
    nbytes = 8.0 * n
    rows = []

    # relu
    _core.activation_forward("relu", x, out, 0.0)
    assert_close(out, np.maximum(x, 0), rtol=0, atol=0, what="relu")
    t = timeit(lambda: _core.activation_forward("relu", x, out, 0.0))
    base = {"numpy": gbps(nbytes, timeit(lambda: np.maximum(x, 0, out=out)))}
    if HAVE_TORCH:
        tx, tout = torch.from_numpy(x), torch.from_numpy(out)
        base["torch"] = gbps(nbytes, timeit(lambda: torch.clamp(tx, min=0, out=tout)))
    rows.append(Row("dense", "relu 4M f32, preallocated out", n_threads, "GB/s", gbps(nbytes, t), base,
                    "8 B/element"))
    # the public op allocates its output every call (page faults on fresh memory)
    t = timeit(lambda: ops.activation(x, "relu"))
    base = {"numpy": gbps(nbytes, timeit(lambda: np.maximum(x, 0)))}
    if HAVE_TORCH:
        base["torch"] = gbps(nbytes, timeit(lambda: torch.relu(tx)))
    rows.append(Row("dense", "relu 4M f32, new output", n_threads, "GB/s", gbps(nbytes, t), base, "8 B/element"))

    # sigmoid (polynomial exp)
    def np_sigmoid():
        np.negative(x, out=out)
        np.exp(out, out=out)
        np.add(out, 1, out=out)
        np.reciprocal(out, out=out)

    with np.errstate(over="ignore"):
        np_sigmoid()
        want = out.copy()
        _core.activation_forward("sigmoid", x, out, 0.0)
        assert_close(out, want, rtol=1e-6, atol=1e-7, what="sigmoid")
        t = timeit(lambda: _core.activation_forward("sigmoid", x, out, 0.0))
        base = {"numpy": gbps(nbytes, timeit(np_sigmoid))}
    if HAVE_TORCH:
        base["torch"] = gbps(nbytes, timeit(lambda: torch.sigmoid(tx, out=tout)))
    rows.append(Row("dense", "sigmoid 4M f32, preallocated out", n_threads, "GB/s", gbps(nbytes, t), base,
                    "8 B/element"))
    return rows


def run(quick: bool = False) -> list[Row]:
    rows = []
    for n in common.thread_list((1, 2)):
        with threads(n):
            rows += _dense_rows(n, quick)
            rows += _elementwise_rows(n, quick)
    print_rows([r for r in rows if r.metric == "ms"], "Dense layer (float32)", "median ms per call")
    print_rows([r for r in rows if r.metric == "GB/s"], "Element-wise activations (float32, 4M elements)",
               "GB/s = 8 bytes per element / median time")
    print(f"\nisa: {pydl.config()['isa']}; timings are medians on a shared, noisy machine")
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        os.environ["PYDL_BENCH_QUICK"] = "1"
        common.QUICK = True
    run(quick=args.quick)
