//! Two writers interleaved at failpoints, without timing luck: `FERRET_FAILPOINT=…=stop`
//! freezes a real `ferret index btc` process with SIGSTOP at a named step (its lease
//! renewals with it, as a paused VM or a long GC pause would), a second writer runs
//! meanwhile, and the first is continued with SIGCONT.
//!
//! - On an object store (SeaweedFS) the frozen writer's lease expires and the second
//!   takes it over. Woken up, the stale writer must do no harm: not delete the new
//!   holder's in-flight files while collecting garbage, not commit a manifest. The new
//!   holder, itself frozen for a while, must still finish, and the result must equal an
//!   uninterrupted run.
//! - On a local warehouse the frozen writer keeps its lock: the second is refused, the
//!   first finishes when continued.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::{Chain, Warehouse};
use ferret_testkit::synth::btc::{SynthConfig, generate};
use futures::TryStreamExt;

/// The lease's time to live in these tests, seconds.
const TTL: u64 = 2;

fn spawn_index(blocks: &Path, wh: &str, failpoint: Option<&str>) -> Child {
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
    .env("FERRET_LOG", "warn")
    .env("FERRET_LEASE_TTL_SECS", TTL.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(f) = failpoint {
        c.env("FERRET_FAILPOINT", f);
    }
    c.spawn().expect("start ferret")
}

/// Waits until the process is stopped (state `T` in /proc), failing if it exits first.
fn wait_stopped(child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        if state == Some('T') {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let out = child.stderr.take().map(|mut e| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).ok();
                s
            });
            panic!("{what} exited ({status}) before its failpoint: {out:?}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} never reached its failpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn resume(child: &Child) {
    let ok = Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .status()
        .expect("kill -CONT");
    assert!(ok.success());
}

fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chain(dir: &Path) -> std::path::PathBuf {
    let cfg = SynthConfig {
        blocks: 50,
        seed: 17,
        txs_per_block: 12,
        ..Default::default()
    };
    generate(&cfg, dir).expect("generate");
    dir.join("blocks")
}

async fn reference(blocks: &Path) -> Vec<String> {
    let wh = Warehouse::open(&format!(
        "memory://interleaved-{}",
        ferret_schemas::results::new_run_id()
    ))
    .expect("open");
    index_btc(&wh, &IndexOptions::new(blocks))
        .await
        .expect("index");
    dump(&wh).await
}

/// The Parquet objects under the chain's prefix, warehouse-relative.
async fn data_objects(wh: &Warehouse) -> Vec<String> {
    let prefix = wh.root().clone().join("btc");
    let mut v: Vec<String> = wh
        .store()
        .list(Some(&prefix))
        .map_ok(|m| wh.relative(&m.location))
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_stale_writer_woken_after_a_takeover_does_no_harm_on_an_object_store() {
    let Ok(bucket) = std::env::var("FERRET_S3_BUCKET") else {
        assert!(
            !require_all(),
            "FERRET_S3_BUCKET is not set: scripts/test.sh starts SeaweedFS and sets it"
        );
        eprintln!("skipping: FERRET_S3_BUCKET unset (scripts/test.sh starts SeaweedFS)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = chain(tmp.path());
    let want = reference(&blocks).await;

    // (where the first writer freezes, where the second does: None runs it through)
    let cases: &[(&str, Option<&str>)] = &[
        // Frozen after checking its lease, before listing garbage: woken while the new
        // holder has a chunk's files in flight, it must not delete them.
        ("gc-listing:1=stop", Some("data-file-written:3=stop")),
        // Frozen as it deletes an earlier crash's garbage, the same.
        ("gc-deleting:1=stop", Some("data-file-written:3=stop")),
        // Frozen with a chunk's files half written: the new holder collects them as
        // garbage and indexes everything; woken, the stale writer must not commit.
        ("data-file-written:2=stop", None),
        // Frozen just before its second manifest PUT, the same.
        ("before-manifest-put:2=stop", None),
        // Frozen right after a commit: woken, it must not commit the next chunk.
        ("after-manifest-put:1=stop", None),
    ];
    for (i, (first, second)) in cases.iter().enumerate() {
        let url = format!(
            "s3://{bucket}/interleaved-{i}-{}",
            ferret_schemas::results::new_run_id()
        );
        if first.starts_with("gc-deleting") {
            // Garbage for the first writer to collect: a run crashed mid-chunk.
            let (ok, err) = finish(spawn_index(&blocks, &url, Some("data-file-written:2")));
            assert!(!ok && err.contains("failpoint"), "{err}");
            // Its lease expires.
            std::thread::sleep(Duration::from_secs(TTL + 1));
        }
        let mut a = spawn_index(&blocks, &url, Some(first));
        wait_stopped(&mut a, "the first writer");
        // Past the frozen writer's lease.
        std::thread::sleep(Duration::from_secs(TTL + 2));
        let mut b = spawn_index(&blocks, &url, *second);
        if second.is_some() {
            wait_stopped(&mut b, "the second writer");
            let wh = Warehouse::open(&url).expect("open");
            let in_flight = data_objects(&wh).await;
            assert!(
                !in_flight.is_empty(),
                "{first}: the second writer has files in flight"
            );
            resume(&a);
            let (ok, err) = finish(a);
            assert!(!ok, "{first}: the stale writer must fail");
            assert!(err.contains("lease"), "{first}: {err}");
            for f in &in_flight {
                assert!(
                    data_objects(&wh).await.contains(f),
                    "{first}: the stale writer deleted the new holder's in-flight {f}"
                );
            }
            // The new holder was frozen past its own lease time: nobody took it over, so
            // it renews and finishes.
            std::thread::sleep(Duration::from_secs(TTL + 1));
            resume(&b);
            let (ok, err) = finish(b);
            assert!(ok, "{first}: the new holder finishes: {err}");
        } else {
            let (ok, err) = finish(b);
            assert!(
                ok,
                "{first}: the second writer takes over and finishes: {err}"
            );
            resume(&a);
            let (ok, err) = finish(a);
            assert!(!ok, "{first}: the stale writer must fail");
            assert!(
                err.contains("lease") || err.contains("conflict"),
                "{first}: {err}"
            );
        }
        let wh = Warehouse::open(&url).expect("open");
        assert_eq!(
            dump(&wh).await,
            want,
            "{first}: differs from an uninterrupted run"
        );
        // A rerun has nothing to index and collects what the stale writer left.
        let (ok, err) = finish(spawn_index(&blocks, &url, None));
        assert!(ok, "{first}: rerun: {err}");
        let m = wh
            .load_manifest(Chain::Btc)
            .await
            .expect("load")
            .expect("committed");
        let mut listed: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
        listed.sort();
        assert_eq!(
            data_objects(&wh).await,
            listed,
            "{first}: only committed files"
        );
    }
}

#[tokio::test]
async fn a_frozen_local_writer_keeps_its_lock_and_finishes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = chain(tmp.path());
    let want = reference(&blocks).await;
    for (i, first) in [
        "gc-listing:1=stop",
        "data-file-written:5=stop",
        "before-manifest-put:2=stop",
        "after-manifest-put:2=stop",
    ]
    .iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("wh{i}"));
        let wh = dir.to_str().expect("utf8");
        let mut a = spawn_index(&blocks, wh, Some(first));
        wait_stopped(&mut a, "the first writer");
        std::thread::sleep(Duration::from_secs(TTL + 1));
        let (ok, err) = finish(spawn_index(&blocks, wh, None));
        assert!(
            !ok,
            "{first}: a second writer is refused while the first is frozen"
        );
        assert!(err.contains("holds the lease"), "{first}: {err}");
        resume(&a);
        let (ok, err) = finish(a);
        assert!(ok, "{first}: the frozen writer finishes: {err}");
        let got = Warehouse::open(wh).expect("open");
        assert_eq!(dump(&got).await, want, "{first}");
        assert_only_committed_files(&dir, Chain::Btc).await;
    }
}
