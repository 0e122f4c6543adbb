//! Ethereum account taint out of core (`account::stored`) against the in-memory job
//! (`account::job::taint_eth` on the CPU) on generated warehouses: poison and the haircut
//! pool, forward and backward, hop limits, minimums, stops, every asset, with addresses
//! cut into 1 to 64 partitions and sorts forced to spill (budget of one byte). The
//! `eth_taint` and `eth_exits` rows, the steps and the unknown seeds must be the same,
//! bit for bit.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use ferret_kernels::account::job::{
    AccountPolicy, EthTaintJob, eth_exits_batch, eth_taint_batch, taint_eth,
};
use ferret_kernels::account::stored::stored_eth_taint_rows;
use ferret_kernels::blocked::Budget;
use ferret_kernels::device::Backend;
use ferret_kernels::taint::Direction;
use ferret_schemas::Warehouse;
use ferret_testkit::synth::account::{TOKEN, addr, chain, warehouse};

/// Rows of `eth_taint` batches as comparable tuples, sorted by address.
type Row = (
    String,
    i32,
    Option<i64>,
    Option<i32>,
    Option<String>,
    u64,
    i64,
);

fn taint_rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let s = |i: usize| b.column(i).as_string::<i32>();
        let hop = b.column(3).as_primitive::<Int32Type>();
        let fb = b.column(4).as_primitive::<Int64Type>();
        let ft = b.column(5).as_primitive::<Int32Type>();
        let v = b.column(7).as_primitive::<Float64Type>();
        let c = b.column(8).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            out.push((
                s(1).value(r).to_string(),
                hop.value(r),
                fb.is_valid(r).then(|| fb.value(r)),
                ft.is_valid(r).then(|| ft.value(r)),
                s(6).is_valid(r).then(|| s(6).value(r).to_string()),
                v.value(r).to_bits(),
                c.value(r),
            ));
        }
    }
    out.sort();
    out
}

fn exit_rows(b: &RecordBatch) -> Vec<(String, String, String, u64, i64, i32, Option<i64>)> {
    let s = |i: usize| b.column(i).as_string::<i32>();
    let v = b.column(5).as_primitive::<Float64Type>();
    let c = b.column(6).as_primitive::<Int64Type>();
    let h = b.column(7).as_primitive::<Int32Type>();
    let f = b.column(8).as_primitive::<Int64Type>();
    (0..b.num_rows())
        .map(|r| {
            (
                s(1).value(r).to_string(),
                s(2).value(r).to_string(),
                s(3).value(r).to_string(),
                v.value(r).to_bits(),
                c.value(r),
                h.value(r),
                f.is_valid(r).then(|| f.value(r)),
            )
        })
        .collect()
}

fn jobs(seeds: &[String]) -> Vec<EthTaintJob> {
    let mut out = Vec::new();
    for policy in [AccountPolicy::Poison, AccountPolicy::Haircut] {
        for direction in [Direction::Forward, Direction::Backward] {
            for hops in [None, Some(1), Some(3)] {
                for (min_value, stops) in [(0.0, vec![]), (5e14, vec!["exchange".to_string()])] {
                    out.push(EthTaintJob {
                        policy,
                        direction,
                        asset: "ETH".into(),
                        max_hops: hops,
                        min_value,
                        seed_addresses: seeds.to_vec(),
                        seed_categories: vec![],
                        stop_categories: stops,
                    });
                }
            }
        }
    }
    // By category, a token, every asset, and hop 0.
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
        policy: AccountPolicy::Poison,
        direction: Direction::Backward,
        ..base.clone()
    });
    out.push(EthTaintJob {
        asset: "*".into(),
        policy: AccountPolicy::Poison,
        ..base.clone()
    });
    out.push(EthTaintJob {
        max_hops: Some(0),
        policy: AccountPolicy::Poison,
        ..base.clone()
    });
    out.push(EthTaintJob {
        max_hops: Some(2),
        ..base
    });
    out
}

/// Runs `job` both ways and compares; returns the stored run's partition walks and its
/// rows.
async fn compare(
    wh: &Warehouse,
    job: &EthTaintJob,
    parts: usize,
    mem: usize,
    what: &str,
) -> (u64, usize) {
    let mem_run = taint_eth(wh, &Backend::Cpu, job)
        .await
        .expect("in-memory run");
    let want_rows = taint_rows(&[eth_taint_batch(&mem_run, "r").expect("batch")]);
    let want_exits = exit_rows(&eth_exits_batch(&mem_run, "r").expect("batch"));
    let scratch = tempfile::tempdir().expect("scratch");
    let budget = Budget {
        mem_bytes: mem,
        scratch: scratch.path().to_path_buf(),
    };
    let (wh2, job2) = (wh.clone(), job.clone());
    let (run, batches) = tokio::task::spawn_blocking(move || {
        let mut batches = Vec::new();
        let run = stored_eth_taint_rows(&wh2, &job2, &budget, Some(parts), "r", &mut |b| {
            batches.push(b);
            Ok(())
        })?;
        Ok::<_, ferret_kernels::Error>((run, batches))
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("{what}: stored run failed: {e}"));
    let got_rows = taint_rows(&batches);
    assert_eq!(got_rows.len(), want_rows.len(), "{what}: rows");
    for (g, w) in got_rows.iter().zip(&want_rows) {
        assert_eq!(g, w, "{what}: row");
    }
    let got_exits = exit_rows(
        &ferret_kernels::account::job::eth_exits_rows_batch(&run.exits, &job.asset, "r")
            .expect("batch"),
    );
    assert_eq!(got_exits, want_exits, "{what}: exits");
    assert_eq!(run.steps, mem_run.steps, "{what}: steps");
    assert_eq!(
        run.unknown_seeds, mem_run.unknown_seeds,
        "{what}: unknown seeds"
    );
    assert_eq!(
        run.transfers as usize,
        mem_run.transfers.graph.src.len(),
        "{what}: transfers"
    );
    assert_eq!(
        run.reached as usize,
        mem_run.addresses.len(),
        "{what}: reached"
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("scratch")
        .collect();
    assert!(left.is_empty(), "{what}: scratch left behind: {left:?}");
    (run.stats.walks, got_rows.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_eth_taint_equals_the_in_memory_job() {
    let (mut cases, mut most, mut spread) = (0, 0, 0);
    for (seed, blocks, huge, per_file) in [(1u64, 400, false, 40), (2, 200, true, 1000)] {
        let (rows, labels) = chain(seed, blocks, huge);
        let url = format!("memory://stored-eth-{seed}");
        let wh = warehouse(&url, &rows, &labels, per_file).await;
        // Seeds: a scam address, a plain address and one with no transfers at all.
        let seeds = vec![
            addr(6),
            addr(123),
            "0x1111111111111111111111111111111111111111".to_string(),
        ];
        for (i, job) in jobs(&seeds).iter().enumerate() {
            // Partitions and budgets rotate over the jobs; every job meets several.
            for (parts, mem) in [(1usize, 1usize), (7, 64 << 20), (64, 1)] {
                if (i + parts) % 2 == 1 && parts != 7 {
                    continue;
                }
                let what = format!(
                    "chain {seed}, job {i} ({:?} {:?} {} hops {:?} min {} stops {:?}), {parts} partitions, mem {mem}",
                    job.policy,
                    job.direction,
                    job.asset,
                    job.max_hops,
                    job.min_value,
                    job.stop_categories
                );
                let (_, rows) = compare(&wh, job, parts, mem, &what).await;
                cases += 1;
                most = most.max(rows);
                if rows > 1 {
                    spread += 1;
                }
            }
        }
    }
    assert!(cases > 80, "{cases} cases");
    // The runs reach far: most of them beyond their seeds, some most of the chain.
    assert!(most > 200, "at most {most} addresses reached");
    assert!(
        spread * 10 > cases * 8,
        "{spread} of {cases} runs reach beyond the seeds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_investigation_walks_few_partitions() {
    let (rows, labels) = chain(3, 200, false);
    let wh = warehouse("memory://stored-eth-small", &rows, &labels, 50).await;
    // One hop from one plain address: only its partition and its receivers' are walked.
    let job = EthTaintJob {
        seed_addresses: vec![addr(200)],
        max_hops: Some(1),
        ..Default::default()
    };
    let (walks, _) = compare(&wh, &job, 256, 1 << 20, "one hop").await;
    assert!(
        walks <= 2,
        "{walks} partition walks for one seed and one hop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transfers_are_errors_naming_the_file() {
    let (mut rows, labels) = chain(4, 30, false);
    rows[5].from = rows[5].from.to_ascii_uppercase().replacen("0X", "0x", 1);
    let wh = warehouse("memory://stored-eth-bad", &rows, &labels, 10).await;
    let scratch = tempfile::tempdir().expect("scratch");
    let budget = Budget {
        mem_bytes: 1 << 20,
        scratch: scratch.path().to_path_buf(),
    };
    let job = EthTaintJob {
        seed_categories: vec!["scam".into()],
        ..Default::default()
    };
    let e = tokio::task::spawn_blocking(move || {
        stored_eth_taint_rows(&wh, &job, &budget, None, "r", &mut |_| Ok(())).map(|_| ())
    })
    .await
    .expect("join")
    .expect_err("an upper-case address");
    let msg = e.to_string();
    assert!(
        msg.contains("eth/transfers/") && msg.contains("from_address"),
        "{msg}"
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("scratch")
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

/// `eth_clusters` rows: address, address id, cluster id, size.
fn cluster_rows(batches: &[RecordBatch]) -> Vec<(String, i64, i64, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column(1).as_string::<i32>();
        let i = |c: usize| b.column(c).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            out.push((
                a.value(r).to_string(),
                i(2).value(r),
                i(3).value(r),
                i(4).value(r),
            ));
        }
    }
    out.sort_by_key(|r| r.1);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_deposit_clustering_equals_the_in_memory_one() {
    use ferret_kernels::account::deposit::{DepositRule, cluster_eth};
    use ferret_kernels::account::stored_deposit::cluster_eth_stored;
    let mut biggest = 0;
    for (seed, blocks) in [(5u64, 400), (6, 250)] {
        let (rows, labels) = chain(seed, blocks, false);
        let wh = warehouse(
            &format!("memory://stored-eth-cluster-{seed}"),
            &rows,
            &labels,
            60,
        )
        .await;
        let rules = [
            DepositRule::default(),
            DepositRule {
                max_delay_blocks: 2,
                ..Default::default()
            },
            DepositRule {
                max_senders: 12,
                ..Default::default()
            },
            DepositRule {
                max_senders: 1,
                ..Default::default()
            },
        ];
        for (i, rule) in rules.iter().enumerate() {
            let want = cluster_eth(&wh, &Backend::Cpu, rule)
                .await
                .expect("in memory");
            let want_rows =
                cluster_rows(&[
                    ferret_kernels::cluster::clusters_batch(&want.clusters, "r").expect("batch")
                ]);
            for (parts, mem) in [(1usize, 1usize), (5, 64 << 20), (64, 1)] {
                let what = format!("chain {seed}, rule {i}, {parts} partitions, mem {mem}");
                let scratch = tempfile::tempdir().expect("scratch");
                let budget = Budget {
                    mem_bytes: mem,
                    scratch: scratch.path().to_path_buf(),
                };
                let (wh2, rule2) = (wh.clone(), rule.clone());
                let got = tokio::task::spawn_blocking(move || {
                    cluster_eth_stored(&wh2, &rule2, &budget, Some(parts))
                })
                .await
                .expect("join")
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                let got_rows = cluster_rows(&wh.read_latest("eth_clusters").await.expect("read"));
                assert_eq!(got_rows.len(), want_rows.len(), "{what}: rows");
                for (g, w) in got_rows.iter().zip(&want_rows) {
                    assert_eq!(g, w, "{what}");
                }
                assert_eq!(
                    got.deposit_addresses as usize,
                    want.deposit_addresses.len(),
                    "{what}: deposits"
                );
                assert_eq!(
                    got.clusters as usize,
                    want.clusters.count(),
                    "{what}: clusters"
                );
                assert_eq!(
                    std::fs::read_dir(scratch.path()).expect("scratch").count(),
                    0,
                    "{what}: scratch"
                );
                biggest = biggest.max(want_rows.iter().map(|r| r.3).max().unwrap_or(0));
            }
            if i == 0 {
                assert!(
                    want_rows.len() > 50,
                    "chain {seed}: {} linked addresses",
                    want_rows.len()
                );
            }
        }
    }
    assert!(biggest >= 4, "largest cluster {biggest}");
}
