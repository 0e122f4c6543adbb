//! Pure, synchronous transform: decoded Bitcoin blocks → Arrow column builders for
//! `btc.blocks`, `btc.transactions`, `btc.inputs`, `btc.outputs`, enriching each input from
//! the output it spends.

use arrow::array::{ArrayBuilder, RecordBatch};
use bitcoin::hashes::Hash;
use bitcoin::{Block, Network};
use ferret_schemas::btc;

use crate::addrs::AddressStore;
use crate::source::bitcoin::{ScriptKind, TxHashes, classify};
use crate::utxo::{NO_ID, Utxo, UtxoStore};
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

/// The next dense ids to hand out, in chain order: `tx_index`, `output_id` (a prefix sum
/// of output counts) and `address_id` (first-seen order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextIds {
    pub tx_index: u64,
    pub output_id: u64,
    pub address_id: u64,
}

impl NextIds {
    /// The ids after what `m` committed.
    pub fn of(m: &ferret_schemas::Manifest) -> Self {
        Self {
            tx_index: m.next_tx_index,
            output_id: m.next_output_id,
            address_id: m.next_address_id,
        }
    }

    /// Records these ids in `m`.
    pub fn store(&self, m: &mut ferret_schemas::Manifest) {
        m.next_tx_index = self.tx_index;
        m.next_output_id = self.output_id;
        m.next_address_id = self.address_id;
    }
}

/// The state the ordered part of the transform reads and changes: the spent-output store,
/// the address ids and the next ids.
pub struct ChainState<'a> {
    pub utxo: &'a mut UtxoStore,
    pub addresses: &'a mut AddressStore,
    pub next: &'a mut NextIds,
}

/// One row of `btc.spends`.
#[derive(Clone, Copy, Debug)]
struct SpendEdge {
    height: u64,
    tx_index: u64,
    vin: u32,
    spent_tx_index: u64,
    spent_output_id: u64,
    value: u64,
    input_total: u64,
    address_id: u64,
}

/// Column builders of the Bitcoin tables, one dataset each
/// ([`ferret_schemas::btc`]): columns are filled by name, so they cannot drift from the
/// schema.
pub struct BtcRows {
    blocks: btc::Blocks,
    txs: btc::Transactions,
    inputs: btc::Inputs,
    outputs: btc::Outputs,
    addresses: btc::Addresses,
    /// Spend edges of the current commit chunk: written sorted, at its end
    /// ([`BtcRows::finish_spends`]).
    spends: Vec<SpendEdge>,
    collect_spends: bool,
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
            addresses: btc::Addresses::new(),
            spends: Vec::new(),
            collect_spends: true,
            counts: Counts::default(),
        }
    }

    /// Collects no spend edges (benchmarks measuring what the graph costs).
    #[doc(hidden)]
    pub fn without_spends(mut self) -> Self {
        self.collect_spends = false;
        self
    }

    /// Rows buffered, all tables together.
    pub fn buffered_rows(&self) -> usize {
        self.blocks.height.len()
            + self.txs.height.len()
            + self.inputs.height.len()
            + self.outputs.height.len()
            + self.addresses.address_id.len()
    }

    /// Appends one prepared block, its transactions numbered from `st.next`. Spends and
    /// creates outputs in the spent-output store and gives new addresses their ids as it
    /// goes: this is the part of the transform that must run in height order.
    pub fn push_block(&mut self, p: PreparedBlock, st: &mut ChainState<'_>) -> Result<()> {
        let first_tx_index = st.next.tx_index;
        let utxo = &mut *st.utxo;
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
            let first_output_id = st.next.output_id;
            let txid = facts.txid;
            let txid_str = std::str::from_utf8(&facts.txid_hex).expect("ascii");
            let is_coinbase = pos == 0 && tx.is_coinbase();
            let ti = height_i64(tx_index);

            let mut input_value: Option<u64> = Some(0);
            let first_edge = self.spends.len();
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
                    self.inputs.spent_output_id.append_null();
                    self.inputs.address_id.append_null();
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
                        self.inputs
                            .spent_output_id
                            .append_value(height_i64(u.output_id));
                        self.inputs
                            .address_id
                            .append_option(u.address_id().map(height_i64));
                        if self.collect_spends {
                            self.spends.push(SpendEdge {
                                height: p.height,
                                tx_index,
                                vin: u32::try_from(vin).unwrap_or(u32::MAX),
                                spent_tx_index: u.tx_index,
                                spent_output_id: u.output_id,
                                value: u.value,
                                input_total: 0,
                                address_id: u.address_id,
                            });
                        }
                        input_value = input_value.map(|v| v + u.value);
                    }
                    None => {
                        self.inputs.spent_tx_index.append_null();
                        self.inputs.spent_height.append_null();
                        self.inputs.value.append_null();
                        self.inputs.script_type.append_null();
                        self.inputs.address.append_null();
                        self.inputs.spent_output_id.append_null();
                        self.inputs.address_id.append_null();
                        input_value = None;
                        self.counts.unresolved_inputs += 1;
                    }
                }
            }

            let edges = &mut self.spends[first_edge..];
            let input_total = edges.iter().map(|e| e.value).sum::<u64>();
            for e in edges {
                e.input_total = input_total;
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
                let output_id = st.next.output_id;
                st.next.output_id += 1;
                self.outputs.output_id.append_value(height_i64(output_id));
                let address_id = match address.as_deref() {
                    Some(a) => {
                        let (id, new) = st.addresses.get_or_assign(a, &mut st.next.address_id)?;
                        if new {
                            let r = &mut self.addresses;
                            r.address.append_value(a);
                            r.address_id.append_value(height_i64(id));
                            r.first_seen_height.append_value(h);
                            r.first_tx_index.append_value(ti);
                            r.first_output_id.append_value(height_i64(output_id));
                            r.script_type.append_value(kind.as_str());
                            self.counts.addresses += 1;
                        }
                        id
                    }
                    None => NO_ID,
                };
                self.outputs
                    .address_id
                    .append_option((address_id != NO_ID).then(|| height_i64(address_id)));
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
                            output_id,
                            address_id,
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
            self.txs
                .first_output_id
                .append_value(height_i64(first_output_id));
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
        st.next.tx_index = first_tx_index + block.txdata.len() as u64;
        utxo.flush()
    }

    /// Spend edges buffered (until [`BtcRows::finish_spends`]).
    pub fn buffered_spends(&self) -> usize {
        self.spends.len()
    }

    /// Takes the chunk's spend edges as `btc.spends` rows, sorted by (destination block,
    /// source block, transaction, input) for blocks of 2^`block_bits` transactions.
    pub fn finish_spends(&mut self, block_bits: u32) -> Result<RecordBatch> {
        let block = |tx: u64| i32::try_from(tx >> block_bits).unwrap_or(i32::MAX);
        let mut edges = std::mem::take(&mut self.spends);
        edges.sort_unstable_by_key(|e| {
            (
                block(e.tx_index),
                block(e.spent_tx_index),
                e.tx_index,
                e.vin,
            )
        });
        let mut b = btc::Spends::new();
        for e in &edges {
            b.dst_block.append_value(block(e.tx_index));
            b.src_block.append_value(block(e.spent_tx_index));
            b.height.append_value(height_i64(e.height));
            b.tx_index.append_value(height_i64(e.tx_index));
            b.vin.append_value(i32::try_from(e.vin).unwrap_or(i32::MAX));
            b.spent_tx_index.append_value(height_i64(e.spent_tx_index));
            b.spent_output_id
                .append_value(height_i64(e.spent_output_id));
            b.value.append_value(sats(e.value));
            b.input_total.append_value(sats(e.input_total));
            b.address_id
                .append_option((e.address_id != NO_ID).then(|| height_i64(e.address_id)));
        }
        b.finish().map_err(|source| Error::Arrow {
            table: "btc.spends".into(),
            source,
        })
    }

    /// Takes the buffered rows as one batch per table, in registry order (blocks,
    /// transactions, inputs, outputs, addresses); spend edges wait for
    /// [`BtcRows::finish_spends`].
    pub fn finish(&mut self) -> Result<[RecordBatch; 5]> {
        let err = |table: &str| {
            let table = table.to_string();
            move |source| Error::Arrow { table, source }
        };
        Ok([
            self.blocks.finish().map_err(err("btc.blocks"))?,
            self.txs.finish().map_err(err("btc.transactions"))?,
            self.inputs.finish().map_err(err("btc.inputs"))?,
            self.outputs.finish().map_err(err("btc.outputs"))?,
            self.addresses.finish().map_err(err("btc.addresses"))?,
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
        let mut addresses = AddressStore::new(1 << 20);
        let mut next = NextIds::default();
        let hashes = crate::source::bitcoin::hash_and_verify(&block).expect("valid");
        let size = block.total_size();
        let weight = block.weight().to_wu();
        let prepared = PreparedBlock::new(block, &hashes, 0, size as u64 + 8, Network::Bitcoin);
        assert_eq!((prepared.size, prepared.weight), (size, weight));
        let mut st = ChainState {
            utxo: &mut utxo,
            addresses: &mut addresses,
            next: &mut next,
        };
        rows.push_block(prepared, &mut st).expect("push");
        let [b, t, i, o, a] = rows.finish().expect("finish");
        assert_eq!(
            (
                b.num_rows(),
                t.num_rows(),
                i.num_rows(),
                o.num_rows(),
                a.num_rows()
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(
            next,
            NextIds {
                tx_index: 1,
                output_id: 1,
                address_id: 1
            }
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
