#!/usr/bin/env bash
# The pagewire fan-out benchmark in one command.
#
#   bench/run.sh            build everything (release), run every server and
#                           scenario three times, print the markdown table
#   bench/run.sh --smoke    pagewire only, 500 clients, 10 broadcasts; exit
#                           status 1 unless every message arrived
#   bench/run.sh --help     all flags (servers, scenarios, runs, ...)
#   bench/run.sh --storm [pw-storm flags]
#                           the restart storm: 15,000 ws.js-like clients, the
#                           daemon stopped (SIGTERM, SIGKILL) and started
#                           again; time until every client is back (3 runs)
#
# --smoke also runs a small restart storm (200 clients, one SIGTERM and one
# SIGKILL) and fails unless every client is back within 5 s, none refused.
# With --pagewire PATH both use that binary (the test command passes its
# debug build, which it has already compiled) instead of a release build.
#
# Servers run pinned to core 0 and the load client to core 1 (taskset).
# Results go to bench/results/<time>/ (runs.jsonl and table.md).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$bench_dir")

# 18,000 clients need 18,000 descriptors in the load client (and as many in
# the server): take the hard limit.
ulimit -n "$(ulimit -Hn)"

wants() { # wants SERVER: whether the arguments select that server
    local smoke=0 servers=""
    local prev=""
    for a in "$@"; do
        case "$a" in
            --smoke) smoke=1 ;;
            --servers=*) servers=${a#--servers=} ;;
        esac
        [ "$prev" = "--servers" ] && servers=$a
        prev=$a
    done
    if [ -n "$servers" ]; then
        [[ ",$servers," == *",$target,"* ]]
    elif [ "$smoke" = 1 ]; then
        [ "$target" = pagewire ]
    else
        true
    fi
}

storm=0
for a in "$@"; do
    [ "$a" = --storm ] && storm=1
done
if [ "$storm" = 1 ]; then
    args=()
    for a in "$@"; do
        [ "$a" = --storm ] || args+=("$a")
    done
    set -- "${args[@]+"${args[@]}"}"
fi

# The storm's daemon on core 0, its clients on core 1, as for pw-bench.
storm_place=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    storm_place=(taskset -c 1)
    storm_pin=(--pin)
else
    storm_pin=()
fi

if [ "$storm" = 1 ]; then
    cargo build --quiet --release --manifest-path "$bench_dir/Cargo.toml" --bin pw-storm
    cargo build --quiet --release --manifest-path "$root/Cargo.toml" --bin pagewire
    exec "${storm_place[@]+"${storm_place[@]}"}" "${CARGO_TARGET_DIR:-$bench_dir/target}/release/pw-storm" \
        --pagewire "${CARGO_TARGET_DIR:-$root/target}/release/pagewire" "${storm_pin[@]+"${storm_pin[@]}"}" "$@"
fi

for a in "$@"; do
    case "$a" in
        --help|-h|--list|--report|--report=*) exec cargo run --quiet --release --manifest-path "$bench_dir/Cargo.toml" --bin pw-bench -- "$@" ;;
    esac
done

cargo build --quiet --release --manifest-path "$bench_dir/Cargo.toml" --bins
bench_target=${CARGO_TARGET_DIR:-$bench_dir/target}

# pagewire is built from this checkout unless a binary is given (an A/B of
# two builds passes --pagewire).
pagewire_args=()
pagewire_bin="${CARGO_TARGET_DIR:-$root/target}/release/pagewire"
target=pagewire
given=0
prev=""
for a in "$@"; do
    case "$a" in
        --pagewire=*) given=1; pagewire_bin=${a#--pagewire=} ;;
        --pagewire) given=1 ;;
    esac
    [ "$prev" = --pagewire ] && pagewire_bin=$a
    prev=$a
done
if wants "$@" && [ "$given" = 0 ]; then
    cargo build --quiet --release --manifest-path "$root/Cargo.toml" --bin pagewire
    pagewire_args=(--pagewire "$pagewire_bin")
fi

target=node-send; need_node=0; wants "$@" && need_node=1
target=node-frame; wants "$@" && need_node=1
if [ "$need_node" = 1 ]; then
    if ! command -v node >/dev/null; then
        echo "run.sh: node is not installed; pass --servers without node-send,node-frame" >&2
        exit 2
    fi
    if [ ! -d "$bench_dir/node/node_modules/ws" ] ||
        [ "$bench_dir/node/package-lock.json" -nt "$bench_dir/node/node_modules/.package-lock.json" ]; then
        (cd "$bench_dir/node" && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi

smoke=0
for a in "$@"; do
    [ "$a" = --smoke ] && smoke=1
done
if [ "$smoke" = 0 ]; then
    exec "$bench_target/release/pw-bench" --bench-dir "$bench_dir" --bin-dir "$bench_target/release" \
        "${pagewire_args[@]}" "$@"
fi
"$bench_target/release/pw-bench" --bench-dir "$bench_dir" --bin-dir "$bench_target/release" \
    "${pagewire_args[@]}" "$@"
# The restart storm, small: every client back within 5 s, none refused or
# lost, after a SIGTERM and after a SIGKILL.
"${storm_place[@]+"${storm_place[@]}"}" "$bench_target/release/pw-storm" \
    --pagewire "$pagewire_bin" "${storm_pin[@]+"${storm_pin[@]}"}" \
    --clients 200 --runs 1 --settle 1 --require-target >/dev/null
