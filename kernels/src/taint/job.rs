//! A taint run over the warehouse: seeds and stops from addresses, txids and label
//! categories; results as the `taint` and `exits` tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use ferret_schemas::Warehouse;
use ferret_schemas::results::{exits_schema, taint_schema};

use super::graph::{SpendGraph, hex_decode, hex_encode};
use super::{Direction, NONE, Policy, Query, seed_outputs};
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
}

/// One labelled address that received taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub address: String,
    pub label: String,
    pub category: String,
    pub tainted_value: i64,
    pub outputs: u64,
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
pub async fn chain_labels(wh: &Warehouse, chain: &str) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for b in wh
        .read_latest("labels")
        .await
        .map_err(|e| Error::Warehouse(Box::new(e)))?
    {
        let col = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| Error::BadGraph(format!("labels: no text column `{name}`")))
        };
        let wanted = chain;
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
    }
    Ok(out)
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
    let stop_addresses: HashSet<u32> = labels
        .iter()
        .filter(|l| stop_cats.contains(l.2.as_str()))
        .filter_map(|l| g.address_id(&l.0))
        .collect();
    let q = Query {
        policy: job.policy,
        direction: job.direction,
        max_hops: job.max_hops,
        min_value: job.min_value,
        seed_outputs: seeds.clone(),
        stop_addresses,
    };
    let r = super::run(backend, g, &q)?;
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
        });
    }
    let exits = exits(&outputs, labels, &stop_cats, &seed_addrs, g);
    let flows = flows(g, &q, &r.rows);
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
fn flows(g: &SpendGraph, q: &Query, rows: &[super::Tainted]) -> Vec<Flow> {
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
    let mut agg: HashMap<(u32, u32), (i64, u32)> = HashMap::new();
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
        for (p, w) in others {
            let share = (r.tainted_value as f64 * w / total).round() as i64;
            let key = if r_is_output {
                (p, r.output)
            } else {
                (r.output, p)
            };
            let e = agg.entry(key).or_insert((0, u32::MAX));
            e.0 += share;
            e.1 = e.1.min(r.hop);
        }
    }
    // Aggregate per address pair.
    let mut by: BTreeMap<(String, String), (i64, u32)> = BTreeMap::new();
    for ((a, b), (v, h)) in agg {
        let e = by
            .entry((output_name(g, a), output_name(g, b)))
            .or_insert((0, u32::MAX));
        e.0 += v;
        e.1 = e.1.min(h);
    }
    by.into_iter()
        .map(|((from, to), (tainted_value, hop))| Flow {
            from,
            to,
            tainted_value,
            hop,
        })
        .collect()
}

/// Labelled addresses that received taint (beyond the seeds): of the stop categories when
/// there are any, else of any category other than the seeds' own addresses.
fn exits(
    outputs: &[TaintedOutput],
    labels: &[(String, String, String)],
    stop: &HashSet<&str>,
    seed_addrs: &[u32],
    g: &SpendGraph,
) -> Vec<Exit> {
    let seeds: HashSet<&str> = seed_addrs
        .iter()
        .map(|&a| g.addresses[a as usize].as_str())
        .collect();
    // One label per address: a stop category first, then by label name.
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
    let mut by: BTreeMap<&str, Exit> = BTreeMap::new();
    for o in outputs.iter().filter(|o| o.hop > 0) {
        let Some(a) = o.address.as_deref() else {
            continue;
        };
        if seeds.contains(a) {
            continue;
        }
        let Some(&(label, category)) = label_of.get(a) else {
            continue;
        };
        let e = by.entry(a).or_insert_with(|| Exit {
            address: a.to_string(),
            label: label.to_string(),
            category: category.to_string(),
            tainted_value: 0,
            outputs: 0,
            min_hop: u32::MAX,
        });
        e.tainted_value += o.tainted_value;
        e.outputs += 1;
        e.min_hop = e.min_hop.min(o.hop);
    }
    let mut v: Vec<Exit> = by.into_values().collect();
    v.sort_by(|a, b| {
        b.tainted_value
            .cmp(&a.tainted_value)
            .then_with(|| a.address.cmp(&b.address))
    });
    v
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
    let o = &run.outputs;
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
    // Exits first: the taint pointer names the run both tables show.
    wh.write_run_as("exits", &run_id, exits_schema(), &[exits], params.clone())
        .await
        .map_err(store)?;
    wh.write_run_as("taint", &run_id, taint_schema(), &[taint], params)
        .await
        .map_err(store)?;
    Ok(run_id)
}
