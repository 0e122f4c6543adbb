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

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::fields::{i32, i64, utf8};

static BLOCKS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("height", false),
        utf8("hash", false),
        utf8("prev_hash", false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
            false,
        ),
        i32("version", false),
        utf8("merkle_root", false),
        i64("bits", false),
        i64("nonce", false),
        i64("tx_count", false),
        i64("size", false),
        i64("stripped_size", false),
        i64("weight", false),
        i64("first_tx_index", false),
    ]))
});

static TRANSACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("height", false),
        i64("tx_index", false),
        i32("block_position", false),
        utf8("txid", false),
        utf8("wtxid", false),
        i32("version", false),
        i64("lock_time", false),
        Field::new("is_coinbase", DataType::Boolean, false),
        i64("input_count", false),
        i64("output_count", false),
        // Null when an input spends an output from before the indexed range.
        i64("input_value", true),
        i64("output_value", false),
        // input_value - output_value; 0 for coinbases; null when input_value is unknown.
        i64("fee", true),
        i64("size", false),
        i64("vsize", false),
        i64("weight", false),
    ]))
});

static OUTPUTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("height", false),
        i64("tx_index", false),
        utf8("txid", false),
        i32("vout", false),
        i64("value", false),
        utf8("script_type", false),
        utf8("address", true),
        Field::new("script", DataType::Binary, false),
    ]))
});

static INPUTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("height", false),
        i64("tx_index", false),
        utf8("txid", false),
        i32("vin", false),
        // The spent outpoint; null for the coinbase input.
        utf8("spent_txid", true),
        i32("spent_vout", true),
        // Enrichment from the spent output; null when it lies before the indexed range.
        i64("spent_tx_index", true),
        i64("spent_height", true),
        i64("value", true),
        utf8("script_type", true),
        utf8("address", true),
        i64("sequence", false),
        Field::new("script_sig", DataType::Binary, false),
        Field::new(
            "witness",
            DataType::List(Arc::new(Field::new_list_field(DataType::Binary, false))),
            false,
        ),
    ]))
});

/// Schema of `btc.blocks`.
pub fn blocks_schema() -> SchemaRef {
    BLOCKS.clone()
}
/// Schema of `btc.transactions`.
pub fn transactions_schema() -> SchemaRef {
    TRANSACTIONS.clone()
}
/// Schema of `btc.outputs`.
pub fn outputs_schema() -> SchemaRef {
    OUTPUTS.clone()
}
/// Schema of `btc.inputs`.
pub fn inputs_schema() -> SchemaRef {
    INPUTS.clone()
}
