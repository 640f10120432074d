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
