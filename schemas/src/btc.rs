//! Bitcoin tables. Column names follow the public bitcoin-etl convention where one exists.
//!
//! Conventions: hashes are lowercase hex as Bitcoin displays them (byte-reversed);
//! values are satoshis (Int64); `tx_index` is the global position of a transaction in
//! the indexed chain, from 0 at the first indexed block.
//!
//! `script_type` of an output is one of `p2pk`, `p2pkh`, `p2sh`, `p2wpkh`, `p2wsh`, `p2tr`,
//! `p2a` (pay-to-anchor), `witness_unknown` (segwit v2+), `multisig` (bare), `nulldata`
//! (OP_RETURN) or `nonstandard`. `address` is the standard encoding for the network; for
//! `p2pk` it is the P2PKH address of the public key (as explorers show it, so Satoshi-era
//! coins can be followed), for `multisig`, `nulldata` and `nonstandard` it is null.

use arrow::datatypes::SchemaRef;

crate::dataset! {
    /// `btc.blocks`: one row per block of the best chain.
    pub struct Blocks {
        height: Int64,
        hash: Utf8,
        prev_hash: Utf8,
        time: TimestampUtc,
        version: Int32,
        merkle_root: Utf8,
        bits: Int64,
        nonce: Int64,
        tx_count: Int64,
        size: Int64,
        stripped_size: Int64,
        weight: Int64,
        first_tx_index: Int64,
    }
}

crate::dataset! {
    /// `btc.transactions`: one row per transaction.
    pub struct Transactions {
        height: Int64,
        tx_index: Int64,
        block_position: Int32,
        txid: Utf8,
        wtxid: Utf8,
        version: Int32,
        lock_time: Int64,
        is_coinbase: Boolean,
        input_count: Int64,
        output_count: Int64,
        /// Null when an input spends an output from before the indexed range.
        input_value: Int64 (nullable),
        output_value: Int64,
        /// input_value - output_value; 0 for coinbases; null when input_value is unknown.
        fee: Int64 (nullable),
        size: Int64,
        vsize: Int64,
        weight: Int64,
    }
}

crate::dataset! {
    /// `btc.outputs`: one row per transaction output.
    pub struct Outputs {
        height: Int64,
        tx_index: Int64,
        txid: Utf8,
        vout: Int32,
        value: Int64,
        script_type: Utf8,
        address: Utf8 (nullable),
        script: Binary,
    }
}

crate::dataset! {
    /// `btc.inputs`: one row per transaction input, enriched from the output it spends.
    pub struct Inputs {
        height: Int64,
        tx_index: Int64,
        txid: Utf8,
        vin: Int32,
        /// The spent outpoint; null for the coinbase input.
        spent_txid: Utf8 (nullable),
        spent_vout: Int32 (nullable),
        /// Enrichment from the spent output; null when it lies before the indexed range.
        spent_tx_index: Int64 (nullable),
        spent_height: Int64 (nullable),
        value: Int64 (nullable),
        script_type: Utf8 (nullable),
        address: Utf8 (nullable),
        sequence: Int64,
        script_sig: Binary,
        witness: BinaryList,
    }
}

/// Schema of `btc.blocks`.
pub fn blocks_schema() -> SchemaRef {
    Blocks::schema()
}
/// Schema of `btc.transactions`.
pub fn transactions_schema() -> SchemaRef {
    Transactions::schema()
}
/// Schema of `btc.outputs`.
pub fn outputs_schema() -> SchemaRef {
    Outputs::schema()
}
/// Schema of `btc.inputs`.
pub fn inputs_schema() -> SchemaRef {
    Inputs::schema()
}
