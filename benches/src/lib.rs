//! Benchmarks of Ferret and side-by-side runs against peers.
//!
//! - `benches/ingest.rs` (criterion): `index_btc` into `memory://` and the bare decode of
//!   the same blk data, on a small generated chain.
//! - `src/bin/gen_chain.rs`: generates (or reuses) the benchmark chain.
//! - `src/bin/ingest_compare.rs`: the side-by-side ingest run — bare `bitcoin` decode (the
//!   ceiling), `blocks_iterator` with prevouts, and Ferret writing enriched Parquet — each in
//!   its own child process so that peak RSS is per contender.
//! - `benches/kernels.rs` (criterion): the graph kernels' CPU paths on a small spend graph.
//! - `src/bin/kernels_compare.rs`: the graph kernels (connected components, poison and
//!   haircut propagation) on a generated spend graph, side by side with
//!   `scripts/kernels_scipy.py` (scipy.sparse.csgraph) on the same edge list.
//!
//! This library holds what those share: reading blk records and decoding them, and the
//! generated spend graph ([`graph`]).

pub mod graph;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bitcoin::Block;
use bitcoin::consensus::Decodable;
use bitcoin::hashes::Hash as _;

/// The `blkNNNNN.dat` files of a blocks directory, in name order.
pub fn blk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.len() == 12 && name.starts_with("blk") && name.ends_with(".dat") {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no blk*.dat files in {}", dir.display());
    }
    Ok(files)
}

/// The XOR key of a blocks directory (`xor.dat`), if the files are obfuscated.
pub fn xor_key(dir: &Path) -> Result<Option<[u8; 8]>> {
    match std::fs::read(dir.join("xor.dat")) {
        Ok(b) => {
            let key: [u8; 8] = b.as_slice().try_into().context("xor.dat is not 8 bytes")?;
            Ok((key != [0; 8]).then_some(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Total size of the blk files (padding included).
pub fn blk_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for f in blk_files(dir)? {
        total += std::fs::metadata(&f)?.len();
    }
    Ok(total)
}

/// What a pass over the records saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeStats {
    /// Block records (stale blocks included).
    pub blocks: u64,
    /// Transactions in them.
    pub transactions: u64,
    /// Record bytes: 8 bytes of magic and length plus the block, per record.
    pub record_bytes: u64,
}

/// Calls `f` with the bytes of every block record of `dir`, in storage order, reading each
/// file whole (single thread). Stops at the zero padding Core leaves at the end of a file.
pub fn for_each_record(dir: &Path, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let key = xor_key(dir)?;
    for path in blk_files(dir)? {
        let mut buf =
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if let Some(key) = key {
            for (i, b) in buf.iter_mut().enumerate() {
                *b ^= key[i % 8];
            }
        }
        let mut off = 0usize;
        while off + 8 <= buf.len() {
            if buf[off..off + 4] == [0; 4] {
                break;
            }
            let len =
                u32::from_le_bytes(buf[off + 4..off + 8].try_into().expect("4 bytes")) as usize;
            let end = off + 8 + len;
            if end > buf.len() {
                bail!("{}: truncated record at offset {off}", path.display());
            }
            f(&buf[off + 8..end])?;
            off = end;
        }
    }
    Ok(())
}

/// Decodes one block record with `bitcoin::consensus`.
pub fn decode_block(bytes: &[u8]) -> Result<Block> {
    let mut cursor = bytes;
    let block = Block::consensus_decode(&mut cursor).context("decoding a block")?;
    Ok(block)
}

/// The decode ceiling: every record of `dir` deserialized into a `bitcoin::Block`, single
/// thread. With `txids`, also hashes every transaction (as any indexer must).
pub fn decode_all(dir: &Path, txids: bool) -> Result<DecodeStats> {
    let mut s = DecodeStats::default();
    let mut sink = 0u8;
    for_each_record(dir, |bytes| {
        let block = decode_block(bytes)?;
        s.blocks += 1;
        s.transactions += block.txdata.len() as u64;
        s.record_bytes += bytes.len() as u64 + 8;
        if txids {
            for tx in &block.txdata {
                sink ^= tx.compute_txid().to_byte_array()[0];
            }
        }
        std::hint::black_box(&block);
        Ok(())
    })?;
    std::hint::black_box(sink);
    Ok(s)
}

/// Peak resident set size of this process (VmHWM), in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs a benchmark child (this executable re-run with its own arguments), echoing its
/// stdout indented, and returns the `key=value` pairs of the line it prints as
/// `RESULT k=v …` (underscores in values stand for spaces; in keys too when
/// `spaces_in_keys`).
pub fn child_result(
    mut cmd: std::process::Command,
    spaces_in_keys: bool,
) -> std::result::Result<std::collections::BTreeMap<String, String>, String> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        match line.strip_prefix("RESULT ") {
            Some(rest) => {
                result = Some(
                    rest.split(' ')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| {
                            let k = if spaces_in_keys {
                                k.replace('_', " ")
                            } else {
                                k.to_string()
                            };
                            (k, v.replace('_', " "))
                        })
                        .collect(),
                );
            }
            None => eprintln!("  | {line}"),
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("child failed: {status}"));
    }
    result.ok_or_else(|| "child printed no RESULT".to_string())
}

/// The value after `name` in `args` parsed, or `default` when `name` is absent.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) => Ok(v),
            None => anyhow::bail!("{name} needs a value"),
        },
        None => Ok(default),
    }
}
