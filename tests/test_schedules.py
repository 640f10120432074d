import json
import math

import numpy as np
import pytest

import pydl
from pydl import schedules as S

EPOCHS = list(range(0, 40))


def test_inverse_time_decay():
    s = S.InverseTimeDecay(0.5, decay_rate=0.25)
    for e in EPOCHS:
        assert s(e) == pytest.approx(0.5 / (1 + 0.25 * e), rel=1e-15)


def test_exponential_decay():
    s = S.ExponentialDecay(0.2, decay_rate=0.9)
    for e in EPOCHS:
        assert s(e) == pytest.approx(0.2 * 0.9 ** e, rel=1e-14)


def test_step_decay():
    s = S.StepDecay(0.8, drop=0.5, epochs_drop=3)
    want = [0.8] * 3 + [0.4] * 3 + [0.2] * 3 + [0.1]
    assert [s(e) for e in range(10)] == pytest.approx(want, rel=1e-15)
    d = S.StepDecay(1.0)
    assert (d.drop, d.epochs_drop) == (0.5, 10)
    assert d(9) == 1.0 and d(10) == 0.5 and d(25) == 0.25


def test_cosine_decay():
    s = S.CosineDecay(0.1, decay_epochs=8, alpha=0.2)
    for e in EPOCHS:
        c = 0.5 * (1 + math.cos(math.pi * min(e, 8) / 8))
        assert s(e) == pytest.approx(0.1 * (0.8 * c + 0.2), rel=1e-14)
    assert s(0) == pytest.approx(0.1)
    assert s(8) == pytest.approx(0.02) and s(100) == pytest.approx(0.02)
    assert S.CosineDecay(1.0, decay_epochs=4)(4) == 0.0


@pytest.mark.parametrize("sched", [S.InverseTimeDecay(0.1, 0.5), S.ExponentialDecay(0.1, 0.96),
                                   S.StepDecay(0.1, 0.3, 4), S.CosineDecay(0.1, decay_epochs=20, alpha=0.05)], ids=repr)
def test_config_round_trip(sched):
    d = json.loads(json.dumps(S.serialize(sched)))
    again = S.deserialize(d)
    assert again == sched and again is not sched
    assert [again(e) for e in EPOCHS] == [sched(e) for e in EPOCHS]
    assert type(sched).from_config(sched.get_config()) == sched
    assert S.get(d) == sched and S.get(sched) is sched
    assert pydl.registry.schedules.get(type(sched).__name__) is type(sched)


def test_bad_arguments():
    with pytest.raises(ValueError, match="initial_learning_rate"):
        S.ExponentialDecay(-0.1, 0.9)
    with pytest.raises(ValueError, match="decay_rate"):
        S.ExponentialDecay(0.1, 0.0)
    with pytest.raises(ValueError, match="epochs_drop"):
        S.StepDecay(0.1, epochs_drop=0)
    with pytest.raises(ValueError, match="decay_epochs"):
        S.CosineDecay(0.1, decay_epochs=0)
    with pytest.raises(ValueError, match="alpha"):
        S.CosineDecay(0.1, decay_epochs=5, alpha=1.5)
    with pytest.raises(ValueError, match="finite"):
        S.InverseTimeDecay(math.nan, 0.1)
    with pytest.raises(TypeError):
        S.InverseTimeDecay("0.1", 0.1)
    s = S.StepDecay(0.1)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="epoch"):
            s(bad)
    assert s(np.int64(12)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="bad config"):
        S.StepDecay.from_config({"initial_learning_rate": 0.1, "bogus": 2})
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        S.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match="class_name"):
        S.deserialize({"initial_learning_rate": 0.1})
    with pytest.raises(ValueError, match="plain callable"):
        S.serialize(lambda e: 0.1)
    with pytest.raises(ValueError, match="cannot interpret"):
        S.get("cosine")


def test_unregistered_subclass_cannot_be_saved():
    class Halving(S.LearningRateSchedule):
        def rate(self, epoch):
            return 0.5 ** epoch

        def get_config(self):
            return {}

    h = Halving()
    assert h(3) == 0.125
    with pytest.raises(ValueError, match="not registered"):
        S.serialize(h)


def test_schedules_match_torch_lr_schedulers():
    torch = pytest.importorskip("torch")
    sched = torch.optim.lr_scheduler
    cases = [
        (S.ExponentialDecay(0.2, 0.9), lambda o: sched.ExponentialLR(o, gamma=0.9), 0.2, 30),
        (S.StepDecay(0.8, drop=0.5, epochs_drop=3), lambda o: sched.StepLR(o, step_size=3, gamma=0.5), 0.8, 30),
        (S.CosineDecay(0.1, decay_epochs=12, alpha=0.2),
         lambda o: sched.CosineAnnealingLR(o, T_max=12, eta_min=0.02), 0.1, 13),
        (S.InverseTimeDecay(0.5, 0.25), lambda o: sched.LambdaLR(o, lambda e: 1.0 / (1.0 + 0.25 * e)), 0.5, 30),
    ]
    for ours, make, lr0, n in cases:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr0)
        ref = make(opt)
        got = []
        for _ in range(n):
            got.append(opt.param_groups[0]["lr"])
            opt.step()
            ref.step()
        assert [ours(e) for e in range(n)] == pytest.approx(got, rel=1e-9, abs=1e-15), repr(ours)


def test_fit_uses_any_callable_of_epoch_as_learning_rate():
    seen = []
    model = pydl.Sequential([pydl.layers.Dense(1, input_shape=(2,))])
    model.compile("mse", pydl.optimizers.SGD(learning_rate=lambda e: 0.1 * 0.5 ** e))
    cb = pydl.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(model.optimizer.current_learning_rate))
    model.fit(np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32), epochs=3, verbose=0, callbacks=[cb])
    assert seen == pytest.approx([0.1, 0.05, 0.025], rel=1e-15)


def test_rates_that_leave_the_floats_are_errors_naming_the_schedule():
    with pytest.raises(ValueError, match=r"\[PolynomialDecay\] power must be >= 0"):
        S.PolynomialDecay(0.1, 2, power=-1.0)
    assert S.PolynomialDecay(0.1, 2, end_learning_rate=0.0, power=0.0)(2) == pytest.approx(0.1)
    grow = S.ExponentialDecay(0.1, decay_steps=1, decay_rate=2.0)
    assert grow(10) == pytest.approx(0.1 * 2**10)
    with pytest.raises(ValueError, match=r"\[ExponentialDecay\] the learning rate at step 100000 is not a finite"):
        grow(100000)
    m = pydl.Sequential([pydl.layers.Dense(1, input_shape=(2,))])
    m.compile("mse", pydl.optimizers.SGD(learning_rate=S.ExponentialDecay(1e-3, decay_steps=1, decay_rate=1e300)))
    with pytest.raises(ValueError, match=r"\[ExponentialDecay\] the learning rate at step"):
        m.fit(np.ones((8, 2), np.float32), np.ones(8, np.float32), batch_size=2, epochs=2, verbose=0)
