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


# what each algo runs on CUDA arrays for a 3x3 / stride 1 layer with 16 channels (below the rule's 32)
_CUDA_NAMES = {"auto": "implicit_gemm", "implicit_gemm": "implicit_gemm", "naive": "implicit_gemm",
               "direct": "implicit_gemm", "im2col": "implicit_gemm", "winograd": "winograd_f4",
               "winograd_f2": "winograd_f2", "winograd_f4": "winograd_f4"}


@pytest.mark.parametrize("algo", conv_ops.ALGOS + ("implicit_gemm",))
def test_explain_on_cuda_every_algo(algo):
    name, why = conv_ops.conv2d_explain((8, 16, 14, 14), (32, 16, 3, 3), padding=1, algo=algo, device="cuda")
    assert name == _CUDA_NAMES[algo] and why.startswith("cuda")
    if algo in ("naive", "direct", "im2col"):
        assert repr(algo) in why and "CPU algorithm" in why
    assert conv_ops.conv2d_algo((8, 16, 14, 14), (32, 16, 3, 3), padding=1, algo=algo, device="cuda") == name


def test_cuda_auto_rule():
    m, f4 = conv_ops.CUDA_AUTO_RULE["wino_min_ck"], conv_ops.CUDA_AUTO_RULE["f4_min_out"]

    def pick(x_shape, w_shape, **kw):
        return conv_ops.conv2d_explain(x_shape, w_shape, device="cuda", **kw)

    name, why = pick((4, m, f4, f4), (m, m, 3, 3), padding=1)
    assert name == "winograd_f4" and f"C = {m} and K = {m} >= {m}" in why
    assert pick((4, m, f4 - 1, f4 + 5), (m, m, 3, 3), padding=1)[0] == "winograd_f2"
    assert pick((4, m, f4 + 2, f4 + 2), (m, m, 3, 3))[0] == "winograd_f4"   # valid: output f4 x f4
    assert pick((4, m, f4 + 1, f4 + 2), (m, m, 3, 3))[0] == "winograd_f2"   # valid: output f4-1 rows
    name, why = pick((4, m - 1, 16, 16), (m, m - 1, 3, 3), padding=1)
    assert name == "implicit_gemm" and f"C = {m - 1}" in why
    assert pick((4, m, 16, 16), (m - 1, m, 3, 3), padding=1)[0] == "implicit_gemm"
    for kw in (dict(stride=2), dict(dilation=2)):
        assert pick((4, m, 16, 16), (m, m, 3, 3), padding=1, **kw)[0] == "implicit_gemm"
    assert pick((4, m, 16, 16), (m, m, 5, 5), padding=2)[0] == "implicit_gemm"
    assert pick((4, m, 16, 16), (m, m, 1, 1))[0] == "implicit_gemm"
    # "winograd" on CUDA picks the variant by output size only, whatever the channels
    assert pick((1, 2, 6, 6), (3, 2, 3, 3), padding=1, algo="winograd")[0] == "winograd_f2"
    assert pick((1, 2, 9, 9), (3, 2, 3, 3), padding=1, algo="winograd")[0] == "winograd_f4"


def test_winograd_tiles():
    from pydl.cuda import winograd
    assert winograd.tiles(2, 7, 9, 4) == (2, 3, 12, 12)
    assert winograd.tiles(3, 5, 5, 2) == (3, 3, 27, 28)
    assert winograd.tiles(1, 1, 1, 4) == (1, 1, 1, 4)
    # U + V + M for F(4x4): 36 * (K*C + C*TP + K*TP) elements
    assert winograd.scratch_bytes((2, 3, 7, 9), 5, (2, 5, 7, 9), 4, 4) == 36 * (15 + 3 * 12 + 5 * 12) * 4


def test_winograd_chunks_bound_the_scratch():
    from pydl.cuda import winograd
    # N128 C128 28x28 K128, F(4x4): 36 * 256 * 49 tiles * 4 bytes = 1.8 MB per image
    assert winograd.chunk_images(128, 128, 128, 28, 28, 4, 4) == 128
    per_image = 36 * (512 + 512) * 14 * 14 * 4
    assert winograd.chunk_images(256, 512, 512, 56, 56, 4, 4) == winograd.SCRATCH_LIMIT // per_image < 256
    assert winograd.chunk_images(1, 4096, 4096, 512, 512, 4, 8) == 1  # one image at least


def test_batched_tile_choice():
    from pydl.cuda import gemm
    assert gemm.batched_tile(64, 12544, 36, np.float32, 132) == "h"      # 64 rows: no 128-row tile
    assert gemm.batched_tile(128, 6272, 36, np.float32, 132) == "l"
    assert gemm.batched_tile(128, 64, 1, np.float32, 132) == "s"         # too few blocks for a big tile
    assert gemm.batched_tile(128, 6272, 36, np.float64, 132) == "s"


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
        layer.algo = "auto"
        layer._algo_choice = None
        assert layer.algo_used == "implicit_gemm" and "C = 4" in layer.algo_reason  # 4 channels: below the rule
        layer.algo = "winograd"
        layer._algo_choice = None
        assert layer.algo_used == "winograd_f4"  # output 10x10
    finally:
        layer.params["W"] = real_w
        layer.algo, layer._algo_choice = "im2col", None
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
        if tiles > sms:
            assert splits == 1
        assert splits == 1 or splits * tiles <= 2 * sms  # never a nearly empty extra wave
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
    gemm_kernels = set(re.findall(r"\b(conv_\w+)##TAG\(", src))
    assert gemm_kernels == {"conv_fwd", "conv_bwd_data_s1", "conv_bwd_data", "conv_bwd_filter"}
    tags = re.findall(r"^CONV_GEMM_ENTRIES\((_\w+), (\w+), (\w+), \d\)$", src, re.M)
    assert sorted(t[0] for t in tags) == ["_f32", "_f64", "_l_f32", "_w_f32"]
    entries = {b + t for b in gemm_kernels for t, _, _ in tags}
    others = set(re.findall(r"\b(conv_\w+)_##SFX\(", src))
    assert others == {"conv_split_sum", "conv_bias_grad"}
    entries |= {b + "_" + sfx for b in others for sfx in ("f32", "f64")}
    # every (kernel, tile, dtype) the wrapper can ask for is compiled
    for base in gemm_kernels:
        for tile in cuda_conv.TILES:
            for dtype in ("f32", "f64"):
                if dtype == "f64" and tile not in cuda_conv.FLOAT64_TILES:
                    continue
                assert f"{cuda_conv.kernel_name(base, tile)}_{dtype}" in entries, (base, tile, dtype)
    tile_types = {t: ty for t, _, ty in tags}
    assert tile_types["_f32"] == tile_types["_f64"] == "ConvTileS"
    for tile, tag in (("l", "_l_f32"), ("w", "_w_f32")):
        bm, bn = cuda_conv.TILES[tile]
        assert re.search(rf"typedef ConvTile<{bm}, {bn}, 8, 8> {tile_types[tag]};", src), tile
    assert re.search(r"typedef ConvTile<CONV_BM, CONV_BN, 4, 4> ConvTileS;", src)
    with open(cuda_conv.__file__, encoding="utf-8") as f:
        wrapper = f.read()
    launched = set(re.findall(r'kernel\("conv", "(\w+)"', wrapper)) | \
        set(re.findall(r'kernel_name\("(\w+)"', wrapper)) | set(re.findall(r'"(conv_bwd_data(?:_s1)?)"', wrapper))
    assert launched == gemm_kernels | others
    assert f"#define CONV_THREADS {cuda_conv.THREADS}" in src
    assert f"#define CONV_BM {cuda_conv.TILE_M}" in src and f"#define CONV_BN {cuda_conv.TILE_N}" in src
    assert f"#define CONV_BIAS_THREADS {cuda_conv.BIAS_THREADS}" in src
    assert cuda_conv.TILES["s"] == (cuda_conv.TILE_M, cuda_conv.TILE_N)
    for tile, (bm, bn) in cuda_conv.TILES.items():  # 256 threads, 4 x 4 (s) or 8 x 8 results each
        per = 4 if tile == "s" else 8
        assert (bm // per) * (bn // per) == cuda_conv.THREADS


def test_choose_tile(monkeypatch):
    f32, f64 = np.float32, np.float64
    # the benchmark layers on a 132-SM GPU: K = 64 runs 64x256, K = 128 runs 128x128
    assert cuda_conv.choose_tile(64, 64 * 56 * 56, f32, 132) == "w"
    assert cuda_conv.choose_tile(128, 128 * 28 * 28, f32, 132) == "l"
    # weight gradients (K x C*R*S) count the split blocks
    assert cuda_conv.choose_tile(64, 576, f32, 132) == "s"
    assert cuda_conv.choose_tile(64, 576, f32, 132, cuda_conv.max_splits(64 * 56 * 56)) == "w"
    assert cuda_conv.choose_tile(128, 1152, f32, 132, cuda_conv.max_splits(128 * 28 * 28)) == "l"
    # too few blocks for the large tiles, or too much padding: 64x64
    assert cuda_conv.choose_tile(128, 128 * 64, f32, 132) == "s"
    assert cuda_conv.choose_tile(130, 10**6, f32, 132) == "w"
    assert cuda_conv.choose_tile(200, 10**6, f32, 132) == "l"
    assert cuda_conv.choose_tile(512, 49, f32, 132) == "s"
    assert cuda_conv.choose_tile(0, 0, f32, 132) == "s"
    for m, n in [(64, 200704), (128, 100352), (4096, 4096)]:
        assert cuda_conv.choose_tile(m, n, f64, 132) == "s"
    for m, n, sms in [(64, 200704, 132), (128, 100352, 132), (300, 5000, 16), (70, 9000, 108), (1, 1, 1)]:
        tile = cuda_conv.choose_tile(m, n, f32, sms)
        if tile != "s":
            assert cuda_conv.tile_blocks(m, n, tile) >= sms
    monkeypatch.setattr(cuda_conv, "FORCE_TILE", "l")
    assert cuda_conv.choose_tile(1, 1, f32, 132) == "l" and cuda_conv.choose_tile(1, 1, f64, 132) == "s"
    monkeypatch.setattr(cuda_conv, "FORCE_TILE", "x")
    with pytest.raises(ValueError, match=r"FORCE_TILE"):
        cuda_conv.choose_tile(1, 1, f32, 132)


def test_tile_grids_and_names():
    assert cuda_conv.forward_grid(64, 64, 56, 56, "w") == (784, 1, 1)
    assert cuda_conv.forward_grid(2, 131, 9, 8, "l") == (2, 2, 1)
    assert cuda_conv.backward_data_grid(2, 29, 9, 8, "w") == (1, 1, 1)
    assert cuda_conv.backward_filter_grid(131, 261, 3, "l") == (3, 2, 3)
    assert cuda_conv.tile_blocks(131, 261, "w") == 3 * 2
    assert cuda_conv.kernel_name("conv_fwd", "s") == "conv_fwd"
    assert cuda_conv.kernel_name("conv_bwd_data_s1", "l") == "conv_bwd_data_s1_l"
    # a split plan for a large tile fills the GPU with its (fewer) tiles
    splits, chunk = cuda_conv.split_plan(64 * 56 * 56, 64, 576, 132, "w")
    assert splits == 88 and (splits - 1) * chunk < 64 * 56 * 56 <= splits * chunk
    assert cuda_conv.split_plan(128 * 28 * 28, 128, 1152, 132, "l")[0] == 29  # 261 blocks: two waves


def test_benchmark_module_imports_without_a_gpu():
    from pydl.bench import cuda_conv as bench
    assert [c[1:6] for c in bench.CASES] == [(64, 64, 56, 56, 64), (128, 128, 28, 28, 128), (128, 32, 14, 14, 64),
                                             (64, 64, 56, 56, 64)]
    assert [c[6] for c in bench.CASES] == [False, False, False, True]
    assert set(bench.FORCED) == {"implicit_gemm", "winograd_f2", "winograd_f4"}
    text = bench.format_rows([dict(name="conv3x3 forward", shape="N1 C1 3x3 K1", algo="winograd_f4", pydl_ms=1.0,
                                   pydl_tflops=0.1)])
    assert "conv3x3 forward" in text and "1.000" in text and "winograd_f4" in text


def test_kernels_run_on_cpu_emulator(tmp_path):
    """Every conv_* kernel of kernels/conv.cu, compiled by the host C++ compiler with CUDA threads as
    fibers (tests/conv_cu_on_cpu.cpp), against float64 loops: strides 1-3, dilation 2, asymmetric
    padding, C = 1, K = 1, several tiles, split weight gradients, relu, bias, N = 0; every block tile."""
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
    assert "22 cases, 0 bad elements" in res.stdout
