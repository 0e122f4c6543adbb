//! A Bitcoin reorganisation below the committed tip, with transactions on both branches:
//! the indexer commits a two-block branch that was the best chain when it ran, the blocks
//! dir then gains the heavier real chain, and the next run unwinds the branch (rows,
//! totals, `tx_index`, spent-output enrichment) and indexes the new one. The result must
//! equal a fresh index of the final blocks dir.

mod common;

use std::collections::{HashMap, HashSet};

use bitcoin::consensus::Decodable;
use bitcoin::{Block, BlockHash};
use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::synth::btc::{SynthConfig, generate};
use ferret_schemas::{Chain, Warehouse};

#[tokio::test]
async fn a_reorg_with_transactions_is_unwound_and_equals_a_fresh_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The first seed whose chain has a two-block stale branch (one fork in four is).
    let mut found = None;
    for seed in 21..60 {
        let dir = tmp.path().join(format!("seed{seed}"));
        let cfg = SynthConfig {
            blocks: 160,
            seed,
            txs_per_block: 25,
            ..Default::default()
        };
        generate(&cfg, &dir).expect("generate");
        let chain = Headers::read(&dir.join("blocks"));
        if let Some(branch) = chain.two_block_branch() {
            found = Some((chain, branch));
            break;
        }
    }
    let (Headers { all, parent, best }, (s1, s2)) = found.expect("a seed with a two-block branch");
    let fork_parent = parent[&s1].0;
    let h = best
        .iter()
        .position(|b| *b == fork_parent)
        .expect("forks off the best chain")
        + 1;
    // When the first run happened: the best chain up to height h, and the branch (two
    // blocks, more work than the single best block at h).
    let mut early: Vec<Vec<u8>> = best[..=h]
        .iter()
        .map(|b| all[parent[b].1].clone())
        .collect();
    early.push(all[parent[&s1].1].clone());
    early.push(all[parent[&s2].1].clone());
    let early_dir = tmp.path().join("early");
    write_blocks_dir(&early_dir, &[early]);
    let late_dir = tmp.path().join("late");
    write_blocks_dir(&late_dir, &[all.clone()]);

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

    let fresh = Warehouse::open("memory://btc-reorg-fresh").expect("open");
    index_btc(&fresh, &IndexOptions::new(&late_dir))
        .await
        .expect("fresh");
    assert_eq!(dump(&wh).await, dump(&fresh).await);
    let (a, b) = (
        wh.load_manifest(Chain::Btc)
            .await
            .expect("m")
            .expect("some"),
        fresh
            .load_manifest(Chain::Btc)
            .await
            .expect("m")
            .expect("some"),
    );
    assert_eq!(
        (a.tip, a.totals, a.next_tx_index),
        (b.tip, b.totals, b.next_tx_index)
    );
}

/// The blocks of a synthetic blocks dir: records, parents, the best chain.
struct Headers {
    all: Vec<Vec<u8>>,
    /// hash → (parent, record index)
    parent: HashMap<BlockHash, (BlockHash, usize)>,
    best: Vec<BlockHash>,
}

impl Headers {
    fn read(dir: &std::path::Path) -> Self {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("blk"))
            })
            .collect();
        files.sort();
        let all: Vec<Vec<u8>> = files
            .iter()
            .flat_map(|p| records(p))
            // The file's preallocated zero tail is not a record.
            .filter(|r| r[..4] != [0; 4])
            .collect();
        let mut parent = HashMap::new();
        for (i, r) in all.iter().enumerate() {
            let b = Block::consensus_decode(&mut &r[8..]).expect("block");
            parent.insert(b.block_hash(), (b.header.prev_blockhash, i));
        }
        let depth = |mut h: BlockHash| {
            let mut d = 0;
            while let Some(&(p, _)) = parent.get(&h) {
                h = p;
                d += 1;
            }
            d
        };
        let tip = *parent.keys().max_by_key(|h| depth(**h)).expect("blocks");
        let mut best: Vec<BlockHash> = vec![tip];
        while let Some(&(p, _)) = parent.get(best.last().expect("some")) {
            if parent.contains_key(&p) {
                best.push(p);
            } else {
                break;
            }
        }
        best.reverse();
        Self { all, parent, best }
    }

    /// A stale s1 → s2 pair forking off the best chain.
    fn two_block_branch(&self) -> Option<(BlockHash, BlockHash)> {
        let on_best: HashSet<BlockHash> = self.best.iter().copied().collect();
        let mut pairs: Vec<(BlockHash, BlockHash)> = self
            .parent
            .iter()
            .filter(|(h, _)| !on_best.contains(*h))
            .filter_map(|(s2, &(s1, _))| {
                (!on_best.contains(&s1) && self.parent.contains_key(&s1)).then_some((s1, *s2))
            })
            .collect();
        pairs.sort();
        pairs.into_iter().next()
    }
}
