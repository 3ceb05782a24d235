"""Atomic writes: an interrupted write leaves the previous file and no stray temporary file."""

from __future__ import annotations

import os

import pytest

from pipeline import atomic


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
