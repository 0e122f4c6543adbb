//! Where the Bitcoin typology pass spends its time: reading the committed transactions in
//! chain order, or judging them. One mode per process, so each peak RSS is its own.
//!
//! ```text
//! cargo run --release -p ferret-benches --bin typology_pass -- \
//!     --warehouse /tmp/wh [--mode read|scan]
//! ```
//!
//! `read` streams every transaction (with its txid, as the pass does) and does nothing
//! with it; `scan` feeds each one to the pass (`ferret_kernels::typology::btc::Scan`,
//! default rules) and closes it, without naming addresses or writing anything. Prints one
//! JSON line: mode, wall seconds, transactions, findings (`read`: the inputs and outputs
//! seen), peak RSS (VmHWM). The system
//! allocator, as the CLI.

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
        "scan" => {
            let mut scan = Scan::new(BtcRules::default(), HashSet::new(), m.next_address_id)?;
            ferret_kernels::txstream::for_each_tx_from(&wh, &m, 0, true, "bench", |tx| scan.tx(tx))
                .await?;
            (m.next_tx_index, scan.finish().len())
        }
        other => bail!("--mode {other}: read or scan"),
    };
    println!(
        "{{\"mode\":\"{mode}\",\"seconds\":{:.2},\"transactions\":{transactions},\"findings\":{findings},\"peak_rss_bytes\":{}}}",
        t.elapsed().as_secs_f64(),
        peak_rss_bytes()
    );
    Ok(())
}
