"""Shared pieces of the CUDA tests (tests/test_cuda_*.py).

Every CUDA test module starts with

    from cuda_support import cp, needs_cuda
    pytestmark = needs_cuda

so it is marked `cuda` (select with `pytest -m cuda`) and skips cleanly, saying why, where CuPy,
a driver or a GPU is missing. `cp` is the cupy module, or None there.
"""
import pytest

import pydl.cuda

_ok = pydl.cuda.is_available()
cp = pydl.cuda.cupy_module() if _ok else None
# True when `cp` is the CPU emulator of tests/cuda_emu (PYDL_CUDA_EMU=1): tests skip shapes too large
# to emulate with `pytest.mark.skipif(EMULATED, reason=...)`.
EMULATED = bool(getattr(cp, "EMULATED", False))
_why = "" if _ok else pydl.cuda.device_info().get("reason", "CUDA unavailable")
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not _ok, reason=f"needs a GPU: {_why}")]


def to_gpu(a):
    return cp.asarray(a)


def to_cpu(a):
    return cp.asnumpy(a) if cp is not None and isinstance(a, cp.ndarray) else a


def poisoned(shape, dtype):
    """A GPU array full of NaN, so elements a kernel forgets to write show up."""
    return cp.full(shape, cp.nan, dtype=dtype)
