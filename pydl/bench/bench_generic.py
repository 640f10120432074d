"""The portable (SSE2, "generic") build of every kernel against its `_naive` twin and the native ISA.

    python -m pydl.bench --only generic                 # 1 thread (the default here)
    python -m pydl.bench --only generic --threads 1 2
    python -m pydl.bench.bench_generic [--quick] [--threads 1 2]

Target: with the generic micro-kernels selected, no kernel is slower than its `_naive` twin, and
each runs at >= 0.2x the speed of the same kernel on the best ISA of the machine (AVX2 or AVX-512).

In one process, for each kernel of pydl._core that has a slow reference twin, on the same inputs:
  pydl    the kernel with `_core.select_isa("generic")` (the build a CPU without AVX2 runs)
  naive   the `_naive` twin (`naive=True` for the pooling kernels, algo="naive" for conv2d); scalar
          loops whose speed does not depend on the selected ISA, and serial: with --threads 2
          pydl/naive also holds the kernel's parallel speed-up (1 thread, the default, does not)
  native  the same kernel with the best ISA selected: the first of avx512, avx2 that
          `_core.available_isas()` lists (or the one `--isa` asks for); absent on a machine that
          has only the generic build
conv2d is `pydl.ops.conv2d` with algo="auto", which picks its algorithm per ISA and thread count:
the case names what auto runs under each ISA (`ops.conv2d_algo`).

Metric: ms per call (median). ratio = baseline ms / pydl ms, so pydl/naive >= 1 and
pydl/native >= 0.2 meet the target; rows that miss it say so in their note.
Before timing, each kernel's outputs under generic are checked against the naive twin's and the
native kernel's (common.assert_close). Rounds of the three variants alternate (the ISA is
switched between rounds, never inside a timed loop) and the medians are reported. The ISA that
was selected before the run is restored afterwards.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from . import common
from .common import Row, assert_close, print_rows, threads

import pydl
from pydl import _core, ops

GENERIC = "generic"
TARGET_NAIVE, TARGET_NATIVE = 1.0, 0.2


def native_isa() -> str | None:
    """The ISA of the "native" baseline: the one --isa asked for if it is a vector ISA this CPU
    has, else the widest of avx512, avx2 available; None when only the generic build runs here."""
    have = list(_core.available_isas())
    asked = os.environ.get("PYDL_BENCH_ISA", "native")
    if asked in ("avx512", "avx2") and asked in have:
        return asked
    return next((isa for isa in ("avx512", "avx2") if isa in have), None)


def _time_variants(variants: list) -> list:
    """Median seconds per call of each (isa, fn) in `variants`. After a warm-up and a one-call
    calibration (each repeat loops until it has run min_time), rounds alternate between the
    variants so that a noisy shared machine favours none of them."""
    warmup, repeats, min_time = (1, 3, 0.01) if common.QUICK else (1, 7, 0.03)
    inner = []
    for isa, fn in variants:
        _core.select_isa(isa)
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-9)
        inner.append(max(1, int(min_time / one)))
    samples = [[] for _ in variants]
    for _ in range(repeats):
        for i, (isa, fn) in enumerate(variants):
            _core.select_isa(isa)
            t0 = time.perf_counter()
            for _ in range(inner[i]):
                fn()
            samples[i].append((time.perf_counter() - t0) / inner[i])
    meds = [statistics.median(s) for s in samples]
    for s, med in zip(samples, meds):
        if med > 0:
            common._SPREADS.append((max(s) - min(s)) / med)
    return meds


class _Family:
    """Collects one Row per kernel: check, then time generic / naive / native."""

    def __init__(self, nthreads: int, native: str | None):
        self.nthreads, self.native, self.rows = nthreads, native, []

    def add(self, name: str, fast, naive, results=None, *, rtol=1e-4, atol=1e-4, note=""):
        """fast(): the kernel (run under generic and under the native ISA); naive(): its twin.
        results(which), which in ("fast", "naive"): the arrays to compare after one call from a
        fresh state (default: the call's return value), for the in-place kernels."""
        results = results or (lambda which: fast() if which == "fast" else naive())
        _core.select_isa(GENERIC)
        want = [np.array(a, copy=True) for a in _as_list(results("naive"))]
        got = [np.array(a, copy=True) for a in _as_list(results("fast"))]
        _compare(got, want, rtol, atol, f"{name}: generic vs naive")
        variants = [(GENERIC, fast), (GENERIC, naive)]
        if self.native:
            _core.select_isa(self.native)
            other = [np.array(a, copy=True) for a in _as_list(results("fast"))]
            _compare(got, other, rtol, atol, f"{name}: generic vs {self.native}")
            variants.append((self.native, fast))
        t = _time_variants(variants)
        base = {"naive": t[1] * 1e3}
        if self.native:
            base["native"] = t[2] * 1e3
        vs = "generic vs naive" + (f", vs {self.native}" if self.native else "")
        row = Row("generic", f"{name} ({vs})", self.nthreads, "ms", t[0] * 1e3, base, note=note)
        misses = []
        if row.ratio("naive") is not None and row.ratio("naive") < TARGET_NAIVE:
            misses.append(f"pydl/naive {row.ratio('naive'):.2f} < {TARGET_NAIVE:g}")
        if row.ratio("native") is not None and row.ratio("native") < TARGET_NATIVE:
            misses.append(f"pydl/native {row.ratio('native'):.2f} < {TARGET_NATIVE:g}")
        if misses:
            row.note = "; ".join(([row.note] if row.note else []) + ["below target: " + ", ".join(misses)])
        self.rows.append(row)


def _as_list(x) -> list:
    if isinstance(x, (list, tuple)):
        return [a for a in x if a is not None]
    return [x]


def _compare(got, want, rtol, atol, what):
    if len(got) != len(want):
        raise AssertionError(f"{what}: {len(got)} results vs {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            raise AssertionError(f"{what}: result {i} has shape {g.shape} vs {w.shape}")
        assert_close(g, w, rtol=rtol, atol=atol, what=f"{what} (result {i})")


def _f32(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# ---- the kernels -------------------------------------------------------------------------------

def _gemm(fam: _Family, rng, quick: bool) -> None:
    cases = [(256, 256, 256, False, False)] + ([] if quick else [(257, 255, 130, False, True)])
    for M, K, N, ta, tb in cases:
        a = _f32(rng, (K, M) if ta else (M, K))
        b = _f32(rng, (N, K) if tb else (K, N))
        out = np.empty((M, N), np.float32)

        def fast(a=a, b=b, ta=ta, tb=tb, out=out):
            _core.gemm(a, b, out, ta, tb)
            return out

        def naive(a=a, b=b, ta=ta, tb=tb, out=out):
            _core.gemm_naive(a, b, out, ta, tb)
            return out

        t = ("A^T " if ta else "") + ("B^T " if tb else "")
        fam.add(f"gemm {M}x{K}x{N} {t}".rstrip(), fast, naive)


def _dense(fam: _Family, rng, quick: bool) -> None:
    N, C, K = 128, 512, 256
    x, W, b = _f32(rng, (N, C)), _f32(rng, (C, K), 0.05), _f32(rng, K, 0.1)
    y = np.empty((N, K), np.float32)
    fam.add(f"dense_forward relu x({N},{C}) W({C},{K})",
            lambda: (_core.dense_forward(x, W, b, y, "relu"), y)[1],
            lambda: (_core.dense_forward_naive(x, W, b, y, "relu"), y)[1])
    if quick:
        return
    _core.dense_forward_naive(x, W, b, y, "relu")
    yf = y.copy()
    dy = _f32(rng, (N, K))
    dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty_like(b)
    fam.add(f"dense_backward relu x({N},{C}) W({C},{K})",
            lambda: (_core.dense_backward(dy, x, W, yf, dx, dW, db, "relu"), (dx, dW, db))[1],
            lambda: (_core.dense_backward_naive(dy, x, W, yf, dx, dW, db, "relu"), (dx, dW, db))[1])


def _activations(fam: _Family, rng, quick: bool) -> None:
    n = 1 << 20
    x = _f32(rng, n, 2.0)
    y = np.empty_like(x)
    kinds = ("relu", "sigmoid") if quick else ("relu", "sigmoid", "tanh", "gelu")
    for kind in kinds:
        fam.add(f"activation_forward {kind} n=1Mi",
                lambda kind=kind: (_core.activation_forward(kind, x, y), y)[1],
                lambda kind=kind: (_core.activation_forward_naive(kind, x, y), y)[1],
                rtol=1e-5, atol=1e-6)
    if quick:
        return
    dy = _f32(rng, n)
    dx = np.empty_like(x)
    for kind in kinds:
        yk = np.empty_like(x)
        _core.activation_forward_naive(kind, x, yk)
        xk = x if kind in ops.nn.NEEDS_INPUT else None
        fam.add(f"activation_backward {kind} n=1Mi",
                lambda kind=kind, yk=yk, xk=xk: (_core.activation_backward(kind, dy, yk, dx, 0.0, xk), dx)[1],
                lambda kind=kind, yk=yk, xk=xk: (_core.activation_backward_naive(kind, dy, yk, dx, 0.0, xk), dx)[1],
                rtol=1e-5, atol=1e-6)


def _optimizers(fam: _Family, rng, quick: bool) -> None:
    n = 1 << 20
    p0 = _f32(rng, n)
    g = _f32(rng, n, 1e-3)
    v0 = np.abs(_f32(rng, n, 1e-3)) ** 2  # a second-moment state of the gradient's scale
    lr = 1e-3
    # name -> (slots, call(kernel, p, slots)); the slots start as copies of these arrays
    rules = {
        "sgd": ((), lambda k, p, s: k(p, g, lr)),
        "momentum": ((np.zeros(n, np.float32),), lambda k, p, s: k(p, s[0], g, lr, 0.9)),
        "adagrad": ((v0,), lambda k, p, s: k(p, s[0], g, lr, 1e-7)),
        "rmsprop": ((v0,), lambda k, p, s: k(p, s[0], None, None, g, lr, 0.9, 0.0, 1e-7)),
        "adam": ((np.zeros(n, np.float32), v0), lambda k, p, s: k(p, s[0], s[1], None, g, lr, 0.9, 0.999, 1e-7)),
        "nadam": ((np.zeros(n, np.float32), v0),
                  lambda k, p, s: k(p, s[0], s[1], g, *ops.optim.nadam_coefficients(lr, 3, 0.9, 0.999), 0.9,
                                    0.999, 1e-7)),
    }
    names = ("sgd", "adam") if quick else tuple(rules)
    for name in names:
        slots0, call = rules[name]
        kern, twin = getattr(_core, f"{name}_update"), getattr(_core, f"{name}_update_naive")

        def results(which, slots0=slots0, call=call, kern=kern, twin=twin):
            # one step from the same state: the updated parameter and slots
            p, s = p0.copy(), [a.copy() for a in slots0]
            call(twin if which == "naive" else kern, p, s)
            return [p] + s

        # timed: repeated steps on one shared state (small steps: the values stay in range)
        p, s = p0.copy(), [a.copy() for a in slots0]
        fast = lambda call=call, kern=kern, p=p, s=s: call(kern, p, s)  # noqa: E731
        naive = lambda call=call, twin=twin, p=p, s=s: call(twin, p, s)  # noqa: E731
        fam.add(f"{name}_update n=1Mi", fast, naive, results, rtol=1e-5, atol=1e-7)


def _sum_squares(fam: _Family, rng, quick: bool) -> None:
    x = _f32(rng, 1 << 20)
    fam.add("sum_squares n=1Mi", lambda: np.float64(_core.sum_squares(x)),
            lambda: np.float64(_core.sum_squares_naive(x)), rtol=1e-9, atol=0.0)


def _rnn(fam: _Family, rng, quick: bool) -> None:
    cell, G = 2, 4  # pydl.ops.rnn: cell id 2 is the LSTM (gates i f g o)
    N, T, C, H = 8, 10, 64, 128
    k = 1.0 / np.sqrt(H)
    x = _f32(rng, (N, T, C))
    W = rng.uniform(-k, k, (C, G * H)).astype(np.float32)
    U = rng.uniform(-k, k, (H, G * H)).astype(np.float32)
    b = rng.uniform(-k, k, G * H).astype(np.float32)
    E = lambda *s: np.empty(s, np.float32)  # noqa: E731
    out, hT, cT, gates, hprev, cs = E(N, T, H), E(N, H), E(N, H), E(N, T, G * H), E(N, T, H), E(N, T, H)

    def fwd():
        _core.rnn_forward(cell, x, W, U, b, None, None, None, None, None, out, hT, cT, gates, hprev, cs, None)
        return out, hT, cT

    def fwd_naive():
        _core.rnn_forward_naive(cell, x, W, U, b, None, None, None, None, None, out, hT, cT)
        return out, hT, cT

    case = f"N{N} T{T} C{C} H{H}"
    fam.add(f"rnn_forward lstm {case}", fwd, fwd_naive)
    if quick:
        return
    _core.select_isa(GENERIC)
    fwd()  # the cache (gates, hprev, cs) every backward variant reads
    dout = _f32(rng, (N, T, H))
    dx, dh0, dc0, dW, dU, db = E(N, T, C), E(N, H), E(N, H), E(C, G * H), E(H, G * H), E(G * H)
    grads = (dx, dh0, dc0, dW, dU, db)

    def bwd():
        _core.rnn_backward(cell, gates, hprev, cs, None, x, W, U, None, None, None, dout, None, None,
                           dx, dh0, dc0, dW, dU, db, None)
        return grads

    def bwd_naive():
        _core.rnn_backward_naive(cell, x, W, U, b, None, None, None, None, None, dout, None, None,
                                 dx, dh0, dc0, dW, dU, db, None)
        return grads

    fam.add(f"rnn_backward lstm {case}", bwd, bwd_naive)


def _attention(fam: _Family, rng, quick: bool) -> None:
    B, H, T, d = 2, 4, 128, 64
    q, k, v = _f32(rng, (B, H, T, d)), _f32(rng, (B, H, T, d)), _f32(rng, (B, H, T, d))
    scale = 1.0 / np.sqrt(d)
    out, lse = np.empty((B, H, T, d), np.float32), np.empty((B, H, T), np.float32)
    case = f"B{B} H{H} T=S={T} d{d}"
    fam.add(f"attention_forward {case}",
            lambda: (_core.attention_forward(q, k, v, None, False, 0.0, scale, 0, out, lse), (out, lse))[1],
            lambda: (_core.attention_forward_naive(q, k, v, None, False, 0.0, scale, 0, out, lse), (out, lse))[1])
    if quick:
        return
    _core.select_isa(GENERIC)
    o, l = np.empty_like(out), np.empty_like(lse)
    _core.attention_forward(q, k, v, None, False, 0.0, scale, 0, o, l)
    dout = _f32(rng, o.shape)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    fam.add(f"attention_backward {case}",
            lambda: (_core.attention_backward(q, k, v, o, l, dout, None, False, 0.0, scale, 0, dq, dk, dv),
                     (dq, dk, dv))[1],
            lambda: (_core.attention_backward_naive(q, k, v, dout, None, False, 0.0, scale, 0, dq, dk, dv),
                     (dq, dk, dv))[1])


def _pooling(fam: _Family, rng, quick: bool) -> None:
    N, C, H, W = (8 if quick else 16), 32, 56, 56
    x = _f32(rng, (N, C, H, W))
    case = f"N{N} C{C} {H}x{W}"
    windows = [((2, 2), (2, 2), (0, 0, 0, 0))] + ([] if quick else [((3, 3), (2, 2), (1, 1, 1, 1))])
    for pool, st, pads in windows:
        P = (H + pads[0] + pads[1] - pool[0]) // st[0] + 1
        Q = (W + pads[2] + pads[3] - pool[1]) // st[1] + 1
        y, am = np.empty((N, C, P, Q), np.float32), np.empty((N, C, P, Q), np.int32)
        geo = f"{pool[0]}x{pool[1]}" + (f" s{st[0]} p{pads[0]}" if (st, pads) != (pool, (0, 0, 0, 0)) else "")
        fam.add(f"max_pool2d_forward {geo} {case}",
                lambda pool=pool, st=st, pads=pads, y=y, am=am:
                    _core.max_pool2d_forward(x, pool, st, pads, True, False, y, am),
                lambda pool=pool, st=st, pads=pads, y=y, am=am:
                    _core.max_pool2d_forward(x, pool, st, pads, True, True, y, am),
                rtol=0.0, atol=0.0)
    pool, st, pads = (2, 2), (2, 2), (0, 0, 0, 0)
    y = np.empty((N, C, H // 2, W // 2), np.float32)
    fam.add(f"avg_pool2d_forward 2x2 {case}",
            lambda: _core.avg_pool2d_forward(x, pool, st, pads, True, False, y),
            lambda: _core.avg_pool2d_forward(x, pool, st, pads, True, True, y), rtol=1e-6, atol=1e-6)
    if quick:
        return
    dy = _f32(rng, y.shape)
    fam.add(f"avg_pool2d_backward 2x2 {case}",
            lambda: _core.avg_pool2d_backward(dy, x.shape, pool, st, pads, True, False),
            lambda: _core.avg_pool2d_backward(dy, x.shape, pool, st, pads, True, True), rtol=1e-6, atol=1e-6)


def _conv2d(fam: _Family, rng, quick: bool) -> None:
    # (N, C, H, W, K), 3x3 filters, stride 1, padding 1; N small enough for the seven-loop naive
    cases = [(2, 32, 28, 28, 32)] if quick else [(4, 32, 28, 28, 32), (8, 3, 32, 32, 32)]
    for N, C, H, W, K in cases:
        x, w, b = _f32(rng, (N, C, H, W)), _f32(rng, (K, C, 3, 3), 1.0 / np.sqrt(9 * C)), _f32(rng, K, 0.1)
        _core.select_isa(GENERIC)
        algo_g = ops.conv2d_algo(x.shape, w.shape, 1, 1)
        algo_n = None
        if fam.native:
            _core.select_isa(fam.native)
            algo_n = ops.conv2d_algo(x.shape, w.shape, 1, 1)
        auto = f"auto: generic {algo_g}" + (f", {fam.native} {algo_n}" if fam.native else "")
        # Winograd F(4x4,3x3) rounds ~10x more than the direct sum
        tol = 2e-3 if "winograd" in algo_g + str(algo_n) else 1e-4
        fam.add(f"conv2d N{N} C{C} {H}x{W} K{K} 3x3 p1 [{auto}]",
                lambda x=x, w=w, b=b: ops.conv2d(x, w, b, 1, 1, algo="auto"),
                lambda x=x, w=w, b=b: ops.conv2d(x, w, b, 1, 1, algo="naive"), rtol=tol, atol=tol)
    if quick:
        return
    N, C, H, W, K = 2, 32, 28, 28, 32
    x, w = _f32(rng, (N, C, H, W)), _f32(rng, (K, C, 3, 3), 1.0 / np.sqrt(9 * C))
    dy = _f32(rng, (N, K, H, W))
    _core.select_isa(GENERIC)
    algo_g = ops.conv2d_algo(x.shape, w.shape, 1, 1)
    auto = f"auto: generic {algo_g}"
    if fam.native:
        _core.select_isa(fam.native)
        auto += f", {fam.native} {ops.conv2d_algo(x.shape, w.shape, 1, 1)}"
    fam.add(f"conv2d_backward N{N} C{C} {H}x{W} K{K} 3x3 p1 [dx {auto}]",
            lambda: ops.conv2d_backward(dy, x, w, 1, 1, algo="auto"),
            lambda: ops.conv2d_backward(dy, x, w, 1, 1, algo="naive"), rtol=2e-3, atol=2e-3)


KERNELS = (_gemm, _dense, _activations, _optimizers, _sum_squares, _rnn, _attention, _pooling, _conv2d)


def run(quick: bool = False) -> list[Row]:
    quick = quick or common.QUICK
    original = _core.selected_isa()
    native = native_isa()
    rows = []
    try:
        for nt in common.thread_list((1,)):
            fam = _Family(nt, native)
            rng = np.random.default_rng(0)
            with threads(nt):
                for kernels in KERNELS:
                    kernels(fam, rng, quick)
            rows += fam.rows
    finally:
        _core.select_isa(original)
    print_rows(rows, f"generic (SSE2) kernels vs their naive twins and vs {native or 'no vector ISA'}",
               "ms per call; ratio = baseline ms / generic ms; targets pydl/naive >= 1, pydl/native >= 0.2")
    misses = [r for r in rows if "below target" in r.note]
    for r in misses:
        print(f"  {r.case} thr={r.threads}: {r.note}")
    if not misses:
        print("  every kernel meets both targets")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, nargs="+", default=None)
    args = ap.parse_args()
    common.QUICK = common.QUICK or args.quick
    common.THREADS = args.threads
    print(f"pydl {pydl.__version__} isa={pydl.config()['isa']} available={_core.available_isas()}")
    run(args.quick)
    sys.exit(0)
