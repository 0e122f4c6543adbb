//! Bitcoin Core's blocks directory: `blk*.dat` records, `xor.dat` obfuscation, stale
//! blocks and pruned starts.
mod blkfile;
mod chain;
mod script;
mod verify;

pub use ::bitcoin::Network;
pub use blkfile::{BlkDir, BlockLocation, MAX_BLOCK_SERIALIZED_SIZE, ScanCache};
pub use chain::{BestChain, ChainBlock, select_best_chain};
pub use script::{ScriptKind, classify};
pub use verify::{BlockFault, TxHashes, TxSize, hash_and_verify, hash_and_verify_raw, raw_txid};
