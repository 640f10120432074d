"""Stateful metrics (AUC, Precision, Recall, TruePositives, ...): against float64 references written
here with plain loops (Keras's thresholds, trapezoid / Riemann sums, Davis-Goadrich PR
interpolation), the exact rank AUC, sklearn where importable, accumulation over batches, sample
weights, top_k / class_id, and their use in compile / fit / evaluate / save."""
from __future__ import annotations

import math

import numpy as np
import pytest

import pydl
from pydl import metrics as M
from pydl.layers import Dense


def keras_thresholds(n=200):
    return [-1e-7] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1 + 1e-7]


def ref_counts(y, p, w, thresholds):
    tp, fp, tn, fn = [], [], [], []
    for t in thresholds:
        a = b = c = d = 0.0
        for yi, pi, wi in zip(y, p, w):
            pos_pred = pi > t
            if yi and pos_pred:
                a += wi
            elif not yi and pos_pred:
                b += wi
            elif not yi:
                c += wi
            else:
                d += wi
        tp.append(a), fp.append(b), tn.append(c), fn.append(d)
    return [np.array(v) for v in (tp, fp, tn, fn)]


def div(a, b):
    return a / b if b != 0 else 0.0


def ref_auc(y, p, w=None, n=200, curve="ROC", method="interpolation"):
    w = np.ones(len(y)) if w is None else w
    tp, fp, tn, fn = ref_counts(y, p, w, keras_thresholds(n))
    total = 0.0
    if curve == "PR" and method == "interpolation":
        for i in range(n - 1):
            dtp = tp[i] - tp[i + 1]
            pa, pb = tp[i] + fp[i], tp[i + 1] + fp[i + 1]
            slope = div(dtp, max(pa - pb, 0.0))
            intercept = tp[i + 1] - slope * pb
            ratio = pa / pb if (pa > 0 and pb > 0) else 1.0
            total += div(slope * (dtp + intercept * math.log(ratio)), max(tp[i + 1] + fn[i + 1], 0.0))
        return total
    rec = [div(tp[i], tp[i] + fn[i]) for i in range(n)]
    if curve == "ROC":
        xs, ys = [div(fp[i], fp[i] + tn[i]) for i in range(n)], rec
    else:
        xs, ys = rec, [div(tp[i], tp[i] + fp[i]) for i in range(n)]
    for i in range(n - 1):
        h = {"interpolation": (ys[i] + ys[i + 1]) / 2, "minoring": min(ys[i], ys[i + 1]),
             "majoring": max(ys[i], ys[i + 1])}[method]
        total += (xs[i] - xs[i + 1]) * h
    return total


def rank_auc(y, p):
    pos, neg = p[y == 1], p[y == 0]
    return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.4).astype(np.float32)
    p = np.clip(0.3 * y + 0.35 + 0.25 * rng.standard_normal(300), 0, 1).astype(np.float32)
    return y, p


@pytest.mark.parametrize("curve", ["ROC", "PR"])
@pytest.mark.parametrize("method", ["interpolation", "minoring", "majoring"])
def test_auc_matches_loop_reference(data, curve, method):
    y, p = data
    m = M.AUC(curve=curve, summation_method=method)
    m.update_state(y, p)
    assert m.result() == pytest.approx(ref_auc(y.astype(bool), p.astype(np.float64), curve=curve, method=method),
                                       rel=1e-12, abs=1e-12)


def test_auc_batches_and_weights_accumulate(data):
    y, p = data
    w = np.random.default_rng(1).uniform(0, 2, y.size)
    m = M.AUC(num_thresholds=50)
    for s in range(0, y.size, 64):
        m.update_state(y[s:s + 64], p[s:s + 64, None], sample_weight=w[s:s + 64])
    assert m.result() == pytest.approx(ref_auc(y.astype(bool), p.astype(np.float64), w, n=50), rel=1e-12)
    m.reset_state()
    assert m.result() == 0.0
    assert M.AUC()(y, p) == pytest.approx(ref_auc(y.astype(bool), p.astype(np.float64)), rel=1e-12)


def test_auc_near_exact_rank_auc_with_many_thresholds(data):
    y, p = data
    # predictions on a grid of 1/1000: with 1001 thresholds every distinct value has its own bucket
    pg = np.round(p * 1000) / 1000
    m = M.AUC(num_thresholds=100001)
    m.update_state(y, pg)
    assert m.result() == pytest.approx(rank_auc(y, pg), abs=1e-4)
    assert M.AUC()(y, pg) == pytest.approx(rank_auc(y, pg), abs=0.01)


def test_auc_against_sklearn(data):
    skm = pytest.importorskip("sklearn.metrics")
    y, p = data
    m = M.AUC(num_thresholds=10001)
    m.update_state(y, p)
    assert m.result() == pytest.approx(skm.roc_auc_score(y, p), abs=2e-3)


def test_auc_edge_cases():
    m = M.AUC()
    m.update_state([1, 1], [0.2, 0.9])  # no negatives: fpr is 0 everywhere
    assert m.result() == 0.0
    m = M.AUC()
    m.update_state([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.5])
    assert m.result() == pytest.approx(0.75)
    m = M.AUC(from_logits=True)
    m.update_state([0, 1, 1, 0], [-3.0, 2.0, -0.2, 0.1])
    assert m.result() == pytest.approx(0.75)
    m = M.AUC()
    m.update_state([0, 1, 1], [0.3, np.nan, 0.9])  # NaN is never above a threshold
    assert np.isfinite(m.result())
    with pytest.raises(ValueError, match="curve"):
        M.AUC(curve="XY")
    with pytest.raises(ValueError, match="num_thresholds"):
        M.AUC(num_thresholds=1)
    with pytest.raises(ValueError, match="same shape"):
        M.AUC().update_state([0, 1, 1], [0.1, 0.2])


def test_precision_recall_counts(data):
    y, p = data
    w = np.random.default_rng(2).uniform(0, 1, y.size)
    tp, fp, tn, fn = (v[0] for v in ref_counts(y.astype(bool), p.astype(np.float64), w, [0.5]))
    for cls, want in [(M.Precision, tp / (tp + fp)), (M.Recall, tp / (tp + fn)), (M.TruePositives, tp),
                      (M.FalsePositives, fp), (M.TrueNegatives, tn), (M.FalseNegatives, fn)]:
        m = cls()
        m.update_state(y[:100], p[:100], sample_weight=w[:100])
        m.update_state(y[100:], p[100:], sample_weight=w[100:])
        assert m.result() == pytest.approx(want, rel=1e-12), cls
    pr = M.Precision(thresholds=[0.3, 0.5, 0.7])
    pr.update_state(y, p)
    got = pr.result()
    assert got.shape == (3,)
    for t, g in zip([0.3, 0.5, 0.7], got):
        a, b, _, _ = (v[0] for v in ref_counts(y.astype(bool), p.astype(np.float64), np.ones(y.size), [t]))
        assert g == pytest.approx(a / (a + b), rel=1e-12)


def test_precision_recall_against_sklearn(data):
    skm = pytest.importorskip("sklearn.metrics")
    y, p = data
    assert M.Precision()(y, p) == pytest.approx(skm.precision_score(y, p > 0.5))
    assert M.Recall()(y, p) == pytest.approx(skm.recall_score(y, p > 0.5))


def test_precision_zero_when_nothing_predicted():
    assert M.Precision()([1, 0], [0.1, 0.2]) == 0.0
    assert M.Recall()([0, 0], [0.9, 0.2]) == 0.0


def test_top_k_and_class_id():
    y = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    p = np.array([[0.1, 0.5, 0.3, 0.1], [0.2, 0.3, 0.4, 0.1], [0.6, 0.1, 0.2, 0.1]], np.float32)
    # top 1: row 0 picks class 1 (wrong), row 1 class 2 (wrong), row 2 class 0 (right)
    assert M.Precision(top_k=1)(y, p) == pytest.approx(1 / 3)
    assert M.Recall(top_k=1)(y, p) == pytest.approx(1 / 3)
    # top 2: row 0 {1, 2} hits, row 1 {2, 1} hits, row 2 {0, 2} hits: 3 of 6 picks are right
    assert M.Precision(top_k=2)(y, p) == pytest.approx(3 / 6)
    assert M.Recall(top_k=2)(y, p) == pytest.approx(1.0)
    # class 2 alone at threshold 0.5: nothing predicted positive
    assert M.Recall(class_id=2)(y, p) == 0.0
    assert M.Recall(class_id=2, thresholds=0.25)(y, p) == pytest.approx(1.0)
    assert M.Precision(class_id=2, thresholds=0.25)(y, p) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="class_id"):
        M.Precision(class_id=7)(y, p)
    with pytest.raises(ValueError, match="top_k"):
        M.Precision(top_k=0)


def test_names_and_get():
    assert M.get("AUC")[0] == "auc" and isinstance(M.get("AUC")[1], M.AUC)
    assert M.get("auc")[1] is not M.get("auc")[1]  # a fresh object per resolution
    assert isinstance(M.get("precision")[1], M.Precision) and isinstance(M.get("Recall")[1], M.Recall)
    assert isinstance(M.get("true_positives")[1], M.TruePositives)
    obj = M.AUC(curve="PR", name="pr_auc")
    assert M.get(obj) == ("pr_auc", obj)


def _binary_problem():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 5)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.standard_normal(256) > 0).astype(np.float32)
    return x, y


def test_compile_fit_evaluate_report_stateful_values():
    x, y = _binary_problem()
    pydl.seed(0)
    model = pydl.Sequential([Dense(8, activation="relu", input_shape=(5,)), Dense(1, activation="sigmoid")])
    pr_auc = M.AUC(curve="PR", name="pr_auc")
    model.compile(optimizer="adam", loss="binary_crossentropy",
                  metrics=["AUC", "precision", "recall", pr_auc, "accuracy"])
    hist = model.fit(x, y, epochs=3, batch_size=32, verbose=0, validation_data=(x, y))
    for k in ("auc", "precision", "recall", "pr_auc", "val_auc", "val_precision", "val_recall", "val_pr_auc"):
        assert len(hist.history[k]) == 3
    logs = model.evaluate(x, y, batch_size=50, return_dict=True)
    p = model.predict(x, verbose=0).reshape(-1)
    assert logs["auc"] == pytest.approx(ref_auc(y.astype(bool), p.astype(np.float64)), rel=1e-9)
    assert logs["pr_auc"] == pytest.approx(ref_auc(y.astype(bool), p.astype(np.float64), curve="PR"), rel=1e-9)
    tp, fp, _, fn = (v[0] for v in ref_counts(y.astype(bool), p.astype(np.float64), np.ones(y.size), [0.5]))
    assert logs["precision"] == pytest.approx(tp / (tp + fp), rel=1e-9)
    assert logs["recall"] == pytest.approx(tp / (tp + fn), rel=1e-9)
    # the last epoch's validation values are the same whole-data results
    assert hist.history["val_auc"][-1] == pytest.approx(logs["auc"], rel=1e-9)


def test_compiled_model_with_stateful_metrics_saves_and_loads(tmp_path):
    x, y = _binary_problem()
    model = pydl.Sequential([Dense(1, activation="sigmoid", input_shape=(5,))])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["auc", "precision"])
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "m.pydl")
    model.save(path)
    again = pydl.load_model(path)
    a = model.evaluate(x, y, return_dict=True)
    b = again.evaluate(x, y, return_dict=True)
    assert set(a) == set(b) == {"loss", "auc", "precision"}
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-6)


@pytest.mark.parametrize("n", [1, 0, 10**6 + 1, 10**10, 2.5, True])
def test_auc_num_thresholds_out_of_range_is_refused_at_once(n):
    with pytest.raises(ValueError, match=r"\[AUC\] num_thresholds must be an int in \[2, 1000000\]"):
        pydl.metrics.AUC(num_thresholds=n)
    assert pydl.metrics.AUC(num_thresholds=3).thresholds.tolist() == pytest.approx([-1e-7, 0.5, 1 + 1e-7])
