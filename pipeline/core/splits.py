"""The processed splits as the stages pass them on disk: one ``.npz`` of ``x`` and ``y`` per split."""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import atomic
from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class Split:
    """Images ``x`` (N, rows, cols) and integer labels ``y`` (N,)."""

    x: np.ndarray
    y: np.ndarray


def save_split(path: Path, split: Split) -> None:
    with atomic.atomic_path(path) as tmp:
        np.savez(tmp, x=split.x, y=split.y)


def load_split(path: Path) -> Split:
    """The split in ``path``; a file that is not one (bit rot, a truncated copy) is one line."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return Split(arrays["x"], arrays["y"])
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, zlib.error) as exc:
        raise PipelineError(
            f"{path} is corrupt ({type(exc).__name__}: {exc}); `dvc repro -f preprocess` rebuilds it, "
            "`python -m pipeline verify` lists every output that differs from dvc.lock"
        ) from None


def check_split(labels: np.ndarray, *, test_size: float, stratify: bool) -> None:
    """Fail, naming the ``preprocess`` keys, when ``train_test_split`` cannot split ``labels`` so:
    each side needs an image, and with ``stratify`` every class needs one on each side."""
    total = len(labels)
    held_out = math.ceil(test_size * total)  # as scikit-learn rounds
    kept = total - held_out
    if held_out < 1 or kept < 1:
        raise PipelineError(
            f"preprocess.test_size: {test_size} of {total} images leaves {kept} for training and "
            f"{held_out} for validation; each needs at least one"
        )
    if not stratify:
        return
    counts = np.bincount(labels)
    classes = int(np.count_nonzero(counts))
    if counts[counts > 0].min() < 2:
        raise PipelineError(
            "preprocess.stratify: true needs two images of every class, and a class of the training "
            "images has one; use stratify: false"
        )
    if held_out < classes or kept < classes:
        lowest = max(classes / total, 2 / total)
        raise PipelineError(
            f"preprocess.stratify: true needs an image of each of the {classes} classes on both sides, "
            f"but preprocess.test_size: {test_size} of {total} images holds out {held_out}; "
            f"use a test_size between {lowest:.2g} and {1 - lowest:.2g} or stratify: false"
        )
