"""Input checks shared by every public op.

Every check raises ValueError (or TypeError for a non-array) whose message names the
operation, the argument and the shapes involved, so a user sees what went wrong in their
own terms before any kernel runs.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_aligned(a: np.ndarray) -> bool:
    """`a`'s data pointer is aligned to its item size. NumPy flags every empty array aligned,
    even a view at an odd address, but the bindings check the pointer itself."""
    return a.flags.aligned and (a.size != 0 or a.ctypes.data % a.dtype.alignment == 0)


def as_float_array(x, name: str, op: str, dtype=None) -> np.ndarray:
    """Return `x` as a C-contiguous float32 or float64 array.

    float32 and float64 are kept (float64 runs the exact, slower path); other numeric dtypes
    (ints, float16, bool) are cast to float32, the fast path. With `dtype` the result has that
    dtype. Strided or negative-stride views are copied.
    """
    if type(x) is np.ndarray and x.flags.c_contiguous and is_aligned(x) and (
            x.dtype == dtype if dtype is not None else x.dtype in _FAST_DTYPES):
        return x  # the common case, checked first: already what the kernels take
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy's own message is clear
            raise TypeError(f"[{op}] {name} must be array-like, got {type(x).__name__}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"[{op}] {name} must be a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"[{op}] {name} must be real, got dtype {arr.dtype}")
    if dtype is None:
        # float64 in any byte order stays float64 (a big-endian '>f8' is not == np.float64, and
        # casting it to float32 would silently lose precision); the copy below makes it native.
        dtype = np.float64 if (arr.dtype.kind == "f" and arr.dtype.itemsize == 8) else np.float32
    # np.asarray(order='C') keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
    out = np.asarray(arr, dtype=dtype, order="C")
    # A view at an odd byte offset (np.frombuffer(buf, offset=1)) is valid NumPy but the kernels'
    # loads assume item alignment: copy it to fresh (aligned) memory.
    return out if is_aligned(out) else np.empty_like(out) if out.size == 0 else out.copy()


def contiguous_aligned(a: np.ndarray, dtype=None) -> np.ndarray:
    """`a` (of `dtype`, if given) as a C-contiguous array aligned to its item size, copied only
    when it is not already one (index arrays, masks: what the kernels read)."""
    a = np.require(a, dtype=dtype, requirements=["C", "A"])
    return a if is_aligned(a) else np.empty_like(a)  # only an empty view at an odd address gets here


def check_ndim(x: np.ndarray, ndim, name: str, op: str, meaning: str = "") -> None:
    ok = x.ndim in ndim if isinstance(ndim, (tuple, list)) else x.ndim == ndim
    if not ok:
        extra = f" {meaning}" if meaning else ""
        raise ValueError(f"[{op}] {name} has {x.ndim} dims {tuple(x.shape)}, expected {ndim}{extra}")


def check_same_dtype(op: str, **arrays: np.ndarray) -> np.dtype:
    first = None
    for a in arrays.values():
        if a is not None:
            if first is None:
                first = a.dtype
            elif a.dtype != first:
                break
    else:
        return first  # all equal (the common case, checked without building the message)
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        desc = ", ".join(f"{n} {d}" for n, d in dtypes.items())
        raise ValueError(f"[{op}] arguments must share one dtype, got {desc}")
    return next(iter(dtypes.values()))


def check_out(out, shape, dtype, op: str, name: str = "out", inputs: dict | None = None) -> np.ndarray:
    """An output/in-place array must match exactly: a silent copy would lose the result.

    Also what `check_out_buffer` checks (contiguous, writeable, aligned, no overlap with `inputs`).
    """
    if type(out) is not np.ndarray:
        raise TypeError(f"[{op}] {name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise ValueError(f"[{op}] {name} has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"[{op}] {name} has shape {tuple(out.shape)}, expected {tuple(shape)}")
    return check_out_buffer(out, op, name, inputs)


def check_out_buffer(out, op: str, name: str = "out", inputs: dict | None = None) -> np.ndarray:
    """`out` is an ndarray a kernel can write in place: C-contiguous, writeable, aligned to its
    item size (what the kernels' loads assume), and sharing no memory with any of `inputs`
    ({name: array}), which the kernel reads while it writes `out`. Shape and dtype are left to
    the caller (or the binding)."""
    if type(out) is not np.ndarray:
        raise TypeError(f"[{op}] {name} must be a numpy.ndarray, got {type(out).__name__}")
    if not out.flags.c_contiguous:
        raise ValueError(f"[{op}] {name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"[{op}] {name} must be writeable")
    if not is_aligned(out):
        raise ValueError(f"[{op}] {name} must be aligned to its item size ({out.dtype.itemsize} bytes)")
    for in_name, arr in (inputs or {}).items():
        if arr is not None and np.may_share_memory(out, arr) and np.shares_memory(out, arr, max_work=10**6):
            raise ValueError(f"[{op}] {name} overlaps input {in_name} {tuple(arr.shape)}; pass a separate array")
    return out


def check_finite(x: np.ndarray, name: str, op: str) -> None:
    if not np.all(np.isfinite(x)):
        raise ValueError(f"[{op}] {name} contains NaN or Inf")


def flag(value, name: str, who: str) -> bool:
    """A yes/no setting: True, False (NumPy's bools, and the ints 0 and 1, too). Anything else, a
    string such as "false" from a hand-edited config included, is a TypeError rather than
    Python's truth value ("false" is true)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"[{who}] {name} must be True or False, got {value!r}")


def real_number(x, name: str, who: str, *, lo=None, hi=None, lo_open: bool = False) -> float:
    """A finite real setting, optionally bounded (lo, or above lo with lo_open; hi): a TypeError
    for a non-number (bools included), a ValueError for NaN, +-inf or a value out of bounds."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"[{who}] {name} must be a finite number, got {x!r:.100}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"[{who}] {name} must be a finite number, got {x}")
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise ValueError(f"[{who}] {name} must be {'>' if lo_open else '>='} {lo}, got {x}")
    if hi is not None and x > hi:
        raise ValueError(f"[{who}] {name} must be <= {hi}, got {x}")
    return x
