//! Account taint out of core (`ferret taint eth --mem-mb N`): the same Jacobi steps as
//! `poison.wgsl` and `pool.wgsl` (and their rayon twins), with addresses cut into
//! partitions by a hash of the address and every piece of state on scratch files, so a
//! run holds a bounded amount in memory whatever the chain's size. No map of all
//! addresses is built: an address is keyed by its 20 bytes.
//!
//! 1. One pass over `eth.transfers` (a committed file at a time, in chain order) numbers
//!    the asset's transfers and writes two events per transfer, 128 B each: a departure
//!    at the run's sender and an arrival at its receiver (backward: the transfer turned
//!    around and time reversed, edge `e` being transfer `m − 1 − e`), appended to the
//!    file of the address's partition. Each partition's events are then sorted by
//!    (address, edge, departure first): every address's transfers in the run's order,
//!    the order the in-memory kernels walk them in.
//! 2. A step walks every partition holding a seed or an address whose incoming
//!    transfers carried taint at the last step (the others would send nothing), merging
//!    its events with its inbox (the last step's tainted transfers into it, sorted the
//!    same way), and appends what each departure carries to its receiver's partition's
//!    next inbox: poison, the transfers that left after the sender's earliest tainted
//!    arrival; the pool, each departure's tainted share (`cpu::PoolWalk`, the arithmetic
//!    the in-memory step uses). Only tainted transfers are written, so a run touching few
//!    addresses reads and writes little beyond its events.
//! 3. A step changed nothing when every partition's sorted inbox equals its last one
//!    (poison: only each address's earliest arrival counts, as in `poison.wgsl`); hops
//!    are the first step a tainted transfer reached an address, kept per partition.
//! 4. The rows: per address reached, the tainted amount and count of its incoming
//!    transfers in the run's order and the first of them, as `job.rs` computes them.
//!
//! Memory: sorting holds at most half the budget of records (the rest spills as sorted
//! runs), the append buffers a quarter; beside that one committed transfers file is read
//! at a time, and the seeds and labels are held, as in memory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ferret_schemas::results::{eth_exits_schema, eth_taint_schema};
use ferret_schemas::{Chain, Warehouse};
use rayon::prelude::*;
use tokio::runtime::Handle;

use super::frac::{self, Frac, ONE, U256, ZERO};
use super::job::{
    AccountPolicy, EthExit, EthTaintJob, EthTaintRow, TRANSFER_COLUMNS, amount_scale,
    for_each_transfer, no_seeds, sort_exits,
};
use super::records::{Records, Spill, io_err, remove, same_files, sort_file};
use super::{SEED, STOP, UNREACHED, cpu::PoolWalk, step_limit_of};
use crate::blocked::Budget;
use crate::taint::Direction;
use crate::taint::job::{chain_labels, check_categories};
use crate::{Error, Result};

pub(super) type Addr = [u8; 20];

/// A transfer being numbered: block, position, ordinal, hash, from, to, amount.
type Row = (i64, i32, i32, [u8; 32], Addr, Addr, U256);

/// An event: address, edge (big-endian, the run's order), kind, peer, exact amount,
/// block, transaction index, transaction hash.
pub(super) const EV: usize = 128;
pub(super) const DEPART: u8 = 0;
pub(super) const ARRIVE: u8 = 1;
/// An inbox record: receiver, edge (big-endian), share (mantissa, exponent).
const IN: usize = 36;
/// A hop record: address, hop.
const HOP: usize = 24;

/// Events of one partition aimed at, when the run chooses the partitions (8 MiB).
const PART_EVENT_BYTES: u64 = 8 << 20;
const MAX_PARTS: usize = 4096;

pub(super) fn wh_err(e: ferret_schemas::Error) -> Error {
    Error::Warehouse(Box::new(e))
}

pub(super) fn addr_of(r: &[u8]) -> Addr {
    r[..20].try_into().expect("20 bytes")
}

pub(super) fn edge_of(r: &[u8]) -> u64 {
    u64::from_be_bytes(r[20..28].try_into().expect("8 bytes"))
}

/// `0x` and `N` bytes in lower-case hex, the way `ferret index eth` writes them.
pub(super) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let h = s.strip_prefix("0x")?.as_bytes();
    if h.len() != 2 * N {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(h[2 * i])? << 4) | nib(h[2 * i + 1])?;
    }
    Some(out)
}

pub(super) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// The partition of an address (FNV-1a over its bytes).
pub(super) fn part_of(a: &Addr, parts: usize) -> usize {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in a {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % parts as u64) as usize
}

#[allow(clippy::too_many_arguments)]
fn event(
    addr: &Addr,
    edge: u64,
    kind: u8,
    peer: &Addr,
    units: &U256,
    block: i64,
    txi: i32,
    hash: &[u8; 32],
) -> [u8; EV] {
    let mut r = [0u8; EV];
    r[..20].copy_from_slice(addr);
    r[20..28].copy_from_slice(&edge.to_be_bytes());
    r[28] = kind;
    r[29..49].copy_from_slice(peer);
    for (i, l) in units.iter().enumerate() {
        r[49 + 4 * i..53 + 4 * i].copy_from_slice(&l.to_le_bytes());
    }
    r[81..89].copy_from_slice(&block.to_le_bytes());
    r[89..93].copy_from_slice(&txi.to_le_bytes());
    r[93..125].copy_from_slice(hash);
    r
}

fn ev_units(r: &[u8; EV]) -> U256 {
    let mut u = [0u32; 8];
    for (i, l) in u.iter_mut().enumerate() {
        *l = u32::from_le_bytes(r[49 + 4 * i..53 + 4 * i].try_into().expect("4 bytes"));
    }
    u
}

pub(super) fn ev_block(r: &[u8; EV]) -> i64 {
    i64::from_le_bytes(r[81..89].try_into().expect("8 bytes"))
}

fn ev_first(r: &[u8; EV]) -> (i64, i32, String) {
    (
        i64::from_le_bytes(r[81..89].try_into().expect("8 bytes")),
        i32::from_le_bytes(r[89..93].try_into().expect("4 bytes")),
        hex(&r[93..125]),
    )
}

fn message(addr: &[u8], edge: u64, share: Frac) -> [u8; IN] {
    let mut r = [0u8; IN];
    r[..20].copy_from_slice(&addr[..20]);
    r[20..28].copy_from_slice(&edge.to_be_bytes());
    r[28..32].copy_from_slice(&share.m.to_le_bytes());
    r[32..36].copy_from_slice(&share.e.to_le_bytes());
    r
}

fn in_share(r: &[u8; IN]) -> Frac {
    Frac {
        m: u32::from_le_bytes(r[28..32].try_into().expect("4 bytes")),
        e: i32::from_le_bytes(r[32..36].try_into().expect("4 bytes")),
    }
}

/// Counters of an out-of-core account run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EthStoredStats {
    pub partitions: usize,
    /// Bytes of events written (two per transfer).
    pub event_bytes: u64,
    /// Partition walks over all steps (a partition with nothing tainted is skipped).
    pub walks: u64,
    /// Tainted transfers written to inboxes over all steps.
    pub messages: u64,
}

/// The outcome of an out-of-core run (its rows went to the caller as batches).
#[derive(Clone, Debug)]
pub struct StoredEthRun {
    pub job: EthTaintJob,
    /// Transfers of the asset.
    pub transfers: u64,
    /// Addresses reached (rows).
    pub reached: u64,
    pub max_hop: u32,
    /// Tainted value received beyond the seeds (hop > 0), in the asset's base unit.
    pub beyond: f64,
    /// By tainted value, largest first.
    pub exits: Vec<EthExit>,
    pub unknown_seeds: Vec<String>,
    pub steps: u32,
    pub stats: EthStoredStats,
}

/// Runs `job` out of core within `budget` and writes `eth_taint` and `eth_exits` as one
/// run; returns it and its id. Call from a blocking thread inside a tokio runtime.
pub fn taint_eth_stored(
    wh: &Warehouse,
    job: &EthTaintJob,
    budget: &Budget,
) -> Result<(StoredEthRun, String)> {
    let rt = Handle::current();
    let run_id = ferret_schemas::results::new_run_id();
    let mut writer = wh
        .run_writer("eth_taint", &run_id, eth_taint_schema())
        .map_err(wh_err)?;
    let run = stored_eth_taint_rows(wh, job, budget, None, &run_id, &mut |batch| {
        rt.block_on(writer.write(&batch)).map_err(wh_err)
    })?;
    let taint_file = rt.block_on(writer.finish()).map_err(wh_err)?;
    let mut exits_writer = wh
        .run_writer("eth_exits", &run_id, eth_exits_schema())
        .map_err(wh_err)?;
    let batch = super::job::eth_exits_rows_batch(&run.exits, &job.asset, &run_id)?;
    rt.block_on(exits_writer.write(&batch)).map_err(wh_err)?;
    let exits_file = rt.block_on(exits_writer.finish()).map_err(wh_err)?;
    rt.block_on(wh.commit_run_files(
        &run_id,
        vec![
            ("eth_exits".into(), exits_file),
            ("eth_taint".into(), taint_file),
        ],
        Some(job.params()),
    ))
    .map_err(wh_err)?;
    Ok((run, run_id))
}

/// The work of [`taint_eth_stored`] without the writing: `eth_taint` rows (carrying
/// `run_id`) go to `on_batch`, a partition at a time. `parts` forces the number of
/// partitions (tests); by default about 8 MiB of events each.
pub fn stored_eth_taint_rows(
    wh: &Warehouse,
    job: &EthTaintJob,
    budget: &Budget,
    parts: Option<usize>,
    run_id: &str,
    on_batch: &mut dyn FnMut(arrow::array::RecordBatch) -> Result<()>,
) -> Result<StoredEthRun> {
    let rt = Handle::current();
    let labels = rt.block_on(chain_labels(wh, "eth"))?;
    check_categories(
        &labels,
        job.seed_categories.iter().chain(&job.stop_categories),
    )?;
    if job.asset == "*" && job.policy != AccountPolicy::Poison {
        return Err(Error::BadQuery(
            "asset `*` mixes units: only poison runs over every asset; name one (`ETH` or a token contract)".into(),
        ));
    }
    let (files, parts) = transfer_files(wh, &rt, parts)?;
    let dir = tempfile::Builder::new()
        .prefix("ferret-eth-taint-")
        .tempdir_in(&budget.scratch)
        .map_err(|e| io_err(&budget.scratch, e))?;

    // Seeds and stops by their bytes; an address that is not `0x` and 40 hex digits can
    // be on no transfer.
    let mut asked: Vec<(String, Option<Addr>)> = Vec::new();
    for a in &job.seed_addresses {
        asked.push((a.clone(), parse_hex::<20>(&a.to_ascii_lowercase())));
    }
    let mut candidates: HashSet<Addr> = asked.iter().filter_map(|a| a.1).collect();
    let mut stop_labels: HashMap<Addr, (String, String)> = HashMap::new();
    for (address, label, category) in &labels {
        let Some(a) = parse_hex::<20>(address) else {
            continue;
        };
        if job.seed_categories.contains(category) {
            candidates.insert(a);
        }
        if job.stop_categories.contains(category) {
            stop_labels
                .entry(a)
                .or_insert_with(|| (label.clone(), category.clone()));
        }
    }

    let ctx = Ctx {
        dir: dir.path().to_path_buf(),
        parts,
        mem: budget.mem_bytes,
        backward: job.direction == Direction::Backward,
    };
    let built = ctx.build(wh, &rt, &files, &job.asset, &candidates)?;
    let m = built.transfers;
    let seeds: HashSet<Addr> = candidates
        .iter()
        .filter(|a| built.seen.contains(*a))
        .copied()
        .collect();
    let unknown: Vec<String> = asked
        .iter()
        .filter(|(_, a)| !a.is_some_and(|a| built.seen.contains(&a)))
        .map(|(s, _)| s.clone())
        .collect();
    if seeds.is_empty() {
        return Err(no_seeds(&job.asset, &unknown));
    }
    let scale = amount_scale(built.max);
    let walker = Walker {
        ctx: &ctx,
        poison: job.policy == AccountPolicy::Poison,
        seeds: &seeds,
        stops: &stop_labels,
        min_f32: (job.min_value * scale) as f32,
        min_frac: Frac::from_f64(job.min_value),
        scale,
    };
    let mut seed_parts = vec![false; parts];
    for s in &seeds {
        seed_parts[part_of(s, parts)] = true;
    }
    let mut stats = EthStoredStats {
        partitions: parts,
        event_bytes: built.event_bytes,
        ..Default::default()
    };

    // The steps.
    let limit = if walker.poison || m > 0 {
        step_limit_of(usize::try_from(m).unwrap_or(usize::MAX), job.max_hops)
    } else {
        0
    };
    let mut tainted_in = vec![false; parts];
    let mut steps = 0u32;
    let bar = crate::progress::bar(None, "eth taint steps (out of core)");
    for k in 1..=limit {
        bar.inc(1);
        let active: Vec<usize> = (0..parts)
            .filter(|&q| seed_parts[q] || tainted_in[q])
            .collect();
        let spill = ctx.spill(&format!("r{k}"));
        let sent: u64 = active
            .par_iter()
            .map(|&q| walker.walk(q, &ctx.inbox(k - 1, q), false, &spill))
            .collect::<Result<Vec<u64>>>()?
            .into_iter()
            .sum();
        spill.flush()?;
        stats.walks += active.len() as u64;
        stats.messages += sent;
        let dedup = walker.poison.then_some(20);
        let outcome: Vec<(bool, bool)> = (0..parts)
            .into_par_iter()
            .map(|q| -> Result<(bool, bool)> {
                let raw = ctx.raw(&format!("r{k}"), q);
                let (old, new) = (ctx.inbox(k - 1, q), ctx.inbox(k, q));
                if !raw.exists() && !tainted_in[q] {
                    return Ok((false, false));
                }
                let n = sort_file::<IN>(&raw, &new, dedup, ctx.sort_mem(), &|_| {})?;
                let changed = !same_files(&old, &new)?;
                remove(&old)?;
                if n > 0 {
                    ctx.note_hops(q, &new, k)?;
                }
                Ok((n > 0, changed))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut changed = false;
        for (q, (nonempty, ch)) in outcome.into_iter().enumerate() {
            tainted_in[q] = nonempty;
            changed |= ch;
        }
        steps = k;
        tracing::debug!(
            step = k,
            active = active.len(),
            sent,
            changed,
            "eth taint step"
        );
        if !changed {
            break;
        }
    }
    bar.finish_and_clear();

    // Poison: which transfers carry taint is decided by the final arrivals (those that
    // left a tainted sender after its arrival), so one more walk lists them.
    let carried_tag = "carried";
    if walker.poison {
        let spill = ctx.spill(carried_tag);
        (0..parts)
            .into_par_iter()
            .filter(|&q| seed_parts[q] || tainted_in[q])
            .map(|q| {
                walker
                    .walk(q, &ctx.inbox(steps, q), true, &spill)
                    .map(|_| ())
            })
            .collect::<Result<Vec<()>>>()?;
        spill.flush()?;
        (0..parts)
            .into_par_iter()
            .map(|q| {
                let raw = ctx.raw(carried_tag, q);
                if raw.exists() {
                    sort_file::<IN>(
                        &raw,
                        &ctx.sorted(carried_tag, q),
                        None,
                        ctx.sort_mem(),
                        &|_| {},
                    )?;
                }
                Ok(())
            })
            .collect::<Result<Vec<()>>>()?;
    }

    // The rows, a partition at a time.
    let mut run = StoredEthRun {
        job: job.clone(),
        transfers: m,
        reached: 0,
        max_hop: 0,
        beyond: 0.0,
        exits: Vec::new(),
        unknown_seeds: unknown,
        steps,
        stats: EthStoredStats::default(),
    };
    let bar = crate::progress::bar(Some(parts as u64), "eth taint rows");
    for (q, &has_seed) in seed_parts.iter().enumerate() {
        bar.inc(1);
        if !has_seed && !ctx.hops(q).exists() {
            continue;
        }
        let (rows, firsts) = walker.rows(q, &ctx.inbox(steps, q), &ctx.sorted(carried_tag, q))?;
        for (r, first_block) in rows.iter().zip(firsts) {
            run.reached += 1;
            run.max_hop = run.max_hop.max(r.hop);
            if r.hop > 0 {
                run.beyond += r.tainted_value;
            }
            if let Some(a) = parse_hex::<20>(&r.address)
                && let Some((label, category)) = stop_labels.get(&a)
            {
                run.exits.push(EthExit {
                    address: r.address.clone(),
                    label: label.clone(),
                    category: category.clone(),
                    tainted_value: r.tainted_value,
                    tainted_transfers: r.tainted_transfers,
                    min_hop: r.hop,
                    first_block,
                });
            }
        }
        if !rows.is_empty() {
            on_batch(super::job::eth_taint_rows_batch(&rows, &job.asset, run_id)?)?;
        }
    }
    bar.finish_and_clear();
    sort_exits(&mut run.exits);
    run.stats = stats;
    tracing::info!(
        transfers = m,
        partitions = parts,
        steps,
        reached = run.reached,
        walks = run.stats.walks,
        "eth taint out of core done"
    );
    Ok(run)
}

/// The committed `eth.transfers` files in chain order, and the number of partitions
/// (`parts`, or about 8 MiB of events each).
pub(super) fn transfer_files(
    wh: &Warehouse,
    rt: &Handle,
    parts: Option<usize>,
) -> Result<(Vec<ferret_schemas::FileEntry>, usize)> {
    let manifest = rt
        .block_on(wh.load_manifest(Chain::Eth))
        .map_err(wh_err)?
        .ok_or_else(|| {
            Error::BadQuery(
                "the warehouse holds no Ethereum data: run `ferret index eth` first".into(),
            )
        })?;
    let mut files: Vec<_> = manifest.files_of("transfers").cloned().collect();
    files.sort_by_key(|f| (f.first_height, f.last_height));
    let rows_bound: u64 = files.iter().map(|f| f.rows).sum();
    let parts = parts
        .unwrap_or_else(|| (rows_bound * 2 * EV as u64).div_ceil(PART_EVENT_BYTES) as usize)
        .clamp(1, MAX_PARTS);
    Ok((files, parts))
}

/// Where a run's files are and how much memory each piece of work may hold.
pub(super) struct Ctx {
    pub(super) dir: PathBuf,
    pub(super) parts: usize,
    pub(super) mem: usize,
    pub(super) backward: bool,
}

pub(super) struct Built {
    pub(super) transfers: u64,
    pub(super) seen: HashSet<Addr>,
    pub(super) max: f64,
    pub(super) event_bytes: u64,
}

impl Ctx {
    pub(super) fn events(&self, q: usize) -> PathBuf {
        self.dir.join(format!("ev-{q}"))
    }
    pub(super) fn raw(&self, tag: &str, q: usize) -> PathBuf {
        self.dir.join(format!("{tag}-{q}.raw"))
    }
    pub(super) fn sorted(&self, tag: &str, q: usize) -> PathBuf {
        self.dir.join(format!("{tag}-{q}"))
    }
    fn inbox(&self, k: u32, q: usize) -> PathBuf {
        self.dir.join(format!("in{k}-{q}"))
    }
    fn hops(&self, q: usize) -> PathBuf {
        self.dir.join(format!("hop-{q}"))
    }

    /// Records a sort may hold, per worker (half the budget over the threads).
    pub(super) fn sort_mem(&self) -> usize {
        self.mem / 2 / rayon::current_num_threads().max(1)
    }

    /// Append buffers for the raw files `tag`: a quarter of the budget over the
    /// partitions, 4 KiB to 1 MiB each.
    pub(super) fn spill(&self, tag: &str) -> Spill {
        let cap = (self.mem / 4 / self.parts).clamp(4 << 10, 1 << 20);
        Spill::new((0..self.parts).map(|q| self.raw(tag, q)).collect(), cap)
    }

    /// Numbers the asset's transfers in chain order and writes their events, sorted
    /// per partition.
    pub(super) fn build(
        &self,
        wh: &Warehouse,
        rt: &Handle,
        files: &[ferret_schemas::manifest::FileEntry],
        asset: &str,
        candidates: &HashSet<Addr>,
    ) -> Result<Built> {
        let spill = self.spill("ev");
        let mut seen = HashSet::new();
        let mut max = 0.0f64;
        let mut next = 0u64;
        let mut last: Option<(i64, i32, i32, String)> = None;
        let bar = crate::progress::bar(Some(files.len() as u64), "eth transfers → events");
        for f in files {
            bar.inc(1);
            let batches = rt
                .block_on(wh.read_columns(&f.path, &TRANSFER_COLUMNS))
                .map_err(wh_err)?;
            let mut rows: Vec<Row> = Vec::new();
            for_each_transfer(&batches, &f.path, asset, &mut |t| {
                let field = |v: &str, c: &str| {
                    Error::BadGraph(format!(
                        "{}: block {}: {c} `{v}` is not 0x and lower-case hex digits",
                        f.path, t.block
                    ))
                };
                rows.push((
                    t.block,
                    t.txi,
                    t.ordinal,
                    parse_hex::<32>(t.hash).ok_or_else(|| field(t.hash, "transaction_hash"))?,
                    parse_hex::<20>(t.from).ok_or_else(|| field(t.from, "from_address"))?,
                    parse_hex::<20>(t.to).ok_or_else(|| field(t.to, "to_address"))?,
                    t.value,
                ));
                Ok(())
            })?;
            drop(batches);
            rows.sort_by_key(|r| (r.0, r.1, r.2));
            // Edges are numbered in chain order across files: the files' rows must not
            // interleave (the manifest's height ranges do not overlap).
            if let (Some(prev), Some(first)) = (&last, rows.first())
                && (prev.0, prev.1, prev.2) >= (first.0, first.1, first.2)
            {
                return Err(Error::BadGraph(format!(
                    "eth.transfers: {} starts at block {} (transaction {}, ordinal {}), not after the end of {}: files overlap in chain order",
                    f.path, first.0, first.1, first.2, prev.3
                )));
            }
            if let Some(r) = rows.last() {
                last = Some((r.0, r.1, r.2, f.path.clone()));
            }
            for (block, txi, _, hash, from, to, v) in rows {
                let e = next;
                next += 1;
                max = max.max(frac::to_f64(&v));
                for a in [&from, &to] {
                    if candidates.contains(a) {
                        seen.insert(*a);
                    }
                }
                let (s, d) = if self.backward {
                    (to, from)
                } else {
                    (from, to)
                };
                spill.push(
                    part_of(&s, self.parts),
                    &event(&s, e, DEPART, &d, &v, block, txi, &hash),
                )?;
                spill.push(
                    part_of(&d, self.parts),
                    &event(&d, e, ARRIVE, &s, &v, block, txi, &hash),
                )?;
            }
        }
        bar.finish_and_clear();
        spill.flush()?;
        let m = next;
        let backward = self.backward;
        // Backward, edge e is transfer m − 1 − e: time runs the other way.
        let flip = move |r: &mut [u8; EV]| {
            if backward {
                let e = m - 1 - edge_of(r);
                r[20..28].copy_from_slice(&e.to_be_bytes());
            }
        };
        let bar = crate::progress::bar(Some(self.parts as u64), "eth events sort");
        (0..self.parts)
            .into_par_iter()
            .map(|q| {
                let raw = self.raw("ev", q);
                if raw.exists() {
                    sort_file::<EV>(&raw, &self.events(q), None, self.sort_mem(), &flip)?;
                }
                bar.inc(1);
                Ok(())
            })
            .collect::<Result<Vec<()>>>()?;
        bar.finish_and_clear();
        Ok(Built {
            transfers: m,
            seen,
            max,
            event_bytes: 2 * m * EV as u64,
        })
    }

    /// Adds hop `k` for every address of partition `q` with a record in `inbox` and no
    /// hop yet.
    fn note_hops(&self, q: usize, inbox: &Path, k: u32) -> Result<()> {
        let path = self.hops(q);
        let tmp = self.dir.join(format!("hop-{q}.new"));
        let mut old = Records::<HOP>::open(&path)?;
        let mut new = Records::<IN>::open(inbox)?;
        let f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let mut w = std::io::BufWriter::new(f);
        let mut put = |a: &[u8], h: u32| -> Result<()> {
            use std::io::Write;
            w.write_all(&a[..20]).map_err(|e| io_err(&tmp, e))?;
            w.write_all(&h.to_le_bytes()).map_err(|e| io_err(&tmp, e))
        };
        loop {
            let next_old = old.peek().map(|r| addr_of(r));
            let next_new = new.peek().map(|r| addr_of(r));
            match (next_old, next_new) {
                (None, None) => break,
                (Some(a), b) if b.is_none_or(|b| a <= b) => {
                    let r = old.pop()?.expect("peeked");
                    put(
                        &a,
                        u32::from_le_bytes(r[20..24].try_into().expect("4 bytes")),
                    )?;
                    // The address already had its hop: skip its new records.
                    while new.peek().is_some_and(|r| addr_of(r) == a) {
                        new.pop()?;
                    }
                }
                (_, Some(b)) => {
                    put(&b, k)?;
                    while new.peek().is_some_and(|r| addr_of(r) == b) {
                        new.pop()?;
                    }
                }
                (Some(_), None) => unreachable!("handled by the arm above"),
            }
        }
        {
            use std::io::Write;
            w.flush().map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))
    }
}

/// One step's walk over a partition's addresses.
struct Walker<'a> {
    ctx: &'a Ctx,
    poison: bool,
    seeds: &'a HashSet<Addr>,
    stops: &'a HashMap<Addr, (String, String)>,
    min_f32: f32,
    min_frac: Frac,
    scale: f64,
}

impl Walker<'_> {
    fn flags(&self, a: &Addr) -> u32 {
        if self.seeds.contains(a) {
            SEED
        } else if self.stops.contains_key(a) {
            STOP
        } else {
            0
        }
    }

    /// Checks the inbox holds no record for an address before `a` (each must meet an
    /// arrival of its partition's events).
    fn check_behind(&self, inbox: &Records<IN>, a: &Addr) -> Result<()> {
        if let Some(r) = inbox.peek()
            && addr_of(r) < *a
        {
            return Err(self.orphan(inbox, r));
        }
        Ok(())
    }

    fn orphan(&self, inbox: &Records<IN>, r: &[u8; IN]) -> Error {
        Error::Write {
            path: inbox.path().display().to_string(),
            reason: format!(
                "transfer {} into {} matches no event of its partition: scratch damaged",
                edge_of(r),
                hex(&r[..20])
            ),
        }
    }

    /// Walks partition `q` with the last step's `inbox`, appending what its departures
    /// carry to `out` (their receivers' partitions); returns how many. Poison leaves out
    /// transfers into seeds (their arrival is 0 whatever comes) unless `into_seeds`.
    fn walk(&self, q: usize, inbox: &Path, into_seeds: bool, out: &Spill) -> Result<u64> {
        let mut ev = Records::<EV>::open(&self.ctx.events(q))?;
        let mut inb = Records::<IN>::open(inbox)?;
        let mut sent = 0u64;
        while let Some(first) = ev.peek() {
            let a = addr_of(first);
            self.check_behind(&inb, &a)?;
            let flags = self.flags(&a);
            if self.poison {
                // The earliest tainted arrival (the inbox keeps one record an address).
                let arrival = if flags & SEED != 0 {
                    Some(0u64)
                } else if inb.peek().is_some_and(|r| addr_of(r) == a) {
                    let r = inb.pop()?.expect("peeked");
                    Some(edge_of(&r) + 1)
                } else {
                    None
                };
                while ev.peek().is_some_and(|r| addr_of(r) == a) {
                    let r = ev.pop()?.expect("peeked");
                    let Some(arr) = arrival else { continue };
                    if r[28] != DEPART || flags & STOP != 0 {
                        continue;
                    }
                    let e = edge_of(&r);
                    let amount = (frac::to_f64(&ev_units(&r)) * self.scale) as f32;
                    if arr < e + 1 && amount >= self.min_f32 {
                        let peer: Addr = r[29..49].try_into().expect("20 bytes");
                        if into_seeds || !self.seeds.contains(&peer) {
                            out.push(part_of(&peer, self.ctx.parts), &message(&peer, e, ONE))?;
                            sent += 1;
                        }
                    }
                }
            } else {
                let mut walk = PoolWalk::new(flags, self.min_frac);
                while ev.peek().is_some_and(|r| addr_of(r) == a) {
                    let r = ev.pop()?.expect("peeked");
                    let e = edge_of(&r);
                    let units = ev_units(&r);
                    if r[28] == ARRIVE {
                        let phi = if inb.peek().is_some_and(|x| x[..28] == r[..28]) {
                            in_share(&inb.pop()?.expect("peeked"))
                        } else {
                            ZERO
                        };
                        walk.arrive(&units, phi);
                    } else {
                        let phi = walk.depart(&units);
                        if !phi.is_zero() {
                            let peer: Addr = r[29..49].try_into().expect("20 bytes");
                            out.push(part_of(&peer, self.ctx.parts), &message(&peer, e, phi))?;
                            sent += 1;
                        }
                    }
                }
            }
            if let Some(r) = inb.peek()
                && addr_of(r) == a
            {
                return Err(self.orphan(&inb, r));
            }
        }
        if let Some(r) = inb.peek() {
            return Err(self.orphan(&inb, r));
        }
        Ok(sent)
    }

    /// The rows of partition `q`'s reached addresses, with each one's first tainted
    /// block whatever its hop (the exits report it for seeds too).
    fn rows(
        &self,
        q: usize,
        last_inbox: &Path,
        carried: &Path,
    ) -> Result<(Vec<EthTaintRow>, Vec<Option<i64>>)> {
        let mut ev = Records::<EV>::open(&self.ctx.events(q))?;
        let mut inb = Records::<IN>::open(last_inbox)?;
        let mut car = Records::<IN>::open(carried)?;
        let mut hops = Records::<HOP>::open(&self.ctx.hops(q))?;
        let mut rows = Vec::new();
        let mut firsts = Vec::new();
        while let Some(first) = ev.peek() {
            let a = addr_of(first);
            self.check_behind(&inb, &a)?;
            let seed = self.seeds.contains(&a);
            let mut hop = if seed { 0 } else { UNREACHED };
            if hops.peek().is_some_and(|r| addr_of(r) == a) {
                let r = hops.pop()?.expect("peeked");
                hop = hop.min(u32::from_le_bytes(r[20..24].try_into().expect("4 bytes")));
            }
            // Poison: the final earliest arrival.
            let arrival = if seed {
                Some(0u64)
            } else if self.poison && inb.peek().is_some_and(|r| addr_of(r) == a) {
                Some(edge_of(&inb.pop()?.expect("peeked")) + 1)
            } else {
                None
            };
            let (mut value, mut count, mut first_ev) = (0.0f64, 0u64, None);
            while ev.peek().is_some_and(|r| addr_of(r) == a) {
                let r = ev.pop()?.expect("peeked");
                if r[28] != ARRIVE {
                    continue;
                }
                let e = edge_of(&r);
                let units = ev_units(&r);
                let carried = if self.poison {
                    let hit = car.peek().is_some_and(|x| x[..28] == r[..28]);
                    if hit {
                        car.pop()?;
                    }
                    if hit && arrival.is_some_and(|arr| arr <= e + 1) {
                        frac::to_f64(&units)
                    } else {
                        0.0
                    }
                } else if inb.peek().is_some_and(|x| x[..28] == r[..28]) {
                    let s = in_share(&inb.pop()?.expect("peeked"));
                    if s == ONE {
                        frac::to_f64(&units)
                    } else {
                        frac::to_f64(&units) * s.to_f64()
                    }
                } else {
                    0.0
                };
                if carried > 0.0 {
                    value += carried;
                    count += 1;
                    if first_ev.is_none() {
                        first_ev = Some(ev_first(&r));
                    }
                }
            }
            // Poison's carried list also names transfers into unreached addresses.
            while car.peek().is_some_and(|x| addr_of(x) == a) {
                car.pop()?;
            }
            if let Some(r) = inb.peek()
                && addr_of(r) == a
            {
                return Err(self.orphan(&inb, r));
            }
            if hop == UNREACHED {
                continue;
            }
            firsts.push(first_ev.as_ref().map(|f| f.0));
            rows.push(EthTaintRow {
                address: hex(&a),
                hop,
                first: if hop == 0 { None } else { first_ev },
                tainted_value: value,
                tainted_transfers: count,
            });
        }
        if let Some(r) = inb.peek() {
            return Err(self.orphan(&inb, r));
        }
        Ok((rows, firsts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_other_spellings() {
        let a = "0x00112233445566778899aabbccddeeff00112233";
        assert_eq!(hex(&parse_hex::<20>(a).expect("parses")), a);
        assert!(parse_hex::<20>("0x00112233445566778899AABBCCDDEEFF00112233").is_none());
        assert!(parse_hex::<20>("00112233445566778899aabbccddeeff00112233").is_none());
        assert!(parse_hex::<20>("0x0011").is_none());
        assert!(parse_hex::<20>("0x00112233445566778899aabbccddeeff0011223g").is_none());
    }
}
