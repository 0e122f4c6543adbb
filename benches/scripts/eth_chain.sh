#!/usr/bin/env bash
# The Ethereum out-of-core runs of benches/README.md ("The account chain"): generates (or
# reuses) the account chain with eth_gen, then runs `ferret taint eth` and `ferret cluster
# eth` in memory and with --mem-mb, each its own process under /usr/bin/time -v; one line
# per run goes to $OUT/runs.tsv (what, wall time, peak RSS in MB, exit status) and every
# run's tables are compared with the in-memory run's through `ferret sql` (exit 1 on a
# difference).
#
#   benches/scripts/eth_chain.sh [OUT]
#
# FERRET and ETH_GEN name the release binaries (default: the shared target dir); BLOCKS,
# ACCOUNTS, DEPOSITS size the chain (1,000,000 blocks, 2,000,000 accounts, 200,000
# deposit addresses: ~8.5 M transfers); MEM_MB the budget (256); HOPS (10); CHAIN where
# it is kept (~/.cache/ferret/bench-eth); SCRATCH where runs spill.
set -euo pipefail
OUT=${1:-$(mktemp -d /tmp/ferret-eth.XXXXXX)}
T=${CARGO_TARGET_DIR:-$HOME/.cache/ferret/target}/release
FERRET=${FERRET:-$T/ferret}
ETH_GEN=${ETH_GEN:-$T/eth_gen}
CHAIN=${CHAIN:-$HOME/.cache/ferret/bench-eth}
MEM_MB=${MEM_MB:-256}
HOPS=${HOPS:-10}
SCRATCH=${SCRATCH:-${TMPDIR:-/tmp}}
mkdir -p "$OUT"
: > "$OUT/runs.tsv"

"$ETH_GEN" --out "$CHAIN" --blocks "${BLOCKS:-1000000}" --accounts "${ACCOUNTS:-2000000}" \
  --deposits "${DEPOSITS:-200000}"
WH=$CHAIN/warehouse

# shellcheck source=runs.sh
. "$(dirname "$0")/runs.sh"

# A digest of a stored table, for comparing runs.
TAINT="SELECT address, hop, first_block, first_transaction_index, first_transaction_hash, tainted_value, tainted_transfers FROM eth_taint ORDER BY address"
EXITS="SELECT address, label, tainted_value, tainted_transfers, min_hop, first_block FROM eth_exits ORDER BY address"
CLUSTERS="SELECT address, address_id, cluster_id, cluster_size FROM eth_clusters ORDER BY address_id"
status=0
for job in "haircut forward" "poison forward" "haircut backward"; do
  set -- $job
  COMMON=(--warehouse "$WH" --seed-category scam --stop-at exchange --policy "$1" --direction "$2" --hops "$HOPS" --device cpu)
  run "taint eth $1 $2 in memory" "$FERRET" taint eth "${COMMON[@]}"
  want="$(digest "$TAINT") $(digest "$EXITS")"
  run "taint eth $1 $2 --mem-mb $MEM_MB" "$FERRET" taint eth "${COMMON[@]}" --mem-mb "$MEM_MB" --scratch "$SCRATCH"
  got="$(digest "$TAINT") $(digest "$EXITS")"
  if [ "$got" != "$want" ]; then echo "DIFFERENT: taint eth $job ($got vs $want)"; status=1; fi
done
# One plain address, three hops: a small share of the chain.
SEED=$("$FERRET" sql --warehouse "$WH" "SELECT from_address FROM eth.transfers WHERE block_number = 500000 LIMIT 1" | grep -o '0x[0-9a-f]\{40\}' | head -n 1)
run "taint eth haircut 1 seed 3 hops in memory" "$FERRET" taint eth --warehouse "$WH" --seed "$SEED" --hops 3 --device cpu
run "taint eth haircut 1 seed 3 hops --mem-mb $MEM_MB" "$FERRET" taint eth --warehouse "$WH" --seed "$SEED" --hops 3 --device cpu --mem-mb "$MEM_MB" --scratch "$SCRATCH"
run "cluster eth in memory" "$FERRET" cluster eth --warehouse "$WH" --device cpu
want=$(digest "$CLUSTERS")
run "cluster eth --mem-mb $MEM_MB" "$FERRET" cluster eth --warehouse "$WH" --mem-mb "$MEM_MB" --scratch "$SCRATCH"
got=$(digest "$CLUSTERS")
if [ "$got" != "$want" ]; then echo "DIFFERENT: cluster eth ($got vs $want)"; status=1; fi
echo "runs: $OUT/runs.tsv"
exit $status
