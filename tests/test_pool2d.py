import numpy as np
import pytest

from pydl import _core, ops
from pydl.layers import AvgPool2D, GlobalAveragePooling2D, MaxPool2D
from gradcheck import check_grad, numerical_grad
from reference_conv import (avg_pool2d_backward_ref, avg_pool2d_ref, max_pool2d_backward_ref,
                                  max_pool2d_ref)

# (N, C, H, W, pool, stride, pads (t, b, l, r))
CONFIGS = [
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0, 0, 0)),
    (1, 4, 9, 7, (2, 2), (2, 2), (0, 1, 0, 1)),
    (2, 2, 10, 11, (3, 3), (2, 2), (1, 1, 1, 1)),
    (1, 3, 7, 9, (3, 2), (1, 2), (0, 2, 1, 0)),
    (3, 1, 5, 6, (1, 1), (1, 1), (0, 0, 0, 0)),
    (1, 2, 12, 13, (4, 3), (3, 4), (2, 3, 1, 2)),
    (2, 5, 6, 6, (6, 6), (1, 1), (0, 0, 0, 0)),
    (2, 3, 6, 42, (2, 2), (2, 2), (0, 0, 0, 0)),  # vector path with an overlapping last block
    (1, 2, 4, 65, (2, 2), (2, 2), (0, 0, 0, 0)),
]


def _tie_free(shape, dtype, seed=0):
    """Distinct values, so the maximum of each window is unique."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_max_pool_vs_reference(cfg, dtype):
    N, C, H, W, pool, st, pads = cfg
    x = _tie_free((N, C, H, W), dtype)
    yr, ar = max_pool2d_ref(x, pool, st, pads)
    out = np.full(yr.shape, np.nan, dtype)
    for naive in (False, True):
        am_out = np.full(yr.shape, -7, np.int32)
        y, am = _core.max_pool2d_forward(x, pool, st, pads, True, naive, out, am_out)
        assert y is out and am is am_out
        np.testing.assert_array_equal(y, yr)
        np.testing.assert_array_equal(am, ar)
    y2, am2 = ops.max_pool2d(x, pool, st, pads)
    np.testing.assert_array_equal(y2, yr)
    y3, none = ops.max_pool2d(x, pool, st, pads, return_argmax=False)
    assert none is None
    np.testing.assert_array_equal(y3, yr)
    dy = np.random.default_rng(1).standard_normal(yr.shape).astype(dtype)
    dx = ops.max_pool2d_backward(dy, am2, x.shape)
    np.testing.assert_allclose(dx, max_pool2d_backward_ref(dy, ar, x.shape), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_avg_pool_vs_reference(cfg, cip):
    N, C, H, W, pool, st, pads = cfg
    x = np.random.default_rng(2).standard_normal((N, C, H, W)).astype(np.float32)
    yr = avg_pool2d_ref(x, pool, st, pads, cip)
    for naive in (False, True):
        out = np.full(yr.shape, np.nan, np.float32)
        y = _core.avg_pool2d_forward(x, pool, st, pads, cip, naive, out)
        assert y is out
        np.testing.assert_allclose(y, yr, rtol=1e-5, atol=1e-6)
    dy = np.random.default_rng(3).standard_normal(yr.shape).astype(np.float32)
    dxr = avg_pool2d_backward_ref(dy, x.shape, pool, st, pads, cip)
    np.testing.assert_allclose(ops.avg_pool2d_backward(dy, x.shape, pool, st, pads, cip), dxr, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_core.avg_pool2d_backward(dy, list(x.shape), pool, st, pads, cip, True), dxr,
                               rtol=1e-5, atol=1e-6)


def test_global_avg_pool():
    x = np.random.default_rng(4).standard_normal((3, 5, 7, 9))
    np.testing.assert_allclose(ops.global_avg_pool2d(x), x.mean(axis=(2, 3)), rtol=1e-12)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(ops.global_avg_pool2d(x32), x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    dy = np.random.default_rng(5).standard_normal((3, 5))
    dx = ops.global_avg_pool2d_backward(dy, x.shape)
    np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / 63, x.shape), rtol=1e-12)


def test_gradients_by_finite_differences():
    x = _tie_free((1, 2, 6, 7), np.float64, seed=6)
    g = np.random.default_rng(7).standard_normal((1, 2, 3, 4))
    f_max = lambda: float(np.sum(ops.max_pool2d(x, 3, 2, (1, 1, 1, 1))[0] * g))  # noqa: E731
    _, am = ops.max_pool2d(x, 3, 2, (1, 1, 1, 1))
    check_grad(ops.max_pool2d_backward(g, am, x.shape), numerical_grad(f_max, x, eps=1e-4))
    for cip in (True, False):
        f_avg = lambda: float(np.sum(ops.avg_pool2d(x, 3, 2, (1, 1, 1, 1), cip) * g))  # noqa: E731
        check_grad(ops.avg_pool2d_backward(g, x.shape, 3, 2, (1, 1, 1, 1), cip), numerical_grad(f_avg, x))
    g2 = np.random.default_rng(8).standard_normal((1, 2))
    f_gap = lambda: float(np.sum(ops.global_avg_pool2d(x) * g2))  # noqa: E731
    check_grad(ops.global_avg_pool2d_backward(g2, x.shape), numerical_grad(f_gap, x))


@pytest.mark.parametrize("width", [8, 40])
@pytest.mark.parametrize("pool,stride", [((2, 2), (2, 2)), ((3, 3), (1, 1))])
def test_nan_propagates(pool, stride, width):
    x = _tie_free((2, 2, 8, width), np.float32)
    x[1, 0, 3, 2] = np.nan
    x[1, 1, 2, 4:6] = np.nan  # two NaNs in one window: argmax names the first
    for naive in (False, True):
        y, am = _core.max_pool2d_forward(x, pool, stride, (0, 0, 0, 0), True, naive, None, None)
        yr, _ = max_pool2d_ref(np.nan_to_num(x, nan=-np.inf), pool, stride)
        hit = max_pool2d_ref(np.isnan(x).astype(np.float64), pool, stride)[0] > 0  # windows holding a NaN
        assert np.isnan(y[hit]).all() and hit.any()
        planes = x.reshape(4, -1)
        picked = np.take_along_axis(planes, am.reshape(4, -1).astype(np.int64), 1).reshape(y.shape)
        assert np.isnan(picked[hit]).all()  # argmax points at a NaN
        assert am[1, 0][hit[1, 0]].min() >= 0
        if pool == (2, 2):
            assert am[1, 0, 1, 1] == 3 * width + 2
            assert np.isnan(y[1, 1, 1, 2]) and am[1, 1, 1, 2] == 2 * width + 4
        np.testing.assert_array_equal(y[~hit], yr[~hit])
    ya = ops.avg_pool2d(x, pool, stride)
    assert np.isnan(ya[1, 0]).any() and not np.isnan(ya[0]).any()


def test_torch_agreement():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _tie_free((2, 3, 11, 10), np.float32, seed=9)
    for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1)]:
        tx = torch.tensor(x, requires_grad=True)
        ty, tidx = F.max_pool2d(tx, k, s, p, return_indices=True)
        y, am = ops.max_pool2d(x, k, s, p)
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_array_equal(am, tidx.numpy())
        dy = np.random.default_rng(k).standard_normal(y.shape).astype(np.float32)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(ops.max_pool2d_backward(dy, am, x.shape), tx.grad.numpy(), rtol=1e-6, atol=1e-6)
        for cip in (True, False):
            tx = torch.tensor(x, requires_grad=True)
            ta = F.avg_pool2d(tx, k, s, p, count_include_pad=cip)
            np.testing.assert_allclose(ops.avg_pool2d(x, k, s, p, cip), ta.detach().numpy(), rtol=1e-5, atol=1e-6)
            ta.backward(torch.tensor(dy))
            np.testing.assert_allclose(ops.avg_pool2d_backward(dy, x.shape, k, s, p, cip), tx.grad.numpy(),
                                       rtol=1e-5, atol=1e-6)


def test_threads(threads):
    x = _tie_free((4, 8, 20, 18), np.float32, seed=10)
    for pool, st in (((2, 2), (2, 2)), ((3, 3), (2, 2))):
        y, am = ops.max_pool2d(x, pool, st)
        yr, ar = max_pool2d_ref(x, pool, st)
        np.testing.assert_array_equal(y, yr)
        np.testing.assert_array_equal(am, ar)
        np.testing.assert_allclose(ops.avg_pool2d(x, pool, st), avg_pool2d_ref(x, pool, st), rtol=1e-5, atol=1e-6)


def test_same_padding_and_empty_batch():
    x = _tie_free((1, 1, 7, 9), np.float32)
    y, _ = ops.max_pool2d(x, 2, padding="same")
    assert y.shape == (1, 1, 4, 5)
    np.testing.assert_array_equal(y, max_pool2d_ref(x, (2, 2), (2, 2), (0, 1, 0, 1))[0])
    e = np.zeros((0, 3, 8, 8), np.float32)
    y, am = ops.max_pool2d(e, 2)
    assert y.shape == (0, 3, 4, 4) and am.shape == (0, 3, 4, 4)
    assert ops.max_pool2d_backward(y, am, e.shape).shape == e.shape
    assert ops.avg_pool2d(e, 2).shape == (0, 3, 4, 4)
    assert ops.global_avg_pool2d(e).shape == (0, 3)


@pytest.mark.parametrize("call,match", [
    (lambda x: ops.max_pool2d(x[0], 2), "expected 4"),
    (lambda x: ops.max_pool2d(x, 2, stride=0), "stride must be >= 1"),
    (lambda x: ops.max_pool2d(x, 0), "pool_size must be >= 1"),
    (lambda x: ops.max_pool2d(x, 2, padding=2), "smaller than pool_size"),
    (lambda x: ops.avg_pool2d(x, 2, padding=-1), "padding must be >= 0"),
    (lambda x: ops.max_pool2d(x, 9), "larger than the padded input"),
    (lambda x: ops.max_pool2d_backward(np.ones((1, 2, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.int64),
                                       x.shape), "int32"),
    (lambda x: ops.max_pool2d_backward(np.ones((1, 2, 4, 4), np.float32), np.full((1, 2, 4, 4), 64, np.int32),
                                       x.shape), "outside"),
    (lambda x: ops.max_pool2d_backward(np.ones((1, 2, 4, 4), np.float32), np.zeros((1, 2, 4, 3), np.int32),
                                       x.shape), "argmax has shape"),
    (lambda x: ops.avg_pool2d_backward(np.ones((1, 2, 3, 3), np.float32), x.shape, 2), "dy has shape"),
    (lambda x: ops.global_avg_pool2d_backward(np.ones((1, 3), np.float32), x.shape), "dy has shape"),
    (lambda x: ops.max_pool2d(x, 2, out=np.empty((1, 2, 4, 4), np.float64)), "dtype float32"),
])
def test_bad_input(call, match):
    x = np.ones((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match=match):
        call(x)


@pytest.mark.parametrize("layer,op", [(MaxPool2D, "max_pool2d"), (AvgPool2D, "avg_pool2d")])
def test_pool_layer_too_large_for_its_input_names_its_own_op(layer, op):
    import pydl
    with pytest.raises(ValueError, match=rf"\[{op}\] pool_size 7x7 is larger than the padded input 4x4"):
        pydl.Sequential([layer(7, input_shape=(1, 4, 4))])


def test_pool_layers():
    x = _tie_free((2, 3, 9, 8), np.float32)
    mp = MaxPool2D(2, padding="same")
    y = mp(x, training=True)
    assert mp.output_shape == (None, 3, 5, 4) and y.shape == (2, 3, 5, 4)
    dx = mp.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.sum() == y.size
    ap = AvgPool2D(3, strides=1, padding="same")
    ya = ap(x)
    np.testing.assert_allclose(ya, avg_pool2d_ref(x, (3, 3), (1, 1), (1, 1, 1, 1), False), rtol=1e-5, atol=1e-6)
    assert ap.backward(np.ones_like(ya)).shape == x.shape
    gp = GlobalAveragePooling2D()
    yg = gp(x)
    assert gp.output_shape == (None, 3) and yg.shape == (2, 3)
    assert gp.backward(np.ones_like(yg)).shape == x.shape
    for layer in (mp, ap):
        cfg = layer.get_config()
        assert type(layer).from_config(cfg).get_config() == cfg
    with pytest.raises(ValueError, match="NCHW"):
        MaxPool2D(2).build((None, 8, 8))


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_max_pool_ties_keep_first_like_naive(cfg):
    N, C, H, W, pool, st, pads = cfg
    x = np.random.default_rng(11).integers(0, 3, (N, C, H, W)).astype(np.float32)  # many ties
    y, am = _core.max_pool2d_forward(x, pool, st, pads, True, False, None, None)
    yn, amn = _core.max_pool2d_forward(x, pool, st, pads, True, True, None, None)
    np.testing.assert_array_equal(y, yn)
    np.testing.assert_array_equal(am, amn)
    # the naive loop's rule: the first maximum in row-major window order
    yr, ar = max_pool2d_ref(x, pool, st, pads)
    np.testing.assert_array_equal(amn, ar)


# ---- vector kernels: every ISA this CPU has, edge widths, ties, NaN, threads ---------------------

@pytest.fixture(params=["generic", "avx2", "avx512"])
def isa(request):
    if request.param not in _core.available_isas():
        pytest.skip(f"{request.param} not available on this CPU")
    old = _core.selected_isa()
    _core.select_isa(request.param)
    yield request.param
    _core.select_isa(old)


# widths around the 4 / 8 / 16 lanes: Q < L, Q = L, Q not a multiple of L, odd W
EDGE_WIDTHS = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 34, 47, 56]
WINDOWS = [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1)), ((3, 3), (1, 1), (1, 1, 1, 1)),
           ((2, 2), (1, 1), (0, 0, 0, 0)), ((3, 2), (2, 2), (0, 2, 1, 1)), ((1, 1), (1, 2), (0, 0, 0, 0)),
           ((5, 4), (1, 2), (2, 1, 3, 0))]


def _ties_nan_inf(shape, seed, nan_rate=0.03):
    """Small integers (many ties), some NaN and -inf (an all -inf window must point at its first element)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float32)
    x[rng.random(shape) < nan_rate] = np.nan
    x[rng.random(shape) < 0.1] = -np.inf
    return x


# nan_rate 0: rows without NaN take the one-compare kernel; 0.03: most output rows see a NaN;
# 0.002: a few rows do, the others of the same plane do not.
@pytest.mark.parametrize("nan_rate", [0.03, 0.002, 0.0])
@pytest.mark.parametrize("win", WINDOWS, ids=[f"w{i}" for i in range(len(WINDOWS))])
def test_max_pool_vector_paths_match_naive(isa, win, threads, nan_rate):
    pool, st, pads = win
    for W in EDGE_WIDTHS:
        H = 6 if pool[0] <= 3 else 7
        if W + pads[2] + pads[3] < pool[1]:
            continue
        x = _ties_nan_inf((2, 3, H, W), seed=W, nan_rate=nan_rate)
        if W == 7:
            x[:] = -np.inf
        yn, amn = _core.max_pool2d_forward(x, pool, st, pads, True, True, None, None)
        y = np.full(yn.shape, 7.0, np.float32)
        am = np.full(yn.shape, -7, np.int32)
        _core.max_pool2d_forward(x, pool, st, pads, True, False, y, am)
        np.testing.assert_array_equal(y, yn, err_msg=f"W={W}")  # NaN == NaN here
        np.testing.assert_array_equal(am, amn, err_msg=f"W={W}")
        y2, none = _core.max_pool2d_forward(x, pool, st, pads, False, False, None, None)
        assert none is None
        np.testing.assert_array_equal(y2, yn)


def _scatter_f32(dy, am, x_shape):
    """dx[argmax] += dy in float32, in output order (the kernel's scatter, add for add)."""
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W), np.float32)
    for i in range(N * C):
        np.add.at(dx[i], am.reshape(N * C, -1)[i], dy.reshape(N * C, -1)[i])
    return dx.reshape(x_shape)


@pytest.mark.parametrize("HW", [(2, 2), (3, 5), (8, 16), (9, 17), (12, 34), (14, 14), (6, 66)])
def test_max_pool_backward_dense_matches_scatter(isa, HW, threads):
    H, W = HW
    x = _ties_nan_inf((2, 3, H, W), seed=H * W)
    dy = np.random.default_rng(3).standard_normal((2, 3, H // 2, W // 2)).astype(np.float32)
    dy[0, 0, 0, 0] = np.nan
    dy.flat[1::7] = -0.0
    for pool, st, pads in (((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1))):
        if (H + pads[0] + pads[1] - pool[0]) // st[0] + 1 != H // 2 or \
                (W + pads[2] + pads[3] - pool[1]) // st[1] + 1 != W // 2:
            continue
        _, am = ops.max_pool2d(x, pool, st, pads)
        want = _scatter_f32(dy, am, x.shape)
        dx = ops.max_pool2d_backward(dy, am, x.shape)
        np.testing.assert_array_equal(dx, want)
        assert not np.signbit(dx[dx == 0]).any()  # 0 + (-0) = +0, as the scatter gives


def test_max_pool_backward_argmax_outside_block_falls_back(isa):
    # P = H/2, Q = W/2 but argmax from overlapping windows (or made up): the scatter must run
    H, W = 8, 20
    dy = np.arange(1, 2 * 4 * 10 + 1, dtype=np.float32).reshape(2, 1, 4, 10)
    am = np.zeros(dy.shape, np.int32)  # every output points at element 0: contributions add up
    am[1] = (np.arange(4)[:, None] * 2 * W + np.arange(10) * 2)  # plane 1: in its blocks
    am[1, 0, 3, 9] = 0  # ... except the very last one
    dx = ops.max_pool2d_backward(dy, am, (2, 1, H, W))
    np.testing.assert_array_equal(dx, max_pool2d_backward_ref(dy, am, (2, 1, H, W)))
    assert dx[0, 0, 0, 0] == dy[0].sum()


# 3x3 / stride 2 windows with top / left padding 0 or 1: the backward gathers when given the
# geometry. Widths below, at and past one and two blocks of 2L inputs (L = 4, 8, 16), odd and even.
GATHER_HW = [(1, 1), (2, 3), (3, 3), (5, 8), (7, 9), (8, 16), (9, 17), (6, 31), (4, 32), (5, 33), (3, 64),
             (4, 67), (11, 70), (14, 14)]
GATHER_PADS = [(1, 1, 1, 1), (0, 1, 0, 1), (0, 0, 0, 0), (1, 0, 1, 0), (1, 1, 0, 1), (0, 1, 1, 1), (1, 2, 1, 2),
               (0, 2, 0, 0)]


def _geometry_ok(H, W, pads):
    return H + pads[0] + pads[1] >= 3 and W + pads[2] + pads[3] >= 3


@pytest.mark.parametrize("HW", GATHER_HW, ids=[f"{h}x{w}" for h, w in GATHER_HW])
def test_max_pool_backward_gather_3x3_s2_matches_scatter(isa, HW, threads):
    H, W = HW
    x = _ties_nan_inf((2, 3, H, W), seed=H * 100 + W)
    for pads in GATHER_PADS:
        if not _geometry_ok(H, W, pads):
            continue
        _, am = ops.max_pool2d(x, 3, 2, pads)
        dy = np.random.default_rng(H + W).standard_normal(am.shape).astype(np.float32)
        dy.flat[0] = np.nan
        dy.flat[1::5] = -0.0
        want = _scatter_f32(dy, am, x.shape)
        dx = ops.max_pool2d_backward(dy, am, x.shape, 3, 2, pads)
        np.testing.assert_array_equal(dx, want, err_msg=f"pads {pads}")  # NaN == NaN here
        assert not np.signbit(dx[dx == 0]).any(), pads  # 0 + (-0) = +0, as the scatter gives
        np.testing.assert_array_equal(dx, ops.max_pool2d_backward(dy, am, x.shape))


def test_max_pool_backward_gather_bad_argmax(isa):
    # An argmax outside its window (but inside the plane) makes that plane scatter: the same result
    # as without the geometry. Each case sits where the gather could mistake it for an element of
    # the window: the row above the first window's column -1, the row below the last window's
    # column W, an element two rows down.
    H, W = 8, 14
    x = np.random.default_rng(7).standard_normal((3, 2, H, W)).astype(np.float32)
    for pads in ((1, 1, 1, 1), (0, 1, 0, 1), (0, 0, 0, 0)):
        _, am = ops.max_pool2d(x, 3, 2, pads)
        dy = np.random.default_rng(8).standard_normal(am.shape).astype(np.float32)
        P, Q = am.shape[2:]
        for n, c, p, q, v in ((0, 0, 1, 0, 2 * W - 1), (1, 1, 1, Q - 1, 4 * W), (2, 0, 0, 2, 3 * W + 3),
                              (0, 1, P - 1, 1, 0)):
            bad = am.copy()
            bad[n, c, p, q] = v
            want = _scatter_f32(dy, bad, x.shape)
            np.testing.assert_array_equal(ops.max_pool2d_backward(dy, bad, x.shape, 3, 2, pads), want,
                                          err_msg=f"pads {pads}, window {(p, q)} -> {v}")
        for v in (-1, H * W):
            bad = am.copy()
            bad[1, 0, 0, 0] = v
            with pytest.raises(ValueError, match=r"argmax holds indices outside \[0, H\*W\)"):
                ops.max_pool2d_backward(dy, bad, x.shape, 3, 2, pads)


def test_max_pool_backward_gather_views_empty_float64():
    x = np.random.default_rng(9).standard_normal((2, 3, 9, 10)).astype(np.float32)
    _, am = ops.max_pool2d(x, 3, 2, 1)
    wide = np.random.default_rng(10).standard_normal(am.shape[:3] + (2 * am.shape[3],)).astype(np.float32)
    dy = wide[:, :, :, ::2]  # a strided view
    want = _scatter_f32(np.ascontiguousarray(dy), am, x.shape)
    np.testing.assert_array_equal(ops.max_pool2d_backward(dy, am, x.shape, 3, 2, 1), want)
    np.testing.assert_allclose(ops.max_pool2d_backward(dy.astype(np.float64), am, x.shape, 3, 2, 1), want,
                               rtol=1e-6, atol=1e-6)  # float64 scatters
    e = np.zeros((0, 3, 9, 10), np.float32)
    ye, ae = ops.max_pool2d(e, 3, 2, 1)
    assert ops.max_pool2d_backward(ye, ae, e.shape, 3, 2, 1).shape == e.shape
    with pytest.raises(ValueError, match=r"dy has shape"):
        ops.max_pool2d_backward(dy[:, :, :-1], am[:, :, :-1], x.shape, 3, 2, 1)


def test_max_pool_backward_binding_geometry_checks():
    dy = np.ones((1, 1, 4, 4), np.float32)
    am = np.zeros((1, 1, 4, 4), np.int32)
    with pytest.raises(ValueError, match=r"given together"):
        _core.max_pool2d_backward(dy, am, [1, 1, 8, 8], pool=(3, 3))
    with pytest.raises(ValueError, match=r"does not have the pooled shape \(1, 1, 3, 3\)"):
        _core.max_pool2d_backward(dy, am, [1, 1, 8, 8], pool=(3, 3), stride=(2, 2), padding=(0, 0, 0, 0))
    dx = _core.max_pool2d_backward(dy, am, [1, 1, 8, 8], pool=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1))
    assert dx[0, 0, 0, 0] == 16 and dx.sum() == 16


def test_global_avg_pool_accuracy_and_threads(isa):
    import pydl
    x = np.full((1, 1, 4096, 4096), 1.1, np.float32)
    old = pydl.get_num_threads()
    try:
        got = []
        for nt in (1, 2):
            pydl.set_num_threads(nt)
            got.append(ops.global_avg_pool2d(x))
        np.testing.assert_allclose(got[0], np.float64(np.float32(1.1)), rtol=1e-6)
        np.testing.assert_array_equal(got[0], got[1])
        xr = np.random.default_rng(5).standard_normal((3, 4, 300, 301)).astype(np.float32)
        pydl.set_num_threads(1)
        g1 = ops.global_avg_pool2d(xr)
        pydl.set_num_threads(2)
        np.testing.assert_array_equal(ops.global_avg_pool2d(xr), g1)
        np.testing.assert_allclose(g1, xr.astype(np.float64).mean(axis=(2, 3)), rtol=1e-6, atol=1e-7)
        for hw in (1, 7, 33):
            xs = np.random.default_rng(hw).standard_normal((2, 3, 1, hw)).astype(np.float32)
            np.testing.assert_allclose(ops.global_avg_pool2d(xs), xs.astype(np.float64).mean(axis=(2, 3)),
                                       rtol=1e-6, atol=1e-7)
    finally:
        pydl.set_num_threads(old)


def test_max_pool_same_bits_for_any_thread_count(isa):
    import pydl
    x = _ties_nan_inf((3, 5, 23, 29), seed=12)
    old = pydl.get_num_threads()
    try:
        for pool, st, pads in WINDOWS:
            res = []
            for nt in (1, 2):
                pydl.set_num_threads(nt)
                y, am = ops.max_pool2d(x, pool, st, pads)
                dy = np.ones_like(y)
                res.append((y, am, ops.max_pool2d_backward(dy, am, x.shape)))
            for a, b in zip(res[0], res[1]):
                np.testing.assert_array_equal(a, b)
    finally:
        pydl.set_num_threads(old)
