"""Integration: the deployment in ``prefect.yaml`` on a real Prefect server, run by a real process worker.

Everything goes through the commands the README gives (``prefect server start``, ``prefect work-pool
create``, ``prefect deploy``, ``prefect worker start``, ``prefect deployment run``), each in its own
process with its own ``PREFECT_HOME``; the test reads the results back over the server's REST API.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from conftest import (
    REPO_ROOT,
    PrefectServer,
    commit_all,
    run,
    set_params,
    snapshot,
    start_elsewhere,
    stop_process_group,
    unshare_works,
    worker_env,
)
from flows.workspace import RUNS_DIR

pytestmark = [pytest.mark.integration, pytest.mark.server]

POOL = "fashion-pipeline"
DEPLOYMENT = "fashion-pipeline/nightly"
SWEEP_DEPLOYMENT = "fashion-sweep/sweep"
RUN_TIMEOUT_S = 300
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_for_final_state(server: PrefectServer, flow_run_id: str, worker: subprocess.Popen[bytes]) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        flow_run = server.api("GET", f"/flow_runs/{flow_run_id}").json()
        if flow_run["state"]["type"] in FINAL_STATES:
            return flow_run
        if worker.poll() is not None:
            pytest.fail(f"the worker exited {worker.returncode}\n{server.log_tail('worker')}")
        time.sleep(2)
    pytest.fail(f"flow run not finished after {RUN_TIMEOUT_S} s\n{server.log_tail('worker')}")


def test_deployments_from_prefect_yaml_run_from_git_on_a_process_worker_elsewhere(
    project: Path, prefect_server: PrefectServer, installed_site: Path
) -> None:
    if not unshare_works():
        pytest.skip("the kernel refuses unshare --mount here: no worker can hide this machine's files")
    origin = project.parent / "origin.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=project.parent)
    run("git", "remote", "add", "origin", str(origin), cwd=project)
    run(
        sys.executable,
        "-m",
        "dvc",
        "remote",
        "add",
        "-d",
        "storage",
        str(project.parent / "dvc-remote"),
        cwd=project,
    )
    set_params(project, {"review.seeds": 2})  # the nightly's promotion runs groups of 2
    commit_all(project, "a DVC remote")
    run("git", "push", "-q", "origin", "main", cwd=project)

    prefect_server.prefect("work-pool", "create", POOL, "--type", "process", cwd=project)
    deployed = prefect_server.prefect("--no-prompt", "deploy", "--all", cwd=project)
    assert f"Deployment '{DEPLOYMENT}' successfully created" in deployed.stdout, deployed.stdout
    sweep = prefect_server.api("GET", f"/deployments/name/{SWEEP_DEPLOYMENT}").json()
    assert sweep["parameters"]["rev"] == "main" and sweep["parameters"]["source"] == str(origin)
    assert {"grid", "workers", "dask_address"} <= set(sweep["parameters"])

    deployment = prefect_server.api("GET", f"/deployments/name/{DEPLOYMENT}").json()
    assert [schedule["schedule"]["cron"] for schedule in deployment["schedules"]] == ["0 2 * * *"]
    assert deployment["work_pool_name"] == POOL
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    # Runs of the branch's latest commit, from git: nothing of the deploying checkout is needed.
    assert deployment["parameters"] == {
        "source": str(origin),
        "rev": "main",
        "overrides": {},
        "push": True,
        "project_dir": None,
        "promote_to": "staging",
    }
    assert deployment["pull_steps"][0]["prefect.deployments.steps.git_clone"]["repository"] == str(origin)

    before = snapshot(project)
    elsewhere = project.parent / "worker"
    elsewhere.mkdir()
    # The worker is "on another machine": its own mount namespace without this checkout or the
    # project, a clean environment and HOME, the project installed non-editable, git and the DVC
    # remote reached only through their URLs.
    env = worker_env(elsewhere, installed_site, prefect_server.api_url) | {
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "3",
    }
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL]
    hidden = [REPO_ROOT, project]
    worker = start_elsewhere(
        command, hidden=hidden, env=env, cwd=elsewhere, log=prefect_server.logs / "worker.log"
    )
    try:
        # Two runs at once: the deployment's concurrency limit makes the second wait for the first.
        plain = trigger(prefect_server, elsewhere)
        override = trigger(  # (its promotion off: the first run's shows the nightly's)
            prefect_server,
            elsewhere,
            DEPLOYMENT,
            "--param",
            'overrides={"train.epochs": 1}',
            "--param",
            "promote_to=null",
        )
        runs = {run_id: wait_for_final_state(prefect_server, run_id, worker) for run_id in (plain, override)}
        # The sweep deployment: two trials on a local Dask cluster of two worker processes.
        sweep_run = trigger(
            prefect_server,
            elsewhere,
            SWEEP_DEPLOYMENT,
            "--param",
            'grid=["train.epochs=1,2"]',
            "--param",
            "workers=2",
        )
        swept = wait_for_final_state(prefect_server, sweep_run, worker)
    finally:
        stop_process_group(worker)

    for flow_run in runs.values():
        assert flow_run["state"]["type"] == "COMPLETED", (
            f"{flow_run['state']}\n{prefect_server.log_tail('worker', 120)}"
        )
    first, second = sorted(runs.values(), key=lambda flow_run: flow_run["start_time"])
    assert datetime.fromisoformat(first["end_time"]) <= datetime.fromisoformat(second["start_time"])
    stages = ("ingest", "preprocess", "train", "evaluate")
    # one task per stage (the promotion's seed group adds its trials' tasks)
    assert [task_state_names(prefect_server, first["id"]).get(name) for name in stages] == ["Completed"] * 4
    # The second run's split comes from DVC's run cache: the worker's cache, shared by its runs.
    assert "Cached" in task_state_names(prefect_server, second["id"]).values()
    assert swept["state"]["type"] == "COMPLETED", (
        f"{swept['state']}\n{prefect_server.log_tail('worker', 120)}"
    )

    # The checkout is as it was; the runs came back through the remotes, as DVC experiments.
    assert snapshot(project) == before
    assert not (project / RUNS_DIR).exists()
    dvc_exp = [sys.executable, "-m", "dvc", "exp"]
    run(*dvc_exp, "pull", "--all-commits", "origin", cwd=project)
    recorded = json.loads(run(*dvc_exp, "show", "--json", cwd=project).stdout)
    epochs = sorted(
        revision["data"]["params"]["params.yaml"]["data"]["train"]["epochs"]
        for row in recorded
        for experiment in row.get("experiments") or []
        for revision in experiment["revs"]
    )
    assert epochs == [1, 1, 2, 3]  # the two runs, then the sweep's two trials
    metrics = prefect_server.api(
        "POST",
        "/artifacts/filter",
        json={
            "artifacts": {"key": {"any_": ["fashion-metrics"]}},
            "flow_runs": {"id": {"any_": [override]}},
        },
    ).json()
    assert len(metrics) == 1 and "| test.accuracy |" in metrics[0]["data"]
    # The first run gave staging its first version, its tags went to the git remote, and its
    # promotion artifact says what it decided and why.
    remote_tags = run("git", "ls-remote", "--tags", str(origin), cwd=project).stdout
    assert "refs/tags/fashion-classifier@v0.0.1" in remote_tags
    assert "refs/tags/fashion-classifier#staging#1" in remote_tags
    decisions = prefect_server.api(
        "POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": ["fashion-promotion"]}}}
    ).json()
    texts = [artifact["data"] for artifact in decisions]
    assert any("staging assigned" in text and "without a comparison" in text for text in texts), texts


def trigger(server: PrefectServer, cwd: Path, deployment: str = DEPLOYMENT, *args: str) -> str:
    """``prefect deployment run``: the new flow run's id."""
    output = server.prefect("deployment", "run", deployment, *args, cwd=cwd).stdout
    return re.search(r"UUID: ([0-9a-f-]{36})", output).group(1)


def task_state_names(server: PrefectServer, flow_run_id: str) -> dict[str, str]:
    """Each task run's state name, by task run name."""
    task_runs = server.api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return {run["name"]: run["state"]["name"] for run in task_runs.json()}


def test_flows_schedule_serves_the_branch_on_its_cron_and_serve_is_its_deprecated_alias(
    project: Path, prefect_server: PrefectServer
) -> None:
    """``python -m flows schedule`` (Prefect's ``flow.serve``): a deployment of the checkout's branch
    on the cron asked for, until stopped; ``serve``, its old name, does the same and says so."""
    for command, name in (("schedule", "nightly-here"), ("serve", "old-name")):
        log = prefect_server.logs / f"flows-{command}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "flows", command, "--cron", "30 3 * * *", "--name", name],
                cwd=project,
                env=prefect_server.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 120
            url = f"{prefect_server.api_url}/deployments/name/fashion-pipeline/{name}"
            while (found := httpx.get(url, timeout=30)).status_code == 404:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        finally:
            stop_process_group(process)
        found.raise_for_status()
        deployment = found.json()
        assert [schedule["schedule"]["cron"] for schedule in deployment["schedules"]] == ["30 3 * * *"]
        assert deployment["parameters"]["rev"] == "main"
        assert deployment["parameters"]["project_dir"] == str(project)
        deprecated = "python -m flows serve is deprecated: use python -m flows schedule"
        assert (deprecated in log.read_text()) == (command == "serve"), log.read_text()
