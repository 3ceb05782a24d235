"""The Prefect flow ``fashion-pipeline``: ingest -> preprocess -> train -> evaluate.

Decisions:

- Each task reproduces its own DVC stage (``dvc repro --single-item <stage>``), so the flow and
  ``dvc repro`` share one cache of truth and leave the same outputs and ``dvc.lock``. A stage whose
  code, data and params are unchanged is skipped by DVC (or restored from its run cache); its task
  then ends in a ``Completed`` state named ``Skipped``, with DVC's message. Prefect's own result
  caching is off: DVC decides what runs.
- ``overrides`` (``{"train.epochs": 3}``) are validated against the schema of ``params.yaml`` before
  any stage runs, then written into ``params.yaml`` as ``dvc exp run -S`` does; after a successful
  run the workspace is saved as a DVC experiment (``dvc exp save``), so ``dvc exp show`` lists the
  run and ``dvc params diff`` shows the change against Git's HEAD. The workspace keeps the new params,
  as after ``dvc exp run``; ``git checkout params.yaml`` returns to the committed ones.
- One run at a time per workspace: the flow holds a file lock for its whole run and fails within
  seconds when another run holds it; the deployment adds a Prefect concurrency limit of 1.
- A failing stage fails its task and the flow, naming the stage and quoting its error lines; the
  stage's previous outputs are put back. Ingest (network) is retried; train is not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows import dvc_runner, reports
from flows.params_update import write_params
from pipeline.params import DEFAULT_PARAMS_PATH, read_raw_params, validate_params
from pipeline.paths import Paths

LOCK_FILE = Path(".dvc") / "tmp" / "fashion-pipeline.lock"
LOCK_WAIT_S = 2
METRICS_ARTIFACT = "fashion-metrics"
PLOTS_ARTIFACT = "fashion-plots"
SKIPPED = "Skipped"
MINUTE = 60

# DVC is the cache of truth: Prefect neither caches nor persists the tasks' results.
_STAGE_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


class WorkspaceBusyError(RuntimeError):
    """Another pipeline run holds the workspace."""


@task(name="ingest", retries=2, retry_delay_seconds=10, timeout_seconds=30 * MINUTE, **_STAGE_TASK)
def ingest(project_dir: str) -> State:
    """Fetch and verify the raw IDX files; retried because its sources may be remote mirrors."""
    return _reproduce("ingest", project_dir)


@task(name="preprocess", retries=0, timeout_seconds=30 * MINUTE, **_STAGE_TASK)
def preprocess(project_dir: str) -> State:
    """Scale and split the images."""
    return _reproduce("preprocess", project_dir)


@task(name="train", retries=0, timeout_seconds=120 * MINUTE, **_STAGE_TASK)
def train(project_dir: str) -> State:
    """Fit the model; never retried, a failed fit is not a transient error."""
    return _reproduce("train", project_dir)


@task(name="evaluate", retries=0, timeout_seconds=30 * MINUTE, **_STAGE_TASK)
def evaluate(project_dir: str) -> State:
    """Score the best checkpoint on the validation and test splits."""
    return _reproduce("evaluate", project_dir)


STAGE_TASKS = (ingest, preprocess, train, evaluate)


@flow(name="fashion-pipeline")
def fashion_pipeline(
    params_path: str = str(DEFAULT_PARAMS_PATH),
    overrides: dict[str, Any] | None = None,
    project_dir: str = ".",
) -> dict[str, str]:
    """Reproduce the pipeline in ``project_dir`` with ``params_path`` (relative to it) plus ``overrides``.

    Returns what happened to each stage: ``ran`` or ``skipped``.
    """
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    source = root / params_path
    requested = read_raw_params(source, overrides)
    validate_params(requested, source=str(source))  # a bad key or value fails here, before any work
    paths = Paths(root)
    with workspace_lock(root):
        previous = reports.read_metrics(paths.metrics_json)
        changed = write_params(root / DEFAULT_PARAMS_PATH, requested)
        if changed:
            logger.info("params.yaml: new values for %s", ", ".join(changed))
        outcomes = {stage_task.name: run_stage(stage_task, root) for stage_task in STAGE_TASKS}
        if changed:
            dvc_runner.save_experiment(root, f"Prefect flow run {flow_run.name}", logger)
        publish_artifacts(paths, previous)
    logger.info("stages: %s", ", ".join(f"{stage} {outcome}" for stage, outcome in outcomes.items()))
    return outcomes


def run_stage(stage_task: Task[[str], State], root: Path) -> str:
    """Run one stage task: ``ran`` or ``skipped``; a failed stage raises its error into the flow."""
    state = stage_task(str(root), return_state=True)
    state.result()  # re-raises the stage's error, failing the flow with the stage named
    return "skipped" if state.name == SKIPPED else "ran"


@contextlib.contextmanager
def workspace_lock(root: Path) -> Iterator[None]:
    """Hold the workspace's lock file, failing at once if another run holds it."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=LOCK_WAIT_S)
    except Timeout:
        raise WorkspaceBusyError(
            f"another pipeline run holds the workspace {root} (lock {path}); "
            "wait for it to finish, then run again"
        ) from None
    try:
        yield
    finally:
        lock.release()


def publish_artifacts(paths: Paths, previous: dict[str, Any] | None) -> None:
    """The metrics table (against the run before this one) and the plot links, in the Prefect UI."""
    create_markdown_artifact(
        reports.metrics_markdown(reports.read_metrics(paths.metrics_json), previous),
        key=METRICS_ARTIFACT,
        description="Validation and test accuracy and loss, against the previous run",
    )
    create_markdown_artifact(
        reports.plots_markdown(paths),
        key=PLOTS_ARTIFACT,
        description="The pipeline's figures",
    )


def _reproduce(stage: str, project_dir: str) -> State:
    """Run the DVC stage; a stage DVC skips ends in a Completed state named Skipped."""
    skipped = dvc_runner.reproduce(stage, Path(project_dir), get_run_logger())
    if skipped:
        return Completed(name=SKIPPED, message=f"DVC: {skipped}")
    return Completed(message=f"DVC ran stage '{stage}'")
