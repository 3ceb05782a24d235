"""Bit rot: ``verify`` hashes every byte that ``dvc status`` takes on trust, and ``restore`` puts back
nothing that differs from ``dvc.lock``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import dvc
from pipeline.core.paths import Paths


def pipeline_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True)


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if " ERROR " in line]


def flip_byte(path: Path, offset: int = 100) -> None:
    """Bit rot: one byte changed, the file's mode and mtime kept (so DVC's state database still trusts it)."""
    kept = path.stat()
    path.chmod(0o644)
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0x01]))
    path.chmod(kept.st_mode)
    os.utime(path, ns=(kept.st_atime_ns, kept.st_mtime_ns))


def cache_file(project: Path, stage: str, path: str) -> Path:
    """The DVC cache's copy of ``path``, an output file of ``stage``, by the md5 dvc.lock records."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (md5,) = [out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path]
    return project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def in_folder_cache_file(project: Path, folder: str, name: str) -> Path:
    """The DVC cache's copy of ``name`` in the output ``folder``, by DVC's .dir manifest."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (oid,) = [
        out["md5"] for stage in lock["stages"].values() for out in stage["outs"] if out["path"] == folder
    ]
    cache = project / ".dvc" / "cache" / "files" / "md5"
    manifest = json.loads((cache / oid[:2] / oid[2:]).read_text())
    (md5,) = [entry["md5"] for entry in manifest if entry["relpath"] == name]
    return cache / md5[:2] / md5[2:]


@pytest.mark.integration
def test_a_corrupt_cache_copy_is_named_and_never_put_back(reproduced: Path) -> None:
    model = Paths(reproduced).model
    cached = cache_file(reproduced, "train", "models/best-model.h5")
    flip_byte(cached)
    assert json.loads(dvc("status", "--json", cwd=reproduced).stdout) == {}  # DVC sees nothing wrong
    model.unlink()  # as `dvc repro` deletes them before a run that then fails
    Paths(reproduced).keras_model.unlink()

    restore = pipeline_cli("restore", "train", cwd=reproduced)
    assert restore.returncode == 1
    (line,) = errors(restore)
    assert "models/best-model.h5: the DVC cache's copy .dvc/cache/files/md5/" in line and "is corrupt" in line
    assert f"`rm -f {cached.relative_to(reproduced)}`, then `dvc repro -f train` makes it again" in line
    assert "models/best-model.h5: put back" not in restore.stderr
    assert "models/model.keras: put back as dvc.lock records it" in restore.stderr  # the intact ones are
    assert not model.exists()
    assert "Traceback" not in restore.stderr

    verify = pipeline_cli("verify", cwd=reproduced)
    assert verify.returncode == 1
    found = errors(verify)
    assert len(found) == 2, verify.stderr
    assert "models/best-model.h5: missing; `rm -f " in found[0]
    assert "models/best-model.h5: the DVC cache's copy" in found[1] and "is corrupt" in found[1]

    # The repair it names works.
    cached.unlink()
    dvc("repro", "-f", "train", cwd=reproduced)
    verify = pipeline_cli("verify", cwd=reproduced)
    assert verify.returncode == 0, verify.stderr
    assert "every output dvc.lock records matches it" in verify.stderr


@pytest.mark.integration
def test_verify_names_bit_rot_in_the_workspace_and_a_missing_cache_entry_from_any_folder(
    reproduced: Path,
) -> None:
    train_split = Paths(reproduced).split("train")
    assert json.loads(dvc("status", "--json", cwd=reproduced).stdout) == {}  # DVC's state: hashed once
    flip_byte(train_split)
    flip_byte(in_folder_cache_file(reproduced, "reports/train/plots", "images/loss.png"))  # git keeps it too
    assert json.loads(dvc("status", "--json", cwd=reproduced).stdout) == {}
    missing = in_folder_cache_file(reproduced, "data/processed", "test.npz")
    missing.unlink()

    verify = pipeline_cli("verify", cwd=reproduced / "reports" / "train")
    assert verify.returncode == 1
    found = errors(verify)
    assert len(found) == 3, verify.stderr
    assert "data/processed/train.npz: differs from dvc.lock (md5 " in found[0]
    assert "`python -m pipeline restore preprocess` puts it back" in found[0]
    assert f"data/processed/test.npz: not in the DVC cache ({missing.relative_to(reproduced)})" in found[1]
    assert "`dvc repro -f preprocess` makes it again" in found[1]
    assert "reports/train/plots/images/loss.png: the DVC cache's copy" in found[2]
    assert pipeline_cli("verify", "evaluate", cwd=reproduced).returncode == 0  # its outputs are whole

    restore = pipeline_cli("restore", "preprocess", cwd=reproduced)  # the cache lacks test.npz
    assert restore.returncode == 1
    (line,) = errors(restore)
    assert "data/processed/test.npz: not in the DVC cache" in line


@pytest.mark.integration
def test_restore_puts_back_a_rotten_file_that_dvc_checkout_keeps(reproduced: Path) -> None:
    """DVC's state database vouches for a file by its mtime, so ``dvc checkout`` leaves it; restore
    hashes it and puts back the cache's intact copy."""
    train_split = Paths(reproduced).split("train")
    before = train_split.read_bytes()
    assert json.loads(dvc("status", "--json", cwd=reproduced).stdout) == {}  # DVC's state: hashed once
    flip_byte(train_split)
    dvc("checkout", "--force", cwd=reproduced)
    assert train_split.read_bytes() != before

    restore = pipeline_cli("restore", "preprocess", cwd=reproduced / "data")
    assert restore.returncode == 0, restore.stderr
    assert "data/processed: put back as dvc.lock records it" in restore.stderr
    assert train_split.read_bytes() == before
    assert pipeline_cli("verify", cwd=reproduced).returncode == 0
