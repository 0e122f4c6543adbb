#!/usr/bin/env bash
# The taint jobs of benches/README.md ("Taint without a hop limit in one pass") on one
# indexed warehouse with its labels imported: each policy out of core (--mem-mb) and, with
# IN_MEMORY=1, in memory, each run one process under /usr/bin/time -v, and the `taint`
# and `exits` tables of the two compared through `ferret sql` (every column that does not
# name the run). Exit 1 when they differ.
#
#   benches/scripts/taint_jobs.sh WAREHOUSE [OUT]
#
# FERRET names the release binary (default: the shared target dir); POLICIES (haircut
# fifo poison), MEM_MB (256), HOPS (10).
set -euo pipefail
WH=${1:?warehouse}
OUT=${2:-$(mktemp -d /tmp/ferret-taint-jobs.XXXXXX)}
FERRET=${FERRET:-${CARGO_TARGET_DIR:-$HOME/.cache/ferret/target}/release/ferret}
MEM_MB=${MEM_MB:-256}
HOPS=${HOPS:-10}
mkdir -p "$OUT"
: > "$OUT/runs.tsv"

# shellcheck source=runs.sh
. "$(dirname "$0")/runs.sh"

TAINT="SELECT txid, vout, hop, fraction, tainted_value, coinjoin FROM taint ORDER BY txid, vout"
EXITS="SELECT address, tainted_value, outputs, min_hop, all_paths_value, coinjoin_value FROM exits ORDER BY address"
status=0
for p in ${POLICIES:-haircut fifo poison}; do
  COMMON=(--warehouse "$WH" --seed-category scam --policy "$p" --hops "$HOPS" --device cpu)
  run "taint btc $p --mem-mb $MEM_MB" "$FERRET" taint btc "${COMMON[@]}" --mem-mb "$MEM_MB"
  got="$(digest "$TAINT") $(digest "$EXITS")"
  if [ -n "${IN_MEMORY:-}" ]; then
    run "taint btc $p in memory" "$FERRET" taint btc "${COMMON[@]}"
    want="$(digest "$TAINT") $(digest "$EXITS")"
    if [ "$got" == "$want" ]; then
      echo "equal: $p ($got)"
    else
      echo "DIFFERENT: $p ($got vs $want)"
      status=1
    fi
  fi
done
echo "runs: $OUT/runs.tsv"
exit $status
