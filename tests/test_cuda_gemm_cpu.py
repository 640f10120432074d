"""What of the CUDA GEMM can be checked without a GPU: device dispatch in ops.gemm, the tile choice,
the vector-load rule, and that the Python tile table matches the kernels in kernels/gemm.cu."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import pydl
from pydl.cuda import gemm as cuda_gemm
from pydl.ops import gemm


def _fake_cupy(shape=(2, 2), dtype=np.float32):
    cls = type("ndarray", (), {"__module__": "cupy", "shape": shape, "ndim": len(shape),
                               "dtype": np.dtype(dtype)})
    return cls()


def test_mixed_devices_raise_before_anything_else():
    with pytest.raises(ValueError, match=r"\[matmul\].*a on cpu, b on cuda"):
        gemm(np.ones((2, 2), np.float32), _fake_cupy())
    with pytest.raises(ValueError, match=r"\[matmul\].*a on cuda, b on cpu"):
        pydl.matmul(_fake_cupy(), np.ones((2, 2), np.float32))
    # checked before shapes, dtypes and scalars: a mismatch there does not win
    with pytest.raises(ValueError, match=r"different devices.*out on cpu"):
        gemm(_fake_cupy((3, 4)), _fake_cupy((5, 6)), alpha="x", out=np.empty((7, 7), np.int8))
    with pytest.raises(ValueError, match=r"different devices"):
        gemm([[1.0]], _fake_cupy((1, 1)))


def test_cpu_path_unchanged_for_numpy():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = pydl.matmul(a, b)
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, a @ b)
    got = gemm(a.T.copy(), b, trans_a=True, out=None)
    np.testing.assert_array_equal(got, a @ b)


@pytest.mark.parametrize("sms", [132, 108, 16])
def test_choose_tile(sms):
    assert cuda_gemm.choose_tile(4096, 4096, np.float64, sms) == "s"
    assert cuda_gemm.choose_tile(4096, 4096, np.float32, sms) == "l"
    assert cuda_gemm.choose_tile(1, 1, np.float32, sms) == "s"
    for m, n in [(1, 1), (1024, 1024), (128, 256), (5000, 3), (37, 129)]:
        tile = cuda_gemm.choose_tile(m, n, np.float32, sms)
        assert tile in cuda_gemm.TILES
        bm, bn = cuda_gemm.TILES[tile]
        nblocks = -(-m // bm) * -(-n // bn)
        if tile == "l":
            assert nblocks >= sms
        else:  # a bigger tile would have left SMs idle
            assert -(-m // 128) * -(-n // 128) < sms
    # 1024 x 1024 on an H200 (132 SMs): 64 tiles of 128x128 leave half the SMs idle
    assert cuda_gemm.choose_tile(1024, 1024, np.float32, 132) == "m"


class _Buf:
    def __init__(self, ptr):
        self.ptr = ptr


class _Arr:
    def __init__(self, shape, dtype, ptr):
        self.shape, self.dtype, self.data = shape, np.dtype(dtype), _Buf(ptr)


def test_vector_ok():
    f = np.float32
    assert cuda_gemm.vector_ok(_Arr((8, 4), f, 256), _Arr((4, 12), f, 512), _Arr((8, 12), f, 1024))
    assert not cuda_gemm.vector_ok(_Arr((8, 6), f, 256), _Arr((6, 12), f, 512), _Arr((8, 12), f, 1024))
    assert not cuda_gemm.vector_ok(_Arr((8, 4), f, 260), _Arr((4, 12), f, 512), _Arr((8, 12), f, 1024))
    assert not cuda_gemm.vector_ok(_Arr((8, 4), f, 256), _Arr((4, 13), f, 512), _Arr((8, 13), f, 1024))
    d = np.float64
    assert cuda_gemm.vector_ok(_Arr((8, 2), d, 256), _Arr((2, 6), d, 512), _Arr((8, 6), d, 1024))
    assert not cuda_gemm.vector_ok(_Arr((8, 2), d, 264), _Arr((2, 6), d, 512), _Arr((8, 6), d, 1024))


def test_tile_table_matches_kernel_source():
    src = pydl.cuda.source("gemm")
    entries = re.findall(r"^GEMM_TRANSPOSES\((\w+), (f32|f64), (\w+), (\d+), (\d+), (\d+), (\d+), (\d+), [12]\)", src, re.M)
    assert entries, "no GEMM_TRANSPOSES lines in kernels/gemm.cu"
    seen = {}
    for tile, sfx, ctype, bm, bn, bk, tm, tn in entries:
        bm, bn, bk, tm, tn = map(int, (bm, bn, bk, tm, tn))
        assert (bm, bn) == cuda_gemm.TILES[tile], tile
        assert (bm // tm) * (bn // tn) == cuda_gemm.THREADS
        assert ctype == {"f32": "float", "f64": "double"}[sfx]
        seen.setdefault(sfx, set()).add(tile)
    assert seen["f32"] == set(cuda_gemm.TILES)
    assert seen["f64"] == set(cuda_gemm.FLOAT64_TILES)
    assert re.search(r"__global__ void gemm_scale_f32\(", src) and re.search(r"__global__ void gemm_scale_f64\(", src)
    assert f"#define GEMM_THREADS {cuda_gemm.THREADS}" in src


def test_kernels_run_on_cpu_emulator(tmp_path):
    """Every gemm_* kernel of kernels/gemm.cu, compiled by the host C++ compiler with CUDA threads as
    fibers (tests/gemm_cu_on_cpu.cpp), against a float64 product on edge shapes and alignments."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None or not os.path.exists("/usr/include/ucontext.h"):
        pytest.skip("needs a C++17 compiler and ucontext.h")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = str(tmp_path / "gemm_cu_on_cpu")
    src = os.path.join(here, "pydl", "cuda", "kernels", "gemm.cu")
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-w", f'-DGEMM_CU="{src}"',
                            os.path.join(here, "tests", "gemm_cu_on_cpu.cpp"), "-o", exe],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    res = subprocess.run([exe, "quick"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 bad elements" in res.stdout


def test_bench_table_formats_rows_without_a_gpu():
    from pydl.bench import cuda_gemm as bench
    row = {"name": "square 1024 NN", "shape": "1024x1024x1024", "tile": "m", "pydl_tflops": 20.0,
           "cublas_tflops": 30.0, "torch_tflops": None, "ratio_cublas": 2 / 3, "ratio_torch": None,
           "max_rel_err": 1e-6}
    text = bench.format_rows([row])
    assert "square 1024 NN" in text and "0.67" in text and "TF32 off" in text
    assert len(text.splitlines()) == 2
