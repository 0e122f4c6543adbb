#!/usr/bin/env bash
# Case reruns, incremental against from scratch (benches/README.md, "Case reruns"): a
# generated Bitcoin chain is indexed to BLOCKS − NEW blocks; two cases (haircut without a
# hop limit; fifo with hops = 6) run once; the last NEW blocks are indexed; each case runs
# again (incremental: only the new blocks), then again with --full (from the first block).
# Every run is its own process under /usr/bin/time -v: one line per run goes to
# $OUT/runs.tsv (case, what, wall seconds, peak RSS in MB). The incremental and the full
# rerun's tables must be equal (checked here with SQL; the script fails otherwise).
#
#   benches/scripts/case_rerun.sh [OUT]
#
# FERRET names the release binary (default: $CARGO_TARGET_DIR/release/ferret); BLOCKS
# (1000), TXS (200 per block), NEW (10) the chain.
set -euo pipefail
OUT=${1:-$(mktemp -d /tmp/ferret-case-rerun.XXXXXX)}
T=${CARGO_TARGET_DIR:-$HOME/.cache/ferret/target}/release
FERRET=${FERRET:-$T/ferret}
BLOCKS=${BLOCKS:-1000}
TXS=${TXS:-200}
NEW=${NEW:-10}
mkdir -p "$OUT"
: > "$OUT/runs.tsv"
export FERRET_LOG=${FERRET_LOG:-warn}

CHAIN=$OUT/chain
[ -d "$CHAIN/blocks" ] || "$FERRET" synth btc --out "$CHAIN" --blocks "$BLOCKS" --txs-per-block "$TXS" --seed 1 >/dev/null
WH=$OUT/wh
rm -rf "$WH"
"$FERRET" index btc --blocks-dir "$CHAIN/blocks" --warehouse "$WH" --to-height $((BLOCKS - NEW)) >/dev/null
"$FERRET" labels import --warehouse "$WH" "$CHAIN/truth/labels.csv" >/dev/null

cat > "$OUT/haircut.toml" <<'EOF'
name = "haircut"
chains = ["btc"]
[seeds]
categories = ["scam"]
[taint]
policy = "haircut"
stop_at = ["exchange"]
EOF
cat > "$OUT/fifo.toml" <<'EOF'
name = "fifo"
chains = ["btc"]
[seeds]
categories = ["scam"]
[taint]
policy = "fifo"
hops = 6
stop_at = ["exchange"]
EOF

timed() { # case what args...
  local case=$1 what=$2
  shift 2
  /usr/bin/time -v "$@" >"$OUT/$case-$what.out" 2>"$OUT/$case-$what.time"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$OUT/$case-$what.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$OUT/$case-$what.time")
  printf '%s\t%s\t%s\t%s\n' "$case" "$what" "$wall" "$rss" | tee -a "$OUT/runs.tsv"
}

for c in haircut fifo; do
  timed "$c" first "$FERRET" case run "$OUT/$c.toml" --warehouse "$WH" --device cpu --no-deliver
done
"$FERRET" index btc --blocks-dir "$CHAIN/blocks" --warehouse "$WH" >/dev/null
for c in haircut fifo; do
  timed "$c" incremental "$FERRET" case run "$OUT/$c.toml" --warehouse "$WH" --device cpu --no-deliver
  grep -q "btc taint: incremental" "$OUT/$c-incremental.out" || { echo "$c: not incremental" >&2; cat "$OUT/$c-incremental.out" >&2; exit 1; }
  timed "$c" full-rerun "$FERRET" case run "$OUT/$c.toml" --warehouse "$WH" --device cpu --no-deliver --full
done

# The incremental rerun (the second run) equals the full rerun (the third), table by table.
for c in haircut fifo; do
  for t in taint exits flows paths state_exits; do
    q="WITH r AS (SELECT run_id, row_number() OVER (ORDER BY started_at) AS n FROM case_runs WHERE \"case\" = '$c'),
       a AS (SELECT * EXCLUDE (\"case\", run_id) FROM case_$t WHERE \"case\" = '$c' AND run_id = (SELECT run_id FROM r WHERE n = 2)),
       b AS (SELECT * EXCLUDE (\"case\", run_id) FROM case_$t WHERE \"case\" = '$c' AND run_id = (SELECT run_id FROM r WHERE n = 3))
       SELECT (SELECT count(*) FROM a) AS n, (SELECT count(*) FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b)) AS only_a, (SELECT count(*) FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a)) AS only_b"
    read -r rows extra missing < <("$FERRET" sql --warehouse "$WH" --format csv "$q" | tail -1 | tr ',' ' ')
    printf '%s\t%s\trows %s, only incremental %s, only full %s\n' "$c" "$t" "$rows" "$extra" "$missing"
    [ "$extra" = 0 ] && [ "$missing" = 0 ] || { echo "$c: case_$t differs" >&2; exit 1; }
  done
done
echo "results in $OUT/runs.tsv"
