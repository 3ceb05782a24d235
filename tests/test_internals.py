"""The DVC and Prefect internals the code relies on are still there, in the versions installed.

Beyond ``dvc.api``, DVC's Python API (``Repo``, its index, stages, outputs, run cache, the text of its
log lines) is internal and changes between minor releases; so can Prefect's futures and run context,
and the Dask worker state the sweep watches. That is why ``pyproject.toml`` bounds ``dvc`` and
``prefect`` below their next minor release. Each entry below names one such call and the pattern
that finds it in the code:

- the code still uses it: the test greps ``pipeline/`` and ``flows/`` for it, wherever the module
  has moved, and fails when nothing matches any more, so that stale entries are removed;
- the installed library still has it: a check against the library itself (its signatures, its
  source, or a tiny DVC project that runs nothing), failing with the call, the library's version
  and the files that rely on it.

DVC and Prefect are imported inside the checks: collecting this file imports neither.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO_ROOT

CODE_DIRS = ("pipeline", "flows")
MD5_OF_NOTHING = "d41d8cd98f00b204e9800998ecf8427e"
PARAMS_YAML = "train:\n  epochs: 1\n"
# Two stages, the second reading the first's output: enough for the index, its graph, params
# dependencies, cached and git-kept outputs and their status. Nothing here is ever run.
DVC_YAML = """\
stages:
  first:
    cmd: echo one > a.txt
    params: [train]
    outs: [a.txt]
  second:
    cmd: cat a.txt > b.json
    deps: [a.txt]
    outs:
      - b.json:
          cache: false
"""


@dataclass(frozen=True)
class Internal:
    id: str
    call: str  # what the code relies on, as it writes it
    library: str  # the distribution that provides it
    pattern: str  # a regular expression that finds its uses in pipeline/ and flows/
    check: Callable[[Path], None]  # raises unless the installed library still has it


# --- the checks: each gets the root of a tiny committed DVC project (see dvc_project) -------------


@contextlib.contextmanager
def _repo(root: Path) -> Iterator:
    """DVC's ``Repo``, used from inside the project, as :func:`flows.workspace.open_repo` does."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        yield repo


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    saved = os.environ.get(name)
    try:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _parameters(function: Callable) -> set[str]:
    """The parameters ``function`` names (a ``**kwargs`` would swallow any keyword silently)."""
    return {
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
    }


def _takes(function: Callable, *names: str) -> None:
    missing = set(names) - _parameters(function)
    assert not missing, f"{function.__module__}.{function.__qualname__} takes no {', '.join(sorted(missing))}"


def _stages(repo) -> dict:
    return {stage.name: stage for stage in repo.index.stages}


def check_repo(root: Path) -> None:
    with _repo(root) as repo:
        assert Path(repo.root_dir) == root


def check_scm_context_quiet(root: Path) -> None:
    from dvc.repo.scm_context import SCMContext

    with _repo(root) as repo:
        assert isinstance(repo.scm_context, SCMContext)
        assert isinstance(repo.scm_context.quiet, bool)
    assert "self.quiet" in inspect.getsource(SCMContext), "SCMContext no longer reads quiet"


def check_index_stages(root: Path) -> None:
    with _repo(root) as repo:
        assert {name: stage.path_in_repo for name, stage in _stages(repo).items()} == {
            "first": "dvc.yaml",
            "second": "dvc.yaml",
        }


def check_pipeline_stage(root: Path) -> None:
    from dvc.stage import PipelineStage

    with _repo(root) as repo:
        assert all(isinstance(stage, PipelineStage) for stage in repo.index.stages)


def check_index_graph(root: Path) -> None:
    with _repo(root) as repo:
        stages = _stages(repo)
        graph = repo.index.graph
        # From a stage to the stages it depends on: flows.stage reverses it for the run order.
        assert list(graph.successors(stages["second"])) == [stages["first"]]
        assert list(graph.subgraph(list(stages.values())).reverse().successors(stages["first"])) == [
            stages["second"]
        ]


def check_params_dependency(root: Path) -> None:
    from dvc.dependency.param import ParamsDependency

    with _repo(root) as repo:
        deps = [dep for dep in _stages(repo)["first"].deps if isinstance(dep, ParamsDependency)]
        assert [dep.params for dep in deps] == [["train"]]


def check_stage_collect(root: Path) -> None:
    from dvc.exceptions import DvcException

    with _repo(root) as repo:
        (stage,) = repo.stage.collect("dvc.yaml:first")
        assert stage.name == "first"
        with pytest.raises(DvcException):  # pipeline restore: "no stage ... in dvc.yaml"
            repo.stage.collect("dvc.yaml:no-such-stage")


def check_status(root: Path) -> None:
    with _repo(root) as repo:
        assert set(repo.status()) == {"first", "second"}  # the stale stages, by name
        changes = repo.status(targets=["dvc.yaml:first"])["first"]
    # flows.stage._why reads each change as a string or {kind: {path: status or {key: status}}}.
    assert changes
    for change in changes:
        assert isinstance(change, str | dict), change
        for entries in change.values() if isinstance(change, dict) else []:
            assert isinstance(entries, dict | str), change


def check_index_outs(root: Path) -> None:
    with _repo(root) as repo:
        outs = {out.def_path: out for out in repo.index.outs}
        assert {path: out.use_cache for path, out in outs.items()} == {"a.txt": True, "b.json": False}
        assert not any(out.exists for out in outs.values())


def check_hash_info(root: Path) -> None:
    with _repo(root) as repo:
        for out in repo.index.outs:
            # No run in dvc.lock yet: falsy (flows.stage: "dvc.lock has no run of it yet").
            assert not out.hash_info
            assert hasattr(out.hash_info, "value")


def check_reproduce(root: Path) -> None:
    from dvc.repo import Repo
    from dvc.stage import Stage
    from dvc.stage.run import cmd_run, prepare_kwargs, run_stage

    _takes(Repo.reproduce, "targets", "single_item")
    # run_env travels in **kwargs from Repo.reproduce through Stage.run down to the command's env.
    _takes(Stage.run, "dry", "force")
    _takes(run_stage, "run_env")
    _takes(cmd_run, "run_env")
    with _repo(root) as repo:
        env = prepare_kwargs(_stages(repo)["first"], run_env={"FASHION_TEST_SOCKET": "x"})["env"]
    assert env["FASHION_TEST_SOCKET"] == "x"


def check_dvc_root(root: Path) -> None:
    from dvc.env import DVC_ROOT
    from dvc.stage.run import prepare_kwargs

    assert DVC_ROOT == "DVC_ROOT"
    with _environ(DVC_ROOT, None), _repo(root) as repo:
        env = prepare_kwargs(_stages(repo)["first"])["env"]
        assert env[DVC_ROOT] == repo.root_dir  # how stop_stage_processes finds a workspace's commands


def check_run_cache_message(root: Path) -> None:
    import dvc.stage.cache

    source = inspect.getsource(dvc.stage.cache)
    assert "is cached - skipping run" in source, "the run cache's log line no longer says it"
    assert dvc.stage.cache.logger.name.startswith("dvc.")


def check_dvc_logger(root: Path) -> None:
    import dvc.repo.reproduce
    import dvc.stage
    import dvc.stage.cache
    import dvc.stage.run

    for module in (dvc.repo.reproduce, dvc.stage, dvc.stage.cache, dvc.stage.run):
        assert module.logger.name.startswith("dvc."), f"{module.__name__} logs to {module.logger.name!r}"
        assert module.logger.propagate, f"{module.logger.name} does not reach the 'dvc' logger"


def check_config_local(root: Path) -> None:
    with _repo(root) as repo:
        with repo.config.edit("local") as config:
            config["cache"] = {**config.get("cache", {}), "type": "reflink,hardlink,symlink"}
        assert repo.config.read("local")["cache"]["type"] == "reflink,hardlink,symlink"
        assert "remote" not in repo.config["core"]


def check_local_cache_dir(root: Path) -> None:
    with _repo(root) as repo:
        assert Path(repo.cache.local_cache_dir) == root / ".dvc" / "cache"


def check_oid_to_path(root: Path) -> None:
    with _repo(root) as repo:
        path = Path(repo.cache.local.oid_to_path(MD5_OF_NOTHING))
        assert path.is_relative_to(repo.cache.local_cache_dir), path
        assert path.parent.name + path.name == MD5_OF_NOTHING, path


def check_checkout(root: Path) -> None:
    from dvc.repo import Repo

    _takes(Repo.checkout, "targets", "force")


def check_pull(root: Path) -> None:
    from dvc.repo import Repo

    _takes(Repo.pull, "allow_missing", "run_cache")


def check_push(root: Path) -> None:
    from dvc.repo import Repo

    _takes(Repo.push, "run_cache")


def check_stage_save(root: Path) -> None:
    from dvc.stage import Stage

    assert inspect.signature(Stage.save).parameters["run_cache"].default is True
    assert "stage_cache.save" in inspect.getsource(Stage.save), "Stage.save no longer fills the run cache"


def check_output_commit(root: Path) -> None:
    from dvc.output import Output

    _takes(Output.commit, "relink")
    assert "self.use_cache = " in inspect.getsource(Output.__init__)


def check_transfer_log(root: Path) -> None:
    import dvc_data.hashfile.transfer as transfer

    source = inspect.getsource(transfer)
    assert "getLogger(__name__)" in source and "exc_info" in source, "its failed copies are no longer logged"


def check_experiments_save(root: Path) -> None:
    from dvc.repo.experiments.save import save

    _takes(save, "message", "include_untracked")


def check_experiments_get_exact_name(root: Path) -> None:
    with _repo(root) as repo:
        head = repo.scm.get_rev()
        assert repo.experiments.get_exact_name([head]) == {head: None}  # no tag, branch or experiment


def check_experiments_push(root: Path) -> None:
    from dvc.repo.experiments.push import push

    _takes(push, "git_remote", "exp_names")


def check_experiments_pull(root: Path) -> None:
    from dvc.repo.experiments.pull import pull

    _takes(pull, "git_remote", "exp_names", "pull_cache")


def check_experiments_apply(root: Path) -> None:
    from dvc.repo.experiments.apply import apply

    _takes(apply, "rev")


def check_hydra_sweeps(root: Path) -> None:
    from dvc.utils.hydra import get_hydra_sweeps

    assert get_hydra_sweeps({"params.yaml": ["train.epochs=1,2", "train.seed=range(1,3)"]}) == [
        {"params.yaml": ["train.epochs=1", "train.seed=1"]},
        {"params.yaml": ["train.epochs=1", "train.seed=2"]},
        {"params.yaml": ["train.epochs=2", "train.seed=1"]},
        {"params.yaml": ["train.epochs=2", "train.seed=2"]},
    ]


def check_cli_main(root: Path) -> None:
    from dvc.cli import main, parse_args

    _takes(main, "argv")
    for command in (["plots", "show"], ["plots", "diff", "HEAD", "workspace"]):
        args = parse_args([*command, "--html-template", "page.html", "--out", "out"])
        assert (args.html_template, args.out) == ("page.html", "out")


def check_metrics_show(root: Path) -> None:
    with _repo(root) as repo:
        shown = repo.metrics.show(targets=["m.json"], revs=["HEAD"], hide_workspace=False, on_error="return")
    # pipeline report reads {rev: {"data": {file: {"data": metrics}}}}, the workspace as "workspace".
    for rev in ("HEAD", "workspace"):
        assert shown[rev]["data"]["m.json"]["data"] == {"accuracy": 0.5}, shown


def check_params_diff(root: Path) -> None:
    from dvc.repo.params.diff import diff

    _takes(diff, "a_rev")
    with _repo(root) as repo:
        assert repo.params.diff(a_rev="HEAD").get("diff", {}) == {}  # nothing changed since HEAD


def check_dvc_exception(root: Path) -> None:
    from dvc.exceptions import DvcException

    assert issubclass(DvcException, Exception)


def check_params_yaml_reading(root: Path) -> None:
    from dvc.dependency.param import read_param_file
    from dvc.fs import LocalFileSystem
    from ruamel.yaml import YAML

    text = "rate: 1e-3\nname: yes\nnothing: null\n"  # YAML 1.2: a number, a string, None
    path = root / ".dvc" / "tmp" / "typed.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    read = read_param_file(LocalFileSystem(), str(path))
    assert read == YAML(typ="safe").load(text) == {"rate": 0.001, "name": "yes", "nothing": None}, read


def check_scm(root: Path) -> None:
    from scmrepo.exceptions import SCMError

    with _repo(root) as repo:
        head = repo.scm.resolve_rev("HEAD")
        fs = repo.scm.get_fs(head)
        assert fs.exists("params.yaml") and not fs.exists("no-such-file")
        assert fs.read_text("params.yaml") == PARAMS_YAML
        with pytest.raises(SCMError):  # pipeline report: "cannot compare with ..."
            repo.scm.resolve_rev("no-such-revision")


def check_wrapped_future(root: Path) -> None:
    from prefect.futures import PrefectConcurrentFuture, PrefectWrappedFuture
    from prefect_dask.task_runners import PrefectDaskFuture

    assert isinstance(inspect.getattr_static(PrefectWrappedFuture, "wrapped_future"), property)
    for future in (PrefectConcurrentFuture, PrefectDaskFuture):  # ThreadPool- and DaskTaskRunner's
        assert issubclass(future, PrefectWrappedFuture), future


def check_run_context(root: Path) -> None:
    import contextvars

    from prefect.context import FlowRunContext, TaskRunContext

    # A copy of the task thread's contextvars carries its run context to the log relay's thread.
    for context in (FlowRunContext, TaskRunContext):
        assert isinstance(context.__var__, contextvars.ContextVar), context


def check_api_url_setting(root: Path) -> None:
    from prefect.settings import Settings, get_current_settings

    assert hasattr(get_current_settings().api, "url")
    with _environ("PREFECT_API_URL", "http://127.0.0.1:1/api"):
        assert Settings().api.url == "http://127.0.0.1:1/api"


def check_analytics_setting(root: Path) -> None:
    from prefect.settings import Settings

    for value, enabled in (("false", False), ("true", True)):
        with _environ("PREFECT_SERVER_ANALYTICS_ENABLED", value):
            assert Settings().server.analytics_enabled is enabled


def check_dask_worker_state(root: Path) -> None:
    import typing

    from distributed.worker import Worker
    from distributed.worker_state_machine import BaseWorker, TaskState, TaskStateState, WorkerState

    assert issubclass(Worker, BaseWorker)
    assert "self.state = state" in inspect.getsource(BaseWorker.__init__), "a worker has no .state"
    assert isinstance(WorkerState().tasks, dict)
    assert TaskState("key").state == "released"
    assert {"cancelled", "released", "forgotten"} <= set(typing.get_args(TaskStateState))


INTERNALS = [
    Internal("repo", "Repo(path) as a context manager, repo.root_dir", "dvc", r"\bRepo\(str\(", check_repo),
    Internal(
        "scm-context-quiet",
        "repo.scm_context.quiet",
        "dvc",
        r"\.scm_context\.quiet\b",
        check_scm_context_quiet,
    ),
    Internal(
        "index-stages",
        "repo.index.stages, stage.path_in_repo",
        "dvc",
        r"\.index\.stages\b.*\.path_in_repo\b",
        check_index_stages,
    ),
    Internal(
        "pipeline-stage",
        "dvc.stage.PipelineStage",
        "dvc",
        r"from dvc\.stage import PipelineStage",
        check_pipeline_stage,
    ),
    Internal(
        "index-graph",
        "repo.index.graph (a stage -> the stages it depends on)",
        "dvc",
        r"\.index\.graph\b",
        check_index_graph,
    ),
    Internal(
        "params-dependency",
        "dvc.dependency.param.ParamsDependency(.params) in stage.deps",
        "dvc",
        r"from dvc\.dependency\.param import ParamsDependency",
        check_params_dependency,
    ),
    Internal(
        "stage-collect",
        'repo.stage.collect("dvc.yaml:<stage>")',
        "dvc",
        r"\.stage\.collect\(",
        check_stage_collect,
    ),
    Internal("status", "repo.status(targets=...) and its shape", "dvc", r"\brepo\.status\(", check_status),
    Internal(
        "index-outs",
        "repo.index.outs, out.def_path, out.use_cache, out.exists",
        "dvc",
        r"\.index\.outs\b",
        check_index_outs,
    ),
    Internal(
        "hash-info", "out.hash_info (falsy before a run; .value)", "dvc", r"\.hash_info\b", check_hash_info
    ),
    Internal(
        "reproduce",
        "repo.reproduce(target, single_item=True, run_env=...)",
        "dvc",
        r"\.reproduce\([^)]*single_item=True[^)]*run_env=",
        check_reproduce,
    ),
    Internal(
        "dvc-root",
        "dvc.env.DVC_ROOT in a stage command's environment",
        "dvc",
        r"from dvc\.env import DVC_ROOT",
        check_dvc_root,
    ),
    Internal(
        "run-cache-message",
        "DVC's log line 'is cached - skipping run' (a run cache hit)",
        "dvc",
        r"is cached - skipping run",
        check_run_cache_message,
    ),
    Internal(
        "dvc-logger",
        "DVC's log records under the 'dvc' logger",
        "dvc",
        r"getLogger\(\"dvc\"\)",
        check_dvc_logger,
    ),
    Internal(
        "config-local",
        'repo.config.read("local"), repo.config.edit("local"), repo.config["core"]',
        "dvc",
        r"\.config\.(read|edit)\(\"local\"\)",
        check_config_local,
    ),
    Internal(
        "local-cache-dir",
        "repo.cache.local_cache_dir",
        "dvc",
        r"\.cache\.local_cache_dir\b",
        check_local_cache_dir,
    ),
    Internal(
        "oid-to-path",
        "out.cache.oid_to_path(md5) (the local cache of an output)",
        "dvc",
        r"\.cache\.oid_to_path\(",
        check_oid_to_path,
    ),
    Internal(
        "checkout", "repo.checkout(targets=..., force=True)", "dvc", r"\.checkout\(targets=", check_checkout
    ),
    Internal(
        "pull",
        "repo.pull(allow_missing=True, run_cache=True)",
        "dvc",
        r"\.pull\([^)]*allow_missing=",
        check_pull,
    ),
    Internal("push", "repo.push(run_cache=True)", "dvc", r"\.push\(run_cache=", check_push),
    Internal(
        "stage-save",
        "dvc_stage.save() (fills the run cache)",
        "dvc",
        r"\bdvc_stage\.save\(\)",
        check_stage_save,
    ),
    Internal(
        "output-commit",
        "out.commit(relink=False), out.use_cache (copy a stage's outputs to the cache)",
        "dvc",
        r"\bout\.commit\(relink=False\)",
        check_output_commit,
    ),
    Internal(
        "transfer-log",
        "the dvc_data.hashfile.transfer logger's records of failed copies (with exc_info)",
        "dvc-data",
        r"dvc_data\.hashfile\.transfer",
        check_transfer_log,
    ),
    Internal(
        "experiments-save",
        "repo.experiments.save(message=..., include_untracked=...)",
        "dvc",
        r"\.experiments\.save\(",
        check_experiments_save,
    ),
    Internal(
        "experiments-get-exact-name",
        "repo.experiments.get_exact_name([rev])",
        "dvc",
        r"\.experiments\.get_exact_name\(",
        check_experiments_get_exact_name,
    ),
    Internal(
        "experiments-push",
        "repo.experiments.push(git_remote, exp_names=...)",
        "dvc",
        r"\.experiments\.push\(",
        check_experiments_push,
    ),
    Internal(
        "experiments-pull",
        "repo.experiments.pull(git_remote, exp_names, pull_cache=True)",
        "dvc",
        r"\.experiments\.pull\(",
        check_experiments_pull,
    ),
    Internal(
        "experiments-apply",
        "repo.experiments.apply(rev)",
        "dvc",
        r"\.experiments\.apply\(",
        check_experiments_apply,
    ),
    Internal(
        "hydra-sweeps",
        "dvc.utils.hydra.get_hydra_sweeps",
        "dvc",
        r"from dvc\.utils\.hydra import get_hydra_sweeps",
        check_hydra_sweeps,
    ),
    Internal(
        "cli-main",
        "dvc.cli.main([plots show|diff, --html-template, --out])",
        "dvc",
        r"from dvc\.cli import main",
        check_cli_main,
    ),
    Internal(
        "metrics-show",
        "repo.metrics.show(targets, revs, hide_workspace=False, on_error='return') and its shape",
        "dvc",
        r"\.metrics\.show\(",
        check_metrics_show,
    ),
    Internal("params-diff", "repo.params.diff(a_rev=...)", "dvc", r"\.params\.diff\(", check_params_diff),
    Internal(
        "dvc-exception",
        "dvc.exceptions.DvcException",
        "dvc",
        r"from dvc\.exceptions import DvcException",
        check_dvc_exception,
    ),
    Internal(
        "params-yaml-reading",
        "YAML(typ='safe'): params read as DVC reads them (dvc.dependency.param.read_param_file)",
        "dvc",
        r"YAML\(typ=\"safe\"\)",
        check_params_yaml_reading,
    ),
    Internal(
        "scm",
        "repo.scm.resolve_rev, repo.scm.get_fs(rev), scmrepo.exceptions.SCMError (DVC's git)",
        "scmrepo",
        r"from scmrepo\.exceptions import SCMError",
        check_scm,
    ),
    Internal(
        "wrapped-future",
        "PrefectFuture.wrapped_future (cancels a trial not started yet)",
        "prefect",
        r"\.wrapped_future\b",
        check_wrapped_future,
    ),
    Internal(
        "run-context",
        "Prefect's run context in contextvars (contextvars.copy_context())",
        "prefect",
        r"contextvars\.copy_context\(\)",
        check_run_context,
    ),
    Internal(
        "api-url-setting",
        "prefect.settings.get_current_settings().api.url (PREFECT_API_URL)",
        "prefect",
        r"settings\.api\.url",
        check_api_url_setting,
    ),
    Internal(
        "analytics-setting",
        "the PREFECT_SERVER_ANALYTICS_ENABLED setting",
        "prefect",
        r"PREFECT_SERVER_ANALYTICS_ENABLED",
        check_analytics_setting,
    ),
    Internal(
        "dask-worker-state",
        "worker.state.tasks.get(key).state (Dask, through prefect-dask)",
        "distributed",
        r"\.state\.tasks\.get\(",
        check_dask_worker_state,
    ),
]


def code_files() -> dict[str, str]:
    """The text of every Python file under pipeline/ and flows/, by path from the repository's root."""
    return {
        path.relative_to(REPO_ROOT).as_posix(): path.read_text(encoding="utf-8")
        for folder in CODE_DIRS
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
    }


def users(internal: Internal) -> list[str]:
    """The files under pipeline/ and flows/ whose code matches the internal's pattern."""
    pattern = re.compile(internal.pattern, re.DOTALL)
    return [path for path, text in code_files().items() if pattern.search(text)]


def test_every_entry_is_named_once() -> None:
    assert len({internal.id for internal in INTERNALS}) == len(INTERNALS)


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.id)
def test_the_code_still_uses_it(internal: Internal) -> None:
    assert users(internal), (
        f"{internal.call}: nothing under {' or '.join(f'{d}/' for d in CODE_DIRS)} matches "
        f"{internal.pattern!r} any more. If the code no longer relies on it, remove its entry from "
        f"tests/test_internals.py (and reconsider the {internal.library} bound in pyproject.toml); "
        "if it was only rewritten, update the pattern"
    )


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with one commit of a DVC project: params, two stages (never run), a metric."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("internals-project").resolve()
    subprocess.run(["git", "init", "--quiet"], cwd=root, check=True)
    (root / "params.yaml").write_text(PARAMS_YAML)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "m.json").write_text('{"accuracy": 0.5}\n')
    Repo.init(str(root)).close()
    subprocess.run(["git", "add", "--all"], cwd=root, check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=tests",
            "-c",
            "user.email=tests@example.invalid",
            "commit",
            "--quiet",
            "-m",
            "p",
        ],
        cwd=root,
        check=True,
    )
    return root


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.id)
def test_the_installed_library_still_has_it(internal: Internal, dvc_project: Path) -> None:
    try:
        internal.check(dvc_project)
    except Exception as exc:  # noqa: BLE001  (an import, a lookup, a call or an assertion: all say the same)
        failure = f"{type(exc).__name__}: {exc}"
    else:
        return
    version = importlib.metadata.version(internal.library)
    below = ".".join(version.split(".")[:2])
    found = users(internal)
    where = ", ".join(found) or "(no file any more)"
    pytest.fail(
        f"{internal.call} is gone or changed in {internal.library} {version}: {where} "
        f"rel{'ies' if len(found) == 1 else 'y'} on it; pin {internal.library} below {below} in "
        f"pyproject.toml or port the code ({failure})",
        pytrace=False,
    )
