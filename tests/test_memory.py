"""No kernel family leaks: resident memory stays flat over 10,000 calls each.

Tiny arrays, so a leak of even a few hundred bytes per call (a scratch buffer not freed, a
reference cycle holding outputs, a cache that grows per call) shows as megabytes.
"""
import gc

import numpy as np
import pytest

import pydl
from pydl import ops

CALLS = 10_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _families():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    a, b = f(9, 7), f(7, 5)
    x, w, bias = f(2, 3, 6, 6), f(4, 3, 3, 3), f(4)
    y = ops.conv2d(x, w, bias, padding=1)
    pooled, argmax = ops.max_pool2d(x, 2)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    xs, W, U, rb = f(2, 4, 3), f(3, 20), f(5, 20), f(20)
    _, _, _, cache = ops.rnn_forward("lstm", xs, W, U, rb)
    dout = f(2, 4, 5)
    p, g, m, v = f(50), f(50), np.zeros(50, np.float32), np.zeros(50, np.float32)
    labels = np.array([0, 2, 1, 2, 0, 1, 1, 0, 2])
    probs = ops.activation(f(9, 3), "softmax")
    return {
        "gemm": lambda: ops.matmul(a, b),
        "conv2d": lambda: ops.conv2d(x, w, bias, padding=1),
        "conv2d_backward": lambda: ops.conv2d_backward(y, x, w, padding=1),
        "conv2d_winograd": lambda: ops.conv2d(x, w, padding=1, algo="winograd_f2"),
        "pool": lambda: (ops.max_pool2d(x, 2), ops.max_pool2d_backward(pooled, argmax, x.shape),
                         ops.avg_pool2d(x, 3, 1, 1), ops.global_avg_pool2d(x)),
        "activation": lambda: ops.activation_backward(a, a, ops.activation(a, "elu"), "elu"),
        "dense": lambda: ops.dense_backward(f(9, 5), a, b, ops.dense_forward(a, b, None, "relu"), "relu"),
        "loss": lambda: ops.loss("sparse_categorical_crossentropy", labels, probs),
        "dropout": lambda: ops.dropout_backward(a, ops.dropout_forward(a, 0.5, 3)[1], 0.5),
        "batchnorm": lambda: ops.batchnorm_backward(
            x, x, gamma, ops.batchnorm_forward(x, gamma, beta, rm, rv, training=True)[1]),
        "optim": lambda: ops.adam_update(p, m, v, g, 1e-3, 1),
        "rnn": lambda: (ops.rnn_forward("gru", xs, f(3, 15), f(5, 15), f(15)),
                        ops.rnn_backward("lstm", dout, None, None, cache)),
    }


@pytest.mark.parametrize("family", list(_families()))
def test_rss_flat_over_many_calls(family):
    call = _families()[family]
    for _ in range(500):  # warm up: allocator pools, kernel scratch, first-use caches
        call()
    gc.collect()
    before = _rss_bytes()
    for _ in range(CALLS):
        call()
    gc.collect()
    grown = _rss_bytes() - before
    # 5% of the process, and never more than 4 MiB: 400 bytes per call at most
    assert grown <= min(0.05 * before, 4 << 20), f"{family}: RSS grew {grown / 2**20:.2f} MiB over {CALLS} calls"
