"""CUDA wrappers of the neural-network ops: activations, Dense, dropout and batch normalisation.

The arrays come from `pydl.ops.nn`, already validated (C-contiguous CuPy float32/float64 arrays of
matching shapes and one dtype); these functions allocate the outputs, launch the kernels of
kernels/activations.cu, dense.cu, dropout.cu and batchnorm.cu, and return CuPy arrays. The
matrix products of Dense go through `pydl.cuda.gemm.gemm`.
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, function, kernel, scalar

_THREADS = 256
_REDUCE_THREADS = 256  # the row and channel kernels' fixed block size (a power of two)
_MAX_ROW_BLOCKS = 65535 * 32

# The kernels number the kinds as pydl.ops.nn.ACTIVATIONS orders them.
ACTIVATION_CODES = {k: i for i, k in enumerate(
    ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "softmax", "log_softmax", "gelu", "gelu_tanh",
     "swish", "softplus", "selu", "softsign", "hard_sigmoid", "exponential"))}
NEEDS_INPUT = ("gelu", "gelu_tanh", "swish", "softplus", "softsign", "hard_sigmoid")


def _elementwise(fn, n, args):
    if n:
        fn((blocks(n, _THREADS),), (_THREADS,), args)


# ---- the activation fast path: called once per layer per step, so the host work is kept to a few
# attribute reads, one dict lookup for the kernel and the launch itself (no syncs, no string building).

_cp = None
_act_fns: dict = {}  # (entry base name, dtype char, device id) -> compiled kernel function
_SCALAR_TYPE = {"f": np.float32, "d": np.float64}
_SUFFIX = {"f": "f32", "d": "f64"}
_VEC_WIDTH = {"f": 4, "d": 2}  # elements per 16-byte vector
_MAX_GRID = 65535 * 32
_WARP_ROWS = _REDUCE_THREADS // 32  # rows per block of the warp-per-row softmax
_WARP_ROW_MAX = 1024   # rows up to this length: one warp per row (up to 32 elements per thread)
_BLOCK_ROW_MAX = 4096  # up to this: one block per row held in registers (up to 16 per thread)


_CODE_ARG = {k: np.int32(i) for k, i in ACTIVATION_CODES.items()}
_LOG_FORM_ARG = {"softmax": np.int32(0), "log_softmax": np.int32(1)}
_size_args: dict = {}   # n -> numpy.int64(n): building a NumPy scalar costs more than the lookup
_alpha_args: dict = {}  # (dtype char, alpha) -> the float/double kernel argument


def _i64(n: int):
    v = _size_args.get(n)
    if v is None:
        if len(_size_args) > 512:
            _size_args.clear()
        v = _size_args[n] = np.int64(n)
    return v


def _alpha_arg(ch: str, alpha: float):
    key = (ch, alpha)
    v = _alpha_args.get(key)
    if v is None:
        if len(_alpha_args) > 64:
            _alpha_args.clear()
        v = _alpha_args[key] = _SCALAR_TYPE[ch](alpha)
    return v


def _act_fn(base: str, ch: str):
    key = (base, ch, _cp.cuda.runtime.getDevice())
    fn = _act_fns.get(key)
    if fn is None:
        fn = function("activations", base + "_" + _SUFFIX[ch])
        _act_fns[key] = fn
    return fn


def _vec_grid(n: int, ch: str) -> int:
    g = ((n // _VEC_WIDTH[ch]) + _THREADS - 1) // _THREADS
    return 1 if g < 1 else (_MAX_GRID if g > _MAX_GRID else g)


def _softmax_entry(r: int, d: int):
    """(entry base name, grid) of the softmax forward kernel for r rows of d > 0 elements."""
    if d <= _WARP_ROW_MAX:
        k = 1 << ((d + 31) // 32 - 1).bit_length()  # elements per thread: 1, 2, 4, ..., 32
        g = (r + _WARP_ROWS - 1) // _WARP_ROWS
        return "softmax_warp" + str(k), (g if g < _MAX_GRID else _MAX_GRID)
    g = r if r < _MAX_GRID else _MAX_GRID
    if d <= _BLOCK_ROW_MAX:
        return ("softmax_block8" if d <= 8 * _REDUCE_THREADS else "softmax_block16"), g
    return "softmax_forward", g


def _softmax_vec_entry(r: int, d: int):
    """(entry, grid) of the float4 warp-per-row softmax (float32, d a multiple of 4, d <= 1024,
    16-byte aligned rows): K4 = 1, 2, 4 or 8 float4s per lane."""
    k4 = 1 << ((d + 127) // 128 - 1).bit_length()
    g = (r + _WARP_ROWS - 1) // _WARP_ROWS
    return "softmax_warpv" + str(k4), (g if g < _MAX_GRID else _MAX_GRID)


def activation(x, kind: str, alpha: float):
    global _cp
    cp = _cp
    if cp is None:
        cp = _cp = cupy_module()
    y = cp.empty_like(x)
    n = x.size
    if n == 0:
        return y
    ch = x.dtype.char
    if kind == "softmax" or kind == "log_softmax":
        d = x.shape[-1]
        r = n // d
        if ch == "f" and not d & 3 and d <= _WARP_ROW_MAX and not (x.data.ptr | y.data.ptr) & 15:
            base, grid = _softmax_vec_entry(r, d)
        else:
            base, grid = _softmax_entry(r, d)
        _act_fn(base, ch)((grid,), (_REDUCE_THREADS,), (y, x, _i64(r), _i64(d), _LOG_FORM_ARG[kind]))
        return y
    args = (y, x, _i64(n), _CODE_ARG[kind], _alpha_arg(ch, alpha))
    if (x.data.ptr | y.data.ptr) & 15:
        _act_fn("act_forward", ch)((blocks(n, _THREADS),), (_THREADS,), args)
    else:
        _act_fn("act_forward_vec", ch)((_vec_grid(n, ch),), (_THREADS,), args)
    return y


def activation_backward(dy, x, y, kind: str, alpha: float):
    global _cp
    cp = _cp
    if cp is None:
        cp = _cp = cupy_module()
    dx = cp.empty_like(dy)
    n = dy.size
    if n == 0:
        return dx
    ch = dy.dtype.char
    if kind == "softmax" or kind == "log_softmax":
        d = dy.shape[-1]
        r = n // d
        _act_fn("softmax_backward", ch)(((r if r < _MAX_ROW_BLOCKS else _MAX_ROW_BLOCKS),), (_REDUCE_THREADS,),
                                        (dx, dy, y, _i64(r), _i64(d), _LOG_FORM_ARG[kind]))
        return dx
    args = (dx, dy, x, y, _i64(n), _CODE_ARG[kind], _alpha_arg(ch, alpha))
    if (dx.data.ptr | dy.data.ptr | x.data.ptr | y.data.ptr) & 15:
        _act_fn("act_backward", ch)((blocks(n, _THREADS),), (_THREADS,), args)
    else:
        _act_fn("act_backward_vec", ch)((_vec_grid(n, ch),), (_THREADS,), args)
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
