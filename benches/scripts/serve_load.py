"""Load on `ferret serve`: many concurrent Postgres-wire clients running the analyst mix
for a bounded time, with the server's RSS sampled throughout; then the same queries one
at a time through `ferret serve`, `ferret sql` (a process per statement) and DuckDB over
the same Parquet files, side by side. Prints one JSON object.

    python serve_load.py --pg 127.0.0.1:5433 --user U --password P --pid SERVER_PID \
        --warehouse WH --ferret BIN [--clients 64] [--seconds 60]

The mix (per light client, by weight): point look-up of an address's outputs (40),
a transaction by txid (30), an address's history, newest first (25), top receivers over
the whole chain (5). One more client runs a taint table function back to back.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import threading
import time

import duckdb
import psycopg

Q = {
    "address": "SELECT height, txid, vout, value FROM btc.outputs WHERE address = %s",
    "txid": "SELECT height, tx_index, fee, size FROM btc.transactions WHERE txid = %s",
    "history": "SELECT height, txid, vout, value FROM btc.outputs WHERE address = %s "
               "ORDER BY height DESC, txid, vout LIMIT 100",
    "top_receivers": "SELECT address, sum(value) AS received FROM btc.outputs "
                     "WHERE address IS NOT NULL GROUP BY address ORDER BY received DESC, address LIMIT 10",
    "taint": "SELECT count(*) AS n, sum(value) AS v FROM taint(%s, 'poison', 2)",
}
WEIGHTS = [("address", 40), ("txid", 30), ("history", 25), ("top_receivers", 5)]


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--ferret", required=True)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--light", action="store_true",
                    help="leave the whole-chain aggregate out of the mix (look-ups and the taint client only)")
    ap.add_argument("--no-taint", action="store_true", help="no taint client (on chains where one run takes minutes)")
    ap.add_argument("--reconnect-every", type=int, default=0,
                    help="each light client reconnects after this many queries (0: one connection each), as BI tools and notebooks do")
    ap.add_argument("--no-single", action="store_true", help="skip the one-at-a-time comparison (long RSS runs)")
    a = ap.parse_args()
    host, port = a.pg.rsplit(":", 1)
    dsn = f"host={host} port={port} dbname=ferret user={a.user} password={a.password}"

    with psycopg.connect(dsn, autocommit=True) as c:
        addrs = [r[0] for r in c.execute(
            "SELECT address FROM btc.outputs WHERE address IS NOT NULL AND height % 53 = 0 LIMIT 400").fetchall()]
        txids = [r[0] for r in c.execute(
            "SELECT txid FROM btc.transactions WHERE height % 47 = 0 LIMIT 400").fetchall()]
    rng = random.Random(7)

    def args_for(kind, r):
        if kind in ("address", "history", "taint"):
            return (r.choice(addrs),)
        if kind == "txid":
            return (r.choice(txids),)
        return ()

    lat = {k: [] for k in Q}
    errors = []
    lock = threading.Lock()
    stop = time.monotonic() + a.seconds

    weights = [(k, w) for k, w in WEIGHTS if not (a.light and k == "top_receivers")]

    connects = [0]

    def light(i):
        r = random.Random(i)
        kinds = [k for k, w in weights for _ in range(w)]
        while time.monotonic() < stop:
            try:
                with psycopg.connect(dsn, autocommit=True) as c:
                    with lock:
                        connects[0] += 1
                    n = 0
                    while time.monotonic() < stop and (a.reconnect_every == 0 or n < a.reconnect_every):
                        kind = r.choice(kinds)
                        t0 = time.monotonic()
                        n += 1
                        try:
                            c.execute(Q[kind], args_for(kind, r)).fetchall()
                            with lock:
                                lat[kind].append(time.monotonic() - t0)
                        except Exception as e:  # noqa: BLE001
                            with lock:
                                errors.append(f"{kind}: {e}")
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"connect: {e}")
                time.sleep(0.1)

    def heavy():
        r = random.Random(99)
        with psycopg.connect(dsn, autocommit=True) as c:
            while time.monotonic() < stop:
                t0 = time.monotonic()
                try:
                    c.execute(Q["taint"], args_for("taint", r)).fetchall()
                    with lock:
                        lat["taint"].append(time.monotonic() - t0)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(f"taint: {e}")

    rss = []

    def sample():
        t0 = time.monotonic()
        while time.monotonic() < stop + 1:
            rss.append((round(time.monotonic() - t0, 1), rss_mb(a.pid)))
            time.sleep(1)

    threads = [threading.Thread(target=light, args=(i,)) for i in range(a.clients - 1)]
    if not a.no_taint:
        threads.append(threading.Thread(target=heavy))
    threads.append(threading.Thread(target=sample))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0

    load = {
        k: {"n": len(v), "p50_ms": round(1000 * pct(v, 50), 1) if v else None,
            "p99_ms": round(1000 * pct(v, 99), 1) if v else None}
        for k, v in lat.items()
    }
    rss_vals = [m for _, m in rss if m is not None]
    third = max(1, len(rss_vals) // 3)
    rss_summary = {
        "start_mb": round(rss_vals[0]) if rss_vals else None,
        "first_third_max_mb": round(max(rss_vals[:third])) if rss_vals else None,
        "last_third_max_mb": round(max(rss_vals[-third:])) if rss_vals else None,
        "max_mb": round(max(rss_vals)) if rss_vals else None,
    }
    # The highest RSS in each minute: flat means these stop rising after the warm-up.
    per_minute = {}
    for t, m in rss:
        if m is not None:
            per_minute[int(t // 60)] = max(per_minute.get(int(t // 60), 0), m)
    rss_summary["max_per_minute_mb"] = [round(per_minute[k]) for k in sorted(per_minute)]
    if a.no_single:
        print(json.dumps({
            "clients": a.clients, "seconds": round(wall, 1), "errors": len(errors),
            "connections": connects[0], "first_errors": errors[:5], "load": load,
            "rss": rss_summary, "rss_samples": rss[:: max(1, len(rss) // 40)],
        }, indent=1))
        return

    # One at a time: the server, `ferret sql`, DuckDB over the same files.
    r = random.Random(11)
    picks = {k: [args_for(k, r) for _ in range(a.reps)] for k in Q
             if k != "taint" and not (a.light and k == "top_receivers")}
    single = {"serve": {}, "ferret_sql": {}, "duckdb": {}}
    with psycopg.connect(dsn, autocommit=True) as c:
        for k, args_list in picks.items():
            ts = []
            for args in args_list:
                t1 = time.monotonic()
                c.execute(Q[k], args).fetchall()
                ts.append(time.monotonic() - t1)
            single["serve"][k] = round(1000 * statistics.median(ts), 1)
    for k, args_list in picks.items():
        ts = []
        for args in args_list:
            sql = Q[k].replace("%s", "'{}'").format(*args) if args else Q[k]
            t1 = time.monotonic()
            subprocess.run([a.ferret, "sql", "--warehouse", a.warehouse, "--format", "csv", sql],
                           check=True, capture_output=True)
            ts.append(time.monotonic() - t1)
        single["ferret_sql"][k] = round(1000 * statistics.median(ts), 1)
    db = duckdb.connect()
    for t in ("outputs", "transactions"):
        db.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{a.warehouse}/btc/{t}/**/*.parquet')")
    for k, args_list in picks.items():
        ts = []
        for args in args_list:
            sql = Q[k].replace("btc.", "").replace("%s", "?")
            t1 = time.monotonic()
            db.execute(sql, list(args)).fetchall()
            ts.append(time.monotonic() - t1)
        single["duckdb"][k] = round(1000 * statistics.median(ts), 1)

    print(json.dumps({
        "clients": a.clients, "seconds": round(wall, 1), "errors": len(errors),
        "connections": connects[0], "first_errors": errors[:5], "load": load, "rss": rss_summary,
        "rss_samples": rss[:: max(1, len(rss) // 20)], "single_median_ms": single,
    }, indent=1))


if __name__ == "__main__":
    main()
