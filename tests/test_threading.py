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


_LIMITED = textwrap.dedent("""
    import resource, warnings
    import numpy as np, pydl
    a = np.ones((600, 600), np.float32)
    pydl.matmul(a, a)
    # room for the arrays below and about 40 more 8 MiB thread stacks, not for 1000
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (320 << 20), resource.RLIM_INFINITY))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = pydl.set_num_threads(1000)
    assert 1 <= got < 1000 and pydl.get_num_threads() == got, got
    assert any("could be created" in str(w.message) for w in caught), caught
    c = pydl.matmul(a, a)
    assert np.allclose(c, 600.0)
    print("limited-ok", got)
""")


def test_thread_creation_failure_falls_back_with_a_warning():
    """Under a memory limit that leaves no room for 1000 thread stacks, set_num_threads(1000)
    sets fewer and warns; the next kernel runs (libgomp would otherwise exit the process)."""
    out = subprocess.run([sys.executable, "-c", _LIMITED], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "limited-ok" in out.stdout, (out.returncode, out.stderr[-2000:])


def test_set_num_threads_rejects_out_of_range_counts():
    with pytest.raises(ValueError, match="set_num_threads"):
        pydl.set_num_threads(2**63)
    with pytest.raises(ValueError, match="set_num_threads"):
        pydl.set_num_threads(0)
    assert pydl.set_num_threads(pydl.get_num_threads()) == pydl.get_num_threads()
