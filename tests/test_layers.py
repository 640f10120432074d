import numpy as np
import pytest

import pydl
from pydl import layers as L
from pydl import registry
from gradcheck import check_grad, numerical_grad
import reference_api as ref

ACTS = ["linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "softmax", "log_softmax"]


def _x(rng, shape, dtype=np.float64):
    # keep values away from the kinks of relu-like functions so central differences are exact
    x = rng.standard_normal(shape)
    x = np.where(np.abs(x) < 0.05, 0.3, x)
    return x.astype(dtype)


def _built(layer, shape):
    layer.build((None,) + tuple(shape[1:]))
    return layer


# -- finite differences (pydl.gradcheck swaps the params for float64 copies) ------------------
@pytest.mark.parametrize("act", ACTS)
def test_dense_gradcheck(act, rng):
    d = _built(L.Dense(4, activation=act), (3, 5))
    W0 = d.params["W"].copy()
    errs = pydl.gradcheck(d, _x(rng, (3, 5)))
    assert set(errs) == {"x", f"{d.name}/W", f"{d.name}/b"}
    assert all(e < 1e-6 for e in errs.values())
    # the float32 originals are back, unchanged
    assert d.params["W"].dtype == np.float32
    np.testing.assert_array_equal(d.params["W"], W0)


def test_dense_no_bias_gradcheck(rng):
    d = _built(L.Dense(3, use_bias=False, activation="tanh"), (4, 6))
    errs = pydl.gradcheck(d, _x(rng, (4, 6)))
    assert set(errs) == {"x", f"{d.name}/W"}


@pytest.mark.parametrize("layer", [L.ReLU(), L.LeakyReLU(), L.LeakyReLU(alpha=0.1), L.ELU(0.7), L.Softmax(),
                                   L.Activation("sigmoid"), L.Activation("tanh"), L.Activation("log_softmax"),
                                   L.Flatten(), L.Reshape((-1, 2)), L.Dropout(0.0)],
                         ids=lambda l: type(l).__name__)
def test_stateless_layers_gradcheck(layer, rng):
    x = _x(rng, (3, 2, 4))
    if isinstance(layer, (L.Flatten, L.Reshape)):
        x = _x(rng, (3, 2, 2, 3))
    pydl.gradcheck(layer, x)


def test_dropout_gradcheck_training(rng):
    # the mask is replayed on every forward pass, so the check sees one fixed function
    for layer in (L.Dropout(0.4), L.Dropout(0.5, seed=3)):
        pydl.gradcheck(layer, _x(rng, (6, 5)), training=True)


@pytest.mark.parametrize("shape", [(7, 3), (4, 3, 2, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradcheck(shape, training, rng):
    bn = _built(L.BatchNormalization(), shape)
    bn.params["gamma"][...] = rng.uniform(0.5, 1.5, shape[1])
    bn.params["beta"][...] = rng.standard_normal(shape[1])
    bn.state["moving_mean"][...] = rng.standard_normal(shape[1])
    bn.state["moving_variance"][...] = rng.uniform(0.5, 2, shape[1])
    pydl.gradcheck(bn, _x(rng, shape) * 2 + 1, training=training)


def test_batchnorm_without_scale_center(rng):
    bn = _built(L.BatchNormalization(center=False, scale=False), (5, 4))
    assert bn.params == {} and set(bn.state) == {"moving_mean", "moving_variance"}
    errs = pydl.gradcheck(bn, _x(rng, (5, 4)))
    assert set(errs) == {"x"}


def test_dense_against_test_helper_gradients(rng):
    """An independent check with tests/gradcheck.py on the layer's own backward."""
    d = _built(L.Dense(3, activation="sigmoid"), (4, 5))
    d.params = {k: v.astype(np.float64) for k, v in d.params.items()}
    x = _x(rng, (4, 5))
    r = rng.standard_normal((4, 3))
    d.forward(x, training=True)
    dx = d.backward(r)
    f = lambda: float(np.sum(d.forward(x) * r))  # noqa: E731
    check_grad(dx, numerical_grad(f, x))
    check_grad(d.grads["W"], numerical_grad(f, d.params["W"]))
    check_grad(d.grads["b"], numerical_grad(f, d.params["b"]))


def test_gradcheck_catches_wrong_backward(rng):
    class Broken(L.Dense):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"] * 1.01
            return dx

    b = _built(Broken(3), (2, 4))
    with pytest.raises(AssertionError, match="W"):
        pydl.gradcheck(b, _x(rng, (2, 4)))


# -- forward values against the float64 formulas ---------------------------------------------
@pytest.mark.parametrize("act", ACTS)
def test_dense_forward_reference(act, rng):
    d = _built(L.Dense(6, activation=act), (9, 7))
    d.params["b"][...] = rng.standard_normal(6)
    x = rng.standard_normal((9, 7)).astype(np.float32)
    alpha = {"leaky_relu": 0.2, "elu": 1.0}.get(act)
    want = ref.dense(x, d.params["W"], d.params["b"], act, alpha)
    np.testing.assert_allclose(d.forward(x), want, rtol=2e-5, atol=2e-6)


def test_activation_layers_reference(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    for layer, kind, alpha in [(L.ReLU(), "relu", None), (L.LeakyReLU(), "leaky_relu", 0.3),
                               (L.LeakyReLU(negative_slope=0.05), "leaky_relu", 0.05),
                               (L.ELU(), "elu", 1.0), (L.Softmax(), "softmax", None),
                               (L.Activation("tanh"), "tanh", None)]:
        np.testing.assert_allclose(layer(x), ref.act(x, kind, alpha), rtol=2e-6, atol=2e-7)


def test_batchnorm_forward_and_running_stats(rng):
    x = (rng.standard_normal((16, 3, 4, 5)) * 3 + 2).astype(np.float32)
    bn = _built(L.BatchNormalization(momentum=0.9, epsilon=1e-3), x.shape)
    bn.params["gamma"][...] = [1.0, 2.0, 0.5]
    bn.params["beta"][...] = [0.0, -1.0, 1.0]
    want, mean, var = ref.batchnorm_train(x, bn.params["gamma"].astype(np.float64),
                                          bn.params["beta"].astype(np.float64), 1e-3)
    np.testing.assert_allclose(bn.forward(x, training=True), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.state["moving_mean"], 0.1 * mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.state["moving_variance"], 0.9 + 0.1 * var, rtol=1e-4, atol=1e-5)
    inf = ref.batchnorm_infer(x, bn.params["gamma"].astype(np.float64), bn.params["beta"].astype(np.float64),
                              bn.state["moving_mean"].astype(np.float64),
                              bn.state["moving_variance"].astype(np.float64), 1e-3)
    np.testing.assert_allclose(bn.forward(x, training=False), inf, rtol=1e-4, atol=1e-4)


def test_dropout_behaviour(rng):
    x = np.ones((200, 50), np.float32)
    d = _built(L.Dropout(0.3), x.shape)
    assert d.forward(x, training=False) is x
    pydl.seed(11)
    y = d.forward(x, training=True)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(d.backward(dy), np.where(kept, dy / 0.7, 0), rtol=1e-6)
    pydl.seed(11)
    np.testing.assert_array_equal(d.forward(x, training=True), y)  # the global seed reproduces it
    a, b = L.Dropout(0.5, seed=7), L.Dropout(0.5, seed=7)
    _built(a, x.shape), _built(b, x.shape)
    ya = a.forward(x, training=True)
    np.testing.assert_array_equal(ya, b.forward(x, training=True))
    assert not np.array_equal(ya, a.forward(x, training=True))  # successive calls differ


# -- PyTorch with copied weights -------------------------------------------------------------
def test_dense_vs_torch(rng):
    torch = pytest.importorskip("torch")
    d = _built(L.Dense(5, activation="relu"), (8, 6))
    lin = torch.nn.Linear(6, 5).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(d.params["W"].T.astype(np.float64)))
        lin.bias.copy_(torch.tensor(rng.standard_normal(5)))
    d.params["b"][...] = lin.bias.detach().numpy()
    x = rng.standard_normal((8, 6)).astype(np.float32)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    ty = torch.relu(lin(tx))
    dy = rng.standard_normal((8, 5)).astype(np.float32)
    ty.backward(torch.tensor(dy.astype(np.float64)))
    np.testing.assert_allclose(d.forward(x, training=True), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    dx = d.backward(dy)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d.grads["W"], lin.weight.grad.numpy().T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d.grads["b"], lin.bias.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_softmax_vs_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 7))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.softmax(tx, dim=-1)
    dy = rng.standard_normal((4, 7))
    ty.backward(torch.tensor(dy))
    s = _built(L.Softmax(), x.shape)
    np.testing.assert_allclose(s.forward(x), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s.backward(dy), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(10, 4), (6, 3, 5, 4)])
def test_batchnorm_vs_torch(shape, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape) * 2 + 0.5
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    tbn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c, eps=1e-3, momentum=0.01).double()
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(gamma))
        tbn.bias.copy_(torch.tensor(beta))
    tbn.train()
    tx = torch.tensor(x, requires_grad=True)
    ty = tbn(tx)
    dy = rng.standard_normal(shape)
    ty.backward(torch.tensor(dy))
    bn = _built(L.BatchNormalization(momentum=0.99, epsilon=1e-3), shape)
    bn.params = {"gamma": gamma.copy(), "beta": beta.copy()}
    bn.state = {k: v.astype(np.float64) for k, v in bn.state.items()}
    np.testing.assert_allclose(bn.forward(x, training=True), ty.detach().numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(bn.backward(dy), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bn.grads["gamma"], tbn.weight.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bn.grads["beta"], tbn.bias.grad.numpy(), rtol=1e-8, atol=1e-10)
    # moving mean: both use moving = 0.99 * moving + 0.01 * batch_mean (torch's momentum is 1 - Keras')
    np.testing.assert_allclose(bn.state["moving_mean"], tbn.running_mean.numpy(), rtol=1e-9, atol=1e-12)
    tbn.eval()
    bn.state["moving_variance"][...] = tbn.running_var.numpy()  # torch keeps the unbiased variance
    np.testing.assert_allclose(bn.forward(x, training=False), tbn(torch.tensor(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-10)


def test_dropout_vs_torch_semantics(rng):
    torch = pytest.importorskip("torch")
    x = rng.uniform(1, 2, (100, 40)).astype(np.float32)
    ty = torch.nn.functional.dropout(torch.tensor(x), p=0.25, training=True).numpy()
    d = _built(L.Dropout(0.25), x.shape)
    y = d.forward(x, training=True)
    for out in (ty, y):  # both: kept values scaled by 1/(1-p), the rest exactly 0
        kept = out != 0
        np.testing.assert_allclose(out[kept], x[kept] / 0.75, rtol=1e-6)
        assert abs(kept.mean() - 0.75) < 0.03


# -- shapes and errors -----------------------------------------------------------------------
def test_output_shapes():
    assert _built(L.Dense(7), (None, 3)).output_shape == (None, 7)
    assert _built(L.Flatten(), (None, 2, 3, 4)).output_shape == (None, 24)
    assert _built(L.Reshape((4, -1)), (None, 2, 3, 4)).output_shape == (None, 4, 6)
    assert _built(L.Reshape((6, 4)), (None, 24)).output_shape == (None, 6, 4)
    assert _built(L.BatchNormalization(), (None, 3, 5, 5)).output_shape == (None, 3, 5, 5)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    r = _built(L.Reshape((4, 3)), x.shape)
    np.testing.assert_array_equal(r.forward(x), x.reshape(2, 4, 3))
    np.testing.assert_array_equal(r.backward(r.forward(x)), x)


def test_input_shape_checked_with_layer_name():
    d = L.Dense(3, name="probe")
    d.build((None, 5))
    with pytest.raises(ValueError, match=r"Dense 'probe'.*\(N, 5\).*\(2, 6\)"):
        d.forward(np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="Flatten"):
        d.forward(np.zeros((2, 5, 1), np.float32))
    on_last_axis = L.Dense(3)  # Dense applies to the last axis of inputs of any rank, as Keras
    on_last_axis.build((None, 1, 8, 8))
    assert on_last_axis.output_shape == (None, 1, 8, 3) and on_last_axis.params["W"].shape == (8, 3)
    bn = _built(L.BatchNormalization(name="bn"), (None, 4, 3, 3))
    with pytest.raises(ValueError, match=r"BatchNormalization 'bn'.*\(N, 4, 3, 3\).*\(2, 3, 3, 3\)"):
        bn.forward(np.zeros((2, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="BatchNormalization"):
        L.BatchNormalization().build((None,))
    with pytest.raises(ValueError, match="BatchNormalization.*axis=2"):  # features on axis 1 or -1 only
        L.BatchNormalization(axis=2).build((None, 2, 3, 4))
    for layer, good in [(L.ReLU(name="r"), (None, 4)), (L.Dropout(0.5, name="dr"), (None, 4)),
                        (L.Flatten(name="fl"), (None, 2, 2)), (L.Softmax(name="sm"), (None, 4))]:
        _built(layer, good)
        with pytest.raises(ValueError, match=f"'{layer.name}'.*expected input of shape"):
            layer.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="cannot reshape"):
        L.Reshape((5, -1)).build((None, 12))
    with pytest.raises(ValueError, match="cannot reshape"):
        L.Reshape((5, 2)).build((None, 12))
    with pytest.raises(ValueError, match="not built"):
        L.Dense(2).forward(np.zeros((1, 2)))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="units"):
        L.Dense(0)
    with pytest.raises(ValueError, match="activation"):
        L.Dense(3, activation="swishy")
    with pytest.raises(ValueError, match="rate"):
        L.Dropout(1.0)
    with pytest.raises(ValueError, match="rate"):
        L.Dropout(-0.1)
    with pytest.raises(ValueError, match="target_shape"):
        L.Reshape((-1, -1))
    with pytest.raises(ValueError, match="momentum"):
        L.BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="axis"):
        L.Softmax(axis=1)
    with pytest.raises(ValueError, match="negative_slope"):
        L.LeakyReLU(-1)


@pytest.mark.parametrize("layer", [
    L.Dense(5, activation="tanh", use_bias=False, kernel_initializer="he_normal", kernel_regularizer="l2",
            input_shape=(3,), name="d"),
    L.Activation("elu"), L.ReLU(), L.LeakyReLU(0.1), L.ELU(0.5), L.Softmax(), L.Dropout(0.3, seed=4),
    L.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False), L.Flatten(), L.Reshape((2, -1))],
    ids=lambda l: type(l).__name__)
def test_config_roundtrip(layer):
    cls = registry.layers.get(type(layer).__name__)
    again = cls.from_config(layer.get_config())
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


def test_leaky_relu_alpha_alias():
    assert L.LeakyReLU(alpha=0.1).negative_slope == 0.1
    assert L.LeakyReLU().negative_slope == 0.3
