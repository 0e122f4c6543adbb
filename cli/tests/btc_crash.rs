//! A real `ferret index` process killed with SIGKILL at several points and rerun gives
//! exactly the tables of an uninterrupted run, and leaves exactly the committed files.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::{Chain, Warehouse};
use ferret_testkit::synth::btc::{SynthConfig, generate};

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
    sigkill_runs(
        || index_cmd(blocks_s, wh_s),
        full,
        Duration::from_millis(20),
        wh_s,
        Chain::Btc,
    )
    .await;
    let st = index_cmd(blocks_s, wh_s).status().expect("run");
    assert!(st.success());

    let crashy = Warehouse::open(wh_s).expect("open");
    assert_eq!(dump(&reference).await, dump(&crashy).await);

    // Exactly the committed files are left (plus the one manifest).
    assert_only_committed_files(&wh_path, Chain::Btc).await;
}
