"""Atomic writes: the content goes to a temporary file, then is renamed over the target.

An interrupted run therefore never leaves a half-written file that looks like a valid output. A run
killed outright (SIGKILL) cannot remove its temporary file, so that file is kept out of the folders
people look at: it lives in the project's ``.dvc/tmp/atomic/`` (the nearest folder above the target
that holds ``.dvc``, which git ignores and DVC never hashes), on the target's file system so that the
rename stays atomic. The next write in the project, or the next run of any stage
(:func:`remove_abandoned`), removes what a killed writer left there; each writer holds a shared lock
on the folder's ``.lock`` while it writes, and only an exclusive lock (so: no live writer) removes.

Outside a DVC project, or where the target's folder is on another file system than ``.dvc`` (a mount,
a link to another disk), the temporary file goes beside the target, hidden
(``.<stem>.<hex>.tmp<suffix>``); the next write of that target or the next run of any stage removes a
killed writer's (one pipeline run per project folder at a time: DVC locks the project while a stage
runs). Git and DVC ignore these files (``.gitignore``, ``.dvcignore``), so none is ever tracked or
hashed into an output.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

_TOKEN_HEX_BYTES = 6
HIDDEN_FOLDER = Path(".dvc", "tmp", "atomic")  # under the project root
_LOCK_NAME = ".lock"
_WRITING: dict[str, Path] = {}  # temporary path -> target, for messages (a failed write's stays)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_folder(target) as folder:
        tmp = _create(folder, target)
        _WRITING[os.fspath(tmp)] = target
        try:
            yield tmp
            _replace(tmp, target)
            del _WRITING[os.fspath(tmp)]
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _temporary_folder(target: Path) -> Iterator[Path]:
    """The project's hidden folder, with a shared lock held on it while the caller writes (first, when
    no other writer holds one, what killed writers left there is removed); else ``target``'s folder,
    cleared of the temporary files that killed writers of ``target`` left."""
    hidden = hidden_folder(target)
    try:
        fd = os.open(hidden / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666) if hidden else None
    except OSError:  # another user's project folder, say
        fd = None
    if hidden is None or fd is None:
        remove_leftovers(target)
        yield target.parent
        return
    try:
        _remove_unless_busy(hidden, fd)
        fcntl.flock(fd, fcntl.LOCK_SH)  # after a cleaning, before this writer's file exists
        yield hidden
    finally:
        os.close(fd)  # and so the lock


def _create(folder: Path, target: Path) -> Path:
    """A new empty file in ``folder`` named for ``target``: same suffix (writers pick the format from
    it), created like any new file (0666 less the umask; mkstemp's 0600 would leak into the outputs)."""
    tmp = folder / f".{target.stem}.{secrets.token_hex(_TOKEN_HEX_BYTES)}.tmp{target.suffix}"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    return tmp


def _replace(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # a bind mount: one file system, yet no rename across
            raise
        beside = _create(target.parent, target)
        try:
            shutil.copyfile(tmp, beside)
            os.replace(beside, target)
        finally:
            beside.unlink(missing_ok=True)


def hidden_folder(target: Path) -> Path | None:
    """Where the temporary files of ``target`` go: its project's :data:`HIDDEN_FOLDER` when that is on
    the file system of ``target``'s folder; else ``None`` (beside the target)."""
    folder = Path(os.path.abspath(target.parent))
    root = _project_root(folder)
    if root is None:
        return None
    hidden = root / HIDDEN_FOLDER
    try:
        hidden.mkdir(parents=True, exist_ok=True)
        if hidden.stat().st_dev != folder.stat().st_dev:
            return None
    except OSError:  # a read-only or foreign .dvc: beside the target, as outside a project
        return None
    if not target.is_absolute():  # relative paths stay relative in messages and logs
        with contextlib.suppress(ValueError):
            return hidden.relative_to(Path.cwd())
    return hidden


def _project_root(folder: Path) -> Path | None:
    """The nearest folder at or above ``folder`` (an absolute path) that holds ``.dvc``."""
    return next((root for root in (folder, *folder.parents) if (root / ".dvc").is_dir()), None)


def _remove_unless_busy(folder: Path, fd: int) -> list[Path]:
    """Remove the temporary files in ``folder`` if the exclusive lock on ``fd`` (its lock file) can be
    had: then no writer is alive that could still be writing one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return []  # a live writer's files are there: the next write or stage removes the others
    removed = []
    for path in sorted(folder.iterdir()):
        if is_temporary(path) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def target_of(path: str) -> str:
    """The file that the temporary file ``path`` was to become; ``path`` itself if it is none."""
    return os.fspath(_WRITING.get(path, path))


_TEMPORARY = re.compile(rf"\..+\.[0-9a-f]{{{2 * _TOKEN_HEX_BYTES}}}\.tmp(\.[^.]+)?")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named as this module names its temporary files."""
    return _TEMPORARY.fullmatch(path.name) is not None


def remove_abandoned(folders: list[Path]) -> list[Path]:
    """Remove the temporary files that killed writers left anywhere under ``folders`` and in their
    project's hidden folder (unless a writer is busy there); those removed."""
    removed = []
    roots = {_project_root(Path(os.path.abspath(folder))) for folder in folders}
    for hidden in sorted(root / HIDDEN_FOLDER for root in roots if root is not None):
        try:
            fd = os.open(hidden / _LOCK_NAME, os.O_RDWR)
        except OSError:  # no atomic write there yet, or another user's
            continue
        try:
            removed += _remove_unless_busy(hidden, fd)
        finally:
            os.close(fd)
    for folder in folders:
        for path in sorted(folder.rglob(".*.tmp*")) if folder.is_dir() else []:
            if is_temporary(path) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def remove_leftovers(target: Path) -> None:
    """Remove the temporary files that killed writers of ``target`` left beside it."""
    name = re.compile(
        re.escape(f".{target.stem}.")
        + f"[0-9a-f]{{{2 * _TOKEN_HEX_BYTES}}}"
        + re.escape(f".tmp{target.suffix}")
    )
    for leftover in target.parent.iterdir():
        if name.fullmatch(leftover.name):
            leftover.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
