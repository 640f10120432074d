"""Fused, in-place optimizer updates (one pass over a parameter and its slots per step).

Every function updates `param` and its slot arrays IN PLACE and returns `param`. Those arrays
must already be exactly right -- float32 or float64, the slots with the parameter's dtype and
shape, C-contiguous, writeable, not overlapping -- or a ValueError is raised: a silent copy would
drop the update. The gradient is read only and is cast to the parameter's dtype (and made
contiguous) on purpose.

Common keyword arguments, applied element-wise in this order before each rule:

    g <- g * grad_scale                  clip-by-norm scale, or any gradient scaling (1 = off)
    g <- clip(g, -clip_value, clip_value) clip by value (None = off; NaN stays NaN)
    g <- g + l2 * p                       coupled L2 weight decay, as in torch.optim (0 = off)
    p <- p - lr * weight_decay * p        decoupled weight decay, as in Keras 3 / AdamW (0 = off)

`naive=True` runs the scalar reference twin of the kernel (for tests).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .._validate import as_float_array, check_out

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_param(param, op: str) -> np.ndarray:
    if type(param) is np.ndarray and param.dtype in _FLOATS and param.flags.c_contiguous and param.flags.writeable \
            and param.flags.aligned:
        return param
    if not isinstance(param, np.ndarray):
        raise TypeError(f"[{op}] param must be a numpy.ndarray (updated in place), got {type(param).__name__}")
    if param.dtype not in (np.float32, np.float64):
        raise ValueError(f"[{op}] param must have dtype float32 or float64 (updated in place), got {param.dtype}")
    if not param.flags.c_contiguous:
        raise ValueError(f"[{op}] param must be C-contiguous (it is updated in place; a copy would lose the "
                         f"update), got strides {param.strides} for shape {param.shape}")
    if not param.flags.writeable:
        raise ValueError(f"[{op}] param must be writeable (it is updated in place)")
    if not param.flags.aligned:
        raise ValueError(f"[{op}] param must be aligned to its item size ({param.dtype.itemsize} bytes); it is "
                         f"updated in place, so it cannot be copied")
    return param


def _check_slot(slot, param: np.ndarray, op: str, name: str) -> np.ndarray:
    if isinstance(slot, np.ndarray) and slot.dtype == param.dtype and slot.shape == param.shape \
            and slot.flags.c_contiguous and slot.flags.writeable and slot.flags.aligned:
        return slot  # overlap with param or another slot is refused by the binding
    if not isinstance(slot, np.ndarray):
        raise TypeError(f"[{op}] {name} must be a numpy.ndarray (updated in place), got {type(slot).__name__}")
    return check_out(slot, param.shape, param.dtype, op, name)


def _prepare(op: str, param, grad, slots: dict):
    """Check param and slots strictly; return (param, grad cast to param's dtype)."""
    param = _check_param(param, op)
    for name, s in slots.items():
        if s is not None:
            _check_slot(s, param, op, name)
    if isinstance(grad, np.ndarray) and grad.dtype == param.dtype and grad.flags.c_contiguous \
            and grad.flags.aligned:
        g = grad
    else:
        g = as_float_array(grad, "grad", op, dtype=param.dtype)
    if g.shape != param.shape:
        raise ValueError(f"[{op}] grad has shape {g.shape}, expected the param's shape {param.shape}")
    if np.may_share_memory(g, param):
        g = g.copy()
    return param, g


def _num(x, name: str, op: str, *, lo=None, finite: bool = True) -> float:
    if type(x) is float and (not finite or math.isfinite(x)) and (lo is None or x >= lo):
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"[{op}] {name} must be a number, got {type(x).__name__}")
    x = float(x)
    if finite and not math.isfinite(x):
        raise ValueError(f"[{op}] {name} must be finite, got {x}")
    if lo is not None and not x >= lo:
        raise ValueError(f"[{op}] {name} must be >= {lo}, got {x}")
    return x


def _common(op: str, lr: float, grad_scale, clip_value, l2, weight_decay) -> dict:
    grad_scale = _num(grad_scale, "grad_scale", op, finite=False)  # NaN propagates on purpose
    if clip_value is not None:
        clip_value = _num(clip_value, "clip_value", op, lo=0.0)
    l2 = _num(l2, "l2", op)
    weight_decay = _num(weight_decay, "weight_decay", op)
    return {"grad_scale": grad_scale, "clip_value": clip_value, "l2": l2, "decay": lr * weight_decay}


def _pick(name: str, naive: bool):
    return getattr(_core, name + ("_naive" if naive else ""))


def sgd_update(param, grad, lr, *, grad_scale=1.0, clip_value=None, l2=0.0, weight_decay=0.0,
               naive: bool = False) -> np.ndarray:
    """In place: p <- p - lr * g."""
    op = "sgd_update"
    param, g = _prepare(op, param, grad, {})
    lr = _num(lr, "lr", op)
    _pick(op, naive)(param, g, lr, **_common(op, lr, grad_scale, clip_value, l2, weight_decay))
    return param


def momentum_update(param, velocity, grad, lr, momentum, nesterov: bool = False, *, grad_scale=1.0,
                    clip_value=None, l2=0.0, weight_decay=0.0, naive: bool = False) -> np.ndarray:
    """In place (Keras form): v <- momentum * v - lr * g; p <- p + v.

    Nesterov: p <- p + momentum * v - lr * g (with the new v). PyTorch keeps b = -v / lr instead.
    """
    op = "momentum_update"
    param, g = _prepare(op, param, grad, {"velocity": velocity})
    lr = _num(lr, "lr", op)
    momentum = _num(momentum, "momentum", op)
    _pick(op, naive)(param, velocity, g, lr, momentum, bool(nesterov),
                     **_common(op, lr, grad_scale, clip_value, l2, weight_decay))
    return param


def adagrad_update(param, accumulator, grad, lr, epsilon=1e-7, *, epsilon_inside_sqrt: bool = True,
                   grad_scale=1.0, clip_value=None, l2=0.0, weight_decay=0.0, naive: bool = False) -> np.ndarray:
    """In place: acc <- acc + g^2; p <- p - lr * g / sqrt(acc + epsilon)   (Keras 3).

    With epsilon_inside_sqrt=False: p <- p - lr * g / (sqrt(acc) + epsilon)   (PyTorch).
    """
    op = "adagrad_update"
    param, g = _prepare(op, param, grad, {"accumulator": accumulator})
    lr = _num(lr, "lr", op)
    eps = _num(epsilon, "epsilon", op, lo=0.0)
    ein, eout = (eps, 0.0) if epsilon_inside_sqrt else (0.0, eps)
    _pick(op, naive)(param, accumulator, g, lr, ein, eout, **_common(op, lr, grad_scale, clip_value, l2, weight_decay))
    return param


def rmsprop_update(param, velocity, grad, lr, rho=0.9, momentum=0.0, epsilon=1e-7, *, momentum_slot=None,
                   average_gradient=None, epsilon_inside_sqrt: bool = True, grad_scale=1.0, clip_value=None,
                   l2=0.0, weight_decay=0.0, naive: bool = False) -> np.ndarray:
    """In place RMSprop (Keras 3 form):

        a <- rho * a + (1 - rho) * g^2                         (velocity)
        centered: mg <- rho * mg + (1 - rho) * g; d = a - mg^2  (average_gradient given)
        inc = lr * g / sqrt(d + epsilon)                        (sqrt(d) + epsilon if not inside)
        momentum_slot given: mom <- momentum * mom + inc; p <- p - mom;  else p <- p - inc
    """
    op = "rmsprop_update"
    param, g = _prepare(op, param, grad, {"velocity": velocity, "momentum_slot": momentum_slot,
                                          "average_gradient": average_gradient})
    lr = _num(lr, "lr", op)
    rho = _num(rho, "rho", op)
    momentum = _num(momentum, "momentum", op)
    eps = _num(epsilon, "epsilon", op, lo=0.0)
    ein, eout = (eps, 0.0) if epsilon_inside_sqrt else (0.0, eps)
    _pick(op, naive)(param, velocity, momentum_slot, average_gradient, g, lr, rho, momentum, ein, eout,
                     **_common(op, lr, grad_scale, clip_value, l2, weight_decay))
    return param


def adam_step_size(lr: float, step: int, beta_1: float, beta_2: float) -> float:
    """Keras's bias-corrected step: lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)."""
    return lr * math.sqrt(1.0 - beta_2 ** step) / (1.0 - beta_1 ** step)


def _adam_hyper(op: str, lr, step, beta_1, beta_2, epsilon):
    """The checked (lr, step, beta_1, beta_2, epsilon) of the Adam-family updates."""
    lr = _num(lr, "lr", op)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"[{op}] step must be an int >= 1, got {step!r}")
    beta_1 = _num(beta_1, "beta_1", op)
    beta_2 = _num(beta_2, "beta_2", op)
    if not (0.0 <= beta_1 < 1.0 and 0.0 <= beta_2 < 1.0):
        raise ValueError(f"[{op}] beta_1 and beta_2 must be in [0, 1), got {beta_1}, {beta_2}")
    return lr, int(step), beta_1, beta_2, _num(epsilon, "epsilon", op, lo=0.0)


def adam_update(param, m, v, grad, lr, step, beta_1=0.9, beta_2=0.999, epsilon=1e-7, *, vhat=None,
                grad_scale=1.0, clip_value=None, l2=0.0, weight_decay=0.0, naive: bool = False) -> np.ndarray:
    """In place Adam (Keras form), step t >= 1 counted from 1:

        m <- m + (1 - beta_1) (g - m);  v <- v + (1 - beta_2) (g^2 - v)
        AMSGrad (vhat given): vhat <- max(vhat, v), used in place of v
        p <- p - lr_t * m / (sqrt(v) + epsilon),  lr_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)

    AdamW is `weight_decay` > 0 (decoupled: p <- p - lr * weight_decay * p first).
    PyTorch's Adam puts epsilon after the bias correction: torch eps e equals epsilon = e * sqrt(1 - beta_2^t).
    """
    op = "adam_update"
    param, g = _prepare(op, param, grad, {"m": m, "v": v, "vhat": vhat})
    lr, step, beta_1, beta_2, eps = _adam_hyper(op, lr, step, beta_1, beta_2, epsilon)
    lr_t = adam_step_size(lr, int(step), beta_1, beta_2)
    _pick(op, naive)(param, m, v, vhat, g, lr_t, beta_1, beta_2, eps,
                     **_common(op, lr, grad_scale, clip_value, l2, weight_decay))
    return param


def nadam_schedule(step: int, beta_1: float, u_product=None) -> tuple[float, float, float, float]:
    """Keras's Nadam momentum schedule at step t >= 1: (u_t, u_{t+1}, U_t, U_{t+1}) with
    u_t = beta_1 (1 - 0.5 * 0.96^t) and U_t = u_1 * ... * u_t (pass U_{t-1} as u_product to skip
    the product over the earlier steps)."""
    u = lambda i: beta_1 * (1.0 - 0.5 * 0.96 ** i)  # noqa: E731
    if u_product is None:
        u_product = 1.0
        for i in range(1, step):
            u_product *= u(i)
    u_t, u_t1 = u(step), u(step + 1)
    prod_t = u_product * u_t
    return u_t, u_t1, prod_t, prod_t * u_t1


def nadam_coefficients(lr: float, step: int, beta_1: float, beta_2: float, u_product=None):
    """(m_coef, g_coef, v_scale) of the Nadam kernel at step t (see nadam_update)."""
    u_t, u_t1, prod_t, prod_t1 = nadam_schedule(step, beta_1, u_product)
    return lr * u_t1 / (1.0 - prod_t1), lr * (1.0 - u_t) / (1.0 - prod_t), 1.0 / (1.0 - beta_2 ** step)


def nadam_update(param, m, v, grad, lr, step, beta_1=0.9, beta_2=0.999, epsilon=1e-7, *, grad_scale=1.0,
                 clip_value=None, l2=0.0, weight_decay=0.0, naive: bool = False) -> np.ndarray:
    """In place Nadam (Keras 3's form), step t >= 1 counted from 1:

        u_t = beta_1 (1 - 0.5 * 0.96^t);  U_t = u_1 * ... * u_t
        m <- m + (1 - beta_1) (g - m);  v <- v + (1 - beta_2) (g^2 - v)
        m_hat = u_{t+1} m / (1 - U_{t+1}) + (1 - u_t) g / (1 - U_t);  v_hat = v / (1 - beta_2^t)
        p <- p - lr * m_hat / (sqrt(v_hat) + epsilon)

    (PyTorch's NAdam with momentum_decay=1 is the same rule; its default momentum_decay=0.004
    makes u_t = beta_1 (1 - 0.5 * 0.96^(0.004 t)).)
    """
    op = "nadam_update"
    param, g = _prepare(op, param, grad, {"m": m, "v": v})
    lr, step, beta_1, beta_2, eps = _adam_hyper(op, lr, step, beta_1, beta_2, epsilon)
    cm, cg, vs = nadam_coefficients(lr, int(step), beta_1, beta_2)
    _pick(op, naive)(param, m, v, g, cm, cg, vs, beta_1, beta_2, eps,
                     **_common(op, lr, grad_scale, clip_value, l2, weight_decay))
    return param


def sum_squares(x, naive: bool = False) -> float:
    """sum(x**2) accumulated in float64 (the same result for any thread count)."""
    arr = as_float_array(x, "x", "sum_squares")
    return float(_pick("sum_squares", naive)(arr))


def global_norm(arrays) -> float:
    """sqrt of the sum of squares of all arrays together (NaN if any element is NaN)."""
    return math.sqrt(sum(sum_squares(a) for a in arrays))


def clip_scale(norm: float, clip_norm: float) -> float:
    """Factor that brings a gradient of norm `norm` to at most `clip_norm` (Keras):
    clip_norm / max(norm, clip_norm); NaN when the norm is NaN, so NaN gradients stay NaN."""
    if not clip_norm > 0:
        raise ValueError(f"[clip_scale] clip_norm must be > 0, got {clip_norm}")
    if math.isnan(norm):
        return math.nan
    return clip_norm / max(norm, clip_norm)


__all__ = ["sgd_update", "momentum_update", "adagrad_update", "rmsprop_update", "adam_update", "adam_step_size",
           "nadam_update", "nadam_coefficients", "nadam_schedule",
           "sum_squares", "global_norm", "clip_scale"]
