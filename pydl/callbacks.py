"""Training callbacks following the Keras callback protocol.

A model's `fit` calls, in order: `set_model(model)`, `set_params({"epochs", "steps", "verbose"})`,
`on_train_begin`, then per epoch `on_epoch_begin(epoch)`, per batch `on_train_batch_begin(batch)`
/ `on_train_batch_end(batch, logs)`, `on_epoch_end(epoch, logs)`, and finally `on_train_end`.
Epochs and batches count from 0. `logs` maps "loss", metric names and their "val_" variants to
floats. Callbacks may read and change `model.stop_training`, `model.optimizer.learning_rate`,
`model.get_weights()` / `model.set_weights(...)` and call `model.save(path)`.
"""
from __future__ import annotations

import csv
import inspect
import math
import numbers
import os
import sys
import time
import warnings

import numpy as np

from . import distributed as _distributed
from . import registry
from ._validate import flag, real_number

__all__ = ["Callback", "CallbackList", "History", "EarlyStopping", "ReduceLROnPlateau", "LearningRateScheduler",
           "ModelCheckpoint", "CSVLogger", "TerminateOnNaN", "LambdaCallback", "ProgbarLogger"]

# Monitored quantities that improve upward under mode="auto"; anything else improves downward.
_MAXIMISED = ("accuracy", "acc", "auc", "precision", "recall", "f1", "f1_score", "r2", "r2_score",
              "cosine_similarity", "top_k_accuracy")


def _register(cls):
    return registry.callbacks.register(cls)


def _verbosity(value, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) or value < 0:
        raise ValueError(f"[{who}] verbose must be an int >= 0, got {value!r}")
    return int(value)


def _infer_mode(monitor: str, mode: str, op: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"[{op}] mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    base = monitor[4:] if monitor.startswith("val_") else monitor
    if base in _MAXIMISED or base.endswith("accuracy") or base.endswith("_acc"):
        return "max"
    return "min"


def _as_number(value):
    """A log value as float, or None if it is not a real scalar."""
    if isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.reshape(()))
    return None


def _format_value(v) -> str:
    x = _as_number(v)
    if x is None:
        return str(v)
    if x != 0 and math.isfinite(x) and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.4e}"
    return f"{x:.4f}"


def _format_logs(logs) -> str:
    return " - ".join(f"{k}: {_format_value(v)}" for k, v in (logs or {}).items())


class Callback:
    """Base class: every hook does nothing. `self.model` and `self.params` are set by fit."""

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params) -> None:
        self.params = dict(params or {})

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class _Monitoring(Callback):
    """Shared monitor lookup: a missing key warns once, then is skipped silently."""

    def __init__(self, monitor: str, mode: str):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"[{type(self).__name__}] monitor must be a non-empty string, got {monitor!r}")
        self.monitor = monitor
        self.mode = _infer_mode(monitor, mode, type(self).__name__)
        self._warned_missing = False

    def _improved(self, current: float, reference: float | None, delta: float = 0.0) -> bool:
        if reference is None:
            return True
        if self.mode == "min":
            return bool(np.less(current + delta, reference))
        return bool(np.greater(current - delta, reference))

    def _monitor_value(self, logs):
        logs = logs or {}
        if self.monitor not in logs:
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(f"{type(self).__name__} is conditioned on metric {self.monitor!r}, which is not "
                              f"available; available metrics are: {', '.join(logs) or '(none)'}", stacklevel=3)
            return None
        value = _as_number(logs[self.monitor])
        if value is None:
            raise TypeError(f"[{type(self).__name__}] logs[{self.monitor!r}] must be a number, "
                            f"got {logs[self.monitor]!r}")
        return value


class CallbackList:
    """Holds callbacks and forwards every hook to each of them in order.

    With `add_history`, a History is appended (if none is given); with `add_progbar`, a
    ProgbarLogger is put first (if none is given). `model` and `params` are passed on at once.
    """

    def __init__(self, callbacks=None, add_history: bool = False, add_progbar: bool = False, model=None,
                 **params):
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, (Callback, CallbackList)):
            callbacks = [callbacks]
        self.callbacks: list = []
        for cb in callbacks:
            self.append(cb)
        if add_progbar and not any(isinstance(cb, ProgbarLogger) for cb in self.callbacks):
            self.callbacks.insert(0, ProgbarLogger())
        if add_history and not any(isinstance(cb, History) for cb in self.callbacks):
            self.callbacks.append(History())
        self.model = None
        self.params: dict = {}
        if model is not None:
            self.set_model(model)
        if params:
            self.set_params(params)

    def append(self, callback) -> None:
        if isinstance(callback, CallbackList):
            self.callbacks.extend(callback.callbacks)
            return
        if not isinstance(callback, Callback):
            raise TypeError(f"[CallbackList] callbacks must be pydl.callbacks.Callback instances, "
                            f"got {type(callback).__name__}")
        self.callbacks.append(callback)

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    @property
    def history(self):
        return next((cb for cb in self.callbacks if isinstance(cb, History)), None)

    def set_model(self, model) -> None:
        self.model = model
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params) -> None:
        self.params = dict(params or {})
        for cb in self.callbacks:
            cb.set_params(self.params)

    def on_train_begin(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)


@_register
class History(Callback):
    """Records every epoch's logs: `history["loss"][i]` is the loss of epoch `epoch[i]`.

    Set as `model.history`; reset at each on_train_begin.
    """

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def set_model(self, model) -> None:
        super().set_model(model)
        if model is not None:
            model.history = self

    def on_train_begin(self, logs=None):
        self.history = {}
        self.epoch = []
        if self.model is not None:
            self.model.history = self

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(int(epoch))
        for k, v in (logs or {}).items():
            x = _as_number(v)
            self.history.setdefault(k, []).append(x if x is not None else v)


@_register
class EarlyStopping(_Monitoring):
    """Stop training when `monitor` has not improved for `patience` epochs.

    Improvement means beating the best value so far by more than `min_delta` (downward for
    losses, upward for accuracies under mode="auto"). With `baseline`, the patience counter only
    resets once the baseline is beaten. Epochs before `start_from_epoch` are ignored. With
    `restore_best_weights`, the weights of the best epoch are put back when training ends,
    whether it was stopped early or ran all its epochs (if no epoch improved on the first, the
    first epoch's weights are restored).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0, mode: str = "auto",
                 baseline: float | None = None, restore_best_weights: bool = False, start_from_epoch: int = 0,
                 verbose: int = 0):
        super().__init__(monitor, mode)
        if not isinstance(patience, (numbers.Integral, np.integer)) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"[EarlyStopping] patience must be a non-negative int, got {patience!r}")
        if not isinstance(start_from_epoch, (numbers.Integral, np.integer)) or start_from_epoch < 0:
            raise ValueError(f"[EarlyStopping] start_from_epoch must be a non-negative int, got {start_from_epoch!r}")
        self.min_delta = abs(real_number(min_delta, "min_delta", "EarlyStopping"))
        self.patience = int(patience)
        self.baseline = None if baseline is None else real_number(baseline, "baseline", "EarlyStopping")
        self.restore_best_weights = flag(restore_best_weights, "restore_best_weights", "EarlyStopping")
        self.start_from_epoch = int(start_from_epoch)
        self.verbose = _verbosity(verbose, "EarlyStopping")
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_train_begin(self, logs=None):
        self._reset()

    def _snapshot(self):
        return [np.array(w, copy=True) for w in self.model.get_weights()]

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self._snapshot()
        self.wait += 1
        if self._improved(current, self.best, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self._snapshot()
            if self.baseline is None or self._improved(current, self.baseline, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


def _learning_rate(optimizer, op: str) -> float:
    lr = getattr(optimizer, "current_learning_rate", None)
    if lr is None:
        lr = getattr(optimizer, "learning_rate", None)
    value = _as_number(lr)
    if value is None:
        raise TypeError(f"[{op}] the optimizer's learning rate must be a float, got {lr!r}")
    return value


@_register
class ReduceLROnPlateau(_Monitoring):
    """Multiply the learning rate by `factor` when `monitor` has not improved by more than
    `min_delta` for `patience` epochs, never going below `min_lr`; after a reduction, wait
    `cooldown` epochs before counting again. Adds "learning_rate" to the epoch logs."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0, mode: str = "auto", verbose: int = 0):
        super().__init__(monitor, mode)
        factor = real_number(factor, "factor", "ReduceLROnPlateau")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"[ReduceLROnPlateau] factor must be in (0, 1), got {factor!r}")
        if not isinstance(patience, (numbers.Integral, np.integer)) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"[ReduceLROnPlateau] patience must be a non-negative int, got {patience!r}")
        if not isinstance(cooldown, (numbers.Integral, np.integer)) or isinstance(cooldown, bool) or cooldown < 0:
            raise ValueError(f"[ReduceLROnPlateau] cooldown must be a non-negative int, got {cooldown!r}")
        if real_number(min_lr, "min_lr", "ReduceLROnPlateau") < 0:
            raise ValueError(f"[ReduceLROnPlateau] min_lr must be >= 0, got {min_lr!r}")
        self.factor = factor
        self.patience = int(patience)
        self.min_delta = abs(real_number(min_delta, "min_delta", "ReduceLROnPlateau"))
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self.verbose = _verbosity(verbose, "ReduceLROnPlateau")
        self._reset()

    def _reset(self):
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs=None):
        self._reset()

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = _learning_rate(optimizer, "ReduceLROnPlateau")
        current = self._monitor_value(logs)
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current, self.best, self.min_delta):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = _as_number(getattr(optimizer, "learning_rate", None))
                if old_lr is None:
                    raise TypeError("[ReduceLROnPlateau] the optimizer's learning_rate must be a float to be "
                                    f"reduced, got {optimizer.learning_rate!r} (a schedule cannot be changed)")
                if old_lr > self.min_lr:
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    optimizer.learning_rate = new_lr
                    if self.verbose > 0:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr:.4g}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


@_register
class LearningRateScheduler(Callback):
    """At the start of each epoch set the optimizer's learning rate to `schedule(epoch, lr)`
    (Keras; `schedule(epoch)` also works), lr being the current rate; a schedule object on the
    optimizer is replaced by the float. Adds "learning_rate" to the epoch logs."""

    def __init__(self, schedule, verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"[LearningRateScheduler] schedule must be callable (epoch, lr) -> lr, "
                            f"got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = _verbosity(verbose, "LearningRateScheduler")
        # schedule(epoch, lr), or schedule(epoch) (Keras 2 allowed it): decided from the signature,
        # so a TypeError raised inside the schedule reaches the user as it is
        try:
            inspect.signature(schedule).bind(0, 0.0)
            self._takes_lr = True
        except TypeError:
            self._takes_lr = False
        except ValueError:  # no signature to read (some builtins): try both at the first call
            self._takes_lr = None

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = _learning_rate(optimizer, "LearningRateScheduler")
        if self._takes_lr is None:
            try:
                new = self.schedule(epoch, lr)
            except TypeError:
                new = self.schedule(epoch)
        else:
            new = self.schedule(epoch, lr) if self._takes_lr else self.schedule(epoch)
        value = _as_number(new)
        if value is None or not math.isfinite(value) or value < 0:
            raise ValueError(f"[LearningRateScheduler] the schedule returned {new!r} at epoch {epoch}; expected a "
                             f"finite float >= 0")
        optimizer.learning_rate = value
        if self.verbose > 0:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {value}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _learning_rate(self.model.optimizer, "LearningRateScheduler")


@_register
class ModelCheckpoint(_Monitoring):
    """Call `model.save(path)` (`model.save_weights(path)` with `save_weights_only`) at the end of
    each epoch (or only when `monitor` improves, with `save_best_only`); Keras's argument order. `filepath` may hold format fields: `{epoch}` (1-based) and any log key,
    e.g. "ckpt-{epoch:02d}-{val_loss:.3f}.npz". Parent folders are created."""

    def __init__(self, filepath, monitor: str = "val_loss", verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto"):
        super().__init__(monitor, mode)
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"[ModelCheckpoint] filepath must be a path (str or os.PathLike), got {filepath!r}")
        self.filepath = os.fspath(filepath)
        self.save_best_only = flag(save_best_only, "save_best_only", "ModelCheckpoint")
        self.save_weights_only = flag(save_weights_only, "save_weights_only", "ModelCheckpoint")
        self.verbose = _verbosity(verbose, "ModelCheckpoint")
        self.best = None
        self.last_saved: str | None = None

    def on_train_begin(self, logs=None):
        self.best = None

    def _path(self, epoch, logs) -> str:
        fields = {k: v for k, v in (logs or {}).items() if isinstance(k, str)}
        fields["epoch"] = epoch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as exc:
            raise KeyError(f"[ModelCheckpoint] filepath {self.filepath!r} names {exc.args[0]!r}, which is not "
                           f"in the logs; available: epoch, {', '.join(logs or {})}") from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"[ModelCheckpoint] cannot format filepath {self.filepath!r}: {exc}") from None

    def _save(self, path: str) -> None:
        self.last_saved = path
        if not _distributed.is_root():  # in data-parallel training only rank 0 writes
            return
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only:
            current = self._monitor_value(logs)
            if current is None or not math.isfinite(current):
                return
            if not self._improved(current, self.best):
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            path = self._path(epoch, logs)
            if self.verbose > 0:
                prev = "inf" if self.best is None else f"{self.best:.5f}"
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {prev} to {current:.5f}, saving to {path}")
            self.best = current
            self._save(path)
        else:
            path = self._path(epoch, logs)
            if self.verbose > 0:
                print(f"Epoch {epoch + 1}: saving model to {path}")
            self._save(path)


@_register
class CSVLogger(Callback):
    """Write one row per epoch: "epoch" (0-based) then the log keys in sorted order.

    The header is written when the file is new (or `append` is False). Keys missing in a later
    epoch are written as "NA". The file is flushed after every row.
    """

    def __init__(self, filename, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename = os.fspath(filename)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"[CSVLogger] separator must be a single character, got {separator!r}")
        self.separator = separator
        self.append = bool(append)
        self.keys: list[str] | None = None
        self._file = None
        self._writer = None
        self._write_header = True

    def on_train_begin(self, logs=None):
        self.keys = None
        if not _distributed.is_root():  # in data-parallel training only rank 0 writes
            return
        exists = os.path.isfile(self.filename) and os.path.getsize(self.filename) > 0
        self._write_header = not (self.append and exists)
        self._file = open(self.filename, "a" if self.append else "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, delimiter=self.separator, lineterminator="\n")

    @staticmethod
    def _cell(v):
        x = _as_number(v)
        if x is not None:
            return repr(x)
        if isinstance(v, str):
            return v
        if isinstance(v, (list, tuple, np.ndarray)):
            return "[" + ", ".join(str(e) for e in np.asarray(v).ravel()) + "]"
        return str(v)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not _distributed.is_root():
            return
        if self._file is None:
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs)
            if self._write_header:
                self._writer.writerow(["epoch"] + self.keys)
        row = [str(int(epoch))] + [self._cell(logs[k]) if k in logs else "NA" for k in self.keys]
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
        self._file = None
        self._writer = None


@_register
class TerminateOnNaN(Callback):
    """Stop training as soon as a batch (or epoch) loss is NaN or infinite."""

    def _check(self, where: str, logs) -> None:
        loss = _as_number((logs or {}).get("loss"))
        if loss is not None and not math.isfinite(loss):
            print(f"{where}: invalid loss {loss}, terminating training")
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check(f"Batch {batch}", logs)

    def on_epoch_end(self, epoch, logs=None):
        self._check(f"Epoch {epoch + 1}", logs)


@_register
class LambdaCallback(Callback):
    """A callback made of plain functions: on_epoch_begin(epoch, logs), on_epoch_end(epoch, logs),
    on_train_begin(logs), on_train_end(logs), on_train_batch_begin(batch, logs),
    on_train_batch_end(batch, logs). Hooks left as None do nothing."""

    _HOOKS = ("on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end", "on_train_batch_begin",
              "on_train_batch_end")

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None):
        super().__init__()
        given = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_train_begin=on_train_begin,
                     on_train_end=on_train_end, on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        for hook, fn in given.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"[LambdaCallback] {hook} must be callable or None, got {type(fn).__name__}")
        self._fns = given

    def on_epoch_begin(self, epoch, logs=None):
        if self._fns["on_epoch_begin"]:
            self._fns["on_epoch_begin"](epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._fns["on_epoch_end"]:
            self._fns["on_epoch_end"](epoch, logs)

    def on_train_begin(self, logs=None):
        if self._fns["on_train_begin"]:
            self._fns["on_train_begin"](logs)

    def on_train_end(self, logs=None):
        if self._fns["on_train_end"]:
            self._fns["on_train_end"](logs)

    def on_train_batch_begin(self, batch, logs=None):
        if self._fns["on_train_batch_begin"]:
            self._fns["on_train_batch_begin"](batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._fns["on_train_batch_end"]:
            self._fns["on_train_batch_end"](batch, logs)


@_register
class ProgbarLogger(Callback):
    """Report progress on stdout.

    verbose=1: a tqdm bar per epoch over its batches showing the running loss and metrics, with
    the validation values added at the end of the epoch; verbose=2: one line per epoch,
    "Epoch 3/10 - 0.12s - loss: 0.1234 - accuracy: 0.9700 - val_loss: ..."; verbose=0: silent.
    `verbose=None` takes params["verbose"] (default 1). Reads params "epochs" and "steps".
    """

    def __init__(self, verbose: int | None = None):
        super().__init__()
        if verbose is not None and verbose not in (0, 1, 2):
            raise ValueError(f"[ProgbarLogger] verbose must be 0, 1 or 2, got {verbose!r}")
        self._verbose_arg = verbose
        self.verbose = 1 if verbose is None else int(verbose)
        self.epochs = None
        self.steps = None
        self._bar = None
        self._t0 = 0.0

    def set_params(self, params) -> None:
        super().set_params(params)
        self.epochs = self.params.get("epochs")
        self.steps = self.params.get("steps")
        if self._verbose_arg is None:
            v = self.params.get("verbose", 1)
            if v not in (0, 1, 2):
                raise ValueError(f"[ProgbarLogger] params['verbose'] must be 0, 1 or 2, got {v!r}")
            self.verbose = int(v)

    def _epoch_label(self, epoch) -> str:
        return f"Epoch {epoch + 1}/{self.epochs}" if self.epochs else f"Epoch {epoch + 1}"

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        if self.verbose == 1:
            from tqdm import tqdm

            self._close_bar()
            self._bar = tqdm(total=self.steps, desc=self._epoch_label(epoch), unit="batch", file=sys.stdout,
                             leave=True, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose == 1 and self._bar is not None:
            if logs:
                self._bar.set_postfix_str(_format_logs(logs), refresh=False)
            self._bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._t0
        if self.verbose == 1 and self._bar is not None:
            self._bar.set_postfix_str(_format_logs(logs), refresh=False)
            self._close_bar()
        elif self.verbose == 2:
            parts = [self._epoch_label(epoch), f"{elapsed:.2f}s"]
            text = _format_logs(logs)
            if text:
                parts.append(text)
            print(" - ".join(parts), file=sys.stdout, flush=True)

    def on_train_end(self, logs=None):
        self._close_bar()

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
