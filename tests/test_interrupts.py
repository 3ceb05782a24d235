"""Ctrl-C (SIGINT) and SIGTERM at any moment of a stage's command, its first seconds of imports
(pandas, matplotlib, TensorFlow) included: one line, the restore hint, exit status 130, never a
traceback. The real commands, as ``dvc.yaml`` runs them (``DVC_STAGE`` set, as DVC sets it), in a
project copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SyntheticSource, make_project, set_params
from pipeline.core import atomic

pytestmark = pytest.mark.integration
WAIT_S = 120


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, synthetic_source: SyntheticSource) -> Path:
    """A project copy (never run: the stages are stopped while they start)."""
    return make_project(tmp_path_factory.mktemp("interrupts") / "project", synthetic_source)


def start(stage: str, project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", f"pipeline.stages.{stage}"],
        cwd=project,
        env={**os.environ, "DVC_STAGE": stage},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler of its own for SIGTERM (``SigCgt`` in ``/proc``)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & 1 << (signal.SIGTERM - 1))


def until(condition, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what}: never came; {process.communicate()[0]}")
        time.sleep(0.002)


def assert_one_line(stage: str, process: subprocess.Popen[str]) -> None:
    output = process.communicate(timeout=WAIT_S)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output
    (line,) = output.splitlines()
    assert f" ERROR pipeline: {stage} interrupted before it finished;" in line
    if stage != "ingest":  # ingest's outputs persist: DVC deleted nothing
        assert (
            f"DVC removed {stage}'s outputs before running it; `python -m pipeline restore {stage}` puts"
            in line
        )


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", ["ingest", "preprocess", "train", "evaluate"])
def test_an_interrupt_as_soon_as_a_stage_can_take_it_is_one_line(
    project: Path, stage: str, sent: signal.Signals
) -> None:
    """The signal the instant the stage's handlers are in place (``pipeline.stages`` imported, its
    module's imports not started): what happens when DVC or a terminal stops it at once."""
    process = start(stage, project)
    until(lambda: catches_sigterm(process.pid), process, "the stage's signal handlers")
    process.send_signal(sent)
    assert_one_line(stage, process)


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("after_s", [0.3, 1.5])
def test_an_interrupt_while_train_imports_tensorflow_is_one_line(
    project: Path, sent: signal.Signals, after_s: float
) -> None:
    """0.3 s: NumPy and pandas are loading; 1.5 s: TensorFlow (several seconds in all)."""
    process = start("train", project)
    time.sleep(after_s)
    assert process.poll() is None, process.communicate()[0]
    process.send_signal(sent)
    assert_one_line("train", process)


def test_an_interrupt_while_train_trains_unwinds_it(reproduced: Path) -> None:
    """Later, SIGTERM unwinds the stage as Ctrl-C does (``stage_cli.guarded``; Ctrl-C mid-stage:
    test_stage_guards): the same line and status, and the checkpoint's temporary file is gone (an
    exit straight from the early handler would leave it)."""
    sent = signal.SIGTERM
    set_params(reproduced, {"train.epochs": 1000})
    process = start("train", reproduced)
    assert process.stdout is not None
    for line in process.stdout:
        if "epoch 2/" in line:
            break
    assert process.poll() is None, "train ended before its second epoch"
    hidden = reproduced / atomic.HIDDEN_FOLDER
    assert [path.suffix for path in hidden.iterdir() if atomic.is_temporary(path)] == [".h5"]
    process.send_signal(sent)
    output = process.communicate(timeout=WAIT_S)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if " ERROR " in line]
    assert "train interrupted before it finished;" in line and "`python -m pipeline restore train`" in line
    assert [path.name for path in hidden.iterdir()] == [".lock"]
    assert not list((reproduced / "models").glob(".*.tmp*"))
