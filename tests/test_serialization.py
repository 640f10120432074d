import json
import zipfile

import numpy as np
import pytest

import pydl
from pydl import Sequential, load_model
from pydl.layers import BatchNormalization, Dense, Dropout, Flatten
from pydl.optimizers import Adam


def _trained_model(rng, seed=0, compile=True):
    pydl.seed(seed)
    model = Sequential([Flatten(input_shape=(2, 3)), Dense(8, activation="relu", kernel_regularizer="l2"),
                        BatchNormalization(), Dropout(0.25), Dropout(0.1, seed=5),
                        Dense(3, activation="softmax")], name="clf")
    x = rng.standard_normal((64, 2, 3)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    if compile:
        model.compile("sparse_categorical_crossentropy", Adam(learning_rate=0.01), metrics=["accuracy"])
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model, x, y


def _arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _rewrite(src, dst, arrays):
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


def test_save_load_identical_predictions_and_settings(rng, tmp_path):
    model, x, y = _trained_model(rng)
    model.scaler = pydl.data.StandardScaler().fit(x.reshape(64, -1))
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = load_model(path)
    assert loaded.name == "clf" and [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert type(loaded.loss) is type(model.loss)
    assert type(loaded.optimizer) is Adam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert [m[0] for m in loaded.metrics] == ["accuracy"]
    assert loaded.evaluate(x, y, return_dict=True) == model.evaluate(x, y, return_dict=True)
    st_a, st_b = loaded.optimizer.get_state(), model.optimizer.get_state()
    assert set(st_a) == set(st_b)
    for k in st_a:
        np.testing.assert_array_equal(st_a[k], st_b[k])
    flat = x.reshape(64, -1)
    np.testing.assert_array_equal(loaded.scaler.transform(flat), model.scaler.transform(flat))
    # the file is a plain npz: every entry loads without pickle, the config is JSON
    arrays = _arrays(path)
    cfg = json.loads(str(arrays["__config__"]))
    assert cfg["format"] == "pydl-model" and cfg["version"] == 2 and cfg["class_name"] == "Sequential"
    assert [e["class_name"] for e in cfg["layers"]] == ["Flatten", "Dense", "BatchNormalization", "Dropout",
                                                       "Dropout", "Dense"]
    assert f"{model.layers[2].name}/moving_mean" in arrays
    assert any(k.startswith("optimizer/") for k in arrays) and any(k.startswith("scaler/") for k in arrays)


def test_resumed_training_is_identical(rng, tmp_path):
    model, x, y = _trained_model(rng)
    path = tmp_path / "ckpt.npz"
    model.save(path)
    loaded = load_model(path)
    pydl.seed(123)
    h1 = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    pydl.seed(123)
    h2 = loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert h1.history == h2.history
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == loaded.optimizer.iterations


def test_save_writes_exact_path_and_unbuilt_models(tmp_path):
    m = Sequential([Dense(3), Dense(2)])
    p = tmp_path / "weights.model"
    m.save(p)
    assert p.exists() and not (tmp_path / "weights.model.npz").exists()
    again = load_model(p)
    assert not again.built and [l.units for l in again.layers] == [3, 2] and not again.compiled


@pytest.fixture
def saved(rng, tmp_path):
    model, x, _ = _trained_model(rng)
    path = tmp_path / "good.npz"
    model.save(path)
    return model, path, _arrays(path)


def _tamper_config(arrays, fn):
    cfg = json.loads(str(arrays["__config__"]))
    fn(cfg)
    arrays = dict(arrays)
    arrays["__config__"] = np.array(json.dumps(cfg))
    return arrays


@pytest.mark.parametrize("what,edit,msg", [
    ("os.system layer", lambda c: c["layers"][1].update(class_name="os.system"), "unknown layer class 'os.system'"),
    ("builtin name", lambda c: c["layers"][0].update(class_name="__import__"), "unknown layer class"),
    ("optimizer class", lambda c: c["compile"]["optimizer"].update(class_name="subprocess.Popen"),
     "unknown optimizer class"),
    ("loss class", lambda c: c["compile"]["loss"].update(class_name="eval"), "unknown loss class"),
    ("bad layer config", lambda c: c["layers"][1]["config"].update(units="many"), "bad config"),
    ("extra config key", lambda c: c["layers"][1]["config"].update(evil=1), "bad config"),
    ("format", lambda c: c.update(format="keras"), "not a 'pydl-model' config"),
    ("version", lambda c: c.update(version=99), "version 99"),
    ("layers type", lambda c: c.update(layers="Dense"), "'layers' must be a list"),
    ("absurd units", lambda c: c["layers"][1]["config"].update(units=10 ** 15), "cannot be rebuilt"),
])
def test_tampered_config(saved, tmp_path, what, edit, msg):
    _, _, arrays = saved
    bad = tmp_path / "bad.npz"
    _rewrite(None, bad, _tamper_config(arrays, edit))
    with pytest.raises(ValueError, match=msg):
        load_model(bad)


def test_tampered_arrays(saved, tmp_path):
    model, _, arrays = saved
    wkey = f"{model.layers[1].name}/W"
    bad = tmp_path / "bad.npz"
    cases = []
    a = dict(arrays)
    del a[wkey]
    cases.append((a, f"missing array '{wkey}'"))
    a = dict(arrays)
    a[wkey] = np.zeros((5, 8), np.float32)
    cases.append((a, r"has shape \(5, 8\), the layer needs \(6, 8\)"))
    a = dict(arrays)
    a[wkey] = np.array([object(), 1], dtype=object).repeat(24)
    cases.append((a, "cannot be read without unpickling"))
    a = dict(arrays)
    a["intruder/x"] = np.zeros(3)
    cases.append((a, "unexpected arrays"))
    a = dict(arrays)
    a[wkey] = np.full((6, 8), "s")
    cases.append((a, "only numeric arrays"))
    a = dict(arrays)
    a["__config__"] = np.array("{not json")
    cases.append((a, "not valid JSON"))
    a = dict(arrays)
    a["__config__"] = np.zeros(3)
    cases.append((a, "must be a JSON string"))
    a = dict(arrays)
    del a["__config__"]
    cases.append((a, "no '__config__'"))
    okey = next(k for k in arrays if k.startswith("optimizer/") and k != "optimizer/iterations")
    a = dict(arrays)
    a[okey] = arrays[okey].reshape(-1)[:1]
    cases.append((a, "bad optimizer state: .*has shape \\(1,\\)"))
    for arrays_bad, msg in cases:
        with open(bad, "wb") as f:
            np.savez(f, **arrays_bad)
        with pytest.raises(ValueError, match=msg):
            load_model(bad)


def test_not_an_npz(tmp_path):
    p = tmp_path / "model.npz"
    p.write_text("hello, I am not a zip file")
    with pytest.raises(ValueError, match="not a pydl model file"):
        load_model(p)
    q = tmp_path / "one.npy"
    np.save(q, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_model(q)
    r = tmp_path / "pickled.npy"
    np.save(r, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a pydl model file"):
        load_model(r)
    z = tmp_path / "trunc.npz"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("__config__.npy", b"\x93NUMPY garbage")
    with pytest.raises(ValueError):
        load_model(z)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


def test_schedule_momentum_and_minmax_scaler_roundtrip(rng, tmp_path):
    from pydl.optimizers import SGD
    from pydl.schedules import ExponentialDecay

    x = rng.standard_normal((48, 5)).astype(np.float32)
    y = rng.standard_normal((48, 2)).astype(np.float32)
    pydl.seed(4)
    model = Sequential([Dense(6, activation="tanh", input_shape=(5,)), Dense(2)])
    model.compile("mae", SGD(learning_rate=ExponentialDecay(0.05, 0.5), momentum=0.9), metrics=["mse"])
    model.scaler = pydl.data.MinMaxScaler(feature_range=(-1, 1)).fit(x)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "sched.npz"
    model.save(path)
    loaded = load_model(path)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.scaler.get_config() == model.scaler.get_config()
    np.testing.assert_array_equal(loaded.scaler.transform(x), model.scaler.transform(x))
    for m in (model, loaded):  # continue at epoch 2 of the schedule
        pydl.seed(8)
        m.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, verbose=0)
    assert model.optimizer.current_learning_rate == loaded.optimizer.current_learning_rate == 0.05 * 0.5 ** 3
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_compiled_untrained_model_roundtrip(tmp_path):
    model = Sequential([Dense(3, input_shape=(4,))])
    model.compile("mse", "adam")
    model.save(tmp_path / "fresh.npz")
    loaded = load_model(tmp_path / "fresh.npz")
    assert loaded.compiled and loaded.optimizer.iterations == 0
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def _saved_arrays(tmp_path):
    import json
    from pydl.layers import LSTM
    m = pydl.Sequential([LSTM(8, input_shape=(5, 4)), Dense(3)])
    m.compile("mse", "adam")
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrs = {k: z[k] for k in z.files}
    return arrs, json.loads(str(arrs["__config__"]))


def test_hostile_sizes_fail_fast(tmp_path):
    import json
    import time
    arrs, cfg = _saved_arrays(tmp_path)
    cfg["layers"][0]["config"]["units"] = 8000           # a 23 KB file asking for ~1 GB of weights
    arrs["__config__"] = np.array(json.dumps(cfg))
    np.savez(tmp_path / "big.npz", **arrs)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="exceed"):
        pydl.load_model(tmp_path / "big.npz")
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("raw", ['{"format": "pydl", "version": ' + "9" * 5000 + "}",
                                 "[" * 100000 + "]" * 100000, '{"format": 1e999999}'])
def test_hostile_json_is_value_error(tmp_path, raw):
    arrs, _ = _saved_arrays(tmp_path)
    arrs["__config__"] = np.array(raw)
    np.savez(tmp_path / "bad.npz", **arrs)
    with pytest.raises(ValueError, match="load_model"):
        pydl.load_model(tmp_path / "bad.npz")


def test_entry_declaring_more_than_it_holds(tmp_path):
    import io
    import json
    import zipfile
    _, cfg = _saved_arrays(tmp_path)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as zf:
        b = io.BytesIO()
        np.lib.format.write_array_header_1_0(b, {"descr": "<f4", "fortran_order": False, "shape": (100000, 10000)})
        zf.writestr("lstm/W.npy", b.getvalue() + b"\0" * 64)
        b = io.BytesIO()
        np.lib.format.write_array(b, np.array(json.dumps(cfg)))
        zf.writestr("__config__.npy", b.getvalue())
    with pytest.raises(ValueError, match="declares shape"):
        pydl.load_model(tmp_path / "bomb.npz")


def test_truncated_and_bitflipped_files(tmp_path):
    _saved_arrays(tmp_path)
    data = (tmp_path / "m.npz").read_bytes()
    rng = np.random.default_rng(0)
    for i in range(40):
        if i % 2:
            bad = data[: int(rng.integers(0, len(data)))]
        else:
            arr = bytearray(data)
            for _ in range(4):
                arr[int(rng.integers(0, len(arr)))] ^= 1 << int(rng.integers(0, 8))
            bad = bytes(arr)
        (tmp_path / "x.npz").write_bytes(bad)
        try:
            pydl.load_model(tmp_path / "x.npz")
        except ValueError:
            pass


def test_load_weights_refuses_hostile_files_before_reading_them(tmp_path):
    import io
    import zipfile
    m = Sequential([Dense(3, input_shape=(4,), name="d")])
    m.save_weights(tmp_path / "ok.npz")
    m.load_weights(tmp_path / "ok.npz")
    np.save(tmp_path / "one.npy", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"load_weights.*not an \.npz"):
        m.load_weights(tmp_path / "one.npy")
    # an entry declaring 400 GB in 144 bytes
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as zf:
        b = io.BytesIO()
        np.lib.format.write_array_header_1_0(b, {"descr": "<f4", "fortran_order": False, "shape": (10**11,)})
        zf.writestr("d/W.npy", b.getvalue() + b"\0" * 16)
    with pytest.raises(ValueError, match=r"load_weights.*declares shape"):
        m.load_weights(tmp_path / "big.npz")
    # 64 MB of zeros deflated to ~64 KB
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        b = io.BytesIO()
        np.lib.format.write_array(b, np.zeros(16 << 20, np.float32))
        zf.writestr("d/W.npy", b.getvalue())
    with pytest.raises(ValueError, match=r"load_weights.*inflate"):
        m.load_weights(tmp_path / "bomb.npz")
    np.savez(tmp_path / "ints.npz", **{"d/W": np.zeros((4, 3), np.int64), "d/b": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"d/W holds int64 values"):
        m.load_weights(tmp_path / "ints.npz")


@pytest.mark.parametrize("name", ["a\x00b", "a/b"])
def test_layer_names_that_a_file_cannot_hold_are_refused(name):
    with pytest.raises(ValueError, match="is not allowed"):
        Sequential([Dense(3, input_shape=(4,), name=name)])
    with pytest.raises(ValueError, match="NUL"):
        pydl.Input((4,), name="x\x00")


def test_yes_no_settings_refuse_strings():
    from pydl.layers import LSTM
    with pytest.raises(TypeError, match=r"\[Dense\] use_bias must be True or False, got 'false'"):
        Dense(3, use_bias="false")
    with pytest.raises(TypeError, match=r"\[LSTM\] return_sequences must be True or False"):
        LSTM(4, return_sequences="no")
    with pytest.raises(TypeError, match=r"amsgrad must be True or False"):
        Adam(amsgrad="false")
    with pytest.raises(TypeError, match=r"trainable must be True or False"):
        Dense(3, trainable="false")
    assert Dense(3, use_bias=0).use_bias is False and Dense(3, use_bias=np.bool_(True)).use_bias is True
    # a hand-edited config: "false" is refused, not read as True
    import json
    cfg = json.loads(Sequential([Dense(3, input_shape=(4,))]).to_json())
    cfg["layers"][0]["config"]["use_bias"] = "false"
    with pytest.raises((TypeError, ValueError), match="use_bias must be True or False"):
        pydl.models.model_from_json(json.dumps(cfg))


def test_save_with_a_scaler_that_is_not_one_is_a_type_error(tmp_path):
    m = Sequential([Dense(1, input_shape=(2,))])
    m.scaler = 5
    with pytest.raises(TypeError, match=r"model.scaler must be a pydl.data scaler"):
        m.save(tmp_path / "m.npz")
