"""The PNG figures people look at: sample grid, learning curves, confusion matrix, per-class F1."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from pipeline.core import atomic  # noqa: E402


def save(figure: Figure, path: Path) -> None:
    """Write ``figure`` as a PNG atomically and free it."""
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight", format="png", metadata={"Software": None})
    plt.close(figure)


def as_image(figure: Figure) -> Image.Image:
    """``figure`` drawn as :func:`save` draws it, as a Pillow image (what ``Live.log_image`` takes);
    the figure is freed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100, bbox_inches="tight", format="png", metadata={"Software": None})
    plt.close(figure)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return image.copy()


def sample_grid(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Figure:
    """The first image of each class, titled with its class name (the tutorial's figure)."""
    figure, axes = plt.subplots(1, len(class_names), figsize=(1.6 * len(class_names), 2.2))
    for label, (axis, name) in enumerate(zip(np.atleast_1d(axes), class_names, strict=True)):
        matches = np.flatnonzero(labels == label)
        if matches.size:
            axis.imshow(images[matches[0]], cmap="gray_r")
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    figure.suptitle("First training image of each class")
    return figure


def learning_curve(history: pd.DataFrame, metric: str) -> Figure:
    """Train vs validation ``metric`` per epoch, marking the best-validation-loss epoch."""
    figure, axis = plt.subplots(figsize=(6, 4))
    epochs = history["epoch"]
    axis.plot(epochs, history[metric], marker="o", label="train")
    axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
    best = history.loc[history["val_loss"].idxmin(), "epoch"]
    axis.axvline(best, color="grey", linestyle="--", label=f"best checkpoint (epoch {best})")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("sparse categorical cross-entropy" if metric == "loss" else metric)
    axis.set_title(f"Train vs validation {metric}")
    axis.legend()
    axis.grid(alpha=0.3)
    return figure


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Test-set confusion matrix with class names on both axes."""
    figure, axis = plt.subplots(figsize=(9, 8))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(class_names))),
        display_labels=list(class_names),
        xticks_rotation=45,
        colorbar=False,
        ax=axis,
    )
    plt.setp(axis.get_xticklabels(), ha="right", rotation_mode="anchor")
    axis.set_xlabel("predicted class")
    axis.set_ylabel("actual class")
    axis.set_title("Confusion matrix (test set)")
    return figure


def per_class_f1(f1_by_class: dict[str, float]) -> Figure:
    """Horizontal bars of test F1 per class, the value printed beside each bar."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    names = list(f1_by_class)
    values = [f1_by_class[name] for name in names]
    bars = axis.barh(names, values, color="tab:blue")
    axis.bar_label(bars, fmt="%.3f", padding=3)
    axis.set_xlim(0, 1.1)
    axis.invert_yaxis()
    axis.set_xlabel("F1 score")
    axis.set_title("Per-class F1 (test set)")
    return figure
