//! `ferret cluster btc` writes the `clusters` table that SQL reads, on the CPU and on the
//! GPU (lavapipe in CI) with the same result.

mod common;

use common::*;

#[test]
fn cluster_command_writes_the_clusters_table() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chain = tmp.path().join("chain");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let out = ferret(&[
        "synth",
        "btc",
        "--out",
        chain.to_str().expect("utf8"),
        "--blocks",
        "120",
        "--txs-per-block",
        "40",
        "--seed",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blocks = chain.join("blocks");
    index_btc_cli(&blocks, &wh);

    let sql = |q: &str| {
        let out = ferret(&["sql", "--warehouse", &wh, "--format", "csv", q]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        sql("SELECT count(*) AS n FROM clusters"),
        "n\n0\n",
        "no run yet: empty"
    );

    let out = ferret(&["cluster", "btc", "--warehouse", &wh, "--device", "cpu"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CoinJoins skipped")
            && stdout.contains("on cpu")
            && stdout.contains("CoinJoins detected:")
            && stdout.contains("merges held for review"),
        "{stdout}"
    );
    // The evidence tables of the same run: every skipped CoinJoin with its protocol,
    // the links behind each multi-address cluster.
    let cj = sql(
        "SELECT count(*) AS n, count(DISTINCT protocol) AS p, min(confidence) > 0 AS ok FROM coinjoins WHERE is_mix",
    );
    let n: Vec<&str> = cj.lines().nth(1).expect("a row").split(',').collect();
    assert!(
        n[0].parse::<u64>().expect("count") > 10
            && n[1].parse::<u64>().expect("p") >= 4
            && n[2] == "true",
        "{cj}"
    );
    assert_eq!(
        sql(
            "SELECT count(DISTINCT run_id) AS n FROM (SELECT run_id FROM clusters UNION ALL SELECT run_id FROM coinjoins UNION ALL SELECT run_id FROM cluster_links)"
        ),
        "n\n1\n",
        "one run id for the clusters and their evidence"
    );
    // Every link joins two addresses of one cluster.
    assert_eq!(
        sql(
            "SELECT count(*) AS bad FROM cluster_links l JOIN clusters a ON a.address = l.address JOIN clusters b ON b.address = l.linked_address WHERE a.cluster_id <> b.cluster_id OR l.cluster_id <> a.cluster_id"
        ),
        "bad\n0\n"
    );
    // Why are two addresses of the largest cluster together: a path of co-spends.
    let pair = sql(
        "SELECT min(address) AS a, max(address) AS b FROM clusters WHERE cluster_size = (SELECT max(cluster_size) FROM clusters) GROUP BY cluster_id ORDER BY a LIMIT 1",
    );
    let pair: Vec<String> = pair
        .lines()
        .nth(1)
        .expect("a row")
        .split(',')
        .map(str::to_string)
        .collect();
    let out = ferret(&["cluster", "why", "--warehouse", &wh, &pair[0], &pair[1]]);
    let why = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && why.contains("are in one cluster, joined by"),
        "{why}"
    );
    let steps: Vec<&str> = why.lines().skip(1).collect();
    assert!(!steps.is_empty(), "{why}");
    // Each step's transaction really spends from both addresses.
    for step in &steps {
        let words: Vec<&str> = step.split_whitespace().collect();
        let (x, y, txid) = (words[1], words[3], words[7]);
        assert_eq!(
            sql(&format!(
                "SELECT count(DISTINCT address) AS n FROM btc.inputs WHERE txid = '{txid}' AND address IN ('{x}', '{y}')"
            )),
            "n\n2\n",
            "{step}"
        );
    }
    let out = ferret(&[
        "cluster",
        "why",
        "--warehouse",
        &wh,
        &pair[0],
        "1BitcoinEaterAddressDontSendf59kuE",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("are not in one cluster"));
    let cpu_rows = sql("SELECT address, cluster_id, cluster_size FROM clusters ORDER BY address");
    // Every address that received an output is clustered; sizes agree with the ids.
    assert_eq!(
        sql("SELECT count(*) AS n FROM clusters"),
        sql("SELECT count(DISTINCT address) AS n FROM btc.outputs WHERE address IS NOT NULL")
    );
    assert_eq!(
        sql(
            "SELECT count(*) AS bad FROM clusters c JOIN (SELECT cluster_id, count(*) AS k FROM clusters GROUP BY cluster_id) s USING (cluster_id) WHERE c.cluster_size <> s.k OR c.cluster_id > c.address_id"
        ),
        "bad\n0\n"
    );

    // Out of core (--mem-mb): the same four tables and the same report but its device.
    let evidence = || {
        [
            sql(
                "SELECT address, address_id, cluster_id, cluster_size FROM clusters ORDER BY address_id",
            ),
            sql(
                "SELECT address, linked_address, txid, height, cluster_id FROM cluster_links ORDER BY txid, address, linked_address",
            ),
            sql(
                "SELECT txid, height, reason, clusters, largest_cluster, second_cluster, labels FROM cluster_holds ORDER BY txid",
            ),
            sql(
                "SELECT txid, height, tx_index, protocol, confidence, is_mix, equal_output_value, equal_outputs, participants, inputs, outputs FROM coinjoins ORDER BY tx_index",
            ),
        ]
    };
    let in_memory = evidence();
    let scratch = tempfile::tempdir().expect("scratch");
    let out = ferret(&[
        "cluster",
        "btc",
        "--warehouse",
        &wh,
        "--mem-mb",
        "1",
        "--scratch",
        scratch.path().to_str().expect("utf-8"),
    ]);
    let stored = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        evidence(),
        in_memory,
        "--mem-mb writes the in-memory run's tables"
    );
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("clustered from the first block"))
            .map(|l| l.split("; run ").next().unwrap_or(l).to_string())
            .collect()
    };
    assert_eq!(strip(&stored), strip(&stdout));
    assert!(stored.contains("out of core within 1 MiB"), "{stored}");
    assert_eq!(
        std::fs::read_dir(scratch.path()).expect("scratch").count(),
        0
    );

    let out = ferret(&["cluster", "btc", "--warehouse", &wh, "--device", "gpu"]);
    if out.status.success() {
        assert_eq!(
            sql("SELECT address, cluster_id, cluster_size FROM clusters ORDER BY address"),
            cpu_rows
        );
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!require_all(), "GPU required: {err}");
        assert!(err.contains("no GPU adapter"), "{err}");
    }
}

#[test]
fn mainnet_0_to_255_has_only_singleton_clusters() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocks = tmp.path().join("blocks");
    write_blocks_dir(&blocks, &[mainnet_0_255(&fx)]);
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    index_btc_cli(&blocks, &wh);
    let out = ferret(&["cluster", "btc", "--warehouse", &wh, "--device", "cpu"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No transaction in the first 256 blocks spends more than one input, so every one of
    // the 263 addresses is its own cluster (hand-checked: 7 non-coinbase txs, 1 input each).
    assert!(
        stdout.starts_with("263 addresses in 263 clusters (largest 1); 0 transactions linked")
            && stdout.contains("CoinJoins detected: 0 (none)"),
        "{stdout}"
    );
    let q = ferret(&[
        "sql",
        "--warehouse",
        &wh,
        "--format",
        "csv",
        "SELECT cluster_size FROM clusters WHERE address = '12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S'",
    ]);
    assert_eq!(String::from_utf8_lossy(&q.stdout), "cluster_size\n1\n");
    let none = ferret(&[
        "sql",
        "--warehouse",
        &wh,
        "--format",
        "csv",
        "SELECT tx_index FROM btc.inputs WHERE spent_txid IS NOT NULL GROUP BY 1 HAVING count(*) > 1",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&none.stdout),
        "tx_index\n",
        "an empty CSV result keeps its header"
    );
}

/// `ferret cluster btc --mem-mb` continues its last run as blocks arrive, and starts from
/// the first block when a reorganisation replaced the block the last run ended on: each
/// run equals the in-memory clustering of the same chain.
#[test]
fn stored_clustering_continues_and_a_reorg_below_its_tip_restarts_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Fork { all, early, .. } = Fork::find(tmp.path());
    let early_dir = tmp.path().join("early");
    write_blocks_dir(&early_dir, &[early]);
    let late_dir = tmp.path().join("late");
    write_blocks_dir(&late_dir, std::slice::from_ref(&all));
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let sql = |q: &str| {
        let out = ferret(&["sql", "--warehouse", &wh, "--format", "csv", q]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tables = || {
        [
            sql(
                "SELECT address, address_id, cluster_id, cluster_size FROM clusters ORDER BY address_id",
            ),
            sql(
                "SELECT address, linked_address, txid, height, cluster_id FROM cluster_links ORDER BY txid, address, linked_address",
            ),
            sql(
                "SELECT txid, height, reason, clusters, largest_cluster, second_cluster, labels FROM cluster_holds ORDER BY txid",
            ),
            sql("SELECT txid, height, protocol, is_mix FROM coinjoins ORDER BY tx_index"),
        ]
    };
    let stored = || {
        let out = ferret(&[
            "cluster",
            "btc",
            "--warehouse",
            &wh,
            "--mem-mb",
            "1",
            "--collapse-min-size",
            "10",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let in_memory = || {
        let out = ferret(&[
            "cluster",
            "btc",
            "--warehouse",
            &wh,
            "--device",
            "cpu",
            "--collapse-min-size",
            "10",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let index = |dir: &std::path::Path, to: Option<&str>| {
        let mut args = vec![
            "index",
            "btc",
            "--blocks-dir",
            dir.to_str().expect("utf-8"),
            "--warehouse",
            &wh,
        ];
        if let Some(t) = to {
            args.extend(["--to-height", t]);
        }
        let out = ferret(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The early chain in two steps: the second run continues the first.
    index(&early_dir, Some("60"));
    assert!(stored().contains("clustered from the first block"));
    index(&early_dir, None);
    let out = stored();
    assert!(
        out.contains("continued the last run from transaction"),
        "{out}"
    );
    let continued = tables();
    in_memory();
    assert_eq!(
        continued,
        tables(),
        "continued run against the in-memory run"
    );
    // Run once more out of core (the in-memory run replaced the stored one), then the
    // reorganisation: the late chain replaces the branch the last run ended on.
    assert!(stored().contains("clustered from the first block"));
    index(&late_dir, None);
    let out = stored();
    assert!(
        out.contains("clustered from the first block"),
        "a reorg below the tip must restart: {out}"
    );
    let after = tables();
    in_memory();
    assert_eq!(
        after,
        tables(),
        "after the reorg, against the in-memory run"
    );
}

/// `ferret cluster eth --mem-mb`: the in-memory run's `eth_clusters` table and summary
/// (deposit addresses, linked addresses, clusters, largest), scratch left empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_eth_out_of_core_writes_the_in_memory_table() {
    use ferret_testkit::synth::account::{chain, warehouse};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wh");
    let (rows, labels) = chain(31, 300, false);
    let whs = dir.to_str().expect("utf-8").to_string();
    let wh = warehouse(&whs, &rows, &labels, 64).await;
    let table = || async {
        query(
            &wh,
            "SELECT address, address_id, cluster_id, cluster_size FROM eth_clusters ORDER BY address_id",
        )
        .await
    };
    let summary = |out: &str| out.split("; run ").next().unwrap_or("").to_string();
    let scratch = tempfile::tempdir().expect("scratch");
    for extra in [
        &[][..],
        &["--max-senders", "2", "--max-delay-blocks", "3"][..],
    ] {
        let mut args = vec!["cluster", "eth", "--warehouse", &whs, "--device", "cpu"];
        args.extend_from_slice(extra);
        let out = ok(ferret(&args));
        let in_memory = table().await;
        assert!(
            in_memory.len() > 20,
            "{extra:?}: {} linked",
            in_memory.len()
        );
        let mut stored = args.clone();
        stored.extend([
            "--mem-mb",
            "1",
            "--scratch",
            scratch.path().to_str().expect("utf-8"),
        ]);
        let stored_out = ok(ferret(&stored));
        assert_eq!(table().await, in_memory, "{extra:?}: --mem-mb table");
        assert_eq!(summary(&stored_out), summary(&out), "{extra:?}");
        assert!(stored_out.contains("out of core"), "{stored_out}");
        assert_eq!(
            std::fs::read_dir(scratch.path()).expect("scratch").count(),
            0
        );
    }
}

/// `ferret cluster eth` keeps its scan's state with its run: a rerun resumes from it (here
/// with no new blocks: the kernels' test, `resume_eth_clusters`, checks new blocks against
/// runs over every transfer) and writes the same table; `--full`, another rule or other
/// labels read every transfer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_clustering_resumes_from_its_last_run_when_it_still_holds() {
    use ferret_testkit::synth::account::{chain, warehouse};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wh");
    let (rows, labels) = chain(31, 200, false);
    let whs = dir.to_str().expect("utf-8").to_string();
    let wh = warehouse(&whs, &rows, &labels, 64).await;
    let table = || async {
        query(
            &wh,
            "SELECT address, address_id, cluster_id, cluster_size FROM eth_clusters ORDER BY address_id",
        )
        .await
    };
    let base = ["cluster", "eth", "--warehouse", &whs, "--device", "cpu"];
    let out = ok(ferret(&base));
    assert!(out.contains("(full: no earlier run kept a state)"), "{out}");
    let first = table().await;
    assert!(first.len() > 20, "{} linked", first.len());
    let out = ok(ferret(&base));
    assert!(
        out.contains("(incremental: blocks above height 200)"),
        "{out}"
    );
    assert_eq!(table().await, first);
    let mut full = base.to_vec();
    full.push("--full");
    let out = ok(ferret(&full));
    assert!(out.contains("(full: asked for (--full))"), "{out}");
    assert_eq!(table().await, first);
    let mut other = base.to_vec();
    other.extend(["--max-senders", "2"]);
    let out = ok(ferret(&other));
    assert!(out.contains("(full: the rule changed)"), "{out}");
    // A damaged state is an error naming it, never a smaller result.
    let state = walk(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("eth_cluster_pairs"))
        .max()
        .expect("a pairs file");
    let bytes = std::fs::read(&state).expect("read");
    std::fs::write(&state, &bytes[..bytes.len() / 2]).expect("cut");
    let err = ferret(&other);
    assert!(!err.status.success());
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(text.contains("eth_cluster_pairs"), "{text}");
}
