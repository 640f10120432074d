"""SGEMM: pydl vs NumPy (OpenBLAS) vs PyTorch, GFLOP/s = 2*M*N*K / t, on 1 and 2 threads.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pydl.bench --only gemm

(OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, set on some machines for old OpenBLAS builds, pick a
slower OpenBLAS kernel; the table's note says which kernel OpenBLAS ran.) Each library is timed
in its own block after a short pause, so another library's spinning thread pool does not steal
the cores; blocks are interleaved over several rounds and the median is reported.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from . import common
import pydl
from .common import HAVE_TORCH, Row, gflops, print_rows, threads, timeit, torch

SQUARE = [128, 256, 512, 1024, 2048]
LAYERS = [(64, 784, 128), (256, 3136, 128), (64, 512, 2048)]  # M x K x N (batch x in x out)


def openblas_kernel() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return "unknown"
    for info in threadpool_info():
        if info.get("internal_api") == "openblas":
            return f"OpenBLAS {info.get('version')} {info.get('architecture')}"
    return "unknown"


def _settle():
    time.sleep(0.15)  # let the previous library's worker threads stop spinning


def bench_case(m: int, k: int, n: int, nt: int, rounds: int) -> Row:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c_pydl = np.empty((m, n), np.float32)
    c_np = np.empty((m, n), np.float32)

    # Correctness first, against float64.
    want = a.astype(np.float64) @ b.astype(np.float64)
    for got, name in [(pydl.matmul(a, b, out=c_pydl), "pydl"), (np.matmul(a, b, out=c_np), "numpy")]:
        err = np.max(np.abs(got - want)) / np.max(np.abs(want))
        if not err < 1e-5 * np.sqrt(k):
            raise AssertionError(f"gemm {m}x{k}x{n}: {name} relative error {err:.2e}")

    fns = {"pydl": lambda: pydl.matmul(a, b, out=c_pydl), "numpy": lambda: np.matmul(a, b, out=c_np)}
    if HAVE_TORCH:
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty((m, n), dtype=torch.float32)
        fns["torch"] = lambda: torch.matmul(ta, tb, out=tc)
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _settle()
            times[name].append(timeit(fn, warmup=2, repeats=5, min_time=0.03))
    flop = 2.0 * m * n * k
    rate = {name: gflops(flop, statistics.median(ts)) for name, ts in times.items()}
    return Row("gemm", f"{m}x{k}x{n}", nt, "GFLOP/s", rate.pop("pydl"), rate)


def run(quick: bool = False) -> list[Row]:
    square = [128, 512, 1024] if quick else SQUARE
    rounds = 1 if quick else 3
    kernel = openblas_kernel()
    env = {v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ}
    print(f"\nNumPy BLAS: {kernel}; pydl ISA: {pydl.config()['isa']}" + (f"; env {env}" if env else ""))
    rows = []
    for nt in common.thread_list((1, 2)):
        with threads(nt):
            for s in square:
                rows.append(bench_case(s, s, s, nt, rounds))
            for m, k, n in LAYERS:
                rows.append(bench_case(m, k, n, nt, rounds))
    for r in rows:
        r.note = kernel
    print_rows(rows, "SGEMM C[M,N] = A[M,K] B[K,N], float32 (case M x K x N)", "GFLOP/s = 2*M*N*K / time")
    return rows


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv or common.QUICK)
