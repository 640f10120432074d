"""Recurrent layers (SimpleRNN, LSTM, GRU) and Embedding.

Input (N, T, C): batch, time steps, features. Output: the last state h_T (N, H), or every
state (N, T, H) with `return_sequences=True`. Each layer runs one fused C++ kernel for the
whole sequence (pydl.ops.rnn_forward / rnn_backward): the input projection of all steps is one
GEMM, each step one GEMM into all gates plus a fused point-wise cell, and the backward pass is
one reverse sweep with the weight gradients formed as GEMMs over all time steps at the end.
SimpleRNN, LSTM, GRU and Bidirectional run on the GPU too (CuPy inputs and weights: the CUDA
kernels of pydl.cuda.rnn); Embedding runs on the CPU only.

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

from .._validate import flag
from .. import initializers, registry
from ..random import next_seed
from ..ops import device
from ..ops.embedding import embedding_backward, embedding_forward
from ..ops.rnn import rnn_backward, rnn_forward
from .base import Layer, register_layer

__all__ = ["SimpleRNN", "LSTM", "GRU", "Embedding", "Bidirectional", "Orthogonal", "orthogonal"]


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

def _rate(v, name, who):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"[{who}] {name} must be a number in [0, 1), got {v!r}") from None
    if not 0.0 <= v < 1.0:
        raise ValueError(f"[{who}] {name} must be in [0, 1), got {v!r}")
    return v


def _keep_mask(shape, rate, dtype):
    """Inverted-dropout multipliers: 0 with probability `rate`, else 1 / (1 - rate); drawn from
    a generator seeded by pydl's global one (pydl.seed)."""
    gen = np.random.default_rng(next_seed())
    return ((gen.random(shape) >= rate) / (1.0 - rate)).astype(dtype)


class _Recurrent(Layer):
    cell = ""
    gates = 1
    supports_masking = True
    supports_cuda = True

    def __init__(self, units, activation="tanh", return_sequences=False, return_state=False, go_backwards=False,
                 dropout=0.0, recurrent_dropout=0.0, zero_output_for_mask=False,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"[{type(self).__name__}] units must be a positive int, got {units!r}")
        self.units = int(units)
        self.go_backwards = flag(go_backwards, "go_backwards", type(self).__name__)
        self.dropout = _rate(dropout, "dropout", type(self).__name__)
        self.recurrent_dropout = _rate(recurrent_dropout, "recurrent_dropout", type(self).__name__)
        self.zero_output_for_mask = flag(zero_output_for_mask, "zero_output_for_mask", type(self).__name__)
        self.activation = activation
        self.return_sequences = flag(return_sequences, "return_sequences", type(self).__name__)
        self.return_state = flag(return_state, "return_state", type(self).__name__)
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

    def compute_mask(self, inputs, mask=None):
        """The input mask for the sequence output (return_sequences=True; the output of
        go_backwards is in processing order, the mask is not reversed, as Keras), else None."""
        out = mask if self.return_sequences else None
        if self.return_state:
            return [out] + [None] * (2 if self.cell == "lstm" else 1)
        return out

    def _check_mask(self, mask, N, T):
        m = device.asarray(mask)
        if m.dtype == object or not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.number)):
            raise TypeError(f"[{self._op}] mask must be a bool array (N, T), got dtype {m.dtype}")
        if m.shape != (N, T):
            raise ValueError(f"[{self._op}] mask has shape {m.shape}, expected (N, T) = ({N}, {T}) from the input")
        return m != 0

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

    def forward(self, x, training=False, initial_state=None, ctx=None, mask=None):
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
        T = np.shape(x)[1]
        dtype = p["W"].dtype
        if mask is not None:
            mask = self._check_mask(mask, N, T)
        if self.go_backwards:
            x = device.asarray(x)[:, ::-1]
            if mask is not None:
                mask = mask[:, ::-1]
        in_keep = rec_keep = None
        where = device.device_of(p["W"])
        if training and self.dropout > 0.0:
            in_keep = device.to_device(_keep_mask((N, 1, np.shape(x)[2]), self.dropout, dtype), where)
            x = device.asarray(x)
            x = x.astype(np.result_type(x.dtype, dtype), copy=False) * in_keep
        if training and self.recurrent_dropout > 0.0:
            rec_keep = device.to_device(_keep_mask((N, self.units), self.recurrent_dropout, dtype), where)
        keep_cache = ctx.need_backward if ctx is not None else True  # no cache for inference
        out, hT, cT, cache = rnn_forward(self.cell, x, p["W"], p["U"], p["b"], h0=h0, c0=c0, b_h=p.get("b_h"),
                                         activation=self.activation if self.cell == "rnn" else "tanh",
                                         mask=mask, recurrent_scale=rec_keep, keep_cache=keep_cache)
        ctx = self.forward_context(ctx)
        ctx.cache = cache
        ctx.in_keep = in_keep
        # Outputs at masked steps, as Keras: zero with zero_output_for_mask, else the previous
        # step's output (zero before the first unmasked step; the kernel gives the kept state).
        ctx.out_keep = None
        if mask is not None and self.return_sequences:
            if self.zero_output_for_mask:
                keep = mask
            elif device.is_cuda(mask):  # a step is kept from the first unmasked one on
                keep = device.namespace(mask).cumsum(mask, axis=1) > 0
            else:
                keep = np.logical_or.accumulate(mask, axis=1)
            if not keep.all():
                ctx.out_keep = keep[:, :, None].astype(out.dtype)
                out = out * ctx.out_keep
        y = out if self.return_sequences else hT
        if self.return_state:
            return [y, hT, cT] if self.cell == "lstm" else [y, hT]
        return y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        if ctx.cache is None:
            raise RuntimeError(f"[{self._label()}] backward called after an inference forward pass (predict, "
                               f"evaluate or calling the model), which keeps no per-step cache")
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
            if dseq is not None and ctx.out_keep is not None:
                dseq = device.asarray(dseq) * ctx.out_keep
        else:
            dseq = None
            if dy is None:
                dhT = d_hT_extra
            elif d_hT_extra is None:
                dhT = dy
            else:
                dhT = device.asarray(dy) + device.asarray(d_hT_extra)
        g = rnn_backward(self.cell, dseq, dhT, d_cT, ctx.cache, need_dx=ctx.need_input_grad)
        pdt = self.params["W"].dtype
        for k in ("W", "U", "b") + (("b_h",) if self.cell == "gru" else ()):
            self.add_grad(k, g["d" + k].astype(pdt, copy=False))
        self.initial_state_grads = (g["dh0"], g["dc0"]) if self.cell == "lstm" else g["dh0"]
        dx = g["dx"]
        if dx is not None:
            if ctx.in_keep is not None:
                dx *= ctx.in_keep
            if self.go_backwards:
                dx = device.ascontiguous(dx[:, ::-1])
        return dx

    def flops(self) -> int:
        if self.input_shape is None or self.input_shape[1] is None:
            return 0
        T, C = self.input_shape[1], self.input_shape[2]
        GH = self.gates * self.units
        return int(T * (2 * C * GH + 2 * self.units * GH))

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(units=self.units, return_sequences=self.return_sequences, return_state=self.return_state,
                   go_backwards=self.go_backwards, dropout=self.dropout, recurrent_dropout=self.recurrent_dropout,
                   zero_output_for_mask=self.zero_output_for_mask,
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
        self.unit_forget_bias = flag(unit_forget_bias, "unit_forget_bias", type(self).__name__)

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

    Indices must lie in [0, input_dim) (ValueError naming the layer, the id and input_dim
    otherwise). Integer ids are used as they are (int64 throughout; a model passes integer input
    arrays to an Embedding uncast, so ids >= 2**24 select the right row); float inputs are
    accepted when they hold whole numbers. backward scatters the output gradient into dW
    (repeated indices add up) and returns None: there is no gradient with respect to ids.
    mask_zero=True: id 0 is padding; the layer's output mask is ids != 0 (N, T), which a model
    passes to the layers after it (recurrent layers skip the masked steps); as Keras, input_dim
    should then count id 0 (vocabulary size + 1).
    """

    # a model hands integer input arrays to this layer without a float cast
    integer_input = True
    supports_cuda = True

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False, input_shape=None,
                 name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        for nm, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"[Embedding] {nm} must be a positive int, got {v!r}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = _get_initializer(embeddings_initializer)
        self.mask_zero = flag(mask_zero, "mask_zero", type(self).__name__)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        xp = device.namespace(inputs)
        return xp.not_equal(xp.asarray(inputs), 0)

    def build(self, input_shape):
        self.params = {"W": self.embeddings_initializer((self.input_dim, self.output_dim))}
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def forward(self, x, training=False, ctx=None):
        if not self.built:
            self.build((None,) + tuple(np.shape(x))[1:])
        op = f"Embedding {self.name}"
        ctx = self.forward_context(ctx)
        y = embedding_forward(x, self.params["W"], op=op)
        ctx.ids = x
        return y

    def backward(self, dout, ctx=None):
        ids = self.backward_context(ctx).ids
        W = self.params["W"]
        want = tuple(np.shape(ids)) + (self.output_dim,)
        if tuple(np.shape(dout)) != want:
            raise ValueError(f"[Embedding {self.name}] dout has shape {tuple(np.shape(dout))}, expected {want}")
        dW = self.grads.get("W")
        if dW is None:
            dW = self.grads["W"] = device.zeros(W.shape, W.dtype, device.device_of(W))
        embedding_backward(dout, ids, W.shape, out=dW, op=f"Embedding {self.name}")
        return None

    def count_params(self) -> int:
        return self.input_dim * self.output_dim

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(input_dim=self.input_dim, output_dim=self.output_dim, mask_zero=self.mask_zero)
        cfg["embeddings_initializer"] = initializers.serialize(self.embeddings_initializer)
        return cfg


# ---- bidirectional wrapper ---------------------------------------------------------------

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@register_layer
class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy of it backwards over the sequence, as Keras.

    Bidirectional(LSTM(16, return_sequences=True), merge_mode="concat"). The backward copy is
    the layer's config with go_backwards flipped (or `backward_layer`, which must have the other
    go_backwards and the same return_sequences / return_state). It runs on the time-reversed
    sequence; with a mask, the whole padded sequence and its mask are reversed together (Keras'
    go_backwards). With return_sequences, its outputs are flipped back to forward time order
    before merging: "concat" (last axis), "sum", "mul", "ave", or None (a list [forward,
    backward]). With return_state the outputs are [output(s), forward states..., backward
    states...]. As in Keras, both copies are set to zero_output_for_mask = return_sequences.
    Weights are named forward_W, forward_U, ... and backward_W, ... (the copies' own arrays).
    """

    supports_masking = True
    supports_cuda = True

    def __init__(self, layer, merge_mode="concat", backward_layer=None, input_shape=None, name=None, trainable=True):
        if isinstance(layer, dict):
            layer = _deserialize_layer(layer)
        if isinstance(backward_layer, dict):
            backward_layer = _deserialize_layer(backward_layer)
        if not isinstance(layer, _Recurrent):
            raise ValueError(f"[Bidirectional] layer must be a SimpleRNN, LSTM or GRU instance, got "
                             f"{type(layer).__name__}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"[Bidirectional] merge_mode must be one of 'concat', 'sum', 'mul', 'ave' or None, "
                             f"got {merge_mode!r}")
        super().__init__(input_shape=input_shape if input_shape is not None else layer.input_shape_arg,
                         name=name, trainable=trainable)
        base = layer.name
        for pre in ("forward_", "backward_"):
            if base.startswith(pre):
                base = base[len(pre):]
        cfg = {k: v for k, v in layer.get_config().items() if k != "input_shape"}
        self.forward_layer = type(layer).from_config({**cfg, "name": "forward_" + base})
        if backward_layer is None:
            self.backward_layer = type(layer).from_config({**cfg, "name": "backward_" + base,
                                                           "go_backwards": not layer.go_backwards})
            self._custom_backward = False
        else:
            if not isinstance(backward_layer, _Recurrent):
                raise ValueError(f"[Bidirectional] backward_layer must be a SimpleRNN, LSTM or GRU instance, got "
                                 f"{type(backward_layer).__name__}")
            if backward_layer.go_backwards == self.forward_layer.go_backwards:
                raise ValueError("[Bidirectional] the forward and backward layers must have different go_backwards "
                                 f"values, both have {backward_layer.go_backwards}")
            for a in ("return_sequences", "return_state"):
                if getattr(backward_layer, a) != getattr(self.forward_layer, a):
                    raise ValueError(f"[Bidirectional] the forward and backward layers must have the same {a}, got "
                                     f"{getattr(self.forward_layer, a)} and {getattr(backward_layer, a)}")
            self.backward_layer = backward_layer
            self._custom_backward = True
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences = self.forward_layer.return_sequences
        self.return_state = self.forward_layer.return_state

    @property
    def _op(self):
        return f"Bidirectional {self.name}"

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        for sub in (self.forward_layer, self.backward_layer):
            sub.build(input_shape)
        self._sync_params()
        super().build(input_shape)

    def _sync_params(self):
        self.params = {f"forward_{k}": v for k, v in self.forward_layer.params.items()}
        self.params.update({f"backward_{k}": v for k, v in self.backward_layer.params.items()})

    def _pull_params(self):
        """The copies compute with this layer's arrays (an optimizer or loader may replace them)."""
        for pre, sub in (("forward_", self.forward_layer), ("backward_", self.backward_layer)):
            for k in sub.params:
                sub.params[k] = self.params[pre + k]

    def compute_output_shape(self, input_shape):
        out = self.forward_layer.compute_output_shape(tuple(input_shape))
        states = []
        if self.return_state:
            out, states = out[0], list(out[1:])
        if self.merge_mode == "concat":
            out = tuple(out[:-1]) + (2 * out[-1],)
            outs = [out]
        elif self.merge_mode is None:
            outs = [tuple(out), tuple(out)]
        else:
            outs = [tuple(out)]
        if len(outs) == 1 and not self.return_state:
            return outs[0]
        return outs + states + states

    def compute_mask(self, inputs, mask=None):
        out = mask if self.return_sequences else None
        outs = [out, out] if self.merge_mode is None else [out]
        if self.return_state:
            n_states = 2 if self.forward_layer.cell == "lstm" else 1
            outs = outs + [None] * (2 * n_states)
        return outs if len(outs) > 1 else outs[0]

    def forward(self, x, training=False, ctx=None, mask=None):
        if not self.built:
            self.build((None,) + tuple(np.shape(x))[1:])
        self._pull_params()
        ctx = self.forward_context(ctx)
        if getattr(ctx, "sub", None) is None:
            ctx.sub = (self.forward_layer.new_context(), self.backward_layer.new_context())
        for c in ctx.sub:
            c.need_input_grad = ctx.need_input_grad
            c.need_backward = ctx.need_backward
        yf = self.forward_layer.forward(x, training, ctx=ctx.sub[0], mask=mask)
        yb = self.backward_layer.forward(x, training, ctx=ctx.sub[1], mask=mask)
        sf = sb = []
        if self.return_state:
            yf, sf = yf[0], list(yf[1:])
            yb, sb = yb[0], list(yb[1:])
        if self.return_sequences:
            yb = yb[:, ::-1]
        if self.merge_mode == "concat":
            out = [device.namespace(yf).concatenate([yf, yb], axis=-1)]
        elif self.merge_mode == "sum":
            out = [yf + yb]
        elif self.merge_mode == "ave":
            out = [(yf + yb) * yf.dtype.type(0.5)]
        elif self.merge_mode == "mul":
            out = [yf * yb]
            ctx.yf, ctx.yb = yf, yb
        else:
            out = [yf, device.ascontiguous(yb)]
        out = out + sf + sb
        return out if len(out) > 1 else out[0]

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        n_out = 2 if self.merge_mode is None else 1
        n_states = (2 if self.forward_layer.cell == "lstm" else 1) if self.return_state else 0
        if n_out + 2 * n_states > 1:
            if not isinstance(dout, (list, tuple)) or len(dout) != n_out + 2 * n_states:
                raise ValueError(f"[{self._op}] backward takes a list of {n_out + 2 * n_states} gradients (outputs, "
                                 f"then forward and backward states); entries may be None")
            douts = list(dout)
        else:
            douts = [dout]
        dy, dstates = douts[:n_out], douts[n_out:]
        H = self.forward_layer.units
        if self.merge_mode is None:
            dyf, dyb = dy
        elif dy[0] is None:
            dyf = dyb = None
        else:
            d = device.asarray(dy[0])
            if self.merge_mode == "concat":
                dyf, dyb = d[..., :H], d[..., H:]
            elif self.merge_mode == "sum":
                dyf = dyb = d
            elif self.merge_mode == "ave":
                dyf = dyb = d * d.dtype.type(0.5)
            else:  # mul
                dyf, dyb = d * ctx.yb, d * ctx.yf
        if dyb is not None and self.return_sequences:
            dyb = device.asarray(dyb)[:, ::-1]
        dx = None
        for sub, c, dys, st in ((self.forward_layer, ctx.sub[0], dyf, dstates[:n_states]),
                                (self.backward_layer, ctx.sub[1], dyb, dstates[n_states:])):
            g = [dys] + list(st) if self.return_state else dys
            if (all(v is None for v in g) if self.return_state else g is None):
                continue
            if not self.return_state:
                g = device.ascontiguous(device.asarray(g))
            d = sub.backward(g, ctx=c)
            pre = "forward_" if sub is self.forward_layer else "backward_"
            for k, v in sub.grads.items():
                self.add_grad(pre + k, v)
            sub.grads.clear()
            if d is not None:
                dx = d if dx is None else dx + d
        return dx

    def zero_grads(self) -> None:
        super().zero_grads()
        self.forward_layer.zero_grads()
        self.backward_layer.zero_grads()

    def flops(self) -> int:
        return self.forward_layer.flops() + self.backward_layer.flops()

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg["merge_mode"] = self.merge_mode
        cfg["layer"] = {"class_name": type(self.forward_layer).__name__, "config": self.forward_layer.get_config()}
        if self._custom_backward:
            cfg["backward_layer"] = {"class_name": type(self.backward_layer).__name__,
                                     "config": self.backward_layer.get_config()}
        return cfg


def _deserialize_layer(entry):
    if not isinstance(entry, dict) or set(entry) != {"class_name", "config"}:
        raise ValueError(f"[Bidirectional] a layer config must be {{'class_name': ..., 'config': {{...}}}}, "
                         f"got {entry!r:.200}")
    cls = registry.layers.get(entry["class_name"])
    return cls.from_config(dict(entry["config"]))
