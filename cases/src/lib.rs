//! Cases: an investigation as a file (seeds, policy, schedule, where alerts go), run on a
//! schedule, every run kept under the case with what it read, each run diffed against the
//! previous one into alerts that are delivered exactly once.
//!
//! - [`file`]: the case file, validated with errors naming the line.
//! - [`run`]: one run of a case: taint, the seeds' clusters, the alerts; one commit.
//! - [`deliver`]: alerts to JSON lines and a webhook, from a per-sink cursor.
//! - [`schedule`]: which cases are due (`ferret jobs run`).

pub mod cron;
pub mod deliver;
pub mod evidence;
pub mod extract;
pub mod file;
pub mod findings;
pub mod report;
pub mod run;
pub mod schedule;
pub mod state;
mod yaml;

pub use file::{Case, load};
pub use run::{RunReport, run_case};

use std::path::PathBuf;

/// Errors of cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Something wrong at a place in a case file.
    #[error("{}:{line}:{column}: {reason}", path.display())]
    CaseFile {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Warehouse(#[from] ferret_schemas::Error),
    #[error(transparent)]
    Kernel(#[from] ferret_kernels::Error),
    #[error("query: {0}")]
    Query(String),
    /// The case's tables are not what this build writes.
    #[error("case `{case}`: {reason}")]
    Damaged { case: String, reason: String },
    /// The case cannot run as asked.
    #[error("case `{case}`: {reason}")]
    Refused { case: String, reason: String },
    /// An alert could not be delivered; the cursor stays before it.
    #[error("delivering alerts of case `{case}` to {sink}: {reason}")]
    Delivery {
        case: String,
        sink: String,
        reason: String,
    },
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::Query(e.to_string())
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Query(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
