"""What of the CUDA convolution can be checked without a GPU: device dispatch and mixed-device
errors in ops.conv, the algorithm choice on CUDA (conv2d_explain, Conv2D.algo_used), the grid and
split plans and size limits of pydl.cuda.conv, that every kernel it launches exists in
kernels/conv.cu, and the kernels themselves run on the CPU (tests/conv_cu_on_cpu.cpp: CUDA threads
as fibers) against float64 loops."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import pydl
from pydl.cuda import conv as cuda_conv
from pydl.ops import conv as conv_ops


def _fake_cupy(shape=(2, 3, 5, 5), dtype=np.float32):
    cls = type("ndarray", (), {"__module__": "cupy", "shape": shape, "ndim": len(shape), "dtype": np.dtype(dtype)})
    return cls()


def test_mixed_devices_raise_before_anything_else():
    x = np.ones((2, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"\[conv2d\].*x on cpu, w on cuda"):
        conv_ops.conv2d(x, _fake_cupy((4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"\[conv2d\].*b on cuda"):
        pydl.ops.conv2d(x, w, _fake_cupy((4,)))
    with pytest.raises(ValueError, match=r"\[conv2d\].*x on cuda, w on cuda, out on cpu"):
        conv_ops.conv2d(_fake_cupy(), _fake_cupy((4, 3, 3, 3)), out=np.empty((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[conv2d_backward\].*dy on cuda, x on cpu, w on cpu"):
        conv_ops.conv2d_backward(_fake_cupy((2, 4, 3, 3)), x, w)
    # checked before shapes, dtypes and settings: a mismatch there does not win
    with pytest.raises(ValueError, match=r"different devices"):
        conv_ops.conv2d(_fake_cupy((7,)), np.ones((1,), np.int8), stride=0, algo="nope")
    with pytest.raises(ValueError, match=r"different devices"):
        conv_ops.conv2d_backward(_fake_cupy((2, 4, 3, 3)), [[1.0]], w, padding="bad")


def test_cpu_path_unchanged():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = conv_ops.conv2d(x, w, padding=1, activation="relu")
    assert type(y) is np.ndarray and y.shape == (2, 4, 6, 5)
    assert conv_ops.conv2d_explain(x.shape, w.shape, padding=1) == conv_ops.conv2d_explain(x.shape, w.shape, padding=1,
                                                                                          device="cpu")
    dx, dw, db = conv_ops.conv2d_backward(np.ones_like(y), x, w, padding=1)
    assert type(dx) is np.ndarray and dw.shape == w.shape and db.shape == (4,)


@pytest.mark.parametrize("algo", conv_ops.ALGOS + ("implicit_gemm",))
def test_explain_on_cuda_maps_every_algo_to_implicit_gemm(algo):
    name, why = conv_ops.conv2d_explain((8, 16, 14, 14), (32, 16, 3, 3), padding=1, algo=algo, device="cuda")
    assert name == "implicit_gemm" and why.startswith("cuda:")
    if algo not in ("auto", "implicit_gemm"):
        assert repr(algo) in why and "CPU algorithm" in why
    assert conv_ops.conv2d_algo((8, 16, 14, 14), (32, 16, 3, 3), padding=1, algo=algo, device="cuda") == \
        "implicit_gemm"


def test_algo_checks_on_cuda_match_cpu():
    for dev in ("cpu", "cuda"):
        with pytest.raises(ValueError, match=r"winograd_f2.*needs a 3x3 filter"):
            conv_ops.conv2d_explain((1, 2, 8, 8), (3, 2, 5, 5), algo="winograd_f2", device=dev)
        with pytest.raises(ValueError, match=r"winograd.*needs a 3x3 filter.*stride \(2, 2\)"):
            conv_ops.conv2d_explain((1, 2, 8, 8), (3, 2, 3, 3), stride=2, algo="winograd", device=dev)
        with pytest.raises(ValueError, match=r"unknown algo 'fft'"):
            conv_ops.conv2d_explain((1, 2, 8, 8), (3, 2, 3, 3), algo="fft", device=dev)
    with pytest.raises(ValueError, match=r"'implicit_gemm' runs on CUDA \(CuPy\) arrays only"):
        conv_ops.conv2d(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32), algo="implicit_gemm")
    with pytest.raises(ValueError, match=r"device must be 'cpu' or 'cuda'"):
        conv_ops.conv2d_explain((1, 2, 8, 8), (3, 2, 3, 3), device="tpu")


def test_layer_algo_used_follows_the_weights_device():
    layer = pydl.layers.Conv2D(8, 3, padding="same", input_shape=(4, 10, 10), algo="im2col")
    pydl.Sequential([layer]).build((None, 4, 10, 10))
    assert layer.algo_used == "im2col" and layer.algo_reason == "im2col requested"
    real_w = layer.params["W"]
    layer.params["W"] = _fake_cupy(real_w.shape)  # what Model.to("cuda") leaves there
    try:
        assert layer.algo_used == "implicit_gemm"
        assert layer.algo_reason == "cuda: 'im2col' is a CPU algorithm; the GPU runs the implicit GEMM"
    finally:
        layer.params["W"] = real_w
    assert layer.algo_used == "im2col"
    assert pydl.layers.Conv2D.supports_cuda and pydl.layers.Conv2DTranspose.supports_cuda


def test_split_plan():
    for npq, k, crs, sms in [(200704, 64, 576, 132), (1600, 2, 27, 132), (7, 3, 5, 132), (1, 1, 1, 1),
                             (100352, 128, 1152, 132), (10**7, 512, 4608, 108), (513, 70, 70, 16)]:
        splits, chunk = cuda_conv.split_plan(npq, k, crs, sms)
        assert splits >= 1 and chunk % 8 == 0 and chunk >= 8
        assert (splits - 1) * chunk < npq <= splits * chunk  # every split non-empty, all covered
        if splits > 1:
            assert chunk >= cuda_conv.MIN_SPLIT_CHUNK
        tiles = -(-k // 64) * -(-crs // 64)
        if tiles >= 2 * sms:
            assert splits == 1
    assert cuda_conv.split_plan(0, 4, 27, 132) == (1, 8)
    # the benchmark's first layer: 9 output tiles need splitting to fill 132 SMs
    assert cuda_conv.split_plan(64 * 56 * 56, 64, 576, 132)[0] >= 20


def test_grids():
    assert cuda_conv.forward_grid(64, 64, 56, 56) == (3136, 1, 1)
    assert cuda_conv.forward_grid(2, 70, 3, 3) == (1, 2, 1)
    assert cuda_conv.backward_data_grid(2, 3, 7, 6) == (2, 1, 1)
    assert cuda_conv.backward_filter_grid(64, 576, 30) == (9, 1, 30)
    assert cuda_conv.forward_grid(0, 4, 5, 5) == (1, 1, 1)
    assert cuda_conv.geometry((2, 3, 7, 6), (5, 3, 3, 2), (4, 5), (2, 1), (1, 2, 3, 4), (1, 2)) == \
        (2, 3, 7, 6, 5, 3, 2, 4, 5, 2, 1, 1, 3, 1, 2)


def test_size_limits():
    cuda_conv.check_limits("conv2d", (64, 64, 56, 56), (64, 64, 3, 3), (56, 56), (1, 1), (1, 1, 1, 1), (1, 1))
    with pytest.raises(ValueError, match=r"\[conv2d\] the CUDA kernels need every size below 2\^31, got W = "):
        cuda_conv.check_limits("conv2d", (1, 1, 1, 2**31), (1, 1, 1, 1), (1, 2**31), (1, 1), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match=r"padded H"):
        cuda_conv.check_limits("conv2d_backward", (1, 1, 5, 5), (1, 1, 3, 3), (3, 3), (2**30, 1),
                               (2**30, 2**30, 0, 0), (1, 1))
    with pytest.raises(ValueError, match=r"dilated S"):
        cuda_conv.check_limits("conv2d", (1, 1, 5, 5), (1, 1, 1, 3), (5, 1), (1, 1), (0, 0, 2**30, 2**30), (1, 2**30))
    with pytest.raises(ValueError, match=r"more thread blocks"):
        cuda_conv.check_limits("conv2d", (1, 1, 1, 1), (65536 * 64, 1, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))


def test_launched_kernels_exist_in_source():
    src = pydl.cuda.source("conv")
    entries = set(re.findall(r"\b(conv_\w+)_##SFX\(", src))
    assert entries == {"conv_fwd", "conv_bwd_data_s1", "conv_bwd_data", "conv_bwd_filter", "conv_split_sum",
                       "conv_bias_grad"}
    with open(cuda_conv.__file__, encoding="utf-8") as f:
        wrapper = f.read()
    launched = set(re.findall(r'kernel\("conv", "(\w+)"', wrapper)) | \
        set(re.findall(r'"(conv_bwd_data(?:_s1)?)"', wrapper))
    assert launched <= entries and {"conv_fwd", "conv_bwd_filter", "conv_split_sum", "conv_bias_grad"} <= launched
    assert re.search(r"CONV_ENTRIES\(f32, float\)", src) and re.search(r"CONV_ENTRIES\(f64, double\)", src)
    assert f"#define CONV_THREADS {cuda_conv.THREADS}" in src
    assert f"#define CONV_BM {cuda_conv.TILE_M}" in src and f"#define CONV_BN {cuda_conv.TILE_N}" in src
    assert f"#define CONV_BIAS_THREADS {cuda_conv.BIAS_THREADS}" in src
    assert cuda_conv.THREADS == (cuda_conv.TILE_M // 4) * (cuda_conv.TILE_N // 4)  # a 4 x 4 tile per thread


def test_benchmark_module_imports_without_a_gpu():
    from pydl.bench import cuda_conv as bench
    assert [c[1:6] for c in bench.CASES] == [(64, 64, 56, 56, 64), (128, 128, 28, 28, 128), (64, 64, 56, 56, 64)]
    assert [c[6] for c in bench.CASES] == [False, False, True]
    text = bench.format_rows([dict(name="conv3x3 forward", shape="N1 C1 3x3 K1", pydl_ms=1.0, pydl_tflops=0.1)])
    assert "conv3x3 forward" in text and "1.000" in text


def test_kernels_run_on_cpu_emulator(tmp_path):
    """Every conv_* kernel of kernels/conv.cu, compiled by the host C++ compiler with CUDA threads as
    fibers (tests/conv_cu_on_cpu.cpp), against float64 loops: strides 1-3, dilation 2, asymmetric
    padding, C = 1, K = 1, several tiles, split weight gradients, relu, bias, N = 0."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None or not os.path.exists("/usr/include/ucontext.h"):
        pytest.skip("needs a C++17 compiler and ucontext.h")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = str(tmp_path / "conv_cu_on_cpu")
    src = os.path.join(here, "pydl", "cuda", "kernels", "conv.cu")
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-w", f'-DCONV_CU="{src}"',
                            os.path.join(here, "tests", "conv_cu_on_cpu.cpp"), "-o", exe],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    res = subprocess.run([exe, "quick"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "14 cases, 0 bad elements" in res.stdout
