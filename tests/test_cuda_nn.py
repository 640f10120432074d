"""CUDA kernels of pydl.ops.nn (activations, Dense, dropout, batch norm) against the CPU ops."""
import numpy as np
import pytest

from cuda_support import cp, needs_cuda, poisoned, to_cpu, to_gpu

from pydl.ops import nn

pytestmark = needs_cuda

DTYPES = (np.float32, np.float64)
SHAPES = ((1, 1), (7, 13), (64, 257))
ELEMENTWISE = tuple(k for k in nn.ACTIVATIONS if k not in ("softmax", "log_softmax"))


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def _close(got, want, dtype, **kw):
    tol = _tol(dtype)
    tol.update(kw)
    got = to_cpu(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, **tol)


def _inputs(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _alpha(kind):
    return 0.2 if kind in ("leaky_relu", "elu") else None


# ---- activations -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", nn.ACTIVATIONS)
def test_activation_forward_backward_match_cpu(kind, dtype):
    for i, shape in enumerate(SHAPES):
        x = _inputs(shape, dtype, seed=i)
        dy = _inputs(shape, dtype, seed=i + 10, scale=1.0)
        y = nn.activation(x, kind, alpha=_alpha(kind))
        dx = nn.activation_backward(dy, x, y, kind, alpha=_alpha(kind))
        gy = nn.activation(to_gpu(x), kind, alpha=_alpha(kind))
        assert isinstance(gy, cp.ndarray)
        _close(gy, y, dtype)
        gdx = nn.activation_backward(to_gpu(dy), to_gpu(x), to_gpu(y), kind, alpha=_alpha(kind))
        _close(gdx, dx, dtype, atol=2e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_extremes_and_nan(dtype):
    x = np.array([[-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4, np.nan]], dtype=dtype)
    for kind in ELEMENTWISE:
        if kind == "exponential":
            continue
        want = nn.activation(x, kind)
        got = to_cpu(nn.activation(to_gpu(x), kind))
        np.testing.assert_allclose(got, want, **_tol(dtype))
    assert to_cpu(nn.activation(to_gpu(x), "softplus"))[0, 6] == 1e4
    assert to_cpu(nn.activation(to_gpu(x), "sigmoid"))[0, 0] == 0.0
    assert to_cpu(nn.activation(to_gpu(x), "sigmoid"))[0, 6] == 1.0
    assert np.all(np.isnan(to_cpu(nn.activation(to_gpu(x), "softmax"))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_long_rows_and_nd(dtype):
    # rows longer than a block, a 3-d array (last axis), huge logits (the row maximum is subtracted)
    for shape in ((3, 5000), (2, 3, 17), (5,)):
        x = _inputs(shape, dtype, seed=3, scale=30.0)
        for kind in ("softmax", "log_softmax"):
            y = nn.activation(x, kind)
            gy = nn.activation(to_gpu(x), kind)
            _close(gy, y, dtype, atol=1e-5 if dtype == np.float32 else 1e-12)
            dy = _inputs(shape, dtype, seed=4, scale=1.0)
            _close(nn.activation_backward(to_gpu(dy), to_gpu(x), to_gpu(y), kind),
                   nn.activation_backward(dy, x, y, kind), dtype, atol=1e-4 if dtype == np.float32 else 1e-12)
    s = to_cpu(nn.activation(to_gpu(np.full((2, 300), 1e4, dtype=dtype)), "softmax"))
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_vector_path_tail_and_unaligned_views(dtype):
    # 16-byte aligned arrays take the float4/double2 kernels (n % 4 or n % 2 elements in the tail);
    # x[1:]-style views are not 16-byte aligned and take the scalar kernels
    base = _inputs(4097 + 1, dtype, seed=21)
    dbase = _inputs(4097 + 1, dtype, seed=22, scale=1.0)
    g, gd = to_gpu(base), to_gpu(dbase)
    for n in (1, 3, 4, 5, 1023, 4097):
        for off in (0, 1):
            x, dy = base[off:off + n], dbase[off:off + n]
            gx, gdy = g[off:off + n], gd[off:off + n]
            assert gx.flags.c_contiguous and (gx.data.ptr % 16 != 0) == (off == 1)
            for kind in ("relu", "gelu", "elu", "linear", "swish"):
                a = _alpha(kind)
                p = poisoned((n,), dtype)
                del p
                y = nn.activation(x, kind, alpha=a)
                gy = nn.activation(gx, kind, alpha=a)
                _close(gy, y, dtype)
                # an unaligned y too: a copy into a view one element in
                ybuf = to_gpu(np.zeros(n + 1, dtype))
                ybuf[off:off + n] = gy
                gdx = nn.activation_backward(gdy, gx, ybuf[off:off + n], kind, alpha=a)
                _close(gdx, nn.activation_backward(dy, x, y, kind, alpha=a), dtype,
                       atol=2e-5 if dtype == np.float32 else 1e-12)
    # many blocks of the vector kernel, and a size past one grid-stride pass of a small grid
    big = _inputs((1 << 20) + 3, dtype, seed=23)
    p = poisoned(big.shape, dtype)
    del p
    _close(nn.activation(to_gpu(big), "sigmoid"), nn.activation(big, "sigmoid"), dtype)


def test_softmax_float4_rows_every_width_nan_inf_and_unaligned_rows():
    # float32 rows of d % 4 == 0, d <= 1024 on 16-byte aligned rows take the float4 warp-per-row kernel
    # (K4 = 1, 2, 4, 8 float4s per lane, full and partial); a view one element in does not
    for d in (4, 8, 100, 128, 132, 256, 260, 512, 516, 1020, 1024):
        x = _inputs((11, d), np.float32, seed=d, scale=20.0)
        x[0, d // 2] = np.nan
        x[1, :] = -np.inf
        x[2, 1] = np.inf
        x[3, :] = 1e4
        for kind in ("softmax", "log_softmax"):
            y = nn.activation(x, kind)
            gy = to_cpu(nn.activation(to_gpu(x), kind))
            assert np.array_equal(np.isnan(gy), np.isnan(y)), (d, kind)
            ok = ~np.isnan(y)
            np.testing.assert_allclose(gy[ok], y[ok], rtol=1e-5, atol=1e-5)
    buf = to_gpu(_inputs(3 * 64 + 1, np.float32, seed=5, scale=5.0))
    view = buf[1:].reshape(3, 64)  # rows 4 bytes past a 16-byte boundary
    assert view.data.ptr % 16 == 4
    np.testing.assert_allclose(to_cpu(nn.activation(view, "softmax")), nn.activation(to_cpu(view), "softmax"),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_warp_and_block_rows(dtype):
    # one warp per row (d <= 1024), one block per row in registers (d <= 4096), the general kernel past that
    for shape in ((5, 1), (3, 7), (9, 32), (9, 33), (17, 1024), (3, 1025), (2, 2048), (2, 2049), (2, 4096),
                  (2, 5000), (1, 3, 100)):
        x = _inputs(shape, dtype, seed=shape[-1], scale=20.0)
        x.reshape(-1, shape[-1])[0, 0] = np.nan
        if x.size > 2 * shape[-1]:
            x.reshape(-1, shape[-1])[1, :] = -np.inf
        for kind in ("softmax", "log_softmax"):
            p = poisoned(shape, dtype)
            del p
            y = nn.activation(x, kind)
            gy = to_cpu(nn.activation(to_gpu(x), kind))
            assert np.array_equal(np.isnan(gy), np.isnan(y)), (shape, kind)
            ok = ~np.isnan(y)
            np.testing.assert_allclose(gy[ok], y[ok], **dict(_tol(dtype), atol=1e-5 if dtype == np.float32 else 1e-12))


def test_activation_empty_and_scalar():
    e = cp.empty((0, 4), dtype=cp.float32)
    assert nn.activation(e, "relu").shape == (0, 4)
    assert nn.activation(e, "softmax").shape == (0, 4)
    assert nn.activation(cp.empty((3, 0), dtype=cp.float32), "softmax").shape == (3, 0)
    s = nn.activation(cp.asarray(2.0, dtype=cp.float64), "tanh")
    assert s.shape == () and abs(float(s) - np.tanh(2.0)) < 1e-15
    with pytest.raises(ValueError, match="0-d"):
        nn.activation(cp.asarray(2.0), "softmax")


# ---- Dense -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", nn.FUSABLE_ACTIVATIONS)
def test_dense_forward_backward_match_cpu(kind, dtype):
    # float32 products go through different summation orders: compare at 1e-4 relative
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for i, (n, c, k) in enumerate(((1, 1, 1), (7, 13, 5), (64, 257, 33))):
        x = _inputs((n, c), dtype, seed=i, scale=1.0)
        W = _inputs((c, k), dtype, seed=i + 1, scale=0.3)
        b = _inputs((k,), dtype, seed=i + 2, scale=0.5)
        dy = _inputs((n, k), dtype, seed=i + 3, scale=1.0)
        a = _alpha(kind)
        y, z = nn.dense_forward(x, W, b, kind, alpha=a, return_z=True)
        gy, gz = nn.dense_forward(to_gpu(x), to_gpu(W), to_gpu(b), kind, alpha=a, return_z=True)
        _close(gy, y, dtype, **tol)
        assert (gz is None) == (z is None)
        if z is not None:
            _close(gz, z, dtype, **tol)
        dx, dW, db = nn.dense_backward(dy, x, W, y, kind, alpha=a, z=z)
        gdx, gdW, gdb = nn.dense_backward(to_gpu(dy), to_gpu(x), to_gpu(W), to_gpu(y), kind, alpha=a,
                                          z=None if z is None else to_gpu(z))
        _close(gdx, dx, dtype, **tol)
        _close(gdW, dW, dtype, **tol)
        _close(gdb, db, dtype, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_no_bias_no_dx_and_column_sums(dtype):
    x = _inputs((300, 17), dtype, seed=5, scale=1.0)
    W = _inputs((17, 70), dtype, seed=6, scale=0.3)
    dy = _inputs((300, 70), dtype, seed=7, scale=1.0)
    y = nn.dense_forward(x, W, None, "linear")
    gy = nn.dense_forward(to_gpu(x), to_gpu(W), None, "linear")
    _close(gy, y, dtype, rtol=1e-4, atol=1e-4)
    gdx, gdW, gdb = nn.dense_backward(to_gpu(dy), to_gpu(x), to_gpu(W), gy, "linear", need_dx=False,
                                      has_bias=False)
    assert gdx is None and gdb is None
    np.testing.assert_allclose(to_cpu(gdW), x.astype(np.float64).T @ dy.astype(np.float64),
                               rtol=1e-4 if dtype == np.float32 else 1e-11, atol=1e-4 if dtype == np.float32 else 1e-11)
    # column sums of a tall matrix, exact in float64 accumulation and the same on every run
    from pydl.cuda import nn as cuda_nn
    dz = to_gpu(_inputs((1000, 45), dtype, seed=8))
    out = poisoned((45,), dtype)
    cuda_nn.column_sums(dz, out)
    want = to_cpu(dz).astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(to_cpu(out), want, rtol=1e-6 if dtype == np.float32 else 1e-13)
    again = poisoned((45,), dtype)
    cuda_nn.column_sums(dz, again)
    assert np.array_equal(to_cpu(out), to_cpu(again))


def test_dense_empty_batch():
    x = cp.empty((0, 4), dtype=cp.float32)
    W = cp.ones((4, 3), dtype=cp.float32)
    y = nn.dense_forward(x, W, cp.ones(3, dtype=cp.float32), "relu")
    assert y.shape == (0, 3)
    dx, dW, db = nn.dense_backward(cp.empty((0, 3), dtype=cp.float32), x, W, y, "relu")
    assert dx.shape == (0, 4) and float(cp.abs(dW).sum()) == 0.0 and float(cp.abs(db).sum()) == 0.0


# ---- dropout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout(dtype):
    rate = 0.3
    x = _inputs((257, 129), dtype, seed=9)
    gx = to_gpu(x)
    y1, m1 = nn.dropout_forward(gx, rate, 1234)
    y2, m2 = nn.dropout_forward(gx, rate, 1234)
    _, m3 = nn.dropout_forward(gx, rate, 1235)
    assert m1.dtype == cp.uint8 and m1.shape == x.shape
    assert bool(cp.array_equal(m1, m2)) and bool(cp.array_equal(y1, y2))
    assert not bool(cp.array_equal(m1, m3))
    n = x.size
    kept = float(m1.astype(cp.float64).sum()) / n
    assert abs(kept - (1 - rate)) < 3 * np.sqrt(rate * (1 - rate) / n)
    scale = dtype(1.0 / (1.0 - rate))
    mask = to_cpu(m1)
    np.testing.assert_array_equal(to_cpu(y1), x * (mask.astype(dtype) * scale))
    # the same hash as the CPU kernel
    yc, mc = nn.dropout_forward(x, rate, 1234)
    np.testing.assert_array_equal(mask, mc)
    np.testing.assert_array_equal(to_cpu(y1), yc)
    dy = _inputs(x.shape, dtype, seed=10)
    gdx = nn.dropout_backward(to_gpu(dy), m1, rate)
    np.testing.assert_array_equal(to_cpu(gdx), dy * (mask.astype(dtype) * scale))
    gdx_bool = nn.dropout_backward(to_gpu(dy), m1.astype(cp.bool_), rate)
    np.testing.assert_array_equal(to_cpu(gdx_bool), to_cpu(gdx))
    # rate 0 keeps everything; an empty array launches nothing
    y0, m0 = nn.dropout_forward(gx, 0.0, 7)
    assert bool(cp.all(m0 == 1)) and bool(cp.array_equal(y0, gx))
    ye, me = nn.dropout_forward(cp.empty((0, 3), dtype=dtype), rate, 1)
    assert ye.shape == (0, 3) and me.shape == (0, 3)


def test_dropout_bad_input():
    dy = cp.ones((4, 5), dtype=cp.float32)
    with pytest.raises(ValueError, match="mask must be"):
        nn.dropout_backward(dy, cp.ones((4, 5), dtype=cp.float32), 0.5)
    with pytest.raises(ValueError, match="mask has shape"):
        nn.dropout_backward(dy, cp.ones((5, 4), dtype=cp.uint8), 0.5)
    with pytest.raises(ValueError, match=r"dy on cuda.*mask on cpu"):
        nn.dropout_backward(dy, np.ones((4, 5), dtype=np.uint8), 0.5)


# ---- batch normalisation -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ((1, 1), (7, 13), (64, 257), (3, 5, 4, 4)))
def test_batchnorm_matches_cpu(shape, dtype):
    c = shape[1]
    x = _inputs(shape, dtype, seed=11) + 2.0
    gamma = _inputs((c,), dtype, seed=12, scale=1.0)
    beta = _inputs((c,), dtype, seed=13, scale=1.0)
    dy = _inputs(shape, dtype, seed=14, scale=1.0)
    rm = _inputs((c,), dtype, seed=15, scale=0.1)
    rv = np.abs(_inputs((c,), dtype, seed=16, scale=1.0)) + 0.5
    grm, grv = to_gpu(rm), to_gpu(rv)
    for training in (True, False):
        y, cache = nn.batchnorm_forward(x, gamma, beta, rm, rv, momentum=0.9, epsilon=1e-3, training=training)
        gy, gcache = nn.batchnorm_forward(to_gpu(x), to_gpu(gamma), to_gpu(beta), grm, grv, momentum=0.9,
                                          epsilon=1e-3, training=training)
        _close(gy, y, dtype, atol=2e-5 if dtype == np.float32 else 1e-12)
        _close(grm, rm, dtype)
        _close(grv, rv, dtype)
        assert gcache[2] is training
        for g, want in zip(gcache[:2], cache[:2]):
            assert isinstance(g, cp.ndarray) and g.dtype == cp.float64
            np.testing.assert_allclose(to_cpu(g), want, rtol=1e-12 if dtype == np.float64 else 1e-6)
        dx, dgamma, dbeta = nn.batchnorm_backward(dy, x, gamma, cache)
        gdx, gdgamma, gdbeta = nn.batchnorm_backward(to_gpu(dy), to_gpu(x), to_gpu(gamma), gcache)
        _close(gdx, dx, dtype, atol=1e-4 if dtype == np.float32 else 1e-11)
        _close(gdgamma, dgamma, dtype, rtol=1e-4 if dtype == np.float32 else 1e-11,
               atol=1e-4 if dtype == np.float32 else 1e-11)
        _close(gdbeta, dbeta, dtype, rtol=1e-4 if dtype == np.float32 else 1e-11,
               atol=1e-4 if dtype == np.float32 else 1e-11)


def test_batchnorm_running_stats_formula():
    # biased variance, running = momentum * running + (1 - momentum) * batch
    x = _inputs((50, 3), np.float64, seed=17)
    rm, rv = cp.zeros(3), cp.ones(3)
    nn.batchnorm_forward(to_gpu(x), cp.ones(3), cp.zeros(3), rm, rv, momentum=0.8, training=True)
    np.testing.assert_allclose(to_cpu(rm), 0.2 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(to_cpu(rv), 0.8 + 0.2 * x.var(axis=0), rtol=1e-12)


def test_bad_input():
    x = cp.ones((4, 3), dtype=cp.float32)
    W = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"x on cuda, W on cpu"):
        nn.dense_forward(x, W)
    with pytest.raises(ValueError, match=r"W has shape"):
        nn.dense_forward(x, cp.ones((4, 2), dtype=cp.float32))
    with pytest.raises(ValueError, match="share one dtype"):
        nn.dense_forward(x, cp.ones((3, 2), dtype=cp.float64))
    with pytest.raises(ValueError, match="needs z"):
        nn.dense_backward(cp.ones((4, 2), dtype=cp.float32), x, cp.ones((3, 2), dtype=cp.float32),
                          cp.ones((4, 2), dtype=cp.float32), "gelu")
    with pytest.raises(ValueError, match=r"dy on cuda, x on cpu"):
        nn.activation_backward(cp.ones(3), np.ones(3), cp.ones(3), "relu")
    with pytest.raises(ValueError, match="has shape"):
        nn.activation_backward(cp.ones(3), cp.ones(4), cp.ones(3), "relu")
    # views are copied, not read as raw memory
    big = to_gpu(_inputs((6, 8), np.float32, seed=18))
    np.testing.assert_array_equal(to_cpu(nn.activation(big[:, ::2], "relu")),
                                  nn.activation(to_cpu(big)[:, ::2], "relu"))
    # batch norm: running statistics must be CuPy arrays on the GPU, of the right shape and dtype
    g, b = cp.ones(3, dtype=cp.float32), cp.zeros(3, dtype=cp.float32)
    with pytest.raises(ValueError, match=r"running_mean on cpu"):
        nn.batchnorm_forward(x, g, b, np.zeros(3, np.float32), cp.ones(3, dtype=cp.float32), training=True)
    with pytest.raises(ValueError, match=r"running_mean has shape"):
        nn.batchnorm_forward(x, g, b, cp.zeros(4, dtype=cp.float32), cp.ones(3, dtype=cp.float32))
    with pytest.raises(ValueError, match=r"running_var has dtype"):
        nn.batchnorm_forward(x, g, b, cp.zeros(3, dtype=cp.float32), cp.ones(3, dtype=cp.float64))
    rm = cp.zeros(3, dtype=cp.float32)
    with pytest.raises(ValueError, match="separate arrays"):
        nn.batchnorm_forward(x, g, b, rm, rm)
    with pytest.raises(ValueError, match="gamma has shape"):
        nn.batchnorm_forward(x, cp.ones(4, dtype=cp.float32), b, rm, cp.ones(3, dtype=cp.float32))
    _, cache = nn.batchnorm_forward(x, g, b, rm, cp.ones(3, dtype=cp.float32), training=True)
    with pytest.raises(ValueError, match="cache mean"):
        nn.batchnorm_backward(x, x, g, (cache[0].get(), cache[1], True))


def test_outputs_fully_written_over_poison():
    # outputs are fresh arrays; a launch that missed elements would leave uninitialised memory:
    # fill the pool with NaN first so missed elements show as NaN
    for shape in ((1, 1), (7, 13), (64, 257)):
        p = poisoned(shape, cp.float32)
        del p
        x = to_gpu(_inputs(shape, np.float32, seed=19))
        for kind in ("relu", "softmax", "gelu"):
            assert not bool(cp.isnan(nn.activation(x, kind)).any())
        p = poisoned((shape[1],), cp.float32)
        del p
        y, cache = nn.batchnorm_forward(x, cp.ones(shape[1], dtype=cp.float32), cp.zeros(shape[1], dtype=cp.float32),
                                        cp.zeros(shape[1], dtype=cp.float32), cp.ones(shape[1], dtype=cp.float32),
                                        training=True)
        assert not bool(cp.isnan(y).any()) and not bool(cp.isnan(cache[0]).any())
