"""Ingest: sources in order, content verification, caching, retries and the all-failed error."""

from __future__ import annotations

import gzip
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import SyntheticSource, write_synthetic_dataset
from pipeline.core.dataset import FILE_NAMES
from pipeline.stages.ingest import SOURCES_ENV, IngestError, ingest, resolve_sources


def assert_verified(raw_dir: Path, source: SyntheticSource) -> None:
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(FILE_NAMES)
    for name in FILE_NAMES:
        assert hashlib.sha256((raw_dir / name).read_bytes()).hexdigest() == source.sha256[name]


def test_local_directory_gives_decompressed_verified_files(tmp_path, synthetic_source) -> None:
    paths = ingest([str(synthetic_source.directory)], synthetic_source.sha256, tmp_path / "raw")
    assert [p.name for p in paths] == list(FILE_NAMES)
    assert_verified(tmp_path / "raw", synthetic_source)


def test_uncompressed_files_in_a_directory_are_accepted(tmp_path, synthetic_source) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in FILE_NAMES:
        (plain / name).write_bytes(gzip.decompress((synthetic_source.directory / f"{name}.gz").read_bytes()))
    ingest([str(plain)], synthetic_source.sha256, tmp_path / "raw")
    assert_verified(tmp_path / "raw", synthetic_source)


def test_cached_verified_files_are_not_fetched_again(tmp_path, synthetic_source, caplog) -> None:
    raw = tmp_path / "raw"
    ingest([str(synthetic_source.directory)], synthetic_source.sha256, raw)
    caplog.set_level(logging.INFO, logger="pipeline.stages.ingest")
    ingest([str(tmp_path / "nowhere")], synthetic_source.sha256, raw)
    assert caplog.text.count("cached copy verified") == 4

    (raw / FILE_NAMES[0]).write_bytes(b"tampered")
    ingest([str(synthetic_source.directory)], synthetic_source.sha256, raw)
    assert_verified(raw, synthetic_source)


def test_mismatching_source_is_reported_and_the_next_one_used(tmp_path, synthetic_source, caplog) -> None:
    impostor = write_synthetic_dataset(tmp_path / "impostor", seed=99)
    caplog.set_level(logging.WARNING, logger="pipeline.stages.ingest")
    ingest(
        [str(impostor.directory), str(synthetic_source.directory)], synthetic_source.sha256, tmp_path / "raw"
    )
    assert_verified(tmp_path / "raw", synthetic_source)
    assert "checksum mismatch" in caplog.text


def test_when_every_source_fails_the_error_lists_each_and_nothing_is_cached(
    tmp_path, synthetic_source
) -> None:
    impostor = write_synthetic_dataset(tmp_path / "impostor", seed=99)
    missing = tmp_path / "missing"
    raw = tmp_path / "raw"
    with pytest.raises(IngestError) as error:
        ingest([str(impostor.directory), str(missing)], synthetic_source.sha256, raw)
    message = str(error.value)
    assert f"{impostor.directory}: checksum mismatch" in message
    assert f"{missing}: neither" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert not raw.exists() or not any(raw.iterdir())


def test_environment_variable_replaces_configured_sources(monkeypatch) -> None:
    monkeypatch.setenv(SOURCES_ENV, "/srv/a, https://mirror.example/b")
    assert resolve_sources(["/usr/share/datasets/fashion-mnist"]) == ["/srv/a", "https://mirror.example/b"]
    monkeypatch.delenv(SOURCES_ENV)
    assert resolve_sources(["/x"]) == ["/x"]


class FlakyMirror(BaseHTTPRequestHandler):
    """Serves ``files`` on 127.0.0.1; the first ``failures[path]`` requests of a path misbehave as
    ``mode`` says: ``503``, ``drop`` (hang up mid-body), ``trickle`` (a byte every 50 ms),
    ``endless`` (an unannounced body that never ends) or ``huge`` (announce 10 GB)."""

    files: dict[str, bytes] = {}
    failures: dict[str, int] = {}
    mode = "503"
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).requests.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if self.failures.get(self.path, 0) > 0:
            self.failures[self.path] -= 1
            self.misbehave(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def misbehave(self, body: bytes) -> None:
        if self.mode == "503":
            self.send_error(503)
            return
        self.send_response(200)
        if self.mode == "huge":
            self.send_header("Content-Length", str(10 * 10**9))
        elif self.mode != "endless":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if self.mode == "drop":  # promise the whole body, send half, hang up
                self.wfile.write(body[: len(body) // 2])
            elif self.mode == "trickle":
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            elif self.mode == "endless":
                while True:
                    self.wfile.write(b"\0" * 65536)
        except OSError:
            pass  # the client gave up, as it should
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(synthetic_source) -> Iterator[type[FlakyMirror]]:
    handler = type("Mirror", (FlakyMirror,), {})
    handler.files = {f"/fm/{p.name}": p.read_bytes() for p in synthetic_source.directory.iterdir()}
    handler.failures = {}
    handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.base_url = f"http://127.0.0.1:{server.server_address[1]}/fm"
    yield handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_http_mirror_with_transient_failures_is_retried(tmp_path, synthetic_source, mirror, mode) -> None:
    mirror.mode = mode
    mirror.failures = {f"/fm/{FILE_NAMES[0]}.gz": 2}
    ingest([mirror.base_url], synthetic_source.sha256, tmp_path / "raw", retries=3, timeout_s=5)
    assert_verified(tmp_path / "raw", synthetic_source)
    assert mirror.requests.count(f"/fm/{FILE_NAMES[0]}.gz") == 3


def test_http_mirror_that_keeps_failing_falls_through_to_the_next_source(
    tmp_path, synthetic_source, mirror
) -> None:
    mirror.mode = "drop"
    mirror.failures = {path: 99 for path in mirror.files}
    ingest(
        [mirror.base_url, str(synthetic_source.directory)],
        synthetic_source.sha256,
        tmp_path / "raw",
        retries=1,
        timeout_s=5,
    )
    assert_verified(tmp_path / "raw", synthetic_source)


def test_http_mirror_serving_corrupt_bytes_is_never_cached(tmp_path, synthetic_source, mirror) -> None:
    mirror.files = {path: body[:-20] for path, body in mirror.files.items()}
    raw = tmp_path / "raw"
    with pytest.raises(IngestError, match="corrupt gzip"):
        ingest([mirror.base_url], synthetic_source.sha256, raw, retries=0, timeout_s=5)
    assert not raw.exists() or not any(raw.iterdir())


def test_a_trickling_mirror_is_abandoned_at_the_deadline(tmp_path, synthetic_source, mirror) -> None:
    mirror.mode = "trickle"
    mirror.failures = {path: 99 for path in mirror.files}
    started = time.monotonic()
    ingest(
        [mirror.base_url, str(synthetic_source.directory)],
        synthetic_source.sha256,
        tmp_path / "raw",
        retries=0,
        timeout_s=5,
        deadline_s=0.5,
    )
    assert_verified(tmp_path / "raw", synthetic_source)
    assert time.monotonic() - started < 10  # four files, each given up after half a second


@pytest.mark.parametrize("mode", ["endless", "huge"])
def test_a_mirror_sending_too_much_is_cut_off(tmp_path, synthetic_source, mirror, mode) -> None:
    mirror.mode = mode
    mirror.failures = {path: 99 for path in mirror.files}
    raw = tmp_path / "raw"
    with pytest.raises(IngestError, match=r"ingest\.max_mib") as error:
        ingest([mirror.base_url], synthetic_source.sha256, raw, retries=0, timeout_s=5, max_bytes=1 << 20)
    assert "no source delivered a verified" in str(error.value)
    assert not raw.exists() or not any(raw.iterdir())  # nothing half-written is left


def test_a_gzip_bomb_is_stopped_at_the_cap(tmp_path, synthetic_source) -> None:
    bombs = tmp_path / "bombs"
    bombs.mkdir()
    for name in FILE_NAMES:  # 64 KiB of gzip that would expand to 64 MiB
        (bombs / f"{name}.gz").write_bytes(gzip.compress(b"\0" * (64 << 20), mtime=0))
    with pytest.raises(IngestError, match="decompresses to more than the 1048576 bytes"):
        ingest([str(bombs)], synthetic_source.sha256, tmp_path / "raw", max_bytes=1 << 20)


def test_an_unreachable_mirror_is_not_asked_again_for_the_other_files(
    tmp_path, synthetic_source, caplog
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/fm"
    caplog.set_level(logging.WARNING, logger="pipeline.stages.ingest")
    ingest([dead, str(synthetic_source.directory)], synthetic_source.sha256, tmp_path / "raw", retries=1)
    assert_verified(tmp_path / "raw", synthetic_source)
    assert caplog.text.count(f"from {dead} failed") == 1  # the first file only


def test_file_urls_are_directories(tmp_path, synthetic_source) -> None:
    ingest([synthetic_source.directory.as_uri()], synthetic_source.sha256, tmp_path / "raw")
    assert_verified(tmp_path / "raw", synthetic_source)


@pytest.mark.parametrize(
    ("value", "message"),
    [(",", "names no source"), (" , ", "names no source"), ("ftp://mirror/fm", "sources are directories or")],
)
def test_an_odd_sources_variable_is_one_clear_error(monkeypatch, value, message) -> None:
    monkeypatch.setenv(SOURCES_ENV, value)
    with pytest.raises(IngestError, match=message):
        resolve_sources(["/x"])
