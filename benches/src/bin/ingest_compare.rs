//! Side-by-side ingest run on one blocks directory.
//!
//! ```text
//! cargo run --release -p ferret-benches --bin ingest_compare -- --blocks-dir DIR \
//!     [--utxo-mem-mb 1024[,128,...]] [--contenders decode,decode-txid,blocks_iterator,ferret,ferret-stages] \
//!     [--work-dir DIR] [--keep-warehouse]
//! ```
//!
//! Each contender runs in a fresh child process of this binary (`--contender NAME`), so the
//! peak RSS reported (the child's VmHWM) is its own. The blk files are read once before the
//! first contender, so every contender reads from a warm page cache.
//!
//! Contenders:
//! - `decode`: every record read and `bitcoin::consensus` decoded into a `Block`, one thread.
//!   The ceiling: nothing that produces blocks from blk files can be faster on one core.
//! - `decode-txid`: the same plus the txid of every transaction (what any indexer hashes).
//! - `blocks_iterator`: the `blocks_iterator` crate (3.0, in-memory UTXO) iterating the best
//!   chain with prevouts; the consumer sums each block's fee from the prevouts.
//! - `ferret`: `ferret_indexer::btc::index_btc` writing enriched Parquet (zstd, page index,
//!   bloom filters) to a fresh local warehouse, once per `--utxo-mem-mb` value.
//! - `ferret-nograph`: the same without the spend graph (`btc.spends`): what the graph
//!   adds to index time is the difference.
//! - `ferret-stages`: Ferret's stages run one after another on one thread, each timed
//!   (scan, read+decode, hashing+verify, transform, Arrow batches, Parquet encoding to a null
//!   sink), with side measurements of the size and script-classification work inside the
//!   transform. For profiling; not part of the comparison.

// The allocator of the `ferret` binary, for every contender alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bitcoin::Network;
use ferret_benches::{blk_bytes, blk_files, decode_all, peak_rss_bytes};

const DEFAULT_CONTENDERS: &str = "decode,decode-txid,blocks_iterator,ferret";

struct Args {
    blocks_dir: PathBuf,
    utxo_mem_mb: Vec<usize>,
    contenders: Vec<String>,
    work_dir: Option<PathBuf>,
    keep_warehouse: bool,
    /// Child mode.
    contender: Option<String>,
    warehouse: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        blocks_dir: PathBuf::new(),
        utxo_mem_mb: vec![1024],
        contenders: DEFAULT_CONTENDERS.split(',').map(String::from).collect(),
        work_dir: None,
        keep_warehouse: false,
        contender: None,
        warehouse: None,
    };
    let mut blocks_dir = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--blocks-dir" => blocks_dir = Some(PathBuf::from(val()?)),
            "--utxo-mem-mb" => {
                a.utxo_mem_mb = val()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().context("--utxo-mem-mb takes MiB"))
                    .collect::<Result<_>>()?;
                if a.utxo_mem_mb.contains(&0) {
                    bail!("--utxo-mem-mb must be at least 1");
                }
            }
            "--contenders" => {
                a.contenders = val()?.split(',').map(|s| s.trim().to_string()).collect()
            }
            "--work-dir" => a.work_dir = Some(PathBuf::from(val()?)),
            "--keep-warehouse" => a.keep_warehouse = true,
            "--contender" => a.contender = Some(val()?),
            "--warehouse" => a.warehouse = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!(
                    "ingest_compare --blocks-dir DIR [--utxo-mem-mb N[,M..]] [--contenders {DEFAULT_CONTENDERS},ferret-stages] [--work-dir DIR] [--keep-warehouse]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    a.blocks_dir = blocks_dir.context("--blocks-dir is required")?;
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    match &args.contender {
        Some(name) => child(&args, name),
        None => parent(&args),
    }
}

// ---------------------------------------------------------------------------------------
// Child side: run one contender and print one `RESULT key=value ...` line.

#[derive(Default)]
struct Outcome {
    secs: f64,
    blocks: u64,
    txs: u64,
    bytes: u64,
    extra: Vec<(String, String)>,
}

fn child(args: &Args, name: &str) -> Result<()> {
    let dir = &args.blocks_dir;
    let out = match name {
        "decode" | "decode-txid" => {
            let t = Instant::now();
            let s = decode_all(dir, name == "decode-txid")?;
            Outcome {
                secs: t.elapsed().as_secs_f64(),
                blocks: s.blocks,
                txs: s.transactions,
                bytes: s.record_bytes,
                extra: vec![("note".into(), "1 thread, all records incl. stale".into())],
            }
        }
        "blocks_iterator" => run_blocks_iterator(dir)?,
        "ferret" => run_ferret(args, false)?,
        "ferret-nograph" => run_ferret(args, true)?,
        "ferret-stages" => run_ferret_stages(args)?,
        "floor" => run_floor(args)?,
        other => bail!("unknown contender {other}"),
    };
    let mut line = format!(
        "RESULT secs={:.6} blocks={} txs={} bytes={} rss={}",
        out.secs,
        out.blocks,
        out.txs,
        out.bytes,
        peak_rss_bytes()
    );
    for (k, v) in &out.extra {
        // Keys and values travel without spaces ('_' stands for one).
        line.push_str(&format!(" {}={}", k.replace(' ', "_"), v.replace(' ', "_")));
    }
    println!("{line}");
    Ok(())
}

fn run_blocks_iterator(dir: &Path) -> Result<Outcome> {
    let t = Instant::now();
    let cfg = blocks_iterator::Config::new(dir, Network::Regtest);
    let mut o = Outcome::default();
    let mut fees = 0u64;
    let mut inputs = 0u64;
    for b in blocks_iterator::try_iter(cfg).map_err(|e| anyhow::anyhow!("blocks_iterator: {e}"))? {
        o.blocks += 1;
        o.bytes += u64::from(b.size()) + 8;
        o.txs += b.block().txdata.len() as u64;
        inputs += b.block_total_inputs() as u64;
        fees += b
            .fee()
            .context("blocks_iterator gave a block without its prevouts")?;
    }
    o.secs = t.elapsed().as_secs_f64();
    o.extra = vec![
        ("inputs".into(), inputs.to_string()),
        ("fees-sat".into(), fees.to_string()),
        (
            "note".into(),
            "best chain minus max_reorg=6 tip blocks; in-memory UTXO".into(),
        ),
    ];
    Ok(o)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // What `#[tokio::main]` in the `ferret` binary builds.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `ferret` (`without_graph`: `ferret-nograph`, the same without `btc.spends`, to measure
/// what the spend graph adds).
fn run_ferret(args: &Args, without_graph: bool) -> Result<Outcome> {
    let wh_dir = args
        .warehouse
        .as_ref()
        .context("--warehouse is required for ferret")?;
    let mb = args.utxo_mem_mb[0];
    let rt = runtime()?;
    let wh = ferret_schemas::Warehouse::open(&wh_dir.to_string_lossy())?;
    let mut opts = ferret_indexer::btc::IndexOptions::new(&args.blocks_dir);
    opts.utxo_mem_bytes = mb << 20;
    opts.without_spend_graph = without_graph;
    let t = Instant::now();
    let s = rt.block_on(ferret_indexer::btc::index_btc(&wh, &opts))?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Outcome {
        secs,
        blocks: s.counts.blocks,
        txs: s.counts.transactions,
        bytes: s.bytes_read,
        extra: vec![
            ("utxo-mb".into(), mb.to_string()),
            ("inputs".into(), s.counts.inputs.to_string()),
            ("outputs".into(), s.counts.outputs.to_string()),
            ("unresolved".into(), s.counts.unresolved_inputs.to_string()),
            ("written-bytes".into(), s.bytes_written.to_string()),
            ("commits".into(), s.commits.to_string()),
            ("spills".into(), s.utxo.spills.to_string()),
            ("spilled-entries".into(), s.utxo.spilled_entries.to_string()),
            ("disk-hits".into(), s.utxo.disk_hits.to_string()),
            ("run-merges".into(), s.utxo.merges.to_string()),
            ("utxo-peak-mem".into(), s.utxo.peak_mem_bytes.to_string()),
        ],
    })
}

/// Ferret's stages, sequential on one thread, each timed.
fn run_ferret_stages(args: &Args) -> Result<Outcome> {
    use ferret_indexer::addrs::AddressStore;
    use ferret_indexer::source::bitcoin::{
        BlkDir, classify, hash_and_verify_raw, select_best_chain,
    };
    use ferret_indexer::transform::{BtcRows, ChainState, NextIds, PreparedBlock};
    use ferret_indexer::utxo::UtxoStore;
    use ferret_schemas::{Chain, tables_of};
    use parquet::arrow::ArrowWriter;

    let mb = args.utxo_mem_mb[0];
    let mut st: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let mut lap = |k: &'static str, t: Instant| *st.entry(k).or_default() += t.elapsed();
    let total = Instant::now();

    let t = Instant::now();
    let dir = BlkDir::open(&args.blocks_dir, None)?;
    let chain = select_best_chain(&dir, dir.scan()?)?;
    lap("1 scan+best-chain", t);

    let network = dir.network();
    let mut rows = BtcRows::new();
    let mut utxo = UtxoStore::new(mb << 20);
    let mut addresses = AddressStore::new(mb << 20);
    let mut writers = tables_of(Chain::Btc)
        .map(|t| {
            ArrowWriter::try_new(
                std::io::sink(),
                t.schema(),
                Some(ferret_indexer::sink::writer_properties(t)),
            )
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut o = Outcome::default();
    let mut next = NextIds::default();
    let mut sink = 0u64;
    let mut buf = Vec::new();
    let flush = |rows: &mut BtcRows,
                 writers: &mut Vec<ArrowWriter<std::io::Sink>>,
                 lap: &mut dyn FnMut(&'static str, Instant)|
     -> Result<()> {
        let t = Instant::now();
        let batches = rows.finish()?;
        lap("5 arrow batches (finish)", t);
        let t = Instant::now();
        for (w, b) in writers.iter_mut().zip(batches.iter()) {
            w.write(b)?;
        }
        lap("6 parquet encode (null sink)", t);
        Ok(())
    };
    for b in &chain.blocks {
        let t = Instant::now();
        let block = dir.read_block_with(&b.loc, &mut buf)?;
        lap("2 read+decode", t);
        let t = Instant::now();
        let hashes = hash_and_verify_raw(&block, &buf)
            .map_err(|f| anyhow::anyhow!("block {} fails verification: {f:?}", b.height))?;
        lap(
            "3 hash txids+wtxids (raw bytes), verify merkle+commitment",
            t,
        );

        // Side measurements of work PreparedBlock::new does (on the reader threads).
        let t = Instant::now();
        sink ^= block.total_size() as u64 ^ block.weight().to_wu();
        for tx in &block.txdata {
            sink ^= tx.total_size() as u64 ^ tx.vsize() as u64 ^ tx.weight().to_wu();
        }
        lap("4b (inside 4a) block+tx size/vsize/weight", t);
        let t = Instant::now();
        for tx in &block.txdata {
            for out in &tx.output {
                let (kind, addr) = classify(&out.script_pubkey, network);
                sink ^= kind as u64 ^ addr.map_or(0, |a| a.len() as u64);
            }
        }
        lap("4c (inside 4a) classify+address encode", t);

        let txs = block.txdata.len() as u64;
        let t = Instant::now();
        let prepared =
            PreparedBlock::new(block, &hashes, b.height, u64::from(b.loc.len) + 8, network);
        lap("4a prepare (reader threads)", t);
        let t = Instant::now();
        let mut state = ChainState {
            utxo: &mut utxo,
            addresses: &mut addresses,
            next: &mut next,
        };
        rows.push_block(prepared, &mut state)?;
        lap("4 transform (push-block, UTXO, address ids; in order)", t);
        o.blocks += 1;
        o.txs += txs;
        o.bytes += u64::from(b.loc.len) + 8;
        if rows.buffered_rows() >= ferret_indexer::sink::ROW_GROUP_ROWS {
            flush(&mut rows, &mut writers, &mut lap)?;
        }
    }
    flush(&mut rows, &mut writers, &mut lap)?;
    let t = Instant::now();
    for w in writers {
        w.close()?;
    }
    lap("6 parquet encode (null sink)", t);
    std::hint::black_box(sink);
    o.secs = total.elapsed().as_secs_f64();
    o.extra = st
        .iter()
        .map(|(k, v)| (format!("stage:{k}"), format!("{:.3}", v.as_secs_f64())))
        .collect();
    o.extra
        .push(("spills".into(), utxo.stats.spills.to_string()));
    Ok(o)
}

/// The columns the issue's column contract names, per table.
const CONTRACT: &[(&str, &[&str])] = &[
    (
        "blocks",
        &["height", "hash", "prev_hash", "time", "tx_count", "size"],
    ),
    (
        "transactions",
        &[
            "height",
            "tx_index",
            "txid",
            "is_coinbase",
            "input_count",
            "output_count",
            "input_value",
            "output_value",
            "fee",
        ],
    ),
    (
        "inputs",
        &[
            "height",
            "tx_index",
            "txid",
            "vin",
            "spent_txid",
            "spent_vout",
            "spent_tx_index",
            "value",
            "address",
        ],
    ),
    (
        "outputs",
        &[
            "height",
            "tx_index",
            "txid",
            "vout",
            "value",
            "script_type",
            "address",
        ],
    ),
];

/// Bytes written, thrown away.
#[derive(Default)]
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A lower bound on the CPU time of any indexer that meets the issue's contract, measured
/// on this chain: (A) read + decode + txids + merkle-root check of the best chain, and
/// (C) Parquet encoding of only the contract's columns with the cheapest settings the
/// contract allows (zstd level 1, plain encoding, no dictionary, page statistics, bloom
/// filters on the hash and address columns), each on one thread. Input enrichment (the
/// UTXO look-ups), hex/address formatting and writing to storage are left out, so no real
/// indexer can do less work; divided by the cores, it bounds the wall time from below.
fn run_floor(args: &Args) -> Result<Outcome> {
    use ferret_indexer::addrs::AddressStore;
    use ferret_indexer::source::bitcoin::{
        BlkDir, TxSize, hash_and_verify_raw, raw_txid, select_best_chain,
    };
    use ferret_indexer::transform::{BtcRows, ChainState, NextIds, PreparedBlock};
    use ferret_indexer::utxo::UtxoStore;
    use ferret_schemas::{Chain, tables_of};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    let dir = BlkDir::open(&args.blocks_dir, None)?;
    let chain = select_best_chain(&dir, dir.scan()?)?;
    let mut o = Outcome::default();

    // (A) timed: what every contender must do to the blocks.
    let t = Instant::now();
    let mut buf = Vec::new();
    for b in &chain.blocks {
        let block = dir.read_block_with(&b.loc, &mut buf)?;
        // Txids hashed where the transactions lie in the block's bytes (no re-encoding).
        let mut at = 80 + bitcoin::VarInt::from(block.txdata.len()).size();
        let txids = block
            .txdata
            .iter()
            .map(|tx| {
                let size = TxSize {
                    base: tx.base_size(),
                    total: tx.total_size(),
                };
                at += size.total;
                raw_txid(&buf[at - size.total..at], size)
            })
            .collect::<Option<Vec<_>>>()
            .context("transaction sizes do not match the block's bytes")?;
        let root = bitcoin::merkle_tree::calculate_root(txids.iter().map(|t| t.to_raw_hash()));
        if root != Some(block.header.merkle_root.to_raw_hash()) {
            bail!("merkle root mismatch at height {}", b.height);
        }
        o.blocks += 1;
        o.txs += block.txdata.len() as u64;
        o.bytes += u64::from(b.loc.len) + 8;
    }
    let decode = t.elapsed().as_secs_f64();

    // (B) untimed: the rows, built by Ferret's transform and cut to the contract.
    let mut rows = BtcRows::new();
    let mut utxo = UtxoStore::new(args.utxo_mem_mb[0] << 20);
    let mut addresses = AddressStore::new(args.utxo_mem_mb[0] << 20);
    let tables: Vec<_> = tables_of(Chain::Btc).collect();
    let mut batches: Vec<Vec<arrow::array::RecordBatch>> = vec![Vec::new(); tables.len()];
    let mut next = NextIds::default();
    let mut keep = |rows: &mut BtcRows| -> Result<()> {
        for (i, b) in rows.finish()?.into_iter().enumerate() {
            // Tables the peers have no counterpart of (btc.addresses) are not compared.
            let Some((_, cols)) = CONTRACT.iter().find(|(n, _)| *n == tables[i].name) else {
                continue;
            };
            let idx = cols
                .iter()
                .map(|c| b.schema().index_of(c))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            batches[i].push(b.project(&idx)?);
        }
        Ok(())
    };
    for b in &chain.blocks {
        let block = dir.read_block_with(&b.loc, &mut buf)?;
        let hashes = hash_and_verify_raw(&block, &buf)
            .map_err(|f| anyhow::anyhow!("block {} fails verification: {f:?}", b.height))?;
        let prepared = PreparedBlock::new(block, &hashes, b.height, 0, dir.network());
        let mut state = ChainState {
            utxo: &mut utxo,
            addresses: &mut addresses,
            next: &mut next,
        };
        rows.push_block(prepared, &mut state)?;
        if rows.buffered_rows() >= ferret_indexer::sink::ROW_GROUP_ROWS {
            keep(&mut rows)?;
        }
    }
    keep(&mut rows)?;
    drop(utxo);

    // (C) timed: Parquet encoding of the contract's columns only.
    let mut encode = 0.0;
    let mut written = 0u64;
    let mut per_table = Vec::new();
    for (t, bs) in tables.iter().zip(&batches) {
        let Some(first) = bs.first() else { continue };
        let schema = first.schema();
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            // Dictionaries were measured slower to encode here (9.1 s against 7.3 s).
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(ferret_indexer::sink::ROW_GROUP_ROWS));
        for c in t.bloom_columns {
            if schema.index_of(c).is_ok() {
                props = props
                    .set_column_bloom_filter_enabled((*c).into(), true)
                    .set_column_bloom_filter_fpp((*c).into(), 0.01)
                    .set_column_bloom_filter_max_ndv(
                        (*c).into(),
                        ferret_indexer::sink::ROW_GROUP_ROWS as u64,
                    );
            }
        }
        let start = Instant::now();
        let mut w = ArrowWriter::try_new(CountingSink::default(), schema, Some(props.build()))?;
        for b in bs {
            w.write(b)?;
        }
        let sink = w.into_inner()?;
        let secs = start.elapsed().as_secs_f64();
        encode += secs;
        written += sink.0;
        per_table.push((format!("encode:{}", t.name), format!("{secs:.3}")));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    o.secs = decode + encode;
    o.extra = vec![
        ("decode+txid+merkle-s".into(), format!("{decode:.3}")),
        ("encode-contract-s".into(), format!("{encode:.3}")),
        ("floor-cpu-s".into(), format!("{:.3}", decode + encode)),
        ("cores".into(), cores.to_string()),
        (
            "floor-wall-s".into(),
            format!("{:.3}", (decode + encode) / cores as f64),
        ),
        ("contract-parquet-bytes".into(), written.to_string()),
    ];
    o.extra.extend(per_table);
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Parent side.

struct Row {
    label: String,
    result: std::result::Result<BTreeMap<String, String>, String>,
}

fn run_child(args: &Args, contender: &str, mb: Option<usize>, warehouse: Option<&Path>) -> Row {
    let label = match mb {
        Some(mb) if contender.starts_with("ferret") => format!("{contender} (utxo {mb} MiB)"),
        _ => contender.to_string(),
    };
    eprintln!("--- running {label}");
    let run = || -> std::result::Result<BTreeMap<String, String>, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("--contender")
            .arg(contender)
            .arg("--blocks-dir")
            .arg(&args.blocks_dir);
        if let Some(mb) = mb {
            cmd.arg("--utxo-mem-mb").arg(mb.to_string());
        }
        if let Some(w) = warehouse {
            cmd.arg("--warehouse").arg(w);
        }
        ferret_benches::child_result(cmd, true)
    };
    let result = run();
    if let Err(e) = &result {
        eprintln!("  {label}: {e}");
    }
    Row { label, result }
}

fn num(m: &BTreeMap<String, String>, k: &str) -> f64 {
    m.get(k)
        .and_then(|v| v.replace(' ', "").parse().ok())
        .unwrap_or(f64::NAN)
}

fn parent(args: &Args) -> Result<()> {
    let dir = &args.blocks_dir;
    let files = blk_files(dir)?;
    let total = blk_bytes(dir)?;
    // Warm the page cache so every contender reads from memory.
    let t = Instant::now();
    for f in &files {
        std::hint::black_box(std::fs::read(f)?.len());
    }
    let warm = t.elapsed().as_secs_f64();
    println!(
        "blocks dir {}: {} blk files, {:.1} MB ({:.2} GiB); page cache warmed in {warm:.1} s",
        dir.display(),
        files.len(),
        total as f64 / 1e6,
        total as f64 / (1u64 << 30) as f64
    );
    let work = match &args.work_dir {
        Some(w) => w.clone(),
        None => dir.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    std::fs::create_dir_all(&work)?;

    let mut rows = Vec::new();
    for c in &args.contenders {
        match c.as_str() {
            "ferret" | "ferret-nograph" => {
                for &mb in &args.utxo_mem_mb {
                    let wh = tempfile::Builder::new()
                        .prefix("bench-warehouse-")
                        .tempdir_in(&work)?;
                    rows.push(run_child(args, c, Some(mb), Some(wh.path())));
                    if args.keep_warehouse {
                        let kept = wh.keep();
                        eprintln!("  warehouse kept at {}", kept.display());
                    }
                }
            }
            "ferret-stages" => rows.push(run_child(args, c, Some(args.utxo_mem_mb[0]), None)),
            _ => rows.push(run_child(args, c, None, None)),
        }
    }

    println!();
    println!(
        "| {:<28} | {:>8} | {:>8} | {:>9} | {:>10} | {:>12} |",
        "contender", "seconds", "MB/s", "blocks/s", "tx/s", "peak RSS MB"
    );
    println!(
        "|{:-<30}|{:->10}|{:->10}|{:->11}|{:->12}|{:->14}|",
        "", "", "", "", "", ""
    );
    for r in &rows {
        match &r.result {
            Ok(m) => {
                let secs = num(m, "secs");
                println!(
                    "| {:<28} | {:>8.2} | {:>8.1} | {:>9.0} | {:>10.0} | {:>12.0} |",
                    r.label,
                    secs,
                    num(m, "bytes") / 1e6 / secs,
                    num(m, "blocks") / secs,
                    num(m, "txs") / secs,
                    num(m, "rss") / 1e6
                );
            }
            Err(e) => println!("| {:<28} | failed: {e}", r.label),
        }
    }
    println!();
    println!(
        "MB = 10^6 bytes of blk records (8-byte record header + block) each contender consumed."
    );
    for r in &rows {
        if let Ok(m) = &r.result {
            let details: Vec<String> = m
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "secs" | "rss"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("{}: {}", r.label, details.join(", "));
        }
    }

    let get = |label_prefix: &str| {
        rows.iter()
            .filter(|r| {
                r.label == label_prefix || r.label.starts_with(&format!("{label_prefix} ("))
            })
            .filter_map(|r| r.result.as_ref().ok().map(|m| (r.label.clone(), m)))
            .collect::<Vec<_>>()
    };
    let mbps = |m: &BTreeMap<String, String>| num(m, "bytes") / num(m, "secs");
    let bps = |m: &BTreeMap<String, String>| num(m, "blocks") / num(m, "secs");
    println!();
    let bi = get("blocks_iterator");
    let dec = get("decode");
    if let (Some((_, f)), Some((_, b))) = (get("floor").first(), bi.first()) {
        let target = num(b, "secs") / 2.0;
        println!(
            "floor: {:.2} CPU-s ({:.2} decode+txid+merkle, {:.2} contract Parquet) / {} cores = {:.2} s wall at best; the 2x target is {:.2} s ({})",
            num(f, "floor-cpu-s"),
            num(f, "decode+txid+merkle-s"),
            num(f, "encode-contract-s"),
            num(f, "cores"),
            num(f, "floor-wall-s"),
            target,
            if num(f, "floor-wall-s") > target {
                "out of reach on this machine"
            } else {
                "reachable"
            }
        );
    }
    for (label, m) in get("ferret") {
        if let Some((_, b)) = bi.first() {
            println!(
                "{label} / blocks_iterator: {:.2}x MB/s, {:.2}x blocks/s (target >= 2x)",
                mbps(m) / mbps(b),
                bps(m) / bps(b)
            );
        }
        if let Some((_, d)) = dec.first() {
            println!("{label} / decode ceiling: {:.2}x MB/s", mbps(m) / mbps(d));
        }
        let budget = num(m, "utxo-mb") * (1u64 << 20) as f64;
        let rss = num(m, "rss");
        println!(
            "{label}: peak RSS {:.0} MiB = utxo budget {:.0} MiB {} {:.0} MiB overhead (store's own peak estimate {:.0} MiB, spills {})",
            rss / (1u64 << 20) as f64,
            budget / (1u64 << 20) as f64,
            if rss >= budget { "+" } else { "-" },
            (rss - budget).abs() / (1u64 << 20) as f64,
            num(m, "utxo-peak-mem") / (1u64 << 20) as f64,
            m.get("spills").map_or("?", String::as_str)
        );
    }
    // What the spend graph (btc.spends) adds to index time: ferret against ferret-nograph
    // at the same utxo budget, the best round of each.
    let with = get("ferret");
    let without = get("ferret-nograph");
    let best = |v: &[(String, &BTreeMap<String, String>)], mb: f64| {
        v.iter()
            .filter(|(_, m)| num(m, "utxo-mb") == mb)
            .map(|(_, m)| num(m, "secs"))
            .fold(f64::INFINITY, f64::min)
    };
    for &mb in &args.utxo_mem_mb {
        let (a, b) = (best(&with, mb as f64), best(&without, mb as f64));
        if a.is_finite() && b.is_finite() {
            println!(
                "spend graph at utxo {mb} MiB: {a:.2} s with, {b:.2} s without: +{:.1} % (aim <= 15 %)",
                (a / b - 1.0) * 100.0
            );
        }
    }
    Ok(())
}
