//! The evidence of a run: address-to-address flows (what `ferret trace` draws) and, for
//! each exit, one chain of transactions from a seed to it in which every step moved
//! taint — the path an investigator cites.
//!
//! A path is walked back from the exit: on Bitcoin from its tainted output with the
//! fewest hops, each step to a tainted input of the creating transaction one hop nearer
//! the seeds (the largest such); on Ethereum from the exit, each step to a tainted
//! transfer into the address from a sender one hop nearer, earlier than the transfer out
//! (the largest such). Forward runs only: backward runs have no exits to prove.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use ferret_kernels::account::job::EthTaintRun;
use ferret_kernels::taint::Direction;
use ferret_kernels::taint::job::{Exit, TaintRun, TaintedOutput};

use crate::Result;

/// One flow.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRow {
    pub chain: &'static str,
    pub from: String,
    pub to: String,
    pub asset: String,
    pub value: f64,
    pub hop: i32,
    pub transfers: Option<i64>,
    pub coinjoin: Option<String>,
}

/// One step of an exit's path.
#[derive(Clone, Debug, PartialEq)]
pub struct PathStep {
    pub chain: &'static str,
    pub exit: String,
    pub step: i32,
    pub txid: String,
    pub from: Option<String>,
    pub to: String,
    pub value: f64,
    pub hop: i32,
    pub height: Option<i64>,
}

/// The longest path walked (a guard; hops are far fewer).
const MAX_STEPS: usize = 10_000;

pub fn btc_flows(run: &TaintRun) -> Vec<FlowRow> {
    run.flows
        .iter()
        .map(|f| FlowRow {
            chain: "btc",
            from: f.from.clone(),
            to: f.to.clone(),
            asset: "BTC".into(),
            value: f.tainted_value as f64,
            hop: f.hop as i32,
            transfers: None,
            coinjoin: f.coinjoin.map(str::to_string),
        })
        .collect()
}

/// Bitcoin paths, from each tainted output's predecessor (`walk`: output id and the
/// output a path steps back to, one per row of `outputs`, in order; kept in the case's
/// `state`, see `ferret_kernels::taint::resume`). A path starts at the exit's tainted
/// output with the fewest hops (then the largest tainted value, fraction, lowest id).
pub fn btc_paths(
    outputs: &[TaintedOutput],
    walk: &[(u64, Option<u64>)],
    exits: &[Exit],
    forward: bool,
) -> Result<Vec<PathStep>> {
    if !forward || exits.is_empty() {
        return Ok(Vec::new());
    }
    if walk.len() != outputs.len() {
        return Err(crate::Error::Query(format!(
            "{} taint rows and {} proof-path entries",
            outputs.len(),
            walk.len()
        )));
    }
    // Output id → its row and predecessor. Outputs with no taint are left out; a haircut
    // may round a small share to 0 sats, but its fraction says it is tainted.
    let mut by: HashMap<u64, (&TaintedOutput, Option<u64>)> = HashMap::with_capacity(walk.len());
    let mut at_exit: HashMap<&str, Vec<u64>> = exits
        .iter()
        .map(|e| (e.address.as_str(), Vec::new()))
        .collect();
    for (o, &(id, pred)) in outputs.iter().zip(walk) {
        if o.fraction <= 0.0 {
            continue;
        }
        by.insert(id, (o, pred));
        if let Some(v) = o.address.as_deref().and_then(|a| at_exit.get_mut(a)) {
            v.push(id);
        }
    }
    let name = |o: &TaintedOutput| match &o.address {
        Some(a) => a.clone(),
        None => format!("{}:{}", o.txid, o.vout),
    };
    let mut out = Vec::new();
    for e in exits {
        let Some(&start) = at_exit.get(e.address.as_str()).and_then(|v| {
            v.iter().min_by(|&&a, &&b| {
                let (x, y) = (by[&a].0, by[&b].0);
                x.hop
                    .cmp(&y.hop)
                    .then(y.tainted_value.cmp(&x.tainted_value))
                    .then(y.fraction.total_cmp(&x.fraction))
                    .then(a.cmp(&b))
            })
        }) else {
            continue;
        };
        let mut steps = Vec::new();
        let mut cur = start;
        let complete = loop {
            let (o, pred) = by[&cur];
            if o.hop == 0 {
                steps.push((o.txid.clone(), None, name(o), o.tainted_value, o.hop));
                break true;
            }
            if steps.len() >= MAX_STEPS {
                break false;
            }
            // Each step goes to an output nearer the seeds (fewer hops).
            let Some(p) = pred
                .and_then(|p| by.get(&p).map(|x| (p, x.0)))
                .filter(|(_, x)| x.hop < o.hop)
            else {
                break false;
            };
            steps.push((
                o.txid.clone(),
                Some(name(p.1)),
                name(o),
                o.tainted_value,
                o.hop,
            ));
            cur = p.0;
        };
        if !complete {
            // Never half a proof: this exit gets no path.
            tracing::warn!(exit = %e.address, "no tainted input found walking back: no path for this exit");
            continue;
        }
        steps.reverse();
        for (i, (txid, from, to, value, hop)) in steps.into_iter().enumerate() {
            out.push(PathStep {
                chain: "btc",
                exit: e.address.clone(),
                step: i as i32,
                txid,
                from,
                to,
                value: value as f64,
                hop: hop as i32,
                height: None,
            });
        }
    }
    Ok(out)
}

pub fn eth_flows(run: &EthTaintRun) -> Vec<FlowRow> {
    let t = &run.transfers;
    let hop: HashMap<&str, u32> = run
        .addresses
        .iter()
        .map(|a| (a.address.as_str(), a.hop))
        .collect();
    let backward = run.job.direction == Direction::Backward;
    let mut agg: HashMap<(u32, u32), (f64, i64)> = HashMap::new();
    for (e, &v) in run.tainted.iter().enumerate() {
        if v > 0.0 {
            let a = agg.entry((t.graph.src[e], t.graph.dst[e])).or_default();
            a.0 += v;
            a.1 += 1;
        }
    }
    let mut out: Vec<FlowRow> = agg
        .into_iter()
        .map(|((s, d), (v, n))| {
            let (from, to) = (
                t.addresses[s as usize].clone(),
                t.addresses[d as usize].clone(),
            );
            let far = if backward { &from } else { &to };
            FlowRow {
                chain: "eth",
                hop: hop.get(far.as_str()).map_or(-1, |&h| h as i32),
                from,
                to,
                asset: run.job.asset.clone(),
                value: v,
                transfers: Some(n),
                coinjoin: None,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    out
}

/// Ethereum paths, from the run's tainted transfers.
pub fn eth_paths(run: &EthTaintRun) -> Vec<PathStep> {
    if run.job.direction != Direction::Forward || run.exits.is_empty() {
        return Vec::new();
    }
    let t = &run.transfers;
    let id: HashMap<&str, u32> = t
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i as u32))
        .collect();
    let hop_of: HashMap<u32, u32> = run
        .addresses
        .iter()
        .filter_map(|a| id.get(a.address.as_str()).map(|&i| (i, a.hop)))
        .collect();
    // Tainted transfers into each address, in chain order.
    let mut into: HashMap<u32, Vec<usize>> = HashMap::new();
    for (e, &v) in run.tainted.iter().enumerate() {
        if v > 0.0 {
            into.entry(t.graph.dst[e]).or_default().push(e);
        }
    }
    let mut out = Vec::new();
    for x in &run.exits {
        let Some(&exit) = id.get(x.address.as_str()) else {
            continue;
        };
        let mut cur = exit;
        let mut bound = usize::MAX;
        let mut steps = Vec::new();
        let mut seen = HashSet::new();
        let complete = loop {
            let hop = hop_of.get(&cur).copied().unwrap_or(0);
            if hop == 0 {
                break true;
            }
            if !seen.insert(cur) || steps.len() >= MAX_STEPS {
                break false;
            }
            let cands = into.get(&cur).map(Vec::as_slice).unwrap_or(&[]);
            let best = |want: Option<u32>| {
                cands
                    .iter()
                    .copied()
                    .filter(|&e| e < bound)
                    .filter(|&e| {
                        let h = hop_of.get(&t.graph.src[e]).copied().unwrap_or(u32::MAX);
                        want.map_or(h < hop, |w| h == w)
                    })
                    .max_by(|&a, &b| run.tainted[a].total_cmp(&run.tainted[b]).then(b.cmp(&a)))
            };
            let Some(e) = best(Some(hop - 1)).or_else(|| best(None)) else {
                break false;
            };
            steps.push(e);
            cur = t.graph.src[e];
            bound = e;
        };
        if !complete || steps.is_empty() {
            tracing::warn!(exit = %x.address, "no tainted transfer found walking back: no path for this exit");
            continue;
        }
        steps.reverse();
        let seed = steps.first().map(|&e| t.graph.src[e]);
        let mut i = 0;
        if let Some(s) = seed {
            // Step 0: the seed itself.
            out.push(PathStep {
                chain: "eth",
                exit: x.address.clone(),
                step: 0,
                txid: steps
                    .first()
                    .map(|&e| t.tx_hash[e].clone())
                    .unwrap_or_default(),
                from: None,
                to: t.addresses[s as usize].clone(),
                value: 0.0,
                hop: hop_of.get(&s).map_or(0, |&h| h as i32),
                height: None,
            });
            i = 1;
        }
        for (k, e) in steps.into_iter().enumerate() {
            let d = t.graph.dst[e];
            out.push(PathStep {
                chain: "eth",
                exit: x.address.clone(),
                step: (i + k) as i32,
                txid: t.tx_hash[e].clone(),
                from: Some(t.addresses[t.graph.src[e] as usize].clone()),
                to: t.addresses[d as usize].clone(),
                value: run.tainted[e],
                hop: hop_of.get(&d).map_or(-1, |&h| h as i32),
                height: Some(t.block[e]),
            });
        }
    }
    out
}

fn strs<'a>(it: impl Iterator<Item = &'a str>) -> Arc<StringArray> {
    Arc::new(StringArray::from_iter_values(it))
}

pub fn flows_batch(case: &str, run_id: &str, f: &[&FlowRow]) -> Result<RecordBatch> {
    let n = f.len();
    Ok(RecordBatch::try_new(
        ferret_schemas::cases::case_flows_schema(),
        vec![
            strs(std::iter::repeat_n(case, n)),
            strs(f.iter().map(|x| x.chain)),
            strs(f.iter().map(|x| x.from.as_str())),
            strs(f.iter().map(|x| x.to.as_str())),
            strs(f.iter().map(|x| x.asset.as_str())),
            Arc::new(Float64Array::from_iter_values(f.iter().map(|x| x.value))),
            Arc::new(Int32Array::from_iter_values(f.iter().map(|x| x.hop))),
            Arc::new(Int64Array::from_iter(f.iter().map(|x| x.transfers))),
            Arc::new(StringArray::from_iter(
                f.iter().map(|x| x.coinjoin.as_deref()),
            )),
            strs(std::iter::repeat_n(run_id, n)),
        ],
    )?)
}

pub fn paths_batch(case: &str, run_id: &str, p: &[&PathStep]) -> Result<RecordBatch> {
    let n = p.len();
    Ok(RecordBatch::try_new(
        ferret_schemas::cases::case_paths_schema(),
        vec![
            strs(std::iter::repeat_n(case, n)),
            strs(p.iter().map(|x| x.chain)),
            strs(p.iter().map(|x| x.exit.as_str())),
            Arc::new(Int32Array::from_iter_values(p.iter().map(|x| x.step))),
            strs(p.iter().map(|x| x.txid.as_str())),
            Arc::new(StringArray::from_iter(p.iter().map(|x| x.from.as_deref()))),
            strs(p.iter().map(|x| x.to.as_str())),
            Arc::new(Float64Array::from_iter_values(p.iter().map(|x| x.value))),
            Arc::new(Int32Array::from_iter_values(p.iter().map(|x| x.hop))),
            Arc::new(Int64Array::from_iter(p.iter().map(|x| x.height))),
            strs(std::iter::repeat_n(run_id, n)),
        ],
    )?)
}
