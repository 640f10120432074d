import numpy as np
import pytest

import pydl
from pydl import losses, regularizers
from gradcheck import check_grad, numerical_grad
import reference_api as ref


def _data(kind, rng, n=6, c=4, dtype=np.float64, logits=False):
    if kind in ("mse", "mae"):
        return rng.standard_normal((n, c)).astype(dtype), rng.standard_normal((n, c)).astype(dtype)
    if kind == "binary_crossentropy":
        y = (rng.random((n, c)) > 0.5).astype(dtype)
        z = rng.standard_normal((n, c)) * 2
        return y, (z if logits else 1 / (1 + np.exp(-z))).astype(dtype)
    z = rng.standard_normal((n, c)) * 2
    p = z if logits else ref.act(z, "softmax")
    labels = rng.integers(0, c, n)
    if kind == "sparse_categorical_crossentropy":
        return labels, p.astype(dtype)
    return np.eye(c)[labels].astype(dtype), p.astype(dtype)


CASES = [("mse", losses.MeanSquaredError, False), ("mae", losses.MeanAbsoluteError, False),
         ("binary_crossentropy", losses.BinaryCrossentropy, False),
         ("binary_crossentropy", losses.BinaryCrossentropy, True),
         ("categorical_crossentropy", losses.CategoricalCrossentropy, False),
         ("categorical_crossentropy", losses.CategoricalCrossentropy, True),
         ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy, False),
         ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy, True)]


@pytest.mark.parametrize("kind,cls,logits", CASES, ids=[f"{c[0]}-{'logits' if c[2] else 'probs'}" for c in CASES])
def test_loss_value_and_gradient(kind, cls, logits, rng):
    loss = cls(from_logits=True) if logits else cls()
    y, p = _data(kind, rng, logits=logits)
    want = ref.loss(kind, y, p, from_logits=logits)
    value, grad = loss.forward_backward(y, p)
    assert isinstance(value, float)
    assert value == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert loss(y, p) == pytest.approx(want, rel=1e-9)
    assert grad.shape == p.shape and grad.dtype == p.dtype
    p_var = p.copy()
    num = numerical_grad(lambda: ref.loss(kind, y, p_var, from_logits=logits), p_var)
    check_grad(grad, num, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind,cls,logits", CASES[:1] + CASES[2:], ids=lambda v: str(v))
def test_loss_float32(kind, cls, logits, rng):
    loss = cls(from_logits=True) if logits else cls()
    y, p = _data(kind, rng, n=32, c=10, dtype=np.float32, logits=logits)
    value, grad = loss.forward_backward(y, p)
    assert grad.dtype == np.float32
    assert value == pytest.approx(ref.loss(kind, y, p.astype(np.float64), from_logits=logits), rel=1e-5)


def test_sparse_label_shapes_and_range(rng):
    loss = losses.get("sparse_categorical_crossentropy")
    _, p = _data("sparse_categorical_crossentropy", rng, n=5, c=3)
    labels = np.array([0, 2, 1, 1, 0])
    v1 = loss(labels, p)
    assert loss(labels.reshape(5, 1), p) == v1
    assert loss(labels.astype(np.float32), p) == v1
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss(np.array([0, 3, 1, 1, 0]), p)
    with pytest.raises(ValueError, match="labels must lie"):
        loss(np.array([0, -1, 1, 1, 0]), p)
    with pytest.raises(ValueError, match="integer class indices"):
        loss(np.array([0, 0.5, 1, 1, 0]), p)
    with pytest.raises(ValueError, match="shape"):
        loss(np.array([0, 1, 1]), p)


def test_shape_mismatch_and_bad_targets(rng):
    with pytest.raises(ValueError, match="MeanSquaredError.*shape"):
        losses.get("mse")(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        losses.get("bce")(np.full((2, 1), 2.0), np.full((2, 1), 0.5))


def test_stable_large_logits():
    # BCE from a logit of -100 for a positive label is 100 (a clipped probability would give ~16)
    v = losses.BinaryCrossentropy(from_logits=True)(np.ones((1, 1)), np.full((1, 1), -100.0))
    assert v == pytest.approx(100.0, rel=1e-6)
    z = np.array([[200.0, 0.0, -200.0]], np.float32)
    v, g = losses.CategoricalCrossentropy(from_logits=True).forward_backward(np.array([[0.0, 0.0, 1.0]], np.float32), z)
    assert v == pytest.approx(400.0, rel=1e-5) and np.all(np.isfinite(g))


def test_names_and_configs():
    for name, cls in [("mse", losses.MeanSquaredError), ("mean_squared_error", losses.MeanSquaredError),
                      ("mae", losses.MeanAbsoluteError), ("mean_absolute_error", losses.MeanAbsoluteError),
                      ("bce", losses.BinaryCrossentropy), ("binary_crossentropy", losses.BinaryCrossentropy),
                      ("categorical_crossentropy", losses.CategoricalCrossentropy),
                      ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy),
                      ("SparseCategoricalCrossentropy", losses.SparseCategoricalCrossentropy)]:
        assert type(losses.get(name)) is cls
    l = losses.CategoricalCrossentropy(from_logits=True)
    again = losses.get(losses.serialize(l))
    assert type(again) is type(l) and again.from_logits and again.get_config() == l.get_config()
    assert losses.get(l) is l
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("hinge_maybe")
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get({"class_name": "os.system", "config": {}})
    with pytest.raises(ValueError):
        losses.get(42)
    with pytest.raises(ValueError, match="from_logits"):
        losses.BinaryCrossentropy(from_logits="yes")


def test_losses_vs_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z = rng.standard_normal((8, 5))
    labels = rng.integers(0, 5, 8)
    t = torch.tensor(z, requires_grad=True)
    ref_v = F.cross_entropy(t, torch.tensor(labels))
    ref_v.backward()
    v, g = losses.SparseCategoricalCrossentropy(from_logits=True).forward_backward(labels, z)
    assert v == pytest.approx(ref_v.item(), rel=1e-10)
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)

    y = (rng.random((8, 3)) > 0.5).astype(np.float64)
    z = rng.standard_normal((8, 3))
    t = torch.tensor(z, requires_grad=True)
    ref_v = F.binary_cross_entropy_with_logits(t, torch.tensor(y))
    ref_v.backward()
    v, g = losses.BinaryCrossentropy(from_logits=True).forward_backward(y, z)
    assert v == pytest.approx(ref_v.item(), rel=1e-10)
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)

    a, b = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    t = torch.tensor(b, requires_grad=True)
    ref_v = F.mse_loss(t, torch.tensor(a))
    ref_v.backward()
    v, g = losses.MeanSquaredError().forward_backward(a, b)
    assert v == pytest.approx(ref_v.item(), rel=1e-10)
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)


# -- regularizers ----------------------------------------------------------------------------
@pytest.mark.parametrize("reg,l1,l2", [(regularizers.L1(0.03), 0.03, 0.0), (regularizers.L2(0.05), 0.0, 0.05),
                                       (regularizers.L1L2(0.02, 0.07), 0.02, 0.07)])
def test_regularizer_penalty_and_gradient(reg, l1, l2, rng):
    w = rng.standard_normal((6, 5))
    assert reg(w) == pytest.approx(l1 * np.abs(w).sum() + l2 * (w ** 2).sum(), rel=1e-12)
    w_var = w.copy()
    num = numerical_grad(lambda: reg(w_var), w_var)
    check_grad(reg.gradient(w), num, rtol=1e-6, atol=1e-8)
    assert reg.gradient(w.astype(np.float32)).dtype == np.float32
    again = regularizers.get(regularizers.serialize(reg))
    assert type(again) is type(reg) and again.get_config() == reg.get_config()


def test_regularizer_get_and_errors():
    assert isinstance(regularizers.get("l2"), regularizers.L2) and regularizers.get("l2").l2 == 0.01
    assert isinstance(regularizers.get("l1"), regularizers.L1) and regularizers.get("l1").l1 == 0.01
    assert isinstance(regularizers.get("l1_l2"), regularizers.L1L2)
    assert regularizers.get(None) is None
    with pytest.raises(ValueError, match="unknown regularizer"):
        regularizers.get("l3")
    with pytest.raises(ValueError, match="l2"):
        regularizers.L2(-1.0)
    with pytest.raises(ValueError):
        regularizers.get({"class_name": "L2", "config": {"l2": 0.1, "x": 1}})


def test_regularization_enters_layer_loss_and_grads(rng):
    d = pydl.layers.Dense(3, kernel_regularizer=regularizers.L2(0.1), bias_regularizer="l1")
    d.build((None, 4))
    d.params["b"][...] = [0.5, -0.25, 0.0]
    W = d.params["W"].astype(np.float64)
    assert d.regularization_loss() == pytest.approx(0.1 * (W ** 2).sum() + 0.01 * 0.75, rel=1e-6)
    x = rng.standard_normal((5, 4))
    errs = pydl.gradcheck(d, x)  # includes the penalties
    assert set(errs) == {"x", f"{d.name}/W", f"{d.name}/b"}


# ---- a loss on probabilities fed values that are not probabilities -------------------------

def _prob_warnings(record):
    return [w for w in record if issubclass(w.category, RuntimeWarning) and "expects probabilities" in str(w.message)]


@pytest.mark.parametrize("cls,pred,target,act", [
    (pydl.losses.BinaryCrossentropy, np.array([[-2.0], [3.0]], np.float32), np.array([[0.0], [1.0]]), "sigmoid"),
    (pydl.losses.CategoricalCrossentropy, np.array([[-1.0, 2.0], [0.5, 0.1]], np.float32), np.eye(2), "softmax"),
    (pydl.losses.CategoricalCrossentropy, np.array([[0.2, 0.3], [0.5, 0.1]], np.float32), np.eye(2), "softmax"),
    (pydl.losses.SparseCategoricalCrossentropy, np.array([[0.9, 0.9], [0.5, 0.4]], np.float32), np.array([0, 1]),
     "softmax"),
])
def test_not_probabilities_warns_once_per_loss(cls, pred, target, act):
    import warnings as _w
    loss = cls()
    with _w.catch_warnings(record=True) as rec:
        _w.simplefilter("always")
        loss(target, pred)
        loss(target, pred)
    got = _prob_warnings(rec)
    assert len(got) == 1
    assert act in str(got[0].message) and "from_logits=True" in str(got[0].message)
    with _w.catch_warnings(record=True) as rec:
        _w.simplefilter("always")
        cls()(target, pred)  # a new loss object warns again
    assert len(_prob_warnings(rec)) == 1


def test_probabilities_and_logits_do_not_warn():
    import warnings as _w
    with _w.catch_warnings():
        _w.simplefilter("error")
        pydl.losses.BinaryCrossentropy()(np.array([[0.0], [1.0]]), np.array([[0.0], [1.0]], np.float32))
        pydl.losses.CategoricalCrossentropy()(np.eye(2), np.array([[0.3, 0.7], [1.0, 0.0]], np.float32))
        pydl.losses.CategoricalCrossentropy(from_logits=True)(np.eye(2), np.array([[-3.0, 7.0], [2, 0]], np.float32))
        pydl.losses.BinaryCrossentropy(from_logits=True)(np.array([[0.0]]), np.array([[-5.0]], np.float32))
        pydl.losses.MeanSquaredError()(np.array([[0.0]]), np.array([[-5.0]], np.float32))
        pydl.losses.BinaryCrossentropy()(np.array([[0.0], [1.0]]), np.array([[np.nan], [0.5]], np.float32))


def test_model_without_output_activation_warns_once():
    import warnings as _w
    from pydl.layers import Dense
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    pydl.seed(0)
    model = pydl.Sequential([Dense(1, input_shape=(3,), kernel_initializer="ones")])
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    with _w.catch_warnings(record=True) as rec:
        _w.simplefilter("always")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        model.evaluate(x, y)
    assert len(_prob_warnings(rec)) == 1
    good = pydl.Sequential([Dense(1, activation="sigmoid", input_shape=(3,))])
    good.compile(optimizer="sgd", loss="binary_crossentropy")
    with _w.catch_warnings():
        _w.simplefilter("error")
        good.fit(x, y, epochs=1, verbose=0)
