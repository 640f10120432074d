"""`Model`: a graph of layer calls trained with `compile` / `fit`, as in Keras; `Sequential` is
the one-chain case of the same machinery.

    inp = pydl.Input(shape=(1, 28, 28))
    x = Conv2D(32, 3, padding="same")(inp); x = BatchNormalization()(x); x = Activation("relu")(x)
    y = Conv2D(32, 3, padding="same")(x); y = BatchNormalization()(y)
    x = Activation("relu")(Add()([x, y]))                             # residual
    out = Dense(10, activation="softmax")(GlobalAveragePooling2D()(x))
    model = pydl.Model(inputs=inp, outputs=out)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10); model.save("model.npz"); model = pydl.load_model("model.npz")

    model = pydl.Sequential([Dense(128, activation="relu", input_shape=(64,)), Dense(10, activation="softmax")])

    class Net(pydl.Model):                  # subclassing: layers in __init__, the computation in call
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = Dense(50, activation="relu"), Dense(10)
        def call(self, x):
            return self.fc2(self.fc1(x))
    net = Net(); net.build((None, 784))     # or let the first fit/predict infer the input shape

A subclass's `call` runs once, on symbolic inputs (`pydl.Input`), and is recorded into the same
graph as a functional model (no autograd): from then on the model is its graph.

Execution plan (made once when the graph is built, not per step): the nodes in topological
order, one `Context` per node (what the call keeps for its backward), one slot per tensor. A step
runs forward over the nodes in that order, the losses (one per output, weighted), then backward
over the nodes in reverse, summing the gradients of a tensor that feeds several nodes. Which nodes
need a backward pass at all, and which need their input gradient (`ctx.need_input_grad`: not a
node consuming only model inputs or frozen constants), is planned again only when some layer's
`trainable` changed since. Grads are zeroed once per step (layers accumulate into them), then
regularization gradients are added and one `optimizer.apply_gradients` updates every parameter of
every layer in `model.layers` order: a frozen layer (`trainable = False`) passes None, which
leaves the parameter and its optimizer slots untouched. Toggling `trainable` takes effect at the
next step of every model containing the layer; no recompile is needed (Keras needs one).

Softmax + cross-entropy fusion: an output produced by a softmax (`Softmax`, `Activation("softmax")`,
`Dense(activation="softmax")`) that feeds nothing else, with categorical / sparse cross-entropy on
probabilities, is trained and evaluated from the logits (see `pydl.losses`).

Several inputs and outputs: x and y are lists in the order of `inputs` / `outputs` (or dicts
keyed by input names / output names: an output is named after the layer producing it). compile
takes one loss for every output, a list, or a dict (outputs without a loss get no gradient), and
`loss_weights` (list or dict); the logged "loss" is the weighted sum plus regularization, with
"<output>_loss" and "<output>_<metric>" per output when there are several.

Save format (version 2): one `.npz` written by `np.savez` (no pickle) holding
  "<layer>/<name>"     every parameter and state array (BatchNorm moving statistics),
  "optimizer/<key>"    the optimizer state (`optimizer.get_state()`; slot i = the i-th parameter of
                       `model.layers`, frozen ones included),
  "scaler/<key>"       the state of `model.scaler`, if one is attached,
  "__config__"         a JSON string: {"format": "pydl-model", "version": 2, "name",
                       "class_name": "Sequential" | "Model", "input_shape" (Sequential),
                       "layers": [{"class_name", "config"}] (model.layers order),
                       "graph": {"inputs": [{"name", "shape"}], "nodes": [{"layer": i, "inputs": [ref],
                       "list": bool}], "outputs": [ref]} or null (an unbuilt Sequential),
                       "compile": {"loss", "loss_weights", "optimizer", "metrics"} or null (not compiled, or
                       a learning rate that cannot be saved: weights only, with a warning),
                       "scaler": {"class_name", "config"} or null}
  where a ref is ["input", k, 0] or ["node", i, j] (output j of node i; nodes are listed in
  topological order and refer only to earlier ones). A subclassed model is saved as its traced
  graph and loads as a functional `Model`. Version-1 files (the `Sequential.save` of pydl before
  graphs: the same arrays, "layers" without "graph", the optimizer's slots over the trainable
  layers only) still load. `load_model` reads with `allow_pickle=False` and resolves every class
  name through `pydl.registry` only; anything malformed raises ValueError.

`model.scaler` (a pydl.data StandardScaler / MinMaxScaler, or None) is only carried: it is saved
and restored with the model, but `fit`, `evaluate` and `predict` never apply it; transform the
inputs yourself (`model.predict(model.scaler.transform(x))`).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import numbers
import os
import signal
import sys
import tempfile
import threading
import warnings
import zipfile

import numpy as np

from . import data_adapters as _da
from . import graph as _graph
from . import losses as _losses
from . import registry
from .layers import base as _base
from .layers import layout as _layout
from .layers.base import Layer, _fmt_shape
from .losses import check_sparse_labels
from .metrics import is_stateful as _is_stateful
from .ops import device as _device
from .ops import nn as _nn
from .random import get_rng

FORMAT = "pydl-model"
VERSION = 2
_READABLE_VERSIONS = (1, 2)
_RESERVED_NAMES = ("optimizer", "scaler", "__config__")
_FUSED_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")


def _positive_int(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"[{who}] {name} must be a positive int, got {value!r}")
    return int(value)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (tuple, np.ndarray)):
        return list(obj.tolist() if isinstance(obj, np.ndarray) else obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a model config")


def _check_layer_name(layer, who: str) -> None:
    if (not isinstance(layer.name, str) or not layer.name or "/" in layer.name or "\x00" in layer.name
            or layer.name in _RESERVED_NAMES):
        raise ValueError(f"[{who}] layer name {layer.name!r} is not allowed (no '/' or NUL, not one of "
                         f"{_RESERVED_NAMES})")


def _takes_ctx(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return "ctx" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _takes_mask(layer) -> bool:
    """Whether the layer's forward has a `mask` parameter (it then receives its input's mask)."""
    try:
        return "mask" in inspect.signature(layer.forward).parameters
    except (TypeError, ValueError):
        return False


def _makes_masks(layer) -> bool:
    """Whether the layer may create a mask where none came in (overrides compute_mask; the merge
    layers only combine the masks they receive)."""
    return type(layer).compute_mask is not Layer.compute_mask and not getattr(layer, "combines_masks", False)


class _SlotValues(list):
    """The values of a model's tensor slots, with `masks`: a list of each slot's mask (None for
    a slot without one) from a graph that tracks masks, else None."""
    __slots__ = ("masks",)

    def __init__(self, values, masks=None):
        super().__init__(values)
        self.masks = masks


def _output_mask(vals, slot: int, pred, who: str, k: int):
    """The mask (N, T) bool of the output in `slot` when it weighs the (N, T) rows of an output
    (N, T, ...) (losses and metrics then count only unmasked rows), else None."""
    masks = getattr(vals, "masks", None)
    if masks is None or masks[slot] is None:
        return None
    m = np.asarray(masks[slot])
    if m.shape != np.shape(pred)[:-1]:
        raise ValueError(f"[{who}] output {k} carries a mask of shape {m.shape} that does not match its rows "
                         f"{np.shape(pred)[:-1]} (shape {np.shape(pred)}); a layer that changes the sequence "
                         f"shape must compute its output mask (compute_mask) or return None")
    return m.astype(bool, copy=False)


def _check_contract(layer) -> None:
    """A layer in a model must take the per-call context (forward(x, training, ctx=...),
    backward(dy, ctx=...)); say so clearly for a layer written for the older contract."""
    for meth in ("forward", "backward"):
        if not _takes_ctx(getattr(layer, meth)):
            raise TypeError(f"[{type(layer).__name__} '{layer.name}'] {meth} takes no ctx argument; a layer in a model "
                            f"keeps what backward needs in the per-call context: def forward(self, x, training=False, "
                            f"ctx=None) / def backward(self, dout, ctx=None) (see pydl.layers.base)")


class Model:
    """A graph of layer calls with compile / fit / evaluate / predict / save / summary.

    Model(inputs=..., outputs=...) with symbolic tensors (functional API), or a subclass that
    creates layers in __init__ and defines call(self, x). See the module docstring."""

    def __init__(self, inputs=None, outputs=None, name: str | None = None):
        default = "model" if type(self) is Model else type(self).__name__.lower()
        self.name = name if name is not None else default
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"[Model] name must be a non-empty string, got {name!r}")
        self._layers: list[Layer] = []
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.loss = None
        self.optimizer = None
        self._dist = None  # the DistributedOptimizer this model was compiled with, if any
        self._device = "cpu"  # where parameters, state, optimizer slots and batches live (see `to`)
        self.metrics: list[tuple[str, object]] = []
        self._metric_ids: list = []
        self._loss_weights_arg = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self.scaler = None
        self._inputs: list = []
        self._outputs: list = []
        self._nodes: list = []
        self._plan = None
        self._bplan = None
        self._bplan_version = -1
        self._out_plan = None
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ValueError("[Model] a functional model needs both inputs= and outputs=")
            self._init_graph(inputs, outputs)
        elif type(self) is Model:
            raise TypeError("[Model] give inputs= and outputs= (symbolic tensors from pydl.Input and layer calls), "
                            "or subclass pydl.Model and define call(self, x)")

    # -- the graph ---------------------------------------------------------------------------
    @property
    def layers(self) -> list:
        """The layers of the model, each once, in execution order (model inputs not included)."""
        return self._layers

    @property
    def inputs(self) -> list:
        """The model's input tensors (symbolic), in order."""
        return list(self._inputs)

    @property
    def outputs(self) -> list:
        """The model's output tensors (symbolic), in order."""
        return list(self._outputs)

    def _who(self, what: str) -> str:
        return f"{type(self).__name__}.{what}"

    def _init_graph(self, inputs, outputs) -> None:
        ins = _graph.flatten_tensors(inputs, "inputs")
        outs = _graph.flatten_tensors(outputs, "outputs")
        for i, t in enumerate(ins):
            if not t.is_input:
                raise TypeError(f"[Model] inputs[{i}] '{t.name}' is the output of layer '{t.node.layer.name}', not a "
                                f"model input; use pydl.Input(shape) for inputs")
        if len({id(t) for t in ins}) != len(ins):
            raise ValueError("[Model] the same input tensor is listed twice in inputs")
        names = [t.name for t in ins]
        if len(set(names)) != len(names):
            raise ValueError(f"[Model] input names must be unique, got {names}")
        nodes = _graph.topological_nodes(ins, outs)
        layers, seen = [], set()
        for node in nodes:
            if id(node.layer) not in seen:
                seen.add(id(node.layer))
                layers.append(node.layer)
        by_name = {}
        for layer in layers:
            _check_layer_name(layer, "Model")
            if layer.name in by_name:
                raise ValueError(f"[Model] two different layers are named '{layer.name}'; names must be unique")
            by_name[layer.name] = layer
        self._inputs, self._outputs, self._nodes, self._layers = ins, outs, nodes, layers
        # output names: the producing layer's name (the input's for an output that is an input)
        out_names = []
        for t in outs:
            base = t.name if t.node is None else t.node.layer.name
            nm, k = base, 1
            while nm in out_names:
                nm, k = f"{base}_{k}", k + 1
            out_names.append(nm)
        self.input_names = names
        self.output_names = out_names
        self.input_shape = ins[0].shape if len(ins) == 1 else [t.shape for t in ins]
        self.output_shape = outs[0].shape if len(outs) == 1 else [t.shape for t in outs]
        self._make_plan()
        self.built = True

    def _make_plan(self) -> None:
        """Slots for every tensor, a context per node and the forward steps; done once per graph.

        Layouts: a 4-D channels-last tensor may be held as NCHW between layers that run on NCHW
        (channels-last image layers, and element-wise layers whose inputs are held so); a
        LayoutTranspose step converts a tensor where the next layer needs the other layout, once
        per tensor and layout, and before the model's outputs (see pydl.layers.layout)."""
        slot = {}
        for t in self._inputs:
            slot[id(t)] = len(slot)
        n_slots = len(slot)
        steps = []
        consumers: dict[int, int] = {}
        for layer in {id(n.layer): n.layer for n in self._nodes}.values():
            _check_contract(layer)
        nchw_slots: set = set()  # slots holding a channels-last 4-D tensor as NCHW
        converted: dict = {}     # (slot, to NCHW?) -> the slot of its transposed copy

        def held(s: int, as_nchw: bool) -> int:
            nonlocal n_slots
            if (s in nchw_slots) == as_nchw:
                return s
            key = (s, as_nchw)
            if key not in converted:
                perm = _layout.TO_NCHW if as_nchw else _layout.TO_NHWC
                t = _layout.LayoutTranspose(perm, f"{self.name}/layout_{len(converted)}")
                converted[key] = n_slots
                steps.append((t, t.new_context(), s, False, n_slots, False))
                if as_nchw:
                    nchw_slots.add(n_slots)
                n_slots += 1
            return converted[key]

        node_step = {}
        for node in self._nodes:
            in_slots = [slot[id(t)] for t in node.inputs]
            shapes = [t.shape for t in node.inputs]
            kind = node.layer.layout_kind(shapes if node.multi_in else shapes[0])
            image = [len(sh) == 4 for sh in shapes]
            if kind == "nchw":
                nchw = any(image)
                ins = [held(s, im) for s, im in zip(in_slots, image)]
            elif kind == "any" and all(image) and all(len(t.shape) == 4 for t in node.outputs) \
                    and any(s in nchw_slots for s in in_slots):
                nchw = True
                ins = [held(s, True) for s in in_slots]
            else:
                nchw = False
                ins = [held(s, False) for s in in_slots]
            for t in node.inputs:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
            outs = []
            for t in node.outputs:
                slot[id(t)] = n_slots
                if nchw and len(t.shape) == 4:
                    nchw_slots.add(n_slots)
                outs.append(n_slots)
                n_slots += 1
            ctx = node.layer.new_context()
            ctx.layout = "nchw" if nchw else None
            node_step[id(node)] = len(steps)
            steps.append((node.layer, ctx, tuple(ins) if node.multi_in else ins[0], node.multi_in,
                          tuple(outs) if node.multi_out else outs[0], node.multi_out))
        self._slot = slot
        self._input_slots = [slot[id(t)] for t in self._inputs]
        self._output_slots = [held(slot[id(t)], False) for t in self._outputs]
        self._n_slots = n_slots
        self._consumers = consumers
        self._node_step = node_step
        self._plan = steps
        # Masks are tracked only in graphs where some layer creates one (Embedding(mask_zero=True)).
        self._masking = any(_makes_masks(node.layer) for node in self._nodes)
        # one entry per step (layout transposes included: they carry the mask on)
        self._mask_plan = [(_takes_mask(st[0]), isinstance(st[0], _layout.LayoutTranspose) or
                            st[0].supports_masking or _makes_masks(st[0])) for st in steps]
        # Inputs read only by layers that take integer ids (Embedding) keep integer dtypes.
        self._int_inputs = [bool(consumers.get(id(t))) and all(getattr(n.layer, "integer_input", False)
                                                               for n in self._nodes if t in n.inputs)
                            for t in self._inputs]
        self._param_slots = [(layer, k) for layer in self._layers for k in layer.params]
        self._reg_layers = [layer for layer in self._layers if layer.regularizers]
        self._bplan = None
        self._out_plan = None

    def _fusable_output(self, k: int) -> bool:
        """Output k may run fused with a cross-entropy loss: a softmax layer's only output, feeding
        nothing else and listed once among the outputs."""
        t = self._outputs[k]
        if t.node is None or t.node.multi_out or not getattr(t.node.layer, "fusable_softmax", False):
            return False
        return self._consumers.get(id(t), 0) == 0 and sum(o is t for o in self._outputs) == 1

    def _backward_plan(self, force_all: bool = False, out_plan=None):
        """Reverse steps that need a backward pass, with ctx.need_input_grad set; re-made only when
        a `trainable` flag changed (or forced: every node, every input gradient, with the fused
        outputs of `out_plan`, for gradcheck)."""
        version = _base._trainable_version
        if not force_all and self._bplan is not None and self._bplan_version == version:
            return self._bplan
        if out_plan is None:
            out_plan = self._output_plan()
        fused_at = {self._node_step[id(self._outputs[k].node)]: k for k, (_, _, fused, _) in enumerate(out_plan)
                    if fused}
        wants = [False] * self._n_slots  # the tensor depends on something with trainable weights
        steps, needs_seen = [], set()
        for i, (layer, ctx, ins, multi_in, outs, multi_out) in enumerate(self._plan):
            in_list = ins if multi_in else (ins,)
            need_in = force_all or any(wants[s] for s in in_list)
            run = need_in or force_all or (layer.trainable and bool(layer.params))
            ctx.need_input_grad = need_in
            if not force_all:  # informational, for calls by hand: does any call of the layer need dx
                layer.need_input_grad = need_in or (layer.need_input_grad and id(layer) in needs_seen)
                needs_seen.add(id(layer))
            for s in (outs if multi_out else (outs,)):
                wants[s] = run
            if run:
                steps.append((layer, ctx, ins, multi_in, outs, multi_out, fused_at.get(i)))
        steps.reverse()
        if force_all:
            self._bplan = None  # the next ordinary step plans (and sets need_input_grad) again
            return steps
        self._bplan, self._bplan_version = steps, version
        return steps

    # -- calling ------------------------------------------------------------------------------
    def call(self, inputs):
        """Subclasses define the computation here, in terms of layer calls (traced once)."""
        raise NotImplementedError(f"[{type(self).__name__}] a subclassed Model must define call(self, x)")

    def _is_subclass_graph(self) -> bool:
        return type(self).call is not Model.call

    # -- device ------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """"cpu" or "cuda": where the model's arrays live and its steps run (see `to`)."""
        return self._device

    def to(self, device) -> "Model":
        """Move the model to "cpu" or "cuda" (returns the model): parameters, state (BatchNorm's
        moving statistics), gradients and optimizer slots move now, weights a later build creates
        move when they appear; fit/evaluate/predict then move each batch to the device. "cuda"
        without CuPy, a driver or a GPU is a CudaUnavailableError saying which is missing."""
        d = _device.check_device(device, self._who("to"))
        if d == "cuda":
            missing = sorted({type(layer).__name__ for layer in self._layers if not layer.supports_cuda})
            if missing:
                raise ValueError(f"[{self._who('to')}] these layers have no CUDA kernels and run on the CPU only: "
                                 f"{', '.join(missing)}; keep the model on the CPU")
            if self._dist is not None:
                raise ValueError(f"[{self._who('to')}] data-parallel training (pydl.distributed) runs on the CPU only")
        self._device = d
        self._place()
        return self

    def _place(self) -> None:
        """Every array of the layers and the optimizer on self._device (moves only what is not)."""
        d = self._device
        for layer in self._layers:
            for store in (layer.params, layer.state, layer.grads):
                for k, v in store.items():
                    if v is not None and _device.device_of(v) != d:
                        store[k] = _device.to_device(v, d)
        opt = self.optimizer
        if opt is not None and getattr(opt, "_slots", None):
            for slots in opt._slots:
                for k, v in slots.items():
                    if v is not None and _device.device_of(v) != d:
                        slots[k] = _device.to_device(v, d)

    def _check_cuda_layers(self) -> None:
        """Layers added after `to("cuda")` (a Sequential built later) must support CUDA too."""
        bad = [layer for layer in self._layers if not layer.supports_cuda]
        if bad:
            raise ValueError(f"[{self._who('fit')}] the model is on cuda but layer '{bad[0].name}' "
                             f"({type(bad[0]).__name__}) has no CUDA kernels; move the model to the CPU")

    def _on_device(self, arrays):
        """A list of batch arrays (None entries kept) moved to the model's device."""
        if arrays is None:
            return None
        d = self._device
        return [_device.to_device(a, d) for a in arrays]

    def build(self, input_shape) -> None:
        """Trace `call` on symbolic inputs of `input_shape` (batch dimension included, e.g.
        (None, 1, 28, 28); a list of shapes for several inputs). A functional model is built already."""
        if not self._is_subclass_graph():
            if self.built:
                return
            raise ValueError(f"[{self._who('build')}] this model has no graph; create it with inputs= and outputs=")
        multi = isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (list, tuple))
        shapes = input_shape if multi else [input_shape]
        inputs = []
        for s in shapes:
            shape = self._check_build_shape(s)
            inputs.append(_graph.Input(shape[1:]))
        outs = self.call(inputs if multi else inputs[0])
        if isinstance(outs, dict):
            raise TypeError(f"[{self._who('call')}] return a tensor or a list of tensors, not a dict")
        try:
            _graph.flatten_tensors(outs, "call's result")
        except TypeError as exc:
            raise TypeError(f"[{self._who('call')}] must return what layers return (symbolic tensors while "
                            f"the model is traced): {exc}") from None
        self._init_graph(inputs, outs)

    def _check_build_shape(self, input_shape) -> tuple:
        try:
            shape = tuple(None if d is None else int(d) for d in input_shape)
        except TypeError:
            raise ValueError(f"[{self._who('build')}] input_shape must be a tuple such as (None, 784), "
                             f"got {input_shape!r}") from None
        if len(shape) < 2:
            raise ValueError(f"[{self._who('build')}] input_shape must include the batch dimension, e.g. "
                             f"(None,) + sample_shape; got {input_shape!r}")
        if any(d is not None and d <= 0 for d in shape[1:]):
            raise ValueError(f"[{self._who('build')}] input_shape sizes must be positive, got {input_shape!r}")
        return (None,) + shape[1:]

    def __call__(self, x, training: bool = False):
        if _graph.is_symbolic(x):
            return self._call_symbolic(x)
        xs = self._prepare_x(x, "__call__")
        vals = self._run_forward(xs, training, need_backward=False)
        outs = [vals[s] for s in self._output_slots]
        return outs[0] if len(outs) == 1 else outs

    def _call_symbolic(self, x):
        """The model used as a layer inside another graph: its nodes are recorded again on the new
        inputs (same layers, so the weights are shared)."""
        if not self.built:
            xs = x if isinstance(x, (list, tuple)) else [x]
            self.build([t.shape for t in xs] if isinstance(x, (list, tuple)) else xs[0].shape)
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self._inputs):
            raise ValueError(f"[{self._who('__call__')}] the model takes {len(self._inputs)} inputs, got {len(xs)}")
        new = {}
        for t, v in zip(self._inputs, xs):
            if not _graph._compatible(t.shape, v.shape):
                raise ValueError(f"[{self._who('__call__')}] input '{t.name}' expects {_fmt_shape(t.shape)}, got "
                                 f"{_fmt_shape(v.shape)}")
            new[id(t)] = v
        for node in self._nodes:
            args = [new[id(t)] for t in node.inputs]
            res = node.layer(args if node.multi_in else args[0])
            for t, r in zip(node.outputs, res if node.multi_out else [res]):
                new[id(t)] = r
        outs = [new[id(t)] for t in self._outputs]
        return outs[0] if len(outs) == 1 else outs

    # -- trainable ------------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return all(layer.trainable for layer in self._layers)

    @trainable.setter
    def trainable(self, value) -> None:
        """Freeze (False) or unfreeze every layer of the model; takes effect at the next step of
        every model that contains these layers."""
        for layer in self._layers:
            layer.trainable = value

    def get_layer(self, name: str) -> Layer:
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"[{self._who('get_layer')}] no layer named {name!r} (layers: "
                         f"{', '.join(l.name for l in self._layers)})")

    # -- compile ----------------------------------------------------------------------------
    def compile(self, loss, optimizer="adam", metrics=None, loss_weights=None) -> None:
        """loss: one loss (every output), a list (one per output, None for none) or a dict keyed by
        output name; loss_weights: a list or dict of floats (default 1); metrics: a list (applied
        to every output) or a dict keyed by output name."""
        from . import metrics as _metrics
        from . import optimizers as _optimizers

        who = self._who("compile")
        if isinstance(loss, dict):
            self.loss = {k: (None if v is None else _losses.get(v)) for k, v in loss.items()}
        elif isinstance(loss, (list, tuple)):
            self.loss = [None if v is None else _losses.get(v) for v in loss]
        else:
            self.loss = _losses.get(loss)
        if loss_weights is not None:
            items = loss_weights.values() if isinstance(loss_weights, dict) else loss_weights
            if not isinstance(loss_weights, (dict, list, tuple)):
                raise ValueError(f"[{who}] loss_weights must be a list or a dict of numbers, got {loss_weights!r}")
            for w in items:
                if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) \
                        or not math.isfinite(float(w)) or float(w) < 0:
                    raise ValueError(f"[{who}] loss weights must be finite numbers >= 0, got {w!r}")
        self._loss_weights_arg = loss_weights
        from .distributed import DistributedOptimizer
        if isinstance(optimizer, DistributedOptimizer):
            self._dist, optimizer = optimizer, optimizer.optimizer
        else:
            self._dist = None
        self.optimizer = _optimizers.get(optimizer)

        def resolve(ms):
            if ms is None:
                ms = []
            if isinstance(ms, str) or callable(ms) or (isinstance(ms, tuple) and len(ms) == 2 and callable(ms[1])):
                ms = [ms]
            resolved, seen = [], set()
            for m in ms:
                display, fn = _metrics.get(m)
                if display in seen or display == "loss":
                    raise ValueError(f"[{who}] metric name {display!r} appears twice (or clashes with 'loss')")
                seen.add(display)
                resolved.append((display, fn))
            return resolved, list(ms)

        if isinstance(metrics, dict):
            self._metric_dict = {}
            self._metric_ids = {}
            for k, ms in metrics.items():
                self._metric_dict[k], self._metric_ids[k] = resolve(ms)
            self.metrics = []
        else:
            self._metric_dict = None
            self.metrics, self._metric_ids = resolve(metrics)
        self.compiled = True
        self._out_plan = None
        self._bplan = None
        if self.built:
            self._output_plan()  # mismatched output names / counts fail here, not at fit
            if self._dist is not None:
                self._dist.check_structure(self)

    def _require_compiled(self, who: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"[{self._who(who)}] the model must be compiled first: "
                               f"model.compile(loss=..., optimizer=...)")

    def _per_output(self, spec, what: str, default):
        """A compile argument given once, as a list or as a dict, spread over the outputs."""
        names, n, who = self.output_names, len(self._outputs), self._who("compile")
        if isinstance(spec, dict):
            unknown = [k for k in spec if k not in names]
            if unknown:
                raise ValueError(f"[{who}] {what} names unknown output(s) {unknown}; the outputs are {names}")
            return [spec.get(k, default) for k in names]
        if isinstance(spec, (list, tuple)):
            if len(spec) != n:
                raise ValueError(f"[{who}] {what} has {len(spec)} entries but the model has {n} output(s) {names}")
            return list(spec)
        return [spec] * n

    def _make_output_plan(self, loss, loss_weights, metrics=None):
        """Per output: (loss or None, weight, fused, [(log name, metric fn)]) for these settings."""
        n = len(self._outputs)
        losses = self._per_output(loss, "loss", None)
        weights = [1.0 if w is None else float(w) for w in self._per_output(loss_weights, "loss_weights", None)] \
            if loss_weights is not None else [1.0] * n
        if all(l is None for l in losses):
            raise ValueError(f"[{self._who('compile')}] no output has a loss")
        mets = metrics if metrics is not None else [[] for _ in range(n)]
        plan = []
        for k in range(n):
            lk = losses[k]
            fused = (lk is not None and lk.kind in _FUSED_LOSSES and not lk._from_logits()
                     and self._fusable_output(k))
            prefix = "" if n == 1 else f"{self.output_names[k]}_"
            # a stateful metric object accumulates one output's batches: each output gets its own copy
            plan.append((lk, weights[k], fused, [(prefix + d, copy.deepcopy(fn) if n > 1 and _is_stateful(fn) else fn)
                                                 for d, fn in mets[k]]))
        return plan

    @staticmethod
    def _stateful_named(plan) -> list:
        """[(log name, metric object)] for the plan's stateful metrics."""
        return [(name, fn) for _, _, _, mets in plan for name, fn in mets if _is_stateful(fn)]

    @staticmethod
    def _reset_stateful(plan) -> set:
        """Reset the plan's stateful metrics; returns their log names."""
        names = set()
        for _, _, _, mets in plan:
            for name, fn in mets:
                if _is_stateful(fn):
                    fn.reset_state()
                    names.add(name)
        return names

    def _output_plan(self):
        """The compiled settings per output (see _make_output_plan), made once per graph and compile."""
        if self._out_plan is not None:
            return self._out_plan
        if not self.compiled:
            return [(None, 1.0, False, []) for _ in self._outputs]
        if self._metric_dict is not None:
            mets = self._per_output(self._metric_dict, "metrics", [])
        else:
            mets = [self.metrics] * len(self._outputs)
        self._out_plan = self._make_output_plan(self.loss, self._loss_weights_arg, mets)
        return self._out_plan

    def _fused(self, loss=None) -> bool:
        """Whether the (first) output runs fused softmax + cross-entropy with `loss` (default: the
        compiled loss)."""
        if not self.built:
            return False
        if loss is None:
            return self._output_plan()[0][2]
        loss = _losses.get(loss)
        return loss.kind in _FUSED_LOSSES and not loss._from_logits() and self._fusable_output(0)

    # -- input checks ---------------------------------------------------------------------
    def _as_array(self, a, what: str, who: str) -> np.ndarray:
        if not isinstance(a, np.ndarray):
            try:
                a = np.asarray(a)
            except Exception as exc:
                raise TypeError(f"[{self._who(who)}] {what} must be array-like, got {type(a).__name__}") from exc
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) \
                or np.issubdtype(a.dtype, np.complexfloating):
            raise TypeError(f"[{self._who(who)}] {what} must be a real numeric array, got dtype {a.dtype}")
        return a

    def _split_inputs(self, x, who: str) -> list:
        """x as a list in input order (a single array for one input, a list, or a dict by name)."""
        n_in = len(self._inputs) if self.built else 1
        if isinstance(x, dict):
            if not self.built:
                raise ValueError(f"[{self._who(who)}] inputs given as a dict need a built model")
            missing = [k for k in self.input_names if k not in x]
            extra = [k for k in x if k not in self.input_names]
            if missing or extra:
                raise ValueError(f"[{self._who(who)}] x is a dict with keys {sorted(x)}; the inputs are "
                                 f"{self.input_names}")
            return [x[k] for k in self.input_names]
        if isinstance(x, (list, tuple)) and (n_in > 1 or (not self.built and x and isinstance(x[0], np.ndarray)
                                                          and isinstance(x, list) and len(x) > 1
                                                          and self._is_subclass_graph())):
            if self.built and len(x) != n_in:
                raise ValueError(f"[{self._who(who)}] the model has {n_in} inputs {self.input_names}, got a list of "
                                 f"{len(x)} arrays")
            return list(x)
        if n_in > 1:
            raise ValueError(f"[{self._who(who)}] the model has {n_in} inputs {self.input_names}: pass a list or a "
                             f"dict of arrays")
        return [x]

    def _keeps_int(self, i: int) -> bool:
        """Input i feeds only layers that take integer ids (Embedding): integer arrays pass
        through uncast (a float32 cast would round ids >= 2**24)."""
        if self.built:
            return self._int_inputs[i]
        return i == 0 and bool(self._layers) and getattr(self._layers[0], "integer_input", False) \
            and not self._is_subclass_graph()

    def _prepare_x(self, x, who: str) -> list:
        items = self._split_inputs(x, who)
        multi = len(items) > 1
        out = []
        for i, a in enumerate(items):
            what = f"x[{i}]" if multi else "x"
            a = self._as_array(a, what, who)
            want = self._inputs[i].shape if self.built else None
            if a.ndim < 2:
                raise ValueError(f"[{self._who(who)}] {what} must have a batch dimension and features, got shape "
                                 f"{a.shape}" + (f"; the model expects {_fmt_shape(want)}" if want else ""))
            if a.shape[0] == 0:
                raise ValueError(f"[{self._who(who)}] {what} is empty (shape {a.shape})")
            if not self.built and not self._layers and not self._is_subclass_graph():
                raise ValueError(f"[{self._who(who)}] the model has no layers")
            if want is not None and (a.ndim != len(want) or
                                     any(w is not None and w != g for w, g in zip(want[1:], a.shape[1:]))):
                name = f" (input '{self._inputs[i].name}')" if multi else ""
                hint = _layout.layout_hint(a.shape, want)
                raise ValueError(f"[{self._who(who)}] {what}{name} has shape {a.shape} but the model expects "
                                 f"{_fmt_shape(want)}" + (f": {what} {hint}" if hint else ""))
            if np.issubdtype(a.dtype, np.integer) and self._keeps_int(i):
                a = np.ascontiguousarray(a)
            else:
                a = np.ascontiguousarray(a, dtype=np.float32)
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"[{self._who(who)}] {what} contains NaN or Inf")
            out.append(a)
        if len({a.shape[0] for a in out}) > 1:
            raise ValueError(f"[{self._who(who)}] the inputs have different numbers of samples: "
                             f"{[a.shape[0] for a in out]}")
        if not self.built:
            shapes = [(None,) + a.shape[1:] for a in out]
            self.build(shapes if len(shapes) > 1 else shapes[0])
        return out

    def _split_targets(self, y, who: str) -> list:
        n_out = len(self._outputs)
        if isinstance(y, dict):
            extra = [k for k in y if k not in self.output_names]
            if extra:
                raise ValueError(f"[{self._who(who)}] y names unknown output(s) {extra}; the outputs are "
                                 f"{self.output_names}")
            return [y.get(k) for k in self.output_names]
        if n_out > 1:
            if not isinstance(y, (list, tuple)) or len(y) != n_out:
                raise ValueError(f"[{self._who(who)}] the model has {n_out} outputs {self.output_names}: pass y as a "
                                 f"list of {n_out} arrays or a dict keyed by output name")
            return list(y)
        return [y]

    def _prepare_y(self, y, n: int, who: str, plan=None) -> list:
        """y as a list per output (None where the output has no loss), checked against the outputs."""
        plan = self._output_plan() if plan is None else plan
        items = self._split_targets(y, who)
        out = []
        for k, t in enumerate(items):
            lk = plan[k][0]
            if lk is None:
                out.append(None)
                continue
            if t is None:
                raise ValueError(f"[{self._who(who)}] no target for output '{self.output_names[k]}', which has a loss")
            out.append(self._prepare_one_y(t, n, who, lk, self._outputs[k].shape,
                                           "" if len(items) == 1 else f" for output '{self.output_names[k]}'"))
        return out

    def _prepare_one_y(self, y, n, who, loss, out, where) -> np.ndarray:
        y = self._as_array(y, "y", who)
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"[{self._who(who)}] x has {n} samples but y{where} has shape {y.shape}")
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
            raise ValueError(f"[{self._who(who)}] y{where} contains NaN or Inf")
        if loss.kind == "sparse_categorical_crossentropy":
            check_sparse_labels(y, (n,) + tuple(out[1:]), self._who(who))
            rows = y.shape[:len(out) - 1]
            return np.ascontiguousarray(y.reshape(rows).astype(np.int64, copy=False))
        y = np.ascontiguousarray(y, dtype=np.float32)
        if y.ndim == 1 and len(out) == 2 and out[1] == 1:
            y = y.reshape(n, 1)
        if len(y.shape) != len(out) or any(o is not None and o != g for o, g in zip(out[1:], y.shape[1:])):
            raise ValueError(f"[{self._who(who)}] y{where} has shape {y.shape} but the model outputs "
                             f"{_fmt_shape(out)} (loss {loss.name})")
        if loss.kind == "binary_crossentropy" and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"[{self._who(who)}] binary cross-entropy targets must lie in [0, 1], got "
                             f"[{y.min()}, {y.max()}]")
        return y

    # -- forward / backward -----------------------------------------------------------------
    def _run_forward(self, xs, training: bool, need_backward: bool = True) -> list:
        """Values of every tensor slot after running the nodes in order on the input arrays.
        need_backward False: inference, no backward follows (layers may keep nothing for it)."""
        for node in self._plan:
            node[1].need_backward = need_backward
        if self._masking:
            return self._run_forward_masked(xs, training)
        vals = [None] * self._n_slots
        for s, x in zip(self._input_slots, xs):
            vals[s] = x
        for layer, ctx, ins, multi_in, outs, multi_out in self._plan:
            if multi_in:
                y = layer.forward([vals[i] for i in ins], training, ctx=ctx)
            else:
                y = layer.forward(vals[ins], training, ctx=ctx)
            if multi_out:
                if not isinstance(y, (list, tuple)) or len(y) != len(outs):
                    raise RuntimeError(f"[{layer._label()}] returned {type(y).__name__}, expected a list of "
                                       f"{len(outs)} outputs")
                for o, v in zip(outs, y):
                    vals[o] = v
            else:
                vals[outs] = y
        return vals

    def _run_forward_masked(self, xs, training: bool) -> list:
        """_run_forward carrying a mask per tensor slot (see pydl.layers.base, "Masks")."""
        vals = [None] * self._n_slots
        masks = [None] * self._n_slots
        for s, x in zip(self._input_slots, xs):
            vals[s] = x
        for (layer, ctx, ins, multi_in, outs, multi_out), (takes, keeps) in zip(self._plan, self._mask_plan):
            if multi_in:
                x = [vals[i] for i in ins]
                m = [masks[i] for i in ins]
                if all(v is None for v in m):
                    m = None
            else:
                x, m = vals[ins], masks[ins]
            if m is not None and takes:
                y = layer.forward(x, training, ctx=ctx, mask=m)
            else:
                y = layer.forward(x, training, ctx=ctx)
            if m is not None and not keeps and not takes and not getattr(layer, "_mask_dropped_warned", False):
                layer._mask_dropped_warned = True
                warnings.warn(f"Layer '{layer.name}' ({type(layer).__name__}) received an input mask but does not "
                              f"support masking; the mask is dropped and later layers do not see it", stacklevel=3)
            om = layer.compute_mask(x, m)
            if multi_out:
                if not isinstance(y, (list, tuple)) or len(y) != len(outs):
                    raise RuntimeError(f"[{layer._label()}] returned {type(y).__name__}, expected a list of "
                                       f"{len(outs)} outputs")
                oms = om if isinstance(om, (list, tuple)) else [om] + [None] * (len(outs) - 1)
                for o, v, mv in zip(outs, y, oms):
                    vals[o], masks[o] = v, mv
            else:
                vals[outs], masks[outs] = y, om
        return _SlotValues(vals, masks)

    def _losses(self, vals, ys, plan, need_grad: bool = True, ws=None):
        """(weighted total, per-output values, seeds {slot: dL/dtensor}, fused {output: dL/dlogits}).
        ws: per output, None or per-sample weights (N,): the loss is then sum(w * l) / N (Keras).
        An output (N, T, ...) carrying a mask (N, T) (vals.masks) counts only its unmasked rows:
        loss = sum(mask * w * l) / sum(mask) over the (N, T) row losses l (w = 1 without sample
        weights; 0 when every row is masked), as Keras 3 applies a mask as sample weights
        rescaled by (all rows / unmasked rows); masked rows get exactly zero gradient."""
        total, values, seeds, fused_dz = 0.0, [], {}, {}
        for k, (loss, w, fused, _) in enumerate(plan):
            if loss is None:
                values.append(None)
                continue
            if fused:
                step = self._plan[self._node_step[id(self._outputs[k].node)]]
                pred, from_logits = step[0].fused_logits(step[1]), True
                out = vals[self._output_slots[k]]
                if pred.shape != out.shape:  # Dense keeps per-step logits as (N * T, K)
                    pred = pred.reshape(out.shape)
            else:
                pred, from_logits = vals[self._output_slots[k]], loss._from_logits()
                if not from_logits:
                    loss.check_probabilities(pred)
            value, grad = _nn.loss(loss.kind, ys[k], pred, from_logits=from_logits)
            sw = None if ws is None else ws[k]
            om = _output_mask(vals, self._output_slots[k], pred, self._who("loss"), k)
            if om is not None:
                per = _losses.per_row(loss.kind, ys[k], pred, from_logits)
                wt = om.astype(np.float64)
                if sw is not None:
                    wt *= sw.astype(np.float64).reshape((-1,) + (1,) * (wt.ndim - 1))
                valid = float(np.count_nonzero(om))
                value = float(np.sum(per * wt) / valid) if valid > 0 else 0.0
                scale = wt * (per.size / valid) if valid > 0 else wt
                grad = grad * scale.astype(grad.dtype)[..., None]
            elif sw is not None:
                per = _losses.per_sample(loss.kind, ys[k], pred, from_logits)
                value = float(_device.namespace(per).dot(per, sw.astype(np.float64)) / per.shape[0])
                grad = grad * sw.astype(grad.dtype).reshape((-1,) + (1,) * (grad.ndim - 1))
            value = float(value)
            values.append(value)
            total += w * value
            if need_grad and w != 0.0:
                if w != 1.0:
                    grad = grad * grad.dtype.type(w)
                if fused:
                    fused_dz[k] = grad
                else:
                    s = self._output_slots[k]
                    seeds[s] = grad if s not in seeds else seeds[s] + grad
        return total, values, seeds, fused_dz

    def _run_backward(self, bplan, seeds: dict, fused_dz: dict, on_done=None) -> list:
        """Gradients of every tensor slot, running the planned nodes in reverse (a tensor feeding
        several nodes gets the sum of their input gradients). on_done(i) is called after step i."""
        grads = [None] * self._n_slots
        for s, g in seeds.items():
            grads[s] = g
        for i, step in enumerate(bplan):
            self._backward_step(step, grads, fused_dz)
            if on_done is not None:
                on_done(i)
        return grads

    @staticmethod
    def _backward_step(step, grads: list, fused_dz: dict) -> None:
        layer, ctx, ins, multi_in, outs, multi_out, fused_k = step
        if fused_k is not None:
            dz = fused_dz.get(fused_k)
            if dz is None:
                return
            dx = layer.backward_logits(dz, ctx=ctx)
        elif multi_out:
            dy = [grads[o] for o in outs]
            if all(g is None for g in dy):
                return
            dx = layer.backward(dy, ctx=ctx)
        else:
            dy = grads[outs]
            if dy is None:
                return
            dx = layer.backward(dy, ctx=ctx)
        if dx is None or not ctx.need_input_grad:
            return
        if multi_in:
            for i, d in zip(ins, dx):
                if d is not None:
                    g = grads[i]
                    grads[i] = d if g is None else g + d
        else:
            g = grads[ins]
            grads[ins] = dx if g is None else g + dx

    def regularization_loss(self) -> float:
        return float(sum(layer.regularization_loss() for layer in self._layers))

    def _grad_pairs(self):
        """(grad or None, param) for every parameter of every layer, in a fixed order."""
        return [(layer.grads.get(k) if layer._trainable else None, layer.params[k]) for layer, k in self._param_slots]

    def _trainable_pairs(self):
        return self._grad_pairs()

    def _train_step(self, xs, ys, ws=None) -> dict:
        """One step on prepared arrays (lists per input / output; single arrays accepted); ws: None
        or per output None / per-sample weights."""
        if type(xs) is not list:
            xs = [xs]
        if type(ys) is not list:
            ys = [ys]
        if self._dist is not None:
            return self._dist.train_step(self, xs, ys, ws)
        if self._device != "cpu":
            self._check_cuda_layers()
            self._place()
            xs, ys, ws = self._on_device(xs), self._on_device(ys), self._on_device(ws)
        total, values, vals, plan = self._gradients(xs, ys, ws)
        self.optimizer.apply_gradients(self._grad_pairs())
        return self._logs(total, values, plan, vals, ys)

    def _gradients(self, xs, ys, ws=None, on_done=None):
        """Zero the grads, forward (training), losses, backward, regularization gradients: every
        layer's grads then hold d(loss)/d(params). Returns (loss with regularization, per-output
        losses, tensor values, output plan). With on_done (called after each backward step, see
        pydl.distributed) the caller adds the regularization gradients itself."""
        plan = self._out_plan if self._out_plan is not None else self._output_plan()
        bplan = self._backward_plan()
        for layer in self._layers:
            layer.zero_grads()
        vals = self._run_forward(xs, True)
        total, values, seeds, fused_dz = self._losses(vals, ys, plan, ws=ws)
        reg = self.regularization_loss() if self._reg_layers else 0.0
        self._run_backward(bplan, seeds, fused_dz, on_done)
        if on_done is None:
            for layer in self._reg_layers:
                if layer._trainable:
                    layer.add_regularization_grads()
        return total + reg, values, vals, plan

    def _log_keys(self) -> list:
        """The keys `_logs` gives, in its order."""
        plan = self._out_plan if self._out_plan is not None else self._output_plan()
        keys = ["loss"]
        multi = len(plan) > 1
        for k, (lk, _, _, mets) in enumerate(plan):
            if multi and lk is not None:
                keys.append(f"{self.output_names[k]}_loss")
            keys += [name for name, _ in mets]
        return keys

    def _logs(self, loss, values, plan, vals, ys) -> dict:
        """The batch's logs. A metric of an output carrying a mask (N, T) sees only the unmasked
        rows: fn(y_true[mask], y_pred[mask]) (0 when every row is masked)."""
        logs = {"loss": loss}
        multi = len(plan) > 1
        for k, (lk, _, _, mets) in enumerate(plan):
            if multi and lk is not None:
                logs[f"{self.output_names[k]}_loss"] = values[k]
            if not mets or ys[k] is None:
                continue
            yt, yp = ys[k], vals[self._output_slots[k]]
            om = _output_mask(vals, self._output_slots[k], yp, self._who("metrics"), k)
            if om is not None:
                if not om.any():
                    for name, fn in mets:
                        logs[name] = float(fn.result()) if _is_stateful(fn) else 0.0
                    continue
                yp = yp[om]
                yt = yt[om]
            for name, fn in mets:
                if _is_stateful(fn):
                    fn.update_state(yt, yp)
                    logs[name] = float(fn.result())
                else:
                    logs[name] = float(fn(yt, yp))
        return logs

    # -- data -------------------------------------------------------------------------------
    def _prepare_sw(self, sample_weight, n: int, who: str):
        """Per output: None or float32 per-sample weights (n,); from one array (every output), a
        list (one per output) or a dict keyed by output name."""
        if sample_weight is None:
            return None
        sample_weight = _da.to_numpy(sample_weight)
        n_out = len(self._outputs)
        if isinstance(sample_weight, dict):
            extra = [k for k in sample_weight if k not in self.output_names]
            if extra:
                raise ValueError(f"[{self._who(who)}] sample_weight names unknown output(s) {extra}; the outputs are "
                                 f"{self.output_names}")
            items = [sample_weight.get(k) for k in self.output_names]
        elif isinstance(sample_weight, (list, tuple)) and n_out > 1 and len(sample_weight) == n_out and \
                all(w is None or np.ndim(w) >= 1 for w in sample_weight):
            items = list(sample_weight)
        else:
            items = [sample_weight] * n_out
        out = []
        for w in items:
            if w is None:
                out.append(None)
                continue
            w = self._as_array(w, "sample_weight", who)
            if w.ndim == 2 and w.shape[1] == 1:
                w = w[:, 0]
            if w.shape != (n,):
                raise ValueError(f"[{self._who(who)}] sample_weight must have shape ({n},) (one weight per sample), "
                                 f"got {w.shape}")
            w = np.ascontiguousarray(w, dtype=np.float32)
            if not np.all(np.isfinite(w)):
                raise ValueError(f"[{self._who(who)}] sample_weight contains NaN or Inf")
            out.append(w)
        return out if any(w is not None for w in out) else None

    def _with_class_weight(self, class_weight, ys, ws, who: str):
        """Sample weights from class_weight (Keras: one output only, not together with sample_weight)."""
        if class_weight is None:
            return ws
        if ws is not None:
            raise ValueError(f"[{self._who(who)}] class_weight and sample_weight cannot be given together (as Keras); "
                             f"fold the class weights into sample_weight")
        if len(self._outputs) != 1:
            raise ValueError(f"[{self._who(who)}] class_weight is only supported for models with one output; use "
                             f"sample_weight per output")
        return [_da.class_weight_to_sample_weight(class_weight, ys[0], self._who(who))]

    def _prepare_arrays(self, x, y, sample_weight, class_weight, who: str, targets: bool = True):
        """(xs, ys, ws, n) from array inputs: lists per input / output (ys, ws None without targets)."""
        xs = self._prepare_x(_da.to_numpy(x), who)
        n = xs[0].shape[0]
        if not targets:
            return xs, None, None, n
        if y is None:
            raise ValueError(f"[{self._who(who)}] y is required when x is an array; or pass a generator, a "
                             f"pydl.data.Sequence, an iterable of (x, y) batches or a DataLoader as x")
        ys = self._prepare_y(_da.to_numpy(y), n, who)
        ws = self._with_class_weight(class_weight, ys, self._prepare_sw(sample_weight, n, who), who)
        return xs, ys, ws, n

    def _batch_converter(self, who: str, class_weight=None, targets: bool = True):
        """A function turning one raw batch (x, (x, y) or (x, y, w), tensors allowed) into prepared
        (xs, ys, ws) lists."""
        def convert(batch):
            x, y, w = _da.unpack_batch(_da.to_numpy(batch), self._who(who))
            if not targets:
                return self._prepare_x(x, who), None, None
            if y is None:
                raise ValueError(f"[{self._who(who)}] a batch has no targets: the data must yield (x, y) or "
                                 f"(x, y, sample_weight) tuples")
            return self._prepare_arrays(x, y, w, class_weight, who)[:3]
        return convert

    def _shard(self):
        """(rank, size) when fit/evaluate shard the data over MPI ranks (pydl.distributed), else None."""
        return self._dist.shard() if self._dist is not None else None

    def _stream(self, x, y, sample_weight, class_weight, batch_size, shuffle, rng, prefetch, who: str,
                targets: bool = True, shard=None):
        """One BatchStream for any kind of input (see pydl.data_adapters); shard: see array_stream."""
        if _da.is_data_source(x):
            for name, v in (("y", y), ("sample_weight", sample_weight)):
                if v is not None:
                    raise ValueError(f"[{self._who(who)}] {name} must not be given when x is a {type(x).__name__}: "
                                     f"the data yields (x, y) or (x, y, sample_weight) batches")
            conv = self._batch_converter(who, class_weight, targets)
            if shard is not None:
                conv = (lambda c: lambda batch: _da.shard_batch(c(batch), shard))(conv)
            return _da.source_stream(x, shuffle, rng, conv, prefetch, self._who(who))
        xs, ys, ws, n = self._prepare_arrays(x, y, sample_weight, class_weight, who, targets)
        return _da.array_stream(xs, ys, ws, n, batch_size, shuffle, rng, prefetch, shard)

    # -- training ---------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, prefetch=False):
        """Train for `epochs` epochs; returns the History (also `model.history`). Keras's arguments.

        x: arrays (with y), or a generator, an iterable of batches, a `pydl.data.Sequence` or a
        PyTorch DataLoader yielding (x, y) or (x, y, sample_weight) (see pydl.data_adapters).
        batch_size (default 32) applies to arrays. steps_per_epoch: batches per epoch (epochs then
        continue where the last one stopped); a source that runs out first ends the epoch and the
        training, with a warning. sample_weight: per-sample loss weights, the loss of a batch being
        sum(w * l) / batch size (Keras); class_weight: {class: weight}, turned into sample weights.
        validation_data: (x, y), (x, y, sample_weight) or a data source (validation_steps batches
        of it, all of it when None). validation_split takes the LAST fraction of array samples,
        before shuffling (as Keras). prefetch: read and convert the next batch in a background
        thread while the current one trains. The caller's arrays are never modified. Logs hold
        the loss (regularization included), each metric, their "val_" versions and "learning_rate".
        """
        from .callbacks import Callback, CallbackList, History, ProgbarLogger

        who = self._who("fit")
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size", who)
        epochs = _positive_int(epochs, "epochs", who)
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
            raise ValueError(f"[{who}] initial_epoch must be an int >= 0, got {initial_epoch!r}")
        if verbose == "auto":
            verbose = 1
        if verbose not in (0, 1, 2):
            raise ValueError(f"[{who}] verbose must be 0, 1 or 2, got {verbose!r}")
        if steps_per_epoch is not None:
            steps_per_epoch = _positive_int(steps_per_epoch, "steps_per_epoch", who)
        if validation_steps is not None:
            validation_steps = _positive_int(validation_steps, "validation_steps", who)
        val_bs = batch_size if validation_batch_size is None else \
            _positive_int(validation_batch_size, "validation_batch_size", who)
        shard = self._shard()
        if self._dist is not None:
            rng = self._dist.begin_fit(self)
            if shard is not None and shard[0] != 0:
                verbose = 0
        else:
            rng = get_rng()
        val_stream = None
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
                or not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"[{who}] validation_split must be a float in [0, 1), got {validation_split!r}")
        validation_split = float(validation_split)
        if callbacks is not None and (not isinstance(callbacks, (list, tuple))
                                      or not all(isinstance(c, Callback) for c in callbacks)):
            raise TypeError(f"[{who}] callbacks must be a list of pydl.callbacks.Callback objects, got "
                            f"{callbacks!r:.200}")
        if _da.is_data_source(x):
            if validation_split:
                raise ValueError(f"[{who}] validation_split needs array inputs; with a {type(x).__name__} pass "
                                 f"validation_data")
            stream = self._stream(x, y, sample_weight, class_weight, batch_size, shuffle, rng, prefetch, "fit",
                                  shard=shard)
        else:
            xs, ys, ws, n = self._prepare_arrays(x, y, sample_weight, class_weight, "fit")
            if validation_data is None and validation_split:
                split = validation_split
                split_at = int(math.floor(n * (1.0 - split)))  # Keras's rounding
                if split_at <= 0 or split_at >= n:
                    raise ValueError(f"[{who}] validation_split={split} leaves an empty training or validation "
                                     f"set for {n} samples")

                def cut(arrays, sl):
                    return None if arrays is None else [None if a is None else a[sl] for a in arrays]

                val_stream = _da.array_stream(cut(xs, slice(split_at, None)), cut(ys, slice(split_at, None)),
                                              cut(ws, slice(split_at, None)), n - split_at, val_bs, False, None,
                                              shard=shard)
                xs, ys, ws = cut(xs, slice(0, split_at)), cut(ys, slice(0, split_at)), cut(ws, slice(0, split_at))
                n = split_at
            stream = _da.array_stream(xs, ys, ws, n, batch_size, shuffle, rng, prefetch, shard)
        if validation_data is not None:
            vwho = "fit (validation_data)"
            if _da.is_data_source(validation_data):
                val_stream = self._stream(validation_data, None, None, None, val_bs, False, None, prefetch, vwho,
                                          shard=shard)
            else:
                if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                    raise ValueError(f"[{who}] validation_data must be a tuple (x_val, y_val) or (x_val, y_val, "
                                     f"sample_weight_val), or a generator / Sequence / DataLoader")
                vx, vy, vw = (tuple(validation_data) + (None,))[:3]
                val_stream = self._stream(vx, vy, vw, None, val_bs, False, None, False, vwho, shard=shard)
        steps = steps_per_epoch if steps_per_epoch is not None else stream.num_batches

        history = History()
        cbs = list(callbacks or [])
        cbs.append(history)
        if verbose:
            cbs.append(ProgbarLogger(verbose))
        cblist = CallbackList(cbs)
        cblist.set_model(self)
        cblist.set_params({"epochs": epochs, "steps": steps, "verbose": verbose})
        self.history = history
        self.stop_training = False
        try:
            with _stop_on_interrupt(self):
                self._fit_epochs(cblist, stream, val_stream, steps_per_epoch, validation_steps, initial_epoch, epochs)
        except BaseException as exc:
            if self._dist is not None:
                self._dist.failed(exc)
            raise
        finally:
            stream.close()
            if val_stream is not None:
                val_stream.close()
        return history

    def _fit_epochs(self, cblist, stream, val_stream, steps_per_epoch, validation_steps, initial_epoch, epochs):
        logs: dict = {}
        cblist.on_train_begin(None)
        for epoch in range(initial_epoch, epochs):
            self.optimizer.set_epoch(epoch)
            cblist.on_epoch_begin(epoch, None)
            sums: dict = {}
            seen = steps = 0
            stateful = self._reset_stateful(self._output_plan())
            for xb, yb, wb in stream.epoch(steps_per_epoch):
                cblist.on_train_batch_begin(steps, None)
                batch_logs = self._train_step(xb, yb, wb)
                m = xb[0].shape[0] if self._dist is None else self._dist.last_batch_count()
                seen += m
                for k, v in batch_logs.items():
                    sums[k] = sums.get(k, 0.0) + v * m
                logs = {k: (batch_logs[k] if k in stateful else s / seen) for k, s in sums.items()}
                cblist.on_train_batch_end(steps, dict(logs))
                steps += 1
                if self.stop_training:
                    break
            if stream.ran_out:
                warnings.warn(f"[{self._who('fit')}] the input ran out of data after {steps} batch(es) of epoch "
                              f"{epoch + 1}; interrupting training. Make sure the data can give at least "
                              f"steps_per_epoch * epochs batches (a generator is read only once)",
                              UserWarning, stacklevel=3)
                self.stop_training = True
                if steps == 0:
                    break
            stream.end_epoch()
            if val_stream is not None:
                val_logs = self._evaluate_stream(val_stream, validation_steps)
                if val_logs is None:
                    warnings.warn(f"[{self._who('fit')}] the validation data gave no batches at epoch {epoch + 1}; "
                                  f"no val_ logs (a generator is read only once: pass validation_steps)",
                                  UserWarning, stacklevel=3)
                else:
                    logs.update({"val_" + k: v for k, v in val_logs.items()})
            logs["learning_rate"] = self.optimizer.current_learning_rate
            cblist.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cblist.on_train_end(dict(logs))
        return logs

    @staticmethod
    def _keras_result(logs: dict, return_dict: bool):
        """Keras's return convention: the dict, or the loss alone when it is the only value, else the
        list [loss, *metrics] in the dict's order."""
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict: bool = False):
        """One training step on one batch (the metrics on that batch's training-mode outputs): the
        loss as a float when there are no metrics, else [loss, *metrics]; a dict with return_dict."""
        self._require_compiled("train_on_batch")
        xs, ys, ws, _ = self._prepare_arrays(x, y, sample_weight, class_weight, "train_on_batch")
        self._reset_stateful(self._output_plan())
        logs = self._train_step(xs, ys, ws)
        return self._keras_result(logs, return_dict)

    # -- inference --------------------------------------------------------------------------
    def _evaluate_stream(self, stream, steps=None):
        """Logs averaged over the samples of one epoch of `stream` (inference mode); None if it gave
        no batch."""
        plan = self._output_plan()
        sums: dict = {}
        last: dict = {}
        n = 0
        stateful = self._reset_stateful(plan)
        for xb, yb, wb in stream.epoch(steps):
            if xb[0].shape[0] == 0:  # this rank's piece of a short sharded batch
                continue
            if self._device != "cpu":
                self._place()
                xb, yb, wb = self._on_device(xb), self._on_device(yb), self._on_device(wb)
            vals = self._run_forward(xb, False, need_backward=False)
            total, values, _, _ = self._losses(vals, yb, plan, need_grad=False, ws=wb)
            m = xb[0].shape[0]
            n += m
            last = self._logs(total, values, plan, vals, yb)
            for k, v in last.items():
                sums[k] = sums.get(k, 0.0) + v * m
        stream.end_epoch()
        if self._dist is not None:
            named = self._stateful_named(plan)
            sums, n = self._dist.reduce_sums(sums, n, self._log_keys(), [fn for _, fn in named])
            last = {**last, **{name: float(fn.result()) for name, fn in named}}
        if n == 0:
            return None
        logs = {k: (last[k] if k in stateful else v / n) for k, v in sums.items()}
        logs["loss"] += self.regularization_loss()
        return logs

    def _evaluate_arrays(self, xs, ys, batch_size: int, ws=None) -> dict:
        return self._evaluate_stream(_da.array_stream(xs, ys, ws, xs[0].shape[0], batch_size, False, None))

    def evaluate(self, x=None, y=None, batch_size=None, verbose=0, sample_weight=None, steps=None, callbacks=None,
                 return_dict: bool = False, prefetch: bool = False):
        """The loss and metrics over all of x (inference mode): a dict {"loss", "<metric>", ...} with
        return_dict, else the loss alone (no metrics, one output) or the list of the dict's values
        (Keras). x as in fit (arrays with y, or a data source; `steps` batches of it, all when None);
        sample_weight weighs each sample's loss as in fit."""
        who = self._who("evaluate")
        self._require_compiled("evaluate")
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size", who)
        if steps is not None:
            steps = _positive_int(steps, "steps", who)
        stream = self._stream(x, y, sample_weight, None, batch_size, False, None, prefetch, "evaluate",
                              shard=self._shard())
        try:
            logs = self._evaluate_stream(stream, steps)
        except BaseException as exc:
            if self._dist is not None:
                self._dist.failed(exc)
            raise
        finally:
            stream.close()
        if logs is None:
            raise ValueError(f"[{who}] the data gave no batches")
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def test_on_batch(self, x, y, sample_weight=None, return_dict: bool = False):
        """The loss and metrics on one batch (inference mode): the loss as a float when there are no
        metrics, else [loss, *metrics]; a dict with return_dict."""
        self._require_compiled("test_on_batch")
        xs, ys, ws, n = self._prepare_arrays(x, y, sample_weight, None, "test_on_batch")
        return self._keras_result(self._evaluate_arrays(xs, ys, n, ws), return_dict)

    def predict(self, x, batch_size=None, verbose=0, steps=None, callbacks=None, prefetch: bool = False):
        """Outputs for x in inference mode (Dropout off, BatchNorm on moving statistics); a list of
        arrays for a model with several outputs. x: arrays, or a data source yielding x, (x,) or
        (x, y) batches (targets ignored; `steps` batches, all when None)."""
        who = self._who("predict")
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size", who)
        if steps is not None:
            steps = _positive_int(steps, "steps", who)
        gpu_input = _any_cuda(x)
        stream = self._stream(x, None, None, None, batch_size, False, None, prefetch, "predict", targets=False)
        parts = None
        try:
            for xb, _, _ in stream.epoch(steps):
                if self._device != "cpu":
                    self._place()
                    xb = self._on_device(xb)
                vals = self._run_forward(xb, False, need_backward=False)
                if parts is None:
                    parts = [[] for _ in self._outputs]
                for k, s in enumerate(self._output_slots):
                    v = vals[s]
                    parts[k].append(v.get() if _device.is_cuda(v) else np.array(v, copy=True))
            stream.end_epoch()
        finally:
            stream.close()
        if parts is None:
            raise ValueError(f"[{who}] the data gave no batches")
        outs = [p[0] if len(p) == 1 else np.concatenate(p, axis=0) for p in parts]
        if gpu_input:  # the output on the input's device
            outs = [_device.to_device(o, "cuda") for o in outs]
        return outs[0] if len(outs) == 1 else outs

    def predict_on_batch(self, x):
        """predict on one batch (no batching)."""
        xs = self._prepare_x(_da.to_numpy(x), "predict_on_batch")
        return self.predict(xs if len(xs) > 1 else xs[0], batch_size=xs[0].shape[0])

    # -- introspection ----------------------------------------------------------------------
    def count_params(self) -> int:
        return int(sum(layer.count_params() + sum(s.size for s in layer.state.values()) for layer in self._layers))

    def _is_chain(self) -> bool:
        if len(self._inputs) != 1 or len(self._outputs) != 1:
            return False
        prev = self._inputs[0]
        for node in self._nodes:
            if node.multi_in or node.multi_out or node.inputs[0] is not prev:
                return False
            prev = node.outputs[0]
        return prev is self._outputs[0]

    def summary(self, print_fn=print) -> str:
        """Print (and return) a table: layer, output shape, parameters, forward FLOPs per sample
        (and, for graphs that are not one chain, the layers each one is connected to)."""
        if not self.built:
            raise ValueError(f"[{self._who('summary')}] the model is not built yet: give the first layer an "
                             f"input_shape, call build((None, ...)), or fit/predict once")
        has_algo = any(getattr(layer, "algo_used", None) for layer in self._layers)
        chain = self._is_chain()
        head = ["Layer (type)", "Output Shape", "Param #", "FLOPs/sample"] + (["Algorithm"] if has_algo else []) \
            + ([] if chain else ["Connected to"])

        def shape_text(shape):
            if isinstance(shape, list):
                return ", ".join(shape_text(s) for s in shape)
            return _fmt_shape(shape).replace("N", "None")

        def src(t):
            return t.name if t.node is None else t.node.layer.name + (f"[{t.index}]" if t.node.multi_out else "")

        rows = []
        if not chain:
            for t in self._inputs:
                rows.append([f"{t.name} (InputLayer)", shape_text(t.shape), "0", "0"] + (["-"] if has_algo else [])
                            + ["-"])
        trainable = non_trainable = flops = 0
        links: dict[int, list] = {}
        for node in self._nodes:
            links.setdefault(id(node.layer), []).append(", ".join(src(t) for t in node.inputs))
        for layer in self._layers:
            n_params = layer.count_params()
            n_state = int(sum(s.size for s in layer.state.values()))
            if layer.trainable:
                trainable += n_params
            else:
                non_trainable += n_params
            non_trainable += n_state
            calls = len(links.get(id(layer), [])) or 1
            f = int(layer.flops()) * calls
            flops += f
            row = [f"{layer.name} ({type(layer).__name__})", shape_text(layer.output_shape),
                   f"{n_params + n_state:,}", f"{f:,}"]
            if has_algo:
                row.append(str(getattr(layer, "algo_used", None) or "-"))
            if not chain:
                row.append("; ".join(links.get(id(layer), [])))
            rows.append(row)
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

        def line(cells):
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

        out = [f'Model: "{self.name}"', sep, line(head), sep.replace("-", "=")]
        out += [line(r) for r in rows]
        out.append(sep)
        out.append(f"Total params: {trainable + non_trainable:,}")
        out.append(f"Trainable params: {trainable:,}")
        out.append(f"Non-trainable params: {non_trainable:,}")
        out.append(f"Forward FLOPs per sample: {flops:,}")
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    # -- weights ----------------------------------------------------------------------------
    def _weight_slots(self):
        """[(layer, "params"|"state", key)] in the order of get_weights."""
        slots = []
        for layer in self._layers:
            slots += [(layer, "params", k) for k in layer.params]
            slots += [(layer, "state", k) for k in layer.state]
        return slots

    def get_weights(self) -> list:
        """Copies of every layer's parameters then state arrays, in layer order."""
        return [_host_copy(getattr(layer, kind)[k]) for layer, kind, k in self._weight_slots()]

    def set_weights(self, weights) -> None:
        """Set every array from a list in get_weights order (checked fully before any is written)."""
        who = self._who("set_weights")
        if not self.built:
            raise ValueError(f"[{who}] the model is not built yet")
        slots = self._weight_slots()
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"[{who}] weights must be a list of arrays (get_weights order), got "
                            f"{type(weights).__name__}")
        weights = list(weights)
        if len(weights) != len(slots):
            raise ValueError(f"[{who}] expected {len(slots)} arrays, got {len(weights)}")
        arrays = []
        for (layer, kind, k), w in zip(slots, weights):
            target = getattr(layer, kind)[k]
            w = np.asarray(_device.to_host(w))
            if w.dtype == object or not np.issubdtype(w.dtype, np.number):
                raise ValueError(f"[{who}] {layer.name}/{k} must be numeric, got dtype {w.dtype}")
            if w.shape != target.shape:
                raise ValueError(f"[{who}] {layer.name}/{k} has shape {target.shape}, got {w.shape}")
            arrays.append(w)
        for (layer, kind, k), w in zip(slots, arrays):
            target = getattr(layer, kind)[k]
            target[...] = _device.like_device(w.astype(target.dtype, copy=False), target)

    @property
    def weights(self) -> list:
        """Every layer's arrays themselves (parameters then state, layer by layer: get_weights order)."""
        return [getattr(layer, kind)[k] for layer, kind, k in self._weight_slots()]

    @property
    def trainable_weights(self) -> list:
        return [w for layer in self._layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self) -> list:
        return [w for layer in self._layers for w in layer.non_trainable_weights]

    def save_weights(self, path) -> None:
        """Write only the weights, as the arrays "<layer>/<name>" of a model file (.npz, no pickle)."""
        who = self._who("save_weights")
        if not self.built:
            raise ValueError(f"[{who}] the model is not built yet")
        arrays = {f"{layer.name}/{k}": np.asarray(_device.to_host(getattr(layer, kind)[k]))
                  for layer, kind, k in self._weight_slots()}
        arrays["__config__"] = np.array(json.dumps({"format": FORMAT + "-weights", "version": VERSION}))
        _write_npz(path, arrays)

    def load_weights(self, path) -> None:
        """Read the weights written by save_weights or save (a whole model file): by layer name,
        or, when the names differ (another instance of the same architecture), in order where
        every shape matches. Nothing is written unless every array fits."""
        who = self._who("load_weights")
        if not self.built:
            raise ValueError(f"[{who}] the model is not built yet: build it (or fit/predict once) before loading")
        try:
            loaded = np.load(os.fspath(path), allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError(f"a single .npy array {getattr(loaded, 'shape', '')}, not an .npz archive")
            with loaded as npz:
                _check_archive_sizes(npz, path, who)  # before any array is read (as load_model)
                arrays = {k: npz[k] for k in npz.files if k != "__config__" and not k.startswith(("optimizer/",
                                                                                                  "scaler/"))}
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if str(exc).startswith(f"[{who}]"):
                raise
            raise ValueError(f"[{who}] {path}: not a pydl weights file (.npz): {exc}") from None
        for k, v in arrays.items():
            if not np.issubdtype(v.dtype, np.floating):
                raise ValueError(f"[{who}] {path}: {k} holds {v.dtype} values; weights are floating point")
        slots = self._weight_slots()
        keys = [f"{layer.name}/{k}" for layer, kind, k in slots]
        if set(keys) == set(arrays):
            values = [arrays[k] for k in keys]
        elif len(arrays) == len(slots):
            values = list(arrays.values())
        else:
            missing = sorted(set(keys) - set(arrays))[:5]
            raise ValueError(f"[{who}] {path} holds {len(arrays)} arrays, the model has {len(slots)} (missing by "
                             f"name: {missing})")
        for (layer, kind, k), v in zip(slots, values):
            if v.shape != getattr(layer, kind)[k].shape:
                raise ValueError(f"[{who}] {path}: {layer.name}/{k} needs shape {getattr(layer, kind)[k].shape}, the "
                                 f"file has {v.shape}")
        self.set_weights(values)

    def to_json(self, **kwargs) -> str:
        """The architecture as a JSON string (no weights, no compile settings); rebuild it with
        pydl.models.model_from_json. kwargs go to json.dumps (indent=2, ...)."""
        cfg = self.get_config(skip_unsaveable=True)
        cfg["compile"] = None
        cfg["scaler"] = None
        return json.dumps(cfg, default=_json_default, **kwargs)

    # -- serialization ----------------------------------------------------------------------
    def _graph_config(self):
        if not self.built:
            return None
        index = {id(layer): i for i, layer in enumerate(self._layers)}
        inputs = {id(t): k for k, t in enumerate(self._inputs)}
        node_ix = {id(node): i for i, node in enumerate(self._nodes)}

        def ref(t):
            return ["input", inputs[id(t)], 0] if t.node is None else ["node", node_ix[id(t.node)], t.index]

        return {"inputs": [{"name": t.name, "shape": list(t.shape)} for t in self._inputs],
                "nodes": [{"layer": index[id(n.layer)], "inputs": [ref(t) for t in n.inputs], "list": n.multi_in}
                          for n in self._nodes],
                "outputs": [ref(t) for t in self._outputs]}

    def get_config(self, skip_unsaveable: bool = False) -> dict:
        """The model's JSON config (see the module docstring). With skip_unsaveable, an optimizer
        whose learning rate cannot be serialised (a plain callable) leaves "compile" null with a
        warning instead of raising."""
        seq = isinstance(self, Sequential)
        cfg = {"format": FORMAT, "version": VERSION, "name": self.name,
               "class_name": "Sequential" if seq else "Model",
               "input_shape": list(self.input_shape) if seq and self.built else None,
               "layers": [{"class_name": type(l).__name__, "config": l.get_config()} for l in self._layers],
               "graph": self._graph_config(),
               "compile": None, "scaler": None}
        if self.compiled:
            def ids(idents, resolved):
                return [i if isinstance(i, str) else d for i, (d, _) in zip(idents, resolved)]

            if self._metric_dict is not None:
                metrics = {k: ids(self._metric_ids[k], v) for k, v in self._metric_dict.items()}
            else:
                metrics = ids(self._metric_ids, self.metrics)

            def ser(l):
                return None if l is None else _losses.serialize(l)

            if isinstance(self.loss, dict):
                loss = {"per_output": {k: ser(v) for k, v in self.loss.items()}}
            elif isinstance(self.loss, list):
                loss = {"per_output": [ser(v) for v in self.loss]}
            else:
                loss = ser(self.loss)
            lw = self._loss_weights_arg
            try:
                opt_cfg = self.optimizer.get_config()
            except ValueError as exc:  # a learning rate that cannot be saved (a lambda)
                if not skip_unsaveable:
                    raise
                warnings.warn(f"[{self._who('save')}] {exc}; saving the architecture and weights only (no compile "
                              f"settings, no optimizer state)", UserWarning, stacklevel=3)
                opt_cfg = None
            if opt_cfg is not None:
                cfg["compile"] = {"loss": loss,
                                  "loss_weights": (dict(lw) if isinstance(lw, dict) else list(lw)) if lw is not None
                                  else None,
                                  "optimizer": {"class_name": type(self.optimizer).__name__, "config": opt_cfg},
                                  "metrics": metrics}
        if self.scaler is not None:
            if not all(callable(getattr(self.scaler, m, None)) for m in ("get_config", "get_state", "set_state")):
                raise TypeError(f"[{type(self).__name__}] model.scaler must be a pydl.data scaler (StandardScaler, "
                                f"MinMaxScaler) or None, got {type(self.scaler).__name__}")
            cfg["scaler"] = {"class_name": type(self.scaler).__name__, "config": self.scaler.get_config()}
        return cfg

    def save(self, path) -> None:
        """Write the model to `path` (exactly that name) as one .npz; see the module docstring."""
        who = self._who("save")
        if not self.built and not isinstance(self, Sequential):
            raise ValueError(f"[{who}] the model is not built yet: call build(input_shape) or fit/predict first")
        for layer in self._layers:
            if type(layer).__name__ not in registry.layers or registry.layers.get(type(layer).__name__) is not type(layer):
                raise ValueError(f"[{who}] layer class {type(layer).__name__} is not registered; "
                                 f"decorate it with @pydl.layers.register_layer")
        arrays = {}
        for layer in self._layers:
            for kind in ("params", "state"):
                for k, v in getattr(layer, kind).items():
                    key = f"{layer.name}/{k}"
                    if key in arrays:
                        raise ValueError(f"[{who}] layer '{layer.name}' has two arrays named {k!r}")
                    arrays[key] = np.asarray(_device.to_host(v))
        cfg = self.get_config(skip_unsaveable=True)
        if self.optimizer is not None and cfg["compile"] is not None:
            for k, v in self.optimizer.get_state().items():
                arrays[f"optimizer/{k}"] = np.asarray(_device.to_host(v))
        if self.scaler is not None:
            for k, v in self.scaler.get_state().items():
                arrays[f"scaler/{k}"] = np.asarray(v)
        for k, v in arrays.items():
            if v.dtype == object:
                raise ValueError(f"[{who}] {k} is an object array; only numeric arrays can be saved")
        arrays["__config__"] = np.array(json.dumps(cfg, default=_json_default))
        _write_npz(path, arrays)


class Sequential(Model):
    """A stack of layers, each feeding the next: the one-chain case of `Model`.

    Sequential([Dense(64, activation="relu", input_shape=(784,)), Dense(10)]), or with
    `pydl.Input(shape)` as the first entry (as Keras). Built (its graph recorded) as soon as the
    input shape is known: from the first layer's input_shape, an Input, build(), or the first
    fit / predict."""

    def __init__(self, layers=None, name: str | None = None):
        super().__init__(name=name or "sequential")
        self._input_tensor = None
        if layers is not None:
            if isinstance(layers, (Layer, _graph.SymbolicTensor)):
                layers = [layers]
            for layer in layers:
                self.add(layer)

    def _is_subclass_graph(self) -> bool:
        return False

    def add(self, layer) -> None:
        if isinstance(layer, _graph.SymbolicTensor):
            if not layer.is_input:
                raise TypeError(f"[Sequential.add] only a pydl.Input(...) tensor can be added (as the first entry), "
                                f"got the output of layer '{layer.node.layer.name}'")
            if self._layers or self._input_tensor is not None:
                raise ValueError("[Sequential.add] pydl.Input(...) can only be the first entry of a Sequential")
            self._input_tensor = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"[Sequential.add] expected a pydl Layer, got {type(layer).__name__}")
        if any(l is layer for l in self._layers):
            raise ValueError(f"[Sequential.add] layer '{layer.name}' is already in this model")
        _check_layer_name(layer, "Sequential.add")
        if any(l.name == layer.name for l in self._layers):
            raise ValueError(f"[Sequential.add] a layer named '{layer.name}' is already in this model; "
                             f"names must be unique")
        if layer.multi_input:
            raise ValueError(f"[Sequential.add] {type(layer).__name__} '{layer.name}' takes several inputs; use the "
                             f"functional API (pydl.Model) for it")
        if self.built:
            out = layer(self._outputs[0])
            if isinstance(out, list):
                raise ValueError(f"[Sequential.add] layer '{layer.name}' returns {len(out)} outputs; a Sequential "
                                 f"passes one tensor from layer to layer (use return_state=False)")
            self._layers.append(layer)
            self._init_graph(self._inputs, out)
        else:
            self._layers.append(layer)
            if self._input_tensor is not None and len(self._layers) == 1:
                self.build(self._input_tensor.shape)
            elif len(self._layers) == 1 and layer.input_shape_arg is not None:
                self.build((None,) + tuple(layer.input_shape_arg))

    def build(self, input_shape) -> None:
        """Build every layer for inputs of `input_shape`, batch dimension included: (None, 784)."""
        shape = self._check_build_shape(input_shape)
        inp = self._input_tensor
        if inp is None or tuple(inp.shape[1:]) != shape[1:]:
            inp = _graph.Input(shape[1:])
        x = inp
        for layer in self._layers:
            x = layer(x)
            if isinstance(x, list):
                raise ValueError(f"[Sequential.build] layer '{layer.name}' returns {len(x)} outputs; a Sequential "
                                 f"passes one tensor from layer to layer (use return_state=False)")
        if not self._layers:  # built once the first layer is added
            self._input_tensor = inp
            return
        layers = list(self._layers)
        self._init_graph(inp, x)
        self._layers = layers


def _host_copy(a):
    """A NumPy copy of an array on any device."""
    return a.get() if _device.is_cuda(a) else np.array(a, copy=True)


def _any_cuda(x) -> bool:
    """True when x (an array, or a list / tuple / dict of them) holds a CuPy array."""
    if isinstance(x, (list, tuple)):
        return any(_any_cuda(v) for v in x)
    if isinstance(x, dict):
        return any(_any_cuda(v) for v in x.values())
    return _device.is_cuda(x)


def _write_npz(path, arrays) -> None:
    """np.savez to a temporary file next to `path`, then renamed over it (never a half-written file)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pydl-save-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _stop_on_interrupt(model):
    """During fit, a first Ctrl-C (SIGINT) asks the loop to stop after the current batch: the
    weights stay consistent (no step is cut in half) and the callbacks' on_epoch_end/on_train_end
    run (checkpoints, CSV logs, restored best weights). A second Ctrl-C interrupts at once.
    Only in the main thread (elsewhere signal handlers can't be set) and only for SIGINT's
    default Python handler (a handler the user installed is left alone)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    interrupted = []

    def handler(signum, frame):
        interrupted.append(True)
        model.stop_training = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\n[fit] interrupted: stopping after this batch (Ctrl-C again to abort at once)", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        warnings.warn("fit stopped early by Ctrl-C after a complete batch", RuntimeWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
def _bad(path, msg: str) -> ValueError:
    return ValueError(f"[load_model] {path}: {msg}")


def _registry_get(reg, name, path, what: str):
    if not isinstance(name, str):
        raise _bad(path, f"{what} class name must be a string, got {name!r}")
    try:
        return reg.get(name)
    except ValueError:
        raise _bad(path, f"unknown {what} class {name!r} (known: {', '.join(reg.names())})") from None


def _class_config(entry, path, what: str):
    if not isinstance(entry, dict) or set(entry) != {"class_name", "config"} or not isinstance(entry["config"], dict):
        raise _bad(path, f"{what} entry must be {{'class_name': str, 'config': dict}}, got {entry!r:.200}")
    return entry["class_name"], entry["config"]


def _check_archive_sizes(npz, path, who: str = "load_model") -> None:
    """Each entry's declared array must fit in the bytes the entry really holds, and the archive
    may not inflate far beyond its own size (the model files pydl writes are not compressed), so
    a small tampered file cannot make np.load allocate gigabytes before failing."""
    zf = npz.zip
    file_bytes = sum(info.compress_size for info in zf.infolist())
    total = 0
    for info in zf.infolist():
        total += info.file_size
        if total > 16 * file_bytes + (1 << 20):
            raise ValueError(f"[{who}] {path}: entries inflate to more than {total} bytes from {file_bytes} "
                             f"stored; refused")
        try:
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except Exception as exc:  # a corrupt zip entry (BadZipFile), or not a .npy header
            raise ValueError(f"[{who}] {path}: entry {info.filename!r} is not a .npy array: {exc}") from None
        count = 1
        for d in shape:
            count *= int(d)
        if count * dtype.itemsize > info.file_size:
            raise ValueError(f"[{who}] {path}: entry {info.filename!r} declares shape {tuple(shape)} ({dtype}) "
                             f"but holds only {info.file_size} bytes")


def load_model(path) -> Model:
    """Rebuild a model written by `Model.save` / `Sequential.save` (weights, state, compile
    settings, optimizer state and scaler); version-1 files of the older Sequential.save too.
    Never unpickles; any malformed or tampered file raises ValueError.

    Layers are built with uninitialised weights (the file's arrays overwrite them), and the sizes
    a config asks for are bounded by the arrays the file actually holds before anything is
    allocated: a small file cannot make loading slow or memory-hungry."""
    try:
        return _load_model(path)
    except (ValueError, FileNotFoundError):
        raise
    except (ArithmeticError, RecursionError, TypeError, KeyError, IndexError, AttributeError, MemoryError) as exc:
        raise _bad(path, f"malformed file ({type(exc).__name__}: {exc})") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _rebuild_graph(gcfg, layers, name, path) -> Model:
    """Replay the saved nodes (layer calls on symbolic tensors) into a functional Model."""
    if not isinstance(gcfg, dict) or set(gcfg) != {"inputs", "nodes", "outputs"}:
        raise _bad(path, "'graph' must hold exactly 'inputs', 'nodes' and 'outputs'")
    ins, nodes, outs = gcfg["inputs"], gcfg["nodes"], gcfg["outputs"]
    if not isinstance(ins, list) or not ins or not isinstance(nodes, list) or not isinstance(outs, list) or not outs:
        raise _bad(path, "'graph' inputs, nodes and outputs must be lists (inputs and outputs non-empty)")
    inputs = []
    for i, e in enumerate(ins):
        if not isinstance(e, dict) or set(e) != {"name", "shape"} or not isinstance(e["name"], str) \
                or not isinstance(e["shape"], list) or len(e["shape"]) < 2 or e["shape"][0] is not None \
                or not all(_is_int(d) and d > 0 for d in e["shape"][1:]):
            raise _bad(path, f"graph input {i} must be {{'name': str, 'shape': [null, sizes...]}}, got {e!r:.200}")
        inputs.append(_graph.Input(e["shape"][1:], name=e["name"]))
    produced = []  # per node: its outputs (a list)

    def resolve(ref, where):
        if not isinstance(ref, list) or len(ref) != 3 or ref[0] not in ("input", "node") \
                or not _is_int(ref[1]) or not _is_int(ref[2]):
            raise _bad(path, f"{where}: a tensor reference must be ['input', k, 0] or ['node', i, j], got {ref!r:.100}")
        kind, i, j = ref
        if kind == "input":
            if not 0 <= i < len(inputs) or j != 0:
                raise _bad(path, f"{where}: no graph input {i}")
            return inputs[i]
        if not 0 <= i < len(produced) or not 0 <= j < len(produced[i]):
            raise _bad(path, f"{where}: refers to output {j} of node {i}, which is not an earlier node's output")
        return produced[i][j]

    used = set()
    for n, e in enumerate(nodes):
        if not isinstance(e, dict) or set(e) != {"layer", "inputs", "list"} or not _is_int(e["layer"]) \
                or not isinstance(e["inputs"], list) or not e["inputs"] or not isinstance(e["list"], bool):
            raise _bad(path, f"graph node {n} must be {{'layer': int, 'inputs': [refs], 'list': bool}}, got {e!r:.200}")
        if not 0 <= e["layer"] < len(layers):
            raise _bad(path, f"graph node {n} names layer {e['layer']}, but there are {len(layers)} layers")
        args = [resolve(r, f"graph node {n}") for r in e["inputs"]]
        if not e["list"] and len(args) != 1:
            raise _bad(path, f"graph node {n} has {len(args)} inputs but is not a list call")
        layer = layers[e["layer"]]
        used.add(e["layer"])
        try:
            res = layer(args if e["list"] else args[0])
        except (TypeError, ValueError) as exc:
            raise _bad(path, f"graph node {n} (layer '{layer.name}') cannot be replayed: {exc}") from None
        produced.append(res if isinstance(res, list) else [res])
    if len(used) != len(layers):
        raise _bad(path, f"layers {sorted(set(range(len(layers))) - used)} are not called by any graph node")
    outputs = [resolve(r, "graph outputs") for r in outs]
    try:
        model = Model(inputs=inputs if len(inputs) > 1 else inputs[0],
                      outputs=outputs if len(outputs) > 1 else outputs[0], name=name)
    except (TypeError, ValueError) as exc:
        raise _bad(path, f"the graph cannot be rebuilt: {exc}") from None
    if [id(l) for l in model.layers] != [id(l) for l in layers]:
        raise _bad(path, "the graph's execution order does not match the saved layer list")
    return model


def _load_loss(entry, path):
    if entry is None:
        return None
    lname, lcfg = _class_config(entry, path, "loss")
    return _registry_get(registry.losses, lname, path, "loss").from_config(dict(lcfg))


def _model_from_config(cfg, version, path) -> Model:
    """The model a config describes (layers and graph; weights as the initializers make them)."""
    layer_entries = cfg.get("layers")
    if not isinstance(layer_entries, list):
        raise _bad(path, "'layers' must be a list")
    class_name = cfg.get("class_name", "Sequential") if version >= 2 else "Sequential"
    if class_name not in ("Sequential", "Model"):
        raise _bad(path, f"model class {class_name!r} is not 'Sequential' or 'Model'")
    mname = cfg.get("name", "sequential")
    if not isinstance(mname, str) or not mname:
        raise _bad(path, f"model name must be a non-empty string, got {mname!r}")
    try:
        layers = []
        for i, entry in enumerate(layer_entries):
            name, lcfg = _class_config(entry, path, f"layer {i}")
            cls = _registry_get(registry.layers, name, path, "layer")
            try:
                layers.append(cls.from_config(dict(lcfg)))
            except (TypeError, ValueError) as exc:
                raise _bad(path, f"layer {i} ({name}) has a bad config: {exc}") from None
        if class_name == "Sequential":
            model = Sequential(layers, name=mname)
            input_shape = cfg.get("input_shape")
            if input_shape is not None:
                if not isinstance(input_shape, list) or not all(d is None or _is_int(d) for d in input_shape):
                    raise ValueError(f"input_shape must be a list of ints or nulls, got {input_shape!r}")
                if not model.built or tuple(model.input_shape[1:]) != tuple(input_shape[1:]):
                    model.build(tuple(input_shape))
        else:
            model = _rebuild_graph(cfg.get("graph"), layers, mname, path)
    except (TypeError, ValueError, MemoryError) as exc:  # MemoryError: absurd sizes in a tampered config
        if isinstance(exc, ValueError) and str(exc).startswith("[load_model]"):
            raise
        raise _bad(path, f"the layers cannot be rebuilt: {exc}") from None
    return model


def _load_model(path) -> Model:
    from . import initializers as _initializers
    from . import optimizers as _optimizers  # noqa: F401  (registers the optimizer classes)

    try:
        npz = np.load(os.fspath(path), allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _bad(path, f"not a pydl model file (.npz): {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _bad(path, "not a pydl model file: holds a single array, expected an .npz archive")
    _check_archive_sizes(npz, path)
    arrays = {}
    with npz:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                raise _bad(path, f"array {key!r} cannot be read without unpickling ({exc}); refused") from None
            except Exception as exc:
                raise _bad(path, f"array {key!r} is corrupt: {exc}") from None
    if "__config__" not in arrays:
        raise _bad(path, "no '__config__' entry; not a pydl model file")
    raw = arrays.pop("__config__")
    if raw.dtype.kind != "U" or raw.shape != ():
        raise _bad(path, f"'__config__' must be a JSON string, got an array of dtype {raw.dtype} shape {raw.shape}")
    try:
        cfg = json.loads(str(raw))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, deep nesting
        raise _bad(path, f"'__config__' is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise _bad(path, f"'__config__' is not a {FORMAT!r} config")
    version = cfg.get("version")
    if version not in _READABLE_VERSIONS or isinstance(version, bool):
        raise _bad(path, f"format version {version!r} is not supported (this pydl reads "
                         f"{', '.join(map(str, _READABLE_VERSIONS))})")
    for key, v in arrays.items():
        if v.dtype == object or not (np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_):
            raise _bad(path, f"array {key!r} has dtype {v.dtype}; only numeric arrays are allowed")

    # what the weights may take: the file's arrays, plus slack so that a small missing array is
    # reported by name below rather than as an exceeded budget
    budget = sum(int(v.size) for k, v in arrays.items() if not k.startswith(("optimizer/", "scaler/"))) + (1 << 20)
    with _initializers.shapes_only(budget):
        model = _model_from_config(cfg, version, path)

    # weights and state
    used = set()
    if model.built:
        for layer, kind, k in model._weight_slots():
            key = f"{layer.name}/{k}"
            target = getattr(layer, kind)[k]
            if key not in arrays:
                raise _bad(path, f"missing array {key!r}")
            v = arrays[key]
            if v.shape != target.shape:
                raise _bad(path, f"array {key!r} has shape {v.shape}, the layer needs {target.shape}")
            if not np.issubdtype(v.dtype, np.floating):
                raise _bad(path, f"array {key!r} has dtype {v.dtype}, expected a float array")
            target[...] = v
            used.add(key)
    extra = [k for k in arrays if k not in used and not k.startswith(("optimizer/", "scaler/"))]
    if extra:
        raise _bad(path, f"unexpected arrays {sorted(extra)[:5]} (do not belong to any layer)")

    # compile settings and optimizer state
    comp = cfg.get("compile")
    if comp is not None:
        keys = {"loss", "optimizer", "metrics"} | ({"loss_weights"} if version >= 2 else set())
        if not isinstance(comp, dict) or set(comp) != keys:
            raise _bad(path, f"'compile' must hold exactly {', '.join(repr(k) for k in sorted(keys))}")
        oname, ocfg = _class_config(comp["optimizer"], path, "optimizer")
        opt_cls = _registry_get(registry.optimizers, oname, path, "optimizer")
        metrics = comp["metrics"]
        if isinstance(metrics, dict):
            ok = all(isinstance(k, str) and isinstance(v, list) and all(isinstance(m, str) for m in v)
                     for k, v in metrics.items())
        else:
            ok = isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)
        if not ok:
            raise _bad(path, f"'metrics' must be a list of names (or a dict of such lists), got {metrics!r:.200}")
        lw = comp.get("loss_weights")
        try:
            lspec = comp["loss"]
            if isinstance(lspec, dict) and set(lspec) == {"per_output"}:
                per = lspec["per_output"]
                if isinstance(per, dict):
                    loss = {k: _load_loss(v, path) for k, v in per.items()}
                elif isinstance(per, list):
                    loss = [_load_loss(v, path) for v in per]
                else:
                    raise _bad(path, f"'per_output' losses must be a list or a dict, got {per!r:.100}")
            else:
                loss = _load_loss(lspec, path)
                if loss is None:
                    raise _bad(path, "'loss' is null")
            opt = opt_cls.from_config(dict(ocfg))
            model.compile(loss=loss, optimizer=opt, metrics=metrics, loss_weights=lw)
        except (TypeError, ValueError, KeyError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith("[load_model]"):
                raise
            raise _bad(path, f"cannot restore the compile settings: {exc}") from None
        opt_state = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
        try:
            if version == 1:
                opt_state = _v1_optimizer_state(model, opt, opt_state)
            opt.set_state(opt_state)
            if model.built and opt._pending is not None:  # check the slots against the weights now, not at fit
                specs = [(p.shape, p.dtype) for layer in model.layers for p in layer.params.values()]
                opt._check_state_matches(opt._pending, specs, "set_state")
        except (TypeError, ValueError, KeyError) as exc:
            raise _bad(path, f"bad optimizer state: {exc}") from None
    elif any(k.startswith("optimizer/") for k in arrays):
        raise _bad(path, "optimizer state present but the model was not compiled")

    # scaler
    sc = cfg.get("scaler")
    scaler_state = {k[len("scaler/"):]: v for k, v in arrays.items() if k.startswith("scaler/")}
    if sc is not None:
        sname, scfg = _class_config(sc, path, "scaler")
        scalers = getattr(registry, "scalers", None)
        if scalers is None:
            raise _bad(path, "the file holds a scaler but this pydl has no scaler registry")
        scls = _registry_get(scalers, sname, path, "scaler")
        try:
            scaler = scls.from_config(dict(scfg)) if hasattr(scls, "from_config") else scls(**scfg)
            scaler.set_state(scaler_state)
        except (TypeError, ValueError, KeyError) as exc:
            raise _bad(path, f"cannot restore the scaler: {exc}") from None
        model.scaler = scaler
    elif scaler_state:
        raise _bad(path, "scaler arrays present but no scaler config")
    return model


def _v1_optimizer_state(model, opt, state: dict) -> dict:
    """Version-1 files number the optimizer's slots over the parameters of trainable layers only;
    now every parameter has a position (a frozen one gets None gradients). Renumber, giving frozen
    parameters fresh slots."""
    if not model.built or all(layer.trainable for layer in model.layers):
        return state
    positions, fresh = [], []
    for layer in model.layers:
        for p in layer.params.values():
            (positions if layer.trainable else fresh).append(len(positions) + len(fresh))
    out = {"iterations": state["iterations"]} if "iterations" in state else {}
    kinds = opt._slot_kinds()
    has_slots = any(k != "iterations" for k in state)
    for key, v in state.items():
        if key == "iterations":
            continue
        kind, _, idx = key.rpartition("/")
        if not idx.isdigit() or int(idx) >= len(positions):
            raise ValueError(f"state entry {key!r} does not match the {len(positions)} trainable parameters")
        out[f"{kind}/{positions[int(idx)]}"] = v
    if has_slots:
        params = [p for layer in model.layers for p in layer.params.values()]
        for i in fresh:
            for kind in kinds:
                out[f"{kind}/{i}"] = np.full(params[i].shape, opt._slot_initial(kind), dtype=params[i].dtype)
    return out


def model_from_json(json_string) -> Model:
    """A model (new layers, freshly initialised weights, not compiled) from Model.to_json()."""
    try:
        cfg = json.loads(json_string)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"[model_from_json] not valid JSON: {exc}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ValueError(f"[model_from_json] not a {FORMAT!r} config (made by Model.to_json)")
    version = cfg.get("version")
    if version not in _READABLE_VERSIONS or isinstance(version, bool):
        raise ValueError(f"[model_from_json] format version {version!r} is not supported")
    try:
        return _model_from_config(cfg, version, "<json>")
    except ValueError as exc:
        raise ValueError(str(exc).replace("[load_model] <json>:", "[model_from_json]")) from None


def clone_model(model: Model) -> Model:
    """A new model of the same architecture with new layers and freshly initialised weights (as
    Keras's clone_model; copy the weights with clone.set_weights(model.get_weights())). A
    subclassed model is cloned as its traced graph (a functional Model)."""
    if not isinstance(model, Model):
        raise TypeError(f"[clone_model] expected a pydl Model, got {type(model).__name__}")
    if not model.built and not isinstance(model, Sequential):
        raise ValueError("[clone_model] the model is not built yet: call build(input_shape) or fit/predict first")
    return model_from_json(model.to_json())


__all__ = ["Model", "Sequential", "load_model", "model_from_json", "clone_model"]
