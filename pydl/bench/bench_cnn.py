"""One training step of the documents' CNN: pydl vs PyTorch CPU vs plain NumPy.

Network: Conv2D(32, 3, "same", relu) -> MaxPool2D(2) -> Conv2D(64, 3, "same", relu) -> MaxPool2D(2)
-> Flatten -> Dense(10, softmax); sparse categorical cross-entropy, Adam, batch 128 of (1, 28, 28)
in NCHW. A step is forward + loss + backward + optimizer update. pydl is timed through the same
function `Model.fit` runs per batch (`model._train_step`); PyTorch as zero_grad + forward +
CrossEntropyLoss + backward + Adam.step(); NumPy as a hand-written step (im2col convolutions on
OpenBLAS matmuls, reshaped 2x2 max-pool, fused softmax-CE gradient p - y, vectorised Adam).

Correctness first, from the same weights: pydl's loss and every gradient against float64 PyTorch
autograd; the weights after one Adam step against PyTorch (its epsilon rescaled to Keras's
placement for step 1) and after three steps against the NumPy step (same Keras form of Adam).
Then the median step time in ms for each thread count (each library limited to it; pydl and PyTorch
timed in alternating rounds, the median of the rounds reported), and a
per-layer profile of the pydl step, which says where its time goes.

    python -m pydl.bench.bench_cnn [--quick]
"""
from __future__ import annotations

import os
import sys
import time

# Several OpenMP / BLAS pools live in this process (pydl, PyTorch, OpenBLAS): idle workers that
# spin steal the cores from the pool being timed (see bench_conv2d.py). Only effective when this
# file is the entry point, before any pool starts.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

from . import common  # noqa: E402
from .common import HAVE_TORCH, Row, alternate, print_rows, timeit, torch  # noqa: E402

import pydl  # noqa: E402
from pydl.layers import Conv2D, Dense, Flatten, MaxPool2D  # noqa: E402
from pydl.ops import nn  # noqa: E402

BATCH, C0, HW, K1, K2, CLASSES = 128, 1, 28, 32, 64, 10
FLAT = K2 * (HW // 4) * (HW // 4)
LR = 1e-3
B1, B2, EPS = 0.9, 0.999, 1e-7


def make_data(seed=0):
    """x, y and the weights [W1, b1, W2, b2, W3, b3] in pydl's layouts (conv W (K, C, R, S), dense (in, out))."""
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, C0, HW, HW), dtype=np.float32)
    y = rng.integers(0, CLASSES, BATCH)

    def glorot(shape, fan_in, fan_out):
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-lim, lim, shape).astype(np.float32)

    def bias(n):
        return (rng.standard_normal(n) * 0.01).astype(np.float32)

    weights = [glorot((K1, C0, 3, 3), 9 * C0, 9 * K1), bias(K1),
               glorot((K2, K1, 3, 3), 9 * K1, 9 * K2), bias(K2),
               glorot((FLAT, CLASSES), FLAT, CLASSES), bias(CLASSES)]
    return x, y, weights


# -- pydl -------------------------------------------------------------------------------------
def pydl_model(weights):
    model = pydl.Sequential([Conv2D(K1, 3, padding="same", activation="relu", input_shape=(C0, HW, HW)),
                             MaxPool2D(2),
                             Conv2D(K2, 3, padding="same", activation="relu"),
                             MaxPool2D(2),
                             Flatten(),
                             Dense(CLASSES, activation="softmax")])
    model.compile("sparse_categorical_crossentropy", pydl.optimizers.Adam(LR, beta_1=B1, beta_2=B2, epsilon=EPS))
    model.set_weights([w.copy() for w in weights])
    return model


# -- plain NumPy ------------------------------------------------------------------------------
def _im2col(x):
    """cols (C*9, N*H*W) of a 3x3 "same" convolution's input windows, rows ordered (c, r, s)."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N, C, H, W, 3, 3
    return win.transpose(1, 4, 5, 0, 2, 3).reshape(C * 9, N * H * W)


def _col2im(dcols, shape):
    """dx (N, C, H, W) = sum over the 9 taps of dcols scattered back to the padded input."""
    N, C, H, W = shape
    d = dcols.reshape(C, 3, 3, N, H, W)
    dxp = np.zeros((N, C, H + 2, W + 2), dtype=dcols.dtype)
    for r in range(3):
        for s in range(3):
            dxp[:, :, r:r + H, s:s + W] += d[:, r, s].transpose(1, 0, 2, 3)
    return dxp[:, :, 1:-1, 1:-1]


def _maxpool2(x):
    """y = max over 2x2 blocks and the one-hot (first) argmax mask, for even H and W."""
    N, C, H, W = x.shape
    blocks = x.reshape(N, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H // 2, W // 2, 4)
    idx = blocks.argmax(axis=-1)
    y = np.take_along_axis(blocks, idx[..., None], axis=-1)[..., 0]
    return y, idx


def _maxpool2_backward(dy, idx, shape):
    N, C, H, W = shape
    d = np.zeros((N, C, H // 2, W // 2, 4), dtype=dy.dtype)
    np.put_along_axis(d, idx[..., None], dy[..., None], axis=-1)
    return d.reshape(N, C, H // 2, W // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


class NumpyCNN:
    def __init__(self, weights):
        self.p = [w.copy() for w in weights]
        self.m = [np.zeros_like(w) for w in weights]
        self.v = [np.zeros_like(w) for w in weights]
        self.t = 0

    @staticmethod
    def _conv_relu(x, w, b):
        N, _, H, W = x.shape
        cols = _im2col(x)
        z = (w.reshape(w.shape[0], -1) @ cols + b[:, None]).reshape(w.shape[0], N, H, W)
        return np.maximum(z, 0).transpose(1, 0, 2, 3), cols

    @staticmethod
    def _conv_relu_backward(dy, y, x_shape, cols, w, need_dx):
        dz = (dy * (y > 0)).transpose(1, 0, 2, 3).reshape(w.shape[0], -1)  # K, N*H*W
        dw = (dz @ cols.T).reshape(w.shape)
        db = dz.sum(axis=1)
        dx = _col2im(w.reshape(w.shape[0], -1).T @ dz, x_shape) if need_dx else None
        return dx, dw, db

    def step(self, x, y):
        W1, b1, W2, b2, W3, b3 = self.p
        n = x.shape[0]
        a1, cols1 = self._conv_relu(x, W1, b1)
        p1, i1 = _maxpool2(a1)
        a2, cols2 = self._conv_relu(p1, W2, b2)
        p2, i2 = _maxpool2(a2)
        f = p2.reshape(n, -1)
        z = f @ W3 + b3
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        prob = e / e.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(prob[np.arange(n), y]))
        dz = prob
        dz[np.arange(n), y] -= 1
        dz /= n
        g3, gb3 = f.T @ dz, dz.sum(0)
        dp2 = (dz @ W3.T).reshape(p2.shape)
        da2 = _maxpool2_backward(dp2, i2, a2.shape)
        dp1, g2, gb2 = self._conv_relu_backward(da2, a2, p1.shape, cols2, W2, True)
        da1 = _maxpool2_backward(dp1, i1, a1.shape)
        _, g1, gb1 = self._conv_relu_backward(da1, a1, x.shape, cols1, W1, False)
        self.t += 1
        lr_t = LR * np.sqrt(1 - B2 ** self.t) / (1 - B1 ** self.t)
        for w, g, m, v in zip(self.p, (g1, gb1, g2, gb2, g3, gb3), self.m, self.v):
            m *= B1
            m += (1 - B1) * g
            v *= B2
            v += (1 - B2) * (g * g)
            w -= (lr_t * m / (np.sqrt(v) + EPS)).astype(w.dtype)
        return loss


# -- PyTorch ----------------------------------------------------------------------------------
def torch_net(weights, dtype=None):
    net = torch.nn.Sequential(torch.nn.Conv2d(C0, K1, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(K1, K2, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(FLAT, CLASSES))
    if dtype is not None:
        net = net.to(dtype)
    params = [net[0].weight, net[0].bias, net[3].weight, net[3].bias, net[7].weight, net[7].bias]
    with torch.no_grad():
        for p, w, is_dense_w in zip(params, weights, (False,) * 4 + (True, False)):
            p.copy_(torch.from_numpy(np.ascontiguousarray(w.T if is_dense_w else w)))
    return net, params


def torch_weights(params):
    out = [p.detach().numpy() for p in params]
    out[4] = out[4].T
    return out


def torch_step_fn(weights, eps=EPS):
    net, params = torch_net(weights)
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(B1, B2), eps=eps)
    lossf = torch.nn.CrossEntropyLoss()

    def step(xt, yt):
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(xt), yt)
        loss.backward()
        opt.step()
        return loss

    return step, params


def _step_close(got, want, g_ref, what):
    """Adam's first steps move each weight by about lr * sign(m): compare the updates where the
    gradient is clearly away from zero (float32 rounding may flip the sign of a tiny one) or is
    exactly zero (dead relu units and the features they feed: no update on either side)."""
    for a, b, g in zip(got, want, g_ref):
        keep = (np.abs(g) > 1e-4 * np.abs(g).max()) | (g == 0)
        if keep.mean() < 0.9:
            raise AssertionError(f"{what}: too few clearly non-zero gradients to compare ({keep.mean():.2f})")
        common.assert_close(a[keep], b[keep], rtol=0, atol=LR * 2e-3, what=what)


def check_correctness(x, y, weights):
    # 1. Loss and every gradient of pydl (float32) against float64 autograd from the same weights.
    model = pydl_model(weights)
    value = model._gradients([x], [y])[0]
    grads = [l.grads[k] for l in model.layers for k in l.params]
    ref_grads = None
    if HAVE_TORCH:
        net, params = torch_net([w.astype(np.float64) for w in weights], torch.float64)
        tl = torch.nn.functional.cross_entropy(net(torch.from_numpy(x.astype(np.float64))), torch.from_numpy(y))
        tl.backward()
        common.assert_close(value, tl.item(), rtol=1e-5, atol=1e-6, what="loss vs PyTorch (float64)")
        ref_grads = [p.grad.numpy() for p in params]
        ref_grads[4] = ref_grads[4].T
        for g, tg in zip(grads, ref_grads):
            common.assert_close(g, tg, rtol=1e-3, atol=1e-4 * np.abs(tg).max(), what="gradients vs PyTorch")
        # 2. One Adam step: torch's eps sits on sqrt(v / (1 - b2^t)), Keras's on sqrt(v), so
        #    eps_torch = eps / sqrt(1 - b2) makes step 1 the same update.
        model = pydl_model(weights)
        model._train_step(x, y)
        step, tparams = torch_step_fn(weights, eps=EPS / np.sqrt(1 - B2))
        step(torch.from_numpy(x), torch.from_numpy(y))
        _step_close(model.get_weights(), torch_weights(tparams), ref_grads, "weights after 1 Adam step vs PyTorch")
    # 3. Three steps against the NumPy step (same Adam form, same epsilon).
    model = pydl_model(weights)
    ref = NumpyCNN(weights)
    for _ in range(3):
        got = model._train_step(x, y)["loss"]
        want = ref.step(x, y)
        common.assert_close(got, want, rtol=1e-4, atol=1e-5, what="loss vs NumPy step")
    g_ref = ref_grads if ref_grads is not None else grads
    _step_close(model.get_weights(), ref.p, g_ref, "weights after 3 Adam steps vs NumPy")


def profile_pydl(model, x, y, repeats=30) -> dict:
    """Median microseconds per part of the pydl step (the calls Model._train_step makes)."""
    layers = model.layers
    model._backward_plan()  # sets each call's need_input_grad (the first layer computes no dx)
    ctxs = [step[1] for step in model._plan]  # the model's per-call contexts (one chain here)
    parts: dict[str, list] = {}

    def tick(name, t0):
        parts.setdefault(name, []).append((time.perf_counter() - t0) * 1e6)

    def label(i, l):
        extra = f" algo={l.algo_used}" if isinstance(l, Conv2D) else ""
        return f"{i} {l.name}{extra}"

    for _ in range(repeats):
        t0 = time.perf_counter()
        for l in layers:
            l.zero_grads()
        tick("zero grads", t0)
        out = x
        for i, l in enumerate(layers):
            t0 = time.perf_counter()
            out = l.forward(out, training=True, ctx=ctxs[i])
            tick(f"forward  {label(i, l)}", t0)
        t0 = time.perf_counter()
        _, grad = nn.loss("sparse_categorical_crossentropy", y, layers[-1].fused_logits(ctxs[-1]), from_logits=True)
        tick("loss + dL/dlogits (fused softmax-CE)", t0)
        t0 = time.perf_counter()
        grad = layers[-1].backward_logits(grad, ctx=ctxs[-1])
        tick(f"backward {label(len(layers) - 1, layers[-1])}", t0)
        for i in range(len(layers) - 2, -1, -1):
            t0 = time.perf_counter()
            grad = layers[i].backward(grad, ctx=ctxs[i])
            tick(f"backward {label(i, layers[i])}" + (" (no dx)" if grad is None else ""), t0)
        t0 = time.perf_counter()
        model.optimizer.apply_gradients(model._grad_pairs())
        tick("Adam update (6 tensors)", t0)
    return {k: float(np.median(v)) for k, v in parts.items()}


def run(quick: bool = False) -> list:
    x, y, weights = make_data()
    check_correctness(x, y, weights)
    print("correctness: loss, gradients and Adam steps match PyTorch / NumPy")
    # direct-convolution FLOPs of forward + dx + dW (the first layer's dx is not computed)
    conv1 = 2 * BATCH * HW * HW * K1 * C0 * 9
    conv2 = 2 * BATCH * (HW // 2) ** 2 * K2 * K1 * 9
    flop = 2 * conv1 + 3 * conv2 + 3 * 2 * BATCH * FLAT * CLASSES
    rows = []
    thread_list = common.thread_list([1] if quick else [1, 2])
    for n in thread_list:
        with common.threads(n):
            model = pydl_model(weights)
            fns = {"pydl": lambda: model._train_step(x, y)}
            if HAVE_TORCH:
                step, _ = torch_step_fn(weights)
                xt, yt = torch.from_numpy(x), torch.from_numpy(y)
                fns["torch"] = lambda: step(xt, yt)
            t = alternate(fns, rounds=1 if quick else 5, repeats=3, min_time=0.1, settle=0.1)
            t_pydl = t.pop("pydl")
            base = {k: v * 1e3 for k, v in t.items()}
            ref = NumpyCNN(weights)  # ~10x slower than the others: timed once, after them
            base["numpy"] = timeit(lambda: ref.step(x, y), repeats=3 if not common.QUICK else 1) * 1e3
            rows.append(Row("cnn", f"conv32-pool-conv64-pool-dense10 b{BATCH} 28x28 Adam step", n, "ms",
                            t_pydl * 1e3, base, note=f"{flop / t_pydl / 1e9:.1f} GFLOP/s (direct-conv FLOPs)"))
            if quick:  # --quick: no per-layer profile
                continue
            prof = profile_pydl(pydl_model(weights), x, y, repeats=30)
            total = sum(prof.values())
            print(f"\npydl step profile, {n} thread(s) (median us per part; sum {total:.0f} us, "
                  f"whole step {t_pydl * 1e6:.0f} us):")
            for k, v in prof.items():
                print(f"  {k:48s} {v:9.1f} us  {100 * v / total:5.1f}%")
    print_rows(rows, "CNN training step (ms, lower is better)",
               "forward + loss + backward + Adam, batch 128 of 1x28x28")
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv or common.QUICK)
