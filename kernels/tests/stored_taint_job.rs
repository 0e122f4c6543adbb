//! `ferret taint btc --mem-mb`'s job ([`taint_btc_stored`]) against the in-memory job
//! ([`taint_btc`]) on a generated chain with CoinJoins (Whirlpool, Wasabi, JoinMarket),
//! exchanges and scam operations, indexed with small graph blocks: the same `taint` rows
//! (CoinJoin column included), the same `exits` rows (hop-limited, every-path and
//! CoinJoin amounts), the same seeds found and not found, for seeds by address, txid and
//! category, stops, hop limits and minimum values, both directions, for each policy.

use arrow::array::{Array, RecordBatch};
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::labels::import;
use ferret_kernels::blocked::Budget;
use ferret_kernels::device::Backend;
use ferret_kernels::taint::job::{TaintJob, taint_btc, write_taint};
use ferret_kernels::taint::stored_job::{TaintTotals, taint_btc_stored};
use ferret_kernels::taint::{Direction, Policy};
use ferret_schemas::Warehouse;
use ferret_testkit::synth::btc::{SynthConfig, generate};
use tokio::runtime::Handle;

/// Every row of a stored table's latest run as text, the run id column left out.
async fn rows(wh: &Warehouse, job: &str) -> Vec<String> {
    let batches: Vec<RecordBatch> = wh.read_latest(job).await.expect("read");
    let mut out = Vec::new();
    for b in &batches {
        let keep: Vec<usize> = (0..b.num_columns())
            .filter(|&c| b.schema().field(c).name() != "run_id")
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = keep
                .iter()
                .map(|&c| {
                    let col = b.column(c);
                    if col.is_null(r) {
                        "∅".to_string()
                    } else {
                        arrow::util::display::array_value_to_string(col, r).expect("cell")
                    }
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// Asserts two row lists are equal, naming the first row that differs.
fn same_rows(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: row {i} differs\n  got  {}\n  want {}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "rows: {what}");
}

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
async fn the_stored_taint_job_writes_what_the_in_memory_job_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 150,
        seed: 7,
        txs_per_block: 40,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://stored-taint-job").expect("open");
    let mut opts = IndexOptions::new(tmp.path().join("blocks"));
    opts.graph_block_bits = Some(6);
    opts.commit_blocks = 31;
    index_btc(&wh, &opts).await.expect("index");
    import(
        &wh,
        &[tmp.path().join("truth/labels.csv")],
        &Default::default(),
        false,
    )
    .await
    .expect("labels");
    let scams = labelled(tmp.path(), "scam");
    // A seed txid: the first scam address's first paying transaction.
    let some_txid = {
        let g = ferret_kernels::taint::SpendGraph::from_warehouse(&wh)
            .await
            .expect("graph");
        let a = g.address_id(&scams[0]).expect("on chain");
        let o = g.out_addr.iter().position(|&x| x == a).expect("paid");
        ferret_kernels::taint::graph::hex_encode(&g.txids[g.tx_of_output(o as u32) as usize])
    };
    let cases = [
        TaintJob {
            policy: Policy::Haircut,
            direction: Direction::Forward,
            max_hops: Some(4),
            seed_categories: vec!["scam".into()],
            stop_categories: vec!["exchange".into()],
            ..Default::default()
        },
        TaintJob {
            policy: Policy::Poison,
            direction: Direction::Forward,
            seed_addresses: vec![scams[0].clone(), "1NotOnThisChainXXXXXXXXXXXXXXXXXX".into()],
            seed_txids: vec![some_txid.to_uppercase(), "ab".repeat(32)],
            min_value: 20_000,
            ..Default::default()
        },
        TaintJob {
            policy: Policy::Haircut,
            direction: Direction::Backward,
            max_hops: Some(5),
            seed_categories: vec!["exchange".into()],
            ..Default::default()
        },
        TaintJob {
            policy: Policy::Fifo,
            direction: Direction::Forward,
            max_hops: Some(6),
            seed_categories: vec!["scam".into()],
            stop_categories: vec!["exchange".into()],
            ..Default::default()
        },
        TaintJob {
            policy: Policy::Fifo,
            direction: Direction::Forward,
            min_value: 10_000,
            seed_addresses: vec![scams[0].clone()],
            ..Default::default()
        },
        TaintJob {
            policy: Policy::Fifo,
            direction: Direction::Backward,
            max_hops: Some(5),
            seed_categories: vec!["exchange".into()],
            stop_categories: vec!["scam".into()],
            ..Default::default()
        },
    ];
    let mut mixed = 0;
    for (i, job) in cases.iter().enumerate() {
        let want = taint_btc(&wh, &Backend::Cpu, job).await.expect("in memory");
        write_taint(&wh, &want).await.expect("write");
        let (want_taint, want_exits) = (rows(&wh, "taint").await, rows(&wh, "exits").await);

        let scratch = tempfile::tempdir().expect("scratch");
        // A budget far below the graph's size: every block pages through scratch.
        let budget = Budget {
            mem_bytes: match i {
                0 | 2 => 0,
                4 => 4 << 20,
                _ => 1 << 20,
            },
            scratch: scratch.path().to_path_buf(),
        };
        let (wh2, job2) = (wh.clone(), job.clone());
        let got = tokio::task::spawn_blocking(move || {
            taint_btc_stored(&Backend::Cpu, &wh2, &job2, &budget)
        })
        .await
        .expect("join")
        .expect("stored job");
        let (got_taint, got_exits) = (rows(&wh, "taint").await, rows(&wh, "exits").await);
        let what = format!("case {i}: {job:?}");
        assert!(!want_taint.is_empty() && !want_exits.is_empty(), "{what}");
        same_rows(&got_taint, &want_taint, &format!("taint, {what}"));
        same_rows(&got_exits, &want_exits, &format!("exits, {what}"));
        assert_eq!(got.run.exits, want.exits, "{what}");
        assert_eq!(got.totals, TaintTotals::of(&want), "{what}");
        assert_eq!(got.run.unknown_seeds, want.unknown_seeds, "{what}");
        assert_eq!(got.run.seed_outputs, want.seed_outputs, "{what}");
        assert_eq!(got.run.seed_addresses, want.seed_addresses, "{what}");
        assert_eq!(got.run.coinjoins_passed, want.coinjoins_passed, "{what}");
        assert_eq!(got.run.steps, want.steps, "{what}");
        if i == 1 {
            assert_eq!(want.unknown_seeds.len(), 2, "{what}");
        }
        if want.coinjoins_passed > 0 && want.exits.iter().any(|e| e.coinjoin_value > 0) {
            mixed += 1;
        }
    }
    assert!(
        mixed > 0,
        "no case moved taint through a CoinJoin to an exit"
    );
}

/// The stored job with its row sums on the GPU (lavapipe in CI) writes the CPU's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_taint_job_on_the_gpu_writes_the_cpu_rows() {
    let gpu = match ferret_kernels::device::select(ferret_kernels::device::DeviceChoice::Gpu) {
        Ok(Backend::Gpu(g)) => g,
        Ok(Backend::Cpu) => unreachable!("--device gpu never falls back"),
        Err(e) => {
            let required = std::env::var("FERRET_REQUIRE_ALL").is_ok_and(|v| v == "1");
            assert!(!required, "a GPU adapter is required here: {e}");
            eprintln!("skipping: {e}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 80,
        seed: 3,
        txs_per_block: 30,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://stored-taint-job-gpu").expect("open");
    let mut opts = IndexOptions::new(tmp.path().join("blocks"));
    opts.graph_block_bits = Some(8);
    index_btc(&wh, &opts).await.expect("index");
    import(
        &wh,
        &[tmp.path().join("truth/labels.csv")],
        &Default::default(),
        false,
    )
    .await
    .expect("labels");
    for job in [
        TaintJob {
            policy: Policy::Haircut,
            direction: Direction::Forward,
            max_hops: Some(3),
            seed_categories: vec!["scam".into()],
            stop_categories: vec!["exchange".into()],
            ..Default::default()
        },
        TaintJob {
            policy: Policy::Poison,
            direction: Direction::Backward,
            max_hops: Some(3),
            seed_categories: vec!["exchange".into()],
            ..Default::default()
        },
    ] {
        let mut tables = Vec::new();
        for backend in [Backend::Cpu, Backend::Gpu(gpu.clone())] {
            let scratch = tempfile::tempdir().expect("scratch");
            let budget = Budget {
                mem_bytes: 1 << 20,
                scratch: scratch.path().to_path_buf(),
            };
            let (wh2, job2) = (wh.clone(), job.clone());
            tokio::task::spawn_blocking(move || taint_btc_stored(&backend, &wh2, &job2, &budget))
                .await
                .expect("join")
                .expect("stored job");
            tables.push((rows(&wh, "taint").await, rows(&wh, "exits").await));
        }
        assert!(!tables[0].0.is_empty(), "{job:?}");
        same_rows(
            &tables[1].0,
            &tables[0].0,
            &format!("taint on the GPU, {job:?}"),
        );
        same_rows(
            &tables[1].1,
            &tables[0].1,
            &format!("exits on the GPU, {job:?}"),
        );
    }
}

/// A warehouse indexed without the spend graph (the benchmarks' `ferret-nograph`) can never
/// gain one half-way, and out-of-core runs on it are refused, never answered from a
/// partial graph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_without_the_spend_graph_refuses_to_gain_one_later() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 40,
        seed: 2,
        txs_per_block: 10,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://no-graph").expect("open");
    let mut opts = IndexOptions::new(tmp.path().join("blocks"));
    opts.to_height = Some(20);
    opts.without_spend_graph = true;
    index_btc(&wh, &opts)
        .await
        .expect("index without the graph");
    let m = wh
        .load_manifest(ferret_schemas::Chain::Btc)
        .await
        .expect("manifest")
        .expect("committed");
    assert_eq!(m.graph_block_bits, None);
    assert!(m.files_of("spends").all(|f| f.rows == 0), "no spend rows");
    let mut opts = IndexOptions::new(tmp.path().join("blocks"));
    opts.to_height = None;
    let e = index_btc(&wh, &opts)
        .await
        .expect_err("a graph cannot start later");
    assert!(e.to_string().contains("without the spend graph"), "{e}");
    let wh2 = wh.clone();
    let e = tokio::task::spawn_blocking(move || {
        let m = Handle::current()
            .block_on(wh2.load_manifest(ferret_schemas::Chain::Btc))
            .expect("manifest")
            .expect("committed");
        Handle::current().block_on(ferret_kernels::taint::stored::SpendEdges::open(&wh2, &m))
    })
    .await
    .expect("join")
    .expect_err("no graph");
    assert!(e.to_string().contains("no spend graph"), "{e}");
}
