//! A real `ferret index eth` process killed with SIGKILL at several points and rerun gives
//! exactly the tables of an uninterrupted run, and leaves exactly the committed files.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferret_indexer::eth::{EthOptions, index_eth};
use ferret_schemas::{Chain, Warehouse};
use ferret_testkit::synth::eth::{EthSynthConfig, generate};

fn index_cmd(rpc: &str, wh: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferret"));
    c.args([
        "index",
        "eth",
        "--rpc",
        rpc,
        "--warehouse",
        wh,
        "--commit-blocks",
        "2",
        "--batch",
        "1",
        "--concurrency",
        "1",
    ])
    .env("FERRET_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_point_then_rerun_equals_an_uninterrupted_run() {
    let Some(node) = anvil(&[]).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(
        node.url(),
        &EthSynthConfig {
            seed: 3,
            ..Default::default()
        },
        tmp.path(),
    )
    .await
    .expect("scenario");

    // Reference: uninterrupted, in one commit (the file layout must not matter).
    let reference = Warehouse::open("memory://eth-crash-reference").expect("open");
    index_eth(&reference, &EthOptions::new(node.url()), None)
        .await
        .expect("index");

    let probe = tmp.path().join("probe");
    let t = Instant::now();
    assert!(
        index_cmd(node.url(), probe.to_str().expect("utf8"))
            .status()
            .expect("run")
            .success()
    );
    let full = t.elapsed();

    let wh_path = tmp.path().join("crashy");
    let wh_s = wh_path.to_str().expect("utf8");
    sigkill_runs(
        || index_cmd(node.url(), wh_s),
        full,
        Duration::from_millis(10),
        wh_s,
        Chain::Eth,
    )
    .await;
    assert!(index_cmd(node.url(), wh_s).status().expect("run").success());

    let crashy = Warehouse::open(wh_s).expect("open");
    assert_eq!(
        dump_chain(&reference, Chain::Eth).await,
        dump_chain(&crashy, Chain::Eth).await
    );

    // Exactly the committed files are left (plus the one manifest).
    assert_only_committed_files(&wh_path, Chain::Eth).await;
}

/// A crash at each step of an Ethereum commit (`FERRET_FAILPOINT`, no timing luck), then a
/// rerun: the same tables as an uninterrupted run, only committed files left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_commit_step_then_rerun_equals_an_uninterrupted_run() {
    let Some(node) = anvil(&[]).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(
        node.url(),
        &EthSynthConfig {
            seed: 5,
            ..Default::default()
        },
        tmp.path(),
    )
    .await
    .expect("scenario");
    let reference = Warehouse::open("memory://eth-failpoint-reference").expect("open");
    index_eth(&reference, &EthOptions::new(node.url()), None)
        .await
        .expect("index");
    let want = dump_chain(&reference, Chain::Eth).await;
    for (i, f) in [
        "data-file-written:1",
        "data-file-written:9",
        "before-manifest-put:2",
        "after-manifest-put:3",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("wh{i}"));
        let wh = dir.to_str().expect("utf8");
        let out = index_cmd(node.url(), wh)
            .env("FERRET_FAILPOINT", f)
            .status()
            .expect("run");
        assert!(!out.success(), "{f}: the failpoint did not fire");
        assert!(
            index_cmd(node.url(), wh).status().expect("run").success(),
            "{f}: rerun"
        );
        let got = Warehouse::open(wh).expect("open");
        assert_eq!(dump_chain(&got, Chain::Eth).await, want, "{f}");
        assert_only_committed_files(&dir, Chain::Eth).await;
    }
}
