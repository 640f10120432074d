"""Pooling vs PyTorch and a plain memory copy.

    python -m pydl.bench.bench_pool2d [--quick] [--threads 2]

Rate: GB/s = (bytes of x read + bytes of y written) / time; argmax (int32) writes are extra
work not counted, as for torch. Max-pool backward: (dy + dx bytes) / time, argmax reads not
counted. "copy" is np.copyto of x into a preallocated array (2 * x bytes moved): the
memory-bandwidth ceiling measured in the same process.
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
from .common import HAVE_TORCH, Row, assert_close, gbps, print_rows, threads, timeit, torch  # noqa: E402

import pydl  # noqa: E402
from pydl import ops  # noqa: E402


def run(quick: bool = False, nthreads: int = 2) -> list[Row]:
    return [r for nt in common.thread_list((nthreads,)) for r in _run(quick, nt)]


def _run(quick: bool, nthreads: int) -> list[Row]:
    N, C, H, W = 64, 64, 56, 56
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(np.float32)
    case = f"N{N} C{C} {H}x{W}"
    rows = []
    with threads(nthreads):
        dst = np.empty_like(x)
        copy_gbs = gbps(2 * x.nbytes, timeit(lambda: np.copyto(dst, x)))
        tx = torch.from_numpy(x) if HAVE_TORCH else None

        def add(name, fn, out_bytes, torch_fn=None, check=None, in_bytes=x.nbytes):
            base = {"copy": copy_gbs}
            if check is not None:
                assert_close(check[0](), check[1](), rtol=1e-5, atol=1e-6, what=name)
            if torch_fn is not None:
                base["torch"] = gbps(in_bytes + out_bytes, timeit(torch_fn))
            rows.append(Row("pool2d", f"{name} {case}", nthreads, "GB/s", gbps(in_bytes + out_bytes, timeit(fn)),
                            base))

        F = torch.nn.functional if HAVE_TORCH else None
        yb = x.nbytes // 4
        tmax = (lambda: F.max_pool2d(tx, 2)) if HAVE_TORCH else None
        chk = (lambda: ops.max_pool2d(x, 2)[0], lambda: F.max_pool2d(tx, 2).numpy()) if HAVE_TORCH else None
        add("maxpool 2x2 (y, argmax)", lambda: ops.max_pool2d(x, 2), yb, tmax, chk)
        add("maxpool 2x2 (y only)", lambda: ops.max_pool2d(x, 2, return_argmax=False), yb, tmax)
        out = np.empty((N, C, H // 2, W // 2), np.float32)
        am = np.empty(out.shape, np.int32)
        from pydl import _core
        add("maxpool 2x2 (into reused buffers)",
            lambda: _core.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), True, False, out, am), yb, tmax)
        tmax3 = (lambda: F.max_pool2d(tx, 3, 2, 1)) if HAVE_TORCH else None
        yb3 = x.nbytes // 4
        add("maxpool 3x3 s2 p1", lambda: ops.max_pool2d(x, 3, 2, 1), yb3, tmax3)
        for k, st, pd in ((2, 2, 0), (3, 2, 1)):
            y, amx = ops.max_pool2d(x, k, st, pd)
            dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
            tb = chk = None
            if HAVE_TORCH:
                tdy, tam = torch.from_numpy(dy), torch.from_numpy(amx.astype(np.int64))

                def tb(k=k, st=st, pd=pd, tdy=tdy, tam=tam):
                    return torch.ops.aten.max_pool2d_with_indices_backward(tdy, tx, [k, k], [st, st], [pd, pd],
                                                                           [1, 1], False, tam)

                chk = (lambda dy=dy, amx=amx, k=k, st=st, pd=pd: ops.max_pool2d_backward(dy, amx, x.shape, k, st, pd),
                       lambda tb=tb: tb().numpy())
            name = f"maxpool {k}x{k}" + (f" s{st} p{pd}" if (st, pd) != (k, 0) else "") + " backward"
            # with the geometry, as the layers call it (3x3 / s2 gathers)
            add(name, lambda dy=dy, amx=amx, k=k, st=st, pd=pd: ops.max_pool2d_backward(dy, amx, x.shape, k, st, pd),
                x.nbytes, tb, chk, in_bytes=dy.nbytes)
        tavg = (lambda: F.avg_pool2d(tx, 2)) if HAVE_TORCH else None
        chk = (lambda: ops.avg_pool2d(x, 2), lambda: F.avg_pool2d(tx, 2).numpy()) if HAVE_TORCH else None
        add("avgpool 2x2", lambda: ops.avg_pool2d(x, 2), yb, tavg, chk)
        tgap = (lambda: tx.mean(dim=(2, 3))) if HAVE_TORCH else None
        add("global avgpool", lambda: ops.global_avg_pool2d(x), N * C * 4, tgap)
    print_rows(rows, "pooling", "GB/s = (x bytes + y bytes) / t; copy = 2 * x bytes / t")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        common.QUICK = True
    print(f"pydl {pydl.__version__} isa={pydl.config()['isa']}")
    run(args.quick, args.threads)
