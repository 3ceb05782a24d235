"""Preprocess: decode, validate and split the raw files (uint8); write the figure and class counts."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from pipeline.core.dataset import CLASS_NAMES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from pipeline.core.idx import IdxError, encode_idx
from pipeline.core.paths import Paths
from pipeline.core.splits import load_split
from pipeline.stages.ingest import ingest


@pytest.fixture(autouse=True, scope="module")
def _preprocess() -> None:
    """The stage (scikit-learn, pandas, matplotlib) loads when the first test runs, not at collection."""
    global pd, load_labelled, run  # noqa: PLW0603
    import pandas as pd

    from pipeline.stages.preprocess import load_labelled, run


@pytest.fixture
def paths(tmp_path, synthetic_source) -> Paths:
    paths = Paths(tmp_path)
    ingest([str(synthetic_source.directory)], synthetic_source.sha256, paths.raw_dir)
    return paths


def test_run_writes_uint8_splits_of_the_raw_pixels_with_the_test_set_apart(paths) -> None:
    run(paths, test_size=0.2, random_state=42, stratify=False)
    train, val, test = (load_split(paths.split(name)) for name in ("train", "val", "test"))
    assert (len(train.y), len(val.y), len(test.y)) == (240, 60, 100)
    for split in (train, val, test):
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (28, 28)
        assert split.y.dtype == np.uint8
    assert paths.samples_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    counts = pd.read_csv(paths.class_counts_csv, index_col="class")
    assert list(counts.index) == [*CLASS_NAMES, "total"]
    assert counts.loc["total"].to_dict() == {"train": 240, "val": 60, "test": 100}
    assert (counts.loc[list(CLASS_NAMES), "test"] == 10).all()
    raw = load_labelled(paths.raw_dir / TRAIN_IMAGES, paths.raw_dir / TRAIN_LABELS)
    stored = np.concatenate([train.x, val.x])
    assert sorted(map(bytes, stored)) == sorted(map(bytes, raw.x))  # the pixels as they came, split


def test_split_is_deterministic_and_follows_random_state(paths) -> None:
    run(paths, test_size=0.2, random_state=42, stratify=False)
    first = load_split(paths.split("val")).y.copy()
    run(paths, test_size=0.2, random_state=42, stratify=False)
    np.testing.assert_array_equal(load_split(paths.split("val")).y, first)
    run(paths, test_size=0.2, random_state=7, stratify=False)
    assert not np.array_equal(load_split(paths.split("val")).y, first)


def test_stratify_keeps_class_proportions(paths) -> None:
    run(paths, test_size=0.2, random_state=42, stratify=True)
    val = load_split(paths.split("val"))
    assert set(np.bincount(val.y, minlength=10)) == {6}


def test_labels_out_of_range_are_rejected(paths) -> None:
    (paths.raw_dir / TEST_LABELS).write_bytes(encode_idx(np.full(100, 10, dtype=np.uint8)))
    with pytest.raises(IdxError, match=r"label 10 out of range 0\.\.9"):
        run(paths, test_size=0.2, random_state=42, stratify=False)


def test_images_and_labels_must_agree_in_count(paths) -> None:
    (paths.raw_dir / TRAIN_LABELS).write_bytes(encode_idx(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(IdxError, match="has 300 images but .* has 5 labels"):
        load_labelled(paths.raw_dir / TRAIN_IMAGES, paths.raw_dir / TRAIN_LABELS)


def test_corrupt_raw_file_fails_and_writes_no_split(paths) -> None:
    raw_images = paths.raw_dir / TRAIN_IMAGES
    raw_images.write_bytes(raw_images.read_bytes()[:-100])
    with pytest.raises(IdxError, match=f"{raw_images}: file length"):
        run(paths, test_size=0.2, random_state=42, stratify=False)
    assert not paths.processed_dir.exists()


def test_images_must_be_three_dimensional_bytes(tmp_path) -> None:
    images = tmp_path / "images"
    labels = tmp_path / "labels"
    images.write_bytes(gzip.compress(encode_idx(np.zeros((4, 784), dtype=np.uint8))))
    labels.write_bytes(encode_idx(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(IdxError, match=r"expected uint8 images \(N, rows, cols\)"):
        load_labelled(images, labels)
