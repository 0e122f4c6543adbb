//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::util::display::{ArrayFormatter, FormatOptions};
use ferret_schemas::Warehouse;

/// Whether CI demands every real component (a missing one fails instead of skipping).
pub fn require_all() -> bool {
    std::env::var("FERRET_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The shared fixtures directory (`FERRET_FIXTURES`, default `../shared/fixtures` beside
/// the repository). None (the test skips) when missing, a failure under FERRET_REQUIRE_ALL.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("FERRET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    if dir.join("btc").is_dir() {
        return Some(dir);
    }
    let hint = format!(
        "fixtures not found at {}: set FERRET_FIXTURES to the shared fixtures directory",
        dir.display()
    );
    assert!(!require_all(), "{hint}");
    eprintln!("skipping: {hint}");
    None
}

/// The records (magic + length + block) of a `.blk` fixture file.
pub fn records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut o = 0;
    while o + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[o + 4..o + 8].try_into().expect("4 bytes")) as usize;
        out.push(bytes[o..o + 8 + len].to_vec());
        o += 8 + len;
    }
    out
}

/// Writes a blocks dir with one blk file per entry of `files`.
pub fn write_blocks_dir(dir: &Path, files: &[Vec<Vec<u8>>]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (i, recs) in files.iter().enumerate() {
        let data: Vec<u8> = recs.concat();
        std::fs::write(dir.join(format!("blk{i:05}.dat")), data).expect("write blk");
    }
}

/// The mainnet chain 0..=255 as one blk file's records (genesis + the 1–255 fixture).
pub fn mainnet_0_255(fx: &Path) -> Vec<Vec<u8>> {
    let mut recs = vec![records(&fx.join("btc/mainnet-blocks-0-4.blk")).remove(0)];
    recs.extend(records(&fx.join("btc/mainnet-blocks-1-255.blk")));
    recs
}

/// XORs a blocks dir in place with `key` (Core's scheme) and writes xor.dat.
pub fn obfuscate(dir: &Path, key: [u8; 8]) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("blk"))
        {
            let mut bytes = std::fs::read(&path).expect("read");
            for (i, b) in bytes.iter_mut().enumerate() {
                *b ^= key[i % 8];
            }
            std::fs::write(&path, bytes).expect("write");
        }
    }
    std::fs::write(dir.join("xor.dat"), key).expect("xor.dat");
}

/// Every row of the latest typologies run but its run id, sorted (the typologies tests
/// compare incremental and full runs with it).
pub async fn typologies_table(wh: &str) -> Vec<String> {
    let w = Warehouse::open(wh).expect("open");
    query(
        &w,
        "SELECT pattern, chain, address, cluster_id, array_to_string(txids, ' '), first_height, last_height, amount, score, features FROM typologies ORDER BY 1, 3, 5",
    )
    .await
}

/// Runs a SQL query and renders each row as one `|`-separated line.
pub async fn query(wh: &Warehouse, sql: &str) -> Vec<String> {
    let ctx = ferret_query::session(wh).await.expect("session");
    let results = ferret_query::run_sql(&ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut rows = Vec::new();
    let opts = FormatOptions::default().with_null("NULL");
    for r in results {
        for b in r.batches {
            let fmts: Vec<_> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter"))
                .collect();
            for i in 0..b.num_rows() {
                rows.push(
                    fmts.iter()
                        .map(|f| f.value(i).to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                );
            }
        }
    }
    rows
}

/// One value of a single-row, single-column query.
pub async fn scalar(wh: &Warehouse, sql: &str) -> String {
    let rows = query(wh, sql).await;
    assert_eq!(rows.len(), 1, "{sql} returned {rows:?}");
    rows[0].clone()
}

/// Every row of every Bitcoin table, in key order (for comparing warehouses).
pub async fn dump(wh: &Warehouse) -> Vec<String> {
    dump_chain(wh, ferret_schemas::Chain::Btc).await
}

/// Every row of every table of `chain`, in key order (for comparing warehouses).
pub async fn dump_chain(wh: &Warehouse, chain: ferret_schemas::Chain) -> Vec<String> {
    let mut out = Vec::new();
    for t in ferret_schemas::tables_of(chain) {
        let order = t.sort_key.join(", ");
        out.push(format!("== {}", t.qualified_name()));
        out.extend(
            query(
                wh,
                &format!("SELECT * FROM {} ORDER BY {order}", t.qualified_name()),
            )
            .await,
        );
    }
    out
}

/// The recorded Ethereum mainnet responses (`FERRET_FIXTURES/eth/rpc`).
pub fn eth_rpc_fixtures() -> Option<PathBuf> {
    fixtures().map(|f| f.join("eth/rpc")).filter(|d| d.is_dir())
}

/// A fresh anvil node; None (the test skips) when anvil is not installed, a failure under
/// FERRET_REQUIRE_ALL.
pub async fn anvil(extra: &[&str]) -> Option<ferret_testkit::anvil::Anvil> {
    if ferret_testkit::anvil::find_anvil().is_none() {
        let hint = "anvil not found: run scripts/test.sh (installs it) or set FERRET_ANVIL";
        assert!(!require_all(), "{hint}");
        eprintln!("skipping: {hint}");
        return None;
    }
    Some(
        ferret_testkit::anvil::Anvil::start(extra)
            .await
            .expect("start anvil"),
    )
}

/// The stdout of a run that must have succeeded (its stderr in the panic otherwise).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the `ferret` binary.
pub fn ferret(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args(args)
        .env("FERRET_LOG", "warn")
        .output()
        .expect("run ferret")
}

/// Runs `ferret index btc` on a blocks dir into a warehouse; returns its summary (stdout).
pub fn index_btc_cli(blocks: &Path, wh: &str) -> String {
    let out = ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        blocks.to_str().expect("utf8"),
        "--warehouse",
        wh,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The newest Parquet file under `dir` (run files are named by time): the latest run's.
pub fn newest_parquet(dir: &std::path::Path) -> std::path::PathBuf {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .max_by_key(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| panic!("no Parquet file under {}", dir.display()))
}

/// Asserts that the local warehouse at `dir` holds exactly the files `chain`'s manifest
/// lists, plus that manifest and the chain's lock and marker.
pub async fn assert_only_committed_files(dir: &Path, chain: ferret_schemas::Chain) {
    let wh = Warehouse::open(dir.to_str().expect("utf8")).expect("open");
    let m = wh
        .load_manifest(chain)
        .await
        .expect("load")
        .expect("committed");
    let mut on_disk: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| {
            p.strip_prefix(dir)
                .expect("under root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    // Manifests hold warehouse-relative paths.
    let mut listed: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
    listed.push(format!("{chain}/_state/manifest-{:020}.json", m.seq));
    // The writer lock (never deleted: the lock is on the file) and the first-commit marker.
    listed.push(format!("{chain}/_state/writer.lock"));
    listed.push(format!("{chain}/_state/committed"));
    listed.sort();
    assert_eq!(on_disk, listed);
}

/// Starts the index command six times and SIGKILLs it (`Child::kill` is SIGKILL on Unix)
/// at growing fractions of `full`, an uninterrupted run's time, plus `pad`; prints the
/// committed tip after each and asserts that at least three kills landed mid-run.
pub async fn sigkill_runs(
    index_cmd: impl Fn() -> Command,
    full: std::time::Duration,
    pad: std::time::Duration,
    wh: &str,
    chain: ferret_schemas::Chain,
) {
    let mut kills = 0;
    let mut tips = Vec::new();
    for i in 1..=6u32 {
        let mut child = index_cmd().spawn().expect("spawn");
        std::thread::sleep(full.mul_f64(0.12 * f64::from(i)).min(full) / 2 + pad);
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        child.wait().expect("reap");
        let wh = Warehouse::open(wh).expect("open");
        tips.push(
            wh.load_manifest(chain)
                .await
                .expect("manifest")
                .and_then(|m| m.tip)
                .map(|t| t.height),
        );
    }
    eprintln!("killed {kills} times; committed tips after each: {tips:?}");
    assert!(
        kills >= 3,
        "the kills must land mid-run (full run {full:?})"
    );
}

/// The blocks of a synthetic blocks dir: records, parents, the best chain.
pub struct Headers {
    pub all: Vec<Vec<u8>>,
    /// hash → (parent, record index)
    pub parent: std::collections::HashMap<bitcoin::BlockHash, (bitcoin::BlockHash, usize)>,
    pub best: Vec<bitcoin::BlockHash>,
}

impl Headers {
    pub fn read(dir: &std::path::Path) -> Self {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("blk"))
            })
            .collect();
        files.sort();
        let all: Vec<Vec<u8>> = files
            .iter()
            .flat_map(|p| records(p))
            // The file's preallocated zero tail is not a record.
            .filter(|r| r[..4] != [0; 4])
            .collect();
        let mut parent = std::collections::HashMap::new();
        for (i, r) in all.iter().enumerate() {
            let b =
                <bitcoin::Block as bitcoin::consensus::Decodable>::consensus_decode(&mut &r[8..])
                    .expect("block");
            parent.insert(b.block_hash(), (b.header.prev_blockhash, i));
        }
        let depth = |mut h: bitcoin::BlockHash| {
            let mut d = 0;
            while let Some(&(p, _)) = parent.get(&h) {
                h = p;
                d += 1;
            }
            d
        };
        let tip = *parent.keys().max_by_key(|h| depth(**h)).expect("blocks");
        let mut best: Vec<bitcoin::BlockHash> = vec![tip];
        while let Some(&(p, _)) = parent.get(best.last().expect("some")) {
            if parent.contains_key(&p) {
                best.push(p);
            } else {
                break;
            }
        }
        best.reverse();
        Self { all, parent, best }
    }

    /// A stale s1 → s2 pair forking off the best chain.
    pub fn two_block_branch(&self) -> Option<(bitcoin::BlockHash, bitcoin::BlockHash)> {
        let on_best: std::collections::HashSet<bitcoin::BlockHash> =
            self.best.iter().copied().collect();
        let mut pairs: Vec<(bitcoin::BlockHash, bitcoin::BlockHash)> = self
            .parent
            .iter()
            .filter(|(h, _)| !on_best.contains(*h))
            .filter_map(|(s2, &(s1, _))| {
                (!on_best.contains(&s1) && self.parent.contains_key(&s1)).then_some((s1, *s2))
            })
            .collect();
        pairs.sort();
        pairs.into_iter().next()
    }
}

/// A synthetic chain with a two-block stale branch s1 → s2 off the best chain, and the
/// records as a node had them when the branch was its best chain.
pub struct Fork {
    /// Every record of the final chain, in the generator's order.
    pub all: Vec<Vec<u8>>,
    /// The best chain up to the fork's height, then s1 and s2 (more work than the single
    /// best block at that height).
    pub early: Vec<Vec<u8>>,
    pub s2: bitcoin::BlockHash,
    /// The final best chain's tip.
    pub tip: bitcoin::BlockHash,
}

impl Fork {
    /// The first seed whose chain has a two-block stale branch (one fork in four is).
    pub fn find(tmp: &Path) -> Self {
        use ferret_testkit::synth::btc::{SynthConfig, generate};
        for seed in 21..60 {
            let dir = tmp.join(format!("seed{seed}"));
            let cfg = SynthConfig {
                blocks: 160,
                seed,
                txs_per_block: 25,
                ..Default::default()
            };
            generate(&cfg, &dir).expect("generate");
            let chain = Headers::read(&dir.join("blocks"));
            let Some((s1, s2)) = chain.two_block_branch() else {
                continue;
            };
            let Headers { all, parent, best } = chain;
            let fork_parent = parent[&s1].0;
            let h = best
                .iter()
                .position(|b| *b == fork_parent)
                .expect("forks off the best chain")
                + 1;
            let mut early: Vec<Vec<u8>> = best[..=h]
                .iter()
                .map(|b| all[parent[b].1].clone())
                .collect();
            early.push(all[parent[&s1].1].clone());
            early.push(all[parent[&s2].1].clone());
            let tip = *best.last().expect("blocks");
            return Self {
                all,
                early,
                s2,
                tip,
            };
        }
        panic!("no seed with a two-block branch")
    }
}

/// Asserts that `wh` holds exactly what a fresh index of `blocks` holds: every table's
/// rows, and the manifest's tip, totals and next ids.
pub async fn assert_equals_fresh_index(wh: &Warehouse, blocks: &Path) {
    let fresh = Warehouse::open(&format!(
        "memory://fresh-{}",
        ferret_schemas::results::new_run_id()
    ))
    .expect("open");
    ferret_indexer::btc::index_btc(&fresh, &ferret_indexer::btc::IndexOptions::new(blocks))
        .await
        .expect("fresh index");
    assert_eq!(dump(wh).await, dump(&fresh).await);
    let manifest = |w: Warehouse| async move {
        let m = w
            .load_manifest(ferret_schemas::Chain::Btc)
            .await
            .expect("manifest")
            .expect("committed");
        (
            m.tip,
            m.totals,
            m.next_tx_index,
            m.next_output_id,
            m.next_address_id,
        )
    };
    assert_eq!(manifest(wh.clone()).await, manifest(fresh).await);
}

/// `FERRET_PYTHON` (python3 by default) when it imports `modules` (comma-separated) and
/// each of `tools` (a command and its arguments) runs; otherwise None, a skip, or a
/// failure under `FERRET_REQUIRE_ALL`.
pub fn python_with(modules: &str, tools: &[&[&str]]) -> Option<String> {
    let py = std::env::var("FERRET_PYTHON").unwrap_or_else(|_| "python3".into());
    let runs = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    let ok = runs(Command::new(&py).args(["-c", &format!("import {modules}")]))
        && tools.iter().all(|t| runs(Command::new(t[0]).args(&t[1..])));
    if ok {
        return Some(py);
    }
    let missing: Vec<&str> = tools.iter().map(|t| t[0]).collect();
    let hint = format!(
        "{py} lacks one of {modules}, or one of {missing:?} is missing: run scripts/test.sh, which installs them"
    );
    assert!(!require_all(), "{hint}");
    eprintln!("skipping: {hint}");
    None
}
