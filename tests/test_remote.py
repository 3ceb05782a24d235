"""Data and models through a DVC remote: a flow run pushes what it produced, a fresh clone pulls it.

Two real remotes: a local directory, and S3 served over HTTP on 127.0.0.1 by moto's server, reached
through ``dvc-s3``. The project also gets a bare git ``origin``, where ``dvc exp push`` sends the run's
experiment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from conftest import commit_all, dvc, ran_stages, run, stage_outputs
from flows.pipeline_flow import fashion_pipeline

pytestmark = pytest.mark.integration

BUCKET = "fashion-pipeline"


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An S3 API on a free port of 127.0.0.1 with an empty bucket; credentials in the environment."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def add_remote(project: Path, kind: str, request: pytest.FixtureRequest) -> None:
    """``dvc remote add -d storage ...`` as the README shows, committed with the project."""
    if kind == "local":
        dvc("remote", "add", "-d", "storage", str(project.parent / "dvc-remote"), cwd=project)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/store", cwd=project)
        dvc("remote", "modify", "storage", "endpointurl", endpoint, cwd=project)


@pytest.mark.parametrize(("kind", "isolated"), [("local", False), ("s3", True)])
def test_a_run_pushes_its_results_and_a_fresh_clone_pulls_them(
    project: Path, prefect_api: str, request: pytest.FixtureRequest, kind: str, isolated: bool
) -> None:
    origin = project.parent / "origin.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=project.parent)
    run("git", "remote", "add", "origin", str(origin), cwd=project)
    add_remote(project, kind, request)
    commit_all(project, "a DVC remote")

    state = fashion_pipeline(project_dir=str(project), isolated=isolated, return_state=True)
    assert state.is_completed(), state.message
    experiment = state.result()["experiment"]
    pushed = run("git", "ls-remote", str(origin), "refs/exps/*", cwd=project).stdout
    assert pushed.rstrip().endswith(f"/{experiment}"), pushed  # dvc exp push reached the git remote

    if isolated:  # the run happened elsewhere: bring its result into the checkout, as a user would
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


@pytest.mark.integration
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
    workspace.push_results(project, experiment, [str(target)], logging.getLogger("test"))
    assert len(calls) == 2
    refs = run("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=target).stdout
    assert refs.strip().endswith(f"/{experiment}")
