"""Atomic writes: an interrupted write leaves the previous file and no stray temporary file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.core import atomic


def test_write_replaces_the_file_with_ordinary_permissions(tmp_path) -> None:
    target = tmp_path / "reports" / "metrics.json"
    atomic.write_text(target, "{}")
    atomic.write_text(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(target.parent) == ["metrics.json"]


def test_interrupted_write_keeps_the_previous_file(tmp_path) -> None:
    target = tmp_path / "best-model.h5"
    target.write_bytes(b"previous model")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".h5"
        tmp.write_bytes(b"half a mod")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["best-model.h5"]


def test_a_killed_writers_temporary_file_goes_with_the_next_write(tmp_path) -> None:
    target = tmp_path / "best-model.h5"
    leftover = tmp_path / ".best-model.0123456789ab.tmp.h5"  # what SIGKILL mid-write leaves
    unrelated = [tmp_path / ".other.0123456789ab.tmp.h5", tmp_path / ".best-model.notours.tmp.h5"]
    for path in (leftover, *unrelated):
        path.write_bytes(b"half a model")
    atomic.write_bytes(target, b"model")
    assert not leftover.exists()
    assert all(path.exists() for path in unrelated)
    assert target.read_bytes() == b"model"


def test_git_and_dvc_ignore_temporary_files() -> None:
    root = Path(__file__).resolve().parents[1]
    for ignore in (".gitignore", ".dvcignore"):
        patterns = (root / ignore).read_text().splitlines()
        assert ".*.tmp" in patterns and ".*.tmp.*" in patterns, ignore
