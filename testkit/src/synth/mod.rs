//! Deterministic synthetic chains for tests, fixtures and benchmarks.
//!
//! [`btc`] writes a Bitcoin Core blocks directory with a realistic economy (users,
//! pools, exchanges, CoinJoins, peel chains, planted scam operations) together with
//! the ground truth an investigation should recover. [`eth`] drives a local Ethereum node
//! (anvil) through a scenario of the same kind.

pub mod account;
pub mod btc;
pub mod eth;
