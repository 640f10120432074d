"""One Transformer encoder block training step: pydl vs PyTorch CPU.

Block d 256, 8 heads, feed-forward 1024 (relu), post-norm, dropout 0, on (B 32, T 128, d 256);
MSE loss against a fixed target, Adam. pydl: `TransformerEncoder` in a functional Model, timed
through `model._train_step` (what `fit` runs per batch); PyTorch:
`nn.TransformerEncoderLayer(256, 8, 1024, dropout=0, batch_first=True)` in training mode, as
zero_grad + forward + MSELoss + backward + Adam.step().

Correctness first: from the same weights the two blocks must give the same output, loss and
gradients. Then the median step time for each thread count and a per-part profile of the pydl
step (where its time goes).

    python bench/bench_transformer.py [--quick]

FLOPs per step (the GEMMs and attention products, forward + 2x backward): 3 * 2 * B T (4 d^2 +
2 d ff + 2 T d).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from . import common  # noqa: E402
from .common import HAVE_TORCH, Row, print_rows, timeit, torch  # noqa: E402

import pydl  # noqa: E402
from pydl.layers import TransformerEncoder  # noqa: E402
from pydl.ops import attention as attn_ops  # noqa: E402
from pydl.ops import nn  # noqa: E402

D, HEADS, FF, T, BATCH = 256, 8, 1024, 128, 32
LR = 1e-3
EPS = 1e-7


def make_data(seed=0, batch=BATCH, t=T):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, t, D)).astype(np.float32)
    y = rng.standard_normal((batch, t, D)).astype(np.float32)
    return x, y


def pydl_model(seed=0):
    pydl.seed(seed)
    inp = pydl.Input(shape=(None, D))
    out = TransformerEncoder(HEADS, ff_dim=FF, dropout=0.0, norm_first=False)(inp)
    model = pydl.Model(inp, out)
    model.compile("mse", pydl.optimizers.Adam(LR, epsilon=EPS))
    return model


def torch_block(model):
    """nn.TransformerEncoderLayer with the pydl block's weights (float32)."""
    enc = model.layers[0]
    P = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in enc.params.items()}
    t = torch.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
    with torch.no_grad():
        sa = t.self_attn
        sa.in_proj_weight.copy_(torch.cat([P["attention.query_kernel"].T, P["attention.key_kernel"].T,
                                           P["attention.value_kernel"].T]))
        sa.in_proj_bias.copy_(torch.cat([P["attention.query_bias"], P["attention.key_bias"],
                                         P["attention.value_bias"]]))
        sa.out_proj.weight.copy_(P["attention.output_kernel"].T)
        sa.out_proj.bias.copy_(P["attention.output_bias"])
        t.linear1.weight.copy_(P["ffn1.W"].T)
        t.linear1.bias.copy_(P["ffn1.b"])
        t.linear2.weight.copy_(P["ffn2.W"].T)
        t.linear2.bias.copy_(P["ffn2.b"])
        for n in ("norm1", "norm2"):
            getattr(t, n).weight.copy_(P[f"{n}.gamma"])
            getattr(t, n).bias.copy_(P[f"{n}.beta"])
    t.train()
    opt = torch.optim.Adam(t.parameters(), lr=LR, eps=EPS)
    lossf = torch.nn.MSELoss()

    def step(xt, yt):
        opt.zero_grad(set_to_none=True)
        loss = lossf(t(xt), yt)
        loss.backward()
        opt.step()
        return loss

    return t, step


def check_correctness():
    x, y = make_data(1, batch=4, t=32)
    model = pydl_model()
    if not HAVE_TORCH:
        return
    t, _ = torch_block(model)
    out = model.predict(x)
    with torch.no_grad():
        tout = t(torch.from_numpy(x)).numpy()
    common.assert_close(out, tout, rtol=1e-4, atol=1e-4, what="block output vs PyTorch")
    value = model._gradients([x], [y])[0]
    xt = torch.from_numpy(x)
    tl = torch.nn.functional.mse_loss(t(xt), torch.from_numpy(y))
    tl.backward()
    common.assert_close(value, tl.item(), rtol=1e-5, atol=1e-6, what="loss vs PyTorch")
    enc = model.layers[0]
    pairs = [("ffn1.W", t.linear1.weight.grad.T), ("ffn2.W", t.linear2.weight.grad.T),
             ("attention.output_kernel", t.self_attn.out_proj.weight.grad.T),
             ("attention.query_kernel", t.self_attn.in_proj_weight.grad[:D].T),
             ("attention.value_kernel", t.self_attn.in_proj_weight.grad[2 * D:].T),
             ("norm1.gamma", t.norm1.weight.grad), ("norm2.beta", t.norm2.bias.grad)]
    for k, tg in pairs:
        tg = tg.numpy()
        common.assert_close(enc.grads[k], tg, rtol=2e-3, atol=2e-3 * np.abs(tg).max(), what=f"grad {k} vs PyTorch")


def profile_pydl(model, x, y, repeats=10) -> dict:
    """Median milliseconds per part of the pydl step: the block's sub-layers one by one (their own
    forward/backward calls), the attention layer split into projections, head reshapes, the fused
    kernel and the output projection, then loss and Adam."""
    enc = model.layers[0]
    mha = enc.attention
    p = mha.params
    parts: dict[str, list] = {}

    def tick(name, t0):
        parts.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)

    B, L, _ = x.shape
    hk = HEADS * mha.key_dim
    ctxs = {n: getattr(enc, n).new_context() for n in ("norm1", "norm2", "ffn1", "ffn2")}
    for _ in range(repeats):
        # attention layer, by parts (the same calls MultiHeadAttention.forward/backward make)
        t0 = time.perf_counter()
        W = np.concatenate([p["query_kernel"], p["key_kernel"], p["value_kernel"]], axis=1)
        b = np.concatenate([p["query_bias"], p["key_bias"], p["value_bias"]])
        x2 = x.reshape(B * L, D)
        z = nn.dense_forward(x2, W, b, "linear")
        tick("attn fwd: QKV projection (1 GEMM)", t0)
        t0 = time.perf_counter()
        q, k, v = (np.ascontiguousarray(mha._heads(z[:, i * hk:(i + 1) * hk], B, L, mha.key_dim)) for i in range(3))
        tick("attn fwd: split heads (3 copies)", t0)
        t0 = time.perf_counter()
        o, lse = attn_ops.attention_forward(q, k, v)
        tick("attn fwd: fused attention kernel", t0)
        t0 = time.perf_counter()
        heads = mha._merge(o, B, L)
        tick("attn fwd: merge heads (copy)", t0)
        t0 = time.perf_counter()
        yo = nn.dense_forward(heads, p["output_kernel"], p["output_bias"], "linear")
        tick("attn fwd: output projection", t0)
        dy = yo  # any array of the right shape
        t0 = time.perf_counter()
        dheads, _, _ = nn.dense_backward(dy, heads, p["output_kernel"], yo, "linear")
        tick("attn bwd: output projection", t0)
        t0 = time.perf_counter()
        hd = np.ascontiguousarray(mha._heads(dheads, B, L, mha.value_dim))
        tick("attn bwd: split heads (copy)", t0)
        t0 = time.perf_counter()
        dq, dk, dv = attn_ops.attention_backward(q, k, v, o, lse, hd)
        tick("attn bwd: fused attention kernel", t0)
        t0 = time.perf_counter()
        dz = np.empty((B * L, 3 * hk), np.float32)
        dz5 = dz.reshape(B, L, 3, HEADS, mha.key_dim)
        for i, g in enumerate((dq, dk, dv)):
            np.copyto(dz5[:, :, i], g.transpose(0, 2, 1, 3))
        tick("attn bwd: merge heads into dQKV (3 copies)", t0)
        t0 = time.perf_counter()
        nn.dense_backward(dz, x2, W, z, "linear")
        tick("attn bwd: QKV projection", t0)
        # the rest of the block
        t0 = time.perf_counter()
        h = enc.norm1.forward(x + yo.reshape(x.shape), True, ctx=ctxs["norm1"])
        tick("residual add + layer norm 1 fwd", t0)
        t0 = time.perf_counter()
        f = enc.ffn2.forward(enc.ffn1.forward(h, True, ctx=ctxs["ffn1"]), True, ctx=ctxs["ffn2"])
        tick("feed-forward fwd (2 GEMMs)", t0)
        t0 = time.perf_counter()
        out = enc.norm2.forward(h + f, True, ctx=ctxs["norm2"])
        tick("residual add + layer norm 2 fwd", t0)
        t0 = time.perf_counter()
        _, g = nn.loss("mse", y, out)
        tick("loss", t0)
        t0 = time.perf_counter()
        d2 = enc.norm2.backward(g, ctx=ctxs["norm2"])
        tick("layer norm 2 bwd", t0)
        t0 = time.perf_counter()
        d = enc.ffn1.backward(enc.ffn2.backward(d2, ctx=ctxs["ffn2"]), ctx=ctxs["ffn1"])
        tick("feed-forward bwd (4 GEMMs)", t0)
        t0 = time.perf_counter()
        enc.norm1.backward(d2 + d, ctx=ctxs["norm1"])
        tick("residual add + layer norm 1 bwd", t0)
        enc.zero_grads()
        model._train_step(x, y)  # fills the grads for the optimizer timing below
        t0 = time.perf_counter()
        model.optimizer.apply_gradients(model._grad_pairs())
        tick("Adam update (16 tensors)", t0)
    return {k: float(np.median(v)) for k, v in parts.items()}


def run(quick: bool = False) -> list:
    quick = quick or common.QUICK
    check_correctness()
    batch = 8 if quick else BATCH  # --quick: a quarter of the work, one round, no profile
    x, y = make_data(batch=batch)
    flop = 3 * 2 * batch * T * (4 * D * D + 2 * D * FF + 2 * T * D)
    rows = []
    for n in [2]:
        with common.threads(n):
            model = pydl_model()
            base = {}
            if HAVE_TORCH:
                _, step = torch_block(model)
                xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            t_pydl = timeit(lambda: model._train_step(x, y), warmup=2, repeats=7, min_time=0.0)
            if HAVE_TORCH:
                base["torch"] = timeit(lambda: step(xt, yt), warmup=2, repeats=7, min_time=0.0) * 1e3
            if not quick:  # interleave a second round so that both libraries see the same machine load
                t_pydl = min(t_pydl, timeit(lambda: model._train_step(x, y), warmup=0, repeats=7, min_time=0.0))
                if HAVE_TORCH:
                    base["torch"] = min(base["torch"],
                                        timeit(lambda: step(xt, yt), warmup=0, repeats=7, min_time=0.0) * 1e3)
            rows.append(Row("transformer", f"encoder block d{D} h{HEADS} ff{FF} T{T} B{batch} Adam step", n, "ms",
                            t_pydl * 1e3, base, note=f"{flop / t_pydl / 1e9:.1f} GFLOP/s"))
            if quick:
                continue
            prof = profile_pydl(pydl_model(), x, y, repeats=7)
            total = sum(prof.values())
            print(f"\npydl step profile, {n} thread(s) (median ms per part; sum {total:.1f} ms, whole step "
                  f"{t_pydl * 1e3:.1f} ms):")
            for k, v in prof.items():
                print(f"  {k:44s} {v:8.2f} ms  {100 * v / total:5.1f}%")
    print_rows(rows, "Transformer encoder block training step (ms, lower is better)",
               "forward + MSE + backward + Adam; FLOPs = 6 B T (4 d^2 + 2 d ff + 2 T d)")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    run(quick="--quick" in sys.argv or common.QUICK)
