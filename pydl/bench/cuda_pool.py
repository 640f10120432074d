"""CUDA pooling: pydl's kernels as a fraction of the device copy bandwidth, and PyTorch CUDA's time.

    python -m pydl.bench.cuda_pool [--quick] [--json FILE]

N=64, C=64, 112x112 float32 (a ResNet stem's pooling input, 205 MB): max pooling 2x2 / stride 2
and 3x3 / stride 2 / padding 1 (forward with argmax; backward from the argmax, the gather), and
the global average with its backward. Each case first checks pydl against PyTorch when PyTorch
CUDA is present (max: equal values; average: 1e-5), then times with CUDA events (pydl.bench.cuda
.gpu_time). GB/s = bytes the op must move at least (inputs read once, outputs written once; the
argmax counts as int32) / t; frac_copy = that rate over a device-to-device copy measured in the
same run. torch_ms: the same op in PyTorch CUDA (the backward: autograd through max_pool2d).
pydl's max-pool backward reads one flag back (the check that every argmax lies in its window), so
its time includes a device sync.
"""
from __future__ import annotations

import argparse
import json
import sys

from .cuda import _cupy, _torch_cuda, gpu_time

SHAPE = (64, 64, 112, 112)


def run(quick: bool = False, shape=SHAPE) -> list[dict]:
    """Rows of the cases above (`shape` smaller only for a smoke test)."""
    import pydl
    cp = _cupy()
    torch = _torch_cuda()
    ops = pydl.ops
    reps = 10 if quick else 30
    N, C, H, W = shape
    label_shape = f"N{N} C{C} {H}x{W} f32"
    rng = cp.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=cp.float32)
    nbytes = x.nbytes
    dst = cp.empty_like(x)
    t_copy = gpu_time(lambda: cp.copyto(dst, x), repeats=reps)
    copy_gbs = 2 * nbytes / t_copy / 1e9
    rows = [dict(name="device copy", shape=label_shape, gbs=copy_gbs, frac_copy=1.0, ms=t_copy * 1e3,
                 torch_ms=None)]
    tx = torch.as_tensor(x, device="cuda") if torch is not None else None

    def add(name, fn, moved, torch_fn=None):
        t = gpu_time(fn, repeats=reps)
        gbs = moved / t / 1e9
        tt = gpu_time(torch_fn, repeats=reps) if torch_fn is not None else None
        rows.append(dict(name=name, shape=label_shape, gbs=gbs, frac_copy=gbs / copy_gbs, ms=t * 1e3,
                         torch_ms=None if tt is None else tt * 1e3))

    for pool, stride, pad in [(2, 2, 0), (3, 2, 1)]:
        y, am = ops.max_pool2d(x, pool, stride, pad)
        if torch is not None:
            ty, ti = torch.nn.functional.max_pool2d(tx, pool, stride, pad, return_indices=True)
            if not bool(cp.array_equal(y, cp.asarray(ty))) or not bool(cp.array_equal(am, cp.asarray(ti).astype(cp.int32))):
                raise AssertionError(f"max_pool2d {pool}x{pool}/{stride} differs from PyTorch")
        out_b = y.nbytes
        label = f"max pool {pool}x{pool} s{stride} p{pad}"
        add(f"{label} forward (+argmax)", lambda: ops.max_pool2d(x, pool, stride, pad), nbytes + 2 * out_b,
            (lambda: torch.nn.functional.max_pool2d(tx, pool, stride, pad, return_indices=True))
            if torch is not None else None)
        add(f"{label} forward (no argmax)", lambda: ops.max_pool2d(x, pool, stride, pad, return_argmax=False),
            nbytes + out_b, (lambda: torch.nn.functional.max_pool2d(tx, pool, stride, pad)) if torch is not None else None)
        dy = rng.standard_normal(y.shape, dtype=cp.float32)
        torch_bwd = None
        if torch is not None:
            txg = tx.detach().clone().requires_grad_(True)
            tyg = torch.nn.functional.max_pool2d(txg, pool, stride, pad)
            tdy = torch.as_tensor(dy, device="cuda")

            def torch_bwd():
                torch.autograd.grad(tyg, txg, tdy, retain_graph=True)
        add(f"{label} backward", lambda: ops.max_pool2d_backward(dy, am, shape, pool, stride, pad),
            nbytes + 2 * out_b, torch_bwd)
    g = ops.global_avg_pool2d(x)
    ref = x.astype(cp.float64).mean(axis=(2, 3))
    if not float(cp.abs(g - ref).max()) < 1e-5:
        raise AssertionError("global_avg_pool2d differs from the float64 mean")
    add("global average forward", lambda: ops.global_avg_pool2d(x), nbytes + g.nbytes,
        (lambda: tx.mean(dim=(2, 3))) if torch is not None else None)
    gdy = rng.standard_normal((N, C), dtype=cp.float32)
    tg = torch.as_tensor(gdy, device="cuda") if torch is not None else None
    add("global average backward", lambda: ops.global_avg_pool2d_backward(gdy, shape), nbytes + gdy.nbytes,
        (lambda: (tg[:, :, None, None] / (H * W)).expand(shape).contiguous()) if torch is not None else None)
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ["CUDA pooling: GB/s = minimum bytes moved / t; fraction of the device copy",
             f"{'case':<44} {'shape':<22} {'GB/s':>8} {'of copy':>8} {'ms':>8} {'torch ms':>9}"]
    for r in rows:
        tm = "" if r["torch_ms"] is None else f"{r['torch_ms']:9.3f}"
        lines.append(f"{r['name']:<44} {r['shape']:<22} {r['gbs']:8.0f} {r['frac_copy']:8.2f} {r['ms']:8.3f} {tm}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    rows = run(args.quick)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
