//! Generates an account chain straight into a warehouse's `eth.transfers` (the testkit's
//! `synth::account` shapes: exchange hubs, scams and peels, deposit addresses sweeping
//! into the hubs, a token beside ETH) for the out-of-core account benchmarks, or reuses
//! it.
//!
//! ```text
//! cargo run --release -p ferret-benches --bin eth_gen -- \
//!     [--out ~/.cache/ferret/bench-eth] [--blocks 1000000] [--accounts 2000000] \
//!     [--deposits 200000] [--seed 1]
//! ```
//! A file `OUT/config.txt`, written after a complete generation, records the parameters;
//! a directory with the same parameters is reused, one without it is redone.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferret_testkit::synth::account::{AccountConfig, write_chain};

fn main() -> Result<()> {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let mut out = home.join(".cache/ferret/bench-eth");
    let mut cfg = AccountConfig {
        seed: 1,
        blocks: 1_000_000,
        huge: false,
        accounts: 2_000_000,
        deposits: 200_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--out" => out = PathBuf::from(val()?),
            "--blocks" => cfg.blocks = val()?.parse().context("--blocks")?,
            "--accounts" => cfg.accounts = val()?.parse().context("--accounts")?,
            "--deposits" => cfg.deposits = val()?.parse().context("--deposits")?,
            "--seed" => cfg.seed = val()?.parse().context("--seed")?,
            other => bail!("unknown argument {other}"),
        }
    }
    if cfg.accounts < 11 || cfg.blocks < 1 {
        bail!("--accounts must be at least 11 and --blocks at least 1");
    }
    let stamp = format!("{cfg:?}\n");
    let done = out.join("config.txt");
    if std::fs::read_to_string(&done).is_ok_and(|s| s == stamp) {
        println!("reusing {}", out.display());
        return Ok(());
    }
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let wh = out.join("warehouse");
    let url = wh.to_str().context("a UTF-8 path")?.to_string();
    let t = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    let rows = rt.block_on(write_chain(&url, &cfg, 10_000));
    std::fs::write(&done, stamp)?;
    println!(
        "{rows} transfers in {} blocks written to {} in {:.1} s",
        cfg.blocks,
        wh.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
