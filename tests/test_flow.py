"""The Prefect flow, run in-process against a throw-away Prefect API (``prefect_test_harness``).

The integration tests run the real flow (real DVC stages) on a tiny synthetic project and read task
states, logs and artifacts back from the Prefect API: in the checkout, against concurrent ``dvc
repro`` runs, and in isolated workspaces recorded as DVC experiments.
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
    REPO_ROOT,
    commit_all,
    dvc,
    experiments,
    ran_stages,
    set_params,
    snapshot,
    stage_outputs,
)
from flows import reports
from flows.cli import overrides_from
from flows.params_update import key_value, write_params
from flows.pipeline_flow import METRICS_ARTIFACT, PER_CLASS_ARTIFACT, PLOTS_ARTIFACT, fashion_pipeline
from flows.stage import pipeline_stages
from flows.workspace import RUNS_DIR, locked
from pipeline.dataset import CLASS_NAMES
from pipeline.params import ParamsError, read_raw_params
from pipeline.paths import Paths

STAGES = ("validate", "ingest", "preprocess", "train", "evaluate")
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
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id(state)])))
    return "\n".join(log.message for log in logs)


LONG_RUN_EPOCHS = 300


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


def locked_paths(project: Path, mode: str) -> list[str]:
    """The paths DVC's rwlock holds for ``mode`` (``read`` or ``write``) right now."""
    try:
        return list(json.loads((project / ".dvc/tmp/rwlock").read_text()).get(mode, {}))
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def wait_until(condition, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before {what}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def training(project: Path) -> bool:
    """Whether a train stage is running in ``project`` (DVC's rwlock holds its model for writing)."""
    return any(path.endswith("best-model.h5") for path in locked_paths(project, "write"))


def stage_processes(project: Path) -> list[psutil.Process]:
    """Stage commands DVC runs for ``project``, from any process."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(DVC_ROOT) == str(project):
                found.append(process)
        except psutil.Error:
            continue
    return found


def stage_running(project: Path, stage: str) -> bool:
    """Whether ``python -m pipeline <stage>`` runs for ``project``."""
    for process in stage_processes(project):
        try:
            if process.cmdline()[-1:] == [stage]:
                return True
        except psutil.Error:
            continue
    return False


def history_epochs(project: Path) -> int:
    return len(Paths(project).history_csv.read_text().splitlines()) - 1


def locked_epochs(project: Path) -> int:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"]


# -- in the checkout ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_flow_builds_what_dvc_repro_builds_then_skips_every_stage(project: Path, prefect_api: str) -> None:
    first = run_flow(project)
    assert first.is_completed(), first.message
    result = first.result()
    assert result["stages"] == dict.fromkeys(STAGES, "ran")
    assert task_states(first) == dict.fromkeys(STAGES, "Completed")
    for output in stage_outputs(project):
        assert output.is_file(), output
    # Same cache of truth: dvc sees an up-to-date workspace and reproduces nothing.
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}
    assert ran_stages(dvc("repro", cwd=project).stdout) == set()
    logs = log_messages(first)
    assert "stage 'train' runs: " in logs  # why, from DVC's status
    assert "pipeline.train: epoch 3/3: loss" in logs  # the stage's own records reached Prefect
    assert "pipeline.train: best epoch" in logs
    # What a user reads, no more: no DVC hints or mechanics, no TensorFlow or Keras start-up notices.
    noises = ("git add", "autostage", "Running stage", "Updating lock file", "absl", "oneDNN", "compiled")
    for noise in noises:
        assert noise not in logs, noise
    assert result["experiment"] in experiments(project)
    metrics = json.loads(Paths(project).metrics_json.read_text())
    table = artifact(first, METRICS_ARTIFACT)
    assert f"| test.accuracy | — | {metrics['test']['accuracy']:.4f} | — |" in table
    assert f"| val.loss | — | {metrics['val']['loss']:.4f} | — |" in table
    assert f"dvc exp apply {result['experiment']}" in table
    per_class = json.loads(artifact(first, PER_CLASS_ARTIFACT))
    assert [row["class"] for row in per_class] == list(CLASS_NAMES)  # label order, as the figures
    on_disk = json.loads(Paths(project).per_class_json.read_text())
    assert per_class[1]["f1"] == round(on_disk[1]["f1"], 4) and on_disk[1]["class"] == "Trouser"
    plots = artifact(first, PLOTS_ARTIFACT)
    for png in Paths(project).figures().values():  # drawn in the UI, not file:// links
        assert reports.png_data_url(png) in plots
    assert "python -m pipeline plots show" in plots
    progress = artifact_record(first, "fashion-train-progress")  # live while train ran; now at its end
    assert progress.type == "progress" and progress.data == 100.0
    assert progress.description.startswith("train: epoch 3 of 3, val_accuracy ")

    lock = (project / "dvc.lock").read_bytes()
    second = run_flow(project)
    assert second.is_completed(), second.message
    assert second.result() == {"stages": dict.fromkeys(STAGES, "skipped"), "experiment": None, "commit": None}
    # Skipped tasks say so in their names, which the run graph shows.
    assert task_states(second) == {f"{name} (skipped)": "Skipped" for name in STAGES}
    assert "Finished in state Skipped('skipped: its code, data and params match dvc.lock'" in log_messages(
        second
    )
    assert (project / "dvc.lock").read_bytes() == lock
    accuracy = metrics["test"]["accuracy"]
    assert f"| test.accuracy | {accuracy:.4f} | {accuracy:.4f} | 0.0000 |" in artifact(
        second, METRICS_ARTIFACT
    )


@pytest.mark.integration
def test_overrides_are_recorded_and_a_failing_run_puts_params_and_outputs_back(
    project: Path, prefect_api: str
) -> None:
    params_file = project / "params.yaml"
    params_file.write_text("# tuned by hand\n" + params_file.read_text())
    state = run_flow(project, overrides={"train.epochs": 2})
    assert state.is_completed(), state.message
    assert "# tuned by hand" in params_file.read_text()
    assert yaml.safe_load(params_file.read_text())["train"]["epochs"] == 2
    assert history_epochs(project) == 2
    diff = json.loads(dvc("params", "diff", "--json", cwd=project).stdout)
    assert diff["params.yaml"]["train.epochs"] == {"old": 3, "new": 2, "diff": -1}
    recorded = experiments(project)
    assert recorded[state.result()["experiment"]]["params"]["train"]["epochs"] == 2

    preprocess_outputs = [
        Paths(project).split("train"),
        Paths(project).class_counts_csv,
        Paths(project).samples_png,
    ]
    before = {path: path.read_bytes() for path in preprocess_outputs}
    params, lock = params_file.read_bytes(), (project / "dvc.lock").read_bytes()
    failed = run_flow(project, overrides={"preprocess.test_size": 0.999})  # valid, but leaves no training set
    assert failed.is_failed()
    assert "stage 'preprocess' failed" in failed.message
    assert "the resulting train set will be empty" in failed.message
    assert task_states(failed) == {
        "validate": "Completed",
        "ingest (skipped)": "Skipped",
        "preprocess": "Failed",
    }
    assert {path: path.read_bytes() for path in preprocess_outputs} == before
    assert params_file.read_bytes() == params  # the override is gone again
    assert (project / "dvc.lock").read_bytes() == lock
    assert experiments(project).keys() == recorded.keys()  # a failed run is not recorded


@pytest.mark.integration
def test_unknown_override_fails_before_any_stage_runs(project: Path, prefect_api: str) -> None:
    params = (project / "params.yaml").read_text()
    state = run_flow(project, overrides={"train.epochz": 3})
    assert state.is_failed()
    assert "unknown param 'train.epochz'" in state.message
    assert task_states(state) == {}
    assert (project / "params.yaml").read_text() == params
    assert not (project / "data").exists()


# -- one lock for every writer -------------------------------------------------------------------------


@pytest.mark.integration
def test_a_flow_run_started_during_dvc_repro_fails_fast_and_changes_nothing(
    project: Path, prefect_api: str
) -> None:
    set_params(project, {"train.epochs": 5})
    dvc("repro", cwd=project)
    params = (project / "params.yaml").read_bytes()
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "-f", "-s", "train"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: training(project), "dvc repro trains", repro)
        started = time.monotonic()
        state = run_flow(project, overrides={"train.epochs": 2})
        assert time.monotonic() - started < 30
        assert repro.poll() is None, "the flow had to fail while dvc repro was still training"
    finally:
        output, _ = repro.communicate(timeout=WAIT_S)
    assert repro.returncode == 0, output
    assert state.is_failed()
    assert "is busy, so this run changed nothing" in state.message
    assert "repro -f -s train" in state.message  # DVC names the process that holds the lock
    assert task_states(state) == {}
    assert (project / "params.yaml").read_bytes() == params
    # dvc.lock tells the truth: the model on disk was trained for the epochs it records.
    assert history_epochs(project) == locked_epochs(project) == 5
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}


@pytest.mark.integration
def test_while_a_run_holds_the_project_dvc_repro_and_other_runs_fail_fast(
    project: Path, prefect_api: str
) -> None:
    before = snapshot(project)
    with locked(project):  # what a flow run holds from start to end
        repro = dvc("repro", cwd=project, check=False)
    assert repro.returncode != 0
    assert "is busy, it is being blocked by" in repro.stderr
    assert f"(PID {os.getpid()})" in repro.stderr
    assert snapshot(project) == before  # dvc repro changed nothing: no data, no dvc.lock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from flows.workspace import locked\n"
            "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)",
            str(project),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        state = run_flow(project, overrides={"train.epochs": 2})
    finally:
        holder.kill()
        holder.wait()
    assert state.is_failed()
    assert "is busy, so this run changed nothing" in state.message
    assert f"(PID {holder.pid})" in state.message
    assert task_states(state) == {}
    assert snapshot(project) == before


@pytest.mark.integration
def test_an_interrupted_override_run_puts_params_back_and_stops_its_stage(
    project: Path, prefect_api: str
) -> None:
    """SIGTERM is what a Prefect worker sends a cancelled run, and what ``kill`` sends by default."""
    dvc("repro", cwd=project)
    before = snapshot(project)
    run = start_long_run(project, {**os.environ, "PREFECT_API_URL": prefect_api})
    try:
        wait_until(lambda: training(project), "the flow trains", run)
        assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == LONG_RUN_EPOCHS
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=WAIT_S)
    finally:
        run.kill()
    assert run.returncode != 0, output
    assert snapshot(project) == before, output  # params.yaml, dvc.lock, model and reports as they were
    assert stage_processes(project) == []
    assert locked_paths(project, "write") == []


@pytest.mark.integration
def test_a_killed_run_stops_its_stage_and_the_next_run_puts_back_what_it_left(
    project: Path, prefect_api: str
) -> None:
    """SIGKILL leaves no chance to clean up: the stage stops itself, the next run restores the rest."""
    dvc("repro", cwd=project)
    before = snapshot(project)
    run = start_long_run(project, {**os.environ, "PREFECT_API_URL": prefect_api})
    try:
        wait_until(lambda: stage_running(project, "train"), "the train command runs", run)
    finally:
        run.kill()
        run.communicate(timeout=WAIT_S)
    # The stage lost its flow (the other end of its log connection) and stopped by itself.
    wait_until(lambda: stage_processes(project) == [], "the orphaned stage stops")
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == LONG_RUN_EPOCHS
    assert not Paths(project).model.exists()  # DVC removed it before training

    state = run_flow(project)
    assert state.is_completed(), state.message
    logs = log_messages(state)
    assert "a run killed earlier left the checkout changed; put back: params.yaml, dvc.lock" in logs
    assert "models/best-model.h5" in logs
    assert state.result()["stages"] == dict.fromkeys(STAGES, "skipped")  # all as dvc.lock records
    assert snapshot(project) == before


@pytest.mark.integration
def test_ctrl_c_ends_a_run_at_once_and_no_temporary_server_outlives_the_command(project: Path) -> None:
    """Without PREFECT_API_URL the command starts a temporary server; neither Ctrl-C (SIGINT to the
    terminal's process group) nor SIGKILL leaves it running."""
    dvc("repro", cwd=project)
    params = (project / "params.yaml").read_bytes()
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}

    def start() -> subprocess.Popen:
        # its own process group, as a terminal gives a command
        return start_long_run(project, env, start_new_session=True)

    run = start()
    try:
        wait_until(lambda: stage_running(project, "train"), "the train command runs", run)
        server = temporary_servers()
        assert len(server) == 1
        os.killpg(run.pid, signal.SIGINT)
        started = time.monotonic()
        output, _ = run.communicate(timeout=WAIT_S)
    finally:
        run.kill()
    assert run.returncode != 0
    assert time.monotonic() - started < 30, output  # not minutes of retries against a dead server
    assert "stage 'train' failed" in output  # interrupted (exit 130, or killed by SIGINT while starting)
    assert (project / "params.yaml").read_bytes() == params
    wait_until(lambda: not temporary_servers(), "the temporary server stops")

    run = start()
    try:
        wait_until(lambda: stage_running(project, "train"), "the train command runs", run)
    finally:
        run.kill()  # SIGKILL: nothing of the command runs any more
        run.communicate(timeout=WAIT_S)
    wait_until(lambda: not temporary_servers(), "the kernel stops the temporary server")
    wait_until(lambda: not stage_processes(project), "the orphaned stage stops")


def temporary_servers() -> list[psutil.Process]:
    """``prefect server start`` processes that a command of this project started for itself."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if "prefect server start" in command and "--no-ui" in command:
            found.append(process)
    return found


# -- isolated runs ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_an_isolated_run_leaves_the_checkout_untouched_and_is_an_experiment_to_apply(
    project: Path, prefect_api: str
) -> None:
    dvc("repro", cwd=project)
    commit_all(project, "a run of the pipeline")
    before = snapshot(project)

    state = run_flow(project, isolated=True, overrides={"train.epochs": 2})
    assert state.is_completed(), state.message
    result = state.result()
    # The commit's data and split come from the shared cache; only what the override touches runs.
    assert result["stages"] == {
        "validate": "ran",  # the params changed
        "ingest": "skipped",
        "preprocess": "skipped",
        "train": "ran",
        "evaluate": "ran",
    }
    assert snapshot(project) == before
    assert run_git_status(project) == ""
    assert list((project / RUNS_DIR).iterdir()) == []  # the workspace is gone

    experiment = experiments(project)[result["experiment"]]
    assert experiment["params"]["train"]["epochs"] == 2
    dvc("exp", "apply", result["experiment"], cwd=project)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 2
    assert json.loads(Paths(project).metrics_json.read_text()) == experiment["metrics"]
    assert history_epochs(project) == locked_epochs(project) == 2
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}  # model and data came too
    plots = artifact(state, PLOTS_ARTIFACT)
    assert f"python -m pipeline plots diff HEAD {result['experiment']}" in plots
    assert plots.count("](data:image/png;base64,") == len(Paths(project).figures())  # drawn, not linked


@pytest.mark.integration
def test_a_failed_isolated_run_removes_its_workspace_unless_asked_to_keep_it(
    project: Path, prefect_api: str
) -> None:
    dvc("repro", cwd=project)
    commit_all(project, "a run of the pipeline")
    before = snapshot(project)
    failing = {"preprocess.test_size": 0.999}  # valid, but leaves no training set

    state = run_flow(project, isolated=True, overrides=failing)
    assert state.is_failed() and "stage 'preprocess' failed" in state.message
    assert list((project / RUNS_DIR).iterdir()) == []

    state = run_flow(project, isolated=True, overrides=failing, keep_workspace=True)
    assert state.is_failed()
    (kept,) = (project / RUNS_DIR).iterdir()
    assert f"its workspace is kept for debugging: {kept}" in log_messages(state)
    assert yaml.safe_load((kept / "params.yaml").read_text())["preprocess"]["test_size"] == 0.999
    # The data was linked from the project's cache (a second name of the cached file), not copied.
    raw = kept / "data/raw/train-images-idx3-ubyte"
    assert raw.is_symlink() or raw.stat().st_nlink > 1
    assert snapshot(project) == before
    assert experiments(project) == {}


def run_git_status(project: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.integration
def test_an_isolated_run_of_an_unknown_revision_fails_before_any_work(
    project: Path, prefect_api: str
) -> None:
    state = run_flow(project, isolated=True, rev="no-such-branch")
    assert state.is_failed()
    assert "'no-such-branch' is not a commit" in state.message
    assert not (project / RUNS_DIR).exists()


# -- the flow's helpers -------------------------------------------------------------------------------


def test_a_temporary_server_of_this_package_sends_no_telemetry() -> None:
    """Offline, Prefect's telemetry only logs errors; a server configured by the user keeps its own."""
    code = "import flows, prefect.settings as s; print(s.get_current_settings().server.analytics_enabled)"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "False"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "true"
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "True"


def test_stage_order_comes_from_dvc_yaml(project: Path) -> None:
    assert pipeline_stages(project) == list(STAGES)


def test_metrics_table_shows_previous_current_and_change() -> None:
    previous = {"val": {"accuracy": 0.8, "loss": 0.5}, "test": {"accuracy": 0.75, "loss": 0.6}}
    current = {"val": {"accuracy": 0.85, "loss": 0.45}, "test": {"accuracy": 0.7, "loss": 0.65}}
    table = reports.metrics_markdown(current, previous)
    assert "| Metric | Previous run | This run | Change |" in table
    assert "| val.accuracy | 0.8000 | 0.8500 | +0.0500 |" in table
    assert "| test.accuracy | 0.7500 | 0.7000 | -0.0500 |" in table
    assert "| test.loss | — | 0.6500 | — |" in reports.metrics_markdown(current, None)


def test_write_params_edits_only_the_changed_values(tmp_path: Path) -> None:
    repo_params = REPO_ROOT / "params.yaml"
    target = tmp_path / "params.yaml"
    target.write_text(repo_params.read_text())
    assert write_params(target, read_raw_params(target)) == []
    assert target.read_text() == repo_params.read_text()

    changed = write_params(
        target, read_raw_params(target, {"train.epochs": "3", "train.learning_rate": 0.01})
    )
    assert sorted(changed) == ["train.epochs", "train.learning_rate"]
    old, new = repo_params.read_text().splitlines(), target.read_text().splitlines()
    edited = [(before, after) for before, after in zip(old, new, strict=True) if before != after]
    assert [after.split("#")[0].strip() for _, after in edited] == ["epochs: 3", "learning_rate: 0.01"]
    assert "# null = the optimizer's Keras default" in edited[1][1]  # the line keeps its comment


def test_a_params_file_means_overrides_of_the_keys_it_holds(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  epochs: 7\n  model:\n    dense:\n      hidden_units: [8, 4]\n")
    assert overrides_from(other, []) == {"train.epochs": 7, "train.model.dense.hidden_units": [8, 4]}
    assert overrides_from(other, [("train.epochs", "9")])["train.epochs"] == "9"  # --override wins
    other.write_text("train:\n  epochz: 7\n")
    with pytest.raises(ParamsError, match=r"other\.yaml: unknown param 'train\.epochz'"):
        overrides_from(other, [])


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("train.epochs=3", ("train.epochs", "3")),
        ("train.model.dense.hidden_units=[8, 4]", ("train.model.dense.hidden_units", "[8, 4]")),
    ],
)
def test_override_arguments_split_at_the_first_equals_sign(text: str, pair: tuple[str, str]) -> None:
    assert key_value(text) == pair
