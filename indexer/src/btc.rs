//! `ferret index btc`: a Bitcoin Core blocks directory into the warehouse.
//!
//! Stages: scan the blk files' headers → pick the best chain → plan commit chunks (each
//! within one height partition) → a reader thread decodes and verifies blocks in height
//! order → the transform enriches inputs from the spent-output store and fills column
//! builders → Parquet files per table → the manifest PUT commits the chunk.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use bitcoin::Network;
use ferret_schemas::{Chain, Checkpoint, Manifest, Warehouse, layout};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::addrs::{AddressStats, AddressStore};
use crate::source::bitcoin::{
    BestChain, BlkDir, BlockFault, ChainBlock, ScanCache, ScriptKind, TxHashes,
    hash_and_verify_raw, select_best_chain,
};
pub use crate::stage::Stop;
use crate::stage::{self, Next, Removed, Runner, Stage};
use crate::transform::{BtcRows, ChainState, Counts, NextIds, PreparedBlock};
use crate::utxo::{NO_ID, Utxo, UtxoStats, UtxoStore};
use crate::{Error, Result};

/// Options of a Bitcoin index run.
#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// Bitcoin Core's blocks directory.
    pub blocks_dir: PathBuf,
    /// Stop after this height.
    pub to_height: Option<u64>,
    /// Memory budget of the spent-output store, in bytes.
    pub utxo_mem_bytes: usize,
    /// Memory budget of the address-id store, in bytes.
    pub address_mem_bytes: usize,
    /// The spend graph's blocks: 2^this transactions (a new warehouse; default
    /// [`ferret_schemas::btc::DEFAULT_GRAPH_BLOCK_BITS`]).
    pub graph_block_bits: Option<u32>,
    /// Network, when the magic cannot tell (custom signets).
    pub network: Option<Network>,
    /// Commit at least every this many blocks.
    pub commit_blocks: u64,
    /// Commit at least every this many bytes of blk data.
    pub commit_bytes: u64,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Threads reading, decoding, verifying and preparing blocks ahead of the transform.
    pub read_threads: usize,
    /// The deepest reorganisation unwound (blocks below the committed tip); deeper is an
    /// error.
    pub max_unwind: u64,
    /// Keep following the blocks dir as the node appends to it, until stopped.
    pub follow: bool,
    /// Follow mode: the wait between looks at the blocks dir.
    pub poll: Duration,
    /// Writes no `btc.spends` (benchmarks measuring what the graph costs). Only into a
    /// new warehouse: one indexed so can never gain a graph, and out-of-core runs on it
    /// are refused.
    #[doc(hidden)]
    pub without_spend_graph: bool,
}

impl IndexOptions {
    /// Defaults for a blocks directory.
    pub fn new(blocks_dir: impl Into<PathBuf>) -> Self {
        Self {
            blocks_dir: blocks_dir.into(),
            to_height: None,
            utxo_mem_bytes: 1 << 30,
            address_mem_bytes: 512 << 20,
            graph_block_bits: None,
            network: None,
            commit_blocks: 10_000,
            commit_bytes: 512 << 20,
            progress: false,
            read_threads: default_read_threads(),
            max_unwind: 1_000,
            follow: false,
            poll: Duration::from_secs(5),
            without_spend_graph: false,
        }
    }
}

/// One reader thread per core: they do most of the per-block work.
pub fn default_read_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct IndexSummary {
    pub network: String,
    /// First and last height indexed by this run (None when nothing was new).
    pub heights: Option<(u64, u64)>,
    pub counts: Counts,
    pub stale_blocks: usize,
    pub commits: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
    pub utxo: UtxoStats,
    pub addresses: AddressStats,
    /// Tip of the warehouse after the run.
    pub tip: Option<Checkpoint>,
    /// Committed blocks removed by unwinding a reorganisation.
    pub unwound: u64,
}

impl std::fmt::Display for IndexSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        if self.unwound > 0 {
            writeln!(
                f,
                "unwound {} committed blocks no longer on the best chain (a reorganisation)",
                self.unwound
            )?;
        }
        match self.heights {
            Some((a, b)) => writeln!(f, "indexed {} heights {a}..={b}", self.network)?,
            None => writeln!(f, "nothing new to index ({})", self.network)?,
        }
        writeln!(
            f,
            "blocks {}  transactions {}  inputs {}  outputs {}  unresolved inputs {}  new addresses {}",
            c.blocks, c.transactions, c.inputs, c.outputs, c.unresolved_inputs, c.addresses
        )?;
        writeln!(
            f,
            "read {:.1} MB  written {:.1} MB  commits {}  stale blocks skipped {}",
            self.bytes_read as f64 / 1e6,
            self.bytes_written as f64 / 1e6,
            self.commits,
            self.stale_blocks
        )?;
        write!(
            f,
            "elapsed {:.2} s  ({:.0} blocks/s, {:.1} MB/s)",
            secs,
            c.blocks as f64 / secs,
            self.bytes_read as f64 / 1e6 / secs
        )?;
        if self.utxo.spills > 0 {
            write!(
                f,
                "\nspent-output store: {} spills ({} entries to disk, {} run merges), {} inputs resolved from disk",
                self.utxo.spills, self.utxo.spilled_entries, self.utxo.merges, self.utxo.disk_hits
            )?;
        }
        if let Some(t) = &self.tip {
            write!(f, "\ntip {} at height {}", t.hash, t.height)?;
        }
        Ok(())
    }
}

/// Rows buffered in the column builders (all tables together) before they go to the
/// writers as batches.
const FLUSH_ROWS: usize = 64 * 1024;

/// Blocks read ahead of the transform, at most: blk bytes of the blocks taken by the
/// readers and not yet consumed (decoded and prepared, a block takes about 3× its bytes).
const READ_AHEAD_BYTES: u64 = 24 << 20;

/// Blocks queued per reader thread, at most (small blocks; big ones hit the byte bound).
const READ_AHEAD_BLOCKS: usize = 16;

/// The byte budget the reader threads take blocks under. Blocks are admitted in height
/// order (a reader waits for its block's turn), so the blocks holding the budget are
/// always ones the transform will take before the waiting one: no deadlock.
struct ReadAhead {
    state: std::sync::Mutex<ReadAheadState>,
    turn: std::sync::Condvar,
    limit: u64,
}

struct ReadAheadState {
    next: usize,
    in_flight: u64,
    closed: bool,
}

impl ReadAhead {
    fn new(limit: u64) -> Self {
        Self {
            state: std::sync::Mutex::new(ReadAheadState {
                next: 0,
                in_flight: 0,
                closed: false,
            }),
            turn: std::sync::Condvar::new(),
            limit,
        }
    }

    /// Waits until block `index` (of `bytes`) may be read; false once the run stopped.
    fn admit(&self, index: usize, bytes: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !s.closed
            && (s.next != index || (s.in_flight > 0 && s.in_flight + bytes > self.limit))
        {
            s = self.turn.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.closed {
            return false;
        }
        s.next += 1;
        s.in_flight += bytes;
        self.turn.notify_all();
        true
    }

    /// The transform took a block of `bytes`.
    fn release(&self, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight = s.in_flight.saturating_sub(bytes);
        self.turn.notify_all();
    }

    /// The run stopped: wake the readers so they exit.
    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.turn.notify_all();
    }
}

/// Closes the read-ahead when the transform side goes away (done or failed).
struct CloseOnDrop(Arc<ReadAhead>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn network_name(n: Network) -> String {
    n.to_core_arg().to_string()
}

/// A planned commit: heights `first..=last`, all in one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunk {
    first: u64,
    last: u64,
}

fn plan_chunks(blocks: &[ChainBlock], commit_blocks: u64, commit_bytes: u64) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut cur: Option<(Chunk, u64)> = None;
    for b in blocks {
        let len = u64::from(b.loc.len) + 8;
        if let Some((c, bytes)) = &mut cur {
            let same_partition =
                layout::partition_start(c.first) == layout::partition_start(b.height);
            if same_partition && c.last - c.first + 1 < commit_blocks && *bytes < commit_bytes {
                c.last = b.height;
                *bytes += len;
                continue;
            }
            out.push(*c);
        }
        cur = Some((
            Chunk {
                first: b.height,
                last: b.height,
            },
            len,
        ));
    }
    out.extend(cur.map(|(c, _)| c));
    out
}

/// Indexes the best chain of a blocks directory into `wh`, continuing from the last commit.
/// Holds the chain's writer lease throughout: an overlapping run is refused before it
/// touches anything.
pub async fn index_btc(wh: &Warehouse, opts: &IndexOptions) -> Result<IndexSummary> {
    index_btc_until(wh, opts, None).await
}

/// [`index_btc`], ending cleanly after the current commit when `stop` turns true; with
/// `opts.follow` it keeps following the blocks dir as the node appends to it until then.
pub async fn index_btc_until(
    wh: &Warehouse,
    opts: &IndexOptions,
    stop: Option<Stop>,
) -> Result<IndexSummary> {
    let mut run = Runner::start(wh, Chain::Btc).await?;
    let r = index_btc_leased(&mut run, opts, &stop).await;
    run.finish(r).await
}

async fn index_btc_leased(
    run: &mut Runner<'_>,
    opts: &IndexOptions,
    stop: &Option<Stop>,
) -> Result<IndexSummary> {
    let mut stage = BtcStage::new(opts);
    stage.rescan().await?;
    let network = stage.summary.network.clone();
    run.load(&network, |warehouse| Error::NetworkMismatch {
        warehouse,
        found: network.clone(),
    })
    .await?;
    stage.summary.tip = run.manifest.tip.clone();
    stage.fresh_scan = true;
    let follow = opts.follow.then_some(opts.poll);
    stage::drive(&mut stage, run, follow, true, stop).await?;
    stage.bar.finish_and_clear();
    let mut summary = stage.summary;
    summary.commits = run.commits;
    summary.bytes_written = run.bytes_written;
    summary.tip = run.manifest.tip.clone();
    summary.utxo = stage.utxo.map(|u| u.stats.clone()).unwrap_or_default();
    summary.addresses = stage.addrs.map(|a| a.stats.clone()).unwrap_or_default();
    summary.elapsed = stage.started.elapsed();
    Ok(summary)
}

/// The Bitcoin pipeline as a [`Stage`]: a blocks directory's best chain, scanned again
/// (only what can have changed) at every poll.
struct BtcStage<'o> {
    opts: &'o IndexOptions,
    started: Instant,
    cache: ScanCache,
    /// The blocks dir and its best chain as last scanned.
    dir: Option<(Arc<BlkDir>, BestChain)>,
    /// Set when `dir` was scanned for the poll about to run (the first poll reuses the
    /// scan that found the network).
    fresh_scan: bool,
    /// The spent-output store, built from the committed tables at the first execute and
    /// again after an unwind.
    utxo: Option<UtxoStore>,
    /// The address-id store, built from the committed `addresses` table likewise.
    addrs: Option<AddressStore>,
    rows: BtcRows,
    summary: IndexSummary,
    bar: ProgressBar,
    first_done: Option<u64>,
    /// A block at the end of the newest blk file that did not read back whole while
    /// following, and how many polls in a row it failed.
    tail_failure: Option<(u64, u32)>,
    /// Set when the last execute stopped at such a block: wait a poll before retrying.
    retry_tail: bool,
}

impl<'o> BtcStage<'o> {
    fn new(opts: &'o IndexOptions) -> Self {
        let bar = if opts.progress {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .expect("static template"),
        );
        let rows = if opts.without_spend_graph {
            BtcRows::new().without_spends()
        } else {
            BtcRows::new()
        };
        Self {
            opts,
            started: Instant::now(),
            cache: ScanCache::default(),
            dir: None,
            fresh_scan: false,
            utxo: None,
            addrs: None,
            rows,
            summary: IndexSummary::default(),
            bar,
            first_done: None,
            tail_failure: None,
            retry_tail: false,
        }
    }

    /// Scans the blocks dir again (only the files that can have changed since the last
    /// scan) and picks its best chain.
    async fn rescan(&mut self) -> Result<()> {
        let blocks_dir = self.opts.blocks_dir.clone();
        // After the first scan the network is known: a dir that changes network is refused.
        let net = self
            .opts
            .network
            .or(self.dir.as_ref().map(|(d, _)| d.network()));
        let known = self.dir.as_ref().map(|(d, _)| d.network());
        let mut cache = std::mem::take(&mut self.cache);
        let (dir, chain, cache) =
            tokio::task::spawn_blocking(move || -> Result<(BlkDir, BestChain, ScanCache)> {
                let dir = BlkDir::open(&blocks_dir, net)?;
                let locs = dir.scan_with(&mut cache)?;
                let chain = select_best_chain(&dir, locs)?;
                Ok((dir, chain, cache))
            })
            .await
            .map_err(|e| Error::Internal {
                what: format!("block scan task: {e}"),
            })??;
        self.cache = cache;
        if known.is_none() {
            tracing::info!(
                dir = %dir.dir().display(),
                network = %network_name(dir.network()),
                files = dir.files().len(),
                obfuscated = dir.is_obfuscated(),
                best_chain = chain.blocks.len(),
                start = ?chain.start_height(),
                tip = ?chain.tip_height(),
                stale = chain.stale,
                "scanned blocks dir"
            );
        } else {
            tracing::debug!(best_chain = chain.blocks.len(), tip = ?chain.tip_height(), "rescanned blocks dir");
        }
        self.summary.network = network_name(dir.network());
        self.summary.stale_blocks = chain.stale;
        self.dir = Some((Arc::new(dir), chain));
        Ok(())
    }
}

impl BtcStage<'_> {
    /// Following a live node, the blocks of `todo` in the newest blk file may be caught
    /// mid-write: they are read and verified before anything is indexed (nothing else is
    /// touched, so a retry starts clean). Returns false when one did not read back whole:
    /// everything is scanned again at the next poll, and the same block failing three
    /// polls in a row is damage, an error.
    async fn tail_readable(&mut self, dir: &Arc<BlkDir>, todo: &[ChainBlock]) -> Result<bool> {
        let newest = u32::try_from(dir.files().len().saturating_sub(1)).unwrap_or(u32::MAX);
        let tail: Vec<ChainBlock> = todo
            .iter()
            .filter(|b| b.loc.file == newest)
            .cloned()
            .collect();
        if tail.is_empty() {
            return Ok(true);
        }
        let d = Arc::clone(dir);
        let checked =
            tokio::task::spawn_blocking(move || -> std::result::Result<(), (u64, Error)> {
                let mut buf = Vec::new();
                for b in &tail {
                    d.read_block_with(&b.loc, &mut buf)
                        .and_then(|block| verify(&d, b, &block, &buf))
                        .map_err(|e| (b.height, e))?;
                }
                Ok(())
            })
            .await
            .map_err(|e| Error::Internal {
                what: format!("tail check task: {e}"),
            })?;
        let Err((height, e)) = checked else {
            self.tail_failure = None;
            return Ok(true);
        };
        let tries = match self.tail_failure {
            Some((h, n)) if h == height => n + 1,
            _ => 1,
        };
        if tries >= 3 {
            return Err(e);
        }
        tracing::warn!(
            height,
            error = %e,
            "a block at the end of the newest blk file did not read back whole (the node may be writing it): trying again at the next poll"
        );
        self.tail_failure = Some((height, tries));
        self.cache = ScanCache::default();
        self.retry_tail = true;
        Ok(false)
    }
}

impl Stage for BtcStage<'_> {
    async fn poll(&mut self, run: &Runner<'_>) -> Result<Next> {
        if std::mem::take(&mut self.retry_tail) {
            return Ok(Next::Idle);
        }
        if !std::mem::take(&mut self.fresh_scan) {
            self.rescan().await?;
        }
        let (_, chain) = self.dir.as_ref().expect("scanned");
        let Some(chain_start) = chain.start_height() else {
            return Ok(Next::Idle);
        };
        let m = &run.manifest;
        let next = match m.tip.clone() {
            Some(tip) => match chain.at(tip.height) {
                Some(b) if b.loc.hash.to_string() == tip.hash => tip.height + 1,
                Some(_) => {
                    // A reorganisation below the committed tip: unwind to the newest
                    // committed block still on the best chain, in one commit; the next
                    // poll indexes the new branch from there.
                    let ancestor =
                        btc_ancestor(run.warehouse(), m, chain, self.opts.max_unwind).await?;
                    tracing::warn!(
                        committed_tip = tip.height,
                        ancestor = ?ancestor.as_ref().map(|a| a.height),
                        "reorganisation: unwinding the blocks no longer on the best chain"
                    );
                    return Ok(Next::Unwind(ancestor));
                }
                None if chain_start > tip.height + 1 => {
                    return Err(Error::Gap {
                        start: chain_start,
                        committed: tip.height,
                    });
                }
                None if chain_start == tip.height + 1 => {
                    // A pruned dir starting right after the tip: its first block must extend it.
                    let first = &chain.blocks[0].loc.header.prev_blockhash;
                    if first.to_string() != tip.hash {
                        return Err(Error::Reorg {
                            height: tip.height,
                            hash: tip.hash.clone(),
                        });
                    }
                    tip.height + 1
                }
                // The blocks dir ends below the committed tip: nothing new.
                None => return Ok(Next::Idle),
            },
            None => chain_start,
        };
        if self.opts.to_height.is_some_and(|to| next > to) {
            return Ok(Next::Done);
        }
        let end = chain
            .tip_height()
            .expect("non-empty chain")
            .min(self.opts.to_height.unwrap_or(u64::MAX));
        if next > end {
            return Ok(Next::Idle);
        }
        Ok(Next::Execute {
            from: next,
            to: end,
        })
    }

    async fn execute(
        &mut self,
        run: &mut Runner<'_>,
        start: u64,
        end: u64,
        stop: &Option<Stop>,
    ) -> Result<()> {
        let opts = self.opts;
        let (dir, chain) = self.dir.as_ref().expect("scanned");
        let dir = Arc::clone(dir);
        let todo: Vec<ChainBlock> = (start..=end)
            .map(|h| chain.at(h).expect("within the chain").clone())
            .collect();
        if opts.follow && !self.tail_readable(&dir, &todo).await? {
            return Ok(());
        }
        let chunks = plan_chunks(&todo, opts.commit_blocks.max(1), opts.commit_bytes.max(1));
        let total_bytes: u64 = todo.iter().map(|b| u64::from(b.loc.len) + 8).sum();
        if self.utxo.is_none() {
            let mut utxo = UtxoStore::new(opts.utxo_mem_bytes);
            if !run.manifest.files.is_empty() {
                rebuild_utxo(run.warehouse(), &run.manifest, &mut utxo).await?;
                tracing::info!(
                    entries = utxo.len(),
                    "rebuilt spent-output store from committed tables"
                );
            }
            self.utxo = Some(utxo);
        }
        if self.addrs.is_none() {
            let mut addrs = AddressStore::new(opts.address_mem_bytes);
            rebuild_addresses(run.warehouse(), &run.manifest, &mut addrs).await?;
            self.addrs = Some(addrs);
        }
        let utxo = self.utxo.as_mut().expect("built above");
        let addrs = self.addrs.as_mut().expect("built above");

        // Reader threads: read, decode, verify and prepare blocks in parallel; the
        // transform takes them back in height order (block i comes from thread i mod n).
        let network_kind = dir.network();
        let threads = opts.read_threads.max(1).min(todo.len().max(1));
        let todo = Arc::new(todo);
        let read_ahead = Arc::new(ReadAhead::new(READ_AHEAD_BYTES));
        let mut queues = Vec::with_capacity(threads);
        let mut readers = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<Result<PreparedBlock>>(READ_AHEAD_BLOCKS);
            let dir = Arc::clone(&dir);
            let todo = Arc::clone(&todo);
            let read_ahead = Arc::clone(&read_ahead);
            let handle = std::thread::Builder::new()
                .name(format!("ferret-blk-reader-{t}"))
                .spawn(move || {
                    let mut buf = Vec::new();
                    for (i, b) in todo.iter().enumerate().skip(t).step_by(threads) {
                        if !read_ahead.admit(i, u64::from(b.loc.len) + 8) {
                            return;
                        }
                        let res = dir.read_block_with(&b.loc, &mut buf).and_then(|block| {
                            let hashes = verify(&dir, b, &block, &buf)?;
                            let len = u64::from(b.loc.len) + 8;
                            Ok(PreparedBlock::new(
                                block,
                                &hashes,
                                b.height,
                                len,
                                network_kind,
                            ))
                        });
                        let failed = res.is_err();
                        if tx.send(res).is_err() || failed {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::io("ferret-blk-reader thread", e))?;
            queues.push(rx);
            readers.push(handle);
        }
        let mut received = 0usize;
        let closer = CloseOnDrop(Arc::clone(&read_ahead));
        let mut next_block = move || -> Result<PreparedBlock> {
            let q = &queues[received % threads];
            received += 1;
            let block = q.recv().map_err(|_| Error::Internal {
                what: "a block reader stopped early".into(),
            })??;
            closer.0.release(block.record_len);
            Ok(block)
        };

        let bar = &self.bar;
        bar.set_length(bar.length().unwrap_or(0) + total_bytes);
        let rows = &mut self.rows;
        let summary = &mut self.summary;
        let mut next = NextIds::of(&run.manifest);
        let block_bits = graph_block_bits(&run.manifest, opts.graph_block_bits)?;
        let with_graph = !opts.without_spend_graph;
        // A graph starts with the first commit or never: one begun later would lack the
        // earlier spends.
        if run.manifest.graph_block_bits.is_none() && run.manifest.next_tx_index > 0 && with_graph {
            return Err(Error::Config(
                "this warehouse was indexed without the spend graph (btc.spends): index into a new warehouse".into(),
            ));
        }
        if run.manifest.graph_block_bits.is_some() && !with_graph {
            return Err(Error::Config(
                "this warehouse has a spend graph; indexing without one would leave it incomplete"
                    .into(),
            ));
        }
        let spends_at = ferret_schemas::tables_of(Chain::Btc)
            .position(|t| t.name == "spends")
            .expect("btc.spends is registered");
        for chunk in chunks {
            if stage::stopped(stop) {
                break;
            }
            let mut sinks = run.open_chunk(chunk.first, chunk.last)?;
            let mut first_hash = String::new();
            let mut last_hash = String::new();
            for expect_height in chunk.first..=chunk.last {
                let prepared = next_block()?;
                let (height, len) = (prepared.height, prepared.record_len);
                if height != expect_height {
                    return Err(Error::Internal {
                        what: format!(
                            "reader delivered height {height} where {expect_height} was due"
                        ),
                    });
                }
                last_hash = prepared.hash_hex().to_string();
                if height == chunk.first {
                    first_hash = last_hash.clone();
                }
                let mut st = ChainState {
                    utxo: &mut *utxo,
                    addresses: &mut *addrs,
                    next: &mut next,
                };
                rows.push_block(prepared, &mut st)?;
                summary.bytes_read += len;
                bar.inc(len);
                if height.is_multiple_of(64) || height == chunk.last {
                    let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                    bar.set_message(format!(
                        "height {height} {:.0} blocks/s",
                        summary.counts.blocks as f64 / secs
                    ));
                }
                if rows.buffered_rows() >= FLUSH_ROWS {
                    sinks.send(rows.finish()?.into()).await?;
                }
            }
            sinks.send(rows.finish()?.into()).await?;
            if with_graph {
                sinks
                    .send_to(spends_at, rows.finish_spends(block_bits)?)
                    .await?;
            }
            let c = std::mem::take(&mut rows.counts);
            run.commit_chunk(
                sinks,
                Checkpoint {
                    height: chunk.first,
                    hash: first_hash,
                },
                Checkpoint {
                    height: chunk.last,
                    hash: last_hash,
                },
                |m| {
                    m.totals.add(&c);
                    next.store(m);
                    if with_graph {
                        m.graph_block_bits = Some(block_bits);
                    }
                },
            )
            .await?;
            summary.counts.add(&c);
            let first = *self.first_done.get_or_insert(chunk.first);
            summary.heights = Some((first, chunk.last));
        }
        drop(next_block);
        for r in readers {
            let _ = r.join();
        }
        Ok(())
    }

    fn unwound(&mut self, m: &mut Manifest, removed: &Removed) {
        use arrow::array::Array;
        // Inputs whose spent output lies before the indexed range, among removed rows.
        let unresolved: u64 = removed
            .batches
            .iter()
            .filter(|(t, _)| t == "inputs")
            .flat_map(|(_, b)| b)
            .map(|b| {
                match (
                    b.column_by_name("spent_txid"),
                    b.column_by_name("spent_height"),
                ) {
                    (Some(t), Some(h)) => (0..b.num_rows())
                        .filter(|&r| t.is_valid(r) && h.is_null(r))
                        .count() as u64,
                    _ => 0,
                }
            })
            .sum();
        let t = &mut m.totals;
        let sub = |total: &mut u64, n: u64| *total -= n.min(*total);
        sub(&mut t.blocks, removed.rows("blocks"));
        sub(&mut t.transactions, removed.rows("transactions"));
        sub(&mut t.inputs, removed.rows("inputs"));
        sub(&mut t.outputs, removed.rows("outputs"));
        sub(&mut t.unresolved_inputs, unresolved);
        sub(&mut t.addresses, removed.rows("addresses"));
        sub(&mut m.next_tx_index, removed.rows("transactions"));
        sub(&mut m.next_output_id, removed.rows("outputs"));
        sub(&mut m.next_address_id, removed.rows("addresses"));
        if m.tip.is_none() {
            NextIds::default().store(m);
        }
        // Addresses first seen in the unwound blocks lose their ids (they had the newest).
        if let Some(a) = self.addrs.as_mut()
            && let Err(e) = a.truncate(m.next_address_id)
        {
            tracing::warn!(error = %e, "could not unwind the address store; rebuilding it");
            self.addrs = None;
        }
        self.summary.unwound += removed.rows("blocks");
        // The spent-output store holds the unwound blocks' outputs and spends: undone from
        // the removed rows (a follower stays within seconds of the node), or, should that
        // fail, rebuilt from the committed tables before the next block.
        let tip = m.tip.as_ref().map(|t| t.height);
        if let Some(utxo) = self.utxo.as_mut() {
            match tip {
                Some(t) => {
                    if let Err(e) = undo_utxo(utxo, removed, t) {
                        tracing::warn!(error = %e, "could not undo the unwound blocks in the spent-output store; rebuilding it");
                        self.utxo = None;
                    }
                }
                None => self.utxo = None,
            }
        }
        self.first_done = self.first_done.filter(|&f| tip.is_some_and(|t| f <= t));
        self.summary.heights = self.first_done.zip(tip);
    }
}

/// Takes unwound blocks (above `ancestor`) out of the spent-output store: the outputs
/// they created leave it, and the outputs their inputs spent that were created at or below
/// `ancestor` come back, rebuilt from the inputs' enrichment columns.
fn undo_utxo(utxo: &mut UtxoStore, removed: &Removed, ancestor: u64) -> Result<()> {
    let bad = |what: &str| Error::Internal {
        what: format!("undoing an unwind: removed {what}"),
    };
    for (table, batches) in &removed.batches {
        for b in batches {
            let col = |name: &str| {
                b.column_by_name(name)
                    .ok_or_else(|| bad(&format!("{table} rows lack {name}")))
            };
            match table.as_str() {
                "outputs" => {
                    let txid = col("txid")?
                        .as_string_opt::<i32>()
                        .ok_or_else(|| bad("txid"))?;
                    let vout = col("vout")?
                        .as_primitive_opt::<Int32Type>()
                        .ok_or_else(|| bad("vout"))?;
                    for r in 0..b.num_rows() {
                        let key = (
                            parse_txid(txid.value(r)).ok_or_else(|| bad("txid"))?,
                            u32::try_from(vout.value(r)).map_err(|_| bad("vout"))?,
                        );
                        // Absent when it was spent within the unwound blocks too.
                        utxo.spend(&key)?;
                    }
                }
                "inputs" => {
                    let txid = col("spent_txid")?
                        .as_string_opt::<i32>()
                        .ok_or_else(|| bad("spent_txid"))?;
                    let vout = col("spent_vout")?
                        .as_primitive_opt::<Int32Type>()
                        .ok_or_else(|| bad("spent_vout"))?;
                    let tx_index = col("spent_tx_index")?
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| bad("spent_tx_index"))?;
                    let height = col("spent_height")?
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| bad("spent_height"))?;
                    let value = col("value")?
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| bad("value"))?;
                    let kind = col("script_type")?
                        .as_string_opt::<i32>()
                        .ok_or_else(|| bad("script_type"))?;
                    let address = col("address")?
                        .as_string_opt::<i32>()
                        .ok_or_else(|| bad("address"))?;
                    let output_id = col("spent_output_id")?
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| bad("spent_output_id"))?;
                    let address_id = col("address_id")?
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| bad("address_id"))?;
                    for r in 0..b.num_rows() {
                        // Coinbase inputs and inputs spending outputs from before the
                        // indexed range were never in the store.
                        if txid.is_null(r) || height.is_null(r) {
                            continue;
                        }
                        let h = u64::try_from(height.value(r)).map_err(|_| bad("spent_height"))?;
                        if h > ancestor {
                            continue;
                        }
                        let key = (
                            parse_txid(txid.value(r)).ok_or_else(|| bad("spent_txid"))?,
                            u32::try_from(vout.value(r)).map_err(|_| bad("spent_vout"))?,
                        );
                        let u = Utxo {
                            value: u64::try_from(value.value(r)).map_err(|_| bad("value"))?,
                            tx_index: u64::try_from(tx_index.value(r))
                                .map_err(|_| bad("spent_tx_index"))?,
                            height: u32::try_from(h).map_err(|_| bad("spent_height"))?,
                            kind: ScriptKind::parse(kind.value(r))
                                .ok_or_else(|| bad("script_type"))?,
                            address: (!address.is_null(r)).then(|| address.value(r).into()),
                            output_id: u64::try_from(output_id.value(r))
                                .map_err(|_| bad("spent_output_id"))?,
                            address_id: id_or_none(address_id, r)
                                .ok_or_else(|| bad("address_id"))?,
                        };
                        utxo.insert(key, u)?;
                    }
                }
                _ => {}
            }
        }
    }
    utxo.flush()
}

fn verify(dir: &BlkDir, b: &ChainBlock, block: &bitcoin::Block, raw: &[u8]) -> Result<TxHashes> {
    let file = dir.file_path(b.loc.file).to_path_buf();
    let (offset, hash, height) = (b.loc.offset, b.loc.hash.to_string(), b.height);
    hash_and_verify_raw(block, raw).map_err(|fault| match fault {
        BlockFault::MerkleRoot => Error::MerkleMismatch {
            file,
            offset,
            hash,
            height,
        },
        BlockFault::WitnessCommitment => Error::WitnessCommitment {
            file,
            offset,
            hash,
            height,
        },
    })
}

/// Reads the named columns of one committed file.
async fn read_columns(wh: &Warehouse, path: &str, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    Ok(wh.read_columns(path, columns).await?)
}

fn parse_txid(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for i in 0..32 {
        let hi = (bytes[2 * i] as char).to_digit(16)?;
        let lo = (bytes[2 * i + 1] as char).to_digit(16)?;
        // Display order is reversed.
        out[31 - i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// The spend graph's block bits: the committed ones, else those asked for, else the
/// default; asking for others than the committed ones is an error (the graph would have to
/// be rewritten).
fn graph_block_bits(m: &Manifest, asked: Option<u32>) -> Result<u32> {
    let bits = match (m.graph_block_bits, asked) {
        (Some(c), Some(a)) if c != a => {
            return Err(Error::Config(format!(
                "the warehouse's spend graph has blocks of 2^{c} transactions; --graph-block-bits {a} would need it rewritten (index into a new warehouse)"
            )));
        }
        (Some(c), _) => c,
        (None, a) => a.unwrap_or(ferret_schemas::btc::DEFAULT_GRAPH_BLOCK_BITS),
    };
    if bits > ferret_schemas::btc::MAX_GRAPH_BLOCK_BITS {
        return Err(Error::Config(format!(
            "graph block bits {bits}: at most {} (a block's state must fit one GPU binding)",
            ferret_schemas::btc::MAX_GRAPH_BLOCK_BITS
        )));
    }
    Ok(bits)
}

/// A nullable id column's value: [`NO_ID`] for null, None for a negative id.
fn id_or_none(col: &arrow::array::Int64Array, r: usize) -> Option<u64> {
    use arrow::array::Array;
    if col.is_null(r) {
        Some(NO_ID)
    } else {
        u64::try_from(col.value(r)).ok()
    }
}

/// Loads the committed `addresses` table into the address store, checking that the ids
/// are dense and in order (0, 1, 2, … up to the manifest's next id): a gap, a repeat or a
/// repeated address is damage, never an id given twice.
async fn rebuild_addresses(
    wh: &Warehouse,
    manifest: &Manifest,
    addrs: &mut AddressStore,
) -> Result<()> {
    let mut files: Vec<_> = manifest.files_of("addresses").collect();
    files.sort_by_key(|f| f.first_height);
    let mut next = 0u64;
    for f in files {
        let path = &f.path;
        let corrupt = |reason: String| Error::CorruptCommitted {
            path: path.clone(),
            reason,
        };
        for batch in read_columns(wh, path, &["address", "address_id"]).await? {
            let (Some(address), Some(id)) = (
                batch.column(0).as_string_opt::<i32>(),
                batch.column(1).as_primitive_opt::<Int64Type>(),
            ) else {
                return Err(corrupt("address or address_id has the wrong type".into()));
            };
            for r in 0..batch.num_rows() {
                if u64::try_from(id.value(r)).ok() != Some(next) {
                    return Err(corrupt(format!(
                        "address_id {} where {next} was due",
                        id.value(r)
                    )));
                }
                if addrs.get(address.value(r))?.is_some() {
                    return Err(corrupt(format!(
                        "address {} has a second id",
                        address.value(r)
                    )));
                }
                addrs.insert(address.value(r), next)?;
                next += 1;
            }
        }
    }
    if next != manifest.next_address_id {
        return Err(Error::CorruptCommitted {
            path: "btc/addresses".into(),
            reason: format!(
                "{next} addresses committed, the manifest's next id is {}",
                manifest.next_address_id
            ),
        });
    }
    if next > 0 {
        tracing::info!(
            addresses = next,
            "rebuilt the address store from committed tables"
        );
    }
    Ok(())
}

/// Replays the committed outputs and inputs, range by range, into the spent-output store.
async fn rebuild_utxo(wh: &Warehouse, manifest: &Manifest, utxo: &mut UtxoStore) -> Result<()> {
    let outputs: Vec<_> = manifest.files_of("outputs").collect();
    let inputs: Vec<_> = manifest.files_of("inputs").collect();
    for o in &outputs {
        let path = &o.path;
        let corrupt = |reason: &str| Error::CorruptCommitted {
            path: path.clone(),
            reason: reason.to_string(),
        };
        for batch in read_columns(
            wh,
            path,
            &[
                "height",
                "tx_index",
                "txid",
                "vout",
                "value",
                "script_type",
                "address",
                "output_id",
                "address_id",
            ],
        )
        .await?
        {
            let wrong = |c: &str| corrupt(&format!("column {c} has the wrong type"));
            let i64_at = |i: usize, c: &str| {
                batch
                    .column(i)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| wrong(c))
            };
            let str_at = |i: usize, c: &str| {
                batch
                    .column(i)
                    .as_string_opt::<i32>()
                    .ok_or_else(|| wrong(c))
            };
            let height = i64_at(0, "height")?;
            let tx_index = i64_at(1, "tx_index")?;
            let txid = str_at(2, "txid")?;
            let vout = batch
                .column(3)
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| wrong("vout"))?;
            let value = i64_at(4, "value")?;
            let kind = str_at(5, "script_type")?;
            let address = str_at(6, "address")?;
            let output_id = i64_at(7, "output_id")?;
            let address_id = i64_at(8, "address_id")?;
            for r in 0..batch.num_rows() {
                let kind =
                    ScriptKind::parse(kind.value(r)).ok_or_else(|| corrupt("bad script_type"))?;
                if kind == ScriptKind::Nulldata {
                    continue;
                }
                let key = (
                    parse_txid(txid.value(r)).ok_or_else(|| corrupt("bad txid"))?,
                    u32::try_from(vout.value(r)).map_err(|_| corrupt("bad vout"))?,
                );
                let u = Utxo {
                    value: u64::try_from(value.value(r)).map_err(|_| corrupt("bad value"))?,
                    tx_index: u64::try_from(tx_index.value(r))
                        .map_err(|_| corrupt("bad tx_index"))?,
                    height: u32::try_from(height.value(r)).map_err(|_| corrupt("bad height"))?,
                    kind,
                    address: (!address.is_null(r)).then(|| address.value(r).into()),
                    output_id: u64::try_from(output_id.value(r))
                        .map_err(|_| corrupt("bad output_id"))?,
                    address_id: id_or_none(address_id, r)
                        .ok_or_else(|| corrupt("bad address_id"))?,
                };
                utxo.insert(key, u)?;
            }
        }
        // The inputs of the same range spend outputs of this range or earlier ones.
        if let Some(i) = inputs.iter().find(|i| i.first_height == o.first_height) {
            let path = &i.path;
            let corrupt = |reason: &str| Error::CorruptCommitted {
                path: path.clone(),
                reason: reason.to_string(),
            };
            for batch in read_columns(wh, path, &["spent_txid", "spent_vout"]).await? {
                let (Some(txid), Some(vout)) = (
                    batch.column(0).as_string_opt::<i32>(),
                    batch.column(1).as_primitive_opt::<Int32Type>(),
                ) else {
                    return Err(corrupt("spent_txid or spent_vout has the wrong type"));
                };
                for r in 0..batch.num_rows() {
                    if txid.is_null(r) {
                        continue;
                    }
                    let key = (
                        parse_txid(txid.value(r)).ok_or_else(|| corrupt("bad spent_txid"))?,
                        u32::try_from(vout.value(r)).map_err(|_| corrupt("bad spent_vout"))?,
                    );
                    utxo.spend(&key)?;
                }
                utxo.flush()?;
            }
        }
    }
    Ok(())
}

/// The newest committed block still on the best chain, looking at most `max_unwind`
/// blocks below the committed tip (from the committed `blocks` table); `None` when no
/// committed block is (the whole indexed chain was replaced).
async fn btc_ancestor(
    wh: &Warehouse,
    manifest: &Manifest,
    chain: &BestChain,
    max_unwind: u64,
) -> Result<Option<Checkpoint>> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let tip = manifest.tip.clone().expect("a committed tip");
    let lowest = tip.height.saturating_sub(max_unwind);
    let mut committed: std::collections::HashMap<u64, String> = Default::default();
    for f in manifest
        .files_of("blocks")
        .filter(|f| f.last_height >= lowest)
    {
        for b in wh.read_columns(&f.path, &["height", "hash"]).await? {
            let bad = || Error::CorruptCommitted {
                path: f.path.clone(),
                reason: "blocks: height and hash columns of the wrong type".into(),
            };
            let h = b
                .column(0)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(bad)?;
            let x = b.column(1).as_string_opt::<i32>().ok_or_else(bad)?;
            for r in 0..b.num_rows() {
                committed.insert(h.value(r) as u64, x.value(r).to_string());
            }
        }
    }
    let first = manifest.first_height.unwrap_or(0);
    for height in (lowest.max(first)..=tip.height).rev() {
        if let (Some(c), Some(b)) = (committed.get(&height), chain.at(height))
            && *c == b.loc.hash.to_string()
        {
            return Ok(Some(Checkpoint {
                height,
                hash: c.clone(),
            }));
        }
    }
    if lowest <= first {
        return Ok(None);
    }
    Err(Error::DeepReorg {
        height: tip.height,
        hash: tip.hash,
        kept: max_unwind as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three readers under a budget smaller than some blocks, a consumer taking blocks back
    /// in order as `index_btc` does: every block arrives once, in order, the budget holds
    /// (a lone block may exceed it), nothing deadlocks, and closing wakes waiting readers.
    #[test]
    fn read_ahead_admits_in_order_within_the_budget() {
        const LIMIT: u64 = 60;
        let sizes: Vec<u64> = (0..300u64).map(|i| 1 + (i * 37) % 80).collect();
        let ra = Arc::new(ReadAhead::new(LIMIT));
        let mut queues = Vec::new();
        let mut readers = Vec::new();
        for t in 0..3 {
            let (tx, rx) = mpsc::sync_channel::<(usize, u64)>(16);
            let (ra, sizes) = (Arc::clone(&ra), sizes.clone());
            readers.push(std::thread::spawn(move || {
                for i in (t..sizes.len()).step_by(3) {
                    if !ra.admit(i, sizes[i]) {
                        return Some(i);
                    }
                    let in_flight = ra.state.lock().expect("lock").in_flight;
                    if tx.send((i, in_flight)).is_err() {
                        return Some(i);
                    }
                }
                None
            }));
            queues.push(rx);
        }
        for i in 0..200 {
            let (got, in_flight) = queues[i % 3]
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("block {i} never came (deadlock?): {e}"));
            assert_eq!(got, i);
            assert!(
                in_flight <= LIMIT || in_flight == sizes[i],
                "block {i}: {in_flight} in flight"
            );
            ra.release(sizes[i]);
        }
        // The consumer stops: readers waiting for the budget or their turn wake up and leave.
        ra.close();
        drop(queues);
        for r in readers {
            let stopped = r.join().expect("reader");
            assert!(stopped.is_some_and(|i| i >= 200), "{stopped:?}");
        }
    }

    #[test]
    fn txid_hex_round_trips() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8 * 7;
        }
        let mut hex = [0u8; 64];
        crate::transform::display_hex(&bytes, &mut hex);
        assert_eq!(
            parse_txid(std::str::from_utf8(&hex).expect("ascii")),
            Some(bytes)
        );
        assert_eq!(parse_txid("zz"), None);
    }
}
