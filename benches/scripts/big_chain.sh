#!/usr/bin/env bash
# The whole-chain runs of benches/README.md ("The 20 M-transaction chain") on one indexed
# warehouse: taint and clustering out of core from the CLI, the engine alone
# (stored_taint), and the peers on the same edges (spends_peers.py). Each run is its own
# process under /usr/bin/time -v; one line per run goes to $OUT/runs.tsv (what, wall
# seconds, peak RSS in MB, exit status) and the JSON lines of stored_taint to
# $OUT/stored.jsonl.
#
#   benches/scripts/big_chain.sh WAREHOUSE LABELS_CSV [OUT]
#
# FERRET and STORED_TAINT name the release binaries (default: the shared target dir);
# PYTHON a Python with numpy, scipy, pyarrow and python-graphblas; MEM_MB the budget
# (256); HOPS (10). Set IN_MEMORY_CGROUP to a cgroup v1 memory directory to also run the
# in-memory taint job inside it (it needs several GB on such a chain; the cgroup's limit
# keeps the machine alive when it needs more than there is).
set -euo pipefail
WH=${1:?warehouse}
LABELS=${2:?labels csv}
OUT=${3:-$(mktemp -d /tmp/ferret-big.XXXXXX)}
T=${CARGO_TARGET_DIR:-$HOME/.cache/ferret/target}/release
FERRET=${FERRET:-$T/ferret}
STORED=${STORED_TAINT:-$T/stored_taint}
PYTHON=${PYTHON:-$HOME/.cache/ferret/bench-venv/bin/python}
MEM_MB=${MEM_MB:-256}
HOPS=${HOPS:-10}
mkdir -p "$OUT"
: > "$OUT/runs.tsv"
: > "$OUT/stored.jsonl"

SHOW=tail
# shellcheck source=runs.sh
. "$(dirname "$0")/runs.sh"

# Labels once (re-importing adds nothing).
"$FERRET" labels import --warehouse "$WH" "$LABELS" > /dev/null

COMMON=(--warehouse "$WH" --seed-category scam --hops "$HOPS" --device cpu)
run "taint poison --mem-mb $MEM_MB" "$FERRET" taint btc "${COMMON[@]}" --policy poison --mem-mb "$MEM_MB"
# The haircut and fifo jobs also run the every-path taint for the exits report: one pass
# in chain order (docs/kernels.md).
run "taint haircut --mem-mb $MEM_MB" "$FERRET" taint btc "${COMMON[@]}" --policy haircut --mem-mb "$MEM_MB"
run "taint fifo --mem-mb $MEM_MB" "$FERRET" taint btc "${COMMON[@]}" --policy fifo --mem-mb "$MEM_MB"
run "cluster --mem-mb $MEM_MB --full" "$FERRET" cluster btc --warehouse "$WH" --mem-mb "$MEM_MB" --full

# The engine alone: whole graph live, and a run touching a small share.
for p in poison haircut fifo; do
  run "stored_taint $p all seeds" "$STORED" --warehouse "$WH" --labels "$LABELS" \
    --path stored --policy "$p" --hops "$HOPS" --mem-mb "$MEM_MB"
  head -n 1 "$OUT/last.out" >> "$OUT/stored.jsonl"
done
run "stored_taint haircut 1 seed 3 hops" "$STORED" --warehouse "$WH" --labels "$LABELS" \
  --path stored --policy haircut --hops 3 --seeds 1 --mem-mb "$MEM_MB"

if [ -n "${IN_MEMORY_CGROUP:-}" ]; then
  # Runs inside the cgroup: this shell joins it for the one command.
  run "taint poison in memory (cgroup $(cat "$IN_MEMORY_CGROUP/memory.limit_in_bytes") B)" \
    bash -c "echo \$\$ > '$IN_MEMORY_CGROUP/cgroup.procs' && exec '$FERRET' taint btc ${COMMON[*]} --policy poison"
fi

# The peers, checked against the stored_taint answers.
run "peers (scipy, graphblas)" "$PYTHON" "$(dirname "$0")/spends_peers.py" \
  --warehouse "$WH" --labels "$LABELS" --hops "$HOPS" --ferret "$OUT/stored.jsonl" --reps 1
cat "$OUT/last.out" "$OUT/last.err"
echo "results in $OUT"
