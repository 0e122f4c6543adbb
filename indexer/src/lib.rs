//! Ferret's chain indexer: Bitcoin Core block files and Ethereum JSON-RPC into
//! Hive-partitioned Parquet on any object store, committed through a manifest. Both
//! chains write through one stage runner (`stage`). Test infrastructure (generators,
//! replay server, anvil driver) lives in the unpublished `ferret-testkit` crate.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let wh = ferret_schemas::Warehouse::open("./warehouse")?;
//! let opts = ferret_indexer::btc::IndexOptions::new("/home/me/.bitcoin/blocks");
//! let summary = ferret_indexer::btc::index_btc(&wh, &opts).await?;
//! println!("{summary}");
//! # Ok(()) }
//! ```

pub mod addrs;
pub mod btc;
mod error;
pub mod eth;
pub mod label_export;
pub mod labels;
pub mod ofac;
pub mod sink;
pub mod source;
mod stage;
pub mod transform;
pub mod utxo;

pub use error::{Error, Result};
