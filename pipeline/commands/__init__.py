"""The commands around the pipeline, each with its own command line, none a DVC stage:
``predict``, ``report``, ``plots``, ``restore``, ``validate``, ``params-doc``
(``python -m pipeline <command> --help``). Editing one reruns no stage."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from pipeline.core import logs
from pipeline.core.errors import PipelineError
from pipeline.core.stage_cli import describe_os_error

log = logging.getLogger("pipeline")


def run_command(name: str, command: Callable[[], int | None]) -> int:
    """Run ``command`` with the stages' logging; a failure a user can fix is one line. Its exit status."""
    try:
        logs.configure()
    except PipelineError as exc:
        log.error("%s not run: %s", name, exc)
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return command() or 0
    except PipelineError as exc:
        log.error("%s failed: %s", name, exc)
    except OSError as exc:
        log.error("%s failed: %s", name, describe_os_error(exc))
    except Exception as exc:  # a bug or an unforeseen failure: the traceback, and its gist on line one
        log.error("%s failed: %s: %s", name, type(exc).__name__, exc, exc_info=True)
    except KeyboardInterrupt:
        log.error("%s interrupted", name)
        return 130
    return 1
