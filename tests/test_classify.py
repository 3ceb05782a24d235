"""``python -m flows classify`` for real: a folder of good, hostile and duplicate files classified
with a registry stage's model on the session's Prefect server, as ``predict`` classifies them; then
a rerun that takes the unchanged chunks from Prefect's cache."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.states import State
from test_serve import gzip_bomb

from conftest import commit_all, run
from flows.classify_flow import CLASSIFY_ARTIFACT, COLUMNS, fashion_classify
from pipeline import registry
from pipeline.core.paths import Paths
from pipeline.core.splits import load_split

pytestmark = [pytest.mark.integration, pytest.mark.server]
MODEL = "fashion-classifier"


def chunk_states(state: State) -> list[str]:
    """The names of the final states of the ``classify-chunk`` task runs of a classify flow run."""
    parent = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[child.id for child in children]))
        )
    return sorted(run.state.name for run in runs if run.name.startswith("classify-chunk"))


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_a_folder_is_classified_hostile_files_are_rows_and_a_rerun_takes_done_chunks_from_the_cache(
    reproduced: Path, prefect_api: str, tmp_path: Path
) -> None:
    commit_all(reproduced, "a run")
    commit = run("git", "rev-parse", "HEAD", cwd=reproduced).stdout.strip()
    identity = ("Test Promoter", "promoter@example.com")
    registry.record(reproduced, MODEL, commit, "prod", lineage="", assignment="first", identity=identity)

    images = load_split(Paths(reproduced).split("test")).x[:7]
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    for index, pixels in enumerate(images[:6]):
        Image.fromarray(pixels).save(folder / ("sub" if index % 2 else ".") / f"{index}.png")
    shutil.copy(folder / "0.png", folder / "sub" / "0-again.png")  # a duplicate: its own row
    buffer = io.BytesIO()
    np.save(buffer, images[4:7])
    (folder / "three.npy").write_bytes(buffer.getvalue())
    jpeg = io.BytesIO()
    Image.fromarray(images[6]).save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[:150])
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "bomb.gz").write_bytes(gzip_bomb())  # 300 MiB once decompressed

    out = tmp_path / "predictions.csv"
    arguments = {"folder": str(folder), "out": str(out), "chunk_files": 3, "project_dir": str(reproduced)}
    first = fashion_classify(**arguments, return_state=True)
    assert first.is_completed(), first.message
    rows = rows_of(out)
    assert tuple(rows[0]) == COLUMNS and {row["model_version"] for row in rows} == {"v0.0.1"}
    good = [row for row in rows if not row["error"]]
    bad = {Path(row["path"]).name: row["error"] for row in rows if row["error"]}
    assert len(good) == 6 + 1 + 3  # the PNGs, the duplicate, the .npy's three images
    assert set(bad) == {"truncated.jpg", "notes.txt", "empty.png", "bomb.gz"}, bad
    assert "broken image file" in bad["truncated.jpg"] and "not an image" in bad["notes.txt"]
    assert "once decompressed" in bad["bomb.gz"]

    # The classes predict gives the same files.
    pngs = sorted(str(path) for path in folder.rglob("*.png") if path.stat().st_size)
    printed = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", "--json", *pngs],
        cwd=reproduced,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = {json.loads(line)["path"]: json.loads(line)["class"] for line in printed.splitlines()}
    assert {row["path"]: row["class"] for row in good if row["path"].endswith(".png")} == expected
    by_path = {row["path"]: row["class"] for row in good}
    assert by_path[str(folder / "0.png")] == by_path[str(folder / "sub" / "0-again.png")]

    with get_client(sync_client=True) as client:
        (summary,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[CLASSIFY_ARTIFACT])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[first.state_details.flow_run_id])),
        )
    assert "10 image(s)" in summary.data and "4 file(s) refused" in summary.data

    # The same folder and version again: every chunk from the cache but the one whose file changed.
    chunks = len(chunk_states(first))
    assert chunk_states(first) == ["Completed"] * chunks
    (folder / "notes.txt").write_text("changed, and still not an image\n")
    again = fashion_classify(**arguments, return_state=True)
    assert again.is_completed(), again.message
    assert chunk_states(again) == ["Cached"] * (chunks - 1) + ["Completed"]
    assert rows_of(out) == rows


def test_bad_classify_arguments_are_one_line_before_any_server(reproduced: Path, tmp_path: Path) -> None:
    def refused(*arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "flows", "classify", *arguments],
            cwd=reproduced,
            capture_output=True,
            text=True,
            env=os.environ | {"PREFECT_API_URL": "http://127.0.0.1:9/api"},  # never reached
        )
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        return result.stderr

    assert "no-such-folder: no such folder" in refused("no-such-folder")
    assert "unknown stage 'production'" in refused(str(tmp_path), "--stage", "production")
    assert "missing.keras: no such model file" in refused(str(tmp_path), "--model", "missing.keras")
