//! Where the Bitcoin typology pass spends its time: reading the committed transactions in
//! chain order, or judging them. One mode per process, so each peak RSS is its own.
//!
//! ```text
//! cargo run --release -p ferret-benches --bin typology_pass -- \
//!     --warehouse /tmp/wh [--mode read|scan|walk] [--device cpu|gpu|auto] [--digest]
//! ```
//!
//! `read` streams every transaction (with its txid, as the pass does) and does nothing
//! with it; `scan` feeds each one to the pass (`ferret_kernels::typology::btc::Scan`,
//! default rules) and closes it, without naming addresses or writing anything; `walk` is
//! `scan` with peel chains and pass-through chains walked on the spend graph and ranked on
//! `--device` (`ferret_kernels::typology::walk`), and also prints the seconds of the walk
//! alone (linking on `btc.spends` and ranking). Prints one JSON line: mode, wall seconds,
//! transactions, findings (`read`: the inputs and outputs seen), peak RSS (VmHWM), and
//! (`--digest`) a digest of the findings' JSON, to compare builds and engines (its time is
//! counted). The system allocator, as the CLI.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferret_benches::{arg, peak_rss_bytes};
use ferret_kernels::typology::btc::{BtcRules, Scan};
use ferret_schemas::{Chain, Warehouse};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url: String = arg(&args, "--warehouse", String::new())?;
    if url.is_empty() {
        bail!("--warehouse is required");
    }
    let mode: String = arg(&args, "--mode", "read".to_string())?;
    let wh = Warehouse::open_existing(&url)?;
    let m = wh
        .load_manifest(Chain::Btc)
        .await?
        .context("no Bitcoin blocks in the warehouse")?;
    let t = Instant::now();
    let mut digest = String::new();
    let mut walk_seconds = 0.0;
    let mut walk_stats = String::from("null");
    let (transactions, findings) = match mode.as_str() {
        "read" => {
            let mut n = 0u64;
            ferret_kernels::txstream::for_each_tx_from(&wh, &m, 0, true, "bench", |tx| {
                n += tx.outputs.len() as u64 + tx.inputs.len() as u64;
                Ok(())
            })
            .await?;
            // Inputs and outputs seen (so the read is not optimised away).
            (m.next_tx_index, usize::try_from(n).unwrap_or(usize::MAX))
        }
        "scan" | "walk" => {
            let mut scan = Scan::new(BtcRules::default(), HashSet::new(), m.next_address_id)?;
            let backend = if mode == "walk" {
                let device: ferret_kernels::device::DeviceChoice =
                    arg(&args, "--device", ferret_kernels::device::DeviceChoice::Cpu)?;
                scan.walk_on_graph()?;
                Some(ferret_kernels::device::select(device)?)
            } else {
                None
            };
            ferret_kernels::txstream::for_each_tx_from(&wh, &m, 0, true, "bench", |tx| scan.tx(tx))
                .await?;
            if let Some(b) = &backend {
                let w = Instant::now();
                walk_stats = serde_json::to_string(&scan.walk_graph(&wh, &m, b).await?)?;
                walk_seconds = w.elapsed().as_secs_f64();
            }
            let found = scan.finish();
            // A digest of the findings as JSON (FNV-1a), so two builds can be compared.
            if args.iter().any(|a| a == "--digest") {
                let json = serde_json::to_vec(&found)?;
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in json {
                    h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
                digest = format!("{h:016x}");
            }
            (m.next_tx_index, found.len())
        }
        other => bail!("--mode {other}: read, scan or walk"),
    };
    println!(
        "{{\"mode\":\"{mode}\",\"seconds\":{:.2},\"walk_seconds\":{walk_seconds:.2},\"transactions\":{transactions},\"findings\":{findings},\"peak_rss_bytes\":{},\"digest\":\"{digest}\",\"walk\":{walk_stats}}}",
        t.elapsed().as_secs_f64(),
        peak_rss_bytes()
    );
    Ok(())
}
