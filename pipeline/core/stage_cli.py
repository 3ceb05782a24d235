"""The command line every stage shares: ``python -m pipeline.stages.<stage> [--params FILE]``.

``dvc.yaml`` runs it (and ``python -m pipeline <stage>`` is the same). It validates the whole
``params.yaml`` first, then runs the stage's ``main(params, paths)`` on the paths in
:mod:`pipeline.core.paths`. A failure a user can fix is one line, with the command that puts back what
DVC deleted; a finished run under DVC is entered in DVC's run cache, where ``restore`` finds it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from pipeline.core import atomic, logs, stage_signals
from pipeline.core.errors import PipelineError
from pipeline.core.params import DEFAULT_PARAMS_PATH, Params, read_raw_params, validate_params
from pipeline.core.paths import Paths
from pipeline.core.stage_signals import DVC_STAGE_ENV

log = logging.getLogger("pipeline")
STAGES = stage_signals.STAGES  # the pipeline's stages in order (commands import them from here)
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

    hint = stage_signals.restore_hint(stage)
    return guarded(stage, body, hint=hint, interrupted=stage_signals.INTERRUPTED + hint)


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
    ``hint``), a bug its traceback. The exit status: ``command``'s, 1, or 130 on Ctrl-C or SIGTERM.

    A full disk is one line wherever it strikes, also when the ``OSError`` comes wrapped in another
    exception (a library that failed while handling it)."""
    try:
        logs.configure()
    except PipelineError as exc:
        log.error("%s not run: %s", name, exc)
        return 1
    try:
        # SIGTERM (a cancelled run, `kill`) unwinds like Ctrl-C: temporary files go, outputs stay whole.
        stage_signals.unwind_from_now_on()
        return command() or 0
    except PipelineError as exc:
        log.error("%s failed: %s%s", name, exc, hint)
    except OSError as exc:  # a missing input, a full disk, a read-only or forbidden folder
        log.error("%s failed: %s%s", name, describe_os_error(exc), hint)
    except Exception as exc:  # a bug or an unforeseen failure: the traceback, and its gist on line one
        if (full := _disk_full(exc)) is not None:
            log.error("%s failed: %s%s", name, describe_os_error(full), hint)
        else:
            log.error("%s failed: %s: %s", name, type(exc).__name__, exc, exc_info=True)
    except KeyboardInterrupt:
        log.error("%s %s", name, interrupted)
        return stage_signals.EXIT_INTERRUPTED
    return 1


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(exc: BaseException) -> OSError | None:
    """The ``OSError`` "no space left" (or "disk quota exceeded") in ``exc``'s chain of causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and _errno(current) in _DISK_FULL:
            return current
        current = current.__cause__ or current.__context__
    return None


def _errno(exc: OSError) -> int | None:
    """``exc``'s errno; HDF5 (the ``.h5`` checkpoint) reports it inside its message."""
    found = re.search(r"errno = (\d+)", str(exc))
    return exc.errno or (int(found.group(1)) if found else None)


def remember(root: Path, stage: str) -> None:
    """Enter ``stage``'s finished run in DVC's run cache, its outputs that git keeps included.

    DVC would do that itself, but skips the run cache for stages with ``cache: false`` outputs; with
    the entry, ``dvc repro`` restores a run it has seen before instead of running it again, and
    ``python -m pipeline restore`` finds the outputs git keeps.

    The outputs DVC caches are copied to its cache here, before DVC does it after the command: a cache
    DVC cannot write to (full, read-only) is then one :class:`PipelineError` naming it, with the
    restore hint. DVC itself logs each file it fails to copy (here with a traceback), and after some
    stages (ingest) goes on to record outputs its cache lacks.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    failed_copies: list[OSError] = []

    def keep_copy_errors(record: logging.LogRecord) -> bool:
        """A filter on dvc_data's transfer log: its failed copies are kept here, not logged."""
        if record.exc_info and isinstance(record.exc_info[1], OSError):
            failed_copies.append(record.exc_info[1])
            return False
        return True

    transfer_log = logging.getLogger("dvc_data.hashfile.transfer")
    transfer_log.addFilter(keep_copy_errors)
    cache = None
    try:
        with contextlib.chdir(root), Repo(str(root)) as repo:
            cache = repo.cache.local_cache_dir
            (dvc_stage,) = repo.stage.collect(f"dvc.yaml:{stage}")
            dvc_stage.save()  # hashes its deps and outputs, then saves the run cache entry
            for out in dvc_stage.outs:  # what DVC copies to its cache after the command, here first
                if out.use_cache:  # (an entry whose outputs are not all cached is never restored)
                    out.commit(relink=False)
            if failed_copies:
                raise failed_copies[0]
    except OSError as exc:
        if cache is None or not (failed_copies or _in_or_unnamed(exc, cache)):
            raise  # not the cache's: an output it could not read, say
        raise _cache_failure(cache, exc, failed_copies) from exc
    except DvcException as exc:
        if cache and failed_copies:  # DVC gave up after failed copies
            raise _cache_failure(cache, failed_copies[0], failed_copies) from exc
        log.warning("%s: not entered in DVC's run cache (%s)", stage, exc)  # only its shortcut is missing
    finally:
        transfer_log.removeFilter(keep_copy_errors)


def _in_or_unnamed(exc: OSError, folder: str) -> bool:
    """Whether ``exc`` names no file (DVC's writes of its run cache), or one in ``folder``."""
    named = [name for name in (exc.filename, exc.filename2) if isinstance(name, str)]
    return not named or any(Path(name).is_relative_to(folder) for name in named)


def _cache_failure(cache: str, exc: OSError, failed_copies: list[OSError]) -> PipelineError:
    """One line naming DVC's cache and what went wrong there (no space left on it, say)."""
    for copy in failed_copies:  # DVC leaves what it copied of each, which keeps the cache full
        partial = copy.filename2
        if isinstance(partial, str) and Path(partial).is_relative_to(cache):
            Path(partial).unlink(missing_ok=True)
    code = _errno(exc)
    if code is None:
        return PipelineError(f"DVC's cache {cache}: {exc}")
    return PipelineError(f"DVC's cache: {describe_os_error(OSError(code, os.strerror(code), cache))}")


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
    """``No space left on device: models/best-model.h5 (12 KiB free on the file system at /srv)``
    rather than a traceback.

    HDF5 (the ``.h5`` checkpoint) reports the errno and the file inside its message. A temporary file
    of an atomic write is named as the file it was to become; a full disk also names its mount point
    and what is left on it, and the destination of a failed copy (``filename2``) rather than its source.
    """
    text = " ".join(str(exc).split())
    code = _errno(exc)
    if code is None:
        return text
    full = code in _DISK_FULL
    where = (exc.filename2 if full else None) or exc.filename
    if where is None and (found := re.search(r"filename = '([^']+)'", text)):
        where = found.group(1)
    if not isinstance(where, str | bytes | os.PathLike):
        return os.strerror(code)
    where = atomic.target_of(os.fsdecode(where))
    return os.strerror(code) + f": {where}" + (_file_system(where) if full else "")


def _file_system(path: str) -> str:
    """`` (12 KiB free on the file system at /srv)``, the file system that holds ``path``."""
    found = Path(os.path.abspath(path))
    while not found.exists() and found != found.parent:
        found = found.parent
    mount = found
    while not os.path.ismount(mount):
        mount = mount.parent
    try:
        stats = os.statvfs(mount)
    except OSError:
        return f" (on the file system at {mount})"
    free, unit = float(stats.f_bavail * stats.f_frsize), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if free < 1024:
            break
        free, unit = free / 1024, bigger
    there = "there" if mount == Path(os.path.abspath(path)) else f"on the file system at {mount}"
    return f" ({free:.4g} {unit} free {there})"
