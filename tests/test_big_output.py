"""Outputs of >= 32 MiB (pooling gradients) live on recycled blocks: results, reuse, limits, threads."""
import threading

import numpy as np
import pytest

from pydl import _core, ops

BIG = 32 << 20
# dx of 8 x 16 x 256 x 260 float32 = 34 MB, just over the line.
SHAPE = (8, 16, 256, 260)


@pytest.fixture(autouse=True)
def empty_cache():
    _core.output_cache_clear()
    yield
    _core.output_cache_clear()


def _max_pool_case(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPE).astype(dtype)
    y, am = ops.max_pool2d(x, 3, 2, 1)
    dy = rng.standard_normal(y.shape).astype(dtype)
    return x, dy, am


def _scatter_ref(dy, am, x_shape):
    """dx by bincount over flat indices (plane offset + argmax), in float64."""
    n, c, h, w = x_shape
    planes = np.arange(n * c, dtype=np.int64)[:, None] * (h * w)
    flat = (planes + am.reshape(n * c, -1).astype(np.int64)).ravel()
    return np.bincount(flat, weights=dy.astype(np.float64).ravel(), minlength=n * c * h * w).reshape(x_shape)


def test_big_max_pool_backward_is_right_and_reuses_its_block():
    x, dy, am = _max_pool_case()
    want = _scatter_ref(dy, am, x.shape)
    dx = ops.max_pool2d_backward(dy, am, x.shape, 3, 2, 1)
    assert dx.nbytes >= BIG and dx.dtype == np.float32 and dx.shape == x.shape
    assert dx.flags.c_contiguous and dx.flags.writeable
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-6)
    address = dx.ctypes.data
    dx[...] = np.nan  # what the next user of this block finds there
    del dx
    assert _core.output_cache_bytes() >= BIG
    again = ops.max_pool2d_backward(dy, am, x.shape, 3, 2, 1)
    assert again.ctypes.data == address  # the freed block, taken from the cache
    assert _core.output_cache_bytes() == 0
    np.testing.assert_allclose(again, want, rtol=1e-6, atol=1e-6)  # every element rewritten
    # The scatter (no geometry) writes the same block in full too.
    again[...] = np.nan
    del again
    scattered = ops.max_pool2d_backward(dy, am, x.shape)
    np.testing.assert_allclose(scattered, want, rtol=1e-6, atol=1e-6)


def test_big_avg_and_global_pool_backward_float64():
    rng = np.random.default_rng(1)
    shape = (4, 16, 256, 260)  # 34 MB of float64
    dy = rng.standard_normal((4, 16, 128, 130))
    stale = ops.avg_pool2d_backward(dy, shape, 2)
    address = stale.ctypes.data
    stale[...] = np.nan
    del stale
    dx = ops.avg_pool2d_backward(dy, shape, 2)
    assert dx.ctypes.data == address and _core.output_cache_bytes() == 0
    assert dx.dtype == np.float64 and dx.nbytes >= BIG
    np.testing.assert_array_equal(dx, np.repeat(np.repeat(dy, 2, axis=2), 2, axis=3) / 4)
    dx[...] = np.nan
    del dx
    g = rng.standard_normal((4, 16))
    dx = ops.global_avg_pool2d_backward(g, shape)
    assert dx.ctypes.data == address and _core.output_cache_bytes() == 0
    np.testing.assert_allclose(dx, np.broadcast_to(g[:, :, None, None] / (256 * 260), shape), rtol=1e-15)


def test_small_outputs_are_plain_numpy_allocations():
    dy = np.ones((2, 3, 4, 4), np.float32)
    dx = ops.avg_pool2d_backward(dy, (2, 3, 8, 8), 2)
    assert dx.flags.owndata
    del dx
    assert _core.output_cache_bytes() == 0


def test_cache_keeps_at_most_four_blocks_and_clear_frees_them():
    x, dy, am = _max_pool_case(2)
    outs = [ops.max_pool2d_backward(dy, am, x.shape, 3, 2, 1) for _ in range(6)]
    assert len({o.ctypes.data for o in outs}) == 6  # live arrays never share a block
    block = outs[0].nbytes
    del outs
    cached = _core.output_cache_bytes()
    assert 4 * block <= cached <= 4 * (block + (2 << 20))
    assert _core.output_cache_clear() == cached
    assert _core.output_cache_bytes() == 0


def test_a_much_smaller_output_does_not_take_a_big_block():
    def dx(n):
        return ops.avg_pool2d_backward(np.ones((n, 16, 128, 130), np.float32), (n, 16, 256, 260), 2)

    big = dx(12)  # 51 MB
    del big
    held = _core.output_cache_bytes()
    small = dx(9)  # 38 MB: would waste a quarter of the cached block, so it gets its own
    assert small.nbytes >= BIG
    assert _core.output_cache_bytes() == held
    near = dx(11)  # 47 MB: within 1/8, takes the cached one
    assert _core.output_cache_bytes() == 0
    assert np.all(small == 0.25) and np.all(near == 0.25)


def test_concurrent_python_threads_get_separate_blocks():
    x, dy, am = _max_pool_case(4)
    want = _scatter_ref(dy, am, x.shape)
    errors = []

    def work():
        try:
            for _ in range(4):
                dx = ops.max_pool2d_backward(dy, am, x.shape, 3, 2, 1)
                np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-6)
                dx[...] = np.nan
                del dx
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("algo", ["direct", "im2col", "winograd_f4"])
def test_big_conv_outputs_on_a_reused_block_match_fresh_ones(algo):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 16, 256, 260)).astype(np.float32)  # y and dx: 34 MB each
    w = (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    fresh = ops.conv2d(x, w, b, padding=1, algo=algo)
    assert fresh.nbytes >= BIG
    want = fresh.copy()
    fresh[...] = np.nan
    del fresh
    reused = ops.conv2d(x, w, b, padding=1, algo=algo)
    assert _core.output_cache_bytes() == 0  # it took the freed block
    np.testing.assert_array_equal(reused, want)
    dy = rng.standard_normal(reused.shape).astype(np.float32)
    del reused
    grads = ops.conv2d_backward(dy, x, w, padding=1, algo=algo)
    dx = grads[0]
    assert dx.nbytes >= BIG
    want_dx = dx.copy()
    address = dx.ctypes.data
    dx[...] = np.nan
    del dx, grads
    again = ops.conv2d_backward(dy, x, w, padding=1, algo=algo)[0]
    assert again.ctypes.data == address  # dx took the freed block
    np.testing.assert_array_equal(again, want_dx)
