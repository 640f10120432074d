"""Environment that makes pydl, PyTorch and NumPy run one ISA's kernels (read at library load).

No imports of the libraries here: python -m pydl.bench sets these before any of them loads.
"""
from __future__ import annotations

import os

# What each library needs in its environment (set before it loads) to run the kernels of one ISA,
# so that an AVX2 machine can be emulated on an AVX-512 one for pydl, PyTorch and NumPy alike.
# "native" leaves every library to pick for itself.
# PyTorch takes its SGEMM (matmul, Linear, LSTM / GRU) from MKL, which has its own switch: without
# MKL_ENABLE_INSTRUCTIONS, torch.matmul ran AVX-512 code under ATEN_CPU_CAPABILITY=avx2.
ISA_ENV = {
    "avx512": {"PYDL_ISA": "avx512", "ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512", "OPENBLAS_CORETYPE": "SkylakeX"},
    "avx2": {"PYDL_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"},
    "generic": {"PYDL_ISA": "generic", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OPENBLAS_CORETYPE": "Nehalem"},
}


def isa_environment(isa: str) -> dict:
    """The environment variables that make every library run `isa` ("native": none forced).

    OPENBLAS_L2_SIZE is always dropped: set on some machines for old OpenBLAS builds, it slows a
    current one. For "native", OPENBLAS_CORETYPE is dropped too, so OpenBLAS detects the CPU.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_L2_SIZE", "OPENBLAS_CORETYPE", "PYDL_ISA", "ATEN_CPU_CAPABILITY",
                        "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    env.update(ISA_ENV.get(isa, {}))
    return env
