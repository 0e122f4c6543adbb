//! Ethereum RPC responses: any bytes as an `eth_getBlockByNumber` result and its receipts
//! (split at the first NUL) decode with an error or a block, and a block whose receipts
//! pass the indexer's checks (one per transaction, same hashes) goes through the
//! transform into the six tables without a panic.
//! The harness is `ferret_testkit::fuzz::eth_block_json`, shared with the stable smoke test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferret_testkit::fuzz::eth_block_json(data));
