"""A small residual network (ResNet) on the bundled 8x8 digits, written with the functional API.

    stem    Conv 3x3 (32) -> BatchNorm -> ReLU       (BatchNorm momentum 0.9: 40 steps an epoch here)
    block   x -> Conv 3x3 -> BN -> ReLU -> Conv 3x3 -> BN -> (+ x) -> ReLU      (identity shortcut)
    down    x -> Conv 3x3 /2 -> BN -> ReLU -> Conv 3x3 -> BN -> (+ Conv 1x1 /2 (x)) -> ReLU
    head    GlobalAveragePooling2D -> Dense 10 softmax

    python examples/resnet_digits.py [--epochs 20] [--width 32] [--threads 2]

Prints the training progress and the test accuracy (it reaches >= 98%).
"""
from __future__ import annotations

import argparse
import time

import pydl
from pydl.layers import Activation, Add, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D


def conv_bn(x, filters, strides=1, relu=True):
    x = Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = BatchNormalization(momentum=0.9)(x)
    return Activation("relu")(x) if relu else x


def residual_block(x, filters, strides=1):
    """Two 3x3 convolutions added to the block's input (projected by a strided 1x1 convolution
    when the block changes the resolution or the width)."""
    y = conv_bn(x, filters, strides)
    y = conv_bn(y, filters, relu=False)
    shortcut = x
    if strides != 1 or x.shape[1] != filters:
        shortcut = Conv2D(filters, 1, strides=strides, use_bias=False)(x)
        shortcut = BatchNormalization(momentum=0.9)(shortcut)
    return Activation("relu")(Add()([y, shortcut]))


def build_resnet(width: int = 32) -> pydl.Model:
    inp = pydl.Input(shape=(1, 8, 8))
    x = conv_bn(inp, width)
    x = residual_block(x, width)
    x = residual_block(x, 2 * width, strides=2)    # 8x8 -> 4x4
    x = residual_block(x, 2 * width)
    out = Dense(10, activation="softmax")(GlobalAveragePooling2D()(x))
    return pydl.Model(inputs=inp, outputs=out, name="resnet_digits")


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=2)
    args = ap.parse_args(argv)
    if args.threads:
        pydl.set_num_threads(args.threads)
    pydl.seed(args.seed)

    x, y = pydl.datasets.load_digits()
    x = x.reshape(-1, 1, 8, 8)                   # NCHW, one channel
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pydl.data.train_val_test_split(
        x, y, ratios=(0.7, 0.1, 0.2), stratify=True, seed=args.seed)

    model = build_resnet(args.width)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=pydl.optimizers.Adam(2e-3),
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
