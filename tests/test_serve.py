"""``python -m pipeline serve`` for real: the server as a process on a free port of 127.0.0.1, real
HTTP requests with images of the synthetic test split, hostile bodies, and a reload onto a newly
promoted version while requests are in flight."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import commit_all, dvc, free_port, run, stop_process_group
from pipeline import registry
from pipeline.core.idx import encode_idx
from pipeline.core.paths import Paths
from pipeline.core.splits import load_split

pytestmark = pytest.mark.integration
MODEL = "fashion-classifier"
IDENTITY = ("Test Promoter", "promoter@example.com")


class Server:
    """A running ``python -m pipeline serve`` and the ``/health`` answers seen while it started."""

    def __init__(self, arguments: list[str], cwd: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "serve", "--port", str(self.port), *arguments],
                cwd=cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.log, self.seen = log, []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                status, answer = self.get("/health")
            except OSError:  # not listening yet
                time.sleep(0.05)
                continue
            self.seen.append(answer["status"])
            if status == 200:
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"the server did not become ready: {self.seen}\n{log.read_text()}")

    def get(self, path: str) -> tuple[int, dict]:
        return self.request(urllib.request.Request(self.url + path))

    def post(self, path: str, body: bytes = b"", content_type: str = "application/octet-stream"):
        headers = {"Content-Type": content_type} if content_type else {}
        return self.request(
            urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        )

    @staticmethod
    def request(request: urllib.request.Request) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        stop_process_group(self.process)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def test_images(reproduced_once: Path) -> tuple[np.ndarray, np.ndarray]:
    split = load_split(Paths(reproduced_once).split("test"))
    return split.x[:8], split.y[:8]


@pytest.fixture(scope="module")
def served(reproduced_once: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The reproduced project's model served from its file, with a 1-second body timeout."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    model = reproduced_once / "models/model.keras"
    server = Server(["--model", str(model), "--body-timeout", "1"], cwd=reproduced_once, log=log)
    yield server
    server.stop()


def test_the_server_answers_as_predict_does_and_names_its_model(
    served: Server, reproduced_once: Path, test_images, tmp_path: Path
) -> None:
    assert served.seen[0] == "loading" and served.seen[-1] == "ready"  # /health answered while loading
    images, _ = test_images
    files = []
    for index, pixels in enumerate(images):
        (path := tmp_path / f"{index}.png").write_bytes(png(pixels))
        files.append(str(path))
    printed = run(
        sys.executable, "-m", "pipeline", "predict", "--json", *files, cwd=reproduced_once
    ).stdout.splitlines()
    expected = [json.loads(line) for line in printed]
    for path, line in zip(files, expected, strict=True):
        status, answer = served.post("/predict", Path(path).read_bytes(), "image/png")
        assert status == 200 and len(answer["predictions"]) == 1, answer
        got = answer["predictions"][0]
        assert (got["class"], got["label"]) == (line["class"], line["label"])
        assert got["probability"] == pytest.approx(line["probability"], abs=1e-5)
        assert [k["class"] for k in got["top_k"]] == [k["class"] for k in line["top_k"]]
    status, batch = served.post("/predict?top_k=1", npy(images))
    assert status == 200 and [p["label"] for p in batch["predictions"]] == [e["label"] for e in expected]
    assert all(len(p["top_k"]) == 1 for p in batch["predictions"])

    status, about = served.get("/model")
    digest = hashlib.sha256((reproduced_once / "models/model.keras").read_bytes()).hexdigest()
    assert status == 200 and about["sha256"] == digest and batch["model"] == digest


def gzip_bomb() -> bytes:
    """An IDX file of 300 MiB of zeros, gzipped to about 300 KiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    chunks = [compressor.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 400_000, 28, 28))]
    zeros = bytes(1 << 20)
    chunks += [compressor.compress(zeros) for _ in range(300)]
    return b"".join(chunks) + compressor.flush()


def huge_png_header() -> bytes:
    """A PNG whose header says 25,000 x 25,000 pixels (then a few bytes of image data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 25_000, 25_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(64)))
        + chunk(b"IEND", b"")
    )


def slow_client(server: Server) -> tuple[threading.Thread, list[bytes]]:
    """A client that sends its headers and 10 of its body's 1,000 bytes, then nothing."""
    answer: list[bytes] = []

    def send() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                b"Content-Length: 1000\r\n\r\n" + b"\x89PNG\r\n\x1a\n\x00\x00"
            )
            received = b""
            while not received.endswith(b"}") and (data := sock.recv(4096)):  # to the JSON's end
                received += data
            answer.append(received)

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answer


def test_bad_input_is_one_line_4xx_and_the_server_goes_on_serving(served: Server, test_images) -> None:
    images, labels = test_images
    good = png(images[0])
    _, expected = served.post("/predict", good, "image/png")
    jpeg = io.BytesIO()
    Image.fromarray(images[1]).save(jpeg, "JPEG")
    too_many = np.zeros((10_000, 28, 28), np.uint8)  # 7.8 MB: under the size cap, over the count cap
    cases = {
        "gzip bomb": (gzip_bomb(), "application/octet-stream", 400, "once decompressed"),
        "25,000 x 25,000 PNG": (huge_png_header(), "image/png", 400, "too many pixels"),
        "truncated JPEG": (jpeg.getvalue()[:200], "image/jpeg", 400, "broken image file"),
        "empty body": (b"", "image/png", 400, "an empty body"),
        "text": (b"hello", "text/plain", 415, "content type 'text/plain'"),
        "no content type": (good, "", 415, "content type"),
        "too many images": (npy(too_many), "application/x-npy", 413, "10,000 images in one request"),
        "not an image": (b"GIF89a not really", "image/gif", 400, "broken image file"),
        "an IDX of the wrong shape": (
            gzip.compress(encode_idx(np.zeros((2, 5), np.uint8))),
            "application/octet-stream",
            400,
            "expected 28x28 images",
        ),
    }
    for name, (body, content_type, code, says) in cases.items():
        status, answer = served.post("/predict", body, content_type)
        assert status == code and says in answer["detail"], (name, status, answer)
        assert "\n" not in answer["detail"], name
        assert served.post("/predict", good, "image/png") == (200, expected), f"after the {name}"

    # A body the client says is too large is refused unread; the cap holds for the sent bytes too.
    request = urllib.request.Request(
        served.url + "/predict", data=b"x", headers={"Content-Length": str(64 << 20)}, method="POST"
    )
    request.add_header("Content-Type", "image/png")
    with pytest.raises((urllib.error.HTTPError, OSError)) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert not isinstance(refused.value, urllib.error.HTTPError) or refused.value.code == 413

    # A client that never finishes its body gets 408, and others are served meanwhile.
    thread, answer = slow_client(served)
    assert served.post("/predict", good, "image/png") == (200, expected)
    thread.join(timeout=30)
    assert answer and answer[0].startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 1 s" in answer[0]
    assert served.post("/predict?top_k=11", good, "image/png")[0] == 422
    assert served.get("/health") == (200, {"status": "ready"})


def retrain(project: Path, message: str, dropout: float) -> str:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["model"]["dense"]["dropout"] = dropout
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", cwd=project)
    commit_all(project, message)
    return run("git", "rev-parse", "HEAD", cwd=project).stdout.strip()


def test_a_stage_is_served_and_reload_switches_to_its_new_version_during_requests(
    reproduced: Path, test_images, tmp_path: Path
) -> None:
    commit_all(reproduced, "a run")
    first = run("git", "rev-parse", "HEAD", cwd=reproduced).stdout.strip()
    lineage = "test.accuracy over 3 seed(s): 0.7800 ± 0.0100 (0.7700–0.7900)\n"
    registry.record(
        reproduced, MODEL, first, "staging", lineage=lineage, assignment="first", identity=IDENTITY
    )
    server = Server(["--stage", "staging"], cwd=reproduced, log=tmp_path / "server.log")
    try:
        assert server.get("/model") == (
            200,
            {
                "artifact": MODEL,
                "version": "v0.0.1",
                "stage": "staging",
                "commit": first,
                "test_accuracy": lineage.strip(),
            },
        )
        second = retrain(reproduced, "less dropout", 0.2)
        registry.record(
            reproduced, MODEL, second, "staging", lineage="", assignment="next", identity=IDENTITY
        )

        good, stop = png(test_images[0][0]), threading.Event()
        answers: dict[int, list[tuple[int, dict]]] = {client: [] for client in range(4)}

        def keep_asking(client: int) -> None:
            while not stop.is_set():
                answers[client].append(server.post("/predict", good, "image/png"))

        clients = [threading.Thread(target=keep_asking, args=(client,)) for client in answers]
        for client in clients:
            client.start()
        try:
            time.sleep(0.5)
            status, reloaded = server.post("/reload", content_type="")
            time.sleep(0.5)
        finally:
            stop.set()
            for client in clients:
                client.join(timeout=60)
        assert status == 200 and (reloaded["version"], reloaded["commit"]) == ("v0.0.2", second), reloaded
        assert server.get("/model")[1]["version"] == "v0.0.2"
        every = [answer for asked in answers.values() for answer in asked]
        assert every and all(code == 200 for code, _ in every), {code for code, _ in every}
        for asked in answers.values():  # each client's requests in order: switched, never back
            versions = [answer["model"] for _, answer in asked]
            assert versions[0] == "v0.0.1" and versions[-1] == "v0.0.2" and versions == sorted(versions)
    finally:
        server.stop()
