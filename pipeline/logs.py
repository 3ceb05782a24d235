"""Logging of the stage commands: to stderr, or to the process that orchestrates them.

``dvc repro`` shows a stage's log on stderr. The Prefect flow runs the stages through DVC's Python API,
so a stage's process cannot hand its records to the flow's logger directly: when
``FASHION_PIPELINE_LOG_SOCKET`` names a Unix socket, each record goes there instead, as one JSON line
(level, logger name, message), and the flow files it under the stage's task with its real level.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import NamedTuple

LOG_SOCKET_ENV = "FASHION_PIPELINE_LOG_SOCKET"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Line(NamedTuple):
    """One forwarded record."""

    level: int
    name: str
    message: str


def configure() -> None:
    """Send the stage's records to the flow's socket when one is named, else to stderr."""
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) hides the stage's own log lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handler: logging.Handler | None = None
    if path := os.environ.get(LOG_SOCKET_ENV):
        try:
            handler = SocketLinesHandler(path)
        except OSError:
            handler = None  # the flow is gone or never listened: stderr still reaches a person
    logging.basicConfig(
        level=logging.INFO, format=FORMAT, handlers=[handler or logging.StreamHandler()], force=True
    )


def encode(record: logging.LogRecord, message: str) -> bytes:
    return (json.dumps({"level": record.levelno, "name": record.name, "message": message}) + "\n").encode()


def decode(line: bytes) -> Line:
    """The record of one JSON line; anything else is kept as an INFO message of its own."""
    try:
        fields = json.loads(line)
        return Line(int(fields["level"]), str(fields["name"]), str(fields["message"]))
    except (ValueError, TypeError, KeyError):
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
        except Exception:  # noqa: BLE001  (logging must never raise into the stage)
            self.handleError(record)

    def close(self) -> None:
        self.socket.close()
        super().close()
