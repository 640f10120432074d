"""One MLP training step: pydl vs PyTorch CPU vs plain NumPy.

Network 784-256-128-10 (relu, relu, softmax), sparse categorical cross-entropy, batch 128, Adam.
A step is forward + loss + backward + optimizer update. pydl is timed through the same function
`Sequential.fit` runs per batch (`model._train_step`: no per-call input validation); PyTorch as
zero_grad + forward + CrossEntropyLoss + backward + Adam.step(); NumPy as a hand-written step
(matmuls on OpenBLAS, softmax-CE gradient p - y, Adam in vectorised NumPy).

Correctness first: from the same weights, one step of each must give the same updated weights.
Then the median step time in ms for each thread count (each library limited to it; the libraries
timed in alternating rounds, the median of the rounds reported), and a
per-op profile of the pydl step, which says where its time goes.

    python -m pydl.bench.bench_mlp [--quick]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from . import common  # noqa: E402
from .common import HAVE_TORCH, Row, alternate, print_rows, torch  # noqa: E402

import pydl  # noqa: E402
from pydl.layers import Dense  # noqa: E402
from pydl.ops import nn  # noqa: E402

SIZES = (784, 256, 128, 10)
BATCH = 128
LR = 1e-3
B1, B2, EPS = 0.9, 0.999, 1e-7


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    weights = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-lim, lim, (fan_in, fan_out)).astype(np.float32))
        weights.append((rng.standard_normal(fan_out) * 0.01).astype(np.float32))
    return x, y, weights


# -- pydl -------------------------------------------------------------------------------------
def pydl_model(weights):
    model = pydl.Sequential([Dense(SIZES[1], activation="relu", input_shape=(SIZES[0],)),
                             Dense(SIZES[2], activation="relu"),
                             Dense(SIZES[3], activation="softmax")])
    model.compile("sparse_categorical_crossentropy", pydl.optimizers.Adam(LR, beta_1=B1, beta_2=B2, epsilon=EPS))
    model.set_weights([w.copy() for w in weights])
    return model


# -- plain NumPy ------------------------------------------------------------------------------
class NumpyMLP:
    def __init__(self, weights):
        self.p = [w.copy() for w in weights]
        self.m = [np.zeros_like(w) for w in weights]
        self.v = [np.zeros_like(w) for w in weights]
        self.t = 0

    def step(self, x, y):
        W1, b1, W2, b2, W3, b3 = self.p
        h1 = np.maximum(x @ W1 + b1, 0)
        h2 = np.maximum(h1 @ W2 + b2, 0)
        z = h2 @ W3 + b3
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        n = x.shape[0]
        loss = -np.mean(np.log(p[np.arange(n), y]))
        dz = p
        dz[np.arange(n), y] -= 1
        dz /= n
        g3, gb3 = h2.T @ dz, dz.sum(0)
        d2 = (dz @ W3.T) * (h2 > 0)
        g2, gb2 = h1.T @ d2, d2.sum(0)
        d1 = (d2 @ W2.T) * (h1 > 0)
        g1, gb1 = x.T @ d1, d1.sum(0)
        self.t += 1
        lr_t = LR * np.sqrt(1 - B2 ** self.t) / (1 - B1 ** self.t)
        for w, g, m, v in zip(self.p, (g1, gb1, g2, gb2, g3, gb3), self.m, self.v):
            m *= B1
            m += (1 - B1) * g
            v *= B2
            v += (1 - B2) * (g * g)
            w -= lr_t * m / (np.sqrt(v) + EPS)
        return loss


# -- PyTorch ----------------------------------------------------------------------------------
def torch_model(weights):
    net = torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(),
                              torch.nn.Linear(SIZES[1], SIZES[2]), torch.nn.ReLU(),
                              torch.nn.Linear(SIZES[2], SIZES[3]))
    with torch.no_grad():
        for i, lin in enumerate(l for l in net if isinstance(l, torch.nn.Linear)):
            lin.weight.copy_(torch.from_numpy(weights[2 * i].T.copy()))
            lin.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(B1, B2), eps=EPS)
    lossf = torch.nn.CrossEntropyLoss()

    def step(xt, yt):
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(xt), yt)
        loss.backward()
        opt.step()
        return loss

    def weights_now():
        out = []
        for lin in (l for l in net if isinstance(l, torch.nn.Linear)):
            out += [lin.weight.detach().numpy().T, lin.bias.detach().numpy()]
        return out

    return step, weights_now


def check_correctness(x, y, weights):
    model = pydl_model(weights)
    ref = NumpyMLP(weights)
    for _ in range(3):
        model._train_step(x, y)
        ref.step(x, y)
    for a, b in zip(model.get_weights(), ref.p):
        common.assert_close(a, b, rtol=1e-3, atol=2e-5, what="pydl vs NumPy after 3 Adam steps")
    if HAVE_TORCH:
        # Loss and every gradient against autograd. (Updated weights are not compared: Adam's
        # first step moves every weight by ~lr * sign(g), so float32 rounding of a near-zero
        # gradient flips whole steps; and Keras and PyTorch place epsilon differently.)
        model = pydl_model(weights)
        value = model._gradients([x], [y])[0]
        grads = [l.grads[k] for l in model.layers for k in l.params]
        tnet = torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(),
                                   torch.nn.Linear(SIZES[1], SIZES[2]), torch.nn.ReLU(),
                                   torch.nn.Linear(SIZES[2], SIZES[3])).double()
        lins = [l for l in tnet if isinstance(l, torch.nn.Linear)]
        with torch.no_grad():
            for i, lin in enumerate(lins):
                lin.weight.copy_(torch.from_numpy(weights[2 * i].T.astype(np.float64)))
                lin.bias.copy_(torch.from_numpy(weights[2 * i + 1].astype(np.float64)))
        tl = torch.nn.functional.cross_entropy(tnet(torch.from_numpy(x.astype(np.float64))), torch.from_numpy(y))
        tl.backward()
        common.assert_close(value, tl.item(), rtol=1e-5, atol=1e-6, what="loss vs PyTorch")
        tgrads = []
        for lin in lins:
            tgrads += [lin.weight.grad.numpy().T, lin.bias.grad.numpy()]
        for g, tg in zip(grads, tgrads):
            common.assert_close(g, tg, rtol=1e-3, atol=1e-3 * np.abs(tg).max(), what="gradients vs PyTorch")


def profile_pydl(model, x, y, repeats=50) -> dict:
    """Median microseconds per part of the pydl step (the calls Model._train_step makes)."""
    layers = model.layers
    model._backward_plan()  # sets each call's need_input_grad (the first layer computes no dx)
    ctxs = [step[1] for step in model._plan]  # the model's per-call contexts (one chain here)
    parts: dict[str, list] = {}

    def tick(name, t0):
        parts.setdefault(name, []).append((time.perf_counter() - t0) * 1e6)

    for _ in range(repeats):
        t0 = time.perf_counter()
        for l in layers:
            l.zero_grads()
        tick("zero grads", t0)
        out = x
        for i, l in enumerate(layers):
            t0 = time.perf_counter()
            out = l.forward(out, training=True, ctx=ctxs[i])
            tick(f"forward {i} {l.name} ({l.activation})", t0)
        t0 = time.perf_counter()
        _, grad = nn.loss("sparse_categorical_crossentropy", y, layers[-1].fused_logits(ctxs[-1]), from_logits=True)
        tick("loss + dL/dlogits (fused softmax-CE)", t0)
        t0 = time.perf_counter()
        grad = layers[-1].backward_logits(grad, ctx=ctxs[-1])
        tick(f"backward {len(layers) - 1} {layers[-1].name}", t0)
        for i in range(len(layers) - 2, -1, -1):
            t0 = time.perf_counter()
            grad = layers[i].backward(grad, ctx=ctxs[i])
            tick(f"backward {i} {layers[i].name}" + (" (no dx)" if grad is None else ""), t0)
        t0 = time.perf_counter()
        model.optimizer.apply_gradients(model._grad_pairs())
        tick("Adam update (6 tensors)", t0)
    return {k: float(np.median(v)) for k, v in parts.items()}


def run(quick: bool = False) -> list:
    x, y, weights = make_data()
    check_correctness(x, y, weights)
    flop = 3 * 2 * BATCH * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))  # fwd + 2 bwd GEMMs
    rows = []
    thread_list = common.thread_list([1] if quick else [1, 2])
    for n in thread_list:
        with common.threads(n):
            model = pydl_model(weights)
            ref = NumpyMLP(weights)
            fns = {"pydl": lambda: model._train_step(x, y), "numpy": lambda: ref.step(x, y)}
            if HAVE_TORCH:
                step, _ = torch_model(weights)
                xt, yt = torch.from_numpy(x), torch.from_numpy(y)
                fns["torch"] = lambda: step(xt, yt)
            t = alternate(fns, rounds=1 if quick else 5, repeats=3, min_time=0.05, settle=0.1)
            t_pydl = t.pop("pydl")
            base = {k: v * 1e3 for k, v in t.items()}
            rows.append(Row("mlp", f"784-256-128-10 b{BATCH} Adam step", n, "ms", t_pydl * 1e3, base,
                            note=f"{flop / t_pydl / 1e9:.1f} GFLOP/s in the GEMMs"))
            prof = profile_pydl(pydl_model(weights), x, y, repeats=5 if quick else 50)
            total = sum(prof.values())
            print(f"\npydl step profile, {n} thread(s) (median us per part; sum {total:.0f} us, "
                  f"whole step {t_pydl * 1e6:.0f} us):")
            for k, v in prof.items():
                print(f"  {k:44s} {v:8.1f} us  {100 * v / total:5.1f}%")
    print_rows(rows, "MLP training step (ms, lower is better)",
               "forward + loss + backward + Adam; GEMM FLOPs = 6 * batch * sum(in*out)")
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv or common.QUICK)
