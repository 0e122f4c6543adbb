//! The account-model taint kernels (Ethereum) on a generated transfer graph, in edges per
//! second, on the CPU (rayon) and with `--gpu` on the wgpu adapter, beside the plain
//! sequential pass in chain order that a data team would write first (one thread, one walk
//! over the transfers: the kernels' test oracle).
//!
//! ```text
//! cargo run --release -p ferret-benches --bin account_bench -- \
//!     [--addresses 1000000] [--transfers 5000000] [--seeds 100] [--hops 8] [--reps 3] [--gpu]
//! ```
//!
//! The graph: transfers in chain order between addresses drawn with a heavy tail (a few
//! exchanges and services take part in many transfers, most addresses in few), amounts
//! log-uniform over 12 orders of magnitude. Each row reports the best of `--reps` runs:
//! poison to the fixpoint, haircut pools limited to `--hops` steps and to the fixpoint, and
//! "edges/s" = transfers × steps / time for the Jacobi kernels (every step reads every
//! transfer), transfers / time for the one-pass walks (the CPU's poison, and the
//! sequential haircut pass).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use anyhow::Result;
use ferret_benches::arg;
use ferret_kernels::account::{
    Options, PoolOptions, TransferGraph, flags, poison, poison_jacobi_cpu, pool,
};
use ferret_kernels::device::{Backend, DeviceChoice, select};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn graph(addresses: u32, transfers: usize, seed: u64) -> TransferGraph {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    // Heavy tail: address = floor(n · u^3) puts most transfers on low ids.
    let pick =
        |r: &mut ChaCha8Rng| ((addresses as f64) * r.random::<f64>().powi(3)) as u32 % addresses;
    let mut g = TransferGraph {
        nodes: addresses,
        ..Default::default()
    };
    for _ in 0..transfers {
        g.src.push(pick(&mut r));
        g.dst.push(r.random_range(0..addresses));
        // Whole base units (the pool runs on exact integers).
        g.amount.push(10f32.powf(r.random_range(0.0..12.0)).round());
    }
    g
}

/// The sequential pass in chain order (haircut pools, f64, no hop limit).
fn sequential(g: &TransferGraph, f: &[u32]) -> Vec<f64> {
    let n = g.nodes as usize;
    let (mut b, mut t) = (vec![0f64; n], vec![0f64; n]);
    let mut out = vec![0f64; g.src.len()];
    // `e` indexes the graph's edge arrays and `out` alike.
    #[allow(clippy::needless_range_loop)]
    for e in 0..g.src.len() {
        let (s, d, a) = (g.src[e] as usize, g.dst[e] as usize, f64::from(g.amount[e]));
        let seed = f[s] & 1 != 0;
        if b[s] < a {
            b[s] = a;
        }
        if seed {
            t[s] = b[s];
        }
        let x = if seed {
            a
        } else if t[s] > 0.0 {
            (a * t[s] / b[s]).min(a)
        } else {
            0.0
        };
        out[e] = x;
        b[s] -= a;
        t[s] = (t[s] - x).max(0.0).min(b[s]);
        b[d] += a;
        t[d] += x;
    }
    out
}

fn best<T>(reps: u32, mut f: impl FnMut() -> Result<T>) -> Result<(Duration, T)> {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let r = f()?;
        best = best.min(t.elapsed());
        last = Some(r);
    }
    Ok((best, last.expect("one rep at least")))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addresses: u32 = arg(&args, "--addresses", 1_000_000)?;
    let transfers: usize = arg(&args, "--transfers", 5_000_000)?;
    let nseeds: u32 = arg(&args, "--seeds", 100)?;
    let hops: u32 = arg(&args, "--hops", 8)?;
    let reps: u32 = arg(&args, "--reps", 3)?;
    let gpu = args.iter().any(|a| a == "--gpu");
    let g = graph(addresses, transfers, 1);
    // Seeds among the busy addresses, so taint spreads as it does from a real scam.
    let seeds: Vec<u32> = (0..nseeds).map(|i| i * 7 % addresses.min(10_000)).collect();
    let f = flags(addresses, &seeds, &[])?;
    let m = transfers as f64;
    println!(
        "{addresses} addresses, {transfers} transfers, {} seeds, {} rayon threads\n",
        seeds.len(),
        rayon::current_num_threads()
    );
    println!("| kernel | device | steps | best (s) | edges/s |");
    println!("|---|---|---:|---:|---:|");
    let (t, seq) = best(reps, || Ok(sequential(&g, &f)))?;
    println!(
        "| haircut, sequential pass (one thread) | cpu | 1 | {:.3} | {:.3e} |",
        t.as_secs_f64(),
        m / t.as_secs_f64()
    );
    let mut backends = vec![("cpu", Backend::Cpu)];
    if gpu {
        let b = select(DeviceChoice::Gpu)?;
        eprintln!("gpu: {}", b.describe());
        backends.push(("gpu", b));
    }
    for (name, backend) in &backends {
        let (t, r) = best(reps, || Ok(poison(backend, &g, &f, &Options::default())?))?;
        let reached = r.hop.iter().filter(|&&h| h != u32::MAX).count();
        println!(
            "| poison to the fixpoint ({reached} reached) | {name} | {} | {:.3} | {:.3e} |",
            r.steps,
            t.as_secs_f64(),
            m * f64::from(r.steps) / t.as_secs_f64()
        );
        if *name == "cpu" {
            // The step-by-step twin of the shader, for comparison with the one-pass walk.
            let (t, r) = best(reps, || Ok(poison_jacobi_cpu(&g, &f, &Options::default())))?;
            println!(
                "| poison to the fixpoint, Jacobi steps | cpu | {} | {:.3} | {:.3e} |",
                r.steps,
                t.as_secs_f64(),
                m * f64::from(r.steps) / t.as_secs_f64()
            );
        }
        let opts = PoolOptions {
            max_hops: Some(hops),
            ..Default::default()
        };
        let (t, r) = best(reps, || Ok(pool(backend, &g, &f, &opts)?))?;
        println!(
            "| haircut pools, {hops} hops | {name} | {} | {:.3} | {:.3e} |",
            r.steps,
            t.as_secs_f64(),
            m * f64::from(r.steps) / t.as_secs_f64()
        );
        let (t, r) = best(reps, || Ok(pool(backend, &g, &f, &PoolOptions::default())?))?;
        // The fixpoint equals the sequential pass: say how closely.
        let worst = r
            .tainted(&g)
            .iter()
            .zip(&seq)
            .map(|(&x, &y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0f64, f64::max);
        println!(
            "| haircut pools to the fixpoint (max rel. diff to the pass {worst:.1e}) | {name} | {} | {:.3} | {:.3e} |",
            r.steps,
            t.as_secs_f64(),
            m * f64::from(r.steps) / t.as_secs_f64()
        );
    }
    Ok(())
}
