//! Chain sources: where decoded blocks come from.
pub mod bitcoin;
