//! A Bitcoin reorganisation below the committed tip, with transactions on both branches:
//! the indexer commits a two-block branch that was the best chain when it ran, the blocks
//! dir then gains the heavier real chain, and the next run unwinds the branch (rows,
//! totals, `tx_index`, spent-output enrichment) and indexes the new one. The result must
//! equal a fresh index of the final blocks dir.

mod common;

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::{Chain, Warehouse};

#[tokio::test]
async fn a_reorg_with_transactions_is_unwound_and_equals_a_fresh_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Fork { all, early, s2, .. } = Fork::find(tmp.path());
    let early_dir = tmp.path().join("early");
    write_blocks_dir(&early_dir, &[early]);
    let late_dir = tmp.path().join("late");
    write_blocks_dir(&late_dir, std::slice::from_ref(&all));

    let wh = Warehouse::open("memory://btc-reorg").expect("open");
    let mut opts = IndexOptions::new(&early_dir);
    opts.commit_blocks = 7;
    index_btc(&wh, &opts).await.expect("early");
    let m = wh
        .load_manifest(Chain::Btc)
        .await
        .expect("m")
        .expect("some");
    assert_eq!(
        m.tip.as_ref().map(|t| t.hash.clone()),
        Some(s2.to_string()),
        "the branch was the best chain"
    );
    let mut opts = IndexOptions::new(&late_dir);
    opts.commit_blocks = 7;
    let summary = index_btc(&wh, &opts).await.expect("late");
    assert_eq!(summary.unwound, 2, "{summary}");

    assert_equals_fresh_index(&wh, &late_dir).await;
}
