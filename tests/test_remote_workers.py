"""Sweeps on Dask workers that do not share this machine's files, as on a real cluster.

Each worker is a process in a mount namespace of its own (``unshare --mount``) with tmpfs over this
checkout and the test's project, a clean environment (``env -i``) and a HOME of its own without a git
identity, and the project installed non-editable into a folder of its own. The git source is served
by ``git daemon`` on 127.0.0.1 and the DVC remote is moto's S3 on 127.0.0.1: the only ways in.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from conftest import (
    REPO_ROOT,
    commit_all,
    dvc,
    experiments,
    free_port,
    run,
    start_elsewhere,
    stop_process_group,
    unshare_works,
    worker_env,
)
from flows.workspace import remove_abandoned
from test_remote import BUCKET, S3_CREDENTIALS, S3Server, s3_running

pytestmark = [pytest.mark.integration, pytest.mark.server]

START_TIMEOUT_S = 120


def wait_for(condition, what: str, timeout: float = START_TIMEOUT_S, processes: list | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes or []:
            if process.poll() is not None:
                pytest.fail(f"{process.args} exited {process.returncode} before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.2)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Cluster:
    """A Dask scheduler here, and workers "on other machines"."""

    scheduler: str
    hidden: list[Path]
    env: dict[str, str]
    root: Path
    site: Path  # the project installed non-editable
    processes: list[subprocess.Popen]

    def add_worker(self, name: str, *, installed: bool = True) -> Path:
        """A worker in a mount namespace of its own; its HOME. ``installed``: with the project installed
        non-editable (else only this machine's editable install, which points into a hidden checkout)."""
        home = self.root / name / "home"
        home.mkdir(parents=True)
        env = worker_env(home, self.site, self.env["PREFECT_API_URL"]) | S3_CREDENTIALS
        if not installed:
            del env["PYTHONPATH"]
        command = [sys.executable, "-m", "distributed.cli.dask_worker", self.scheduler, "--nthreads", "1"]
        command += ["--name", name, "--no-dashboard"]
        log = self.root / f"{name}.log"
        process = start_elsewhere(command, hidden=self.hidden, env=env, cwd=home, log=log)
        self.processes.append(process)
        wait_for(
            lambda: "Registered to:" in log.read_text(),
            f"{name} joins",
            processes=[process],
        )
        return home


@dataclass
class Served:
    """What a module's tests share: moto's S3 API, ``git daemon`` over a folder of bare repositories,
    a Dask scheduler, and the project installed non-editable, as every worker imports it."""

    s3: S3Server
    folder: Path
    git_port: int
    scheduler: str
    site: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, installed_site: Path) -> Iterator[Served]:
    if not unshare_works():
        pytest.skip("the kernel refuses unshare --mount here: no worker can hide this machine's files")
    processes: list[subprocess.Popen] = []
    with s3_running() as s3:
        try:
            folder = tmp_path_factory.mktemp("served")
            git_port, scheduler_port = free_port(), free_port()
            git_daemon = [
                "git",
                "daemon",
                "--reuseaddr",
                f"--base-path={folder}",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                f"--port={git_port}",
                str(folder),
            ]
            scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
            scheduler += ["--port", str(scheduler_port), "--no-dashboard"]
            for command in (git_daemon, scheduler):
                processes.append(
                    subprocess.Popen(
                        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
                    )
                )
            wait_for(lambda: listening(git_port), "git daemon listens")
            wait_for(lambda: listening(scheduler_port), "the Dask scheduler listens")
            yield Served(s3, folder, git_port, f"tcp://127.0.0.1:{scheduler_port}", installed_site)
        finally:
            for process in reversed(processes):
                stop_process_group(process)


@pytest.fixture
def remote(
    tmp_path: Path, project: Path, prefect_api: str, served: Served
) -> Iterator[tuple[Path, str, Cluster]]:
    """The project with a git ``origin`` of its own served by git daemon and an S3 DVC remote (a
    folder of its own in the bucket) holding its data; the git URL; the module's Dask scheduler, to
    add this test's workers to (they stop with the test). The S3 credentials are in the environment
    while ``served`` runs."""
    origin = served.folder / f"{tmp_path.name}.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=served.folder)
    url = f"git://127.0.0.1:{served.git_port}/{origin.name}"
    run("git", "remote", "add", "origin", url, cwd=project)
    dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/{tmp_path.name}", cwd=project)
    dvc("remote", "modify", "storage", "endpointurl", served.s3.endpoint, cwd=project)
    dvc("repro", cwd=project)
    dvc("push", "--run-cache", cwd=project)
    commit_all(project, "a run, its data in S3")
    run("git", "push", "-q", "origin", "main", cwd=project)
    processes: list[subprocess.Popen] = []
    env = {"PREFECT_API_URL": prefect_api}
    cluster = Cluster(
        served.scheduler, [*checkouts(), project, served.folder], env, tmp_path, served.site, processes
    )
    try:
        yield project, url, cluster
    finally:
        for process in reversed(processes):
            stop_process_group(process)


def checkouts() -> list[Path]:
    """This checkout, and the one this environment's editable install points at (another, when the
    tests run from a clone): a worker "elsewhere" sees neither."""
    editable = run(sys.executable, "-c", "import flows; print(flows.__file__)", cwd=Path("/")).stdout
    return sorted({REPO_ROOT, Path(editable.strip()).parents[1]})


def sweep(project: Path, url: str, cluster: Cluster, *grid: str, wait: bool = True):
    command = [sys.executable, "-m", "flows", "sweep", "--dask-address", cluster.scheduler, "--source", url]
    for item in grid:
        command += ["-S", item]
    env = {**os.environ, "PREFECT_API_URL": cluster.env["PREFECT_API_URL"]}
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not wait:
        return process
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def task_run_names(since: datetime) -> set[str]:
    """The names of the task runs the session's Prefect server saw start after ``since``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    started = TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since))
    with get_client(sync_client=True) as client:
        return {task_run.name for task_run in client.read_task_runs(task_run_filter=started)}


def remote_experiments(project: Path) -> list[str]:
    refs = run("git", "ls-remote", "origin", "refs/exps/*", cwd=project).stdout
    return [line.rsplit("/", 1)[1] for line in refs.splitlines()]


def trial_workspaces(homes: list[Path]) -> list[Path]:
    return [
        path for home in homes for path in (home / ".cache/fashion-pipeline/runs").glob("*") if path.is_dir()
    ]


def test_a_sweep_on_workers_without_the_checkout_records_its_trials_in_the_project(remote) -> None:
    project, url, cluster = remote
    homes = [cluster.add_worker("worker-1"), cluster.add_worker("worker-2")]
    since = datetime.now(UTC)
    code, output = sweep(project, url, cluster, "train.epochs=1,2")
    assert code == 0, output
    assert "2 Dask worker(s) at" in output
    # One line per trial event, each labelled by its trial; no cluster chatter, no useless timeouts.
    assert "distributed." not in output and "Timeout of" not in output
    assert {"trial 1 train", "trial 2 train"} <= task_run_names(since)  # labelled in the UI by trial

    recorded = experiments(project)
    assert len(recorded) == 2 and sorted(remote_experiments(project)) == sorted(recorded)
    assert sorted(experiment["params"]["train"]["epochs"] for experiment in recorded.values()) == [1, 2]
    best = min(recorded, key=lambda name: -recorded[name]["metrics"]["val"]["accuracy"])
    dvc("exp", "apply", best, cwd=project)
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}
    assert trial_workspaces(homes) == []  # the workers cleaned up
    # Each worker fetched the data once into its own cache, which the next run there reuses.
    for home in homes:
        assert (home / ".cache/fashion-pipeline/dvc-cache/files").is_dir()


def test_a_worker_that_cannot_import_the_project_fails_the_sweep_in_one_line(remote) -> None:
    project, url, cluster = remote
    cluster.add_worker("worker-1")
    cluster.add_worker("editable-only", installed=False)
    started = time.monotonic()
    code, output = sweep(project, url, cluster, "train.epochs=1,2")
    assert code != 0
    assert time.monotonic() - started < 120, output  # no hang
    line = next(line for line in output.splitlines() if "no trial started" in line)
    problems = line.split("no trial started: ")[1]
    assert problems.startswith("worker editable-only (tcp://127.0.0.1:")
    assert "cannot import the project (ModuleNotFoundError: No module named 'flows')" in problems
    assert "worker-1" not in problems  # the worker that has everything is not named
    assert remote_experiments(project) == []


def test_a_cancelled_sweep_stops_its_remote_trials_and_pushes_nothing(remote) -> None:
    project, url, cluster = remote
    homes = [cluster.add_worker("worker-1"), cluster.add_worker("worker-2")]
    process = sweep(project, url, cluster, "train.epochs=300,400", wait=False)
    try:
        wait_for(lambda: any(map(training_stage, homes)), "a remote trial trains", processes=[process])
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode != 0
    wait_for(lambda: trial_workspaces(homes) == [], "the remote trials stop and remove their workspaces", 60)
    time.sleep(5)
    assert remote_experiments(project) == [], output
    assert experiments(project) == {}


def test_a_worker_killed_mid_trial_is_replaced_and_the_sweep_completes(remote) -> None:
    project, url, cluster = remote
    homes = [cluster.add_worker("worker-1"), cluster.add_worker("worker-2")]
    process = sweep(project, url, cluster, "train.epochs=150,151", wait=False)
    try:
        wait_for(
            lambda: training_stage(homes[0]) is not None, "a trial trains on worker-1", processes=[process]
        )
        victim = dask_worker_of(training_stage(homes[0]))
        abandoned = trial_workspaces([homes[0]])
        victim.kill()  # SIGKILL: the worker process dies mid-trial; its nanny starts another
        output, _ = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, output
    recorded = experiments(project)
    assert sorted(experiment["params"]["train"]["epochs"] for experiment in recorded.values()) == [150, 151]
    # The dead attempt's claim died with it: the next run on that worker removes its workspace.
    remove_abandoned(homes[0] / ".cache/fashion-pipeline/runs", logging.getLogger("test"))
    assert not any(path.exists() for path in abandoned)


def training_stage(home: Path):
    """The train command running in a workspace under ``home``, if any."""
    for process in psutil.process_iter(["cmdline"]):
        try:
            root = process.environ().get("DVC_ROOT", "")
        except psutil.Error:
            continue
        if root.startswith(str(home)) and process.info["cmdline"][-1:] == ["pipeline.stages.train"]:
            return process
    return None


def dask_worker_of(stage: psutil.Process) -> psutil.Process:
    """The Dask worker process that runs ``stage`` (the nanny's child, above DVC's shell)."""
    for ancestor in stage.parents():
        if "multiprocessing" in " ".join(ancestor.cmdline()) or "spawn_main" in " ".join(ancestor.cmdline()):
            return ancestor
    raise AssertionError(f"no Dask worker above {stage.cmdline()}")
