"""A conditional generative adversarial network (GAN) on the bundled 8x8 digits, trained with
train_on_batch. Both networks also see the digit class (one-hot), so the generator is asked for
a given digit and the discriminator judges "a real image of this digit":

    generator      [z (32), class (10)] -> Concatenate -> Dense 128 -> LeakyReLU -> Dense 256 -> LeakyReLU
                   -> Dense 64 sigmoid -> (1, 8, 8)
    discriminator  [(1, 8, 8), class (10)] -> Flatten, Concatenate -> Dense 256 -> LeakyReLU -> Dropout
                   -> Dense 128 -> LeakyReLU -> Dense 1 sigmoid

Each step trains the discriminator on a batch of real digits (label 0.9: one-sided label
smoothing) and a batch of generated ones (label 0), then trains the generator through the
combined model `discriminator([generator([z, c]), c])` with the discriminator frozen
(`discriminator.trainable = False`) to make the discriminator answer "real".

To check that the samples look like digits, a separate classifier is trained on the real digits
and labels 1,000 generated samples (100 asked for per class): the share it labels with confidence
> 0.9, the number of classes among those (no mode collapse) and the share labelled as the class
asked for are printed. Writes a PNG grid of generated digits, one column per class.

    python examples/gan_digits.py [--steps 4000] [--out gan_digits.png]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import pydl
from pydl.layers import Concatenate, Conv2D, Dense, Dropout, Flatten, LeakyReLU, MaxPool2D, Reshape

LATENT = 32


def build_generator() -> pydl.Model:
    z, c = pydl.Input(shape=(LATENT,), name="z"), pydl.Input(shape=(10,), name="class")
    x = LeakyReLU(0.2)(Dense(128)(Concatenate()([z, c])))
    x = LeakyReLU(0.2)(Dense(256)(x))
    x = Dense(64, activation="sigmoid")(x)
    return pydl.Model([z, c], Reshape((1, 8, 8))(x), name="generator")


def build_discriminator() -> pydl.Model:
    img, c = pydl.Input(shape=(1, 8, 8), name="image"), pydl.Input(shape=(10,), name="class")
    x = LeakyReLU(0.2)(Dense(256)(Concatenate()([Flatten()(img), c])))
    x = Dropout(0.3)(x)
    x = LeakyReLU(0.2)(Dense(128)(x))
    return pydl.Model([img, c], Dense(1, activation="sigmoid")(x), name="discriminator")


def build_classifier() -> pydl.Model:
    img = pydl.Input(shape=(1, 8, 8))
    x = Conv2D(32, 3, padding="same", activation="relu")(img)
    x = MaxPool2D(2)(Conv2D(32, 3, padding="same", activation="relu")(x))
    x = Dropout(0.25)(Dense(128, activation="relu")(Flatten()(x)))
    return pydl.Model(img, Dense(10, activation="softmax")(x), name="digit_classifier")


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(10, dtype=np.float32)[labels]


def train_gan(x_real: np.ndarray, y_real: np.ndarray, steps: int, batch_size: int, rng: np.random.Generator,
              lr: float = 1e-3, log_every: int = 500):
    generator, discriminator = build_generator(), build_discriminator()
    discriminator.compile(loss="binary_crossentropy", optimizer=pydl.optimizers.Adam(lr, beta_1=0.5))
    z, c = pydl.Input(shape=(LATENT,)), pydl.Input(shape=(10,))
    combined = pydl.Model([z, c], discriminator([generator([z, c]), c]), name="gan")
    combined.compile(loss="binary_crossentropy", optimizer=pydl.optimizers.Adam(lr, beta_1=0.5))
    real_labels = np.full((batch_size, 1), 0.9, np.float32)
    fake_labels = np.zeros((batch_size, 1), np.float32)
    want_real = np.ones((batch_size, 1), np.float32)
    for step in range(1, steps + 1):
        pick = rng.integers(0, len(x_real), batch_size)
        real, real_c = x_real[pick], one_hot(y_real[pick])
        fake_c = one_hot(rng.integers(0, 10, batch_size))
        fake = generator.predict_on_batch([noise(rng, batch_size), fake_c])
        discriminator.trainable = True
        d_real = discriminator.train_on_batch([real, real_c], real_labels)
        d_fake = discriminator.train_on_batch([fake, fake_c], fake_labels)
        discriminator.trainable = False                      # the generator step moves only the generator
        g_loss = combined.train_on_batch([noise(rng, batch_size), one_hot(rng.integers(0, 10, batch_size))],
                                         want_real)
        if log_every and step % log_every == 0:
            print(f"step {step}: discriminator loss {0.5 * (d_real + d_fake):.3f}, generator loss {g_loss:.3f}")
    return generator


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, LATENT)).astype(np.float32)


def judge(classifier: pydl.Model, samples: np.ndarray, asked: np.ndarray, confidence: float = 0.9):
    """(share of samples labelled with probability > confidence, classes among those, share
    labelled as the class asked for)."""
    probs = classifier.predict(samples)
    sure = probs.max(axis=1) > confidence
    labels = probs.argmax(axis=1)
    return float(sure.mean()), int(np.unique(labels[sure]).size), float((labels == asked).mean())


def save_png(path: str, samples: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = 6, 10          # samples are ordered class by class, 100 each: column = class
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.7, rows * 0.7))
    for (r, col), ax in np.ndenumerate(np.array(axes)):
        ax.imshow(samples[col * 100 + r].reshape(8, 8), cmap="gray_r", vmin=0.0, vmax=1.0)
        ax.axis("off")
    fig.suptitle("generated digits", fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of both networks")
    ap.add_argument("--classifier-epochs", type=int, default=15)
    ap.add_argument("--out", default="gan_digits.png", help="PNG to write ('' for none)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        pydl.set_num_threads(args.threads)
    pydl.seed(args.seed)
    rng = np.random.default_rng(args.seed)

    x, y = pydl.datasets.load_digits()
    x = x.reshape(-1, 1, 8, 8)

    classifier = build_classifier()
    classifier.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    classifier.fit(x, y, batch_size=32, epochs=args.classifier_epochs, verbose=0)

    t0 = time.perf_counter()
    generator = train_gan(x, y, args.steps, args.batch_size, rng, args.lr)
    seconds = time.perf_counter() - t0
    asked = np.repeat(np.arange(10), 100)
    samples = generator.predict([noise(rng, 1000), one_hot(asked)])
    share, classes, agree = judge(classifier, samples, asked)
    print(f"trained {args.steps} steps in {seconds:.1f} s; the classifier labels {share:.1%} of 1000 generated "
          f"digits with confidence > 0.9, across {classes} classes; {agree:.1%} as the digit asked for")
    if args.out:
        save_png(args.out, samples)
        print(f"wrote {args.out}")
    return share, classes, agree


if __name__ == "__main__":
    main()
