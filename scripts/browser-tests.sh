#!/usr/bin/env bash
# Runs the browser tests: ws.js and the demo site in headless Chromium,
# against the real daemon, and the checks of ws.js's npm package (client/:
# built files in sync, npm pack, tsc on a typed example). Installs what it
# needs (Debian's chromium, the npm packages of tests/browser and client)
# when missing.
#
#   scripts/browser-tests.sh [node --test args...]
#
# PAGEWIRE_BIN      the daemon to test (default: target/debug/pagewire, built here)
# CHROMIUM_BIN      the browser (default: /usr/bin/chromium)
# PAGEWIRE_TEST_OUTPUT  where the screenshots go (default: test-output/)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "browser-tests: $chromium is missing; install Debian's chromium package (as root: apt-get install chromium)" >&2
    exit 1
  fi
  echo "browser-tests: installing chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q chromium
fi
"$chromium" --version
# proxy.test.js puts Debian's nginx in front of the daemon.
if [ ! -x "${NGINX_BIN:-/usr/sbin/nginx}" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "browser-tests: nginx is missing; install Debian's nginx package (as root: apt-get install nginx)" >&2
    exit 1
  fi
  echo "browser-tests: installing nginx" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q nginx
fi

# No browser download: playwright-core drives the system's chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(cd tests/browser && npm ci --no-audit --no-fund)
# TypeScript, for the package's typed example.
(cd client && npm ci --no-audit --no-fund)

if [ -z "${PAGEWIRE_BIN:-}" ]; then
  cargo build --locked --bin pagewire
  export PAGEWIRE_BIN="$repo/target/debug/pagewire"
fi

export PAGEWIRE_TEST_OUTPUT="${PAGEWIRE_TEST_OUTPUT:-$repo/test-output}"
mkdir -p "$PAGEWIRE_TEST_OUTPUT"

cd tests/browser
# One file at a time: each starts its own daemon and browser, on 2 cores.
node --test --test-concurrency=1 "$@"
