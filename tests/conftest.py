import importlib.util

import numpy as np
import pytest

import pydl

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
