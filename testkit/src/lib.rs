//! Ferret's test and benchmark infrastructure, kept out of the library crates a user runs
//! (`publish = false`): deterministic synthetic chains with their ground truth
//! ([`synth`]), a JSON-RPC server replaying recorded node answers with injected faults
//! ([`replay`]), a driver for a local anvil node ([`anvil`]) and the scenario contracts
//! ([`contracts`]), and the fuzz harnesses ([`fuzz`]). The `ferret synth` and `ferret demo`
//! commands use the generators.

pub mod anvil;
pub mod contracts;
pub mod fuzz;
pub mod replay;
pub mod synth;
