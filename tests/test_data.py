import gzip
import struct

import numpy as np
import pytest

import pydl
from pydl import registry
from pydl.data import (MinMaxScaler, NotFittedError, StandardScaler, batches, to_categorical,
                       train_val_test_split)
from pydl.datasets import load_digits, load_mnist


# ----------------------------------------------------------------------------------------------
# train_val_test_split
# ----------------------------------------------------------------------------------------------
def _rows(x):
    return {tuple(r) for r in np.asarray(x).reshape(len(x), -1).tolist()}


@pytest.mark.parametrize("n,ratios", [(100, (0.7, 0.1, 0.2)), (101, (0.6, 0.2, 0.2)), (7, (0.5, 0.25, 0.25)),
                                      (10, (0.8, 0.0, 0.2)), (33, (1 / 3, 1 / 3, 1 / 3))])
def test_split_sizes_partition(n, ratios):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n)
    (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(x, y, ratios, seed=0)
    sizes = np.array([len(ytr), len(yva), len(yte)])
    assert sizes.sum() == n
    # each size within one of its exact share
    assert np.all(np.abs(sizes - n * np.array(ratios)) < 1.0 + 1e-9)
    # a partition: every index exactly once, and x rows stay paired with their y
    allidx = np.concatenate([ytr, yva, yte])
    assert np.array_equal(np.sort(allidx), np.arange(n))
    for xs, ys in ((xtr, ytr), (xva, yva), (xte, yte)):
        np.testing.assert_array_equal(xs, x[ys])
        assert xs.dtype == x.dtype and xs.shape[1:] == x.shape[1:]
    if ratios[1] == 0:
        assert len(yva) == 0 and xva.shape == (0, 3)


def test_split_deterministic_with_seed_and_global_rng():
    x = np.random.default_rng(0).normal(size=(50, 4))
    y = np.arange(50)
    a = train_val_test_split(x, y, seed=3)
    b = train_val_test_split(x, y, seed=3)
    c = train_val_test_split(x, y, seed=4)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(a[0][1], c[0][1])
    pydl.seed(11)
    d = train_val_test_split(x, y)
    pydl.seed(11)
    e = train_val_test_split(x, y)
    for (_, yd), (_, ye) in zip(d, e):
        np.testing.assert_array_equal(yd, ye)
    # shuffled at all
    assert not np.array_equal(a[0][1], np.sort(a[0][1]))


def test_split_no_shuffle_is_consecutive():
    x = np.arange(20)[:, None]
    y = np.arange(20)
    (_, ytr), (_, yva), (_, yte) = train_val_test_split(x, y, (0.5, 0.25, 0.25), shuffle=False)
    np.testing.assert_array_equal(ytr, np.arange(10))
    np.testing.assert_array_equal(yva, np.arange(10, 15))
    np.testing.assert_array_equal(yte, np.arange(15, 20))


def test_split_does_not_mutate_inputs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2))
    y = rng.integers(0, 3, size=30)
    x0, y0 = x.copy(), y.copy()
    (xtr, _), _, _ = train_val_test_split(x, y, seed=1, stratify=True)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    xtr[:] = 1e9  # results are copies, not views of the input
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("onehot", [False, True])
def test_split_stratified_keeps_proportions(onehot):
    rng = np.random.default_rng(2)
    counts = [300, 120, 60, 20]
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    labels = rng.permutation(labels)
    x = rng.normal(size=(len(labels), 3))
    y = to_categorical(labels, 4) if onehot else labels
    ratios = (0.6, 0.15, 0.25)
    splits = train_val_test_split(x, y, ratios, stratify=True, seed=5)
    total = np.zeros(4, dtype=np.int64)
    n = len(labels)
    for s, (xs, ys) in enumerate(splits):
        ls = np.argmax(ys, axis=1) if onehot else ys
        per_class = np.bincount(ls, minlength=4)
        total += per_class
        expected = np.array(counts) * ratios[s]
        assert np.all(np.abs(per_class - expected) <= 1.0 + 1e-9), (s, per_class, expected)
        assert abs(len(ls) - n * ratios[s]) < 1.0 + 1e-9
    np.testing.assert_array_equal(total, counts)


def test_split_stratified_small_classes_partition():
    y = np.array([0] * 7 + [1] * 3 + [2] * 2)
    x = np.arange(len(y))
    splits = train_val_test_split(x, y, (0.5, 0.25, 0.25), stratify=True, seed=0)
    got = np.sort(np.concatenate([s[0] for s in splits]))
    np.testing.assert_array_equal(got, np.arange(len(y)))
    assert [len(s[0]) for s in splits] == [6, 3, 3]


def test_split_errors():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"\(10, 2\).*\(9,\)"):
        train_val_test_split(x, np.zeros(9))
    with pytest.raises(ValueError, match="sum to 1"):
        train_val_test_split(x, np.zeros(10), (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="positive"):
        train_val_test_split(x, np.zeros(10), (1.1, -0.1, 0.0))
    with pytest.raises(ValueError, match="positive"):
        train_val_test_split(x, np.zeros(10), (0.8, 0.2, 0.0))
    with pytest.raises(ValueError, match="three"):
        train_val_test_split(x, np.zeros(10), (0.5, 0.5))
    with pytest.raises(ValueError, match="too few"):
        train_val_test_split(x[:2], np.zeros(2), (0.7, 0.1, 0.2))
    with pytest.raises(TypeError, match="seed"):
        train_val_test_split(x, np.zeros(10), seed="a")


# ----------------------------------------------------------------------------------------------
# scalers
# ----------------------------------------------------------------------------------------------
def test_standard_scaler_matches_formula_and_round_trips(rng):
    x = rng.normal(3.0, 2.5, size=(40, 3, 2))
    s = StandardScaler()
    assert s.fit(x) is s
    z = s.transform(x)
    mean = x.sum(axis=0) / x.shape[0]
    std = np.sqrt(((x - mean) ** 2).sum(axis=0) / x.shape[0])
    np.testing.assert_allclose(z, (x - mean) / std, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(s.inverse_transform(z), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(StandardScaler().fit_transform(x), z, rtol=1e-12, atol=1e-12)
    assert s.mean_.shape == (3, 2)


def test_scalers_keep_float32(rng):
    x = rng.normal(size=(20, 4)).astype(np.float32)
    for s in (StandardScaler(), MinMaxScaler()):
        out = s.fit_transform(x)
        assert out.dtype == np.float32
        np.testing.assert_allclose(s.inverse_transform(out), x, rtol=1e-5, atol=1e-5)


def test_constant_feature_no_nan():
    x = np.array([[1.0, 5.0, 1e5], [2.0, 5.0, 1e5], [3.0, 5.0, 1e5]])
    x[:, 2] = 0.1 * 3  # a constant that is not exactly representable
    z = StandardScaler().fit_transform(x)
    assert np.all(np.isfinite(z))
    np.testing.assert_array_equal(z[:, 1:], 0.0)
    m = MinMaxScaler(feature_range=(-1, 2)).fit_transform(x)
    assert np.all(np.isfinite(m))
    np.testing.assert_array_equal(m[:, 1:], -1.0)
    np.testing.assert_allclose(m[:, 0], [-1.0, 0.5, 2.0])


def test_minmax_scaler_formula(rng):
    x = rng.uniform(-5, 7, size=(30, 5))
    lo, hi = -2.0, 3.0
    s = MinMaxScaler(feature_range=(lo, hi)).fit(x)
    out = s.transform(x)
    mn, mx = x.min(axis=0), x.max(axis=0)
    np.testing.assert_allclose(out, (x - mn) / (mx - mn) * (hi - lo) + lo, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.min(axis=0), lo, atol=1e-12)
    np.testing.assert_allclose(out.max(axis=0), hi, atol=1e-12)
    np.testing.assert_allclose(s.inverse_transform(out), x, rtol=1e-12, atol=1e-12)
    # outside the fitted range, no clipping by default; clip=True clips
    far = x[:2] + 100
    assert s.transform(far).max() > hi
    assert MinMaxScaler((lo, hi), clip=True).fit(x).transform(far).max() == hi


def test_scaler_state_round_trip_through_registry(rng):
    x = rng.normal(size=(25, 3))
    for s in (StandardScaler(with_mean=False), MinMaxScaler((0, 5))):
        s.fit(x)
        state = s.get_state()
        assert all(isinstance(v, np.ndarray) for v in state.values())
        cls = registry.scalers.get(type(s).__name__)
        t = cls.from_config(s.get_config()).set_state(state)
        np.testing.assert_array_equal(t.transform(x), s.transform(x))
        assert t.get_config() == s.get_config()
    assert set(registry.scalers.names()) >= {"StandardScaler", "MinMaxScaler"}


def test_standard_scaler_options(rng):
    x = rng.normal(2, 3, size=(50, 2))
    np.testing.assert_allclose(StandardScaler(with_mean=False).fit_transform(x), x / x.std(axis=0))
    np.testing.assert_allclose(StandardScaler(with_std=False).fit_transform(x), x - x.mean(axis=0))


def test_scaler_errors():
    s = StandardScaler()
    with pytest.raises(NotFittedError, match="not fitted"):
        s.transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not fitted"):
        MinMaxScaler().inverse_transform(np.zeros((2, 3)))
    s.fit(np.arange(12.0).reshape(4, 3))
    with pytest.raises(ValueError, match=r"feature shape \(4,\).*\(3,\)"):
        s.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        StandardScaler().fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="no samples"):
        StandardScaler().fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="feature_range"):
        MinMaxScaler((1, 1))
    with pytest.raises(TypeError, match="numeric"):
        StandardScaler().fit(np.array([["a"], ["b"]]))
    with pytest.raises(ValueError, match="lacks"):
        StandardScaler().set_state({"mean_": np.zeros(3)})


@pytest.mark.parametrize("cls,key,value,match", [
    (StandardScaler, "scale_", np.zeros(3), "scale_ must be > 0"),
    (StandardScaler, "mean_", np.full(3, np.nan), "mean_ must be finite"),
    (StandardScaler, "var_", -np.ones(3), "var_ must be >= 0"),
    (StandardScaler, "n_samples_seen_", -7, "n_samples_seen_ must be a count"),
    (StandardScaler, "n_samples_seen_", 2.5, "n_samples_seen_ must be a count"),
    (MinMaxScaler, "scale_", -np.ones(3), "scale_ must be > 0"),
    (MinMaxScaler, "min_", np.array([0.0, np.inf, 0.0]), "min_ must be finite"),
])
def test_scaler_state_values_are_checked(cls, key, value, match):
    state = cls().fit(np.arange(12.0).reshape(4, 3)).get_state()
    cls().set_state(state)
    state[key] = value
    with pytest.raises(ValueError, match=rf"\[{cls.__name__}.set_state\] {match}"):
        cls().set_state(state)


# ----------------------------------------------------------------------------------------------
# to_categorical, batches
# ----------------------------------------------------------------------------------------------
def test_to_categorical():
    y = np.array([2, 0, 1, 2])
    out = to_categorical(y)
    expected = np.eye(3, dtype=np.float32)[y]
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32
    assert to_categorical(y, 5).shape == (4, 5)
    assert to_categorical(y[:, None]).shape == (4, 3)
    assert to_categorical(np.array([[1, 0], [0, 1]])).shape == (2, 2, 2)
    np.testing.assert_array_equal(to_categorical(np.array([1.0, 0.0])), [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        to_categorical(y, 2)
    with pytest.raises(ValueError, match="labels"):
        to_categorical(np.array([-1, 0]))
    with pytest.raises(ValueError, match="non-integer"):
        to_categorical(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        to_categorical(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="num_classes"):
        to_categorical(y, 0)


@pytest.mark.parametrize("n,bs", [(10, 3), (9, 3), (1, 5), (0, 4)])
def test_batches_cover_everything(n, bs):
    x = np.arange(n * 2).reshape(n, 2)
    y = np.arange(n)
    got = list(batches(x, y, bs, shuffle=True, rng=0))
    assert len(got) == -(-n // bs)
    sizes = [len(b[1]) for b in got]
    assert all(s == bs for s in sizes[:-1])
    if n:
        assert sizes[-1] == n - bs * (len(got) - 1)
        ys = np.concatenate([b[1] for b in got])
        np.testing.assert_array_equal(np.sort(ys), np.arange(n))
        for xb, yb in got:
            np.testing.assert_array_equal(xb, x[yb])


def test_batches_order_and_seed():
    x = np.arange(7)
    plain = [b for b, _ in batches(x, None, 3, shuffle=False)]
    assert [p.tolist() for p in plain] == [[0, 1, 2], [3, 4, 5], [6]]
    a = np.concatenate([b for b, _ in batches(x, x, 2, rng=np.random.default_rng(4))])
    b = np.concatenate([b for b, _ in batches(x, x, 2, rng=np.random.default_rng(4))])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="batch_size"):
        batches(x, x, 0)
    with pytest.raises(ValueError, match=r"\(7,\).*\(6,\)"):
        batches(x, x[:6], 2)


# ----------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------
def test_load_digits():
    x, y = load_digits()
    assert x.shape == (1797, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    # pixels are integers 0..16 scaled by 1/16
    np.testing.assert_array_equal(x * 16, np.round(x * 16))
    counts = np.bincount(y)
    assert len(counts) == 10 and counts.min() >= 170 and counts.max() <= 190
    # the first image of the UCI set is a 0 with a blank left column
    assert y[0] == 0 and np.all(x[0, :, 0] == 0)
    x2, _ = load_digits()
    x2[0] = 5  # callers get their own copy
    assert load_digits()[0][0].max() <= 1.0


def _idx_bytes(magic, shape, data):
    return struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape) + bytes(data)


def _write_mnist(folder, prefix, images, labels, gz=False, img_magic=0x803, lbl_magic=0x801):
    img = _idx_bytes(img_magic, images.shape, images.astype(np.uint8).tobytes())
    lbl = _idx_bytes(lbl_magic, labels.shape, labels.astype(np.uint8).tobytes())
    for name, blob in ((f"{prefix}-images-idx3-ubyte", img), (f"{prefix}-labels-idx1-ubyte", lbl)):
        if gz:
            with gzip.open(folder / (name + ".gz"), "wb") as fh:
                fh.write(blob)
        else:
            (folder / name).write_bytes(blob)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind,prefix", [("train", "train"), ("test", "t10k")])
def test_load_mnist(tmp_path, gz, kind, prefix):
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=5).astype(np.uint8)
    _write_mnist(tmp_path, prefix, images, labels, gz=gz)
    x, y = load_mnist(tmp_path, kind=kind)
    assert x.shape == (5, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        load_mnist(tmp_path, kind="val")
    images = np.zeros((3, 28, 28), np.uint8)
    labels = np.zeros(3, np.uint8)

    d = tmp_path / "magic"
    d.mkdir()
    _write_mnist(d, "train", images, labels, img_magic=0x801)
    with pytest.raises(ValueError, match="magic number 0x00000801, expected 0x00000803"):
        load_mnist(d)

    d = tmp_path / "magic_lbl"
    d.mkdir()
    _write_mnist(d, "train", images, labels, lbl_magic=0x12345678)
    with pytest.raises(ValueError, match="magic"):
        load_mnist(d)

    d = tmp_path / "count"
    d.mkdir()
    _write_mnist(d, "train", images, np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="3 images but.*2 labels"):
        load_mnist(d)

    d = tmp_path / "trunc"
    d.mkdir()
    _write_mnist(d, "train", images, labels)
    p = d / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(d)
    p.write_bytes(p.read_bytes()[:9])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(d)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(d)

    d = tmp_path / "badgz"
    d.mkdir()
    _write_mnist(d, "train", images, labels, gz=True)
    (d / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_mnist(d)
    # test files missing although train ones exist
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        load_mnist(d, kind="test")


def test_to_categorical_reports_labels_as_given():
    with pytest.raises(ValueError, match=r"got min 18446744073709551615 and max 18446744073709551615"):
        to_categorical(np.array([2**64 - 1], np.uint64), num_classes=3)
    with pytest.raises(ValueError, match=r"got min 1e\+30 and max 1e\+30"):
        to_categorical([1e30], num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 2\^31\) to infer num_classes"):
        to_categorical([1e30])
    with pytest.raises(ValueError, match=r"got min -1 and max 2"):
        to_categorical([-1, 2], num_classes=3)


def test_stratify_with_labels_that_do_not_order_is_a_type_error():
    with pytest.raises(TypeError, match=r"stratify needs labels that can be sorted, got dtype object"):
        train_val_test_split(np.ones((20, 2)), np.array([None, 1] * 10, dtype=object), stratify=True)
