//! Ferret's chain indexer: Bitcoin Core block files into Hive-partitioned Parquet on any
//! object store, committed through a manifest; and the synthetic chain generator.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let wh = ferret_schemas::Warehouse::open("./warehouse")?;
//! let opts = ferret_indexer::btc::IndexOptions::new("/home/me/.bitcoin/blocks");
//! let summary = ferret_indexer::btc::index_btc(&wh, &opts).await?;
//! println!("{summary}");
//! # Ok(()) }
//! ```

pub mod btc;
mod error;
pub mod eth;
pub mod labels;
pub mod sink;
pub mod source;
pub mod synth;
pub mod transform;
pub mod utxo;

pub use error::{Error, Result};
