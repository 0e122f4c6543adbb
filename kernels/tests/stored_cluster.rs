//! `ferret cluster btc --mem-mb`'s clustering ([`cluster_btc_stored`]) against the
//! in-memory run ([`cluster_btc`] + [`write_btc_clusters`]) on generated chains with
//! CoinJoins of every protocol, exchanges and scam operations: the same `clusters`,
//! `cluster_links`, `cluster_holds` and `coinjoins` rows, with the label guard and a
//! collapse threshold low enough to hold merges, with the detectors on and off, and with
//! a budget so small that the union-find pages through its scratch file.

use arrow::array::{Array, RecordBatch};
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::labels::import;
use ferret_kernels::blocked::Budget;
use ferret_kernels::cluster::stored::cluster_btc_stored;
use ferret_kernels::cluster::{ClusterOptions, cluster_btc, write_btc_clusters};
use ferret_kernels::device::Backend;
use ferret_schemas::Warehouse;
use ferret_testkit::synth::btc::{SynthConfig, generate};

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

fn same_rows(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: row {i} differs\n  got  {}\n  want {}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "rows: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_clustering_writes_what_the_in_memory_run_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 200,
        seed: 5,
        txs_per_block: 60,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://stored-cluster").expect("open");
    let mut opts = IndexOptions::new(tmp.path().join("blocks"));
    opts.commit_blocks = 37;
    index_btc(&wh, &opts).await.expect("index");
    import(
        &wh,
        &[tmp.path().join("truth/labels.csv")],
        &Default::default(),
        false,
    )
    .await
    .expect("labels");

    let mut cases = Vec::new();
    cases.push(ClusterOptions::default());
    cases.push(ClusterOptions {
        collapse_min_size: 12,
        ..Default::default()
    });
    let mut off = ClusterOptions {
        label_guard: false,
        collapse_min_size: 0,
        ..Default::default()
    };
    off.detectors.enabled = false;
    cases.push(off);
    let (mut held, mut spilled) = (0, 0);
    for (i, o) in cases.iter().enumerate() {
        let params = serde_json::json!({ "case": i });
        let want = cluster_btc(&wh, &Backend::Cpu, o).await.expect("in memory");
        write_btc_clusters(&wh, &want, params.clone())
            .await
            .expect("write");
        let tables = ["clusters", "cluster_links", "cluster_holds", "coinjoins"];
        let mut expected = Vec::new();
        for t in tables {
            expected.push(rows(&wh, t).await);
        }
        let scratch = tempfile::tempdir().expect("scratch");
        let budget = Budget {
            // The first case pages the forest through scratch (2 pages resident).
            mem_bytes: if i == 0 { 0 } else { 64 << 20 },
            scratch: scratch.path().to_path_buf(),
        };
        let (wh2, o2) = (wh.clone(), o.clone());
        let got = tokio::task::spawn_blocking(move || {
            cluster_btc_stored(&wh2, &o2, &budget, params, false)
        })
        .await
        .expect("join")
        .expect("stored clustering");
        for (t, want_rows) in tables.iter().zip(&expected) {
            same_rows(&rows(&wh, t).await, want_rows, &format!("{t}, case {i}"));
        }
        let c = &want.clusters;
        assert_eq!(got.addresses, c.addresses.len() as u64, "case {i}");
        assert_eq!(got.clusters, c.count() as u64, "case {i}");
        assert_eq!(got.linked_transactions, c.linked_transactions, "case {i}");
        assert_eq!(got.coinjoins_skipped, c.coinjoins_skipped, "case {i}");
        assert_eq!(
            got.summary,
            ferret_kernels::cluster::summary(&want),
            "case {i}"
        );
        held += want.guarded.holds.len();
        spilled += got.pages_spilled;
        // Nothing is left in the scratch directory.
        assert_eq!(
            std::fs::read_dir(scratch.path()).expect("scratch").count(),
            0
        );
    }
    assert!(
        held > 0,
        "no case held a merge: the guards were not exercised"
    );
    assert!(spilled > 0, "the forest never paged");
}

/// Clustering as blocks arrive: a stored run over the first blocks, then runs after each
/// further batch of blocks continue from where the last stopped, and each equals the
/// in-memory run over the same chain row for row; new labels, other options or
/// `incremental: false` start from the first block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_clustering_equals_a_run_from_the_first_block() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 200,
        seed: 8,
        txs_per_block: 50,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://incremental-cluster").expect("open");
    import(
        &wh,
        &[tmp.path().join("truth/labels.csv")],
        &Default::default(),
        false,
    )
    .await
    .expect("labels");
    let o = ClusterOptions {
        collapse_min_size: 15,
        ..Default::default()
    };
    let tables = ["clusters", "cluster_links", "cluster_holds", "coinjoins"];
    let stored = |incremental: bool, o: ClusterOptions| {
        let wh = wh.clone();
        async move {
            let scratch = tempfile::tempdir().expect("scratch");
            let budget = Budget {
                mem_bytes: 0,
                scratch: scratch.path().to_path_buf(),
            };
            tokio::task::spawn_blocking(move || {
                cluster_btc_stored(&wh, &o, &budget, serde_json::json!({}), incremental)
            })
            .await
            .expect("join")
            .expect("stored clustering")
        }
    };
    let mut continued = 0;
    for (step, to) in [Some(90u64), Some(91), Some(150), None]
        .into_iter()
        .enumerate()
    {
        let mut opts = IndexOptions::new(tmp.path().join("blocks"));
        opts.to_height = to;
        opts.commit_blocks = 23;
        index_btc(&wh, &opts).await.expect("index");
        let got = stored(true, o.clone()).await;
        assert_eq!(got.continued_from.is_some(), step > 0, "step {step}");
        if got.continued_from.is_some() {
            continued += 1;
        }
        let mut got_rows = Vec::new();
        for t in tables {
            got_rows.push(rows(&wh, t).await);
        }
        let want = cluster_btc(&wh, &Backend::Cpu, &o)
            .await
            .expect("in memory");
        write_btc_clusters(&wh, &want, serde_json::json!({}))
            .await
            .expect("write");
        for (t, g) in tables.iter().zip(&got_rows) {
            same_rows(
                g,
                &rows(&wh, t).await,
                &format!("{t}, step {step} (to {to:?})"),
            );
        }
        assert_eq!(
            got.summary,
            ferret_kernels::cluster::summary(&want),
            "step {step}"
        );
        assert_eq!(got.linked_transactions, want.clusters.linked_transactions);
        assert_eq!(got.coinjoins_skipped, want.clusters.coinjoins_skipped);
        // The in-memory run wrote over the stored one: the next stored run must find a
        // stored run of its own to continue, so run it again (from the first block).
        let again = stored(true, o.clone()).await;
        assert_eq!(again.continued_from, None, "the last run was in memory");
    }
    assert_eq!(continued, 3);
    // Other options, or asked not to: from the first block.
    let other = ClusterOptions {
        collapse_min_size: 16,
        ..o.clone()
    };
    assert_eq!(stored(true, other).await.continued_from, None);
    assert!(
        stored(true, o.clone()).await.continued_from.is_none(),
        "options changed back"
    );
    assert!(
        stored(true, o.clone()).await.continued_from.is_some(),
        "same options"
    );
    assert_eq!(stored(false, o.clone()).await.continued_from, None);
    // New labels: from the first block.
    let extra = tmp.path().join("extra.csv");
    let some_address = rows(&wh, "clusters").await[0]
        .split('|')
        .nth(1)
        .expect("address")
        .to_string();
    std::fs::write(
        &extra,
        format!("address,label,category\n{some_address},watched,scam\n"),
    )
    .expect("csv");
    import(&wh, &[extra], &Default::default(), false)
        .await
        .expect("labels");
    assert_eq!(
        stored(true, o.clone()).await.continued_from,
        None,
        "labels changed"
    );
}
