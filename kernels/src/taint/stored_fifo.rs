//! Fifo taint out of core, forward and backward: the in-memory fifo lowering
//! ([`super::run`], output nodes) cut into node blocks of 2^k outputs.
//!
//! A fifo edge joins an input's stretch to an output's stretch of one transaction:
//! forward from the spent output to the transaction's output, backward the other way.
//! Neither end's block is known before the transactions are read (an output is spent
//! anywhere later in the chain), so one pass over the transactions, a graph block at a
//! time (their outputs, whole, from `btc.outputs`; their inputs from `btc.spends`, in
//! `vin` order), lowers every edge of the run and appends it to a scratch file of its
//! destination block (24 B an edge, buffered within the budget); the sweep reads a
//! block's chunks back from its file, each sorted by (destination, source, vin): the
//! in-memory CSR's order, so the results are the same bits (tested).
//!
//! Backward, the in-memory lowering leaves out edges from outputs nobody spends (they can
//! never be tainted); here they are kept, since knowing which outputs are spent would
//! take a bit per output of the chain: such an edge adds `w · 0 = +0.0` to its row,
//! which changes no bit of any sum.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use ferret_schemas::{Chain, Manifest, Warehouse};
use tokio::runtime::Handle;

use super::stored::{
    BlockStates, Edge, Lowered, RowGroups, SpendEdges, StoredQuery, StoredTainted, chunk_of,
    each_edge, tainted_rows, wh_err,
};
use super::{Direction, fifo_overlaps};
use crate::blocked::{self, Budget, Chunk, ChunkSource, SEED_BLOCK};
use crate::propagate::{Options, UNREACHED};
use crate::{Error, Result};

use crate::error::io_err;

fn wrong() -> Error {
    Error::BadGraph("btc.outputs: a column has the wrong type or a negative id".into())
}

/// One output of a transaction being lowered.
#[derive(Clone, Copy, Debug)]
struct Out {
    tx: u64,
    id: u64,
    value: i64,
    /// u64::MAX for none.
    address: u64,
}

/// A range of transactions: their outputs by (tx, output id) and their inputs spending
/// indexed outputs by (tx, vin).
#[derive(Default)]
struct Txs {
    /// The rows read from `btc.outputs` (shared with the cache, not copied) and the
    /// range of them that belongs to these transactions.
    rows: Arc<Vec<Out>>,
    range: std::ops::Range<usize>,
    ins: Vec<Edge>,
}

impl Txs {
    /// Calls `f` with each transaction's outputs and inputs, in chain order; transactions
    /// without inputs from the graph are left out (they carry no taint either way).
    fn each(&self, mut f: impl FnMut(u64, &[Out], &[Edge])) {
        let outs = &self.rows[self.range.clone()];
        let (mut i, mut o) = (0usize, 0usize);
        while o < outs.len() {
            let t = outs[o].tx;
            let o_end = o + outs[o..].partition_point(|x| x.tx == t);
            while i < self.ins.len() && self.ins[i].tx < t {
                i += 1;
            }
            let i_end = i + self.ins[i..].partition_point(|x| x.tx == t);
            if i_end > i {
                f(t, &outs[o..o_end], &self.ins[i..i_end]);
            }
            o = o_end;
            i = i_end;
        }
    }
}

/// Every edge of a run, in one scratch file per destination block; buffered in memory up
/// to `cap` bytes, then appended to the files.
struct Spill {
    dir: tempfile::TempDir,
    buffers: BTreeMap<u32, Vec<u8>>,
    buffered: usize,
    cap: usize,
}

/// Bytes of one spilled edge: destination (local), vin, weight, gate, source (global).
const SPILLED: usize = 24;

/// The spilled source of an edge from a seed output (a constant 1).
const SEED_SOURCE: u64 = u64::MAX;

impl Spill {
    fn file(&self, d: u32) -> PathBuf {
        self.dir.path().join(format!("to-{d}"))
    }

    fn push(&mut self, d: u32, dst: u32, vin: i32, w: f32, gate: f32, src: u64) -> Result<()> {
        let b = self.buffers.entry(d).or_default();
        b.extend_from_slice(&dst.to_le_bytes());
        b.extend_from_slice(&vin.to_le_bytes());
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&gate.to_le_bytes());
        b.extend_from_slice(&src.to_le_bytes());
        self.buffered += SPILLED;
        if self.buffered >= self.cap {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for (d, b) in std::mem::take(&mut self.buffers) {
            let path = self.file(d);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            let mut w = BufWriter::new(f);
            w.write_all(&b).map_err(|e| io_err(&path, e))?;
            w.flush().map_err(|e| io_err(&path, e))?;
        }
        self.buffered = 0;
        Ok(())
    }

    /// The edges into block `d`, as lowered edges by source block.
    fn read(&self, d: u32, bits: u32) -> Result<BTreeMap<u32, Vec<Lowered>>> {
        let path = self.file(d);
        let mut out: BTreeMap<u32, Vec<Lowered>> = BTreeMap::new();
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&path, e)),
        };
        let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
        if len % SPILLED as u64 != 0 {
            return Err(Error::BadGraph(format!(
                "{}: {len} bytes, not whole edges",
                path.display()
            )));
        }
        let mask = (1u64 << bits) - 1;
        let mut r = BufReader::new(f);
        let mut rec = [0u8; SPILLED];
        for _ in 0..len / SPILLED as u64 {
            r.read_exact(&mut rec).map_err(|e| io_err(&path, e))?;
            let u32_at =
                |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
            let mut src = [0u8; 8];
            src.copy_from_slice(&rec[16..24]);
            let src = u64::from_le_bytes(src);
            let (block, local) = if src == SEED_SOURCE {
                (SEED_BLOCK, 0)
            } else {
                let b = u32::try_from(src >> bits)
                    .map_err(|_| Error::TooLarge(format!("output {src} in blocks of 2^{bits}")))?;
                (b, (src & mask) as u32)
            };
            out.entry(block).or_default().push((
                u32_at(0),
                local,
                u64::from(u32_at(4)),
                f32::from_bits(u32_at(8)),
                f32::from_bits(u32_at(12)),
            ));
        }
        Ok(out)
    }
}

/// The last `btc.outputs` row groups read (by index) and their rows: a graph block's
/// transactions and the next one's often share a row group.
type OutputCache = Option<(Vec<usize>, Arc<Vec<Out>>)>;

struct FifoLowering<'a> {
    wh: &'a Warehouse,
    rt: Handle,
    edges: &'a SpendEdges,
    q: &'a StoredQuery,
    seeds: HashSet<u64>,
    outputs: &'a RowGroups,
    nodes: u64,
    /// Every edge, by destination block, once lowered.
    spill: Option<Spill>,
    /// The last destination block lowered, its chunks by source block.
    lowered: Option<(u32, BTreeMap<u32, Chunk>)>,
    cache: RefCell<OutputCache>,
}

impl FifoLowering<'_> {
    fn bits(&self) -> u32 {
        self.edges.bits
    }

    /// The row groups of `btc.outputs` whose column `col` (0: output_id, 1: tx_index)
    /// may hold a value in `a..=b`.
    fn groups_of(&self, col: usize, a: u64, b: u64) -> Vec<usize> {
        (0..self.outputs.groups.len())
            .filter(|&g| {
                let (x, y) = self.outputs.groups[g].2[col];
                x <= b as i64 && y >= a as i64
            })
            .collect()
    }

    /// Every row of the `btc.outputs` row groups `groups`, by (tx, output id); the last
    /// set read is kept (neighbouring blocks read the same row groups).
    fn output_rows(&self, groups: Vec<usize>) -> Result<Arc<Vec<Out>>> {
        if let Some((g, rows)) = &*self.cache.borrow()
            && *g == groups
        {
            return Ok(Arc::clone(rows));
        }
        // The previous rows go before the next are read: one set in memory at a time.
        *self.cache.borrow_mut() = None;
        let mut outs = Vec::new();
        for b in self.rt.block_on(self.outputs.read(
            self.wh,
            &groups,
            &["output_id", "tx_index", "value", "address_id"],
        ))? {
            let i64c = |i: usize| {
                b.column(i)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(wrong)
            };
            let (id, tx, v, a) = (i64c(0)?, i64c(1)?, i64c(2)?, i64c(3)?);
            for r in 0..b.num_rows() {
                outs.push(Out {
                    tx: u64::try_from(tx.value(r)).map_err(|_| wrong())?,
                    id: u64::try_from(id.value(r)).map_err(|_| wrong())?,
                    value: v.value(r),
                    address: if a.is_null(r) {
                        u64::MAX
                    } else {
                        u64::try_from(a.value(r)).map_err(|_| wrong())?
                    },
                });
            }
        }
        outs.sort_unstable_by_key(|o| (o.tx, o.id));
        let outs = Arc::new(outs);
        *self.cache.borrow_mut() = Some((groups, Arc::clone(&outs)));
        Ok(outs)
    }

    /// Transactions `t_lo..=t_hi`: their outputs, whole, and their inputs from the graph.
    fn read_txs(&self, t_lo: u64, t_hi: u64) -> Result<Txs> {
        let bits = self.bits();
        let mut txs = Txs::default();
        let outs = self.output_rows(self.groups_of(1, t_lo, t_hi))?;
        let a = outs.partition_point(|o| o.tx < t_lo);
        let b = outs.partition_point(|o| o.tx <= t_hi);
        txs.range = a..b;
        txs.rows = outs;
        for tb in (t_lo >> bits)..=(t_hi >> bits) {
            let tb = u32::try_from(tb).map_err(|_| Error::TooLarge("graph blocks".into()))?;
            for s in self.edges.sources_of(tb) {
                each_edge(self.wh, &self.rt, self.edges, tb, s, &mut |e| {
                    if (t_lo..=t_hi).contains(&e.tx) {
                        txs.ins.push(e);
                    }
                    Ok(())
                })?;
            }
        }
        txs.ins.sort_unstable_by_key(|e| (e.tx, e.vin));
        Ok(txs)
    }

    /// Lowers every edge of the run into the spill, a graph block of transactions at a
    /// time.
    fn spill_all(&mut self, cap: usize, scratch: &Path) -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("ferret-fifo-")
            .tempdir_in(scratch)
            .map_err(|e| io_err(scratch, e))?;
        let mut spill = Spill {
            dir,
            buffers: BTreeMap::new(),
            buffered: 0,
            // Buffers grow by doubling, up to twice what they hold: a quarter of the
            // budget in records keeps their capacity within half of it (the graph block
            // being lowered is beside them).
            cap: (cap / 4).max(64 << 10),
        };
        let bits = self.bits();
        let mask = (1u64 << bits) - 1;
        let n_tx = self.edges.transactions;
        let blocks = n_tx.div_ceil(1u64 << bits);
        let bar = crate::progress::bar(Some(blocks), "fifo: lowering the graph");
        let forward = self.q.direction == Direction::Forward;
        let (mut in_values, mut out_values) = (Vec::new(), Vec::new());
        for tb in 0..blocks {
            bar.inc(1);
            let t_lo = tb << bits;
            let t_hi = (t_lo + (1u64 << bits)).min(n_tx) - 1;
            let txs = self.read_txs(t_lo, t_hi)?;
            let mut failed = None;
            txs.each(|t, outs, spent| {
                if failed.is_some() || self.q.blocked_txs.contains(&t) {
                    return;
                }
                in_values.clear();
                in_values.extend(spent.iter().map(|e| e.value.max(0)));
                out_values.clear();
                out_values.extend(outs.iter().map(|o| o.value));
                fifo_overlaps(&in_values, &out_values, |i, j, sats| {
                    let (e, oj) = (&spent[i], outs[j]);
                    let oi = e.spent_output;
                    // An id outside the manifest's outputs is damage, not an edge to drop.
                    if oi >= self.nodes || oj.id >= self.nodes {
                        failed.get_or_insert(Error::BadGraph(format!(
                            "transaction {t}: output {} outside the {} committed outputs",
                            oi.max(oj.id),
                            self.nodes
                        )));
                        return;
                    }
                    // (from, to, the from side's address, share of the to side's value)
                    let (from, to, from_address, to_value) = if forward {
                        (oi, oj.id, e.address, oj.value)
                    } else {
                        (oj.id, oi, oj.address, e.value)
                    };
                    // Passes unless it pays a stop address (seeds always do).
                    let seed = self.seeds.contains(&from);
                    if !seed && self.q.stop_addresses.contains(&from_address) {
                        return;
                    }
                    let gate = if forward { e.value } else { oj.value };
                    // Forward, a seed input is an edge from a constant 1; backward, a seed
                    // output is a node fixed at 1 (as in memory).
                    let src = if forward && seed { SEED_SOURCE } else { from };
                    let w = sats as f64 / to_value.max(0) as f64;
                    let r = spill.push(
                        (to >> bits) as u32,
                        (to & mask) as u32,
                        e.vin,
                        w as f32,
                        gate.max(0) as f32,
                        src,
                    );
                    if let Err(e) = r {
                        failed.get_or_insert(e);
                    }
                });
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        spill.flush()?;
        bar.finish_and_clear();
        self.spill = Some(spill);
        // Nothing is read from the warehouse again.
        self.cache = RefCell::default();
        Ok(())
    }

    fn lower(&self, d: u32) -> Result<BTreeMap<u32, Chunk>> {
        let spill = self
            .spill
            .as_ref()
            .ok_or_else(|| Error::BadGraph("fifo: the graph was not lowered".into()))?;
        Ok(spill
            .read(d, self.bits())?
            .into_iter()
            .map(|(s, e)| (s, chunk_of(e)))
            .collect())
    }

    fn ensure(&mut self, d: u32) -> Result<()> {
        if self.lowered.as_ref().is_none_or(|l| l.0 != d) {
            let c = self.lower(d)?;
            self.lowered = Some((d, c));
        }
        Ok(())
    }
}
impl ChunkSource for FifoLowering<'_> {
    fn nodes(&self) -> u64 {
        self.nodes
    }

    fn bits(&self) -> u32 {
        self.edges.bits
    }

    fn sources(&mut self, d: u32) -> Result<Vec<u32>> {
        self.ensure(d)?;
        Ok(self
            .lowered
            .as_ref()
            .map(|l| l.1.keys().copied().collect())
            .unwrap_or_default())
    }

    fn load(&mut self, d: u32, s: u32) -> Result<Chunk> {
        if let Some((ld, chunks)) = &mut self.lowered
            && *ld == d
            && let Some(c) = chunks.remove(&s)
        {
            return Ok(c);
        }
        // Not used at the first step (its source carried nothing then), or evicted since:
        // lower the block once more and keep its other chunks for the loads that follow.
        self.lowered = None;
        self.ensure(d)?;
        Ok(self
            .lowered
            .as_mut()
            .and_then(|l| l.1.remove(&s))
            .unwrap_or_default())
    }

    fn seeds(&mut self) -> Result<Vec<u64>> {
        let mut s: Vec<u64> = self.seeds.iter().copied().collect();
        s.sort_unstable();
        Ok(s)
    }
}

/// Fifo on the committed graph: the tainted outputs to `on_rows`, a row group of
/// `btc.outputs` at a time, in `output_id` order.
pub(super) fn run_fifo(
    backend: &crate::device::Backend,
    wh: &Warehouse,
    q: &StoredQuery,
    budget: &Budget,
    on_rows: &mut dyn FnMut(Vec<StoredTainted>) -> Result<()>,
) -> Result<(u32, blocked::Stats)> {
    let rt = Handle::current();
    let m: Manifest = rt
        .block_on(wh.load_manifest(Chain::Btc))
        .map_err(wh_err)?
        .ok_or(Error::NothingIndexed { chain: "btc" })?;
    let edges = rt.block_on(SpendEdges::open(wh, &m))?;
    let outputs = rt.block_on(RowGroups::open(
        wh,
        &m,
        "outputs",
        &["output_id", "tx_index"],
    ))?;
    if let Some(s) = q.seeds.iter().find(|s| s.output_id >= m.next_output_id) {
        return Err(Error::BadGraph(format!(
            "seed output {} outside the graph",
            s.output_id
        )));
    }
    let mut low = FifoLowering {
        wh,
        rt: rt.clone(),
        edges: &edges,
        q,
        seeds: q.seeds.iter().map(|s| s.output_id).collect(),
        outputs: &outputs,
        nodes: m.next_output_id,
        spill: None,
        lowered: None,
        cache: RefCell::default(),
    };
    // The spill's buffers are gone before the engine starts: the whole budget.
    low.spill_all(budget.mem_bytes, &budget.scratch)?;
    let opts = Options {
        max_hops: q.max_hops,
        min_value: q.min_value.max(0) as f32,
    };
    let mut res = blocked::run_on(backend, &mut low, &opts, budget, q.direction.order())?;
    drop(low);
    // The reached outputs, joined to btc.outputs a row group at a time.
    let bits = edges.bits;
    let mut reached = vec![false; res.blocks() as usize];
    for b in 0..res.blocks() {
        if let Some(st) = res.block(b)? {
            reached[b as usize] = st.hop.iter().any(|&h| h != UNREACHED);
        }
    }
    let mut states = BlockStates::default();
    for g in 0..outputs.groups.len() {
        let (lo, hi) = outputs.groups[g].2[0];
        let any = ((lo as u64) >> bits..=(hi as u64) >> bits)
            .any(|b| reached.get(b as usize).copied().unwrap_or(false));
        if !any {
            continue;
        }
        let batches = rt.block_on(outputs.read(
            wh,
            &[g],
            &["output_id", "tx_index", "txid", "vout", "address", "value"],
        ))?;
        let rows = tainted_rows(&batches, |o, _| states.get(&mut res, bits, o))?;
        if !rows.is_empty() {
            on_rows(rows)?;
        }
    }
    Ok((res.stats.steps, res.stats.clone()))
}
