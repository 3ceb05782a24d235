"""Reproduce the tutorial's three runs through the pipeline and compare with its figures.

Each run is this project, copied to a scratch git + DVC repository, with only ``params.yaml``
changed, then ``dvc repro``. Needs the real data (the Debian ``dataset-fashion-mnist`` package or a
reachable mirror). Prints a Markdown table: tutorial figure, ours, difference, wall time.

    python bench/tutorial_runs.py            # all three (about 10 minutes on 2 CPU cores)
    python bench/tutorial_runs.py --only best-checkpoint
    python bench/tutorial_runs.py --smoke    # one run on tiny synthetic data: does it run?

``--smoke`` (tests/test_bench.py) takes the same steps on 300 synthetic images with a fifth of the
run's epochs, for the first run (the one that changes most params) or those ``--only`` names; its
numbers mean nothing, so it does not fail on the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from scratch import REPO_ROOT, bench_project

from pipeline.review.metrics import run_metrics


@dataclass(frozen=True)
class TutorialRun:
    name: str
    description: str
    train_overrides: dict[str, Any]
    tutorial_val_accuracy: float


RUNS = (
    TutorialRun(
        "softmax-only",
        "softmax only, rmsprop, 5 epochs",
        {"model": {"dense": {"hidden_units": [], "dropout": 0.0}}, "optimizer": "rmsprop", "epochs": 5},
        0.8506,
    ),
    TutorialRun(
        "dropout-10-epochs",
        "hidden 100 relu + dropout 0.3, adam, 10 epochs",
        {"epochs": 10},
        0.8788,
    ),
    TutorialRun(
        "best-checkpoint",
        "same, 20 epochs, best checkpoint",
        {"epochs": 20},
        0.8863,
    ),
)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) else value
    return merged


def reproduce(project: Path, run: TutorialRun, smoke: bool = False) -> tuple[dict[str, Any], float]:
    """Set the run's train params (``smoke``: a fifth of its epochs), ``dvc repro``; return the
    metrics and the wall time."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["train"] = merge(params["train"], run.train_overrides)
    if smoke:
        params["train"]["epochs"] = max(1, params["train"]["epochs"] // 5)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, check=True)
    elapsed = time.perf_counter() - start
    evaluated, trained = (
        json.loads((project / f"reports/{stage}/metrics.json").read_text()) for stage in ("evaluate", "train")
    )
    return run_metrics(evaluated, trained), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=[run.name for run in RUNS], action="append")
    parser.add_argument("--smoke", action="store_true", help="one run on tiny synthetic data (seconds)")
    args = parser.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    runs = [run for run in RUNS if not args.only or run.name in args.only]
    if args.smoke and not args.only:
        runs = runs[:1]  # each run is the same steps with other params: ~25 s each on 2 cores
    rows = []
    with tempfile.TemporaryDirectory(prefix="fashion-bench-") as scratch:
        project = bench_project(Path(scratch) / "project", smoke=args.smoke)
        # Ingest and preprocess once, so each run's wall time is its train + evaluate.
        subprocess.run([sys.executable, "-m", "dvc", "repro", "preprocess"], cwd=project, check=True)
        for run in runs:
            metrics, seconds = reproduce(project, run, args.smoke)
            ours = metrics["val"]["accuracy"]
            rows.append((run, ours, seconds, metrics["test"]["accuracy"]))
    print()
    print("| run | tutorial val acc | ours val acc | difference (pp) | ours test acc | wall time (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for run, ours, seconds, test_accuracy in rows:
        difference = 100 * (ours - run.tutorial_val_accuracy)
        print(
            f"| {run.description} | {run.tutorial_val_accuracy:.4f} | {ours:.4f} | {difference:+.2f} "
            f"| {test_accuracy:.4f} | {seconds:.1f} |"
        )
    within = all(abs(ours - run.tutorial_val_accuracy) <= 0.01 for run, ours, _, _ in rows)
    print(f"\nall within 1.0 percentage point of the tutorial: {'yes' if within else 'NO'}")
    if args.smoke:
        print("--smoke: tiny synthetic data, a fifth of the epochs; the comparison means nothing")
        return 0
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
