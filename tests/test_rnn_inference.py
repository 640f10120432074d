"""Inference forward of the recurrent kernels (rnn_forward(..., keep_cache=False)): the same
outputs as the training forward, bit for bit, and the float64 reference, on every ISA and thread
count; NaN, empty batches and sequences; models run predict / evaluate / __call__ without a cache;
bad input (shapes, dtypes and views: tests/test_rnn.py runs its checks in both modes)."""
from __future__ import annotations

import numpy as np
import pytest

import pydl
from pydl import _core
from pydl import layers as L
from pydl.ops import rnn_backward, rnn_forward

from test_rnn import CELL_IDS, CELLS, close, make
from test_rnn_mask import ref_forward

SHAPES = [(1, 1, 3, 5), (3, 4, 5, 17), (7, 6, 9, 40), (32, 5, 24, 264)]  # N, T, C, H


def _inputs(rng, cell, N, T, C, H, dtype, states, masked, scaled):
    p = make(rng, cell, N, T, C, H, dtype, scale=0.3, states=states)
    mask = None
    if masked:
        mask = rng.random((N, T)) < 0.7
        mask[0, 0] = False  # a masked first step (the state comes from h0 / c0)
        mask[-1, -1] = False  # and a masked last one (h_T, c_T are kept states)
    rscale = (rng.random((N, H)) < 0.8).astype(dtype) / dtype(0.8) if scaled else None
    return p, mask, rscale


def _forward(cell, act, p, mask, rscale, keep):
    return rnn_forward(cell, p["x"], p["W"], p["U"], p["b"], h0=p["h0"], c0=p["c0"], b_h=p["b_h"], activation=act,
                       mask=mask, recurrent_scale=rscale, keep_cache=keep)


@pytest.mark.parametrize("cell,act", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N%dT%dC%dH%d" % s)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", ["plain", "no_states", "mask", "mask_rscale"])
def test_inference_equals_training_forward_and_reference(cell, act, shape, dtype, variant, rng):
    N, T, C, H = shape
    p, mask, rscale = _inputs(rng, cell, N, T, C, H, dtype, states=variant != "no_states",
                              masked=variant.startswith("mask"), scaled=variant == "mask_rscale")
    want = ref_forward(cell, act, *(None if p[k] is None else p[k].astype(np.float64)
                                    for k in ("x", "W", "U", "b", "h0", "c0", "b_h")),
                       mask=mask, rscale=None if rscale is None else rscale.astype(np.float64))
    tol = 2e-4 if dtype == np.float32 else 1e-10
    old_isa, old_nt = _core.selected_isa(), pydl.get_num_threads()
    try:
        for isa in _core.available_isas():
            _core.select_isa(isa)
            for nt in (1, 2):
                pydl.set_num_threads(nt)
                train = _forward(cell, act, p, mask, rscale, True)
                infer = _forward(cell, act, p, mask, rscale, False)
                what = f"{isa}, {nt} threads"
                assert infer[3] is None, what
                for i, name in enumerate(("outputs", "h_T", "c_T")):
                    if cell != "lstm" and i == 2:
                        assert infer[2] is None and train[2] is None
                        continue
                    assert infer[i].dtype == dtype
                    np.testing.assert_array_equal(infer[i], train[i], err_msg=f"{name}, {what}")
                    close(infer[i], want[i], tol, tol, f"{name}, {what}")
    finally:
        _core.select_isa(old_isa)
        pydl.set_num_threads(old_nt)


@pytest.mark.parametrize("cell,act", CELLS)
def test_inference_on_an_empty_sequence(cell, act, rng):
    p, _, _ = _inputs(rng, cell, 3, 0, 4, 5, np.float32, True, False, False)
    out, hT, cT, cache = _forward(cell, act, p, None, None, False)
    assert out.shape == (3, 0, 5) and cache is None
    np.testing.assert_array_equal(hT, p["h0"])
    if cell == "lstm":
        np.testing.assert_array_equal(cT, p["c0"])


@pytest.mark.parametrize("cell,act", CELLS)
def test_inference_nan_stays_in_its_sample(cell, act, rng):
    p, _, _ = _inputs(rng, cell, 3, 4, 2, 5, np.float32, True, False, False)
    p["x"][1, 2, 0] = np.nan
    train = _forward(cell, act, p, None, None, True)
    out, hT, cT, _ = _forward(cell, act, p, None, None, False)
    np.testing.assert_array_equal(out, train[0])  # NaN where training has NaN, nowhere else
    np.testing.assert_array_equal(hT, train[1])
    assert np.all(np.isfinite(out[[0, 2]])) and np.all(np.isfinite(out[1, :2])) and np.any(np.isnan(out[1, 2]))
    if cell == "lstm":
        np.testing.assert_array_equal(cT, train[2])


def test_inference_on_an_empty_batch(rng):
    p, _, _ = _inputs(rng, "lstm", 0, 3, 4, 5, np.float32, False, False, False)
    out, hT, cT, cache = _forward("lstm", "tanh", p, None, None, False)
    assert out.shape == (0, 3, 5) and hT.shape == (0, 5) and cT.shape == (0, 5) and cache is None


def test_core_rejects_a_partial_cache(rng):
    """The kernel keeps every cache (training) or none (inference): a mix is a clear error."""
    N, T, C, H = 2, 3, 4, 5
    p = make(rng, "lstm", N, T, C, H, np.float32)
    out, hT, cT = (np.empty(s, np.float32) for s in ((N, T, H), (N, H), (N, H)))
    gates, hprev, cs = (np.empty(s, np.float32) for s in ((N, T, 4 * H), (N, T, H), (N, T, H)))
    args = (CELL_IDS[("lstm", "tanh")], p["x"], p["W"], p["U"], p["b"], None, p["h0"], p["c0"], None, None,
            out, hT, cT)
    with pytest.raises(ValueError, match="hprev"):
        _core.rnn_forward(*args, gates, None, cs, None)
    with pytest.raises(ValueError, match="inference"):
        _core.rnn_forward(*args, None, hprev, None, None)
    with pytest.raises(ValueError, match="inference"):
        _core.rnn_forward(*args, None, None, cs, None)
    gru = make(rng, "gru", N, T, C, H, np.float32)
    with pytest.raises(ValueError, match="q is only used by the GRU"):
        _core.rnn_forward(*args, gates, hprev, cs, np.empty((N, T, H), np.float32))
    with pytest.raises(ValueError, match="cs is only used by the LSTM"):
        _core.rnn_forward(CELL_IDS[("gru", "tanh")], gru["x"], gru["W"], gru["U"], gru["b"], gru["b_h"], gru["h0"],
                          None, None, None, out, hT, None, np.empty((N, T, 3 * H), np.float32), hprev, cs,
                          np.empty((N, T, H), np.float32))


def test_backward_needs_the_cache(rng):
    p = make(rng, "gru", 2, 3, 4, 5, np.float32)
    *_, cache = rnn_forward("gru", p["x"], p["W"], p["U"], p["b"], h0=p["h0"], b_h=p["b_h"], keep_cache=False)
    with pytest.raises(TypeError, match="RNNCache"):
        rnn_backward("gru", None, np.ones((2, 5), np.float32), None, cache)


def _model(kind):
    pydl.random.seed(3)
    rec = {"lstm": lambda: L.LSTM(12, return_sequences=True),
           "gru": lambda: L.GRU(12, return_sequences=True),
           "bidirectional": lambda: L.Bidirectional(L.LSTM(6, return_sequences=True))}[kind]()
    m = pydl.Sequential([rec, L.LSTM(8), L.Dense(3, activation="softmax")])
    m.build((None, 7, 5))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m


@pytest.mark.parametrize("kind", ["lstm", "gru", "bidirectional"])
def test_models_infer_without_a_cache_and_train_after(kind, rng):
    x = rng.standard_normal((20, 7, 5)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    a, b = _model(kind), _model(kind)
    b.set_weights(a.get_weights())
    # By hand, layer by layer (each layer's own context keeps its cache): the reference output.
    h = x
    for layer in a.layers:
        h = layer.forward(h, training=False)
    for got in (a.predict(x, batch_size=8), a(x), a.predict_on_batch(x)):
        np.testing.assert_allclose(got, h, rtol=1e-6, atol=1e-7)
    a.evaluate(x, y, batch_size=8)
    recurrent = [c for layer, c, *_ in a._plan if isinstance(layer, (L.LSTM, L.GRU))]
    assert recurrent and all(c.cache is None for c in recurrent)  # nothing kept for backward
    with pytest.raises(RuntimeError, match="inference"):
        a._plan[-2][0].backward(np.ones((20, 8), np.float32), ctx=a._plan[-2][1])
    # Training after inference keeps its caches again: the same weights as a model that never inferred.
    a.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
