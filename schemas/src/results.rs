//! Kernel results: `{root}/results/{job}/run={run}/part-0.parquet`, and
//! `{root}/results/{job}/_latest.json` naming the run the plain table name shows (written
//! last, so a reader never sees a half-written run).

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

/// The pointer to a job's latest run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestRun {
    pub run_id: String,
    /// Object paths of the run's files, relative to the warehouse root's store.
    pub files: Vec<String>,
    pub rows: u64,
}

/// Directory of a job's results.
pub fn job_dir(root: &Path, job: &str) -> Path {
    root.clone().join("results").join(job)
}

/// The `_latest.json` object of a job.
pub fn latest_path(root: &Path, job: &str) -> Path {
    job_dir(root, job).join("_latest.json")
}
