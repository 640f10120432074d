"""Winograd F(2x2) / F(4x4) on the edges of the per-ISA register tiles and transform groups.

The float transforms work on groups of L tiles (4 SSE2, 8 AVX2, 16 AVX-512) with the tiles of a
group permuted over the vector lanes, segments padded to whole groups, rows ending in an
overlapping vector; the element-wise stage pads K to the register tile (5 on AVX2, 4 on SSE2).
These cases hit every such edge: planes narrower and wider than a vector, widths around
multiples of 8 and 16, one tile row, images shorter than a chunk, K = 1 and primes, negative
padding (the backward pass), chunks spanning several images. Run under each ISA
(PYDL_ISA=generic and the default); one case is also run in a subprocess per available ISA.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import pydl
from pydl import ops

WINO = ["winograd_f2", "winograd_f4"]
TOL = {"winograd_f2": 2e-5, "winograd_f4": 2e-4}  # relative to max |reference|, as test_conv2d

# (N, C, H, W, K, pads (t, b, l, r))
SHAPES = [
    (1, 1, 3, 3, 1, (0, 0, 0, 0)),
    (2, 3, 1, 1, 2, (1, 1, 1, 1)),
    (1, 2, 2, 9, 3, (1, 1, 1, 1)),
    (3, 5, 7, 7, 7, (1, 1, 1, 1)),
    (2, 4, 8, 8, 5, (1, 1, 1, 1)),
    (2, 3, 9, 15, 11, (0, 2, 2, 0)),
    (1, 6, 16, 17, 13, (1, 1, 1, 1)),
    (1, 3, 5, 31, 4, (2, 2, 2, 2)),
    (2, 7, 13, 33, 6, (1, 0, 0, 1)),
    (4, 2, 14, 14, 10, (1, 1, 1, 1)),
    (1, 3, 6, 65, 9, (1, 1, 1, 1)),
    (5, 1, 4, 6, 1, (0, 1, 1, 0)),
]


def _ref(x, w, b, pads, relu):
    t, bo, l, r = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, bo), (l, r)))
    N, C, H, W = xp.shape
    K = w.shape[0]
    P, Q = H - 2, W - 2
    y = np.zeros((N, K, P, Q))
    for rr in range(3):
        for s in range(3):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, rr:rr + P, s:s + Q], w[:, :, rr, s].astype(np.float64))
    if b is not None:
        y += b[None, :, None, None]
    return np.maximum(y, 0) if relu else y


@pytest.mark.parametrize("algo", WINO)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N%dC%d_%dx%d_K%d_p%s" % (s[:5] + ("".join(map(str, s[5])),)))
def test_forward_edges(algo, shape, threads):
    N, C, H, W, K, pads = shape
    rng = np.random.default_rng(H * 100 + W)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    for relu in (False, True):
        out = np.full((N, K, H + pads[0] + pads[1] - 2, W + pads[2] + pads[3] - 2), np.nan, np.float32)
        y = ops.conv2d(x, w, b, padding=pads, algo=algo, activation="relu" if relu else None, out=out)
        ref = _ref(x, w, b, pads, relu)
        assert not np.isnan(y).any()
        np.testing.assert_allclose(y, ref, rtol=0, atol=TOL[algo] * max(1.0, np.abs(ref).max()))
        naive = ops.conv2d(x, w, b, padding=pads, algo="naive", activation="relu" if relu else None)
        np.testing.assert_allclose(y, naive, rtol=0, atol=TOL[algo] * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("algo", WINO)
@pytest.mark.parametrize("shape", SHAPES[2:9], ids=lambda s: "N%dC%d_%dx%d_K%d" % s[:5])
def test_backward_input_edges(algo, shape, threads):
    N, C, H, W, K, _ = shape
    rng = np.random.default_rng(7 + H * W)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    for pad in (0, 1, 2):
        if H + 2 * pad < 3 or W + 2 * pad < 3:
            continue
        dy = rng.standard_normal((N, K, H + 2 * pad - 2, W + 2 * pad - 2)).astype(np.float32)
        dx = ops.conv2d_backward(dy, x, w, padding=pad, algo=algo)[0]
        dxn = ops.conv2d_backward(dy, x, w, padding=pad, algo="naive")[0]
        np.testing.assert_allclose(dx, dxn, rtol=0, atol=TOL[algo] * max(1.0, np.abs(dxn).max()))


def test_nan_propagates():
    x = np.ones((1, 4, 12, 20), np.float32)
    x[0, 2, 5, 9] = np.nan
    w = np.ones((6, 4, 3, 3), np.float32)
    for algo in WINO:
        y = ops.conv2d(x, w, padding=1, algo=algo, activation="relu")
        assert np.isnan(y[:, :, 4:7, 8:11]).all()


_SNIPPET = """
import numpy as np
from pydl import ops
rng = np.random.default_rng(3)
x = rng.standard_normal((3, 7, 13, 29)).astype(np.float32)
w = rng.standard_normal((11, 7, 3, 3)).astype(np.float32)
for algo in ("winograd_f2", "winograd_f4"):
    y = ops.conv2d(x, w, padding=1, algo=algo)
    r = ops.conv2d(x, w, padding=1, algo="naive")
    assert np.abs(y - r).max() <= 2e-4 * np.abs(r).max(), algo
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_each_isa_subprocess(isa):
    if isa == "avx2":
        flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
        if " avx2" not in flags or " fma" not in flags:
            pytest.skip("no AVX2 + FMA here")
    env = dict(os.environ, PYDL_ISA=isa)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(pydl.__file__)))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _SNIPPET], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def _same_nonfinite(got, want):
    """Same positions of NaN, +Inf and -Inf; finite values close."""
    for f in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(f(got), f(want), err_msg=f.__name__)
    fin = np.isfinite(want)
    scale = max(1.0, float(np.abs(want[fin]).max())) if fin.any() else 1.0
    np.testing.assert_allclose(got[fin], want[fin], rtol=0, atol=2e-4 * scale)


@pytest.mark.parametrize("algo", WINO)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("relu", [False, True])
def test_nonfinite_input_propagates_as_direct(algo, bad, relu):
    """One Inf or NaN reaches exactly the outputs whose receptive field holds it, with the value
    the direct sum gives (Inf stays Inf, not NaN), for every ISA's transform grouping."""
    rng = np.random.default_rng(7)
    for n, c, h, w_, k, pads in SHAPES[1:8] + [(2, 8, 50, 50, 16, (1, 1, 1, 1))]:
        x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
        x[n - 1, c // 2, h // 2, w_ // 3] = bad
        x[0, 0, 0, w_ - 1] = bad
        w = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        act = "relu" if relu else None
        want = ops.conv2d(x, w, b, padding=pads, algo="naive", activation=act)
        got = ops.conv2d(x, w, b, padding=pads, algo=algo, activation=act)
        _same_nonfinite(got, want)


@pytest.mark.parametrize("algo", WINO)
def test_nonfinite_gradient_propagates_as_direct(algo):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 5, 20, 23)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 6, 20, 23)).astype(np.float32)
    dy[1, 3, 10, 11] = np.inf
    dy[0, 0, 19, 0] = np.nan
    want = ops.conv2d_backward(dy, x, w, padding=1, algo="naive")[0]
    got = ops.conv2d_backward(dy, x, w, padding=1, algo=algo)[0]
    _same_nonfinite(got, want)
