"""The Prefect flow, run in-process against a throw-away Prefect API (``prefect_test_harness``).

The integration tests run the real flow (real DVC stages) on a tiny synthetic project and read task
states, logs and artifacts back from the Prefect API: beside concurrent ``dvc
repro`` runs in the checkout, in workspaces of their own recorded as DVC experiments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest
import yaml
from dvc.env import DVC_ROOT
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from prefect.states import State

from conftest import (
    commit_all,
    dvc,
    experiments,
    ran_stages,
    run,
    set_params,
    snapshot,
    stage_outputs,
)
from flows import reports
from flows.pipeline_flow import METRICS_ARTIFACT, PER_CLASS_ARTIFACT, PLOTS_ARTIFACT, fashion_pipeline
from flows.workspace import RUNS_DIR, WorkspaceError, apply_experiment, checkout_state
from pipeline.core.dataset import CLASS_NAMES
from pipeline.core.paths import Paths

pytestmark = [pytest.mark.integration, pytest.mark.server]  # a real pipeline, flow or sweep in each test

STAGES = ("ingest", "preprocess", "train", "evaluate")
WAIT_S = 120


def run_flow(project: Path, **parameters) -> State:
    return fashion_pipeline(project_dir=str(project), **parameters, return_state=True)


def flow_run_id(state: State) -> UUID:
    return state.state_details.flow_run_id


def task_states(state: State) -> dict[str, str]:
    """Stage name -> the name of its task run's final state."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(state)]))
        )
    return {run.name: run.state.name for run in runs}


def artifact_record(state: State, key: str) -> Any:
    """The flow run's artifact ``key``, as the API returns it."""
    with get_client(sync_client=True) as client:
        (found,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(state)])),
        )
    return found


def artifact(state: State, key: str) -> str:
    """The content of the flow run's artifact ``key`` (Markdown, or a table as JSON)."""
    return artifact_record(state, key).data


def log_messages(state: State) -> str:
    APILogHandler().flush()
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while True:  # the server answers at most 200 at a time
            page = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id(state)])),
                limit=200,
                offset=len(messages),
            )
            messages += [log.message for log in page]
            if len(page) < 200:
                return "\n".join(messages)


LONG_RUN_EPOCHS = 300
COMMAND_TAG = "FASHION_TEST_COMMAND"  # an environment variable that marks what one test started


def start_long_run(project: Path, env: dict[str, str], **popen: object) -> subprocess.Popen:
    """``python -m flows run`` with enough epochs to be stopped while it trains; output on stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows", "run", "--override", f"train.epochs={LONG_RUN_EPOCHS}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def wait_until(condition, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before {what}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def stage_processes(project: Path) -> list[psutil.Process]:
    """Stage commands DVC runs for ``project`` or any of its workspaces, from any process."""
    found = []
    for process in psutil.process_iter():
        try:
            root = process.environ().get(DVC_ROOT)
        except psutil.Error:
            continue
        if root and Path(root).is_relative_to(project):
            found.append(process)
    return found


def stage_running(project: Path, stage: str) -> bool:
    """Whether ``python -m pipeline.stages.<stage>`` runs for ``project`` or one of its workspaces."""
    for process in stage_processes(project):
        try:
            if process.cmdline()[-1:] == [f"pipeline.stages.{stage}"]:
                return True
        except psutil.Error:
            continue
    return False


def history_epochs(project: Path) -> int:
    return len((Paths(project).train_live_dir / "plots/metrics/val/loss.tsv").read_text().splitlines()) - 1


def locked_epochs(project: Path) -> int:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"]


def workspaces(project: Path) -> list[Path]:
    return sorted((project / RUNS_DIR).iterdir()) if (project / RUNS_DIR).exists() else []


def git_status(project: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True
    ).stdout


# -- a run: a workspace of its own, recorded as an experiment -------------------------------------------


def test_a_run_builds_what_dvc_repro_builds_applies_it_then_skips_every_stage(
    project_own_cache: Path, prefect_api: str
) -> None:
    project = project_own_cache  # every stage must run, not come from the session's run cache
    before = snapshot(project)
    first = run_flow(project, apply=True)
    assert first.is_completed(), first.message
    result = first.result()
    assert result["stages"] == dict.fromkeys(STAGES, "ran")
    assert task_states(first) == dict.fromkeys(STAGES, "Completed")
    assert workspaces(project) == []  # the workspace is gone
    # --apply brought the experiment into the checkout: dvc sees it up to date, reproduces nothing.
    assert snapshot(project) != before
    for output in stage_outputs(project):
        assert output.is_file(), output
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}
    assert ran_stages(dvc("repro", cwd=project).stdout) == set()
    logs = log_messages(first)
    assert "stage 'train' runs: " in logs  # why, from DVC's status
    assert "pipeline.model.training: epoch 3/3: loss" in logs  # the stage's own records reached Prefect
    assert "pipeline.stages.train: best epoch" in logs
    # What a user reads, no more: no DVC hints or mechanics, no TensorFlow or Keras start-up notices.
    noises = ("git add", "autostage", "Running stage", "Updating lock file", "absl", "oneDNN", "compiled")
    for noise in noises:
        assert noise not in logs, noise
    assert "\x1b[" not in logs  # no terminal escapes
    assert result["experiment"] in experiments(project)
    metrics = json.loads(Paths(project).metrics_json.read_text())
    table = artifact(first, METRICS_ARTIFACT)
    commit = result["commit"][:7]
    assert f"| Metric | Commit {commit} | This run | Change |" in table
    assert f"| test.accuracy | — | {metrics['test']['accuracy']:.4f} | — |" in table
    assert f"dvc exp apply {result['experiment']}" in table
    per_class = json.loads(artifact(first, PER_CLASS_ARTIFACT))
    assert [row["class"] for row in per_class] == list(CLASS_NAMES)  # label order, as the figures
    on_disk = json.loads(Paths(project).per_class_json.read_text())
    assert per_class[1]["f1"] == round(on_disk[1]["f1"], 4) and on_disk[1]["class"] == "Trouser"
    plots = artifact(first, PLOTS_ARTIFACT)
    for png in Paths(project).figures().values():  # drawn in the UI, not file:// links
        assert reports.png_data_url(png) in plots
    assert f"python -m pipeline plots diff HEAD {result['experiment']}" in plots
    progress = artifact_record(first, "fashion-train-progress")  # live while train ran; now at its end
    assert progress.type == "progress" and progress.data == 100.0
    assert progress.description.startswith("train: epoch 3 of 3, val_accuracy ")

    # Committed, as the log says, the next run starts from it and finds everything done.
    commit_all(project, "the applied run")
    applied = snapshot(project)
    second = run_flow(project)
    assert second.is_completed(), second.message
    assert second.result()["stages"] == dict.fromkeys(STAGES, "skipped")
    assert second.result()["experiment"] is None
    # Skipped tasks say so in their names, which the run graph shows.
    assert task_states(second) == {f"{name} (skipped)": "Skipped" for name in STAGES}
    assert "Finished in state Skipped('skipped: its code, data and params match dvc.lock'" in log_messages(
        second
    )
    assert snapshot(project) == applied


def test_overrides_and_uncommitted_edits_reach_the_run_and_never_the_checkout(
    project: Path, prefect_api: str
) -> None:
    params_file = project / "params.yaml"
    params_file.write_text("# tuned by hand\n" + params_file.read_text())
    set_params(project, {"train.batch_size": 16})  # uncommitted, as dvc exp run --temp takes it
    before = snapshot(project)
    state = run_flow(project, overrides={"train.epochs": 2})
    assert state.is_completed(), state.message
    assert snapshot(project) == before
    recorded = experiments(project)[state.result()["experiment"]]
    assert recorded["params"]["train"]["epochs"] == 2
    assert recorded["params"]["train"]["batch_size"] == 16
    assert "uncommitted changes" in log_messages(state)

    # valid alone, but leaves no training set: ingest, the gate, says so with the data in hand
    failed = run_flow(project, overrides={"preprocess.test_size": 0.999})
    assert failed.is_failed()
    assert "stage 'ingest' failed" in failed.message
    assert "preprocess.test_size: 0.999 of" in failed.message and "leaves 0 for training" in failed.message
    assert task_states(failed) == {"ingest": "Failed"}
    assert snapshot(project) == before
    assert len(experiments(project)) == 1  # a failed run is not recorded
    assert workspaces(project) == []


def test_unknown_override_fails_before_any_stage_runs(project: Path, prefect_api: str) -> None:
    before = snapshot(project)
    state = run_flow(project, overrides={"train.epochz": 3})
    assert state.is_failed()
    assert "override: unknown param 'train.epochz'; did you mean 'train.epochs'" in state.message
    assert task_states(state) == {}
    assert snapshot(project) == before
    assert workspaces(project) == []


def test_apply_refuses_a_checkout_that_changed_while_the_run_went(project: Path, prefect_api: str) -> None:
    state = run_flow(project, overrides={"train.epochs": 2})
    experiment = state.result()["experiment"]
    started_as = checkout_state(project)
    set_params(project, {"train.batch_size": 8})  # the user edits while the run trains
    edited = snapshot(project)
    with pytest.raises(WorkspaceError, match=f"changed while the run was going, so experiment {experiment}"):
        apply_experiment(project, experiment, started_as)
    assert snapshot(project) == edited
    run("git", "checkout", "params.yaml", cwd=project)
    apply_experiment(project, experiment, started_as)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 2
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}


def test_dvc_repro_in_the_checkout_and_a_flow_run_go_at_once_and_both_tell_the_truth(
    project: Path, prefect_api: str
) -> None:
    set_params(project, {"train.epochs": 5})
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        state = run_flow(project, rev="HEAD", overrides={"train.epochs": 2})
    finally:
        output, _ = repro.communicate(timeout=WAIT_S)
    assert repro.returncode == 0, output
    assert state.is_completed(), state.message
    # Each recorded what it trained: the checkout 5 epochs, the experiment 2.
    assert history_epochs(project) == locked_epochs(project) == 5
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}
    assert experiments(project)[state.result()["experiment"]]["params"]["train"]["epochs"] == 2


def test_a_killed_run_stops_its_stage_and_the_next_run_removes_its_workspace(
    project: Path, prefect_api: str
) -> None:
    before = snapshot(project)
    run = start_long_run(project, {**os.environ, "PREFECT_API_URL": prefect_api})
    try:
        wait_until(lambda: stage_running(project, "train"), "the train command runs", run)
        (abandoned,) = [path for path in workspaces(project) if path.is_dir()]
    finally:
        run.kill()  # SIGKILL: no chance to clean up
        run.communicate(timeout=WAIT_S)
    # The stage lost the process that started it and stopped by itself.
    wait_until(lambda: stage_processes(project) == [], "the orphaned stage stops")
    assert abandoned.is_dir()
    assert snapshot(project) == before

    state = run_flow(project, overrides={"train.epochs": 1})
    assert state.is_completed(), state.message
    assert f"removed the workspace of a run that died: {abandoned}" in log_messages(state)
    assert workspaces(project) == []


def test_ctrl_c_ends_a_run_at_once_and_no_temporary_server_outlives_the_command(project: Path) -> None:
    """Without PREFECT_API_URL the command starts a temporary server; neither Ctrl-C (SIGINT to the
    terminal's process group) nor SIGKILL leaves it running."""
    before = snapshot(project)
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env[COMMAND_TAG] = str(project)  # inherited by the command's server: see temporary_servers

    def start() -> subprocess.Popen:
        # its own process group, as a terminal gives a command
        return start_long_run(project, env, start_new_session=True)

    run = start()
    try:
        wait_until(lambda: stage_running(project, "train"), "the train command runs", run)
        server = temporary_servers(project)
        assert len(server) == 1
        os.killpg(run.pid, signal.SIGINT)
        started = time.monotonic()
        output, _ = run.communicate(timeout=WAIT_S)
    finally:
        run.kill()
    assert run.returncode != 0
    assert time.monotonic() - started < 30, output  # not minutes of retries against a dead server
    assert "stage 'train' failed" in output  # interrupted (exit 130, or killed by SIGINT while starting)
    assert snapshot(project) == before
    assert workspaces(project) == []
    wait_until(lambda: not temporary_servers(project), "the temporary server stops")

    run = start()
    try:
        wait_until(lambda: stage_running(project, "train"), "the train command runs", run)
    finally:
        run.kill()  # SIGKILL: nothing of the command runs any more
        run.communicate(timeout=WAIT_S)
    wait_until(lambda: not temporary_servers(project), "the kernel stops the temporary server")
    wait_until(lambda: not stage_processes(project), "the orphaned stage stops")


def temporary_servers(project: Path) -> list[psutil.Process]:
    """``prefect server start`` processes that a command of this test started for itself (their
    environment carries the command's :data:`COMMAND_TAG`; other tests' servers do not)."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        command = " ".join(process.info["cmdline"] or [])
        tagged = (process.info["environ"] or {}).get(COMMAND_TAG) == str(project)
        if "prefect server start" in command and tagged:
            found.append(process)
    return found


def test_a_failed_run_removes_its_workspace_unless_asked_to_keep_it(
    reproduced: Path, prefect_api: str
) -> None:
    project = reproduced
    commit_all(project, "a run of the pipeline")
    before = snapshot(project)
    failing = {"preprocess.test_size": 0.999}  # valid alone, but leaves no training set

    state = run_flow(project, overrides=failing)
    assert state.is_failed() and "stage 'ingest' failed" in state.message
    assert workspaces(project) == []

    state = run_flow(project, overrides=failing, keep_workspace=True)
    assert state.is_failed()
    (kept,) = workspaces(project)
    assert f"its workspace is kept for debugging: {kept}" in log_messages(state)
    assert yaml.safe_load((kept / "params.yaml").read_text())["preprocess"]["test_size"] == 0.999
    # The model was linked from the project's cache (a second name of the cached file), not copied.
    # (data/raw is a copy: its params changed, so ingest checked them, and DVC unprotects a persist
    # output before its stage runs.)
    model = kept / "models/best-model.h5"
    assert model.is_symlink() or model.stat().st_nlink > 1
    assert snapshot(project) == before
    assert experiments(project) == {}


def test_a_run_of_an_unknown_revision_fails_before_any_work(project: Path, prefect_api: str) -> None:
    state = run_flow(project, rev="no-such-branch")
    assert state.is_failed()
    assert "'no-such-branch' is not a commit" in state.message
    assert workspaces(project) == []


def test_a_push_without_a_dvc_remote_fails_before_any_stage_runs(
    project: Path, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nightly's parameters (a git source, no checkout, push) where no DVC remote is set: the
    model could only stay in the worker's own cache, so the run fails first, in one line."""
    home = tmp_path / "worker-home"
    monkeypatch.setenv("FASHION_PIPELINE_HOME", str(home))  # the worker's cache and workspaces
    state = fashion_pipeline(source=str(project), push=True, project_dir=None, return_state=True)
    assert state.is_failed()
    message = " ".join(state.message.split())
    assert (
        "push=True: no DVC remote is set, so data/processed, data/raw, models/best-model.h5, "
        f"models/model.keras would stay in this machine's DVC cache ({home / 'dvc-cache'}) and only "
        "the run's git ref would leave; nothing was run." in message
    )
    assert "`dvc remote add -d storage <url>`" in message and "or run with push=False" in message
    assert task_states(state) == {}  # no stage ran
    assert "rebuild" not in log_messages(state)  # nor is one said to
    assert [path for path in (home / "runs").iterdir() if path.is_dir()] == []
    assert experiments(project) == {}


def test_a_pushed_runs_metrics_artifact_says_what_went_where(reproduced: Path, prefect_api: str) -> None:
    remote = reproduced.parent / "dvc-remote"
    dvc("remote", "add", "-d", "storage", str(remote), cwd=reproduced)
    origin = reproduced.parent / "origin.git"
    run("git", "init", "-q", "--bare", str(origin), cwd=reproduced.parent)
    run("git", "remote", "add", "origin", str(origin), cwd=reproduced)
    state = run_flow(reproduced, overrides={"review.seeds": 4}, push=True)  # reruns ingest alone
    assert state.is_completed(), state.message
    experiment = state.result()["experiment"]
    shown = artifact(state, METRICS_ARTIFACT)
    assert "**Warning:**" not in shown
    pushed = next(line for line in shown.splitlines() if line.startswith("Pushed: "))
    assert pushed.startswith("Pushed: data, models and run cache to DVC remote `storage` (")
    assert pushed.endswith(f"; experiment `{experiment}` to git remote `{origin}`.")
    assert any(remote.rglob("*")) and run("git", "ls-remote", str(origin), cwd=reproduced).stdout
