"""pydl.ops.nn: activations, Dense, losses, dropout, batch norm.

Each kernel (float32 and float64) against the float64 NumPy references in reference_nn.py, every
backward by finite differences in float64, PyTorch where importable, stability and NaN cases,
thread-count independence, and bad input for every public op.
"""
from __future__ import annotations

import numpy as np
import pytest

import pydl
from pydl import _core, ops

import reference_nn as ref
from gradcheck import check_grad, numerical_grad

ELEMENTWISE = ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu")
ROWWISE = ("softmax", "log_softmax")
ALL_ACTS = ELEMENTWISE + ROWWISE
SHAPES = [(1, 1), (1, 7), (13, 1), (3, 5), (17, 31), (2, 3, 5), (0, 5), (64, 127)]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def away_from_kinks(x):
    """Move values near 0 away from the relu/elu kink so finite differences are clean."""
    x = np.array(x, dtype=np.float64)
    small = np.abs(x) < 0.05
    x[small] = np.where(x[small] >= 0, 0.3, -0.3)
    return x


def close(got, want, dtype, scale=1.0, **kw):
    tol = dict(TOL[dtype])
    tol["rtol"] *= scale
    tol["atol"] *= scale
    tol.update(kw)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.astype(np.float64), want, **tol)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture(params=_core.available_isas())
def isa(request):
    old = _core.selected_isa()
    _core.select_isa(request.param)
    yield request.param
    _core.select_isa(old)


# ============================================================ activations

@pytest.mark.parametrize("kind", ALL_ACTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_activation_forward_backward_vs_reference(kind, shape, dtype, rng):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = ops.activation(x, kind)
    close(y, ref.act(x, kind), dtype)
    dx = ops.activation_backward(dy, x, y, kind)
    # dx is computed from the kernel's y; compare with the formula evaluated at x
    close(dx, ref.act_grad(dy, x, kind), dtype, scale=2)


@pytest.mark.parametrize("kind", ALL_ACTS)
def test_activation_all_isas_and_threads(kind, isa, threads, rng):
    # large enough to split over threads; every compiled ISA path against the reference
    x = (rng.standard_normal((257, 1031)) * 4).astype(np.float32)
    x[0, :5] = [0.0, -0.0, 1e-30, -88.0, 88.0]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y = np.full_like(x, np.nan)
    _core.activation_forward(kind, x, y, 0.2 if kind in ("leaky_relu", "elu") else 0.0)
    alpha = 0.2 if kind in ("leaky_relu", "elu") else None
    close(y, ref.act(x, kind, alpha), np.float32)
    dx = np.full_like(x, np.nan)
    _core.activation_backward(kind, dy, y, dx, 0.2 if alpha else 0.0)
    close(dx, ref.act_grad(dy, x, kind, alpha), np.float32, scale=2)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "elu"])
def test_transcendental_accuracy_float32(kind, isa):
    # the polynomial exp/tanh paths stay within a few ulp of float64 over the whole range
    x = np.concatenate([np.linspace(-120, 120, 40001), np.linspace(-1, 1, 20001),
                        np.float64([1e-30, -1e-30, 1e-5, -1e-5, 0.55, -0.55, 0.35, -0.35])]).astype(np.float32)
    y = ops.activation(x, kind)
    want = ref.act(x, kind)
    rel = np.abs(y - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    assert rel.max() < 4 * np.finfo(np.float32).eps, f"max relative error {rel.max():.3g} at x={x[np.argmax(rel)]}"


@pytest.mark.parametrize("kind", ALL_ACTS)
def test_activation_naive_twin(kind, dtype, rng):
    x = (rng.standard_normal((9, 23)) * 3).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, y_naive = np.full_like(x, np.nan), np.full_like(x, np.nan)
    _core.activation_forward(kind, x, y, 0.1)
    _core.activation_forward_naive(kind, x, y_naive, 0.1)
    close(y, y_naive.astype(np.float64), dtype)
    dx, dx_naive = np.full_like(x, np.nan), np.full_like(x, np.nan)
    _core.activation_backward(kind, dy, y, dx, 0.1)
    _core.activation_backward_naive(kind, dy, y, dx_naive, 0.1)
    close(dx, dx_naive.astype(np.float64), dtype)


@pytest.mark.parametrize("kind", ALL_ACTS)
def test_activation_gradcheck(kind, rng):
    x = away_from_kinks(rng.standard_normal((3, 5)) * 2)
    dy = rng.standard_normal(x.shape)
    alpha = 0.2 if kind in ("leaky_relu", "elu") else None
    y = ops.activation(x, kind, alpha)
    dx = ops.activation_backward(dy, x, y, kind, alpha)
    num = numerical_grad(lambda: float(np.sum(ref.act(x, kind, alpha) * dy)), x)
    check_grad(dx, num, rtol=1e-6, atol=1e-8)


def test_activation_alpha_defaults_are_keras(rng):
    x = np.float64([-2.0, -0.5, 0.0, 1.5])
    np.testing.assert_allclose(ops.activation(x, "leaky_relu"), [-0.6, -0.15, 0.0, 1.5])
    np.testing.assert_allclose(ops.activation(x, "elu"), [np.expm1(-2.0), np.expm1(-0.5), 0.0, 1.5])
    np.testing.assert_allclose(ops.activation(x, "elu", alpha=2.0), [2 * np.expm1(-2.0), 2 * np.expm1(-0.5), 0, 1.5])


def test_activation_stability(dtype):
    big = np.array([-1e4, -1e3, -100.0, 100.0, 1e3, 1e4], dtype=dtype)
    s = ops.activation(big, "sigmoid")
    np.testing.assert_array_equal(s, np.array([0, 0, ref.sigmoid(-100.0), 1, 1, 1], dtype=dtype))
    assert np.all(np.isfinite(ops.activation(big, "tanh")))
    np.testing.assert_array_equal(ops.activation(big, "tanh"), np.sign(big).astype(dtype))
    np.testing.assert_array_equal(ops.activation(big, "elu"), np.where(big > 0, big, -1).astype(dtype))
    logits = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype=dtype)
    sm = ops.activation(logits, "softmax")
    np.testing.assert_allclose(sm, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
    ls = ops.activation(logits, "log_softmax")
    np.testing.assert_allclose(ls, [[0, -1e4, -2e4], [-np.log(3)] * 3], rtol=1e-6)
    # float32 softmax without max-subtraction would be NaN from a logit of 89
    row = np.array([[89.0, 88.0, 0.0]], dtype=dtype)
    np.testing.assert_allclose(ops.activation(row, "softmax"), ref.act(row, "softmax"), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("kind", ALL_ACTS)
def test_activation_nan_propagates(kind, dtype):
    x = np.array([[np.nan, 1.0, -1.0, 0.0]], dtype=dtype)
    y = ops.activation(x, kind)
    assert np.isnan(y[0, 0]), f"{kind}(NaN) is {y[0, 0]}"
    if kind in ROWWISE:
        assert np.all(np.isnan(y)), "a NaN logit poisons its whole row"
    else:
        np.testing.assert_allclose(y[0, 1:], ref.act(x[0, 1:], kind), rtol=1e-6)
    dx = ops.activation_backward(np.ones_like(x), x, y, kind)
    if kind != "linear":  # linear's derivative is 1 everywhere: dx = dy
        assert np.isnan(dx[0, 0])


def test_activation_inf(dtype):
    x = np.array([np.inf, -np.inf], dtype=dtype)
    np.testing.assert_array_equal(ops.activation(x, "relu"), [np.inf, 0])
    np.testing.assert_array_equal(ops.activation(x, "sigmoid"), [1, 0])
    np.testing.assert_array_equal(ops.activation(x, "tanh"), [1, -1])
    np.testing.assert_array_equal(ops.activation(x, "elu"), [np.inf, -1])


def test_activation_casts_and_views(rng):
    xi = rng.integers(-5, 5, size=(4, 6))
    y = ops.activation(xi, "relu")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.maximum(xi, 0))
    x = rng.standard_normal((8, 10))
    for view in (x[::2, ::3], x[::-1], x.T):
        np.testing.assert_allclose(ops.activation(view, "softmax"), ref.act(view, "softmax"), rtol=1e-12)
    assert ops.activation(np.float32(2.0), "sigmoid").shape == ()


# ============================================================ Dense

DENSE_SHAPES = [(1, 1, 1), (64, 784, 128), (7, 13, 5), (0, 4, 3), (5, 0, 3), (31, 17, 1)]


@pytest.mark.parametrize("kind", ELEMENTWISE)
@pytest.mark.parametrize("nck", DENSE_SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_dense_vs_reference(kind, nck, bias, dtype, rng):
    n, c, k = nck
    x = rng.standard_normal((n, c)).astype(dtype)
    W = (rng.standard_normal((c, k)) / np.sqrt(max(c, 1))).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    y = ops.dense_forward(x, W, b, kind)
    close(y, ref.dense(x, W, b, kind), dtype, scale=4)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dW, db = ops.dense_backward(dy, x, W, y, kind, has_bias=bias)
    rdx, rdW, rdb = ref.dense_backward(dy, x, W, b, kind)
    scale = 20 if dtype == np.float32 else 4
    close(dx, rdx, dtype, scale=scale)
    close(dW, rdW, dtype, scale=scale)
    if bias:
        close(db, rdb, dtype, scale=scale)
    else:
        assert db is None
    dx2, dW2, db2 = ops.dense_backward(dy, x, W, y, kind, need_dx=False, has_bias=bias)
    assert dx2 is None
    np.testing.assert_array_equal(dW2, dW)


@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_dense_naive_twin(kind, dtype, rng, threads):
    x = rng.standard_normal((37, 29)).astype(dtype)
    W = rng.standard_normal((29, 11)).astype(dtype)
    b = rng.standard_normal(11).astype(dtype)
    y, yn = np.full((37, 11), np.nan, dtype), np.full((37, 11), np.nan, dtype)
    _core.dense_forward(x, W, b, y, kind, 0.1)
    _core.dense_forward_naive(x, W, b, yn, kind, 0.1)
    close(y, yn.astype(np.float64), dtype, scale=4)
    dy = rng.standard_normal(y.shape).astype(dtype)
    outs = [[np.full(s, np.nan, dtype) for s in ((37, 29), (29, 11), (11,))] for _ in range(2)]
    _core.dense_backward(dy, x, W, y, *outs[0], kind, 0.1)
    _core.dense_backward_naive(dy, x, W, y, *outs[1], kind, 0.1)
    for got, want in zip(*outs):
        close(got, want.astype(np.float64), dtype, scale=20)


@pytest.mark.parametrize("shape", [(128, 784, 256), (100, 601, 70), (256, 512, 64)], ids=str)
def test_dense_forward_split_over_inputs(shape, dtype, rng):
    """Few rows and many inputs take the two-halves path (csrc/dense.cpp): NaN-poisoned output fully
    written, close to float64, and bitwise the same on 1 and 2 threads."""
    n, c, k = shape
    x = rng.standard_normal((n, c)).astype(dtype)
    W = (rng.standard_normal((c, k)) / np.sqrt(c)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    outs = []
    old = pydl.get_num_threads()
    try:
        for nt in (1, 2):
            pydl.set_num_threads(nt)
            y = np.full((n, k), np.nan, dtype)
            _core.dense_forward(x, W, b, y, "relu", 0.0)
            outs.append(y)
    finally:
        pydl.set_num_threads(old)
    np.testing.assert_array_equal(outs[0], outs[1])
    close(outs[0], ref.dense(x, W, b, "relu"), dtype, scale=4)


@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_dense_gradcheck(kind, rng):
    x = rng.standard_normal((4, 3))
    W = rng.standard_normal((3, 5))
    b = rng.standard_normal(5)
    # keep pre-activations away from the relu/elu kink
    z = x @ W + b
    b += np.where(np.abs(z) < 0.05, 0.2, 0.0).max(axis=0)
    dy = rng.standard_normal((4, 5))
    alpha = 0.2 if kind in ("leaky_relu", "elu") else None
    y = ops.dense_forward(x, W, b, kind, alpha)
    dx, dW, db = ops.dense_backward(dy, x, W, y, kind, alpha)

    def f():
        return float(np.sum(ref.dense(x, W, b, kind, alpha) * dy))

    check_grad(dx, numerical_grad(f, x), rtol=1e-6, atol=1e-8)
    check_grad(dW, numerical_grad(f, W), rtol=1e-6, atol=1e-8)
    check_grad(db, numerical_grad(f, b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "tanh", "elu", "leaky_relu"])
def test_dense_vs_torch(kind, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((16, 20)).astype(np.float32)
    W = rng.standard_normal((20, 8)).astype(np.float32) * 0.3
    b = rng.standard_normal(8).astype(np.float32)
    dy = rng.standard_normal((16, 8)).astype(np.float32)
    tx, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    z = F.linear(tx, tW.T, tb)
    ty = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
          "elu": lambda v: F.elu(v, 1.0), "leaky_relu": lambda v: F.leaky_relu(v, 0.3)}[kind](z)
    ty.backward(torch.tensor(dy))
    y = ops.dense_forward(x, W, b, kind)
    dx, dW, db = ops.dense_backward(dy, x, W, y, kind)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dW, tW.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_dense_nan_propagates():
    x = np.ones((2, 3), np.float32)
    x[0, 1] = np.nan
    y = ops.dense_forward(x, np.ones((3, 4), np.float32), np.zeros(4, np.float32), "relu")
    assert np.all(np.isnan(y[0])) and np.all(y[1] == 3)


# ============================================================ activations vs torch

def test_activations_vs_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = (rng.standard_normal((11, 19)) * 5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    cases = {"softmax": lambda v: F.softmax(v, dim=-1), "log_softmax": lambda v: F.log_softmax(v, dim=-1),
             "elu": lambda v: F.elu(v, alpha=0.7), "leaky_relu": lambda v: F.leaky_relu(v, 0.05),
             "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu}
    for kind, fn in cases.items():
        alpha = {"elu": 0.7, "leaky_relu": 0.05}.get(kind)
        tx = torch.tensor(x, requires_grad=True)
        ty = fn(tx)
        ty.backward(torch.tensor(dy))
        y = ops.activation(x, kind, alpha)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=kind)
        dx = ops.activation_backward(dy, x, y, kind, alpha)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=kind)


# ============================================================ losses

LOSS_CASES = [("mse", False), ("mae", False), ("binary_crossentropy", False), ("binary_crossentropy", True),
              ("categorical_crossentropy", False), ("categorical_crossentropy", True),
              ("sparse_categorical_crossentropy", False), ("sparse_categorical_crossentropy", True)]


def make_loss_inputs(kind, from_logits, shape, rng, dtype=np.float64):
    if kind == "sparse_categorical_crossentropy":
        y_true = rng.integers(0, shape[-1], size=shape[:-1])
    elif kind == "categorical_crossentropy":
        y_true = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    elif kind == "binary_crossentropy":
        y_true = rng.random(shape)
    else:
        y_true = rng.standard_normal(shape)
    if from_logits:
        y_pred = rng.standard_normal(shape) * 2
    elif kind in ("binary_crossentropy",):
        y_pred = rng.uniform(0.02, 0.98, shape)
    elif "categorical" in kind:
        y_pred = rng.uniform(0.05, 1.0, shape)  # unnormalised: the loss normalises rows
    else:
        y_pred = rng.standard_normal(shape)
    return y_true, y_pred.astype(dtype)


@pytest.mark.parametrize("kind,from_logits", LOSS_CASES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 3), (64, 10), (4, 3, 5), (300, 257)], ids=str)
def test_loss_vs_reference(kind, from_logits, shape, dtype, rng, threads):
    y_true, y_pred = make_loss_inputs(kind, from_logits, shape, rng, dtype)
    value, grad = ops.loss(kind, y_true, y_pred, from_logits=from_logits)
    assert isinstance(value, float) and grad.dtype == dtype and grad.shape == y_pred.shape
    want = ref.loss(kind, y_true, y_pred, from_logits, dtype)
    np.testing.assert_allclose(value, want, rtol=1e-6 if dtype == np.float32 else 1e-12)
    # gradient: the float64 kernel is checked by finite differences (test_loss_gradcheck);
    # the float32 one against it
    if dtype == np.float32:
        _, grad64 = ops.loss(kind, y_true, y_pred.astype(np.float64), from_logits=from_logits)
        close(grad, grad64, dtype, atol=1e-6 * np.abs(grad64).max())


@pytest.mark.parametrize("kind,from_logits", LOSS_CASES)
@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 3)], ids=str)
def test_loss_gradcheck(kind, from_logits, shape, rng):
    y_true, y_pred = make_loss_inputs(kind, from_logits, shape, rng)
    if kind == "mae":
        y_pred = y_true + np.where(rng.random(shape) < 0.5, -1, 1) * rng.uniform(0.1, 1, shape)
    _, grad = ops.loss(kind, y_true, y_pred, from_logits=from_logits)
    num = numerical_grad(lambda: ref.loss(kind, y_true, y_pred, from_logits), y_pred)
    check_grad(grad, num, rtol=1e-6, atol=1e-9)


def test_loss_clipping_matches_keras():
    # from probabilities the prediction is clipped to [1e-7, 1 - 1e-7]; clipped entries get no gradient
    v, g = ops.loss("binary_crossentropy", [1.0, 0.0], np.float64([0.0, 0.0]))
    np.testing.assert_allclose(v, (-np.log(1e-7) - np.log1p(-1e-7)) / 2, rtol=1e-12)
    assert g[0] == 0.0 and np.isfinite(g[1])
    v, g = ops.loss("categorical_crossentropy", [[0.0, 1.0]], np.float64([[1.0, 0.0]]))
    np.testing.assert_allclose(v, -np.log(1e-7), rtol=1e-12)
    assert np.all(np.isfinite(g))
    # float32 clips at float32(1) - float32(1e-7)
    v32, _ = ops.loss("binary_crossentropy", [0.0], np.float32([1.0]))
    hi32 = float(np.float32(1) - np.float32(1e-7))  # 0.99999988, so the loss is capped at 15.94
    np.testing.assert_allclose(v32, -np.log(1.0 - hi32), rtol=1e-6)


def test_loss_logits_stability(dtype):
    z = np.array([[1e4, 0.0, -1e4]], dtype=dtype)
    for kind, y_true in (("categorical_crossentropy", [[0.0, 0.0, 1.0]]), ("sparse_categorical_crossentropy", [2])):
        v, g = ops.loss(kind, y_true, z, from_logits=True)
        assert np.isfinite(v) and np.all(np.isfinite(g))
        np.testing.assert_allclose(v, 2e4, rtol=1e-6)
        np.testing.assert_allclose(g, [[1, 0, -1]], atol=1e-6)
    zb = np.array([1e4, -1e4, 1e4, -1e4], dtype=dtype)
    v, g = ops.loss("binary_crossentropy", [0.0, 1.0, 1.0, 0.0], zb, from_logits=True)
    np.testing.assert_allclose(v, 1e4 / 2, rtol=1e-6)
    np.testing.assert_allclose(g, [0.25, -0.25, 0, 0], atol=1e-7)
    # the true loss of 100 is kept from logits (from probabilities it would be capped at 15.9)
    v, _ = ops.loss("binary_crossentropy", [1.0], np.array([-100.0], dtype), from_logits=True)
    np.testing.assert_allclose(v, 100.0, rtol=1e-6)


def test_loss_nan_prediction_gives_nan():
    for kind, lg in LOSS_CASES:
        y_true, y_pred = make_loss_inputs(kind, lg, (3, 4), np.random.default_rng(0))
        y_pred[1, 2] = np.nan
        v, g = ops.loss(kind, y_true, y_pred, from_logits=lg)
        assert np.isnan(v), kind
        assert np.isnan(g[1, 2]), kind


def test_loss_accumulates_in_double():
    # 2**24 + 1 elements of 0.1 squared error: a float32 running sum would drift far off
    y = np.zeros(2**22 + 1, np.float32)
    v, _ = ops.loss("mae", y, y + np.float32(0.1))
    np.testing.assert_allclose(v, float(np.float32(0.1)), rtol=1e-7)


def test_losses_vs_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    n, k = 9, 6
    t_cont = rng.random((n, k)).astype(np.float32)
    p_prob = rng.uniform(0.01, 0.99, (n, k)).astype(np.float32)
    logits = (rng.standard_normal((n, k)) * 3).astype(np.float32)
    labels = rng.integers(0, k, n)
    soft = rng.dirichlet(np.ones(k), n).astype(np.float32)
    probs_rows = (p_prob / p_prob.sum(1, keepdims=True)).astype(np.float32)

    def torch_case(fn, pred):
        tp = torch.tensor(pred, requires_grad=True)
        out = fn(tp)
        out.backward()
        return out.item(), tp.grad.numpy()

    cases = [
        (("mse", t_cont, logits, False), lambda p: F.mse_loss(p, torch.tensor(t_cont))),
        (("mae", t_cont, logits, False), lambda p: F.l1_loss(p, torch.tensor(t_cont))),
        (("binary_crossentropy", t_cont, p_prob, False), lambda p: F.binary_cross_entropy(p, torch.tensor(t_cont))),
        (("binary_crossentropy", t_cont, logits, True),
         lambda p: F.binary_cross_entropy_with_logits(p, torch.tensor(t_cont))),
        (("categorical_crossentropy", soft, logits, True), lambda p: F.cross_entropy(p, torch.tensor(soft))),
        (("sparse_categorical_crossentropy", labels, logits, True),
         lambda p: F.cross_entropy(p, torch.tensor(labels))),
        (("sparse_categorical_crossentropy", labels, probs_rows, False),
         lambda p: F.nll_loss(torch.log(p / p.sum(1, keepdim=True)), torch.tensor(labels))),
        (("categorical_crossentropy", soft, probs_rows, False),
         lambda p: -(torch.tensor(soft) * torch.log(p / p.sum(1, keepdim=True))).sum(1).mean()),
    ]
    for (kind, yt, yp, lg), fn in cases:
        v, g = ops.loss(kind, yt, yp, from_logits=lg)
        tv, tg = torch_case(fn, yp)
        np.testing.assert_allclose(v, tv, rtol=2e-5, err_msg=kind)
        np.testing.assert_allclose(g, tg, rtol=1e-4, atol=1e-6, err_msg=kind)


def test_sparse_labels_forms(rng):
    p = rng.uniform(0.1, 1, (5, 4))
    labels = np.array([0, 3, 1, 2, 3])
    v1, g1 = ops.loss("sparse_categorical_crossentropy", labels, p)
    v2, g2 = ops.loss("sparse_categorical_crossentropy", labels.reshape(5, 1).astype(np.float32), p)
    v3, g3 = ops.loss("categorical_crossentropy", np.eye(4)[labels], p)
    assert v1 == v2
    np.testing.assert_allclose(v1, v3, rtol=1e-12)
    np.testing.assert_allclose(g1, g3, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(g1, g2)


# ============================================================ dropout

def test_dropout_generator_matches_reference():
    for seed in (0, 1, 12345, 2**63 + 17, 2**64 - 1):
        np.testing.assert_array_equal(_core.dropout_bits(1000, seed), ref.splitmix_bits(1000, seed))


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
def test_dropout_forward_backward(rate, dtype, rng):
    x = rng.standard_normal((301, 517)).astype(dtype)
    y, mask = ops.dropout_forward(x, rate, seed=99)
    assert mask.dtype == np.uint8 and mask.shape == x.shape and y.dtype == dtype
    np.testing.assert_array_equal(mask, ref.dropout_mask(x.shape, rate, 99))
    scale = dtype(1.0 / (1.0 - rate))
    np.testing.assert_array_equal(y, x * (mask.astype(dtype) * scale))
    n = mask.size
    assert abs((1 - mask.mean()) - rate) < 5 * np.sqrt(rate * (1 - rate) / n) + 1e-12
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = ops.dropout_backward(dy, mask, rate)
    np.testing.assert_array_equal(dx, dy * (mask.astype(dtype) * scale))
    if rate == 0.0:
        np.testing.assert_array_equal(y, x)


def test_dropout_expectation_preserved():
    x = np.ones(1_000_000, np.float32)
    means = [ops.dropout_forward(x, 0.3, seed=s)[0].mean(dtype=np.float64) for s in range(3)]
    np.testing.assert_allclose(means, 1.0, atol=5 * np.sqrt(0.3 / 0.7 / x.size))


def test_dropout_same_mask_any_thread_count(rng):
    x = rng.standard_normal((1000, 257)).astype(np.float32)
    old = pydl.get_num_threads()
    try:
        pydl.set_num_threads(1)
        y1, m1 = ops.dropout_forward(x, 0.4, seed=7)
        pydl.set_num_threads(2)
        y2, m2 = ops.dropout_forward(x, 0.4, seed=7)
    finally:
        pydl.set_num_threads(old)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(y1, y2)
    _, m3 = ops.dropout_forward(x, 0.4, seed=8)
    assert np.mean(m1 != m3) > 0.3


def test_dropout_gradcheck(rng):
    x = rng.standard_normal((4, 5))
    dy = rng.standard_normal(x.shape)
    _, mask = ops.dropout_forward(x, 0.5, seed=3)
    dx = ops.dropout_backward(dy, mask, 0.5)
    num = numerical_grad(lambda: float(np.sum(ops.dropout_forward(x, 0.5, seed=3)[0] * dy)), x)
    check_grad(dx, num)


def test_dropout_bool_mask_and_empty():
    dy = np.ones((2, 3))
    m = np.array([[True, False, True], [False, False, True]])
    np.testing.assert_array_equal(ops.dropout_backward(dy, m, 0.5), m * 2.0)
    y, mask = ops.dropout_forward(np.zeros((0, 4), np.float32), 0.5, 1)
    assert y.shape == (0, 4) and mask.shape == (0, 4)


# ============================================================ batch norm

BN_SHAPES = [(1, 1), (8, 3), (64, 128), (1, 2, 3, 3), (4, 5, 7, 3), (2, 3, 1, 1), (16, 8, 16, 16)]


def bn_params(c, dtype, rng):
    gamma = rng.uniform(0.5, 2, c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = rng.uniform(0.5, 2, c).astype(dtype)
    return gamma, beta, rm, rv


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_train_vs_reference(shape, dtype, rng, threads):
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    c = shape[1]
    gamma, beta, rm, rv = bn_params(c, dtype, rng)
    rm0, rv0 = rm.copy(), rv.copy()
    y, cache = ops.batchnorm_forward(x, gamma, beta, rm, rv, momentum=0.9, epsilon=1e-3, training=True)
    want, mean, var = ref.batchnorm_train(x, gamma, beta, 1e-3)
    close(y, want, dtype, scale=4)
    close(rm, ref.running_update(rm0, mean, 0.9), dtype)
    close(rv, ref.running_update(rv0, var, 0.9), dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    dx, dgamma, dbeta = ops.batchnorm_backward(dy, x, gamma, cache)
    rdx, rdg, rdb = ref.batchnorm_train_backward(dy, x, gamma, 1e-3)
    m = x.size // c
    # float32 sums over m values: tolerances grow with the reduction length; dx is a difference of
    # terms of size gamma*inv_std*|dy|, so its absolute error scales with those
    term = np.abs(dy).max() * gamma.max() * cache[1].max()
    close(dx, rdx, dtype, scale=10 * np.sqrt(m), atol=TOL[dtype]["atol"] * 10 * np.sqrt(m) * term)
    close(dgamma, rdg, dtype, scale=10 * np.sqrt(m))
    close(dbeta, rdb, dtype, scale=10 * np.sqrt(m))


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 3), (1, 2, 2, 2)], ids=str)
def test_batchnorm_gradcheck(shape, rng):
    x = rng.standard_normal(shape)
    c = shape[1]
    gamma, beta, rm, rv = bn_params(c, np.float64, rng)
    dy = rng.standard_normal(shape)
    for training in (True, False):
        _, cache = ops.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), 0.9, 1e-3, training)
        dx, dgamma, dbeta = ops.batchnorm_backward(dy, x, gamma, cache)
        if training:
            f = lambda: float(np.sum(ref.batchnorm_train(x, gamma, beta, 1e-3)[0] * dy))  # noqa: E731
        else:
            f = lambda: float(np.sum(ref.batchnorm_infer(x, gamma, beta, rm, rv, 1e-3) * dy))  # noqa: E731
        check_grad(dx, numerical_grad(f, x), rtol=1e-5, atol=1e-8)
        check_grad(dgamma, numerical_grad(f, gamma), rtol=1e-5, atol=1e-8)
        check_grad(dbeta, numerical_grad(f, beta), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 5), (0, 4), (0, 2, 3, 3)], ids=str)
def test_batchnorm_inference(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    gamma, beta, rm, rv = bn_params(shape[1], dtype, rng)
    rm0, rv0 = rm.copy(), rv.copy()
    y, _ = ops.batchnorm_forward(x, gamma, beta, rm, rv, epsilon=1e-3, training=False)
    close(y, ref.batchnorm_infer(x, gamma, beta, rm, rv, 1e-3), dtype, scale=4)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)


def test_batchnorm_constant_channel_and_large_mean():
    x = np.full((10, 2), 5.0, np.float32)
    x[:, 1] = 1e4 + np.arange(10, dtype=np.float32)
    y, _ = ops.batchnorm_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                                 np.ones(2, np.float32), training=True)
    np.testing.assert_array_equal(y[:, 0], 0.0)
    want, _, _ = ref.batchnorm_train(x, np.ones(2), np.zeros(2), 1e-3)
    np.testing.assert_allclose(y[:, 1], want[:, 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(32, 6), (4, 3, 5, 5)], ids=str)
def test_batchnorm_vs_torch(shape, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    c = shape[1]
    gamma, beta, rm, rv = bn_params(c, np.float32, rng)
    dy = rng.standard_normal(shape).astype(np.float32)
    keras_momentum = 0.95
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    # torch's momentum weights the new batch: torch momentum = 1 - Keras momentum
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=1 - keras_momentum, eps=1e-3)
    ty.backward(torch.tensor(dy))
    y, cache = ops.batchnorm_forward(x, gamma, beta, rm, rv, keras_momentum, 1e-3, True)
    dx, dgamma, dbeta = ops.batchnorm_backward(dy, x, gamma, cache)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dgamma, tg.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dbeta, tb.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-5, atol=1e-6)
    # torch's running variance uses the unbiased batch variance, Keras (and pydl) the biased one
    m = x.size // c
    axes = (0,) + tuple(range(2, x.ndim))
    unbiased = x.astype(np.float64).var(axis=axes, ddof=1)
    np.testing.assert_allclose(rv, trv.numpy() - (1 - keras_momentum) * unbiased / m, rtol=1e-5, atol=1e-6)


# ============================================================ bad input

def raises(exc, match, fn, *args, **kw):
    with pytest.raises(exc, match=match):
        fn(*args, **kw)


def test_bad_input_activation():
    x = np.ones((2, 3), np.float32)
    raises(ValueError, r"\[activation\] unknown activation 'gelux'; valid kinds: linear, relu", ops.activation, x, "gelux")
    raises(ValueError, "alpha", ops.activation, x, "relu", alpha=0.1)
    raises(ValueError, "alpha", ops.activation, x, "elu", alpha=-1.0)
    raises(ValueError, "alpha", ops.activation, x, "leaky_relu", alpha=float("nan"))
    raises(ValueError, "0-d", ops.activation, np.float32(1.0), "softmax")
    raises(TypeError, "numeric", ops.activation, np.array(["a"]), "relu")
    raises(TypeError, "real", ops.activation, np.ones(3, complex), "relu")
    raises(ValueError, r"y has shape \(2, 4\) but dy has shape \(2, 3\)", ops.activation_backward,
           x, x, np.ones((2, 4), np.float32), "relu")
    raises(ValueError, "share one dtype", ops.activation_backward, x, x, x.astype(np.float64), "relu")
    assert ops.activation(np.zeros((0, 3)), "softmax").shape == (0, 3)
    assert ops.activation(np.zeros((4, 0)), "softmax").shape == (4, 0)


def test_bad_input_dense():
    x, W, b = np.ones((4, 3), np.float32), np.ones((3, 2), np.float32), np.ones(2, np.float32)
    raises(ValueError, r"\[dense_forward\] x has 1 dims", ops.dense_forward, np.ones(3, np.float32), W)
    raises(ValueError, r"W has shape \(4, 2\) but x \(4, 3\) has 3 features", ops.dense_forward, x,
           np.ones((4, 2), np.float32))
    raises(ValueError, r"b has shape \(3,\) but W \(3, 2\) has 2 units", ops.dense_forward, x, W,
           np.ones(3, np.float32))
    raises(ValueError, "share one dtype", ops.dense_forward, x, W.astype(np.float64))
    raises(ValueError, "share one dtype", ops.dense_forward, x, W, b.astype(np.float64))
    raises(ValueError, "unknown activation 'softmax'", ops.dense_forward, x, W, b, "softmax")
    y = ops.dense_forward(x, W, b)
    raises(ValueError, r"dy has shape \(4, 3\), expected \(4, 2\)", ops.dense_backward, np.ones((4, 3), np.float32),
           x, W, y)
    raises(ValueError, r"y has shape \(3, 2\)", ops.dense_backward, y, x, W, y[:3])
    # views are copied on purpose and give the same answer
    big = np.ones((8, 6), np.float32)
    np.testing.assert_array_equal(ops.dense_forward(big[::2, ::2], W, b), ops.dense_forward(x, W, b))


def test_bad_input_loss():
    p = np.full((3, 4), 0.25)
    raises(ValueError, r"unknown loss 'hinge'", ops.loss, "hinge", p, p)
    raises(ValueError, r"\[mse\] y_true has shape \(3, 5\) but y_pred has shape \(3, 4\)", ops.loss, "mse",
           np.ones((3, 5)), p)
    raises(ValueError, r"y_true has shape \(4,\)", ops.loss, "mse", np.ones(4), p)
    bad = p.copy()
    bad[0, 0] = np.nan
    raises(ValueError, r"\[categorical_crossentropy\] y_true contains NaN", ops.loss, "categorical_crossentropy",
           bad, p)
    raises(ValueError, r"y_true\[1\] = 4 is not a class index in \[0, 4\)", ops.loss,
           "sparse_categorical_crossentropy", [0, 4, 1], p)
    raises(ValueError, r"is not a class index", ops.loss, "sparse_categorical_crossentropy", [0, -1, 1], p)
    raises(ValueError, r"y_true has shape \(2,\) but y_pred has shape \(3, 4\)", ops.loss,
           "sparse_categorical_crossentropy", [0, 1], p)
    raises(ValueError, "non-integer", ops.loss, "sparse_categorical_crossentropy", [0.5, 1, 2], p)
    raises(ValueError, "NaN", ops.loss, "sparse_categorical_crossentropy", [np.nan, 1, 2], p)
    raises(ValueError, "empty", ops.loss, "mse", np.zeros((0, 4)), np.zeros((0, 4)))
    raises(ValueError, "from_logits", ops.loss, "mse", p, p, from_logits=True)
    raises(ValueError, "from_logits must be a bool", ops.loss, "binary_crossentropy", p, p, from_logits="yes")
    raises(ValueError, "class axis", ops.loss, "sparse_categorical_crossentropy", 1, np.float64(0.5))


def test_bad_input_dropout():
    x = np.ones((3, 3), np.float32)
    for rate in (-0.1, 1.0, 1.5, float("nan"), True, "0.5"):
        raises(ValueError, r"rate must be a number in \[0, 1\)", ops.dropout_forward, x, rate, 1)
    for seed in (-1, 2**64, 1.5, None, True):
        raises(ValueError, "seed must be an int", ops.dropout_forward, x, 0.5, seed)
    _, mask = ops.dropout_forward(x, 0.5, 1)
    raises(ValueError, r"mask has shape \(3, 3\) but dy has shape \(3, 4\)", ops.dropout_backward,
           np.ones((3, 4), np.float32), mask, 0.5)
    raises(ValueError, "uint8", ops.dropout_backward, x, mask.astype(np.float32), 0.5)
    raises(ValueError, "rate", ops.dropout_backward, x, mask, 1.0)


def test_bad_input_batchnorm(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g, b = np.ones(3, np.float32), np.zeros(3, np.float32)

    def stats(dtype=np.float32, n=3):
        return np.zeros(n, dtype), np.ones(n, dtype)

    raises(ValueError, r"x has 3 dims", ops.batchnorm_forward, np.ones((2, 3, 4), np.float32), g, b, *stats())
    raises(ValueError, r"gamma has shape \(4,\), expected \(3,\)", ops.batchnorm_forward, x, np.ones(4, np.float32),
           b, *stats())
    raises(ValueError, r"beta has dtype float64 but x has dtype float32", ops.batchnorm_forward, x, g,
           b.astype(np.float64), *stats())
    raises(ValueError, r"running_mean has dtype float64, expected float32", ops.batchnorm_forward, x, g, b,
           *stats(np.float64))
    raises(ValueError, r"running_var has shape \(4,\)", ops.batchnorm_forward, x, g, b, np.zeros(3, np.float32),
           np.ones(4, np.float32))
    strided = np.zeros(6, np.float32)[::2]
    raises(ValueError, "running_mean must be C-contiguous", ops.batchnorm_forward, x, g, b, strided,
           np.ones(3, np.float32))
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    raises(ValueError, "running_mean must be writeable", ops.batchnorm_forward, x, g, b, ro, np.ones(3, np.float32))
    raises(ValueError, "numpy.ndarray", ops.batchnorm_forward, x, g, b, [0.0, 0.0, 0.0], np.ones(3, np.float32))
    same = np.zeros(3, np.float32)
    raises(ValueError, "separate arrays", ops.batchnorm_forward, x, g, b, same, same)
    raises(ValueError, "momentum", ops.batchnorm_forward, x, g, b, *stats(), momentum=1.5)
    raises(ValueError, "epsilon", ops.batchnorm_forward, x, g, b, *stats(), epsilon=0.0)
    raises(ValueError, "non-empty batch", ops.batchnorm_forward, np.zeros((0, 3), np.float32), g, b, *stats(),
           training=True)
    _, cache = ops.batchnorm_forward(x, g, b, *stats(), training=True)
    raises(ValueError, r"dy has shape \(4, 4\) but x has shape \(4, 3\)", ops.batchnorm_backward,
           np.ones((4, 4), np.float32), x, g, cache)
    raises(ValueError, "cache", ops.batchnorm_backward, x, x, g, cache[:2])
    raises(ValueError, "cache mean", ops.batchnorm_backward, np.ones((4, 5), np.float32), np.ones((4, 5), np.float32),
           np.ones(5, np.float32), cache)


def test_core_bindings_reject_bad_buffers():
    # the C++ side checks every buffer itself: no silent copy, no out-of-bounds access
    x = np.ones((4, 3), np.float32)
    raises(ValueError, r"\[activation\] y has shape \(4, 2\), expected \(4, 3\)", _core.activation_forward, "relu",
           x, np.empty((4, 2), np.float32))
    raises(ValueError, "y must have dtype float32", _core.activation_forward, "relu", x, np.empty((4, 3)))
    raises(ValueError, "must be C-contiguous", _core.activation_forward, "relu", x, np.empty((3, 4), np.float32).T)
    raises(ValueError, "unknown activation", _core.activation_forward, "swishy", x, np.empty_like(x))
    W = np.ones((3, 2), np.float32)
    raises(ValueError, r"dense_forward\] y has shape", _core.dense_forward, x, W, None, np.empty((4, 3), np.float32))
    raises(ValueError, r"b has shape", _core.dense_forward, x, W, np.ones(3, np.float32), np.empty((4, 2), np.float32))
    raises(ValueError, r"dW has shape", _core.dense_backward, np.ones((4, 2), np.float32), x, W,
           np.ones((4, 2), np.float32), None, np.empty((2, 3), np.float32), None)
    raises(ValueError, "grad has shape", _core.loss, "mse", x, x, np.empty((4, 4), np.float32))
    raises(ValueError, "int64", _core.sparse_categorical_crossentropy, np.zeros(4, np.int32), x, np.empty_like(x))
    raises(ValueError, "mask must have dtype uint8", _core.dropout_forward, x, np.empty_like(x),
           np.empty(x.shape, np.int8), 0.5, 1)
    g = np.ones(3, np.float32)
    raises(ValueError, "running_mean must have dtype float32", _core.batchnorm_forward, x, g, g, np.zeros(3),
           np.ones(3, np.float32), np.empty_like(x), np.empty(3), np.empty(3), 0.9, 1e-3, True)
    raises(ValueError, "mean must have dtype float64", _core.batchnorm_forward, x, g, g, np.zeros(3, np.float32),
           np.ones(3, np.float32), np.empty_like(x), np.empty(3, np.float32), np.empty(3), 0.9, 1e-3, True)


def test_views_are_read_correctly_by_every_op(rng):
    # strided and negative-stride inputs are copied on purpose and give the contiguous answer
    base = rng.standard_normal((12, 10))
    x = base[::-2, ::-1]  # (6, 10), negative strides
    xc = np.ascontiguousarray(x)
    dy = rng.standard_normal((12, 10))[::2]
    dyc = np.ascontiguousarray(dy)
    np.testing.assert_array_equal(ops.activation(x, "tanh"), ops.activation(xc, "tanh"))
    y = ops.activation(xc, "softmax")
    np.testing.assert_array_equal(ops.activation_backward(dy, x, y, "softmax"),
                                  ops.activation_backward(dyc, xc, y, "softmax"))
    W = rng.standard_normal((20, 4))[::2]
    y = ops.dense_forward(x, W, None, "sigmoid")
    np.testing.assert_array_equal(y, ops.dense_forward(xc, np.ascontiguousarray(W), None, "sigmoid"))
    g1 = ops.dense_backward(dy[:, :4], x, W, y, "sigmoid")
    g2 = ops.dense_backward(np.ascontiguousarray(dy[:, :4]), xc, np.ascontiguousarray(W), y, "sigmoid")
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    p = np.abs(x) + 0.1
    for kind in ("mse", "categorical_crossentropy"):
        v1, gr1 = ops.loss(kind, dy, p) if kind == "mse" else ops.loss(kind, np.abs(dy), p)
        v2, gr2 = ops.loss(kind, dyc, np.ascontiguousarray(p)) if kind == "mse" else \
            ops.loss(kind, np.abs(dyc), np.ascontiguousarray(p))
        assert v1 == v2
        np.testing.assert_array_equal(gr1, gr2)
    np.testing.assert_array_equal(ops.dropout_forward(x, 0.5, 4)[0], ops.dropout_forward(xc, 0.5, 4)[0])
    _, mask = ops.dropout_forward(xc, 0.5, 4)
    np.testing.assert_array_equal(ops.dropout_backward(dy, mask[::-1][::-1], 0.5), ops.dropout_backward(dyc, mask, 0.5))
    g, b = np.ones(10), np.zeros(10)
    y1, c1 = ops.batchnorm_forward(x, g, b, np.zeros(10), np.ones(10), training=True)
    y2, c2 = ops.batchnorm_forward(xc, g, b, np.zeros(10), np.ones(10), training=True)
    np.testing.assert_array_equal(y1, y2)
    for a, b_ in zip(ops.batchnorm_backward(dy, x, g, c1), ops.batchnorm_backward(dyc, xc, g, c2)):
        np.testing.assert_array_equal(a, b_)


def test_ops_are_exported():
    for name in ("activation", "activation_backward", "dense_forward", "dense_backward", "loss", "dropout_forward",
                 "dropout_backward", "batchnorm_forward", "batchnorm_backward", "FUSABLE_ACTIVATIONS"):
        assert name in ops.__all__ and hasattr(ops, name)
    assert ops.FUSABLE_ACTIVATIONS == ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "gelu_tanh",
                                       "swish", "softplus", "selu", "softsign", "hard_sigmoid", "exponential")
