"""What of the CUDA pooling can be checked without a GPU: device dispatch and mismatch errors in
pydl.ops.pool, the launch-size helpers, that every kernel the wrapper names exists in
kernels/pool.cu, and max_pool2d_backward's optional geometry on the CPU."""
from __future__ import annotations

import re

import numpy as np
import pytest

import pydl
from pydl.cuda import pool as cuda_pool
from pydl.ops import pool as P


def _fake_cupy(shape=(1, 1, 4, 4), dtype=np.float32):
    cls = type("ndarray", (), {"__module__": "cupy", "shape": shape, "ndim": len(shape), "dtype": np.dtype(dtype)})
    return cls()


def test_mixed_devices_raise_naming_both():
    x = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"\[max_pool2d\].*x on cpu, out on cuda"):
        P.max_pool2d(x, 2, out=_fake_cupy((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"\[avg_pool2d\].*x on cuda, out on cpu"):
        P.avg_pool2d(_fake_cupy(), 2, out=np.empty((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\[max_pool2d_backward\].*dy on cpu, argmax on cuda"):
        P.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), _fake_cupy((1, 1, 2, 2), np.int32), (1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[max_pool2d_backward\].*dy on cuda, argmax on cpu"):
        P.max_pool2d_backward(_fake_cupy((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), np.int32), (1, 1, 4, 4))
    # checked before anything else: a bad pool_size does not win
    with pytest.raises(ValueError, match="different devices"):
        P.max_pool2d([[1.0]], "bad", out=_fake_cupy())


def test_cpu_path_unchanged_for_numpy():
    x = np.arange(2 * 3 * 6 * 5, dtype=np.float32).reshape(2, 3, 6, 5) % 7
    y, am = P.max_pool2d(x, 2)
    assert type(y) is np.ndarray and am.dtype == np.int32
    dy = np.ones_like(y)
    np.testing.assert_array_equal(P.max_pool2d_backward(dy, am, x.shape, 2), P.max_pool2d_backward(dy, am, x.shape))
    assert type(P.global_avg_pool2d(x)) is np.ndarray


def test_backward_geometry_checked_on_cpu():
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 6)).astype(np.float32)
    y, am = P.max_pool2d(x, 3, 2, 1)
    dy = np.ones_like(y)
    np.testing.assert_array_equal(P.max_pool2d_backward(dy, am, x.shape, 3, 2, 1), P.max_pool2d_backward(dy, am, x.shape))
    with pytest.raises(ValueError, match=r"dy has shape \(1, 2, 4, 3\), expected \(1, 2, 3, 2\)"):
        P.max_pool2d_backward(dy, am, x.shape, 3, 2, 0)
    with pytest.raises(ValueError, match="padding .* must be smaller than pool_size"):
        P.max_pool2d_backward(dy, am, x.shape, 2, 2, 2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        P.max_pool2d_backward(dy, am, x.shape, 9)
    for flag in (1, "no", None):
        with pytest.raises(TypeError, match=r"check_argmax must be True or False"):
            P.max_pool2d_backward(dy, am, x.shape, 3, 2, 1, check_argmax=flag)
    np.testing.assert_array_equal(P.max_pool2d_backward(dy, am, x.shape, 3, 2, 1, check_argmax=np.bool_(False)),
                                  P.max_pool2d_backward(dy, am, x.shape))


def test_grid_sizes():
    assert cuda_pool.grid(0) == 1 and cuda_pool.grid(1) == 1 and cuda_pool.grid(256) == 1 and cuda_pool.grid(257) == 2
    assert cuda_pool.grid(10**12) == cuda_pool.MAX_BLOCKS
    assert cuda_pool.gap_launch(1, 49) == ("gap_forward_warp", 1)
    assert cuda_pool.gap_launch(17, 1024) == ("gap_forward_warp", 3)  # 8 warps (planes) per block
    assert cuda_pool.gap_launch(4096, 12544) == ("gap_forward_block", 4096)
    assert cuda_pool.gap_launch(10**9, 2000) == ("gap_forward_block", cuda_pool.MAX_BLOCKS)
    assert cuda_pool.max_kernel_name(2, 2, True) == "maxpool2d_fwd_k2_argmax"
    assert cuda_pool.max_kernel_name(3, 3, False) == "maxpool2d_fwd_k3"
    assert cuda_pool.max_kernel_name(2, 3, True) == "maxpool2d_fwd_argmax"


def test_every_wrapper_kernel_exists_in_both_dtypes():
    src = pydl.cuda.source("pool")
    names = set(re.findall(r'extern "C" __global__ void __launch_bounds__\(\w+\)\s+(\w+)\(', src))
    # the forward max entries come from a macro: expand its NAME##_argmax_##SUF / NAME##_##SUF
    for base, suf in re.findall(r"PYDL_MAXPOOL_FWD\((\w+), \d, \d, \w+, (\w+)\)", src):
        names |= {f"{base}_argmax_{suf}", f"{base}_{suf}"}
    wanted = {cuda_pool.max_kernel_name(r, s, a) for r, s in [(2, 2), (3, 3), (2, 3)] for a in (True, False)}
    for geo, suf in re.findall(r"PYDL_MAXPOOL_PAIRS\((\w+), \w+, (\w+)\)", src):  # two outputs per thread
        names |= {f"maxpool2d_fwd_{geo}_argmax_{suf}", f"maxpool2d_fwd_{geo}_{suf}", f"maxpool2d_bwd_{geo}_{suf}"}
    wanted |= {"avgpool2d_fwd", "maxpool2d_bwd", "avgpool2d_bwd", "maxpool2d_scatter", "gap_forward_warp",
               "gap_forward_block", "gap_backward", "gap_backward4", "maxpool2d_fwd_22v", "maxpool2d_fwd_22v_argmax",
               "maxpool2d_bwd_22v", "maxpool2d_fwd_32v", "maxpool2d_fwd_32v_argmax", "maxpool2d_bwd_32v"}
    for base in wanted:
        for suf in ("f32", "f64"):
            assert f"{base}_{suf}" in names, base


def test_pooling_layers_declare_cuda_support():
    L = pydl.layers
    for cls in (L.MaxPool2D, L.AvgPool2D, L.GlobalAveragePooling2D, L.GlobalMaxPooling2D):
        assert cls.supports_cuda
    assert not L.UpSampling2D.supports_cuda and not L.GlobalAveragePooling1D.supports_cuda


def test_cuda_geometry_rejects_32bit_overflow():
    with pytest.raises(ValueError, match="too large for the CUDA kernels"):
        P._cuda_geom((1, 1, 2**31 - 10, 1), (20, 1), (1, 1), (10, 9, 0, 0), (1, 1), "max_pool2d")
    assert P._cuda_geom((1, 1, 5, 6), (2, 3), (1, 2), (1, 0, 2, 1), (5, 4), "op") == (5, 6, 5, 4, 2, 3, 1, 2, 1, 2)
