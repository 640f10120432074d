"""float64 NumPy references for the recurrent cells, forward and backward through time.

Written step by step with whole-batch matrix products, independent of the C++ kernels (and
checked themselves by finite differences in test_rnn.py). Same contract as pydl.ops.rnn:
x (N, T, C), W (C, G*H), U (H, G*H), b (G*H,), GRU b_h (G*H,); gate orders i f g o / r z n.
"""
from __future__ import annotations

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def forward(cell, x, W, U, b, h0=None, c0=None, b_h=None, activation="tanh"):
    """Returns (outputs (N, T, H), h_T, c_T or None, tape) where tape feeds `backward`."""
    x = np.asarray(x, np.float64)
    N, T, _ = x.shape
    H = U.shape[0]
    h = np.zeros((N, H)) if h0 is None else np.asarray(h0, np.float64).copy()
    c = np.zeros((N, H)) if c0 is None else np.asarray(c0, np.float64).copy()
    bh = np.zeros(U.shape[1]) if b_h is None else np.asarray(b_h, np.float64)
    outs, tape = [], []
    for t in range(T):
        xt = x[:, t]
        if cell == "rnn":
            a = xt @ W + h @ U + b
            hn = np.tanh(a) if activation == "tanh" else np.maximum(a, 0.0)
            tape.append({"h": h, "a": a})
            h = hn
        elif cell == "lstm":
            z = xt @ W + h @ U + b
            i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
            cn = f * c + i * g
            hn = o * np.tanh(cn)
            tape.append({"h": h, "c": c, "i": i, "f": f, "g": g, "o": o, "cn": cn})
            h, c = hn, cn
        elif cell == "gru":
            gx = xt @ W + b
            gh = h @ U + bh
            r = sigmoid(gx[:, :H] + gh[:, :H])
            z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
            n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
            hn = (1.0 - z) * n + z * h
            tape.append({"h": h, "r": r, "z": z, "n": n, "ghn": gh[:, 2 * H:]})
            h = hn
        else:
            raise ValueError(cell)
        outs.append(h)
    out = np.stack(outs, axis=1) if outs else np.zeros((N, 0, H))
    return out, h, (c if cell == "lstm" else None), tape


def backward(cell, dout, dhT, dcT, x, W, U, tape, activation="tanh"):
    """Gradients of sum(dout * out) + sum(dhT * h_T) + sum(dcT * c_T) w.r.t. every input."""
    x = np.asarray(x, np.float64)
    N, T, C = x.shape
    H = U.shape[0]
    GH = U.shape[1]
    dW, dU, db, dbh = np.zeros((C, GH)), np.zeros((H, GH)), np.zeros(GH), np.zeros(GH)
    dx = np.zeros((N, T, C))
    dh = np.zeros((N, H)) if dhT is None else np.asarray(dhT, np.float64).copy()
    dc = np.zeros((N, H)) if dcT is None else np.asarray(dcT, np.float64).copy()
    for t in reversed(range(T)):
        s = tape[t]
        if dout is not None:
            dh = dh + dout[:, t]
        if cell == "rnn":
            da = dh * (1.0 - np.tanh(s["a"]) ** 2) if activation == "tanh" else dh * (s["a"] > 0)
            dgx = dgh = da
            dh_direct = 0.0
        elif cell == "lstm":
            tc = np.tanh(s["cn"])
            dct = dc + dh * s["o"] * (1.0 - tc ** 2)
            di = dct * s["g"] * s["i"] * (1.0 - s["i"])
            df = dct * s["c"] * s["f"] * (1.0 - s["f"])
            dg = dct * s["i"] * (1.0 - s["g"] ** 2)
            do = dh * tc * s["o"] * (1.0 - s["o"])
            dgx = dgh = np.concatenate([di, df, dg, do], axis=1)
            dc = dct * s["f"]
            dh_direct = 0.0
        else:
            r, z, n = s["r"], s["z"], s["n"]
            dn = dh * (1.0 - z) * (1.0 - n ** 2)
            dz = dh * (s["h"] - n) * z * (1.0 - z)
            dr = dn * s["ghn"] * r * (1.0 - r)
            dgx = np.concatenate([dr, dz, dn], axis=1)
            dgh = np.concatenate([dr, dz, dn * r], axis=1)
            dh_direct = dh * z
        dW += x[:, t].T @ dgx
        dU += s["h"].T @ dgh
        db += dgx.sum(0)
        dbh += dgh.sum(0)
        dx[:, t] = dgx @ W.T
        dh = dgh @ U.T + dh_direct
    return {"dx": dx, "dh0": dh, "dc0": dc if cell == "lstm" else None, "dW": dW, "dU": dU, "db": db,
            "db_h": dbh if cell == "gru" else None}
