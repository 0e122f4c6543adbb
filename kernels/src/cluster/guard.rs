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
//! so the result is deterministic.

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
struct LabelSet {
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

    fn absorb(&mut self, other: LabelSet) {
        self.names.extend(other.names);
        self.names.sort_unstable();
        self.names.dedup();
        self.exchange |= other.exchange;
        self.scam |= other.scam;
        for s in other.shown {
            if !self.shown.contains(&s) {
                self.shown.push(s);
            }
        }
    }
}

struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }
}

/// Runs the guards over the graph's linking transactions in chain order. `labels` are
/// (address, label, category) rows; addresses the graph does not know are ignored.
pub fn guard_links(
    g: &CioGraph,
    labels: &[(String, String, String)],
    opts: &ClusterOptions,
) -> Guarded {
    let mut sets: HashMap<u32, LabelSet> = HashMap::new();
    if opts.label_guard && !labels.is_empty() {
        let mut by_address: HashMap<&str, Vec<&(String, String, String)>> = HashMap::new();
        for l in labels {
            by_address.entry(l.0.as_str()).or_default().push(l);
        }
        let mut names: HashMap<String, u32> = HashMap::new();
        for (id, a) in g.addresses.iter().enumerate() {
            let Some(ls) = by_address.get(a.as_str()) else {
                continue;
            };
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
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            sets.insert(id, set);
        }
    }

    let mut uf = UnionFind::new(g.addresses.len());
    let mut out = Guarded::default();
    let mut roots: Vec<u32> = Vec::new();
    for (ti, t) in g.txs.iter().enumerate() {
        if t.mix {
            continue;
        }
        let members = g.members_of(t);
        roots.clear();
        roots.extend(members.iter().map(|&m| uf.find(m)));
        roots.sort_unstable();
        roots.dedup();

        let mut hold: Option<(HoldReason, String)> = None;
        if roots.len() > 1 {
            // Labels: fold the labelled sides; the first conflict holds the transaction.
            let mut acc: Option<LabelSet> = None;
            for r in &roots {
                let Some(s) = sets.get(r) else { continue };
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
            if hold.is_none() && opts.collapse_min_size > 0 {
                let mut sizes: Vec<u32> = roots.iter().map(|&r| uf.size[r as usize]).collect();
                sizes.sort_unstable_by(|a, b| b.cmp(a));
                if sizes[1] >= opts.collapse_min_size {
                    hold = Some((HoldReason::Collapse, String::new()));
                }
            }
        }
        if let Some((reason, labels)) = hold {
            let mut sizes: Vec<u64> = roots
                .iter()
                .map(|&r| u64::from(uf.size[r as usize]))
                .collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            out.holds.push(Hold {
                tx: ti,
                reason,
                clusters: u32::try_from(roots.len()).unwrap_or(u32::MAX),
                largest: sizes[0],
                second: sizes.get(1).copied().unwrap_or(0),
                labels,
            });
            continue;
        }
        // Admit: union by size, the labels move to the new root.
        let mut root = roots[0];
        for &r in &roots[1..] {
            let (big, small) = if uf.size[root as usize] >= uf.size[r as usize] {
                (root, r)
            } else {
                (r, root)
            };
            uf.parent[small as usize] = big;
            uf.size[big as usize] += uf.size[small as usize];
            if let Some(s) = sets.remove(&small) {
                sets.entry(big).or_default().absorb(s);
            }
            root = big;
        }
        out.linked_transactions += 1;
        let ti32 = u32::try_from(ti).unwrap_or(u32::MAX);
        for &m in &members[1..] {
            out.edges.push((members[0], m));
            out.edge_tx.push(ti32);
        }
    }
    out
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
        let r = guard_links(&g, &labels, &ClusterOptions::default());
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
        assert!(guard_links(&g, &labels, &off).holds.is_empty());
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
        let r = guard_links(&g, &[], &opts);
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
        assert!(guard_links(&g, &[], &loose).holds.is_empty());
    }
}
