//! A case's tables. Every run of a case is kept: job `cases/{case}/{table}` lists the
//! files of all its runs (oldest first), under `results/cases/{case}/{table}/run=…`, and
//! one results head moves all of a run's tables at once. SQL shows each table over every
//! case as `case_{table}`, and `cases` one row per case.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::results::{eth_exits_schema, eth_taint_schema, exits_schema, taint_schema};

/// The job of one table of a case.
pub fn case_job(case: &str, table: &str) -> String {
    format!("cases/{case}/{table}")
}

/// The case and table of a case job (`cases/{case}/{table}`).
pub fn parse_case_job(job: &str) -> Option<(&str, &str)> {
    let rest = job.strip_prefix("cases/")?;
    let (case, table) = rest.split_once('/')?;
    (!case.is_empty() && !table.is_empty() && !table.contains('/')).then_some((case, table))
}

/// Whether `name` can name a case: 1 to 64 of `a-z 0-9 _ -`, starting with a letter or
/// digit (it is a directory name in every object store, and an SQL string).
pub fn valid_case_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `schema` with a leading `case` column.
fn with_case(schema: &SchemaRef) -> SchemaRef {
    let mut fields = vec![Arc::new(Field::new("case", DataType::Utf8, false))];
    fields.extend(schema.fields().iter().cloned());
    Arc::new(Schema::new(fields))
}

/// Schema of a case's `runs`: one row per run, with what it read.
pub fn case_runs_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
            Field::new("started_at", utc_micros(), false),
            Field::new("finished_at", utc_micros(), false),
            // Comma-separated: btc, eth.
            Field::new("chains", DataType::Utf8, false),
            // The chain tips the run read (NULL for a chain it did not trace).
            Field::new("btc_tip_height", DataType::Int64, true),
            Field::new("btc_tip_hash", DataType::Utf8, true),
            Field::new("btc_manifest_seq", DataType::Int64, true),
            Field::new("eth_tip_height", DataType::Int64, true),
            Field::new("eth_tip_hash", DataType::Utf8, true),
            Field::new("eth_manifest_seq", DataType::Int64, true),
            // The `labels` run it read (NULL: none imported).
            Field::new("labels_run", DataType::Utf8, true),
            // The clustering runs the members came from.
            Field::new("clusters_run", DataType::Utf8, true),
            Field::new("eth_clusters_run", DataType::Utf8, true),
            // SHA-256 of the case file as read, and the parameters parsed from it (JSON).
            Field::new("case_sha256", DataType::Utf8, false),
            Field::new("params", DataType::Utf8, false),
            Field::new("ferret_version", DataType::Utf8, false),
            // The previous run this one diffed against (NULL for the first).
            Field::new("previous_run", DataType::Utf8, true),
            Field::new("taint_rows", DataType::Int64, false),
            Field::new("exits", DataType::Int64, false),
            Field::new("members", DataType::Int64, false),
            Field::new("alerts", DataType::Int64, false),
        ]))
    });
    S.clone()
}

/// Schema of a case's `members`: the addresses in the clusters of the case's seeds (each
/// seed address is a member of its own cluster, clustered or not).
pub fn case_members_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("chain", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            // The clustering's cluster id; NULL for a seed no clustering placed.
            Field::new("cluster_id", DataType::Int64, true),
            // The seed whose cluster brought it in (itself for a seed).
            Field::new("seed", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of a case's `alerts`: what a run found new against the previous run.
pub fn case_alerts_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
            // Deterministic (SHA-256 of case, run, kind, chain, asset, address, txid):
            // a receiver discards one it has seen.
            Field::new("alert_id", DataType::Utf8, false),
            // Order within the run: delivery follows (run, seq).
            Field::new("seq", DataType::Int64, false),
            // new_exit, exit_increase, new_member, watchlist
            Field::new("kind", DataType::Utf8, false),
            Field::new("chain", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            // Sats, wei or the token's base unit: new tainted value (exits), the
            // watchlisted transfer's value.
            Field::new("amount", DataType::Float64, true),
            // BTC, ETH or the token contract.
            Field::new("asset", DataType::Utf8, true),
            Field::new("txid", DataType::Utf8, true),
            Field::new("height", DataType::Int64, true),
            Field::new("first_seen", utc_micros(), false),
            Field::new("detail", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of a case's `flows`: tainted value moved from one address to another (over
/// one transaction or many), as `ferret trace` draws it.
pub fn case_flows_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("chain", DataType::Utf8, false),
            // An output without an address shows as `txid:vout`.
            Field::new("from_address", DataType::Utf8, false),
            Field::new("to_address", DataType::Utf8, false),
            // BTC, ETH or the token contract.
            Field::new("asset", DataType::Utf8, false),
            // Sats, wei or the token's base unit.
            Field::new("tainted_value", DataType::Float64, false),
            // The hop of the end away from the seeds.
            Field::new("hop", DataType::Int32, false),
            // Ethereum: transfers aggregated; Bitcoin: NULL.
            Field::new("transfers", DataType::Int64, true),
            // The CoinJoin the flow passed through (Bitcoin), NULL if none.
            Field::new("coinjoin", DataType::Utf8, true),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of a case's `paths`: for each exit, one chain of transactions from a seed to
/// it, each step moving taint (the evidence a report cites). Step 0 is the seed's.
pub fn case_paths_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("chain", DataType::Utf8, false),
            Field::new("exit", DataType::Utf8, false),
            Field::new("step", DataType::Int32, false),
            Field::new("txid", DataType::Utf8, false),
            // NULL at step 0 (the seed's own output or address).
            Field::new("from_address", DataType::Utf8, true),
            Field::new("to_address", DataType::Utf8, false),
            // Tainted value the step moved (Bitcoin: the receiving output's).
            Field::new("tainted_value", DataType::Float64, false),
            Field::new("hop", DataType::Int32, false),
            // Ethereum: the block; Bitcoin: NULL (in btc.transactions).
            Field::new("height", DataType::Int64, true),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of a case's `state`: what the next run resumes Bitcoin forward taint from
/// (docs/cases.md, "Incremental runs"). One row per output that has a `taint` row (with
/// the output its proof path steps back to) or that was tainted and unspent at the run's
/// tip (with its node's values in the three passes).
pub fn case_state_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            // btc.outputs.output_id
            Field::new("output_id", DataType::Int64, false),
            // Whether the output has a row in the run's `taint`.
            Field::new("in_taint", DataType::Boolean, false),
            // The output a proof path steps back to (NULL at hop 0).
            Field::new("pred_output_id", DataType::Int64, true),
            // Set when the output was unspent at the tip: its node (tx_index, or
            // output_id under fifo) and the node's values.
            Field::new("node", DataType::Int64, true),
            // Hop-limited pass: the first step with taint (NULL: none) and the
            // fraction at each step from it on (the last holds beyond).
            Field::new("limited_hop", DataType::Int32, true),
            Field::new(
                "limited_steps",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
                true,
            ),
            Field::new("all_fraction", DataType::Float32, true),
            Field::new("all_hop", DataType::Int32, true),
            Field::new("open_fraction", DataType::Float32, true),
            Field::new("open_hop", DataType::Int32, true),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of a case's `state_exits`: per exit address, the sums the next run adds to:
/// along paths within the hop limit, along every path, along every path with the
/// CoinJoins passing nothing (value, outputs, smallest hop).
pub fn case_state_exits_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut f = vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
        ];
        for pass in ["limited", "all", "open"] {
            f.push(Field::new(format!("{pass}_value"), DataType::Int64, false));
            f.push(Field::new(
                format!("{pass}_outputs"),
                DataType::Int64,
                false,
            ));
            f.push(Field::new(format!("{pass}_min_hop"), DataType::Int32, true));
        }
        f.push(Field::new("run_id", DataType::Utf8, false));
        Arc::new(Schema::new(f))
    });
    S.clone()
}

/// Schema of a case's `state_meta`: one row per run that kept a resume state, with what
/// the state depends on (a later run resumes from the newest whose tip is still on the
/// chain, read with the same case file and labels).
pub fn case_state_meta_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("chain", DataType::Utf8, false),
            // The tip the state is at.
            Field::new("height", DataType::Int64, true),
            Field::new("hash", DataType::Utf8, true),
            Field::new("labels_run", DataType::Utf8, true),
            Field::new("case_sha256", DataType::Utf8, false),
            // The rest of the state as JSON (ids after the tip, seeds found, counts).
            Field::new("state", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of a case's `eth_state`: per address, what the next run resumes Ethereum taint
/// from (poison's first arrival, the haircut pool's exact balance and tainted share per
/// step, the sums so far).
pub fn case_eth_state_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            // NULL: not reached.
            Field::new("hop", DataType::Int32, true),
            // Poison: the transfer (its index in the asset's transfers, + 1) that first
            // brought taint; 0 for seeds; NULL: none.
            Field::new("arrival", DataType::Int64, true),
            // The pool's balance, 64 hex digits (256 bits, most significant first).
            Field::new("balance", DataType::Utf8, false),
            // The pool's share from step `shares_start` on, one per step (the last holds
            // beyond), as the kernels' 32-bit mantissa and exponent packed in 64 bits.
            Field::new("shares_start", DataType::Int64, true),
            Field::new(
                "shares",
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                true,
            ),
            Field::new("tainted_value", DataType::Float64, false),
            Field::new("tainted_transfers", DataType::Int64, false),
            // The first tainted transfer into it: its row in `eth_state_edges` (from 0).
            Field::new("first_edge", DataType::Int64, true),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of a case's `eth_state_edges`: every transfer that carried taint, in chain
/// order (flows and proof paths are drawn from them).
pub fn case_eth_state_edges_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("case", DataType::Utf8, false),
            Field::new("seq", DataType::Int64, false),
            Field::new("from_address", DataType::Utf8, false),
            Field::new("to_address", DataType::Utf8, false),
            Field::new("block_number", DataType::Int64, false),
            Field::new("transaction_index", DataType::Int32, false),
            Field::new("transaction_hash", DataType::Utf8, false),
            Field::new("tainted_value", DataType::Float64, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// The tables of a case: name in the case (its job is `cases/{case}/{name}`, its SQL
/// table `case_{name}`) and schema.
pub fn case_tables() -> [(&'static str, SchemaRef); 14] {
    static T: LazyLock<[(&'static str, SchemaRef); 14]> = LazyLock::new(|| {
        [
            ("runs", case_runs_schema()),
            ("taint", with_case(&taint_schema())),
            ("exits", with_case(&exits_schema())),
            ("eth_taint", with_case(&eth_taint_schema())),
            ("eth_exits", with_case(&eth_exits_schema())),
            ("members", case_members_schema()),
            ("alerts", case_alerts_schema()),
            ("flows", case_flows_schema()),
            ("paths", case_paths_schema()),
            ("state", case_state_schema()),
            ("state_exits", case_state_exits_schema()),
            ("state_meta", case_state_meta_schema()),
            ("eth_state", case_eth_state_schema()),
            ("eth_state_edges", case_eth_state_edges_schema()),
        ]
    });
    T.clone()
}

/// The schema of one case table.
pub fn case_table_schema(table: &str) -> Option<SchemaRef> {
    case_tables()
        .into_iter()
        .find(|(n, _)| *n == table)
        .map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_and_jobs() {
        for ok in ["a", "pig-butchering-2026_11", "0day"] {
            assert!(valid_case_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-x",
            "a/b",
            "a b",
            "é",
            &"x".repeat(65),
            "..",
            "a.b",
        ] {
            assert!(!valid_case_name(bad), "{bad}");
        }
        assert_eq!(
            parse_case_job(&case_job("c1", "taint")),
            Some(("c1", "taint"))
        );
        assert_eq!(parse_case_job("taint"), None);
        assert_eq!(parse_case_job("cases/c1/taint/x"), None);
        assert!(
            case_tables()
                .iter()
                .all(|(_, s)| s.field(0).name() == "case")
        );
    }
}
