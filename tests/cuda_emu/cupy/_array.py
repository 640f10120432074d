"""The emulated device array: `cupy.ndarray` over guarded host memory.

Every allocation is a `Memory`: a host byte buffer whose data starts on a 256-byte boundary (as
CuPy's allocator gives) with GUARD bytes of a fixed pattern on both sides. Kernels receive the
host address of the data (`a.data.ptr`), so out-of-bounds writes land in a guard zone;
`check_guards()` runs after each kernel launch and names the kernel and the array.

`ndarray` wraps a NumPy view (`_a`) of such a buffer. It behaves like CuPy's array, not like
NumPy's: operators and reductions return `ndarray`s (0-d for reductions), views share memory, and
implicit conversion to NumPy (`numpy.asarray(x)`, mixing with a numpy.ndarray operand) raises the
TypeError CuPy raises. `get()` / `cupy.asnumpy` are the explicit ways to the host.
"""
from __future__ import annotations

import numbers
import weakref

import numpy

GUARD = 256
ALIGN = 256
# Guard bytes: every aligned 4-byte word is a float32 NaN and every 8-byte word a float64 NaN (not
# the canonical NaN a kernel would write), so a kernel reading just past an array computes NaN.
_PATTERN = numpy.frombuffer(bytes([0xA5, 0xA5, 0xF4, 0xFF]) * (GUARD // 4), numpy.uint8)
_live: "weakref.WeakSet[Memory]" = weakref.WeakSet()
IMPLICIT_MSG = ("Implicit conversion to a NumPy array is not allowed. "
                "Please use `.get()` to construct a NumPy array explicitly.")


class Memory:
    """One allocation: GUARD pattern bytes, nbytes of data (256-byte aligned), GUARD pattern bytes."""

    __slots__ = ("raw", "off", "nbytes", "ptr", "desc", "__weakref__")

    def __init__(self, nbytes: int, desc: str = ""):
        self.nbytes = int(nbytes)
        raw = numpy.empty(self.nbytes + 2 * GUARD + ALIGN, numpy.uint8)
        base = raw.ctypes.data
        self.off = GUARD + (-(base + GUARD)) % ALIGN
        self.raw = raw
        self.ptr = base + self.off
        self.desc = desc
        raw[self.off - GUARD:self.off] = _PATTERN
        raw[self.off + self.nbytes:self.off + self.nbytes + GUARD] = _PATTERN
        _live.add(self)

    def data(self):
        return self.raw[self.off:self.off + self.nbytes]

    def guards_ok(self) -> bool:
        lo, hi = self.off - GUARD, self.off + self.nbytes
        return (self.raw[lo:self.off].tobytes() == _PATTERN_BYTES
                and self.raw[hi:hi + GUARD].tobytes() == _PATTERN_BYTES)


_PATTERN_BYTES = _PATTERN.tobytes()


def check_guards(kernel: str) -> None:
    """AssertionError naming `kernel` and the array when any live allocation's guard bytes changed."""
    bad = [m for m in list(_live) if not m.guards_ok()]
    if bad:
        m = bad[0]
        lo, hi = m.off - GUARD, m.off + m.nbytes
        before = m.raw[lo:m.off].tobytes() != _PATTERN_BYTES
        # restore the pattern so one bug is reported once
        m.raw[lo:m.off] = _PATTERN
        m.raw[hi:hi + GUARD] = _PATTERN
        raise AssertionError(f"kernel {kernel} wrote out of bounds of an array {m.desc} "
                             f"({m.nbytes} bytes at 0x{m.ptr:x}): the guard zone "
                             f"{'before' if before else 'after'} it was overwritten")


def describe_address(addr: int) -> str:
    """Where `addr` lies relative to the nearest live allocation (for fault messages)."""
    best = None
    for m in list(_live):
        d = addr - (m.ptr + m.nbytes) if addr >= m.ptr else m.ptr - addr
        if addr >= m.ptr and addr < m.ptr + m.nbytes:
            d = 0
        if best is None or d < best[0]:
            best = (d, m)
    if best is None:
        return ""
    d, m = best
    where = "inside" if d == 0 else (f"{d} bytes past the end of" if addr >= m.ptr else f"{d} bytes before")
    return f"; the address is {where} an array {m.desc} at 0x{m.ptr:x}"


class MemoryPointer:
    """What `a.data` is in CuPy: the device address of the array's first element."""

    __slots__ = ("mem", "ptr")

    def __init__(self, mem: Memory, ptr: int):
        self.mem = mem
        self.ptr = ptr

    def __int__(self):
        return self.ptr


def _check_dtype(dtype) -> numpy.dtype:
    dt = numpy.dtype(dtype)
    if dt.kind in "OSUVMm":
        raise ValueError(f"Unsupported dtype {dt}")
    return dt


def _empty_numpy(shape, dtype, order="C", poison=True):
    """A NumPy view of fresh guarded memory, plus the Memory that keeps it alive."""
    dt = _check_dtype(dtype)
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimensions are not allowed: {shape}")
    size = 1
    for s in shape:
        size *= s
    mem = Memory(size * dt.itemsize, f"{dt} {shape}")
    data = mem.data()
    if poison:
        data.fill(0xFF)  # uninitialised device memory: NaN for floats, -1 for integers
    if order == "F" and len(shape) > 1:
        a = data.view(dt).reshape(shape[::-1]).T
    else:
        a = data.view(dt).reshape(shape)
    return a, mem


def _is_view_of(a: numpy.ndarray, mem: Memory) -> bool:
    b = a.base
    while isinstance(b, numpy.ndarray):
        if b is mem.raw:
            return True
        b = b.base
    return False


class ndarray:
    """A CuPy-compatible array on the emulated device (host memory with guard zones)."""

    __slots__ = ("_a", "_mem", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("cupy emulator: ndarray(memptr=..., strides=...) is not supported")
        self._a, self._mem = _empty_numpy(shape, dtype, order)

    @classmethod
    def _wrap(cls, a: numpy.ndarray, mem: Memory) -> "ndarray":
        obj = cls.__new__(cls)
        obj._a = a
        obj._mem = mem
        return obj

    # ---- attributes ------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)

    @property
    def data(self) -> MemoryPointer:
        # CuPy allocates nothing for an empty array: its pointer is 0, so a kernel touching it faults.
        if self._mem.nbytes == 0:
            return MemoryPointer(self._mem, 0)
        return MemoryPointer(self._mem, self._a.__array_interface__["data"][0])

    @property
    def base(self):
        return None if self._a.base is self._mem.raw or self._a.base is None else "view"

    @property
    def device(self):
        from . import cuda
        return cuda.Device(0)

    @property
    def T(self):
        return self._view(self._a.T)

    # ---- conversions -----------------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError(IMPLICIT_MSG)

    def get(self, stream=None, order="C", out=None, blocking=True):
        if out is not None:
            out[...] = self._a
            return out
        return numpy.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if isinstance(arr, ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        self._a[...] = numpy.asarray(arr)

    def item(self, *args):
        return self._a.item(*args)

    def tolist(self):
        return self._a.tolist()

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __bool__(self):
        return bool(self._a)

    def __index__(self):
        if self._a.size != 1 or self._a.dtype.kind not in "iub":
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __reduce__(self):
        return (_rebuild, (self.get(),))

    # ---- views and copies ------------------------------------------------------------------------
    def _view(self, a):
        if isinstance(a, numpy.ndarray) and _is_view_of(a, self._mem):
            return ndarray._wrap(a, self._mem)
        return _from_numpy(a)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
            shape = tuple(shape[0])
        return self._view(self._a.reshape(shape, order=order))

    def ravel(self, order="C"):
        return self._view(self._a.ravel(order))

    def flatten(self, order="C"):
        return _from_numpy(self._a.flatten(order))

    def transpose(self, *axes):
        return self._view(self._a.transpose(*axes))

    def swapaxes(self, a1, a2):
        return self._view(self._a.swapaxes(a1, a2))

    def squeeze(self, axis=None):
        return self._view(self._a.squeeze(axis))

    def view(self, dtype=None):
        return self._view(self._a.view() if dtype is None else self._a.view(dtype))

    def copy(self, order="C"):
        return _from_numpy(self._a, order=order)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        dt = _check_dtype(dtype)
        if not copy and dt == self._a.dtype:
            return self
        return _from_numpy(self._a.astype(dt), order="F" if (order == "K" and self._f_only()) else "C")

    def _f_only(self):
        return self._a.flags.f_contiguous and not self._a.flags.c_contiguous

    def fill(self, value):
        self._a.fill(_scalar_arg(value))

    def __getitem__(self, key):
        r = self._a[_unwrap_key(key)]
        if isinstance(r, numpy.ndarray):
            return self._view(r)
        return _from_numpy(numpy.asarray(r))

    def __setitem__(self, key, value):
        self._a[_unwrap_key(key)] = value._a if isinstance(value, ndarray) else value

    # ---- reductions and elementwise methods ------------------------------------------------------
    def _reduce(name):
        def method(self, *args, **kwargs):
            out = kwargs.pop("out", None)
            r = getattr(self._a, name)(*[_unwrap(a) for a in args], **{k: _unwrap(v) for k, v in kwargs.items()})
            return _result(r, out)
        method.__name__ = name
        return method

    for _n in ("sum", "prod", "mean", "var", "std", "max", "min", "argmax", "argmin", "all", "any", "cumsum",
               "clip", "round", "conj", "nonzero", "dot", "repeat", "take", "diagonal", "trace"):
        locals()[_n] = _reduce(_n)
    del _n, _reduce

    real = property(lambda self: self._view(self._a.real))
    imag = property(lambda self: self._view(self._a.imag))

    # ---- operators -------------------------------------------------------------------------------
    def _binary(op, reflected=False):
        def method(self, other):
            o = _operand(other)
            if o is NotImplemented:
                return NotImplemented
            r = op(o, self._a) if reflected else op(self._a, o)
            return _from_numpy(numpy.asarray(r))
        return method

    def _inplace(op):
        def method(self, other):
            o = _operand(other)
            if o is NotImplemented:
                return NotImplemented
            op(self._a, o, out=self._a, casting="same_kind")
            return self
        return method

    import operator as _op
    __add__, __radd__ = _binary(_op.add), _binary(_op.add, True)
    __sub__, __rsub__ = _binary(_op.sub), _binary(_op.sub, True)
    __mul__, __rmul__ = _binary(_op.mul), _binary(_op.mul, True)
    __truediv__, __rtruediv__ = _binary(_op.truediv), _binary(_op.truediv, True)
    __floordiv__, __rfloordiv__ = _binary(_op.floordiv), _binary(_op.floordiv, True)
    __mod__, __rmod__ = _binary(_op.mod), _binary(_op.mod, True)
    __pow__, __rpow__ = _binary(_op.pow), _binary(_op.pow, True)
    __matmul__, __rmatmul__ = _binary(_op.matmul), _binary(_op.matmul, True)
    __and__, __rand__ = _binary(_op.and_), _binary(_op.and_, True)
    __or__, __ror__ = _binary(_op.or_), _binary(_op.or_, True)
    __xor__, __rxor__ = _binary(_op.xor), _binary(_op.xor, True)
    __lshift__, __rshift__ = _binary(_op.lshift), _binary(_op.rshift)
    __lt__, __le__ = _binary(_op.lt), _binary(_op.le)
    __gt__, __ge__ = _binary(_op.gt), _binary(_op.ge)
    __eq__, __ne__ = _binary(_op.eq), _binary(_op.ne)
    __iadd__, __isub__ = _inplace(numpy.add), _inplace(numpy.subtract)
    __imul__, __itruediv__ = _inplace(numpy.multiply), _inplace(numpy.true_divide)
    __ifloordiv__, __ipow__ = _inplace(numpy.floor_divide), _inplace(numpy.power)
    __iand__, __ior__ = _inplace(numpy.bitwise_and), _inplace(numpy.bitwise_or)
    del _binary, _inplace, _op
    __hash__ = None

    def __neg__(self):
        return _from_numpy(-self._a)

    def __pos__(self):
        return _from_numpy(+self._a)

    def __abs__(self):
        return _from_numpy(abs(self._a))

    def __invert__(self):
        return _from_numpy(~self._a)

    # NumPy functions and ufuncs called on CuPy arrays dispatch to the cupy equivalents (as in CuPy);
    # a numpy.ndarray among the arguments is an error.
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":
            return NotImplemented
        args = [_operand(x) for x in inputs]
        if any(a is NotImplemented for a in args):
            raise TypeError(f"Unsupported type {[type(x) for x in inputs if _operand(x) is NotImplemented][0]}")
        out = kwargs.pop("out", None)
        if out is not None:
            out = out[0] if isinstance(out, tuple) else out
            kwargs["out"] = out._a
        r = ufunc(*args, **kwargs)
        return out if out is not None else _result(r, None)

    def __array_function__(self, func, types, args, kwargs):
        import sys
        impl = getattr(sys.modules[__package__], func.__name__, None)
        if impl is None:
            return NotImplemented
        return impl(*args, **kwargs)


ndarray.__module__ = "cupy"


def _rebuild(host):
    return _from_numpy(host)


def _from_numpy(a, dtype=None, order="K") -> ndarray:
    """A new device array holding a copy of host data `a` (keeps F order for F-only inputs under 'K')."""
    a = numpy.asarray(a, dtype=dtype)
    _check_dtype(a.dtype)
    if order == "K":
        order = "F" if (a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous) else "C"
    dst, mem = _empty_numpy(a.shape, a.dtype, order, poison=False)
    dst[...] = a
    return ndarray._wrap(dst, mem)


def _operand(x):
    """The NumPy-side value of an operand: the wrapped view, a scalar; NotImplemented for numpy arrays."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, numpy.ndarray):
        return NotImplemented
    if isinstance(x, (numbers.Number, numpy.generic, bool)):
        return x
    return NotImplemented


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _unwrap_key(key):
    if isinstance(key, tuple):
        return tuple(_unwrap_key(k) for k in key)
    return key._a if isinstance(key, ndarray) else key


def _scalar_arg(v):
    if isinstance(v, ndarray):
        return v._a.item()
    return v


def _result(r, out):
    """Wrap a NumPy result as device arrays (0-d for scalars); copy into `out` when given."""
    if isinstance(r, tuple):
        return tuple(_result(x, None) for x in r)
    if out is not None:
        out._a[...] = r
        return out
    return _from_numpy(numpy.asarray(r))
