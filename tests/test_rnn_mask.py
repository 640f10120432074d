"""Masked recurrent kernels and recurrent dropout: float64 NumPy reference of the same formulas,
finite differences, the naive twins, PyTorch's packed sequences, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from pydl.ops import rnn_backward, rnn_forward

from gradcheck import check_grad, numerical_grad
from test_rnn import CELLS, fast_poisoned, make, naive, upstream

G = {"rnn": 1, "lstm": 4, "gru": 3}


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def ref_forward(cell, act, x, W, U, b, h0=None, c0=None, b_h=None, mask=None, rscale=None):
    """float64: a step runs where mask != 0 (else h, c are kept); h_{t-1} enters h U as
    h_{t-1} * rscale. Returns (outputs, h_T, c_T or None)."""
    N, T, _ = x.shape
    H = U.shape[0]
    h = np.zeros((N, H)) if h0 is None else h0.astype(np.float64).copy()
    c = np.zeros((N, H)) if c0 is None else c0.astype(np.float64).copy()
    bh = np.zeros(U.shape[1]) if b_h is None else b_h
    s = np.ones((N, H)) if rscale is None else rscale
    outs = []
    for t in range(T):
        hu = (h * s) @ U
        gx = x[:, t] @ W + b
        if cell == "rnn":
            a = gx + hu
            hn, cn = (np.tanh(a) if act == "tanh" else np.maximum(a, 0.0)), c
        elif cell == "lstm":
            z = gx + hu
            i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
            cn = f * c + i * g
            hn = o * np.tanh(cn)
        else:
            gh = hu + bh
            r = sigmoid(gx[:, :H] + gh[:, :H])
            z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
            n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
            hn, cn = (1 - z) * n + z * h, c
        if mask is not None:
            m = mask[:, t:t + 1] != 0
            hn, cn = np.where(m, hn, h), np.where(m, cn, c)
        h, c = hn, cn
        outs.append(h)
    return np.stack(outs, 1), h, (c if cell == "lstm" else None)


def random_mask(rng, N, T):
    """Random masks with the awkward cases: an all-masked row, holes in the middle, pre- and
    post-padding, an all-valid row."""
    m = rng.random((N, T)) < 0.6
    m[0] = False
    if N > 1:
        m[1] = True
        m[1, T // 2] = False
    if N > 2:
        m[2] = np.arange(T) >= T // 3
    if N > 3:
        m[3] = np.arange(T) < T - T // 3
    return m


def scale(rng, N, H, rate=0.3, dtype=np.float64):
    return ((rng.random((N, H)) >= rate) / (1 - rate)).astype(dtype)


def with_extras(p, mask=None, rscale=None):
    q = dict(p)
    q["mask"] = None if mask is None else np.ascontiguousarray(mask, np.uint8)
    q["rscale"] = rscale
    return q


@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("use_mask,use_scale", [(True, False), (False, True), (True, True)],
                         ids=["mask", "rdrop", "mask+rdrop"])
def test_float64_matches_reference_and_finite_differences(cell, act, use_mask, use_scale, rng):
    N, T, C, H = 4, 5, 3, 3
    p = make(rng, cell, N, T, C, H)
    if act == "relu":
        p["b"] = p["b"] + np.sign(p["b"]) * 0.2
    mask = random_mask(rng, N, T) if use_mask else None
    rs = scale(rng, N, H) if use_scale else None
    out, hT, cT, cache = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act,
                                     mask=mask, recurrent_scale=rs)
    rout, rhT, rcT = ref_forward(cell, act, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], mask, rs)
    np.testing.assert_allclose(out, rout, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(hT, rhT, rtol=1e-11, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(cT, rcT, rtol=1e-11, atol=1e-12)
    if use_mask:  # the all-masked row keeps its initial state
        np.testing.assert_array_equal(hT[0], p["h0"][0])
    dout, dhT, dcT = upstream(rng, cell, N, T, H)
    g = rnn_backward(cell, dout, dhT, dcT, cache)

    def loss():
        o, h, c = ref_forward(cell, act, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], mask, rs)
        return np.sum(o * dout) + np.sum(h * dhT) + (np.sum(c * dcT) if cell == "lstm" else 0.0)

    for k, gk in {"x": "dx", "W": "dW", "U": "dU", "b": "db", "h0": "dh0", "c0": "dc0", "b_h": "db_h"}.items():
        if p[k] is not None:
            check_grad(g[gk], numerical_grad(loss, p[k]), rtol=1e-6, atol=1e-8)
    if use_mask:  # masked steps get no input gradient
        assert np.all(g["dx"][~mask] == 0)


@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11), (np.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(5, 7, 3, 17), (6, 4, 5, 40), (4, 9, 2, 5)], ids=lambda s: "N%dT%dC%dH%d" % s)
def test_fast_kernels_match_naive_twins_with_masks(cell, act, dtype, tol, shape, rng):
    N, T, C, H = shape
    p = make(rng, cell, N, T, C, H, dtype)
    for extras in (dict(mask=random_mask(rng, N, T)), dict(rscale=scale(rng, N, H, dtype=dtype)),
                   dict(mask=random_mask(rng, N, T), rscale=scale(rng, N, H, dtype=dtype))):
        q = with_extras(p, **extras)
        dout, dhT, dcT = (None if u is None else u.astype(dtype) for u in upstream(rng, cell, N, T, H))
        fast = fast_poisoned(cell, act, q, dout, dhT, dcT)
        slow = naive(cell, act, q, dout, dhT, dcT)
        for a, b_, nm in zip(fast[:3], slow[:3], ("out", "hT", "cT")):
            if b_ is not None:
                np.testing.assert_allclose(a, b_, rtol=tol, atol=tol, err_msg=nm)
        for k in slow[3]:
            if slow[3][k] is not None:
                scl = max(1.0, float(np.abs(slow[3][k]).max()))
                np.testing.assert_allclose(fast[3][k], slow[3][k], rtol=tol, atol=tol * scl, err_msg=k)


@pytest.mark.parametrize("cell,act", CELLS)
def test_all_ones_mask_and_unit_scale_equal_the_plain_path(cell, act, rng):
    N, T, C, H = 3, 6, 4, 20
    p = make(rng, cell, N, T, C, H, np.float32)
    plain = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act)
    masked = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act,
                         mask=np.ones((N, T), bool), recurrent_scale=np.ones((N, H), np.float32))
    np.testing.assert_array_equal(plain[0], masked[0])
    np.testing.assert_array_equal(plain[1], masked[1])


@pytest.mark.parametrize("cell,act", CELLS)
def test_pre_padding_equals_the_unpadded_tail(cell, act, rng):
    """With zero initial state, a pre-padded masked run ends where the unpadded sequence does."""
    N, T, C, H = 3, 7, 4, 6
    p = make(rng, cell, N, T, C, H, states=False)
    lengths = [7, 4, 1]
    mask = np.arange(T)[None, :] >= (T - np.array(lengths))[:, None]
    out, hT, cT, cache = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], b_h=p["b_h"], activation=act, mask=mask)
    dhT = rng.standard_normal((N, H))
    g = rnn_backward(cell, None, dhT, None, cache)
    for n, L in enumerate(lengths):
        tail = p["x"][n:n + 1, T - L:]
        o, h, c, cc = rnn_forward(cell, tail, p["W"], p["U"], p["b"], b_h=p["b_h"], activation=act)
        np.testing.assert_allclose(hT[n], h[0], rtol=1e-12, atol=1e-13)
        gn = rnn_backward(cell, None, dhT[n:n + 1], None, cc)
        np.testing.assert_allclose(g["dx"][n, T - L:], gn["dx"][0], rtol=1e-10, atol=1e-12)
        assert np.all(g["dx"][n, :T - L] == 0)


def _torch_module(torch, cell, C, H, p, bidirectional=False):
    mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        C, H, batch_first=True, bidirectional=bidirectional).double()
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(p["W"].T.copy()))
        mod.weight_hh_l0.copy_(torch.from_numpy(p["U"].T.copy()))
        if cell == "gru":
            mod.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
            mod.bias_hh_l0.copy_(torch.from_numpy(p["b_h"]))
        else:
            mod.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
            mod.bias_hh_l0.zero_()
    return mod


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_post_padding_matches_torch_packed_sequences(cell, rng):
    torch = pytest.importorskip("torch")
    N, T, C, H = 4, 6, 3, 5
    p = make(rng, cell, N, T, C, H, states=False)
    lengths = np.array([6, 3, 1, 5])
    mask = np.arange(T)[None, :] < lengths[:, None]
    out, hT, cT, cache = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], b_h=p["b_h"], mask=mask)
    dhT = rng.standard_normal((N, H))
    dcT = rng.standard_normal((N, H)) if cell == "lstm" else None
    g = rnn_backward(cell, None, dhT, dcT, cache)

    mod = _torch_module(torch, cell, C, H, p)
    xt = torch.from_numpy(p["x"].copy()).requires_grad_(True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=True,
                                                     enforce_sorted=False)
    _, st = mod(packed)
    h_t = st[0][0] if cell == "lstm" else st[0]
    np.testing.assert_allclose(hT, h_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    loss = (h_t * torch.from_numpy(dhT)).sum()
    if cell == "lstm":
        np.testing.assert_allclose(cT, st[1][0].detach().numpy(), rtol=1e-10, atol=1e-12)
        loss = loss + (st[1][0] * torch.from_numpy(dcT)).sum()
    loss.backward()
    np.testing.assert_allclose(g["dx"], xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(g["dW"], mod.weight_ih_l0.grad.numpy().T, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(g["dU"], mod.weight_hh_l0.grad.numpy().T, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(g["db"], mod.bias_ih_l0.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_mask_and_scale_are_validated(rng):
    p = make(rng, "lstm", 2, 3, 4, 5)
    args = (p["x"], p["W"], p["U"], p["b"])
    with pytest.raises(ValueError, match=r"mask has shape \(3, 2\), expected \(N, T\) = \(2, 3\)"):
        rnn_forward("lstm", *args, mask=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="mask has shape"):
        rnn_forward("lstm", *args, mask=np.ones(6, bool))
    with pytest.raises(TypeError, match="mask must be"):
        rnn_forward("lstm", *args, mask=np.array([["a"] * 3] * 2))
    with pytest.raises(ValueError, match="NaN"):
        rnn_forward("lstm", *args, mask=np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match=r"recurrent_scale has shape \(2, 4\), expected \(N, H\) = \(2, 5\)"):
        rnn_forward("lstm", *args, recurrent_scale=np.ones((2, 4)))
    from pydl import _core
    e = lambda *s: np.empty(s)  # noqa: E731
    kw = dict(cell=2, x=p["x"], W=p["W"], U=p["U"], b=p["b"], b_h=None, h0=None, c0=None, mask=None, rscale=None,
              out=e(2, 3, 5), hT=e(2, 5), cT=e(2, 5), gates=e(2, 3, 20), hprev=e(2, 3, 5), cs=e(2, 3, 5), q=None)
    for bad in (dict(mask=np.ones((2, 3), bool)), dict(mask=np.ones((2, 4), np.uint8)),
                dict(mask=np.ones((3, 2), np.uint8).T), dict(rscale=np.ones((2, 5), np.float32))):
        with pytest.raises(ValueError, match=r"\[rnn_forward\]"):
            _core.rnn_forward(**{**kw, **bad})
