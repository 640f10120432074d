"""float64 NumPy references for scaled-dot-product attention and layer normalisation, forward and
backward, written from the formulas (the full T x S matrices: small shapes only). Their gradients
are checked against central differences in test_attention.py / test_layernorm.py.

Attention: s = scale q k^T + mask (boolean mask: -inf where False; causal: -inf for j > i);
P = softmax(s) row-wise (a fully masked row: P = 0, lse = -inf); Z = dropout factors (0 or
1/(1-p), from the counter-based hash below); out = (P * Z) v.
Backward: dV = (P Z)^T dO; dP = Z * (dO v^T); D = rowsum(P * dP); dS = P (dP - D);
dq = scale dS k; dk = scale dS^T q.
"""
from __future__ import annotations

import numpy as np

_M64 = (1 << 64) - 1


def _splitmix64(x):
    """splitmix64 on a uint64 array (wrapping arithmetic)."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(_M64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _lowbias32(x):
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def dropout_keep(seed: int, B: int, H: int, T: int, S: int, p: float) -> np.ndarray:
    """Boolean (B, H, T, S): True where the element is kept. Row key = low 32 bits of
    splitmix64(splitmix64(seed) + ((b H + h) T + i) * golden64); u = lowbias32(key ^ (j * golden32));
    kept when (u >> 8) >= round(p * 2^24)."""
    with np.errstate(over="ignore"):
        s0 = _splitmix64(np.array([seed], dtype=np.uint64))[0]
        idx = np.arange(B * H * T, dtype=np.uint64)
        keys = _splitmix64(s0 + idx * np.uint64(0x9E3779B97F4A7C15)).astype(np.uint32)
        j = (np.arange(S, dtype=np.uint64) * np.uint64(0x9E3779B9)).astype(np.uint32)
        u = _lowbias32(keys[:, None] ^ j[None, :])
    thr = int(p * 16777216.0 + 0.5)
    return ((u >> np.uint32(8)).astype(np.int64) >= thr).reshape(B, H, T, S)


def _scores(q, k, mask, causal, scale):
    s = scale * np.einsum("bhtd,bhsd->bhts", q, k)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype == np.bool_:
            s = np.where(m, s, -np.inf)
        else:
            s = s + m.astype(np.float64)
    if causal:
        T, S = s.shape[-2:]
        s = np.where(np.tril(np.ones((T, S), dtype=bool)), s, -np.inf)
    return s


def _softmax(s):
    m = np.max(s, axis=-1, keepdims=True)
    dead = ~np.isfinite(m) & (m < 0)  # all -inf
    m = np.where(dead, 0.0, m)
    e = np.exp(s - m)
    l = np.sum(e, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(dead, 0.0, e / l)
        lse = np.where(dead[..., 0], -np.inf, (m + np.log(l))[..., 0])
    return p, lse


def _factors(shape, dropout, seed):
    if dropout <= 0:
        return np.ones(shape)
    B, H, T, S = shape
    return dropout_keep(seed, B, H, T, S, dropout) / (1.0 - dropout)


def attention_ref(q, k, v, mask=None, causal=False, dropout=0.0, scale=None, seed=0):
    """Returns (out, lse) in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    p, lse = _softmax(_scores(q, k, mask, causal, scale))
    z = _factors(p.shape, dropout, seed)
    return np.einsum("bhts,bhsd->bhtd", p * z, v), lse


def attention_backward_ref(q, k, v, dout, mask=None, causal=False, dropout=0.0, scale=None, seed=0):
    """Returns (dq, dk, dv) in float64."""
    q, k, v, dout = (np.asarray(a, np.float64) for a in (q, k, v, dout))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    p, _ = _softmax(_scores(q, k, mask, causal, scale))
    z = _factors(p.shape, dropout, seed)
    dv = np.einsum("bhts,bhtd->bhsd", p * z, dout)
    dp = z * np.einsum("bhtd,bhsd->bhts", dout, v)
    D = np.sum(p * dp, axis=-1, keepdims=True)
    ds = p * (dp - D)
    dq = scale * np.einsum("bhts,bhsd->bhtd", ds, k)
    dk = scale * np.einsum("bhts,bhtd->bhsd", ds, q)
    return dq, dk, dv


def layer_norm_ref(x, gamma=None, beta=None, eps=1e-5):
    """Returns (y, mean, rstd) in float64."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=-1)
    var = ((x - mean[..., None]) ** 2).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean[..., None]) * rstd[..., None]
    if gamma is not None:
        y = y * np.asarray(gamma, np.float64)
    if beta is not None:
        y = y + np.asarray(beta, np.float64)
    return y, mean, rstd


def layer_norm_backward_ref(dy, x, gamma=None, eps=1e-5):
    """Returns (dx, dgamma, dbeta) in float64 (statistics recomputed from x)."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    C = x.shape[-1]
    _, mean, rstd = layer_norm_ref(x, eps=eps)
    xhat = (x - mean[..., None]) * rstd[..., None]
    g = dy * (np.asarray(gamma, np.float64) if gamma is not None else 1.0)
    dx = rstd[..., None] * (g - g.sum(-1, keepdims=True) / C - xhat * (g * xhat).sum(-1, keepdims=True) / C)
    red = tuple(range(x.ndim - 1))
    return dx, (dy * xhat).sum(axis=red), dy.sum(axis=red)
