"""conv2d forward (each algorithm) and forward+backward vs PyTorch and a NumPy im2col + matmul.

    python -m pydl.bench.bench_conv2d [--quick] [--threads 2]

Rate: GFLOP/s = 2*N*K*C*R*S*P*Q / time (direct-convolution FLOPs, whatever the algorithm does).
Forward+backward: milliseconds for y = conv(x) then dx, dW, db. Each pydl result is checked
against PyTorch (or the NumPy baseline) before timing.
"""
from __future__ import annotations

import argparse
import os

# Several OpenMP / BLAS pools live in this process (pydl, PyTorch, OpenBLAS). Spinning idle
# workers of one pool steal the 2 cores from the other and make timings jump by whole scheduler
# ticks; sleeping idle workers cost every library the same few microseconds per call instead.
# (Only effective when this file is the entry point, i.e. before any pool starts.)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

from . import common  # noqa: E402
from .common import HAVE_TORCH, Row, assert_close, gflops, print_rows, threads, timeit, torch  # noqa: E402

import pydl  # noqa: E402
from pydl import ops  # noqa: E402

# (N, C, H, W, K) with 3x3 filters, stride 1, padding 1
FORWARD_CASES = [(32, 64, 56, 56, 64), (64, 1, 28, 28, 32), (64, 32, 14, 14, 64)]
ALGOS = ["auto", "direct", "im2col", "winograd_f2", "winograd_f4"]


def numpy_im2col_conv(x, w, pad):
    """y = W [K, CRS] @ cols [CRS, N*P*Q] with cols from a sliding-window view (one copy)."""
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (R, S), axis=(2, 3))  # N, C, P, Q, R, S
    P, Q = win.shape[2], win.shape[3]
    cols = win.transpose(1, 4, 5, 0, 2, 3).reshape(C * R * S, N * P * Q)
    y = w.reshape(K, -1) @ cols
    return np.ascontiguousarray(y.reshape(K, N, P, Q).transpose(1, 0, 2, 3))  # NCHW, like the others


def _case_name(N, C, H, W, K):
    return f"N{N} C{C} {H}x{W} K{K} 3x3"


def bench_forward(quick: bool, nthreads: int) -> list[Row]:
    rows = []
    rng = np.random.default_rng(0)
    for (N, C, H, W, K) in FORWARD_CASES:
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        flop = 2.0 * N * K * C * 9 * H * W
        base = {}
        with threads(nthreads):
            ref = numpy_im2col_conv(x, w, 1) + b[None, :, None, None]
            base["numpy"] = gflops(flop, timeit(lambda: numpy_im2col_conv(x, w, 1)))
            if HAVE_TORCH:
                tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
                with torch.no_grad():
                    ref = torch.nn.functional.conv2d(tx, tw, tb, padding=1).numpy()
                    base["torch"] = gflops(flop, timeit(lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1)))
            for algo in ALGOS:
                name = ops.conv2d_algo(x.shape, w.shape, 1, 1, 1, algo)
                y = ops.conv2d(x, w, b, padding=1, algo=algo)
                assert_close(y, ref, rtol=1e-3, atol=1e-3, what=f"conv2d {algo}")
                t = timeit(lambda: ops.conv2d(x, w, b, padding=1, algo=algo))
                label = f"{algo} ({name})" if algo == "auto" else algo
                rows.append(Row("conv2d", f"fwd {_case_name(N, C, H, W, K)} {label}", nthreads, "GFLOP/s",
                                gflops(flop, t), dict(base)))
    return rows


def bench_forward_backward(quick: bool, nthreads: int) -> list[Row]:
    N, C, H, W, K = FORWARD_CASES[0]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    dy = rng.standard_normal((N, K, H, W)).astype(np.float32)
    rows = []
    with threads(nthreads):
        def pydl_step():
            ops.conv2d(x, w, b, padding=1)
            return ops.conv2d_backward(dy, x, w, padding=1)

        dx, dw, db = pydl_step()
        base = {}
        if HAVE_TORCH:
            tx = torch.from_numpy(x).requires_grad_(True)
            tw = torch.from_numpy(w).requires_grad_(True)
            tb = torch.from_numpy(b).requires_grad_(True)
            tdy = torch.from_numpy(dy)

            def torch_step():
                tx.grad = tw.grad = tb.grad = None
                torch.nn.functional.conv2d(tx, tw, tb, padding=1).backward(tdy)

            torch_step()
            assert_close(dx, tx.grad.numpy(), rtol=1e-3, atol=1e-3, what="conv2d dx")
            assert_close(dw, tw.grad.numpy(), rtol=1e-3, atol=2e-2, what="conv2d dw")
            assert_close(db, tb.grad.numpy(), rtol=1e-3, atol=2e-2, what="conv2d db")
            base["torch"] = timeit(torch_step, warmup=1, repeats=5) * 1e3
        t = timeit(pydl_step, warmup=1, repeats=5) * 1e3
        rows.append(Row("conv2d", f"fwd+bwd {_case_name(N, C, H, W, K)} auto", nthreads, "ms", t, base))
    return rows


def run(quick: bool = False, nthreads: int = 2) -> list[Row]:
    rows, rows2 = [], []
    for nt in common.thread_list((nthreads,)):
        rows += bench_forward(quick, nt)
        rows2 += bench_forward_backward(quick, nt)
    print_rows(rows, "conv2d forward", "GFLOP/s = 2*N*K*C*R*S*P*Q / t")
    print_rows(rows2, "conv2d forward + backward (dx, dW, db)", "milliseconds per step")
    return rows + rows2


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        common.QUICK = True
    print(f"pydl {pydl.__version__} isa={pydl.config()['isa']}")
    run(args.quick, args.threads)
