"""The model registry for real: ``python -m flows promote`` on a reproduced project whose git origin is
served by ``git daemon`` and whose DVC remote is moto's S3, then ``dvc artifacts get`` by stage from
"another machine" (a mount namespace of its own, a clean environment, git and S3 only)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from test_remote_workers import listening, wait_for

from conftest import (
    commit_all,
    dvc,
    free_port,
    run,
    start_elsewhere,
    stop_process_group,
    unshare_works,
)
from flows.promote_flow import fashion_promote, model_md5
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


def promote(project: Path, seeds: int = 2, **arguments) -> dict:
    state = fashion_promote(
        seeds=seeds, in_process=True, project_dir=str(project), return_state=True, **arguments
    )
    assert state.is_completed(), state.message
    return state.result()


def commit_run(project: Path, message: str, change: Callable[[dict], None]) -> None:
    """Change ``train``'s params, reproduce, commit and push: a new version's candidate."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params["train"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", cwd=project)
    commit_all(project, message)
    run("git", "push", "-q", "origin", "main", cwd=project)


def tags(project: Path, remote: bool = False) -> set[str]:
    if remote:
        listed = run("git", "ls-remote", "--tags", "origin", cwd=project).stdout.split()
        names = [ref.removeprefix("refs/tags/") for ref in listed if ref.startswith("refs/tags/")]
        return {name for name in names if not name.endswith("^{}")}  # not the annotated tags' peeled lines
    return set(run("git", "tag", "--list", cwd=project).stdout.split())


def held(project: Path, stage: str) -> str | None:
    version = registry.stage_version(project, MODEL, stage)
    return version.version if version else None


def test_promotion_beyond_seed_noise_only_forced_rolled_back_and_fetched_by_stage(
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

    # A change within seed noise is refused, naming the interval.
    commit_run(project, "less dropout", lambda train: train["model"]["dense"].update(dropout=0.25))
    within = promote(project, stage="staging")
    assert not within["assigned"] and "within seed noise, so staging keeps its version" in within["reason"]
    assert "95% interval" in within["reason"] and "2 seeds against 2 seeds" in within["reason"]
    assert tags(project) == set(first["tags"])

    # The stage's version must be fetchable: with its model gone from the remote, nothing happens.
    boto3.resource("s3", endpoint_url=endpoint).Bucket(BUCKET).objects.filter(Prefix="registry/").delete()
    missing = fashion_promote(seeds=2, in_process=True, project_dir=str(project), return_state=True)
    assert missing.is_failed() and "v0.0.1 (commit" in missing.message, missing.message
    assert "is not in the DVC remote" in missing.message and "dvc push" in missing.message
    dvc("push", "--all-commits", cwd=project)

    # A change beyond seed noise is assigned, its params' diff in its lineage (3 seeds a side: with
    # 2, Welch's t has one degree of freedom and its interval spans +-12.7 standard errors).
    commit_run(project, "longer training", lambda train: train.update(epochs=15))
    beyond = promote(project, seeds=3, stage="staging")
    beyond_commit = run("git", "rev-parse", "HEAD", cwd=project).stdout.strip()
    assert beyond["assigned"] and beyond["reason"].endswith("beyond seed noise"), beyond["reason"]
    assert held(project, "staging") == "v0.0.2" and tags(project, remote=True) == tags(project)
    lineage = run("git", "tag", "--list", "--format=%(contents)", f"{MODEL}@v0.0.2", cwd=project).stdout
    assert "params changed since v0.0.1: train.epochs 3 -> 15" in lineage, lineage

    # A commit that changes nothing the model depends on: refused in one line, nothing tagged.
    (project / "NOTES.md").write_text("a note\n")
    commit_all(project, "a note")
    run("git", "push", "-q", "origin", "main", cwd=project)
    same = promote(project, stage="staging")
    assert not same["assigned"] and "same configuration" in same["reason"]
    assert held(project, "staging") == "v0.0.2"

    # Forced: assigned all the same, and the tag says who forced it.
    forced = promote(project, stage="staging", force=True)
    assert forced["assigned"] and held(project, "staging") == "v0.0.3"
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

    # Another machine with git and S3 only fetches the models by stage and by version.
    if not unshare_works():
        pytest.skip("the kernel refuses unshare --mount here: no process can hide this machine's files")
    home = tmp_path / "elsewhere"
    home.mkdir()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home), "DVC_NO_ANALYTICS": "1"}
    get = f"{sys.executable} -m dvc artifacts get {url} {MODEL}"
    fetch = ["bash", "-c", f"{get} --stage staging -o staging.keras && {get} --rev v0.0.2 -o v0.0.2.keras"]
    log = home / "fetch.log"
    process = start_elsewhere(fetch, hidden=[project], env=env | S3_CREDENTIALS, cwd=home, log=log)
    assert process.wait(timeout=120) == 0, log.read_text()
    for got, commit in ((home / "staging.keras", first_commit), (home / "v0.0.2.keras", beyond_commit)):
        assert hashlib.md5(got.read_bytes()).hexdigest() == model_md5(project, commit, "models/model.keras")
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
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["train"]["epochs"] += 1
    (reproduced / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(reproduced, "params that no run trained")
    assert "dvc.lock is stale: its model was trained with other params" in refused("--dry-run")
    run("git", "rm", "-q", "dvc.lock", cwd=reproduced)
    commit_all(reproduced, "no lock")
    assert "records no models/model.keras in its dvc.lock" in refused("--dry-run")
    (reproduced / "params.yaml").write_text((reproduced / "params.yaml").read_text() + "\n")
    assert "uncommitted changes" in refused("--dry-run")
    with pytest.raises(registry.RegistryError, match="not GTO's format"):
        registry.resolve(reproduced, f"{MODEL}@1.2")
    with pytest.raises(registry.RegistryError, match="holds no version yet"):
        registry.resolve(reproduced, f"{MODEL}#prod")
    assert run("git", "tag", "--list", cwd=reproduced).stdout == ""
