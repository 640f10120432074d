"""The Layer contract every pydl layer follows.

    layer = Dense(64)               # __init__: configuration only
    layer.build((None, 784))        # weights, from the input shape *with* the batch dimension
    y = layer.forward(x, training)  # a few lines calling pydl.ops; caches what backward needs
    dx = layer.backward(dy)         # returns dL/dx and fills layer.grads (same keys as params)

`params` and `grads` are dicts of named NumPy arrays; optimizers update `params` in place.
`state` holds non-trainable arrays that are saved with the model (BatchNorm running stats).
`regularizers` maps a parameter name to a penalty whose loss is added to the reported loss and
whose gradient is added to `grads` by the model.
"""
from __future__ import annotations

import itertools

import numpy as np

from .. import registry

_name_counter = itertools.count(1)


def register_layer(cls):
    """Make a layer class loadable by `pydl.load_model` (resolution is by this registry only)."""
    return registry.layers.register(cls)


class Layer:
    def __init__(self, input_shape=None, name: str | None = None, trainable: bool = True):
        if input_shape is not None:
            try:
                try:
                    input_shape = tuple(int(d) for d in input_shape)
                except TypeError:
                    input_shape = (int(input_shape),)
            except (TypeError, ValueError, OverflowError):  # None inside, "a", NaN, Inf
                raise ValueError(f"[{type(self).__name__}] input_shape must be ints, got {input_shape!r}") from None
            if any(d <= 0 for d in input_shape):
                raise ValueError(f"[{type(self).__name__}] input_shape must hold positive sizes, got {input_shape}")
        self.input_shape_arg = input_shape  # without the batch dimension, as Keras
        self.name = name or f"{type(self).__name__.lower()}_{next(_name_counter)}"
        self.trainable = bool(trainable)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.regularizers: dict = {}
        self.input_shape: tuple | None = None
        self.output_shape: tuple | None = None
        self.built = False
        # False on a model's first layer: backward may skip computing dL/dx and return None.
        self.need_input_grad = True

    # -- lifecycle -------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create weights for inputs of `input_shape` (batch dimension included, may be None)."""
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x, training: bool = False):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, x, training: bool = False):
        if not self.built:
            self.build((None,) + tuple(np.shape(x))[1:])
        return self.forward(x, training=training)

    def check_input(self, x) -> None:
        """Raise ValueError naming the layer if `x` does not fit the shape it was built for."""
        if not self.built:
            raise ValueError(f"[{type(self).__name__} '{self.name}'] is not built; call build(input_shape) "
                             f"or put it in a model first")
        want = self.input_shape
        got = tuple(np.shape(x))
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want[1:], got[1:])):
            raise ValueError(f"[{type(self).__name__} '{self.name}'] expected input of shape "
                             f"{_fmt_shape(want)}, got {got}")

    # -- randomness hooks (stochastic layers override; used to replay a forward pass) ------
    def get_rng_state(self):
        return None

    def set_rng_state(self, state) -> None:
        pass

    # -- bookkeeping -----------------------------------------------------------------------
    def zero_grads(self) -> None:
        for k, p in self.params.items():
            self.grads[k] = np.zeros_like(p)

    def count_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def flops(self) -> int:
        """Forward floating-point operations per sample (multiply-add = 2)."""
        return 0

    def regularization_loss(self) -> float:
        return float(sum(r(self.params[k]) for k, r in self.regularizers.items() if k in self.params))

    def add_regularization_grads(self) -> None:
        for k, r in self.regularizers.items():
            if k in self.params and k in self.grads:
                self.grads[k] += r.gradient(self.params[k]).astype(self.grads[k].dtype, copy=False)

    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable}
        if self.input_shape_arg is not None:
            cfg["input_shape"] = list(self.input_shape_arg)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} output_shape={self.output_shape}>"


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")
