"""A full disk in a stage is one line: the file, "No space left on device", the file system and what is
free on it, and the restore hint; never a traceback. Wherever the ``OSError`` comes from (a write, an
HDF5 checkpoint, a library that failed while handling it, DVC's cache after the command)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import dvc, set_params
from pipeline.core import atomic, logs, stage_cli

HINT = ". DVC removed train's outputs before running it; `python -m pipeline restore train` puts back"
FULL = os.strerror(errno.ENOSPC)


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable]:
    """``stage_cli.guarded`` as train runs it under DVC, in this process; its exit status and output.
    The logging and SIGTERM handler it sets are put back afterwards."""
    monkeypatch.setenv(stage_cli.DVC_STAGE_ENV, "train")
    monkeypatch.delenv(logs.LOG_SOCKET_ENV, raising=False)
    monkeypatch.setenv(logs.TF_LOG_LEVEL_ENV, os.environ.get(logs.TF_LOG_LEVEL_ENV, "3"))
    root = logging.getLogger()
    handlers, level, sigterm = root.handlers[:], root.level, signal.getsignal(signal.SIGTERM)

    def run(command: Callable[[], None]) -> tuple[int, str]:
        status = stage_cli.guarded("train", command, hint=stage_cli.stage_signals.restore_hint("train"))
        captured = capsys.readouterr()
        return status, captured.out + captured.err

    yield run
    root.handlers[:], root.level = handlers, level
    signal.signal(signal.SIGTERM, sigterm)


def one_line(status: int, output: str) -> str:
    assert status == 1, output
    assert "Traceback" not in output
    (line,) = output.splitlines()
    assert " ERROR pipeline: train failed: " in line and line.endswith(HINT + " the ones dvc.lock records")
    return line


def raises(exc: BaseException) -> Callable[[], None]:
    def command() -> None:
        raise exc

    return command


def test_no_space_names_the_file_and_its_file_system(guarded, tmp_path: Path) -> None:
    line = one_line(*guarded(raises(OSError(errno.ENOSPC, FULL, str(tmp_path / "x.npz")))))
    assert f"{FULL}: {tmp_path / 'x.npz'} (" in line and " free on the file system at /" in line


def test_no_space_in_an_hdf5_message_names_the_model_not_its_temporary_file(guarded, tmp_path: Path) -> None:
    """h5py reports a full disk in its message, errno and file name inside (no ``errno`` attribute)."""
    (tmp_path / ".dvc").mkdir()
    target = tmp_path / "models" / "best-model.h5"

    def write() -> None:
        with atomic.atomic_path(target) as tmp:
            raise OSError(
                f"Unable to synchronously create file (file write failed: time = Thu Dec  3 10:00:00 2026\n"
                f", filename = '{tmp}', file descriptor = 7, errno = 28, error message = '{FULL}', "
                "buf = 0x55d0, total write size = 2048, bytes this sub-write = 2048, offset = 0)"
            )

    line = one_line(*guarded(write))
    assert f"{FULL}: {target} (" in line
    assert not list(target.parent.iterdir())


def test_no_space_inside_another_exception_is_one_line_too(guarded, tmp_path: Path) -> None:
    """A library that failed while handling the full disk (its own exception, the OSError as context)."""

    def write() -> None:
        try:
            raise OSError(errno.ENOSPC, FULL, str(tmp_path / "plots.json"))
        except OSError:
            raise RuntimeError("could not flush the figure")  # noqa: B904 (a library's: the context only)

    one_line(*guarded(write))


def test_a_copy_that_fills_its_destination_names_the_destination(guarded, tmp_path: Path) -> None:
    copy = OSError(
        errno.ENOSPC, FULL, "models/best-model.h5", None, str(tmp_path / "cache" / "ab" / ".x.tmp")
    )
    line = one_line(*guarded(raises(copy)))
    assert f"{FULL}: {tmp_path / 'cache' / 'ab' / '.x.tmp'} (" in line


def test_any_other_bug_keeps_its_traceback(guarded) -> None:
    status, output = guarded(raises(RuntimeError("a bug")))
    assert status == 1 and "Traceback" in output and "train failed: RuntimeError: a bug" in output


def mount_tmpfs(folder: Path, size_kib: int) -> None:
    """A tmpfs of ``size_kib`` over ``folder``; skipped where mounting is not permitted (not root)."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")


@pytest.mark.integration
def test_dvc_repro_with_a_full_dvc_cache_is_one_line(reproduced: Path, tmp_path: Path) -> None:
    """``dvc repro -f train`` with DVC's cache on a full file system: the cache holds what the last run
    made (so ingest and preprocess, run again, fit), not the larger model train now makes. DVC's own
    log of each failed copy and a traceback from the stage were shown before; now the stage says it
    in one line, before DVC tries (exit 255 is DVC's, for any failed stage)."""
    cache = tmp_path / "full-cache"
    files = list((reproduced / ".dvc" / "cache").rglob("*"))
    mount_tmpfs(cache, sum(path.stat().st_size // 1024 + 4 for path in files) + 1024)  # 4 KiB pages
    try:
        shutil.copytree(reproduced / ".dvc" / "cache", cache, dirs_exist_ok=True)
        dvc("cache", "dir", str(cache), cwd=reproduced)
        free_kib = shutil.disk_usage(cache).free // 1024
        (cache / "filler").write_bytes(bytes((free_kib - 200) * 1024))  # 200 KiB left
        set_params(reproduced, {"train.model.dense.hidden_units": [512]})  # a model of several MiB
        result = dvc("repro", "-f", "train", cwd=reproduced, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 255, output
        assert "Traceback" not in output and "failed to transfer" not in output
        (line,) = [line for line in output.splitlines() if " ERROR " in line]
        assert f"train failed: DVC's cache: {FULL}: {cache} (" in line and "KiB free there)" in line
        assert HINT in line
        assert "ERROR: failed to reproduce 'train'" in output  # DVC's line: the stage failed
    finally:
        subprocess.run(["umount", str(cache)], check=True)
