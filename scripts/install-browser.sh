#!/usr/bin/env bash
# Install the browser the web-UI test drives (tests/test_review_ui.py): Debian's chromium, launched
# by Playwright through its executable path, so `playwright install` (a download from a CDN) is
# never needed. Idempotent: returns at once when /usr/bin/chromium exists.
#
#   bash scripts/install-browser.sh
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [[ -x "$CHROMIUM" ]]; then
    echo "chromium is installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi
if ! command -v apt-get > /dev/null; then
    echo "no $CHROMIUM and no apt-get: install Debian/Ubuntu's chromium package by hand" >&2
    exit 1
fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    SUDO="sudo"
fi
echo "Installing chromium with apt ..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium
"$CHROMIUM" --version
