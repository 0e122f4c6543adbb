//! The Ethereum ground truth: `ferret synth eth` drives anvil through an economy with
//! planted scam operations, `ferret index eth` ingests it, and the account-model kernels
//! must find every planted cash-out at its planted hop with its amount within 1e-6, in
//! ETH and in the stablecoin, on the GPU as on the CPU (the same figures); the haircut's
//! tainted addresses must be exactly those of an independent pass with exact balances;
//! deposit-address clustering must never merge two owners.

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
                    (value - amount).abs() <= 1e-6 * amount,
                    "{device} {asset}: {c:?} got {value}"
                );
            }
            // Every exchange a cash-out swept into is reported as an exit.
            assert!(report.contains("exits received taint"), "{report}");
            by_device.push(found);
        }
        if let [cpu, gpu] = &by_device[..] {
            // The pool's arithmetic is integer on both paths: the same figures.
            assert_eq!(cpu, gpu, "{asset}: cpu and gpu");
        }
        // Exactly the addresses an exact pass taints, with the same amounts.
        let want = exact_haircut(&wh, asset).await;
        assert!(want.len() > 10, "{asset}: the exact pass reached {want:?}");
        let got: HashMap<&String, f64> = by_device[0].iter().map(|(a, (_, v))| (a, *v)).collect();
        let mut missing: Vec<&String> = want.keys().filter(|a| !got.contains_key(a)).collect();
        let mut extra: Vec<&&String> = got.keys().filter(|a| !want.contains_key(**a)).collect();
        missing.sort();
        extra.sort();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{asset}: not reached {missing:?}, reached beyond the exact set {extra:?}"
        );
        for (a, v) in &want {
            let g = got[a];
            assert!(
                (g - v).abs() <= 1e-6 * v.abs(),
                "{asset} {a}: {g} vs exact {v}"
            );
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

/// The haircut pool computed independently from `eth.transfers`: exact integer balances,
/// each pool's tainted share in f64 (never a difference), seeds the `scam` labels, stops
/// the `exchange` labels. Returns every reached address with the taint it received.
async fn exact_haircut(wh: &Warehouse, asset: &str) -> HashMap<String, f64> {
    let labels = common::query(
        wh,
        "SELECT address, category FROM labels WHERE chain = 'eth'",
    )
    .await;
    let (mut seeds, mut stops) = (HashSet::new(), HashSet::new());
    for l in &labels {
        let (a, c) = l.split_once('|').expect("row");
        match c {
            "scam" => seeds.insert(a.to_string()),
            "exchange" => stops.insert(a.to_string()),
            _ => false,
        };
    }
    let rows = common::query(
        wh,
        &format!(
            "SELECT from_address, to_address, value_string FROM eth.transfers \
             WHERE lower(asset) = lower('{asset}') ORDER BY block_number, transaction_index, ordinal"
        ),
    )
    .await;
    let mut pools: HashMap<String, (u128, f64)> = HashMap::new();
    let mut reached: HashMap<String, f64> = HashMap::new();
    for r in &rows {
        let p: Vec<&str> = r.split('|').collect();
        let (from, to, a) = (p[0], p[1], p[2].parse::<u128>().expect("amount fits u128"));
        if seeds.contains(from) {
            reached.entry(from.to_string()).or_insert(0.0);
        }
        if seeds.contains(to) {
            reached.entry(to.to_string()).or_insert(0.0);
        }
        let (b, f) = pools.entry(from.to_string()).or_insert((0, 0.0));
        if *b < a {
            *f *= if a == 0 { 0.0 } else { *b as f64 / a as f64 };
            *b = a;
        }
        let share = if seeds.contains(from) {
            1.0
        } else if stops.contains(from) || a == 0 {
            0.0
        } else {
            *f
        };
        *b -= a;
        if *b == 0 {
            *f = 0.0;
        }
        if share > 0.0 {
            *reached.entry(to.to_string()).or_insert(0.0) += a as f64 * share;
        }
        let (b, f) = pools.entry(to.to_string()).or_insert((0, 0.0));
        let sum = *b + a;
        if sum > 0 {
            *f = (*f * (*b as f64 / sum as f64) + share * (a as f64 / sum as f64)).min(1.0);
        }
        *b = sum;
    }
    reached
}
