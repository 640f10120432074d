"""Float64 NumPy references for the layer and loss tests (written from the formulas)."""
from __future__ import annotations

import numpy as np


def act(x, kind, alpha=None):
    x = np.asarray(x, dtype=np.float64)
    if kind == "linear":
        return x.copy()
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if kind == "tanh":
        return np.tanh(x)
    if kind == "leaky_relu":
        a = 0.2 if alpha is None else alpha
        return np.where(x > 0, x, a * x)
    if kind == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0)))
    if kind == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if kind == "log_softmax":
        z = x - x.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    raise ValueError(kind)


def dense(x, W, b=None, kind="linear", alpha=None):
    z = np.asarray(x, np.float64) @ np.asarray(W, np.float64)
    if b is not None:
        z = z + np.asarray(b, np.float64)
    return act(z, kind, alpha)


def loss(kind, y_true, y_pred, from_logits=False):
    """Mean loss, straight from the textbook formulas (no gradient)."""
    p = np.asarray(y_pred, np.float64)
    if kind == "mse":
        return float(np.mean((np.asarray(y_true, np.float64) - p) ** 2))
    if kind == "mae":
        return float(np.mean(np.abs(np.asarray(y_true, np.float64) - p)))
    if kind == "binary_crossentropy":
        y = np.asarray(y_true, np.float64)
        if from_logits:
            # log sigmoid(z) = -log(1 + e^-z), log(1 - sigmoid(z)) = -log(1 + e^z)
            return float(np.mean(y * np.logaddexp(0, -p) + (1 - y) * np.logaddexp(0, p)))
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    # from probabilities, as Keras, each row is first normalised to sum to 1
    if kind == "categorical_crossentropy":
        y = np.asarray(y_true, np.float64)
        logp = act(p, "log_softmax") if from_logits else np.log(p / p.sum(axis=-1, keepdims=True))
        return float(-np.mean(np.sum(y * logp, axis=-1)))
    if kind == "sparse_categorical_crossentropy":
        lab = np.asarray(y_true).reshape(-1).astype(np.int64)
        logp = act(p, "log_softmax") if from_logits else np.log(p / p.sum(axis=-1, keepdims=True))
        return float(-np.mean(logp[np.arange(len(lab)), lab]))
    raise ValueError(kind)


def batchnorm_train(x, gamma, beta, eps):
    x = np.asarray(x, np.float64)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), mean, var


def batchnorm_infer(x, gamma, beta, mean, var, eps):
    x = np.asarray(x, np.float64)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    return gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) + beta.reshape(shape)
