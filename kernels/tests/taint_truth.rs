//! Taint on a generated chain against the generator's truth: from the labelled scam
//! deposit addresses, stopping at exchanges, every planted cash-out
//! (truth/cashouts.csv) is found at its hop count with the tainted amount within 1%
//! under haircut, and as an exit; poison and fifo find them too; the GPU equals the CPU.

use std::collections::HashMap;

use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::labels::{Defaults, import};
use ferret_kernels::device::{Backend, DeviceChoice, select};
use ferret_kernels::taint::Policy;
use ferret_kernels::taint::job::{TaintJob, TaintRun, taint_btc};
use ferret_schemas::Warehouse;
use ferret_testkit::synth::btc::{SynthConfig, generate};

struct Cashout {
    exit: String,
    amount: i64,
    hops: u32,
    txid: String,
}

/// The planted cash-outs, one per (transaction, exit address): a cash-out may pay one
/// deposit address twice, and then the amounts add up.
fn cashouts(dir: &std::path::Path) -> Vec<Cashout> {
    let mut out: Vec<Cashout> = Vec::new();
    for l in std::fs::read_to_string(dir.join("truth/cashouts.csv"))
        .expect("cashouts.csv")
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = l.split(',').collect();
        let c = Cashout {
            exit: f[2].to_string(),
            amount: f[3].parse().expect("amount"),
            hops: f[4].parse().expect("hops"),
            txid: f[5].to_string(),
        };
        match out
            .iter_mut()
            .find(|o| o.txid == c.txid && o.exit == c.exit)
        {
            Some(o) => o.amount += c.amount,
            None => out.push(c),
        }
    }
    out
}

fn job(policy: Policy) -> TaintJob {
    TaintJob {
        policy,
        seed_categories: vec!["scam".into()],
        stop_categories: vec!["exchange".into()],
        ..Default::default()
    }
}

/// (txid, address) → (smallest hop, tainted value) of the run's outputs.
fn by_output(run: &TaintRun) -> HashMap<(String, String), (u32, i64)> {
    let mut m: HashMap<(String, String), (u32, i64)> = HashMap::new();
    for o in &run.outputs {
        let Some(a) = o.address.clone() else { continue };
        let e = m.entry((o.txid.clone(), a)).or_insert((u32::MAX, 0));
        e.0 = e.0.min(o.hop);
        e.1 += o.tainted_value;
    }
    m
}

#[tokio::test]
async fn every_planted_cashout_is_found() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 220,
        seed: 23,
        txs_per_block: 50,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://taint-truth").expect("open");
    index_btc(&wh, &IndexOptions::new(tmp.path().join("blocks")))
        .await
        .expect("index");
    import(
        &wh,
        &[tmp.path().join("truth/labels.csv")],
        &Defaults::default(),
        false,
    )
    .await
    .expect("labels");
    let truth = cashouts(tmp.path());
    assert!(truth.len() >= 50, "only {} planted cash-outs", truth.len());

    let cpu = taint_btc(&wh, &Backend::Cpu, &job(Policy::Haircut))
        .await
        .expect("haircut");
    let found = by_output(&cpu);
    let exits: HashMap<&str, i64> = cpu
        .exits
        .iter()
        .map(|e| (e.address.as_str(), e.tainted_value))
        .collect();
    for c in &truth {
        let key = (c.txid.clone(), c.exit.clone());
        let Some(&(hop, tainted)) = found.get(&key) else {
            panic!("cash-out {} to {} not tainted", c.txid, c.exit)
        };
        assert_eq!(hop, c.hops, "hops of the cash-out {} to {}", c.txid, c.exit);
        let err = (tainted - c.amount).abs() as f64 / c.amount as f64;
        assert!(
            err <= 0.01,
            "cash-out {} to {}: tainted {tainted}, planted {}",
            c.txid,
            c.exit,
            c.amount
        );
        assert!(
            exits.contains_key(c.exit.as_str()),
            "exit {} not reported",
            c.exit
        );
    }

    // Poison and fifo reach every cash-out too (poison at the same hop: one path is
    // enough; fifo's amounts follow the satoshis, so only presence is asserted).
    for policy in [Policy::Poison, Policy::Fifo] {
        let run = taint_btc(&wh, &Backend::Cpu, &job(policy))
            .await
            .expect("runs");
        let found = by_output(&run);
        for c in &truth {
            let got = found.get(&(c.txid.clone(), c.exit.clone()));
            assert!(
                got.is_some(),
                "{policy:?}: cash-out {} to {} missed",
                c.txid,
                c.exit
            );
            if policy == Policy::Poison {
                assert_eq!(got.map(|g| g.0), Some(c.hops), "{policy:?} hops");
            }
        }
    }

    // A hop limit keeps exactly the shallower cash-outs.
    let mut limited = job(Policy::Haircut);
    limited.max_hops = Some(3);
    let run = taint_btc(&wh, &Backend::Cpu, &limited)
        .await
        .expect("limited");
    assert!(run.outputs.iter().all(|o| o.hop <= 3));
    let found = by_output(&run);
    for c in &truth {
        let hit = found.contains_key(&(c.txid.clone(), c.exit.clone()));
        assert_eq!(hit, c.hops <= 3, "hop limit 3, cash-out at hop {}", c.hops);
    }

    // The GPU gives the same outputs and hops, fractions within 1e-5.
    match select(DeviceChoice::Gpu) {
        Ok(gpu @ Backend::Gpu(_)) => {
            let on_gpu = taint_btc(&wh, &gpu, &job(Policy::Haircut))
                .await
                .expect("gpu");
            assert_eq!(on_gpu.outputs.len(), cpu.outputs.len());
            for (a, b) in cpu.outputs.iter().zip(&on_gpu.outputs) {
                assert_eq!((&a.txid, a.vout, a.hop), (&b.txid, b.vout, b.hop));
                assert!(
                    (a.fraction - b.fraction).abs() <= 1e-5 * a.fraction.max(b.fraction) + 1e-6
                );
            }
        }
        other => {
            let required = std::env::var("FERRET_REQUIRE_ALL").is_ok_and(|v| v == "1");
            assert!(!required, "a GPU adapter is required here: {other:?}");
        }
    }
}
