"""Seed groups for real: ``python -m flows seeds`` on Dask, each seed a DVC experiment, paid for once,
and the review report comparing the groups of two revisions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

from conftest import commit_all, dvc, experiments, run, set_params
from flows.pipeline_flow import METRICS_ARTIFACT, fashion_pipeline
from flows.seeds_flow import SEEDS_ARTIFACT, fashion_seeds
from test_flow import artifact, log_messages

pytestmark = [pytest.mark.integration, pytest.mark.server]


def report_of(project: Path, *args: str) -> tuple[int, str, str]:
    result = run(sys.executable, "-m", "pipeline", "report", *args, cwd=project, check=False)
    return result.returncode, result.stdout, result.stderr


def metric_row(markdown: str, name: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")][1:]


def seeds_artifact(state) -> list[dict]:
    with get_client(sync_client=True) as client:
        (found,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SEEDS_ARTIFACT])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
        )
    return json.loads(found.data)


def test_a_seed_group_on_dask_is_paid_once_and_the_report_compares_groups(
    project: Path, prefect_api: str, dask_address: str
) -> None:
    dvc("repro", cwd=project)
    commit_all(project, "baseline run")
    first = yaml.safe_load((project / "params.yaml").read_text())["train"]["seed"]

    state = fashion_seeds(seeds=3, dask_address=dask_address, project_dir=str(project), return_state=True)
    assert state.is_completed(), state.message
    group = state.result()
    assert group["seeds"] == [first, first + 1, first + 2]
    recorded = experiments(project)
    assert [trial["seed"] for trial in group["trials"]] == group["seeds"]
    names = [trial["experiment"] for trial in group["trials"]]
    assert sorted(recorded) == sorted(names)
    for name, experiment in recorded.items():
        assert experiment["params"]["train"]["seed"] in group["seeds"], name
    accuracies = [recorded[name]["metrics"]["test"]["accuracy"] for name in names]
    summary = group["summary"]["test.accuracy"]
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(sum(accuracies) / 3)
    assert (summary["min"], summary["max"]) == (min(accuracies), max(accuracies))
    assert any(name.startswith("F1 ") for name in group["summary"]), "per-class F1 is summarized too"
    rows = {row["metric"]: row for row in seeds_artifact(state)}
    assert rows["test.accuracy"]["n"] == 3 and rows["test.accuracy"]["mean"] == round(summary["mean"], 4)

    # Paid once: the same group again trains nothing (the commit's seed is up to date, the others
    # come from DVC's run cache).
    again = fashion_seeds(seeds=3, dask_address=dask_address, project_dir=str(project), return_state=True)
    assert again.is_completed(), again.message
    assert again.result()["summary"]["test.accuracy"] == summary
    assert {trial["stages"]["train"] for trial in again.result()["trials"]} <= {"skipped", "cached"}

    # A flow run of a fourth seed: its metrics artifact shows it against the three.
    fourth = fashion_pipeline(
        overrides={"train.seed": first + 3}, project_dir=str(project), return_state=True
    )
    assert fourth.is_completed(), fourth.message
    shown = artifact(fourth, METRICS_ARTIFACT)
    assert "### Against its configuration's seed spread" in shown
    assert f"3 other seeds of the same code, data and params: {first} (" in shown
    assert "| test.accuracy |" in shown.split("seed spread")[1]

    # The report against the same commit: both sides are one configuration.
    code, text, err = report_of(project, "--base", "HEAD")
    assert code == 0, err
    assert "Seed groups: base 4 seeds" in text and "the same configuration" in text
    assert metric_row(text, "test.accuracy")[-1] == "no change"

    # A change: fewer epochs. One run of it against the group: the group's prediction interval.
    run("git", "checkout", "-q", "-b", "change", cwd=project)
    set_params(project, {"train.epochs": 1})
    dvc("repro", cwd=project)
    code, text, err = report_of(project, "--base", "main")
    assert code == 0, err
    assert "Seed groups: base 4 seeds" in text and f"new 1 run: {first} (workspace)" in text
    assert metric_row(text, "test.accuracy")[2].count(" to ") == 1, "the prediction interval of one run"
    # Its group, asked for with an override (not a string: what a preset file gives); its own seed
    # is the run above, from DVC's run cache.
    changed = fashion_seeds(
        seeds=3,
        overrides={"train.epochs": 1},
        dask_address=dask_address,
        project_dir=str(project),
        return_state=True,
    )
    assert changed.is_completed(), changed.message
    assert changed.result()["trials"][0]["stages"]["train"] in {"skipped", "cached"}
    code, text, err = report_of(project, "--base", "main")
    assert code == 0, err
    assert "Seed groups: base 4 seeds" in text and "new 3 seeds" in text
    row = metric_row(text, "test.accuracy")
    assert "±" in row[0] and "±" in row[1] and " to " in row[2], row
    assert row[3].strip("*") in {"better", "worse", "within seed noise"}
    assert "<summary>Per-class F1 (test set)</summary>" in text


def test_a_seed_group_ends_with_its_mean_and_spread_and_names_no_best_seed(
    reproduced: Path, prefect_api: str
) -> None:
    """The seed is the noise a group measures: its luckiest seed is no "best trial", and no ranking."""
    from prefect.client.schemas.filters import FlowRunFilterParentFlowRunId

    from flows.sweep_flow import SWEEP_ARTIFACT
    from test_flow import flow_run_id

    state = fashion_seeds(seeds=2, in_process=True, project_dir=str(reproduced), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()["summary"]
    assert {row["n"] for row in summary.values()} == {2}
    own_logs = log_messages(state)  # flushes this process's log records to the API first
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id(state)])
            )
        )
        runs = [flow_run_id(state), *(child.id for child in children)]
        assert [child.name for child in children] and "fashion-sweep" not in {
            client.read_flow(child.flow_id).name for child in children
        }
        ranked = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SWEEP_ARTIFACT])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)),
        )
        everything = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)), limit=200)
    assert ranked == []
    assert not [log.message for log in everything if "best trial" in log.message]
    headline = [name for name in summary if not name.startswith("F1 ")]
    spread = [line for line in own_logs.splitlines() if " over 2 seeds: " in line]
    assert [line.split(" over 2 seeds: ")[0] for line in spread] == headline, spread
    assert all(" ± " in line and "–" in line for line in spread), spread
    assert {row["metric"] for row in seeds_artifact(state)} == set(summary)
