"""Losses, as in Keras: each is a mean over the batch.

    loss = pydl.losses.get("sparse_categorical_crossentropy")
    value = loss(y_true, y_pred)                       # float
    value, grad = loss.forward_backward(y_true, y_pred)  # grad = d value / d y_pred

Formulas (N samples; the mean runs over the batch and, for mse/mae/bce, over outputs too):
  mse  mean((y - p)^2)            mae  mean(|y - p|)
  bce  -mean(y log p + (1-y) log(1-p))     (from_logits: p = sigmoid(z), computed stably)
  categorical CE  -1/N sum_i sum_c y_ic log p_ic   (from_logits: p = softmax(z))
  sparse CE       -1/N sum_i log p_i,label_i        (labels integer, shape (N,) or (N, 1))

Softmax + cross-entropy fusion: when a model's last layer is a `Softmax` (or a `Dense` with
activation="softmax") and its loss is categorical or sparse cross-entropy on probabilities,
`Sequential` computes the loss from the pre-softmax logits instead (`from_logits=True`):
the value is exact even where a probability underflows to 0, and the gradient with respect
to the logits is simply (p - y) / N, skipping the softmax Jacobian. The reported loss and
the predictions are the same as without fusion (up to rounding).

A crossentropy on probabilities (from_logits=False) that is fed values outside [0, 1], or (the
categorical ones) rows that do not sum to 1, issues one RuntimeWarning per loss object suggesting
a softmax / sigmoid output or from_logits=True; the check is a min / max (and row sum) of the batch.

CuPy arrays work throughout: the value and gradient come from the CUDA loss kernels
(pydl.ops.nn.loss), the target checks and the warning above run as small reductions on the
device, and per_sample / per_row return CuPy float64 arrays computed by the same kernels.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import registry
from .ops import device
from .ops import nn as _nn


class Loss:
    kind: str = ""
    takes_logits = False

    def __init__(self, name: str | None = None):
        self.name = name or _DEFAULT_NAMES.get(type(self).__name__, type(self).__name__)
        self._warned_not_probabilities = False

    def __call__(self, y_true, y_pred) -> float:
        return self.forward_backward(y_true, y_pred)[0]

    def check_probabilities(self, y_pred) -> None:
        """Warn (once per loss object) when a crossentropy on probabilities gets values that are not
        probabilities: outside [0, 1], or categorical rows whose sum is not 1 (within 1e-3)."""
        if getattr(self, "_warned_not_probabilities", False) or self.kind not in _PROBABILITY_KINDS \
                or self._from_logits():
            return
        xp = device.namespace(y_pred) if device.is_cuda(y_pred) else np
        p = y_pred if xp is not np else np.asarray(y_pred)
        if p.size == 0 or not np.issubdtype(p.dtype, np.floating):
            return
        lo, hi = float(p.min()), float(p.max())
        if lo != lo or hi != hi:  # NaN somewhere: judge the other values
            if bool(xp.isnan(p).all()):
                return
            lo, hi = float(xp.nanmin(p)), float(xp.nanmax(p))
        problem = None
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            problem = f"values outside [0, 1] (min {lo:.4g}, max {hi:.4g})"
        elif self.kind != "binary_crossentropy" and p.ndim >= 1 and p.shape[-1] > 1:
            sums = p.sum(axis=-1, dtype=np.float64)
            off = xp.abs(sums - 1.0)
            if float(xp.nanmax(off)) > 1e-3:
                problem = (f"rows that do not sum to 1 (sums between {float(xp.nanmin(sums)):.4g} and "
                           f"{float(xp.nanmax(sums)):.4g})")
        if problem is None:
            return
        self._warned_not_probabilities = True
        act = "sigmoid" if self.kind == "binary_crossentropy" else "softmax"
        warnings.warn(f"[{type(self).__name__}] y_pred has {problem}, but this loss has from_logits=False and "
                      f"expects probabilities: add a {act} activation to the output layer, or pass "
                      f"from_logits=True if the outputs are logits (this warning is shown once)",
                      RuntimeWarning, stacklevel=3)

    def forward_backward(self, y_true, y_pred):
        """(mean loss as float, d loss / d y_pred with y_pred's shape and dtype)."""
        self.check_targets(y_true, y_pred)
        self.check_probabilities(y_pred)
        value, grad = _nn.loss(self.kind, y_true, y_pred, from_logits=self._from_logits())
        return float(value), grad

    def _from_logits(self) -> bool:
        return False

    def check_targets(self, y_true, y_pred) -> None:
        """Raise ValueError for targets this loss cannot take (shape, range)."""
        yt, yp = np.shape(y_true), np.shape(y_pred)
        if yt != yp:
            raise ValueError(f"[{type(self).__name__}] y_true has shape {yt} but y_pred has shape {yp}")

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _LogitsLoss(Loss):
    def __init__(self, from_logits: bool = False, name: str | None = None):
        super().__init__(name)
        if not isinstance(from_logits, (bool, np.bool_)):
            raise ValueError(f"[{type(self).__name__}] from_logits must be a bool, got {from_logits!r}")
        self.from_logits = bool(from_logits)

    def _from_logits(self) -> bool:
        return self.from_logits

    def get_config(self):
        return {"from_logits": self.from_logits, **super().get_config()}


@registry.losses.register
class MeanSquaredError(Loss):
    kind = "mse"


@registry.losses.register
class MeanAbsoluteError(Loss):
    kind = "mae"


@registry.losses.register
class BinaryCrossentropy(_LogitsLoss):
    kind = "binary_crossentropy"

    def check_targets(self, y_true, y_pred):
        super().check_targets(y_true, y_pred)
        xp = device.namespace(y_true) if device.is_cuda(y_true) else np
        yt = y_true if xp is not np else np.asarray(y_true)
        if yt.size:
            lo, hi = xp.nanmin(yt), xp.nanmax(yt)
            if xp is not np:
                lo, hi = lo.item(), hi.item()
            if lo < 0 or hi > 1:
                raise ValueError(f"[{type(self).__name__}] y_true must lie in [0, 1], got values in [{lo}, {hi}]")


@registry.losses.register
class CategoricalCrossentropy(_LogitsLoss):
    kind = "categorical_crossentropy"


@registry.losses.register
class SparseCategoricalCrossentropy(_LogitsLoss):
    kind = "sparse_categorical_crossentropy"

    def check_targets(self, y_true, y_pred):
        check_sparse_labels(y_true, np.shape(y_pred), type(self).__name__)


def check_sparse_labels(y_true, pred_shape, who: str) -> None:
    """Integer class labels of shape pred_shape[:-1] (or that with a trailing 1: (N,) or (N, 1) for
    predictions (N, C); (N, T) or (N, T, 1) for per-step predictions (N, T, C)), each in [0, C).
    Sizes given as None in pred_shape match any size. CuPy labels are checked on the device."""
    xp = device.namespace(y_true) if device.is_cuda(y_true) else np
    yt = y_true if xp is not np else np.asarray(y_true)
    pred_shape = tuple(pred_shape)
    if len(pred_shape) < 2:
        raise ValueError(f"[{who}] y_pred must be (N, classes) or (N, ..., classes), got shape {pred_shape}")
    rows, c = pred_shape[:-1], pred_shape[-1]

    def fits(shape):
        return len(shape) == len(rows) and all(r is None or r == g for r, g in zip(rows, shape))

    if not (fits(yt.shape) or (yt.ndim == len(rows) + 1 and yt.shape[-1] == 1 and fits(yt.shape[:-1]))):
        want = ", ".join("N" if d is None else str(d) for d in rows)
        raise ValueError(f"[{who}] labels must have shape ({want}) or ({want}, 1) for predictions "
                         f"{tuple('N' if d is None else d for d in pred_shape)}, got {yt.shape}")
    if yt.size == 0:
        return
    if not np.issubdtype(yt.dtype, np.integer):
        if not np.issubdtype(yt.dtype, np.floating) or not bool(xp.all(xp.isfinite(yt))) or \
                bool(xp.any(yt != xp.round(yt))):
            raise ValueError(f"[{who}] labels must be integer class indices, got dtype {yt.dtype}")
    lo, hi = yt.min(), yt.max()
    if xp is not np:
        lo, hi = lo.item(), hi.item()
    if lo < 0 or (c is not None and hi >= c):
        raise ValueError(f"[{who}] labels must lie in [0, {c}) for {c} classes, got values in [{lo}, {hi}]")


def per_sample(kind: str, y_true, y_pred, from_logits: bool = False) -> np.ndarray:
    """The loss of each sample, shape (N,), float64, by the formulas of the kernels (and Keras):
    the element (mse, mae, bce) or row (crossentropies) losses averaged over every axis after
    the batch axis, so that mean(per_sample(...)) is the kernel's value. Crossentropies on
    probabilities normalise each row and clip to [eps, 1 - eps] in y_pred's precision.
    Used for sample weights: the weighted loss is sum(w * l) / N (Keras's sum_over_batch_size).
    CuPy arrays: the values come from the CUDA loss kernels, as a CuPy float64 array."""
    if device.is_cuda(y_pred) or device.is_cuda(y_true):
        return _cuda_values(kind, y_true, y_pred, from_logits).reshape(y_pred.shape[0], -1).mean(axis=1)
    p = np.asarray(y_pred)
    if p.ndim < 2:  # one value per sample: the element losses are the sample losses
        return _elementwise(kind, y_true, p, from_logits).reshape(p.shape[0], -1).mean(axis=1)
    return per_row(kind, y_true, p, from_logits).reshape(p.shape[0], -1).mean(axis=1)


def per_row(kind: str, y_true, y_pred, from_logits: bool = False) -> np.ndarray:
    """The loss of each row of y_pred (every position but the last axis: shape y_pred.shape[:-1]),
    float64, as Keras's losses give them before reduction: crossentropies per class row, mse /
    mae / bce averaged over the last axis. mean(per_row(...)) is the kernel's value. Used for
    masks: a mask (N, T) on an output (N, T, K) weighs these (N, T) values.
    CuPy arrays: the values come from the CUDA loss kernels, as a CuPy float64 array."""
    if device.is_cuda(y_pred) or device.is_cuda(y_true):
        if y_pred.ndim < 2:
            raise ValueError(f"[losses.per_row] y_pred must have a last (feature) axis, got shape "
                             f"{tuple(y_pred.shape)}")
        v = _cuda_values(kind, y_true, y_pred, from_logits)
        return v if kind in ("sparse_categorical_crossentropy", "categorical_crossentropy") else v.mean(axis=-1)
    p = np.asarray(y_pred)
    if p.ndim < 2:
        raise ValueError(f"[losses.per_row] y_pred must have a last (feature) axis, got shape {p.shape}")
    if kind in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        return _elementwise(kind, y_true, p, from_logits)
    return _elementwise(kind, y_true, p, from_logits).mean(axis=-1)


def _cuda_values(kind, y_true, y_pred, from_logits):
    """Element losses (mse, mae, bce) or row losses (crossentropies) of CuPy arrays, float64, from
    the kernels of pydl.cuda.losses (the gradient they also write is dropped)."""
    if kind not in _nn.LOSSES:
        raise ValueError(f"[losses.per_sample] unknown loss kind {kind!r}")
    device.dispatch(kind, y_true=y_true, y_pred=y_pred)
    return _nn._loss_cuda(kind, y_true, y_pred, bool(from_logits), values=True)[2]


def _elementwise(kind, y_true, p, from_logits):
    """Element losses (mse, mae, bce: y_pred's shape) or row losses (crossentropies: shape
    y_pred.shape[:-1]), float64."""
    dt = p.dtype if p.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    lo, hi = float(dt.type(1e-7)), float(dt.type(1) - dt.type(1e-7))
    p = p.astype(np.float64)

    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    def log_probs(q):
        q = q / q.sum(axis=-1, keepdims=True)
        return np.log(np.clip(q, lo, hi))

    if kind == "sparse_categorical_crossentropy":
        check_sparse_labels(y_true, p.shape, "losses.per_sample")  # no wrap-around of -1 to the last class
        labels = np.asarray(y_true).reshape(p.shape[:-1]).astype(np.int64)
        lp = log_softmax(p) if from_logits else log_probs(p)
        return -np.take_along_axis(lp, labels[..., None], axis=-1)[..., 0]
    t = np.asarray(y_true, dtype=np.float64)
    # the same shape, or one that differs by a trailing 1 ((N,) targets for (N, 1) predictions);
    # never a reshape of another layout that happens to hold as many values
    if t.shape != p.shape and t.shape + (1,) != p.shape and t.shape != p.shape + (1,):
        raise ValueError(f"[losses.per_sample] y_true {t.shape} does not match y_pred {p.shape}")
    t = t.reshape(p.shape)
    if kind == "binary_crossentropy" and t.size and not (np.nanmin(t) >= 0 and np.nanmax(t) <= 1):
        raise ValueError(f"[losses.per_sample] binary_crossentropy targets must lie in [0, 1], got values in "
                         f"[{np.nanmin(t)}, {np.nanmax(t)}]")
    if kind == "mse":
        return (p - t) ** 2
    if kind == "mae":
        return np.abs(p - t)
    if kind == "binary_crossentropy":
        if from_logits:
            return np.maximum(p, 0.0) - p * t + np.log1p(np.exp(-np.abs(p)))
        q = np.clip(p, lo, hi)
        return -(t * np.log(q) + (1.0 - t) * np.log(1.0 - q))
    if kind == "categorical_crossentropy":
        return -(t * (log_softmax(p) if from_logits else log_probs(p))).sum(axis=-1)
    raise ValueError(f"[losses.per_sample] unknown loss kind {kind!r}")


_PROBABILITY_KINDS = ("binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy")

_DEFAULT_NAMES = {
    "MeanSquaredError": "mean_squared_error", "MeanAbsoluteError": "mean_absolute_error",
    "BinaryCrossentropy": "binary_crossentropy", "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
}

_ALIASES = {
    "mse": "MeanSquaredError", "mean_squared_error": "MeanSquaredError",
    "mae": "MeanAbsoluteError", "mean_absolute_error": "MeanAbsoluteError",
    "bce": "BinaryCrossentropy", "binary_crossentropy": "BinaryCrossentropy",
    "cce": "CategoricalCrossentropy", "categorical_crossentropy": "CategoricalCrossentropy",
    "scce": "SparseCategoricalCrossentropy", "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
}


# Keras's per-sample loss functions: (N,) float64 losses, the mean over every axis after the batch axis.
def mean_squared_error(y_true, y_pred) -> np.ndarray:
    """Per-sample mean((y_true - y_pred)^2) over the axes after the first."""
    return per_sample("mse", y_true, y_pred)


def mean_absolute_error(y_true, y_pred) -> np.ndarray:
    """Per-sample mean(|y_true - y_pred|) over the axes after the first."""
    return per_sample("mae", y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits: bool = False) -> np.ndarray:
    """Per-sample binary crossentropy (probabilities clipped to [1e-7, 1 - 1e-7], as Keras)."""
    return per_sample("binary_crossentropy", y_true, y_pred, from_logits)


def categorical_crossentropy(y_true, y_pred, from_logits: bool = False) -> np.ndarray:
    """Per-sample categorical crossentropy over the last axis (rows normalised, then clipped)."""
    return per_sample("categorical_crossentropy", y_true, y_pred, from_logits)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False) -> np.ndarray:
    """Per-sample crossentropy of integer labels (N,) or (N, 1) against (N, C) predictions."""
    check_sparse_labels(y_true, np.shape(y_pred), "sparse_categorical_crossentropy")
    return per_sample("sparse_categorical_crossentropy", y_true, y_pred, from_logits)


def serialize(loss: Loss) -> dict:
    return registry.serialize(loss)


def get(identifier) -> Loss:
    """A Loss from a name ("mse", "sparse_categorical_crossentropy", "MeanSquaredError"), an
    instance, or a {"class_name", "config"} dict (resolved through pydl.registry only)."""
    return registry.resolve(registry.losses, identifier, Loss, _ALIASES, "losses.get")


__all__ = ["Loss", "MeanSquaredError", "MeanAbsoluteError", "BinaryCrossentropy", "CategoricalCrossentropy",
           "SparseCategoricalCrossentropy", "get", "serialize", "check_sparse_labels", "per_sample", "per_row",
           "mean_squared_error", "mean_absolute_error", "binary_crossentropy", "categorical_crossentropy",
           "sparse_categorical_crossentropy"]
