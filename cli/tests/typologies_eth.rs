//! `ferret typologies eth` on a real node: `ferret synth eth --typologies` drives anvil
//! through approval phishing (owners approve a spender that then drains them), address
//! poisoning (zero-value transfers from a victim to look-alikes of its counterparties) and
//! victim collection, and swaps of the scam's ETH into the stablecoin on a pool logged as
//! a Uniswap V2 pair; among their look-alikes (a payment router owners approve and pay
//! through, zero-value transfers between strangers, a multisend contract many call,
//! exchanges, DEX users buying round sums of the stablecoin and selling it). Precision and recall per pattern are measured against
//! `truth/typologies.csv`; innocent entities are never accused; the harness fails
//! detectors broken either way.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use arrow::array::{Array, AsArray};
use common::*;
use ferret_schemas::Warehouse;

#[derive(Debug)]
struct Row {
    pattern: String,
    chain: String,
    address: String,
    txids: Vec<String>,
    features: serde_json::Value,
}

async fn findings(wh: &str) -> Vec<Row> {
    let wh = Warehouse::open(wh).expect("open");
    let mut out = Vec::new();
    for b in wh.read_latest("typologies").await.expect("typologies") {
        let s = |n: &str| b.column_by_name(n).expect(n).as_string::<i32>().clone();
        let (pattern, chain, address, features) =
            (s("pattern"), s("chain"), s("address"), s("features"));
        let txids = b
            .column_by_name("txids")
            .expect("txids")
            .as_list::<i32>()
            .clone();
        for r in 0..b.num_rows() {
            let t = txids.value(r);
            let t = t.as_string::<i32>();
            out.push(Row {
                pattern: pattern.value(r).into(),
                chain: chain.value(r).into(),
                address: address.value(r).to_lowercase(),
                txids: (0..t.len()).map(|k| t.value(k).to_string()).collect(),
                features: serde_json::from_str(features.value(r)).expect("JSON"),
            });
        }
    }
    out
}

/// (pattern, address, txids) of each plant.
fn plants(truth: &Path) -> Vec<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(truth.join("typologies.csv")).expect("typologies.csv");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_string(),
                f[1].to_lowercase(),
                f[4].split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            )
        })
        .collect()
}

fn entities(truth: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(truth.join("entities.csv")).expect("entities.csv");
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(a, e)| (a.to_lowercase(), e.to_string()))
        .collect()
}

/// Per pattern: precision, recall, findings, plants (collection plants: paid at least
/// 20 times). A finding matches a plant with its address.
fn report(found: &[Row], truth: &Path) -> HashMap<&'static str, (f64, f64, usize, usize)> {
    let plants = plants(truth);
    let mut out = HashMap::new();
    for p in [
        "approval_phishing",
        "address_poisoning",
        "victim_collection",
        "stablecoin_swap",
        "peel_chain",
        "pass_through",
        "fan_out",
        "coinjoin",
    ] {
        let f: Vec<&Row> = found
            .iter()
            .filter(|r| r.pattern == p && r.chain == "eth")
            .collect();
        let all: HashSet<&str> = plants
            .iter()
            .filter(|x| x.0 == p)
            .map(|x| x.1.as_str())
            .collect();
        let visible: Vec<&str> = plants
            .iter()
            .filter(|x| x.0 == p && (p != "victim_collection" || x.2.len() >= 20))
            .map(|x| x.1.as_str())
            .collect();
        let tp = f
            .iter()
            .filter(|r| all.contains(r.address.as_str()))
            .count();
        let hit = visible
            .iter()
            .filter(|a| f.iter().any(|r| r.address == **a))
            .count();
        out.insert(
            p,
            (
                tp as f64 / f.len().max(1) as f64,
                hit as f64 / visible.len().max(1) as f64,
                f.len(),
                visible.len(),
            ),
        );
    }
    out
}

/// Findings whose address belongs to someone other than the pattern's culprit.
fn accused(found: &[Row], truth: &Path) -> Vec<(String, String, String)> {
    let owners = entities(truth);
    found
        .iter()
        .filter_map(|r| {
            let owner = owners.get(&r.address).cloned().unwrap_or_default();
            let culprit = match r.pattern.as_str() {
                "approval_phishing" => "phisher-",
                "address_poisoning" => "poisoner-",
                // Using a mixer is a fact about an address, not an accusation: users mix
                // too. The truth lists every depositor.
                "coinjoin" => return None,
                _ => "scam-",
            };
            (!owner.starts_with(culprit)).then(|| (r.pattern.clone(), r.address.clone(), owner))
        })
        .collect()
}

/// `ferret synth eth --typologies` on the node: 30 blocks of 20 transactions, 100 users,
/// 60 victims per operation.
fn synth(rpc: &str, out: &Path, seed: u64) {
    synth_with(
        rpc,
        out,
        seed,
        &[
            "--blocks",
            "30",
            "--txs-per-block",
            "20",
            "--users",
            "100",
            "--victims",
            "60",
            "--typologies",
        ],
    );
}

/// `ferret synth eth` on the node with the scenario's arguments `args`.
fn synth_with(rpc: &str, out: &Path, seed: u64, args: &[&str]) {
    let seed = seed.to_string();
    let mut a = vec![
        "synth",
        "eth",
        "--rpc",
        rpc,
        "--out",
        out.to_str().expect("utf8"),
        "--seed",
        &seed,
    ];
    a.extend_from_slice(args);
    ok(ferret(&a));
}

/// Indexes the node into `wh`, imports the truth's labels and clusters: what every
/// typologies run here starts from.
fn index_label_cluster(rpc: &str, wh: &str, truth: &Path) {
    ok(ferret(&["index", "eth", "--rpc", rpc, "--warehouse", wh]));
    import_labels(wh, truth);
    ok(ferret(&["cluster", "eth", "--warehouse", wh]));
}

fn import_labels(wh: &str, truth: &Path) {
    ok(ferret(&[
        "labels",
        "import",
        "--warehouse",
        wh,
        "--chain",
        "eth",
        "--source",
        "truth",
        truth.join("labels.csv").to_str().expect("utf8"),
    ]));
}

/// The scenario's stablecoin contract (no mainnet one: named with `--stablecoin`).
fn stablecoin(truth: &Path) -> String {
    entities(truth)
        .into_iter()
        .find(|(_, e)| e == "contract-ferretusd")
        .map(|(a, _)| a)
        .expect("the stablecoin's contract")
}

const FLOOR: [(&str, f64, f64); 8] = [
    ("peel_chain", 0.9, 0.9),
    ("coinjoin", 0.9, 0.9),
    ("fan_out", 0.9, 0.9),
    ("approval_phishing", 0.9, 0.9),
    ("address_poisoning", 0.9, 0.9),
    ("victim_collection", 0.9, 0.9),
    ("stablecoin_swap", 0.9, 0.9),
    ("pass_through", 0.9, 0.9),
];

/// The detector's event topics are Uniswap's: V2's is the one the test pool emits
/// (checked against its ABI), V3's the hash of its signature.
#[test]
fn the_swap_topics_are_uniswaps() {
    use alloy::sol_types::SolEvent;
    use ferret_query::typologies::{
        BALANCER_SWAP_TOPIC, CURVE_CRYPTO_EXCHANGE_TOPIC, CURVE_EXCHANGE_TOPIC,
        CURVE_UNDERLYING_TOPIC, DEX_SWAP_TOPICS, SWAP_V2_TOPIC, SWAP_V3_TOPIC,
    };
    assert_eq!(
        SWAP_V2_TOPIC,
        format!(
            "{:#x}",
            ferret_testkit::contracts::IPool::Swap::SIGNATURE_HASH
        )
    );
    assert_eq!(
        SWAP_V3_TOPIC,
        format!(
            "{:#x}",
            alloy::primitives::keccak256(
                "Swap(address,address,int256,int256,uint160,uint128,int24)"
            )
        )
    );
    // Curve's stableswap event is the one the test's Curve-style pool emits.
    assert_eq!(
        CURVE_EXCHANGE_TOPIC,
        format!(
            "{:#x}",
            ferret_testkit::contracts::IPool::TokenExchange::SIGNATURE_HASH
        )
    );
    for (topic, signature) in [
        (
            CURVE_CRYPTO_EXCHANGE_TOPIC,
            "TokenExchange(address,uint256,uint256,uint256,uint256)",
        ),
        (
            CURVE_UNDERLYING_TOPIC,
            "TokenExchangeUnderlying(address,int128,uint256,int128,uint256)",
        ),
        (
            BALANCER_SWAP_TOPIC,
            "Swap(bytes32,address,address,uint256,uint256)",
        ),
    ] {
        assert_eq!(
            topic,
            format!("{:#x}", alloy::primitives::keccak256(signature)),
            "{signature}"
        );
    }
    let distinct: std::collections::BTreeSet<&str> = DEX_SWAP_TOPICS.into_iter().collect();
    assert_eq!(distinct.len(), DEX_SWAP_TOPICS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_typologies_are_found_on_a_real_node() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("synth");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    synth(node.url(), &out, 5);
    let truth = out.join("truth");
    index_label_cluster(node.url(), &wh, &truth);
    // The scenario's stablecoin is no mainnet one: it is named.
    let usd = stablecoin(&truth);
    let stable = format!("{usd}:6");
    let printed = ok(ferret(&[
        "typologies",
        "eth",
        "--warehouse",
        &wh,
        "--stablecoin",
        &stable,
        "--device",
        "cpu",
    ]));
    assert!(printed.contains("approval_phishing"), "{printed}");
    assert!(printed.contains("stablecoin_swap"), "{printed}");
    let found = findings(&wh).await;
    let figures = report(&found, &truth);
    for (p, min_p, min_r) in FLOOR {
        let (precision, recall, n, plants) = figures[p];
        eprintln!(
            "eth {p}: {n} findings, {plants} plants, precision {precision:.3}, recall {recall:.3}"
        );
        assert!(plants > 0, "no {p} plants");
        assert!(
            precision >= min_p && recall >= min_r,
            "{p}: precision {precision:.3} (floor {min_p}), recall {recall:.3} (floor {min_r})"
        );
    }
    let wrong = accused(&found, &truth);
    assert!(wrong.is_empty(), "innocent entities accused: {wrong:?}");
    // Swaps were found on both pools: the one logging Uniswap V2's `Swap` and the one
    // logging Curve's `TokenExchange`.
    let owners = entities(&truth);
    let pools: BTreeSet<String> = found
        .iter()
        .filter(|r| r.pattern == "stablecoin_swap")
        .flat_map(|r| r.features["pools"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| owners.get(p.as_str()?).cloned())
        .collect();
    assert_eq!(
        pools,
        BTreeSet::from([
            "contract-curve-pool".to_string(),
            "contract-pool".to_string()
        ])
    );
    for r in &found {
        let f = &r.features;
        match r.pattern.as_str() {
            "approval_phishing" => {
                assert!(f["owners_drained"].as_u64() >= Some(3), "{r:?}");
                assert_eq!(f["unlimited_approval_share"].as_f64(), Some(1.0), "{r:?}");
            }
            "address_poisoning" => {
                assert!(f["prefix_digits"].as_u64() >= Some(4), "{r:?}");
                assert!(f["suffix_digits"].as_u64() >= Some(4), "{r:?}");
                assert!(!r.txids.is_empty());
            }
            "coinjoin" => {
                assert!(f["deposits"].as_u64() >= Some(1), "{r:?}");
                let mixers = f["mixers"].as_object().expect("mixers");
                assert_eq!(mixers.values().next(), Some(&serde_json::json!("mixer-0")));
                // The operations' deposits come from collection addresses.
                let scam = entities(&truth)
                    .get(&r.address)
                    .is_some_and(|e| e.starts_with("scam-"));
                let also = f["other_patterns"].as_array().expect("other_patterns");
                assert_eq!(
                    scam,
                    also.contains(&serde_json::json!("victim_collection")),
                    "{r:?}"
                );
            }
            "fan_out" => {
                assert!(f["outputs"].as_u64() >= Some(12), "{r:?}");
                assert_eq!(f["thresholds"], serde_json::json!([1000.0]), "{r:?}");
                assert_eq!(f["recipients_paid_again"].as_f64(), Some(0.0), "{r:?}");
            }
            "peel_chain" => {
                let steps = f["steps"].as_u64().expect("steps");
                assert!((5..=7).contains(&steps), "{r:?}");
                let peels = f["peels"].as_u64().expect("peels");
                assert!((steps..=2 * steps).contains(&peels), "{r:?}");
                // Every peel and every remainder is its own transaction.
                assert_eq!(r.txids.len() as u64, peels + steps, "{r:?}");
                assert_eq!(f["asset"].as_str(), Some(usd.as_str()), "{r:?}");
                let share = f["median_peel_share"].as_f64().expect("share");
                assert!((0.03..=0.24).contains(&share), "{r:?}");
                let peeled: u128 = f["total_peeled"]
                    .as_str()
                    .expect("peeled")
                    .parse()
                    .expect("a number");
                let start: u128 = f["start_value"]
                    .as_str()
                    .expect("start")
                    .parse()
                    .expect("a number");
                let end: u128 = f["end_remainder"]
                    .as_str()
                    .expect("end")
                    .parse()
                    .expect("a number");
                assert_eq!(peeled + end, start, "{r:?}");
            }
            "pass_through" => {
                let hops = f["hops"].as_u64().expect("hops");
                assert!((3..=5).contains(&hops), "{r:?}");
                assert_eq!(r.txids.len() as u64, hops, "{r:?}");
                assert_eq!(f["value_kept"].as_f64(), Some(1.0), "{r:?}");
                assert_eq!(f["asset"].as_str(), Some(usd.as_str()), "{r:?}");
            }
            "stablecoin_swap" => {
                assert!(f["swaps"].as_u64() >= Some(1), "{r:?}");
                assert_eq!(f["stablecoin"].as_str(), Some(usd.as_str()), "{r:?}");
                let sources = f["sources"].as_object().expect("sources");
                assert!(!sources.is_empty(), "{r:?}");
                // The money came from a collection address (the swapper itself, or
                // the one that paid it).
                assert!(sources.values().all(|p| p == "victim_collection"), "{r:?}");
            }
            _ => assert!(f["payer_clusters"].as_u64() >= Some(20), "{r:?}"),
        }
    }
    // Phishing collectors sold drained stablecoins for ETH on the pool (swaps out of the
    // stablecoin by a finding's money): none of them is a stablecoin_swap finding (the
    // accusation check above), and the sells happened.
    let phishers: Vec<String> = entities(&truth)
        .into_iter()
        .filter(|(_, e)| e.starts_with("phisher-"))
        .map(|(a, _)| format!("'{a}'"))
        .collect();
    let sells = scalar(
        &Warehouse::open(&wh).expect("open"),
        &format!(
            "SELECT count(*) FROM eth.logs l
             JOIN eth.transactions t ON t.transaction_hash = l.transaction_hash
             WHERE l.topic0 = '{}' AND t.from_address IN ({})",
            ferret_query::typologies::SWAP_V2_TOPIC,
            phishers.join(", ")
        ),
    )
    .await;
    assert_ne!(sells, "0", "no collector sold on the pool");
    // Relays buy round sums with exact-output swaps; DEX users do too, but their money
    // is nobody's scam, so the round sums alone make no finding.
    let relays: Vec<&Row> = found
        .iter()
        .filter(|r| r.pattern == "stablecoin_swap" && r.features["own_money_swaps"] == 0)
        .collect();
    assert!(!relays.is_empty(), "no swap by a relay found");
    for r in relays {
        assert_eq!(r.features["round_sum_share"].as_f64(), Some(1.0), "{r:?}");
    }
    // The evidence is the planted transactions.
    let planted: HashSet<String> = plants(&truth)
        .into_iter()
        .filter(|p| p.0 != "victim_collection")
        .flat_map(|p| p.2)
        .collect();
    for r in found.iter().filter(|r| r.pattern != "victim_collection") {
        assert!(r.txids.iter().all(|t| planted.contains(t)), "{r:?}");
    }
    let w = Warehouse::open(&wh).expect("open");
    assert_eq!(
        scalar(
            &w,
            "SELECT count(*) FROM typology('address_poisoning') WHERE chain = 'eth'"
        )
        .await,
        found
            .iter()
            .filter(|r| r.pattern == "address_poisoning")
            .count()
            .to_string()
    );

    // A case seeded with the exchange a relay paid its stablecoins to, subscribed to
    // stablecoin swaps: the relay is alerted for paying the case's cluster, though the
    // case's taint (downstream of the exchange) never reaches it.
    let relay = found
        .iter()
        .find(|r| r.pattern == "stablecoin_swap" && r.features["own_money_swaps"] == 0)
        .map(|r| r.address.clone())
        .expect("a relay's swaps");
    let payee = scalar(
        &w,
        &format!(
            "SELECT min(to_address) FROM eth.token_transfers
             WHERE from_address = '{relay}' AND token_address = '{usd}'"
        ),
    )
    .await;
    let case = tmp.path().join("swap-case.toml");
    std::fs::write(
        &case,
        format!(
            "name = \"swap-1\"\nchains = [\"eth\"]\n[seeds]\naddresses = [\"{payee}\"]\n[taint]\npolicy = \"haircut\"\nhops = 1\n[alerts]\ntypologies = [\"stablecoin_swap\"]\n"
        ),
    )
    .expect("case");
    ok(ferret(&[
        "case",
        "run",
        case.to_str().expect("utf8"),
        "--warehouse",
        &wh,
        "--device",
        "cpu",
    ]));
    let alerts = query(
        &w,
        "SELECT address, detail FROM case_alerts WHERE \"case\" = 'swap-1' AND kind = 'typology'",
    )
    .await;
    assert!(
        alerts.iter().any(|l| l.starts_with(&format!("{relay}|"))
            && l.contains("paying a member of a seed's cluster")),
        "{relay} paid {payee}: {alerts:?}"
    );

    // Broken detectors fail the harness: out of reach, nothing is found; too loose,
    // innocent wallets are accused.
    ok(ferret(&[
        "typologies",
        "eth",
        "--warehouse",
        &wh,
        "--phishing-min-owners",
        "1000",
        "--poison-prefix",
        "20",
        "--poison-suffix",
        "20",
        "--victim-min-payers",
        "100000",
        "--pass-min-hops",
        "1000",
        "--peel-min-steps",
        "1000",
        "--fan-min-outputs",
        "1000",
        "--pattern",
        "peel_chain",
        "--pattern",
        "approval_phishing",
        "--pattern",
        "address_poisoning",
        "--pattern",
        "victim_collection",
        "--pattern",
        "pass_through",
        "--pattern",
        "fan_out",
        "--pattern",
        "stablecoin_swap",
    ]));
    // (Without the scenario's stablecoin named, no swap is one into a stablecoin.)
    let f = report(&findings(&wh).await, &truth);
    for (p, _, _) in FLOOR {
        assert_eq!(f[p].1, 0.0, "{p}: {:?}", f[p]);
    }
    ok(ferret(&[
        "typologies",
        "eth",
        "--warehouse",
        &wh,
        "--victim-min-payers",
        "2",
    ]));
    let found = findings(&wh).await;
    assert!(report(&found, &truth)["victim_collection"].0 < 0.9);
    assert!(!accused(&found, &truth).is_empty());
    // Two hops: the cash-out flows' forwards (a hop and the exit) pass too, and are no
    // layering chain the generator planted.
    ok(ferret(&[
        "typologies",
        "eth",
        "--warehouse",
        &wh,
        "--stablecoin",
        &stable,
        "--pass-min-hops",
        "2",
    ]));
    let loose = report(&findings(&wh).await, &truth)["pass_through"];
    assert!(loose.0 < 0.9, "{loose:?}");
    // No gas allowed: the hops whose gas the operations paid in ETH are no hops, and
    // half the layering and peel chains go unseen.
    ok(ferret(&[
        "typologies",
        "eth",
        "--warehouse",
        &wh,
        "--stablecoin",
        &stable,
        "--hop-max-gas",
        "0",
    ]));
    let f = report(&findings(&wh).await, &truth);
    for p in ["pass_through", "peel_chain"] {
        assert!(f[p].1 <= 0.75, "{p}: {:?}", f[p]);
    }

    // Bad arguments are clear errors.
    for (args, want) in [
        (
            vec!["--pattern", "coinjoin", "--pattern", "peel"],
            "unknown",
        ),
        (vec!["--peel-min-steps", "1"], "peel_min_steps"),
        (vec!["--poison-prefix", "0"], "poison_prefix"),
        (vec!["--phishing-min-owners", "1"], "phishing_min_owners"),
        (vec!["--stablecoin", "0x12"], "no address"),
        (
            vec![
                "--stablecoin",
                "0xdac17f958d2ee523a2206206994597c13d831ec7:six",
            ],
            "decimals",
        ),
        (vec!["--swap-max-delay=-1"], "swap_max_delay"),
        (vec!["--pass-min-hops", "1"], "pass_min_hops"),
        (vec!["--fan-min-outputs", "1"], "fan_min_outputs"),
        (vec!["--device", "tpu"], "unknown device"),
    ] {
        let mut a = vec!["typologies", "eth", "--warehouse", wh.as_str()];
        a.extend(args.iter().copied());
        let out = ferret(&a);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// The background alone (`ferret synth eth` without `--typologies`: users, exchanges,
/// DEX-free payments, multisends, the scam operations' victims and cash-out flows), dense
/// enough that ordinary users are paid by 20 and more people: every finding is about a
/// scam operation's address, and none accuses a user, an exchange or a contract. Without
/// the test that a collection address pays on to addresses it was the first to pay,
/// users are accused.
#[tokio::test(flavor = "multi_thread")]
async fn the_ethereum_background_alone_accuses_no_innocent_entity() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("synth");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    synth_with(
        node.url(),
        &out,
        12,
        &[
            "--blocks",
            "200",
            "--txs-per-block",
            "60",
            "--users",
            "300",
            "--victims",
            "60",
        ],
    );
    let truth = out.join("truth");
    index_label_cluster(node.url(), &wh, &truth);
    let usd = stablecoin(&truth);
    ok(ferret(&[
        "typologies",
        "eth",
        "--warehouse",
        &wh,
        "--stablecoin",
        &format!("{usd}:6"),
    ]));
    let found = findings(&wh).await;
    let mut per: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &found {
        *per.entry(r.pattern.as_str()).or_default() += 1;
    }
    eprintln!("eth background, seed 12: {per:?}");
    // The operations' collection addresses are found (the run is not empty) ...
    assert!(
        per.get("victim_collection").copied().unwrap_or(0) > 0,
        "{per:?}"
    );
    // ... and nobody else is accused.
    let wrong = accused(&found, &truth);
    assert!(wrong.is_empty(), "innocent entities accused: {wrong:?}");
    for p in ["approval_phishing", "address_poisoning", "coinjoin"] {
        assert!(!per.contains_key(p), "{p} on a chain without any: {per:?}");
    }
    // Broken on purpose: busy users are collection findings.
    ok(ferret(&[
        "typologies",
        "eth",
        "--warehouse",
        &wh,
        "--stablecoin",
        &format!("{usd}:6"),
        "--victim-min-new-recipients",
        "0",
    ]));
    let loose = findings(&wh).await;
    let wrong = accused(&loose, &truth);
    eprintln!(
        "eth background, no new-recipient test: {} accused",
        wrong.len()
    );
    assert!(
        wrong
            .iter()
            .any(|w| w.0 == "victim_collection" && w.2.starts_with("user-")),
        "{wrong:?}"
    );
}

/// Runs over the new blocks only equal runs over every block, at seven tips; nothing new
/// changes nothing; other rules start over; a damaged state is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_incremental_runs_equal_runs_over_every_block() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("synth");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    synth(node.url(), &out, 7);
    let truth = out.join("truth");
    let usd = stablecoin(&truth);
    let stable = format!("{usd}:6");
    let index = |to: Option<&str>| {
        let mut a = vec!["index", "eth", "--rpc", node.url(), "--warehouse", &wh];
        if let Some(to) = to {
            a.extend(["--to", to]);
        }
        ok(ferret(&a));
    };
    let run = |extra: &[&str]| {
        let mut a = vec![
            "typologies",
            "eth",
            "--warehouse",
            &wh,
            "--stablecoin",
            &stable,
        ];
        a.extend(extra.iter().copied());
        ok(ferret(&a))
    };
    index(Some("12"));
    import_labels(&wh, &truth);
    ok(ferret(&["cluster", "eth", "--warehouse", &wh]));
    let first = run(&[]);
    assert!(
        first.contains("full: no earlier run kept a state"),
        "{first}"
    );
    // Cuts before, during and after the victims' payments, the forwarding and the swaps.
    let mut last = "12".to_string();
    for to in [
        Some("17"),
        Some("21"),
        Some("22"),
        Some("23"),
        Some("24"),
        Some("28"),
        None,
    ] {
        index(to);
        let printed = run(&[]);
        assert!(
            printed.contains(&format!("incremental above block {last}")),
            "{printed}"
        );
        let incremental = typologies_table(&wh).await;
        let printed = run(&["--full"]);
        assert!(printed.contains("full: --full"), "{printed}");
        let full = typologies_table(&wh).await;
        assert!(!full.is_empty());
        assert_eq!(incremental, full, "up to {to:?}");
        last = to.unwrap_or_default().to_string();
    }
    let all = typologies_table(&wh).await;
    for p in [
        "approval_phishing",
        "address_poisoning",
        "victim_collection",
        "stablecoin_swap",
        "peel_chain",
        "pass_through",
        "fan_out",
        "coinjoin",
    ] {
        assert!(
            all.iter().any(|r| r.starts_with(&format!("{p}|"))),
            "no {p}"
        );
    }
    // Peel and pass-through chains ranked on the GPU and on its CPU twin: the same table.
    for device in ["cpu", "gpu"] {
        if device == "gpu" && !common::require_all() {
            continue;
        }
        run(&["--full", "--device", device]);
        assert_eq!(typologies_table(&wh).await, all, "ranked on {device}");
    }
    // Nothing new: the same table.
    let printed = run(&[]);
    assert!(printed.contains("incremental above block"), "{printed}");
    assert_eq!(typologies_table(&wh).await, all);
    // Other rules start over.
    let printed = run(&["--phishing-min-owners", "4"]);
    assert!(printed.contains("full: the rules differ"), "{printed}");
    // A damaged state: an error naming it; --full starts over.
    let state = newest_parquet(&tmp.path().join("wh/results/typologies_eth_state"));
    let mut bytes = std::fs::read(&state).expect("read");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&state, &bytes).expect("write");
    let out = ferret(&[
        "typologies",
        "eth",
        "--warehouse",
        &wh,
        "--stablecoin",
        &stable,
        "--phishing-min-owners",
        "4",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typologies_eth_state"), "{err}");
    run(&["--phishing-min-owners", "4", "--full"]);
}

/// A reorganisation below the last run's block: the next run starts over, says why, and
/// equals a run over every block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ethereum_reorganisation_below_the_last_run_starts_over() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let d = node.driver().await.expect("driver");
    let a = d.accounts.clone();
    let pay = |from: usize, to: usize, milli: u128| {
        let d = &d;
        let (f, t) = (a[from], a[to]);
        async move {
            d.exec(
                f,
                Some(t),
                alloy::primitives::U256::from(milli * 1_000_000_000_000_000),
                alloy::primitives::Bytes::new(),
                None,
            )
            .await
            .expect("pay")
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let index_and_run = || {
        ok(ferret(&[
            "index",
            "eth",
            "--rpc",
            node.url(),
            "--warehouse",
            &wh,
        ]));
        ok(ferret(&["typologies", "eth", "--warehouse", &wh]))
    };
    for (f, t, v) in [(0, 1, 900), (0, 2, 700), (1, 3, 400), (2, 9, 300)] {
        pay(f, t, v).await; // blocks 1 to 4
    }
    let out = index_and_run();
    assert!(out.contains("full: no earlier run kept a state"), "{out}");
    let snap = d.snapshot().await.expect("snapshot");
    for (f, t, v) in [(3, 4, 350), (4, 9, 300), (1, 5, 200)] {
        pay(f, t, v).await; // blocks 5 to 7, dropped below
    }
    let out = index_and_run();
    assert!(out.contains("incremental above block 4"), "{out}");
    assert!(d.revert(snap).await.expect("revert"));
    for (f, t, v) in [
        (3, 6, 390),
        (6, 9, 380),
        (2, 7, 100),
        (7, 8, 90),
        (1, 9, 250),
    ] {
        pay(f, t, v).await; // blocks 5 to 9 of the final chain
    }
    let out = index_and_run();
    assert!(out.contains("no longer on the chain"), "{out}");
    let after = typologies_table(&wh).await;
    ok(ferret(&["typologies", "eth", "--warehouse", &wh, "--full"]));
    assert_eq!(after, typologies_table(&wh).await);
}
