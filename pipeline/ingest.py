"""Stage 1, ingest: obtain the four Fashion-MNIST IDX files into ``data/raw/``, verified by content.

Sources are tried in order for each file: local directories (such as the Debian package's
``/usr/share/datasets/fashion-mnist``) and HTTP(S) mirrors. A file is accepted only if the SHA-256 of
its decompressed IDX bytes matches; it is then stored decompressed, so where it came from never
changes the stage's output. A cached file that still verifies is not fetched again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from pipeline import atomic
from pipeline.dataset import FILE_NAMES
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

SOURCES_ENV = "FASHION_MNIST_SOURCES"
_CHUNK = 1 << 16
_HOW_TO_SUPPLY = (
    "To supply a local copy: install the Debian package (apt-get install dataset-fashion-mnist), "
    "or put the four .gz files in a directory and list it first under ingest.sources in "
    f"params.yaml or in the {SOURCES_ENV} environment variable (comma-separated)."
)


class SourceError(Exception):
    """One source could not deliver one file."""


class IngestError(PipelineError, RuntimeError):
    """No source delivered a verified copy of a file."""


def resolve_sources(configured: Sequence[str]) -> list[str]:
    """The environment variable, when set, replaces the sources from params."""
    override = os.environ.get(SOURCES_ENV, "").strip()
    if override:
        return [s.strip() for s in override.split(",") if s.strip()]
    return list(configured)


def ingest(
    sources: Sequence[str],
    sha256: Mapping[str, str],
    raw_dir: Path,
    *,
    timeout_s: float = 30.0,
    retries: int = 3,
) -> list[Path]:
    """Make ``raw_dir`` hold the four verified, decompressed IDX files; return their paths."""
    session = _session(retries)
    paths = []
    for name in FILE_NAMES:
        target = raw_dir / name
        if target.is_file() and _sha256(target.read_bytes()) == sha256[name]:
            log.info("%s: cached copy verified, not fetched again", target)
        else:
            content = _fetch_verified(name, sha256[name], sources, session, timeout_s, retries)
            atomic.write_bytes(target, content)
            log.info("%s: written (%d bytes)", target, len(content))
        paths.append(target)
    return paths


def _fetch_verified(
    name: str,
    expected_sha256: str,
    sources: Sequence[str],
    session: requests.Session,
    timeout_s: float,
    retries: int,
) -> bytes:
    failures = []
    for source in sources:
        try:
            content = _decompress(_fetch(source, name, session, timeout_s, retries))
            digest = _sha256(content)
            if digest != expected_sha256:
                raise SourceError(f"checksum mismatch: sha256 {digest}, expected {expected_sha256}")
        except SourceError as exc:
            log.warning("%s from %s failed: %s; trying the next source", name, source, exc)
            failures.append(f"  - {source}: {exc}")
            continue
        log.info("%s: verified copy from %s", name, source)
        return content
    raise IngestError(
        f"no source delivered a verified {name}:\n" + "\n".join(failures) + "\n" + _HOW_TO_SUPPLY
    )


def _fetch(source: str, name: str, session: requests.Session, timeout_s: float, retries: int) -> bytes:
    if source.startswith(("http://", "https://")):
        return _download(f"{source.rstrip('/')}/{name}.gz", session, timeout_s, retries)
    directory = Path(source).expanduser()
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate.read_bytes()
    raise SourceError(f"neither {name}.gz nor {name} in directory {directory}")


def _download(url: str, session: requests.Session, timeout_s: float, retries: int) -> bytes:
    """GET ``url`` with a progress bar.

    The session's urllib3 ``Retry`` covers connection errors and 5xx answers; a connection dropped
    while the body streams is retried here, up to ``retries`` more times.
    """
    attempt = 0
    while True:
        try:
            response = session.get(url, stream=True, timeout=timeout_s)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise SourceError(str(exc)) from None
        total = int(response.headers.get("Content-Length", 0)) or None
        chunks = []
        try:
            with response, tqdm(total=total, unit="B", unit_scale=True, desc=url) as bar:
                for chunk in response.iter_content(_CHUNK):
                    chunks.append(chunk)
                    bar.update(len(chunk))
            return b"".join(chunks)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            attempt += 1
            if attempt > retries:
                raise SourceError(f"download broke off {attempt} times: {exc}") from None
            log.warning("%s: download broke off (%s); retrying", url, exc)


def _session(retries: int) -> requests.Session:
    retry = Retry(
        total=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET",),
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _decompress(data: bytes) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise SourceError(f"corrupt gzip data ({exc})") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
