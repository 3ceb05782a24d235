"""Integration: the real ``dvc repro`` on a project copy with tiny synthetic data and params."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import dvc, ran_stages, set_params, stage_outputs, write_dataset_spec

pytestmark = pytest.mark.integration


def test_repro_builds_everything_then_skips_and_reruns_only_what_changed(
    project_own_cache: Path, synthetic_source
) -> None:
    project = project_own_cache  # every stage must run, not come from the session's run cache
    first = dvc("repro", cwd=project)
    assert ran_stages(first.stdout) == {"ingest", "preprocess", "train", "evaluate"}
    for output in stage_outputs(project):
        assert output.is_file(), output
    assert (project / "dvc.lock").is_file()
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert set(metrics) == {"val", "test"}
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    # The stages' own lines only: no TensorFlow start-up or C++ notices, no Keras warnings.
    for noise in ("InitializeLog", "oneDNN", "E0000", "absl", "compiled metrics", "┏"):
        assert noise not in first.stdout + first.stderr, noise
    assert "pipeline.model.training: epoch 3/3:" in first.stderr
    # `dvc exp show` starts with the headline metrics, then DVCLive's summary of training (the last
    # epoch and the best), then the params people vary; the dataset's sources and checksums and the
    # per-class scores are not columns, and at most 10 dependencies are.
    columns = dvc("exp", "show", "--csv", cwd=project).stdout.splitlines()[0].split(",")
    metrics = ["test.accuracy", "test.loss", "test.macro_f1", "val.accuracy", "val.loss"]
    start = columns.index("test.accuracy")
    assert columns[start : start + 5] == metrics
    assert {"best.epoch", "best.val_accuracy", "eval.accuracy", "step"} <= set(
        columns[start + 5 : start + 14]
    )
    first_params = ["train.epochs", "train.batch_size", "train.optimizer", "train.learning_rate"]
    start = columns.index("train.epochs")
    assert columns[start : start + 4] == first_params
    assert len([column for column in columns if "/" in column]) <= 10
    assert not [
        column for column in columns if "per_class" in column or "sha256" in column or "sources" in column
    ]

    again = dvc("repro", cwd=project)
    assert ran_stages(again.stdout) == set(), again.stdout
    assert "didn't change, skipping" in again.stdout

    mirror = shutil.copytree(synthetic_source.directory, project.parent / "another-copy")
    write_dataset_spec(project, synthetic_source, sources=[str(project.parent / "nowhere"), str(mirror)])
    # ingest checks the spec whenever it changes; the same content means nothing after ingest.
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest"}
    assert dvc("params", "diff", cwd=project).stdout == ""  # the dataset spec is no param

    set_params(project, {"ingest.retries": 1})
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest"}

    set_params(project, {"evaluate.batch_size": 7})
    # ingest checks every edit of params.yaml (in a second: its files verify as they are)
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest", "evaluate"}

    set_params(project, {"train.epochs": 2})
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest", "train", "evaluate"}
    epochs = project / "reports/train/plots/metrics/eval/loss.tsv"
    assert len(epochs.read_text().splitlines()) == 1 + 2  # a header and two epochs

    status = dvc("status", "--json", cwd=project)
    assert json.loads(status.stdout) == {}


def test_two_runs_from_scratch_give_identical_metrics_and_model(project: Path) -> None:
    dvc("repro", cwd=project)
    metrics = (project / "reports/evaluate/metrics.json").read_bytes()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    dvc("repro", "--force", cwd=project)
    assert (project / "reports/evaluate/metrics.json").read_bytes() == metrics
    assert yaml.safe_load((project / "dvc.lock").read_text()) == lock  # same hashes, model included
