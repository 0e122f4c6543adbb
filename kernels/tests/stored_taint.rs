//! Taint out of core on the committed spend graph (`btc.spends`) against the in-memory
//! path, on a generated chain indexed with tiny graph blocks (2^4 and 2^7 transactions) in
//! many commits, so that every run crosses hundreds of blocks and chunks: the same
//! tainted outputs, hops, fractions (bit for bit) and amounts, for poison and haircut,
//! forward and backward, with hop limits, minimum values, stops and blocked
//! transactions, with a budget that pages everything through scratch files and one that
//! does not.

use std::collections::HashSet;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_kernels::blocked::Budget;
use ferret_kernels::device::Backend;
use ferret_kernels::taint::stored::{StoredQuery, resolve_seeds, run_stored};
use ferret_kernels::taint::{Direction, Policy, Query, SpendGraph, run, seed_outputs};
use ferret_schemas::{Chain, Warehouse};
use ferret_testkit::synth::btc::{SynthConfig, generate};

fn labelled(dir: &std::path::Path, category: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join("truth/labels.csv"))
        .expect("labels.csv")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.get(2) == Some(&category)).then(|| f[0].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_taint_equals_the_in_memory_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 160,
        seed: 31,
        txs_per_block: 40,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let scams = labelled(tmp.path(), "scam");
    let exchanges = labelled(tmp.path(), "exchange");
    assert!(!scams.is_empty() && !exchanges.is_empty());

    let mut runs = 0;
    for bits in [4u32, 7] {
        let wh = Warehouse::open(&format!("memory://stored-taint-{bits}")).expect("open");
        let mut opts = IndexOptions::new(tmp.path().join("blocks"));
        opts.graph_block_bits = Some(bits);
        opts.commit_blocks = 23;
        index_btc(&wh, &opts).await.expect("index");
        let m = wh
            .load_manifest(Chain::Btc)
            .await
            .expect("manifest")
            .expect("committed");
        assert_eq!(m.graph_block_bits, Some(bits));
        let g = SpendGraph::from_warehouse(&wh).await.expect("graph");

        // The committed address ids are the in-memory graph's (first-seen order).
        let mut committed = Vec::new();
        for f in m.files_of("addresses") {
            for b in wh
                .read_columns(&f.path, &["address", "address_id"])
                .await
                .expect("read")
            {
                let (a, id) = (
                    b.column(0).as_string::<i32>(),
                    b.column(1).as_primitive::<Int64Type>(),
                );
                for r in 0..b.num_rows() {
                    committed.push((id.value(r), a.value(r).to_string()));
                }
            }
        }
        committed.sort();
        let ids: Vec<i64> = committed.iter().map(|c| c.0).collect();
        assert_eq!(ids, (0..g.addresses.len() as i64).collect::<Vec<_>>());
        let names: Vec<&String> = committed.iter().map(|c| &c.1).collect();
        assert_eq!(names, g.addresses.iter().collect::<Vec<_>>());

        let seed_ids: Vec<u32> = scams.iter().filter_map(|a| g.address_id(a)).collect();
        let seeds_mem = seed_outputs(&g, &seed_ids, &[]);
        let seeds = resolve_seeds(&wh, &m, &scams, &[]).await.expect("seeds");
        assert_eq!(
            seeds.iter().map(|s| s.output_id).collect::<Vec<_>>(),
            seeds_mem.iter().map(|&o| u64::from(o)).collect::<Vec<_>>(),
            "seeds found through the Bloom filters"
        );
        assert!(seeds.len() > 5);
        let stops: HashSet<u32> = exchanges.iter().filter_map(|a| g.address_id(a)).collect();
        let blocked: HashSet<u32> = (0..g.transactions() as u32)
            .filter(|t| t % 37 == 5)
            .collect();

        let mut cases = 0;
        for policy in [Policy::Poison, Policy::Haircut, Policy::Fifo] {
            for direction in [Direction::Forward, Direction::Backward] {
                for (max_hops, min_value, stop, block) in [
                    (None, 0, false, false),
                    (Some(3), 0, true, false),
                    (None, 50_000, true, true),
                    (Some(6), 1_000, false, true),
                ] {
                    let q = Query {
                        policy,
                        direction,
                        max_hops,
                        min_value,
                        seed_outputs: seeds_mem.clone(),
                        stop_addresses: if stop { stops.clone() } else { HashSet::new() },
                        blocked_txs: if block {
                            blocked.clone()
                        } else {
                            HashSet::new()
                        },
                    };
                    let want = run(&Backend::Cpu, &g, &q).expect("in memory");
                    let sq = StoredQuery {
                        policy,
                        direction,
                        max_hops,
                        min_value,
                        seeds: seeds.clone(),
                        stop_addresses: q.stop_addresses.iter().map(|&a| u64::from(a)).collect(),
                        blocked_txs: q.blocked_txs.iter().map(|&t| u64::from(t)).collect(),
                    };
                    // Every other case pages everything through scratch files; the wider
                    // blocks run the first two cases only (the debug build is slow).
                    if bits > 4 && cases % 4 >= 2 {
                        cases += 1;
                        continue;
                    }
                    let mem = if cases % 2 == 0 { 0usize } else { 64 << 20 };
                    {
                        let scratch = tempfile::tempdir().expect("scratch");
                        let budget = Budget {
                            mem_bytes: mem,
                            scratch: scratch.path().to_path_buf(),
                        };
                        let (wh2, sq2) = (wh.clone(), sq.clone());
                        let got =
                            tokio::task::spawn_blocking(move || run_stored(&wh2, &sq2, &budget))
                                .await
                                .expect("join")
                                .expect("stored run");
                        let what = format!(
                            "bits {bits} {policy:?} {direction:?} hops {max_hops:?} min {min_value} stop {stop} blocked {block} mem {mem}"
                        );
                        assert_eq!(got.steps, want.steps, "steps: {what}");
                        let a: Vec<(u64, u32, u32, i64)> = got
                            .rows
                            .iter()
                            .map(|r| (r.output_id, r.hop, r.fraction.to_bits(), r.tainted_value))
                            .collect();
                        let b: Vec<(u64, u32, u32, i64)> = want
                            .rows
                            .iter()
                            .map(|r| {
                                (
                                    u64::from(r.output),
                                    r.hop,
                                    r.fraction.to_bits(),
                                    r.tainted_value,
                                )
                            })
                            .collect();
                        assert_eq!(a.len(), b.len(), "rows: {what}");
                        assert_eq!(a, b, "{what}");
                        assert!(!a.is_empty(), "nothing tainted: {what}");
                        // The joined columns are the chain's.
                        for r in got.rows.iter().take(50) {
                            let o = r.output_id as usize;
                            assert_eq!(r.value, g.out_value[o].max(0), "{what}");
                            let t = g.tx_of_output(r.output_id as u32) as usize;
                            assert_eq!(
                                r.txid,
                                ferret_kernels::taint::graph::hex_encode(&g.txids[t])
                            );
                            assert_eq!(r.vout, r.output_id as u32 - g.out_start[t]);
                        }
                        if mem == 0 {
                            assert!(got.stats.blocks_spilled > 0, "{what}: {:?}", got.stats);
                        }
                        runs += 1;
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 24);
    }
    assert_eq!(runs, 36);
}
