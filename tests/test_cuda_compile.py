"""Every CUDA kernel source compiles with NVRTC for sm_80 and sm_90, with no warning, and the
SGEMM kernels spill nothing: no GPU or driver needed (pip nvidia-cuda-nvrtc + cuda-bindings)."""
import functools
import os
import sys

import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="needs pip install nvidia-cuda-nvrtc cuda-bindings (test extras)")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import nvrtc_check  # noqa: E402


def _sources():
    return sorted(f for f in os.listdir(nvrtc_check.KERNEL_DIR) if f.endswith(".cu"))


@functools.lru_cache(maxsize=None)
def _compiled(fname, arch):
    return nvrtc_check.compile_file(os.path.join(nvrtc_check.KERNEL_DIR, fname), arch)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("fname", _sources())
def test_kernel_source_compiles_cleanly(fname, arch):
    ok, log = _compiled(fname, arch)
    assert ok, log
    assert not nvrtc_check._problems(log), log
    info = nvrtc_check.parse_ptxas(log)
    assert info, f"{fname}: no kernel was compiled\n{log}"
    if fname.startswith(nvrtc_check.NO_SPILL_PREFIXES):
        spilling = {k: v for k, v in info.items() if v["spill_stores"] or v["spill_loads"]}
        assert not spilling, f"{fname} {arch}: kernels spill: {spilling}"


def test_ptxas_report_is_parsed():
    ok, log = _compiled("gemm.cu", "sm_90")
    info = nvrtc_check.parse_ptxas(log)
    assert ok and "gemm_l_nn_v_f32" in info and info["gemm_l_nn_v_f32"]["registers"] > 0
    assert info["gemm_l_nn_v_f32"]["smem"] > 0
