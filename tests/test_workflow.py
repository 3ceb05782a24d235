"""The pull-request review workflow and main's base-groups workflow: valid, hardened, with the steps
the README promises.

Here they are checked as YAML, against GitHub's schema (``check-jsonschema``) and by ``zizmor``'s
security audit, offline; ``test_workflow_runs.py`` runs their steps.
"""

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
BASE_GROUPS = REPO_ROOT / ".github" / "workflows" / "base-groups.yml"
WORKFLOWS = [WORKFLOW, BASE_GROUPS]
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
STORAGE_SECRETS = {"DVC_REMOTE_URL", "DVC_REMOTE_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def report_job(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow["jobs"]["report"]


@pytest.fixture(scope="module")
def comment_job(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow["jobs"]["comment"]


def all_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def step_running(steps: list[dict[str, Any]], fragment: str) -> dict[str, Any]:
    matches = [step for step in steps if fragment in step.get("run", "")]
    assert matches, f"no step runs {fragment!r}"
    return matches[0]


def test_runs_on_pull_requests_with_the_least_permissions(workflow: dict[str, Any]) -> None:
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    triggers = workflow.get("on", workflow.get(True))
    assert list(triggers) == ["pull_request"]  # never pull_request_target: no secrets for forks' code
    assert workflow["permissions"] == {}
    assert workflow["jobs"]["report"]["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["comment"]["permissions"] == {"pull-requests": "write"}
    for job in workflow["jobs"].values():
        assert job["runs-on"].startswith("ubuntu")
        assert job["timeout-minutes"] <= 90


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_actions_are_pinned_to_commits(path: Path) -> None:
    for step in all_steps(yaml.safe_load(path.read_text())):
        if "uses" in step:
            assert re.fullmatch(r"actions/[\w.-]+@[0-9a-f]{40}", step["uses"]), (
                f"pin to a commit: {step['uses']}"
            )


def test_checks_out_history_without_keeping_credentials(report_job: dict[str, Any]) -> None:
    steps = report_job["steps"]
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0, "the base branch's commits are needed"
    assert checkout["with"]["persist-credentials"] is False
    python = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    install = step_running(steps, "pip install")["run"]
    assert "pip install -r requirements/runtime.lock" in install and "pip install --no-deps -e ." in install


def test_only_the_pull_step_sees_the_storage_secrets(
    workflow: dict[str, Any], report_job: dict[str, Any]
) -> None:
    steps = report_job["steps"]
    pull = step_running(steps, "dvc pull")
    assert "dvc remote default" in pull["run"]  # the remote `dvc remote add -d` committed
    assert "dvc remote add --local" in pull["run"] and "DVC_REMOTE_URL" in pull["run"]  # or the secret's
    assert {name for name, value in pull["env"].items() if "secrets." in value} == STORAGE_SECRETS
    assert report_job["environment"] == "dvc-remote"  # where those secrets are defined
    for step in all_steps(workflow):
        if step is not pull:
            assert "secrets." not in str(step.get("env", {})), step.get("name")
    assert "secrets." not in str(report_job["env"])
    repro = step_running(steps, "dvc repro")
    assert steps.index(pull) < steps.index(repro)


def test_writes_the_report_against_the_base_and_fails_on_the_gate(report_job: dict[str, Any]) -> None:
    steps = report_job["steps"]
    assert report_job["env"]["BASE_REF"] == "${{ github.base_ref }}"
    report = step_running(steps, "python -m pipeline report")
    assert report["id"] == "report"
    assert '--base "origin/${BASE_REF}"' in report["run"]
    assert "--output review.md" in report["run"]
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert "review.md" in upload["with"]["path"] and "cancelled()" in upload["if"]
    gate = steps[-1]
    assert "steps.report.outputs.exit" in gate["if"] and "exit 1" in gate["run"]
    assert "${{" not in gate["run"], "step outputs reach the shell through env, never by expansion"


def test_a_second_job_posts_only_its_own_comment(comment_job: dict[str, Any]) -> None:
    assert comment_job["needs"] == "report"
    assert "cancelled()" in comment_job["if"], "post even when the gate fails"
    steps = comment_job["steps"]
    assert not any(step.get("uses", "").startswith("actions/checkout@") for step in steps), "runs no PR code"
    post = step_running(steps, "gh pr comment")
    assert "--body-file review.md" in post["run"] and "-F body=@review.md" in post["run"]
    assert post["env"]["GH_TOKEN"] == "${{ github.token }}"
    # The filter is fixed text: the bot's own comment, found by the report's marker.
    assert 'select(.user.login == "github-actions[bot]")' in post["run"]
    assert 'startswith("<!-- fashion-pipeline review report -->")' in post["run"]
    assert "$(head" not in post["run"] and "${marker}" not in post["run"]
    from pipeline.commands.report import MARKER

    assert MARKER == "<!-- fashion-pipeline review report -->"


def test_the_report_compares_the_seed_groups_of_head_and_base(report_job: dict[str, Any]) -> None:
    steps = report_job["steps"]
    pull, seeds = step_running(steps, "dvc pull"), step_running(steps, "python -m flows seeds")
    report = step_running(steps, "python -m pipeline report")
    assert "--run-cache" in pull["run"], "the base's group comes back from the run cache"
    assert steps.index(step_running(steps, "dvc repro")) < steps.index(seeds) < steps.index(report)
    assert 'python -m flows seeds --rev "origin/${BASE_REF}"' in seeds["run"]
    assert report_job["env"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_main_pushes_its_seed_group_to_the_run_cache() -> None:
    workflow = yaml.safe_load(BASE_GROUPS.read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"] == {"branches": ["main"]}, "main's own code only, never a pull request's"
    assert workflow["permissions"] == {}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "read"}
    steps = job["steps"]
    seeds, push = step_running(steps, "python -m flows seeds"), step_running(steps, "dvc push --run-cache")
    assert steps.index(step_running(steps, "dvc pull --allow-missing --run-cache")) < steps.index(seeds)
    assert steps.index(seeds) < steps.index(push)
    for step in steps:
        secrets = {name for name, value in step.get("env", {}).items() if "secrets." in value}
        assert not secrets or step in (steps[3], push), step["name"]


def test_report_options_used_by_the_workflow_exist(report_job: dict[str, Any]) -> None:
    command = step_running(report_job["steps"], "python -m pipeline report")["run"]
    used = set(re.findall(r"(--[a-z][a-z-]+)", command.split("python -m pipeline report", 1)[1]))
    help_text = subprocess.run(
        [sys.executable, "-m", "pipeline", "report", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert used and all(option in help_text for option in used), used


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_every_run_script_is_valid_bash(path: Path) -> None:
    for step in all_steps(yaml.safe_load(path.read_text())):
        if "run" in step:
            script = EXPRESSION.sub("EXPRESSION", step["run"])
            result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
            assert result.returncode == 0, f"{step.get('name')}: {result.stderr}"


def required_tool(name: str) -> str:
    """The tool's path; skipped where it is not installed, except in CI, which installs it."""
    command = shutil.which(name)
    if command is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI")
        pytest.skip(f"{name} is not installed")
    return command


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_matches_the_github_workflow_schema(path: Path) -> None:
    """SchemaStore's schema, vendored by check-jsonschema."""
    args = [required_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_zizmor_finds_nothing(path: Path) -> None:
    """zizmor's audit at its strictest persona; an exception needs a justified ignore comment."""
    args = [required_tool("zizmor"), "--offline", "--persona", "auditor", str(path)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout}{result.stderr}"
