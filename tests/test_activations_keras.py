"""The Keras activations gelu (exact and tanh), swish/silu, softplus, selu, softsign, hard_sigmoid and
exponential: the kernels (fast and naive, float32 and float64) against float64 NumPy formulas,
their backward by finite differences, PyTorch where importable, stability at +-100 and beyond,
NaN propagation, the fused Dense path, layers given the names, and pydl.activations.

The per-ISA builds run by re-running this file in subprocesses with PYDL_ISA=avx2 and generic.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import pydl
from pydl import _core, ops
from pydl.layers import Activation, Conv2D, Dense

from gradcheck import check_grad, numerical_grad

KINDS = ("gelu", "gelu_tanh", "swish", "softplus", "selu", "softsign", "hard_sigmoid", "exponential")
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _sigmoid(x):
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def ref_act(x, kind):
    x = np.asarray(x, np.float64)
    k = math.sqrt(2.0 / math.pi)
    if kind == "gelu":
        return 0.5 * x * _erfc(-x / math.sqrt(2.0))
    if kind == "gelu_tanh":  # 0.5 x (1 + tanh(u)) == x * sigmoid(2u), the latter without cancellation
        with np.errstate(over="ignore", invalid="ignore"):
            return x * _sigmoid(2.0 * k * (x + 0.044715 * x ** 3))
    if kind == "swish":
        return x * _sigmoid(x)
    if kind == "softplus":
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    if kind == "selu":
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))
    if kind == "softsign":
        return x / (1.0 + np.abs(x))
    if kind == "hard_sigmoid":
        return np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0
    if kind == "exponential":
        return np.exp(x)
    raise AssertionError(kind)


def ref_grad(x, kind):
    """d act / dx in float64, written from the calculus (independent of the kernels' forms)."""
    x = np.asarray(x, np.float64)
    if kind == "gelu":
        return 0.5 * _erfc(-x / math.sqrt(2.0)) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    if kind == "gelu_tanh":
        k = math.sqrt(2.0 / math.pi)
        t = np.tanh(k * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    if kind == "swish":
        s = _sigmoid(x)
        return s + x * s * (1 - s)
    if kind == "softplus":
        return _sigmoid(x)
    if kind == "selu":
        return SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0)))
    if kind == "softsign":
        return 1.0 / (1.0 + np.abs(x)) ** 2
    if kind == "hard_sigmoid":
        return np.where(np.abs(x) < 3, 1.0 / 6.0, 0.0)
    if kind == "exponential":
        return np.exp(x)
    raise AssertionError(kind)


def inputs(shape, seed=0, scale=3.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def away_from_kinks(x, kind):
    x = np.array(x, np.float64)
    kinks = {"selu": [0.0], "hard_sigmoid": [-3.0, 3.0]}.get(kind, [])
    for k in kinks:
        near = np.abs(x - k) < 0.05
        x[near] = k + np.where(x[near] >= k, 0.3, -0.3)
    return x


def fwd(kind, x, naive=False):
    y = np.full_like(x, np.nan)
    (_core.activation_forward_naive if naive else _core.activation_forward)(kind, x, y, 0.0)
    return y


def bwd(kind, dy, x, y, naive=False):
    dx = np.full_like(dy, np.nan)
    (_core.activation_backward_naive if naive else _core.activation_backward)(kind, dy, y, dx, 0.0, x)
    return dx


TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 31), (2, 3, 7), (0, 4), (64, 129)])
def test_forward_backward_match_float64_formulas(kind, dtype, naive, shape):
    x = inputs(shape, seed=sum(shape)).astype(dtype)
    y = fwd(kind, x, naive)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y.astype(np.float64), ref_act(x, kind), **TOL[dtype])
    dy = inputs(shape, seed=7, scale=1.0).astype(dtype)
    dx = bwd(kind, dy, x, y, naive)
    want = dy.astype(np.float64) * ref_grad(x, kind)
    scale = 1.0 if kind != "exponential" else np.maximum(1.0, np.abs(want))
    np.testing.assert_allclose(dx.astype(np.float64), want, rtol=TOL[dtype]["rtol"] * 5,
                               atol=TOL[dtype]["atol"] * 5 * scale if np.ndim(scale) == 0 else 0)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_by_finite_differences(kind):
    x = away_from_kinks(inputs((4, 9), seed=3, scale=1.0 if kind == "exponential" else 2.5), kind)
    dy = inputs((4, 9), seed=4, scale=1.0)
    y = ops.activation(x, kind)
    dx = ops.activation_backward(dy, x, y, kind)
    num = numerical_grad(lambda: float(np.sum(ops.activation(x, kind) * dy)), x)
    check_grad(dx, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "exponential"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_at_large_magnitudes_and_nan_propagates(kind, dtype):
    x = np.array([-1e30, -1e4, -100.0, -30.0, -9.0, 0.0, 9.0, 30.0, 100.0, 1e4, 1e30], dtype)
    for naive in (False, True):
        y = fwd(kind, x, naive)
        assert np.all(np.isfinite(y)), (kind, naive, y)
        dx = bwd(kind, np.ones_like(x), x, y, naive)
        assert np.all(np.isfinite(dx)), (kind, naive, dx)
        np.testing.assert_allclose(y[2:-2].astype(np.float64), ref_act(x[2:-2], kind), **TOL[dtype])
    # the large-x limits
    y = fwd(kind, x)
    lim_hi = {"gelu": x[-1], "gelu_tanh": x[-1], "swish": x[-1], "softplus": x[-1], "selu": SELU_SCALE * x[-1],
              "softsign": 1.0, "hard_sigmoid": 1.0}[kind]
    lim_lo = {"gelu": 0.0, "gelu_tanh": 0.0, "swish": 0.0, "softplus": 0.0, "selu": -SELU_SCALE * SELU_ALPHA,
              "softsign": -1.0, "hard_sigmoid": 0.0}[kind]
    assert y[-1] == pytest.approx(lim_hi, rel=1e-6)
    assert y[0] == pytest.approx(lim_lo, abs=1e-6)
    nan = np.array([np.nan, 1.0, np.nan], dtype)
    for naive in (False, True):
        yn = fwd(kind, nan, naive)
        assert np.isnan(yn[0]) and np.isnan(yn[2]) and np.isfinite(yn[1])
        dxn = bwd(kind, np.ones_like(nan), nan, yn, naive)
        assert np.isnan(dxn[0]) and np.isnan(dxn[2]) and np.isfinite(dxn[1])


def test_softplus_never_overflows():
    x = np.array([20.0, 50.0, 88.0, 89.0, 700.0, 3e38], np.float32)
    y = ops.activation(x, "softplus")
    np.testing.assert_array_equal(y, x)
    xd = np.array([20.0, 800.0, 1e300])
    np.testing.assert_allclose(ops.activation(xd, "softplus"), xd + np.log1p(np.exp(-xd)), rtol=1e-15)


def test_gelu_negative_tail_keeps_relative_accuracy():
    x = np.linspace(-12, -3, 91).astype(np.float32)
    np.testing.assert_allclose(ops.activation(x, "gelu").astype(np.float64), ref_act(x, "gelu"), rtol=3e-5)


def test_kinds_needing_input_require_x():
    x = np.ones((2, 3), np.float32)
    for kind in ("gelu", "swish", "softplus"):
        with pytest.raises(ValueError, match="needs the forward input x"):
            _core.activation_backward(kind, x, x, np.empty_like(x), 0.0)
    with pytest.raises(ValueError, match="x"):
        _core.activation_backward("gelu", x, x, np.empty_like(x), 0.0, np.ones((3, 2), np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_against_torch(kind):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fns = {"gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "swish": F.silu,
           "softplus": lambda t: F.softplus(t, beta=1.0, threshold=1e9), "selu": F.selu, "softsign": F.softsign,
           "hard_sigmoid": F.hardsigmoid, "exponential": torch.exp}
    x = away_from_kinks(inputs((9, 33), seed=11, scale=3.0), kind)
    dy = inputs((9, 33), seed=12, scale=1.0)
    xt = torch.tensor(x, requires_grad=True)
    yt = fns[kind](xt)
    yt.backward(torch.tensor(dy))
    y = ops.activation(x, kind)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    # PyTorch's float64 hardsigmoid backward multiplies by 1/6 rounded to float32 (rel. error 3e-8)
    rtol = 1e-7 if kind == "hard_sigmoid" else 1e-10
    np.testing.assert_allclose(ops.activation_backward(dy, x, y, kind), xt.grad.numpy(), rtol=rtol, atol=1e-13)
    x32 = x.astype(np.float32)
    y32 = ops.activation(x32, kind)
    np.testing.assert_allclose(y32, fns[kind](torch.tensor(x32)).numpy(), rtol=3e-5, atol=3e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_dense_matches_separate_ops(kind, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((19, 23)).astype(dtype)
    W = (rng.standard_normal((23, 11)) * 0.3).astype(dtype)
    b = rng.standard_normal(11).astype(dtype)
    z64 = x.astype(np.float64) @ W + b
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    for naive in (False, True):
        y = np.full((19, 11), np.nan, dtype)
        z = np.full((19, 11), np.nan, dtype)
        (_core.dense_forward_naive if naive else _core.dense_forward)(x, W, b, y, kind, 0.0, z)
        np.testing.assert_allclose(z, z64, **tol)
        np.testing.assert_allclose(y, ref_act(z64, kind), **tol)
    y, z = ops.dense_forward(x, W, b, kind, return_z=True)
    dy = rng.standard_normal((19, 11)).astype(dtype)
    dx, dW, db = ops.dense_backward(dy, x, W, y, kind, z=z)
    dz = dy.astype(np.float64) * ref_grad(z64, kind)
    np.testing.assert_allclose(dW, x.astype(np.float64).T @ dz, **tol)
    np.testing.assert_allclose(db, dz.sum(0), **tol)
    np.testing.assert_allclose(dx, dz @ W.astype(np.float64).T, **tol)


def test_fused_dense_needs_z():
    x = np.ones((2, 3), np.float32)
    W = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="z"):
        _core.dense_forward(x, W, None, np.empty((2, 4), np.float32), "gelu", 0.0)
    y = ops.dense_forward(x, W, None, "gelu")
    with pytest.raises(ValueError, match="needs z"):
        ops.dense_backward(np.ones_like(y), x, W, y, "gelu")


@pytest.mark.parametrize("name,kind", [("gelu", "gelu"), ("swish", "swish"), ("silu", "swish"),
                                       ("softplus", "softplus"), ("selu", "selu"), ("softsign", "softsign"),
                                       ("hard_sigmoid", "hard_sigmoid"), ("exponential", "exponential")])
def test_dense_layer_string_activation_gradcheck(name, kind):
    pydl.seed(0)
    layer = Dense(5, activation=name)
    assert layer.activation == kind
    x = np.random.default_rng(1).standard_normal((4, 6)) * 0.8
    errors = pydl.gradcheck(layer, x)
    assert max(errors.values()) < 1e-6, errors


def test_layers_accept_names_and_functions():
    acts = pydl.activations
    assert Dense(3, activation=acts.gelu).activation == "gelu"
    assert Dense(3, activation=acts.silu).activation == "swish"
    assert Activation("silu").kind == "swish"
    assert Conv2D(2, 3, activation="gelu").activation == "gelu"
    assert Conv2D(2, 3, activation=acts.softplus).activation == "softplus"
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(3, activation="nope")
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(3, activation=lambda t: t)


def test_conv2d_with_gelu_gradcheck():
    pydl.seed(1)
    layer = Conv2D(3, 3, padding="same", activation="gelu")
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 5))
    errors = pydl.gradcheck(layer, x)
    assert max(errors.values()) < 1e-6, errors


def test_model_with_new_activations_trains_saves_and_loads(tmp_path):
    pydl.seed(3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = (x[:, :1] * x[:, 1:2] > 0).astype(np.float32)
    model = pydl.Sequential([Dense(16, activation="gelu", input_shape=(8,)), Dense(16, activation="silu"),
                             Activation("selu"), Dense(8, activation="softplus"), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    hist = model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    path = tmp_path / "m.pydl"
    model.save(str(path))
    again = pydl.load_model(str(path))
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


def test_activations_module_functions():
    acts = pydl.activations
    x = np.linspace(-5, 5, 41)
    np.testing.assert_allclose(acts.gelu(x), ref_act(x, "gelu"), rtol=1e-12)
    np.testing.assert_allclose(acts.gelu(x, approximate=True), ref_act(x, "gelu_tanh"), rtol=1e-12)
    np.testing.assert_allclose(acts.swish(x), acts.silu(x))
    np.testing.assert_allclose(acts.hard_sigmoid(x), np.clip(x / 6 + 0.5, 0, 1), rtol=1e-12)
    np.testing.assert_allclose(acts.softmax(x[None]).sum(), 1.0)
    np.testing.assert_allclose(acts.leaky_relu(x), np.where(x > 0, x, 0.2 * x))
    assert acts.gelu(x.astype(np.float32)).dtype == np.float32
    assert acts.get("gelu") is acts.gelu and acts.get("silu") is acts.silu and acts.get(None) is acts.linear
    assert acts.get(acts.relu) is acts.relu
    assert acts.serialize(acts.softplus) == "softplus"
    assert acts.deserialize("selu") is acts.selu
    with pytest.raises(ValueError, match="unknown activation"):
        acts.get("geluu")
    with pytest.raises(ValueError):
        acts.gelu(x, approximate="yes")


@pytest.mark.skipif(os.environ.get("PYDL_ACT_ISA_CHILD") == "1", reason="already the per-ISA child run")
@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_per_isa_builds(isa):
    if isa != "generic" and isa not in _core.available_isas():
        pytest.skip(f"{isa} is not available on this machine")
    env = dict(os.environ, PYDL_ISA=isa, PYDL_ACT_ISA_CHILD="1")
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", os.path.abspath(__file__),
                        "-k", "formulas or stable or tail or overflows or fused_dense_matches"],
                       cwd=os.path.dirname(here), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    check = subprocess.run([sys.executable, "-c", "import pydl; print(pydl._core.selected_isa())"],
                           cwd=os.path.dirname(here), env=env, capture_output=True, text=True)
    assert check.stdout.strip() == isa, check.stdout + check.stderr
