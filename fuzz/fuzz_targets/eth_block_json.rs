//! Ethereum RPC responses: any bytes as an `eth_getBlockByNumber` result and its receipts
//! (split at the first NUL) decode with an error or a block, and a block whose receipts
//! pass the indexer's checks (one per transaction, same hashes) goes through the
//! transform into the six tables without a panic.
#![no_main]

use alloy::network::AnyRpcBlock;
use ferret_indexer::eth::source::{BlockData, Receipt};
use ferret_indexer::eth::transform::EthRows;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (block, receipts) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"[]"[..]),
    };
    let Ok(block) = serde_json::from_slice::<AnyRpcBlock>(block) else {
        return;
    };
    let Ok(receipts) = serde_json::from_slice::<Vec<Receipt>>(receipts) else {
        return;
    };
    // The checks the indexer makes before the transform (Source::check_receipts).
    if receipts.len() != block.transactions.len()
        || receipts
            .iter()
            .zip(block.transactions.hashes())
            .any(|(r, h)| r.transaction_hash != h)
    {
        return;
    }
    let mut rows = EthRows::new();
    if rows
        .push_block(&BlockData {
            block,
            receipts,
            traces: None,
        })
        .is_ok()
    {
        let _ = rows.finish();
    }
});
