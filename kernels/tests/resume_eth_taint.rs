//! Resumed Ethereum taint ([`resume_eth`]) against runs from scratch ([`taint_eth`]: the
//! CPU's single pass for poison, the Jacobi steps of the haircut pool) on a generated
//! account chain committed at four heights: after each, the resumed run's `eth_taint` and
//! `eth_exits` rows and its tainted transfers must equal the run from scratch bit for bit,
//! for poison and the pool, with and without hop limits (0 included), minimums and stops,
//! seeds by address and category, ETH, a token and every asset.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use ferret_kernels::account::job::{
    AccountPolicy, EthTaintJob, EthTaintRun, eth_exits_batch, eth_taint_batch, taint_eth,
};
use ferret_kernels::account::resume::{EthResumeState, resume_eth};
use ferret_kernels::device::Backend;
use ferret_kernels::taint::job::chain_labels;
use ferret_testkit::synth::account::{TOKEN, addr, chain, warehouse};

type Row = (
    String,
    i32,
    Option<i64>,
    Option<i32>,
    Option<String>,
    u64,
    i64,
);

fn taint_rows(b: &RecordBatch) -> Vec<Row> {
    let s = |i: usize| b.column(i).as_string::<i32>();
    let hop = b.column(3).as_primitive::<Int32Type>();
    let fb = b.column(4).as_primitive::<Int64Type>();
    let ft = b.column(5).as_primitive::<Int32Type>();
    let v = b.column(7).as_primitive::<Float64Type>();
    let c = b.column(8).as_primitive::<Int64Type>();
    let mut out: Vec<Row> = (0..b.num_rows())
        .map(|r| {
            (
                s(1).value(r).to_string(),
                hop.value(r),
                fb.is_valid(r).then(|| fb.value(r)),
                ft.is_valid(r).then(|| ft.value(r)),
                s(6).is_valid(r).then(|| s(6).value(r).to_string()),
                v.value(r).to_bits(),
                c.value(r),
            )
        })
        .collect();
    out.sort();
    out
}

fn exit_rows(b: &RecordBatch) -> Vec<String> {
    (0..b.num_rows())
        .map(|r| {
            (0..b.num_columns() - 1)
                .map(|c| arrow::util::display::array_value_to_string(b.column(c), r).expect("cell"))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// The tainted transfers of a run: (from, to, block, tx index, hash, amount bits).
fn edges(run: &EthTaintRun) -> Vec<(String, String, i64, i32, String, u64)> {
    let t = &run.transfers;
    (0..t.graph.src.len())
        .filter(|&e| run.tainted[e] > 0.0)
        .map(|e| {
            (
                t.addresses[t.graph.src[e] as usize].clone(),
                t.addresses[t.graph.dst[e] as usize].clone(),
                t.block[e],
                t.tx_index[e],
                t.tx_hash[e].clone(),
                run.tainted[e].to_bits(),
            )
        })
        .collect()
}

fn jobs() -> Vec<EthTaintJob> {
    let seeds = vec![
        addr(6),
        addr(7),
        "0x00000000000000000000000000000000000000ff".into(),
    ];
    let mut out = Vec::new();
    for policy in [AccountPolicy::Poison, AccountPolicy::Haircut] {
        for hops in [None, Some(1), Some(3), Some(7)] {
            for (min_value, stops) in [(0.0, vec![]), (5e14, vec!["exchange".to_string()])] {
                out.push(EthTaintJob {
                    policy,
                    max_hops: hops,
                    min_value,
                    seed_addresses: seeds.clone(),
                    stop_categories: stops,
                    ..Default::default()
                });
            }
        }
    }
    let base = EthTaintJob {
        seed_categories: vec!["scam".into()],
        stop_categories: vec!["exchange".into()],
        ..Default::default()
    };
    out.push(EthTaintJob {
        asset: TOKEN.into(),
        ..base.clone()
    });
    out.push(EthTaintJob {
        asset: TOKEN.into(),
        max_hops: Some(2),
        ..base.clone()
    });
    out.push(EthTaintJob {
        asset: "*".into(),
        policy: AccountPolicy::Poison,
        ..base.clone()
    });
    out.push(EthTaintJob {
        max_hops: Some(0),
        ..base.clone()
    });
    out.push(base);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_eth_taint_equals_a_run_from_scratch_at_every_height() {
    let (rows, labels) = chain(5, 120, false);
    let jobs = jobs();
    let mut states: Vec<Option<EthResumeState>> = vec![None; jobs.len()];
    let (mut grew, mut stepped) = (0, 0);
    for (step, h) in [40i64, 80, 81, 120].into_iter().enumerate() {
        let upto: Vec<_> = rows.iter().filter(|r| r.block <= h).cloned().collect();
        let wh = warehouse(&format!("memory://eth-resume-{h}"), &upto, &labels, 7).await;
        let l = chain_labels(&wh, "eth").await.expect("labels");
        for (i, job) in jobs.iter().enumerate() {
            let what = format!("height {h}, job {i}: {job:?}");
            let want = taint_eth(&wh, &Backend::Cpu, job)
                .await
                .expect("from scratch");
            let got = resume_eth(&wh, states[i].as_ref(), job, &l)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .unwrap_or_else(|why| panic!("{what}: not resumed: {why}"));
            assert_eq!(got.state.height, Some(h), "{what}");
            let (gt, wt) = (
                taint_rows(&eth_taint_batch(&got.run, "r").expect("batch")),
                taint_rows(&eth_taint_batch(&want, "r").expect("batch")),
            );
            if let Some(k) = (0..gt.len().min(wt.len())).find(|&k| gt[k] != wt[k]) {
                panic!(
                    "{what}: eth_taint row {k}\n  resumed {:?}\n  scratch {:?}",
                    gt[k], wt[k]
                );
            }
            assert_eq!(gt.len(), wt.len(), "{what}: eth_taint rows");
            assert_eq!(
                exit_rows(&eth_exits_batch(&got.run, "r").expect("batch")),
                exit_rows(&eth_exits_batch(&want, "r").expect("batch")),
                "{what}: exits"
            );
            assert_eq!(edges(&got.run), edges(&want), "{what}: tainted transfers");
            assert_eq!(got.run.unknown_seeds, want.unknown_seeds, "{what}");
            if step > 0
                && states[i]
                    .as_ref()
                    .is_some_and(|p| p.edges.len() < got.state.edges.len())
            {
                grew += 1;
            }
            if job.policy == AccountPolicy::Haircut
                && job.max_hops.is_some_and(|h| h > 1)
                && got
                    .state
                    .addresses
                    .values()
                    .any(|a| a.shares.vals.len() > 1)
            {
                stepped += 1;
            }
            assert!(!wt.is_empty(), "{what}: nothing tainted");
            states[i] = Some(got.state);
        }
    }
    assert!(grew >= 20, "resumed runs found new taint only {grew} times");
    assert!(stepped > 0, "no pool share ever differed between steps");
}
