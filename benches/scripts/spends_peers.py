#!/usr/bin/env python3
"""Peers of Ferret's out-of-core taint on the same edges: the committed spend graph
(`btc.spends`) of an indexed warehouse, read with pyarrow.

    ~/.cache/ferret/bench-venv/bin/python benches/scripts/spends_peers.py \
        --warehouse /tmp/bigwh --labels /tmp/big/truth/labels.csv [--category scam] \
        [--hops 10] [--ferret ferret.jsonl] [--kernels bfs,haircut,cc,grb]

The graph: one node per transaction, one edge per resolved input (the spent output's
transaction -> the spending transaction), weight `value / input_total` (the haircut's
share, exactly as Ferret lowers it). Seeds: the outputs paying an address of --category
in the labels CSV; an input spending a seed output is an edge from a constant 1.

Kernels (each timed alone, setup apart; scipy and numpy single-threaded):
- bfs: `scipy.sparse.csgraph.dijkstra(unweighted=True, limit=hops)` from a virtual
  super-source with an edge to every transaction spending a seed: the hop-limited
  poison reach. Reported as tainted outputs (the reached transactions' outputs and the
  seeds) and their value: Ferret's poison result, exactly.
- haircut: `hops` Jacobi steps `x = min(1, A @ x + b)` as scipy SpMVs (float32, values
  below 1e-30 flushed to 0 as Ferret does): Ferret's haircut result, within float
  rounding (the tainted value within 1e-4 relative).
- grb: the same haircut steps in python-graphblas (SuiteSparse:GraphBLAS, its own
  threads), `plus_times` mxv.
- cc: `connected_components(directed=False)` of the transaction graph (throughput only:
  Ferret clusters addresses, not transactions).

With --ferret (JSON lines of `stored_taint`, the same warehouse, seeds and hops), each
peer's answer is checked against Ferret's and the script exits 1 on a disagreement.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import scipy
import scipy.sparse as sp
from scipy.sparse import csgraph


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dataset(wh: Path, table: str):
    files = sorted(str(p) for p in (wh / "btc" / table).rglob("*.parquet"))
    if not files:
        sys.exit(f"no {table} files under {wh}/btc/{table}: index the chain first")
    return ds.dataset(files, format="parquet")


def load(args):
    wh = Path(args.warehouse)
    t0 = time.perf_counter()
    seeds_addr = set()
    with open(args.labels) as f:
        next(f)
        for line in f:
            p = line.rstrip("\n").split(",")
            if len(p) > 2 and p[2] == args.category:
                seeds_addr.add(p[0])
    # Outputs: value and creating transaction by output id; the seed outputs.
    outs = dataset(wh, "outputs")
    n_out = 0
    parts = []
    seed_ids = []
    wanted = list(seeds_addr)
    for b in outs.to_batches(columns=["output_id", "tx_index", "value", "address"]):
        parts.append((b.column(0).to_numpy(), b.column(1).to_numpy(), b.column(2).to_numpy()))
        mask = pc.is_in(b.column(3), value_set=pa.array(wanted, type=pa.string()))
        mask = pc.fill_null(mask, False)
        seed_ids.append(b.column(0).filter(mask).to_numpy())
    oid = np.concatenate([p[0] for p in parts])
    n_out = int(oid.max()) + 1
    out_tx = np.empty(n_out, dtype=np.int64)
    out_val = np.empty(n_out, dtype=np.int64)
    out_tx[oid] = np.concatenate([p[1] for p in parts])
    out_val[oid] = np.maximum(np.concatenate([p[2] for p in parts]), 0)
    del parts, oid
    n_tx = int(out_tx.max()) + 1
    seeds = np.unique(np.concatenate(seed_ids)) if seed_ids else np.zeros(0, np.int64)
    # Edges.
    sp_tab = dataset(wh, "spends").to_table(
        columns=["tx_index", "spent_tx_index", "spent_output_id", "value", "input_total"]
    )
    dst = sp_tab.column(0).to_numpy()
    src = sp_tab.column(1).to_numpy()
    spent = sp_tab.column(2).to_numpy()
    val = np.maximum(sp_tab.column(3).to_numpy(), 0)
    total = sp_tab.column(4).to_numpy()
    del sp_tab
    w = np.where(total > 0, val / np.maximum(total, 1), 0.0)
    is_seed = np.zeros(n_out, dtype=bool)
    is_seed[seeds] = True
    from_seed = is_seed[spent]
    load_s = time.perf_counter() - t0
    return dict(
        n_tx=n_tx, n_out=n_out, out_tx=out_tx, out_val=out_val, seeds=seeds,
        dst=dst, src=src, w=w, from_seed=from_seed, load_s=load_s,
    )


def report(g, hop_of_tx, frac_of_tx):
    """Tainted outputs and value as Ferret reports them: every output of a reached
    transaction at the transaction's fraction, seeds whole."""
    reached = hop_of_tx[g["out_tx"]]
    f = np.where(reached, frac_of_tx[g["out_tx"]], 0.0)
    f[g["seeds"]] = 1.0
    reached = reached.copy()
    reached[g["seeds"]] = True
    value = np.round(f[reached] * g["out_val"][reached]).sum()
    return int(reached.sum()), int(value)


def best(fn, reps):
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--category", default="scam")
    ap.add_argument("--hops", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kernels", default="bfs,haircut,grb,cc")
    ap.add_argument("--ferret", help="JSON lines of stored_taint runs to check against")
    args = ap.parse_args()
    kernels = args.kernels.split(",")
    g = load(args)
    n, H = g["n_tx"], args.hops
    m = len(g["dst"])
    print(f"graph: {n:,} transactions, {g['n_out']:,} outputs, {m:,} edges, "
          f"{len(g['seeds']):,} seed outputs; load {g['load_s']:.1f} s", file=sys.stderr)
    res = {"transactions": n, "edges": m, "hops": H, "scipy": scipy.__version__}
    plain = ~g["from_seed"]
    t0 = time.perf_counter()
    # A[dst, src]: row = spending tx, column = the spent output's tx (gather form).
    A = sp.csr_matrix((g["w"][plain].astype(np.float32), (g["dst"][plain], g["src"][plain])),
                      shape=(n, n))
    b = np.bincount(g["dst"][g["from_seed"]], weights=g["w"][g["from_seed"]],
                    minlength=n).astype(np.float32)
    setup = time.perf_counter() - t0
    res["setup_seconds"] = setup

    if "bfs" in kernels:
        # Forward adjacency with a super-source n -> every tx spending a seed.
        first = np.unique(g["dst"][g["from_seed"]])
        rows = np.concatenate([g["src"][plain], np.full(len(first), n)])
        cols = np.concatenate([g["dst"][plain], first])
        F = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                          shape=(n + 1, n + 1))
        def bfs():
            d = csgraph.dijkstra(F, directed=True, indices=n, unweighted=True, limit=H)
            return np.isfinite(d[:n]) & (d[:n] <= H)
        secs, reached = best(bfs, args.reps)
        outs, value = report(g, reached, np.ones(n))
        res["bfs"] = {"seconds": secs, "tainted_outputs": outs, "tainted_value": value,
                      "edges_per_sec": m / secs}

    def haircut_scipy():
        x = np.zeros(n, dtype=np.float32)
        for _ in range(H):
            y = A @ x + b
            np.minimum(y, 1.0, out=y)
            y[y < 1e-30] = 0.0
            x = y
        return x

    if "haircut" in kernels:
        secs, x = best(haircut_scipy, args.reps)
        outs, value = report(g, x > 0, x.astype(np.float64))
        res["haircut"] = {"seconds": secs, "tainted_outputs": outs, "tainted_value": value,
                          "edges_per_sec_per_hop": m * H / secs}

    if "grb" in kernels:
        import graphblas as gb
        from graphblas import binary, semiring
        Ac = A.tocoo()
        G = gb.Matrix.from_coo(Ac.row, Ac.col, Ac.data.astype(np.float32), nrows=n, ncols=n)
        bv = gb.Vector.from_dense(b, missing_value=0.0)
        def haircut_grb():
            x = gb.Vector(gb.dtypes.FP32, n)
            for _ in range(H):
                y = G.mxv(x, semiring.plus_times).new()
                y(binary.plus) << bv
                y << y.apply(binary.min, right=1.0)
                y << y.select(">=", 1e-30)
                x = y
            return x
        secs, x = best(haircut_grb, args.reps)
        dense = np.zeros(n)
        i, v = x.to_coo()
        dense[i] = v
        outs, value = report(g, dense > 0, dense)
        res["grb"] = {"seconds": secs, "tainted_outputs": outs, "tainted_value": value,
                      "edges_per_sec_per_hop": m * H / secs, "version": gb.__version__}

    if "cc" in kernels:
        U = sp.csr_matrix((np.ones(m, dtype=np.int8), (g["src"], g["dst"])), shape=(n, n))
        secs, (k, _) = best(lambda: csgraph.connected_components(U, directed=False), args.reps)
        res["cc"] = {"seconds": secs, "components": int(k), "edges_per_sec": m / secs}

    res["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(res))

    bad = []
    if args.ferret:
        for line in Path(args.ferret).read_text().splitlines():
            if not line.strip():
                continue
            f = json.loads(line)
            if f.get("direction") != "forward":
                continue
            peers = {"poison": ["bfs"], "haircut": ["haircut", "grb"]}.get(f["policy"], [])
            for p in peers:
                if p not in res:
                    continue
                r = res[p]
                if f["policy"] == "poison":
                    ok = (r["tainted_outputs"], r["tainted_value"]) == (
                        f["tainted_outputs"], f["tainted_value"])
                else:
                    ok = abs(r["tainted_value"] - f["tainted_value"]) <= 1e-4 * max(
                        1, f["tainted_value"]) and abs(
                        r["tainted_outputs"] - f["tainted_outputs"]) <= 1e-5 * f["tainted_outputs"] + 1
                line = (f"{p} vs ferret {f['policy']} ({f['path']}): outputs "
                        f"{r['tainted_outputs']:,} / {f['tainted_outputs']:,}, value "
                        f"{r['tainted_value']:,} / {f['tainted_value']:,}: "
                        f"{'agree' if ok else 'DISAGREE'}")
                print(line, file=sys.stderr)
                if not ok:
                    bad.append(line)
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
