"""float64 NumPy reference for the GEMM family: C = alpha * op(A) @ op(B) + beta * C."""
from __future__ import annotations

import numpy as np


def gemm_ref(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None):
    """Exact-as-possible reference in float64; beta == 0 ignores c (even if it holds NaN)."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    opa = a64.T if trans_a else a64
    opb = b64.T if trans_b else b64
    prod = alpha * (opa @ opb)
    if beta != 0.0 and c is not None:
        prod = prod + beta * np.asarray(c, dtype=np.float64)
    return prod


def rel_err(got, want) -> float:
    """Largest error relative to the largest reference magnitude (0 for an all-zero reference)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"shape {got.shape} != {want.shape}")
    if got.size == 0:
        return 0.0
    if not np.all(np.isfinite(got)):
        return float("inf")
    scale = max(float(np.max(np.abs(want))), 1e-30)
    return float(np.max(np.abs(got - want))) / scale


def tol32(k: int) -> float:
    """float32 tolerance for a length-k inner product."""
    return 1e-5 * np.sqrt(max(k, 1)) + 1e-6
