"""Checks on the real Fashion-MNIST files from the Debian package (installed by .ci/run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, dvc, requires_real_data
from pipeline.dataset import CLASS_NAMES
from pipeline.ingest import ingest
from pipeline.params import load_params
from pipeline.paths import Paths
from pipeline.preprocess import run as preprocess
from pipeline.splits import load_split

pytestmark = pytest.mark.real_data


@pytest.fixture(autouse=True)
def _real_data() -> None:
    requires_real_data()


def test_debian_files_verify_and_split_like_the_tutorial(tmp_path: Path) -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    paths = Paths(tmp_path)
    ingest(params.ingest.sources[:1], params.ingest.sha256, paths.raw_dir)
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
    dvc("repro", cwd=project)
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    # The tutorial's net passes 0.84 validation accuracy after one epoch.
    assert metrics["val"]["accuracy"] > 0.82
    assert metrics["test"]["accuracy"] > 0.80
