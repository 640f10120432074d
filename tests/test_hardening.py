"""Hostile arguments get a clear exception naming the argument: never a crash or a wrong answer."""
import numpy as np
import pytest

from pydl import _core, ops

BAD_OUTS = [3, 2.5, np.float32(1.0), [[1.0]], memoryview(b"abcd"), "out", object()]


@pytest.mark.parametrize("bad", BAD_OUTS, ids=lambda b: type(b).__name__)
def test_non_array_out_is_type_error(bad):
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        ops.conv2d(x, w, out=bad)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        ops.max_pool2d(x, 2, out=bad)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        ops.avg_pool2d(x, 2, out=bad)


@pytest.mark.parametrize("bad", BAD_OUTS, ids=lambda b: type(b).__name__)
def test_kernels_reject_non_array_out_directly(bad):
    # the bindings check too, for callers that skip pydl.ops
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        _core.conv2d_forward(x, w, None, bad, (1, 1), (0, 0, 0, 0), (1, 1), "im2col", "none")
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        _core.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), True, False, bad, None)
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        _core.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), True, False, None, bad)


def test_out_overlapping_an_input_is_rejected():
    buf = np.zeros(2 * 4 * 4 + 3 * 4 * 4, np.float32)
    x = buf[: 2 * 16].reshape(1, 2, 4, 4)
    x[:] = 1.0
    w = np.ones((2, 2, 1, 1), np.float32)
    with pytest.raises(ValueError, match="overlaps input x"):
        ops.conv2d(x, w, out=x)
    wv, big = _alias_w(w)
    with pytest.raises(ValueError, match="overlaps input w"):
        ops.conv2d(x, wv, out=big[:32].reshape(1, 2, 4, 4))
    y = np.empty((1, 2, 2, 2), np.float32)
    ops.max_pool2d(x, 2, out=y)  # separate memory: fine
    with pytest.raises(ValueError, match="overlaps input x"):
        ops.max_pool2d(x, 2, out=buf[4:12].reshape(1, 2, 2, 2))
    with pytest.raises(ValueError, match="overlaps input x"):
        ops.avg_pool2d(x, 2, out=buf[:8].reshape(1, 2, 2, 2))


def _alias_w(w):
    big = np.zeros(64, np.float32)
    wv = big[:4].reshape(2, 2, 1, 1)
    wv[:] = w
    return wv, big


def test_misaligned_out_is_rejected():
    raw = np.zeros(1 * 3 * 2 * 2 * 4 + 1, np.uint8)
    out = raw[1:].view(np.float32).reshape(1, 3, 2, 2)
    assert not out.flags.aligned
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="aligned"):
        ops.conv2d(x, w, out=out)


@pytest.mark.parametrize("arg", ["stride", "dilation", "padding"])
@pytest.mark.parametrize("value", [2**31, 2**62, 2**63 - 1, 2**64])
def test_huge_geometry_is_a_clear_error(arg, value):
    x = np.ones((1, 1, 5, 5), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=f"{arg} must be <= 2147483647"):
        ops.conv2d(x, w, **{arg: value})
    with pytest.raises(ValueError, match=f"{arg} must be <= 2147483647"):
        ops.conv2d_output_shape(x.shape, w.shape, **{arg: value})
    if arg != "dilation":
        with pytest.raises(ValueError, match=f"{arg} must be <= 2147483647"):
            ops.max_pool2d(x, 2, **{arg: value})
        with pytest.raises(ValueError, match=f"{arg} must be <= 2147483647"):
            ops.avg_pool2d(x, 2, **{arg: value})


@pytest.mark.parametrize("value", [2**31, 2**63 - 1])
def test_huge_pool_size_is_a_clear_error(value):
    x = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="pool_size must be <= 2147483647"):
        ops.max_pool2d(x, value, stride=1, padding=0)


def test_pool_window_far_wider_than_the_input_is_fast():
    import time
    x = np.full((1, 1, 1, 1), 2.0, np.float32)
    t0 = time.perf_counter()
    y, am = ops.max_pool2d(x, 2**30, padding=2**30 - 1)
    assert y.ravel().tolist() == [2.0] and am.ravel().tolist() == [0]
    assert ops.avg_pool2d(x, 2**30, padding=2**30 - 1, count_include_pad=False).ravel().tolist() == [2.0]
    v = ops.avg_pool2d(x, 2**30, padding=2**30 - 1).ravel()[0]
    assert v == np.float32(2.0 / 2**60)
    assert time.perf_counter() - t0 < 1.0


def test_big_endian_float64_stays_float64():
    from pydl.layers import Dense
    x = np.linspace(-1, 1, 12).reshape(3, 4).astype(">f8")
    w = np.linspace(0.5, 1.5, 20).reshape(4, 5).astype(">f8")
    got = __import__("pydl").matmul(x, w)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, x.astype("<f8") @ w.astype("<f8"), rtol=1e-15)
    y = ops.conv2d(x.reshape(1, 1, 3, 4), w[:3, :3].reshape(1, 1, 3, 3).copy(), padding=1)
    assert y.dtype == np.float64


def test_flatten_and_reshape_sizes_do_not_wrap():
    from pydl.layers import Flatten, Reshape
    assert Flatten().compute_output_shape((None, 2**32, 2**32)) == (None, 2**64)
    assert Reshape((2**33, -1)).compute_output_shape((None, 2**32, 2**32)) == (None, 2**33, 2**31)
    with pytest.raises(ValueError):
        Reshape((3, -1)).compute_output_shape((None, 2**32, 2**32 + 1))


def _misaligned(a):
    """A C-contiguous view of `a`'s values starting one byte past an aligned address."""
    raw = np.zeros(a.nbytes + a.itemsize, np.uint8)
    view = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    view[...] = a
    assert view.flags.c_contiguous and not view.flags.aligned
    return view


def test_misaligned_inputs_give_the_aligned_results():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    a = rng.standard_normal((17, 33)).astype(np.float32)
    np.testing.assert_array_equal(ops.conv2d(_misaligned(x), _misaligned(w), padding=1), ops.conv2d(x, w, padding=1))
    np.testing.assert_array_equal(ops.max_pool2d(_misaligned(x), 2)[0], ops.max_pool2d(x, 2)[0])
    np.testing.assert_array_equal(ops.matmul(_misaligned(a), _misaligned(a.T.copy())), ops.matmul(a, a.T.copy()))
    np.testing.assert_array_equal(ops.activation(_misaligned(a), "tanh"), ops.activation(a, "tanh"))


def test_kernels_reject_misaligned_arrays_directly():
    a = _misaligned(np.ones((4, 4), np.float32))
    c = np.empty((4, 4), np.float32)
    with pytest.raises(ValueError, match="aligned"):
        _core.gemm(a, a, c, 1.0, 0.0, False, False)


def test_batchnorm_running_stats_aliasing_x_are_rejected():
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    var = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="running_mean overlaps input x"):
        ops.batchnorm_forward(x, gamma, beta, x[0], var, training=True)
    with pytest.raises(ValueError, match="running_var overlaps input gamma"):
        ops.batchnorm_forward(x, gamma, beta, np.zeros(3, np.float32), gamma, training=True)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnn_backward_uses_the_forward_weights_and_inputs(cell):
    """Changing x, W or U in place between forward and backward (an optimizer step, a reused
    buffer) must not change the gradients of the forward that ran."""
    rng = np.random.default_rng(2)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    N, T, C, H = 3, 5, 4, 6
    x = rng.standard_normal((N, T, C)).astype(np.float32)
    W = rng.standard_normal((C, G * H)).astype(np.float32) * 0.3
    U = rng.standard_normal((H, G * H)).astype(np.float32) * 0.3
    b = np.zeros(G * H, np.float32)
    dout = rng.standard_normal((N, T, H)).astype(np.float32)
    out, _, _, cache = ops.rnn_forward(cell, x, W, U, b)
    want = ops.rnn_backward(cell, dout, None, None, cache)
    out2, _, _, cache2 = ops.rnn_forward(cell, x, W, U, b)
    x += 1.0
    W *= -2.0
    U *= 3.0
    got = ops.rnn_backward(cell, dout, None, None, cache2)
    for k in ("dx", "dW", "dU", "db", "dh0"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_long_reductions_are_accurate_on_16m_element_planes():
    """Batch-norm statistics, losses and metrics over 2^24 float32 values of ~1.1: within 1e-6
    relative of the float64 answer (a float32 running sum is off by ~1e-3 here)."""
    import pydl

    rng = np.random.default_rng(3)
    x = (1.1 + 1e-3 * rng.standard_normal((1, 1, 4096, 4096))).astype(np.float32)
    x64 = x.astype(np.float64)
    rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    _, (mean, inv_std, _) = ops.batchnorm_forward(x, np.ones(1, np.float32), np.zeros(1, np.float32), rm, rv,
                                                  momentum=0.0, epsilon=1e-12, training=True)
    assert abs(mean[0] - x64.mean()) <= 1e-6 * abs(x64.mean())
    assert abs(1.0 / inv_std[0] ** 2 - x64.var()) <= 1e-6 * x64.var() + 1e-12
    assert abs(rm[0] - x64.mean()) <= 1e-6 * abs(x64.mean())
    flat = x.reshape(4096, 4096)
    zeros = np.zeros_like(flat)
    for kind, want in (("mse", (x64 ** 2).mean()), ("mae", np.abs(x64).mean())):
        got = ops.loss(kind, zeros, flat)[0]
        assert abs(got - want) <= 1e-6 * want, (kind, got, want)
    for metric, want in ((pydl.metrics.mean_squared_error, (x64 ** 2).mean()),
                         (pydl.metrics.mean_absolute_error, np.abs(x64).mean())):
        got = float(metric(zeros, flat))
        assert abs(got - want) <= 1e-6 * want, (metric.__name__, got, want)
