"""Atomic writes: an interrupted write leaves the previous file and no stray temporary file; a killed
writer's temporary file never shows in the folder of the file it was writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import atomic

# Writes sys.argv[1] and is killed (SIGKILL) halfway: what a killed stage does to its model file.
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from pipeline.core import atomic
with atomic.atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a model")
    print(tmp, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a ``.dvc`` folder, as a DVC project has (``dvc init``)."""
    (tmp_path / ".dvc").mkdir()
    return tmp_path


def killed_writer(target: Path, cwd: Path) -> Path:
    """The temporary file that a writer of ``target`` killed with SIGKILL left."""
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(target)], cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    return cwd / result.stdout.strip()


def ordinary_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_write_replaces_the_file_with_ordinary_permissions(tmp_path) -> None:
    target = tmp_path / "reports" / "metrics.json"
    atomic.write_text(target, "{}")
    atomic.write_text(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    assert target.stat().st_mode & 0o777 == ordinary_mode()
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
    """Outside a DVC project the temporary file is beside the target."""
    target = tmp_path / "best-model.h5"
    leftover = tmp_path / ".best-model.0123456789ab.tmp.h5"  # what SIGKILL mid-write leaves
    unrelated = [tmp_path / ".other.0123456789ab.tmp.h5", tmp_path / ".best-model.notours.tmp.h5"]
    for path in (leftover, *unrelated):
        path.write_bytes(b"half a model")
    atomic.write_bytes(target, b"model")
    assert not leftover.exists()
    assert all(path.exists() for path in unrelated)
    assert target.read_bytes() == b"model"


def test_in_a_project_the_temporary_file_is_in_its_hidden_folder(project: Path, monkeypatch) -> None:
    monkeypatch.chdir(project)
    target = Path("models", "best-model.h5")  # relative, as the stages name their outputs
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == atomic.HIDDEN_FOLDER and tmp.suffix == ".h5"
        tmp.write_bytes(b"model")
        assert os.listdir("models") == []
    assert target.read_bytes() == b"model"
    assert target.stat().st_mode & 0o777 == ordinary_mode()
    assert os.listdir("models") == ["best-model.h5"]
    assert os.listdir(atomic.HIDDEN_FOLDER) == [".lock"]


def test_a_writer_killed_in_a_project_leaves_nothing_in_the_outputs_folder(project: Path) -> None:
    """SIGKILL inside ``atomic_path`` (train killed while it saves the model); the next write of any
    file of the project, or the next stage (``remove_abandoned``), removes the leftover."""
    models = project / "models"
    models.mkdir()
    (models / "best-model.h5").write_bytes(b"previous model")
    leftover = killed_writer(models / "best-model.h5", project)
    assert leftover.read_bytes() == b"half a model" and leftover.parent == project / atomic.HIDDEN_FOLDER
    assert os.listdir(models) == ["best-model.h5"]
    assert (models / "best-model.h5").read_bytes() == b"previous model"

    atomic.write_text(project / "reports" / "metrics.json", "{}")
    assert not leftover.exists()
    leftover = killed_writer(models / "model.keras", project)
    assert atomic.remove_abandoned([project / "data", models]) == [leftover]
    assert not leftover.exists() and os.listdir(models) == ["best-model.h5"]


def test_a_live_writers_temporary_file_is_never_removed(project: Path) -> None:
    """Cleaning waits for an exclusive lock on the hidden folder, which no live writer lets go of."""
    target = project / "models" / "best-model.h5"
    with atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half a model")
        atomic.write_text(project / "reports" / "metrics.json", "{}")  # another writer meanwhile
        assert atomic.remove_abandoned([project / "models"]) == []  # a stage starting meanwhile
        assert tmp.read_bytes() == b"half a model"
    assert target.read_bytes() == b"half a model"


def test_a_folder_on_another_file_system_gets_its_temporary_file_beside_the_target(project: Path) -> None:
    """A rename across file systems is no rename: a mounted output folder keeps the beside files."""
    models = project / "models"
    models.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(models)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        with atomic.atomic_path(models / "best-model.h5") as tmp:
            assert tmp.parent == models
            tmp.write_bytes(b"model")
        assert os.listdir(models) == ["best-model.h5"]
    finally:
        subprocess.run(["umount", str(models)], check=True)


def test_git_and_dvc_ignore_temporary_files() -> None:
    root = Path(__file__).resolve().parents[1]
    for ignore in (".gitignore", ".dvcignore"):
        patterns = (root / ignore).read_text().splitlines()
        assert ".*.tmp" in patterns and ".*.tmp.*" in patterns, ignore
