"""Data and models through a DVC remote: a flow run pushes what it produced, a fresh clone pulls it.

Two real remotes: a local directory, and S3 served over HTTP on 127.0.0.1 by moto's server, reached
through ``dvc-s3``. The project also gets a bare git ``origin``, where ``dvc exp push`` sends the run's
experiment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from conftest import commit_all, dvc, experiments, free_port, ran_stages, run, stage_outputs
from flows.pipeline_flow import fashion_pipeline
from test_flow import STAGES, log_messages

pytestmark = [pytest.mark.integration, pytest.mark.server]

BUCKET = "fashion-pipeline"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    """moto's S3 API on a fixed free port of 127.0.0.1, with an empty bucket; stopped and started again
    at will (its storage starts empty each time)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextmanager
def s3_running() -> Iterator[S3Server]:
    """moto's S3 with an empty bucket, its credentials in this process's environment while it runs."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in S3_CREDENTIALS.items():
            patch.setenv(name, value)
        server = S3Server()
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    """An S3 API with an empty bucket; credentials in the environment."""
    with s3_running() as server:
        yield server


def add_remote(
    project: Path, kind: str, request: pytest.FixtureRequest | None, endpoint: str | None = None
) -> None:
    """``dvc remote add -d storage ...`` as the README shows, committed with the project."""
    if kind == "local":
        dvc("remote", "add", "-d", "storage", str(project.parent / "dvc-remote"), cwd=project)
    else:
        endpoint = endpoint or request.getfixturevalue("s3_server").endpoint
        dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/store", cwd=project)
        dvc("remote", "modify", "storage", "endpointurl", endpoint, cwd=project)


def with_origin(project: Path) -> Path:
    origin = project.parent / "origin.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=project.parent)
    run("git", "remote", "add", "origin", str(origin), cwd=project)
    return origin


def pushed_experiments(origin: Path) -> list[str]:
    refs = run("git", "ls-remote", str(origin), "refs/exps/*", cwd=origin).stdout
    return [line.rsplit("/", 1)[1] for line in refs.splitlines()]


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_run_pushes_only_when_asked_and_a_fresh_clone_pulls_what_it_pushed(
    project: Path, prefect_api: str, request: pytest.FixtureRequest, kind: str
) -> None:
    origin = with_origin(project)
    add_remote(project, kind, request)
    commit_all(project, "a DVC remote")

    quiet = fashion_pipeline(project_dir=str(project), overrides={"train.epochs": 1}, return_state=True)
    assert quiet.is_completed(), quiet.message
    assert pushed_experiments(origin) == []  # as dvc exp run: nothing leaves without --push

    state = fashion_pipeline(project_dir=str(project), push=True, return_state=True)
    assert state.is_completed(), state.message
    experiment = state.result()["experiment"]
    assert pushed_experiments(origin) == [experiment]
    dvc("exp", "apply", experiment, cwd=project)
    commit_all(project, "the run's dvc.lock and reports")
    run("git", "push", "-q", "origin", "main", cwd=project)

    clone = project.parent / "fresh-clone"
    run("git", "clone", "-q", str(origin), str(clone), cwd=project.parent)
    dvc("pull", cwd=clone)
    for output in stage_outputs(clone):
        assert output.is_file(), output
    repro = dvc("repro", cwd=clone)
    assert ran_stages(repro.stdout) == set(), repro.stdout
    assert json.loads(dvc("status", "--json", cwd=clone).stdout) == {}


def test_a_fresh_clone_runs_what_its_cache_lacks_from_the_remote_and_says_so_in_one_line(
    project: Path, prefect_api: str
) -> None:
    origin = with_origin(project)
    add_remote(project, "local", None)
    dvc("repro", cwd=project)
    dvc("push", "--run-cache", cwd=project)
    commit_all(project, "a run")
    run("git", "push", "-q", "origin", "main", cwd=project)
    clone = project.parent / "fresh-clone"
    run("git", "clone", "-q", str(origin), str(clone), cwd=project.parent)

    state = fashion_pipeline(project_dir=str(clone), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["stages"] == dict.fromkeys(STAGES, "skipped")  # all pulled, nothing retrained
    logs = log_messages(state)
    everything = "data/processed, data/raw, models/best-model.h5, models/model.keras"
    assert f"pulled from DVC remote 'storage': {everything}" in logs
    assert "\x1b[" not in logs and "Is your cache up to date" not in logs

    dvc("remote", "remove", "storage", cwd=clone)  # uncommitted: the next run has no remote
    shutil.rmtree(clone / ".dvc" / "cache")
    state = fashion_pipeline(project_dir=str(clone), return_state=True)
    assert state.is_completed(), state.message
    assert (
        "not in the DVC cache (no DVC remote is set), so their stages rebuild them: "
        "data/processed, data/raw, models/best-model.h5, models/model.keras" in log_messages(state)
    )


def test_a_push_that_fails_keeps_the_result_and_says_how_to_push_it_later(
    project: Path, prefect_api: str, s3_server: ThreadedMotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore tries a dead endpoint once, not 5 times with back-off per file (a minute of waiting)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    origin = with_origin(project)
    add_remote(project, "s3", None, endpoint=s3_server.endpoint)
    commit_all(project, "an S3 remote")
    s3_server.stop()  # the storage goes away before the run pushes

    state = fashion_pipeline(project_dir=str(project), push=True, return_state=True)
    assert state.is_failed()
    message = " ".join(state.message.split())
    assert "pushing the results failed: " in message and "The run is kept in " in message
    assert "Traceback" not in message
    kept = Path(message.split("The run is kept in ")[1].split(" as experiment")[0])
    experiment = message.split(" as experiment ")[1].split(";")[0]
    assert (kept / "dvc.lock").is_file()
    assert experiment in experiments(project)  # recorded in the project even so
    assert pushed_experiments(origin) == []

    s3_server.start()  # the storage is back: the commands of the message finish the job
    commands = message.split("push it once the remote is reachable: ")[1]
    result = subprocess.run(commands, shell=True, capture_output=True, text=True, cwd=project)
    assert result.returncode == 0, result.stderr
    assert pushed_experiments(origin) == [experiment]


def test_an_experiment_push_that_dulwich_fails_to_close_is_tried_again(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dulwich sometimes raises BufferError closing the pack a local push wrote, before any ref moved."""
    import logging

    from dvc.repo.experiments import Experiments

    from flows import workspace

    dvc("repro", cwd=project)
    experiment = workspace.record_experiment(project, "a run")
    target = tmp_path / "target"
    run("git", "init", "-q", "--bare", str(target), cwd=tmp_path)
    real_push, calls = Experiments.push, []

    def flaky_push(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise BufferError("cannot close exported pointers exist")
        return real_push(self, *args, **kwargs)

    monkeypatch.setattr(Experiments, "push", flaky_push)
    workspace.push_results(project, experiment, str(target), logging.getLogger("test"))
    assert len(calls) == 2
    refs = run("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=target).stdout
    assert refs.strip().endswith(f"/{experiment}")
