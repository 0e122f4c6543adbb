//! Forward taint that resumes where an earlier run stopped: a rerun after new blocks were
//! indexed reads only the new blocks and the earlier run's state, and its rows equal a
//! run from scratch on the whole chain, bit for bit.
//!
//! **Why this is exact.** Forward, every edge runs from an earlier transaction to a later
//! one, so nothing in new blocks changes what earlier outputs carry. What new blocks read
//! of the old chain is the taint of the old outputs they spend: the *open* outputs, the
//! tainted ones nobody had spent at the earlier tip. The state keeps, per open output,
//! its node's values in the three passes a run makes (see [`super::job::run_on_graph`]):
//! - every path (the fixpoint, in chain order): the fraction and hop;
//! - every path with the CoinJoin mixes passing nothing: the fraction and hop;
//! - with a hop limit H, the Jacobi steps: `f_k` for every k ≤ H (the [`Trajectory`]),
//!   because a new node's `f_k` reads its sources' `f_{k−1}`. Without a hop limit this
//!   pass is the fixpoint.
//!
//! The new blocks form a [`Slice`]: their transactions, preceded by a stand-in for each
//! old transaction they spend from (its spent outputs with their values and addresses,
//! from `btc.inputs`), numbered in chain order so that every row sums its edges in the
//! order a run on the whole graph does. The same lowering then runs on the slice, with
//! the stand-ins' values preset from the state. The hop-limited pass runs in chain order
//! too: each node's `f_1 … f_H` from its sources' trajectories, the Jacobi step's sum,
//! gate and flush, so the values are Jacobi's (and the GPU's, which runs the same steps).
//!
//! Exits add up (sums of whole satoshis per output, counts, smallest hops), as do flows
//! and the CoinJoins passed; the state keeps the exits' sums per pass. A proof path walks
//! back from an output to its predecessor (chosen from its transaction's inputs, so it
//! never changes later); the state keeps each tainted output's predecessor.
//!
//! Runs from scratch are the same code on a slice of the whole chain with no state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use ferret_schemas::{Chain, Warehouse};

use super::graph::{NONE, SpendGraph, hex_decode, hex_encode};
use super::job::{Exit, Flow, TaintJob, TaintRun, TaintedOutput, coinjoin_mixes, sort_exits};
use super::{Direction, Policy, Query, Tainted, decimal};
use crate::coinjoin::Detectors;
use crate::propagate::{Propagation, RowSum, SEED_SOURCE, UNREACHED};
use crate::{Error, Result};

/// The version of the state's layout; a state of another version is not resumed from.
pub const STATE_FORMAT: u32 = 1;

/// A node's values at the Jacobi steps: `f_k` for `k = hop, hop + 1, …`, the last value
/// holding beyond; 0 before `hop`. `hop` is [`UNREACHED`] when no step reached it.
#[derive(Clone, Debug, PartialEq)]
pub struct Trajectory {
    pub hop: u32,
    pub values: Vec<f32>,
}

impl Trajectory {
    pub fn unreached() -> Self {
        Self {
            hop: UNREACHED,
            values: Vec::new(),
        }
    }

    fn seed() -> Self {
        Self {
            hop: 0,
            values: vec![1.0],
        }
    }

    /// `f_k`.
    pub fn at(&self, k: u32) -> f32 {
        if self.hop == UNREACHED || k < self.hop || self.values.is_empty() {
            return 0.0;
        }
        let i = ((k - self.hop) as usize).min(self.values.len() - 1);
        self.values[i]
    }
}

/// A node's taint in the three passes.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    /// The hop-limited pass (without a hop limit: the fixpoint's value and hop).
    pub limited: Trajectory,
    /// Every path: fraction, hop.
    pub all: (f32, u32),
    /// Every path with the CoinJoin mixes passing nothing: fraction, hop.
    pub open: (f32, u32),
}

/// A tainted output nobody had spent at the state's tip, with its node's state (the
/// transaction that created it, or the output itself for fifo).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenOutput {
    /// Global output id (`btc.outputs.output_id`).
    pub output: u64,
    /// Global node id: `tx_index` (poison, haircut) or `output_id` (fifo).
    pub node: u64,
    pub state: NodeState,
}

/// One pass's sum at an exit: tainted value, outputs, smallest hop (`u32::MAX`: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitSum {
    pub value: i64,
    pub outputs: u64,
    pub min_hop: u32,
}

impl Default for ExitSum {
    fn default() -> Self {
        Self {
            value: 0,
            outputs: 0,
            min_hop: u32::MAX,
        }
    }
}

impl ExitSum {
    fn add(&mut self, o: &ExitSum) {
        self.value += o.value;
        self.outputs += o.outputs;
        self.min_hop = self.min_hop.min(o.min_hop);
    }
}

/// What a run leaves for the next one to resume from.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ResumeState {
    /// The last block the run read (None: none yet).
    pub height: Option<u64>,
    /// The first transaction and output id after it.
    pub next_tx: u64,
    pub next_output: u64,
    /// By output id.
    pub open: Vec<OpenOutput>,
    /// Per exit address: the hop-limited, every-path and mixes-blocked sums.
    pub exit_sums: BTreeMap<String, [ExitSum; 3]>,
    /// Every output with a `taint` row, in the rows' order (output id), with the output
    /// a proof path steps back to from it (None at hop 0, or when none carries taint).
    pub walk: Vec<(u64, Option<u64>)>,
    /// Named seeds (addresses, txids, as the job names them) found so far.
    pub seeds_found: BTreeSet<String>,
    /// Seed addresses found so far, as the chain spells them.
    pub seed_addresses: BTreeSet<String>,
    pub seed_outputs: u64,
    pub coinjoins_passed: u64,
}

/// The new blocks as a spend graph: stand-ins for the old transactions they spend from
/// (their spent outputs, the others as fillers of value 0), then the new transactions.
#[derive(Clone, Debug, Default)]
pub struct Slice {
    pub g: SpendGraph,
    /// Local transactions `0..stubs` are stand-ins.
    pub stubs: usize,
    /// Local outputs `0..stub_outputs` belong to stand-ins.
    pub stub_outputs: usize,
    /// Per stand-in output: true when no new transaction spends it.
    pub filler: Vec<bool>,
    /// Global ids per local transaction and output.
    pub tx_global: Vec<u64>,
    pub out_global: Vec<u64>,
    /// The last height read, and the ids after the slice.
    pub height: Option<u64>,
    pub next_tx: u64,
    pub next_output: u64,
}

/// More outputs than a transaction in a 4 MWU block can have: a spent vout beyond it is
/// damage (and would size a stand-in).
const MAX_VOUT: u32 = 1 << 20;

/// A spent outpoint of the old chain, as `btc.inputs` describes it.
struct OldSpent {
    txid: String,
    vout: u32,
    output_id: u64,
    value: i64,
    address: Option<String>,
}

/// An input of a new transaction.
enum InRef {
    None,
    New(u64),
    Old(u64),
}

fn bad(path: &str, what: impl std::fmt::Display) -> Error {
    Error::BadGraph(format!("{path}: {what}"))
}

fn col<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    b: &'a RecordBatch,
    name: &str,
    path: &str,
) -> Result<&'a arrow::array::PrimitiveArray<T>> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
        .ok_or_else(|| bad(path, format!("no column `{name}` of the expected type")))
}

fn text<'a>(b: &'a RecordBatch, name: &str, path: &str) -> Result<&'a arrow::array::StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| bad(path, format!("no text column `{name}`")))
}

impl Slice {
    /// Reads the blocks above `after` (every block when None) of the committed Bitcoin
    /// tables; `next_tx` and `next_output` are the ids the first new transaction and output
    /// must have (the state's), so a warehouse that was rebuilt is refused, never misread.
    pub async fn from_warehouse(
        wh: &Warehouse,
        after: Option<u64>,
        next_tx: u64,
        next_output: u64,
    ) -> Result<Self> {
        let store_err = |e| Error::Warehouse(Box::new(e));
        let manifest = wh
            .load_manifest(Chain::Btc)
            .await
            .map_err(store_err)?
            .ok_or(Error::NothingIndexed { chain: "btc" })?;
        let is_new = |h: i64| after.is_none_or(|a| h > a as i64);
        let files = |table: &str| {
            let mut f: Vec<_> = manifest
                .files_of(table)
                .filter(|f| after.is_none_or(|a| f.last_height > a))
                .cloned()
                .collect();
            f.sort_by_key(|f| f.first_height);
            f
        };
        let bar = crate::progress::bar(None, "taint: new blocks");
        // Transactions.
        let mut txids: Vec<[u8; 32]> = Vec::new();
        let mut out_counts: Vec<u32> = Vec::new();
        let mut in_counts: Vec<u32> = Vec::new();
        let mut first_out: Vec<u64> = Vec::new();
        let mut height = after;
        let mut outs_total = next_output;
        for f in files("transactions") {
            bar.set_message(f.path.clone());
            let p = f.path.as_str();
            for b in wh
                .read_columns(
                    p,
                    &[
                        "height",
                        "tx_index",
                        "txid",
                        "output_count",
                        "input_count",
                        "is_coinbase",
                        "first_output_id",
                    ],
                )
                .await
                .map_err(store_err)?
            {
                let h = col::<Int64Type>(&b, "height", p)?;
                let idx = col::<Int64Type>(&b, "tx_index", p)?;
                let txid = text(&b, "txid", p)?;
                let outs = col::<Int64Type>(&b, "output_count", p)?;
                let ins = col::<Int64Type>(&b, "input_count", p)?;
                let coinbase = b
                    .column_by_name("is_coinbase")
                    .and_then(|c| c.as_boolean_opt())
                    .ok_or_else(|| bad(p, "no boolean column `is_coinbase`"))?;
                let fo = col::<Int64Type>(&b, "first_output_id", p)?;
                for r in 0..b.num_rows() {
                    if !is_new(h.value(r)) {
                        continue;
                    }
                    let want = next_tx + txids.len() as u64;
                    if idx.value(r) != want as i64 || fo.value(r) != outs_total as i64 {
                        return Err(bad(
                            p,
                            format!(
                                "transaction {} (first output {}) where {want} (first output {outs_total}) was expected: the chain was rebuilt or is damaged",
                                idx.value(r),
                                fo.value(r)
                            ),
                        ));
                    }
                    let mut id = [0u8; 32];
                    hex_decode(txid.value(r), &mut id).map_err(|e| bad(p, e))?;
                    txids.push(id);
                    let n_out = u32::try_from(outs.value(r))
                        .map_err(|_| bad(p, "output count out of range"))?;
                    out_counts.push(n_out);
                    first_out.push(outs_total);
                    outs_total += u64::from(n_out);
                    in_counts.push(if coinbase.value(r) {
                        0
                    } else {
                        u32::try_from(ins.value(r))
                            .map_err(|_| bad(p, "input count out of range"))?
                    });
                    let hv = u64::try_from(h.value(r)).map_err(|_| bad(p, "negative height"))?;
                    height = Some(height.map_or(hv, |x| x.max(hv)));
                }
            }
        }
        // Outputs.
        let mut out_value: Vec<i64> = Vec::with_capacity((outs_total - next_output) as usize);
        let mut out_addr: Vec<Option<String>> = Vec::with_capacity(out_value.capacity());
        for f in files("outputs") {
            bar.set_message(f.path.clone());
            let p = f.path.as_str();
            for b in wh
                .read_columns(p, &["height", "output_id", "value", "address"])
                .await
                .map_err(store_err)?
            {
                let h = col::<Int64Type>(&b, "height", p)?;
                let id = col::<Int64Type>(&b, "output_id", p)?;
                let value = col::<Int64Type>(&b, "value", p)?;
                let addr = text(&b, "address", p)?;
                for r in 0..b.num_rows() {
                    if !is_new(h.value(r)) {
                        continue;
                    }
                    let want = next_output + out_value.len() as u64;
                    if id.value(r) != want as i64 {
                        return Err(bad(
                            p,
                            format!("output {} where {want} was expected", id.value(r)),
                        ));
                    }
                    out_value.push(value.value(r));
                    out_addr.push((!addr.is_null(r)).then(|| addr.value(r).to_string()));
                }
            }
        }
        if next_output + out_value.len() as u64 != outs_total {
            return Err(Error::BadGraph(format!(
                "{} new outputs in the outputs table, {} counted by transactions",
                out_value.len(),
                outs_total - next_output
            )));
        }
        // Inputs, in (transaction, vin) order.
        let mut in_start = vec![0usize];
        for c in &in_counts {
            in_start.push(in_start.last().copied().unwrap_or(0) + *c as usize);
        }
        let mut inputs: Vec<InRef> = Vec::with_capacity(*in_start.last().unwrap_or(&0));
        let mut old: BTreeMap<u64, BTreeMap<u32, OldSpent>> = BTreeMap::new();
        for f in files("inputs") {
            bar.set_message(f.path.clone());
            let p = f.path.as_str();
            for b in wh
                .read_columns(
                    p,
                    &[
                        "height",
                        "tx_index",
                        "vin",
                        "spent_txid",
                        "spent_vout",
                        "spent_tx_index",
                        "spent_output_id",
                        "value",
                        "address",
                    ],
                )
                .await
                .map_err(store_err)?
            {
                let h = col::<Int64Type>(&b, "height", p)?;
                let tx = col::<Int64Type>(&b, "tx_index", p)?;
                let vin = col::<Int32Type>(&b, "vin", p)?;
                let stxid = text(&b, "spent_txid", p)?;
                let svout = col::<Int32Type>(&b, "spent_vout", p)?;
                let stx = col::<Int64Type>(&b, "spent_tx_index", p)?;
                let sout = col::<Int64Type>(&b, "spent_output_id", p)?;
                let value = col::<Int64Type>(&b, "value", p)?;
                let addr = text(&b, "address", p)?;
                for r in 0..b.num_rows() {
                    if !is_new(h.value(r)) {
                        continue;
                    }
                    let t = tx
                        .value(r)
                        .checked_sub(next_tx as i64)
                        .and_then(|t| usize::try_from(t).ok())
                        .filter(|&t| t < txids.len())
                        .ok_or_else(|| bad(p, format!("input of unknown tx {}", tx.value(r))))?;
                    // The coinbase input spends nothing and has no slot.
                    if svout.is_null(r) && in_start[t] == in_start[t + 1] {
                        continue;
                    }
                    let slot = in_start[t] + usize::try_from(vin.value(r)).unwrap_or(usize::MAX);
                    if slot != inputs.len() || slot >= in_start[t + 1] {
                        return Err(bad(
                            p,
                            format!(
                                "input ({}, {}) out of order or beyond the transaction's input count",
                                tx.value(r),
                                vin.value(r)
                            ),
                        ));
                    }
                    if stx.is_null(r) {
                        inputs.push(InRef::None);
                        continue;
                    }
                    if sout.is_null(r) || svout.is_null(r) || stxid.is_null(r) {
                        return Err(bad(
                            p,
                            format!(
                                "input ({}, {}) names a spent transaction but not its output",
                                tx.value(r),
                                vin.value(r)
                            ),
                        ));
                    }
                    let o = u64::try_from(sout.value(r))
                        .map_err(|_| bad(p, "negative spent_output_id"))?;
                    let st = u64::try_from(stx.value(r))
                        .map_err(|_| bad(p, "negative spent_tx_index"))?;
                    let vout_ok = u32::try_from(svout.value(r))
                        .ok()
                        .filter(|&v| v < MAX_VOUT && u64::from(v) <= o);
                    if vout_ok.is_none() {
                        return Err(bad(
                            p,
                            format!(
                                "input ({}, {}) spends output {} of output id {o}",
                                tx.value(r),
                                vin.value(r),
                                svout.value(r)
                            ),
                        ));
                    }
                    if st >= next_tx {
                        if o < next_output || o >= outs_total || st >= next_tx + txids.len() as u64
                        {
                            return Err(bad(
                                p,
                                format!("input spends output {o} outside the chain"),
                            ));
                        }
                        inputs.push(InRef::New(o));
                    } else {
                        if o >= next_output {
                            return Err(bad(
                                p,
                                format!("input spends output {o} of old transaction {st}"),
                            ));
                        }
                        let vout = u32::try_from(svout.value(r))
                            .map_err(|_| bad(p, "negative spent_vout"))?;
                        old.entry(st).or_default().insert(
                            vout,
                            OldSpent {
                                txid: stxid.value(r).to_string(),
                                vout,
                                output_id: o,
                                value: if value.is_null(r) { 0 } else { value.value(r) },
                                address: (!addr.is_null(r)).then(|| addr.value(r).to_string()),
                            },
                        );
                        inputs.push(InRef::Old(o));
                    }
                }
            }
        }
        if inputs.len() != *in_start.last().unwrap_or(&0) {
            return Err(Error::BadGraph(format!(
                "{} new inputs in the inputs table, {} counted by transactions",
                inputs.len(),
                in_start.last().unwrap_or(&0)
            )));
        }
        bar.finish_and_clear();

        // The graph: stand-ins in chain order, then the new transactions.
        let mut s = Slice {
            next_tx: next_tx + txids.len() as u64,
            next_output: outs_total,
            height,
            ..Default::default()
        };
        s.g = SpendGraph::new();
        // Old output id → (local stand-in, vout).
        let mut old_local: HashMap<u64, (u32, u32)> = HashMap::new();
        for (&gt, outs) in &old {
            let first = outs
                .values()
                .next()
                .map(|o| (o.txid.clone(), o.output_id - u64::from(o.vout)));
            let Some((txid_hex, first_id)) = first else {
                continue;
            };
            let max_vout = outs.keys().copied().max().unwrap_or(0);
            let mut spec: Vec<(i64, Option<&str>)> = vec![(0, None); max_vout as usize + 1];
            let mut filler = vec![true; max_vout as usize + 1];
            for o in outs.values() {
                if o.txid != txid_hex || o.output_id - u64::from(o.vout) != first_id {
                    return Err(Error::BadGraph(format!(
                        "inputs disagree about old transaction {gt}: {} / {txid_hex}",
                        o.txid
                    )));
                }
                spec[o.vout as usize] = (o.value, o.address.as_deref());
                filler[o.vout as usize] = false;
            }
            let mut id = [0u8; 32];
            hex_decode(&txid_hex, &mut id).map_err(Error::BadGraph)?;
            let local = s.g.transactions() as u32;
            s.g.push_tx(id, &spec, &[])?;
            for o in outs.values() {
                old_local.insert(o.output_id, (local, o.vout));
            }
            s.tx_global.push(gt);
            s.out_global
                .extend((0..=u64::from(max_vout)).map(|v| first_id + v));
            s.filler.extend(filler);
        }
        s.stubs = s.g.transactions();
        s.stub_outputs = s.g.outputs();
        let mut ins: Vec<Option<(u32, u32)>> = Vec::new();
        let mut spec: Vec<(i64, Option<&str>)> = Vec::new();
        for t in 0..txids.len() {
            spec.clear();
            let o0 = (first_out[t] - next_output) as usize;
            for k in o0..o0 + out_counts[t] as usize {
                spec.push((out_value[k], out_addr[k].as_deref()));
            }
            ins.clear();
            for i in &inputs[in_start[t]..in_start[t + 1]] {
                ins.push(match *i {
                    InRef::None => None,
                    InRef::Old(o) => old_local.get(&o).copied(),
                    InRef::New(o) => {
                        // The new transaction that created it.
                        let k = first_out.partition_point(|&f| f <= o) - 1;
                        Some(((s.stubs + k) as u32, (o - first_out[k]) as u32))
                    }
                });
            }
            s.g.push_tx(txids[t], &spec, &ins)?;
            s.tx_global.push(next_tx + t as u64);
            s.out_global
                .extend((0..u64::from(out_counts[t])).map(|v| first_out[t] + v));
        }
        Ok(s)
    }

    fn is_new_output(&self, o: u32) -> bool {
        o as usize >= self.stub_outputs
    }
}

/// The outcome of a resumed run.
#[derive(Clone, Debug)]
pub struct Resumed {
    /// `outputs`, `flows`: the new blocks' part (earlier rows are the earlier runs');
    /// `exits`, `seed_outputs`, `coinjoins_passed`, `unknown_seeds`: the whole chain's.
    pub run: TaintRun,
    /// The state to resume from next.
    pub state: ResumeState,
    /// The blocks read: above this height (None: from the first).
    pub from: Option<u64>,
}

/// Forward taint over the blocks above `prev`'s tip (every block without `prev`), on the
/// CPU. See the module documentation.
pub async fn resume_btc(
    wh: &Warehouse,
    prev: Option<&ResumeState>,
    job: &TaintJob,
    labels: &[(String, String, String)],
) -> Result<Resumed> {
    super::job::check_categories(
        labels,
        job.seed_categories.iter().chain(&job.stop_categories),
    )?;
    let (after, next_tx, next_output) = match prev {
        Some(p) => (p.height, p.next_tx, p.next_output),
        None => (None, 0, 0),
    };
    let slice = Slice::from_warehouse(wh, after, next_tx, next_output).await?;
    resume_on(&slice, prev, job, labels)
}

/// The fixpoint in chain order with preset nodes (stand-ins): `fixpoint_in_order`'s sum.
fn fixpoint_preset(
    p: &Propagation,
    min: f32,
    preset: &HashMap<u32, (f32, u32)>,
) -> Result<(Vec<f32>, Vec<u32>)> {
    p.validate()?;
    let n = p.nodes() as usize;
    let mut f = vec![0f32; n];
    let mut h = vec![UNREACHED; n];
    for &s in &p.seeds {
        f[s as usize] = 1.0;
        h[s as usize] = 0;
    }
    for v in 0..n {
        if h[v] == 0 {
            continue;
        }
        let (lo, hi) = (p.row_ptr[v] as usize, p.row_ptr[v + 1] as usize);
        if let Some(&(pf, ph)) = preset.get(&(v as u32)) {
            if lo != hi {
                return Err(Error::BadGraph(format!("stand-in node {v} has in-edges")));
            }
            (f[v], h[v]) = (pf, ph);
            continue;
        }
        let mut row = RowSum::new();
        for e in lo..hi {
            let (fs, hs) = match p.src[e] {
                SEED_SOURCE => (1.0, 0),
                s => {
                    if s as usize >= v {
                        return Err(crate::propagate::against(
                            crate::propagate::ChainOrder::Ascending,
                            u64::from(s),
                            v as u64,
                        ));
                    }
                    (f[s as usize], h[s as usize])
                }
            };
            row.edge(p.weight[e], p.gate[e], fs, hs, min);
        }
        (f[v], h[v]) = row.finish();
    }
    Ok((f, h))
}

/// The Jacobi steps 1..=`steps` in chain order: each node's trajectory from its sources'
/// (the step's sum, gate and flush). Nodes no step reaches are left out.
pub fn trajectories(
    p: &Propagation,
    min: f32,
    steps: u32,
    preset: &HashMap<u32, Trajectory>,
) -> Result<HashMap<u32, Trajectory>> {
    p.validate()?;
    let n = p.nodes() as usize;
    let mut out: HashMap<u32, Trajectory> = HashMap::new();
    let seeds: HashSet<u32> = p.seeds.iter().copied().collect();
    let mut vals = Vec::new();
    for v in 0..n as u32 {
        if seeds.contains(&v) {
            out.insert(v, Trajectory::seed());
            continue;
        }
        let (lo, hi) = (
            p.row_ptr[v as usize] as usize,
            p.row_ptr[v as usize + 1] as usize,
        );
        if let Some(t) = preset.get(&v) {
            if lo != hi {
                return Err(Error::BadGraph(format!("stand-in node {v} has in-edges")));
            }
            if t.hop != UNREACHED {
                out.insert(v, t.clone());
            }
            continue;
        }
        for e in lo..hi {
            let s = p.src[e];
            if s != SEED_SOURCE && s >= v {
                return Err(crate::propagate::against(
                    crate::propagate::ChainOrder::Ascending,
                    u64::from(s),
                    u64::from(v),
                ));
            }
        }
        if !(lo..hi).any(|e| p.src[e] == SEED_SOURCE || out.contains_key(&p.src[e])) {
            continue;
        }
        vals.clear();
        let mut hop = UNREACHED;
        // Past every source's last value of its own, the sum no longer changes: no need
        // to step on to a hop limit of a million.
        let settled = (lo..hi)
            .filter_map(|e| out.get(&p.src[e]))
            .filter(|t| t.hop != UNREACHED)
            .map(|t| t.hop.saturating_add(t.values.len() as u32))
            .max()
            .unwrap_or(1)
            .max(1);
        for k in 1..=steps.min(settled) {
            let mut row = RowSum::new();
            for e in lo..hi {
                let fs = match p.src[e] {
                    SEED_SOURCE => 1.0,
                    s => out.get(&s).map_or(0.0, |t| t.at(k - 1)),
                };
                row.edge(p.weight[e], p.gate[e], fs, 0, min);
            }
            let (f, _) = row.finish();
            if hop == UNREACHED && f > 0.0 {
                hop = k;
            }
            if hop != UNREACHED {
                vals.push(f);
            }
        }
        if hop == UNREACHED {
            continue;
        }
        while vals.len() >= 2 && vals[vals.len() - 1] == vals[vals.len() - 2] {
            vals.pop();
        }
        out.insert(
            v,
            Trajectory {
                hop,
                values: vals.clone(),
            },
        );
    }
    Ok(out)
}

/// Runs `job` on a slice, from `prev`'s state.
pub fn resume_on(
    s: &Slice,
    prev: Option<&ResumeState>,
    job: &TaintJob,
    labels: &[(String, String, String)],
) -> Result<Resumed> {
    if job.direction != Direction::Forward {
        return Err(Error::BadQuery(
            "only forward taint resumes: new blocks change what earlier outputs came from".into(),
        ));
    }
    let g = &s.g;
    let empty = ResumeState::default();
    let prev_state = prev.unwrap_or(&empty);

    // Seeds: named addresses (bech32 also in lower case), labelled ones, named txids.
    let mut seed_names: HashMap<String, String> = HashMap::new();
    for a in &job.seed_addresses {
        let a = a.trim();
        seed_names.insert(a.to_string(), a.to_string());
        let lower = a.to_ascii_lowercase();
        if ["bc1", "tb1", "bcrt1"].iter().any(|p| lower.starts_with(p)) {
            seed_names.entry(lower).or_insert_with(|| a.to_string());
        }
    }
    let seed_cats: HashSet<&str> = job.seed_categories.iter().map(String::as_str).collect();
    let mut seed_addr: HashSet<u32> = HashSet::new();
    for a in seed_names.keys() {
        seed_addr.extend(g.address_id(a));
    }
    seed_addr.extend(
        labels
            .iter()
            .filter(|l| seed_cats.contains(l.2.as_str()))
            .filter_map(|l| g.address_id(&l.0)),
    );
    let mut seed_tx: HashMap<[u8; 32], &String> = HashMap::new();
    for t in &job.seed_txids {
        let mut id = [0u8; 32];
        hex_decode(t, &mut id).map_err(Error::BadQuery)?;
        seed_tx.insert(id, t);
    }
    let mut seeds_found = prev_state.seeds_found.clone();
    let mut seed_addresses = prev_state.seed_addresses.clone();
    let mut seed_outputs: Vec<u32> = Vec::new();
    let mut new_seed_outputs = 0u64;
    for t in 0..g.transactions() {
        let by_tx = seed_tx.get(&g.txids[t]);
        if let Some(name) = by_tx {
            seeds_found.insert((*name).clone());
        }
        for o in g.out_start[t]..g.out_start[t + 1] {
            if !s.is_new_output(o) && s.filler[o as usize] {
                continue;
            }
            let a = g.out_addr[o as usize];
            let by_addr = a != NONE && seed_addr.contains(&a);
            if by_addr {
                let name = &g.addresses[a as usize];
                seed_addresses.insert(name.clone());
                if let Some(n) = seed_names.get(name) {
                    seeds_found.insert(n.clone());
                }
            }
            if by_addr || by_tx.is_some() {
                seed_outputs.push(o);
                if s.is_new_output(o) {
                    new_seed_outputs += 1;
                }
            }
        }
    }
    let mut unknown: Vec<String> = Vec::new();
    for a in &job.seed_addresses {
        if !seeds_found.contains(a.trim()) {
            unknown.push(a.trim().to_string());
        }
    }
    for t in &job.seed_txids {
        if !seeds_found.contains(t) {
            unknown.push(t.clone());
        }
    }
    if prev.is_none() && seed_outputs.is_empty() {
        return Err(Error::BadQuery(format!(
            "no seed is on the indexed chain{}",
            if unknown.is_empty() {
                String::new()
            } else {
                format!(" (not found: {})", unknown.join(", "))
            }
        )));
    }
    let stop_cats: HashSet<&str> = job.stop_categories.iter().map(String::as_str).collect();
    let stop_addresses = super::job::stop_address_ids(g, labels, &stop_cats);
    let q = Query {
        policy: job.policy,
        direction: job.direction,
        max_hops: job.max_hops,
        min_value: job.min_value,
        seed_outputs,
        stop_addresses,
        blocked_txs: HashSet::new(),
    };
    let mixes = coinjoin_mixes(g, &Detectors::default());
    let fifo = job.policy == Policy::Fifo;

    // The stand-ins' preset values.
    let stub_tx: HashMap<u64, u32> = (0..s.stubs).map(|t| (s.tx_global[t], t as u32)).collect();
    let stub_out: HashMap<u64, u32> = (0..s.stub_outputs)
        .filter(|&o| !s.filler[o])
        .map(|o| (s.out_global[o], o as u32))
        .collect();
    let mut preset: HashMap<u32, &NodeState> = HashMap::new();
    for e in &prev_state.open {
        let local = if fifo {
            stub_out.get(&e.output).copied()
        } else if stub_out.contains_key(&e.output) {
            stub_tx.get(&e.node).copied()
        } else {
            None
        };
        if let Some(l) = local {
            preset.insert(l, &e.state);
        }
    }
    let all_preset: HashMap<u32, (f32, u32)> = preset.iter().map(|(&k, v)| (k, v.all)).collect();
    let open_preset: HashMap<u32, (f32, u32)> = preset.iter().map(|(&k, v)| (k, v.open)).collect();
    let lim_preset: HashMap<u32, Trajectory> = preset
        .iter()
        .map(|(&k, v)| (k, v.limited.clone()))
        .collect();

    let min = q.min_value.max(0) as f32;
    let lowered = super::lower(g, &q)?;
    let (all_f, all_h) = fixpoint_preset(&lowered.problem, min, &all_preset)?;
    let (open_f, open_h) = if mixes.is_empty() {
        (all_f.clone(), all_h.clone())
    } else {
        let blocked = super::lower(
            g,
            &Query {
                blocked_txs: mixes.keys().copied().collect(),
                ..q.clone()
            },
        )?;
        fixpoint_preset(&blocked.problem, min, &open_preset)?
    };
    let traj = match job.max_hops {
        Some(h) => Some(trajectories(&lowered.problem, min, h, &lim_preset)?),
        None => None,
    };
    let (lim_f, lim_h) = match (&traj, job.max_hops) {
        (Some(t), Some(h)) => {
            let n = lowered.problem.nodes() as usize;
            let (mut f, mut hop) = (vec![0f32; n], vec![UNREACHED; n]);
            for (&v, tr) in t {
                if tr.hop <= h {
                    f[v as usize] = tr.at(h);
                    hop[v as usize] = tr.hop;
                }
            }
            (f, hop)
        }
        _ => (all_f.clone(), all_h.clone()),
    };
    let rows_lim = lowered.report(g, &q, &lim_f, &lim_h);
    let rows_all = lowered.report(g, &q, &all_f, &all_h);
    let rows_open = lowered.report(g, &q, &open_f, &open_h);

    // The new outputs' rows.
    let mover_mix = |o: u32| mixes.get(&g.tx_of_output(o)).map(|p| p.name());
    let mut outputs = Vec::new();
    for row in rows_lim.iter().filter(|r| s.is_new_output(r.output)) {
        let t = g.tx_of_output(row.output);
        let a = g.out_addr[row.output as usize];
        outputs.push(TaintedOutput {
            txid: hex_encode(&g.txids[t as usize]),
            vout: row.output - g.out_start[t as usize],
            address: (a != NONE).then(|| g.addresses[a as usize].clone()),
            value: g.out_value[row.output as usize],
            hop: row.hop,
            fraction: decimal(row.fraction),
            tainted_value: row.tainted_value,
            coinjoin: if row.hop > 0 {
                mover_mix(row.output)
            } else {
                None
            },
        });
    }
    let coinjoins_new = rows_all
        .iter()
        .filter(|r| s.is_new_output(r.output) && r.hop > 0 && r.tainted_value > 0)
        .map(|r| g.tx_of_output(r.output))
        .filter(|t| mixes.contains_key(t))
        .collect::<HashSet<u32>>()
        .len() as u64;

    // Exits: the new outputs' sums added to the state's.
    let label_of = super::job::exit_labels(labels, &stop_cats);
    let mut exit_sums = prev_state.exit_sums.clone();
    for (k, rows) in [&rows_lim, &rows_all, &rows_open].iter().enumerate() {
        for r in rows
            .iter()
            .filter(|r| r.hop > 0 && s.is_new_output(r.output))
        {
            let a = g.out_addr[r.output as usize];
            if a == NONE || seed_addr.contains(&a) {
                continue;
            }
            let name = &g.addresses[a as usize];
            if !label_of.contains_key(name.as_str()) {
                continue;
            }
            let slot = &mut exit_sums.entry(name.clone()).or_default()[k];
            slot.add(&ExitSum {
                value: r.tainted_value,
                outputs: 1,
                min_hop: r.hop,
            });
        }
    }
    let mut exits: Vec<Exit> = exit_sums
        .iter()
        .filter_map(|(a, [limited, all, open])| {
            let &(label, category) = label_of.get(a.as_str())?;
            Some(Exit {
                address: a.clone(),
                label: label.to_string(),
                category: category.to_string(),
                tainted_value: limited.value,
                all_paths_value: all.value,
                coinjoin_value: (all.value - open.value).max(0),
                outputs: limited.outputs,
                min_hop: limited.min_hop.min(all.min_hop),
            })
        })
        .collect();
    sort_exits(&mut exits);

    let flows = if job.with_flows {
        super::job::flows(g, &q, &rows_lim, &mixes)
    } else {
        Vec::new()
    };

    // Proof-path predecessors of the new rows.
    let by_out: HashMap<u32, &Tainted> = rows_lim
        .iter()
        .filter(|r| r.fraction > 0.0)
        .map(|r| (r.output, r))
        .collect();
    let mut walk = prev_state.walk.clone();
    for r in rows_lim.iter().filter(|r| s.is_new_output(r.output)) {
        let pred = if r.hop == 0 || r.fraction <= 0.0 {
            None
        } else {
            walk_pred(g, &by_out, r).map(|p| s.out_global[p as usize])
        };
        walk.push((s.out_global[r.output as usize], pred));
    }

    // The open outputs at the new tip.
    let mut spent_new = vec![false; g.outputs()];
    for &o in &g.in_spent {
        if o != NONE {
            spent_new[o as usize] = true;
        }
    }
    let mut open: Vec<OpenOutput> = prev_state
        .open
        .iter()
        .filter(|e| !stub_out.contains_key(&e.output))
        .cloned()
        .collect();
    for t in s.stubs..g.transactions() {
        for o in g.out_start[t]..g.out_start[t + 1] {
            if spent_new[o as usize] {
                continue;
            }
            let node = if fifo { o } else { t as u32 } as usize;
            if all_h[node] == UNREACHED {
                continue;
            }
            let limited = match &traj {
                Some(tr) => tr
                    .get(&(node as u32))
                    .cloned()
                    .unwrap_or_else(Trajectory::unreached),
                None => Trajectory {
                    hop: all_h[node],
                    values: vec![all_f[node]],
                },
            };
            open.push(OpenOutput {
                output: s.out_global[o as usize],
                node: if fifo {
                    s.out_global[o as usize]
                } else {
                    s.tx_global[t]
                },
                state: NodeState {
                    limited,
                    all: (all_f[node], all_h[node]),
                    open: (open_f[node], open_h[node]),
                },
            });
        }
    }

    let state = ResumeState {
        height: s.height,
        next_tx: s.next_tx,
        next_output: s.next_output,
        open,
        exit_sums,
        walk,
        seeds_found,
        seed_addresses: seed_addresses.clone(),
        seed_outputs: prev_state.seed_outputs + new_seed_outputs,
        coinjoins_passed: prev_state.coinjoins_passed + coinjoins_new,
    };
    tracing::info!(
        policy = job.policy.as_str(),
        from = ?prev.and_then(|p| p.height),
        to = ?s.height,
        transactions = g.transactions() - s.stubs,
        stand_ins = s.stubs,
        tainted = outputs.len(),
        exits = exits.len(),
        "taint resumed"
    );
    Ok(Resumed {
        run: TaintRun {
            job: job.clone(),
            outputs,
            exits,
            seed_outputs: state.seed_outputs as usize,
            seed_addresses: seed_addresses.into_iter().collect(),
            flows,
            unknown_seeds: unknown,
            coinjoins_passed: state.coinjoins_passed as usize,
            steps: job.max_hops.unwrap_or(1),
            nodes: lowered.problem.nodes(),
            edges: lowered.problem.src.len(),
            device: "cpu (resumed, chain order)".into(),
        },
        from: prev.and_then(|p| p.height),
        state,
    })
}

/// The output a proof path steps back to from `r`: among its transaction's tainted
/// inputs, one hop closer to a seed (else any closer), the larger tainted value, then
/// fraction, then the lower output id.
fn walk_pred(g: &SpendGraph, tainted: &HashMap<u32, &Tainted>, r: &Tainted) -> Option<u32> {
    let t = g.tx_of_output(r.output) as usize;
    let ins = &g.in_spent[g.in_start[t] as usize..g.in_start[t + 1] as usize];
    let better = |a: &(u32, u32, i64, f64), b: &(u32, u32, i64, f64)| {
        a.2.cmp(&b.2).then(a.3.total_cmp(&b.3)).then(b.0.cmp(&a.0))
    };
    let best = |want: Option<u32>| {
        ins.iter()
            .copied()
            .filter(|&p| p != NONE)
            .filter_map(|p| {
                tainted
                    .get(&p)
                    .map(|x| (p, x.hop, x.tainted_value, decimal(x.fraction)))
            })
            .filter(|&(_, h, _, _)| want.map_or(h < r.hop, |w| h == w))
            .max_by(better)
    };
    best(Some(r.hop - 1)).or_else(|| best(None)).map(|x| x.0)
}

/// Adds `more` flows to `into` (per address pair: values add, the smallest hop, the
/// CoinJoin first by name), sorted by (from, to) as a run's are: one merge of the two
/// sorted lists (a case's flows can run to millions of pairs).
pub fn merge_flows(into: &mut Vec<Flow>, mut more: Vec<Flow>) {
    fn key(f: &Flow) -> (&str, &str) {
        (f.from.as_str(), f.to.as_str())
    }
    let mut old = std::mem::take(into);
    for v in [&mut old, &mut more] {
        if !v.is_sorted_by(|a, b| key(a) <= key(b)) {
            v.sort_by(|a, b| key(a).cmp(&key(b)));
        }
    }
    let mut out = Vec::with_capacity(old.len() + more.len());
    let (mut a, mut b) = (old.into_iter().peekable(), more.into_iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => key(x).cmp(&key(y)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => break,
        };
        match order {
            std::cmp::Ordering::Less => out.extend(a.next()),
            std::cmp::Ordering::Greater => out.extend(b.next()),
            std::cmp::Ordering::Equal => {
                if let (Some(mut x), Some(y)) = (a.next(), b.next()) {
                    x.tainted_value += y.tainted_value;
                    x.hop = x.hop.min(y.hop);
                    x.coinjoin = super::job::first_mix(x.coinjoin, y.coinjoin);
                    out.push(x);
                }
            }
        }
    }
    *into = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagate::{Options, propagate_cpu, propagate_jacobi_cpu};
    use rand::{Rng, SeedableRng};

    /// A random acyclic problem: edges from lower to higher ids, some from seeds.
    fn random_problem(rng: &mut rand_chacha::ChaCha8Rng, n: usize, unit: bool) -> Propagation {
        let mut row_ptr = vec![0u32];
        let (mut src, mut weight, mut gate) = (Vec::new(), Vec::new(), Vec::new());
        for v in 0..n {
            let k = rng.random_range(0..4usize);
            let mut srcs: Vec<u32> = (0..k)
                .filter(|_| v > 0)
                .map(|_| rng.random_range(0..v as u32))
                .collect();
            if rng.random_bool(0.08) {
                srcs.push(SEED_SOURCE);
            }
            srcs.sort_unstable();
            for s in srcs {
                src.push(s);
                weight.push(if unit {
                    1.0
                } else {
                    rng.random_range(0.01f32..0.9)
                });
                gate.push(rng.random_range(0..50_000) as f32);
            }
            row_ptr.push(src.len() as u32);
        }
        let seeds = (0..n as u32).filter(|_| rng.random_bool(0.02)).collect();
        Propagation {
            row_ptr,
            src,
            weight,
            gate,
            seeds,
        }
    }

    #[test]
    fn trajectories_are_the_jacobi_steps_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for case in 0..60 {
            let unit = case % 3 == 0;
            let p = random_problem(&mut rng, 400, unit);
            // Hop limits from 1 to beyond any path (a limit of a million must not cost a
            // million steps a node).
            let h = if case % 7 == 6 {
                1_000_000
            } else {
                rng.random_range(1..9u32)
            };
            let min = if case % 2 == 0 { 0.0 } else { 3_000.0 };
            let opts = Options {
                max_hops: Some(h),
                min_value: min,
            };
            let want = if unit {
                propagate_cpu(&p, &opts)
            } else {
                propagate_jacobi_cpu(&p, &opts)
            };
            let t = trajectories(&p, min, h, &HashMap::new()).expect("trajectories");
            let mut reached = 0;
            for v in 0..p.nodes() {
                let (f, hop) = match t.get(&v) {
                    Some(tr) if tr.hop <= h => (tr.at(h), tr.hop),
                    _ => (0.0, UNREACHED),
                };
                assert_eq!(hop, want.hop[v as usize], "case {case} node {v} hop");
                assert_eq!(
                    f.to_bits(),
                    want.fraction[v as usize].to_bits(),
                    "case {case} node {v}: {f} vs {}",
                    want.fraction[v as usize]
                );
                reached += usize::from(hop != UNREACHED);
            }
            assert!(reached > 10, "case {case}: only {reached} nodes reached");
        }
    }

    #[test]
    fn presets_continue_a_problem_cut_in_two() {
        // Nodes below `cut` are computed on the whole problem; a second problem holds
        // only the nodes at and above it, with the first part's boundary preset.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..20 {
            let p = random_problem(&mut rng, 300, false);
            let h = 5;
            let min = if case % 2 == 0 { 0.0 } else { 2_000.0 };
            let whole = trajectories(&p, min, h, &HashMap::new()).expect("whole");
            let (wf, wh) = fixpoint_preset(&p, min, &HashMap::new()).expect("fixpoint");
            let cut = 150u32;
            // Preset every node below the cut (their rows emptied).
            let mut q = p.clone();
            let mut row_ptr = vec![0u32];
            let (mut src, mut weight, mut gate) = (Vec::new(), Vec::new(), Vec::new());
            for v in 0..p.nodes() {
                if v >= cut {
                    for e in p.row_ptr[v as usize] as usize..p.row_ptr[v as usize + 1] as usize {
                        src.push(p.src[e]);
                        weight.push(p.weight[e]);
                        gate.push(p.gate[e]);
                    }
                }
                row_ptr.push(src.len() as u32);
            }
            q.row_ptr = row_ptr;
            q.src = src;
            q.weight = weight;
            q.gate = gate;
            q.seeds.retain(|&s| s >= cut);
            let lim: HashMap<u32, Trajectory> = (0..cut)
                .map(|v| {
                    (
                        v,
                        whole.get(&v).cloned().unwrap_or_else(Trajectory::unreached),
                    )
                })
                .collect();
            let fix: HashMap<u32, (f32, u32)> = (0..cut)
                .map(|v| (v, (wf[v as usize], wh[v as usize])))
                .collect();
            let part = trajectories(&q, min, h, &lim).expect("part");
            let (pf, ph) = fixpoint_preset(&q, min, &fix).expect("part fixpoint");
            for v in cut..p.nodes() {
                assert_eq!(part.get(&v), whole.get(&v), "case {case} node {v}");
                assert_eq!(pf[v as usize].to_bits(), wf[v as usize].to_bits());
                assert_eq!(ph[v as usize], wh[v as usize]);
            }
        }
    }
}
