"""`cupy.RawModule` / `cupy.RawKernel` on the CPU: the CUDA source is compiled with g++.

Compilation: the source is written to a .cpp with a launch trampoline per `extern "C" __global__`
kernel appended, and compiled with `cuda_emu_runtime.h` force-included (that header turns the
CUDA keywords into C++ and provides the fiber scheduler). The shared object is cached under
$PYDL_CUDA_EMU_CACHE (default: <tmp>/pydl-cuda-emu-<uid>) by a hash of the source, the runtime
header, this file and the compiler flags, so each kernel file compiles once across processes.

Argument marshalling: each kernel's C++ parameter types are read back from the compiled library
(`emu_sig_<name>()` returns codes such as "*f32,*f32,i64,i32,f32": pointer to float, ..., int64,
int32, float). A launch checks every Python argument against them the way a GPU cannot: a pointer
needs a C-contiguous cupy.ndarray of exactly the pointee's dtype, a scalar needs the NumPy scalar
type of the C type (CuPy passes NumPy scalars by their own type and Python int/float/bool as
int64/float64/bool, so only those Python scalars are taken, and only for those C types). Each value
is then stored in a ctypes object and an array of their addresses (`void**`, the cuLaunchKernel
convention) goes to the trampoline, which copies them into typed arguments and runs the grid.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import threading

import numpy

from . import _array

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIME_HEADER = os.path.join(os.path.dirname(HERE), "cuda_emu_runtime.h")
CXX = os.environ.get("CXX", "g++")
CXXFLAGS = ["-std=c++17", "-O1", "-shared", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing"]
_launch_lock = threading.Lock()
MAX_SHARED_DEFAULT = 48 * 1024   # dynamic shared memory a launch may ask for without opting in
MAX_SHARED_OPTIN = 227 * 1024    # sm_90 limit after fn.max_dynamic_shared_size_bytes = ...

# C type code (from the runtime's Code<T>) -> NumPy dtype of an array it may point to / scalar type.
_DTYPES = {"f32": numpy.float32, "f64": numpy.float64, "i8": numpy.int8, "u8": numpy.uint8, "i16": numpy.int16,
           "u16": numpy.uint16, "i32": numpy.int32, "u32": numpy.uint32, "i64": numpy.int64, "u64": numpy.uint64,
           "bool": numpy.bool_}
_CTYPES = {"f32": ctypes.c_float, "f64": ctypes.c_double, "i8": ctypes.c_int8, "u8": ctypes.c_uint8,
           "i16": ctypes.c_int16, "u16": ctypes.c_uint16, "i32": ctypes.c_int32, "u32": ctypes.c_uint32,
           "i64": ctypes.c_int64, "u64": ctypes.c_uint64, "bool": ctypes.c_bool}
_C_NAMES = {"f32": "float", "f64": "double", "i8": "signed char", "u8": "unsigned char", "i16": "short",
            "u16": "unsigned short", "i32": "int", "u32": "unsigned int", "i64": "long long",
            "u64": "unsigned long long", "bool": "bool", "void": "void", "?": "a struct"}


class CompileException(Exception):
    pass


def _c_name(code: str) -> str:
    if code.startswith("*"):
        return _c_name(code[1:]) + "*"
    return _C_NAMES.get(code, code)


def cache_dir() -> str:
    d = os.environ.get("PYDL_CUDA_EMU_CACHE") or os.path.join(tempfile.gettempdir(), f"pydl-cuda-emu-{os.getuid()}")
    os.makedirs(d, exist_ok=True)
    return d


# [extern "C"] __global__ [void | __launch_bounds__(...)]* name(params) {
_KERNEL_RE = re.compile(r'(extern\s*"C"\s*)?__global__\s+((?:void|__launch_bounds__\s*\([^()]*\)|\s)+?)'
                        r'(\w+)\s*\(([^)]*)\)\s*\{')
_EXTERN_C_BLOCK_RE = re.compile(r'extern\s*"C"\s*\{')


def _extern_c_ranges(text: str):
    """(start, end) of each `extern "C" { ... }` block."""
    ranges = []
    for m in _EXTERN_C_BLOCK_RE.finditer(text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        ranges.append((m.start(), i))
    return ranges


def find_kernels(code: str, defines=()) -> dict:
    """{name: [parameter names]} of the `extern "C"` `__global__` kernels, after preprocessing (the
    kernel files build names and parameter lists with macros)."""
    proc = subprocess.run([CXX, "-E", "-P", "-x", "c++", "-D__CUDACC__", "-D__CUDA_ARCH__=900", *defines, "-"],
                          input=code, capture_output=True, text=True)
    if proc.returncode:
        raise CompileException(f"preprocessing failed:\n{proc.stderr}")
    text = proc.stdout
    blocks = _extern_c_ranges(text)
    kernels = {}
    for m in _KERNEL_RE.finditer(text):
        if not (m.group(1) or any(a <= m.start() < b for a, b in blocks)):
            continue  # a C++ (mangled) kernel: CuPy would need name_expressions for it
        params = [p.strip() for p in m.group(4).split(",") if p.strip() and p.strip() != "void"]
        names = []
        for i, p in enumerate(params):
            ids = re.findall(r"[A-Za-z_]\w*", p)
            names.append(ids[-1] if ids else f"#{i}")
        kernels[m.group(3)] = names
    return kernels


_DYN_SHARED_RE = re.compile(r"extern\s+__shared__\s+((?:(?:__align__|alignas)\s*\(\s*\d+\s*\)\s*)*)"
                            r"([A-Za-z_][\w:<>, ]*?)\s+(\w+)\s*\[\s*\]\s*;")


def rewrite_dynamic_shared(code: str) -> str:
    """`extern __shared__ T name[];` -> `T* const name = <the runtime's dynamic shared buffer>;`."""
    return _DYN_SHARED_RE.sub(lambda m: f"{m.group(2)}* const {m.group(3)} = "
                                        f"reinterpret_cast<{m.group(2)}*>(emu::g_dyn_shared);", code)


_COMMENT_RE = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
# `__shared__ <type, __align__(n)...> name[dims];` on one line, one declarator, no initialiser.
_STATIC_SHARED_RE = re.compile(r"(__shared__[^;{}\n,=]*?\b(\w+)\s*(?:\[[^\];\n]*\]\s*)*;)")


def _blank_comments(code: str) -> str:
    """The source with comments replaced by blanks (newlines kept, so line numbers stay)."""
    return _COMMENT_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), code)


def rewrite_shared(code: str) -> str:
    """Dynamic shared memory becomes a pointer to the runtime's buffer; each static __shared__
    declaration gets EMU_SHARED_REG(name) after it, so every block starts with it poisoned."""
    code = rewrite_dynamic_shared(_blank_comments(code))
    return _STATIC_SHARED_RE.sub(lambda m: f"{m.group(1)} EMU_SHARED_REG({m.group(2)});", code)


def _trampolines(names) -> str:
    out = ["\n// ---- launch entries generated by the cupy emulator ----"]
    for n in names:
        out.append(f'extern "C" __attribute__((visibility("default"))) int emu_launch_{n}('
                   f'const long long* dims, void** argv, char* err, int errlen) {{\n'
                   f'  return emu::launch(&{n}, "{n}", dims, argv, err, errlen);\n}}')
        out.append(f'extern "C" __attribute__((visibility("default"))) const char* emu_sig_{n}() {{\n'
                   f'  static const std::string s = emu::signature(&{n});\n  return s.c_str();\n}}')
    return "\n".join(out) + "\n"


def compile_module(code: str, options=()) -> tuple:
    """(ctypes library, {kernel: parameter names}) for CUDA source `code`, compiled or from the cache."""
    defines = [o for o in options if o.startswith(("-D", "-U"))]
    kernels = find_kernels(code, defines)
    with open(RUNTIME_HEADER, "rb") as f:
        runtime = f.read()
    with open(os.path.abspath(__file__), "rb") as f:
        me = f.read()
    h = hashlib.sha256()
    for part in (code.encode(), runtime, me, " ".join([CXX] + CXXFLAGS + defines).encode()):
        h.update(part)
        h.update(b"\0")
    key = h.hexdigest()[:24]
    d = cache_dir()
    so = os.path.join(d, f"k_{key}.so")
    if not os.path.exists(so):
        src = os.path.join(d, f"k_{key}.{os.getpid()}.cpp")
        with open(src, "w") as f:
            f.write('#line 1 "kernel.cu"\n' + rewrite_shared(code) + "\n" + _trampolines(kernels))
        tmp = os.path.join(d, f"k_{key}.{os.getpid()}.so")
        proc = subprocess.run([CXX, *CXXFLAGS, *defines, "-include", RUNTIME_HEADER, src, "-o", tmp],
                              capture_output=True, text=True)
        if proc.returncode:
            raise CompileException(f"g++ failed on the kernel source ({src}):\n{proc.stderr[-6000:]}")
        os.replace(tmp, so)
        os.unlink(src)
    lib = ctypes.CDLL(so)
    lib.emu_set_schedule(ctypes.c_int(schedule()))
    return lib, kernels


_SCHEDULES = {"forward": 0, "reverse": 1, "alternate": 2}


def schedule() -> int:
    """PYDL_CUDA_EMU_SCHEDULE: forward | reverse | alternate (default; see cuda_emu_runtime.h)."""
    name = os.environ.get("PYDL_CUDA_EMU_SCHEDULE", "alternate")
    if name not in _SCHEDULES:
        raise ValueError(f"PYDL_CUDA_EMU_SCHEDULE must be one of {sorted(_SCHEDULES)}, got {name!r}")
    return _SCHEDULES[name]


class Function:
    """One kernel: `fn(grid, block, args, shared_mem=0, stream=None)` as CuPy's RawKernel calls it."""

    def __init__(self, lib, name: str, param_names):
        self.name = name
        self._launch = getattr(lib, f"emu_launch_{name}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.POINTER(ctypes.c_longlong), ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.c_char_p, ctypes.c_int]
        sig = getattr(lib, f"emu_sig_{name}")
        sig.restype = ctypes.c_char_p
        text = sig().decode()
        self.codes = text.split(",") if text else []
        self.param_names = list(param_names) if len(param_names) == len(self.codes) else \
            [f"#{i}" for i in range(len(self.codes))]
        self.num_regs, self.max_threads_per_block = 0, 1024
        self.max_dynamic_shared_size_bytes = MAX_SHARED_DEFAULT

    def _param(self, i: int) -> str:
        return f"parameter {i} '{self.param_names[i]}' ({_c_name(self.codes[i])})"

    def _arg(self, i: int, code: str, v):
        """A ctypes object holding argument i as the kernel's C type; TypeError when it does not match."""
        if code.startswith("*"):
            if v is None:
                return ctypes.c_void_p(0)
            if isinstance(v, _array.MemoryPointer):
                return ctypes.c_void_p(v.ptr)
            if not isinstance(v, _array.ndarray):
                raise TypeError(f"kernel {self.name}: {self._param(i)} needs a cupy.ndarray, got {type(v).__name__}")
            want = _DTYPES.get(code[1:])
            if want is not None and v.dtype != want:
                raise TypeError(f"kernel {self.name}: {self._param(i)} needs a {numpy.dtype(want)} array, "
                                f"got {v.dtype} {tuple(v.shape)}")
            if not v.flags.c_contiguous:
                raise TypeError(f"kernel {self.name}: {self._param(i)} got a non-C-contiguous view "
                                f"{tuple(v.shape)} strides {v.strides} (the kernel sees only the pointer)")
            return ctypes.c_void_p(v.data.ptr)
        ctype = _CTYPES.get(code)
        if ctype is None:
            raise TypeError(f"kernel {self.name}: {self._param(i)} has a type the emulator cannot pass")
        want = _DTYPES[code]
        t = type(v)
        ok = t is want or (isinstance(v, numpy.generic) and v.dtype == want)
        if not ok and not isinstance(v, numpy.generic):
            # Python scalars: CuPy passes bool as bool, int as int64 (uint64 from 2**63), float as double.
            if t is bool:
                ok = code == "bool"
            elif t is int:
                ok = (code == "i64" and -2**63 <= v < 2**63) or (code == "u64" and 2**63 <= v < 2**64)
            elif t is float:
                ok = code == "f64"
        if not ok:
            raise TypeError(f"kernel {self.name}: {self._param(i)} needs numpy.{numpy.dtype(want).name}, "
                            f"got {t.__module__ + '.' if t.__module__ not in ('builtins',) else ''}{t.__name__} "
                            f"{v!r} (CuPy would pass it as another C type)")
        return ctype(v.item() if isinstance(v, numpy.generic) else v)

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        from .cuda import driver
        g, b = _dims(grid, "grid", self.name), _dims(block, "block", self.name)
        if b[0] * b[1] * b[2] > 1024 or b[0] > 1024 or b[1] > 1024 or b[2] > 64:
            raise driver.CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: kernel {self.name}: block {b} "
                                         f"exceeds 1024 threads (or 1024, 1024, 64 per dimension)")
        if g[0] >= 2**31 or g[1] >= 65536 or g[2] >= 65536:
            raise driver.CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: kernel {self.name}: grid {g} exceeds "
                                         f"(2**31 - 1, 65535, 65535)")
        shared_mem = int(shared_mem)
        limit = max(MAX_SHARED_DEFAULT, min(int(self.max_dynamic_shared_size_bytes), MAX_SHARED_OPTIN))
        if shared_mem < 0 or shared_mem > limit:
            raise driver.CUDADriverError(
                f"CUDA_ERROR_INVALID_VALUE: kernel {self.name}: shared_mem={shared_mem} bytes is more than "
                f"{limit} (above {MAX_SHARED_DEFAULT} set fn.max_dynamic_shared_size_bytes first, "
                f"up to {MAX_SHARED_OPTIN})")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"kernel {self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.codes):
            raise TypeError(f"kernel {self.name} takes {len(self.codes)} arguments "
                            f"({', '.join(_c_name(c) for c in self.codes)}), got {len(args)}")
        holders = [self._arg(i, c, v) for i, (c, v) in enumerate(zip(self.codes, args))]
        argv = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        dims = (ctypes.c_longlong * 7)(*g, *b, shared_mem)
        err = ctypes.create_string_buffer(4096)
        with _launch_lock:
            rc = self._launch(dims, argv, err, len(err))
        _array.check_guards(self.name)
        if rc:
            msg = err.value.decode(errors="replace")
            m = re.search(r"illegal memory access in \w+ at address 0x([0-9a-f]+)", msg)
            if m:
                msg += _array.describe_address(int(m.group(1), 16))
            raise driver.CUDADriverError(f"CUDA_ERROR_LAUNCH_FAILED: {msg}")


def _dims(d, what: str, kernel: str) -> tuple:
    t = tuple(d) if isinstance(d, (tuple, list)) else (d,)
    if not 1 <= len(t) <= 3:
        raise ValueError(f"kernel {kernel}: {what} must have 1 to 3 dimensions, got {d!r}")
    out = []
    for x in t:
        if isinstance(x, bool) or not isinstance(x, (int, numpy.integer)):
            raise TypeError(f"kernel {kernel}: {what} dimensions must be integers, got {d!r}")
        if int(x) < 1:
            from .cuda import driver
            raise driver.CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: kernel {kernel}: {what} {d!r} has a "
                                         f"dimension below 1")
        out.append(int(x))
    return tuple(out) + (1,) * (3 - len(out))


class RawModule:
    """cupy.RawModule(code=..., options=...): compiles on construction (g++ here), get_function(name)."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        if code is None:
            if path is None:
                raise TypeError("RawModule needs code or path")
            with open(path, encoding="utf-8") as f:
                code = f.read()
        self.code = code
        self.options = tuple(options)
        self._lib, self._kernels = compile_module(code, self.options)
        self._functions = {}

    def get_function(self, name: str) -> Function:
        fn = self._functions.get(name)
        if fn is None:
            if name not in self._kernels:
                from .cuda import driver
                raise driver.CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
            fn = self._functions[name] = Function(self._lib, name, self._kernels[name])
        return fn


class RawKernel:
    """cupy.RawKernel(code, name, options=()): one kernel of a source."""

    def __init__(self, code, name, options=(), backend="nvrtc", **kwargs):
        self.code, self.name, self.options = code, name, tuple(options)
        self._fn = None

    def __call__(self, grid, block, args, **kwargs):
        if self._fn is None:
            self._fn = RawModule(code=self.code, options=self.options).get_function(self.name)
        return self._fn(grid, block, args, **kwargs)
