"""pydl: a small, fast deep-learning library.

Hand-written C++ kernels (packed SGEMM with per-ISA SIMD micro-kernels, convolution,
pooling, recurrent cells, fused element-wise and optimizer updates) under a thin Keras-like
API. Distribution name `pydl-nn`, import name `pydl`.
"""
from __future__ import annotations

__version__ = "0.1.0"

import numbers
import warnings

from . import _core
from .random import seed
from .ops import matmul
from . import ops, layers
from . import data, datasets, metrics, callbacks
from . import optimizers, schedules
from . import losses, initializers, regularizers
from .graph import Input
from .model import Model, Sequential, load_model
from .gradcheck import gradcheck


def set_num_threads(n: int) -> int:
    """Set the number of threads every pydl kernel uses (process-wide, from any thread).

    Returns the count set. Where fewer threads can be created (a memory or thread limit), that
    many are used and a RuntimeWarning says so.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"[set_num_threads] n must be an int, got {type(n).__name__}")
    if not 1 <= n <= 2**31 - 1:
        raise ValueError(f"[set_num_threads] n must be in [1, 2^31 - 1], got {int(n)}")
    got = _core.set_num_threads(int(n))
    if got < n:
        warnings.warn(f"[set_num_threads] only {got} of the {int(n)} threads asked for could be created; "
                      f"using {got}", RuntimeWarning, stacklevel=2)
    return got


def get_num_threads() -> int:
    """Threads pydl kernels use; defaults to OMP_NUM_THREADS or the core count."""
    return _core.get_num_threads()


def config() -> dict:
    """Build and runtime configuration as a dict (see show_config)."""
    info = dict(_core.build_info)
    return {
        "version": __version__,
        "isa": _core.selected_isa(),
        "isa_available": list(_core.available_isas()),
        "openmp": info.get("openmp") is not None,
        "openmp_version": info.get("openmp"),
        "num_threads": _core.get_num_threads(),
        "compiler": info.get("compiler"),
        "cxx_flags": info.get("cxx_flags"),
        "build_type": info.get("build_type"),
    }


def show_config() -> None:
    """Print the version, the SIMD ISA chosen and available, OpenMP and threads, and the compiler."""
    for k, v in config().items():
        print(f"{k:>15}: {v}")


__all__ = ["__version__", "matmul", "seed", "set_num_threads", "get_num_threads", "show_config",
           "config", "ops", "layers", "data", "datasets", "metrics", "callbacks", "optimizers", "schedules",
           "losses", "initializers", "regularizers", "Input", "Model", "Sequential", "load_model", "gradcheck"]
