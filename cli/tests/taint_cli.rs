//! `ferret taint btc` and `ferret trace btc` on a generated chain: the exits report, the
//! `taint` and `exits` tables read back through SQL, the pictures (SVG parsed by an XML
//! parser, HTML, DOT), and clear errors for bad arguments.

mod common;

use common::*;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = ferret(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn taint_and_trace_from_the_scam_labels() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chain = tmp.path().join("chain");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let (ok, _, err) = run(&[
        "synth",
        "btc",
        "--out",
        chain.to_str().expect("utf8"),
        "--blocks",
        "150",
        "--txs-per-block",
        "40",
        "--seed",
        "8",
    ]);
    assert!(ok, "{err}");
    index_btc_cli(&chain.join("blocks"), &wh);
    let labels = chain.join("truth/labels.csv");
    let (ok, _, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        labels.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");

    // Seeds from an unknown category, no seeds at all, bad values: clear errors.
    let (ok, _, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed-category",
        "nope",
        "--device",
        "cpu",
    ]);
    assert!(
        !ok && err.contains("no address is labelled with category `nope`"),
        "{err}"
    );
    let (ok, _, err) = run(&["taint", "btc", "--warehouse", &wh, "--device", "cpu"]);
    assert!(!ok && err.contains("give seeds"), "{err}");
    let (ok, _, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed",
        "x",
        "--policy",
        "lifo",
    ]);
    assert!(!ok && err.contains("unknown policy `lifo`"), "{err}");
    let (ok, _, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed-category",
        "scam",
        "--min-value=-5",
    ]);
    assert!(!ok && err.contains("--min-value"), "{err}");
    let (ok, _, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed",
        "1BitcoinEaterAddressDontSendf59kuE",
        "--device",
        "cpu",
    ]);
    assert!(
        !ok && err.contains("not found: 1BitcoinEaterAddressDontSendf59kuE"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed-category",
        "scam",
        "--stop-at",
        "Exchange",
        "--device",
        "cpu",
    ]);
    assert!(
        !ok && err.contains(
            "no address is labelled with category `Exchange` (known: exchange, mixer, scam)"
        ),
        "{err}"
    );
    // A bech32 seed in upper case (as QR codes carry it) is the same address.
    let label_rows = std::fs::read_to_string(&labels).expect("labels");
    let bech32 = label_rows
        .lines()
        .filter(|l| l.ends_with(",scam"))
        .map(|l| l.split(',').next().expect("address"))
        .find(|a| a.starts_with("bcrt1"))
        .expect("a bech32 scam address");
    let upper = bech32.to_uppercase();
    let (ok, out, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed",
        &upper,
        "--device",
        "cpu",
    ]);
    assert!(
        ok && !out.contains("not on the indexed chain"),
        "{out}{err}"
    );

    let (ok, out, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed-category",
        "scam",
        "--stop-at",
        "exchange",
        "--policy",
        "haircut",
        "--device",
        "cpu",
        "--top",
        "3",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("haircut forward from") && out.contains("exits received"),
        "{out}"
    );
    let sql = |q: &str| {
        let (ok, out, err) = run(&["sql", "--warehouse", &wh, "--format", "csv", q]);
        assert!(ok, "{err}");
        out
    };
    // The report's total equals the exits table, which equals the tainted outputs paying
    // exchange-labelled addresses in the taint table.
    let exits_total = sql("SELECT sum(tainted_value) AS s FROM exits");
    let from_taint = sql(
        "SELECT sum(t.tainted_value) AS s FROM taint t WHERE t.hop > 0 AND t.address IN \
         (SELECT address FROM labels WHERE category = 'exchange')",
    );
    assert_eq!(exits_total, from_taint);
    let sats: i64 = exits_total
        .lines()
        .nth(1)
        .expect("row")
        .parse()
        .expect("sats");
    assert!(sats > 0);
    assert!(
        out.contains(&ferret_kernels::taint::trace::btc(sats)),
        "{out}"
    );
    // Every planted cash-out exit is in the exits table.
    let cashouts = std::fs::read_to_string(chain.join("truth/cashouts.csv")).expect("cashouts");
    let exits = sql("SELECT address FROM exits ORDER BY address");
    for line in cashouts.lines().skip(1) {
        let exit = line.split(',').nth(2).expect("exit_address");
        assert!(exits.contains(exit), "cash-out exit {exit} missing");
    }
    // One run id across both tables, and the run's parameters.
    assert_eq!(
        sql(
            "SELECT count(DISTINCT run_id) AS n FROM (SELECT run_id FROM taint UNION ALL SELECT run_id FROM exits)"
        ),
        "n\n1\n"
    );

    // Every path's amount beside the hop-limited one: with --hops 2 the exits table
    // keeps each exit's unlimited amount (it equals the run above, which had no limit),
    // the CLI says when they differ, and the part through CoinJoins is within it.
    let unlimited = sql("SELECT address, tainted_value FROM exits ORDER BY address");
    let (ok, out, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed-category",
        "scam",
        "--stop-at",
        "exchange",
        "--policy",
        "haircut",
        "--hops",
        "2",
        "--device",
        "cpu",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        sql("SELECT address, all_paths_value AS tainted_value FROM exits ORDER BY address"),
        unlimited,
        "all_paths_value of a hop-limited run is the unlimited run's tainted_value"
    );
    assert_eq!(
        sql(
            "SELECT count(*) AS n FROM exits WHERE all_paths_value < tainted_value \
             OR coinjoin_value > all_paths_value OR coinjoin_value < 0"
        ),
        "n\n0\n"
    );
    let more = sql("SELECT count(*) AS n FROM exits WHERE all_paths_value > tainted_value");
    assert_ne!(more, "n\n0\n", "two hops reach less than every path");
    assert!(out.contains("along every path, however long"), "{out}");
    // Outputs marked as moved by a CoinJoin are the generator's true CoinJoins.
    let truth = std::fs::read_to_string(chain.join("truth/coinjoins.csv")).expect("coinjoins");
    let marked = sql("SELECT DISTINCT t.txid FROM taint t WHERE t.coinjoin IS NOT NULL");
    assert!(
        marked.lines().count() > 1,
        "taint moved through the generator's CoinJoins"
    );
    assert!(out.contains("arrived only through CoinJoins"), "{out}");
    // Out of core on the committed graph (--mem-mb): the same tables and report.
    let tables = || {
        (
            sql(
                "SELECT txid, vout, address, value, hop, fraction, tainted_value, coinjoin FROM taint ORDER BY txid, vout",
            ),
            sql(
                "SELECT address, label, category, tainted_value, outputs, min_hop, all_paths_value, coinjoin_value FROM exits ORDER BY address",
            ),
        )
    };
    let in_memory = tables();
    let report = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split("; run ").next().unwrap_or(l).to_string())
            .map(|l| l.split(" steps over ").next().unwrap_or(&l).to_string())
            .collect()
    };
    let scratch = tempfile::tempdir().expect("scratch");
    let (ok, stored_out, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed-category",
        "scam",
        "--stop-at",
        "exchange",
        "--policy",
        "haircut",
        "--hops",
        "2",
        "--mem-mb",
        "4",
        "--scratch",
        scratch.path().to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        tables(),
        in_memory,
        "--mem-mb writes the in-memory run's tables"
    );
    assert_eq!(report(&stored_out), report(&out));
    assert!(
        stored_out.contains("out of core within 4 MiB"),
        "{stored_out}"
    );
    // Its scratch directory is gone afterwards; bad budgets are refused.
    assert_eq!(
        std::fs::read_dir(scratch.path()).expect("scratch").count(),
        0
    );
    let (ok, _, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        &wh,
        "--seed-category",
        "scam",
        "--mem-mb",
        "0",
    ]);
    assert!(!ok && err.contains("--mem-mb"), "{err}");
    // Fifo out of core, both directions: the in-memory run's tables and report.
    for direction in ["forward", "backward"] {
        let fifo = |budget: Option<&str>| {
            let mut args = vec![
                "taint",
                "btc",
                "--warehouse",
                &wh,
                "--seed-category",
                "scam",
                "--stop-at",
                "exchange",
                "--policy",
                "fifo",
                "--direction",
                direction,
                "--hops",
                "4",
                "--device",
                "cpu",
            ];
            if let Some(mb) = budget {
                args.extend(["--mem-mb", mb, "--scratch"]);
                args.push(scratch.path().to_str().expect("utf-8"));
            }
            let (ok, out, err) = run(&args);
            assert!(ok, "fifo {direction} {budget:?}: {err}");
            (tables(), report(&out))
        };
        let want = fifo(None);
        assert!(want.0.0.lines().count() > 10, "fifo {direction} taints");
        assert_eq!(fifo(Some("1")), want, "fifo {direction} out of core");
        assert_eq!(
            std::fs::read_dir(scratch.path()).expect("scratch").count(),
            0
        );
    }
    for txid in marked.lines().skip(1) {
        assert!(
            truth.contains(txid),
            "{txid} marked as a CoinJoin, not one in truth"
        );
    }

    // Clusters make the picture's nodes; then the picture.
    let (ok, _, err) = run(&["cluster", "btc", "--warehouse", &wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    let prefix = tmp.path().join("pics/flow");
    let (ok, out, err) = run(&[
        "trace",
        "btc",
        "--warehouse",
        &wh,
        "--seed-category",
        "scam",
        "--stop-at",
        "exchange",
        "--device",
        "cpu",
        "--out",
        prefix.to_str().expect("utf8"),
        "--max-nodes",
        "40",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("nodes") && out.contains("flow.svg"), "{out}");
    let svg = std::fs::read_to_string(prefix.with_extension("svg")).expect("svg");
    let html = std::fs::read_to_string(prefix.with_extension("html")).expect("html");
    let dot = std::fs::read_to_string(prefix.with_extension("dot")).expect("dot");
    // The SVG is well-formed XML with nodes and edges; at most 40 nodes plus one folded
    // node per hop column.
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); \
             print(len(d.getElementsByTagName('rect')), len(d.getElementsByTagName('path')))",
            prefix.with_extension("svg").to_str().expect("utf8"),
        ])
        .output()
        .expect("python3");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let counts = String::from_utf8_lossy(&check.stdout);
    let (rects, paths) = counts.trim().split_once(' ').expect("two counts");
    let (rects, paths): (usize, usize) = (rects.parse().expect("n"), paths.parse().expect("n"));
    // Hop columns are labelled `hop N` along the top.
    let columns = svg.matches(r##"fill="#666">hop "##).count();
    assert!(
        columns > 1 && rects > 5 && rects <= 40 + columns && paths > 5,
        "{rects} nodes, {paths} edges, {columns} hop columns"
    );
    assert!(
        svg.contains("hop 0") && svg.contains("exchange-"),
        "exit labels drawn"
    );
    // The HTML page stands alone and lists every exit.
    assert!(
        html.starts_with("<!doctype html>") && html.contains("<svg") && !html.contains("<script")
    );
    for line in exits.lines().skip(1) {
        assert!(html.contains(line), "exit {line} not in the page");
    }
    assert!(
        dot.starts_with("digraph ferret_trace {")
            && dot.contains("->")
            && dot.trim_end().ends_with('}')
    );
}

/// `ferret taint eth --mem-mb`: the same `eth_taint` and `eth_exits` tables and exits
/// report as the in-memory run, for poison and the pool, forward and backward; scratch
/// left empty; `--device gpu` refused with the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_taint_out_of_core_writes_the_in_memory_tables() {
    use ferret_testkit::synth::account::{addr, chain, warehouse};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wh");
    let (rows, labels) = chain(11, 300, false);
    let wh = warehouse(dir.to_str().expect("utf-8"), &rows, &labels, 64).await;
    let whs = dir.to_str().expect("utf-8").to_string();
    let scratch = tempfile::tempdir().expect("scratch");
    let seed = addr(150);
    for (policy, direction, hops) in [
        ("haircut", "forward", None),
        ("poison", "forward", Some("3")),
        ("haircut", "backward", Some("2")),
        ("poison", "backward", None),
    ] {
        let mut args = vec![
            "taint",
            "eth",
            "--warehouse",
            &whs,
            "--seed-category",
            "scam",
            "--seed",
            &seed,
            "--stop-at",
            "exchange",
            "--policy",
            policy,
            "--direction",
            direction,
            "--device",
            "cpu",
        ];
        if let Some(h) = hops {
            args.extend(["--hops", h]);
        }
        let tables = || async {
            (
                query(
                    &wh,
                    "SELECT address, asset, hop, first_block, first_transaction_index, first_transaction_hash, tainted_value, tainted_transfers FROM eth_taint ORDER BY address",
                )
                .await,
                query(
                    &wh,
                    "SELECT address, label, category, asset, tainted_value, tainted_transfers, min_hop, first_block FROM eth_exits ORDER BY address",
                )
                .await,
            )
        };
        let (ok, out, err) = run(&args);
        assert!(ok, "{err}");
        let in_memory = tables().await;
        assert!(
            in_memory.0.len() > 20,
            "{policy} {direction}: {} rows",
            in_memory.0.len()
        );
        assert!(!in_memory.1.is_empty(), "{policy} {direction}: no exits");
        let mut stored = args.clone();
        stored.extend([
            "--mem-mb",
            "1",
            "--scratch",
            scratch.path().to_str().expect("utf-8"),
        ]);
        let (ok, stored_out, err) = run(&stored);
        assert!(ok, "{err}");
        assert_eq!(
            tables().await,
            in_memory,
            "{policy} {direction}: --mem-mb tables"
        );
        // The report: the same counts and exits (the sum beyond the seeds is added in
        // another order, so its last digits may differ).
        let head = |o: &str| {
            o.lines()
                .next()
                .unwrap_or("")
                .split(", ")
                .next()
                .unwrap_or("")
                .to_string()
        };
        let tail = |o: &str| o.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(head(&stored_out), head(&out), "{policy} {direction}");
        assert_eq!(tail(&stored_out), tail(&out), "{policy} {direction}");
        assert!(stored_out.contains("out of core"), "{stored_out}");
        assert_eq!(
            std::fs::read_dir(scratch.path()).expect("scratch").count(),
            0
        );
    }
    let (ok, _, err) = run(&[
        "taint",
        "eth",
        "--warehouse",
        &whs,
        "--seed",
        &seed,
        "--mem-mb",
        "1",
        "--device",
        "gpu",
    ]);
    assert!(!ok && err.contains("--mem-mb"), "{err}");
    // A budget past what the machine can address is an error, never an overflow.
    let huge = usize::MAX.to_string();
    for (chain, seed) in [
        ("eth", seed.as_str()),
        ("btc", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
    ] {
        let (ok, _, err) = run(&[
            "taint",
            chain,
            "--warehouse",
            &whs,
            "--seed",
            seed,
            "--mem-mb",
            &huge,
        ]);
        assert!(
            !ok && err.contains("--mem-mb") && err.contains("address"),
            "{err}"
        );
    }
    let (ok, _, err) = run(&["sql", "--warehouse", &whs, "--mem-mb", &huge, "SELECT 1"]);
    assert!(!ok && err.contains("--mem-mb"), "{err}");
}

/// A run given a memory budget returns freed memory to the system after 100 ms instead
/// of the allocator's default second (it starts itself again with the option set; see
/// `allocator_options` in main.rs); a value the user set is kept, and runs without a
/// budget keep the default. Read from the allocator's own report of its options.
#[test]
fn a_budgeted_run_asks_the_allocator_to_purge_sooner() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wh = tmp.path().join("wh");
    std::fs::create_dir_all(&wh).expect("warehouse dir");
    let wh = wh.to_str().expect("utf-8");
    let purge_delay = |args: &[&str], env: &[(&str, &str)]| -> (bool, Vec<String>) {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ferret"));
        c.args(args)
            .env("MIMALLOC_VERBOSE", "1")
            .env_remove("MIMALLOC_PURGE_DELAY");
        c.env_remove("FERRET_MEM_MB");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("ferret runs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let delays = err
            .lines()
            .filter(|l| l.contains("option 'purge_delay'"))
            .map(|l| l.trim().to_string())
            .collect();
        (out.status.success(), delays)
    };
    let sql = ["sql", "--warehouse", wh, "SELECT 1 AS one"];
    let budgeted = [
        "sql",
        "--warehouse",
        wh,
        "--mem-mb",
        "64",
        "SELECT 1 AS one",
    ];
    // The allocator reports its options at start: once per process.
    let (ok, d) = purge_delay(&budgeted, &[]);
    assert!(ok);
    assert_eq!(
        d.last().map(String::as_str),
        Some("option 'purge_delay': 100"),
        "{d:?}"
    );
    assert_eq!(d.len(), 2, "started again once: {d:?}");
    let (ok, d) = purge_delay(&sql, &[("FERRET_MEM_MB", "64")]);
    assert!(ok);
    assert_eq!(
        d.last().map(String::as_str),
        Some("option 'purge_delay': 100"),
        "{d:?}"
    );
    let (ok, d) = purge_delay(&budgeted, &[("MIMALLOC_PURGE_DELAY", "7")]);
    assert!(ok);
    assert_eq!(
        d,
        vec!["option 'purge_delay': 7"],
        "the user's value, one process"
    );
    let (ok, d) = purge_delay(&sql, &[]);
    assert!(ok);
    assert_eq!(
        d,
        vec!["option 'purge_delay': 1000"],
        "no budget: the default, one process"
    );
}
