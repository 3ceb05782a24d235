"""Atomic writes: the content goes to a temporary file beside the target, then is renamed over it.

An interrupted run therefore never leaves a half-written file that looks like a valid output. A run
killed outright (SIGKILL) cannot remove its temporary file; the next run of any stage does
(:func:`remove_abandoned`), as does the next write of the same target (one pipeline run per project
folder at a time: DVC locks the project while a stage runs). Git and DVC ignore
these files (``.gitignore``, ``.dvcignore``), so none is ever tracked or hashed into an output.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

_TOKEN_HEX_BYTES = 6


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    # Same folder (so the rename is atomic), same suffix (so writers pick the format from it), and
    # created like any new file (0666 less the umask; mkstemp's 0600 would leak into the outputs).
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(_TOKEN_HEX_BYTES)}.tmp{target.suffix}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


_TEMPORARY = re.compile(rf"\..+\.[0-9a-f]{{{2 * _TOKEN_HEX_BYTES}}}\.tmp(\.[^.]+)?")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named as this module names its temporary files."""
    return _TEMPORARY.fullmatch(path.name) is not None


def remove_abandoned(folders: list[Path]) -> list[Path]:
    """Remove the temporary files that killed writers left anywhere under ``folders``; those removed."""
    removed = []
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
