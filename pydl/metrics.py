"""Evaluation metrics; each returns a host Python float (or an int matrix).

The accuracy family (accuracy, binary / categorical / sparse_categorical_accuracy) and the MSE /
MAE metrics reduce on the arrays' device through `pydl.ops.metrics` (NumPy or the CUDA kernels
for CuPy arrays; y_true and y_pred on one device). The other metrics copy CuPy inputs to the
host. Stateful metrics keep their states on the host (Python floats / NumPy arrays).

Classification inputs may be labels, one-hot rows or predicted probabilities:
  * y_true: integer labels (N,) or (N, 1), or one-hot / probability rows (N, C) -> argmax.
  * y_pred: probabilities or scores (N, C) with C > 1 -> argmax; a single column (N,) / (N, 1) of
    scores -> `score > threshold` (binary); integer-valued arrays are taken as labels directly.
Regression metrics average over every element. `get(name)` resolves the strings accepted by
`Model.compile(metrics=[...])`.

Stateful metrics (Keras's metric objects) accumulate over batches: `update_state(y_true, y_pred,
sample_weight=None)`, `result()`, `reset_state()`; `m(y_true, y_pred)` updates and returns the
result. AUC (ROC or PR, Keras's 200 thresholds and interpolation), Precision, Recall,
TruePositives, FalsePositives, TrueNegatives, FalseNegatives. In compile they are reset at the
start of each epoch and of each evaluation, and the logged value is the result over everything
seen since (not an average of per-batch values). The names "auc", "precision" and "recall"
("AUC", "Precision", ...) give a fresh object with the default arguments, as in Keras 3.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import registry
from .ops import metrics as _ops_metrics

EPSILON = 1e-7

__all__ = ["BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy", "TopKCategoricalAccuracy",
           "MeanSquaredError", "MeanAbsoluteError", "Metric", "AUC", "Precision", "Recall", "TruePositives", "FalsePositives", "TrueNegatives",
           "FalseNegatives", "accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
           "top_k_accuracy", "precision", "recall", "f1_score", "confusion_matrix",
           "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
           "cosine_similarity", "r2_score", "get"]


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------
def _arr(x, name: str, op: str) -> np.ndarray:
    """A validated host array (CuPy inputs are copied to the host for the metrics computed here)."""
    return _ops_metrics.as_array(x, name, op, host=True)


def _pair(y_true, y_pred, op: str, host: bool = True):
    return _ops_metrics.pair(y_true, y_pred, op, host)


_same_shape = _ops_metrics.same_shape


def _is_integral(a: np.ndarray) -> bool:
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        return True
    return bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))


def _is_column(a: np.ndarray) -> bool:
    return a.ndim == 1 or a.shape[-1] == 1


def _true_labels(t: np.ndarray, op: str) -> np.ndarray:
    if not _is_column(t):
        return np.argmax(t, axis=-1).reshape(-1)
    t = t.reshape(-1)
    if not _is_integral(t):
        raise ValueError(f"[{op}] y_true must hold integer class labels or one-hot rows, got non-integer values")
    return t.astype(np.int64)


def _pred_labels(p: np.ndarray, threshold: float) -> np.ndarray:
    if not _is_column(p):
        return np.argmax(p, axis=-1).reshape(-1)
    p = p.reshape(-1)
    if _is_integral(p):
        return p.astype(np.int64)
    return (p > threshold).astype(np.int64)


def _labels(y_true, y_pred, op: str, threshold: float = 0.5):
    t, p = _pair(y_true, y_pred, op)
    lt = _true_labels(t, op)
    lp = _pred_labels(p, threshold)
    if lt.shape != lp.shape:
        raise ValueError(f"[{op}] y_true {tuple(t.shape)} and y_pred {tuple(p.shape)} hold different "
                         f"numbers of samples ({lt.size} vs {lp.size})")
    n_cols = max(t.shape[-1] if not _is_column(t) else 0, p.shape[-1] if not _is_column(p) else 0)
    return lt, lp, n_cols


# ----------------------------------------------------------------------------------------------
# accuracy family
# ----------------------------------------------------------------------------------------------
binary_accuracy = _ops_metrics.binary_accuracy
categorical_accuracy = _ops_metrics.categorical_accuracy
sparse_categorical_accuracy = _ops_metrics.sparse_categorical_accuracy


def accuracy(y_true, y_pred, threshold: float = 0.5) -> float:
    """Accuracy that picks its kind from the shapes, as Keras' "accuracy" string does.

    y_pred with one column (or 1-D): binary, thresholded at `threshold`; y_true with the shape of
    y_pred: categorical (one-hot); otherwise sparse (integer labels).
    """
    op = "accuracy"
    t, p = _pair(y_true, y_pred, op, host=False)
    if _is_column(p):
        return binary_accuracy(t, p, threshold)
    if t.shape == p.shape:
        return categorical_accuracy(t, p)
    if t.shape == p.shape[:-1] or t.shape == p.shape[:-1] + (1,):
        return sparse_categorical_accuracy(t, p)
    raise ValueError(f"[{op}] cannot match y_true {tuple(t.shape)} with y_pred {tuple(p.shape)}: expected "
                     "one-hot y_true of the same shape or labels of shape y_pred.shape[:-1]")


def top_k_accuracy(y_true, y_pred, k: int = 5) -> float:
    """Fraction of rows whose true class is among the k highest scores.

    A class counts as in the top k when fewer than k classes score strictly higher (ties at the
    boundary count as hits). y_true: labels (N,)/(N, 1) or one-hot (N, C).
    """
    op = "top_k_accuracy"
    if isinstance(k, bool) or not isinstance(k, (numbers.Integral, np.integer)) or k <= 0:
        raise ValueError(f"[{op}] k must be a positive int, got {k!r}")
    t, p = _pair(y_true, y_pred, op)
    if p.ndim != 2:
        raise ValueError(f"[{op}] y_pred must be (N, C) scores, got shape {tuple(p.shape)}")
    labels = _true_labels(t, op)
    if labels.shape[0] != p.shape[0]:
        raise ValueError(f"[{op}] y_true {tuple(t.shape)} and y_pred {tuple(p.shape)} hold different "
                         "numbers of samples")
    if labels.min() < 0 or labels.max() >= p.shape[1]:
        raise ValueError(f"[{op}] labels must lie in [0, {p.shape[1]}), got min {labels.min()} "
                         f"and max {labels.max()}")
    true_score = p[np.arange(p.shape[0]), labels]
    higher = np.sum(p > true_score[:, None], axis=1)
    return float(np.mean(higher < k))


# ----------------------------------------------------------------------------------------------
# confusion matrix, precision, recall, F1
# ----------------------------------------------------------------------------------------------
def confusion_matrix(y_true, y_pred, num_classes: int | None = None, threshold: float = 0.5) -> np.ndarray:
    """cm[i, j] = number of samples with true class i predicted as class j (int64)."""
    op = "confusion_matrix"
    lt, lp, n_cols = _labels(y_true, y_pred, op, threshold)
    if min(lt.min(), lp.min()) < 0:
        raise ValueError(f"[{op}] labels must be non-negative, got min {min(lt.min(), lp.min())}")
    top = int(max(lt.max(), lp.max())) + 1
    if num_classes is None:
        num_classes = max(top, n_cols)
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (numbers.Integral, np.integer)) \
            or num_classes <= 0:
        raise ValueError(f"[{op}] num_classes must be a positive int, got {num_classes!r}")
    elif top > num_classes:
        raise ValueError(f"[{op}] labels must lie in [0, {num_classes}), got max {top - 1}")
    num_classes = int(num_classes)
    flat = np.bincount(lt * num_classes + lp, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


_AVERAGES = ("auto", "binary", "macro", "micro", "weighted", None)


def _prf(y_true, y_pred, average, pos_label, threshold, op):
    if average not in _AVERAGES:
        raise ValueError(f"[{op}] average must be one of {list(_AVERAGES)}, got {average!r}")
    lt, lp, n_cols = _labels(y_true, y_pred, op, threshold)
    classes = np.union1d(lt, lp)
    if average == "auto":
        average = "binary" if n_cols <= 2 and np.all(np.isin(classes, (0, 1))) else "macro"
    if average == "binary":
        if len(classes) > 2 or (len(classes) == 2 and pos_label not in classes):
            raise ValueError(f"[{op}] average='binary' needs two classes including pos_label={pos_label}, "
                             f"got labels {classes.tolist()}; use average='macro', 'micro' or 'weighted'")
        tp = np.sum((lt == pos_label) & (lp == pos_label))
        fp = np.sum((lt != pos_label) & (lp == pos_label))
        fn = np.sum((lt == pos_label) & (lp != pos_label))
        return np.array([tp]), np.array([fp]), np.array([fn]), np.array([tp + fn]), "binary"
    tp = np.array([np.sum((lt == c) & (lp == c)) for c in classes])
    fp = np.array([np.sum((lt != c) & (lp == c)) for c in classes])
    fn = np.array([np.sum((lt == c) & (lp != c)) for c in classes])
    return tp, fp, fn, tp + fn, average


def _ratio(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _average(per_class, support, average):
    if average is None:
        return per_class
    if average == "weighted":
        total = support.sum()
        return float(np.sum(per_class * support) / total) if total > 0 else 0.0
    return float(np.mean(per_class))


def _score(kind, y_true, y_pred, average, pos_label, threshold):
    op = {"p": "precision", "r": "recall", "f": "f1_score"}[kind]
    tp, fp, fn, support, average = _prf(y_true, y_pred, average, pos_label, threshold, op)
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    p = _ratio(tp, tp + fp)
    r = _ratio(tp, tp + fn)
    value = {"p": p, "r": r, "f": _ratio(2 * p * r, p + r)}[kind]
    if average in ("binary", "micro"):
        return float(value[0])
    return _average(value, support, average)


def precision(y_true, y_pred, average="auto", pos_label: int = 1, threshold: float = 0.5):
    """TP / (TP + FP), 0 when nothing is predicted positive.

    average: "binary" (class `pos_label`), "macro" (unweighted mean over the classes present in
    y_true or y_pred), "micro" (from summed counts), "weighted" (mean weighted by true counts),
    None (per-class array) or "auto" (binary for 0/1 problems, macro otherwise).
    """
    return _score("p", y_true, y_pred, average, pos_label, threshold)


def recall(y_true, y_pred, average="auto", pos_label: int = 1, threshold: float = 0.5):
    """TP / (TP + FN), 0 when the class never occurs; `average` as in `precision`."""
    return _score("r", y_true, y_pred, average, pos_label, threshold)


def f1_score(y_true, y_pred, average="auto", pos_label: int = 1, threshold: float = 0.5):
    """2 P R / (P + R) per class (0 when P + R = 0), then averaged as in `precision`."""
    return _score("f", y_true, y_pred, average, pos_label, threshold)


# ----------------------------------------------------------------------------------------------
# regression
# ----------------------------------------------------------------------------------------------
def _regression_pair(y_true, y_pred, op):
    t, p = _same_shape(*_pair(y_true, y_pred, op), op)
    return t.astype(np.float64), p.astype(np.float64)


mean_squared_error = _ops_metrics.mean_squared_error
mean_absolute_error = _ops_metrics.mean_absolute_error


def mean_absolute_percentage_error(y_true, y_pred) -> float:
    """100 * mean(|(y_true - y_pred) / max(|y_true|, 1e-7)|), as Keras."""
    t, p = _regression_pair(y_true, y_pred, "mean_absolute_percentage_error")
    return float(100.0 * np.mean(np.abs((t - p) / np.maximum(np.abs(t), EPSILON))))


def cosine_similarity(y_true, y_pred, axis: int = -1) -> float:
    """mean over rows of <t, p> / (|t| |p|) along `axis`; a zero vector gives 0 (norms are
    floored at 1e-6, i.e. squared norms at 1e-12, as Keras' l2_normalize)."""
    t, p = _regression_pair(y_true, y_pred, "cosine_similarity")
    tn = t / np.sqrt(np.maximum(np.sum(t * t, axis=axis, keepdims=True), 1e-12))
    pn = p / np.sqrt(np.maximum(np.sum(p * p, axis=axis, keepdims=True), 1e-12))
    return float(np.mean(np.sum(tn * pn, axis=axis)))


def r2_score(y_true, y_pred) -> float:
    """1 - SS_res / SS_tot per output column, averaged over columns (scikit-learn's uniform
    average). A constant target scores 1 if predicted exactly, else 0."""
    op = "r2_score"
    t, p = _regression_pair(y_true, y_pred, op)
    if t.shape[0] < 2:
        raise ValueError(f"[{op}] needs at least 2 samples, got shape {tuple(t.shape)}")
    t2 = t.reshape(t.shape[0], -1)
    p2 = p.reshape(p.shape[0], -1)
    ss_res = np.sum((t2 - p2) ** 2, axis=0)
    ss_tot = np.sum((t2 - t2.mean(axis=0)) ** 2, axis=0)
    score = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                     np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(score))


# ----------------------------------------------------------------------------------------------
# stateful metrics
# ----------------------------------------------------------------------------------------------
_NEG_INF = -np.inf


class Metric:
    """Base of the stateful metrics: update_state / result / reset_state; calling the object
    updates it with one batch and returns the result."""

    def __init__(self, name=None):
        self.name = name if name is not None else _snake(type(self).__name__)
        before = set(vars(self))
        self.reset_state()
        self._state_keys = tuple(k for k in vars(self) if k not in before)

    def state_arrays(self) -> list:
        """Copies of the accumulators reset_state creates, as float64 arrays. Every accumulator is
        a sum over the batches seen, so the state of several shards of data is the element-wise
        sum of their states (pydl.distributed reduces metrics this way)."""
        return [np.array(getattr(self, k), dtype=np.float64, ndmin=1) for k in self._state_keys]

    def set_state_arrays(self, arrays) -> None:
        """Overwrite the accumulators with arrays shaped as state_arrays() gives them."""
        for k, a in zip(self._state_keys, arrays):
            cur = getattr(self, k)
            if isinstance(cur, np.ndarray):
                cur[...] = np.reshape(a, cur.shape)
            else:
                setattr(self, k, type(cur)(np.reshape(a, -1)[0]))

    def reset_state(self) -> None:
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        self.update_state(y_true, y_pred, sample_weight)
        return self.result()

    def get_config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _thresholds_arg(thresholds, default, who):
    if thresholds is None:
        return np.array([default], np.float64), True
    single = isinstance(thresholds, numbers.Real) and not isinstance(thresholds, bool)
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t.ndim != 1 or t.size == 0 or not np.all((t >= 0) & (t <= 1)):
        raise ValueError(f"[{who}] thresholds must be numbers in [0, 1], got {thresholds!r}")
    return t, single


def _confusion_inputs(y_true, y_pred, sample_weight, class_id, top_k, who):
    """(labels as bool, predictions as float64, weights) flattened, after top_k and class_id."""
    t, p = _pair(y_true, y_pred, who)
    t, p = _same_shape(t, p, who)
    p = p.astype(np.float64, copy=False)
    if top_k is not None:
        if p.ndim < 2 or p.shape[-1] < 1:
            raise ValueError(f"[{who}] top_k needs y_pred with a class axis, got shape {tuple(p.shape)}")
        k = min(int(top_k), p.shape[-1])
        # keep the k largest of each row (the first k in index order among ties), the rest -inf
        order = np.argsort(-p, axis=-1, kind="stable")[..., :k]
        keep = np.zeros(p.shape, bool)
        np.put_along_axis(keep, order, True, axis=-1)
        p = np.where(keep, p, _NEG_INF)
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim > t.ndim or w.shape != t.shape[:w.ndim]:
            if not (w.ndim == t.ndim and all(a in (1, b) for a, b in zip(w.shape, t.shape))):
                raise ValueError(f"[{who}] sample_weight has shape {tuple(w.shape)}, which does not match "
                                 f"y_true {tuple(t.shape)}")
        w = w.reshape(w.shape + (1,) * (t.ndim - w.ndim))
        w = np.broadcast_to(w, t.shape)
    if class_id is not None:
        if t.ndim < 2 or not (0 <= class_id < t.shape[-1]):
            raise ValueError(f"[{who}] class_id={class_id} needs y of shape (N, C) with C > {class_id}, got "
                             f"{tuple(t.shape)}")
        t, p = t[..., class_id], p[..., class_id]
        if w is not None:
            w = w[..., class_id]
    w = np.ones(t.size) if w is None else w.reshape(-1)
    return t.reshape(-1) != 0, p.reshape(-1), w


def _counts_above(labels, preds, weights, thresholds):
    """(tp, fp, tn, fn) per threshold with "predicted positive" meaning pred > threshold (NaN never
    counts as positive); thresholds sorted ascending."""
    idx = np.searchsorted(thresholds, preds, side="left")  # how many thresholds lie strictly below pred
    idx = np.where(np.isnan(preds), 0, idx)
    T = thresholds.size
    pos_hist = np.bincount(idx[labels], weights=weights[labels], minlength=T + 1)
    neg_hist = np.bincount(idx[~labels], weights=weights[~labels], minlength=T + 1)
    # pred > thresholds[j]  <=>  idx > j
    tp = np.cumsum(pos_hist[::-1])[::-1][1:]
    fp = np.cumsum(neg_hist[::-1])[::-1][1:]
    return tp, fp, neg_hist.sum() - fp, pos_hist.sum() - tp


def _div(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.where(b != 0, a / np.where(b != 0, b, 1.0), 0.0)


def _zero_confusion(metric) -> None:
    """The confusion counts at each of the metric's thresholds, zeroed (its state)."""
    n = metric.thresholds.size
    metric.true_positives = np.zeros(n)
    metric.false_positives = np.zeros(n)
    metric.true_negatives = np.zeros(n)
    metric.false_negatives = np.zeros(n)


class _ConfusionMetric(Metric):
    """Weighted confusion counts at one or more thresholds (pred > threshold is a positive)."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None):
        who = type(self).__name__
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
            raise ValueError(f"[{who}] top_k must be a positive int or None, got {top_k!r}")
        if class_id is not None and (isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer))
                                     or class_id < 0):
            raise ValueError(f"[{who}] class_id must be an int >= 0 or None, got {class_id!r}")
        self.top_k = None if top_k is None else int(top_k)
        self.class_id = None if class_id is None else int(class_id)
        default = 0.5 if top_k is None else _NEG_INF
        if thresholds is None:
            self.thresholds, self._single = np.array([default]), True
        else:
            self.thresholds, self._single = _thresholds_arg(thresholds, default, who)
        self._order = np.argsort(self.thresholds, kind="stable")
        super().__init__(name)

    def reset_state(self) -> None:
        _zero_confusion(self)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        labels, preds, w = _confusion_inputs(y_true, y_pred, sample_weight, self.class_id, self.top_k,
                                             type(self).__name__)
        ts = self.thresholds[self._order]
        tp, fp, tn, fn = _counts_above(labels, preds, w, ts)
        inv = np.empty_like(self._order)
        inv[self._order] = np.arange(self._order.size)
        self.true_positives += tp[inv]
        self.false_positives += fp[inv]
        self.true_negatives += tn[inv]
        self.false_negatives += fn[inv]

    def _out(self, values):
        return float(values[0]) if self._single else np.asarray(values, np.float64)

    def get_config(self) -> dict:
        th = None if self.top_k is not None and self._single else (
            float(self.thresholds[0]) if self._single else self.thresholds.tolist())
        return {"name": self.name, "thresholds": th, "top_k": self.top_k, "class_id": self.class_id}


class Precision(_ConfusionMetric):
    """TP / (TP + FP) over everything seen (0 when nothing was predicted positive). thresholds: one
    number (default 0.5; with top_k, every top-k entry is positive) or a list (the result is then
    an array); top_k: only the k highest scores of each row can be positive; class_id: one column."""

    def result(self):
        return self._out(_div(self.true_positives, self.true_positives + self.false_positives))


class Recall(_ConfusionMetric):
    """TP / (TP + FN) over everything seen (0 when there was no positive label); arguments as
    Precision."""

    def result(self):
        return self._out(_div(self.true_positives, self.true_positives + self.false_negatives))


class _CountMetric(_ConfusionMetric):
    _field = ""

    def __init__(self, thresholds=None, name=None):
        super().__init__(thresholds=thresholds, name=name)

    def result(self):
        return self._out(getattr(self, self._field))

    def get_config(self) -> dict:
        return {"name": self.name, "thresholds": float(self.thresholds[0]) if self._single
                else self.thresholds.tolist()}


class TruePositives(_CountMetric):
    """The (weighted) number of positives predicted positive (pred > threshold, default 0.5)."""
    _field = "true_positives"


class FalsePositives(_CountMetric):
    """The (weighted) number of negatives predicted positive."""
    _field = "false_positives"


class TrueNegatives(_CountMetric):
    """The (weighted) number of negatives predicted negative."""
    _field = "true_negatives"


class FalseNegatives(_CountMetric):
    """The (weighted) number of positives predicted negative."""
    _field = "false_negatives"


# AUC keeps confusion counts per threshold and compares every prediction with each: beyond a
# million thresholds (Keras's default is 200) an update would take minutes.
_MAX_THRESHOLDS = 10**6


class AUC(Metric):
    """Area under the ROC or PR curve from confusion counts at num_thresholds thresholds (Keras):
    thresholds 0 - 1e-7, i / (num_thresholds - 1) for i = 1 .. num_thresholds - 2, 1 + 1e-7 (or the
    given `thresholds`, with those two end points added); a prediction is positive when it is
    greater than the threshold.

    summation_method: "interpolation" (ROC: the trapezoid rule; PR: Davis & Goadrich's
    interpolation of precision, as Keras), "minoring" / "majoring" (left / right Riemann sums with
    the smaller / larger height). curve: "ROC" or "PR". Predictions are probabilities (from_logits:
    apply a sigmoid first). y_true entries are positive where nonzero; all entries of y are pooled.
    """

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name=None,
                 thresholds=None, from_logits=False):
        if thresholds is not None:
            t, _ = _thresholds_arg(thresholds, 0.5, "AUC")
            inner = np.sort(t)
            self.num_thresholds = inner.size + 2
        else:
            if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) \
                    or not 1 < num_thresholds <= _MAX_THRESHOLDS:
                raise ValueError(f"[AUC] num_thresholds must be an int in [2, {_MAX_THRESHOLDS}], got "
                                 f"{num_thresholds!r}")
            self.num_thresholds = int(num_thresholds)
            n = self.num_thresholds
            inner = np.arange(1, n - 1, dtype=np.float64) / (n - 1)
        self._explicit = thresholds is not None
        self.thresholds = np.concatenate([[0.0 - EPSILON], inner, [1.0 + EPSILON]])
        curve = str(curve).upper() if isinstance(curve, str) else curve
        if curve not in ("ROC", "PR"):
            raise ValueError(f"[AUC] curve must be 'ROC' or 'PR', got {curve!r}")
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(f"[AUC] summation_method must be 'interpolation', 'minoring' or 'majoring', got "
                             f"{summation_method!r}")
        self.curve, self.summation_method = curve, summation_method
        self.from_logits = bool(from_logits)
        super().__init__(name)

    def reset_state(self) -> None:
        _zero_confusion(self)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        labels, preds, w = _confusion_inputs(y_true, y_pred, sample_weight, None, None, "AUC")
        if self.from_logits:
            with np.errstate(over="ignore"):
                preds = 1.0 / (1.0 + np.exp(-preds))
        tp, fp, tn, fn = _counts_above(labels, preds, w, self.thresholds)
        self.true_positives += tp
        self.false_positives += fp
        self.true_negatives += tn
        self.false_negatives += fn

    def _interpolate_pr(self) -> float:
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _div(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, _div(p[:-1], np.maximum(p[1:], 0)), 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = np.where(ratio > 0, np.log(np.where(ratio > 0, ratio, 1.0)), 0.0)
        return float(np.sum(_div(slope * (dtp + intercept * log_ratio), np.maximum(tp[1:] + fn[1:], 0))))

    def result(self) -> float:
        tp, fp, tn, fn = self.true_positives, self.false_positives, self.true_negatives, self.false_negatives
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolate_pr()
        recall = _div(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _div(fp, fp + tn), recall
        else:
            x, y = recall, _div(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return float(np.sum((x[:-1] - x[1:]) * heights))

    def get_config(self) -> dict:
        return {"name": self.name, "num_thresholds": self.num_thresholds, "curve": self.curve,
                "summation_method": self.summation_method,
                "thresholds": self.thresholds[1:-1].tolist() if self._explicit else None,
                "from_logits": self.from_logits}


class _MeanOf(Metric):
    """The sample-weighted mean of a per-batch metric function over every batch seen (each batch
    weighs by its number of samples)."""
    _fn = None

    def __init__(self, name=None, **kwargs):
        self._kwargs = kwargs
        super().__init__(name)

    def reset_state(self) -> None:
        self.total, self.count = 0.0, 0.0

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if sample_weight is not None:
            raise ValueError(f"[{type(self).__name__}] sample_weight is not supported by this metric")
        n = float(np.shape(y_pred)[0]) if np.ndim(y_pred) else 1.0
        self.total += type(self)._fn(y_true, y_pred, **self._kwargs) * n
        self.count += n

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0

    def get_config(self) -> dict:
        return {"name": self.name, **self._kwargs}


class BinaryAccuracy(_MeanOf):
    """Stateful binary_accuracy (threshold 0.5)."""
    _fn = staticmethod(binary_accuracy)

    def __init__(self, name=None, threshold=0.5):
        super().__init__(name, threshold=threshold)


class CategoricalAccuracy(_MeanOf):
    """Stateful categorical_accuracy (argmax of one-hot labels against argmax of predictions)."""
    _fn = staticmethod(categorical_accuracy)


class SparseCategoricalAccuracy(_MeanOf):
    """Stateful sparse_categorical_accuracy (integer labels against argmax of predictions)."""
    _fn = staticmethod(sparse_categorical_accuracy)


class TopKCategoricalAccuracy(_MeanOf):
    """Stateful top_k_accuracy (k = 5)."""
    _fn = staticmethod(top_k_accuracy)

    def __init__(self, k=5, name=None):
        super().__init__(name, k=k)


class MeanSquaredError(_MeanOf):
    """Stateful mean_squared_error."""
    _fn = staticmethod(mean_squared_error)


class MeanAbsoluteError(_MeanOf):
    """Stateful mean_absolute_error."""
    _fn = staticmethod(mean_absolute_error)


# ----------------------------------------------------------------------------------------------
# name resolution for compile(metrics=[...])
# ----------------------------------------------------------------------------------------------
_NAMED = {
    "accuracy": accuracy, "acc": accuracy,
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "top_k_accuracy": top_k_accuracy,
    "f1": f1_score, "f1_score": f1_score,
    "mse": mean_squared_error, "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error, "mean_absolute_error": mean_absolute_error,
    "mape": mean_absolute_percentage_error,
    "mean_absolute_percentage_error": mean_absolute_percentage_error,
    "cosine_similarity": cosine_similarity,
    "r2": r2_score, "r2_score": r2_score,
}
# Names that give a fresh stateful metric object (Keras 3 resolves class names and their snake case).
_STATEFUL = {"auc": AUC, "AUC": AUC, "precision": Precision, "Precision": Precision, "recall": Recall,
             "Recall": Recall, "true_positives": TruePositives, "TruePositives": TruePositives,
             "false_positives": FalsePositives, "FalsePositives": FalsePositives,
             "true_negatives": TrueNegatives, "TrueNegatives": TrueNegatives,
             "false_negatives": FalseNegatives, "FalseNegatives": FalseNegatives}
for _name, _fn in {**_NAMED, **_STATEFUL}.items():
    registry.metrics.register(_fn, name=_name)
del _name, _fn


def is_stateful(metric) -> bool:
    """Whether a compile() metric accumulates over batches (update_state / result / reset_state)."""
    return isinstance(metric, Metric)


def get(identifier):
    """Resolve a metric for compile(): a registered name -> (name, fn) with the name as given
    (Keras logs "acc" for "acc"); a callable -> (its __name__, fn); a (name, callable) pair as
    is. The returned fn(y_true, y_pred) gives a float."""
    if isinstance(identifier, str):
        item = registry.metrics.get(identifier)
        if isinstance(item, type) and issubclass(item, Metric):
            obj = item()
            return obj.name, obj
        return identifier, item
    if isinstance(identifier, Metric):
        return identifier.name, identifier
    if isinstance(identifier, tuple) and len(identifier) == 2 and isinstance(identifier[0], str) \
            and callable(identifier[1]):
        return identifier
    if callable(identifier):
        return getattr(identifier, "__name__", type(identifier).__name__), identifier
    known = ", ".join(registry.metrics.names())
    raise ValueError(f"[metrics.get] a metric must be a name or a callable, got {identifier!r}; known names: {known}")
