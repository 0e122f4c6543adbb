//! Clustering a generated chain: the GPU equals the CPU, cluster ids are the smallest
//! address id of their cluster, the CoinJoin rule changes the result, and the pairwise
//! precision against the generator's truth (truth/entities.csv) is at least 0.99.
//!
//! Precision must reach 0.99 and no cluster may join two entities; with the CoinJoin
//! rule switched off, CoinJoins do merge entities (so the rule is what keeps them apart).

use std::collections::HashMap;

use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::synth::btc::{SynthConfig, generate};
use ferret_kernels::cluster::{CoinJoinRule, cluster_btc};
use ferret_kernels::device::{Backend, DeviceChoice, select};
use ferret_schemas::Warehouse;

fn entities(dir: &std::path::Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("truth/entities.csv"))
        .expect("entities.csv")
        .lines()
        .skip(1)
        .map(|l| {
            let (a, e) = l.split_once(',').expect("address,entity_id");
            (a.to_string(), e.to_string())
        })
        .collect()
}

/// Pairwise precision: of all address pairs put in one cluster, the share owned by one
/// entity. Also returns how many clusters hold more than one entity. Addresses the truth
/// does not know (the generator lists no owner for P2PK outputs, to which Ferret gives
/// the key's P2PKH address, nor for the genesis coinbase) are left out.
fn precision(
    c: &ferret_kernels::cluster::Clusters,
    truth: &HashMap<String, String>,
) -> (f64, usize) {
    let mut by_cluster: HashMap<u32, HashMap<&str, u64>> = HashMap::new();
    for (i, a) in c.addresses.iter().enumerate() {
        let Some(e) = truth.get(a) else { continue };
        *by_cluster
            .entry(c.cluster_id[i])
            .or_default()
            .entry(e.as_str())
            .or_default() += 1;
    }
    let (mut same, mut all, mut mixed) = (0u64, 0u64, 0usize);
    for ents in by_cluster.values() {
        let n: u64 = ents.values().sum();
        all += n * (n - 1) / 2;
        same += ents.values().map(|k| k * (k - 1) / 2).sum::<u64>();
        mixed += usize::from(ents.len() > 1);
        if ents.len() > 1 && std::env::var("CLUSTER_DEBUG").is_ok() {
            eprintln!("mixed cluster: {ents:?}");
        }
    }
    (
        if all == 0 {
            1.0
        } else {
            same as f64 / all as f64
        },
        mixed,
    )
}

#[tokio::test]
async fn clusters_match_the_generator_truth() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 200,
        seed: 17,
        txs_per_block: 60,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://cluster-truth").expect("open");
    index_btc(&wh, &IndexOptions::new(tmp.path().join("blocks")))
        .await
        .expect("index");
    let truth = entities(tmp.path());
    let p2pk = ferret_kernels_test_p2pk_count(&wh).await;

    let cpu = cluster_btc(&wh, &Backend::Cpu, &CoinJoinRule::default())
        .await
        .expect("cluster");
    assert!(cpu.linked_transactions > 100);
    let (p, mixed) = precision(&cpu, &truth);
    eprintln!(
        "addresses {} clusters {} precision {p:.5} mixed {mixed} coinjoins skipped {}",
        cpu.addresses.len(),
        cpu.cluster_id
            .iter()
            .enumerate()
            .filter(|&(i, &c)| c as usize == i)
            .count(),
        cpu.coinjoins_skipped
    );
    assert!(p >= 0.99, "pairwise precision {p}");
    assert_eq!(mixed, 0, "no cluster joins two entities");
    assert!(cpu.coinjoins_skipped > 0, "the generator plants CoinJoins");
    let unknown = cpu
        .addresses
        .iter()
        .filter(|a| !truth.contains_key(*a))
        .count();
    assert!(
        unknown <= p2pk + 1,
        "{unknown} addresses without an owner, {p2pk} p2pk outputs"
    );
    // cluster_id is the smallest address id of the cluster; sizes add up.
    for (i, &c) in cpu.cluster_id.iter().enumerate() {
        assert!(c as usize <= i && cpu.cluster_id[c as usize] == c);
    }

    // Multi-input transactions of one owner link addresses: clusters grow past one.
    let biggest = cpu.cluster_size.iter().max().copied().unwrap_or(0);
    assert!(biggest > 10, "largest cluster {biggest}");
    let sizes_ok = cpu
        .cluster_id
        .iter()
        .zip(&cpu.cluster_size)
        .all(|(&c, &size)| cpu.cluster_size[c as usize] == size);
    assert!(sizes_ok, "every member carries its cluster's size");

    let naive = cluster_btc(
        &wh,
        &Backend::Cpu,
        &CoinJoinRule {
            enabled: false,
            ..Default::default()
        },
    )
    .await
    .expect("cluster");
    assert!(
        precision(&naive, &truth).1 > 0,
        "without the rule CoinJoins merge entities"
    );

    match select(DeviceChoice::Gpu) {
        Ok(gpu) => {
            let g = cluster_btc(&wh, &gpu, &CoinJoinRule::default())
                .await
                .expect("gpu cluster");
            assert_eq!(g, cpu, "GPU and CPU clusters are identical");
        }
        Err(e) => {
            assert!(
                std::env::var("FERRET_REQUIRE_ALL").is_err(),
                "GPU required: {e}"
            );
            eprintln!("skipping GPU half: {e}");
        }
    }
}

/// P2PK outputs in the warehouse (their owners are not in the truth files).
async fn ferret_kernels_test_p2pk_count(wh: &Warehouse) -> usize {
    use arrow::array::AsArray;
    let m = wh
        .load_manifest(ferret_schemas::Chain::Btc)
        .await
        .expect("manifest")
        .expect("committed");
    let mut n = 0;
    for f in m.files_of("outputs") {
        for b in wh
            .read_columns(&f.path, &["script_type"])
            .await
            .expect("read")
        {
            n += b
                .column(0)
                .as_string::<i32>()
                .iter()
                .filter(|t| *t == Some("p2pk"))
                .count();
        }
    }
    n
}
