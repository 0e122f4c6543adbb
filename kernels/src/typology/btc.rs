//! The Bitcoin typologies that are walks along spends (peel chains, rapid pass-through)
//! or shapes of one source's payments (fan-out structuring) or of single transactions
//! (CoinJoin use), found in one chain-order pass over the committed transactions.
//!
//! What the pass holds:
//! - two one-byte saturating counters per address id (outputs received, transactions
//!   spending from it): "fresh" (never paid before) and "no other activity" are read
//!   from them;
//! - the chains still open: a chain's tail is an unspent output, and a chain whose tail
//!   waits longer than its rule's gap is closed (so open chains are those of the last
//!   `max_gap` blocks);
//! - fan-out sources seen paying a just-under-round amount in the last `window` blocks;
//! - per address that used a CoinJoin, its totals;
//! - the findings.
//!
//! Every rule is stated in docs/typologies.md with where its thresholds come from.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Finding, Pattern, coefficient_of_variation, just_under_round, r4};
use crate::coinjoin::{Detectors, Protocol, TxShape};
use crate::txstream::TxRows;
use crate::{Error, Result};

/// The rules' thresholds (docs/typologies.md gives the reasoning for each default).
#[derive(Clone, Debug, PartialEq)]
pub struct BtcRules {
    /// Peel chains: the fewest steps.
    pub peel_min_steps: usize,
    /// Peel chains: the largest share of a step's input the peel may take.
    pub peel_max_share: f64,
    /// Peel chains: the most blocks between a remainder and the step that spends it.
    pub peel_max_gap: i64,
    /// Pass-through: the fewest hops.
    pub pass_min_hops: usize,
    /// Pass-through: the smallest share of a hop's input its one output keeps.
    pub pass_min_kept: f64,
    /// Pass-through: the most blocks between receiving and passing on.
    pub pass_max_wait: i64,
    /// Fan-out: the fewest just-under-round payments to fresh addresses.
    pub fan_min_outputs: usize,
    /// Fan-out: how far under a round threshold (a share of it) counts as just under.
    pub fan_band: f64,
    /// Fan-out: the smallest payment that counts (sats).
    pub fan_min_value: i64,
    /// Fan-out: the largest coefficient of variation of the just-under amounts.
    pub fan_max_cv: f64,
    /// Fan-out: the smallest share of the source's payments that are just under.
    pub fan_min_share: f64,
    /// Fan-out: a source idle this many blocks is judged.
    pub fan_window: i64,
    /// Fan-out: when the source pays the recipients of its just-under payments again at
    /// least this often (per such payment), or at least this share of the recipients
    /// are paid again by anyone, they are a payroll, not structuring.
    pub fan_max_repaid: f64,
    /// Transactions below this height are read (for the counters) but start no finding.
    pub since: Option<i64>,
    pub detectors: Detectors,
}

impl Default for BtcRules {
    fn default() -> Self {
        Self {
            peel_min_steps: 5,
            peel_max_share: 0.2,
            peel_max_gap: 1008,
            pass_min_hops: 3,
            pass_min_kept: 0.95,
            pass_max_wait: 144,
            fan_min_outputs: 10,
            fan_band: 0.05,
            fan_min_value: 100_000,
            fan_max_cv: 0.1,
            fan_min_share: 0.5,
            fan_window: 1008,
            fan_max_repaid: 0.5,
            since: None,
            detectors: Detectors::default(),
        }
    }
}

impl BtcRules {
    /// Refuses thresholds that make no sense (a share outside (0, 1], a negative window).
    pub fn check(&self) -> Result<()> {
        let share = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(Error::BadQuery(format!(
                    "typologies: {name} must be in (0, 1], not {v}"
                )))
            }
        };
        share("peel_max_share", self.peel_max_share)?;
        share("pass_min_kept", self.pass_min_kept)?;
        share("fan_band", self.fan_band)?;
        share("fan_min_share", self.fan_min_share)?;
        share("fan_max_repaid", self.fan_max_repaid)?;
        if !(self.fan_max_cv.is_finite() && self.fan_max_cv >= 0.0) {
            return Err(Error::BadQuery(format!(
                "typologies: fan_max_cv must be at least 0, not {}",
                self.fan_max_cv
            )));
        }
        for (name, v) in [
            ("peel_max_gap", self.peel_max_gap),
            ("pass_max_wait", self.pass_max_wait),
            ("fan_window", self.fan_window),
            ("fan_min_value", self.fan_min_value),
        ] {
            if v < 0 {
                return Err(Error::BadQuery(format!(
                    "typologies: {name} must be at least 0, not {v}"
                )));
            }
        }
        for (name, v) in [
            ("peel_min_steps", self.peel_min_steps),
            ("pass_min_hops", self.pass_min_hops),
            ("fan_min_outputs", self.fan_min_outputs),
        ] {
            if v < 2 {
                return Err(Error::BadQuery(format!(
                    "typologies: {name} must be at least 2, not {v}"
                )));
            }
        }
        Ok(())
    }
}

/// A txid held as its 32 bytes, in the order its hex is written: no allocation per
/// step, a third of a hex string's memory. Serialised as the hex (the state's format
/// is the same as with strings).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Txid([u8; 32]);

impl Txid {
    /// `s` as 64 lowercase hex digits (what the warehouse stores); anything else is
    /// `None`.
    pub fn parse(s: &str) -> Option<Txid> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (digit(b[2 * i])? << 4) | digit(b[2 * i + 1])?;
        }
        Some(Txid(out))
    }

    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for &b in &self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        s
    }
}

impl std::fmt::Debug for Txid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for Txid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Txid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Txid::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("txid `{s}` is not 64 lowercase hex digits"))
        })
    }
}

/// A set of CoinJoin protocols as bits (one byte a mix user instead of a set of
/// strings). Serialised as the names in alphabetical order, as the set of names was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Protocols(u8);

impl Protocols {
    fn insert(&mut self, p: Protocol) {
        self.0 |= 1 << (p as u8);
    }

    fn names(self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = Protocol::ALL
            .into_iter()
            .filter(|&p| self.0 & (1 << (p as u8)) != 0)
            .map(Protocol::name)
            .collect();
        v.sort_unstable();
        v
    }
}

impl Serialize for Protocols {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Protocols {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let names = <Vec<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        let mut out = Protocols::default();
        for n in names {
            let p = Protocol::from_name(&n).ok_or_else(|| {
                serde::de::Error::custom(format!("unknown CoinJoin protocol `{n}`"))
            })?;
            out.insert(p);
        }
        Ok(out)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PeelStep {
    txid: Txid,
    height: i64,
    input: i64,
    peel: i64,
    remainder: i64,
    peel_fresh: bool,
    remainder_fresh: bool,
    peel_to_exchange: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PeelChain {
    start: Option<u64>,
    steps: Vec<PeelStep>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PassStep {
    txid: Txid,
    height: i64,
    address: u64,
    input: i64,
    output: i64,
    wait: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FanSource {
    first_height: i64,
    last_height: i64,
    /// Outputs to other addresses since the source was first seen paying just under.
    payments: usize,
    /// The just-under payments to fresh addresses: value and its round threshold.
    under: Vec<(i64, i64)>,
    /// Per transaction with just-under payments: its txid, height, the range of its
    /// entries in `under`, and its payments.
    txs: Vec<(Txid, i64, std::ops::Range<usize>, usize)>,
    /// The addresses those went to, and later payments to them again (a payroll pays
    /// the same people every month; structuring pays fresh addresses).
    recipients: HashSet<u64>,
    repaid: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct MixUse {
    sent: i64,
    mixes: u32,
    protocols: Protocols,
    confidence: f64,
    txids: Vec<Txid>,
    first_height: i64,
    last_height: i64,
}

/// What a pass leaves for the next run to go on from, but for the two activity counters
/// (which travel as bytes): every open chain and source, the chains and sources still to
/// judge, the mix users, the findings closed so far. Collections are sorted by key, so
/// the same pass always gives the same state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanState {
    /// The rules the pass ran with (their `Debug` text): a run with other rules starts
    /// from the first block.
    pub rules: String,
    peel_open: Vec<(u64, PeelChain)>,
    pass_open: Vec<(u64, Vec<PassStep>)>,
    pass_done: Vec<Vec<PassStep>>,
    fan: Vec<(u64, FanSource)>,
    fan_done: Vec<(Vec<u64>, Finding)>,
    mix: Vec<(u64, MixUse)>,
    mixed: Vec<u64>,
    findings: Vec<Finding>,
    last_sweep: i64,
    pub last_tx: Option<u64>,
    pub transactions: u64,
}

/// [`ScanState`] borrowed from a running pass: serialises to the same JSON without
/// copying the pass (which on a whole chain is most of the memory).
#[derive(Serialize)]
struct ScanStateView<'a> {
    rules: String,
    peel_open: Vec<(u64, &'a PeelChain)>,
    pass_open: Vec<(u64, &'a Vec<PassStep>)>,
    pass_done: &'a [Vec<PassStep>],
    fan: Vec<(u64, &'a FanSource)>,
    fan_done: &'a [(Vec<u64>, Finding)],
    mix: Vec<(u64, &'a MixUse)>,
    mixed: Vec<u64>,
    findings: &'a [Finding],
    last_sweep: i64,
    last_tx: Option<u64>,
    transactions: u64,
}

fn sorted<K: Ord + Copy, V>(m: &HashMap<K, V>) -> Vec<(K, &V)> {
    let mut v: Vec<(K, &V)> = m.iter().map(|(k, v)| (*k, v)).collect();
    v.sort_by_key(|e| e.0);
    v
}

/// The pass's state. Feed it every committed transaction in chain order
/// ([`Scan::tx`]), then [`Scan::finish`].
pub struct Scan {
    rules: BtcRules,
    exchanges: HashSet<u64>,
    received: Vec<u8>,
    spent: Vec<u8>,
    peel_open: HashMap<u64, PeelChain>,
    pass_open: HashMap<u64, Vec<PassStep>>,
    /// Closed pass-through chains long enough to judge once the counters are final.
    pass_done: Vec<Vec<PassStep>>,
    fan: HashMap<u64, FanSource>,
    /// Fan-out findings and their recipients, judged once the counters are final.
    fan_done: Vec<(Vec<u64>, Finding)>,
    mix: HashMap<u64, MixUse>,
    /// Unspent outputs of mixes (spending one is a remix, not an entry).
    mixed: HashSet<u64>,
    findings: Vec<Finding>,
    last_sweep: i64,
    last_tx: Option<u64>,
    /// Transactions read.
    pub transactions: u64,
    scratch: Scratch,
    /// Set by [`Scan::walk_on_graph`]: steps and hops are recorded as nodes, linked
    /// afterwards on the spend graph ([`super::walk`]), instead of being linked here.
    walk: Option<WalkNodes>,
}

/// The nodes a graph walk links: peel steps (with their input's owner) and hops.
type WalkNodes = super::walk::Nodes<(Option<u64>, PeelStep), PassStep>;

/// Per-transaction buffers, reused (no state: never serialised).
#[derive(Default)]
struct Scratch {
    values: Vec<Option<i64>>,
    ids: Vec<u64>,
    out_values: Vec<i64>,
    nulldata: Vec<bool>,
    /// Fan-out: the just-under payments, their recipients, every recipient.
    under: Vec<(i64, i64)>,
    to: Vec<u64>,
    paid_to: Vec<u64>,
}

fn bump(v: &mut Vec<u8>, a: u64) {
    let i = a as usize;
    if i >= v.len() {
        v.resize(i + 1, 0);
    }
    v[i] = v[i].saturating_add(1);
}

fn count(v: &[u8], a: u64) -> u8 {
    v.get(a as usize).copied().unwrap_or(0)
}

/// The transaction's outputs that pay (not OP_RETURN), when there are exactly `N`.
fn paying<const N: usize>(tx: &TxRows) -> Option<[&crate::txstream::TxOut; N]> {
    let mut it = tx.outputs.iter().filter(|o| !o.nulldata);
    let first = it.next()?;
    let mut out = [first; N];
    for slot in out.iter_mut().skip(1) {
        *slot = it.next()?;
    }
    it.next().is_none().then_some(out)
}

fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

impl Scan {
    /// A scan with the given rules; `exchanges` are the address ids labelled exchanges
    /// (peels paying them are counted); `addresses` sizes the counters.
    pub fn new(rules: BtcRules, exchanges: HashSet<u64>, addresses: u64) -> Result<Self> {
        rules.check()?;
        let n = usize::try_from(addresses).map_err(|_| {
            Error::BadGraph(format!("{addresses} addresses do not fit this machine"))
        })?;
        Ok(Self {
            rules,
            exchanges,
            received: vec![0; n],
            spent: vec![0; n],
            peel_open: HashMap::new(),
            pass_open: HashMap::new(),
            pass_done: Vec::new(),
            fan: HashMap::new(),
            fan_done: Vec::new(),
            mix: HashMap::new(),
            mixed: HashSet::new(),
            findings: Vec::new(),
            last_sweep: i64::MIN,
            last_tx: None,
            transactions: 0,
            scratch: Scratch::default(),
            walk: None,
        })
    }

    /// Goes on from a pass's state and counters (from [`Scan::state`]), on a chain that
    /// now has `addresses` addresses. Fails when the state was made with other rules or
    /// counts more addresses than the chain.
    pub fn resume(
        rules: BtcRules,
        exchanges: HashSet<u64>,
        state: ScanState,
        mut received: Vec<u8>,
        mut spent: Vec<u8>,
        addresses: u64,
    ) -> Result<Self> {
        rules.check()?;
        let n = usize::try_from(addresses).map_err(|_| {
            Error::BadGraph(format!("{addresses} addresses do not fit this machine"))
        })?;
        if received.len() > n || spent.len() > n {
            return Err(Error::BadGraph(format!(
                "typologies: the kept state counts {} addresses, the chain {n}",
                received.len().max(spent.len())
            )));
        }
        received.resize(n, 0);
        spent.resize(n, 0);
        if state.rules != format!("{rules:?}") {
            return Err(Error::BadQuery(
                "typologies: the kept state was made with other rules".into(),
            ));
        }
        Ok(Self {
            rules,
            exchanges,
            received,
            spent,
            peel_open: state.peel_open.into_iter().collect(),
            pass_open: state.pass_open.into_iter().collect(),
            pass_done: state.pass_done,
            fan: state.fan.into_iter().collect(),
            fan_done: state.fan_done,
            mix: state.mix.into_iter().collect(),
            mixed: state.mixed.into_iter().collect(),
            findings: state.findings,
            last_sweep: state.last_sweep,
            last_tx: state.last_tx,
            transactions: state.transactions,
            scratch: Scratch::default(),
            walk: None,
        })
    }

    /// Records peel steps and pass-through hops as nodes for a walk on the spend graph
    /// ([`super::walk`]) instead of linking them in chain order. Only for a scan from the
    /// first block: the walk links nodes of this run only.
    pub fn walk_on_graph(&mut self) -> Result<()> {
        if self.transactions != 0 || !self.peel_open.is_empty() || !self.pass_open.is_empty() {
            return Err(Error::BadQuery(
                "typologies: the graph walk reads every block; it cannot go on from a kept state"
                    .into(),
            ));
        }
        self.walk = Some(super::walk::Nodes {
            peel: super::walk::Kind::new(self.rules.peel_max_gap),
            pass: super::walk::Kind::new(self.rules.pass_max_wait),
        });
        Ok(())
    }

    /// Links the recorded nodes on the committed spend graph, ranks the chains on
    /// `backend`, and takes them in: a chain whose tail is unspent stays open (as in the
    /// chain-order pass, so the kept state goes on the same way), the others are closed.
    pub async fn walk_graph(
        &mut self,
        wh: &ferret_schemas::Warehouse,
        m: &ferret_schemas::Manifest,
        backend: &crate::device::Backend,
    ) -> Result<super::walk::WalkStats> {
        let Some(mut nodes) = self.walk.take() else {
            return Err(Error::BadQuery(
                "typologies: walk_graph on a scan not set to walk_on_graph".into(),
            ));
        };
        let t = std::time::Instant::now();
        let (peel, pass) = (nodes.peel.len(), nodes.pass.len());
        let (chunks, edges) = super::walk::link(wh, m, &mut nodes).await?;
        let link_seconds = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let walked = nodes.walk(backend)?;
        let rank_seconds = t.elapsed().as_secs_f64();
        let stats = super::walk::WalkStats {
            peel_steps: peel,
            pass_hops: pass,
            peel_chains: walked.peel.len(),
            pass_chains: walked.pass.len(),
            chunks,
            edges,
            link_seconds,
            rank_seconds,
        };
        tracing::info!(?stats, device = %backend.describe(), "typologies: chains walked on the spend graph");
        self.take_walked(walked);
        Ok(stats)
    }

    fn take_walked(&mut self, w: super::walk::Walked<(Option<u64>, PeelStep), PassStep>) {
        for (open, steps) in w.peel {
            let start = steps.first().and_then(|s| s.0);
            let chain = PeelChain {
                start,
                steps: steps.into_iter().map(|s| s.1).collect(),
            };
            match open {
                Some(tail) => {
                    self.peel_open.insert(tail, chain);
                }
                None => self.close_peel(chain),
            }
        }
        for (open, steps) in w.pass {
            match open {
                Some(tail) => {
                    self.pass_open.insert(tail, steps);
                }
                None => self.close_pass(steps),
            }
        }
    }

    /// The state to go on from later, as the JSON of a [`ScanState`] (the two counters
    /// travel apart, as bytes).
    pub fn state_json(&self) -> Result<Vec<u8>> {
        let mut mixed: Vec<u64> = self.mixed.iter().copied().collect();
        mixed.sort_unstable();
        let view = ScanStateView {
            rules: format!("{:?}", self.rules),
            peel_open: sorted(&self.peel_open),
            pass_open: sorted(&self.pass_open),
            pass_done: &self.pass_done,
            fan: sorted(&self.fan),
            fan_done: &self.fan_done,
            mix: sorted(&self.mix),
            mixed,
            findings: &self.findings,
            last_sweep: self.last_sweep,
            last_tx: self.last_tx,
            transactions: self.transactions,
        };
        serde_json::to_vec(&view)
            .map_err(|e| Error::BadGraph(format!("typologies: writing the state: {e}")))
    }

    /// Reads one transaction (the next in chain order).
    pub fn tx(&mut self, tx: &TxRows) -> Result<()> {
        if self.last_tx.is_some_and(|l| tx.tx_index <= l) {
            return Err(Error::BadGraph(format!(
                "typologies: transaction {} out of chain order",
                tx.tx_index
            )));
        }
        // An address id past the manifest's count is damage: growing the counters to it
        // could take any amount of memory.
        let limit = self.received.len().max(self.spent.len()) as u64;
        if let Some(a) = tx
            .outputs
            .iter()
            .filter_map(|o| o.address_id)
            .chain(tx.inputs.iter().filter_map(|i| i.address_id))
            .find(|&a| a >= limit)
        {
            return Err(Error::BadGraph(format!(
                "transaction {}: address id {a} is past the {limit} addresses the manifest counts",
                tx.tx_index
            )));
        }
        self.last_tx = Some(tx.tx_index);
        self.transactions += 1;
        let h = tx.height;
        if self.last_sweep == i64::MIN || h - self.last_sweep >= 144 {
            self.sweep(h);
            self.last_sweep = h;
        }
        let judged = self.rules.since.is_none_or(|s| h >= s);
        if judged && !tx.inputs.is_empty() {
            let txid = tx.txid.as_deref().ok_or_else(|| {
                Error::BadGraph(format!("transaction {} without a txid", tx.tx_index))
            })?;
            let txid = Txid::parse(txid).ok_or_else(|| {
                Error::BadGraph(format!(
                    "transaction {}: txid `{}` is not 64 lowercase hex digits",
                    tx.tx_index,
                    txid.escape_debug()
                ))
            })?;
            let cj = self.detect(tx);
            if let Some(d) = cj {
                self.coinjoin(tx, txid, d);
            }
            self.peel(tx, txid)?;
            self.pass(tx, txid)?;
            // A CoinJoin's equal outputs are its participants', not one source's.
            if !cj.is_some_and(|d| d.protocol.is_mix()) {
                self.fan_out(tx, txid);
            }
        } else {
            // Chains whose tail this transaction spends end here.
            for i in &tx.inputs {
                if let Some(o) = i.spent_output {
                    if let Some(c) = self.peel_open.remove(&o) {
                        self.close_peel(c);
                    }
                    if let Some(c) = self.pass_open.remove(&o) {
                        self.close_pass(c);
                    }
                }
            }
        }
        // A mix output spent (in a mix or not) leaves the set: it holds the unspent mix
        // outputs only, not every one there ever was.
        if !self.mixed.is_empty() {
            for i in &tx.inputs {
                if let Some(o) = i.spent_output {
                    self.mixed.remove(&o);
                }
            }
        }
        for o in &tx.outputs {
            if let Some(a) = o.address_id
                && !o.nulldata
            {
                bump(&mut self.received, a);
            }
        }
        let mut seen = std::mem::take(&mut self.scratch.ids);
        seen.clear();
        seen.extend(tx.inputs.iter().filter_map(|i| i.address_id));
        seen.sort_unstable();
        seen.dedup();
        for &a in &seen {
            bump(&mut self.spent, a);
        }
        self.scratch.ids = seen;
        Ok(())
    }

    /// The one owner of the inputs, as far as addresses show it: the single input
    /// (its address, if it has one), or inputs all from one address; and the inputs'
    /// total value (known).
    fn one_spender(tx: &TxRows) -> Option<(Option<u64>, i64)> {
        if let [i] = tx.inputs.as_slice() {
            return Some((i.address_id, i.value?));
        }
        Self::one_owner(tx).map(|(a, v)| (Some(a), v))
    }

    /// The one address every input spends from, and the inputs' total value (both
    /// known).
    fn one_owner(tx: &TxRows) -> Option<(u64, i64)> {
        let first = tx.inputs.first()?.address_id?;
        let mut total: i64 = 0;
        for i in &tx.inputs {
            if i.address_id != Some(first) {
                return None;
            }
            total = total.checked_add(i.value?)?;
        }
        Some((first, total))
    }

    fn fresh(&self, a: Option<u64>) -> bool {
        a.is_some_and(|a| count(&self.received, a) == 0)
    }

    /// What the CoinJoin detectors make of the transaction (mixes and tx0s).
    fn detect(&mut self, tx: &TxRows) -> Option<crate::coinjoin::Detection> {
        if tx.outputs.len() < 2 {
            return None;
        }
        // Buffers kept across transactions: a whole chain is billions of them.
        let sc = &mut self.scratch;
        sc.values.clear();
        sc.values.extend(tx.inputs.iter().map(|i| i.value));
        sc.ids.clear();
        sc.ids.extend(tx.inputs.iter().filter_map(|i| i.address_id));
        let addressless = tx.inputs.len() - sc.ids.len();
        sc.ids.sort_unstable();
        sc.ids.dedup();
        sc.out_values.clear();
        sc.out_values.extend(tx.outputs.iter().map(|o| o.value));
        sc.nulldata.clear();
        sc.nulldata.extend(tx.outputs.iter().map(|o| o.nulldata));
        let shape = TxShape {
            input_values: &sc.values,
            distinct_input_addresses: sc.ids.len() + addressless,
            output_values: &sc.out_values,
            output_nulldata: &sc.nulldata,
        };
        self.rules.detectors.detect(&shape)
    }

    fn coinjoin(&mut self, tx: &TxRows, txid: Txid, d: crate::coinjoin::Detection) {
        if !d.protocol.is_mix() {
            return;
        }
        let h = tx.height;
        let mix = &mut self.mix;
        let mut touch = |a: u64, sent: i64| {
            let m = mix.entry(a).or_insert_with(|| MixUse {
                first_height: h,
                ..MixUse::default()
            });
            m.sent = m.sent.saturating_add(sent);
            m.protocols.insert(d.protocol);
            m.confidence = m.confidence.max(d.confidence);
            m.last_height = h;
            if m.txids.last() != Some(&txid) {
                m.txids.push(txid);
                m.mixes += 1;
            }
        };
        // An input whose money was not already mixed enters mixing: its address is a
        // mix user. (Remixes of mixed outputs are the mix's own traffic.)
        for i in &tx.inputs {
            let remix = i.spent_output.is_some_and(|o| self.mixed.remove(&o));
            if let Some(a) = i.address_id
                && !remix
            {
                touch(a, i.value.unwrap_or(0).max(1));
            }
        }
        for o in &tx.outputs {
            if !o.nulldata {
                self.mixed.insert(o.output_id);
            }
        }
    }

    fn peel(&mut self, tx: &TxRows, txid: Txid) -> Result<()> {
        let mut ended: Vec<PeelChain> = Vec::new();
        for i in &tx.inputs {
            if let Some(o) = i.spent_output
                && let Some(c) = self.peel_open.remove(&o)
            {
                ended.push(c);
            }
        }
        let step = (|| {
            // Bare-key outputs have no address: a step may spend or pay one.
            let (owner, input) = Self::one_spender(tx)?;
            let [a, b] = paying::<2>(tx)?;
            let (peel, rem) = if a.value <= b.value { (a, b) } else { (b, a) };
            if peel.value <= 0
                || input <= 0
                || peel.value as f64 > self.rules.peel_max_share * input as f64
                || (rem.address_id.is_some() && rem.address_id == owner)
            {
                return None;
            }
            Some((
                owner,
                rem.output_id,
                PeelStep {
                    txid,
                    height: tx.height,
                    input,
                    peel: peel.value,
                    remainder: rem.value,
                    peel_fresh: self.fresh(peel.address_id),
                    remainder_fresh: self.fresh(rem.address_id),
                    peel_to_exchange: peel.address_id.is_some_and(|p| self.exchanges.contains(&p)),
                },
            ))
        })();
        let Some((owner, tail, step)) = step else {
            for c in ended {
                self.close_peel(c);
            }
            return Ok(());
        };
        if let Some(w) = &mut self.walk {
            return w.peel.push(super::walk::Node {
                tx: tx.tx_index,
                tail,
                height: tx.height,
                step: (owner, step),
            });
        }
        // A step continues the chain whose remainder it spends within the gap, when it
        // spends exactly one such; any other chain it spends ends. (Chains past the gap
        // do not count whether or not a sweep has closed them yet: the outcome never
        // depends on when the sweep ran.)
        let gap = self.rules.peel_max_gap;
        let live = |c: &PeelChain| c.steps.last().is_some_and(|l| tx.height - l.height <= gap);
        let mut chain = None;
        if ended.iter().filter(|c| live(c)).count() == 1
            && let Some(at) = ended.iter().position(live)
        {
            chain = Some(ended.swap_remove(at));
        }
        for c in ended {
            self.close_peel(c);
        }
        let mut chain = chain.unwrap_or(PeelChain {
            start: owner,
            steps: Vec::new(),
        });
        chain.steps.push(step);
        self.peel_open.insert(tail, chain);
        Ok(())
    }

    fn close_peel(&mut self, c: PeelChain) {
        let r = &self.rules;
        let n = c.steps.len();
        if n < r.peel_min_steps {
            return;
        }
        let first = &c.steps[0];
        let last = &c.steps[n - 1];
        let peeled: i64 = c.steps.iter().map(|s| s.peel).sum();
        let shares: Vec<f64> = c
            .steps
            .iter()
            .map(|s| s.peel as f64 / s.input as f64)
            .collect();
        let mut gaps: Vec<f64> = c
            .steps
            .windows(2)
            .map(|w| (w[1].height - w[0].height) as f64)
            .collect();
        let max_gap = gaps.iter().copied().fold(0.0, f64::max);
        let fresh_rem = c.steps.iter().filter(|s| s.remainder_fresh).count() as f64 / n as f64;
        let fresh_peel = c.steps.iter().filter(|s| s.peel_fresh).count() as f64 / n as f64;
        let to_exchanges = c.steps.iter().filter(|s| s.peel_to_exchange).count();
        let mut sorted = shares.clone();
        let length_part = ((n - r.peel_min_steps) as f64 / r.peel_min_steps as f64).min(1.0);
        let score = (0.5 + 0.5 * length_part) * (0.5 + 0.5 * fresh_rem);
        let mut f = Map::new();
        f.insert("steps".into(), json!(n));
        f.insert("total_peeled".into(), json!(peeled));
        f.insert("start_value".into(), json!(first.input));
        f.insert("end_remainder".into(), json!(last.remainder));
        f.insert("median_peel_share".into(), json!(r4(median(&mut sorted))));
        f.insert(
            "peel_share_cv".into(),
            json!(r4(coefficient_of_variation(&shares))),
        );
        f.insert("fresh_remainder_share".into(), json!(r4(fresh_rem)));
        f.insert("fresh_peel_share".into(), json!(r4(fresh_peel)));
        f.insert("peels_to_exchanges".into(), json!(to_exchanges));
        f.insert("median_gap_blocks".into(), json!(r4(median(&mut gaps))));
        f.insert("max_gap_blocks".into(), json!(max_gap));
        self.findings.push(Finding {
            pattern: Pattern::PeelChain,
            address_id: c.start,
            address: None,
            txids: c.steps.iter().map(|s| s.txid.hex()).collect(),
            first_height: first.height,
            last_height: last.height,
            amount: peeled as f64,
            score: r4(score),
            features: f,
        });
    }

    fn pass(&mut self, tx: &TxRows, txid: Txid) -> Result<()> {
        let mut ended: Vec<Vec<PassStep>> = Vec::new();
        for i in &tx.inputs {
            if let Some(o) = i.spent_output
                && let Some(c) = self.pass_open.remove(&o)
            {
                ended.push(c);
            }
        }
        let step = (|| {
            let (owner, input) = Self::one_owner(tx)?;
            let [out] = paying::<1>(tx)?;
            let to = out.address_id?;
            let received = tx.inputs.iter().map(|i| i.spent_height).max()??;
            let wait = tx.height - received;
            if to == owner
                || input <= 0
                || wait > self.rules.pass_max_wait
                || (out.value as f64) < self.rules.pass_min_kept * input as f64
            {
                return None;
            }
            Some((
                out.output_id,
                PassStep {
                    txid,
                    height: tx.height,
                    address: owner,
                    input,
                    output: out.value,
                    wait,
                },
            ))
        })();
        let Some((tail, step)) = step else {
            for c in ended {
                self.close_pass(c);
            }
            return Ok(());
        };
        if let Some(w) = &mut self.walk {
            return w.pass.push(super::walk::Node {
                tx: tx.tx_index,
                tail,
                height: tx.height,
                step,
            });
        }
        // As for peel chains: the one chain within the wait whose output this hop
        // spends, if exactly one.
        let wait = self.rules.pass_max_wait;
        let live = |c: &Vec<PassStep>| c.last().is_some_and(|l| tx.height - l.height <= wait);
        let mut chain = Vec::new();
        if ended.iter().filter(|c| live(c)).count() == 1
            && let Some(at) = ended.iter().position(live)
        {
            chain = ended.swap_remove(at);
        }
        for c in ended {
            self.close_pass(c);
        }
        chain.push(step);
        self.pass_open.insert(tail, chain);
        Ok(())
    }

    fn close_pass(&mut self, c: Vec<PassStep>) {
        if c.len() >= self.rules.pass_min_hops {
            self.pass_done.push(c);
        }
    }

    /// Judges a closed pass-through chain once the activity counters are final: each
    /// hop's address must have received once and spent once; the chain is cut where one
    /// did more, and runs still long enough are findings.
    fn judge_pass(&mut self, c: Vec<PassStep>) {
        let quiet = |s: &PassStep| {
            count(&self.received, s.address) == 1 && count(&self.spent, s.address) == 1
        };
        let mut runs: Vec<Vec<&PassStep>> = vec![Vec::new()];
        for s in &c {
            if quiet(s) {
                if let Some(r) = runs.last_mut() {
                    r.push(s);
                }
            } else if !runs.last().is_some_and(Vec::is_empty) {
                runs.push(Vec::new());
            }
        }
        let min = self.rules.pass_min_hops;
        let mut out = Vec::new();
        for run in runs.into_iter().filter(|r| r.len() >= min) {
            let n = run.len();
            let first = run[0];
            let last = run[n - 1];
            let kept = last.output as f64 / first.input as f64;
            let mut waits: Vec<f64> = run.iter().map(|s| s.wait as f64).collect();
            let max_wait = waits.iter().copied().fold(0.0, f64::max);
            let length_part = ((n - min) as f64 / min as f64).min(1.0);
            let speed = 1.0 - max_wait / (self.rules.pass_max_wait.max(1) as f64 * 2.0);
            let score = (0.5 + 0.5 * length_part) * speed.clamp(0.5, 1.0);
            let mut f = Map::new();
            f.insert("hops".into(), json!(n));
            f.insert("first_value".into(), json!(first.input));
            f.insert("last_value".into(), json!(last.output));
            f.insert("value_kept".into(), json!(r4(kept)));
            f.insert("median_wait_blocks".into(), json!(r4(median(&mut waits))));
            f.insert("max_wait_blocks".into(), json!(max_wait));
            out.push(Finding {
                pattern: Pattern::PassThrough,
                address_id: Some(first.address),
                address: None,
                txids: run.iter().map(|s| s.txid.hex()).collect(),
                first_height: first.height,
                last_height: last.height,
                amount: first.input as f64,
                score: r4(score),
                features: f,
            });
        }
        self.findings.extend(out);
    }

    fn fan_out(&mut self, tx: &TxRows, txid: Txid) {
        let Some(source) = tx.inputs.first().and_then(|i| i.address_id) else {
            return;
        };
        let r = &self.rules;
        let mut payments = 0usize;
        let mut under = std::mem::take(&mut self.scratch.under);
        let mut to = std::mem::take(&mut self.scratch.to);
        let mut paid_to = std::mem::take(&mut self.scratch.paid_to);
        under.clear();
        to.clear();
        paid_to.clear();
        for o in &tx.outputs {
            let Some(a) = o.address_id else { continue };
            if o.nulldata || a == source {
                continue;
            }
            payments += 1;
            paid_to.push(a);
            if o.value >= r.fan_min_value
                && self.fresh(Some(a))
                && let Some(round) = just_under_round(o.value, r.fan_band)
            {
                under.push((o.value, round));
                to.push(a);
            }
        }
        if !under.is_empty() || self.fan.contains_key(&source) {
            let h = tx.height;
            let s = self.fan.entry(source).or_insert_with(|| FanSource {
                first_height: h,
                ..FanSource::default()
            });
            s.repaid += paid_to.iter().filter(|a| s.recipients.contains(a)).count();
            s.payments += payments;
            s.last_height = h;
            if !under.is_empty() {
                let at = s.under.len();
                s.under.extend_from_slice(&under);
                s.recipients.extend(to.iter().copied());
                s.txs.push((txid, h, at..s.under.len(), payments));
            }
        }
        self.scratch.under = under;
        self.scratch.to = to;
        self.scratch.paid_to = paid_to;
    }

    /// Judges a fan-out source: its just-under payments over the window when they are
    /// most of what it paid; else the single transactions that are mostly just-under
    /// payments on their own (a busy address that structured once).
    fn close_fan(&mut self, source: u64, s: FanSource) {
        let r = &self.rules;
        if s.under.len() < r.fan_min_outputs {
            return;
        }
        let whole = s.under.len() as f64 / s.payments.max(1) as f64 >= r.fan_min_share;
        let picked: Vec<&(Txid, i64, std::ops::Range<usize>, usize)> = if whole {
            s.txs.iter().collect()
        } else {
            s.txs
                .iter()
                .filter(|t| {
                    t.2.len() >= r.fan_min_outputs
                        && t.2.len() as f64 / t.3.max(1) as f64 >= r.fan_min_share
                })
                .collect()
        };
        if picked.is_empty() {
            return;
        }
        let under: Vec<(i64, i64)> = picked
            .iter()
            .flat_map(|t| s.under[t.2.clone()].iter().copied())
            .collect();
        let n = under.len();
        let payments = if whole {
            s.payments
        } else {
            picked.iter().map(|t| t.3).sum()
        };
        let share = n as f64 / payments.max(1) as f64;
        // Near-equal per round threshold (one batch may structure under 10,000 and
        // another under 5,000): the largest spread of any threshold's amounts.
        let mut by_round: HashMap<i64, Vec<f64>> = HashMap::new();
        for &(v, round) in &under {
            by_round.entry(round).or_default().push(v as f64);
        }
        let cv = by_round
            .values()
            .map(|v| coefficient_of_variation(v))
            .fold(0.0, f64::max);
        let repaid = s.repaid as f64 / s.under.len() as f64;
        if n < r.fan_min_outputs
            || share < r.fan_min_share
            || cv > r.fan_max_cv
            || repaid >= r.fan_max_repaid
        {
            return;
        }
        let total: i64 = under.iter().map(|u| u.0).sum();
        let mean_gap = under
            .iter()
            .map(|&(v, round)| (round - v) as f64 / round as f64)
            .sum::<f64>()
            / n as f64;
        let mut rounds: Vec<i64> = under.iter().map(|u| u.1).collect();
        rounds.sort_unstable();
        rounds.dedup();
        let count_part = (n as f64 / (2 * r.fan_min_outputs) as f64).min(1.0);
        let score =
            (0.5 + 0.5 * count_part) * (1.0 - cv / (2.0 * r.fan_max_cv.max(1e-9))).clamp(0.5, 1.0);
        let mut f = Map::new();
        f.insert("outputs".into(), json!(n));
        f.insert("payments".into(), json!(payments));
        f.insert("just_under_share".into(), json!(r4(share)));
        f.insert("amount_cv".into(), json!(r4(cv)));
        f.insert("mean_distance_under".into(), json!(r4(mean_gap)));
        f.insert("thresholds".into(), json!(rounds));
        f.insert("transactions".into(), json!(picked.len()));
        f.insert("recipients_paid_again".into(), json!(r4(repaid)));
        f.insert("judged_per_transaction".into(), json!(!whole));
        let recipients: Vec<u64> = s.recipients.iter().copied().collect();
        self.fan_done.push((
            recipients,
            Finding {
                pattern: Pattern::FanOut,
                address_id: Some(source),
                address: None,
                txids: picked.iter().map(|t| t.0.hex()).collect(),
                first_height: picked.iter().map(|t| t.1).min().unwrap_or(s.first_height),
                last_height: picked.iter().map(|t| t.1).max().unwrap_or(s.last_height),
                amount: total as f64,
                score: r4(score),
                features: f,
            },
        ));
    }

    /// Judges a fan-out finding once the counters are final: when most of its
    /// recipients were paid again (by anyone), they are standing payees (a payroll), not
    /// the throwaway addresses structuring pays.
    fn judge_fan(&mut self, recipients: &[u64], mut f: Finding) {
        let reused = recipients
            .iter()
            .filter(|&&a| count(&self.received, a) >= 2)
            .count() as f64
            / recipients.len().max(1) as f64;
        if reused >= self.rules.fan_max_repaid {
            return;
        }
        f.features
            .insert("recipients_reused".into(), json!(r4(reused)));
        self.findings.push(f);
    }

    /// Closes what waited too long: peel chains whose remainder is unspent beyond the
    /// gap, pass-through chains beyond the wait, fan-out sources idle beyond the window.
    fn sweep(&mut self, h: i64) {
        let (peel_gap, pass_wait, fan_window) = (
            self.rules.peel_max_gap,
            self.rules.pass_max_wait,
            self.rules.fan_window,
        );
        let stale: Vec<u64> = self
            .peel_open
            .iter()
            .filter(|(_, c)| c.steps.last().is_some_and(|l| h - l.height > peel_gap))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(c) = self.peel_open.remove(&k) {
                self.close_peel(c);
            }
        }
        let stale: Vec<u64> = self
            .pass_open
            .iter()
            .filter(|(_, c)| c.last().is_some_and(|l| h - l.height > pass_wait))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(c) = self.pass_open.remove(&k) {
                self.close_pass(c);
            }
        }
        let stale: Vec<u64> = self
            .fan
            .iter()
            .filter(|(_, s)| h - s.last_height > fan_window)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(s) = self.fan.remove(&k) {
                self.close_fan(k, s);
            }
        }
    }

    /// Closes everything still open and returns the findings, in pattern order, then by
    /// first height and address.
    pub fn finish(self) -> Vec<Finding> {
        self.finish_with_counters().0
    }

    /// [`Scan::finish`], handing back the two counters (kept for the next run) instead
    /// of dropping them.
    pub fn finish_with_counters(mut self) -> (Vec<Finding>, Vec<u8>, Vec<u8>) {
        for (_, c) in std::mem::take(&mut self.peel_open) {
            self.close_peel(c);
        }
        for (_, c) in std::mem::take(&mut self.pass_open) {
            self.close_pass(c);
        }
        for c in std::mem::take(&mut self.pass_done) {
            self.judge_pass(c);
        }
        for (k, s) in std::mem::take(&mut self.fan) {
            self.close_fan(k, s);
        }
        for (recipients, f) in std::mem::take(&mut self.fan_done) {
            self.judge_fan(&recipients, f);
        }
        for (a, m) in std::mem::take(&mut self.mix) {
            let mut f = Map::new();
            f.insert("sent_to_mixes".into(), json!(m.sent));
            f.insert("mixes_entered".into(), json!(m.mixes));
            f.insert("protocols".into(), Value::from(m.protocols.names()));
            self.findings.push(Finding {
                pattern: Pattern::CoinJoin,
                address_id: Some(a),
                address: None,
                txids: m.txids.iter().map(Txid::hex).collect(),
                first_height: m.first_height,
                last_height: m.last_height,
                amount: m.sent as f64,
                score: r4(m.confidence),
                features: f,
            });
        }
        let mut out = self.findings;
        out.sort_by(|a, b| {
            (a.pattern, a.first_height, a.address_id, &a.txids).cmp(&(
                b.pattern,
                b.first_height,
                b.address_id,
                &b.txids,
            ))
        });
        (out, self.received, self.spent)
    }
}

/// The names of address ids, read from `btc.addresses` (only the row groups whose id
/// range holds a wanted id).
pub async fn address_names(
    wh: &ferret_schemas::Warehouse,
    m: &ferret_schemas::Manifest,
    ids: &HashSet<u64>,
) -> Result<HashMap<u64, String>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut sorted: Vec<u64> = ids.iter().copied().collect();
    sorted.sort_unstable();
    let groups = crate::taint::stored::RowGroups::open(wh, m, "addresses", &["address_id"]).await?;
    let wanted: Vec<usize> = (0..groups.groups.len())
        .filter(|&g| {
            let (lo, hi) = groups.groups[g].2[0];
            let lo = u64::try_from(lo).unwrap_or(0);
            let at = sorted.partition_point(|&x| x < lo);
            sorted
                .get(at)
                .is_some_and(|&x| i64::try_from(x).is_ok_and(|x| x <= hi))
        })
        .collect();
    for g in wanted {
        for b in groups.read(wh, &[g], &["address", "address_id"]).await? {
            let wrong = || Error::BadGraph("btc.addresses: a column has the wrong type".into());
            let a = b.column(0).as_string_opt::<i32>().ok_or_else(wrong)?;
            let id = b
                .column(1)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(wrong)?;
            for r in 0..b.num_rows() {
                if id.is_null(r) || a.is_null(r) {
                    return Err(Error::BadGraph(
                        "btc.addresses: a null address or id".into(),
                    ));
                }
                if let Ok(x) = u64::try_from(id.value(r))
                    && ids.contains(&x)
                {
                    out.insert(x, a.value(r).to_string());
                }
            }
        }
    }
    Ok(out)
}

/// What a pass over the committed transactions gave.
pub struct BtcPass {
    /// The findings, their addresses named.
    pub findings: Vec<Finding>,
    /// Transactions this run read (the new ones, when it went on from a state).
    pub read: u64,
    /// The state to go on from next time ([`ScanState`] as JSON), and the counters.
    pub state_json: Vec<u8>,
    pub received: Vec<u8>,
    pub spent: Vec<u8>,
}

/// The address ids of the given exchange addresses.
pub async fn exchange_ids(
    wh: &ferret_schemas::Warehouse,
    m: &ferret_schemas::Manifest,
    exchanges: &[&str],
) -> Result<HashSet<u64>> {
    let ids = crate::taint::stored::lookup_address_ids(wh, m, exchanges).await?;
    Ok(ids.into_values().collect())
}

/// Runs `scan` over the committed transactions from `from_tx` on (0: every one, for a
/// fresh scan; the state's next transaction, for a resumed one), keeps its state, and
/// names the findings' addresses. With `walk`, peel chains and pass-through chains are
/// linked on the spend graph and ranked on that device ([`super::walk`]; a fresh scan
/// only); without, in chain order as the pass reads.
pub async fn scan_btc(
    wh: &ferret_schemas::Warehouse,
    m: &ferret_schemas::Manifest,
    mut scan: Scan,
    from_tx: u64,
    walk: Option<&crate::device::Backend>,
) -> Result<BtcPass> {
    let before = scan.transactions;
    if walk.is_some() {
        scan.walk_on_graph()?;
    }
    crate::txstream::for_each_tx_from(wh, m, from_tx, true, "typologies", |tx| scan.tx(tx)).await?;
    if let Some(backend) = walk {
        scan.walk_graph(wh, m, backend).await?;
    }
    let read = scan.transactions - before;
    // The state is written out before the pass is closed: the two are the same memory,
    // and copying one to keep beside the other would double it.
    let state_json = scan.state_json()?;
    let (mut found, received, spent) = scan.finish_with_counters();
    let ids: HashSet<u64> = found.iter().filter_map(|f| f.address_id).collect();
    let names = address_names(wh, m, &ids).await?;
    for f in &mut found {
        if let Some(id) = f.address_id {
            f.address = Some(names.get(&id).cloned().ok_or_else(|| {
                Error::BadGraph(format!("btc.addresses: no address with id {id}"))
            })?);
        }
    }
    tracing::info!(read, findings = found.len(), "bitcoin typologies scanned");
    Ok(BtcPass {
        findings: found,
        read,
        state_json,
        received,
        spent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txstream::{TxIn, TxOut};
    use std::collections::BTreeSet;

    struct Chain {
        txs: Vec<TxRows>,
        next_output: u64,
        next_tx: u64,
    }

    impl Chain {
        fn new() -> Self {
            Self {
                txs: Vec::new(),
                next_output: 0,
                next_tx: 0,
            }
        }

        /// A transaction spending `ins` (output id, value, address, height) and paying
        /// `outs` (value, address); returns its output ids.
        fn tx(
            &mut self,
            height: i64,
            ins: &[(u64, i64, u64, i64)],
            outs: &[(i64, u64)],
        ) -> Vec<u64> {
            let outputs: Vec<TxOut> = outs
                .iter()
                .map(|&(value, a)| {
                    self.next_output += 1;
                    TxOut {
                        output_id: self.next_output,
                        value,
                        address_id: Some(a),
                        nulldata: false,
                    }
                })
                .collect();
            let ids = outputs.iter().map(|o| o.output_id).collect();
            self.next_tx += 1;
            self.txs.push(TxRows {
                tx_index: self.next_tx,
                height,
                txid: Some(format!("{:064x}", self.next_tx)),
                inputs: ins
                    .iter()
                    .map(|&(o, v, a, h)| TxIn {
                        spent_output: Some(o),
                        value: Some(v),
                        address_id: Some(a),
                        spent_height: Some(h),
                    })
                    .collect(),
                outputs,
            });
            ids
        }

        fn scan(&self, rules: BtcRules) -> Vec<Finding> {
            let mut s = Scan::new(rules, HashSet::new(), 10_000).unwrap();
            for t in &self.txs {
                s.tx(t).unwrap();
            }
            s.finish()
        }

        /// The same chain with peel and pass-through chains walked on its spend edges
        /// and ranked on `backend`.
        fn walked(&self, rules: BtcRules, backend: &crate::device::Backend) -> Vec<Finding> {
            self.walked_scan(rules, backend).finish()
        }

        /// [`Chain::walked`], the scan not yet finished.
        fn walked_scan(&self, rules: BtcRules, backend: &crate::device::Backend) -> Scan {
            let mut s = Scan::new(rules, HashSet::new(), 10_000).unwrap();
            s.walk_on_graph().unwrap();
            for t in &self.txs {
                s.tx(t).unwrap();
            }
            let mut nodes = s.walk.take().expect("walking");
            let made: HashMap<u64, u64> = self
                .txs
                .iter()
                .flat_map(|t| t.outputs.iter().map(|o| (o.output_id, t.tx_index)))
                .collect();
            for t in &self.txs {
                for o in t.inputs.iter().filter_map(|i| i.spent_output) {
                    nodes.edge(t.tx_index, made[&o], o);
                }
            }
            s.take_walked(nodes.walk(backend).unwrap());
            s
        }
    }

    /// A random chain dense in peel steps and hops that branch, merge, stall past the
    /// windows and spend two tails at once: outputs are spent by random later
    /// transactions of random shapes.
    fn random_chain(seed: u64) -> Chain {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut c = Chain::new();
        // Unspent: (output id, value, address, height).
        let mut unspent: Vec<(u64, i64, u64, i64)> = Vec::new();
        let mut next_addr = 1u64;
        let mut fresh = |rng: &mut rand_chacha::ChaCha8Rng| {
            if rng.random_bool(0.85) {
                next_addr += 1;
                next_addr
            } else {
                rng.random_range(1..=next_addr)
            }
        };
        let mut h = 1i64;
        for _ in 0..5000 {
            h += [0, 0, 0, 1, 1, 2, 3, 8, 30][rng.random_range(0..9)];
            if unspent.is_empty() || rng.random_bool(0.03) {
                let a = fresh(&mut rng);
                let v = rng.random_range(10_000_000..1_000_000_000);
                let o = c.tx(h, &[], &[(v, a)]);
                unspent.push((o[0], v, a, h));
                continue;
            }
            // Mostly the newest outputs (chains continue); sometimes an old one.
            let pick = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| {
                if rng.random_bool(0.8) {
                    n - 1 - rng.random_range(0..n.min(4))
                } else {
                    rng.random_range(0..n)
                }
            };
            let mut ins = vec![unspent.swap_remove(pick(&mut rng, unspent.len()))];
            // A second input: another output of the same address, or of any.
            if rng.random_bool(0.15) && !unspent.is_empty() {
                let same = unspent.iter().position(|u| u.2 == ins[0].2);
                let at = match same {
                    Some(at) if rng.random_bool(0.7) => at,
                    _ => pick(&mut rng, unspent.len()),
                };
                ins.push(unspent.swap_remove(at));
            }
            let total: i64 = ins.iter().map(|i| i.1).sum();
            // Sometimes a tail goes to an address that already holds another chain's
            // tail, so a later step may spend two live tails at once.
            let shared =
                (rng.random_bool(0.1) && !unspent.is_empty()).then(|| unspent[unspent.len() - 1].2);
            let outs: Vec<(i64, u64)> = match rng.random_range(0..10) {
                // A peel: a small share and a remainder.
                0..=3 => {
                    let share = [0.01, 0.05, 0.15, 0.2, 0.25][rng.random_range(0..5)];
                    let peel = ((total as f64 * share) as i64).max(1);
                    let rem_to = if rng.random_bool(0.05) {
                        ins[0].2
                    } else {
                        shared.unwrap_or_else(|| fresh(&mut rng))
                    };
                    vec![(peel, fresh(&mut rng)), (total - peel - 300, rem_to)]
                }
                // A hop keeping nearly all.
                4..=6 => {
                    let kept = [0.999, 0.97, 0.9][rng.random_range(0..3)];
                    vec![(
                        (total as f64 * kept) as i64,
                        shared.unwrap_or_else(|| fresh(&mut rng)),
                    )]
                }
                // Anything else.
                _ => (0..rng.random_range(1..4))
                    .map(|_| (total / 4, fresh(&mut rng)))
                    .collect(),
            };
            for (o, &(v, a)) in c.tx(h, &ins, &outs).into_iter().zip(&outs) {
                unspent.push((o, v, a, h));
            }
        }
        c
    }

    /// The graph walk (ranked on the CPU twin and on the GPU) gives the chain-order
    /// pass's findings exactly, on random chains and with tight windows, `--since` and
    /// the defaults; and its kept state goes on like the pass's.
    #[test]
    fn the_graph_walk_equals_the_chain_order_pass() {
        let mut backends = vec![crate::device::Backend::Cpu];
        if let Some(g) = crate::testing::gpu() {
            backends.push(crate::device::Backend::Gpu(g));
        }
        let tight = BtcRules {
            peel_min_steps: 3,
            peel_max_gap: 6,
            pass_min_hops: 2,
            pass_max_wait: 3,
            ..BtcRules::default()
        };
        let mut walked_any = [0usize; 2];
        for seed in 1..=8u64 {
            let c = random_chain(seed);
            for rules in [
                tight.clone(),
                BtcRules {
                    since: Some(40),
                    ..tight.clone()
                },
                BtcRules::default(),
            ] {
                let want = c.scan(rules.clone());
                for b in &backends {
                    let got = c.walked(rules.clone(), b);
                    assert_eq!(got, want, "seed {seed}, {rules:?}, {}", b.describe());
                }
                walked_any[0] += of(&want, Pattern::PeelChain).len();
                walked_any[1] += of(&want, Pattern::PassThrough).len();
            }
        }
        // The chains compared are many, of both patterns (not two empty lists).
        assert!(walked_any[0] >= 25 && walked_any[1] >= 25, "{walked_any:?}");
    }

    /// A walked pass's kept state goes on like the chain-order pass's: cut the chain,
    /// walk the first part, go on in chain order with the rest.
    #[test]
    fn a_walked_state_goes_on_in_chain_order() {
        let rules = BtcRules {
            peel_min_steps: 3,
            peel_max_gap: 6,
            pass_min_hops: 2,
            pass_max_wait: 3,
            ..BtcRules::default()
        };
        for seed in [3u64, 8] {
            let c = random_chain(seed);
            let want = c.scan(rules.clone());
            let cut = c.txs.len() / 2;
            let first = Chain {
                txs: c.txs[..cut].to_vec(),
                next_output: 0,
                next_tx: 0,
            };
            let s = first.walked_scan(rules.clone(), &crate::device::Backend::Cpu);
            let state: ScanState = serde_json::from_slice(&s.state_json().unwrap()).unwrap();
            let (_, received, spent) = s.finish_with_counters();
            let mut r = Scan::resume(
                rules.clone(),
                HashSet::new(),
                state,
                received,
                spent,
                10_000,
            )
            .unwrap();
            for t in &c.txs[cut..] {
                r.tx(t).unwrap();
            }
            assert_eq!(r.finish(), want, "seed {seed}");
        }
    }

    /// A step spending two chains' tails at one address, one past the gap and not yet
    /// swept, continues the live one (in both engines); the stale one ends.
    #[test]
    fn a_stale_tail_does_not_count_against_a_live_one() {
        let rules = BtcRules {
            peel_min_steps: 3,
            peel_max_gap: 6,
            ..BtcRules::default()
        };
        let mut c = Chain::new();
        let step =
            |c: &mut Chain, h: i64, tail: (u64, i64, u64, i64), peel_to: u64, rem_to: u64| {
                let rem = tail.1 - 1_000_000 - 1_000;
                let o = c.tx(h, &[tail], &[(1_000_000, peel_to), (rem, rem_to)]);
                (o[1], rem, rem_to, h)
            };
        // Chain A: two steps, its tail left at address 99 from height 3.
        let a = c.tx(1, &[], &[(100_000_000, 10)]);
        let t = step(&mut c, 2, (a[0], 100_000_000, 10, 1), 500, 11);
        let a_tail = step(&mut c, 3, t, 501, 99);
        // Chain B: two steps, its tail at the same address from height 12.
        let b = c.tx(5, &[], &[(50_000_000, 20)]);
        let t = step(&mut c, 10, (b[0], 50_000_000, 20, 5), 502, 21);
        let b_tail = step(&mut c, 12, t, 503, 99);
        let b_first = c.txs[c.txs.len() - 2].txid.clone().expect("txid");
        // At height 13 one step spends both: A's tail is 10 blocks old (past the gap of
        // 6; the sweep last ran at height 1), B's is 1.
        let input = a_tail.1 + b_tail.1;
        c.tx(
            13,
            &[a_tail, b_tail],
            &[(1_000_000, 600), (input - 1_001_000, 100)],
        );
        let found = c.scan(rules.clone());
        let peels = of(&found, Pattern::PeelChain);
        assert_eq!(peels.len(), 1, "{found:?}");
        assert_eq!(peels[0].txids.len(), 3);
        assert_eq!(peels[0].txids[0], b_first);
        assert_eq!(c.walked(rules, &crate::device::Backend::Cpu), found);
    }

    #[test]
    fn a_walk_cannot_go_on_from_a_kept_state() {
        let mut c = Chain::new();
        let o = c.tx(1, &[], &[(1_000_000, 1)]);
        c.tx(2, &[(o[0], 1_000_000, 1, 1)], &[(999_000, 2)]);
        let mut s = Scan::new(BtcRules::default(), HashSet::new(), 100).unwrap();
        s.tx(&c.txs[0]).unwrap();
        let e = s.walk_on_graph().expect_err("not from the first block");
        assert!(e.to_string().contains("reads every block"), "{e}");
    }

    fn of(f: &[Finding], p: Pattern) -> Vec<&Finding> {
        f.iter().filter(|x| x.pattern == p).collect()
    }

    #[test]
    fn a_peel_chain_is_found_whole_and_a_short_one_is_not() {
        let mut c = Chain::new();
        let mut addr = 1000;
        let mut value = 100_000_000;
        let o = c.tx(1, &[], &[(value, addr)]);
        let mut tail = (o[0], value, addr, 1);
        for step in 0..7 {
            let peel = 1_000_000 + step * 10_000;
            let rem = value - peel - 500;
            let outs = c.tx(
                2 + step,
                &[tail],
                &[(peel, 5000 + step as u64), (rem, addr + 1)],
            );
            addr += 1;
            value = rem;
            tail = (outs[1], rem, addr, 2 + step);
        }
        let found = c.scan(BtcRules::default());
        let peels = of(&found, Pattern::PeelChain);
        assert_eq!(peels.len(), 1, "{found:?}");
        assert_eq!(peels[0].txids.len(), 7);
        assert_eq!(peels[0].address_id, Some(1000));
        let rules = BtcRules {
            peel_min_steps: 8,
            ..BtcRules::default()
        };
        assert!(of(&c.scan(rules), Pattern::PeelChain).is_empty());
    }

    #[test]
    fn pass_through_needs_quiet_addresses() {
        let mut c = Chain::new();
        let o = c.tx(1, &[], &[(50_000_000, 1)]);
        let mut tail = (o[0], 50_000_000, 1, 1);
        for hop in 0..4u64 {
            let v = tail.1 - 300;
            let outs = c.tx(2 + hop as i64, &[tail], &[(v, 2 + hop)]);
            tail = (outs[0], v, 2 + hop, 2 + hop as i64);
        }
        let found = c.scan(BtcRules::default());
        let pass = of(&found, Pattern::PassThrough);
        assert_eq!(pass.len(), 1, "{found:?}");
        assert_eq!(pass[0].txids.len(), 4);
        // Address 3 (the second hop's) is paid again: the chain is cut there, and what
        // is left on each side is too short.
        c.tx(40, &[], &[(1_000, 3)]);
        assert!(of(&c.scan(BtcRules::default()), Pattern::PassThrough).is_empty());
    }

    #[test]
    fn structuring_is_found_and_a_batch_of_diverse_amounts_is_not() {
        let mut c = Chain::new();
        let o = c.tx(1, &[], &[(10_000_000_000, 1)]);
        let outs: Vec<(i64, u64)> = (0..12)
            .map(|i| (985_000 + i * 1_000, 100 + i as u64))
            .collect();
        c.tx(2, &[(o[0], 10_000_000_000, 1, 1)], &outs);
        let found = c.scan(BtcRules::default());
        assert_eq!(of(&found, Pattern::FanOut).len(), 1, "{found:?}");

        let mut c = Chain::new();
        let o = c.tx(1, &[], &[(10_000_000_000, 1)]);
        let outs: Vec<(i64, u64)> = (0..12)
            .map(|i| (123_456 * (i + 1), 100 + i as u64))
            .collect();
        c.tx(2, &[(o[0], 10_000_000_000, 1, 1)], &outs);
        assert!(of(&c.scan(BtcRules::default()), Pattern::FanOut).is_empty());
    }

    #[test]
    fn txids_are_held_as_bytes_and_written_as_the_same_hex() {
        let hex = "00ff10a9b8c7d6e5f4030201aabbccddeeff00112233445566778899deadbeef";
        let t = Txid::parse(hex).expect("hex");
        assert_eq!(t.hex(), hex);
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{hex}\""));
        let back: Txid = serde_json::from_str(&format!("\"{hex}\"")).unwrap();
        assert_eq!(back, t);
        for bad in [
            &hex[1..],
            &hex.to_uppercase(),
            &format!("{}g", &hex[1..]),
            "",
        ] {
            assert!(Txid::parse(bad).is_none(), "{bad}");
        }
        assert!(serde_json::from_str::<Txid>("\"abc\"").is_err());
        // A transaction whose txid is not one is damage, named.
        let mut c = Chain::new();
        c.tx(1, &[], &[(5_000, 1)]);
        c.tx(2, &[(1, 5_000, 1, 1)], &[(4_000, 2)]);
        c.txs[1].txid = Some("not-a-txid".into());
        let mut s = Scan::new(BtcRules::default(), HashSet::new(), 100).unwrap();
        s.tx(&c.txs[0]).unwrap();
        let err = s.tx(&c.txs[1]).expect_err("damage");
        assert!(
            err.to_string().contains("transaction 2: txid `not-a-txid`"),
            "{err}"
        );
    }

    #[test]
    fn spent_mix_outputs_leave_the_unspent_set_and_remixes_are_not_entries() {
        let mut c = Chain::new();
        // Five premix outputs of five users, then a Whirlpool mix of the 0.01 BTC pool.
        let premix: Vec<u64> = (0..5)
            .map(|u| c.tx(1, &[], &[(1_010_000, 100 + u)])[0])
            .collect();
        let ins: Vec<(u64, i64, u64, i64)> = premix
            .iter()
            .zip(100u64..)
            .map(|(&o, a)| (o, 1_010_000, a, 1))
            .collect();
        let outs: Vec<(i64, u64)> = (0..5).map(|u| (1_000_000, 200 + u)).collect();
        let mixed = c.tx(2, &ins, &outs);
        // One postmix output is spent in a plain payment, the others remix.
        c.tx(3, &[(mixed[0], 1_000_000, 200, 2)], &[(990_000, 300)]);
        let remix_ins: Vec<(u64, i64, u64, i64)> = (1..5)
            .map(|k| (mixed[k], 1_000_000, 200 + k as u64, 2))
            .chain([(c.tx(3, &[], &[(1_010_000, 150)])[0], 1_010_000, 150, 3)])
            .collect();
        let remix_outs: Vec<(i64, u64)> = (0..5).map(|u| (1_000_000, 400 + u)).collect();
        c.tx(4, &remix_ins, &remix_outs);
        let mut s = Scan::new(BtcRules::default(), HashSet::new(), 10_000).unwrap();
        for t in &c.txs {
            s.tx(t).unwrap();
        }
        // Only the remix's five outputs are unspent mix outputs.
        let mut unspent: Vec<u64> = s.mixed.iter().copied().collect();
        unspent.sort_unstable();
        assert_eq!(unspent.len(), 5, "{unspent:?}");
        assert!(unspent.iter().all(|o| !mixed.contains(o)));
        // Mix users: the five premixers and the new entrant of the remix, not the
        // remixers again.
        let users: BTreeSet<u64> = of(&s.finish(), Pattern::CoinJoin)
            .iter()
            .filter_map(|f| f.address_id)
            .collect();
        assert_eq!(users, BTreeSet::from([100, 101, 102, 103, 104, 150]));
    }

    #[test]
    fn protocol_sets_serialise_as_sorted_names() {
        let mut p = Protocols::default();
        p.insert(Protocol::Wasabi2);
        p.insert(Protocol::Generic);
        p.insert(Protocol::Wasabi2);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"["generic","wasabi2"]"#);
        assert_eq!(serde_json::from_str::<Protocols>(&json).unwrap(), p);
        assert!(serde_json::from_str::<Protocols>(r#"["tornado"]"#).is_err());
        for q in Protocol::ALL {
            let mut one = Protocols::default();
            one.insert(q);
            assert_eq!(one.names(), vec![q.name()]);
        }
    }

    #[test]
    fn an_address_id_past_the_manifest_is_an_error_not_an_allocation() {
        let mut c = Chain::new();
        c.tx(1, &[], &[(5_000, 1 << 40)]);
        let mut s = Scan::new(BtcRules::default(), HashSet::new(), 100).unwrap();
        let err = s.tx(&c.txs[0]).expect_err("damage");
        assert!(err.to_string().contains("past the 100 addresses"), "{err}");
    }

    #[test]
    fn bad_rules_are_refused() {
        for r in [
            BtcRules {
                peel_max_share: 0.0,
                ..BtcRules::default()
            },
            BtcRules {
                fan_band: f64::NAN,
                ..BtcRules::default()
            },
            BtcRules {
                pass_min_hops: 1,
                ..BtcRules::default()
            },
            BtcRules {
                peel_max_gap: -1,
                ..BtcRules::default()
            },
        ] {
            assert!(Scan::new(r, HashSet::new(), 1).is_err());
        }
    }
}
