//! The kernel table functions out of core (`ferret sql --mem-mb`, `FERRET_MEM_MB`): the
//! same rows as in memory, streamed, for `taint(...)` in both directions with stops and
//! hop limits and for `clusters()`, and a query that stops reading early (LIMIT) ends the
//! run instead of hanging.

use arrow::util::display::array_value_to_string;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_indexer::labels::import;
use ferret_query::{KernelOptions, run_sql, session_with};
use ferret_schemas::Warehouse;
use ferret_testkit::synth::btc::{SynthConfig, generate};

async fn rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<String> {
    let res = run_sql(ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    for b in &res.last().expect("a result").batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = (0..b.num_columns())
                .map(|c| array_value_to_string(b.column(c), r).expect("cell"))
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// A session in memory and one with a 1 MiB budget spilling to `scratch`.
async fn sessions(
    wh: &Warehouse,
    scratch: &std::path::Path,
) -> (
    datafusion::prelude::SessionContext,
    datafusion::prelude::SessionContext,
) {
    let memory = session_with(wh, KernelOptions::default())
        .await
        .expect("session");
    let stored = session_with(
        wh,
        KernelOptions {
            mem_mb: Some(1),
            scratch: Some(scratch.to_path_buf()),
        },
    )
    .await
    .expect("session");
    (memory, stored)
}

/// `q` returns the same rows (more than three) from both sessions.
async fn same_rows(
    memory: &datafusion::prelude::SessionContext,
    stored: &datafusion::prelude::SessionContext,
    q: &str,
) {
    let want = rows(memory, q).await;
    let got = rows(stored, q).await;
    assert!(want.len() > 3, "{q}: {} rows", want.len());
    if let Some(i) = (0..want.len().min(got.len())).find(|&i| want[i] != got[i]) {
        panic!("{q}: row {i}\n  got  {}\n  want {}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_functions_out_of_core_return_the_in_memory_rows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 120,
        seed: 9,
        txs_per_block: 40,
        ..Default::default()
    };
    generate(&cfg, tmp.path()).expect("generate");
    let wh = Warehouse::open("memory://sql-out-of-core").expect("open");
    let mut opts = IndexOptions::new(tmp.path().join("blocks"));
    opts.graph_block_bits = Some(6);
    index_btc(&wh, &opts).await.expect("index");
    import(
        &wh,
        &[tmp.path().join("truth/labels.csv")],
        &Default::default(),
        false,
    )
    .await
    .expect("labels");
    let scratch = tempfile::tempdir().expect("scratch");
    let (memory, stored) = sessions(&wh, scratch.path()).await;
    let queries = [
        "SELECT * FROM taint('category:scam', 'haircut', 4, 'forward', 'exchange') ORDER BY txid, vout",
        "SELECT txid, vout, hop, tainted_value, coinjoin FROM taint('category:scam', 'poison', NULL, 'forward', NULL, 50000) ORDER BY txid, vout",
        "SELECT * FROM taint('category:exchange', 'haircut', 3, 'backward') ORDER BY txid, vout",
        "SELECT * FROM taint('category:scam', 'fifo', 5, 'forward', 'exchange') ORDER BY txid, vout",
        "SELECT * FROM taint('category:exchange', 'fifo', 4, 'backward') ORDER BY txid, vout",
        "SELECT * FROM clusters() ORDER BY address_id",
        "SELECT * FROM clusters(false) ORDER BY address_id",
        "SELECT cluster_size, count(*) AS n FROM clusters() GROUP BY cluster_size ORDER BY cluster_size",
    ];
    for q in queries {
        same_rows(&memory, &stored, q).await;
    }
    // A query that reads a few rows and stops.
    let few = rows(&stored, "SELECT address FROM clusters() LIMIT 3").await;
    assert_eq!(few.len(), 3);
}

/// `eth_taint(...)` out of core: the in-memory rows, streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_taint_out_of_core_returns_the_in_memory_rows() {
    use ferret_testkit::synth::account::{TOKEN, addr, chain, warehouse};
    let (transfers, labels) = chain(21, 250, false);
    let wh = warehouse("memory://sql-eth-out-of-core", &transfers, &labels, 50).await;
    let scratch = tempfile::tempdir().expect("scratch");
    let (memory, stored) = sessions(&wh, scratch.path()).await;
    let plain = addr(77);
    let queries = [
        "SELECT * FROM eth_taint('category:scam') ORDER BY address".to_string(),
        format!("SELECT * FROM eth_taint('category:scam,{plain}', 'poison', 'ETH', 3, 'forward', 'exchange') ORDER BY address"),
        "SELECT * FROM eth_taint('category:exchange', 'haircut', 'ETH', 2, 'backward') ORDER BY address".to_string(),
        format!("SELECT * FROM eth_taint('category:scam', 'haircut', '{TOKEN}', NULL, 'forward', 'exchange', 1000) ORDER BY address"),
        "SELECT * FROM eth_taint('category:scam', 'poison', '*') ORDER BY address".to_string(),
    ];
    for q in &queries {
        same_rows(&memory, &stored, q).await;
    }
    let few = rows(
        &stored,
        "SELECT address FROM eth_taint('category:scam', 'poison') LIMIT 2",
    )
    .await;
    assert_eq!(few.len(), 2);
    assert_eq!(
        std::fs::read_dir(scratch.path()).expect("scratch").count(),
        0
    );
}
