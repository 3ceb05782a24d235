"""Where every flow run happens: a workspace of its own, made from git, like ``dvc exp run --temp``.

- **From git.** A workspace is a clone of the source (the project's checkout, or a git URL that
  workers on other machines reach) at one commit. Run from a checkout without a named revision, it
  also gets the checkout's uncommitted changes to tracked files (through ``git stash create``, which
  writes no file of the checkout), as ``dvc exp run --temp`` does.
- **Data from the cache, or the DVC remote.** On the project's machine the workspace uses the
  project's DVC cache and local config (remotes, credentials); elsewhere a cache of the machine's
  own (``$FASHION_PIPELINE_HOME``, default ``~/.cache/fashion-pipeline``), shared by every run on
  it, so a worker fetches each file once. Outputs are linked from the cache, never copied; what the
  cache lacks is pulled from the DVC remote the commit configures, or rebuilt.
- **Recorded as a DVC experiment** (``dvc exp save``), pushed into the project's git refs where
  ``dvc exp show`` and ``dvc exp apply`` find it; to the git and DVC remotes only when asked. A push
  asked for where no DVC remote is set is refused before anything runs (:func:`require_dvc_remote`):
  only the git ref could leave, the data and models would stay in this machine's cache.
- **Nothing lost, nothing left.** A workspace whose result could not be pushed is kept, with the
  commands that push it later. Each workspace is claimed by its process with a file lock, so the
  next run on a machine removes the workspaces of runs that died (their lock is free).

DVC's Python API resolves paths against the process's working directory, so every call here runs
inside the workspace (:func:`open_repo`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dvc.repo import Repo

from pipeline.core.params import DEFAULT_PARAMS_PATH

RUNS_DIR = Path(".dvc") / "tmp" / "fashion-runs"
HOME_ENV = "FASHION_PIPELINE_HOME"
# Linked from the shared cache, never copied; DVC picks the first that the file system supports.
LINK_TYPES = "reflink,hardlink,symlink"

Logger = logging.Logger | logging.LoggerAdapter


class WorkspaceError(RuntimeError):
    """The workspace cannot be made, or its result cannot be recorded or applied."""


class PushFailed(WorkspaceError):
    """The run is recorded, but its result could not be pushed: its workspace is kept."""


class NoDvcRemote(WorkspaceError):
    """A push is asked for, but no DVC remote is set: the data could not leave this machine."""


@dataclass(frozen=True)
class Pushed:
    """What a push sent where, one phrase each, and what it could not send (with the fix)."""

    sent: tuple[str, ...] = ()
    warning: str | None = None


@dataclass(frozen=True)
class Workspace:
    root: Path
    commit: str  # the commit it was made from (its experiment's baseline)


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator[Repo]:
    """DVC's ``Repo`` for ``root``, used from inside it; its git hints are left to the flow's logs."""
    with contextlib.chdir(root), Repo(str(root)) as repo:
        repo.scm_context.quiet = True  # "To track the changes with git, run: ..." is for a terminal
        yield repo


def uncommitted_changes(project: Path) -> str | None:
    """A commit holding the checkout's uncommitted changes to tracked files (``git stash create``,
    which writes no file of the checkout and moves no ref), or None when there are none.

    The index is refreshed first: after a ``dvc repro`` rewrote tracked files with the same bytes
    (``dvc.lock``, reports), ``git stash create`` (git 2.39) exits 1 without a word the first time."""
    _git("update-index", "-q", "--refresh", cwd=project, check=False)  # exits 1 for real changes
    return _git("stash", "create", cwd=project).stdout.strip() or None


def checkout_state(project: Path) -> str:
    """The tree of the checkout's tracked files as they are now, committed or not."""
    return _git("rev-parse", f"{uncommitted_changes(project) or 'HEAD'}^{{tree}}", cwd=project).stdout.strip()


def resolve_commit(repository: Path, rev: str | None) -> str:
    """The commit ``rev`` names in ``repository`` (a branch, tag, SHA or ``origin/<branch>``)."""
    revision = rev or "HEAD"
    for candidate in (revision, f"origin/{revision}"):
        found = _git(
            "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=repository, check=False
        )
        if found.returncode == 0:
            return found.stdout.strip()
    raise WorkspaceError(f"{revision!r} is not a commit of the git repository {repository}")


def committed_params(project: Path, commit: str) -> str:
    """The text of ``params.yaml`` at ``commit``."""
    result = _git("show", f"{commit}:{DEFAULT_PARAMS_PATH.as_posix()}", cwd=project, check=False)
    if result.returncode != 0:
        raise WorkspaceError(f"commit {commit[:7]} of {project} has no {DEFAULT_PARAMS_PATH}")
    return result.stdout


def machine_home() -> Path:
    """This machine's folder for workspaces and the DVC cache they share, when no project is here."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "fashion-pipeline")


def runs_dir(project: Path | None) -> Path:
    """Where workspaces go: beside the project's DVC cache, else in this machine's home."""
    return project / RUNS_DIR if project else machine_home() / "runs"


@contextlib.contextmanager
def isolated(
    source: str | Path,
    rev: str | None,
    *,
    name: str,
    log: Logger,
    changes: str | None = None,
    share_with: Path | None = None,
    start_lock: str | None = None,
    keep_on_failure: bool = False,
    needs_remote: tuple[str, str] | None = None,
) -> Iterator[Workspace]:
    """A fresh clone of commit ``rev`` of ``source`` (a path or git URL), removed afterwards.

    ``changes``: a commit of ``source`` (:func:`uncommitted_changes`) whose files go on top of
    ``rev``, uncommitted. ``share_with``: the project on this machine whose DVC cache and local config
    the workspace uses. ``start_lock``: a ``dvc.lock`` to start from instead of the commit's (the
    stages a sweep ran once for all its trials). A failed run's workspace is kept when
    ``keep_on_failure`` asks, for debugging; one whose push failed always is. ``needs_remote``
    (what asks for a push, and what to do instead): the run's data must leave through a DVC remote,
    so :class:`NoDvcRemote` where the workspace has none, before its outputs are even checked out.
    """
    parent = runs_dir(share_with)
    parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(parent, log)
    keep = False
    with _claimed(parent, name) as root:
        try:
            _git("clone", "--quiet", "--no-checkout", str(source), str(root), cwd=parent)
            if rev and rev.startswith("refs/exps/"):  # an experiment's commit: a clone has no such ref
                _git("fetch", "--quiet", str(source), f"{rev}:{rev}", cwd=root)
            commit = resolve_commit(root, rev)
            _git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit, cwd=root)
            if changes:
                _git("fetch", "--quiet", str(source), changes, cwd=root)
                _git("restore", f"--source={changes}", "--worktree", "--", ":/", cwd=root)
            _give_git_identity(root)
            _set_up_dvc(root, share_with)
            if needs_remote:
                require_dvc_remote(root, *needs_remote)
            if start_lock is not None:
                (root / "dvc.lock").write_text(start_lock)
            _check_out_outputs(root, log)
            log.info(
                "workspace %s: commit %s of %s%s",
                root,
                commit[:7],
                source,
                " + uncommitted changes" * bool(changes),
            )
            yield Workspace(root, commit)
        except PushFailed:
            keep = True
            raise
        except BaseException:
            keep = keep_on_failure
            if keep:
                log.warning("the run failed; its workspace is kept for debugging: %s", root)
            raise
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _claimed(parent: Path, name: str) -> Iterator[Path]:
    """A new workspace folder under ``parent``, claimed by a locked ``<folder>.claim`` file for as
    long as the run lives; the kernel frees the lock when the process dies, however it dies."""
    handle, claim_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".claim", dir=parent)
    claim = Path(claim_path)
    with os.fdopen(handle, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # before the folder exists: no cleaner can take it for dead
        root = claim.with_name(claim.name.removesuffix(".claim"))
        root.mkdir()
        try:
            yield root
        finally:
            claim.unlink(missing_ok=True)


def remove_abandoned(parent: Path, log: Logger) -> None:
    """Remove the workspaces under ``parent`` whose run died (their claim is no longer held)."""
    for claim in parent.glob("*.claim"):
        with contextlib.suppress(OSError), claim.open("a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run's
            root = claim.with_name(claim.name.removesuffix(".claim"))
            shutil.rmtree(root, ignore_errors=True)
            claim.unlink(missing_ok=True)
            log.info("removed the workspace of a run that died: %s", root)


def git_identity(root: Path) -> tuple[str, str]:
    """The git name and email configured for ``root``, or this machine's stand-ins where none is."""
    fallback = {"user.name": "fashion-pipeline", "user.email": f"fashion-pipeline@{socket.gethostname()}"}
    found = {key: _git("config", key, cwd=root, check=False).stdout.strip() for key in fallback}
    return found["user.name"] or fallback["user.name"], found["user.email"] or fallback["user.email"]


def _give_git_identity(root: Path) -> None:
    """A local git identity where none is configured (``dvc exp save`` commits); never the global one."""
    name, email = git_identity(root)
    for key, value in (("user.name", name), ("user.email", email)):
        if _git("config", key, cwd=root, check=False).returncode != 0:
            _git("config", "--local", key, value, cwd=root)


def _set_up_dvc(root: Path, project: Path | None) -> None:
    """Point the clone at ``project``'s DVC cache and local config, or at this machine's cache."""
    local, cache_dir = {}, str(machine_home() / "dvc-cache")
    if project:
        with open_repo(project) as source:
            local, cache_dir = source.config.read("local"), source.cache.local_cache_dir
    with open_repo(root) as repo, repo.config.edit("local") as config:
        config.update(local)
        config["cache"] = {**config.get("cache", {}), "dir": cache_dir, "type": LINK_TYPES}


def _check_out_outputs(root: Path, log: Logger) -> None:
    """Link the outputs ``dvc.lock`` records from the cache, pulling what it lacks from the DVC remote;
    one line says what is still missing and so will be rebuilt."""
    from dvc.exceptions import DvcException

    with open_repo(root) as repo:
        with contextlib.suppress(DvcException):
            repo.checkout()
        missing = _missing_outputs(repo)
        remote = repo.config["core"].get("remote")
        if missing and remote:
            try:
                repo.pull(allow_missing=True, run_cache=True)
            except Exception as exc:  # noqa: BLE001  (any storage error: the stages rebuild instead)
                log.warning(
                    "dvc pull from DVC remote %r failed (%s): the stages rebuild what is missing",
                    remote,
                    _one_line(exc),
                )
            else:
                log.info(
                    "pulled from DVC remote %r: %s",
                    remote,
                    ", ".join(sorted(set(missing) - set(_missing_outputs(repo)))) or "nothing",
                )
            missing = _missing_outputs(repo)
        if missing:
            where = (
                f"the DVC cache or DVC remote {remote!r}"
                if remote
                else "the DVC cache (no DVC remote is set)"
            )
            log.info("not in %s, so their stages rebuild them: %s", where, ", ".join(missing))


def _cached_outputs(repo: Repo) -> list[str]:
    """The outputs DVC keeps in its cache (data and models): what only a DVC remote carries away."""
    return sorted(out.def_path for out in repo.index.outs if out.use_cache)


def data_left_behind(outputs: list[str], cache_dir: str | None, verb: str = "stay") -> str:
    """``<outputs> stay in this machine's DVC cache (<dir>)``: what a push without a DVC remote leaves."""
    where = f" ({cache_dir})" if cache_dir else ""
    return f"{', '.join(outputs) or 'the outputs'} {verb} in this machine's DVC cache{where}"


ADD_A_REMOTE = (
    "set a default DVC remote and commit it: `dvc remote add -d storage <url>` (a directory, "
    "s3://bucket/path), then `git commit .dvc/config`"
)


def no_remote_message(asked: str, outputs: list[str], cache_dir: str | None, instead: str) -> str:
    """The one line that refuses a push without a DVC remote, before anything runs."""
    return (
        f"{asked}: no DVC remote is set, so {data_left_behind(outputs, cache_dir, 'would stay')} "
        f"and only the run's git ref would leave; nothing was run. To push, {ADD_A_REMOTE}; or {instead}"
    )


def require_dvc_remote(root: Path, asked: str = "push", instead: str = "run without push") -> str:
    """The default DVC remote of the project or workspace at ``root`` (its ``.dvc/config``, local
    config, the user's and the system's); :class:`NoDvcRemote`, in one line naming what would stay
    behind and how to set one, where there is none. Called before any stage runs."""
    with open_repo(root) as repo:
        remote = repo.config["core"].get("remote")
        if remote:
            return remote
        outputs, cache_dir = _cached_outputs(repo), repo.cache.local_cache_dir
    raise NoDvcRemote(no_remote_message(asked, outputs, cache_dir, instead))


def _missing_outputs(repo: Repo) -> list[str]:
    outs = repo.index.outs
    return sorted(out.def_path for out in outs if out.use_cache and out.hash_info and not out.exists)


def record_experiment(root: Path, message: str) -> str:
    """Save the workspace as a DVC experiment (``dvc exp save``); its name.

    Outputs that ``dvc.yaml`` leaves to git (metrics, plots) are included even while untracked, so
    ``dvc exp show`` lists the experiment's metrics next to its params; so are the ``.gitignore``
    files DVC writes beside its cached outputs, which belong with ``dvc.lock``.
    """
    from dvc.exceptions import DvcException

    with open_repo(root) as repo:
        in_git = [out.def_path for out in repo.index.outs if not out.use_cache and out.exists]
        ignores = {str(Path(out.def_path).parent / ".gitignore") for out in repo.index.outs if out.use_cache}
        in_git += sorted(path for path in ignores if (root / path).is_file())
        try:
            commit = repo.experiments.save(message=message, include_untracked=in_git)
        except DvcException as exc:
            raise WorkspaceError(f"dvc exp save failed in {root}: {exc}") from None
        return repo.experiments.get_exact_name([commit])[commit]


def share_experiment(root: Path, experiment: str, project: Path) -> None:
    """Put ``experiment``'s ref into the project's git repository on this machine (its data is in the
    shared cache already), where ``dvc exp show`` and ``dvc exp apply`` find it."""
    with open_repo(root) as repo:
        _push_experiment(repo, str(project), experiment)


def push_results(root: Path, experiment: str | None, git_remote: str | None, log: Logger) -> Pushed:
    """``dvc push`` (outputs and run cache) to the default DVC remote, and ``dvc exp push`` of
    ``experiment`` to ``git_remote``; what went where. :class:`PushFailed`, with the commands that
    finish the job, if either fails for any reason.

    Without a DVC remote only the git ref can go: that is logged as a WARNING naming the outputs
    left in this machine's cache and how to push them, and returned as :attr:`Pushed.warning`. The
    flows refuse such a push before they run anything (:func:`require_dvc_remote`)."""
    with open_repo(root) as repo:
        remote = repo.config["core"].get("remote")
        sent = []
        try:
            if remote:
                # The run cache too: a workspace without this cache restores from it what git
                # does not carry (a stage's cache: false outputs) instead of running the stage.
                pushed = repo.push(run_cache=True)
                log.info("dvc push: %d new file(s) to DVC remote %r", pushed, remote)
                sent.append(f"data, models and run cache to DVC remote `{remote}` ({pushed} new file(s))")
            if experiment and git_remote:
                _push_experiment(repo, git_remote, experiment)
                log.info("dvc exp push: experiment %s to %s", experiment, git_remote)
                sent.append(f"experiment `{experiment}` to git remote `{git_remote}`")
        except Exception as exc:  # noqa: BLE001  (storage libraries raise their own errors, not DVC's)
            commands = [
                *(["dvc push --run-cache"] if remote else []),
                *([f"dvc exp push {git_remote} {experiment}"] if experiment and git_remote else []),
            ]
            raise PushFailed(
                f"pushing the results failed: {_one_line(exc)}. The run is kept in {root}"
                + (f" as experiment {experiment}" if experiment else "")
                + f"; push it once the remote is reachable: cd {root} && {' && '.join(commands)}"
            ) from None
        if remote:
            return Pushed(tuple(sent))
        outputs, cache_dir = _cached_outputs(repo), repo.cache.local_cache_dir
    went = f"; experiment {experiment} went to {git_remote} without them" if sent else ""
    then = (
        f"`dvc exp push {git_remote} {experiment}` (it pushes the data too)"
        if sent
        else "`dvc push --run-cache`"
    )
    warning = (
        f"no DVC remote is set, so dvc push sent nothing: {data_left_behind(outputs, cache_dir)}{went}. "
        f"To push them, {ADD_A_REMOTE}; then, in a checkout on that cache, {then}"
    )
    log.warning("%s", warning)
    return Pushed(tuple(sent), warning)


def _push_experiment(repo: Repo, git_remote: str, experiment: str) -> None:
    """``dvc exp push``, tried twice: dulwich (DVC's git) sometimes fails to close the pack it
    received into a local repository (``BufferError``, seen in sweeps), before any ref moved."""
    try:
        repo.experiments.push(git_remote, exp_names=[experiment])
    except BufferError:
        repo.experiments.push(git_remote, exp_names=[experiment])


def apply_experiment(project: Path, experiment: str, started_as: str) -> None:
    """``dvc exp apply`` in the checkout, unless its tracked files changed since ``started_as``
    (:func:`checkout_state` when the run started)."""
    if checkout_state(project) != started_as:
        raise WorkspaceError(
            f"the checkout {project} changed while the run was going, so experiment {experiment} was "
            f"not applied; review the change, then: dvc exp apply {experiment}"
        )
    with open_repo(project) as repo:
        repo.experiments.apply(experiment)


def git_remote_url(project: Path, name: str = "origin") -> str | None:
    """The URL of ``project``'s git remote ``name``, or None when it has none."""
    result = _git("remote", "get-url", name, cwd=project, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


def _git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        reason = " ".join(result.stderr.split()) or f"exit {result.returncode}, no message"
        raise WorkspaceError(
            f"git {' '.join(args)} failed in {cwd}: {reason}; check `git status` there "
            "(a leftover .git/index.lock, a file git cannot read), then run again"
        )
    return result
