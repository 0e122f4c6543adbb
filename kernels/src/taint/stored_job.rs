//! `ferret taint btc --mem-mb N`: the taint job of [`super::job`] on the committed spend
//! graph, within a memory budget. Same seeds, stops, exits and CoinJoin accounting as the
//! in-memory job, and the same `taint` and `exits` rows (tested), but nothing is held per
//! transaction, output or address of the chain:
//!
//! - seeds and stops are looked up through the Bloom filters of `btc.addresses` and
//!   `btc.outputs`;
//! - CoinJoin mixes are found by streaming the transactions once ([`crate::txstream`]);
//! - each propagation (the hop-limited one; every path, when there is a hop limit; every
//!   path with the mixes passing nothing, when there are mixes) runs in the `blocked`
//!   engine, and its rows are streamed: the first run's into the `taint` file, all of them
//!   into per-exit sums.
//!
//! What it holds beyond the budget: the labels, the mixes (a transaction id each; backward
//! runs also the outputs the mixes spent), the exits' sums, and one row group at a time.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferret_schemas::results::{exits_schema, taint_schema};
use ferret_schemas::{Chain, Warehouse};
use tokio::runtime::Handle;

use super::job::{Exit, TaintJob, TaintRun, TaintedOutput, exits_batch, taint_rows_batch};
use super::stored::{
    StoredQuery, StoredTainted, lookup_address_ids, resolve_seeds_found, run_stored_on,
};
use super::{Direction, decimal};
use crate::blocked::{Budget, Stats};
use crate::coinjoin::{Detectors, Protocol, TxShape};
use crate::txstream::{TxRows, for_each_tx};
use crate::{Error, Result};

fn wh_err(e: ferret_schemas::Error) -> Error {
    Error::Warehouse(Box::new(e))
}

/// What a stored run adds up (the in-memory run has every row to count instead).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaintTotals {
    /// Rows of the `taint` table.
    pub outputs: u64,
    pub max_hop: u32,
    /// Tainted value of the outputs beyond the seeds (hop > 0).
    pub tainted_beyond_seeds: i64,
}

impl TaintTotals {
    /// The totals of an in-memory run.
    pub fn of(run: &TaintRun) -> Self {
        Self {
            outputs: run.outputs.len() as u64,
            max_hop: run.outputs.iter().map(|o| o.hop).max().unwrap_or(0),
            tainted_beyond_seeds: run
                .outputs
                .iter()
                .filter(|o| o.hop > 0)
                .map(|o| o.tainted_value)
                .sum(),
        }
    }

    fn add(&mut self, o: &TaintedOutput) {
        self.outputs += 1;
        self.max_hop = self.max_hop.max(o.hop);
        if o.hop > 0 {
            self.tainted_beyond_seeds += o.tainted_value;
        }
    }
}

/// A written stored run: the run (its `outputs` and `flows` left empty: the rows are in
/// the `taint` table), what they add up to, the run id, and the engine's counters of the
/// hop-limited propagation.
#[derive(Clone, Debug)]
pub struct StoredTaintRun {
    pub run: TaintRun,
    pub totals: TaintTotals,
    pub run_id: String,
    pub stats: Stats,
}

/// The CoinJoin mixes, by the detectors the in-memory job uses, with its reading of a
/// transaction (an input spending an unindexed output has no value and counts as one
/// address; an output without an address and without value counts as OP_RETURN).
#[derive(Default)]
struct Mixes {
    by_tx: HashMap<u64, Protocol>,
    /// Backward: output id → the mix spending it (its transaction, its protocol).
    spent_by: HashMap<u64, (u64, Protocol)>,
}

fn find_mixes(tx: &TxRows, detectors: &Detectors, backward: bool, m: &mut Mixes) {
    if tx.inputs.len() < 2 || tx.outputs.len() < 2 {
        return;
    }
    let mut values = Vec::with_capacity(tx.inputs.len());
    let mut addrs = Vec::with_capacity(tx.inputs.len());
    let mut addressless = 0;
    for i in &tx.inputs {
        if i.spent_output.is_none() {
            values.push(None);
            addressless += 1;
            continue;
        }
        values.push(Some(i.value.unwrap_or(0)));
        match i.address_id {
            None => addressless += 1,
            Some(a) => addrs.push(a),
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    let out_values: Vec<i64> = tx.outputs.iter().map(|o| o.value).collect();
    let nulldata: Vec<bool> = tx
        .outputs
        .iter()
        .map(|o| o.address_id.is_none() && o.value == 0)
        .collect();
    let shape = TxShape {
        input_values: &values,
        distinct_input_addresses: addrs.len() + addressless,
        output_values: &out_values,
        output_nulldata: &nulldata,
    };
    if let Some(d) = detectors.detect(&shape)
        && d.protocol.is_mix()
    {
        m.by_tx.insert(tx.tx_index, d.protocol);
        if backward {
            for o in tx.inputs.iter().filter_map(|i| i.spent_output) {
                m.spent_by.insert(o, (tx.tx_index, d.protocol));
            }
        }
    }
}

/// Per exit address: (value, outputs, min hop) in each of the three runs.
type ExitSums = BTreeMap<String, [(i64, u64, u32); 3]>;

fn add_exit(
    sums: &mut ExitSums,
    k: usize,
    r: &StoredTainted,
    labelled: &HashMap<&str, usize>,
    seeds: &HashSet<String>,
) {
    if r.hop == 0 {
        return;
    }
    let Some(a) = r.address.as_deref() else {
        return;
    };
    if seeds.contains(a) || !labelled.contains_key(a) {
        return;
    }
    let slot = &mut sums.entry(a.to_string()).or_insert([(0, 0, u32::MAX); 3])[k];
    slot.0 += r.tainted_value;
    slot.1 += 1;
    slot.2 = slot.2.min(r.hop);
}

/// Runs `job` on the committed graph within `budget`, writes its `taint` and `exits`
/// tables as one run, and returns it. Call from a blocking thread inside a tokio runtime.
pub fn taint_btc_stored(
    backend: &crate::device::Backend,
    wh: &Warehouse,
    job: &TaintJob,
    budget: &Budget,
) -> Result<StoredTaintRun> {
    let rt = Handle::current();
    let run_id = ferret_schemas::results::new_run_id();
    let mut writer = wh
        .run_writer("taint", &run_id, taint_schema())
        .map_err(wh_err)?;
    let (run, totals, stats) =
        stored_taint_rows(backend, wh, job, budget, &run_id, &mut |batch| {
            rt.block_on(writer.write(&batch)).map_err(wh_err)
        })?;
    let taint_file = rt.block_on(writer.finish()).map_err(wh_err)?;
    let mut exits_writer = wh
        .run_writer("exits", &run_id, exits_schema())
        .map_err(wh_err)?;
    let batch = exits_batch(&run, &run_id)?;
    rt.block_on(exits_writer.write(&batch)).map_err(wh_err)?;
    let exits_file = rt.block_on(exits_writer.finish()).map_err(wh_err)?;
    // One commit for both tables, as the in-memory job.
    rt.block_on(wh.commit_run_files(
        &run_id,
        vec![("exits".into(), exits_file), ("taint".into(), taint_file)],
        Some(job.params()),
    ))
    .map_err(wh_err)?;
    Ok(StoredTaintRun {
        run,
        totals,
        run_id,
        stats,
    })
}

/// The work of [`taint_btc_stored`] without the writing: the `taint` rows (carrying
/// `run_id`) go to `on_batch` as they are joined, a row group of `btc.outputs` at a time
/// (the SQL function streams them); the run (its exits computed, no rows) is returned.
pub fn stored_taint_rows(
    backend: &crate::device::Backend,
    wh: &Warehouse,
    job: &TaintJob,
    budget: &Budget,
    run_id: &str,
    on_batch: &mut dyn FnMut(arrow::array::RecordBatch) -> Result<()>,
) -> Result<(TaintRun, TaintTotals, Stats)> {
    let rt = Handle::current();
    let m = rt
        .block_on(wh.load_manifest(Chain::Btc))
        .map_err(wh_err)?
        .ok_or(Error::NothingIndexed { chain: "btc" })?;
    let labels = rt.block_on(super::job::btc_labels(wh))?;

    // Seed addresses as the chain spells them (bech32 in lower case when only that is on
    // the chain), then the seed categories' addresses.
    let mut asked: Vec<(String, String)> = Vec::new();
    for a in &job.seed_addresses {
        let a = a.trim();
        asked.push((a.to_string(), a.to_ascii_lowercase()));
    }
    let seed_cats: HashSet<&str> = job.seed_categories.iter().map(String::as_str).collect();
    let stop_cats: HashSet<&str> = job.stop_categories.iter().map(String::as_str).collect();
    let mut look: Vec<&str> = Vec::new();
    for (a, lower) in &asked {
        look.push(a);
        look.push(lower);
    }
    look.extend(
        labels
            .iter()
            .filter(|l| {
                seed_cats.contains(l.2.as_str())
                    || stop_cats.contains(l.2.as_str())
                    || stop_cats.is_empty()
            })
            .map(|l| l.0.as_str()),
    );
    let ids = rt.block_on(lookup_address_ids(wh, &m, &look))?;
    let mut unknown = Vec::new();
    let mut seed_addrs: Vec<(u64, String)> = Vec::new();
    for (a, lower) in &asked {
        let bech32 = ["bc1", "tb1", "bcrt1"].iter().any(|p| lower.starts_with(p));
        if let Some(&id) = ids.get(a) {
            seed_addrs.push((id, a.clone()));
        } else if bech32 && let Some(&id) = ids.get(lower) {
            seed_addrs.push((id, lower.clone()));
        } else {
            unknown.push(a.clone());
        }
    }
    for l in labels.iter().filter(|l| seed_cats.contains(l.2.as_str())) {
        if let Some(&id) = ids.get(&l.0) {
            seed_addrs.push((id, l.0.clone()));
        }
    }
    seed_addrs.sort_unstable();
    seed_addrs.dedup();
    let seed_names: Vec<String> = seed_addrs.iter().map(|s| s.1.clone()).collect();
    let mut txids = Vec::new();
    for t in &job.seed_txids {
        let mut raw = [0u8; 32];
        super::graph::hex_decode(t, &mut raw).map_err(Error::BadQuery)?;
        txids.push(super::graph::hex_encode(&raw));
    }
    let (seeds, found) = rt.block_on(resolve_seeds_found(wh, &m, &seed_names, &txids))?;
    for (asked, t) in job.seed_txids.iter().zip(&txids) {
        if !found.contains(t) {
            unknown.push(asked.clone());
        }
    }
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
    let stop_addresses: HashSet<u64> = labels
        .iter()
        .filter(|l| stop_cats.contains(l.2.as_str()))
        .filter_map(|l| ids.get(&l.0).copied())
        .collect();
    // One label per exit address: a stop category's when there are any, the smallest
    // (label, category) otherwise; only addresses on the chain. Held as an index into
    // `labels`, keyed by the address it borrows from there: no copy of any label.
    let mut labelled: HashMap<&str, usize> = HashMap::new();
    for (i, (a, l, c)) in labels.iter().enumerate() {
        if (!stop_cats.is_empty() && !stop_cats.contains(c.as_str())) || !ids.contains_key(a) {
            continue;
        }
        let e = labelled.entry(a.as_str()).or_insert(i);
        let (el, ec) = (&labels[*e].1, &labels[*e].2);
        if (l.as_str(), c.as_str()) < (el.as_str(), ec.as_str()) {
            *e = i;
        }
    }
    // The ids were for the seeds, the stops and the filter above.
    drop(ids);
    drop(look);
    let seed_set: HashSet<String> = seed_names.iter().cloned().collect();

    let backward = job.direction == Direction::Backward;
    let detectors = Detectors::default();
    let mut mixes = Mixes::default();
    rt.block_on(for_each_tx(wh, &m, false, "coinjoin scan", |tx| {
        find_mixes(tx, &detectors, backward, &mut mixes);
        Ok(())
    }))?;

    let q = StoredQuery {
        policy: job.policy,
        direction: job.direction,
        max_hops: job.max_hops,
        min_value: job.min_value,
        seeds: seeds.clone(),
        stop_addresses,
        blocked_txs: HashSet::new(),
    };
    // The transaction that moved an output's taint: forward its creator, backward its
    // spender.
    let mover = |r: &StoredTainted| -> Option<(u64, Protocol)> {
        if backward {
            mixes.spent_by.get(&r.output_id).copied()
        } else {
            mixes.by_tx.get(&r.tx_index).map(|&p| (r.tx_index, p))
        }
    };
    let mut totals = TaintTotals::default();
    let mut sums: ExitSums = BTreeMap::new();
    let mut passed: HashSet<u64> = HashSet::new();
    let unlimited_is_first = job.max_hops.is_none();
    let (steps, stats) = run_stored_on(backend, wh, &q, budget, &mut |rows| {
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            add_exit(&mut sums, 0, r, &labelled, &seed_set);
            let mix = if r.hop > 0 { mover(r) } else { None };
            if unlimited_is_first
                && r.hop > 0
                && r.tainted_value > 0
                && let Some((t, _)) = mix
            {
                passed.insert(t);
            }
            let o = TaintedOutput {
                txid: r.txid.clone(),
                vout: r.vout,
                address: r.address.clone(),
                value: r.value,
                hop: r.hop,
                fraction: decimal(r.fraction),
                tainted_value: r.tainted_value,
                coinjoin: mix.map(|m| m.1.name()),
            };
            totals.add(&o);
            out.push(o);
        }
        on_batch(taint_rows_batch(&out, run_id)?)
    })?;
    // Every path, when the first run had a hop limit.
    let unlimited = StoredQuery {
        max_hops: None,
        ..q.clone()
    };
    if !unlimited_is_first {
        run_stored_on(backend, wh, &unlimited, budget, &mut |rows| {
            for r in &rows {
                add_exit(&mut sums, 1, r, &labelled, &seed_set);
                if r.hop > 0
                    && r.tainted_value > 0
                    && let Some((t, _)) = mover(r)
                {
                    passed.insert(t);
                }
            }
            Ok(())
        })?;
    }
    // Every path with the mixes passing nothing.
    if !mixes.by_tx.is_empty() {
        let closed = StoredQuery {
            blocked_txs: mixes.by_tx.keys().copied().collect(),
            ..unlimited
        };
        run_stored_on(backend, wh, &closed, budget, &mut |rows| {
            for r in &rows {
                add_exit(&mut sums, 2, r, &labelled, &seed_set);
            }
            Ok(())
        })?;
    }
    let mut exits: Vec<Exit> = sums
        .into_iter()
        .map(|(address, mut runs)| {
            if unlimited_is_first {
                runs[1] = runs[0];
            }
            if mixes.by_tx.is_empty() {
                runs[2] = runs[1];
            }
            let [limited, all, open] = runs;
            let (_, label, category) = &labels[labelled[address.as_str()]];
            let (label, category) = (label.clone(), category.clone());
            Exit {
                address,
                label,
                category,
                tainted_value: limited.0,
                all_paths_value: all.0,
                coinjoin_value: (all.0 - open.0).max(0),
                outputs: limited.1,
                min_hop: limited.2.min(all.2),
            }
        })
        .collect();
    super::job::sort_exits(&mut exits);
    let run = TaintRun {
        job: job.clone(),
        outputs: Vec::new(),
        exits,
        seed_outputs: seeds.len(),
        seed_addresses: seed_names,
        flows: Vec::new(),
        unknown_seeds: unknown,
        coinjoins_passed: passed.len(),
        steps,
        nodes: u32::try_from(m.next_tx_index).unwrap_or(u32::MAX),
        edges: usize::try_from(stats.edges_swept).unwrap_or(usize::MAX),
        device: format!(
            "{}, out of core within {} MiB",
            backend.describe(),
            budget.mem_bytes >> 20
        ),
    };
    tracing::info!(
        policy = job.policy.as_str(),
        direction = job.direction.as_str(),
        seeds = seeds.len(),
        tainted = totals.outputs,
        exits = run.exits.len(),
        steps,
        chunk_loads = stats.chunk_loads,
        chunks_skipped = stats.chunks_skipped,
        "stored taint"
    );
    Ok((run, totals, stats))
}
