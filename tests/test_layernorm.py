"""Layer normalisation over the last axis (pydl.ops.layer_norm): the float64 reference against
finite differences, the kernels (every ISA, float32 / float64, any rank) against it, accuracy on
large offsets, NaN rows, PyTorch, bitwise determinism across thread counts, and bad inputs."""
import numpy as np
import pytest

import pydl
from pydl import _core, ops
from gradcheck import check_grad, numerical_grad
from reference_attention import layer_norm_backward_ref, layer_norm_ref

try:
    import torch

    HAVE_TORCH = True
except Exception:  # pragma: no cover
    HAVE_TORCH = False


def rel(got, want):
    got = np.asarray(got, np.float64)
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1.0) if want.size else 0.0


def test_reference_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7))
    g = rng.standard_normal(7)
    b = rng.standard_normal(7)
    dy = rng.standard_normal((3, 7))
    dx, dg, db = layer_norm_backward_ref(dy, x, g)
    for a, grad in ((x, dx), (g, dg), (b, db)):
        num = numerical_grad(lambda: float(np.sum(layer_norm_ref(x, g, b)[0] * dy)), a)
        check_grad(grad, num, rtol=1e-6, atol=1e-8)


SHAPES = [(1,), (5,), (3, 1), (4, 8), (2, 3, 17), (7, 256), (3, 2, 5, 1000), (33, 13), (65, 40)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)], ids=["f32", "f64"])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_reference(shape, dtype, tol, affine, threads):
    rng = np.random.default_rng(1)
    C = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    g = rng.standard_normal(C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    dy = rng.standard_normal(shape).astype(dtype)
    y, mean, rstd = ops.layer_norm(x, g, b, eps=1e-5)
    ry, rmean, rrstd = layer_norm_ref(x, g, b, 1e-5)
    assert y.dtype == dtype and mean.shape == shape[:-1] and rstd.shape == shape[:-1]
    assert rel(y, ry) <= tol and rel(mean, rmean) <= tol
    np.testing.assert_allclose(rstd, rrstd, rtol=tol * 10)
    dx, dg, db = ops.layer_norm_backward(dy, x, g, mean, rstd)
    rdx, rdg, rdb = layer_norm_backward_ref(dy, x, g, 1e-5)
    assert rel(dx, rdx) <= tol * 10
    assert rel(dg, rdg) <= tol * 10 and rel(db, rdb) <= tol * 10


def test_float64_kernel_gradients_by_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 9))
    g = rng.standard_normal(9)
    b = rng.standard_normal(9)
    dy = rng.standard_normal((4, 9))
    y, mean, rstd = ops.layer_norm(x, g, b)
    dx, dg, db = ops.layer_norm_backward(dy, x, g, mean, rstd)
    for a, grad in ((x, dx), (g, dg), (b, db)):
        num = numerical_grad(lambda: float(np.sum(ops.layer_norm(x, g, b)[0] * dy)), a)
        check_grad(grad, num, rtol=1e-6, atol=1e-8)


def test_large_offset_row_keeps_its_variance():
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal(10**6)).astype(np.float32)
    y, mean, rstd = ops.layer_norm(x, eps=0.0)
    xd = x.astype(np.float64)
    assert abs(mean - xd.mean()) < 1e-3  # float32 of a mean near 1e4 (ulp 1e-3)
    assert abs(1 / float(rstd) ** 2 / xd.var() - 1) < 1e-5
    ry = (xd - xd.mean()) / xd.std()
    assert np.max(np.abs(y - ry)) < 1e-4  # y is computed from the exact shift, not from the rounded mean
    x2 = np.full((2, 4096), 3.0, np.float32)  # constant rows: var 0, y = beta
    y2, _, r2 = ops.layer_norm(x2, None, np.full(4096, 0.5, np.float32))
    assert np.all(y2 == 0.5) and np.allclose(r2, 1 / np.sqrt(1e-5))


def test_nan_row_stays_in_its_row():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 50)).astype(np.float32)
    x[2, 7] = np.nan
    g = np.ones(50, np.float32)
    y, mean, rstd = ops.layer_norm(x, g, None)
    assert np.all(np.isnan(y[2])) and np.all(np.isfinite(np.delete(y, 2, axis=0)))
    dx, dg, db = ops.layer_norm_backward(np.ones_like(x), x, g, mean, rstd)
    assert np.all(np.isnan(dx[2])) and np.all(np.isfinite(np.delete(dx, 2, axis=0)))
    assert np.all(np.isfinite(db))


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch not installed")
@pytest.mark.parametrize("shape", [(32, 256), (4, 16, 1000), (3, 5)], ids=str)
def test_matches_pytorch(shape):
    rng = np.random.default_rng(5)
    C = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y, mean, rstd = ops.layer_norm(x, g, b, eps=1e-5)
    dx, dg, db = ops.layer_norm_backward(dy, x, g, mean, rstd)
    tx, tg, tb = (torch.from_numpy(a).requires_grad_() for a in (x, g, b))
    ty = torch.nn.functional.layer_norm(tx, (C,), tg, tb, eps=1e-5)
    ty.backward(torch.from_numpy(dy))
    assert rel(y, ty.detach().numpy().astype(np.float64)) < 1e-5
    assert rel(dx, tx.grad.numpy().astype(np.float64)) < 1e-5
    assert rel(dg, tg.grad.numpy().astype(np.float64)) < 1e-5
    assert rel(db, tb.grad.numpy().astype(np.float64)) < 1e-5


def test_bitwise_same_for_1_and_2_threads():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1000, 300)).astype(np.float32)
    g = rng.standard_normal(300).astype(np.float32)
    dy = rng.standard_normal((1000, 300)).astype(np.float32)
    old = pydl.get_num_threads()
    res = []
    try:
        for nt in (1, 2, 2):
            pydl.set_num_threads(nt)
            y, m, r = ops.layer_norm(x, g, g)
            res.append((y, m, r, *ops.layer_norm_backward(dy, x, g, m, r)))
    finally:
        pydl.set_num_threads(old)
    for other in res[1:]:
        for a, b in zip(res[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("isa", _core.available_isas())
def test_every_isa_matches_reference(isa):
    rng = np.random.default_rng(7)
    old = _core.selected_isa()
    try:
        _core.select_isa(isa)
        for C in (1, 3, 7, 8, 9, 31, 64, 129, 1000):
            x = rng.standard_normal((5, C)).astype(np.float32)
            g = rng.standard_normal(C).astype(np.float32)
            dy = rng.standard_normal((5, C)).astype(np.float32)
            y, m, r = ops.layer_norm(x, g, g)
            assert rel(y, layer_norm_ref(x, g, g)[0]) < 1e-5
            dx, dg, db = ops.layer_norm_backward(dy, x, g, m, r)
            for a, b in zip((dx, dg, db), layer_norm_backward_ref(dy, x, g)):
                assert rel(a, b) < 1e-4
    finally:
        _core.select_isa(old)


def test_non_contiguous_and_int_inputs():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((20, 30)).astype(np.float32)
    y1 = ops.layer_norm(x.T.copy().T)[0]
    y2 = ops.layer_norm(np.asfortranarray(x))[0]
    np.testing.assert_array_equal(y1, y2)
    yi = ops.layer_norm(rng.integers(0, 5, (3, 10)))[0]
    assert yi.dtype == np.float32


def test_bad_inputs():
    x = np.ones((4, 6), np.float32)
    g = np.ones(6, np.float32)
    ln, lnb = ops.layer_norm, ops.layer_norm_backward
    with pytest.raises(ValueError, match=r"at least 1 dim"):
        ln(np.float32(3.0))
    with pytest.raises(ValueError, match=r"empty last axis"):
        ln(np.ones((3, 0), np.float32))
    with pytest.raises(ValueError, match=r"gamma has shape \(5,\), expected \(C,\) = \(6,\)"):
        ln(x, np.ones(5, np.float32))
    with pytest.raises(ValueError, match=r"beta has shape"):
        ln(x, g, np.ones((6, 1), np.float32))
    with pytest.raises(ValueError, match=r"cannot be mixed.*gamma float64"):
        ln(x, g.astype(np.float64))
    with pytest.raises(ValueError, match=r"eps must be a finite number"):
        ln(x, g, None, eps=-1.0)
    with pytest.raises(ValueError, match=r"eps must be a finite number"):
        ln(x, g, None, eps=float("nan"))
    with pytest.raises(TypeError, match=r"x must be a numeric array"):
        ln(np.array([["a"]]))
    y, m, r = ln(x, g)
    with pytest.raises(ValueError, match=r"dy has shape \(4, 5\), expected x's shape \(4, 6\)"):
        lnb(np.ones((4, 5), np.float32), x, g, m, r)
    with pytest.raises(ValueError, match=r"mean has shape \(3,\), expected x.shape\[:-1\] = \(4,\)"):
        lnb(x, x, g, m[:3], r)
    with pytest.raises(ValueError, match=r"rstd has shape"):
        lnb(x, x, g, m, r[None])
    with pytest.raises(ValueError, match=r"cannot be mixed"):
        lnb(x, x, g, m.astype(np.float64), r)
    with pytest.raises(ValueError, match=r"must have dtype float32"):
        _core.layernorm_forward(x, g.astype(np.float64), None, 1e-5, np.empty_like(x), m, r)
    with pytest.raises(ValueError, match=r"y has shape"):
        _core.layernorm_forward(x, g, None, 1e-5, np.empty((4, 5), np.float32), m, r)
