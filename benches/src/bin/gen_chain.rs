//! Generates the benchmark chain with Ferret's synthetic generator, or reuses it.
//!
//! ```text
//! cargo run --release -p ferret-benches --bin gen_chain -- \
//!     [--out ~/.cache/ferret/bench-chain] [--blocks 2500] [--txs-per-block 800] [--seed 1] [--xor]
//! ```
//! The chain goes to `OUT/blocks` (a Bitcoin Core blocks directory, regtest). A file
//! `OUT/config.txt` written after a complete generation records the parameters; a directory
//! with the same parameters is reused, one without the file (an interrupted run) is redone.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferret_testkit::synth::btc::{SynthConfig, generate};

fn default_out() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/ferret/bench-chain")
}

fn main() -> Result<()> {
    let mut out = default_out();
    let mut cfg = SynthConfig {
        blocks: 2500,
        txs_per_block: 800,
        ..SynthConfig::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--out" => out = PathBuf::from(val()?),
            "--blocks" => cfg.blocks = val()?.parse()?,
            "--txs-per-block" => cfg.txs_per_block = val()?.parse()?,
            "--seed" => cfg.seed = val()?.parse()?,
            "--xor" => cfg.xor = true,
            "-h" | "--help" => {
                println!(
                    "gen_chain [--out DIR] [--blocks N] [--txs-per-block N] [--seed N] [--xor]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let marker = out.join("config.txt");
    let want = format!("{cfg:?}\n");
    if let Ok(have) = std::fs::read_to_string(&marker) {
        if have == want {
            let bytes = ferret_benches::blk_bytes(&out.join("blocks"))?;
            println!(
                "reusing {} ({:.1} MB of blk files)",
                out.join("blocks").display(),
                bytes as f64 / 1e6
            );
            return Ok(());
        }
        bail!(
            "{} holds a chain generated with other parameters:\n{have}remove it or pass another --out",
            out.display()
        );
    }
    // No marker: absent, or an interrupted generation. Start over.
    for sub in ["blocks", "truth"] {
        let p = out.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let started = Instant::now();
    let s = generate(&cfg, &out).with_context(|| format!("generating into {}", out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::write(&marker, want)?;
    println!(
        "generated {} in {secs:.1} s: {} best-chain blocks, {} stale, {} transactions ({:.0} tx/s), {} blk files, {:.1} MB",
        out.join("blocks").display(),
        s.blocks,
        s.stale_blocks,
        s.transactions,
        s.transactions as f64 / secs,
        s.blk_files,
        s.blk_bytes as f64 / 1e6
    );
    Ok(())
}
