"""CUDA losses, embedding and metric reductions against the CPU ops of pydl on the same inputs."""
import numpy as np
import pytest

from cuda_support import cp, needs_cuda, to_cpu, to_gpu

from pydl import losses, metrics, ops
from pydl.layers import Embedding

pytestmark = needs_cuda

KINDS = [("mse", False), ("mae", False), ("binary_crossentropy", False), ("binary_crossentropy", True),
         ("categorical_crossentropy", False), ("categorical_crossentropy", True),
         ("sparse_categorical_crossentropy", False), ("sparse_categorical_crossentropy", True)]
SHAPES = [(1, 1), (7, 5), (33, 10), (3, 4, 6), (2000, 37)]


def _data(kind, logits, shape, dtype, rng):
    z = rng.standard_normal(shape) * 2
    if kind in ("mse", "mae"):
        return rng.standard_normal(shape).astype(dtype), z.astype(dtype)
    if kind == "binary_crossentropy":
        y = rng.random(shape).round(1)  # soft targets in [0, 1]
        p = z if logits else 1 / (1 + np.exp(-z))
        p = np.where(rng.random(shape) < 0.05, 0.0, p)  # some clipped probabilities
        return y.astype(dtype), p.astype(dtype)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    p = z if logits else e / e.sum(axis=-1, keepdims=True)
    labels = rng.integers(0, shape[-1], shape[:-1])
    if kind == "sparse_categorical_crossentropy":
        return labels, p.astype(dtype)
    y = rng.random(shape)
    return (y / y.sum(axis=-1, keepdims=True)).astype(dtype), p.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,logits", KINDS, ids=[f"{k}-{'logits' if l else 'probs'}" for k, l in KINDS])
def test_loss_matches_cpu(kind, logits, dtype, rng):
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for shape in SHAPES:
        y, p = _data(kind, logits, shape, dtype, rng)
        want_v, want_g = ops.loss(kind, y, p, from_logits=logits)
        v, g = ops.loss(kind, to_gpu(y), to_gpu(p), from_logits=logits)
        assert isinstance(v, float)
        assert isinstance(g, cp.ndarray) and g.shape == p.shape and g.dtype == dtype
        np.testing.assert_allclose(v, want_v, rtol=rtol, err_msg=str(shape))
        atol = rtol * float(np.abs(want_g).max())
        np.testing.assert_allclose(to_cpu(g), want_g, rtol=rtol, atol=atol, err_msg=str(shape))
        # deterministic reduction: the same value twice
        assert ops.loss(kind, to_gpu(y), to_gpu(p), from_logits=logits)[0] == v


@pytest.mark.parametrize("logits", [False, True])
def test_sparse_labels_forms_and_errors(logits, rng):
    y, p = _data("sparse_categorical_crossentropy", logits, (9, 4), np.float32, rng)
    want = ops.loss("sparse_categorical_crossentropy", y, p, from_logits=logits)[0]
    for lab in (y, y[:, None], y.astype(np.int32), y.astype(np.float64), y.astype(np.uint8)):
        v, _ = ops.loss("sparse_categorical_crossentropy", to_gpu(lab), to_gpu(p), from_logits=logits)
        np.testing.assert_allclose(v, want, rtol=1e-6)
    bad = y.copy()
    bad[3] = 4
    with pytest.raises(ValueError) as cpu_err:
        ops.loss("sparse_categorical_crossentropy", bad, p)
    with pytest.raises(ValueError) as gpu_err:
        ops.loss("sparse_categorical_crossentropy", to_gpu(bad), to_gpu(p))
    assert str(gpu_err.value) == str(cpu_err.value)
    assert "y_true[3] = 4 is not a class index in [0, 4)" in str(gpu_err.value)
    bad[3] = -1
    with pytest.raises(ValueError, match=r"y_true\[3\] = -1 is not a class index"):
        ops.loss("sparse_categorical_crossentropy", to_gpu(bad), to_gpu(p))
    with pytest.raises(ValueError, match="non-integer"):
        ops.loss("sparse_categorical_crossentropy", to_gpu(y + 0.5), to_gpu(p))
    with pytest.raises(ValueError, match="expected labels of shape"):
        ops.loss("sparse_categorical_crossentropy", to_gpu(y[:5]), to_gpu(p))


def test_loss_bad_input_and_mixed_devices(rng):
    y, p = _data("mse", False, (4, 3), np.float32, rng)
    with pytest.raises(ValueError, match=r"different devices \(y_true on cpu, y_pred on cuda\)"):
        ops.loss("mse", y, to_gpu(p))
    with pytest.raises(ValueError, match=r"different devices \(y_true on cuda, y_pred on cpu\)"):
        ops.loss("sparse_categorical_crossentropy", to_gpu(np.zeros(4, np.int64)), p)
    with pytest.raises(ValueError, match="y_true has shape"):
        ops.loss("mse", to_gpu(y[:2]), to_gpu(p))
    with pytest.raises(ValueError, match="contains NaN"):
        ops.loss("mse", to_gpu(np.full_like(y, np.nan)), to_gpu(p))
    with pytest.raises(ValueError, match="is empty"):
        ops.loss("mse", cp.zeros((0, 3), np.float32), cp.zeros((0, 3), np.float32))
    with pytest.raises(TypeError, match="real"):
        ops.loss("mse", to_gpu(y), to_gpu(p).astype(np.complex64))
    # views and other dtypes: copied / cast as on the CPU
    pv = to_gpu(np.asfortranarray(p))[:, ::-1]
    np.testing.assert_allclose(ops.loss("mse", to_gpu(y), pv)[0], ops.loss("mse", y, p[:, ::-1])[0], rtol=1e-6)
    np.testing.assert_allclose(ops.loss("mse", to_gpu(y.astype(np.int32)), to_gpu(p))[0],
                               ops.loss("mse", y.astype(np.int32), p)[0], rtol=1e-6)


def test_loss_classes_per_row_and_sample_weights(rng):
    for kind, logits in KINDS:
        cls = losses.get(kind)
        if logits:
            cls = type(cls)(from_logits=True)
        y, p = _data(kind, logits, (6, 3, 4), np.float64, rng)
        v, g = cls.forward_backward(to_gpu(y), to_gpu(p))
        want_v, want_g = cls.forward_backward(y, p)
        np.testing.assert_allclose(v, want_v, rtol=1e-12)
        np.testing.assert_allclose(to_cpu(g), want_g, rtol=1e-12, atol=1e-14)
        for fn in (losses.per_row, losses.per_sample):
            got = fn(kind, to_gpu(y), to_gpu(p), logits)
            assert isinstance(got, cp.ndarray)
            np.testing.assert_allclose(to_cpu(got), fn(kind, y, p, logits), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="labels must lie in"):
        losses.SparseCategoricalCrossentropy()(to_gpu(np.array([0, 5])), to_gpu(np.full((2, 3), 1 / 3)))
    with pytest.raises(ValueError, match="y_true must lie in"):
        losses.BinaryCrossentropy()(to_gpu(np.array([[2.0]])), to_gpu(np.array([[0.5]])))
    with pytest.warns(RuntimeWarning, match="values outside"):
        losses.CategoricalCrossentropy()(to_gpu(np.eye(2)), to_gpu(np.array([[2.0, -1.0], [0.5, 0.5]])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_matches_cpu(dtype, rng):
    for V, D, shape in ((1, 1, (3,)), (13, 7, (5, 11)), (50, 129, (4, 33)), (8, 4, (0, 3))):
        W = rng.standard_normal((V, D)).astype(dtype)
        ids = rng.integers(0, V, shape)
        ids.reshape(-1)[: min(ids.size, 6)] = 0  # repeated ids: the scatter must add them up
        y = ops.embedding_forward(to_gpu(ids), to_gpu(W))
        assert isinstance(y, cp.ndarray) and y.dtype == dtype
        np.testing.assert_array_equal(to_cpu(y), ops.embedding_forward(ids, W))
        dy = rng.standard_normal(shape + (D,)).astype(dtype)
        dW = ops.embedding_backward(to_gpu(dy), to_gpu(ids), W.shape)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(to_cpu(dW), ops.embedding_backward(dy, ids, W.shape), rtol=tol, atol=tol)
        out = cp.ones((V, D), dtype)
        ops.embedding_backward(to_gpu(dy), to_gpu(ids.astype(np.int32)), V, out=out)
        np.testing.assert_allclose(to_cpu(out), 1 + ops.embedding_backward(dy, ids, W.shape), rtol=tol, atol=tol)


def test_embedding_errors_and_layer_on_gpu(rng):
    W = to_gpu(rng.standard_normal((5, 2)).astype(np.float32))
    with pytest.raises(ValueError, match=r"id 5 is out of range for input_dim=5 .*table of shape \(5, 2\)"):
        ops.embedding_forward(to_gpu(np.array([[0, 5]])), W)
    with pytest.raises(ValueError, match="id -2 is out of range"):
        ops.embedding_forward(to_gpu(np.array([-2])), W)
    with pytest.raises(ValueError, match="whole-number"):
        ops.embedding_forward(to_gpu(np.array([0.5])), W)
    with pytest.raises(TypeError, match="integer indices"):
        ops.embedding_forward(to_gpu(np.array([True])), W)
    with pytest.raises(ValueError, match=r"different devices \(ids on cpu, table on cuda\)"):
        ops.embedding_forward(np.array([0]), W)
    with pytest.raises(ValueError, match="dy has shape"):
        ops.embedding_backward(cp.zeros((2, 3), np.float32), to_gpu(np.array([0])), (5, 2))
    emb = Embedding(5, 2, mask_zero=True, name="tok")
    emb.build((None, 3))
    Wh = emb.params["W"].copy()
    emb.params["W"] = to_gpu(Wh)
    x = np.array([[0, 3, 3], [4, 1, 0]])
    y = emb.forward(to_gpu(x))
    np.testing.assert_array_equal(to_cpu(y), Wh[x])
    np.testing.assert_array_equal(to_cpu(emb.compute_mask(to_gpu(x))), x != 0)
    dy = rng.standard_normal((2, 3, 2)).astype(np.float32)
    emb.backward(to_gpu(dy))
    assert isinstance(emb.grads["W"], cp.ndarray)
    np.testing.assert_allclose(to_cpu(emb.grads["W"]), ops.embedding_backward(dy, x, (5, 2)), rtol=1e-6)


def test_metrics_match_cpu(rng):
    p = rng.random((57, 6)).astype(np.float32)
    p[3, 1] = p[3, 4] = 2.0  # a tie: the first maximum
    p[5, 2] = np.nan  # NaN is the maximum, as np.argmax
    labels = rng.integers(0, 6, 57)
    labels[:10] = np.argmax(p[:10], axis=-1)
    onehot = np.eye(6)[labels]
    pb = rng.random((40, 1))
    yb = (rng.random((40, 1)) > 0.5).astype(np.float64)
    yr, pr = rng.standard_normal((8, 3)), rng.standard_normal((8, 3)).astype(np.float32)
    cases = [(metrics.sparse_categorical_accuracy, labels, p), (metrics.sparse_categorical_accuracy, labels[:, None], p),
             (metrics.sparse_categorical_accuracy, labels.astype(np.float32) + (labels == 2) * 0.5, p),
             (metrics.categorical_accuracy, onehot, p), (metrics.categorical_accuracy, onehot.astype(np.int8), p),
             (metrics.binary_accuracy, yb, pb), (metrics.binary_accuracy, yb[:, 0], pb),
             (metrics.accuracy, labels, p), (metrics.accuracy, onehot, p), (metrics.accuracy, yb, pb.astype(np.float32)),
             (metrics.mean_squared_error, yr, pr), (metrics.mean_absolute_error, yr, pr),
             (metrics.mean_squared_error, yr[:, :1], pr[:, 0])]
    for fn, t, q in cases:
        got = fn(to_gpu(t), to_gpu(q))
        assert isinstance(got, float)
        np.testing.assert_allclose(got, fn(t, q), rtol=1e-12, err_msg=fn.__name__)
    big = rng.random((300_000, 3))
    np.testing.assert_allclose(metrics.mean_squared_error(to_gpu(big), to_gpu(big[::-1].copy())),
                               metrics.mean_squared_error(big, big[::-1]), rtol=1e-10)
    with pytest.raises(ValueError, match=r"different devices \(y_true on cpu, y_pred on cuda\)"):
        metrics.accuracy(labels, to_gpu(p))
    with pytest.raises(ValueError, match="one label per row"):
        metrics.sparse_categorical_accuracy(to_gpu(labels[:5]), to_gpu(p))
    # stateful metrics keep host-side states
    m = metrics.SparseCategoricalAccuracy()
    m.update_state(to_gpu(labels), to_gpu(p))
    m.update_state(labels[:7], p[:7])
    want = (metrics.sparse_categorical_accuracy(labels, p) * 57 + metrics.sparse_categorical_accuracy(
        labels[:7], p[:7]) * 7) / 64
    assert isinstance(m.result(), float)
    np.testing.assert_allclose(m.result(), want, rtol=1e-12)
    # metrics computed on the host copy the CuPy inputs there
    np.testing.assert_allclose(metrics.top_k_accuracy(to_gpu(labels), to_gpu(p), k=2),
                               metrics.top_k_accuracy(labels, p, k=2))

