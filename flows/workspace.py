"""Where a flow run happens, and how its result leaves: the user's checkout, or a workspace of its own.

- **The checkout** (``isolated=False``, like ``dvc exp run``): the run holds DVC's own lock on the
  project for its whole length. DVC serialises writers with a read/write lock on paths
  (``.dvc/tmp/rwlock``): each ``dvc repro`` stage takes it on its dependencies and outputs while it
  runs. The flow takes a write entry on the project root, which overlaps every path, so a ``dvc
  repro`` started during a flow run fails at once naming the flow's process, and a flow started
  during a ``dvc repro`` fails at once naming that process, before it changes anything.
- **An isolated workspace** (``isolated=True``): a git clone of one commit under
  ``.dvc/tmp/fashion-runs/`` (ignored by git and DVC, as DVC's own temp-dir experiments under
  ``.dvc/tmp/exps/``), with the project's local DVC config (remotes, credentials) and its cache
  (``cache.dir``; outputs are linked, never copied). The outputs that the commit's ``dvc.lock``
  records are checked out of the cache, or pulled from the DVC remote, so unchanged stages are
  skipped. The result becomes a DVC experiment pushed into the project's git refs, where ``dvc exp
  show`` and ``dvc exp apply`` find it; the checkout itself is never written to.

DVC's Python API resolves paths against the process's working directory, so every call here runs
inside the workspace (:func:`open_repo`); a flow run therefore owns its process, as a DVC command does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dvc.exceptions import DvcException
from dvc.lock import LockError
from dvc.repo import Repo
from dvc.rwlock import rwlock

from pipeline.params import DEFAULT_PARAMS_PATH

RUNS_DIR = Path(".dvc") / "tmp" / "fashion-runs"
RESTORE_DIR = Path(".dvc") / "tmp" / "fashion-pipeline" / "restore-point"
# Linked from the shared cache, never copied; DVC picks the first that the file system supports.
LINK_TYPES = "reflink,hardlink,symlink"

Logger = logging.Logger | logging.LoggerAdapter


class WorkspaceError(RuntimeError):
    """The workspace cannot be made, is busy, or its result cannot be recorded or pushed."""


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator[Repo]:
    """DVC's ``Repo`` for ``root``, used from inside it; its git hints are left to the flow's logs."""
    with contextlib.chdir(root), Repo(str(root)) as repo:
        repo.scm_context.quiet = True  # "To track the changes with git, run: ..." is for a terminal
        yield repo


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold DVC's lock on the whole project ``root`` (see the module docstring); fail at once if busy."""
    with contextlib.ExitStack() as held:
        with open_repo(root) as repo:
            try:
                with repo.lock:  # DVC's repository lock guards every change to the rwlock
                    # Same owner as DVC's own stage locks in this process (its pid and argv), so the
                    # stages this run reproduces pass while every other process is kept out.
                    held.enter_context(
                        rwlock(
                            repo.tmp_dir,
                            repo.fs,
                            " ".join(sys.argv),
                            [],
                            [repo.root_dir],
                            repo.config["core"].get("hardlink_lock", False),
                        )
                    )
            except LockError as exc:
                raise WorkspaceError(
                    f"the project {root} is busy, so this run changed nothing: {exc}\n"
                    "Wait for that run to finish, or run in a workspace of your own: "
                    "python -m flows run --isolated"
                ) from None
        yield


class RestorePoint:
    """What a run in the checkout changes, saved first, so that a failed run puts it all back.

    ``params.yaml`` and ``dvc.lock`` are copied when the run starts (DVC rewrites ``dvc.lock`` in
    place), each stage's outputs are hard-linked before DVC deletes them to run the stage (the stages
    replace their outputs through renames, so the saved inodes stay intact); the first copy of a path
    wins. The folder outlives a run killed outright; the next run in the checkout restores it before
    anything else.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / RESTORE_DIR
        self.manifest = self.folder / "saved-paths.txt"
        self.recovered: list[str] = []  # what a run killed earlier had left, put back at the start

    def exists(self) -> bool:
        return self.manifest.is_file()

    def save(self, *paths: Path, link: bool = True) -> None:
        """Keep the current content of ``paths`` (relative to the checkout), if not kept already.

        ``link``: hard-link rather than copy, for files that are replaced, never rewritten in place.
        """
        saved = self._saved()
        keep = _link_or_copy if link else shutil.copy2
        for path in paths:
            source, copy = self.root / path, self.folder / "files" / path
            if path.as_posix() in saved or not source.exists():
                continue
            if source.is_dir():
                shutil.copytree(source, copy, copy_function=keep)
            else:
                copy.parent.mkdir(parents=True, exist_ok=True)
                keep(source, copy)
            with self.manifest.open("a") as manifest:  # after the copy: a listed path is complete
                manifest.write(f"{path.as_posix()}\n")

    def restore(self) -> list[str]:
        """Put every saved path back in place of what is there now, then forget them; the paths."""
        restored = self._saved()
        for path in restored:
            current, copy = self.root / path, self.folder / "files" / path
            if current.is_dir() and not current.is_symlink():
                shutil.rmtree(current)
            else:
                current.unlink(missing_ok=True)
            current.parent.mkdir(parents=True, exist_ok=True)
            copy.replace(current)
        self.discard()
        return restored

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _saved(self) -> list[str]:
        return self.manifest.read_text().splitlines() if self.manifest.is_file() else []


@contextlib.contextmanager
def restore_point(root: Path, log: Logger) -> Iterator[RestorePoint]:
    """A restore point for a run in the checkout: kept on success, put back on failure.

    First puts back what a run killed outright left behind.
    """
    point = RestorePoint(root)
    if point.exists():
        point.recovered = point.restore()
        log.warning(
            "a run killed earlier left the checkout changed; put back: %s", ", ".join(point.recovered)
        )
    point.discard()
    point.save(DEFAULT_PARAMS_PATH, Path("dvc.lock"), link=False)
    try:
        yield point
    except BaseException:
        log.warning("the run did not finish; put back: %s", ", ".join(point.restore()))
        raise
    point.discard()


def resolve_commit(project: Path, rev: str | None) -> str:
    """The commit that ``rev`` (a branch, tag or SHA; ``None``: HEAD) names in ``project``."""
    revision = rev or "HEAD"
    result = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", cwd=project, check=False)
    if result.returncode != 0:
        raise WorkspaceError(f"{revision!r} is not a commit of the git repository {project}")
    return result.stdout.strip()


def committed_params(project: Path, commit: str) -> str:
    """The text of ``params.yaml`` at ``commit``."""
    result = _git("show", f"{commit}:{DEFAULT_PARAMS_PATH.as_posix()}", cwd=project, check=False)
    if result.returncode != 0:
        raise WorkspaceError(f"commit {commit[:7]} of {project} has no {DEFAULT_PARAMS_PATH}")
    return result.stdout


def uncommitted_changes(project: Path) -> list[str]:
    """Paths with changes that a run of the committed HEAD leaves out."""
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=project).stdout
    return [line[3:] for line in status.splitlines() if line.strip()]


@contextlib.contextmanager
def isolated(
    source: str | Path,
    commit: str,
    *,
    name: str,
    keep_on_failure: bool,
    log: Logger,
    share_with: Path | None = None,
    start_lock: str | None = None,
) -> Iterator[Path]:
    """A fresh clone of ``commit`` from ``source`` (a project's path or a git URL); removed afterwards.

    ``share_with``: the project on this machine whose DVC cache and local config the workspace uses;
    the workspace goes under its ``.dvc/tmp/fashion-runs/``. Without it the workspace is
    self-contained, under the system's temp dir, and gets its data from the DVC remote that the
    commit configures. ``start_lock``: a ``dvc.lock`` to start from instead of the commit's (the
    stages a sweep ran once for all its trials). On failure the workspace is kept only when
    ``keep_on_failure`` asks, for debugging.
    """
    parent = runs_dir(share_with)
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    try:
        _git("clone", "--quiet", "--no-checkout", str(source), str(root), cwd=parent)
        _git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit, cwd=root)
        if share_with:
            _share_dvc_setup(share_with, root)
        if start_lock is not None:
            (root / "dvc.lock").write_text(start_lock)
        _check_out_outputs(root, log)
        log.info("isolated workspace %s: commit %s of %s", root, commit[:7], source)
        with locked(root):
            yield root
    except BaseException:
        if keep_on_failure:
            log.warning("the run failed; its workspace is kept for debugging: %s", root)
        else:
            _remove(root)
        raise
    _remove(root)


def runs_dir(project: Path | None) -> Path:
    """Where isolated workspaces go: under the project they share a cache with, else the temp dir."""
    return project / RUNS_DIR if project else Path(tempfile.gettempdir()) / "fashion-runs"


def record_experiment(root: Path, message: str) -> str:
    """Save the workspace as a DVC experiment (``dvc exp save``); its name.

    Outputs that ``dvc.yaml`` leaves to git (metrics, plots) are included even while untracked, so
    ``dvc exp show`` lists the experiment's metrics next to its params; so are the ``.gitignore``
    files DVC writes beside its cached outputs, which belong with ``dvc.lock``.
    """
    with open_repo(root) as repo:
        in_git = [out.def_path for out in repo.index.outs if not out.use_cache and out.exists]
        ignores = {str(Path(out.def_path).parent / ".gitignore") for out in repo.index.outs if out.use_cache}
        in_git += sorted(path for path in ignores if (root / path).is_file())
        try:
            commit = repo.experiments.save(message=message, include_untracked=in_git)
        except DvcException as exc:
            raise WorkspaceError(f"dvc exp save failed in {root}: {exc}") from None
        return repo.experiments.get_exact_name([commit])[commit]


def push_results(root: Path, experiment: str | None, git_remotes: Sequence[str], log: Logger) -> None:
    """``dvc push`` to the default DVC remote, if any; ``dvc exp push`` of ``experiment`` to git."""
    with open_repo(root) as repo:
        remote = repo.config["core"].get("remote")
        try:
            if remote:
                # The run cache too: a workspace without this cache restores from it what git
                # does not carry (a stage's cache: false outputs) instead of running the stage.
                pushed = repo.push(run_cache=True)
                log.info("dvc push: %d new file(s) to DVC remote %r", pushed, remote)
            for git_remote in git_remotes if experiment else ():
                _push_experiment(repo, git_remote, experiment)
                log.info("dvc exp push: experiment %s to %s", experiment, git_remote)
        except DvcException as exc:
            raise WorkspaceError(
                f"pushing the results failed: {exc}; the run is recorded locally"
                + (f" as experiment {experiment}" if experiment else "")
                + ". Push it once the remote is reachable: dvc push"
                + (f" && dvc exp push <git remote> {experiment}" if experiment else "")
            ) from None


def _push_experiment(repo: Repo, git_remote: str, experiment: str) -> None:
    """``dvc exp push``, tried twice: dulwich (DVC's git) sometimes fails to close the pack it
    received into a local repository (``BufferError``, seen in sweeps), before any ref moved."""
    try:
        repo.experiments.push(git_remote, exp_names=[experiment])
    except BufferError:
        repo.experiments.push(git_remote, exp_names=[experiment])


def git_remote_url(project: Path, name: str = "origin") -> str | None:
    """The URL of ``project``'s git remote ``name``, or None when it has none."""
    result = _git("remote", "get-url", name, cwd=project, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _share_dvc_setup(project: Path, root: Path) -> None:
    """Give the clone ``project``'s local DVC config and point it at ``project``'s cache."""
    with open_repo(project) as source:
        local = source.config.read("local")
        cache_dir = source.cache.local_cache_dir
    with open_repo(root) as repo, repo.config.edit("local") as config:
        config.update(local)
        config["cache"] = {**config.get("cache", {}), "dir": cache_dir, "type": LINK_TYPES}


def _check_out_outputs(root: Path, log: Logger) -> None:
    """Link the outputs ``dvc.lock`` records from the cache, pulling what it lacks from the DVC remote."""
    with open_repo(root) as repo:
        try:
            repo.checkout()
        except DvcException as exc:
            if not repo.config["core"].get("remote"):
                log.info("outputs not in the DVC cache will be reproduced: %s", exc)
                return
            try:
                repo.pull(allow_missing=True, run_cache=True)
            except DvcException as pull_exc:
                log.warning("dvc pull failed, so missing outputs will be reproduced: %s", pull_exc)


def _remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def _git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
