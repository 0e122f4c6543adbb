//! Others can read the warehouse (DuckDB and pyarrow get the same counts and sums as
//! `ferret sql`), and the index round trip is identical on the local filesystem, in memory,
//! on a real S3-compatible server (SeaweedFS) and on Azure Blob Storage's emulator
//! (Azurite), both started by scripts/test.sh.

mod common;

use std::process::Command;

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::Warehouse;
use object_store::ObjectStoreExt;

fn python() -> Option<String> {
    python_with("duckdb, pyarrow", &[])
}

#[tokio::test]
async fn duckdb_and_pyarrow_read_what_ferret_sql_reads() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = ferret_testkit::synth::btc::SynthConfig {
        blocks: 120,
        seed: 21,
        txs_per_block: 30,
        ..Default::default()
    };
    ferret_testkit::synth::btc::generate(&cfg, tmp.path()).expect("generate");
    let wh_dir = tmp.path().join("wh");
    let wh = Warehouse::open(wh_dir.to_str().expect("utf8")).expect("open");
    let mut opts = IndexOptions::new(tmp.path().join("blocks"));
    opts.commit_blocks = 50;
    index_btc(&wh, &opts).await.expect("index");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/readers/check_readers.py"
    );
    let out = Command::new(&py)
        .arg(script)
        .arg(&wh_dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for (table, col) in [
        ("blocks", "tx_count"),
        ("transactions", "fee"),
        ("inputs", "value"),
        ("outputs", "value"),
    ] {
        let expect = query(
            &wh,
            &format!("SELECT count(*), coalesce(sum({col}), 0) FROM btc.{table}"),
        )
        .await;
        let (rows, sum) = expect[0].split_once('|').expect("two columns");
        for reader in ["duckdb", "pyarrow"] {
            let r = &got[reader][table];
            assert_eq!(r["rows"].to_string(), rows, "{reader} {table}");
            assert_eq!(r["sum"].to_string(), sum, "{reader} {table}");
            assert_eq!(
                r["partitions"], 1,
                "{reader} {table}: heights 0..=120 are one partition"
            );
        }
    }
    let addr = got["lookup"]["address"].as_str().expect("address");
    assert_eq!(
        got["lookup"]["received"].to_string(),
        scalar(
            &wh,
            &format!("SELECT sum(value) FROM btc.outputs WHERE address = '{addr}'")
        )
        .await
    );
}

/// The value of `var`, which scripts/test.sh sets once it has started `server`; without
/// it the test skips (fails under FERRET_REQUIRE_ALL).
fn started_by_test_sh(var: &str, server: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) => Some(v),
        Err(_) => {
            let hint = format!("{var} is not set: scripts/test.sh starts {server} and sets it");
            assert!(!require_all(), "{hint}");
            eprintln!("skipping: {hint}");
            None
        }
    }
}

fn s3_bucket() -> Option<String> {
    started_by_test_sh("FERRET_S3_BUCKET", "SeaweedFS")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}-{nanos}")
}

#[tokio::test]
async fn same_tables_on_local_memory_and_s3() {
    let Some(fx) = fixtures() else { return };
    let Some(bucket) = s3_bucket() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[mainnet_0_255(&fx)]);
    let mut opts = IndexOptions::new(&blocks);
    opts.commit_blocks = 60;

    let local = Warehouse::open(tmp.path().join("wh").to_str().expect("utf8")).expect("local");
    let memory = Warehouse::open(&format!("memory://{}", unique("rt"))).expect("memory");
    let s3_url = format!("s3://{bucket}/{}", unique("roundtrip"));
    let s3 = Warehouse::open(&s3_url).expect("s3");
    for wh in [&local, &memory, &s3] {
        let s = index_btc(wh, &opts)
            .await
            .unwrap_or_else(|e| panic!("{wh}: {e}"));
        assert_eq!(s.counts.blocks, 256, "{wh}");
    }
    let reference = dump(&local).await;
    assert!(reference.len() > 1000);
    assert_eq!(dump(&memory).await, reference);
    assert_eq!(dump(&s3).await, reference);

    // An uncommitted object (an interrupted run's file) is never read and is removed by
    // the next run; committed data is untouched.
    let junk = s3
        .root()
        .clone()
        .join("btc")
        .join("outputs")
        .join("height_range=00000000-00009999")
        .join("part-00000999-00001000.parquet");
    s3.store()
        .put(&junk, b"not parquet".to_vec().into())
        .await
        .expect("put junk");
    assert_eq!(
        dump(&s3).await,
        reference,
        "readers trust only the manifest"
    );
    let again = index_btc(&s3, &opts).await.expect("rerun");
    assert_eq!(again.commits, 0);
    assert!(s3.store().head(&junk).await.is_err(), "garbage collected");

    // The CLI reads it back from S3 too.
    assert_cli_counts_mainnet_0_255(&s3_url);
}

fn az_container() -> Option<String> {
    started_by_test_sh("FERRET_AZ_CONTAINER", "Azurite")
}

/// az:// against Azurite, Azure Blob Storage's emulator: multipart uploads as block
/// blobs, the create-only manifest commit, reads by range.
#[tokio::test]
async fn same_tables_on_azure_blob_storage() {
    let Some(fx) = fixtures() else { return };
    let Some(container) = az_container() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[mainnet_0_255(&fx)]);
    let mut opts = IndexOptions::new(&blocks);
    opts.commit_blocks = 60;
    let local = Warehouse::open(tmp.path().join("wh").to_str().expect("utf8")).expect("local");
    let az_url = format!("az://{container}/{}", unique("roundtrip"));
    let az = Warehouse::open(&az_url).expect("az");
    for wh in [&local, &az] {
        let s = index_btc(wh, &opts)
            .await
            .unwrap_or_else(|e| panic!("{wh}: {e}"));
        assert_eq!(s.counts.blocks, 256, "{wh}");
        assert_eq!(s.commits, 5, "{wh}");
    }
    assert_eq!(dump(&az).await, dump(&local).await);
    let again = index_btc(&az, &opts).await.expect("rerun");
    assert_eq!(again.commits, 0, "a rerun finds the committed tip");

    assert_cli_counts_mainnet_0_255(&az_url);
}

/// `ferret sql` on `url` counts the 263 transactions of mainnet heights 0–255.
fn assert_cli_counts_mainnet_0_255(url: &str) {
    let out = ferret(&[
        "sql",
        "--warehouse",
        url,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM btc.transactions",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n263\n");
}

#[test]
fn wrong_s3_secret_is_a_clear_error() {
    let Some(bucket) = s3_bucket() else { return };
    let url = format!("s3://{bucket}/{}", unique("denied"));
    let out = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "sql",
            "--warehouse",
            &url,
            "SELECT count(*) FROM btc.blocks",
        ])
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .env("FERRET_LOG", "warn")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("SignatureDoesNotMatch") || err.contains("403"),
        "{err}"
    );
}
