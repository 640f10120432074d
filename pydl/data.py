"""Data preparation: splitting, scaling, one-hot encoding and mini-batching.

Everything works on NumPy arrays whose first axis indexes samples. Randomness comes from
`pydl.random.get_rng()` unless a seed or Generator is given, so `pydl.seed(s)` makes a whole
pipeline reproducible. No function here modifies its inputs.

`Sequence` (from pydl.data_adapters, also `pydl.utils.Sequence`) is the base class for a
sequence of batches that `fit` / `evaluate` / `predict` read, as Keras's.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import random as _random
from . import registry
from ._validate import as_float_array
from .data_adapters import Sequence

__all__ = ["train_val_test_split", "StandardScaler", "MinMaxScaler", "NotFittedError",
           "to_categorical", "pad_sequences", "batches", "register_scaler", "Sequence"]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _as_array(x, name: str, op: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"[{op}] {name} must be array-like, got {type(x).__name__}") from exc
    if arr.ndim == 0:
        raise ValueError(f"[{op}] {name} must have a sample axis, got a 0-d array")
    return arr


def _resolve_rng(rng, op: str) -> np.random.Generator:
    if rng is None:
        return _random.get_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"[{op}] rng/seed must be None, a non-negative int or a numpy Generator, got {rng!r}")


def _largest_remainder(total: int, ratios: np.ndarray) -> np.ndarray:
    """Integer counts summing to `total`, as close as possible to `total * ratios`."""
    exact = total * ratios
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def _stratified_counts(class_counts: np.ndarray, ratios: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(classes, splits) counts with row sums = class sizes and column sums = split sizes.

    Start from the floors of the proportional shares, then hand out the remaining samples to the
    cells with the largest fractional parts while both the class and the split still need some.
    """
    exact = class_counts[:, None] * ratios[None, :]
    table = np.floor(exact).astype(np.int64)
    row_need = class_counts - table.sum(axis=1)
    col_need = targets - table.sum(axis=0)
    frac = exact - table
    for flat in np.argsort(-frac, axis=None, kind="stable"):
        c, s = np.unravel_index(flat, frac.shape)
        if row_need[c] > 0 and col_need[s] > 0 and ratios[s] > 0:
            table[c, s] += 1
            row_need[c] -= 1
            col_need[s] -= 1
    # anything left (rare) goes wherever both margins still have room
    for c in range(table.shape[0]):
        while row_need[c] > 0:
            s = int(np.argmax(col_need))
            table[c, s] += 1
            row_need[c] -= 1
            col_need[s] -= 1
    return table


def _labels_for_strata(y: np.ndarray, op: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1)
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"[{op}] stratify needs y as labels (N,), (N, 1) or one-hot (N, C), "
                         f"got shape {tuple(y.shape)}")
    return y


# ----------------------------------------------------------------------------------------------
# splitting
# ----------------------------------------------------------------------------------------------
def train_val_test_split(x, y, ratios=(0.7, 0.1, 0.2), shuffle: bool = True, stratify: bool = False,
                         seed=None):
    """Split (x, y) into ((x_train, y_train), (x_val, y_val), (x_test, y_test)).

    `ratios` are the train/validation/test fractions; they must sum to 1 (the validation share may
    be 0, giving empty validation arrays). Split sizes are the largest-remainder rounding of
    `N * ratios`, so they always add up to N. With `stratify`, every split keeps the class
    proportions of `y` (labels, or one-hot rows). `seed` (int or Generator) fixes the shuffle;
    None draws from `pydl.random.get_rng()`. Without `shuffle` the splits are consecutive slices
    in the original order (with `stratify`, each split keeps the original relative order).
    """
    op = "train_val_test_split"
    x = _as_array(x, "x", op)
    y = _as_array(y, "y", op)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"[{op}] x and y must have the same number of samples, got x {tuple(x.shape)} "
                         f"and y {tuple(y.shape)}")
    try:
        r = np.asarray(ratios, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"[{op}] ratios must be three numbers, got {ratios!r}") from exc
    if r.shape != (3,) or not np.all(np.isfinite(r)):
        raise ValueError(f"[{op}] ratios must be three finite numbers (train, val, test), got {ratios!r}")
    if r[0] <= 0 or r[2] <= 0 or r[1] < 0:
        raise ValueError(f"[{op}] ratios must be positive (validation may be 0), got {ratios!r}")
    if abs(r.sum() - 1.0) > 1e-6:
        raise ValueError(f"[{op}] ratios must sum to 1, got {ratios!r} (sum {r.sum():.8g})")
    n = x.shape[0]
    targets = _largest_remainder(n, r)
    names = ("train", "validation", "test")
    for s in range(3):
        if r[s] > 0 and targets[s] == 0:
            raise ValueError(f"[{op}] {n} samples are too few for ratios {tuple(ratios)}: "
                             f"the {names[s]} split would be empty")
    gen = _resolve_rng(seed, op) if shuffle else None

    if stratify:
        labels = _labels_for_strata(y, op)
        try:
            classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        except TypeError as exc:  # object labels that do not order (None beside ints, ...)
            raise TypeError(f"[{op}] stratify needs labels that can be sorted, got dtype {labels.dtype}: "
                            f"{exc}") from None
        inverse = inverse.reshape(-1)
        table = _stratified_counts(counts, r, targets)
        parts: list[list[np.ndarray]] = [[], [], []]
        for c in range(len(classes)):
            members = np.flatnonzero(inverse == c)
            if shuffle:
                members = gen.permutation(members)
            start = 0
            for s in range(3):
                parts[s].append(members[start:start + table[c, s]])
                start += table[c, s]
        index = []
        for s in range(3):
            idx = np.concatenate(parts[s]) if parts[s] else np.empty(0, np.int64)
            idx = gen.permutation(idx) if shuffle else np.sort(idx)
            index.append(idx.astype(np.intp, copy=False))
    else:
        order = gen.permutation(n) if shuffle else np.arange(n)
        b1, b2 = targets[0], targets[0] + targets[1]
        index = [order[:b1], order[b1:b2], order[b2:]]
    return tuple((x[idx], y[idx]) for idx in index)


# ----------------------------------------------------------------------------------------------
# scalers
# ----------------------------------------------------------------------------------------------
class NotFittedError(ValueError, AttributeError):
    """A scaler was used before `fit`."""


def register_scaler(cls):
    """Make a scaler class loadable by name (a saved model stores its scalers by class name)."""
    return registry.scalers.register(cls)


class _Scaler:
    """Shared plumbing: statistics over axis 0, features are every axis after it."""

    _state_keys: tuple[str, ...] = ()
    _positive_keys: tuple[str, ...] = ()     # checked by set_state (beside: every value finite)
    _nonnegative_keys: tuple[str, ...] = ()

    def _name(self) -> str:
        return type(self).__name__

    def _check_input(self, x, method: str, fitting: bool) -> np.ndarray:
        op = f"{self._name()}.{method}"
        arr = as_float_array(x, "x", op)
        if arr.ndim < 1:
            raise ValueError(f"[{op}] x must have a sample axis, got a 0-d array")
        if not fitting:
            if not self.is_fitted:
                raise NotFittedError(f"[{op}] this {self._name()} is not fitted yet; call fit(x) first")
            if tuple(arr.shape[1:]) != self.feature_shape_:
                raise ValueError(f"[{op}] x has feature shape {tuple(arr.shape[1:])} (x {tuple(np.shape(x))}), "
                                 f"but the scaler was fitted on feature shape {self.feature_shape_}")
        else:
            if arr.shape[0] == 0:
                raise ValueError(f"[{op}] x has no samples, shape {tuple(np.shape(x))}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"[{op}] x contains NaN or Inf")
        return arr

    @property
    def is_fitted(self) -> bool:
        return all(getattr(self, k, None) is not None for k in self._state_keys)

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    # -- serialisation ---------------------------------------------------------------------
    def get_state(self) -> dict:
        if not self.is_fitted:
            raise NotFittedError(f"[{self._name()}.get_state] this {self._name()} is not fitted yet")
        state = {k: np.array(getattr(self, k), dtype=np.float64) for k in self._state_keys}
        state["n_samples_seen_"] = np.array(self.n_samples_seen_, dtype=np.int64)
        return state

    def set_state(self, state: dict) -> "_Scaler":
        op = f"{self._name()}.set_state"
        if not isinstance(state, dict):
            raise TypeError(f"[{op}] state must be a dict of arrays, got {type(state).__name__}")
        missing = [k for k in self._state_keys if k not in state]
        if missing:
            raise ValueError(f"[{op}] state lacks {missing}; expected keys {list(self._state_keys)}")
        arrays = {k: np.array(state[k], dtype=np.float64) for k in self._state_keys}
        shapes = {tuple(a.shape) for a in arrays.values()}
        if len(shapes) != 1:
            desc = ", ".join(f"{k} {tuple(a.shape)}" for k, a in arrays.items())
            raise ValueError(f"[{op}] state arrays must share one shape, got {desc}")
        for k, a in arrays.items():
            if not np.all(np.isfinite(a)):
                raise ValueError(f"[{op}] {k} must be finite, got {a.ravel()[~np.isfinite(a.ravel())][:3]} among "
                                 f"its values")
        for k in self._positive_keys:
            if not np.all(arrays[k] > 0):
                raise ValueError(f"[{op}] {k} must be > 0 (a fitted scaler divides or scales by it), got minimum "
                                 f"{arrays[k].min()}")
        for k in self._nonnegative_keys:
            if not np.all(arrays[k] >= 0):
                raise ValueError(f"[{op}] {k} must be >= 0, got minimum {arrays[k].min()}")
        seen = np.asarray(state.get("n_samples_seen_", 0))
        whole = seen.shape == () and (np.issubdtype(seen.dtype, np.integer) or (
            np.issubdtype(seen.dtype, np.floating) and np.isfinite(seen) and float(seen) == int(seen)))
        if not whole or int(seen) < 0:
            raise ValueError(f"[{op}] n_samples_seen_ must be a count >= 0, got {state.get('n_samples_seen_')!r}")
        for k, a in arrays.items():
            setattr(self, k, a)
        self.feature_shape_ = shapes.pop()
        self.n_features_in_ = int(np.prod(self.feature_shape_, dtype=np.int64))
        self.n_samples_seen_ = int(seen)
        return self

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self._name()}({args})"


@register_scaler
class StandardScaler(_Scaler):
    """z = (x - mean) / std per feature, statistics over axis 0 (population std, ddof=0).

    A constant feature gets scale 1, so it maps to 0 rather than NaN. float32 and float64 inputs
    keep their dtype; other numeric inputs become float32.
    """

    _state_keys = ("mean_", "var_", "scale_")
    _positive_keys = ("scale_",)
    _nonnegative_keys = ("var_",)

    def __init__(self, with_mean: bool = True, with_std: bool = True):
        self.with_mean = bool(with_mean)
        self.with_std = bool(with_std)
        self.mean_ = self.var_ = self.scale_ = None
        self.feature_shape_ = None
        self.n_features_in_ = None
        self.n_samples_seen_ = 0

    def fit(self, x, y=None) -> "StandardScaler":
        arr = self._check_input(x, "fit", fitting=True)
        a64 = arr.astype(np.float64, copy=False)
        mean = a64.mean(axis=0)
        var = a64.var(axis=0)
        constant = np.all(a64 == a64[:1], axis=0)
        var = np.where(constant, 0.0, var)
        scale = np.sqrt(var)
        scale = np.where(scale < 10 * np.finfo(np.float64).eps, 1.0, scale)
        self.mean_ = mean if self.with_mean else np.zeros_like(mean)
        self.var_ = var
        self.scale_ = scale if self.with_std else np.ones_like(scale)
        self.feature_shape_ = tuple(arr.shape[1:])
        self.n_features_in_ = int(np.prod(self.feature_shape_, dtype=np.int64))
        self.n_samples_seen_ = int(arr.shape[0])
        return self

    def transform(self, x):
        arr = self._check_input(x, "transform", fitting=False)
        out = (arr - self.mean_) / self.scale_
        return out.astype(arr.dtype, copy=False)

    def inverse_transform(self, x):
        arr = self._check_input(x, "inverse_transform", fitting=False)
        out = arr * self.scale_ + self.mean_
        return out.astype(arr.dtype, copy=False)

    def get_config(self) -> dict:
        return {"with_mean": self.with_mean, "with_std": self.with_std}


@register_scaler
class MinMaxScaler(_Scaler):
    """x' = (x - min) / (max - min) * (hi - lo) + lo per feature, statistics over axis 0.

    A constant feature (max == min) maps to `lo`. With `clip`, transformed values are clipped
    to `feature_range`.
    """

    _state_keys = ("data_min_", "data_max_", "data_range_", "scale_", "min_")
    _positive_keys = ("scale_",)
    _nonnegative_keys = ("data_range_",)

    def __init__(self, feature_range=(0, 1), clip: bool = False):
        try:
            lo, hi = (float(v) for v in feature_range)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"[MinMaxScaler] feature_range must be two numbers, got {feature_range!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ValueError(f"[MinMaxScaler] feature_range must satisfy min < max, got {feature_range!r}")
        self.feature_range = (lo, hi)
        self.clip = bool(clip)
        self.data_min_ = self.data_max_ = self.data_range_ = self.scale_ = self.min_ = None
        self.feature_shape_ = None
        self.n_features_in_ = None
        self.n_samples_seen_ = 0

    def fit(self, x, y=None) -> "MinMaxScaler":
        arr = self._check_input(x, "fit", fitting=True)
        a64 = arr.astype(np.float64, copy=False)
        lo, hi = self.feature_range
        dmin = a64.min(axis=0)
        dmax = a64.max(axis=0)
        drange = dmax - dmin
        safe = np.where(drange < 10 * np.finfo(np.float64).eps, 1.0, drange)
        self.data_min_, self.data_max_, self.data_range_ = dmin, dmax, drange
        self.scale_ = (hi - lo) / safe
        self.min_ = lo - dmin * self.scale_
        self.feature_shape_ = tuple(arr.shape[1:])
        self.n_features_in_ = int(np.prod(self.feature_shape_, dtype=np.int64))
        self.n_samples_seen_ = int(arr.shape[0])
        return self

    def transform(self, x):
        arr = self._check_input(x, "transform", fitting=False)
        out = arr * self.scale_ + self.min_
        if self.clip:
            out = np.clip(out, *self.feature_range)
        return out.astype(arr.dtype, copy=False)

    def inverse_transform(self, x):
        arr = self._check_input(x, "inverse_transform", fitting=False)
        out = (arr - self.min_) / self.scale_
        return out.astype(arr.dtype, copy=False)

    def get_config(self) -> dict:
        return {"feature_range": list(self.feature_range), "clip": self.clip}


# ----------------------------------------------------------------------------------------------
# encoding and batching
# ----------------------------------------------------------------------------------------------
def to_categorical(y, num_classes: int | None = None, dtype=np.float32) -> np.ndarray:
    """One-hot encode integer labels: shape y.shape + (num_classes,) (a trailing axis of 1 is
    dropped first, as Keras). `num_classes` defaults to max(y) + 1."""
    op = "to_categorical"
    arr = _as_array(y, "y", op) if np.ndim(y) > 0 else np.asarray(y)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"[{op}] y must hold integer labels, got dtype {arr.dtype}")
    if arr.ndim > 1 and arr.shape[-1] == 1:
        arr = arr.reshape(arr.shape[:-1])
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"[{op}] y must hold integer labels, got non-integer values")
    # the range is checked on the values as given (as Python numbers), before the cast to int64
    # could wrap a uint64 or a 1e30 into a different label
    lo, hi = (arr.min().item(), arr.max().item()) if arr.size else (0, 0)
    if num_classes is None:
        if arr.size == 0:
            raise ValueError(f"[{op}] cannot infer num_classes from an empty y; pass num_classes")
        if lo < 0 or hi >= 2**31:
            raise ValueError(f"[{op}] labels must lie in [0, 2^31) to infer num_classes, got min {lo} and max {hi}")
        num_classes = int(hi) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (numbers.Integral, np.integer)) \
            or num_classes <= 0:
        raise ValueError(f"[{op}] num_classes must be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)
    if arr.size and (lo < 0 or hi >= num_classes):
        raise ValueError(f"[{op}] labels must lie in [0, {num_classes}), got min {lo} and max {hi}")
    labels = arr.astype(np.int64)
    out = np.zeros(labels.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, labels[..., None], 1, axis=-1)
    return out


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Sequences of different lengths as one array (num_samples, maxlen) + sample_shape, as
    keras.utils.pad_sequences.

    maxlen: the length (default: the longest sequence). Longer sequences lose their first
    (truncating="pre") or last ("post") elements; shorter ones are filled with `value` before
    (padding="pre") or after ("post"). Every element has the shape of the first non-empty
    sequence's elements. dtype defaults to int32, so token ids stay integers (ids above 2**31
    need dtype="int64").
    """
    op = "pad_sequences"
    if not hasattr(sequences, "__len__"):
        raise ValueError(f"[{op}] sequences must be a list of sequences, got {type(sequences).__name__}")
    if padding not in ("pre", "post"):
        raise ValueError(f"[{op}] padding must be 'pre' or 'post', got {padding!r}")
    if truncating not in ("pre", "post"):
        raise ValueError(f"[{op}] truncating must be 'pre' or 'post', got {truncating!r}")
    lengths, sample_shape, found = [], (), False
    for i, s in enumerate(sequences):
        try:
            n = len(s)
        except TypeError:
            raise ValueError(f"[{op}] sequences must be a list of sequences; sequences[{i}] is "
                             f"{type(s).__name__} {s!r}") from None
        lengths.append(n)
        if not found and n:
            sample_shape, found = np.asarray(s).shape[1:], True
    if maxlen is None:
        maxlen = max(lengths) if lengths else 0
    elif isinstance(maxlen, bool) or not isinstance(maxlen, (numbers.Integral, np.integer)) or maxlen < 0:
        raise ValueError(f"[{op}] maxlen must be a non-negative int or None, got {maxlen!r}")
    maxlen = int(maxlen)
    dt = np.dtype(dtype)
    if isinstance(value, str) and dt != object and dt.kind != "U":
        raise ValueError(f"[{op}] dtype {dt} cannot hold the string padding value {value!r}; use dtype=object "
                         f"or a numeric value")
    out = np.full((len(lengths), maxlen) + sample_shape, value, dtype=dt)
    if maxlen == 0:
        return out
    for i, s in enumerate(sequences):
        if not lengths[i]:
            continue
        cut = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        cut = np.asarray(cut, dtype=dt)
        if cut.shape[1:] != sample_shape:
            raise ValueError(f"[{op}] sequences[{i}] has elements of shape {cut.shape[1:]}, expected {sample_shape} "
                             f"like the first non-empty sequence")
        if padding == "post":
            out[i, :len(cut)] = cut
        else:
            out[i, maxlen - len(cut):] = cut
    return out


def batches(x, y=None, batch_size: int = 32, shuffle: bool = True, rng=None):
    """Yield (x_batch, y_batch) mini-batches covering every sample once; the last batch may be
    smaller. `y` may be None (then y_batch is None). `rng` is a Generator or int seed; None uses
    `pydl.random.get_rng()` (drawn when the generator starts)."""
    op = "batches"
    x = _as_array(x, "x", op)
    if y is not None:
        y = _as_array(y, "y", op)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"[{op}] x and y must have the same number of samples, got x {tuple(x.shape)} "
                             f"and y {tuple(y.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (numbers.Integral, np.integer)) \
            or batch_size <= 0:
        raise ValueError(f"[{op}] batch_size must be a positive int, got {batch_size!r}")
    gen = _resolve_rng(rng, op) if shuffle else None
    return _batch_iter(x, y, int(batch_size), gen)


def _batch_iter(x, y, batch_size, gen):
    n = x.shape[0]
    order = gen.permutation(n) if gen is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            sl = slice(start, start + batch_size)
            yield x[sl], (y[sl] if y is not None else None)
        else:
            idx = order[start:start + batch_size]
            yield x[idx], (y[idx] if y is not None else None)
