#!/usr/bin/env bash
# The long crash and fault campaigns (the short ones run in `cargo test`).
#
#   scripts/campaigns.sh [ROUNDS]        default 3 rounds, each with a fresh seed
#   KILLS=20 scripts/campaigns.sh        kills per kill campaign (default 20)
#   SEED=123 scripts/campaigns.sh 1      replay one round with a printed seed
#
# Each round runs, one test at a time and niced: `kill -9` of `receive` and of
# a fetching daemon at KILLS seeded random points each (tests/campaign_kill.rs),
# a disk filling up mid-transfer and a connection cut every few chunks
# (tests/campaign_faults.rs; those need root). Loopback and namespaces of
# their own only, mDNS off. Prints each round's seed and outcome, and a
# summary; exits 1 if any round failed.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
export PEERDROP_CAMPAIGN_KILLS=${KILLS:-20}
cargo test --no-run --test campaign_kill --test campaign_faults
log=$(mktemp -d)/campaigns.log
failed=0
start=$(date +%s)
for r in $(seq 1 "$rounds"); do
  seed=${SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
  echo "== round $r/$rounds: seed $seed, $PEERDROP_CAMPAIGN_KILLS kills per kill campaign"
  if PEERDROP_CAMPAIGN_SEED=$seed nice -n 10 cargo test -q \
      --test campaign_kill --test campaign_faults -- --test-threads=1 --nocapture \
      >>"$log" 2>&1; then
    echo "   ok"
  else
    echo "   FAILED (replay: SEED=$seed scripts/campaigns.sh 1)"
    failed=$((failed + 1))
  fi
done
secs=$(( $(date +%s) - start ))
echo "== $rounds round(s) in ${secs}s, $failed failed; log: $log"
echo "kills made: $(grep -c '^kill [0-9]' "$log" || true)," \
  "runs that had ended before their kill: $(grep -c 'running=false' "$log" || true)"
grep -E "^(last run resumed|resumed [0-9]+ bytes|[0-9]+ connection\(s\) cut)" "$log" || true
[ "$failed" = 0 ]
