"""Fused scaled-dot-product attention (pydl.ops.attention): the float64 reference against finite
differences, the kernels (every ISA, float32 and float64, naive twins) against the reference on
edge sizes, masks of every broadcast shape, causal with T != S, dropout, fully masked rows, NaN,
PyTorch, bitwise determinism across thread counts and schedules, and the bad-input errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import pydl
from pydl import _core, ops
from gradcheck import check_grad, numerical_grad
from reference_attention import attention_backward_ref, attention_ref, dropout_keep

try:
    import torch

    HAVE_TORCH = True
except Exception:  # pragma: no cover
    HAVE_TORCH = False


def make(rng, B, H, T, S, d, dv=None, dtype=np.float32):
    dv = d if dv is None else dv
    q = rng.standard_normal((B, H, T, d)).astype(dtype)
    k = rng.standard_normal((B, H, S, d)).astype(dtype)
    v = rng.standard_normal((B, H, S, dv)).astype(dtype)
    dout = rng.standard_normal((B, H, T, dv)).astype(dtype)
    return q, k, v, dout


def rel(got, want):
    """Largest error over the largest reference value (at least 1: the inputs are O(1), and a
    gradient that is exactly 0 in the reference is ~1e-7 in float32)."""
    got = np.asarray(got, np.float64)
    if not want.size:
        return 0.0
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1.0)


def run_all(q, k, v, dout, **kw):
    out, lse = ops.attention_forward(q, k, v, **kw)
    kw.pop("training", None)
    grads = ops.attention_backward(q, k, v, out, lse, dout, **kw)
    return out, lse, grads


def check_against_ref(q, k, v, dout, tol, **kw):
    out, lse, grads = run_all(q, k, v, dout, **kw)
    rout, rlse = attention_ref(q, k, v, **kw)
    rgrads = attention_backward_ref(q, k, v, dout, **kw)
    assert out.dtype == q.dtype and lse.dtype == q.dtype
    assert rel(out, rout) <= tol, ("out", rel(out, rout))
    fin = np.isfinite(rlse)
    np.testing.assert_array_equal(np.isfinite(lse), fin)
    assert np.max(np.abs(lse[fin] - rlse[fin]), initial=0) <= tol * max(1, np.max(np.abs(rlse[fin]), initial=1))
    for name, g, r in zip(("dq", "dk", "dv"), grads, rgrads):
        assert g.shape == r.shape
        assert rel(g, r) <= tol, (name, rel(g, r))
    return out, lse, grads


# ---- the reference itself ------------------------------------------------------------------

@pytest.mark.parametrize("causal,dropout,masked", [(False, 0.0, None), (True, 0.0, "bool"), (False, 0.4, "float")])
def test_reference_backward_matches_finite_differences(causal, dropout, masked):
    rng = np.random.default_rng(0)
    q, k, v, dout = make(rng, 1, 2, 4, 5, 3, 2, np.float64)
    mask = None
    if masked == "bool":
        mask = rng.random((4, 5)) > 0.3
    elif masked == "float":
        mask = rng.standard_normal((1, 2, 1, 5))
    kw = dict(mask=mask, causal=causal, dropout=dropout, scale=0.7, seed=11)
    dq, dk, dv = attention_backward_ref(q, k, v, dout, **kw)
    for x, g in ((q, dq), (k, dk), (v, dv)):
        num = numerical_grad(lambda: float(np.sum(attention_ref(q, k, v, **kw)[0] * dout)), x)
        check_grad(g, num, rtol=1e-6, atol=1e-8)


# ---- kernels against the reference ---------------------------------------------------------

SHAPES = [  # B, H, T, S, d, dv
    (1, 1, 1, 1, 1, 1),
    (2, 3, 7, 13, 8, 8),
    (1, 2, 31, 17, 63, 63),
    (2, 1, 64, 64, 64, 64),
    (1, 1, 257, 129, 80, 80),
    (1, 2, 97, 257, 128, 128),
    (3, 1, 5, 300, 64, 24),
    (1, 1, 50, 1, 16, 7),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}T{}S{}d{}dv{}".format(*s))
@pytest.mark.parametrize("dtype,tol", [(np.float32, 3e-5), (np.float64, 1e-12)], ids=["f32", "f64"])
def test_matches_reference(shape, dtype, tol, threads):
    rng = np.random.default_rng(1)
    q, k, v, dout = make(rng, *shape, dtype=dtype)
    check_against_ref(q, k, v, dout, tol)


@pytest.mark.parametrize("T,S", [(1, 9), (9, 1), (47, 130), (130, 47), (257, 257), (64, 200)])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 3e-5), (np.float64, 1e-12)], ids=["f32", "f64"])
def test_causal_top_left_aligned(T, S, dtype, tol, threads):
    rng = np.random.default_rng(2)
    q, k, v, dout = make(rng, 2, 2, T, S, 32, 16, dtype)
    check_against_ref(q, k, v, dout, tol, causal=True)


MASK_SHAPES = [(), (37,), (1, 37), (29, 37), (29, 1), (2, 1, 29, 37), (1, 3, 1, 37), (2, 3, 29, 37),
               (2, 3, 29, 1), (1, 1, 1, 1), (3, 1, 1), (3, 29, 37)]


@pytest.mark.parametrize("mshape", MASK_SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("causal", [False, True])
def test_masks_of_every_broadcast_shape(mshape, kind, causal):
    rng = np.random.default_rng(3)
    q, k, v, dout = make(rng, 2, 3, 29, 37, 16, 16)
    if kind == "bool":
        mask = rng.random(mshape) > 0.3
    else:
        mask = (rng.standard_normal(mshape) * 2).astype(np.float32)
    check_against_ref(q, k, v, dout, 3e-5, mask=mask, causal=causal)


def test_mask_with_neg_inf_entries_and_int_mask_cast():
    rng = np.random.default_rng(4)
    q, k, v, dout = make(rng, 1, 2, 20, 30, 8)
    m = np.where(rng.random((20, 30)) > 0.5, 0.0, -np.inf).astype(np.float32)
    check_against_ref(q, k, v, dout, 3e-5, mask=m)
    mi = rng.integers(-2, 3, (20, 30))  # integers: additive, cast to float32
    check_against_ref(q, k, v, dout, 3e-5, mask=mi)


def test_mask_at_the_dtype_minimum_is_a_finite_mask():
    # np.finfo(dtype).min as the "masked" value: finite, so a row masked that way throughout is
    # uniform (not the zeros of a fully masked row), and elsewhere those keys get weight 0; in the
    # kernels' log2 units (scores times log2(e)) it would overflow to -inf unless held at a bound.
    rng = np.random.default_rng(12)
    for dtype in (np.float32, np.float64):
        lo = np.finfo(dtype).min
        q, k, v, dout = make(rng, 2, 2, 6, 37, 8, dtype=dtype)
        m = np.zeros((6, 37), dtype)
        m[:, ::3] = lo
        m[2, :] = lo  # every key at the minimum: uniform over all keys
        m[4, 5:] = lo
        m[4, :5] = -np.inf  # only -inf and the minimum: uniform over the minimum's keys
        # Rows 2 and 4 hold nothing but the offset: s + lo rounds to lo, and their lse (lo plus a
        # log of the key count that rounds away) cannot give back P = 1 / count in the backward;
        # the same holds for PyTorch's fused kernels. Their gradients are checked against
        # PyTorch below; against the float64 reference, only the other rows carry a gradient.
        d0 = dout.copy()
        d0[:, :, [2, 4]] = 0
        tol = 3e-5 if dtype == np.float32 else 1e-12
        q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
        rout, rlse = attention_ref(q64, k64, v64, mask=m.astype(np.float64))
        rgrads = attention_backward_ref(q64, k64, v64, d0.astype(np.float64), mask=m.astype(np.float64))
        old = _core.selected_isa()
        for isa in _core.available_isas():
            _core.select_isa(isa)
            try:
                out, lse, grads = run_all(q, k, v, d0, mask=m)
            finally:
                _core.select_isa(old)
            assert rel(out, rout) <= tol, (isa, dtype, rel(out, rout))
            np.testing.assert_allclose(out[:, :, 2], np.broadcast_to(v.mean(axis=2), out[:, :, 2].shape),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out[:, :, 4], np.broadcast_to(v[:, :, 5:].mean(axis=2), out[:, :, 4].shape),
                                       rtol=1e-5, atol=1e-6)
            assert np.all(np.isfinite(lse)) and np.all(lse[:, :, [2, 4]] < 0.5 * lo)
            ordinary = [0, 1, 3, 5]
            np.testing.assert_allclose(lse[:, :, ordinary], rlse[:, :, ordinary], rtol=tol, atol=tol)
            for name, g, r in zip(("dq", "dk", "dv"), grads, rgrads):
                assert rel(g, r) <= tol, (isa, dtype, name, rel(g, r))
            if HAVE_TORCH and dtype == np.float32:
                tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
                to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(m))
                to.backward(torch.tensor(dout))
                _core.select_isa(isa)
                try:
                    out, lse, grads = run_all(q, k, v, dout, mask=m)
                finally:
                    _core.select_isa(old)
                assert rel(out, to.detach().numpy().astype(np.float64)) <= tol
                for name, g, t in zip(("dq", "dk", "dv"), grads, (tq, tk, tv)):
                    assert rel(g, t.grad.numpy().astype(np.float64)) <= 1e-4, (isa, name)


def test_fully_masked_rows_give_zeros_not_nan():
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        q, k, v, dout = make(rng, 2, 2, 10, 70, 8, dtype=dtype)
        mask = rng.random((2, 1, 10, 70)) > 0.2
        mask[0, :, 3] = False
        mask[1, :, 9] = False
        out, lse, (dq, dk, dv) = check_against_ref(q, k, v, dout, 3e-5 if dtype == np.float32 else 1e-12,
                                                   mask=mask)
        assert np.all(out[0, :, 3] == 0) and np.all(out[1, :, 9] == 0)
        assert np.all(lse[0, :, 3] == -np.inf)
        assert np.all(dq[0, :, 3] == 0)
        for a in (out, dq, dk, dv):
            assert np.all(np.isfinite(a))
    # S = 0: every row is empty
    q, k, v, dout = make(rng, 1, 1, 4, 0, 8)
    out, lse = ops.attention_forward(q, k, v)
    assert out.shape == (1, 1, 4, 8) and np.all(out == 0) and np.all(lse == -np.inf)
    dq, dk, dv = ops.attention_backward(q, k, v, out, lse, dout)
    assert np.all(dq == 0) and dk.shape == (1, 1, 0, 8)


def test_empty_sizes():
    rng = np.random.default_rng(6)
    q, k, v, dout = make(rng, 0, 2, 5, 6, 4)
    out, lse, grads = run_all(q, k, v, dout)
    assert out.shape == (0, 2, 5, 4)
    q, k, v, dout = make(rng, 1, 2, 0, 6, 4)
    out, lse, (dq, dk, dv) = run_all(q, k, v, dout)
    assert out.shape == (1, 2, 0, 4) and np.all(dk == 0) and np.all(dv == 0)


def test_nan_propagates():
    rng = np.random.default_rng(7)
    q, k, v, dout = make(rng, 1, 1, 12, 80, 8)
    q[0, 0, 4, 2] = np.nan
    out, lse = ops.attention_forward(q, k, v)
    assert np.all(np.isnan(out[0, 0, 4])) and np.isnan(lse[0, 0, 4])
    assert np.all(np.isfinite(np.delete(out[0, 0], 4, axis=0)))
    q, k, v, dout = make(rng, 1, 1, 12, 80, 8)
    v[0, 0, 5, 1] = np.nan
    out = ops.scaled_dot_product_attention(q, k, v, causal=True)
    assert np.all(np.isnan(out[0, 0, 5:, 1]))  # every row that attends key 5
    assert np.all(np.isfinite(out[0, 0, :, 0]))  # other features untouched


def test_fast_matches_naive_twins_and_writes_everything():
    rng = np.random.default_rng(8)
    for dtype in (np.float32, np.float64):
        q, k, v, dout = make(rng, 2, 2, 33, 71, 24, 20, dtype)
        mask = rng.random((1, 2, 33, 71)) > 0.4
        args = (mask, True, 0.25, 0.3, 99)
        out, lse = np.full((2, 2, 33, 20), np.nan, dtype), np.full((2, 2, 33), np.nan, dtype)
        _core.attention_forward(q, k, v, *args, out, lse)
        o2, l2 = np.full_like(out, np.nan), np.full_like(lse, np.nan)
        _core.attention_forward_naive(q, k, v, *args, o2, l2)
        g = [np.full(a.shape, np.nan, dtype) for a in (q, k, v)]
        _core.attention_backward(q, k, v, out, lse, dout, *args, *g)
        g2 = [np.full(a.shape, np.nan, dtype) for a in (q, k, v)]
        _core.attention_backward_naive(q, k, v, dout, *args, *g2)
        tol = 3e-5 if dtype == np.float32 else 1e-12
        for a, b in zip([out, lse] + g, [o2, l2] + g2):
            assert not np.any(np.isnan(a)), "an output element was left unwritten"
            np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))  # lse -inf: fully masked rows
            fin = np.isfinite(b)
            assert rel(a[fin], b[fin].astype(np.float64)) <= tol


@pytest.mark.parametrize("causal,masked,dropout", [(False, False, 0.0), (True, True, 0.0), (False, True, 0.3),
                                                   (True, False, 0.5)])
def test_float64_kernel_gradients_by_finite_differences(causal, masked, dropout):
    rng = np.random.default_rng(9)
    q, k, v, dout = make(rng, 1, 2, 6, 9, 5, 4, np.float64)
    mask = (rng.random((6, 9)) > 0.3) if masked else None
    kw = dict(mask=mask, causal=causal, dropout=dropout, scale=0.6, seed=1234)
    out, lse = ops.attention_forward(q, k, v, **kw)
    grads = ops.attention_backward(q, k, v, out, lse, dout, **kw)
    for x, g in zip((q, k, v), grads):
        num = numerical_grad(lambda: float(np.sum(ops.attention_forward(q, k, v, **kw)[0] * dout)), x)
        check_grad(g, num, rtol=1e-6, atol=1e-8)


# ---- dropout ------------------------------------------------------------------------------

def test_dropout_is_deterministic_and_matches_the_hash():
    rng = np.random.default_rng(10)
    q, k, v, dout = make(rng, 2, 2, 40, 70, 16)
    a = ops.scaled_dot_product_attention(q, k, v, dropout=0.3, seed=5)
    b = ops.scaled_dot_product_attention(q, k, v, dropout=0.3, seed=5)
    c = ops.scaled_dot_product_attention(q, k, v, dropout=0.3, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    check_against_ref(q, k, v, dout, 3e-5, dropout=0.3, seed=5)
    # training=False or dropout=0: exact, no randomness
    e = ops.scaled_dot_product_attention(q, k, v, dropout=0.3, training=False)
    np.testing.assert_array_equal(e, ops.scaled_dot_product_attention(q, k, v))
    pydl.seed(3)
    x1 = ops.scaled_dot_product_attention(q, k, v, dropout=0.2)
    pydl.seed(3)
    np.testing.assert_array_equal(x1, ops.scaled_dot_product_attention(q, k, v, dropout=0.2))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_kept_fraction(p):
    keep = dropout_keep(42, 2, 4, 128, 300, p)
    assert abs(keep.mean() - (1 - p)) < 0.01
    # rows, columns and heads are not correlated: per-row fractions spread like a binomial
    rows = keep.mean(axis=-1).ravel()
    assert abs(rows.std() - np.sqrt(p * (1 - p) / 300)) < 0.3 * np.sqrt(p * (1 - p) / 300)
    assert not np.array_equal(keep[0, 0], keep[0, 1]) and not np.array_equal(keep[0, 0], keep[1, 0])
    # the kernel: with v = ones and no dropout each output row is 1; with dropout its mean over
    # many rows is ~1 (P sums to 1, kept with probability 1 - p, scaled by 1 / (1 - p))
    rng = np.random.default_rng(11)
    q = rng.standard_normal((1, 2, 256, 8)).astype(np.float32) * 0.1
    k = rng.standard_normal((1, 2, 512, 8)).astype(np.float32) * 0.1
    v = np.ones((1, 2, 512, 1), np.float32)
    out = ops.scaled_dot_product_attention(q, k, v, dropout=p, seed=7)
    assert abs(out.mean() - 1) < 0.02


def test_dropout_row_key_matches_reference():
    for (b, h, i) in [(0, 0, 0), (1, 2, 3), (3, 1, 100)]:
        key = _core.attention_dropout_row_key(99, b, h, i, 4, 128)
        from reference_attention import _splitmix64
        with np.errstate(over="ignore"):
            s0 = _splitmix64(np.array([99], np.uint64))[0]
            want = _splitmix64(np.array([s0 + np.uint64((b * 4 + h) * 128 + i) * np.uint64(0x9E3779B97F4A7C15)],
                                        np.uint64))[0]
        assert key == int(want) & 0xFFFFFFFF


# ---- PyTorch ------------------------------------------------------------------------------

@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch not installed")
@pytest.mark.parametrize("case", ["plain", "causal", "causal_T<S", "causal_T>S", "bool", "float", "scale"])
def test_matches_pytorch(case):
    rng = np.random.default_rng(12)
    T, S = {"causal_T<S": (40, 90), "causal_T>S": (90, 40)}.get(case, (70, 70))
    q, k, v, dout = make(rng, 2, 3, T, S, 64, 48)
    kw = {}
    tkw = {}
    if case.startswith("causal"):
        kw["causal"] = tkw["is_causal"] = True
    if case == "bool":
        m = rng.random((2, 1, T, S)) > 0.3
        kw["mask"] = m
        tkw["attn_mask"] = torch.from_numpy(m)
    if case == "float":
        m = rng.standard_normal((T, S)).astype(np.float32)
        kw["mask"] = m
        tkw["attn_mask"] = torch.from_numpy(m)
    if case == "scale":
        kw["scale"] = tkw["scale"] = 0.3
    out, lse = ops.attention_forward(q, k, v, **kw)
    dq, dk, dv = ops.attention_backward(q, k, v, out, lse, dout, **kw)
    tq, tk, tv = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (q, k, v))
    to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **tkw)
    to.backward(torch.from_numpy(dout.astype(np.float64)))
    assert rel(out, to.detach().numpy()) < 3e-5
    for g, t in ((dq, tq), (dk, tk), (dv, tv)):
        assert rel(g, t.grad.numpy()) < 3e-5


# ---- determinism, threads and ISAs ---------------------------------------------------------

@pytest.mark.parametrize("B,H", [(1, 1), (1, 3), (4, 4)])  # few (b, h): two-pass backward; many: per (b, h)
@pytest.mark.parametrize("causal,dropout", [(False, 0.0), (True, 0.2)])
def test_bitwise_same_for_1_and_2_threads(B, H, causal, dropout):
    rng = np.random.default_rng(13)
    q, k, v, dout = make(rng, B, H, 150, 200, 40, 24)
    mask = rng.standard_normal((150, 200)).astype(np.float32)
    kw = dict(mask=mask, causal=causal, dropout=dropout, seed=3)
    old = pydl.get_num_threads()
    try:
        res = []
        for nt in (1, 2, 1, 2):
            pydl.set_num_threads(nt)
            out, lse, grads = run_all(q, k, v, dout, **kw)
            res.append([out, lse, *grads])
    finally:
        pydl.set_num_threads(old)
    for r in res[1:]:
        for a, b in zip(res[0], r):
            np.testing.assert_array_equal(a, b)


@pytest.fixture(params=_core.available_isas())
def each_isa(request):
    old = _core.selected_isa()
    _core.select_isa(request.param)
    yield request.param
    _core.select_isa(old)


@pytest.mark.parametrize("shape", [(1, 2, 37, 53, 8, 8), (2, 1, 100, 130, 64, 64), (1, 1, 9, 257, 80, 33)],
                         ids=str)
def test_every_isa_matches_reference(each_isa, shape, threads):
    rng = np.random.default_rng(14)
    q, k, v, dout = make(rng, *shape)
    mask = rng.random(shape[2:4]) > 0.25
    check_against_ref(q, k, v, dout, 3e-5, mask=mask, causal=True, dropout=0.1, seed=8)
    check_against_ref(q, k, v, dout, 3e-5)


_SNIPPET = """
import numpy as np, pydl
from pydl import ops
import sys
sys.path.insert(0, {tests!r})
from reference_attention import attention_ref, attention_backward_ref
rng = np.random.default_rng(0)
q = rng.standard_normal((2, 2, 45, 16)).astype(np.float32)
k = rng.standard_normal((2, 2, 70, 16)).astype(np.float32)
v = rng.standard_normal((2, 2, 70, 16)).astype(np.float32)
do = rng.standard_normal((2, 2, 45, 16)).astype(np.float32)
assert pydl.config()["isa"] == {isa!r}
out, lse = ops.attention_forward(q, k, v, causal=True)
g = ops.attention_backward(q, k, v, out, lse, do, causal=True)
ro, _ = attention_ref(q, k, v, causal=True)
rg = attention_backward_ref(q, k, v, do, causal=True)
assert np.abs(out - ro).max() < 3e-5 * np.abs(ro).max()
for a, b in zip(g, rg):
    assert np.abs(a - b).max() < 3e-5 * np.abs(b).max()
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_each_isa_subprocess(isa):
    if isa not in _core.available_isas():
        pytest.skip(f"{isa} not available here")
    env = dict(os.environ, PYDL_ISA=isa)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(pydl.__file__)))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    code = _SNIPPET.format(tests=os.path.dirname(os.path.abspath(__file__)), isa=isa)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# ---- inputs --------------------------------------------------------------------------------

def test_non_contiguous_and_int_inputs_are_copied():
    rng = np.random.default_rng(15)
    q, k, v, dout = make(rng, 2, 3, 20, 24, 8)
    qt = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # strided view
    kr = k[:, :, ::-1][:, :, ::-1]
    out = ops.scaled_dot_product_attention(qt, kr, v[..., ::1])
    np.testing.assert_array_equal(out, ops.scaled_dot_product_attention(q, k, v))
    qi = rng.integers(-2, 3, q.shape)
    out = ops.scaled_dot_product_attention(qi, k, v)
    assert out.dtype == np.float32
    assert rel(out, attention_ref(qi, k, v)[0]) < 3e-5


def _bad(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_bad_inputs():
    rng = np.random.default_rng(16)
    q, k, v, dout = make(rng, 2, 3, 5, 6, 4)
    sdpa = ops.scaled_dot_product_attention
    _bad(lambda: sdpa(q[0], k, v), ValueError, r"q has 3 dims \(3, 5, 4\)")
    _bad(lambda: sdpa(q, k[0], v), ValueError, r"k has 3 dims")
    _bad(lambda: sdpa(q, k, v[..., None]), ValueError, r"v has 5 dims")
    _bad(lambda: sdpa(q, k[:1], v), ValueError, r"batch and heads")
    _bad(lambda: sdpa(q, k[:, :2], v), ValueError, r"batch and heads")
    _bad(lambda: sdpa(q, k[..., :3], v), ValueError, r"k \(2, 3, 6, 3\) must have q's feature size d = 4")
    _bad(lambda: sdpa(q, k, v[:, :, :5]), ValueError, r"v \(2, 3, 5, 4\) must have as many positions as k: S = 6")
    _bad(lambda: sdpa(q, k, v.astype(np.float64)), ValueError, r"cannot be mixed.*v float64")
    _bad(lambda: sdpa(q, k, v, mask=np.ones((5, 7), bool)), ValueError, r"mask \(5, 7\) is not broadcastable")
    _bad(lambda: sdpa(q, k, v, mask=np.ones((3, 2, 5, 6), bool)), ValueError, r"not broadcastable.*\(2, 3, 5, 6\)")
    _bad(lambda: sdpa(q, k, v, mask=np.ones((1, 2, 3, 5, 6), bool)), ValueError, r"mask has 5 dims")
    _bad(lambda: sdpa(q, k, v, mask=np.array([["a"]])), TypeError, r"mask must be a boolean or numeric")
    _bad(lambda: sdpa(q, k, v, dropout=1.0), ValueError, r"dropout must be in \[0, 1\)")
    _bad(lambda: sdpa(q, k, v, dropout=-0.1), ValueError, r"dropout must be in \[0, 1\)")
    _bad(lambda: sdpa(q, k, v, dropout=float("nan")), ValueError, r"dropout must be in \[0, 1\)")
    _bad(lambda: sdpa(q, k, v, dropout="x"), TypeError, r"dropout must be a float")
    _bad(lambda: sdpa(q, k, v, scale=float("inf")), ValueError, r"scale must be finite")
    _bad(lambda: sdpa(q, k, v, scale=float("nan")), ValueError, r"scale must be finite")
    _bad(lambda: sdpa(q, k, v, scale="a"), TypeError, r"scale must be a real number")
    _bad(lambda: sdpa(q, k, v, causal=None), TypeError, r"causal must be a bool")
    _bad(lambda: sdpa(q, k, v, dropout=0.1, seed=-1), ValueError, r"seed must be an int")
    _bad(lambda: sdpa(q[..., :0], k[..., :0], v), ValueError, r"no features \(d = 0\)")
    _bad(lambda: sdpa(q.astype(complex), k, v), TypeError, r"must be real")
    _bad(lambda: sdpa("abc", k, v), TypeError, r"q must be a numeric array")
    _bad(lambda: ops.attention_forward(q, k, v, dropout=0.1), ValueError, r"needs an explicit seed")
    out, lse = ops.attention_forward(q, k, v)
    ab = ops.attention_backward
    _bad(lambda: ab(q, k, v, out[:, :, :4], lse, dout), ValueError, r"out has shape \(2, 3, 4, 4\), expected")
    _bad(lambda: ab(q, k, v, out, lse[..., :1], dout), ValueError, r"lse has shape")
    _bad(lambda: ab(q, k, v, out, lse, dout[0]), ValueError, r"dout has shape")
    _bad(lambda: ab(q, k, v, out.astype(np.float64), lse, dout), ValueError, r"out has dtype float64")
    _bad(lambda: ab(q, k, v, None, lse, dout), ValueError, r"out is required")
    # the binding's own checks (what pydl.ops never sends)
    o = np.empty((2, 3, 5, 4), np.float32)
    l = np.empty((2, 3, 5), np.float32)
    _bad(lambda: _core.attention_forward(q, k, v.astype(np.float64), None, False, 0.0, 0.5, 0, o, l), ValueError,
         "v must have dtype float32")
    _bad(lambda: _core.attention_forward(q, k, v, None, False, 0.0, 0.5, 0, o[:1], l), ValueError,
         r"out has shape")
    _bad(lambda: _core.attention_forward(q, k, v, np.ones((1, 1, 2, 6), bool), False, 0.0, 0.5, 0, o, l),
         ValueError, "not broadcastable")
    _bad(lambda: _core.attention_forward(q, k, v, None, False, 1.5, 0.5, 0, o, l), ValueError, "dropout")
    _bad(lambda: _core.attention_forward(q, k, v, None, False, 0.0, float("nan"), 0, o, l), ValueError, "scale")
