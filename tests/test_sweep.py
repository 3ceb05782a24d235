"""Sweeps: a grid of params as trials in workspaces, on a local Dask cluster, recorded as DVC experiments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterName,
)
from prefect.states import State

from conftest import commit_all, dvc, experiments, run, snapshot
from flows.sweep_flow import (
    SWEEP_ARTIFACT,
    fashion_sweep,
)
from flows.workspace import RUNS_DIR

pytestmark = [pytest.mark.integration, pytest.mark.server]  # a real pipeline, flow or sweep in each test

GRID_2X2 = ["train.model.dense.hidden_units=[8],[16]", "train.epochs=2,3"]


def stage_task_states(sweep: State, stage: str) -> list[str]:
    """The final state of every task run of ``stage`` in the sweep's trials subflow."""
    with get_client(sync_client=True) as client:
        (trials,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[sweep.state_details.flow_run_id])
            )
        )
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[trials.id])),
            # "ingest", or "ingest (skipped)" for an up-to-date stage
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=stage)),
        )
    return sorted(run.state.name for run in runs)


def sweep_table(sweep: State) -> list[dict]:
    with get_client(sync_client=True) as client:
        (found,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SWEEP_ARTIFACT])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[sweep.state_details.flow_run_id])),
        )
    return json.loads(found.data)


def test_a_2x2_sweep_on_two_dask_workers_records_four_experiments(
    project_own_cache: Path, prefect_api: str, dask_address: str
) -> None:
    project = project_own_cache  # the shared stages must run once, not come from the run cache
    before = snapshot(project)
    state = fashion_sweep(
        grid=GRID_2X2, dask_address=dask_address, project_dir=str(project), return_state=True
    )
    assert state.is_completed(), state.message
    results = state.result()

    combinations = sorted(
        (r["overrides"]["train.model.dense.hidden_units"], r["overrides"]["train.epochs"]) for r in results
    )
    assert combinations == [("[16]", "2"), ("[16]", "3"), ("[8]", "2"), ("[8]", "3")]
    accuracies = [r["metrics"]["val"]["accuracy"] for r in results]
    assert accuracies == sorted(accuracies, reverse=True)  # ranked, best first
    # The data was fetched and split once, in the shared stages. Each trial's ingest, which depends
    # on the whole params file, checks its params and reverifies the files it finds; preprocess is
    # done (or, for its reports, which git rather than the DVC cache carries, in DVC's run cache).
    for result in results:
        as_base = result["overrides"] == {"train.model.dense.hidden_units": "[16]", "train.epochs": "3"}
        assert result["stages"]["ingest"] == ("skipped" if as_base else "ran")
        assert result["stages"]["preprocess"] in {"skipped", "cached"}
        assert result["stages"]["train"] in {"ran", "cached"}
    assert sorted(stage_task_states(state, "ingest")) == ["Completed"] * 4 + ["Skipped"]
    preprocess = stage_task_states(state, "preprocess")
    assert preprocess.count("Completed") == 1 and len(preprocess) == 5, preprocess

    recorded = experiments(project)
    assert sorted(recorded) == sorted(r["experiment"] for r in results)
    for result in results:
        experiment = recorded[result["experiment"]]
        assert experiment["params"]["train"]["epochs"] == int(result["overrides"]["train.epochs"])
        assert (
            str(experiment["params"]["train"]["model"]["dense"]["hidden_units"]).replace(" ", "")
            == (result["overrides"]["train.model.dense.hidden_units"])
        )
        assert experiment["metrics"] == result["metrics"]
    assert snapshot(project) == before  # the checkout is as it was
    assert list((project / RUNS_DIR).iterdir()) == []

    table = sweep_table(state)
    assert [row["experiment"] for row in table] == [r["experiment"] for r in results]
    assert [row["rank"] for row in table] == [1, 2, 3, 4]
    columns = {"train.model.dense.hidden_units", "train.epochs", "val accuracy", "test accuracy", "train s"}
    assert columns <= set(table[0])


def test_workers_need_only_the_git_remote_and_the_dvc_remote(
    project_own_cache: Path, prefect_api: str, dask_address: str
) -> None:
    project = project_own_cache
    origin = project.parent / "origin.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=project.parent)
    run("git", "remote", "add", "origin", str(origin), cwd=project)
    dvc_remote = project.parent / "dvc-remote"
    dvc("remote", "add", "-d", "storage", str(dvc_remote), cwd=project)
    commit_all(project, "a DVC remote")
    run("git", "push", "-q", "origin", "main", cwd=project)

    state = fashion_sweep(
        grid=["train.epochs=2,3"],
        dask_address=dask_address,
        source=str(origin),
        project_dir=str(project),
        return_state=True,
    )
    assert state.is_completed(), state.message
    results = state.result()
    # The trials cloned the bare repository into workspaces of their own, not under the checkout,
    # with caches of their own: their run history went to the DVC remote, never to this checkout.
    assert not (project / RUNS_DIR).exists()
    assert any((dvc_remote / "runs").rglob("*"))
    assert not (project / ".dvc" / "cache" / "runs").exists()
    # Their experiments reached the git remote and, with their outputs, were pulled into the project.
    pushed = run("git", "ls-remote", str(origin), "refs/exps/*", cwd=project).stdout
    assert len(pushed.splitlines()) == 2
    assert sorted(experiments(project)) == sorted(r["experiment"] for r in results)
    dvc("exp", "apply", results[0]["experiment"], cwd=project)
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}


def test_a_failed_trial_fails_only_itself_and_the_best_can_be_applied(
    project: Path, prefect_api: str
) -> None:
    leaves_no_training_set = "0.999"  # a valid value that fails the trial's ingest, the gate
    state = fashion_sweep(
        grid=[f"preprocess.test_size=0.2,{leaves_no_training_set}"],
        in_process=True,
        apply_best=True,
        project_dir=str(project),
        return_state=True,
    )
    assert state.is_failed()
    assert "1 of 2 trials failed: trial 2 (preprocess.test_size=0.999)" in state.message
    assert "leaves 0 for training" in state.message
    (recorded,) = experiments(project).values()
    assert recorded["params"]["preprocess"]["test_size"] == 0.2
    # The best of those that succeeded is applied to the checkout.
    assert yaml.safe_load((project / "params.yaml").read_text())["preprocess"]["test_size"] == 0.2
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}
    assert list((project / RUNS_DIR).iterdir()) == []
    (failed,) = [row for row in sweep_table(state) if row["status"] != "ok"]
    assert failed["rank"] == "-" and "leaves 0 for training" in failed["status"]


def test_every_trial_is_validated_before_anything_runs(project: Path, prefect_api: str) -> None:
    state = fashion_sweep(
        grid=["train.optimizer=adam,lion"], in_process=True, project_dir=str(project), return_state=True
    )
    assert state.is_failed()
    assert "trial 2: invalid params: train.optimizer" in state.message
    assert not (project / RUNS_DIR).exists()
    assert experiments(project) == {}


@pytest.mark.parametrize("sent", ["source", "push"])
def test_trials_that_must_push_fail_before_any_trial_without_a_dvc_remote(
    project: Path, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sent: str
) -> None:
    """Trials from a git source send their results back through the remotes, and push asks for it:
    without a DVC remote their models could not come back, so no trial starts."""
    monkeypatch.setenv("FASHION_PIPELINE_HOME", str(tmp_path / "home"))  # the source's workspaces
    where = {"source": str(project)} if sent == "source" else {"push": True}
    state = fashion_sweep(
        grid=["train.epochs=1,2"], in_process=True, project_dir=str(project), return_state=True, **where
    )
    assert state.is_failed()
    message = " ".join(state.message.split())
    asked = f"source {project}: the trials send their results back" if sent == "source" else "push=True"
    assert asked in message and "no DVC remote is set, so data/processed, data/raw" in message, message
    assert "nothing was run" in message and "`dvc remote add -d storage <url>`" in message
    assert stage_task_states(state, "trial") == []  # no trial started
    assert experiments(project) == {}


# -- the grid and the ranking -------------------------------------------------------------------------


def test_cancelling_a_sweep_stops_its_trials_and_leaves_no_workspace(project: Path, prefect_api: str) -> None:
    """SIGTERM is what a Prefect worker sends a cancelled run, and what ``kill`` sends by default."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    command = [sys.executable, "-m", "flows", "sweep", "-S", "train.epochs=300,400", "--workers", "2"]
    sweep = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    runs = project / RUNS_DIR
    try:
        deadline = time.monotonic() + 120
        while not any(training(trial) for trial in runs.glob("*-trial-*") if trial.is_dir()):
            assert sweep.poll() is None, sweep.stdout.read()
            assert time.monotonic() < deadline, "no trial started training"
            time.sleep(0.1)
        started = psutil.Process(sweep.pid).children(recursive=True)  # its Dask workers, their stages
        commands = [" ".join(process.cmdline()) for process in started if process.is_running()]
        sweep.send_signal(signal.SIGTERM)
        output, _ = sweep.communicate(timeout=60)
    finally:
        sweep.kill()
    assert sweep.returncode != 0, output
    assert list(runs.iterdir()) == [], output
    assert any("spawn_main" in command for command in commands), commands  # the Dask workers were seen
    deadline = time.monotonic() + 10  # a worker's nanny may take a moment after its sweep
    while any(map(alive, started)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [process.cmdline() for process in started if alive(process)] == [], output
    working_here = [
        process.info["cmdline"]
        for process in psutil.process_iter(["cmdline", "environ"])
        if str(project) in str(process.info["environ"] or {})
    ]
    assert working_here == [], output
    assert experiments(project) == {}


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def training(workspace: Path) -> bool:
    """Whether a train stage runs in ``workspace`` (DVC's rwlock holds its model for writing)."""
    try:
        held = json.loads((workspace / ".dvc/tmp/rwlock").read_text()).get("write", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return any(path.endswith("best-model.h5") for path in held)
