"""Optimizer step benchmark: one Adam step on a float32 parameter of n elements.

An Adam step reads p, g, m, v and writes p, m, v: 28 bytes per element, so it is memory bound.
Rates are those 28*n bytes over the step time. Baselines, measured in the same process:
  copy          np.copyto of 14*n bytes (14*n read + 14*n written = the same 28*n bytes moved)
  numpy         the same Adam step written with in-place NumPy ufuncs (out=, one scratch buffer)
  torch         torch.optim.Adam(foreach=False)   (single-tensor loop)
  torch_foreach torch.optim.Adam(foreach=True)
  torch_fused   torch.optim.Adam(fused=True)      (where this PyTorch supports it on CPU)
pydl is pydl.ops.adam_update (the kernel behind pydl.optimizers.Adam); "pydl_opt" rows time the
whole Optimizer.apply_gradients call instead. Target: within 1.5x of the copy.

    python -m pydl.bench.bench_optim [--quick]
"""
from __future__ import annotations

import math
import sys

import numpy as np

from . import common
from .common import HAVE_TORCH, Row, assert_close, gbps, print_rows, threads, timeit, torch

import pydl
from pydl.ops import optim as ops

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-7


class NumpyAdam:
    """Keras-form Adam step with in-place ufuncs and one preallocated scratch array."""

    def __init__(self, p):
        self.m = np.zeros_like(p)
        self.v = np.zeros_like(p)
        self.tmp = np.empty_like(p)
        self.t = 0

    def step(self, p, g):
        self.t += 1
        m, v, tmp = self.m, self.v, self.tmp
        lr_t = LR * math.sqrt(1 - B2 ** self.t) / (1 - B1 ** self.t)
        np.subtract(g, m, out=tmp)
        tmp *= 1 - B1
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp -= v
        tmp *= 1 - B2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += EPS
        np.divide(m, tmp, out=tmp)
        tmp *= lr_t
        p -= tmp


def _torch_adam(p_np, g_np, **kw):
    tp = torch.from_numpy(p_np)
    tp.requires_grad_(True)
    tp.grad = torch.from_numpy(g_np)
    return tp, torch.optim.Adam([tp], lr=LR, betas=(B1, B2), eps=EPS, **kw)


def _check(n: int) -> None:
    """One step from the same state: pydl vs NumPy float64 vs torch."""
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t in (1, 2):
        ops.adam_update(p, m, v, g, LR, t, B1, B2, EPS)
    ref = p0.astype(np.float64)
    na = NumpyAdam(ref)
    na.step(ref, g.astype(np.float64))
    na.step(ref, g.astype(np.float64))
    assert_close(p, ref, rtol=1e-6, atol=1e-7, what="pydl Adam vs NumPy float64")
    if HAVE_TORCH:
        # torch adds eps after the bias correction: the same as Keras-form eps * sqrt(1 - b2^t).
        pt, mt, vt = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for t in (1, 2):
            ops.adam_update(pt, mt, vt, g, LR, t, B1, B2, EPS * math.sqrt(1 - B2 ** t))
        tp, opt = _torch_adam(p0.copy(), g.copy(), foreach=False)
        opt.step()
        opt.step()
        assert_close(pt, tp.detach().numpy(), rtol=1e-6, atol=1e-7, what="pydl Adam vs torch.optim.Adam")


def _bench_case(n: int, nthreads: int) -> list[Row]:
    rng = np.random.default_rng(1)
    p = rng.standard_normal(n).astype(np.float32)
    g = (1e-3 * rng.standard_normal(n)).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    nbytes = 28 * n
    src = np.ones(n * 7 // 2, np.float32)  # 14 bytes per element
    dst = np.empty_like(src)
    base = {}
    with threads(nthreads):
        step = [0]

        def pydl_step():
            step[0] += 1
            ops.adam_update(p, m, v, g, LR, step[0], B1, B2, EPS)

        t_pydl = timeit(pydl_step)
        opt = pydl.optimizers.Adam(LR)
        pairs = [(g, p)]
        t_opt = timeit(lambda: opt.apply_gradients(pairs))
        base["copy"] = gbps(nbytes, timeit(lambda: np.copyto(dst, src)))
        na = NumpyAdam(p)
        base["numpy"] = gbps(nbytes, timeit(lambda: na.step(p, g)))
        if HAVE_TORCH:
            for name, kw in (("torch", {"foreach": False}), ("torch_foreach", {"foreach": True}),
                             ("torch_fused", {"fused": True})):
                try:
                    _, topt = _torch_adam(p, g, **kw)
                    topt.step()
                except (RuntimeError, ValueError, TypeError):
                    continue  # this PyTorch has no such CPU path
                base[name] = gbps(nbytes, timeit(topt.step))
    case = f"Adam n={n / 2**20:g}Mi float32"
    rows = [Row("optim", case, nthreads, "GB/s", gbps(nbytes, t_pydl), dict(base),
                note=f"pydl {t_pydl * 1e3:.3f} ms/step"),
            Row("optim", case + " (Optimizer.apply_gradients)", nthreads, "GB/s", gbps(nbytes, t_opt),
                {"copy": base["copy"]}, note=f"pydl_opt {t_opt * 1e3:.3f} ms/step")]
    return rows


def run(quick: bool = False) -> list[Row]:
    _check(10_007)
    sizes = [1 << 20] if quick else [1 << 20, 1 << 23]
    rows = []
    for n in sizes:
        for nt in common.thread_list((1, 2)):
            rows += _bench_case(n, nt)
    print_rows(rows, "Optimizer step (Adam)", "GB/s = 28 bytes per element / step time; copy moves the same bytes")
    for r in rows:
        if r.note:
            print(f"  {r.case} thr={r.threads}: {r.note}; pydl time / copy time "
                  f"{r.baselines['copy'] / r.pydl:.2f} (target <= 1.5)")
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv or common.QUICK)
