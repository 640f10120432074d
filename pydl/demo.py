"""End-to-end demo: train a classifier on handwritten digits and report it.

    python -m pydl.demo                      # CNN on the bundled 8x8 digits (1797 images)
    python -m pydl.demo --data ~/mnist       # MNIST from a folder of IDX files (.gz or not)
    python -m pydl.demo --model mlp          # a multi-layer perceptron instead

Splits the data (train / validation / test, stratified), standardizes the features for the MLP
(the fitted StandardScaler is attached as `model.scaler` and saved with the model), trains with a
progress bar, prints the test accuracy and the confusion matrix, and writes `model.npz` and
`training_curves.png` (loss and accuracy, train and validation) into --out.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _load(args):
    from . import data, datasets

    if args.data:
        x_train, y_train = datasets.load_mnist(args.data, "train")
        x_test, y_test = datasets.load_mnist(args.data, "test")
        # validation: a random tenth of the official training set; the official test set is the test
        order = np.random.default_rng(args.seed).permutation(len(x_train))
        n_val = len(x_train) // 10
        x_val, y_val = x_train[order[:n_val]], y_train[order[:n_val]]
        x_tr, y_tr = x_train[order[n_val:]], y_train[order[n_val:]]
        return (x_tr, y_tr), (x_val, y_val), (x_test, y_test), "MNIST"
    x, y = datasets.load_digits()
    splits = data.train_val_test_split(x, y, ratios=(0.7, 0.1, 0.2), stratify=True, seed=args.seed)
    return splits[0], splits[1], splits[2], "digits (8x8)"


def _mlp(n_features: int, n_classes: int):
    from .layers import Dense, Dropout
    from .model import Sequential

    return Sequential([
        Dense(256, activation="relu", input_shape=(n_features,)),
        Dropout(0.2),
        Dense(128, activation="relu"),
        Dense(n_classes, activation="softmax"),
    ], name="mlp")


def _cnn(image_shape, n_classes: int):
    """The documents' network: Conv 32 3x3 relu -> MaxPool 2 -> Conv 64 3x3 relu -> MaxPool 2 ->
    Flatten -> Dense softmax. "same" padding keeps the 8x8 digits large enough for two poolings."""
    from .layers import Conv2D, Dense, Flatten, MaxPool2D
    from .model import Sequential

    h, w = image_shape
    return Sequential([
        Conv2D(32, 3, padding="same", activation="relu", input_shape=(1, h, w)),
        MaxPool2D(2),
        Conv2D(64, 3, padding="same", activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(n_classes, activation="softmax"),
    ], name="cnn")


def _plot(history, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = history.history
    epochs = np.arange(1, len(h.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        if key in h:
            ax.plot(epochs, h[key], label="train")
        if "val_" + key in h:
            ax.plot(epochs, h["val_" + key], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _format_cm(cm: np.ndarray) -> str:
    width = max(4, len(str(int(cm.max()))) + 1)
    lines = ["true\\pred" + "".join(f"{j:>{width}}" for j in range(cm.shape[1]))]
    for i, row in enumerate(cm):
        lines.append(f"{i:>9}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pydl.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("cnn", "mlp"), default="cnn", help="network to train (default cnn)")
    ap.add_argument("--data", default=None, metavar="DIR",
                    help="folder with MNIST IDX files (default: the bundled 8x8 digits)")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    ap.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--out", default="pydl_demo_out", help="output folder (default ./pydl_demo_out)")
    ap.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                    help="0 silent, 1 progress bar (default), 2 one line per epoch")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where to train: cpu (default) or cuda (needs CuPy and an NVIDIA GPU)")
    args = ap.parse_args(argv)
    if args.epochs <= 0 or args.batch_size <= 0 or args.seed < 0 or not args.lr > 0:
        ap.error("--epochs, --batch-size and --lr must be positive, --seed non-negative")

    import pydl
    from .data import StandardScaler
    from .metrics import confusion_matrix
    from .optimizers import Adam

    pydl.seed(args.seed)
    t0 = time.perf_counter()
    try:
        (x_tr, y_tr), (x_val, y_val), (x_te, y_te), dname = _load(args)
    except (OSError, ValueError) as exc:
        print(f"pydl.demo: cannot load the data: {exc}", file=sys.stderr)
        return 2
    n_classes = int(max(y_tr.max(), y_val.max(), y_te.max())) + 1
    image_shape = x_tr.shape[1:]

    scaler = None
    if args.model == "mlp":
        flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
        scaler = StandardScaler().fit(flat(x_tr))
        x_tr, x_val, x_te = (scaler.transform(flat(a)).astype(np.float32) for a in (x_tr, x_val, x_te))
        model = _mlp(x_tr.shape[1], n_classes)
    else:
        add_channel = lambda a: a.reshape(a.shape[0], 1, *image_shape).astype(np.float32)  # noqa: E731
        x_tr, x_val, x_te = (add_channel(a) for a in (x_tr, x_val, x_te))
        model = _cnn(image_shape, n_classes)
    model.scaler = scaler
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(learning_rate=args.lr),
                  metrics=["accuracy"])
    if args.device == "cuda":
        try:
            model.to("cuda")
        except pydl.cuda.CudaUnavailableError as exc:
            print(f"pydl.demo: {exc}", file=sys.stderr)
            return 2
        where = f"GPU {pydl.cuda.device_info()['name']}"
    else:
        where = f"isa {pydl.config()['isa']}, {pydl.get_num_threads()} threads"
    print(f"pydl {pydl.__version__} | {dname}: {len(x_tr)} train, {len(x_val)} validation, {len(x_te)} test | "
          f"{where}")
    model.summary()

    t_fit = time.perf_counter()
    history = model.fit(x_tr, y_tr, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(x_val, y_val), verbose=args.verbose)
    t_fit = time.perf_counter() - t_fit
    test_loss, test_acc = model.evaluate(x_te, y_te, batch_size=256)   # [loss, accuracy], as Keras
    pred = model.predict(x_te, batch_size=256).argmax(axis=1)
    cm = confusion_matrix(y_te, pred, num_classes=n_classes)

    print(f"\ntraining: {len(history.epoch)} epochs in {t_fit:.2f} s")
    print(f"test loss {test_loss:.4f}, test accuracy {test_acc:.4f} "
          f"({int(np.trace(cm))}/{len(y_te)})")
    print("confusion matrix (rows: true class, columns: predicted):")
    print(_format_cm(cm))

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.npz")
    plot_path = os.path.join(args.out, "training_curves.png")
    model.save(model_path)
    _plot(history, plot_path)
    print(f"saved {model_path} and {plot_path} (total {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
