//! Hashing a block's transactions once and checking its merkle root and witness
//! commitment from those hashes (the transform reuses them for `txid` and `wtxid`).

use bitcoin::hashes::Hash;
use bitcoin::{Block, Txid, WitnessCommitment, WitnessMerkleNode, Wtxid, merkle_tree};

/// The transaction hashes of a block, in block order.
#[derive(Clone, Debug, Default)]
pub struct TxHashes {
    pub txids: Vec<Txid>,
    pub wtxids: Vec<Wtxid>,
}

/// What failed a block's check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFault {
    MerkleRoot,
    WitnessCommitment,
}

const COMMITMENT_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// Hashes every transaction once and checks the header's merkle root and, where the block
/// has witness data, the coinbase's witness commitment (BIP141).
pub fn hash_and_verify(block: &Block) -> Result<TxHashes, BlockFault> {
    let mut txids = Vec::with_capacity(block.txdata.len());
    let mut wtxids = Vec::with_capacity(block.txdata.len());
    let mut any_witness = false;
    for tx in &block.txdata {
        let txid = tx.compute_txid();
        let has_witness = tx.input.iter().any(|i| !i.witness.is_empty());
        any_witness |= has_witness;
        // Without witness data the wtxid is the txid: skip the second hash.
        wtxids.push(if has_witness {
            tx.compute_wtxid()
        } else {
            Wtxid::from_raw_hash(txid.to_raw_hash())
        });
        txids.push(txid);
    }
    let root = merkle_tree::calculate_root(txids.iter().map(|t| t.to_raw_hash()));
    if root != Some(block.header.merkle_root.to_raw_hash()) {
        return Err(BlockFault::MerkleRoot);
    }
    if any_witness && !witness_commitment_ok(block, &wtxids) {
        return Err(BlockFault::WitnessCommitment);
    }
    Ok(TxHashes { txids, wtxids })
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
}
