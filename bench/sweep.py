"""The same 4-trial sweep, one trial at a time and on 2 Dask workers, against DVC's own queue.

Real data (the Debian ``dataset-fashion-mnist`` package or a reachable mirror). A scratch copy of
this project runs ingest and preprocess and commits them, so every contender starts from the same
commit with its data and split in the cache; each contender then gets a fresh copy of
that state (no run cache or experiments from the others). The grid is the tiny one DVC's anchor
figure used: hidden units 16 or 48, 2 or 3 epochs. Ours run against one Prefect server started here,
as a deployment would. Prints a Markdown table: each contender's command, its wall time, and its
speed-up over running the trials one at a time.

    python bench/sweep.py           # about 6 minutes on 2 CPU cores
    python bench/sweep.py --smoke   # every contender on tiny synthetic data: does it run?

``--smoke`` (tests/test_bench.py) takes the same steps on 300 synthetic images with a 1-trial grid
(hidden units 16, 1 epoch), the contenders sharing the prepared project's DVC cache: the first
trains the trial, the others restore it from the run cache. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scratch import bench_project, commit, prefect_server

GRID = ["train.model.dense.hidden_units=[16],[48]", "train.epochs=2,3"]
# One trial: a smoke run (tests/test_bench.py) trains it once.
SMOKE_GRID = ["train.model.dense.hidden_units=[16]"]


def set_params(grid: list[str]) -> list[str]:
    return [arg for value in grid for arg in ("-S", value)]


def contenders(grid: list[str]) -> dict[str, list[str]]:
    sweep = [sys.executable, "-m", "flows", "sweep", *set_params(grid)]
    return {
        "flows sweep, one at a time": [*sweep, "--in-process"],
        "flows sweep, 2 Dask workers": [*sweep, "--workers", "2"],
        "dvc exp run --queue, -j 1": ["dvc-queue", "1", *set_params(grid)],
        "dvc exp run --queue, -j 2": ["dvc-queue", "2", *set_params(grid)],
    }


def prepared_project(directory: Path, smoke: bool = False) -> Path:
    """A commit whose data and split are in the cache (``dvc repro preprocess``): what every
    trial shares, so that no contender pays for it."""
    project = bench_project(directory, smoke=smoke)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "--quiet", "preprocess"], cwd=project, check=True)
    commit(project, "the data and its split")
    return project


def run(command: list[str], project: Path, env: dict[str, str]) -> float:
    """Wall time of ``command`` in ``project`` (DVC's queue: queue the grid, then run it all)."""
    start = time.perf_counter()
    if command[0] == "dvc-queue":
        dvc = [sys.executable, "-m", "dvc", "exp", "run"]
        subprocess.run([*dvc, "--queue", *command[2:]], cwd=project, env=env, check=True)
        subprocess.run([*dvc, "--run-all", "-j", command[1]], cwd=project, env=env, check=True)
        seconds = time.perf_counter() - start
        stop_queue_workers(project, env)
        return seconds
    subprocess.run(command, cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def stop_queue_workers(project: Path, env: dict[str, str], timeout_s: float = 120) -> None:
    """Stop DVC's queue workers and wait until they are gone: an idle worker outlives
    ``--run-all`` and still writes into the project (the scratch folder's removal then fails)."""
    dvc = [sys.executable, "-m", "dvc", "queue"]
    subprocess.run([*dvc, "stop"], cwd=project, env=env, check=True, capture_output=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = subprocess.run([*dvc, "status"], cwd=project, env=env, capture_output=True, text=True)
        if "0 active, 0 idle" in status.stdout:
            return
        time.sleep(1)
    raise RuntimeError(f"DVC's queue workers in {project} did not stop in {timeout_s:.0f} s")


def experiments(project: Path) -> int:
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "ls", "--name-only"], cwd=project, capture_output=True, text=True
    )
    return len([line for line in listed.stdout.splitlines() if line.strip()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="on tiny synthetic data, a 1-trial grid")
    args = parser.parse_args()
    grid = SMOKE_GRID if args.smoke else GRID
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fashion-bench-sweep-") as scratch:
        prepared = prepared_project(Path(scratch) / "prepared", args.smoke)
        with prefect_server(Path(scratch) / "prefect-home") as env:
            for name, command in contenders(grid).items():
                project = Path(scratch) / name.replace(" ", "-").replace(",", "")
                shutil.copytree(prepared, project, symlinks=True)
                # The copy's files have new inodes: refresh git's index as a clone would have it
                # (``git stash create``, which the flow runs, exits 1 on an index that is only stale).
                subprocess.run(["git", "update-index", "-q", "--refresh"], cwd=project, check=False)
                if args.smoke:  # one trial trained, three restored: each contender's steps, quickly
                    dvc_cache = [sys.executable, "-m", "dvc", "cache", "dir", "--local"]
                    subprocess.run([*dvc_cache, str(prepared / ".dvc/cache")], cwd=project, check=True)
                seconds = run(command, project, env)
                rows.append((name, command, seconds, experiments(project)))
    sequential = rows[0][2]
    print()
    print("| contender | wall time (s) | speed-up over one at a time | experiments recorded |")
    print("|---|---:|---:|---:|")
    for name, _, seconds, recorded in rows:
        print(f"| {name} | {seconds:.1f} | {sequential / seconds:.2f}x | {recorded} |")
    dask, dvc_j1, dvc_j2 = (rows[1][2], rows[2][2], rows[3][2])
    print(f"\nDVC's queue: -j 2 is {dvc_j1 / dvc_j2:.2f}x -j 1; the Dask sweep takes {dask / dvc_j2:.2f}x")
    print("the wall time of DVC's -j 2. Grid: " + " ".join(f"-S '{value}'" for value in grid))
    if args.smoke:
        print("--smoke: tiny synthetic data; the numbers mean nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
