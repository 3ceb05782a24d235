"""Stage 3, train: build the Keras model from params and keep its best epoch in ``best-model.h5``.

The uint8 splits go to ``model.fit`` as they are; the model scales its input itself. The best epoch
is also exported as ``model.keras``, which carries the class names: all ``predict`` needs. DVCLive
logs each epoch to ``reports/train/`` (``dvc exp show`` shows a running experiment's epoch, as
``step``, from 1); once trained, the summary holds the kept epoch's ``val.accuracy`` and ``val.loss``.
The learning-curve figures go beside it.
"""

from __future__ import annotations

import json
import logging

import pandas as pd

from pipeline.core import atomic, figures, logs, stage_cli
from pipeline.core.atomic import atomic_path
from pipeline.core.dataset import CLASS_NAMES
from pipeline.core.params import Params, TrainParams
from pipeline.core.paths import Paths
from pipeline.core.splits import load_split
from pipeline.model import families, files, training

log = logging.getLogger(__spec__.name)  # "pipeline.stages.x", also when run as __main__


def main(params: Params, paths: Paths) -> None:
    """The stage's command: ``train.*`` from params."""
    run(paths, params.train)


def run(paths: Paths, params: TrainParams) -> pd.DataFrame:
    """Read the train/val splits; write the best model (``.h5`` and ``.keras``), DVCLive's log and the
    learning curves; the history, one row per epoch."""
    training.seed_everything(params.seed)
    train, val = load_split(paths.split("train")), load_split(paths.split("val"))
    with training.memory_errors_explained(
        "building or training the model",
        f"reduce train.batch_size or the layer sizes in train.model.{params.model.architecture}",
    ):
        model = families.make_model(train.x.shape[1:], len(CLASS_NAMES), params.model)
        log.info(
            "model %s: %s parameters, %d layers", model.name, f"{model.count_params():,}", len(model.layers)
        )
        model.summary(print_fn=log.debug)
        device = training.training_device(params.model.precision)
        log.info("training on %s", device)
        with logs.live_log(paths.train_live_dir) as live, atomic_path(paths.model) as checkpoint:
            history = training.fit(model, train, val, params, checkpoint, live)
            best_model = training.check_converged(history, checkpoint, params.learning_rate)
            files.save_keras(best_model, paths.keras_model, CLASS_NAMES, trained_on=device)
            row = history.loc[history["val_loss"].idxmin()]
            best = {
                "epoch": int(row["epoch"]),
                "val_loss": float(row["val_loss"]),
                "val_accuracy": float(row["val_accuracy"]),
            }
            for metric, path in (("loss", paths.loss_png), ("accuracy", paths.accuracy_png)):
                live.log_image(path.name, figures.as_image(figures.learning_curve(history, metric)))
    # DVCLive's summary named the epoch running; the run's is the kept model's: one val.accuracy per run,
    # and no step column once it is done (the log and the figures mark the kept epoch).
    kept = {"val": {"accuracy": best["val_accuracy"], "loss": best["val_loss"]}}
    atomic.write_text(paths.train_metrics_json, json.dumps(kept, indent=4))
    log.info(
        "best epoch %d of %d: val_loss %.4f, val_accuracy %.4f -> %s",
        best["epoch"],
        len(history),
        best["val_loss"],
        best["val_accuracy"],
        paths.model,
    )
    return history


if __name__ == "__main__":
    raise SystemExit(stage_cli.run("train", main))
