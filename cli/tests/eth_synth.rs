//! The Ethereum ground truth: `ferret synth eth` drives anvil through an economy with
//! planted scam operations, `ferret index eth` ingests it, and the account-model kernels
//! must find every planted cash-out at its planted hop with its amount within 1 %, in ETH
//! and in the stablecoin, on the GPU as on the CPU; deposit-address clustering must never
//! merge two owners.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ferret_schemas::Warehouse;

fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let head: Vec<String> = lines
        .next()
        .expect("header")
        .split(',')
        .map(String::from)
        .collect();
    lines
        .map(|l| {
            head.iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_cashouts_are_found_and_clusters_are_pure() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("synth");
    let wh_path = tmp.path().join("wh");
    let wh_url = wh_path.to_str().expect("utf8");
    let summary = common::ok(common::ferret(&[
        "synth",
        "eth",
        "--rpc",
        node.url(),
        "--out",
        out.to_str().expect("utf8"),
        "--seed",
        "7",
        "--blocks",
        "24",
        "--txs-per-block",
        "24",
        "--users",
        "50",
    ]));
    assert!(summary.contains("planted cash-outs"), "{summary}");
    common::ok(common::ferret(&[
        "index",
        "eth",
        "--rpc",
        node.url(),
        "--warehouse",
        wh_url,
    ]));
    common::ok(common::ferret(&[
        "labels",
        "import",
        "--warehouse",
        wh_url,
        out.join("truth/labels.csv").to_str().expect("utf8"),
    ]));
    let wh = Warehouse::open(wh_url).expect("open");
    // The planned reverts are on the chain as failed transactions and move nothing.
    let failed = common::scalar(
        &wh,
        "SELECT COUNT(*) FROM eth.transactions WHERE NOT success",
    )
    .await;
    assert!(failed.parse::<u64>().expect("count") > 0);
    assert_eq!(
        common::scalar(
            &wh,
            "SELECT COUNT(*) FROM eth.transfers f JOIN eth.transactions t USING (block_number, transaction_index) WHERE NOT t.success",
        )
        .await,
        "0"
    );

    let cashouts = csv_rows(&out.join("truth/cashouts.csv"));
    assert!(cashouts.len() >= 8, "{cashouts:?}");
    let assets: HashSet<String> = cashouts.iter().map(|c| c["asset"].clone()).collect();
    assert_eq!(assets.len(), 2, "ETH and the stablecoin: {assets:?}");
    for asset in &assets {
        let mut by_device = Vec::new();
        for device in ["cpu", "gpu"] {
            if device == "gpu" && !common::require_all() {
                // Without FERRET_REQUIRE_ALL a machine may lack a Vulkan device.
                continue;
            }
            let report = common::ok(common::ferret(&[
                "taint",
                "eth",
                "--warehouse",
                wh_url,
                "--seed-category",
                "scam",
                "--stop-at",
                "exchange",
                "--asset",
                asset,
                "--device",
                device,
            ]));
            let rows = common::query(
                &wh,
                "SELECT address, hop, tainted_value FROM eth_taint ORDER BY address",
            )
            .await;
            let found: HashMap<String, (u32, f64)> = rows
                .iter()
                .map(|r| {
                    let p: Vec<&str> = r.split('|').collect();
                    (
                        p[0].to_string(),
                        (p[1].parse().expect("hop"), p[2].parse().expect("value")),
                    )
                })
                .collect();
            for c in cashouts.iter().filter(|c| &c["asset"] == asset) {
                let (hop, value) = found.get(&c["exit"]).unwrap_or_else(|| {
                    panic!("{device} {asset}: cash-out {c:?} not reached\n{report}")
                });
                let amount: f64 = c["amount"].parse().expect("amount");
                assert_eq!(hop.to_string(), c["hops"], "{device} {asset}: {c:?}");
                assert!(
                    (value - amount).abs() <= 0.01 * amount,
                    "{device} {asset}: {c:?} got {value}"
                );
            }
            // Every exchange a cash-out swept into is reported as an exit.
            assert!(report.contains("exits received taint"), "{report}");
            by_device.push(found);
        }
        if let [cpu, gpu] = &by_device[..] {
            assert_eq!(cpu.len(), gpu.len());
            for (a, (h, v)) in cpu {
                let (gh, gv) = gpu[a];
                assert_eq!(*h, gh, "{a}");
                assert!(
                    (v - gv).abs() <= 1e-4 * v.abs().max(1.0),
                    "{a}: cpu {v} gpu {gv}"
                );
            }
        }
    }
    // The same from SQL: eth_taint(...) computes what the stored run holds.
    let eth_cashouts: Vec<&HashMap<String, String>> =
        cashouts.iter().filter(|c| c["asset"] == "ETH").collect();
    let from_sql = common::query(
        &wh,
        "SELECT address, hop FROM eth_taint('category:scam', 'haircut', 'ETH', NULL, 'forward', 'exchange') ORDER BY address",
    )
    .await;
    let hops: HashMap<&str, &str> = from_sql.iter().filter_map(|r| r.split_once('|')).collect();
    for c in eth_cashouts {
        assert_eq!(
            hops.get(c["exit"].as_str()),
            Some(&c["hops"].as_str()),
            "SQL eth_taint: {c:?}"
        );
    }
    let err = ferret_query::run_sql(
        &ferret_query::session(&wh).await.expect("session"),
        "SELECT * FROM eth_taint('category:scam', 'fifo')",
    )
    .await
    .expect_err("fifo is not an account policy");
    assert!(
        err.to_string()
            .contains("unknown policy `fifo` for accounts"),
        "{err}"
    );

    // Poison over every asset reaches every exit too.
    common::ok(common::ferret(&[
        "taint",
        "eth",
        "--warehouse",
        wh_url,
        "--seed-category",
        "scam",
        "--stop-at",
        "exchange",
        "--policy",
        "poison",
        "--asset",
        "*",
    ]));
    let reached: HashSet<String> = common::query(&wh, "SELECT address FROM eth_taint")
        .await
        .into_iter()
        .collect();
    for c in &cashouts {
        assert!(reached.contains(&c["exit"]), "poison missed {c:?}");
    }

    // Deposit-address clusters: never two owners in one cluster; the operator's cash-out
    // addresses are tied to its layering wallets; some users' two wallets are joined.
    common::ok(common::ferret(&["cluster", "eth", "--warehouse", wh_url]));
    let entity: HashMap<String, String> = csv_rows(&out.join("truth/entities.csv"))
        .into_iter()
        .map(|r| (r["address"].clone(), r["entity_id"].clone()))
        .collect();
    let mut clusters: HashMap<String, Vec<String>> = HashMap::new();
    for r in common::query(&wh, "SELECT address, cluster_id FROM eth_clusters").await {
        let (a, c) = r.split_once('|').expect("two columns");
        clusters
            .entry(c.to_string())
            .or_default()
            .push(a.to_string());
    }
    assert!(!clusters.is_empty());
    for members in clusters.values() {
        let owners: HashSet<&String> = members.iter().map(|a| &entity[a]).collect();
        assert_eq!(owners.len(), 1, "a cluster mixes owners: {members:?}");
    }
    let clustered: HashSet<&String> = clusters.values().flatten().collect();
    for c in &cashouts {
        assert!(
            clustered.contains(&c["exit"]),
            "cash-out address {} not clustered",
            c["exit"]
        );
    }
    assert!(
        clusters.values().any(|m| m.len() >= 3),
        "no user's two wallets were joined through their deposit address"
    );
}
