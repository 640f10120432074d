"""Recurrent cells: kernels vs float64 NumPy references, finite differences, naive twins,
PyTorch (when importable), threads, long sequences, bad input; the layers and Embedding."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import pydl
from pydl import _core
from pydl.layers import GRU, LSTM, Embedding, SimpleRNN
from pydl.ops import rnn_backward, rnn_forward

import reference_rnn as ref
from gradcheck import check_grad, numerical_grad

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
CELL_IDS = {("rnn", "tanh"): 0, ("rnn", "relu"): 1, ("lstm", "tanh"): 2, ("gru", "tanh"): 3}
G = {"rnn": 1, "lstm": 4, "gru": 3}


def make(rng, cell, N, T, C, H, dtype=np.float64, scale=0.5, states=True):
    GH = G[cell] * H
    p = {
        "x": rng.standard_normal((N, T, C)),
        "W": rng.standard_normal((C, GH)) * scale,
        "U": rng.standard_normal((H, GH)) * scale,
        "b": rng.standard_normal(GH) * 0.3,
        "h0": rng.standard_normal((N, H)) * 0.5 if states else None,
        "c0": rng.standard_normal((N, H)) * 0.5 if (states and cell == "lstm") else None,
        "b_h": rng.standard_normal(GH) * 0.3 if cell == "gru" else None,
    }
    return {k: (None if v is None else v.astype(dtype)) for k, v in p.items()}


def run_ops(cell, act, p, dout, dhT, dcT):
    out, hT, cT, cache = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], h0=p["h0"], c0=p["c0"], b_h=p["b_h"],
                                     activation=act)
    g = rnn_backward(cell, dout, dhT, dcT, cache)
    return out, hT, cT, g


def run_ref(cell, act, p, dout, dhT, dcT):
    f64 = {k: (None if v is None else v.astype(np.float64)) for k, v in p.items()}
    out, hT, cT, tape = ref.forward(cell, f64["x"], f64["W"], f64["U"], f64["b"], f64["h0"], f64["c0"], f64["b_h"],
                                    act)
    g = ref.backward(cell, dout, dhT, dcT, f64["x"], f64["W"], f64["U"], tape, act)
    return out, hT, cT, g


def upstream(rng, cell, N, T, H, with_seq=True):
    dout = rng.standard_normal((N, T, H)) if with_seq else None
    dhT = rng.standard_normal((N, H))
    dcT = rng.standard_normal((N, H)) if cell == "lstm" else None
    return dout, dhT, dcT


def close(a, want, rtol, atol, what):
    """allclose with atol relative to the array's largest magnitude (float32 sums of terms that
    cancel carry absolute, not relative, rounding errors)."""
    want = np.asarray(want)
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(a, want, rtol=rtol, atol=atol * scale, err_msg=what)


def assert_all_close(got, want, rtol, atol):
    out, hT, cT, g = got
    rout, rhT, rcT, rg = want
    close(out, rout, rtol, atol, "outputs")
    close(hT, rhT, rtol, atol, "h_T")
    if rcT is not None:
        close(cT, rcT, rtol, atol, "c_T")
    for k in ("dx", "dh0", "dc0", "dW", "dU", "db", "db_h"):
        if rg[k] is None:
            assert g[k] is None, k
        else:
            close(g[k], rg[k], rtol, atol, k)


# ---- the reference itself, by finite differences -----------------------------------------

@pytest.mark.parametrize("cell,act", CELLS)
def test_reference_backward_matches_finite_differences(cell, act, rng):
    N, T, C, H = 2, 3, 3, 2
    p = make(rng, cell, N, T, C, H)
    if act == "relu":  # keep pre-activations away from the kink
        p["b"] = p["b"] + np.sign(p["b"]) * 0.2
    dout, dhT, dcT = upstream(rng, cell, N, T, H)

    def loss():
        out, hT, cT, _ = ref.forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act)
        s = np.sum(out * dout) + np.sum(hT * dhT)
        return s + (np.sum(cT * dcT) if cell == "lstm" else 0.0)

    _, _, _, tape = ref.forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act)
    g = ref.backward(cell, dout, dhT, dcT, p["x"], p["W"], p["U"], tape, act)
    names = {"x": "dx", "W": "dW", "U": "dU", "b": "db", "h0": "dh0", "c0": "dc0", "b_h": "db_h"}
    for k, gk in names.items():
        if p[k] is not None:
            check_grad(g[gk], numerical_grad(loss, p[k]), rtol=1e-6, atol=1e-8)


# ---- kernels vs the reference ------------------------------------------------------------

SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 7, 5, 17), (1, 4, 3, 33), (5, 2, 9, 16), (4, 6, 2, 40)]


@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N%dT%dC%dH%d" % s)
def test_float64_matches_reference(cell, act, shape, rng):
    N, T, C, H = shape
    p = make(rng, cell, N, T, C, H)
    up = upstream(rng, cell, N, T, H)
    assert_all_close(run_ops(cell, act, p, *up), run_ref(cell, act, p, *up), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N%dT%dC%dH%d" % s)
def test_float32_matches_reference(cell, act, shape, rng):
    N, T, C, H = shape
    p = make(rng, cell, N, T, C, H, np.float32)
    up = upstream(rng, cell, N, T, H)
    got = run_ops(cell, act, p, *[None if u is None else u.astype(np.float32) for u in up])
    assert got[0].dtype == np.float32 and got[3]["dW"].dtype == np.float32
    assert_all_close(got, run_ref(cell, act, p, *up), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("cell,act", CELLS)
def test_no_initial_state_no_sequence_gradient(cell, act, rng):
    N, T, C, H = 3, 4, 5, 6
    p = make(rng, cell, N, T, C, H, states=False)
    _, dhT, _ = upstream(rng, cell, N, T, H)
    assert_all_close(run_ops(cell, act, p, None, dhT, None), run_ref(cell, act, p, None, dhT, None), 1e-10, 1e-12)
    # Only the sequence gradient.
    dout, _, _ = upstream(rng, cell, N, T, H)
    assert_all_close(run_ops(cell, act, p, dout, None, None), run_ref(cell, act, p, dout, None, None), 1e-10, 1e-12)


@pytest.mark.parametrize("cell,act", CELLS)
def test_finite_differences_through_the_kernels(cell, act, rng):
    N, T, C, H = 2, 3, 3, 4
    p = make(rng, cell, N, T, C, H)
    if act == "relu":
        p["b"] = p["b"] + np.sign(p["b"]) * 0.2
    dout, dhT, dcT = upstream(rng, cell, N, T, H)

    def loss():
        out, hT, cT, _ = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act)
        return np.sum(out * dout) + np.sum(hT * dhT) + (np.sum(cT * dcT) if cell == "lstm" else 0.0)

    _, _, _, g = run_ops(cell, act, p, dout, dhT, dcT)
    names = {"x": "dx", "W": "dW", "U": "dU", "b": "db", "h0": "dh0", "c0": "dc0", "b_h": "db_h"}
    for k, gk in names.items():
        if p[k] is not None:
            check_grad(g[gk], numerical_grad(loss, p[k]), rtol=1e-6, atol=1e-8)


# ---- the naive C++ twins -----------------------------------------------------------------

def naive(cell, act, p, dout, dhT, dcT):
    dt = p["x"].dtype
    N, T, C = p["x"].shape
    H = p["U"].shape[0]
    GH = p["U"].shape[1]
    lstm, gru = cell == "lstm", cell == "gru"
    cid = CELL_IDS[(cell, act)]
    out, hT = np.full((N, T, H), np.nan, dt), np.full((N, H), np.nan, dt)
    cT = np.full((N, H), np.nan, dt) if lstm else None
    _core.rnn_forward_naive(cid, p["x"], p["W"], p["U"], p["b"], p["b_h"], p["h0"], p["c0"], p.get("mask"), p.get("rscale"), out, hT, cT)
    g = {"dx": np.full((N, T, C), np.nan, dt), "dh0": np.full((N, H), np.nan, dt),
         "dc0": np.full((N, H), np.nan, dt) if lstm else None, "dW": np.full((C, GH), np.nan, dt),
         "dU": np.full((H, GH), np.nan, dt), "db": np.full(GH, np.nan, dt),
         "db_h": np.full(GH, np.nan, dt) if gru else None}
    _core.rnn_backward_naive(cid, p["x"], p["W"], p["U"], p["b"], p["b_h"], p["h0"], p["c0"], p.get("mask"), p.get("rscale"), dout, dhT, dcT,
                             g["dx"], g["dh0"], g["dc0"], g["dW"], g["dU"], g["db"], g["db_h"])
    return out, hT, cT, g


def fast_poisoned(cell, act, p, dout, dhT, dcT):
    """The fast kernels called directly with every output and cache filled with NaN first."""
    dt = p["x"].dtype
    N, T, C = p["x"].shape
    H, GH = p["U"].shape
    lstm, gru = cell == "lstm", cell == "gru"
    cid = CELL_IDS[(cell, act)]
    nan = lambda *s: np.full(s, np.nan, dt)  # noqa: E731
    out, hT, cT = nan(N, T, H), nan(N, H), (nan(N, H) if lstm else None)
    gates, hprev = nan(N, T, GH), nan(N, T, H)
    cs, q = (nan(N, T, H) if lstm else None), (nan(N, T, H) if gru else None)
    _core.rnn_forward(cid, p["x"], p["W"], p["U"], p["b"], p["b_h"], p["h0"], p["c0"], p.get("mask"), p.get("rscale"), out, hT, cT, gates, hprev,
                      cs, q)
    g = {"dx": nan(N, T, C), "dh0": nan(N, H), "dc0": nan(N, H) if lstm else None, "dW": nan(C, GH),
         "dU": nan(H, GH), "db": nan(GH), "db_h": nan(GH) if gru else None}
    _core.rnn_backward(cid, gates, hprev, cs, q, p["x"], p["W"], p["U"], p["c0"], p.get("mask"), p.get("rscale"), dout, dhT, dcT, g["dx"], g["dh0"],
                       g["dc0"], g["dW"], g["dU"], g["db"], g["db_h"])
    return out, hT, cT, g


@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11), (np.float32, 1e-4)], ids=["f64", "f32"])
def test_fast_kernels_match_naive_twins_with_poisoned_outputs(cell, act, dtype, tol, rng):
    N, T, C, H = 3, 5, 6, 19
    p = make(rng, cell, N, T, C, H, dtype)
    up = [None if u is None else u.astype(dtype) for u in upstream(rng, cell, N, T, H)]
    fast = fast_poisoned(cell, act, p, *up)
    slow = naive(cell, act, p, *up)
    for arrs in (fast[:3], list(fast[3].values())):
        for a in arrs:
            assert a is None or np.all(np.isfinite(a)), "an output element was left unwritten"
    assert_all_close(fast, slow, rtol=tol, atol=tol)


@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("N,H", [(6, 7), (7, 24), (13, 41), (25, 16), (17, 9)])
def test_row_blocks_and_unit_tails_match_naive_twins(cell, act, N, H, rng):
    # The per-step products cut the N rows into ceil(N / MR) nearly equal blocks (MR 4, 6, 8 by
    # ISA) and the cells run H % lanes units as a padded tail: sizes on and off every boundary.
    T, C = 3, 11
    p = make(rng, cell, N, T, C, H, np.float32)
    up = [None if u is None else u.astype(np.float32) for u in upstream(rng, cell, N, T, H)]
    slow = naive(cell, act, p, *up)
    old = _core.selected_isa()
    try:
        for isa in _core.available_isas():
            _core.select_isa(isa)
            fast = fast_poisoned(cell, act, p, *up)
            for arrs in (fast[:3], list(fast[3].values())):
                for a in arrs:
                    assert a is None or np.all(np.isfinite(a)), f"{isa}: an output element was left unwritten"
            assert_all_close(fast, slow, rtol=1e-4, atol=1e-4)
    finally:
        _core.select_isa(old)


# ---- PyTorch -----------------------------------------------------------------------------

@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_torch(cell, act, dtype, rng):
    torch = pytest.importorskip("torch")
    N, T, C, H = 4, 9, 7, 12
    tdt = getattr(torch, dtype)
    if cell == "rnn":
        m = torch.nn.RNN(C, H, nonlinearity=act, batch_first=True)
    else:
        m = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](C, H, batch_first=True)
    m = m.to(tdt)
    npdt = np.dtype(dtype)
    W = m.weight_ih_l0.detach().numpy().T.copy()
    U = m.weight_hh_l0.detach().numpy().T.copy()
    bi, bh = m.bias_ih_l0.detach().numpy(), m.bias_hh_l0.detach().numpy()
    b, b_h = (bi.copy(), bh.copy()) if cell == "gru" else (bi + bh, None)
    x = rng.standard_normal((N, T, C)).astype(npdt)
    h0 = rng.standard_normal((N, H)).astype(npdt)
    c0 = rng.standard_normal((N, H)).astype(npdt) if cell == "lstm" else None
    dout, dhT, dcT = [None if u is None else u.astype(npdt) for u in upstream(rng, cell, N, T, H)]

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    if cell == "lstm":
        c0t = torch.tensor(c0[None], requires_grad=True)
        o, (hTt, cTt) = m(xt, (h0t, c0t))
    else:
        o, hTt = m(xt, h0t)
    loss = (o * torch.tensor(dout)).sum() + (hTt[0] * torch.tensor(dhT)).sum()
    if cell == "lstm":
        loss = loss + (cTt[0] * torch.tensor(dcT)).sum()
    loss.backward()

    out, hT, cT, cache = rnn_forward(cell, x, W, U, b, h0=h0, c0=c0, b_h=b_h, activation=act)
    g = rnn_backward(cell, dout, dhT, dcT, cache)
    tol = dict(rtol=1e-4, atol=2e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, o.detach().numpy(), **tol)
    np.testing.assert_allclose(hT, hTt.detach().numpy()[0], **tol)
    np.testing.assert_allclose(g["dx"], xt.grad.numpy(), **tol)
    np.testing.assert_allclose(g["dh0"], h0t.grad.numpy()[0], **tol)
    np.testing.assert_allclose(g["dW"], m.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(g["dU"], m.weight_hh_l0.grad.numpy().T, **tol)
    # PyTorch's two biases get the same gradient except the GRU's, which are kept apart here.
    np.testing.assert_allclose(g["db"], m.bias_ih_l0.grad.numpy(), **tol)
    if cell == "gru":
        np.testing.assert_allclose(g["db_h"], m.bias_hh_l0.grad.numpy(), **tol)
    else:
        np.testing.assert_allclose(g["db"], m.bias_hh_l0.grad.numpy(), **tol)
    if cell == "lstm":
        np.testing.assert_allclose(cT, cTt.detach().numpy()[0], **tol)
        np.testing.assert_allclose(g["dc0"], c0t.grad.numpy()[0], **tol)


# ---- point-wise math, NaN, long sequences, threads, ISAs ---------------------------------

@pytest.fixture(params=_core.available_isas())
def each_isa(request):
    old = _core.selected_isa()
    _core.select_isa(request.param)
    yield request.param
    _core.select_isa(old)


def test_float32_tanh_and_relu_accuracy_over_the_whole_range(each_isa):
    # H = 37 units (vector body and scalar tail), W = I, U = 0, b = 0: outputs are act(x).
    H = 37
    v = np.concatenate([np.linspace(-30, 30, 6001), np.geomspace(1e-30, 20, 500), -np.geomspace(1e-30, 20, 500),
                        [0.0, -0.0, 0.3999999, 0.4, 0.4000001, 88.0, 100.0, -100.0, 1e30, -1e30]])
    v = np.concatenate([v, np.zeros(-v.size % H)])
    x = v.astype(np.float32).reshape(-1, 1, H)
    W = np.eye(H, dtype=np.float32)
    U = np.zeros((H, H), np.float32)
    b = np.zeros(H, np.float32)
    out, _, _, _ = rnn_forward("rnn", x, W, U, b)
    want = np.tanh(x.astype(np.float64)).ravel()
    got = out.ravel().astype(np.float64)
    err = np.abs(got - want)
    assert np.all(err <= 3e-7 * np.abs(want) + 1e-37), f"worst tanh error {err.max():.3e} at {v[np.argmax(err)]}"
    out, _, _, _ = rnn_forward("rnn", x, W, U, b, activation="relu")
    np.testing.assert_array_equal(out.ravel(), np.maximum(x.ravel(), 0))
    # One unit, W = 1: infinities saturate, NaN stays NaN.
    x = np.array([np.inf, -np.inf, np.nan], np.float32).reshape(3, 1, 1)
    one, zero = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    out, _, _, _ = rnn_forward("rnn", x, one, zero, np.zeros(1, np.float32))
    np.testing.assert_array_equal(out.ravel(), [1.0, -1.0, np.nan])
    out, _, _, _ = rnn_forward("rnn", x, one, zero, np.zeros(1, np.float32), activation="relu")
    np.testing.assert_array_equal(out.ravel(), [np.inf, 0.0, np.nan])


def test_float32_sigmoid_accuracy_from_the_gate_cache(each_isa):
    # H = 37 units (vector body and scalar tail), W = [I I I I], U = 0, b = 0: every gate's
    # pre-activation is x, and the cache keeps the activations (s(x), s(x), tanh(x), s(x)).
    H = 37
    v = np.concatenate([np.linspace(-100, 100, 8001), np.geomspace(1e-30, 30, 400), -np.geomspace(1e-30, 30, 400)])
    v = np.concatenate([v, np.zeros(-v.size % H)])
    x = v.astype(np.float32).reshape(-1, 1, H)
    W = np.tile(np.eye(H, dtype=np.float32), (1, 4))
    _, _, _, cache = rnn_forward("lstm", x, W, np.zeros((H, 4 * H), np.float32), np.zeros(4 * H, np.float32))
    xd = x[:, 0, :].astype(np.float64)
    want_s = 1.0 / (1.0 + np.exp(-xd))
    for k in (0, 1, 3):
        got = cache.gates[:, 0, k * H:(k + 1) * H].astype(np.float64)
        err = np.abs(got - want_s)
        # relative accuracy wherever the result is a normal float; the far-negative tail is tiny
        assert np.all(err <= 3e-7 * want_s + 1e-37), f"worst sigmoid error {err.max():.3e} at {v[np.argmax(err)]}"
    got_t = cache.gates[:, 0, 2 * H:3 * H].astype(np.float64)
    assert np.all(np.abs(got_t - np.tanh(xd)) <= 3e-7 * np.abs(np.tanh(xd)) + 1e-37)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_gates_saturate_like_float64(cell, rng):
    N, T, C, H = 4, 6, 5, 21
    p = make(rng, cell, N, T, C, H, np.float32, scale=8.0)  # drives gates deep into saturation
    up = upstream(rng, cell, N, T, H)
    got = run_ops(cell, "tanh", p, *[None if u is None else u.astype(np.float32) for u in up])
    want = run_ref(cell, "tanh", p, *up)
    assert_all_close(got, want, rtol=5e-3, atol=5e-4)


@pytest.mark.parametrize("cell,act", CELLS)
def test_nan_propagates_within_its_sample(cell, act, rng):
    N, T, C, H = 3, 4, 2, 5
    p = make(rng, cell, N, T, C, H, np.float32)
    p["x"][1, 2, 0] = np.nan
    out, hT, _, cache = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act)
    assert np.all(np.isfinite(out[[0, 2]])) and np.all(np.isfinite(out[1, :2]))
    if act == "tanh":
        assert np.all(np.isnan(out[1, 2:])) and np.all(np.isnan(hT[1]))
    else:  # relu: at least the step that saw NaN is NaN wherever W's column is not zero
        assert np.any(np.isnan(out[1, 2]))
    g = rnn_backward(cell, np.ones_like(out), None, None, cache)
    assert np.all(np.isfinite(g["dx"][[0, 2]])) or cell == "rnn"
    assert np.any(np.isnan(g["dW"]))


@pytest.mark.parametrize("cell,act", CELLS)
def test_long_sequence_stays_finite_and_matches_float64(cell, act, rng):
    N, T, C, H = 2, 500, 3, 8
    p = make(rng, cell, N, T, C, H, np.float32, scale=0.3)
    if act == "relu":
        p["U"] = (p["U"] * 0.3).astype(np.float32)
    up = upstream(rng, cell, N, T, H)
    got = run_ops(cell, act, p, *[None if u is None else u.astype(np.float32) for u in up])
    want = run_ref(cell, act, p, *up)
    for a in list(got[:2]) + [v for v in got[3].values() if v is not None]:
        assert np.all(np.isfinite(a))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got[3]["dW"], want[3]["dW"], rtol=2e-3, atol=2e-3 * np.abs(want[3]["dW"]).max())


@pytest.mark.parametrize("cell,act", CELLS)
def test_thread_counts_give_identical_results(cell, act, rng):
    # N*G*H*H multiply-adds per step: enough for several threads; H % 16 != 0. The units are cut
    # into chunks per thread count and chunks are shared out at run time (a thread may run
    # another's), so 3 and 5 threads (uneven shares, more threads than CPUs) must agree bit for
    # bit with one, forward, inference forward and backward alike.
    N, T, C, H = 32, 3, 24, 264
    p = make(rng, cell, N, T, C, H, np.float32, scale=0.2)
    up = [None if u is None else u.astype(np.float32) for u in upstream(rng, cell, N, T, H)]
    mask = (rng.random((N, T)) > 0.25).astype(np.uint8)
    kw = dict(h0=p["h0"], c0=p.get("c0"), b_h=p.get("b_h"), activation=act, mask=mask)
    old, old_isa = pydl.get_num_threads(), _core.selected_isa()
    try:
        for isa in _core.available_isas():
            _core.select_isa(isa)
            res = []
            for n in (1, 2, 3, 5):
                pydl.set_num_threads(n)
                infer = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], keep_cache=False, **kw)[0]
                out, hT, cT, cache = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], **kw)
                res.append(((out, hT, cT, rnn_backward(cell, *up, cache)), infer))
            (a, ia), others = res[0], res[1:]
            for n, (b, ib) in zip((2, 3, 5), others):
                np.testing.assert_array_equal(ia, ib, err_msg=f"{isa} {n} threads, inference")
                for i in range(3):
                    if a[i] is not None:
                        np.testing.assert_array_equal(a[i], b[i], err_msg=f"{isa} {n} threads")
                for k in a[3]:
                    if a[3][k] is not None:
                        np.testing.assert_array_equal(a[3][k], b[3][k], err_msg=f"{isa} {n} threads {k}")
    finally:
        pydl.set_num_threads(old)
        _core.select_isa(old_isa)


@pytest.mark.parametrize("cell,act", CELLS)
def test_every_isa_matches_the_reference(cell, act, rng):
    N, T, C, H = 3, 5, 4, 37
    p = make(rng, cell, N, T, C, H, np.float32)
    up = upstream(rng, cell, N, T, H)
    up32 = [None if u is None else u.astype(np.float32) for u in up]
    want = run_ref(cell, act, p, *up)
    old = _core.selected_isa()
    try:
        for isa in _core.available_isas():
            _core.select_isa(isa)
            assert_all_close(run_ops(cell, act, p, *up32), want, rtol=2e-4, atol=2e-5)
    finally:
        _core.select_isa(old)


# ---- edge sizes and bad input ------------------------------------------------------------

@pytest.mark.parametrize("cell,act", CELLS)
def test_empty_sequence_is_defined(cell, act, rng):
    N, C, H = 3, 4, 5
    p = make(rng, cell, N, 0, C, H)
    out, hT, cT, cache = rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act)
    assert out.shape == (N, 0, H)
    np.testing.assert_array_equal(hT, p["h0"])
    if cell == "lstm":
        np.testing.assert_array_equal(cT, p["c0"])
    dhT = rng.standard_normal((N, H))
    dcT = rng.standard_normal((N, H)) if cell == "lstm" else None
    g = rnn_backward(cell, np.zeros((N, 0, H)), dhT, dcT, cache)
    np.testing.assert_array_equal(g["dh0"], dhT)
    assert g["dx"].shape == (N, 0, C)
    assert not np.any(g["dW"]) and not np.any(g["dU"]) and not np.any(g["db"])
    if cell == "lstm":
        np.testing.assert_array_equal(g["dc0"], dcT)


def test_empty_batch(rng):
    p = make(rng, "lstm", 0, 3, 4, 5, states=False)
    out, hT, cT, cache = rnn_forward("lstm", p["x"], p["W"], p["U"], p["b"])
    assert out.shape == (0, 3, 5) and hT.shape == (0, 5)
    g = rnn_backward("lstm", np.zeros((0, 3, 5)), None, None, cache)
    assert g["dW"].shape == (4, 20) and not np.any(g["dW"])


@pytest.mark.parametrize("keep_cache", [True, False], ids=["training", "inference"])
def test_bad_input_raises_clear_errors(keep_cache, rng):
    fwd = functools.partial(rnn_forward, keep_cache=keep_cache)
    p = make(rng, "lstm", 2, 3, 4, 5, np.float32)
    x, W, U, b, h0, c0 = p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"]
    with pytest.raises(ValueError, match=r"x has 2 dims .*\(N, T, C\)"):
        fwd("lstm", x[:, 0], W, U, b)
    with pytest.raises(ValueError, match=r"W has shape \(3, 20\).*C=4 features"):
        fwd("lstm", x, W[:3], U, b)
    with pytest.raises(ValueError, match=r"U has shape"):
        fwd("lstm", x, W, U[:, :15], b)
    with pytest.raises(ValueError, match=r"b has shape"):
        fwd("lstm", x, W, U, b[:5])
    with pytest.raises(ValueError, match=r"initial state h0 has shape \(2, 4\), expected \(N, H\) = \(2, 5\)"):
        fwd("lstm", x, W, U, b, h0=h0[:, :4])
    with pytest.raises(ValueError, match=r"initial state c0 has shape \(3, 5\)"):
        fwd("lstm", x, W, U, b, h0=h0, c0=np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"b_h is the GRU's"):
        fwd("lstm", x, W, U, b, b_h=b)
    with pytest.raises(ValueError, match=r"c0 is the LSTM's"):
        fwd("gru", x, W[:, :15], U[:, :15], b[:15], c0=c0)
    with pytest.raises(ValueError, match=r"cell must be one of"):
        fwd("transformer", x, W, U, b)
    with pytest.raises(ValueError, match=r"activation must be 'tanh'"):
        fwd("lstm", x, W, U, b, activation="relu")
    with pytest.raises(ValueError, match=r"'tanh' or 'relu'"):
        fwd("rnn", x, W[:, :5], U[:, :5], b[:5], activation="sigmoid")
    with pytest.raises(TypeError, match=r"x must be real"):
        fwd("lstm", x.astype(np.complex64), W, U, b)
    with pytest.raises(TypeError, match=r"numeric"):
        fwd("lstm", np.array([["a"]]), W, U, b)
    with pytest.raises(ValueError, match=r"no features"):
        fwd("lstm", np.zeros((2, 3, 0), np.float32), np.zeros((0, 20), np.float32), U, b)
    with pytest.raises(ValueError, match=r"no units"):
        fwd("lstm", x, np.zeros((4, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.float32))
    out, hT, cT, cache = rnn_forward("lstm", x, W, U, b)
    with pytest.raises(ValueError, match=r"dout has shape"):
        rnn_backward("lstm", out[:, :2], None, None, cache)
    with pytest.raises(ValueError, match=r"dh_T has shape"):
        rnn_backward("lstm", None, hT[:1], None, cache)
    with pytest.raises(ValueError, match=r"cache comes from a lstm"):
        rnn_backward("gru", out, None, None, cache)
    with pytest.raises(TypeError, match=r"cache must be the RNNCache"):
        rnn_backward("lstm", out, None, None, {"x": x})


@pytest.mark.parametrize("keep_cache", [True, False], ids=["training", "inference"])
def test_views_and_other_dtypes_are_converted(keep_cache, rng):
    fwd = functools.partial(rnn_forward, keep_cache=keep_cache)
    p = make(rng, "gru", 3, 4, 5, 6, np.float32)
    big = np.zeros((3, 8, 10), np.float32)
    big[:, ::2, ::2] = p["x"]
    view = big[:, ::2, ::2]
    a = fwd("gru", view, p["W"], p["U"], p["b"], b_h=p["b_h"])[0]
    b = fwd("gru", p["x"].copy(), p["W"], p["U"], p["b"], b_h=p["b_h"])[0]
    np.testing.assert_array_equal(a, b)
    r = fwd("gru", p["x"][:, ::-1], p["W"], p["U"], p["b"], b_h=p["b_h"])[0]
    r2 = fwd("gru", np.ascontiguousarray(p["x"][:, ::-1]), p["W"], p["U"], p["b"], b_h=p["b_h"])[0]
    np.testing.assert_array_equal(r, r2)
    # float64 anywhere -> float64 result.
    assert fwd("gru", p["x"].astype(np.float64), p["W"], p["U"], p["b"], b_h=p["b_h"])[0].dtype == np.float64
    assert fwd("gru", p["x"].astype(np.float16), p["W"], p["U"], p["b"])[0].dtype == np.float32


def test_core_bindings_check_strictly(rng):
    p = make(rng, "lstm", 2, 3, 4, 5, np.float32)
    N, T, C, H, GH = 2, 3, 4, 5, 20
    e = lambda *s: np.empty(s, np.float32)  # noqa: E731
    args = dict(cell=2, x=p["x"], W=p["W"], U=p["U"], b=p["b"], b_h=None, h0=None, c0=None, mask=None, rscale=None, out=e(N, T, H),
                hT=e(N, H), cT=e(N, H), gates=e(N, T, GH), hprev=e(N, T, H), cs=e(N, T, H), q=None)
    _core.rnn_forward(**args)
    bad = [
        dict(x=p["x"].astype(np.float64)),               # dtype mismatch with the weights
        dict(W=np.asfortranarray(p["W"])),               # not C-contiguous
        dict(out=e(N, T, H + 1)),                        # wrong output shape
        dict(out=e(N, T, H).astype(np.float64)),         # wrong output dtype
        dict(cs=None),                                   # LSTM cache missing
        dict(cell=7),                                    # unknown cell
        dict(U=p["U"][:, :16].copy()),                   # U not (H, G*H)
        dict(h0=e(N + 1, H)),                            # initial state shape
    ]
    for change in bad:
        with pytest.raises(ValueError, match=r"\[rnn_forward\]"):
            _core.rnn_forward(**{**args, **change})
    ro = e(N, T, H)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _core.rnn_forward(**{**args, "out": ro})


# ---- layers ------------------------------------------------------------------------------

def layer_params_from(p, cell):
    d = {"W": p["W"], "U": p["U"], "b": p["b"]}
    if cell == "gru":
        d["b_h"] = p["b_h"]
    return d


@pytest.mark.parametrize("cls,cell,act", [(SimpleRNN, "rnn", "tanh"), (SimpleRNN, "rnn", "relu"),
                                          (LSTM, "lstm", "tanh"), (GRU, "gru", "tanh")])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_layer_forward_backward_match_reference(cls, cell, act, return_sequences, rng):
    N, T, C, H = 3, 5, 4, 6
    p = make(rng, cell, N, T, C, H)
    kw = {"activation": act} if cls is SimpleRNN else {}
    layer = cls(H, return_sequences=return_sequences, **kw)
    layer.build((None, T, C))
    layer.params = layer_params_from(p, cell)  # float64 params: the exact path
    state = None
    if p["h0"] is not None:
        state = [p["h0"], p["c0"]] if cell == "lstm" else p["h0"]
    y = layer.forward(p["x"], training=True, initial_state=state)
    out, hT, cT, tape = ref.forward(cell, p["x"], p["W"], p["U"], p["b"], p["h0"], p["c0"], p["b_h"], act)
    np.testing.assert_allclose(y, out if return_sequences else hT, rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    g = ref.backward(cell, dy if return_sequences else None, None if return_sequences else dy, None, p["x"], p["W"],
                     p["U"], tape, act)
    np.testing.assert_allclose(dx, g["dx"], rtol=1e-10, atol=1e-12)
    for k, gk in (("W", "dW"), ("U", "dU"), ("b", "db"), ("b_h", "db_h")):
        if k in layer.params:
            np.testing.assert_allclose(layer.grads[k], g[gk], rtol=1e-10, atol=1e-12)
    dh0 = layer.initial_state_grads[0] if cell == "lstm" else layer.initial_state_grads
    np.testing.assert_allclose(dh0, g["dh0"], rtol=1e-10, atol=1e-12)


def test_layer_gradients_by_finite_differences(rng):
    N, T, C, H = 2, 4, 3, 3
    layer = LSTM(H, return_sequences=True)
    layer.build((None, T, C))
    layer.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    x = rng.standard_normal((N, T, C))
    R = rng.standard_normal((N, T, H))
    loss = lambda: float(np.sum(layer.forward(x) * R))  # noqa: E731
    layer.forward(x, training=True)
    dx = layer.backward(R)
    grads = dict(layer.grads)
    check_grad(dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-8)
    for k in ("W", "U", "b"):
        check_grad(grads[k], numerical_grad(loss, layer.params[k]), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_layer_return_state(cls, rng):
    N, T, C, H = 2, 4, 3, 5
    layer = cls(H, return_sequences=True, return_state=True)
    x = rng.standard_normal((N, T, C)).astype(np.float32)
    res = layer(x)
    lstm = cls is LSTM
    assert isinstance(res, list) and len(res) == (3 if lstm else 2)
    assert res[0].shape == (N, T, H) and res[1].shape == (N, H)
    np.testing.assert_array_equal(res[0][:, -1], res[1])
    # Gradient arriving through the final state only equals the same gradient on the last output.
    dh = rng.standard_normal((N, H)).astype(np.float32)
    dx_state = layer.backward([None, dh] + ([None] if lstm else []))
    dseq = np.zeros((N, T, H), np.float32)
    dseq[:, -1] = dh
    dx_seq = layer.backward([dseq, None] + ([None] if lstm else []))
    np.testing.assert_allclose(dx_state, dx_seq, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="list of"):
        layer.backward(dseq)


def test_layer_init_and_config(rng):
    pydl.seed(3)
    lstm = LSTM(8)
    lstm.build((None, 5, 4))
    U = lstm.params["U"]
    assert U.shape == (8, 32) and U.dtype == np.float32
    np.testing.assert_allclose(U @ U.T, np.eye(8), atol=1e-5)  # orthonormal rows
    b = lstm.params["b"]
    assert np.all(b[8:16] == 1.0) and not np.any(b[:8]) and not np.any(b[16:])
    lim = np.sqrt(6.0 / (4 + 32))
    assert np.abs(lstm.params["W"]).max() <= lim
    assert LSTM(8, unit_forget_bias=False).__class__ is LSTM
    gru = GRU(4, return_sequences=True, input_shape=(7, 3))
    gru.build((None, 7, 3))
    assert set(gru.params) == {"W", "U", "b", "b_h"} and gru.output_shape == (None, 7, 4)
    cfg = gru.get_config()
    clone = pydl.registry.layers.get("GRU").from_config(cfg)
    assert clone.get_config() == cfg
    rnn = SimpleRNN(3, activation="relu")
    assert SimpleRNN.from_config(rnn.get_config()).activation == "relu"
    assert pydl.registry.layers.get("Embedding") is Embedding
    with pytest.raises(ValueError, match="units"):
        LSTM(0)
    with pytest.raises(ValueError, match="activation"):
        SimpleRNN(3, activation="sigmoid")
    with pytest.raises(ValueError, match="unknown initializer"):
        LSTM(3, kernel_initializer="nope")
    # Orthogonal is a registered initializer: a serialized config resolves through the registry.
    init = pydl.initializers.get({"class_name": "Orthogonal", "config": {"gain": 2.0}})
    M = init((6, 4))
    np.testing.assert_allclose(M.T @ M, 4.0 * np.eye(4), atol=1e-5)


def test_layer_bad_input(rng):
    layer = LSTM(4)
    layer.build((None, 3, 2))
    with pytest.raises(ValueError, match=r"expects inputs \(N, T, C\)"):
        layer.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"input has 5 features.*C=2"):
        layer.forward(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"initial state h0 has shape \(2, 3\)"):
        layer.forward(np.zeros((2, 3, 2), np.float32), initial_state=[np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"\[h0, c0\]"):
        layer.forward(np.zeros((2, 3, 2), np.float32), initial_state=np.zeros((2, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        GRU(3).backward(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"expects inputs \(N, T, C\)"):
        GRU(3).build((None, 4))


# ---- Embedding ---------------------------------------------------------------------------

def test_embedding_forward_backward(rng):
    emb = Embedding(10, 3)
    idx = np.array([[1, 2, 1], [9, 0, 1]])
    y = emb(idx)
    W = emb.params["W"]
    assert y.shape == (2, 3, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(y, W[idx])
    assert np.abs(W).max() <= 0.05
    dy = rng.standard_normal((2, 3, 3)).astype(np.float32)
    assert emb.backward(dy) is None
    want = np.zeros_like(W)
    for n in range(2):
        for t in range(3):
            want[idx[n, t]] += dy[n, t]
    np.testing.assert_allclose(emb.grads["W"], want, rtol=1e-6)
    assert emb.grads["W"][1].any() and not emb.grads["W"][5].any()
    # Whole-number floats are accepted as indices.
    np.testing.assert_array_equal(emb.forward(idx.astype(np.float32)), y)
    assert emb.output_shape == (None, 3, 3)


def test_embedding_bad_input():
    emb = Embedding(5, 2)
    emb.build((None, 3))
    with pytest.raises(ValueError, match=r"id 5 is out of range for input_dim=5"):
        emb.forward(np.array([[0, 5, 1]]))
    with pytest.raises(ValueError, match="out of range"):
        emb.forward(np.array([[-1, 0, 1]]))
    with pytest.raises(ValueError, match="whole-number"):
        emb.forward(np.array([[0.5, 1, 2]]))
    with pytest.raises(ValueError, match="whole-number"):
        emb.forward(np.array([[np.nan, 1, 2]]))
    with pytest.raises(TypeError, match="integer indices"):
        emb.forward(np.array([["a", "b", "c"]]))
    emb.forward(np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="dout has shape"):
        emb.backward(np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="input_dim"):
        Embedding(0, 3)


def test_embedding_feeds_lstm_end_to_end(rng):
    emb, lstm = Embedding(6, 4), LSTM(5)
    idx = rng.integers(0, 6, size=(3, 7))
    h = lstm(emb(idx))
    assert h.shape == (3, 5)
    dx = lstm.backward(np.ones_like(h))
    assert dx.shape == (3, 7, 4)
    emb.backward(dx)
    assert emb.grads["W"][np.unique(idx)].any()


def test_sequential_training_and_save_load(tmp_path, rng):
    pydl.seed(0)
    model = pydl.Sequential([Embedding(8, 6, input_shape=(5,)), LSTM(12, return_sequences=True), GRU(10),
                             pydl.layers.Dense(3, activation="softmax")])
    x = rng.integers(0, 8, size=(64, 5)).astype(np.float32)
    y = (x[:, 0] % 3).astype(np.int64)  # the label is a function of the first token
    model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(0.02, clipnorm=5.0),
                  metrics=["accuracy"])
    first = model.evaluate(x, y, return_dict=True)["loss"]
    model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    last = model.evaluate(x, y, return_dict=True)
    assert last["loss"] < 0.5 * first and last["accuracy"] > 0.9
    assert model.layers[0].need_input_grad is False
    path = tmp_path / "seq.npz"
    model.save(path)
    loaded = pydl.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_examples_run_and_learn(capsys):
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "examples"

    def load(name):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    acc = load("sequence_digits").main(["--epochs", "4"])
    assert acc > 0.7  # 10 classes: chance is 0.1; the full 40 epochs reach >= 0.95
    r = load("sine_wave").main(["--epochs", "3", "--length", "1000"])
    assert r["mse"] < r["naive"]
    assert "test accuracy" in capsys.readouterr().out
