"""CUDA wrappers of the neural-network ops: activations, Dense, dropout and batch normalisation.

The arrays come from `pydl.ops.nn`, already validated (C-contiguous CuPy float32/float64 arrays of
matching shapes and one dtype); these functions allocate the outputs, launch the kernels of
kernels/activations.cu, dense.cu, dropout.cu and batchnorm.cu, and return CuPy arrays. The
matrix products of Dense go through `pydl.cuda.gemm.gemm`.
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, kernel, scalar

_THREADS = 256
_REDUCE_THREADS = 256  # the row and channel kernels' fixed block size (a power of two)
_MAX_ROW_BLOCKS = 65535 * 32

# The kernels number the kinds as pydl.ops.nn.ACTIVATIONS orders them.
ACTIVATION_CODES = {k: i for i, k in enumerate(
    ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "softmax", "log_softmax", "gelu", "gelu_tanh",
     "swish", "softplus", "selu", "softsign", "hard_sigmoid", "exponential"))}
NEEDS_INPUT = ("gelu", "gelu_tanh", "swish", "softplus", "softsign", "hard_sigmoid")


def _rows(a):
    """(rows, last-axis length) of an array treated as [R, D] over its last axis."""
    d = a.shape[-1] if a.ndim else 1
    return (a.size // d if d else 0), d


def _elementwise(fn, n, args):
    if n:
        fn((blocks(n, _THREADS),), (_THREADS,), args)


def activation(x, kind: str, alpha: float):
    cp = cupy_module()
    y = cp.empty_like(x)
    if x.size == 0:
        return y
    if kind in ("softmax", "log_softmax"):
        r, d = _rows(x)
        fn = kernel("activations", "softmax_forward", x.dtype)
        fn((min(r, _MAX_ROW_BLOCKS),), (_REDUCE_THREADS,),
           (y, x, np.int64(r), np.int64(d), np.int32(kind == "log_softmax")))
        return y
    fn = kernel("activations", "act_forward", x.dtype)
    _elementwise(fn, x.size, (y, x, np.int64(x.size), np.int32(ACTIVATION_CODES[kind]), scalar(alpha, x.dtype)))
    return y


def activation_backward(dy, x, y, kind: str, alpha: float):
    cp = cupy_module()
    dx = cp.empty_like(dy)
    if dy.size == 0:
        return dx
    if kind in ("softmax", "log_softmax"):
        r, d = _rows(dy)
        fn = kernel("activations", "softmax_backward", dy.dtype)
        fn((min(r, _MAX_ROW_BLOCKS),), (_REDUCE_THREADS,),
           (dx, dy, y, np.int64(r), np.int64(d), np.int32(kind == "log_softmax")))
        return dx
    fn = kernel("activations", "act_backward", dy.dtype)
    _elementwise(fn, dy.size, (dx, dy, x, y, np.int64(dy.size), np.int32(ACTIVATION_CODES[kind]),
                               scalar(alpha, dy.dtype)))
    return dx


def _gemm():
    from . import gemm as gemm_module
    return gemm_module.gemm


def dense_forward(x, W, b, kind: str, alpha: float):
    """(y, z): y = act(x @ W + b); z = x @ W + b for the NEEDS_INPUT kinds, else None."""
    cp = cupy_module()
    n, c = x.shape
    k = W.shape[1]
    y = cp.empty((n, k), dtype=x.dtype)
    z = cp.empty_like(y) if kind in NEEDS_INPUT else None
    if y.size == 0:
        return y, z
    acc = z if z is not None else y
    if c == 0:
        acc.fill(0)
    else:
        _gemm()(x, W, acc, False, False, 1.0, 0.0)
    if kind == "linear" and b is None:
        return y, z
    fn = kernel("activations", "bias_act", x.dtype)
    _elementwise(fn, y.size, (y, z if z is not None else y, acc, b if b is not None else y, np.int64(y.size),
                              np.int64(k), np.int32(b is not None), np.int32(z is not None),
                              np.int32(ACTIVATION_CODES[kind]), scalar(alpha, x.dtype)))
    return y, z


def column_sums(dz, out) -> None:
    """out[k] = sum over rows of dz[:, k] (dz 2-D, out 1-D of dz.shape[1])."""
    n, k = dz.shape
    if k == 0:
        return
    strips = (k + 31) // 32
    fn = kernel("dense", "column_sums", dz.dtype)
    fn((min(strips, _MAX_ROW_BLOCKS),), (32, 8), (out, dz, np.int64(n), np.int64(k)))


def dense_backward(dy, x, W, y, kind: str, alpha: float, need_dx: bool, has_bias: bool, z):
    cp = cupy_module()
    n, c = x.shape
    k = W.shape[1]
    dx = cp.empty_like(x) if need_dx else None
    dW = cp.empty_like(W)
    db = cp.empty(k, dtype=W.dtype) if has_bias else None
    if n == 0 or k == 0:
        # empty sums: dW and db are zero; dx = dz W^T is zero (k == 0) or empty (n == 0)
        dW.fill(0)
        if db is not None:
            db.fill(0)
        if dx is not None:
            dx.fill(0)
        return dx, dW, db
    if kind == "linear":
        dz = dy
    else:
        dz = cp.empty_like(dy)
        fn = kernel("activations", "act_backward", dy.dtype)
        xin = z if kind in NEEDS_INPUT else y
        _elementwise(fn, dy.size, (dz, dy, xin, y, np.int64(dy.size), np.int32(ACTIVATION_CODES[kind]),
                                   scalar(alpha, dy.dtype)))
    gemm = _gemm()
    if c:
        gemm(x, dz, dW, True, False, 1.0, 0.0)  # dW (C, K) = x^T (C, N) dz (N, K)
    if db is not None:
        column_sums(dz, db)
    if dx is not None and c:
        gemm(dz, W, dx, False, True, 1.0, 0.0)  # dx (N, C) = dz (N, K) W^T (K, C)
    return dx, dW, db


def dropout_forward(x, rate: float, seed: int):
    cp = cupy_module()
    y = cp.empty_like(x)
    mask = cp.empty(x.shape, dtype=cp.uint8)
    threshold = np.uint32(int(rate * 4294967296.0))
    fn = kernel("dropout", "dropout_forward", x.dtype)
    _elementwise(fn, x.size, (y, mask, x, np.int64(x.size), np.uint64(seed), threshold,
                              scalar(1.0 / (1.0 - rate), x.dtype)))
    return y, mask


def dropout_backward(dy, mask, rate: float):
    cp = cupy_module()
    dx = cp.empty_like(dy)
    fn = kernel("dropout", "dropout_backward", dy.dtype)
    _elementwise(fn, dy.size, (dx, dy, mask, np.int64(dy.size), scalar(1.0 / (1.0 - rate), dy.dtype)))
    return dx


def _ncs(x):
    n, c = x.shape[0], x.shape[1]
    s = x.shape[2] * x.shape[3] if x.ndim == 4 else 1
    return n, c, s


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum: float, epsilon: float, training: bool):
    cp = cupy_module()
    n, c, s = _ncs(x)
    y = cp.empty_like(x)
    mean = cp.empty(c, dtype=cp.float64)
    inv_std = cp.empty(c, dtype=cp.float64)
    if c:
        fn = kernel("batchnorm", "batchnorm_forward", x.dtype)
        fn((min(c, _MAX_ROW_BLOCKS),), (_REDUCE_THREADS,),
           (y, mean, inv_std, running_mean, running_var, x, gamma, beta, np.int64(n), np.int64(c), np.int64(s),
            np.float64(momentum), np.float64(epsilon), np.int32(bool(training))))
    return y, mean, inv_std


def batchnorm_backward(dy, x, gamma, mean, inv_std, training: bool):
    cp = cupy_module()
    n, c, s = _ncs(x)
    dx = cp.empty_like(x)
    dgamma = cp.empty(c, dtype=x.dtype)
    dbeta = cp.empty(c, dtype=x.dtype)
    if c:
        fn = kernel("batchnorm", "batchnorm_backward", x.dtype)
        fn((min(c, _MAX_ROW_BLOCKS),), (_REDUCE_THREADS,),
           (dx, dgamma, dbeta, dy, x, gamma, mean, inv_std, np.int64(n), np.int64(c), np.int64(s),
            np.int32(bool(training))))
    return dx, dgamma, dbeta


__all__ = ["activation", "activation_backward", "dense_forward", "dense_backward", "column_sums",
           "dropout_forward", "dropout_backward", "batchnorm_forward", "batchnorm_backward"]
