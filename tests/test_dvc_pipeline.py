"""Integration: the real ``dvc repro`` on a project copy with tiny synthetic data and params."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import dvc

pytestmark = pytest.mark.integration

OUTPUTS = (
    "data/raw/train-images-idx3-ubyte",
    "data/processed/train.npz",
    "data/processed/val.npz",
    "data/processed/test.npz",
    "models/best-model.h5",
    "reports/preprocess/samples.png",
    "reports/preprocess/class_counts.csv",
    "reports/train/history.csv",
    "reports/train/loss.png",
    "reports/train/accuracy.png",
    "reports/evaluate/metrics.json",
    "reports/evaluate/test_predictions.csv",
    "reports/evaluate/confusion_matrix.png",
    "reports/evaluate/per_class_f1.png",
)


def ran_stages(output: str) -> set[str]:
    """Stages ``dvc repro`` actually ran, from its ``Running stage '<name>'`` lines."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def set_param(project: Path, section: str, key: str, value: object) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_builds_everything_then_skips_and_reruns_only_what_changed(
    project: Path, synthetic_source
) -> None:
    first = dvc("repro", cwd=project)
    assert ran_stages(first.stdout) == {"ingest", "preprocess", "train", "evaluate"}
    for output in OUTPUTS:
        assert (project / output).is_file(), output
    assert (project / "dvc.lock").is_file()
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert set(metrics) == {"val", "test"}
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0

    again = dvc("repro", cwd=project)
    assert ran_stages(again.stdout) == set(), again.stdout
    assert "didn't change, skipping" in again.stdout

    mirror = shutil.copytree(synthetic_source.directory, project.parent / "another-copy")
    set_param(project, "ingest", "sources", [str(project.parent / "nowhere"), str(mirror)])
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest"}  # same content: nothing after

    set_param(project, "evaluate", "batch_size", 7)
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"evaluate"}

    set_param(project, "train", "epochs", 2)
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"train", "evaluate"}
    assert len((project / "reports/train/history.csv").read_text().splitlines()) == 1 + 2

    status = dvc("status", "--json", cwd=project)
    assert json.loads(status.stdout) == {}


def test_two_runs_from_scratch_give_identical_metrics_and_model(project: Path) -> None:
    dvc("repro", cwd=project)
    metrics = (project / "reports/evaluate/metrics.json").read_bytes()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    dvc("repro", "--force", cwd=project)
    assert (project / "reports/evaluate/metrics.json").read_bytes() == metrics
    assert yaml.safe_load((project / "dvc.lock").read_text()) == lock  # same hashes, model included
