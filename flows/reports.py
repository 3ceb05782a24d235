"""The Markdown of the flow's Prefect artifacts: the metrics against the previous run, and the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.paths import Paths

METRICS = (("val", "accuracy"), ("val", "loss"), ("test", "accuracy"), ("test", "loss"))


def read_metrics(path: Path) -> dict[str, Any] | None:
    """The evaluate stage's ``metrics.json``, or None before the first run."""
    return json.loads(path.read_text()) if path.is_file() else None


def metrics_markdown(
    current: dict[str, Any], previous: dict[str, Any] | None, experiment: str | None = None
) -> str:
    """A table of val/test accuracy and loss: previous run, this run, and the change."""
    rows = [
        "| metric | previous | current | change |",
        "|---|---:|---:|---:|",
    ]
    for split, name in METRICS:
        now = current[split][name]
        before = previous[split][name] if previous else None
        change = "n/a" if before is None else f"{now - before:+.4f}"
        shown_before = "n/a" if before is None else f"{before:.4f}"
        rows.append(f"| {split} {name} | {shown_before} | {now:.4f} | {change} |")
    recorded = (
        f"\n\nRecorded as DVC experiment `{experiment}`: `dvc exp show`, `dvc exp apply {experiment}`."
        if experiment
        else ""
    )
    return "## Fashion-MNIST metrics\n\n" + "\n".join(rows) + recorded + "\n"


def plots_markdown(paths: Paths, experiment: str | None = None) -> str:
    """Links to the stages' PNG figures, or for an isolated run (whose workspace is gone) the commands."""
    if experiment:
        return (
            "## Fashion-MNIST plots\n\n"
            f"This run's plots are in DVC experiment `{experiment}`: `dvc plots diff HEAD {experiment}` "
            f"renders them next to the checkout's (`dvc_plots/index.html`); `dvc exp apply {experiment}` "
            "brings its PNG figures into the checkout.\n"
        )
    links = [f"- [{title}]({path.resolve().as_uri()})" for title, path in paths.figures().items()]
    return (
        "## Fashion-MNIST plots\n\n"
        + "\n".join(links)
        + f"\n\nAll plots, interactive: run `dvc plots show` in `{paths.root.resolve()}` "
        "and open `dvc_plots/index.html`.\n"
    )
