"""Keras's weight and model API: get/set_weights per layer and model, weights lists,
save_weights/load_weights, to_json/model_from_json, clone_model, evaluate's return forms,
ModelCheckpoint(save_weights_only), lr=, lower-case regularizers, pydl.utils."""
import numpy as np
import pytest

import pydl
from pydl import Input, Model, Sequential
from pydl.layers import BatchNormalization, Dense
from pydl.optimizers import SGD, Adam


def _model(seed=0):
    pydl.seed(seed)
    model = Sequential([Dense(6, activation="relu", input_shape=(4,)), BatchNormalization(),
                        Dense(3, activation="softmax")])
    model.compile("sparse_categorical_crossentropy", Adam(1e-2), metrics=["accuracy"])
    return model


def _xy(n=32):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_layer_and_model_weights():
    model = _model()
    dense, bn, _ = model.layers
    W, b = dense.get_weights()
    assert W.shape == (4, 6) and b.shape == (6,)
    assert [w.shape for w in bn.get_weights()] == [(6,)] * 4  # gamma, beta, moving mean, moving variance
    dense.set_weights([np.ones((4, 6)), np.zeros(6)])
    assert np.all(dense.params["W"] == 1)
    with pytest.raises(ValueError, match="shape"):
        dense.set_weights([np.ones((4, 5)), np.zeros(6)])
    with pytest.raises(ValueError, match="2 weight arrays"):
        dense.set_weights([np.ones((4, 6))])
    assert len(model.weights) == 2 + 4 + 2 and model.weights[0] is dense.params["W"]
    assert len(model.trainable_weights) == 6 and len(model.non_trainable_weights) == 2
    bn.trainable = False
    assert len(model.trainable_weights) == 4 and len(model.non_trainable_weights) == 4
    assert len(bn.trainable_weights) == 0


def test_save_and_load_weights(tmp_path):
    x, y = _xy()
    a = _model(0)
    a.fit(x, y, epochs=2, verbose=0)
    a.save_weights(tmp_path / "w.npz")
    b = _model(1)
    b.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    # another instance (different automatic layer names) loads in order; a whole model file too
    c = Sequential([Dense(6, activation="relu", input_shape=(4,)), BatchNormalization(), Dense(3, activation="softmax")])
    a.save(tmp_path / "m.npz")
    c.load_weights(tmp_path / "m.npz")
    np.testing.assert_array_equal(a.predict(x), c.predict(x))
    small = Sequential([Dense(2, input_shape=(4,))])
    with pytest.raises(ValueError):
        small.load_weights(tmp_path / "w.npz")
    cb = pydl.callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch}.npz"), save_weights_only=True)
    a.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    b.load_weights(tmp_path / "ck-1.npz")
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_to_json_model_from_json_and_clone():
    x, _ = _xy()
    pydl.seed(0)
    a, bb = Input((4,), name="a"), Input((4,), name="b")
    h = Dense(5, activation="tanh", name="shared")
    out = Dense(2, name="head")(pydl.layers.Add()([h(a), h(bb)]))
    model = Model([a, bb], out)
    again = pydl.models.model_from_json(model.to_json())
    assert [type(l).__name__ for l in again.layers] == [type(l).__name__ for l in model.layers]
    assert not again.compiled
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again.predict([x, x[::-1]]), model.predict([x, x[::-1]]))
    seq = _model()
    clone = pydl.clone_model(seq)
    assert clone is not seq and all(l1 is not l2 for l1, l2 in zip(clone.layers, seq.layers))
    assert [w.shape for w in clone.get_weights()] == [w.shape for w in seq.get_weights()]
    assert not np.array_equal(clone.layers[0].params["W"], seq.layers[0].params["W"])  # fresh weights
    with pytest.raises(ValueError, match="model_from_json"):
        pydl.models.model_from_json('{"format": "other"}')


def test_evaluate_return_forms():
    x, y = _xy()
    model = _model()
    d = model.evaluate(x, y, return_dict=True)
    assert model.evaluate(x, y) == [d["loss"], d["accuracy"]]
    plain = Sequential([Dense(1, input_shape=(4,))])
    plain.compile("mse", "sgd")
    loss = plain.evaluate(x, np.zeros((32, 1), np.float32))
    assert isinstance(loss, float)


def test_lr_alias_and_regularizer_factories():
    with pytest.warns(DeprecationWarning, match="lr"):
        opt = SGD(lr=0.3, momentum=0.9)
    assert opt.learning_rate == 0.3 and opt.momentum == 0.9
    with pytest.warns(DeprecationWarning):
        assert pydl.optimizers.AdamW(lr=0.2).learning_rate == 0.2
    with pytest.raises(TypeError, match="not both"):
        Adam(lr=0.1, learning_rate=0.2)
    r = pydl.regularizers
    assert r.l2(1e-3) == r.L2(1e-3) or r.l2(1e-3).get_config() == {"l2": 1e-3}
    assert r.l1().get_config() == {"l1": 0.01}
    assert r.l1_l2().get_config() == {"l1": 0.01, "l2": 0.01}
    layer = Dense(2, kernel_regularizer=r.l2(0.5), input_shape=(3,))
    assert layer.regularizers


def test_utils_names():
    from pydl.utils import Sequence, to_categorical
    assert Sequence is pydl.data.Sequence
    np.testing.assert_array_equal(to_categorical([0, 2], 3), [[1, 0, 0], [0, 0, 1]])
