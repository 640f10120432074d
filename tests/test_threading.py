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


_HUGE = textwrap.dedent("""
    import os, resource, warnings
    import pydl
    cap = max(1024, 4 * os.cpu_count())
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (3 << 30), resource.RLIM_INFINITY))
    for n in (10**6, 2**31 - 1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = pydl.set_num_threads(n)
        assert 1 <= got <= cap and pydl.get_num_threads() == got, (n, got)
        assert any(f"{n} threads asked for, using {got}" in str(w.message) for w in caught), caught
    pydl.set_num_threads(2)
    print("huge-ok", got)
""")


def test_huge_thread_counts_are_capped_with_a_warning():
    """set_num_threads(10**6) or (2**31 - 1) uses at most max(1024, 4 x CPUs) threads and says so,
    without probing for a million threads or reserving memory for them (under a 3 GiB limit)."""
    out = subprocess.run([sys.executable, "-c", _HUGE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "huge-ok" in out.stdout, (out.returncode, out.stderr[-2000:])


def _every_family(rng):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    a, b = f(300, 200), f(200, 250)
    x, w, bias = f(4, 16, 30, 30), f(24, 16, 3, 3), f(24)
    dy = f(4, 24, 30, 30)
    xs, W, U, rb = f(16, 12, 40), f(40, 256), f(64, 256), f(256)
    gamma, beta = f(16), f(16)
    labels = rng.integers(0, 10, 512)
    logits = f(512, 10)
    out = {"matmul": pydl.matmul(a, b), "dense": ops.dense_forward(a, b, f(250), "relu")}
    out["dense_backward"] = ops.dense_backward(f(300, 250), a, b, out["dense"], "relu")
    for algo in ("direct", "im2col", "winograd_f2", "winograd_f4"):
        out[f"conv2d_{algo}"] = ops.conv2d(x, w, bias, padding=1, algo=algo)
        out[f"conv2d_backward_{algo}"] = ops.conv2d_backward(dy, x, w, padding=1, algo=algo)
    y, am = ops.max_pool2d(x, 3, 2, 1)
    out["max_pool"] = (y, am, ops.max_pool2d_backward(y, am, x.shape))
    out["avg_pool"] = (ops.avg_pool2d(x, 3, 2, 1), ops.avg_pool2d_backward(y, x.shape, 3, 2, 1))
    out["global_avg_pool"] = (ops.global_avg_pool2d(x), ops.global_avg_pool2d_backward(f(4, 16), x.shape))
    out["activation"] = ops.activation_backward(a, a, ops.activation(a, "softmax"), "softmax")
    out["loss"] = ops.loss("sparse_categorical_crossentropy", labels, logits, from_logits=True)
    rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)
    yb, cache = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=True)
    out["batchnorm"] = (yb, rm, rv, ops.batchnorm_backward(x, x, gamma, cache))
    out["dropout"] = ops.dropout_forward(a, 0.3, 11)
    p, m, v = f(100_000), np.zeros(100_000, np.float32), np.zeros(100_000, np.float32)
    ops.adam_update(p, m, v, f(100_000), 1e-2, 1)
    out["adam"] = (p, m, v, ops.sum_squares(p))
    for cell, G in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        o, hT, cT, c = ops.rnn_forward(cell, xs, W[:, :G * 64], U[:, :G * 64], rb[:G * 64])
        out[f"rnn_{cell}"] = (o, hT, cT, ops.rnn_backward(cell, o, None, None, c))
    return out


def _flatten(v):
    if isinstance(v, dict):
        return [a for k in sorted(v) for a in _flatten(v[k])]
    if isinstance(v, (tuple, list)):
        return [a for e in v for a in _flatten(e)]
    return [] if v is None else [np.asarray(v)]


def test_every_family_is_bitwise_identical_for_any_thread_count():
    """Fixed reduction orders: 1, 2 and 3 threads give the same bits (seeded training is
    reproducible on any machine size)."""
    old = pydl.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3):
            pydl.set_num_threads(n)
            results[n] = _every_family(np.random.default_rng(5))
    finally:
        pydl.set_num_threads(old)
    for n in (2, 3):
        for name in results[1]:
            for i, (g, e) in enumerate(zip(_flatten(results[n][name]), _flatten(results[1][name]))):
                assert np.array_equal(g, e, equal_nan=True), f"{name} output {i}: {n} threads differ from 1"
