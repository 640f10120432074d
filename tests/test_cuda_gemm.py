"""GEMM on the GPU (pydl.cuda.gemm through pydl.ops.gemm) against pydl's CPU GEMM and float64 NumPy."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from cuda_support import cp, needs_cuda, poisoned

import pydl
from pydl.ops import gemm

pytestmark = needs_cuda

TRANS = list(itertools.product([False, True], repeat=2))
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-4, np.float64: 1e-12}
# (m, n, k): ones, primes, exact tiles, several tiles with ragged edges, a thin k, k == 1
SHAPES = [(1, 1, 1), (37, 129, 71), (128, 128, 128), (257, 1000, 131), (5, 3, 1), (130, 67, 9)]


def _operands(rng, m, n, k, ta, tb, dtype):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def _reference(a, b, ta, tb, alpha, beta, c):
    """(float64 result, magnitude |alpha| |op(a)| @ |op(b)| + |beta| |c|) on the host."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    opa, opb = (a64.T if ta else a64), (b64.T if tb else b64)
    want = alpha * (opa @ opb)
    mag = abs(alpha) * (np.abs(opa) @ np.abs(opb))
    if beta != 0.0:
        want = want + beta * np.asarray(c, np.float64)
        mag = mag + abs(beta) * np.abs(np.asarray(c, np.float64))
    return want, mag


def _assert_close(got, want, mag, tol, what):
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, what
    err = np.abs(got - want)
    ok = err <= tol * mag + 1e-30
    if not np.all(ok):
        i = np.unravel_index(np.argmax(np.where(ok, 0, 1)), ok.shape)
        raise AssertionError(f"{what}: at {i} got {got[i]!r}, want {want[i]!r} (magnitude {mag[i]:.3g})")


def _check(rng, m, n, k, ta, tb, dtype, alpha=1.0, beta=0.0):
    a, b = _operands(rng, m, n, k, ta, tb, dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    out = poisoned((m, n), dtype) if beta == 0.0 else cp.asarray(c0)
    got = gemm(cp.asarray(a), cp.asarray(b), trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, out=out)
    assert got is out
    cpu = gemm(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, out=c0.copy())
    want, mag = _reference(a, b, ta, tb, alpha, beta, c0)
    what = f"{m}x{n}x{k} ta={ta} tb={tb} {np.dtype(dtype).name} alpha={alpha} beta={beta}"
    host = cp.asnumpy(got)
    _assert_close(host, want, mag, TOL[dtype], what + " vs float64 NumPy")
    _assert_close(host, cpu.astype(np.float64), mag, 2 * TOL[dtype], what + " vs pydl CPU")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANS)
def test_shapes_all_transposes(ta, tb, dtype):
    rng = np.random.default_rng(11)
    for m, n, k in SHAPES:
        _check(rng, m, n, k, ta, tb, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (-1.5, 0.0), (2.0, 0.25)])
def test_alpha_beta(alpha, beta, dtype):
    rng = np.random.default_rng(5)
    for ta, tb in TRANS:
        for m, n, k in [(1, 1, 1), (37, 129, 71), (200, 96, 64)]:
            _check(rng, m, n, k, ta, tb, dtype, alpha, beta)


@pytest.mark.parametrize("ta,tb", TRANS)
def test_every_tile_and_load_variant(ta, tb):
    """Each block tile, with vector loads (aligned, multiples of 4) and scalar loads (odd sizes and a
    pointer one element past a 16-byte boundary)."""
    from pydl.cuda import gemm as cg
    rng = np.random.default_rng(3)
    for dtype in DTYPES:
        for tile in (cg.TILES if dtype == np.float32 else cg.FLOAT64_TILES):
            for m, n, k, shift in [(256, 192, 64, 0), (131, 197, 77, 0), (128, 64, 32, 1)]:
                a, b = _operands(rng, m, n, k, ta, tb, dtype)
                a_dev = cp.empty(a.size + shift, dtype)[shift:].reshape(a.shape)
                a_dev[...] = cp.asarray(a)
                out = poisoned((m, n), dtype)
                assert cg.vector_ok(a_dev, cp.asarray(b), out) == (shift == 0 and m % 4 == 0 and k % 4 == 0
                                                                   and n % 4 == 0)
                cg.gemm(a_dev, cp.asarray(b), out, ta, tb, 1.0, 0.0, tile=tile)
                want, mag = _reference(a, b, ta, tb, 1.0, 0.0, None)
                _assert_close(cp.asnumpy(out), want, mag, TOL[dtype], f"tile {tile} {m}x{n}x{k} shift={shift}")


def test_large_output_picks_big_tile():
    from pydl.cuda import gemm as cg
    rng = np.random.default_rng(8)
    m, n, k = 1700, 1700, 24
    assert cg.choose_tile(m, n, np.float32, cg.sm_count()) == "l" or cg.sm_count() > 196
    for ta, tb in TRANS:
        _check(rng, m, n, k, ta, tb, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_inner_dimension_and_alpha_zero(dtype):
    rng = np.random.default_rng(2)
    a, b = cp.empty((6, 0), dtype), cp.empty((0, 5), dtype)
    out = gemm(a, b, out=poisoned((6, 5), dtype))
    assert cp.asnumpy(out).tolist() == np.zeros((6, 5)).tolist()
    c0 = rng.standard_normal((6, 5)).astype(dtype)
    out = gemm(a, b, beta=0.5, out=cp.asarray(c0))
    np.testing.assert_array_equal(cp.asnumpy(out), (0.5 * c0).astype(dtype))
    assert gemm(a, b).shape == (6, 5)
    # alpha == 0: a and b are not read (NaN there does not leak)
    nan_a, nan_b = cp.full((6, 4), cp.nan, dtype), cp.full((4, 5), cp.nan, dtype)
    out = gemm(nan_a, nan_b, alpha=0.0, beta=-2.0, out=cp.asarray(c0))
    np.testing.assert_array_equal(cp.asnumpy(out), (-2.0 * c0).astype(dtype))
    out = gemm(nan_a, nan_b, alpha=0.0, out=poisoned((6, 5), dtype))
    assert not cp.asnumpy(out).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_outputs_launch_nothing(dtype):
    for m, n, k in [(0, 5, 3), (4, 0, 3), (0, 0, 0)]:
        got = gemm(cp.ones((m, k), dtype), cp.ones((k, n), dtype))
        assert isinstance(got, cp.ndarray) and got.shape == (m, n) and got.dtype == dtype


def test_transposed_views_and_strided_views():
    rng = np.random.default_rng(9)
    for dtype in DTYPES:
        a_store = rng.standard_normal((71, 37)).astype(dtype)  # a = a_store.T is (37, 71), F-contiguous
        b_store = rng.standard_normal((129, 71)).astype(dtype)  # b = b_store.T is (71, 129)
        want, mag = _reference(a_store.T, b_store.T, False, False, 1.0, 0.0, None)
        got = pydl.matmul(cp.asarray(a_store).T, cp.asarray(b_store).T)
        _assert_close(cp.asnumpy(got), want, mag, TOL[dtype], "F-contiguous views")
        # with the flags too: op(a_store.T) = a_store (71, 37), op(c_store.T) = c_store (37, 20)
        c_store = rng.standard_normal((37, 20)).astype(dtype)
        got = gemm(cp.asarray(a_store).T, cp.asarray(c_store).T, trans_a=True, trans_b=True)
        want2, mag2 = _reference(a_store, c_store, False, False, 1.0, 0.0, None)
        _assert_close(cp.asnumpy(got), want2, mag2, TOL[dtype], "F-contiguous views with flags")
        big = rng.standard_normal((80, 150)).astype(dtype)
        view = cp.asarray(big)[::2, 3:74]  # (40, 71), neither C- nor F-contiguous
        got = pydl.matmul(view, cp.asarray(b_store).T)
        want3, mag3 = _reference(big[::2, 3:74], b_store.T, False, False, 1.0, 0.0, None)
        _assert_close(cp.asnumpy(got), want3, mag3, TOL[dtype], "strided view")


def test_matmul_returns_cupy_and_dtype_rules():
    rng = np.random.default_rng(4)
    a = rng.integers(-3, 4, (9, 7)).astype(np.int32)
    b = rng.integers(-3, 4, (7, 5)).astype(np.int64)
    got = pydl.matmul(cp.asarray(a), cp.asarray(b))
    assert isinstance(got, cp.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(cp.asnumpy(got), (a @ b).astype(np.float32))
    got = pydl.matmul(cp.asarray(a.astype(np.float32)), cp.asarray(b.astype(np.float64)))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(cp.asnumpy(got), (a @ b).astype(np.float64))
    got = pydl.matmul(cp.asarray(a.astype(np.float16)), cp.asarray(b.astype(np.float32)))
    assert got.dtype == np.float32


def test_bad_input():
    a32, b32 = cp.ones((4, 3), cp.float32), cp.ones((3, 5), cp.float32)
    with pytest.raises(ValueError, match=r"a on cpu.*b on cuda"):
        gemm(np.ones((4, 3), np.float32), b32)
    with pytest.raises(ValueError, match=r"a on cuda.*b on cpu"):
        pydl.matmul(a32, np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"out on cpu"):
        gemm(a32, b32, out=np.empty((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"out has dtype float64, expected float32"):
        gemm(a32, b32, out=cp.empty((4, 5), cp.float64))
    with pytest.raises(ValueError, match=r"out has shape \(5, 4\), expected \(4, 5\)"):
        gemm(a32, b32, out=cp.empty((5, 4), cp.float32))
    with pytest.raises(ValueError, match=r"out must be C-contiguous"):
        gemm(a32, b32, out=cp.empty((5, 4), cp.float32).T)
    with pytest.raises(ValueError, match=r"inner dimensions differ"):
        gemm(a32, cp.ones((4, 5), cp.float32))
    with pytest.raises(ValueError, match=r"a has 1 dims"):
        gemm(cp.ones(3, cp.float32), b32)
    with pytest.raises(ValueError, match=r"beta != 0 needs an `out`"):
        gemm(a32, b32, beta=1.0)
    with pytest.raises(TypeError, match=r"b must be real"):
        gemm(a32, cp.ones((3, 5), cp.complex64))
    with pytest.raises(TypeError, match=r"alpha must be a real scalar"):
        gemm(a32, b32, alpha="x")
    buf = cp.zeros((4, 5), cp.float32)
    with pytest.raises(ValueError, match=r"out must not overlap a or b"):
        gemm(buf[:, :3], cp.ones((3, 5), cp.float32), out=buf)


def test_batched_every_tile_and_load_variant():
    """gemm_batched: each tile, vector loads (k, n multiples of 4) and scalar loads (odd sizes), each
    product of the batch against float64 NumPy; nothing outside the outputs is written."""
    from pydl.cuda import gemm as cg
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        for tile in (cg.BATCH_TILES if dtype == np.float32 else ("s",)):
            for nb, m, n, k in [(3, 64, 132, 16), (2, 131, 70, 9), (5, 7, 3, 1), (1, 200, 260, 36)]:
                a = rng.standard_normal((nb, m, k)).astype(dtype)
                b = rng.standard_normal((nb, k, n)).astype(dtype)
                out = poisoned((nb, m, n), dtype)
                cg.gemm_batched(cp.asarray(a), cp.asarray(b), out, tile=tile)
                host = cp.asnumpy(out)
                for z in range(nb):
                    want, mag = _reference(a[z], b[z], False, False, 1.0, 0.0, None)
                    _assert_close(host[z], want, mag, TOL[dtype], f"batched {tile} z={z} {nb}x{m}x{n}x{k}")


def test_batched_empty_and_bad_input():
    from pydl.cuda import gemm as cg
    out = poisoned((2, 3, 4), np.float32)
    cg.gemm_batched(cp.ones((2, 3, 0), cp.float32), cp.ones((2, 0, 4), cp.float32), out)
    assert not cp.asnumpy(out).any()
    cg.gemm_batched(cp.ones((0, 3, 2), cp.float32), cp.ones((0, 2, 4), cp.float32), cp.empty((0, 3, 4), cp.float32))
    with pytest.raises(ValueError, match=r"shapes do not chain"):
        cg.gemm_batched(cp.ones((2, 3, 5), cp.float32), cp.ones((2, 4, 4), cp.float32), out)
    with pytest.raises(ValueError, match=r"C-contiguous 3-D float32"):
        cg.gemm_batched(cp.ones((2, 3, 2), cp.float64), cp.ones((2, 2, 4), cp.float32), out)
    with pytest.raises(ValueError, match=r"no tile 'l'"):
        cg.gemm_batched(cp.ones((2, 3, 2)), cp.ones((2, 2, 4)), cp.empty((2, 3, 4)), tile="l")
