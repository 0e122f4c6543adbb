//! A generated chain round-trips through the indexer: every transaction, input and output
//! exactly once, value sums agree, every enriched input equals the output it spends; and
//! the result is the same in memory, on the local filesystem and with a tiny spent-output
//! memory budget that forces spilling to disk.

mod common;

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::Warehouse;
use ferret_testkit::synth::btc::{SynthConfig, generate};

fn synth(dir: &std::path::Path, xor: bool) -> ferret_testkit::synth::btc::SynthSummary {
    let cfg = SynthConfig {
        blocks: 160,
        seed: 11,
        txs_per_block: 40,
        xor,
        ..Default::default()
    };
    generate(&cfg, dir).expect("generate")
}

#[tokio::test]
async fn generated_chain_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = synth(tmp.path(), true);
    let blocks = tmp.path().join("blocks");
    let wh = Warehouse::open(tmp.path().join("wh").to_str().expect("utf8")).expect("open");
    let mut opts = IndexOptions::new(&blocks);
    opts.commit_blocks = 25;
    let r = index_btc(&wh, &opts).await.expect("index");
    assert_eq!(r.counts.blocks, s.blocks);
    assert_eq!(r.counts.transactions, s.transactions);
    assert_eq!(r.stale_blocks as u64, s.stale_blocks);
    assert_eq!(r.counts.unresolved_inputs, 0, "the chain starts at genesis");
    assert_eq!(
        r.tip.as_ref().map(|t| t.hash.clone()),
        Some(s.best_tip.to_string())
    );

    // Every transaction, input and output exactly once.
    assert_eq!(
        scalar(
            &wh,
            "SELECT count(*) = count(DISTINCT txid) FROM btc.transactions"
        )
        .await,
        "true"
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT count(*) = count(DISTINCT (txid, vin)) FROM btc.inputs"
        )
        .await,
        "true"
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT count(*) = count(DISTINCT (txid, vout)) FROM btc.outputs"
        )
        .await,
        "true"
    );
    assert_eq!(
        scalar(&wh, "SELECT sum(input_count) = (SELECT count(*) FROM btc.inputs) AND sum(output_count) = (SELECT count(*) FROM btc.outputs) FROM btc.transactions").await,
        "true"
    );
    // No output is spent twice.
    assert_eq!(
        scalar(&wh, "SELECT count(*) FROM (SELECT spent_txid, spent_vout FROM btc.inputs WHERE spent_txid IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1)").await,
        "0"
    );
    // Every enriched input equals the output it spends.
    assert_eq!(
        scalar(
            &wh,
            "SELECT count(*) FROM btc.inputs i JOIN btc.outputs o
               ON o.txid = i.spent_txid AND o.vout = i.spent_vout
             WHERE i.value = o.value AND i.spent_tx_index = o.tx_index AND i.spent_height = o.height
               AND i.script_type = o.script_type
               AND (i.address = o.address OR (i.address IS NULL AND o.address IS NULL))"
        )
        .await,
        scalar(
            &wh,
            "SELECT count(*) FROM btc.inputs WHERE spent_txid IS NOT NULL"
        )
        .await
    );
    // Value sums: per transaction, and over the chain (coinbases pay subsidy + fees).
    assert_eq!(
        scalar(&wh, "SELECT count(*) FROM btc.transactions t JOIN (SELECT tx_index, sum(value) v FROM btc.inputs GROUP BY tx_index) i USING (tx_index) WHERE NOT t.is_coinbase AND (t.input_value <> i.v OR t.fee <> t.input_value - t.output_value OR t.fee < 0)").await,
        "0"
    );
    let subsidies: u64 = (0..s.blocks as u32)
        .map(|h| ferret_testkit::synth::btc::subsidy(h, bitcoin::Network::Regtest))
        .sum();
    assert_eq!(
        scalar(&wh, "SELECT (SELECT sum(output_value) FROM btc.transactions WHERE is_coinbase) - (SELECT sum(fee) FROM btc.transactions WHERE NOT is_coinbase)").await,
        // Genesis pays its subsidy too, so this is every block's subsidy.
        subsidies.to_string()
    );
    // The planted cash-outs are in the warehouse as the truth files say.
    let cashouts = std::fs::read_to_string(tmp.path().join("truth/cashouts.csv")).expect("truth");
    let rows: Vec<&str> = cashouts.lines().skip(1).collect();
    assert!(!rows.is_empty());
    for row in rows.iter().take(20) {
        let f: Vec<&str> = row.split(',').collect();
        let (exit, amount, txid) = (f[2], f[3], f[5]);
        assert_eq!(
            scalar(&wh, &format!("SELECT sum(value) FROM btc.outputs WHERE txid = '{txid}' AND address = '{exit}'")).await,
            amount,
            "{row}"
        );
    }
}

#[tokio::test]
async fn spilling_the_spent_output_store_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    synth(tmp.path(), false);
    let blocks = tmp.path().join("blocks");
    let roomy = Warehouse::open("memory://spill-roomy").expect("open");
    let tight = Warehouse::open(tmp.path().join("tight").to_str().expect("utf8")).expect("open");
    let mut opts = IndexOptions::new(&blocks);
    opts.read_threads = 1;
    let a = index_btc(&roomy, &opts).await.expect("index");
    let mut small = IndexOptions::new(&blocks);
    small.utxo_mem_bytes = 256 << 10;
    small.commit_blocks = 40;
    let b = index_btc(&tight, &small).await.expect("index");
    assert_eq!(a.utxo.spills, 0);
    assert!(b.utxo.spills > 0 && b.utxo.disk_hits > 0, "{:?}", b.utxo);
    let one_reader = dump(&roomy).await;
    assert_eq!(one_reader, dump(&tight).await);

    // Blocks prepared by many reader threads reach the transform in height order.
    let many = Warehouse::open("memory://many-readers").expect("open");
    let mut opts = IndexOptions::new(&blocks);
    opts.read_threads = 5;
    opts.commit_blocks = 7;
    index_btc(&many, &opts).await.expect("index");
    assert_eq!(one_reader, dump(&many).await);
}

#[tokio::test]
async fn a_tampered_witness_fails_the_witness_commitment() {
    use bitcoin::consensus::{deserialize, serialize};
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 40,
        seed: 3,
        txs_per_block: 20,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let blk = tmp.path().join("blocks/blk00000.dat");
    let mut bytes = std::fs::read(&blk).expect("read");
    // Find the first block with a segwit spend and flip a byte of one witness item: the
    // txids (and so the merkle root) stay the same, only the wtxid changes.
    let mut offset = 0;
    let (tampered_at, tampered_hash) = loop {
        let len = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("4")) as usize;
        assert!(len > 0, "no segwit spend found");
        let mut block: bitcoin::Block =
            deserialize(&bytes[offset + 8..offset + 8 + len]).expect("block");
        let hit = block
            .txdata
            .iter_mut()
            .skip(1)
            .find(|t| t.input.iter().any(|i| !i.witness.is_empty()));
        if let Some(tx) = hit {
            let input = tx
                .input
                .iter_mut()
                .find(|i| !i.witness.is_empty())
                .expect("witness");
            let mut items: Vec<Vec<u8>> = input.witness.iter().map(<[u8]>::to_vec).collect();
            items[0][5] ^= 0x01;
            input.witness = bitcoin::Witness::from_slice(&items);
            let raw = serialize(&block);
            assert_eq!(raw.len(), len);

            bytes[offset + 8..offset + 8 + len].copy_from_slice(&raw);
            break (offset, block.block_hash().to_string());
        }
        offset += 8 + len;
    };
    // The tampered block's height, from an index of the clean files.
    let clean = Warehouse::open("memory://before-tampering").expect("open");
    index_btc(&clean, &IndexOptions::new(tmp.path().join("blocks")))
        .await
        .expect("index clean");
    let height: u64 = scalar(
        &clean,
        &format!("SELECT height FROM btc.blocks WHERE hash = '{tampered_hash}'"),
    )
    .await
    .parse()
    .expect("the tampered block is on the best chain");
    let committed_before_bad = height.checked_sub(1);
    std::fs::write(&blk, bytes).expect("write");
    // Whichever reader thread meets the bad block, the error is that block's, and the
    // blocks before it are committed.
    for threads in [1, 2, 3] {
        let wh = Warehouse::open(&format!("memory://tampered-witness-{threads}")).expect("open");
        let mut opts = IndexOptions::new(tmp.path().join("blocks"));
        opts.read_threads = threads;
        opts.commit_blocks = 1;
        let err = index_btc(&wh, &opts).await.expect_err("tampered");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("blk00000.dat at offset {tampered_at}")),
            "{threads} threads: {msg}"
        );
        assert!(msg.contains("witness commitment mismatch"), "{msg}");
        let committed = wh
            .load_manifest(ferret_schemas::Chain::Btc)
            .await
            .expect("manifest")
            .and_then(|m| m.tip)
            .map(|t| t.height);
        assert_eq!(committed, committed_before_bad, "{threads} threads");
    }
}
