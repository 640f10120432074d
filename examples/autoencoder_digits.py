"""A convolutional autoencoder on the bundled 8x8 digits, compared with PCA of the same code size.

    encoder  Conv 3x3 (16) ReLU -> Conv 3x3 /2 (32) ReLU -> Flatten -> Dense (code)
    decoder  Dense (32*4*4) ReLU -> Reshape -> Conv2DTranspose 3x3 x2 (16) ReLU -> Conv 3x3 (1) sigmoid

Both are fitted on the training images; the reconstruction mean squared error is measured on the
test images. PCA is the best *linear* code of that size; the autoencoder's non-linear code does
better. Writes a PNG of test inputs (top row) against their reconstructions (bottom row).

    python examples/autoencoder_digits.py [--epochs 60] [--code 8] [--out autoencoder_digits.png]

Prints both errors and returns (autoencoder MSE, PCA MSE).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import pydl
from pydl.layers import Conv2D, Conv2DTranspose, Dense, Flatten, Reshape


def build_autoencoder(code: int) -> pydl.Model:
    inp = pydl.Input(shape=(1, 8, 8))
    x = Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)            # 4x4
    z = Dense(code, name="code")(Flatten()(x))
    x = Dense(32 * 4 * 4, activation="relu")(z)
    x = Reshape((32, 4, 4))(x)
    x = Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(x)   # 8x8
    out = Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    return pydl.Model(inputs=inp, outputs=out, name="autoencoder_digits")


def pca_mse(x_train: np.ndarray, x_test: np.ndarray, code: int) -> float:
    """Reconstruction MSE on x_test of the rank-`code` PCA fitted on x_train (float64)."""
    a = x_train.reshape(len(x_train), -1).astype(np.float64)
    b = x_test.reshape(len(x_test), -1).astype(np.float64)
    mean = a.mean(axis=0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    basis = vt[:code]                                   # (code, 64) principal directions
    rec = (b - mean) @ basis.T @ basis + mean
    return float(((rec - b) ** 2).mean())


def save_png(path: str, originals: np.ndarray, reconstructions: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.0))
    for i in range(n):
        for row, img in enumerate((originals[i], reconstructions[i])):
            axes[row, i].imshow(img.reshape(8, 8), cmap="gray_r", vmin=0.0, vmax=1.0)
            axes[row, i].axis("off")
    fig.suptitle("test digits (top) and their reconstructions (bottom)", fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--code", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="autoencoder_digits.png", help="PNG to write ('' for none)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=2)
    args = ap.parse_args(argv)
    if args.threads:
        pydl.set_num_threads(args.threads)
    pydl.seed(args.seed)

    x, y = pydl.datasets.load_digits()
    x = x.reshape(-1, 1, 8, 8)
    (x_tr, _), _, (x_te, _) = pydl.data.train_val_test_split(x, y, ratios=(0.8, 0.0, 0.2), stratify=True,
                                                              seed=args.seed)

    model = build_autoencoder(args.code)
    model.compile(loss="mse", optimizer=pydl.optimizers.Adam(2e-3))
    if args.verbose:
        model.summary()
    t0 = time.perf_counter()
    model.fit(x_tr, x_tr, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose)
    seconds = time.perf_counter() - t0
    rec = model.predict(x_te)
    ae = float(((rec.astype(np.float64) - x_te) ** 2).mean())
    pca = pca_mse(x_tr, x_te, args.code)
    print(f"trained {args.epochs} epochs in {seconds:.1f} s; test reconstruction MSE: autoencoder {ae:.5f}, "
          f"PCA with {args.code} components {pca:.5f}")
    if args.out:
        save_png(args.out, x_te[:12], rec[:12])
        print(f"wrote {args.out}")
    return ae, pca


if __name__ == "__main__":
    main()
