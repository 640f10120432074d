"""Data-parallel training of the documents' CNN on the bundled 8x8 digits, over MPI.

    pip install "pydl-nn[mpi]"
    mpirun -n 2 python examples/distributed_digits.py [--epochs 15] [--batch-size 64]

Every rank loads the same data and builds the same model; `fit` gives each rank its piece of
every global batch of --batch-size images and averages the gradients over the ranks, so the
result matches one process training on the whole batch. Rank 0 prints the progress and the test
accuracy (>= 95%) and writes distributed_digits_out/model.npz; every rank checks that its
weights are bitwise those of rank 0. Run without mpirun it trains in one process.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import pydl
from pydl import distributed as dist
from pydl.layers import Conv2D, Dense, Flatten, MaxPool2D


def build_cnn() -> pydl.Sequential:
    return pydl.Sequential([
        Conv2D(32, 3, padding="same", activation="relu", input_shape=(1, 8, 8)), MaxPool2D(2),
        Conv2D(64, 3, padding="same", activation="relu"), MaxPool2D(2),
        Flatten(), Dense(10, activation="softmax")])


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64, help="global batch (all ranks together)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="distributed_digits_out")
    args = ap.parse_args(argv)

    dist.init()
    pydl.seed(args.seed)  # the same data split on every rank; the weights come from rank 0 anyway
    x, y = pydl.datasets.load_digits()
    x = x.reshape(-1, 1, 8, 8)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pydl.data.train_val_test_split(
        x, y, ratios=(0.7, 0.1, 0.2), stratify=True, seed=args.seed)

    model = build_cnn()
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  optimizer=dist.DistributedOptimizer(pydl.optimizers.Adam(2e-3)))
    t0 = time.perf_counter()
    model.fit(x_tr, y_tr, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_va, y_va),
              verbose=2)
    seconds = time.perf_counter() - t0
    test = model.evaluate(x_te, y_te, return_dict=True)  # each rank scores its piece; the sums are reduced

    flat = np.concatenate([w.ravel() for w in model.get_weights()])
    root = dist.broadcast(flat.copy(), root=0)
    same = bool(np.array_equal(root, flat))
    if not same:
        raise RuntimeError(f"rank {dist.rank()}: weights differ from rank 0's")
    if dist.is_root():
        os.makedirs(args.out, exist_ok=True)
        model.save(os.path.join(args.out, "model.npz"))
        print(f"{dist.size()} rank(s), {args.epochs} epochs in {seconds:.1f} s; test accuracy "
              f"{test['accuracy']:.4f} on {len(y_te)} images; weights identical on every rank")
    return float(test["accuracy"])


if __name__ == "__main__":
    main()
