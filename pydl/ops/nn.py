"""Neural-network ops: activations, Dense, losses, dropout and batch normalisation.

Arrays are float32 (fast path) or float64 (exact path); other numeric dtypes are cast to float32.
Arguments that belong together (x and W, gamma and beta, dy and y) must share one dtype, else
ValueError. Non-contiguous inputs are copied; in-place arguments (BatchNorm running statistics)
must already be exactly right, because a copy would lose the update.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _core
from .._validate import as_float_array as _as_float_array
from .._validate import check_finite, check_ndim, check_out, check_same_dtype, contiguous_aligned
from . import device

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "softmax", "log_softmax",
               "gelu", "gelu_tanh", "swish", "softplus", "selu", "softsign", "hard_sigmoid", "exponential")
FUSABLE_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu",
                       "gelu", "gelu_tanh", "swish", "softplus", "selu", "softsign", "hard_sigmoid", "exponential")
# Kinds whose derivative is not a function of the output alone: their backward reads the input x
# (Dense keeps the pre-activation z for them).
NEEDS_INPUT = ("gelu", "gelu_tanh", "swish", "softplus", "softsign", "hard_sigmoid")
LOSSES = ("mse", "mae", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy")
# Keras defaults: LeakyReLU's negative_slope 0.3, ELU's alpha 1.0.
_ALPHA_DEFAULT = {"leaky_relu": 0.3, "elu": 1.0}


# ---- argument checks -----------------------------------------------------------------------

def as_float_array(x, name: str, op: str, dtype=None) -> np.ndarray:
    """_validate.as_float_array, keeping a 0-d input 0-d (np.ascontiguousarray makes it 1-d)."""
    arr = _as_float_array(x, name, op, dtype=dtype)
    return arr if arr is x or np.ndim(x) != 0 else arr.reshape(())


def _check_kind(kind, valid, op: str, what: str = "activation") -> str:
    if not isinstance(kind, str) or kind not in valid:
        raise ValueError(f"[{op}] unknown {what} {kind!r}; valid kinds: {', '.join(valid)}")
    return kind


def _alpha(kind: str, alpha, op: str) -> float:
    """The slope/scale of leaky_relu and elu (>= 0: backward works from the output's sign)."""
    if kind not in _ALPHA_DEFAULT:
        if alpha is not None:
            raise ValueError(f"[{op}] alpha is only used by leaky_relu and elu, got alpha={alpha!r} for {kind!r}")
        return 0.0
    if alpha is None:
        return _ALPHA_DEFAULT[kind]
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"[{op}] alpha for {kind} must be a finite number >= 0, got {alpha!r}")
    return float(alpha)


def _same_shape(op: str, ref_name: str, ref: np.ndarray, **arrays) -> None:
    for name, a in arrays.items():
        if a.shape != ref.shape:
            raise ValueError(f"[{op}] {name} has shape {a.shape} but {ref_name} has shape {ref.shape}")


def _as_float_on(dev: str, x, name: str, op: str):
    """as_float_array on the CPU, device.as_float_cuda on the GPU."""
    return device.as_float_cuda(x, name, op) if dev == "cuda" else as_float_array(x, name, op)


def _check_rate(rate, op: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (0.0 <= float(rate) < 1.0):
        raise ValueError(f"[{op}] rate must be a number in [0, 1), got {rate!r}")
    return float(rate)


# ---- activations ---------------------------------------------------------------------------

# The CUDA fast path of activation / activation_backward: a C-contiguous float32/float64 CuPy array
# (all arguments alike) skips dispatch and conversion and goes straight to pydl.cuda.nn. The CuPy
# array type is recorded at the first CUDA call (CuPy is never imported here); until then, and for
# anything else, the general path below validates and converts as usual.
_cuda_array_type = None
_cuda_nn = None
_ACTIVATION_SET = frozenset(ACTIVATIONS)
_ROW_KINDS = ("softmax", "log_softmax")
_FAST_CHARS = ("f", "d")


def _cuda_wrappers(validated):
    """pydl.cuda.nn, remembering the CuPy array type of `validated` for the fast path."""
    global _cuda_array_type, _cuda_nn
    if _cuda_nn is None:
        from ..cuda import nn as cuda_nn
        _cuda_nn = cuda_nn
    _cuda_array_type = type(validated)
    return _cuda_nn


def activation(x, kind: str, alpha=None) -> np.ndarray:
    """y = kind(x); softmax and log_softmax act over the last axis.

    kind: linear, relu, sigmoid, tanh, leaky_relu (alpha, default 0.3), elu (alpha, default 1.0),
    softmax, log_softmax, gelu (exact, x * Phi(x)), gelu_tanh (the tanh approximation), swish
    (x * sigmoid(x)), softplus, selu, softsign, hard_sigmoid (relu6(x + 3) / 6), exponential.
    Stable for any input (sigmoid(+-1e4) is 1/0, softplus(1e4) is 1e4, softmax subtracts the row
    maximum); NaN propagates.
    """
    if type(x) is _cuda_array_type and type(kind) is str and kind in _ACTIVATION_SET and x.dtype.char in _FAST_CHARS \
            and x.flags.c_contiguous and (x.ndim or kind not in _ROW_KINDS):
        return _cuda_nn.activation(x, kind, _alpha(kind, alpha, "activation"))
    op = "activation"
    kind = _check_kind(kind, ACTIVATIONS, op)
    a = _alpha(kind, alpha, op)
    dev = device.dispatch(op, x=x)
    x = _as_float_on(dev, x, "x", op)
    if kind in ("softmax", "log_softmax") and x.ndim == 0:
        raise ValueError(f"[{op}] {kind} needs an array with a last axis, got a 0-d array")
    if dev == "cuda":
        return _cuda_wrappers(x).activation(x, kind, a)
    y = np.empty_like(x)
    _core.activation_forward(kind, x, y, a)
    return y


def activation_backward(dy, x, y, kind: str, alpha=None) -> np.ndarray:
    """dx = dy * d kind(x) / dx, given the forward input x and output y.

    Computed from y, except for the NEEDS_INPUT kinds (gelu, gelu_tanh, swish, softplus, softsign,
    hard_sigmoid), whose derivative is computed from x.
    """
    t = _cuda_array_type
    if type(dy) is t and type(x) is t and type(y) is t and type(kind) is str \
            and kind in _ACTIVATION_SET:
        ch = dy.dtype.char
        if ch in _FAST_CHARS and x.dtype.char == ch and y.dtype.char == ch and dy.shape == x.shape == y.shape \
                and dy.flags.c_contiguous and x.flags.c_contiguous and y.flags.c_contiguous \
                and (dy.ndim or kind not in _ROW_KINDS):
            return _cuda_nn.activation_backward(dy, x, y, kind, _alpha(kind, alpha, "activation_backward"))
    op = "activation_backward"
    kind = _check_kind(kind, ACTIVATIONS, op)
    a = _alpha(kind, alpha, op)
    dev = device.dispatch(op, dy=dy, x=x, y=y)
    dy = _as_float_on(dev, dy, "dy", op)
    x = _as_float_on(dev, x, "x", op)
    y = _as_float_on(dev, y, "y", op)
    check_same_dtype(op, dy=dy, x=x, y=y)
    _same_shape(op, "dy", dy, x=x, y=y)
    if kind in ("softmax", "log_softmax") and dy.ndim == 0:
        raise ValueError(f"[{op}] {kind} needs an array with a last axis, got a 0-d array")
    if dev == "cuda":
        return _cuda_wrappers(dy).activation_backward(dy, x, y, kind, a)
    dx = np.empty_like(dy)
    _core.activation_backward(kind, dy, y, dx, a, x if kind in NEEDS_INPUT else None)
    return dx


# ---- Dense ---------------------------------------------------------------------------------

def _dense_args(op: str, x, W, activation, alpha, dev: str = "cpu"):
    kind = _check_kind(activation, FUSABLE_ACTIVATIONS, op)
    a = _alpha(kind, alpha, op)
    x = _as_float_on(dev, x, "x", op)
    W = _as_float_on(dev, W, "W", op)
    check_ndim(x, 2, "x", op, "(batch, features)")
    check_ndim(W, 2, "W", op, "(features, units)")
    check_same_dtype(op, x=x, W=W)
    if W.shape[0] != x.shape[1]:
        raise ValueError(f"[{op}] W has shape {W.shape} but x {x.shape} has {x.shape[1]} features")
    return kind, a, x, W


def dense_forward(x, W, b=None, activation: str = "linear", alpha=None, return_z: bool = False):
    """y = activation(x @ W + b) for x (N, C), W (C, K), b (K,) or None; one GEMM and one fused pass.

    With return_z=True returns (y, z) where z = x @ W + b, the pre-activation that dense_backward
    needs for the NEEDS_INPUT kinds (gelu, swish, softplus, ...); z is None for the other kinds.
    """
    op = "dense_forward"
    dev = device.dispatch(op, x=x, W=W, b=b)
    kind, a, x, W = _dense_args(op, x, W, activation, alpha, dev)
    if b is not None:
        b = _as_float_on(dev, b, "b", op)
        check_ndim(b, 1, "b", op, "(units,)")
        check_same_dtype(op, x=x, W=W, b=b)
        if b.shape[0] != W.shape[1]:
            raise ValueError(f"[{op}] b has shape {b.shape} but W {W.shape} has {W.shape[1]} units")
    if dev == "cuda":
        from ..cuda import nn as cuda_nn
        y, z = cuda_nn.dense_forward(x, W, b, kind, a)
        return (y, z) if return_z else y
    y = np.empty((x.shape[0], W.shape[1]), dtype=x.dtype)
    z = np.empty_like(y) if kind in NEEDS_INPUT else None
    _core.dense_forward(x, W, b, y, kind, a, z)
    return (y, z) if return_z else y


def dense_backward(dy, x, W, y, activation: str = "linear", alpha=None, need_dx: bool = True,
                   has_bias: bool = True, z=None):
    """Gradients of y = activation(x @ W + b): returns (dx or None, dW, db or None).

    dz = dy * activation'(y) (from z = x @ W + b for the NEEDS_INPUT kinds, which require z);
    dW = x^T dz; db = column sums of dz; dx = dz W^T.
    """
    op = "dense_backward"
    dev = device.dispatch(op, dy=dy, x=x, W=W, y=y, z=z)
    kind, a, x, W = _dense_args(op, x, W, activation, alpha, dev)
    dy = _as_float_on(dev, dy, "dy", op)
    y = _as_float_on(dev, y, "y", op)
    check_same_dtype(op, x=x, W=W, dy=dy, y=y)
    want = (x.shape[0], W.shape[1])
    for name, arr in (("dy", dy), ("y", y)):
        if arr.shape != want:
            raise ValueError(f"[{op}] {name} has shape {arr.shape}, expected {want} from x {x.shape} and W {W.shape}")
    if kind in NEEDS_INPUT:
        if z is None:
            raise ValueError(f"[{op}] activation {kind!r} needs z = x @ W + b (dense_forward(..., return_z=True))")
        z = _as_float_on(dev, z, "z", op)
        check_same_dtype(op, x=x, z=z)
        if z.shape != want:
            raise ValueError(f"[{op}] z has shape {z.shape}, expected {want} from x {x.shape} and W {W.shape}")
    else:
        z = None
    if dev == "cuda":
        from ..cuda import nn as cuda_nn
        return cuda_nn.dense_backward(dy, x, W, y, kind, a, bool(need_dx), bool(has_bias), z)
    dx = np.empty_like(x) if need_dx else None
    dW = np.empty_like(W)
    db = np.empty(W.shape[1], dtype=W.dtype) if has_bias else None
    _core.dense_backward(dy, x, W, y, dx, dW, db, kind, a, z)
    return dx, dW, db


# ---- losses --------------------------------------------------------------------------------

def _sparse_labels(y_true, y_pred: np.ndarray, op: str) -> np.ndarray:
    labels = np.asarray(y_true)
    if labels.dtype == object or not (np.issubdtype(labels.dtype, np.integer) or
                                      np.issubdtype(labels.dtype, np.floating) or labels.dtype == np.bool_):
        raise ValueError(f"[{op}] y_true must hold integer class labels, got dtype {labels.dtype}")
    rows = y_pred.shape[:-1]
    if labels.shape not in (rows, rows + (1,)):
        raise ValueError(f"[{op}] y_true has shape {labels.shape} but y_pred has shape {y_pred.shape}; "
                         f"expected labels of shape {rows} or {rows + (1,)}")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"[{op}] y_true contains NaN or Inf")
        if not np.all(labels == np.floor(labels)):
            raise ValueError(f"[{op}] y_true must hold integer class labels, got non-integer values")
    if np.issubdtype(labels.dtype, np.unsignedinteger) and labels.size and labels.max() > np.iinfo(np.int64).max:
        raise ValueError(f"[{op}] y_true holds a label larger than int64 allows")
    return contiguous_aligned(labels, np.int64).reshape(-1)


def loss(kind: str, y_true, y_pred, from_logits: bool = False):
    """(mean loss as a Python float, d loss / d y_pred with y_pred's shape and dtype).

    kind: mse, mae, binary_crossentropy, categorical_crossentropy, sparse_categorical_crossentropy.
    Keras reduction: mean over the last axis, then over the batch. From probabilities the
    crossentropies clip to [1e-7, 1 - 1e-7] as Keras (categorical normalises each row first); with
    from_logits they are computed stably from logits. y_true is cast to y_pred's dtype (integer
    labels of shape (N,) or (N, 1) for the sparse loss).
    CuPy arrays run the CUDA kernels (pydl.cuda.losses) with the same checks and messages; y_true
    and y_pred must then both be CuPy arrays (a NumPy y_true with a CuPy y_pred is the ValueError of
    device.dispatch: move the labels first with pydl.ops.device.to_device).
    """
    op = "loss"
    kind = _check_kind(kind, LOSSES, op, "loss")
    if not isinstance(from_logits, (bool, np.bool_)):
        raise ValueError(f"[{kind}] from_logits must be a bool, got {from_logits!r}")
    if from_logits and kind in ("mse", "mae"):
        raise ValueError(f"[{kind}] from_logits applies only to the crossentropy losses")
    from . import device
    if device.dispatch(kind, y_true=y_true, y_pred=y_pred) == "cuda":
        return _loss_cuda(kind, y_true, y_pred, bool(from_logits))
    y_pred = as_float_array(y_pred, "y_pred", kind)
    if y_pred.size == 0:
        raise ValueError(f"[{kind}] y_pred is empty, shape {y_pred.shape}")
    grad = np.empty_like(y_pred)
    if kind == "sparse_categorical_crossentropy":
        if y_pred.ndim < 1:
            raise ValueError(f"[{kind}] y_pred must have a class axis, got a 0-d array")
        labels = _sparse_labels(y_true, y_pred, kind)
        value = _core.sparse_categorical_crossentropy(labels, y_pred, grad, bool(from_logits))
        return float(value), grad
    y_true = as_float_array(y_true, "y_true", kind, dtype=y_pred.dtype)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"[{kind}] y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    check_finite(y_true, "y_true", kind)
    if kind == "categorical_crossentropy" and y_pred.ndim < 1:
        raise ValueError(f"[{kind}] y_pred must have a class axis, got a 0-d array")
    value = _core.loss(kind, y_true, y_pred, grad, bool(from_logits))
    return float(value), grad


def _cuda_numeric(a, name: str, op: str):
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"[{op}] {name} must be a numeric array, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"[{op}] {name} must be real, got dtype {a.dtype}")


def _sparse_labels_cuda(y_true, y_pred, op: str):
    """_sparse_labels for CuPy labels: the same checks (run on the device) and messages; int64 (R,)."""
    from . import device
    cp = device.namespace("cuda")
    labels = y_true
    if labels.dtype == object or not (np.issubdtype(labels.dtype, np.integer) or
                                      np.issubdtype(labels.dtype, np.floating) or labels.dtype == np.bool_):
        raise ValueError(f"[{op}] y_true must hold integer class labels, got dtype {labels.dtype}")
    rows = tuple(y_pred.shape[:-1])
    if tuple(labels.shape) not in (rows, rows + (1,)):
        raise ValueError(f"[{op}] y_true has shape {tuple(labels.shape)} but y_pred has shape {tuple(y_pred.shape)}; "
                         f"expected labels of shape {rows} or {rows + (1,)}")
    if np.issubdtype(labels.dtype, np.floating):
        if not bool(cp.isfinite(labels).all()):
            raise ValueError(f"[{op}] y_true contains NaN or Inf")
        if not bool((labels == cp.floor(labels)).all()):
            raise ValueError(f"[{op}] y_true must hold integer class labels, got non-integer values")
    if np.issubdtype(labels.dtype, np.unsignedinteger) and labels.size and \
            int(labels.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"[{op}] y_true holds a label larger than int64 allows")
    flat = cp.ascontiguousarray(labels.reshape(-1), dtype=np.int64)
    D = int(y_pred.shape[-1])
    bad = (flat < 0) | (flat >= D)
    if bool(bad.any()):
        r = int(cp.argmax(bad))
        raise ValueError(f"[{op}] y_true[{r}] = {int(flat[r])} is not a class index in [0, {D}) for y_pred "
                         f"with {D} classes")
    return flat


def _loss_cuda(kind: str, y_true, y_pred, from_logits: bool, values: bool = False):
    """loss() on CuPy arrays: the CPU branch's checks and messages, then pydl.cuda.losses.
    values=True adds a third item, the float64 element losses (mse, mae, bce: y_pred's shape) or
    row losses (crossentropies: y_pred.shape[:-1]) the kernels computed (losses.per_row uses them)."""
    from . import device
    from ..cuda import losses as cuda_losses
    _cuda_numeric(y_pred, "y_pred", kind)
    y_pred = device.as_float_cuda(y_pred, "y_pred", kind).reshape(y_pred.shape)
    if y_pred.size == 0:
        raise ValueError(f"[{kind}] y_pred is empty, shape {tuple(y_pred.shape)}")
    if kind == "sparse_categorical_crossentropy":
        if y_pred.ndim < 1:
            raise ValueError(f"[{kind}] y_pred must have a class axis, got a 0-d array")
        labels = _sparse_labels_cuda(y_true, y_pred, kind)
        return cuda_losses.sparse_categorical_crossentropy(labels, y_pred, from_logits, values)
    _cuda_numeric(y_true, "y_true", kind)
    y_true = device.as_float_cuda(y_true, "y_true", kind, dtype=y_pred.dtype).reshape(y_true.shape)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"[{kind}] y_true has shape {tuple(y_true.shape)} but y_pred has shape "
                         f"{tuple(y_pred.shape)}")
    cp = device.namespace("cuda")
    if not bool(cp.isfinite(y_true).all()):
        raise ValueError(f"[{kind}] y_true contains NaN or Inf")
    if kind == "categorical_crossentropy":
        if y_pred.ndim < 1:
            raise ValueError(f"[{kind}] y_pred must have a class axis, got a 0-d array")
        return cuda_losses.categorical_crossentropy(y_true, y_pred, from_logits, values)
    return cuda_losses.elementwise(kind, y_true, y_pred, from_logits, values)


# ---- dropout -------------------------------------------------------------------------------

def dropout_forward(x, rate, seed):
    """Inverted dropout: returns (y, mask) with mask uint8 (1 = kept) and y = x * mask / (1 - rate).

    The mask depends only on (seed, element index): the same for any thread count.
    """
    op = "dropout_forward"
    rate = _check_rate(rate, op)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not (0 <= int(seed) < 2**64):
        raise ValueError(f"[{op}] seed must be an int in [0, 2**64), got {seed!r}")
    dev = device.dispatch(op, x=x)
    x = _as_float_on(dev, x, "x", op)
    if dev == "cuda":
        from ..cuda import nn as cuda_nn
        return cuda_nn.dropout_forward(x, rate, int(seed))
    y = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.uint8)
    _core.dropout_forward(x, y, mask, rate, int(seed))
    return y, mask


def dropout_backward(dy, mask, rate) -> np.ndarray:
    """dx = dy * mask / (1 - rate), with the mask from dropout_forward."""
    op = "dropout_backward"
    rate = _check_rate(rate, op)
    dev = device.dispatch(op, dy=dy, mask=mask)
    if dev == "cuda":
        return _dropout_backward_cuda(dy, mask, rate, op)
    dy = as_float_array(dy, "dy", op)
    if not isinstance(mask, np.ndarray) or mask.dtype not in (np.uint8, np.bool_):
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"[{op}] mask must be the uint8 (or bool) array from dropout_forward, got {got}")
    if mask.shape != dy.shape:
        raise ValueError(f"[{op}] mask has shape {mask.shape} but dy has shape {dy.shape}")
    mask = contiguous_aligned(mask).view(np.uint8)
    dx = np.empty_like(dy)
    _core.dropout_backward(dy, mask, dx, rate)
    return dx


def _dropout_backward_cuda(dy, mask, rate: float, op: str):
    dy = device.as_float_cuda(dy, "dy", op)
    if mask.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"[{op}] mask must be the uint8 (or bool) array from dropout_forward, got {mask.dtype}")
    if mask.shape != dy.shape:
        raise ValueError(f"[{op}] mask has shape {mask.shape} but dy has shape {dy.shape}")
    cp = device.namespace("cuda")
    mask = cp.ascontiguousarray(mask).view(cp.uint8)
    from ..cuda import nn as cuda_nn
    return cuda_nn.dropout_backward(dy, mask, rate)


# ---- batch normalisation -------------------------------------------------------------------

def _bn_param(a, name: str, c: int, dtype, op: str, dev: str = "cpu") -> np.ndarray:
    a = _as_float_on(dev, a, name, op)
    if a.dtype != dtype:
        raise ValueError(f"[{op}] {name} has dtype {a.dtype} but x has dtype {np.dtype(dtype)}")
    if a.shape != (c,):
        raise ValueError(f"[{op}] {name} has shape {a.shape}, expected ({c},) for x with {c} channels")
    return a


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum: float = 0.99, epsilon: float = 1e-3,
                      training: bool = False):
    """Batch normalisation over axis 1 of x (N, C) or (N, C, H, W): returns (y, cache).

    training: batch mean and biased variance; running_mean/var are updated in place as Keras,
    running = momentum * running + (1 - momentum) * batch. Otherwise the running statistics are
    used. running_mean/var must be C-contiguous, writeable arrays of x's dtype and shape (C,).
    The cache is opaque: pass it to batchnorm_backward.
    """
    op = "batchnorm_forward"
    dev = device.dispatch(op, x=x, gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
    x = _as_float_on(dev, x, "x", op)
    check_ndim(x, (2, 4), "x", op, "(N, C) or (N, C, H, W)")
    c = x.shape[1]
    gamma = _bn_param(gamma, "gamma", c, x.dtype, op, dev)
    beta = _bn_param(beta, "beta", c, x.dtype, op, dev)
    if dev == "cuda":
        _bn_running_cuda(running_mean, running_var, c, x, gamma, beta, op)
    else:
        for name, arr in (("running_mean", running_mean), ("running_var", running_var)):
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"[{op}] {name} must be a numpy.ndarray (updated in place), got {type(arr).__name__}")
            check_out(arr, (c,), x.dtype, op, name, inputs={"x": x, "gamma": gamma, "beta": beta})
        if running_mean is running_var or np.shares_memory(running_mean, running_var):
            raise ValueError(f"[{op}] running_mean and running_var must be separate arrays")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not (0.0 <= momentum <= 1.0):
        raise ValueError(f"[{op}] momentum must be a number in [0, 1], got {momentum!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not (0.0 < epsilon < math.inf):
        raise ValueError(f"[{op}] epsilon must be a finite number > 0, got {epsilon!r}")
    training = bool(training)
    if training and x.shape[0] * (x.shape[2] * x.shape[3] if x.ndim == 4 else 1) == 0:
        raise ValueError(f"[{op}] training needs a non-empty batch, got x of shape {x.shape}")
    if dev == "cuda":
        from ..cuda import nn as cuda_nn
        y, mean, inv_std = cuda_nn.batchnorm_forward(x, gamma, beta, running_mean, running_var, float(momentum),
                                                     float(epsilon), training)
        return y, (mean, inv_std, training)
    y = np.empty_like(x)
    mean = np.empty(c, dtype=np.float64)
    inv_std = np.empty(c, dtype=np.float64)
    _core.batchnorm_forward(x, gamma, beta, running_mean, running_var, y, mean, inv_std, float(momentum),
                            float(epsilon), training)
    return y, (mean, inv_std, training)


def _bn_running_cuda(running_mean, running_var, c: int, x, gamma, beta, op: str) -> None:
    """The running statistics on the GPU: CuPy arrays of x's dtype and shape (C,), updated in place."""
    for name, arr in (("running_mean", running_mean), ("running_var", running_var)):
        if not device.is_cuda(arr):
            raise ValueError(f"[{op}] {name} must be a cupy.ndarray (updated in place; x is on the GPU), "
                             f"got {type(arr).__name__}")
        device.check_out_cuda(arr, (c,), x.dtype, op, name, inputs={"x": x, "gamma": gamma, "beta": beta})
    cp = device.namespace("cuda")
    if running_mean is running_var or (running_mean.size and cp.shares_memory(running_mean, running_var)):
        raise ValueError(f"[{op}] running_mean and running_var must be separate arrays")


def batchnorm_backward(dy, x, gamma, cache):
    """Gradients of batchnorm_forward: returns (dx, dgamma, dbeta).

    After a training forward, dx = gamma*inv_std/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)) with
    M = N*H*W; after an inference forward the statistics are constants and dx = gamma*inv_std*dy.
    """
    op = "batchnorm_backward"
    dev = device.dispatch(op, dy=dy, x=x, gamma=gamma)
    x = _as_float_on(dev, x, "x", op)
    check_ndim(x, (2, 4), "x", op, "(N, C) or (N, C, H, W)")
    c = x.shape[1]
    dy = _as_float_on(dev, dy, "dy", op)
    check_same_dtype(op, dy=dy, x=x)
    _same_shape(op, "x", x, dy=dy)
    gamma = _bn_param(gamma, "gamma", c, x.dtype, op, dev)
    if not (isinstance(cache, tuple) and len(cache) == 3):
        raise ValueError(f"[{op}] cache must be the cache returned by batchnorm_forward")
    mean, inv_std, training = cache
    if dev == "cuda":
        cp = device.namespace("cuda")
        for name, arr in (("cache mean", mean), ("cache inv_std", inv_std)):
            if not device.is_cuda(arr) or arr.dtype != np.float64 or arr.shape != (c,):
                raise ValueError(f"[{op}] {name} does not match x with {c} channels on the GPU; pass the cache "
                                 f"from batchnorm_forward on this x")
        from ..cuda import nn as cuda_nn
        return cuda_nn.batchnorm_backward(dy, x, gamma, cp.ascontiguousarray(mean), cp.ascontiguousarray(inv_std),
                                          bool(training))
    for name, arr in (("cache mean", mean), ("cache inv_std", inv_std)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or arr.shape != (c,):
            raise ValueError(f"[{op}] {name} does not match x with {c} channels; pass the cache from "
                             f"batchnorm_forward on this x")
    dx = np.empty_like(x)
    dgamma = np.empty(c, dtype=x.dtype)
    dbeta = np.empty(c, dtype=x.dtype)
    _core.batchnorm_backward(dy, x, gamma, np.ascontiguousarray(mean), np.ascontiguousarray(inv_std), dx, dgamma,
                             dbeta, bool(training))
    return dx, dgamma, dbeta


__all__ = ["ACTIVATIONS", "FUSABLE_ACTIVATIONS", "NEEDS_INPUT", "LOSSES", "activation", "activation_backward", "dense_forward",
           "dense_backward", "loss", "dropout_forward", "dropout_backward", "batchnorm_forward",
           "batchnorm_backward"]
