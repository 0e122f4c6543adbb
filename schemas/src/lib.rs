//! Ferret's table contract: the Arrow schema of every table, the one registry of tables,
//! the warehouse layout (Hive partitions by height range) and the commit manifest.
//!
//! Everything that reads or writes the warehouse goes through this crate, so names,
//! schemas and paths cannot drift between the indexer, the kernels and the query layer.
//!
//! ```
//! use ferret_schemas::{table, Chain};
//! let outputs = table(Chain::Btc, "outputs").expect("btc.outputs is registered");
//! assert_eq!(outputs.qualified_name(), "btc.outputs");
//! assert!(outputs.schema().field_with_name("address").is_ok());
//! ```

pub mod btc;
pub mod cases;
pub mod checksum;
pub mod dataset;
mod error;
pub mod eth;
pub mod failpoint;
pub mod layout;
pub mod lease;
pub mod manifest;
mod registry;
pub mod results;
pub mod warehouse;

pub use error::{Error, Result};
pub use lease::WriterLease;
pub use manifest::{Checkpoint, FileEntry, Manifest};
pub use registry::{Chain, TableDef, table, tables, tables_of};
pub use warehouse::{Heads, Warehouse};

/// Version of the table schemas; bumped on any incompatible change, recorded in manifests.
pub const SCHEMA_VERSION: u32 = 2;
