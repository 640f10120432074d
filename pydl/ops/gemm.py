"""Matrix products on the hand-written SGEMM (float32) or the float64 path."""
from __future__ import annotations

import numpy as np

from .. import _core
from .._validate import as_float_array, check_ndim, check_out

_MAX_INDEX = 2**62


def _as_operand(x, name: str, dtype=None):
    """Return (C-contiguous array, transposed flag) without copying a transposed view.

    A Fortran-ordered 2-D array (such as `a.T` of a C-ordered `a`) is passed as its C-ordered
    transpose with the transpose flag set; any other non-contiguous input is copied.
    """
    if isinstance(x, np.ndarray) and x.ndim == 2 and not x.flags.c_contiguous and x.flags.f_contiguous \
            and (dtype is None or x.dtype == dtype) and x.dtype in (np.float32, np.float64):
        return x.T, True
    arr = as_float_array(x, name, "matmul", dtype=dtype)
    return arr, False


def _result_dtype(a, b):
    da = a.dtype if isinstance(a, np.ndarray) else np.asarray(a).dtype
    db = b.dtype if isinstance(b, np.ndarray) else np.asarray(b).dtype
    return np.float64 if (da == np.float64 or db == np.float64) else np.float32


def gemm(a, b, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0, beta: float = 0.0,
         out=None) -> np.ndarray:
    """out = alpha * op(a) @ op(b) + beta * out, with op(x) = x.T when trans_x.

    float32 runs the packed SIMD SGEMM; float64 a simpler exact path. Mixed dtypes compute in
    float64. `out`, if given, must be C-contiguous with the exact dtype and shape.
    """
    dtype = _result_dtype(a, b)
    a_arr, ta = _as_operand(a, "a", dtype)
    b_arr, tb = _as_operand(b, "b", dtype)
    check_ndim(a_arr, 2, "a", "matmul")
    check_ndim(b_arr, 2, "b", "matmul")
    ta, tb = ta != bool(trans_a), tb != bool(trans_b)
    m, k = (a_arr.shape[1], a_arr.shape[0]) if ta else a_arr.shape
    kb, n = (b_arr.shape[1], b_arr.shape[0]) if tb else b_arr.shape
    if k != kb:
        raise ValueError(f"[matmul] inner dimensions differ: a {tuple(np.shape(a))} and b {tuple(np.shape(b))}"
                         f"{' (after transpose flags)' if (trans_a or trans_b) else ''}")
    if max(m, 1) * max(n, 1) >= _MAX_INDEX or max(m, 1) * max(k, 1) >= _MAX_INDEX or \
            max(k, 1) * max(n, 1) >= _MAX_INDEX:
        raise ValueError(f"[matmul] product of shapes {(m, k)} x {(k, n)} is too large to index")
    if out is None:
        if beta != 0.0:
            raise ValueError("[matmul] beta != 0 needs an `out` array to accumulate into")
        out = np.empty((m, n), dtype=dtype)
    else:
        check_out(out, (m, n), dtype, "matmul")
    if m and n:
        _core.gemm(a_arr, b_arr, out, ta, tb, float(alpha), float(beta))
    return out


def matmul(a, b, out=None) -> np.ndarray:
    """Matrix product of two 2-D arrays, `a @ b`, on pydl's SGEMM.

    A transposed view (`x.T`) is read in place through a transpose flag, not copied.
    """
    return gemm(a, b, out=out)
