//! `ferret users add` and `ferret serve` with TLS, driven by the clients data teams use:
//! psql (Debian's postgresql-client), psycopg, SQLAlchemy's inspector and pandas, the
//! catalog queries BI tools send on connect, and the ADBC Flight SQL driver into pyarrow
//! and polars (tests/readers/serve_clients.py). Every answer is compared with
//! `ferret sql` over the same warehouse.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::Warehouse;

fn python() -> Option<String> {
    python_with(
        "psycopg, sqlalchemy, pandas, polars, adbc_driver_flightsql",
        &[&["psql", "--version"], &["openssl", "version"]],
    )
}

fn users_add(file: &std::path::Path, name: &str, role: &str, password: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "users",
            "add",
            "--file",
            file.to_str().unwrap(),
            "--role",
            role,
            name,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferret users add");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The catalog and startup queries BI tools send on connect (from their sources:
/// Metabase through PgJDBC, Grafana, DBeaver, Superset through SQLAlchemy).
const BI_QUERIES: &[&str] = &[
    "SET extra_float_digits = 3",
    "SET application_name = 'PostgreSQL JDBC Driver'",
    "SELECT version()",
    "select pg_catalog.version()",
    "select current_schema()",
    "show standard_conforming_strings",
    "SHOW search_path",
    "SELECT current_database()",
    "SELECT 1",
    "SELECT nspname FROM pg_catalog.pg_namespace ORDER BY nspname",
    "SELECT datname FROM pg_catalog.pg_database",
    "SELECT n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','v','m','f','p') AND n.nspname = 'btc' ORDER BY c.relname",
    "SELECT table_schema, table_name, table_type FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog','information_schema') ORDER BY 1, 2",
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'btc' AND table_name = 'outputs' ORDER BY ordinal_position",
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'btc' AND c.relname = 'outputs' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    "SELECT typname, oid FROM pg_catalog.pg_type WHERE typname IN ('int8', 'text', 'numeric', 'timestamptz')",
];

#[test]
fn psql_python_bi_and_adbc_clients_over_tls() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = ferret_testkit::synth::btc::SynthConfig {
        blocks: 80,
        seed: 23,
        txs_per_block: 25,
        ..Default::default()
    };
    ferret_testkit::synth::btc::generate(&cfg, tmp.path()).expect("generate");
    let wh_dir = tmp.path().join("wh");
    rt.block_on(async {
        let wh = Warehouse::open(wh_dir.to_str().unwrap()).unwrap();
        index_btc(&wh, &IndexOptions::new(tmp.path().join("blocks")))
            .await
            .expect("index");
    });

    // A self-signed certificate (ECDSA P-256: SCRAM channel binding needs RSA or ECDSA).
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let users = tmp.path().join("users");
    users_add(&users, "analyst", "analyst", "an:alyst pw");
    users_add(&users, "reader", "reader", "reader-pw");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(!text.contains("an:alyst pw") && !text.contains("reader-pw"));

    let mut server = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "serve",
            "--warehouse",
            wh_dir.to_str().unwrap(),
            "--users",
            users.to_str().unwrap(),
            "--pg-listen",
            "127.0.0.1:0",
            "--flight-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--statement-timeout-ms",
            "60000",
            // Only SIGHUP reloads the users file here (the SIGHUP check below).
            "--users-reload-secs",
            "0",
        ])
        .env("FERRET_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferret serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = server.stdout.take().unwrap();
    let stderr = server.stderr.take().unwrap();
    let server = Kill(server);
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut port = |prefix: &str| -> String {
        let line = lines.next().expect("a listening line").expect("utf8");
        let addr = line
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{line}"));
        addr.rsplit(':').next().unwrap().to_string()
    };
    let pg = port("pg listening on ");
    let flight = port("flight listening on ");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/readers/serve_clients.py"
    );
    let out = Command::new(&py)
        .args([
            script,
            &pg,
            &flight,
            env!("CARGO_BIN_EXE_ferret"),
            wh_dir.to_str().unwrap(),
        ])
        .arg(&cert)
        .env("FERRET_BI_QUERIES", BI_QUERIES.join("\n;;\n"))
        .output()
        .expect("run python");

    // SIGHUP reloads the users file: a user added while the server runs logs in.
    let psql_as = |user: &str, password: &str| {
        Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={pg} dbname=ferret user={user} sslmode=require"
            ))
            .args(["-XAtc", "SELECT count(*) FROM btc.blocks"])
            .env("PGPASSWORD", password)
            .output()
            .unwrap()
    };
    assert!(!psql_as("late", "late-pw").status.success());
    users_add(&users, "late", "reader", "late-pw");
    let hup = Command::new("kill")
        .args(["-HUP", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut reloaded = None;
    for _ in 0..50 {
        let o = psql_as("late", "late-pw");
        if o.status.success() {
            reloaded = Some(String::from_utf8_lossy(&o.stdout).trim().to_string());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        reloaded.as_deref(),
        Some("81"),
        "a user added before SIGHUP logs in"
    );
    drop(server);
    let log = log.join().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("all clients ok"), "{stdout}");
    // Failed logins are logged.
    assert!(
        log.contains("authentication failed"),
        "no failed login in the log"
    );
    assert!(log.contains("refused"), "no refusal in the log");
}
