"""The layers added with the graph models: merge layers, GlobalAveragePooling1D, Dense on any
rank, UpSampling2D and Conv2DTranspose. Each: forward against NumPy, float64 finite-difference
gradients (pydl.gradcheck), PyTorch where importable, config round trip, registration."""
import numpy as np
import pytest

import pydl
from pydl import registry
from pydl.layers import (Add, AveragePooling2D, AvgPool2D, Concatenate, Conv2DTranspose, Dense,
                         GlobalAveragePooling1D, MaxPool2D, MaxPooling2D, Multiply, Subtract, UpSampling2D)

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

NEW = [Add, Subtract, Multiply, Concatenate, GlobalAveragePooling1D, UpSampling2D, Conv2DTranspose]


@pytest.mark.parametrize("cls", NEW, ids=lambda c: c.__name__)
def test_registered_and_exported(cls):
    assert registry.layers.get(cls.__name__) is cls
    assert getattr(pydl.layers, cls.__name__) is cls
    assert cls.__name__ in pydl.layers.__all__


def test_keras_pooling_aliases():
    assert MaxPooling2D is MaxPool2D and AveragePooling2D is AvgPool2D
    assert "MaxPooling2D" in pydl.layers.__all__ and "AveragePooling2D" in pydl.layers.__all__


# ---- merge layers ------------------------------------------------------------------------------

def _inputs(rng, n, shape=(3, 4, 5), dtype=np.float64):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(n)]


@pytest.mark.parametrize("cls,n,ref", [
    (Add, 3, lambda xs: xs[0] + xs[1] + xs[2]),
    (Subtract, 2, lambda xs: xs[0] - xs[1]),
    (Multiply, 3, lambda xs: xs[0] * xs[1] * xs[2]),
    (Concatenate, 3, lambda xs: np.concatenate(xs, axis=-1)),
], ids=["add", "subtract", "multiply", "concatenate"])
def test_merge_forward_and_gradients(cls, n, ref, rng):
    xs = _inputs(rng, n)
    layer = cls()
    y = layer(xs)
    np.testing.assert_allclose(y, ref(xs), rtol=1e-15, atol=0)
    errs = pydl.gradcheck(cls(), xs)
    assert set(errs) == {f"x{i}" for i in range(n)}
    x32 = [x.astype(np.float32) for x in xs]
    y32 = cls()(x32)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, ref(x32), rtol=1e-6)


def test_concatenate_axes_and_shapes(rng):
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    c = Concatenate(axis=1)
    np.testing.assert_array_equal(c([a, b]), np.concatenate([a, b], axis=1))
    assert c.output_shape == (None, 8, 4)
    dx = c.backward(np.arange(2 * 8 * 4, dtype=np.float64).reshape(2, 8, 4))
    assert dx[0].shape == a.shape and dx[1].shape == b.shape
    pydl.gradcheck(Concatenate(axis=-2), [a, b])
    with pytest.raises(ValueError, match=r"Concatenate.*agree on every axis but 2"):
        Concatenate().build([(None, 3, 4), (None, 5, 4)])
    with pytest.raises(ValueError, match="batch axis"):
        Concatenate(axis=0).build([(None, 3), (None, 3)])
    with pytest.raises(ValueError, match="axis"):
        Concatenate(axis="last")


def test_merge_bad_inputs(rng):
    with pytest.raises(ValueError, match=r"Add 'a'.*same shape.*\(N, 3\), \(N, 4\)"):
        Add(name="a").build([(None, 3), (None, 4)])
    with pytest.raises(ValueError, match="exactly 2"):
        Subtract().build([(None, 3)] * 3)
    with pytest.raises(ValueError, match="at least 2"):
        Add().build([(None, 3)])
    add = Add(name="s")
    add.build([(None, 3), (None, 3)])
    with pytest.raises(ValueError, match=r"Add 's'.*expected inputs of shapes"):
        add.forward([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="built for 2 inputs"):
        add.forward([np.zeros((2, 3))] * 3)
    with pytest.raises(ValueError, match="different batch sizes"):
        add.forward([np.zeros((2, 3)), np.zeros((3, 3))])
    with pytest.raises(RuntimeError, match=r"Multiply '.*'\] backward called before forward"):
        Multiply().backward(np.zeros((2, 3)))


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
def test_merge_against_torch(rng):
    xs = _inputs(rng, 3)
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    dy = rng.standard_normal((3, 4, 5))
    for layer, fn in [(Add(), lambda t: t[0] + t[1] + t[2]), (Multiply(), lambda t: t[0] * t[1] * t[2]),
                      (Concatenate(), lambda t: torch.cat(t, dim=-1))]:
        for t in ts:
            t.grad = None
        ty = fn(ts)
        d = dy if ty.shape == dy.shape else rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(d))
        np.testing.assert_allclose(layer(xs), ty.detach().numpy(), rtol=1e-12)
        for g, t in zip(layer.backward(d), ts):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-14)


# ---- GlobalAveragePooling1D --------------------------------------------------------------------

def test_global_average_pooling_1d(rng):
    x = rng.standard_normal((4, 7, 3))
    g = GlobalAveragePooling1D()
    np.testing.assert_allclose(g(x), x.mean(axis=1), rtol=1e-14)
    assert g.output_shape == (None, 3)
    dx = g.backward(np.ones((4, 3)))
    np.testing.assert_allclose(dx, np.full(x.shape, 1 / 7))
    pydl.gradcheck(GlobalAveragePooling1D(), x)
    assert GlobalAveragePooling1D()(x.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"GlobalAveragePooling1D.*\(N, T, C\)"):
        GlobalAveragePooling1D().build((None, 3))
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.adaptive_avg_pool1d(tx.transpose(1, 2), 1)[..., 0]
        ty.backward(torch.ones(4, 3, dtype=torch.float64))
        np.testing.assert_allclose(g(x), ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(g.backward(np.ones((4, 3))), tx.grad.numpy(), rtol=1e-12)


# ---- Dense on any rank ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 5), (3, 4, 5), (2, 3, 2, 5)])
def test_dense_on_last_axis(shape, rng):
    pydl.seed(1)
    d = Dense(6, activation="tanh")
    x = rng.standard_normal(shape).astype(np.float32)
    y = d(x)
    assert y.shape == shape[:-1] + (6,) and d.output_shape == (None,) + shape[1:-1] + (6,)
    want = np.tanh(x.astype(np.float64) @ d.params["W"] + d.params["b"])
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    assert d.flops() == int(np.prod(shape[1:-1])) * (2 * 5 * 6 + 6)
    dx = d.backward(np.ones_like(y))
    assert dx.shape == shape
    d2 = Dense(4, activation="softmax", name="sm")
    assert set(pydl.gradcheck(d2, x.astype(np.float64))) == {"x", "sm/W", "sm/b"}


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
def test_dense_rank3_against_torch(rng):
    d = Dense(4)
    x = rng.standard_normal((2, 3, 5))
    d.build((None, 3, 5))
    d.params = {k: v.astype(np.float64) for k, v in d.params.items()}
    lin = torch.nn.Linear(5, 4).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(d.params["W"].T))
        lin.bias.copy_(torch.tensor(d.params["b"]))
    tx = torch.tensor(x, requires_grad=True)
    ty = lin(tx)
    dy = rng.standard_normal((2, 3, 4))
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(d.forward(x), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(d.backward(dy), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(d.grads["W"], lin.weight.grad.numpy().T, rtol=1e-12)
    np.testing.assert_allclose(d.grads["b"], lin.bias.grad.numpy(), rtol=1e-12)


# ---- UpSampling2D --------------------------------------------------------------------------------

def test_upsampling2d(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    u = UpSampling2D((2, 3))
    y = u(x)
    assert y.shape == (2, 3, 8, 15) and u.output_shape == (None, 3, 8, 15)
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(3, axis=3))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(u.backward(dy), dy.reshape(2, 3, 4, 2, 5, 3).sum(axis=(3, 5)), rtol=1e-14)
    pydl.gradcheck(UpSampling2D(2), x[:, :, :3, :3])
    assert UpSampling2D.from_config(u.get_config()).get_config() == u.get_config()
    with pytest.raises(ValueError, match="nearest"):
        UpSampling2D(2, interpolation="bilinear")
    with pytest.raises(ValueError, match="NCHW"):
        UpSampling2D().build((None, 4, 4))
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.interpolate(tx, scale_factor=(2, 3), mode="nearest")
        ty.backward(torch.tensor(dy))
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_allclose(u.backward(dy), tx.grad.numpy(), rtol=1e-12)


# ---- Conv2DTranspose ---------------------------------------------------------------------------

# (kernel, strides, padding, output_padding, PyTorch padding) where the two definitions agree
CASES = [(3, 1, "valid", None, 0), (3, 2, "valid", None, 0), (3, 2, "valid", 1, 0), (4, 2, "same", None, 1),
         (3, 1, "same", None, 1), (5, 3, "valid", 2, 0), (2, 2, "valid", None, 0), ((3, 2), (2, 1), "valid", None, 0),
         ((5, 3), 1, "same", None, (2, 1)), (1, 1, "valid", None, 0)]


@pytest.mark.parametrize("k,s,pad,op,tpad", CASES)
def test_conv2d_transpose_output_size_and_gradients(k, s, pad, op, tpad, rng):
    pydl.seed(2)
    layer = Conv2DTranspose(4, k, strides=s, padding=pad, output_padding=op, activation="tanh")
    x = rng.standard_normal((2, 3, 4, 5))
    layer.build((None, 3, 4, 5))
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    assert layer.params["W"].shape == (3, 4, kh, kw)
    # Keras' deconv_output_length
    for size, kk, ss, got in ((4, kh, sh, layer.output_shape[2]), (5, kw, sw, layer.output_shape[3])):
        if op is None:
            want = size * ss + max(kk - ss, 0) if pad == "valid" else size * ss
        else:
            want = (size - 1) * ss + kk - 2 * (0 if pad == "valid" else kk // 2) + op
        assert got == want
    layer.params["b"][:] = 0.1
    errs = pydl.gradcheck(layer, x)
    assert set(errs) == {"x", f"{layer.name}/W", f"{layer.name}/b"}


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("k,s,pad,op,tpad", CASES)
def test_conv2d_transpose_against_torch(k, s, pad, op, tpad, rng):
    layer = Conv2DTranspose(5, k, strides=s, padding=pad, output_padding=op)
    x = rng.standard_normal((2, 3, 6, 7))
    layer.build((None, 3, 6, 7))
    layer.params = {name: v.astype(np.float64) for name, v in layer.params.items()}
    layer.params["b"][:] = rng.standard_normal(5)
    y = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.params["W"], requires_grad=True)
    tb = torch.tensor(layer.params["b"], requires_grad=True)
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, stride=s, padding=tpad, output_padding=op or 0)
    assert tuple(ty.shape) == y.shape
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], tb.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ["relu", "sigmoid", None])
@pytest.mark.parametrize("strides", [1, 2])
def test_conv2d_transpose_activations_both_paths(act, strides, rng):
    """strides 1 runs a flipped-kernel conv2d (relu fused), larger strides conv2d_backward."""
    layer = Conv2DTranspose(3, 3, strides=strides, padding="same", activation=act)
    x = rng.standard_normal((2, 2, 4, 4))
    layer.build((None, 2, 4, 4))
    layer.params["b"][:] = rng.standard_normal(3)
    pydl.gradcheck(layer, x)
    if torch is not None and strides == 1:
        layer.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
        t = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(layer.params["W"]),
                                                 torch.tensor(layer.params["b"]), padding=1)
        t = {"relu": torch.relu, "sigmoid": torch.sigmoid, None: lambda v: v}[act](t)
        np.testing.assert_allclose(layer.forward(x), t.numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_transpose_float32_config_and_errors(rng):
    layer = Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu", name="up")
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == (2, 8, 10, 10) and (y >= 0).all()
    ref = Conv2DTranspose.from_config(layer.get_config())
    assert ref.get_config() == layer.get_config()
    ref.build((None, 4, 5, 5))
    ref.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), rtol=1e-4, atol=1e-5)
    assert layer.flops() == 2 * 4 * 8 * 9 * 25
    with pytest.raises(ValueError, match="output_padding"):
        Conv2DTranspose(2, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match="padding"):
        Conv2DTranspose(2, 3, padding=1)
    with pytest.raises(ValueError, match=r"Conv2DTranspose 'odd'.*does not map back"):
        Conv2DTranspose(2, 4, strides=2, padding="same", output_padding=0, name="odd").build((None, 3, 5, 5))
    with pytest.raises(ValueError, match="NCHW"):
        Conv2DTranspose(2, 3).build((None, 5, 5))
    with pytest.raises(RuntimeError, match=r"Conv2DTranspose 'fresh'\] backward called before forward"):
        Conv2DTranspose(2, 3, name="fresh").backward(np.zeros((1, 2, 3, 3), np.float32))
