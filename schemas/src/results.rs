//! Kernel results: `{root}/results/{job}/run={run}/part-0.parquet`, and the results head
//! `{root}/results/_state/head-{seq}.json` naming the run every job's plain table shows
//! (committed last, in one create-only PUT for all the jobs of a run, so a reader never
//! sees a half-written run nor a `taint` of one run beside the `exits` of another).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

/// Schema of `clusters`: one row per address.
pub fn clusters_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            Field::new("address_id", DataType::Int64, false),
            // The smallest address_id in the cluster.
            Field::new("cluster_id", DataType::Int64, false),
            Field::new("cluster_size", DataType::Int64, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of `labels`: what is known about addresses. The whole table is rewritten on
/// every import, deduplicated on (chain, address, label, category, source).
pub fn labels_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            // As given: a number from CSV or a TagPack confidence name (`ownership`, …).
            Field::new("confidence", DataType::Utf8, true),
        ]))
    });
    S.clone()
}

/// Schema of `taint`: one row per tainted output of a taint run.
pub fn taint_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("txid", DataType::Utf8, false),
            Field::new("vout", DataType::Int32, false),
            Field::new("address", DataType::Utf8, true),
            Field::new("value", DataType::Int64, false),
            Field::new("hop", DataType::Int32, false),
            Field::new("fraction", DataType::Float64, false),
            Field::new("tainted_value", DataType::Int64, false),
            // The CoinJoin mix that moved this output's taint (protocol), NULL if none.
            Field::new("coinjoin", DataType::Utf8, true),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of `exits`: one row per labelled address that received taint. `tainted_value`
/// is along paths of at most the run's `max_hops` spends (the `taint` table's amounts);
/// `all_paths_value` along every path however long; `coinjoin_value` the part of that
/// which arrived only through CoinJoin mixes. `outputs` counts the tainted outputs within
/// the hop limit, `min_hop` the fewest spends over every path.
pub fn exits_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("tainted_value", DataType::Int64, false),
            Field::new("outputs", DataType::Int64, false),
            Field::new("min_hop", DataType::Int32, false),
            // NULL in runs written before these columns existed.
            Field::new("all_paths_value", DataType::Int64, true),
            Field::new("coinjoin_value", DataType::Int64, true),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of `eth_taint`: one row per address an Ethereum taint run reached. Amounts are
/// in the asset's base unit (wei, or the token's smallest unit) as Float64 (haircut:
/// within 1e-6 of the exact share); exact amounts are in `eth.transfers`.
pub fn eth_taint_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            // `ETH`, a token contract, or `*` (poison over every asset).
            Field::new("asset", DataType::Utf8, false),
            Field::new("hop", DataType::Int32, false),
            // The transfer that first brought taint (NULL for seeds).
            Field::new("first_block", DataType::Int64, true),
            Field::new("first_transaction_index", DataType::Int32, true),
            Field::new("first_transaction_hash", DataType::Utf8, true),
            Field::new("tainted_value", DataType::Float64, false),
            Field::new("tainted_transfers", DataType::Int64, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of `eth_exits`: one row per labelled stop address an Ethereum taint run reached.
pub fn eth_exits_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("asset", DataType::Utf8, false),
            Field::new("tainted_value", DataType::Float64, false),
            Field::new("tainted_transfers", DataType::Int64, false),
            Field::new("min_hop", DataType::Int32, false),
            Field::new("first_block", DataType::Int64, true),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of `coinjoins`: one row per transaction a CoinJoin detector recognised
/// (written by `ferret cluster btc`).
pub fn coinjoins_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("txid", DataType::Utf8, false),
            Field::new("height", DataType::Int64, false),
            Field::new("tx_index", DataType::Int64, false),
            // whirlpool, whirlpool_tx0, wasabi1, wasabi2, joinmarket, generic
            Field::new("protocol", DataType::Utf8, false),
            Field::new("confidence", DataType::Float64, false),
            // False for a Whirlpool tx0 (one owner's): its inputs are linked.
            Field::new("is_mix", DataType::Boolean, false),
            Field::new("equal_output_value", DataType::Int64, false),
            Field::new("equal_outputs", DataType::Int32, false),
            Field::new("participants", DataType::Int32, false),
            Field::new("inputs", DataType::Int32, false),
            Field::new("outputs", DataType::Int32, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of `cluster_links`: one row per admitted co-spend link (the first input
/// address of a transaction to each other one), the evidence behind `clusters`.
pub fn cluster_links_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            Field::new("linked_address", DataType::Utf8, false),
            Field::new("txid", DataType::Utf8, false),
            Field::new("height", DataType::Int64, false),
            Field::new("cluster_id", DataType::Int64, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of `cluster_holds`: transactions the merge guards kept from linking, for
/// review.
pub fn cluster_holds_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("chain", DataType::Utf8, false),
            Field::new("txid", DataType::Utf8, false),
            Field::new("height", DataType::Int64, false),
            // label_conflict or collapse
            Field::new("reason", DataType::Utf8, false),
            Field::new("clusters", DataType::Int32, false),
            Field::new("largest_cluster", DataType::Int64, false),
            Field::new("second_cluster", DataType::Int64, false),
            Field::new("labels", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// Schema of `typologies`: one row per finding of a typology run (`ferret typologies`):
/// a shape of scam-compound money (a peel chain, victim collection, …) on one chain.
/// Every pattern's rule, features and thresholds are in docs/typologies.md.
pub fn typologies_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            // peel_chain, victim_collection, pass_through, fan_out, coinjoin,
            // address_poisoning, approval_phishing, stablecoin_swap
            Field::new("pattern", DataType::Utf8, false),
            Field::new("chain", DataType::Utf8, false),
            // The address the finding is about: a collection address, a peel chain's or a
            // pass-through chain's first address, a structuring source, a mix user.
            Field::new("address", DataType::Utf8, true),
            // From the latest clustering run; NULL when the address is unclustered.
            Field::new("cluster_id", DataType::Int64, true),
            // The evidence transactions, in chain order (every step of a chain).
            Field::new(
                "txids",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
            Field::new("first_height", DataType::Int64, false),
            Field::new("last_height", DataType::Int64, false),
            // The pattern's amount in base units (sats): total peeled, total collected,
            // the value passed through, the value structured, the value mixed.
            Field::new("amount", DataType::Float64, false),
            // 0–1: how strongly the features match the pattern.
            Field::new("score", DataType::Float64, false),
            // JSON object of the features behind the finding and its score.
            Field::new("features", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
        ]))
    });
    S.clone()
}

/// The results tables: job name and schema.
pub fn result_tables() -> [(&'static str, SchemaRef); 11] {
    [
        ("clusters", clusters_schema()),
        ("coinjoins", coinjoins_schema()),
        ("cluster_links", cluster_links_schema()),
        ("cluster_holds", cluster_holds_schema()),
        ("eth_clusters", clusters_schema()),
        ("labels", labels_schema()),
        ("taint", taint_schema()),
        ("exits", exits_schema()),
        ("eth_taint", eth_taint_schema()),
        ("eth_exits", eth_exits_schema()),
        ("typologies", typologies_schema()),
    ]
}

/// The pointer to a job's latest run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatestRun {
    pub run_id: String,
    /// Object paths of the run's files, relative to the warehouse root's store.
    pub files: Vec<String>,
    pub rows: u64,
    /// What the run was asked (policy, seeds, options), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
    /// Size and SHA-256 of each file, in the order of `files` (empty for runs written
    /// before they were recorded): readers check the sizes, `ferret verify` the hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<FileCheck>,
}

/// What a written file must still be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheck {
    pub bytes: u64,
    pub sha256: String,
}

/// A fresh run id: milliseconds since the epoch, then a random suffix, so runs sort by
/// time and never collide.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{:08x}",
        now.as_millis(),
        rand_suffix(now.subsec_nanos())
    )
}

fn rand_suffix(seed: u32) -> u32 {
    // The process id and the clock's nanoseconds, mixed: unique enough between writers.
    let mut x = seed ^ std::process::id().rotate_left(16);
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x
}

/// Directory of a job's results. A job named with slashes (`cases/{case}/taint`) is a
/// nested directory.
pub fn job_dir(root: &Path, job: &str) -> Path {
    job.split('/')
        .filter(|p| !p.is_empty())
        .fold(root.clone().join("results"), |dir, part| dir.join(part))
}

/// Jobs that keep every run (a case's tables: its runs are the record of an
/// investigation, and alerts diff against them): each commit adds the run's file to the
/// job's list instead of replacing it, and retention never deletes them.
pub fn keeps_history(job: &str) -> bool {
    job.starts_with("cases/")
}

/// Directory of the results heads.
pub fn head_dir(root: &Path) -> Path {
    root.clone().join("results").join("_state")
}

/// Object name of the results head with sequence number `seq`.
pub fn head_name(seq: u64) -> String {
    format!("head-{seq:020}.json")
}

/// Parses a results head's object name back to its sequence number.
pub fn parse_head_name(name: &str) -> Option<u64> {
    name.strip_prefix("head-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// Runs kept per job besides the current one (`FERRET_KEEP_RUNS`, default 5).
pub fn keep_runs() -> usize {
    std::env::var("FERRET_KEEP_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// Runs younger than this are never deleted (a reader may have just found them).
pub const RUN_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// The `_latest.json` object of a job (written by versions before results heads; still
/// read when no head exists).
pub fn latest_path(root: &Path, job: &str) -> Path {
    job_dir(root, job).join("_latest.json")
}
