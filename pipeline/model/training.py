"""The training loop: seeding, optimizers, ``model.fit`` with the tutorial's checkpoint callback, each
epoch logged to DVCLive and as one log line (a progress bar within it on a terminal), and the checks
that keep a diverged or out-of-memory run's model out of ``models/``."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import platform
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from dvclive import Live
from tqdm import tqdm

from pipeline.core.errors import PipelineError
from pipeline.core.logs import progress
from pipeline.core.params import TrainParams
from pipeline.core.splits import Split

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
_OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "rmsprop": keras.optimizers.RMSprop,
    "adamw": keras.optimizers.AdamW,
}


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds plus deterministic ops: same params, same weights."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def training_device(precision: str = "float32") -> str:
    """Where TensorFlow trains: the first GPU it sees, by name, or the CPU; for the train log.

    Keras places the model on the first GPU by itself when TensorFlow sees one (the ``gpu`` extra);
    ``enable_op_determinism`` holds there too. ``mixed_float16`` without a GPU is warned about."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = details.get("compute_capability")
        card = details.get("device_name", "unnamed")
        if capability:
            card += f", compute capability {capability[0]}.{capability[1]}"
        device = gpus[0].name.removeprefix("/physical_device:")
        return f"{device} ({card}; {len(gpus)} GPU(s) visible), {precision}"
    if precision == "mixed_float16":
        log.warning("train.model.cnn.precision mixed_float16 without a GPU: float16 on a CPU is slow")
    return f"the CPU ({_cpu_name()}, {os.cpu_count()} cores; no GPU visible to TensorFlow), {precision}"


def _cpu_name() -> str:
    """The CPU's model name, as ``lscpu`` gives it (Linux), else the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def make_optimizer(
    name: str,
    learning_rate: float | None,
    schedule: str = "constant",
    total_steps: int = 1,
    loss_scaling: bool = False,
) -> keras.optimizers.Optimizer:
    """The named optimizer; ``learning_rate=None`` keeps Keras's default for it.

    ``schedule="cosine"`` decays the rate to 0 over ``total_steps`` (``CosineDecay``).
    ``loss_scaling`` wraps it in Keras's ``LossScaleOptimizer``, which float16 gradients need.
    """
    optimizer = _OPTIMIZERS[name]
    if learning_rate is None:
        learning_rate = inspect.signature(optimizer).parameters["learning_rate"].default
    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    made = optimizer(learning_rate=learning_rate)
    return keras.optimizers.LossScaleOptimizer(made) if loss_scaling else made


def fit(
    model: keras.Model, train: Split, val: Split, params: TrainParams, checkpoint_path: Path, live: Live
) -> pd.DataFrame:
    """Train with validation; ``ModelCheckpoint(save_best_only=True)`` keeps the lowest val_loss and
    :class:`EpochLog` logs every epoch to ``live``. The history, one row per epoch (from 1)."""
    steps_per_epoch = math.ceil(len(train.y) / params.batch_size)
    model.compile(
        optimizer=make_optimizer(
            params.optimizer,
            params.learning_rate,
            params.learning_rate_schedule,
            total_steps=params.epochs * steps_per_epoch,
            loss_scaling=params.model.precision == "mixed_float16",
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=params.model.family.steps_per_execution,
    )
    # A person watching a terminal sees each epoch's batches as a bar, cleared before the epoch's line.
    bar = [BatchProgress(params.epochs, steps_per_epoch)] if sys.stderr.isatty() else []
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(checkpoint_path), monitor="val_loss", save_best_only=True),
        keras.callbacks.TerminateOnNaN(),
        *bar,
        EpochLog(params.epochs, live),
    ]
    if params.early_stopping.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=params.early_stopping.patience,
                restore_best_weights=params.early_stopping.restore_best_weights,
            )
        )
    legacy_h5_notice = _DropMessages("HDF5 file via `model.save()`")
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(legacy_h5_notice)  # the tutorial's .h5 is a deliberate, documented choice
    try:
        history = model.fit(
            train.x,
            train.y,
            validation_data=(val.x, val.y),
            epochs=params.epochs,
            batch_size=params.batch_size,
            validation_batch_size=params.validation_batch_size,
            callbacks=callbacks,
            verbose=0,  # EpochLog: one log line per epoch, which the Prefect flow also receives
        )
    finally:
        absl_logger.removeFilter(legacy_h5_notice)
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", range(1, len(frame) + 1))
    return frame[HISTORY_COLUMNS]


class EpochLog(keras.callbacks.Callback):
    """Each epoch, numbered from 1 as Keras prints them, to DVCLive and to the log.

    DVCLive gets ``train/loss``, ``train/accuracy``, ``val/loss`` and ``val/accuracy`` at step
    ``epoch`` (the learning curves); its summary, which ``dvc exp show`` shows while the run goes on,
    keeps the step and the ``val`` numbers: the names evaluate's and the report's metrics use. The log
    line (which the Prefect flow receives too) gives the epoch out of the total and the seconds."""

    def __init__(self, epochs: int, live: Live) -> None:
        super().__init__()
        self.epochs = epochs
        self.live = live
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        scores = {
            f"{split}/{name}": float(logs.get(f"{prefix}{name}", float("nan")))
            for split, prefix in (("train", ""), ("val", "val_"))
            for name in ("accuracy", "loss")  # as evaluate's test.* are ordered
        }
        self.live.step = epoch + 1
        for name, value in scores.items():
            self.live.log_metric(name, value)
        self.live.summary.pop("train", None)  # the curves keep it; one row per name in `dvc exp show`
        self.live.make_summary()
        log.info(
            "epoch %d/%d: loss %.4f accuracy %.4f | val_loss %.4f val_accuracy %.4f | %.1f s",
            epoch + 1,
            self.epochs,
            scores["train/loss"],
            scores["train/accuracy"],
            scores["val/loss"],
            scores["val/accuracy"],
            time.monotonic() - self.started,
            extra=progress(
                epoch + 1,
                self.epochs,
                f"epoch {epoch + 1} of {self.epochs}, val_accuracy {scores['val/accuracy']:.4f}",
            ),
        )


class BatchProgress(keras.callbacks.Callback):
    """A terminal's progress bar over each epoch's batches; it clears itself before the epoch's line."""

    def __init__(self, epochs: int, steps: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.steps = steps
        self.bar: tqdm | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.bar = tqdm(
            total=self.steps,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            file=sys.stderr,
        )

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.bar is not None:  # Keras calls this once per `steps_per_execution` batches
            self.bar.update(batch + 1 - self.bar.n)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


class TrainingDiverged(PipelineError):
    """No epoch reached a finite validation loss: there is no model worth keeping."""


class OutOfMemory(PipelineError):
    """The model or a batch does not fit in memory."""


@contextlib.contextmanager
def memory_errors_explained(doing: str, fix: str) -> Iterator[None]:
    """Turn TensorFlow's and Python's out-of-memory errors into one line that says what to change."""
    try:
        yield
    except (MemoryError, tf.errors.ResourceExhaustedError) as exc:
        allocation = re.search(r"OOM when allocating tensor with shape\[[^\]]*\]", str(exc))
        detail = allocation.group(0) if allocation else type(exc).__name__
        raise OutOfMemory(f"out of memory {doing} ({detail}); {fix}") from None


def check_converged(history: pd.DataFrame, checkpoint: Path, learning_rate: float | None) -> keras.Model:
    """Refuse a diverged run before its checkpoint can replace a good model; the best model otherwise."""
    finite = np.isfinite(history["val_loss"].to_numpy(dtype=float))
    model = keras.models.load_model(checkpoint, compile=False, safe_mode=True) if finite.any() else None
    weights = model.get_weights() if model else []
    if model is None or not all(np.isfinite(layer).all() for layer in weights):
        rate = "the optimizer's default" if learning_rate is None else learning_rate
        raise TrainingDiverged(
            f"training diverged: no epoch reached a finite val_loss (learning rate {rate}), so the "
            "previous model is kept; lower train.learning_rate or use another train.optimizer"
        )
    if not finite.all():
        log.warning(
            "training stopped at epoch %d: the loss became NaN; the checkpoint keeps the best epoch before",
            len(history),
        )
    return model
