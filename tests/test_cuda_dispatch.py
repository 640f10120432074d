"""The device seam, checked without a GPU: dispatch, mixing devices, errors when CUDA is missing,
and that `import pydl` never imports CuPy."""
import subprocess
import sys

import numpy as np
import pytest

import pydl
from pydl.ops import device


class _FakeCupyArray:
    """Stands in for a cupy.ndarray in dispatch: the seam decides by the class's module only."""
    __module__ = "cupy"

    def __init__(self, shape=(2, 2), dtype=np.float32):
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self.size = int(np.prod(shape))


def test_dispatch_picks_the_device_of_the_arrays():
    a = np.ones((2, 2), np.float32)
    assert device.dispatch("op", a=a, b=a, out=None) == "cpu"
    assert device.dispatch("op") == "cpu"
    g = _FakeCupyArray()
    assert device.is_cuda(g) and not device.is_cuda(a)
    assert device.dispatch("op", a=g, b=g) == "cuda"


def test_mixing_devices_names_the_arguments_and_their_devices():
    a = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"\[matmul\].*a on cpu, b on cuda"):
        device.dispatch("matmul", a=a, b=_FakeCupyArray())


@pytest.mark.parametrize("op", ["matmul", "activation", "dense_forward", "sgd_update"])
def test_public_ops_refuse_a_mix_before_any_kernel(op):
    a = np.ones((2, 2), np.float32)
    g = _FakeCupyArray()
    fn = {"matmul": lambda: pydl.ops.matmul(a, g),
          "activation": lambda: pydl.ops.activation_backward(a, g, a, "relu"),
          "dense_forward": lambda: pydl.ops.dense_forward(a, g),
          "sgd_update": lambda: pydl.ops.sgd_update(a, g, 0.1)}[op]
    with pytest.raises((ValueError, TypeError), match="devices|cupy|cuda"):
        fn()


def test_check_device():
    assert device.check_device("cpu") == "cpu"
    assert device.check_device("CPU") == "cpu"
    for bad in ("tpu", 3, None, "metal"):
        with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
            device.check_device(bad)


@pytest.mark.skipif(pydl.cuda.is_available(), reason="checks the error raised where CUDA is missing")
def test_cuda_missing_is_a_clear_error():
    model = pydl.Sequential([pydl.layers.Dense(3, input_shape=(4,))])
    model.compile(loss="mse", optimizer="sgd")
    with pytest.raises(pydl.cuda.CudaUnavailableError, match="CUDA is not available: .*(CuPy|driver|GPU)"):
        model.to("cuda")
    assert model.device == "cpu"
    assert model.to("cpu") is model
    info = pydl.cuda.device_info()
    assert info["available"] is False and info["reason"]
    assert pydl.config()["cuda"].startswith("unavailable (")


def test_import_pydl_does_not_import_cupy():
    code = "import sys, pydl; pydl.Sequential; pydl.cuda.kernel_files(); print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_kernel_sources_ship_with_the_package():
    files = pydl.cuda.kernel_files()
    names = {f.rsplit("/", 1)[-1] for f in files}
    assert "gemm.cu" in names, names
    for f in files:
        src = open(f, encoding="utf-8").read()
        assert "#include" not in src, f"{f}: NVRTC sources must not include headers"
        assert 'extern "C"' in src and "__global__" in src, f"{f} exports no kernel"


def test_device_helpers_on_the_cpu():
    x = device.as_input([[1, 2]], np.float32, "T")
    assert x.dtype == np.float32 and x.flags.c_contiguous
    with pytest.raises(TypeError, match=r"\[T\] input must be a numeric"):
        device.as_input(np.array(["a"]), np.float32, "T")
    assert device.to_device(x, "cpu") is x and device.to_host(x) is x
    assert device.zeros((2,), np.float32).sum() == 0 and device.namespace("cpu") is np
    assert device.float_dtype(np.zeros(1, np.int8)) == np.float32
    assert device.float_dtype(np.zeros(1)) == np.float64
