"""Data formats of image tensors: channels_first (N, C, H, W) and channels_last (N, H, W, C).

pydl's image kernels run on NCHW arrays. An image layer with data_format="channels_last" takes and
returns NHWC arrays when it is called by hand (it transposes around its NCHW kernels); inside a
Model the graph keeps a channels-last image tensor as NCHW between layers that can run on it
directly and transposes only where the NHWC order is needed (see pydl.model, "layouts").

A Context's `layout` says how the arrays of one layer call are stored: None for the tensor's own
(logical) shape, "nchw" for a 4-D channels-last tensor held transposed as (N, C, H, W). Layers
say what they accept with `layout_kind(input_shape)`: "nchw" (channels-last image layers: they
prefer NCHW input), "any" (element-wise layers and others that run on either and return the
input's layout), or None (the logical layout only).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..ops import device
from .base import Layer, _fmt_shape

TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


def nchw_shape(shape) -> tuple:
    """The NCHW shape of a 4-D channels-last shape (N, H, W, C)."""
    n, h, w, c = shape
    return (n, c, h, w)


def nhwc_shape(shape) -> tuple:
    """The NHWC shape of a 4-D NCHW shape."""
    n, c, h, w = shape
    return (n, h, w, c)


def to_nchw(x):
    """x (N, H, W, C) as a C-contiguous (N, C, H, W) array on its own device."""
    return device.ascontiguous(device.asarray(x).transpose(TO_NCHW))


def to_nhwc(x):
    """x (N, C, H, W) as a C-contiguous (N, H, W, C) array on its own device."""
    return device.ascontiguous(device.asarray(x).transpose(TO_NHWC))


def shape_of(x) -> tuple:
    """The shape of an array on either device (or of anything NumPy can read as one)."""
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else np.shape(x)


def physical_shape(shape, ctx) -> tuple:
    """The shape an array has in a call with context `ctx` (transposed for layout "nchw")."""
    if ctx is not None and getattr(ctx, "layout", None) == "nchw" and len(shape) == 4:
        return nchw_shape(shape)
    return tuple(shape)


def looks_channels_last(shape) -> bool:
    """A declared (N, a, b, c) image shape that reads better as (N, H, W, C): c is 1, 3 or 4 (gray,
    RGB, RGBA) and a, b are image sizes (>= 8) larger than it."""
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        return False
    _, a, b, c = shape
    return c in (1, 3, 4) and a >= 8 and b >= 8


def layout_hint(got, want) -> str | None:
    """For a 4-D array of shape `got` that does not fit `want` but would fit transposed: the
    sentence that says how to fix it; None otherwise."""
    got, want = tuple(got), tuple(want)
    if len(got) != 4 or len(want) != 4 or got[1:] == want[1:]:
        return None

    def fits(shape):
        return all(w is None or w == g for w, g in zip(want[1:], shape[1:]))

    if fits(nchw_shape(got)):
        c = want[1]
        return (f"looks channels-last (NHWC); pydl expects NCHW (N, {c}, H, W), e.g. x.transpose(0, 3, 1, 2), "
                f"or build the model with data_format=\"channels_last\" "
                f"(pydl.set_image_data_format(\"channels_last\"))")
    if fits(nhwc_shape(got)):
        c = want[3]
        return (f"looks channels-first (NCHW); this expects channels-last NHWC (N, H, W, {c}), e.g. "
                f"x.transpose(0, 2, 3, 1), or use data_format=\"channels_first\"")
    return None


def channels_last_input_error(layer, shape) -> str:
    n, a, b, c = shape
    return (f"[{type(layer).__name__} '{layer.name}'] input shape {_fmt_shape(shape)} looks channels-last "
            f"(H={a}, W={b}, C={c}, Keras' order), but the layer is channels_first and would read it as C={a}, "
            f"H={b}, W={c}. Pass data_format=\"channels_last\" to the image layers, or call "
            f"pydl.set_image_data_format(\"channels_last\") before creating them, or transpose the data with "
            f"x.transpose(0, 3, 1, 2) and declare input_shape=({c}, {a}, {b}). If ({a}, {b}, {c}) really is "
            f"(C, H, W), pass data_format=\"channels_first\" explicitly.")


class ImageLayer(Layer):
    """Base of the layers on 4-D images: subclasses compute on NCHW arrays and shapes.

    Subclasses implement `_nchw_output_shape(nchw_shape)`, `_build_nchw(nchw_shape)` (weights; may
    do nothing), `_forward(x_nchw, training, ctx)` and `_backward(dout_nchw, ctx)`. `input_shape`
    and `output_shape` are in the layer's data format; `_in_nchw` / `_out_nchw` are the NCHW ones.
    """

    def _init_format(self, data_format) -> None:
        self.data_format_explicit = data_format is not None
        self.data_format = backend.normalize_data_format(data_format, type(self).__name__)

    @property
    def channels_last(self) -> bool:
        return self.data_format == "channels_last"

    def layout_kind(self, input_shape=None):
        return "nchw" if self.channels_last else None

    def _layout_text(self) -> str:
        return "(N, H, W, C) (data_format='channels_last')" if self.channels_last else \
            "(N, C, H, W) in NCHW layout (data_format='channels_first')"

    def _checked(self, input_shape) -> tuple:
        """`input_shape` checked (4-D, known sizes) and returned as NCHW."""
        who = f"{type(self).__name__} '{self.name}'"
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(f"[{who}] expects 4-D input {self._layout_text()}, got shape {_fmt_shape(shape)}")
        if any(d is None for d in shape[1:]):
            raise ValueError(f"[{who}] needs known {'(H, W, C)' if self.channels_last else '(C, H, W)'}, got "
                             f"{_fmt_shape(shape)}")
        return nchw_shape(shape) if self.channels_last else shape

    def _logical(self, nchw) -> tuple:
        nchw = tuple(nchw)
        return nhwc_shape(nchw) if self.channels_last and len(nchw) == 4 else nchw

    def _nchw_output_shape(self, nchw) -> tuple:
        return nchw

    def _build_nchw(self, nchw) -> None:
        pass

    def compute_output_shape(self, input_shape):
        return self._logical(self._nchw_output_shape(self._checked(input_shape)))

    def build(self, input_shape):
        nchw = self._checked(input_shape)
        self._build_nchw(nchw)
        super().build(tuple(input_shape))
        self._in_nchw = nchw
        self._out_nchw = self._nchw_output_shape(nchw)

    def __call__(self, x, training: bool = False):
        from .. import graph

        if not self.built and not graph.is_symbolic(x) and not self.channels_last and \
                not self.data_format_explicit and len(shape_of(x)) == 4 and looks_channels_last(shape_of(x)):
            raise ValueError(channels_last_input_error(self, (None,) + shape_of(x)[1:]))
        return super().__call__(x, training)

    def check_input(self, x, ctx=None) -> None:
        if self.built and (ctx is None or getattr(ctx, "layout", None) != "nchw"):
            hint = layout_hint(shape_of(x), self.input_shape)
            if hint:
                raise ValueError(f"[{type(self).__name__} '{self.name}'] input {shape_of(x)} {hint}")
        super().check_input(x, ctx)

    def forward(self, x, training=False, ctx=None):
        self.check_input(x, ctx)
        ctx = self.forward_context(ctx)
        swap = self.channels_last and ctx.layout != "nchw"
        y = self._forward(to_nchw(x) if swap else x, training, ctx)
        return to_nhwc(y) if swap and y.ndim == 4 else y

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        swap = self.channels_last and ctx.layout != "nchw"
        if swap and len(shape_of(dout)) == 4:
            dout = to_nchw(dout)
        dx = self._backward(dout, ctx)
        return to_nhwc(dx) if swap and dx is not None else dx

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}

    @classmethod
    def from_config(cls, config: dict):
        # configs written before data_format existed describe NCHW layers
        return cls(**{"data_format": "channels_first", **config})


class LayoutTranspose(Layer):
    """A transpose the model inserts between layers to change how a 4-D tensor is stored (not a
    user layer: it is not in Model.layers and has no config)."""

    def __init__(self, perm, name: str):
        super().__init__(name=name)
        self.perm = tuple(perm)
        self.inverse = tuple(int(i) for i in np.argsort(self.perm))
        self.built = True

    def forward(self, x, training=False, ctx=None):
        self.forward_context(ctx)
        return device.ascontiguous(device.asarray(x).transpose(self.perm))

    def backward(self, dout, ctx=None):
        ctx = self.backward_context(ctx)
        if not ctx.need_input_grad:
            return None
        return device.ascontiguous(device.asarray(dout).transpose(self.inverse))


__all__ = ["ImageLayer", "LayoutTranspose", "nchw_shape", "nhwc_shape", "to_nchw", "to_nhwc", "physical_shape",
           "looks_channels_last", "layout_hint", "channels_last_input_error", "TO_NCHW", "TO_NHWC"]
