"""Optimizer updates, norms and regularizers on CuPy arrays against the CPU ops on the same data."""
import math

import numpy as np
import pytest

from cuda_support import cp, needs_cuda, poisoned  # noqa: F401

import pydl.optimizers as opt_mod
import pydl.regularizers as R
from pydl.ops import optim as O

from test_optim_fused import CASES

pytestmark = needs_cuda

# Relative to each element and to the array's scale: the CPU build may contract a product and a
# sum into one FMA where the GPU rounds twice, an ulp of the inputs that cancellation (Nesterov's
# p + (mu v - lr g), RMSprop's a - mg^2) can leave in a small result.
TOL = {np.float32: 1e-6, np.float64: 1e-13}
SIZES = [1, 3, 1000, 4097, 0, 17, 8192, 5, 4096, 12345]


def _host(x):
    return cp.asnumpy(x) if isinstance(x, cp.ndarray) else x


def _close(gpu, cpu, dtype):
    cpu = np.asarray(cpu)
    finite = np.abs(cpu[np.isfinite(cpu)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(_host(gpu), cpu, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def _data(dtype, sizes, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [[rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(3)]
    return params, grads


def _slots(names, params, seed=1):
    rng = np.random.default_rng(seed)
    # RMSprop's centered denominator a - mg^2 stays well away from 0 (no cancellation, no NaN)
    scale = {"velocity": (1.0, 1.0), "average_gradient": (0.1, 0.0)}
    return [{k: (scale.get(k, (1.0, 0.0))[0] * np.abs(rng.standard_normal(p.shape))
                 + scale.get(k, (1.0, 0.0))[1]).astype(p.dtype) for k in names} for p in params]


def _gpu(xs):
    return [cp.asarray(x) if isinstance(x, np.ndarray) else {k: cp.asarray(v) for k, v in x.items()} for x in xs]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("common", [{}, {"clip_value": 0.5, "weight_decay": 0.1, "l2": 0.01, "grad_scale": 0.7}])
def test_per_array_ops_match_cpu(case, dtype, common):
    kind, hyper, names, call = CASES[case]
    params, grads = _data(dtype, [4097, 3])
    slots = _slots(names, params)
    gp, gs = _gpu(params), _gpu(slots)
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            call(params[i], slots[i], g, hyper, common)
            out = call(gp[i], gs[i], cp.asarray(g), hyper, common)
            assert out is gp[i]
    for i in range(len(params)):
        _close(gp[i], params[i], dtype)
        for k in names:
            _close(gs[i][k], slots[i][k], dtype)


@pytest.mark.parametrize("case", [0, 2, 6, 8, 9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_equals_per_tensor_and_cpu(case, dtype):
    kind, hyper, names, call = CASES[case]
    params, grads = _data(dtype, SIZES)
    slots = _slots(names, params)
    fp, fs = _gpu(params), _gpu(slots)        # fused on the GPU
    tp, ts = _gpu(params), _gpu(slots)        # per tensor on the GPU
    common = {"clip_value": 1.5, "weight_decay": 0.05}
    for step_grads in grads:
        gg = _gpu(step_grads)
        O.fused_update(kind, fp, gg, fs, 0.05, **hyper, **common)
        for i in range(len(tp)):
            call(tp[i], ts[i], gg[i], hyper, common)
        O.fused_update(kind, params, step_grads, slots, 0.05, **hyper, **common)
    for i in range(len(params)):
        np.testing.assert_array_equal(_host(fp[i]), _host(tp[i]))
        _close(fp[i], params[i], dtype)
        for k in names:
            np.testing.assert_array_equal(_host(fs[i][k]), _host(ts[i][k]))
            _close(fs[i][k], slots[i][k], dtype)


@pytest.mark.parametrize("mode", ["clipnorm", "global_clipnorm"])
def test_fused_norm_clipping_on_device(mode):
    params, grads = _data(np.float32, SIZES, seed=4)
    slots = _slots(("m", "v"), params)
    gp, gs = _gpu(params), _gpu(slots)
    for k, step_grads in enumerate(grads):
        O.fused_update("adam", gp, _gpu(step_grads), gs, 0.01, step=k + 1, **{mode: 2.0})
        O.fused_update("adam", params, step_grads, slots, 0.01, step=k + 1, **{mode: 2.0})
    for i in range(len(params)):
        _close(gp[i], params[i], np.float32)
        _close(gs[i]["m"], slots[i]["m"], np.float32)


def test_fused_mixed_dtypes_and_cached_table():
    from pydl.cuda import optim as cu
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(n).astype(dt) for n, dt in [(10, np.float32), (4100, np.float64), (7, np.float32)]]
    slots = _slots(("velocity",), params)
    gp, gs = _gpu(params), _gpu(slots)
    grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
    gg = _gpu(grads)
    for _ in range(3):
        O.fused_update("momentum", gp, gg, gs, 0.1, momentum=0.9, global_clipnorm=3.0)
        O.fused_update("momentum", params, grads, slots, 0.1, momentum=0.9, global_clipnorm=3.0)
    n_tables = len(cu._tables)
    O.fused_update("momentum", gp, gg, gs, 0.1, momentum=0.9)
    O.fused_update("momentum", params, grads, slots, 0.1, momentum=0.9)
    assert len(cu._tables) == n_tables  # same arrays: no new address table
    for i, p in enumerate(params):
        _close(gp[i], p, p.dtype.type)
        _close(gs[i]["velocity"], slots[i]["velocity"], p.dtype.type)


def test_fused_fast_path_keeps_every_check():
    # A step over arrays whose address list already passed the checks goes straight to the launch;
    # any other list (a slot listed twice, a view, a wrong dtype) still gets the full checks.
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(n).astype(np.float32) for n in (300, 5000, 0, 7)]
    slots = _slots(("m", "v"), params)
    gp, gs = _gpu(params), _gpu(slots)
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    gg = _gpu(grads)
    for step in (1, 2, 3):
        O.fused_update("adam", gp, gg, gs, 0.01, step=step)
        O.fused_update("adam", params, grads, slots, 0.01, step=step)
        assert O._cuda_checked_groups(gp, gg, gs, ("m", "v", "vhat")) is not None
    for i, p in enumerate(params):
        _close(gp[i], p, np.float32)
        _close(gs[i]["v"], slots[i]["v"], np.float32)
    twice = [dict(d) for d in gs]
    twice[1]["v"] = twice[1]["m"]
    with pytest.raises(ValueError, match="overlaps"):
        O.fused_update("adam", gp, gg, twice, 0.01, step=4)
    with pytest.raises(ValueError, match="share memory"):
        O.fused_update("adam", [gp[0], gp[0]], [gg[0], gg[0]], [gs[0], gs[0]], 0.01, step=4)
    bad = [dict(d) for d in gs]
    bad[0]["m"] = cp.zeros(300, dtype=cp.float64)
    with pytest.raises(ValueError, match="dtype"):
        O.fused_update("adam", gp, gg, bad, 0.01, step=4)
    before = _host(gp[1])
    g_alias = list(gg)
    g_alias[1] = gp[1]  # the gradient is the parameter itself: copied first, as on the CPU
    O.fused_update("sgd", gp, g_alias, None, 0.5)
    np.testing.assert_array_equal(_host(gp[1]), before - np.float32(0.5) * before)


@pytest.mark.parametrize("make", [
    lambda: opt_mod.Adam(0.01),
    lambda: opt_mod.Adam(0.01, amsgrad=True, global_clipnorm=1.0),
    lambda: opt_mod.AdamW(0.01, weight_decay=0.1, clipnorm=0.5),
    lambda: opt_mod.SGD(0.05, momentum=0.9, nesterov=True, clipvalue=0.3),
    lambda: opt_mod.SGD(0.05),
    lambda: opt_mod.RMSprop(0.01, momentum=0.5, centered=True),
    lambda: opt_mod.Adagrad(0.05),
    lambda: opt_mod.Nadam(0.01, weight_decay=0.01),
], ids=["adam", "amsgrad-gclip", "adamw-clip", "nesterov", "sgd", "rmsprop-c", "adagrad", "nadam"])
def test_optimizer_objects_match_cpu(make):
    rng = np.random.default_rng(7)
    shapes = [(31, 17), (17,), (1,), (0, 3), (64, 65)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    gp = [cp.asarray(p) for p in params]
    cpu, gpu = make(), make()
    for step in range(3):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        gg = [cp.asarray(g) for g in grads]
        if step == 1:
            grads[1] = gg[1] = None  # a None gradient leaves that parameter alone on both
        cpu.apply_gradients(zip(grads, params))
        gpu.apply_gradients(zip(gg, gp))
    for a, b in zip(gp, params):
        assert isinstance(a, cp.ndarray)
        _close(a, b, np.float32)
    state = gpu.get_state()
    ref = cpu.get_state()
    assert set(state) == set(ref)
    for k, v in state.items():
        assert isinstance(v, np.ndarray)
        _close(v, ref[k], np.float32)
    # restore onto the GPU (built and not yet built) and keep stepping in step with the CPU
    fresh = make()
    fresh.set_state(state)
    gp2 = [cp.asarray(p) for p in params]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    fresh.apply_gradients(zip([cp.asarray(g) for g in grads], gp2))
    gpu.set_state(state)
    gpu.apply_gradients(zip([cp.asarray(g) for g in grads], gp))
    cpu.apply_gradients(zip(grads, params))
    for a, b, c in zip(gp2, gp, params):
        _close(a, c, np.float32)
        _close(b, c, np.float32)
    for d in fresh._slots:
        assert all(isinstance(v, cp.ndarray) for v in d.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norms_match_cpu(dtype):
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(n).astype(dtype) for n in (1, 4097, 0, 100000)]
    for a in arrays:
        assert O.sum_squares(cp.asarray(a)) == pytest.approx(O.sum_squares(a), rel=1e-12, abs=0)
    assert O.global_norm([cp.asarray(a) for a in arrays]) == pytest.approx(O.global_norm(arrays), rel=1e-12)
    x = cp.asarray(arrays[3])
    assert O.sum_squares(x) == O.sum_squares(x)  # deterministic
    bad = cp.asarray(arrays[1]).copy()
    bad[5] = cp.nan
    assert math.isnan(O.global_norm([bad]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("l1,l2", [(0.01, 0.0), (0.0, 0.02), (0.01, 0.03)])
def test_regularizers_match_cpu(dtype, l1, l2):
    rng = np.random.default_rng(9)
    w = rng.standard_normal((37, 129)).astype(dtype)
    w[0, :5] = 0.0
    w[1, 0] = np.nan
    reg = R.L1L2(l1=l1, l2=l2)
    gw = cp.asarray(w)
    g = reg.gradient(gw)
    assert isinstance(g, cp.ndarray) and g.dtype == w.dtype
    np.testing.assert_array_equal(cp.asnumpy(g), reg.gradient(w))
    w[1, 0] = 0.5
    gw = cp.asarray(w)
    assert reg(gw) == pytest.approx(reg(w), rel=1e-12)
    assert reg(cp.zeros((0, 4), dtype)) == 0.0
    assert reg.gradient(cp.zeros((0, 4), dtype)).shape == (0, 4)


def test_bad_input():
    p = cp.zeros(10, cp.float32)
    g = cp.ones(10, cp.float32)
    m, v = cp.zeros(10, cp.float32), cp.zeros(10, cp.float32)
    with pytest.raises(ValueError, match="different devices"):
        O.adam_update(p, m, v, np.ones(10, np.float32), 0.1, 1)
    with pytest.raises(ValueError, match="different devices"):
        O.adam_update(p, np.zeros(10, np.float32), v, g, 0.1, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        O.adam_update(p, cp.zeros(20, cp.float32)[::2], v, g, 0.1, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        O.sgd_update(cp.zeros(20, cp.float32)[::2], g, 0.1)
    with pytest.raises(ValueError, match="dtype"):
        O.adam_update(p, cp.zeros(10, cp.float64), v, g, 0.1, 1)
    with pytest.raises(ValueError, match="dtype"):
        O.sgd_update(cp.zeros(10, cp.float16), g, 0.1)
    with pytest.raises(ValueError, match="shape"):
        O.adam_update(p, cp.zeros(9, cp.float32), v, g, 0.1, 1)
    with pytest.raises(ValueError, match="grad has shape"):
        O.sgd_update(p, cp.ones(9, cp.float32), 0.1)
    with pytest.raises(ValueError, match="m and v are required"):
        O.adam_update(p, None, v, g, 0.1, 1)
    with pytest.raises(ValueError, match="overlaps"):
        O.adam_update(p, m, m, g, 0.1, 1)
    with pytest.raises(ValueError, match="step must be"):
        O.adam_update(p, m, v, g, 0.1, 0)
    with pytest.raises(ValueError, match="share memory"):
        O.fused_update("sgd", [p, p], [g, g], None, 0.1)
    with pytest.raises(ValueError, match="different devices"):
        O.fused_update("sgd", [p, np.zeros(3, np.float32)], [g, np.ones(3, np.float32)], None, 0.1)
    opt = opt_mod.Adam(0.1)
    with pytest.raises(ValueError, match="different devices"):
        opt.apply_gradients([(np.ones(10, np.float32), p)])
    np.testing.assert_array_equal(cp.asnumpy(p), np.zeros(10, np.float32))  # nothing was written


def test_grad_cast_and_view_grad():
    rng = np.random.default_rng(11)
    p = rng.standard_normal(50).astype(np.float32)
    g64 = rng.standard_normal(100)
    gp = cp.asarray(p)
    O.sgd_update(gp, cp.asarray(g64)[::2], 0.1)   # a strided float64 grad is copied and cast
    O.sgd_update(p, g64[::2], 0.1)
    _close(gp, p, np.float32)
    O.sgd_update(gp, gp, 0.1)                     # grad aliasing the param is read before the write
    O.sgd_update(p, p, 0.1)
    _close(gp, p, np.float32)
