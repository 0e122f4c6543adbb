//! Cases end to end with the `ferret` binary on a generated chain: a case run, blocks
//! indexed, the case run again; its history through SQL; its alerts checked against an
//! oracle written here in SQL (exits of the two runs compared, the watched address's
//! transactions in the new blocks, the seeds' cluster growth); delivery to JSON lines
//! and to a local HTTP receiver that fails requests, with crashes between a delivery and
//! its cursor; overlapping runs refused; `ferret jobs run` once and with --watch.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = ferret(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args(args)
        .env("FERRET_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run ferret");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rows of a query as CSV lines (header dropped).
fn sql(wh: &str, q: &str) -> Vec<String> {
    let (ok, out, err) = run(&["sql", "--warehouse", wh, "--format", "csv", q]);
    assert!(ok, "{q}: {err}");
    out.lines().skip(1).map(str::to_string).collect()
}

fn sql_set(wh: &str, q: &str) -> BTreeSet<String> {
    sql(wh, q).into_iter().collect()
}

fn index_to(blocks: &Path, wh: &str, height: Option<u64>) {
    let mut args = vec![
        "index".to_string(),
        "btc".into(),
        "--blocks-dir".into(),
        blocks.to_str().expect("utf8").into(),
        "--warehouse".into(),
        wh.into(),
    ];
    if let Some(h) = height {
        args.push("--to-height".into());
        args.push(h.to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = run(&a);
    assert!(ok, "{err}");
}

/// A generated chain (blocks dir, labels file).
fn chain(dir: &Path, seed: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = dir.join("chain");
    let (ok, _, err) = run(&[
        "synth",
        "btc",
        "--out",
        out.to_str().expect("utf8"),
        "--blocks",
        "150",
        "--txs-per-block",
        "40",
        "--seed",
        seed,
    ]);
    assert!(ok, "{err}");
    (out.join("blocks"), out.join("truth/labels.csv"))
}

/// Imports the labels and clusters; returns the labels run (empty when unchanged).
fn prepare(wh: &str, labels: &Path) -> String {
    let (ok, out, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        wh,
        labels.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["cluster", "btc", "--warehouse", wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    // An import that changed nothing writes no run.
    out.split("(run ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_default()
        .to_string()
}

/// One HTTP request as the receiver saw it.
#[derive(Clone, Debug)]
struct Request {
    idempotency_key: String,
    body: serde_json::Value,
}

/// A local HTTP receiver: answers the first `fail` requests with the given statuses, then
/// 200; records every request that got a 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Request>>>,
    answered: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start(fail: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Mutex::new(0usize));
        let (g, n) = (Arc::clone(&got), Arc::clone(&answered));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut len = 0usize;
                let mut key = String::new();
                let mut line = String::new();
                if r.read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                loop {
                    line.clear();
                    if r.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("idempotency-key:") {
                        key = line["idempotency-key:".len()..].trim().to_string();
                    }
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                let i = {
                    let mut n = n.lock().expect("lock");
                    *n += 1;
                    *n - 1
                };
                let status = fail.get(i).copied().unwrap_or(200);
                if status == 200 {
                    g.lock().expect("lock").push(Request {
                        idempotency_key: key,
                        body: serde_json::from_slice(&body).expect("a JSON body"),
                    });
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, got, answered }
    }

    fn ids(&self) -> Vec<String> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.body["alert_id"].as_str().expect("id").to_string())
            .collect()
    }
}

fn jsonl_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("alerts file")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("one JSON object a line")["alert_id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect()
}

fn write_case(path: &Path, extra_alerts: &str, watch: &str) {
    std::fs::write(
        path,
        format!(
            r#"# A case as an investigator writes it.
name = "pig-1"
description = "generated scam flows"
chains = ["btc"]

[seeds]
categories = ["scam"]

[taint]
policy = "haircut"
direction = "forward"
stop_at = ["exchange"]

[alerts]
jsonl = "out/alerts.jsonl"
watch = ["{watch}"]
{extra_alerts}
"#
        ),
    )
    .expect("write case");
}

#[test]
fn a_case_reruns_on_new_blocks_with_exact_alerts_and_exactly_once_delivery() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (blocks, labels) = chain(tmp.path(), "8");
    let whp = tmp.path().join("wh");
    let wh = whp.to_str().expect("utf8");

    // A watched address with transactions on both sides of height 100: an exchange's.
    let full = tmp.path().join("full").to_string_lossy().into_owned();
    index_to(&blocks, &full, None);
    prepare(&full, &labels);
    let watch = sql(
        &full,
        "SELECT o.address FROM btc.outputs o JOIN labels l ON o.address = l.address \
         WHERE l.category = 'exchange' GROUP BY o.address \
         HAVING min(o.height) <= 100 AND max(o.height) > 100 ORDER BY count(*) DESC, o.address LIMIT 1",
    );
    let watch = watch
        .first()
        .expect("an exchange address active before and after 100")
        .clone();

    let case = tmp.path().join("pig.toml");
    write_case(&case, "", &watch);
    let case_s = case.to_str().expect("utf8");
    let jsonl = tmp.path().join("out/alerts.jsonl");

    // Bad runs first: the chain is not indexed yet.
    let (ok, _, err) = run(&["case", "run", case_s, "--warehouse", wh, "--device", "cpu"]);
    assert!(!ok, "ran on an empty warehouse");
    assert!(err.contains("index a chain into it first"), "{err}");

    index_to(&blocks, wh, Some(100));
    let labels_run = prepare(wh, &labels);
    assert!(!labels_run.is_empty());
    let (ok, out1, err) = run(&["case", "run", case_s, "--warehouse", wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    assert!(out1.contains("(first run)"), "{out1}");
    let run1 = sql(wh, "SELECT run_id FROM case_runs")[0].clone();

    index_to(&blocks, wh, None);
    assert_eq!(prepare(wh, &labels), "");
    let (ok, out2, err) = run(&["case", "run", case_s, "--warehouse", wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    assert!(out2.contains(&format!("against run {run1}")), "{out2}");
    let run2 = sql(
        wh,
        &format!("SELECT run_id FROM case_runs WHERE run_id <> '{run1}'"),
    )[0]
    .clone();

    // The history: two runs, what each read, one row in `cases`.
    let sha = {
        use sha2::Digest;
        let b = std::fs::read(&case).expect("case");
        sha2::Sha256::digest(&b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        sql(
            wh,
            "SELECT run_id, btc_tip_height, labels_run, case_sha256, coalesce(previous_run, '-') FROM case_runs ORDER BY started_at"
        ),
        [
            format!("{run1},100,{labels_run},{sha},-"),
            format!("{run2},150,{labels_run},{sha},{run1}"),
        ]
    );
    assert_eq!(
        sql(wh, "SELECT \"case\", runs, latest_run FROM cases"),
        [format!("pig-1,2,{run2}")]
    );
    let tip_hash = sql(wh, "SELECT hash FROM btc.blocks WHERE height = 150");
    assert_eq!(
        sql(
            wh,
            &format!("SELECT btc_tip_hash FROM case_runs WHERE run_id = '{run2}'")
        ),
        tip_hash
    );

    // The second run's exits are a from-scratch taint's: `ferret taint btc` with the
    // case's parameters on the same warehouse.
    let (ok, _, err) = run(&[
        "taint",
        "btc",
        "--warehouse",
        wh,
        "--seed-category",
        "scam",
        "--stop-at",
        "exchange",
        "--policy",
        "haircut",
        "--device",
        "cpu",
    ]);
    assert!(ok, "{err}");
    let exits2 = sql_set(
        wh,
        &format!(
            "SELECT address, tainted_value, outputs, min_hop FROM case_exits WHERE run_id = '{run2}'"
        ),
    );
    assert!(exits2.len() > 20, "{exits2:?}");
    assert_eq!(
        exits2,
        sql_set(
            wh,
            "SELECT address, tainted_value, outputs, min_hop FROM exits"
        )
    );
    assert_eq!(
        sql(
            wh,
            &format!("SELECT count(*) FROM case_taint WHERE run_id = '{run2}'")
        ),
        sql(wh, "SELECT count(*) FROM taint")
    );

    // The oracle for the alerts, in SQL over the two runs' exits.
    let e1 = format!("(SELECT address, tainted_value FROM case_exits WHERE run_id = '{run1}')");
    let e2 = format!("(SELECT address, tainted_value FROM case_exits WHERE run_id = '{run2}')");
    let want_new = sql_set(
        wh,
        &format!(
            "SELECT b.address, CAST(b.tainted_value AS DOUBLE) FROM {e2} b LEFT JOIN {e1} a ON a.address = b.address WHERE a.address IS NULL"
        ),
    );
    let want_more = sql_set(
        wh,
        &format!(
            "SELECT b.address, CAST(b.tainted_value - a.tainted_value AS DOUBLE) FROM {e2} b JOIN {e1} a ON a.address = b.address WHERE b.tainted_value > a.tainted_value"
        ),
    );
    let alerts = |kind: &str, run: &str| {
        sql_set(
            wh,
            &format!(
                "SELECT address, amount FROM case_alerts WHERE run_id = '{run}' AND kind = '{kind}'"
            ),
        )
    };
    assert!(
        !want_new.is_empty() && !want_more.is_empty(),
        "the new blocks brought no new taint to exits"
    );
    assert_eq!(alerts("new_exit", &run2), want_new);
    assert_eq!(alerts("exit_increase", &run2), want_more);
    // The first run diffed against nothing: every exit is new.
    assert_eq!(
        alerts("new_exit", &run1),
        sql_set(
            wh,
            &format!("SELECT address, CAST(tainted_value AS DOUBLE) FROM {e1}")
        )
    );
    // Each exit alert names a tainted transaction paying the exit.
    let bad = sql(
        wh,
        "SELECT a.address, a.txid FROM case_alerts a WHERE a.kind IN ('new_exit', 'exit_increase') AND NOT EXISTS (SELECT 1 FROM case_taint t WHERE t.run_id = a.run_id AND t.txid = a.txid AND t.address = a.address)",
    );
    assert!(bad.is_empty(), "{bad:?}");

    // Watchlist: the watched address's transactions, each in the run that first saw it.
    let watched = |lo: i64, hi: i64| {
        sql_set(
            wh,
            &format!(
                "SELECT txid, height FROM (SELECT txid, height FROM btc.outputs WHERE address = '{watch}' UNION SELECT txid, height FROM btc.inputs WHERE address = '{watch}') WHERE height > {lo} AND height <= {hi}"
            ),
        )
    };
    let seen = |run: &str| {
        sql_set(
            wh,
            &format!(
                "SELECT DISTINCT txid, height FROM case_alerts WHERE run_id = '{run}' AND kind = 'watchlist'"
            ),
        )
    };
    assert_eq!(seen(&run1), watched(-1, 100));
    assert_eq!(seen(&run2), watched(100, 150));
    assert!(!seen(&run2).is_empty());

    // Cluster growth: members of the second run not in the first, seeds excepted.
    let m = |run: &str| format!("(SELECT address, seed FROM case_members WHERE run_id = '{run}')");
    assert_eq!(
        sql_set(
            wh,
            &format!(
                "SELECT address FROM case_alerts WHERE run_id = '{run2}' AND kind = 'new_member'"
            )
        ),
        sql_set(
            wh,
            &format!(
                "SELECT b.address FROM {} b LEFT JOIN {} a ON a.address = b.address WHERE a.address IS NULL AND b.address <> b.seed",
                m(&run2),
                m(&run1)
            )
        )
    );
    let members = sql(
        wh,
        &format!("SELECT count(*) FROM case_members WHERE run_id = '{run2}' AND address <> seed"),
    );
    assert_ne!(members, ["0"], "no seed was clustered with another address");

    // Every alert went to the JSON-lines file once, in order.
    let all_ids = sql(wh, "SELECT alert_id FROM case_alerts ORDER BY run_id, seq");
    assert_eq!(jsonl_ids(&jsonl), all_ids);

    // A run with nothing new raises nothing, and writes nothing more.
    let (ok, out3, err) = run(&["case", "run", case_s, "--warehouse", wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    assert!(out3.contains("0 alerts"), "{out3}");
    assert_eq!(jsonl_ids(&jsonl), all_ids);
    assert_eq!(sql(wh, "SELECT count(*) FROM case_runs"), ["3"]);

    // A crash after the lines were written and before the cursor: the rerun writes none
    // twice. A torn last line (a crash mid-write) is cut off and written again.
    let jsonl2 = tmp.path().join("out/second.jsonl");
    write_case(&case, "", &watch);
    std::fs::write(
        &case,
        std::fs::read_to_string(&case)
            .expect("case")
            .replace("out/alerts.jsonl", "out/second.jsonl"),
    )
    .expect("write");
    let (ok, _, _) = run_env(
        &["case", "deliver", case_s, "--warehouse", wh],
        &[("FERRET_FAILPOINT", "after-alerts-jsonl")],
    );
    assert!(!ok, "the failpoint did not stop delivery");
    assert_eq!(jsonl_ids(&jsonl2), all_ids);
    let (ok, out, err) = run(&["case", "deliver", case_s, "--warehouse", wh]);
    assert!(ok, "{err}");
    assert!(out.contains("delivered 0 alerts"), "{out}");
    assert_eq!(jsonl_ids(&jsonl2), all_ids);
    let jsonl3 = tmp.path().join("out/third.jsonl");
    let text = std::fs::read_to_string(&case)
        .expect("case")
        .replace("out/second.jsonl", "out/third.jsonl");
    std::fs::write(&case, text).expect("write");
    std::fs::create_dir_all(jsonl3.parent().expect("dir")).expect("dir");
    std::fs::write(&jsonl3, "{\"alert_id\": \"torn").expect("torn line");
    let (ok, _, err) = run(&["case", "deliver", case_s, "--warehouse", wh]);
    assert!(ok, "{err}");
    assert_eq!(jsonl_ids(&jsonl3), all_ids);

    // Webhook: refused and throttled requests are retried; every alert arrives once,
    // with its id as the idempotency key.
    let rx = Receiver::start(vec![503, 429, 500]);
    let text = std::fs::read_to_string(&case)
        .expect("case")
        .replace("[alerts]", &format!("[alerts]\nwebhook = \"{}\"", rx.url));
    std::fs::write(&case, text).expect("write");
    let (ok, out, err) = run(&["case", "deliver", case_s, "--warehouse", wh]);
    assert!(ok, "{err}");
    assert!(out.contains("3 retries"), "{out}");
    assert_eq!(rx.ids(), all_ids);
    assert!(
        rx.got
            .lock()
            .expect("lock")
            .iter()
            .all(|r| r.idempotency_key == r.body["alert_id"].as_str().unwrap_or(""))
    );
    assert_eq!(*rx.answered.lock().expect("lock"), all_ids.len() + 3);

    // A crash between a POST's 200 and its cursor: the rerun sends that one alert again
    // (same id, which the receiver can discard) and every other exactly once.
    let rx2 = Receiver::start(vec![]);
    let text = std::fs::read_to_string(&case)
        .expect("case")
        .replace(&rx.url, &rx2.url);
    std::fs::write(&case, text).expect("write");
    let (ok, _, _) = run_env(
        &["case", "deliver", case_s, "--warehouse", wh],
        &[("FERRET_FAILPOINT", "after-webhook-post:3")],
    );
    assert!(!ok, "the failpoint did not stop delivery");
    assert_eq!(rx2.ids(), all_ids[..3]);
    let (ok, _, err) = run(&["case", "deliver", case_s, "--warehouse", wh]);
    assert!(ok, "{err}");
    let ids = rx2.ids();
    assert_eq!(ids.len(), all_ids.len() + 1);
    assert_eq!(
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        all_ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        ids[2], ids[3],
        "only the alert whose cursor was lost is sent again"
    );

    // A receiver that refuses an alert (4xx): an error naming it; nothing skipped.
    let rx3 = Receiver::start(vec![400]);
    let text = std::fs::read_to_string(&case)
        .expect("case")
        .replace(&rx2.url, &rx3.url);
    std::fs::write(&case, text).expect("write");
    let (ok, _, err) = run(&["case", "deliver", case_s, "--warehouse", wh]);
    assert!(
        !ok && err.contains("refused: HTTP 400") && err.contains(&all_ids[0]),
        "{err}"
    );
    assert!(rx3.ids().is_empty());

    // Overlapping runs: one frozen before its commit holds the case's lease; a second
    // is refused before it reads anything; once the first is gone a run goes through.
    let mut first = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "case",
            "run",
            case_s,
            "--warehouse",
            wh,
            "--device",
            "cpu",
            "--no-deliver",
        ])
        .env("FERRET_LOG", "warn")
        .env("FERRET_FAILPOINT", "before-results-commit=stop")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stat = format!("/proc/{}/stat", first.id());
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&stat)
        .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('T')))
    {
        assert!(
            t0.elapsed().as_secs() < 120,
            "the first run never reached its commit"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (ok, _, err) = run(&[
        "case",
        "run",
        case_s,
        "--warehouse",
        wh,
        "--device",
        "cpu",
        "--no-deliver",
    ]);
    assert!(
        !ok && err.contains("another writer holds the lease"),
        "{err}"
    );
    first.kill().expect("kill");
    let _ = first.wait();
    assert_eq!(
        sql(wh, "SELECT count(*) FROM case_runs"),
        ["3"],
        "the killed run committed"
    );
    let (ok, _, err) = run(&[
        "case",
        "run",
        case_s,
        "--warehouse",
        wh,
        "--device",
        "cpu",
        "--no-deliver",
    ]);
    assert!(ok, "{err}");
    assert_eq!(sql(wh, "SELECT count(*) FROM case_runs"), ["4"]);
    let (ok, out, err) = run(&["case", "show", "pig-1", "--warehouse", wh]);
    assert!(
        ok && out.contains(&run2) && out.contains("alerts of run") && out.contains("resume states"),
        "{out}{err}"
    );
    let (ok, out, err) = run(&["case", "list", "--warehouse", wh]);
    assert!(ok && out.contains("pig-1"), "{out}{err}");

    // Repeat offenders: a second case seeded with one of the first case's seeds meets it
    // at the exits both reached and at that seed's cluster.
    let seed = sql(
        wh,
        "SELECT min(address) FROM labels WHERE category = 'scam'",
    )[0]
    .clone();
    let case2 = tmp.path().join("pig2.toml");
    std::fs::write(
        &case2,
        format!("name = \"pig-2\"\nchains = [\"btc\"]\n[seeds]\naddresses = [\"{seed}\"]\n[taint]\nstop_at = [\"exchange\"]\n"),
    )
    .expect("write");
    let (ok, _, err) = run(&[
        "case",
        "run",
        case2.to_str().expect("utf8"),
        "--warehouse",
        wh,
        "--device",
        "cpu",
    ]);
    assert!(ok, "{err}");
    let latest = |c: &str| {
        format!(
            "(SELECT address FROM case_exits e JOIN cases c ON e.\"case\" = c.\"case\" AND e.run_id = c.latest_run WHERE c.\"case\" = '{c}')"
        )
    };
    let shared = sql_set(
        wh,
        &format!(
            "SELECT address FROM {} INTERSECT SELECT address FROM {}",
            latest("pig-1"),
            latest("pig-2")
        ),
    );
    assert!(!shared.is_empty());
    assert_eq!(
        sql_set(
            wh,
            "SELECT key FROM repeat_offenders WHERE kind = 'exit' AND cases = 'pig-1,pig-2'"
        ),
        shared
    );
    assert_eq!(
        sql(
            wh,
            &format!(
                "SELECT count(*) FROM repeat_offenders r JOIN case_members m ON r.kind = 'cluster' AND r.key = CAST(m.cluster_id AS VARCHAR) AND m.address = '{seed}' AND m.\"case\" = 'pig-2'"
            )
        ),
        ["1"],
        "the shared seed's cluster is not reported"
    );

    // A seed whose cluster is larger than max_cluster_size (an exchange's, say) is not
    // expanded: the case keeps the seed alone, and says so.
    let case3 = tmp.path().join("pig3.toml");
    std::fs::write(
        &case3,
        format!("name = \"pig-3\"\nchains = [\"btc\"]\n[seeds]\naddresses = [\"{seed}\"]\nmax_cluster_size = 1\n[taint]\nstop_at = [\"exchange\"]\n"),
    )
    .expect("write");
    let (ok, out, err) = run(&[
        "case",
        "run",
        case3.to_str().expect("utf8"),
        "--warehouse",
        wh,
        "--device",
        "cpu",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("not expanded: seed {seed}")), "{out}");
    assert_eq!(
        sql(
            wh,
            "SELECT address FROM case_members WHERE \"case\" = 'pig-3'"
        ),
        [seed.clone()]
    );
    assert_eq!(
        sql(
            wh,
            "SELECT count(*) FROM case_alerts WHERE \"case\" = 'pig-3' AND kind = 'new_member'"
        ),
        ["0"]
    );

    // The findings of run 2 to share: its seeds' clusters and the exits above 0.1 BTC,
    // in every format; each imports back to the same labels rows, with its provenance
    // written beside them.
    let want = {
        let mut w = sql_set(
            wh,
            &format!("SELECT address, 'scam' FROM case_members WHERE run_id = '{run2}'"),
        );
        w.extend(sql_set(wh, &format!("SELECT address, category FROM case_exits WHERE run_id = '{run2}' AND tainted_value >= 10000000")));
        w
    };
    assert!(want.len() > 10, "{want:?}");
    let mut rows_of_formats = Vec::new();
    for format in ["csv", "tagpack", "misp", "stix"] {
        let ext = match format {
            "csv" => "csv",
            "tagpack" => "yaml",
            _ => "json",
        };
        let out = tmp.path().join(format!("findings-{format}.{ext}"));
        let (ok, _, err) = run(&[
            "labels",
            "export",
            "--warehouse",
            wh,
            "--case",
            "pig-1",
            "--run",
            &run2,
            "--exit-min",
            "10000000",
            "--format",
            format,
            "--out",
            out.to_str().expect("utf8"),
        ]);
        assert!(ok, "{format}: {err}");
        let text = std::fs::read_to_string(&out).expect("export");
        for needle in [
            run2.as_str(),
            "co-spend cluster",
            "exit",
            "ferret:case:pig-1",
        ] {
            assert!(text.contains(needle), "{format}: no `{needle}`");
        }
        let back = tmp
            .path()
            .join(format!("back-{format}"))
            .to_string_lossy()
            .into_owned();
        let (ok, _, err) = run(&[
            "labels",
            "import",
            "--warehouse",
            &back,
            out.to_str().expect("utf8"),
        ]);
        assert!(ok, "{format}: {err}");
        assert_eq!(
            sql_set(&back, "SELECT address, category FROM labels"),
            want,
            "{format}"
        );
        rows_of_formats.push(sql(&back, "SELECT address, label, category, source, coalesce(confidence, '-') FROM labels ORDER BY 1, 2, 3"));
    }
    assert!(
        rows_of_formats.windows(2).all(|w| w[0] == w[1]),
        "the formats read back differently"
    );
    // With --tainted-min: also every tainted address beyond the seeds whose tainted value
    // adds up to the minimum (an SQL oracle over the run's taint rows).
    let tainted_want = {
        let mut w = want.clone();
        w.extend(sql_set(
            wh,
            &format!(
                "SELECT address, 'tainted' FROM case_taint WHERE run_id = '{run2}' AND hop > 0 AND address IS NOT NULL \
                 GROUP BY address HAVING sum(tainted_value) >= 1000000"
            ),
        ));
        w
    };
    assert!(
        tainted_want.len() > want.len() + 10,
        "{}",
        tainted_want.len()
    );
    let out = tmp.path().join("findings-tainted.csv");
    let (ok, _, err) = run(&[
        "labels",
        "export",
        "--warehouse",
        wh,
        "--case",
        "pig-1",
        "--run",
        &run2,
        "--exit-min",
        "10000000",
        "--tainted-min",
        "1000000",
        "--format",
        "csv",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    let back = tmp
        .path()
        .join("back-tainted")
        .to_string_lossy()
        .into_owned();
    let (ok, _, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &back,
        out.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        sql_set(&back, "SELECT address, category FROM labels"),
        tainted_want
    );
    let (ok, _, err) = run(&[
        "labels",
        "export",
        "--warehouse",
        wh,
        "--case",
        "nope",
        "--format",
        "csv",
        "--out",
        tmp.path().join("x.csv").to_str().expect("utf8"),
    ]);
    assert!(!ok && err.contains("no such case"), "{err}");

    // The proof paths: one per exit of run 2; step 0 pays a seed; each later step spends
    // an output of the step before paying its `from_address`, and pays `to_address`;
    // the last step pays the exit.
    let r2 = format!("run_id = '{run2}'");
    assert_eq!(
        sql(
            wh,
            &format!("SELECT count(DISTINCT exit) FROM case_paths WHERE {r2}")
        ),
        sql(wh, &format!("SELECT count(*) FROM case_exits WHERE {r2}"))
    );
    let broken = sql(
        wh,
        &format!(
            "SELECT p.exit, p.step FROM case_paths p WHERE p.{r2} AND p.step > 0 AND NOT EXISTS ( \
           SELECT 1 FROM btc.inputs i JOIN btc.outputs o ON i.spent_txid = o.txid AND i.spent_vout = o.vout \
           JOIN case_paths q ON q.txid = o.txid \
           WHERE q.{r2} AND q.exit = p.exit AND q.step = p.step - 1 AND i.txid = p.txid AND o.address = p.from_address)"
        ),
    );
    assert!(
        broken.is_empty(),
        "steps that do not spend the previous step: {broken:?}"
    );
    let unpaid = sql(
        wh,
        &format!(
            "SELECT p.exit, p.step FROM case_paths p WHERE p.{r2} AND NOT EXISTS ( \
           SELECT 1 FROM btc.outputs o WHERE o.txid = p.txid AND o.address = p.to_address)"
        ),
    );
    assert!(
        unpaid.is_empty(),
        "steps that do not pay their to_address: {unpaid:?}"
    );
    let ends = sql(
        wh,
        &format!(
            "SELECT p.exit FROM case_paths p JOIN (SELECT exit, max(step) AS s FROM case_paths WHERE {r2} GROUP BY exit) m \
         ON p.exit = m.exit AND p.step = m.s WHERE p.{r2} AND p.to_address <> p.exit \
         UNION ALL SELECT exit FROM case_paths WHERE {r2} AND step = 0 \
         AND to_address NOT IN (SELECT address FROM labels WHERE category = 'scam')"
        ),
    );
    assert!(
        ends.is_empty(),
        "paths not from a seed to their exit: {ends:?}"
    );

    // The extract of run 2: the committed files hold what SQL shows, a second extract
    // to the same place is refused, and the worked example of docs/extract.md runs on it.
    let ex = tmp.path().join("extract");
    let exs = ex.to_str().expect("utf8");
    let (ok, out, err) = run(&[
        "extract",
        "--warehouse",
        wh,
        "--case",
        "pig-1",
        "--run",
        &run2,
        "--out",
        exs,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("committed by _extract.json"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ex.join("_extract.json")).expect("commit"))
            .expect("json");
    let rows = |t: &str| -> u64 {
        manifest["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter(|f| f["table"] == t)
            .map(|f| f["rows"].as_u64().expect("rows"))
            .sum()
    };
    assert_eq!(
        rows("exits").to_string(),
        sql(wh, &format!("SELECT count(*) FROM case_exits WHERE {r2}"))[0]
    );
    assert_eq!(
        rows("paths").to_string(),
        sql(wh, &format!("SELECT count(*) FROM case_paths WHERE {r2}"))[0]
    );
    assert_eq!(
        rows("flows").to_string(),
        sql(wh, &format!("SELECT count(*) FROM case_flows WHERE {r2}"))[0]
    );
    assert_eq!(
        rows("transactions").to_string(),
        sql(
            wh,
            &format!("SELECT count(DISTINCT txid) FROM case_taint WHERE {r2}")
        )[0]
    );
    assert!(rows("addresses") > 0);
    let (ok, _, err) = run(&[
        "extract",
        "--warehouse",
        wh,
        "--case",
        "pig-1",
        "--out",
        exs,
    ]);
    assert!(!ok && err.contains("already holds an extract"), "{err}");
    let (ok, _, err) = run(&[
        "extract",
        "--warehouse",
        wh,
        "--case",
        "pig-1",
        "--run",
        "123-nope",
        "--out",
        tmp.path().join("x2").to_str().expect("utf8"),
    ]);
    assert!(!ok && err.contains("no run `123-nope`"), "{err}");
    // The same extract to S3 (SeaweedFS under scripts/test.sh): the same files, byte for
    // byte, committed the same way.
    match std::env::var("FERRET_S3_BUCKET") {
        Ok(bucket) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos();
            let url = format!("s3://{bucket}/extract-{nanos}");
            let (ok, _, err) = run(&[
                "extract",
                "--warehouse",
                wh,
                "--case",
                "pig-1",
                "--run",
                &run2,
                "--out",
                &url,
            ]);
            assert!(ok, "{err}");
            let remote = tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(async {
                    let w = ferret_schemas::Warehouse::open(&url).expect("s3");
                    let p = w.root().clone().join("_extract.json");
                    use object_store::ObjectStoreExt as _;
                    let b = w
                        .store()
                        .get(&p)
                        .await
                        .expect("the commit on S3")
                        .bytes()
                        .await
                        .expect("bytes");
                    serde_json::from_slice::<serde_json::Value>(&b).expect("json")
                });
            let files = |m: &serde_json::Value| -> BTreeSet<String> {
                m["files"]
                    .as_array()
                    .expect("files")
                    .iter()
                    .map(|f| format!("{} {} {} {}", f["path"], f["rows"], f["bytes"], f["sha256"]))
                    .collect()
            };
            assert_eq!(files(&remote), files(&manifest));
        }
        Err(_) => assert!(
            !common::require_all(),
            "FERRET_S3_BUCKET unset: scripts/test.sh starts SeaweedFS"
        ),
    }
    if let Some(py) = common::python_with("pandas,polars,duckdb,pyarrow", &[]) {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/extract.md"),
        )
        .expect("docs/extract.md");
        let code = doc
            .split("```python\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a python block");
        let script = tmp.path().join("notebook.py");
        std::fs::write(&script, code).expect("write");
        let out = Command::new(&py)
            .arg(&script)
            .env("EXTRACT", &ex)
            .output()
            .expect("python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("run {run2}")) && stdout.contains("step 0:"),
            "{stdout}"
        );
    }

    // The report of run 2: one self-contained HTML file with what an investigator files,
    // rendered by a real headless Chromium; its DOM text and its screenshot are checked
    // for that content; the PDF printed by the same browser.
    let html = tmp.path().join("report.html");
    let pdf = tmp.path().join("report.pdf");
    let chromium = ferret_cases::report::find_chromium();
    assert!(
        chromium.is_some() || !common::require_all(),
        "chromium missing: scripts/test.sh installs it"
    );
    let mut args = vec![
        "report",
        "--warehouse",
        wh,
        "--case",
        "pig-1",
        "--run",
        &run2,
        "--out",
        html.to_str().expect("utf8"),
    ];
    if chromium.is_some() {
        args.extend(["--pdf", pdf.to_str().expect("utf8")]);
    }
    let (ok, _, err) = run(&args);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&html).expect("report");
    let tip = sql(
        wh,
        &format!("SELECT btc_tip_hash FROM case_runs WHERE {r2}"),
    )[0]
    .clone();
    let mut must: Vec<String> = vec![
        run2.clone(),
        tip,
        sha.clone(),
        labels_run.clone(),
        "<svg".into(),
    ];
    must.extend(sql(
        wh,
        &format!("SELECT address FROM case_exits WHERE {r2}"),
    ));
    must.extend(sql(
        wh,
        &format!("SELECT DISTINCT txid FROM case_paths WHERE {r2}"),
    ));
    must.extend(sql(
        wh,
        &format!("SELECT DISTINCT address FROM case_members WHERE {r2}"),
    ));
    for m in &must {
        assert!(text.contains(m.as_str()), "the report lacks {m}");
    }
    assert!(
        !text.contains("<script") && !text.contains("src=\"http") && !text.contains("href=\"http"),
        "not self-contained"
    );
    let links = sql(
        wh,
        &format!(
            "SELECT DISTINCT l.txid FROM cluster_links l JOIN case_members m ON l.cluster_id = m.cluster_id WHERE m.{r2} LIMIT 3"
        ),
    );
    assert!(
        !links.is_empty() && links.iter().all(|t| text.contains(t.as_str())),
        "no co-spend evidence for the clusters"
    );
    if let Some(chromium) = chromium {
        let profile = tmp.path().join("chromium-profile");
        let url = format!("file://{}", html.display());
        let browse = |extra: &[&str]| {
            Command::new(&chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(extra)
                .arg(&url)
                .output()
                .expect("chromium")
        };
        let dom = browse(&["--dump-dom"]);
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(
            dom.contains("Proof paths") && dom.contains(&run2),
            "the browser did not render the report"
        );
        let exits = sql(wh, &format!("SELECT address FROM case_exits WHERE {r2}"));
        assert!(exits.iter().all(|e| dom.contains(e.as_str())));
        let shot = tmp.path().join("report.png");
        let out = browse(&[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,6000",
        ]);
        assert!(
            shot.exists(),
            "no screenshot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (w, h, px) = png_rgba(&std::fs::read(&shot).expect("png"));
        assert_eq!((w, h), (1280, 6000));
        let ink = px
            .iter()
            .filter(|p| p[0] < 200 && p[1] < 200 && p[2] < 200)
            .count();
        // The flow picture's edges: #c0392b at 45% over white.
        let edges = px
            .iter()
            .filter(|p| {
                (200..=245).contains(&p[0])
                    && (130..=195).contains(&p[1])
                    && (120..=190).contains(&p[2])
                    && p[0] > p[1] + 30
            })
            .count();
        assert!(
            ink > 20_000,
            "the screenshot is nearly blank: {ink} dark pixels"
        );
        assert!(
            edges > 500,
            "no flow edges in the screenshot: {edges} pixels"
        );
        let pdf = std::fs::read(&pdf).expect("pdf");
        assert!(
            pdf.starts_with(b"%PDF") && pdf.len() > 20_000,
            "{} bytes",
            pdf.len()
        );
    }
}

#[test]
fn case_files_and_schedules_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (blocks, labels) = chain(tmp.path(), "3");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    index_to(&blocks, &wh, None);
    prepare(&wh, &labels);
    let dir = tmp.path().join("cases");
    std::fs::create_dir_all(&dir).expect("dir");
    let case = |name: &str, schedule: &str, seeds: &str| {
        format!(
            "name = \"{name}\"\nchains = [\"btc\"]\n{schedule}\n[seeds]\n{seeds}\n[taint]\nstop_at = [\"exchange\"]\n"
        )
    };
    // A typo in a case file: the error names the file, line and column.
    std::fs::write(
        dir.join("typo.toml"),
        case("typo", "", "categories = [\"scam\"]\nadresses = []"),
    )
    .expect("write");
    let (ok, _, err) = run(&[
        "jobs",
        "run",
        "--config",
        dir.to_str().expect("utf8"),
        "--warehouse",
        &wh,
        "--device",
        "cpu",
    ]);
    assert!(
        !ok && err.contains("typo.toml:6:1") && err.contains("unknown field `adresses`"),
        "{err}"
    );
    std::fs::remove_file(dir.join("typo.toml")).expect("rm");
    // The same in a YAML case file: its own line and column.
    std::fs::write(
        dir.join("typo.yaml"),
        "name: typo\nchains: [btc]\nseeds:\n  categories: [scam]\n  adresses: []\n",
    )
    .expect("write");
    let (ok, _, err) = run(&[
        "jobs",
        "run",
        "--config",
        dir.to_str().expect("utf8"),
        "--warehouse",
        &wh,
        "--device",
        "cpu",
    ]);
    assert!(
        !ok && err.contains("typo.yaml:5:3") && err.contains("unknown field `adresses`"),
        "{err}"
    );
    std::fs::remove_file(dir.join("typo.yaml")).expect("rm");
    // A seed category no label has: refused, nothing committed.
    std::fs::write(
        tmp.path().join("nope.toml"),
        case("nope", "", "categories = [\"scma\"]"),
    )
    .expect("write");
    let (ok, _, err) = run(&[
        "case",
        "run",
        tmp.path().join("nope.toml").to_str().expect("utf8"),
        "--warehouse",
        &wh,
        "--device",
        "cpu",
    ]);
    assert!(!ok && err.contains("category `scma`"), "{err}");
    assert_eq!(sql(&wh, "SELECT count(*) FROM case_runs"), ["0"]);

    // Its webhook refuses the first alert (400): the run commits, its delivery fails.
    let rx = Receiver::start(vec![400]);
    std::fs::write(
        dir.join("daily.toml"),
        case(
            "daily",
            "schedule = \"0 0 1 1 *\"",
            "categories = [\"scam\"]",
        ) + &format!("[alerts]\nwebhook = \"{}\"\n", rx.url),
    )
    .expect("write");
    // A YAML case file (loaded with the others; unscheduled, so never run here).
    std::fs::write(
        dir.join("manual.yml"),
        "name: manual\nchains: [btc]\nseeds:\n  categories: [scam]\ntaint:\n  stop_at: [exchange]\n",
    )
    .expect("write");
    let d = dir.to_str().expect("utf8");
    // Due (never run) → runs; then not due until next January; the unscheduled case never.
    let (ok, out, err) = run(&[
        "jobs",
        "run",
        "--config",
        d,
        "--warehouse",
        &wh,
        "--device",
        "cpu",
    ]);
    assert!(
        !ok && err.contains("daily: failed") && err.contains("HTTP 400"),
        "{out}{err}"
    );
    assert!(!out.contains("manual"), "{out}");
    assert_eq!(
        sql(
            &wh,
            "SELECT count(*) FROM case_runs WHERE \"case\" = 'daily'"
        ),
        ["1"]
    );
    // Not due, but its undelivered alerts go out at the next pass, in order.
    let (ok, out, err) = run(&[
        "jobs",
        "run",
        "--config",
        d,
        "--warehouse",
        &wh,
        "--device",
        "cpu",
    ]);
    assert!(
        ok && out.contains("daily: not due; undelivered alerts sent"),
        "{out}{err}"
    );
    let want = sql(
        &wh,
        "SELECT alert_id FROM case_alerts WHERE \"case\" = 'daily' ORDER BY seq",
    );
    assert!(!want.is_empty());
    assert_eq!(rx.ids(), want);
    let (ok, out, err) = run(&[
        "jobs",
        "run",
        "--config",
        d,
        "--warehouse",
        &wh,
        "--device",
        "cpu",
    ]);
    assert!(ok && out.trim().is_empty(), "{out}{err}");
    assert_eq!(
        sql(
            &wh,
            "SELECT \"case\", count(*) FROM case_runs GROUP BY \"case\""
        ),
        ["daily,1"]
    );

    // --watch: a new due case in the directory is picked up; SIGTERM stops it cleanly.
    let mut w = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "jobs",
            "run",
            "--config",
            d,
            "--warehouse",
            &wh,
            "--device",
            "cpu",
            "--watch",
            "--max-sleep-secs",
            "1",
        ])
        .env("FERRET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::fs::write(
        dir.join("later.toml"),
        case("later", "schedule = \"@yearly\"", "categories = [\"scam\"]"),
    )
    .expect("write");
    let t0 = std::time::Instant::now();
    while sql(
        &wh,
        "SELECT count(*) FROM case_runs WHERE \"case\" = 'later'",
    ) != ["1"]
    {
        assert!(
            t0.elapsed().as_secs() < 120,
            "--watch never ran the new case"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = w.wait().expect("wait");
    let mut err = String::new();
    w.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(status.success(), "{err}");
    assert_eq!(
        sql(
            &wh,
            "SELECT \"case\", count(*) FROM case_runs GROUP BY \"case\" ORDER BY 1"
        ),
        ["daily,1", "later,1"]
    );
}

/// The same on Ethereum: a case over a generated economy on a real node (anvil), run,
/// more blocks indexed, run again; the exits equal `ferret taint eth`'s, the alerts the
/// SQL oracle's, the watched address's transfers reported by the run that first saw them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ethereum_case_reruns_on_new_blocks_with_exact_alerts() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("synth");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let o = out.to_str().expect("utf8");
    let (ok, _, err) = run(&[
        "synth",
        "eth",
        "--rpc",
        node.url(),
        "--out",
        o,
        "--seed",
        "7",
        "--blocks",
        "24",
        "--txs-per-block",
        "24",
        "--users",
        "50",
    ]);
    assert!(ok, "{err}");
    let labels = out.join("truth/labels.csv");
    let full = tmp.path().join("full").to_string_lossy().into_owned();
    for (w, to) in [(&full, None), (&wh, Some("14"))] {
        let mut args = vec![
            "index",
            "eth",
            "--rpc",
            node.url(),
            "--warehouse",
            w.as_str(),
        ];
        if let Some(t) = to {
            args.extend(["--to", t]);
        }
        let (ok, _, err) = run(&args);
        assert!(ok, "{err}");
        let (ok, _, err) = run(&[
            "labels",
            "import",
            "--warehouse",
            w,
            labels.to_str().expect("utf8"),
        ]);
        assert!(ok, "{err}");
    }
    // A watched exchange wallet with ETH transfers both before and after block 14.
    let watch = sql(
        &full,
        "SELECT t.to_address FROM eth.transfers t JOIN labels l ON t.to_address = l.address \
         WHERE l.category = 'exchange' AND t.asset = 'ETH' GROUP BY 1 \
         HAVING min(t.block_number) <= 14 AND max(t.block_number) > 14 ORDER BY count(*) DESC, 1 LIMIT 1",
    );
    let watch = watch
        .first()
        .expect("an exchange active on both sides of block 14")
        .clone();
    let case = tmp.path().join("eth.toml");
    std::fs::write(
        &case,
        format!(
            "name = \"eth-1\"\nchains = [\"eth\"]\n[seeds]\ncategories = [\"scam\"]\n[taint]\npolicy = \"haircut\"\nstop_at = [\"exchange\"]\nasset = \"ETH\"\n[alerts]\nwatch = [\"{watch}\"]\n"
        ),
    )
    .expect("write");
    let c = case.to_str().expect("utf8");
    let (ok, _, err) = run(&["case", "run", c, "--warehouse", &wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["index", "eth", "--rpc", node.url(), "--warehouse", &wh]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["case", "run", c, "--warehouse", &wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("eth taint: incremental: blocks above height 14\n"),
        "{out}"
    );
    // Incremental, yet every table equals a first run on the warehouse indexed in one go.
    let (ok, out, err) = run(&["case", "run", c, "--warehouse", &full, "--device", "cpu"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("eth taint: full: the case's first run"),
        "{out}"
    );
    same_eth_case_tables(
        &wh,
        &full,
        &["eth_taint", "eth_exits", "eth_state", "eth_state_edges"],
        "incremental against from scratch",
    );
    let runs = sql(
        &wh,
        "SELECT run_id, eth_tip_height FROM case_runs ORDER BY started_at",
    );
    assert_eq!(runs.len(), 2);
    let (run1, tip1) = runs[0].split_once(',').expect("row");
    let (run2, tip2) = runs[1].split_once(',').expect("row");
    assert_eq!(tip1, "14");
    assert!(tip2.parse::<u64>().expect("height") > 14);

    // The second run's exits are `ferret taint eth`'s on the same warehouse, bit for bit.
    let (ok, _, err) = run(&[
        "taint",
        "eth",
        "--warehouse",
        &wh,
        "--seed-category",
        "scam",
        "--stop-at",
        "exchange",
        "--asset",
        "ETH",
        "--policy",
        "haircut",
        "--device",
        "cpu",
    ]);
    assert!(ok, "{err}");
    let exits2 = sql_set(
        &wh,
        &format!(
            "SELECT address, asset, tainted_value, tainted_transfers, min_hop FROM case_eth_exits WHERE run_id = '{run2}'"
        ),
    );
    assert!(!exits2.is_empty());
    assert_eq!(
        exits2,
        sql_set(
            &wh,
            "SELECT address, asset, tainted_value, tainted_transfers, min_hop FROM eth_exits"
        )
    );

    // Alerts: the SQL oracle over the two runs' exits (increases above float noise, one
    // part in 1e9 of the earlier amount).
    let e = |r: &str| {
        format!("(SELECT address, tainted_value FROM case_eth_exits WHERE run_id = '{r}')")
    };
    let want_new = sql_set(
        &wh,
        &format!(
            "SELECT b.address, b.tainted_value FROM {} b LEFT JOIN {} a ON a.address = b.address WHERE a.address IS NULL",
            e(run2),
            e(run1)
        ),
    );
    let want_more = sql_set(
        &wh,
        &format!(
            "SELECT b.address, b.tainted_value - a.tainted_value FROM {} b JOIN {} a ON a.address = b.address WHERE b.tainted_value - a.tainted_value > abs(a.tainted_value) * 1e-9",
            e(run2),
            e(run1)
        ),
    );
    let got = |kind: &str| {
        sql_set(
            &wh,
            &format!(
                "SELECT address, amount FROM case_alerts WHERE run_id = '{run2}' AND kind = '{kind}'"
            ),
        )
    };
    assert!(
        !(want_new.is_empty() && want_more.is_empty()),
        "the new blocks brought no new taint"
    );
    assert_eq!(got("new_exit"), want_new);
    assert_eq!(got("exit_increase"), want_more);
    let bad = sql(
        &wh,
        "SELECT a.address FROM case_alerts a WHERE a.kind = 'new_exit' AND a.txid IS NULL",
    );
    assert!(
        bad.is_empty(),
        "exit alerts without their transaction: {bad:?}"
    );
    let watched = |lo: &str, hi: &str| {
        sql_set(
            &wh,
            &format!(
                "SELECT DISTINCT transaction_hash FROM eth.transfers WHERE (to_address = '{watch}' OR from_address = '{watch}') AND block_number > {lo} AND block_number <= {hi}"
            ),
        )
    };
    let seen = |r: &str| {
        sql_set(
            &wh,
            &format!(
                "SELECT DISTINCT txid FROM case_alerts WHERE run_id = '{r}' AND kind = 'watchlist'"
            ),
        )
    };
    assert_eq!(seen(run1), watched("-1", tip1));
    // Paths: one per exit; each step a transfer on the chain from the previous step's
    // receiver; the last reaches the exit, step 0 is a seed.
    let r2 = format!("run_id = '{run2}'");
    assert_eq!(
        sql(
            &wh,
            &format!("SELECT count(DISTINCT exit) FROM case_paths WHERE {r2}")
        ),
        sql(
            &wh,
            &format!("SELECT count(*) FROM case_eth_exits WHERE {r2}")
        )
    );
    let broken = sql(
        &wh,
        &format!(
            "SELECT p.exit, p.step FROM case_paths p JOIN case_paths q ON q.exit = p.exit AND q.step = p.step - 1 AND q.{r2} \
         WHERE p.{r2} AND p.step > 0 AND (p.from_address <> q.to_address OR NOT EXISTS ( \
           SELECT 1 FROM eth.transfers t WHERE t.transaction_hash = p.txid AND t.from_address = p.from_address \
           AND t.to_address = p.to_address AND t.asset = 'ETH' AND t.block_number = p.height))"
        ),
    );
    assert!(broken.is_empty(), "{broken:?}");
    let ends = sql(
        &wh,
        &format!(
            "SELECT p.exit FROM case_paths p JOIN (SELECT exit, max(step) AS s FROM case_paths WHERE {r2} GROUP BY exit) m \
         ON p.exit = m.exit AND p.step = m.s WHERE p.{r2} AND p.to_address <> p.exit \
         UNION ALL SELECT exit FROM case_paths WHERE {r2} AND step = 0 \
         AND to_address NOT IN (SELECT address FROM labels WHERE category = 'scam')"
        ),
    );
    assert!(ends.is_empty(), "{ends:?}");
    assert_eq!(seen(run2), watched(tip1, tip2));
    assert!(!seen(run2).is_empty());

    // A damaged Ethereum state (the latest run's `eth_state` cut short): the next run
    // fails naming it.
    let state_file = walk(Path::new(&wh))
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains("cases/eth-1/eth_state/") && s.ends_with(".parquet")
        })
        .max()
        .expect("an eth_state file");
    let bytes = std::fs::read(&state_file).expect("read");
    std::fs::write(&state_file, &bytes[..bytes.len() / 2]).expect("cut");
    let (ok, _, err) = run(&["case", "run", c, "--warehouse", &wh, "--device", "cpu"]);
    assert!(!ok && err.contains("eth_state"), "{err}");
}

/// Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes) into RGBA
/// pixels.
fn png_rgba(b: &[u8]) -> (usize, usize, Vec<[u8; 4]>) {
    use std::io::Read as _;
    assert!(b.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (mut w, mut h, mut ctype, mut idat) = (0usize, 0usize, 0u8, Vec::new());
    let mut i = 8;
    while i + 8 <= b.len() {
        let len = u32::from_be_bytes(b[i..i + 4].try_into().expect("len")) as usize;
        let kind = &b[i + 4..i + 8];
        let data = &b[i + 8..i + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().expect("w")) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().expect("h")) as usize;
                assert_eq!(data[8], 8, "bit depth");
                ctype = data[9];
                assert_eq!(data[12], 0, "interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        i += 12 + len;
    }
    let bpp = match ctype {
        2 => 3,
        6 => 4,
        other => panic!("colour type {other}"),
    };
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .expect("inflate");
    let stride = w * bpp;
    let mut prev = vec![0u8; stride];
    let mut px = Vec::with_capacity(w * h);
    for y in 0..h {
        let row = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (filter, src) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for x in 0..stride {
            let a = if x >= bpp { cur[x - bpp] } else { 0 };
            let up = prev[x];
            let c = if x >= bpp { prev[x - bpp] } else { 0 };
            cur[x] = src[x].wrapping_add(match filter {
                0 => 0,
                1 => a,
                2 => up,
                3 => ((u16::from(a) + u16::from(up)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(up) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(up)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        up
                    } else {
                        c
                    }
                }
                f => panic!("filter {f}"),
            });
        }
        for x in 0..w {
            let p = &cur[x * bpp..x * bpp + bpp];
            px.push([p[0], p[1], p[2], if bpp == 4 { p[3] } else { 255 }]);
        }
        prev = cur;
    }
    (w, h, px)
}

/// A reorganisation below the previous run's tip: the blocks the previous run read are no
/// longer the chain. The rerun reads the new chain whole: its tables equal a first run on
/// a fresh index of the final chain, its tip is the new one, and the watchlist, seeing the
/// previous tip gone, looks at every block again and reports each transaction not yet
/// reported, once.
/// Incremental reruns: cases (haircut with a hop limit, fifo with a minimum value, poison
/// from one address and one txid) run after each of four indexing stretches, each run
/// after the first reading only the new blocks; every table of every run (taint, exits,
/// flows, proof paths, and the resume state itself) must equal a first run of the same
/// case on a warehouse indexed from scratch to the same height. `--full` gives the same
/// rows; a damaged state is an error naming it, never a smaller result.
#[test]
fn incremental_case_runs_equal_runs_from_scratch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (blocks, labels) = chain(tmp.path(), "23");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    index_to(&blocks, &wh, Some(50));
    prepare(&wh, &labels);
    let scam = sql(
        &wh,
        "SELECT address FROM labels WHERE category = 'scam' ORDER BY address LIMIT 1",
    )[0]
    .clone();
    let seed_tx = sql(
        &wh,
        &format!(
            "SELECT txid FROM btc.outputs WHERE address = '{scam}' ORDER BY height, txid LIMIT 1"
        ),
    )[0]
    .clone();
    let cases = [
        (
            "hop-limited",
            "[seeds]\ncategories = [\"scam\"]\n[taint]\npolicy = \"haircut\"\nhops = 4\nstop_at = [\"exchange\"]\n".to_string(),
        ),
        (
            "fifo-min",
            "[seeds]\ncategories = [\"scam\"]\n[taint]\npolicy = \"fifo\"\nmin_value = 10000\nstop_at = [\"exchange\"]\n".to_string(),
        ),
        (
            "poison-one",
            format!("[seeds]\naddresses = [\"{scam}\"]\ntxids = [\"{seed_tx}\"]\n[taint]\npolicy = \"poison\"\nhops = 3\nmin_value = 20000\n"),
        ),
    ];
    let files: Vec<String> = cases
        .iter()
        .map(|(name, body)| {
            let f = tmp.path().join(format!("{name}.toml"));
            std::fs::write(&f, format!("name = \"{name}\"\nchains = [\"btc\"]\n{body}"))
                .expect("write case");
            f.to_string_lossy().into_owned()
        })
        .collect();
    let tables = [
        "taint",
        "exits",
        "flows",
        "paths",
        "state",
        "state_exits",
        "state_meta",
    ];
    let rows = |w: &str, case: &str, table: &str| {
        let run = sql(
            w,
            &format!("SELECT latest_run FROM cases WHERE \"case\" = '{case}'"),
        )[0]
        .clone();
        sql(
            w,
            &format!(
                "SELECT * EXCLUDE (\"case\", run_id{extra} FROM case_{table} WHERE \"case\" = '{case}' AND run_id = '{run}' ORDER BY 1, 2, 3, 4",
                // CSV has no lists: the steps as text.
                extra = match table {
                    "state" => ", limited_steps), array_to_string(limited_steps, ';') AS steps",
                    // Each warehouse has its own labels run id.
                    "state_meta" => ", labels_run)",
                    _ => ")",
                }
            ),
        )
    };
    let mut prev = 50u64;
    let mut grew = 0;
    for (step, height) in [50u64, 100, 101, 150].into_iter().enumerate() {
        if step > 0 {
            index_to(&blocks, &wh, Some(height));
            prepare(&wh, &labels);
        }
        let fresh = tmp
            .path()
            .join(format!("fresh{height}"))
            .to_string_lossy()
            .into_owned();
        index_to(&blocks, &fresh, Some(height));
        prepare(&fresh, &labels);
        for (f, (name, _)) in files.iter().zip(&cases) {
            let (ok, out, err) = run(&["case", "run", f, "--warehouse", &wh, "--device", "cpu"]);
            assert!(ok, "{name} at {height}: {err}");
            if step == 0 {
                assert!(
                    out.contains("btc taint: full: the case's first run"),
                    "{out}"
                );
            } else {
                assert!(
                    out.contains(&format!(
                        "btc taint: incremental: blocks above height {prev}"
                    )),
                    "{name} at {height}: {out}"
                );
            }
            let (ok, _, err) = run(&["case", "run", f, "--warehouse", &fresh, "--device", "cpu"]);
            assert!(ok, "{name} fresh at {height}: {err}");
            for t in tables {
                let got = rows(&wh, name, t);
                let want = rows(&fresh, name, t);
                if ["taint", "exits", "paths", "state"].contains(&t) {
                    assert!(!want.is_empty(), "{name} at {height}: no {t} rows");
                }
                if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
                    panic!(
                        "{name} at {height}, case_{t} row {i}:\n  incremental {}\n  scratch     {}",
                        got[i], want[i]
                    );
                }
                assert_eq!(got.len(), want.len(), "{name} at {height}: case_{t} rows");
            }
            if step > 0 {
                let n = sql(
                    &wh,
                    &format!(
                        "SELECT count(DISTINCT run_id) FROM case_taint WHERE \"case\" = '{name}'"
                    ),
                );
                assert_eq!(n, [(step + 1).to_string()], "{name}: every run kept");
                let counts = sql(
                    &wh,
                    &format!(
                        "SELECT count(*) FROM case_taint WHERE \"case\" = '{name}' GROUP BY run_id ORDER BY 1"
                    ),
                );
                if counts.first() != counts.last() {
                    grew += 1;
                }
            }
        }
        prev = height;
    }
    assert!(
        grew >= 2,
        "the taint grew over the new blocks in only {grew} case(s)"
    );

    // --full: the same rows, read from the first block.
    let before: Vec<Vec<String>> = tables.iter().map(|t| rows(&wh, "hop-limited", t)).collect();
    let (ok, out, err) = run(&[
        "case",
        "run",
        &files[0],
        "--warehouse",
        &wh,
        "--device",
        "cpu",
        "--full",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("btc taint: full: asked for (--full)"), "{out}");
    let after: Vec<Vec<String>> = tables.iter().map(|t| rows(&wh, "hop-limited", t)).collect();
    assert_eq!(before, after, "--full changed the rows");

    // A damaged state: the latest run's state file cut short. The run fails naming it.
    let state_file = walk(std::path::Path::new(&wh))
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains("cases/poison-one/state/") && s.ends_with(".parquet")
        })
        .max()
        .expect("a state file");
    let bytes = std::fs::read(&state_file).expect("read");
    std::fs::write(&state_file, &bytes[..bytes.len() / 2]).expect("cut");
    let (ok, _, err) = run(&[
        "case",
        "run",
        &files[2],
        "--warehouse",
        &wh,
        "--device",
        "cpu",
    ]);
    assert!(!ok, "a run on a damaged state succeeded");
    assert!(err.contains("state"), "{err}");
}

#[test]
fn a_reorg_below_the_previous_run_is_recomputed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fork = Fork::find(tmp.path());
    let seed_dir = std::fs::read_dir(tmp.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed"))
        })
        .max_by_key(|p| {
            p.file_name()
                .and_then(|n| {
                    n.to_string_lossy()
                        .trim_start_matches("seed")
                        .parse::<u32>()
                        .ok()
                })
                .unwrap_or(0)
        })
        .expect("the generated chain");
    let labels = seed_dir.join("truth/labels.csv");
    let early = tmp.path().join("early");
    write_blocks_dir(&early, std::slice::from_ref(&fork.early));
    let late = tmp.path().join("late");
    write_blocks_dir(&late, std::slice::from_ref(&fork.all));
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let fresh = tmp.path().join("fresh").to_string_lossy().into_owned();
    index_to(&late, &fresh, None);
    prepare(&fresh, &labels);
    // The branch's tip height, from a scratch index of it.
    let probe = tmp.path().join("probe").to_string_lossy().into_owned();
    index_to(&early, &probe, None);
    let branch_tip: u64 = sql(&probe, "SELECT max(height) FROM btc.blocks")[0]
        .parse()
        .expect("height");
    // A run well below the fork (kept: the one a later run resumes from), then one on
    // the branch.
    let below = branch_tip - 6;
    index_to(&early, &wh, Some(below));
    prepare(&wh, &labels);
    // Watch the address with the most transactions in the final chain.
    let watch = sql(&fresh, "SELECT address FROM btc.outputs WHERE address IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")[0].clone();
    let case = tmp.path().join("c.toml");
    std::fs::write(
        &case,
        format!("name = \"reorg\"\nchains = [\"btc\"]\n[seeds]\ncategories = [\"scam\"]\n[taint]\nstop_at = [\"exchange\"]\n[alerts]\nwatch = [\"{watch}\"]\n"),
    )
    .expect("write");
    let c = case.to_str().expect("utf8");
    let (ok, _, err) = run(&["case", "run", c, "--warehouse", &wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    index_to(&early, &wh, None);
    prepare(&wh, &labels);
    let (ok, out, err) = run(&["case", "run", c, "--warehouse", &wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "btc taint: incremental: blocks above height {below}\n"
        )),
        "{out}"
    );
    assert_eq!(
        sql(
            &wh,
            "SELECT btc_tip_hash FROM case_runs ORDER BY started_at DESC LIMIT 1"
        ),
        [fork.s2.to_string()],
        "the second run read the branch"
    );
    index_to(&late, &wh, None);
    prepare(&wh, &labels);
    let (ok, out, err) = run(&["case", "run", c, "--warehouse", &wh, "--device", "cpu"]);
    assert!(ok, "{err}");
    // Resumed from the run below the fork: the blocks the reorg touched are read again.
    assert!(
        out.contains(&format!(
            "btc taint: incremental: blocks above height {below}, from run"
        )) && out.contains("a reorg replaced its tip"),
        "{out}"
    );
    let (ok, _, err) = run(&["case", "run", c, "--warehouse", &fresh, "--device", "cpu"]);
    assert!(ok, "{err}");
    let run2 = sql(&wh, "SELECT run_id FROM case_runs ORDER BY started_at")[2].clone();
    assert_eq!(
        sql(
            &wh,
            &format!("SELECT btc_tip_hash FROM case_runs WHERE run_id = '{run2}'")
        ),
        [fork.tip.to_string()]
    );
    let latest = |w: &str, q: &str| {
        let r = sql(w, "SELECT latest_run FROM cases")[0].clone();
        sql_set(w, &q.replace("{run}", &r))
    };
    for q in [
        "SELECT txid, vout, address, value, hop, fraction, tainted_value FROM case_taint WHERE run_id = '{run}'",
        "SELECT address, tainted_value, outputs, min_hop FROM case_exits WHERE run_id = '{run}'",
        "SELECT chain, address, seed FROM case_members WHERE run_id = '{run}'",
        "SELECT exit, step, txid FROM case_paths WHERE run_id = '{run}'",
    ] {
        let got = latest(&wh, q);
        assert!(!got.is_empty(), "{q}");
        assert_eq!(got, latest(&fresh, q), "{q}");
    }
    // The watchlist: every final-chain transaction of the address reported by one run
    // or the other, none twice.
    let final_txs = sql_set(
        &wh,
        &format!(
            "SELECT DISTINCT txid FROM (SELECT txid FROM btc.outputs WHERE address = '{watch}' UNION ALL SELECT txid FROM btc.inputs WHERE address = '{watch}')"
        ),
    );
    let reported = sql(
        &wh,
        "SELECT txid, detail FROM case_alerts WHERE kind = 'watchlist'",
    );
    let unique: BTreeSet<&String> = reported.iter().collect();
    assert_eq!(unique.len(), reported.len(), "a transaction reported twice");
    let reported_txs: BTreeSet<String> = reported
        .iter()
        .map(|r| r.split(',').next().unwrap_or("").to_string())
        .collect();
    assert!(
        final_txs.is_subset(&reported_txs),
        "missed: {:?}",
        final_txs.difference(&reported_txs).collect::<Vec<_>>()
    );
}

/// Asserts the Ethereum case tables of the latest runs in `got` and `want` are equal (the
/// columns that do not name the run, and not `eth_state`'s shares: CSV holds no lists),
/// and that `nonempty` tables have rows.
fn same_eth_case_tables(got: &str, want: &str, nonempty: &[&str], what: &str) {
    for (table, extra) in [
        ("eth_taint", ""),
        ("eth_exits", ""),
        ("flows", ""),
        ("paths", ""),
        ("eth_state", ", shares"),
        ("eth_state_edges", ""),
    ] {
        let q = format!(
            "SELECT t.* EXCLUDE (\"case\", run_id{extra}) FROM case_{table} t JOIN cases c USING (\"case\") WHERE t.run_id = c.latest_run ORDER BY 1, 2, 3, 4"
        );
        let (a, b) = (sql(got, &q), sql(want, &q));
        if nonempty.contains(&table) {
            assert!(!b.is_empty(), "{table}");
        }
        assert_eq!(a, b, "case_{table}: {what}");
    }
}

/// Ethereum: a reorg below the previous run's tip. Runs at block 4 and at block 7 (on a
/// branch that is then dropped: `evm_revert` to block 4 and a longer, different branch);
/// the third run resumes from the run at block 4, reading again only the blocks the reorg
/// touched, and every table equals a first run on a fresh index of the final chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ethereum_reorg_below_the_previous_run_resumes_below_the_fork() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let d = node.driver().await.expect("driver");
    let a = d.accounts.clone();
    let pay = |from: usize, to: usize, milli: u128| {
        let d = &d;
        let (f, t) = (a[from], a[to]);
        async move {
            d.exec(
                f,
                Some(t),
                alloy::primitives::U256::from(milli * 1_000_000_000_000_000),
                alloy::primitives::Bytes::new(),
                None,
            )
            .await
            .expect("pay")
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    // Account 0 is the scam (the seed), 9 an exchange (a stop); 1 to 8 move the money.
    let labels = tmp.path().join("labels.csv");
    std::fs::write(
        &labels,
        format!(
            "address,label,category\n{:#x},scammer,scam\n{:#x},exchange-hot,exchange\n",
            a[0], a[9]
        ),
    )
    .expect("labels");
    let case = tmp.path().join("c.toml");
    std::fs::write(
        &case,
        "name = \"eth-reorg\"\nchains = [\"eth\"]\n[seeds]\ncategories = [\"scam\"]\n[taint]\npolicy = \"haircut\"\nhops = 3\nstop_at = [\"exchange\"]\n",
    )
    .expect("case");
    let c = case.to_str().expect("utf8").to_string();
    let index_and_run = |w: String| {
        let (c, l, url) = (c.clone(), labels.clone(), node.url().to_string());
        async move {
            let (ok, _, err) = run(&["index", "eth", "--rpc", &url, "--warehouse", &w]);
            assert!(ok, "{err}");
            let (ok, _, err) = run(&[
                "labels",
                "import",
                "--warehouse",
                &w,
                l.to_str().expect("utf8"),
            ]);
            assert!(ok, "{err}");
            let (ok, out, err) = run(&["case", "run", &c, "--warehouse", &w, "--device", "cpu"]);
            assert!(ok, "{err}");
            out
        }
    };
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    for (f, t, v) in [(0, 1, 900), (0, 2, 700), (1, 3, 400), (2, 9, 300)] {
        pay(f, t, v).await; // blocks 1 to 4
    }
    let out = index_and_run(wh.clone()).await;
    assert!(
        out.contains("eth taint: full: the case's first run"),
        "{out}"
    );
    let snap = d.snapshot().await.expect("snapshot");
    for (f, t, v) in [(3, 4, 350), (4, 9, 300), (1, 5, 200)] {
        pay(f, t, v).await; // blocks 5 to 7, dropped below
    }
    let out = index_and_run(wh.clone()).await;
    assert!(
        out.contains("eth taint: incremental: blocks above height 4\n"),
        "{out}"
    );
    assert!(d.revert(snap).await.expect("revert"));
    for (f, t, v) in [
        (3, 6, 390),
        (6, 9, 380),
        (2, 7, 100),
        (7, 8, 90),
        (1, 9, 250),
    ] {
        pay(f, t, v).await; // blocks 5 to 9 of the final chain
    }
    let out = index_and_run(wh.clone()).await;
    assert!(
        out.contains("eth taint: incremental: blocks above height 4, from run")
            && out.contains("a reorg replaced its tip"),
        "{out}"
    );
    let fresh = tmp.path().join("fresh").to_string_lossy().into_owned();
    let out = index_and_run(fresh.clone()).await;
    assert!(out.contains("eth taint: full"), "{out}");
    same_eth_case_tables(
        &wh,
        &fresh,
        &["eth_taint", "eth_exits", "eth_state_edges"],
        "resumed below the fork against from scratch",
    );
    // The dropped branch's transfer 4 → 9 reached the exchange; the final chain's 6 → 9
    // and 1 → 9 did: the exit's first tainted block is on the final chain.
    let exits = sql(
        &wh,
        "SELECT address, tainted_transfers FROM case_eth_exits e JOIN cases c ON e.\"case\" = c.\"case\" AND e.run_id = c.latest_run",
    );
    assert_eq!(exits.len(), 1, "{exits:?}");
}

/// Overlapping runs of one case on object storage, the hard way: the first run is frozen
/// just before its commit until its lease expires; a second run takes the lease over and
/// commits; the first, resumed, must commit nothing (its diff was against a run that is
/// no longer the latest) and leave none of its files behind.
#[test]
fn a_run_that_outlived_its_lease_commits_nothing_on_s3() {
    let Ok(bucket) = std::env::var("FERRET_S3_BUCKET") else {
        assert!(
            !common::require_all(),
            "FERRET_S3_BUCKET unset: scripts/test.sh starts SeaweedFS"
        );
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (blocks, labels) = chain(tmp.path(), "5");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let url = format!("s3://{bucket}/cases-lease-{nanos}");
    index_to(&blocks, &url, None);
    let (ok, _, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &url,
        labels.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    let case = tmp.path().join("c.toml");
    std::fs::write(&case, "name = \"lease\"\nchains = [\"btc\"]\n[seeds]\ncategories = [\"scam\"]\n[taint]\nstop_at = [\"exchange\"]\n").expect("write");
    let c = case.to_str().expect("utf8");
    let ttl = [("FERRET_LEASE_TTL_SECS", "2")];
    let first = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "case",
            "run",
            c,
            "--warehouse",
            &url,
            "--device",
            "cpu",
            "--no-deliver",
        ])
        .env("FERRET_LOG", "warn")
        .envs(ttl)
        .env("FERRET_FAILPOINT", "before-results-commit=stop")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stat = format!("/proc/{}/stat", first.id());
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&stat)
        .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('T')))
    {
        assert!(
            t0.elapsed().as_secs() < 120,
            "the first run never reached its commit"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Its lease expires; the second run takes it over and commits.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (ok, _, err) = run_env(
        &[
            "case",
            "run",
            c,
            "--warehouse",
            &url,
            "--device",
            "cpu",
            "--no-deliver",
        ],
        &ttl,
    );
    assert!(ok, "{err}");
    let committed = sql(&url, "SELECT run_id FROM case_runs");
    assert_eq!(committed.len(), 1);
    let cont = Command::new("kill")
        .args(["-CONT", &first.id().to_string()])
        .status()
        .expect("kill");
    assert!(cont.success());
    let out = first.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nothing was committed"),
        "{err}"
    );
    assert_eq!(
        sql(&url, "SELECT run_id FROM case_runs"),
        committed,
        "the stale run committed"
    );
    // Every case file on the store belongs to the committed run (and no run dir is left
    // by the refused one).
    let runs: BTreeSet<String> = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use futures::TryStreamExt as _;
            let w = ferret_schemas::Warehouse::open(&url).expect("s3");
            let prefix = w.root().clone().join("results").join("cases").join("lease");
            let listed: Vec<_> = w
                .store()
                .list(Some(&prefix))
                .try_collect()
                .await
                .expect("list");
            listed
                .iter()
                .filter_map(|m| {
                    m.location
                        .as_ref()
                        .split('/')
                        .find_map(|s| s.strip_prefix("run="))
                        .map(str::to_string)
                })
                .collect()
        });
    assert_eq!(runs, committed.iter().cloned().collect::<BTreeSet<_>>());
}
