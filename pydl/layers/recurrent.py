"""Recurrent layers (SimpleRNN, LSTM, GRU) and Embedding.

Input (N, T, C): batch, time steps, features. Output: the last state h_T (N, H), or every
state (N, T, H) with `return_sequences=True`. Each layer runs one fused C++ kernel for the
whole sequence (pydl.ops.rnn_forward / rnn_backward): the input projection of all steps is one
GEMM, each step one GEMM into all gates plus a fused point-wise cell, and the backward pass is
one reverse sweep with the weight gradients formed as GEMMs over all time steps at the end.

Parameters (G gates: SimpleRNN 1, LSTM 4 in the order i f g o, GRU 3 in the order r z n):
    W (C, G*H) input kernel, U (H, G*H) recurrent kernel, b (G*H,) bias; the GRU also has
    b_h (G*H,), the recurrent bias, which its n gate multiplies by r.

Cells:
    SimpleRNN  h' = act(x W + h U + b)
    LSTM       i, f, o = sigmoid, g = tanh of (x W + h U + b);  c' = f c + i g;  h' = o tanh(c')
    GRU        r, z = sigmoid(x W + b + h U + b_h);  n = tanh((x W + b)_n + r (h U + b_h)_n)
               h' = (1 - z) n + z h      (PyTorch's GRU; Keras' GRU with reset_after=True)

Copying weights from PyTorch (nn.RNN / nn.LSTM / nn.GRU, one layer, batch_first=True; the gate
orders already agree):
    W = weight_ih_l0.T       U = weight_hh_l0.T
    SimpleRNN, LSTM:  b = bias_ih_l0 + bias_hh_l0
    GRU:              b = bias_ih_l0,  b_h = bias_hh_l0
(Keras' LSTM kernel / recurrent_kernel / bias map to W / U / b directly; Keras' GRU with
reset_after=True stores bias as (2, 3H): b = bias[0], b_h = bias[1].)

Initial states and extra outputs:
    layer.forward(x, initial_state=h0)            SimpleRNN / GRU, h0 (N, H)
    layer.forward(x, initial_state=[h0, c0])      LSTM
With `return_state=True` forward returns [output, h_T] (LSTM: [output, h_T, c_T]) and backward
accepts the matching list of gradients, any of which may be None. The gradients of the initial
states are left in `layer.initial_state_grads` after backward. Called on a symbolic tensor, a
layer with return_state=True returns a list of symbolic tensors (a functional `pydl.Model` can use
the states); in a `Sequential` stack use return_state=False.
Gradient clipping is the optimizer's job (clipnorm / clipvalue) and applies to these gradients
like any other.
"""
from __future__ import annotations

import numpy as np

from .. import initializers, registry
from ..ops.rnn import rnn_backward, rnn_forward
from .base import Layer, register_layer

__all__ = ["SimpleRNN", "LSTM", "GRU", "Embedding", "Orthogonal", "orthogonal"]


# ---- the orthogonal initializer (for recurrent kernels) -----------------------------------

@registry.initializers.register
class Orthogonal(initializers.Initializer):
    """A (rows, cols) matrix with orthonormal rows (rows <= cols) or columns (rows > cols), times gain.

    QR of a Gaussian matrix with the signs of R's diagonal folded into Q, so the result is
    uniformly distributed over the orthogonal matrices. Shapes of rank > 2 are flattened to
    (shape[0], prod(rest)).
    """

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = float(gain)

    def generate(self, shape):
        if len(shape) < 2:
            raise ValueError(f"[Orthogonal] needs a shape of rank >= 2, got {shape}")
        rows, cols = int(shape[0]), int(np.prod(shape[1:]))
        a = self.rng().standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        d = np.sign(np.diag(r))
        d[d == 0] = 1.0
        q = q * d
        if rows < cols:
            q = q.T
        return (self.gain * q[:rows, :cols]).reshape(shape)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


def orthogonal(shape, gain: float = 1.0, dtype=np.float32) -> np.ndarray:
    """An orthogonal matrix of `shape` drawn from pydl's generator (see Orthogonal)."""
    return Orthogonal(gain)(shape, dtype)


def _get_initializer(identifier):
    """initializers.get, plus the names "orthogonal" and "uniform" (Keras' Embedding default)."""
    if isinstance(identifier, str) and identifier.lower() == "orthogonal":
        return Orthogonal()
    if identifier == "uniform":
        return initializers.get("random_uniform")
    return initializers.get(identifier)


# ---- recurrent layers --------------------------------------------------------------------

class _Recurrent(Layer):
    cell = ""
    gates = 1

    def __init__(self, units, activation="tanh", return_sequences=False, return_state=False,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"[{type(self).__name__}] units must be a positive int, got {units!r}")
        self.units = int(units)
        self.activation = activation
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.kernel_initializer = _get_initializer(kernel_initializer)
        self.recurrent_initializer = _get_initializer(recurrent_initializer)
        self.bias_initializer = _get_initializer(bias_initializer)
        self.initial_state_grads = None

    @property
    def _op(self):
        return f"{type(self).__name__} {self.name}"

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"[{self._op}] expects inputs (N, T, C): batch, time steps, features; "
                             f"got input shape {input_shape}")
        C = input_shape[-1]
        if C is None or int(C) < 1:
            raise ValueError(f"[{self._op}] the feature dimension C must be known and positive, got {input_shape}")
        C, H, G = int(C), self.units, self.gates
        self.params = {
            "W": self.kernel_initializer((C, G * H)),
            "U": self.recurrent_initializer((H, G * H)),
            "b": self.bias_initializer((G * H,)),
        }
        self._init_extra_params()
        super().build(input_shape)

    def _init_extra_params(self):
        pass

    def compute_output_shape(self, input_shape):
        n = input_shape[0]
        out = (n, input_shape[1], self.units) if self.return_sequences else (n, self.units)
        if self.return_state:  # several outputs: [output, h_T] (LSTM: [output, h_T, c_T])
            return [out] + [(n, self.units)] * (2 if self.cell == "lstm" else 1)
        return out

    def _split_state(self, initial_state):
        if initial_state is None:
            return None, None
        if isinstance(initial_state, (list, tuple)):
            want = 2 if self.cell == "lstm" else 1
            if len(initial_state) != want:
                raise ValueError(f"[{self._op}] initial_state must be {'[h0, c0]' if want == 2 else 'h0 or [h0]'}, "
                                 f"got a list of {len(initial_state)}")
            return initial_state[0], (initial_state[1] if want == 2 else None)
        if self.cell == "lstm":
            raise ValueError(f"[{self._op}] the LSTM's initial_state is the pair [h0, c0]")
        return initial_state, None

    def forward(self, x, training=False, initial_state=None, ctx=None):
        if not self.built:
            self.build((None,) + tuple(np.shape(x))[1:])
        if np.ndim(x) != 3:
            raise ValueError(f"[{self._op}] expects inputs (N, T, C): batch, time steps, features; "
                             f"got shape {np.shape(x)}")
        C = self.params["W"].shape[0]
        if np.shape(x)[2] != C:
            raise ValueError(f"[{self._op}] input has {np.shape(x)[2]} features (shape {np.shape(x)}), "
                             f"but the layer was built for C={C}")
        h0, c0 = self._split_state(initial_state)
        N = np.shape(x)[0]
        for s, nm in ((h0, "h0"), (c0, "c0")):
            if s is not None and np.shape(s) != (N, self.units):
                raise ValueError(f"[{self._op}] initial state {nm} has shape {np.shape(s)}, "
                                 f"expected (N, units) = ({N}, {self.units})")
        p = self.params
        out, hT, cT, cache = rnn_forward(self.cell, x, p["W"], p["U"], p["b"], h0=h0, c0=c0, b_h=p.get("b_h"),
                                         activation=self.activation if self.cell == "rnn" else "tanh")
        ctx = self.forward_context(ctx)
        ctx.cache = cache
        y = out if self.return_sequences else hT
        if self.return_state:
            return [y, hT, cT] if self.cell == "lstm" else [y, hT]
        return y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        d_hT_extra = d_cT = None
        if self.return_state:
            want = 3 if self.cell == "lstm" else 2
            if not isinstance(dout, (list, tuple)) or len(dout) != want:
                raise ValueError(f"[{self._op}] with return_state=True backward takes a list of {want} gradients "
                                 f"(output, h_T{', c_T' if want == 3 else ''}); entries may be None")
            dy, d_hT_extra = dout[0], dout[1]
            if want == 3:
                d_cT = dout[2]
        else:
            dy = dout
        if self.return_sequences:
            dseq, dhT = dy, d_hT_extra
        else:
            dseq = None
            if dy is None:
                dhT = d_hT_extra
            elif d_hT_extra is None:
                dhT = dy
            else:
                dhT = np.asarray(dy) + np.asarray(d_hT_extra)
        g = rnn_backward(self.cell, dseq, dhT, d_cT, ctx.cache, need_dx=ctx.need_input_grad)
        pdt = self.params["W"].dtype
        for k in ("W", "U", "b") + (("b_h",) if self.cell == "gru" else ()):
            self.add_grad(k, g["d" + k].astype(pdt, copy=False))
        self.initial_state_grads = (g["dh0"], g["dc0"]) if self.cell == "lstm" else g["dh0"]
        return g["dx"]

    def flops(self) -> int:
        if self.input_shape is None or self.input_shape[1] is None:
            return 0
        T, C = self.input_shape[1], self.input_shape[2]
        GH = self.gates * self.units
        return int(T * (2 * C * GH + 2 * self.units * GH))

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(units=self.units, return_sequences=self.return_sequences, return_state=self.return_state,
                   kernel_initializer=initializers.serialize(self.kernel_initializer),
                   recurrent_initializer=initializers.serialize(self.recurrent_initializer),
                   bias_initializer=initializers.serialize(self.bias_initializer))
        return cfg


@register_layer
class SimpleRNN(_Recurrent):
    """Fully connected recurrent layer: h' = act(x W + h U + b), act "tanh" (default) or "relu"."""

    cell = "rnn"
    gates = 1

    def __init__(self, units, activation="tanh", **kwargs):
        if activation not in ("tanh", "relu"):
            raise ValueError(f"[SimpleRNN] activation must be 'tanh' or 'relu', got {activation!r}")
        super().__init__(units, activation=activation, **kwargs)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg["activation"] = self.activation
        return cfg


@register_layer
class LSTM(_Recurrent):
    """Long short-term memory; gates i, f, g, o. unit_forget_bias=True starts b_f at 1 (as Keras)."""

    cell = "lstm"
    gates = 4

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        if kwargs.get("activation", "tanh") != "tanh":
            raise ValueError("[LSTM] the cell's activations are fixed (sigmoid gates, tanh); activation must be 'tanh'")
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _init_extra_params(self):
        if self.unit_forget_bias:
            H = self.units
            self.params["b"][H:2 * H] = 1.0

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg["unit_forget_bias"] = self.unit_forget_bias
        return cfg


@register_layer
class GRU(_Recurrent):
    """Gated recurrent unit in PyTorch's form (gates r, z, n; separate recurrent bias b_h)."""

    cell = "gru"
    gates = 3

    def __init__(self, units, **kwargs):
        if kwargs.get("activation", "tanh") != "tanh":
            raise ValueError("[GRU] the cell's activations are fixed (sigmoid gates, tanh); activation must be 'tanh'")
        super().__init__(units, **kwargs)

    def _init_extra_params(self):
        self.params["b_h"] = self.bias_initializer((3 * self.units,))


# ---- embedding ---------------------------------------------------------------------------

@register_layer
class Embedding(Layer):
    """Looks up rows of W (input_dim, output_dim) for integer inputs (N, T) -> (N, T, output_dim).

    Indices must lie in [0, input_dim) (ValueError otherwise); float inputs are accepted when
    they hold whole numbers. backward scatters the output gradient into dW (repeated indices
    add up) and returns None: there is no gradient with respect to integer indices.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", input_shape=None, name=None,
                 trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        for nm, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"[Embedding] {nm} must be a positive int, got {v!r}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = _get_initializer(embeddings_initializer)

    def build(self, input_shape):
        self.params = {"W": self.embeddings_initializer((self.input_dim, self.output_dim))}
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def _indices(self, x):
        op = f"Embedding {self.name}"
        a = np.asarray(x)
        if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise TypeError(f"[{op}] inputs must be integer indices, got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating):
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise ValueError(f"[{op}] inputs must be whole-number indices; got non-integer values")
        if a.size:
            lo, hi = a.min(), a.max()
            if lo < 0 or hi >= self.input_dim:
                raise ValueError(f"[{op}] index out of range [0, {self.input_dim}): found values in [{lo}, {hi}] "
                                 f"(input shape {a.shape})")
        return a.astype(np.intp, copy=False)

    def forward(self, x, training=False, ctx=None):
        if not self.built:
            self.build((None,) + tuple(np.shape(x))[1:])
        idx = self._indices(x)
        ctx = self.forward_context(ctx)
        ctx.idx = idx
        return np.take(self.params["W"], idx, axis=0)

    def backward(self, dout, ctx=None):
        idx = self.backward_context(ctx).idx
        W = self.params["W"]
        want = idx.shape + (self.output_dim,)
        dout = np.asarray(dout)
        if dout.shape != want:
            raise ValueError(f"[Embedding {self.name}] dout has shape {dout.shape}, expected {want}")
        dW = self.grads.get("W")
        if dW is None:
            dW = self.grads["W"] = np.zeros_like(W)
        np.add.at(dW, idx.reshape(-1), dout.reshape(-1, self.output_dim).astype(W.dtype, copy=False))
        return None

    def count_params(self) -> int:
        return self.input_dim * self.output_dim

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(input_dim=self.input_dim, output_dim=self.output_dim)
        cfg["embeddings_initializer"] = initializers.serialize(self.embeddings_initializer)
        return cfg
