"""Masks reaching losses, metrics, GlobalAveragePooling1D and the merge layers (Keras semantics)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import pydl
from pydl.layers import (LSTM, Add, Concatenate, Dense, Embedding, GlobalAveragePooling1D, Layer, Multiply,
                         Subtract)

V, E, H, K = 12, 5, 6, 4
LENGTHS = [5, 3, 1, 4]


def _padded_batch(rng, lengths=LENGTHS, T=None):
    """Post-padded ids (0 = padding) and labels; labels at padded steps are arbitrary."""
    T = T or max(lengths)
    ids = np.zeros((len(lengths), T), np.int64)
    for i, L in enumerate(lengths):
        ids[i, :L] = rng.integers(1, V, L)
    labels = rng.integers(0, K, (len(lengths), T))
    return ids, labels


def _tagger(activation="softmax", seed=1):
    pydl.seed(seed)
    model = pydl.Sequential([Embedding(V, E, mask_zero=True, input_shape=(None,)), LSTM(H, return_sequences=True),
                             Dense(K, activation=activation)])
    for layer, scale in ((model.layers[0], 20.0), (model.layers[-1], 4.0)):  # far from uniform predictions
        layer.set_weights([scale * w for w in layer.get_weights()])
    return model


def _grads(model, x, y, sample_weight=None):
    """The gradients of the model's loss with respect to every parameter (copies), and the loss."""
    xs, ys, ws, _ = model._prepare_arrays(x, y, sample_weight, None, "test")
    total, _, _, _ = model._gradients(xs, ys, ws)
    return total, {f"{l.name}/{k}": np.array(l.grads[k], np.float64) for l in model.layers for k in l.grads}


LOSSES = {
    "sparse": ("softmax", "sparse_categorical_crossentropy", lambda y: y),
    "categorical": ("softmax", "categorical_crossentropy", lambda y: np.eye(K)[y]),
    "sparse_logits": ("linear", pydl.losses.SparseCategoricalCrossentropy(from_logits=True), lambda y: y),
    "mse": ("tanh", "mse", lambda y: np.eye(K)[y]),
}


@pytest.mark.parametrize("kind", list(LOSSES))
def test_masked_loss_and_gradients_equal_the_unpadded_sequences(kind):
    """Loss = sum over valid steps / number of valid steps; the gradient is the same weighted
    combination of the per-sequence gradients (each sequence run alone, unpadded)."""
    act, loss, target = LOSSES[kind]
    rng = np.random.default_rng(0)
    ids, labels = _padded_batch(rng)
    model = _tagger(act)
    model.compile(loss=loss, optimizer="sgd")
    total, grads = _grads(model, ids, target(labels))

    ref_loss, ref_grads = 0.0, {}
    n_valid = sum(LENGTHS)
    for i, L in enumerate(LENGTHS):
        li, gi = _grads(model, ids[i:i + 1, :L], target(labels[i:i + 1, :L]))
        w = L / n_valid  # the sequence's mean loss covers L of the n_valid steps
        ref_loss += w * li
        for k, g in gi.items():
            ref_grads[k] = ref_grads.get(k, 0.0) + w * g
    assert total == pytest.approx(ref_loss, rel=1e-5)
    assert set(grads) == set(ref_grads)
    for k in grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=2e-4, atol=2e-6, err_msg=k)

    # the labels (targets) at padded steps change nothing, bit for bit
    other = labels.copy()
    other[ids == 0] = (other[ids == 0] + 1) % K
    total2, grads2 = _grads(model, ids, target(other))
    assert total2 == total
    for k in grads:
        np.testing.assert_array_equal(grads2[k], grads[k])


def test_masked_loss_value_against_float64_numpy():
    rng = np.random.default_rng(1)
    ids, labels = _padded_batch(rng)
    model = _tagger()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    p = model.predict(ids).astype(np.float64)
    mask = ids != 0
    nll = -np.log(np.take_along_axis(p, labels[..., None], axis=-1)[..., 0])
    want = nll[mask].sum() / mask.sum()
    assert model.evaluate(ids, labels) == pytest.approx(want, rel=1e-5)
    # the unmasked mean would differ: the test can fail
    assert abs(nll.mean() - want) > 1e-2 * want


def test_torch_cross_entropy_with_ignore_index():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    ids, labels = _padded_batch(rng)
    model = _tagger("linear")
    model.compile(loss=pydl.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="sgd")
    xs, ys, _, _ = model._prepare_arrays(ids, labels, None, None, "test")
    vals = model._run_forward(xs, False)
    total, _, seeds, _ = model._losses(vals, ys, model._output_plan())
    slot = model._output_slots[0]
    logits = torch.tensor(np.asarray(vals[slot], np.float64), requires_grad=True)
    target = torch.tensor(np.where(ids != 0, labels, -100))
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, K), target.reshape(-1), ignore_index=-100)
    ref.backward()
    assert total == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(seeds[slot], logits.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert np.all(seeds[slot][ids == 0] == 0)  # masked steps: exactly zero gradient

    # with sample weights: sum(mask * w * l) / sum(mask) (Keras multiplies the mask and the weights)
    sw = np.array([0.5, 2.0, 1.0, 3.0], np.float32)
    total_w, _, seeds_w, _ = model._losses(vals, ys, model._output_plan(), ws=[sw])
    lg = logits.detach().clone().requires_grad_()
    per = torch.nn.functional.cross_entropy(lg.reshape(-1, K), target.reshape(-1), ignore_index=-100,
                                            reduction="none").reshape(ids.shape)
    ref_w = (per * torch.tensor(sw, dtype=torch.float64)[:, None]).sum() / float((ids != 0).sum())
    ref_w.backward()
    assert total_w == pytest.approx(ref_w.item(), rel=1e-6)
    np.testing.assert_allclose(seeds_w[slot], lg.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert model.evaluate(ids, labels, sample_weight=sw, batch_size=len(ids)) == pytest.approx(ref_w.item(), rel=1e-5)


def test_metrics_count_only_unmasked_steps():
    rng = np.random.default_rng(3)
    ids, labels = _padded_batch(rng)
    model = _tagger()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    p = model.predict(ids)
    mask = ids != 0
    hit = p.argmax(-1) == labels
    logs = model.evaluate(ids, labels, batch_size=len(ids), return_dict=True)
    assert logs["accuracy"] == pytest.approx(hit[mask].mean())
    # choose the padded labels so that counting them would change the value
    flip = labels.copy()
    flip[~mask] = p.argmax(-1)[~mask]
    assert model.evaluate(ids, flip, batch_size=len(ids), return_dict=True)["accuracy"] == logs["accuracy"]
    assert hit[mask].mean() != np.mean(p.argmax(-1) == flip)

    # a regression metric on a masked per-step output
    reg = _tagger("tanh")
    reg.compile(loss="mse", optimizer="sgd", metrics=["mae"])
    y = rng.standard_normal(ids.shape + (K,)).astype(np.float32)
    q = reg.predict(ids).astype(np.float64)
    got = reg.evaluate(ids, y, batch_size=len(ids), return_dict=True)
    assert got["mae"] == pytest.approx(np.abs(q - y)[mask].mean(), rel=1e-5)
    assert got["loss"] == pytest.approx(((q - y) ** 2).mean(-1)[mask].mean(), rel=1e-5)


def test_all_masked_rows_and_batches():
    rng = np.random.default_rng(4)
    ids, labels = _padded_batch(rng, [3, 0, 2])  # the middle row is all padding
    model = _tagger()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    total, grads = _grads(model, ids, labels)
    keep = [0, 2]
    ref, _ = _grads(model, ids[keep], labels[keep])
    assert np.isfinite(total) and total == pytest.approx(ref, rel=1e-6)
    # a batch with nothing unmasked: loss 0, metrics 0, all gradients exactly 0, weights unchanged
    empty = np.zeros((2, 4), np.int64)
    total0, grads0 = _grads(model, empty, np.zeros((2, 4), np.int64))
    assert total0 == 0.0
    assert all(np.all(g == 0) for g in grads0.values())
    before = model.get_weights()
    logs = model.train_on_batch(empty, np.zeros((2, 4), np.int64), return_dict=True)
    assert logs == {"loss": 0.0, "accuracy": 0.0}
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_on_padded_sequences_learns_the_tags():
    """A tagger whose tag is the id modulo K: trains to high accuracy over the valid steps."""
    rng = np.random.default_rng(5)
    n, T = 256, 8
    lengths = rng.integers(1, T + 1, n)
    ids = np.zeros((n, T), np.int64)
    for i, L in enumerate(lengths):
        ids[i, :L] = rng.integers(1, V, L)
    tags = np.where(ids != 0, ids % K, rng.integers(0, K, ids.shape))  # padded tags are noise
    model = _tagger()
    model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(0.05), metrics=["accuracy"])
    model.fit(ids, tags, batch_size=32, epochs=15, verbose=0)
    logs = model.evaluate(ids, tags, batch_size=n, return_dict=True)
    assert logs["accuracy"] > 0.95


# ---- finite differences through a model, with a test layer that attaches a fixed mask ---------

class FixedMask(Layer):
    """Identity on (N, T, C) that attaches a given (N, T) mask (for float64 gradient checks,
    where Embedding's integer ids cannot be perturbed)."""
    supports_masking = True

    def __init__(self, mask, **kw):
        super().__init__(**kw)
        self.mask = np.asarray(mask, bool)

    def compute_mask(self, inputs, mask=None):
        return self.mask[:np.shape(inputs)[0]]

    def forward(self, x, training=False, ctx=None):
        self.forward_context(ctx)
        return x

    def backward(self, dout, ctx=None):
        self.backward_context(ctx)
        return dout


def test_masked_model_gradients_by_finite_differences():
    rng = np.random.default_rng(6)
    N, T, C = 3, 5, 3
    mask = np.arange(T)[None, :] < np.array([5, 2, 0])[:, None]  # full, partial, empty rows
    pydl.seed(7)
    inp = pydl.Input((T, C))
    h = LSTM(4, return_sequences=True)(FixedMask(mask)(inp))
    model = pydl.Model(inp, Dense(K, activation="softmax")(h))
    x = rng.standard_normal((N, T, C))
    y = rng.integers(0, K, (N, T))
    errs = pydl.gradcheck(model, x, y, loss="sparse_categorical_crossentropy")
    assert errs["x"] < 1e-6

    pydl.seed(8)
    inp = pydl.Input((T, C))
    out = Dense(2)(GlobalAveragePooling1D()(FixedMask(mask)(inp)))
    model = pydl.Model(inp, out)
    pydl.gradcheck(model, x, rng.standard_normal((N, 2)), loss="mse")


# ---- GlobalAveragePooling1D ---------------------------------------------------------------------

def test_global_average_pooling_1d_masked_mean_and_gradient():
    rng = np.random.default_rng(9)
    N, T, C = 4, 6, 3
    x = rng.standard_normal((N, T, C))
    mask = rng.random((N, T)) < 0.5
    mask[0] = True
    mask[1] = False  # fully masked row: zeros
    layer = GlobalAveragePooling1D()
    layer.build((None, T, C))
    y = layer.forward(x, mask=mask)
    cnt = mask.sum(1)
    want = np.array([x[i][mask[i]].mean(0) if cnt[i] else np.zeros(C) for i in range(N)])
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-15)
    assert np.all(y[1] == 0) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y[0], x[0].mean(0), rtol=1e-12)

    r = rng.standard_normal((N, C))
    dx = layer.backward(r)
    num = np.zeros_like(x)
    eps = 1e-6
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = (np.sum(layer.forward(xp, mask=mask) * r) - np.sum(layer.forward(xm, mask=mask) * r)) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-9)
    assert np.all(dx[~mask] == 0)
    # float32 keeps its dtype; without a mask the plain mean
    y32 = layer.forward(x.astype(np.float32), mask=mask)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(layer.forward(x), x.mean(1))
    with pytest.raises(ValueError, match="mask has shape"):
        layer.forward(x, mask=mask[:, :3])


def test_global_average_pooling_1d_in_a_model_takes_the_embedding_mask():
    rng = np.random.default_rng(10)
    ids, _ = _padded_batch(rng, [4, 2, 0, 1], T=6)
    pydl.seed(11)
    inp = pydl.Input((None,))
    emb = Embedding(V, E, mask_zero=True)
    model = pydl.Model(inp, GlobalAveragePooling1D()(emb(inp)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = model.predict(ids)
    W = emb.get_weights()[0]
    want = np.array([W[r[r != 0]].mean(0) if np.any(r != 0) else np.zeros(E) for r in ids])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# ---- merge layers -------------------------------------------------------------------------------

def test_merge_mask_rules():
    rng = np.random.default_rng(12)
    m1 = rng.random((2, 5)) < 0.6
    m2 = rng.random((2, 5)) < 0.6
    x = [np.zeros((2, 5, 3), np.float32)] * 3
    for cls in (Add, Multiply):
        layer = cls()
        np.testing.assert_array_equal(layer.compute_mask(x, [m1, m2, None]), m1 & m2)
        np.testing.assert_array_equal(layer.compute_mask(x[:2], [None, m2]), m2)
        assert layer.compute_mask(x[:2], [None, None]) is None
        assert layer.compute_mask(x[:2], None) is None
    np.testing.assert_array_equal(Subtract().compute_mask(x[:2], [m1, m2]), m1 & m2)
    # Concatenate (Keras): features joined -> OR of the masks (an input without a mask keeps all)
    a, b = np.zeros((2, 5, 3)), np.zeros((2, 5, 2))
    np.testing.assert_array_equal(Concatenate(axis=-1).compute_mask([a, b], [m1, m2]), m1 | m2)
    assert Concatenate(axis=-1).compute_mask([a, b], [m1, None]).all()
    # along time: the masks are joined
    c = np.zeros((2, 4, 3))
    m3 = rng.random((2, 4)) < 0.5
    np.testing.assert_array_equal(Concatenate(axis=1).compute_mask([a, c], [m1, m3]), np.concatenate([m1, m3], 1))
    np.testing.assert_array_equal(Concatenate(axis=1).compute_mask([a, c], [None, m3]),
                                  np.concatenate([np.ones_like(m1), m3], 1))
    assert Concatenate(axis=1).compute_mask([a, c], None) is None


def test_merge_layers_carry_masks_in_a_model_without_warning():
    rng = np.random.default_rng(13)
    T = 6
    ids1, _ = _padded_batch(rng, [6, 3, 2], T=T)
    ids2, _ = _padded_batch(rng, [4, 5, 0], T=T)
    pydl.seed(14)
    i1, i2 = pydl.Input((T,)), pydl.Input((T,))
    e1, e2 = Embedding(V, E, mask_zero=True), Embedding(V, E, mask_zero=True)
    s = Add()([e1(i1), e2(i2)])
    cat_t = Concatenate(axis=1)([e1(i1), e2(i2)])
    model = pydl.Model([i1, i2], [GlobalAveragePooling1D()(s), GlobalAveragePooling1D()(cat_t)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got_add, got_cat = model.predict([ids1, ids2])
    W1, W2 = e1.get_weights()[0], e2.get_weights()[0]
    x = W1[ids1] + W2[ids2]
    m = (ids1 != 0) & (ids2 != 0)
    want = np.array([x[i][m[i]].mean(0) if m[i].any() else np.zeros(E) for i in range(3)])
    np.testing.assert_allclose(got_add, want, rtol=1e-6, atol=1e-7)
    xc = np.concatenate([W1[ids1], W2[ids2]], 1)
    mc = np.concatenate([ids1 != 0, ids2 != 0], 1)
    want = np.array([xc[i][mc[i]].mean(0) for i in range(3)])
    np.testing.assert_allclose(got_cat, want, rtol=1e-6, atol=1e-7)


def test_merged_sequence_output_loss_uses_the_combined_mask():
    rng = np.random.default_rng(15)
    T = 5
    ids1, _ = _padded_batch(rng, [5, 3, 2], T=T)
    ids2, _ = _padded_batch(rng, [4, 4, 1], T=T)
    y = rng.standard_normal((3, T, E)).astype(np.float32)
    pydl.seed(16)
    i1, i2 = pydl.Input((T,)), pydl.Input((T,))
    e1, e2 = Embedding(V, E, mask_zero=True), Embedding(V, E, mask_zero=True)
    model = pydl.Model([i1, i2], Multiply()([e1(i1), e2(i2)]))
    model.compile(loss="mse", optimizer="sgd")
    x = e1.get_weights()[0][ids1].astype(np.float64) * e2.get_weights()[0][ids2]
    m = (ids1 != 0) & (ids2 != 0)
    want = ((x - y) ** 2).mean(-1)[m].mean()
    assert model.evaluate([ids1, ids2], y, batch_size=3) == pytest.approx(want, rel=1e-5)


def test_sample_weight_times_mask_in_fit_logs():
    """Keras: the mask multiplies the sample weights; the loss divides by the unmasked count."""
    rng = np.random.default_rng(17)
    ids, labels = _padded_batch(rng)
    sw = np.array([1.0, 0.0, 2.0, 0.5], np.float32)
    model = _tagger()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    p = model.predict(ids).astype(np.float64)
    mask = ids != 0
    nll = -np.log(np.take_along_axis(p, labels[..., None], axis=-1)[..., 0])
    want = (nll * mask * sw[:, None]).sum() / mask.sum()
    assert model.test_on_batch(ids, labels, sample_weight=sw, return_dict=True)["loss"] == pytest.approx(want, rel=1e-5)
    # the gradients: a zero-weight sequence contributes nothing
    _, g = _grads(model, ids, labels, sample_weight=sw)
    other = labels.copy()
    other[1] = (other[1] + 1) % K
    _, g2 = _grads(model, ids, other, sample_weight=sw)
    for k in g:
        np.testing.assert_array_equal(g[k], g2[k])
