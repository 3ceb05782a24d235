"""Shared fixtures: tiny synthetic Fashion-MNIST-shaped IDX data and throw-away project copies."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.dataset import FILE_NAMES
from pipeline.core.params import read_raw_params
from pipeline.core.paths import Paths
from pipeline.review.metrics import run_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
# The benchmarks' project copy (bench/scratch.py) is the tests' too: one list of what a copy needs.
sys.path.insert(0, str(REPO_ROOT / "bench"))
from scratch import (  # noqa: E402
    SyntheticSource,
    scratch_project,
    write_dataset_spec,
    write_synthetic_dataset,
)

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Prefect reads its settings when first imported: the tests' own home, and no network.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="fashion-prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# Workspaces and the DVC cache of runs without a project on this machine (flows.workspace.machine_home).
os.environ["FASHION_PIPELINE_HOME"] = tempfile.mkdtemp(prefix="fashion-pipeline-home-")
for _name, _value in {
    "GIT_AUTHOR_NAME": "tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}.items():
    os.environ.setdefault(_name, _value)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A module none of whose tests the ``-m`` expression can select is not even imported, so the fast
    tier (``-m "not integration and not server"``) collects without TensorFlow or Prefect.

    A module's tests carry its ``pytestmark`` plus any marks written on them, so the module is left out
    only when the expression is false for every such combination: ``-m integration`` still collects a
    module whose integration tests are marked one by one."""
    expression = config.getoption("markexpr")
    if not expression or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    from itertools import combinations

    from _pytest.mark.expression import Expression

    compiled = Expression.compile(expression)
    always, optional = module_marks(collection_path)
    for size in range(len(optional) + 1):
        for extra in combinations(sorted(optional), size):
            marks = always | set(extra)
            if compiled.evaluate(lambda name, marks=marks, **_: name in marks):
                return None
    return True


SERVER_FIXTURES = {"prefect_api", "prefect_server"}
# Modules of one or two tests that take minutes each (measured: --durations): they start first, so
# that no worker is left with one of them while the others are done (``--dist loadscope`` hands out
# whole modules in collection order).
LONGEST_MODULES = (
    "test_workflow_runs.py",
    "test_seed_groups.py",
    "test_bench.py",
    "test_remote_workers.py",
    "test_registry.py",
    "test_deployment.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``server`` mark is true: every test that uses the session's Prefect server carries it.

    Order: the longest modules, then the other modules with integration tests, then the unit
    tests, which fill the workers' last minutes."""
    unmarked = [
        item.nodeid
        for item in items
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("server")
    ]
    if unmarked:
        raise pytest.UsageError(f"tests use a Prefect server without the server mark: {', '.join(unmarked)}")
    integration = {item.path for item in items if item.get_closest_marker("integration")}

    def cost_rank(item: pytest.Item) -> int:
        if item.path.name in LONGEST_MODULES:
            return LONGEST_MODULES.index(item.path.name)
        return len(LONGEST_MODULES) + (item.path not in integration)

    items.sort(key=cost_rank)  # stable: each module's tests keep their order


def module_marks(path: Path) -> tuple[set[str], set[str]]:
    """The marks of a module's top-level ``pytestmark = pytest.mark.x`` (or a list of them), and every
    other ``pytest.mark.<name>`` the module writes (which some of its tests may carry)."""
    import ast

    tree = ast.parse(path.read_text())
    always: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            values = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            always = {value.attr for value in values if isinstance(value, ast.Attribute)}
    written = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and getattr(node.value, "attr", None) == "mark"
    }
    return always, written - always


def once_per_session(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """The folder ``name``, made by ``build(folder)`` once per test session: under pytest-xdist the
    first worker to ask builds it in the folder all workers share (their base temps' parent) while
    the others wait, then use it as it is."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, built = root / name, root / f"{name}.built"
    with FileLock(root / f"{name}.lock"):
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed to build left
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSource:
    """The session's synthetic Fashion-MNIST files: one folder for every worker, so that each
    project's dataset spec, and so each stage's run-cache entry, is the same whichever ran it."""
    folder = once_per_session(tmp_path_factory, "synthetic-fashion-mnist", write_synthetic_dataset)
    return SyntheticSource(
        folder,
        {
            name: hashlib.sha256(gzip.decompress((folder / f"{name}.gz").read_bytes())).hexdigest()
            for name in FILE_NAMES
        },
    )


def processed(root: Path, source: SyntheticSource) -> Paths:
    """``root`` with ``source`` ingested and split as the default params split it (stages imported
    here, not at collection: preprocess brings scikit-learn, pandas and matplotlib)."""
    from pipeline.stages.ingest import ingest
    from pipeline.stages.preprocess import run as preprocess

    paths = Paths(root)
    ingest([str(source.directory)], source.sha256, paths.raw_dir)
    preprocess(paths, test_size=0.2, random_state=42, stratify=False)
    return paths


def tiny_params() -> dict:
    """The repository's params.yaml with a small, fast model."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["train"]["model"]["dense"]["hidden_units"] = [16]
    params["train"]["epochs"] = 3
    params["train"]["batch_size"] = 32
    return params


@pytest.fixture
def params_file(tmp_path: Path, synthetic_source: SyntheticSource) -> Path:
    """Tiny params in ``tmp_path``, with a dataset spec naming the synthetic source."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    write_dataset_spec(tmp_path, synthetic_source)
    return path


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails and ``check`` is set."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop ``process`` (started with ``start_new_session``) and everything it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_elsewhere(
    command: list[str], *, hidden: list[Path], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen:
    """``command`` as on another machine: a mount namespace of its own with tmpfs over ``hidden``
    (this checkout, the test's project), nothing of this environment but ``env``; output in ``log``."""
    mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(str(path))}" for path in hidden)
    assignments = " ".join(shlex.quote(f"{key}={value}") for key, value in env.items())
    script = f"{mounts} && cd {shlex.quote(str(cwd))} && exec env -i {assignments} {shlex.join(command)}"
    with log.open("wb") as output:
        return subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def unshare_works() -> bool:
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


def install_non_editable(target: Path) -> Path:
    """This project installed into ``target`` without its dependencies, as a worker image has it."""
    run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        str(REPO_ROOT),
        cwd=target.parent,
    )
    return target


@pytest.fixture(scope="session")
def installed_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project installed non-editable, once per session: what the workers "elsewhere" import."""
    return once_per_session(tmp_path_factory, "installed-site", install_non_editable)


def worker_env(home: Path, site: Path, api_url: str) -> dict[str, str]:
    """A clean environment for a worker with its own HOME and the project installed in ``site``."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(site),
    }


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd, check=check)


@pytest.fixture(scope="session")
def shared_dvc_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DVC cache, run cache included, for the session's project copies on every worker: a run
    that one test made is restored, not retrained, wherever the same code, data and params come
    again (DVC's job; its cache is safe for concurrent processes)."""
    return once_per_session(tmp_path_factory, "shared-dvc-cache", lambda folder: None)


@pytest.fixture
def project(tmp_path: Path, synthetic_source: SyntheticSource, shared_dvc_cache: Path) -> Path:
    """A fresh git + DVC repository holding a copy of this project with tiny params, on the session's
    shared DVC cache (``.dvc/config.local``)."""
    return make_project(tmp_path / "project", synthetic_source, cache=shared_dvc_cache)


@pytest.fixture
def project_own_cache(tmp_path: Path, synthetic_source: SyntheticSource) -> Path:
    """:func:`project` with an empty DVC cache of its own (``.dvc/cache``): for tests that assert a
    stage ran, or what the cache holds."""
    return make_project(tmp_path / "project", synthetic_source)


def make_project(directory: Path, source: SyntheticSource, cache: Path | None = None) -> Path:
    root = scratch_project(directory)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    write_dataset_spec(root, source)
    with (root / ".dvc" / "config").open("a") as config:
        config.write("[core]\n    autostage = true\n")
    if cache is not None:
        (root / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n")
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-q", "-m", "project copy", cwd=root)
    return root


@pytest.fixture(scope="session")
def reproduced_once(tmp_path_factory: pytest.TempPathFactory, synthetic_source: SyntheticSource) -> Path:
    def build(folder: Path) -> None:
        dvc("repro", cwd=make_project(folder / "project", synthetic_source))

    return once_per_session(tmp_path_factory, "reproduced", build) / "project"


@pytest.fixture
def reproduced(tmp_path: Path, reproduced_once: Path) -> Path:
    """:func:`project` after a complete ``dvc repro`` (not committed): a copy of one run made once per
    session, its git repository, DVC cache and run cache included (DVC's state database is not: it
    rebuilds it)."""
    target = tmp_path / "project"
    shutil.copytree(
        reproduced_once,
        target,
        symlinks=True,
        ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [],
    )
    return target


@dataclass(frozen=True)
class PrefectServer:
    """The session's ``prefect server start`` on 127.0.0.1, with its own home and database."""

    api_url: str
    env: dict[str, str]  # this environment pointed at the server: for `prefect` commands and workers
    logs: Path

    def prefect(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run a ``prefect`` CLI command against this server, failing the test if it fails."""
        result = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            pytest.fail(
                f"prefect {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self, name: str, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
        """Start a long-running ``prefect`` command in its own process group, its output in a log file."""
        with (self.logs / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "prefect", *args],
                cwd=cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        response = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def log_tail(self, name: str, lines: int = 60) -> str:
        return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])


PREFECT_SERVER_START_S = 120


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real ``prefect server start`` with its own home and database, started once, for the tests that
    deploy to it and run a worker against it as a user does."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Shorter waits than the defaults (15 s, 30 s): a worker polls, an enqueued run retries.
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "3",
    }
    server = PrefectServer(env["PREFECT_API_URL"], env, home)
    process = server.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port), cwd=home)
    try:
        deadline = time.monotonic() + PREFECT_SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"prefect server exited {process.returncode}\n{server.log_tail('server')}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy after {PREFECT_SERVER_START_S} s")
            time.sleep(0.5)
        yield server
    finally:
        stop_process_group(process)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """The session's Prefect API for the in-process flows and the commands the tests start
    (``prefect_test_harness``: a server subprocess of its own with a temporary database); its URL.

    Not :func:`prefect_server`: with that server as this process's API, the records a stage relays
    from its log thread never reached the flow run's log (seen with Prefect 3.9)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def dask_address(prefect_api: str) -> Iterator[str]:
    """One local Dask cluster of two worker processes for the session's sweeps and seed groups (as
    ``--dask-address`` runs them); its scheduler's address. Tests of a cluster's own life start theirs."""
    import logging

    from distributed import LocalCluster

    env = {"PREFECT_API_URL": prefect_api, "TF_NUM_INTRAOP_THREADS": "1"}
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env=env,
        silence_logs=logging.WARNING,
    ) as cluster:
        yield cluster.scheduler_address


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commit_all(project: Path, message: str) -> None:
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-q", "-m", message, cwd=project)


def snapshot(project: Path) -> dict[str, bytes]:
    """Every file of the checkout but git's and DVC's internals (``.git``, ``.dvc/tmp``, ``.dvc/cache``)."""
    internal = (project / ".git", project / ".dvc" / "tmp", project / ".dvc" / "cache")
    return {
        str(path.relative_to(project)): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file() and not any(path.is_relative_to(folder) for folder in internal)
    }


def experiments(project: Path) -> dict[str, dict]:
    """Each experiment ``dvc exp show`` lists: its params and metrics by name."""
    rows = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    found = {}
    for row in rows:
        for experiment in row.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision["data"]
                evaluated, trained = (
                    data["metrics"].get(f"reports/{stage}/metrics.json", {}).get("data")
                    for stage in ("evaluate", "train")
                )
                found[revision["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": run_metrics(evaluated, trained),  # as the flows read a run's metrics
                }
    return found


def ran_stages(output: str) -> set[str]:
    """Stages ``dvc repro`` actually ran, from its ``Running stage '<name>'`` lines."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def set_params(project: Path, overrides: dict[str, object]) -> None:
    """Edit the project's params.yaml as a user would, by dotted key (``{"train.epochs": 2}``)."""
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(read_raw_params(path, overrides), sort_keys=False))


def stage_outputs(project: Path) -> list[Path]:
    """The files the four stages write (DVCLive's, one per kind)."""
    paths = Paths(project)
    return [
        *(paths.raw_dir / name for name in FILE_NAMES),
        *(paths.split(name) for name in ("train", "val", "test")),
        paths.model,
        paths.keras_model,
        paths.samples_png,
        paths.class_counts_csv,
        paths.train_live_dir / "metrics.json",
        paths.train_live_dir / "plots/metrics/val/loss.tsv",
        paths.loss_png,
        paths.accuracy_png,
        paths.metrics_json,
        paths.per_class_json,
        paths.confusion_json,
        paths.confusion_png,
        paths.f1_png,
    ]


def real_data_available() -> bool:
    return all((REAL_DATA_DIR / f"{name}.gz").is_file() for name in FILE_NAMES)


def requires_real_data() -> None:
    """Skip where the Debian dataset is absent; in CI (which installs it) its absence is a failure."""
    if real_data_available():
        return
    message = f"Debian dataset-fashion-mnist is not installed in {REAL_DATA_DIR}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
