#!/usr/bin/env bash
# Set up a fresh machine for the harness: the real TLS clients it drives
# (from Debian's packages, when run as root or with sudo) and a virtual
# environment in .venv with the project and its test dependencies.
#
# Usage: scripts/bootstrap.sh
# Environment: PYTHON (default python3), VENV (default .venv),
#              SKIP_SYSTEM_PACKAGES=1 to leave system packages alone.
set -euo pipefail

cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${VENV:-.venv}
system_packages=(curl openssl gnutls-bin nodejs pebble chromium)

install_system_packages() {
    local missing=()
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v gnutls-cli >/dev/null || missing+=(gnutls-bin)
    command -v node >/dev/null || missing+=(nodejs)
    command -v pebble >/dev/null || missing+=(pebble)
    command -v chromium >/dev/null || missing+=(chromium)
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
            sudo=(sudo)
        else
            echo "bootstrap: not root and no sudo; install these Debian packages" \
                "by hand to enable their adapters: ${missing[*]}" >&2
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        echo "bootstrap: no apt-get; install by hand: ${missing[*]}" >&2
        return 0
    fi
    echo "bootstrap: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "${SKIP_SYSTEM_PACKAGES:-0}" != 1 ]; then
    install_system_packages || echo "bootstrap: system packages failed;" \
        "adapters for ${system_packages[*]} may be skipped" >&2
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[test,dev,acme]"
echo "bootstrap: ready; the harness is $venv/bin/ems-harness" >&2
