//! The fixpoint of a propagation in one pass, for graphs whose edges all run one way
//! along the node ids: spend graphs, where a transaction spends only outputs of earlier
//! transactions (forward taint: every edge from a lower id to a higher one; backward: the
//! reverse).
//!
//! Jacobi steps reach the fixpoint only after as many steps as the longest tainted path
//! (thousands in a chain of peel chains), each step reading every live edge. Visiting the
//! nodes in chain order instead, every source is final before the node that reads it, so
//! one pass computes `f(v) = min(1, Σ weight(e) · f(src(e)))` from final values: the
//! same sum, in the same order (the row's edges by ascending source, seeds last), with
//! the same gate and the same flush below 1e-30, so **the fractions are the Jacobi
//! fixpoint's, bit for bit**.
//!
//! **Hops.** The pass gives each tainted node `1 +` the smallest hop among the sources
//! that put taint into it at the fixpoint (seed outputs count as hop 0): the fewest spends
//! along a path that carries taint. Without a minimum value this is the Jacobi hop (the
//! first step at which taint arrives); with one, an edge's gate is read at the final
//! fraction of its source, so a source whose tainted value grows past the minimum only
//! after several steps passes taint along its shortest path here, where Jacobi counts
//! the step at which it first passed. (Sums below 1e-30 at an early step, flushed to zero
//! by Jacobi, are the other, theoretical, difference.) Runs without a hop limit use this
//! definition on every path, in memory and out of core.

use super::{Propagated, Propagation, SEED_SOURCE, UNREACHED};
use crate::{Error, Result};

/// Which way a graph's edges run along the node ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainOrder {
    /// Every edge from a lower node id to a higher one (forward taint).
    Ascending,
    /// Every edge from a higher node id to a lower one (backward taint).
    Descending,
}

impl ChainOrder {
    /// Whether an edge from `src` into `dst` runs this way.
    pub fn runs(self, src: u64, dst: u64) -> bool {
        match self {
            Self::Ascending => src < dst,
            Self::Descending => src > dst,
        }
    }
}

/// A node's value from its row: the entries in summation order, each either a fixed
/// contribution (its product and its source's hop) or an edge whose source is read now.
pub(crate) struct RowSum {
    acc: f32,
    best: u32,
}

impl RowSum {
    pub(crate) fn new() -> Self {
        Self {
            acc: 0.0,
            best: UNREACHED,
        }
    }

    /// Adds an edge from a source with fraction `fs` and hop `hs`, as the Jacobi step
    /// does (gated when `min_value > 0`).
    #[inline]
    pub(crate) fn edge(&mut self, w: f32, gate: f32, fs: f32, hs: u32, min_value: f32) {
        if min_value > 0.0 {
            if fs > 0.0 && fs * gate >= min_value {
                self.add(w * fs, hs);
            }
        } else {
            // No gate: an untainted source adds w · 0 = +0.0, which changes no bit.
            self.add(w * fs, hs);
        }
    }

    /// Adds a contribution computed earlier (a product that passed the gate).
    #[inline]
    pub(crate) fn add(&mut self, product: f32, hs: u32) {
        self.acc += product;
        if product > 0.0 {
            self.best = self.best.min(hs);
        }
    }

    /// The fraction and hop: flushed below 1e-30 and capped at 1, as the Jacobi step.
    pub(crate) fn finish(self) -> (f32, u32) {
        let f = if self.acc < 1e-30 {
            0.0
        } else {
            self.acc.min(1.0)
        };
        if f > 0.0 {
            (f, self.best.saturating_add(1))
        } else {
            (0.0, UNREACHED)
        }
    }
}

/// The fixpoint of `g` in one pass over its nodes in `order`. An edge against the order
/// (a cycle, or damaged ids) is an error naming it, never a wrong answer. `steps` is 1.
pub fn fixpoint_in_order(g: &Propagation, min_value: f32, order: ChainOrder) -> Result<Propagated> {
    g.validate()?;
    let mut r = Propagated::start(g);
    let n = g.nodes();
    let visit = |v: u32, r: &mut Propagated| -> Result<()> {
        if r.hop[v as usize] == 0 {
            r.fraction[v as usize] = 1.0;
            return Ok(());
        }
        let mut row = RowSum::new();
        for e in g.row_ptr[v as usize] as usize..g.row_ptr[v as usize + 1] as usize {
            let (fs, hs) = match g.src[e] {
                SEED_SOURCE => (1.0, 0),
                s => {
                    if !order.runs(u64::from(s), u64::from(v)) {
                        return Err(against(order, u64::from(s), u64::from(v)));
                    }
                    (r.fraction[s as usize], r.hop[s as usize])
                }
            };
            row.edge(g.weight[e], g.gate[e], fs, hs, min_value);
        }
        let (f, h) = row.finish();
        r.fraction[v as usize] = f;
        r.hop[v as usize] = h;
        Ok(())
    };
    match order {
        ChainOrder::Ascending => {
            for v in 0..n {
                visit(v, &mut r)?;
            }
        }
        ChainOrder::Descending => {
            for v in (0..n).rev() {
                visit(v, &mut r)?;
            }
        }
    }
    r.steps = 1;
    Ok(r)
}

/// The error for an edge that runs against the chain order.
pub(crate) fn against(order: ChainOrder, src: u64, dst: u64) -> Error {
    Error::BadGraph(format!(
        "an edge from node {src} into node {dst} runs against the chain order ({}): the \
         spend graph has a cycle or damaged ids",
        match order {
            ChainOrder::Ascending => "every edge must come from an earlier node",
            ChainOrder::Descending => "every edge must come from a later node",
        }
    ))
}
