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
        /// `output_id` of the transaction's first output: output ids are this plus vout
        /// (a prefix sum of output counts over the chain).
        first_output_id: Int64,
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
        /// Dense id of the output, in chain order (transaction, then vout).
        output_id: Int64,
        /// `btc.addresses.address_id` of `address`; null when the output has none.
        address_id: Int64 (nullable),
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
        /// `output_id` of the spent output; null when it lies before the indexed range.
        spent_output_id: Int64 (nullable),
        /// `address_id` of the spent output's address.
        address_id: Int64 (nullable),
    }
}

crate::dataset! {
    /// `btc.addresses`: one row per distinct address, with its dense id. Ids are given in
    /// chain order of the first output paying each address, so `address_id` order is
    /// first-seen order; kernels and results name addresses by these ids.
    pub struct Addresses {
        address: Utf8,
        address_id: Int64,
        /// Height of the block holding the first output that pays it.
        first_seen_height: Int64,
        /// `tx_index` of that output's transaction.
        first_tx_index: Int64,
        /// `output_id` of that output.
        first_output_id: Int64,
        script_type: Utf8,
    }
}

crate::dataset! {
    /// `btc.spends`: the spend graph's edges, one row per input spending an output inside
    /// the indexed range (coinbase inputs and inputs spending earlier outputs have none).
    /// Transactions are the graph's nodes, cut into blocks of 2^k consecutive `tx_index`es
    /// (k: the manifest's `graph_block_bits`); each file holds one row group per
    /// (`dst_block`, `src_block`) pair, so a kernel reads only the edges out of the blocks
    /// that carry taint.
    pub struct Spends {
        /// Block of the spending transaction: `tx_index >> k`.
        dst_block: Int32,
        /// Block of the spent output's transaction: `spent_tx_index >> k`.
        src_block: Int32,
        height: Int64,
        /// The spending transaction.
        tx_index: Int64,
        vin: Int32,
        /// The transaction that created the spent output.
        spent_tx_index: Int64,
        spent_output_id: Int64,
        /// Value of the spent output, sats.
        value: Int64,
        /// Sum of the values of the spending transaction's inputs that have an edge (the
        /// haircut's denominator).
        input_total: Int64,
        /// `address_id` of the spent output's address.
        address_id: Int64 (nullable),
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
/// Schema of `btc.addresses`.
pub fn addresses_schema() -> SchemaRef {
    Addresses::schema()
}
/// Schema of `btc.spends`.
pub fn spends_schema() -> SchemaRef {
    Spends::schema()
}

/// Default `graph_block_bits`: blocks of 2^20 transactions (4 MiB of `f32` state a block,
/// within any adapter's binding; ~2.5 M edges into a block on mainnet).
pub const DEFAULT_GRAPH_BLOCK_BITS: u32 = 20;
/// Widest accepted `graph_block_bits`: a block's `f32` array stays below 2^31 − 4 bytes.
pub const MAX_GRAPH_BLOCK_BITS: u32 = 28;
