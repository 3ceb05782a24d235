"""Ctrl-C and SIGTERM from a stage's first instant: one line with the restore hint, never a traceback.

``python -m pipeline.stages.<stage>`` spends its first seconds importing (pandas, matplotlib,
TensorFlow) before :func:`pipeline.core.stage_cli.run` starts. Python's own SIGINT handler would raise
``KeyboardInterrupt`` somewhere inside those imports (a traceback of 20 to 45 lines), and SIGTERM's
default action ends the process without a word; DVC has deleted the stage's outputs by then either way.

So the package ``pipeline.stages``, which Python imports before the stage's module, calls
:func:`stop_quietly_while_starting` first. Until :func:`unwind_from_now_on` (called by
``stage_cli.guarded`` just before the stage's work), SIGINT and SIGTERM end the process at once, exit
status 130, with the line a later interrupt logs. Nothing has been written yet, so there is nothing to
unwind, and no half-imported library gets to run its exit handlers. Only the standard library and
:mod:`pipeline.core.logs` are imported here, so the handlers are in place within milliseconds.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

from pipeline.core import logs

DVC_STAGE_ENV = "DVC_STAGE"  # set by DVC for every stage command it runs
STAGES = ("ingest", "preprocess", "train", "evaluate")
INTERRUPTED = "interrupted before it finished; nothing it wrote is left half-written"
EXIT_INTERRUPTED = 130


@dataclass
class _Starting:
    stage: str
    stderr: int  # a copy of file descriptor 2 as the stage started
    sigint: Any  # SIGINT's handler before


_starting: _Starting | None = None  # until unwind_from_now_on


def stop_quietly_while_starting() -> None:
    """When this process is a stage's command (``python -m pipeline.stages.<stage>``, or
    ``python -m pipeline <stage>``), make SIGINT and SIGTERM end it in one line until
    :func:`unwind_from_now_on`; in any other process (an import by a test or a flow), do nothing."""
    global _starting
    stage = _stage_starting()
    if stage is None or _starting is not None:
        return
    previous = signal.getsignal(signal.SIGINT)
    # TensorFlow's import sends file descriptor 2 to a temporary file for a while
    # (logs.native_start_up_lines_dropped): the line goes to the stderr the stage started with.
    _starting = _Starting(stage, os.dup(2), previous)
    try:
        # A stage started with SIGINT ignored (`cmd &` in a script) keeps ignoring it.
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread: no handlers can be set here
        os.close(_starting.stderr)
        _starting = None


def unwind_from_now_on() -> None:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` from here on, so that temporary files go and
    outputs stay whole (SIGTERM: a cancelled run, ``kill``), and the caller logs the line."""
    global _starting
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if _starting is not None:
        signal.signal(signal.SIGINT, _starting.sigint)
        starting, _starting = _starting, None
        os.close(starting.stderr)


def restore_hint(command: str) -> str:
    """Under ``dvc repro`` (which sets ``DVC_STAGE``), DVC deleted the stage's outputs before it ran
    (all but ingest's, which persist).

    A flow run (which names its log socket) puts them back itself.
    """
    if command not in STAGES[1:] or not os.environ.get(DVC_STAGE_ENV) or os.environ.get(logs.LOG_SOCKET_ENV):
        return ""
    return (
        f". DVC removed {command}'s outputs before running it; "
        f"`python -m pipeline restore {command}` puts back the ones dvc.lock records"
    )


def _stage_starting() -> str | None:
    """The stage this process was started to run, while Python still imports it; else ``None``."""
    if sys.argv[:1] == ["-m"]:  # `python -m <module>` importing the packages above <module>
        module = _module_run_by_m(sys.orig_argv[1:])
        stage = module.removeprefix("pipeline.stages.") if module else None
        return stage if stage in STAGES and module == f"pipeline.stages.{stage}" else None
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(main_spec, "name", None) == "pipeline.__main__" and sys.argv[1:2] and sys.argv[1] in STAGES:
        return sys.argv[1]  # `python -m pipeline <stage>` importing pipeline.stages.<stage>
    return None


def _module_run_by_m(options: list[str]) -> str | None:
    for index, option in enumerate(options):
        if option == "-m":
            return options[index + 1] if index + 1 < len(options) else None
        if option.startswith("-m"):
            return option[2:]
    return None


def _stop(signum: int, frame: FrameType | None) -> None:
    if _starting is None:  # just handed over to unwind_from_now_on
        raise KeyboardInterrupt
    stage = _starting.stage
    record = logging.LogRecord(
        "pipeline", logging.ERROR, __file__, 0, "%s %s%s", (stage, INTERRUPTED, restore_hint(stage)), None
    )
    line = logging.Formatter(logs.FORMAT).format(record)
    try:
        if os.environ.get(logs.LOG_SOCKET_ENV):  # a flow run's stage: its log goes to the flow
            handler = logs.SocketLinesHandler(os.environ[logs.LOG_SOCKET_ENV])
            handler.emit(record)
            handler.close()
        else:
            os.write(_starting.stderr, f"{line}\n".encode())
    except OSError:
        pass  # nowhere to say it: the exit status still does
    os._exit(EXIT_INTERRUPTED)
