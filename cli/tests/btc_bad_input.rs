//! Bad input gets a clear error naming the file and offset, a non-zero exit, no panic, and
//! nothing committed past the last good block.

mod common;

use std::path::Path;

use common::*;
use ferret_schemas::{Chain, Warehouse};

/// Byte offset of record `i` in the single-file mainnet 0..=255 blocks dir.
fn offset_of(recs: &[Vec<u8>], i: usize) -> usize {
    recs[..i].iter().map(Vec::len).sum()
}

struct Case {
    _tmp: tempfile::TempDir,
    blocks: std::path::PathBuf,
    wh: String,
}

fn case(recs: &[Vec<u8>]) -> Case {
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[recs.to_vec()]);
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    Case {
        _tmp: tmp,
        blocks,
        wh,
    }
}

fn blk(c: &Case) -> std::path::PathBuf {
    c.blocks.join("blk00000.dat")
}

/// Runs the indexer, expects failure, returns stderr.
fn index_fails(c: &Case) -> String {
    let out = ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        c.blocks.to_str().expect("utf8"),
        "--warehouse",
        &c.wh,
        "--commit-blocks",
        "10",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "must not panic: {stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    stderr
}

async fn committed_tip(wh: &str) -> Option<u64> {
    let wh = Warehouse::open(wh).expect("open");
    wh.load_manifest(Chain::Btc)
        .await
        .expect("manifest")
        .and_then(|m| m.tip)
        .map(|t| t.height)
}

async fn assert_prefix_committed(c: &Case, last_good: u64) {
    let tip = committed_tip(&c.wh).await;
    // The failed run removed what it wrote and never committed.
    let dir = Path::new(&c.wh);
    if tip.is_some() {
        assert_only_committed_files(dir, Chain::Btc).await;
    } else if dir.exists() {
        let data: Vec<_> = walk(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        assert!(data.is_empty(), "uncommitted files left: {data:?}");
    }
    assert!(
        tip.is_none_or(|t| t <= last_good),
        "committed {tip:?} past {last_good}"
    );
    if let Some(t) = tip {
        let wh = Warehouse::open(&c.wh).expect("open");
        assert_eq!(
            scalar(&wh, "SELECT count(*) || ' ' || max(height) FROM btc.blocks").await,
            format!("{} {t}", t + 1)
        );
    }
}

fn mutate(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).expect("read");
    f(&mut bytes);
    std::fs::write(path, bytes).expect("write");
}

/// The newest blk file cut inside its last record (a node still appending): the run
/// indexes up to the last whole block and says so.
#[tokio::test]
async fn truncated_last_record_of_the_newest_file() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let c = case(&recs);
    let off = offset_of(&recs, 255);
    mutate(&blk(&c), |b| b.truncate(off + 100));
    let out = ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        c.blocks.to_str().expect("utf8"),
        "--warehouse",
        &c.wh,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("partial record"), "{stderr}");
    assert_eq!(committed_tip(&c.wh).await, Some(254));
    assert_prefix_committed(&c, 254).await;
}

/// Bytes after the zero padding: in the newest file, the node writing its next block while
/// we read (the run indexes what came before); in an older file, corruption naming where.
#[tokio::test]
async fn bytes_after_the_padding_newest_file_in_progress_older_file_corrupt() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let pad_then_garbage = |b: &mut Vec<u8>| {
        b.extend(std::iter::repeat_n(0u8, 4096));
        b.extend_from_slice(b"not zero");
    };
    // Newest file: indexed up to its last whole block, with a warning.
    let c = case(&recs);
    mutate(&blk(&c), pad_then_garbage);
    let out = ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        c.blocks.to_str().expect("utf8"),
        "--warehouse",
        &c.wh,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("partial record"), "{stderr}");
    assert_eq!(committed_tip(&c.wh).await, Some(255));
    // Older file: an error naming the file and the first non-zero byte.
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[recs[..200].to_vec(), recs[200..].to_vec()]);
    let c = Case {
        blocks,
        wh: tmp.path().join("wh").to_string_lossy().into_owned(),
        _tmp: tmp,
    };
    mutate(&blk(&c), pad_then_garbage);
    let off = offset_of(&recs, 200) + 4096;
    let err = index_fails(&c);
    assert!(
        err.contains("blk00000.dat")
            && err.contains(&format!("offset {off}"))
            && err.contains("padding"),
        "{err}"
    );
}

/// A record cut short in a file that is not the newest is corruption.
#[tokio::test]
async fn truncated_record_in_an_older_file() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[recs[..200].to_vec(), recs[200..].to_vec()]);
    let c = Case {
        blocks,
        wh: tmp.path().join("wh").to_string_lossy().into_owned(),
        _tmp: tmp,
    };
    let off = offset_of(&recs, 199);
    mutate(&blk(&c), |b| b.truncate(off + 100));
    let err = index_fails(&c);
    assert!(
        err.contains("blk00000.dat") && err.contains(&format!("offset {off}")),
        "{err}"
    );
    assert!(err.contains("truncated record"), "{err}");
    assert_prefix_committed(&c, 198).await;
}

/// Bitcoin Core ≥ 28 obfuscates blk files but preallocates the current file's tail as raw
/// zeros (never obfuscated): that tail ends the records, it is not a bad magic.
#[tokio::test]
async fn obfuscated_files_with_a_preallocated_raw_zero_tail() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let c = case(&recs);
    obfuscate(&c.blocks, [0x1b, 0x52, 0xdf, 0x16, 0x9a, 0x07, 0x33, 0xe1]);
    mutate(&blk(&c), |b| b.resize(b.len() + (1 << 20), 0));
    let out = ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        c.blocks.to_str().expect("utf8"),
        "--warehouse",
        &c.wh,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(committed_tip(&c.wh).await, Some(255));
}

#[tokio::test]
async fn wrong_magic() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let c = case(&recs);
    let off = offset_of(&recs, 100);
    mutate(&blk(&c), |b| {
        b[off..off + 4].copy_from_slice(&[0x0b, 0x11, 0x09, 0x07])
    });
    let err = index_fails(&c);
    assert!(
        err.contains(&format!("blk00000.dat at offset {off}")),
        "{err}"
    );
    assert!(
        err.contains("expected network magic f9beb4d9, found 0b110907"),
        "{err}"
    );
    assert_prefix_committed(&c, 99).await;
}

#[tokio::test]
async fn absurd_length() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let c = case(&recs);
    let off = offset_of(&recs, 100);
    mutate(&blk(&c), |b| {
        b[off + 4..off + 8].copy_from_slice(&0xffff_ff00u32.to_le_bytes())
    });
    let err = index_fails(&c);
    assert!(
        err.contains(&format!("blk00000.dat at offset {off}")),
        "{err}"
    );
    assert!(err.contains("length 4294967040 is outside"), "{err}");
    assert_prefix_committed(&c, 99).await;
}

#[tokio::test]
async fn corrupted_transaction_bytes_fail_the_merkle_check() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let c = case(&recs);
    let off = offset_of(&recs, 150);
    // The last byte before the coinbase's lock time: inside its output script.
    let rec_len = recs[150].len();
    mutate(&blk(&c), |b| b[off + rec_len - 6] ^= 0x55);
    let err = index_fails(&c);
    assert!(
        err.contains(&format!("blk00000.dat at offset {off}")),
        "{err}"
    );
    assert!(err.contains("height 150: merkle root mismatch"), "{err}");
    assert_prefix_committed(&c, 149).await;
    // The chunk before the bad block was committed: work is not lost.
    assert_eq!(committed_tip(&c.wh).await, Some(149));
}

#[tokio::test]
async fn undecodable_transaction_bytes() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let c = case(&recs);
    let off = offset_of(&recs, 120);
    // The transaction count right after the 80-byte header: claim 3 transactions.
    mutate(&blk(&c), |b| b[off + 8 + 80] = 3);
    let err = index_fails(&c);
    assert!(
        err.contains(&format!(
            "blk00000.dat at offset {off}: cannot decode block"
        )),
        "{err}"
    );
    assert_prefix_committed(&c, 119).await;
}

#[tokio::test]
async fn wrong_xor_key() {
    let Some(fx) = fixtures() else { return };
    let recs = mainnet_0_255(&fx);
    let c = case(&recs);
    obfuscate(&c.blocks, [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    std::fs::write(
        c.blocks.join("xor.dat"),
        [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x89],
    )
    .expect("write");
    let err = index_fails(&c);
    assert!(err.contains("blk00000.dat at offset 0"), "{err}");
    assert!(err.contains("is xor.dat the key"), "{err}");
    assert_prefix_committed(&c, 0).await;
    assert_eq!(committed_tip(&c.wh).await, None);

    std::fs::write(c.blocks.join("xor.dat"), [1, 2, 3]).expect("write");
    let err = index_fails(&c);
    assert!(
        err.contains("xor.dat: obfuscation key must be 8 bytes, found 3"),
        "{err}"
    );
}

#[test]
fn bad_arguments() {
    let out = ferret(&[
        "index",
        "btc",
        "--blocks-dir",
        "/nonexistent/blocks",
        "--warehouse",
        "memory://x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent/blocks"), "{err}");
    let out = ferret(&["index", "btc", "--blocks-dir", ".", "--utxo-mem-mb", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--utxo-mem-mb must be at least 1"));
    let out = ferret(&["index", "btc", "--blocks-dir", ".", "--read-threads", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--read-threads must be at least 1"));
    let out = ferret(&["sql", "--warehouse", "ftp://nowhere/x", "SELECT 1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported scheme `ftp`"));
    assert!(!out.status.success());
}
