"""Every benchmark in ``bench/`` runs end to end: ``python bench/<script>.py --smoke`` takes the
benchmark's own steps (dvc repro, the flows, the tutorial's code) on tiny synthetic data, and prints
its Markdown tables with a row per measurement. Its numbers mean nothing; a broken benchmark fails
here instead of on the day someone needs its numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]
# Seconds per smoke run on 2 loaded cores: tutorial_runs 35, serve 60, models 160, sweep 190, speed 200.
SMOKE_TIMEOUT_S = 900

# Each script's tables in order: the header's start, and the start of each row's first cell.
TABLES: dict[str, list[tuple[str, list[str]]]] = {
    "speed": [
        (
            "| measurement | ours | reference | ratio | command |",
            [
                "train stage",
                "model quality",
                "determinism",
                "cost of deterministic ops",
                "preprocess stage",
                "data/processed",
                "evaluate stage",
                "no-op dvc repro",
                "no-op python -m flows run, running Prefect server",
                "no-op python -m flows run, temporary server",
            ],
        )
    ],
    "models": [
        ("| model | test accuracy", ["dense", "cnn-fast", "cnn"]),
        ("| precision (cnn preset", ["float32", "mixed_bfloat16"]),
        ("| CPU kernels (cnn preset", ["TensorFlow's own", "oneDNN"]),
    ],
    "tutorial_runs": [("| run | tutorial val acc | ours val acc |", ["softmax only"])],
    "serve": [
        (
            "| contender | images/s | p50 (ms) | p99 (ms) |",
            [
                "serve, 1 client",
                "serve, 8 client",
                "serve, 32 client",
                "predict, one process per image",
                "predict, one call on",
                "flows classify, a folder of",
            ],
        ),
        ("| server | resident memory (MiB) |", ["1 worker(s)"]),
    ],
    "sweep": [
        (
            "| contender | wall time (s) |",
            [
                "flows sweep, one at a time",
                "flows sweep, 2 Dask workers",
                "dvc exp run --queue, -j 1",
                "dvc exp run --queue, -j 2",
            ],
        )
    ],
}


def markdown_tables(output: str) -> list[tuple[str, list[str]]]:
    """Each Markdown table in ``output``: its header line and the first cell of each row."""
    lines = output.splitlines()
    tables = []
    for index, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[index + 1].startswith("|---"):
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(row.split("|")[1].strip())
            tables.append((line, rows))
    return tables


def smoke(script: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [sys.executable, f"bench/{script}.py", "--smoke"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S - 30,
    )
    output = f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    assert result.returncode == 0, f"bench/{script}.py --smoke exited {result.returncode}\n{output}"
    tables = markdown_tables(result.stdout)
    assert len(tables) == len(TABLES[script]), result.stdout
    for (header, rows), (expected_header, expected_rows) in zip(tables, TABLES[script], strict=True):
        assert header.startswith(expected_header), result.stdout
        assert len(rows) == len(expected_rows), result.stdout
        for row, expected in zip(rows, expected_rows, strict=True):
            assert row.startswith(expected), result.stdout


@pytest.mark.timeout(SMOKE_TIMEOUT_S)
@pytest.mark.parametrize("script", ["models", "tutorial_runs"])
def test_bench_smoke(script: str) -> None:
    smoke(script)


@pytest.mark.server
@pytest.mark.timeout(SMOKE_TIMEOUT_S)
@pytest.mark.parametrize("script", ["speed", "sweep", "serve"])
def test_bench_smoke_on_the_sessions_server(script: str, prefect_api: str) -> None:
    """The benchmarks that run flows use the session's Prefect server (``PREFECT_API_URL``) instead
    of starting one of their own."""
    smoke(script, env={**os.environ, "PREFECT_API_URL": prefect_api})
