//! Crashes at every step of a commit, without timing luck: `FERRET_FAILPOINT` aborts the
//! real `ferret` process at a named point (after a data file, before or after the
//! manifest PUT, while collecting garbage, between a run's files and its results commit).
//! Each crash is followed by a clean rerun, which must equal an uninterrupted run and
//! leave exactly the committed files; a crashed result run leaves every result table on
//! one run, old or new.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::{Chain, Warehouse};
use ferret_testkit::synth::btc::{SynthConfig, generate};

fn index(blocks: &Path, wh: &str, failpoint: Option<&str>) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferret"));
    c.args([
        "index",
        "btc",
        "--blocks-dir",
        blocks.to_str().expect("utf8"),
        "--warehouse",
        wh,
        "--commit-blocks",
        "10",
    ])
    .env("FERRET_LOG", "warn");
    if let Some(f) = failpoint {
        c.env("FERRET_FAILPOINT", f);
    }
    c.output().expect("run ferret")
}

#[tokio::test]
async fn a_crash_at_every_commit_step_then_rerun_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = SynthConfig {
        blocks: 50,
        seed: 11,
        txs_per_block: 12,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let blocks = tmp.path().join("blocks");
    let reference = Warehouse::open("memory://failpoints-reference").expect("open");
    index_btc(&reference, &IndexOptions::new(&blocks))
        .await
        .expect("index");
    let want = dump(&reference).await;

    // (failpoint, reruns that crash again at another point before the clean one)
    let cases: &[(&str, &[&str])] = &[
        ("data-file-written:1", &[]),
        ("data-file-written:6", &[]),
        ("before-manifest-put:1", &[]),
        ("before-manifest-put:3", &[]),
        ("after-manifest-put:2", &[]),
        // The rerun finds the crashed run's files and crashes while deleting them.
        ("data-file-written:7", &["gc-deleting:1"]),
    ];
    for (i, (first, then)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("wh{i}"));
        let wh = dir.to_str().expect("utf8");
        for f in std::iter::once(first).chain(then.iter()) {
            let out = index(&blocks, wh, Some(f));
            assert!(!out.status.success(), "{f}: the failpoint did not fire");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("failpoint"), "{f}: {err}");
        }
        // A reader meanwhile sees a committed state, never an error or half a commit.
        let partial = Warehouse::open(wh).expect("open");
        if partial
            .load_manifest(Chain::Btc)
            .await
            .expect("readable")
            .is_some()
        {
            let tip = scalar(&partial, "SELECT max(height) FROM btc.blocks").await;
            let n = scalar(&partial, "SELECT count(*) FROM btc.blocks").await;
            assert_eq!(
                tip.parse::<u64>().expect("tip") + 1,
                n.parse::<u64>().expect("n"),
                "{first}: whole blocks only"
            );
        }
        let out = index(&blocks, wh, None);
        assert!(
            out.status.success(),
            "{first}: rerun: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = Warehouse::open(wh).expect("open");
        assert_eq!(dump(&got).await, want, "{first}: rerun differs");
        assert_only_committed_files(&dir, Chain::Btc).await;
    }
}

#[tokio::test]
async fn a_crashed_result_run_leaves_every_result_table_on_one_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = SynthConfig {
        blocks: 60,
        seed: 4,
        txs_per_block: 20,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh_dir = tmp.path().join("wh");
    let wh = wh_dir.to_str().expect("utf8");
    index_btc_cli(&tmp.path().join("blocks"), wh);
    ok(ferret(&[
        "labels",
        "import",
        "--warehouse",
        wh,
        tmp.path().join("truth/labels.csv").to_str().expect("utf8"),
    ]));
    let taint = |failpoint: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferret"));
        c.args([
            "taint",
            "btc",
            "--warehouse",
            wh,
            "--seed-category",
            "scam",
            "--device",
            "cpu",
        ])
        .env("FERRET_LOG", "warn");
        if let Some(f) = failpoint {
            c.env("FERRET_FAILPOINT", f);
        }
        c.output().expect("run")
    };
    assert!(taint(None).status.success());
    let w = Warehouse::open(wh).expect("open");
    let runs = |w: Warehouse| async move {
        let a = scalar(&w, "SELECT count(DISTINCT run_id) FROM taint").await;
        let b = scalar(
            &w,
            "SELECT count(*) FROM (SELECT DISTINCT run_id FROM taint UNION SELECT DISTINCT run_id FROM exits)",
        )
        .await;
        let id = scalar(&w, "SELECT min(run_id) FROM taint").await;
        (a, b, id)
    };
    let (_, _, first_run) = runs(w.clone()).await;
    for (f, new_run) in [
        ("run-file-written:1", false),
        ("run-file-written:2", false),
        ("before-results-commit:1", false),
        ("after-results-commit:1", true),
    ] {
        let before = runs(w.clone()).await.2;
        let out = taint(Some(f));
        assert!(!out.status.success(), "{f}: the failpoint did not fire");
        let (a, b, id) = runs(w.clone()).await;
        assert_eq!(
            (a.as_str(), b.as_str()),
            ("1", "1"),
            "{f}: taint and exits on one run"
        );
        assert_eq!(id != before, new_run, "{f}: run {id} (before {before})");
    }
    assert_ne!(first_run, runs(w).await.2);
}

/// A reorganisation's unwind crashed after it rewrote the files across the fork, and
/// before its commit: the committed state stays the old branch, and the rerun unwinds and
/// equals a fresh index of the new chain.
#[tokio::test]
async fn a_crash_during_a_reorg_unwind_then_rerun_equals_a_fresh_index() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fork = Fork::find(tmp.path());
    let early = tmp.path().join("early");
    write_blocks_dir(&early, std::slice::from_ref(&fork.early));
    let late = tmp.path().join("late");
    write_blocks_dir(&late, std::slice::from_ref(&fork.all));
    let fresh = Warehouse::open("memory://failpoints-reorg-fresh").expect("open");
    index_btc(&fresh, &IndexOptions::new(&late))
        .await
        .expect("fresh");
    let want = dump(&fresh).await;
    for (i, f) in ["unwind-files-written:1", "before-manifest-put:1"]
        .iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("reorg{i}"));
        let wh = dir.to_str().expect("utf8");
        let out = index(&early, wh, None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = dump(&Warehouse::open(wh).expect("open")).await;
        let out = index(&late, wh, Some(f));
        assert!(!out.status.success(), "{f}: the failpoint did not fire");
        assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint"));
        assert_eq!(
            dump(&Warehouse::open(wh).expect("open")).await,
            before,
            "{f}: the crashed unwind changed nothing committed"
        );
        let out = index(&late, wh, None);
        assert!(
            out.status.success(),
            "{f}: rerun: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("unwound 2 committed blocks"),
            "{f}"
        );
        assert_eq!(dump(&Warehouse::open(wh).expect("open")).await, want, "{f}");
        assert_only_committed_files(&dir, Chain::Btc).await;
    }
}
