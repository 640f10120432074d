"""What of the CUDA recurrent ops can be checked without a GPU: device dispatch and mismatch errors
in ops.rnn (fake CuPy classes), the launch geometry and split rule of pydl.cuda.rnn, the split-K
layout of the backward's per-step product (in NumPy), and that every kernel the launcher names
exists in kernels/rnn.cu."""
from __future__ import annotations

import re

import numpy as np
import pytest

import pydl
import pydl.cuda
from pydl.cuda import rnn as cuda_rnn
from pydl.ops import rnn_backward, rnn_forward


def _fake_cupy(shape=(2, 3, 4), dtype=np.float32):
    cls = type("ndarray", (), {"__module__": "cupy", "shape": shape, "ndim": len(shape),
                               "dtype": np.dtype(dtype)})
    return cls()


def _np_args(G=4, N=2, T=3, C=4, H=5):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N, T, C)).astype(np.float32), rng.standard_normal((C, G * H)).astype(np.float32),
            rng.standard_normal((H, G * H)).astype(np.float32), np.zeros(G * H, np.float32))


def test_mixed_devices_raise_naming_each_argument():
    x, W, U, b = _np_args()
    with pytest.raises(ValueError, match=r"\[rnn_forward\[lstm\]\].*x on cuda, W on cpu, U on cpu, b on cpu"):
        rnn_forward("lstm", _fake_cupy(), W, U, b)
    with pytest.raises(ValueError, match=r"different devices.*h0 on cuda"):
        rnn_forward("lstm", x, W, U, b, h0=_fake_cupy((2, 5)))
    with pytest.raises(ValueError, match=r"different devices.*mask on cuda"):
        rnn_forward("lstm", x, W, U, b, mask=_fake_cupy((2, 3), np.bool_))
    with pytest.raises(ValueError, match=r"different devices.*recurrent_scale on cuda"):
        rnn_forward("gru", x, W[:, :15], U[:, :15], b[:15], recurrent_scale=_fake_cupy((2, 5)))
    # the cell is checked first, as on the CPU
    with pytest.raises(ValueError, match=r"cell must be one of"):
        rnn_forward("cnn", _fake_cupy(), W, U, b)
    with pytest.raises(ValueError, match=r"activation must be 'tanh' or 'relu'"):
        rnn_forward("rnn", _fake_cupy(), W, U, b, activation="gelu")


def test_backward_with_gradients_on_another_device():
    x, W, U, b = _np_args()
    *_, cache = rnn_forward("lstm", x, W, U, b)
    with pytest.raises(ValueError, match=r"\[rnn_backward\[lstm\]\].*dout on cuda, cache on cpu"):
        rnn_backward("lstm", _fake_cupy((2, 3, 5)), None, None, cache)
    with pytest.raises(ValueError, match=r"dc_T on cuda, cache on cpu"):
        rnn_backward("lstm", None, None, _fake_cupy((2, 5)), cache)
    with pytest.raises(TypeError, match=r"cache must be the RNNCache"):
        rnn_backward("lstm", _fake_cupy((2, 3, 5)), None, None, object())


def test_cpu_path_returns_numpy():
    x, W, U, b = _np_args()
    out, hT, cT, cache = rnn_forward("lstm", x, W, U, b)
    assert all(type(a) is np.ndarray for a in (out, hT, cT, cache.gates, cache.x))
    g = rnn_backward("lstm", np.ones_like(out), None, None, cache)
    assert all(type(g[k]) is np.ndarray for k in ("dx", "dW", "dU", "db", "dh0", "dc0"))


@pytest.mark.parametrize("N,H", [(1, 1), (3, 5), (64, 512), (70000, 257)])
def test_grid_covers_units_and_rows(N, H):
    gx, gy = cuda_rnn.grid(N, H)
    assert gx * cuda_rnn.THREADS >= H > (gx - 1) * cuda_rnn.THREADS
    assert 1 <= gy <= 65535 and gy == min(N, 65535)


def test_split_factor():
    assert cuda_rnn.split_factor(64, 512, 4, 132) == 4  # 8 tiles plain, 128 split: one wave on an H200
    assert cuda_rnn.split_factor(64, 512, 3, 132) == 3
    assert cuda_rnn.split_factor(64, 512, 1, 132) == 1
    assert cuda_rnn.split_factor(3, 5, 4, 1) == 1  # one tile already fills a one-SM GPU
    assert cuda_rnn.split_factor(256, 1024, 4, 132) == 1  # split: 1024 tiles, many waves
    assert cuda_rnn.split_factor(512, 512, 4, 132) == 1  # plain: 64 tiles, about half the GPU
    for N, H, G, sms in [(1, 1, 4, 132), (3, 5, 3, 16), (128, 256, 4, 108), (512, 64, 4, 132)]:
        S = cuda_rnn.split_factor(N, H, G, sms)
        assert S in (1, G)


@pytest.mark.parametrize("N,H,G", [(1, 1, 4), (3, 5, 3), (4, 7, 4), (2, 6, 1)])
def test_split_product_layout(N, H, G):
    """The diagonal blocks of (dG viewed (N*G, H)) @ (U viewed (H*G, H))^T sum to dG @ U^T, read
    as rnn_split_sum in kernels/rnn.cu reads them."""
    rng = np.random.default_rng(1)
    dG = rng.standard_normal((N, G * H))
    U = rng.standard_normal((H, G * H))
    S = G
    P = dG.reshape(N * S, G * H // S) @ U.reshape(H * S, G * H // S).T
    flat = P.ravel()
    step = H * S + 1
    got = np.empty((N, H))
    for n in range(N):
        for j in range(H):
            base = (n * S) * (H * S) + j * S
            got[n, j] = sum(flat[base + s * step] for s in range(S))
    np.testing.assert_allclose(got, dG @ U.T, rtol=1e-12, atol=1e-12)


def test_launched_kernels_exist_in_source():
    src = pydl.cuda.source("rnn")
    entries = set(re.findall(r"PYDL_RNN_(?:FWD|BWD)_ENTRY\((\w+), \w+, \w+, (f32|f64)\)", src))
    for cell in cuda_rnn.CELL_NAMES.values():
        for sfx in ("f32", "f64"):
            assert (f"rnn_fwd_{cell}", sfx) in entries
            assert (f"rnn_bwd_{cell}", sfx) in entries
    for helper in ("rnn_scale_rows", "rnn_dh_total"):
        for sfx in ("f32", "f64"):
            assert f"{helper}_{sfx}(" in src


def test_recurrent_layers_support_cuda():
    for cls in (pydl.layers.SimpleRNN, pydl.layers.LSTM, pydl.layers.GRU, pydl.layers.Bidirectional):
        assert cls.supports_cuda
    assert pydl.layers.Embedding.supports_cuda  # ids move to the GPU as integers (tests/test_cuda_rnn.py)
