"""An encoder-only Transformer on the bundled 8x8 digits, written with the functional API.

Each image is read as a sequence of 8 tokens (its rows, 8 pixels each):

    tokens  (N, 8, 8) -> Dense(d) token embedding + sinusoidal position encoding
    blocks  TransformerEncoder x2 (self-attention with `heads` heads + feed-forward, post-norm)
    head    GlobalAveragePooling1D -> Dense 10 softmax

    python examples/transformer_digits.py [--epochs 40] [--dim 64] [--heads 4] [--blocks 2] [--threads 2]

Prints the training progress and the test accuracy (it reaches >= 96%).
"""
from __future__ import annotations

import argparse
import time

import pydl
from pydl.layers import Dense, GlobalAveragePooling1D, SinusoidalPositionalEncoding, TransformerEncoder


def build_transformer(dim: int = 64, heads: int = 4, blocks: int = 2, ff_dim: int = 128,
                      dropout: float = 0.1) -> pydl.Model:
    inp = pydl.Input(shape=(8, 8))                    # 8 tokens (rows) of 8 features (pixels)
    x = Dense(dim)(inp)                               # token embedding
    x = SinusoidalPositionalEncoding()(x)             # which row each token is
    for _ in range(blocks):
        x = TransformerEncoder(heads, ff_dim=ff_dim, dropout=dropout)(x)
    out = Dense(10, activation="softmax")(GlobalAveragePooling1D()(x))
    return pydl.Model(inputs=inp, outputs=out, name="transformer_digits")


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--ff-dim", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=2)
    args = ap.parse_args(argv)
    if args.threads:
        pydl.set_num_threads(args.threads)
    pydl.seed(args.seed)

    x, y = pydl.datasets.load_digits()
    x = x.reshape(-1, 8, 8)                        # (N, T = 8 rows, 8 pixels)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pydl.data.train_val_test_split(
        x, y, ratios=(0.7, 0.1, 0.2), stratify=True, seed=args.seed)

    model = build_transformer(args.dim, args.heads, args.blocks, args.ff_dim, args.dropout)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(args.lr),
                  metrics=["accuracy"])
    if args.verbose:
        model.summary()
    t0 = time.perf_counter()
    model.fit(x_tr, y_tr, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_va, y_va),
              verbose=args.verbose)
    seconds = time.perf_counter() - t0
    test = model.evaluate(x_te, y_te, return_dict=True)
    print(f"trained {args.epochs} epochs in {seconds:.1f} s; test loss {test['loss']:.4f}, "
          f"test accuracy {test['accuracy']:.4f} on {len(y_te)} images")
    return float(test["accuracy"])


if __name__ == "__main__":
    main()
