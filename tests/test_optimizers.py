import json
import math

import numpy as np
import pytest

import pydl
from pydl import _core
from pydl import optimizers as O
from pydl import schedules as S
from pydl.ops import optim as ops

from reference_optim import RefOptimizer

# (pydl class, reference kind, hyper-parameters) covering every rule and option.
CASES = [
    ("SGD", "sgd", {"learning_rate": 0.1}),
    ("SGD", "sgd", {"learning_rate": 0.05, "momentum": 0.9}),
    ("SGD", "sgd", {"learning_rate": 0.05, "momentum": 0.8, "nesterov": True}),
    ("Adagrad", "adagrad", {"learning_rate": 0.1}),
    ("Adagrad", "adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.5, "epsilon": 1e-3}),
    ("RMSprop", "rmsprop", {"learning_rate": 0.01}),
    ("RMSprop", "rmsprop", {"learning_rate": 0.01, "momentum": 0.7, "rho": 0.8}),
    ("RMSprop", "rmsprop", {"learning_rate": 0.01, "centered": True, "epsilon": 1e-3}),
    ("RMSprop", "rmsprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.5}),
    ("Adam", "adam", {"learning_rate": 0.01}),
    ("Adam", "adam", {"learning_rate": 0.01, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}),
    ("Adam", "adam", {"learning_rate": 0.01, "amsgrad": True}),
    ("AdamW", "adamw", {"learning_rate": 0.01}),
    ("AdamW", "adamw", {"learning_rate": 0.01, "weight_decay": 0.1, "amsgrad": True}),
]
OPTIONS = [
    {},
    {"clipvalue": 0.3},
    {"clipnorm": 1.5},
    {"global_clipnorm": 2.0},
    {"weight_decay": 0.05},
]
SHAPES = [(3, 5), (17,), (2, 3, 4), (1,)]


def _case_id(c):
    return c[0] + "-" + "-".join(f"{k}={v}" for k, v in c[2].items() if k != "learning_rate")


def _data(rng, dtype, steps=5, scale=1.0):
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(scale * rng.standard_normal(s)).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _run_both(cls_name, kind, hp, dtype, rng, steps=5, scale=1.0):
    params, grads = _data(rng, dtype, steps, scale)
    ref_params = [p.astype(np.float64) for p in params]
    opt = getattr(O, cls_name)(**hp)
    ref_hp = dict(hp)
    if cls_name == "AdamW" and "weight_decay" not in ref_hp:
        ref_hp["weight_decay"] = 0.004
    ref = RefOptimizer(kind, **ref_hp)
    for gs in grads:
        opt.apply_gradients(zip(gs, params))
        ref.step(ref_params, [g.astype(np.float64) for g in gs])
    return opt, params, ref_params


# ---- every optimizer against its float64 closed form ------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_matches_reference_float64(case, opts, rng):
    cls_name, kind, hp = case
    hp = dict(hp, **opts)
    if cls_name == "AdamW" and "weight_decay" in opts:
        hp["weight_decay"] = opts["weight_decay"]
    # Gradients large enough that every clipping option actually clips.
    opt, got, want = _run_both(cls_name, kind, hp, np.float64, rng, steps=5, scale=2.0)
    assert opt.iterations == 5
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_reference_float32(case, rng):
    cls_name, kind, hp = case
    _, got, want = _run_both(cls_name, kind, hp, np.float32, rng, steps=4)
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


def test_clipping_really_clips(rng):
    """The options above must change the result (so their tests can fail)."""
    base = _run_both("SGD", "sgd", {"learning_rate": 0.1}, np.float64, np.random.default_rng(5), scale=2.0)[1]
    for opts in OPTIONS[1:4]:
        got = _run_both("SGD", "sgd", dict(learning_rate=0.1, **opts), np.float64, np.random.default_rng(5),
                        scale=2.0)[1]
        assert not np.allclose(got[0], base[0]), opts


def test_clip_value_exact():
    p = np.zeros(5, np.float32)
    O.SGD(learning_rate=1.0, clipvalue=0.5).apply_gradients([(np.array([-3, -0.5, 0.2, 0.5, 9.0]), p)])
    np.testing.assert_array_equal(p, np.array([0.5, 0.5, -0.2, -0.5, -0.5], np.float32))


def test_clipnorm_per_tensor_vs_global():
    a, b = np.zeros(2), np.zeros(1)
    ga, gb = np.array([3.0, 4.0]), np.array([12.0])  # norms 5 and 12, global 13
    O.SGD(learning_rate=1.0, clipnorm=1.0).apply_gradients([(ga, a), (gb, b)])
    np.testing.assert_allclose(a, [-0.6, -0.8])
    np.testing.assert_allclose(b, [-1.0])
    a, b = np.zeros(2), np.zeros(1)
    O.SGD(learning_rate=1.0, global_clipnorm=1.0).apply_gradients([(ga, a), (gb, b)])
    np.testing.assert_allclose(a, [-3 / 13, -4 / 13])
    np.testing.assert_allclose(b, [-12 / 13])
    a = np.zeros(2)
    O.SGD(learning_rate=1.0, clipnorm=10.0).apply_gradients([(ga, a)])  # below the limit: untouched
    np.testing.assert_array_equal(a, [-3.0, -4.0])


def test_decoupled_weight_decay_sgd():
    p = np.array([2.0, -4.0])
    O.SGD(learning_rate=0.1, weight_decay=0.5).apply_gradients([(np.zeros(2), p)])
    np.testing.assert_allclose(p, [2.0 * 0.95, -4.0 * 0.95])


# ---- kernels: fast vs naive twin, every ISA, every dtype -------------------------------------

KERNELS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "rmsprop_mom_centered", "adam", "amsgrad"]


def _kernel_call(name, p, slots, g, naive=False, **kw):
    if name == "sgd":
        ops.sgd_update(p, g, 0.1, naive=naive, **kw)
    elif name in ("momentum", "nesterov"):
        ops.momentum_update(p, slots[0], g, 0.1, 0.9, name == "nesterov", naive=naive, **kw)
    elif name == "adagrad":
        ops.adagrad_update(p, slots[0], g, 0.1, 1e-3, naive=naive, **kw)
    elif name == "rmsprop":
        ops.rmsprop_update(p, slots[0], g, 0.01, 0.9, naive=naive, **kw)
    elif name == "rmsprop_mom_centered":
        ops.rmsprop_update(p, slots[0], g, 0.01, 0.9, 0.5, 1e-3, momentum_slot=slots[1],
                           average_gradient=slots[2], naive=naive, **kw)
    elif name == "adam":
        ops.adam_update(p, slots[0], slots[1], g, 0.01, 3, naive=naive, **kw)
    elif name == "amsgrad":
        ops.adam_update(p, slots[0], slots[1], g, 0.01, 3, vhat=slots[2], naive=naive, **kw)


def _kernel_inputs(rng, n, dtype):
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    # Positive second-moment slots (adagrad accumulator, rmsprop/adam v, vhat); the centered average
    # gradient stays small so a - mg^2 > 0.
    slots = [rng.uniform(0.5, 1.0, n).astype(dtype), rng.uniform(0.2, 0.5, n).astype(dtype),
             rng.uniform(0.0, 0.1, n).astype(dtype)]
    return p, slots, g


@pytest.mark.parametrize("isa", _core.available_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_vs_naive(name, dtype, isa, rng):
    old = _core.selected_isa()
    _core.select_isa(isa)
    try:
        tol = dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
        extras = [{}, {"grad_scale": 0.7, "clip_value": 0.9, "l2": 0.01, "weight_decay": 0.1}]
        for n in (1, 3, 16, 17, 45, 1000):
            for kw in extras:
                p, slots, g = _kernel_inputs(rng, n, dtype)
                p0 = p.copy()
                p2, slots2 = p.copy(), [s.copy() for s in slots]
                _kernel_call(name, p, slots, g, **kw)
                _kernel_call(name, p2, slots2, g, naive=True, **kw)
                np.testing.assert_allclose(p, p2, **tol, err_msg=f"{name} n={n} {kw}")
                for s, s2 in zip(slots, slots2):
                    np.testing.assert_allclose(s, s2, **tol)
                assert (p != p0).all(), "every element must be updated, the tail included"
    finally:
        _core.select_isa(old)


@pytest.mark.parametrize("name", KERNELS)
def test_threads_bitwise_identical(name, rng):
    n = 200_003  # several threads' worth, with a tail
    p0, slots0, g = _kernel_inputs(rng, n, np.float32)
    results = []
    old = pydl.get_num_threads()
    try:
        for nt in (1, 2):
            pydl.set_num_threads(nt)
            p, slots = p0.copy(), [s.copy() for s in slots0]
            _kernel_call(name, p, slots, g, clip_value=1.5, weight_decay=0.01)
            results.append((p, slots, ops.sum_squares(g)))
    finally:
        pydl.set_num_threads(old)
    (p1, s1, n1), (p2, s2, n2) = results
    np.testing.assert_array_equal(p1, p2)
    for a, b in zip(s1, s2):
        np.testing.assert_array_equal(a, b)
    assert n1 == n2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_squares(dtype, rng, threads):
    for n in (0, 1, 7, 4096, 4097, 100_001):
        x = rng.standard_normal(n).astype(dtype)
        want = float(np.sum(x.astype(np.float64) ** 2))
        assert ops.sum_squares(x) == pytest.approx(want, rel=1e-13, abs=1e-300)
        assert ops.sum_squares(x, naive=True) == pytest.approx(want, rel=1e-13, abs=1e-300)
    # Accumulated in double: 1e7 copies of 0.1f sum exactly as in float64.
    x = np.full(10_000_000, 0.1, np.float32)
    assert ops.sum_squares(x) == pytest.approx(1e7 * float(np.float32(0.1)) ** 2, rel=1e-12)


def test_empty_param_is_a_no_op():
    p = np.zeros((0, 3), np.float32)
    opt = O.Adam()
    opt.apply_gradients([(np.zeros((0, 3)), p)])
    assert opt.iterations == 1 and opt.get_state()["m/0"].shape == (0, 3)


# ---- against torch.optim ----------------------------------------------------------------------

def _torch_run(torch_opt_fn, params, grads):
    torch = pytest.importorskip("torch")
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = torch_opt_fn(tp)
    for gs in grads:
        for t, g in zip(tp, gs):
            t.grad = torch.tensor(g.copy())
        opt.step()
    return [t.detach().numpy() for t in tp]


TORCH_CASES = [
    ("sgd", lambda T, ps: T.optim.SGD(ps, lr=0.1), lambda: O.SGD(learning_rate=0.1)),
    ("momentum", lambda T, ps: T.optim.SGD(ps, lr=0.05, momentum=0.9), lambda: O.SGD(0.05, momentum=0.9)),
    ("nesterov", lambda T, ps: T.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
     lambda: O.SGD(0.05, momentum=0.9, nesterov=True)),
    # Keras puts epsilon inside the square root, torch outside: with epsilon 0 they agree exactly.
    ("adagrad", lambda T, ps: T.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.1, eps=0.0),
     lambda: O.Adagrad(0.1, initial_accumulator_value=0.1, epsilon=0.0)),
    ("rmsprop", lambda T, ps: T.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0.0),
     lambda: O.RMSprop(0.01, rho=0.9, epsilon=0.0)),
    ("rmsprop_centered_mom", lambda T, ps: T.optim.RMSprop(ps, lr=0.01, alpha=0.8, eps=0.0, momentum=0.6,
                                                           centered=True),
     lambda: O.RMSprop(0.01, rho=0.8, momentum=0.6, centered=True, epsilon=0.0)),
    ("adam", lambda T, ps: T.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=0.0),
     lambda: O.Adam(0.01, epsilon=0.0)),
    ("amsgrad", lambda T, ps: T.optim.Adam(ps, lr=0.01, eps=0.0, amsgrad=True),
     lambda: O.Adam(0.01, epsilon=0.0, amsgrad=True)),
    ("adamw", lambda T, ps: T.optim.AdamW(ps, lr=0.01, weight_decay=0.1, eps=0.0),
     lambda: O.AdamW(0.01, weight_decay=0.1, epsilon=0.0)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c[0])
def test_vs_torch_optim(case, dtype, rng):
    torch = pytest.importorskip("torch")
    _, make_torch, make_pydl = case
    params, grads = _data(rng, dtype, steps=6)
    want = _torch_run(lambda ps: make_torch(torch, ps), params, grads)
    opt = make_pydl()
    for gs in grads:
        opt.apply_gradients(zip(gs, params))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=3e-5, atol=3e-6)
    for g, w in zip(params, want):
        np.testing.assert_allclose(g, w, **tol)


def test_vs_torch_with_epsilon_converted(rng):
    """Nonzero epsilon: torch's placement through the ops (outside the sqrt; Adam's epsilon scaled)."""
    torch = pytest.importorskip("torch")
    params, grads = _data(rng, np.float64, steps=6)
    b1, b2, eps, lr = 0.9, 0.99, 1e-2, 0.01
    for name in ("adam", "adamw", "adagrad", "rmsprop"):
        mk = {"adam": lambda ps: torch.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps),
              "adamw": lambda ps: torch.optim.AdamW(ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=0.2),
              "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=lr, eps=eps),
              "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=lr, alpha=b2, eps=eps)}[name]
        want = _torch_run(mk, params, grads)
        got = [p.copy() for p in params]
        slots = [[np.zeros_like(p) for _ in range(2)] for p in got]
        for t, gs in enumerate(grads, start=1):
            for p, g, s in zip(got, gs, slots):
                if name in ("adam", "adamw"):
                    ops.adam_update(p, s[0], s[1], g, lr, t, b1, b2, eps * math.sqrt(1 - b2 ** t),
                                    weight_decay=0.2 if name == "adamw" else 0.0)
                elif name == "adagrad":
                    ops.adagrad_update(p, s[0], g, lr, eps, epsilon_inside_sqrt=False)
                else:
                    ops.rmsprop_update(p, s[0], g, lr, b2, 0.0, eps, epsilon_inside_sqrt=False)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=name)


def test_l2_matches_torch_sgd_weight_decay(rng):
    torch = pytest.importorskip("torch")
    params, grads = _data(rng, np.float64, steps=4)
    want = _torch_run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01), params, grads)
    got = [p.copy() for p in params]
    vel = [np.zeros_like(p) for p in got]
    for gs in grads:
        for p, g, v in zip(got, gs, vel):
            ops.momentum_update(p, v, g, 0.1, 0.9, l2=0.01)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


# ---- NaN propagates -------------------------------------------------------------------------

@pytest.mark.parametrize("opts", [{}, {"clipvalue": 0.5}, {"clipnorm": 1.0}, {"global_clipnorm": 1.0}],
                         ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("cls", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_nan_gradient_propagates(cls, opts):
    n = 37
    p = np.ones(n, np.float32)
    g = np.full(n, 0.1, np.float32)
    g[5] = np.nan
    getattr(O, cls)(**opts).apply_gradients([(g, p)])
    assert np.isnan(p[5])
    if opts.get("clipnorm") or opts.get("global_clipnorm"):
        assert np.isnan(p).all()  # the norm is NaN, so is every clipped gradient (as in Keras)
    else:
        assert np.isfinite(np.delete(p, 5)).all()


# ---- strict in-place checks -----------------------------------------------------------------

def test_binding_rejects_bad_inplace_arrays():
    p = np.zeros(8, np.float32)
    m, v, g = np.zeros(8, np.float32), np.zeros(8, np.float32), np.ones(8, np.float32)
    args = (1e-3, 0.9, 0.999, 1e-7)
    with pytest.raises(ValueError, match="m has dtype float64"):
        _core.adam_update(p, np.zeros(8), v, None, g, *args)
    with pytest.raises(ValueError, match="grad has dtype float64"):
        _core.adam_update(p, m, v, None, g.astype(np.float64), *args)
    with pytest.raises(ValueError, match="param must have dtype float32 or float64"):
        _core.sgd_update(np.zeros(8, np.int32), np.zeros(8, np.int32), 0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.adam_update(np.zeros(16, np.float32)[::2], m, v, None, g, *args)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.momentum_update(p, np.zeros(16, np.float32)[::2], g, 0.1, 0.9)
    ro = np.zeros(8, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _core.sgd_update(ro, g, 0.1)
    with pytest.raises(ValueError, match="v has shape"):
        _core.adam_update(p, m, np.zeros(9, np.float32), None, g, *args)
    with pytest.raises(ValueError, match="overlaps"):
        _core.adam_update(p, m, m, None, g, *args)
    with pytest.raises(ValueError, match="overlaps"):
        _core.sgd_update(p, p, 0.1)
    with pytest.raises(TypeError):
        _core.sgd_update([0.0, 1.0], [1.0, 1.0], 0.1)
    assert not p.any() and not m.any()  # nothing was written by any failed call


def test_ops_reject_bad_inplace_arrays():
    g = np.ones(8)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.sgd_update(np.zeros((8, 2))[:, 0], g, 0.1)
    with pytest.raises(ValueError, match="negative|C-contiguous"):
        ops.sgd_update(np.zeros(8)[::-1], g, 0.1)
    ro = np.zeros(8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        ops.sgd_update(ro, g, 0.1)
    with pytest.raises(ValueError, match="velocity has dtype float32, expected float64"):
        ops.momentum_update(np.zeros(8), np.zeros(8, np.float32), g, 0.1, 0.9)
    with pytest.raises(ValueError, match="m has shape"):
        ops.adam_update(np.zeros(8), np.zeros(7), np.zeros(8), g, 0.1, 1)
    with pytest.raises(ValueError, match="grad has shape"):
        ops.sgd_update(np.zeros(8), np.ones(9), 0.1)
    with pytest.raises(ValueError, match="float32 or float64"):
        ops.sgd_update(np.zeros(8, np.float16), g, 0.1)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        ops.sgd_update([0.0] * 8, g, 0.1)
    with pytest.raises(ValueError, match="overlaps"):
        a = np.zeros(16)
        ops.adam_update(a[:8], a[8:], a[8:], g, 0.1, 1)
    with pytest.raises(ValueError, match="step"):
        ops.adam_update(np.zeros(8), np.zeros(8), np.zeros(8), g, 0.1, 0)
    with pytest.raises(ValueError, match="lr must be finite"):
        ops.sgd_update(np.zeros(8), g, math.nan)
    with pytest.raises(ValueError, match="clip_value"):
        ops.sgd_update(np.zeros(8), g, 0.1, clip_value=-1.0)
    # The gradient is read only: cast and copied on purpose.
    p = np.zeros(8, np.float32)
    ops.sgd_update(p, np.arange(16.0)[::2], 1.0)
    np.testing.assert_array_equal(p, -np.arange(16.0, dtype=np.float32)[::2])
    # A gradient aliasing the param is copied first.
    p = np.ones(8)
    ops.sgd_update(p, p, 0.5)
    np.testing.assert_array_equal(p, np.full(8, 0.5))


def test_optimizer_rejects_bad_variables():
    g = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="variable 0 .*C-contiguous"):
        O.Adam().apply_gradients([(g, np.zeros(16, np.float32)[::2])])
    ro = np.zeros(8, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        O.SGD().apply_gradients([(g, ro)])
    with pytest.raises(ValueError, match="float32 or float64"):
        O.SGD().apply_gradients([(g, np.zeros(8, np.int64))])
    with pytest.raises(ValueError, match="grad 0 has shape"):
        O.SGD().apply_gradients([(np.ones(7), np.zeros(8))])
    with pytest.raises(TypeError, match="pair"):
        O.SGD().apply_gradients([np.zeros(8)])
    # Slots built for float32 params: a float64 param in the same position is refused, not copied.
    opt = O.Adam()
    opt.apply_gradients([(g, np.zeros(8, np.float32))])
    with pytest.raises(ValueError, match="dtype float64"):
        opt.apply_gradients([(g, np.zeros(8, np.float64))])
    with pytest.raises(ValueError, match="got 2 variables"):
        opt.apply_gradients([(g, np.zeros(8, np.float32)), (g, np.zeros(8, np.float32))])
    with pytest.raises(ValueError, match="shape"):
        opt.apply_gradients([(np.ones(4), np.zeros(4, np.float32))])
    assert opt.iterations == 1


def test_none_gradient_skips_variable():
    a, b = np.ones(3), np.ones(2)
    opt = O.SGD(learning_rate=0.5, momentum=0.5)
    opt.apply_gradients([(None, a), (np.ones(2), b)])
    np.testing.assert_array_equal(a, np.ones(3))
    np.testing.assert_array_equal(b, np.full(2, 0.5))
    assert opt.iterations == 1


def test_float64_grad_cast_for_float32_param():
    p = np.ones(4, np.float32)
    O.SGD(learning_rate=1.0).apply_gradients([(np.full(4, 0.25), p)])
    assert p.dtype == np.float32
    np.testing.assert_array_equal(p, np.full(4, 0.75, np.float32))


# ---- hyper-parameter validation, get(), config ---------------------------------------------

def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="only one of clipnorm"):
        O.SGD(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="momentum"):
        O.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="beta_1"):
        O.Adam(beta_1=1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        O.Adam(learning_rate=-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        O.Adam(learning_rate=math.inf)
    with pytest.raises(TypeError, match="learning_rate"):
        O.Adam(learning_rate="fast")
    with pytest.raises(ValueError, match="clipnorm"):
        O.Adam(clipnorm=0.0)
    with pytest.raises(ValueError, match="rho"):
        O.RMSprop(rho=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        O.AdamW(weight_decay=None)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        O.Adagrad(initial_accumulator_value=-0.1)


def test_keras_defaults():
    assert O.SGD().get_config()["learning_rate"] == 0.01
    assert O.Adam().get_config() | {} == O.Adam().get_config()
    a = O.Adam()
    assert (a.learning_rate, a.beta_1, a.beta_2, a.epsilon, a.amsgrad) == (0.001, 0.9, 0.999, 1e-7, False)
    w = O.AdamW()
    assert w.weight_decay == 0.004 and w.learning_rate == 0.001
    r = O.RMSprop()
    assert (r.learning_rate, r.rho, r.momentum, r.epsilon, r.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    ad = O.Adagrad()
    assert (ad.learning_rate, ad.initial_accumulator_value, ad.epsilon) == (0.001, 0.1, 1e-7)


def test_get():
    for name, cls in [("sgd", O.SGD), ("ADAM", O.Adam), ("AdamW", O.AdamW), ("rmsprop", O.RMSprop),
                      ("Adagrad", O.Adagrad)]:
        assert type(O.get(name)) is cls
    inst = O.Adam(0.5)
    assert O.get(inst) is inst
    with pytest.raises(ValueError, match="adagrad, adam, adamw, nadam, rmsprop, sgd"):
        O.get("adamax")
    with pytest.raises(ValueError):
        O.get(3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        O.get({"class_name": "os.system", "config": {}})
    assert pydl.registry.optimizers.get("AdamW") is O.AdamW
    assert pydl.registry.schedules.get("CosineDecay") is S.CosineDecay


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_config_round_trip(case):
    cls_name, _, hp = case
    opt = getattr(O, cls_name)(**hp, clipnorm=2.0)
    cfg = json.loads(json.dumps(opt.get_config()))
    for again in (getattr(O, cls_name).from_config(cfg), O.get(json.loads(json.dumps(O.serialize(opt)))),
                  O.Optimizer.from_config(O.serialize(opt))):
        assert type(again) is type(opt)
        assert again.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="class_name"):
        O.Optimizer.from_config(cfg)
    with pytest.raises(ValueError, match="bad config"):
        getattr(O, cls_name).from_config(dict(cfg, bogus=1))


# ---- learning rate: schedules, epochs, assignment ------------------------------------------

def test_schedule_drives_learning_rate():
    opt = O.SGD(learning_rate=S.StepDecay(0.4, drop=0.5, epochs_drop=2))
    p = np.zeros(1)
    steps = []
    for epoch in range(5):
        opt.set_epoch(epoch)
        before = p.copy()
        opt.apply_gradients([(np.ones(1), p)])
        steps.append(float(before[0] - p[0]))
    np.testing.assert_allclose(steps, [0.4, 0.4, 0.2, 0.2, 0.1])
    assert opt.current_learning_rate == pytest.approx(0.1)
    # Assigning a float replaces the schedule (what ReduceLROnPlateau does).
    opt.learning_rate = 0.03
    opt.set_epoch(0)
    assert opt.current_learning_rate == 0.03 and opt.get_config()["learning_rate"] == 0.03


def test_schedule_saved_in_config():
    opt = O.Adam(learning_rate=S.CosineDecay(0.1, decay_epochs=10, alpha=0.1))
    cfg = json.loads(json.dumps(opt.get_config()))
    assert cfg["learning_rate"] == {"class_name": "CosineDecay",
                                    "config": {"initial_learning_rate": 0.1, "decay_epochs": 10, "alpha": 0.1}}
    again = O.Adam.from_config(cfg)
    assert isinstance(again.learning_rate, S.CosineDecay)
    again.set_epoch(5)
    opt.set_epoch(5)
    assert again.current_learning_rate == opt.current_learning_rate


def test_plain_callable_learning_rate_works_but_is_not_saved():
    opt = O.SGD(learning_rate=lambda epoch: 0.1 / (epoch + 1))
    opt.set_epoch(3)
    assert opt.current_learning_rate == pytest.approx(0.025)
    p = np.zeros(2)
    opt.apply_gradients([(np.ones(2), p)])
    np.testing.assert_allclose(p, [-0.025, -0.025])
    with pytest.raises(ValueError, match="plain callable .*cannot be saved"):
        opt.get_config()
    bad = O.SGD(learning_rate=lambda e: float("nan"))
    with pytest.raises(ValueError, match="returned nan"):
        bad.apply_gradients([(np.ones(2), p)])
    with pytest.raises(ValueError, match="epoch"):
        opt.set_epoch(-1)


# ---- state save / restore ---------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_state_round_trip_resumes_identically(case, rng, tmp_path):
    cls_name, _, hp = case
    params, grads = _data(rng, np.float32, steps=6)
    a = getattr(O, cls_name)(**hp)
    for gs in grads[:3]:
        a.apply_gradients(zip(gs, params))
    saved_params = [p.copy() for p in params]
    state = a.get_state()
    assert int(state["iterations"]) == 3
    # Through an .npz file, as a model save would.
    np.savez(tmp_path / "s.npz", **state)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    b = getattr(O, cls_name).from_config(a.get_config())
    b.set_state(loaded)  # not built yet: checked at the next apply
    c = getattr(O, cls_name).from_config(a.get_config())
    c.build(saved_params)
    c.set_state(loaded)  # built: checked now
    pb, pc = [p.copy() for p in saved_params], [p.copy() for p in saved_params]
    for gs in grads[3:]:
        a.apply_gradients(zip(gs, params))
        b.apply_gradients(zip(gs, pb))
        c.apply_gradients(zip(gs, pc))
    for x, y, z in zip(params, pb, pc):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert a.iterations == b.iterations == c.iterations == 6
    sa, sb = a.get_state(), b.get_state()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])


def test_state_is_needed_to_resume(rng):
    """Without set_state the continuation differs (so the round-trip test can fail)."""
    params, grads = _data(rng, np.float32, steps=4)
    a = O.Adam(0.01)
    for gs in grads[:2]:
        a.apply_gradients(zip(gs, params))
    pb = [p.copy() for p in params]
    b = O.Adam(0.01)
    a.apply_gradients(zip(grads[2], params))
    b.apply_gradients(zip(grads[2], pb))
    assert not np.array_equal(params[0], pb[0])


def test_set_state_mismatch_raises(rng):
    p = [np.zeros((3, 4), np.float32), np.zeros(5, np.float32)]
    g = [np.ones((3, 4)), np.ones(5)]
    a = O.Adam()
    a.apply_gradients(zip(g, p))
    state = a.get_state()
    # Lazily checked: a state for other shapes fails at the next apply, before any update.
    b = O.Adam()
    b.set_state(state)
    q = [np.zeros((4, 3), np.float32), np.zeros(5, np.float32)]
    with pytest.raises(ValueError, match="'m/0' has shape \\(3, 4\\) but variable 0 has shape \\(4, 3\\)"):
        b.apply_gradients(zip([np.ones((4, 3)), np.ones(5)], q))
    assert not q[0].any() and not q[1].any()
    c = O.Adam()
    c.set_state(state)
    with pytest.raises(ValueError, match="2 variables but 1"):
        c.apply_gradients([(np.ones(5), np.zeros(5, np.float32))])
    # Checked at once when built.
    with pytest.raises(ValueError, match="shape"):
        a.set_state({**state, "m/1": np.zeros(6)})
    with pytest.raises(ValueError, match="unexpected state entry 'momentum/0'"):
        a.set_state({**state, "momentum/0": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="lacks"):
        a.set_state({k: v for k, v in state.items() if k != "v/1"})
    with pytest.raises(ValueError, match="iterations"):
        a.set_state({k: v for k, v in state.items() if k != "iterations"})
    with pytest.raises(ValueError, match="no slots"):
        a.set_state({"iterations": np.int64(4)})
    with pytest.raises(ValueError, match="positions"):
        a.set_state({"iterations": 1, "m/1": np.zeros(5), "v/1": np.zeros(5)})
    assert a.iterations == 1  # failed set_state calls change nothing


def test_get_state_before_build_and_plain_sgd():
    assert set(O.Adam().get_state()) == {"iterations"}
    opt = O.SGD(0.1)
    p = np.zeros(3)
    opt.apply_gradients([(np.ones(3), p)])
    st = opt.get_state()
    assert set(st) == {"iterations"} and int(st["iterations"]) == 1
    fresh = O.SGD(0.1)
    fresh.set_state(st)
    assert fresh.iterations == 1


def test_global_norm_and_clip_scale(rng):
    arrs = [rng.standard_normal(s) for s in SHAPES]
    want = math.sqrt(sum(float(np.sum(a * a)) for a in arrs))
    assert ops.global_norm(arrs) == pytest.approx(want, rel=1e-14)
    assert ops.clip_scale(10.0, 2.0) == 0.2 and ops.clip_scale(1.0, 2.0) == 1.0
    assert math.isnan(ops.clip_scale(math.nan, 2.0))
    with pytest.raises(ValueError, match="clip_norm"):
        ops.clip_scale(1.0, 0.0)


@pytest.mark.parametrize("isa", _core.available_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["momentum", "rmsprop_mom_centered", "adam", "amsgrad"])
def test_decaying_state_is_flushed_not_left_subnormal(name, dtype, isa):
    """State below the smallest normal number is stored as 0 (optim.h), by the fast kernels and the
    naive twins alike; NaN and normal values go through untouched."""
    tiny = np.finfo(dtype).tiny
    n = 37  # full vectors and a tail on every ISA
    old = _core.selected_isa()
    _core.select_isa(isa)
    try:
        for naive in (False, True):
            p = np.ones(n, dtype)
            g = np.zeros(n, dtype)
            # state at the smallest normal number (one decay step takes it below) in every lane but
            # two: one ordinary value and one NaN
            slots = [np.full(n, tiny, dtype) for _ in range(3)]
            for s in slots:
                s[0], s[1] = 0.25, np.nan
            _kernel_call(name, p, slots, g, naive=naive)
            # the decaying slots (AMSGrad's vhat is a running max: it keeps tiny, a normal number)
            used = slots[:1] if name == "momentum" else slots[:2] if name in ("adam", "amsgrad") else slots
            for s in used:
                assert np.isnan(s[1]), (name, naive)
                assert s[0] != 0 and np.isfinite(s[0]), (name, naive)
                rest = s[2:]
                assert not np.any((rest != 0) & (np.abs(rest) < tiny)), f"{name} naive={naive}: subnormal state left"
                assert np.all(rest == 0), f"{name} naive={naive}: decayed state should be 0, got {rest[:3]}"
    finally:
        _core.select_isa(old)


@pytest.mark.parametrize("make,key,value,match", [
    (lambda: O.Adam(), "m/0", np.full(3, np.nan), "holds non-finite values"),
    (lambda: O.Adam(), "v/0", -np.ones(3), "must be >= 0"),
    (lambda: O.Adam(amsgrad=True), "vhat/0", -np.ones(3), "must be >= 0"),
    (lambda: O.Adagrad(), "accumulator/0", -np.ones(3), "must be >= 0"),
    (lambda: O.RMSprop(), "velocity/0", np.array([1.0, -2.0, 0.0]), "must be >= 0"),
    (lambda: O.Nadam(), "v/0", np.full(3, np.inf), "holds non-finite values"),
    (lambda: O.SGD(momentum=0.9), "momentum/0", np.array([1.0, np.nan, 0.0]), "holds non-finite"),
])
def test_set_state_refuses_slot_values_that_would_poison_the_weights(make, key, value, match):
    opt = make()
    opt.apply_gradients([(np.ones(3, np.float32), np.ones(3, np.float32))])
    state = opt.get_state()
    make().set_state(state)  # the saved state itself is fine
    state[key] = value
    with pytest.raises(ValueError, match=match):
        make().set_state(state)
    # signed slots may be negative
    if key == "momentum/0":
        state[key] = -np.ones(3)
        make().set_state(state)
