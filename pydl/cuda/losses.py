"""Launchers of kernels/losses.cu: loss value and gradient of y_pred in one pass on the GPU.

Arrays come validated from `pydl.ops.nn.loss` (C-contiguous CuPy arrays of one float dtype,
int64 labels already range-checked). Each call writes the gradient, reduces the loss in double
(per-block partial sums, then one block adding them in a fixed order, so the value does not
vary from run to run) and returns it as a Python float (one device -> host copy of 8 bytes).
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, function, kernel

THREADS = 256
WARPS = THREADS // 32
MAX_BLOCKS = 1024  # partial sums per loss; reduce_partials adds them in one block
_ELEMENTWISE_KIND = {"mse": 0, "mae": 1, "binary_crossentropy": 2}


def _finish(partial, nblocks: int) -> float:
    cp = cupy_module()
    out = cp.empty((1,), dtype=np.float64)
    function("losses", "reduce_partials")((1,), (THREADS,), (out, partial, np.int64(nblocks)))
    return float(out.get()[0])


def _values(n: int, want: bool):
    cp = cupy_module()
    return cp.empty((n if want else 1,), dtype=np.float64)


def elementwise(kind: str, y_true, y_pred, from_logits: bool, values: bool = False):
    """(mean element loss, grad) for mse, mae, binary_crossentropy; y_true has y_pred's shape and dtype.
    values=True adds a third item: each element's loss, float64 of y_pred's shape."""
    cp = cupy_module()
    E = int(y_pred.size)
    grad = cp.empty_like(y_pred)
    k = 3 if (kind == "binary_crossentropy" and from_logits) else _ELEMENTWISE_KIND[kind]
    scale = (2.0 if kind == "mse" else 1.0) / E
    nb = blocks(E, THREADS, MAX_BLOCKS)
    partial = cp.empty((nb,), dtype=np.float64)
    vals = _values(E, values)
    kernel("losses", "elementwise_loss", y_pred.dtype)(
        (nb,), (THREADS,), (grad, partial, vals, y_true, y_pred, np.int64(E), np.int32(k), np.float64(scale),
                            np.int32(bool(values))))
    value = _finish(partial, nb) / E
    return (value, grad, vals.reshape(y_pred.shape)) if values else (value, grad)


def _rows(base: str, target, y_pred, from_logits: bool, values: bool):
    cp = cupy_module()
    D = int(y_pred.shape[-1])
    R = int(y_pred.size) // D
    grad = cp.empty_like(y_pred)
    nb = blocks(R, WARPS, MAX_BLOCKS)
    partial = cp.empty((nb,), dtype=np.float64)
    vals = _values(R, values)
    name = f"{base}_{'logits' if from_logits else 'probs'}"
    kernel("losses", name, y_pred.dtype)(
        (nb,), (THREADS,), (grad, partial, vals, target, y_pred, np.int64(R), np.int64(D), np.float64(1.0 / R),
                            np.int32(bool(values))))
    value = _finish(partial, nb) / R
    return (value, grad, vals.reshape(y_pred.shape[:-1])) if values else (value, grad)


def categorical_crossentropy(y_true, y_pred, from_logits: bool, values: bool = False):
    """(mean row crossentropy over the last axis, grad); y_true soft targets of y_pred's shape.
    values=True adds each row's loss, float64 of shape y_pred.shape[:-1]."""
    return _rows("categorical_crossentropy", y_true, y_pred, from_logits, values)


def sparse_categorical_crossentropy(labels, y_pred, from_logits: bool, values: bool = False):
    """(mean row crossentropy, grad); labels int64 (R,), each in [0, D). values as above."""
    return _rows("sparse_crossentropy", labels, y_pred, from_logits, values)


__all__ = ["elementwise", "categorical_crossentropy", "sparse_categorical_crossentropy"]
