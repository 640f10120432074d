"""Threads and processes: fork after threaded kernels, many Python threads at once."""
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import pydl
from pydl import ops

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

_CHILD = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    import numpy as np, pydl
    from pydl import ops
    pydl.set_num_threads(2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 300)).astype(np.float32)
    x = rng.standard_normal((8, 16, 20, 20)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    want_c = pydl.matmul(a, a)                    # the parent starts its worker threads
    want_y = ops.conv2d(x, w, padding=1)

    def work(_):
        c = pydl.matmul(a, a)
        y = ops.conv2d(x, w, padding=1)
        return bool((c == want_c).all() and (y == want_y).all()), pydl.get_num_threads()

    pid = os.fork()
    if pid == 0:
        ok, n = work(0)
        os._exit(0 if ok and n == 1 else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    with mp.get_context("fork").Pool(2) as pool:
        res = pool.map(work, range(4))
    assert all(ok for ok, _ in res), res
    assert pydl.get_num_threads() == 2           # the parent keeps its threads
    print("fork-ok")
""")


def test_fork_after_threaded_kernels_runs_in_child():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "fork-ok" in out.stdout, out.stderr[-2000:]


def test_python_threads_get_serial_results():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((257, 129)).astype(np.float32)
    b = rng.standard_normal((129, 300)).astype(np.float32)
    x = rng.standard_normal((4, 8, 17, 19)).astype(np.float32)
    w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32)
    old = pydl.get_num_threads()
    pydl.set_num_threads(2)
    try:
        want = (pydl.matmul(a, b), ops.conv2d(x, w, padding=1), ops.max_pool2d(x, 2))
        errors = []

        def run():
            try:
                for _ in range(5):
                    got = (pydl.matmul(a, b), ops.conv2d(x, w, padding=1), ops.max_pool2d(x, 2))
                    for g, e in zip(got, want):
                        if not np.array_equal(g, e):
                            errors.append("mismatch")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))

        ts = [threading.Thread(target=run) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in ts)
        assert not errors, errors[:3]
    finally:
        pydl.set_num_threads(old)
