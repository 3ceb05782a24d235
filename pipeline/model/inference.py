"""Inference: the one way to turn pixels into classes. The evaluate stage and ``predict`` use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline.core.dataset import as_pixels
from pipeline.core.paths import Paths
from pipeline.model import files

DEFAULT_MODEL = Paths().keras_model


@dataclass(frozen=True)
class Prediction:
    """One image's class, its probability and the ``top_k`` most likely classes, most likely first."""

    label: int
    class_name: str
    probability: float
    top_k: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Classifier:
    """A trained model and the names of its classes, as ``model.keras`` stores them."""

    model: keras.Model
    class_names: tuple[str, ...]

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL) -> Classifier:
        """The model in ``path`` and its class names, one for each of its outputs."""
        model, class_names = files.load(path), files.class_names(path)
        if len(class_names) != model.output_shape[-1]:
            raise files.ModelFileError(
                f"{path}: {len(class_names)} class names in its {files.METADATA_JSON} for "
                f"{model.output_shape[-1]} outputs; export it with `dvc repro train`"
            )
        return cls(model, class_names)


def classify(
    images: np.ndarray, classifier: Classifier | None = None, *, top_k: int = 3, batch_size: int = 256
) -> list[Prediction]:
    """Classify ``images``: one or a batch of 28x28 pixel arrays (:func:`as_pixels`), with
    ``classifier`` or else ``models/model.keras``."""
    classifier = classifier or Classifier.load()
    pixels = as_pixels(np.asarray(images), "images")
    probabilities = classifier.model.predict(pixels, batch_size=batch_size, verbose=0)
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    names = classifier.class_names
    return [
        Prediction(
            label=int(order[0]),
            class_name=names[order[0]],
            probability=float(row[order[0]]),
            top_k=tuple((names[i], float(row[i])) for i in order),
        )
        for row, order in zip(probabilities, ranked, strict=True)
    ]
