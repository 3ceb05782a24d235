"""The command line every stage shares: ``python -m pipeline.stages.<stage> [--params FILE]``.

``dvc.yaml`` runs it (and ``python -m pipeline <stage>`` is the same). It validates the whole
``params.yaml`` first, then runs the stage's ``main(params, paths)`` on the paths in
:mod:`pipeline.core.paths`. A failure a user can fix is one line, with the command that puts back what
DVC deleted; a finished run under DVC is entered in DVC's run cache, where ``restore`` finds it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from pipeline.core import atomic, logs
from pipeline.core.errors import PipelineError
from pipeline.core.params import DEFAULT_PARAMS_PATH, Params, read_raw_params, validate_params
from pipeline.core.paths import Paths

log = logging.getLogger("pipeline")
DVC_STAGE_ENV = "DVC_STAGE"  # set by DVC for every stage command it runs

STAGES = ("ingest", "preprocess", "train", "evaluate")
_YAML = YAML(typ="safe")
StageMain = Callable[[Params, Paths], object]


def run(stage: str, stage_main: StageMain, argv: Sequence[str] | None = None) -> int:
    """Parse ``--params``, validate it, run ``stage_main``; the exit status (0, 1, or 130 on Ctrl-C)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m pipeline.stages.{stage}", description=f"Run the {stage} stage, as dvc.yaml does."
    )
    parser.add_argument(
        "--params", type=Path, default=DEFAULT_PARAMS_PATH, help="params file (default: params.yaml)"
    )
    args = parser.parse_args(argv)

    def body() -> None:
        under_dvc = bool(os.environ.get(DVC_STAGE_ENV))
        if under_dvc:
            _stop_with_dvc()
        paths = Paths()
        for leftover in atomic.remove_abandoned(paths.output_folders()):
            log.info("removed %s, left by a run that was killed", leftover)
        raw = read_raw_params(args.params)
        ran_with = _depended_on(stage, raw, args.params)
        stage_main(validate_params(raw, source=str(args.params)), paths)
        # DVC reads the params when it writes dvc.lock, after the command: an edit made meanwhile
        # (by hand, or `dvc exp run -S` refused as busy) would be recorded for outputs it never made.
        if _params_now(stage, args.params) != ran_with:
            raise PipelineError(f"{args.params} changed while {stage} ran; nothing recorded, run again")
        if under_dvc:  # run by DVC: keep this run where `restore` finds it
            remember(Path("."), stage)

    hint = _restore_hint(stage)
    return guarded(
        stage,
        body,
        hint=hint,
        interrupted="interrupted before it finished; nothing it wrote is left half-written" + hint,
    )


def _depended_on(stage: str, raw: dict[str, Any], params_path: Path) -> Any:
    """The values of ``raw`` that ``dvc.yaml`` makes ``stage`` depend on (DVC's ``params:``), all of
    them when it names the whole file or when there is no ``dvc.yaml``."""
    try:
        declared = _YAML.load(Path("dvc.yaml").read_text())["stages"][stage].get("params", [])
    except (OSError, KeyError, TypeError):
        return raw
    keys: list[str] = []
    for entry in declared:
        if isinstance(entry, str):
            keys.append(entry)
        elif isinstance(entry, dict) and str(params_path) in entry:
            if not entry[str(params_path)]:
                return raw  # `- params.yaml:`: the whole file
            keys.extend(entry[str(params_path)])
    return {key: _dotted(raw, key) for key in keys}


def _params_now(stage: str, params_path: Path) -> Any:
    try:
        return _depended_on(stage, read_raw_params(params_path), params_path)
    except PipelineError as exc:  # unreadable now: changed all the same
        return exc


def _dotted(raw: Any, key: str) -> Any:
    for part in key.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def guarded(
    name: str, command: Callable[[], int | None], *, hint: str = "", interrupted: str = "interrupted"
) -> int:
    """Run ``command`` with the stages' logging; a failure a user can fix is one line (ending in
    ``hint``), a bug its traceback. The exit status: ``command``'s, 1, or 130 on Ctrl-C."""
    try:
        logs.configure()
    except PipelineError as exc:
        log.error("%s not run: %s", name, exc)
        return 1
    # SIGTERM (a cancelled run, `kill`) unwinds like Ctrl-C, so temporary files go and outputs stay whole.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return command() or 0
    except PipelineError as exc:
        log.error("%s failed: %s%s", name, exc, hint)
    except OSError as exc:  # a missing input, a full disk, a read-only or forbidden folder
        log.error("%s failed: %s%s", name, describe_os_error(exc), hint)
    except Exception as exc:  # a bug or an unforeseen failure: the traceback, and its gist on line one
        log.error("%s failed: %s: %s", name, type(exc).__name__, exc, exc_info=True)
    except KeyboardInterrupt:
        log.error("%s %s", name, interrupted)
        return 130
    return 1


def remember(root: Path, stage: str) -> None:
    """Enter ``stage``'s finished run in DVC's run cache, its outputs that git keeps included.

    DVC would do that itself, but skips the run cache for stages with ``cache: false`` outputs; with
    the entry, ``dvc repro`` restores a run it has seen before instead of running it again, and
    ``python -m pipeline restore`` finds the outputs git keeps.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with contextlib.chdir(root), Repo(str(root)) as repo:
            (dvc_stage,) = repo.stage.collect(f"dvc.yaml:{stage}")
            dvc_stage.save()  # hashes its deps and outputs, then saves the run cache entry
    except DvcException as exc:  # the run itself succeeded; only its shortcut is missing
        log.warning("%s: not entered in DVC's run cache (%s)", stage, exc)


def _stop_with_dvc() -> None:
    """A stage that DVC (``dvc repro``, a flow run) started stops when that process dies: nobody
    would record its result, and a later run's outputs must not be overwritten by it.

    Linux's parent-death signal covers a direct child; DVC starts the command through ``$SHELL -c``,
    which dash does not replace by the command, so a thread also watches the process above the shell.
    """
    import ctypes
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    import psutil

    try:
        parent = psutil.Process(os.getppid())
        starter = parent.parent() if parent.name() in {"sh", "dash", "bash", "zsh"} else parent
    except psutil.Error:  # the parent is gone already: the parent-death signal is on its way
        return
    if starter is None:
        return

    def watch() -> None:
        while starter.is_running():
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-dvc", daemon=True).start()


def describe_os_error(exc: OSError) -> str:
    """``No space left on device: models/.best-model.1a2b.tmp.h5`` rather than a traceback.

    HDF5 (the ``.h5`` checkpoint) reports the errno and the file inside its message.
    """
    text = " ".join(str(exc).split())
    code = exc.errno or (int(found.group(1)) if (found := re.search(r"errno = (\d+)", text)) else None)
    where = exc.filename or (found.group(1) if (found := re.search(r"filename = '([^']+)'", text)) else None)
    if code is None:
        return text
    return os.strerror(code) + (f": {where}" if where else "")


def _restore_hint(command: str) -> str:
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
