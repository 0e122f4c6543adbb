//! Taint on an indexed warehouse, in memory and out of core on the committed spend graph
//! (`btc.spends`), one path per process so each peak RSS is its own.
//!
//! ```text
//! cargo run --release -p ferret-benches --bin stored_taint -- \
//!     --warehouse /tmp/szwh --labels /tmp/sz/truth/labels.csv [--category scam] \
//!     [--policy haircut] [--direction forward] [--hops 0] [--mem-mb 256] \
//!     [--path memory|stored]
//! ```
//!
//! Seeds: every address of `--category` in the labels CSV (`address,label,category`).
//! `--hops 0` runs to the fixpoint. Prints one JSON line: path, wall seconds (graph load
//! or seed look-up included), steps, tainted outputs, the sum of tainted value, peak RSS
//! (VmHWM) and, for the stored path, the engine's counters.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferret_benches::{arg, peak_rss_bytes};
use ferret_kernels::blocked::Budget;
use ferret_kernels::device::Backend;
use ferret_kernels::taint::stored::{StoredQuery, resolve_seeds, run_stored_with};
use ferret_kernels::taint::{Direction, Policy, Query, SpendGraph, run, seed_outputs};
use ferret_schemas::{Chain, Warehouse};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let wh_url: String = arg(&args, "--warehouse", String::new())?;
    let labels: String = arg(&args, "--labels", String::new())?;
    if wh_url.is_empty() || labels.is_empty() {
        bail!("--warehouse and --labels are required");
    }
    let category: String = arg(&args, "--category", "scam".to_string())?;
    let policy: Policy = arg::<String>(&args, "--policy", "haircut".into())?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let direction: Direction = arg::<String>(&args, "--direction", "forward".into())?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let hops: u32 = arg(&args, "--hops", 0)?;
    let mem_mb: usize = arg(&args, "--mem-mb", 256)?;
    let path: String = arg(&args, "--path", "stored".to_string())?;
    // Only the first N seed addresses (0: all), for runs that touch a small share.
    let first_seeds: usize = arg(&args, "--seeds", 0)?;
    let seeds: Vec<String> = std::fs::read_to_string(&labels)
        .with_context(|| labels.clone())?
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.get(2) == Some(&category.as_str())).then(|| f[0].to_string())
        })
        .collect();
    let seeds: Vec<String> = if first_seeds > 0 {
        seeds.into_iter().take(first_seeds).collect()
    } else {
        seeds
    };
    let wh = Warehouse::open(&wh_url)?;
    let max_hops = (hops > 0).then_some(hops);
    let t = Instant::now();
    let (steps, rows, tainted, extra) = match path.as_str() {
        "memory" => {
            let g = SpendGraph::from_warehouse(&wh).await?;
            let ids: Vec<u32> = seeds.iter().filter_map(|a| g.address_id(a)).collect();
            let q = Query {
                policy,
                direction,
                max_hops,
                min_value: 0,
                seed_outputs: seed_outputs(&g, &ids, &[]),
                stop_addresses: HashSet::new(),
                blocked_txs: HashSet::new(),
            };
            let r = run(&Backend::Cpu, &g, &q)?;
            let sum: i64 = r.rows.iter().map(|x| x.tainted_value).sum();
            (r.steps, r.rows.len(), sum, serde_json::json!({}))
        }
        "stored" => {
            let m = wh
                .load_manifest(Chain::Btc)
                .await?
                .context("nothing indexed")?;
            let seeds = resolve_seeds(&wh, &m, &seeds, &[]).await?;
            let q = StoredQuery {
                policy,
                direction,
                max_hops,
                min_value: 0,
                seeds,
                stop_addresses: HashSet::new(),
                blocked_txs: HashSet::new(),
            };
            let scratch = tempfile::tempdir()?;
            let budget = Budget {
                mem_bytes: mem_mb << 20,
                scratch: scratch.path().to_path_buf(),
            };
            // The rows are counted and summed as they come, never all held.
            let (steps, stats, rows, sum) = tokio::task::spawn_blocking(move || {
                let (mut rows, mut sum) = (0usize, 0i64);
                let (steps, stats) = run_stored_with(&wh, &q, &budget, &mut |r| {
                    rows += r.len();
                    sum += r.iter().map(|x| x.tainted_value).sum::<i64>();
                    Ok(())
                })?;
                anyhow::Ok((steps, stats, rows, sum))
            })
            .await??;
            let s = &stats;
            (
                steps,
                rows,
                sum,
                serde_json::json!({
                    "chunk_loads": s.chunk_loads,
                    "chunks_swept": s.chunks_swept,
                    "chunks_skipped": s.chunks_skipped,
                    "edges_swept": s.edges_swept,
                    "blocks_spilled": s.blocks_spilled,
                    "blocks_reloaded": s.blocks_reloaded,
                    "peak_cached_mb": s.peak_cached_bytes as f64 / 1048576.0,
                    "load_secs": s.load_secs,
                    "sum_secs": s.sum_secs,
                    "edges_per_sec_summing": s.edges_swept as f64 / s.sum_secs.max(1e-9),
                    "edges_per_step": s.edges_swept as f64 / f64::from(steps.max(1)),
                }),
            )
        }
        other => bail!("--path {other}: memory or stored"),
    };
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "path": path,
            "policy": policy.as_str(),
            "direction": direction.as_str(),
            "mem_mb": mem_mb,
            "seconds": secs,
            "steps": steps,
            "tainted_outputs": rows,
            "tainted_value": tainted,
            "peak_rss_mb": peak_rss_bytes() as f64 / 1048576.0,
            "engine": extra,
        })
    );
    Ok(())
}
