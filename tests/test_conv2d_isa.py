"""conv2d paths whose register tiles differ per ISA (direct forward, direct dx as a flipped forward
convolution, the weight gradient's small-C*R*S vector tile and its grouped GEMM path): edge sizes
against the float64 references, NaN propagation, and bitwise equality across thread counts and
repeated calls (the reduction order is fixed by the shapes alone)."""
import numpy as np
import pytest

import pydl
from pydl import ops
from reference_conv import conv2d_backward_ref, conv2d_ref

# (N, C, H, W, K, R, S, stride, pads (t, b, l, r), dilation)
SHAPES = [
    (1, 1, 1, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),        # everything 1
    (2, 1, 28, 28, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # first CNN layer (K = 32: blocks 6,6,5,5,5,5)
    (3, 1, 7, 13, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),       # K and Q prime, below one tile
    (2, 2, 9, 31, 13, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1)),      # Q = 29 past 3 vectors
    (3, 3, 11, 17, 5, 5, 3, (1, 1), (2, 1, 0, 2), (1, 1)),      # C*R*S = 45 (GEMM dW), asymmetric pads
    (2, 3, 10, 9, 11, 3, 3, (1, 1), (3, 3, 3, 3), (1, 1)),      # padding > R-1: negative pad in dx
    (2, 2, 12, 14, 9, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),      # dilation 2
    (3, 4, 13, 11, 6, 3, 2, (2, 1), (1, 0, 1, 1), (1, 1)),      # stride 2 rows: scatter dx
    (2, 3, 15, 16, 7, 3, 3, (2, 2), (1, 1, 1, 1), (1, 2)),      # strided, dilated width
    (9, 2, 6, 5, 3, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),        # 1x1, 9 images in 8 groups
    (17, 5, 8, 8, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),       # CRS 45, several images per GEMM
    (2, 4, 30, 26, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # PQ >= 512: GEMM per row chunk
]


def _ids():
    return [f"N{s[0]}C{s[1]}_{s[2]}x{s[3]}K{s[4]}_{s[5]}x{s[6]}_s{s[7][0]}{s[7][1]}_d{s[9][0]}{s[9][1]}" for s in SHAPES]


def _data(cfg, seed=0):
    N, C, H, W, K, R, S = cfg[:7]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, R, S)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    return x, w, b


def _rel(got, ref):
    return np.max(np.abs(np.asarray(got, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30)


@pytest.mark.parametrize("cfg", SHAPES, ids=_ids())
def test_direct_and_dw_match_reference(cfg, threads):
    x, w, b = _data(cfg)
    st, pads, dl = cfg[7], cfg[8], cfg[9]
    ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), st, pads, dl)
    y = ops.conv2d(x, w, b, st, pads, dl, algo="direct")
    assert y.shape == ref.shape
    assert _rel(y, ref) <= 2e-5
    yr = ops.conv2d(x, w, b, st, pads, dl, algo="direct", activation="relu")
    np.testing.assert_array_equal(yr, np.maximum(y, 0))
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    dx, dw, db = ops.conv2d_backward(dy, x, w, st, pads, dl, algo="direct")
    rdx, rdw, rdb = conv2d_backward_ref(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), st, pads,
                                        dl)
    assert _rel(dx, rdx) <= 2e-5
    assert _rel(dw, rdw) <= 2e-5
    assert _rel(db, rdb) <= 2e-5


@pytest.mark.parametrize("cfg", SHAPES, ids=_ids())
def test_float64_direct(cfg):
    x, w, b = (a.astype(np.float64) for a in _data(cfg, seed=3))
    st, pads, dl = cfg[7], cfg[8], cfg[9]
    y = ops.conv2d(x, w, b, st, pads, dl, algo="direct")
    np.testing.assert_allclose(y, conv2d_ref(x, w, b, st, pads, dl), rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(4).standard_normal(y.shape)
    got = ops.conv2d_backward(dy, x, w, st, pads, dl, algo="direct")
    for g, r in zip(got, conv2d_backward_ref(dy, x, w, st, pads, dl)):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-11)


def _all_outputs(x, w, b, dy, cfg):
    st, pads, dl = cfg[7], cfg[8], cfg[9]
    outs = [ops.conv2d(x, w, b, st, pads, dl, algo="direct")]
    outs += list(ops.conv2d_backward(dy, x, w, st, pads, dl, algo="direct"))
    outs += list(ops.conv2d_backward(dy, x, w, st, pads, dl, algo="im2col"))
    return outs


@pytest.mark.parametrize("cfg", [SHAPES[1], SHAPES[4], SHAPES[10], SHAPES[11],
                                 (37, 1, 14, 14, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
                                 (11, 16, 10, 10, 24, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1))])
def test_bitwise_same_for_any_thread_count(cfg):
    x, w, b = _data(cfg, seed=5)
    st, pads, dl = cfg[7], cfg[8], cfg[9]
    yshape = ops.conv2d_output_shape(x.shape, w.shape, st, pads, dl)
    dy = np.random.default_rng(6).standard_normal(yshape).astype(np.float32)
    old = pydl.get_num_threads()
    try:
        pydl.set_num_threads(1)
        one = _all_outputs(x, w, b, dy, cfg)
        for nt in (2, 3):
            pydl.set_num_threads(nt)
            for _ in range(2):
                for a, c in zip(one, _all_outputs(x, w, b, dy, cfg)):
                    np.testing.assert_array_equal(a, c)
    finally:
        pydl.set_num_threads(old)


@pytest.mark.parametrize("C", [1, 8])
def test_nan_in_dy_stays_in_its_channel(C, threads):
    # One NaN in dy[n, k] must reach dW[k] and db[k] only (the small-CRS tile reads dy's last
    # partial vector lane by lane; zero-padded columns must not turn a neighbour's NaN into NaN).
    cfg = (3, C, 9, 7, 10, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1))
    x, w, _ = _data(cfg, seed=8)
    dy = np.random.default_rng(9).standard_normal((3, 10, 9, 7)).astype(np.float32)
    dy[1, 4, 8, 6] = np.nan  # last element of a plane
    dx, dw, db = ops.conv2d_backward(dy, x, w, padding=1, algo="direct")
    bad = np.isnan(dw).any(axis=(1, 2, 3))
    assert bad[4] and not np.delete(bad, 4).any()
    assert np.isnan(db[4]) and not np.isnan(np.delete(db, 4)).any()
    assert np.isnan(dx[1]).any() and not np.isnan(dx[[0, 2]]).any()


def test_empty_batch_backward():
    x = np.zeros((0, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    dy = np.zeros((0, 3, 5, 5), np.float32)
    for algo in ("direct", "im2col"):
        dx, dw, db = ops.conv2d_backward(dy, x, w, padding=1, algo=algo)
        assert dx.shape == x.shape
        np.testing.assert_array_equal(dw, 0)
        np.testing.assert_array_equal(db, 0)
