"""Learning-rate schedules: callables of the epoch (int, counted from 0) returning a float.

    opt = pydl.optimizers.SGD(learning_rate=pydl.schedules.StepDecay(0.1, drop=0.5, epochs_drop=10))

`Sequential.fit` calls `opt.set_epoch(e)` at the start of each epoch, and the optimizer evaluates
its schedule there. Any Python callable of the epoch works as a learning rate too, but only the
classes here (registered in `pydl.registry.schedules`) can be saved with a model.
"""
from __future__ import annotations

import math
import numbers

from . import registry


def _number(x, name: str, who: str, *, lo=None, hi=None, lo_open: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"[{who}] {name} must be a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"[{who}] {name} must be finite, got {x}")
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise ValueError(f"[{who}] {name} must be {'>' if lo_open else '>='} {lo}, got {x}")
    if hi is not None and x > hi:
        raise ValueError(f"[{who}] {name} must be <= {hi}, got {x}")
    return x


def check_epoch(epoch, who: str) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"[{who}] epoch must be an int >= 0, got {epoch!r}")
    return int(epoch)


class LearningRateSchedule:
    """Base class: subclasses implement `rate(epoch) -> float` and `get_config()`."""

    def __call__(self, epoch) -> float:
        return float(self.rate(check_epoch(epoch, type(self).__name__)))

    def rate(self, epoch: int) -> float:
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
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@registry.schedules.register
class InverseTimeDecay(LearningRateSchedule):
    """lr(epoch) = initial_learning_rate / (1 + decay_rate * epoch)."""

    def __init__(self, initial_learning_rate, decay_rate):
        who = type(self).__name__
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate", who, lo=0.0)
        self.decay_rate = _number(decay_rate, "decay_rate", who, lo=0.0)

    def rate(self, epoch: int) -> float:
        return self.initial_learning_rate / (1.0 + self.decay_rate * epoch)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_rate": self.decay_rate}


@registry.schedules.register
class ExponentialDecay(LearningRateSchedule):
    """lr(epoch) = initial_learning_rate * decay_rate ** epoch."""

    def __init__(self, initial_learning_rate, decay_rate):
        who = type(self).__name__
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate", who, lo=0.0)
        self.decay_rate = _number(decay_rate, "decay_rate", who, lo=0.0, lo_open=True)

    def rate(self, epoch: int) -> float:
        return self.initial_learning_rate * self.decay_rate ** epoch

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_rate": self.decay_rate}


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
    """lr(epoch) = initial_learning_rate * ((1 - alpha) * c + alpha),
    c = (1 + cos(pi * min(epoch, decay_epochs) / decay_epochs)) / 2   (constant after decay_epochs)."""

    def __init__(self, initial_learning_rate, decay_epochs, alpha=0.0):
        who = type(self).__name__
        self.initial_learning_rate = _number(initial_learning_rate, "initial_learning_rate", who, lo=0.0)
        if isinstance(decay_epochs, bool) or not isinstance(decay_epochs, numbers.Integral) or decay_epochs < 1:
            raise ValueError(f"[{who}] decay_epochs must be an int >= 1, got {decay_epochs!r}")
        self.decay_epochs = int(decay_epochs)
        self.alpha = _number(alpha, "alpha", who, lo=0.0, hi=1.0)

    def rate(self, epoch: int) -> float:
        frac = min(epoch, self.decay_epochs) / self.decay_epochs
        cosine = 0.5 * (1.0 + math.cos(math.pi * frac))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_epochs": self.decay_epochs,
                "alpha": self.alpha}


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
           "serialize", "deserialize", "get"]
