//! The fuzz harnesses, shared by the coverage-guided libFuzzer targets in `fuzz/` (long
//! runs, nightly, `scripts/fuzz.sh`) and the random-mutation smoke test that CI runs on
//! stable (`testkit/tests/fuzz_smoke.rs`). Each takes any bytes and must return, with an
//! error or a result, never a panic, a hang or unbounded memory.

use std::path::Path;
use std::sync::LazyLock;

use alloy::network::AnyRpcBlock;
use ferret_indexer::eth::source::{BlockData, Receipt};
use ferret_indexer::eth::transform::EthRows;
use ferret_indexer::labels::{Defaults, parse_file};
use ferret_indexer::source::bitcoin::{BlkDir, Network, hash_and_verify};
use ferret_schemas::{Chain, Warehouse};
use object_store::{ObjectStoreExt, PutPayload};
use rand::{Rng, RngCore};

/// A harness: any bytes in, no panic out.
pub type Harness = fn(&[u8]);

/// The harnesses by name (the names of the `fuzz/` targets).
pub const TARGETS: &[(&str, Harness)] = &[
    ("blk_scan", blk_scan),
    ("manifest_load", manifest_load),
    ("labels_parse", labels_parse),
    ("eth_block_json", eth_block_json),
    ("case_parse", case_parse),
];

/// One scratch directory per process (in memory where /dev/shm exists), rewritten per
/// input.
fn scratch() -> &'static Path {
    static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a scratch directory")
    });
    DIR.path()
}

/// Bitcoin Core blk records and block decoding: the bytes as `blk00000.dat` (the first
/// byte odd: the next eight are an `xor.dat` key) scan, read and verify.
pub fn blk_scan(data: &[u8]) {
    let (keyed, rest) = match data.split_first() {
        Some((k, rest)) if k & 1 == 1 && rest.len() >= 8 => (Some(&rest[..8]), &rest[8..]),
        Some((_, rest)) => (None, rest),
        None => return,
    };
    let dir = scratch().join("blk");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("blk00000.dat"), rest).expect("write");
    let xor = dir.join("xor.dat");
    match keyed {
        Some(key) => std::fs::write(&xor, key).expect("write"),
        None => {
            let _ = std::fs::remove_file(&xor);
        }
    }
    for net in [None, Some(Network::Bitcoin)] {
        let Ok(blk) = BlkDir::open(&dir, net) else {
            continue;
        };
        let Ok(locs) = blk.scan() else {
            continue;
        };
        for loc in locs.iter().take(64) {
            if let Ok(block) = blk.read_block(loc) {
                let _ = hash_and_verify(&block);
            }
        }
    }
}

/// Manifests and results heads: the bytes as the newest manifest and results head load.
pub fn manifest_load(data: &[u8]) {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    });
    let _ = serde_json::from_slice::<ferret_schemas::Manifest>(data);
    RT.block_on(async {
        // One store per process (named memory stores live as long as the process), the
        // same two objects overwritten by each input.
        let wh = Warehouse::open("memory://fuzz-manifest").expect("open");
        let manifest = ferret_schemas::layout::state_dir(wh.root(), Chain::Btc)
            .join(ferret_schemas::manifest::manifest_name(3));
        let head = ferret_schemas::results::head_dir(wh.root())
            .join(ferret_schemas::results::head_name(1));
        for p in [&manifest, &head] {
            wh.store()
                .put(p, PutPayload::from(data.to_vec()))
                .await
                .expect("put");
        }
        let _ = wh.load_manifest(Chain::Btc).await;
        let _ = wh.latest_runs().await;
        let _ = wh.read_latest("taint").await;
    });
}

/// Label importers: the bytes after the first as a CSV file, a TagPack (YAML) or a plain
/// list (the first byte picks, and sets default category and label).
pub fn labels_parse(data: &[u8]) {
    let Some((kind, rest)) = data.split_first() else {
        return;
    };
    // 0 CSV, 1 TagPack, 2 list, 3 MISP or STIX JSON, 4 OFAC SDN XML.
    let ext = ["csv", "yaml", "txt", "json", "xml"][usize::from(*kind) % 5];
    let path = scratch().join(format!("labels.{ext}"));
    std::fs::write(&path, rest).expect("write");
    let d = Defaults {
        chain: None,
        category: (kind & 4 != 0).then(|| "scam".to_string()),
        label: (kind & 8 != 0).then(|| "x".to_string()),
        source: None,
    };
    let _ = parse_file(&path, &d);
}

/// Case files: any bytes as a case file (TOML with a cron schedule, addresses and seed
/// files relative to it) load or fail with an error naming the line, never a panic.
pub fn case_parse(data: &[u8]) {
    let dir = scratch().join("case");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // A seed file the case may name.
    std::fs::write(
        dir.join("seeds.txt"),
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa\n",
    )
    .expect("write");
    // The same bytes as a TOML and as a YAML case file.
    for name in ["case.toml", "case.yaml"] {
        let path = dir.join(name);
        std::fs::write(&path, data).expect("write");
        if let Ok(c) = ferret_cases::file::load(&path) {
            let _ = c.params();
            if let Some(cron) = &c.schedule {
                let t = chrono::DateTime::from_timestamp(1_796_600_000, 0).unwrap_or_default();
                let _ = cron.next_after(t);
            }
        }
    }
}

/// Ethereum RPC responses: the bytes as an `eth_getBlockByNumber` result and its receipts
/// (split at the first NUL); a block whose receipts pass the indexer's checks goes through
/// the transform into the six tables.
pub fn eth_block_json(data: &[u8]) {
    let (block, receipts) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"[]"[..]),
    };
    let Ok(block) = serde_json::from_slice::<AnyRpcBlock>(block) else {
        return;
    };
    let Ok(receipts) = serde_json::from_slice::<Vec<Receipt>>(receipts) else {
        return;
    };
    // The checks the indexer makes before the transform (Source::check_receipts).
    if receipts.len() != block.transactions.len()
        || receipts
            .iter()
            .zip(block.transactions.hashes())
            .any(|(r, h)| r.transaction_hash != h)
    {
        return;
    }
    let mut rows = EthRows::new();
    if rows
        .push_block(&BlockData {
            block,
            receipts,
            traces: None,
        })
        .is_ok()
    {
        let _ = rows.finish();
    }
}

/// Seed inputs for `target` from the fixtures directory (the same shapes
/// `scripts/fuzz.sh` seeds the libFuzzer corpora with).
pub fn seeds(target: &str, fixtures: &Path) -> Vec<Vec<u8>> {
    let read_dir = |d: &Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let with = |prefix: u8, bytes: &[u8]| {
        let mut v = vec![prefix];
        v.extend_from_slice(bytes);
        v
    };
    let mut out = Vec::new();
    match target {
        "blk_scan" => {
            for p in read_dir(&fixtures.join("btc")) {
                let Ok(data) = std::fs::read(&p) else {
                    continue;
                };
                out.push(with(0, &data[..data.len().min(1 << 20)]));
                // Single records, and one keyed with a non-zero xor key.
                let mut o = 0usize;
                for _ in 0..4 {
                    let Some(len) = data.get(o + 4..o + 8) else {
                        break;
                    };
                    let n = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                    let Some(rec) = data.get(o..o + 8 + n) else {
                        break;
                    };
                    out.push(with(0, rec));
                    let key = [0x1b, 0x52, 0xdf, 0x16, 0x9a, 0x03, 0x77, 0xe4];
                    let mut keyed = vec![1];
                    keyed.extend_from_slice(&key);
                    keyed.extend(rec.iter().enumerate().map(|(i, b)| b ^ key[i % 8]));
                    out.push(keyed);
                    o += 8 + n;
                }
            }
        }
        "labels_parse" => {
            for p in read_dir(&fixtures.join("labels/tagpacks")) {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(with(1, &b));
                }
            }
            for p in read_dir(&fixtures.join("labels")) {
                if p.extension().is_some_and(|e| e == "txt")
                    && let Ok(b) = std::fs::read(&p)
                {
                    out.push(with(2, &b[..b.len().min(1 << 16)]));
                }
            }
            out.push(with(
                0,
                b"address,label,category,source,confidence\n1BoatSLRHtKNngkdXEeobR76b53LETtpyT,x,scam,s,50\n",
            ));
            // MISP and STIX as `labels export` writes them, and an SDN list.
            use ferret_indexer::label_export::{Format, Options, Tlp, render};
            use ferret_indexer::labels::Label;
            let labels = [
                ("btc", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", Some("50")),
                ("eth", "0xd90e2f925da726b50c4ed8d0fb90ad053324f31b", None),
            ]
            .map(|(chain, address, confidence)| Label {
                chain: chain.into(),
                address: address.into(),
                label: "x \"y\"".into(),
                category: "scam".into(),
                source: "s".into(),
                confidence: confidence.map(str::to_string),
            });
            let o = Options {
                title: "t".into(),
                creator: "c".into(),
                tlp: Tlp::Amber,
                created: "2026-12-07T00:00:00Z".into(),
            };
            for f in [Format::Misp, Format::Stix] {
                if let Ok(text) = render(&labels, f, &o) {
                    out.push(with(3, text.as_bytes()));
                }
            }
            out.push(with(
                4,
                br#"<sdnList><sdnEntry><uid>1</uid><lastName>A &amp; B</lastName><programList><program>CYBER2</program></programList><idList><id><idType>Digital Currency Address - XBT</idType><idNumber>1BoatSLRHtKNngkdXEeobR76b53LETtpyT</idNumber></id><id><idType>Digital Currency Address - USDT</idType><idNumber>0xd90e2f925da726b50c4ed8d0fb90ad053324f31b</idNumber></id></idList></sdnEntry></sdnList>"#,
            ));
        }
        "manifest_load" => {
            out.push(br#"{"format":2,"schema_version":2,"chain":"btc","network":"regtest","seq":3,"first_height":0,"first_hash":"00","tip":{"height":1,"hash":"00"},"next_tx_index":2,"next_output_id":2,"next_address_id":1,"totals":{"blocks":2,"transactions":2,"inputs":2,"outputs":2,"unresolved_inputs":0,"addresses":1},"files":[{"table":"blocks","path":"btc/blocks/p.parquet","first_height":0,"last_height":1,"rows":2,"bytes":10,"sha256":"ab"}]}"#.to_vec());
            out.push(br#"{"format":1,"seq":1,"runs":{"taint":{"run_id":"1-a","files":["results/taint/run=1-a/part-0.parquet"],"rows":1}}}"#.to_vec());
        }
        "eth_block_json" => {
            let rpc = fixtures.join("eth/rpc");
            let result = |p: &Path| -> Option<serde_json::Value> {
                let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
                v.get("result").cloned()
            };
            let files = read_dir(&rpc);
            let receipts: Vec<serde_json::Value> = files
                .iter()
                .filter(|p| p.to_string_lossy().contains("eth_getTransactionReceipt_"))
                .filter_map(|p| result(p))
                .collect();
            for p in files
                .iter()
                .filter(|p| p.to_string_lossy().contains("eth_getBlockByNumber_"))
            {
                let Some(block) = result(p) else { continue };
                let hashes: Vec<String> = block["transactions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.get("hash").or(Some(t)).and_then(|h| h.as_str()))
                    .map(str::to_string)
                    .collect();
                let mut mine: Vec<&serde_json::Value> = receipts
                    .iter()
                    .filter(|r| {
                        r.get("transactionHash")
                            .and_then(|h| h.as_str())
                            .is_some_and(|h| hashes.iter().any(|x| x == h))
                    })
                    .collect();
                mine.sort_by_key(|r| {
                    let h = r["transactionHash"].as_str().unwrap_or_default();
                    hashes.iter().position(|x| x == h)
                });
                let mut input = serde_json::to_vec(&block).expect("json");
                input.push(0);
                input.extend(serde_json::to_vec(&mine).expect("json"));
                out.push(input);
            }
        }
        "case_parse" => {
            out.push(
                b"name = \"pig-1\"\ndescription = \"d\"\nchains = [\"btc\", \"eth\"]\nschedule = \"*/15 6-18 * jan-jun mon-fri\"\n\
                  [seeds]\naddresses = [\"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa\", \"0xde0b295669a9fd93d5f28d9ec85e40f4cb697bae\"]\n\
                  txids = [\"4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b\"]\ncategories = [\"scam\"]\n\
                  files = [\"seeds.txt\"]\nmax_cluster_size = 100\n[taint]\npolicy = \"poison\"\ndirection = \"forward\"\nhops = 6\n\
                  min_value = 1000\nstop_at = [\"exchange\"]\nasset = \"ETH\"\n[alerts]\njsonl = \"a.jsonl\"\n\
                  webhook = \"https://h.example/x\"\nwatch = [\"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa\"]\nmin_increase = 5\n"
                    .to_vec(),
            );
            out.push(b"name = \"c\"\nchains = [\"btc\"]\nschedule = \"@daily\"\n[seeds]\ncategories = [\"s\"]\n".to_vec());
            // YAML, with what hostile YAML tries (anchors, aliases, tags, documents).
            out.push(
                b"name: pig-1\nchains: [btc, eth]\nschedule: '@daily'\nseeds:\n  addresses:\n    - 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa\n\
                  \x20 categories: [scam]\n  files: [seeds.txt]\ntaint:\n  policy: poison\n  hops: 6\n  min_value: 0x10\n\
                  alerts:\n  jsonl: \"a.jsonl\"\n  watch: [1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa]\n"
                    .to_vec(),
            );
            out.push(b"a: &a [x, x]\nb: [*a, *a]\nc: !!str d\n---\nname: e\n".to_vec());
        }
        _ => {}
    }
    out
}

/// One random mutation of `input` (libFuzzer's basic moves: flip, overwrite with an
/// interesting value, insert, delete, duplicate a span, truncate, splice).
pub fn mutate(rng: &mut impl RngCore, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = v.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = [0x00, 0xff, 0x7f, 0x80, b'"', b'{', b'[', b'&', b'*', b'\n']
                    [rng.random_range(0..10)];
            }
            2 if len >= 4 => {
                // A little-endian length or count field set to an extreme.
                let i = rng.random_range(0..len - 3);
                let x: u32 = [0, 1, 0xffff_ffff, 0x8000_0000, 4_000_001][rng.random_range(0..5)];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            3 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                v.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(64));
                v.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(256));
                let span = v[i..i + n].to_vec();
                let at = rng.random_range(0..=len);
                v.splice(at..at, span);
            }
            6 if len > 0 => v.truncate(rng.random_range(0..len)),
            7 if !other.is_empty() => {
                let cut = rng.random_range(0..=v.len());
                let from = rng.random_range(0..other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..other.len().min(from + 4096)]);
            }
            _ => {}
        }
    }
    v
}
