//! Ethereum ingest from a real node: anvil, populated by `ferret synth eth` with blocks of
//! thousands of transactions (payments, stablecoin transfers, splitter multisends with
//! internal transfers, exchange deposits and sweeps), then indexed with callTracer traces.
//!
//! ```text
//! cargo run --release -p ferret-benches --bin eth_ingest -- \
//!     [--blocks 20] [--txs-per-block 2000] [--users 4000] [--batch 10] [--concurrency 4]
//! ```
//!
//! Measurements over the same blocks, without traces and with callTracer:
//! - **node**: reading every block with its receipts and traces through the same client
//!   and batching, with nothing decoded into tables or written: the node's (and the
//!   JSON-RPC round trips') own time;
//! - **index**: `index_eth` into a fresh local warehouse (reading, checks, tables,
//!   Parquet, commit); its summary splits the time spent waiting for the node;
//! - blocks/s and rows/s (rows of all six tables) of the index run.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use anyhow::{Context, Result};
use ferret_benches::arg;
use ferret_indexer::eth::{EthOptions, Rpc, Source, TraceMode, index_eth};
use ferret_schemas::Warehouse;
use ferret_testkit::anvil::Anvil;
use ferret_testkit::synth::eth::{EthSynthConfig, generate};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let blocks: usize = arg(&args, "--blocks", 20)?;
    let txs: usize = arg(&args, "--txs-per-block", 2000)?;
    let users: usize = arg(&args, "--users", 4000)?;
    let batch: usize = arg(&args, "--batch", 10)?;
    let concurrency: usize = arg(&args, "--concurrency", 4)?;

    let node = Anvil::start(&[
        "--gas-limit",
        "2000000000",
        "--order",
        "fifo",
        "--timestamp",
        "1700000000",
    ])
    .await
    .context("starting anvil")?;
    let tmp = tempfile::tempdir()?;
    let t = Instant::now();
    let cfg = EthSynthConfig {
        blocks,
        txs_per_block: txs,
        users,
        ..Default::default()
    };
    let s = generate(node.url(), &cfg, tmp.path()).await?;
    println!(
        "populated anvil: {} blocks, {} transactions ({} reverted) in {:.1} s",
        s.blocks,
        s.transactions,
        s.reverted,
        t.elapsed().as_secs_f64()
    );

    println!(
        "| measurement | traces | blocks | transactions | rows | time (s) | blocks/s | transactions/s | rows/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for mode in [TraceMode::Off, TraceMode::CallTracer] {
        // The node alone.
        let rpc = Rpc::connect(node.url(), Default::default()).await?;
        let source = Source::new(rpc, mode);
        let head = source.head().await?;
        let numbers: Vec<u64> = (0..=head).collect();
        let t = Instant::now();
        let groups: Vec<Vec<u64>> = numbers.chunks(batch).map(<[u64]>::to_vec).collect();
        use futures::StreamExt;
        let read: Vec<_> = futures::stream::iter(groups)
            .map(|g| {
                let source = &source;
                async move { source.blocks(&g).await }
            })
            .buffered(concurrency)
            .collect()
            .await;
        let mut read_txs = 0;
        for r in read {
            read_txs += r?.iter().map(|b| b.receipts.len()).sum::<usize>();
        }
        let node_secs = t.elapsed().as_secs_f64();

        // The whole index.
        let wh_dir = tempfile::tempdir()?;
        let wh = Warehouse::open(wh_dir.path().to_str().context("utf8 temp dir")?)?;
        let mut opts = EthOptions::new(node.url());
        opts.traces = mode;
        opts.batch_blocks = batch;
        opts.concurrency = concurrency;
        let t = Instant::now();
        let summary = index_eth(&wh, &opts, None).await?;
        let index_secs = t.elapsed().as_secs_f64();
        let c = &summary.counts;
        let rows = c.blocks + c.transactions + c.logs + c.token_transfers + c.traces + c.transfers;
        eprintln!("{summary}\n");
        println!(
            "| node: blocks + receipts (+ traces), batched, nothing decoded into tables | {mode} | {} | {read_txs} | - | {node_secs:.2} | {:.1} | {:.0} | - |",
            numbers.len(),
            numbers.len() as f64 / node_secs,
            read_txs as f64 / node_secs
        );
        println!(
            "| index eth (of which waiting for the node {:.2} s) | {mode} | {} | {} | {rows} | {index_secs:.2} | {:.1} | {:.0} | {:.0} |",
            summary.node_wait.as_secs_f64(),
            c.blocks,
            c.transactions,
            c.blocks as f64 / index_secs,
            c.transactions as f64 / index_secs,
            rows as f64 / index_secs
        );
    }
    Ok(())
}
