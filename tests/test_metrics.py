import numpy as np
import pytest

from pydl import metrics as M
from pydl import registry


# ----------------------------------------------------------------------------------------------
# independent references (float64, written from the definitions)
# ----------------------------------------------------------------------------------------------
def ref_confusion(t, p, k):
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def ref_prf_per_class(t, p, classes):
    out = []
    for c in classes:
        tp = sum(1 for a, b in zip(t, p) if a == c and b == c)
        fp = sum(1 for a, b in zip(t, p) if a != c and b == c)
        fn = sum(1 for a, b in zip(t, p) if a == c and b != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out.append((prec, rec, f1, tp + fn, tp, fp, fn))
    return out


# ----------------------------------------------------------------------------------------------
# accuracy family
# ----------------------------------------------------------------------------------------------
def test_accuracy_small_known_cases():
    # binary: thresholds 0.5; (N,) against (N, 1)
    t = np.array([1, 0, 1, 1])
    p = np.array([[0.9], [0.6], [0.4], [0.51]])
    assert M.binary_accuracy(t, p) == 0.5
    assert M.accuracy(t, p) == 0.5
    assert M.binary_accuracy(t, p, threshold=0.3) == 0.75
    # categorical: one-hot
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    onehot = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert M.categorical_accuracy(onehot, probs) == pytest.approx(2 / 3)
    assert M.accuracy(onehot, probs) == pytest.approx(2 / 3)
    # sparse: labels (N,) and (N, 1)
    labels = np.array([1, 2, 2])
    assert M.sparse_categorical_accuracy(labels, probs) == pytest.approx(2 / 3)
    assert M.accuracy(labels, probs) == pytest.approx(2 / 3)
    assert M.accuracy(labels[:, None], probs) == pytest.approx(2 / 3)
    assert isinstance(M.accuracy(labels, probs), float)


def test_accuracy_random_vs_formula(rng):
    probs = rng.random((200, 6))
    labels = rng.integers(0, 6, 200)
    expected = np.mean([labels[i] == int(np.argmax(probs[i])) for i in range(200)])
    assert M.accuracy(labels, probs) == pytest.approx(expected)
    assert M.accuracy(np.eye(6)[labels], probs) == pytest.approx(expected)
    s = rng.random(200)
    t = rng.integers(0, 2, 200)
    assert M.accuracy(t, s) == pytest.approx(np.mean([(si > 0.5) == ti for si, ti in zip(s, t)]))


def test_top_k_accuracy(rng):
    p = np.array([[0.1, 0.5, 0.3, 0.1], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    t = np.array([2, 3, 0])
    assert M.top_k_accuracy(t, p, k=1) == 0.0
    assert M.top_k_accuracy(t, p, k=2) == pytest.approx(1 / 3)
    assert M.top_k_accuracy(t, p, k=3) == pytest.approx(1 / 3)
    assert M.top_k_accuracy(t, p, k=4) == 1.0
    assert M.top_k_accuracy(np.eye(4)[t], p, k=2) == pytest.approx(1 / 3)
    # random vs sorting-based reference (continuous scores: no ties)
    scores = rng.random((100, 10))
    labels = rng.integers(0, 10, 100)
    for k in (1, 3, 5):
        topk = np.argsort(-scores, axis=1)[:, :k]
        expected = np.mean([labels[i] in topk[i] for i in range(100)])
        assert M.top_k_accuracy(labels, scores, k) == pytest.approx(expected)
    assert M.top_k_accuracy(labels, scores, 1) == pytest.approx(M.accuracy(labels, scores))
    with pytest.raises(ValueError, match="k must"):
        M.top_k_accuracy(labels, scores, 0)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        M.top_k_accuracy(labels + 1, scores, 2)


# ----------------------------------------------------------------------------------------------
# confusion matrix, precision, recall, F1
# ----------------------------------------------------------------------------------------------
def test_confusion_matrix_known_and_random(rng):
    t = np.array([0, 0, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 2, 0, 2])
    cm = M.confusion_matrix(t, p)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.dtype == np.int64
    assert M.confusion_matrix(t, p, num_classes=5).shape == (5, 5)
    for k in (2, 3, 7):
        tt = rng.integers(0, k, 300)
        pp = rng.integers(0, k, 300)
        np.testing.assert_array_equal(M.confusion_matrix(tt, pp, num_classes=k), ref_confusion(tt, pp, k))
        # from one-hot truth and probability predictions (argmax)
        probs = rng.random((300, k))
        np.testing.assert_array_equal(M.confusion_matrix(np.eye(k)[tt], probs),
                                      ref_confusion(tt, probs.argmax(1), k))
    # binary scores are thresholded
    np.testing.assert_array_equal(M.confusion_matrix([0, 1, 1], [0.2, 0.7, 0.4]), [[1, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        M.confusion_matrix(t, p, num_classes=2)
    with pytest.raises(ValueError, match="non-negative"):
        M.confusion_matrix([-1, 0], [0, 0])


def test_binary_precision_recall_f1_known():
    t = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    # tp=3, fp=1, fn=1
    assert M.precision(t, p) == pytest.approx(0.75)
    assert M.recall(t, p) == pytest.approx(0.75)
    assert M.f1_score(t, p) == pytest.approx(0.75)
    # probabilities are thresholded at 0.5
    probs = np.where(p == 1, 0.8, 0.3)
    assert M.precision(t, probs) == pytest.approx(0.75)
    # pos_label=0: tp=3 (idx 4,5,7), fp=1 (idx 1), fn=1 (idx 3)
    assert M.precision(t, p, pos_label=0) == pytest.approx(0.75)
    # nothing predicted positive -> 0, no warning, no NaN
    assert M.precision(t, np.zeros(8, int)) == 0.0
    assert M.f1_score(t, np.zeros(8, int)) == 0.0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_prf_averages_vs_reference(rng, k):
    t = rng.integers(0, k, 120)
    p = np.where(rng.random(120) < 0.6, t, rng.integers(0, k, 120))
    classes = sorted(set(t.tolist()) | set(p.tolist()))
    rows = ref_prf_per_class(t.tolist(), p.tolist(), classes)
    prec = np.array([r[0] for r in rows])
    rec = np.array([r[1] for r in rows])
    f1 = np.array([r[2] for r in rows])
    sup = np.array([r[3] for r in rows], dtype=float)
    assert M.precision(t, p, average="macro") == pytest.approx(prec.mean())
    assert M.recall(t, p, average="macro") == pytest.approx(rec.mean())
    assert M.f1_score(t, p, average="macro") == pytest.approx(f1.mean())
    assert M.f1_score(t, p, average="weighted") == pytest.approx(np.sum(f1 * sup) / sup.sum())
    assert M.precision(t, p, average="weighted") == pytest.approx(np.sum(prec * sup) / sup.sum())
    np.testing.assert_allclose(M.f1_score(t, p, average=None), f1)
    # micro over all classes of a single-label problem equals accuracy
    acc = np.mean(t == p)
    for fn in (M.precision, M.recall, M.f1_score):
        assert fn(t, p, average="micro") == pytest.approx(acc)
    # F1 is the harmonic mean of P and R per class
    np.testing.assert_allclose(M.f1_score(t, p, average=None),
                               np.where(prec + rec > 0, 2 * prec * rec / np.where(prec + rec > 0, prec + rec, 1), 0))
    # same answer from one-hot truth and probability predictions
    probs = np.eye(k)[p] * 0.9 + 0.01
    assert M.f1_score(np.eye(k)[t], probs, average="macro") == pytest.approx(f1.mean())
    if k == 2:
        tp, fp, fn = rows[1][4], rows[1][5], rows[1][6]
        assert M.f1_score(t, p) == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_prf_errors():
    t = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="binary"):
        M.precision(t, t, average="binary")
    with pytest.raises(ValueError, match="average"):
        M.recall(t, t, average="mean")
    assert M.precision(t, t) == 1.0  # auto -> macro for three classes
    with pytest.raises(ValueError, match="samples"):
        M.f1_score([0, 1], [0, 1, 1])


# ----------------------------------------------------------------------------------------------
# regression
# ----------------------------------------------------------------------------------------------
def test_regression_known_values():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])
    assert M.mean_squared_error(t, p) == pytest.approx((0.25 + 0 + 1 + 1) / 4)
    assert M.mean_absolute_error(t, p) == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert M.mean_absolute_percentage_error(t, p) == pytest.approx(100 * (0.5 / 1 + 0 + 1 / 3 + 1 / 4) / 4)
    # Keras eps floor on |y_true|
    assert M.mean_absolute_percentage_error([0.0], [1e-9]) == pytest.approx(100 * 1e-9 / 1e-7)
    assert M.cosine_similarity([[1.0, 0.0], [1.0, 1.0]], [[0.0, 2.0], [3.0, 3.0]]) == pytest.approx(0.5)
    assert M.cosine_similarity([[0.0, 0.0]], [[1.0, 2.0]]) == 0.0
    mean = t.mean()
    assert M.r2_score(t, p) == pytest.approx(1 - np.sum((t - p) ** 2) / np.sum((t - mean) ** 2))
    assert M.r2_score(t, t) == 1.0
    assert M.r2_score([2.0, 2.0], [2.0, 2.0]) == 1.0
    assert M.r2_score([2.0, 2.0], [1.0, 2.0]) == 0.0


def test_regression_random_vs_formulas(rng):
    t = rng.normal(size=(50, 3))
    p = t + 0.3 * rng.normal(size=(50, 3))
    assert M.mean_squared_error(t, p) == pytest.approx(((t - p) ** 2).sum() / t.size)
    assert M.mean_absolute_error(t, p) == pytest.approx(np.abs(t - p).sum() / t.size)
    cos = [np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(t, p)]
    assert M.cosine_similarity(t, p) == pytest.approx(np.mean(cos))
    per_col = [1 - np.sum((t[:, j] - p[:, j]) ** 2) / np.sum((t[:, j] - t[:, j].mean()) ** 2) for j in range(3)]
    assert M.r2_score(t, p) == pytest.approx(np.mean(per_col))
    # (N,) against (N, 1)
    assert M.mean_squared_error(t[:, 0], p[:, :1]) == pytest.approx(((t[:, 0] - p[:, 0]) ** 2).mean())


def test_metric_input_errors():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        M.mean_squared_error(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        M.mean_absolute_error(np.zeros(0), np.zeros(0))
    with pytest.raises(TypeError, match="numeric"):
        M.accuracy(np.array(["a", "b"]), np.zeros(2))
    with pytest.raises(ValueError, match="one-hot"):
        M.categorical_accuracy(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="cannot match"):
        M.accuracy(np.zeros((3, 5)), np.zeros((3, 4)))
    assert np.isnan(M.mean_squared_error([1.0, np.nan], [1.0, 2.0]))


# ----------------------------------------------------------------------------------------------
# name resolution
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,fn", [("accuracy", M.accuracy), ("acc", M.accuracy), ("mse", M.mean_squared_error),
                                     ("mae", M.mean_absolute_error), ("mape", M.mean_absolute_percentage_error),
                                     ("top_k_accuracy", M.top_k_accuracy), ("f1", M.f1_score),
                                     ("cosine_similarity", M.cosine_similarity), ("r2", M.r2_score)])
def test_get_names(name, fn):
    display, got = M.get(name)
    assert display == name and got is fn
    assert name in registry.metrics


def test_get_callables_and_errors():
    def my_metric(t, p):
        return 1.0

    assert M.get(my_metric) == ("my_metric", my_metric)
    with pytest.raises(ValueError, match="unknown metric 'nope'.*accuracy.*mse"):
        M.get("nope")
    with pytest.raises(ValueError, match="known names"):
        M.get(3)
    name, fn = M.get("acc")
    assert fn(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])) == 1.0
