"""Core layers: Dense, activations, Dropout, BatchNormalization, Flatten, Reshape.

Every layer checks each input against the shape it was built for and raises ValueError
naming the layer and both shapes. Weights are float32 (a float64 copy runs the exact path,
which is how `pydl.gradcheck` checks them).
"""
from __future__ import annotations

import math

import numpy as np

from .._validate import flag
from .. import backend, initializers, regularizers
from ..ops import device, nn
from ..random import next_seed
from .base import Layer, _fmt_shape, register_layer

_ALL_ACTIVATIONS = nn.ACTIVATIONS
# Keras names that are another name of a kind above.
_ACTIVATION_ALIASES = {"silu": "swish"}
# Slopes used by the string activations, as keras.activations: leaky_relu(x, negative_slope=0.2), elu(alpha=1).
_DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}


def _activation_kind(activation, who: str, valid=None) -> str:
    """The kind name of an activation given as None, a name ("gelu", "silu", ...) or a function of
    pydl.activations."""
    valid = _ALL_ACTIVATIONS if valid is None else valid
    if activation is None:
        return "linear"
    kind = getattr(activation, "_pydl_kind", None) if callable(activation) else activation
    if isinstance(kind, str):
        kind = _ACTIVATION_ALIASES.get(kind, kind)
    if not isinstance(kind, str) or kind not in valid:
        raise ValueError(f"[{who}] unknown activation {activation!r}; expected one of {', '.join(valid)}, "
                         f"silu, a function of pydl.activations, or None")
    return kind


def _as_dtype(x, dtype, who: str):
    """The layer's input as a C-contiguous array of the weights' dtype, on its own device."""
    return device.as_input(x, dtype, who)


def _known(shape, who: str, what: str = "input") -> None:
    if any(d is None for d in shape[1:]):
        raise ValueError(f"[{who}] needs a fully known {what} shape apart from the batch, got {_fmt_shape(shape)}")


@register_layer
class Dense(Layer):
    """y = activation(x @ W + b), W of shape (in, units), applied on the last axis of x.

    Inputs of any rank >= 2 are accepted, as in Keras: (N, ..., in) -> (N, ..., units), computed
    as one GEMM on x viewed as 2-D. An element-wise activation (linear, relu, sigmoid, tanh,
    leaky_relu, elu, gelu, swish, softplus, selu, ...) runs fused with the product in one op;
    softmax and log_softmax run as a separate op on the logits (over the last axis).
    """

    supports_cuda = True

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, input_shape=None,
                 name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"[Dense] units must be a positive int, got {units!r}")
        self.units = int(units)
        self.activation = _activation_kind(activation, "Dense")
        self.alpha = _DEFAULT_ALPHA.get(self.activation)
        self.use_bias = flag(use_bias, "use_bias", type(self).__name__)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        if self.kernel_regularizer is not None:
            self.regularizers["W"] = self.kernel_regularizer
        if self.bias_regularizer is not None and self.use_bias:
            self.regularizers["b"] = self.bias_regularizer

    @property
    def fusable_softmax(self) -> bool:
        return self.activation == "softmax"

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(f"[Dense '{self.name}'] expects input (N, ..., features), got shape "
                             f"{_fmt_shape(input_shape)}")
        if input_shape[-1] is None:
            raise ValueError(f"[Dense '{self.name}'] needs a known last (feature) dimension, got "
                             f"{_fmt_shape(input_shape)}")
        fan_in = input_shape[-1]
        self.params["W"] = self.kernel_initializer((fan_in, self.units))
        if self.use_bias:
            self.params["b"] = self.bias_initializer((self.units,))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def check_input(self, x):
        if self.built and np.ndim(x) != len(self.input_shape):
            raise ValueError(f"[Dense '{self.name}'] expected input of shape {_fmt_shape(self.input_shape)}, got "
                             f"{tuple(np.shape(x))}; Dense applies to the last axis (add a Flatten layer before "
                             f"it to use all features)")
        super().check_input(x)

    def forward(self, x, training=False, ctx=None):
        self.check_input(x)
        ctx = self.forward_context(ctx)
        W, b = self.params["W"], self.params.get("b")
        x = _as_dtype(x, W.dtype, "Dense")
        lead = x.shape[:-1]
        if x.ndim != 2:
            x = x.reshape(-1, x.shape[-1])
        if self.activation in nn.FUSABLE_ACTIVATIONS:
            y, pre = nn.dense_forward(x, W, b, self.activation, self.alpha, return_z=True)
            ctx.x, ctx.z, ctx.y, ctx.pre = x, y, None, pre
        else:
            z = nn.dense_forward(x, W, b, "linear")
            y = nn.activation(z, self.activation)
            ctx.x, ctx.z, ctx.y = x, z, y
        ctx.lead = lead
        return y if len(lead) == 1 else y.reshape(lead + (self.units,))

    def _finish(self, ctx, dz, act):
        """Weight gradients and dx from dz (the gradient at the fused op's output), 2-D."""
        dx, dW, db = nn.dense_backward(dz, ctx.x, self.params["W"], ctx.z, act, self.alpha if act != "linear"
                                       else None, need_dx=ctx.need_input_grad, has_bias=self.use_bias,
                                       z=getattr(ctx, "pre", None) if act != "linear" else None)
        self.add_grad("W", dW)
        if self.use_bias:
            self.add_grad("b", db)
        if dx is not None and len(ctx.lead) != 1:
            dx = dx.reshape(ctx.lead + (dx.shape[-1],))
        return dx

    def _dout_2d(self, dout, ctx):
        dout = _as_dtype(dout, self.params["W"].dtype, "Dense")
        return dout if dout.ndim == 2 else dout.reshape(-1, self.units)

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        dout = self._dout_2d(dout, ctx)
        if ctx.y is None:
            return self._finish(ctx, dout, self.activation)
        dz = nn.activation_backward(dout, ctx.z, ctx.y, self.activation)
        return self._finish(ctx, dz, "linear")

    # -- softmax + cross-entropy fusion (see pydl.losses) -----------------------------------
    def fused_logits(self, ctx=None):
        """The pre-softmax values of the call that filled `ctx` (the layer's own call by default)."""
        return self.backward_context(ctx).z

    @property
    def logits(self):
        return self.fused_logits(None)

    def backward_logits(self, dz, ctx=None):
        """Backward from dL/dlogits (the pre-softmax values), skipping the softmax Jacobian."""
        ctx = self.backward_context(ctx)
        return self._finish(ctx, self._dout_2d(dz, ctx), "linear")

    def flops(self):
        fan_in = self.input_shape[-1] if self.built else 0
        rows = math.prod(int(d) for d in self.input_shape[1:-1]) if self.built else 1
        return rows * (2 * fan_in * self.units + (self.units if self.use_bias else 0))

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


class _ActivationBase(Layer):
    kind = "linear"

    supports_cuda = True
    supports_masking = True

    def __init__(self, alpha=None, input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        self.alpha = alpha

    def build(self, input_shape):
        super().build(input_shape)

    def layout_kind(self, input_shape=None):
        return None if self.kind in ("softmax", "log_softmax") else "any"  # element-wise ones

    def forward(self, x, training=False, ctx=None):
        self.check_input(x, ctx)
        ctx = self.forward_context(ctx)
        x = _as_dtype(x, device.float_dtype(x), type(self).__name__)
        y = nn.activation(x, self.kind, self.alpha)
        ctx.x, ctx.y = x, y
        return y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        return nn.activation_backward(dout, ctx.x, ctx.y, self.kind, self.alpha)

    # softmax + cross-entropy fusion (used when kind == "softmax"): the logits are the input
    def fused_logits(self, ctx=None):
        return self.backward_context(ctx).x

    @property
    def logits(self):
        return self.fused_logits(None)

    def backward_logits(self, dz, ctx=None):
        self.backward_context(ctx)
        return dz

    def flops(self):
        n = int(np.prod(self.output_shape[1:])) if self.built else 0
        return n * {"linear": 0, "relu": 1, "leaky_relu": 2, "elu": 4, "sigmoid": 4, "tanh": 4,
                    "softmax": 5, "log_softmax": 5, "gelu": 8, "gelu_tanh": 8, "swish": 5, "softplus": 6,
                    "selu": 5, "softsign": 3, "hard_sigmoid": 3, "exponential": 4}[self.kind]


@register_layer
class Activation(_ActivationBase):
    """Applies a named activation ("relu", "sigmoid", "tanh", "softmax", ...) element-wise."""

    def __init__(self, activation, input_shape=None, name=None, trainable=True):
        kind = _activation_kind(activation, "Activation")
        super().__init__(alpha=_DEFAULT_ALPHA.get(kind), input_shape=input_shape, name=name, trainable=trainable)
        self.kind = kind

    @property
    def fusable_softmax(self) -> bool:
        return self.kind == "softmax"

    def get_config(self):
        return {**super().get_config(), "activation": self.kind}


@register_layer
class ReLU(_ActivationBase):
    """max(x, 0)."""
    kind = "relu"

    def __init__(self, input_shape=None, name=None, trainable=True):
        super().__init__(None, input_shape=input_shape, name=name, trainable=trainable)


@register_layer
class LeakyReLU(_ActivationBase):
    """x if x > 0 else negative_slope * x (Keras 3 default 0.3; `alpha` is accepted as its old name)."""
    kind = "leaky_relu"

    def __init__(self, negative_slope=0.3, alpha=None, input_shape=None, name=None, trainable=True):
        slope = negative_slope if alpha is None else alpha
        try:
            slope = float(slope)
        except (TypeError, ValueError):
            raise ValueError(f"[LeakyReLU] negative_slope must be a number, got {slope!r}") from None
        if not (math.isfinite(slope) and slope >= 0):
            raise ValueError(f"[LeakyReLU] negative_slope must be finite and >= 0, got {slope!r}")
        super().__init__(slope, input_shape=input_shape, name=name, trainable=trainable)

    @property
    def negative_slope(self):
        return self.alpha

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.alpha}


@register_layer
class ELU(_ActivationBase):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    kind = "elu"

    def __init__(self, alpha=1.0, input_shape=None, name=None, trainable=True):
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"[ELU] alpha must be a number, got {alpha!r}") from None
        if not math.isfinite(alpha):
            raise ValueError(f"[ELU] alpha must be finite, got {alpha!r}")
        super().__init__(alpha, input_shape=input_shape, name=name, trainable=trainable)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@register_layer
class Softmax(_ActivationBase):
    """exp(x) / sum(exp(x)) over the last axis."""
    kind = "softmax"

    def __init__(self, axis=-1, input_shape=None, name=None, trainable=True):
        super().__init__(None, input_shape=input_shape, name=name, trainable=trainable)
        if axis != -1:
            raise ValueError(f"[Softmax] only axis=-1 is supported, got axis={axis!r}")
        self.axis = -1

    fusable_softmax = True

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@register_layer
class Dropout(Layer):
    """Inverted dropout: in training each element is zeroed with probability `rate` and the
    rest scaled by 1/(1-rate); the identity at inference.

    Masks are drawn by the kernel from a 64-bit seed per call: from pydl's global generator
    (`pydl.seed`), or, with `seed=s`, derived from (s, number of calls so far). The call count
    is part of the layer's config, so a saved and reloaded model continues the same sequence.
    """

    supports_cuda = True

    supports_masking = True

    def __init__(self, rate, seed=None, seed_calls=0, input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        try:
            rate = float(rate)
        except (TypeError, ValueError):
            raise ValueError(f"[Dropout] rate must be a number in [0, 1), got {rate!r}") from None
        if not (0.0 <= rate < 1.0):
            raise ValueError(f"[Dropout] rate must be in [0, 1), got {rate!r}")
        for arg, v in (("seed", seed), ("seed_calls", seed_calls)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise ValueError(f"[Dropout] {arg} must be a non-negative int, got {v!r}")
        self.rate = rate
        self.seed = None if seed is None else int(seed)
        self.seed_calls = int(seed_calls or 0)

    def _draw_seed(self) -> int:
        if self.seed is None:
            return next_seed()
        s = np.random.SeedSequence([self.seed, self.seed_calls]).generate_state(2, np.uint32)
        self.seed_calls += 1
        return (int(s[0]) << 31) ^ int(s[1])

    def get_rng_state(self):
        return self.seed_calls

    def set_rng_state(self, state):
        if state is not None:
            self.seed_calls = int(state)

    def layout_kind(self, input_shape=None):
        return "any"

    def forward(self, x, training=False, ctx=None):
        self.check_input(x, ctx)
        ctx = self.forward_context(ctx)
        if not training or self.rate == 0.0:
            ctx.mask = None
            return x
        x = _as_dtype(x, device.float_dtype(x), "Dropout")
        y, ctx.mask = nn.dropout_forward(x, self.rate, self._draw_seed())
        return y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        if ctx.mask is None:
            return dout
        return nn.dropout_backward(dout, ctx.mask, self.rate)

    def get_config(self):
        cfg = {**super().get_config(), "rate": self.rate, "seed": self.seed}
        if self.seed is not None:
            cfg["seed_calls"] = self.seed_calls
        return cfg


@register_layer
class BatchNormalization(Layer):
    """Normalises each feature of axis `axis` over the batch and every other axis:

    y = gamma * (x - mean) / sqrt(var + epsilon) + beta, with the batch statistics in training
    and the moving ones at inference; moving = momentum * moving + (1 - momentum) * batch.
    `moving_mean` / `moving_variance` live in `layer.state`.

    axis (Keras' meaning): the feature axis, 1 or -1 (the last). None follows the image data
    format when the layer is created: 1 for "channels_first" ((N, C, H, W)), -1 for
    "channels_last" ((N, H, W, C)); for 2-D input (N, C) both are the same axis. Any rank >= 2.
    """

    supports_cuda = True

    def __init__(self, axis=None, momentum=0.99, epsilon=1e-3, center=True, scale=True, input_shape=None,
                 name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        try:
            momentum, epsilon = float(momentum), float(epsilon)
        except (TypeError, ValueError):
            raise ValueError(f"[BatchNormalization] momentum and epsilon must be numbers, got {momentum!r} and "
                             f"{epsilon!r}") from None
        if not (0.0 <= momentum <= 1.0):
            raise ValueError(f"[BatchNormalization] momentum must be in [0, 1], got {momentum!r}")
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"[BatchNormalization] epsilon must be positive, got {epsilon!r}")
        if axis is None:
            axis = 1 if backend.image_data_format() == "channels_first" else -1
        if isinstance(axis, (list, tuple)) and len(axis) == 1:
            axis = axis[0]
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"[BatchNormalization] axis must be the feature axis, 1 or -1 (or the last axis "
                             f"counted from the front), got {axis!r}")
        self.axis = int(axis)
        self.momentum, self.epsilon = momentum, epsilon
        self.center, self.scale = flag(center, "center", type(self).__name__), flag(scale, "scale", type(self).__name__)

    def _channel_axis(self, rank: int) -> int:
        a = self.axis + rank if self.axis < 0 else self.axis
        if a not in (1, rank - 1):
            raise ValueError(f"[BatchNormalization '{self.name}'] axis={self.axis} on input of rank {rank}: the "
                             f"feature axis must be 1 (channels first) or {rank - 1} (-1, channels last)")
        return a

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(f"[BatchNormalization '{self.name}'] expects input (N, C), (N, C, H, W) or (N, H, W, C) "
                             f"(the features on `axis`), got {_fmt_shape(input_shape)}")
        _known(input_shape, f"BatchNormalization '{self.name}'")
        self._feature_axis = self._channel_axis(len(input_shape))
        c = input_shape[self._feature_axis]
        if self.scale:
            self.params["gamma"] = np.ones(c, np.float32)
        if self.center:
            self.params["beta"] = np.zeros(c, np.float32)
        self.state["moving_mean"] = np.zeros(c, np.float32)
        self.state["moving_variance"] = np.ones(c, np.float32)
        super().build(input_shape)

    def layout_kind(self, input_shape=None):
        # features on the last axis of a 4-D tensor: a model may keep it NCHW, where they are axis 1
        shape = self.input_shape if input_shape is None else input_shape
        return "any" if shape is not None and len(shape) == 4 and self.axis in (-1, 3) else None

    def _gamma_beta(self, dtype):
        c = self.state["moving_mean"].shape[0]
        where = device.device_of(self.state["moving_mean"])
        gamma = self.params["gamma"] if self.scale else device.ones(c, dtype, where)
        beta = self.params["beta"] if self.center else device.zeros(c, dtype, where)
        return gamma, beta

    def _kernel_view(self, x, ctx):
        """x as the kernel's (N, C) or (N, C, H, W) array (a reshape, never a copy of a contiguous x)."""
        if x.ndim == 2 or (x.ndim == 4 and (self._feature_axis == 1 or ctx.layout == "nchw")):
            return x
        if self._feature_axis == x.ndim - 1:  # channels last: every row of (-1, C) is one position
            return x.reshape(-1, x.shape[-1])
        return x.reshape(x.shape[0], x.shape[1], -1, 1)  # (N, C, ...) of rank 3 or > 4

    def forward(self, x, training=False, ctx=None):
        self.check_input(x, ctx)
        ctx = self.forward_context(ctx)
        dtype = self.state["moving_mean"].dtype
        x = _as_dtype(x, dtype, "BatchNormalization")
        gamma, beta = self._gamma_beta(dtype)
        # A frozen BatchNormalization runs in inference mode (as Keras): moving statistics are used
        # and not updated, so fine-tuning a model with frozen layers leaves them alone.
        training = bool(training) and self.trainable
        xk = self._kernel_view(x, ctx)
        y, cache = nn.batchnorm_forward(xk, gamma, beta, self.state["moving_mean"], self.state["moving_variance"],
                                        momentum=self.momentum, epsilon=self.epsilon, training=training)
        ctx.x, ctx.gamma, ctx.cache = xk, gamma, cache
        return y.reshape(x.shape)

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        dout = device.asarray(dout)
        dx, dgamma, dbeta = nn.batchnorm_backward(dout.reshape(ctx.x.shape), ctx.x, ctx.gamma, ctx.cache)
        if self.scale:
            self.add_grad("gamma", dgamma)
        if self.center:
            self.add_grad("beta", dbeta)
        return dx.reshape(dout.shape)

    def flops(self):
        return 4 * int(np.prod(self.output_shape[1:])) if self.built else 0

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}

    @classmethod
    def from_config(cls, config: dict):
        # configs written before `axis` existed describe axis 1
        return cls(**{"axis": 1, **config})


@register_layer
class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...).

    data_format (as keras.layers.Flatten) only decides the order of the features:
    "channels_last" (the default here) flattens the input as it is; "channels_first" reads the
    input as (N, C, ...) and moves the channels last first, so the features come in the order a
    channels-last model gives (a Dense after it then has Keras' weight order). The default is not
    pydl.image_data_format(): a channels-first pydl model keeps PyTorch's (C, H, W) order.
    """

    supports_cuda = True

    def __init__(self, data_format=None, input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        self.data_format = "channels_last" if data_format is None else \
            backend.normalize_data_format(data_format, "Flatten")

    def compute_output_shape(self, input_shape):
        _known(input_shape, f"Flatten '{self.name}'")
        return (input_shape[0], math.prod(int(d) for d in input_shape[1:]))  # exact: no int64 wrap

    def build(self, input_shape):
        if len(tuple(input_shape)) < 2:
            raise ValueError(f"[Flatten '{self.name}'] expects input with a batch dimension, got {input_shape}")
        super().build(input_shape)

    def _moves_channels(self, ndim: int) -> bool:
        return self.data_format == "channels_first" and ndim > 2

    def forward(self, x, training=False, ctx=None):
        self.check_input(x)
        ctx = self.forward_context(ctx)
        x = device.asarray(x)
        ctx.shape = x.shape
        if self._moves_channels(x.ndim):
            x = x.transpose((0,) + tuple(range(2, x.ndim)) + (1,))
        return x.reshape(x.shape[0], -1)

    def backward(self, dout, ctx=None):
        shape = self.backward_context(ctx).shape
        dout = device.asarray(dout)
        if not self._moves_channels(len(shape)):
            return dout.reshape(shape)
        moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
        back = (0, len(shape) - 1) + tuple(range(1, len(shape) - 1))
        return device.ascontiguous(dout.reshape(moved).transpose(back))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


@register_layer
class Reshape(Layer):
    """(N, ...) -> (N, *target_shape); one entry of target_shape may be -1."""

    supports_cuda = True

    def __init__(self, target_shape, input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        try:
            target = tuple(int(d) for d in target_shape)
        except TypeError:
            raise ValueError(f"[Reshape] target_shape must be a tuple of ints, got {target_shape!r}") from None
        if sum(d == -1 for d in target) > 1 or any(d == 0 or d < -1 for d in target):
            raise ValueError(f"[Reshape] target_shape may hold positive sizes and at most one -1, got {target}")
        self.target_shape = target

    def compute_output_shape(self, input_shape):
        _known(input_shape, f"Reshape '{self.name}'")
        n_in = math.prod(int(d) for d in input_shape[1:])  # Python ints: exact, no int64 wrap
        known = math.prod(int(d) for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            if n_in % known:
                raise ValueError(f"[Reshape '{self.name}'] cannot reshape input {_fmt_shape(input_shape)} "
                                 f"({n_in} values per sample) to {self.target_shape}")
            out = tuple(n_in // known if d == -1 else d for d in self.target_shape)
        else:
            if known != n_in:
                raise ValueError(f"[Reshape '{self.name}'] cannot reshape input {_fmt_shape(input_shape)} "
                                 f"({n_in} values per sample) to {self.target_shape} ({known} values)")
            out = self.target_shape
        return (input_shape[0],) + out

    def forward(self, x, training=False, ctx=None):
        self.check_input(x)
        ctx = self.forward_context(ctx)
        x = device.asarray(x)
        ctx.shape = x.shape
        return x.reshape((x.shape[0],) + self.output_shape[1:])

    def backward(self, dout, ctx=None):
        return device.asarray(dout).reshape(self.backward_context(ctx).shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


__all__ = ["Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "BatchNormalization",
           "Flatten", "Reshape"]
