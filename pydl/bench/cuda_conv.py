"""CUDA convolution: pydl's kernels vs PyTorch CUDA (cuDNN), fp32 with TF32 off.

    python -m pydl.bench.cuda_conv [--quick] [--json FILE]

Cases (NCHW, 3x3 filters, stride 1, padding 1):
  conv3x3 forward   N64 C64 56x56 K64
  conv3x3 forward   N128 C128 28x28 K128
  conv3x3 forward   N128 C32 14x14 K64   (the documents' CNN's second layer)
  conv3x3 fwd+bwd   N64 C64 56x56 K64    (y, then dx, dw and db from a given dy)
Each case runs algo="auto" (the row with a target; the `algo` column says what auto ran), then,
for the forward cases, each CUDA algorithm forced (implicit_gemm, winograd_f2, winograd_f4): the
figures behind pydl.ops.conv.CUDA_AUTO_RULE. Every run is first checked against PyTorch (largest
difference over the largest PyTorch magnitude), then both are timed with CUDA events (warm-up,
repeats of a batch of calls, median). TFLOP/s = 2 N K C R S P Q / t (forward; three times that for
fwd+bwd), so Winograd's rates count the direct sum's operations. ratio_cudnn = cuDNN's time /
pydl's time: > 1 means pydl is faster. Targets: forward >= 0.5, fwd+bwd >= 0.4 (at most 2.5x
cuDNN's time). Without a CUDA PyTorch only pydl's times are reported.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

from .cuda import _cupy, _torch_cuda, gpu_time

# (name, N, C, H, W, K, backward too)
CASES = [("conv3x3 forward", 64, 64, 56, 56, 64, False),
         ("conv3x3 forward", 128, 128, 28, 28, 128, False),
         ("conv3x3 forward", 128, 32, 14, 14, 64, False),
         ("conv3x3 fwd+bwd", 64, 64, 56, 56, 64, True)]
FORCED = ("implicit_gemm", "winograd_f2", "winograd_f4")  # timed besides "auto" in the forward cases
TARGETS = {False: 0.5, True: 0.4}  # least acceptable ratio_cudnn (cuDNN time / pydl time)


def _case(name, n, c, h, w, k, backward, quick) -> list[dict]:
    from ..ops import conv as conv_ops
    cp = _cupy()
    rng = cp.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=cp.float32)
    wt = (rng.standard_normal((k, c, 3, 3), dtype=cp.float32) * (1.0 / (3 * c ** 0.5))).astype(cp.float32)
    b = rng.standard_normal((k,), dtype=cp.float32)
    dy = rng.standard_normal((n, k, h, w), dtype=cp.float32)
    flops = 2.0 * n * k * c * 9 * h * w * (3 if backward else 1)
    reps = 10 if quick else 30
    inner = 3 if quick else 5
    shape = f"N{n} C{c} {h}x{w} K{k}"
    torch = _torch_cuda()
    want = None
    t_torch = None
    if torch is not None:
        tx = torch.as_tensor(x, device="cuda").requires_grad_(backward)
        tw = torch.as_tensor(wt, device="cuda").requires_grad_(backward)
        tb = torch.as_tensor(b, device="cuda").requires_grad_(backward)
        tdy = torch.as_tensor(dy, device="cuda")
        conv = torch.nn.functional.conv2d

        def torch_fn():
            y = conv(tx, tw, tb, 1, 1)
            if backward:
                gx, gw, gb = torch.autograd.grad(y, (tx, tw, tb), tdy)
                return y, gx, gw, gb
            return (y,)

        with contextlib.nullcontext() if backward else torch.no_grad():
            want = [cp.asarray(t.detach()) for t in torch_fn()]
            t_torch = gpu_time(torch_fn, repeats=reps, inner=inner)

    rows = []
    for algo in ("auto",) + (() if backward else FORCED):
        def pydl_fn():
            y = conv_ops.conv2d(x, wt, b, 1, 1, algo=algo)
            if backward:
                return (y,) + tuple(conv_ops.conv2d_backward(dy, x, wt, 1, 1))
            return (y,)

        ran = conv_ops.conv2d_algo(x.shape, wt.shape, 1, 1, algo=algo, device="cuda")
        row = dict(name=name, shape=shape, algo=ran if algo == "auto" else f"{algo} (forced)")
        if want is not None:
            err = 0.0
            for g, r in zip(pydl_fn(), want):
                err = max(err, float(cp.abs(g - r).max()) / max(float(cp.abs(r).max()), 1e-30))
            row["max_rel_err"] = err
            if not err < 1e-3:
                raise AssertionError(f"{name} {shape} {algo}: pydl differs from PyTorch by {err:.2e} (relative)")
            row.update(cudnn_ms=t_torch * 1e3, cudnn_tflops=flops / t_torch / 1e12)
        t = gpu_time(pydl_fn, repeats=reps, inner=inner)
        row.update(pydl_ms=t * 1e3, pydl_tflops=flops / t / 1e12)
        if "cudnn_ms" in row:
            row["ratio_cudnn"] = row["cudnn_ms"] / row["pydl_ms"]
            if algo == "auto":
                row["target"] = TARGETS[backward]
                row["meets_target"] = row["ratio_cudnn"] >= TARGETS[backward]
        rows.append(row)
    return rows


def run(quick: bool = False) -> list[dict]:
    """Rows per case (algo "auto" first, then the forced ones): pydl_ms / pydl_tflops, and with a
    CUDA PyTorch cudnn_ms / cudnn_tflops, ratio_cudnn (cuDNN time / pydl time), max_rel_err, and on
    the auto row target and meets_target."""
    _cupy()
    return [row for case in CASES for row in _case(*case, quick=quick)]


def format_rows(rows: list[dict]) -> str:
    def fmt(v, f):
        return format(v, f) if v is not None else "-".rjust(int(f.split(".")[0]))
    lines = ["Convolution (fp32, TF32 off): TFLOP/s = 2 N K C R S P Q / t (x3 for fwd+bwd); "
             "ratio = cuDNN time / pydl time",
             f"{'case':<18} {'shape':<22} {'algo':<24} {'pydl ms':>8} {'cuDNN ms':>9} {'pydl TF':>8} "
             f"{'cuDNN TF':>9} {'ratio':>6} {'target':>7} {'err':>8}"]
    for r in rows:
        lines.append(f"{r['name']:<18} {r['shape']:<22} {r.get('algo', ''):<24} {fmt(r.get('pydl_ms'), '8.3f')} "
                     f"{fmt(r.get('cudnn_ms'), '9.3f')} {fmt(r.get('pydl_tflops'), '8.2f')} "
                     f"{fmt(r.get('cudnn_tflops'), '9.2f')} {fmt(r.get('ratio_cudnn'), '6.2f')} "
                     f"{fmt(r.get('target'), '7.2f')} {fmt(r.get('max_rel_err'), '8.1e')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pydl.bench.cuda_conv", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    args = ap.parse_args(argv)
    import pydl.cuda
    if not pydl.cuda.is_available():
        print(f"pydl.bench.cuda_conv: {pydl.cuda.device_info()['reason']}", file=sys.stderr)
        return 2
    rows = run(quick=args.quick)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["run", "format_rows", "CASES", "TARGETS", "FORCED"]
