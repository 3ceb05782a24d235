#!/usr/bin/env bash
# Install fashion-pipeline on a fresh machine (Python >= 3.11 and pip; root or not).
#   bash scripts/install.sh         the pipeline, plus the Debian Fashion-MNIST package when possible
#   bash scripts/install.sh --dev   also the test tools (pytest, ruff, hypothesis) and Chromium for the plot test
#   bash scripts/install.sh --gpu   the pipeline with CUDA's libraries for TensorFlow (Linux x86_64, an NVIDIA driver)
# PYTHON=/path/to/python picks the interpreter (default: python3); one in a virtual environment
# installs into it, other ones as root or with --user.
#
# The versions are the tested ones, pinned with their hashes in requirements/runtime.lock (plain),
# requirements/dev.lock (--dev) and requirements/gpu.lock (--gpu), made from pyproject.toml's ranges
# by uv (pip install uv). After changing a dependency in pyproject.toml, regenerate them, from the root:
#   uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -o requirements/runtime.lock
#   uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes -o requirements/dev.lock
#   uv pip compile pyproject.toml --extra gpu --universal --python-version 3.11 --generate-hashes -o requirements/gpu.lock
# (add --upgrade to move every pin to the newest release the ranges allow), then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
lock=requirements/runtime.lock
case "${1:-}" in
  --dev) dev=true; lock=requirements/dev.lock ;;
  --gpu) lock=requirements/gpu.lock ;;
  "") ;;
  *) echo "usage: bash scripts/install.sh [--dev | --gpu]" >&2; exit 2 ;;
esac
python=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

packages=()
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
if $dev && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
  packages+=(chromium chromium-driver)  # the HTML plots test needs both, the driver too
fi
if [ ${#packages[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null \
    && as_root apt-get update -qq \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null; then
    echo "installed Debian packages: ${packages[*]}"
  else
    cat >&2 <<'MSG'
note: could not install the Debian packages (needs apt-get and root or passwordless sudo).
  Fashion-MNIST: the ingest stage downloads it from the mirrors in datasets/fashion-mnist.yaml,
  verifying each file's SHA-256. Offline, put the four .gz files in a directory and run with
  FASHION_MNIST_SOURCES=/that/directory.
  Chromium (tests only): the HTML plot test is skipped without it.
MSG
  fi
fi

pip_args=(--quiet --disable-pip-version-check)
in_venv=$("$python" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
if [ -z "${VIRTUAL_ENV:-}" ] && [ "$in_venv" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  pip_args+=(--user)
fi
# pip before 24 takes a second, unpinned copy of a package asked for with an extra (httpx[http2])
# and then refuses the lock file's hashes
"$python" -m pip install "${pip_args[@]}" "pip>=24.2"
"$python" -m pip install "${pip_args[@]}" -r "$lock"  # every dependency, at the tested version
"$python" -m pip install "${pip_args[@]}" --no-deps -e .  # the project itself, on top
echo "fashion-pipeline installed with $("$python" --version)"
