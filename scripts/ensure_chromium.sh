#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser test (tests/test_webapp_browser.py).
# Installs it with apt when missing (as root, or through sudo); never downloads a browser another way
# (no `playwright install`). Exits non-zero when it cannot, so `make test` fails instead of skipping.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing and apt-get is not available: install Chromium there" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "ensure_chromium: $CHROMIUM is missing; run as root: apt-get install -y chromium" >&2
        exit 1
    fi
fi
echo "ensure_chromium: installing Debian's chromium (apt-get)" >&2
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
test -x "$CHROMIUM"
