"""The CUDA backend: hand-written kernels run through CuPy on CuPy arrays.

    pydl.cuda.is_available()     # CuPy importable, a driver and at least one GPU
    pydl.cuda.device_info()      # {"name", "compute_capability", "cupy", "cuda_runtime", ...}

Kernel sources live beside this file in `kernels/<family>.cu` (plain CUDA C++, no host code, no
#include: NVRTC compiles them). `module(family)` compiles one file with `cupy.RawModule` the first
time it is needed (CuPy caches the binary on disk, so later processes skip NVRTC) and keeps the
module per (family, device). Each kernel is an `extern "C"` entry with a dtype suffix:
`kernel("nn", "relu_forward", x.dtype)` is `relu_forward_f32` or `relu_forward_f64`.

Nothing here is imported by `import pydl`; CuPy is imported on first use only. The Python
wrappers of each family (`pydl/cuda/<family>.py`) take arrays `pydl.ops` has already validated
(dtype, shape, C-contiguity, one device) and only launch kernels.
"""
from __future__ import annotations

import functools
import os
import threading

KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
# NVRTC options every kernel file is compiled with (tools/nvrtc_check.py uses the same).
NVRTC_OPTIONS = ("-std=c++17",)

_lock = threading.Lock()
_modules: dict = {}
_functions: dict = {}


class CudaUnavailableError(RuntimeError):
    """The CUDA backend was asked for but CuPy, a driver or a GPU is missing."""


def _import_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        raise CudaUnavailableError(
            "the CUDA backend needs CuPy: pip install \"pydl-nn[cuda13]\" (CUDA 13 drivers) or "
            "\"pydl-nn[cuda12]\" (CUDA 12)") from exc
    return cupy


def cupy_module():
    """The cupy module, or CudaUnavailableError saying what to install."""
    return _import_cupy()


@functools.lru_cache(maxsize=1)
def _availability() -> tuple[bool, str]:
    try:
        cp = _import_cupy()
    except CudaUnavailableError as exc:
        return False, str(exc)
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver: CUDARuntimeError / cudaErrorInsufficientDriver ...
        return False, f"CuPy is installed but no CUDA driver could be used ({type(exc).__name__}: {exc})"
    if n < 1:
        return False, "CuPy is installed and a driver loaded, but no NVIDIA GPU is visible"
    return True, f"{n} GPU(s)"


def is_available() -> bool:
    """True when CuPy imports, a CUDA driver loads and at least one GPU is visible."""
    return _availability()[0]


def require() -> None:
    """CudaUnavailableError saying what is missing (CuPy, a driver, a GPU) unless is_available()."""
    ok, why = _availability()
    if not ok:
        raise CudaUnavailableError(f"CUDA is not available: {why}")


def device_info() -> dict:
    """The current GPU and the CUDA stack (empty dict plus the reason when unavailable)."""
    ok, why = _availability()
    if not ok:
        return {"available": False, "reason": why}
    cp = _import_cupy()
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"]
    return {"available": True, "device": dev.id,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "multiprocessors": props["multiProcessorCount"],
            "cupy": cp.__version__, "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cp.cuda.runtime.driverGetVersion()}


def kernel_files() -> list[str]:
    """Paths of every kernel source shipped with the package."""
    return sorted(os.path.join(KERNEL_DIR, f) for f in os.listdir(KERNEL_DIR) if f.endswith(".cu"))


def source(family: str) -> str:
    with open(os.path.join(KERNEL_DIR, f"{family}.cu"), encoding="utf-8") as f:
        return f.read()


def module(family: str):
    """The compiled `cupy.RawModule` of kernels/<family>.cu on the current device."""
    cp = _import_cupy()
    key = (family, cp.cuda.Device().id)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cp.RawModule(code=source(family), options=NVRTC_OPTIONS)
                _modules[key] = mod
    return mod


def function(family: str, name: str):
    """One `extern "C"` kernel of kernels/<family>.cu, compiled on first use for the current device."""
    cp = _import_cupy()
    key = (family, name, cp.cuda.Device().id)
    fn = _functions.get(key)
    if fn is None:
        fn = module(family).get_function(name)
        _functions[key] = fn
    return fn


def kernel(family: str, base: str, dtype):
    """The kernel `<base>_f32` or `<base>_f64` of kernels/<family>.cu for arrays of `dtype`.

    Kernel files define each kernel once as a template `__device__` function and export one
    `extern "C" __global__` entry per dtype with these suffixes (no name mangling, no
    instantiation lists)."""
    return function(family, f"{base}_{suffix(dtype)}")


def suffix(dtype) -> str:
    import numpy as np
    dt = np.dtype(dtype)
    if dt == np.float32:
        return "f32"
    if dt == np.float64:
        return "f64"
    raise ValueError(f"[cuda] no kernels for dtype {dt}; float32 and float64 only")


def scalar(value, dtype):
    """A kernel scalar argument of the array dtype (CuPy passes numpy scalars by their type)."""
    import numpy as np
    return np.dtype(dtype).type(value)


def blocks(n: int, threads: int, max_blocks: int = 65535 * 32) -> int:
    """Grid size for n elements at `threads` per block (kernels loop grid-stride past it)."""
    return max(1, min((int(n) + threads - 1) // threads, max_blocks))


__all__ = ["is_available", "require", "device_info", "CudaUnavailableError", "kernel_files", "module",
           "function", "kernel", "suffix", "scalar", "blocks", "cupy_module"]
