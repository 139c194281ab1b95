#!/usr/bin/env bash
# The browser test drives Debian's Chromium through Playwright (never a downloaded browser).
# Installs it when missing and we may (root, or passwordless sudo); otherwise says what to do.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "note: chromium is missing and cannot be installed without root; the browser test will fail." >&2
  echo "      install it with: sudo apt-get install -y chromium" >&2
  exit 0
fi
echo "installing Debian's chromium for the browser test (once)…"
$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
  || echo "note: apt-get could not install chromium; the browser test will fail." >&2
exit 0
