//! Peel chains and pass-through chains as a walk on the persisted spend graph, ranked by
//! a kernel: the parallel engine for the two Bitcoin patterns that are graph walks.
//!
//! 1. The chain-order pass ([`super::btc::Scan`], switched by
//!    [`super::btc::Scan::walk_on_graph`]) judges each transaction's shape (a peel step,
//!    a pass-through hop) and records it as a *node* with its *tail* (the remainder, or
//!    the one forwarded output) instead of looking the tail up as it goes.
//! 2. [`link`] sweeps `btc.spends` a (destination block, source block) chunk at a time,
//!    reading only chunks out of blocks that hold nodes. A node `S` continues node `P` when
//!    `S` spends `P`'s tail within the rule's window (`peel_max_gap`,
//!    `pass_max_wait`) and spends no other such tail; a tail spent at all closes its
//!    chain.
//! 3. [`crate::chainrank`] ranks the links on the chosen device (GPU or its CPU twin):
//!    each node's chain head and position.
//! 4. The chains are handed back to the pass, which judges them with the same code and
//!    the final counters.
//!
//! The chain-order pass links the same way (it holds the open tails in a map), and is
//! the oracle: both engines give the same findings (tests here, in `btc.rs` and
//! `cli/tests/typologies_cli.rs`; the 2.7 M-transaction digest in benches/README.md).
//!
//! Memory: the nodes and their steps (about 112 bytes a node, twice that while the
//! chains are cut), a few `u32` arrays a node for linking and ranking, and one chunk of
//! three `btc.spends` columns per thread.

use std::collections::BTreeSet;

use crate::chainrank::{self, NONE};
use crate::device::Backend;
use crate::{Error, Result};

/// A judged step or hop: its transaction, its tail output, its height, and what the
/// pass keeps of it.
#[derive(Clone, Debug)]
pub(crate) struct Node<T> {
    pub(crate) tx: u64,
    pub(crate) tail: u64,
    pub(crate) height: i64,
    pub(crate) step: T,
}

/// One pattern's nodes, in chain order, and their links as far as swept.
#[derive(Debug)]
pub(crate) struct Kind<T> {
    nodes: Vec<Node<T>>,
    /// The most blocks between a tail and the node spending it.
    window: i64,
    /// Per node: its tail was spent (by anything), which closes its chain.
    tail_spent: Vec<bool>,
    /// Per node: the node whose tail it spends within the window, and how many such.
    before: Vec<u32>,
    befores: Vec<u8>,
}

impl<T> Kind<T> {
    pub(crate) fn new(window: i64) -> Self {
        Self {
            nodes: Vec::new(),
            window,
            tail_spent: Vec::new(),
            before: Vec::new(),
            befores: Vec::new(),
        }
    }

    /// Nodes recorded so far.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Records the next node (in chain order).
    pub(crate) fn push(&mut self, node: Node<T>) -> Result<()> {
        if self.nodes.last().is_some_and(|l| node.tx <= l.tx) {
            return Err(Error::BadGraph(format!(
                "typologies: walk nodes out of chain order at transaction {}",
                node.tx
            )));
        }
        if self.nodes.len() >= (NONE - 1) as usize {
            return Err(Error::TooLarge(format!(
                "{} chain nodes of one pattern: at most 2^32 − 2 a run",
                self.nodes.len() + 1
            )));
        }
        self.nodes.push(node);
        Ok(())
    }

    /// Sizes the link arrays to the nodes (once they are all recorded).
    fn ready(&mut self) {
        let n = self.nodes.len();
        self.tail_spent.resize(n, false);
        self.before.resize(n, NONE);
        self.befores.resize(n, 0);
    }

    fn find(&self, tx: u64) -> Option<usize> {
        self.nodes.binary_search_by_key(&tx, |n| n.tx).ok()
    }

    /// What one spend means here (transaction `spender` spends output `output` of
    /// transaction `spent_tx`): `Some((p, s))` when it spends node `p`'s tail, with `s`
    /// the node continuing it within the window, or [`NONE`].
    fn hit(&self, spender: u64, spent_tx: u64, output: u64) -> Option<(u32, u32)> {
        let p = self.find(spent_tx)?;
        if self.nodes[p].tail != output {
            return None;
        }
        let s = self
            .find(spender)
            .filter(|&s| s > p && self.nodes[s].height - self.nodes[p].height <= self.window);
        Some((p as u32, s.map_or(NONE, |s| s as u32)))
    }

    /// Takes in a [`Kind::hit`].
    fn apply(&mut self, (p, s): (u32, u32)) {
        if self.tail_spent.len() != self.nodes.len() {
            self.ready();
        }
        self.tail_spent[p as usize] = true;
        if s != NONE {
            self.before[s as usize] = p;
            self.befores[s as usize] = self.befores[s as usize].saturating_add(1);
        }
    }

    /// Ranks the links and cuts the nodes into chains, in order of their first node;
    /// each with its tail when it is still open (unspent).
    fn chains(mut self, backend: &Backend) -> Result<Vec<(Option<u64>, Vec<T>)>> {
        self.ready();
        let Kind {
            nodes,
            tail_spent,
            before,
            befores,
            ..
        } = self;
        // A node spending two live tails continues neither (as in the pass).
        let pred: Vec<u32> = before
            .iter()
            .zip(&befores)
            .map(|(&b, &k)| if k == 1 { b } else { NONE })
            .collect();
        let ranked = chainrank::rank_chains(backend, &pred)?;
        drop(pred);
        let n = nodes.len();
        // Chain lengths by head.
        let mut len = vec![0u32; n];
        for (&h, &r) in ranked.head.iter().zip(&ranked.rank) {
            let l = &mut len[h as usize];
            *l = (*l).max(r + 1);
        }
        // Each head's first slot, and the chains' lengths in order of their heads.
        let mut offset = vec![0usize; n];
        let mut lens = Vec::new();
        let mut at = 0usize;
        for (h, &l) in len.iter().enumerate() {
            if l > 0 {
                offset[h] = at;
                lens.push(l as usize);
                at += l as usize;
            }
        }
        if at != n {
            return Err(Error::BadGraph(format!(
                "typologies: {n} walk nodes ranked into chains of {at} (a chain with a gap)"
            )));
        }
        let mut slots: Vec<Option<(usize, Node<T>)>> = (0..n).map(|_| None).collect();
        for (i, node) in nodes.into_iter().enumerate() {
            let at = offset[ranked.head[i] as usize] + ranked.rank[i] as usize;
            if slots[at].replace((i, node)).is_some() {
                return Err(Error::BadGraph(format!(
                    "typologies: two walk nodes at one place of a chain (node {i})"
                )));
            }
        }
        let mut out = Vec::with_capacity(lens.len());
        let mut slots = slots.into_iter();
        for l in lens {
            let mut steps = Vec::with_capacity(l);
            let mut open = None;
            for _ in 0..l {
                let (i, node) = slots.next().flatten().ok_or_else(|| {
                    Error::BadGraph("typologies: a chain with a missing step".into())
                })?;
                open = (!tail_spent[i]).then_some(node.tail);
                steps.push(node.step);
            }
            out.push((open, steps));
        }
        Ok(out)
    }
}

/// A spend of a tail: the pattern (`true`: pass-through) and its [`Kind::hit`].
type Hit = (bool, (u32, u32));

/// The `btc.spends` columns linking reads.
const LINK_COLUMNS: &[&str] = &["tx_index", "spent_tx_index", "spent_output_id"];

/// The hits in `batches` (columns [`LINK_COLUMNS`]).
fn batch_hits<P: Sync, Q: Sync>(
    nodes: &Nodes<P, Q>,
    batches: &[arrow::record_batch::RecordBatch],
) -> Result<(u64, Vec<Hit>)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    let bad = |why: &str| Error::BadGraph(format!("btc.spends: {why}"));
    let (mut edges, mut out) = (0u64, Vec::new());
    for b in batches {
        let col = |i: usize| {
            b.column(i)
                .as_primitive_opt::<Int64Type>()
                .filter(|c| c.null_count() == 0)
                .ok_or_else(|| {
                    bad(&format!(
                        "column {} is not a non-null integer",
                        LINK_COLUMNS[i]
                    ))
                })
        };
        let (tx, spent_tx, output) = (col(0)?, col(1)?, col(2)?);
        for r in 0..b.num_rows() {
            let id = |a: &arrow::array::Int64Array, what: &str| {
                u64::try_from(a.value(r)).map_err(|_| bad(&format!("a negative {what}")))
            };
            out.extend(nodes.hits(
                id(tx, "tx_index")?,
                id(spent_tx, "spent_tx_index")?,
                id(output, "spent_output_id")?,
            ));
        }
        edges += b.num_rows() as u64;
    }
    Ok((edges, out))
}

/// What a walk did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WalkStats {
    pub peel_steps: usize,
    pub pass_hops: usize,
    pub peel_chains: usize,
    pub pass_chains: usize,
    /// `btc.spends` chunks and edges read.
    pub chunks: usize,
    pub edges: u64,
    /// Linking (reading the chunks) and ranking (the kernel, and cutting the chains).
    pub link_seconds: f64,
    pub rank_seconds: f64,
}

/// The two patterns' nodes.
#[derive(Debug)]
pub(crate) struct Nodes<P, Q> {
    pub(crate) peel: Kind<P>,
    pub(crate) pass: Kind<Q>,
}

/// The chains walked: per pattern, each chain's steps and its tail while open.
pub(crate) struct Walked<P, Q> {
    pub(crate) peel: Vec<(Option<u64>, Vec<P>)>,
    pub(crate) pass: Vec<(Option<u64>, Vec<Q>)>,
}

impl<P, Q> Nodes<P, Q> {
    /// One spend edge (the tests feed edges one by one).
    #[cfg(test)]
    pub(crate) fn edge(&mut self, spender: u64, spent_tx: u64, output: u64) {
        for h in self.hits(spender, spent_tx, output) {
            self.apply(h);
        }
    }

    /// What one spend edge means to either pattern (the read-only half of
    /// [`Nodes::edge`], run in parallel).
    fn hits(
        &self,
        spender: u64,
        spent_tx: u64,
        output: u64,
    ) -> impl Iterator<Item = Hit> + use<P, Q> {
        let peel = self.peel.hit(spender, spent_tx, output).map(|h| (false, h));
        let pass = self.pass.hit(spender, spent_tx, output).map(|h| (true, h));
        peel.into_iter().chain(pass)
    }

    fn apply(&mut self, (pass, h): Hit) {
        if pass {
            self.pass.apply(h)
        } else {
            self.peel.apply(h)
        }
    }

    /// Ranks both patterns' links on `backend`.
    pub(crate) fn walk(self, backend: &Backend) -> Result<Walked<P, Q>> {
        Ok(Walked {
            peel: self.peel.chains(backend)?,
            pass: self.pass.chains(backend)?,
        })
    }

    /// The graph blocks (of `2^bits` transactions) that hold nodes.
    fn blocks(&self, bits: u32) -> BTreeSet<u32> {
        self.peel
            .nodes
            .iter()
            .map(|n| n.tx)
            .chain(self.pass.nodes.iter().map(|n| n.tx))
            .map(|tx| (tx >> bits) as u32)
            .collect()
    }
}

/// Links the nodes on the committed spend graph, reading only the chunks out of blocks
/// that hold nodes, as many chunks at a time as there are threads (each decoded and
/// looked up in parallel); returns how many chunks and edges were read.
pub(crate) async fn link<P: Sync, Q: Sync>(
    wh: &ferret_schemas::Warehouse,
    m: &ferret_schemas::Manifest,
    nodes: &mut Nodes<P, Q>,
) -> Result<(usize, u64)> {
    let graph = crate::taint::stored::SpendEdges::open(wh, m).await?;
    // Every chunk out of a block with nodes: a tail spent by a transaction in a block
    // without nodes still closes its chain.
    let pairs: Vec<(u32, u32)> = nodes
        .blocks(graph.bits)
        .into_iter()
        .flat_map(|s| graph.destinations_of(s).into_iter().map(move |d| (d, s)))
        .collect();
    let total: u64 = pairs.iter().map(|&(d, s)| graph.edges_of(d, s)).sum();
    let bar = crate::progress::bar(Some(total), "typology walk: spend edges");
    let (mut chunks, mut edges) = (0usize, 0u64);
    let at_once = rayon::current_num_threads().max(1);
    for group in pairs.chunks(at_once) {
        let reads = futures::future::try_join_all(
            group
                .iter()
                .map(|&(d, s)| graph.read_columns(wh, d, s, LINK_COLUMNS)),
        )
        .await?;
        let found: Vec<(u64, Vec<Hit>)> = {
            use rayon::prelude::*;
            let shared = &*nodes;
            reads
                .par_iter()
                .map(|batches| batch_hits(shared, batches))
                .collect::<Result<_>>()?
        };
        for (n, hits) in found {
            chunks += 1;
            edges += n;
            bar.inc(n);
            for h in hits {
                nodes.apply(h);
            }
        }
    }
    bar.finish_and_clear();
    tracing::info!(
        chunks,
        edges,
        "typology walk: links read from the spend graph"
    );
    Ok((chunks, edges))
}
