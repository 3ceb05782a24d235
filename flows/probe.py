"""What a Dask worker must have before a sweep's trials go to it, checked on the worker itself.

:func:`worker_problems` is sent to each worker by value (this module imports only the standard
library), so it runs even where the project itself does not import: that is one of the things it
reports, as one line, instead of a worker that dies unpickling a trial.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import urllib.request
from pathlib import Path

PACKAGES = ("flows", "pipeline")


def code_fingerprint() -> str:
    """A hash of the installed project's Python files: equal on two machines running the same version."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        folder = Path(importlib.import_module(package).__file__).parent
        for path in sorted(folder.rglob("*.py")):
            digest.update(path.relative_to(folder.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def worker_problems(api_url: str, fingerprint: str, project: str | None) -> list[str]:
    """What keeps this worker from running the sweep's trials: empty when nothing does."""
    problems = []
    try:
        found = code_fingerprint()
    except Exception as exc:  # noqa: BLE001  (an editable install into a checkout it lacks, say)
        problems.append(
            f"cannot import the project ({type(exc).__name__}: {exc}); install it there, non-editable"
        )
    else:
        if found != fingerprint:
            problems.append(
                f"runs another version of the project (code {found}, the sweep's is {fingerprint})"
            )
    if os.environ.get("PREFECT_API_URL", "").rstrip("/") != api_url.rstrip("/"):
        problems.append(
            f"has PREFECT_API_URL={os.environ.get('PREFECT_API_URL')!r}, not the sweep's {api_url}"
        )
    else:
        try:
            with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=10):
                pass
        except OSError as exc:
            problems.append(f"cannot reach the Prefect API {api_url} ({exc})")
    if shutil.which("git") is None:
        problems.append("has no git on PATH")
    if project and not Path(project).is_dir():
        problems.append(f"cannot see the project {project}: give the sweep --source GIT_URL")
    return problems
