//! `ferret serve` against real clients in process: tokio-postgres (SCRAM, simple and
//! extended protocol, cancel) and arrow-flight's Flight SQL client (basic-then-bearer,
//! statements, prepared statements with parameters, catalog calls), over a warehouse
//! indexed from a generated chain.
//!
//! What a user relies on: the same rows as `ferret sql`; authentication always; nothing
//! written whatever is sent, on both protocols; statements bounded in time (through the
//! last row), memory and count; cancel honoured; commits visible without a restart;
//! garbage on the port costing one connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::util::display::array_value_to_string;
use arrow_flight::sql::client::FlightSqlServiceClient;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::Warehouse;
use ferret_serve::{Config, Limits, Role, User, Users};
use ferret_testkit::synth::btc::{SynthConfig, generate};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

const ANA: (&str, &str) = ("ana", "ana: secret pw");
const BOB: (&str, &str) = ("bob", "bob-pw");

fn users() -> Users {
    let mut u = Users::default();
    u.add(ANA.0, User::new(Role::Analyst, ANA.1).unwrap(), false)
        .unwrap();
    u.add(BOB.0, User::new(Role::Reader, BOB.1).unwrap(), false)
        .unwrap();
    u
}

struct Chain {
    _tmp: tempfile::TempDir,
    blocks: std::path::PathBuf,
    wh_dir: std::path::PathBuf,
}

impl Chain {
    /// A generated chain, indexed up to `to` (all of it when None).
    async fn new(seed: u64, to: Option<u64>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            blocks: 60,
            seed,
            txs_per_block: 20,
            ..Default::default()
        };
        generate(&cfg, tmp.path()).expect("generate");
        let chain = Chain {
            blocks: tmp.path().join("blocks"),
            wh_dir: tmp.path().join("wh"),
            _tmp: tmp,
        };
        chain.index(to).await;
        chain
    }

    fn wh(&self) -> Warehouse {
        Warehouse::open(self.wh_dir.to_str().unwrap()).unwrap()
    }

    async fn index(&self, to: Option<u64>) {
        let mut opts = IndexOptions::new(self.blocks.clone());
        opts.to_height = to;
        opts.progress = false;
        index_btc(&self.wh(), &opts).await.expect("index");
    }

    /// Every file under the warehouse with its size.
    fn files(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![self.wh_dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    out.push((e.path().display().to_string(), m.len()));
                }
            }
        }
        out.sort();
        out
    }
}

async fn serve(chain: &Chain, limits: Limits) -> ferret_serve::Running {
    let config = Config {
        pg_listen: Some("127.0.0.1:0".parse().unwrap()),
        flight_listen: Some("127.0.0.1:0".parse().unwrap()),
        limits,
        ..Default::default()
    };
    ferret_serve::start(chain.wh(), users(), config)
        .await
        .expect("start")
}

fn pg_config(addr: SocketAddr, user: &str, password: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("ferret")
        .connect_timeout(Duration::from_secs(20));
    c
}

async fn pg(
    addr: SocketAddr,
    (user, password): (&str, &str),
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = pg_config(addr, user, password).connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map_or_else(|| format!("no SQLSTATE: {e}"), |c| c.code().to_string())
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

/// `ferret sql`'s answer, as text cells.
async fn sql_rows(wh: &Warehouse, sql: &str) -> Vec<Vec<String>> {
    let ctx = ferret_query::session_with(wh, Default::default())
        .await
        .unwrap();
    let res = ferret_query::run_sql(&ctx, sql).await.unwrap();
    let mut out = Vec::new();
    for b in &res[0].batches {
        for r in 0..b.num_rows() {
            out.push(
                (0..b.num_columns())
                    .map(|c| array_value_to_string(b.column(c), r).unwrap())
                    .collect(),
            );
        }
    }
    out
}

async fn flight(addr: SocketAddr) -> FlightSqlServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("flight connect");
    FlightSqlServiceClient::new(channel)
}

async fn flight_rows(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    info: arrow_flight::FlightInfo,
) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let ticket = ep.ticket.ok_or("no ticket")?;
        let batches: Vec<_> = client
            .do_get(ticket)
            .await
            .map_err(|e| e.to_string())?
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        for b in batches {
            for r in 0..b.num_rows() {
                out.push(
                    (0..b.num_columns())
                        .map(|c| array_value_to_string(b.column(c), r).unwrap())
                        .collect(),
                );
            }
        }
    }
    Ok(out)
}

async fn flight_query(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<Vec<Vec<String>>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    flight_rows(client, info).await
}

const ANALYST_QUERY: &str = "SELECT address, count(*) AS n, sum(value) AS v FROM btc.outputs \
     WHERE address IS NOT NULL GROUP BY address ORDER BY v DESC, address LIMIT 5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_clients_get_what_ferret_sql_gets() {
    let chain = Chain::new(31, None).await;
    let server = serve(&chain, Limits::default()).await;
    let pg_addr = server.pg_addr.unwrap();
    let want = sql_rows(&chain.wh(), ANALYST_QUERY).await;
    assert_eq!(want.len(), 5);

    // Postgres wire, simple and extended protocol.
    let c = pg(pg_addr, ANA).await.expect("ana logs in");
    let rows = c.simple_query(ANALYST_QUERY).await.unwrap();
    let got: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(got, want);
    let typed = c.query(ANALYST_QUERY, &[]).await.unwrap();
    let got: Vec<Vec<String>> = typed
        .iter()
        .map(|r| {
            vec![
                r.get::<_, String>(0),
                r.get::<_, i64>(1).to_string(),
                r.get::<_, i64>(2).to_string(),
            ]
        })
        .collect();
    assert_eq!(got, want, "binary results of the extended protocol");
    // Parameters, and the types a client relies on: hashes and addresses text, sats
    // int8, times timestamptz.
    let addr = &want[0][0];
    let r = c
        .query_one(
            "SELECT count(*) AS n FROM btc.outputs WHERE address = $1",
            &[addr],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0).to_string(), want[0][1]);
    let r = c
        .query_one(
            "SELECT b.hash, o.value, b.time, o.address FROM btc.outputs o JOIN btc.blocks b ON b.height = o.height WHERE o.address = $1 LIMIT 1",
            &[addr],
        )
        .await
        .unwrap();
    let types: Vec<String> = r
        .columns()
        .iter()
        .map(|c| c.type_().name().to_string())
        .collect();
    assert_eq!(types, ["text", "int8", "timestamptz", "text"]);
    let _: chrono_free::Ts = r.get(2);
    // Wei and token amounts: numeric, exact, in text and binary results.
    let big = "1157920892373161954235709850086879078532699846656405640394575840079131296399";
    let wei = "123456789012345678901234567890123456";
    let q = format!(
        "SELECT arrow_cast('{big}', 'Decimal256(76, 0)') AS token, arrow_cast('{wei}', 'Decimal128(38, 0)') AS wei, arrow_cast('-1234.5', 'Decimal256(40, 2)') AS neg"
    );
    let text: Vec<String> = match &c.simple_query(&q).await.unwrap()[..] {
        [
            tokio_postgres::SimpleQueryMessage::RowDescription(_),
            tokio_postgres::SimpleQueryMessage::Row(r),
            ..,
        ]
        | [tokio_postgres::SimpleQueryMessage::Row(r), ..] => {
            (0..3).map(|i| r.get(i).unwrap().to_string()).collect()
        }
        other => panic!("{} messages", other.len()),
    };
    assert_eq!(text, [big, wei, "-1234.50"]);
    let r = c.query_one(q.as_str(), &[]).await.unwrap();
    let types: Vec<String> = r
        .columns()
        .iter()
        .map(|c| c.type_().name().to_string())
        .collect();
    assert_eq!(types, ["numeric", "numeric", "numeric"]);
    let binary: Vec<String> = (0..3).map(|i| r.get::<_, numeric::Num>(i).0).collect();
    assert_eq!(binary, [big, wei, "-1234.50"]);
    let st = c
        .prepare("SELECT value, value_string FROM eth.transfers")
        .await
        .unwrap();
    assert_eq!(
        st.columns()[0].type_().name(),
        "numeric",
        "eth.transfers.value"
    );
    let v = c.query_one("SELECT version()", &[]).await.unwrap();
    assert!(
        v.get::<_, String>(0).starts_with("PostgreSQL 16"),
        "version()"
    );

    // A reader may not run kernels; an analyst may.
    let seed_sql = format!("SELECT count(*) FROM taint('{addr}')");
    let bob = pg(pg_addr, BOB).await.expect("bob logs in");
    let e = bob.simple_query(&seed_sql).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e:?}");
    assert!(db_message(&e).contains("analyst"), "{}", db_message(&e));
    let n = c.query_one(seed_sql.as_str(), &[]).await.unwrap();
    assert!(n.get::<_, i64>(0) >= 1);
    // Table functions take bound parameters too: prepared before, bound at execution,
    // the same answer as with literals; and a reader is refused the same way.
    let literal = format!("SELECT count(*), sum(value) FROM taint('{addr}', 'poison', 2)");
    let by_literal = c.query_one(literal.as_str(), &[]).await.unwrap();
    let prepared = c
        .prepare("SELECT count(*), sum(value) FROM taint($1, 'poison', $2)")
        .await
        .unwrap();
    assert_eq!(prepared.params().len(), 2, "both parameters described");
    let got = c
        .query_one(&prepared, &[&addr.as_str(), &"2"])
        .await
        .unwrap();
    assert_eq!(got.get::<_, i64>(0), by_literal.get::<_, i64>(0));
    assert_eq!(
        got.get::<_, Option<i64>>(1),
        by_literal.get::<_, Option<i64>>(1)
    );
    let other = c
        .query_one(&prepared, &[&addr.as_str(), &"0"])
        .await
        .unwrap();
    assert!(
        other.get::<_, i64>(0) <= got.get::<_, i64>(0),
        "hops bound per execution"
    );
    let e = bob
        .query_one("SELECT count(*) FROM taint($1)", &[&addr.as_str()])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e:?}");

    // Wrong password and unknown user: refused alike; another database: refused.
    let wrong = pg(pg_addr, (ANA.0, "nope")).await.unwrap_err();
    let unknown = pg(pg_addr, ("mallory", "nope")).await.unwrap_err();
    assert_eq!(code(&wrong), SqlState::INVALID_PASSWORD.code());
    assert_eq!(code(&unknown), SqlState::INVALID_PASSWORD.code());
    let mut other_db = pg_config(pg_addr, ANA.0, ANA.1);
    other_db.dbname("postgres");
    let Err(e) = other_db.connect(NoTls).await else {
        panic!("another database was accepted")
    };
    assert_eq!(code(&e), "3D000");

    // Many logins at once (each handshake has its own SCRAM state).
    let logins = futures::future::join_all((0..12).map(|i| async move {
        let who = if i % 2 == 0 { ANA } else { BOB };
        let c = pg(pg_addr, who).await?;
        c.simple_query("SELECT 1").await.map(|_| ())
    }))
    .await;
    for (i, l) in logins.iter().enumerate() {
        assert!(l.is_ok(), "login {i}: {l:?}");
    }

    // Flight SQL: basic then bearer.
    let faddr = server.flight_addr.unwrap();
    let mut f = flight(faddr).await;
    let e = flight_query(&mut f, "SELECT 1").await.unwrap_err();
    assert!(e.contains("no bearer token"), "{e}");
    assert!(f.handshake(ANA.0, "nope").await.is_err());
    assert!(f.handshake("mallory", "nope").await.is_err());
    f.handshake(ANA.0, ANA.1).await.expect("handshake");
    assert_eq!(flight_query(&mut f, ANALYST_QUERY).await.unwrap(), want);
    // A prepared statement with a parameter.
    let mut p = f
        .prepare(
            "SELECT count(*) AS n FROM btc.outputs WHERE address = $1".into(),
            None,
        )
        .await
        .unwrap();
    let params = arrow::array::RecordBatch::try_from_iter([(
        "$1",
        Arc::new(arrow::array::StringArray::from(vec![addr.as_str()])) as arrow::array::ArrayRef,
    )])
    .unwrap();
    p.set_parameters(params).unwrap();
    let info = p.execute().await.unwrap();
    assert_eq!(
        flight_rows(&mut f, info).await.unwrap(),
        vec![vec![want[0][1].clone()]]
    );
    // A table function's arguments as `?` parameters (ADBC style), bound per execution.
    let mut tp = f
        .prepare(
            "SELECT count(*), sum(value) FROM taint(?, 'poison', ?)".to_string(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(tp.parameter_schema().unwrap().fields().len(), 2);
    let params = arrow::array::RecordBatch::try_from_iter([
        (
            "$1",
            Arc::new(arrow::array::StringArray::from(vec![addr.as_str()]))
                as arrow::array::ArrayRef,
        ),
        (
            "$2",
            Arc::new(arrow::array::Int64Array::from(vec![2])) as arrow::array::ArrayRef,
        ),
    ])
    .unwrap();
    tp.set_parameters(params).unwrap();
    let info = tp.execute().await.unwrap();
    let literal_rows = flight_query(
        &mut f,
        &format!("SELECT count(*), sum(value) FROM taint('{addr}', 'poison', 2)"),
    )
    .await
    .unwrap();
    assert_eq!(flight_rows(&mut f, info).await.unwrap(), literal_rows);
    // The catalog calls BI tools and ADBC make.
    let info = f
        .get_tables(arrow_flight::sql::CommandGetTables {
            db_schema_filter_pattern: Some("btc".into()),
            include_schema: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let tables: Vec<String> = flight_rows(&mut f, info)
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{}.{}", r[1], r[2]))
        .collect();
    for t in [
        "btc.blocks",
        "btc.transactions",
        "btc.inputs",
        "btc.outputs",
    ] {
        assert!(tables.contains(&t.to_string()), "{t} in {tables:?}");
    }
    // A token from a bearer the server never issued is refused.
    let mut forged = flight(faddr).await;
    forged.set_token("forged".into());
    let e = flight_query(&mut forged, "SELECT 1").await.unwrap_err();
    assert!(e.contains("unknown bearer token"), "{e}");
    server.shutdown().await;
}

/// Postgres binary numeric → decimal text (an independent decoder for the test).
mod numeric {
    use tokio_postgres::types::{FromSql, Type};
    pub struct Num(pub String);
    impl<'a> FromSql<'a> for Num {
        fn from_sql(
            _: &Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            let w = |i: usize| i16::from_be_bytes([raw[2 * i], raw[2 * i + 1]]);
            let (n, weight, sign, dscale) =
                (w(0) as usize, w(1) as i32, w(2) as u16, w(3) as usize);
            let groups: Vec<i16> = (0..n).map(|i| w(4 + i)).collect();
            // Digits of every group from the weight down to the display scale.
            let mut int = String::new();
            for k in (0..=weight.max(0)).rev() {
                let idx = weight - k;
                let g = if idx >= 0 && (idx as usize) < n {
                    groups[idx as usize]
                } else {
                    0
                };
                int.push_str(&format!("{g:04}"));
            }
            let int = int.trim_start_matches('0');
            let mut frac = String::new();
            let mut idx = weight + 1;
            while frac.len() < dscale {
                let g = if idx >= 0 && (idx as usize) < n {
                    groups[idx as usize]
                } else {
                    0
                };
                frac.push_str(&format!("{g:04}"));
                idx += 1;
            }
            frac.truncate(dscale);
            let mut s = if int.is_empty() {
                "0".to_string()
            } else {
                int.to_string()
            };
            if dscale > 0 {
                s = format!("{s}.{frac}");
            }
            if sign == 0x4000 {
                s = format!("-{s}");
            }
            Ok(Num(s))
        }
        fn accepts(ty: &Type) -> bool {
            *ty == Type::NUMERIC
        }
    }
}

/// Timestamps decode as timestamptz without chrono: the raw microseconds.
mod chrono_free {
    use tokio_postgres::types::{FromSql, Type};
    pub struct Ts(#[allow(dead_code)] pub i64);
    impl<'a> FromSql<'a> for Ts {
        fn from_sql(
            _: &Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Ts(i64::from_be_bytes(raw.try_into()?)))
        }
        fn accepts(ty: &Type) -> bool {
            *ty == Type::TIMESTAMPTZ
        }
    }
}

/// Statements that must be refused, with the SQLSTATEs accepted for each on pgwire.
const REFUSED: &[(&str, &[&str])] = &[
    ("CREATE TABLE t (a INT)", &["25006"]),
    (
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        &["25006", "42601"],
    ),
    ("CREATE VIEW v AS SELECT 1", &["25006"]),
    ("INSERT INTO labels (address) VALUES ('x')", &["25006"]),
    ("UPDATE labels SET label = 'x'", &["25006"]),
    ("DELETE FROM labels", &["25006"]),
    (
        "COPY (SELECT 1) TO '/tmp/ferret-serve-copy.csv'",
        &["25006"],
    ),
    ("COPY btc.blocks TO STDOUT", &["25006"]),
    ("DROP TABLE btc.blocks", &["25006"]),
    ("DROP SCHEMA btc", &["25006"]),
    ("SELECT * INTO stolen FROM btc.blocks", &["25006"]),
    (
        "EXPLAIN ANALYZE INSERT INTO labels (address) VALUES ('x')",
        &["25006"],
    ),
    ("SET datafusion.runtime.memory_limit = '1T'", &["42501"]),
    ("SET datafusion.execution.target_partitions = 1", &["42501"]),
    ("SET datafusion.runtime.temp_directory = '/'", &["42501"]),
    ("SET default_transaction_read_only = off", &["25006"]),
    ("RESET ALL", &["0A000"]),
    ("PREPARE p AS SELECT 1", &["0A000"]),
    ("DECLARE c CURSOR FOR SELECT 1", &["0A000", "42601"]),
    ("SELECT * FROM '/etc/passwd'", &["42P01"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_written_whatever_either_protocol_sends() {
    let chain = Chain::new(32, None).await;
    let server = serve(&chain, Limits::default()).await;
    let before = chain.files();
    let c = pg(server.pg_addr.unwrap(), ANA).await.unwrap();
    let mut f = flight(server.flight_addr.unwrap()).await;
    f.handshake(ANA.0, ANA.1).await.unwrap();
    for (sql, codes) in REFUSED {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert!(codes.contains(&code(&e).as_str()), "simple `{sql}`: {e:?}");
        let e = c.query(*sql, &[]).await.expect_err(sql);
        assert!(
            codes.contains(&code(&e).as_str()) || code(&e) == "42601",
            "extended `{sql}`: {e:?}"
        );
        let e = flight_query(&mut f, sql).await.expect_err(sql);
        assert!(
            [
                "read-only",
                "not supported",
                "not allowed",
                "not found",
                "permission",
                "SQL error"
            ]
            .iter()
            .any(|w| e.contains(w)),
            "flight `{sql}`: {e}"
        );
        let e = f.prepare(sql.to_string(), None).await.err();
        assert!(e.is_some(), "flight prepare `{sql}` accepted");
    }
    // The Flight update calls are refused too.
    let e = f
        .execute_update("INSERT INTO labels (address) VALUES ('x')".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("read-only"), "{e}");
    // The connection still works, with the same settings, and nothing was written.
    let r = c
        .query_one("SELECT count(*) FROM btc.blocks", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 61);
    let s = c
        .simple_query("SHOW datafusion.execution.target_partitions")
        .await;
    if let Ok(rows) = s {
        for m in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                assert_ne!(
                    r.get(r.len() - 1),
                    Some("1"),
                    "a refused SET changed the session"
                );
            }
        }
    }
    assert!(!std::path::Path::new("/tmp/ferret-serve-copy.csv").exists());
    assert_eq!(chain.files(), before, "the warehouse changed");
    server.shutdown().await;
}

const FOREVER: &str = "SELECT count(*) FROM generate_series(1, 20000000000)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_bounded_in_time_memory_and_number() {
    let chain = Chain::new(33, Some(10)).await;
    let server = serve(
        &chain,
        Limits {
            statement_timeout: Duration::from_millis(2000),
            query_memory: 16 << 20,
            max_connections: 4,
            max_concurrent_queries: 2,
            ..Default::default()
        },
    )
    .await;
    let addr = server.pg_addr.unwrap();
    let c = pg(addr, ANA).await.unwrap();

    // Execution is bounded, not only planning.
    let e = c.simple_query(FOREVER).await.unwrap_err();
    assert_eq!(code(&e), "57014", "{e:?}");
    assert!(db_message(&e).contains("timeout"), "{}", db_message(&e));
    // And streaming: rows flow until the deadline, then the statement ends.
    let stream = c
        .query_raw(
            "SELECT value FROM generate_series(1, 20000000000)",
            Vec::<i64>::new(),
        )
        .await
        .expect("the stream starts");
    futures::pin_mut!(stream);
    let mut rows = 0u64;
    let end = loop {
        match stream.next().await {
            Some(Ok(_)) => rows += 1,
            Some(Err(e)) => break e,
            None => panic!("an endless stream ended after {rows} rows"),
        }
    };
    assert_eq!(code(&end), "57014", "{end:?}");
    assert!(rows > 0, "no rows streamed before the deadline: {end:?}");
    // A client may lower the timeout, never raise it.
    c.simple_query("SET statement_timeout = 100").await.unwrap();
    let e = c.simple_query(FOREVER).await.unwrap_err();
    assert_eq!(code(&e), "57014");
    c.simple_query("SET statement_timeout = 100000000")
        .await
        .unwrap();
    let e = c.simple_query(FOREVER).await.unwrap_err();
    assert_eq!(code(&e), "57014", "a client raised the server's timeout");
    c.simple_query("SET statement_timeout = 0").await.unwrap();

    // Cancel requests are honoured.
    let token = c.cancel_token();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await
    });
    let e = c.simple_query(FOREVER).await.unwrap_err();
    cancel.await.unwrap().expect("cancel sent");
    assert_eq!(code(&e), "57014");
    assert!(
        db_message(&e).contains("user request"),
        "{}",
        db_message(&e)
    );
    c.simple_query("SELECT 1")
        .await
        .expect("usable after a cancel");

    // Memory: a hash join's build side cannot spill, so past the per-query pool it is a
    // clear error, and the connection stays usable.
    let e = c
        .simple_query(
            "SELECT count(*) FROM generate_series(1, 4000000) a JOIN generate_series(1, 4000000) b ON a.value = b.value",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "53200", "{e:?}");
    c.simple_query("SELECT 1")
        .await
        .expect("usable after running out of memory");

    // Connections: four at once (this one plus three), the fifth refused.
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(pg(addr, BOB).await.expect("within the limit"));
    }
    let e = pg(addr, BOB).await.unwrap_err();
    assert_eq!(code(&e), "53300", "{e:?}");
    drop(others.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = pg(addr, BOB).await.expect("a place came free");
    again.simple_query("SELECT 1").await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_ports_costs_one_connection() {
    let chain = Chain::new(34, Some(5)).await;
    let server = serve(&chain, Limits::default()).await;
    let pg_addr = server.pg_addr.unwrap();
    let f_addr = server.flight_addr.unwrap();
    let mut held = Vec::new();
    for addr in [pg_addr, f_addr] {
        // Random bytes.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = s.write_all(&junk).await;
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        // A huge declared length.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        // Half a startup packet, then silence (held open).
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&[0, 0, 0, 40, 0, 3, 0, 0, b'u']).await;
        held.push(s);
    }
    // An SSLRequest on a server without TLS, then garbage.
    let mut s = tokio::net::TcpStream::connect(pg_addr).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    let _ = s.write_all(b"\x16\x03\x01garbage").await;

    let c = pg(pg_addr, ANA).await.expect("the server still serves");
    let r = c
        .query_one("SELECT count(*) FROM btc.blocks", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 6);
    let mut f = flight(f_addr).await;
    f.handshake(ANA.0, ANA.1).await.unwrap();
    assert_eq!(
        flight_query(&mut f, "SELECT count(*) FROM btc.blocks")
            .await
            .unwrap(),
        vec![vec!["6".to_string()]]
    );
    drop(held);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_appear_without_a_restart_and_do_not_disturb_a_running_query() {
    let chain = Chain::new(35, Some(30)).await;
    let server = serve(&chain, Limits::default()).await;
    let c = pg(server.pg_addr.unwrap(), ANA).await.unwrap();
    let mut f = flight(server.flight_addr.unwrap()).await;
    f.handshake(ANA.0, ANA.1).await.unwrap();
    let count = "SELECT count(*) FROM btc.outputs";
    let before: i64 = c.query_one(count, &[]).await.unwrap().get(0);
    // Statements prepared before the commit, executed after it (pg and Flight).
    let prepared = c.prepare(count).await.unwrap();
    let by_height = c
        .prepare("SELECT count(*) FROM btc.blocks WHERE height >= $1")
        .await
        .unwrap();
    let mut fp = f.prepare(count.to_string(), None).await.unwrap();

    // A statement started before the commit reads the snapshot it started with.
    let stream = c
        .query_raw("SELECT output_id FROM btc.outputs", Vec::<i64>::new())
        .await
        .unwrap();
    futures::pin_mut!(stream);
    let first = stream.next().await.expect("a row").expect("a row");
    let _: i64 = first.get(0);
    chain.index(None).await;
    let mut n = 1;
    while let Some(r) = stream.next().await {
        r.expect("the running statement is not disturbed by the commit");
        n += 1;
    }
    assert_eq!(n, before);

    // The next statements see the commit, on both protocols.
    let after: i64 = c.query_one(count, &[]).await.unwrap().get(0);
    assert!(after > before, "{after} after the commit, {before} before");
    let want = sql_rows(&chain.wh(), count).await;
    assert_eq!(want[0][0], after.to_string());
    assert_eq!(flight_query(&mut f, count).await.unwrap(), want);
    let re: i64 = c.query_one(&prepared, &[]).await.unwrap().get(0);
    assert_eq!(re, after, "a statement prepared before the commit sees it");
    let new_blocks: i64 = c.query_one(&by_height, &[&31i64]).await.unwrap().get(0);
    assert_eq!(new_blocks, 30, "blocks 31..=60, committed after Parse");
    let info = fp.execute().await.unwrap();
    assert_eq!(flight_rows(&mut f, info).await.unwrap(), want);
    let blocks: i64 = c
        .query_one("SELECT max(height) FROM btc.blocks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(blocks, 60);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_its_connection_not_the_place() {
    let chain = Chain::new(36, Some(5)).await;
    let server = serve(
        &chain,
        Limits {
            statement_timeout: Duration::from_millis(1000),
            max_concurrent_queries: 1,
            ..Default::default()
        },
    )
    .await;
    let addr = server.pg_addr.unwrap();
    let slow = pg(addr, ANA).await.unwrap();
    // Wide rows, then no more reading: the socket fills and the server's writes block,
    // where no deadline inside the row stream can fire.
    let stream = slow
        .query_raw(
            "SELECT value, repeat('x', 2000) AS pad FROM generate_series(1, 100000000)",
            Vec::<i64>::new(),
        )
        .await
        .unwrap();
    futures::pin_mut!(stream);
    stream.next().await.expect("a row").expect("a row");
    tokio::time::sleep(Duration::from_secs(13)).await;
    // The only place was given back: another client's statement runs.
    let other = pg(addr, BOB).await.unwrap();
    other
        .simple_query("SELECT count(*) FROM btc.blocks")
        .await
        .expect("the stuck statement's place was freed");
    // And the stuck connection was closed by the server.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(
        ended.is_some(),
        "the stuck statement ended without an error"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_users_take_effect_without_a_restart() {
    let chain = Chain::new(37, Some(10)).await;
    let base = users();
    let config = Config {
        pg_listen: Some("127.0.0.1:0".parse().unwrap()),
        flight_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let server = ferret_serve::start(chain.wh(), base.clone(), config)
        .await
        .unwrap();
    let (pg_addr, flight_addr) = (server.pg_addr.unwrap(), server.flight_addr.unwrap());
    let q = "SELECT count(*) FROM btc.blocks";
    let bob = pg(pg_addr, BOB).await.unwrap();
    let ana = pg(pg_addr, ANA).await.unwrap();
    bob.simple_query(q).await.unwrap();
    let mut bob_f = flight(flight_addr).await;
    bob_f.handshake(BOB.0, BOB.1).await.unwrap();
    let mut ana_f = flight(flight_addr).await;
    ana_f.handshake(ANA.0, ANA.1).await.unwrap();
    flight_query(&mut bob_f, q).await.unwrap();

    // bob gets a new password; carol is added; ana is unchanged.
    let mut next = base.clone();
    next.add(
        BOB.0,
        User::new(Role::Reader, "bob's new pw").unwrap(),
        true,
    )
    .unwrap();
    next.add("carol", User::new(Role::Reader, "carol-pw").unwrap(), false)
        .unwrap();
    let handle = server.users_handle();
    assert!(
        handle.replace(Users::default()).is_err(),
        "an empty set is refused"
    );
    bob.simple_query(q)
        .await
        .expect("the old set is kept after a refused replace");
    handle.replace(next).unwrap();

    // bob's sessions end at their next statement, on both protocols.
    let e = bob.simple_query(q).await.unwrap_err();
    assert_eq!(code(&e), "28000", "{e}");
    let e = flight_query(&mut bob_f, q).await.unwrap_err();
    assert!(e.contains("password or role changed"), "{e}");
    // The old password no longer logs in; the new one and the new user do.
    let e = pg(pg_addr, BOB).await.unwrap_err();
    assert_eq!(code(&e), "28P01", "{e}");
    assert!(
        flight(flight_addr)
            .await
            .handshake(BOB.0, BOB.1)
            .await
            .is_err()
    );
    pg(pg_addr, (BOB.0, "bob's new pw"))
        .await
        .unwrap()
        .simple_query(q)
        .await
        .unwrap();
    pg(pg_addr, ("carol", "carol-pw"))
        .await
        .unwrap()
        .simple_query(q)
        .await
        .unwrap();
    let mut carol_f = flight(flight_addr).await;
    carol_f.handshake("carol", "carol-pw").await.unwrap();
    flight_query(&mut carol_f, q).await.unwrap();
    // ana's sessions go on.
    ana.simple_query(q)
        .await
        .expect("an unchanged user keeps its session");
    flight_query(&mut ana_f, q).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_users_file_is_reloaded_and_a_broken_one_keeps_the_old_users() {
    let chain = Chain::new(38, Some(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    users().save(&path).unwrap();
    let config = Config {
        pg_listen: Some("127.0.0.1:0".parse().unwrap()),
        flight_listen: None,
        ..Default::default()
    };
    let server = ferret_serve::start(chain.wh(), Users::load(&path).unwrap(), config)
        .await
        .unwrap();
    let addr = server.pg_addr.unwrap();
    server
        .users_handle()
        .watch(path.clone(), Duration::from_millis(50));
    let logs_in = |who: (&'static str, &'static str)| async move {
        match pg(addr, who).await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    };
    assert!(logs_in(BOB).await);
    assert!(!logs_in(("dave", "dave-pw")).await);
    // A broken file: logged, the old users kept.
    std::fs::write(&path, "dave:reader:not-a-hash\n").unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&path, perms).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        logs_in(BOB).await,
        "a broken users file keeps the old users"
    );
    // A good one, written as `ferret users add` does: dave in, bob out.
    let mut next = users();
    next.remove(BOB.0);
    next.add("dave", User::new(Role::Reader, "dave-pw").unwrap(), false)
        .unwrap();
    next.save(&path).unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if logs_in(("dave", "dave-pw")).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the changed file was reloaded");
    assert!(!logs_in(BOB).await, "a removed user no longer logs in");
    server.shutdown().await;
}
