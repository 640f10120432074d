"""Predict the next value of a noisy sine wave with an LSTM.

The series is x_t = sin(2 pi t / period) + noise (Gaussian, std `--noise`). Each sample is a
window of `--window` consecutive values (a sequence of that many steps with one feature);
the target is the value that follows. The first 70% of the series trains, the last 30% tests
(the windows never straddle the split). Reported: the test MSE of the model, of the naive
"next = last" predictor, and the noise floor (noise variance; no predictor can beat it on
average, because the target's own noise is unpredictable).

    python examples/sine_wave.py [--epochs 30] [--noise 0.1] [--threads 2]
"""
from __future__ import annotations

import argparse

import numpy as np

import pydl
from pydl.layers import LSTM, Dense


def windows(series: np.ndarray, window: int):
    idx = np.arange(window)[None, :] + np.arange(series.size - window)[:, None]
    x = series[idx][..., None].astype(np.float32)          # (N, window, 1)
    y = series[window:].astype(np.float32).reshape(-1, 1)   # (N, 1)
    return x, y


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=4000)
    ap.add_argument("--period", type=float, default=40.0)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--window", type=int, default=24)
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        pydl.set_num_threads(args.threads)
    pydl.seed(args.seed)
    rng = np.random.default_rng(args.seed)

    t = np.arange(args.length)
    series = np.sin(2 * np.pi * t / args.period) + args.noise * rng.standard_normal(args.length)
    split = int(0.7 * args.length)
    x_tr, y_tr = windows(series[:split], args.window)
    x_te, y_te = windows(series[split:], args.window)

    model = pydl.Sequential([LSTM(args.units, input_shape=(args.window, 1)), Dense(1)])
    model.compile(loss="mse", optimizer=pydl.optimizers.Adam(0.005, clipnorm=1.0))
    model.fit(x_tr, y_tr, batch_size=32, epochs=args.epochs, validation_split=0.1, verbose=2)

    pred = model.predict(x_te)
    mse = float(np.mean((pred - y_te) ** 2))
    naive = float(np.mean((x_te[:, -1, :] - y_te) ** 2))
    floor = args.noise ** 2
    print(f"test MSE: LSTM {mse:.5f} | naive last-value {naive:.5f} | noise floor {floor:.5f} "
          f"({len(y_te)} test windows); the LSTM's error is {mse / naive:.2f}x the naive one")
    return {"mse": mse, "naive": naive, "floor": floor}


if __name__ == "__main__":
    main()
