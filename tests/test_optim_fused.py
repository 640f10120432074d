"""pydl.ops.optim.fused_update on the CPU (one call over a list of parameters) against the per-array
ops, and the regularizer ops against their NumPy formulas. No GPU needed."""
import math

import numpy as np
import pytest

from pydl.ops import optim as O

SIZES = [1, 3, 0, 1000, 4097, 17]

# (kind, hyperparameters, slot names, per-array call)
CASES = [
    ("sgd", {}, (), lambda p, s, g, h, c: O.sgd_update(p, g, 0.05, **c)),
    ("momentum", {"momentum": 0.9}, ("velocity",),
     lambda p, s, g, h, c: O.momentum_update(p, s["velocity"], g, 0.05, 0.9, **c)),
    ("momentum", {"momentum": 0.8, "nesterov": True}, ("velocity",),
     lambda p, s, g, h, c: O.momentum_update(p, s["velocity"], g, 0.05, 0.8, True, **c)),
    ("adagrad", {"epsilon": 1e-6}, ("accumulator",),
     lambda p, s, g, h, c: O.adagrad_update(p, s["accumulator"], g, 0.05, 1e-6, **c)),
    ("adagrad", {"epsilon": 1e-6, "epsilon_inside_sqrt": False}, ("accumulator",),
     lambda p, s, g, h, c: O.adagrad_update(p, s["accumulator"], g, 0.05, 1e-6, epsilon_inside_sqrt=False, **c)),
    ("rmsprop", {"rho": 0.8}, ("velocity",),
     lambda p, s, g, h, c: O.rmsprop_update(p, s["velocity"], g, 0.05, 0.8, **c)),
    ("rmsprop", {"rho": 0.9, "momentum": 0.5}, ("velocity", "momentum_slot", "average_gradient"),
     lambda p, s, g, h, c: O.rmsprop_update(p, s["velocity"], g, 0.05, 0.9, 0.5, momentum_slot=s["momentum_slot"],
                                            average_gradient=s["average_gradient"], **c)),
    ("adam", {"step": 3, "beta_1": 0.8, "beta_2": 0.99}, ("m", "v"),
     lambda p, s, g, h, c: O.adam_update(p, s["m"], s["v"], g, 0.05, 3, 0.8, 0.99, **c)),
    ("adam", {"step": 2}, ("m", "v", "vhat"),
     lambda p, s, g, h, c: O.adam_update(p, s["m"], s["v"], g, 0.05, 2, vhat=s["vhat"], **c)),
    ("nadam", {"step": 4}, ("m", "v"),
     lambda p, s, g, h, c: O.nadam_update(p, s["m"], s["v"], g, 0.05, 4, **c)),
]


def _data(dtype, seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
    return params, grads


def _slots(names, params, seed=1):
    rng = np.random.default_rng(seed)
    # RMSprop's centered denominator a - mg^2 stays well away from 0 (no cancellation, no NaN)
    scale = {"velocity": (1.0, 1.0), "average_gradient": (0.1, 0.0)}
    return [{k: (scale.get(k, (1.0, 0.0))[0] * np.abs(rng.standard_normal(p.shape))
                 + scale.get(k, (1.0, 0.0))[1]).astype(p.dtype) for k in names} for p in params]


def _copy(xs):
    return [x.copy() if isinstance(x, np.ndarray) else {k: v.copy() for k, v in x.items()} for x in xs]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("common", [{}, {"clip_value": 0.5, "weight_decay": 0.1, "l2": 0.01},
                                    {"grad_scale": 0.7}])
def test_fused_equals_per_array(case, dtype, common):
    kind, hyper, names, call = CASES[case]
    params, grads = _data(dtype)
    slots = _slots(names, params)
    p2, s2 = _copy(params), _copy(slots)
    for _ in range(2):
        O.fused_update(kind, params, grads, slots, 0.05, **hyper, **common)
        for p, s, g in zip(p2, s2, grads):
            call(p, s, g, hyper, common)
    for a, b in zip(params, p2):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(slots, s2):
        for k in names:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("mode", ["clipnorm", "global_clipnorm"])
def test_fused_norm_clipping(mode):
    params, grads = _data(np.float32, seed=3)
    slots = _slots(("m", "v"), params)
    p2, s2 = _copy(params), _copy(slots)
    O.fused_update("adam", params, grads, slots, 0.01, step=1, **{mode: 0.5})
    if mode == "clipnorm":
        scales = [O.clip_scale(math.sqrt(O.sum_squares(g)), 0.5) for g in grads]
    else:
        scales = [O.clip_scale(O.global_norm(grads), 0.5)] * len(grads)
    for p, s, g, sc in zip(p2, s2, grads, scales):
        O.adam_update(p, s["m"], s["v"], g, 0.01, 1, grad_scale=sc)
    for a, b in zip(params, p2):
        np.testing.assert_array_equal(a, b)
    assert any(sc < 1.0 for sc in scales)


def test_fused_bad_input():
    params, grads = _data(np.float32, sizes=[3, 4])
    slots = _slots(("m", "v"), params)
    with pytest.raises(ValueError, match="kind must be one of"):
        O.fused_update("lion", params, grads, slots, 0.1)
    with pytest.raises(ValueError, match="one entry per parameter"):
        O.fused_update("adam", params, grads[:1], slots, 0.1, step=1)
    with pytest.raises(ValueError, match="unknown slot"):
        O.fused_update("adam", params, grads, [{"m": s["m"], "v": s["v"], "x": s["m"]} for s in slots], 0.1, step=1)
    with pytest.raises(ValueError, match="m and v are required"):
        O.fused_update("adam", params, grads, [{"m": s["m"]} for s in slots], 0.1, step=1)
    with pytest.raises(ValueError, match="step must be"):
        O.fused_update("adam", params, grads, slots, 0.1, step=0)
    with pytest.raises(ValueError, match="not both"):
        O.fused_update("adam", params, grads, slots, 0.1, step=1, clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(ValueError, match="must be > 0"):
        O.fused_update("adam", params, grads, slots, 0.1, step=1, clipnorm=0.0)
    bad = [{"m": s["m"], "v": np.zeros(8, np.float32)[::2][:s["m"].size]} for s in slots]
    with pytest.raises(ValueError, match="C-contiguous"):
        O.fused_update("adam", params, grads, bad, 0.1, step=1)
    with pytest.raises(ValueError, match="grad has shape"):
        O.fused_update("sgd", params, [np.zeros(5, np.float32)] * 2, None, 0.1)
    # a failed call changes nothing
    before = _copy(params)
    with pytest.raises(ValueError):
        O.fused_update("adam", params, grads, [{"m": s["m"], "v": np.zeros(7, np.float32)} for s in slots], 0.1,
                       step=1)
    for a, b in zip(params, before):
        np.testing.assert_array_equal(a, b)
    late = [slots[0], {"m": slots[1]["m"], "v": np.zeros(8, np.float32)[::2]}]
    with pytest.raises(ValueError, match="C-contiguous"):
        O.fused_update("adam", params, grads, late, 0.1, step=1)
    for a, b in zip(params, before):
        np.testing.assert_array_equal(a, b)


def test_fused_empty_list_and_sgd_without_slots():
    O.fused_update("adam", [], [], [], 0.1, step=1)
    p = np.ones(5, np.float32)
    O.fused_update("sgd", [p], [np.ones(5, np.float32)], None, 0.5)
    np.testing.assert_array_equal(p, np.full(5, 0.5, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("l1,l2", [(0.01, 0.0), (0.0, 0.02), (0.01, 0.03), (0.0, 0.0)])
def test_regularizer_ops(dtype, l1, l2):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((7, 5)).astype(dtype)
    w[0, 0] = 0.0
    want = l1 * np.sum(np.abs(w.astype(np.float64))) + l2 * np.sum(w.astype(np.float64) ** 2)
    assert O.l1l2_penalty(w, l1, l2) == pytest.approx(want, rel=1e-12, abs=0)
    g = O.l1l2_gradient(w, l1, l2)
    assert g.dtype == w.dtype and g.shape == w.shape
    np.testing.assert_allclose(g, l1 * np.sign(w) + 2 * l2 * w, rtol=1e-6)
    assert g[0, 0] == 0.0


def test_regularizer_classes_use_ops():
    import pydl.regularizers as R
    w = np.array([[-2.0, 0.0], [1.5, 3.0]], np.float32)
    r = R.L1L2(l1=0.1, l2=0.2)
    assert r(w) == pytest.approx(0.1 * 6.5 + 0.2 * 15.25)
    np.testing.assert_allclose(r.gradient(w), 0.1 * np.sign(w) + 0.4 * w, rtol=1e-6)


def test_regularizer_ops_bad_input():
    w = np.ones((3, 2), np.float32)
    for op in (O.l1l2_penalty, O.l1l2_gradient):
        for bad in (-0.1, float("nan"), float("inf"), "0.1", None, True):
            with pytest.raises(ValueError, match=r"l1 must be a finite number >= 0"):
                op(w, bad, 0.0)
            with pytest.raises(ValueError, match=r"l2 must be a finite number >= 0"):
                op(w, 0.0, bad)
        with pytest.raises(TypeError, match=r"w must be a numeric array"):
            op(np.array(["a", "b"]), 0.1, 0.1)
        with pytest.raises(TypeError, match=r"w must be real"):
            op(np.ones(2, np.complex64), 0.1, 0.1)


def test_regularizer_ops_edge_arrays():
    e = np.zeros((0, 3), np.float32)
    assert O.l1l2_penalty(e, 0.1, 0.2) == 0.0
    assert O.l1l2_gradient(e, 0.1, 0.2).shape == (0, 3)
    w = np.arange(12, dtype=np.float64).reshape(3, 4) - 5.0
    view = w[:, ::-2]  # strided, negative step
    assert O.l1l2_penalty(view, 0.1, 0.2) == pytest.approx(
        0.1 * np.abs(view).sum() + 0.2 * (view ** 2).sum(), rel=1e-12)
    np.testing.assert_allclose(O.l1l2_gradient(view, 0.1, 0.2), 0.1 * np.sign(view) + 0.4 * view, rtol=1e-12)
    n = np.array([1.0, np.nan], np.float32)
    assert np.isnan(O.l1l2_penalty(n, 0.1, 0.0))
    assert np.isnan(O.l1l2_gradient(n, 0.0, 0.1)[1])
    ints = O.l1l2_gradient(np.array([-2, 0, 3]), 0.5, 0.0)
    assert ints.dtype == np.float32
    np.testing.assert_array_equal(ints, [-0.5, 0.0, 0.5])
