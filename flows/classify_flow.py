"""The Prefect flow ``fashion-classify``: every image under a folder, classified with a registry
stage's model (or a model file), into one CSV row per image.

- **Chunks as tasks.** The files, found recursively in sorted order, go in chunks of
  :data:`CHUNK_FILES` to ``classify-chunk`` tasks: here, one after another, or on Dask with
  ``workers`` / ``dask_address`` (those workers must see the folder and the model file). Each process
  loads the model once; the pixels go through ``predict``'s decoding (:mod:`pipeline.inputs`) and
  inference (:func:`pipeline.model.inference.classify`).
- **Reruns skip done chunks.** A chunk's rows are cached by Prefect under its files' paths, sizes
  and modification times, the model's version and the task's code: the same folder and version
  again classifies only the chunks whose files changed.
- **Bad files are rows, not failures.** An unreadable or hostile file gets a row with the reason in
  ``error``; the batch goes on.
- The CSV is written atomically; the ``fashion-classify`` artifact counts the classes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.client.orchestration import get_client

from flows import workspace
from flows.sweep_flow import task_runner
from pipeline import registry
from pipeline.core import atomic
from pipeline.core.dataset import InputError

CHUNK_FILES = 256  # files per task: about 2 s of work, few enough tasks for Prefect to track
COLUMNS = ("path", "index", "class", "label", "probability", "model_version", "error")
CLASSIFY_ARTIFACT = "fashion-classify"
_classifiers: dict[str, Any] = {}  # per process: a Dask worker loads each model file once


@dataclass(frozen=True)
class ModelFile:
    """The model a batch uses: a ``.keras`` file and the version its rows name."""

    path: str
    version: str


def model_file(project: Path, stage: str, model: str | None) -> ModelFile:
    """``model`` (named by its SHA-256), or the version ``stage`` holds, fetched with ``dvc artifacts
    get`` into the project's ``.dvc/tmp`` once per version."""
    if model:
        path = Path(model).resolve()
        if not path.is_file():
            raise InputError(f"{model}: no such model file")
        return ModelFile(str(path), "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:12])
    artifact = registry.declared_model(project)
    folder = workspace.runs_dir(project).parent / "registry"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        fetched = Path(scratch) / "model.keras"
        held = registry.fetch_stage_model(project, artifact, registry.check_stage(stage), fetched)
        versioned = folder / f"{artifact.name}@{held.version}.keras"
        os.replace(fetched, versioned)
    return ModelFile(str(versioned), held.version)


def image_files(folder: Path) -> list[tuple[str, int, int]]:
    """Every file under ``folder`` (symbolic links not followed), sorted: path, size, mtime in ns."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            try:
                status = path.lstat()
            except OSError:  # gone meanwhile: its row says so
                status = None
            found.append((str(path), status.st_size if status else -1, status.st_mtime_ns if status else -1))
    return sorted(found)


@task(
    name="classify-chunk",
    cache_policy=(INPUTS - "model_path") + TASK_SOURCE,
    persist_result=True,
    retries=1,
)
def classify_chunk(files: list[tuple[str, int, int]], model_path: str, model_version: str) -> list[dict]:
    """The rows of ``files``: one per image, or one per unreadable file with the reason."""
    from pipeline.inputs import read_inputs
    from pipeline.model.inference import Classifier, classify_inputs

    if model_path not in _classifiers:
        _classifiers[model_path] = Classifier.load(Path(model_path))
    rows: list[dict] = []
    readable = []
    for path, _, _ in files:
        try:
            readable.append((path, read_inputs(Path(path))))
        except InputError as exc:
            rows.append({"path": path, "model_version": model_version, "error": str(exc)})
    if readable:
        for path, index, prediction in classify_inputs(readable, _classifiers[model_path], top_k=1):
            shown = {key: value for key, value in prediction.as_dict().items() if key != "top_k"}
            rows.append({"path": path, "index": index, **shown, "model_version": model_version})
    return sorted(rows, key=lambda row: (row["path"], row.get("index", 0)))


@flow(name="fashion-classify-chunks")
def classify_chunks(folder: str, chunk_files: int, model: ModelFile) -> list[dict]:
    """The files under ``folder`` in chunks, each a task on this flow's task runner; their rows."""
    files = image_files(Path(folder))
    chunks = [files[start : start + chunk_files] for start in range(0, len(files), chunk_files)]
    get_run_logger().info("%d file(s) in %d chunk(s), model %s", len(files), len(chunks), model.version)
    futures = classify_chunk.map(chunks, model.path, model.version)
    return [row for future in futures for row in future.result()]


@flow(name="fashion-classify")
def fashion_classify(
    folder: str,
    out: str = "predictions.csv",
    stage: str = "prod",
    model: str | None = None,
    chunk_files: int = CHUNK_FILES,
    workers: int | None = None,
    dask_address: str | None = None,
    project_dir: str = ".",
) -> dict[str, Any]:
    """Classify every file under ``folder`` with ``stage``'s model (or the file ``model``) into the
    CSV ``out``; returns its path, the counts per class and the files refused."""
    logger = get_run_logger()
    root = Path(folder).resolve()
    if not root.is_dir():
        raise InputError(f"{folder}: no such folder")
    chosen = model_file(Path(project_dir).resolve(), stage, model)
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    in_process = workers is None and dask_address is None
    runner = task_runner(workers, dask_address, in_process, api_url)
    rows = classify_chunks.with_options(task_runner=runner)(str(root), chunk_files, chosen)
    write_csv(Path(out), rows)
    classes = Counter(row["class"] for row in rows if not row.get("error"))
    refused = [row for row in rows if row.get("error")]
    create_markdown_artifact(
        summary(root, chosen, classes, refused), key=CLASSIFY_ARTIFACT, description=f"Classes under {root}"
    )
    logger.info("%s: %d image(s) classified, %d file(s) refused", out, sum(classes.values()), len(refused))
    return {"csv": str(Path(out).resolve()), "classes": dict(classes), "refused": len(refused)}


def write_csv(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic.atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())


def summary(root: Path, model: ModelFile, classes: Counter, refused: list[dict]) -> str:
    lines = [f"## {sum(classes.values())} image(s) under `{root}`, model {model.version}", ""]
    lines += ["| class | images |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in classes.most_common()]
    if refused:
        lines += ["", f"{len(refused)} file(s) refused, e.g. `{refused[0]['path']}`: {refused[0]['error']}"]
    return "\n".join(lines) + "\n"
