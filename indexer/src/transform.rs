//! Pure, synchronous transform: decoded Bitcoin blocks → Arrow column builders for
//! `btc.blocks`, `btc.transactions`, `btc.inputs`, `btc.outputs`, enriching each input from
//! the output it spends.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, GenericByteBuilder,
    Int32Builder, Int64Builder, ListBuilder, PrimitiveBuilder, RecordBatch, StringBuilder,
    TimestampSecondBuilder,
};
use arrow::datatypes::{ArrowPrimitiveType, ByteArrayType, DataType, Field};
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

/// Hands a builder's rows over as an array and leaves it sized for as many again (plus a
/// quarter): the next batch fills it without growing (no re-allocation and copy of the
/// value buffers along the way).
trait Take {
    fn take(&mut self) -> ArrayRef;
}

fn room(n: usize) -> usize {
    n + n / 4
}

impl<T: ArrowPrimitiveType> Take for PrimitiveBuilder<T> {
    fn take(&mut self) -> ArrayRef {
        let a = self.finish();
        *self =
            PrimitiveBuilder::with_capacity(room(a.len())).with_data_type(a.data_type().clone());
        Arc::new(a)
    }
}

impl<T: ByteArrayType> Take for GenericByteBuilder<T> {
    fn take(&mut self) -> ArrayRef {
        let a = self.finish();
        *self = GenericByteBuilder::with_capacity(room(a.len()), room(a.value_data().len()));
        Arc::new(a)
    }
}

impl Take for BooleanBuilder {
    fn take(&mut self) -> ArrayRef {
        let a = self.finish();
        *self = BooleanBuilder::with_capacity(room(a.len()));
        Arc::new(a)
    }
}

impl Take for ListBuilder<BinaryBuilder> {
    fn take(&mut self) -> ArrayRef {
        let a = self.finish();
        let (items, bytes) = a
            .values()
            .as_binary_opt::<i32>()
            .map_or((0, 0), |v| (v.len(), v.value_data().len()));
        let field = Arc::new(Field::new_list_field(DataType::Binary, false));
        *self = ListBuilder::with_capacity(
            BinaryBuilder::with_capacity(room(items), room(bytes)),
            room(a.len()),
        )
        .with_field(field);
        Arc::new(a)
    }
}

/// Column builders of the four Bitcoin tables.
pub struct BtcRows {
    // blocks
    b_height: Int64Builder,
    b_hash: StringBuilder,
    b_prev: StringBuilder,
    b_time: TimestampSecondBuilder,
    b_version: Int32Builder,
    b_merkle: StringBuilder,
    b_bits: Int64Builder,
    b_nonce: Int64Builder,
    b_tx_count: Int64Builder,
    b_size: Int64Builder,
    b_stripped: Int64Builder,
    b_weight: Int64Builder,
    b_first_tx: Int64Builder,
    // transactions
    t_height: Int64Builder,
    t_index: Int64Builder,
    t_pos: Int32Builder,
    t_txid: StringBuilder,
    t_wtxid: StringBuilder,
    t_version: Int32Builder,
    t_locktime: Int64Builder,
    t_coinbase: BooleanBuilder,
    t_in_count: Int64Builder,
    t_out_count: Int64Builder,
    t_in_value: Int64Builder,
    t_out_value: Int64Builder,
    t_fee: Int64Builder,
    t_size: Int64Builder,
    t_vsize: Int64Builder,
    t_weight: Int64Builder,
    // inputs
    i_height: Int64Builder,
    i_tx_index: Int64Builder,
    i_txid: StringBuilder,
    i_vin: Int32Builder,
    i_spent_txid: StringBuilder,
    i_spent_vout: Int32Builder,
    i_spent_tx_index: Int64Builder,
    i_spent_height: Int64Builder,
    i_value: Int64Builder,
    i_script_type: StringBuilder,
    i_address: StringBuilder,
    i_sequence: Int64Builder,
    i_script_sig: BinaryBuilder,
    i_witness: ListBuilder<BinaryBuilder>,
    // outputs
    o_height: Int64Builder,
    o_tx_index: Int64Builder,
    o_txid: StringBuilder,
    o_vout: Int32Builder,
    o_value: Int64Builder,
    o_script_type: StringBuilder,
    o_address: StringBuilder,
    o_script: BinaryBuilder,
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
        let witness = ListBuilder::new(BinaryBuilder::new())
            .with_field(Arc::new(Field::new_list_field(DataType::Binary, false)));
        Self {
            b_height: Int64Builder::new(),
            b_hash: StringBuilder::new(),
            b_prev: StringBuilder::new(),
            b_time: TimestampSecondBuilder::new().with_timezone("UTC"),
            b_version: Int32Builder::new(),
            b_merkle: StringBuilder::new(),
            b_bits: Int64Builder::new(),
            b_nonce: Int64Builder::new(),
            b_tx_count: Int64Builder::new(),
            b_size: Int64Builder::new(),
            b_stripped: Int64Builder::new(),
            b_weight: Int64Builder::new(),
            b_first_tx: Int64Builder::new(),
            t_height: Int64Builder::new(),
            t_index: Int64Builder::new(),
            t_pos: Int32Builder::new(),
            t_txid: StringBuilder::new(),
            t_wtxid: StringBuilder::new(),
            t_version: Int32Builder::new(),
            t_locktime: Int64Builder::new(),
            t_coinbase: BooleanBuilder::new(),
            t_in_count: Int64Builder::new(),
            t_out_count: Int64Builder::new(),
            t_in_value: Int64Builder::new(),
            t_out_value: Int64Builder::new(),
            t_fee: Int64Builder::new(),
            t_size: Int64Builder::new(),
            t_vsize: Int64Builder::new(),
            t_weight: Int64Builder::new(),
            i_height: Int64Builder::new(),
            i_tx_index: Int64Builder::new(),
            i_txid: StringBuilder::new(),
            i_vin: Int32Builder::new(),
            i_spent_txid: StringBuilder::new(),
            i_spent_vout: Int32Builder::new(),
            i_spent_tx_index: Int64Builder::new(),
            i_spent_height: Int64Builder::new(),
            i_value: Int64Builder::new(),
            i_script_type: StringBuilder::new(),
            i_address: StringBuilder::new(),
            i_sequence: Int64Builder::new(),
            i_script_sig: BinaryBuilder::new(),
            i_witness: witness,
            o_height: Int64Builder::new(),
            o_tx_index: Int64Builder::new(),
            o_txid: StringBuilder::new(),
            o_vout: Int32Builder::new(),
            o_value: Int64Builder::new(),
            o_script_type: StringBuilder::new(),
            o_address: StringBuilder::new(),
            o_script: BinaryBuilder::new(),
            counts: Counts::default(),
        }
    }

    /// Rows buffered per table: blocks, transactions, inputs, outputs.
    pub fn buffered_rows(&self) -> usize {
        self.b_height.len() + self.t_height.len() + self.i_height.len() + self.o_height.len()
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
        self.b_height.append_value(h);
        self.b_hash.append_value(p.hash_hex());
        self.b_prev
            .append_value(hex_str(&header.prev_blockhash.to_byte_array(), &mut hex));
        self.b_time.append_value(i64::from(header.time));
        self.b_version.append_value(header.version.to_consensus());
        self.b_merkle
            .append_value(hex_str(&header.merkle_root.to_byte_array(), &mut hex));
        self.b_bits
            .append_value(i64::from(header.bits.to_consensus()));
        self.b_nonce.append_value(i64::from(header.nonce));
        self.b_tx_count.append_value(int(block.txdata.len()));
        self.b_size.append_value(int(p.size));
        // stripped size: weight = 3 * stripped + total.
        self.b_stripped
            .append_value(height_i64((p.weight - p.size as u64) / 3));
        self.b_weight.append_value(height_i64(p.weight));
        self.b_first_tx.append_value(height_i64(first_tx_index));
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
                self.i_height.append_value(h);
                self.i_tx_index.append_value(ti);
                self.i_txid.append_value(txid_str);
                self.i_vin
                    .append_value(i32::try_from(vin).unwrap_or(i32::MAX));
                self.i_sequence.append_value(i64::from(input.sequence.0));
                self.i_script_sig.append_value(input.script_sig.as_bytes());
                for item in input.witness.iter() {
                    self.i_witness.values().append_value(item);
                }
                self.i_witness.append(true);
                self.counts.inputs += 1;
                if is_coinbase {
                    self.i_spent_txid.append_null();
                    self.i_spent_vout.append_null();
                    self.i_spent_tx_index.append_null();
                    self.i_spent_height.append_null();
                    self.i_value.append_null();
                    self.i_script_type.append_null();
                    self.i_address.append_null();
                    continue;
                }
                let prev = input.previous_output;
                self.i_spent_txid
                    .append_value(std::str::from_utf8(spent_hex).expect("ascii"));
                self.i_spent_vout
                    .append_value(i32::try_from(prev.vout).unwrap_or(i32::MAX));
                match utxo.spend(&(prev.txid.to_byte_array(), prev.vout))? {
                    Some(u) => {
                        self.i_spent_tx_index.append_value(height_i64(u.tx_index));
                        self.i_spent_height.append_value(i64::from(u.height));
                        self.i_value.append_value(sats(u.value));
                        self.i_script_type.append_value(u.kind.as_str());
                        self.i_address.append_option(u.address.as_deref());
                        input_value = input_value.map(|v| v + u.value);
                    }
                    None => {
                        self.i_spent_tx_index.append_null();
                        self.i_spent_height.append_null();
                        self.i_value.append_null();
                        self.i_script_type.append_null();
                        self.i_address.append_null();
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
                self.o_height.append_value(h);
                self.o_tx_index.append_value(ti);
                self.o_txid.append_value(txid_str);
                self.o_vout
                    .append_value(i32::try_from(vout).unwrap_or(i32::MAX));
                self.o_value.append_value(sats(value));
                self.o_script_type.append_value(kind.as_str());
                self.o_address.append_option(address.as_deref());
                self.o_script.append_value(out.script_pubkey.as_bytes());
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
            self.t_height.append_value(h);
            self.t_index.append_value(ti);
            self.t_pos
                .append_value(i32::try_from(pos).unwrap_or(i32::MAX));
            self.t_txid.append_value(txid_str);
            self.t_wtxid
                .append_value(std::str::from_utf8(&facts.wtxid_hex).expect("ascii"));
            self.t_version.append_value(tx.version.0);
            self.t_locktime
                .append_value(i64::from(tx.lock_time.to_consensus_u32()));
            self.t_coinbase.append_value(is_coinbase);
            self.t_in_count.append_value(int(tx.input.len()));
            self.t_out_count.append_value(int(tx.output.len()));
            self.t_in_value.append_option(input_value.map(sats));
            self.t_out_value.append_value(sats(output_value));
            let fee = if is_coinbase {
                Some(0)
            } else {
                input_value.map(|i| i64::try_from(i as i128 - output_value as i128).unwrap_or(0))
            };
            self.t_fee.append_option(fee);
            self.t_size.append_value(int(facts.size));
            self.t_vsize.append_value(int(facts.vsize));
            self.t_weight.append_value(height_i64(facts.weight));
            self.counts.transactions += 1;
        }
        utxo.flush()
    }

    /// Takes the buffered rows as one batch per table, in registry order (blocks,
    /// transactions, inputs, outputs).
    pub fn finish(&mut self) -> Result<[RecordBatch; 4]> {
        fn batch(
            name: &str,
            schema: arrow::datatypes::SchemaRef,
            cols: Vec<ArrayRef>,
        ) -> Result<RecordBatch> {
            RecordBatch::try_new(schema, cols).map_err(|source| Error::Arrow {
                table: name.to_string(),
                source,
            })
        }
        let blocks = batch(
            "btc.blocks",
            btc::blocks_schema(),
            vec![
                Arc::new(self.b_height.finish()),
                Arc::new(self.b_hash.finish()),
                Arc::new(self.b_prev.finish()),
                Arc::new(self.b_time.finish()),
                Arc::new(self.b_version.finish()),
                Arc::new(self.b_merkle.finish()),
                Arc::new(self.b_bits.finish()),
                Arc::new(self.b_nonce.finish()),
                Arc::new(self.b_tx_count.finish()),
                Arc::new(self.b_size.finish()),
                Arc::new(self.b_stripped.finish()),
                Arc::new(self.b_weight.finish()),
                Arc::new(self.b_first_tx.finish()),
            ],
        )?;
        let txs = batch(
            "btc.transactions",
            btc::transactions_schema(),
            vec![
                self.t_height.take(),
                self.t_index.take(),
                self.t_pos.take(),
                self.t_txid.take(),
                self.t_wtxid.take(),
                self.t_version.take(),
                self.t_locktime.take(),
                self.t_coinbase.take(),
                self.t_in_count.take(),
                self.t_out_count.take(),
                self.t_in_value.take(),
                self.t_out_value.take(),
                self.t_fee.take(),
                self.t_size.take(),
                self.t_vsize.take(),
                self.t_weight.take(),
            ],
        )?;
        let inputs = batch(
            "btc.inputs",
            btc::inputs_schema(),
            vec![
                self.i_height.take(),
                self.i_tx_index.take(),
                self.i_txid.take(),
                self.i_vin.take(),
                self.i_spent_txid.take(),
                self.i_spent_vout.take(),
                self.i_spent_tx_index.take(),
                self.i_spent_height.take(),
                self.i_value.take(),
                self.i_script_type.take(),
                self.i_address.take(),
                self.i_sequence.take(),
                self.i_script_sig.take(),
                self.i_witness.take(),
            ],
        )?;
        let outputs = batch(
            "btc.outputs",
            btc::outputs_schema(),
            vec![
                self.o_height.take(),
                self.o_tx_index.take(),
                self.o_txid.take(),
                self.o_vout.take(),
                self.o_value.take(),
                self.o_script_type.take(),
                self.o_address.take(),
                self.o_script.take(),
            ],
        )?;
        Ok([blocks, txs, inputs, outputs])
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
