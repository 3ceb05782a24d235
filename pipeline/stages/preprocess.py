"""Stage 2, preprocess: decode the IDX files, check them, split train/validation.

The images stay uint8 (a quarter of float32's cache and disk); the model scales them itself
(:func:`pipeline.model.families.pixel_scaling`). The 10,000 test images stay apart. Also writes the sample
figure and per-split class counts.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.core import atomic, figures, stage_cli
from pipeline.core.dataset import CLASS_NAMES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from pipeline.core.idx import IdxError, read_idx
from pipeline.core.params import Params
from pipeline.core.paths import Paths
from pipeline.core.splits import Split, check_split, save_split

log = logging.getLogger(__spec__.name)  # "pipeline.stages.x", also when run as __main__


def load_labelled(images_path: Path, labels_path: Path) -> Split:
    """Read an images/labels IDX pair, checking they agree and the labels are valid classes."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxError(
            f"{images_path}: expected uint8 images (N, rows, cols), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IdxError(f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise IdxError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise IdxError(f"{labels_path}: label {labels.max()} out of range 0..{len(CLASS_NAMES) - 1}")
    return Split(images, labels)


def split_train_val(
    train: Split, *, test_size: float, random_state: int, stratify: bool
) -> tuple[Split, Split]:
    """The tutorial's ``train_test_split`` of the training images into train and validation."""
    check_split(train.y, test_size=test_size, stratify=stratify)
    x_train, x_val, y_train, y_val = train_test_split(
        train.x,
        train.y,
        test_size=test_size,
        random_state=random_state,
        stratify=train.y if stratify else None,
    )
    return Split(x_train, y_train), Split(x_val, y_val)


def class_counts(splits: dict[str, Split]) -> pd.DataFrame:
    """One row per class, one column per split, plus totals."""
    counts = pd.DataFrame(
        {name: np.bincount(split.y, minlength=len(CLASS_NAMES)) for name, split in splits.items()},
        index=pd.Index(CLASS_NAMES, name="class"),
    )
    counts.loc["total"] = counts.sum()
    return counts


def main(params: Params, paths: Paths) -> None:
    """The stage's command: ``preprocess.*`` from params."""
    run(paths, **params.preprocess.model_dump())


def run(paths: Paths, *, test_size: float, random_state: int, stratify: bool) -> dict[str, Split]:
    """Read ``data/raw``, write ``data/processed`` and the preprocess reports."""
    raw = paths.raw_dir
    train_full = load_labelled(raw / TRAIN_IMAGES, raw / TRAIN_LABELS)
    test_raw = load_labelled(raw / TEST_IMAGES, raw / TEST_LABELS)
    train, val = split_train_val(
        train_full, test_size=test_size, random_state=random_state, stratify=stratify
    )
    splits = {"train": train, "val": val, "test": test_raw}
    for name, split in splits.items():
        save_split(paths.split(name), split)
        log.info("%s: %d images %s", paths.split(name), len(split.y), split.x.shape[1:])
    figures.save(figures.sample_grid(train_full.x, train_full.y, CLASS_NAMES), paths.samples_png)
    atomic.write_text(paths.class_counts_csv, class_counts(splits).to_csv())
    log.info("peak memory %.0f MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return splits


if __name__ == "__main__":
    raise SystemExit(stage_cli.run("preprocess", main))
