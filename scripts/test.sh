#!/usr/bin/env bash
# Runs every pagewire test on a fresh Debian machine: installs what the tests
# need (Debian packages, npm packages from committed lockfiles), checks
# formatting and lints, then runs the Rust tests, the browser tests, the
# benchmark smoke run, the Autobahn conformance cases and a bounded fuzzing
# run. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long the run has taken so far, so the test command's
# time budget (CI keeps it under 25 minutes) can be watched step by step.
started=$SECONDS
step() { printf '\n==> [%dm%02ds] %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*"; }

# Debian packages the tests use: Chromium for the browser tests, Redis for
# the cluster tests, openssl for test certificates, nginx for the reverse
# proxy test; for the Debian package's test (tests/it/package.rs, as root):
# objcopy, adduser, systemd-analyze, man. A C compiler (the linker Rust
# calls, and jemalloc for the optional `jemalloc` feature) and make.
missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v make >/dev/null || missing+=(make)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v objcopy >/dev/null || missing+=(binutils)
[ -x /usr/sbin/adduser ] || missing+=(adduser)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v man >/dev/null || missing+=(man-db)
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
cargo test --locked
# The daemon `cargo test` built, which the steps below run too: a `cargo
# build` would compile tokio and its dependents again (without the test
# build's features), a release build the whole tree.
tested_daemon="${CARGO_TARGET_DIR:-$PWD/target}/debug/pagewire"

if [ -x scripts/browser-tests.sh ]; then
  step "browser tests (headless Chromium)"
  PAGEWIRE_BIN="$tested_daemon" scripts/browser-tests.sh
fi

if [ -x bench/run.sh ]; then
  step "benchmark smoke run"
  # The smoke run checks that the benchmark works, not how fast: the
  # debug build does.
  bench/run.sh --smoke --pagewire "$tested_daemon"
fi

step "WebSocket conformance (Autobahn cases against the echo harness)"
scripts/autobahn.sh

# 30 s per target keeps the whole run inside its budget; longer runs:
# FUZZ_SECONDS=600 scripts/fuzz.sh.
export FUZZ_SECONDS=${FUZZ_SECONDS:-30}
step "fuzzing (cargo fuzz, ${FUZZ_SECONDS}s per target)"
scripts/fuzz.sh

step "all tests passed"
