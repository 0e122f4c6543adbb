//! A real `ferret index` process killed with SIGKILL at several points and rerun gives
//! exactly the tables of an uninterrupted run, and leaves exactly the committed files.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::synth::btc::{SynthConfig, generate};
use ferret_schemas::{Chain, Warehouse};

fn index_cmd(blocks: &str, wh: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferret"));
    c.args([
        "index",
        "btc",
        "--blocks-dir",
        blocks,
        "--warehouse",
        wh,
        "--commit-blocks",
        "9",
    ])
    .env("FERRET_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

#[tokio::test]
async fn sigkill_at_any_point_then_rerun_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 240,
        seed: 5,
        txs_per_block: 60,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let blocks = tmp.path().join("blocks");
    let blocks_s = blocks.to_str().expect("utf8");

    // Reference: uninterrupted, with different chunking (file layout must not matter).
    let reference = Warehouse::open("memory://crash-reference").expect("open");
    index_btc(&reference, &IndexOptions::new(&blocks))
        .await
        .expect("index");

    // How long an uninterrupted process run takes, to spread the kills over it.
    let probe = tmp.path().join("probe");
    let t = Instant::now();
    let st = index_cmd(blocks_s, probe.to_str().expect("utf8"))
        .status()
        .expect("run");
    assert!(st.success());
    let full = t.elapsed();

    let wh_path = tmp.path().join("crashy");
    let wh_s = wh_path.to_str().expect("utf8");
    let mut kills = 0;
    let mut tips = Vec::new();
    for i in 1..=6u32 {
        let mut child = index_cmd(blocks_s, wh_s).spawn().expect("spawn");
        std::thread::sleep(
            full.mul_f64(0.12 * f64::from(i)).min(full) / 2 + Duration::from_millis(20),
        );
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
            kills += 1;
        }
        child.wait().expect("reap");
        let wh = Warehouse::open(wh_s).expect("open");
        tips.push(
            wh.load_manifest(Chain::Btc)
                .await
                .expect("manifest")
                .and_then(|m| m.tip)
                .map(|t| t.height),
        );
    }
    eprintln!("killed {kills} times; committed tips after each: {tips:?}");
    assert!(
        kills >= 3,
        "the kills must land mid-run (full run {full:?})"
    );
    let st = index_cmd(blocks_s, wh_s).status().expect("run");
    assert!(st.success());

    let crashy = Warehouse::open(wh_s).expect("open");
    assert_eq!(dump(&reference).await, dump(&crashy).await);

    // Exactly the committed files are left (plus the one manifest).
    assert_only_committed_files(&wh_path, Chain::Btc).await;
}
