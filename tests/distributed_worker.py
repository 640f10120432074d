"""Programs run under mpiexec by tests/test_distributed.py: `python distributed_worker.py SCENARIO OUTDIR`.

Every rank writes OUTDIR/rank<r>.npz (weights and figures) or prints what it saw; the test
process checks the files and the job's output."""
import json
import os
import sys
import time

import numpy as np

import pydl
from pydl import distributed as dist
from pydl import layers as L

OUT = sys.argv[2] if len(sys.argv) > 2 else "."


def data(n, shape, classes, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n,) + shape).astype(np.float32)
    y = g.integers(0, classes, n)
    return x, y


def mlp(opt):
    pydl.seed(11)
    m = pydl.Sequential([L.Dense(24, activation="relu", input_shape=(12,),
                                 kernel_regularizer=pydl.regularizers.l2(1e-3)),
                         L.Dropout(0.0), L.Dense(4, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer=opt,
              metrics=["accuracy", pydl.metrics.SparseCategoricalAccuracy(name="stateful_acc")])
    return m


def cnn(opt):
    pydl.seed(12)
    m = pydl.Sequential([L.Conv2D(6, 3, activation="relu", input_shape=(1, 10, 10)), L.MaxPooling2D(2),
                         L.Flatten(), L.Dense(3, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer=opt, metrics=["accuracy"])
    return m


def lstm(opt):
    pydl.seed(13)
    m = pydl.Sequential([L.LSTM(8, input_shape=(5, 3)), L.Dense(2, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer=opt, metrics=["accuracy"])
    return m


def functional(opt):
    pydl.seed(14)
    inp = pydl.Input((6,))
    h = L.Dense(8, activation="tanh")(inp)
    out = L.Dense(1)(L.Add()([h, L.Dense(8)(inp)]))
    m = pydl.Model(inp, out)
    m.compile(loss="mse", optimizer=opt, metrics=["mae"])
    return m


def same_everywhere(arrays) -> bool:
    """True when every rank holds bitwise the same arrays (compares raw bytes, not values)."""
    flat = np.concatenate([np.ascontiguousarray(a).view(np.uint8).ravel() for a in arrays])
    every = dist.allreduce(flat.astype(np.int64))
    return bool(np.array_equal(every, flat.astype(np.int64) * dist.size()))


def equivalence():
    """N ranks on global batch B against one process on batch B, for several models, optimizers
    and shard patterns; plus evaluate, bitwise equality across ranks, only rank 0 writing."""
    res = {}
    cases = [("mlp", mlp, (203, (12,), 4), 32), ("mlp_tiny_batches", mlp, (7, (12,), 4), 2),
             ("cnn", cnn, (70, (1, 10, 10), 3), 16), ("lstm", lstm, (45, (5, 3), 2), 8),
             ("functional", functional, (50, (6,), None), 10)]
    for name, make, (n, shape, classes), bs in cases:
        if classes is None:
            g = np.random.default_rng(5)
            x = g.standard_normal((n,) + shape).astype(np.float32)
            y = (x.sum(1, keepdims=True) * 0.5).astype(np.float32)
        else:
            x, y = data(n, shape, classes, 3)
        for oname, opt in (("sgd", lambda: pydl.optimizers.SGD(0.05, momentum=0.9)),
                           ("adam", lambda: pydl.optimizers.Adam(5e-3))):
            ref = make(opt())
            href = ref.fit(x, y, batch_size=bs, epochs=3, shuffle=False, verbose=0)
            # the LSTM case reduces after backward (overlap=False), the others while it runs
            m = make(dist.DistributedOptimizer(opt(), fusion_threshold_mb=0.002, overlap=name != "lstm"))
            h = m.fit(x, y, batch_size=bs, epochs=3, shuffle=False, verbose=0)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(ref.get_weights(), m.get_weights()))
            ev, ev_ref = m.evaluate(x, y, batch_size=bs, return_dict=True), ref.evaluate(x, y, batch_size=bs,
                                                                                        return_dict=True)
            res[f"{name}/{oname}"] = {
                "max_weight_diff": diff, "same_on_ranks": same_everywhere(m.get_weights()),
                "loss_diff": max(abs(a - b) for k in href.history for a, b in zip(h.history[k], href.history[k])),
                "eval_diff": max(abs(ev[k] - ev_ref[k]) for k in ev),
                "steps": m._dist.stats["steps"], "iterations": m.optimizer.iterations}
    # a metric over the whole data set (AUC): the ranks' accumulators are summed, not averaged
    g = np.random.default_rng(9)
    xb = g.standard_normal((101, 5)).astype(np.float32)
    yb = (xb[:, 0] + 0.5 * g.standard_normal(101) > 0).astype(np.float32)[:, None]

    def binary(opt):
        pydl.seed(15)
        m = pydl.Sequential([L.Dense(1, activation="sigmoid", input_shape=(5,))])
        m.compile(loss="binary_crossentropy", optimizer=opt, metrics=["AUC", "precision"])
        return m
    a, b = binary(dist.DistributedOptimizer("sgd")), binary("sgd")
    ha = a.fit(xb, yb, batch_size=16, epochs=2, shuffle=False, verbose=0)
    hb = b.fit(xb, yb, batch_size=16, epochs=2, shuffle=False, verbose=0)
    ea, eb = a.evaluate(xb, yb, batch_size=10, return_dict=True), b.evaluate(xb, yb, batch_size=10, return_dict=True)
    res["auc"] = {"eval_diff": max(abs(ea[k] - eb[k]) for k in eb),
                  "fit_diff": max(abs(u - v) for k in hb.history for u, v in zip(ha.history[k], hb.history[k])),
                  "auc": eb["auc"]}
    # shuffling: identical on all ranks; the permutation comes from rank 0's seed
    x, y = data(96, (12,), 4, 8)
    m = mlp(dist.DistributedOptimizer(pydl.optimizers.Adam(1e-2)))
    m.fit(x, y, batch_size=16, epochs=2, shuffle=True, verbose=0)
    res["shuffle_same_on_ranks"] = same_everywhere(m.get_weights())
    # ranks start from different weights: rank 0's are broadcast
    pydl.seed(100 + dist.rank())
    m = pydl.Sequential([L.Dense(4, activation="softmax", input_shape=(12,))])
    m.compile(loss="sparse_categorical_crossentropy", optimizer=dist.DistributedOptimizer("adam"))
    before_same = same_everywhere(m.get_weights())
    m.fit(x, y, batch_size=16, epochs=1, verbose=0)
    res["broadcast"] = {"before": before_same, "after": same_everywhere(m.get_weights())}
    # a data source read by every rank, each keeping its piece of every batch
    class Batches(pydl.data.Sequence):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return x[16 * i:16 * i + 16], y[16 * i:16 * i + 16]

    a = mlp(dist.DistributedOptimizer(pydl.optimizers.SGD(0.1)))
    a.fit(Batches(), epochs=2, verbose=0, shuffle=False)
    b = mlp(pydl.optimizers.SGD(0.1))
    b.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    res["source_diff"] = max(float(np.abs(p - q).max()) for p, q in zip(a.get_weights(), b.get_weights()))
    # callbacks: only rank 0 writes; EarlyStopping stops at the same epoch everywhere
    m = mlp(dist.DistributedOptimizer(pydl.optimizers.SGD(1e-6)))
    cbs = [pydl.callbacks.CSVLogger(os.path.join(OUT, f"log{dist.rank()}.csv")),
           pydl.callbacks.ModelCheckpoint(os.path.join(OUT, f"ckpt{dist.rank()}.npz"), monitor="loss"),
           pydl.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1.0)]
    h = m.fit(x, y, batch_size=16, epochs=6, verbose=0, validation_split=0.25, callbacks=cbs)
    res["early_stopping_epochs"] = len(h.history["loss"])
    res["val_loss"] = h.history["val_loss"][-1]
    res["ranks"] = dist.size()
    with open(os.path.join(OUT, f"rank{dist.rank()}.json"), "w") as f:
        json.dump(res, f)


class Boom(Exception):
    pass


def raise_midway():
    x, y = data(400, (12,), 4, 1)
    m = mlp(dist.DistributedOptimizer("adam"))

    class Fail(pydl.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if dist.rank() == 1 and batch == 3:
                raise Boom("simulated failure on rank 1")

    m.fit(x, y, batch_size=8, epochs=50, verbose=0, callbacks=[Fail()])


def hang():
    x, y = data(64, (12,), 4, 1)
    m = mlp(dist.DistributedOptimizer("adam"))
    if dist.rank() == 1:
        time.sleep(30)  # never joins the collectives; the other ranks' timeout fires
        return
    m.fit(x, y, batch_size=8, epochs=1, verbose=0)


def hang_caught():
    x, y = data(64, (12,), 4, 1)
    m = mlp(dist.DistributedOptimizer("adam"))
    if dist.rank() == 1:
        time.sleep(30)
        return
    try:
        m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    except dist.DistributedError as exc:
        print(f"rank 0 caught: {exc}", flush=True)


def mismatch():
    pydl.seed(1)
    units = 8 if dist.rank() == 0 else 9
    m = pydl.Sequential([L.Dense(units, input_shape=(12,)), L.Dense(2, activation="softmax")])
    try:
        m.compile(loss="sparse_categorical_crossentropy", optimizer=dist.DistributedOptimizer("sgd"))
    except dist.DistributedError as exc:
        print(f"rank {dist.rank()} caught: {exc}", flush=True)
        return
    print(f"rank {dist.rank()} no error", flush=True)


if __name__ == "__main__":
    timeout = float(os.environ.get("WORKER_TIMEOUT", "120"))
    dist.init(timeout=timeout)
    {"equivalence": equivalence, "raise": raise_midway, "hang": hang, "hang_caught": hang_caught,
     "mismatch": mismatch}[sys.argv[1]]()
