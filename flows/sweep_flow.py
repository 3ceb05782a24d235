"""The Prefect flow ``fashion-sweep``: a grid of params, each combination an isolated run (a trial), on Dask.

Decisions:

- **DVC's grammar, DVC's parser.** The grid is written as for ``dvc exp run --queue -S`` (comma
  lists, ``choice()``, ``range()``) and expanded by DVC's own Hydra sweeper; every trial's params are
  validated against the schema before anything runs.
- **An existing engine.** Trials are tasks on Prefect's ``DaskTaskRunner``: a local cluster of worker
  processes, one trial each at a time, their TensorFlow thread pools sized so the trials share the
  cores instead of fighting over them; or a running cluster (``dask_address``). ``in_process`` runs
  them one after another in this process instead. A trial is an isolated run (:mod:`flows.workspace`),
  so it needs nothing but the repository and the DVC cache or remote.
- **Shared work once.** The stages that no swept param reaches (ingest and preprocess, for a grid of
  train params) run first, once, in a workspace of their own; every trial starts from their
  ``dvc.lock``, checks their outputs out of the shared cache (or pulls them from the DVC remote)
  and runs only what its params change.
- **DVC keeps the record.** Each trial is a DVC experiment of the project. The sweep ranks them by
  validation accuracy (the test set is for reporting, not for choosing), publishes the ranking as a
  table artifact, logs the best and can apply it to the checkout.
- **A failed trial fails only itself.** The others finish and are recorded; the sweep then fails,
  naming the trials that failed and why. A sweep that is cancelled or interrupted stops its trials'
  stage processes and removes their workspaces.
- **Workers without the checkout.** With ``source`` (the git remote's URL), trials clone from it,
  get and push data through the DVC remote that the commit configures, and push their experiments
  to it; the sweep then pulls the experiments into the project.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import reports, stage, workspace
from flows.params_update import key_value
from flows.pipeline_flow import reproduce_in
from pipeline.params import DEFAULT_PARAMS_PATH, ParamsError, parse_raw_params, validate_params
from pipeline.paths import Paths

SWEEP_ARTIFACT = "fashion-sweep"
TRIAL_MEMORY_BYTES = 2 * 1024**3  # a dense trial's TensorFlow process, its data and headroom
_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


class SweepError(RuntimeError):
    """The grid is malformed, or trials failed."""


def trial_overrides(grid: list[str]) -> list[dict[str, str]]:
    """Each combination of the ``-S`` sweep overrides, as ``{"train.epochs": "10", ...}``."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    try:
        sweeps = get_hydra_sweeps({DEFAULT_PARAMS_PATH.name: list(grid)})
    except (DvcException, HydraException) as exc:
        raise SweepError(f"not a sweep DVC understands ({' '.join(grid)}): {exc}") from None
    return [dict(key_value(item) for item in sweep[DEFAULT_PARAMS_PATH.name]) for sweep in sweeps]


def default_workers() -> int:
    """As many trials at once as the cores and the available memory allow."""
    by_memory = psutil.virtual_memory().available // TRIAL_MEMORY_BYTES
    return max(1, min(os.cpu_count() or 1, by_memory))


def task_runner(workers: int | None, dask_address: str | None, in_process: bool, api_url: str) -> TaskRunner:
    """Where the trials run: a running Dask cluster, a local one of ``workers`` processes, or here."""
    if in_process:
        return ThreadPoolTaskRunner(max_workers=1)  # DVC works in the process's directory: one at a time
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    workers = workers or default_workers()
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {
        "PREFECT_API_URL": api_url,  # the workers report to this flow's Prefect server
        "TF_NUM_INTRAOP_THREADS": threads,  # the trials share the cores instead of oversubscribing them
        "TF_NUM_INTEROP_THREADS": "1",
    }
    cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    return DaskTaskRunner(cluster_kwargs={**cluster, "env": env, "silence_logs": logging.WARNING})


@task(name="shared-stages", **_TASK)
def run_shared_stages(source: str, commit: str, swept: list[str], share_with: str | None, prefix: str) -> str:
    """Run the stages that no swept param reaches, once; the ``dvc.lock`` every trial starts from."""
    log = get_run_logger()
    shared = _path(share_with)
    with workspace.isolated(
        source, commit, name=f"{prefix}-shared", keep_on_failure=False, log=log, share_with=shared
    ) as root:
        stages = stage.stages_independent_of(root, swept)
        log.info("run once for every trial: %s", ", ".join(stages) or "no stage")
        requested = parse_raw_params((root / DEFAULT_PARAMS_PATH).read_text(), str(DEFAULT_PARAMS_PATH))
        reproduce_in(root, requested, restore_point=None, stages=stages, record="never")
        workspace.push_results(root, None, [], log)  # for workers without this cache, when a remote is set
        return (root / "dvc.lock").read_text() if (root / "dvc.lock").exists() else ""


@task(name="trial", **_TASK)
def run_trial(
    number: int,
    overrides: dict[str, str],
    source: str,
    commit: str,
    start_lock: str,
    share_with: str | None,
    prefix: str,
) -> dict[str, Any]:
    """One isolated run with ``overrides``, recorded as a DVC experiment pushed to ``source``."""
    log = get_run_logger()
    log.info("trial %d: %s", number, _describe(overrides))
    with workspace.isolated(
        source,
        commit,
        name=f"{prefix}-trial-{number}",
        keep_on_failure=False,
        log=log,
        share_with=_path(share_with),
        start_lock=start_lock or None,
    ) as root:
        params = root / DEFAULT_PARAMS_PATH
        requested = parse_raw_params(params.read_text(), str(params), overrides)
        result = reproduce_in(root, requested, restore_point=None, record="always")  # every trial is one
        # The clone's origin is the source: the project itself, or the git remote it was cloned from.
        workspace.push_results(root, result.experiment, ["origin"], log)
        return {
            "trial": number,
            "overrides": overrides,
            "experiment": result.experiment,
            "stages": result.outcomes,
            "metrics": reports.read_metrics(Paths(root).metrics_json),
            "train_seconds": result.seconds.get("train"),
        }


@flow(name="fashion-sweep-trials")
def run_trials(
    trials: list[dict[str, str]], source: str, commit: str, share_with: str | None, prefix: str
) -> list[dict[str, Any]]:
    """The shared stages once, then every trial on the task runner; each trial's result or error."""
    swept = sorted({key for overrides in trials for key in overrides})
    futures: list[PrefectFuture] = []
    with _stopped_if_interrupted(futures, prefix, _path(share_with)):
        futures.append(run_shared_stages.submit(source, commit, swept, share_with, prefix))
        start_lock = futures[0].result()
        futures += [
            run_trial.submit(number, overrides, source, commit, start_lock, share_with, prefix)
            for number, overrides in enumerate(trials, start=1)
        ]
        results = []
        for number, (overrides, future) in enumerate(zip(trials, futures[1:], strict=True), start=1):
            future.wait()
            if future.state.is_completed():
                results.append(future.result())
            else:
                results.append({"trial": number, "overrides": overrides, "error": future.state.message})
    return results


@flow(name="fashion-sweep")
def fashion_sweep(
    grid: list[str],
    workers: int | None = None,
    dask_address: str | None = None,
    in_process: bool = False,
    rev: str | None = None,
    source: str | None = None,
    apply_best: bool = False,
    project_dir: str = ".",
) -> list[dict[str, Any]]:
    """Run every combination of ``grid`` (``["train.epochs=10,20", ...]``) as an isolated trial of
    commit ``rev`` (default HEAD) and rank them; the trials' results, best first.

    ``workers``: local Dask worker processes (default: what the cores and memory allow);
    ``dask_address``: a running Dask scheduler instead; ``in_process``: no Dask, one trial after
    another. ``source``: the git URL workers clone from, for workers without this checkout.
    ``apply_best``: ``dvc exp apply`` the best trial to the checkout.
    """
    logger = get_run_logger()
    project = Path(project_dir).resolve()
    commit = workspace.resolve_commit(project, rev)
    trials = trial_overrides(grid)
    base = workspace.committed_params(project, commit)
    for number, overrides in enumerate(trials, start=1):  # every trial's params, before anything runs
        try:
            validate_params(parse_raw_params(base, f"trial {number}", overrides), source=f"trial {number}")
        except ParamsError as exc:
            raise SweepError(f"{exc} ({_describe(overrides)})") from None
    logger.info("%d trials of commit %s: %s", len(trials), commit[:7], " | ".join(map(_describe, trials)))

    prefix = flow_run.name or "sweep"
    share_with = None if source else str(project)
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    runner = task_runner(workers, dask_address, in_process, api_url)
    # Again once the task runner is gone: a trial that was starting when the sweep stopped may have
    # made its workspace after the first clean-up, then lost its worker.
    with _stopped_if_interrupted([], prefix, _path(share_with)):
        results = run_trials.with_options(task_runner=runner)(
            trials, source or str(project), commit, share_with, prefix
        )
    ranked = rank(results)
    succeeded = [result for result in ranked if "error" not in result]
    if source and succeeded:  # as `dvc exp pull`: their refs, and their outputs from the DVC remote
        with workspace.open_repo(project) as repo:
            repo.experiments.pull(source, [result["experiment"] for result in succeeded], pull_cache=True)
    create_table_artifact(
        ranking_table(ranked, varied_keys(trials)),
        key=SWEEP_ARTIFACT,
        description="The sweep's trials, best validation accuracy first",
    )
    if succeeded:
        best = succeeded[0]
        logger.info(
            "best trial: %s (%s): val accuracy %.4f, test accuracy %.4f",
            best["experiment"],
            _describe(best["overrides"]),
            best["metrics"]["val"]["accuracy"],
            best["metrics"]["test"]["accuracy"],
        )
        if apply_best:
            apply(project, best["experiment"])
    failed = [result for result in ranked if "error" in result]
    if failed:
        raise SweepError(
            f"{len(failed)} of {len(ranked)} trials failed: "
            + "; ".join(f"trial {r['trial']} ({_describe(r['overrides'])}): {r['error']}" for r in failed)
        )
    return ranked


def rank(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best validation accuracy first (lower validation loss breaks ties); failed trials last."""

    def key(result: dict[str, Any]) -> tuple:
        if "error" in result:
            return (1, 0.0, 0.0, result["trial"])
        val = result["metrics"]["val"]
        return (0, -val["accuracy"], val["loss"], result["trial"])

    return sorted(results, key=key)


def varied_keys(trials: list[dict[str, str]]) -> list[str]:
    """The params whose value differs between trials."""
    keys = sorted({key for overrides in trials for key in overrides})
    return [key for key in keys if len({overrides.get(key) for overrides in trials}) > 1]


def ranking_table(ranked: list[dict[str, Any]], varied: list[str]) -> list[dict[str, Any]]:
    """One row per trial: the params that varied, its accuracy and loss, train seconds, status."""
    rows = []
    for rank_number, result in enumerate(ranked, start=1):
        row: dict[str, Any] = {"rank": rank_number if "error" not in result else "-"}
        row["experiment"] = result.get("experiment") or "-"
        row |= {key: result["overrides"].get(key, "") for key in varied}
        if "error" in result:
            row |= {"val accuracy": "", "test accuracy": "", "val loss": "", "train s": ""}
            row["status"] = f"failed: {result['error']}"
        else:
            metrics = result["metrics"]
            row["val accuracy"] = round(metrics["val"]["accuracy"], 4)
            row["test accuracy"] = round(metrics["test"]["accuracy"], 4)
            row["val loss"] = round(metrics["val"]["loss"], 4)
            row["train s"] = round(result["train_seconds"] or 0.0, 1)
            row["status"] = "ok"
        rows.append(row)
    return rows


def apply(project: Path, experiment: str) -> None:
    """``dvc exp apply`` in the checkout, under the checkout's lock."""
    with workspace.locked(project), workspace.open_repo(project) as repo:
        repo.experiments.apply(experiment)
    get_run_logger().info("applied %s to %s: review it, then commit", experiment, project)


@contextlib.contextmanager
def _stopped_if_interrupted(
    futures: list[PrefectFuture], prefix: str, share_with: Path | None
) -> Iterator[None]:
    """If the sweep is cancelled or interrupted: cancel the trials not started, stop the stage commands
    of those running (so their tasks end now, not when they finish) and remove their workspaces.

    Covers workers on this machine; a remote worker's workspace goes when its trial fails.
    """
    try:
        yield
    except BaseException:
        for future in futures:
            with contextlib.suppress(Exception):
                future.wrapped_future.cancel()
        folder = workspace.runs_dir(share_with)
        stage.stop_stage_processes(lambda root: root.parent == folder and root.name.startswith(f"{prefix}-"))
        abandoned = list(folder.glob(f"{prefix}-*"))
        for path in abandoned:
            shutil.rmtree(path, ignore_errors=True)
        get_run_logger().warning("the sweep stopped early: removed the workspaces %s", abandoned)
        raise


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in overrides.items()) or "no overrides"


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
