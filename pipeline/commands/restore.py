"""``python -m pipeline restore STAGE``: put back the outputs that ``dvc.lock`` records for a stage.

DVC deletes a stage's outputs before it runs the stage's command. When the command then fails (a
diverged run, out of memory, a full disk, a killed process), ``dvc.lock`` still describes the
previous outputs, and this puts them back: those in the DVC cache as ``dvc checkout`` does, those
that git keeps (the reports) from the DVC cache or the last commit, wherever the content matches
the hash ``dvc.lock`` records.

They are in the DVC cache because every successful stage command enters its run in DVC's run
cache (:func:`pipeline.core.stage_cli.remember`), which also commits the outputs git keeps. Never
imports TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pipeline.core import atomic
from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)


class RestoreError(PipelineError):
    """An output cannot be put back: nothing holds the content that dvc.lock records."""


def restore(root: Path, stage: str) -> list[str]:
    """Put back ``stage``'s outputs as ``dvc.lock`` records them; the outputs that were missing."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        try:
            (dvc_stage,) = repo.stage.collect(f"dvc.yaml:{stage}")
        except DvcException as exc:
            raise RestoreError(f"no stage {stage!r} in dvc.yaml: {exc}") from None
        outs = [out for out in dvc_stage.outs if out.hash_info]
        if not outs:
            raise RestoreError(f"dvc.lock records no run of {stage!r}: run `dvc repro {stage}`")
        missing = [out.def_path for out in outs if not _matches(root / out.def_path, out.hash_info.value)]
        cached = [out.def_path for out in outs if out.use_cache and out.def_path in missing]
        if cached:
            repo.checkout(targets=cached, force=True)
        unrestorable = []
        for out in outs:
            if out.use_cache or out.def_path not in missing:
                continue
            content = _committed(root, out.def_path, out.hash_info.value) or _cached(
                repo, out.hash_info.value
            )
            if content is None:
                unrestorable.append(out.def_path)
            else:
                atomic.write_bytes(root / out.def_path, content)
    if unrestorable:
        raise RestoreError(
            f"no copy of {', '.join(unrestorable)} as dvc.lock records it (not in the last commit nor the "
            f"DVC cache): run `dvc repro {stage}` to make it again"
        )
    for path in missing:
        log.info("%s: put back as dvc.lock records it", path)
    return missing


def _matches(path: Path, md5: str) -> bool:
    if path.is_dir():
        return True  # a directory output: DVC's checkout compares its contents
    return path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() == md5  # noqa: S324 (DVC's hash)


def _committed(root: Path, path: str, md5: str) -> bytes | None:
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=root, capture_output=True)
    if shown.returncode == 0 and hashlib.md5(shown.stdout).hexdigest() == md5:  # noqa: S324
        return shown.stdout
    return None


def _cached(repo, md5: str) -> bytes | None:
    """The content DVC's cache holds for ``md5`` (a run cache entry keeps a stage's git-kept outputs)."""
    cached = Path(repo.cache.local.oid_to_path(md5))
    return cached.read_bytes() if cached.is_file() else None


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.commands import run_command
    from pipeline.core.stage_cli import STAGES

    parser = argparse.ArgumentParser(
        prog="python -m pipeline restore",
        description="Put back a stage's outputs as dvc.lock records them, after a failed run.",
    )
    parser.add_argument("stage", choices=STAGES, help="the stage whose outputs to put back")
    args = parser.parse_args(argv)
    return run_command("restore", lambda: restore(Path("."), args.stage) and 0)


if __name__ == "__main__":
    raise SystemExit(main())
