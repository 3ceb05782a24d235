"""The Prefect flow, run in-process against a throw-away Prefect API (``prefect_test_harness``).

The integration tests run the real flow (real ``dvc repro`` of each stage) on a tiny synthetic project
and read task states, logs and artifacts back from the Prefect API.
"""

# ruff: noqa: E402  (Prefect reads its settings when first imported: set them before)
from __future__ import annotations

import os
import tempfile

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="fashion-prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

import json
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from filelock import FileLock
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
from prefect.testing.utilities import prefect_test_harness

from conftest import dvc, ran_stages, stage_outputs
from flows import reports
from flows.cli import key_value
from flows.dvc_runner import failure_message
from flows.params_update import write_params
from flows.pipeline_flow import LOCK_FILE, METRICS_ARTIFACT, PLOTS_ARTIFACT, fashion_pipeline
from pipeline.params import read_raw_params
from pipeline.paths import Paths

STAGES = ("ingest", "preprocess", "train", "evaluate")


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect server and database for this module's flow runs."""
    with prefect_test_harness(server_startup_timeout=60):
        yield


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
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


def artifact(state: State, key: str) -> str:
    """The Markdown of the flow run's artifact ``key``."""
    with get_client(sync_client=True) as client:
        (found,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(state)])),
        )
    return found.data


def log_messages(state: State) -> str:
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id(state)])))
    return "\n".join(log.message for log in logs)


# -- integration: the real flow ----------------------------------------------------------------------


@pytest.mark.integration
def test_flow_builds_what_dvc_repro_builds_then_skips_every_stage(project: Path, prefect_api: None) -> None:
    first = run_flow(project)
    assert first.is_completed(), first.message
    assert first.result() == dict.fromkeys(STAGES, "ran")
    assert task_states(first) == dict.fromkeys(STAGES, "Completed")
    for output in stage_outputs(project):
        assert output.is_file(), output
    # Same cache of truth: dvc sees an up-to-date workspace and reproduces nothing.
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}
    assert ran_stages(dvc("repro", cwd=project).stdout) == set()
    logs = log_messages(first)
    assert "INFO pipeline.train: best epoch" in logs  # the stage's own output reached Prefect
    metrics = json.loads(Paths(project).metrics_json.read_text())
    table = artifact(first, METRICS_ARTIFACT)
    assert f"| test accuracy | n/a | {metrics['test']['accuracy']:.4f} | n/a |" in table
    assert f"| val loss | n/a | {metrics['val']['loss']:.4f} | n/a |" in table
    plots = artifact(first, PLOTS_ARTIFACT)
    for png in (Paths(project).samples_png, Paths(project).confusion_png, Paths(project).f1_png):
        assert png.resolve().as_uri() in plots
    assert "dvc plots show" in plots

    lock = (project / "dvc.lock").read_bytes()
    second = run_flow(project)
    assert second.is_completed(), second.message
    assert second.result() == dict.fromkeys(STAGES, "skipped")
    assert task_states(second) == dict.fromkeys(STAGES, "Skipped")
    assert "Stage 'train' didn't change, skipping" in log_messages(second)
    assert (project / "dvc.lock").read_bytes() == lock
    accuracy = metrics["test"]["accuracy"]
    assert f"| test accuracy | {accuracy:.4f} | {accuracy:.4f} | +0.0000 |" in artifact(
        second, METRICS_ARTIFACT
    )


@pytest.mark.integration
def test_overrides_are_recorded_and_a_failing_stage_keeps_the_previous_outputs(
    project: Path, prefect_api: None
) -> None:
    params_file = project / "params.yaml"
    params_file.write_text("# tuned by hand\n" + params_file.read_text())
    state = run_flow(project, overrides={"train.epochs": 2})
    assert state.is_completed(), state.message
    assert "# tuned by hand" in params_file.read_text()
    assert yaml.safe_load(params_file.read_text())["train"]["epochs"] == 2
    assert len(Paths(project).history_csv.read_text().splitlines()) == 1 + 2
    diff = json.loads(dvc("params", "diff", "--json", cwd=project).stdout)
    assert diff["params.yaml"]["train.epochs"] == {"old": 3, "new": 2, "diff": -1}
    assert experiment_epochs(project) == [2]

    preprocess_outputs = [
        Paths(project).split("train"),
        Paths(project).class_counts_csv,
        Paths(project).samples_png,
    ]
    before = {path: path.read_bytes() for path in preprocess_outputs}
    lock = (project / "dvc.lock").read_bytes()
    failed = run_flow(project, overrides={"preprocess.test_size": 0.999})  # valid, but leaves no training set
    assert failed.is_failed()
    assert "stage 'preprocess' failed" in failed.message
    assert "the resulting train set will be empty" in failed.message
    assert task_states(failed) == {"ingest": "Skipped", "preprocess": "Failed"}
    assert {path: path.read_bytes() for path in preprocess_outputs} == before
    assert (project / "dvc.lock").read_bytes() == lock
    assert experiment_epochs(project) == [2]  # a failed run is not recorded


def experiment_epochs(project: Path) -> list[int]:
    """``train.epochs`` of each experiment ``dvc exp show`` lists."""
    rows = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    return [
        revision["data"]["params"]["params.yaml"]["data"]["train"]["epochs"]
        for row in rows
        for experiment in row.get("experiments") or []
        for revision in experiment["revs"]
    ]


@pytest.mark.integration
def test_unknown_override_fails_before_any_stage_runs(project: Path, prefect_api: None) -> None:
    params = (project / "params.yaml").read_text()
    state = run_flow(project, overrides={"train.epochz": 3})
    assert state.is_failed()
    assert "unknown param 'train.epochz'" in state.message
    assert task_states(state) == {}
    assert (project / "params.yaml").read_text() == params
    assert not (project / "data").exists()


@pytest.mark.integration
def test_a_second_run_on_the_same_workspace_fails_fast(project: Path, prefect_api: None) -> None:
    lock_file = project / LOCK_FILE
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_file):  # what a run in progress holds
        state = run_flow(project)
    assert state.is_failed()
    assert "another pipeline run holds the workspace" in state.message
    assert task_states(state) == {}


# -- the flow's helpers -------------------------------------------------------------------------------


def test_metrics_table_shows_previous_current_and_change() -> None:
    previous = {"val": {"accuracy": 0.8, "loss": 0.5}, "test": {"accuracy": 0.75, "loss": 0.6}}
    current = {"val": {"accuracy": 0.85, "loss": 0.45}, "test": {"accuracy": 0.7, "loss": 0.65}}
    table = reports.metrics_markdown(current, previous)
    assert "| val accuracy | 0.8000 | 0.8500 | +0.0500 |" in table
    assert "| test accuracy | 0.7500 | 0.7000 | -0.0500 |" in table
    assert "| test loss | n/a | 0.6500 | n/a |" in reports.metrics_markdown(current, None)


def test_write_params_edits_only_the_changed_values(tmp_path: Path) -> None:
    repo_params = Path(__file__).resolve().parents[1] / "params.yaml"
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
    assert [after.split("#")[0].strip() for _, after in edited] == ["learning_rate: 0.01", "epochs: 3"]
    assert "# null = the optimizer's Keras default" in edited[0][1]  # the line keeps its comment


def test_failure_message_names_the_stage_and_quotes_the_errors() -> None:
    lines = [
        "Running stage 'train':",
        "Traceback (most recent call last):",
        "ValueError: bad shape",
        "ERROR: failed to reproduce 'train': failed to run: python -m pipeline train, exited with 1",
    ]
    message = failure_message("stage 'train'", 255, lines)
    assert message.startswith("stage 'train' failed (exit code 255): ValueError: bad shape | ERROR: failed")
    assert failure_message("dvc exp save", 1, ["killed"]) == "dvc exp save failed (exit code 1): killed"


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("train.epochs=3", ("train.epochs", "3")),
        ("train.model.hidden_units=[8, 4]", ("train.model.hidden_units", "[8, 4]")),
    ],
)
def test_override_arguments_split_at_the_first_equals_sign(text: str, pair: tuple[str, str]) -> None:
    assert key_value(text) == pair
