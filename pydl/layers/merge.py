"""Merge layers: take a list of tensors, return one (as keras.layers.Add, Concatenate, ...).

    y = Add()([x, shortcut])            # element-wise sum of tensors of one shape (also x + shortcut)
    d = Subtract()([a, b])              # a - b (also a - b on symbolic tensors)
    p = Multiply()([a, b, c])           # element-wise product (also a * b)
    c = Concatenate(axis=-1)([a, b])    # joined along an axis other than the batch one

forward takes the list, backward returns the list of input gradients. The batch dimension must
agree; the other dimensions must be equal (no broadcasting), except the concatenation axis.

Masks (see pydl.layers.base), as Keras: the element-wise layers give the logical AND of the
input masks present (an input without a mask counts as all True; None when no input has one);
Concatenate expands each mask (N, T) to its input's shape (all True for an input without one),
joins them along the axis and reduces the last axis with OR: along the time axis the masks are
joined, along the feature axis a step is kept when any input keeps it.
"""
from __future__ import annotations

import numpy as np

from ..ops import device
from .base import Layer, _fmt_shape, register_layer


def _as_float(x):
    x = device.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"merge layer inputs must be numeric arrays, got dtype {x.dtype}")
        x = x.astype(np.float32)
    return x


class _Merge(Layer):
    multi_input = True
    supports_masking = True
    combines_masks = True  # compute_mask combines the input masks, it never creates one
    op = "?"
    min_inputs, max_inputs = 2, None

    @staticmethod
    def _mask_list(inputs, mask):
        """The masks per input as bool arrays (None where absent), or None when there are none."""
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)) or len(mask) != len(inputs):
            raise ValueError(f"merge layers take one mask per input (a list of {len(inputs)}), got {mask!r:.100}")
        if all(m is None for m in mask):
            return None
        return [None if m is None else np.asarray(m).astype(bool, copy=False) for m in mask]

    def compute_mask(self, inputs, mask=None):
        """The AND of the input masks present (None when no input has one)."""
        masks = self._mask_list(inputs, mask)
        if masks is None:
            return None
        present = [m for m in masks if m is not None]
        out = present[0].copy()
        for m in present[1:]:
            if m.shape != out.shape:
                raise ValueError(f"[{self._label()}] the input masks have different shapes "
                                 f"{[None if q is None else q.shape for q in masks]}")
            out &= m
        return out

    def _check_count(self, n: int) -> None:
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"exactly {self.min_inputs}" if self.max_inputs == self.min_inputs
                    else f"at least {self.min_inputs}")
            raise ValueError(f"[{self._label()}] takes {want} tensors, got {n}")

    def _check_shapes(self, shapes) -> None:
        first = shapes[0]
        for s in shapes[1:]:
            if len(s) != len(first) or any(a is not None and b is not None and a != b for a, b in zip(first[1:], s[1:])):
                raise ValueError(f"[{self._label()}] inputs must have the same shape, got "
                                 f"{', '.join(_fmt_shape(t) for t in shapes)}")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or \
                not all(isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(f"[{self._label()}] takes a list of tensors; build it with a list of shapes, got "
                             f"{input_shape!r}")
        shapes = [tuple(s) for s in input_shape]
        self._check_count(len(shapes))
        self._check_shapes(shapes)
        super().build(shapes)

    def compute_output_shape(self, input_shape):
        first = list(input_shape[0])
        for s in input_shape[1:]:  # a size known in any input is known in the output
            first = [a if a is not None else b for a, b in zip(first, s)]
        return (input_shape[0][0],) + tuple(first[1:])

    def layout_kind(self, input_shape=None):
        return "any"  # element-wise (Concatenate maps its axis)

    def check_input(self, xs, ctx=None) -> None:
        if not self.built:
            raise ValueError(f"[{self._label()}] is not built; call build([shape, ...]) or put it in a model first")
        if not isinstance(xs, (list, tuple)):
            raise ValueError(f"[{self._label()}] takes a list of {len(self.input_shape)} tensors, got "
                             f"{type(xs).__name__}")
        if len(xs) != len(self.input_shape):
            raise ValueError(f"[{self._label()}] was built for {len(self.input_shape)} inputs, got {len(xs)}")
        shapes = [tuple(np.shape(x)) for x in xs]
        wants = self.input_shape
        if ctx is not None and ctx.layout == "nchw":  # 4-D channels-last tensors held as NCHW
            wants = [(w[0], w[3], w[1], w[2]) for w in wants]
        for want, got in zip(wants, shapes):
            if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want[1:], got[1:])):
                raise ValueError(f"[{self._label()}] expected inputs of shapes {_fmt_shape(list(wants))}, "
                                 f"got {shapes}")
        if len({s[0] for s in shapes}) != 1:
            raise ValueError(f"[{self._label()}] inputs have different batch sizes: {shapes}")

    def flops(self) -> int:
        if not self.built:
            return 0
        return (len(self.input_shape) - 1) * int(np.prod([d for d in self.output_shape[1:] if d is not None]))


@register_layer
class Add(_Merge):
    """y = x_1 + x_2 + ... (same shapes)."""
    op = "+"

    def forward(self, xs, training=False, ctx=None):
        self.check_input(xs, ctx)
        ctx = self.forward_context(ctx)
        xs = [_as_float(x) for x in xs]
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        ctx.n = len(xs)
        return y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        if not ctx.need_input_grad:
            return [None] * ctx.n
        return [dout] * ctx.n  # the same array for every input: nobody writes into a gradient


@register_layer
class Subtract(_Merge):
    """y = x_1 - x_2 (exactly two inputs)."""
    op = "-"
    max_inputs = 2

    def forward(self, xs, training=False, ctx=None):
        self.check_input(xs, ctx)
        ctx = self.forward_context(ctx)
        a, b = (_as_float(x) for x in xs)
        return a - b

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        if not ctx.need_input_grad:
            return [None, None]
        return [dout, -np.asarray(dout)]


@register_layer
class Multiply(_Merge):
    """y = x_1 * x_2 * ... element-wise (same shapes)."""
    op = "*"

    def forward(self, xs, training=False, ctx=None):
        self.check_input(xs, ctx)
        ctx = self.forward_context(ctx)
        xs = [_as_float(x) for x in xs]
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y *= x
        ctx.xs = xs
        return y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        xs = ctx.xs
        if not ctx.need_input_grad:
            return [None] * len(xs)
        grads = []
        for i in range(len(xs)):
            g = np.array(dout, dtype=xs[i].dtype, copy=True)
            for j, x in enumerate(xs):
                if j != i:
                    g *= x
            grads.append(g)
        return grads


@register_layer
class Concatenate(_Merge):
    """Joins the inputs along `axis` (counted with the batch dimension, so -1 is the last one;
    the batch axis 0 cannot be used). Every other dimension must agree."""
    op = "concat"

    def __init__(self, axis=-1, input_shape=None, name=None, trainable=True):
        super().__init__(input_shape=input_shape, name=name, trainable=trainable)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"[Concatenate] axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def _axis(self, ndim: int) -> int:
        a = self.axis + ndim if self.axis < 0 else self.axis
        if not 1 <= a < ndim:
            raise ValueError(f"[{self._label()}] axis {self.axis} is out of range for inputs of rank {ndim} "
                             f"(the batch axis 0 cannot be concatenated)")
        return a

    def _check_shapes(self, shapes) -> None:
        nd = len(shapes[0])
        if any(len(s) != nd for s in shapes):
            raise ValueError(f"[{self._label()}] inputs must have the same rank, got "
                             f"{', '.join(_fmt_shape(s) for s in shapes)}")
        a = self._axis(nd)
        first = shapes[0]
        for s in shapes[1:]:
            if any(i != a and x is not None and y is not None and x != y for i, (x, y) in enumerate(zip(first, s))
                   if i > 0):
                raise ValueError(f"[{self._label()}] inputs must agree on every axis but {a}, got "
                                 f"{', '.join(_fmt_shape(t) for t in shapes)}")

    def compute_output_shape(self, input_shape):
        a = self._axis(len(input_shape[0]))
        out = list(super().compute_output_shape(input_shape))
        sizes = [s[a] for s in input_shape]
        out[a] = None if any(d is None for d in sizes) else int(sum(sizes))
        return tuple(out)

    def compute_mask(self, inputs, mask=None):
        """Each input's mask expanded to the input's shape (all True for an input without one),
        joined along the axis, then OR over the last axis (Keras's Concatenate.compute_mask)."""
        masks = self._mask_list(inputs, mask)
        if masks is None:
            return None
        shapes = [tuple(np.shape(x)) for x in inputs]
        nd = len(shapes[0])
        a = self._axis(nd)
        full = []
        for m, shape in zip(masks, shapes):
            if m is None:
                full.append(np.ones(shape, dtype=bool))
                continue
            if m.ndim > nd or m.shape != shape[:m.ndim]:
                raise ValueError(f"[{self._label()}] a mask of shape {m.shape} does not fit its input of "
                                 f"shape {shape}")
            full.append(np.broadcast_to(m.reshape(m.shape + (1,) * (nd - m.ndim)), shape))
        return np.concatenate(full, axis=a).any(axis=-1)

    def forward(self, xs, training=False, ctx=None):
        self.check_input(xs, ctx)
        ctx = self.forward_context(ctx)
        xs = [_as_float(x) for x in xs]
        a = self._axis(xs[0].ndim)
        if ctx.layout == "nchw":  # logical (N, H, W, C) axis -> its place in (N, C, H, W)
            a = (0, 2, 3, 1)[a]
        ctx.axis = a
        ctx.splits = np.cumsum([x.shape[a] for x in xs])[:-1]
        return np.concatenate(xs, axis=a)

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        if not ctx.need_input_grad:
            return [None] * (len(ctx.splits) + 1)
        return [np.ascontiguousarray(g) for g in np.split(np.asarray(dout), ctx.splits, axis=ctx.axis)]

    def flops(self) -> int:
        return 0

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


__all__ = ["Add", "Subtract", "Multiply", "Concatenate"]
