"""What the benchmarks and the tests' project fixture share: scratch copies of this project (a
fresh git + DVC repository each), tiny synthetic Fashion-MNIST-shaped data for the benchmarks'
``--smoke`` runs, and a Prefect server to run flows against."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the benchmarks run as scripts: ``pipeline`` from this checkout
    sys.path.insert(0, str(REPO_ROOT))
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


def bench_project(directory: Path, *, smoke: bool = False, overrides: dict[str, Any] | None = None) -> Path:
    """A benchmark's project copy: :func:`scratch_project`, with ``overrides`` (dotted keys, as
    ``--override``) applied to its ``params.yaml``, on tiny synthetic data when ``smoke`` (written
    next to ``directory``), committed. DVCLive's train stage refuses an empty git repository, so
    every benchmark starts from this commit."""
    project = scratch_project(directory)
    if smoke:
        source = write_synthetic_dataset(directory.parent / f"{directory.name}-synthetic-data")
        write_dataset_spec(project, source)
        os.environ.pop("FASHION_MNIST_SOURCES", None)  # it would replace the spec's source
    if overrides:
        import yaml

        from pipeline.core.params import read_raw_params

        path = project / "params.yaml"
        path.write_text(yaml.safe_dump(read_raw_params(path, overrides), sort_keys=False))
    commit(project, "the project as benchmarked")
    return project


@dataclass(frozen=True)
class SyntheticSource:
    """A directory of the four ``.gz`` IDX files and the SHA-256 of each decompressed file."""

    directory: Path
    sha256: dict[str, str]


def write_synthetic_dataset(
    directory: Path, n_train: int = 300, n_test: int = 100, seed: int = 0
) -> SyntheticSource:
    """Gzip IDX files shaped like Fashion-MNIST (every class in every split): 28x28 noise with a
    bright band whose row depends on the class, learnable in a few steps."""
    import numpy as np

    from pipeline.core.dataset import FILE_NAMES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
    from pipeline.core.idx import encode_idx

    def images(labels: np.ndarray) -> np.ndarray:
        pixels = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
        for index, label in enumerate(labels):
            pixels[index, 2 * label + 4 : 2 * label + 7, 3:25] = 255
        return pixels

    rng = np.random.default_rng(seed)
    train_labels = np.arange(n_train, dtype=np.uint8) % 10
    test_labels = np.arange(n_test, dtype=np.uint8) % 10
    rng.shuffle(train_labels)
    arrays = {
        TRAIN_IMAGES: images(train_labels),
        TRAIN_LABELS: train_labels,
        TEST_IMAGES: images(test_labels),
        TEST_LABELS: test_labels,
    }
    directory.mkdir(parents=True, exist_ok=True)
    sha256 = {}
    for name in FILE_NAMES:
        content = encode_idx(arrays[name])
        (directory / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
        sha256[name] = hashlib.sha256(content).hexdigest()
    return SyntheticSource(directory, sha256)


def write_dataset_spec(root: Path, source: SyntheticSource, sources: list[str] | None = None) -> Path:
    """``root``'s ``datasets/fashion-mnist.yaml``, naming ``source`` (or ``sources``) and its checksums."""
    import yaml

    path = root / "datasets" / "fashion-mnist.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = {"sources": sources or [str(source.directory)], "sha256": dict(source.sha256)}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """A Prefect server to run flows against; the environment that points at it. The one
    ``PREFECT_API_URL`` names when it is set (the tests pass their session's server), else
    ``prefect server start`` on a free port of 127.0.0.1, stopped on leaving."""
    if os.environ.get("PREFECT_API_URL"):
        yield dict(os.environ)
        return
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
