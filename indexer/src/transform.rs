//! Pure, synchronous transform: decoded Bitcoin blocks → Arrow column builders for
//! `btc.blocks`, `btc.transactions`, `btc.inputs`, `btc.outputs`, enriching each input from
//! the output it spends.

use arrow::array::{ArrayBuilder, RecordBatch};
use bitcoin::hashes::Hash;
use bitcoin::{Block, Network};
use ferret_schemas::btc;

use crate::source::bitcoin::{ScriptKind, TxHashes, classify};
use crate::utxo::{Utxo, UtxoStore};
use crate::{Error, Result};

/// Lowercase hex of a hash as Bitcoin displays it (byte-reversed).
pub fn display_hex(bytes: &[u8; 32], out: &mut [u8; 64]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().rev().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

fn hex_str<'a>(bytes: &[u8; 32], buf: &'a mut [u8; 64]) -> &'a str {
    display_hex(bytes, buf);
    std::str::from_utf8(buf).expect("hex digits are ascii")
}

/// Counters of what the transform produced: the same shape as the manifest's totals.
pub type Counts = ferret_schemas::manifest::Totals;

/// Per-transaction facts computed off the ordered path.
struct PreparedTx {
    txid: [u8; 32],
    txid_hex: [u8; 64],
    wtxid_hex: [u8; 64],
    size: usize,
    vsize: usize,
    weight: u64,
}

/// A decoded, verified block with everything the transform needs that does not depend on
/// other blocks already computed: hex ids, sizes and weights, every output script
/// classified with its address encoded. Built on the reader threads, in parallel, so that
/// only the spent-output look-ups and the column appends run in height order.
pub struct PreparedBlock {
    /// Height in the indexed chain.
    pub height: u64,
    /// Bytes of the blk record (8-byte header + block).
    pub record_len: u64,
    /// The block itself.
    pub block: Block,
    hash_hex: [u8; 64],
    size: usize,
    weight: u64,
    txs: Vec<PreparedTx>,
    /// Every output of the block in order: its script type and address.
    outputs: Vec<(ScriptKind, Option<Box<str>>)>,
    /// Every input of the block in order: the hex txid of the output it spends (unused for
    /// the coinbase's).
    spent_hex: Vec<[u8; 64]>,
}

impl PreparedBlock {
    /// Prepares `block` (verified, with `hashes` from
    /// [`crate::source::bitcoin::hash_and_verify`]) at `height` on `network`.
    pub fn new(
        block: Block,
        hashes: &TxHashes,
        height: u64,
        record_len: u64,
        network: Network,
    ) -> Self {
        let mut hash_hex = [0u8; 64];
        display_hex(&block.block_hash().to_byte_array(), &mut hash_hex);
        let txs = hashes
            .txids
            .iter()
            .zip(&hashes.wtxids)
            .zip(&hashes.sizes)
            .map(|((txid, wtxid), sizes)| {
                let txid = txid.to_byte_array();
                let mut txid_hex = [0u8; 64];
                display_hex(&txid, &mut txid_hex);
                let mut wtxid_hex = [0u8; 64];
                display_hex(&wtxid.to_byte_array(), &mut wtxid_hex);
                let size = sizes.total;
                let weight = sizes.weight();
                PreparedTx {
                    txid,
                    txid_hex,
                    wtxid_hex,
                    size,
                    // vsize = ceil(weight / 4), as Transaction::vsize computes it.
                    vsize: usize::try_from(weight.div_ceil(4)).unwrap_or(usize::MAX),
                    weight,
                }
            })
            .collect::<Vec<_>>();
        let outputs = block
            .txdata
            .iter()
            .flat_map(|tx| &tx.output)
            .map(|o| {
                let (kind, address) = classify(&o.script_pubkey, network);
                (kind, address.map(String::into_boxed_str))
            })
            .collect();
        let spent_hex = block
            .txdata
            .iter()
            .flat_map(|tx| &tx.input)
            .map(|i| {
                let mut hex = [0u8; 64];
                display_hex(&i.previous_output.txid.to_byte_array(), &mut hex);
                hex
            })
            .collect();
        // A block's size and weight are its header, tx count and transactions'.
        let header_and_count = 80 + bitcoin::VarInt::from(block.txdata.len()).size();
        let size = header_and_count + txs.iter().map(|t| t.size).sum::<usize>();
        let weight = 4 * header_and_count as u64 + txs.iter().map(|t| t.weight).sum::<u64>();
        Self {
            height,
            record_len,
            block,
            hash_hex,
            size,
            weight,
            txs,
            outputs,
            spent_hex,
        }
    }

    /// The block hash as Bitcoin displays it.
    pub fn hash_hex(&self) -> &str {
        std::str::from_utf8(&self.hash_hex).expect("hex digits are ascii")
    }
}

/// Column builders of the four Bitcoin tables, one dataset each
/// ([`ferret_schemas::btc`]): columns are filled by name, so they cannot drift from the
/// schema.
pub struct BtcRows {
    blocks: btc::Blocks,
    txs: btc::Transactions,
    inputs: btc::Inputs,
    outputs: btc::Outputs,
    /// What has been pushed since the last [`BtcRows::finish`].
    pub counts: Counts,
}

fn sats(v: u64) -> i64 {
    // Every bitcoin amount is below 21e14 sats; larger values are impossible in valid blocks
    // and saturate rather than wrap.
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn int(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn height_i64(h: u64) -> i64 {
    i64::try_from(h).unwrap_or(i64::MAX)
}

impl Default for BtcRows {
    fn default() -> Self {
        Self::new()
    }
}

impl BtcRows {
    /// Empty builders.
    pub fn new() -> Self {
        Self {
            blocks: btc::Blocks::new(),
            txs: btc::Transactions::new(),
            inputs: btc::Inputs::new(),
            outputs: btc::Outputs::new(),
            counts: Counts::default(),
        }
    }

    /// Rows buffered per table: blocks, transactions, inputs, outputs.
    pub fn buffered_rows(&self) -> usize {
        self.blocks.height.len()
            + self.txs.height.len()
            + self.inputs.height.len()
            + self.outputs.height.len()
    }

    /// Appends one prepared block whose first transaction has global index
    /// `first_tx_index`. Spends and creates outputs in `utxo` as it goes: this is the part
    /// of the transform that must run in height order.
    pub fn push_block(
        &mut self,
        p: PreparedBlock,
        first_tx_index: u64,
        utxo: &mut UtxoStore,
    ) -> Result<()> {
        let mut hex = [0u8; 64];
        let h = height_i64(p.height);
        let block = &p.block;
        let header = &block.header;
        self.blocks.height.append_value(h);
        self.blocks.hash.append_value(p.hash_hex());
        self.blocks
            .prev_hash
            .append_value(hex_str(&header.prev_blockhash.to_byte_array(), &mut hex));
        self.blocks.time.append_value(i64::from(header.time));
        self.blocks
            .version
            .append_value(header.version.to_consensus());
        self.blocks
            .merkle_root
            .append_value(hex_str(&header.merkle_root.to_byte_array(), &mut hex));
        self.blocks
            .bits
            .append_value(i64::from(header.bits.to_consensus()));
        self.blocks.nonce.append_value(i64::from(header.nonce));
        self.blocks.tx_count.append_value(int(block.txdata.len()));
        self.blocks.size.append_value(int(p.size));
        // stripped size: weight = 3 * stripped + total.
        self.blocks
            .stripped_size
            .append_value(height_i64((p.weight - p.size as u64) / 3));
        self.blocks.weight.append_value(height_i64(p.weight));
        self.blocks
            .first_tx_index
            .append_value(height_i64(first_tx_index));
        self.counts.blocks += 1;
        let height32 = u32::try_from(p.height).unwrap_or(u32::MAX);

        let mut outputs = p.outputs.into_iter();
        let mut spent = p.spent_hex.iter();
        for (pos, (tx, facts)) in block.txdata.iter().zip(&p.txs).enumerate() {
            let tx_index = first_tx_index + pos as u64;
            let txid = facts.txid;
            let txid_str = std::str::from_utf8(&facts.txid_hex).expect("ascii");
            let is_coinbase = pos == 0 && tx.is_coinbase();
            let ti = height_i64(tx_index);

            let mut input_value: Option<u64> = Some(0);
            for (vin, input) in tx.input.iter().enumerate() {
                let spent_hex = spent.next().ok_or_else(|| Error::Internal {
                    what: format!("prepared block {} lacks an input", p.height),
                })?;
                self.inputs.height.append_value(h);
                self.inputs.tx_index.append_value(ti);
                self.inputs.txid.append_value(txid_str);
                self.inputs
                    .vin
                    .append_value(i32::try_from(vin).unwrap_or(i32::MAX));
                self.inputs
                    .sequence
                    .append_value(i64::from(input.sequence.0));
                self.inputs
                    .script_sig
                    .append_value(input.script_sig.as_bytes());
                for item in input.witness.iter() {
                    self.inputs.witness.values().append_value(item);
                }
                self.inputs.witness.append(true);
                self.counts.inputs += 1;
                if is_coinbase {
                    self.inputs.spent_txid.append_null();
                    self.inputs.spent_vout.append_null();
                    self.inputs.spent_tx_index.append_null();
                    self.inputs.spent_height.append_null();
                    self.inputs.value.append_null();
                    self.inputs.script_type.append_null();
                    self.inputs.address.append_null();
                    continue;
                }
                let prev = input.previous_output;
                self.inputs
                    .spent_txid
                    .append_value(std::str::from_utf8(spent_hex).expect("ascii"));
                self.inputs
                    .spent_vout
                    .append_value(i32::try_from(prev.vout).unwrap_or(i32::MAX));
                match utxo.spend(&(prev.txid.to_byte_array(), prev.vout))? {
                    Some(u) => {
                        self.inputs
                            .spent_tx_index
                            .append_value(height_i64(u.tx_index));
                        self.inputs.spent_height.append_value(i64::from(u.height));
                        self.inputs.value.append_value(sats(u.value));
                        self.inputs.script_type.append_value(u.kind.as_str());
                        self.inputs.address.append_option(u.address.as_deref());
                        input_value = input_value.map(|v| v + u.value);
                    }
                    None => {
                        self.inputs.spent_tx_index.append_null();
                        self.inputs.spent_height.append_null();
                        self.inputs.value.append_null();
                        self.inputs.script_type.append_null();
                        self.inputs.address.append_null();
                        input_value = None;
                        self.counts.unresolved_inputs += 1;
                    }
                }
            }

            let mut output_value = 0u64;
            for (vout, out) in tx.output.iter().enumerate() {
                let value = out.value.to_sat();
                output_value += value;
                let (kind, address) = outputs.next().ok_or_else(|| Error::Internal {
                    what: format!("prepared block {} lacks an output", p.height),
                })?;
                self.outputs.height.append_value(h);
                self.outputs.tx_index.append_value(ti);
                self.outputs.txid.append_value(txid_str);
                self.outputs
                    .vout
                    .append_value(i32::try_from(vout).unwrap_or(i32::MAX));
                self.outputs.value.append_value(sats(value));
                self.outputs.script_type.append_value(kind.as_str());
                self.outputs.address.append_option(address.as_deref());
                self.outputs
                    .script
                    .append_value(out.script_pubkey.as_bytes());
                self.counts.outputs += 1;
                if kind != ScriptKind::Nulldata {
                    let key = (txid, u32::try_from(vout).unwrap_or(u32::MAX));
                    utxo.insert(
                        key,
                        Utxo {
                            value,
                            tx_index,
                            height: height32,
                            kind,
                            address,
                        },
                    )?;
                }
            }

            let input_value = if is_coinbase { Some(0) } else { input_value };
            self.txs.height.append_value(h);
            self.txs.tx_index.append_value(ti);
            self.txs
                .block_position
                .append_value(i32::try_from(pos).unwrap_or(i32::MAX));
            self.txs.txid.append_value(txid_str);
            self.txs
                .wtxid
                .append_value(std::str::from_utf8(&facts.wtxid_hex).expect("ascii"));
            self.txs.version.append_value(tx.version.0);
            self.txs
                .lock_time
                .append_value(i64::from(tx.lock_time.to_consensus_u32()));
            self.txs.is_coinbase.append_value(is_coinbase);
            self.txs.input_count.append_value(int(tx.input.len()));
            self.txs.output_count.append_value(int(tx.output.len()));
            self.txs.input_value.append_option(input_value.map(sats));
            self.txs.output_value.append_value(sats(output_value));
            let fee = if is_coinbase {
                Some(0)
            } else {
                input_value.map(|i| i64::try_from(i as i128 - output_value as i128).unwrap_or(0))
            };
            self.txs.fee.append_option(fee);
            self.txs.size.append_value(int(facts.size));
            self.txs.vsize.append_value(int(facts.vsize));
            self.txs.weight.append_value(height_i64(facts.weight));
            self.counts.transactions += 1;
        }
        utxo.flush()
    }

    /// Takes the buffered rows as one batch per table, in registry order (blocks,
    /// transactions, inputs, outputs).
    pub fn finish(&mut self) -> Result<[RecordBatch; 4]> {
        let err = |table: &str| {
            let table = table.to_string();
            move |source| Error::Arrow { table, source }
        };
        Ok([
            self.blocks.finish().map_err(err("btc.blocks"))?,
            self.txs.finish().map_err(err("btc.transactions"))?,
            self.inputs.finish().map_err(err("btc.inputs"))?,
            self.outputs.finish().map_err(err("btc.outputs"))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_rows() {
        let block = bitcoin::constants::genesis_block(Network::Bitcoin);
        let mut rows = BtcRows::new();
        let mut utxo = UtxoStore::new(1 << 20);
        let hashes = crate::source::bitcoin::hash_and_verify(&block).expect("valid");
        let size = block.total_size();
        let weight = block.weight().to_wu();
        let prepared = PreparedBlock::new(block, &hashes, 0, size as u64 + 8, Network::Bitcoin);
        assert_eq!((prepared.size, prepared.weight), (size, weight));
        rows.push_block(prepared, 0, &mut utxo).expect("push");
        let [b, t, i, o] = rows.finish().expect("finish");
        assert_eq!(
            (b.num_rows(), t.num_rows(), i.num_rows(), o.num_rows()),
            (1, 1, 1, 1)
        );
        let hash = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("utf8");
        assert_eq!(
            hash.value(0),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
        let txid = t
            .column(3)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("utf8");
        assert_eq!(
            txid.value(0),
            "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
        );
        assert_eq!(utxo.len(), 1);
        assert_eq!(rows.counts.transactions, 1, "finish keeps the counts");
    }
}
