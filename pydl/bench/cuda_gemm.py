"""CUDA SGEMM: pydl's hand-written kernels vs cuBLAS (cupy.matmul) vs PyTorch (torch.matmul), TF32 off.

    python -m pydl.bench.cuda_gemm             # 1024^3 and 4096^3 in all four transposes, MLP shapes
    python -m pydl.bench.cuda_gemm --quick     # fewer repeats (whole run well under 30 s on an H200)
    python -m pydl.bench.cuda_gemm --json rows.json
    python -m pydl.bench.cuda_gemm --tile m    # force one block tile (l, m, s) instead of the automatic one

cuBLAS and PyTorch are anchors only: pydl's product runs its own kernels (pydl.cuda.gemm). Both
anchors compute in full float32: CuPy uses TF32 only when CUPY_TF32=1 (this module sets it to 0
before CuPy is imported and refuses to run if CuPy was imported with it on), and PyTorch is told
`allow_tf32 = False`. Each case first checks pydl against cuBLAS (largest difference over the
largest cuBLAS magnitude), then times every library with CUDA events: warm-up, repeats of a batch
of calls, median. TFLOP/s = 2*M*N*K / t; a ratio > 1 means pydl is faster.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

SQUARE = (1024, 4096)
# (name, M, K, N, trans_a, trans_b): a dense layer's forward, a smaller one, and dW = x.T @ dy
MLP = [("mlp fwd", 128, 784, 256, False, False), ("mlp fwd", 128, 256, 128, False, False),
       ("mlp dW", 784, 128, 256, True, False)]
_TF32_NOTE = "TF32 off (CUPY_TF32=0, torch allow_tf32=False)"


def _cupy():
    if "cupy" not in sys.modules:
        os.environ["CUPY_TF32"] = "0"
    elif os.environ.get("CUPY_TF32", "0") != "0":
        raise RuntimeError("CuPy was imported with CUPY_TF32 set: cuBLAS would compute in TF32; run this "
                           "benchmark in a fresh process with CUPY_TF32=0")
    import pydl.cuda
    pydl.cuda.require()
    return pydl.cuda.cupy_module()


def _torch():
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch


def _median_ms(fn, repeats: int, inner: int, new_event, elapsed_ms, synchronize) -> float:
    for _ in range(2):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start, stop = new_event(), new_event()
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        stop.synchronize()
        times.append(elapsed_ms(start, stop) / inner)
    return statistics.median(times)


def bench_case(cp, torch, name: str, m: int, k: int, n: int, ta: bool, tb: bool, repeats: int,
               tile: str | None = None) -> dict:
    from pydl.cuda import gemm as cuda_gemm
    from pydl.ops import gemm

    rs = cp.random.RandomState(seed=m * 7 + k * 3 + n)
    a = rs.standard_normal((k, m) if ta else (m, k), dtype=cp.float32)
    b = rs.standard_normal((n, k) if tb else (k, n), dtype=cp.float32)
    opa, opb = (a.T if ta else a), (b.T if tb else b)
    c_pydl = cp.empty((m, n), cp.float32)
    c_cublas = cp.empty((m, n), cp.float32)

    if tile is None:
        def pydl_call():
            gemm(a, b, trans_a=ta, trans_b=tb, out=c_pydl)
    else:
        def pydl_call():
            cuda_gemm.gemm(a, b, c_pydl, ta, tb, 1.0, 0.0, tile=tile)
    pydl_call()
    cp.matmul(opa, opb, out=c_cublas)
    scale = float(cp.abs(c_cublas).max().item()) or 1.0
    err = float(cp.abs(c_pydl - c_cublas).max().item()) / scale
    if not err < 1e-4:
        raise AssertionError(f"cuda gemm {m}x{k}x{n} ta={ta} tb={tb}: relative difference to cuBLAS {err:.2e}")

    flops = 2.0 * m * n * k
    inner = max(1, min(200, int(4e9 / flops)))
    cp_event = (lambda: cp.cuda.Event(), cp.cuda.get_elapsed_time, cp.cuda.Device().synchronize)
    t_pydl = _median_ms(pydl_call, repeats, inner, *cp_event)
    t_cublas = _median_ms(lambda: cp.matmul(opa, opb, out=c_cublas), repeats, inner, *cp_event)
    t_torch = None
    if torch is not None:
        ta_t, tb_t = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
        ta_t, tb_t = (ta_t.T if ta else ta_t), (tb_t.T if tb else tb_t)
        c_t = torch.empty((m, n), dtype=torch.float32, device="cuda")
        t_torch = _median_ms(lambda: torch.matmul(ta_t, tb_t, out=c_t), repeats, inner,
                             lambda: torch.cuda.Event(enable_timing=True), lambda s, e: s.elapsed_time(e),
                             torch.cuda.synchronize)
    tf = lambda ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
    row = {"name": f"{name} {'T' if ta else 'N'}{'T' if tb else 'N'}", "shape": f"{m}x{k}x{n}",
           "tile": tile or cuda_gemm.choose_tile(m, n, cp.float32, cuda_gemm.sm_count()),
           "pydl_tflops": tf(t_pydl), "cublas_tflops": tf(t_cublas),
           "torch_tflops": tf(t_torch) if t_torch is not None else None,
           "ratio_cublas": t_cublas / t_pydl, "ratio_torch": (t_torch / t_pydl) if t_torch is not None else None,
           "max_rel_err": err}
    return row


def run(quick: bool = False, tile: str | None = None) -> list[dict]:
    """One row per case: name, shape (MxKxN), pydl/cublas/torch TFLOP/s, ratios (pydl faster > 1),
    max_rel_err of pydl against cuBLAS, and the block tile pydl ran (`tile` forces one)."""
    cp = _cupy()
    torch = _torch()
    rows = []
    for size in SQUARE:
        for ta in (False, True):
            for tb in (False, True):
                reps = (5 if quick else 10) if size >= 4096 else (10 if quick else 30)
                rows.append(bench_case(cp, torch, f"square {size}", size, size, size, ta, tb, reps, tile))
    for name, m, k, n, ta, tb in MLP:
        rows.append(bench_case(cp, torch, name, m, k, n, ta, tb, 10 if quick else 30, tile))
    return rows


def format_rows(rows: list[dict]) -> str:
    def f(v, spec):
        return format("-", ">" + spec.split(".")[0]) if v is None else format(v, spec)
    lines = [f"{'case':<18} {'M x K x N':<16} {'tile':<4} {'pydl':>7} {'cuBLAS':>7} {'torch':>7} "
             f"{'/cuBLAS':>8} {'/torch':>7} {'rel err':>9}   (TFLOP/s; {_TF32_NOTE})"]
    for r in rows:
        lines.append(f"{r['name']:<18} {r['shape']:<16} {r['tile']:<4} {f(r['pydl_tflops'], '7.2f')} "
                     f"{f(r['cublas_tflops'], '7.2f')} {f(r['torch_tflops'], '7.2f')} "
                     f"{f(r['ratio_cublas'], '8.2f')} {f(r['ratio_torch'], '7.2f')} {r['max_rel_err']:9.1e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pydl.bench.cuda_gemm", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--tile", choices=["l", "m", "s"], help="run this block tile instead of the automatic choice")
    args = ap.parse_args(argv)
    rows = run(quick=args.quick, tile=args.tile)
    import pydl.cuda
    info = pydl.cuda.device_info()
    print(f"{info.get('name')} (sm {info.get('compute_capability')}, {info.get('multiprocessors')} SMs), "
          f"CuPy {info.get('cupy')}")
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"device": info, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
