"""CPU-side checks of the CUDA nn wrappers (no GPU needed): kind numbering and kernel entry points."""
import os
import re

import pydl.cuda
from pydl.cuda import nn as cuda_nn
from pydl.ops import nn


def test_activation_codes_follow_ops_order():
    assert tuple(cuda_nn.ACTIVATION_CODES) == nn.ACTIVATIONS
    assert list(cuda_nn.ACTIVATION_CODES.values()) == list(range(len(nn.ACTIVATIONS)))
    assert cuda_nn.NEEDS_INPUT == nn.NEEDS_INPUT


def test_kernel_sources_export_what_the_wrappers_launch():
    wanted = {"activations": ("act_forward", "act_backward", "bias_act", "softmax_forward", "softmax_backward"),
              "dense": ("column_sums",), "dropout": ("dropout_forward", "dropout_backward"),
              "batchnorm": ("batchnorm_forward", "batchnorm_backward")}
    for family, names in wanted.items():
        path = os.path.join(pydl.cuda.KERNEL_DIR, f"{family}.cu")
        src = pydl.cuda.source(family)
        for name in names:
            # written out per dtype, or generated per dtype by a macro
            assert (f" {name}_f32(" in src and f" {name}_f64(" in src) or f"{name}_##SUF(" in src, (path, name)
        if "##SUF" in src:
            assert re.search(r"\(float, f32\)", src) and re.search(r"\(double, f64\)", src)


def test_importing_the_wrappers_does_not_import_cupy():
    import subprocess
    import sys
    code = "import sys, pydl.ops.nn, pydl.cuda.nn; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- host dispatch and the kernels' thread mapping, emulated on the CPU --------------------------
# The kernels of kernels/activations.cu are re-run here as Python loops over (block, thread) with the
# grid the wrappers choose: every output element must be written exactly once, by the right formula.

import numpy as np
import pytest

_V = {"f": 4, "d": 2}


class _Ptr:
    def __init__(self, ptr):
        self.ptr = ptr


class _Flags:
    c_contiguous = True


class FakeArray:
    """What the wrappers read from a CuPy array: shape, size, ndim, dtype, flags, data.ptr; numpy beneath."""
    flags = _Flags()

    def __init__(self, a, offset_bytes=0):
        self.a = a
        self.shape, self.size, self.ndim, self.dtype = a.shape, a.size, a.ndim, a.dtype
        self.data = _Ptr(0x7f0000000000 + offset_bytes)
        self.writes = np.zeros(a.size, dtype=np.int64)


class _FakeRuntime:
    @staticmethod
    def getDevice():
        return 0


class FakeCupy:
    class cuda:
        runtime = _FakeRuntime

    @staticmethod
    def empty_like(x):
        return FakeArray(np.full(x.shape, np.nan, dtype=x.dtype))


def _threads(grid, block):
    for b in range(grid):
        for t in range(block):
            yield b, t


def _emulate(name, grid, block, args):
    """Run one launch of kernels/activations.cu in Python; records which elements each launch writes."""
    base, _, suf = name.rpartition("_")
    if base in ("act_forward_vec", "act_forward", "act_backward_vec", "act_backward"):
        fwd = base.startswith("act_forward")
        out, n, kind, alpha = args[0], int(args[-3]), int(args[-2]), float(args[-1])
        src = args[1:-3]
        flat_out = out.a.reshape(-1)
        idx = []
        total = grid * block
        if base.endswith("_vec"):
            v = _V[out.dtype.char]
            nv = n // v
            for b, t in _threads(grid, block):
                t0 = b * block + t
                idx.extend(e for i in range(t0, nv, total) for e in range(i * v, i * v + v))
                if nv * v + t0 < n:
                    idx.append(nv * v + t0)
        else:
            for b, t in _threads(grid, block):
                idx.extend(range(b * block + t, n, total))
        idx = np.array(idx, dtype=np.int64)
        np.add.at(out.writes, idx, 1)
        from pydl.ops import nn
        k = nn.ACTIVATIONS[kind]
        a = alpha if k in ("leaky_relu", "elu") else None
        if fwd:
            want = nn.activation(src[0].a, k, alpha=a).reshape(-1)
        else:
            want = nn.activation_backward(src[0].a, src[1].a, src[2].a, k, alpha=a).reshape(-1)
        flat_out[idx] = want[idx]
        return
    if base.startswith("softmax_warp") or base.startswith("softmax_block"):
        g = 32 if base.startswith("softmax_warp") else 256
        vec = base.startswith("softmax_warpv")  # float4 per lane step: lane holds float4s lane + 32 k
        kk = int(base[len("softmax_warpv" if vec else "softmax_warp"):] if g == 32 else base[len("softmax_block"):])
        y, x, r, d, log_form = args[0], args[1], int(args[2]), int(args[3]), int(args[4])
        assert block == 256 and kk * g * (4 if vec else 1) >= d, (name, d)
        assert not vec or (d % 4 == 0 and x.dtype == np.float32), (name, d, x.dtype)
        rows_per_block = 256 // g
        xs, ys = x.a.reshape(r, d), y.a.reshape(r, d)
        for b, t in _threads(grid, block):
            lane = t % 32 if g == 32 else t
            first = b * rows_per_block + (t // 32 if g == 32 else 0)
            for row in range(first, r, grid * rows_per_block):
                if vec:
                    cols = [4 * (lane + 32 * k) + c for k in range(kk) if lane + 32 * k < d // 4 for c in range(4)]
                else:
                    cols = [lane + k * g for k in range(kk) if lane + k * g < d]
                np.add.at(y.writes, [row * d + c for c in cols], 1)
        # the arithmetic, in the kernel's order of types: max, e = exp(x - m) in T, sum in double
        m = np.max(np.where(np.isnan(xs), -np.inf, xs), axis=1, keepdims=True).astype(x.dtype)
        with np.errstate(invalid="ignore"):
            e = np.exp(xs - m).astype(x.dtype)
            s = e.astype(np.float64).sum(axis=1, keepdims=True)
            if log_form:
                ys[...] = (xs - m) - np.log(s).astype(x.dtype)
            else:
                ys[...] = e * (1.0 / s).astype(x.dtype)
        return
    raise AssertionError(f"no emulation for {name}")


@pytest.fixture
def fake_cuda(monkeypatch):
    from pydl.ops import nn as ops_nn
    launches = []

    def function(family, name):
        assert family == "activations"

        def launch(grid, block, args):
            assert len(grid) == 1 and len(block) == 1 and 1 <= grid[0] <= 65535 * 32
            launches.append(name)
            _emulate(name, grid[0], block[0], args)
        return launch

    monkeypatch.setattr(cuda_nn, "_cp", FakeCupy)
    monkeypatch.setattr(cuda_nn, "_act_fns", {})
    monkeypatch.setattr(cuda_nn, "function", function)
    monkeypatch.setattr(ops_nn, "_cuda_array_type", FakeArray)
    monkeypatch.setattr(ops_nn, "_cuda_nn", cuda_nn)
    return launches


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("n", (1, 3, 4, 5, 7, 1023, 4097))
def test_elementwise_launch_writes_every_element_once(fake_cuda, n, dtype):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 3).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    for offset in (0, 4):  # 16-byte aligned: the vector kernel; x[1:]-like offset: the scalar one
        for kind in ("relu", "gelu", "leaky_relu", "linear"):
            a = 0.2 if kind == "leaky_relu" else None
            fx = FakeArray(x, offset)
            fy = nn.activation(fx, kind, alpha=a)
            assert fake_cuda[-1] == ("act_forward_vec_" if offset == 0 else "act_forward_") + \
                ("f32" if dtype == np.float32 else "f64")
            assert np.all(fy.writes == 1)
            np.testing.assert_array_equal(fy.a, nn.activation(x, kind, alpha=a))
            fdx = nn.activation_backward(FakeArray(dy, offset), FakeArray(x, offset), FakeArray(fy.a), kind, alpha=a)
            assert fake_cuda[-1].startswith("act_backward_vec_" if offset == 0 else "act_backward_")
            assert np.all(fdx.writes == 1)
            np.testing.assert_array_equal(fdx.a, nn.activation_backward(dy, x, fy.a, kind, alpha=a))


def test_vector_grid_stride_with_a_capped_grid(monkeypatch):
    # a grid smaller than n / (4 * threads): the grid-stride loop and the tail still cover everything
    monkeypatch.setattr(cuda_nn, "_MAX_GRID", 2)
    for n in (2049, 4096 * 2 + 3):
        ch = "f"
        grid = cuda_nn._vec_grid(n, ch)
        assert grid == 2
        out = FakeArray(np.zeros(n, np.float32))
        x = FakeArray(np.ones(n, np.float32))
        _emulate("act_forward_vec_f32", grid, cuda_nn._THREADS, (out, x, np.int64(n), np.int32(1), np.float32(0)))
        assert np.all(out.writes == 1)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("d", (1, 7, 32, 33, 1024, 1025, 2048, 2049, 4096))
def test_softmax_rows_in_registers_cover_every_element_once(fake_cuda, d, dtype):
    for r in (1, 3, 9):
        x = (np.random.default_rng(d + r).standard_normal((r, d)) * 30).astype(dtype)
        if d > 3:
            x[0, 2] = np.nan
        if r > 1:
            x[1, :] = -np.inf
        for kind in ("softmax", "log_softmax"):
            fy = nn.activation(FakeArray(x), kind)
            want_entry = "softmax_warp" if d <= 1024 else "softmax_block"
            assert fake_cuda[-1].startswith(want_entry)
            assert np.all(fy.writes == 1)
            want = nn.activation(x, kind)
            np.testing.assert_allclose(fy.a, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-6 if dtype == np.float32 else 1e-13)
            assert np.array_equal(np.isnan(fy.a), np.isnan(want))


def test_softmax_entry_choice():
    assert cuda_nn._softmax_entry(5, 1) == ("softmax_warp1", 1)
    assert cuda_nn._softmax_entry(9, 33) == ("softmax_warp2", 2)
    assert cuda_nn._softmax_entry(16384, 1024) == ("softmax_warp32", 2048)
    assert cuda_nn._softmax_entry(3, 1025) == ("softmax_block8", 3)
    assert cuda_nn._softmax_entry(3, 4096) == ("softmax_block16", 3)
    assert cuda_nn._softmax_entry(3, 5000) == ("softmax_forward", 3)
    for d in range(1, 4097):
        base, _ = cuda_nn._softmax_entry(1, d)
        k = int(base.lstrip("softmax_warpblock"))
        g = 32 if "warp" in base else 256
        assert k * g >= d and (k == 1 or (k // 2) * g < d or "block8" in base)
    for d in range(4, 1025, 4):  # float4 rows: the fewest float4s per lane (1, 2, 4, 8) that cover d
        base, g = cuda_nn._softmax_vec_entry(17, d)
        k4 = int(base[len("softmax_warpv"):])
        assert k4 in (1, 2, 4, 8) and 128 * k4 >= d and (k4 == 1 or 64 * k4 < d) and g == 3
    src = pydl.cuda.source("activations")
    for k in (1, 2, 4, 8):
        assert f"PYDL_SOFTMAX_VEC({k})" in src
    for k in (1, 2, 4, 8, 16, 32):
        assert f"PYDL_SOFTMAX_REGS(T, SUF, warp, 32, {k})" in src
    for k in (8, 16):
        assert f"PYDL_SOFTMAX_REGS(T, SUF, block, 256, {k})" in src


def test_fast_path_rejects_what_the_general_path_rejects(fake_cuda):
    x = FakeArray(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="unknown activation"):
        nn.activation(x, ["relu"])
    with pytest.raises(ValueError, match="alpha is only used"):
        nn.activation(x, "relu", alpha=0.1)
    with pytest.raises(ValueError, match="alpha for leaky_relu"):
        nn.activation(x, "leaky_relu", alpha=-1.0)
