//! Real mainnet blocks (../shared/fixtures/btc): known facts, stale branches, a pruned
//! start, and XOR obfuscation.

mod common;

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::{Chain, Warehouse};

async fn index(dir: &std::path::Path, wh: &Warehouse) -> ferret_indexer::btc::IndexSummary {
    let mut opts = IndexOptions::new(dir);
    opts.commit_blocks = 100;
    index_btc(wh, &opts).await.expect("index")
}

#[tokio::test]
async fn heights_0_to_255_have_the_known_facts() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[mainnet_0_255(&fx)]);
    let wh = Warehouse::open(tmp.path().join("wh").to_str().expect("utf8")).expect("open");
    let s = index(&blocks, &wh).await;
    assert_eq!(s.network, "main");
    assert_eq!(s.heights, Some((0, 255)));
    assert_eq!(s.counts.blocks, 256);
    assert_eq!(s.counts.transactions, 263);
    assert_eq!(s.counts.unresolved_inputs, 0);
    assert_eq!(s.commits, 3, "commits every 100 blocks");

    assert_eq!(
        scalar(&wh, "SELECT hash FROM btc.blocks WHERE height = 0").await,
        "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT hash || ' ' || prev_hash FROM btc.blocks WHERE height = 1"
        )
        .await,
        "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048 \
         000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
    );
    assert_eq!(
        scalar(&wh, "SELECT hash FROM btc.blocks WHERE height = 255").await,
        "00000000d0a75c861fabf9ff7b92022f60e4afeed9331fe5aa073d8e4706fe3c"
    );
    // Blocks with more than one transaction in 0..=255.
    assert_eq!(
        query(
            &wh,
            "SELECT height, tx_count FROM btc.blocks WHERE tx_count > 1 ORDER BY height"
        )
        .await,
        [
            "170|2", "181|2", "182|2", "183|2", "187|2", "221|2", "248|2"
        ]
    );
    // Every coinbase pays exactly the 50 BTC subsidy (no fees yet in this era).
    assert_eq!(
        scalar(&wh, "SELECT count(*) || ' ' || min(output_value) || ' ' || max(output_value) FROM btc.transactions WHERE is_coinbase").await,
        "256 5000000000 5000000000"
    );
    // tx_index is the global position: dense from 0.
    assert_eq!(
        scalar(&wh, "SELECT min(tx_index) || ' ' || max(tx_index) || ' ' || count(DISTINCT tx_index) FROM btc.transactions").await,
        "0 262 263"
    );
    // Block 170: the first bitcoin payment, Satoshi to Hal Finney.
    let txid = "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16";
    assert_eq!(
        scalar(&wh, &format!("SELECT height || ' ' || input_value || ' ' || output_value || ' ' || fee FROM btc.transactions WHERE txid = '{txid}'")).await,
        "170 5000000000 5000000000 0"
    );
    assert_eq!(
        query(&wh, &format!("SELECT spent_txid, spent_vout, value, address, script_type, spent_height FROM btc.inputs WHERE txid = '{txid}'")).await,
        ["0437cd7f8525ceed2324359c2d0ba26006d92d856a9c20fa0241106ee5a597c9|0|5000000000|12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S|p2pk|9"]
    );
    assert_eq!(
        query(&wh, &format!("SELECT vout, value, script_type, address FROM btc.outputs WHERE txid = '{txid}' ORDER BY vout")).await,
        [
            "0|1000000000|p2pk|1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3",
            "1|4000000000|p2pk|12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S"
        ]
    );
    // The enriched spent_tx_index points at block 9's coinbase.
    assert_eq!(
        scalar(&wh, &format!("SELECT i.spent_tx_index = t.tx_index FROM btc.inputs i JOIN btc.transactions t ON t.txid = i.spent_txid WHERE i.txid = '{txid}'")).await,
        "true"
    );
    assert_eq!(
        scalar(&wh, "SELECT address FROM btc.outputs WHERE height = 0").await,
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
    );

    // A rerun has nothing new and commits nothing.
    let again = index(&blocks, &wh).await;
    assert_eq!(again.heights, None);
    assert_eq!(again.commits, 0);
}

#[tokio::test]
async fn the_most_work_branch_wins() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    // Branch stored first, out of order, in its own file: linking is by parent hash.
    write_blocks_dir(
        &blocks,
        &[
            records(&fx.join("btc/mainnet-branch-3A-5A.blk")),
            records(&fx.join("btc/mainnet-blocks-0-4.blk")),
        ],
    );
    let wh = Warehouse::open("memory://best-chain").expect("open");
    let s = index(&blocks, &wh).await;
    assert_eq!(s.stale_blocks, 2, "the original 3 and 4 are stale");
    assert_eq!(
        query(
            &wh,
            "SELECT height, substr(hash, 1, 16) FROM btc.blocks ORDER BY height"
        )
        .await,
        [
            "0|000000000019d668",
            "1|00000000ebe5ec3e",
            "2|00000000952ccb1b",
            "3|00000000474284d2",
            "4|00000000551dc04c",
            "5|00000000195f8518"
        ]
    );
    // Only best-chain transactions are indexed: 1 + 1 + 2 (height 2) + 3 + 1 + 2 (3A–5A).
    assert_eq!(
        scalar(&wh, "SELECT count(*) FROM btc.transactions").await,
        "10"
    );
}

#[tokio::test]
async fn a_pruned_start_takes_its_height_from_bip34() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(
        &blocks,
        &[records(&fx.join("btc/mainnet-block-277647.blk"))],
    );
    let wh = Warehouse::open("memory://pruned").expect("open");
    let s = index(&blocks, &wh).await;
    assert_eq!(s.heights, Some((277_647, 277_647)));
    assert_eq!(s.counts.transactions, 213);
    assert_eq!(s.counts.outputs, 769);
    // Inputs spending outputs of this same block are enriched; every other non-coinbase
    // input spends an output before the indexed range and is counted unresolved.
    let in_block: u64 = scalar(
        &wh,
        "SELECT count(*) FROM btc.inputs WHERE spent_txid IN (SELECT txid FROM btc.transactions)",
    )
    .await
    .parse()
    .expect("count");
    assert!(in_block > 0);
    assert_eq!(s.counts.unresolved_inputs, s.counts.inputs - 1 - in_block);
    assert_eq!(
        scalar(&wh, "SELECT count(*) FROM btc.inputs WHERE value IS NULL").await,
        (s.counts.unresolved_inputs + 1).to_string()
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT height || ' ' || tx_count || ' ' || hash FROM btc.blocks"
        )
        .await,
        "277647 213 0000000000000000054a714e580b16c583701712ab91060e92dbde6eb1e052a8"
    );
    assert_eq!(
        scalar(&wh, "SELECT count(*) FROM btc.transactions WHERE fee IS NULL").await,
        scalar(
            &wh,
            "SELECT count(DISTINCT tx_index) FROM btc.inputs WHERE value IS NULL AND spent_txid IS NOT NULL"
        )
        .await,
        "fees are unknown exactly where an input is unresolved"
    );
    assert_eq!(
        scalar(&wh, "SELECT min(tx_index) FROM btc.transactions").await,
        "0"
    );
}

#[tokio::test]
async fn xor_obfuscated_files_give_identical_tables() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let plain = tmp.path().join("plain");
    let xored = tmp.path().join("xored");
    write_blocks_dir(&plain, &[mainnet_0_255(&fx)]);
    write_blocks_dir(&xored, &[mainnet_0_255(&fx)]);
    let key: [u8; 8] = rand_key();
    obfuscate(&xored, key);
    let a = Warehouse::open("memory://xor-plain").expect("open");
    let b = Warehouse::open("memory://xor-obfuscated").expect("open");
    index(&plain, &a).await;
    index(&xored, &b).await;
    let (da, db) = (dump(&a).await, dump(&b).await);
    assert!(da.len() > 1000);
    assert_eq!(da, db);
}

fn rand_key() -> [u8; 8] {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let mut k = (nanos ^ 0x9e37_79b9_7f4a_7c15)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9)
        .to_le_bytes();
    if k == [0; 8] {
        k[0] = 1;
    }
    eprintln!("xor key {k:02x?}");
    k
}

#[tokio::test]
async fn address_lookups_are_pushed_into_the_parquet_scan() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[mainnet_0_255(&fx)]);
    let wh = Warehouse::open(tmp.path().join("wh").to_str().expect("utf8")).expect("open");
    index(&blocks, &wh).await;
    let plan = query(
        &wh,
        "EXPLAIN SELECT value FROM btc.outputs WHERE address = '12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S'",
    )
    .await
    .join("\n");
    // Row-group statistics, page index and bloom filters are applied from these.
    assert!(plan.contains("predicate=address@"), "{plan}");
    assert!(
        plan.contains("required_guarantees=[address in (12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S)]"),
        "{plan}"
    );
    // The files carry bloom filters and the page index on the address column.
    let path = walk_parquet(&tmp.path().join("wh/btc/outputs"));
    let file = std::fs::File::open(&path).expect("open parquet");
    let reader = parquet::file::serialized_reader::SerializedFileReader::new_with_options(
        file,
        parquet::file::serialized_reader::ReadOptionsBuilder::new()
            .with_page_index()
            .build(),
    )
    .expect("parquet");
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    let rg = meta.row_group(0);
    let addr = rg
        .columns()
        .iter()
        .position(|c| c.column_path().string() == "address")
        .expect("address");
    assert!(
        rg.column(addr).bloom_filter_offset().is_some(),
        "bloom filter on address"
    );
    assert!(
        meta.column_index().is_some() && meta.offset_index().is_some(),
        "page index"
    );
    assert!(
        matches!(
            rg.column(addr).compression(),
            parquet::basic::Compression::ZSTD(_)
        ),
        "zstd"
    );
    assert!(
        rg.sorting_columns().is_some_and(|s| !s.is_empty()),
        "sort order recorded"
    );
}

fn walk_parquet(dir: &std::path::Path) -> std::path::PathBuf {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            return walk_parquet(&p);
        }
        if p.extension().is_some_and(|x| x == "parquet") {
            return p;
        }
    }
    panic!("no parquet file under {}", dir.display());
}

#[tokio::test]
async fn reruns_continue_and_process_only_new_blocks() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let all = mainnet_0_255(&fx);
    let blocks = tmp.path().join("blocks");
    // A node that has only reached height 150 so far.
    write_blocks_dir(&blocks, &[all[..151].to_vec()]);
    let wh = Warehouse::open("memory://incremental").expect("open");
    let mut opts = IndexOptions::new(&blocks);
    opts.commit_blocks = 40;
    opts.to_height = Some(99);
    let first = index_btc(&wh, &opts).await.expect("index to 99");
    assert_eq!(first.heights, Some((0, 99)));
    opts.to_height = None;
    let second = index_btc(&wh, &opts).await.expect("index to 150");
    assert_eq!(second.heights, Some((100, 150)));
    // The node writes more blocks, into a new blk file as Core does when one fills up.
    write_blocks_dir(&blocks, &[all[..151].to_vec(), all[151..].to_vec()]);
    let third = index_btc(&wh, &opts).await.expect("index new blocks");
    assert_eq!(third.heights, Some((151, 255)));
    assert_eq!(third.counts.blocks, 105);
    assert_eq!(
        third.counts.unresolved_inputs, 0,
        "spent outputs rebuilt from the warehouse"
    );

    let reference = Warehouse::open("memory://incremental-reference").expect("open");
    index(&blocks, &reference).await;
    assert_eq!(dump(&wh).await, dump(&reference).await);
}

#[tokio::test]
async fn a_reorg_below_the_committed_tip_is_unwound_and_equals_a_fresh_index() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[records(&fx.join("btc/mainnet-blocks-0-4.blk"))]);
    let wh = Warehouse::open("memory://reorg").expect("open");
    index(&blocks, &wh).await;
    // The longer branch 3A–5A arrives: the committed 3 and 4 are now stale.
    write_blocks_dir(
        &blocks,
        &[
            records(&fx.join("btc/mainnet-blocks-0-4.blk")),
            records(&fx.join("btc/mainnet-branch-3A-5A.blk")),
        ],
    );
    let summary = index_btc(&wh, &IndexOptions::new(&blocks))
        .await
        .expect("unwound and indexed");
    assert_eq!(summary.unwound, 2, "{summary}");
    assert!(
        summary.to_string().contains("unwound 2 committed blocks"),
        "{summary}"
    );
    // Exactly what a fresh index of the new best chain holds, and no stale hash left.
    let fresh = Warehouse::open("memory://reorg-fresh").expect("open");
    index(&blocks, &fresh).await;
    assert_eq!(dump(&wh).await, dump(&fresh).await);
    assert_eq!(
        scalar(
            &wh,
            "SELECT count(*) FROM btc.blocks WHERE hash = '000000002f264d6504013e73b9c913de9098d4d771c1bb219af475d2a01b128e'"
        )
        .await,
        "0"
    );
    let m = wh
        .load_manifest(Chain::Btc)
        .await
        .expect("m")
        .expect("some");
    let f = fresh
        .load_manifest(Chain::Btc)
        .await
        .expect("m")
        .expect("some");
    assert_eq!(
        (m.tip, m.totals, m.next_tx_index),
        (f.tip, f.totals, f.next_tx_index)
    );
    // Deeper than --max-unwind: refused, nothing changed.
    let only = tmp.path().join("only-0-4");
    write_blocks_dir(&only, &[records(&fx.join("btc/mainnet-blocks-0-4.blk"))]);
    let deep_wh = Warehouse::open("memory://reorg-deep").expect("open");
    index(&only, &deep_wh).await;
    let mut deep = IndexOptions::new(&blocks);
    deep.max_unwind = 1;
    let err = index_btc(&deep_wh, &deep).await.expect_err("too deep");
    assert!(
        err.to_string().contains("reorganisation deeper than"),
        "{err}"
    );
    assert_eq!(
        scalar(&deep_wh, "SELECT count(*) FROM btc.blocks").await,
        "5"
    );
}
