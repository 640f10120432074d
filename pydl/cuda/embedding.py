"""Launchers of kernels/embedding.cu (row gather and atomic scatter-add).

Arrays come validated from `pydl.ops.embedding`: a C-contiguous table / gradient of one float
dtype and int64 ids already checked to lie in [0, V).
"""
from __future__ import annotations

import numpy as np

from . import blocks, cupy_module, kernel

THREADS = 256


def gather(ids, table):
    """table[ids]: shape ids.shape + (D,)."""
    cp = cupy_module()
    D = int(table.shape[1])
    y = cp.empty(tuple(ids.shape) + (D,), dtype=table.dtype)
    n = int(ids.size)
    if n and D:
        kernel("embedding", "embedding_gather", table.dtype)(
            (blocks(n * D, THREADS),), (THREADS,), (y, table, ids, np.int64(n), np.int64(D)))
    return y


def scatter_add(out, dy, ids) -> None:
    """out[ids[r]] += dy[r] for every r (atomic adds: repeated ids sum, in no fixed order)."""
    D = int(out.shape[1])
    n = int(ids.size)
    if n and D:
        kernel("embedding", "embedding_scatter_add", out.dtype)(
            (blocks(n * D, THREADS),), (THREADS,), (out, dy, ids, np.int64(n), np.int64(D)))
