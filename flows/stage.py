"""Reproduce one DVC stage of a workspace, with its log filed under the stage's Prefect task.

Decision: DVC's Python API in the flow's process, not a ``dvc repro`` process per stage.

- **Isolation stays where it matters.** DVC still runs each stage's command (``python -m pipeline
  train``) in a process of its own, so TensorFlow never loads into the flow, and a crash in a stage
  cannot take the flow down.
- **Facts, not scraped text.** The reason a stage runs comes from DVC's status, what ran from DVC's
  return value; a no-op run starts no process. (The order of the stages, from DVC's graph of
  ``dvc.yaml``, is the flow's: :mod:`flows.pipeline_flow`.)
- **Logs with their levels.** DVC's own messages arrive through its logger; the stage command's
  records through a Unix socket (:mod:`pipeline.core.logs`).

A run's workspace is its own (:mod:`flows.workspace`), so nothing else writes there while a stage runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from dvc.env import DVC_ROOT
from dvc.exceptions import DvcException

from flows.workspace import Logger, open_repo
from pipeline.core import logs

RAN, SKIPPED, CACHED = "ran", "skipped", "cached"
_RUN_CACHE_HIT = "is cached - skipping run"
_STOP_WAIT_S = 10


class StageFailed(RuntimeError):
    """A stage's command failed; the message names the stage and quotes its error lines."""


@dataclass(frozen=True)
class StageResult:
    """What DVC did with a stage: ``ran``, ``skipped`` (unchanged) or ``cached`` (DVC's run cache)."""

    stage: str
    outcome: str
    reason: str


def why_it_runs(root: Path, stage: str) -> str:
    """Why DVC would run ``stage`` now, from its status (``params.yaml (train modified)``); empty when
    its code, data and params match ``dvc.lock``."""
    with open_repo(root) as repo:
        target = f"dvc.yaml:{stage}"
        (dvc_stage,) = repo.stage.collect(target)
        reason = _why(repo.status(targets=[target]).get(stage, []))
        if reason and not any(out.hash_info for out in dvc_stage.outs):
            reason = "dvc.lock has no run of it yet"
        return reason


def reproduce(
    root: Path,
    stage: str,
    log: Logger,
    *,
    reason: str,
    on_progress: Callable[[logs.Progress], None] | None = None,
) -> StageResult:
    """``dvc repro --single-item <stage>`` in ``root``, logging to ``log``.

    ``reason``: :func:`why_it_runs`, asked just before (nothing runs in the workspace in between).
    ``on_progress``: called (from another thread) with each progress report of the stage's command.
    """
    with open_repo(root) as repo:
        repo.scm_context.quiet = True  # no "git add dvc.lock" hint per stage: the run is an experiment
        target = f"dvc.yaml:{stage}"
        if reason:
            log.info("stage %r runs: %s", stage, reason)
        with _dvc_messages(log) as dvc_lines, _stage_records(log, on_progress) as (env, errors):
            try:
                ran = repo.reproduce(target, single_item=True, run_env=env)
            except BaseException as exc:
                # Interrupted or cancelled: the stage's command must not run on unseen.
                stop_stage_processes(lambda running_in: running_in == Path(repo.root_dir))
                if isinstance(exc, DvcException):
                    raise StageFailed(_failure(stage, exc, errors)) from None
                raise
    if not ran:
        return StageResult(stage, SKIPPED, "its code, data and params match dvc.lock")
    if any(_RUN_CACHE_HIT in line for line in dvc_lines):
        return StageResult(stage, CACHED, f"restored from DVC's run cache ({reason})")
    return StageResult(stage, RAN, reason)


def _why(changes: list) -> str:
    """DVC's status of a stage in one line: ``params.yaml (train modified); models/best-model.h5 deleted``."""
    parts = []
    for change in changes:
        if isinstance(change, str):
            parts.append(change)  # "changed command", "always changed"
            continue
        for kind, entries in change.items():
            if not isinstance(entries, dict):
                parts.append(kind)
                continue
            for path, status in entries.items():
                if isinstance(status, dict):
                    keys = ", ".join(f"{key} {value}" for key, value in status.items())
                    parts.append(f"{path} ({keys})")
                else:
                    parts.append(f"{path} {status}")
    return "; ".join(parts)


def _failure(stage: str, exc: DvcException, errors: list[str]) -> str:
    cause = exc.__cause__ or exc
    detail = " | ".join([*errors, str(cause)])
    return f"stage '{stage}' failed: {detail}"


@contextlib.contextmanager
def _dvc_messages(log: Logger) -> Iterator[list[str]]:
    """File DVC's own log records under ``log`` instead of its console handlers (INFO as DEBUG);
    yield their text."""
    dvc_logger = logging.getLogger("dvc")
    saved = dvc_logger.handlers[:], dvc_logger.propagate
    lines: list[str] = []

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage().strip()
            if message:
                lines.append(message)
                # Its INFO lines ("Running stage", the command, "Updating lock file") repeat what the
                # task's own lines say; they stay at DEBUG, for PREFECT_LOGGING_LEVEL=DEBUG.
                log.log(record.levelno if record.levelno > logging.INFO else logging.DEBUG, "%s", message)

    dvc_logger.handlers, dvc_logger.propagate = [Forward(logging.INFO)], False
    try:
        yield lines
    finally:
        dvc_logger.handlers, dvc_logger.propagate = saved


@contextlib.contextmanager
def _stage_records(
    log: Logger, on_progress: Callable[[logs.Progress], None] | None
) -> Iterator[tuple[dict[str, str], list[str]]]:
    """A Unix socket the stage command logs to (:mod:`pipeline.core.logs`): its env, and its error lines."""
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fashion-logs-") as directory:
        path = os.path.join(directory, "stage.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen()

        def relay(connection: socket.socket) -> None:
            with connection, connection.makefile("rb") as lines:
                for line in lines:
                    record = logs.decode(line)
                    if record.level >= logging.ERROR:
                        errors.append(record.message.splitlines()[0])  # not the traceback
                    log.log(record.level, "%s: %s", record.name, record.message)
                    if record.progress and on_progress:
                        on_progress(record.progress)

        def accept() -> None:
            relays = []
            while True:
                try:
                    connection, _ = server.accept()
                except OSError:  # closed: the stage is over
                    break
                relays.append(threading.Thread(target=relay, args=(connection,), daemon=True))
                relays[-1].start()
            for thread in relays:
                thread.join(timeout=_STOP_WAIT_S)

        acceptor = threading.Thread(target=accept, name="stage-log-relay", daemon=True)
        acceptor.start()
        try:
            yield {logs.LOG_SOCKET_ENV: path}, errors
        finally:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes accept(), which close() alone would not
            server.close()
            acceptor.join(timeout=_STOP_WAIT_S)


def stop_stage_processes(selected: Callable[[Path], bool]) -> None:
    """Stop the stage commands DVC runs in the workspaces ``selected`` picks (by their ``DVC_ROOT``)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            root = process.environ().get(DVC_ROOT)
            if root and selected(Path(root)):
                found.append(process)
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(found, timeout=_STOP_WAIT_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
