"""Faults under a plain ``dvc repro``: each is one line naming the key or file and the fix, a non-zero
exit, the previous outputs and ``dvc.lock`` intact (or put back by the command the error names), and
a next run that completes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keras
import pytest
import yaml

from conftest import commit_all, dvc, ran_stages, set_params, snapshot
from pipeline.core.paths import Paths

pytestmark = pytest.mark.integration


@pytest.fixture
def built(reproduced: Path) -> Path:
    """The project after a complete ``dvc repro``."""
    return reproduced


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if " ERROR " in line]


def without(files: dict[str, bytes], *names: str) -> dict[str, bytes]:
    return {name: content for name, content in files.items() if name not in names}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train.epochs": 0}, r"train\.epochs: Input should be greater than or equal to 1 \(got 0\)"),
        ({"train.epochs": 10_000_000}, r"train\.epochs: Input should be less than or equal to 1000"),
        ({"train.batch_size": 1_000_000_000}, r"train\.batch_size: Input should be less than or equal to"),
        ({"train.learning_rate": float("inf")}, r"train\.learning_rate: Input should be a finite number"),
        ({"train.seed": 2**32}, r"train\.seed: Input should be less than or equal to 4294967295"),
        (
            {"train.model.dense.hidden_units": [1_000_000_000]},
            r"train\.model\.dense\.hidden_units\.0: .*less than or equal",
        ),
        (
            {"review.min_test_accuracy": 2},
            r"review\.min_test_accuracy: Input should be less than or equal to 1",
        ),
        ({"bogus": {"key": 1}}, r"bogus: unknown key"),
    ],
)
def test_a_bad_param_stops_dvc_repro_before_any_output_is_deleted(built: Path, change, message) -> None:
    before = snapshot(built)
    if "bogus" in change:  # not a key of the schema: written by hand, as a user would
        (built / "params.yaml").write_text((built / "params.yaml").read_text() + "bogus:\n  key: 1\n")
    else:
        set_params(built, change)
    result = dvc("repro", cwd=built, check=False)
    assert result.returncode != 0
    (line,) = errors(result)
    assert "ingest failed: " in line
    assert re.search(message, line), line
    assert "Traceback" not in result.stdout + result.stderr
    assert without(snapshot(built), "params.yaml") == without(before, "params.yaml")  # dvc.lock too

    (built / "params.yaml").write_bytes(before["params.yaml"])
    assert dvc("repro", cwd=built).returncode == 0  # the next run completes (validate only)
    assert json.loads(dvc("status", "--json", cwd=built).stdout) == {}


def test_a_diverged_training_writes_no_model_and_restore_puts_back_the_previous(built: Path) -> None:
    before = snapshot(built)
    set_params(
        built,
        {
            "train.optimizer": "sgd",
            "train.learning_rate": 10.0,
            "train.model.dense.hidden_units": [256] * 6,
            "train.model.dense.dropout": 0.0,
        },
    )
    result = dvc("repro", cwd=built, check=False)
    assert result.returncode != 0
    (line,) = errors(result)
    assert "train failed: training diverged: no epoch reached a finite val_loss" in line
    assert "`python -m pipeline restore train` puts back the ones dvc.lock records" in line
    assert "Traceback" not in result.stdout + result.stderr
    assert not Paths(built).model.exists()  # DVC deleted the good one; no NaN model replaced it
    assert not list(Paths(built).model.parent.glob(".*.tmp*"))

    restore = subprocess.run(
        [sys.executable, "-m", "pipeline", "restore", "train"], cwd=built, capture_output=True, text=True
    )
    assert restore.returncode == 0, restore.stderr
    (built / "params.yaml").write_bytes(before["params.yaml"])
    # Model and reports are back as dvc.lock records them; only ingest, which passed the diverging
    # params, checks the file again.
    assert ran_stages(dvc("repro", cwd=built).stdout) == {"ingest"}
    assert snapshot(built) == before


@contextlib.contextmanager
def mounted(folder: Path, size: str, *, read_only: bool = False) -> Iterator[None]:
    """A tmpfs of ``size`` over ``folder``, holding what it held; skipped where mounting is not permitted."""
    kept = folder.parent / f"{folder.name}.kept"
    shutil.copytree(folder, kept)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mount.returncode != 0:
        shutil.rmtree(kept)
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        shutil.copytree(kept, folder, dirs_exist_ok=True)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        shutil.rmtree(kept)


def test_a_full_disk_is_one_line_and_restore_puts_the_model_back(built: Path) -> None:
    model = Paths(built).model
    before = model.read_bytes()
    models_size = sum(path.stat().st_size for path in model.parent.iterdir())
    with mounted(model.parent, str(models_size + 64 * 1024)):
        set_params(built, {"train.model.dense.hidden_units": [512]})  # a checkpoint several times larger
        result = dvc("repro", cwd=built, check=False)
        assert result.returncode != 0
        (line,) = errors(result)
        assert "train failed: No space left on device" in line
        assert "python -m pipeline restore train" in line
        assert not list(model.parent.glob(".*.tmp*"))  # no half-written checkpoint left behind
        subprocess.run([sys.executable, "-m", "pipeline", "restore", "train"], cwd=built, check=True)
        assert model.read_bytes() == before


def test_a_read_only_output_folder_is_one_line(built: Path) -> None:
    with mounted(Paths(built).metrics_json.parent, "1m", read_only=True):
        # DVC meets it first, deleting the old outputs
        by_dvc = dvc("repro", "--single-item", "--force", "evaluate", cwd=built, check=False)
        by_stage = subprocess.run(
            [sys.executable, "-m", "pipeline", "evaluate"], cwd=built, capture_output=True, text=True
        )
    for result in (by_dvc, by_stage):
        assert result.returncode != 0
        lines = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
        assert len(lines) == 1 and "Read-only file system" in lines[0] and "reports/evaluate" in lines[0], (
            lines
        )
        assert "Traceback" not in result.stdout + result.stderr
    assert dvc("repro", cwd=built).returncode == 0


def test_a_model_file_that_would_run_code_is_refused(built: Path) -> None:
    """A Lambda layer in an .h5 is code; evaluate never loads it (the file may come from a remote)."""
    inputs = keras.Input(shape=(28, 28))
    outputs = keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(10)(outputs)).save(Paths(built).model)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "evaluate"], cwd=built, capture_output=True, text=True
    )
    assert result.returncode == 1
    (line,) = errors(result)
    assert "evaluate failed: " in line and "models/best-model.h5: refused" in line
    assert "Traceback" not in result.stderr


def test_restore_needs_no_git_program_and_works_from_a_subfolder(built: Path, tmp_path: Path) -> None:
    """The outputs git keeps come from its last commit through DVC, not the ``git`` program; a cache
    without them (a fresh clone's) leaves git's commit as the only copy."""
    commit_all(built, "a run")
    before = snapshot(built)
    lock = yaml.safe_load((built / "dvc.lock").read_text())
    (metrics,) = [
        out for out in lock["stages"]["train"]["outs"] if out["path"] == "reports/train/metrics.json"
    ]
    cache = built / ".dvc" / "cache" / "files" / "md5"
    (cache / metrics["md5"][:2] / metrics["md5"][2:]).unlink()
    shutil.rmtree(built / "reports" / "train")
    for model in (Paths(built).model, Paths(built).keras_model):
        model.unlink()
    no_git = tmp_path / "bin"
    no_git.mkdir()
    restore = subprocess.run(
        [sys.executable, "-m", "pipeline", "restore", "train"],
        cwd=built / "reports",
        env={**os.environ, "PATH": str(no_git)},
        capture_output=True,
        text=True,
    )
    assert restore.returncode == 0, restore.stderr
    for path in (
        "models/best-model.h5",
        "models/model.keras",
        "reports/train/plots",
        "reports/train/metrics.json",
    ):
        assert f"{path}: put back as dvc.lock records it" in restore.stderr
    assert snapshot(built) == before
    assert json.loads(dvc("status", "--json", cwd=built).stdout) == {}


def test_restore_outside_a_git_repository_or_the_project_is_one_line(built: Path, tmp_path: Path) -> None:
    shutil.rmtree(built / ".git")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for where, message in (
        (built, f"{built} is not a git repository: DVC needs the project's git repository"),
        (outside, "you are not inside of a DVC repository"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "restore", "train"], cwd=where, capture_output=True, text=True
        )
        assert result.returncode == 1
        (line,) = errors(result)
        assert "restore failed: " in line and message in line, line
        assert "Traceback" not in result.stderr
