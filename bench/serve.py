"""How fast ``python -m pipeline serve`` classifies, against ``python -m pipeline predict``.

Real data (the Debian ``dataset-fashion-mnist`` package or a reachable mirror): a scratch copy of this
project runs its default pipeline (the dense net), then its server answers PNGs of the test split,
one image per request, from 1, 8 and 32 concurrent clients on keep-alive connections (threads of
this process, on the same cores: run it on an idle machine). The anchors are ``predict`` run once
per image and one ``predict`` call on all 10,000 test images; ``python -m flows classify`` takes a
folder of the same 10,000 PNGs. Prints two Markdown tables: images per second
with p50 and p99 latency, and the server's resident memory.

    python bench/serve.py                 # about 5 minutes on 2 CPU cores (the training included)
    python bench/serve.py --workers 2     # the server with two processes
    python bench/serve.py --smoke         # every measurement once, on tiny synthetic data: does it run?

Targets (issue 35): at least 200 images/s at 32 clients, p99 under 100 ms at 8 clients.
"""

from __future__ import annotations

import argparse
import http.client
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image
from scratch import REPO_ROOT, bench_project, prefect_server

from pipeline.core.paths import Paths
from pipeline.core.splits import load_split

CLIENTS = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, workers: int, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "serve", "--model", str(model), "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--workers", str(workers)], cwd=REPO_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the server was not ready in 300 s:\n{log.read_text()[-3000:]}")


def load_test(port: int, bodies: list[bytes], clients: int, requests: int) -> tuple[float, list[float]]:
    """``requests`` posts spread over ``clients`` threads: images per second, latencies in ms."""
    latencies: list[float] = []
    per_client = max(1, requests // clients)

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for index in range(per_client):
            body = bodies[(offset + index) % len(bodies)]
            started = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "image/png"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise SystemExit(f"the server answered {response.status}: {answer[:200]!r}")
            mine.append((time.perf_counter() - started) * 1000)
        latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i * per_client,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def predict_rate(model: Path, files: list[Path], one_call: bool) -> float:
    """Images per second of ``python -m pipeline predict``: one process per file, or one for all."""
    groups = [files] if one_call else [[file] for file in files]
    started = time.perf_counter()
    for group in groups:
        subprocess.run(
            [sys.executable, "-m", "pipeline", "predict", "--model", str(model), *map(str, group)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
    return len(files) / (time.perf_counter() - started)


def classify_rate(model: Path, folder: Path, count: int, env: dict[str, str]) -> float:
    """Images per second of ``python -m flows classify`` on ``folder`` (a Prefect server running)."""
    command = [sys.executable, "-m", "flows", "classify", str(folder), "--model", str(model)]
    started = time.perf_counter()
    subprocess.run(
        [*command, "--out", str(folder.parent / "predictions.csv")],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return count / (time.perf_counter() - started)


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="server processes (default: 1)")
    parser.add_argument("--requests", type=int, default=2_000, help="requests per client count")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic data, few requests")
    args = parser.parse_args()
    requests, per_image, batch = (64, 2, 20) if args.smoke else (args.requests, 10, 10_000)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        overrides = {"train.epochs": 2, "train.model.dense.hidden_units": [16]} if args.smoke else None
        project = bench_project(Path(scratch) / "project", smoke=args.smoke, overrides=overrides)
        subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=project, check=True)
        paths = Paths(project)
        images = load_split(paths.split("test")).x[:batch]
        files = []
        (Path(scratch) / "images").mkdir()
        for index, pixels in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, "PNG")
            (file := Path(scratch) / "images" / f"{index}.png").write_bytes(buffer.getvalue())
            files.append(file)
        bodies = [file.read_bytes() for file in files]
        server, port = start_server(paths.keras_model, args.workers, Path(scratch) / "server.log")
        try:
            load_test(port, bodies, 4, 32)  # warm-up: the first requests build TensorFlow's graph
            rows = []
            for clients in CLIENTS:
                rate, latencies = load_test(port, bodies, clients, requests)
                rows.append((f"serve, {clients} client(s)", rate, latencies))
            process = psutil.Process(server.pid)
            resident = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
        finally:
            server.terminate()
            server.wait(timeout=60)
        anchors = [
            ("predict, one process per image", predict_rate(paths.keras_model, files[:per_image], False)),
            (f"predict, one call on {len(files)} images", predict_rate(paths.keras_model, files, True)),
        ]
        with prefect_server(Path(scratch) / "prefect-home") as env:
            rate = classify_rate(paths.keras_model, Path(scratch) / "images", len(files), env)
            anchors.append((f"flows classify, a folder of {len(files)} images", rate))
    command = f"python bench/serve.py --workers {args.workers}"
    print("| contender | images/s | p50 (ms) | p99 (ms) | command |")
    print("|---|---|---|---|---|")
    for name, rate, latencies in rows:
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(f"| {name} | {rate:.0f} | {p50:.1f} | {p99:.1f} | `{command}` |")
    for name, rate in anchors:
        tool = "flows classify" if name.startswith("flows") else "pipeline predict"
        print(f"| {name} | {rate:.1f} | | | `python -m {tool}` |")
    print()
    print("| server | resident memory (MiB) |")
    print("|---|---|")
    print(f"| {args.workers} worker(s), dense model | {resident / 2**20:.0f} |")


if __name__ == "__main__":
    main()
