"""Symbolic tensors and the graph of layer calls that `pydl.Model` runs.

    inp = pydl.Input(shape=(1, 28, 28))           # a symbolic tensor: a shape, no data
    x = Conv2D(32, 3, padding="same")(inp)       # records a Node (layer, input tensors) -> new tensor
    y = Dense(10)(GlobalAveragePooling2D()(x))
    model = pydl.Model(inputs=inp, outputs=y)    # walks back from the outputs to the inputs

Nothing is computed while the graph is recorded: a call checks the shapes (building the layer
on its first call), computes the output shape and returns new symbolic tensors. A layer called
on several symbolic tensors in turn is one layer with several nodes: its weights are shared.
`+`, `-` and `*` between symbolic tensors create Add, Subtract and Multiply layers.

Nodes are not stored on the layers; a tensor knows the node that produced it, a node its layer
and its input tensors, so a graph is whatever is reachable backwards from a model's outputs.
"""
from __future__ import annotations

import itertools

import numpy as np

from .layers.base import Layer, _fmt_shape

_input_counter = itertools.count(1)


class SymbolicTensor:
    """A placeholder for the array a layer call will produce: its shape (batch dimension None)."""

    __slots__ = ("shape", "node", "index", "name")
    __array_priority__ = 1000  # NumPy defers `array + tensor` to the tensor's __radd__

    def __init__(self, shape, node, index: int, name: str):
        self.shape = tuple(shape)
        self.node = node      # the Node that produces it, or None for a model input
        self.index = index    # which output of the node
        self.name = name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self):
        return np.dtype(np.float32)

    @property
    def is_input(self) -> bool:
        return self.node is None

    def _merge(self, cls, other, reverse=False):
        from .layers import merge

        if not isinstance(other, SymbolicTensor):
            raise TypeError(f"[SymbolicTensor '{self.name}'] '{cls.op}' needs two symbolic tensors (layer outputs "
                            f"or pydl.Input); got {type(other).__name__}")
        layer = getattr(merge, cls.__name__)()
        return layer([other, self] if reverse else [self, other])

    def __add__(self, other):
        from .layers.merge import Add
        return self._merge(Add, other)

    def __radd__(self, other):
        from .layers.merge import Add
        return self._merge(Add, other, reverse=True)

    def __sub__(self, other):
        from .layers.merge import Subtract
        return self._merge(Subtract, other)

    def __rsub__(self, other):
        from .layers.merge import Subtract
        return self._merge(Subtract, other, reverse=True)

    def __mul__(self, other):
        from .layers.merge import Multiply
        return self._merge(Multiply, other)

    def __rmul__(self, other):
        from .layers.merge import Multiply
        return self._merge(Multiply, other, reverse=True)

    def __array__(self, *args, **kwargs):
        raise TypeError(f"symbolic tensor '{self.name}' {_fmt_shape(self.shape)} holds no data: it stands for the "
                        f"output of a layer call while a model's graph is recorded (NumPy and pydl.ops functions "
                        f"cannot be applied to it; use layers)")

    def __bool__(self):
        raise TypeError(f"symbolic tensor '{self.name}' has no truth value (it holds no data)")

    def __repr__(self) -> str:
        src = "input" if self.node is None else f"{type(self.node.layer).__name__} '{self.node.layer.name}'"
        return f"<SymbolicTensor '{self.name}' shape={_fmt_shape(self.shape).replace('N', 'None')} from {src}>"


class Node:
    """One call of a layer: its input tensors (a list for multi-input layers) and output tensors."""

    __slots__ = ("layer", "inputs", "multi_in", "outputs", "multi_out")

    def __init__(self, layer, inputs, multi_in: bool):
        self.layer = layer
        self.inputs = list(inputs)
        self.multi_in = multi_in
        self.outputs: list[SymbolicTensor] = []
        self.multi_out = False

    def __repr__(self) -> str:
        return f"<Node {self.layer.name}({', '.join(t.name for t in self.inputs)})>"


def Input(shape, name: str | None = None) -> SymbolicTensor:
    """A model input of per-sample `shape` (no batch dimension), as keras.Input: Input(shape=(784,))."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        dims = tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"[Input] shape must be a tuple of sizes without the batch dimension, e.g. (784,); "
                         f"got {shape!r}") from None
    if not dims or any(d is not None and d <= 0 for d in dims):
        raise ValueError(f"[Input] shape must hold at least one positive size (no batch dimension), got {shape!r}")
    if name is None:
        name = f"input_{next(_input_counter)}"
    elif not isinstance(name, str) or not name or "/" in name or "\x00" in name:
        raise ValueError(f"[Input] name must be a non-empty string without '/' or NUL, got {name!r}")
    return SymbolicTensor((None,) + dims, None, 0, name)


def is_symbolic(x) -> bool:
    """True for a SymbolicTensor or a list/tuple holding one (a mixed list is an error)."""
    if isinstance(x, SymbolicTensor):
        return True
    if isinstance(x, (list, tuple)) and x and any(isinstance(t, SymbolicTensor) for t in x):
        bad = [type(t).__name__ for t in x if not isinstance(t, SymbolicTensor)]
        if bad:
            raise TypeError(f"a list of layer inputs mixes symbolic tensors with {', '.join(bad)}; while a graph is "
                            f"recorded every input must be a symbolic tensor")
        return True
    return False


def _compatible(want, got) -> bool:
    return len(want) == len(got) and all(w is None or g is None or w == g for w, g in zip(want[1:], got[1:]))


def _check_declared_layout(layer: Layer, tensors) -> None:
    """A channels-first image layer (by default, not by choice) on a model input declared in
    Keras' (H, W, C) order, e.g. (28, 28, 1): ValueError saying how to fix it."""
    from .layers import layout

    if not isinstance(layer, layout.ImageLayer) or layer.channels_last or layer.data_format_explicit:
        return
    for t in tensors:
        if t.node is None and layout.looks_channels_last(t.shape):
            raise ValueError(layout.channels_last_input_error(layer, t.shape))


def call_layer(layer: Layer, x):
    """Record `layer(x)` for symbolic x: build the layer if needed, check shapes, return the outputs."""
    multi_in = isinstance(x, (list, tuple))
    tensors = list(x) if multi_in else [x]
    label = f"{type(layer).__name__} '{layer.name}'"
    if multi_in != bool(layer.multi_input):
        if layer.multi_input:
            raise ValueError(f"[{label}] takes a list of tensors, e.g. {type(layer).__name__}()([a, b]); got one "
                             f"tensor of shape {_fmt_shape(tensors[0].shape)}")
        raise ValueError(f"[{label}] takes one tensor, got a list of {len(tensors)} "
                         f"({', '.join(_fmt_shape(t.shape) for t in tensors)})")
    shapes = [t.shape for t in tensors]
    in_shape = shapes if multi_in else shapes[0]
    _check_declared_layout(layer, tensors)
    try:
        if not layer.built:
            layer.build(in_shape)
        else:
            want = layer.input_shape if multi_in else [layer.input_shape]
            if len(want) != len(shapes) or not all(_compatible(w, g) for w, g in zip(want, shapes)):
                raise ValueError(f"[{label}] was built for input {_fmt_shape(layer.input_shape)} but is called on "
                                 f"{_fmt_shape(in_shape)}")
        out_shape = layer.compute_output_shape(in_shape)
    except ValueError as exc:
        if layer.name in str(exc):
            raise
        raise ValueError(f"[{label}] cannot be called on input {_fmt_shape(in_shape)}: {exc}") from None
    node = Node(layer, tensors, multi_in)
    if isinstance(out_shape, list):
        node.multi_out = True
        node.outputs = [SymbolicTensor(s, node, i, f"{layer.name}:{i}") for i, s in enumerate(out_shape)]
        return list(node.outputs)
    node.outputs = [SymbolicTensor(out_shape, node, 0, layer.name)]
    return node.outputs[0]


def flatten_tensors(spec, what: str) -> list:
    """A tensor or a list/tuple of tensors as a list; TypeError naming `what` for anything else."""
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise ValueError(f"[Model] {what} is empty")
    for i, t in enumerate(items):
        if not isinstance(t, SymbolicTensor):
            where = f"{what}[{i}]" if isinstance(spec, (list, tuple)) else what
            raise TypeError(f"[Model] {where} must be a symbolic tensor (from pydl.Input(...) or a layer called on "
                            f"one), got {type(t).__name__}"
                            + ("; Model(inputs=..., outputs=...) describes a graph, it takes no data"
                               if isinstance(t, np.ndarray) else ""))
    return items


def topological_nodes(inputs: list, outputs: list) -> list:
    """Nodes reachable backwards from `outputs`, each after the nodes it depends on (depth-first, in
    the order of the outputs and of each node's inputs). Raises ValueError for a graph that needs an
    input not in `inputs`, or an input no output depends on."""
    input_ids = {id(t) for t in inputs}
    order, done, used_inputs = [], set(), set()
    for out in outputs:
        stack = [(out, False)]
        while stack:
            t, expanded = stack.pop()
            if t.node is None:
                if id(t) not in input_ids:
                    raise ValueError(f"[Model] graph disconnected: output '{out.name}' depends on input '{t.name}' "
                                     f"{_fmt_shape(t.shape)}, which is not among Model(inputs=...) "
                                     f"({', '.join(repr(i.name) for i in inputs)})")
                used_inputs.add(id(t))
                continue
            node = t.node
            if id(node) in done:
                continue
            if expanded:
                done.add(id(node))
                order.append(node)
                continue
            stack.append((t, True))
            for src in reversed(node.inputs):
                if src.node is None or id(src.node) not in done:
                    stack.append((src, False))
    unused = [t.name for t in inputs if id(t) not in used_inputs]
    if unused:
        raise ValueError(f"[Model] input(s) {unused} not connected to any output: no output depends on them")
    return order


__all__ = ["SymbolicTensor", "Node", "Input", "is_symbolic", "call_layer", "topological_nodes"]
