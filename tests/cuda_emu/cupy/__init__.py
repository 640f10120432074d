"""A CPU emulation of the part of CuPy that pydl uses (test infrastructure, not part of pydl).

With tests/cuda_emu first on sys.path (PYDL_CUDA_EMU=1, see tests/conftest.py) `import cupy` gets
this package: `cupy.ndarray` holds host memory with guard zones (see _array.py), and
`cupy.RawModule` compiles CUDA kernel sources with g++ and runs every CUDA thread as a fiber
(see _kernel.py and ../cuda_emu_runtime.h). Array functions are NumPy's, applied to the wrapped
host data, with results wrapped again as device arrays; NumPy arrays passed where CuPy wants device
arrays raise TypeError, as in CuPy.
"""
from __future__ import annotations

import numpy

from . import _array
from ._array import ndarray
from ._kernel import RawKernel, RawModule
from . import cuda
from . import random

__version__ = "14.0.0-emu"
EMULATED = True

# dtypes and constants
float16, float32, float64 = numpy.float16, numpy.float32, numpy.float64
int8, int16, int32, int64 = numpy.int8, numpy.int16, numpy.int32, numpy.int64
uint8, uint16, uint32, uint64 = numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64
complex64, complex128 = numpy.complex64, numpy.complex128
bool_, intp, float_ = numpy.bool_, numpy.intp, numpy.float64
dtype, finfo, iinfo, result_type, can_cast = numpy.dtype, numpy.finfo, numpy.iinfo, numpy.result_type, numpy.can_cast
nan, inf, pi, e, newaxis = numpy.nan, numpy.inf, numpy.pi, numpy.e, numpy.newaxis


# ---- creation ------------------------------------------------------------------------------------
def _host(obj, dtype=None):
    """Host data of an array-like for creation functions (a device array's own view, no copy)."""
    if isinstance(obj, ndarray):
        return obj._a if dtype is None else obj._a.astype(dtype, copy=False)
    if isinstance(obj, (list, tuple)) and any(isinstance(x, ndarray) for x in obj):
        return numpy.array([_host(x) for x in obj], dtype=dtype)
    return numpy.asarray(obj, dtype=dtype)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0):
    if isinstance(obj, ndarray) and not copy and (dtype is None or numpy.dtype(dtype) == obj.dtype):
        return obj
    a = _host(obj, dtype)
    if ndmin > a.ndim:
        a = a.reshape((1,) * (ndmin - a.ndim) + a.shape)
    return _array._from_numpy(a, order=order if order in ("C", "F") else "K")


def asarray(a, dtype=None, order=None, blocking=False):
    if isinstance(a, ndarray) and (dtype is None or numpy.dtype(dtype) == a.dtype) and order is None:
        return a
    return array(a, dtype=dtype, copy=True, order=order or "K")


def ascontiguousarray(a, dtype=None):
    if isinstance(a, ndarray) and a.flags.c_contiguous and (dtype is None or numpy.dtype(dtype) == a.dtype):
        return a
    return _array._from_numpy(numpy.ascontiguousarray(_host(a, dtype)), order="C")


def asfortranarray(a, dtype=None):
    return _array._from_numpy(_host(a, dtype), order="F")


def empty(shape, dtype=float, order="C"):
    return ndarray(shape, dtype, order=order)


def zeros(shape, dtype=float, order="C"):
    a = ndarray(shape, dtype, order=order)
    a._a.fill(0)
    return a


def ones(shape, dtype=float, order="C"):
    a = ndarray(shape, dtype, order=order)
    a._a.fill(1)
    return a


def full(shape, fill_value, dtype=None, order="C"):
    if dtype is None:
        dtype = numpy.asarray(fill_value).dtype if not isinstance(fill_value, ndarray) else fill_value.dtype
    a = ndarray(shape, dtype, order=order)
    a._a[...] = fill_value._a if isinstance(fill_value, ndarray) else fill_value
    return a


def _like(a, dtype, shape):
    return (a.shape if shape is None else shape), (a.dtype if dtype is None else dtype)


def empty_like(a, dtype=None, order="K", subok=None, shape=None):
    s, d = _like(a, dtype, shape)
    return empty(s, d)


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    s, d = _like(a, dtype, shape)
    return zeros(s, d)


def ones_like(a, dtype=None, order="K", subok=None, shape=None):
    s, d = _like(a, dtype, shape)
    return ones(s, d)


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    s, d = _like(a, dtype, shape)
    return full(s, fill_value, d)


def arange(*args, dtype=None):
    return _array._from_numpy(numpy.arange(*args, dtype=dtype))


def linspace(*args, **kwargs):
    return _array._from_numpy(numpy.linspace(*args, **kwargs))


def eye(*args, **kwargs):
    return _array._from_numpy(numpy.eye(*args, **kwargs))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    r = numpy.asarray(a, order=order)
    if out is not None:
        out[...] = r
        return out
    return r


def get_array_module(*args):
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else numpy


def copyto(dst, src, casting="same_kind", where=None):
    if not isinstance(dst, ndarray):
        raise TypeError(f"copyto: dst must be a cupy.ndarray, got {type(dst).__name__}")
    s = src._a if isinstance(src, ndarray) else src
    if isinstance(s, numpy.ndarray):
        raise TypeError(f"Unsupported type {type(src)}")
    numpy.copyto(dst._a, s, casting=casting, where=True if where is None else _array._unwrap(where))


def shares_memory(a, b, max_work=None):
    if not (isinstance(a, ndarray) and isinstance(b, ndarray)):
        return False
    return bool(numpy.shares_memory(a._a, b._a))


def may_share_memory(a, b, max_work=None):
    if not (isinstance(a, ndarray) and isinstance(b, ndarray)):
        return False
    return bool(numpy.may_share_memory(a._a, b._a))


def ndim(a):
    return a.ndim if isinstance(a, ndarray) else numpy.ndim(a)


def shape(a):
    return a.shape if isinstance(a, ndarray) else numpy.shape(a)


def size(a, axis=None):
    if isinstance(a, ndarray):
        return a.size if axis is None else a.shape[axis]
    return numpy.size(a, axis)


# ---- views ---------------------------------------------------------------------------------------
def reshape(a, newshape, order="C"):
    return a.reshape(newshape, order=order)


def ravel(a, order="C"):
    return a.ravel(order)


def transpose(a, axes=None):
    return a.transpose(axes) if axes is not None else a.transpose()


def squeeze(a, axis=None):
    return a.squeeze(axis)


def expand_dims(a, axis):
    return a._view(numpy.expand_dims(a._a, axis))


def swapaxes(a, a1, a2):
    return a.swapaxes(a1, a2)


# ---- NumPy functions on device arrays --------------------------------------------------------------
def _device_function(name):
    """cupy.<name>: numpy.<name> on the arrays' host data, results as new device arrays. A NumPy
    array argument is a TypeError (CuPy does not take host arrays here)."""
    np_fn = getattr(numpy, name)

    def unwrap(x):
        if isinstance(x, ndarray):
            return x._a
        if isinstance(x, numpy.ndarray):
            raise TypeError(f"Unsupported type {type(x)}")
        if isinstance(x, (list, tuple)):
            return type(x)(unwrap(v) for v in x)
        return x

    def fn(*args, **kwargs):
        out = kwargs.pop("out", None)
        r = np_fn(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()})
        if out is not None and isinstance(r, numpy.ndarray) and r.base is out._a:
            return out
        return _array._result(r, out)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    return fn


for _name in ("abs", "absolute", "sqrt", "exp", "expm1", "log", "log1p", "log2", "log10", "tanh", "sinh", "cosh",
              "sin", "cos", "tan", "arctan", "square", "sign", "floor", "ceil", "rint", "round", "trunc", "negative",
              "reciprocal", "power", "add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "mod",
              "maximum", "minimum", "fmax", "fmin", "clip", "where", "isnan", "isinf", "isfinite", "signbit",
              "logical_and", "logical_or", "logical_not", "logical_xor", "equal", "not_equal", "less", "less_equal",
              "greater", "greater_equal", "sum", "prod", "mean", "var", "std", "max", "min", "amax", "amin",
              "nanmax", "nanmin", "nansum", "nanmean", "argmax", "argmin", "all", "any", "cumsum", "count_nonzero",
              "nonzero", "argwhere", "unique", "sort", "argsort", "matmul", "dot", "outer", "einsum", "tensordot",
              "concatenate", "stack", "vstack", "hstack", "tile", "repeat", "broadcast_to", "flip", "diag",
              "tril", "triu", "array_equal", "allclose", "isclose", "bincount", "take", "cumprod", "diff",
              "atleast_1d", "atleast_2d", "zeros_like", "around", "real", "imag", "conj", "bitwise_and",
              "bitwise_or", "bitwise_xor", "invert", "left_shift", "right_shift", "pad", "searchsorted",
              "exp2", "hypot", "arctan2", "copysign", "nan_to_num", "trace", "cross", "linalg_norm"):
    if _name not in globals() and hasattr(numpy, _name):
        globals()[_name] = _device_function(_name)
del _name


class _Linalg:
    norm = staticmethod(lambda x, *a, **k: _array._result(numpy.linalg.norm(x._a, *a, **k), None))


linalg = _Linalg()

__all__ = [n for n in globals() if not n.startswith("_")]
