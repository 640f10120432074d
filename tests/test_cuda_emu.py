"""Self-tests of the CuPy emulator in tests/cuda_emu (needs g++ only, no GPU, no PYDL_CUDA_EMU).

The emulated package is loaded under the name `cupy_emu`, so a real CuPy (if installed) is left
alone. Each device feature runs in a small kernel written here and is compared with NumPy.
"""
import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs g++")

_PKG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emu", "cupy")


def _load():
    if "cupy_emu" in sys.modules:
        return sys.modules["cupy_emu"]
    spec = importlib.util.spec_from_file_location("cupy_emu", os.path.join(_PKG, "__init__.py"),
                                                  submodule_search_locations=[_PKG])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cupy_emu"] = mod
    spec.loader.exec_module(mod)
    return mod


cp = _load()
LaunchError = cp.cuda.CUDADriverError

SRC = r"""
#define N_RED 256
extern "C" __global__ void __launch_bounds__(N_RED) block_sum(const float* __restrict__ x, float* out, long long n) {
  __shared__ float s[N_RED];
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  s[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if ((int)threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

template <class T>
__device__ __forceinline__ void shfl_body(const T* x, T* out, int kind, int arg, int width) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const T v = x[t];
  T r;
  switch (kind) {
    case 0: r = __shfl_sync(0xffffffffu, v, arg, width); break;
    case 1: r = __shfl_up_sync(0xffffffffu, v, arg, width); break;
    case 2: r = __shfl_down_sync(0xffffffffu, v, arg, width); break;
    default: r = __shfl_xor_sync(0xffffffffu, v, arg, width); break;
  }
  out[t] = r;
}
extern "C" {
__global__ void shfl_f32(const float* x, float* out, int kind, int arg, int width) { shfl_body(x, out, kind, arg, width); }
__global__ void shfl_f64(const double* x, double* out, int kind, int arg, int width) { shfl_body(x, out, kind, arg, width); }
__global__ void shfl_i32(const int* x, int* out, int kind, int arg, int width) { shfl_body(x, out, kind, arg, width); }
__global__ void shfl_u32(const unsigned int* x, unsigned int* out, int kind, int arg, int width) { shfl_body(x, out, kind, arg, width); }
__global__ void shfl_i64(const long long* x, long long* out, int kind, int arg, int width) { shfl_body(x, out, kind, arg, width); }
}

extern "C" __global__ void votes(const int* x, unsigned int* ballot, int* any, int* all) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int p = x[t] > 0;
  ballot[t] = __ballot_sync(0xffffffffu, p);
  any[t] = __any_sync(0xffffffffu, p);
  all[t] = __all_sync(0xffffffffu, p);
  __syncwarp();
}

extern "C" __global__ void atomics(const int* x, long long n, int* hist, int* imax, float* fsum, double* dsum,
                                   unsigned long long* usum, unsigned int* u32sum, int* cas_count, int* exch) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const int v = x[i];
    atomicAdd(&hist[v & 7], 1);
    atomicMax(imax, v);
    atomicAdd(fsum, 1.0f);
    atomicAdd(dsum, (double)v);
    atomicAdd(usum, (unsigned long long)v);
    atomicAdd(u32sum, 2u);
    int old = *cas_count, seen;
    while ((seen = atomicCAS(cas_count, old, old + 1)) != old) old = seen;
    atomicExch(exch, 7);
  }
}

// Every thread writes its coordinates: out[((block linear) * threads + thread linear) * 6 + k].
extern "C" __global__ void coords(int* out) {
  const long long b = ((long long)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  int* o = out + (b * blockDim.x * blockDim.y * blockDim.z + t) * 6;
  o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
  o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
}

// Warps are 32 consecutive linear thread ids, also in 2-D blocks: each lane gets lane 0's id.
extern "C" __global__ void warp_leader_2d(int* out) {
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
  out[t] = __shfl_sync(0xffffffffu, t, 0);
}

extern "C" __global__ void copy4(const float* __restrict__ x, float* y, long long n4) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n4) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(x) + i);
    reinterpret_cast<float4*>(y)[i] = make_float4(v.x * 2.0f, v.y * 2.0f, fmaxf(v.z, 0.0f), rsqrtf(v.w));
  }
}

extern "C" __global__ void write_past_end(float* y, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = 1.0f;
}

extern "C" __global__ void shift_read(const double* x, double* y, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i + 1];
}

// Block 0 fills the shared array, the others read it unwritten (uninitialised on a GPU).
extern "C" __global__ void uninit_shared(float* y) {
  __shared__ float s[32];  // one declaration, read by all blocks
  if (blockIdx.x == 0) s[threadIdx.x] = 1.0f;
  __syncthreads();
  y[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];
}

extern "C" __global__ void wild_write(float* y, long long offset, int divisor) {
  y[offset] = 1.0f / (float)((threadIdx.x + 1) / divisor);
}

extern "C" __global__ void divergent_barrier(float* y) {
  if (threadIdx.x < 5) return;
  __syncthreads();
  y[threadIdx.x] = 1.0f;
}

extern "C" __global__ void half_warp_shuffle(float* y) {
  y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, y[threadIdx.x], 16);
}

extern "C" __global__ void warp_vs_block_deadlock(float* y) {
  if (threadIdx.x < 16) y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, y[threadIdx.x], 1);
  else __syncthreads();
}

// Dynamic shared memory: reverse each block's slice of x through it.
extern "C" __global__ void reverse_dyn(const double* x, double* y, int past_end) {
  extern __shared__ __align__(16) double buf[];
  const int t = threadIdx.x, n = blockDim.x;
  buf[t] = x[blockIdx.x * n + t];
  __syncthreads();
  y[blockIdx.x * n + t] = buf[n - 1 - t];
  if (past_end && t == 0) buf[n] = 0.0;
}

// Missing __syncthreads between the shared write and the neighbour's read: a race on a GPU.
extern "C" __global__ void racy_neighbour(const float* x, float* y) {
  __shared__ float s[64];
  s[threadIdx.x] = x[threadIdx.x];
  y[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}

extern "C" __global__ void scalars(double* out, long long a, int b, unsigned long long c, float d, double e) {
  out[0] = (double)a; out[1] = b; out[2] = (double)c; out[3] = d; out[4] = e;
}
"""


@pytest.fixture(scope="module")
def mod():
    return cp.RawModule(code=SRC, options=("-std=c++17",))


def test_block_barrier_shared_memory_reduction(mod):
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    nb = (x.size + 255) // 256
    out = cp.empty(nb, dtype=cp.float32)
    mod.get_function("block_sum")((nb,), (256,), (cp.asarray(x), out, np.int64(x.size)))
    ref = np.pad(x.astype(np.float64), (0, nb * 256 - x.size)).reshape(nb, 256).sum(1)
    np.testing.assert_allclose(out.get(), ref, rtol=1e-5, atol=1e-5)


def _shfl_ref(x, kind, arg, width):
    out = np.empty_like(x)
    for t in range(x.size):
        lane = t % 32
        base = t - lane + (lane // width) * width
        rel = lane % width
        if kind == 0:
            src = base + arg % width
        elif kind == 1:
            src = t - arg if rel >= arg else t
        elif kind == 2:
            src = t + arg if rel + arg < width else t
        else:
            s = lane ^ arg
            src = t - lane + s if (lane // width) * width <= s < (lane // width) * width + width else t
        out[t] = x[src]
    return out


@pytest.mark.parametrize("dtype,name", [(np.float32, "shfl_f32"), (np.float64, "shfl_f64"), (np.int32, "shfl_i32"),
                                        (np.uint32, "shfl_u32"), (np.int64, "shfl_i64")])
def test_shuffles_match_numpy(mod, dtype, name):
    x = (np.arange(128) * 3 + 1).astype(dtype)
    fn = mod.get_function(name)
    for kind in range(4):
        for width in (32, 16, 8, 2):
            for arg in (0, 1, 3, 5) if kind != 3 else (1, 2, 4, 16):
                out = cp.empty(x.shape, dtype=dtype)
                fn((2,), (64,), (cp.asarray(x), out, np.int32(kind), np.int32(arg), np.int32(width)))
                np.testing.assert_array_equal(out.get(), _shfl_ref(x, kind, arg, width),
                                              err_msg=f"kind {kind} arg {arg} width {width}")


def test_votes(mod):
    x = np.zeros(96, np.int32)
    x[3] = x[40] = 1
    x[64:] = 1
    ballot, anyv, allv = cp.empty(96, dtype=cp.uint32), cp.empty(96, dtype=cp.int32), cp.empty(96, dtype=cp.int32)
    mod.get_function("votes")((1,), (96,), (cp.asarray(x), ballot, anyv, allv))
    want = [1 << 3, 1 << 8, 0xFFFFFFFF]
    np.testing.assert_array_equal(ballot.get(), np.repeat(np.array(want, np.uint32), 32))
    np.testing.assert_array_equal(anyv.get(), np.repeat([1, 1, 1], 32))
    np.testing.assert_array_equal(allv.get(), np.repeat([0, 0, 1], 32))


def test_atomics(mod):
    x = np.random.default_rng(1).integers(0, 1000, 5000).astype(np.int32)
    hist, imax = cp.zeros(8, dtype=cp.int32), cp.full((1,), -1, dtype=cp.int32)
    fsum, dsum = cp.zeros(1, dtype=cp.float32), cp.zeros(1, dtype=cp.float64)
    usum, u32sum = cp.zeros(1, dtype=cp.uint64), cp.zeros(1, dtype=cp.uint32)
    cas, exch = cp.zeros(1, dtype=cp.int32), cp.zeros(1, dtype=cp.int32)
    mod.get_function("atomics")((7,), (128,), (cp.asarray(x), np.int64(x.size), hist, imax, fsum, dsum, usum, u32sum,
                                               cas, exch))
    np.testing.assert_array_equal(hist.get(), np.bincount(x & 7, minlength=8))
    assert imax.get()[0] == x.max() and fsum.get()[0] == x.size and dsum.get()[0] == x.sum()
    assert usum.get()[0] == x.sum() and u32sum.get()[0] == 2 * x.size
    assert cas.get()[0] == x.size and exch.get()[0] == 7


@pytest.mark.parametrize("grid,block", [((3,), (5,)), ((2, 3), (4, 3)), ((2, 2, 3), (3, 2, 4)), ((1, 1, 2), (1, 1, 64))])
def test_2d_3d_blocks_and_grids(mod, grid, block):
    g = tuple(grid) + (1,) * (3 - len(grid))
    b = tuple(block) + (1,) * (3 - len(block))
    nthreads = int(np.prod(g) * np.prod(b))
    out = cp.empty(nthreads * 6, dtype=cp.int32)
    mod.get_function("coords")(grid, block, (out,))
    bz, by, bx, tz, ty, tx = np.meshgrid(*[np.arange(n) for n in (g[2], g[1], g[0], b[2], b[1], b[0])],
                                         indexing="ij")
    ref = np.stack([tx, ty, tz, bx, by, bz], axis=-1).reshape(-1)
    np.testing.assert_array_equal(out.get(), ref)


def test_warps_are_consecutive_linear_ids(mod):
    out = cp.empty(64, dtype=cp.int32)
    mod.get_function("warp_leader_2d")((1,), (16, 4), (out,))
    np.testing.assert_array_equal(out.get(), np.repeat([0, 32], 32))


def test_float4_loads_and_math(mod):
    x = np.random.default_rng(2).uniform(0.5, 2.0, 64).astype(np.float32)
    x[2::4] -= 1.5
    y = cp.empty(64, dtype=cp.float32)
    assert cp.asarray(x).data.ptr % 256 == 0
    mod.get_function("copy4")((1,), (32,), (cp.asarray(x), y, np.int64(16)))
    v = x.reshape(16, 4)
    ref = np.stack([v[:, 0] * 2, v[:, 1] * 2, np.maximum(v[:, 2], 0), 1 / np.sqrt(v[:, 3])], 1).reshape(-1)
    np.testing.assert_allclose(y.get(), ref, rtol=1e-6)


def test_out_of_bounds_write_is_caught(mod):
    y = cp.zeros((3, 5), dtype=cp.float32)
    with pytest.raises(AssertionError, match=r"write_past_end.*\(3, 5\)"):
        mod.get_function("write_past_end")((1,), (32,), (y, np.int64(15)))
    # the guard was restored: the next good launch passes
    mod.get_function("write_past_end")((1,), (32,), (cp.zeros(16, dtype=cp.float32), np.int64(15)))


def test_read_past_the_end_gives_nan(mod):
    """Guard bytes read as NaN, so a kernel reading one element too far produces NaN."""
    x = cp.asarray(np.arange(10, dtype=np.float64))
    y = cp.empty(10, dtype=cp.float64)
    mod.get_function("shift_read")((1,), (32,), (x, y, np.int64(10)))
    got = y.get()
    np.testing.assert_array_equal(got[:9], np.arange(1, 10))
    assert np.isnan(got[9])


def test_shared_memory_starts_each_block_poisoned(mod):
    y = cp.empty(64, dtype=cp.float32)
    for _ in range(2):  # the first launch records the variable, every block after starts with NaN
        mod.get_function("uninit_shared")((2,), (32,), (y,))
    got = y.get()
    assert np.all(got[:32] == 1.0) and np.all(np.isnan(got[32:]))


def test_faults_end_the_launch_with_an_error(mod):
    """A wild pointer or an integer division by zero fails the launch; the process lives on."""
    fn = mod.get_function("wild_write")
    y = cp.zeros(4, dtype=cp.float32)
    # Under AddressSanitizer (tools/sanitize.sh preloads libasan) the write 64 GiB past the array
    # can land in ASan's own shadow mapping and not fault, so only the division fault is checked.
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        with pytest.raises(LaunchError, match=r"illegal memory access in wild_write .*bytes past the end of an "
                                              r"array float32 \(4,\)"):
            fn((1,), (1,), (y, np.int64(1 << 34), np.int32(1)))
    with pytest.raises(LaunchError, match="arithmetic fault"):
        fn((1,), (1,), (y, np.int64(0), np.int32(0)))
    fn((1,), (2,), (y, np.int64(0), np.int32(1)))
    assert y.get()[0] == 1.0


def test_divergent_barrier_is_caught(mod):
    with pytest.raises(LaunchError, match="divergent __syncthreads in divergent_barrier"):
        mod.get_function("divergent_barrier")((1,), (64,), (cp.zeros(64, dtype=cp.float32),))


def test_shuffle_from_missing_lane_and_deadlock_are_caught(mod):
    with pytest.raises(LaunchError, match="reads lane 16, which is not taking part"):
        mod.get_function("half_warp_shuffle")((1,), (16,), (cp.zeros(16, dtype=cp.float32),))
    with pytest.raises(LaunchError, match="deadlock in warp_vs_block_deadlock"):
        mod.get_function("warp_vs_block_deadlock")((1,), (64,), (cp.zeros(64, dtype=cp.float32),))
    # the module still works after failed launches
    test_block_barrier_shared_memory_reduction(mod)


def test_scalar_types_are_strict(mod):
    fn = mod.get_function("scalars")
    out = cp.zeros(5, dtype=cp.float64)
    fn((1,), (1,), (out, np.int64(-3), np.int32(4), np.uint64(2**63 + 2048), np.float32(0.5), np.float64(0.25)))
    np.testing.assert_array_equal(out.get(), [-3, 4, 2.0**63 + 2048, 0.5, 0.25])
    # Python int -> int64 and Python float -> double, as CuPy passes them
    fn((1,), (1,), (out, 7, np.int32(4), 2**63 + 2048, np.float32(0.5), 1.5))
    assert out.get()[0] == 7 and out.get()[4] == 1.5
    bad = [
        ((out, np.int32(1), np.int32(4), np.uint64(1), np.float32(0.5), 0.25), "parameter 1 'a' \\(long long\\)"),
        ((out, 1, 4, np.uint64(1), np.float32(0.5), 0.25), "parameter 2 'b' \\(int\\)"),
        ((out, 1, np.int32(4), 1, np.float32(0.5), 0.25), "parameter 3 'c' \\(unsigned long long\\)"),
        ((out, 1, np.int32(4), np.uint64(1), 0.5, 0.25), "parameter 4 'd' \\(float\\)"),
        ((out, 1, np.int32(4), np.uint64(1), np.float32(0.5), np.float32(0.25)), "parameter 5 'e' \\(double\\)"),
        ((out, True, np.int32(4), np.uint64(1), np.float32(0.5), 0.25), "parameter 1 'a'"),
    ]
    for args, msg in bad:
        with pytest.raises(TypeError, match="kernel scalars: " + msg):
            fn((1,), (1,), args)


def test_pointer_dtype_count_and_launch_limits(mod):
    fn = mod.get_function("write_past_end")
    with pytest.raises(TypeError, match="kernel write_past_end: parameter 0 'y' \\(float\\*\\) needs a float32 array, got float64"):
        fn((1,), (32,), (cp.zeros(40, dtype=cp.float64), np.int64(10)))
    with pytest.raises(TypeError, match="needs a cupy.ndarray, got ndarray"):
        fn((1,), (32,), (np.zeros(40, dtype=np.float32), np.int64(10)))
    with pytest.raises(TypeError, match="non-C-contiguous"):
        fn((1,), (32,), (cp.zeros((8, 8), dtype=cp.float32).T, np.int64(10)))
    with pytest.raises(TypeError, match="takes 2 arguments"):
        fn((1,), (32,), (cp.zeros(40, dtype=cp.float32),))
    with pytest.raises(LaunchError, match="1024"):
        fn((1,), (1025,), (cp.zeros(40, dtype=cp.float32), np.int64(10)))
    with pytest.raises(LaunchError, match="grid"):
        fn((1, 65536), (32,), (cp.zeros(40, dtype=cp.float32), np.int64(10)))
    with pytest.raises(LaunchError, match="below 1"):
        fn((0,), (32,), (cp.zeros(40, dtype=cp.float32), np.int64(10)))
    with pytest.raises(LaunchError, match="named symbol not found"):
        mod.get_function("shfl_body")


def test_ndarray_is_not_numpy():
    a = cp.arange(12, dtype=cp.float32).reshape(3, 4)
    assert type(a).__module__ == "cupy" and type(a).__name__ == "ndarray" and not isinstance(a, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError):
        a + np.ones((3, 4), np.float32)
    s = (a * 2).sum()
    assert isinstance(s, cp.ndarray) and s.ndim == 0 and float(s) == 132.0
    v = a[1:, ::2]
    v[...] = -1
    assert a.get()[1, 0] == -1 and cp.shares_memory(a, v) and not cp.shares_memory(a, a.copy())
    assert cp.empty((0, 3), dtype=cp.float32).data.ptr == 0  # no allocation, as in CuPy
    assert a.data.ptr % 256 == 0 and a.data.ptr == a.data.ptr and a[1].data.ptr == a.data.ptr + 16
    assert a.T.flags.f_contiguous and not a.T.flags.c_contiguous
    assert cp.asnumpy(a.astype(cp.float64)).dtype == np.float64
    assert bool(cp.array_equal(a, a.copy())) and bool(cp.isnan(cp.full((2,), cp.nan)).all())
    np.testing.assert_array_equal(np.exp(cp.zeros(3)).get(), np.ones(3))  # numpy ufunc dispatches to cupy


def test_dynamic_shared_memory(mod):
    fn = mod.get_function("reverse_dyn")
    x = np.arange(96, dtype=np.float64)
    y = cp.empty(96, dtype=cp.float64)
    fn((3,), (32,), (cp.asarray(x), y, np.int32(0)), shared_mem=32 * 8)
    np.testing.assert_array_equal(y.get(), x.reshape(3, 32)[:, ::-1].reshape(-1))
    with pytest.raises(LaunchError, match="wrote past the end of its dynamic shared memory"):
        fn((1,), (32,), (cp.asarray(x), y, np.int32(1)), shared_mem=32 * 8)
    with pytest.raises(LaunchError, match="max_dynamic_shared_size_bytes"):
        fn((1,), (32,), (cp.asarray(x), y, np.int32(0)), shared_mem=64 * 1024)
    fn.max_dynamic_shared_size_bytes = 64 * 1024
    fn((1,), (32,), (cp.asarray(x), y, np.int32(0)), shared_mem=64 * 1024)


def test_missing_barrier_shows_under_the_schedule(mod):
    """Threads resume in varying orders (PYDL_CUDA_EMU_SCHEDULE=alternate by default), so a kernel
    that reads another thread's shared write without __syncthreads gives wrong results."""
    fn = mod.get_function("racy_neighbour")
    wrong = 0
    for i in range(2):
        x = np.arange(64, dtype=np.float32) + 100 * i
        y = cp.empty(64, dtype=cp.float32)
        fn((1,), (64,), (cp.asarray(x), y))
        wrong += not np.array_equal(y.get(), np.roll(x, -1))
    assert wrong >= 1
