//! The committed warehouse under hostile conditions, through the real `ferret` binary: an
//! overlapping writer is refused and changes nothing, a moved or copied warehouse reads its
//! own files, damage is an error naming what is wrong (never "fewer rows" and never a
//! rerun that deletes the data), and a typo'd warehouse path is not created.

mod common;

use std::path::Path;

use common::*;
use ferret_schemas::{Chain, Warehouse};
use ferret_testkit::synth::btc::{SynthConfig, generate};

fn chain(dir: &Path) -> std::path::PathBuf {
    let cfg = SynthConfig {
        blocks: 60,
        seed: 3,
        txs_per_block: 20,
        ..Default::default()
    };
    generate(&cfg, dir).expect("generate");
    dir.join("blocks")
}

fn sql(wh: &str, q: &str) -> std::process::Output {
    ferret(&["sql", "--warehouse", wh, "--format", "csv", q])
}

fn counts(wh: &str) -> String {
    ok(sql(
        wh,
        "SELECT (SELECT count(*) FROM btc.transactions) AS t, (SELECT count(*) FROM btc.outputs) AS o, (SELECT count(*) FROM btc.inputs) AS i",
    ))
}

fn fails_with(out: std::process::Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected a failure mentioning `{needle}`, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    err
}

fn data_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn an_overlapping_writer_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = chain(tmp.path());
    let wh_dir = tmp.path().join("wh");
    let wh = wh_dir.to_str().expect("utf8");
    index_btc_cli(&blocks, wh);
    let before = counts(wh);
    let files = data_files(&wh_dir);
    // Another writer holds the lease (as a running indexer would): a second indexer is
    // refused before it touches anything, and says who holds it.
    let w = Warehouse::open(wh).expect("open");
    let lease = w.writer_lease(Chain::Btc).await.expect("lease");
    let out = ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        blocks.to_str().expect("utf8"),
        "--warehouse",
        wh,
    ]);
    let err = fails_with(out, "another writer holds the lease");
    assert!(err.contains(lease.attempt()), "{err}");
    assert_eq!(
        data_files(&wh_dir),
        files,
        "the refused writer deleted nothing"
    );
    // Readers are not blocked by a writer.
    assert_eq!(counts(wh), before);
    lease.release().await;
    let out = ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        blocks.to_str().expect("utf8"),
        "--warehouse",
        wh,
    ]);
    ok(out);
    assert_eq!(counts(wh), before);
}

#[tokio::test]
async fn a_moved_or_copied_warehouse_reads_its_own_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = chain(tmp.path());
    let first = tmp.path().join("wh");
    index_btc_cli(&blocks, first.to_str().expect("utf8"));
    let before = counts(first.to_str().expect("utf8"));
    let moved = tmp.path().join("wh2");
    std::fs::rename(&first, &moved).expect("mv");
    let moved_s = moved.to_str().expect("utf8");
    assert_eq!(
        counts(moved_s),
        before,
        "a moved warehouse reads the same rows"
    );
    let files = data_files(&moved);
    // Indexing the moved warehouse finds nothing new and deletes nothing.
    ok(ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        blocks.to_str().expect("utf8"),
        "--warehouse",
        moved_s,
    ]));
    assert_eq!(data_files(&moved), files);
    // A copy reads its own files: with the original gone, it still answers.
    let copy = tmp.path().join("copy");
    let st = std::process::Command::new("cp")
        .args(["-a", moved_s, copy.to_str().expect("utf8")])
        .status()
        .expect("cp");
    assert!(st.success());
    std::fs::remove_dir_all(&moved).expect("rm");
    assert_eq!(counts(copy.to_str().expect("utf8")), before);
}

#[tokio::test]
async fn damage_is_an_error_never_fewer_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = chain(tmp.path());
    let blocks_s = blocks.to_str().expect("utf8");
    let index = |wh: &str| ferret(&["index", "btc", "--blocks-dir", blocks_s, "--warehouse", wh]);
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        index_btc_cli(&blocks, dir.to_str().expect("utf8"));
        dir
    };

    // A committed data file deleted: reads and the indexer fail, naming it.
    let dir = fresh("deleted");
    let wh = dir.to_str().expect("utf8");
    let victim = data_files(&dir.join("btc/outputs"))
        .into_iter()
        .next()
        .expect("an outputs file");
    std::fs::remove_file(&victim).expect("rm");
    let name = victim.file_name().expect("name").to_str().expect("utf8");
    let files = data_files(&dir);
    fails_with(sql(wh, "SELECT count(*) FROM btc.outputs"), name);
    fails_with(index(wh), name);
    assert_eq!(data_files(&dir), files, "the indexer deleted nothing");

    // A committed file grown or cut: its size is checked.
    let dir = fresh("resized");
    let wh = dir.to_str().expect("utf8");
    let victim = data_files(&dir.join("btc/inputs"))
        .into_iter()
        .next()
        .expect("an inputs file");
    let mut bytes = std::fs::read(&victim).expect("read");
    bytes.push(0);
    std::fs::write(&victim, &bytes).expect("write");
    fails_with(
        sql(wh, "SELECT count(*) FROM btc.inputs"),
        "the manifest recorded",
    );

    // The newest manifest deleted, replaced by a directory, or `_state` replaced by a
    // file: an error, and the indexer does not start over (which would delete the data).
    for (case, damage) in [("no-manifest", 0), ("manifest-dir", 1), ("state-file", 2)] {
        let dir = fresh(case);
        let wh = dir.to_str().expect("utf8");
        let state = dir.join("btc/_state");
        let manifest = walk(&state)
            .into_iter()
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("manifest-"))
            })
            .expect("a manifest");
        match damage {
            0 => std::fs::remove_file(&manifest).expect("rm"),
            1 => {
                std::fs::remove_file(&manifest).expect("rm");
                std::fs::create_dir_all(manifest.join("inside")).expect("mkdir");
            }
            _ => {
                std::fs::remove_dir_all(&state).expect("rm");
                std::fs::write(&state, b"not a directory").expect("write");
            }
        }
        let files = data_files(&dir);
        fails_with(
            sql(wh, "SELECT count(*) FROM btc.blocks"),
            "damaged warehouse",
        );
        let out = index(wh);
        assert!(!out.status.success(), "{case}: the indexer must refuse");
        assert_eq!(data_files(&dir), files, "{case}: nothing deleted");
    }
}

#[test]
fn a_typo_in_the_warehouse_path_is_an_error_not_an_empty_warehouse() {
    let tmp = tempfile::tempdir().expect("tmp");
    let typo = tmp.path().join("no-such-warehouse");
    fails_with(
        sql(
            typo.to_str().expect("utf8"),
            "SELECT count(*) FROM btc.blocks",
        ),
        "no warehouse at",
    );
    assert!(!typo.exists(), "the reader did not create it");
}

#[test]
fn an_object_store_that_never_answers_fails_in_bounded_time() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let _hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "sql",
            "--warehouse",
            "s3://silent/wh",
            "--store-timeout",
            "1",
            "SELECT count(*) FROM btc.blocks",
        ])
        // The test environment's own S3 emulator must not answer instead.
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .env("FERRET_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Generous: the run must end by itself (request timeout 1 s, retries within 3 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferret sql hung on a silent object store");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("timed out") && err.contains("wh/btc/_state"),
        "a timeout naming where: {err}"
    );
}

#[tokio::test]
async fn flipped_bytes_are_caught_by_verify() {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = chain(tmp.path());
    let dir = tmp.path().join("wh");
    let wh = dir.to_str().expect("utf8");
    index_btc_cli(&blocks, wh);
    let out = ok(ferret(&["verify", "--warehouse", wh]));
    // One commit: one file per table.
    let tables = ferret_schemas::tables_of(ferret_schemas::Chain::Btc).count();
    assert!(
        out.contains(&format!("btc: {tables} files")) && out.contains("match their SHA-256"),
        "{out}"
    );
    // One byte flipped in the middle of a committed file: the size is unchanged, so only
    // the checksum can tell.
    let victim = data_files(&dir.join("btc/transactions"))
        .into_iter()
        .next()
        .expect("a transactions file");
    let mut bytes = std::fs::read(&victim).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, &bytes).expect("write");
    let name = victim.file_name().expect("name").to_str().expect("utf8");
    let err = fails_with(ferret(&["verify", "--warehouse", wh]), name);
    assert!(err.contains("SHA-256"), "{err}");
}

/// Result runs fail closed too: a deleted result file is an error naming it (never an
/// empty `taint`), a resized one likewise, and a flipped byte is caught by verify.
#[tokio::test]
async fn damaged_result_runs_are_errors_never_empty_results() {
    let tmp = tempfile::tempdir().expect("tmp");
    let blocks = chain(tmp.path());
    let dir = tmp.path().join("wh");
    let wh = dir.to_str().expect("utf8");
    index_btc_cli(&blocks, wh);
    ok(ferret(&[
        "labels",
        "import",
        "--warehouse",
        wh,
        tmp.path().join("truth/labels.csv").to_str().expect("utf8"),
    ]));
    ok(ferret(&[
        "taint",
        "btc",
        "--warehouse",
        wh,
        "--seed-category",
        "scam",
        "--device",
        "cpu",
    ]));
    let count = || sql(wh, "SELECT count(*) FROM taint");
    let n: u64 = ok(count())
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("a count");
    assert!(n > 0, "the taint run found tainted outputs");
    let out = ok(ferret(&["verify", "--warehouse", wh]));
    assert!(
        out.contains("results:") && out.contains("match their SHA-256"),
        "{out}"
    );
    let file = data_files(&dir.join("results/taint"))
        .into_iter()
        .next()
        .expect("the taint run's file");
    let name = file
        .file_name()
        .expect("name")
        .to_str()
        .expect("utf8")
        .to_string();
    let bytes = std::fs::read(&file).expect("read");
    // A flipped byte: same size, so reads go on; verify names the file.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    std::fs::write(&file, &flipped).expect("write");
    let err = fails_with(ferret(&["verify", "--warehouse", wh]), "results/taint");
    assert!(err.contains("SHA-256") && err.contains(&name), "{err}");
    // Cut short: a size mismatch, an error for every reader.
    std::fs::write(&file, &bytes[..bytes.len() - 10]).expect("write");
    let err = fails_with(count(), "results/taint");
    assert!(err.contains("bytes"), "{err}");
    // Gone: an error naming it, not zero rows.
    std::fs::remove_file(&file).expect("rm");
    let err = fails_with(count(), "is missing");
    assert!(err.contains("results/taint"), "{err}");
}
