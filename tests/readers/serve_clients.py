"""Real clients against a running `ferret serve` (TLS on both protocols).

Usage: serve_clients.py PG_PORT FLIGHT_PORT FERRET_BIN WAREHOUSE CA_PEM

Every answer is compared with `ferret sql` over the same warehouse. Exits non-zero with a
message naming the client and the query on the first difference.
"""

import csv
import io
import os
import subprocess
import sys

PG_PORT, FLIGHT_PORT, FERRET, WH, CA = sys.argv[1:6]
USER, PASSWORD = "analyst", "an:alyst pw"
READER, READER_PW = "reader", "reader-pw"
DSN = f"host=127.0.0.1 port={PG_PORT} dbname=ferret user={USER} sslmode=require"


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def ferret_sql(q):
    out = subprocess.run(
        [FERRET, "sql", "--warehouse", WH, "--format", "csv", q],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return rows[1:]


def norm(rows):
    return [["" if v is None else str(v) for v in r] for r in rows]


# The analyst queries of the README (and of the load benchmark).
top = ferret_sql(
    "SELECT address FROM btc.outputs WHERE address IS NOT NULL "
    "GROUP BY address ORDER BY sum(value) DESC, address LIMIT 1")[0][0]
txid = ferret_sql("SELECT txid FROM btc.transactions ORDER BY height DESC, tx_index LIMIT 1")[0][0]
QUERIES = [
    f"SELECT height, txid, vout, value FROM btc.outputs WHERE address = '{top}' ORDER BY height, txid, vout",
    f"SELECT height, tx_index, fee FROM btc.transactions WHERE txid = '{txid}'",
    "SELECT address, count(*) AS n, sum(value) AS received FROM btc.outputs WHERE address IS NOT NULL "
    "GROUP BY address ORDER BY received DESC, address LIMIT 10",
    f"SELECT count(*) AS n, sum(value) AS v FROM taint('{top}', 'poison', 3)",
]
WANT = [ferret_sql(q) for q in QUERIES]
for q, w in zip(QUERIES, WANT):
    if not w:
        fail(f"ferret sql returned no rows for {q}")

env = dict(os.environ, PGPASSWORD=PASSWORD, PGSSLROOTCERT=CA)

# --- psql ------------------------------------------------------------------------------
def psql(q, dsn=DSN, check=True):
    r = subprocess.run(["psql", dsn, "-X", "-At", "-F", ",", "-c", q],
                       capture_output=True, text=True, env=env, timeout=120)
    if check and r.returncode != 0:
        fail(f"psql `{q}`: {r.stderr}")
    return r


for q, w in zip(QUERIES, WANT):
    got = [line.split(",") for line in psql(q).stdout.splitlines()]
    if got != w:
        fail(f"psql `{q}`: {got[:3]} != {w[:3]}")
dt = psql(r"\dt btc.*").stdout
for t in ["blocks", "transactions", "inputs", "outputs"]:
    if f"btc,{t},table" not in dt:
        fail(f"psql \\dt lacks btc.{t}: {dt}")
d = psql(r"\d btc.outputs").stdout
for col in ["address,text", "value,bigint", "txid,text", "height,bigint"]:
    if col not in d.replace("|", ","):
        fail(f"psql \\d btc.outputs lacks {col}: {d}")
r = psql("SELECT 1", dsn=DSN.replace("sslmode=require", "sslmode=disable"), check=False)
if r.returncode == 0 or "TLS" not in r.stderr:
    fail(f"a plaintext psql connection was not refused: {r.stdout} {r.stderr}")
r = psql("CREATE TABLE t (a int)", check=False)
if r.returncode == 0 or "read-only" not in r.stderr:
    fail(f"psql CREATE TABLE not refused: {r.stderr}")
r = subprocess.run(["psql", DSN, "-X", "-At", "-c", "SELECT 1"], capture_output=True, text=True,
                   env=dict(env, PGPASSWORD="wrong"), timeout=60)
if r.returncode == 0 or "authentication failed" not in r.stderr.lower():
    fail(f"a wrong password was not refused: {r.stderr}")
print("psql: ok")

# --- psycopg (extended protocol, binary and text) --------------------------------------
import psycopg  # noqa: E402

with psycopg.connect(DSN + f" password='{PASSWORD}' sslrootcert={CA}") as conn:
    for q, w in zip(QUERIES, WANT):
        for binary in (False, True):
            got = norm(conn.cursor(binary=binary).execute(q).fetchall())
            if got != w:
                fail(f"psycopg binary={binary} `{q}`: {got[:3]} != {w[:3]}")
    cur = conn.execute("SELECT value FROM btc.outputs WHERE address = %s LIMIT 1", (top,))
    cur.fetchall()
    desc = conn.execute("SELECT b.time, o.value, o.txid FROM btc.outputs o JOIN btc.blocks b ON b.height = o.height LIMIT 1").description
    oids = [d.type_code for d in desc]
    if oids != [1184, 20, 25]:  # timestamptz, int8, text
        fail(f"psycopg types {oids}")
    desc = conn.execute("SELECT value FROM eth.transfers LIMIT 1").description
    if desc[0].type_code != 1700:  # numeric
        fail(f"eth.transfers.value is type {desc[0].type_code}, not numeric")
    try:
        conn.execute("DROP TABLE btc.blocks")
        fail("psycopg DROP TABLE was not refused")
    except psycopg.errors.ReadOnlySqlTransaction:
        conn.rollback()
print("psycopg: ok")

# --- SQLAlchemy (what Superset and other BI tools call on connect) + pandas ------------
import sqlalchemy as sa  # noqa: E402
import pandas as pd  # noqa: E402

eng = sa.create_engine(
    f"postgresql+psycopg://{USER}:{PASSWORD.replace(':', '%3A').replace(' ', '%20')}@127.0.0.1:{PG_PORT}/ferret",
    connect_args={"sslmode": "require", "sslrootcert": CA},
)
insp = sa.inspect(eng)
schemas = insp.get_schema_names()
for s in ["btc", "eth", "public"]:
    if s not in schemas:
        fail(f"SQLAlchemy schemas {schemas} lack {s}")
tables = insp.get_table_names(schema="btc")
for t in ["blocks", "transactions", "inputs", "outputs"]:
    if t not in tables:
        fail(f"SQLAlchemy btc tables {tables} lack {t}")
cols = {c["name"]: c["type"] for c in insp.get_columns("outputs", schema="btc")}
want_types = {"address": sa.types.String, "value": sa.types.BigInteger, "txid": sa.types.String}
for name, typ in want_types.items():
    if not isinstance(cols.get(name), typ):
        fail(f"SQLAlchemy btc.outputs.{name} is {cols.get(name)!r}")
bcols = {c["name"]: c["type"] for c in insp.get_columns("blocks", schema="btc")}
if not (isinstance(bcols.get("time"), sa.types.DateTime) and bcols["time"].timezone):
    fail(f"SQLAlchemy btc.blocks.time is {bcols.get('time')!r}")
for q, w in zip(QUERIES, WANT):
    df = pd.read_sql(q, eng)
    got = norm(df.astype(object).values.tolist())
    if got != w:
        fail(f"pandas.read_sql `{q}`: {got[:3]} != {w[:3]}")
print("sqlalchemy+pandas: ok")

# --- BI tools' connect and catalog queries ---------------------------------------------
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bi_queries import BI_PREPARED, BI_QUERIES  # noqa: E402

BI = [s for s in os.environ.get("FERRET_BI_QUERIES", "").split("\n;;\n") if s.strip()] + BI_QUERIES
with psycopg.connect(DSN + f" password='{PASSWORD}' sslrootcert={CA}", autocommit=True) as conn:
    for q in BI:
        try:
            cur = conn.execute(q)
            if cur.description:
                cur.fetchall()
        except Exception as e:  # noqa: BLE001
            fail(f"BI query failed: {q[:200]!r}: {e}")
    # The statements drivers prepare, with their parameters bound (extended protocol).
    outputs_columns = [d.name for d in conn.execute("SELECT * FROM btc.outputs LIMIT 0").description]
    for label, sql, params, expect in BI_PREPARED:
        try:
            cur = psycopg.RawCursor(conn)
            cur.execute(sql, params)
            rows = [list(r) for r in cur.fetchall()]
        except Exception as e:  # noqa: BLE001
            fail(f"{label} failed: {e}")
        if expect == "some":
            if not rows:
                fail(f"{label}: no rows")
        elif expect == "outputs_columns":
            names = [r[0] for r in rows]
            if names != outputs_columns:
                fail(f"{label}: columns {names}, want {outputs_columns}")
            if any(r[5] for r in rows):
                fail(f"{label}: a column marked as a key: {rows}")
            types = dict((r[0], r[1]) for r in rows)
            if types.get("value") != "int8" or types.get("txid") != "text":
                fail(f"{label}: types {types}")
        elif rows != expect:
            fail(f"{label}: {rows}, want {expect}")
print(f"BI queries: {len(BI)} + {len(BI_PREPARED)} prepared ok")

# --- ADBC Flight SQL into pyarrow and polars ------------------------------------------
import adbc_driver_flightsql.dbapi as flight  # noqa: E402
import adbc_driver_manager  # noqa: E402
import polars as pl  # noqa: E402

ca_pem = open(CA).read()
fconn = flight.connect(
    f"grpc+tls://127.0.0.1:{FLIGHT_PORT}",
    db_kwargs={"username": USER, "password": PASSWORD,
               "adbc.flight.sql.client_option.tls_root_certs": ca_pem},
    autocommit=True,
)
for q, w in zip(QUERIES, WANT):
    with fconn.cursor() as cur:
        cur.execute(q)
        table = cur.fetch_arrow_table()
    got = norm(table.to_pylist() and [list(r.values()) for r in table.to_pylist()])
    if got != w:
        fail(f"ADBC `{q}`: {got[:3]} != {w[:3]}")
    df = pl.read_database(q, fconn)
    got = norm(df.rows())
    if got != w:
        fail(f"polars `{q}`: {got[:3]} != {w[:3]}")
with fconn.cursor() as cur:
    cur.execute("SELECT count(*) AS n FROM btc.outputs WHERE address = ?", parameters=(top,))
    n = cur.fetchall()[0][0]
if str(n) != ferret_sql(f"SELECT count(*) FROM btc.outputs WHERE address = '{top}'")[0][0]:
    fail(f"ADBC parameter query gave {n}")
objs = fconn.adbc_get_objects(depth="tables").read_all().to_pylist()
names = {(s["db_schema_name"], t["table_name"]) for c in objs for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]}
if ("btc", "outputs") not in names:
    fail(f"ADBC get_objects lacks btc.outputs: {sorted(names)[:10]}")
with fconn.cursor() as cur:
    try:
        cur.execute("CREATE TABLE t (a INT)")
        fail("ADBC CREATE TABLE was not refused")
    except adbc_driver_manager.Error as e:
        if "read-only" not in str(e):
            fail(f"ADBC CREATE TABLE: {e}")
fconn.close()
try:
    bad = flight.connect(f"grpc+tls://127.0.0.1:{FLIGHT_PORT}",
                         db_kwargs={"username": USER, "password": "wrong",
                                    "adbc.flight.sql.client_option.tls_root_certs": ca_pem},
                         autocommit=True)
    with bad.cursor() as cur:
        cur.execute("SELECT 1")
    fail("ADBC with a wrong password was not refused")
except adbc_driver_manager.Error as e:
    if "UNAUTHENTICATED" not in str(e).upper():
        fail(f"ADBC wrong password: {e}")
# A reader may not run kernels over Flight either.
rconn = flight.connect(f"grpc+tls://127.0.0.1:{FLIGHT_PORT}",
                       db_kwargs={"username": READER, "password": READER_PW,
                                  "adbc.flight.sql.client_option.tls_root_certs": ca_pem},
                       autocommit=True)
with rconn.cursor() as cur:
    try:
        cur.execute(QUERIES[3])
        cur.fetchall()
        fail("a reader ran taint(...) over Flight")
    except adbc_driver_manager.Error as e:
        if "analyst" not in str(e):
            fail(f"reader taint over Flight: {e}")
rconn.close()
print("adbc+pyarrow+polars: ok")
print("all clients ok")
