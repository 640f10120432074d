"""Writes sequential_v1.npz and sequential_v1_frozen.npz: files in the version-1 save format of
`Sequential.save` as it stood before models became graphs (commit 66c4804), with the inputs and
the predictions they must reproduce and the weights after one more training step. Kept to check that old files still load; rerunning it with a
later pydl would write the newer format, so the .npz files are committed, not regenerated."""
import os
import sys

import numpy as np

import pydl
from pydl.layers import BatchNormalization, Dense, Dropout, Flatten

HERE = os.path.dirname(os.path.abspath(__file__))


def make(frozen: bool):
    pydl.seed(11)
    rng = np.random.default_rng(5)
    model = pydl.Sequential([Flatten(input_shape=(2, 3)), Dense(8, activation="relu", kernel_regularizer="l2"),
                             BatchNormalization(), Dropout(0.25, seed=3),
                             Dense(5, activation="tanh", trainable=not frozen), Dense(3, activation="softmax")],
                            name="v1" + ("_frozen" if frozen else ""))
    x = rng.standard_normal((24, 2, 3)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    model.compile("sparse_categorical_crossentropy", pydl.optimizers.Adam(learning_rate=0.01), metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    name = "sequential_v1" + ("_frozen" if frozen else "")
    model.save(os.path.join(HERE, name + ".npz"))
    pred, loss = model.predict(x), np.array(model.evaluate(x, y, return_dict=True)["loss"])
    model.train_on_batch(x[:8], y[:8])  # one more step: what a loaded model must reproduce
    after = {f"after_{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(os.path.join(HERE, name + "_expected.npz"), x=x, y=y, pred=pred, loss=loss, **after)


if __name__ == "__main__":
    sys.exit(make(False) or make(True))
