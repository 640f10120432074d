"""SGEMM / DGEMM against float64 NumPy: shapes, transposes, alpha/beta, ISAs, threads, bad input."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest

import pydl
from pydl import _core
from pydl.ops import gemm

from reference_gemm import gemm_ref, rel_err, tol32

ISAS = _core.available_isas()

# Edge sizes: 1, primes, and non-multiples of every MR (12, 6) and NR (32, 16, 8).
SMALL = [1, 2, 3, 5, 7, 11, 13, 17, 31, 33, 47, 64, 97, 127, 131]
MEDIUM = [(191, 257, 193), (300, 301, 299), (97, 290, 263), (256, 256, 256)]
LARGE = [(513, 1031, 769), (397, 61, 1200), (40, 2100, 300)]  # K > KC, M > MC, N > NR * many


@pytest.fixture(params=ISAS)
def isa(request):
    old = _core.selected_isa()
    _core.select_isa(request.param)
    yield request.param
    _core.select_isa(old)


def _operands(rng, m, n, k, ta, tb, dtype=np.float32):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def _check(rng, m, n, k, ta, tb, alpha=1.0, beta=0.0, dtype=np.float32):
    a, b = _operands(rng, m, n, k, ta, tb, dtype)
    if beta == 0.0:
        out = np.full((m, n), np.nan, dtype)  # unwritten elements stay NaN and fail
        c0 = None
    else:
        c0 = rng.standard_normal((m, n)).astype(dtype)
        out = c0.copy()
    got = gemm(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, out=out)
    assert got is out
    want = gemm_ref(a, b, ta, tb, alpha, beta, c0)
    tol = tol32(k) if dtype == np.float32 else 1e-12
    err = rel_err(got, want)
    assert err < tol, f"{m}x{n}x{k} ta={ta} tb={tb} alpha={alpha} beta={beta}: rel err {err:.2e}"


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_small_shapes_all_isas(isa, threads, ta, tb):
    rng = np.random.default_rng(zlib.crc32(repr((isa, threads, ta, tb)).encode()))
    shapes = [(m, n, k) for m in SMALL[::2] for n in SMALL[1::2] for k in (1, 7, 33)]
    shapes += [(int(m), int(n), int(k)) for m, n, k in rng.integers(1, 300, size=(12, 3))]
    for m, n, k in shapes:
        _check(rng, m, n, k, ta, tb)


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_medium_and_large_shapes(isa, threads, ta, tb):
    rng = np.random.default_rng(7)
    for m, n, k in MEDIUM + (LARGE if (ta, tb) in ((False, False), (True, True)) else LARGE[:1]):
        _check(rng, m, n, k, ta, tb)


# Few rows of C, many long rows of B: each thread packs and multiplies its own column groups, in
# a slot of its own, prefetching the next group's rows ((m, n, k): N > NC = 2048 gives two column
# blocks, K > KC several K blocks (KC 512 AVX2 / generic, 1024 AVX-512), odd N a partial last
# panel and group; transposed A keeps A in place). The last three have B in place (unless
# transposed): on 2 threads C is cut by columns where they share out more evenly than the row
# panels (30 rows: 5 panels of 6 on AVX2, 3 of 12 on AVX-512; 36 rows: 9 panels of 4 generic).
FEW_ROWS = [(64, 2100, 1100), (100, 777, 512), (13, 2100, 1100), (70, 520, 300), (64, 3000, 64),
            (64, 128, 784), (30, 128, 784), (36, 128, 784)]


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_few_rows_own_column_groups(isa, threads, ta, tb):
    rng = np.random.default_rng(zlib.crc32(repr((isa, threads, ta, tb)).encode()))
    for m, n, k in FEW_ROWS:
        _check(rng, m, n, k, ta, tb)
        _check(rng, m, n, k, ta, tb, alpha=-0.5, beta=1.5)


# Many rows of C, few columns (m, n, k): with B packed by the row rule (AVX2) and A read in place
# and under 5 MiB, C is one row block cut by columns, each thread reading all of A (the first
# three); the fourth has an A over that size (row blocks again). The last has A's rows 4 KiB
# apart, which AVX-512 packs (one L1 set would hold all 12 rows of its micro-kernel).
MANY_ROWS = [(256, 128, 3136), (193, 130, 777), (600, 100, 900), (1000, 50, 1400), (300, 100, 1024)]


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
def test_many_rows_few_columns(isa, threads, ta, tb):
    rng = np.random.default_rng(zlib.crc32(repr(("many", isa, threads, ta, tb)).encode()))
    for m, n, k in MANY_ROWS:
        _check(rng, m, n, k, ta, tb, alpha=0.75, beta=-1.25)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (-1.5, 0.0), (2.0, 0.25)])
def test_alpha_beta(isa, alpha, beta):
    rng = np.random.default_rng(3)
    for m, n, k in [(1, 1, 1), (13, 33, 5), (100, 70, 300), (300, 301, 299), (513, 250, 769)]:
        for ta, tb in itertools.product([False, True], repeat=2):
            _check(rng, m, n, k, ta, tb, alpha, beta)


def test_beta_applied_once_across_k_blocks(isa):
    # K spans several KC blocks: beta must scale C once, later blocks only accumulate.
    rng = np.random.default_rng(5)
    a = rng.standard_normal((37, 1500)).astype(np.float32)
    b = rng.standard_normal((1500, 45)).astype(np.float32)
    c0 = rng.standard_normal((37, 45)).astype(np.float32)
    out = c0.copy()
    gemm(a, b, alpha=1.0, beta=3.0, out=out)
    assert rel_err(out, gemm_ref(a, b, beta=3.0, c=c0)) < tol32(1500)


def test_alpha_zero_and_k_zero_scale_c(isa):
    a = np.full((4, 6), np.nan, np.float32)  # alpha == 0: A and B are not read (BLAS convention)
    b = np.ones((6, 5), np.float32)
    c = np.arange(20, dtype=np.float32).reshape(4, 5)
    out = c.copy()
    gemm(a, b, alpha=0.0, beta=2.0, out=out)
    np.testing.assert_array_equal(out, 2 * c)
    out = np.full((4, 5), np.nan, np.float32)
    gemm(np.ones((4, 0), np.float32), np.ones((0, 5), np.float32), beta=0.0, out=out)
    np.testing.assert_array_equal(out, np.zeros((4, 5)))
    out = c.copy()
    gemm(np.ones((4, 0), np.float32), np.ones((0, 5), np.float32), beta=0.5, out=out)
    np.testing.assert_array_equal(out, 0.5 * c)


def test_empty_results():
    for m, n, k in [(0, 5, 3), (4, 0, 3), (0, 0, 0), (0, 3, 0)]:
        r = pydl.matmul(np.ones((m, k), np.float32), np.ones((k, n), np.float32))
        assert r.shape == (m, n) and r.dtype == np.float32
    np.testing.assert_array_equal(pydl.matmul(np.ones((3, 0)), np.ones((0, 2))), np.zeros((3, 2)))


def test_matmul_transposed_views_match_numpy(isa, threads):
    rng = np.random.default_rng(11)
    for m, n, k in [(5, 7, 3), (64, 48, 100), (200, 129, 257)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        at = np.ascontiguousarray(a.T)  # (k, m): at.T is an F-ordered view of a
        bt = np.ascontiguousarray(b.T)
        want = a.astype(np.float64) @ b.astype(np.float64)
        for x, y in [(a, b), (at.T, b), (a, bt.T), (at.T, bt.T)]:
            assert rel_err(pydl.matmul(x, y), want) < tol32(k)
        # transpose flags on top of transposed views: (b^T)^T^T @ ... = b^T @ a^T
        got = gemm(bt.T, at.T, trans_a=True, trans_b=True)
        assert rel_err(got, want.T) < tol32(k)


def test_noncontiguous_and_negative_stride_inputs_are_copied():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 60)).astype(np.float32)
    b = rng.standard_normal((60, 30)).astype(np.float32)
    want = a[::2, ::-1].astype(np.float64) @ b[::-1, ::3].astype(np.float64)
    assert rel_err(pydl.matmul(a[::2, ::-1], b[::-1, ::3]), want) < tol32(60)


def test_nan_and_inf_propagate(isa):
    a = np.ones((20, 40), np.float32)
    b = np.ones((40, 50), np.float32)
    a[3, 7] = np.nan
    b[5, 17] = np.inf
    r = pydl.matmul(a, b)
    assert np.all(np.isnan(r[3]))
    col = np.delete(np.arange(20), 3)
    assert np.all(np.isinf(r[col, 17]))
    mask = np.ones_like(r, bool)
    mask[3] = False
    mask[:, 17] = False
    assert np.all(r[mask] == 40)


def test_float64_path(threads):
    rng = np.random.default_rng(4)
    for m, n, k in [(1, 1, 1), (7, 5, 3), (67, 45, 300), (300, 257, 131)]:
        for ta, tb in itertools.product([False, True], repeat=2):
            _check(rng, m, n, k, ta, tb, dtype=np.float64)
            _check(rng, m, n, k, ta, tb, alpha=0.5, beta=1.5, dtype=np.float64)


def test_mixed_and_integer_dtypes():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.ones((4, 2), np.float64)
    r = pydl.matmul(a, b)
    assert r.dtype == np.float64
    np.testing.assert_allclose(r, a @ b)
    r = pydl.matmul(a, a.T.copy())
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, (a @ a.T).astype(np.float32))
    np.testing.assert_allclose(pydl.matmul([[1, 2]], [[3], [4]]), [[11.0]])


def test_naive_twin_matches_fast_kernel(isa):
    rng = np.random.default_rng(8)
    for m, n, k in [(1, 1, 1), (13, 45, 29), (100, 64, 257)]:
        for ta, tb in itertools.product([False, True], repeat=2):
            a, b = _operands(rng, m, n, k, ta, tb)
            fast = np.full((m, n), np.nan, np.float32)
            slow = np.full((m, n), np.nan, np.float32)
            _core.gemm(a, b, fast, ta, tb, 1.0, 0.0)
            _core.gemm_naive(a, b, slow, ta, tb, 1.0, 0.0)
            assert rel_err(fast, slow) < tol32(k)
            assert rel_err(slow, gemm_ref(a, b, ta, tb)) < 1e-6


def test_concurrent_python_threads():
    # The binding releases the GIL: several calls at once must each get their own buffers.
    rng = np.random.default_rng(9)
    jobs = []
    for i, (m, n, k) in enumerate([(300, 257, 400), (513, 129, 300), (64, 784, 128), (200, 200, 1100)]):
        a, b = _operands(rng, m, n, k, i % 2 == 1, i >= 2)
        jobs.append((a, b, i % 2 == 1, i >= 2, gemm_ref(a, b, i % 2 == 1, i >= 2), k))
    errors = []

    def worker(idx):
        a, b, ta, tb, want, k = jobs[idx]
        for _ in range(5):
            got = gemm(a, b, trans_a=ta, trans_b=tb)
            err = rel_err(got, want)
            if not err < tol32(k):
                errors.append((idx, err))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


@pytest.mark.parametrize("name", [n for n in ("avx2", "generic") if n in ISAS])
def test_isa_from_environment(name):
    code = ("import numpy as np, pydl\n"
            "from pydl import _core\n"
            f"assert _core.selected_isa() == {name!r}, _core.selected_isa()\n"
            "rng = np.random.default_rng(0)\n"
            "a = rng.standard_normal((131, 257)).astype(np.float32)\n"
            "b = rng.standard_normal((257, 67)).astype(np.float32)\n"
            "err = np.abs(pydl.matmul(a, b) - a.astype(np.float64) @ b).max()\n"
            "assert err < 1e-3, err\n"
            "print('ok')\n")
    env = dict(os.environ, PYDL_ISA=name)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(pydl.__file__)),
                                         env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


# ---- bad input -------------------------------------------------------------------------------

def test_wrong_ndim():
    with pytest.raises(ValueError, match=r"\[matmul\] a has 1 dims"):
        pydl.matmul(np.ones(3, np.float32), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"\[matmul\] b has 3 dims"):
        pydl.matmul(np.ones((2, 3), np.float32), np.ones((3, 2, 1), np.float32))


def test_inner_dimension_mismatch():
    with pytest.raises(ValueError, match=r"inner dimensions differ: a \(2, 3\) and b \(4, 2\)"):
        pydl.matmul(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="after transpose flags"):
        gemm(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), trans_b=True)


@pytest.mark.parametrize("bad", [np.ones((2, 2), np.complex64), np.array([[1, None], [2, 3]], dtype=object),
                                 np.array([["a", "b"]])])
def test_unsupported_dtypes(bad):
    with pytest.raises(TypeError, match=r"\[matmul\] a must be"):
        pydl.matmul(bad, np.ones((bad.shape[1], 2), np.float32))


def test_bad_scalars():
    a = np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match="alpha"):
        gemm(a, a, alpha=1j)
    with pytest.raises(TypeError, match="beta"):
        gemm(a, a, beta="x", out=np.zeros((2, 2), np.float32))


def test_bad_out():
    a = np.ones((4, 3), np.float32)
    b = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match="out has dtype float64, expected float32"):
        pydl.matmul(a, b, out=np.zeros((4, 5), np.float64))
    with pytest.raises(ValueError, match=r"out has shape \(5, 4\), expected \(4, 5\)"):
        pydl.matmul(a, b, out=np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        pydl.matmul(a, b, out=np.zeros((5, 4), np.float32).T)
    ro = np.zeros((4, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        pydl.matmul(a, b, out=ro)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        pydl.matmul(a, b, out=[[0.0] * 5] * 4)
    with pytest.raises(ValueError, match="needs an `out`"):
        gemm(a, b, beta=1.0)
    sq = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        pydl.matmul(sq, np.ones((4, 4), np.float32), out=sq)


def test_binding_rejects_what_ops_would_convert():
    a = np.ones((4, 3), np.float32)
    b = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match="dtype float32"):
        _core.gemm(a, b.astype(np.float64), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.gemm(a, np.ones((5, 3), np.float32).T, np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="inner dimensions"):
        _core.gemm(a, np.ones((4, 5), np.float32), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"out has shape"):
        _core.gemm(a, b, np.zeros((5, 4), np.float32))


def test_huge_dimensions_fail_before_any_copy():
    # Zero-stride views of one element: nothing is allocated, so a copy would be the only cost.
    col = np.broadcast_to(np.float32(1), (2**31, 1))
    row = np.broadcast_to(np.float32(1), (1, 2**31))
    with pytest.raises(ValueError, match="too large to index"):
        pydl.matmul(col, row)  # out would hold 2**62 elements
    sq = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(2**31, 2**31), strides=(0, 0))
    with pytest.raises(ValueError, match="too large to index"):
        pydl.matmul(sq, np.broadcast_to(np.uint8(1), (2**31, 2)))  # a itself has 2**62 elements
    # Errors other than size also come before the (strided, huge) inputs would be copied.
    with pytest.raises(ValueError, match="inner dimensions"):
        pydl.matmul(sq, np.broadcast_to(np.float32(1), (3, 2)))
