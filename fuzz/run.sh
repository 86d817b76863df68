#!/usr/bin/env bash
# Runs every fuzz target for a set number of executions on its kept corpus.
#
#   fuzz/run.sh [EXECS] [TARGET...]     default: 1000000 executions, all targets
#   FUZZ_SECONDS=10 fuzz/run.sh         a time budget per target instead (CI)
#   fuzz/run.sh --minimise              merge each corpus down to a minimal set
#
# Needs `cargo +nightly` and cargo-fuzz (`cargo install cargo-fuzz`). Targets
# run one at a time, each as one libFuzzer process on one core (libFuzzer's
# -jobs/-workers would fork extra processes), niced, so the machine stays
# usable. Built without a sanitizer (-s none): the code under test is safe
# Rust, and the allocation bounds are checked by the targets' own counting
# allocator (src/lib.rs), which also works where -malloc_limit_mb (which
# needs a sanitizer's malloc hooks) does not.
# The corpus is fuzz/corpus/<target>; an empty one is seeded from
# tests/vectors (fuzz/seed.py). A crash leaves its input in
# fuzz/artifacts/<target>/ and stops the script (exit 1): turn it into a
# regression test in tests/ (plain `cargo test`) before fixing it.
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(link manifest meta wire open_chunk)
# Longest input per target: a link is at most 4 KiB; 64 KiB reaches manifests
# and file lists with thousands of ids or entries, and frames up to the
# 80 KiB limit. The allocation bounds themselves are asserted inside each
# target (src/lib.rs); -rss_limit_mb and -malloc_limit_mb are a backstop.
declare -A MAX_LEN=([link]=8192 [manifest]=65536 [meta]=65536 [wire]=100000 [open_chunk]=4200)
RSS_MB=${FUZZ_RSS_MB:-1024}

minimise=0
if [ "${1:-}" = "--minimise" ]; then
  minimise=1
  shift
fi
execs=1000000
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  execs=$1
  shift
fi
if [ $# -gt 0 ]; then
  TARGETS=("$@")
fi

cargo +nightly fuzz build -s none >/dev/null

for t in "${TARGETS[@]}"; do
  corpus=corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  if [ -z "$(ls -A "$corpus")" ] && command -v python3 >/dev/null; then
    python3 seed.py "$t" "$corpus"
  fi
  bin=target/x86_64-unknown-linux-gnu/release/$t
  if [ $minimise = 1 ]; then
    tmp=$(mktemp -d)
    "$bin" -merge=1 -max_len="${MAX_LEN[$t]}" "$tmp" "$corpus" 2>/dev/null
    rm -rf "$corpus" && mv "$tmp" "$corpus"
    echo "$t: $(ls "$corpus" | wc -l) inputs after minimising"
    continue
  fi
  if [ -n "${FUZZ_SECONDS:-}" ]; then
    budget=(-max_total_time="$FUZZ_SECONDS")
  else
    budget=(-runs="$execs")
  fi
  log=artifacts/$t/last-run.log
  start=$(date +%s)
  if ! nice -n 15 "$bin" "${budget[@]}" \
      -max_len="${MAX_LEN[$t]}" -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB" \
      -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
      "$corpus" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "$t: FAILED, input in fuzz/artifacts/$t/ (log: fuzz/$log)" >&2
    exit 1
  fi
  secs=$(( $(date +%s) - start ))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')
  peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$')
  echo "$t: ${runs} executions in ${secs}s (${rate}/s), peak RSS ${peak} MB, no crash"
done
