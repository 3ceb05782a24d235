"""``python -m pipeline serve``: the trained model over HTTP (:mod:`pipeline.serving`), on uvicorn.

``--model PATH`` serves a file (default: the project's ``models/model.keras``); ``--stage prod``
serves the version that the registry's stage holds, fetched with ``dvc artifacts get``, and
``POST /reload`` switches to the stage's newest one. Everything is checked before the server starts.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from pipeline import registry, serving
from pipeline.commands import run_command
from pipeline.commands.project import project_paths, project_root
from pipeline.core.dataset import InputError


def serve(
    model: Path | None, stage: str | None, host: str, port: int, workers: int, body_timeout_s: float
) -> int:
    """Check the source, then run the app until interrupted (uvicorn's workers each load the model)."""
    import uvicorn

    if workers < 1:
        raise InputError(f"--workers must be 1 or more; got {workers}")
    if not body_timeout_s > 0:
        raise InputError(f"--body-timeout must be above 0 seconds; got {body_timeout_s}")
    settings: dict = {"body_timeout_s": body_timeout_s}
    if stage:
        registry.declared_model(project := project_root())
        settings |= {"project": str(project), "stage": registry.check_stage(stage)}
    else:
        path = (model or project_paths().keras_model).resolve()
        if not path.is_file():
            raise InputError(f"{path}: no such model file; train one with `dvc repro train`")
        settings["model"] = str(path)
    os.environ[serving.SETTINGS_ENV] = json.dumps(settings)
    uvicorn.run(
        "pipeline.serving:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline serve",
        description="Serve the model over HTTP: POST /predict (an image, .npy or IDX body), GET /health, "
        "GET /model, POST /reload.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="a .keras file (default: models/model.keras)")
    source.add_argument("--stage", help="the registry stage whose version to serve: dev, staging or prod")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="the port (default: 8000)")
    parser.add_argument("--workers", type=int, default=1, help="processes, each with the model (default: 1)")
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=serving.BODY_TIMEOUT_S,
        metavar="S",
        help=f"seconds a client has to send its request's body (default: {serving.BODY_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)
    return run_command(
        "serve",
        lambda: serve(args.model, args.stage, args.host, args.port, args.workers, args.body_timeout),
    )


if __name__ == "__main__":
    raise SystemExit(main())
