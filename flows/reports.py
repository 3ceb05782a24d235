"""What the flow shows in the Prefect UI: the metrics against the previous run, the per-class scores,
the figures themselves, and the live progress of a training stage.

The builders are pure functions of plain dicts and paths; :func:`flows.pipeline_flow.publish_artifacts`
turns them into artifacts. The figures are embedded in the Markdown as ``data:`` URLs: the UI draws
them, where ``file://`` links to the worker's disk would open nothing.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from pipeline.core.logs import Progress
from pipeline.core.paths import Paths
from pipeline.review import seed_groups
from pipeline.review.metrics import metric_rows, run_metrics
from pipeline.review.seed_groups import Run, compare_groups, seeds_line
from pipeline.review.tables import group_table, metric_table

log = logging.getLogger(__name__)


def read_metrics(paths: Paths) -> dict[str, Any] | None:
    """The run's metrics (evaluate's ``test.*``, train's kept epoch), or None before the first run."""
    if not paths.metrics_json.is_file():
        return None
    trained = paths.train_metrics_json
    kept_epoch = json.loads(trained.read_text()) if trained.is_file() else None
    return run_metrics(json.loads(paths.metrics_json.read_text()), kept_epoch)


def metrics_markdown(
    current: dict[str, Any],
    start: dict[str, Any] | None,
    experiment: str | None = None,
    start_name: str = "Start",
    spread: Sequence[Run] = (),
    this_run: Run | None = None,
    pushed: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> str:
    """Every scalar metric: the commit the run started from (``start_name``), this run and the
    change (the review report's table); what the run's push sent where (``pushed``); then, where
    ``spread`` holds two or more other seeds of this run's configuration, this run against their
    spread. ``warnings`` (a push that left data behind) come first, as the review report's do."""
    rows = metric_rows(start or {}, current)
    table = "\n".join(metric_table(rows, old=start_name, new="This run"))
    recorded = (
        f"\n\nRecorded as DVC experiment `{experiment}`: `dvc exp show`, `dvc exp apply {experiment}`."
        if experiment
        else ""
    )
    if pushed:
        recorded += "\n\nPushed: " + "; ".join(pushed) + "."
    warned = "".join(f"> **Warning:** {warning}\n\n" for warning in warnings)
    against = ""
    if this_run is not None and len(spread) >= 2:
        comparisons = compare_groups(spread, [this_run])
        against = (
            f"\n\n### Against its configuration's seed spread\n\n{len(spread)} other seeds of the same "
            f"code, data and params: {seeds_line(spread)}.\n\n"
            + "\n".join(group_table(comparisons, old="Seed spread", new="This run"))
            + "\n\nThe verdict is *within seed noise* inside the spread's 95% prediction interval for "
            "one run, *better* or *worse* outside it."
        )
    return "## Fashion-MNIST metrics\n\n" + warned + table + recorded + against + "\n"


def seed_spread(root: Path, project: Path | None) -> tuple[Run | None, list[Run]]:
    """The run in ``root`` and the other seeds of its configuration among ``project``'s DVC
    experiments (none without a project, or where they cannot be read)."""
    paths = Paths(root)
    this_run = seed_groups.workspace_run(paths)
    if this_run is None or project is None:
        return this_run, []
    try:
        from flows.workspace import open_repo

        with open_repo(project) as repo:
            runs = seed_groups.experiment_runs(repo, Paths(project))
    except Exception as exc:  # noqa: BLE001  (the spread is a view, not the run)
        log.warning("seed spread not shown: %s", exc)
        return this_run, []
    return this_run, _others(this_run, runs)


def _others(this_run: Run, runs: Sequence[Run]) -> list[Run]:
    return [run for run in seed_groups.group_of(this_run, runs) if run is not this_run]


def class_f1(path: Path) -> dict[str, float]:
    """Each class's test F1 from the evaluate stage's per-class rows; empty before the first run."""
    return {row["class"]: row["f1"] for row in json.loads(path.read_text())} if path.is_file() else {}


def per_class_table(path: Path) -> list[dict[str, Any]]:
    """The evaluate stage's per-class rows (label, class, precision, recall, F1), scores rounded."""
    rows = json.loads(path.read_text())
    return [
        {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
        for row in rows
    ]


def plots_markdown(paths: Paths, experiment: str | None) -> str:
    """The stages' PNG figures, drawn in the artifact; how to see the interactive plots."""
    figures = [
        f"### {title}\n\n![{title}]({png_data_url(path)})"
        for title, path in paths.figures().items()
        if path.is_file()
    ]
    if experiment:
        interactive = (
            f"Interactive, next to the checkout's: `python -m pipeline plots diff HEAD {experiment}` "
            f"(writes `dvc_plots/index.html`); `dvc exp apply {experiment}` brings this run's files "
            "into the checkout."
        )
    else:
        interactive = "Interactive: `python -m pipeline plots show` in the checkout (no network needed)."
    return "## Fashion-MNIST plots\n\n" + interactive + "\n\n" + "\n\n".join(figures) + "\n"


def png_data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


class LiveProgress:
    """A progress artifact of the running task, updated from a stage's progress records.

    Made in the task's thread (where Prefect's run context lives) and fed from the thread that relays
    the stage's log records: the first record creates the artifact under the task, the next ones
    update it. A failing update is logged, never raised: progress is a view, not the run.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.context = contextvars.copy_context()  # the task's run context, for the first record
        self.artifact: UUID | None = None

    def __call__(self, step: Progress) -> None:
        percent = 100.0 * step.done / step.total if step.total else 0.0
        description = f"{self.stage}: {step.summary}"
        try:
            if self.artifact is None:
                self.artifact = self.context.copy().run(
                    create_progress_artifact,
                    percent,
                    key=f"fashion-{self.stage}-progress",
                    description=description,
                )
            else:
                update_progress_artifact(self.artifact, percent, description=description)
        except Exception as exc:  # noqa: BLE001
            log.warning("progress of %s not shown: %s", self.stage, exc)
