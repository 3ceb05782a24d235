"""What the benchmarks and the tests' project fixture share: scratch copies of this project (a
fresh git + DVC repository each) and a Prefect server to run flows against."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# What a project copy needs to run the pipeline and the flow; data and outputs are made fresh.
PROJECT_FILES = (
    "pipeline",
    "flows",
    "presets",
    "datasets",
    "dvc.yaml",
    "params.yaml",
    "prefect.yaml",
    ".dvcignore",
)


def scratch_project(directory: Path) -> Path:
    """Copy the project's pipeline and flows into a fresh git + DVC repository at ``directory``
    (the benchmarks' and the tests' project copies)."""
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


@contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """``prefect server start`` on a free port of 127.0.0.1; the environment that points at it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{env['PREFECT_API_URL']}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Prefect server did not start") from None
                time.sleep(1)
        yield env
    finally:
        os.killpg(server.pid, 15)
        server.wait()
