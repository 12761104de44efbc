#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn|Testsuite fuzzing-client cases
# against pagewire's own transport (examples/autobahn-echo.rs drives the
# connection task pages use, in echo mode), prints a summary and writes the
# report under test-output/autobahn/. Exits non-zero unless every case is
# OK, NON-STRICT or INFORMATIONAL.
#
# The runner is kosoku from PyPI: it runs the suite's own case files on
# Python 3 (the original autobahntestsuite package needs Python 2). It is
# installed, pinned, into a virtual environment under target/.
#
# Every case runs, the permessage-deflate ones (12.* and 13.*) included: the
# harness negotiates the extension as the daemon does.
#
# Environment: AUTOBAHN_CASES (a case glob, default all) narrows the run,
# AUTOBAHN_PARALLEL (default 4) sets how many cases run at once.
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
venv=target/autobahn-venv
out=test-output/autobahn
cases=${AUTOBAHN_CASES:-}
parallel=${AUTOBAHN_PARALLEL:-4}

step() { printf '\n==> %s\n' "$*"; }

if ! "$venv/bin/kosoku" -h >/dev/null 2>&1 ||
  [ "$("$venv/bin/pip" show kosoku 2>/dev/null | sed -n 's/^Version: //p')" != "$KOSOKU_VERSION" ]; then
  step "installing kosoku $KOSOKU_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

step "building the echo harness"
# A debug build: the test command has just built it (`cargo test` builds
# the examples), where a release build would compile every dependency
# again. zlib-rs, where nearly all of the harness's time goes in the
# compressed cases, is optimised in debug builds too (Cargo.toml).
cargo build --locked --example autobahn-echo
harness="${CARGO_TARGET_DIR:-target}/debug/examples/autobahn-echo"

rm -rf "$out"
mkdir -p "$out"
log="$out/server.log"
# Port 0: the system picks a free port, and the harness prints it.
"$harness" 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/^listening on //p' "$log")
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "the echo harness did not start:" >&2
  cat "$log" >&2
  exit 1
fi

step "running the Autobahn cases against ws://$addr"
select=()
[ -n "$cases" ] && select+=(-i "$cases")
# kosoku's own verdict is re-derived below from the report, so its exit
# status is kept only to notice a run that produced no report at all. The
# permessage-deflate cases (12.*, 13.*) take 3 to 6 minutes four at a time
# on 2 cores (docs/RELIABILITY.md); the limit leaves room for a slower
# machine.
runner=0
timeout 1800 "$venv/bin/kosoku" "ws://$addr" "${select[@]}" -p "$parallel" -o "$out" \
  >"$out/runner.log" 2>&1 || runner=$?

if ! kill -0 "$server" 2>/dev/null; then
  echo "the echo harness exited during the run:" >&2
  cat "$log" >&2
  exit 1
fi
if [ ! -f "$out/index.json" ]; then
  echo "kosoku wrote no report (exit status $runner):" >&2
  cat "$out/runner.log" >&2
  exit 1
fi

"$venv/bin/python" - "$out/index.json" "$runner" <<'EOF'
import collections
import json
import sys

index, runner = sys.argv[1], int(sys.argv[2])
with open(index) as f:
    results = [case for agent in json.load(f).values() for case in agent.items()]
passing = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts = collections.Counter(case["behavior"] for _, case in results)
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
order += sorted(set(counts) - set(order))
print(f"Autobahn: {len(results)} cases: " + ", ".join(f"{counts[k]} {k}" for k in order))


def key(case_id):
    return [int(p) for p in case_id.split(".")]


bad = [
    (case_id, case)
    for case_id, case in sorted(results, key=lambda r: key(r[0]))
    if case["behavior"] not in passing or case["behaviorClose"] not in passing
]
for case_id, case in bad:
    print(f"  {case_id}: {case['behavior']} / close {case['behaviorClose']}"
          f" (close code {case.get('remoteCloseCode')})")
if bad or not results or runner != 0:
    print(f"Autobahn: {len(bad)} of {len(results)} cases not passing"
          f" (kosoku exit status {runner})")
    sys.exit(1)
print(f"Autobahn: {len(results)}/{len(results)} cases OK, NON-STRICT or INFORMATIONAL")
EOF
echo "report: $out/index.html"
