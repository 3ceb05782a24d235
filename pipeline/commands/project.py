"""How the commands find the project from any folder inside it, and open it with DVC in one line."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import PipelineError
from pipeline.core.paths import Paths

if TYPE_CHECKING:
    from dvc.repo import Repo
    from dvc.stage import Stage


class ProjectError(PipelineError):
    """Not inside the project, or DVC cannot open it (no git repository, a broken dvc.yaml)."""


def project_root() -> Path:
    """The project's root: the current folder or the nearest above it with ``.dvc``, as DVC finds it."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root())
    except NotDvcRepoError as exc:
        raise ProjectError(f"{exc}: run it inside the project (dvc.yaml's folder or one below it)") from None


def project_paths() -> Paths:
    """The project's files as seen from the current folder, for the commands that need no DVC
    (``validate``, ``predict``): under the project's root from any folder inside it (``../models/...``
    from ``data/``), under the current folder outside any project. Without a change of folder, so the
    paths a user gives still name files from the folder they were given in."""
    try:
        root = project_root()
    except ProjectError:
        return Paths()
    return Paths(Path(os.path.relpath(root)))


def enter_project(*paths: Path | None) -> list[Path | None]:
    """Change to the project's root; ``paths``, given from the folder this started in, as seen from there."""
    start = Path.cwd()
    root = project_root()
    os.chdir(root)
    return [None if path is None else Path(os.path.relpath(start / path, root)) for path in paths]


@contextlib.contextmanager
def open_project(root: Path) -> Iterator[Repo]:
    """DVC's repo of the project at ``root``, the current folder there meanwhile; its errors one line."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.scm import SCMError

    try:
        with contextlib.chdir(root), Repo(str(root)) as repo:
            yield repo
    except SCMError as exc:
        raise ProjectError(f"{exc}: DVC needs the project's git repository (a `git clone` of it)") from None
    except DvcException as exc:
        raise ProjectError(str(exc)) from None


def stages_of(repo: Repo, names: Sequence[str]) -> list[Stage]:
    """The stages of dvc.yaml named ``names``; every stage (.dvc files too) when there are none."""
    from dvc.exceptions import DvcException

    if not names:
        return list(repo.index.stages)
    try:
        return [stage for name in names for stage in repo.stage.collect(f"dvc.yaml:{name}")]
    except DvcException as exc:
        raise ProjectError(f"no such stage in dvc.yaml: {exc}") from None
