//! Account taint (Ethereum, forward) that resumes where an earlier run stopped: a rerun
//! reads only the transfers of new blocks and the earlier run's state, and its rows equal
//! a run from scratch over every transfer, bit for bit.
//!
//! **Why this is exact.** Both policies are a walk over the transfers in chain order with
//! a state per address:
//! - poison (`cpu::poison`) keeps each address's first tainted arrival and hop so far;
//! - the haircut pool keeps each address's exact balance and tainted share. The run from
//!   scratch takes Jacobi steps (`cpu::pool`, `pool.wgsl`): at step k every address walks
//!   its transfers with the shares its incoming transfers carried at step k − 1. Walking
//!   the transfers once in chain order with the share **per step** (a [`Shares`]: zero
//!   before the first step taint reaches, one value per step after, the last holding
//!   beyond) computes every step's walk at once: a transfer's sender departs at every
//!   step, giving the transfer's share per step, and its receiver arrives at step k with
//!   the share of step k − 1. The balance does not depend on the step. A transfer's final
//!   share is its share at the last step (the hop limit, or the fixpoint), and a
//!   receiver's hop the first step a share reached it: Jacobi's, with
//!   [`super::cpu::PoolWalk`]'s arithmetic, so the same bits.
//!
//! Per-address sums (tainted value, transfers, the first tainted transfer) continue from
//! the state in chain order, so they add up in the same order too. The state also keeps
//! every tainted transfer (what flows and proof paths are drawn from).
//!
//! Runs from scratch are the same code with no state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ferret_schemas::{Chain, Warehouse};

use super::cpu::PoolWalk;
use super::frac::{self, Frac, ONE, U256, U256_ZERO, ZERO};
use super::job::{
    AccountPolicy, EthExit, EthTaintJob, EthTaintRun, EthTransfers, TRANSFER_COLUMNS,
    TaintedAddress, amount_scale, for_each_transfer, no_seeds, sort_exits,
};
use super::{SEED, STOP, UNREACHED};
use crate::taint::Direction;
use crate::{Error, Result};

/// The version of the state's layout.
pub const ETH_STATE_FORMAT: u32 = 1;

/// No arrival yet.
pub const NO_ARRIVAL: u64 = u64::MAX;

/// A pool's share per Jacobi step: [`ZERO`] before `start`, `vals[k − start]` from it, the
/// last value holding beyond. Empty: zero at every step.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Shares {
    pub start: u32,
    pub vals: Vec<Frac>,
}

impl Shares {
    /// The share at step `k`.
    pub fn at(&self, k: u32) -> Frac {
        match self.vals.len() {
            0 => ZERO,
            n if k >= self.start => self.vals[((k - self.start) as usize).min(n - 1)],
            _ => ZERO,
        }
    }

    /// The last step with a value of its own.
    fn end(&self) -> Option<u32> {
        (!self.vals.is_empty()).then(|| self.start + self.vals.len() as u32 - 1)
    }

    /// From the values at steps `lo, lo + 1, …` (the last holding beyond): leading exact
    /// zeros and trailing repeats trimmed.
    fn from_values(lo: u32, mut vals: Vec<Frac>) -> Self {
        let lead = vals.iter().take_while(|&&v| v == ZERO).count();
        if lead == vals.len() {
            return Self::default();
        }
        vals.drain(..lead);
        while vals.len() >= 2 && vals[vals.len() - 1] == vals[vals.len() - 2] {
            vals.pop();
        }
        Self {
            start: lo + lead as u32,
            vals,
        }
    }

    /// Shifted one step later (a transfer's shares as its receiver reads them).
    fn later(&self) -> Self {
        if self.vals.is_empty() {
            return Self::default();
        }
        Self {
            start: self.start.saturating_add(1),
            vals: self.vals.clone(),
        }
    }

    /// The first step with a nonzero share.
    fn first_nonzero(&self) -> Option<u32> {
        self.vals
            .iter()
            .position(|v| !v.is_zero())
            .map(|i| self.start + i as u32)
    }
}

/// One address's state.
#[derive(Clone, Debug, PartialEq)]
pub struct AddrState {
    /// Fewest transfers from a seed (0 for seeds), or [`UNREACHED`].
    pub hop: u32,
    /// Poison: the time (`transfer index + 1`) of the first tainted arrival, 0 for seeds,
    /// or [`NO_ARRIVAL`].
    pub arrival: u64,
    /// Haircut: the pool's exact balance and its tainted share per step.
    pub balance: U256,
    pub shares: Shares,
    /// Tainted value and transfers received, and the first tainted transfer (an index
    /// into the state's `edges`).
    pub value: f64,
    pub transfers: u64,
    pub first: Option<usize>,
}

impl AddrState {
    fn new(seed: bool) -> Self {
        Self {
            hop: if seed { 0 } else { UNREACHED },
            arrival: if seed { 0 } else { NO_ARRIVAL },
            balance: U256_ZERO,
            shares: Shares::default(),
            value: 0.0,
            transfers: 0,
            first: None,
        }
    }

    /// Whether a later run needs it.
    fn kept(&self) -> bool {
        self.hop != UNREACHED
            || self.arrival != NO_ARRIVAL
            || self.balance != U256_ZERO
            || !self.shares.vals.is_empty()
            || self.transfers > 0
    }
}

/// A transfer that carried taint.
#[derive(Clone, Debug, PartialEq)]
pub struct TaintedEdge {
    pub from: String,
    pub to: String,
    pub block: i64,
    pub tx_index: i32,
    pub tx_hash: String,
    /// The tainted amount, in the asset's unit.
    pub value: f64,
}

/// What an Ethereum run leaves for the next one.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EthResumeState {
    /// The last block read.
    pub height: Option<i64>,
    /// Transfers of the asset read so far (the next one's time is this + 1).
    pub transfers: u64,
    /// The largest amount read (the run from scratch scales amounts by it above 2^100).
    pub max_amount: f64,
    pub addresses: BTreeMap<String, AddrState>,
    /// Every tainted transfer, in chain order.
    pub edges: Vec<TaintedEdge>,
    /// Named seeds (lower case) with a transfer so far.
    pub seeds_found: BTreeSet<String>,
}

/// A resumed run.
#[derive(Clone, Debug)]
pub struct EthResumed {
    /// The whole chain's rows so far: `addresses` (by address), `exits`, and as
    /// `transfers` the tainted transfers only, with `tainted` their amounts.
    pub run: EthTaintRun,
    pub state: EthResumeState,
    pub from: Option<i64>,
}

/// One new transfer.
struct NewTransfer {
    block: i64,
    txi: i32,
    ord: i32,
    hash: String,
    from: String,
    to: String,
    value: U256,
}

/// Forward account taint over the transfers of blocks above `prev`'s (every block without
/// `prev`). `Ok(Err(why))` when `prev` cannot be resumed from and the run must start from
/// the first block (poison with a minimum, when a new amount above 2^100 changes the
/// scale its comparisons are made at).
pub async fn resume_eth(
    wh: &Warehouse,
    prev: Option<&EthResumeState>,
    job: &EthTaintJob,
    labels: &[(String, String, String)],
) -> Result<std::result::Result<EthResumed, String>> {
    if job.direction != Direction::Forward {
        return Err(Error::BadQuery(
            "only forward taint resumes: new blocks change where earlier funds came from".into(),
        ));
    }
    if job.asset == "*" && job.policy != AccountPolicy::Poison {
        return Err(Error::BadQuery(
            "asset `*` mixes units: only poison runs over every asset; name one (`ETH` or a token contract)".into(),
        ));
    }
    let wh_err = |e: ferret_schemas::Error| Error::Warehouse(Box::new(e));
    let Some(manifest) = wh.load_manifest(Chain::Eth).await.map_err(wh_err)? else {
        return Err(Error::BadQuery(
            "the warehouse holds no Ethereum data: run `ferret index eth` first".into(),
        ));
    };
    let after = prev.and_then(|p| p.height);
    let mut files: Vec<_> = manifest
        .files_of("transfers")
        .filter(|f| after.is_none_or(|a| f.last_height as i64 > a))
        .collect();
    files.sort_by_key(|f| f.first_height);
    let mut rows: Vec<NewTransfer> = Vec::new();
    let mut height = after;
    for f in files {
        let batches = wh
            .read_columns(&f.path, &TRANSFER_COLUMNS)
            .await
            .map_err(wh_err)?;
        for_each_transfer(&batches, &f.path, &job.asset, &mut |t| {
            if after.is_none_or(|a| t.block > a) {
                rows.push(NewTransfer {
                    block: t.block,
                    txi: t.txi,
                    ord: t.ordinal,
                    hash: t.hash.to_string(),
                    from: t.from.to_string(),
                    to: t.to.to_string(),
                    value: t.value,
                });
            }
            Ok(())
        })?;
        let top = f.last_height as i64;
        if after.is_none_or(|a| top > a) {
            height = Some(height.map_or(top, |h| h.max(top)));
        }
    }
    if let Some(tip) = manifest.tip.as_ref() {
        height = Some(height.map_or(tip.height as i64, |h| h.max(tip.height as i64)));
    }
    rows.sort_by_key(|r| (r.block, r.txi, r.ord));
    let max_new = rows
        .iter()
        .map(|r| frac::to_f64(&r.value))
        .fold(0.0f64, f64::max);
    let max_amount = prev.map_or(0.0, |p| p.max_amount).max(max_new);
    let scale = amount_scale(max_amount);
    // Poison compares amounts with its minimum in f32, scaled by the largest amount when
    // that is above 2^100: a new largest amount rescales the earlier comparisons too.
    if let Some(p) = prev
        && job.policy == AccountPolicy::Poison
        && job.min_value > 0.0
        && amount_scale(p.max_amount) != scale
    {
        return Ok(Err(
            "a new largest amount above 2^100 rescales poison's minimum".into(),
        ));
    }
    let mut st = prev.cloned().unwrap_or_default();
    st.max_amount = max_amount;
    let from = st.height;
    st.height = height.or(st.height);

    // Seeds, stops.
    let named: HashMap<String, &String> = job
        .seed_addresses
        .iter()
        .map(|a| (a.to_ascii_lowercase(), a))
        .collect();
    let mut seeds: HashSet<String> = named.keys().cloned().collect();
    let mut stop_labels: HashMap<&str, (&str, &str)> = HashMap::new();
    for (address, label, category) in labels {
        if job.seed_categories.contains(category) {
            seeds.insert(address.clone());
        }
        if job.stop_categories.contains(category) {
            stop_labels
                .entry(address.as_str())
                .or_insert((label, category));
        }
    }
    let flags_of = |a: &str| -> u32 {
        if seeds.contains(a) {
            SEED
        } else if stop_labels.contains_key(a) {
            STOP
        } else {
            0
        }
    };
    for r in &rows {
        for a in [&r.from, &r.to] {
            if named.contains_key(a.as_str()) {
                st.seeds_found.insert(a.clone());
            }
        }
    }
    let unknown: Vec<String> = job
        .seed_addresses
        .iter()
        .filter(|a| !st.seeds_found.contains(&a.to_ascii_lowercase()))
        .cloned()
        .collect();
    if prev.is_none() {
        let any = rows
            .iter()
            .any(|r| seeds.contains(&r.from) || seeds.contains(&r.to));
        if !any {
            return Err(no_seeds(&job.asset, &unknown));
        }
    }

    let limit = job.max_hops.unwrap_or(UNREACHED);
    let steps_cap = job.max_hops.unwrap_or(u32::MAX);
    let poison_min = (job.min_value * scale) as f32;
    let pool_min = Frac::from_f64(job.min_value);
    for r in rows {
        let t = st.transfers + 1;
        st.transfers = t;
        let (fs, fd) = (flags_of(&r.from), flags_of(&r.to));
        for (a, f) in [(&r.from, fs), (&r.to, fd)] {
            st.addresses
                .entry(a.clone())
                .or_insert_with(|| AddrState::new(f & SEED != 0));
        }
        let exact = frac::to_f64(&r.value);
        let carried = match job.policy {
            AccountPolicy::Poison => {
                let amount = (exact * scale) as f32;
                let s = st.addresses[&r.from].clone();
                let h = s.hop;
                if !(h == UNREACHED || h >= limit || fs & STOP != 0 || amount < poison_min) {
                    let d = st.addresses.get_mut(&r.to).expect("inserted");
                    if d.arrival == NO_ARRIVAL {
                        d.arrival = t;
                    }
                    d.hop = d.hop.min(h + 1);
                }
                let d_arrival = st.addresses[&r.to].arrival;
                let ok = s.arrival != NO_ARRIVAL
                    && s.arrival < t
                    && fs & STOP == 0
                    && amount >= poison_min
                    && d_arrival <= t;
                if ok { exact } else { 0.0 }
            }
            AccountPolicy::Haircut => {
                // The sender departs at every step: the transfer's share per step.
                let s = st.addresses.get_mut(&r.from).expect("inserted");
                let x = if fs & SEED != 0 {
                    let mut w = PoolWalk::resumed(fs, pool_min, s.balance, ONE);
                    let phi = w.depart(&r.value);
                    s.balance = w.state().0;
                    Shares::from_values(1, vec![phi])
                } else {
                    match s.shares.end() {
                        Some(end) if s.shares.start <= steps_cap => {
                            let (lo, hi) = (s.shares.start, end.saturating_add(1).min(steps_cap));
                            let (mut phis, mut fs_new) = (Vec::new(), Vec::new());
                            let mut b = s.balance;
                            for k in lo..=hi {
                                let mut w =
                                    PoolWalk::resumed(fs, pool_min, s.balance, s.shares.at(k));
                                phis.push(w.depart(&r.value));
                                let (nb, nf) = w.state();
                                b = nb;
                                fs_new.push(nf);
                            }
                            s.balance = b;
                            s.shares = Shares::from_values(lo, fs_new);
                            Shares::from_values(lo, phis)
                        }
                        _ => {
                            let mut w = PoolWalk::resumed(fs, pool_min, s.balance, ZERO);
                            w.depart(&r.value);
                            s.balance = w.state().0;
                            s.shares = Shares::default();
                            Shares::default()
                        }
                    }
                };
                // The receiver arrives at step k with the share of step k − 1.
                let y = x.later();
                let d = st.addresses.get_mut(&r.to).expect("inserted");
                if fd & SEED != 0 {
                    let mut w = PoolWalk::resumed(fd, pool_min, d.balance, ONE);
                    w.arrive(&r.value, ZERO);
                    d.balance = w.state().0;
                } else {
                    let ends = [d.shares.end(), y.end()];
                    let starts = [
                        (!d.shares.vals.is_empty()).then_some(d.shares.start),
                        (!y.vals.is_empty()).then_some(y.start),
                    ];
                    match (starts.iter().flatten().min(), ends.iter().flatten().max()) {
                        (Some(&lo), Some(&end)) if lo <= steps_cap => {
                            let hi = end.saturating_add(1).min(steps_cap);
                            let mut b = d.balance;
                            let mut fs_new = Vec::new();
                            for k in lo..=hi {
                                let mut w =
                                    PoolWalk::resumed(fd, pool_min, d.balance, d.shares.at(k));
                                w.arrive(&r.value, y.at(k));
                                let (nb, nf) = w.state();
                                b = nb;
                                fs_new.push(nf);
                            }
                            d.balance = b;
                            d.shares = Shares::from_values(lo, fs_new);
                        }
                        _ => {
                            let mut w = PoolWalk::resumed(fd, pool_min, d.balance, ZERO);
                            w.arrive(&r.value, ZERO);
                            d.balance = w.state().0;
                            d.shares = Shares::default();
                        }
                    }
                }
                if let Some(k) = x.first_nonzero().filter(|&k| k <= steps_cap) {
                    d.hop = d.hop.min(k);
                }
                let share = x.at(steps_cap);
                if share == ONE {
                    exact
                } else {
                    exact * share.to_f64()
                }
            }
        };
        if carried > 0.0 {
            let i = st.edges.len();
            st.edges.push(TaintedEdge {
                from: r.from.clone(),
                to: r.to.clone(),
                block: r.block,
                tx_index: r.txi,
                tx_hash: r.hash,
                value: carried,
            });
            let d = st.addresses.get_mut(&r.to).expect("inserted");
            d.value += carried;
            d.transfers += 1;
            if d.first.is_none() {
                d.first = Some(i);
            }
        }
    }
    st.addresses.retain(|_, a| a.kept());
    let run = run_of(&st, job, &stop_labels, unknown);
    tracing::info!(
        policy = job.policy.as_str(),
        from = ?from,
        to = ?st.height,
        tainted = run.addresses.len(),
        exits = run.exits.len(),
        "eth taint resumed"
    );
    Ok(Ok(EthResumed {
        run,
        state: st,
        from,
    }))
}

/// The run's rows from a state: the tainted transfers as its `transfers`.
fn run_of(
    st: &EthResumeState,
    job: &EthTaintJob,
    stop_labels: &HashMap<&str, (&str, &str)>,
    unknown: Vec<String>,
) -> EthTaintRun {
    let mut t = EthTransfers {
        scale: 1.0,
        ..Default::default()
    };
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut id = |a: &str, t: &mut EthTransfers| -> u32 {
        if let Some(&i) = ids.get(a) {
            return i;
        }
        t.addresses.push(a.to_string());
        let i = (t.addresses.len() - 1) as u32;
        ids.insert(a.to_string(), i);
        i
    };
    let mut tainted = Vec::with_capacity(st.edges.len());
    for e in &st.edges {
        let s = id(&e.from, &mut t);
        let d = id(&e.to, &mut t);
        t.graph.src.push(s);
        t.graph.dst.push(d);
        t.graph.amount.push(e.value as f32);
        t.block.push(e.block);
        t.tx_index.push(e.tx_index);
        t.tx_hash.push(e.tx_hash.clone());
        t.value.push(e.value);
        tainted.push(e.value);
    }
    t.graph.nodes = t.addresses.len() as u32;
    let addresses: Vec<TaintedAddress> = st
        .addresses
        .iter()
        .filter(|(_, a)| a.hop != UNREACHED)
        .map(|(addr, a)| TaintedAddress {
            address: addr.clone(),
            hop: a.hop,
            first: if a.hop == 0 { None } else { a.first },
            tainted_value: a.value,
            tainted_transfers: a.transfers,
        })
        .collect();
    let mut exits: Vec<EthExit> = stop_labels
        .iter()
        .filter_map(|(addr, (label, category))| {
            let a = st.addresses.get(*addr).filter(|a| a.hop != UNREACHED)?;
            Some(EthExit {
                address: addr.to_string(),
                label: label.to_string(),
                category: category.to_string(),
                tainted_value: a.value,
                tainted_transfers: a.transfers,
                min_hop: a.hop,
                first_block: a.first.map(|i| st.edges[i].block),
            })
        })
        .collect();
    sort_exits(&mut exits);
    EthTaintRun {
        job: job.clone(),
        transfers: t,
        addresses,
        exits,
        tainted,
        unknown_seeds: unknown,
        steps: job.max_hops.unwrap_or(1),
        device: "cpu (resumed, chain order)".into(),
    }
}
