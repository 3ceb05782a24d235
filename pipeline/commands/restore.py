"""``python -m pipeline restore STAGE``: put back the outputs that ``dvc.lock`` records for a stage.

DVC deletes a stage's outputs before it runs the stage's command. When the command then fails (a
diverged run, out of memory, a full disk, a killed process), ``dvc.lock`` still describes the
previous outputs, and this puts them back: those in the DVC cache as ``dvc checkout`` does, those
that git keeps (the reports) from the DVC cache or the last commit. Every byte is checked against
the md5 ``dvc.lock`` records, before (a corrupt cache copy is named, not checked out) and after; a
file that cannot be put back is one line with the command that makes it again.

They are in the DVC cache because every successful stage command enters its run in DVC's run
cache (:func:`pipeline.core.stage_cli.remember`), which also commits the outputs git keeps. Git's
commits are read through DVC (no ``git`` program needed). Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.commands.project import open_project, project_root, stages_of
from pipeline.commands.verify import (
    Mismatch,
    cache_mismatches,
    recorded_files,
    remake,
    workspace_mismatches,
)
from pipeline.core import atomic
from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from dvc.output import Output
    from dvc.repo import Repo
    from dvc.stage import Stage

log = logging.getLogger(__name__)


class RestoreError(PipelineError):
    """An output cannot be put back: nothing holds the content that dvc.lock records."""


def restore(root: Path, stage: str) -> list[str]:
    """Put back ``stage``'s outputs as ``dvc.lock`` records them; the outputs put back."""
    with open_project(root) as repo:
        (dvc_stage,) = stages_of(repo, [stage])
        outs = [out for out in dvc_stage.outs if out.hash_info]
        if not outs:
            raise RestoreError(f"dvc.lock records no run of {stage!r}: run `dvc repro {stage}`")
        failed: list[Mismatch] = []
        to_put_back: list[tuple[Output, dict[str, str]]] = []
        for out in outs:
            recorded = recorded_files(out)
            wrong = workspace_mismatches(repo, dvc_stage, out, recorded)
            # Only the cache keeps a cached output; git keeps the others too (each copy checked as read).
            unusable = (
                cache_mismatches(repo, dvc_stage, out, recorded) if out.use_cache or recorded is None else []
            )
            if wrong and unusable:
                failed += unusable
            elif wrong:
                for mismatch in wrong:  # bytes other than dvc.lock's, whatever their mtime tells DVC
                    Path(repo.root_dir, mismatch.path).unlink(missing_ok=True)
                to_put_back.append((out, recorded))
        cached = [out.def_path for out, _ in to_put_back if out.use_cache]
        if cached:
            repo.checkout(targets=cached, force=True)
        put_back = []
        for out, recorded in to_put_back:
            missing = [] if out.use_cache else _write_kept(repo, dvc_stage, out, recorded)
            still = [
                Mismatch(wrong.path, f"{wrong.problem} once put back", remake(repo, dvc_stage, wrong.path))
                for wrong in workspace_mismatches(repo, dvc_stage, out, recorded)
                if wrong.path not in {gone.path for gone in missing}
            ]
            failed += missing + still
            if not missing + still:
                put_back.append(out.def_path)
    for path in put_back:
        log.info("%s: put back as dvc.lock records it", path)
    if not put_back and not failed:
        log.info("%s: every output already matches dvc.lock", stage)
    if failed:
        raise RestoreError("; ".join(map(str, failed)))
    return put_back


def _write_kept(repo: Repo, stage: Stage, out: Output, recorded: dict[str, str]) -> list[Mismatch]:
    """Write the missing files of ``out``, an output git keeps, from the DVC cache or the last commit;
    the files neither holds as dvc.lock records them."""
    missing = []
    for path, md5 in recorded.items():
        target = Path(repo.root_dir, path)
        if target.is_file():
            continue
        content = _content(repo, out, path, md5)
        if content is None:
            problem = "no copy as dvc.lock records it (not in the DVC cache nor the last commit)"
            missing.append(Mismatch(path, problem, remake(repo, stage, path)))
        else:
            atomic.write_bytes(target, content)
    return missing


def _content(repo: Repo, out: Output, path: str, md5: str) -> bytes | None:
    """``path``'s bytes with ``md5``: from the DVC cache (a run cache entry keeps a stage's git-kept
    outputs) or from git's last commit."""
    from dvc_data.hashfile.hash import fobj_md5

    cached = Path(out.cache.oid_to_path(md5))
    candidates = [cached.read_bytes()] if cached.is_file() else []
    if not repo.scm.no_commits:
        head = repo.scm.get_fs("HEAD")
        if head.isfile(path):
            candidates.append(head.read_bytes(path))
    return next((data for data in candidates if fobj_md5(io.BytesIO(data), name=out.hash_name) == md5), None)


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.commands import run_command
    from pipeline.core.stage_cli import STAGES

    parser = argparse.ArgumentParser(
        prog="python -m pipeline restore",
        description="Put back a stage's outputs as dvc.lock records them, after a failed run.",
    )
    parser.add_argument("stage", choices=STAGES, help="the stage whose outputs to put back")
    args = parser.parse_args(argv)
    return run_command("restore", lambda: restore(project_root(), args.stage) and 0)


if __name__ == "__main__":
    raise SystemExit(main())
