"""Metric reductions on arrays of either device: the accuracy family and the MSE / MAE metrics.

Each function checks its inputs (the messages of `pydl.metrics`), then reduces on the arrays'
device and returns a host Python float: NumPy arrays in NumPy, CuPy arrays with the kernels of
`pydl/cuda/kernels/metrics.cu` (row argmax, equality / threshold counts, sums of differences in
double). y_true and y_pred must be on one device (else the ValueError of device.dispatch).

    binary_accuracy(y_true, y_pred, threshold=0.5)  mean(y_true == (y_pred > threshold))
    categorical_accuracy(y_true, y_pred)            mean(argmax(y_true) == argmax(y_pred)), last axis
    sparse_categorical_accuracy(y_true, y_pred)     mean(y_true == argmax(y_pred)), labels (N, ...)
    mean_squared_error / mean_absolute_error        mean((t - p)^2) / mean(|t - p|) in float64

argmax follows NumPy: the first maximum, a NaN counts as the maximum.
"""
from __future__ import annotations

import numpy as np

from . import device


def as_array(x, name: str, op: str, host: bool = False):
    """x as an array of its device (a CuPy array stays one unless `host`), numeric, real, at least
    1-d and non-empty; TypeError / ValueError naming `op` and `name` otherwise."""
    if device.is_cuda(x):
        a = device.to_host(x) if host else x
    else:
        try:
            a = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"[{op}] {name} must be array-like, got {type(x).__name__}") from exc
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"[{op}] {name} must be a numeric array, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"[{op}] {name} must be real, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"[{op}] {name} must have a sample axis, got a scalar")
    if a.size == 0:
        raise ValueError(f"[{op}] {name} is empty, shape {tuple(a.shape)}")
    return a


def pair(y_true, y_pred, op: str, host: bool = False):
    """(y_true, y_pred) through `as_array`, after the one-device check."""
    device.dispatch(op, y_true=y_true, y_pred=y_pred)
    return as_array(y_true, "y_true", op, host), as_array(y_pred, "y_pred", op, host)


def _drop_last_one(shape):
    return shape[:-1] if len(shape) > 1 and shape[-1] == 1 else shape


def same_shape(t, p, op: str):
    """Equal shapes, allowing (N,) against (N, 1): t reshaped to p's shape."""
    if t.shape == p.shape:
        return t, p
    if t.size == p.size and _drop_last_one(tuple(t.shape)) == _drop_last_one(tuple(p.shape)):
        return t.reshape(p.shape), p
    raise ValueError(f"[{op}] y_true {tuple(t.shape)} and y_pred {tuple(p.shape)} must have the same shape")


def _cuda_float(a, wide: bool = False):
    """A C-contiguous float32 / float64 CuPy array for the kernels: float32 and float64 kept, other
    dtypes (ints, bool, float16) cast to float64 (exact for them) or float32 when not `wide`."""
    cp = device.namespace("cuda")
    if a.dtype in (np.float32, np.float64):
        return cp.ascontiguousarray(a)
    return cp.ascontiguousarray(a, dtype=np.float64 if wide or a.dtype.kind in "iub" else np.float32)


def _cuda_labels(t):
    """int64 labels: integer values as they are, non-integer / non-finite floats as -1 (never a class)."""
    cp = device.namespace("cuda")
    if t.dtype.kind in "iub":
        return cp.ascontiguousarray(t.reshape(-1), dtype=np.int64)
    t = t.reshape(-1).astype(np.float64)
    ok = cp.isfinite(t) & (t == cp.floor(t)) & (cp.abs(t) < 2.0 ** 62)
    return cp.ascontiguousarray(cp.where(ok, t, -1.0).astype(np.int64))


def binary_accuracy(y_true, y_pred, threshold: float = 0.5) -> float:
    """mean(y_true == (y_pred > threshold))."""
    op = "binary_accuracy"
    t, p = same_shape(*pair(y_true, y_pred, op), op)
    if device.is_cuda(p):
        from ..cuda import metrics as cm
        cp = device.namespace("cuda")
        pp = p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)
        hits = cm.binary_hits(cp.ascontiguousarray(t, dtype=np.float64), cp.ascontiguousarray(pp), threshold)
        return hits / p.size
    return float(np.mean(t == (p > threshold)))


def categorical_accuracy(y_true, y_pred) -> float:
    """mean(argmax(y_true) == argmax(y_pred)) over the last axis; y_true one-hot."""
    op = "categorical_accuracy"
    t, p = pair(y_true, y_pred, op)
    if t.shape != p.shape:
        raise ValueError(f"[{op}] y_true {tuple(t.shape)} must be one-hot with the shape of y_pred "
                         f"{tuple(p.shape)}")
    if device.is_cuda(p):
        from ..cuda import metrics as cm
        at, ap = cm.argmax_rows(_cuda_float(t, wide=True)), cm.argmax_rows(_cuda_float(p))
        return cm.count_equal(at, ap) / at.size
    return float(np.mean(np.argmax(t, axis=-1) == np.argmax(p, axis=-1)))


def sparse_categorical_accuracy(y_true, y_pred) -> float:
    """mean(y_true == argmax(y_pred)) with integer labels y_true of shape y_pred.shape[:-1]."""
    op = "sparse_categorical_accuracy"
    t, p = pair(y_true, y_pred, op)
    if p.ndim < 2:
        raise ValueError(f"[{op}] y_pred must have a class axis, got shape {tuple(p.shape)}")
    if t.shape == p.shape[:-1] + (1,) and p.shape[-1] != 1:
        t = t.reshape(p.shape[:-1])
    if t.shape != p.shape[:-1]:
        raise ValueError(f"[{op}] y_true {tuple(t.shape)} must hold one label per row of y_pred "
                         f"{tuple(p.shape)}")
    if device.is_cuda(p):
        from ..cuda import metrics as cm
        ap = cm.argmax_rows(_cuda_float(p))
        return cm.count_equal(_cuda_labels(t), ap) / ap.size
    return float(np.mean(t == np.argmax(p, axis=-1)))


def _regression(y_true, y_pred, op: str, squared: bool) -> float:
    t, p = same_shape(*pair(y_true, y_pred, op), op)
    if device.is_cuda(p):
        from ..cuda import metrics as cm
        cp = device.namespace("cuda")
        tt = cp.ascontiguousarray(t, dtype=np.float64)
        pp = cp.ascontiguousarray(p, dtype=np.float64)
        return cm.diff_sum(tt, pp, squared) / p.size
    t, p = t.astype(np.float64), p.astype(np.float64)
    return float(np.mean((t - p) ** 2)) if squared else float(np.mean(np.abs(t - p)))


def mean_squared_error(y_true, y_pred) -> float:
    """mean((y_true - y_pred)^2) in float64."""
    return _regression(y_true, y_pred, "mean_squared_error", True)


def mean_absolute_error(y_true, y_pred) -> float:
    """mean(|y_true - y_pred|) in float64."""
    return _regression(y_true, y_pred, "mean_absolute_error", False)


__all__ = ["as_array", "pair", "same_shape", "binary_accuracy", "categorical_accuracy",
           "sparse_categorical_accuracy", "mean_squared_error", "mean_absolute_error"]
