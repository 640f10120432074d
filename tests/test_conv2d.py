import numpy as np
import pytest

import pydl
import pydl.optimizers
from pydl import _core, ops
from pydl.layers import Conv2D
from gradcheck import check_grad, numerical_grad
from reference_conv import conv2d_backward_ref, conv2d_ref

ALGOS = ["naive", "direct", "im2col", "winograd_f2", "winograd_f4"]
# float32 error relative to max |reference| (F(4x4) transforms amplify rounding ~10x)
TOL32 = {"naive": 1e-5, "direct": 2e-5, "im2col": 2e-5, "winograd_f2": 2e-5, "winograd_f4": 2e-4}

# (N, C, H, W, K, R, S, stride, pads (t, b, l, r), dilation)
CONFIGS = [
    (1, 1, 5, 5, 1, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1)),
    (2, 3, 8, 7, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 5, 9, 10, 6, 3, 3, (1, 1), (0, 2, 1, 0), (1, 1)),
    (2, 17, 13, 11, 19, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 9, 6, 6, 33, 3, 3, (1, 1), (2, 2, 2, 2), (1, 1)),
    (2, 4, 11, 12, 5, 2, 3, (2, 1), (0, 1, 2, 0), (1, 2)),
    (2, 3, 12, 9, 4, 3, 3, (3, 2), (2, 1, 0, 1), (2, 1)),
    (1, 6, 10, 10, 7, 5, 1, (2, 3), (2, 2, 0, 0), (1, 1)),
    (4, 2, 7, 8, 3, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (2, 8, 9, 9, 10, 1, 1, (2, 2), (1, 0, 0, 1), (1, 1)),
    (1, 12, 20, 23, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 3, 17, 5, 2, 4, 2, (1, 1), (0, 0, 0, 0), (3, 2)),
    (2, 8, 37, 70, 9, 3, 3, (1, 1), (1, 0, 2, 1), (1, 1)),  # several 16-tile groups per row
]


def _applies(algo, R, S, st, dl):
    return not algo.startswith("winograd") or ((R, S) == (3, 3) and st == (1, 1) and dl == (1, 1))


def _cases():
    for i, cfg in enumerate(CONFIGS):
        for algo in ALGOS:
            if _applies(algo, cfg[5], cfg[6], cfg[7], cfg[9]):
                yield pytest.param(cfg, algo, id=f"cfg{i}-{algo}")


def _data(cfg, dtype, seed=0):
    N, C, H, W, K, R, S = cfg[:7]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def _rel(got, ref):
    return np.max(np.abs(np.asarray(got, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30)


def _call(x, w, b, cfg, algo, **kw):
    return ops.conv2d(x, w, b, stride=cfg[7], padding=cfg[8], dilation=cfg[9], algo=algo, **kw)


@pytest.mark.parametrize("cfg,algo", list(_cases()))
def test_forward_backward_float32_vs_reference(cfg, algo):
    x, w, b = _data(cfg, np.float32)
    ref = conv2d_ref(x, w, b, cfg[7], cfg[8], cfg[9])
    out = np.full(ref.shape, np.nan, np.float32)  # poison: unwritten outputs show as NaN
    y = _call(x, w, b, cfg, algo, out=out)
    assert y is out and y.dtype == np.float32
    assert not np.isnan(y).any()
    assert _rel(y, ref) <= TOL32[algo]
    dy = np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32)
    dxr, dwr, dbr = conv2d_backward_ref(dy, x, w, cfg[7], cfg[8], cfg[9])
    pois = [np.full(a.shape, np.nan, np.float32) for a in (dxr, dwr, dbr)]
    dx, dw, db = _core.conv2d_backward(dy, x, w, cfg[7], cfg[8], cfg[9], algo, True, True, *pois)
    for got, want in ((dx, dxr), (dw, dwr), (db, dbr)):
        assert not np.isnan(got).any()
        assert _rel(got, want) <= TOL32[algo]


@pytest.mark.parametrize("cfg,algo", [c for c in _cases() if c.values[0] in CONFIGS[1:7:2]])
def test_float64_is_exact(cfg, algo):
    x, w, b = _data(cfg, np.float64)
    ref = conv2d_ref(x, w, b, cfg[7], cfg[8], cfg[9])
    y = _call(x, w, b, cfg, algo)
    assert y.dtype == np.float64
    assert _rel(y, ref) <= 1e-12
    dy = np.random.default_rng(2).standard_normal(ref.shape)
    got = ops.conv2d_backward(dy, x, w, cfg[7], cfg[8], cfg[9], algo=algo)
    for g, r in zip(got, conv2d_backward_ref(dy, x, w, cfg[7], cfg[8], cfg[9])):
        assert _rel(g, r) <= 1e-12


@pytest.mark.parametrize("algo", ["direct", "im2col", "winograd_f2", "winograd_f4"])
def test_finite_difference_gradients(algo):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    b = rng.standard_normal(2)
    g = rng.standard_normal((2, 2, 5, 6))  # loss = sum(y * g), padding "same"

    def loss():
        return float(np.sum(ops.conv2d(x, w, b, padding="same", algo=algo) * g))

    dx, dw, db = ops.conv2d_backward(g, x, w, padding="same", algo=algo)
    check_grad(dx, numerical_grad(loss, x))
    check_grad(dw, numerical_grad(loss, w))
    check_grad(db, numerical_grad(loss, b))


def test_finite_difference_strided_dilated():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 7, 8))
    w = rng.standard_normal((3, 2, 2, 3))
    g = rng.standard_normal(ops.conv2d_output_shape(x.shape, w.shape, (2, 1), (1, 0, 2, 1), (2, 2)))

    def loss():
        return float(np.sum(ops.conv2d(x, w, None, (2, 1), (1, 0, 2, 1), (2, 2)) * g))

    dx, dw, db = ops.conv2d_backward(g, x, w, (2, 1), (1, 0, 2, 1), (2, 2), has_bias=False)
    assert db is None
    check_grad(dx, numerical_grad(loss, x))
    check_grad(dw, numerical_grad(loss, w))


@pytest.mark.parametrize("m,tol", [("winograd_f2", 1e-6), ("winograd_f4", 1e-5)])
def test_winograd_accuracy_c64(m, tol):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)
    w = (rng.standard_normal((16, 64, 3, 3)) / 24).astype(np.float32)
    ref = conv2d_ref(x, w, None, (1, 1), (1, 1, 1, 1))
    y = ops.conv2d(x, w, padding=1, algo=m)
    rel_rms = np.sqrt(np.mean((y - ref) ** 2) / np.mean(ref ** 2))
    assert rel_rms <= tol, rel_rms


@pytest.mark.parametrize("algo", ["direct", "im2col", "winograd_f2", "winograd_f4"])
def test_threads_1_and_2(threads, algo):
    x, w, b = _data((5, 16, 15, 14, 12, 3, 3), np.float32, seed=6)
    ref = conv2d_ref(x, w, b, (1, 1), (1, 1, 1, 1))
    y = ops.conv2d(x, w, b, padding=1, algo=algo)
    assert _rel(y, ref) <= TOL32[algo]
    dy = np.ones_like(y)
    dx, dw, db = ops.conv2d_backward(dy, x, w, padding=1, algo=algo)
    for got, want in zip((dx, dw, db), conv2d_backward_ref(dy, x, w, (1, 1), (1, 1, 1, 1))):
        assert _rel(got, want) <= TOL32[algo]


def test_single_image_uses_threaded_paths(threads):
    x, w, b = _data((1, 24, 30, 31, 20, 3, 3), np.float32, seed=7)
    ref = conv2d_ref(x, w, b, (1, 1), (1, 1, 1, 1))
    for algo in ("direct", "im2col", "winograd_f2"):
        assert _rel(ops.conv2d(x, w, b, padding=1, algo=algo), ref) <= TOL32[algo]


def test_same_padding_shapes_and_values():
    x, w, b = _data((1, 2, 9, 10, 3, 3, 3), np.float64)
    assert ops.conv2d(x, w, padding="same").shape == (1, 3, 9, 10)
    # stride 2: ceil(9/2) = 5, ceil(10/2) = 5; TF puts the odd padding pixel after
    y = ops.conv2d(x, w, b, stride=2, padding="same")
    assert y.shape == (1, 3, 5, 5)
    np.testing.assert_allclose(y, conv2d_ref(x, w, b, (2, 2), (1, 1, 0, 1)), atol=1e-12)
    assert ops.conv2d(x, w, padding="valid").shape == (1, 3, 7, 8)
    assert ops.conv2d(x, w, padding=((0, 2), (1, 0))).shape == (1, 3, 9, 9)


@pytest.mark.parametrize("isa", _core.available_isas())
@pytest.mark.parametrize("size", [9, 21], ids=["narrow", "wide"])  # rows narrower / wider than a vector
def test_fused_relu_and_nan_propagation(isa, size):
    x, w, b = _data((2, 8, size, size, 8, 3, 3), np.float32)
    old = _core.selected_isa()
    try:
        _core.select_isa(isa)
        for algo in ("direct", "im2col", "winograd_f2", "winograd_f4", "naive"):
            lin = ops.conv2d(x, w, b, padding=1, algo=algo)
            rel = ops.conv2d(x, w, b, padding=1, algo=algo, activation="relu")
            np.testing.assert_array_equal(rel, np.maximum(lin, 0), err_msg=algo)
            np.testing.assert_allclose(lin, conv2d_ref(x, w, b, (1, 1), (1, 1, 1, 1)), rtol=1e-4, atol=1e-4,
                                       err_msg=algo)
            xn = x.copy()
            xn[1, 3, 4, 4] = np.nan
            yn = ops.conv2d(xn, w, b, padding=1, algo=algo, activation="relu")
            assert np.isnan(yn[1, :, 4, 4]).all(), algo  # NaN reaches every channel it touches
            assert not np.isnan(yn[0]).any()
    finally:
        _core.select_isa(old)


def test_auto_algorithm_rule():
    from pydl.ops.conv import auto_rule
    rule = auto_rule()  # the running ISA and thread count (tests/test_conv2d_auto.py covers every row)
    f4 = rule["f4_min_out"]
    assert ops.conv2d_algo((8, 1, 28, 28), (32, 1, 3, 3), 1, 1) == "direct"
    assert ops.conv2d_algo((8, 64, f4, f4), (64, 64, 3, 3), 1, 1) == "winograd_f4"
    assert ops.conv2d_algo((8, 64, f4 - 1, f4 - 1), (64, 64, 3, 3), 1, 1) == "winograd_f2"
    assert ops.conv2d_algo((8, 64, 56, 56), (64, 64, 3, 3), 2, 1) == "im2col"
    assert ops.conv2d_algo((8, 64, 56, 56), (64, 64, 5, 5), 1, 2) == "im2col"
    assert ops.conv2d_algo((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, algo="winograd") == "winograd_f4"
    assert ops.conv2d_algo((8, 64, 12, 12), (64, 64, 3, 3), 1, 1, algo="winograd") == "winograd_f2"
    assert ops.conv2d_algo((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, algo="winograd_f4") == "winograd_f4"


def test_auto_avoids_the_direct_padded_copy_when_padding_dwarfs_the_image():
    # padding="same" with a huge dilation pads an 8x8 image by 2^20 on each side: the direct loops'
    # padded copy would be terabytes, im2col's columns are 9 x 64 (every far tap reads zero).
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    for dl in (2**13, 2**20):
        algo, why = ops.conv2d_explain(x.shape, w.shape, dilation=dl, padding="same")
        assert algo == "im2col" and "padded copy" in why
        y = ops.conv2d(x, w, dilation=dl, padding="same")
        np.testing.assert_allclose(y, ops.conv2d(x, w, dilation=dl, padding="same", algo="naive"), rtol=1e-5, atol=1e-6)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        got = ops.conv2d_backward(dy, x, w, dilation=dl, padding="same")
        want = ops.conv2d_backward(dy, x, w, dilation=dl, padding="same", algo="naive")
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    # the centre tap alone sees the image: y = w[:, :, 1, 1] x
    np.testing.assert_allclose(y, np.einsum("kc,nchw->nkhw", w[:, :, 1, 1], x), rtol=1e-5, atol=1e-6)
    # ordinary small images keep the direct loops
    assert ops.conv2d_algo((8, 1, 28, 28), (32, 1, 3, 3), 1, 1) == "direct"
    assert ops.conv2d_algo((8, 1, 5, 5), (32, 1, 3, 3), 1, 1) == "direct"


def test_vs_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    for (N, C, H, W, K, R, S, st, pad, dl) in [(2, 3, 12, 11, 5, 3, 3, 1, 1, 1), (2, 16, 10, 10, 8, 3, 3, 1, 1, 1),
                                               (1, 4, 13, 9, 6, 3, 2, 2, 1, 2), (3, 5, 8, 8, 4, 1, 1, 1, 0, 1)]:
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((K, C, R, S)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        tx = torch.tensor(x, requires_grad=True)
        tw = torch.tensor(w, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True)
        ty = F.conv2d(tx, tw, tb, stride=st, padding=pad, dilation=dl)
        dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
        ty.backward(torch.tensor(dy))
        y = ops.conv2d(x, w, b, st, pad, dl)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
        dx, dw, db = ops.conv2d_backward(dy, x, w, st, pad, dl)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-4, atol=2e-4)
        np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_zero_size_batch():
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    for algo in ("direct", "im2col", "winograd_f2", "naive"):
        y = ops.conv2d(x, w, np.ones(4, np.float32), padding=1, algo=algo)
        assert y.shape == (0, 4, 8, 8)
        dx, dw, db = ops.conv2d_backward(y, x, w, padding=1, algo=algo)
        assert dx.shape == (0, 3, 8, 8)
        np.testing.assert_array_equal(dw, 0)
        np.testing.assert_array_equal(db, 0)


def test_noncontiguous_and_int_inputs():
    x, w, b = _data((2, 3, 8, 8, 4, 3, 3), np.float32)
    xt = np.asfortranarray(x)[:, :, ::-1, :]
    y = ops.conv2d(xt, w, b, padding=1)
    np.testing.assert_allclose(y, conv2d_ref(x[:, :, ::-1, :], w, b, (1, 1), (1, 1, 1, 1)), rtol=1e-4, atol=1e-4)
    yi = ops.conv2d(np.ones((1, 1, 4, 4), np.int64), np.ones((1, 1, 3, 3), np.float32))
    assert yi.dtype == np.float32 and np.all(yi == 9)


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=(1, 3, 2, 2), w=(4, 3, 3, 3)), "larger than the padded input"),
    (dict(stride=0), "stride must be >= 1"),
    (dict(dilation=0), "dilation must be >= 1"),
    (dict(padding=-1), "padding must be >= 0"),
    (dict(padding="full"), "padding must be"),
    (dict(w=(4, 2, 3, 3)), "channel mismatch"),
    (dict(b=5), r"b has shape \(5,\), expected \(4,\)"),
    (dict(x=(3, 8, 8)), "expected 4"),
    (dict(x=(2, 8, 8, 3)), "channels-last"),
    (dict(algo="winograd", w=(4, 3, 5, 5)), "needs a 3x3 filter"),
    (dict(algo="winograd_f4", stride=2), "needs a 3x3 filter"),
    (dict(algo="fft"), "unknown algo"),
])
def test_bad_input(kwargs, match):
    kw = dict(x=(2, 3, 8, 8), w=(4, 3, 3, 3), b=4, stride=1, padding=0, dilation=1, algo="auto")
    kw.update(kwargs)
    x = np.ones(kw.pop("x"), np.float32)
    w = np.ones(kw.pop("w"), np.float32)
    b = np.ones(kw.pop("b"), np.float32)
    with pytest.raises(ValueError, match=match):
        ops.conv2d(x, w, b, **kw)


def test_bad_dtypes_and_buffers():
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="one dtype"):
        ops.conv2d(x, w.astype(np.float64))
    with pytest.raises(ValueError, match="out has shape"):
        ops.conv2d(x, w, out=np.empty((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="out has dtype float64, expected float32"):
        ops.conv2d(x, w, out=np.empty((1, 3, 3, 3), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.conv2d(x, w, out=np.empty((1, 3, 3, 6), np.float32)[..., ::2])
    with pytest.raises(ValueError, match="activation"):
        ops.conv2d(x, w, activation="gelu")
    with pytest.raises(ValueError, match="dy has shape"):
        ops.conv2d_backward(np.ones((1, 3, 4, 4), np.float32), x, w)
    with pytest.raises(TypeError):
        ops.conv2d(np.array([["a"]]), w)
    # the binding itself rejects what the wrapper would have converted
    with pytest.raises(ValueError, match="dtype float32"):
        _core.conv2d_forward(x, w.astype(np.float64), None, None, (1, 1), (0, 0, 0, 0), (1, 1), "im2col")
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.conv2d_forward(np.ones((1, 2, 5, 10), np.float32)[..., ::2], w, None, None, (1, 1), (0, 0, 0, 0),
                             (1, 1), "im2col")


# ---- layer -------------------------------------------------------------------------------------

def test_conv2d_layer_forward_backward_config():
    pydl.seed(0)
    layer = Conv2D(6, (3, 3), padding="same", activation="relu", input_shape=(3, 10, 9))
    layer.build((None, 3, 10, 9))
    assert layer.params["W"].shape == (6, 3, 3, 3) and layer.params["b"].shape == (6,)
    assert layer.algo_used == ops.conv2d_algo((1, 3, 10, 9), (6, 3, 3, 3), padding="same")
    assert layer.output_shape == (None, 6, 10, 9)
    assert layer.flops() == 2 * 6 * 3 * 9 * 10 * 9
    x = np.random.default_rng(9).standard_normal((4, 3, 10, 9)).astype(np.float32)
    layer.params["b"][:] = 0.1
    y = layer.forward(x, training=True)
    ref = np.maximum(conv2d_ref(x, layer.params["W"], layer.params["b"], (1, 1), (1, 1, 1, 1)), 0)
    assert _rel(y, ref) <= 1e-5
    dy = np.random.default_rng(10).standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    dz = dy * (ref > 0)
    dxr, dwr, dbr = conv2d_backward_ref(dz, x, layer.params["W"], (1, 1), (1, 1, 1, 1))
    assert _rel(dx, dxr) <= 1e-5 and _rel(layer.grads["W"], dwr) <= 1e-5 and _rel(layer.grads["b"], dbr) <= 1e-5
    cfg = layer.get_config()
    clone = Conv2D.from_config(cfg)
    assert clone.get_config() == cfg
    with pytest.raises(ValueError, match="channels-last"):
        layer.forward(np.ones((4, 10, 9, 3), np.float32))


def test_conv2d_layer_other_activation_and_algo():
    layer = Conv2D(8, 3, strides=1, padding=1, activation="tanh", algo="winograd_f4", use_bias=False)
    x = np.random.default_rng(11).standard_normal((2, 8, 8, 8)).astype(np.float32)
    y = layer(x)
    assert layer.algo_used == "winograd_f4" and "b" not in layer.params
    ref = np.tanh(conv2d_ref(x, layer.params["W"], None, (1, 1), (1, 1, 1, 1)))
    assert _rel(y, ref) <= 1e-4
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape
    with pytest.raises(ValueError, match="needs a 3x3"):
        Conv2D(4, 5, algo="winograd").build((None, 3, 9, 9))
    with pytest.raises(ValueError, match="NCHW"):
        Conv2D(4, 3).build((None, 9, 9))


def test_small_cnn_trains():
    model_mod = pytest.importorskip("pydl.model")
    from pydl.layers import Dense, Flatten, MaxPool2D

    pydl.seed(1)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    labels = (x[:, 0, :4].sum(axis=(1, 2)) > x[:, 0, 4:].sum(axis=(1, 2))).astype(np.int64)
    model = model_mod.Sequential([Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 8, 8)),
                                  MaxPool2D(2), Flatten(), Dense(2, activation="softmax")])
    model.compile(optimizer=pydl.optimizers.Adam(learning_rate=0.02), loss="sparse_categorical_crossentropy")
    hist = model.fit(x, labels, epochs=40, batch_size=16, verbose=0)
    losses = hist.history["loss"] if hasattr(hist, "history") else hist["loss"]
    assert losses[-1] < 0.6 * losses[0], losses


def test_cnn_save_load_round_trip(tmp_path):
    from pydl.layers import AvgPool2D, Dense, GlobalAveragePooling2D, MaxPool2D
    from pydl.model import Sequential, load_model

    pydl.seed(2)
    model = Sequential([Conv2D(4, 3, padding=(1, 1), activation="relu", input_shape=(1, 8, 8)), MaxPool2D(2),
                        Conv2D(6, 3, padding="same", algo="winograd"), AvgPool2D(2, padding="same"),
                        GlobalAveragePooling2D(), Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(13).random((4, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "cnn.npz"
    model.save(str(path))
    clone = load_model(str(path))
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    assert [type(l).__name__ for l in clone.layers][:2] == ["Conv2D", "MaxPool2D"]


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_every_isa_build_agrees(isa):
    """The per-ISA builds of the kernels (forced with PYDL_ISA) against the naive loops."""
    import os
    import subprocess
    import sys

    if isa not in _core.available_isas():
        pytest.skip(f"CPU lacks {isa}")
    code = r"""
import numpy as np
from pydl import ops
rng = np.random.default_rng(0)
worst = 0.0
for (N, C, H, W, K) in [(2, 3, 9, 37, 5), (3, 16, 14, 14, 20)]:
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    ref = ops.conv2d(x, w, b, padding=1, algo="naive")
    dy = rng.standard_normal(ref.shape).astype(np.float32)
    gref = ops.conv2d_backward(dy, x, w, padding=1, algo="naive")
    for algo in ("direct", "im2col", "winograd_f2", "winograd_f4"):
        y = ops.conv2d(x, w, b, padding=1, algo=algo, activation="relu")
        worst = max(worst, np.abs(y - np.maximum(ref, 0)).max() / np.abs(ref).max())
        for g, r in zip(ops.conv2d_backward(dy, x, w, padding=1, algo=algo), gref):
            worst = max(worst, np.abs(g - r).max() / np.abs(r).max())
# direct's other code paths: a filter width other than 3, and strided / dilated columns
for (R, S, st, dil) in [(2, 5, 1, 1), (3, 3, 2, 1), (3, 2, (1, 2), (2, 3))]:
    x = rng.standard_normal((2, 3, 11, 40)).astype(np.float32)
    w = rng.standard_normal((9, 3, R, S)).astype(np.float32)
    ref = ops.conv2d(x, w, None, stride=st, padding=1, dilation=dil, algo="naive")
    y = ops.conv2d(x, w, None, stride=st, padding=1, dilation=dil, algo="direct")
    worst = max(worst, np.abs(y - ref).max() / np.abs(ref).max())
xp = rng.permutation(4 * 6 * 40).reshape(1, 4, 6, 40).astype(np.float32)
y, am = ops.max_pool2d(xp, 2)
ops.max_pool2d(xp, 3, 1)
ok = np.array_equal(y, xp.reshape(1, 4, 3, 2, 20, 2).max(axis=(3, 5)))
print(worst, ok)
"""
    env = dict(os.environ, PYDL_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    worst, ok = out.stdout.split()
    assert float(worst) < 2e-4 and ok == "True", out.stdout
