#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz, nightly) of the parsers that read
# what others wrote: blk records and blocks, manifests and results heads, label files
# (CSV, TagPack YAML, lists) and Ethereum RPC responses. Seed corpora come from the
# fixtures ($FERRET_FIXTURES, never copied into the repo) into fuzz/corpus/ (ignored).
#
#   scripts/fuzz.sh                 # every target, 10^7 executions each
#   RUNS=20000 scripts/fuzz.sh      # a smoke run
#   scripts/fuzz.sh blk_scan        # one target
#   MAX_TIME=600 scripts/fuzz.sh    # at most ten minutes each
#   MAX_LEN=65536 scripts/fuzz.sh   # inputs up to 64 KiB
#
# Each run bounds memory (-rss_limit_mb) and time per input (-timeout): a crash, a hang or
# an out-of-memory input fails the run and leaves the input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10000000}
# Optional wall-clock bound per target, seconds (libFuzzer stops at whichever comes first).
MAX_TIME=${MAX_TIME:-0}
# Largest input, bytes (the fixtures' blocks and RPC answers are up to ~1 MB; smaller runs
# many times faster on the parsers' structure).
MAX_LEN=${MAX_LEN:-1200000}
FX=${FERRET_FIXTURES:-../shared/fixtures}
export CARGO_TARGET_DIR=${FERRET_FUZZ_TARGET:-$HOME/.cache/ferret/fuzz-target}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(blk_scan manifest_load labels_parse eth_block_json case_parse)

# --- seed corpora from the fixtures -----------------------------------------------------
mkdir -p fuzz/corpus/{blk_scan,manifest_load,labels_parse,eth_block_json,case_parse}
if [ -d "$FX" ]; then
  python3 - "$FX" <<'PY'
import glob, json, os, struct, sys
fx = sys.argv[1]
out = "fuzz/corpus"
def put(target, name, data):
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)
# blk: unkeyed (first byte even) whole files, and single records.
for p in glob.glob(os.path.join(fx, "btc", "*.blk")):
    data = open(p, "rb").read()
    put("blk_scan", os.path.basename(p), b"\x00" + data[:1 << 20])
    o, i = 0, 0
    while o + 8 <= len(data) and i < 8:
        n = struct.unpack("<I", data[o + 4:o + 8])[0]
        put("blk_scan", f"{os.path.basename(p)}-{i}", b"\x00" + data[o:o + 8 + n])
        o += 8 + n
        i += 1
# labels: the first byte picks the format (0 csv, 1 yaml, 2 list, 3 MISP/STIX json, 4 SDN xml).
for p in glob.glob(os.path.join(fx, "labels", "tagpacks", "*.yaml")):
    put("labels_parse", os.path.basename(p), b"\x01" + open(p, "rb").read())
for p in glob.glob(os.path.join(fx, "labels", "*.txt")):
    put("labels_parse", os.path.basename(p), b"\x02" + open(p, "rb").read()[:1 << 16])
put("labels_parse", "sdn", b"\x04<sdnList><sdnEntry><uid>1</uid><lastName>A &amp; B</lastName>"
    b"<idList><id><idType>Digital Currency Address - XBT</idType>"
    b"<idNumber>1BoatSLRHtKNngkdXEeobR76b53LETtpyT</idNumber></id></idList></sdnEntry></sdnList>")
put("labels_parse", "stix", b'\x03{"type":"bundle","objects":[{"type":"cryptocurrency-wallet",'
    b'"address":"1BoatSLRHtKNngkdXEeobR76b53LETtpyT","x_ferret_label":"x"}]}')
put("labels_parse", "misp", b'\x03{"Event":{"info":"i","Object":[{"name":"coin-address","Attribute":'
    b'[{"object_relation":"address","value":"1BoatSLRHtKNngkdXEeobR76b53LETtpyT"}]}]}}')
put("labels_parse", "csv", b"\x00address,label,category,source,confidence\n"
    b"1BoatSLRHtKNngkdXEeobR76b53LETtpyT,x,scam,s,50\n")
# case files: TOML with every section.
put("case_parse", "full", b'name = "pig-1"\nchains = ["btc", "eth"]\nschedule = "*/15 6-18 * jan-jun mon-fri"\n'
    b'[seeds]\naddresses = ["1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"]\ncategories = ["scam"]\nfiles = ["seeds.txt"]\n'
    b'[taint]\npolicy = "poison"\nhops = 6\nstop_at = ["exchange"]\n[alerts]\njsonl = "a.jsonl"\nmin_increase = 5\n')
# ... and the same as YAML (every input is read both ways).
put("case_parse", "yaml", b'name: pig-1\nchains: [btc, eth]\nschedule: "*/15 6-18 * jan-jun mon-fri"\n'
    b'seeds:\n  addresses:\n    - 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa\n  categories: [scam]\n  files: [seeds.txt]\n'
    b"taint:\n  policy: poison\n  hops: 6\n  stop_at: ['exchange']\nalerts:\n  jsonl: a.jsonl\n  min_increase: 5\n")
# eth: a block's result, NUL, its receipts' results.
rpc = os.path.join(fx, "eth", "rpc")
receipts = [json.load(open(p)).get("result") for p in
            sorted(glob.glob(os.path.join(rpc, "*eth_getTransactionReceipt_*.json")))]
for p in glob.glob(os.path.join(rpc, "*eth_getBlockByNumber_*.json")):
    block = json.load(open(p)).get("result")
    if not block:
        continue
    hashes = [t["hash"] if isinstance(t, dict) else t for t in block.get("transactions", [])]
    mine = [r for r in receipts if r and r.get("transactionHash") in hashes]
    mine.sort(key=lambda r: hashes.index(r["transactionHash"]))
    put("eth_block_json", os.path.basename(p),
        json.dumps(block).encode() + b"\x00" + json.dumps(mine).encode())
PY
fi
cat > fuzz/corpus/manifest_load/v2 <<'JSON'
{"format":2,"schema_version":2,"chain":"btc","network":"regtest","seq":3,"first_height":0,"first_hash":"00","tip":{"height":1,"hash":"00"},"next_tx_index":2,"next_output_id":2,"next_address_id":1,"totals":{"blocks":2,"transactions":2,"inputs":2,"outputs":2,"unresolved_inputs":0,"addresses":1},"files":[{"table":"blocks","path":"btc/blocks/p.parquet","first_height":0,"last_height":1,"rows":2,"bytes":10,"sha256":"ab"}]}
JSON
cat > fuzz/corpus/manifest_load/head <<'JSON'
{"format":1,"seq":1,"runs":{"taint":{"run_id":"1-a","files":["results/taint/run=1-a/part-0.parquet"],"rows":1}}}
JSON

# --- runs --------------------------------------------------------------------------------
for t in "${targets[@]}"; do
  echo "== $t: $RUNS executions"
  (cd fuzz && cargo +nightly fuzz run -O --debug-assertions "$t" "corpus/$t" -- \
     -runs="$RUNS" -max_total_time="$MAX_TIME" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
     -max_len="$MAX_LEN" -print_final_stats=1 2>&1 | tail -n 25)
done
