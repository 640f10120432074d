"""Attention layers: LayerNormalization, MultiHeadAttention, PositionalEmbedding,
SinusoidalPositionalEncoding and the TransformerEncoder block. Each: forward against a float64
NumPy reference, finite-difference gradients (pydl.gradcheck), PyTorch with copied weights where
importable, config round trip, bad input; then models built from them (graph calls, masks as
inputs, self-attention gradients, save/load, a float64 gradcheck of a small Transformer)."""
import numpy as np
import pytest

import pydl
from pydl import Input, Model, registry
from pydl.layers import (Dense, GlobalAveragePooling1D, LayerNormalization, MultiHeadAttention, PositionalEmbedding,
                         SinusoidalPositionalEncoding, TransformerEncoder)
from pydl.layers.attention import sinusoidal_table

ALL = [LayerNormalization, MultiHeadAttention, PositionalEmbedding, SinusoidalPositionalEncoding, TransformerEncoder]


def _torch():
    return pytest.importorskip("torch")


def _as64(layer):
    """The layer's weights as float64 (the exact path), in place of the float32 ones."""
    layer.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    return layer


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_registered_and_exported(cls):
    assert registry.layers.get(cls.__name__) is cls
    assert getattr(pydl.layers, cls.__name__) is cls
    assert cls.__name__ in pydl.layers.__all__


# ---- LayerNormalization -----------------------------------------------------------------------

def ln_ref(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 6), (2, 3, 4, 5)])
def test_layer_norm_forward_and_gradients(shape, rng):
    x = rng.standard_normal(shape) * 3 + 1
    ln = LayerNormalization()
    ln.build((None,) + shape[1:])
    assert ln.epsilon == 1e-3 and set(ln.params) == {"gamma", "beta"}
    ln.params["gamma"][...] = rng.standard_normal(shape[-1])
    ln.params["beta"][...] = rng.standard_normal(shape[-1])
    _as64(ln)
    np.testing.assert_allclose(ln(x), ln_ref(x, ln.params["gamma"], ln.params["beta"], 1e-3), rtol=1e-12, atol=1e-12)
    errs = pydl.gradcheck(ln, x)
    assert set(errs) == {"x", f"{ln.name}/gamma", f"{ln.name}/beta"}
    y32 = LayerNormalization()(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, ln_ref(x, 1.0, 0.0, 1e-3), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("center,scale", [(False, True), (True, False), (False, False)])
def test_layer_norm_without_center_or_scale(center, scale, rng):
    x = rng.standard_normal((3, 4, 6))
    ln = LayerNormalization(center=center, scale=scale, epsilon=1e-5)
    ln.build((None, 4, 6))
    assert set(ln.params) == {k for k, on in (("gamma", scale), ("beta", center)) if on}
    _as64(ln)
    if scale:
        ln.params["gamma"][...] = rng.standard_normal(6)
    if center:
        ln.params["beta"][...] = rng.standard_normal(6)
    np.testing.assert_allclose(ln(x), ln_ref(x, ln.params.get("gamma", 1.0), ln.params.get("beta", 0.0), 1e-5),
                               rtol=1e-12, atol=1e-12)
    pydl.gradcheck(ln, x)


def test_layer_norm_matches_torch(rng):
    torch = _torch()
    x = rng.standard_normal((4, 6, 16)).astype(np.float32)
    ln = LayerNormalization(epsilon=1e-5)
    ln.build((None, 6, 16))
    ln.params["gamma"][...] = rng.standard_normal(16)
    ln.params["beta"][...] = rng.standard_normal(16)
    t = torch.nn.LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(ln.params["gamma"]))
        t.bias.copy_(torch.from_numpy(ln.params["beta"]))
    xt = torch.from_numpy(x).requires_grad_()
    yt = t(xt)
    dy = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    y = ln(x)
    dx = ln.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ln.grads["gamma"], t.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ln.grads["beta"], t.bias.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_layer_norm_bad_input():
    with pytest.raises(ValueError, match=r"LayerNormalization.*epsilon"):
        LayerNormalization(epsilon=0)
    with pytest.raises(ValueError, match=r"LayerNormalization.*last axis"):
        LayerNormalization(axis=1).build((None, 4, 6))
    LayerNormalization(axis=2).build((None, 4, 6))  # the last axis by index is fine
    ln = LayerNormalization()
    ln.build((None, 4, 6))
    with pytest.raises(ValueError, match=r"LayerNormalization.*\(N, 4, 6\).*\(2, 4, 5\)"):
        ln(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"LayerNormalization.*\(N, 4, 6\)"):
        ln(np.zeros((2, 24), np.float32))
    with pytest.raises(ValueError, match=r"LayerNormalization.*\(N, \.\.\., features\)"):
        LayerNormalization().build((None,))


# ---- MultiHeadAttention -------------------------------------------------------------------------

def softmax_rows(s):
    """Softmax over the last axis; a row of all -inf gives zeros (the kernel's convention)."""
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    tot = e.sum(-1, keepdims=True)
    return np.where(tot > 0, e / np.where(tot > 0, tot, 1.0), 0.0)


def mha_ref(layer, q, v, k=None, mask=None, causal=False):
    """float64 NumPy multi-head attention with the layer's weights."""
    p = {n: np.asarray(a, np.float64) for n, a in layer.params.items()}
    k = v if k is None else k
    H, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
    B, T, S = q.shape[0], q.shape[1], v.shape[1]

    def proj(x, w, b, L, dim):
        z = x @ p[w] + (p[b] if b in p else 0.0)
        return z.reshape(B, L, H, dim).transpose(0, 2, 1, 3)

    Q, K, V = proj(q, "query_kernel", "query_bias", T, kd), proj(k, "key_kernel", "key_bias", S, kd), \
        proj(v, "value_kernel", "value_bias", S, vd)
    s = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(kd)
    allow = np.ones((B, 1, T, S), bool)
    if mask is not None:
        allow &= np.asarray(mask, bool).reshape((-1, 1, T, S))
    if causal:
        allow &= np.tril(np.ones((T, S), bool))
    P = softmax_rows(np.where(allow, s, -np.inf))
    o = (P @ V).transpose(0, 2, 1, 3).reshape(B, T, H * vd)
    return o @ p["output_kernel"] + p.get("output_bias", 0.0)


def _mha(rng, num_heads=2, key_dim=3, dims=(5, 4, 6), **kw):
    layer = MultiHeadAttention(num_heads, key_dim, **kw)
    dq, dv, dk = dims
    layer.build([(None, None, dq), (None, None, dv), (None, None, dk)])
    for n, a in layer.params.items():
        a[...] = rng.standard_normal(a.shape) * 0.5
    return _as64(layer)


@pytest.mark.parametrize("kw", [{}, {"value_dim": 5, "output_shape": 7}, {"use_bias": False}],
                         ids=["default", "value_dim-output_shape", "no-bias"])
def test_mha_forward_reference_and_gradients(kw, rng):
    layer = _mha(rng, **kw)
    q, v, k = rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 6, 6))
    out = layer(q, v, key=k)
    assert out.shape == (2, 4, kw.get("output_shape", 5))
    np.testing.assert_allclose(out, mha_ref(layer, q, v, k), rtol=1e-12, atol=1e-12)
    errs = pydl.gradcheck(layer, [q, v, k])
    assert {"x0", "x1", "x2"} <= set(errs)
    assert len([e for e in errs if e.startswith(layer.name)]) == (8 if kw.get("use_bias", True) else 4)


def test_mha_masks_reference_and_gradients(rng):
    layer = _mha(rng)
    q, v, k = rng.standard_normal((2, 5, 5)), rng.standard_normal((2, 7, 4)), rng.standard_normal((2, 7, 6))
    mask = rng.random((2, 5, 7)) < 0.6
    mask[:, :, 0] = True
    np.testing.assert_allclose(layer(q, v, key=k, attention_mask=mask), mha_ref(layer, q, v, k, mask=mask),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer(q, v, key=k, use_causal_mask=True), mha_ref(layer, q, v, k, causal=True),
                               rtol=1e-12, atol=1e-12)
    both = layer(q, v, key=k, attention_mask=mask, use_causal_mask=True)
    np.testing.assert_allclose(both, mha_ref(layer, q, v, k, mask=mask, causal=True), rtol=1e-12, atol=1e-12)
    # a numeric 0/1 mask is the boolean one; a (T, S) mask is shared by the batch
    np.testing.assert_array_equal(layer(q, v, key=k, attention_mask=mask.astype(np.float32)),
                                  layer(q, v, key=k, attention_mask=mask))
    np.testing.assert_allclose(layer(q, v, key=k, attention_mask=mask[0]),
                               mha_ref(layer, q, v, k, mask=np.broadcast_to(mask[0], mask.shape)), rtol=1e-12)
    errs = pydl.gradcheck(layer, [q, v, k, mask])
    assert errs["x3"] == 0.0  # the mask gets no gradient
    causal = _mha(rng, use_causal_mask=True)
    np.testing.assert_allclose(causal(q, v, key=k), mha_ref(causal, q, v, k, causal=True), rtol=1e-12)
    pydl.gradcheck(causal, [q, v, k])


def test_mha_fully_masked_row_gives_bias(rng):
    layer = _mha(rng)
    q, v, k = rng.standard_normal((1, 3, 5)), rng.standard_normal((1, 4, 4)), rng.standard_normal((1, 4, 6))
    mask = np.ones((1, 3, 4), bool)
    mask[0, 1] = False
    out = layer(q, v, key=k, attention_mask=mask)
    np.testing.assert_allclose(out[0, 1], layer.params["output_bias"], rtol=1e-12)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("value_dim", [None, 4], ids=["value_dim=key_dim", "value_dim=4"])
def test_mha_self_attention_gradient_sums(value_dim, rng):
    """mha(x, x): one array as query, value and key takes the fused projection; its gradient is
    the sum of the three paths."""
    layer = _mha(rng, dims=(5, 5, 5), value_dim=value_dim)
    x = rng.standard_normal((2, 4, 5))
    x2 = x.copy()
    dy = rng.standard_normal((2, 4, 5))
    y = layer(x, x)
    np.testing.assert_allclose(y, mha_ref(layer, x, x), rtol=1e-12, atol=1e-12)
    layer.zero_grads()
    g_fused = layer.backward(dy)
    grads_fused = {k: v.copy() for k, v in layer.grads.items()}
    assert g_fused[1] is None
    layer.zero_grads()
    np.testing.assert_allclose(layer(x, x2), y, rtol=1e-12, atol=1e-12)  # two arrays: separate projections
    dq, dv = layer.backward(dy)
    np.testing.assert_allclose(g_fused[0], dq + dv, rtol=1e-10, atol=1e-12)
    for k in grads_fused:
        np.testing.assert_allclose(grads_fused[k], layer.grads[k], rtol=1e-10, atol=1e-12)
    # in a model: x feeds query and value (and key), the model sums the entries
    pydl.seed(3)
    inp = Input(shape=(4, 5))
    m = Model(inp, MultiHeadAttention(2, 3)(inp, inp))
    pydl.gradcheck(m, x)
    inp = Input(shape=(4, 5))
    m2 = Model(inp, MultiHeadAttention(2, 3)(inp, inp, key=inp))
    pydl.gradcheck(m2, x)


def _torch_mha(layer, torch, E):
    p = layer.params
    t = torch.nn.MultiheadAttention(E, layer.num_heads, batch_first=True, bias=layer.use_bias).double()
    with torch.no_grad():
        t.in_proj_weight.copy_(torch.from_numpy(np.concatenate(
            [p["query_kernel"].T, p["key_kernel"].T, p["value_kernel"].T]).astype(np.float64)))
        t.out_proj.weight.copy_(torch.from_numpy(p["output_kernel"].T.astype(np.float64)))
        if layer.use_bias:
            t.in_proj_bias.copy_(torch.from_numpy(np.concatenate(
                [p["query_bias"], p["key_bias"], p["value_bias"]]).astype(np.float64)))
            t.out_proj.bias.copy_(torch.from_numpy(p["output_bias"].astype(np.float64)))
    return t


@pytest.mark.parametrize("masking", ["none", "mask", "causal"])
def test_mha_matches_torch(masking, rng):
    torch = _torch()
    E, H = 8, 2
    layer = MultiHeadAttention(H, E // H)
    layer.build([(None, 5, E), (None, 7, E)])
    t = _torch_mha(layer, torch, E)
    q, v = rng.standard_normal((3, 5, E)).astype(np.float32), rng.standard_normal((3, 7, E)).astype(np.float32)
    mask = rng.random((3, 5, 7)) < 0.7
    mask[..., 0] = True
    kw, tmask = {}, None
    if masking == "mask":
        kw, tmask = {"attention_mask": mask}, torch.from_numpy(np.repeat(~mask, H, axis=0))
    elif masking == "causal":
        kw, tmask = {"use_causal_mask": True}, torch.from_numpy(~np.tril(np.ones((5, 7), bool)))
    qt = torch.from_numpy(q.astype(np.float64)).requires_grad_()
    vt = torch.from_numpy(v.astype(np.float64)).requires_grad_()
    yt, _ = t(qt, vt, vt, attn_mask=tmask, need_weights=False)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.from_numpy(dy))
    y = layer(q, v, **kw)
    dq, dv = layer.backward(dy.astype(np.float32))[:2]  # with a mask: [dq, dv, None (key = value), None]
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dq, qt.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dv, vt.grad.numpy(), rtol=1e-3, atol=1e-4)
    tg = t.in_proj_weight.grad.numpy()
    for i, n in enumerate(("query_kernel", "key_kernel", "value_kernel")):
        np.testing.assert_allclose(layer.grads[n], tg[i * E:(i + 1) * E].T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(layer.grads["output_kernel"], t.out_proj.weight.grad.numpy().T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(layer.grads["output_bias"], t.out_proj.bias.grad.numpy(), rtol=1e-3, atol=1e-4)


def test_mha_dropout_training_only_and_reproducible(rng):
    layer = MultiHeadAttention(2, 4, dropout=0.5)
    x = rng.standard_normal((2, 6, 8)).astype(np.float32)
    ref = MultiHeadAttention(2, 4)
    ref.build([(None, 6, 8), (None, 6, 8)])
    layer.build([(None, 6, 8), (None, 6, 8)])
    for k in ref.params:
        layer.params[k][...] = ref.params[k]
    np.testing.assert_array_equal(layer(x, x), ref(x, x))  # inference: no dropout
    pydl.seed(7)
    a = layer(x, x, training=True)
    pydl.seed(7)
    b = layer(x, x, training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, ref(x, x))
    c = layer(x, x, training=True)
    assert not np.array_equal(a, c)
    _as64(layer)
    pydl.gradcheck(layer, [x.astype(np.float64), x.astype(np.float64)])  # the mask replays on every forward


def test_mha_bad_input(rng):
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*num_heads"):
        MultiHeadAttention(0, 4)
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*dropout"):
        MultiHeadAttention(2, 4, dropout=1.0)
    layer = MultiHeadAttention(2, 4)
    x = np.zeros((2, 5, 8), np.float32)
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*query and value"):
        layer(x)
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*query must be \(N, T, features\)"):
        layer(np.zeros((2, 8), np.float32), x)
    layer(x, x)
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*built for query / value / key features"):
        layer(np.zeros((2, 5, 7), np.float32), x)
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*batch"):
        layer(x, np.zeros((3, 5, 8), np.float32))
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*key .* and value .* same length"):
        layer(x, x, key=np.zeros((2, 4, 8), np.float32))
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*attention_mask must be \(N, T, S\) = \(N, 5, 6\)"):
        layer(x, np.zeros((2, 6, 8), np.float32), attention_mask=np.ones((2, 6, 5), bool))
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*use_causal_mask must be a bool"):
        layer(x, x, use_causal_mask="yes")


# ---- graph calls ------------------------------------------------------------------------------------

def test_mha_graph_call_forms(rng):
    q_in, v_in = Input(shape=(4, 6)), Input(shape=(5, 6))
    m_in = Input(shape=(4, 5))
    mha = MultiHeadAttention(2, 3)
    out = mha(q_in, v_in, attention_mask=m_in)
    assert out.shape == (None, 4, 6)
    node = out.node
    assert node.multi_in and [t.name for t in node.inputs] == [q_in.name, v_in.name, v_in.name, m_in.name]
    model = Model([q_in, v_in, m_in], out)
    # a model casts its inputs to float32 (the weights here are float64)
    q, v = rng.standard_normal((3, 4, 6)).astype(np.float32), rng.standard_normal((3, 5, 6)).astype(np.float32)
    mask = (rng.random((3, 4, 5)) < 0.7).astype(np.float32)
    mask[..., 0] = 1
    _as64(mha)
    np.testing.assert_allclose(model([q, v, mask]), mha_ref(mha, q, v, mask=mask), rtol=1e-12, atol=1e-12)
    errs = pydl.gradcheck(model, [q, v, mask])
    assert errs[f"x:{m_in.name}"] == 0.0
    # the list form records the same node
    assert MultiHeadAttention(2, 3)([q_in, v_in]).node.inputs == [q_in, v_in]
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*either as a list or as arguments"):
        mha([q_in, v_in], v_in)


def test_mha_causal_in_graph(rng):
    inp = Input(shape=(5, 6))
    mha = MultiHeadAttention(2, 3)
    model = Model(inp, mha(inp, inp, use_causal_mask=True))
    assert mha.use_causal_mask and mha.get_config()["use_causal_mask"] is True
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    _as64(mha)
    np.testing.assert_allclose(model(x), mha_ref(mha, x, x, causal=True), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*use_causal_mask=True before"):
        mha(inp, inp, use_causal_mask=False)


# ---- positional encodings -------------------------------------------------------------------------

def test_positional_embedding(rng):
    pe = PositionalEmbedding(6, 4)
    pe.build((None, None, 4))
    assert pe.params["embeddings"].shape == (6, 4)
    _as64(pe)
    x = rng.standard_normal((3, 5, 4))
    np.testing.assert_allclose(pe(x), x + pe.params["embeddings"][:5], rtol=0, atol=0)
    errs = pydl.gradcheck(pe, x)
    assert set(errs) == {"x", f"{pe.name}/embeddings"}
    dy = rng.standard_normal((3, 5, 4))
    pe.zero_grads()
    pe(x)
    pe.backward(dy)
    g = pe.grads["embeddings"]
    np.testing.assert_allclose(g[:5], dy.sum(0)) and np.testing.assert_array_equal(g[5:], 0)
    with pytest.raises(ValueError, match=r"PositionalEmbedding.*7 positions, more than sequence_length = 6"):
        pe(rng.standard_normal((1, 7, 4)))
    with pytest.raises(ValueError, match=r"PositionalEmbedding.*features 5 must equal output_dim = 4"):
        PositionalEmbedding(6, 4).build((None, 6, 5))
    with pytest.raises(ValueError, match=r"PositionalEmbedding.*\(N, T, features\)"):
        PositionalEmbedding(6, 4).build((None, 4))


def test_sinusoidal_encoding(rng):
    T, d = 7, 6
    table = sinusoidal_table(T, d, dtype=np.float64)
    for pos in range(T):
        for i in range(d // 2):
            ang = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i] == pytest.approx(np.sin(ang), abs=1e-15)
            assert table[pos, 2 * i + 1] == pytest.approx(np.cos(ang), abs=1e-15)
    odd = sinusoidal_table(3, 5, dtype=np.float64)
    np.testing.assert_allclose(odd[:, 4], np.sin(np.arange(3) / 10000 ** (4 / 5)))
    layer = SinusoidalPositionalEncoding()
    x = rng.standard_normal((2, T, d))
    y = layer(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, x + table, rtol=0, atol=1e-15)
    assert layer.count_params() == 0
    assert pydl.gradcheck(SinusoidalPositionalEncoding(), x)["x"] < 1e-8
    y32 = SinusoidalPositionalEncoding()(x.astype(np.float32))
    assert y32.dtype == np.float32
    with pytest.raises(ValueError, match=r"SinusoidalPositionalEncoding.*\(N, T, features\)"):
        SinusoidalPositionalEncoding()(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"SinusoidalPositionalEncoding.*max_wavelength"):
        SinusoidalPositionalEncoding(max_wavelength=0)


# ---- TransformerEncoder ------------------------------------------------------------------------

def _encoder(d=8, T=5, **kw):
    enc = TransformerEncoder(**{"num_heads": 2, "ff_dim": 12, "dropout": 0.0, **kw})
    enc.build((None, T, d))
    return enc


def test_encoder_params_are_the_sublayers(rng):
    enc = _encoder()
    names = set(enc.params)
    assert {"attention.query_kernel", "norm1.gamma", "ffn1.W", "ffn2.b", "norm2.beta"} <= names
    assert enc.params["ffn1.W"] is enc.ffn1.params["W"]
    assert enc.count_params() == sum(getattr(enc, n).count_params() for n in TransformerEncoder._SUBS)
    assert enc.attention.key_dim == 4 and enc.ffn1.units == 12
    with pytest.raises(ValueError, match=r"TransformerEncoder.*d = 7.*num_heads = 2"):
        TransformerEncoder(2, ff_dim=4).build((None, 5, 7))
    TransformerEncoder(2, key_dim=3, ff_dim=4).build((None, 5, 7))
    with pytest.raises(ValueError, match=r"TransformerEncoder.*\(N, T, features\)"):
        TransformerEncoder(2).build((None, 8))
    with pytest.raises(ValueError, match=r"TransformerEncoder.*expected input of shape \(N, 5, 8\)"):
        enc(np.zeros((2, 5, 9), np.float32))


def encoder_ref(enc, x):
    """float64 NumPy forward of the block (dropout 0)."""
    p = {k: np.asarray(v, np.float64) for k, v in enc.params.items()}
    eps = enc.epsilon

    def ln(h, n):
        return ln_ref(h, p[f"{n}.gamma"], p[f"{n}.beta"], eps)

    def ffn(h):
        return np.maximum(h @ p["ffn1.W"] + p["ffn1.b"], 0) @ p["ffn2.W"] + p["ffn2.b"]

    if enc.norm_first:
        n1 = ln(x, "norm1")
        h = x + mha_ref(enc.attention, n1, n1)
        return h + ffn(ln(h, "norm2"))
    h = ln(x + mha_ref(enc.attention, x, x), "norm1")
    return ln(h + ffn(h), "norm2")


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_encoder_forward_reference_and_gradients(norm_first, rng):
    enc = _encoder(norm_first=norm_first)
    for a in enc.params.values():
        a[...] += rng.standard_normal(a.shape) * 0.3
    enc.params = {k: v.astype(np.float64) for k, v in enc.params.items()}
    assert enc.ffn1.params["W"].dtype == np.float64
    x = rng.standard_normal((2, 5, 8))
    np.testing.assert_allclose(enc(x), encoder_ref(enc, x), rtol=1e-10, atol=1e-12)
    errs = pydl.gradcheck(enc, x)
    assert len(errs) == 1 + 16


def test_encoder_gradcheck_with_dropout(rng):
    enc = _encoder(dropout=0.3)
    enc.params = {k: v.astype(np.float64) for k, v in enc.params.items()}
    x = rng.standard_normal((2, 5, 8))
    pydl.seed(1)
    assert not np.allclose(enc(x, training=True), enc(x))
    pydl.gradcheck(enc, x)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_encoder_matches_torch(norm_first, rng):
    torch = _torch()
    d, H, ff, T = 16, 4, 24, 6
    enc = TransformerEncoder(H, ff_dim=ff, dropout=0.0, norm_first=norm_first)
    enc.build((None, T, d))
    for a in enc.params.values():
        a[...] += (rng.standard_normal(a.shape) * 0.2).astype(np.float32)
    t = torch.nn.TransformerEncoderLayer(d, H, ff, dropout=0.0, batch_first=True, norm_first=norm_first).double()
    P = {k: torch.from_numpy(v.astype(np.float64)) for k, v in enc.params.items()}
    with torch.no_grad():
        sa = t.self_attn
        sa.in_proj_weight.copy_(torch.cat([P["attention.query_kernel"].T, P["attention.key_kernel"].T,
                                           P["attention.value_kernel"].T]))
        sa.in_proj_bias.copy_(torch.cat([P["attention.query_bias"], P["attention.key_bias"],
                                         P["attention.value_bias"]]))
        sa.out_proj.weight.copy_(P["attention.output_kernel"].T)
        sa.out_proj.bias.copy_(P["attention.output_bias"])
        t.linear1.weight.copy_(P["ffn1.W"].T)
        t.linear1.bias.copy_(P["ffn1.b"])
        t.linear2.weight.copy_(P["ffn2.W"].T)
        t.linear2.bias.copy_(P["ffn2.b"])
        for n in ("norm1", "norm2"):
            getattr(t, n).weight.copy_(P[f"{n}.gamma"])
            getattr(t, n).bias.copy_(P[f"{n}.beta"])
    t.train()  # the math path (the fast path gives no gradients)
    x = rng.standard_normal((3, T, d)).astype(np.float32)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    yt = t(xt)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.from_numpy(dy))
    y = enc(x, training=True)
    dx = enc.backward(dy.astype(np.float32))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(enc.grads["ffn1.W"], t.linear1.weight.grad.numpy().T, rtol=1e-3, atol=1e-3)
    qk = enc.grads["attention.query_kernel"]
    np.testing.assert_allclose(qk, t.self_attn.in_proj_weight.grad.numpy()[:d].T, rtol=1e-3, atol=1e-3)


# ---- models -----------------------------------------------------------------------------------

def small_transformer(T=6, f=5, d=8, classes=3, seed=0, mask_input=False, pre_norm_block=True):
    pydl.seed(seed)
    inp = Input(shape=(T, f))
    x = Dense(d)(inp)
    x = PositionalEmbedding(T, d)(SinusoidalPositionalEncoding()(x))
    x = TransformerEncoder(2, ff_dim=12, dropout=0.1)(x)
    if pre_norm_block:
        x = TransformerEncoder(2, key_dim=3, ff_dim=10, norm_first=True, dropout=0.0, activation="tanh")(x)
    ins = [inp]
    if mask_input:
        m = Input(shape=(T, T))
        x = x + MultiHeadAttention(2, 4, dropout=0.1)(x, x, attention_mask=m)
        ins.append(m)
    x = LayerNormalization()(x)
    out = Dense(classes, activation="softmax")(GlobalAveragePooling1D()(x))
    return Model(ins if mask_input else inp, out)


def _seq_data(rng, n=24, T=6, f=5, classes=3):
    x = rng.standard_normal((n, T, f)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64) + (x[:, 0, 1] > 0.5)
    return x, np.minimum(y, classes - 1)


def test_small_transformer_gradcheck_float64(rng):
    model = small_transformer(mask_input=True)
    x, y = _seq_data(rng, n=3)
    mask = np.tril(np.ones((3, 6, 6), np.float32))
    errs = pydl.gradcheck(model, [x, mask], y, loss="sparse_categorical_crossentropy")
    assert len(errs) > 30


def test_shared_encoder_gradcheck(rng):
    pydl.seed(2)
    a, b = Input(shape=(4, 8)), Input(shape=(4, 8))
    enc = TransformerEncoder(2, ff_dim=8, dropout=0.0)
    out = enc(a) + enc(b)
    model = Model([a, b], out)
    assert model.layers.count(enc) == 1
    x1, x2 = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 4, 8))
    pydl.gradcheck(model, [x1, x2])


def test_save_load_identical_predictions(tmp_path, rng):
    model = small_transformer(mask_input=True)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    x, y = _seq_data(rng)
    mask = np.tril(np.ones((len(x), 6, 6), np.float32))
    model.fit([x, mask], y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "tfm.npz"
    model.save(path)
    loaded = pydl.load_model(path)
    np.testing.assert_array_equal(loaded.predict([x, mask]), model.predict([x, mask]))
    enc = [l for l in loaded.layers if isinstance(l, TransformerEncoder)]
    assert len(enc) == 2 and enc[1].norm_first and enc[1].attention.key_dim == 3
    # training continues identically (same optimizer state, same dropout stream)
    pydl.seed(5)
    model.fit([x, mask], y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    pydl.seed(5)
    loaded.fit([x, mask], y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_causal_model_save_load(tmp_path, rng):
    inp = Input(shape=(5, 6))
    model = Model(inp, MultiHeadAttention(2, 3)(inp, inp, use_causal_mask=True))
    model.save(tmp_path / "c.npz")
    loaded = pydl.load_model(tmp_path / "c.npz")
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.layers[0].use_causal_mask


def test_transformer_learns(rng):
    model = small_transformer(pre_norm_block=False)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(3e-3),
                  metrics=["accuracy"])
    x, y = _seq_data(rng, n=128)
    first = model.evaluate(x, y, return_dict=True)["loss"]
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    res = model.evaluate(x, y, return_dict=True)
    assert res["loss"] < 0.5 * first and res["accuracy"] > 0.8, (first, res)


@pytest.mark.parametrize("cls,args,shape", [
    (LayerNormalization, {"epsilon": 1e-5, "center": False}, (None, 4, 6)),
    (MultiHeadAttention, {"num_heads": 2, "key_dim": 3, "value_dim": 4, "dropout": 0.1, "output_shape": 5},
     [(None, 4, 6), (None, 5, 6)]),
    (PositionalEmbedding, {"sequence_length": 8, "output_dim": 6}, (None, 4, 6)),
    (SinusoidalPositionalEncoding, {"max_wavelength": 100.0}, (None, 4, 6)),
    (TransformerEncoder, {"num_heads": 2, "ff_dim": 7, "dropout": 0.2, "norm_first": True, "activation": "tanh"},
     (None, 4, 6)),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_config_round_trip(cls, args, shape):
    layer = cls(**args)
    layer.build(shape)
    cfg = layer.get_config()
    for k, v in args.items():
        assert cfg[k] == v
    again = cls.from_config(cfg)
    again.build(shape)
    assert again.get_config() == cfg
    assert {k: v.shape for k, v in again.params.items()} == {k: v.shape for k, v in layer.params.items()}
