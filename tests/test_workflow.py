"""The pull-request review workflow: valid YAML with the steps the README promises (it cannot run here)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "review.yml"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def step_running(steps: list[dict[str, Any]], fragment: str) -> dict[str, Any]:
    matches = [step for step in steps if fragment in step.get("run", "")]
    assert matches, f"no step runs {fragment!r}"
    return matches[0]


def test_runs_on_pull_requests_and_may_comment(workflow: dict[str, Any]) -> None:
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers
    assert workflow["permissions"]["pull-requests"] == "write"
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    assert job["timeout-minutes"] <= 90


def test_checks_out_history_and_installs_the_project(steps: list[dict[str, Any]]) -> None:
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0, "the base branch's commits are needed"
    python = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    assert "pip install -e ." in step_running(steps, "pip install")["run"]
    assert "git fetch" in step_running(steps, "git fetch")["run"]
    for step in steps:
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), f"pin actions: {step['uses']}"


def test_pulls_from_the_projects_dvc_remote_then_reproduces_the_rest(
    workflow: dict[str, Any], steps: list[dict[str, Any]]
) -> None:
    (job,) = workflow["jobs"].values()
    pull = step_running(steps, "dvc pull")
    assert "dvc remote default" in pull["run"]  # the remote `dvc remote add -d` committed
    assert "dvc remote add --local" in pull["run"] and "DVC_REMOTE_URL" in pull["run"]  # or the secret's
    # Only the pull step sees the storage secrets; the steps running the PR's pipeline do not.
    secrets = {name for name, value in pull["env"].items() if "secrets." in value}
    assert secrets == {
        "DVC_REMOTE_URL",
        "DVC_REMOTE_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert not any("secrets." in value for value in job["env"].values())
    repro = step_running(steps, "dvc repro")
    assert "secrets." not in str(repro.get("env", {}))
    assert steps.index(pull) < steps.index(repro)


def test_writes_the_report_against_the_base_and_posts_it(
    workflow: dict[str, Any], steps: list[dict[str, Any]]
) -> None:
    (job,) = workflow["jobs"].values()
    assert job["env"]["BASE_REF"] == "${{ github.base_ref }}"
    report = step_running(steps, "python -m pipeline report")
    command = report["run"]
    assert '--base "origin/${BASE_REF}"' in command
    assert "--output review.md" in command

    comment = step_running(steps, "gh pr comment")
    assert "--body-file review.md" in comment["run"]
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert "review.md" in comment["if"] and "cancelled()" in comment["if"], "post even when the gate fails"
    assert steps.index(report) < steps.index(comment)

    gate = steps[-1]
    assert "steps.report.outputs.exit" in gate["if"] and "exit 1" in gate["run"]
    assert report["id"] == "report"


def test_report_options_used_by_the_workflow_exist(steps: list[dict[str, Any]]) -> None:
    command = step_running(steps, "python -m pipeline report")["run"]
    used = set(re.findall(r"(--[a-z][a-z-]+)", command.split("python -m pipeline report", 1)[1]))
    help_text = subprocess.run(
        [sys.executable, "-m", "pipeline", "report", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert used and all(option in help_text for option in used), used


def test_every_run_script_is_valid_bash(steps: list[dict[str, Any]]) -> None:
    for step in steps:
        if "run" in step:
            script = EXPRESSION.sub("EXPRESSION", step["run"])
            result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
            assert result.returncode == 0, f"{step.get('name')}: {result.stderr}"


def test_matches_the_github_workflow_schema() -> None:
    """SchemaStore's schema, vendored by check-jsonschema; skipped where that is not installed."""
    command = shutil.which("check-jsonschema")
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("check-jsonschema is required in CI")
        pytest.skip("check-jsonschema is not installed")
    args = [command, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout}{result.stderr}"
