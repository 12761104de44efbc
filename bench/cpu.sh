#!/usr/bin/env bash
# CPU time per broadcast: pagewire against the write loop, in the same run.
#
#   bench/cpu.sh [--clients 1000] [--rounds 5] [--pagewire PATH]...
#
# A server's CPU time (`perf stat -e task-clock` on its process) over a
# burst of 600 broadcasts minus that over a burst of 50, each burst to
# CLIENTS pages on a freshly started server, divided by 550: what one
# broadcast costs the server, without the connecting and the burst's first
# broadcasts. It counts the server's own time only, so it is steadier on a
# shared machine than any fan-out timing. The write loop and each build
# (every --pagewire PATH, default the release build) take turns, round by
# round; servers run on core 0 and the load client on core 1. Prints each
# round's figures, then the medians and each build's ratio to the write
# loop. Needs perf (Debian: linux-perf).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$bench_dir")
clients=1000 rounds=5 builds=()
short=50 long=600
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --pagewire) builds+=("$2"); shift 2 ;;
        -h|--help) sed -n 2,15p "$0"; exit 0 ;;
        *) echo "cpu.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
command -v perf >/dev/null || { echo "cpu.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

if [ ${#builds[@]} -eq 0 ]; then
    cargo build --quiet --release --manifest-path "$root/Cargo.toml" --bin pagewire
    builds=("${CARGO_TARGET_DIR:-$root/target}/release/pagewire")
fi
cargo build --quiet --release --manifest-path "$bench_dir/Cargo.toml" --bin pw-load --bin pw-writeloop
bin=${CARGO_TARGET_DIR:-$bench_dir/target}/release

pin0=() pin1=()
if command -v taskset >/dev/null; then pin0=(taskset -c 0) pin1=(taskset -c 1); fi

work=$(mktemp -d)
server="" perf_pid=""
stop_all() {
    [ -n "$perf_pid" ] && kill -INT "$perf_pid" 2>/dev/null || true
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    server="" perf_pid=""
}
trap 'stop_all; rm -rf "$work"' EXIT

# burst BROADCASTS SERVER_COMMAND...: sets $cpu (ms) and $p50 (fan-out ms)
burst() {
    local n=$1; shift
    rm -f "$work/ctl.sock"
    "${pin0[@]}" "$@" --listen 127.0.0.1:0 --control "$work/ctl.sock" </dev/null >"$work/server.log" 2>&1 &
    server=$!
    local addr=""
    for _ in $(seq 300); do
        addr=$(sed -n 's/.*listening on \(http:\/\/\)\{0,1\}\([0-9.:]*\).*/\2/p' "$work/server.log" | head -1)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "cpu.sh: $1 did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
    perf stat -x, -e task-clock -p "$server" -o "$work/perf.csv" &
    perf_pid=$!
    local out
    out=$("${pin1[@]}" "$bin/pw-load" --server "$addr" --pid "$server" --scenario burst \
        --clients "$clients" --broadcasts "$n" --label cpu --require-all 2>"$work/load.err") || {
        echo "cpu.sh: pw-load failed:" >&2; cat "$work/load.err" >&2; exit 1; }
    stop_all
    cpu=$(awk -F, '/task-clock/ { print $1; exit }' "$work/perf.csv")
    p50=$(sed -n 's/.*"fanout_p50_ms":\([0-9.e+-]*\).*/\1/p' <<<"$out" | tail -1)
    [ -n "$cpu" ] && [ -n "$p50" ] || { echo "cpu.sh: no figures from this burst" >&2; exit 1; }
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

labels=(writeloop) commands=("$bin/pw-writeloop")
for b in "${builds[@]}"; do labels+=("$b") commands+=("$b serve"); done

printf '%-40s %6s %16s %14s %15s\n' server round "CPU/broadcast ms" "p50 ms (50)" "p50 ms ($long)"
for r in $(seq "$rounds"); do
    for i in "${!labels[@]}"; do
        read -r -a cmd <<<"${commands[$i]}"
        burst "$short" "${cmd[@]}"
        cpu_a=$cpu p50_a=$p50
        burst "$long" "${cmd[@]}"
        cpu_b=$cpu p50_b=$p50
        per=$(awk -v a="$cpu_a" -v b="$cpu_b" -v n=$((long - short)) 'BEGIN { printf "%.3f", (b - a) / n }')
        echo "$per" >>"$work/cpu.$i"
        printf '%-40s %6s %16s %14.2f %15.2f\n' "${labels[$i]}" "$r" "$per" "$p50_a" "$p50_b"
    done
done

echo
base=$(median <"$work/cpu.0")
for i in "${!labels[@]}"; do
    m=$(median <"$work/cpu.$i")
    printf '%-40s median CPU/broadcast %s ms, %sx the write loop\n' "${labels[$i]}" "$m" \
        "$(awk -v m="$m" -v b="$base" 'BEGIN { printf "%.3f", m / b }')"
done
