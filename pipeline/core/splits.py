"""The processed splits as the stages pass them on disk: one ``.npz`` of ``x`` and ``y`` per split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import atomic


@dataclass(frozen=True)
class Split:
    """Images ``x`` (N, rows, cols) and integer labels ``y`` (N,)."""

    x: np.ndarray
    y: np.ndarray


def save_split(path: Path, split: Split) -> None:
    with atomic.atomic_path(path) as tmp:
        np.savez(tmp, x=split.x, y=split.y)


def load_split(path: Path) -> Split:
    with np.load(path, allow_pickle=False) as arrays:
        return Split(arrays["x"], arrays["y"])
