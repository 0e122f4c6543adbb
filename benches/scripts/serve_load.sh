#!/usr/bin/env bash
# `ferret serve` under load (benches/README.md, "Serving SQL"): starts a release
# `ferret serve` on WH with a throwaway users file, runs benches/scripts/serve_load.py
# (64 clients, the analyst mix, the server's RSS sampled; then the same queries one at a
# time through the server, `ferret sql` and DuckDB) and stops the server.
#
#   benches/scripts/serve_load.sh WH [CLIENTS] [SECONDS]     # LIGHT=1: no whole-chain aggregate; NO_TAINT=1: no taint client
#   RECONNECT=N: each client reconnects every N queries; NO_SINGLE=1: no one-at-a-time part
set -euo pipefail
cd "$(dirname "$0")/../.."
WH=${1:?warehouse}
CLIENTS=${2:-64}
SECONDS_=${3:-60}
FERRET=${FERRET:-$HOME/.cache/ferret/target/release/ferret}
PY=${FERRET_PYTHON:-$HOME/.cache/ferret/venv/bin/python}
OUT=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$OUT"' EXIT
echo "load-pw" | "$FERRET" users add --file "$OUT/users" --role analyst bench 2>/dev/null
# Kernels out of core (as a deployment would run them), 64 connections plus the spare.
FERRET_LOG=warn "$FERRET" serve --warehouse "$WH" --users "$OUT/users" \
  --pg-listen 127.0.0.1:0 --flight-listen off --max-connections 80 \
  --max-concurrent-queries "${MAX_QUERIES:-8}" --query-memory-mb 512 --mem-mb 256 \
  > "$OUT/serve.out" 2> "$OUT/serve.err" &
PID=$!
for _ in $(seq 100); do grep -q "pg listening" "$OUT/serve.out" 2>/dev/null && break; sleep 0.2; done
PG=$(sed -n 's/^pg listening on //p' "$OUT/serve.out")
"$PY" benches/scripts/serve_load.py --pg "$PG" --user bench --password load-pw --pid "$PID" \
  --warehouse "$WH" --ferret "$FERRET" --clients "$CLIENTS" --seconds "$SECONDS_" ${LIGHT:+--light} ${NO_TAINT:+--no-taint} \
  ${RECONNECT:+--reconnect-every "$RECONNECT"} ${NO_SINGLE:+--no-single}
