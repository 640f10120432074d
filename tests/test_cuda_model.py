"""Whole models on the GPU: fit on CPU and GPU from the same weights agree, moving a model and
saving / loading across devices keeps the weights, predict answers on the input's device."""
import numpy as np
import pytest

import pydl
from cuda_support import cp, needs_cuda

pytestmark = needs_cuda


def _mlp(batchnorm=False, l2=False, activation="relu"):
    reg = pydl.regularizers.L2(1e-3) if l2 else None
    layers = [pydl.layers.Dense(32, activation=activation, input_shape=(20,), kernel_regularizer=reg)]
    if batchnorm:
        layers.append(pydl.layers.BatchNormalization())
    layers += [pydl.layers.Dense(16, activation="tanh"), pydl.layers.Dense(5, activation="softmax")]
    return pydl.Sequential(layers)


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 20)).astype(np.float32)
    y = rng.integers(0, 5, n)
    return x, y


@pytest.mark.parametrize("opt", ["sgd_momentum", "adam", "rmsprop", "adagrad", "nadam"])
@pytest.mark.parametrize("batchnorm,l2", [(False, False), (True, True)])
def test_fit_on_gpu_matches_cpu(opt, batchnorm, l2):
    x, y = _data()
    make_opt = {"sgd_momentum": lambda: pydl.optimizers.SGD(0.05, momentum=0.9),
                "adam": lambda: pydl.optimizers.Adam(1e-2), "rmsprop": lambda: pydl.optimizers.RMSprop(1e-2),
                "adagrad": lambda: pydl.optimizers.Adagrad(5e-2), "nadam": lambda: pydl.optimizers.Nadam(1e-2)}[opt]
    pydl.seed(1)
    cpu = _mlp(batchnorm, l2)
    cpu.compile(loss="sparse_categorical_crossentropy", optimizer=make_opt(), metrics=["accuracy"])
    cpu.build((None, 20))
    gpu = _mlp(batchnorm, l2)
    gpu.compile(loss="sparse_categorical_crossentropy", optimizer=make_opt(), metrics=["accuracy"])
    gpu.build((None, 20))
    gpu.set_weights(cpu.get_weights())
    gpu.to("cuda")
    assert gpu.device == "cuda" and all(isinstance(w, cp.ndarray) for w in gpu.weights)
    h_cpu = cpu.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    h_gpu = gpu.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(h_gpu.history["accuracy"], h_cpu.history["accuracy"], atol=1e-6)
    ev_c = cpu.evaluate(x, y, return_dict=True)
    ev_g = gpu.evaluate(cp.asarray(x), cp.asarray(y), return_dict=True)
    assert ev_g.keys() == ev_c.keys()
    for k in ev_c:
        assert ev_g[k] == pytest.approx(ev_c[k], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("loss,act,target", [("mse", "linear", "float"), ("binary_crossentropy", "sigmoid", "binary"),
                                              ("categorical_crossentropy", "softmax", "onehot"),
                                              ("mae", "linear", "float")])
def test_other_losses_and_metrics_on_gpu(loss, act, target):
    x, y = _data()
    rng = np.random.default_rng(3)
    yt = {"float": rng.standard_normal((96, 3)).astype(np.float32),
          "binary": (rng.random((96, 3)) > 0.5).astype(np.float32),
          "onehot": np.eye(3, dtype=np.float32)[y % 3]}[target]
    metrics = {"float": ["mae", "mse"], "binary": ["binary_accuracy"], "onehot": ["categorical_accuracy"]}[target]
    models = []
    for _ in range(2):
        pydl.seed(2)
        m = pydl.Sequential([pydl.layers.Dense(8, activation="elu", input_shape=(20,)),
                             pydl.layers.Dense(3, activation=act)])
        m.compile(loss=loss, optimizer=pydl.optimizers.Adam(1e-2), metrics=metrics)
        models.append(m)
    cpu, gpu = models
    gpu.to("cuda")
    hc = cpu.fit(x, yt, batch_size=24, epochs=2, shuffle=False, verbose=0).history
    hg = gpu.fit(x, yt, batch_size=24, epochs=2, shuffle=False, verbose=0).history
    for k in hc:
        np.testing.assert_allclose(hg[k], hc[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_predict_answers_on_the_input_device_and_moves_back():
    x, y = _data(40)
    pydl.seed(3)
    m = _mlp(batchnorm=True)
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    ref = m.predict(x)
    m.to("cuda")
    out_np = m.predict(x)
    out_cp = m.predict(cp.asarray(x))
    assert isinstance(out_np, np.ndarray) and isinstance(out_cp, cp.ndarray)
    np.testing.assert_allclose(out_np, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cp.asnumpy(out_cp), ref, rtol=1e-5, atol=1e-6)
    m.fit(x, y, epochs=1, verbose=0)
    after = m.predict(x)
    m.to("cpu")
    assert all(isinstance(w, np.ndarray) for w in m.weights)
    np.testing.assert_allclose(m.predict(x), after, rtol=1e-5, atol=1e-6)


def test_save_on_gpu_load_on_cpu_and_back(tmp_path):
    x, y = _data(64)
    pydl.seed(4)
    m = _mlp(batchnorm=True)
    m.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(1e-2), metrics=["accuracy"])
    m.to("cuda")
    m.fit(x, y, batch_size=16, epochs=2, verbose=0)
    path = str(tmp_path / "m.npz")
    m.save(path)
    loaded = pydl.load_model(path)
    assert loaded.device == "cpu"
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    loaded.to("cuda")
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # training continues identically from the saved optimizer state on either device
    m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_dropout_model_trains_on_gpu_and_is_reproducible():
    x, y = _data(64)
    outs = []
    for _ in range(2):
        pydl.seed(5)
        m = pydl.Sequential([pydl.layers.Dense(32, activation="relu", input_shape=(20,)),
                             pydl.layers.Dropout(0.3, seed=7), pydl.layers.Dense(5, activation="softmax")])
        m.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        m.to("cuda")
        h = m.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
        outs.append((h.history["loss"], m.get_weights()))
    assert outs[0][0] == outs[1][0]
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_array_equal(a, b)
    assert outs[0][0][-1] < outs[0][0][0]


def test_mixed_device_call_is_a_clear_error():
    a = cp.ones((3, 4), cp.float32)
    b = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="different devices"):
        pydl.ops.matmul(a, b)
    layer = pydl.layers.Dense(2, input_shape=(4,))
    layer.build((None, 4))
    with pytest.raises(ValueError, match="different devices"):
        layer(cp.ones((3, 4), cp.float32))
