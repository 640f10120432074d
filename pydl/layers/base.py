"""The Layer contract every pydl layer follows.

    layer = Dense(64)                          # __init__: configuration only
    layer.build((None, 784))                   # weights, from the input shape *with* the batch dimension
    y = layer.forward(x, training, ctx=ctx)    # a few lines calling pydl.ops; saves what backward needs in ctx
    dx = layer.backward(dy, ctx=ctx)           # returns dL/dx and ADDS dL/dparams into layer.grads

One context per call
--------------------
A layer may be called several times in one training step (a shared layer: the same weights
applied to two tensors). Whatever backward needs from a call (its input, its output, a mask, a
cache from pydl.ops) is therefore stored in a `Context`, one per call, never on the layer:

    def forward(self, x, training=False, ctx=None):
        ctx = self.forward_context(ctx)        # the caller's context, or the layer's own one
        y = ops.something(x, self.params["W"])
        ctx.x = x                              # anything backward needs, as attributes
        return y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)       # RuntimeError naming the layer if no forward filled it
        dx, dW = ops.something_backward(dout, ctx.x, self.params["W"], need_dx=ctx.need_input_grad)
        self.add_grad("W", dW)
        return dx

A model creates one context per node of its graph (`layer.new_context()`) once, when it plans
its execution, and passes the same one to the node's forward and backward every step. Called by
hand (`layer.forward(x)`, `layer(x)`, `layer.backward(dy)`) a layer uses its own context, so the
single-use API is unchanged. `forward_context` marks the context as filled by this layer;
`backward_context` refuses a context that no forward of this layer filled, or one filled before
the layer was (re)built, with a RuntimeError naming the layer (never an AttributeError).

`ctx.need_input_grad` (set by the owner of the context) says whether backward must compute dL/dx:
a model clears it for calls whose inputs need no gradient (a layer consuming only model inputs),
and backward may then return None. `ctx.need_backward` says whether any backward will read this
call at all: a model clears it for inference (`predict`, `evaluate`, calling the model), and a
layer may then skip storing what only backward reads (the recurrent layers then keep no
per-step cache, and their backward refuses such a call). Called by hand it is always True.

Gradients accumulate
--------------------
`backward` adds into `layer.grads` through `self.add_grad(key, g)`, never assigning, so the two
calls of a shared layer sum their contributions. `zero_grads()` resets them; a model does so once
per step. An absent key means a zero gradient: `add_grad` stores the first contribution as it is
(no zero-fill, no extra pass over memory) and adds later ones in place. `backward` must not write
into `dout` (a merge layer may hand the same array to several inputs). Driving a layer by hand,
call `zero_grads()` between steps.

Several inputs and outputs
--------------------------
A layer with `multi_input = True` (the merge layers) takes a list of tensors in forward, is built
from a list of shapes and returns a list of input gradients (entries may be None). A layer whose
`compute_output_shape` returns a list of shapes returns a list of outputs and its backward takes
a list of gradients, None for outputs no loss depends on (recurrent layers with return_state).

Other attributes: `params` and `grads` are dicts of named NumPy arrays; optimizers update `params`
in place. `state` holds non-trainable arrays that are saved with the model (BatchNorm running
stats). `regularizers` maps a parameter name to a penalty whose loss is added to the reported
loss and whose gradient is added to `grads` by the model. `trainable = False` freezes the layer's
params: models pass no gradient for them to the optimizer (the change applies from the next
training step of every model containing the layer, no recompile needed).

Masks (padded sequences)
------------------------
As Keras: a layer may produce a mask for its output with `compute_mask(inputs, mask)` (an array
(N, T) of bools, or None); Embedding(mask_zero=True) does (ids != 0). A model carries each
tensor's mask along the graph: a layer whose forward has a `mask` parameter receives its input's
mask as `forward(x, training, ctx=ctx, mask=m)` (the recurrent layers, which skip masked steps);
a layer with `supports_masking = True` passes the mask on unchanged by default (Dense, Dropout
and the activation layers, which act per time step). A layer that neither supports masking nor
overrides compute_mask drops a mask it receives, with a warning once per layer (Keras 3 does the
same). GlobalAveragePooling1D averages the unmasked steps; the merge layers combine their inputs'
masks (`combines_masks = True`: compute_mask is overridden but creates no mask from nothing). A
mask that reaches a model output (N, T, ...) restricts its loss and metrics to the unmasked
steps (see pydl.model). Masks flow only through a model's graph, not through calls by hand.

Calling a layer on a symbolic tensor (`pydl.Input`, or the output of another such call) runs no
computation: it records a node of a graph, from which `pydl.Model` is built (see pydl.graph).
"""
from __future__ import annotations

import itertools

import numpy as np

from .._validate import flag
from .. import registry
from ..ops import device

_name_counter = itertools.count(1)
# Bumped whenever any layer's `trainable` changes; models re-plan their backward pass when it moved.
_trainable_version = 0


def register_layer(cls):
    """Make a layer class loadable by `pydl.load_model` (resolution is by this registry only)."""
    return registry.layers.register(cls)


class Context:
    """What one call of a layer keeps for its backward. Layers set their own attributes on it.

    `layer` is the owner, `need_input_grad` whether backward must return dL/dx, `filled` the build
    generation of the layer whose forward filled it (None before any forward)."""

    def __init__(self, layer, need_input_grad: bool = True):
        self.layer = layer
        self.need_input_grad = need_input_grad
        # False when the call is for inference only and no backward will read it (set by a model)
        self.need_backward = True
        self.filled = None
        # how this call's arrays are stored: None (the tensors' own shapes) or "nchw" (a 4-D
        # channels-last tensor held as (N, C, H, W) inside a model; see pydl.layers.layout)
        self.layout = None

    def __repr__(self) -> str:
        return f"<Context of {getattr(self.layer, 'name', '?')} filled={self.filled is not None}>"


class Layer:
    # True for layers whose forward takes a list of tensors (Add, Concatenate, ...)
    multi_input = False
    # True for layers that pass an input mask on to their output unchanged (see "Masks")
    supports_masking = False
    # True for layers whose forward and backward run on CuPy arrays (pydl.ops has CUDA kernels
    # for everything they call); Model.to("cuda") refuses a model holding any other layer
    supports_cuda = False

    def __init__(self, input_shape=None, name: str | None = None, trainable: bool = True):
        if input_shape is not None:
            try:
                try:
                    input_shape = tuple(None if d is None else int(d) for d in input_shape)
                except TypeError:
                    input_shape = (int(input_shape),)
            except (TypeError, ValueError, OverflowError):  # "a", NaN, Inf
                raise ValueError(f"[{type(self).__name__}] input_shape must be ints (None for a variable "
                                 f"size), got {input_shape!r}") from None
            if any(d is not None and d <= 0 for d in input_shape):
                raise ValueError(f"[{type(self).__name__}] input_shape must hold positive sizes, got {input_shape}")
        self.input_shape_arg = input_shape  # without the batch dimension, as Keras
        self.name = name or f"{type(self).__name__.lower()}_{next(_name_counter)}"
        self._trainable = flag(trainable, "trainable", type(self).__name__)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.regularizers: dict = {}
        self.input_shape: tuple | None = None
        self.output_shape: tuple | None = None
        self.built = False
        # For calls by hand: whether backward computes dL/dx (models set it per call on the context).
        self.need_input_grad = True
        self._generation = 0
        self._own_ctx = None

    # -- trainable ------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        global _trainable_version
        self._trainable = flag(value, "trainable", type(self).__name__)
        _trainable_version += 1

    # -- lifecycle -------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create weights for inputs of `input_shape` (batch dimension included, may be None).
        Multi-input layers get a list of shapes."""
        if self.multi_input:
            self.input_shape = [tuple(s) for s in input_shape]
        else:
            self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.built = True
        self._generation = getattr(self, "_generation", 0) + 1

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        """The mask of this layer's output (an (N, T) bool array, a list for several outputs, or
        None) given its inputs and their mask: the input mask for layers that support masking,
        else None. Layers that create masks (Embedding) or change them override this."""
        return mask if self.supports_masking else None

    def forward(self, x, training: bool = False, ctx: Context | None = None):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dout, ctx: Context | None = None):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, x, training: bool = False):
        from .. import graph

        if graph.is_symbolic(x):
            return graph.call_layer(self, x)
        if not self.built:
            if self.multi_input:
                self.build([(None,) + tuple(np.shape(t))[1:] for t in x])
            else:
                self.build((None,) + tuple(np.shape(x))[1:])
        return self.forward(x, training=training)

    # -- contexts ----------------------------------------------------------------------------
    def new_context(self, need_input_grad: bool = True) -> Context:
        """A fresh context for one call site of this layer (a model keeps one per graph node)."""
        return Context(self, need_input_grad)

    def _label(self) -> str:
        return f"{type(self).__name__} '{self.name}'"

    def forward_context(self, ctx: Context | None) -> Context:
        """The context this forward call fills: `ctx`, or the layer's own one for calls by hand."""
        if ctx is None:
            ctx = self._own_ctx
            if ctx is None:
                ctx = self._own_ctx = Context(self)
            ctx.need_input_grad = self.need_input_grad
            ctx.need_backward = True
        elif ctx.layer is not self:
            raise RuntimeError(f"[{self._label()}] forward was given the context of layer "
                               f"'{getattr(ctx.layer, 'name', ctx.layer)}'")
        ctx.filled = self._generation
        return ctx

    def backward_context(self, ctx: Context | None) -> Context:
        """The context a backward call reads; RuntimeError unless a forward of this layer (as built
        now) filled it."""
        if ctx is None:
            ctx = self._own_ctx
        if ctx is None or ctx.filled is None:
            raise RuntimeError(f"[{self._label()}] backward called before forward (no forward pass has "
                               f"stored what backward needs)")
        if ctx.layer is not self:
            raise RuntimeError(f"[{self._label()}] backward was given the context of layer "
                               f"'{getattr(ctx.layer, 'name', ctx.layer)}'")
        if ctx.filled != self._generation:
            raise RuntimeError(f"[{self._label()}] backward called with a stale context: the layer was "
                               f"rebuilt after the forward pass that filled it; run forward again")
        return ctx

    def check_input(self, x, ctx: Context | None = None) -> None:
        """Raise ValueError naming the layer if `x` does not fit the shape it was built for (stored
        as `ctx.layout` says)."""
        if not self.built:
            raise ValueError(f"[{type(self).__name__} '{self.name}'] is not built; call build(input_shape) "
                             f"or put it in a model first")
        want = self.input_shape
        if ctx is not None and ctx.layout == "nchw" and len(want) == 4:
            want = (want[0], want[3], want[1], want[2])
        got = tuple(np.shape(x))
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want[1:], got[1:])):
            raise ValueError(f"[{type(self).__name__} '{self.name}'] expected input of shape "
                             f"{_fmt_shape(want)}, got {got}")

    def layout_kind(self, input_shape=None):
        """How a model may store this layer's 4-D inputs (see pydl.layers.layout): None, the
        tensors' own layout only; "any", either (the output keeps the input's); "nchw", NCHW
        preferred (channels-last image layers)."""
        return None

    # -- randomness hooks (stochastic layers override; used to replay a forward pass) ------
    def get_rng_state(self):
        return None

    def set_rng_state(self, state) -> None:
        pass

    # -- gradients ---------------------------------------------------------------------------
    def zero_grads(self) -> None:
        """Reset the accumulated gradients to zero (an absent key is a zero gradient)."""
        self.grads.clear()

    def add_grad(self, key: str, g) -> None:
        """grads[key] += g. The first contribution since zero_grads is stored as it is (backward
        passes arrays it owns: fresh outputs of pydl.ops)."""
        cur = self.grads.get(key)
        if cur is None:
            self.grads[key] = g
        else:
            cur += g

    def count_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    # -- weights, as Keras ---------------------------------------------------------------------
    @property
    def weights(self) -> list:
        """The layer's arrays themselves (not copies): parameters, then state (BatchNorm's moving
        statistics), in the order of get_weights."""
        return list(self.params.values()) + list(self.state.values())

    @property
    def trainable_weights(self) -> list:
        return list(self.params.values()) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        return ([] if self.trainable else list(self.params.values())) + list(self.state.values())

    def get_weights(self) -> list:
        """Copies of the parameters then the state arrays (Dense: [W (in, units), b])."""
        return [w.get() if device.is_cuda(w) else np.array(w, copy=True) for w in self.weights]

    def set_weights(self, weights) -> None:
        """Set every array from a list in get_weights order (all are checked before any is written)."""
        who = f"{type(self).__name__}.set_weights"
        slots = [("params", k) for k in self.params] + [("state", k) for k in self.state]
        weights = list(weights)
        if len(weights) != len(slots):
            raise ValueError(f"[{who}] layer '{self.name}' has {len(slots)} weight arrays "
                             f"({', '.join(k for _, k in slots) or 'none: is it built?'}), got {len(weights)}")
        arrays = []
        for (kind, k), w in zip(slots, weights):
            target = getattr(self, kind)[k]
            w = np.asarray(device.to_host(w))
            if w.dtype == object or not np.issubdtype(w.dtype, np.number):
                raise ValueError(f"[{who}] {self.name}/{k} must be numeric, got dtype {w.dtype}")
            if w.shape != target.shape:
                raise ValueError(f"[{who}] {self.name}/{k} has shape {target.shape}, got {w.shape}")
            arrays.append(w)
        for (kind, k), w in zip(slots, arrays):
            target = getattr(self, kind)[k]
            target[...] = device.like_device(w.astype(target.dtype, copy=False), target)

    def flops(self) -> int:
        """Forward floating-point operations per sample (multiply-add = 2)."""
        return 0

    def regularization_loss(self) -> float:
        return float(sum(r(self.params[k]) for k, r in self.regularizers.items() if k in self.params))

    def add_regularization_grads(self) -> None:
        for k, r in self.regularizers.items():
            if k in self.params:
                self.add_grad(k, r.gradient(self.params[k]).astype(self.params[k].dtype, copy=False))

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
    if isinstance(shape, list):
        return "[" + ", ".join(_fmt_shape(s) for s in shape) + "]"
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")
