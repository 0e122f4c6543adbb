//! Ferret's graph kernels. Every kernel exists twice: a WGSL compute shader run through
//! wgpu, and a rayon CPU twin that is also its test oracle; both give identical results.
//!
//! ```
//! use ferret_kernels::{cc, device::{select, DeviceChoice}};
//! let backend = select(DeviceChoice::Cpu).expect("the CPU is always there");
//! // Edges 0-1 and 2-3, node 4 alone.
//! let labels = cc::connected_components(&backend, 5, &[(0, 1), (3, 2)]).expect("runs");
//! assert_eq!(labels, [0, 0, 2, 2, 4]);
//! ```

pub mod account;
pub mod blocked;
pub mod blocks;
pub mod cc;
pub mod chainrank;
pub mod cluster;
pub mod coinjoin;
pub mod device;
mod error;
mod progress;
pub mod propagate;
pub mod taint;
pub mod txstream;
pub mod typology;

pub use error::{Error, Result};

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::device::{Backend, DeviceChoice, Gpu, select};

    /// The GPU, or None (skip) where none exists; under FERRET_REQUIRE_ALL a missing
    /// adapter fails the test.
    pub(crate) fn gpu() -> Option<Arc<Gpu>> {
        match select(DeviceChoice::Gpu) {
            Ok(Backend::Gpu(g)) => Some(g),
            Ok(Backend::Cpu) => unreachable!("--device gpu never falls back"),
            Err(e) => {
                let required = std::env::var("FERRET_REQUIRE_ALL").is_ok_and(|v| v == "1");
                assert!(!required, "a GPU adapter is required here: {e}");
                eprintln!("skipping GPU half: {e}");
                None
            }
        }
    }
}
