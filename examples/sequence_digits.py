"""Classify the bundled 8x8 digits with an LSTM that reads each image row by row.

Each image is a sequence of 8 time steps of 8 features (one pixel row per step, pixels / 16);
an LSTM summarises the sequence into its last state and a softmax Dense layer classifies it.

    python examples/sequence_digits.py [--epochs 40] [--units 64] [--threads 2]

Prints the training progress and the test accuracy (it reaches >= 95%).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import pydl
from pydl.layers import LSTM, Dense


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        pydl.set_num_threads(args.threads)
    pydl.seed(args.seed)

    x, y = pydl.datasets.load_digits()          # x (1797, 8, 8) in [0, 1]: 8 steps of 8 features
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pydl.data.train_val_test_split(
        x, y, ratios=(0.7, 0.1, 0.2), stratify=True, seed=args.seed)

    model = pydl.Sequential([
        LSTM(args.units, input_shape=(8, 8)),
        Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(0.005, clipnorm=5.0),
                  metrics=["accuracy"])
    model.summary()
    t0 = time.perf_counter()
    model.fit(x_tr, y_tr, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_va, y_va),
              verbose=2)
    seconds = time.perf_counter() - t0
    test = model.evaluate(x_te, y_te, return_dict=True)
    print(f"trained {args.epochs} epochs in {seconds:.1f} s; test loss {test['loss']:.4f}, "
          f"test accuracy {test['accuracy']:.4f} on {len(y_te)} images")
    return float(test["accuracy"])


if __name__ == "__main__":
    main()
