"""float64 NumPy references for convolution and pooling (NCHW), written from the formulas.

    y[n,k,p,q] = b[k] + sum_{c,r,s} w[k,c,r,s] * xpad[n, c, p*sh + r*dh, q*sw + s*dw]

with xpad the input zero-padded by (top, bottom, left, right). Backward follows by the chain
rule: dw and db contract dy with the same windows, dx scatters dy * w back into xpad.
"""
from __future__ import annotations

import numpy as np


def out_size(size, k, stride, lo, hi, dil):
    return (size + lo + hi - ((k - 1) * dil + 1)) // stride + 1


def _windows(xp, R, S, P, Q, st, dl):
    """For each (r, s): the strided view xpad[:, :, r*dh : ... : sh, s*dw : ... : sw] of shape (N, C, P, Q)."""
    sh, sw = st
    dh, dw = dl
    for r in range(R):
        for s in range(S):
            h0, w0 = r * dh, s * dw
            yield r, s, xp[:, :, h0:h0 + (P - 1) * sh + 1:sh, w0:w0 + (Q - 1) * sw + 1:sw]


def conv2d_ref(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1)):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pt, pb, pl, pr = pads
    P = out_size(H, R, stride[0], pt, pb, dil[0])
    Q = out_size(W, S, stride[1], pl, pr, dil[1])
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((N, K, P, Q))
    for r, s, win in _windows(xp, R, S, P, Q, stride, dil):
        y += np.einsum("ncpq,kc->nkpq", win, w[:, :, r, s])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward_ref(dy, x, w, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1)):
    dy = np.asarray(dy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    pt, pb, pl, pr = pads
    P, Q = dy.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    sh, sw = stride
    dh, dwl = dil
    for r, s, win in _windows(xp, R, S, P, Q, stride, dil):
        dw[:, :, r, s] = np.einsum("nkpq,ncpq->kc", dy, win)
        h0, w0 = r * dh, s * dwl
        dxp[:, :, h0:h0 + (P - 1) * sh + 1:sh, w0:w0 + (Q - 1) * sw + 1:sw] += np.einsum("nkpq,kc->ncpq", dy,
                                                                                          w[:, :, r, s])
    dx = dxp[:, :, pt:pt + H, pl:pl + W]
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


def _pool_windows(x, pool, stride, pads, fill):
    N, C, H, W = x.shape
    R, S = pool
    pt, pb, pl, pr = pads
    P = (H + pt + pb - R) // stride[0] + 1
    Q = (W + pl + pr - S) // stride[1] + 1
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    valid = np.pad(np.ones((H, W)), ((pt, pb), (pl, pr)))
    return xp, valid, P, Q


def max_pool2d_ref(x, pool, stride, pads=(0, 0, 0, 0)):
    """(y, argmax) with argmax = h*W + w of the first maximum in row-major window order."""
    N, C, H, W = x.shape
    R, S = pool
    pt, pb, pl, pr = pads
    xp, _, P, Q = _pool_windows(x, pool, stride, pads, -np.inf)
    y = np.empty((N, C, P, Q))
    am = np.empty((N, C, P, Q), np.int64)
    for p in range(P):
        for q in range(Q):
            h0, w0 = p * stride[0], q * stride[1]
            win = xp[:, :, h0:h0 + R, w0:w0 + S].reshape(N, C, R * S)
            j = np.argmax(win, axis=2)
            y[:, :, p, q] = np.take_along_axis(win, j[..., None], 2)[..., 0]
            am[:, :, p, q] = (h0 + j // S - pt) * W + (w0 + j % S - pl)
    return y, am


def max_pool2d_backward_ref(dy, argmax, x_shape):
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W))
    flat_dy = np.asarray(dy, np.float64).reshape(N * C, -1)
    flat_am = np.asarray(argmax).reshape(N * C, -1)
    for i in range(N * C):
        np.add.at(dx[i], flat_am[i], flat_dy[i])
    return dx.reshape(x_shape)


def avg_pool2d_ref(x, pool, stride, pads=(0, 0, 0, 0), count_include_pad=True):
    N, C, H, W = x.shape
    R, S = pool
    xp, valid, P, Q = _pool_windows(x, pool, stride, pads, 0.0)
    y = np.empty((N, C, P, Q))
    for p in range(P):
        for q in range(Q):
            h0, w0 = p * stride[0], q * stride[1]
            div = R * S if count_include_pad else valid[h0:h0 + R, w0:w0 + S].sum()
            y[:, :, p, q] = xp[:, :, h0:h0 + R, w0:w0 + S].sum(axis=(2, 3)) / div
    return y


def avg_pool2d_backward_ref(dy, x_shape, pool, stride, pads=(0, 0, 0, 0), count_include_pad=True):
    N, C, H, W = x_shape
    R, S = pool
    pt, pb, pl, pr = pads
    dxp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    valid = np.pad(np.ones((H, W)), ((pt, pb), (pl, pr)))
    dy = np.asarray(dy, np.float64)
    for p in range(dy.shape[2]):
        for q in range(dy.shape[3]):
            h0, w0 = p * stride[0], q * stride[1]
            div = R * S if count_include_pad else valid[h0:h0 + R, w0:w0 + S].sum()
            dxp[:, :, h0:h0 + R, w0:w0 + S] += dy[:, :, p:p + 1, q:q + 1] / div
    return dxp[:, :, pt:pt + H, pl:pl + W]
