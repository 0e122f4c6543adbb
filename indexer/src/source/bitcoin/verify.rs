//! Hashing a block's transactions once and checking its merkle root and witness
//! commitment from those hashes (the transform reuses them for `txid` and `wtxid`).

use bitcoin::hashes::{Hash, HashEngine};
use bitcoin::{Block, Txid, WitnessCommitment, WitnessMerkleNode, Wtxid, merkle_tree};

/// The transaction hashes of a block, in block order, with each transaction's serialized
/// sizes: without witness data (`base`) and with it (`total`).
#[derive(Clone, Debug, Default)]
pub struct TxHashes {
    pub txids: Vec<Txid>,
    pub wtxids: Vec<Wtxid>,
    pub sizes: Vec<TxSize>,
}

/// A transaction's serialized sizes; its weight is `3 * base + total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxSize {
    pub base: usize,
    pub total: usize,
}

impl TxSize {
    /// Weight units (BIP141).
    pub fn weight(&self) -> u64 {
        3 * self.base as u64 + self.total as u64
    }
}

/// What failed a block's check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFault {
    MerkleRoot,
    WitnessCommitment,
}

const COMMITMENT_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// Hashes every transaction once and checks the header's merkle root and, where the block
/// has witness data, the coinbase's witness commitment (BIP141). Re-serializes each
/// transaction to hash it; [`hash_and_verify_raw`] hashes the block's own bytes instead.
pub fn hash_and_verify(block: &Block) -> Result<TxHashes, BlockFault> {
    let mut h = TxHashes::with_capacity(block.txdata.len());
    for tx in &block.txdata {
        let txid = tx.compute_txid();
        let has_witness = tx.input.iter().any(|i| !i.witness.is_empty());
        // Without witness data the wtxid is the txid: skip the second hash.
        h.wtxids.push(if has_witness {
            tx.compute_wtxid()
        } else {
            Wtxid::from_raw_hash(txid.to_raw_hash())
        });
        h.txids.push(txid);
        h.sizes.push(TxSize {
            base: tx.base_size(),
            total: tx.total_size(),
        });
    }
    h.verify(block)?;
    Ok(h)
}

/// [`hash_and_verify`] from `raw`, the bytes `block` was decoded from: each transaction is
/// hashed where it lies in them (a segwit transaction's txid from its version, inputs and
/// outputs, and lock time, skipping the marker and the witnesses) instead of being
/// serialized again. Falls back to [`hash_and_verify`] if the sizes do not add up to `raw`.
/// A wrong hash cannot slip through: the merkle root covers every txid and the witness
/// commitment every wtxid.
pub fn hash_and_verify_raw(block: &Block, raw: &[u8]) -> Result<TxHashes, BlockFault> {
    let mut h = TxHashes::with_capacity(block.txdata.len());
    let mut at = 80 + bitcoin::VarInt::from(block.txdata.len()).size();
    for tx in &block.txdata {
        let size = TxSize {
            base: tx.base_size(),
            total: tx.total_size(),
        };
        let Some(bytes) = raw.get(at..at + size.total) else {
            return hash_and_verify(block);
        };
        let Some(txid) = raw_txid(bytes, size) else {
            return hash_and_verify(block);
        };
        h.txids.push(txid);
        h.wtxids.push(if size.total == size.base {
            Wtxid::from_raw_hash(txid.to_raw_hash())
        } else {
            Wtxid::hash(bytes)
        });
        h.sizes.push(size);
        at += size.total;
    }
    if at != raw.len() {
        return hash_and_verify(block);
    }
    h.verify(block)?;
    Ok(h)
}

/// The txid of the transaction serialized as `bytes` (`size.total` of them): the hash of
/// all of them for a legacy serialization, of its version, inputs and outputs, and lock
/// time for a segwit one (version (4) | marker, flag (2) | inputs, outputs | witnesses |
/// lock time (4)). None when the sizes cannot describe `bytes`.
pub fn raw_txid(bytes: &[u8], size: TxSize) -> Option<Txid> {
    if bytes.len() != size.total {
        return None;
    }
    if size.total == size.base {
        return Some(Txid::hash(bytes));
    }
    if size.base < 8 || size.total < size.base + 2 {
        return None;
    }
    let mut e = Txid::engine();
    e.input(&bytes[..4]);
    e.input(&bytes[6..6 + size.base - 8]);
    e.input(&bytes[size.total - 4..]);
    Some(Txid::from_engine(e))
}

impl TxHashes {
    fn with_capacity(n: usize) -> Self {
        Self {
            txids: Vec::with_capacity(n),
            wtxids: Vec::with_capacity(n),
            sizes: Vec::with_capacity(n),
        }
    }

    fn verify(&self, block: &Block) -> Result<(), BlockFault> {
        let root = merkle_tree::calculate_root(self.txids.iter().map(|t| t.to_raw_hash()));
        if root != Some(block.header.merkle_root.to_raw_hash()) {
            return Err(BlockFault::MerkleRoot);
        }
        let any_witness = self.sizes.iter().any(|s| s.total != s.base);
        if any_witness && !witness_commitment_ok(block, &self.wtxids) {
            return Err(BlockFault::WitnessCommitment);
        }
        Ok(())
    }
}

fn witness_commitment_ok(block: &Block, wtxids: &[Wtxid]) -> bool {
    let Some(coinbase) = block.txdata.first().filter(|c| c.is_coinbase()) else {
        return false;
    };
    let Some(out) = coinbase.output.iter().rev().find(|o| {
        let b = o.script_pubkey.as_bytes();
        b.len() >= 38 && b[..6] == COMMITMENT_MAGIC
    }) else {
        return false;
    };
    let mut witness = coinbase.input[0].witness.iter();
    let (Some(reserved), None) = (witness.next(), witness.next()) else {
        return false;
    };
    if reserved.len() != 32 {
        return false;
    }
    // The coinbase's own wtxid counts as zero.
    let hashes = std::iter::once(Wtxid::all_zeros().to_raw_hash())
        .chain(wtxids.iter().skip(1).map(|w| w.to_raw_hash()));
    let Some(root) = merkle_tree::calculate_root(hashes) else {
        return false;
    };
    let expected =
        Block::compute_witness_commitment(&WitnessMerkleNode::from_raw_hash(root), reserved);
    WitnessCommitment::from_slice(&out.script_pubkey.as_bytes()[6..38]).is_ok_and(|c| c == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_bitcoin_crate() {
        let mut block = bitcoin::constants::genesis_block(bitcoin::Network::Bitcoin);
        let h = hash_and_verify(&block).expect("genesis verifies");
        assert_eq!(h.txids[0], block.txdata[0].compute_txid());
        assert_eq!(h.wtxids[0], block.txdata[0].compute_wtxid());
        block.txdata[0].output[0].value = bitcoin::Amount::from_sat(1);
        assert!(!block.check_merkle_root());
        assert_eq!(hash_and_verify(&block).err(), Some(BlockFault::MerkleRoot));
    }

    /// The raw-bytes path gives the bitcoin crate's hashes and sizes on a generated chain
    /// with every script type, segwit and taproot spends included.
    #[test]
    fn raw_bytes_hashing_equals_reserializing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = ferret_testkit::synth::btc::SynthConfig {
            blocks: 30,
            seed: 5,
            txs_per_block: 30,
            ..Default::default()
        };
        ferret_testkit::synth::btc::generate(&cfg, tmp.path()).expect("generate");
        let dir = super::super::BlkDir::open(&tmp.path().join("blocks"), None).expect("open");
        let mut buf = Vec::new();
        let (mut segwit, mut legacy) = (0, 0);
        for loc in dir.scan().expect("scan") {
            let block = dir.read_block_with(&loc, &mut buf).expect("read");
            let raw = hash_and_verify_raw(&block, &buf).expect("verifies");
            let reference = hash_and_verify(&block).expect("verifies");
            assert_eq!(raw.txids, reference.txids);
            assert_eq!(raw.wtxids, reference.wtxids);
            assert_eq!(raw.sizes, reference.sizes);
            for (tx, (w, sz)) in block.txdata.iter().zip(raw.wtxids.iter().zip(&raw.sizes)) {
                assert_eq!(*w, tx.compute_wtxid());
                assert_eq!(sz.weight(), tx.weight().to_wu());
                if sz.total == sz.base {
                    legacy += 1;
                } else {
                    segwit += 1;
                }
            }
        }
        assert!(
            segwit > 100 && legacy > 10,
            "segwit {segwit}, legacy {legacy}"
        );
        // Bytes that are not the block's fall back to re-serializing (same answer).
        let block = bitcoin::constants::genesis_block(bitcoin::Network::Bitcoin);
        assert_eq!(
            hash_and_verify_raw(&block, &[0u8; 3])
                .expect("fallback")
                .txids,
            vec![block.txdata[0].compute_txid()]
        );
    }
}
