"""Scratch copies of this project for the benchmarks: a fresh git + DVC repository each."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("pipeline", "flows", "dvc.yaml", "params.yaml", "prefect.yaml", ".dvcignore")


def scratch_project(directory: Path) -> Path:
    """Copy the project's pipeline and flows into a fresh git + DVC repository at ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, directory / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, directory / name)
    for command in (["git", "init", "-q", "-b", "main"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=directory, check=True)
    return directory


def commit(directory: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=directory, check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=directory, check=True)
