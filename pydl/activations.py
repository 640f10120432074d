"""Keras's `keras.activations`: activation functions on arrays, plus `get` and `serialize`.

Each function returns a new array computed by pydl's element-wise kernels (pydl.ops.activation):
float32 and float64 inputs keep their dtype, other numeric inputs are computed in float32. The
functions can also be given to a layer (`Dense(64, activation=pydl.activations.gelu)`), which is
the same as giving its name (`activation="gelu"`).

    gelu(x, approximate=False)   x * Phi(x); approximate=True: 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
    swish(x) = silu(x)           x * sigmoid(x)
    softplus(x)                  log(1 + exp(x)), computed without overflow
    selu(x)                      1.0507... * elu(x, 1.6732...)
    softsign(x)                  x / (1 + |x|)
    hard_sigmoid(x)              relu6(x + 3) / 6 (Keras 3)
    exponential(x), relu, sigmoid, tanh, elu(x, alpha=1.0), leaky_relu(x, negative_slope=0.2),
    softmax(x, axis=-1), log_softmax(x, axis=-1), linear
"""
from __future__ import annotations

from .ops import nn as _nn

__all__ = ["linear", "relu", "sigmoid", "tanh", "elu", "leaky_relu", "softmax", "log_softmax", "gelu", "swish",
           "silu", "softplus", "selu", "softsign", "hard_sigmoid", "exponential", "get", "serialize", "deserialize"]


def _kind(name: str):
    def mark(fn):
        fn._pydl_kind = name
        return fn
    return mark


def _axis(axis, who: str) -> None:
    if axis != -1:
        raise ValueError(f"[{who}] only axis=-1 is supported, got axis={axis!r}")


@_kind("linear")
def linear(x):
    """x, unchanged (as an array)."""
    return _nn.activation(x, "linear")


@_kind("relu")
def relu(x):
    """max(x, 0)."""
    return _nn.activation(x, "relu")


@_kind("sigmoid")
def sigmoid(x):
    """1 / (1 + exp(-x))."""
    return _nn.activation(x, "sigmoid")


@_kind("tanh")
def tanh(x):
    """tanh(x)."""
    return _nn.activation(x, "tanh")


@_kind("elu")
def elu(x, alpha=1.0):
    """x if x > 0 else alpha * (exp(x) - 1) (alpha >= 0)."""
    return _nn.activation(x, "elu", alpha)


@_kind("leaky_relu")
def leaky_relu(x, negative_slope=0.2):
    """x if x > 0 else negative_slope * x (negative_slope >= 0)."""
    return _nn.activation(x, "leaky_relu", negative_slope)


@_kind("softmax")
def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) over the last axis."""
    _axis(axis, "softmax")
    return _nn.activation(x, "softmax")


@_kind("log_softmax")
def log_softmax(x, axis=-1):
    """x - log(sum(exp(x))) over the last axis."""
    _axis(axis, "log_softmax")
    return _nn.activation(x, "log_softmax")


@_kind("gelu")
def gelu(x, approximate=False):
    """x * Phi(x) (Phi: the standard normal CDF); approximate=True uses the tanh approximation."""
    if not isinstance(approximate, bool):
        raise ValueError(f"[gelu] approximate must be a bool, got {approximate!r}")
    return _nn.activation(x, "gelu_tanh" if approximate else "gelu")


@_kind("swish")
def swish(x):
    """x * sigmoid(x)."""
    return _nn.activation(x, "swish")


@_kind("swish")
def silu(x):
    """x * sigmoid(x) (the same as swish)."""
    return _nn.activation(x, "swish")


@_kind("softplus")
def softplus(x):
    """log(1 + exp(x)), as max(x, 0) + log1p(exp(-|x|)): finite for every finite x."""
    return _nn.activation(x, "softplus")


@_kind("selu")
def selu(x):
    """scale * (x if x > 0 else alpha * (exp(x) - 1)), alpha = 1.67326324, scale = 1.05070099."""
    return _nn.activation(x, "selu")


@_kind("softsign")
def softsign(x):
    """x / (1 + |x|)."""
    return _nn.activation(x, "softsign")


@_kind("hard_sigmoid")
def hard_sigmoid(x):
    """relu6(x + 3) / 6: 0 for x <= -3, 1 for x >= 3, x / 6 + 0.5 between."""
    return _nn.activation(x, "hard_sigmoid")


@_kind("exponential")
def exponential(x):
    """exp(x)."""
    return _nn.activation(x, "exponential")


_BY_NAME = {fn.__name__: fn for fn in (linear, relu, sigmoid, tanh, elu, leaky_relu, softmax, log_softmax, gelu,
                                       swish, silu, softplus, selu, softsign, hard_sigmoid, exponential)}


def get(identifier):
    """The activation function for a name ("gelu", "silu", ...), a function (returned as is), or None
    (linear)."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"[activations.get] unknown activation {identifier!r}; known: "
                             f"{', '.join(sorted(_BY_NAME))}")
        return _BY_NAME[identifier]
    if callable(identifier):
        return identifier
    raise ValueError(f"[activations.get] expected a name, a function or None, got {identifier!r}")


def serialize(activation) -> str:
    """The name of a pydl activation function (the inverse of `get`)."""
    name = getattr(activation, "__name__", None)
    if name in _BY_NAME and _BY_NAME[name] is activation:
        return name
    raise ValueError(f"[activations.serialize] {activation!r} is not a pydl.activations function")


def deserialize(name):
    """The same as get(name)."""
    return get(name)
