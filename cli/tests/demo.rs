//! The README's first command: `ferret demo` generates a chain, indexes it and finds every
//! planted cash-out with SQL.

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

    // Rerunning the demo is incremental: nothing new to index, same answers.
    let again = common::ferret(&args);
    assert!(again.status.success());
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("nothing new to index"), "{again}");
    assert_eq!(
        again.split("-- The warehouse").nth(1),
        stdout.split("-- The warehouse").nth(1)
    );
}
