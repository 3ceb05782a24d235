"""The Prefect API that ``python -m flows`` talks to: the configured one, or a temporary server of its own.

Without ``PREFECT_API_URL`` Prefect starts a temporary server in the terminal's process group, so
Ctrl-C stops the server first and the interrupted run then spends minutes retrying it, and a killed
command leaves it running. This temporary server runs in a session of its own (Ctrl-C reaches only
the command) and is stopped by the kernel when the command ends, however it ends (Linux's
parent-death signal). Prefect reads ``PREFECT_API_URL`` once, when imported, into settings its
background threads share, so the command starts the server, then replaces itself (``exec``, the same
process) by a fresh start of itself that finds the variable set.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prefect.settings import get_current_settings

STARTUP_TIMEOUT_S = 90
# Runs the server, asking the kernel to send it SIGTERM when its parent (this command) dies; a parent
# that died before the request leaves it with another parent, and then it does not start at all.
_LAUNCHER = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(1)
os.execv(sys.executable, [sys.executable, "-m", "prefect", *sys.argv[2:]])
"""


def ensure_api(argv: list[str]) -> None:
    """Return if a Prefect API is configured (or the kernel cannot stop a server for us: not Linux);
    otherwise start a temporary server and re-run ``argv``, this command's arguments, against it."""
    settings = get_current_settings()
    if settings.api.url or not sys.platform.startswith("linux"):
        return
    _check_writable(Path(settings.home))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    args = ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_until_healthy(url, server, log)
        except BaseException:
            server.kill()
            raise
    print(f"temporary Prefect server on {url}, stopped when this command ends", file=sys.stderr, flush=True)
    os.environ["PREFECT_API_URL"] = url
    os.execv(sys.executable, [sys.executable, "-m", "flows", *argv])


def _check_writable(home: Path) -> None:
    """The temporary server keeps its database in ``PREFECT_HOME``: fail in one line if it cannot."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=home).close()
    except OSError as exc:
        raise RuntimeError(
            f"the temporary Prefect server keeps its database in PREFECT_HOME ({home}), which cannot be "
            f"written ({exc.strerror}); set PREFECT_HOME to a writable folder, or PREFECT_API_URL to a "
            "running server"
        ) from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(url: str, server: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            lines = [line.strip() for line in output.splitlines() if line.strip()]
            cause = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
            raise RuntimeError(f"the temporary Prefect server exited: {cause[:300]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the temporary Prefect server did not answer within {STARTUP_TIMEOUT_S} s")
