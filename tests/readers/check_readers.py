"""Reads a Ferret warehouse with the tools analysts use (DuckDB and pyarrow), as plain
Hive-partitioned Parquet, and prints counts and sums per table as JSON.

Usage: check_readers.py WAREHOUSE_DIR
"""
import json
import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds

COLUMNS = {
    "blocks": "tx_count",
    "transactions": "fee",
    "inputs": "value",
    "outputs": "value",
}


def main(wh: str) -> None:
    out = {"duckdb": {}, "pyarrow": {}}
    con = duckdb.connect()
    for table, col in COLUMNS.items():
        glob = f"{wh}/btc/{table}/**/*.parquet"
        rows, total, parts = con.execute(
            f"SELECT count(*), sum({col}), count(DISTINCT height_range) "
            f"FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchall()[0]
        out["duckdb"][table] = {"rows": rows, "sum": int(total or 0), "partitions": parts}

        dataset = ds.dataset(f"{wh}/btc/{table}", format="parquet", partitioning="hive")
        t = dataset.to_table(columns=[col, "height_range"])
        out["pyarrow"][table] = {
            "rows": t.num_rows,
            "sum": int(pc.sum(t[col]).as_py() or 0),
            "partitions": len(pc.unique(t["height_range"])),
        }
    # A point look-up by address, the commonest analyst query, through DuckDB.
    addr = con.execute(
        f"SELECT address FROM read_parquet('{wh}/btc/outputs/**/*.parquet') "
        "WHERE address IS NOT NULL ORDER BY height, tx_index, vout LIMIT 1"
    ).fetchall()[0][0]
    received = con.execute(
        f"SELECT sum(value) FROM read_parquet('{wh}/btc/outputs/**/*.parquet') WHERE address = ?",
        [addr],
    ).fetchall()[0][0]
    out["lookup"] = {"address": addr, "received": int(received)}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
