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

`naive=True` runs the scalar reference twin of the kernel (for tests; CPU arrays only).

CuPy arrays (all of one call on the GPU; a mix of devices is a ValueError) run the kernels of
`pydl.cuda.optim` with the same checks, formulas and operation order. `fused_update` updates a
whole list of parameters in one call: on the GPU one kernel launch per dtype, on the CPU a loop
over the per-array kernels.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _core
from .._validate import as_float_array, check_out
from . import device

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_param(param, op: str) -> np.ndarray:
    if type(param) is np.ndarray and param.dtype in _FLOATS:
        f = param.flags
        if f.c_contiguous and f.writeable and f.aligned:
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
    if isinstance(slot, np.ndarray) and slot.dtype == param.dtype and slot.shape == param.shape:
        f = slot.flags
        if f.c_contiguous and f.writeable and f.aligned:
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


def _span(a) -> tuple[int, int]:
    p = int(a.data.ptr)
    return p, p + a.nbytes


def _overlaps(a, b) -> bool:
    if not a.size or not b.size:
        return False
    a0, a1 = _span(a)
    b0, b1 = _span(b)
    return a0 < b1 and b0 < a1


def _check_param_cuda(param, op: str, name: str = "param"):
    if param.dtype not in _FLOATS:
        raise ValueError(f"[{op}] {name} must have dtype float32 or float64 (updated in place), got {param.dtype}")
    if not param.flags.c_contiguous:
        raise ValueError(f"[{op}] {name} must be C-contiguous (it is updated in place; a copy would lose the "
                         f"update), got strides {param.strides} for shape {param.shape}")
    return param


def _prepare_cuda(op: str, param, grad, slots: dict, pname: str = "param", gname: str = "grad"):
    """The CUDA twin of _prepare: the same rules for CuPy arrays; returns (param, grad, slots tuple)."""
    param = _check_param_cuda(param, op, pname)
    inplace = [(pname, param)]
    for name, s in slots.items():
        if s is not None:
            device.check_out_cuda(s, param.shape, param.dtype, op, name)
            for other_name, other in inplace:
                if _overlaps(s, other):
                    raise ValueError(f"[{op}] {name} overlaps {other_name}; every in-place array needs its own memory")
            inplace.append((name, s))
    g = device.as_float_cuda(grad, gname, op, dtype=param.dtype)
    if g.shape != param.shape:
        raise ValueError(f"[{op}] {gname} has shape {g.shape}, expected the param's shape {param.shape}")
    if any(_overlaps(g, a) for _, a in inplace):
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
    if device.dispatch(op, param=param, grad=grad) == "cuda":
        param, g = _prepare_cuda(op, param, grad, {})
        c = _common(op, _num(lr, "lr", op), grad_scale, clip_value, l2, weight_decay)
        _cuda_run("sgd", [param], [g], [()], _rule("sgd", op, lr), c)
        return param
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
    if device.dispatch(op, param=param, velocity=velocity, grad=grad) == "cuda":
        param, g = _prepare_cuda(op, param, grad, _required(op, {"velocity": velocity}, "velocity"))
        c = _common(op, _num(lr, "lr", op), grad_scale, clip_value, l2, weight_decay)
        _cuda_run("momentum", [param], [g], [(velocity,)],
                  _rule("momentum", op, lr, momentum=momentum, nesterov=nesterov), c)
        return param
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
    if device.dispatch(op, param=param, accumulator=accumulator, grad=grad) == "cuda":
        param, g = _prepare_cuda(op, param, grad, _required(op, {"accumulator": accumulator}, "accumulator"))
        c = _common(op, _num(lr, "lr", op), grad_scale, clip_value, l2, weight_decay)
        _cuda_run("adagrad", [param], [g], [(accumulator,)],
                  _rule("adagrad", op, lr, epsilon=epsilon, epsilon_inside_sqrt=epsilon_inside_sqrt), c)
        return param
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
    slots = {"velocity": velocity, "momentum_slot": momentum_slot, "average_gradient": average_gradient}
    if device.dispatch(op, param=param, grad=grad, **slots) == "cuda":
        param, g = _prepare_cuda(op, param, grad, _required(op, slots, "velocity"))
        c = _common(op, _num(lr, "lr", op), grad_scale, clip_value, l2, weight_decay)
        _cuda_run("rmsprop", [param], [g], [(velocity, momentum_slot, average_gradient)],
                  _rule("rmsprop", op, lr, rho=rho, momentum=momentum, epsilon=epsilon,
                        epsilon_inside_sqrt=epsilon_inside_sqrt), c)
        return param
    param, g = _prepare(op, param, grad, slots)
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
    if device.dispatch(op, param=param, m=m, v=v, vhat=vhat, grad=grad) == "cuda":
        param, g = _prepare_cuda(op, param, grad, _required(op, {"m": m, "v": v, "vhat": vhat}, "m", "v"))
        c = _common(op, _num(lr, "lr", op), grad_scale, clip_value, l2, weight_decay)
        _cuda_run("adam", [param], [g], [(m, v, vhat)],
                  _rule("adam", op, lr, step=step, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon), c)
        return param
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
        # From i ~ 900 on, 0.5 * 0.96^i is below half an ulp of 1 and u_i is exactly beta_1, so
        # the rest of the product is one power: any step costs at most ~900 multiplications.
        u_product, i = 1.0, 1
        while i < step and u(i) != beta_1:
            u_product *= u(i)
            i += 1
        if i < step:
            u_product *= beta_1 ** (step - i)
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
    if device.dispatch(op, param=param, m=m, v=v, grad=grad) == "cuda":
        param, g = _prepare_cuda(op, param, grad, _required(op, {"m": m, "v": v}, "m", "v"))
        c = _common(op, _num(lr, "lr", op), grad_scale, clip_value, l2, weight_decay)
        _cuda_run("nadam", [param], [g], [(m, v)],
                  _rule("nadam", op, lr, step=step, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon), c)
        return param
    param, g = _prepare(op, param, grad, {"m": m, "v": v})
    lr, step, beta_1, beta_2, eps = _adam_hyper(op, lr, step, beta_1, beta_2, epsilon)
    cm, cg, vs = nadam_coefficients(lr, int(step), beta_1, beta_2)
    _pick(op, naive)(param, m, v, g, cm, cg, vs, beta_1, beta_2, eps,
                     **_common(op, lr, grad_scale, clip_value, l2, weight_decay))
    return param


def sum_squares(x, naive: bool = False) -> float:
    """sum(x**2) accumulated in float64 (the same result for any thread count)."""
    if device.is_cuda(x):
        from ..cuda import optim as cuda_optim
        return cuda_optim.sum_squares(device.as_float_cuda(x, "x", "sum_squares"))
    arr = as_float_array(x, "x", "sum_squares")
    return float(_pick("sum_squares", naive)(arr))


def global_norm(arrays) -> float:
    """sqrt of the sum of squares of all arrays together (NaN if any element is NaN)."""
    arrays = list(arrays)
    if arrays and device.dispatch("global_norm", **{f"arrays[{i}]": a for i, a in enumerate(arrays)}) == "cuda":
        from ..cuda import optim as cuda_optim
        arrs = [device.as_float_cuda(a, f"arrays[{i}]", "global_norm") for i, a in enumerate(arrays)]
        return math.sqrt(sum(cuda_optim.sums_of_squares(arrs).get().tolist()))
    return math.sqrt(sum(sum_squares(a) for a in arrays))


def clip_scale(norm: float, clip_norm: float) -> float:
    """Factor that brings a gradient of norm `norm` to at most `clip_norm` (Keras):
    clip_norm / max(norm, clip_norm); NaN when the norm is NaN, so NaN gradients stay NaN."""
    if not clip_norm > 0:
        raise ValueError(f"[clip_scale] clip_norm must be > 0, got {clip_norm}")
    if math.isnan(norm):
        return math.nan
    return clip_norm / max(norm, clip_norm)


# ---- shared by the CUDA branches and fused_update ------------------------------------------------

# Slot names of each rule, in the kernels' order, and the ones that must be given.
_SLOTS = {"sgd": (), "momentum": ("velocity",), "adagrad": ("accumulator",),
          "rmsprop": ("velocity", "momentum_slot", "average_gradient"), "adam": ("m", "v", "vhat"),
          "nadam": ("m", "v")}
_REQUIRED = {"sgd": (), "momentum": ("velocity",), "adagrad": ("accumulator",), "rmsprop": ("velocity",),
             "adam": ("m", "v"), "nadam": ("m", "v")}


def _required(op: str, slots: dict, *names) -> dict:
    if any(slots.get(k) is None for k in names):
        raise ValueError(f"[{op}] {' and '.join(names)} {'is' if len(names) == 1 else 'are'} required")
    return slots


def _rule(kind: str, op: str, lr, *, momentum=0.0, nesterov=False, rho=0.9, epsilon=1e-7,
          epsilon_inside_sqrt=True, step=None, beta_1=0.9, beta_2=0.999, u_product=None):
    """(kernel scalars in the CUDA kernel's order, the CPU binding's positional scalars, nesterov)."""
    lr = _num(lr, "lr", op)
    if kind == "sgd":
        return (lr,), (lr,), False
    if kind == "momentum":
        mu = _num(momentum, "momentum", op)
        return (lr, mu), (lr, mu, bool(nesterov)), bool(nesterov)
    if kind in ("adagrad", "rmsprop"):
        eps = _num(epsilon, "epsilon", op, lo=0.0)
        ein, eout = (eps, 0.0) if epsilon_inside_sqrt else (0.0, eps)
        if kind == "adagrad":
            return (lr, ein, eout), (lr, ein, eout), False
        rho = _num(rho, "rho", op)
        mu = _num(momentum, "momentum", op)
        return (lr, rho, 1.0 - rho, mu, ein, eout), (lr, rho, mu, ein, eout), False
    if kind in ("adam", "nadam"):
        lr, step, beta_1, beta_2, eps = _adam_hyper(op, lr, step, beta_1, beta_2, epsilon)
        if kind == "adam":
            lr_t = adam_step_size(lr, step, beta_1, beta_2)
            return (lr_t, 1.0 - beta_1, 1.0 - beta_2, eps), (lr_t, beta_1, beta_2, eps), False
        cm, cg, vs = nadam_coefficients(lr, step, beta_1, beta_2, u_product)
        return (cm, cg, vs, 1.0 - beta_1, 1.0 - beta_2, eps), (cm, cg, vs, beta_1, beta_2, eps), False
    raise ValueError(f"[{op}] kind must be one of {', '.join(_SLOTS)}, got {kind!r}")


def _cuda_run(kind: str, params, grads, slots, rule, common: dict, clipnorm=None, global_clipnorm=None) -> None:
    from ..cuda import optim as cuda_optim
    args, _, nesterov = rule
    slots3 = [tuple(s) + (None,) * (3 - len(s)) for s in slots]
    cuda_optim.update(kind, params, grads, slots3, args, grad_scale=common["grad_scale"],
                      clip_value=common["clip_value"], l2=common["l2"], decay=common["decay"], nesterov=nesterov,
                      clipnorm=clipnorm, global_clipnorm=global_clipnorm)


def _cuda_run_groups(kind: str, groups: dict, nparams: int, rule, common: dict, clipnorm=None,
                     global_clipnorm=None) -> None:
    from ..cuda import optim as cuda_optim
    cuda_optim.update_groups(kind, groups, nparams, rule[0], grad_scale=common["grad_scale"],
                             clip_value=common["clip_value"], l2=common["l2"], decay=common["decay"],
                             nesterov=rule[2], clipnorm=clipnorm, global_clipnorm=global_clipnorm)


# Address lists of fused CUDA updates whose arrays passed every check of fused_update (no overlap
# between in-place arrays, no gradient overlapping them): a later call with plain arrays at the
# same addresses, sizes and dtypes needs only the per-array attribute checks.
_CHECKED_SIZE = 64
_cuda_checked: dict = {}


def _cuda_checked_key(groups: dict):
    return tuple((dt, tuple(entries)) for dt, entries in groups.items())


def _cuda_checked_remember(groups: dict) -> None:
    key = _cuda_checked_key(groups)
    if key not in _cuda_checked:
        if len(_cuda_checked) >= _CHECKED_SIZE:
            del _cuda_checked[next(iter(_cuda_checked))]
        _cuda_checked[key] = True


def _cuda_checked_groups(params, grads, slot_dicts, names):
    """The table entries grouped by dtype (pydl.cuda.optim.group) when every array is a plain
    C-contiguous CuPy array of its param's float dtype and shape and the same address list already
    passed the full checks; None otherwise (the caller runs the full checks)."""
    from .. import cuda
    nd = cuda.cupy_module().ndarray
    groups: dict = {}
    n0, n1, n2 = (names + (None, None, None))[:3]
    for i, (p, g, d) in enumerate(zip(params, grads, slot_dicts)):
        if type(p) is not nd or type(g) is not nd:
            return None
        dt, shape = p.dtype, p.shape
        if dt not in _FLOATS or g.dtype != dt or g.shape != shape or not (p.flags.c_contiguous and
                                                                          g.flags.c_contiguous):
            return None
        ptrs = []
        for k in (n0, n1, n2):
            a = None if k is None else d.get(k)
            if a is None:
                ptrs.append(0)
                continue
            if type(a) is not nd or a.dtype != dt or a.shape != shape or not a.flags.c_contiguous:
                return None
            ptrs.append(a.data.ptr)
        n = p.size
        if n:
            groups.setdefault(dt, []).append((p.data.ptr, g.data.ptr, ptrs[0], ptrs[1], ptrs[2], n, i))
    if not groups or _cuda_checked_key(groups) not in _cuda_checked:
        return None
    return groups


def _fused_device(op: str, params, grads, slot_dicts) -> str:
    """device.dispatch over every array of a fused update (all-NumPy lists take a quick path)."""
    nd = np.ndarray
    if all(type(p) is nd for p in params) and all(type(g) is nd for g in grads) and \
            all(type(a) is nd for d in slot_dicts for a in d.values() if a is not None):
        return "cpu"
    arrays = {}
    for i, (p, g, d) in enumerate(zip(params, grads, slot_dicts)):
        arrays[f"params[{i}]"] = p
        arrays[f"grads[{i}]"] = g
        for k, a in d.items():
            arrays[f"slots[{i}][{k!r}]"] = a
    return device.dispatch(op, **arrays)


def fused_update(kind: str, params, grads, slots, lr, *, step=None, momentum=0.0, nesterov: bool = False, rho=0.9,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-7, epsilon_inside_sqrt: bool = True, u_product=None,
                 grad_scale=1.0, clip_value=None, clipnorm=None, global_clipnorm=None, l2=0.0,
                 weight_decay=0.0) -> None:
    """One optimizer step over a list of parameters, in place.

    kind: "sgd", "momentum", "adagrad", "rmsprop", "adam" or "nadam" -- the rule of the per-array
    op `<kind>_update`, with the same hyperparameters (`step` for adam / nadam, `u_product` =
    U_{t-1} for nadam as in nadam_coefficients). `slots[i]` is a dict of params[i]'s slot arrays
    named as that op's arguments ({"m", "v"[, "vhat"]}, {"velocity"}, {"accumulator"},
    {"velocity"[, "momentum_slot"][, "average_gradient"]}; None or {} for sgd).
    Gradient scaling: `grad_scale` for all, or `clipnorm` (each gradient by its own L2 norm) or
    `global_clipnorm` (all gradients by their joint norm), as clip_scale computes it.
    On the GPU every parameter of one dtype is updated by one kernel launch (the norms are
    computed on the device too); on the CPU the per-array kernels run in order. Results equal
    calling the per-array op on each parameter.
    """
    op = "fused_update"
    if kind not in _SLOTS:
        raise ValueError(f"[{op}] kind must be one of {', '.join(_SLOTS)}, got {kind!r}")
    params, grads = list(params), list(grads)
    slots = [None] * len(params) if slots is None and kind == "sgd" else list(slots)
    if not (len(params) == len(grads) == len(slots)):
        raise ValueError(f"[{op}] params, grads and slots must have one entry per parameter, got "
                         f"{len(params)}, {len(grads)} and {len(slots)}")
    names = _SLOTS[kind]
    slot_dicts = []
    known, required = frozenset(names), _REQUIRED[kind]
    for i, d in enumerate(slots):
        d = {} if d is None else d
        if not isinstance(d, dict):
            raise TypeError(f"[{op}] slots[{i}] must be a dict of slot arrays, got {type(d).__name__}")
        if not d.keys() <= known:
            extra = sorted(set(d) - known)
            raise ValueError(f"[{op}] slots[{i}] has unknown slot(s) {extra}; {kind} takes {list(names)}")
        for k in required:
            if d.get(k) is None:
                _required(op, d, *required)
        slot_dicts.append(d)
    if clipnorm is not None and global_clipnorm is not None:
        raise ValueError(f"[{op}] give clipnorm or global_clipnorm, not both")
    norm_clip = clipnorm if clipnorm is not None else global_clipnorm
    if norm_clip is not None:
        norm_clip = _num(norm_clip, "clipnorm" if clipnorm is not None else "global_clipnorm", op)
        if not norm_clip > 0:
            raise ValueError(f"[{op}] clipnorm and global_clipnorm must be > 0, got {norm_clip}")
        if _num(grad_scale, "grad_scale", op, finite=False) != 1.0:
            raise ValueError(f"[{op}] grad_scale cannot be combined with clipnorm / global_clipnorm")
    rule = _rule(kind, op, lr, momentum=momentum, nesterov=nesterov, rho=rho, epsilon=epsilon,
                 epsilon_inside_sqrt=epsilon_inside_sqrt, step=step, beta_1=beta_1, beta_2=beta_2,
                 u_product=u_product)
    common = _common(op, _num(lr, "lr", op), grad_scale, clip_value, l2, weight_decay)
    groups = _cuda_checked_groups(params, grads, slot_dicts, names) if params and device.is_cuda(params[0]) \
        else None
    if groups is not None:
        _cuda_run_groups(kind, groups, len(params), rule, common, clipnorm=clipnorm and norm_clip,
                         global_clipnorm=global_clipnorm and norm_clip)
        return None
    if _fused_device(op, params, grads, slot_dicts) == "cuda":
        ps, gs, ss = [], [], []
        for i, (p, g, d) in enumerate(zip(params, grads, slot_dicts)):
            p, g = _prepare_cuda(op, p, g, {f"slots[{i}][{k!r}]": d.get(k) for k in names},
                                 pname=f"params[{i}]", gname=f"grads[{i}]")
            ps.append(p)
            gs.append(g)
            ss.append(tuple(d.get(k) for k in names))
        spans = sorted((*_span(a), i) for i, a in enumerate([*ps, *(x for s in ss for x in s if x is not None)])
                       if a.size)
        for (a0, a1, _), (b0, b1, _) in zip(spans, spans[1:]):
            if b0 < a1:
                raise ValueError(f"[{op}] two of the arrays updated in place share memory (a parameter or slot "
                                 f"is listed twice?); each needs its own memory")
        if all(g is g0 for g, g0 in zip(gs, grads)):
            from ..cuda import optim as cuda_optim
            slots3 = [tuple(s) + (None,) * (3 - len(s)) for s in ss]
            groups = cuda_optim.group(ps, gs, slots3)
            _cuda_checked_remember(groups)
            _cuda_run_groups(kind, groups, len(params), rule, common, clipnorm=clipnorm and norm_clip,
                             global_clipnorm=global_clipnorm and norm_clip)
            return None
        _cuda_run(kind, ps, gs, ss, rule, common, clipnorm=clipnorm and norm_clip,
                  global_clipnorm=global_clipnorm and norm_clip)
        return None
    # Arrays that are plainly right (the optimizer's, every step) take a short check here and the
    # binding re-checks every array; anything else goes through _prepare's full checks. All of it
    # runs before the first update, so a refused call changes nothing (overlap between a param
    # and its slots alone is left to the binding, which refuses it before that param's update).
    nd = np.ndarray
    prepared = []
    for p, g, d in zip(params, grads, slot_dicts):
        if type(p) is nd and type(g) is nd and p.dtype in _FLOATS and g.dtype == p.dtype and g.shape == p.shape:
            pf, gf = p.flags, g.flags
            ok = pf.c_contiguous and pf.writeable and pf.aligned and gf.c_contiguous and gf.aligned
            for a in d.values():
                if ok and a is not None:
                    ok = type(a) is nd and a.dtype == p.dtype and a.shape == p.shape
                    if ok:
                        af = a.flags
                        ok = af.c_contiguous and af.writeable and af.aligned
            if ok:
                prepared.append((p, g.copy() if np.may_share_memory(g, p) else g))
                continue
        prepared.append(_prepare(op, p, g, d))
    if global_clipnorm is not None:
        scales = [clip_scale(global_norm([g for _, g in prepared]), norm_clip)] * len(prepared)
    elif clipnorm is not None:
        scales = [clip_scale(math.sqrt(sum_squares(g)), norm_clip) for _, g in prepared]
    else:
        scales = [common["grad_scale"]] * len(prepared)
    fn = _pick(f"{kind}_update", False)
    cpu_args = rule[1]
    clip, l2c, decay = common["clip_value"], common["l2"], common["decay"]
    if len(names) == 0:
        for (p, g), s in zip(prepared, scales):
            fn(p, g, *cpu_args, grad_scale=s, clip_value=clip, l2=l2c, decay=decay)
    elif len(names) == 1:
        k0 = names[0]
        for (p, g), d, s in zip(prepared, slot_dicts, scales):
            fn(p, d[k0], g, *cpu_args, grad_scale=s, clip_value=clip, l2=l2c, decay=decay)
    else:
        for (p, g), d, s in zip(prepared, slot_dicts, scales):
            fn(p, *[d.get(k) for k in names], g, *cpu_args, grad_scale=s, clip_value=clip, l2=l2c, decay=decay)
    return None


def _l1l2_args(w, l1, l2, op: str):
    """(w as a float array on its device, l1, l2), or ValueError / TypeError naming the argument."""
    for name, v in (("l1", l1), ("l2", l2)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"[{op}] {name} must be a finite number >= 0, got {v!r}")
    if device.dispatch(op, w=w) == "cuda":
        return device.as_float_cuda(w, "w", op), float(l1), float(l2)
    return as_float_array(w, "w", op), float(l1), float(l2)


def l1l2_penalty(w, l1: float = 0.0, l2: float = 0.0) -> float:
    """Keras's weight penalty l1 * sum|w| + l2 * sum(w^2), the sums in float64."""
    w, l1, l2 = _l1l2_args(w, l1, l2, "l1l2_penalty")
    if device.is_cuda(w):
        from ..cuda import optim as cuda_optim
        total = 0.0
        if l1:
            total += l1 * cuda_optim.sum_abs(w)
        if l2:
            total += l2 * cuda_optim.sum_squares(w)
        return total
    total = 0.0
    if l1:
        total += l1 * float(np.sum(np.abs(w), dtype=np.float64))
    if l2:
        total += l2 * float(np.sum(np.square(w, dtype=np.float64)))
    return total


def l1l2_gradient(w, l1: float = 0.0, l2: float = 0.0):
    """The penalty's gradient l1 * sign(w) + 2 * l2 * w (sign(0) = 0), a new array of w's dtype."""
    w, l1, l2 = _l1l2_args(w, l1, l2, "l1l2_gradient")
    if device.is_cuda(w):
        from ..cuda import optim as cuda_optim
        return cuda_optim.l1l2_gradient(w, l1, l2)
    g = np.zeros_like(w)
    if l1:
        g += l1 * np.sign(w)
    if l2:
        g += (2.0 * l2) * w
    return g


__all__ = ["sgd_update", "momentum_update", "adagrad_update", "rmsprop_update", "adam_update", "adam_step_size",
           "nadam_update", "nadam_coefficients", "nadam_schedule",
           "sum_squares", "global_norm", "clip_scale", "fused_update", "l1l2_penalty", "l1l2_gradient"]
