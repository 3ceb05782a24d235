"""``python -m pipeline verify [STAGE...]``: every byte of the outputs ``dvc.lock`` records, hashed again.

``dvc status`` trusts DVC's state database (a file's inode, size and mtime stand for its hash) and
``dvc checkout`` takes a read-only cache file for intact, so a flipped byte that keeps a file's mode
and mtime passes both. This hashes each output in the workspace and its copy in the DVC cache (a
directory's files as DVC's ``.dir`` manifest lists them) and names each file that differs from
``dvc.lock``, with the command that repairs it; ``restore`` checks what it puts back the same way.
Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.commands.project import open_project, project_root, stages_of

if TYPE_CHECKING:
    from dvc.output import Output
    from dvc.repo import Repo
    from dvc.stage import Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mismatch:
    """A file that differs from what dvc.lock records, and the command that repairs it."""

    path: str  # relative to the project root
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}; {self.fix}"


def remake(repo: Repo, stage: Stage, path: str) -> str:
    """How to get ``path`` of ``stage`` again: from the DVC remote, if one is set, or by a new run."""
    remote = repo.config["core"].get("remote")
    pull = f"`dvc pull {path}` if DVC remote '{remote}' holds it, else " if remote else ""
    if not stage.cmd:  # a .dvc file's: nothing makes it
        return f"{pull}`dvc add {stage.outs[0].def_path}` once a good copy is back"
    return f"{pull}`dvc repro -f {stage.addressing}` makes it again"


def recorded_files(out: Output) -> dict[str, str] | None:
    """Each file of ``out`` with its md5 as dvc.lock records it (a directory's, from DVC's ``.dir``
    manifest in the cache); None when that manifest is missing or corrupt."""
    from dvc_data.hashfile.tree import Tree

    if not out.hash_info.isdir:
        return {out.def_path: out.hash_info.value}
    if _cached_md5(out, out.hash_info.value) != out.hash_info.value.removesuffix(".dir"):
        return None
    tree = Tree.load(out.cache, out.hash_info)
    return {posixpath.join(out.def_path, *key): hash_info.value for key, _, hash_info in tree}


def workspace_files(repo: Repo, out: Output) -> dict[str, str]:
    """Each file of ``out`` in the workspace (but those .dvcignore names) with the md5 of its bytes."""
    from dvc.fs import localfs
    from dvc_data.hashfile.hash import file_md5

    top = Path(out.fs_path)
    if top.is_file():
        return {out.def_path: file_md5(out.fs_path, name=out.hash_name)}
    if not top.is_dir():
        return {}
    return {
        posixpath.join(out.def_path, Path(path).relative_to(top).as_posix()): file_md5(
            path, name=out.hash_name
        )
        for path in repo.dvcignore.find(localfs, out.fs_path)
    }


def workspace_mismatches(
    repo: Repo, stage: Stage, out: Output, recorded: dict[str, str] | None
) -> list[Mismatch]:
    """The files of ``out`` in the workspace that differ from ``recorded`` (:func:`recorded_files`)."""
    found = workspace_files(repo, out)
    # DVC's own checkout trusts a file its state database vouches for, unless told to relink it.
    command = (
        f"python -m pipeline restore {stage.addressing}" if stage.cmd else f"dvc checkout --relink {out}"
    )
    fix = f"`{command}` puts it back"
    if recorded is None:  # no list of its files: the hash of the whole directory tells
        if _tree_oid(out, found) == out.hash_info.value:
            return []
        return [Mismatch(out.def_path, "differs from dvc.lock", remake(repo, stage, out.def_path))]
    wrong = [
        Mismatch(path, _differs(found.get(path), md5), fix)
        for path, md5 in recorded.items()
        if found.get(path) != md5
    ]
    extra = [
        Mismatch(path, f"not in dvc.lock's record of {out.def_path}", fix)
        for path in found.keys() - recorded.keys()
    ]
    return wrong + sorted(extra, key=lambda mismatch: mismatch.path)


def cache_mismatches(
    repo: Repo, stage: Stage, out: Output, recorded: dict[str, str] | None
) -> list[Mismatch]:
    """The DVC cache's copies of ``out`` that are corrupt, or missing where the cache is their only keeper
    (outputs with ``cache: false`` are git's too): its ``.dir`` manifest first, then each file."""
    wanted = {out.def_path: out.hash_info.value} if out.hash_info.isdir else {}
    mismatches = []
    for path, oid in (wanted | (recorded or {})).items():
        actual = _cached_md5(out, oid)
        where = os.path.relpath(out.cache.oid_to_path(oid), repo.root_dir)
        label = f"{path} (its .dir manifest)" if oid.endswith(".dir") else path
        if actual is None and (out.use_cache or oid.endswith(".dir")):
            mismatches.append(Mismatch(label, f"not in the DVC cache ({where})", remake(repo, stage, path)))
        elif actual is not None and actual != oid.removesuffix(".dir"):
            problem = f"the DVC cache's copy {where} is corrupt (md5 {actual}, dvc.lock records {oid})"
            mismatches.append(Mismatch(label, problem, f"`rm -f {where}`, then {remake(repo, stage, path)}"))
    return mismatches


def verify(root: Path, names: Sequence[str] = ()) -> list[Mismatch]:
    """Every mismatch of the named stages' outputs (all stages' when none), workspace and cache."""
    mismatches = []
    with open_project(root) as repo:
        for stage in stages_of(repo, names):
            outs = [out for out in stage.outs if out.hash_info]
            if not outs and stage.outs:
                mismatches.append(
                    Mismatch(
                        stage.addressing,
                        "dvc.lock records no run of it",
                        f"run `dvc repro {stage.addressing}`",
                    )
                )
            for out in outs:
                recorded = recorded_files(out)
                in_cache = cache_mismatches(repo, stage, out, recorded)
                fixes = {mismatch.path: mismatch.fix for mismatch in in_cache if out.use_cache}
                mismatches += [  # where the cache cannot put it back, its own repair does
                    replace(mismatch, fix=fixes.get(mismatch.path, mismatch.fix))
                    for mismatch in workspace_mismatches(repo, stage, out, recorded)
                ]
                mismatches += in_cache
    return mismatches


def _cached_md5(out: Output, oid: str) -> str | None:
    """The md5 of the bytes the DVC cache holds for ``oid``; None when it holds none."""
    from dvc_data.hashfile.hash import file_md5

    path = out.cache.oid_to_path(oid)
    return file_md5(path, name=out.hash_name) if os.path.isfile(path) else None


def _tree_oid(out: Output, files: dict[str, str]) -> str:
    """The hash DVC gives a directory of ``files`` (paths and md5s), as dvc.lock records it."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for path, md5 in files.items():
        tree.add(tuple(posixpath.relpath(path, out.def_path).split("/")), None, HashInfo(out.hash_name, md5))
    tree.digest(name=out.hash_name)
    return tree.hash_info.value


def _differs(actual: str | None, recorded: str) -> str:
    return (
        "missing" if actual is None else f"differs from dvc.lock (md5 {actual}, dvc.lock records {recorded})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.commands import run_command
    from pipeline.core.stage_cli import STAGES

    parser = argparse.ArgumentParser(
        prog="python -m pipeline verify",
        description="Hash every output dvc.lock records, in the workspace and the DVC cache, and name each "
        "file that differs (a flipped byte `dvc status` misses); exit 1 if any does.",
    )
    parser.add_argument(
        "stages", nargs="*", metavar="STAGE", help=f"{', '.join(STAGES)} (default: all, .dvc files too)"
    )
    args = parser.parse_args(argv)

    def check() -> int:
        mismatches = verify(project_root(), args.stages)
        for mismatch in mismatches:
            log.error("%s", mismatch)
        if not mismatches:
            log.info("every output dvc.lock records matches it, in the workspace and the DVC cache")
        return 1 if mismatches else 0

    return run_command("verify", check)


if __name__ == "__main__":
    raise SystemExit(main())
