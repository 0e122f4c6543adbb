//! Ethereum tables (cryo / ethereum-etl conventions).
//!
//! Conventions: hashes and addresses are lowercase `0x` hex; `block_number` and
//! `transaction_index` place every row; amounts are exact. Wei (ETH values, gas prices)
//! fit `Decimal128(38, 0)` (all ETH ever is ~1.2e26 wei). Token amounts are `uint256`:
//! `value` is `Decimal256(76, 0)` — exact, and NULL only for the absurd amounts of 77 or
//! 78 digits — and `value_string` holds every amount losslessly in decimal.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::fields::{i32, i64, utf8};

/// Wei: Decimal128(38, 0).
fn wei(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Decimal128(38, 0), nullable)
}
/// A uint256 amount: Decimal256(76, 0), NULL past 76 digits (see `value_string`).
fn u256(name: &str) -> Field {
    Field::new(name, DataType::Decimal256(76, 0), true)
}
fn binary(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Binary, nullable)
}

static BLOCKS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("block_number", false),
        utf8("block_hash", false),
        utf8("parent_hash", false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
            false,
        ),
        utf8("miner", false),
        i64("gas_limit", false),
        i64("gas_used", false),
        wei("base_fee_per_gas", true),
        i64("transaction_count", false),
        i64("size", true),
        binary("extra_data", false),
        i64("blob_gas_used", true),
        i64("excess_blob_gas", true),
    ]))
});

static TRANSACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("block_number", false),
        i32("transaction_index", false),
        utf8("transaction_hash", false),
        i64("nonce", false),
        utf8("from_address", false),
        // NULL for contract creation.
        utf8("to_address", true),
        wei("value", false),
        binary("input", false),
        i64("gas_limit", false),
        // 0 legacy, 1 access list, 2 EIP-1559, 3 blob, 4 set-code.
        i32("transaction_type", false),
        i64("chain_id", true),
        wei("gas_price", true),
        wei("max_fee_per_gas", true),
        wei("max_priority_fee_per_gas", true),
        wei("max_fee_per_blob_gas", true),
        Field::new(
            "blob_versioned_hashes",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, false))),
            true,
        ),
        // From the receipt; NULL when the receipt predates EIP-658 (Byzantium, 2017) and no
        // trace tells.
        Field::new("success", DataType::Boolean, true),
        i64("gas_used", false),
        i64("cumulative_gas_used", false),
        wei("effective_gas_price", false),
        utf8("contract_address", true),
        i64("blob_gas_used", true),
        wei("blob_gas_price", true),
    ]))
});

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("block_number", false),
        i32("transaction_index", false),
        i32("log_index", false),
        utf8("transaction_hash", false),
        utf8("address", false),
        utf8("topic0", true),
        utf8("topic1", true),
        utf8("topic2", true),
        utf8("topic3", true),
        binary("data", false),
    ]))
});

static TOKEN_TRANSFERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("block_number", false),
        i32("transaction_index", false),
        i32("log_index", false),
        utf8("transaction_hash", false),
        utf8("token_address", false),
        utf8("from_address", false),
        utf8("to_address", false),
        // `erc20` (amount in `value`) or `erc721` (token id in `value`).
        utf8("standard", false),
        u256("value"),
        utf8("value_string", false),
    ]))
});

static TRACES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("block_number", false),
        i32("transaction_index", false),
        // Position of the call in the transaction's call tree, depth first from 0.
        i32("trace_index", false),
        utf8("transaction_hash", false),
        // Position in the call tree: "" for the top call, "0", "0.1", ….
        utf8("trace_address", false),
        // call, delegatecall, staticcall, callcode, create, create2, selfdestruct.
        utf8("call_type", false),
        utf8("from_address", false),
        utf8("to_address", true),
        wei("value", false),
        i64("gas", true),
        i64("gas_used", true),
        binary("input", false),
        binary("output", true),
        utf8("error", true),
        // The call or one of its ancestors failed: its value did not move.
        Field::new("reverted", DataType::Boolean, false),
    ]))
});

static TRANSFERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        i64("block_number", false),
        i32("transaction_index", false),
        // Order within the transaction: the top-level value first, then the internal
        // transfers in call-tree order, then the token transfers in log order.
        i32("ordinal", false),
        utf8("transaction_hash", false),
        // `transaction`, `internal` or `token`.
        utf8("kind", false),
        // `ETH` or the token contract's address (ERC-20 amounts; NFTs stay in
        // token_transfers).
        utf8("asset", false),
        utf8("from_address", false),
        utf8("to_address", false),
        u256("value"),
        utf8("value_string", false),
    ]))
});

/// Schema of `eth.blocks`.
pub fn blocks_schema() -> SchemaRef {
    BLOCKS.clone()
}
/// Schema of `eth.transactions` (with the receipt's fields).
pub fn transactions_schema() -> SchemaRef {
    TRANSACTIONS.clone()
}
/// Schema of `eth.logs`.
pub fn logs_schema() -> SchemaRef {
    LOGS.clone()
}
/// Schema of `eth.token_transfers` (ERC-20 and ERC-721 `Transfer` events).
pub fn token_transfers_schema() -> SchemaRef {
    TOKEN_TRANSFERS.clone()
}
/// Schema of `eth.traces` (internal calls).
pub fn traces_schema() -> SchemaRef {
    TRACES.clone()
}
/// Schema of `eth.transfers`: every value movement (native, internal, token) of
/// successful calls; what the account-model kernels read.
pub fn transfers_schema() -> SchemaRef {
    TRANSFERS.clone()
}
