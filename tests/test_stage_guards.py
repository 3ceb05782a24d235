"""What a stage records under ``dvc repro`` when the run around it goes wrong: params edited while it
trains, the ``dvc`` process killed or interrupted, params that only fail with the data in hand, files
that are not the dataset's, a corrupt split. Real ``dvc repro`` processes on a tiny built project."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import dvc, set_params, snapshot
from pipeline.core.paths import Paths

pytestmark = pytest.mark.integration
WAIT_S = 120


def locked_epochs(project: Path) -> int:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"]


def stage_processes(project: Path, stage: str) -> list[psutil.Process]:
    """The Python processes running ``stage``'s command in ``project``."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        command = " ".join(process.info["cmdline"] or [])
        if f"pipeline.stages.{stage}" in command and process.info["cwd"] == str(project):
            found.append(process)
    return found


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.2)


def wait_for_training(repro: subprocess.Popen, log: Path) -> None:
    """Until the run logging to ``log`` has finished an epoch; its output if it ends first."""

    def started_or_ended() -> bool:
        return "epoch 1/" in log.read_text(errors="replace") or repro.poll() is not None

    wait_until(started_or_ended, "train runs")
    assert repro.poll() is None, log.read_text()


@pytest.fixture
def repro_in(reproduced: Path) -> Iterator[Callable[..., tuple[subprocess.Popen, Path]]]:
    """Start ``dvc repro`` in the built project, its output in a file; every one started is stopped."""
    started: list[subprocess.Popen] = []

    def start(**popen: object) -> tuple[subprocess.Popen, Path]:
        log = reproduced / ".." / f"repro-{len(started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "dvc", "repro"],
                cwd=reproduced,
                stdout=output,
                stderr=subprocess.STDOUT,
                **popen,
            )
        started.append(process)
        return process, log

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
    for process in stage_processes(reproduced, "train"):
        process.kill()


def test_params_edited_while_train_runs_are_not_recorded(reproduced: Path, repro_in) -> None:
    set_params(reproduced, {"train.epochs": 40})
    repro, log = repro_in()
    wait_for_training(repro, log)
    set_params(reproduced, {"train.epochs": 2})  # as `dvc exp run -S train.epochs=2` does, refused as busy
    repro.wait(timeout=WAIT_S)
    output = log.read_text()
    assert repro.returncode != 0, output
    assert "params.yaml changed while train ran; nothing recorded, run again" in output
    assert locked_epochs(reproduced) == 3  # the previous run's entry, not 40 epochs recorded as 2
    assert "train" in dvc("status", "train", cwd=reproduced).stdout  # so the next repro trains again

    rerun = dvc("repro", cwd=reproduced)
    assert "Running stage 'train'" in rerun.stdout
    assert locked_epochs(reproduced) == 2


def test_a_killed_dvc_repro_takes_its_stage_with_it(reproduced: Path, repro_in) -> None:
    set_params(reproduced, {"train.epochs": 1000})
    repro, log = repro_in()
    wait_for_training(repro, log)
    repro.kill()  # SIGKILL to the dvc process alone: its stage's process is not signalled
    repro.wait()
    wait_until(lambda: not stage_processes(reproduced, "train"), "the orphaned train stage stops", 30)

    set_params(reproduced, {"train.epochs": 1})
    dvc("repro", cwd=reproduced)
    finished = snapshot(reproduced)
    time.sleep(3)  # nothing left running overwrites what the last run wrote
    assert snapshot(reproduced) == finished
    assert locked_epochs(reproduced) == 1
    assert dvc("status", cwd=reproduced).stdout.strip().endswith("up to date.")


def test_ctrl_c_during_a_stage_says_how_to_put_its_outputs_back(reproduced: Path, repro_in) -> None:
    set_params(reproduced, {"train.epochs": 1000})
    repro, log = repro_in(start_new_session=True)  # its own process group, as a terminal gives it
    wait_for_training(repro, log)
    os.killpg(repro.pid, signal.SIGINT)
    repro.wait(timeout=WAIT_S)
    output = log.read_text()
    assert "train interrupted before it finished" in output
    assert "`python -m pipeline restore train` puts back" in output
    assert "Traceback" not in output.split("train interrupted")[0]
    restore = subprocess.run(
        [sys.executable, "-m", "pipeline", "restore", "train"], cwd=reproduced, capture_output=True, text=True
    )
    assert restore.returncode == 0, restore.stderr
    assert Paths(reproduced).model.is_file()


def test_a_split_that_cannot_hold_every_class_stops_before_any_output_is_deleted(reproduced: Path) -> None:
    before = snapshot(reproduced)
    set_params(reproduced, {"preprocess.stratify": True, "preprocess.test_size": 0.0001})
    result = dvc("repro", cwd=reproduced, check=False)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert "preprocess.stratify: true needs an image of each of the 10 classes" in line
    assert "preprocess.test_size: 0.0001" in line
    assert {k: v for k, v in snapshot(reproduced).items() if k != "params.yaml"} == {
        k: v for k, v in before.items() if k != "params.yaml"
    }
    validate = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate"], cwd=reproduced, capture_output=True, text=True
    )
    assert validate.returncode == 1 and "preprocess.stratify" in validate.stderr


def test_files_that_are_not_the_datasets_are_not_versioned_with_it(reproduced: Path, tmp_path: Path) -> None:
    """Also when ``data/raw`` is a link to a folder that holds more than the four files."""
    raw = Paths(reproduced).raw_dir
    elsewhere = tmp_path / "downloads"
    raw.rename(elsewhere)
    (elsewhere / "notes.txt").write_text("mine")
    raw.symlink_to(elsewhere)
    set_params(reproduced, {"train.epochs": 2})  # so that ingest runs
    result = dvc("repro", cwd=reproduced, check=False)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert "holds files that are not the dataset's: notes.txt" in line
    assert f"a link to {elsewhere}" in line
    assert (elsewhere / "notes.txt").read_text() == "mine"


def test_a_corrupt_split_is_one_line_naming_the_file_and_the_repair(reproduced: Path) -> None:
    split = Paths(reproduced).split("train")
    data = bytearray(split.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # the second half rotted to zeros
    split.write_bytes(bytes(data))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "train"], cwd=reproduced, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert "data/processed/train.npz is corrupt" in line
    assert "`dvc repro -f preprocess` rebuilds it" in line
