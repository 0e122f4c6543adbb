//! Ethereum tables (cryo / ethereum-etl conventions).
//!
//! Conventions: hashes and addresses are lowercase `0x` hex; `block_number` and
//! `transaction_index` place every row; amounts are exact. Wei (ETH values, gas prices)
//! fit `Decimal128(38, 0)` (all ETH ever is ~1.2e26 wei). Token amounts are `uint256`:
//! `value` is `Decimal256(76, 0)` — exact, and NULL only for the absurd amounts of 77 or
//! 78 digits — and `value_string` holds every amount losslessly in decimal.

use arrow::datatypes::SchemaRef;

crate::dataset! {
    /// `eth.blocks`.
    pub struct Blocks {
        block_number: Int64,
        block_hash: Utf8,
        parent_hash: Utf8,
        timestamp: TimestampUtc,
        miner: Utf8,
        gas_limit: Int64,
        gas_used: Int64,
        base_fee_per_gas: Wei (nullable),
        transaction_count: Int64,
        size: Int64 (nullable),
        extra_data: Binary,
        blob_gas_used: Int64 (nullable),
        excess_blob_gas: Int64 (nullable),
    }
}

crate::dataset! {
    /// `eth.transactions`, with the receipt's fields.
    pub struct Transactions {
        block_number: Int64,
        transaction_index: Int32,
        transaction_hash: Utf8,
        nonce: Int64,
        from_address: Utf8,
        /// NULL for contract creation.
        to_address: Utf8 (nullable),
        value: Wei,
        input: Binary,
        gas_limit: Int64,
        /// 0 legacy, 1 access list, 2 EIP-1559, 3 blob, 4 set-code.
        transaction_type: Int32,
        chain_id: Int64 (nullable),
        gas_price: Wei (nullable),
        max_fee_per_gas: Wei (nullable),
        max_priority_fee_per_gas: Wei (nullable),
        max_fee_per_blob_gas: Wei (nullable),
        blob_versioned_hashes: Utf8List (nullable),
        /// From the receipt; NULL when the receipt predates EIP-658 (Byzantium, 2017) and
        /// no trace tells.
        success: Boolean (nullable),
        gas_used: Int64,
        cumulative_gas_used: Int64,
        effective_gas_price: Wei,
        contract_address: Utf8 (nullable),
        blob_gas_used: Int64 (nullable),
        blob_gas_price: Wei (nullable),
    }
}

crate::dataset! {
    /// `eth.logs`.
    pub struct Logs {
        block_number: Int64,
        transaction_index: Int32,
        log_index: Int32,
        transaction_hash: Utf8,
        address: Utf8,
        topic0: Utf8 (nullable),
        topic1: Utf8 (nullable),
        topic2: Utf8 (nullable),
        topic3: Utf8 (nullable),
        data: Binary,
    }
}

crate::dataset! {
    /// `eth.token_transfers`: ERC-20 and ERC-721 `Transfer` events.
    pub struct TokenTransfers {
        block_number: Int64,
        transaction_index: Int32,
        log_index: Int32,
        transaction_hash: Utf8,
        token_address: Utf8,
        from_address: Utf8,
        to_address: Utf8,
        /// `erc20` (amount in `value`) or `erc721` (token id in `value`).
        standard: Utf8,
        value: U256 (nullable),
        value_string: Utf8,
    }
}

crate::dataset! {
    /// `eth.traces`: internal calls.
    pub struct Traces {
        block_number: Int64,
        transaction_index: Int32,
        /// Position of the call in the transaction's call tree, depth first from 0.
        trace_index: Int32,
        transaction_hash: Utf8,
        /// Position in the call tree: "" for the top call, "0", "0.1", ….
        trace_address: Utf8,
        /// call, delegatecall, staticcall, callcode, create, create2, selfdestruct.
        call_type: Utf8,
        from_address: Utf8,
        to_address: Utf8 (nullable),
        value: Wei,
        gas: Int64 (nullable),
        gas_used: Int64 (nullable),
        input: Binary,
        output: Binary (nullable),
        error: Utf8 (nullable),
        /// The call or one of its ancestors failed: its value did not move.
        reverted: Boolean,
    }
}

crate::dataset! {
    /// `eth.transfers`: every value movement (native, internal, token) of successful
    /// calls; what the account-model kernels read.
    pub struct Transfers {
        block_number: Int64,
        transaction_index: Int32,
        /// Order within the transaction: the top-level value first, then the internal
        /// transfers in call-tree order, then the token transfers in log order.
        ordinal: Int32,
        transaction_hash: Utf8,
        /// `transaction`, `internal` or `token`.
        kind: Utf8,
        /// `ETH` or the token contract's address (ERC-20 amounts; NFTs stay in
        /// token_transfers).
        asset: Utf8,
        from_address: Utf8,
        to_address: Utf8,
        value: U256 (nullable),
        value_string: Utf8,
    }
}

/// Schema of `eth.blocks`.
pub fn blocks_schema() -> SchemaRef {
    Blocks::schema()
}
/// Schema of `eth.transactions` (with the receipt's fields).
pub fn transactions_schema() -> SchemaRef {
    Transactions::schema()
}
/// Schema of `eth.logs`.
pub fn logs_schema() -> SchemaRef {
    Logs::schema()
}
/// Schema of `eth.token_transfers` (ERC-20 and ERC-721 `Transfer` events).
pub fn token_transfers_schema() -> SchemaRef {
    TokenTransfers::schema()
}
/// Schema of `eth.traces` (internal calls).
pub fn traces_schema() -> SchemaRef {
    Traces::schema()
}
/// Schema of `eth.transfers`: every value movement (native, internal, token) of
/// successful calls; what the account-model kernels read.
pub fn transfers_schema() -> SchemaRef {
    Transfers::schema()
}
