"""The cost of channels_last: one training step of Keras' "simple MNIST convnet" in both formats.

Network (as the Keras example): Conv2D(32, 3, relu) -> MaxPooling2D(2) -> Conv2D(64, 3, relu) ->
MaxPooling2D(2) -> Flatten -> Dense(10, softmax); sparse categorical cross-entropy, Adam, batch
128 of 28x28x1. The channels-last model holds its image tensors as NCHW inside and transposes
twice per step (the input batch, and before Flatten; their gradients back on the way down), so
its step should cost the channels-first one plus those copies.

Correctness first: from the same weights (the channels-first model's Flatten given
data_format="channels_first", so the Dense weights line up) both models give the same loss and
the same weights after a step on transposed data. Then the median step time (ms) of each, with
channels_first as the baseline, and the time of the two transposes alone.

    python -m pydl.bench.bench_data_format [--quick]
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

from . import common  # noqa: E402
from .common import Row, print_rows, timeit  # noqa: E402

import pydl  # noqa: E402
from pydl.layers import Conv2D, Dense, Flatten, MaxPooling2D  # noqa: E402

BATCH, HW, CLASSES = 128, 28, 10


def model(fmt: str):
    shape = (HW, HW, 1) if fmt == "channels_last" else (1, HW, HW)
    m = pydl.Sequential([pydl.Input(shape),
                         Conv2D(32, 3, activation="relu", data_format=fmt),
                         MaxPooling2D(2, data_format=fmt),
                         Conv2D(64, 3, activation="relu", data_format=fmt),
                         MaxPooling2D(2, data_format=fmt),
                         Flatten(data_format=fmt),
                         Dense(CLASSES, activation="softmax")])
    m.compile("sparse_categorical_crossentropy", pydl.optimizers.Adam(1e-3))
    return m


def make_pair(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, 1, HW, HW), dtype=np.float32)
    y = rng.integers(0, CLASSES, BATCH)
    pydl.seed(seed)
    cf, cl = model("channels_first"), model("channels_last")
    cl.set_weights(cf.get_weights())
    return cf, cl, x, np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y


def check_correctness():
    cf, cl, x, x_cl, y = make_pair()
    l_cf = cf._train_step(x, y)["loss"]
    l_cl = cl._train_step(x_cl, y)["loss"]
    common.assert_close(np.float64(l_cl), np.float64(l_cf), rtol=1e-5, atol=1e-6, what="loss")
    for a, b in zip(cl.get_weights(), cf.get_weights()):
        common.assert_close(a, b, rtol=1e-4, atol=1e-5, what="weights after one step")


def run(quick: bool = False) -> list:
    check_correctness()
    print("correctness: the channels-last step gives the channels-first loss and weights")
    rows = []
    for n in common.thread_list([1] if quick else [1, 2]):
        with common.threads(n):
            cf, cl, x, x_cl, y = make_pair()
            t_cf = timeit(lambda: cf._train_step(x, y))
            t_cl = timeit(lambda: cl._train_step(x_cl, y))
            feat = np.empty((BATCH, 64, 5, 5), np.float32)
            t_tr = timeit(lambda: (np.ascontiguousarray(x_cl.transpose(0, 3, 1, 2)),
                                   np.ascontiguousarray(feat.transpose(0, 2, 3, 1)),
                                   np.ascontiguousarray(feat.transpose(0, 2, 3, 1).transpose(0, 3, 1, 2))))
            rows.append(Row("data_format", f"keras mnist convnet b{BATCH} 28x28x1 Adam step, channels_last", n, "ms",
                            t_cl * 1e3, {"channels_first": t_cf * 1e3},
                            note=f"transposes alone {t_tr * 1e3:.3f} ms; "
                                 f"overhead {100 * (t_cl - t_cf) / t_cf:+.1f}%"))
    print_rows(rows, "channels_last vs channels_first training step (ms, lower is better)",
               "forward + loss + backward + Adam, batch 128")
    for r in rows:
        print(f"  {r.threads} thread(s): {r.note}")
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv or common.QUICK)
