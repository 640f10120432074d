"""Pooling on the GPU (pydl.cuda.pool through pydl.ops.pool) against the CPU ops: values, argmax,
gradients, NaN and ties, out=, bad input, and a small pooling model trained on both devices."""
import numpy as np
import pytest

import pydl
from pydl.ops import pool as P
from cuda_support import EMULATED, cp, needs_cuda, poisoned

pytestmark = needs_cuda

# (x shape, pool, stride, padding): odd sizes, 2/3 windows, strides 1/2/3, padding, non-square
CASES = [
    ((2, 3, 8, 8), 2, None, 0),
    ((1, 1, 7, 9), 3, 2, 1),
    ((2, 2, 9, 7), 3, 1, "same"),
    ((1, 3, 11, 10), (2, 3), (3, 2), ((1, 0), (2, 1))),
    ((3, 1, 5, 6), 2, 1, "valid"),
    ((1, 2, 10, 13), (3, 2), 3, "same"),
    ((2, 1, 6, 5), (1, 4), (2, 1), (0, 2)),
    ((1, 2, 4, 4), 4, 1, 0),
    ((2, 2, 6, 12), 2, 2, "valid"),  # the 2x2 / stride-2 two-outputs-per-thread kernels (fast_22)
    ((2, 3, 8, 12), 3, 2, 1),        # the 3x3 / stride-2 / padding-1 forward (fast_32)
]


def _x(shape, dtype, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many equal maxima in a window
        return rng.integers(-2, 3, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _tol(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_forward_backward_match_cpu(case, dtype, ties):
    shape, pool, stride, pad = case
    x = _x(shape, dtype, ties=ties)
    y, am = P.max_pool2d(x, pool, stride, pad)
    gy, gam = P.max_pool2d(cp.asarray(x), pool, stride, pad)
    assert isinstance(gy, cp.ndarray) and gy.dtype == dtype and gam.dtype == np.int32
    np.testing.assert_array_equal(cp.asnumpy(gy), y)
    np.testing.assert_array_equal(cp.asnumpy(gam), am)
    dy = _x(y.shape, dtype, seed=1)
    dx = P.max_pool2d_backward(dy, am, shape)
    g_geo = P.max_pool2d_backward(cp.asarray(dy), gam, shape, pool, stride, pad)  # gather
    g_any = P.max_pool2d_backward(cp.asarray(dy), gam, shape)                   # scatter
    assert g_geo.shape == shape and g_geo.dtype == dtype
    np.testing.assert_array_equal(cp.asnumpy(g_geo), dx)
    np.testing.assert_allclose(cp.asnumpy(g_any), dx, **_tol(dtype))
    # the CPU op with the geometry gives the same gradient
    np.testing.assert_array_equal(P.max_pool2d_backward(dy, am, shape, pool, stride, pad), dx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cip", [True, False])
def test_avg_pool_forward_backward_match_cpu(case, dtype, cip):
    shape, pool, stride, pad = case
    x = _x(shape, dtype)
    y = P.avg_pool2d(x, pool, stride, pad, count_include_pad=cip)
    gy = P.avg_pool2d(cp.asarray(x), pool, stride, pad, count_include_pad=cip)
    np.testing.assert_allclose(cp.asnumpy(gy), y, **_tol(dtype))
    dy = _x(y.shape, dtype, seed=2)
    dx = P.avg_pool2d_backward(dy, shape, pool, stride, pad, count_include_pad=cip)
    gdx = P.avg_pool2d_backward(cp.asarray(dy), shape, pool, stride, pad, count_include_pad=cip)
    assert gdx.shape == shape and gdx.dtype == dtype
    np.testing.assert_allclose(cp.asnumpy(gdx), dx, **_tol(dtype))


def test_avg_pool_backward_finite_differences():
    rng = np.random.default_rng(3)
    shape, pool, stride, pad = (1, 2, 5, 4), 3, 2, 1
    x = rng.standard_normal(shape)
    w = rng.standard_normal(P.avg_pool2d(x, pool, stride, pad, count_include_pad=False).shape)
    gw = cp.asarray(w)

    def f(xv):
        return float(cp.sum(P.avg_pool2d(cp.asarray(xv), pool, stride, pad, count_include_pad=False) * gw))

    grad = cp.asnumpy(P.avg_pool2d_backward(gw, shape, pool, stride, pad, count_include_pad=False))
    num = np.zeros(shape)
    eps = 1e-6
    for idx in np.ndindex(*shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = (f(xp) - f(xm)) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_in_window_wins(dtype):
    x = _x((1, 2, 6, 7), dtype)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 4, 6] = np.nan
    x[0, 1, 5, 5] = np.nan
    x[0, 0, 0, 0] = np.inf
    for pool, stride, pad in [(2, 2, 0), (3, 1, 1), (3, 2, "same")]:
        y, am = P.max_pool2d(x, pool, stride, pad)
        gy, gam = P.max_pool2d(cp.asarray(x), pool, stride, pad)
        np.testing.assert_array_equal(cp.asnumpy(gy), y)  # NaN positions equal too
        np.testing.assert_array_equal(cp.asnumpy(gam), am)
        assert np.isnan(y).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (3, 2, 40, 33)])  # warp and block kernels
def test_global_avg_pool_matches_cpu(shape, dtype):
    x = _x(shape, dtype) + 3
    y = P.global_avg_pool2d(x)
    gy = P.global_avg_pool2d(cp.asarray(x))
    assert gy.shape == shape[:2] and gy.dtype == dtype
    np.testing.assert_allclose(cp.asnumpy(gy), y, **_tol(dtype))
    np.testing.assert_allclose(cp.asnumpy(gy), x.astype(np.float64).mean(axis=(2, 3)), rtol=1e-6 if dtype == np.float32 else 1e-13)
    dy = _x(shape[:2], dtype, seed=4)
    np.testing.assert_array_equal(cp.asnumpy(P.global_avg_pool2d_backward(cp.asarray(dy), shape)),
                                  P.global_avg_pool2d_backward(dy, shape))


def test_global_avg_pool_float32_accumulates_in_double():
    x = np.full((1, 1, 300, 300), 0.1, np.float32)
    x[0, 0, 0, 0] = 1e4
    gy = cp.asnumpy(P.global_avg_pool2d(cp.asarray(x)))
    np.testing.assert_array_equal(gy, P.global_avg_pool2d(x))


def test_fast_2x2_path_nan_ties_views_and_fallbacks(monkeypatch):
    """The fast_22 kernels (2x2, stride 2, W = 2Q a multiple of 4): NaN / inf / ties as on the CPU, both
    dtypes; an input or dy view off a 16-byte boundary and the shapes outside fast_22 take the general
    kernels with the same results."""
    from pydl.cuda import pool as cuda_pool
    names = []
    real = cuda_pool._fn
    monkeypatch.setattr(cuda_pool, "_fn", lambda base, dtype: names.append(base) or real(base, dtype))
    for dtype in (np.float32, np.float64):
        x = _x((2, 3, 6, 8), dtype, ties=True)
        x[0, 0, 1, 1] = np.nan
        x[0, 1, 4, 6] = np.inf
        x[0, 2, 1, 2] = np.nan  # every position of a window holds a NaN in some plane
        x[0, 2, 2, 4] = np.nan
        x[0, 2, 0, 1] = np.nan
        x[1, 2, 5, 7] = -np.inf
        x[1, 2, 4, 4] = np.nan
        x[1, 2, 5, 5] = np.nan
        y, am = P.max_pool2d(x, 2)
        names.clear()
        gy, gam = P.max_pool2d(cp.asarray(x), 2)
        assert names == ["maxpool2d_fwd_22v_argmax"]
        np.testing.assert_array_equal(cp.asnumpy(gy), y)
        np.testing.assert_array_equal(cp.asnumpy(gam), am)
        dy = _x(y.shape, dtype, seed=3)
        dy[0, 0, 0, 0] = -0.0
        names.clear()
        got = P.max_pool2d_backward(cp.asarray(dy), gam, x.shape, 2)
        assert names == ["maxpool2d_bwd_22v"]
        want = P.max_pool2d_backward(dy, am, x.shape)
        np.testing.assert_array_equal(cp.asnumpy(got), want)
        names.clear()
        gy2, none = P.max_pool2d(cp.asarray(x), 2, return_argmax=False)
        assert none is None
        assert names == ["maxpool2d_fwd_22v"]
        np.testing.assert_array_equal(cp.asnumpy(gy2), y)
        # a view one element past an aligned address: the general kernel, same values
        buf = cp.empty(x.size + 1, dtype)
        xv = buf[1:].reshape(x.shape)
        xv[...] = cp.asarray(x)
        names.clear()
        vy, vam = P.max_pool2d(xv, 2)
        assert names == ["maxpool2d_fwd_k2_argmax"]
        np.testing.assert_array_equal(cp.asnumpy(vy), y)
        np.testing.assert_array_equal(cp.asnumpy(vam), am)
        dbuf = cp.empty(dy.size + 1, dtype)
        dyv = dbuf[1:].reshape(dy.shape)
        dyv[...] = cp.asarray(dy)
        names.clear()
        np.testing.assert_array_equal(cp.asnumpy(P.max_pool2d_backward(dyv, gam, x.shape, 2)), want)
        assert names == ["maxpool2d_bwd"]
    # W not a multiple of 4, odd H, padding: the general kernels
    for shape, pad in [((1, 2, 6, 6), 0), ((1, 2, 7, 8), 0), ((1, 2, 6, 8), 1)]:
        names.clear()
        P.max_pool2d(cp.asarray(_x(shape, np.float32)), 2, 2, pad)
        assert names == ["maxpool2d_fwd_k2_argmax"], (shape, pad)
    # 3x3 / stride 2 / padding 1 (fast_32): NaN, inf and ties in every window position, both dtypes
    for dtype in (np.float32, np.float64):
        x = _x((2, 9, 6, 8), dtype, seed=5, ties=True)
        for plane in range(9):  # plane i holds a NaN at window position i of output (1, 1)
            x[0, plane, 1 + plane // 3, 1 + plane % 3] = np.nan
        x[1, 0, 0, 0] = np.nan
        x[1, 1, 5, 7] = np.nan
        x[1, 2, 2, 3] = np.inf
        x[1, 3, 0, 4] = -np.inf
        for want_argmax in (True, False):
            y, am = P.max_pool2d(x, 3, 2, 1)
            names.clear()
            gy, gam = P.max_pool2d(cp.asarray(x), 3, 2, 1, return_argmax=want_argmax)
            assert names == ["maxpool2d_fwd_32v" + ("_argmax" if want_argmax else "")]
            np.testing.assert_array_equal(cp.asnumpy(gy), y)
            if want_argmax:
                np.testing.assert_array_equal(cp.asnumpy(gam), am)
                dy = _x(y.shape, dtype, seed=6)
                want = P.max_pool2d_backward(dy, am, x.shape)
                names.clear()
                got = P.max_pool2d_backward(cp.asarray(dy), gam, x.shape, 3, 2, 1)
                assert names == ["maxpool2d_bwd_32v"]
                np.testing.assert_array_equal(cp.asnumpy(got), want)
                # an argmax inside the plane but outside its window: the scatter, as the CPU
                for where in (0, 2 * 8 + 4):  # output (1, 1)'s window: rows 1..3, columns 1..3
                    bad = am.copy()
                    bad[0, 0, 1, 1] = where
                    names.clear()
                    got = P.max_pool2d_backward(cp.asarray(dy), cp.asarray(bad), x.shape, 3, 2, 1)
                    assert names[0] == "maxpool2d_bwd_32v" and len(names) > 1
                    # (atomics: three outputs naming one input may add in any order)
                    np.testing.assert_allclose(cp.asnumpy(got), P.max_pool2d_backward(dy, bad, x.shape),
                                               **_tol(dtype))
    for shape, pad in [((1, 2, 6, 6), 1), ((1, 2, 7, 8), 1), ((1, 2, 6, 8), 0)]:
        names.clear()
        P.max_pool2d(cp.asarray(_x(shape, np.float32)), 3, 2, pad)
        assert names == ["maxpool2d_fwd_k3_argmax"], (shape, pad)


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (2, 3, 5, 5)])  # hw a multiple of 4 (4-wide kernel) or not
def test_global_avg_pool_backward_kernels(shape):
    dy = _x(shape[:2], np.float32, seed=8)
    got = P.global_avg_pool2d_backward(cp.asarray(dy), shape)
    np.testing.assert_array_equal(cp.asnumpy(got), P.global_avg_pool2d_backward(dy, shape))


@pytest.mark.parametrize("op", ["max", "avg"])
def test_out_buffer(op):
    x = _x((2, 3, 7, 6), np.float32)
    gx = cp.asarray(x)
    fn = P.max_pool2d if op == "max" else P.avg_pool2d
    ref = fn(x, 3, 2, 1)
    ref = ref[0] if op == "max" else ref
    out = poisoned(ref.shape, np.float32)
    got = fn(gx, 3, 2, 1, out=out)
    got = got[0] if op == "max" else got
    assert got is out
    np.testing.assert_allclose(cp.asnumpy(out), ref, rtol=1e-6)
    if op == "max":
        y, am = P.max_pool2d(gx, 3, 2, 1, return_argmax=False, out=poisoned(ref.shape, np.float32))
        assert am is None
        np.testing.assert_array_equal(cp.asnumpy(y), ref)
    with pytest.raises(ValueError, match="out has shape"):
        fn(gx, 3, 2, 1, out=cp.empty((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="out has dtype"):
        fn(gx, 3, 2, 1, out=cp.empty(ref.shape, np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        fn(gx, 3, 2, 1, out=cp.empty(ref.shape[::-1], np.float32).T)
    with pytest.raises(ValueError, match="different devices"):
        fn(gx, 3, 2, 1, out=np.empty(ref.shape, np.float32))


def test_views_and_int_inputs():
    x = _x((2, 3, 9, 8), np.float64)
    view = cp.asarray(x)[:, :, ::2, 1:]
    y, am = P.max_pool2d(x[:, :, ::2, 1:], 2)
    gy, gam = P.max_pool2d(view, 2)
    np.testing.assert_array_equal(cp.asnumpy(gy), y)
    np.testing.assert_array_equal(cp.asnumpy(gam), am)
    xi = np.arange(2 * 36).reshape(1, 2, 6, 6) % 7
    gi = P.avg_pool2d(cp.asarray(xi), 2)
    assert gi.dtype == np.float32
    np.testing.assert_allclose(cp.asnumpy(gi), P.avg_pool2d(xi, 2), rtol=1e-6)
    # dy as a view, argmax as a view of a contiguous copy
    dy = _x(y.shape, np.float64, seed=5)
    gdy = cp.asarray(np.ascontiguousarray(dy.transpose(0, 1, 3, 2))).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(cp.asnumpy(P.max_pool2d_backward(gdy, gam, view.shape, 2)),
                                  P.max_pool2d_backward(dy, am, view.shape))


def test_bad_input():
    gx = cp.asarray(_x((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"\[max_pool2d\] x has 3 dims"):
        P.max_pool2d(gx[0], 2)
    with pytest.raises(TypeError, match="complex|real"):
        P.avg_pool2d(gx.astype(cp.complex64), 2)
    with pytest.raises(ValueError, match="padding .* must be smaller than pool_size"):
        P.max_pool2d(gx, 2, 1, 2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        P.avg_pool2d(gx, 7)
    with pytest.raises(ValueError, match=r"x on cuda, out on cpu"):
        P.avg_pool2d(gx, 2, out=np.empty((1, 2, 2, 2), np.float32))
    y, am = P.max_pool2d(gx, 2)
    dy = cp.ones_like(y)
    with pytest.raises(ValueError, match=r"dy on cuda, argmax on cpu"):
        P.max_pool2d_backward(dy, cp.asnumpy(am), gx.shape)
    with pytest.raises(ValueError, match=r"dy on cpu, argmax on cuda"):
        P.max_pool2d_backward(cp.asnumpy(dy), am, gx.shape)
    with pytest.raises(ValueError, match="argmax must be the int32 array"):
        P.max_pool2d_backward(dy, am.astype(cp.int64), gx.shape)
    with pytest.raises(ValueError, match="argmax has shape"):
        P.max_pool2d_backward(dy, am[:, :1], gx.shape)
    with pytest.raises(ValueError, match="does not match x_shape"):
        P.max_pool2d_backward(dy, am, (2, 2, 5, 5))
    with pytest.raises(ValueError, match="dy has shape"):
        P.max_pool2d_backward(dy, am, gx.shape, 3)
    bad = am.copy()
    bad[0, 0, 0, 0] = 25
    with pytest.raises(ValueError, match=r"argmax holds indices outside \[0, H\*W\) = \[0, 25\)"):
        P.max_pool2d_backward(dy, bad, gx.shape, 2)
    with pytest.raises(ValueError, match="outside"):
        P.max_pool2d_backward(dy, bad, gx.shape)
    with pytest.raises(ValueError, match="dy has shape"):
        P.avg_pool2d_backward(dy, gx.shape, 3)
    with pytest.raises(ValueError, match="empty H x W"):
        P.global_avg_pool2d(cp.empty((1, 2, 0, 3), cp.float32))
    with pytest.raises(ValueError, match="dy has shape"):
        P.global_avg_pool2d_backward(cp.ones((2, 2), cp.float32), (1, 2, 3, 3))


def test_argmax_in_plane_but_outside_its_window_falls_back_to_scatter():
    x = _x((1, 1, 4, 4), np.float32)
    y, am = P.max_pool2d(x, 2)
    am[0, 0, 0, 0] = 15  # another window's element: the CPU adds there
    dy = _x(y.shape, np.float32, seed=6)
    dx = P.max_pool2d_backward(dy, am, x.shape)
    got = P.max_pool2d_backward(cp.asarray(dy), cp.asarray(am), x.shape, 2)
    np.testing.assert_array_equal(cp.asnumpy(got), dx)


@pytest.mark.parametrize("pool, stride, pad", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_trusted_argmax_skips_the_check_and_gives_the_same_gradient(pool, stride, pad, monkeypatch):
    x = _x((2, 3, 7, 9), np.float32)
    y, am = P.max_pool2d(cp.asarray(x), pool, stride, pad)
    dy = cp.asarray(_x(y.shape, np.float32, seed=7))
    want = P.max_pool2d_backward(dy, am, x.shape, pool, stride, pad)
    reads = []
    if EMULATED:  # the emulator's ndarray is a Python class: count the reads back (CuPy's can't be patched)
        monkeypatch.setattr(cp.ndarray, "item", lambda self: reads.append(1) or 0)
    got = P.max_pool2d_backward(dy, am, x.shape, pool, stride, pad, check_argmax=False)
    assert not reads  # no flag read back, so no device sync
    monkeypatch.undo()
    np.testing.assert_array_equal(cp.asnumpy(got), cp.asnumpy(want))
    np.testing.assert_array_equal(cp.asnumpy(got), P.max_pool2d_backward(cp.asnumpy(dy), cp.asnumpy(am), x.shape))


def test_zero_size_batch():
    gx = cp.empty((0, 3, 6, 6), cp.float32)
    y, am = P.max_pool2d(gx, 2)
    assert y.shape == (0, 3, 3, 3) and am.shape == (0, 3, 3, 3)
    assert P.max_pool2d_backward(y, am, gx.shape, 2).shape == gx.shape
    assert P.max_pool2d_backward(y, am, gx.shape).shape == gx.shape
    assert P.avg_pool2d(gx, 3, 1, 1).shape == (0, 3, 6, 6)
    assert P.avg_pool2d_backward(cp.empty((0, 3, 6, 6), cp.float32), gx.shape, 3, 1, 1).shape == gx.shape
    assert P.global_avg_pool2d(gx).shape == (0, 3)
    assert P.global_avg_pool2d_backward(cp.empty((0, 3), cp.float32), gx.shape).shape == gx.shape


def test_torch_agreement():
    torch = pytest.importorskip("torch")
    x = _x((2, 3, 9, 10), np.float32)
    gy, gam = P.max_pool2d(cp.asarray(x), 3, 2, 1)
    ty, tam = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(cp.asnumpy(gy), ty.numpy())
    ga = P.avg_pool2d(cp.asarray(x), 3, 2, 1, count_include_pad=True)
    ta = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 3, 2, 1, count_include_pad=True)
    np.testing.assert_allclose(cp.asnumpy(ga), ta.numpy(), rtol=1e-5, atol=1e-6)


def _pool_model(kind, fmt):
    L = pydl.layers
    shape = (2, 8, 8) if fmt == "channels_first" else (8, 8, 2)
    if kind == "local":
        layers = [L.MaxPool2D(2, data_format=fmt, input_shape=shape),
                  L.AvgPool2D(3, strides=1, padding="same", data_format=fmt), L.Flatten()]
    elif kind == "global_avg":
        layers = [L.AvgPool2D(2, strides=1, data_format=fmt, input_shape=shape),
                  L.GlobalAveragePooling2D(data_format=fmt)]
    else:
        layers = [L.MaxPool2D(3, strides=1, padding="same", data_format=fmt, input_shape=shape),
                  L.GlobalMaxPooling2D(data_format=fmt)]
    return pydl.Sequential(layers + [L.Dense(8, activation="tanh"), L.Dense(3, activation="softmax")]), shape


@pytest.mark.parametrize("kind,fmt", [("local", "channels_first"), ("local", "channels_last"),
                                      ("global_avg", "channels_first"), ("global_max", "channels_last")])
def test_pooling_model_fit_cpu_vs_gpu(kind, fmt):
    rng = np.random.default_rng(7)
    pydl.seed(3)
    cpu, shape = _pool_model(kind, fmt)
    gpu, _ = _pool_model(kind, fmt)
    x = rng.standard_normal((24,) + shape).astype(np.float32)
    y = rng.integers(0, 3, 24)
    for m in (cpu, gpu):
        m.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.SGD(0.1, momentum=0.9))
        m.build((None,) + shape)
    gpu.set_weights(cpu.get_weights())
    gpu.to("cuda")
    h_cpu = cpu.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    h_gpu = gpu.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-4)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(gpu.predict(cp.asarray(x), verbose=0)), cpu.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-6)
