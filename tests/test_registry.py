"""The model registry for real: ``python -m flows promote`` on a reproduced project whose git origin is
served by ``git daemon`` and whose DVC remote is moto's S3, then ``dvc artifacts get`` by stage from
"another machine" (a mount namespace of its own, a clean environment, git and S3 only)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_remote_workers import listening, wait_for

from conftest import commit_all, dvc, free_port, run, start_elsewhere, stop_process_group, unshare_works
from flows.promote_flow import fashion_promote
from pipeline import registry
from test_remote import BUCKET, S3_CREDENTIALS, s3_running

pytestmark = [pytest.mark.integration, pytest.mark.server]
MODEL = "fashion-classifier"


@pytest.fixture
def origin(tmp_path: Path, reproduced: Path) -> Iterator[tuple[Path, str, str]]:
    """The reproduced project, committed, pushed to a bare origin that ``git daemon`` serves, its data
    in an S3 remote (moto); the project, the git URL and the S3 endpoint."""
    with s3_running() as s3:
        served = tmp_path / "served"
        served.mkdir()
        run("git", "init", "-q", "--bare", "-b", "main", str(served / "project.git"), cwd=served)
        port = free_port()
        daemon = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", f"--base-path={served}", "--export-all", "--enable=receive-pack"]
            + ["--listen=127.0.0.1", f"--port={port}", str(served)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(lambda: listening(port), "git daemon listens")
            url = f"git://127.0.0.1:{port}/project.git"
            run("git", "remote", "add", "origin", url, cwd=reproduced)
            dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/registry", cwd=reproduced)
            dvc("remote", "modify", "storage", "endpointurl", s3.endpoint, cwd=reproduced)
            commit_all(reproduced, "a run")
            run("git", "push", "-q", "origin", "main", cwd=reproduced)
            yield reproduced, url, s3.endpoint
        finally:
            stop_process_group(daemon)


def promote(project: Path, **arguments) -> dict:
    state = fashion_promote(
        seeds=2, in_process=True, project_dir=str(project), return_state=True, **arguments
    )
    assert state.is_completed(), state.message
    return state.result()


def tags(project: Path, remote: bool = False) -> set[str]:
    if remote:
        listed = run("git", "ls-remote", "--tags", "origin", cwd=project).stdout.split()
        names = [ref.removeprefix("refs/tags/") for ref in listed if ref.startswith("refs/tags/")]
        return {name for name in names if not name.endswith("^{}")}  # not the annotated tags' peeled lines
    return set(run("git", "tag", "--list", cwd=project).stdout.split())


def held(project: Path, stage: str) -> str | None:
    version = registry.stage_version(project, MODEL, stage)
    return version.version if version else None


def test_promotion_registers_refuses_the_same_configuration_forces_rolls_back_and_fetches_by_stage(
    origin: tuple[Path, str, str], prefect_api: str, tmp_path: Path
) -> None:
    project, url, endpoint = origin
    first_commit = run("git", "rev-parse", "HEAD", cwd=project).stdout.strip()

    # Nothing tagged on a dry run; the first version of a stage needs no comparison.
    dry = promote(project, stage="staging", dry_run=True)
    assert not dry["assigned"] and "without a comparison" in dry["reason"] and tags(project) == set()
    first = promote(project, stage="staging")
    assert first["assigned"] and set(first["tags"]) == {f"{MODEL}@v0.0.1", f"{MODEL}#staging#1"}
    assert tags(project, remote=True) == tags(project) == set(first["tags"])  # pushed together
    lineage = run("git", "tag", "--list", "--format=%(contents)", f"{MODEL}@v0.0.1", cwd=project).stdout
    assert f"commit {first_commit[:7]}" in lineage and "test.accuracy over 2 seed(s): " in lineage
    assert "dataset sha256: {" in lineage and "trained on: the CPU (" in lineage, lineage

    # A commit that changes nothing the model depends on: refused in one line, nothing tagged.
    (project / "NOTES.md").write_text("a note\n")
    commit_all(project, "a note")
    run("git", "push", "-q", "origin", "main", cwd=project)
    same = promote(project, stage="staging")
    assert not same["assigned"] and "same configuration" in same["reason"]
    assert tags(project) == set(first["tags"]) and held(project, "staging") == "v0.0.1"

    # Forced: assigned all the same, and the tag says who forced it.
    forced = promote(project, stage="staging", force=True)
    assert forced["assigned"] and held(project, "staging") == "v0.0.2"
    who = run("git", "config", "user.name", cwd=project).stdout.strip()
    assignment = run("git", "tag", "--list", "--format=%(contents)", forced["tags"][-1], cwd=project).stdout
    assert f"forced by {who}" in assignment

    # Rolled back: the previous version, assigned again (GTO's new #staging#N tag; nothing deleted).
    back = promote(project, stage="staging", rev=first_commit, force=True)
    assert back["assigned"] and held(project, "staging") == "v0.0.1"
    assert tags(project, remote=True) == tags(project)

    # The report compares the workspace with the stage's version.
    report = subprocess.run(
        [sys.executable, "-m", "pipeline", "report", "--base", f"{MODEL}#staging"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0 and "test.accuracy" in report.stdout, report.stderr

    # Another machine with git and S3 only fetches the stage's model by name.
    if not unshare_works():
        pytest.skip("the kernel refuses unshare --mount here: no process can hide this machine's files")
    home = tmp_path / "elsewhere"
    home.mkdir()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home), "DVC_NO_ANALYTICS": "1"}
    fetch = [
        sys.executable,
        "-m",
        "dvc",
        "artifacts",
        "get",
        url,
        MODEL,
        "--stage",
        "staging",
        "-o",
        "got.keras",
    ]
    log = home / "fetch.log"
    process = start_elsewhere(fetch, hidden=[project], env=env | S3_CREDENTIALS, cwd=home, log=log)
    assert process.wait(timeout=120) == 0, log.read_text()
    expected = run(
        "dvc",
        "get",
        ".",
        "models/model.keras",
        "--rev",
        first_commit,
        "-o",
        str(tmp_path / "v1"),
        cwd=project,
    )
    assert expected.returncode == 0
    digest = [hashlib.sha256(path.read_bytes()).hexdigest() for path in (home / "got.keras", tmp_path / "v1")]
    assert digest[0] == digest[1]
    assert endpoint in (project / ".dvc/config").read_text()  # the endpoint came with the commit


def test_bad_promotions_are_one_line_and_change_nothing(reproduced: Path) -> None:
    commit_all(reproduced, "a run")

    def refused(*arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "flows", "promote", *arguments],
            cwd=reproduced,
            capture_output=True,
            text=True,
            env=os.environ | {"PREFECT_API_URL": "http://127.0.0.1:9/api"},  # never reached
        )
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        return result.stderr

    assert "unknown stage 'production'; the registry's stages are dev, staging, prod" in refused(
        "--stage", "production", "--dry-run"
    )
    assert "no experiment 'nope'" in refused("--exp", "nope", "--dry-run")
    assert "is not a commit" in refused("--rev", "no-such-branch", "--dry-run")
    assert "no DVC remote is set" in refused("--stage", "staging")
    (reproduced / "params.yaml").write_text((reproduced / "params.yaml").read_text() + "\n")
    assert "uncommitted changes" in refused("--dry-run")
    with pytest.raises(registry.RegistryError, match="not GTO's format"):
        registry.resolve(reproduced, f"{MODEL}@1.2")
    with pytest.raises(registry.RegistryError, match="holds no version yet"):
        registry.resolve(reproduced, f"{MODEL}#prod")
    assert run("git", "tag", "--list", cwd=reproduced).stdout == ""
