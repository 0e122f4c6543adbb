//! Merges that fail safe. Multi-address transactions that are not mixes are taken in
//! chain order through a union-find; a transaction is held back (not linked, and listed for review) when it
//! would merge
//! - clusters whose labels conflict: two labelled clusters without an owner name in
//!   common (two exchanges, an exchange and a scam operation, two operations), or with
//!   one but with an `exchange` label on one side and a `scam` label on the other;
//! - two clusters that both hold at least `collapse_min_size` addresses: one
//!   transaction joining two large entities is the signature of a cluster collapse
//!   (a missed CoinJoin, a custodial service's shared wallet), after Möser & Narayanan,
//!   "Resurrecting Address Clustering in Bitcoin" (FC 2022).
//!
//! The admitted links are what the connected-components kernel (GPU or CPU) then labels;
//! its partition equals the union-find's. Order matters only for what is held: the
//! earliest transactions build the clusters, the later ones are checked against them,
//! so the result is deterministic. Every decision is a function of the clusters built so
//! far (their members, sizes and labels: the labelled sides are folded in order of each
//! cluster's smallest address id, label lists are kept sorted), never of which member
//! the union-find made a root; so a run continued from a stored partition (the
//! incremental clustering) decides exactly as a run from the first block.

use std::collections::HashMap;

use super::{CioGraph, ClusterOptions};

/// Why a transaction was not linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldReason {
    LabelConflict,
    Collapse,
}

impl HoldReason {
    pub fn name(self) -> &'static str {
        match self {
            HoldReason::LabelConflict => "label_conflict",
            HoldReason::Collapse => "collapse",
        }
    }
}

/// A transaction held back for review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Index into the graph's linking transactions.
    pub tx: usize,
    pub reason: HoldReason,
    /// Distinct clusters the transaction would have joined.
    pub clusters: u32,
    /// Sizes of the two largest of them.
    pub largest: u64,
    pub second: u64,
    /// The labels on each side, `label (category)`, sides separated by ` | `.
    pub labels: String,
}

/// What the guards let through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guarded {
    /// Links between address ids, of admitted transactions only.
    pub edges: Vec<(u32, u32)>,
    /// Per edge: the linking transaction (index into the graph's `txs`).
    pub edge_tx: Vec<u32>,
    pub holds: Vec<Hold>,
    /// Transactions whose inputs were linked.
    pub linked_transactions: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct LabelSet {
    /// Interned owner names (lowercase labels), sorted.
    names: Vec<u32>,
    exchange: bool,
    scam: bool,
    /// `label (category)` for the record.
    shown: Vec<String>,
}

impl LabelSet {
    fn compatible(&self, other: &LabelSet) -> bool {
        let common = self
            .names
            .iter()
            .any(|n| other.names.binary_search(n).is_ok());
        common && !(self.exchange && other.scam) && !(self.scam && other.exchange)
    }

    pub(crate) fn absorb(&mut self, other: LabelSet) {
        self.names.extend(other.names);
        self.names.sort_unstable();
        self.names.dedup();
        self.exchange |= other.exchange;
        self.scam |= other.scam;
        // Sorted, so a set depends on its members only, never on the order of merges.
        self.shown.extend(other.shown);
        self.shown.sort_unstable();
        self.shown.dedup();
    }
}

/// The union-find the guards run on: in memory ([`UnionFind`]) or paged through scratch
/// files (the out-of-core clustering). Both run the same operations in the same order,
/// so their trees, and the holds, are the same.
pub(crate) trait Forest {
    fn parent(&mut self, x: u32) -> crate::Result<u32>;
    fn set_parent(&mut self, x: u32, p: u32) -> crate::Result<()>;
    fn size(&mut self, x: u32) -> crate::Result<u32>;
    fn set_size(&mut self, x: u32, s: u32) -> crate::Result<()>;
    /// The smallest address id of root `x`'s tree (its cluster id).
    fn min(&mut self, x: u32) -> crate::Result<u32>;
    /// Called when `small`'s tree joins `big`'s (to carry the smallest id over).
    fn joined(&mut self, big: u32, small: u32) -> crate::Result<()>;

    /// The root of `x`, halving the path.
    fn find(&mut self, mut x: u32) -> crate::Result<u32> {
        loop {
            let p = self.parent(x)?;
            if p == x {
                return Ok(x);
            }
            let gp = self.parent(p)?;
            self.set_parent(x, gp)?;
            x = p;
        }
    }
}

struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
    min: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
            min: (0..n as u32).collect(),
        }
    }
}

impl Forest for UnionFind {
    fn parent(&mut self, x: u32) -> crate::Result<u32> {
        Ok(self.parent[x as usize])
    }
    fn set_parent(&mut self, x: u32, p: u32) -> crate::Result<()> {
        self.parent[x as usize] = p;
        Ok(())
    }
    fn size(&mut self, x: u32) -> crate::Result<u32> {
        Ok(self.size[x as usize])
    }
    fn set_size(&mut self, x: u32, s: u32) -> crate::Result<()> {
        self.size[x as usize] = s;
        Ok(())
    }
    fn min(&mut self, x: u32) -> crate::Result<u32> {
        Ok(self.min[x as usize])
    }
    fn joined(&mut self, big: u32, small: u32) -> crate::Result<()> {
        self.min[big as usize] = self.min[big as usize].min(self.min[small as usize]);
        Ok(())
    }
}

/// The label sets of labelled addresses: `labels` are (address, label, category) rows,
/// `id_of` gives an address's id (None: not on the chain).
pub(crate) fn label_sets(
    labels: &[(String, String, String)],
    mut id_of: impl FnMut(&str) -> Option<u32>,
) -> HashMap<u32, LabelSet> {
    type Label = (String, String, String);
    let mut by_address: HashMap<&str, Vec<&Label>> = HashMap::new();
    for l in labels {
        by_address.entry(l.0.as_str()).or_default().push(l);
    }
    let mut with_ids: Vec<(u32, &Vec<&Label>)> = by_address
        .iter()
        .filter_map(|(a, ls)| id_of(a).map(|id| (id, ls)))
        .collect();
    with_ids.sort_unstable_by_key(|x| x.0);
    let mut names: HashMap<String, u32> = HashMap::new();
    let mut sets = HashMap::new();
    for (id, ls) in with_ids {
        let mut set = LabelSet::default();
        for (_, label, category) in ls {
            let next = u32::try_from(names.len()).unwrap_or(u32::MAX);
            set.names
                .push(*names.entry(label.to_lowercase()).or_insert(next));
            set.exchange |= category == "exchange";
            set.scam |= category == "scam";
            set.shown.push(format!("{label} ({category})"));
        }
        set.names.sort_unstable();
        set.names.dedup();
        set.shown.sort_unstable();
        set.shown.dedup();
        sets.insert(id, set);
    }
    sets
}

/// What the guards make of one multi-address transaction.
pub(crate) enum Verdict {
    /// Its addresses were one cluster already, or it merged clusters: admitted.
    Admit,
    /// Held back (its `tx` field left for the caller).
    Hold(Hold),
}

/// The guards' state: a union-find over address ids and the label sets of its roots.
pub(crate) struct Guard<F: Forest> {
    pub(crate) uf: F,
    sets: HashMap<u32, LabelSet>,
    label_guard: bool,
    collapse_min_size: u32,
    roots: Vec<u32>,
}

impl<F: Forest> Guard<F> {
    pub(crate) fn new(uf: F, sets: HashMap<u32, LabelSet>, opts: &ClusterOptions) -> Self {
        Self {
            uf,
            sets: if opts.label_guard {
                sets
            } else {
                HashMap::new()
            },
            label_guard: opts.label_guard,
            collapse_min_size: opts.collapse_min_size,
            roots: Vec::new(),
        }
    }

    /// Takes a transaction's distinct member address ids (sorted), in chain order.
    pub(crate) fn offer(&mut self, members: &[u32]) -> crate::Result<Verdict> {
        let mut roots = std::mem::take(&mut self.roots);
        roots.clear();
        for &m in members {
            roots.push(self.uf.find(m)?);
        }
        roots.sort_unstable();
        roots.dedup();
        let v = self.decide(&roots);
        self.roots = roots;
        v
    }

    fn decide(&mut self, roots: &[u32]) -> crate::Result<Verdict> {
        let mut hold: Option<(HoldReason, String)> = None;
        if roots.len() > 1 {
            // Labels: fold the labelled sides; the first conflict holds the transaction.
            // In order of each cluster's smallest address id: a decision depends on the
            // clusters alone, never on which member the union-find made the root.
            if self.label_guard {
                let mut by_min = Vec::with_capacity(roots.len());
                for &r in roots {
                    if self.sets.contains_key(&r) {
                        by_min.push((self.uf.min(r)?, r));
                    }
                }
                by_min.sort_unstable();
                let mut acc: Option<LabelSet> = None;
                for (_, r) in &by_min {
                    let Some(s) = self.sets.get(r) else { continue };
                    match &mut acc {
                        None => acc = Some(s.clone()),
                        Some(a) if a.compatible(s) => a.absorb(s.clone()),
                        Some(a) => {
                            let shown = format!("{} | {}", a.shown.join(", "), s.shown.join(", "));
                            hold = Some((HoldReason::LabelConflict, shown));
                            break;
                        }
                    }
                }
            }
            if hold.is_none() && self.collapse_min_size > 0 {
                let mut sizes = Vec::with_capacity(roots.len());
                for &r in roots {
                    sizes.push(self.uf.size(r)?);
                }
                sizes.sort_unstable_by(|a, b| b.cmp(a));
                if sizes[1] >= self.collapse_min_size {
                    hold = Some((HoldReason::Collapse, String::new()));
                }
            }
        }
        if let Some((reason, labels)) = hold {
            let mut sizes = Vec::with_capacity(roots.len());
            for &r in roots {
                sizes.push(u64::from(self.uf.size(r)?));
            }
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            return Ok(Verdict::Hold(Hold {
                tx: 0,
                reason,
                clusters: u32::try_from(roots.len()).unwrap_or(u32::MAX),
                largest: sizes[0],
                second: sizes.get(1).copied().unwrap_or(0),
                labels,
            }));
        }
        // Admit: union by size, the labels move to the new root.
        let mut root = roots[0];
        for &r in &roots[1..] {
            let (sr, s) = (self.uf.size(root)?, self.uf.size(r)?);
            let (big, small) = if sr >= s { (root, r) } else { (r, root) };
            self.uf.set_parent(small, big)?;
            self.uf.set_size(big, sr + s)?;
            self.uf.joined(big, small)?;
            if let Some(s) = self.sets.remove(&small) {
                self.sets.entry(big).or_default().absorb(s);
            }
            root = big;
        }
        Ok(Verdict::Admit)
    }
}

/// Runs the guards over the graph's linking transactions in chain order. `labels` are
/// (address, label, category) rows; addresses the graph does not know are ignored.
pub fn guard_links(
    g: &CioGraph,
    labels: &[(String, String, String)],
    opts: &ClusterOptions,
) -> crate::Result<Guarded> {
    let sets = if opts.label_guard && !labels.is_empty() {
        let by_name: HashMap<&str, u32> = g
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), i as u32))
            .collect();
        label_sets(labels, |a| by_name.get(a).copied())
    } else {
        HashMap::new()
    };
    let mut guard = Guard::new(UnionFind::new(g.addresses.len()), sets, opts);
    let mut out = Guarded::default();
    for (ti, t) in g.txs.iter().enumerate() {
        if t.mix {
            continue;
        }
        let members = g.members_of(t);
        match guard.offer(members)? {
            Verdict::Hold(mut h) => {
                h.tx = ti;
                out.holds.push(h);
            }
            Verdict::Admit => {
                out.linked_transactions += 1;
                let ti32 = u32::try_from(ti).unwrap_or(u32::MAX);
                for &m in &members[1..] {
                    out.edges.push((members[0], m));
                    out.edge_tx.push(ti32);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::LinkTx;

    /// A graph of `n` addresses `a0…` and linking transactions over them, in order.
    fn graph(n: usize, txs: &[&[u32]]) -> CioGraph {
        let mut g = CioGraph {
            addresses: (0..n).map(|i| format!("a{i}")).collect(),
            ..Default::default()
        };
        for (i, m) in txs.iter().enumerate() {
            let start = g.members.len();
            let mut m = m.to_vec();
            m.sort_unstable();
            g.members.extend_from_slice(&m);
            g.txs.push(LinkTx {
                tx_index: i as i64,
                height: i as i64,
                txid: [i as u8; 32],
                start,
                end: g.members.len(),
                mix: false,
            });
        }
        g
    }

    fn label(a: &str, l: &str, c: &str) -> (String, String, String) {
        (a.into(), l.into(), c.into())
    }

    #[test]
    fn conflicting_labels_are_held_compatible_ones_merge() {
        // a0 exchange-1, a3 exchange-1 too (another source, other case), a5 scam-op-1.
        let labels = [
            label("a0", "exchange-1", "exchange"),
            label("a3", "Exchange-1", "exchange"),
            label("a5", "scam-op-1", "scam"),
            label("a7", "exchange-2", "exchange"),
        ];
        let g = graph(
            9,
            &[
                &[0, 1],
                &[2, 3],
                &[1, 2],
                &[4, 5],
                &[3, 4],
                &[6, 7],
                &[0, 6],
                &[8, 0],
            ],
        );
        let r = guard_links(&g, &labels, &ClusterOptions::default()).expect("guards");
        let held: Vec<(usize, HoldReason)> = r.holds.iter().map(|h| (h.tx, h.reason)).collect();
        // tx 2 joins {a0,a1} and {a2,a3}: one owner name in common → merged.
        // tx 4 joins exchange-1 with scam-op-1 → held; tx 6 exchange-1 with exchange-2 → held.
        assert_eq!(
            held,
            [
                (4, HoldReason::LabelConflict),
                (6, HoldReason::LabelConflict)
            ]
        );
        assert!(
            r.holds[0].labels.contains("scam-op-1 (scam)"),
            "{}",
            r.holds[0].labels
        );
        assert_eq!(r.linked_transactions, 6);
        // Unlabelled a8 joins the exchange cluster freely.
        assert!(r.edges.contains(&(0, 8)));
        // Off: everything links.
        let off = ClusterOptions {
            label_guard: false,
            ..Default::default()
        };
        assert!(
            guard_links(&g, &labels, &off)
                .expect("guards")
                .holds
                .is_empty()
        );
    }

    /// The labelled sides are folded in order of each cluster's smallest address id, not of
    /// the union-find's roots: a continued run (roots = smallest ids) must decide as a run
    /// from the first block. Here cluster {1, 5, 6} has root 5 (union by size) and
    /// smallest id 1; folding by root would meet {3: y} right after {0: x} (no name in
    /// common: held), folding by smallest id meets {1: x, y} first and admits.
    #[test]
    fn labels_fold_in_order_of_each_clusters_smallest_address() {
        let labels = [
            label("a0", "x", "service"),
            label("a1", "x", "service"),
            label("a1", "y", "service"),
            label("a3", "y", "service"),
        ];
        let g = graph(7, &[&[5, 6], &[1, 5], &[0, 1, 3]]);
        let r = guard_links(&g, &labels, &ClusterOptions::default()).expect("guards");
        assert!(r.holds.is_empty(), "{:?}", r.holds);
        assert_eq!(r.linked_transactions, 3);
    }

    #[test]
    fn a_transaction_joining_two_large_clusters_is_held() {
        // Two chains of 4 addresses each, then one transaction joining them, then a small
        // address joining the first.
        let g = graph(
            9,
            &[
                &[0, 1],
                &[1, 2],
                &[2, 3],
                &[4, 5],
                &[5, 6],
                &[6, 7],
                &[3, 7],
                &[0, 8],
            ],
        );
        let opts = ClusterOptions {
            collapse_min_size: 4,
            ..Default::default()
        };
        let r = guard_links(&g, &[], &opts).expect("guards");
        assert_eq!(r.holds.len(), 1);
        let h = &r.holds[0];
        assert_eq!(
            (h.tx, h.reason, h.largest, h.second),
            (6, HoldReason::Collapse, 4, 4)
        );
        assert_eq!(r.linked_transactions, 7);
        // Below the threshold it merges.
        let loose = ClusterOptions {
            collapse_min_size: 5,
            ..Default::default()
        };
        assert!(
            guard_links(&g, &[], &loose)
                .expect("guards")
                .holds
                .is_empty()
        );
    }
}
