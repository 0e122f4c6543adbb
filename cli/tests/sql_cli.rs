//! `ferret sql`: SQL from the argument, a file or stdin; table, csv, json and parquet out;
//! bad SQL is a clear error with a non-zero exit.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn warehouse(tmp: &std::path::Path) -> Option<String> {
    let fx = fixtures()?;
    let blocks = tmp.join("blocks");
    write_blocks_dir(&blocks, &[mainnet_0_255(&fx)]);
    let wh = tmp.join("wh").to_string_lossy().into_owned();
    let summary = index_btc_cli(&blocks, &wh);
    assert!(
        summary.contains("blocks 256  transactions 263  inputs 263  outputs 268"),
        "{summary}"
    );
    Some(wh)
}

const Q: &str =
    "SELECT height, tx_count FROM btc.blocks WHERE height IN (169, 170) ORDER BY height";

#[test]
fn formats_and_sources() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(wh) = warehouse(tmp.path()) else {
        return;
    };

    let out = ferret(&["sql", "--warehouse", &wh, "--format", "csv", Q]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "height,tx_count\n169,1\n170,2\n"
    );

    let out = ferret(&["sql", "--warehouse", &wh, "--format", "json", Q]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"height\":169,\"tx_count\":1}\n{\"height\":170,\"tx_count\":2}\n"
    );

    let out = ferret(&["sql", "--warehouse", &wh, Q]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| height | tx_count |") && table.contains("| 170    | 2        |"),
        "{table}"
    );

    let file = tmp.path().join("q.sql");
    std::fs::write(&file, Q).expect("write");
    let out = ferret(&[
        "sql",
        "--warehouse",
        &wh,
        "--format",
        "csv",
        "-f",
        file.to_str().expect("utf8"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "height,tx_count\n169,1\n170,2\n"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args(["sql", "--warehouse", &wh, "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(Q.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "height,tx_count\n169,1\n170,2\n"
    );

    let pq = tmp.path().join("extract.parquet");
    let out = ferret(&[
        "sql",
        "--warehouse",
        &wh,
        "--format",
        "parquet",
        "--out",
        pq.to_str().expect("utf8"),
        "SELECT txid, value FROM btc.outputs WHERE height <= 9",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&pq).expect("open"),
    )
    .expect("parquet")
    .build()
    .expect("reader");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 10);
}

#[test]
fn bad_sql_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(wh) = warehouse(tmp.path()) else {
        return;
    };
    for (sql, expect) in [
        ("SELEC 1", "ParserError"),
        ("SELECT nope FROM btc.blocks", "No field named nope"),
        ("DROP TABLE btc.blocks", "read-only"),
        ("", "no SQL statement given"),
    ] {
        let out = ferret(&["sql", "--warehouse", &wh, sql]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql}");
        assert!(
            err.contains(expect) && !err.contains("panicked"),
            "{sql}: {err}"
        );
    }
    let out = ferret(&["sql", "--warehouse", &wh, "--format", "parquet", "SELECT 1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format parquet needs --out FILE"));
    let out = ferret(&["sql", "--warehouse", &wh, "--format", "xml", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown format `xml`"));
}
