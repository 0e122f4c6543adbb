//! UTXO taint (Bitcoin), as docs/kernels.md and DESIGN.md define it: poison, haircut and
//! fifo, forward (where did it go) and backward (where did it come from), with a hop
//! limit, a minimum tainted value and stop-at addresses. Every policy lowers to one
//! [`Propagation`] problem run by the `propagate` kernel on the GPU or the CPU.
//!
//! Seeds are outputs: those paying a seed address and every output of a seed
//! transaction. They are tainted at hop 0 with fraction 1 and appear in the results.
//!
//! Forward, poison and haircut run on transactions: a transaction spending tainted
//! outputs is at hop 1 + the smallest hop among them, and every output it creates carries
//! its fraction (haircut: `min(1, Σ value(in) / total_in · fraction(in))`; poison: 1).
//! Fifo runs on outputs: the inputs, in order, form a line of satoshis; the outputs, in
//! order, take consecutive stretches of it (the fee takes the tail), and each input's
//! taint is spread evenly over its own stretch.
//!
//! Backward mirrors this: a transaction that created tainted outputs passes the share of
//! its value that went to them (`Σ value(out) / total_out · fraction(out)`) to the outputs
//! it spent (fifo: the share of each input's stretch that went to tainted outputs).
//!
//! An output paying a stop address (e.g. a labelled exchange) receives taint and is
//! reported, but its spender gets none through it (backward: its creator gets none). An
//! output whose tainted value `fraction · value` is below the minimum passes nothing on.

pub mod graph;
pub mod job;
pub mod resume;
pub mod stored;
mod stored_fifo;
pub mod stored_job;
pub mod trace;

use std::collections::HashSet;

use crate::device::Backend;
use crate::propagate::{self, Options, Propagation, SEED_SOURCE, UNREACHED};
use crate::{Error, Result};
pub use graph::{NONE, SpendGraph};

/// How taint divides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Poison,
    Haircut,
    Fifo,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poison" => Ok(Self::Poison),
            "haircut" => Ok(Self::Haircut),
            "fifo" => Ok(Self::Fifo),
            other => Err(format!("unknown policy `{other}` (poison, haircut, fifo)")),
        }
    }
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poison => "poison",
            Self::Haircut => "haircut",
            Self::Fifo => "fifo",
        }
    }
}

/// Which way taint flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "forward" => Ok(Self::Forward),
            "backward" => Ok(Self::Backward),
            other => Err(format!("unknown direction `{other}` (forward, backward)")),
        }
    }
}

impl Direction {
    /// Which way the edges of this direction's problems run along node ids (transactions
    /// and outputs are numbered in chain order).
    pub fn order(self) -> propagate::ChainOrder {
        match self {
            Self::Forward => propagate::ChainOrder::Ascending,
            Self::Backward => propagate::ChainOrder::Descending,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Backward => "backward",
        }
    }
}

/// A taint query on graph ids.
#[derive(Clone, Debug)]
pub struct Query {
    pub policy: Policy,
    pub direction: Direction,
    /// Keep hops ≤ H; `None` follows taint as far as it goes (the fixpoint, in one pass in
    /// chain order: see `propagate::fixpoint_in_order`).
    pub max_hops: Option<u32>,
    /// Outputs whose tainted value is below this (sats) pass nothing on.
    pub min_value: i64,
    /// Seed outputs (global output ids).
    pub seed_outputs: Vec<u32>,
    /// Address ids that stop propagation.
    pub stop_addresses: HashSet<u32>,
    /// Transactions that pass no taint through (forward: their outputs get none from
    /// their inputs; backward: their inputs get none from their outputs); used to measure
    /// what arrived through CoinJoins.
    pub blocked_txs: HashSet<u32>,
}

/// One tainted output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tainted {
    /// Global output id.
    pub output: u32,
    pub hop: u32,
    pub fraction: f32,
    /// `round(fraction × value)`, sats.
    pub tainted_value: i64,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct TaintResult {
    /// Tainted outputs, by output id.
    pub rows: Vec<Tainted>,
    /// Kernel steps that ran.
    pub steps: u32,
    pub nodes: u32,
    pub edges: usize,
}

/// The seed outputs for seed addresses and transactions.
pub fn seed_outputs(g: &SpendGraph, addresses: &[u32], txs: &[u32]) -> Vec<u32> {
    let wanted: HashSet<u32> = addresses.iter().copied().collect();
    let mut seeds: Vec<u32> = if wanted.is_empty() {
        Vec::new()
    } else {
        (0..g.outputs() as u32)
            .filter(|&o| wanted.contains(&g.out_addr[o as usize]))
            .collect()
    };
    for &t in txs {
        seeds.extend(g.out_start[t as usize]..g.out_start[t as usize + 1]);
    }
    seeds.sort_unstable();
    seeds.dedup();
    seeds
}

/// Runs a query on `backend`.
pub fn run(backend: &Backend, g: &SpendGraph, q: &Query) -> Result<TaintResult> {
    if let Some(&o) = q.seed_outputs.iter().find(|&&o| o as usize >= g.outputs()) {
        return Err(Error::BadGraph(format!(
            "seed output {o} outside the graph"
        )));
    }
    let lowered = lower(g, q)?;
    let opts = Options {
        max_hops: q.max_hops,
        // f32 holds every whole number of sats up to 2^24 exactly; thresholds are
        // compared as the kernels compare them.
        min_value: q.min_value.max(0) as f32,
    };
    // Without a hop limit: the fixpoint in one pass in chain order (on the CPU whatever
    // the backend: one pass reads each edge once, where Jacobi steps would read them as
    // many times as the longest tainted path).
    let p = match q.max_hops {
        Some(_) => propagate::propagate(backend, &lowered.problem, &opts)?,
        None => {
            propagate::fixpoint_in_order(&lowered.problem, opts.min_value, q.direction.order())?
        }
    };
    let rows = lowered.report(g, q, &p.fraction, &p.hop);
    Ok(TaintResult {
        rows,
        steps: p.steps,
        nodes: lowered.problem.nodes(),
        edges: lowered.problem.src.len(),
    })
}

/// What the kernel's nodes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nodes {
    Transactions,
    Outputs,
}

struct Lowered {
    problem: Propagation,
    nodes: Nodes,
}

/// Rows grouped by destination, filled in any order.
struct Csr {
    dst: Vec<u32>,
    src: Vec<u32>,
    weight: Vec<f32>,
    gate: Vec<f32>,
}

impl Csr {
    fn new() -> Self {
        Self {
            dst: Vec::new(),
            src: Vec::new(),
            weight: Vec::new(),
            gate: Vec::new(),
        }
    }

    fn push(&mut self, dst: u32, src: u32, weight: f64, gate: i64) {
        self.dst.push(dst);
        self.src.push(src);
        self.weight.push(weight as f32);
        self.gate.push(gate as f32);
    }

    fn finish(self, nodes: usize, seeds: Vec<u32>) -> Result<Propagation> {
        let mut row_ptr = vec![0u32; nodes + 1];
        for &d in &self.dst {
            row_ptr[d as usize + 1] += 1;
        }
        for i in 0..nodes {
            row_ptr[i + 1] = row_ptr[i]
                .checked_add(row_ptr[i + 1])
                .ok_or_else(|| Error::TooLarge("more than 2^32 edges".into()))?;
        }
        let m = self.dst.len();
        // Each row by ascending source (seed outputs last), in push order among equals: the
        // order every path sums a row in, the blocked one included (`blocked`).
        let mut order: Vec<u32> = (0..m as u32).collect();
        order.sort_by_key(|&e| (self.dst[e as usize], self.src[e as usize]));
        let (mut src, mut weight, mut gate) = (vec![0u32; m], vec![0f32; m], vec![0f32; m]);
        for (at, &e) in order.iter().enumerate() {
            let e = e as usize;
            src[at] = self.src[e];
            weight[at] = self.weight[e];
            gate[at] = self.gate[e];
        }
        Ok(Propagation {
            row_ptr,
            src,
            weight,
            gate,
            seeds,
        })
    }
}

/// The overlaps of a transaction's input and output stretches: (input slot, output slot,
/// satoshis), in output order then input order. Inputs of unknown value (spending before
/// the indexed range) have no stretch.
pub(crate) fn fifo_overlaps(
    in_values: &[i64],
    out_values: &[i64],
    mut emit: impl FnMut(usize, usize, i64),
) {
    let (mut i, mut j) = (0usize, 0usize);
    // Satoshis left in the current input and output.
    let (mut li, mut lj) = (
        in_values.first().copied().unwrap_or(0),
        out_values.first().copied().unwrap_or(0),
    );
    while i < in_values.len() && j < out_values.len() {
        if li <= 0 {
            i += 1;
            li = in_values.get(i).copied().unwrap_or(0);
            continue;
        }
        if lj <= 0 {
            j += 1;
            lj = out_values.get(j).copied().unwrap_or(0);
            continue;
        }
        let o = li.min(lj);
        emit(i, j, o);
        li -= o;
        lj -= o;
    }
}

fn lower(g: &SpendGraph, q: &Query) -> Result<Lowered> {
    let mut is_seed = vec![false; g.outputs()];
    for &o in &q.seed_outputs {
        is_seed[o as usize] = true;
    }
    // An output passes taint on unless it pays a stop address (seeds always do).
    let passes =
        |o: u32| is_seed[o as usize] || !q.stop_addresses.contains(&g.out_addr[o as usize]);
    let value = |o: u32| g.out_value[o as usize].max(0);
    let poison = q.policy == Policy::Poison;
    // An edge's weight on transaction nodes: 1 for poison, else its share of the total.
    let share = |v: i64, total: i64| {
        if poison {
            1.0
        } else if total > 0 {
            v as f64 / total as f64
        } else {
            0.0
        }
    };
    let n_tx = g.transactions();
    let mut csr = Csr::new();
    let (nodes, problem_nodes, seeds) = match (q.policy, q.direction) {
        (Policy::Poison | Policy::Haircut, Direction::Forward) => {
            for d in 0..n_tx {
                if q.blocked_txs.contains(&(d as u32)) {
                    continue;
                }
                let ins = &g.in_spent[g.in_start[d] as usize..g.in_start[d + 1] as usize];
                let total: i64 = ins.iter().filter(|&&o| o != NONE).map(|&o| value(o)).sum();
                for &o in ins {
                    if o == NONE || !passes(o) {
                        continue;
                    }
                    let src = if is_seed[o as usize] {
                        SEED_SOURCE
                    } else {
                        g.tx_of_output(o)
                    };
                    csr.push(d as u32, src, share(value(o), total), value(o));
                }
            }
            (Nodes::Transactions, n_tx, Vec::new())
        }
        (Policy::Poison | Policy::Haircut, Direction::Backward) => {
            let spender = g.spenders();
            for d in 0..n_tx {
                if q.blocked_txs.contains(&(d as u32)) {
                    continue;
                }
                let outs = g.out_start[d]..g.out_start[d + 1];
                let total: i64 = outs.clone().map(value).sum();
                for j in outs {
                    let src = if is_seed[j as usize] {
                        SEED_SOURCE
                    } else if spender[j as usize] == NONE || !passes(j) {
                        continue;
                    } else {
                        spender[j as usize]
                    };
                    csr.push(d as u32, src, share(value(j), total), value(j));
                }
            }
            (Nodes::Transactions, n_tx, Vec::new())
        }
        (Policy::Fifo, dir) => {
            let spender = match dir {
                Direction::Forward => Vec::new(),
                Direction::Backward => g.spenders(),
            };
            let mut in_values = Vec::new();
            for d in 0..n_tx {
                if q.blocked_txs.contains(&(d as u32)) {
                    continue;
                }
                let ins = &g.in_spent[g.in_start[d] as usize..g.in_start[d + 1] as usize];
                let outs = g.out_start[d]..g.out_start[d + 1];
                in_values.clear();
                in_values.extend(ins.iter().map(|&o| if o == NONE { 0 } else { value(o) }));
                let out_values = &g.out_value[outs.start as usize..outs.end as usize];
                fifo_overlaps(&in_values, out_values, |i, j, sats| {
                    let (oi, oj) = (ins[i], outs.start + j as u32);
                    match dir {
                        Direction::Forward => {
                            if passes(oi) {
                                let src = if is_seed[oi as usize] {
                                    SEED_SOURCE
                                } else {
                                    oi
                                };
                                let w = sats as f64 / value(oj) as f64;
                                csr.push(oj, src, w, value(oi));
                            }
                        }
                        Direction::Backward => {
                            // Only outputs that can be tainted carry anything back.
                            let live = is_seed[oj as usize] || spender[oj as usize] != NONE;
                            if live && passes(oj) {
                                let w = sats as f64 / value(oi) as f64;
                                csr.push(oi, oj, w, value(oj));
                            }
                        }
                    }
                });
            }
            (Nodes::Outputs, g.outputs(), q.seed_outputs.clone())
        }
    };
    Ok(Lowered {
        problem: csr.finish(problem_nodes, seeds)?,
        nodes,
    })
}

impl Lowered {
    /// Tainted outputs from the per-node results.
    fn report(&self, g: &SpendGraph, q: &Query, fraction: &[f32], hop: &[u32]) -> Vec<Tainted> {
        let mut best: Vec<Option<(u32, f32)>> = vec![None; g.outputs()];
        match self.nodes {
            Nodes::Outputs => {
                for (o, (&f, &h)) in fraction.iter().zip(hop).enumerate() {
                    if h != UNREACHED {
                        best[o] = Some((h, f));
                    }
                }
            }
            Nodes::Transactions => {
                for (t, (&f, &h)) in fraction.iter().zip(hop).enumerate() {
                    if h == UNREACHED {
                        continue;
                    }
                    let f = if q.policy == Policy::Poison { 1.0 } else { f };
                    let outs: Box<dyn Iterator<Item = u32>> = match q.direction {
                        Direction::Forward => Box::new(g.out_start[t]..g.out_start[t + 1]),
                        Direction::Backward => Box::new(
                            g.in_spent[g.in_start[t] as usize..g.in_start[t + 1] as usize]
                                .iter()
                                .copied()
                                .filter(|&o| o != NONE),
                        ),
                    };
                    for o in outs {
                        best[o as usize] = Some((h, f));
                    }
                }
                // Seeds are tainted whole at hop 0, whatever their transaction carries.
                for &o in &q.seed_outputs {
                    best[o as usize] = Some((0, 1.0));
                }
            }
        }
        best.iter()
            .enumerate()
            .filter_map(|(o, b)| {
                let (hop, fraction) = (*b)?;
                let value = g.out_value[o].max(0);
                Some(Tainted {
                    output: o as u32,
                    hop,
                    fraction,
                    tainted_value: (decimal(fraction) * value as f64).round() as i64,
                })
            })
            .collect()
    }
}

/// An `f32` as the decimal it stands for (its shortest round-trip form), so that a
/// fraction of 0.2 taints 0.2 of a value, not 0.20000000298.
/// Within a few f32 ulps of 1 counts as 1: shares rounded to f32 one by one can sum to
/// 0.99999994 for money that is wholly tainted.
pub fn decimal(f: f32) -> f64 {
    if f >= 1.0 - 4.0 * f32::EPSILON {
        return 1.0;
    }
    format!("{f}").parse().unwrap_or(f64::from(f))
}

#[cfg(test)]
mod tests;
