"""Nadam: the fused kernel (fast and naive, float32 and float64) against a float64 NumPy reference of
Keras 3's update rule over several steps, PyTorch's NAdam with momentum_decay=1 (the same rule),
the optimizer object (registry name, lr= alias, clipping and weight decay), and its state saved and
loaded with a model so that training continues exactly."""
from __future__ import annotations

import numpy as np
import pytest

import pydl
from pydl import _core, ops, optimizers
from pydl.layers import Dense


def keras_nadam_reference(p, grads, lr=0.001, b1=0.9, b2=0.999, eps=1e-7, weight_decay=0.0):
    """Keras 3's Nadam.update_step, step by step in float64 (u_product updated once per step)."""
    p = np.array(p, np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    u_product = 1.0
    for it, g in enumerate(grads):
        g = np.asarray(g, np.float64)
        if weight_decay:
            p = p - lr * weight_decay * p
        t = it + 1
        u_t = b1 * (1.0 - 0.5 * 0.96 ** t)
        u_t1 = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        u_product = u_product * u_t
        u_product_1 = u_product * u_t1
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        m_hat = u_t1 * m / (1 - u_product_1) + (1 - u_t) * g / (1 - u_product)
        v_hat = v / (1 - b2 ** t)
        p = p - m_hat * lr / (np.sqrt(v_hat) + eps)
    return p, m, v


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("n", [1, 7, 16, 33, 1000])
def test_kernel_matches_keras_formula(dtype, naive, n, rng):
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(12)]
    want_p, want_m, want_v = keras_nadam_reference(p0, grads, lr=0.01, b1=0.85, b2=0.99, eps=1e-6)
    p = p0.astype(dtype)
    m = np.zeros(n, dtype)
    v = np.zeros(n, dtype)
    for t, g in enumerate(grads, start=1):
        ops.optim.nadam_update(p, m, v, g.astype(dtype), 0.01, t, 0.85, 0.99, 1e-6, naive=naive)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m, want_m, **tol)
    np.testing.assert_allclose(v, want_v, **tol)
    np.testing.assert_allclose(p, want_p, **tol)


@pytest.mark.parametrize("beta_1", [0.0, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("step", [1, 2, 37, 899, 950, 1500, 20000])
def test_schedule_product_matches_the_step_by_step_product(beta_1, step):
    u = lambda i: beta_1 * (1.0 - 0.5 * 0.96 ** i)  # noqa: E731
    want = 1.0
    for i in range(1, step + 1):
        want *= u(i)
    u_t, u_t1, prod_t, prod_t1 = ops.optim.nadam_schedule(step, beta_1)
    assert (u_t, u_t1) == (u(step), u(step + 1))
    assert prod_t == pytest.approx(want, rel=1e-12, abs=1e-300)
    assert prod_t1 == pytest.approx(want * u(step + 1), rel=1e-12, abs=1e-300)


def test_huge_step_uses_the_limit_of_the_schedule():
    # Far past the warm-up, u_t = beta_1 and U_t underflows to 0: m_hat = beta_1 m + (1 - beta_1) g and
    # v_hat = v. (The product over earlier steps is not a loop over all of them.)
    for step in (10**7, 10**12, 2**63):
        p = np.array([1.0, -2.0])
        m = np.array([0.5, 0.25])
        v = np.array([4.0, 1.0])
        g = np.array([1.0, -1.0])
        ops.optim.nadam_update(p, m, v, g, 0.1, step, 0.9, 0.999, 0.0)
        m_want = np.array([0.5, 0.25]) + 0.1 * (g - [0.5, 0.25])
        v_want = np.array([4.0, 1.0]) + 0.001 * (g * g - [4.0, 1.0])
        p_want = np.array([1.0, -2.0]) - 0.1 * (0.9 * m_want + 0.1 * g) / np.sqrt(v_want)
        np.testing.assert_allclose(m, m_want, rtol=1e-14)
        np.testing.assert_allclose(v, v_want, rtol=1e-14)
        np.testing.assert_allclose(p, p_want, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_and_naive_agree_with_clip_and_decay(dtype, rng):
    n = 203
    g = rng.standard_normal(n).astype(dtype) * 3
    outs = []
    for naive in (False, True):
        p = np.linspace(-1, 1, n).astype(dtype)
        m = np.zeros(n, dtype)
        v = np.zeros(n, dtype)
        for t in range(1, 4):
            ops.optim.nadam_update(p, m, v, g, 0.1, t, clip_value=0.5, weight_decay=0.1, grad_scale=0.7,
                                   naive=naive)
        outs.append((p, m, v))
    # the naive loop forms 1 - beta_2 in float32 (0.00100005), the fast kernel rounds 1 - beta_2 from
    # double (0.001): v differs by 5e-5 relative
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, **(dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else
                                            dict(rtol=1e-13, atol=1e-14)))


def test_optimizer_matches_keras_reference_with_weight_decay(rng):
    p0 = rng.standard_normal((4, 5))
    grads = [rng.standard_normal((4, 5)) for _ in range(9)]
    p = p0.copy()
    opt = optimizers.Nadam(learning_rate=0.02, weight_decay=0.05)
    for g in grads:
        opt.apply_gradients([(g, p)])
    want, _, _ = keras_nadam_reference(p0, grads, lr=0.02, weight_decay=0.05)
    np.testing.assert_allclose(p, want, rtol=1e-12, atol=1e-14)
    assert opt.iterations == 9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vs_torch_nadam_momentum_decay_one(dtype, rng):
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal((6, 7)).astype(dtype)
    grads = [rng.standard_normal((6, 7)).astype(dtype) for _ in range(10)]
    tp = torch.tensor(p0.copy(), requires_grad=True)
    topt = torch.optim.NAdam([tp], lr=0.01, betas=(0.9, 0.999), eps=1e-7, momentum_decay=1.0)
    for g in grads:
        topt.zero_grad()
        tp.grad = torch.tensor(g.copy())
        topt.step()
    p = p0.copy()
    opt = optimizers.Nadam(learning_rate=0.01)
    for g in grads:
        opt.apply_gradients([(g, p)])
    # torch keeps its running mu product in float32 (a 1e-9 relative difference in float64)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(p, tp.detach().numpy(), **tol)


def test_torch_default_momentum_decay_is_a_different_schedule(rng):
    """PyTorch's default momentum_decay=0.004 is not Keras's rule: the results differ."""
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal(20)
    grads = [rng.standard_normal(20) for _ in range(5)]
    tp = torch.tensor(p0.copy(), requires_grad=True)
    topt = torch.optim.NAdam([tp], lr=0.01, eps=1e-7)
    for g in grads:
        tp.grad = torch.tensor(g.copy())
        topt.step()
    want, _, _ = keras_nadam_reference(p0, grads, lr=0.01)
    assert np.max(np.abs(tp.detach().numpy() - want)) > 1e-6


def test_registry_name_alias_and_config():
    opt = optimizers.get("nadam")
    assert type(opt) is optimizers.Nadam
    assert type(optimizers.get("Nadam")) is optimizers.Nadam
    assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    with pytest.warns(DeprecationWarning, match="lr"):
        o2 = optimizers.Nadam(lr=0.05)
    assert o2.learning_rate == 0.05
    again = optimizers.get(optimizers.serialize(o2))
    assert type(again) is optimizers.Nadam and again.get_config() == o2.get_config()
    with pytest.raises(ValueError, match="beta_1"):
        optimizers.Nadam(beta_1=1.0)


def test_state_roundtrip_continues_exactly(rng):
    p0 = rng.standard_normal(30)
    grads = [rng.standard_normal(30) for _ in range(8)]
    p = p0.copy()
    opt = optimizers.Nadam(learning_rate=0.01)
    for g in grads[:4]:
        opt.apply_gradients([(g, p)])
    state = opt.get_state()
    assert set(state) == {"iterations", "m/0", "v/0"}
    q = p.copy()
    opt2 = optimizers.Nadam(learning_rate=0.01)
    opt2.set_state(state)
    for g in grads[4:]:
        opt.apply_gradients([(g, p)])
        opt2.apply_gradients([(g, q)])
    np.testing.assert_array_equal(p, q)
    want, _, _ = keras_nadam_reference(p0, grads, lr=0.01)
    np.testing.assert_allclose(p, want, rtol=1e-12, atol=1e-14)


def test_model_save_load_keeps_nadam_state(tmp_path, rng):
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = rng.standard_normal((32, 2)).astype(np.float32)

    def make():
        pydl.seed(4)
        m = pydl.Sequential([Dense(8, activation="relu", input_shape=(4,)), Dense(2)])
        m.compile(optimizer="nadam", loss="mse")
        return m

    a = make()
    a.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    path = str(tmp_path / "nadam.pydl")
    a.save(path)
    b = pydl.load_model(path)
    assert type(b.optimizer) is optimizers.Nadam
    assert b.optimizer.iterations == a.optimizer.iterations == 8
    a.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    b.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_kernel_bad_input():
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="m and v are required"):
        _core.nadam_update(p, None, np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1, 0.1, 1.0, 0.9, 0.999, 1e-7)
    with pytest.raises(ValueError):
        _core.nadam_update(p, np.zeros(4, np.float64), np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1, 0.1,
                           1.0, 0.9, 0.999, 1e-7)
    with pytest.raises(ValueError, match="step"):
        ops.optim.nadam_update(p, np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4), 0.1, 0)


def test_ops_bad_input():
    """nadam_update refuses what the other in-place updates refuse, naming the argument."""
    f32 = lambda n=8: np.zeros(n, np.float32)  # noqa: E731
    g = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="m has shape"):
        ops.optim.nadam_update(f32(), f32(7), f32(), g, 0.1, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.optim.nadam_update(np.zeros((8, 2), np.float32)[:, 0], f32(), f32(), g, 0.1, 1)
    with pytest.raises(ValueError, match="v has dtype float64, expected float32"):
        ops.optim.nadam_update(f32(), f32(), np.zeros(8), g, 0.1, 1)
    with pytest.raises(ValueError, match="overlaps"):
        a = np.zeros(16, np.float32)
        ops.optim.nadam_update(a[:8], a[8:], a[8:], g, 0.1, 1)
    with pytest.raises(ValueError, match="grad has shape"):
        ops.optim.nadam_update(f32(), f32(), f32(), np.ones(9, np.float32), 0.1, 1)
    with pytest.raises(ValueError, match="lr must be finite"):
        ops.optim.nadam_update(f32(), f32(), f32(), g, np.nan, 1)
    with pytest.raises(ValueError, match=r"beta_1 and beta_2 must be in \[0, 1\)"):
        ops.optim.nadam_update(f32(), f32(), f32(), g, 0.1, 1, beta_1=1.0)
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        ops.optim.nadam_update(f32(), f32(), f32(), g, 0.1, True)
