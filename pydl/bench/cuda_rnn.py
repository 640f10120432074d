"""GPU benchmark of the recurrent ops: an LSTM over a whole sequence, pydl's CUDA kernels vs
PyTorch CUDA (cuDNN), fp32 with TF32 off on both sides.

    python -m pydl.bench.cuda_rnn [--quick]

LSTM T100 B64 I256 H512 (batch-first input (B, T, I)): forward, and forward + backward (the
gradients of every input and weight from the gradient of every output). The weights are shared
(PyTorch weight_ih = W^T, weight_hh = U^T, bias_ih = b, bias_hh = 0), the outputs and gradients
are compared first, then each side is timed with CUDA events (pydl.bench.cuda.gpu_time).
Rows: pydl_ms, torch_ms, ratio_torch = pydl time / cuDNN time (the target is <= 2 for
forward + backward), max_rel_err of the outputs (forward) or of dW (forward + backward).
"""
from __future__ import annotations

import argparse

import numpy as np

from .cuda import _cupy, _torch_cuda, gpu_time

SHAPE = dict(T=100, B=64, I=256, H=512)


def _rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def run(quick: bool = False) -> list[dict]:
    from pydl.ops import rnn_backward, rnn_forward
    cp = _cupy()
    T, B, I, H = SHAPE["T"], SHAPE["B"], SHAPE["I"], SHAPE["H"]
    rng = np.random.default_rng(0)
    k = 1.0 / np.sqrt(H)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    W = rng.uniform(-k, k, (I, 4 * H)).astype(np.float32)
    U = rng.uniform(-k, k, (H, 4 * H)).astype(np.float32)
    b = rng.uniform(-k, k, 4 * H).astype(np.float32)
    dout = rng.standard_normal((B, T, H)).astype(np.float32)
    xg, Wg, Ug, bg, dg = (cp.asarray(a) for a in (x, W, U, b, dout))

    def fwd():
        return rnn_forward("lstm", xg, Wg, Ug, bg)

    def fwd_bwd():
        out, _, _, cache = rnn_forward("lstm", xg, Wg, Ug, bg)
        return out, rnn_backward("lstm", dg, None, None, cache)

    reps, inner = (5, 2) if quick else (15, 3)
    shape = f"T{T} B{B} I{I} H{H}"
    rows = [dict(name="LSTM forward", shape=shape, pydl_ms=gpu_time(fwd, warmup=2, repeats=reps, inner=inner) * 1e3),
            dict(name="LSTM forward+backward", shape=shape,
                 pydl_ms=gpu_time(fwd_bwd, warmup=2, repeats=reps, inner=inner) * 1e3)]
    torch = _torch_cuda()
    if torch is None:
        return rows
    dev = torch.device("cuda")
    lstm = torch.nn.LSTM(I, H, batch_first=True).to(dev)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.as_tensor(W.T.copy(), device=dev))
        lstm.weight_hh_l0.copy_(torch.as_tensor(U.T.copy(), device=dev))
        lstm.bias_ih_l0.copy_(torch.as_tensor(b, device=dev))
        lstm.bias_hh_l0.zero_()
    tx = torch.as_tensor(x, device=dev).requires_grad_(True)
    tdout = torch.as_tensor(dout, device=dev)

    def tfwd():
        with torch.no_grad():
            return lstm(tx)[0]

    def tfwd_bwd():
        lstm.zero_grad(set_to_none=True)
        tx.grad = None
        out = lstm(tx)[0]
        out.backward(tdout)
        return out

    # results first: the same LSTM on both sides
    out_p, grads = fwd_bwd()
    out_t = tfwd_bwd()
    err_fwd = _rel_err(cp.asnumpy(out_p), out_t.detach().cpu().numpy())
    err_dw = _rel_err(cp.asnumpy(grads["dW"]), lstm.weight_ih_l0.grad.T.cpu().numpy())
    t_f = gpu_time(tfwd, warmup=2, repeats=reps, inner=inner)
    t_fb = gpu_time(tfwd_bwd, warmup=2, repeats=reps, inner=inner)
    for row, t, err in ((rows[0], t_f, err_fwd), (rows[1], t_fb, err_dw)):
        row.update(torch_ms=t * 1e3, ratio_torch=row["pydl_ms"] / (t * 1e3), max_rel_err=err)
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'case':<24} {'shape':<20} {'pydl ms':>9} {'cuDNN ms':>9} {'pydl/cuDNN':>11} {'err':>8}"]
    for r in rows:
        fmt = lambda v, f: format("-", ">" + f.split(".")[0]) if v is None else format(v, f)  # noqa: E731
        lines.append(f"{r['name']:<24} {r['shape']:<20} {r['pydl_ms']:9.3f} {fmt(r.get('torch_ms'), '9.3f')} "
                     f"{fmt(r.get('ratio_torch'), '11.2f')} {fmt(r.get('max_rel_err'), '8.1e')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pydl.bench.cuda_rnn", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args(argv)
    import pydl.cuda
    if not pydl.cuda.is_available():
        print(f"CUDA not available: {pydl.cuda.device_info().get('reason')}")
        return 1
    print(format_rows(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
