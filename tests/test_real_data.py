"""Checks on the real Fashion-MNIST files from the Debian package (installed by .ci/run)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO_ROOT, dvc, requires_real_data, run
from pipeline.core.dataset import CLASS_NAMES
from pipeline.core.params import load_dataset_spec, load_params
from pipeline.core.paths import Paths
from pipeline.core.splits import load_split
from pipeline.review.metrics import run_metrics

pytestmark = pytest.mark.real_data


@pytest.fixture(autouse=True)
def _real_data() -> None:
    requires_real_data()


def test_debian_files_verify_and_split_like_the_tutorial(tmp_path: Path) -> None:
    from pipeline.stages.ingest import ingest
    from pipeline.stages.preprocess import run as preprocess

    params, spec = load_params(REPO_ROOT / "params.yaml"), load_dataset_spec(Paths(REPO_ROOT).dataset_spec)
    paths = Paths(tmp_path)
    ingest(spec.sources[:1], spec.sha256, paths.raw_dir)
    preprocess(paths, **params.preprocess.model_dump())
    train, val, test = (load_split(paths.split(name)) for name in ("train", "val", "test"))
    assert (len(train.y), len(val.y), len(test.y)) == (48000, 12000, 10000)
    assert train.x.shape[1:] == (28, 28) and train.x.dtype == np.uint8
    assert np.bincount(test.y).tolist() == [1000] * len(CLASS_NAMES)


@pytest.mark.integration
def test_short_real_training_through_dvc_repro(project: Path) -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copyfile(Paths(REPO_ROOT).dataset_spec, Paths(project).dataset_spec)  # the real files
    dvc("repro", cwd=project)
    metrics = run_metrics(
        *(
            json.loads((project / f"reports/{stage}/metrics.json").read_text())
            for stage in ("evaluate", "train")
        )
    )
    # The tutorial's net passes 0.84 validation accuracy after one epoch.
    assert metrics["val"]["accuracy"] > 0.82
    assert metrics["test"]["accuracy"] > 0.80
    predict_real_test_images_as_files(project, metrics["test"]["accuracy"])


def predict_real_test_images_as_files(project: Path, test_accuracy: float, count: int = 300) -> None:
    """``python -m pipeline predict`` on real test images saved as a user would have them: as they
    are (PNG), and as photos (dark on white, RGB, 4x larger, JPEG). Agreement with the labels stays
    close to the test accuracy."""
    test = load_split(project / "data/processed/test.npz")
    folder = project / "images"
    folder.mkdir()
    files, labels = [], []
    for index in range(count):
        pixels, label = test.x[index], CLASS_NAMES[test.y[index]]
        Image.fromarray(pixels).save(folder / f"{index}.png")
        photo = Image.fromarray(255 - np.kron(pixels, np.ones((4, 4), np.uint8))).convert("RGB")
        photo.save(folder / f"{index}.jpg", quality=90)
        files += [folder / f"{index}.png", folder / f"{index}.jpg"]
        labels += [label, label]
    result = run(sys.executable, "-m", "pipeline", "predict", "--json", *map(str, files), cwd=project)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["path"] for record in records] == list(map(str, files))
    for kind in ("png", "jpg"):
        hits = [
            r["class"] == label for r, label in zip(records, labels, strict=True) if r["path"].endswith(kind)
        ]
        assert np.mean(hits) > test_accuracy - 0.05, kind
