import numpy as np
import pytest

import pydl
from pydl import Sequential
from pydl.callbacks import Callback, EarlyStopping
from pydl.layers import BatchNormalization, Dense, Dropout, Flatten, Softmax
from pydl.optimizers import Adam, SGD
from pydl.regularizers import L2


@pytest.fixture(scope="module")
def digits():
    x, y = pydl.datasets.load_digits()
    (xtr, ytr), (xv, yv), (xte, yte) = pydl.data.train_val_test_split(x.reshape(len(x), -1), y,
                                                                       ratios=(0.7, 0.1, 0.2), stratify=True, seed=0)
    sc = pydl.data.StandardScaler().fit(xtr)
    f = lambda a: sc.transform(a).astype(np.float32)  # noqa: E731
    return (f(xtr), ytr), (f(xv), yv), (f(xte), yte)


def _mlp(n_in=64, hidden=64, n_out=10, **dense_kw):
    return Sequential([Dense(hidden, activation="relu", input_shape=(n_in,), **dense_kw),
                       Dense(n_out, activation="softmax")])


def test_mlp_digits_reaches_95_percent(digits):
    (xtr, ytr), (xv, yv), (xte, yte) = digits
    pydl.seed(0)
    model = Sequential([Dense(128, activation="relu", input_shape=(64,)), Dropout(0.1),
                        Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(1e-3), metrics=["accuracy"])
    hist = model.fit(xtr, ytr, batch_size=32, epochs=12, validation_data=(xv, yv), verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert len(hist.history["loss"]) == 12 and hist is model.history
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    res = model.evaluate(xte, yte, return_dict=True)
    assert set(res) == {"loss", "accuracy"}
    assert res["accuracy"] >= 0.95
    pred = model.predict(xte).argmax(1)
    assert np.mean(pred == yte) == pytest.approx(res["accuracy"])


def test_training_is_identical_for_one_and_two_threads(digits):
    (xtr, ytr), (xv, yv), _ = digits
    old = pydl.get_num_threads()
    runs = []
    try:
        for nt in (1, 2):
            pydl.set_num_threads(nt)
            pydl.seed(7)
            model = Sequential([Dense(96, activation="relu", input_shape=(64,)), Dropout(0.2), BatchNormalization(),
                                Dense(10)])
            model.compile(pydl.losses.SparseCategoricalCrossentropy(from_logits=True), Adam(clipnorm=1.0))
            model.fit(xtr[:600], ytr[:600], batch_size=100, epochs=2, verbose=0)
            runs.append((model.get_weights(), model.predict(xv)))
    finally:
        pydl.set_num_threads(old)
    (w1, p1), (w2, p2) = runs
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p1, p2)


def test_early_stopping_restores_best_weights(digits):
    (xtr, ytr), (xv, yv), _ = digits
    pydl.seed(1)
    model = _mlp(hidden=128)
    model.compile("sparse_categorical_crossentropy", Adam(3e-3))
    snaps = []

    class Snap(Callback):
        def on_epoch_end(self, epoch, logs=None):
            snaps.append((logs["val_loss"], self.model.get_weights()))

    es = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    hist = model.fit(xtr[:400], ytr[:400], epochs=80, validation_data=(xv, yv), callbacks=[Snap(), es], verbose=0)
    n = len(hist.epoch)
    assert n < 80, "training should have stopped early on this overfitting setup"
    best = int(np.argmin([s[0] for s in snaps]))
    assert best < n - 1
    for got, want in zip(model.get_weights(), snaps[best][1]):
        np.testing.assert_array_equal(got, want)
    assert model.evaluate(xv, yv, return_dict=True)["loss"] == pytest.approx(snaps[best][0], rel=1e-6)


def test_validation_split_takes_last_samples(rng):
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.standard_normal((40, 2)).astype(np.float32)
    y[-10:] += 50.0  # a very different validation tail
    pydl.seed(0)
    model = Sequential([Dense(2, input_shape=(3,))])
    model.compile("mse", SGD(0.01))
    hist = model.fit(x, y, epochs=1, batch_size=8, validation_split=0.25, verbose=0)
    tail = model.evaluate(x[-10:], y[-10:], batch_size=8, return_dict=True)["loss"]
    head = model.evaluate(x[:10], y[:10], batch_size=8, return_dict=True)["loss"]
    assert hist.history["val_loss"][0] == pytest.approx(tail, rel=1e-6)
    assert abs(tail - head) > 100


def test_validation_split_rounds_like_keras():
    # Keras: split_at = floor(n * (1 - validation_split)); 10 samples at 0.25 -> 7 train, 3 validation
    seen = []

    class Count(pydl.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.zeros((10, 1), np.float32)
    model = Sequential([Dense(1, input_shape=(2,))])
    model.compile("mse", SGD(0.0))
    model.fit(x, y, epochs=1, batch_size=1, validation_split=0.25, callbacks=[Count()], verbose=0)
    assert len(seen) == 7


def test_fit_does_not_mutate_inputs(rng):
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((50, 6)).astype(dtype)
        y = rng.integers(0, 3, 50)
        x0, y0 = x.copy(), y.copy()
        model = Sequential([BatchNormalization(input_shape=(6,)), Dense(8, activation="relu"), Dropout(0.5),
                            Dense(3, activation="softmax")])
        model.compile("sparse_categorical_crossentropy", "adam", ["accuracy"])
        model.fit(x, y, epochs=2, batch_size=7, validation_split=0.2, shuffle=True, verbose=0)
        model.predict(x)
        model.evaluate(x, y, return_dict=True)
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)


def test_regularization_in_loss_and_set_epoch(rng):
    x = rng.standard_normal((20, 4)).astype(np.float32)
    y = rng.standard_normal((20, 1)).astype(np.float32)
    model = Sequential([Dense(1, input_shape=(4,), kernel_regularizer=L2(0.5), bias_regularizer=L2(0.5))])
    epochs_seen = []

    class SpySGD(SGD):
        def set_epoch(self, epoch):
            epochs_seen.append(epoch)
            super().set_epoch(epoch)

    pydl.registry.optimizers.register(SpySGD)
    model.compile("mse", SpySGD(0.01))
    model.layers[0].params["b"][...] = 0.3
    W = model.layers[0].params["W"].astype(np.float64)
    plain = float(np.mean((x.astype(np.float64) @ W + 0.3 - y) ** 2))
    penalty = 0.5 * (W ** 2).sum() + 0.5 * 0.09
    assert model.evaluate(x, y, return_dict=True)["loss"] == pytest.approx(plain + penalty, rel=1e-5)
    model.fit(x, y, epochs=3, verbose=0)
    assert epochs_seen == [0, 1, 2]
    # the training gradient includes the penalty: the model gradcheck sees loss + penalty
    pydl.gradcheck(model, x[:5], y[:5], loss="mse")


def test_fused_softmax_crossentropy_matches_logits_model(rng):
    x = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    pydl.seed(3)
    a = Sequential([Dense(6, activation="tanh", input_shape=(5,)), Dense(4, activation="softmax")])
    b = Sequential([Dense(6, activation="tanh", input_shape=(5,)), Dense(4)])
    b.set_weights(a.get_weights())
    a.compile("sparse_categorical_crossentropy", SGD(0.1))
    b.compile(pydl.losses.SparseCategoricalCrossentropy(from_logits=True), SGD(0.1))
    assert a._fused() and not b._fused()
    for _ in range(3):
        la, lb = a.train_on_batch(x, y), b.train_on_batch(x, y)
        assert la == pytest.approx(lb, rel=1e-5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    # a separate Softmax layer is fused too; gradients checked end to end in float64
    c = Sequential([Dense(4, input_shape=(5,)), Softmax()])
    c.compile("categorical_crossentropy", "sgd")
    assert c._fused()
    pydl.gradcheck(c, x[:6], np.eye(4)[y[:6]], loss="categorical_crossentropy")
    pydl.gradcheck(a, x[:6], y[:6], loss="sparse_categorical_crossentropy")


def test_fused_loss_is_finite_for_saturated_softmax():
    model = Sequential([Dense(3, input_shape=(2,), kernel_initializer="zeros"), Softmax()])
    model.layers[0].params["b"][...] = [300.0, 0.0, -300.0]  # p underflows to 0 for class 2
    model.compile("sparse_categorical_crossentropy", SGD(1e-3))
    res = model.evaluate(np.zeros((2, 2), np.float32), np.array([2, 2]), return_dict=True)
    assert res["loss"] == pytest.approx(600.0, rel=1e-5)
    loss = model.train_on_batch(np.zeros((2, 2), np.float32), np.array([2, 2]))
    assert np.isfinite(loss) and all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_model_gradcheck_with_batchnorm_dropout(rng):
    model = Sequential([Dense(5, activation="elu", input_shape=(4,), kernel_regularizer="l1_l2"),
                        BatchNormalization(), Dropout(0.3), Dense(3, activation="sigmoid")])
    x = rng.standard_normal((6, 4))
    y = (rng.random((6, 3)) > 0.5).astype(np.float64)
    errs = pydl.gradcheck(model, x, y, loss="binary_crossentropy")
    assert len(errs) == 1 + 2 + 2 + 2


def test_regression_and_binary_tasks(rng):
    x = rng.standard_normal((256, 3)).astype(np.float32)
    w = np.array([[1.5], [-2.0], [0.5]], np.float32)
    y = x @ w + 0.25
    pydl.seed(0)
    model = Sequential([Dense(1, input_shape=(3,))])
    model.compile("mse", Adam(0.05), metrics=["mae"])
    model.fit(x, y[:, 0], epochs=60, batch_size=32, verbose=0)  # (N,) targets for a (N, 1) output
    np.testing.assert_allclose(model.layers[0].params["W"], w, atol=0.02)
    assert model.evaluate(x, y, return_dict=True)["mae"] < 0.02
    yb = (x[:, :1] > 0).astype(np.float32)
    clf = Sequential([Dense(8, activation="relu", input_shape=(3,)), Dense(1, activation="sigmoid")])
    clf.compile("binary_crossentropy", Adam(0.01), metrics=["accuracy"])
    clf.fit(x, yb, epochs=30, verbose=0)
    assert clf.evaluate(x, yb, return_dict=True)["accuracy"] > 0.95


def test_train_on_batch_predict_and_lazy_build(rng):
    x = rng.standard_normal((32, 2, 3)).astype(np.float32)
    y = rng.integers(0, 2, 32)
    model = Sequential()
    model.add(Flatten())
    model.add(Dense(2, activation="softmax"))
    assert not model.built
    model.compile("sparse_categorical_crossentropy", SGD(0.5))
    first = model.train_on_batch(x, y)
    assert model.built and model.input_shape == (None, 2, 3) and model.output_shape == (None, 2)
    for _ in range(20):
        last = model.train_on_batch(x, y)
    assert last < first
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss"}
    p = model.predict(x, batch_size=5)
    assert p.shape == (32, 2) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(p, model.predict(x, batch_size=32))
    m2 = Sequential([Dense(3)])
    m2.build((None, 7))
    assert m2.layers[0].params["W"].shape == (7, 3)


def test_predict_is_inference_mode(rng):
    model = Sequential([Dense(16, input_shape=(4,)), Dropout(0.5), BatchNormalization()])
    x = rng.standard_normal((10, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), model.predict(x))


def test_get_set_weights(rng):
    model = Sequential([Dense(4, input_shape=(3,)), BatchNormalization(), Dense(2, use_bias=False)])
    ws = model.get_weights()
    assert [w.shape for w in ws] == [(3, 4), (4,), (4,), (4,), (4,), (4,), (4, 2)]
    new = [rng.standard_normal(w.shape).astype(np.float32) for w in ws]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.layers[1].state["moving_mean"], new[4])
    ws[0][...] = 99  # get_weights returns copies
    assert not np.any(model.get_weights()[0] == 99)
    with pytest.raises(ValueError, match="expected 7 arrays, got 6"):
        model.set_weights(new[:-1])
    bad = list(new)
    bad[3] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"\(4,\).*\(5,\)"):
        model.set_weights(bad)
    np.testing.assert_array_equal(model.get_weights()[0], new[0])  # nothing written on failure


def test_summary(capsys):
    model = Sequential([Dense(32, activation="relu", input_shape=(64,), name="hidden"), BatchNormalization(name="bn"),
                        Dropout(0.2, name="drop"), Dense(10, activation="softmax", name="out")], name="net")
    text = model.summary()
    printed = capsys.readouterr().out
    assert text in printed
    for part in ['Model: "net"', "hidden (Dense)", "(None, 32)", "out (Dense)", "(None, 10)", "2,080", "330",
                 "4,128",  # Dense 64 -> 32 FLOPs: 2*64*32 + 32
                 "Total params: 2,538", "Trainable params: 2,474", "Non-trainable params: 64"]:
        assert part in text, part
    assert "Algorithm" not in text
    model.layers[0].algo_used = "sgemm-avx512"
    assert "sgemm-avx512" in model.summary(print_fn=None)
    with pytest.raises(ValueError, match="not built"):
        Sequential([Dense(3)]).summary()


def test_bad_inputs(rng):
    x = rng.standard_normal((20, 4)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    model = Sequential([Dense(3, activation="softmax", input_shape=(4,))])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="unknown loss"):
        model.compile("not_a_loss")
    with pytest.raises(ValueError, match="optimizer"):
        model.compile("mse", optimizer="not_an_optimizer")
    with pytest.raises(ValueError, match="metric"):
        model.compile("mse", metrics=["not_a_metric"])
    model.compile("sparse_categorical_crossentropy", "adam", ["accuracy"])
    with pytest.raises(ValueError, match=r"x has shape \(20, 5\).*\(N, 4\)"):
        model.fit(rng.standard_normal((20, 5)), y, verbose=0)
    with pytest.raises(ValueError, match="20 samples.*19"):
        model.fit(x, y[:19], verbose=0)
    xn = x.copy()
    xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        model.fit(xn, y, verbose=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model.fit(x, np.full(20, 3), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(x, y, validation_data=(x,), verbose=0)
    with pytest.raises(ValueError, match="predict.*shape"):
        model.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        model.predict(np.zeros((0, 4)))
    with pytest.raises(TypeError, match="numeric"):
        model.predict(np.array([["a"] * 4]))
    reg = Sequential([Dense(2, input_shape=(4,))])
    reg.compile("mse")
    yn = rng.standard_normal((20, 2))
    yn[0, 0] = np.inf
    with pytest.raises(ValueError, match="y contains NaN"):
        reg.fit(x, yn, verbose=0)
    with pytest.raises(ValueError, match=r"y has shape \(20, 3\).*\(N, 2\)"):
        reg.fit(x, np.zeros((20, 3)), verbose=0)
    with pytest.raises(ValueError, match="already"):
        reg.add(reg.layers[0])
    with pytest.raises(ValueError, match="unique"):
        reg.add(Dense(2, name=reg.layers[0].name))
    with pytest.raises(TypeError, match="Layer"):
        reg.add("dense")
    with pytest.raises(ValueError, match="batch dimension"):
        Sequential([Dense(2)]).build((4,))
    with pytest.raises(ValueError, match="no layers"):
        Sequential().predict(x)


def test_verbose_progress_output(rng, capsys):
    x = rng.standard_normal((40, 3)).astype(np.float32)
    model = Sequential([Dense(1, input_shape=(3,))])
    model.compile("mse", "sgd")
    model.fit(x, x[:, :1], epochs=2, batch_size=10, verbose=2, validation_split=0.25)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "val_loss" in out
    model.fit(x, x[:, :1], epochs=1, batch_size=10, verbose=0)
    assert capsys.readouterr().out == ""
