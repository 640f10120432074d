import importlib.util
import os

import numpy as np
import pytest

import pydl

# PYDL_CUDA_EMU=1: `import cupy` gets the CPU emulator in tests/cuda_emu (kernels compiled with g++,
# CUDA threads as fibers), so the GPU tests run without a GPU. It goes first on sys.path before any
# test module imports cupy, and on PYTHONPATH for the subprocesses tests start.
_CUDA_EMU = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emu")
if os.environ.get("PYDL_CUDA_EMU") == "1":
    import sys
    sys.path.insert(0, _CUDA_EMU)
    os.environ["PYTHONPATH"] = os.pathsep.join([_CUDA_EMU] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

# Python subprocesses the tests start (`python -c "import pydl ..."`) import the pydl under test:
# its parent directory goes first on their path, and their current directory is kept off it
# (PYTHONSAFEPATH), since in a source checkout that holds a pydl/ without the built extension.
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pydl.__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join([_PKG_PARENT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                             if p and p != _PKG_PARENT])
os.environ["PYTHONSAFEPATH"] = "1"

# Looked up, not imported: a process that has torch loaded forks about 5x slower, and
# tests/test_fuzz.py forks a child per case. Tests that compare with torch import it themselves.
HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = pydl.get_num_threads()
    pydl.set_num_threads(request.param)
    yield request.param
    pydl.set_num_threads(old)
