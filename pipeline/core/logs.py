"""Logging of the stage commands: to stderr, or to the process that orchestrates them.

``dvc repro`` shows a stage's log on stderr. The Prefect flow runs the stages through DVC's Python API,
so a stage's process cannot hand its records to the flow's logger directly: when
``FASHION_PIPELINE_LOG_SOCKET`` names a Unix socket, each record goes there instead, as one JSON line
(level, logger name, message), and the flow files it under the stage's task with its real level.

TensorFlow's C++ log is kept to what matters: ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3 (fatal errors
only; Python exceptions still carry every error), and the lines its libraries print while loading,
before any setting applies, are dropped (:func:`native_start_up_lines_dropped`). Set
``TF_CPP_MIN_LOG_LEVEL=0`` to see the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from dvclive import Live

LOG_SOCKET_ENV = "FASHION_PIPELINE_LOG_SOCKET"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
# What TensorFlow's libraries print to file descriptor 2 while they load, before absl's log is set up
# (so before TF_CPP_MIN_LOG_LEVEL applies): the absl notice, and INFO lines such as oneDNN's.
_START_UP_LINE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    rb"|I\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] "
)


class Progress(NamedTuple):
    """How far a stage is: ``done`` of ``total`` steps (epochs), and a short summary of the latest."""

    done: int
    total: int
    summary: str


class Line(NamedTuple):
    """One forwarded record."""

    level: int
    name: str
    message: str
    progress: Progress | None = None


def progress(done: int, total: int, summary: str) -> dict[str, Progress]:
    """``extra`` of a log record that also reports progress, which a flow shows live in its UI."""
    return {"progress": Progress(done, total, summary)}


def live_log(folder: Path) -> Live:
    """DVCLive writing to ``folder`` only: ``dvc.yaml`` declares its metrics, plots and outputs, and
    ``dvc repro``/``dvc exp run`` record the experiment, so it writes no ``dvc.yaml``, report or
    experiment of its own. Its files carry no timestamps: same run, same bytes in ``dvc.lock``."""
    from dvclive import Live

    logging.getLogger("dvclive").setLevel(logging.WARNING)  # not "Logging to experiment 'x'" each run
    return Live(str(folder), dvcyaml=None, save_dvc_exp=False, report=None)


def configure() -> None:
    """Send the stage's records to the flow's socket when one is named, else to stderr.

    Raises :class:`PipelineError` (with stderr set up to say so) when the named socket does not answer:
    the flow that started the stage is gone, and nobody would record its result.
    """
    # TensorFlow's C++ log (harmless tf.data notices at ERROR level among them) hides the stage's own.
    os.environ.setdefault(TF_LOG_LEVEL_ENV, "3")
    path = os.environ.get(LOG_SOCKET_ENV)
    try:
        handler = SocketLinesHandler(path) if path else logging.StreamHandler()
    except OSError as exc:
        logging.basicConfig(level=logging.INFO, format=FORMAT, force=True)
        raise PipelineError(
            f"the flow run that started this stage is gone ({path}: {exc.strerror})"
        ) from None
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=[handler], force=True)


@contextlib.contextmanager
def native_start_up_lines_dropped() -> Iterator[None]:
    """Around a first ``import tensorflow``/``keras``: file descriptor 2 goes to a temporary file,
    then every line of it but TensorFlow's start-up notices comes back to stderr, in order."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured if not _START_UP_LINE.match(line))
            if kept:
                os.write(2, kept)


def encode(record: logging.LogRecord, message: str) -> bytes:
    fields = {"level": record.levelno, "name": record.name, "message": message}
    if isinstance(getattr(record, "progress", None), Progress):
        fields["progress"] = record.progress._asdict()
    return (json.dumps(fields) + "\n").encode()


def decode(line: bytes) -> Line:
    """The record of one JSON line; anything else is kept as an INFO message of its own."""
    try:
        fields = json.loads(line)
        reported = fields.get("progress")
        step = (
            None
            if reported is None
            else Progress(int(reported["done"]), int(reported["total"]), str(reported["summary"]))
        )
        return Line(int(fields["level"]), str(fields["name"]), str(fields["message"]), step)
    except (ValueError, TypeError, KeyError, AttributeError):
        return Line(logging.INFO, "stage", line.decode(errors="replace").rstrip())


_TRACEBACKS = logging.Formatter()


class SocketLinesHandler(logging.Handler):
    """Writes each record as a JSON line to a Unix stream socket."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.socket.connect(path)
        except OSError:
            self.socket.close()
            raise

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{_TRACEBACKS.formatException(record.exc_info)}"
            self.socket.sendall(encode(record, message))
        except OSError:
            pass  # the flow is gone, and the stage with it (pipeline.core.stage_cli stops with its parent)
        except Exception:  # noqa: BLE001  (logging must never raise into the stage)
            self.handleError(record)

    def close(self) -> None:
        self.socket.close()
        super().close()
