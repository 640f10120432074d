"""Which device an op runs on, decided from its arrays: the one seam between CPU and CUDA.

A NumPy array (or anything array-like that is not a CuPy array) runs the CPU kernels in
`pydl._core`; a CuPy array runs the CUDA kernels in `pydl.cuda`. Every op in `pydl.ops` asks
`dispatch(op, x=x, W=W, ...)` once; mixing devices in one call is a ValueError naming the
arguments and their devices. Layers, models, losses and metrics allocate and move arrays through
the helpers here (`empty`, `zeros`, `to_device`, `namespace`), never by naming NumPy or CuPy.

CuPy is never imported by this module unless a CuPy array is already in hand (its class says so)
or a caller asks for the "cuda" device.
"""
from __future__ import annotations

import numpy as np

DEVICES = ("cpu", "cuda")


def is_cuda(a) -> bool:
    """True for a CuPy ndarray (checked by its class's module: CuPy is not imported here)."""
    return type(a).__module__.partition(".")[0] == "cupy"


def device_of(a) -> str:
    return "cuda" if is_cuda(a) else "cpu"


def dispatch(op: str, **arrays) -> str:
    """"cpu" or "cuda": the device of the arrays (None entries ignored); ValueError when they differ."""
    found = None
    for a in arrays.values():
        if a is None:
            continue
        d = "cuda" if type(a).__module__.partition(".")[0] == "cupy" else "cpu"
        if found is None:
            found = d
        elif d != found:
            desc = ", ".join(f"{n} on {device_of(a)}" for n, a in arrays.items() if a is not None)
            raise ValueError(f"[{op}] arguments are on different devices ({desc}); move them to one device "
                             f"first (pydl.ops.to_device)")
    return found or "cpu"


def check_device(device, who: str = "to") -> str:
    if not isinstance(device, str):
        raise ValueError(f"[{who}] device must be 'cpu' or 'cuda', got {device!r}")
    d = device.lower()
    if d.startswith("cuda:") or d.startswith("gpu"):
        d = "cuda"
    if d not in DEVICES:
        raise ValueError(f"[{who}] device must be 'cpu' or 'cuda', got {device!r}")
    if d == "cuda":
        from .. import cuda
        cuda.require()
    return d


def namespace(a_or_device):
    """numpy for CPU arrays (or "cpu"), cupy for CuPy arrays (or "cuda")."""
    d = a_or_device if isinstance(a_or_device, str) else device_of(a_or_device)
    if d == "cuda":
        from .. import cuda
        return cuda.cupy_module()
    return np


def to_device(a, device: str):
    """`a` on `device` ("cpu" or "cuda"); the same object when it is already there. None stays None."""
    if a is None:
        return None
    if device == "cuda":
        if is_cuda(a):
            return a
        from .. import cuda
        cp = cuda.cupy_module()
        return cp.asarray(a)
    if is_cuda(a):
        return a.get()
    return a


def to_host(a):
    """A NumPy array (or the input itself when it is not a CuPy array)."""
    return a.get() if is_cuda(a) else a


def like_device(x, like):
    """`x` moved to the device of `like`."""
    return to_device(x, device_of(like))


def empty(shape, dtype, device: str = "cpu"):
    return namespace(device).empty(shape, dtype=dtype)


def zeros(shape, dtype, device: str = "cpu"):
    return namespace(device).zeros(shape, dtype=dtype)


def ones(shape, dtype, device: str = "cpu"):
    return namespace(device).ones(shape, dtype=dtype)


def full(shape, value, dtype, device: str = "cpu"):
    return namespace(device).full(shape, value, dtype=dtype)


def as_input(x, dtype, who: str, what: str = "input"):
    """A layer's input as a C-contiguous array of `dtype` on its own device: the one coercion
    helper of the layers (NumPy for host data and anything array-like, CuPy stays CuPy).
    Copies only when the dtype or the memory order differ; TypeError for non-numeric data."""
    if type(x) is np.ndarray and x.dtype == dtype and x.flags.c_contiguous:
        return x
    if is_cuda(x):
        if x.dtype == object or x.dtype.kind in "cSUVO" or x.dtype.kind == "c":
            raise TypeError(f"[{who}] {what} must be a real numeric array, got dtype {x.dtype}")
        return namespace("cuda").ascontiguousarray(x, dtype=dtype)
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"[{who}] {what} must be a numeric array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=dtype)


def float_dtype(x):
    """x's dtype when it is float32/float64, else float32 (what the kernels compute in)."""
    dt = getattr(x, "dtype", None)
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float32)


def asarray(x):
    """`x` as an array on its own device: a CuPy array as it is, anything else through numpy.asarray."""
    return x if is_cuda(x) else np.asarray(x)


def ascontiguous(x):
    """`x` C-contiguous on its own device (the same object when it already is)."""
    if x.flags.c_contiguous:
        return x
    return namespace(x).ascontiguousarray(x)


def as_float_cuda(x, name: str, op: str, dtype=None):
    """A CuPy array as the CUDA kernels take it: C-contiguous float32/float64 (or `dtype`).

    float32/float64 are kept, other numeric dtypes are cast to float32 (as on the CPU); views
    are copied (CuPy RawKernels read raw pointers and ignore strides)."""
    cp = namespace("cuda")
    if dtype is None:
        if x.dtype.kind == "c" or x.dtype == object:
            raise TypeError(f"[{op}] {name} must be a real numeric array, got dtype {x.dtype}")
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    if x.dtype == dtype and x.flags.c_contiguous:
        return x
    return cp.ascontiguousarray(x, dtype=dtype)


def check_out_cuda(out, shape, dtype, op: str, name: str = "out", inputs: dict | None = None):
    """An output CuPy array a kernel writes in place: exact shape and dtype, C-contiguous, no overlap."""
    if not is_cuda(out):
        raise TypeError(f"[{op}] {name} must be a cupy.ndarray (the other arguments are on the GPU), "
                        f"got {type(out).__name__}")
    if out.dtype != dtype:
        raise ValueError(f"[{op}] {name} has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"[{op}] {name} has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"[{op}] {name} must be C-contiguous")
    cp = namespace("cuda")
    for in_name, arr in (inputs or {}).items():
        if arr is not None and out.size and arr.size and cp.shares_memory(out, arr):
            raise ValueError(f"[{op}] {name} overlaps input {in_name} {tuple(arr.shape)}; pass a separate array")
    return out


__all__ = ["DEVICES", "is_cuda", "device_of", "dispatch", "check_device", "namespace", "to_device", "to_host",
           "like_device", "as_input", "float_dtype", "asarray", "ascontiguous", "empty", "zeros", "ones", "full", "as_float_cuda", "check_out_cuda"]
