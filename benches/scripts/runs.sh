# Sourced by the bench scripts (big_chain.sh, eth_chain.sh, taint_jobs.sh): `run WHAT
# COMMAND...` runs one command under /usr/bin/time -v, appends "what, wall, peak RSS in
# MB, exit status" to $OUT/runs.tsv and prints it with the first line of the command's
# output (the last SHOW_LINES lines with SHOW=tail), and the tail of its errors when it
# failed; `digest SQL` is a short hash of what `ferret sql` prints for SQL on $WH.

run() {
  local what=$1
  shift
  local rc=0
  /usr/bin/time -v -o "$OUT/time.txt" "$@" > "$OUT/last.out" 2> "$OUT/last.err" || rc=$?
  local wall rss
  wall=$(awk -F': ' '/Elapsed/ {print $2}' "$OUT/time.txt")
  rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2/1024}' "$OUT/time.txt")
  printf '%s\t%s\t%s\t%s\n' "$what" "$wall" "$rss" "$rc" | tee -a "$OUT/runs.tsv"
  if [ "${SHOW:-head}" = tail ]; then
    tail -n "${SHOW_LINES:-3}" "$OUT/last.out"
  else
    head -n 1 "$OUT/last.out"
  fi
  if [ "$rc" != 0 ]; then tail -n 5 "$OUT/last.err"; fi
}

digest() {
  "$FERRET" sql --warehouse "$WH" "$1" | sha256sum | cut -c1-16
}
