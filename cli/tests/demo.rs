//! The README's first command: `ferret demo` generates a chain, indexes it, finds every
//! planted cash-out with SQL, then clusters, runs taint to the exchanges (every planted
//! cash-out at its hop) and draws the flow.

mod common;

#[test]
fn demo_finds_every_planted_cashout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let wh = tmp.path().join("warehouse");
    let args = [
        "demo",
        "--dir",
        dir.to_str().expect("utf8"),
        "--warehouse",
        wh.to_str().expect("utf8"),
        "--blocks",
        "150",
    ];
    let out = common::ferret(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The case: run, alerts written, report to file.
    assert!(stdout.contains("-- A case: scam-flows run"), "{stdout}");
    let report = std::fs::read_to_string(dir.join("case-report.html")).expect("the case report");
    assert!(report.contains("Proof paths") && report.contains("<svg"));
    let alerts = std::fs::read_to_string(dir.join("cases/alerts.jsonl")).expect("the alerts");
    assert!(alerts.lines().count() > 0 && alerts.contains("new_exit"));
    // Clusters against the planted owners and CoinJoins: the thresholds of issue 10.
    let acc = stdout
        .split("-- Clusters against the planted owners and CoinJoins:")
        .nth(1)
        .expect("the accuracy section");
    let figure = |after: &str| -> f64 {
        acc.split(after)
            .nth(1)
            .and_then(|r| r.split([' ', ',']).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{after}` figure in {acc}"))
    };
    assert!(figure("pairwise precision ") >= 0.99, "{acc}");
    assert!(figure(", recall ") >= 0.95, "{acc}");
    assert!(acc.contains("; 0 clusters mix owners; 0 of "), "{acc}");
    for p in ["whirlpool ", "wasabi2 ", "joinmarket "] {
        let row = acc
            .lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p} row: {acc}"));
        let f: Vec<&str> = row.split_whitespace().collect();
        assert!(f[1].parse::<u64>().expect("planted") > 0, "{row}");
        assert_eq!(f[1], f[2], "every planted {p}is caught: {row}");
    }
    let section = stdout
        .split("-- Planted cash-outs")
        .nth(1)
        .expect("cash-out section");
    let row: Vec<u64> = section
        .lines()
        .find(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit()))
        .expect("data row")
        .split('|')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let planted = std::fs::read_to_string(dir.join("truth/cashouts.csv"))
        .expect("truth")
        .lines()
        .count() as u64
        - 1;
    assert!(planted > 10, "the demo plants scam flows");
    assert_eq!(row[0], planted);
    assert_eq!(row[1], planted, "SQL reaches every planted cash-out");

    // The taint kernel finds every planted (transaction, exit) at its hop, and the
    // picture is drawn.
    let section = stdout
        .split("-- Planted cash-outs the taint kernel found")
        .nth(1)
        .expect("taint section");
    let row: Vec<u64> = section
        .lines()
        .find(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit()))
        .expect("data row")
        .split('|')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    assert!(row[0] > 10);
    assert_eq!(row[1], row[0], "taint finds every planted cash-out");
    assert_eq!(row[2], row[0], "at the planted hop");
    let (planted_sats, tainted_sats) = (row[3] as f64, row[4] as f64);
    assert!((planted_sats - tainted_sats).abs() <= planted_sats * 0.01);
    assert!(stdout.contains("exits received"), "{stdout}");
    for ext in ["svg", "html", "dot"] {
        assert!(
            dir.join("trace").with_extension(ext).is_file(),
            "trace.{ext}"
        );
    }

    // The Ethereum part (where anvil is installed; CI requires it): every planted cash-out
    // found at its deposit address, at its hop, with its amount, in ETH and the stablecoin.
    if ferret_testkit::anvil::find_anvil().is_some() || common::require_all() {
        for unit in ["ETH", "fUSD"] {
            let section = stdout
                .split(&format!("-- Planted {unit} cash-outs found"))
                .nth(1)
                .unwrap_or_else(|| panic!("no {unit} section:\n{stdout}"));
            let row: Vec<u64> = section
                .lines()
                .find(|l| {
                    l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit())
                })
                .expect("data row")
                .split('|')
                .filter_map(|c| c.trim().parse().ok())
                .collect();
            assert!(row[0] >= 6, "{unit}: {row:?}");
            assert_eq!(
                row,
                vec![row[0]; 4],
                "{unit}: planted, found, at hop, within 1%"
            );
        }
    }

    // Rerunning the demo is incremental: nothing new to index, same answers.
    let again = common::ferret(&args);
    assert!(again.status.success());
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("nothing new to index (regtest)"), "{again}");
    if stdout.contains("-- Ethereum: anvil") {
        // The same seed on a fresh node is the same chain: nothing new either.
        assert!(
            again.contains("nothing new to index (chain 31337)"),
            "{again}"
        );
    }
    // The same answers (the kernel sections carry fresh run ids; compare the SQL part).
    let sql_part = |s: &str| {
        s.split("-- The warehouse")
            .nth(1)
            .and_then(|x| x.split("-- Labels").next())
            .map(str::to_string)
    };
    assert_eq!(sql_part(&again), sql_part(&stdout));
    assert!(
        again.contains("0 new; the labels table has"),
        "labels re-import adds nothing"
    );
}
