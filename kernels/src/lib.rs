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

pub mod cc;
pub mod cluster;
pub mod device;
mod error;

pub use error::{Error, Result};
