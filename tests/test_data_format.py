"""Image data formats: channels_first (N, C, H, W) and channels_last (N, H, W, C).

A channels-last layer or model must compute exactly what the channels-first one computes with
the same weights on the transposed data: forward, input and weight gradients, a training step.
"""
import json

import numpy as np
import pytest

import pydl
from pydl import layers as L
from pydl.layers import layout

TOL = dict(rtol=2e-5, atol=2e-5)


@pytest.fixture(autouse=True)
def _restore_format():
    before = pydl.image_data_format()
    yield
    pydl.set_image_data_format(before)


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- the process default ------------------------------------------------------------------
def test_default_format_and_setter():
    assert pydl.image_data_format() == "channels_first"
    assert pydl.backend.image_data_format() == "channels_first"
    assert pydl.set_image_data_format("channels_last") == "channels_first"
    assert pydl.image_data_format() == "channels_last"
    assert L.Conv2D(2, 3).data_format == "channels_last"
    assert L.BatchNormalization().axis == -1
    pydl.backend.set_image_data_format("CHANNELS_FIRST")
    assert pydl.image_data_format() == "channels_first"
    assert L.MaxPool2D().data_format == "channels_first" and L.BatchNormalization().axis == 1
    for bad in ("nhwc", None, 3, "channels-last"):
        with pytest.raises(ValueError, match="data_format.*channels_first.*channels_last"):
            pydl.set_image_data_format(bad)
    assert pydl.image_data_format() == "channels_first"
    with pytest.raises(ValueError, match=r"\[Conv2D\] data_format"):
        L.Conv2D(2, 3, data_format="NHWC")


def test_layers_record_resolved_format():
    pydl.set_image_data_format("channels_last")
    made = [L.Conv2D(2, 3), L.Conv2DTranspose(2, 3), L.MaxPooling2D(), L.AveragePooling2D(),
            L.GlobalAveragePooling2D(), L.GlobalMaxPooling2D(), L.UpSampling2D()]
    bn = L.BatchNormalization()
    pydl.set_image_data_format("channels_first")
    for layer in made:
        cfg = layer.get_config()
        assert cfg["data_format"] == "channels_last", type(layer).__name__
        again = type(layer).from_config(cfg)
        assert again.data_format == "channels_last"
    assert bn.get_config()["axis"] == -1 and L.BatchNormalization.from_config(bn.get_config()).axis == -1
    # configs from before data_format / axis existed describe NCHW layers
    pydl.set_image_data_format("channels_last")
    old = L.Conv2D(2, 3).get_config()
    del old["data_format"]
    assert L.Conv2D.from_config(old).data_format == "channels_first"
    old_bn = L.BatchNormalization().get_config()
    del old_bn["axis"]
    assert L.BatchNormalization.from_config(old_bn).axis == 1
    assert L.Flatten().data_format == "channels_last"  # Flatten's default keeps the input's order


# -- each layer: channels_last == channels_first on transposed data --------------------------
LAYERS = [
    ("conv_relu_same", lambda f: L.Conv2D(5, 3, padding="same", activation="relu", data_format=f)),
    ("conv_strided", lambda f: L.Conv2D(4, (3, 2), strides=2, dilation_rate=1, data_format=f)),
    ("conv_tanh_dilated", lambda f: L.Conv2D(3, 3, dilation_rate=2, activation="tanh", use_bias=False,
                                             data_format=f)),
    ("convT_s1", lambda f: L.Conv2DTranspose(4, 3, activation="relu", data_format=f)),
    ("convT_s2_same", lambda f: L.Conv2DTranspose(3, 3, strides=2, padding="same", activation="elu",
                                                  data_format=f)),
    ("maxpool", lambda f: L.MaxPooling2D(2, data_format=f)),
    ("maxpool_same_s1", lambda f: L.MaxPool2D(3, strides=1, padding="same", data_format=f)),
    ("avgpool", lambda f: L.AveragePooling2D(3, strides=2, padding="same", data_format=f)),
    ("gap", lambda f: L.GlobalAveragePooling2D(data_format=f)),
    ("gmp", lambda f: L.GlobalMaxPooling2D(data_format=f)),
    ("upsample", lambda f: L.UpSampling2D((2, 3), data_format=f)),
    ("bn", lambda f: L.BatchNormalization(axis=1 if f == "channels_first" else -1, momentum=0.8)),
]


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_layer_channels_last_matches_channels_first(name, make):
    rng = _rng(1)
    x = rng.standard_normal((3, 4, 7, 6)).astype(np.float32)
    cf, cl = make("channels_first"), make("channels_last")
    cf.build((None,) + x.shape[1:])
    cl.build((None,) + _nhwc(x).shape[1:])
    for k in cf.params:
        cf.params[k][...] = rng.standard_normal(cf.params[k].shape).astype(np.float32) * 0.5
    cl.set_weights(cf.get_weights())
    if cf.output_shape is not None and len(cf.output_shape) == 4:
        assert cl.output_shape == (None,) + tuple(cf.output_shape[i] for i in (2, 3, 1))
    y_cf = cf.forward(x, training=True)
    y_cl = cl.forward(_nhwc(x), training=True)
    to_cl = _nhwc if y_cf.ndim == 4 else (lambda a: a)
    np.testing.assert_allclose(y_cl, to_cl(y_cf), **TOL)
    dy = rng.standard_normal(y_cf.shape).astype(np.float32)
    dx_cf = cf.backward(dy)
    dx_cl = cl.backward(to_cl(dy))
    np.testing.assert_allclose(dx_cl, _nhwc(dx_cf), **TOL)
    assert set(cf.grads) == set(cl.grads) == set(cf.params)
    for k in cf.grads:
        np.testing.assert_allclose(cl.grads[k], cf.grads[k], rtol=1e-4, atol=1e-4)
    for k in cf.state:  # BatchNormalization's moving statistics
        np.testing.assert_allclose(cl.state[k], cf.state[k], **TOL)
    # inference too (BatchNormalization then uses the moving statistics)
    np.testing.assert_allclose(cl.forward(_nhwc(x)), to_cl(cf.forward(x)), **TOL)


@pytest.mark.parametrize("name,make", [e for e in LAYERS if e[0] in ("conv_tanh_dilated", "convT_s2_same",
                                                                       "avgpool", "bn", "upsample")],
                         ids=["conv", "convT", "avgpool", "bn", "upsample"])
def test_layer_channels_last_gradcheck(name, make):
    layer = make("channels_last")
    x = _rng(2).standard_normal((2, 5, 6, 3))
    layer.build((None, 5, 6, 3))
    pydl.gradcheck(layer, x, rtol=1e-4, atol=1e-6)


def test_global_max_pooling():
    x = _rng(12).standard_normal((3, 4, 5, 6)).astype(np.float32)
    layer = L.GlobalMaxPooling2D(data_format="channels_last")
    y = layer(x)
    np.testing.assert_array_equal(y, x.max(axis=(1, 2)))
    dy = _rng(13).standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    want = np.zeros_like(x)
    for n in range(3):
        for c in range(6):
            i, j = np.unravel_index(np.argmax(x[n, :, :, c]), (4, 5))
            want[n, i, j, c] = dy[n, c]
    np.testing.assert_array_equal(dx, want)
    layer64 = L.GlobalMaxPooling2D()
    layer64.build((None, 2, 3, 3))
    pydl.gradcheck(layer64, _rng(14).standard_normal((2, 2, 3, 3)))


def test_layer_hint_for_the_other_layout():
    conv = L.Conv2D(4, 3, data_format="channels_last")
    conv.build((None, 10, 9, 3))
    with pytest.raises(ValueError, match=r"looks channels-first.*x\.transpose\(0, 2, 3, 1\)"):
        conv.forward(np.ones((2, 3, 10, 9), np.float32))
    pool = L.MaxPool2D(2)
    pool.build((None, 3, 10, 9))
    with pytest.raises(ValueError, match=r"looks channels-last \(NHWC\); pydl expects NCHW.*transpose\(0, 3, 1, 2\)"):
        pool.forward(np.ones((2, 10, 9, 3), np.float32))


# -- against PyTorch on permuted tensors --------------------------------------------------------
def test_against_torch_on_permuted_tensors():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng(3)
    x = rng.standard_normal((4, 9, 8, 3)).astype(np.float32)  # NHWC
    xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)

    conv = L.Conv2D(6, 3, strides=2, padding="same", activation="relu", data_format="channels_last")
    conv.build((None, 9, 8, 3))
    conv.params["b"][:] = rng.standard_normal(6).astype(np.float32)
    W = torch.tensor(conv.params["W"]).requires_grad_(True)
    b = torch.tensor(conv.params["b"]).requires_grad_(True)
    # "same" with stride 2 on 9 x 8: TensorFlow puts the odd pixel after, as pydl
    ref = F.relu(F.conv2d(F.pad(xt, (0, 1, 1, 1)), W, b, stride=2))
    y = conv.forward(x, training=True)
    np.testing.assert_allclose(y, ref.permute(0, 2, 3, 1).detach().numpy(), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ref.backward(torch.tensor(dy).permute(0, 3, 1, 2))
    dx = conv.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.grads["W"], W.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.grads["b"], b.grad.numpy(), rtol=1e-4, atol=1e-4)

    for layer, fn in [(L.MaxPooling2D(2, data_format="channels_last"), lambda t: F.max_pool2d(t, 2)),
                      (L.AveragePooling2D(3, strides=2, data_format="channels_last"),
                       lambda t: F.avg_pool2d(t, 3, 2))]:
        layer.build((None, 9, 8, 3))
        t = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)
        ref = fn(t)
        y = layer.forward(x, training=True)
        np.testing.assert_allclose(y, ref.permute(0, 2, 3, 1).detach().numpy(), rtol=1e-6, atol=1e-6)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        ref.backward(torch.tensor(dy).permute(0, 3, 1, 2))
        np.testing.assert_allclose(layer.backward(dy), t.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)

    bn = L.BatchNormalization(axis=-1, momentum=0.9, epsilon=1e-5)
    bn.build((None, 9, 8, 3))
    bn.params["gamma"][:] = [0.5, 2.0, -1.0]
    bn.params["beta"][:] = [0.1, 0.0, 3.0]
    tbn = torch.nn.BatchNorm2d(3, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        tbn.weight[:] = torch.tensor(bn.params["gamma"])
        tbn.bias[:] = torch.tensor(bn.params["beta"])
    t = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)
    ref = tbn(t)
    y = bn.forward(x, training=True)
    np.testing.assert_allclose(y, ref.permute(0, 2, 3, 1).detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.state["moving_mean"], tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ref.backward(torch.tensor(dy).permute(0, 3, 1, 2))
    np.testing.assert_allclose(bn.backward(dy), t.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.grads["gamma"], tbn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.grads["beta"], tbn.bias.grad.numpy(), rtol=1e-4, atol=1e-4)


# -- Flatten: Keras' order ----------------------------------------------------------------------
def test_flatten_order_matches_keras():
    rng = _rng(4)
    n, c, h, w = 2, 3, 4, 5
    x_cf = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x_cl = _nhwc(x_cf)
    # Keras: Flatten(data_format="channels_last") flattens (N, H, W, C) as it is, feature index
    # (i * W + j) * C + k; Flatten(data_format="channels_first") moves C last first: the same order
    want = np.empty((n, h * w * c), np.float32)
    for i in range(h):
        for j in range(w):
            for k in range(c):
                want[:, (i * w + j) * c + k] = x_cf[:, k, i, j]
    plain = L.Flatten()
    plain.build((None, h, w, c))
    np.testing.assert_array_equal(plain.forward(x_cl), want)
    moved = L.Flatten(data_format="channels_first")
    moved.build((None, c, h, w))
    np.testing.assert_array_equal(moved.forward(x_cf), want)
    dy = rng.standard_normal(want.shape).astype(np.float32)
    np.testing.assert_array_equal(moved.backward(dy), _nchw(plain.backward(dy).reshape(n, h, w, c)))
    # the default keeps the input's own order: PyTorch's (C, H, W) for NCHW input
    legacy = L.Flatten()
    legacy.build((None, c, h, w))
    np.testing.assert_array_equal(legacy.forward(x_cf), x_cf.reshape(n, -1))
    pydl.gradcheck(moved, x_cf.astype(np.float64))
    with pytest.raises(ValueError, match=r"\[Flatten\] data_format"):
        L.Flatten(data_format="NCHW")


# -- BatchNormalization axis -----------------------------------------------------------------
@pytest.mark.parametrize("shape,axis", [((6, 4, 5, 3), -1), ((6, 4, 5, 3), 3), ((6, 3, 4, 5), 1), ((8, 3), 1),
                                         ((8, 3), -1), ((5, 7, 3), -1), ((5, 3, 7), 1), ((2, 3, 2, 2, 2), 1),
                                         ((2, 2, 2, 2, 3), -1)])
def test_batchnorm_axis_semantics(shape, axis):
    rng = _rng(5)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float64)
    a = axis % len(shape)
    c = shape[a]
    bn = L.BatchNormalization(axis=axis, momentum=0.7, epsilon=1e-3)
    bn.build((None,) + shape[1:])
    assert bn.params["gamma"].shape == (c,)
    gamma = rng.standard_normal(c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    bn.params["gamma"][:], bn.params["beta"][:] = gamma, beta
    red = tuple(i for i in range(len(shape)) if i != a)
    bshape = [1] * len(shape)
    bshape[a] = c
    mean, var = x.mean(axis=red), x.var(axis=red)
    want = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-3) * gamma.reshape(bshape) \
        + beta.reshape(bshape)
    y = bn.forward(x.astype(np.float32), training=True)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.state["moving_mean"], 0.3 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.state["moving_variance"], 0.7 + 0.3 * var, rtol=1e-5, atol=1e-6)
    mm, mv = bn.state["moving_mean"].astype(np.float64), bn.state["moving_variance"].astype(np.float64)
    y_inf = bn.forward(x.astype(np.float32))
    want_inf = (x - mm.reshape(bshape)) / np.sqrt(mv.reshape(bshape) + 1e-3) * gamma.reshape(bshape) \
        + beta.reshape(bshape)
    np.testing.assert_allclose(y_inf, want_inf, rtol=1e-4, atol=1e-4)
    bn64 = L.BatchNormalization(axis=axis)
    bn64.build((None,) + shape[1:])
    pydl.gradcheck(bn64, x, rtol=1e-4, atol=1e-6)


def test_batchnorm_axis_errors_and_default():
    with pytest.raises(ValueError, match="axis"):
        L.BatchNormalization(axis=0)
    with pytest.raises(ValueError, match="axis"):
        L.BatchNormalization(axis="channels")
    with pytest.raises(ValueError, match=r"axis=2.*1 \(channels first\) or 3"):
        L.BatchNormalization(axis=2).build((None, 3, 4, 5))
    assert L.BatchNormalization(axis=[3]).axis == 3
    pydl.set_image_data_format("channels_last")
    bn = L.BatchNormalization()
    bn.build((None, 4, 4, 6))
    assert bn.axis == -1 and bn.params["gamma"].shape == (6,)


# -- models ---------------------------------------------------------------------------------------
def _branchy(fmt):
    """A graph with every image layer, element-wise layers between them, merges along the channels
    and both ends (Flatten / global pooling) feeding a Dense."""
    cl = fmt == "channels_last"
    ch = -1 if cl else 1
    inp = pydl.Input((8, 8, 3) if cl else (3, 8, 8))
    x = L.Conv2D(4, 3, padding="same", data_format=fmt, name="c1")(inp)
    x = L.BatchNormalization(axis=ch, name="bn1")(x)
    x = L.Activation("relu", name="a1")(x)
    a = L.Conv2D(4, 3, padding="same", activation="relu", data_format=fmt, name="c2")(x)
    b = L.Conv2D(4, 1, data_format=fmt, name="c3")(x)
    s = L.Add(name="add")([a, b])
    m = L.Concatenate(axis=ch, name="cat")([s, L.Multiply(name="mul")([a, b])])
    m = L.Dropout(0.0, name="drop")(m)
    p = L.MaxPooling2D(2, data_format=fmt, name="mp")(m)
    u = L.UpSampling2D(2, data_format=fmt, name="up")(L.AveragePooling2D(2, data_format=fmt, name="ap")(p))
    t = L.Conv2DTranspose(3, 3, strides=2, padding="same", activation="tanh", data_format=fmt, name="ct")(u)
    t = L.BatchNormalization(axis=ch, name="bn2")(t)
    g = L.GlobalAveragePooling2D(data_format=fmt, name="gap")(t)
    f = L.Flatten(data_format=fmt, name="flat")(p)  # Keras' order in both
    z = L.Concatenate(name="cat2")([g, L.Dense(5, name="d1")(f)])
    out = L.Dense(3, activation="softmax", name="out")(z)
    img = L.Conv2D(2, 1, data_format=fmt, name="img")(t)  # an image output too
    return pydl.Model(inp, [out, img])


def _grads(model, x, ys):
    plan = model._output_plan()
    bplan = model._backward_plan(force_all=True, out_plan=plan)
    for layer in model.layers:
        layer.zero_grads()
    vals = model._run_forward([x], True)
    total, _, seeds, fused = model._losses(vals, ys, plan)
    g = model._run_backward(bplan, seeds, fused)
    model._bplan = None
    return total, g[model._input_slots[0]], {l.name: dict(l.grads) for l in model.layers}


def test_model_channels_last_matches_channels_first():
    rng = _rng(6)
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 5)
    img_t = rng.standard_normal((5, 2, 8, 8)).astype(np.float32)
    pydl.seed(3)
    cf = _branchy("channels_first")
    cl = _branchy("channels_last")
    cl.set_weights(cf.get_weights())
    for m in (cf, cl):
        m.compile(loss=["sparse_categorical_crossentropy", "mse"], optimizer=pydl.optimizers.SGD(0.1))
    p_cf, i_cf = cf.predict(x)
    p_cl, i_cl = cl.predict(_nhwc(x))
    np.testing.assert_allclose(p_cl, p_cf, **TOL)
    np.testing.assert_allclose(i_cl, _nhwc(i_cf), **TOL)
    l_cf, dx_cf, g_cf = _grads(cf, x, [labels, img_t])
    l_cl, dx_cl, g_cl = _grads(cl, _nhwc(x), [labels, _nhwc(img_t)])
    assert l_cl == pytest.approx(l_cf, rel=1e-5)
    np.testing.assert_allclose(dx_cl, _nhwc(dx_cf), rtol=1e-4, atol=1e-5)
    for name in g_cf:
        assert set(g_cf[name]) == set(g_cl[name])
        for k in g_cf[name]:
            np.testing.assert_allclose(g_cl[name][k], g_cf[name][k], rtol=1e-4, atol=1e-5, err_msg=f"{name}/{k}")
    h_cf = cf.fit(x, [labels, img_t], epochs=2, batch_size=5, verbose=0, shuffle=False)
    h_cl = cl.fit(_nhwc(x), [labels, _nhwc(img_t)], epochs=2, batch_size=5, verbose=0, shuffle=False)
    np.testing.assert_allclose(h_cl.history["loss"], h_cf.history["loss"], rtol=1e-5)
    for a, b in zip(cl.get_weights(), cf.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # the layouts: one transpose in, one before Flatten, one for the image output; Concatenate on
    # channels, element-wise layers and BatchNormalization run on the NCHW arrays
    kinds = [type(step[0]).__name__ for step in cl._plan]
    assert kinds.count("LayoutTranspose") == 3, kinds
    assert "LayoutTranspose" not in [type(step[0]).__name__ for step in cf._plan]


def test_model_channels_last_gradcheck():
    inp = pydl.Input((6, 5, 2))
    x = L.Conv2D(3, 3, padding="same", data_format="channels_last")(inp)
    x = L.BatchNormalization(axis=-1)(x)
    x = L.Concatenate()([L.ReLU()(x), x])
    x = L.AveragePooling2D(2, data_format="channels_last")(x)
    out = L.Dense(2)(L.Flatten()(x))
    model = pydl.Model(inp, [out, x])
    pydl.gradcheck(model, _rng(7).standard_normal((3, 6, 5, 2)), rtol=1e-4, atol=1e-6)


def _blobs(n, shape_hw, channels, classes, seed, channels_last=True):
    """Images whose class decides where a bright blob sits (and its colour): learnable, not trivial."""
    rng = _rng(seed)
    h, w = shape_hw
    y = rng.integers(0, classes, n)
    yy, xx = np.mgrid[0:h, 0:w]
    grid = int(np.ceil(np.sqrt(classes)))
    x = rng.standard_normal((n, h, w, channels)).astype(np.float32) * 0.3
    for i in range(n):
        r, c = divmod(int(y[i]), grid)
        cy = (r + 0.5) * h / grid + rng.normal(0, 1.0)
        cx = (c + 0.5) * w / grid + rng.normal(0, 1.0)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
        for ch in range(channels):
            x[i, :, :, ch] += blob * (1.0 + 0.5 * ((int(y[i]) + ch) % 2))
    return (x if channels_last else _nchw(x)), y


def test_keras_mnist_convnet_channels_last_learns():
    pydl.set_image_data_format("channels_last")
    pydl.seed(0)
    x, y = _blobs(640, (28, 28), 1, 10, seed=8)
    xt, yt = _blobs(200, (28, 28), 1, 10, seed=9)
    model = pydl.Sequential([
        pydl.Input(shape=(28, 28, 1)),
        L.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(),
        L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ])
    assert model.output_shape == (None, 10)
    assert model.layers[2].output_shape == (None, 11, 11, 64)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    acc = model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]
    assert acc > 0.5, acc  # chance is 0.1
    kinds = [type(step[0]).__name__ for step in model._plan]
    assert kinds.count("LayoutTranspose") == 2, kinds  # at the input and before Flatten only


def test_cifar_style_channels_last_cnn_trains():
    pydl.set_image_data_format("channels_last")
    pydl.seed(1)
    x, y = _blobs(384, (32, 32), 3, 4, seed=10)
    model = pydl.Sequential([
        L.Conv2D(16, 3, padding="same", input_shape=(32, 32, 3)),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.MaxPooling2D(),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.BatchNormalization(),
        L.MaxPooling2D(),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(4, activation="softmax"),
    ])
    assert [l.data_format for l in model.layers if hasattr(l, "data_format")] == ["channels_last"] * 6
    assert [l.axis for l in model.layers if isinstance(l, L.BatchNormalization)] == [-1, -1]
    model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(0.01),
                  metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    assert hist.history["loss"][-1] < 0.7 * hist.history["loss"][0], hist.history["loss"]
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] > 0.5  # chance is 0.25
    kinds = [type(step[0]).__name__ for step in model._plan]
    assert kinds.count("LayoutTranspose") == 1, kinds  # global pooling ends the image part


def test_save_load_and_json_keep_data_format(tmp_path):
    pydl.set_image_data_format("channels_last")
    pydl.seed(2)
    model = pydl.Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(10, 10, 3)), L.BatchNormalization(),
                             L.MaxPooling2D(), L.Flatten(), L.Dense(2)])
    model.compile(loss="mse", optimizer="sgd")
    x = _rng(11).standard_normal((4, 10, 10, 3)).astype(np.float32)
    model.fit(x, np.zeros((4, 2), np.float32), epochs=1, verbose=0)
    want = model.predict(x)
    path = tmp_path / "m.pydl"
    model.save(path)
    pydl.set_image_data_format("channels_first")
    for again in (pydl.load_model(path), pydl.model_from_json(model.to_json()), pydl.clone_model(model)):
        assert again.layers[0].data_format == "channels_last" and again.layers[2].data_format == "channels_last"
        assert again.layers[1].axis == -1
        assert again.input_shape == (None, 10, 10, 3)
    loaded = pydl.load_model(path)
    np.testing.assert_allclose(loaded.predict(x), want, rtol=1e-6, atol=1e-6)
    cfg = json.loads(model.to_json())
    text = json.dumps(cfg)
    assert '"data_format": "channels_last"' in text and '"axis": -1' in text


# -- errors with the fix in the message --------------------------------------------------------------
def test_keras_order_declared_on_a_channels_first_model():
    for shape in ((28, 28, 1), (32, 32, 3)):
        with pytest.raises(ValueError) as err:
            pydl.Sequential([L.Conv2D(32, 3, input_shape=shape), L.Flatten(), L.Dense(10)])
        msg = str(err.value)
        for part in ("looks channels-last", 'data_format="channels_last"',
                     'pydl.set_image_data_format("channels_last")', "x.transpose(0, 3, 1, 2)",
                     f"input_shape=({shape[2]}, {shape[0]}, {shape[1]})"):
            assert part in msg, (part, msg)
    with pytest.raises(ValueError, match="looks channels-last"):
        L.MaxPooling2D()(pydl.Input((28, 28, 1)))
    with pytest.raises(ValueError, match="looks channels-last.*x.transpose"):  # called by hand on data
        L.Conv2D(4, 3)(np.zeros((2, 32, 32, 3), np.float32))
    # an explicit channels_first, or a shape that is not Keras-like, is taken as it is
    ok = pydl.Sequential([L.Conv2D(2, 3, input_shape=(28, 28, 1), data_format="channels_first", padding="same")])
    assert ok.output_shape == (None, 2, 28, 1)
    assert pydl.Sequential([L.Conv2D(2, 3, input_shape=(3, 32, 32))]).output_shape == (None, 2, 30, 30)
    assert not layout.looks_channels_last((None, 64, 4, 4))
    pydl.set_image_data_format("channels_last")
    assert pydl.Sequential([L.Conv2D(2, 3, input_shape=(28, 28, 1))]).output_shape == (None, 26, 26, 2)


def test_transposed_data_rejected_before_any_kernel(monkeypatch):
    calls = []
    real = L.Conv2D._forward

    def counting(self, *a, **k):
        calls.append(self.name)
        return real(self, *a, **k)

    monkeypatch.setattr(L.Conv2D, "_forward", counting)
    cf = pydl.Sequential([L.Conv2D(2, 3, input_shape=(1, 12, 12)), L.Flatten(), L.Dense(2)])
    cl = pydl.Sequential([L.Conv2D(2, 3, input_shape=(12, 12, 1), data_format="channels_last"), L.Flatten(),
                          L.Dense(2)])
    for m in (cf, cl):
        m.compile(loss="mse", optimizer="sgd")
    y = np.zeros((3, 2), np.float32)
    nhwc = np.zeros((3, 12, 12, 1), np.float32)
    nchw = np.zeros((3, 1, 12, 12), np.float32)
    w_before = [w.copy() for w in cf.get_weights()]
    for call in (lambda: cf.fit(nhwc, y, verbose=0), lambda: cf.evaluate(nhwc, y), lambda: cf.predict(nhwc)):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert "looks channels-last" in msg and "x.transpose(0, 3, 1, 2)" in msg and "(3, 12, 12, 1)" in msg, msg
        assert 'data_format="channels_last"' in msg
    for call in (lambda: cl.fit(nchw, y, verbose=0), lambda: cl.evaluate(nchw, y), lambda: cl.predict(nchw)):
        with pytest.raises(ValueError, match=r"looks channels-first.*x\.transpose\(0, 2, 3, 1\)"):
            call()
    assert calls == []
    for a, b in zip(cf.get_weights(), w_before):
        np.testing.assert_array_equal(a, b)
    cl.predict(nhwc)
    assert calls == [cl.layers[0].name]


def test_configs_without_format_load_as_channels_first():
    """A model saved before data_format / axis existed keeps its NCHW meaning under any default."""
    pydl.seed(4)
    model = pydl.Sequential([L.Conv2D(3, 3, input_shape=(2, 9, 9)), L.BatchNormalization(), L.MaxPool2D(),
                             L.GlobalAveragePooling2D(), L.Dense(2)])
    x = _rng(15).standard_normal((3, 2, 9, 9)).astype(np.float32)
    want = model.predict(x)
    cfg = json.loads(model.to_json())

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("data_format", "axis")}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    old = json.dumps(strip(cfg))
    assert "data_format" not in old
    pydl.set_image_data_format("channels_last")
    again = pydl.model_from_json(old)
    assert again.layers[0].data_format == "channels_first" and again.layers[1].axis == 1
    assert again.input_shape == (None, 2, 9, 9)
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(again.predict(x), want, rtol=1e-6, atol=1e-6)


def test_summary_and_layers_hide_layout_steps():
    pydl.set_image_data_format("channels_last")
    model = pydl.Sequential([L.Conv2D(2, 3, input_shape=(10, 10, 3)), L.Flatten(), L.Dense(2)])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "(None, 8, 8, 2)" in text and "LayoutTranspose" not in text
    assert [type(l).__name__ for l in model.layers] == ["Conv2D", "Flatten", "Dense"]


def test_keras_positional_data_format_is_not_taken_silently():
    # Keras: AveragePooling2D(pool_size, strides, padding, data_format); pydl's 4th is count_include_pad
    with pytest.raises(ValueError, match="count_include_pad.*data_format is a keyword"):
        L.AveragePooling2D(2, 2, "valid", "channels_last")
    with pytest.raises(ValueError, match="interpolation.*data_format is a keyword"):
        L.UpSampling2D(2, "channels_last")
    assert L.MaxPooling2D(2, 2, "valid", "channels_last").data_format == "channels_last"  # Keras' order
    assert L.GlobalAveragePooling2D("channels_last").data_format == "channels_last"


def test_subclassed_and_nested_channels_last_models():
    class Net(pydl.Model):
        def __init__(self, fmt):
            super().__init__()
            self.conv = L.Conv2D(3, 3, padding="same", activation="relu", data_format=fmt)
            self.pool = L.MaxPooling2D(2, data_format=fmt)
            self.flat = L.Flatten(data_format=fmt)
            self.out = L.Dense(2)

        def call(self, x):
            return self.out(self.flat(self.pool(self.conv(x))))

    x = _rng(16).standard_normal((4, 2, 6, 6)).astype(np.float32)
    cf, cl = Net("channels_first"), Net("channels_last")
    cf.build((None, 2, 6, 6))
    cl.build((None, 6, 6, 2))
    cl.set_weights(cf.get_weights())
    np.testing.assert_allclose(cl.predict(_nhwc(x)), cf.predict(x), **TOL)
    # the channels-last model used as a layer of another graph: its nodes join that graph's plan
    inp = pydl.Input((6, 6, 2))
    outer = pydl.Model(inp, L.Dense(1)(cl(L.Activation("tanh")(inp))))
    kinds = [type(step[0]).__name__ for step in outer._plan]
    assert kinds.count("LayoutTranspose") == 2, kinds
    via_parts = outer.layers[-1](cl.predict(np.tanh(_nhwc(x))))
    assert via_parts.shape == (4, 1)
    np.testing.assert_allclose(outer.predict(_nhwc(x)), via_parts, **TOL)
