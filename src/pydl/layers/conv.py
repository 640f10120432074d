"""Convolution and pooling layers (NCHW: inputs are (N, C, H, W), input_shape is (C, H, W)).

    Conv2D(32, 3, padding="same", activation="relu", input_shape=(1, 28, 28))
    MaxPool2D(2), AvgPool2D(2), GlobalAveragePooling2D()

Conv2D keeps W of shape (K, C, R, S) and b of shape (K,). The algorithm (direct, im2col,
Winograd) is chosen per shape at build time (`layer.algo_used`); relu runs fused into the
convolution's epilogue, other activations through pydl.ops.nn.
"""
from __future__ import annotations

import numpy as np

from .. import initializers, regularizers
from ..ops import conv as conv_ops
from ..ops import nn
from ..ops import pool as pool_ops
from .base import Layer, _fmt_shape, register_layer

_CONV_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu")
_DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}


def _pair_arg(v, name: str, who: str) -> tuple[int, int]:
    return conv_ops._int_pair(v, name, who, 1)


def _padding_arg(padding, who: str):
    """Normalise padding to "valid" / "same" or a JSON-friendly list [top, bottom, left, right]."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(f"[{who}] padding must be 'valid', 'same', an int or a tuple, got {padding!r}")
        return padding.lower()
    # resolve_padding ignores sizes for explicit paddings; validate the form now
    return list(conv_ops.resolve_padding(padding, (1, 1), (1, 1), (1, 1), who))


def _check_nchw(input_shape, who: str, name: str):
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise ValueError(f"[{who} '{name}'] expects 4-D input (N, C, H, W) in NCHW layout, got shape "
                         f"{_fmt_shape(shape)}")
    if any(d is None for d in shape[1:]):
        raise ValueError(f"[{who} '{name}'] needs known (C, H, W), got {_fmt_shape(shape)}")
    return shape


def _as_dtype(x, dtype, who: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"[{who}] input must be a numeric array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=dtype)


@register_layer
class Conv2D(Layer):
    """y = activation(conv2d(x, W) + b) with W (filters, C, kh, kw)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, algo="auto", input_shape=None, name=None,
                 trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"[Conv2D] filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair_arg(kernel_size, "kernel_size", "Conv2D")
        self.strides = _pair_arg(strides, "strides", "Conv2D")
        self.dilation_rate = _pair_arg(dilation_rate, "dilation_rate", "Conv2D")
        self.padding = _padding_arg(padding, "Conv2D")
        act = "linear" if activation is None else activation
        if not isinstance(act, str) or act not in _CONV_ACTIVATIONS:
            raise ValueError(f"[Conv2D] unknown activation {activation!r}; expected one of "
                             f"{', '.join(_CONV_ACTIVATIONS)} or None")
        self.activation = act
        self.alpha = _DEFAULT_ALPHA.get(act)
        if not isinstance(algo, str) or algo not in conv_ops.ALGOS:
            raise ValueError(f"[Conv2D] unknown algo {algo!r}; expected one of {', '.join(conv_ops.ALGOS)}")
        self.algo = algo
        self._algo_choice = None  # ((isa, threads), algorithm, reason), see algo_used
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        if self.kernel_regularizer is not None:
            self.regularizers["W"] = self.kernel_regularizer
        if self.bias_regularizer is not None and self.use_bias:
            self.regularizers["b"] = self.bias_regularizer
        self._cache = None

    def _pad(self):
        return tuple(self.padding) if isinstance(self.padding, list) else self.padding

    def _w_shape(self, channels: int):
        return (self.filters, channels) + self.kernel_size

    def compute_output_shape(self, input_shape):
        shape = _check_nchw(input_shape, "Conv2D", self.name)
        n = 1 if shape[0] is None else shape[0]
        out = conv_ops.conv2d_output_shape((n,) + shape[1:], self._w_shape(shape[1]), self.strides, self._pad(),
                                           self.dilation_rate)
        return (shape[0],) + tuple(out[1:])

    def build(self, input_shape):
        shape = _check_nchw(input_shape, "Conv2D", self.name)
        w_shape = self._w_shape(shape[1])
        self._algo_choice = None
        self._in_shape_for_algo = (1,) + tuple(shape[1:])
        conv_ops.conv2d_algo(self._in_shape_for_algo, w_shape, self.strides, self._pad(), self.dilation_rate,
                             self.algo)  # a forced algorithm that does not apply fails here
        self.params["W"] = self.kernel_initializer(w_shape)
        if self.use_bias:
            self.params["b"] = self.bias_initializer((self.filters,))
        super().build(shape)

    def _choice(self):
        if not self.built:
            return None
        key = conv_ops.auto_context()
        if self._algo_choice is None or self._algo_choice[0] != key:
            w_shape = self._w_shape(self._in_shape_for_algo[1])
            name, why = conv_ops.conv2d_explain(self._in_shape_for_algo, w_shape, self.strides, self._pad(),
                                                self.dilation_rate, self.algo)
            self._algo_choice = (key, name, why)
        return self._algo_choice

    @property
    def algo_used(self):
        """The algorithm this layer runs (None before build); "auto" follows the ISA and thread count."""
        c = self._choice()
        return None if c is None else c[1]

    @property
    def algo_reason(self):
        """Why `algo_used` was chosen (see pydl.ops.conv2d_explain)."""
        c = self._choice()
        return None if c is None else c[2]

    def check_input(self, x):
        if self.built and np.ndim(x) == 4:
            c = self.input_shape[1]
            shape = tuple(np.shape(x))
            if shape[1] != c and shape[3] == c:
                raise ValueError(f"[Conv2D '{self.name}'] input {shape} looks channels-last (NHWC); pydl expects "
                                 f"NCHW (N, {c}, H, W), e.g. x.transpose(0, 3, 1, 2)")
        super().check_input(x)

    def forward(self, x, training=False):
        self.check_input(x)
        W, b = self.params["W"], self.params.get("b")
        x = _as_dtype(x, W.dtype, "Conv2D")
        fused = self.activation in ("linear", "relu")
        z = conv_ops.conv2d(x, W, b, self.strides, self._pad(), self.dilation_rate, algo=self.algo_used,
                            activation=self.activation if fused else None)
        if fused:
            self._cache = (x, z, None)
            return z
        y = nn.activation(z, self.activation, self.alpha)
        self._cache = (x, z, y)
        return y

    def backward(self, dout):
        if self._cache is None:
            raise ValueError(f"[Conv2D '{self.name}'] backward called before forward")
        x, z, y = self._cache
        W = self.params["W"]
        dout = _as_dtype(dout, W.dtype, "Conv2D")
        if y is None:
            dz = dout if self.activation == "linear" else nn.activation_backward(dout, z, z, "relu")
        else:
            dz = nn.activation_backward(dout, z, y, self.activation, self.alpha)
        dx, dW, db = conv_ops.conv2d_backward(dz, x, W, self.strides, self._pad(), self.dilation_rate,
                                              need_dx=self.need_input_grad, has_bias=self.use_bias,
                                              algo=self.algo_used)
        self.grads["W"] = dW
        if self.use_bias:
            self.grads["b"] = db
        return dx

    def flops(self) -> int:
        if self.output_shape is None:
            return 0
        _, k, p, q = self.output_shape
        c = self.input_shape[1]
        return int(2 * k * c * self.kernel_size[0] * self.kernel_size[1] * p * q)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation, "use_bias": self.use_bias, "algo": self.algo,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


class _Pool2D(Layer):
    kind = "pool"

    def __init__(self, pool_size=2, strides=None, padding="valid", input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        who = type(self).__name__
        self.pool_size = _pair_arg(pool_size, "pool_size", who)
        self.strides = self.pool_size if strides is None else _pair_arg(strides, "strides", who)
        self.padding = _padding_arg(padding, who)
        self._cache = None

    def _pad(self):
        return tuple(self.padding) if isinstance(self.padding, list) else self.padding

    def compute_output_shape(self, input_shape):
        shape = _check_nchw(input_shape, type(self).__name__, self.name)
        probe = np.empty((0, 1) + tuple(shape[2:]), dtype=np.float32)
        out = pool_ops.avg_pool2d(probe, self.pool_size, self.strides, self._pad())
        return (shape[0], shape[1]) + tuple(out.shape[2:])

    def build(self, input_shape):
        shape = _check_nchw(input_shape, type(self).__name__, self.name)
        super().build(shape)

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


@register_layer
class MaxPool2D(_Pool2D):
    """Maximum over each pool_size window (argmax kept for backward while training)."""

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.asarray(x)
        y, argmax = pool_ops.max_pool2d(x, self.pool_size, self.strides, self._pad(), return_argmax=True)
        self._cache = (x.shape, argmax)
        return y

    def backward(self, dout):
        if self._cache is None:
            raise ValueError(f"[MaxPool2D '{self.name}'] backward called before forward")
        x_shape, argmax = self._cache
        return pool_ops.max_pool2d_backward(dout, argmax, x_shape)


@register_layer
class AvgPool2D(_Pool2D):
    """Mean over each pool_size window; padding counts toward the divisor only if count_include_pad."""

    def __init__(self, pool_size=2, strides=None, padding="valid", count_include_pad=False, input_shape=None,
                 name=None, trainable=True):
        super().__init__(pool_size, strides, padding, input_shape=input_shape, name=name, trainable=trainable)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.asarray(x)
        self._cache = x.shape
        return pool_ops.avg_pool2d(x, self.pool_size, self.strides, self._pad(), self.count_include_pad)

    def backward(self, dout):
        if self._cache is None:
            raise ValueError(f"[AvgPool2D '{self.name}'] backward called before forward")
        return pool_ops.avg_pool2d_backward(dout, self._cache, self.pool_size, self.strides, self._pad(),
                                            self.count_include_pad)

    def get_config(self):
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


@register_layer
class GlobalAveragePooling2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each plane."""

    def compute_output_shape(self, input_shape):
        shape = _check_nchw(input_shape, "GlobalAveragePooling2D", self.name)
        return (shape[0], shape[1])

    def build(self, input_shape):
        super().build(_check_nchw(input_shape, "GlobalAveragePooling2D", self.name))

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.asarray(x)
        self._shape = x.shape
        return pool_ops.global_avg_pool2d(x)

    def backward(self, dout):
        return pool_ops.global_avg_pool2d_backward(dout, self._shape)


MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D
