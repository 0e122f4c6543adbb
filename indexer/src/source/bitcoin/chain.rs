//! Choosing the best chain among the stored blocks: link by parent hash, sum the work
//! implied by nBits, take the tip with the most work (first stored wins a tie, as in Core),
//! and walk back to its root. The root is genesis (height 0) or, in a pruned directory, the
//! earliest stored block whose parent is absent; its height then comes from BIP34.

use std::collections::HashMap;

use bitcoin::hashes::Hash;
use bitcoin::pow::Work;
use bitcoin::{BlockHash, Network};

use super::blkfile::{BlkDir, BlockLocation};
use crate::{Error, Result};

/// A block of the best chain.
#[derive(Clone, Debug)]
pub struct ChainBlock {
    pub height: u64,
    pub loc: BlockLocation,
}

/// The best chain of a blocks directory, in height order.
#[derive(Debug)]
pub struct BestChain {
    /// Blocks from the root to the tip.
    pub blocks: Vec<ChainBlock>,
    /// Stored blocks not on the best chain (stale branches, orphans).
    pub stale: usize,
    /// Duplicate records of the same block (kept once).
    pub duplicates: usize,
}

impl BestChain {
    /// Height of the first block.
    pub fn start_height(&self) -> Option<u64> {
        self.blocks.first().map(|b| b.height)
    }

    /// Height of the tip.
    pub fn tip_height(&self) -> Option<u64> {
        self.blocks.last().map(|b| b.height)
    }

    /// The block at `height`, if on the chain.
    pub fn at(&self, height: u64) -> Option<&ChainBlock> {
        let start = self.start_height()?;
        let i = usize::try_from(height.checked_sub(start)?).ok()?;
        self.blocks.get(i)
    }
}

/// Picks the best chain among `locs` (as returned by [`BlkDir::scan`]).
pub fn select_best_chain(dir: &BlkDir, locs: Vec<BlockLocation>) -> Result<BestChain> {
    let total = locs.len();
    let mut by_hash: HashMap<BlockHash, usize> = HashMap::with_capacity(total);
    let mut unique: Vec<BlockLocation> = Vec::with_capacity(total);
    for loc in locs {
        if let std::collections::hash_map::Entry::Vacant(e) = by_hash.entry(loc.hash) {
            e.insert(unique.len());
            unique.push(loc);
        }
    }
    let duplicates = total - unique.len();
    let n = unique.len();
    if n == 0 {
        return Ok(BestChain {
            blocks: Vec::new(),
            stale: 0,
            duplicates,
        });
    }
    let parent: Vec<Option<usize>> = unique
        .iter()
        .map(|l| by_hash.get(&l.header.prev_blockhash).copied())
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, p) in parent.iter().enumerate() {
        match p {
            Some(p) => children[*p].push(i),
            None => roots.push(i),
        }
    }
    // Cumulative work from each root, iteratively (chains can be very long).
    let mut work: Vec<Option<Work>> = vec![None; n];
    let mut stack = Vec::new();
    for &r in &roots {
        work[r] = Some(unique[r].header.work());
        stack.push(r);
        while let Some(i) = stack.pop() {
            let w = work[i].expect("set before push");
            for &c in &children[i] {
                work[c] = Some(w + unique[c].header.work());
                stack.push(c);
            }
        }
    }
    let mut tip = None::<usize>;
    for i in 0..n {
        // A cycle in prev-hash links is impossible for valid hashes; blocks unreachable
        // from a root (work None) are skipped.
        let Some(w) = work[i] else { continue };
        if tip.is_none_or(|t| w > work[t].expect("tip has work")) {
            tip = Some(i);
        }
    }
    let tip = tip.expect("at least one root exists when n > 0");
    let mut path = vec![tip];
    while let Some(p) = parent[*path.last().expect("non-empty")] {
        path.push(p);
    }
    path.reverse();
    let root = &unique[path[0]];
    let start = root_height(dir, root)?;
    let blocks: Vec<ChainBlock> = path
        .iter()
        .enumerate()
        .map(|(i, &b)| ChainBlock {
            height: start + i as u64,
            loc: unique[b].clone(),
        })
        .collect();
    let stale = n - blocks.len();
    Ok(BestChain {
        blocks,
        stale,
        duplicates,
    })
}

fn root_height(dir: &BlkDir, root: &BlockLocation) -> Result<u64> {
    if root.header.prev_blockhash == BlockHash::all_zeros() {
        return Ok(0);
    }
    let unknown = |reason: String| Error::UnknownHeight {
        hash: root.hash.to_string(),
        file: dir.file_path(root.file).to_path_buf(),
        offset: root.offset,
        reason,
    };
    let block = dir.read_block(root)?;
    let height = block.bip34_block_height().map_err(|e| {
        unknown(format!(
            "no BIP34 height in its coinbase ({e}); blocks before BIP34 activation need their parents"
        ))
    })?;
    // BIP34 was enforced from these heights; a smaller height claimed by a block that
    // carries a BIP34 push is ambiguous before activation.
    let activation = match dir.network() {
        Network::Bitcoin => 227_931,
        Network::Testnet => 21_111,
        _ => 1,
    };
    if height < activation {
        return Err(unknown(format!(
            "its coinbase claims height {height}, below BIP34 activation ({activation}) where the claim is not binding"
        )));
    }
    Ok(height)
}
