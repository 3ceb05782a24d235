#!/usr/bin/env bash
# Install fashion-pipeline on a fresh machine (Python >= 3.11 and pip; root or not).
#   bash scripts/install.sh         the pipeline, plus the Debian Fashion-MNIST package when possible
#   bash scripts/install.sh --dev   also the test tools (pytest, ruff, hypothesis) and Chromium for the plot test
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
[ "${1:-}" = "--dev" ] && dev=true
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
if [ -z "${VIRTUAL_ENV:-}" ] && [ "$(id -u)" -ne 0 ]; then
  pip_args+=(--user)
fi
if $dev; then target=".[dev]"; else target="."; fi
"$python" -m pip install "${pip_args[@]}" -e "$target"
echo "fashion-pipeline installed with $("$python" --version)"
