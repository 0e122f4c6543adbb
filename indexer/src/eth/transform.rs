//! Blocks read from a node into the columns of the six Ethereum tables.

use alloy::consensus::Transaction as _;
use alloy::eips::Typed2718;
use alloy::network::TransactionResponse;
use alloy::primitives::{Address, B256, U256};
use arrow::array::{Decimal256Builder, RecordBatch, StringBuilder};
use arrow::datatypes::i256;
use ferret_schemas::eth;

use super::source::BlockData;
use crate::{Error, Result};

/// keccak256("Transfer(address,address,uint256)"): ERC-20 and ERC-721 share it.
pub const TRANSFER_TOPIC: B256 =
    alloy::primitives::b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");

/// Largest value Decimal256(76, 0) holds.
fn max_decimal76() -> U256 {
    U256::from(10u8).pow(U256::from(76u8)) - U256::from(1u8)
}

fn hex_addr(a: &Address) -> String {
    format!("{a:#x}")
}

pub(crate) fn hex_hash(h: &B256) -> String {
    format!("{h:#x}")
}

/// What the rows of one run hold, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EthCounts {
    pub blocks: u64,
    pub transactions: u64,
    pub logs: u64,
    pub token_transfers: u64,
    pub traces: u64,
    pub transfers: u64,
    /// Transactions whose success is unknown (pre-Byzantium receipts without traces); their
    /// value is counted as moved.
    pub unknown_status: u64,
    /// `Transfer` logs that are neither a well-formed ERC-20 nor ERC-721 transfer.
    pub malformed_transfer_logs: u64,
}

impl EthCounts {
    pub fn add(&mut self, o: &EthCounts) {
        self.blocks += o.blocks;
        self.transactions += o.transactions;
        self.logs += o.logs;
        self.token_transfers += o.token_transfers;
        self.traces += o.traces;
        self.transfers += o.transfers;
        self.unknown_status += o.unknown_status;
        self.malformed_transfer_logs += o.malformed_transfer_logs;
    }
}

/// Appends a uint256 amount to its two columns: exact as `Decimal256(76, 0)` (NULL past
/// 76 digits) and always as its decimal string.
fn push_u256(value: &mut Decimal256Builder, string: &mut StringBuilder, v: U256) {
    if v <= max_decimal76() {
        value.append_value(i256::from_le_bytes(v.to_le_bytes::<32>()));
    } else {
        value.append_null();
    }
    string.append_value(v.to_string());
}

/// Column builders of the six tables, one dataset each ([`ferret_schemas::eth`]), filled
/// block by block and by column name.
pub struct EthRows {
    blocks: eth::Blocks,
    txs: eth::Transactions,
    logs: eth::Logs,
    tokens: eth::TokenTransfers,
    traces: eth::Traces,
    transfers: eth::Transfers,
    buffered: usize,
    /// What the rows pushed since the last [`EthRows::take_counts`] hold.
    pub counts: EthCounts,
}

impl Default for EthRows {
    fn default() -> Self {
        Self::new()
    }
}

fn i64_of(v: u64, what: &str, block: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::BlockValue {
        block,
        what: format!("{what} {v} does not fit a 64-bit integer"),
    })
}

fn wei_of(v: U256, what: &str, block: u64) -> Result<i128> {
    i128::try_from(v).map_err(|_| Error::BlockValue {
        block,
        what: format!("{what} {v} wei exceeds Decimal128(38, 0)"),
    })
}

impl EthRows {
    pub fn new() -> Self {
        Self {
            blocks: eth::Blocks::new(),
            txs: eth::Transactions::new(),
            logs: eth::Logs::new(),
            tokens: eth::TokenTransfers::new(),
            traces: eth::Traces::new(),
            transfers: eth::Transfers::new(),
            buffered: 0,
            counts: EthCounts::default(),
        }
    }

    /// Rows buffered across all tables.
    pub fn buffered_rows(&self) -> usize {
        self.buffered
    }

    /// Appends one block's rows to every table.
    pub fn push_block(&mut self, d: &BlockData) -> Result<()> {
        let n = d.number();
        let nn = i64_of(n, "block number", n)?;
        let h = &d.block.header;
        let b = &mut self.blocks;
        b.block_number.append_value(nn);
        b.block_hash.append_value(hex_hash(&h.hash));
        b.parent_hash.append_value(hex_hash(&h.inner.parent_hash));
        b.timestamp
            .append_value(i64_of(h.inner.timestamp, "timestamp", n)?);
        b.miner.append_value(hex_addr(&h.inner.beneficiary));
        b.gas_limit
            .append_value(i64_of(h.inner.gas_limit, "gas limit", n)?);
        b.gas_used
            .append_value(i64_of(h.inner.gas_used, "gas used", n)?);
        b.base_fee_per_gas
            .append_option(h.inner.base_fee_per_gas.map(i128::from));
        b.transaction_count
            .append_value(i64_of(d.block.transactions.len() as u64, "tx count", n)?);
        b.size
            .append_option(h.size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)));
        b.extra_data.append_value(&h.inner.extra_data);
        b.blob_gas_used
            .append_option(h.inner.blob_gas_used.map(|v| v as i64));
        b.excess_blob_gas
            .append_option(h.inner.excess_blob_gas.map(|v| v as i64));
        self.counts.blocks += 1;
        self.buffered += 1;

        for (pos, (tx, r)) in d.block.transactions.txns().zip(&d.receipts).enumerate() {
            let pos32 = i32::try_from(pos).map_err(|_| Error::BlockValue {
                block: n,
                what: "more than 2^31 transactions".into(),
            })?;
            let tx_hash = hex_hash(&tx.tx_hash());
            let top_trace = d.traces.as_ref().and_then(|ts| {
                ts.iter()
                    .find(|t| t.tx_pos == pos && t.trace_address.is_empty())
            });
            let success = match r.status {
                Some(s) => Some(!s.is_zero()),
                None => top_trace.map(|t| t.error.is_none()),
            };
            if success.is_none() {
                self.counts.unknown_status += 1;
            }
            let t = &mut self.txs;
            t.block_number.append_value(nn);
            t.transaction_index.append_value(pos32);
            t.transaction_hash.append_value(&tx_hash);
            t.nonce.append_value(i64_of(tx.nonce(), "nonce", n)?);
            t.from_address.append_value(hex_addr(&tx.from()));
            t.to_address.append_option(tx.to().map(|a| hex_addr(&a)));
            t.value.append_value(wei_of(tx.value(), "value", n)?);
            t.input.append_value(tx.input());
            t.gas_limit
                .append_value(i64_of(tx.gas_limit(), "gas limit", n)?);
            let ty = tx.ty();
            t.transaction_type.append_value(i32::from(ty));
            t.chain_id
                .append_option(tx.chain_id().map(|c| i64::try_from(c).unwrap_or(-1)));
            t.gas_price
                .append_option(alloy::consensus::Transaction::gas_price(tx).map(|p| p as i128));
            let dynamic = ty >= 2;
            if dynamic {
                t.max_fee_per_gas.append_value(wei_of(
                    U256::from(alloy::consensus::Transaction::max_fee_per_gas(tx)),
                    "max fee",
                    n,
                )?);
                t.max_priority_fee_per_gas
                    .append_option(tx.max_priority_fee_per_gas().map(|p| p as i128));
            } else {
                t.max_fee_per_gas.append_null();
                t.max_priority_fee_per_gas.append_null();
            }
            t.max_fee_per_blob_gas
                .append_option(tx.max_fee_per_blob_gas().map(|p| p as i128));
            match tx.blob_versioned_hashes() {
                Some(hs) => {
                    for bh in hs {
                        t.blob_versioned_hashes.values().append_value(hex_hash(bh));
                    }
                    t.blob_versioned_hashes.append(true);
                }
                None => t.blob_versioned_hashes.append(false),
            }
            t.success.append_option(success);
            t.gas_used
                .append_value(i64_of(r.gas_used.to(), "gas used", n)?);
            t.cumulative_gas_used.append_value(i64_of(
                r.cumulative_gas_used.to(),
                "cumulative gas",
                n,
            )?);
            // Old nodes leave the effective price out: before EIP-1559 it is the gas price.
            let effective = r
                .effective_gas_price
                .map(|p| p.to::<u128>())
                .or(alloy::consensus::Transaction::gas_price(tx))
                .unwrap_or_default();
            t.effective_gas_price.append_value(effective as i128);
            t.contract_address
                .append_option(r.contract_address.map(|a| hex_addr(&a)));
            t.blob_gas_used
                .append_option(r.blob_gas_used.map(|v| v.to::<u64>() as i64));
            t.blob_gas_price
                .append_option(r.blob_gas_price.map(|p| p.to::<u128>() as i128));
            self.counts.transactions += 1;
            self.buffered += 1;

            // eth.transfers: the top-level value, internal transfers, token transfers.
            let mut ordinal = 0i32;
            let moved = success != Some(false);
            let tx_to = tx.to().or(r.contract_address);
            if moved
                && !tx.value().is_zero()
                && let Some(to) = tx_to
            {
                self.transfer(
                    nn,
                    pos32,
                    &mut ordinal,
                    &tx_hash,
                    "transaction",
                    "ETH",
                    &tx.from(),
                    &to,
                    tx.value(),
                );
            }
            if let Some(ts) = &d.traces {
                for (i, tr) in ts.iter().filter(|t| t.tx_pos == pos).enumerate() {
                    self.push_trace(nn, pos32, i, &tx_hash, tr, success == Some(false))?;
                    if !tr.trace_address.is_empty() && moved && tr.moves_value() {
                        let to = tr.to.expect("moves_value checks to");
                        self.transfer(
                            nn,
                            pos32,
                            &mut ordinal,
                            &tx_hash,
                            "internal",
                            "ETH",
                            &tr.from,
                            &to,
                            tr.value,
                        );
                    }
                }
            }
            for log in &r.logs {
                self.push_log(nn, pos32, &tx_hash, log, n, &mut ordinal)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        n: i64,
        pos: i32,
        ordinal: &mut i32,
        tx_hash: &str,
        kind: &str,
        asset: &str,
        from: &Address,
        to: &Address,
        value: U256,
    ) {
        let t = &mut self.transfers;
        t.block_number.append_value(n);
        t.transaction_index.append_value(pos);
        t.ordinal.append_value(*ordinal);
        t.transaction_hash.append_value(tx_hash);
        t.kind.append_value(kind);
        t.asset.append_value(asset);
        t.from_address.append_value(hex_addr(from));
        t.to_address.append_value(hex_addr(to));
        push_u256(&mut t.value, &mut t.value_string, value);
        *ordinal += 1;
        self.counts.transfers += 1;
        self.buffered += 1;
    }

    fn push_trace(
        &mut self,
        n: i64,
        pos: i32,
        index: usize,
        tx_hash: &str,
        tr: &super::source::Trace,
        tx_failed: bool,
    ) -> Result<()> {
        let t = &mut self.traces;
        t.block_number.append_value(n);
        t.transaction_index.append_value(pos);
        t.trace_index
            .append_value(i32::try_from(index).unwrap_or(i32::MAX));
        t.transaction_hash.append_value(tx_hash);
        let addr: Vec<String> = tr.trace_address.iter().map(|i| i.to_string()).collect();
        t.trace_address.append_value(addr.join("."));
        t.call_type.append_value(&tr.call_type);
        t.from_address.append_value(hex_addr(&tr.from));
        t.to_address.append_option(tr.to.map(|a| hex_addr(&a)));
        t.value
            .append_value(wei_of(tr.value, "trace value", n as u64)?);
        t.gas.append_option(tr.gas.map(|g| g as i64));
        t.gas_used.append_option(tr.gas_used.map(|g| g as i64));
        t.input.append_value(&tr.input);
        t.output.append_option(tr.output.as_ref());
        t.error.append_option(tr.error.as_deref());
        t.reverted.append_value(tr.reverted || tx_failed);
        self.counts.traces += 1;
        self.buffered += 1;
        Ok(())
    }

    fn push_log(
        &mut self,
        n: i64,
        pos: i32,
        tx_hash: &str,
        log: &alloy::rpc::types::Log,
        block: u64,
        ordinal: &mut i32,
    ) -> Result<()> {
        let log_index = log.log_index.ok_or_else(|| Error::BlockValue {
            block,
            what: format!("a log of {tx_hash} has no logIndex"),
        })?;
        let log_index = i32::try_from(log_index).unwrap_or(i32::MAX);
        let topics = log.topics();
        let l = &mut self.logs;
        l.block_number.append_value(n);
        l.transaction_index.append_value(pos);
        l.log_index.append_value(log_index);
        l.transaction_hash.append_value(tx_hash);
        l.address.append_value(hex_addr(&log.address()));
        for (i, col) in [&mut l.topic0, &mut l.topic1, &mut l.topic2, &mut l.topic3]
            .into_iter()
            .enumerate()
        {
            col.append_option(topics.get(i).map(hex_hash));
        }
        l.data.append_value(&log.data().data);
        self.counts.logs += 1;
        self.buffered += 1;

        if topics.first() != Some(&TRANSFER_TOPIC) {
            return Ok(());
        }
        let data = &log.data().data;
        let word_addr = |w: &B256| -> Option<Address> {
            w[..12]
                .iter()
                .all(|&b| b == 0)
                .then(|| Address::from_slice(&w[12..]))
        };
        let decoded = match (topics.len(), data.len()) {
            (3, 32) => word_addr(&topics[1])
                .zip(word_addr(&topics[2]))
                .map(|(f, t)| (f, t, U256::from_be_slice(data), "erc20")),
            (4, 0) => word_addr(&topics[1])
                .zip(word_addr(&topics[2]))
                .map(|(f, t)| (f, t, U256::from_be_bytes(topics[3].0), "erc721")),
            _ => None,
        };
        let Some((from, to, value, standard)) = decoded else {
            self.counts.malformed_transfer_logs += 1;
            return Ok(());
        };
        let token = log.address();
        let k = &mut self.tokens;
        k.block_number.append_value(n);
        k.transaction_index.append_value(pos);
        k.log_index.append_value(log_index);
        k.transaction_hash.append_value(tx_hash);
        k.token_address.append_value(hex_addr(&token));
        k.from_address.append_value(hex_addr(&from));
        k.to_address.append_value(hex_addr(&to));
        k.standard.append_value(standard);
        push_u256(&mut k.value, &mut k.value_string, value);
        self.counts.token_transfers += 1;
        self.buffered += 1;
        // Amounts only: an NFT's token id is not a quantity, and zero amounts move nothing.
        if standard == "erc20" && !value.is_zero() {
            self.transfer(
                n,
                pos,
                ordinal,
                tx_hash,
                "token",
                &hex_addr(&token),
                &from,
                &to,
                value,
            );
        }
        Ok(())
    }

    /// The buffered rows as one batch per table, in registry order (blocks, transactions,
    /// logs, token_transfers, traces, transfers); the builders start empty again.
    pub fn finish(&mut self) -> Result<[RecordBatch; 6]> {
        self.buffered = 0;
        let err = |table: &str| {
            let table = table.to_string();
            move |source| Error::Arrow { table, source }
        };
        Ok([
            self.blocks.finish().map_err(err("eth.blocks"))?,
            self.txs.finish().map_err(err("eth.transactions"))?,
            self.logs.finish().map_err(err("eth.logs"))?,
            self.tokens.finish().map_err(err("eth.token_transfers"))?,
            self.traces.finish().map_err(err("eth.traces"))?,
            self.transfers.finish().map_err(err("eth.transfers"))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transfer_topic_is_the_event_signature_hash() {
        assert_eq!(
            TRANSFER_TOPIC,
            alloy::primitives::keccak256("Transfer(address,address,uint256)")
        );
    }

    #[test]
    fn u256_amounts_past_76_digits_keep_their_string() {
        use arrow::array::Array;
        let mut t = eth::Transfers::new();
        push_u256(&mut t.value, &mut t.value_string, U256::MAX);
        push_u256(&mut t.value, &mut t.value_string, max_decimal76());
        let (v, s) = (t.value.finish(), t.value_string.finish());
        assert!(v.is_null(0) && !v.is_null(1));
        assert_eq!(s.value(0), U256::MAX.to_string());
        assert_eq!(s.value(1), "9".repeat(76));
    }

    /// Types 3 (blob) and 4 (set-code) with their fee and blob fields, from RPC JSON in
    /// the shape nodes send (the blob transaction is alloy's own test vector).
    #[test]
    fn blob_and_set_code_transactions_keep_their_fields() {
        use alloy::network::AnyRpcBlock;
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{Decimal128Type, Int32Type, Int64Type};

        let hash = "0x1732a5fe86d54098c431fa4fea34387b650e41dbff65ca554370028172fcdb6a";
        let blob = serde_json::json!({"blockHash": hash, "blockNumber": "0x3",
            "from": "0x7435ed30a8b4aeb0877cef0c6e8cffe834eb865f", "gas": "0x186a0",
            "gasPrice": "0x281d620e", "maxFeePerGas": "0x281d620e", "maxPriorityFeePerGas": "0x1",
            "maxFeePerBlobGas": "0x20000",
            "hash": "0xb0ebf0d8fca6724d5111d0be9ac61f0e7bf174208e0fafcb653f337c72465b83",
            "input": "0xdc4c8669df128318656d6974", "nonce": "0x8",
            "to": "0x7dcd17433742f4c0ca53122ab541d0ba67fc27df", "transactionIndex": "0x0",
            "value": "0x3", "type": "0x3", "accessList": [], "chainId": "0xc72dd9d5e883e",
            "blobVersionedHashes": ["0x015a4cab4911426699ed34483de6640cf55a568afc5c5edffdcbd8bcd4452f68"],
            "v": "0x0", "r": "0x478385a47075dd6ba56300b623038052a6e4bb03f8cfc53f367712f1c1d3e7de",
            "s": "0x2f79ed9b154b0af2c97ddfc1f4f76e6c17725713b6d44ea922ca4c6bbc20775c", "yParity": "0x0"});
        let set_code = serde_json::json!({"blockHash": hash, "blockNumber": "0x3",
            "from": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "gas": "0x30d40",
            "maxFeePerGas": "0x3b9aca00", "maxPriorityFeePerGas": "0x2",
            "hash": "0x9d0a1d2f0e4a4c4f8b1c1e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
            "input": "0x", "nonce": "0x1", "to": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "transactionIndex": "0x1", "value": "0x0", "type": "0x4", "accessList": [], "chainId": "0x7a69",
            "authorizationList": [{"chainId": "0x7a69", "address": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
                "nonce": "0x2", "yParity": "0x1",
                "r": "0x1c8a4f0d4f6a0c9a3e2b8f7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39",
                "s": "0x2d9b5e1e5f7b1d0b4f3c9e8d7c6b5a4a39281706f5e4d3c2b1a09f8e7d6c5b4a"}],
            "v": "0x1", "r": "0x3e2b8f7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a391c8a4f0d4f6a0c9a",
            "s": "0x4f3c9e8d7c6b5a4a39281706f5e4d3c2b1a09f8e7d6c5b4a2d9b5e1e5f7b1d0b", "yParity": "0x1"});
        let zero = format!("0x{}", "0".repeat(64));
        let block: AnyRpcBlock = serde_json::from_value(serde_json::json!({
            "hash": hash, "parentHash": zero, "sha3Uncles": zero,
            "miner": "0x0000000000000000000000000000000000000000", "stateRoot": zero,
            "transactionsRoot": zero, "receiptsRoot": zero,
            "logsBloom": format!("0x{}", "0".repeat(512)), "difficulty": "0x0", "number": "0x3",
            "gasLimit": "0x1c9c380", "gasUsed": "0x10000", "timestamp": "0x65000000",
            "extraData": "0x", "mixHash": zero, "nonce": "0x0000000000000000",
            "baseFeePerGas": "0x7", "blobGasUsed": "0x20000", "excessBlobGas": "0x0",
            "size": "0x400", "uncles": [], "transactions": [blob, set_code]
        }))
        .expect("a Cancun/Prague block decodes");
        let receipt = |tx: &str, i: u32, blob_gas: Option<&str>| {
            let mut r = serde_json::json!({"transactionHash": tx, "transactionIndex": format!("{i:#x}"),
                "blockHash": hash, "status": "0x1", "gasUsed": "0x5208", "cumulativeGasUsed": "0x5208",
                "effectiveGasPrice": "0x8", "logs": []});
            if let Some(g) = blob_gas {
                r["blobGasUsed"] = serde_json::json!(g);
                r["blobGasPrice"] = serde_json::json!("0x1");
            }
            serde_json::from_value::<super::super::source::Receipt>(r).expect("receipt")
        };
        let d = BlockData {
            receipts: vec![
                receipt(
                    "0xb0ebf0d8fca6724d5111d0be9ac61f0e7bf174208e0fafcb653f337c72465b83",
                    0,
                    Some("0x20000"),
                ),
                receipt(
                    "0x9d0a1d2f0e4a4c4f8b1c1e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
                    1,
                    None,
                ),
            ],
            block,
            traces: None,
        };
        let mut rows = EthRows::new();
        rows.push_block(&d).expect("push");
        let [blocks, txs, ..] = rows.finish().expect("finish");
        assert_eq!(
            blocks
                .column_by_name("blob_gas_used")
                .expect("col")
                .as_primitive::<Int64Type>()
                .value(0),
            0x20000
        );
        let col = |n: &str| txs.column_by_name(n).expect(n).clone();
        let ty = col("transaction_type");
        assert_eq!(ty.as_primitive::<Int32Type>().values(), &[3, 4]);
        let blob_fee = col("max_fee_per_blob_gas");
        let blob_fee = blob_fee.as_primitive::<Decimal128Type>();
        assert_eq!((blob_fee.value(0), blob_fee.is_null(1)), (0x20000, true));
        let tip = col("max_priority_fee_per_gas");
        assert_eq!(tip.as_primitive::<Decimal128Type>().values(), &[1, 2]);
        let max_fee = col("max_fee_per_gas");
        assert_eq!(
            max_fee.as_primitive::<Decimal128Type>().values(),
            &[0x281d620e, 0x3b9aca00]
        );
        let hashes = col("blob_versioned_hashes");
        let hashes = hashes.as_list::<i32>();
        assert_eq!(
            hashes.value(0).as_string::<i32>().value(0),
            "0x015a4cab4911426699ed34483de6640cf55a568afc5c5edffdcbd8bcd4452f68"
        );
        assert!(hashes.is_null(1));
        let used = col("blob_gas_used");
        assert_eq!(
            (used.as_primitive::<Int64Type>().value(0), used.is_null(1)),
            (0x20000, true)
        );
        assert_eq!(col("chain_id").as_primitive::<Int64Type>().value(1), 31337);
    }
}
