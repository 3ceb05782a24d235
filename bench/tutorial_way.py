"""The reference for the speed benchmark: the tutorial's best run, written the tutorial's way.

The tutorial's "callbacks" section as a script, not tuned: float64 arrays scaled with ``/ 255.0``
straight into ``model.fit``, ``train_test_split(test_size=0.2, random_state=42)``, the
100-unit relu layer with dropout 0.3, adam with its default compile options, 20 epochs of batch 32,
``ModelCheckpoint(save_best_only=True)``, ``verbose=0``. The only additions are the pipeline's seed
and deterministic ops, so the two are compared doing the same work. The same seed does not give
the same weights as the pipeline: the tutorial creates its ``Dropout`` before the ``Dense`` layers,
so they draw their initial weights in another order; compare the quality over several seeds.

The tutorial calls ``keras.datasets.fashion_mnist.load_data()``, which needs the internet; this
reads the same IDX bytes from a directory (``data/raw`` of a project), as ``load_data`` does.

    python bench/tutorial_way.py data/raw [--model best-model.h5] [--seed 42] [--epochs 20]

``--epochs`` is for ``bench/speed.py --smoke`` (2 epochs on tiny data); the reference runs 20.

Prints the best epoch's val loss and val accuracy as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split


def load_data(raw: Path) -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels, as ``keras.datasets.fashion_mnist.load_data`` returns them."""
    images = np.frombuffer((raw / "train-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
    labels = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
    return images.reshape(len(labels), 28, 28), labels


def model_fn(a_layer: keras.layers.Layer | None = None) -> keras.Model:
    model = keras.Sequential()
    model.add(keras.layers.Flatten(input_shape=(28, 28)))
    model.add(keras.layers.Dense(100, activation="relu"))
    if a_layer:
        model.add(a_layer)
    model.add(keras.layers.Dense(10, activation="softmax"))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raw", type=Path, help="directory holding the decompressed IDX files")
    parser.add_argument("--model", default="best-model.h5", help="where the checkpoint goes")
    parser.add_argument("--seed", type=int, default=42, help="the pipeline's train.seed")
    parser.add_argument("--epochs", type=int, default=20, help="the tutorial's 20, or fewer for a smoke run")
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()

    train_input, train_target = load_data(args.raw)
    train_scaled = train_input / 255.0
    train_scaled, val_scaled, train_target, val_target = train_test_split(
        train_scaled, train_target, test_size=0.2, random_state=42
    )
    model = model_fn(keras.layers.Dropout(0.3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    checkpoint_cb = keras.callbacks.ModelCheckpoint(args.model, save_best_only=True)
    history = model.fit(
        train_scaled,
        train_target,
        epochs=args.epochs,
        verbose=0,
        validation_data=(val_scaled, val_target),
        callbacks=[checkpoint_cb],
    )
    best = int(np.argmin(history.history["val_loss"]))
    print(
        json.dumps(
            {
                "best_epoch": best + 1,
                "val_loss": history.history["val_loss"][best],
                "val_accuracy": history.history["val_accuracy"][best],
            }
        )
    )


if __name__ == "__main__":
    main()
