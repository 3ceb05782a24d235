"""Reproduce one DVC stage (``dvc repro --single-item``) with its output streamed to a logger.

DVC stays the cache of truth: it decides whether a stage runs, writes ``dvc.lock`` and caches the
outputs, so a flow run and ``dvc repro`` leave the same workspace. DVC deletes a stage's outputs
before running it; hard links taken beforehand put the previous good outputs back if the stage
fails (the stages write through temporary files renamed into place, so the old inodes stay intact).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DVC_REPRO = (sys.executable, "-m", "dvc", "repro", "--single-item")
DVC_EXP_SAVE = (sys.executable, "-m", "dvc", "exp", "save")
BACKUP_DIR = Path(".dvc") / "tmp" / "fashion-pipeline" / "previous-outputs"
_SKIP_MARKERS = ("didn't change, skipping", "is cached - skipping run")
_ERROR_LINE = re.compile(r"\bERROR\b|^\w*(Error|Exception)\b")
_WARNING_LINE = re.compile(r"\bWARNING\b")

Logger = logging.Logger | logging.LoggerAdapter


class DvcCommandError(RuntimeError):
    """A DVC command failed; the message names the stage or command and quotes its error lines."""


def reproduce(stage: str, root: Path, log: Logger) -> str | None:
    """Reproduce ``stage`` in the project ``root``; DVC's message if it skipped the stage, else None."""
    outputs = stage_outputs(root, stage)
    backups = root / BACKUP_DIR / stage
    shutil.rmtree(backups, ignore_errors=True)
    for output in outputs:
        if (root / output).exists():
            _link_tree(root / output, backups / output)
    try:
        returncode, lines = run_logged([*DVC_REPRO, stage], root, log)
        if returncode != 0:
            raise DvcCommandError(failure_message(f"stage '{stage}'", returncode, lines))
    except BaseException:
        _restore(outputs, root, backups)
        log.warning("stage %r failed: its previous outputs are back in place", stage)
        raise
    finally:
        shutil.rmtree(backups, ignore_errors=True)
    skips = (line for line in lines for marker in _SKIP_MARKERS if f"Stage '{stage}' {marker}" in line)
    return next(skips, None)


def stage_outputs(root: Path, stage: str) -> list[Path]:
    """The outputs DVC deletes before running ``stage`` (``persist`` ones it keeps), relative to ``root``."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        # An absolute target: DVC resolves a bare stage name against the process's cwd.
        (dvc_stage,) = repo.stage.collect(f"{root / 'dvc.yaml'}:{stage}")
        return [Path(out.def_path) for out in dvc_stage.outs if not out.persist]


def save_experiment(root: Path, message: str, log: Logger) -> None:
    """Record the workspace as a DVC experiment (``dvc exp save``); DVC logs the experiment's name.

    Outputs kept in Git rather than the DVC cache (metrics, plots) are included even while untracked,
    so ``dvc exp show`` lists the experiment's metrics next to its params.
    """
    args = [*DVC_EXP_SAVE, "--message", message]
    for path in _git_outputs(root):
        args += ["--include-untracked", path]
    returncode, lines = run_logged(args, root, log)
    if returncode != 0:
        raise DvcCommandError(failure_message("dvc exp save", returncode, lines))


def run_logged(args: Sequence[str], cwd: Path, log: Logger) -> tuple[int, list[str]]:
    """Run ``args``, sending each output line to ``log``; return the exit code and the lines."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the stage's prints and log lines arrive in order
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,  # a timeout or cancellation stops the stage's own children too
    )
    lines = []
    try:
        for raw in process.stdout:
            if line := raw.rstrip():
                lines.append(line)
                log.log(_level(line), "%s", line)
        return process.wait(), lines
    finally:
        stop_process_group(process)


def failure_message(subject: str, returncode: int, lines: list[str]) -> str:
    """One line naming what failed, with the error lines of its output (or its last line)."""
    errors = [line for line in lines if _ERROR_LINE.search(line)] or lines[-1:]
    return f"{subject} failed (exit code {returncode}): {' | '.join(errors)}"


def _git_outputs(root: Path) -> list[str]:
    """The existing outputs that ``dvc.yaml`` leaves to Git (``cache: false``)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [out.def_path for out in repo.index.outs if not out.use_cache and out.exists]


def _level(line: str) -> int:
    if _ERROR_LINE.search(line):
        return logging.ERROR
    if _WARNING_LINE.search(line):
        return logging.WARNING
    return logging.INFO


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop ``process`` (started with ``start_new_session``) and everything it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.stdout:
        process.stdout.close()


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link ``source`` (a file or a directory tree) to ``target``, copying across file systems."""
    if source.is_dir():
        shutil.copytree(source, target, copy_function=_link_or_copy)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(source, target)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _restore(outputs: list[Path], root: Path, backups: Path) -> None:
    """Put each backed-up output back in place of whatever the failed run left."""
    for output in outputs:
        saved = backups / output
        if not saved.exists():
            continue
        current = root / output
        if current.is_dir() and not current.is_symlink():
            shutil.rmtree(current)
        else:
            current.unlink(missing_ok=True)
        current.parent.mkdir(parents=True, exist_ok=True)
        saved.replace(current)
