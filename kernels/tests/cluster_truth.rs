//! Clustering generated chains against the generator's truth (truth/entities.csv and
//! truth/coinjoins.csv): Whirlpool tx0s and 5×5 mixes with remixes, Wasabi 1.x and 2
//! rounds, JoinMarket, a coordinator of its own kind, exchange batch payouts of equal
//! amounts that are not CoinJoins, and scam operations mixing with users.
//!
//! Asserted: pairwise precision ≥ 0.99 and recall ≥ 0.95 (of what common-input
//! ownership recovers with the true CoinJoins left out), no CoinJoin whose participants
//! end up in one cluster, every planted mix caught and ≥ 95% named by the right
//! detector, detector precision ≥ 0.95 per protocol; with the detectors off CoinJoins do
//! merge participants (the harness can fail); GPU and CPU partitions identical.

use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::labels::import;
use ferret_kernels::cluster::accuracy::{Accuracy, Truth, evaluate};
use ferret_kernels::cluster::{ClusterOptions, cluster_btc};
use ferret_kernels::coinjoin::Detectors;
use ferret_kernels::device::{Backend, DeviceChoice, select};
use ferret_schemas::Warehouse;
use ferret_testkit::synth::btc::{SynthConfig, generate};

async fn chain(seed: u64, tmp: &std::path::Path) -> (Warehouse, Truth) {
    let cfg = SynthConfig {
        blocks: 200,
        seed,
        txs_per_block: 60,
        ..Default::default()
    };
    generate(&cfg, tmp).expect("generate");
    let wh = Warehouse::open(&format!("memory://cluster-truth-{seed}")).expect("open");
    index_btc(&wh, &IndexOptions::new(tmp.join("blocks")))
        .await
        .expect("index");
    import(
        &wh,
        &[tmp.join("truth/labels.csv")],
        &Default::default(),
        false,
    )
    .await
    .expect("labels");
    (wh, Truth::from_dir(&tmp.join("truth")).expect("truth"))
}

fn check(a: &Accuracy) {
    assert!(a.precision >= 0.99, "pairwise precision {}", a.precision);
    assert!(a.recall >= 0.95, "pairwise recall {}", a.recall);
    assert!(
        a.coinjoins_checked > 20,
        "CoinJoins with several owners: {}",
        a.coinjoins_checked
    );
    assert_eq!(
        a.merged_coinjoins, 0,
        "CoinJoins whose participants were merged"
    );
    for p in [
        "whirlpool",
        "whirlpool_tx0",
        "wasabi1",
        "wasabi2",
        "joinmarket",
        "generic",
    ] {
        let s = a
            .protocols
            .get(p)
            .unwrap_or_else(|| panic!("no {p} planted"));
        assert!(s.planted > 0, "{p}: none planted");
        assert_eq!(s.caught, s.planted, "{p}: every planted one is caught");
        if p != "generic" {
            assert!(
                s.named as f64 >= 0.95 * s.planted as f64,
                "{p}: named {} of {}",
                s.named,
                s.planted
            );
            assert!(
                s.detected_right as f64 >= 0.95 * s.detected as f64,
                "{p}: precision {} of {}",
                s.detected_right,
                s.detected
            );
        }
    }
    assert!(
        a.false_detections as f64 <= 0.05 * a.detections as f64,
        "{} of {} detections are not CoinJoins",
        a.false_detections,
        a.detections
    );
}

#[tokio::test]
async fn clusters_match_the_generator_truth() {
    for seed in [17u64, 5] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (wh, truth) = chain(seed, tmp.path()).await;
        let opts = ClusterOptions::default();
        let (cpu, acc) = evaluate(&wh, &Backend::Cpu, &opts, &truth)
            .await
            .expect("evaluate");
        eprintln!("seed {seed}:\n{acc}");
        check(&acc);
        let c = &cpu.clusters;
        assert!(c.linked_transactions > 100);
        // cluster_id is the smallest address id of the cluster; sizes agree.
        for (i, &id) in c.cluster_id.iter().enumerate() {
            assert!(id as usize <= i && c.cluster_id[id as usize] == id);
            assert_eq!(c.cluster_size[id as usize], c.cluster_size[i]);
        }
        let biggest = c.cluster_size.iter().max().copied().unwrap_or(0);
        assert!(biggest > 10, "largest cluster {biggest}");

        // The detectors are what keeps CoinJoin participants apart.
        let off = ClusterOptions {
            detectors: Detectors {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let (_, naive) = evaluate(&wh, &Backend::Cpu, &off, &truth)
            .await
            .expect("evaluate");
        assert!(
            naive.merged_coinjoins > 0 && naive.precision < acc.precision,
            "without the detectors CoinJoins merge participants: {naive}"
        );

        match select(DeviceChoice::Gpu) {
            Ok(gpu) => {
                let g = cluster_btc(&wh, &gpu, &opts).await.expect("gpu cluster");
                let c2 = cluster_btc(&wh, &Backend::Cpu, &opts)
                    .await
                    .expect("cluster");
                assert_eq!(g, c2, "GPU and CPU clusters are identical");
                assert_eq!(c2.clusters, cpu.clusters);
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
}
