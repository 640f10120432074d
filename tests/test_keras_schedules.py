"""Keras's step-based schedules against Keras's documented formulas in NumPy, their use by the
optimizers (evaluated at optimizer.iterations), serialisation, LearningRateScheduler, the
learning rate in History, and saving with a learning rate that cannot be serialised."""
import os
import warnings

import numpy as np
import pytest

import pydl
from pydl import Sequential
from pydl.layers import Dense
from pydl.optimizers import SGD
from pydl.optimizers.schedules import (CosineDecay, ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay,
                                       PolynomialDecay)

STEPS = np.array([0, 1, 7, 10, 15, 99, 100, 101, 250, 1000])


def _check(schedule, formula):
    for s in STEPS:
        assert schedule(int(s)) == pytest.approx(float(formula(np.float64(s))), rel=1e-12, abs=1e-15), s


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay(staircase):
    sched = ExponentialDecay(0.1, decay_steps=100, decay_rate=0.96, staircase=staircase)
    p = (lambda s: np.floor(s / 100)) if staircase else (lambda s: s / 100)
    _check(sched, lambda s: 0.1 * 0.96 ** p(s))
    assert sched.per_step and ExponentialDecay(0.1, 100, 0.5)(50) == pytest.approx(0.1 * 0.5 ** 0.5)


@pytest.mark.parametrize("staircase", [False, True])
def test_inverse_time_decay(staircase):
    sched = InverseTimeDecay(0.5, 10, 0.5, staircase=staircase)
    p = (lambda s: np.floor(s / 10)) if staircase else (lambda s: s / 10)
    _check(sched, lambda s: 0.5 / (1 + 0.5 * p(s)))


def test_piecewise_constant_decay():
    sched = PiecewiseConstantDecay([10, 100], [1.0, 0.5, 0.1])
    _check(sched, lambda s: 1.0 if s <= 10 else (0.5 if s <= 100 else 0.1))
    with pytest.raises(ValueError, match="one more"):
        PiecewiseConstantDecay([1, 2], [1.0])


@pytest.mark.parametrize("cycle", [False, True])
@pytest.mark.parametrize("power", [1.0, 0.5, 2.0])
def test_polynomial_decay(cycle, power):
    sched = PolynomialDecay(0.1, 100, end_learning_rate=0.01, power=power, cycle=cycle)

    def f(s):
        d = 100.0
        if cycle:
            d = d * (1.0 if s == 0 else np.ceil(s / d))
        else:
            s = min(s, d)
        return (0.1 - 0.01) * (1 - s / d) ** power + 0.01
    _check(sched, f)


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_cosine_decay(alpha):
    _check(CosineDecay(0.1, 100, alpha=alpha),
           lambda s: 0.1 * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * min(s, 100) / 100)) + alpha))


def test_cosine_decay_with_warmup():
    sched = CosineDecay(0.0, decay_steps=200, alpha=0.1, warmup_target=0.1, warmup_steps=10)

    def f(s):
        s = min(s, 210)
        if s < 10:
            return (0.1 - 0.0) * s / 10 + 0.0
        return 0.1 * ((1 - 0.1) * 0.5 * (1 + np.cos(np.pi * (s - 10) / 200)) + 0.1)
    _check(sched, f)


def test_epoch_forms_stay():
    e = ExponentialDecay(0.2, 0.9)
    assert not e.per_step and e(3) == pytest.approx(0.2 * 0.9 ** 3)
    assert e.get_config() == {"initial_learning_rate": 0.2, "decay_rate": 0.9}
    assert InverseTimeDecay(0.5, decay_rate=0.25)(2) == pytest.approx(0.5 / 1.5)
    c = CosineDecay(0.1, decay_epochs=8, alpha=0.2)
    assert not c.per_step and c.get_config() == {"initial_learning_rate": 0.1, "decay_epochs": 8, "alpha": 0.2}


@pytest.mark.parametrize("sched", [ExponentialDecay(0.1, 100, 0.9, staircase=True), InverseTimeDecay(0.1, 5, 0.3),
                                   PiecewiseConstantDecay([3, 9], [0.3, 0.2, 0.1]),
                                   PolynomialDecay(0.1, 50, 0.001, 2.0, True),
                                   CosineDecay(0.01, 40, 0.1, warmup_target=0.1, warmup_steps=5)], ids=repr)
def test_serialise_and_optimizer_config(sched):
    again = pydl.schedules.deserialize(pydl.schedules.serialize(sched))
    assert again == sched and again(17) == sched(17)
    opt = SGD(learning_rate=sched)
    back = SGD.from_config(opt.get_config())
    assert back.learning_rate == sched


def test_optimizer_evaluates_a_step_schedule_at_its_iterations():
    """SGD with a step schedule: update t (from 0) uses lr(t): p_t+1 = p_t - lr(t) * g."""
    sched = PiecewiseConstantDecay([1, 2], [0.5, 0.1, 0.01])
    opt = SGD(learning_rate=sched)
    p = np.zeros(3, np.float32)
    g = np.ones(3, np.float32)
    expect = 0.0
    for t in range(4):
        assert opt.current_learning_rate == sched(t)
        opt.apply_gradients([(g, p)])
        expect -= sched(t)
        np.testing.assert_allclose(p, expect, rtol=1e-6)
    # through fit: 3 epochs of 2 batches = 6 updates; the logged learning rate is the next one's
    pydl.seed(0)
    model = Sequential([Dense(1, input_shape=(2,))])
    model.compile("mse", SGD(ExponentialDecay(0.1, 2, 0.5)))
    h = model.fit(np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32), batch_size=4, epochs=3, verbose=0)
    assert h.history["learning_rate"] == pytest.approx([0.1 * 0.5 ** 1, 0.1 * 0.5 ** 2, 0.1 * 0.5 ** 3])
    assert model.optimizer.iterations == 6


def _model(lr):
    pydl.seed(0)
    model = Sequential([Dense(1, input_shape=(2,))])
    model.compile("mse", SGD(lr))
    return model


def test_learning_rate_scheduler_and_history():
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    seen = []
    cb = pydl.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch > 0 else lr)
    track = pydl.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(
        model.optimizer.current_learning_rate))
    model = _model(0.1)
    h = model.fit(x, y, epochs=3, verbose=0, callbacks=[cb, track])
    assert seen == pytest.approx([0.1, 0.05, 0.025])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025])
    model = _model(0.1)
    h = model.fit(x, y, epochs=2, verbose=0, callbacks=[pydl.callbacks.LearningRateScheduler(lambda e: 0.3 / (e + 1))])
    assert h.history["learning_rate"] == pytest.approx([0.3, 0.15])
    with pytest.raises(ValueError, match="finite"):
        _model(0.1).fit(x, y, verbose=0, callbacks=[pydl.callbacks.LearningRateScheduler(lambda e, lr: -1.0)])


def test_unserialisable_learning_rate_saves_weights_and_warns(tmp_path):
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    model = _model(lambda epoch: 0.1 / (epoch + 1))
    path = os.path.join(tmp_path, "ckpt-{epoch}.npz")
    with pytest.warns(UserWarning, match="architecture and weights only"):
        h = model.fit(x, y, epochs=2, verbose=0, callbacks=[pydl.callbacks.ModelCheckpoint(path)])
    assert h.epoch == [0, 1]
    loaded = pydl.load_model(path.format(epoch=2))
    assert not loaded.compiled
    for u, v in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(u, v)
    with pytest.warns(UserWarning):
        model.save(os.path.join(tmp_path, "m.npz"))
    with pytest.raises(ValueError, match="plain callable"):
        model.get_config()
