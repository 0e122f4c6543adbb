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
        let got =
            tokio::task::spawn_blocking(move || cluster_btc_stored(&wh2, &o2, &budget, params))
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
