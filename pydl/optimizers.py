"""Optimizers with Keras 3 argument names, defaults and update rules, on fused in-place kernels.

    opt = pydl.optimizers.Adam(learning_rate=1e-3)
    opt.apply_gradients(zip(grads, params))     # params (NumPy or CuPy arrays) are updated in place

Contract used by `Sequential.fit`:
- `apply_gradients(grads_and_vars)` takes (grad, param) pairs in the SAME order on every call.
  Slot state is created on the first call, one set per position; `iterations` counts calls.
  A None gradient leaves that parameter (and its slots) untouched, as in Keras.
- `learning_rate` is a float or a schedule (any callable of the epoch -> float, see
  pydl.schedules); `set_epoch(e)` selects the epoch and `current_learning_rate` evaluates it.
  Assigning a float replaces any schedule.
- `get_config()` / `from_config(cfg)` (JSON-able; a schedule as {"class_name", "config"}),
  `get_state()` / `set_state(d)` (slots named "<slot>/<position>", plus "iterations").

Per-step order (Keras 3): gradients are clipped (`clipnorm`: each gradient by its own L2 norm,
`global_clipnorm`: all together, `clipvalue`: element-wise; at most one of the three), then
`weight_decay`, when set, is applied DECOUPLED, p <- p - lr * weight_decay * p, for every optimizer
(not an L2 term added to the gradient; that is what Keras 3 does, and what AdamW means), then the
optimizer's rule. Clipping scale, clip-by-value and weight decay are fused into the update kernel:
one pass over each parameter, plus one read-only pass over the gradient for norm clipping.
Every step is one `pydl.ops.optim.fused_update` call over all parameters that have a gradient:
on the CPU the per-array kernels in order, with CuPy parameters one kernel launch for all of
them (slots live on the parameters' device; get_state returns host arrays, set_state copies them
back onto that device).

Epsilon placement follows Keras 3: Adam divides by sqrt(v) + epsilon, Adagrad and RMSprop by
sqrt(acc + epsilon). (PyTorch puts it outside the square root for all three.)
"""
from __future__ import annotations

import functools
import math
import numbers
import sys
import warnings
from collections.abc import Mapping

import numpy as np

from . import registry, schedules
from ._validate import as_float_array, flag
from .ops import device
from .ops import optim as _ops

# `pydl.optimizers.schedules` is pydl.schedules, importable by that name too (as Keras's path)
sys.modules.setdefault(__name__ + ".schedules", schedules)


def _hyper(x, name: str, who: str, *, lo=None, hi=None, lo_open=False, hi_open=False, allow_none=False):
    if x is None and allow_none:
        return None
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"[{who}] {name} must be a number{' or None' if allow_none else ''}, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"[{who}] {name} must be finite, got {x}")
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise ValueError(f"[{who}] {name} must be {'>' if lo_open else '>='} {lo}, got {x}")
    if hi is not None and (x >= hi if hi_open else x > hi):
        raise ValueError(f"[{who}] {name} must be {'<' if hi_open else '<='} {hi}, got {x}")
    return x


def _accept_lr(init):
    """Let an optimizer's __init__ take Keras 2's `lr=` (with a DeprecationWarning)."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "lr" in kwargs:
            if "learning_rate" in kwargs:
                raise TypeError(f"[{type(self).__name__}] give learning_rate or lr, not both")
            warnings.warn(f"[{type(self).__name__}] the argument lr is deprecated (Keras 2); use learning_rate",
                          DeprecationWarning, stacklevel=2)
            kwargs["learning_rate"] = kwargs.pop("lr")
        init(self, *args, **kwargs)
    return wrapper


class Optimizer:
    """Base class. Subclasses set `_slot_kinds()`, `_rule()` and `_SLOT_ARGS`; their __init__ takes
    Keras 2's `lr=` as learning_rate (with a DeprecationWarning)."""

    # optimizer slot name -> the slot argument name of the pydl.ops.optim update
    _SLOT_ARGS: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _accept_lr(cls.__dict__["__init__"])

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None):
        who = type(self).__name__
        self.name = str(name) if name is not None else type(self).__name__.lower()
        self.learning_rate = learning_rate
        self.weight_decay = _hyper(weight_decay, "weight_decay", who, lo=0.0, allow_none=True)
        self.clipnorm = _hyper(clipnorm, "clipnorm", who, lo=0.0, lo_open=True, allow_none=True)
        self.clipvalue = _hyper(clipvalue, "clipvalue", who, lo=0.0, lo_open=True, allow_none=True)
        self.global_clipnorm = _hyper(global_clipnorm, "global_clipnorm", who, lo=0.0, lo_open=True,
                                      allow_none=True)
        if sum(c is not None for c in (self.clipnorm, self.clipvalue, self.global_clipnorm)) > 1:
            raise ValueError(f"[{who}] only one of clipnorm, clipvalue and global_clipnorm can be set, got "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        self.iterations = 0
        self._epoch = 0
        self._slots: list[dict[str, np.ndarray]] | None = None
        self._specs: list[tuple[tuple, np.dtype]] | None = None
        self._pending: list[dict[str, np.ndarray]] | None = None

    # -- learning rate -------------------------------------------------------------------------
    @property
    def learning_rate(self):
        """The float learning rate, or the schedule (a callable of the epoch)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if callable(value) and not isinstance(value, (numbers.Real, np.ndarray)):
            self._learning_rate = value
        else:
            self._learning_rate = _hyper(value, "learning_rate", type(self).__name__, lo=0.0)

    def set_epoch(self, epoch) -> None:
        """Select the epoch a learning-rate schedule is evaluated at (called by fit)."""
        self._epoch = schedules.check_epoch(epoch, f"{type(self).__name__}.set_epoch")

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def current_learning_rate(self) -> float:
        """The learning rate of the next update: a schedule with `per_step` (Keras's) is evaluated
        at `iterations` (updates done so far), any other callable at the epoch."""
        lr = self._learning_rate
        if not callable(lr):
            return lr
        per_step = bool(getattr(lr, "per_step", False))
        value = lr(self.iterations if per_step else self._epoch)
        try:
            out = float(value)
        except (TypeError, ValueError):
            out = math.nan
        if isinstance(value, bool) or not math.isfinite(out) or out < 0:
            raise ValueError(f"[{type(self).__name__}] learning-rate schedule {lr!r} returned {value!r} at "
                             f"{'step ' + str(self.iterations) if per_step else 'epoch ' + str(self._epoch)}; "
                             f"expected a finite float >= 0")
        return out

    # -- slots -------------------------------------------------------------------------------
    # Slots that hold sums or running means of squared gradients (set_state refuses negatives).
    _NONNEGATIVE_SLOTS: frozenset = frozenset()

    def _slot_kinds(self) -> tuple[str, ...]:
        """Slot names this configuration keeps per variable, in kernel order."""
        return ()

    def _slot_initial(self, kind: str) -> float:
        return 0.0

    def build(self, variables) -> None:
        """Create the slot state for `variables` (done automatically by the first apply_gradients)."""
        params = [self._check_var(p, i) for i, p in enumerate(variables)]
        self._build(params)

    def _build(self, params) -> None:
        specs = [(p.shape, p.dtype) for p in params]
        if self._pending is not None:
            self._check_state_matches(self._pending, specs, "set_state")
        slots = []
        for i, p in enumerate(params):
            d = {}
            dev = device.device_of(p)
            for k in self._slot_kinds():
                if self._pending is not None and i < len(self._pending):
                    d[k] = device.to_device(np.ascontiguousarray(self._pending[i][k], dtype=p.dtype).copy(), dev)
                else:
                    d[k] = device.full(p.shape, self._slot_initial(k), p.dtype, dev)
            slots.append(d)
        self._slots, self._specs, self._pending = slots, specs, None
        self._slot_args = [{self._SLOT_ARGS[k]: a for k, a in d.items()} for d in slots]

    @property
    def built(self) -> bool:
        return self._slots is not None

    def _check_var(self, p, i: int) -> np.ndarray:
        who = f"{type(self).__name__}.apply_gradients"
        if type(p) is not np.ndarray and device.is_cuda(p):
            if p.dtype not in (np.float32, np.float64):
                raise ValueError(f"[{who}] variable {i} must have dtype float32 or float64, got {p.dtype}")
            if not p.flags.c_contiguous:
                raise ValueError(f"[{who}] variable {i} (shape {p.shape}) must be C-contiguous: it is updated in "
                                 f"place and a copy would lose the update")
            return p
        if not isinstance(p, np.ndarray):
            raise TypeError(f"[{who}] variable {i} must be a numpy.ndarray (updated in place), got {type(p).__name__}")
        if p.dtype not in (np.float32, np.float64):
            raise ValueError(f"[{who}] variable {i} must have dtype float32 or float64, got {p.dtype}")
        if not p.flags.c_contiguous:
            raise ValueError(f"[{who}] variable {i} (shape {p.shape}) must be C-contiguous: it is updated in "
                             f"place and a copy would lose the update")
        if not p.flags.writeable:
            raise ValueError(f"[{who}] variable {i} (shape {p.shape}) must be writeable")
        return p

    def _check_state_matches(self, slots, specs, who) -> None:
        name = type(self).__name__
        if slots and len(slots) != len(specs):
            raise ValueError(f"[{name}.{who}] the optimizer state holds slots for {len(slots)} variables but "
                             f"{len(specs)} variables are being optimized")
        for i, d in enumerate(slots):
            shape, _ = specs[i]
            for k, arr in d.items():
                if tuple(arr.shape) != tuple(shape):
                    raise ValueError(f"[{name}.{who}] state '{k}/{i}' has shape {tuple(arr.shape)} but variable {i} "
                                     f"has shape {tuple(shape)}")

    # -- the step ----------------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars) -> None:
        """Update each param in place from its grad; pairs must come in a stable order."""
        who = f"{type(self).__name__}.apply_gradients"
        try:
            pairs = list(grads_and_vars)
        except TypeError:
            raise TypeError(f"[{who}] expected an iterable of (grad, variable) pairs, got "
                            f"{type(grads_and_vars).__name__}") from None
        params, grads = [], []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"[{who}] item {i} must be a (grad, variable) pair, got {type(pair).__name__}")
            g, p = pair
            p = self._check_var(p, i)
            if g is not None:
                if not (type(p) is np.ndarray and type(g) is np.ndarray) and (device.is_cuda(p) or device.is_cuda(g)):
                    if not (type(g) is type(p) and g.dtype == p.dtype and g.flags.c_contiguous):
                        device.dispatch(who, **{f"grad {i}": g, f"variable {i}": p})
                        g = device.as_float_cuda(g, f"grad {i}", who, dtype=p.dtype)
                elif not (type(g) is np.ndarray and g.dtype == p.dtype and g.flags.c_contiguous):
                    g = as_float_array(g, f"grad {i}", who, dtype=p.dtype)
                if g.shape != p.shape:
                    raise ValueError(f"[{who}] grad {i} has shape {g.shape} but variable {i} has shape {p.shape}")
            params.append(p)
            grads.append(g)
        if self._slots is None:
            self._build(params)
        else:
            if len(params) != len(self._specs):
                raise ValueError(f"[{who}] got {len(params)} variables but the optimizer was built for "
                                 f"{len(self._specs)}; pass the same variables in the same order every step")
            for i, (p, (shape, dtype)) in enumerate(zip(params, self._specs)):
                if p.shape != shape or p.dtype != dtype:
                    raise ValueError(f"[{who}] variable {i} has shape {p.shape} and dtype {p.dtype} but the "
                                     f"optimizer's slots were built for shape {shape} and dtype {dtype}; pass the "
                                     f"same variables in the same order every step")

        lr = self.current_learning_rate
        step = self.iterations + 1
        live = [i for i, g in enumerate(grads) if g is not None]
        if live:
            kind, hyper = self._rule(lr, step)
            if len(live) == len(params):
                ps, gs, ss = params, grads, self._slot_args
            else:
                ps, gs, ss = [params[i] for i in live], [grads[i] for i in live], [self._slot_args[i] for i in live]
            _ops.fused_update(kind, ps, gs, ss, lr,
                              clip_value=self.clipvalue, clipnorm=self.clipnorm,
                              global_clipnorm=self.global_clipnorm, weight_decay=self.weight_decay or 0.0, **hyper)
        self.iterations = step

    def _rule(self, lr: float, step: int) -> tuple[str, dict]:
        """(kind of pydl.ops.optim.fused_update, its rule hyperparameters) for this step."""
        raise NotImplementedError(f"{type(self).__name__}._rule")

    # -- config and state --------------------------------------------------------------------
    def get_config(self) -> dict:
        lr = self._learning_rate
        lr_cfg = lr if not callable(lr) else schedules.serialize(lr)
        return {"name": self.name, "learning_rate": lr_cfg, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}

    @classmethod
    def from_config(cls, config: dict):
        """Rebuild from get_config(). On the base class, pass {"class_name", "config"}."""
        if not isinstance(config, Mapping):
            raise ValueError(f"[{cls.__name__}.from_config] config must be a dict, got {type(config).__name__}")
        if cls is Optimizer:
            if "class_name" in config:
                return get(dict(config))
            raise ValueError("[Optimizer.from_config] the base class needs {'class_name': ..., 'config': {...}} "
                             "(or call from_config on the concrete class, e.g. Adam.from_config)")
        cfg = dict(config)
        lr = cfg.get("learning_rate")
        if isinstance(lr, Mapping):
            cfg["learning_rate"] = schedules.deserialize(dict(lr))
        try:
            return cls(**cfg)
        except TypeError as exc:
            raise ValueError(f"[{cls.__name__}.from_config] bad config {config!r}: {exc}") from None

    def get_state(self) -> dict:
        """{"iterations": int64 array, "<slot>/<position>": array copies}."""
        state = {"iterations": np.asarray(self.iterations, dtype=np.int64)}
        slots = self._slots if self._slots is not None else (self._pending or [])
        for i, d in enumerate(slots):
            for k in self._slot_kinds():
                state[f"{k}/{i}"] = np.array(device.to_host(d[k]), copy=True)
        return state

    def set_state(self, state) -> None:
        """Restore get_state() output. Checked against the slots now if built, else at the next apply."""
        who = f"{type(self).__name__}.set_state"
        if not isinstance(state, Mapping):
            raise TypeError(f"[{who}] state must be a dict, got {type(state).__name__}")
        if "iterations" not in state:
            raise ValueError(f"[{who}] state has no 'iterations' entry")
        it = np.asarray(state["iterations"])
        if it.ndim != 0 or not np.issubdtype(it.dtype, np.number) or not np.isfinite(it) or it < 0 \
                or float(it) != int(it):
            raise ValueError(f"[{who}] 'iterations' must be a non-negative integer, got {state['iterations']!r}")
        kinds = self._slot_kinds()
        found: dict[int, dict[str, np.ndarray]] = {}
        for key, val in state.items():
            if key == "iterations":
                continue
            kind, _, idx = str(key).rpartition("/")
            if kind not in kinds or not idx.isdigit():
                expected = ", ".join(f"'{k}/<i>'" for k in kinds) or "no slots"
                raise ValueError(f"[{who}] unexpected state entry {key!r}; {type(self).__name__} with this "
                                 f"configuration keeps 'iterations' and {expected}")
            arr = np.asarray(val)
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(f"[{who}] state entry {key!r} must be a numeric array, got dtype {arr.dtype}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"[{who}] state entry {key!r} holds non-finite values (the next step would carry "
                                 f"them into the weights)")
            if kind in self._NONNEGATIVE_SLOTS and arr.size and arr.min() < 0:
                raise ValueError(f"[{who}] state entry {key!r} is a running mean of squares and must be >= 0, got "
                                 f"minimum {arr.min()}")
            found.setdefault(int(idx), {})[kind] = arr
        n = len(found)
        if sorted(found) != list(range(n)):
            raise ValueError(f"[{who}] slot positions must be 0..{n - 1}, got {sorted(found)}")
        for i, d in found.items():
            missing = [k for k in kinds if k not in d]
            if missing:
                raise ValueError(f"[{who}] position {i} lacks slot(s) {missing}")
        if n == 0 and kinds and int(it) > 0:
            raise ValueError(f"[{who}] state has iterations={int(it)} but no slots; {type(self).__name__} keeps "
                             f"{list(kinds)} per variable")
        slots = [found[i] for i in range(n)]
        if self._slots is not None:
            if n:
                self._check_state_matches(slots, self._specs, "set_state")
                for cur, new in zip(self._slots, slots):
                    for k in kinds:
                        if device.is_cuda(cur[k]):
                            cur[k][...] = device.to_device(np.asarray(new[k]).astype(cur[k].dtype), "cuda")
                        else:
                            np.copyto(cur[k], new[k], casting="unsafe")
            else:
                for d in self._slots:
                    for k in kinds:
                        d[k].fill(self._slot_initial(k))
        else:
            self._pending = [{k: np.array(v, copy=True) for k, v in d.items()} for d in slots] if n else None
        self.iterations = int(it)

    def __repr__(self) -> str:
        try:
            cfg = self.get_config()
        except ValueError:
            cfg = {"learning_rate": self._learning_rate}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"


@registry.optimizers.register
class SGD(Optimizer):
    """p <- p - lr * g; with momentum (Keras form) v <- momentum * v - lr * g, p <- p + v;
    Nesterov p <- p + momentum * v - lr * g. Slot: "momentum" (when momentum > 0)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="SGD"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.momentum = _hyper(momentum, "momentum", "SGD", lo=0.0, hi=1.0)
        self.nesterov = flag(nesterov, "nesterov", type(self).__name__)

    def _slot_kinds(self):
        return ("momentum",) if self.momentum > 0 else ()

    _SLOT_ARGS = {"momentum": "velocity"}

    def _rule(self, lr, step):
        if self.momentum > 0:
            return "momentum", {"momentum": self.momentum, "nesterov": self.nesterov}
        return "sgd", {}

    def get_config(self):
        return super().get_config() | {"momentum": self.momentum, "nesterov": self.nesterov}


@registry.optimizers.register
class Adagrad(Optimizer):
    """acc <- acc + g^2; p <- p - lr * g / sqrt(acc + epsilon). Slot: "accumulator"."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adagrad"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.initial_accumulator_value = _hyper(initial_accumulator_value, "initial_accumulator_value", "Adagrad",
                                                lo=0.0)
        self.epsilon = _hyper(epsilon, "epsilon", "Adagrad", lo=0.0)

    _NONNEGATIVE_SLOTS = frozenset({"accumulator"})

    def _slot_kinds(self):
        return ("accumulator",)

    def _slot_initial(self, kind):
        return self.initial_accumulator_value

    _SLOT_ARGS = {"accumulator": "accumulator"}

    def _rule(self, lr, step):
        return "adagrad", {"epsilon": self.epsilon}

    def get_config(self):
        return super().get_config() | {"initial_accumulator_value": self.initial_accumulator_value,
                                       "epsilon": self.epsilon}


@registry.optimizers.register
class RMSprop(Optimizer):
    """a <- rho a + (1 - rho) g^2; p <- p - lr g / sqrt(a + epsilon) (Keras 3).
    centered: divides by sqrt(a - mg^2 + epsilon) with mg <- rho mg + (1 - rho) g;
    momentum > 0: mom <- momentum * mom + increment, p <- p - mom.
    Slots: "velocity", "momentum" (momentum > 0), "average_gradient" (centered)."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="rmsprop"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        self.rho = _hyper(rho, "rho", "RMSprop", lo=0.0, hi=1.0, hi_open=True)
        self.momentum = _hyper(momentum, "momentum", "RMSprop", lo=0.0, hi=1.0, hi_open=True)
        self.epsilon = _hyper(epsilon, "epsilon", "RMSprop", lo=0.0)
        self.centered = flag(centered, "centered", type(self).__name__)

    _NONNEGATIVE_SLOTS = frozenset({"velocity"})

    def _slot_kinds(self):
        return ("velocity",) + (("momentum",) if self.momentum > 0 else ()) + \
            (("average_gradient",) if self.centered else ())

    _SLOT_ARGS = {"velocity": "velocity", "momentum": "momentum_slot", "average_gradient": "average_gradient"}

    def _rule(self, lr, step):
        return "rmsprop", {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}

    def get_config(self):
        return super().get_config() | {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                                       "centered": self.centered}


@registry.optimizers.register
class Adam(Optimizer):
    """m <- m + (1 - b1)(g - m); v <- v + (1 - b2)(g^2 - v);
    p <- p - lr_t m / (sqrt(v) + epsilon), lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) (Keras form).
    amsgrad: the running max of v replaces v. Slots: "m", "v", "vhat" (amsgrad)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adam"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        who = type(self).__name__
        self.beta_1 = _hyper(beta_1, "beta_1", who, lo=0.0, hi=1.0, hi_open=True)
        self.beta_2 = _hyper(beta_2, "beta_2", who, lo=0.0, hi=1.0, hi_open=True)
        self.epsilon = _hyper(epsilon, "epsilon", who, lo=0.0)
        self.amsgrad = flag(amsgrad, "amsgrad", who)

    _NONNEGATIVE_SLOTS = frozenset({"v", "vhat"})

    def _slot_kinds(self):
        return ("m", "v", "vhat") if self.amsgrad else ("m", "v")

    _SLOT_ARGS = {"m": "m", "v": "v", "vhat": "vhat"}

    def _rule(self, lr, step):
        return "adam", {"step": step, "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def get_config(self):
        return super().get_config() | {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                                       "amsgrad": self.amsgrad}


@registry.optimizers.register
class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p - lr * weight_decay * p, then the Adam step."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, name="adamw"):
        if weight_decay is None:
            raise ValueError("[AdamW] weight_decay must be a number >= 0, got None (use Adam for no decay)")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, name)


@registry.optimizers.register
class Nadam(Optimizer):
    """Adam with Nesterov momentum (Keras 3's rule), step t counted from 1:
    u_t = beta_1 (1 - 0.5 * 0.96^t), U_t = u_1 * ... * u_t;
    m <- m + (1 - b1)(g - m); v <- v + (1 - b2)(g^2 - v);
    p <- p - lr (u_{t+1} m / (1 - U_{t+1}) + (1 - u_t) g / (1 - U_t)) / (sqrt(v / (1 - b2^t)) + epsilon).
    Slots: "m", "v" (U_t follows from `iterations`, so it needs no saved state)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="nadam"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)
        who = type(self).__name__
        self.beta_1 = _hyper(beta_1, "beta_1", who, lo=0.0, hi=1.0, hi_open=True)
        self.beta_2 = _hyper(beta_2, "beta_2", who, lo=0.0, hi=1.0, hi_open=True)
        self.epsilon = _hyper(epsilon, "epsilon", who, lo=0.0)
        self._u_cache = (1, 1.0)  # (t, U_{t-1}): the product of the earlier steps' u

    def _u_product_before(self, step: int) -> float:
        """U_{step-1}, from the cache when the steps ran in order, else as the product over 1..step-1."""
        t, prod = self._u_cache
        if t == step:
            return prod
        u_t, _, prod_t, _ = _ops.nadam_schedule(step, self.beta_1)
        return prod_t / u_t if u_t else 0.0

    _SLOT_ARGS = {"m": "m", "v": "v"}

    def _rule(self, lr, step):
        return "nadam", {"step": step, "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                         "u_product": self._u_product_before(step)}

    def apply_gradients(self, grads_and_vars) -> None:
        step = self.iterations + 1
        prev = self._u_product_before(step)
        super().apply_gradients(grads_and_vars)
        if self.iterations == step:
            self._u_cache = (step + 1, _ops.nadam_schedule(step, self.beta_1, prev)[2])

    _NONNEGATIVE_SLOTS = frozenset({"v"})

    def _slot_kinds(self):
        return ("m", "v")

    def get_config(self):
        return super().get_config() | {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


_ALIASES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW",
            "nadam": "Nadam"}


def serialize(optimizer: Optimizer) -> dict:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def _resolve(name: str):
    if name in registry.optimizers:
        return registry.optimizers.get(name)
    key = name.lower() if isinstance(name, str) else name
    if key in _ALIASES:
        return registry.optimizers.get(_ALIASES[key])
    known = sorted(set(_ALIASES) | set(registry.optimizers.names()))
    raise ValueError(f"[optimizers.get] unknown optimizer {name!r}; known: {', '.join(known)}")


def get(identifier) -> Optimizer:
    """An optimizer from a name ("adam", "SGD", ...: case-insensitive, default arguments), an
    Optimizer instance (returned as is), or a {"class_name", "config"} dict (resolved through
    pydl.registry.optimizers only)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        return _resolve(identifier)()
    if isinstance(identifier, Mapping):
        if "class_name" not in identifier or set(identifier) - {"class_name", "config"}:
            raise ValueError(f"[optimizers.get] a config must be {{'class_name', 'config'}}, got {identifier!r}")
        cls = _resolve(identifier["class_name"])
        cfg = identifier.get("config") or {}
        if not isinstance(cfg, Mapping):
            raise ValueError(f"[optimizers.get] config must be a dict, got {cfg!r}")
        return cls.from_config(dict(cfg))
    raise ValueError(f"[optimizers.get] cannot interpret {identifier!r} as an optimizer; give a name "
                     f"({', '.join(sorted(_ALIASES))}), an Optimizer or a {{'class_name', 'config'}} dict")


__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Nadam", "get", "serialize"]
