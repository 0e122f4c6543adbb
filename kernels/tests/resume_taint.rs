//! Resumed forward taint ([`resume_btc`]) against runs from scratch on the whole chain
//! ([`run_on_graph`]: the Jacobi steps, or the GPU's, for hop limits): a generated chain
//! with CoinJoins, exchanges and scam operations is indexed in four stretches, and after
//! each the resumed run's rows so far, exits, flows, seeds and CoinJoin counts must equal
//! a run from scratch at that height, for every policy, with and without hop limits and
//! minimum values, for seeds by address, txid and category.

use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::labels::import;
use ferret_kernels::device::Backend;
use ferret_kernels::taint::job::{TaintJob, TaintedOutput, btc_labels, run_on_graph};
use ferret_kernels::taint::resume::{ResumeState, merge_flows, resume_btc};
use ferret_kernels::taint::{Direction, Policy, SpendGraph};
use ferret_schemas::Warehouse;
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

fn first_diff(got: &[TaintedOutput], want: &[TaintedOutput]) -> String {
    match (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        Some(i) => format!("row {i}:\n  got  {:?}\n  want {:?}", got[i], want[i]),
        None => format!("{} rows vs {}", got.len(), want.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_taint_equals_a_run_from_scratch_at_every_height() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 160,
        seed: 21,
        txs_per_block: 40,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://resume-taint").expect("open");
    let scams = labelled(tmp.path(), "scam");
    // Labels first: they do not depend on the chain.
    import(
        &wh,
        &[tmp.path().join("truth/labels.csv")],
        &Default::default(),
        false,
    )
    .await
    .expect("labels");

    let jobs = |txid: &str| {
        vec![
            TaintJob {
                policy: Policy::Haircut,
                max_hops: Some(4),
                seed_categories: vec!["scam".into()],
                stop_categories: vec!["exchange".into()],
                with_flows: true,
                ..Default::default()
            },
            TaintJob {
                policy: Policy::Haircut,
                seed_categories: vec!["scam".into()],
                stop_categories: vec!["exchange".into()],
                min_value: 5_000,
                with_flows: true,
                ..Default::default()
            },
            TaintJob {
                policy: Policy::Poison,
                seed_addresses: vec![scams[0].clone(), "1NotOnThisChainXXXXXXXXXXXXXXXXXX".into()],
                seed_txids: vec![txid.to_string(), "ab".repeat(32)],
                max_hops: Some(3),
                min_value: 20_000,
                with_flows: true,
                ..Default::default()
            },
            TaintJob {
                policy: Policy::Fifo,
                max_hops: Some(6),
                seed_categories: vec!["scam".into()],
                stop_categories: vec!["exchange".into()],
                with_flows: true,
                ..Default::default()
            },
            TaintJob {
                policy: Policy::Fifo,
                min_value: 10_000,
                seed_addresses: vec![scams[1].clone()],
                with_flows: true,
                ..Default::default()
            },
            TaintJob {
                policy: Policy::Haircut,
                max_hops: Some(8),
                min_value: 1_000,
                seed_addresses: vec![scams[2].clone()],
                stop_categories: vec!["exchange".into()],
                with_flows: true,
                ..Default::default()
            },
        ]
    };
    let mut states: Vec<Option<ResumeState>> = Vec::new();
    let mut rows: Vec<Vec<TaintedOutput>> = Vec::new();
    let mut flows: Vec<Vec<ferret_kernels::taint::job::Flow>> = Vec::new();
    let mut job_list: Vec<TaintJob> = Vec::new();
    let (mut grew, mut mixed, mut opened) = (0, 0, 0usize);
    for (step, to) in [40u64, 90, 91, 160].into_iter().enumerate() {
        let mut opts = IndexOptions::new(tmp.path().join("blocks"));
        opts.to_height = Some(to);
        opts.commit_blocks = 17;
        index_btc(&wh, &opts).await.expect("index");
        let g = SpendGraph::from_warehouse(&wh).await.expect("graph");
        let labels = btc_labels(&wh).await.expect("labels");
        if step == 0 {
            // A seed txid: the first scam address's first paying transaction.
            let a = g.address_id(&scams[0]).expect("scam paid by height 40");
            let o = g.out_addr.iter().position(|&x| x == a).expect("paid");
            let txid = ferret_kernels::taint::graph::hex_encode(
                &g.txids[g.tx_of_output(o as u32) as usize],
            );
            job_list = jobs(&txid);
            states = vec![None; job_list.len()];
            rows = vec![Vec::new(); job_list.len()];
            flows = vec![Vec::new(); job_list.len()];
        }
        for (i, job) in job_list.iter().enumerate() {
            let what = format!("height {to}, job {i}: {job:?}");
            let want = run_on_graph(&g, &Backend::Cpu, job, &labels).expect("from scratch");
            let got = resume_btc(&wh, states[i].as_ref(), job, &labels)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(got.state.height, Some(to), "{what}");
            let before = rows[i].len();
            rows[i].extend(got.run.outputs.iter().cloned());
            assert!(
                rows[i] == want.outputs,
                "{what}: taint rows differ: {}",
                first_diff(&rows[i], &want.outputs)
            );
            merge_flows(&mut flows[i], got.run.flows.clone());
            assert_eq!(flows[i], want.flows, "{what}: flows");
            assert_eq!(got.run.exits, want.exits, "{what}: exits");
            assert_eq!(got.run.unknown_seeds, want.unknown_seeds, "{what}");
            assert_eq!(got.run.seed_outputs, want.seed_outputs, "{what}");
            assert_eq!(got.run.coinjoins_passed, want.coinjoins_passed, "{what}");
            let mut seed_addresses = want.seed_addresses.clone();
            seed_addresses.sort();
            assert_eq!(got.run.seed_addresses, seed_addresses, "{what}");
            assert_eq!(got.state.walk.len(), rows[i].len(), "{what}: walk");
            if step > 0 && rows[i].len() > before {
                grew += 1;
            }
            if want.exits.iter().any(|e| e.coinjoin_value > 0) {
                mixed += 1;
            }
            opened = opened.max(got.state.open.len());
            assert!(!want.outputs.is_empty() && !want.exits.is_empty(), "{what}");
            states[i] = Some(got.state);
        }
    }
    assert!(grew >= 10, "resumed runs found new taint only {grew} times");
    assert!(
        mixed > 0,
        "no job moved taint through a CoinJoin to an exit"
    );
    assert!(
        opened > 10,
        "the state never held more than {opened} open outputs"
    );
}

/// A state that does not fit the chain (another warehouse, or one rebuilt) is refused
/// with an error naming the file, never read as if it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_does_not_fit_the_chain_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(
        &SynthConfig {
            blocks: 60,
            seed: 3,
            txs_per_block: 20,
            ..Default::default()
        },
        tmp.path(),
    )
    .expect("generate");
    let wh = Warehouse::open("memory://resume-refused").expect("open");
    let mut opts = IndexOptions::new(tmp.path().join("blocks"));
    opts.to_height = Some(30);
    index_btc(&wh, &opts).await.expect("index");
    import(
        &wh,
        &[tmp.path().join("truth/labels.csv")],
        &Default::default(),
        false,
    )
    .await
    .expect("labels");
    let labels = btc_labels(&wh).await.expect("labels");
    let job = TaintJob {
        seed_categories: vec!["scam".into()],
        ..Default::default()
    };
    let first = resume_btc(&wh, None, &job, &labels).await.expect("first");
    opts.to_height = None;
    index_btc(&wh, &opts).await.expect("index the rest");
    let mut wrong = first.state.clone();
    wrong.next_tx += 1;
    let err = resume_btc(&wh, Some(&wrong), &job, &labels)
        .await
        .expect_err("a state one transaction off");
    let msg = err.to_string();
    assert!(
        msg.contains("transactions") && msg.contains("was expected"),
        "{msg}"
    );
    let back = TaintJob {
        direction: Direction::Backward,
        ..job.clone()
    };
    let err = resume_btc(&wh, Some(&first.state), &back, &labels)
        .await
        .expect_err("backward");
    assert!(err.to_string().contains("only forward"), "{err}");
}
