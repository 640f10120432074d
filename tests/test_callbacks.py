import csv
import math
import re
import warnings

import numpy as np
import pytest

import pydl
from pydl import callbacks as C
from pydl import registry


class FakeOptimizer:
    def __init__(self, lr):
        self.learning_rate = lr

    @property
    def current_learning_rate(self):
        return float(self.learning_rate)


class FakeModel:
    """Just what callbacks use: weights that training changes, stop_training, optimizer, save."""

    def __init__(self, lr=0.1):
        self.w = [np.zeros((2, 2)), np.zeros(3)]
        self.stop_training = False
        self.optimizer = FakeOptimizer(lr)
        self.saved = []

    def get_weights(self):
        return self.w  # live references on purpose: callbacks must copy

    def set_weights(self, ws):
        for dst, src in zip(self.w, ws):
            dst[...] = src

    def save(self, path):
        with open(path, "w") as fh:
            fh.write(repr(float(self.w[0][0, 0])))
        self.saved.append(str(path))


def fit(model, cbs, epoch_logs, steps=2, batch_loss=None, params=None):
    """Drive callbacks as Sequential.fit does; epoch e sets every weight to e (in place).

    Returns the number of epochs run."""
    cl = C.CallbackList(cbs, model=model)
    cl.set_params(params or {"epochs": len(epoch_logs), "steps": steps, "verbose": 0})
    model.stop_training = False
    cl.on_train_begin()
    ran = 0
    for e, logs in enumerate(epoch_logs):
        cl.on_epoch_begin(e)
        for b in range(steps):
            cl.on_train_batch_begin(b)
            for w in model.w:
                w[...] = e
            bl = {"loss": batch_loss(e, b) if batch_loss else logs.get("loss", 1.0)}
            cl.on_train_batch_end(b, bl)
            if model.stop_training:
                break
        cl.on_epoch_end(e, dict(logs))
        ran += 1
        if model.stop_training:
            break
    cl.on_train_end()
    return ran


def losses(*vals, key="val_loss"):
    return [{"loss": 1.0, key: v} for v in vals]


# ----------------------------------------------------------------------------------------------
# History, CallbackList, LambdaCallback
# ----------------------------------------------------------------------------------------------
def test_history_and_lambda_order():
    m = FakeModel()
    calls = []
    lam = C.LambdaCallback(on_train_begin=lambda logs: calls.append("tb"),
                           on_epoch_begin=lambda e, logs: calls.append(f"eb{e}"),
                           on_train_batch_begin=lambda b, logs: calls.append(f"bb{b}"),
                           on_train_batch_end=lambda b, logs: calls.append(f"be{b}"),
                           on_epoch_end=lambda e, logs: calls.append(f"ee{e}:{logs['val_loss']}"),
                           on_train_end=lambda logs: calls.append("te"))
    h = C.History()
    fit(m, [lam, h], losses(0.5, 0.25), steps=1)
    assert calls == ["tb", "eb0", "bb0", "be0", "ee0:0.5", "eb1", "bb0", "be0", "ee1:0.25", "te"]
    assert m.history is h
    assert h.epoch == [0, 1]
    assert h.history == {"loss": [1.0, 1.0], "val_loss": [0.5, 0.25]}
    # reused: starts afresh
    fit(m, [h], losses(0.1))
    assert h.epoch == [0] and h.history["val_loss"] == [0.1]


def test_callbacklist_defaults_and_errors():
    cl = C.CallbackList([C.TerminateOnNaN()], add_history=True, add_progbar=True, epochs=3, steps=1, verbose=0)
    kinds = [type(cb).__name__ for cb in cl]
    assert kinds == ["ProgbarLogger", "TerminateOnNaN", "History"]
    assert cl.history is cl.callbacks[-1]
    assert cl.params == {"epochs": 3, "steps": 1, "verbose": 0}
    assert all(cb.params == cl.params for cb in cl)
    with pytest.raises(TypeError, match="Callback"):
        C.CallbackList([object()])
    with pytest.raises(TypeError, match="callable"):
        C.LambdaCallback(on_epoch_end=3)
    for name in ("History", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "CSVLogger",
                 "TerminateOnNaN", "LambdaCallback", "ProgbarLogger"):
        assert registry.callbacks.get(name) is getattr(C, name)


# ----------------------------------------------------------------------------------------------
# EarlyStopping
# ----------------------------------------------------------------------------------------------
def test_early_stopping_stops_after_patience_and_restores_best():
    m = FakeModel()
    es = C.EarlyStopping(patience=2, restore_best_weights=True)
    # best at epoch 1; epochs 2 and 3 do not improve -> stop at epoch 3
    ran = fit(m, [es], losses(1.0, 0.5, 0.6, 0.7, 0.1, 0.05))
    assert ran == 4
    assert es.stopped_epoch == 3 and es.best_epoch == 1 and es.best == 0.5
    assert all(np.all(w == 1) for w in m.w)


def test_early_stopping_restores_when_training_completes():
    m = FakeModel()
    es = C.EarlyStopping(patience=5, restore_best_weights=True)
    ran = fit(m, [es], losses(1.0, 0.3, 0.4, 0.5))
    assert ran == 4 and es.stopped_epoch == 0
    assert all(np.all(w == 1) for w in m.w)
    # without restore_best_weights the last weights stay
    m2 = FakeModel()
    fit(m2, [C.EarlyStopping(patience=5)], losses(1.0, 0.3, 0.4, 0.5))
    assert all(np.all(w == 3) for w in m2.w)


def test_early_stopping_patience_zero_min_delta_and_mode():
    # patience 0: stops at the first epoch that does not improve
    m = FakeModel()
    assert fit(m, [C.EarlyStopping(patience=0)], losses(1.0, 0.9, 0.95, 0.1)) == 3
    # min_delta: improvements of 0.05 < 0.1 do not count
    m = FakeModel()
    es = C.EarlyStopping(patience=1, min_delta=0.1)
    assert fit(m, [es], losses(1.0, 0.95, 0.9, 0.85)) == 2
    assert es.best == 1.0
    # accuracy is maximised under mode auto
    m = FakeModel()
    es = C.EarlyStopping(monitor="val_accuracy", patience=1)
    assert fit(m, [es], losses(0.5, 0.6, 0.7, 0.65, 0.6, key="val_accuracy")) == 4
    assert es.best == 0.7 and es.best_epoch == 2 and es.stopped_epoch == 3
    # explicit mode=max on a loss-like name flips the direction
    m = FakeModel()
    assert fit(m, [C.EarlyStopping(mode="max", patience=0)], losses(1.0, 0.5)) == 2
    assert m.stop_training


def test_early_stopping_baseline_and_start_from_epoch():
    # baseline 0.5 never beaten: improvements do not reset the counter, so the first
    # non-improving epoch (2) already exceeds patience 2; without a baseline it would not
    vals = (0.9, 0.8, 0.85, 0.84)
    m = FakeModel()
    es = C.EarlyStopping(patience=2, baseline=0.5)
    assert fit(m, [es], losses(*vals)) == 3 and es.stopped_epoch == 2
    m = FakeModel()
    assert fit(m, [C.EarlyStopping(patience=2)], losses(*vals)) == 4
    # a baseline that is beaten behaves as no baseline
    m = FakeModel()
    assert fit(m, [C.EarlyStopping(patience=2, baseline=0.95)], losses(*vals)) == 4
    # start_from_epoch: the first two epochs are ignored entirely
    m = FakeModel()
    es = C.EarlyStopping(patience=0, start_from_epoch=2, restore_best_weights=True)
    ran = fit(m, [es], losses(0.1, 0.1, 1.0, 0.9, 0.95))
    assert ran == 5 and es.best_epoch == 3
    assert all(np.all(w == 3) for w in m.w)


def test_early_stopping_missing_monitor_warns_once():
    m = FakeModel()
    es = C.EarlyStopping(monitor="val_auc", patience=0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ran = fit(m, [es], losses(1.0, 2.0, 3.0))
    msgs = [str(w.message) for w in rec if "val_auc" in str(w.message)]
    assert len(msgs) == 1 and "val_loss" in msgs[0]
    assert ran == 3 and not m.stop_training
    with pytest.raises(ValueError, match="mode"):
        C.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        C.EarlyStopping(patience=-1)


# ----------------------------------------------------------------------------------------------
# ReduceLROnPlateau
# ----------------------------------------------------------------------------------------------
def lr_trace(cb, vals, lr=1.0):
    m = FakeModel(lr)
    seen = []
    track = C.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(m.optimizer.learning_rate))
    h = C.History()
    fit(m, [cb, track, h], losses(*vals))
    return seen, h


def test_reduce_lr_reduces_at_the_right_epoch():
    cb = C.ReduceLROnPlateau(factor=0.5, patience=2)
    seen, h = lr_trace(cb, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # epochs 1 and 2 do not improve -> reduce at epoch 2; again at epoch 4
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    # the learning rate before each epoch's decision is logged
    assert h.history["learning_rate"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


def test_reduce_lr_improvements_reset_and_min_delta():
    # steady improvement bigger than min_delta: never reduces
    seen, _ = lr_trace(C.ReduceLROnPlateau(factor=0.5, patience=1), [5, 4, 3, 2, 1])
    assert seen == [1.0] * 5
    # improvements smaller than min_delta count as plateau
    seen, _ = lr_trace(C.ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.5), [5, 4.9, 4.8, 4.7])
    assert seen == [1.0, 0.5, 0.25, 0.125]


def test_reduce_lr_min_lr_and_cooldown():
    seen, _ = lr_trace(C.ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.05), [1] * 5)
    assert seen == pytest.approx([1.0, 0.1, 0.05, 0.05, 0.05])
    # as Keras, the cooldown counter is decremented at the start of each epoch's check, so with
    # cooldown 2 and patience 1 a reduction at epoch 1 is followed by the next at epoch 3
    seen, _ = lr_trace(C.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2), [1] * 7)
    assert seen == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    seen, _ = lr_trace(C.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=3), [1] * 7)
    assert seen == [1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    seen, _ = lr_trace(C.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=0), [1] * 4)
    assert seen == [1.0, 0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="factor"):
        C.ReduceLROnPlateau(factor=1.0)


def test_reduce_lr_refuses_to_overwrite_a_schedule():
    class Schedule:
        def __call__(self, step):
            return 0.1

    class ScheduledOptimizer:
        learning_rate = Schedule()
        current_learning_rate = 0.1

    m = FakeModel()
    m.optimizer = ScheduledOptimizer()
    with pytest.raises(TypeError, match="schedule"):
        fit(m, [C.ReduceLROnPlateau(patience=0)], losses(1.0, 1.0))
    assert isinstance(m.optimizer.learning_rate, Schedule)


# ----------------------------------------------------------------------------------------------
# ModelCheckpoint
# ----------------------------------------------------------------------------------------------
def test_checkpoint_save_best_only(tmp_path):
    m = FakeModel()
    path = tmp_path / "best.ckpt"
    ck = C.ModelCheckpoint(path, save_best_only=True)
    fit(m, [ck], losses(1.0, 0.5, 0.7, 0.4, 0.9))
    # saved after epochs 0, 1, 3 only; the file holds epoch 3's weights
    assert m.saved == [str(path)] * 3
    assert path.read_text() == "3.0"


def test_checkpoint_every_epoch_formatted_names(tmp_path):
    m = FakeModel()
    pattern = str(tmp_path / "sub" / "m-{epoch:02d}-{val_loss:.2f}.ckpt")
    ck = C.ModelCheckpoint(pattern)
    fit(m, [ck], losses(1.0, 0.5, 0.7))
    names = sorted(p.name for p in (tmp_path / "sub").iterdir())
    assert names == ["m-01-1.00.ckpt", "m-02-0.50.ckpt", "m-03-0.70.ckpt"]
    ck2 = C.ModelCheckpoint(str(tmp_path / "{nope}.ckpt"))
    with pytest.raises(KeyError, match="nope"):
        fit(FakeModel(), [ck2], losses(1.0))


def test_checkpoint_max_mode_and_missing_key(tmp_path):
    m = FakeModel()
    ck = C.ModelCheckpoint(tmp_path / "a-{epoch}.ckpt", monitor="val_accuracy", save_best_only=True)
    fit(m, [ck], losses(0.5, 0.4, 0.8, 0.8, key="val_accuracy"))
    assert [p.rsplit("-", 1)[1] for p in m.saved] == ["1.ckpt", "3.ckpt"]
    m = FakeModel()
    with pytest.warns(UserWarning, match="val_accuracy"):
        fit(m, [C.ModelCheckpoint(tmp_path / "b.ckpt", monitor="val_accuracy", save_best_only=True)], losses(0.5))
    assert m.saved == []


# ----------------------------------------------------------------------------------------------
# CSVLogger, TerminateOnNaN, ProgbarLogger
# ----------------------------------------------------------------------------------------------
def test_csv_logger_content(tmp_path):
    f = tmp_path / "log.csv"
    logs = [{"loss": 0.5, "val_loss": 0.25, "accuracy": 0.75}, {"loss": 0.125, "val_loss": 0.5, "accuracy": 1.0}]
    fit(FakeModel(), [C.CSVLogger(f)], logs)
    rows = list(csv.reader(f.open()))
    assert rows[0] == ["epoch", "accuracy", "loss", "val_loss"]
    assert rows[1:] == [["0", "0.75", "0.5", "0.25"], ["1", "1.0", "0.125", "0.5"]]
    # append adds rows without a second header; separator honoured
    fit(FakeModel(), [C.CSVLogger(f, append=True)], logs[:1])
    rows = list(csv.reader(f.open()))
    assert len(rows) == 4 and rows[3] == ["0", "0.75", "0.5", "0.25"]
    g = tmp_path / "semi.csv"
    fit(FakeModel(), [C.CSVLogger(g, separator=";")], logs[:1])
    assert g.read_text().splitlines() == ["epoch;accuracy;loss;val_loss", "0;0.75;0.5;0.25"]
    # overwrite when append=False; a key missing later is NA
    fit(FakeModel(), [C.CSVLogger(f)], [{"loss": 1.0, "x": 2.0}, {"loss": 3.0}])
    assert f.read_text().splitlines() == ["epoch,loss,x", "0,1.0,2.0", "1,3.0,NA"]


def test_terminate_on_nan(capsys):
    m = FakeModel()
    ran = fit(m, [C.TerminateOnNaN()], losses(1, 1, 1, 1), steps=3,
              batch_loss=lambda e, b: float("nan") if (e, b) == (1, 1) else 1.0)
    assert ran == 2 and m.stop_training
    assert "Batch 1" in capsys.readouterr().out
    m = FakeModel()
    ran = fit(m, [C.TerminateOnNaN()], losses(1, 1), batch_loss=lambda e, b: math.inf if e == 0 else 1.0)
    assert ran == 1
    m = FakeModel()
    assert fit(m, [C.TerminateOnNaN()], losses(1, 1, 1)) == 3 and not m.stop_training


def test_progbar_verbose2_line(capsys):
    logs = [{"loss": 0.123449, "accuracy": 0.97, "val_loss": 0.00012, "val_accuracy": 0.5}] * 2
    fit(FakeModel(), [C.ProgbarLogger()], logs, params={"epochs": 10, "steps": 2, "verbose": 2})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    pat = (r"^Epoch 2/10 - \d+\.\d\ds - loss: 0\.1234 - accuracy: 0\.9700 - val_loss: 1\.2000e-04 "
           r"- val_accuracy: 0\.5000$")
    assert re.match(pat, lines[1]), lines[1]
    assert lines[0].startswith("Epoch 1/10 - ")


def test_progbar_verbose0_silent_and_verbose1_bar(capsys):
    logs = [{"loss": 0.5, "val_loss": 0.25}] * 2
    fit(FakeModel(), [C.ProgbarLogger()], logs, params={"epochs": 2, "steps": 3, "verbose": 0})
    assert capsys.readouterr().out == ""
    fit(FakeModel(), [C.ProgbarLogger(verbose=1)], logs, steps=3, params={"epochs": 2, "steps": 3, "verbose": 0})
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "3/3" in out and "val_loss: 0.2500" in out
    with pytest.raises(ValueError, match="verbose"):
        C.ProgbarLogger(verbose=3)


def test_ctrl_c_stops_after_the_batch_and_runs_on_train_end():
    import os
    import signal
    import warnings

    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = pydl.Sequential([pydl.layers.Dense(2, activation="softmax", input_shape=(4,))])
    model.compile("sparse_categorical_crossentropy", "sgd")
    seen = []

    class Probe(C.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)
            if len(seen) == 3:
                os.kill(os.getpid(), signal.SIGINT)   # as a user pressing Ctrl-C mid-epoch

        def on_train_end(self, logs=None):
            seen.append("end")

    # An interactive process has Python's default SIGINT handler; one started in the background by
    # a non-interactive shell (as CI jobs may be) inherits SIGINT ignored, and fit leaves that alone.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[Probe()])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen[-1] == "end" and seen[:3] == [0, 1, 2] and len(seen) == 4
    assert any("Ctrl-C" in str(m.message) for m in w)
    assert all(np.isfinite(p).all() for p in model.layers[0].params.values())


@pytest.mark.parametrize("make,match", [
    (lambda: C.EarlyStopping(min_delta="abc"), r"\[EarlyStopping\] min_delta must be a finite number"),
    (lambda: C.EarlyStopping(min_delta=float("nan")), r"\[EarlyStopping\] min_delta must be a finite number"),
    (lambda: C.EarlyStopping(baseline="x"), r"\[EarlyStopping\] baseline must be a finite number"),
    (lambda: C.EarlyStopping(verbose="yes"), r"\[EarlyStopping\] verbose must be an int >= 0"),
    (lambda: C.ReduceLROnPlateau(factor="x"), r"\[ReduceLROnPlateau\] factor must be a finite number"),
    (lambda: C.ReduceLROnPlateau(min_lr=float("inf")), r"\[ReduceLROnPlateau\] min_lr must be a finite number"),
    (lambda: C.ReduceLROnPlateau(min_delta=None), r"\[ReduceLROnPlateau\] min_delta must be a finite number"),
    (lambda: C.ModelCheckpoint(None), r"\[ModelCheckpoint\] filepath must be a path"),
])
def test_callback_settings_are_checked(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make()


def test_fit_checks_callbacks_and_validation_split():
    m = pydl.Sequential([pydl.layers.Dense(1, input_shape=(2,))])
    m.compile("mse", "sgd")
    x, y = np.ones((10, 2), np.float32), np.ones(10, np.float32)
    with pytest.raises(TypeError, match=r"callbacks must be a list of pydl.callbacks.Callback"):
        m.fit(x, y, callbacks=C.History(), verbose=0)
    for bad in (np.array([0.2, 0.3]), 1.5, True, "0.2"):
        with pytest.raises(ValueError, match=r"validation_split must be a float in \[0, 1\)"):
            m.fit(x, y, validation_split=bad, verbose=0)
    with pytest.raises(TypeError, match=r"set_weights\] weights must be a list of arrays"):
        m.set_weights(5)
    h = m.fit(x, y, validation_split=np.float64(0.2), callbacks=(C.EarlyStopping(),), verbose=0)
    assert "val_loss" in h.history


def test_learning_rate_scheduler_lets_the_schedules_own_type_error_through():
    def bad(epoch, lr):
        raise TypeError("my schedule broke")

    m = pydl.Sequential([pydl.layers.Dense(1, input_shape=(2,))])
    m.compile("mse", "sgd")
    x, y = np.ones((4, 2), np.float32), np.ones(4, np.float32)
    with pytest.raises(TypeError, match="my schedule broke"):
        m.fit(x, y, callbacks=[C.LearningRateScheduler(bad)], verbose=0)
    seen = []
    m.fit(x, y, epochs=2, callbacks=[C.LearningRateScheduler(lambda e: seen.append(e) or 0.01)], verbose=0)
    assert seen == [0, 1] and m.optimizer.learning_rate == pytest.approx(0.01)
    m.fit(x, y, epochs=1, callbacks=[C.LearningRateScheduler(lambda e, lr: lr * 0.5)], verbose=0)
    assert m.optimizer.learning_rate == pytest.approx(0.005)
