"""The Prefect flow ``fashion-sweep``: a grid of params, each combination a trial in a workspace, on Dask.

Decisions:

- **DVC's grammar, DVC's parser.** The grid is written as for ``dvc exp run --queue -S`` (comma
  lists, ``choice()``, ``range()``) and expanded by DVC's own Hydra sweeper; every trial's params are
  validated against the schema before anything runs.
- **An existing engine.** Trials are tasks on Prefect's ``DaskTaskRunner``: a local cluster of worker
  processes, one trial each at a time, their TensorFlow thread pools sized so the trials share the
  cores instead of fighting over them; or a running cluster (``dask_address``), whose every worker
  is checked first (:mod:`flows.probe`: the project at the sweep's version, the Prefect API, git),
  so a worker that lacks one fails the sweep in one line instead of hanging it. ``in_process`` runs
  the trials one after another in this process instead.
- **Shared work once.** The stages that no swept param reaches (ingest and preprocess, for a grid of
  train params) run first, once, in a workspace of their own; every trial starts from their
  ``dvc.lock``, checks their outputs out of the shared cache (or pulls them from the DVC remote)
  and runs only what its params change.
- **DVC keeps the record.** Each trial is a DVC experiment of the project. The sweep ranks them by
  validation accuracy (the test set is for reporting, not for choosing), publishes the ranking as a
  table artifact, logs the best and can apply it to the checkout.
- **Workers without the checkout.** With ``source`` (the git remote's URL), trials clone from it,
  share one DVC cache per worker, and push their data to the DVC remote the commit configures and
  their experiments to ``source``: that is how their results come back. The sweep then pulls the
  experiments into the project.
- **A failed trial fails only itself.** The others finish and are recorded; the sweep then fails,
  naming the trials that failed and why. A sweep that is cancelled, interrupted or killed stops its
  trials wherever they run: each trial watches the sweep's Prefect state and its own Dask task, stops
  its stage command when either is gone, pushes nothing, and ends ``Cancelled``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Cancelled
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import probe, reports, stage, workspace
from flows.params_update import trial_overrides
from flows.reproduce import reproduce_in, stages_independent_of
from pipeline.core.params import (
    DEFAULT_PARAMS_PATH,
    ParamsError,
    parse_raw_params,
    read_params_text,
    validate_params,
)
from pipeline.core.paths import Paths

SWEEP_ARTIFACT = "fashion-sweep"
TRIAL_MEMORY_BYTES = 2 * 1024**3  # a dense trial's TensorFlow process, its data and headroom
WATCH_INTERVAL_S = 2.0
_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


class SweepError(RuntimeError):
    """The grid is malformed, a worker cannot run trials, or trials failed."""


def default_workers() -> int:
    """As many trials at once as the cores and the available memory allow."""
    by_memory = psutil.virtual_memory().available // TRIAL_MEMORY_BYTES
    return max(1, min(os.cpu_count() or 1, by_memory))


def task_runner(workers: int | None, dask_address: str | None, in_process: bool, api_url: str) -> TaskRunner:
    """Where the trials run: a running Dask cluster, a local one of ``workers`` processes, or here."""
    if in_process:
        return ThreadPoolTaskRunner(max_workers=1)  # DVC works in the process's directory: one at a time
    from prefect_dask import DaskTaskRunner

    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines are the cluster's, not ours
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


def check_workers(dask_address: str, api_url: str, project: Path | None) -> int:
    """Every worker of the cluster at ``dask_address`` can run trials: the number of workers, or
    :class:`SweepError` naming each worker and what it lacks."""
    import cloudpickle
    from distributed import Client

    cloudpickle.register_pickle_by_value(probe)  # runs where the project itself does not import
    try:
        with Client(dask_address, timeout=30) as client:
            found = client.run(
                probe.worker_problems,
                api_url,
                probe.code_fingerprint(),
                str(project) if project else None,
                on_error="return",
            )
            names = {
                address: info.get("name") for address, info in client.scheduler_info()["workers"].items()
            }
    except OSError as exc:
        raise SweepError(f"no Dask scheduler answers at {dask_address}: {exc}") from None
    finally:
        cloudpickle.unregister_pickle_by_value(probe)
    if not found:
        raise SweepError(f"the Dask cluster at {dask_address} has no workers")
    problems = [
        f"worker {names.get(worker) or worker} ({worker}) "
        + ("; ".join(result) if isinstance(result, list) else f"fails the check: {result!r}")
        for worker, result in sorted(found.items())
        if not isinstance(result, list) or result
    ]
    if problems:
        raise SweepError("no trial started: " + " | ".join(problems))
    return len(found)


@task(name="shared-stages", **_TASK)
def run_shared_stages(
    source: str,
    commit: str,
    changes: str | None,
    swept: list[str],
    share_with: str | None,
    prefix: str,
    needs_remote: tuple[str, str] | None = None,
) -> str:
    """Run the stages that no swept param reaches, once; the ``dvc.lock`` every trial starts from.

    ``needs_remote`` (why, and what to do instead): the trials' results must leave their workspaces
    through a DVC remote, so a commit without one fails here, before any stage or trial runs."""
    log = get_run_logger()
    with workspace.isolated(
        source,
        commit,
        name=f"{prefix}-shared",
        log=log,
        changes=changes,
        share_with=_path(share_with),
        needs_remote=needs_remote,
    ) as made:
        stages = stages_independent_of(made.root, swept)
        log.info("run once for every trial: %s", ", ".join(stages) or "no stage")
        params_text = read_params_text(made.root / DEFAULT_PARAMS_PATH)
        requested = parse_raw_params(params_text, str(DEFAULT_PARAMS_PATH))
        reproduce_in(made.root, requested, stages=stages, record="never", label="shared")
        if share_with is None:  # for the trials on other workers, through the DVC remote
            workspace.push_results(made.root, None, None, log)
        lock = made.root / "dvc.lock"
        return lock.read_text() if lock.exists() else ""


@task(name="trial", **_TASK)
def run_trial(
    number: int,
    overrides: dict[str, Any],
    source: str,
    commit: str,
    changes: str | None,
    start_lock: str,
    share_with: str | None,
    push_to: str | None,
    prefix: str,
    sweep_runs: list[str],
) -> dict[str, Any]:
    """One workspace with ``overrides``, recorded as a DVC experiment: put into the project on this
    machine (``share_with``), and pushed to ``push_to`` when set. Stops, pushing nothing, when the
    sweep (``sweep_runs``, its flow runs' ids) stops."""
    log = get_run_logger()
    label = f"trial {number}"
    log.info("%s: %s", label, _describe(overrides))
    with (
        workspace.isolated(
            source,
            commit,
            name=f"{prefix}-trial-{number}",
            log=log,
            changes=changes,
            share_with=_path(share_with),
            start_lock=start_lock or None,
        ) as made,
        _watched(made.root, [UUID(run) for run in sweep_runs]) as stopped,
    ):
        try:
            params = made.root / DEFAULT_PARAMS_PATH
            requested = parse_raw_params(read_params_text(params), str(params), overrides)
            result = reproduce_in(made.root, requested, record="always", label=label, stop=stopped)
        except Exception:
            if stopped.is_set():
                return Cancelled(message=f"{label} stopped with its sweep; nothing recorded")
            raise
        if stopped.is_set():
            return Cancelled(message=f"{label} stopped with its sweep; nothing recorded")
        if share_with:
            workspace.share_experiment(made.root, result.experiment, Path(share_with))
        if push_to:
            workspace.push_results(made.root, result.experiment, push_to, log)
        return {
            "trial": number,
            "overrides": overrides,
            "experiment": result.experiment,
            "stages": result.outcomes,
            "metrics": reports.read_metrics(Paths(made.root)),
            "classes": reports.class_f1(Paths(made.root).per_class_json),
            "train_seconds": result.seconds.get("train"),
        }


@contextlib.contextmanager
def _watched(root: Path, sweep_runs: list[UUID]) -> Iterator[threading.Event]:
    """Set the event and stop ``root``'s stage command once the sweep is gone: one of its flow runs
    is cancelling or final in Prefect (cancelled, crashed: a SIGTERM), or this Dask task is no
    longer wanted (the sweep's process died and its Dask client with it)."""
    stopped, done = threading.Event(), threading.Event()
    dask_task = _current_dask_task()
    log = get_run_logger()

    def sweep_gone() -> str | None:
        if dask_task is not None:
            worker, key = dask_task
            held = worker.state.tasks.get(key)
            if held is None or held.state in {"cancelled", "released", "forgotten"}:
                return f"its Dask task is {held.state if held else 'forgotten'}"
        try:
            with get_client(sync_client=True) as client:
                for run_id in sweep_runs:
                    state = client.read_flow_run(run_id).state
                    if state is not None and (state.is_final() or state.is_cancelling()):
                        return f"the sweep's flow run is {state.name}"
        except Exception as exc:  # noqa: BLE001  (the API is away for a moment: ask again later)
            log.debug("sweep state not read: %s", exc)
        return None

    def watch() -> None:
        while not done.wait(WATCH_INTERVAL_S):
            if not stopped.is_set() and (why := sweep_gone()):
                log.warning("stopping: %s", why)
                stopped.set()
            if stopped.is_set():  # until the trial ends: a stage may be starting as the last one stops
                stage.stop_stage_processes(lambda running_in: running_in == root)

    watcher = threading.Thread(target=watch, name="sweep-watch", daemon=True)
    watcher.start()
    try:
        yield stopped
    finally:
        done.set()
        watcher.join()


def _current_dask_task() -> tuple[Any, str] | None:
    """The Dask worker and key of the task running in this thread, when on a Dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return worker, worker.get_current_task()
    except (ImportError, ValueError):
        return None


@flow(name="fashion-sweep-trials")
def run_trials(
    trials: list[dict[str, Any]],
    source: str,
    commit: str,
    changes: str | None,
    share_with: str | None,
    push_to: str | None,
    prefix: str,
    sweep_run: str,
    needs_remote: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The shared stages once, then every trial on the task runner; each trial's result or error.
    ``needs_remote``: why the trials need a DVC remote, and what to do instead (see
    :func:`run_shared_stages`)."""
    swept = sorted({key for overrides in trials for key in overrides})
    futures: list[PrefectFuture] = []
    sweep_runs = [sweep_run, str(flow_run.id)]
    with _cancelled_if_interrupted(futures, prefix, _path(share_with)):
        futures.append(
            run_shared_stages.submit(source, commit, changes, swept, share_with, prefix, needs_remote)
        )
        start_lock = futures[0].result()
        futures += [
            run_trial.with_options(task_run_name=f"trial {number}").submit(
                number,
                overrides,
                source,
                commit,
                changes,
                start_lock,
                share_with,
                push_to,
                prefix,
                sweep_runs,
            )
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
    overrides: dict[str, Any] | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    in_process: bool = False,
    rev: str | None = None,
    source: str | None = None,
    apply_best: bool = False,
    push: bool = False,
    project_dir: str = ".",
) -> list[dict[str, Any]]:
    """Run every combination of ``grid`` (``["train.epochs=10,20", ...]``) as a trial of commit
    ``rev`` (default: HEAD plus the checkout's uncommitted changes) and rank them; the trials'
    results, best first. ``overrides`` (``{"train.epochs": 5}``) apply to every trial.

    ``workers``: local Dask worker processes (default: what the cores and memory allow);
    ``dask_address``: a running Dask scheduler instead; ``in_process``: no Dask, one trial after
    another. ``source``: the git URL workers clone from and push to, for workers without this
    checkout. ``apply_best``: ``dvc exp apply`` the best trial to the checkout. ``push``: push the
    trials' data and experiments to the DVC remote and the checkout's git ``origin``. With ``push``
    or ``source``, a commit without a DVC remote fails the sweep before any trial.
    """
    logger = get_run_logger()
    project = Path(project_dir).resolve()
    results = run_grid(
        grid,
        overrides,
        workers=workers,
        dask_address=dask_address,
        in_process=in_process,
        rev=rev,
        source=source,
        push=push,
        project=project,
    )
    ranked = rank(results)
    succeeded = [result for result in ranked if "error" not in result]
    create_table_artifact(
        ranking_table(ranked, varied_keys([result["overrides"] for result in results])),
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
            with workspace.open_repo(project) as repo:
                repo.experiments.apply(best["experiment"])
            logger.info("applied %s to %s: review it, then commit", best["experiment"], project)
    raise_failed(ranked)
    return ranked


def run_grid(
    grid: list[str],
    overrides: dict[str, Any] | None,
    *,
    workers: int | None,
    dask_address: str | None,
    in_process: bool,
    rev: str | None,
    source: str | None,
    push: bool,
    project: Path,
) -> list[dict[str, Any]]:
    """Every combination of ``grid``, with ``overrides``, as a trial (every trial's params validated
    first) on the task runner; each trial's result or error, in trial order, its experiment in the
    project. Inside a flow: what :func:`fashion_sweep` ranks and
    :func:`flows.seeds_flow.fashion_seeds` summarizes (the arguments are the sweep's)."""
    logger = get_run_logger()
    trials = [{**(overrides or {}), **trial} for trial in trial_overrides(grid)]
    changes, commit, base = starting_point(project, rev, source)
    for number, trial in enumerate(trials, start=1):  # every trial's params, before anything runs
        try:
            validate_params(parse_raw_params(base, f"trial {number}", trial), source=f"trial {number}")
        except ParamsError as exc:
            raise SweepError(f"{exc} ({_describe(trial)})") from None
    logger.info("%d trials of commit %s: %s", len(trials), commit[:7], " | ".join(map(_describe, trials)))

    share_with = None if source else str(project)
    push_to = source or (workspace.git_remote_url(project) if push else None)
    # The trials' data leaves their workspaces only through a DVC remote: checked before any trial.
    if source:
        needs_remote = (
            f"source {source}: the trials send their results back through the git and DVC remotes",
            "run without source, on workers that share this checkout",
        )
    else:
        needs_remote = ("push=True", "run with push=False") if push else None
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    if dask_address:
        count = check_workers(dask_address, api_url, _path(share_with))
        logger.info("%d Dask worker(s) at %s can run trials", count, dask_address)
    runner = task_runner(workers, dask_address, in_process, api_url)
    results = run_trials.with_options(task_runner=runner)(
        trials,
        source or str(project),
        commit,
        changes,
        share_with,
        push_to,
        flow_run.name or "sweep",
        str(flow_run.id),
        needs_remote,
    )
    succeeded = [result for result in results if "error" not in result]
    if source and succeeded:  # as `dvc exp pull`: their refs, and their outputs from the DVC remote
        with workspace.open_repo(project) as repo:
            repo.experiments.pull(source, [result["experiment"] for result in succeeded], pull_cache=True)
    return results


def raise_failed(results: list[dict[str, Any]]) -> None:
    """:class:`SweepError` naming each failed trial and its error, where any failed."""
    failed = [result for result in results if "error" in result]
    if failed:
        raise SweepError(
            f"{len(failed)} of {len(results)} trials failed: "
            + "; ".join(f"trial {r['trial']} ({_describe(r['overrides'])}): {r['error']}" for r in failed)
        )


def starting_point(project: Path, rev: str | None, source: str | None) -> tuple[str | None, str, str]:
    """What the trials start from: the checkout's uncommitted changes (without ``rev`` or
    ``source``), the commit, and its params text."""
    changes = workspace.uncommitted_changes(project) if not (rev or source) else None
    commit = workspace.resolve_commit(project, rev)
    return changes, commit, workspace.committed_params(project, changes or commit)


def rank(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best validation accuracy first (lower validation loss breaks ties); failed trials last."""

    def key(result: dict[str, Any]) -> tuple:
        if "error" in result:
            return (1, 0.0, 0.0, result["trial"])
        val = result["metrics"]["val"]
        return (0, -val["accuracy"], val["loss"], result["trial"])

    return sorted(results, key=key)


def varied_keys(trials: list[dict[str, Any]]) -> list[str]:
    """The params whose value differs between trials."""
    keys = sorted({key for overrides in trials for key in overrides})
    return [key for key in keys if len({repr(overrides.get(key)) for overrides in trials}) > 1]  # lists too


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


@contextlib.contextmanager
def _cancelled_if_interrupted(
    futures: list[PrefectFuture], prefix: str, share_with: Path | None
) -> Iterator[None]:
    """If the sweep is cancelled or interrupted: cancel the trials not started yet. Running trials
    stop themselves (:func:`_watched`) wherever they run; those on this machine are stopped now,
    their workspaces removed, as the local cluster goes down with the sweep."""
    try:
        yield
    except BaseException:
        for future in futures:
            with contextlib.suppress(Exception):
                future.wrapped_future.cancel()
        if share_with:
            folder = workspace.runs_dir(share_with)
            stage.stop_stage_processes(
                lambda root: root.parent == folder and root.name.startswith(f"{prefix}-")
            )
            for path in folder.glob(f"{prefix}-*"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        get_run_logger().warning("the sweep stopped early: its running trials stop and push nothing")
        raise


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in overrides.items()) or "no overrides"


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
