#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo fuzz (libFuzzer, debug assertions):
# runs each target in fuzz/fuzz_targets for FUZZ_SECONDS (default 60),
# starting from the committed seeds in fuzz/seeds/TARGET, and fails on the
# first crash, hang or failed assertion. The corpus it grows and any
# crashing input are kept under test-output/fuzz/.
#
#   scripts/fuzz.sh                  every target
#   FUZZ_SECONDS=600 scripts/fuzz.sh page frames
#   FUZZ_SANITIZER=address scripts/fuzz.sh
#
# FUZZ_SANITIZER (default none) is cargo fuzz's --sanitizer. pagewire's own
# code has no unsafe (`unsafe_code = "forbid"`), so a sanitizer checks only
# the unsafe code of its dependencies; AddressSanitizer costs about 3 of
# the build's minutes on 2 cores and most of the `page` target's speed
# (docs/RELIABILITY.md), so the test command runs without it.
#
# cargo fuzz passes the compiler flags libFuzzer needs; with a sanitizer
# they include -Zsanitizer, which only a nightly compiler accepts. The
# machines have the stable toolchain alone, so RUSTC_BOOTSTRAP=1 lets the
# compiler accept it; the flags are the same ones, so the build is the same.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
if (($#)); then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do
    t=${f##*/}
    targets+=("${t%.rs}")
  done
fi
out=test-output/fuzz

step() { printf '\n==> %s\n' "$*"; }

export RUSTC_BOOTSTRAP=1

# cargo-fuzz goes into the project's target/tools/, not ~/.cargo/bin:
# nothing outside the checkout is changed (`cargo clean` removes it).
tools="$PWD/target/tools"
export PATH="$tools/bin:$PATH"
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
  cargo install --locked --quiet --root "$tools" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

step "building the fuzz targets"
(cd fuzz && cargo fuzz build --sanitizer "$sanitizer")

# One target's bounded run; prints its summary, or the crash and how to
# replay it, and fails on a crash.
fuzz_one() {
  local t=$1
  local corpus=$out/corpus/$t artifacts=$out/artifacts/$t log=$out/$t.log
  mkdir -p "$corpus" "$artifacts"
  # The first directory is the one libFuzzer adds new inputs to: the
  # committed seeds are only read.
  if (cd fuzz && cargo fuzz run --sanitizer "$sanitizer" "$t" "../$corpus" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="../$artifacts/" -print_final_stats=1) >"$log" 2>&1; then
    local runs cov
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "$t: ${runs:-?} runs, ${cov:-cov: ?} (coverage points), corpus $(find "$corpus" -type f | wc -l) inputs"
  else
    grep -E -A12 'panicked|ERROR: |SUMMARY' "$log" | head -40 || tail -40 "$log"
    echo "$t: FAILED; input saved in $artifacts/, full log $log"
    echo "replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $t ../$artifacts/<file>)"
    return 1
  fi
}

# As many targets at once as there are cores: each run is one process on
# one core, so the wall time is the bound per target, not their sum.
parallel=$(nproc)
failed=()
mkdir -p "$out"
for ((i = 0; i < ${#targets[@]}; i += parallel)); do
  batch=("${targets[@]:i:parallel}")
  step "fuzzing ${batch[*]} for ${seconds}s"
  pids=()
  for t in "${batch[@]}"; do
    fuzz_one "$t" >"$out/$t.summary" 2>&1 &
    pids+=("$!")
  done
  for j in "${!batch[@]}"; do
    if ! wait "${pids[$j]}"; then
      failed+=("${batch[$j]}")
    fi
    cat "$out/${batch[$j]}.summary"
  done
done

if ((${#failed[@]})); then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no crash"
