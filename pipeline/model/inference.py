"""Inference: the one way to turn pixels into classes. The evaluate stage and ``predict`` use it.

A model's outputs must be probabilities: :func:`pipeline.model.files.load` refuses one that does not
end in a softmax, and :func:`classify` one whose outputs are not in [0, 1] or do not sum to 1 (NaN
weights, say), rather than rank and print its scores as probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import keras
import numpy as np

from pipeline.core.dataset import as_pixels
from pipeline.core.paths import Paths
from pipeline.model import files

DEFAULT_MODEL = Paths().keras_model
Source = TypeVar("Source")  # what names an input: a path, say
SUM_TOLERANCE = 1e-3  # a float32 softmax sums to 1 within about 1e-6


@dataclass(frozen=True)
class Prediction:
    """One image's class, its probability and the ``top_k`` most likely classes, most likely first."""

    label: int
    class_name: str
    probability: float
    top_k: tuple[tuple[str, float], ...]

    def as_dict(self) -> dict:
        """What ``predict --json`` prints and ``serve`` answers for an image."""
        return {
            "class": self.class_name,
            "label": self.label,
            "probability": round(self.probability, 6),
            "top_k": [{"class": name, "probability": round(p, 6)} for name, p in self.top_k],
        }


@dataclass(frozen=True)
class Classifier:
    """A trained model and the names of its classes, as ``model.keras`` stores them; ``source``, the
    file it came from, names it in errors."""

    model: keras.Model
    class_names: tuple[str, ...]
    source: Path | None = None

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL) -> Classifier:
        """The model in ``path`` and its class names, one for each of its outputs."""
        model, class_names = files.load(path), files.class_names(path)
        if len(class_names) != model.output_shape[-1]:
            raise files.ModelFileError(
                f"{path}: {len(class_names)} class names in its {files.METADATA_JSON} for "
                f"{model.output_shape[-1]} outputs; export it with `dvc repro train`"
            )
        return cls(model, class_names, Path(path))


def classify(
    images: np.ndarray, classifier: Classifier | None = None, *, top_k: int = 3, batch_size: int = 256
) -> list[Prediction]:
    """Classify ``images``: one or a batch of 28x28 pixel arrays (:func:`as_pixels`), with
    ``classifier`` or else ``models/model.keras``."""
    classifier = classifier or Classifier.load()
    pixels = as_pixels(np.asarray(images), "images")
    model = classifier.model
    probabilities = (  # Keras's predict builds a dataset per call: 20-50 ms that one batch need not pay
        np.asarray(model.predict_on_batch(pixels))
        if len(pixels) <= batch_size
        else model.predict(pixels, batch_size=batch_size, verbose=0)
    )
    _check_probabilities(probabilities, classifier.source)
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


def classify_inputs(
    inputs: Sequence[tuple[Source, np.ndarray]], classifier: Classifier, *, top_k: int = 3
) -> Iterator[tuple[Source, int, Prediction]]:
    """Each image of ``inputs`` (a name and the images read from it) as ``(name, index, prediction)``,
    with one :func:`classify` call for them all."""
    predictions = iter(classify(np.concatenate([pixels for _, pixels in inputs]), classifier, top_k=top_k))
    for name, pixels in inputs:
        for index in range(len(pixels)):
            yield name, index, next(predictions)


def _check_probabilities(probabilities: np.ndarray, source: Path | None) -> None:
    """Raise :class:`~pipeline.model.files.ModelFileError` unless each row is in [0, 1] and sums to 1."""
    sums = probabilities.sum(axis=1)
    bad = ~((np.abs(sums - 1) <= SUM_TOLERANCE) & ((probabilities >= 0) & (probabilities <= 1)).all(axis=1))
    if bad.any():  # NaN sums fail the first test
        image = int(np.argmax(bad))
        raise files.ModelFileError(
            f"{source or 'the model'}: refused, its outputs are not probabilities (image {image}'s are in "
            f"[{probabilities[image].min():.3g}, {probabilities[image].max():.3g}] and sum to "
            f"{sums[image]:.3g}); train it again with `dvc repro train`"
        )
