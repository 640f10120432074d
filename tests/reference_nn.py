"""Float64 NumPy references for the nn ops, written from the textbook formulas.

Forward references take any array and compute in float64. Backward references work from the
forward *input* x (not the output, as the kernels do), so the two are independent.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-7
MASK64 = (1 << 64) - 1


def f64(a):
    return np.asarray(a, dtype=np.float64)


# ---- activations ---------------------------------------------------------------------------

def sigmoid(x):
    x = f64(x)
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _erfc(x):
    import math
    return np.vectorize(math.erfc, otypes=[np.float64])(x)


def _gelu_tanh_u2(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return 2.0 * np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)


def act(x, kind, alpha=None):
    x = f64(x)
    if kind == "gelu":
        return 0.5 * x * _erfc(-x / np.sqrt(2.0))
    if kind == "gelu_tanh":  # 0.5 x (1 + tanh(u)) = x * sigmoid(2u)
        with np.errstate(invalid="ignore"):
            return x * sigmoid(_gelu_tanh_u2(x))
    if kind == "swish":
        with np.errstate(invalid="ignore"):
            return x * sigmoid(x)
    if kind == "softplus":
        with np.errstate(over="ignore"):
            return np.where(np.isnan(x), x, np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x))))
    if kind == "selu":
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))
    if kind == "softsign":
        with np.errstate(invalid="ignore"):
            return x / (1.0 + np.abs(x))
    if kind == "hard_sigmoid":
        return np.where(np.isnan(x), x, np.clip(x + 3.0, 0.0, 6.0) / 6.0)
    if kind == "exponential":
        with np.errstate(over="ignore"):
            return np.exp(x)
    if kind == "linear":
        return x.copy()
    if kind == "relu":
        return np.where(np.isnan(x), x, np.where(x > 0, x, 0.0))
    if kind == "leaky_relu":
        a = 0.3 if alpha is None else alpha
        return np.where(x > 0, x, a * x)
    if kind == "sigmoid":
        return sigmoid(x)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0)))
    if kind == "softmax":
        z = x - x.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    if kind == "log_softmax":
        z = x - x.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    raise ValueError(kind)


def act_grad(dy, x, kind, alpha=None):
    """dx = dy * act'(x), from x."""
    dy, x = f64(dy), f64(x)
    if kind == "gelu":
        with np.errstate(over="ignore", invalid="ignore"):
            return dy * (0.5 * _erfc(-x / np.sqrt(2.0)) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi))
    if kind == "gelu_tanh":
        with np.errstate(over="ignore", invalid="ignore"):
            s = sigmoid(_gelu_tanh_u2(x))
            du2 = 2.0 * np.sqrt(2.0 / np.pi) * (1 + 3 * 0.044715 * x * x)
            return dy * (s + np.where(np.abs(x) < 10, x * s * (1 - s) * du2, 0.0))
    if kind == "swish":
        s = sigmoid(x)
        with np.errstate(invalid="ignore", over="ignore"):
            return dy * (s + x * s * (1 - s))
    if kind == "softplus":
        return dy * sigmoid(x)
    if kind == "selu":
        return dy * SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0)))
    if kind == "softsign":
        with np.errstate(over="ignore"):
            return dy / (1.0 + np.abs(x)) ** 2
    if kind == "hard_sigmoid":
        return np.where(np.isnan(x), x, np.where(np.abs(x) < 3, dy / 6.0, 0.0))
    if kind == "exponential":
        with np.errstate(over="ignore", invalid="ignore"):
            return dy * np.exp(x)
    if kind == "linear":
        return dy.copy()
    if kind == "relu":
        return dy * (x > 0)
    if kind == "leaky_relu":
        a = 0.3 if alpha is None else alpha
        return np.where(x > 0, dy, a * dy)
    if kind == "sigmoid":
        s = sigmoid(x)
        return dy * s * (1 - s)
    if kind == "tanh":
        return dy / np.cosh(x) ** 2
    if kind == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(x > 0, dy, dy * a * np.exp(np.minimum(x, 0.0)))
    if kind == "softmax":
        s = act(x, "softmax")
        return s * (dy - (dy * s).sum(axis=-1, keepdims=True))
    if kind == "log_softmax":
        s = act(x, "softmax")
        return dy - s * dy.sum(axis=-1, keepdims=True)
    raise ValueError(kind)


# ---- Dense ---------------------------------------------------------------------------------

def dense(x, W, b, kind, alpha=None):
    z = f64(x) @ f64(W)
    if b is not None:
        z = z + f64(b)
    return act(z, kind, alpha)


def dense_backward(dy, x, W, b, kind, alpha=None):
    """(dx, dW, db) from the pre-activation z = x W + b."""
    x, W = f64(x), f64(W)
    z = x @ W + (0.0 if b is None else f64(b))
    dz = act_grad(dy, z, kind, alpha)
    return dz @ W.T, x.T @ dz, dz.sum(axis=0)


# ---- losses (mean over the last axis, then over the batch, as Keras) -----------------------

def clip_bounds(dtype):
    lo = float(np.asarray(EPS, dtype=dtype))
    hi = float(np.asarray(1, dtype=dtype) - np.asarray(EPS, dtype=dtype))
    return lo, hi


def loss(kind, y_true, y_pred, from_logits=False, dtype=np.float64):
    p = f64(y_pred)
    if kind == "sparse_categorical_crossentropy":
        labels = np.asarray(y_true).reshape(p.shape[:-1]).astype(np.int64)
        t = np.zeros_like(p)
        np.put_along_axis(t, labels[..., None], 1.0, axis=-1)
        kind = "categorical_crossentropy"
    else:
        t = f64(y_true)
    lo, hi = clip_bounds(dtype)
    if kind == "mse":
        return float(np.mean(np.mean((p - t) ** 2, axis=-1)))
    if kind == "mae":
        return float(np.mean(np.mean(np.abs(p - t), axis=-1)))
    if kind == "binary_crossentropy":
        if from_logits:
            per = np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))
        else:
            q = np.clip(p, lo, hi)
            per = -(t * np.log(q) + (1 - t) * np.log(1 - q))
        return float(np.mean(np.mean(per, axis=-1)))
    if kind == "categorical_crossentropy":
        if from_logits:
            logp = act(p, "log_softmax")
        else:
            q = np.clip(p / p.sum(axis=-1, keepdims=True), lo, hi)
            logp = np.log(q)
        return float(np.mean(-(t * logp).sum(axis=-1)))
    raise ValueError(kind)


# ---- dropout -------------------------------------------------------------------------------

def splitmix_bits(count, seed):
    """High 32 bits of splitmix64's output function at mix(seed) + (i + 1) * golden, i < count."""
    def mix(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    with np.errstate(over="ignore"):
        key = mix(np.uint64(seed & MASK64))
        i = np.arange(1, count + 1, dtype=np.uint64)
        z = mix(key + i * np.uint64(0x9E3779B97F4A7C15))
    return (z >> np.uint64(32)).astype(np.uint32)


def dropout_mask(shape, rate, seed):
    n = int(np.prod(shape))
    threshold = np.uint64(int(rate * 2.0**32))
    return (splitmix_bits(n, seed).astype(np.uint64) >= threshold).astype(np.uint8).reshape(shape)


# ---- batch normalisation -------------------------------------------------------------------

def _bshape(x, v):
    return f64(v).reshape((1, -1) + (1,) * (x.ndim - 2))


def batchnorm_train(x, gamma, beta, eps):
    x = f64(x)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    var = ((x - _bshape(x, mean)) ** 2).mean(axis=axes)
    y = _bshape(x, gamma) * (x - _bshape(x, mean)) / np.sqrt(_bshape(x, var) + eps) + _bshape(x, beta)
    return y, mean, var


def batchnorm_infer(x, gamma, beta, running_mean, running_var, eps):
    x = f64(x)
    return _bshape(x, gamma) * (x - _bshape(x, running_mean)) / np.sqrt(_bshape(x, running_var) + eps) + \
        _bshape(x, beta)


def running_update(running, batch, momentum):
    return momentum * f64(running) + (1 - momentum) * f64(batch)


def batchnorm_train_backward(dy, x, gamma, eps):
    """(dx, dgamma, dbeta) of batchnorm_train by the staged chain rule through mean and variance."""
    x, dy = f64(x), f64(dy)
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // x.shape[1]
    mean = _bshape(x, x.mean(axis=axes))
    var = _bshape(x, ((x - mean) ** 2).mean(axis=axes))
    std = np.sqrt(var + eps)
    xhat = (x - mean) / std
    dxhat = dy * _bshape(x, gamma)
    dvar = np.sum(dxhat * (x - mean) * -0.5 * std ** -3, axis=axes, keepdims=True)
    dmean = np.sum(-dxhat / std, axis=axes, keepdims=True) + dvar * np.mean(-2 * (x - mean), axis=axes, keepdims=True)
    dx = dxhat / std + dvar * 2 * (x - mean) / m + dmean / m
    return dx, np.sum(dy * xhat, axis=axes), np.sum(dy, axis=axes)
