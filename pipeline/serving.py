"""The model server behind ``python -m pipeline serve``: a FastAPI app that uvicorn runs.

- ``POST /predict``: one input in the body (PNG, JPEG, ... or a ``.npy`` / IDX batch), decoded and
  capped by :mod:`pipeline.inputs` and classified by :func:`pipeline.model.inference.classify`, as
  ``predict`` does; the answer holds, per image, what ``predict --json`` prints.
- ``GET /health``: 503 ``loading`` until the model is in memory, then 200 ``ready``.
- ``GET /model``: what is served: the registry's version, stage, commit and seed group's test
  accuracy, or the file's path and SHA-256.
- ``POST /reload``: load the source again (a stage's current version) and switch to it; requests in
  flight finish on the model they started with.

Bad input is a 4xx whose ``detail`` is one line, and the server goes on serving: a body over
:data:`MAX_REQUEST_BYTES`, a client that does not finish its body in time (:data:`BODY_TIMEOUT_S`), a type
that is not an image or array, more than :data:`MAX_IMAGES_PER_REQUEST` images, and whatever
``predict`` refuses (decompression and pixel caps, broken files).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pipeline import inputs, registry
from pipeline.core.dataset import CLASS_NAMES, InputError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 << 20  # a request's body: a 12-megapixel JPEG, or 20,000 images as .npy
MAX_IMAGES_PER_REQUEST = 1_024  # "a small batch": larger ones belong to `python -m flows classify`
BODY_TIMEOUT_S = 10.0  # a client that has not sent its whole body by then gets 408 (--body-timeout)
SETTINGS_ENV = "FASHION_SERVE_SETTINGS"  # what the command tells uvicorn's workers to serve
CONTENT_TYPES = {  # what a body may declare; its content decides how it is read
    "application/octet-stream",
    "application/x-npy",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "image/webp",
}


@dataclass(frozen=True)
class Served:
    """A loaded model and what ``GET /model`` says about it."""

    classifier: Any  # pipeline.model.inference.Classifier (TensorFlow loads with the model, not here)
    about: dict[str, Any]


def from_file(path: Path) -> Callable[[], Served]:
    """The model in ``path``, named by its SHA-256."""

    def load() -> Served:
        from pipeline.model.inference import Classifier

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return Served(Classifier.load(path), {"path": str(path), "sha256": digest})

    return load


def from_stage(project: Path, stage: str, artifact: str | None = None) -> Callable[[], Served]:
    """The version that ``stage`` of ``project``'s registry holds when called, fetched with
    ``dvc artifacts get`` (after ``git fetch --tags`` where the project has an ``origin``)."""
    model = registry.declared_model(project, artifact)
    registry.check_stage(stage)

    def load() -> Served:
        from pipeline.model.inference import Classifier

        with tempfile.TemporaryDirectory(prefix="fashion-serve-") as folder:
            fetched = Path(folder) / "model.keras"
            held = registry.fetch_stage_model(project, model, stage, fetched)
            classifier = Classifier.load(fetched)
        about = {
            "artifact": model.name,
            "version": held.version,
            "stage": stage,
            "commit": held.commit,
            "test_accuracy": registry.lineage_line(project, model.name, held.version, "test.accuracy"),
        }
        return Served(classifier, about)

    return load


def app_from_environment() -> FastAPI:
    """The app that :data:`SETTINGS_ENV` describes (JSON: ``model``, or ``project`` and ``stage``;
    ``body_timeout_s``): each of uvicorn's worker processes builds its own."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    if settings.get("stage"):
        load = from_stage(Path(settings["project"]), settings["stage"])
    else:
        load = from_file(Path(settings["model"]))
    return create_app(load, body_timeout_s=settings.get("body_timeout_s", BODY_TIMEOUT_S))


@dataclass
class _State:
    load: Callable[[], Served]
    served: Served | None = None
    failure: str | None = None
    predicting: threading.Lock = field(default_factory=threading.Lock)
    reloading: asyncio.Lock = field(default_factory=asyncio.Lock)


def create_app(load: Callable[[], Served], body_timeout_s: float = BODY_TIMEOUT_S) -> FastAPI:
    """The app, loading its model in the background from start-up on (``/health`` answers at once)."""
    state = _State(load)

    def first_load() -> None:
        try:
            state.served = load()
            log.info("serving %s", state.served.about)
        except Exception as exc:  # noqa: BLE001  (any failure is reported by /health, in one line)
            state.failure = " ".join(str(exc).split()) or type(exc).__name__
            log.error("the model did not load: %s", state.failure)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=first_load, name="model-load", daemon=True).start()
        yield

    app = FastAPI(title="fashion-pipeline", lifespan=lifespan)

    def served() -> Served:
        if state.served is None:
            raise HTTPException(503, state.failure or "the model is loading: GET /health says when")
        return state.served

    @app.get("/health")
    def health() -> Any:
        if state.served is not None:
            return {"status": "ready"}
        status = {"status": "failed", "error": state.failure} if state.failure else {"status": "loading"}
        return JSONResponse(status, status_code=503)

    @app.get("/model")
    def about() -> dict[str, Any]:
        return served().about

    @app.post("/predict")
    async def predict(request: Request, top_k: int = 3) -> dict[str, Any]:
        if not 1 <= top_k <= len(CLASS_NAMES):
            raise HTTPException(422, f"top_k must be 1 to {len(CLASS_NAMES)}; got {top_k}")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in CONTENT_TYPES:
            raise HTTPException(
                415,
                f"content type {kind or 'none'!r}: send an image, a .npy or an IDX file as "
                "application/octet-stream or image/*",
            )
        body = await _body(request, body_timeout_s)
        model = served()
        try:
            pixels = await run_in_threadpool(inputs.decode, io.BytesIO(body), "the request's body")
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        if len(pixels) > MAX_IMAGES_PER_REQUEST:
            raise HTTPException(
                413,
                f"{len(pixels):,} images in one request; at most {MAX_IMAGES_PER_REQUEST:,} "
                "(`python -m flows classify` takes folders)",
            )
        predictions = await run_in_threadpool(_classify, state.predicting, model, pixels, top_k)
        version = model.about.get("version") or model.about.get("sha256")
        return {
            "model": version,
            "predictions": [{"index": i, **p.as_dict()} for i, p in enumerate(predictions)],
        }

    @app.post("/reload")
    async def reload() -> dict[str, Any]:
        async with state.reloading:
            try:
                state.served = await run_in_threadpool(load)
            except Exception as exc:  # noqa: BLE001  (the old model goes on serving)
                raise HTTPException(502, f"reload failed, still serving the old model: {exc}") from None
            state.failure = None
        log.info("reloaded: serving %s", state.served.about)
        return state.served.about

    return app


def _classify(lock: threading.Lock, model: Served, pixels: Any, top_k: int) -> list:
    from pipeline.model.inference import classify

    with lock:  # one batch at a time: two cores are faster on one than shared by two
        return classify(pixels, model.classifier, top_k=top_k)


async def _body(request: Request, timeout_s: float) -> bytes:
    """The body, refused once over MAX_REQUEST_BYTES or when it takes over ``timeout_s``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise HTTPException(413, f"a body of {int(declared):,} bytes; at most {MAX_REQUEST_BYTES:,}")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                raise HTTPException(413, f"a body over {MAX_REQUEST_BYTES:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        body = await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {timeout_s:g} s") from None
    if not body:
        raise HTTPException(400, "an empty body: send one image, .npy or IDX file")
    return body
