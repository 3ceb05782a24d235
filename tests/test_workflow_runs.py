"""The pull-request workflows, run: each job's steps in order, as GitHub's runner runs them, on a tiny
project with a bare git origin and its DVC remote on S3 (moto's server on 127.0.0.1).

``tests/test_workflow.py`` checks ``.github/workflows/*.yml`` as text; here they run, so a step that
breaks fails CI instead of the first real pull request. :class:`Runner` reads a job from its
workflow file and, step by step:

- evaluates ``if:`` (the expressions these workflows use, and only those: another fails the test),
  with GitHub's implied ``success()`` where no status function is named;
- substitutes ``${{ }}`` from the ``github``, ``secrets`` (unset ones are empty, as on GitHub),
  ``steps`` and ``needs`` contexts; an unknown name fails the test;
- runs ``run:`` as ``bash -e`` (GitHub's default shell on Linux) in the job's workspace, with fresh
  ``GITHUB_OUTPUT``, ``GITHUB_ENV`` and ``GITHUB_STEP_SUMMARY`` files, the ``GITHUB_*`` variables and
  nothing else of this process's environment (a runner has no storage credentials, no git identity);
- records each step's outcome (``continue-on-error`` keeps a failure from failing the job) and the
  job's result.

Each action (``uses:``) is replaced by its local equivalent; another action fails the test:

- ``actions/checkout`` (``fetch-depth: 0``): every branch of the origin as ``origin/<branch>`` and
  every tag, then the ref: ``with.ref`` (review.yml asks for the pull request's head) or the event's
  (main for a push; for a pull request GitHub's merge of head into base, ``refs/pull/N/merge``, which
  the test makes in the origin as GitHub does);
- ``actions/setup-python``: a fresh virtual environment first on ``PATH`` whose ``site-packages``
  lists the tests' own (a ``.pth`` line). The install step then finds every pin satisfied and installs
  the project into it, never into the tests' environment;
- ``actions/upload-artifact`` and ``download-artifact``: a folder per artifact;
- and the ``gh`` CLI of GitHub's runner image: a script that records its calls, keeps the body it
  would post, and finds no earlier comment.

Permissions, environments, concurrency and timeouts are GitHub's to enforce; ``test_workflow.py``
checks what the files ask.

Every job reports to the session's Prefect server (``PREFECT_API_URL``): without it each
``python -m flows`` command starts a temporary server of its own, as it does on a real runner.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from test_seed_groups import metric_row

from conftest import REPO_ROOT, SyntheticSource, commit_all, dvc, make_project, run, set_params
from pipeline.commands.report import MARKER
from test_remote import BUCKET, S3_CREDENTIALS, S3Server, s3_running

# A job runs the seed groups of two revisions: minutes, fixture setup included, on 2 cores.
pytestmark = [pytest.mark.integration, pytest.mark.server, pytest.mark.timeout(600)]

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
REPOSITORY = "example/fashion-pipeline"
PR_NUMBER = "7"
# review.seeds, the project's default: with two a side, Welch's t (1 degree of freedom) could call
# even this change's drop seed noise.
SEEDS = 3
CREDENTIALS = {name: S3_CREDENTIALS[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
# What every run's contexts hold: the DVC remote's secrets (its URL and endpoint are committed, so
# those two secrets are unset), and the run's repository, id and token.
RUN_CONTEXT = {
    **{f"secrets.{name}": value for name, value in CREDENTIALS.items()},
    "github.repository": REPOSITORY,
    "github.run_id": "1234",
    "github.token": "ghs_token-of-this-run",
}
# The project's files that the install step needs and the tests' project copy lacks.
INSTALL_FILES = ("pyproject.toml", "README.md", "requirements/runtime.lock", ".gitignore")
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.DOTALL)
COMPARISON = re.compile(r"(?P<name>[\w.-]+|hashFiles\('[^']+'\)) (?P<op>==|!=) '(?P<value>[^']*)'")
HASH_FILES = re.compile(r"hashFiles\('(?P<file>[^']+)'\)")
GH_STUB = """#!{python}
# gh, as far as review.yml calls it: each call's arguments go to {calls} (a JSON list a line); a
# comment's body (--body-file FILE, -F body=@FILE) to {posted}. Listing the comments finds none.
import json, os, shutil, sys

args = sys.argv[1:]
if not os.environ.get("GH_TOKEN"):
    sys.exit("gh: set GH_TOKEN")
with open({calls!r}, "a") as calls:
    calls.write(json.dumps(args) + "\\n")
for flag, value in zip(args, args[1:]):
    if flag == "--body-file" or (flag == "-F" and value.startswith("body=@")):
        shutil.copy(value.removeprefix("body=@"), {posted!r})
"""


# --- The runner ------------------------------------------------------------------------------------


@dataclass
class JobRun:
    """One job of a workflow run: its result (``success``, ``failure`` or ``skipped``), each step's
    outcome, outputs, output and seconds (by ``id``, else name), and its workspace."""

    name: str
    workspace: Path
    result: str = "skipped"
    outcomes: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)  # folders that setup-python put first on PATH
    env: dict[str, str] = field(default_factory=dict)  # what steps wrote to GITHUB_ENV

    def transcript(self, tail: int = 3000) -> str:
        """Each step's outcome and the end of its output: for a failing assertion's message."""
        return "\n".join(
            f"--- {key}: {outcome} ({self.seconds.get(key, 0):.0f} s)\n{self.logs.get(key, '')[-tail:]}"
            for key, outcome in self.outcomes.items()
        )


@dataclass
class Runner:
    """GitHub's runner for one workflow run: jobs' workspaces, artifacts, a home and the ``gh`` stand-in
    under ``root``; ``context``: the ``github.*`` and ``secrets.*`` values by name."""

    origin: Path
    root: Path
    context: dict[str, str]
    prefect_api: str
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        tools, home = self.root / "tools", self.root / "home"
        tools.mkdir(parents=True)
        home.mkdir()
        gh = tools / "gh"
        gh.write_text(
            GH_STUB.format(python=sys.executable, calls=str(self.gh_calls), posted=str(self.posted))
        )
        gh.chmod(0o755)
        github = ("repository", "run_id", "sha", "ref", "event_name", "base_ref", "head_ref")
        self.env = {
            # The image's tools: gh, and this Python's console scripts (dvc); setup-python's Python
            # goes first (JobRun.path).
            "PATH": f"{tools}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_SERVER_URL": "https://github.com",
            **{f"GITHUB_{name.upper()}": self.context.get(f"github.{name}", "") for name in github},
            "PREFECT_API_URL": self.prefect_api,
        }

    @property
    def gh_calls(self) -> Path:
        return self.root / "gh-calls.jsonl"

    @property
    def posted(self) -> Path:
        """The body of the comment the comment job would post."""
        return self.root / "posted-comment.md"

    def calls(self) -> list[list[str]]:
        lines = self.gh_calls.read_text().splitlines() if self.gh_calls.exists() else []
        return [json.loads(line) for line in lines]

    def job(self, workflow: str, name: str, needs: dict[str, JobRun] | None = None) -> JobRun:
        """Run job ``name`` of ``.github/workflows/<workflow>`` after the jobs ``needs`` names."""
        spec = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"][name]
        job = JobRun(name, self.root / f"workspace-{name}")
        job.workspace.mkdir()
        needs = needs or {}
        values = {**self.context, **{f"needs.{need}.result": done.result for need, done in needs.items()}}

        def lookup(expression: str) -> str:
            return self.value_of(expression, values, job.workspace)

        if not holds(spec.get("if"), lookup, failed=any(done.result != "success" for done in needs.values())):
            return job
        job_env = {key: substitute(str(value), lookup) for key, value in spec.get("env", {}).items()}
        failed = False
        for number, step in enumerate(spec["steps"]):
            key = step.get("id", step["name"])
            if not holds(step.get("if"), lookup, failed=failed):
                job.outcomes[key] = "skipped"
                continue
            started = time.monotonic()
            if "uses" in step:
                options = {
                    option: substitute(str(value), lookup) for option, value in step.get("with", {}).items()
                }
                succeeded, job.logs[key] = self.action(step["uses"], options, job)
            else:
                step_env = {
                    name: substitute(str(value), lookup) for name, value in step.get("env", {}).items()
                }
                folder = self.root / "temp" / f"{name}-{number}"
                succeeded, job.logs[key], outputs = self.script(
                    substitute(step["run"], lookup), {**job_env, **step_env}, job, folder
                )
                job.outputs[key] = outputs
                values |= {f"steps.{key}.outputs.{output}": value for output, value in outputs.items()}
            job.seconds[key] = time.monotonic() - started
            job.outcomes[key] = values[f"steps.{key}.outcome"] = "success" if succeeded else "failure"
            failed |= not succeeded and not step.get("continue-on-error", False)
        job.result = "failure" if failed else "success"
        return job

    def value_of(self, expression: str, values: dict[str, str], workspace: Path) -> str:
        """A context value, or ``hashFiles('<file>')`` of the job's workspace: empty for an unset
        secret or step output, as on GitHub; an error for anything these workflows do not use."""
        if match := HASH_FILES.fullmatch(expression):
            path = workspace / match["file"]
            return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        if expression in values:
            return values[expression]
        if expression.startswith("secrets.") or re.fullmatch(r"steps\.[\w-]+\.outputs\.[\w-]+", expression):
            return ""
        raise NotImplementedError(f"${{{{ {expression} }}}} is not modelled by this runner")

    def script(
        self, text: str, env: dict[str, str], job: JobRun, folder: Path
    ) -> tuple[bool, str, dict[str, str]]:
        """A ``run:`` step, as ``bash -e {0}``: whether it exited 0, its output, its outputs."""
        folder.mkdir(parents=True)
        files = {
            name: folder / name.lower() for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_STEP_SUMMARY")
        }
        for path in files.values():
            path.touch()
        script = folder / "script.sh"
        script.write_text(text)
        env = {**self.env, **job.env, **env, "PATH": ":".join([*job.path, self.env["PATH"]])}
        env |= {"GITHUB_WORKSPACE": str(job.workspace), "RUNNER_TEMP": str(folder)}
        env |= {name: str(path) for name, path in files.items()}
        result = subprocess.run(
            ["bash", "-e", str(script)],
            cwd=job.workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        job.env |= pairs(files["GITHUB_ENV"])
        return result.returncode == 0, result.stdout, pairs(files["GITHUB_OUTPUT"])

    def action(self, uses: str, options: dict[str, str], job: JobRun) -> tuple[bool, str]:
        """An action's local equivalent: whether it succeeded, and what it did."""
        action = uses.split("@", 1)[0]
        if action == "actions/checkout":
            return self.checkout(options, job.workspace)
        if action == "actions/setup-python":
            return self.setup_python(job)
        if action == "actions/upload-artifact":
            return self.upload_artifact(options, job.workspace)
        if action == "actions/download-artifact":
            return self.download_artifact(options, job.workspace)
        raise NotImplementedError(f"{uses}: no local equivalent")

    def checkout(self, options: dict[str, str], workspace: Path) -> tuple[bool, str]:
        """As actions/checkout with ``fetch-depth: 0``: every branch and tag, then the ref (a branch
        as a local branch; a commit or another ref detached)."""
        if options.get("fetch-depth") != "0":
            raise NotImplementedError("a shallow checkout is not modelled")

        def git(*args: str) -> None:
            run("git", *args, cwd=workspace)

        git("init", "-q")
        git("remote", "add", "origin", str(self.origin))
        git("fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
        ref = options.get("ref") or self.context["github.ref"]
        git("fetch", "-q", "origin", ref)
        if ref.startswith("refs/heads/"):
            git("checkout", "-q", "-B", ref.removeprefix("refs/heads/"), "FETCH_HEAD")
        else:
            git("-c", "advice.detachedHead=false", "checkout", "-q", "--detach", "FETCH_HEAD")
        return True, f"checked out {ref}"

    def setup_python(self, job: JobRun) -> tuple[bool, str]:
        """A fresh Python first on PATH: a virtual environment on top of the tests' packages."""
        venv = self.root / f"python-{job.name}"
        run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=self.root)
        (site,) = (venv / "lib").glob("python*/site-packages")
        (site / "tests-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        job.path.insert(0, str(venv / "bin"))
        return True, f"python in {venv}"

    def upload_artifact(self, options: dict[str, str], workspace: Path) -> tuple[bool, str]:
        artifact = self.root / "artifacts" / options["name"]
        found = [line for line in options["path"].split() if (workspace / line).exists()]
        for line in found:
            if (workspace / line).is_dir():
                shutil.copytree(workspace / line, artifact / line, dirs_exist_ok=True)
            else:
                (artifact / line).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(workspace / line, artifact / line)
        return bool(found) or options.get("if-no-files-found") != "error", f"uploaded {found}"

    def download_artifact(self, options: dict[str, str], workspace: Path) -> tuple[bool, str]:
        artifact = self.root / "artifacts" / options["name"]
        if not artifact.is_dir():
            return False, f"no artifact {options['name']!r}"
        shutil.copytree(artifact, workspace / options.get("path", ""), dirs_exist_ok=True)
        return True, f"downloaded {options['name']}"


def substitute(text: str, lookup: Callable[[str], str]) -> str:
    return EXPRESSION.sub(lambda match: lookup(match[1]), text)


def holds(condition: str | None, lookup: Callable[[str], str], *, failed: bool) -> bool:
    """An ``if:`` of ``!cancelled()`` and comparisons with a quoted string joined by ``&&``. Without
    a status function GitHub implies ``success()``: nothing before has failed. Nothing is cancelled here."""
    if condition is None:
        return not failed
    match = EXPRESSION.fullmatch(condition.strip())
    status_checked, result = False, True
    for term in (match[1] if match else condition).split("&&"):
        term = term.strip()
        if term == "!cancelled()":
            status_checked = True
        elif comparison := COMPARISON.fullmatch(term):
            equal = lookup(comparison["name"]) == comparison["value"]
            result &= equal == (comparison["op"] == "==")
        else:
            raise NotImplementedError(f"if: {condition!r}: {term!r} is not modelled by this runner")
    return result and (status_checked or not failed)


def pairs(path: Path) -> dict[str, str]:
    """The ``name=value`` lines of a ``GITHUB_OUTPUT`` or ``GITHUB_ENV`` file."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


# --- The scenario ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repository:
    """A developer's clone (``checkout``) of a project whose git origin is ``origin`` (bare) and whose
    default DVC remote is on moto's S3; main holds a committed run, pushed to both."""

    checkout: Path
    origin: Path


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto's S3 with an empty bucket; its credentials in this process's environment (the developer's),
    never in a job's."""
    with s3_running() as server:
        yield server


@pytest.fixture(scope="module")
def repository(
    tmp_path_factory: pytest.TempPathFactory,
    synthetic_source: SyntheticSource,
    shared_dvc_cache: Path,
    s3: S3Server,
) -> Repository:
    """main: tiny params with a group of :data:`SEEDS` seeds and a gate on the test accuracy's drop,
    the DVC remote committed (``dvc remote add -d``, its endpoint too, as the README shows), a run,
    pushed with its run cache."""
    root = tmp_path_factory.mktemp("workflow-runs")
    checkout = make_project(root / "project", synthetic_source, cache=shared_dvc_cache)
    for name in INSTALL_FILES:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, checkout / name)
    origin = root / "origin.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=root)
    run("git", "remote", "add", "origin", str(origin), cwd=checkout)
    dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/{uuid.uuid4().hex}", cwd=checkout)
    dvc("remote", "modify", "storage", "endpointurl", s3.endpoint, cwd=checkout)
    set_params(checkout, {"review.seeds": SEEDS, "review.max_test_accuracy_drop": 0.05})
    dvc("repro", cwd=checkout)
    dvc("push", "--run-cache", cwd=checkout)
    commit_all(checkout, "main: a run, the DVC remote, the review's group and gate")
    run("git", "push", "-q", "origin", "main", cwd=checkout)
    return Repository(checkout, origin)


def head(checkout: Path, rev: str = "HEAD") -> str:
    return run("git", "rev-parse", rev, cwd=checkout).stdout.strip()


@pytest.fixture(scope="module")
def base_groups(repository: Repository, prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> JobRun:
    """base-groups.yml's job, run for a push to main."""
    context = {
        **RUN_CONTEXT,
        "github.event_name": "push",
        "github.ref": "refs/heads/main",
        "github.sha": head(repository.checkout, "main"),
    }
    runner = Runner(repository.origin, tmp_path_factory.mktemp("base-groups-run"), context, prefect_api)
    return runner.job("base-groups.yml", "seeds")


def test_base_groups_leaves_mains_seed_group_in_the_remotes_run_cache(
    repository: Repository, base_groups: JobRun, tmp_path: Path
) -> None:
    assert base_groups.result == "success", base_groups.transcript()
    assert set(base_groups.outcomes.values()) == {"success"}
    assert "::warning::" not in "".join(base_groups.logs.values()), base_groups.transcript()

    # The remote's run cache holds a train run of every seed of main's group: what the review
    # workflow's `dvc pull --run-cache` brings back instead of training.
    first = yaml.safe_load((repository.checkout / "params.yaml").read_text())["train"]["seed"]
    assert set(range(first, first + SEEDS)) <= remote_train_seeds(repository.checkout)


def remote_train_seeds(checkout: Path) -> set[int]:
    """The ``train.seed`` of every train-stage entry in the run cache of ``checkout``'s DVC remote."""
    import boto3

    prefix = re.search(rf"url = s3://{BUCKET}/(\S+)", (checkout / ".dvc" / "config").read_text())[1]
    endpoint = re.search(r"endpointurl = (\S+)", (checkout / ".dvc" / "config").read_text())[1]
    s3 = boto3.client("s3", endpoint_url=endpoint)
    seeds = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/runs/"):
        for item in page.get("Contents", []):
            entry = yaml.safe_load(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
            if entry.get("cmd") == "python -m pipeline.stages.train":
                seeds.add(entry["params"]["params.yaml"]["train"]["seed"])
    return seeds


def test_a_pull_request_that_drops_accuracy_gets_the_report_and_fails_the_gate(
    repository: Repository, base_groups: JobRun, prefect_api: str, tmp_path: Path
) -> None:
    assert base_groups.result == "success", base_groups.transcript()
    checkout = repository.checkout
    # The author's change, run, committed and pushed ("push what you commit": docs/reviewing.md).
    run("git", "checkout", "-q", "-b", "lower-accuracy", cwd=checkout)
    set_params(checkout, {"train.epochs": 1, "train.learning_rate": 1e-5})
    dvc("repro", cwd=checkout)
    dvc("push", cwd=checkout)
    commit_all(checkout, "a learning rate too small")
    run("git", "push", "-q", "origin", "lower-accuracy", cwd=checkout)
    # GitHub's merge of head into base, refs/pull/N/merge: the pull request's ref and sha.
    sha = head(checkout)
    merge = run(
        "git", "commit-tree", "HEAD^{tree}", "-p", "main", "-p", "HEAD", "-m", "Merge", cwd=checkout
    ).stdout.strip()
    run("git", "push", "-q", "origin", f"{merge}:refs/pull/{PR_NUMBER}/merge", cwd=checkout)
    context = {
        **RUN_CONTEXT,
        "github.event_name": "pull_request",
        "github.ref": f"refs/pull/{PR_NUMBER}/merge",
        "github.sha": merge,
        "github.base_ref": "main",
        "github.head_ref": "lower-accuracy",
        "github.event.pull_request.head.sha": sha,
        "github.event.pull_request.number": PR_NUMBER,
    }
    runner = Runner(repository.origin, tmp_path / "review-run", context, prefect_api)

    report = runner.job("review.yml", "report")
    gate = "Fail on a regression or a missing base"
    assert report.result == "failure", report.transcript()
    assert report.outcomes[gate] == "failure", report.transcript()
    assert {key for key, outcome in report.outcomes.items() if outcome != "success"} == {gate}
    assert report.outputs["report"] == {"exit": "1"}, "the gate's exit code"
    logs = "".join(report.logs.values())
    assert "::warning::" not in logs, report.transcript()  # no step fell back: the pull, the groups
    assert "::error::python -m pipeline report exited 1" in report.logs[gate]

    text = (report.workspace / "review.md").read_text()
    assert text.startswith(MARKER + "\n")
    assert f"Seed groups: base {SEEDS} seeds" in text and f"new {SEEDS} seeds" in text, text
    assert metric_row(text, "test.accuracy")[-1].strip("*") == "worse", text
    assert "**Regression gate failed:**" in text and "review.max_test_accuracy_drop" in text, text
    assert f"](https://github.com/{REPOSITORY}/raw/{sha}/reports/" in text, "PNG links to the head's files"
    assert f"[this run](https://github.com/{REPOSITORY}/actions/runs/1234)" in text

    comment = runner.job("review.yml", "comment", needs={"report": report})
    assert comment.result == "success", comment.transcript()
    assert set(comment.outcomes.values()) == {"success"}, comment.transcript()
    assert (comment.workspace / "review-plots").is_dir(), "the plots came with the report"
    listing, post = runner.calls()
    assert listing[:3] == ["api", f"repos/{REPOSITORY}/issues/{PR_NUMBER}/comments", "--paginate"]
    assert post == ["pr", "comment", PR_NUMBER, "--repo", REPOSITORY, "--body-file", "review.md"]
    assert runner.posted.read_text() == text
