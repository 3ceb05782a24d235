"""Stage 4, evaluate: score the checkpointed best model on the test split.

Loss and accuracy come from ``best-model.h5`` (the tutorial's ``model.evaluate``); the test
predictions come from ``model.keras`` through :func:`pipeline.model.inference.classify`, as users
get them, and must agree with the checkpoint's. DVCLive writes them to ``reports/evaluate/``: the
metrics, the confusion matrix, the per-class scores and their figures. The validation scores are
train's (``reports/train/metrics.json``: the kept epoch's), so each number has one name and one source.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from pipeline.core import figures, logs, stage_cli
from pipeline.core.dataset import CLASS_NAMES
from pipeline.core.errors import PipelineError
from pipeline.core.params import EvaluateParams, Params
from pipeline.core.paths import Paths
from pipeline.core.splits import Split, load_split
from pipeline.model import files
from pipeline.model.inference import Classifier, Prediction, classify

log = logging.getLogger(__spec__.name)  # "pipeline.stages.x", also when run as __main__


class ExportMismatch(PipelineError):
    """``model.keras`` does not classify the test set as the checkpoint does."""


def loss_and_accuracy(model, split: Split, batch_size: int) -> dict[str, float]:
    """``model.evaluate`` as in the tutorial: sparse categorical cross-entropy and accuracy."""
    scores = model.evaluate(split.x, split.y, batch_size=batch_size, verbose=0, return_dict=True)
    return {"loss": float(scores["loss"]), "accuracy": float(scores["accuracy"])}


def check_export_agrees(checkpoint, exported: list[Prediction], test: Split, batch_size: int) -> None:
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
    """Log the metrics, the per-class scores, the confusion matrix and the figures; the metrics."""
    model = files.load(paths.model)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # what the tutorial reports
    classifier = Classifier.load(paths.keras_model)
    if classifier.class_names != CLASS_NAMES:
        raise ExportMismatch(
            f"{paths.keras_model}: class names {classifier.class_names} are not {CLASS_NAMES}"
        )
    test = load_split(paths.split("test"))
    exported = classify(test.x, classifier, top_k=1, batch_size=params.batch_size)
    check_export_agrees(model, exported, test, params.batch_size)
    y_pred = np.array([prediction.label for prediction in exported])
    per_class = per_class_scores(test.y, y_pred)
    metrics = {
        "test": {
            **loss_and_accuracy(model, test, params.batch_size),
            "macro_f1": float(np.mean([row["f1"] for row in per_class])),
        },
    }
    names = np.asarray(CLASS_NAMES)
    with logs.live_log(paths.evaluate_live_dir) as live:
        for name in ("accuracy", "loss", "macro_f1"):
            live.log_metric(f"test/{name}", metrics["test"][name], plot=False)
        live.log_sklearn_plot(
            "confusion_matrix", names[test.y].tolist(), names[y_pred].tolist(), name=paths.confusion_json.name
        )
        live.log_plot(paths.per_class_json.stem, per_class, x="f1", y="class", template="bar_horizontal")
        live.log_image(
            paths.confusion_png.name, figures.as_image(figures.confusion_matrix(test.y, y_pred, CLASS_NAMES))
        )
        f1 = figures.per_class_f1({row["class"]: row["f1"] for row in per_class})
        live.log_image(paths.f1_png.name, figures.as_image(f1))
    log.info(
        "test accuracy %.4f loss %.4f macro_f1 %.4f",
        metrics["test"]["accuracy"],
        metrics["test"]["loss"],
        metrics["test"]["macro_f1"],
    )
    return metrics


if __name__ == "__main__":
    raise SystemExit(stage_cli.run("evaluate", main))
