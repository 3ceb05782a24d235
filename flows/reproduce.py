"""The pipeline's stages as Prefect tasks in a workspace, in the order of DVC's graph: what a flow run
and a sweep's trial share (:mod:`flows.pipeline_flow`, :mod:`flows.sweep_flow`).

Each task reproduces its DVC stage (:mod:`flows.stage`): DVC decides whether it runs, is skipped or
comes from its run cache; the task's state says which. The run is recorded as a DVC experiment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import networkx as nx
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.stage import PipelineStage
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows import params_update, reports, stage, workspace
from pipeline.core.params import DEFAULT_PARAMS_PATH

STATE_NAMES = {stage.SKIPPED: "Skipped", stage.CACHED: "Cached", stage.RAN: "Completed"}
OUTCOMES = {state_name: outcome for outcome, state_name in STATE_NAMES.items()}


# No timeouts: Prefect cannot enforce one on a task in a worker thread, and a fit has no natural bound.
@task(retries=0, cache_policy=NO_CACHE, persist_result=False)
def reproduce_stage(root: str, name: str, reason: str) -> State:
    """Reproduce one DVC stage; DVC decides whether it runs, is skipped or comes from its run cache.

    ``reason``: why it runs (:func:`flows.stage.why_it_runs`), empty when it is up to date.
    """
    result = stage.reproduce(
        Path(root), name, get_run_logger(), reason=reason, on_progress=reports.LiveProgress(name)
    )
    return Completed(name=STATE_NAMES[result.outcome], message=f"{result.outcome}: {result.reason}")


class RunStopped(RuntimeError):
    """The run was told to stop (its sweep is gone): nothing more runs, nothing is recorded."""


class Reproduced(NamedTuple):
    outcomes: dict[str, str]  # stage -> ran, skipped or cached
    experiment: str | None  # the DVC experiment that records the run, if anything changed
    seconds: dict[str, float]  # stage -> wall time of its task


def reproduce_in(
    root: Path,
    requested: dict[str, Any],
    *,
    stages: Sequence[str] | None = None,
    record: Literal["if changed", "always", "never"] = "if changed",
    label: str = "",
    stop: threading.Event | None = None,
) -> Reproduced:
    """Write ``requested`` into ``root``'s params, run ``stages`` (default: all) as tasks, and record
    the result as a DVC experiment (by default, if anything changed).

    ``label``: put before each task's name (``trial 2``), so the tasks of several runs tell apart.
    ``stop``: once set, no further stage starts and nothing is recorded (:class:`RunStopped`).
    """
    logger = get_run_logger()
    changed = params_update.write_params(root / DEFAULT_PARAMS_PATH, requested)
    if changed:
        logger.info("params.yaml: new values for %s", ", ".join(changed))
    outcomes, seconds = {}, {}
    for name in pipeline_stages(root) if stages is None else stages:
        if stop is not None and stop.is_set():
            raise RunStopped(f"stopped before stage {name!r}")
        started = time.monotonic()
        outcomes[name] = run_stage(root, name, label)
        seconds[name] = time.monotonic() - started
    if stop is not None and stop.is_set():
        raise RunStopped("stopped after the last stage")
    experiment = None
    anything_changed = bool(changed) or set(outcomes.values()) != {stage.SKIPPED}
    if record == "always" or (record == "if changed" and anything_changed):
        experiment = workspace.record_experiment(root, f"Prefect flow run {flow_run.name}")
        logger.info("recorded as DVC experiment %s (dvc exp show; dvc exp apply %s)", experiment, experiment)
    return Reproduced(outcomes, experiment, seconds)


def pipeline_stages(root: Path) -> list[str]:
    """The stages of ``root``'s ``dvc.yaml`` in an order that runs each after its dependencies."""
    with workspace.open_repo(root) as repo:
        return [dvc_stage.name for dvc_stage in _ordered(repo)]


def stages_independent_of(root: Path, keys: Iterable[str]) -> list[str]:
    """The stages, in pipeline order, that no param in ``keys`` (``train.epochs``) reaches, directly
    or through a stage they depend on: what every variant of those params shares."""
    keys = list(keys)
    with workspace.open_repo(root) as repo:
        reached: set[PipelineStage] = set()
        for dvc_stage in _ordered(repo):
            params = [
                param for dep in dvc_stage.deps if isinstance(dep, ParamsDependency) for param in dep.params
            ]
            touched = any(key == param or key.startswith(f"{param}.") for key in keys for param in params)
            if touched or any(upstream in reached for upstream in repo.index.graph.successors(dvc_stage)):
                reached.add(dvc_stage)
        return [dvc_stage.name for dvc_stage in _ordered(repo) if dvc_stage not in reached]


def _ordered(repo: Repo) -> list[PipelineStage]:
    written = [dvc_stage for dvc_stage in repo.index.stages if dvc_stage.path_in_repo == "dvc.yaml"]
    position = {dvc_stage: index for index, dvc_stage in enumerate(written)}
    # DVC's graph points from a stage to the stages it depends on.
    graph = repo.index.graph.subgraph(written).reverse()
    return list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))


def run_stage(root: Path, name: str, label: str = "") -> str:
    """Run the stage's task: ``ran``, ``skipped`` or ``cached``; a failed stage raises into the flow.

    An up-to-date stage's task is named ``<stage> (skipped)``: the run graph labels tasks by name.
    """
    reason = stage.why_it_runs(root, name)
    run_name = f"{label} {name}".strip() + ("" if reason else f" ({stage.SKIPPED})")
    state = reproduce_stage.with_options(name=name, task_run_name=run_name)(
        str(root), name, reason, return_state=True
    )
    state.result()  # re-raises the stage's error, failing the flow with the stage named
    return OUTCOMES[state.name]
