"""Integration: the real ``dvc repro`` on a project copy with tiny synthetic data and params."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import dvc, ran_stages, run, set_params, stage_outputs, write_dataset_spec

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
    assert set(metrics) == {"test"}  # the kept epoch's val.* are train's: one name, one source
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    # The stages' own lines only: no TensorFlow start-up or C++ notices, no Keras warnings.
    for noise in ("InitializeLog", "oneDNN", "E0000", "absl", "compiled metrics", "┏"):
        assert noise not in first.stdout + first.stderr, noise
    assert "pipeline.model.training: epoch 3/3:" in first.stderr
    again = dvc("repro", cwd=project)
    assert ran_stages(again.stdout) == set(), again.stdout
    assert "didn't change, skipping" in again.stdout

    # `dvc exp show` fits a terminal: the committed run and two experiments in at most 30 columns,
    # one name per number (test.* from evaluate, the kept epoch's val.* from train), then
    # what experiments vary; at 160 columns, with DVC's --only-changed, the names, both accuracies and the
    # varied params show whole.
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-q", "-m", "a run", cwd=project)
    fewer = dvc("exp", "run", "-S", "train.epochs=2", "--name", "two-epochs", cwd=project)
    assert ran_stages(fewer.stdout) == {"ingest", "train", "evaluate"}
    epochs = project / "reports/train/plots/metrics/val/loss.tsv"
    assert [line.split("\t")[0] for line in epochs.read_text().splitlines()] == ["step", "1", "2"]
    dvc("exp", "run", "-S", "train.model.dense.dropout=0.1", "--name", "less-dropout", cwd=project)
    columns = dvc("exp", "show", "--csv", cwd=project).stdout.splitlines()[0].split(",")
    assert len(columns) <= 30, columns
    metrics = ["test.accuracy", "test.loss", "test.macro_f1", "val.accuracy", "val.loss"]
    start = columns.index("test.accuracy")
    assert columns[start : start + 5] == metrics
    assert not {"eval.accuracy", "best.val_accuracy", "train.accuracy", "step"} & set(columns)
    first_params = ["train.epochs", "train.batch_size", "train.optimizer", "train.learning_rate"]
    start = columns.index("train.epochs")
    assert columns[start : start + 4] == first_params
    assert not [column for column in columns if "cnn" in column or "review" in column or "sha256" in column]
    shown = [sys.executable, "-m", "dvc", "exp", "show", "--no-pager", "--only-changed"]  # README's habit
    table = subprocess.run(
        shown, cwd=project, env=os.environ | {"COLUMNS": "160"}, capture_output=True, text=True
    )
    table = table.stdout
    for whole in (
        "two-epochs",
        "less-dropout",
        "test.accuracy",
        "val.accuracy",
        "train.epochs",
        "dense.dropout",
    ):
        assert whole in table, table
    run("git", "checkout", "--", ".", cwd=project)  # back to the committed run
    dvc("checkout", cwd=project)

    mirror = shutil.copytree(synthetic_source.directory, project.parent / "another-copy")
    write_dataset_spec(project, synthetic_source, sources=[str(project.parent / "nowhere"), str(mirror)])
    # ingest checks the spec whenever it changes; the same content means nothing after ingest.
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest"}
    assert dvc("params", "diff", cwd=project).stdout == ""  # the dataset spec is no param

    set_params(project, {"ingest.retries": 1})
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest"}

    set_params(project, {"evaluate.batch_size": 7})
    # ingest checks every edit of params.yaml (in a second: its files verify as they are); the
    # inference batch changes no score, so evaluate does not depend on it
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest"}

    status = dvc("status", "--json", cwd=project)
    assert json.loads(status.stdout) == {}


def test_two_runs_from_scratch_give_identical_metrics_and_model(project: Path) -> None:
    dvc("repro", cwd=project)
    metrics = (project / "reports/evaluate/metrics.json").read_bytes()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    dvc("repro", "--force", cwd=project)
    assert (project / "reports/evaluate/metrics.json").read_bytes() == metrics
    assert yaml.safe_load((project / "dvc.lock").read_text()) == lock  # same hashes, model included
