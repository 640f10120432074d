"""fit / evaluate / predict on every kind of input (arrays, generators, iterables, Sequences,
PyTorch DataLoaders), steps_per_epoch, validation_steps, sample_weight and class_weight against
NumPy formulas (Keras: sum(w * l) / batch size), prefetch."""
import warnings

import numpy as np
import pytest

import pydl
from pydl import Input, Model, Sequential
from pydl.layers import Dense
from pydl.optimizers import SGD

try:
    import torch
    from torch.utils.data import DataLoader, TensorDataset
except ImportError:  # pragma: no cover
    torch = None


def _data(n=40, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return x, y


def _clf(d=5, classes=3, seed=0, lr=0.1):
    pydl.seed(seed)
    model = Sequential([Dense(8, activation="tanh", input_shape=(d,)), Dense(classes, activation="softmax")])
    model.compile("sparse_categorical_crossentropy", SGD(lr), metrics=["accuracy"])
    return model


def _np_scce(p, y):
    p = p.astype(np.float64)
    p = np.clip(p / p.sum(1, keepdims=True), 1e-7, 1 - 1e-7)
    return -np.log(p[np.arange(len(y)), y])


class Batches(pydl.utils.Sequence):
    def __init__(self, x, y, bs, w=None):
        self.x, self.y, self.bs, self.w = x, y, bs, w
        self.epochs_ended = 0

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __getitem__(self, i):
        sl = slice(i * self.bs, (i + 1) * self.bs)
        if self.w is None:
            return self.x[sl], self.y[sl]
        return self.x[sl], self.y[sl], self.w[sl]

    def on_epoch_end(self):
        self.epochs_ended += 1


class Iterable:
    """Restartable, no __len__ or __getitem__ (a list itself is taken as arrays, as Keras)."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def _gen(x, y, bs, epochs, w=None):
    for _ in range(epochs):
        for lo in range(0, len(x), bs):
            sl = slice(lo, lo + bs)
            yield (x[sl], y[sl]) if w is None else (x[sl], y[sl], w[sl])


# ---- loss formulas -----------------------------------------------------------------------
def test_per_sample_losses_average_to_the_kernel_value():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 1, (6, 4)).astype(np.float32)
    z = rng.standard_normal((6, 4)).astype(np.float32)
    t = rng.uniform(0, 1, (6, 4)).astype(np.float32)
    onehot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 6)]
    labels = rng.integers(0, 4, 6)
    cases = [("mse", t, z, False), ("mae", t, z, False), ("binary_crossentropy", t, p, False),
             ("binary_crossentropy", t, z, True), ("categorical_crossentropy", onehot, p, False),
             ("categorical_crossentropy", onehot, z, True), ("sparse_categorical_crossentropy", labels, p, False),
             ("sparse_categorical_crossentropy", labels, z, True)]
    for kind, yt, yp, logits in cases:
        per = pydl.losses.per_sample(kind, yt, yp, logits)
        value, _ = pydl.ops.nn.loss(kind, yt, yp, from_logits=logits)
        assert per.shape == (6,)
        assert per.mean() == pytest.approx(value, rel=1e-5), kind


@pytest.mark.parametrize("kind,yt,yp,match", [
    ("sparse_categorical_crossentropy", [0, -1], np.full((2, 3), 1 / 3), r"labels must lie in \[0, 3\)"),
    ("sparse_categorical_crossentropy", [0, 7], np.full((2, 3), 1 / 3), r"labels must lie in \[0, 3\)"),
    ("mse", np.zeros(6), np.zeros((2, 3)), r"y_true \(6,\) does not match y_pred \(2, 3\)"),
    ("binary_crossentropy", [5.0, 0.0], [0.5, 0.5], r"must lie in \[0, 1\]"),
])
def test_per_sample_checks_targets_as_the_loss_objects_do(kind, yt, yp, match):
    with pytest.raises(ValueError, match=match):
        pydl.losses.per_sample(kind, np.asarray(yt), np.asarray(yp))
    # (N,) targets for (N, 1) predictions stay fine
    assert pydl.losses.per_sample("mse", np.zeros(4), np.ones((4, 1))).tolist() == [1.0] * 4


@pytest.mark.parametrize("batch_size", [40, 16])
def test_sample_weight_evaluate_is_keras_weighted_mean(batch_size):
    x, y = _data()
    w = np.random.default_rng(2).uniform(0, 3, len(x)).astype(np.float32)
    model = _clf()
    p = model.predict(x)
    want = float(np.sum(w * _np_scce(p, y)) / len(x))  # sum(w l) / N, not / sum(w)
    got = model.evaluate(x, y, sample_weight=w, batch_size=batch_size, return_dict=True)
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    assert got["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))  # metrics stay unweighted
    plain = model.evaluate(x, y, batch_size=batch_size, return_dict=True)["loss"]
    assert plain == pytest.approx(_np_scce(p, y).mean(), rel=1e-5)


def test_sample_weight_gradient_matches_numpy():
    """Dense(1), mse: L = sum_i w_i r_i^2 / N, dW = 2/N sum_i w_i r_i x_i; one SGD step."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    y = rng.standard_normal((10, 1)).astype(np.float32)
    w = rng.uniform(0, 2, 10).astype(np.float32)
    pydl.seed(0)
    model = Sequential([Dense(1, input_shape=(4,))])
    model.compile("mse", SGD(0.1))
    W0, b0 = (a.astype(np.float64) for a in model.get_weights())
    r = x @ W0 + b0 - y
    loss = model.train_on_batch(x, y, sample_weight=w)
    assert loss == pytest.approx(float(np.sum(w[:, None] * r ** 2) / 10), rel=1e-5)
    dW = 2 / 10 * (x.T.astype(np.float64) @ (w[:, None] * r))
    db = 2 / 10 * np.sum(w[:, None] * r, axis=0)
    W1, b1 = model.get_weights()
    np.testing.assert_allclose(W1, W0 - 0.1 * dW, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b0 - 0.1 * db, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss,act", [("binary_crossentropy", "sigmoid"), ("categorical_crossentropy", "softmax")])
def test_sample_weight_other_losses(loss, act):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 3)).astype(np.float32)
    k = 1 if loss == "binary_crossentropy" else 3
    y = (rng.uniform(size=(12, 1)) > 0.5).astype(np.float32) if k == 1 else np.eye(3, dtype=np.float32)[
        rng.integers(0, 3, 12)]
    w = rng.uniform(0, 2, 12).astype(np.float32)
    pydl.seed(0)
    model = Sequential([Dense(k, activation=act, input_shape=(3,))])
    model.compile(loss, SGD(0.0))
    p = np.clip(model.predict(x).astype(np.float64), 1e-7, 1 - 1e-7)
    per = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(1) if k == 1 else -(y * np.log(p)).sum(1)
    got = model.evaluate(x, y, sample_weight=w, return_dict=True)["loss"]
    assert got == pytest.approx(float(np.sum(w * per) / 12), rel=1e-5)


def test_class_weight_is_sample_weight_by_class():
    x, y = _data()
    cw = {0: 0.5, 1: 2.0, 2: 1.0}
    a, b = _clf(), _clf()
    p = a.predict(x)
    hist = a.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, class_weight=cw, verbose=0)
    w = np.array([cw[c] for c in y], np.float32)
    assert hist.history["loss"][0] == pytest.approx(float(np.sum(w * _np_scce(p, y)) / len(x)), rel=1e-5)
    b.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, sample_weight=w, verbose=0)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    # one-hot targets: the class is the argmax; classes missing from the dict weigh 1
    w2 = pydl.data_adapters.class_weight_to_sample_weight({1: 3.0}, np.eye(3)[y], "t")
    np.testing.assert_array_equal(w2, np.where(y == 1, 3.0, 1.0))
    with pytest.raises(ValueError, match="together"):
        a.fit(x, y, class_weight=cw, sample_weight=w, verbose=0)


def test_class_weight_targets_must_be_class_indices():
    cw = pydl.data_adapters.class_weight_to_sample_weight
    # a negative or NaN class is an error, not numpy's wrap-around to the last class
    for bad in (np.array([-1.0, 0, 1, 2]), np.array([np.nan, 1.0]), -5 * np.ones(4)):
        with pytest.raises(ValueError, match=r"\[fit\] class_weight needs class indices >= 0"):
            cw({2: 10.0}, bad, "fit")
    # huge classes and keys are looked up, not tabled
    np.testing.assert_array_equal(cw({10**12: 4.0, 1: 2.0}, np.array([1e11, 1, 0, 1e12]), "t"), [1, 2, 1, 4])
    m = Sequential([Dense(1, input_shape=(4,))])
    m.compile("mse", SGD(0.01))
    with pytest.raises(ValueError, match="class indices >= 0"):
        m.fit(np.ones((6, 4), np.float32), -5 * np.ones(6), class_weight={0: 2.0}, verbose=0)


# ---- every kind of input gives the same training as arrays ------------------------------------
def _trained(data_kind, epochs=2, bs=8, prefetch=False, weighted=False):
    x, y = _data()
    w = np.linspace(0.5, 1.5, len(x)).astype(np.float32) if weighted else None
    model = _clf()
    kw = dict(epochs=epochs, verbose=0, prefetch=prefetch)
    if data_kind == "arrays":
        model.fit(x, y, batch_size=bs, shuffle=False, sample_weight=w, **kw)
    elif data_kind == "sequence":
        seq = Batches(x, y, bs, w)
        model.fit(seq, shuffle=False, **kw)
        assert seq.epochs_ended == epochs
    elif data_kind == "generator":
        model.fit(_gen(x, y, bs, epochs, w), steps_per_epoch=-(-len(x) // bs), **kw)
    elif data_kind == "iterable":
        model.fit(Iterable(list(_gen(x, y, bs, 1, w))), **kw)
    elif data_kind == "dataloader":
        parts = [torch.from_numpy(x), torch.from_numpy(y)] + ([torch.from_numpy(w)] if weighted else [])
        model.fit(DataLoader(TensorDataset(*parts), batch_size=bs, shuffle=False), **kw)
    return model.get_weights()


@pytest.mark.parametrize("kind", ["sequence", "generator", "iterable", "dataloader"])
@pytest.mark.parametrize("weighted", [False, True])
def test_sources_train_like_arrays(kind, weighted):
    if kind == "dataloader" and torch is None:
        pytest.skip("torch not installed")
    want = _trained("arrays", weighted=weighted)
    got = _trained(kind, weighted=weighted)
    for u, v in zip(want, got):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["arrays", "sequence", "generator"])
def test_prefetch_gives_the_same_result(kind):
    for u, v in zip(_trained(kind), _trained(kind, prefetch=True)):
        np.testing.assert_array_equal(u, v)


def test_generator_running_out_ends_training_with_a_warning():
    x, y = _data()
    model = _clf()
    with pytest.warns(UserWarning, match="ran out of data"):
        hist = model.fit(_gen(x, y, 8, 1), steps_per_epoch=3, epochs=4, verbose=0)  # 5 batches in all
    assert hist.epoch == [0, 1]  # 3 batches, then 2 and the warning
    # without steps_per_epoch a generator is one epoch; the next finds it empty
    model = _clf()
    with pytest.warns(UserWarning, match="ran out of data"):
        hist = model.fit(_gen(x, y, 8, 1), epochs=3, verbose=0)
    assert hist.epoch == [0]


def test_steps_per_epoch_continues_a_restartable_source():
    x, y = _data()  # 5 batches of 8; 3 epochs of 2 steps run over 6 batches: 5, then a new pass
    seen = []

    class Recording(Batches):
        def __getitem__(self, i):
            seen.append(i)
            return super().__getitem__(i)

    model = _clf()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(Recording(x, y, 8), steps_per_epoch=2, epochs=3, shuffle=False, verbose=0)
    assert seen == [0, 1, 2, 3, 4, 0]


def test_sequence_shuffle_visits_every_batch_once_per_epoch():
    x, y = _data()
    seen = []

    class Recording(Batches):
        def __getitem__(self, i):
            seen.append(i)
            return super().__getitem__(i)

    _clf().fit(Recording(x, y, 8), epochs=2, shuffle=True, verbose=0)
    assert sorted(seen[:5]) == list(range(5)) and sorted(seen[5:]) == list(range(5))


def test_validation_data_kinds_and_steps():
    x, y = _data()
    xv, yv = x[:16], y[:16]
    model = _clf()
    want = model.evaluate(xv, yv, batch_size=8, return_dict=True)["loss"]
    h = model.fit(x, y, epochs=1, verbose=0, validation_data=(xv, yv), shuffle=False,
                  callbacks=[pydl.callbacks.LambdaCallback(on_train_begin=lambda logs: None)])
    h2_model = _clf()
    h2 = h2_model.fit(x, y, epochs=1, verbose=0, shuffle=False, validation_data=Batches(xv, yv, 8))
    assert h.history["val_loss"] == pytest.approx(h2.history["val_loss"], rel=1e-6)
    # a generator for validation with validation_steps: 2 batches per evaluation
    m3 = _clf()
    h3 = m3.fit(x, y, epochs=2, verbose=0, shuffle=False, validation_data=_gen(xv, yv, 8, 2), validation_steps=2)
    assert len(h3.history["val_loss"]) == 2
    # weighted validation tuples
    w = np.ones(16, np.float32) * 2
    m4 = _clf()
    v_plain = m4.evaluate(xv, yv, return_dict=True)["loss"]
    assert m4.evaluate(xv, yv, sample_weight=w, return_dict=True)["loss"] == pytest.approx(2 * v_plain, rel=1e-6)
    assert want > 0


def test_evaluate_and_predict_on_sources():
    x, y = _data()
    model = _clf()
    ref = model.evaluate(x, y, batch_size=8, return_dict=True)
    assert model.evaluate(Batches(x, y, 8), return_dict=True) == pytest.approx(ref)
    assert model.evaluate(_gen(x, y, 8, 1), return_dict=True) == pytest.approx(ref)
    assert model.evaluate(Batches(x, y, 8), steps=2, return_dict=True)["loss"] == pytest.approx(
        model.evaluate(x[:16], y[:16], return_dict=True)["loss"])
    p = model.predict(x)
    np.testing.assert_allclose(model.predict(Batches(x, y, 8)), p, rtol=1e-6)
    np.testing.assert_allclose(model.predict((xb for xb, _ in _gen(x, y, 8, 1))), p, rtol=1e-6)
    np.testing.assert_allclose(model.predict(Batches(x, y, 8), steps=2), p[:16], rtol=1e-6)
    if torch is not None:
        dl = DataLoader(TensorDataset(torch.from_numpy(x)), batch_size=8)
        np.testing.assert_allclose(model.predict(dl), p, rtol=1e-6)
        np.testing.assert_allclose(model.predict(torch.from_numpy(x)), p, rtol=1e-6)


def test_multi_input_output_batches_as_dicts_and_tuples():
    rng = np.random.default_rng(5)
    xa = rng.standard_normal((24, 3)).astype(np.float32)
    xb = rng.standard_normal((24, 2)).astype(np.float32)
    yc = rng.integers(0, 2, 24)
    yr = rng.standard_normal((24, 1)).astype(np.float32)

    def build():
        pydl.seed(0)
        a, b = Input((3,), name="a"), Input((2,), name="b")
        h = Dense(6, activation="tanh")(pydl.layers.Concatenate()([a, b]))
        model = Model([a, b], [Dense(2, activation="softmax", name="cls")(h), Dense(1, name="reg")(h)])
        model.compile(["sparse_categorical_crossentropy", "mse"], SGD(0.05))
        return model

    ref = build()
    ref.fit([xa, xb], [yc, yr], batch_size=8, epochs=2, shuffle=False, verbose=0)

    def dict_batches():
        for _ in range(2):
            for lo in range(0, 24, 8):
                s = slice(lo, lo + 8)
                yield {"a": xa[s], "b": xb[s]}, {"cls": yc[s], "reg": yr[s]}

    m = build()
    m.fit(dict_batches(), steps_per_epoch=3, epochs=2, verbose=0)
    for u, v in zip(ref.get_weights(), m.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    tuples = [((xa[lo:lo + 8], xb[lo:lo + 8]), (yc[lo:lo + 8], yr[lo:lo + 8])) for lo in range(0, 24, 8)]
    m2 = build()
    m2.fit(Iterable(tuples), epochs=2, verbose=0)
    for u, v in zip(ref.get_weights(), m2.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    # per-output sample weights: weights on "reg" only
    w = np.full(24, 3.0, np.float32)
    m3 = build()
    base = m3.evaluate([xa, xb], [yc, yr], return_dict=True)
    got = m3.evaluate([xa, xb], [yc, yr], sample_weight={"reg": w}, return_dict=True)
    assert got["reg_loss"] == pytest.approx(3 * base["reg_loss"], rel=1e-5)
    assert got["cls_loss"] == pytest.approx(base["cls_loss"], rel=1e-6)


def test_pipeline_errors():
    x, y = _data()
    model = _clf()
    with pytest.raises(ValueError, match="must not be given"):
        model.fit(_gen(x, y, 8, 1), y, verbose=0)
    with pytest.raises(ValueError, match="no targets"):
        model.fit((xb for xb, _ in _gen(x, y, 8, 1)), verbose=0)
    with pytest.raises(ValueError, match="y is required"):
        model.fit(x, verbose=0)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        model.fit(x, y, sample_weight=np.ones(3), verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(Batches(x, y, 8), validation_split=0.2, verbose=0)

    def bad():
        yield x[:8], y[:8]
        raise RuntimeError("broken reader")

    for prefetch in (False, True):
        with pytest.raises(RuntimeError, match="broken reader"):
            _clf().fit(bad(), steps_per_epoch=3, verbose=0, prefetch=prefetch)
