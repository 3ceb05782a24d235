"""Stage 4, evaluate: score the checkpointed best model on the validation and test splits."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from pipeline import atomic, figures
from pipeline.dataset import CLASS_NAMES
from pipeline.errors import PipelineError
from pipeline.params import EvaluateParams, Params
from pipeline.paths import Paths
from pipeline.splits import Split, load_split

log = logging.getLogger(__name__)


class UnsafeModelError(PipelineError):
    """The model file is not one this pipeline trained, or would run code when loaded."""


def load_trusted(path: Path) -> keras.Model:
    """Load a model file without running any code it carries (it may come from a shared DVC remote)."""
    try:
        return keras.models.load_model(path, safe_mode=True)
    except (ValueError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeModelError(
            f"{path}: refused, not a model this pipeline trains or unsafe to load ({first_line}); "
            "train it again with `dvc repro train`"
        ) from None


def loss_and_accuracy(model: keras.Model, split: Split, batch_size: int) -> dict[str, float]:
    """``model.evaluate`` as in the tutorial: sparse categorical cross-entropy and accuracy."""
    scores = model.evaluate(split.x, split.y, batch_size=batch_size, verbose=0, return_dict=True)
    return {"loss": float(scores["loss"]), "accuracy": float(scores["accuracy"])}


def predict_classes(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.argmax(model.predict(x, batch_size=batch_size, verbose=0), axis=-1)


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 of each class, by class name."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(CLASS_NAMES))), zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f)}
        for name, p, r, f in zip(CLASS_NAMES, precision, recall, f1, strict=True)
    }


def main(params: Params, paths: Paths) -> None:
    """The stage's command: ``evaluate.*`` from params."""
    run(paths, params.evaluate)


def run(paths: Paths, params: EvaluateParams) -> dict[str, Any]:
    """Write ``metrics.json``, the test predictions CSV, the confusion matrix and F1 figures."""
    model = load_trusted(paths.model)
    val, test = load_split(paths.split("val")), load_split(paths.split("test"))
    y_pred = predict_classes(model, test.x, params.batch_size)
    per_class = per_class_scores(test.y, y_pred)
    metrics = {
        "val": loss_and_accuracy(model, val, params.batch_size),
        "test": {
            **loss_and_accuracy(model, test, params.batch_size),
            "macro_f1": float(np.mean([scores["f1"] for scores in per_class.values()])),
            "per_class": per_class,
        },
    }
    atomic.write_text(paths.metrics_json, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    names = np.asarray(CLASS_NAMES)
    predictions = pd.DataFrame({"actual": names[test.y], "predicted": names[y_pred]})
    atomic.write_text(paths.predictions_csv, predictions.to_csv(index=False))
    figures.save(figures.confusion_matrix(test.y, y_pred, CLASS_NAMES), paths.confusion_png)
    figures.save(figures.per_class_f1({n: s["f1"] for n, s in per_class.items()}), paths.f1_png)
    log.info(
        "val accuracy %.4f loss %.4f | test accuracy %.4f loss %.4f",
        metrics["val"]["accuracy"],
        metrics["val"]["loss"],
        metrics["test"]["accuracy"],
        metrics["test"]["loss"],
    )
    return metrics
