"""CUDA recurrent ops (pydl.ops.rnn_forward / rnn_backward on CuPy arrays) and the recurrent layers
on the GPU, against the CPU ops of pydl on the same inputs; finite differences on a float64 LSTM."""
import numpy as np
import pytest

import pydl
import pydl.cuda.rnn as cuda_rnn
from cuda_support import cp, needs_cuda, to_cpu, to_gpu

from pydl.ops import rnn_backward, rnn_forward
from pydl.ops.rnn import rnn_gates

pytestmark = needs_cuda

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
DTYPES = (np.float32, np.float64)
C_IN, H = 7, 5


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _close(got, want, dtype, what=""):
    if want is None:
        assert got is None, what
        return
    assert isinstance(got, cp.ndarray), what
    got = to_cpu(got)
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
    np.testing.assert_allclose(got, want, err_msg=what, **_tol(dtype))


def _problem(cell, N, T, dtype, seed=0, states=True, mask=False, rscale=False):
    rng = np.random.default_rng(seed)
    G = rnn_gates(cell)
    a = {"x": rng.standard_normal((N, T, C_IN)), "W": rng.standard_normal((C_IN, G * H)) * 0.4,
         "U": rng.standard_normal((H, G * H)) * 0.4, "b": rng.standard_normal(G * H) * 0.3}
    if states:
        a["h0"] = rng.standard_normal((N, H)) * 0.5
        if cell == "lstm":
            a["c0"] = rng.standard_normal((N, H)) * 0.5
        if cell == "gru":
            a["b_h"] = rng.standard_normal(G * H) * 0.3
    if mask:
        m = rng.random((N, T)) > 0.35
        m[0, :] = False  # a row with every step masked keeps h0
        if T > 1 and N > 1:
            m[-1, :] = True
        a["mask"] = m
    if rscale:
        a["recurrent_scale"] = (rng.random((N, H)) > 0.3) / 0.7
    out = {}
    for k, v in a.items():
        out[k] = v if k == "mask" else np.asarray(v, dtype=dtype)
    return out


def _grads_in(cell, N, T, dtype, seed=1, dout=True, dhT=True):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, T, H)).astype(dtype) if dout else None,
            rng.standard_normal((N, H)).astype(dtype) if dhT else None,
            rng.standard_normal((N, H)).astype(dtype) if (dhT and cell == "lstm") else None)


def _run_both(cell, act, args, grads, need_dx=True):
    """(cpu forward, cpu grads, gpu forward, gpu grads) of one problem."""
    gargs = {k: to_gpu(v) for k, v in args.items()}
    pos = ("x", "W", "U", "b")
    kw = {k: v for k, v in args.items() if k not in pos}
    gkw = {k: v for k, v in gargs.items() if k not in pos}
    fc = rnn_forward(cell, *(args[k] for k in pos), activation=act, **kw)
    fg = rnn_forward(cell, *(gargs[k] for k in pos), activation=act, **gkw)
    dout, dhT, dcT = grads
    gc = rnn_backward(cell, dout, dhT, dcT, fc[3], need_dx=need_dx)
    gg = rnn_backward(cell, *(None if g is None else to_gpu(g) for g in grads), fg[3], need_dx=need_dx)
    return fc, gc, fg, gg


def _compare(fc, gc, fg, gg, dtype):
    for name, a, b in (("out", fg[0], fc[0]), ("hT", fg[1], fc[1]), ("cT", fg[2], fc[2])):
        _close(a, b, dtype, name)
    for k in ("gates", "hprev", "cs", "q"):
        _close(getattr(fg[3], k), getattr(fc[3], k), dtype, "cache." + k)
    for k in ("dx", "dh0", "dc0", "dW", "dU", "db", "db_h"):
        _close(gg[k], gc[k], dtype, k)


@pytest.fixture(params=["auto", 1], ids=["split-auto", "split-1"])
def split(request, monkeypatch):
    """The backward's per-step product plain (1) or as this GPU's rule picks (G for these shapes)."""
    if request.param == 1:
        monkeypatch.setattr(cuda_rnn, "split_factor", lambda N, H, G, sms: 1)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,T", [(1, 1), (3, 5)])
@pytest.mark.parametrize("cell,act", CELLS)
def test_matches_cpu(cell, act, N, T, dtype, split):
    args = _problem(cell, N, T, dtype)
    fc, gc, fg, gg = _run_both(cell, act, args, _grads_in(cell, N, T, dtype))
    _compare(fc, gc, fg, gg, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell,act", CELLS)
def test_masks_and_recurrent_dropout_match_cpu(cell, act, dtype, split):
    N, T = 3, 5
    args = _problem(cell, N, T, dtype, seed=3, mask=True, rscale=True)
    fc, gc, fg, gg = _run_both(cell, act, args, _grads_in(cell, N, T, dtype, seed=4))
    _compare(fc, gc, fg, gg, dtype)
    # the fully masked row kept its initial state
    np.testing.assert_array_equal(to_cpu(fg[1])[0], args["h0"][0])


@pytest.mark.parametrize("cell,act", CELLS)
def test_no_states_no_dout_and_no_dx(cell, act):
    dtype = np.float64
    N, T = 2, 4
    args = _problem(cell, N, T, dtype, seed=5, states=False)
    for dout, dhT in ((False, True), (True, False)):
        fc, gc, fg, gg = _run_both(cell, act, args, _grads_in(cell, N, T, dtype, dout=dout, dhT=dhT), need_dx=False)
        assert gg["dx"] is None and gc["dx"] is None
        _compare(fc, gc, fg, gg, dtype)


@pytest.mark.parametrize("cell,act", CELLS)
def test_mask_float_and_int_forms(cell, act):
    dtype = np.float32
    args = _problem(cell, 2, 3, dtype, seed=6, mask=True)
    m = args["mask"]
    base = rnn_forward(cell, *(to_gpu(args[k]) for k in ("x", "W", "U", "b")), activation=act,
                       mask=to_gpu(m))[0]
    for form in (m.astype(np.float32) * 2.5, m.astype(np.int32)):
        got = rnn_forward(cell, *(to_gpu(args[k]) for k in ("x", "W", "U", "b")), activation=act,
                          mask=to_gpu(form))[0]
        np.testing.assert_array_equal(to_cpu(got), to_cpu(base))
    bad = m.astype(np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="mask contains NaN"):
        rnn_forward(cell, *(to_gpu(args[k]) for k in ("x", "W", "U", "b")), activation=act, mask=to_gpu(bad))


@pytest.mark.parametrize("cell,act", CELLS)
def test_empty_batch_and_empty_sequence(cell, act):
    dtype = np.float32
    for N, T in ((0, 3), (2, 0)):
        args = _problem(cell, N, T, dtype, seed=7)
        fc, gc, fg, gg = _run_both(cell, act, args, _grads_in(cell, N, T, dtype))
        _compare(fc, gc, fg, gg, dtype)


def test_mixed_precision_and_views():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 8, C_IN))
    W = rng.standard_normal((C_IN, 4 * H)).astype(np.float32) * 0.3
    U = rng.standard_normal((H, 4 * H)).astype(np.float32) * 0.3
    b = np.zeros(4 * H, np.float32)
    view = x[:, ::2]  # a strided view: copied before the kernels read it
    want = rnn_forward("lstm", view, W, U, b)
    got = rnn_forward("lstm", to_gpu(x)[:, ::2], to_gpu(W), to_gpu(U), to_gpu(b))
    assert got[0].dtype == np.float64  # a float64 argument makes the computation float64
    _close(got[0], want[0], np.float64, "out")
    ints = rnn_forward("rnn", to_gpu(np.arange(6).reshape(1, 2, 3)), to_gpu(np.ones((3, 2), np.int32)),
                       to_gpu(np.eye(2, dtype=np.int64) * 0), to_gpu(np.zeros(2, np.int8)))
    assert ints[0].dtype == np.float32
    np.testing.assert_allclose(to_cpu(ints[0]), np.tanh(np.array([[[3.0, 3.0], [12.0, 12.0]]])), rtol=1e-6)


def test_bad_inputs_raise_like_cpu():
    args = _problem("lstm", 2, 3, np.float32)
    g = {k: to_gpu(v) for k, v in args.items()}
    with pytest.raises(ValueError, match=r"\[rnn_forward\[lstm\]\].*x on cuda, W on cpu"):
        rnn_forward("lstm", g["x"], args["W"], g["U"], g["b"])
    with pytest.raises(ValueError, match=r"h0 on cpu"):
        rnn_forward("lstm", g["x"], g["W"], g["U"], g["b"], h0=args["h0"])
    with pytest.raises(ValueError, match=r"mask on cpu"):
        rnn_forward("lstm", g["x"], g["W"], g["U"], g["b"], mask=np.ones((2, 3), bool))
    with pytest.raises(TypeError, match=r"x must be real"):
        rnn_forward("lstm", g["x"].astype(cp.complex64), g["W"], g["U"], g["b"])
    with pytest.raises(ValueError, match=r"W has shape \(7, 19\)"):
        rnn_forward("lstm", g["x"], g["W"][:, :19], g["U"], g["b"])
    with pytest.raises(ValueError, match=r"x has 2 dims"):
        rnn_forward("lstm", g["x"][0], g["W"], g["U"], g["b"])
    with pytest.raises(ValueError, match=r"initial state c0 has shape"):
        rnn_forward("lstm", g["x"], g["W"], g["U"], g["b"], c0=g["c0"][:1])
    with pytest.raises(ValueError, match=r"recurrent_scale contains NaN"):
        rnn_forward("lstm", g["x"], g["W"], g["U"], g["b"], recurrent_scale=cp.full((2, H), cp.nan, cp.float32))
    with pytest.raises(ValueError, match=r"b_h is the GRU's"):
        rnn_forward("lstm", g["x"], g["W"], g["U"], g["b"], b_h=g["b"])
    out, hT, cT, cache = rnn_forward("lstm", g["x"], g["W"], g["U"], g["b"])
    assert all(isinstance(a, cp.ndarray) for a in (cache.x, cache.W, cache.U, cache.gates, cache.hprev, cache.cs))
    with pytest.raises(ValueError, match=r"dout on cpu, .*cache on cuda"):
        rnn_backward("lstm", np.zeros((2, 3, H), np.float32), None, None, cache)
    with pytest.raises(ValueError, match=r"dh_T has shape \(2, 4\)"):
        rnn_backward("lstm", None, cp.zeros((2, 4), cp.float32), None, cache)
    with pytest.raises(TypeError, match=r"dout must be real"):
        rnn_backward("lstm", cp.zeros((2, 3, H), cp.complex64), None, None, cache)


def test_cache_owns_its_inputs():
    """Changing x or W in place after the forward (an optimizer step) does not change backward."""
    args = _problem("gru", 2, 3, np.float64, seed=9)
    g = {k: to_gpu(v) for k, v in args.items()}
    fwd = rnn_forward("gru", g["x"], g["W"], g["U"], g["b"], h0=g["h0"], b_h=g["b_h"])
    want = rnn_backward("gru", None, cp.ones((2, H)), None, fwd[3])
    g["x"] += 1.0
    g["W"] *= 2.0
    g["U"] *= 2.0
    got = rnn_backward("gru", None, cp.ones((2, H)), None, fwd[3])
    for k in ("dx", "dW", "dU", "dh0"):
        np.testing.assert_array_equal(to_cpu(got[k]), to_cpu(want[k]))


def test_finite_differences_lstm_float64():
    args = _problem("lstm", 2, 3, np.float64, seed=10, mask=True)
    args["mask"][0, 1] = True
    g = {k: to_gpu(v) for k, v in args.items()}
    rng = np.random.default_rng(11)
    R = rng.standard_normal((2, 3, H))
    R2 = rng.standard_normal((2, H))
    R3 = rng.standard_normal((2, H))

    def loss(gg):
        out, hT, cT, _ = rnn_forward("lstm", gg["x"], gg["W"], gg["U"], gg["b"], h0=gg["h0"], c0=gg["c0"],
                                     mask=gg["mask"])
        return float((to_cpu(out) * R).sum() + (to_cpu(hT) * R2).sum() + (to_cpu(cT) * R3).sum())

    fwd = rnn_forward("lstm", g["x"], g["W"], g["U"], g["b"], h0=g["h0"], c0=g["c0"], mask=g["mask"])
    grads = rnn_backward("lstm", to_gpu(R), to_gpu(R2), to_gpu(R3), fwd[3])
    names = {"x": "dx", "W": "dW", "U": "dU", "b": "db", "h0": "dh0", "c0": "dc0"}
    eps = 1e-6
    for name, gname in names.items():
        base = args[name]
        analytic = to_cpu(grads[gname])
        for flat in rng.choice(base.size, size=min(4, base.size), replace=False):
            idx = np.unravel_index(flat, base.shape)
            vals = []
            for sgn in (1, -1):
                pert = base.copy()
                pert[idx] += sgn * eps
                vals.append(loss({**g, name: to_gpu(pert)}))
            numeric = (vals[0] - vals[1]) / (2 * eps)
            assert analytic[idx] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, idx)


# ---- layers -----------------------------------------------------------------------------

def _seq_model(layer_factory, T=4, C=3):
    return pydl.Sequential([layer_factory(), pydl.layers.Dense(2)])


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_relu", "bidir_gru"])
def test_fit_on_gpu_matches_cpu(kind):
    T, C = 4, 3
    make = {"lstm": lambda: pydl.layers.LSTM(5, input_shape=(T, C)),
            "gru": lambda: pydl.layers.GRU(5, return_sequences=False, go_backwards=True, input_shape=(T, C)),
            "simple_relu": lambda: pydl.layers.SimpleRNN(5, activation="relu", recurrent_dropout=0.3,
                                                        input_shape=(T, C)),
            "bidir_gru": lambda: pydl.layers.Bidirectional(pydl.layers.GRU(4), merge_mode="ave",
                                                           input_shape=(T, C))}[kind]
    rng = np.random.default_rng(12)
    x = rng.standard_normal((12, T, C)).astype(np.float32)
    y = rng.standard_normal((12, 2)).astype(np.float32)
    pydl.seed(2)
    cpu = _seq_model(make)
    cpu.compile(loss="mse", optimizer=pydl.optimizers.Adam(1e-2))
    cpu.build((None, T, C))
    gpu = _seq_model(make)
    gpu.compile(loss="mse", optimizer=pydl.optimizers.Adam(1e-2))
    gpu.build((None, T, C))
    gpu.set_weights(cpu.get_weights())
    gpu.to("cuda")
    pydl.seed(3)
    h_cpu = cpu.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    pydl.seed(3)
    h_gpu = gpu.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-4)


@pytest.mark.parametrize("merge_mode", ["concat", "mul", None])
def test_bidirectional_lstm_layer_with_mask_and_states(merge_mode):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 1, 1]], bool)
    layer = pydl.layers.Bidirectional(pydl.layers.LSTM(3, return_sequences=True, return_state=True),
                                      merge_mode=merge_mode)
    layer.build((None, 4, 2))
    outs_c = layer.forward(x, mask=mask)
    n_out = 1 if merge_mode else 2
    douts = [rng.standard_normal(o.shape).astype(np.float32) for o in outs_c]
    dx_c = layer.backward(douts)
    grads_c = {k: v.copy() for k, v in layer.grads.items()}
    layer.zero_grads()
    for k, v in layer.params.items():
        layer.params[k] = to_gpu(v)
    outs_g = layer.forward(to_gpu(x), mask=to_gpu(mask))
    assert len(outs_g) == len(outs_c) == n_out + 4
    for a, b in zip(outs_g, outs_c):
        _close(a, b, np.float32, "output")
    dx_g = layer.backward([to_gpu(d) for d in douts])
    _close(dx_g, dx_c, np.float32, "dx")
    for k, v in grads_c.items():
        _close(layer.grads[k], v, np.float32, k)


def test_text_model_with_embedding_fits_on_gpu_as_on_cpu():
    # Embedding(mask_zero) -> LSTM -> Dense: ids move to the GPU as integers, the mask follows them
    T, V = 5, 9
    rng = np.random.default_rng(21)
    ids = rng.integers(1, V, (10, T))
    ids[1, 3:] = 0
    ids[4, 1:] = 0  # padded tails: masked steps
    y = rng.integers(0, 3, 10)

    def build():
        m = pydl.Sequential([pydl.layers.Embedding(V, 4, mask_zero=True, input_shape=(T,)),
                             pydl.layers.LSTM(6), pydl.layers.Dense(3, activation="softmax")])
        m.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(1e-2),
                  metrics=["accuracy"])
        m.build((None, T))
        return m

    pydl.seed(5)
    cpu = build()
    gpu = build()
    gpu.set_weights(cpu.get_weights())
    gpu.to("cuda")
    assert isinstance(gpu.layers[0].params["W"], cp.ndarray)
    h_cpu = cpu.fit(ids, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    h_gpu = gpu.fit(ids, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-4)
    p = gpu.predict(cp.asarray(ids), verbose=0)
    assert isinstance(p, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(p), cpu.predict(ids, verbose=0), rtol=1e-4, atol=1e-6)
