#!/usr/bin/env bash
# Broadcast through a cluster of pagewire daemons against one daemon with
# the same number of pages, in the same run.
#
#   bench/cluster.sh [--nodes 4] [--clients 18000] [--broadcasts 50] [--rounds 3]
#
# Each round starts a redis-server on a free loopback port and NODES daemons
# joined to it (`serve --redis`), opens CLIENTS WebSocket clients spread
# evenly over the nodes (pw-load --spread) and sends BROADCASTS
# `ws write bench ...` one after another through the first node (each when
# the previous reached every client); then the same with one daemon and
# every client on it. Servers (and Redis) run on core 0, the load client on
# core 1, as in run.sh. The clients connect once every node holds an index
# block (a fresh Redis fences them for one lease). Prints each run's
# deliveries per second, the medians, and the ratio cluster / single; exit
# status 1 if a client could not register or a delivery was lost.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$bench_dir")
nodes=4 clients=18000 broadcasts=50 rounds=3
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --broadcasts) broadcasts=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -h|--help) sed -n 2,16p "$0"; exit 0 ;;
        *) echo "cluster.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
ulimit -n "$(ulimit -Hn)"

cargo build --quiet --release --manifest-path "$root/Cargo.toml" --bin pagewire
cargo build --quiet --release --manifest-path "$bench_dir/Cargo.toml" --bin pw-load
pagewire=${CARGO_TARGET_DIR:-$root/target}/release/pagewire
load=${CARGO_TARGET_DIR:-$bench_dir/target}/release/pw-load

pin0=() pin1=() # servers on core 0, the load client on core 1
if command -v taskset >/dev/null; then pin0=(taskset -c 0) pin1=(taskset -c 1); fi

work=$(mktemp -d)
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

free_port() {
    local p=$((20000 + RANDOM % 20000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

# start_daemon N [ARGS...]: starts a daemon, sets $addr to its address
# (taskset execs, so $! is the daemon itself)
start_daemon() {
    local n=$1; shift
    local log=$work/node$n.log
    "${pin0[@]}" "$pagewire" serve --listen 127.0.0.1:0 --control "$work/ctl$n.sock" "$@" \
        </dev/null >"$log" 2>&1 &
    pids+=($!)
    addr=""
    for _ in $(seq 300); do
        addr=$(sed -n 's/^pagewire listening on http:\/\/\([^ ]*\).*/\1/p' "$log" 2>/dev/null | head -1) || true
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "node $n did not start:" >&2; cat "$log" >&2; exit 1; }
}

# run_load LABEL SERVER SPREAD: one burst; prints deliveries/s
run_load() {
    local out
    out=$("${pin1[@]}" "$load" --scenario burst --clients "$clients" --broadcasts "$broadcasts" \
        --label "$1" --server "$2" --spread "$3" --require-all 2>"$work/load.err") || {
        echo "pw-load ($1) failed:" >&2; cat "$work/load.err" >&2; exit 1; }
    sed -n 's/.*"msgs_per_s":\([0-9.e+]*\).*/\1/p' <<<"$out"
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

cluster_runs=() single_runs=()
for round in $(seq "$rounds"); do
    port=$(free_port)
    "${pin0[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$work" >/dev/null &
    pids+=($!)
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    addrs=()
    for n in $(seq "$nodes"); do
        start_daemon "$n" --redis "redis://127.0.0.1:$port"
        addrs+=("$addr")
    done
    # On a fresh Redis no index is handed out for one lease (the epoch
    # fence, docs/CONFIG.md "Clusters"): wait until every node holds a block.
    for _ in $(seq 600); do
        [ "$(redis-cli -p "$port" --scan --pattern 'pagewire:blocks:*' | wc -l)" -ge "$nodes" ] && break
        sleep 0.1
    done
    spread=$(IFS=,; echo "${addrs[*]}")
    rate=$(run_load "cluster-$nodes" "${addrs[0]}" "$spread")
    cluster_runs+=("$rate")
    stop_all

    start_daemon 0
    rate=$(run_load single "$addr" "$addr")
    single_runs+=("$rate")
    stop_all
    printf 'round %d: cluster of %d %.0f deliveries/s, single daemon %.0f deliveries/s\n' \
        "$round" "$nodes" "${cluster_runs[-1]}" "${single_runs[-1]}"
done
c=$(printf '%s\n' "${cluster_runs[@]}" | median)
s=$(printf '%s\n' "${single_runs[@]}" | median)
printf 'median: cluster of %d nodes %.0f deliveries/s, single daemon %.0f deliveries/s, ratio %.2f\n' \
    "$nodes" "$c" "$s" "$(awk -v c="$c" -v s="$s" 'BEGIN {print c / s}')"
