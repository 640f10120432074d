"""pydl: a small, fast deep-learning library.

Hand-written C++ kernels (packed SGEMM with per-ISA SIMD micro-kernels, convolution,
pooling, recurrent cells, fused element-wise and optimizer updates) under a thin Keras-like
API. Distribution name `pydl-nn`, import name `pydl`.
"""
from __future__ import annotations

import importlib.util as _import_util
import numbers
import os as _os
import warnings


def _read_version() -> str:
    """The one version number lives in pyproject.toml.

    In a checkout (pyproject.toml of `pydl-nn` beside this package) it is read from there, so an
    older installed copy's metadata can't shadow it; an installed package asks importlib.metadata.
    """
    import re
    pyproject = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "pyproject.toml")
    try:
        with open(pyproject, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        text = ""
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if project and re.search(r'^name\s*=\s*"pydl-nn"', project.group(1), re.M):
        m = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M)
        if m:
            return m.group(1)
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("pydl-nn")
    except (ImportError, PackageNotFoundError):  # pragma: no cover
        return "unknown"


__version__ = _read_version()

if _import_util.find_spec("._core", __name__) is None:
    raise ImportError(
        f"pydl's compiled extension pydl._core is not built in {_os.path.dirname(_os.path.abspath(__file__))} "
        "(this looks like a source checkout). Install the package with `pip install .` (and run "
        "Python outside the checkout, so that the installed copy is imported), or, for development, "
        "build the extension next to the sources with `tools/build_inplace.sh`.", name="pydl._core")
from . import _core  # noqa: E402  (a _core that exists but cannot load keeps its own error)
from . import backend
from .backend import image_data_format, set_image_data_format
from .random import seed
from .ops import matmul
from . import ops, layers, activations
from . import data, datasets, metrics, callbacks, utils, distributed
from . import optimizers, schedules
from . import losses, initializers, regularizers
from . import interop
from . import cuda
from .graph import Input
from .model import Model, Sequential, load_model, model_from_json, clone_model
from . import models
from .gradcheck import gradcheck


def set_num_threads(n: int) -> int:
    """Set the number of threads every pydl kernel uses (process-wide, from any thread).

    Returns the count set. At most max(1024, 4 x the CPU count) threads are used; where fewer
    can be created (a memory or thread limit), that many are used. Either way a RuntimeWarning
    says so.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"[set_num_threads] n must be an int, got {type(n).__name__}")
    if not 1 <= n <= 2**31 - 1:
        raise ValueError(f"[set_num_threads] n must be in [1, 2^31 - 1], got {int(n)}")
    got = _core.set_num_threads(int(n))
    if got < n:
        warnings.warn(f"[set_num_threads] {int(n)} threads asked for, using {got}: at most max(1024, 4 x the "
                      f"CPU count) are used, and only those that could be created", RuntimeWarning, stacklevel=2)
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
        "l1d_ways": _core.l1d_ways(),
        "openmp": info.get("openmp") is not None,
        "openmp_version": info.get("openmp"),
        "num_threads": _core.get_num_threads(),
        "compiler": info.get("compiler"),
        "cxx_flags": info.get("cxx_flags"),
        "build_type": info.get("build_type"),
        "cuda": _cuda_summary(),
    }


def _cuda_summary() -> str:
    """One line about the CUDA backend: the GPU, its compute capability and CuPy, or why not."""
    from . import cuda
    info = cuda.device_info()
    if not info.get("available"):
        return f"unavailable ({info.get('reason')})"
    return (f"{info['name']} (compute capability {info['compute_capability']}, {info['memory_gib']} GiB), "
            f"CuPy {info['cupy']}, CUDA runtime {info['cuda_runtime']}")


def show_config() -> None:
    """Print the version, the SIMD ISA chosen and available, OpenMP and threads, and the compiler."""
    for k, v in config().items():
        print(f"{k:>15}: {v}")


__all__ = ["__version__", "matmul", "seed", "set_num_threads", "get_num_threads", "show_config",
           "config", "ops", "layers", "data", "utils", "datasets", "metrics", "callbacks", "optimizers", "schedules",
           "losses", "initializers", "regularizers", "interop", "activations", "Input", "Model", "Sequential",
           "load_model", "model_from_json", "clone_model", "models", "gradcheck", "backend", "image_data_format",
           "set_image_data_format", "distributed", "cuda"]
