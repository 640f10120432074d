"""Learning-rate schedules: Keras's step-based schedules and pydl's epoch-based decays.

    opt = pydl.optimizers.SGD(learning_rate=pydl.optimizers.schedules.ExponentialDecay(
        0.1, decay_steps=1000, decay_rate=0.96, staircase=True))                 # Keras: per step
    opt = pydl.optimizers.SGD(learning_rate=pydl.schedules.StepDecay(0.1, drop=0.5, epochs_drop=10))  # per epoch

Step-based (`per_step = True`, Keras's names, arguments and formulas; called with the
optimizer's step, the number of updates done so far, so the first update uses step 0):
  ExponentialDecay(initial_learning_rate, decay_steps, decay_rate, staircase=False)
      lr = initial_learning_rate * decay_rate ** (step / decay_steps)   (floor(step / decay_steps) with staircase)
  InverseTimeDecay(initial_learning_rate, decay_steps, decay_rate, staircase=False)
      lr = initial_learning_rate / (1 + decay_rate * step / decay_steps)   (floor with staircase)
  PiecewiseConstantDecay(boundaries, values)
      values[0] for step <= boundaries[0], values[i] for boundaries[i-1] < step <= boundaries[i],
      values[-1] after the last boundary
  PolynomialDecay(initial_learning_rate, decay_steps, end_learning_rate=1e-4, power=1.0, cycle=False)
      lr = (initial_learning_rate - end_learning_rate) * (1 - s / d) ** power + end_learning_rate,
      s = min(step, decay_steps), d = decay_steps; with cycle, s = step and
      d = decay_steps * ceil(step / decay_steps) (1 at step 0)
  CosineDecay(initial_learning_rate, decay_steps, alpha=0.0, name=None, warmup_target=None, warmup_steps=0)
      without warmup: lr = initial_learning_rate * ((1 - alpha) * c + alpha),
      c = (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2;
      with warmup_target: linear from initial_learning_rate to warmup_target over warmup_steps,
      then the cosine decay from warmup_target over decay_steps (step counted after the warmup)

Epoch-based (`per_step = False`, called with the epoch counted from 0; `fit` calls
`opt.set_epoch(e)` at the start of each epoch), the forms pydl documented first:
  ExponentialDecay(initial_learning_rate, decay_rate)        lr = initial_learning_rate * decay_rate ** epoch
  InverseTimeDecay(initial_learning_rate, decay_rate)        lr = initial_learning_rate / (1 + decay_rate * epoch)
  StepDecay(initial_learning_rate, drop=0.5, epochs_drop=10) lr = initial_learning_rate * drop ** floor(epoch / epochs_drop)
  CosineDecay(initial_learning_rate, decay_epochs=..., alpha=0.0)   the cosine over decay_epochs epochs
ExponentialDecay and InverseTimeDecay are epoch-based when given no decay_steps (two numbers, or
decay_rate alone as a keyword), CosineDecay when given decay_epochs (a keyword); Keras's calls
always pass decay_steps. A saved config keeps the form it was made with.

Any Python callable of the epoch works as a learning rate too, but only the classes here
(registered in `pydl.registry.schedules`) can be saved with a model; `pydl.optimizers.schedules`
is this module.
"""
from __future__ import annotations

import json
import math
import numbers

from ._validate import flag, real_number as _number
from . import registry


def check_epoch(epoch, who: str) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"[{who}] epoch must be an int >= 0, got {epoch!r}")
    return int(epoch)


def check_step(step, who: str) -> float:
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(step) or step < 0:
        raise ValueError(f"[{who}] step must be a number >= 0, got {step!r}")
    return float(step)


def _steps(x, name: str, who: str) -> float:
    """A positive step count (int or float, as Keras casts it)."""
    v = _number(x, name, who, lo=0.0, lo_open=True)
    return int(v) if float(v).is_integer() else v


class LearningRateSchedule:
    """Base class: subclasses implement `rate(x) -> float` and `get_config()`; `per_step` says
    whether x is the optimizer's step (Keras's schedules) or the epoch."""

    per_step = False

    def __call__(self, x) -> float:
        who = type(self).__name__
        x = check_step(x, who) if self.per_step else check_epoch(x, who)
        try:
            lr = float(self.rate(x))
        except (OverflowError, ZeroDivisionError) as exc:  # e.g. decay_rate > 1 over many steps
            raise ValueError(f"[{who}] the learning rate at {'step' if self.per_step else 'epoch'} {x:g} is not a "
                             f"finite number ({exc}); config {self.get_config()}") from None
        if not math.isfinite(lr):
            raise ValueError(f"[{who}] the learning rate at {'step' if self.per_step else 'epoch'} {x:g} is {lr}; "
                             f"config {self.get_config()}")
        return lr

    def rate(self, x) -> float:
        raise NotImplementedError(f"{type(self).__name__}.rate")

    def get_config(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__}.get_config")

    @classmethod
    def from_config(cls, config: dict):
        if not isinstance(config, dict):
            raise ValueError(f"[{cls.__name__}.from_config] config must be a dict, got {type(config).__name__}")
        try:
            return cls(**config)
        except TypeError as exc:
            raise ValueError(f"[{cls.__name__}.from_config] bad config {config!r}: {exc}") from None

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, json.dumps(self.get_config(), sort_keys=True)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _RateDecay(LearningRateSchedule):
    """ExponentialDecay / InverseTimeDecay: Keras's step form with decay_steps, the epoch form
    (initial_learning_rate, decay_rate) without."""

    def __init__(self, initial_learning_rate, decay_steps=None, decay_rate=None, staircase=False, name=None):
        who = type(self).__name__
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate", who, lo=0.0)
        if decay_rate is None:  # the epoch form: (initial_learning_rate, decay_rate)
            if decay_steps is None:
                raise TypeError(f"[{who}] give decay_steps and decay_rate (Keras, per step), or decay_rate alone "
                                f"(per epoch)")
            if staircase:
                raise ValueError(f"[{who}] staircase needs decay_steps (the step form)")
            decay_rate, decay_steps = decay_steps, None
        self.per_step = decay_steps is not None
        self.decay_steps = _steps(decay_steps, "decay_steps", who) if self.per_step else None
        self.decay_rate = self._check_rate(decay_rate, who)
        self.staircase = flag(staircase, "staircase", who)
        self.name = name

    def _progress(self, step: float) -> float:
        p = step / self.decay_steps
        return math.floor(p) if self.staircase else p

    def get_config(self) -> dict:
        if not self.per_step:
            return {"initial_learning_rate": self.initial_learning_rate, "decay_rate": self.decay_rate}
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


@registry.schedules.register
class InverseTimeDecay(_RateDecay):
    """Per step (Keras): lr = initial_learning_rate / (1 + decay_rate * step / decay_steps)
    (floor(step / decay_steps) with staircase). Per epoch: initial_learning_rate / (1 + decay_rate * epoch)."""

    @staticmethod
    def _check_rate(r, who):
        return _number(r, "decay_rate", who, lo=0.0)

    def rate(self, x) -> float:
        p = self._progress(x) if self.per_step else x
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)


@registry.schedules.register
class ExponentialDecay(_RateDecay):
    """Per step (Keras): lr = initial_learning_rate * decay_rate ** (step / decay_steps)
    (floor(step / decay_steps) with staircase). Per epoch: initial_learning_rate * decay_rate ** epoch."""

    @staticmethod
    def _check_rate(r, who):
        return _number(r, "decay_rate", who, lo=0.0, lo_open=True)

    def rate(self, x) -> float:
        p = self._progress(x) if self.per_step else x
        return self.initial_learning_rate * self.decay_rate ** p


@registry.schedules.register
class StepDecay(LearningRateSchedule):
    """lr(epoch) = initial_learning_rate * drop ** floor(epoch / epochs_drop)."""

    def __init__(self, initial_learning_rate, drop=0.5, epochs_drop=10):
        who = type(self).__name__
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate", who, lo=0.0)
        self.drop = _number(drop, "drop", who, lo=0.0, lo_open=True)
        if isinstance(epochs_drop, bool) or not isinstance(epochs_drop, numbers.Integral) or epochs_drop < 1:
            raise ValueError(f"[{who}] epochs_drop must be an int >= 1, got {epochs_drop!r}")
        self.epochs_drop = int(epochs_drop)

    def rate(self, epoch: int) -> float:
        return self.initial_learning_rate * self.drop ** (epoch // self.epochs_drop)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "drop": self.drop,
                "epochs_drop": self.epochs_drop}


@registry.schedules.register
class CosineDecay(LearningRateSchedule):
    """Per step (Keras, with decay_steps): lr = initial_learning_rate * ((1 - alpha) * c + alpha),
    c = (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2; with warmup_target, a linear
    warmup from initial_learning_rate to warmup_target over warmup_steps first, then the cosine
    from warmup_target. Per epoch (with decay_epochs): the same cosine over decay_epochs epochs."""

    def __init__(self, initial_learning_rate, decay_steps=None, alpha=0.0, name=None, warmup_target=None,
                 warmup_steps=0, decay_epochs=None):
        who = type(self).__name__
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate", who, lo=0.0)
        self.alpha = _number(alpha, "alpha", who, lo=0.0, hi=1.0)
        self.name = name
        if decay_epochs is not None:
            if decay_steps is not None or warmup_target is not None or warmup_steps:
                raise ValueError(f"[{who}] decay_epochs (per epoch) excludes decay_steps and the warmup (per step)")
            if isinstance(decay_epochs, bool) or not isinstance(decay_epochs, numbers.Integral) or decay_epochs < 1:
                raise ValueError(f"[{who}] decay_epochs must be an int >= 1, got {decay_epochs!r}")
            self.per_step = False
            self.decay_epochs = int(decay_epochs)
            self.decay_steps = self.warmup_target = None
            self.warmup_steps = 0
            return
        if decay_steps is None:
            raise TypeError(f"[{who}] give decay_steps (Keras, per step) or decay_epochs (per epoch)")
        self.per_step = True
        self.decay_epochs = None
        self.decay_steps = _steps(decay_steps, "decay_steps", who)
        self.warmup_target = None if warmup_target is None else _number(warmup_target, "warmup_target", who, lo=0.0)
        self.warmup_steps = _number(warmup_steps, "warmup_steps", who, lo=0.0)
        self.warmup_steps = int(self.warmup_steps) if self.warmup_steps.is_integer() else self.warmup_steps

    def _decay(self, step, decay_steps, start) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / decay_steps))
        return start * ((1.0 - self.alpha) * cosine + self.alpha)

    def rate(self, x) -> float:
        if not self.per_step:
            return self._decay(min(x, self.decay_epochs), self.decay_epochs, self.initial_learning_rate)
        if self.warmup_target is None:
            return self._decay(min(x, self.decay_steps), self.decay_steps, self.initial_learning_rate)
        step = min(x, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            frac = step / self.warmup_steps
            return (self.warmup_target - self.initial_learning_rate) * frac + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.decay_steps, self.warmup_target)

    def get_config(self) -> dict:
        if not self.per_step:
            return {"initial_learning_rate": self.initial_learning_rate, "decay_epochs": self.decay_epochs,
                    "alpha": self.alpha}
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


@registry.schedules.register
class PiecewiseConstantDecay(LearningRateSchedule):
    """Per step (Keras): values[0] while step <= boundaries[0], values[i] while
    boundaries[i-1] < step <= boundaries[i], values[-1] after the last boundary."""

    per_step = True

    def __init__(self, boundaries, values, name=None):
        who = type(self).__name__
        try:
            boundaries, values = list(boundaries), list(values)
        except TypeError:
            raise TypeError(f"[{who}] boundaries and values must be lists of numbers") from None
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"[{who}] values must have one more entry than boundaries, got {len(values)} values "
                             f"and {len(boundaries)} boundaries")
        self.boundaries = [_number(b, f"boundaries[{i}]", who) for i, b in enumerate(boundaries)]
        if any(b1 >= b2 for b1, b2 in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"[{who}] boundaries must increase, got {self.boundaries}")
        self.boundaries = [int(b) if b.is_integer() else b for b in self.boundaries]
        self.values = [_number(v, f"values[{i}]", who, lo=0.0) for i, v in enumerate(values)]
        self.name = name

    def rate(self, step) -> float:
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]

    def get_config(self) -> dict:
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


@registry.schedules.register
class PolynomialDecay(LearningRateSchedule):
    """Per step (Keras): lr = (initial_learning_rate - end_learning_rate) * (1 - s / d) ** power
    + end_learning_rate with s = min(step, decay_steps), d = decay_steps; with cycle, s = step and
    d = decay_steps * ceil(step / decay_steps) (one decay_steps at step 0)."""

    per_step = True

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False,
                 name=None):
        who = type(self).__name__
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate", who, lo=0.0)
        self.decay_steps = _steps(decay_steps, "decay_steps", who)
        self.end_learning_rate = _number(end_learning_rate, "end_learning_rate", who, lo=0.0)
        self.power = _number(power, "power", who, lo=0.0)  # a negative power divides by zero at decay_steps
        self.cycle = flag(cycle, "cycle", who)
        self.name = name

    def rate(self, step) -> float:
        d = self.decay_steps
        if self.cycle:
            d = d * (1.0 if step == 0 else math.ceil(step / d))
        else:
            step = min(step, d)
        frac = 1.0 - step / d
        return (self.initial_learning_rate - self.end_learning_rate) * frac ** self.power + self.end_learning_rate

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power, "cycle": self.cycle,
                "name": self.name}


def serialize(schedule) -> dict:
    """{"class_name", "config"} for a registered schedule; a clear error for a plain callable."""
    if isinstance(schedule, LearningRateSchedule):
        name = type(schedule).__name__
        if name not in registry.schedules or registry.schedules.get(name) is not type(schedule):
            raise ValueError(f"[schedules.serialize] {name} is not registered in pydl.registry.schedules, "
                             f"so it cannot be saved; decorate it with @pydl.registry.schedules.register")
        return {"class_name": name, "config": schedule.get_config()}
    what = getattr(schedule, "__qualname__", None) or type(schedule).__name__
    raise ValueError(f"[schedules.serialize] the learning rate {what!r} is a plain callable and cannot be saved; "
                     f"use a pydl.schedules.LearningRateSchedule subclass ({', '.join(registry.schedules.names())}) "
                     f"or set a float learning rate before saving")


def deserialize(config) -> LearningRateSchedule:
    if not isinstance(config, dict) or "class_name" not in config or set(config) - {"class_name", "config"}:
        raise ValueError(f"[schedules.deserialize] expected {{'class_name', 'config'}}, got {config!r}")
    cls = registry.schedules.get(config["class_name"])
    return cls.from_config(dict(config.get("config") or {}))


def get(identifier) -> LearningRateSchedule:
    """A schedule from an instance or a {"class_name", "config"} dict (resolved through the registry)."""
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise ValueError(f"[schedules.get] cannot interpret {identifier!r} as a learning-rate schedule "
                     f"(known: {', '.join(registry.schedules.names())})")


__all__ = ["LearningRateSchedule", "InverseTimeDecay", "ExponentialDecay", "StepDecay", "CosineDecay",
           "PiecewiseConstantDecay", "PolynomialDecay", "serialize", "deserialize", "get"]
