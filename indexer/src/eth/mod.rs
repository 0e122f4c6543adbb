//! `ferret index eth`: an Ethereum JSON-RPC endpoint into the warehouse.
//!
//! Stages: ask the node for its chain id and head → check the committed tip is still on
//! the node's chain (else unwind to the common ancestor) → read the next blocks in batches,
//! several batches at a time, each block with its receipts and traces ([`source`]) → fill
//! the six tables' columns ([`transform`]) → Parquet files → the manifest PUT commits.
//! Follow mode repeats this as the chain grows, `--confirmations` blocks behind the head.

pub mod rpc;
pub mod source;
pub mod transform;

use std::time::{Duration, Instant};

use ferret_schemas::{Chain, Checkpoint, Manifest, Warehouse, layout};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stage::{self, Next, Removed, Runner, Stage};
use crate::{Error, Result};
pub use rpc::{RetryPolicy, Rpc};
pub use source::{Source, TraceMode};
use transform::hex_hash;
pub use transform::{EthCounts, EthRows};

/// Options of an Ethereum index run.
#[derive(Clone, Debug)]
pub struct EthOptions {
    /// JSON-RPC endpoint: `http(s)://` or `ws(s)://`.
    pub rpc: String,
    /// First block of a new warehouse.
    pub from: u64,
    /// Last block to index; `None` for the node's head (less the confirmations).
    pub to: Option<u64>,
    /// Keep indexing as the chain grows, until stopped.
    pub follow: bool,
    /// Index only blocks this many blocks below the head.
    pub confirmations: u64,
    /// Batches in flight at once.
    pub concurrency: usize,
    /// Blocks per JSON-RPC batch.
    pub batch_blocks: usize,
    /// Where internal calls come from.
    pub traces: TraceMode,
    /// Commit at least every this many blocks.
    pub commit_blocks: u64,
    /// How often follow mode asks for a new head.
    pub poll: Duration,
    /// Retries, backoff and timeouts of every request.
    pub retry: RetryPolicy,
    /// The chain id the node must have.
    pub chain_id: Option<u64>,
    /// Block hashes kept in the manifest for reorganisations.
    pub keep_hashes: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl EthOptions {
    /// Defaults for an endpoint.
    pub fn new(rpc: impl Into<String>) -> Self {
        Self {
            rpc: rpc.into(),
            from: 0,
            to: None,
            follow: false,
            confirmations: 0,
            concurrency: 4,
            batch_blocks: 10,
            traces: TraceMode::Auto,
            commit_blocks: 1000,
            poll: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            chain_id: None,
            keep_hashes: 256,
            progress: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct EthSummary {
    pub chain_id: u64,
    /// First and last block indexed by this run (None when nothing was new).
    pub heights: Option<(u64, u64)>,
    pub counts: EthCounts,
    pub commits: u64,
    /// Reorganisations met, and the committed blocks they removed.
    pub reorgs: u64,
    pub unwound_blocks: u64,
    pub bytes_written: u64,
    /// Time spent waiting for the node (the rest is decoding, encoding and writing).
    pub node_wait: Duration,
    pub elapsed: Duration,
    pub traces: Option<TraceMode>,
    /// Tip of the warehouse after the run.
    pub tip: Option<Checkpoint>,
}

impl std::fmt::Display for EthSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        match self.heights {
            Some((a, b)) => writeln!(f, "indexed chain {} blocks {a}..={b}", self.chain_id)?,
            None => writeln!(f, "nothing new to index (chain {})", self.chain_id)?,
        }
        writeln!(
            f,
            "blocks {}  transactions {}  logs {}  token transfers {}  traces {}  transfers {}",
            c.blocks, c.transactions, c.logs, c.token_transfers, c.traces, c.transfers
        )?;
        if c.unknown_status > 0 {
            writeln!(
                f,
                "transactions without a known status (pre-Byzantium, no traces): {}",
                c.unknown_status
            )?;
        }
        if c.malformed_transfer_logs > 0 {
            writeln!(
                f,
                "Transfer logs that are neither ERC-20 nor ERC-721: {}",
                c.malformed_transfer_logs
            )?;
        }
        if self.reorgs > 0 {
            writeln!(
                f,
                "reorganisations {}  blocks unwound {}",
                self.reorgs, self.unwound_blocks
            )?;
        }
        writeln!(
            f,
            "traces {}  written {:.1} MB  commits {}",
            self.traces.map_or("-".to_string(), |t| t.to_string()),
            self.bytes_written as f64 / 1e6,
            self.commits
        )?;
        write!(
            f,
            "elapsed {:.2} s ({:.0} blocks/s; {:.2} s waiting for the node)",
            secs,
            c.blocks as f64 / secs,
            self.node_wait.as_secs_f64()
        )?;
        if let Some(t) = &self.tip {
            write!(f, "\ntip {} at block {}", t.hash, t.height)?;
        }
        Ok(())
    }
}

/// Rows buffered (all tables together) before they go to the writers as batches.
const FLUSH_ROWS: usize = 64 * 1024;

pub use crate::stage::Stop;

/// Indexes blocks from the node at `opts.rpc` into `wh`, continuing from the last commit.
/// With `opts.follow` it runs until `stop` turns true. Holds the chain's writer lease
/// throughout: an overlapping run is refused before it touches anything.
pub async fn index_eth(
    wh: &Warehouse,
    opts: &EthOptions,
    stop: Option<Stop>,
) -> Result<EthSummary> {
    let mut run = Runner::start(wh, Chain::Eth).await?;
    let r = index_eth_leased(&mut run, opts, &stop).await;
    run.finish(r).await
}

async fn index_eth_leased(
    run: &mut Runner<'_>,
    opts: &EthOptions,
    stop: &Option<Stop>,
) -> Result<EthSummary> {
    let started = Instant::now();
    if opts.follow && opts.to.is_some() {
        return Err(Error::BadArguments {
            what: "--follow and --to exclude each other".into(),
        });
    }
    let rpc = Rpc::connect(&opts.rpc, opts.retry.clone()).await?;
    let source = Source::new(rpc, opts.traces);
    let chain_id = source.chain_id().await?;
    if let Some(want) = opts.chain_id
        && want != chain_id
    {
        return Err(Error::ChainIdMismatch {
            url: opts.rpc.clone(),
            expected: want.to_string(),
            found: chain_id,
        });
    }
    run.load(&chain_id.to_string(), |expected| Error::ChainIdMismatch {
        url: opts.rpc.clone(),
        expected,
        found: chain_id,
    })
    .await?;
    if let Some(next) = run.manifest.next_height()
        && opts.from > next
    {
        return Err(Error::BadArguments {
            what: format!(
                "the warehouse holds blocks up to {}; starting at --from {} would leave a gap",
                next - 1,
                opts.from
            ),
        });
    }
    let bar = if opts.progress {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] block {pos} {per_sec} {msg}")
            .expect("static template"),
    );
    let mut stage = EthStage {
        opts,
        source,
        bar,
        summary: EthSummary {
            chain_id,
            tip: run.manifest.tip.clone(),
            ..Default::default()
        },
        resolved: false,
        moved_in_a_row: 0,
        reorgs_in_a_row: 0,
        first_done: None,
    };
    let follow = opts.follow.then_some(opts.poll);
    stage::drive(&mut stage, run, follow, false, stop).await?;
    stage.bar.finish_and_clear();
    let mut summary = stage.summary;
    summary.commits = run.commits;
    summary.bytes_written = run.bytes_written;
    summary.tip = run.manifest.tip.clone();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The Ethereum pipeline as a [`Stage`]: a node's chain, `confirmations` behind its head.
struct EthStage<'o> {
    opts: &'o EthOptions,
    source: Source,
    bar: ProgressBar,
    summary: EthSummary,
    /// Whether the trace mode has been settled (at the first block read).
    resolved: bool,
    moved_in_a_row: u32,
    reorgs_in_a_row: u32,
    first_done: Option<u64>,
}

impl Stage for EthStage<'_> {
    async fn poll(&mut self, run: &Runner<'_>) -> Result<Next> {
        let (opts, source, m) = (self.opts, &self.source, &run.manifest);
        // The committed tip must still be on the node's chain.
        if let Some(tip) = m.tip.clone() {
            let node = source.header(tip.height).await?;
            if node.is_none() {
                // No block at the tip's height: the chain got shorter (a reorganisation
                // to a shorter branch), unless the node claims to be past it.
                let head = source.head().await?;
                if head >= tip.height {
                    return Err(Error::RpcData {
                        url: opts.rpc.clone(),
                        block: tip.height,
                        what: format!(
                            "the node's head is {head} but it has no block {}",
                            tip.height
                        ),
                    });
                }
            }
            if node.map(|h| hex_hash(&h.hash)).as_deref() != Some(tip.hash.as_str()) {
                self.reorgs_in_a_row += 1;
                if self.reorgs_in_a_row > 10 {
                    return Err(Error::RpcData {
                        url: opts.rpc.clone(),
                        block: tip.height,
                        what: "the node's chain changed under every commit (10 times in a row)"
                            .into(),
                    });
                }
                let ancestor = find_ancestor(source, m).await?;
                tracing::warn!(
                    from = tip.height,
                    ancestor = ?ancestor.as_ref().map(|a| a.height),
                    "reorganisation: unwinding the committed blocks that left the chain"
                );
                return Ok(Next::Unwind(ancestor));
            }
        }
        let head = source.head().await?;
        let next = m.next_height().unwrap_or(opts.from);
        if opts.to.is_some_and(|to| next > to) {
            return Ok(Next::Done);
        }
        let safe = head.checked_sub(opts.confirmations);
        let target = match (safe, opts.to) {
            (Some(s), Some(t)) => Some(s.min(t)),
            (s, _) => s,
        };
        match target {
            Some(t) if next <= t => Ok(Next::Execute { from: next, to: t }),
            _ => {
                if !opts.follow && opts.to.is_some() {
                    tracing::warn!(
                        head,
                        confirmations = opts.confirmations,
                        "the node's chain ends before --to; indexed what it has"
                    );
                }
                Ok(Next::Idle)
            }
        }
    }

    /// One chunk: the committed tip is checked against the node again before the next.
    async fn execute(
        &mut self,
        run: &mut Runner<'_>,
        next: u64,
        target: u64,
        _stop: &Option<Stop>,
    ) -> Result<()> {
        let opts = self.opts;
        if !self.resolved {
            self.summary.traces = Some(self.source.resolve(next).await?);
            self.resolved = true;
        }
        let last = target
            .min(next.saturating_add(opts.commit_blocks.max(1) - 1))
            .min(layout::partition_start(next) + layout::PARTITION_SPAN - 1);
        if index_chunk(
            run,
            &self.source,
            opts,
            next,
            last,
            &self.bar,
            &mut self.summary,
        )
        .await?
        {
            self.moved_in_a_row = 0;
            self.reorgs_in_a_row = 0;
            let first = *self.first_done.get_or_insert(next);
            self.summary.heights = Some((first, last));
        } else {
            self.moved_in_a_row += 1;
            if self.moved_in_a_row > 5 {
                return Err(Error::RpcData {
                    url: opts.rpc.clone(),
                    block: next,
                    what: "the node's chain kept changing while its blocks were read (5 tries)"
                        .into(),
                });
            }
            tokio::time::sleep(opts.poll.min(Duration::from_secs(1))).await;
        }
        Ok(())
    }

    fn unwound(&mut self, m: &mut Manifest, removed: &Removed) {
        match m.tip.as_ref().map(|t| t.height) {
            Some(a) => m.recent.retain(|c| c.height <= a),
            None => m.recent.clear(),
        }
        m.totals = totals_of(m);
        self.summary.reorgs += 1;
        self.summary.unwound_blocks += removed.rows("blocks");
        let tip = m.tip.as_ref().map(|t| t.height);
        self.first_done = self.first_done.filter(|&f| tip.is_some_and(|t| f <= t));
        self.summary.heights = self.first_done.zip(tip);
    }
}

/// Reads, writes and commits blocks `first..=last`. Returns false, committing nothing,
/// when the blocks read do not link up (the node's chain moved while they were read).
async fn index_chunk(
    run: &mut Runner<'_>,
    source: &Source,
    opts: &EthOptions,
    first: u64,
    last: u64,
    bar: &ProgressBar,
    summary: &mut EthSummary,
) -> Result<bool> {
    let numbers: Vec<u64> = (first..=last).collect();
    let batches: Vec<Vec<u64>> = numbers
        .chunks(opts.batch_blocks.max(1))
        .map(<[u64]>::to_vec)
        .collect();
    let mut groups = futures::stream::iter(batches)
        .map(|g| async move { source.blocks(&g).await })
        .buffered(opts.concurrency.max(1));
    let mut sinks = run.open_chunk(first, last)?;
    let mut rows = EthRows::new();
    let mut prev = run
        .manifest
        .tip
        .as_ref()
        .filter(|t| t.height + 1 == first)
        .map(|t| t.hash.clone());
    let mut hashes = Vec::with_capacity(numbers.len());
    loop {
        let waited = Instant::now();
        let Some(group) = groups.next().await else {
            break;
        };
        summary.node_wait += waited.elapsed();
        let group = match group {
            Ok(g) => g,
            Err(Error::ChainMoved { block, what, .. }) => {
                tracing::info!(block, %what, "the chain moved while reading; reading again");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        for d in group {
            let parent = hex_hash(&d.parent_hash());
            if let Some(p) = &prev
                && *p != parent
            {
                tracing::info!(
                    block = d.number(),
                    "the chain moved while reading; reading again"
                );
                return Ok(false);
            }
            rows.push_block(&d)?;
            let hash = hex_hash(&d.hash());
            hashes.push(Checkpoint {
                height: d.number(),
                hash: hash.clone(),
            });
            prev = Some(hash);
            bar.set_position(d.number());
            if rows.buffered_rows() >= FLUSH_ROWS {
                sinks.send(rows.finish()?.into()).await?;
            }
        }
    }
    sinks.send(rows.finish()?.into()).await?;
    let (Some(first_cp), Some(tip)) = (hashes.first().cloned(), hashes.last().cloned()) else {
        return Err(Error::Internal {
            what: format!("no blocks read for {first}..={last}"),
        });
    };
    let keep = opts.keep_hashes.max(1);
    run.commit_chunk(sinks, first_cp, tip, |m| {
        m.recent.extend(hashes);
        let excess = m.recent.len().saturating_sub(keep);
        m.recent.drain(..excess);
        m.totals = totals_of(m);
    })
    .await?;
    summary.counts.add(&rows.counts);
    bar.set_message(format!(
        "{} transactions, {} transfers",
        summary.counts.transactions, summary.counts.transfers
    ));
    Ok(true)
}

/// Blocks and transactions over the committed files.
fn totals_of(m: &Manifest) -> ferret_schemas::manifest::Totals {
    ferret_schemas::manifest::Totals {
        blocks: m.files_of("blocks").map(|f| f.rows).sum(),
        transactions: m.files_of("transactions").map(|f| f.rows).sum(),
        ..Default::default()
    }
}

/// The newest kept block that is still on the node's chain; `None` when none is and the
/// kept hashes reach back to the first indexed block (the whole indexed chain was
/// replaced).
async fn find_ancestor(source: &Source, m: &Manifest) -> Result<Option<Checkpoint>> {
    for c in m.recent.iter().rev() {
        if let Some(h) = source.header(c.height).await?
            && hex_hash(&h.hash) == c.hash
        {
            return Ok(Some(c.clone()));
        }
    }
    let tip = m.tip.clone().unwrap_or(Checkpoint {
        height: 0,
        hash: String::new(),
    });
    match (m.recent.first(), m.first_height) {
        (Some(oldest), Some(first)) if oldest.height == first => Ok(None),
        _ => Err(Error::DeepReorg {
            height: tip.height,
            hash: tip.hash,
            kept: m.recent.len(),
        }),
    }
}
