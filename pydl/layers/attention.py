"""Attention layers: LayerNormalization, MultiHeadAttention, positional encodings and the
Transformer encoder block (as keras.layers / keras_hub.layers).

    x = Dense(64)(tokens)                                  # (N, T, 64) token embedding
    x = SinusoidalPositionalEncoding()(x)                  # or PositionalEmbedding(T, 64)(x)
    x = TransformerEncoder(num_heads=4, ff_dim=128)(x)     # self-attention + feed-forward block
    y = MultiHeadAttention(4, key_dim=16)(x, x)            # Keras call: (query, value, key=None, ...)

Everything runs on `pydl.ops.attention` (fused FlashAttention kernels) and `pydl.ops.norm`
(fused layer norm); projections are GEMMs through `pydl.ops.nn`. Sequences are channels last:
(N, T, features), as Keras.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._validate import flag
from .. import initializers
from ..ops import attention as attn_ops
from ..ops import nn
from ..ops import norm as norm_ops
from ..random import next_seed
from .base import Layer, _fmt_shape, register_layer
from .core import Dense, Dropout, _activation_kind, _as_dtype


def _float_input(x, dtype, who):
    """x as a C-contiguous array of `dtype` (the layer's weights' dtype), or x's own float dtype."""
    if dtype is None:
        dtype = x.dtype if getattr(x, "dtype", None) in (np.float32, np.float64) else np.float32
    return _as_dtype(x, dtype, who)


def _positive_int(v, what, who):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"[{who}] {what} must be a positive int, got {v!r}")
    return int(v)


def _rate(v, what, who):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= float(v) < 1.0):
        raise ValueError(f"[{who}] {what} must be a number in [0, 1), got {v!r}")
    return float(v)


# ---- LayerNormalization ---------------------------------------------------------------------

@register_layer
class LayerNormalization(Layer):
    """y = (x - mean) / sqrt(var + epsilon) * gamma + beta, statistics over the last axis of each
    sample (any rank >= 2: (N, C), (N, T, C), ...). Keras defaults: epsilon 1e-3, center and scale.

    Only the last axis is supported (`axis=-1`, or the last axis as a positive index, or a
    one-element list of it). gamma (C,) starts at ones, beta (C,) at zeros.
    """

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, input_shape=None, name=None,
                 trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        if isinstance(axis, (list, tuple)) and len(axis) == 1:
            axis = axis[0]
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"[LayerNormalization] axis must be an int (the last axis), got {axis!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon) \
                or epsilon <= 0:
            raise ValueError(f"[LayerNormalization] epsilon must be a positive number, got {epsilon!r}")
        self.axis = int(axis)
        self.epsilon = float(epsilon)
        self.center, self.scale = flag(center, "center", type(self).__name__), flag(scale, "scale", type(self).__name__)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        who = f"LayerNormalization '{self.name}'"
        if len(input_shape) < 2:
            raise ValueError(f"[{who}] expects input (N, ..., features), got shape {_fmt_shape(input_shape)}")
        if self.axis not in (-1, len(input_shape) - 1):
            raise ValueError(f"[{who}] only the last axis can be normalised (axis=-1 or {len(input_shape) - 1} for "
                             f"input {_fmt_shape(input_shape)}), got axis={self.axis}")
        c = input_shape[-1]
        if c is None:
            raise ValueError(f"[{who}] needs a known last (feature) dimension, got {_fmt_shape(input_shape)}")
        self.params = {}
        if self.scale:
            self.params["gamma"] = np.ones(c, np.float32)
        if self.center:
            self.params["beta"] = np.zeros(c, np.float32)
        super().build(input_shape)

    def check_input(self, x):
        if self.built and np.ndim(x) != len(self.input_shape):
            raise ValueError(f"[LayerNormalization '{self.name}'] expected input of shape "
                             f"{_fmt_shape(self.input_shape)}, got {tuple(np.shape(x))}")
        super().check_input(x)

    def _dtype(self):
        p = self.params.get("gamma", self.params.get("beta"))
        return None if p is None else p.dtype

    def forward(self, x, training=False, ctx=None):
        self.check_input(x)
        ctx = self.forward_context(ctx)
        x = _float_input(x, self._dtype(), "LayerNormalization")
        y, ctx.mean, ctx.rstd = norm_ops.layer_norm(x, self.params.get("gamma"), self.params.get("beta"),
                                                    self.epsilon)
        ctx.x = x
        return y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        dout = _float_input(dout, ctx.x.dtype, "LayerNormalization")
        dx, dgamma, dbeta = norm_ops.layer_norm_backward(dout, ctx.x, self.params.get("gamma"), ctx.mean, ctx.rstd)
        if self.scale:
            self.add_grad("gamma", dgamma)
        if self.center:
            self.add_grad("beta", dbeta)
        return dx

    def flops(self):
        return 8 * int(np.prod([d for d in self.input_shape[1:] if d is not None])) if self.built else 0

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale}


# ---- MultiHeadAttention -----------------------------------------------------------------------

@register_layer
class MultiHeadAttention(Layer):
    """Multi-head attention as keras.layers.MultiHeadAttention, on sequences (N, T, features):

        out = mha(query, value)                       # key = value
        out = mha(query, value, key, attention_mask=m, use_causal_mask=True)
        out = mha(x, x)                               # self-attention

    Q = query W_q + b_q, K = key W_k + b_k, V = value W_v + b_v with W_q, W_k of shape (features,
    num_heads * key_dim) and W_v (features, num_heads * value_dim) (Keras's (features, heads, dim)
    kernels, reshaped); per head softmax(Q K^T / sqrt(key_dim) + mask) V (one fused kernel,
    `pydl.ops.attention`), heads concatenated, then out = heads W_o + b_o, W_o (num_heads *
    value_dim, output_shape); output_shape defaults to the query's feature size. Output (N, T,
    output_shape).

    attention_mask: (N, T, S) (or (T, S), shared by the batch), True / nonzero = attend, as Keras
    (a numeric mask counts values > 0.5 as True). use_causal_mask: query i attends keys j <= i.
    A query row that can attend nothing gets an output of b_o (zero attention), where Keras
    would average every value. dropout: on the attention probabilities, in training only; the
    kernel regenerates the mask in the backward pass from a seed drawn from `pydl.seed`.

    As a graph layer it is a multi-input layer: `mha(q, v)` on symbolic tensors records the list
    call `mha([q, v])`; with a key `[q, v, k]`, with a mask `[q, v, k, mask]` (key = value when
    not given). A mask is then a model input (`pydl.Input(shape=(T, S))`); its gradient is None.
    `use_causal_mask` given on a symbolic call is stored on the layer (and saved with it); a layer
    shared between calls with different values is refused. backward returns one gradient per
    input; when query, value (and key) are one array, the whole gradient is in the first entry
    (a model sums the entries of a tensor given twice either way).
    """
    multi_input = True

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", use_causal_mask=False,
                 input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        who = "MultiHeadAttention"
        self.num_heads = _positive_int(num_heads, "num_heads", who)
        self.key_dim = _positive_int(key_dim, "key_dim", who)
        self.value_dim = self.key_dim if value_dim is None else _positive_int(value_dim, "value_dim", who)
        self.dropout = _rate(dropout, "dropout", who)
        self.use_bias = flag(use_bias, "use_bias", who)
        if isinstance(output_shape, (list, tuple)):
            if len(output_shape) != 1:
                raise ValueError(f"[{who}] output_shape must be an int (the output feature size), got {output_shape!r}")
            output_shape = output_shape[0]
        self.output_dim = None if output_shape is None else _positive_int(output_shape, "output_shape", who)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.use_causal_mask = flag(use_causal_mask, "use_causal_mask", who)
        self._causal_from_call = None  # the use_causal_mask a symbolic call gave

    # -- calling --------------------------------------------------------------------------------
    def __call__(self, query, value=None, key=None, attention_mask=None, use_causal_mask=None, training=False):
        from .. import graph

        if isinstance(query, (list, tuple)):  # the list form: mha([q, v]) / [q, v, k] / [q, v, k, mask]
            if value is not None or key is not None or attention_mask is not None:
                raise ValueError(f"[{self._label()}] pass the inputs either as a list or as arguments, not both")
            xs = list(query)
        else:
            if value is None:
                raise ValueError(f"[{self._label()}] needs query and value: mha(query, value), mha(x, x) for "
                                 f"self-attention")
            xs = [query, value]
            if key is not None or attention_mask is not None:
                xs.append(value if key is None else key)
            if attention_mask is not None:
                xs.append(attention_mask)
        if use_causal_mask is not None and not isinstance(use_causal_mask, (bool, np.bool_)):
            raise ValueError(f"[{self._label()}] use_causal_mask must be a bool, got {use_causal_mask!r}")
        if graph.is_symbolic(xs):
            if use_causal_mask is not None:
                if self._causal_from_call is not None and self._causal_from_call != bool(use_causal_mask):
                    raise ValueError(f"[{self._label()}] was called with use_causal_mask={self._causal_from_call} "
                                     f"before; a layer shared between calls must use one setting (use two layers)")
                self._causal_from_call = self.use_causal_mask = bool(use_causal_mask)
            return graph.call_layer(self, xs)
        if not self.built:
            self.build([(None,) + tuple(np.shape(t))[1:] for t in xs])
        return self.forward(xs, training=training, use_causal_mask=use_causal_mask)

    # -- shapes ---------------------------------------------------------------------------------
    def _check_shapes(self, shapes, fn=_fmt_shape):
        who = self._label()
        if not 2 <= len(shapes) <= 4:
            raise ValueError(f"[{who}] takes [query, value], [query, value, key] or [query, value, key, mask]; got "
                             f"{len(shapes)} inputs")
        names = ("query", "value", "key")
        for nm, s in zip(names, shapes[:3]):
            if len(s) != 3:
                raise ValueError(f"[{who}] {nm} must be (N, T, features), got shape {fn(s)} "
                                 f"(inputs {', '.join(fn(t) for t in shapes)})")
            if s[2] is None:
                raise ValueError(f"[{who}] {nm} needs a known feature size, got {fn(s)}")
        q, v = shapes[0], shapes[1]
        k = shapes[2] if len(shapes) > 2 else v
        if k[1] is not None and v[1] is not None and k[1] != v[1]:
            raise ValueError(f"[{who}] key {fn(k)} and value {fn(v)} must have the same length S")
        if len(shapes) == 4:
            m = shapes[3]
            T, S = q[1], v[1] if v[1] is not None else k[1]
            if len(m) not in (2, 3) or (m[-2] is not None and T is not None and m[-2] != T) or \
                    (m[-1] is not None and S is not None and m[-1] != S):
                raise ValueError(f"[{who}] attention_mask must be (N, T, S) = (N, {T}, {S}) for query {fn(q)} and "
                                 f"value {fn(v)}, got {fn(m)}")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not all(isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(f"[{self._label()}] build takes a list of shapes [query, value(, key, mask)], got "
                             f"{input_shape!r}")
        shapes = [tuple(s) for s in input_shape]
        self._check_shapes(shapes)
        dq, dv = shapes[0][2], shapes[1][2]
        dk = shapes[2][2] if len(shapes) > 2 else dv
        hk, hv = self.num_heads * self.key_dim, self.num_heads * self.value_dim
        out = self.output_dim or dq
        ki, bi = self.kernel_initializer, self.bias_initializer
        self.params = {"query_kernel": ki((dq, hk)), "key_kernel": ki((dk, hk)), "value_kernel": ki((dv, hv)),
                       "output_kernel": ki((hv, out))}
        if self.use_bias:
            for nm, n in (("query_bias", hk), ("key_bias", hk), ("value_bias", hv), ("output_bias", out)):
                self.params[nm] = bi((n,))
        self._dims = (dq, dv, dk)
        super().build(shapes)

    def compute_output_shape(self, input_shape):
        q = input_shape[0]
        return (q[0], q[1], self.output_dim or q[2])

    def check_input(self, xs):
        who = self._label()
        if not self.built:
            raise ValueError(f"[{who}] is not built; call it on [query, value] or build([shapes]) first")
        if not isinstance(xs, (list, tuple)):
            raise ValueError(f"[{who}] takes a list [query, value, (key, mask)], got {type(xs).__name__}")
        shapes = [tuple(np.shape(x)) for x in xs]
        self._check_shapes(shapes, fn=str)
        dq, dv, dk = self._dims
        got = (shapes[0][2], shapes[1][2], shapes[2][2] if len(shapes) > 2 else shapes[1][2])
        if got != (dq, dv, dk):
            raise ValueError(f"[{who}] was built for query / value / key features {(dq, dv, dk)}, got inputs "
                             f"{shapes[:3]}")
        B = shapes[0][0]
        if any(s[0] != B for s in shapes[1:3]) or (len(shapes) == 4 and len(shapes[3]) == 3
                                                    and shapes[3][0] not in (1, B)):
            raise ValueError(f"[{who}] inputs have different batch sizes: {shapes}")

    # -- forward / backward -----------------------------------------------------------------------
    def _heads(self, z2, B, L, dim):
        """(B*L, H*dim) -> (B, H, L, dim) view (the op copies it to contiguous)."""
        return z2.reshape(B, L, self.num_heads, dim).transpose(0, 2, 1, 3)

    def _merge(self, a, B, L):
        """(B, H, L, dim) -> (B*L, H*dim), contiguous."""
        return np.ascontiguousarray(a.transpose(0, 2, 1, 3)).reshape(B * L, -1)

    def forward(self, inputs, training=False, ctx=None, use_causal_mask=None):
        self.check_input(inputs)
        ctx = self.forward_context(ctx)
        p = self.params
        dt = p["query_kernel"].dtype
        raw = list(inputs)
        n_in = len(raw)
        q_in, v_in = raw[0], raw[1]
        k_in = raw[2] if n_in > 2 else v_in
        mask = raw[3] if n_in > 3 else None
        fused = q_in is v_in and k_in is v_in  # self-attention: one GEMM for Q, K and V
        B, T, S = np.shape(q_in)[0], np.shape(q_in)[1], np.shape(v_in)[1]
        hk, hv = self.num_heads * self.key_dim, self.num_heads * self.value_dim
        bias = self.use_bias
        if fused:
            x = _float_input(q_in, dt, "MultiHeadAttention").reshape(B * T, -1)
            W = np.concatenate([p["query_kernel"], p["key_kernel"], p["value_kernel"]], axis=1)
            b = np.concatenate([p["query_bias"], p["key_bias"], p["value_bias"]]) if bias else None
            z = nn.dense_forward(x, W, b, "linear")
            zq, zk, zv = z[:, :hk], z[:, hk:2 * hk], z[:, 2 * hk:]
            ctx.xs, ctx.zs, ctx.W = (x,), (z,), W
        else:
            x_q = _float_input(q_in, dt, "MultiHeadAttention").reshape(B * T, -1)
            x_v = _float_input(v_in, dt, "MultiHeadAttention").reshape(B * S, -1)
            x_k = x_v if k_in is v_in else _float_input(k_in, dt, "MultiHeadAttention").reshape(B * S, -1)
            zq = nn.dense_forward(x_q, p["query_kernel"], p.get("query_bias"), "linear")
            zk = nn.dense_forward(x_k, p["key_kernel"], p.get("key_bias"), "linear")
            zv = nn.dense_forward(x_v, p["value_kernel"], p.get("value_bias"), "linear")
            ctx.xs, ctx.zs, ctx.W = (x_q, x_k, x_v), (zq, zk, zv), None
        q = self._heads(zq, B, T, self.key_dim)
        k = self._heads(zk, B, S, self.key_dim)
        v = self._heads(zv, B, S, self.value_dim)
        if mask is not None:
            m = np.asarray(mask)
            if m.dtype != np.bool_:
                m = m > 0.5
            mask = m[:, None] if m.ndim == 3 else m  # (B, 1, T, S) or (T, S)
        causal = self.use_causal_mask if use_causal_mask is None else bool(use_causal_mask)
        rate = self.dropout if training else 0.0
        seed = next_seed() if rate > 0.0 else None
        q, k, v = (np.ascontiguousarray(a) for a in (q, k, v))
        o, lse = attn_ops.attention_forward(q, k, v, mask=mask, causal=causal, dropout=rate, training=True,
                                            seed=seed)
        heads = self._merge(o, B, T)
        y = nn.dense_forward(heads, p["output_kernel"], p.get("output_bias"), "linear")
        ctx.qkv, ctx.o, ctx.lse, ctx.heads, ctx.y = (q, k, v), o, lse, heads, y
        ctx.mask, ctx.causal, ctx.rate, ctx.seed = mask, causal, rate, seed
        ctx.fused, ctx.n_in, ctx.shape = fused, n_in, (B, T, S)
        ctx.k_is_v = k_in is v_in
        return y.reshape(B, T, -1)

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        p = self.params
        dt = p["query_kernel"].dtype
        B, T, S = ctx.shape
        bias = self.use_bias
        dy = _float_input(dout, dt, "MultiHeadAttention").reshape(B * T, -1)
        dheads, dWo, dbo = nn.dense_backward(dy, ctx.heads, p["output_kernel"], ctx.y, "linear", None,
                                             need_dx=True, has_bias=bias)
        self.add_grad("output_kernel", dWo)
        if bias:
            self.add_grad("output_bias", dbo)
        hd = np.ascontiguousarray(self._heads(dheads, B, T, self.value_dim))
        q, k, v = ctx.qkv
        dq, dk, dv = attn_ops.attention_backward(q, k, v, ctx.o, ctx.lse, hd, mask=ctx.mask, causal=ctx.causal,
                                                 dropout=ctx.rate, seed=ctx.seed)
        need = ctx.need_input_grad
        hk = self.num_heads * self.key_dim
        names = (("query_kernel", "query_bias"), ("key_kernel", "key_bias"), ("value_kernel", "value_bias"))
        if ctx.fused:
            if self.value_dim == self.key_dim:  # heads merged straight into the (B*T, 3 H d) gradient
                dz = np.empty((B * T, 3 * hk), dt)
                dz5 = dz.reshape(B, T, 3, self.num_heads, self.key_dim)
                for i, g in enumerate((dq, dk, dv)):
                    np.copyto(dz5[:, :, i], g.transpose(0, 2, 1, 3))
            else:
                dz = np.concatenate([self._merge(dq, B, T), self._merge(dk, B, T), self._merge(dv, B, T)], axis=1)
            dx, dW, db = nn.dense_backward(dz, ctx.xs[0], ctx.W, ctx.zs[0], "linear", None, need_dx=need,
                                           has_bias=bias)
            cuts = (0, hk, 2 * hk, dW.shape[1])
            for i, (wn, bn) in enumerate(names):
                self.add_grad(wn, np.ascontiguousarray(dW[:, cuts[i]:cuts[i + 1]]))
                if bias:
                    self.add_grad(bn, db[cuts[i]:cuts[i + 1]].copy())
            grads = [None if dx is None else dx.reshape(B, T, -1)] + [None] * (ctx.n_in - 1)
            return grads if need else [None] * ctx.n_in
        dxs = []
        dzs = (self._merge(dq, B, T), self._merge(dk, B, S), self._merge(dv, B, S))
        for (wn, bn), x, z, dz in zip(names, ctx.xs, ctx.zs, dzs):
            dx, dW, db = nn.dense_backward(dz, x, p[wn], z, "linear", None, need_dx=need, has_bias=bias)
            self.add_grad(wn, dW)
            if bias:
                self.add_grad(bn, db)
            dxs.append(dx)
        if not need:
            return [None] * ctx.n_in
        dxq, dxk, dxv = dxs
        dq_in = dxq.reshape(B, T, -1)
        if ctx.n_in == 2:  # key = value
            return [dq_in, (dxv + dxk).reshape(B, S, -1)]
        out = [dq_in, dxv.reshape(B, S, -1), dxk.reshape(B, S, -1)]
        if ctx.k_is_v:  # the same array given as value and key: all of it in the value's entry
            out[1] = (dxv + dxk).reshape(B, S, -1)
            out[2] = None
        return out + [None] * (ctx.n_in - 3)

    def flops(self):
        if not self.built:
            return 0
        q, v = self.input_shape[0], self.input_shape[1]
        T, S = q[1] or 0, v[1] or 0
        dq, dv, dk = self._dims
        hk, hv = self.num_heads * self.key_dim, self.num_heads * self.value_dim
        out = self.output_dim or dq
        return 2 * (T * dq * hk + S * dk * hk + S * dv * hv + T * hv * out + T * S * (hk + hv))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "dropout": self.dropout, "use_bias": self.use_bias,
                "output_shape": self.output_dim,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "use_causal_mask": self.use_causal_mask}


# ---- positional encodings -----------------------------------------------------------------------

def _check_sequence(layer, input_shape):
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[2] is None:
        raise ValueError(f"[{layer._label()}] expects input (N, T, features) with known features, got shape "
                         f"{_fmt_shape(input_shape)}")
    return input_shape


@register_layer
class PositionalEmbedding(Layer):
    """Learned position embeddings added to a sequence: (N, T, d) -> x + P[:T], P of shape
    (sequence_length, output_dim) (`embeddings`, glorot_uniform), d == output_dim, T <=
    sequence_length (shorter sequences use the first T rows)."""

    def __init__(self, sequence_length, output_dim, embeddings_initializer="glorot_uniform", input_shape=None,
                 name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        self.sequence_length = _positive_int(sequence_length, "sequence_length", "PositionalEmbedding")
        self.output_dim = _positive_int(output_dim, "output_dim", "PositionalEmbedding")
        self.embeddings_initializer = initializers.get(embeddings_initializer)

    def _check_len(self, shape, fn=_fmt_shape):
        if shape[2] != self.output_dim:
            raise ValueError(f"[{self._label()}] input features {shape[2]} must equal output_dim = {self.output_dim}, "
                             f"got input {fn(shape)}")
        if shape[1] is not None and shape[1] > self.sequence_length:
            raise ValueError(f"[{self._label()}] input has {shape[1]} positions, more than sequence_length = "
                             f"{self.sequence_length} (input {fn(shape)})")

    def build(self, input_shape):
        input_shape = _check_sequence(self, input_shape)
        self._check_len(input_shape)
        self.params = {"embeddings": self.embeddings_initializer((self.sequence_length, self.output_dim))}
        super().build(input_shape)

    def check_input(self, x):
        if self.built and np.ndim(x) != 3:
            raise ValueError(f"[{self._label()}] expected input of shape {_fmt_shape(self.input_shape)}, got "
                             f"{tuple(np.shape(x))}")
        super().check_input(x)
        self._check_len(tuple(np.shape(x)), fn=str)

    def forward(self, x, training=False, ctx=None):
        self.check_input(x)
        ctx = self.forward_context(ctx)
        P = self.params["embeddings"]
        x = _float_input(x, P.dtype, "PositionalEmbedding")
        ctx.T = x.shape[1]
        return x + P[:ctx.T]

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        P = self.params["embeddings"]
        dout = np.asarray(dout)
        g = np.zeros_like(P)
        np.sum(dout, axis=0, dtype=P.dtype, out=g[:ctx.T])
        self.add_grad("embeddings", g)
        return dout if ctx.need_input_grad else None

    def flops(self):
        return int(np.prod([d for d in self.input_shape[1:] if d is not None])) if self.built else 0

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length, "output_dim": self.output_dim,
                "embeddings_initializer": initializers.serialize(self.embeddings_initializer)}


def sinusoidal_table(length: int, dim: int, max_wavelength: float = 10000.0, dtype=np.float32) -> np.ndarray:
    """(length, dim): PE[p, 2i] = sin(p / w^(2i/dim)), PE[p, 2i+1] = cos(p / w^(2i/dim)), w = max_wavelength
    (Vaswani et al. 2017), computed in float64."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    i2 = np.arange(0, dim, 2, dtype=np.float64)
    angle = pos / np.power(float(max_wavelength), i2 / dim)
    pe = np.empty((length, dim), np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, :dim // 2])
    return pe.astype(dtype)


@register_layer
class SinusoidalPositionalEncoding(Layer):
    """Fixed sinusoidal position encodings added to a sequence: (N, T, d) -> x + PE[:T] with
    PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)). No weights."""

    def __init__(self, max_wavelength=10000.0, input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        if isinstance(max_wavelength, bool) or not isinstance(max_wavelength, numbers.Real) or \
                not math.isfinite(max_wavelength) or max_wavelength <= 0:
            raise ValueError(f"[SinusoidalPositionalEncoding] max_wavelength must be a positive number, got "
                             f"{max_wavelength!r}")
        self.max_wavelength = float(max_wavelength)
        self._table = None

    def build(self, input_shape):
        super().build(_check_sequence(self, input_shape))

    def check_input(self, x):
        if self.built and np.ndim(x) != 3:
            raise ValueError(f"[{self._label()}] expected input of shape {_fmt_shape(self.input_shape)}, got "
                             f"{tuple(np.shape(x))}")
        super().check_input(x)

    def table(self, T: int, d: int, dtype) -> np.ndarray:
        t = self._table
        if t is None or t.shape[0] < T or t.shape[1] != d or t.dtype != dtype:
            t = self._table = sinusoidal_table(max(T, 1), d, self.max_wavelength, dtype)
        return t[:T]

    def forward(self, x, training=False, ctx=None):
        self.check_input(x)
        self.forward_context(ctx)
        x = _float_input(x, None, "SinusoidalPositionalEncoding")
        return x + self.table(x.shape[1], x.shape[2], x.dtype)

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        return dout if ctx.need_input_grad else None

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}


# ---- Transformer encoder block --------------------------------------------------------------------

@register_layer
class TransformerEncoder(Layer):
    """One Transformer encoder block on (N, T, d) (Vaswani et al.; keras_hub.layers.TransformerEncoder,
    torch.nn.TransformerEncoderLayer with batch_first=True):

        post-norm (norm_first=False):  h = LN1(x + Drop(MHA(x, x)));   y = LN2(h + Drop(FFN(h)))
        pre-norm  (norm_first=True):   h = x + Drop(MHA(LN1(x), LN1(x)));   y = h + Drop(FFN(LN2(h)))

    with FFN(h) = Dense(d)(Dense(ff_dim, activation)(h)) on the last axis. key_dim defaults to
    d / num_heads (d must then be a multiple of num_heads); ff_dim to 4 d. `dropout` is applied to
    the attention probabilities and to the two branch outputs (training only). epsilon is the layer
    norms' (1e-5, as PyTorch and keras_hub).

    One layer holding its sub-layers (MultiHeadAttention, two LayerNormalization, two Dense,
    two Dropout): its forward and backward run theirs with per-call contexts kept in the block's
    own context, so a shared block works like any shared layer. Its `params` / `grads` are the
    sub-layers' arrays under "attention.*", "norm1.*", "ffn1.*", "ffn2.*", "norm2.*" (the same
    array objects, so optimizers and save/load see them as this layer's weights).
    """
    _SUBS = ("attention", "norm1", "ffn1", "ffn2", "norm2")

    def __init__(self, num_heads, key_dim=None, ff_dim=None, dropout=0.1, norm_first=False, activation="relu",
                 epsilon=1e-5, input_shape=None, name=None, trainable=True):
        self._subs = None
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        who = "TransformerEncoder"
        self.num_heads = _positive_int(num_heads, "num_heads", who)
        self.key_dim = None if key_dim is None else _positive_int(key_dim, "key_dim", who)
        self.ff_dim = None if ff_dim is None else _positive_int(ff_dim, "ff_dim", who)
        self.dropout = _rate(dropout, "dropout", who)
        self.norm_first = flag(norm_first, "norm_first", who)
        self.activation = _activation_kind(activation, who)
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon) \
                or epsilon <= 0:
            raise ValueError(f"[{who}] epsilon must be a positive number, got {epsilon!r}")
        self.epsilon = float(epsilon)

    # params / grads are views of the sub-layers' dicts -------------------------------------------
    def _sub_items(self, attr):
        return {f"{n}.{k}": v for n in self._SUBS for k, v in getattr(getattr(self, n), attr).items()}

    def _distribute(self, attr, value):
        value = dict(value)
        for n in self._SUBS:
            setattr(getattr(self, n), attr, {})
        for key, v in value.items():
            n, _, k = key.partition(".")
            if n not in self._SUBS or not k:
                raise KeyError(f"[{self._label()}] no sub-layer weight {key!r}")
            getattr(getattr(self, n), attr)[k] = v

    @property
    def params(self):
        return self._params if self._subs is None else self._sub_items("params")

    @params.setter
    def params(self, value):
        if self._subs is None:
            self._params = value
        else:
            self._distribute("params", value)

    @property
    def grads(self):
        return self._grads if self._subs is None else self._sub_items("grads")

    @grads.setter
    def grads(self, value):
        if self._subs is None:
            self._grads = value
        else:
            self._distribute("grads", value)

    def zero_grads(self):
        if self._subs is None:
            self._grads.clear()
        for n in self._SUBS if self._subs is not None else ():
            getattr(self, n).zero_grads()

    def add_grad(self, key, g):
        n, _, k = key.partition(".")
        getattr(self, n).add_grad(k, g)

    # -- build ------------------------------------------------------------------------------------
    def build(self, input_shape):
        input_shape = _check_sequence(self, input_shape)
        d = input_shape[2]
        key_dim = self.key_dim
        if key_dim is None:
            if d % self.num_heads:
                raise ValueError(f"[{self._label()}] the feature size d = {d} of input {_fmt_shape(input_shape)} is "
                                 f"not a multiple of num_heads = {self.num_heads}; give key_dim")
            key_dim = d // self.num_heads
        ff = self.ff_dim or 4 * d
        nm = self.name
        self._subs = None
        self.attention = MultiHeadAttention(self.num_heads, key_dim, dropout=self.dropout, name=f"{nm}.attention")
        self.norm1 = LayerNormalization(epsilon=self.epsilon, name=f"{nm}.norm1")
        self.norm2 = LayerNormalization(epsilon=self.epsilon, name=f"{nm}.norm2")
        self.ffn1 = Dense(ff, activation=self.activation, name=f"{nm}.ffn1")
        self.ffn2 = Dense(d, name=f"{nm}.ffn2")
        self.drop1 = Dropout(self.dropout, name=f"{nm}.drop1")
        self.drop2 = Dropout(self.dropout, name=f"{nm}.drop2")
        self.attention.build([input_shape, input_shape])
        for l, s in ((self.norm1, input_shape), (self.norm2, input_shape), (self.ffn1, input_shape),
                     (self.ffn2, input_shape[:2] + (ff,)), (self.drop1, input_shape), (self.drop2, input_shape)):
            l.build(s)
        self._subs = self._SUBS
        super().build(input_shape)

    def check_input(self, x):
        if self.built and np.ndim(x) != 3:
            raise ValueError(f"[{self._label()}] expected input of shape {_fmt_shape(self.input_shape)}, got "
                             f"{tuple(np.shape(x))}")
        super().check_input(x)

    def _contexts(self, ctx):
        subs = getattr(ctx, "subs", None)
        if subs is None or subs["attention"].layer is not self.attention:
            subs = ctx.subs = {n: getattr(self, n).new_context()
                               for n in self._SUBS + ("drop1", "drop2")}
        return subs

    def forward(self, x, training=False, ctx=None):
        self.check_input(x)
        ctx = self.forward_context(ctx)
        c = self._contexts(ctx)
        c["attention"].need_input_grad = ctx.need_input_grad or self.norm_first  # pre-norm: LN1 needs it
        x = _float_input(x, self.ffn2.params["W"].dtype, "TransformerEncoder")
        if self.norm_first:
            n1 = self.norm1.forward(x, training, ctx=c["norm1"])
            a = self.drop1.forward(self.attention.forward([n1, n1], training, ctx=c["attention"]), training,
                                   ctx=c["drop1"])
            h = x + a
            n2 = self.norm2.forward(h, training, ctx=c["norm2"])
            f = self.ffn2.forward(self.ffn1.forward(n2, training, ctx=c["ffn1"]), training, ctx=c["ffn2"])
            return h + self.drop2.forward(f, training, ctx=c["drop2"])
        a = self.drop1.forward(self.attention.forward([x, x], training, ctx=c["attention"]), training,
                               ctx=c["drop1"])
        h = self.norm1.forward(x + a, training, ctx=c["norm1"])
        f = self.ffn2.forward(self.ffn1.forward(h, training, ctx=c["ffn1"]), training, ctx=c["ffn2"])
        return self.norm2.forward(h + self.drop2.forward(f, training, ctx=c["drop2"]), training, ctx=c["norm2"])

    def _ffn_back(self, d, c):
        d = self.drop2.backward(d, ctx=c["drop2"])
        return self.ffn1.backward(self.ffn2.backward(d, ctx=c["ffn2"]), ctx=c["ffn1"])

    def _attn_back(self, d, c):
        d = self.drop1.backward(d, ctx=c["drop1"])
        dq, dv = self.attention.backward(d, ctx=c["attention"])
        if dq is None:
            return dv
        return dq if dv is None else dq + dv

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        c = ctx.subs
        if self.norm_first:
            dh = dout + self.norm2.backward(self._ffn_back(dout, c), ctx=c["norm2"])
            if not ctx.need_input_grad:
                self.norm1.backward(self._attn_back(dh, c), ctx=c["norm1"])
                return None
            return dh + self.norm1.backward(self._attn_back(dh, c), ctx=c["norm1"])
        d2 = self.norm2.backward(dout, ctx=c["norm2"])
        dh = d2 + self._ffn_back(d2, c)
        d1 = self.norm1.backward(dh, ctx=c["norm1"])
        da = self._attn_back(d1, c)
        if not ctx.need_input_grad:
            return None
        return d1 + da

    def get_rng_state(self):
        return None

    def flops(self):
        if not self.built:
            return 0
        return sum(getattr(self, n).flops() for n in self._SUBS) + 3 * int(np.prod(self.input_shape[1:]))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim, "ff_dim": self.ff_dim,
                "dropout": self.dropout, "norm_first": self.norm_first, "activation": self.activation,
                "epsilon": self.epsilon}


__all__ = ["LayerNormalization", "MultiHeadAttention", "PositionalEmbedding", "SinusoidalPositionalEncoding",
           "TransformerEncoder", "sinusoidal_table"]
