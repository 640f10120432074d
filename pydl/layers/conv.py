"""Convolution and pooling layers on images in either data format.

data_format="channels_first" (pydl's default): inputs (N, C, H, W), input_shape (C, H, W);
data_format="channels_last" (Keras' default): inputs (N, H, W, C), input_shape (H, W, C). None
takes pydl.image_data_format() when the layer is created. The kernels run on NCHW arrays; see
pydl.layers.layout for where channels-last tensors are transposed.

    Conv2D(32, 3, padding="same", activation="relu", input_shape=(1, 28, 28))
    Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1), data_format="channels_last")
    MaxPool2D(2), AvgPool2D(2), GlobalAveragePooling2D(), GlobalMaxPooling2D()
                                                            (MaxPooling2D, AveragePooling2D: Keras' names)
    Conv2DTranspose(16, 3, strides=2, padding="same"), UpSampling2D(2)
    GlobalAveragePooling1D()                                (N, T, C) -> (N, C)

Conv2D keeps W of shape (K, C, R, S) and b of shape (K,). The algorithm (direct, im2col,
Winograd) is chosen per shape at build time (`layer.algo_used`); relu runs fused into the
convolution's epilogue, other activations through pydl.ops.nn. On the GPU (Model.to("cuda"),
channels_first) Conv2D and Conv2DTranspose run the CUDA kernels: the implicit GEMM, or Winograd
for 3x3 / stride 1 layers with enough channels (pydl.ops.conv.CUDA_AUTO_RULE); `algo_used` says
which ("implicit_gemm", "winograd_f2", "winograd_f4").
"""
from __future__ import annotations

import numpy as np

from .._validate import flag
from .. import initializers, regularizers
from ..ops import conv as conv_ops
from ..ops import device, nn
from ..ops import pool as pool_ops
from .base import Layer, _fmt_shape, register_layer
from .core import _activation_kind
from .layout import ImageLayer

_CONV_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "gelu_tanh", "swish",
                     "softplus", "selu", "softsign", "hard_sigmoid", "exponential")
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


def _as_dtype(x, dtype, who: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"[{who}] input must be a numeric array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=dtype)


@register_layer
class Conv2D(ImageLayer):
    """y = activation(conv2d(x, W) + b) with W (filters, C, kh, kw) in either data format."""

    supports_cuda = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, algo="auto", data_format=None, input_shape=None,
                 name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        self._init_format(data_format)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"[Conv2D] filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair_arg(kernel_size, "kernel_size", "Conv2D")
        self.strides = _pair_arg(strides, "strides", "Conv2D")
        self.dilation_rate = _pair_arg(dilation_rate, "dilation_rate", "Conv2D")
        self.padding = _padding_arg(padding, "Conv2D")
        act = _activation_kind(activation, "Conv2D", _CONV_ACTIVATIONS)
        self.activation = act
        self.alpha = _DEFAULT_ALPHA.get(act)
        if not isinstance(algo, str) or algo not in conv_ops.ALGOS:
            raise ValueError(f"[Conv2D] unknown algo {algo!r}; expected one of {', '.join(conv_ops.ALGOS)}")
        self.algo = algo
        self._algo_choice = None  # ((device, isa, threads), algorithm, reason), see algo_used
        self.use_bias = flag(use_bias, "use_bias", type(self).__name__)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        if self.kernel_regularizer is not None:
            self.regularizers["W"] = self.kernel_regularizer
        if self.bias_regularizer is not None and self.use_bias:
            self.regularizers["b"] = self.bias_regularizer

    def _pad(self):
        return tuple(self.padding) if isinstance(self.padding, list) else self.padding

    def _w_shape(self, channels: int):
        return (self.filters, channels) + self.kernel_size

    def _nchw_output_shape(self, shape):
        n = 1 if shape[0] is None else shape[0]
        out = conv_ops.conv2d_output_shape((n,) + shape[1:], self._w_shape(shape[1]), self.strides, self._pad(),
                                           self.dilation_rate)
        return (shape[0],) + tuple(out[1:])

    def _build_nchw(self, shape):
        w_shape = self._w_shape(shape[1])
        self._algo_choice = None
        self._in_shape_for_algo = (1,) + tuple(shape[1:])
        conv_ops.conv2d_algo(self._in_shape_for_algo, w_shape, self.strides, self._pad(), self.dilation_rate,
                             self.algo)  # a forced algorithm that does not apply fails here
        self.params["W"] = self.kernel_initializer(w_shape)
        if self.use_bias:
            self.params["b"] = self.bias_initializer((self.filters,))

    def _choice(self):
        if not self.built:
            return None
        where = device.device_of(self.params["W"])
        key = (where,) + tuple(conv_ops.auto_context())
        if self._algo_choice is None or self._algo_choice[0] != key:
            w_shape = self._w_shape(self._in_shape_for_algo[1])
            name, why = conv_ops.conv2d_explain(self._in_shape_for_algo, w_shape, self.strides, self._pad(),
                                                self.dilation_rate, self.algo, device=where)
            self._algo_choice = (key, name, why)
        return self._algo_choice

    @property
    def algo_used(self):
        """The algorithm this layer runs (None before build); "auto" follows the ISA and thread count,
        or, while the layer's weights are on the GPU, the CUDA rule ("implicit_gemm" or Winograd)."""
        c = self._choice()
        return None if c is None else c[1]

    @property
    def algo_reason(self):
        """Why `algo_used` was chosen (see pydl.ops.conv2d_explain)."""
        c = self._choice()
        return None if c is None else c[2]

    def _forward(self, x, training, ctx):
        W, b = self.params["W"], self.params.get("b")
        x = device.as_input(x, W.dtype, "Conv2D")
        fused = self.activation in ("linear", "relu")
        z = conv_ops.conv2d(x, W, b, self.strides, self._pad(), self.dilation_rate, algo=self.algo_used,
                            activation=self.activation if fused else None)
        if fused:
            ctx.x, ctx.z, ctx.y = x, z, None
            return z
        y = nn.activation(z, self.activation, self.alpha)
        ctx.x, ctx.z, ctx.y = x, z, y
        return y

    def _backward(self, dout, ctx):
        x, z, y = ctx.x, ctx.z, ctx.y
        W = self.params["W"]
        dout = device.as_input(dout, W.dtype, "Conv2D")
        if y is None:
            dz = dout if self.activation == "linear" else nn.activation_backward(dout, z, z, "relu")
        else:
            dz = nn.activation_backward(dout, z, y, self.activation, self.alpha)
        dx, dW, db = conv_ops.conv2d_backward(dz, x, W, self.strides, self._pad(), self.dilation_rate,
                                              need_dx=ctx.need_input_grad, has_bias=self.use_bias,
                                              algo=self.algo_used)
        self.add_grad("W", dW)
        if self.use_bias:
            self.add_grad("b", db)
        return dx

    def flops(self) -> int:
        if self.output_shape is None:
            return 0
        _, k, p, q = self._out_nchw
        c = self._in_nchw[1]
        return int(2 * k * c * self.kernel_size[0] * self.kernel_size[1] * p * q)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation, "use_bias": self.use_bias, "algo": self.algo,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


class _Pool2D(ImageLayer):
    kind = "pool"
    supports_cuda = True

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, input_shape=None, name=None,
                 trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        who = type(self).__name__
        self._init_format(data_format)
        self.pool_size = _pair_arg(pool_size, "pool_size", who)
        self.strides = self.pool_size if strides is None else _pair_arg(strides, "strides", who)
        self.padding = _padding_arg(padding, who)

    def _pad(self):
        return tuple(self.padding) if isinstance(self.padding, list) else self.padding

    def _nchw_output_shape(self, shape):
        probe = np.empty((0, 1) + tuple(shape[2:]), dtype=np.float32)  # checks the geometry too
        return (shape[0], shape[1]) + tuple(self._pool(probe).shape[2:])

    def _pool(self, x):  # the layer's own op, so a geometry error names it
        return pool_ops.avg_pool2d(x, self.pool_size, self.strides, self._pad())

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


@register_layer
class MaxPool2D(_Pool2D):
    """Maximum over each pool_size window (argmax kept for backward while training)."""

    def _pool(self, x):
        return pool_ops.max_pool2d(x, self.pool_size, self.strides, self._pad(), return_argmax=False)[0]

    def _forward(self, x, training, ctx):
        x = device.asarray(x)
        y, ctx.argmax = pool_ops.max_pool2d(x, self.pool_size, self.strides, self._pad(), return_argmax=True)
        ctx.x_shape = x.shape
        return y

    def _backward(self, dout, ctx):
        return pool_ops.max_pool2d_backward(dout, ctx.argmax, ctx.x_shape, self.pool_size, self.strides, self._pad(),
                                            check_argmax=False)


@register_layer
class AvgPool2D(_Pool2D):
    """Mean over each pool_size window; padding counts toward the divisor only if count_include_pad."""

    def __init__(self, pool_size=2, strides=None, padding="valid", count_include_pad=False, data_format=None,
                 input_shape=None, name=None, trainable=True):
        super().__init__(pool_size, strides, padding, data_format=data_format, input_shape=input_shape, name=name,
                         trainable=trainable)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise ValueError(f"[AvgPool2D] count_include_pad must be True or False, got {count_include_pad!r}"
                             + (" (data_format is a keyword argument here: data_format=...)"
                                if isinstance(count_include_pad, str) else ""))
        self.count_include_pad = flag(count_include_pad, "count_include_pad", type(self).__name__)

    def _forward(self, x, training, ctx):
        x = device.asarray(x)
        ctx.x_shape = x.shape
        return pool_ops.avg_pool2d(x, self.pool_size, self.strides, self._pad(), self.count_include_pad)

    def _backward(self, dout, ctx):
        return pool_ops.avg_pool2d_backward(dout, ctx.x_shape, self.pool_size, self.strides, self._pad(),
                                            self.count_include_pad)

    def get_config(self):
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


@register_layer
class GlobalAveragePooling2D(ImageLayer):
    """(N, C, H, W) or (N, H, W, C) -> (N, C): the mean of each channel's plane."""

    supports_cuda = True

    def __init__(self, data_format=None, input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        self._init_format(data_format)

    def _nchw_output_shape(self, shape):
        return (shape[0], shape[1])

    def _forward(self, x, training, ctx):
        x = device.asarray(x)
        ctx.x_shape = x.shape
        return pool_ops.global_avg_pool2d(x)

    def _backward(self, dout, ctx):
        return pool_ops.global_avg_pool2d_backward(dout, ctx.x_shape)


@register_layer
class GlobalMaxPooling2D(ImageLayer):
    """(N, C, H, W) or (N, H, W, C) -> (N, C): the maximum of each channel's plane (the gradient
    goes to the first maximum, as MaxPool2D)."""

    supports_cuda = True

    def __init__(self, data_format=None, input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        self._init_format(data_format)

    def _nchw_output_shape(self, shape):
        return (shape[0], shape[1])

    def _forward(self, x, training, ctx):
        x = device.asarray(x)
        hw = tuple(x.shape[2:])
        y, ctx.argmax = pool_ops.max_pool2d(x, hw, hw, "valid", return_argmax=True)
        ctx.x_shape = x.shape
        return y.reshape(x.shape[:2])

    def _backward(self, dout, ctx):
        n, c, h, w = ctx.x_shape
        return pool_ops.max_pool2d_backward(device.asarray(dout).reshape(n, c, 1, 1), ctx.argmax, ctx.x_shape,
                                            (h, w), (h, w), "valid", check_argmax=False)


@register_layer
class GlobalAveragePooling1D(Layer):
    """(N, T, C) -> (N, C): the mean over the time steps (axis 1, channels last, as Keras). With
    a mask (N, T) (in a model, from Embedding(mask_zero=True)) the mean runs over the unmasked
    steps only, as Keras; a row with every step masked gives zeros. The output has no mask."""

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"[GlobalAveragePooling1D '{self.name}'] expects input (N, T, C), got shape "
                             f"{_fmt_shape(shape)}")
        return (shape[0], shape[2])

    def forward(self, x, training=False, ctx=None, mask=None):
        self.check_input(x)
        ctx = self.forward_context(ctx)
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = _as_dtype(x, np.float32, "GlobalAveragePooling1D")
        ctx.x_shape, ctx.dtype = x.shape, x.dtype
        ctx.weights = None
        if mask is None and x.shape[1] == 0:
            raise ValueError(f"[GlobalAveragePooling1D '{self.name}'] cannot average over 0 time steps")
        if mask is None:
            return x.mean(axis=1, dtype=x.dtype)
        m = np.asarray(mask)
        if m.shape != x.shape[:2]:
            raise ValueError(f"[GlobalAveragePooling1D '{self.name}'] mask has shape {m.shape}, expected (N, T) = "
                             f"{x.shape[:2]} for input {x.shape}")
        if m.dtype == object or not (np.issubdtype(m.dtype, np.number) or m.dtype == np.bool_):
            raise TypeError(f"[GlobalAveragePooling1D '{self.name}'] mask must be a bool array, got dtype {m.dtype}")
        m = m.astype(bool)
        count = m.sum(axis=1, keepdims=True)
        # weight of each step: 1 / (unmasked steps of its row), 0 for masked steps and empty rows
        w = np.where(m, 1.0 / np.maximum(count, 1), 0.0).astype(x.dtype)
        ctx.weights = w
        return np.einsum("nt,ntc->nc", w, x).astype(x.dtype, copy=False)

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        n, t, c = ctx.x_shape
        if ctx.weights is not None:
            g = np.asarray(dout, dtype=ctx.dtype)
            return np.ascontiguousarray(ctx.weights[:, :, None] * g[:, None, :])
        g = np.asarray(dout, dtype=ctx.dtype) * ctx.dtype.type(1.0 / t)
        return np.ascontiguousarray(np.broadcast_to(g[:, None, :], (n, t, c)))

    def flops(self):
        return int(self.input_shape[1] * self.input_shape[2]) if self.built else 0


@register_layer
class UpSampling2D(ImageLayer):
    """Repeats each pixel size = (sh, sw) times along H and W: (N, C, H, W) -> (N, C, H*sh, W*sw)
    (channels last: (N, H, W, C) -> (N, H*sh, W*sw, C)). Only interpolation="nearest" (Keras'
    default) is provided."""

    def __init__(self, size=2, interpolation="nearest", data_format=None, input_shape=None, name=None,
                 trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        self._init_format(data_format)
        self.size = _pair_arg(size, "size", "UpSampling2D")
        if interpolation != "nearest":
            raise ValueError(f"[UpSampling2D] only interpolation='nearest' is supported, got {interpolation!r}"
                             + (" (data_format is a keyword argument here: data_format=...)"
                                if interpolation in ("channels_first", "channels_last") else ""))
        self.interpolation = interpolation

    def _nchw_output_shape(self, shape):
        n, c, h, w = shape
        return (n, c, h * self.size[0], w * self.size[1])

    def _forward(self, x, training, ctx):
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = _as_dtype(x, np.float32, "UpSampling2D")
        n, c, h, w = x.shape
        sh, sw = self.size
        ctx.x_shape = x.shape
        y = np.empty((n, c, h, sh, w, sw), dtype=x.dtype)
        y[...] = x[:, :, :, None, :, None]
        return y.reshape(n, c, h * sh, w * sw)

    def _backward(self, dout, ctx):
        n, c, h, w = ctx.x_shape
        sh, sw = self.size
        dout = np.asarray(dout)
        return dout.reshape(n, c, h, sh, w, sw).sum(axis=(3, 5))

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "interpolation": self.interpolation}


@register_layer
class Conv2DTranspose(ImageLayer):
    """The transpose of Conv2D (a "deconvolution"): y = activation(conv2d_input_gradient(x, W) + b).

    NCHW: x (N, C, H, W) -> y (N, filters, H', W'), W of shape (C, filters, kh, kw), the layout of
    PyTorch's ConvTranspose2d weight. y is exactly what pydl.ops.conv2d_backward returns as the
    input gradient of a Conv2D(C, kernel_size, strides, padding) applied to an (N, filters, H', W')
    input, given x as its output gradient; padding="same" places its odd pixel as Conv2D does
    (after, like TensorFlow). Output size per axis, as Keras' deconv_output_length:
        output_padding None:  valid: H*s + max(k - s, 0)       same: H*s
        output_padding p:     (H - 1)*s + k - 2*pad + p        with pad = 0 (valid) or k // 2 (same)
    Backward: dx = conv2d(dy, W) (the forward convolution), dW = conv2d's weight gradient with
    dy as its input and x as its output gradient, db = sums of dy.

    Runs on the GPU too (Model.to("cuda")): every step goes through pydl.ops.conv2d /
    conv2d_backward, which dispatch on the arrays' device.

    Cost: with strides 1 the forward is one pydl.ops.conv2d (x padded by k - 1 - pad, the kernel
    flipped, bias and relu fused). With larger strides it runs pydl.ops.conv2d_backward, which
    also forms a (discarded) weight gradient: about twice the multiply-adds.
    """

    supports_cuda = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, data_format=None, input_shape=None, name=None,
                 trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        self._init_format(data_format)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"[Conv2DTranspose] filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair_arg(kernel_size, "kernel_size", "Conv2DTranspose")
        self.strides = _pair_arg(strides, "strides", "Conv2DTranspose")
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f"[Conv2DTranspose] padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding.lower()
        if output_padding is None:
            self.output_padding = None
        else:
            op = conv_ops._int_pair(output_padding, "output_padding", "Conv2DTranspose", 0)
            if any(p >= s for p, s in zip(op, self.strides)):
                raise ValueError(f"[Conv2DTranspose] output_padding {op} must be smaller than the strides "
                                 f"{self.strides}")
            self.output_padding = op
        act = _activation_kind(activation, "Conv2DTranspose", _CONV_ACTIVATIONS)
        self.activation = act
        self.alpha = _DEFAULT_ALPHA.get(act)
        self.use_bias = flag(use_bias, "use_bias", type(self).__name__)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        if self.kernel_regularizer is not None:
            self.regularizers["W"] = self.kernel_regularizer
        if self.bias_regularizer is not None and self.use_bias:
            self.regularizers["b"] = self.bias_regularizer

    def _out_hw(self, h, w):
        out = []
        for i, size in enumerate((h, w)):
            k, s = self.kernel_size[i], self.strides[i]
            if self.output_padding is None:
                out.append(size * s + max(k - s, 0) if self.padding == "valid" else size * s)
            else:
                pad = 0 if self.padding == "valid" else k // 2
                out.append((size - 1) * s + k - 2 * pad + self.output_padding[i])
        return tuple(out)

    def _nchw_output_shape(self, shape):
        n, c, h, w = shape
        oh, ow = self._out_hw(h, w)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"[Conv2DTranspose '{self.name}'] input {_fmt_shape(self._logical(shape))} gives an empty output "
                             f"({oh} x {ow})")
        # the convolution this layer transposes must map the output size back to the input size
        back = conv_ops.conv2d_output_shape((1, self.filters, oh, ow), (c, self.filters) + self.kernel_size,
                                            self.strides, self.padding)
        if tuple(back[2:]) != (h, w):
            raise ValueError(f"[Conv2DTranspose '{self.name}'] an output of {oh} x {ow} does not map back to the input "
                             f"{h} x {w} under Conv2D(kernel_size={self.kernel_size}, strides={self.strides}, "
                             f"padding={self.padding!r}); choose another output_padding")
        return (n, self.filters, oh, ow)

    def _build_nchw(self, shape):
        self._nchw_output_shape(shape)
        self.params["W"] = self.kernel_initializer((shape[1], self.filters) + self.kernel_size)
        if self.use_bias:
            self.params["b"] = self.bias_initializer((self.filters,))

    def _forward(self, x, training, ctx):
        W, b = self.params["W"], self.params.get("b")
        x = device.as_input(x, W.dtype, "Conv2DTranspose")
        n = x.shape[0]
        out_shape = (n,) + self._out_nchw[1:]
        if self.strides == (1, 1):
            # stride 1: the input gradient is a plain convolution of x, padded by k - 1 - pad, with the
            # kernel flipped and its channel axes swapped (bias and relu fused, no wasted weight gradient)
            kh, kw = self.kernel_size
            t, bt, l, r = conv_ops.resolve_padding(self.padding, out_shape[2:], (kh, kw), (1, 1), "Conv2DTranspose")
            Wf = device.ascontiguous(W.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
            fused = self.activation in ("linear", "relu")
            z = conv_ops.conv2d(x, Wf, b, 1, (kh - 1 - t, kh - 1 - bt, kw - 1 - l, kw - 1 - r),
                                activation=self.activation if fused else None)
        else:
            fused = self.activation == "linear"
            zeros = getattr(self, "_zeros", None)  # conv2d_backward needs an input of the output's shape
            where = device.device_of(W)
            if zeros is None or zeros.shape != out_shape or zeros.dtype != W.dtype or device.device_of(zeros) != where:
                zeros = self._zeros = device.zeros(out_shape, W.dtype, where)
            z, _, _ = conv_ops.conv2d_backward(x, zeros, W, self.strides, self.padding, need_dx=True,
                                               has_bias=False)
            if b is not None:
                z += b.reshape(1, -1, 1, 1)
        y = z if fused else nn.activation(z, self.activation, self.alpha)
        ctx.x, ctx.z, ctx.y = x, z, (None if fused else y)
        return y

    def _backward(self, dout, ctx):
        W = self.params["W"]
        dout = device.as_input(dout, W.dtype, "Conv2DTranspose")
        if self.activation == "linear":
            dz = dout
        elif ctx.y is None:  # relu fused into the convolution: z is the output
            dz = nn.activation_backward(dout, ctx.z, ctx.z, "relu")
        else:
            dz = nn.activation_backward(dout, ctx.z, ctx.y, self.activation, self.alpha)
        _, dW, _ = conv_ops.conv2d_backward(ctx.x, dz, W, self.strides, self.padding, need_dx=False, has_bias=False)
        self.add_grad("W", dW)
        if self.use_bias:
            self.add_grad("b", dz.sum(axis=(0, 2, 3)))
        if not ctx.need_input_grad:
            return None
        return conv_ops.conv2d(dz, W, None, self.strides, self.padding)

    def flops(self) -> int:
        if self.output_shape is None:
            return 0
        _, c, h, w = self._in_nchw
        return int(2 * c * self.filters * self.kernel_size[0] * self.kernel_size[1] * h * w)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "output_padding": None if self.output_padding is None else list(self.output_padding),
                "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D
