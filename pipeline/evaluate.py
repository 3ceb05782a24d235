"""Stage 4, evaluate: score the checkpointed best model on the validation and test splits.

Loss and accuracy come from ``best-model.h5`` (the tutorial's ``model.evaluate``); the test
predictions come from ``model.keras`` through :func:`pipeline.predict.classify`, as users get them,
and must agree with the checkpoint's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from pipeline import atomic, figures, model_file
from pipeline.dataset import CLASS_NAMES
from pipeline.errors import PipelineError
from pipeline.params import EvaluateParams, Params
from pipeline.paths import Paths
from pipeline.predict import Classifier, Prediction, classify
from pipeline.splits import Split, load_split

log = logging.getLogger(__name__)


class ExportMismatch(PipelineError):
    """``model.keras`` does not classify the test set as the checkpoint does."""


def loss_and_accuracy(model: keras.Model, split: Split, batch_size: int) -> dict[str, float]:
    """``model.evaluate`` as in the tutorial: sparse categorical cross-entropy and accuracy."""
    scores = model.evaluate(split.x, split.y, batch_size=batch_size, verbose=0, return_dict=True)
    return {"loss": float(scores["loss"]), "accuracy": float(scores["accuracy"])}


def check_export_agrees(
    checkpoint: keras.Model, exported: list[Prediction], test: Split, batch_size: int
) -> None:
    """The ``.keras`` export must give every test image the class the ``.h5`` checkpoint gives it."""
    expected = np.argmax(checkpoint.predict(test.x, batch_size=batch_size, verbose=0), axis=-1)
    differ = int(np.count_nonzero(expected != [prediction.label for prediction in exported]))
    if differ:
        raise ExportMismatch(
            f"models/model.keras and models/best-model.h5 disagree on {differ} of {len(expected)} test "
            "images; export the model again with `dvc repro -f train`"
        )
    log.info("model.keras agrees with best-model.h5 on all %d test images", len(expected))


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray) -> list[dict[str, Any]]:
    """Precision, recall and F1 of each class, one row per class in label order."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(CLASS_NAMES))), zero_division=0
    )
    return [
        {"label": label, "class": name, "precision": float(p), "recall": float(r), "f1": float(f)}
        for label, (name, p, r, f) in enumerate(zip(CLASS_NAMES, precision, recall, f1, strict=True))
    ]


def main(params: Params, paths: Paths) -> None:
    """The stage's command: ``evaluate.*`` from params."""
    run(paths, params.evaluate)


def run(paths: Paths, params: EvaluateParams) -> dict[str, Any]:
    """Write ``metrics.json``, the per-class scores, the test predictions CSV, the confusion matrix
    and F1 figures; return the metrics."""
    model = model_file.load(paths.model)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # what the tutorial reports
    classifier = Classifier.load(paths.keras_model)
    if classifier.class_names != CLASS_NAMES:
        raise ExportMismatch(
            f"{paths.keras_model}: class names {classifier.class_names} are not {CLASS_NAMES}"
        )
    val, test = load_split(paths.split("val")), load_split(paths.split("test"))
    exported = classify(test.x, classifier, top_k=1, batch_size=params.batch_size)
    check_export_agrees(model, exported, test, params.batch_size)
    y_pred = np.array([prediction.label for prediction in exported])
    per_class = per_class_scores(test.y, y_pred)
    metrics = {
        "val": loss_and_accuracy(model, val, params.batch_size),
        "test": {
            **loss_and_accuracy(model, test, params.batch_size),
            "macro_f1": float(np.mean([row["f1"] for row in per_class])),
        },
    }
    atomic.write_text(paths.metrics_json, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    atomic.write_text(paths.per_class_json, json.dumps(per_class, indent=2) + "\n")
    names = np.asarray(CLASS_NAMES)
    predictions = pd.DataFrame(
        {
            "actual": names[test.y],
            "predicted": names[y_pred],
            "actual_label": test.y,
            "predicted_label": y_pred,
        }
    )
    atomic.write_text(paths.predictions_csv, predictions.to_csv(index=False))
    figures.save(figures.confusion_matrix(test.y, y_pred, CLASS_NAMES), paths.confusion_png)
    figures.save(figures.per_class_f1({row["class"]: row["f1"] for row in per_class}), paths.f1_png)
    log.info(
        "val accuracy %.4f loss %.4f | test accuracy %.4f loss %.4f",
        metrics["val"]["accuracy"],
        metrics["val"]["loss"],
        metrics["test"]["accuracy"],
        metrics["test"]["loss"],
    )
    return metrics
