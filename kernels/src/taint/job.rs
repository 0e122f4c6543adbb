//! A taint run over the warehouse: seeds and stops from addresses, txids and label
//! categories; results as the `taint` and `exits` tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use ferret_schemas::Warehouse;
use ferret_schemas::results::{exits_schema, taint_schema};

use super::graph::{SpendGraph, hex_decode, hex_encode};
use super::{Direction, NONE, Policy, Query, seed_outputs};
use crate::coinjoin::{Detectors, Protocol, TxShape};
use crate::device::Backend;
use crate::{Error, Result};

/// What to trace. The default: haircut, forward, no hop limit, no minimum, no seeds.
#[derive(Clone, Debug)]
pub struct TaintJob {
    pub policy: Policy,
    pub direction: Direction,
    pub max_hops: Option<u32>,
    pub min_value: i64,
    pub seed_addresses: Vec<String>,
    pub seed_txids: Vec<String>,
    /// Every address labelled with one of these categories is a seed.
    pub seed_categories: Vec<String>,
    /// Labelled addresses of these categories receive taint but pass none on.
    pub stop_categories: Vec<String>,
    /// Work out the address-to-address flows too (`ferret trace` draws them; they cost
    /// memory per tainted output, so runs that only write tables leave them out).
    pub with_flows: bool,
}

/// One tainted output, as the `taint` table has it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaintedOutput {
    pub txid: String,
    pub vout: u32,
    pub address: Option<String>,
    pub value: i64,
    pub hop: u32,
    pub fraction: f64,
    pub tainted_value: i64,
    /// The CoinJoin mix that moved this output's taint (forward: the transaction that
    /// created it; backward: the one that spent it), by protocol name.
    pub coinjoin: Option<&'static str>,
}

/// One labelled address that received taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub address: String,
    pub label: String,
    pub category: String,
    /// Along paths of at most `max_hops` spends (every path without a limit): the
    /// `taint` table's definition, what the summary lines add up.
    pub tainted_value: i64,
    /// Along every path, however long (the fixpoint): equal to `tainted_value` without a
    /// hop limit.
    pub all_paths_value: i64,
    /// The part of `all_paths_value` that arrived only through CoinJoin mixes: what would
    /// not have arrived had the mixes passed no taint.
    pub coinjoin_value: i64,
    /// Tainted outputs paying it within the hop limit.
    pub outputs: u64,
    /// The fewest spends from a seed, over every path.
    pub min_hop: u32,
}

/// Tainted value moving from one address to another (through one transaction or many).
/// Outputs without an address show as `txid:vout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub from: String,
    pub to: String,
    pub tainted_value: i64,
    /// The smallest hop of the receiving outputs.
    pub hop: u32,
    /// The CoinJoin mix the flow passed through (protocol name), if any; of several, the
    /// first by name.
    pub coinjoin: Option<&'static str>,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct TaintRun {
    pub job: TaintJob,
    pub outputs: Vec<TaintedOutput>,
    /// By tainted amount, largest first.
    pub exits: Vec<Exit>,
    pub seed_outputs: usize,
    /// Seed addresses (as the chain spells them).
    pub seed_addresses: Vec<String>,
    /// Tainted value moved between addresses, aggregated per (from, to).
    pub flows: Vec<Flow>,
    /// Seed addresses and txids the chain does not have.
    pub unknown_seeds: Vec<String>,
    /// CoinJoin mixes that moved taint (over every path).
    pub coinjoins_passed: usize,
    pub steps: u32,
    pub nodes: u32,
    pub edges: usize,
    pub device: String,
}

/// The Bitcoin rows of the `labels` table: (address, label, category).
pub async fn btc_labels(wh: &Warehouse) -> Result<Vec<(String, String, String)>> {
    chain_labels(wh, "btc").await
}

/// The rows of the `labels` table for one chain (`btc`, `eth`): (address, label,
/// category).
/// Reads the latest run a file at a time and only the four columns it needs: what it
/// holds beyond the rows is one file's columns.
pub async fn chain_labels(wh: &Warehouse, chain: &str) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let wh_err = |e| Error::Warehouse(Box::new(e));
    let Some(run) = wh.latest_run("labels").await.map_err(wh_err)? else {
        return Ok(out);
    };
    for f in &run.files {
        let batches = wh
            .read_columns(f, &["chain", "address", "label", "category"])
            .await
            .map_err(wh_err)?;
        for b in &batches {
            labels_of(b, chain, &mut out)?;
        }
    }
    Ok(out)
}

/// Appends the rows of one `labels` batch on `wanted`'s chain to `out`.
fn labels_of(
    b: &arrow::array::RecordBatch,
    wanted: &str,
    out: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let col = |name: &str| {
        b.column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| Error::BadGraph(format!("labels: no text column `{name}`")))
    };
    let (chain, address, label, category) = (
        col("chain")?,
        col("address")?,
        col("label")?,
        col("category")?,
    );
    for r in 0..b.num_rows() {
        if chain.value(r) == wanted {
            out.push((
                address.value(r).to_string(),
                label.value(r).to_string(),
                category.value(r).to_string(),
            ));
        }
    }
    Ok(())
}

/// Builds the graph and runs `job` on `backend`.
pub async fn taint_btc(wh: &Warehouse, backend: &Backend, job: &TaintJob) -> Result<TaintRun> {
    let labels = btc_labels(wh).await?;
    check_categories(
        &labels,
        job.seed_categories.iter().chain(&job.stop_categories),
    )?;
    let g = SpendGraph::from_warehouse(wh).await?;
    run_on_graph(&g, backend, job, &labels)
}

/// Refuses a category no label has (a typo would otherwise seed or stop nothing).
pub fn check_categories<'a>(
    labels: &[(String, String, String)],
    categories: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    for c in categories {
        if !labels.iter().any(|l| &l.2 == c) {
            let mut known: Vec<&str> = labels.iter().map(|l| l.2.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            return Err(Error::BadQuery(format!(
                "no address is labelled with category `{c}` (known: {}): import labels first (`ferret labels import`)",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// Runs `job` on a built graph with the given labels (address, label, category).
pub fn run_on_graph(
    g: &SpendGraph,
    backend: &Backend,
    job: &TaintJob,
    labels: &[(String, String, String)],
) -> Result<TaintRun> {
    let mut unknown = Vec::new();
    let mut seed_addrs: Vec<u32> = Vec::new();
    for a in &job.seed_addresses {
        let a = a.trim();
        // Bech32 is case-insensitive (QR codes use upper case); the tables hold lower case.
        let lower = a.to_ascii_lowercase();
        let bech32 = ["bc1", "tb1", "bcrt1"].iter().any(|p| lower.starts_with(p));
        match g
            .address_id(a)
            .or_else(|| bech32.then(|| g.address_id(&lower)).flatten())
        {
            Some(id) => seed_addrs.push(id),
            None => unknown.push(a.to_string()),
        }
    }
    let seed_cats: HashSet<&str> = job.seed_categories.iter().map(String::as_str).collect();
    seed_addrs.extend(
        labels
            .iter()
            .filter(|l| seed_cats.contains(l.2.as_str()))
            .filter_map(|l| g.address_id(&l.0)),
    );
    seed_addrs.sort_unstable();
    seed_addrs.dedup();
    let mut seed_txs = Vec::new();
    if !job.seed_txids.is_empty() {
        let map = g.txid_map();
        for t in &job.seed_txids {
            let mut id = [0u8; 32];
            hex_decode(t, &mut id).map_err(Error::BadQuery)?;
            match map.get(&id) {
                Some(&i) => seed_txs.push(i),
                None => unknown.push(t.clone()),
            }
        }
    }
    let seeds = seed_outputs(g, &seed_addrs, &seed_txs);
    if seeds.is_empty() {
        return Err(Error::BadQuery(format!(
            "no seed is on the indexed chain{}",
            if unknown.is_empty() {
                String::new()
            } else {
                format!(" (not found: {})", unknown.join(", "))
            }
        )));
    }
    for u in &unknown {
        tracing::warn!(seed = %u, "seed not on the indexed chain");
    }
    let stop_cats: HashSet<&str> = job.stop_categories.iter().map(String::as_str).collect();
    let stop_addresses = stop_address_ids(g, labels, &stop_cats);
    let q = Query {
        policy: job.policy,
        direction: job.direction,
        max_hops: job.max_hops,
        min_value: job.min_value,
        seed_outputs: seeds.clone(),
        stop_addresses,
        blocked_txs: HashSet::new(),
    };
    let mixes = coinjoin_mixes(g, &Detectors::default());
    let r = super::run(backend, g, &q)?;
    // Beside the hop-limited run: every path (the fixpoint), and every path with the
    // CoinJoin mixes passing nothing, for the exits' all-paths and CoinJoin amounts.
    let unlimited = Query {
        max_hops: None,
        ..q.clone()
    };
    let all_rows = match job.max_hops {
        Some(_) => super::run(backend, g, &unlimited)?.rows,
        None => r.rows.clone(),
    };
    let no_mix_rows = if mixes.is_empty() {
        all_rows.clone()
    } else {
        super::run(
            backend,
            g,
            &Query {
                blocked_txs: mixes.keys().copied().collect(),
                ..unlimited
            },
        )?
        .rows
    };
    let spenders = match (q.direction, mixes.is_empty()) {
        (Direction::Backward, false) => g.spenders(),
        _ => Vec::new(),
    };
    // The transaction that moved an output's taint: forward its creator, backward its
    // spender.
    let mover = |o: u32| -> Option<u32> {
        match q.direction {
            Direction::Forward => Some(g.tx_of_output(o)),
            Direction::Backward => spenders.get(o as usize).copied().filter(|&t| t != NONE),
        }
    };
    let mix_of = |o: u32| mover(o).and_then(|t| mixes.get(&t)).map(|p| p.name());
    let coinjoins_passed = all_rows
        .iter()
        .filter(|r| r.hop > 0 && r.tainted_value > 0)
        .filter_map(|r| mover(r.output).filter(|t| mixes.contains_key(t)))
        .collect::<HashSet<u32>>()
        .len();
    let mut outputs = Vec::with_capacity(r.rows.len());
    for row in &r.rows {
        let t = g.tx_of_output(row.output);
        let a = g.out_addr[row.output as usize];
        outputs.push(TaintedOutput {
            txid: hex_encode(&g.txids[t as usize]),
            vout: row.output - g.out_start[t as usize],
            address: (a != NONE).then(|| g.addresses[a as usize].clone()),
            value: g.out_value[row.output as usize],
            hop: row.hop,
            fraction: super::decimal(row.fraction),
            tainted_value: row.tainted_value,
            coinjoin: if row.hop > 0 {
                mix_of(row.output)
            } else {
                None
            },
        });
    }
    let exits = exits(
        g,
        labels,
        &stop_cats,
        &seed_addrs,
        [&r.rows, &all_rows, &no_mix_rows],
    );
    let flows = if job.with_flows {
        flows(g, &q, &r.rows, &mixes)
    } else {
        Vec::new()
    };
    let seed_addresses = seed_addrs
        .iter()
        .map(|&a| g.addresses[a as usize].clone())
        .collect();
    tracing::info!(
        policy = job.policy.as_str(),
        direction = job.direction.as_str(),
        seeds = seeds.len(),
        tainted = outputs.len(),
        exits = exits.len(),
        coinjoins = coinjoins_passed,
        steps = r.steps,
        device = %backend.describe(),
        "taint"
    );
    Ok(TaintRun {
        job: job.clone(),
        outputs,
        exits,
        seed_outputs: seeds.len(),
        seed_addresses,
        flows,
        unknown_seeds: unknown,
        coinjoins_passed,
        steps: r.steps,
        nodes: r.nodes,
        edges: r.edges,
        device: backend.describe(),
    })
}

fn output_name(g: &SpendGraph, o: u32) -> String {
    match g.out_addr[o as usize] {
        NONE => {
            let t = g.tx_of_output(o);
            format!(
                "{}:{}",
                hex_encode(&g.txids[t as usize]),
                o - g.out_start[t as usize]
            )
        }
        a => g.addresses[a as usize].clone(),
    }
}

/// Address-to-address flows of tainted value. Forward, a tainted output's value comes
/// from the tainted outputs its transaction spent that carry taint (not stopped, not
/// below the minimum), in proportion to their tainted values (fifo: to the tainted
/// satoshis of each input inside the output's stretch); backward, mirrored.
pub(crate) fn flows(
    g: &SpendGraph,
    q: &Query,
    rows: &[super::Tainted],
    mixes: &HashMap<u32, Protocol>,
) -> Vec<Flow> {
    let tainted: HashMap<u32, &super::Tainted> = rows.iter().map(|r| (r.output, r)).collect();
    let seeds: HashSet<u32> = q.seed_outputs.iter().copied().collect();
    let carries = |p: u32| {
        tainted.get(&p).is_some_and(|t| {
            (seeds.contains(&p) || !q.stop_addresses.contains(&g.out_addr[p as usize]))
                && t.tainted_value >= q.min_value
                && t.tainted_value > 0
        })
    };
    let spenders = match q.direction {
        Direction::Backward => g.spenders(),
        Direction::Forward => Vec::new(),
    };
    let value = |o: u32| g.out_value[o as usize].max(0);
    let mut agg: HashMap<(u32, u32), (i64, u32, Option<&'static str>)> = HashMap::new();
    for r in rows.iter().filter(|r| r.hop > 0 && r.tainted_value > 0) {
        // The transaction that moved r's taint, and r's position in it.
        let (t, r_is_output) = match q.direction {
            Direction::Forward => (g.tx_of_output(r.output) as usize, true),
            Direction::Backward => match spenders[r.output as usize] {
                NONE => continue,
                d => (d as usize, false),
            },
        };
        let ins = &g.in_spent[g.in_start[t] as usize..g.in_start[t + 1] as usize];
        let outs = g.out_start[t]..g.out_start[t + 1];
        // (other side, weight) pairs.
        let mut others: Vec<(u32, f64)> = Vec::new();
        if q.policy == super::Policy::Fifo {
            let in_values: Vec<i64> = ins
                .iter()
                .map(|&o| if o == NONE { 0 } else { value(o) })
                .collect();
            let out_values = &g.out_value[outs.start as usize..outs.end as usize];
            super::fifo_overlaps(&in_values, out_values, |i, j, sats| {
                let (oi, oj) = (ins[i], outs.start + j as u32);
                let (mine, other) = if r_is_output { (oj, oi) } else { (oi, oj) };
                if mine == r.output && carries(other) {
                    others.push((other, sats as f64 * f64::from(tainted[&other].fraction)));
                }
            });
        } else {
            let side: Vec<u32> = if r_is_output {
                ins.iter().copied().filter(|&o| o != NONE).collect()
            } else {
                outs.collect()
            };
            for p in side {
                if carries(p) {
                    others.push((p, tainted[&p].tainted_value as f64));
                }
            }
        }
        let total: f64 = others.iter().map(|o| o.1).sum();
        if total <= 0.0 {
            continue;
        }
        let mix = mixes.get(&(t as u32)).map(|p| p.name());
        for (p, w) in others {
            let share = (r.tainted_value as f64 * w / total).round() as i64;
            let key = if r_is_output {
                (p, r.output)
            } else {
                (r.output, p)
            };
            let e = agg.entry(key).or_insert((0, u32::MAX, None));
            e.0 += share;
            e.1 = e.1.min(r.hop);
            e.2 = first_mix(e.2, mix);
        }
    }
    // Aggregate per address pair.
    let mut by: BTreeMap<(String, String), (i64, u32, Option<&'static str>)> = BTreeMap::new();
    for ((a, b), (v, h, mix)) in agg {
        let e = by
            .entry((output_name(g, a), output_name(g, b)))
            .or_insert((0, u32::MAX, None));
        e.0 += v;
        e.1 = e.1.min(h);
        e.2 = first_mix(e.2, mix);
    }
    by.into_iter()
        .map(|((from, to), (tainted_value, hop, coinjoin))| Flow {
            from,
            to,
            tainted_value,
            hop,
            coinjoin,
        })
        .collect()
}

/// The CoinJoin a flow names when its value passed through several: the first by name,
/// so that the answer does not depend on the order the flows were added up in.
pub(crate) fn first_mix(a: Option<&'static str>, b: Option<&'static str>) -> Option<&'static str> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Labelled addresses that received taint (beyond the seeds): of the stop categories when
/// there are any, else of any category other than the seeds' own addresses. `runs` are
/// the hop-limited rows, every path's, and every path's with the mixes blocked.
fn exits(
    g: &SpendGraph,
    labels: &[(String, String, String)],
    stop: &HashSet<&str>,
    seed_addrs: &[u32],
    runs: [&[super::Tainted]; 3],
) -> Vec<Exit> {
    let seeds: HashSet<u32> = seed_addrs.iter().copied().collect();
    let by_name = exit_labels(labels, stop);
    let label_of: HashMap<u32, (&str, &str)> = by_name
        .iter()
        .filter_map(|(a, l)| Some((g.address_id(a)?, *l)))
        .collect();
    // Per exit address: (value, outputs, min hop) in each run.
    let mut by: BTreeMap<u32, [(i64, u64, u32); 3]> = BTreeMap::new();
    for (k, rows) in runs.iter().enumerate() {
        for r in rows.iter().filter(|r| r.hop > 0) {
            let a = g.out_addr[r.output as usize];
            if a == NONE || seeds.contains(&a) || !label_of.contains_key(&a) {
                continue;
            }
            let slot = &mut by.entry(a).or_insert([(0, 0, u32::MAX); 3])[k];
            slot.0 += r.tainted_value;
            slot.1 += 1;
            slot.2 = slot.2.min(r.hop);
        }
    }
    let mut v: Vec<Exit> = by
        .into_iter()
        .map(|(a, [limited, all, open])| {
            let (label, category) = label_of[&a];
            Exit {
                address: g.addresses[a as usize].clone(),
                label: label.to_string(),
                category: category.to_string(),
                tainted_value: limited.0,
                all_paths_value: all.0,
                coinjoin_value: (all.0 - open.0).max(0),
                outputs: limited.1,
                min_hop: limited.2.min(all.2),
            }
        })
        .collect();
    sort_exits(&mut v);
    v
}

/// One label per address that can be an exit: of the stop categories when there are any
/// (else of any category), the smallest (label, category).
pub(crate) fn exit_labels<'a>(
    labels: &'a [(String, String, String)],
    stop: &HashSet<&str>,
) -> HashMap<&'a str, (&'a str, &'a str)> {
    let mut label_of: HashMap<&str, (&str, &str)> = HashMap::new();
    for (a, l, c) in labels {
        if !stop.is_empty() && !stop.contains(c.as_str()) {
            continue;
        }
        let e = label_of.entry(a.as_str()).or_insert((l, c));
        if (l.as_str(), c.as_str()) < *e {
            *e = (l, c);
        }
    }
    label_of
}

/// The addresses of `g` labelled with one of `stop`'s categories (they receive taint and
/// pass none on).
pub(crate) fn stop_address_ids(
    g: &SpendGraph,
    labels: &[(String, String, String)],
    stop: &HashSet<&str>,
) -> HashSet<u32> {
    labels
        .iter()
        .filter(|l| stop.contains(l.2.as_str()))
        .filter_map(|l| g.address_id(&l.0))
        .collect()
}

/// Exits by tainted amount, largest first (then every path's amount, then address).
pub(crate) fn sort_exits(v: &mut [Exit]) {
    v.sort_by(|a, b| {
        b.tainted_value
            .cmp(&a.tainted_value)
            .then_with(|| b.all_paths_value.cmp(&a.all_paths_value))
            .then_with(|| a.address.cmp(&b.address))
    });
}

/// The CoinJoin mixes among the graph's transactions (transaction id → protocol), by the
/// detectors `ferret cluster btc` uses (a Whirlpool tx0 is one owner's and not a mix).
/// Inputs spending outputs before the indexed range count as one address each and have
/// no known value; an output without an address and without value counts as OP_RETURN.
pub fn coinjoin_mixes(g: &SpendGraph, detectors: &Detectors) -> HashMap<u32, Protocol> {
    let mut out = HashMap::new();
    let (mut values, mut addrs, mut nulldata) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..g.transactions() {
        let ins = &g.in_spent[g.in_start[t] as usize..g.in_start[t + 1] as usize];
        let outs = g.out_start[t] as usize..g.out_start[t + 1] as usize;
        // Every detector wants several inputs and outputs.
        if ins.len() < 2 || outs.len() < 2 {
            continue;
        }
        values.clear();
        addrs.clear();
        let mut addressless = 0;
        for &o in ins {
            if o == NONE {
                values.push(None);
                addressless += 1;
                continue;
            }
            values.push(Some(g.out_value[o as usize]));
            match g.out_addr[o as usize] {
                NONE => addressless += 1,
                a => addrs.push(a),
            }
        }
        addrs.sort_unstable();
        addrs.dedup();
        nulldata.clear();
        nulldata.extend(
            outs.clone()
                .map(|o| g.out_addr[o] == NONE && g.out_value[o] == 0),
        );
        let shape = TxShape {
            input_values: &values,
            distinct_input_addresses: addrs.len() + addressless,
            output_values: &g.out_value[outs],
            output_nulldata: &nulldata,
        };
        if let Some(d) = detectors.detect(&shape)
            && d.protocol.is_mix()
        {
            out.insert(t as u32, d.protocol);
        }
    }
    out
}

impl Default for TaintJob {
    fn default() -> Self {
        Self {
            policy: Policy::Haircut,
            direction: Direction::Forward,
            max_hops: None,
            min_value: 0,
            seed_addresses: Vec::new(),
            seed_txids: Vec::new(),
            seed_categories: Vec::new(),
            stop_categories: Vec::new(),
            with_flows: false,
        }
    }
}

impl TaintJob {
    /// The job as JSON, stored with the run.
    pub fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "policy": self.policy.as_str(),
            "direction": self.direction.as_str(),
            "max_hops": self.max_hops,
            "min_value": self.min_value,
            "seed_addresses": self.seed_addresses,
            "seed_txids": self.seed_txids,
            "seed_categories": self.seed_categories,
            "stop_categories": self.stop_categories,
        })
    }
}

fn arrow_err(e: arrow::error::ArrowError) -> Error {
    Error::Write {
        path: "taint".into(),
        reason: e.to_string(),
    }
}

fn repeat(s: &str, n: usize) -> Arc<StringArray> {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(s, n)))
}

/// A run's tainted outputs as rows of the `taint` table.
pub fn taint_batch(run: &TaintRun, run_id: &str) -> Result<RecordBatch> {
    taint_rows_batch(&run.outputs, run_id)
}

/// Tainted outputs as rows of the `taint` table.
pub fn taint_rows_batch(o: &[TaintedOutput], run_id: &str) -> Result<RecordBatch> {
    let n = o.len();
    RecordBatch::try_new(
        taint_schema(),
        vec![
            repeat("btc", n),
            Arc::new(StringArray::from_iter_values(
                o.iter().map(|r| r.txid.as_str()),
            )),
            Arc::new(Int32Array::from_iter_values(
                o.iter().map(|r| r.vout as i32),
            )),
            Arc::new(StringArray::from_iter(
                o.iter().map(|r| r.address.as_deref()),
            )),
            Arc::new(Int64Array::from_iter_values(o.iter().map(|r| r.value))),
            Arc::new(Int32Array::from_iter_values(o.iter().map(|r| r.hop as i32))),
            Arc::new(Float64Array::from_iter_values(o.iter().map(|r| r.fraction))),
            Arc::new(Int64Array::from_iter_values(
                o.iter().map(|r| r.tainted_value),
            )),
            Arc::new(StringArray::from_iter(o.iter().map(|r| r.coinjoin))),
            repeat(run_id, n),
        ],
    )
    .map_err(arrow_err)
}

/// A run's exits as rows of the `exits` table.
pub fn exits_batch(run: &TaintRun, run_id: &str) -> Result<RecordBatch> {
    let x = &run.exits;
    let m = x.len();
    RecordBatch::try_new(
        exits_schema(),
        vec![
            repeat("btc", m),
            Arc::new(StringArray::from_iter_values(
                x.iter().map(|e| e.address.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                x.iter().map(|e| e.label.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                x.iter().map(|e| e.category.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                x.iter().map(|e| e.tainted_value),
            )),
            Arc::new(Int64Array::from_iter_values(
                x.iter().map(|e| e.outputs as i64),
            )),
            Arc::new(Int32Array::from_iter_values(
                x.iter().map(|e| e.min_hop as i32),
            )),
            Arc::new(Int64Array::from_iter_values(
                x.iter().map(|e| e.all_paths_value),
            )),
            Arc::new(Int64Array::from_iter_values(
                x.iter().map(|e| e.coinjoin_value),
            )),
            repeat(run_id, m),
        ],
    )
    .map_err(arrow_err)
}

/// Writes a run's `taint` and `exits` tables (one run id for both). Returns the run id.
pub async fn write_taint(wh: &Warehouse, run: &TaintRun) -> Result<String> {
    let run_id = ferret_schemas::results::new_run_id();
    let taint = taint_batch(run, &run_id)?;
    let exits = exits_batch(run, &run_id)?;
    let store = |e| Error::Warehouse(Box::new(e));
    let params = Some(run.job.params());
    // One commit for both tables: readers never see one run's taint beside another's exits.
    wh.write_runs_as(
        &run_id,
        &[
            ("exits", exits_schema(), &[exits]),
            ("taint", taint_schema(), &[taint]),
        ],
        params,
    )
    .await
    .map_err(store)?;
    Ok(run_id)
}
