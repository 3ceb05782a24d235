"""Stage 1, ingest: obtain the four Fashion-MNIST IDX files into ``data/raw/``, verified by content.

It is also the pipeline's gate: it depends on the whole ``params.yaml`` and the stage command line
validates the whole file (and this stage the dataset spec) before anything runs. Its output persists
(DVC does not delete it first), so a bad value anywhere stops ``dvc repro`` here with every output
in place; a valid edit reverifies the cached files in a second and reruns only the stages whose
params changed.

Sources are tried in order for each file: local directories (such as the Debian package's
``/usr/share/datasets/fashion-mnist``, or a ``file://`` URL) and HTTP(S) mirrors. A file is accepted
only if the SHA-256 of its decompressed IDX bytes matches; it is then stored decompressed, so where it
came from never changes the stage's output. A cached file that still verifies is not fetched again.

Nothing a source sends is trusted to be small or quick: downloads and decompression stream to disk
through a size cap (``max_bytes``), each file from each source has a wall-clock deadline
(``deadline_s``, which a mirror trickling bytes cannot dodge), and a source that cannot be reached is
not asked again for the remaining files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from pipeline.core import atomic, stage_cli
from pipeline.core.dataset import FILE_NAMES, TRAIN_LABELS
from pipeline.core.errors import PipelineError
from pipeline.core.idx import read_idx
from pipeline.core.params import Params, check_source, load_dataset_spec
from pipeline.core.paths import Paths
from pipeline.core.splits import check_split

log = logging.getLogger(__spec__.name)  # "pipeline.stages.x", also when run as __main__

SOURCES_ENV = "FASHION_MNIST_SOURCES"
MIB = 1 << 20
_CHUNK = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
_HOW_TO_SUPPLY = (
    "To supply a local copy: install the Debian package (apt-get install dataset-fashion-mnist), "
    "or put the four .gz files in a directory and list it first under sources in "
    f"datasets/fashion-mnist.yaml or in the {SOURCES_ENV} environment variable (comma-separated)."
)


class SourceError(Exception):
    """One source could not deliver one file."""


class Unreachable(SourceError):
    """The source does not answer at all: not worth asking for the other files."""


class IngestError(PipelineError, RuntimeError):
    """No source delivered a verified copy of a file, or the sources are malformed."""


def resolve_sources(configured: Sequence[str]) -> list[str]:
    """The environment variable, when set, replaces the dataset spec's sources; each is checked."""
    override = os.environ.get(SOURCES_ENV)
    if override is None:
        return list(configured)
    sources = [source.strip() for source in override.split(",") if source.strip()]
    if not sources:
        raise IngestError(f"{SOURCES_ENV}={override!r} names no source; unset it to use the dataset spec")
    for source in sources:
        try:
            check_source(source)
        except ValueError as exc:
            raise IngestError(f"{SOURCES_ENV}: {exc}") from None
    return sources


def main(params: Params, paths: Paths) -> None:
    """The stage's command: the dataset spec's files (its sources possibly replaced by the
    environment), within the ``ingest.*`` limits from params."""
    section, spec = params.ingest, load_dataset_spec(paths.dataset_spec)
    ingest(
        resolve_sources(spec.sources),
        spec.sha256,
        paths.raw_dir,
        timeout_s=section.timeout_s,
        retries=section.retries,
        deadline_s=section.deadline_s,
        max_bytes=section.max_mib * MIB,
    )
    # The params that only fail with the data in hand, checked while every output is still in place.
    split = params.preprocess
    check_split(read_idx(paths.raw_dir / TRAIN_LABELS), test_size=split.test_size, stratify=split.stratify)


def ingest(
    sources: Sequence[str],
    sha256: Mapping[str, str],
    raw_dir: Path,
    *,
    timeout_s: float = 30.0,
    retries: int = 3,
    deadline_s: float = 300.0,
    max_bytes: int = 64 * MIB,
) -> list[Path]:
    """Make ``raw_dir`` hold the four verified, decompressed IDX files; return their paths.

    Nothing else: DVC tracks the whole folder, so a file ingest did not write is refused, not versioned.
    """
    strangers = sorted(
        entry.name
        for entry in (raw_dir.iterdir() if raw_dir.is_dir() else ())
        if entry.name not in FILE_NAMES and not atomic.is_temporary(entry)
    )
    if strangers:
        shown = ", ".join(strangers[:5]) + (f" and {len(strangers) - 5} more" if len(strangers) > 5 else "")
        where = f" (a link to {raw_dir.resolve()})" if raw_dir.is_symlink() else ""
        raise IngestError(
            f"{raw_dir}{where} holds files that are not the dataset's: {shown}. DVC would version them "
            f"as part of {raw_dir}; move them elsewhere"
        )
    fetch = _Fetcher(_session(retries), timeout_s, retries, deadline_s, max_bytes)
    paths = []
    for name in FILE_NAMES:
        target = raw_dir / name
        if target.is_file() and _file_sha256(target) == sha256[name]:
            log.info("%s: cached copy verified, not fetched again", target)
        else:
            fetch.verified(name, sha256[name], sources, target)
            log.info("%s: written (%d bytes)", target, target.stat().st_size)
        paths.append(target)
    return paths


class _Fetcher:
    """Fetches files from sources within the limits, remembering the sources that do not answer."""

    def __init__(
        self, session: requests.Session, timeout_s: float, retries: int, deadline_s: float, max_bytes: int
    ) -> None:
        self.session = session
        self.timeout_s, self.retries, self.deadline_s, self.max_bytes = (
            timeout_s,
            retries,
            deadline_s,
            max_bytes,
        )
        self.unreachable: dict[str, str] = {}

    def verified(self, name: str, expected_sha256: str, sources: Sequence[str], target: Path) -> None:
        """Write the first copy of ``name`` whose content matches ``expected_sha256`` to ``target``."""
        failures = []
        for source in sources:
            if source in self.unreachable:
                failures.append(f"  - {source}: not asked again, {self.unreachable[source]}")
                continue
            try:
                with atomic.atomic_path(target) as tmp:
                    digest = self.fetch(source, name, tmp)
                    if digest != expected_sha256:
                        raise SourceError(f"checksum mismatch: sha256 {digest}, expected {expected_sha256}")
            except SourceError as exc:
                if isinstance(exc, Unreachable):
                    self.unreachable[source] = str(exc)
                log.warning("%s from %s failed: %s; trying the next source", name, source, exc)
                failures.append(f"  - {source}: {exc}")
                continue
            log.info("%s: verified copy from %s", name, source)
            return
        raise IngestError(
            f"no source delivered a verified {name}:\n" + "\n".join(failures) + "\n" + _HOW_TO_SUPPLY
        )

    def fetch(self, source: str, name: str, tmp: Path) -> str:
        """Write ``name``'s decompressed content from ``source`` to ``tmp``; its SHA-256."""
        if source.startswith(("http://", "https://")):
            return self.download(f"{source.rstrip('/')}/{name}.gz", tmp)
        directory = Path(
            unquote(urlsplit(source).path) if source.startswith("file://") else source
        ).expanduser()
        for candidate in (directory / f"{name}.gz", directory / name):
            if candidate.is_file():
                with candidate.open("rb") as stream, tmp.open("wb") as out:
                    sink = _Decompressed(out, self.max_bytes)
                    for chunk in iter(lambda: stream.read(_CHUNK), b""):  # noqa: B023 (read at once)
                        sink.write(chunk)
                    return sink.finish()
        raise SourceError(f"neither {name}.gz nor {name} in directory {directory}")

    def download(self, url: str, tmp: Path) -> str:
        """GET ``url`` into ``tmp`` with a progress bar, within the deadline and the size cap.

        The session's urllib3 ``Retry`` covers connection errors and 5xx answers; a connection dropped
        while the body streams is retried here, up to ``retries`` more times, within the deadline.
        """
        deadline = time.monotonic() + self.deadline_s
        attempt = 0
        while True:
            try:
                return self._download_once(url, tmp, deadline)
            except urllib3.exceptions.HTTPError as exc:  # the connection broke or stalled mid-body
                attempt += 1
                if attempt > self.retries or time.monotonic() > deadline:
                    raise SourceError(f"download broke off {attempt} times: {exc}") from None
                log.warning("%s: download broke off (%s); retrying", url, exc)

    def _download_once(self, url: str, tmp: Path, deadline: float) -> str:
        try:
            response = self.session.get(url, stream=True, timeout=self.timeout_s)
            response.raise_for_status()
        except requests.ConnectionError as exc:
            raise Unreachable(f"unreachable: {exc}") from None
        except requests.RequestException as exc:
            raise SourceError(str(exc)) from None
        announced = int(response.headers.get("Content-Length", 0)) or None
        if announced and announced > self.max_bytes:
            response.close()
            raise SourceError(f"{announced} bytes announced, more than ingest.max_mib allows")
        received = 0
        with (
            response,
            tmp.open("wb") as out,
            tqdm(total=announced, unit="B", unit_scale=True, desc=url) as bar,
        ):
            sink = _Decompressed(out, self.max_bytes)
            # read1 returns whatever has arrived, so a trickle still reaches the deadline check.
            while chunk := response.raw.read1(_CHUNK, decode_content=True):
                received += len(chunk)
                if received > self.max_bytes:
                    raise SourceError(f"sent more than the {self.max_bytes} bytes ingest.max_mib allows")
                if time.monotonic() > deadline:
                    raise SourceError(
                        f"not done after ingest.deadline_s={self.deadline_s:g} s ({received} bytes so far)"
                    )
                sink.write(chunk)
                bar.update(len(chunk))
            return sink.finish()


class _Decompressed:
    """Writes a stream's content to ``out``, gunzipped when it is gzip, hashing it and capping its size."""

    def __init__(self, out: BinaryIO, max_bytes: int) -> None:
        self.out, self.max_bytes = out, max_bytes
        self.hash = hashlib.sha256()
        self.written = 0
        self.gunzip: Any = None  # a zlib decompressor, once the stream proves to be gzip
        self.started = False

    def write(self, chunk: bytes) -> None:
        if not self.started:
            self.started = True
            if chunk[:2] == _GZIP_MAGIC:
                self.gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.gunzip is None:
            self._emit(chunk)
            return
        try:
            while chunk:
                # max_length keeps a gzip bomb from expanding in memory before the cap sees it.
                self._emit(self.gunzip.decompress(chunk, _CHUNK))
                chunk = self.gunzip.unconsumed_tail
        except zlib.error as exc:
            raise SourceError(f"corrupt gzip data ({exc})") from None

    def finish(self) -> str:
        """The SHA-256 of everything written; an error if a gzip stream ended early."""
        if self.gunzip is not None:
            try:
                self._emit(self.gunzip.flush())
            except zlib.error as exc:
                raise SourceError(f"corrupt gzip data ({exc})") from None
            if not self.gunzip.eof:
                raise SourceError("corrupt gzip data (the stream ends before its end marker)")
        self.out.flush()
        return self.hash.hexdigest()

    def _emit(self, data: bytes) -> None:
        self.written += len(data)
        if self.written > self.max_bytes:
            raise SourceError(f"decompresses to more than the {self.max_bytes} bytes ingest.max_mib allows")
        self.hash.update(data)
        self.out.write(data)


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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    raise SystemExit(stage_cli.run("ingest", main))
