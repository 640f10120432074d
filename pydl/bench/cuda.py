"""GPU benchmarks of pydl's CUDA kernels against cuBLAS / CuPy and PyTorch CUDA, in one process.

    python -m pydl.bench --device cuda [--quick] [--json FILE]
    python -m pydl.bench.cuda [--quick] [--json FILE]

fp32, TF32 off on every side (CUPY_TF32 unset, torch.backends.cuda.matmul.allow_tf32 = False).
Each case checks its result first, then times with CUDA events (warm-up, repeats, median) and
prints the rate with its formula and the ratio against the anchors measured in the same run:
- SGEMM (pydl.bench.cuda_gemm): TFLOP/s = 2 m n k / t, vs cuBLAS (cupy.matmul) and torch.matmul;
- memory-bound kernels on 16M elements: GB/s = bytes moved / t, vs a device-to-device copy
  (2 x 64 MB per copy) measured in the same run, 10 back-to-back calls per timed sample;
- the 784-256-128-10 MLP train step (batch 128, Adam, sparse cross-entropy, the data already on
  the GPU, the loss read back every step as fit does) vs the same PyTorch CUDA step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np

N_ELEMS = 16 * 2**20  # 16M float32 = 64 MB per array


def _cupy():
    os.environ.setdefault("CUPY_TF32", "0")
    import pydl.cuda
    pydl.cuda.require()
    return pydl.cuda.cupy_module()


def gpu_time(fn, warmup: int = 3, repeats: int = 20, inner: int = 10) -> float:
    """Median seconds per call of fn: CUDA events around `inner` back-to-back calls per sample,
    so the launch cost on the host overlaps the previous call's kernels as in a training loop
    (a call that syncs, like a train step reading its loss, is timed whole either way)."""
    cp = _cupy()
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    samples = []
    for _ in range(repeats):
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        stop.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, stop) / 1e3 / inner)
    return statistics.median(samples)


def _torch_cuda():
    try:
        import torch
    except Exception:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def memory_bound(quick: bool) -> list[dict]:
    """Element-wise, softmax and fused optimizer kernels as a fraction of the copy bandwidth."""
    import pydl
    cp = _cupy()
    reps = 10 if quick else 30
    rng = cp.random.default_rng(0)
    x = rng.standard_normal(N_ELEMS, dtype=cp.float32)
    dst = cp.empty_like(x)
    nbytes = x.nbytes
    t_copy = gpu_time(lambda: cp.copyto(dst, x), repeats=reps)
    copy_gbs = 2 * nbytes / t_copy / 1e9
    rows = [dict(name="device copy", shape="16M f32", gbs=copy_gbs, frac_copy=1.0, ms=t_copy * 1e3)]

    def add(name, fn, arrays_moved, check=None):
        if check is not None:
            err = check()
            if not err < 1e-5:
                raise AssertionError(f"{name}: result differs from the reference by {err}")
        t = gpu_time(fn, repeats=reps)
        gbs = arrays_moved * nbytes / t / 1e9
        rows.append(dict(name=name, shape="16M f32", gbs=gbs, frac_copy=gbs / copy_gbs, ms=t * 1e3))

    ops = pydl.ops
    y = ops.activation(x, "relu")
    add("relu forward", lambda: ops.activation(x, "relu"), 2,
        lambda: float(cp.abs(ops.activation(x, "relu") - cp.maximum(x, 0)).max()))
    add("sigmoid forward", lambda: ops.activation(x, "sigmoid"), 2,
        lambda: float(cp.abs(ops.activation(x, "sigmoid") - 1 / (1 + cp.exp(-x))).max()))
    dy = rng.standard_normal(N_ELEMS, dtype=cp.float32)
    add("relu backward", lambda: ops.activation_backward(dy, x, y, "relu"), 3,
        lambda: float(cp.abs(ops.activation_backward(dy, x, y, "relu") - dy * (x > 0)).max()))
    xs = x.reshape(-1, 1024)

    def softmax_err():
        ref = cp.exp(xs - xs.max(axis=1, keepdims=True))
        ref /= ref.sum(axis=1, keepdims=True)
        return float(cp.abs(ops.activation(xs, "softmax") - ref).max())
    add("softmax rows of 1024", lambda: ops.activation(xs, "softmax"), 2, softmax_err)

    # Adam over 8 tensors totalling 16M elements: param r/w, grad r, m r/w, v r/w = 7 arrays
    sizes = [N_ELEMS // 8] * 8
    params = [rng.standard_normal(n, dtype=cp.float32) for n in sizes]
    grads = [rng.standard_normal(n, dtype=cp.float32) for n in sizes]
    opt = pydl.optimizers.Adam(learning_rate=1e-3)
    pairs = list(zip(grads, params))
    opt.apply_gradients(pairs)
    add("Adam update, 8 tensors (fused)", lambda: opt.apply_gradients(pairs), 7)
    sgd = pydl.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
    sgd.apply_gradients(pairs)
    add("SGD momentum update, 8 tensors", lambda: sgd.apply_gradients(pairs), 5)
    return rows


def _torch_train_step(torch, net, opt, x, y):
    """A PyTorch CUDA train step (zero_grad, forward, cross-entropy on logits, backward, update,
    the loss read back as pydl's step reads its loss)."""
    dev = torch.device("cuda")
    lossf = torch.nn.CrossEntropyLoss()
    tx, ty = torch.as_tensor(x, device=dev), torch.as_tensor(y, device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def mlp_step(quick: bool, batch: int = 128) -> list[dict]:
    """Seconds per train step of the 784-256-128-10 MLP, pydl on the GPU vs PyTorch CUDA."""
    import pydl
    cp = _cupy()
    rng = np.random.default_rng(0)
    n = batch * 8
    x = rng.standard_normal((n, 784)).astype(np.float32)
    y = rng.integers(0, 10, n)
    model = pydl.Sequential([pydl.layers.Dense(256, activation="relu", input_shape=(784,)),
                             pydl.layers.Dense(128, activation="relu"), pydl.layers.Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(1e-3))
    model.to("cuda")
    xg, yg = cp.asarray(x[:batch]), cp.asarray(y[:batch])
    # the step fit runs for every batch: forward, loss (read back), backward, fused Adam
    step = lambda: model._train_step([xg], [yg])  # noqa: E731
    step()
    reps = 30 if quick else 100
    t_pydl = gpu_time(step, warmup=5, repeats=reps, inner=5)
    row = dict(name="MLP 784-256-128-10 train step", shape=f"B{batch} Adam", pydl_ms=t_pydl * 1e3)
    torch = _torch_cuda()
    if torch is not None:
        dev = torch.device("cuda")
        net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                  torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(dev)
        tstep = _torch_train_step(torch, net, torch.optim.Adam(net.parameters(), lr=1e-3), x[:batch], y[:batch])
        t_torch = gpu_time(tstep, warmup=5, repeats=reps, inner=5)
        row.update(torch_ms=t_torch * 1e3, ratio_torch=t_torch / t_pydl)
    return [row]


def cnn_step(quick: bool) -> list[dict]:
    """Milliseconds per train step of the documents' CNN (B128 of 1x28x28, Adam), pydl on the GPU vs
    PyTorch CUDA (cuDNN, TF32 off), from the same weights; first one step is checked against pydl's
    CPU step."""
    from . import bench_cnn as bc
    cp = _cupy()
    x, y, weights = bc.make_data(0)
    model = bc.pydl_model(weights)
    model.to("cuda")
    xg, yg = cp.asarray(x), cp.asarray(y)
    step = lambda: model._train_step([xg], [yg])  # noqa: E731
    step()
    ref = bc.pydl_model(weights)
    ref._train_step([x], [y])
    err = max(float(np.max(np.abs(g - c)) / (np.max(np.abs(c)) + 1e-30))
              for g, c in zip(model.get_weights(), ref.get_weights()))
    if not err < 1e-3:
        raise AssertionError(f"CNN step on the GPU differs from the CPU step by {err:.2e}")
    reps = 20 if quick else 60
    t_pydl = gpu_time(step, warmup=3, repeats=reps, inner=3)
    row = dict(name="documents' CNN train step", shape=f"B{bc.BATCH} 1x28x28 Adam", pydl_ms=t_pydl * 1e3,
               max_rel_err=err)
    torch = _torch_cuda()
    if torch is not None:
        dev = torch.device("cuda")
        net, _ = bc.torch_net(weights)
        net = net.to(dev)
        topt = torch.optim.Adam(net.parameters(), lr=bc.LR, betas=(bc.B1, bc.B2), eps=bc.EPS)
        t_torch = gpu_time(_torch_train_step(torch, net, topt, x, y), warmup=3, repeats=reps, inner=3)
        row.update(torch_ms=t_torch * 1e3, ratio_torch=t_torch / t_pydl)
    return [row]


# Families with their own module (pydl/bench/cuda_<family>.py): run(quick) -> rows, format_rows(rows).
FAMILIES = ("gemm", "conv", "pool", "rnn")
SECTIONS = ("gemm", "memory", "mlp", "conv", "pool", "rnn")


def _family(name: str):
    import importlib
    return importlib.import_module(f"{__package__}.cuda_{name}")


def _run_section(name: str, quick: bool) -> list[dict]:
    if name == "memory":
        return memory_bound(quick)
    if name == "mlp":
        return mlp_step(quick) + cnn_step(quick)
    return _family(name).run(quick=quick)


def run(quick: bool = False, on_section=None) -> dict:
    """Every section in turn. A section that raises is recorded as {"error": message} and the
    others still run; on_section(name, rows_or_error, res) is called as each one finishes."""
    import pydl
    out = {"device": pydl.cuda.device_info()}
    torch = _torch_cuda()
    out["torch"] = None if torch is None else torch.__version__
    for name in SECTIONS:
        try:
            out[name] = _run_section(name, quick)
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        if on_section is not None:
            on_section(name, out[name], out)
    return out


def format_header(res: dict) -> str:
    return (f"GPU: {res['device'].get('name')} (cc {res['device'].get('compute_capability')}), "
            f"CuPy {res['device'].get('cupy')}, PyTorch {res.get('torch')}; fp32, TF32 off")


def format_section(name: str, rows) -> str:
    if isinstance(rows, dict) and "error" in rows:
        return f"{name}: FAILED: {rows['error']}"
    if name == "memory":
        lines = ["Memory-bound kernels: GB/s = bytes read + written / t; fraction of the device copy"]
        for r in rows:
            lines.append(f"{r['name']:<34} {r['shape']:<8} {r['gbs']:8.0f} GB/s {r['frac_copy']:6.2f} of copy "
                         f"({r['ms']:.3f} ms)")
        return "\n".join(lines)
    if name == "mlp":
        lines = []
        for r in rows:
            extra = f", PyTorch {r['torch_ms']:.3f} ms, pydl/PyTorch speed {r['ratio_torch']:.2f}x" \
                if "torch_ms" in r else ""
            lines.append(f"{r['name']} ({r['shape']}): pydl {r['pydl_ms']:.3f} ms{extra}")
        return "\n".join(lines)
    return _family(name).format_rows(rows)


def format_results(res: dict) -> str:
    parts = [format_header(res)]
    parts += [format_section(name, res[name]) for name in SECTIONS if res.get(name)]
    return "\n\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pydl.bench.cuda", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    import pydl.cuda
    if not pydl.cuda.is_available():
        print(f"pydl.bench --device cuda: {pydl.cuda.device_info()['reason']}", file=sys.stderr)
        return 2
    torch = _torch_cuda()
    print(format_header({"device": pydl.cuda.device_info(), "torch": torch and torch.__version__}), flush=True)

    def show(name, rows, _res):
        print("\n" + format_section(name, rows), flush=True)

    res = run(quick=args.quick, on_section=show)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1, default=str)
    failed = [name for name in SECTIONS if isinstance(res.get(name), dict)]
    if failed:
        print(f"\nfailed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
