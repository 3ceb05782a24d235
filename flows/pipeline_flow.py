"""The Prefect flow ``fashion-pipeline``: the stages of ``dvc.yaml``, one task each, in one workspace.

Decisions:

- **A run is a unit.** It happens in one workspace (:mod:`flows.workspace`): an isolated clone of a
  commit (``isolated=True``; what the scheduled deployment does), or the user's checkout, held
  under DVC's own lock for the whole run so that no ``dvc repro`` can interleave with it. Its params
  are the workspace's ``params.yaml`` plus ``overrides``, validated before any work; a run that
  fails, is cancelled or is interrupted puts ``params.yaml`` back.
- **DVC decides what runs.** Each task reproduces its DVC stage (:mod:`flows.stage`), in the order of
  DVC's graph of ``dvc.yaml``. A stage whose code, data and params are unchanged ends in a
  ``Completed`` state named ``Skipped``, its task run named ``<stage> (skipped)`` so that the run
  graph shows it at a glance; one restored from DVC's run cache ends in a state named ``Cached``.
  Prefect's own result caching is off.
- **What the UI shows.** Artifacts: the metrics against the previous run, a table of per-class
  scores, the figures (drawn in the artifact), and while a stage trains, a progress artifact of its
  epochs (:mod:`flows.reports`).
- **DVC keeps the record.** A run that changed anything is saved as a DVC experiment (``dvc exp
  show``, ``dvc exp apply``): an isolated run's experiment is pushed into the project's git refs, so
  the checkout sees it without being written to. With a DVC remote configured, the run pushes its
  data (``dvc push``) and, where a git remote exists, the experiment (``dvc exp push``).
- A failing stage fails its task and the flow, naming the stage and quoting its error lines. Ingest
  (network) is retried; train is not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows import params_update, reports, stage, workspace
from pipeline.params import DEFAULT_PARAMS_PATH, parse_raw_params, validate_params
from pipeline.paths import Paths

METRICS_ARTIFACT = "fashion-metrics"
PLOTS_ARTIFACT = "fashion-plots"
PER_CLASS_ARTIFACT = "fashion-per-class"
MINUTE = 60
STATE_NAMES = {stage.SKIPPED: "Skipped", stage.CACHED: "Cached", stage.RAN: "Completed"}
OUTCOMES = {state_name: outcome for outcome, state_name in STATE_NAMES.items()}

# Per-stage task options, over the defaults of reproduce_stage; the stages themselves come from dvc.yaml.
STAGE_TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "ingest": {"retries": 2, "retry_delay_seconds": 10},  # its sources may be remote mirrors
    "train": {"timeout_seconds": 120 * MINUTE},  # never retried: a failed fit is not a transient error
}


@task(retries=0, timeout_seconds=30 * MINUTE, cache_policy=NO_CACHE, persist_result=False)
def reproduce_stage(root: str, name: str, in_checkout: bool, reason: str) -> State:
    """Reproduce one DVC stage; DVC decides whether it runs, is skipped or comes from its run cache.

    ``reason``: why it runs (:func:`flows.stage.why_it_runs`), empty when it is up to date.
    """
    restore_point = workspace.RestorePoint(Path(root)) if in_checkout else None
    result = stage.reproduce(
        Path(root),
        name,
        get_run_logger(),
        reason=reason,
        restore_point=restore_point,
        on_progress=reports.LiveProgress(name),
    )
    return Completed(name=STATE_NAMES[result.outcome], message=f"{result.outcome}: {result.reason}")


@flow(name="fashion-pipeline")
def fashion_pipeline(
    overrides: dict[str, Any] | None = None,
    isolated: bool = False,
    rev: str | None = None,
    keep_workspace: bool = False,
    push: bool = True,
    project_dir: str = ".",
) -> dict[str, Any]:
    """Reproduce the pipeline of ``project_dir`` with ``overrides`` (``{"train.epochs": 3}``).

    ``isolated``: in a fresh workspace made from commit ``rev`` (a branch, tag or SHA; default HEAD),
    leaving the checkout untouched; ``keep_workspace`` keeps that workspace when the run fails.
    Otherwise in the checkout itself, as ``dvc exp run -S`` would. ``push``: push data and
    experiment to the DVC and git remotes, when configured.

    Returns each stage's outcome (``ran``, ``skipped``, ``cached``), the experiment and the commit.
    """
    logger = get_run_logger()
    project = Path(project_dir).resolve()
    if rev and not isolated:
        raise ValueError("rev needs isolated=True: a run in the checkout runs what is checked out")
    commit = workspace.resolve_commit(project, rev) if isolated else None
    requested = requested_params(project, commit, overrides)  # a bad key or value fails here
    if commit and not rev and (uncommitted := workspace.uncommitted_changes(project)):
        logger.warning("uncommitted changes are not part of this isolated run: %s", ", ".join(uncommitted))

    with run_workspace(project, commit, keep_workspace) as (root, restore_point):
        if restore_point and restore_point.recovered:
            requested = requested_params(project, commit, overrides)  # from the params put back
        paths = Paths(root)
        previous = reports.read_metrics(paths.metrics_json)
        outcomes, experiment, _ = reproduce_in(root, requested, restore_point=restore_point)
        if push:
            workspace.push_results(root, experiment, git_remotes(project, isolated), logger)
        publish_artifacts(paths, previous, experiment, isolated)
    logger.info("stages: %s", ", ".join(f"{name} {outcome}" for name, outcome in outcomes.items()))
    return {"stages": outcomes, "experiment": experiment, "commit": commit}


class Reproduced(NamedTuple):
    outcomes: dict[str, str]  # stage -> ran, skipped or cached
    experiment: str | None  # the DVC experiment that records the run, if anything changed
    seconds: dict[str, float]  # stage -> wall time of its task


def reproduce_in(
    root: Path,
    requested: dict[str, Any],
    *,
    restore_point: workspace.RestorePoint | None,
    stages: Sequence[str] | None = None,
    record: Literal["if changed", "always", "never"] = "if changed",
) -> Reproduced:
    """Write ``requested`` into ``root``'s params, run ``stages`` (default: all) as tasks, and record
    the result as a DVC experiment (by default, if anything changed).

    ``restore_point``: the checkout's, where each stage's previous outputs are saved before it runs;
    ``None`` for an isolated workspace, which is thrown away (or kept for debugging) instead.
    """
    logger = get_run_logger()
    changed = params_update.write_params(root / DEFAULT_PARAMS_PATH, requested)
    if changed:
        logger.info("params.yaml: new values for %s", ", ".join(changed))
    outcomes, seconds = {}, {}
    for name in stage.pipeline_stages(root) if stages is None else stages:
        started = time.monotonic()
        outcomes[name] = run_stage(root, name, restore_point)
        seconds[name] = time.monotonic() - started
    experiment = None
    anything_changed = bool(changed) or set(outcomes.values()) != {stage.SKIPPED}
    if record == "always" or (record == "if changed" and anything_changed):
        experiment = workspace.record_experiment(root, f"Prefect flow run {flow_run.name}")
        logger.info("recorded as DVC experiment %s (dvc exp show; dvc exp apply %s)", experiment, experiment)
    return Reproduced(outcomes, experiment, seconds)


def requested_params(project: Path, commit: str | None, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The workspace's params (the checkout's, or ``commit``'s) plus ``overrides``, validated."""
    if commit:
        text, source = workspace.committed_params(project, commit), f"{DEFAULT_PARAMS_PATH} at {commit[:7]}"
    else:
        path = project / DEFAULT_PARAMS_PATH
        text, source = path.read_text(), str(path)
    requested = parse_raw_params(text, source, overrides)
    validate_params(requested, source=source)
    return requested


@contextlib.contextmanager
def run_workspace(
    project: Path, commit: str | None, keep_on_failure: bool
) -> Iterator[tuple[Path, workspace.RestorePoint | None]]:
    """An isolated workspace of ``commit``; or the checkout, under DVC's lock and with a restore point."""
    logger = get_run_logger()
    if commit is None:
        with workspace.locked(project), workspace.restore_point(project, logger) as point:
            yield project, point
        return
    name = flow_run.name or "run"
    with workspace.isolated(
        project, commit, name=name, keep_on_failure=keep_on_failure, log=logger, share_with=project
    ) as root:
        yield root, None


def run_stage(root: Path, name: str, restore_point: workspace.RestorePoint | None) -> str:
    """Run the stage's task: ``ran``, ``skipped`` or ``cached``; a failed stage raises into the flow.

    An up-to-date stage's task is named ``<stage> (skipped)``: the run graph labels tasks by name.
    """
    reason = stage.why_it_runs(root, name)
    run_name = name if reason else f"{name} ({stage.SKIPPED})"
    options = {"name": name, "task_run_name": run_name, **STAGE_TASK_OPTIONS.get(name, {})}
    state = reproduce_stage.with_options(**options)(
        str(root), name, restore_point is not None, reason, return_state=True
    )
    state.result()  # re-raises the stage's error, failing the flow with the stage named
    return OUTCOMES[state.name]


def git_remotes(project: Path, isolated: bool) -> list[str]:
    """Where the experiment goes: the project itself (for an isolated run), and its ``origin``."""
    origin = workspace.git_remote_url(project)
    if isolated:
        return [str(project), *([origin] if origin else [])]
    return ["origin"] if origin else []


def publish_artifacts(
    paths: Paths, previous: dict[str, Any] | None, experiment: str | None, isolated: bool
) -> None:
    """The metrics table (against the run before this one), the per-class scores and the figures,
    in the Prefect UI."""
    metrics = reports.read_metrics(paths.metrics_json)
    create_markdown_artifact(
        reports.metrics_markdown(metrics, previous, experiment),
        key=METRICS_ARTIFACT,
        description="Validation and test accuracy and loss, against the previous run",
    )
    create_table_artifact(
        reports.per_class_table(paths.per_class_json),
        key=PER_CLASS_ARTIFACT,
        description="Precision, recall and F1 of each class on the test set",
    )
    create_markdown_artifact(
        reports.plots_markdown(paths, experiment if isolated else None),
        key=PLOTS_ARTIFACT,
        description="Learning curves, confusion matrix, per-class F1",
    )
