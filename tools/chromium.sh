#!/usr/bin/env bash
# Make sure Debian's chromium is installed: tests/browser.py drives it headless for the fast
# tests (tests/test_browser.py). Silent when it is already there.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

echo "chromium: installing chromium from Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
