"""Keras-style text models: pad_sequences, Embedding(mask_zero) with integer ids end to end,
masks through the graph into the recurrent layers, recurrent dropout, Bidirectional,
variable-length inputs, and an IMDB-style classifier."""
from __future__ import annotations

import numpy as np
import pytest

import pydl
from pydl.layers import GRU, LSTM, Bidirectional, Dense, Dropout, Embedding, SimpleRNN
from pydl.ops import rnn_backward, rnn_forward
from pydl.utils import pad_sequences


# ---- pad_sequences -------------------------------------------------------------------------

def test_pad_sequences_keras_semantics():
    seqs = [[1, 2, 3], [4, 5], [6], []]
    out = pad_sequences(seqs)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[1, 2, 3], [0, 4, 5], [0, 0, 6], [0, 0, 0]])
    np.testing.assert_array_equal(pad_sequences(seqs, padding="post"), [[1, 2, 3], [4, 5, 0], [6, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=2), [[2, 3], [4, 5], [0, 6], [0, 0]])
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=2, truncating="post"), [[1, 2], [4, 5], [0, 6], [0, 0]])
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=4, value=-1, padding="post"),
                                  [[1, 2, 3, -1], [4, 5, -1, -1], [6, -1, -1, -1], [-1] * 4])
    f = pad_sequences([[0.5, 1.5], [2.5]], dtype="float32", value=9.0)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, [[0.5, 1.5], [9.0, 2.5]])
    big = pad_sequences([[2**40, 1]], dtype="int64", maxlen=3)
    np.testing.assert_array_equal(big, [[0, 2**40, 1]])
    # elements with a shape of their own
    v = pad_sequences([np.ones((2, 3)), np.full((1, 3), 2.0)], dtype="float64")
    assert v.shape == (2, 2, 3) and np.all(v[1, 0] == 0) and np.all(v[1, 1] == 2)
    assert pad_sequences([], maxlen=None).shape == (0, 0)
    assert pad_sequences(seqs, maxlen=0).shape == (4, 0)
    assert pydl.data.pad_sequences is pad_sequences


def test_pad_sequences_bad_input():
    with pytest.raises(ValueError, match="padding must be"):
        pad_sequences([[1]], padding="middle")
    with pytest.raises(ValueError, match="truncating must be"):
        pad_sequences([[1]], truncating="x")
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        pad_sequences([[1], 5])
    with pytest.raises(ValueError, match="maxlen"):
        pad_sequences([[1]], maxlen=-1)
    with pytest.raises(ValueError, match="string padding value"):
        pad_sequences([[1]], value="x")
    with pytest.raises(ValueError, match="elements of shape"):
        pad_sequences([np.ones((2, 3)), np.ones((1, 2))], dtype="float32")


# ---- Embedding: integer ids end to end --------------------------------------------------------

def test_embedding_ids_above_2_24_select_the_right_rows():
    V = 2**24 + 10
    pydl.seed(0)
    emb = Embedding(V, 1, input_shape=(3,))
    model = pydl.Sequential([emb])
    W = emb.params["W"]
    W[:, 0] = np.arange(V, dtype=np.float64) % 1021  # distinct neighbouring rows
    ids = np.array([[2**24 + 1, 2**24 + 3, 2**24 + 9], [2**24 - 1, 2**24, 5]], np.int64)
    want = W[ids, 0]
    got = model.predict(ids)[..., 0]
    np.testing.assert_array_equal(got, want)
    # ids as int32 too
    np.testing.assert_array_equal(model.predict(ids.astype(np.int32))[..., 0], want)
    # the gradient lands on exactly those rows
    model.compile(loss="mse", optimizer=pydl.optimizers.SGD(learning_rate=1.0))
    before = W.copy()
    model.train_on_batch(ids, np.zeros((2, 3, 1), np.float32))
    changed = np.flatnonzero(W[:, 0] != before[:, 0])
    np.testing.assert_array_equal(changed, np.unique(ids))
    # expected update: mse gradient 2 (w - 0) / (N T) per occurrence
    for i in np.unique(ids):
        np.testing.assert_allclose(W[i, 0], before[i, 0] * (1 - 2.0 / 6), rtol=1e-6)


def test_embedding_out_of_range_names_layer_id_and_input_dim():
    model = pydl.Sequential([Embedding(10, 2, input_shape=(3,), name="tok")])
    with pytest.raises(ValueError, match=r"Embedding tok\] id 12 is out of range for input_dim=10"):
        model.predict(np.array([[1, 12, 3]]))
    with pytest.raises(ValueError, match=r"id -1 is out of range for input_dim=10"):
        model.predict(np.array([[1, -1, 3]]))


# ---- masks through the graph ------------------------------------------------------------------

def _lstm_on(x_emb, layer):
    p = layer.params
    return rnn_forward(layer.cell, x_emb, p["W"], p["U"], p["b"], b_h=p.get("b_h"))[1]


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("cls", [LSTM, GRU, SimpleRNN])
def test_masked_model_equals_running_on_the_unpadded_sequences(padding, cls):
    pydl.seed(1)
    seqs = [[3, 7, 2, 9, 4], [5, 1], [8], [2, 2, 6]]
    x = pad_sequences(seqs, maxlen=6, padding=padding)
    emb = Embedding(12, 4, mask_zero=True)
    dense = Dense(5, activation="tanh")  # per-step on (N, T, C): passes the mask on
    rnn = cls(3)
    inp = pydl.Input((None,))
    model = pydl.Model(inp, rnn(dense(emb(inp))))
    got = model.predict(x)
    for n, s in enumerate(seqs):
        e = dense.forward(emb.forward(np.array([s])))
        np.testing.assert_allclose(got[n], _lstm_on(e, rnn)[0], rtol=1e-5, atol=1e-6)


def test_masked_training_gradients_ignore_padding():
    """Padding ids get no embedding gradient; the loss does not depend on the padded steps."""
    pydl.seed(2)
    x = pad_sequences([[3, 4, 5], [6, 7]], maxlen=5)
    model = pydl.Sequential([Embedding(10, 4, mask_zero=True, input_shape=(5,)), LSTM(3), Dense(1)])
    model.compile(loss="mse", optimizer=pydl.optimizers.SGD(learning_rate=0.1))
    y = np.array([[0.5], [-0.5]], np.float32)
    emb = model.layers[0]
    before = emb.params["W"].copy()
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(emb.params["W"][0], before[0])  # row of the padding id
    assert not np.array_equal(emb.params["W"][3], before[3])


def test_return_sequences_outputs_at_masked_steps_follow_keras():
    pydl.seed(3)
    layer = LSTM(3, return_sequences=True)
    x = np.random.default_rng(0).standard_normal((2, 5, 2)).astype(np.float32)
    mask = np.array([[0, 0, 1, 0, 1], [1, 1, 1, 1, 0]], bool)
    h0 = [np.full((2, 3), 0.3, np.float32), np.zeros((2, 3), np.float32)]
    out = layer.forward(x, mask=mask, initial_state=h0)
    # before the first unmasked step: zeros (not h0); a hole repeats the previous output
    assert np.all(out[0, :2] == 0)
    np.testing.assert_array_equal(out[0, 3], out[0, 2])
    np.testing.assert_array_equal(out[1, 4], out[1, 3])
    layer.zero_output_for_mask = True
    out2 = layer.forward(x, mask=mask, initial_state=h0)
    assert np.all(out2[~mask] == 0)
    np.testing.assert_array_equal(out2[mask], out[mask])
    # gradients through the masked outputs: dout at masked steps reaches nothing
    dout = np.ones_like(out2)
    dx = layer.backward(dout)
    assert np.all(dx[~mask] == 0)


def test_layer_without_mask_support_drops_it_with_a_warning():
    pydl.seed(4)
    inp = pydl.Input((4,))
    y = Dense(1)(pydl.layers.Flatten()(Embedding(10, 3, mask_zero=True)(inp)))
    model = pydl.Model(inp, y)
    with pytest.warns(UserWarning, match="does not support masking"):
        model.predict(np.array([[1, 2, 0, 0]]))


def test_bad_mask_shape_to_a_recurrent_layer():
    layer = GRU(2)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\), expected \(N, T\) = \(2, 4\)"):
        layer.forward(np.zeros((2, 4, 3), np.float32), mask=np.ones((2, 3), bool))


# ---- dropout and recurrent dropout ------------------------------------------------------------

@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_recurrent_dropout_is_the_documented_formula(cls):
    pydl.seed(5)
    rng = np.random.default_rng(1)
    layer = cls(4, dropout=0.3, recurrent_dropout=0.4, return_sequences=True)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    y_inf = layer.forward(x, training=False)
    y = layer.forward(x, training=True)
    ctx = layer._own_ctx
    in_keep, rs = ctx.in_keep, ctx.cache.rscale
    assert in_keep.shape == (3, 1, 5) and rs.shape == (3, 4)
    assert set(np.unique(in_keep)) <= {0.0, np.float32(1 / 0.7)} and set(np.unique(rs)) <= {0.0, np.float32(1 / 0.6)}
    p = layer.params
    want = rnn_forward(layer.cell, x * in_keep, p["W"], p["U"], p["b"], b_h=p.get("b_h"), recurrent_scale=rs)[0]
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(y, y_inf)
    # float64 finite differences of the whole layer with the drawn masks
    x64 = x.astype(np.float64)
    for k in layer.params:
        layer.params[k] = layer.params[k].astype(np.float64)
    dout = rng.standard_normal(y.shape)

    def f(xv):
        return float(np.sum(rnn_forward(layer.cell, xv * in_keep, layer.params["W"], layer.params["U"],
                                         layer.params["b"], b_h=layer.params.get("b_h"),
                                         recurrent_scale=rs.astype(np.float64))[0] * dout))

    out, _, _, cache = rnn_forward(layer.cell, x64 * in_keep, layer.params["W"], layer.params["U"], layer.params["b"],
                                   b_h=layer.params.get("b_h"), recurrent_scale=rs.astype(np.float64))
    g = rnn_backward(layer.cell, dout, None, None, cache)
    dx = g["dx"] * in_keep
    eps = 1e-6
    num = np.zeros_like(x64)
    for i in np.ndindex(x64.shape):
        a, b = x64.copy(), x64.copy()
        a[i] += eps
        b[i] -= eps
        num[i] = (f(a) - f(b)) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-7)


def test_dropout_masks_follow_pydl_seed():
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    outs = []
    for _ in range(2):
        pydl.seed(11)
        layer = LSTM(4, dropout=0.5, recurrent_dropout=0.5)
        outs.append(layer.forward(x, training=True))
    np.testing.assert_array_equal(outs[0], outs[1])


# ---- Bidirectional -----------------------------------------------------------------------------

def _torch_bi(torch, cell, C, H):
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](C, H, batch_first=True, bidirectional=True).double()
    return mod


def _copy_from_torch(bi, mod, cell):
    for sfx, pre in (("", "forward_"), ("_reverse", "backward_")):
        W = getattr(mod, "weight_ih_l0" + sfx).detach().numpy().T
        U = getattr(mod, "weight_hh_l0" + sfx).detach().numpy().T
        bi_, bh = getattr(mod, "bias_ih_l0" + sfx).detach().numpy(), getattr(mod, "bias_hh_l0" + sfx).detach().numpy()
        bi.params[pre + "W"][...] = W
        bi.params[pre + "U"][...] = U
        if cell == "gru":
            bi.params[pre + "b"][...] = bi_
            bi.params[pre + "b_h"][...] = bh
        else:
            bi.params[pre + "b"][...] = bi_ + bh


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_matches_torch(cell):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    N, T, C, H = 3, 5, 4, 6
    mod = _torch_bi(torch, cell, C, H)
    cls = LSTM if cell == "lstm" else GRU
    bi = Bidirectional(cls(H, return_sequences=True))
    bi.build((None, T, C))
    for k in bi.params:
        bi.params[k] = bi.params[k].astype(np.float64)
    _copy_from_torch(bi, mod, cell)
    x = np.random.default_rng(0).standard_normal((N, T, C))
    y = bi.forward(x)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt, _ = mod(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    bi.zero_grads()
    dx = bi.backward(dy)
    (yt * torch.from_numpy(dy)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(bi.grads["forward_W"], mod.weight_ih_l0.grad.numpy().T, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(bi.grads["backward_U"], mod.weight_hh_l0_reverse.grad.numpy().T, rtol=1e-9,
                               atol=1e-11)


def test_bidirectional_with_post_padding_matches_torch_packed():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    N, T, C, H = 3, 6, 3, 4
    mod = _torch_bi(torch, "lstm", C, H)
    bi = Bidirectional(LSTM(H))
    bi.build((None, T, C))
    for k in bi.params:
        bi.params[k] = bi.params[k].astype(np.float64)
    _copy_from_torch(bi, mod, "lstm")
    lengths = np.array([6, 2, 4])
    x = np.random.default_rng(2).standard_normal((N, T, C))
    mask = np.arange(T)[None, :] < lengths[:, None]
    y = bi.forward(x, mask=mask)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    _, (h, _) = mod(packed)
    np.testing.assert_allclose(y, torch.cat([h[0], h[1]], 1).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_merge_modes_and_states(merge_mode):
    pydl.seed(6)
    x = np.random.default_rng(3).standard_normal((2, 4, 3)).astype(np.float32)
    bi = Bidirectional(GRU(5, return_sequences=True, return_state=True), merge_mode=merge_mode)
    outs = bi.forward(x)
    yf = bi.forward_layer.forward(x)
    yb = bi.backward_layer.forward(x)
    yf_seq, yb_seq = yf[0], yb[0][:, ::-1]
    merged = {"concat": [np.concatenate([yf_seq, yb_seq], -1)], "sum": [yf_seq + yb_seq],
              "mul": [yf_seq * yb_seq], "ave": [(yf_seq + yb_seq) / 2], None: [yf_seq, yb_seq]}[merge_mode]
    want = merged + [yf[1], yb[1]]
    assert len(outs) == len(want)
    for a, b in zip(outs, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    shapes = bi.compute_output_shape((None, 4, 3))
    assert [tuple(s[1:]) for s in shapes] == [a.shape[1:] for a in outs]
    # backward: finite differences on x through all outputs
    bi.forward(x)
    rng = np.random.default_rng(4)
    douts = [rng.standard_normal(o.shape) for o in outs]
    bi.zero_grads()
    dx = bi.backward(douts)

    def f(xv):
        return sum(float(np.sum(o.astype(np.float64) * d)) for o, d in zip(bi.forward(xv.astype(np.float32)), douts))

    i = (1, 2, 0)
    e = np.zeros_like(x)
    e[i] = 1e-2
    num = (f(x + e) - f(x - e)) / 2e-2
    np.testing.assert_allclose(dx[i], num, rtol=2e-2, atol=2e-3)


def test_bidirectional_config_names_and_errors():
    bi = Bidirectional(LSTM(3, name="enc"), merge_mode="sum")
    bi.build((None, 5, 2))
    assert bi.forward_layer.name == "forward_enc" and bi.backward_layer.name == "backward_enc"
    assert bi.backward_layer.go_backwards and not bi.forward_layer.go_backwards
    assert sorted(bi.params) == sorted(["forward_W", "forward_U", "forward_b", "backward_W", "backward_U",
                                        "backward_b"])
    cfg = bi.get_config()
    re = Bidirectional.from_config(cfg)
    assert re.merge_mode == "sum" and re.forward_layer.units == 3
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="SimpleRNN, LSTM or GRU"):
        Bidirectional(Dense(3))
    with pytest.raises(ValueError, match="different go_backwards"):
        Bidirectional(LSTM(3), backward_layer=LSTM(3))
    custom = Bidirectional(LSTM(3), backward_layer=GRU(3, go_backwards=True))
    assert isinstance(Bidirectional.from_config(custom.get_config()).backward_layer, GRU)


def test_go_backwards_processes_the_reversed_sequence():
    pydl.seed(7)
    x = np.random.default_rng(5).standard_normal((2, 4, 3)).astype(np.float32)
    a = SimpleRNN(3, go_backwards=True, return_sequences=True)
    y = a.forward(x)
    p = a.params
    want = rnn_forward("rnn", np.ascontiguousarray(x[:, ::-1]), p["W"], p["U"], p["b"])[0]
    np.testing.assert_array_equal(y, want)
    dx = a.backward(np.ones_like(y))
    want_dx = rnn_backward("rnn", np.ones_like(y), None, None,
                           rnn_forward("rnn", np.ascontiguousarray(x[:, ::-1]), p["W"], p["U"], p["b"])[3])["dx"]
    np.testing.assert_allclose(dx, want_dx[:, ::-1], rtol=1e-6)


# ---- variable-length inputs ---------------------------------------------------------------------

def test_variable_length_inputs_build_run_and_summarise():
    pydl.seed(8)
    model = pydl.Sequential([Embedding(50, 8, mask_zero=True, input_shape=(None,)), LSTM(4, return_sequences=True),
                             GRU(3)])
    text = model.summary(print_fn=None)
    assert "(None, None, 8)" in text and "(None, None, 4)" in text
    for T in (3, 11):
        ids = np.random.default_rng(T).integers(1, 50, (2, T))
        assert model.predict(ids).shape == (2, 3)
    rnn = pydl.Sequential([LSTM(2, input_shape=(None, 5))])
    assert rnn.predict(np.zeros((1, 7, 5), np.float32)).shape == (1, 2)
    assert "(None, 2)" in rnn.summary(print_fn=None)


# ---- an IMDB-style classifier, as written for Keras ---------------------------------------------

def _synthetic_reviews(rng, n, vocab=200, marker=7):
    """Label 1 when the marker token occurs in the review; lengths 5..40."""
    seqs, labels = [], []
    for _ in range(n):
        L = int(rng.integers(5, 41))
        s = list(rng.integers(8, vocab, L))
        y = int(rng.random() < 0.5)
        if y:
            s[int(rng.integers(0, L))] = marker
        seqs.append(s)
        labels.append(y)
    return seqs, np.array(labels, np.float32)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["lstm_dropout", "bidirectional"])
def test_imdb_style_classifier_learns_and_round_trips(bidirectional, tmp_path):
    from pydl.layers import Dense, Embedding, LSTM  # noqa: F811  (keras.layers in the original)
    from pydl.models import Sequential

    pydl.seed(0)
    rng = np.random.default_rng(0)
    max_features, maxlen = 200, 40
    x_train, y_train = _synthetic_reviews(rng, 600, max_features)
    x_test, y_test = _synthetic_reviews(rng, 200, max_features)
    x_train = pad_sequences(x_train, maxlen=maxlen)
    x_test = pad_sequences(x_test, maxlen=maxlen)

    model = Sequential()
    model.add(Embedding(max_features, 32, mask_zero=True))
    if bidirectional:
        model.add(Bidirectional(LSTM(16)))
    else:
        model.add(LSTM(32, dropout=0.2, recurrent_dropout=0.2))
    model.add(Dense(1, activation="sigmoid"))
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=6, verbose=0)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    assert acc > 0.85, (loss, acc)

    path = tmp_path / "imdb.pydl"
    model.save(path)
    again = pydl.load_model(path)
    np.testing.assert_array_equal(again.predict(x_test), model.predict(x_test))
    assert again.layers[0].mask_zero
