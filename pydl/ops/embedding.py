"""Embedding lookup: rows of a table W (V, D) selected by integer ids, and its gradient.

    y = embedding_forward(ids, W)                    # W[ids], shape ids.shape + (D,)
    dW = embedding_backward(dy, ids, W.shape)        # zeros (V, D), then dW[ids[r]] += dy[r]
    embedding_backward(dy, ids, W.shape, out=dW)     # accumulates (+=) into dW

ids: integer arrays of any shape (int64 inside; uint64 ids above the int64 range are out of
range), or float arrays holding whole numbers; every id must lie in [0, V). Bool, complex and
non-numeric ids are a TypeError; non-integer or NaN floats and out-of-range ids a ValueError
naming the id, V and the shapes. The table is float32 or float64 (other numeric dtypes are cast
to float32); dy is cast to the table's (or out's) dtype.

NumPy arrays run in NumPy (np.take, np.add.at: repeated ids add up in id order); CuPy arrays
run kernels/embedding.cu (a gather, and a scatter-add with atomicAdd: repeated ids add up in no
fixed order, so float32 sums may differ in the last bits between runs). ids, table, dy and out
must be on one device (else the ValueError of device.dispatch).
"""
from __future__ import annotations

import numbers

import numpy as np

from .._validate import as_float_array
from . import device


def _check_ids_dtype(dtype, op: str) -> None:
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise TypeError(f"[{op}] ids must be integer indices, got dtype {dtype}")


def _ids(ids, V: int, table_shape, op: str):
    """ids as int64 of the same shape on their device, after the dtype, whole-number and range checks."""
    cuda = device.is_cuda(ids)
    xp = device.namespace("cuda") if cuda else np
    if not cuda:
        try:
            ids = np.asarray(ids)
        except Exception as exc:
            raise TypeError(f"[{op}] ids must be array-like, got {type(ids).__name__}") from exc
    _check_ids_dtype(ids.dtype, op)
    if ids.size == 0:
        return ids.astype(np.int64)
    if np.issubdtype(ids.dtype, np.floating):
        if not bool(xp.isfinite(ids).all()) or bool((ids != xp.round(ids)).any()):
            raise ValueError(f"[{op}] ids must be whole-number indices; got non-integer values")
    lo, hi = ids.min(), ids.max()
    if lo < 0 or hi >= V:
        bad = lo if lo < 0 else hi
        bad = int(bad)
        raise ValueError(f"[{op}] id {bad} is out of range for input_dim={V} (ids must lie in [0, {V}) for a "
                         f"table of shape {tuple(table_shape)}; ids shape {tuple(ids.shape)})")
    if ids.dtype == np.int64 and ids.flags.c_contiguous:
        return ids
    return xp.ascontiguousarray(ids, dtype=np.int64)


def _table(table, op: str):
    if device.is_cuda(table):
        if table.dtype == object or not (np.issubdtype(table.dtype, np.number) or table.dtype == np.bool_) \
                or np.issubdtype(table.dtype, np.complexfloating):
            raise TypeError(f"[{op}] table must be a real numeric array, got dtype {table.dtype}")
        W = device.as_float_cuda(table, "table", op)
    else:
        W = as_float_array(table, "table", op)
    if W.ndim != 2:
        raise ValueError(f"[{op}] table has {W.ndim} dims {tuple(W.shape)}, expected 2 (input_dim, output_dim)")
    return W


def embedding_forward(ids, table, op: str = "embedding_forward"):
    """table[ids]: shape ids.shape + (D,), the table's dtype (see the module docstring for the checks).
    `op` names the caller in error messages (the Embedding layer passes its name)."""
    where = device.dispatch(op, ids=ids, table=table)
    W = _table(table, op)
    idx = _ids(ids, W.shape[0], W.shape, op)
    if where == "cuda":
        from ..cuda import embedding as cuda_embedding
        return cuda_embedding.gather(idx, W)
    return np.take(W, idx, axis=0)


def _table_shape(shape, op: str):
    if isinstance(shape, (numbers.Integral, np.integer)) and not isinstance(shape, bool):
        return int(shape), None
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or len(dims) != 2 or not all(isinstance(d, (numbers.Integral, np.integer)) and
                                                 not isinstance(d, bool) for d in dims):
        raise ValueError(f"[{op}] table_shape must be the vocabulary size V or the table shape (V, D), got {shape!r}")
    return int(dims[0]), int(dims[1])


def embedding_backward(dy, ids, table_shape, out=None, op: str = "embedding_backward"):
    """d loss / d table from dy (ids.shape + (D,)): dW[ids[r]] += dy[r] for every id.

    table_shape: (V, D), or just V (D is then dy's last axis). Without `out` returns a fresh
    zeroed (V, D) array of dy's dtype with the sums; with `out` (exactly (V, D), C-contiguous,
    float32 / float64, on the device of dy) adds into it and returns it; dy is cast to out's dtype."""
    where = device.dispatch(op, dy=dy, ids=ids, out=out)
    V, D = _table_shape(table_shape, op)
    if V < 1 or (D is not None and D < 0):
        raise ValueError(f"[{op}] table_shape must have V >= 1 and D >= 0, got {table_shape!r}")
    cuda = where == "cuda"
    xp = device.namespace(where)
    dtype = None
    if out is not None:
        if not cuda and not isinstance(out, np.ndarray):
            raise TypeError(f"[{op}] out must be a numpy.ndarray, got {type(out).__name__}")
        if out.dtype not in (np.float32, np.float64):
            raise ValueError(f"[{op}] out has dtype {out.dtype}, expected float32 or float64")
        dtype = out.dtype
    if cuda:
        if dy.dtype == object or not (np.issubdtype(dy.dtype, np.number) or dy.dtype == np.bool_) \
                or np.issubdtype(dy.dtype, np.complexfloating):
            raise TypeError(f"[{op}] dy must be a real numeric array, got dtype {dy.dtype}")
        g = device.as_float_cuda(dy, "dy", op, dtype=dtype).reshape(dy.shape)
    else:
        g = as_float_array(dy, "dy", op, dtype=dtype)
    if D is None:
        if g.ndim < 1:
            raise ValueError(f"[{op}] dy must have a feature axis, got a 0-d array")
        D = int(g.shape[-1])
    idx = _ids(ids, V, (V, D), op)
    want = tuple(idx.shape) + (D,)
    if tuple(g.shape) != want:
        raise ValueError(f"[{op}] dy has shape {tuple(g.shape)}, expected {want} (ids shape "
                         f"{tuple(idx.shape)} + output_dim {D})")
    if out is None:
        out = xp.zeros((V, D), dtype=g.dtype)
    else:
        if tuple(out.shape) != (V, D):
            raise ValueError(f"[{op}] out has shape {tuple(out.shape)}, expected {(V, D)}")
        if not out.flags.c_contiguous:
            raise ValueError(f"[{op}] out must be C-contiguous")
    if cuda:
        from ..cuda import embedding as cuda_embedding
        cuda_embedding.scatter_add(out, g, idx)
    elif idx.size:
        np.add.at(out, idx.reshape(-1), g.reshape(-1, D))
    return out


__all__ = ["embedding_forward", "embedding_backward"]
