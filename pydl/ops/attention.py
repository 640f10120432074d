"""Fused scaled-dot-product attention (one C++ kernel each way, `pydl._core.attention_*`).

Shapes as PyTorch's: q (B, H, T, d), k (B, H, S, d), v (B, H, S, dv) -> out (B, H, T, dv);
S may differ from T. out = softmax(q k^T * scale + mask) v with scale = 1/sqrt(d) by default.

- mask: None, a boolean array (True = attend, as PyTorch's boolean `attn_mask`) or a float array
  added to the scores, broadcastable to (B, H, T, S) (any rank <= 4, NumPy broadcasting rules).
- causal=True: PyTorch's convention, top-left aligned: query i attends the keys j <= i (also
  when T != S). It combines with `mask`.
- A query row whose keys are all masked gives an output row of zeros (and lse = -inf, zero
  gradients), not NaN as plain softmax would. Masked means False or -inf: finite values, however
  negative (np.finfo(dtype).min included), are ordinary additive values; those below
  -max / log2(e) (float32: -2.36e38) act as that bound.
- dropout (training only) drops attention probabilities with probability `dropout` and scales
  the kept ones by 1/(1 - dropout). The decision is a counter-based hash of (seed, b, h, i, j), so
  the backward regenerates it: nothing T x S is stored. dropout=0 or training=False is exact.
- float32 runs the fast kernels; float64 the same algorithm in double (for gradient checks).
  Inputs of other numeric dtypes are cast to float32; float32 and float64 inputs may not be
  mixed. Non-contiguous inputs are copied.

Memory: O(B H T (d + dv)); the T x S score matrix is never formed. `attention_forward` returns
(out, lse) and `attention_backward` takes them back (FlashAttention-2's backward).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _core
from .. import random as _random
from .._validate import as_float_array

__all__ = ["scaled_dot_product_attention", "attention_forward", "attention_backward"]


def _float_dtype(op: str, **arrays) -> np.dtype:
    """The one float dtype of the float inputs (float32 when none is float): mixing float32 and
    float64 is an error rather than a silent cast."""
    seen = {}
    for name, a in arrays.items():
        if a is None:
            continue
        dt = getattr(a, "dtype", None)
        if dt is None:
            dt = np.asarray(a).dtype
        if dt.kind == "f" and dt.itemsize in (4, 8):
            seen[name] = np.dtype(np.float64 if dt.itemsize == 8 else np.float32)
    kinds = set(seen.values())
    if len(kinds) > 1:
        desc = ", ".join(f"{n} {d}" for n, d in seen.items())
        raise ValueError(f"[{op}] float32 and float64 inputs cannot be mixed, got {desc}")
    return kinds.pop() if kinds else np.dtype(np.float32)


def _check_rank4(a: np.ndarray, name: str, op: str, letters: str) -> None:
    if a.ndim != 4:
        raise ValueError(f"[{op}] {name} has {a.ndim} dims {tuple(a.shape)}, expected 4 {letters}")


def _prepare(op, q, k, v, mask, causal, dropout, scale, seed, need_seed):
    dtype = _float_dtype(op, q=q, k=k, v=v)
    q = as_float_array(q, "q", op, dtype)
    k = as_float_array(k, "k", op, dtype)
    v = as_float_array(v, "v", op, dtype)
    _check_rank4(q, "q", op, "(B, H, T, d)")
    _check_rank4(k, "k", op, "(B, H, S, d)")
    _check_rank4(v, "v", op, "(B, H, S, dv)")
    B, H, T, d = q.shape
    S = k.shape[2]
    if k.shape[:2] != (B, H) or v.shape[:2] != (B, H):
        raise ValueError(f"[{op}] q {q.shape}, k {k.shape} and v {v.shape} must share batch and heads (B, H) = "
                         f"{(B, H)}")
    if k.shape[3] != d:
        raise ValueError(f"[{op}] k {k.shape} must have q's feature size d = {d} (q {q.shape})")
    if v.shape[2] != S:
        raise ValueError(f"[{op}] v {v.shape} must have as many positions as k: S = {S} (k {k.shape})")
    if d == 0:
        raise ValueError(f"[{op}] q {q.shape} and k {k.shape} have no features (d = 0)")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"[{op}] causal must be a bool, got {causal!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"[{op}] dropout must be a float in [0, 1), got {dropout!r}")
    dropout = float(dropout)
    if not (0.0 <= dropout < 1.0):
        raise ValueError(f"[{op}] dropout must be in [0, 1), got {dropout!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    else:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"[{op}] scale must be a real number or None, got {scale!r}")
        scale = float(scale)
        if not math.isfinite(scale):
            raise ValueError(f"[{op}] scale must be finite, got {scale!r}")
    if dropout > 0.0:
        if seed is None:
            if need_seed:
                raise ValueError(f"[{op}] dropout = {dropout} needs an explicit seed (int in [0, 2**64)) so that "
                                 f"attention_backward can regenerate the same mask")
            seed = _random.next_seed()
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not (0 <= int(seed) < 2**64):
            raise ValueError(f"[{op}] seed must be an int in [0, 2**64), got {seed!r}")
        seed = int(seed)
    else:
        seed = 0
    mask = _prepare_mask(op, mask, dtype, (B, H, T, S))
    return q, k, v, mask, bool(causal), dropout, scale, seed


def _prepare_mask(op, mask, dtype, full):
    if mask is None:
        return None
    m = mask if isinstance(mask, np.ndarray) else np.asarray(mask)
    if m.dtype == object or not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.number)):
        raise TypeError(f"[{op}] mask must be a boolean or numeric array, got dtype {m.dtype}")
    if np.issubdtype(m.dtype, np.complexfloating):
        raise TypeError(f"[{op}] mask must be real, got dtype {m.dtype}")
    if m.ndim > 4:
        raise ValueError(f"[{op}] mask has {m.ndim} dims {m.shape}, not broadcastable to (B, H, T, S) = {full}")
    shape4 = (1,) * (4 - m.ndim) + tuple(m.shape)
    for got, want in zip(shape4, full):
        if got != 1 and got != want:
            raise ValueError(f"[{op}] mask {tuple(m.shape)} is not broadcastable to (B, H, T, S) = {full}")
    if m.dtype == np.bool_:
        return np.ascontiguousarray(m.reshape(shape4))
    m = np.asarray(m.reshape(shape4), dtype=dtype, order="C")
    # The kernels add the mask in log2 units (times log2(e)): a finite value below
    # -max / log2(e), such as np.finfo(np.float32).min (a common "masked" value), would overflow
    # to -inf there, and a row masked that way throughout would read as fully masked (zeros, lse
    # -inf) instead of uniform over its keys. Such values are held just above that bound: still
    # finite and far below any score (they only tie with each other; s + lo == lo in float32 for
    # any ordinary score s anyway). -inf stays -inf; the scan is one pass over the mask as given.
    lowest = _lowest_mask(dtype)
    if m.size and m.min() < lowest:
        fix = (m < lowest) & ~np.isneginf(m)
        if fix.any():
            m = np.where(fix, lowest, m).astype(dtype, copy=False)
    return m


def _lowest_mask(dtype) -> float:
    """The most negative mask value whose product with log2(e) stays finite (1e-6 margin)."""
    return float(np.finfo(dtype).min) / 1.4426950408889634 * (1.0 - 1e-6)


def attention_forward(q, k, v, mask=None, causal: bool = False, dropout: float = 0.0, scale=None,
                      training: bool = True, seed=None):
    """Fused attention forward. Returns (out (B, H, T, dv), lse (B, H, T)).

    lse is the natural log-sum-exp of each query row's (scaled, masked) scores, -inf for a fully
    masked row; pass out and lse to `attention_backward`. With dropout active (dropout > 0 and
    training) `seed` is required and must be given to the backward too.
    """
    op = "attention_forward"
    if not training:
        dropout = 0.0
    q, k, v, mask, causal, dropout, scale, seed = _prepare(op, q, k, v, mask, causal, dropout, scale, seed, True)
    B, H, T, _ = q.shape
    out = np.empty((B, H, T, v.shape[3]), q.dtype)
    lse = np.empty((B, H, T), q.dtype)
    _core.attention_forward(q, k, v, mask, causal, dropout, scale, seed, out, lse)
    return out, lse


def attention_backward(q, k, v, out, lse, dout, mask=None, causal: bool = False, dropout: float = 0.0, scale=None,
                       seed=None):
    """Gradients (dq, dk, dv) of the forward pass that returned (out, lse), given dout = dL/dout.

    Takes the same q, k, v, mask, causal, dropout, scale and seed as that forward (dropout here is
    the rate that was applied: pass 0 for an inference-mode forward). Every gradient is written
    fresh (not accumulated).
    """
    op = "attention_backward"
    q, k, v, mask, causal, dropout, scale, seed = _prepare(op, q, k, v, mask, causal, dropout, scale, seed, True)
    B, H, T, d = q.shape
    S, dv = v.shape[2], v.shape[3]
    dtype = q.dtype

    def cached(a, name, shape):
        if a is None:
            raise ValueError(f"[{op}] {name} is required (from attention_forward)")
        a = as_float_array(a, name, op)
        if a.dtype != dtype:
            raise ValueError(f"[{op}] {name} has dtype {a.dtype}, expected {dtype} like q")
        if a.shape != shape:
            raise ValueError(f"[{op}] {name} has shape {a.shape}, expected {shape}")
        return a

    out = cached(out, "out", (B, H, T, dv))
    lse = cached(lse, "lse", (B, H, T))
    dout = cached(dout, "dout", (B, H, T, dv))
    dq = np.empty((B, H, T, d), dtype)
    dk = np.empty((B, H, S, d), dtype)
    dvv = np.empty((B, H, S, dv), dtype)
    _core.attention_backward(q, k, v, out, lse, dout, mask, causal, dropout, scale, seed, dq, dk, dvv)
    return dq, dk, dvv


def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False, dropout: float = 0.0, scale=None,
                                 training: bool = True, seed=None):
    """softmax(q k^T * scale + mask) v, fused (see the module docstring). Forward only: returns out.

    seed: the dropout hash's seed; None draws one from `pydl.seed`'s generator.
    """
    op = "scaled_dot_product_attention"
    if not training:
        dropout = 0.0
    q, k, v, mask, causal, dropout, scale, seed = _prepare(op, q, k, v, mask, causal, dropout, scale, seed, False)
    B, H, T, _ = q.shape
    out = np.empty((B, H, T, v.shape[3]), q.dtype)
    lse = np.empty((B, H, T), q.dtype)
    _core.attention_forward(q, k, v, mask, causal, dropout, scale, seed, out, lse)
    return out
