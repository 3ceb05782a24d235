"""The model registry: GTO's annotated git tags on the model that ``dvc.yaml`` declares.

``dvc.yaml``'s ``artifacts:`` names the model (``fashion-classifier``: ``models/model.keras``). A
version is a tag ``fashion-classifier@vX.Y.Z`` on the commit that made the model, its message the
version's lineage; a stage is a tag ``fashion-classifier#<stage>#N`` whose newest one wins (GTO's
format, which ``gto show`` lists and ``dvc artifacts get --stage`` resolves without Iterative Studio).
Tags are written here, then pushed to ``origin`` together (``git push --atomic``): a push that loses
to another promotion leaves no tag, here or there.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from pipeline.core.errors import PipelineError

STAGES = ("dev", "staging", "prod")
_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")


class RegistryError(PipelineError):
    """The registry cannot do what was asked: a bad name, a missing model, a tag that moved."""


@dataclass(frozen=True)
class Version:
    """A registered version: its semantic version (``v1.2.0``) and the commit that made the model."""

    version: str
    commit: str


@dataclass(frozen=True)
class Artifact:
    """The model ``dvc.yaml`` declares: its name and path."""

    name: str
    path: str


def declared_model(project: Path, name: str | None = None) -> Artifact:
    """The ``type: model`` artifact of ``project``'s ``dvc.yaml`` (``name``, or the only one)."""
    try:
        artifacts = YAML(typ="safe").load((project / "dvc.yaml").read_text()).get("artifacts") or {}
    except OSError as exc:
        raise RegistryError(f"{project}: no dvc.yaml ({exc.strerror})") from None
    models = {key: value for key, value in artifacts.items() if value.get("type") == "model"}
    if name is None and len(models) == 1:
        name = next(iter(models))
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise RegistryError(f"{name!r} is not a model declared in dvc.yaml's artifacts (declared: {known})")
    return Artifact(name, models[name]["path"])


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}; the registry's stages are {', '.join(STAGES)}")
    return stage


def stage_version(project: Path, artifact: str, stage: str) -> Version | None:
    """The version ``stage`` holds now (its newest assignment), or None before its first."""
    from gto import api
    from gto.exceptions import ArtifactNotFound

    try:
        found = api.find_versions_in_stage(
            str(project), artifact, check_stage(stage), assignments_per_version=-1, versions_per_stage=-1
        )
    except ArtifactNotFound:  # no tag of it yet
        return None
    if not found:
        return None
    # The newest assignment wins: GTO numbers an artifact's assignments in order (``#<stage>#N``).
    newest = max(found, key=lambda held: max(int(event.tag.rsplit("#", 1)[1]) for event in held.assignments))
    return Version(newest.version, newest.commit_hexsha)


def versions(project: Path, artifact: str) -> list[Version]:
    """Every registered version, newest first."""
    from gto import api
    from gto.exceptions import ArtifactNotFound

    try:
        shown = api.show(str(project), artifact)
    except ArtifactNotFound:  # no tag of it yet
        return []
    registered = [entry for entry in shown if entry.get("registrations")]
    return [Version(entry["version"], entry["commit_hexsha"]) for entry in registered]


def resolve(project: Path, ref: str) -> str | None:
    """The commit of ``name#stage`` or ``name@vX.Y.Z`` (None: ``ref`` names no registry entry)."""
    name, stage = ref.split("#", 1) if "#" in ref else (ref, None)
    name, version = name.split("@", 1) if "@" in name else (name, None)
    if stage is None and version is None:
        return None
    artifact = declared_model(project, name).name
    if version is not None and not _VERSION.match(version):
        raise RegistryError(f"{ref}: not GTO's format; a version is {artifact}@vMAJOR.MINOR.PATCH (v1.2.0)")
    if stage is not None:
        held = stage_version(project, artifact, stage)
        if held is None:
            raise RegistryError(f"{ref}: stage {stage} of {artifact} holds no version yet")
        return held.commit
    for registered in versions(project, artifact):
        if registered.version == version:
            return registered.commit
    raise RegistryError(f"{ref}: {artifact} has no version {version}")


def record(
    project: Path,
    artifact: str,
    commit: str,
    stage: str,
    *,
    lineage: str,
    assignment: str,
    identity: tuple[str, str],
    force: bool = False,
) -> list[str]:
    """Register ``commit``'s model as the next version (a patch bump; or the version already at
    ``commit``) with ``lineage`` as its tag's message, and assign it ``stage``; the tags made, here
    only (:func:`push` sends them)."""
    from gto import api
    from gto.exceptions import GTOException

    author, email = identity
    made = []
    try:
        existing = next((v for v in versions(project, artifact) if v.commit == commit), None)
        if existing is None:
            registered = api.register(
                str(project), artifact, ref=commit, message=lineage, author=author, author_email=email
            )
            existing = Version(registered.version, commit)
            made.append(registered.tag)
        _next_second(project, artifact)
        assigned = api.assign(
            str(project),
            artifact,
            check_stage(stage),
            version=existing.version,
            message=assignment,
            force=force,
            author=author,
            author_email=email,
        )
        made.append(assigned.tag)
    except GTOException as exc:
        _delete_tags(project, made)
        raise RegistryError(f"the registry refused: {exc}") from None
    return made


def push(project: Path, tags: list[str], remote: str = "origin") -> bool:
    """Send ``tags`` to ``remote`` in one atomic push; False where the project has no such remote.

    A push another promotion beat (its tag names taken meanwhile) deletes ``tags`` here and raises."""
    if _git("remote", "get-url", remote, cwd=project, check=False).returncode != 0:
        return False
    pushed = _git("push", "--atomic", "--quiet", remote, *(f"refs/tags/{tag}" for tag in tags), cwd=project)
    if pushed.returncode != 0:
        _delete_tags(project, tags)
        reason = " ".join(pushed.stderr.split()) or f"git exited {pushed.returncode}"
        raise RegistryError(
            f"the tag moved: {remote} refused {', '.join(tags)} ({reason[:200]}); another promotion won, "
            "or the tags here are behind: `git fetch --tags`, then promote again"
        )
    return True


def fetch_tags(project: Path, remote: str = "origin") -> None:
    """The registry's tags from ``remote``, where the project has one: promotions made elsewhere."""
    if _git("remote", "get-url", remote, cwd=project).returncode != 0:
        return
    fetched = _git("fetch", "--quiet", "--tags", remote, cwd=project)
    if fetched.returncode != 0:
        reason = " ".join(fetched.stderr.split()) or f"git exited {fetched.returncode}"
        raise RegistryError(
            f"git fetch --tags {remote} failed, so the registry may be behind: {reason[:200]}"
        )


def fetch_stage_model(project: Path, artifact: Artifact, stage: str, out: Path) -> Version:
    """The model that ``stage`` holds now, fetched into ``out`` with ``dvc artifacts get`` (after
    :func:`fetch_tags`): what a machine with git access and the DVC remote's credentials can do."""
    fetch_tags(project)
    held = stage_version(project, artifact.name, stage)
    if held is None:
        raise RegistryError(f"stage {stage} of {artifact.name} holds no version yet")
    got = subprocess.run(
        [sys.executable, "-m", "dvc", "artifacts", "get", str(project), artifact.name]
        + ["--rev", held.version, "-o", str(out), "--force"],  # the version read, even if stage moves on
        capture_output=True,
        text=True,
        check=False,
    )
    if got.returncode != 0:
        reason = (got.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise RegistryError(f"dvc artifacts get {artifact.name} --rev {held.version} ({stage}): {reason}")
    return held


def lineage_line(project: Path, artifact: str, version: str, topic: str) -> str | None:
    """What the version's lineage says about ``topic`` (``test.accuracy`` gives the seed group's)."""
    message = _git("tag", "--list", "--format=%(contents)", f"{artifact}@{version}", cwd=project).stdout
    return next((line.strip() for line in message.splitlines() if line.startswith(f"{topic} ")), None)


def trained_on(project: Path, commit: str, path: str) -> str | None:
    """The training machine that ``model.keras``'s ``metadata.json`` names at ``commit``."""
    import dvc.api

    try:
        with dvc.api.open(path, repo=str(project), rev=commit, mode="rb") as model:
            archive = zipfile.ZipFile(io.BytesIO(model.read()))
        return json.loads(archive.read("metadata.json")).get("trained_on")
    except Exception:  # noqa: BLE001  (lineage is best effort: a model from before the field, a cache miss)
        return None


def _next_second(project: Path, artifact: str) -> None:
    """Wait, if need be, for a second later than the artifact's newest tag: git dates tags to the
    second, and ``dvc artifacts get --stage`` takes the newest assignment by date."""
    dates = _git("for-each-ref", "--format=%(creatordate:unix)", f"refs/tags/{artifact}*", cwd=project)
    newest = max((int(date) for date in dates.stdout.split()), default=0)
    while time.time() < newest + 1:
        time.sleep(0.1)


def _delete_tags(project: Path, tags: list[str]) -> None:
    if tags:
        _git("tag", "--delete", *tags, cwd=project, check=False)


def _git(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)
