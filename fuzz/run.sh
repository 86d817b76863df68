#!/usr/bin/env bash
# Runs every fuzz target for a set number of executions on its kept corpus.
#
#   fuzz/run.sh [EXECS] [TARGET...]     default: 1000000 executions, all targets
#   FUZZ_SECONDS=20 fuzz/run.sh         a time budget per target instead (CI)
#   FUZZ_READONLY=1 fuzz/run.sh         new inputs go to a scratch folder, the
#                                       kept corpus is left as it is (CI)
#   fuzz/run.sh --minimise              merge each corpus down to a minimal set
#   FUZZ_SANITIZER=address fuzz/run.sh  with AddressSanitizer (needs nightly)
#
# Needs only the machine's Rust toolchain, stable included: the targets are
# built here with the flags `cargo fuzz build -s none` passes (libFuzzer's
# sancov coverage: plain -C options and --cfg fuzzing, no -Z flag), so
# neither nightly nor cargo-fuzz is needed; `cargo fuzz run` by hand builds
# the same binaries. With FUZZ_SANITIZER=address the build uses
# `cargo +nightly` and -Zsanitizer=address instead (a rebuild in the same
# target dir; measured here under load: 7 min 23 s, then wire at 3,600
# executions/s against about 50,000 without). The fuzz crate depends on peerdrop without default features
# (the pure format layers only, see Cargo.toml's `node`), so the build is a
# few crates and libFuzzer, not libp2p's tree.
#
# Targets run one at a time, each as one libFuzzer process on one core
# (libFuzzer's -jobs/-workers would fork extra processes), niced, so the
# machine stays usable. Without a sanitizer the allocation bounds are
# checked by the targets' own counting allocator (src/lib.rs), which also
# works where -malloc_limit_mb (which needs a sanitizer's malloc hooks) does
# not; the code under test is safe Rust.
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

triple=$(rustc -vV | sed -n 's/^host: //p')
# cargo-fuzz's flags (its src/project.rs, for `-s none`: release
# with debug assertions); one codegen unit, because with more the sancov
# pass stops ThinLTO from inlining (cargo-fuzz measured ~3x slower runs).
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing
  -Clink-dead-code -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cdebug-assertions -Ccodegen-units=1"
cargo=(cargo)
case "${FUZZ_SANITIZER:-none}" in
  none) ;;
  address)
    cargo=(cargo +nightly)
    flags="$flags -Zsanitizer=address"
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
    ;;
  *) echo "FUZZ_SANITIZER=${FUZZ_SANITIZER}: only none and address are supported" >&2; exit 2 ;;
esac
# --target keeps these flags off build scripts and proc macros.
if ! RUSTFLAGS="$(echo $flags) ${RUSTFLAGS:-}" "${cargo[@]}" build --locked --release \
  --config profile.release.debug=true --target "$triple" --bins; then
  echo "fuzz build failed; if cargo asked to update the lock file, peerdrop gained a" \
    "dependency outside its node feature: run (cd fuzz && cargo update -p peerdrop)" \
    "and commit fuzz/Cargo.lock" >&2
  exit 1
fi

for t in "${TARGETS[@]}"; do
  corpus=corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  if [ -z "$(ls -A "$corpus")" ] && command -v python3 >/dev/null; then
    python3 seed.py "$t" "$corpus"
  fi
  bin=target/$triple/release/$t
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
  # libFuzzer adds the inputs it finds to the first folder it is given.
  dirs=("$corpus")
  if [ -n "${FUZZ_READONLY:-}" ]; then
    scratch=$(mktemp -d)
    dirs=("$scratch" "$corpus")
  fi
  log=artifacts/$t/last-run.log
  start=$(date +%s)
  if ! nice -n 15 "$bin" "${budget[@]}" \
      -max_len="${MAX_LEN[$t]}" -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB" \
      -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
      "${dirs[@]}" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "$t: FAILED, input in fuzz/artifacts/$t/ (log: fuzz/$log)" >&2
    exit 1
  fi
  if [ -n "${FUZZ_READONLY:-}" ]; then
    rm -rf "$scratch"
  fi
  secs=$(( $(date +%s) - start ))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')
  peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$')
  echo "$t: ${runs} executions in ${secs}s (${rate}/s), peak RSS ${peak} MB, no crash"
done
