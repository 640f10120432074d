"""Fused attention and layer normalisation: pydl vs torch.nn.functional (CPU, float32).

    python -m pydl.bench.bench_attention            # 2 threads (the target) and 1 thread
    python -m pydl.bench.bench_attention --quick    # 2 threads only, fewer rounds

Attention at B16 H8 d64, T = S = 256 and 1024 (and causal at 1024): forward only (PyTorch under
no_grad) and forward + backward (dq, dk, dv; PyTorch through autograd). Outputs and gradients are
checked against PyTorch first; rounds of pydl and PyTorch alternate and medians are reported.
FLOP = 4 B H T S d forward, x3.5 forward + backward (the backward's five block products; causal
counts half). Memory: peak RSS growth of one forward + backward at B1 H4 d64, T = S = 1024 ..
4096, each in a fresh process: linear in T (a T x S float32 score matrix would be 64 MiB per head
at 4096). Layer norm at (32*128, 256) and (32*128, 1024): forward and forward + backward, GB/s of
the arrays read and written once (fwd: x, y; fwd+bwd: x, y, dy, x, dx).
"""
from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np

from . import common  # noqa: E402
from .common import HAVE_TORCH, Row, alternate, assert_close, print_rows, threads  # noqa: E402

import pydl  # noqa: E402
from pydl import ops  # noqa: E402

if HAVE_TORCH:
    import torch
    import torch.nn.functional as TF


def _attn_case(B, H, T, d, causal, rounds, nthreads):
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((B, H, T, d)).astype(np.float32) for _ in range(4))

    def pf():
        return ops.scaled_dot_product_attention(q, k, v, causal=causal)

    def pfb():
        out, lse = ops.attention_forward(q, k, v, causal=causal)
        return out, ops.attention_backward(q, k, v, out, lse, dout, causal=causal)

    fns = {"pf": pf, "pfb": pfb}
    if HAVE_TORCH:
        tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
        td = torch.from_numpy(dout)

        def tf():
            with torch.no_grad():
                return TF.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)

        def tfb():
            tq.grad = tk.grad = tv.grad = None
            o = TF.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
            o.backward(td)
            return o

        o = tfb()
        out, (dq, dk, dv) = pfb()
        what = f"attention T{T} causal={causal}"
        assert_close(out, o.detach().numpy(), 1e-4, 1e-5, what + " out")
        for g, t, n in ((dq, tq, "dq"), (dk, tk, "dk"), (dv, tv, "dv")):
            assert_close(g, t.grad.numpy(), 1e-3, 1e-4, f"{what} {n}")
        fns |= {"tf": tf, "tfb": tfb}
    t = alternate(fns, rounds, repeats=3, min_time=0.05)
    flop = 4.0 * B * H * T * T * d * (0.5 if causal else 1.0)
    case = f"B{B} H{H} T{T} S{T} d{d}" + (" causal" if causal else "")
    base_f = {"torch": t["tf"] * 1e3} if HAVE_TORCH else {}
    base_fb = {"torch": t["tfb"] * 1e3} if HAVE_TORCH else {}
    return [Row("attention", f"forward {case}", nthreads, "ms", t["pf"] * 1e3, base_f,
                note=f"{common.gflops(flop, t['pf']):.0f} GFLOP/s"),
            Row("attention", f"fwd+bwd {case}", nthreads, "ms", t["pfb"] * 1e3, base_fb,
                note=f"{common.gflops(3.5 * flop, t['pfb']):.0f} GFLOP/s")]


def _ln_case(R, C, rounds, nthreads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((R, C)).astype(np.float32)
    g = rng.standard_normal(C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal((R, C)).astype(np.float32)

    def pf():
        return ops.layer_norm(x, g, b)

    def pfb():
        y, m, r = ops.layer_norm(x, g, b)
        return y, ops.layer_norm_backward(dy, x, g, m, r)

    fns = {"pf": pf, "pfb": pfb}
    if HAVE_TORCH:
        tx, tg, tb = (torch.from_numpy(a).requires_grad_() for a in (x, g, b))
        tdy = torch.from_numpy(dy)

        def tf():
            with torch.no_grad():
                return TF.layer_norm(tx, (C,), tg, tb)

        def tfb():
            tx.grad = tg.grad = tb.grad = None
            y = TF.layer_norm(tx, (C,), tg, tb)
            y.backward(tdy)
            return y

        y = tfb()
        py, (dx, dg, db) = pfb()
        assert_close(py, y.detach().numpy(), 1e-4, 1e-4, "layer_norm y")
        assert_close(dx, tx.grad.numpy(), 1e-3, 1e-3, "layer_norm dx")
        assert_close(dg, tg.grad.numpy(), 1e-3, 1e-2, "layer_norm dgamma")
        fns |= {"tf": tf, "tfb": tfb}
    t = alternate(fns, rounds, repeats=3, min_time=0.05)
    nb = 4.0 * R * C
    return [Row("layernorm", f"forward ({R}, {C})", nthreads, "ms", t["pf"] * 1e3,
                {"torch": t["tf"] * 1e3} if HAVE_TORCH else {}, note=f"{common.gbps(2 * nb, t['pf']):.1f} GB/s"),
            Row("layernorm", f"fwd+bwd ({R}, {C})", nthreads, "ms", t["pfb"] * 1e3,
                {"torch": t["tfb"] * 1e3} if HAVE_TORCH else {}, note=f"{common.gbps(5 * nb, t['pfb']):.1f} GB/s")]


_MEM_SNIPPET = """
import sys, numpy as np
from pydl import ops

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
T = int(sys.argv[1]); B, H, d = 1, 4, 64
rng = np.random.default_rng(0)
q, k, v, do = (rng.standard_normal((B, H, T, d)).astype(np.float32) for _ in range(4))
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
before = status("VmRSS:")
out, lse = ops.attention_forward(q, k, v)
g = ops.attention_backward(q, k, v, out, lse, do)
print(status("VmHWM:") - before)
"""


def memory_growth(Ts=(1024, 2048, 4096)) -> dict:
    """Peak RSS growth (MiB) of one forward + backward, each T in a fresh process."""
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(pydl.__file__)))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    res = {}
    for T in Ts:
        r = subprocess.run([sys.executable, "-c", _MEM_SNIPPET, str(T)], env=env, capture_output=True, text=True,
                           timeout=600)
        res[T] = float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else float("nan")
    return res


def run(quick: bool = False, thread_counts=None) -> list[Row]:
    quick = quick or common.QUICK
    rounds = 3 if quick else 5
    if thread_counts is None:
        thread_counts = common.thread_list((2,) if quick else (2, 1))
    rows: list[Row] = []
    for nt in thread_counts:
        with threads(nt):
            if quick:  # one small case each: the whole quick suite must stay under a minute
                rows += _attn_case(4, 8, 256, 64, False, 1, nt)
                rows += _ln_case(32 * 128, 256, 1, nt)
                continue
            rows += _attn_case(16, 8, 256, 64, False, rounds, nt)
            rows += _attn_case(16, 8, 1024, 64, False, max(3, rounds - 2), nt)
            rows += _attn_case(16, 8, 1024, 64, True, max(3, rounds - 2), nt)
            rows += _ln_case(32 * 128, 256, rounds, nt)
            rows += _ln_case(32 * 128, 1024, rounds, nt)
    print_rows(rows, "Attention and layer norm (float32, CPU)",
               "ms per call, median of alternating rounds; attention FLOP = 4*B*H*T*S*d fwd, x3.5 fwd+bwd")
    for r in rows:
        if r.note:
            print(f"  {r.case} ({r.threads} thr): {r.note}")
    mem = memory_growth((512,) if quick else (1024, 2048, 4096))
    print("\nPeak RSS growth of one attention forward + backward (B1 H4 d64, fresh process; inputs excluded):")
    for T, mb in mem.items():
        print(f"  T = S = {T}: {mb:.1f} MiB   (outputs out, lse, dq, dk, dv: {4 * 4 * T * (4 * 64 + 1) / 2**20:.1f} "
              f"MiB; a float32 T x S score matrix for the 4 heads would be {4 * 4 * T * T / 2**20:.0f} MiB)")
        rows.append(Row("attention", f"peak RSS growth fwd+bwd B1 H4 T{T} d64", pydl.get_num_threads(), "MiB", mb))
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
