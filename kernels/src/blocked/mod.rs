//! Propagation out of core: the [`propagate`](crate::propagate) problem cut into node
//! blocks of 2^k nodes and edge chunks keyed by (destination block, source block), run
//! within a memory budget.
//!
//! A step sweeps the destination blocks in order. For each, only the chunks whose source
//! block carried taint after the previous step are read (a chunk out of a block that is
//! all zero adds exactly nothing); a destination block with no such chunk keeps its state
//! (taint only grows from step to step, so it was zero, or it holds seeds, which stay at
//! 1). Within a block, rows are summed in parallel (rayon over row windows).
//!
//! **Exactness.** Every row sums its edges in ascending source order (source block, then
//! source node; [`SEED_BLOCK`] last), which is also the order of the in-memory CSR
//! (`taint` sorts each row by source), so this path and the in-memory one give the same
//! bits: the same fractions, hops and step count, whatever the block size.
//!
//! **Memory.** Node state (a fraction and a hop, 8 bytes a node) lives in blocks that are
//! absent while all zero and unreached, kept in memory up to their share of the budget
//! and written to a scratch directory beyond it; chunks are cached likewise (16 bytes an
//! edge) and fetched again from their [`ChunkSource`] when evicted. What one block needs
//! at once (its state, the source block being read, one chunk, the row sums) is the
//! fixed overhead on top of the budget.

mod gpu;
mod order;
mod pager;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use rayon::prelude::*;

use crate::propagate::{Options, UNREACHED};
use crate::{Error, Result};
pub use order::{fixpoint, run_on};
use pager::Pager;

/// The source block of edges from a constant 1 (seed outputs).
pub const SEED_BLOCK: u32 = u32::MAX;

/// The edges into one destination block from one source block, sorted by (destination,
/// source, original order); node ids are local to their blocks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    pub dst: Vec<u32>,
    /// Unused in a [`SEED_BLOCK`] chunk.
    pub src: Vec<u32>,
    pub weight: Vec<f32>,
    pub gate: Vec<f32>,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.dst.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dst.is_empty()
    }

    /// Bytes the chunk holds in memory.
    pub fn bytes(&self) -> usize {
        self.dst.len() * 16
    }

    /// Sorts the edges by (destination, source), keeping the given order among equals.
    pub fn sort(&mut self) {
        let mut idx: Vec<u32> = (0..self.dst.len() as u32).collect();
        idx.sort_by_key(|&i| (self.dst[i as usize], self.src[i as usize]));
        let take = |v: &[u32]| idx.iter().map(|&i| v[i as usize]).collect::<Vec<_>>();
        let takef = |v: &[f32]| idx.iter().map(|&i| v[i as usize]).collect::<Vec<_>>();
        self.dst = take(&self.dst);
        self.src = take(&self.src);
        self.weight = takef(&self.weight);
        self.gate = takef(&self.gate);
    }

    fn check(&self, d: u32, s: u32, dst_nodes: usize, src_nodes: usize) -> Result<()> {
        let n = self.dst.len();
        let bad = |what: String| Err(Error::BadGraph(format!("chunk ({d}, {s}): {what}")));
        if self.src.len() != n || self.weight.len() != n || self.gate.len() != n {
            return bad("arrays of different lengths".into());
        }
        if let Some(e) = self.dst.iter().position(|&v| v as usize >= dst_nodes) {
            return bad(format!("edge {e} into node {} of {dst_nodes}", self.dst[e]));
        }
        if s != SEED_BLOCK
            && let Some(e) = self.src.iter().position(|&v| v as usize >= src_nodes)
        {
            return bad(format!("edge {e} from node {} of {src_nodes}", self.src[e]));
        }
        if self.dst.windows(2).any(|w| w[0] > w[1]) {
            return bad("edges not sorted by destination".into());
        }
        if let Some(e) = self
            .weight
            .iter()
            .chain(&self.gate)
            .position(|w| !w.is_finite() || *w < 0.0)
        {
            return bad(format!("weight or gate {e} is negative or not finite"));
        }
        Ok(())
    }
}

/// Where a blocked problem's chunks come from (scratch files, the warehouse's graph, an
/// in-memory problem in tests). Called from one thread at a time.
pub trait ChunkSource {
    /// Nodes of the problem.
    fn nodes(&self) -> u64;
    /// Blocks hold 2^bits nodes.
    fn bits(&self) -> u32;
    /// The source blocks with a chunk into destination block `d`, ascending, with
    /// [`SEED_BLOCK`] last when there is one.
    fn sources(&mut self, d: u32) -> Result<Vec<u32>>;
    /// The chunk (`d`, `s`).
    fn load(&mut self, d: u32, s: u32) -> Result<Chunk>;
    /// Nodes tainted at hop 0 (fixed at 1), ascending.
    fn seeds(&mut self) -> Result<Vec<u64>>;
}

/// One block's state.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockState {
    pub fraction: Vec<f32>,
    pub hop: Vec<u32>,
}

impl BlockState {
    fn empty(n: usize) -> Self {
        Self {
            fraction: vec![0.0; n],
            hop: vec![UNREACHED; n],
        }
    }

    fn bytes(&self) -> usize {
        self.fraction.len() * 8
    }

    fn is_blank(&self) -> bool {
        self.hop.iter().all(|&h| h == UNREACHED)
    }

    fn any_taint(&self) -> bool {
        self.fraction.iter().any(|&f| f > 0.0)
    }
}

/// Limits of a blocked run.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Bytes for node state and cached chunks together.
    pub mem_bytes: usize,
    /// Where evicted state goes (a temporary directory inside it).
    pub scratch: std::path::PathBuf,
}

/// Counters of a run, for summaries and benchmarks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub steps: u32,
    /// Chunk reads from the source (misses of the cache).
    pub chunk_loads: u64,
    /// Chunks a step used, summed over steps.
    pub chunks_swept: u64,
    /// Chunks skipped because their source block carried no taint, summed over steps.
    pub chunks_skipped: u64,
    /// Edges a step read, summed over steps.
    pub edges_swept: u64,
    /// Node blocks written to scratch and read back.
    pub blocks_spilled: u64,
    pub blocks_reloaded: u64,
    /// The most bytes the caches held at once.
    pub peak_cached_bytes: usize,
    /// Time spent getting chunks from the source (lowering), and summing rows (the
    /// sweep proper: edges_swept / sum_secs is the engine's throughput).
    pub load_secs: f64,
    pub sum_secs: f64,
}

/// The result: per-block state, paged.
pub struct Blocked {
    nodes: u64,
    bits: u32,
    state: Pager<BlockState>,
    generation: u32,
    pub stats: Stats,
}

impl Blocked {
    /// The result of a run whose final state is `state`'s `generation`: the pager's
    /// counters go into `stats`, and the scratch dir lives as long as the result, so the
    /// state stays readable.
    fn finish(
        nodes: u64,
        bits: u32,
        mut state: Pager<BlockState>,
        dir: tempfile::TempDir,
        generation: u32,
        mut stats: Stats,
    ) -> Self {
        stats.blocks_spilled = state.spilled;
        stats.blocks_reloaded = state.reloaded;
        state.keep_dir(dir);
        Self {
            nodes,
            bits,
            state,
            generation,
            stats,
        }
    }

    pub fn blocks(&self) -> u32 {
        blocks_of(self.nodes, self.bits)
    }

    /// The final state of block `b` (None: all zero and unreached).
    pub fn block(&mut self, b: u32) -> Result<Option<Arc<BlockState>>> {
        self.state.get((self.generation, b))
    }

    /// The first node of block `b`.
    pub fn block_start(&self, b: u32) -> u64 {
        u64::from(b) << self.bits
    }

    /// Every node's fraction and hop in one piece (tests and small graphs).
    pub fn to_vecs(&mut self) -> Result<(Vec<f32>, Vec<u32>)> {
        let n = usize::try_from(self.nodes).map_err(|_| Error::TooLarge("nodes".into()))?;
        let mut f = vec![0.0; n];
        let mut h = vec![UNREACHED; n];
        for b in 0..self.blocks() {
            if let Some(s) = self.block(b)? {
                let at = self.block_start(b) as usize;
                f[at..at + s.fraction.len()].copy_from_slice(&s.fraction);
                h[at..at + s.hop.len()].copy_from_slice(&s.hop);
            }
        }
        Ok((f, h))
    }
}

fn blocks_of(nodes: u64, bits: u32) -> u32 {
    u32::try_from(nodes.div_ceil(1u64 << bits)).unwrap_or(u32::MAX)
}

/// The nodes of block `b` (the last one may be short).
fn block_len(nodes: u64, bits: u32, b: u32) -> usize {
    let start = u64::from(b) << bits;
    (nodes - start).min(1u64 << bits) as usize
}

/// A problem's size in blocks and its seeds, checked, and the scratch directory of its
/// run.
struct Layout {
    nodes: u64,
    bits: u32,
    nb: u32,
    /// Nodes tainted at hop 0, ascending.
    seeds: Vec<u64>,
    dir: tempfile::TempDir,
}

impl Layout {
    fn of(source: &mut dyn ChunkSource, budget: &Budget) -> Result<Self> {
        let (nodes, bits) = (source.nodes(), source.bits());
        if bits > 30 {
            return Err(Error::BadGraph(format!("blocks of 2^{bits} nodes")));
        }
        let nb = blocks_of(nodes, bits);
        if nb == SEED_BLOCK {
            return Err(Error::TooLarge(format!(
                "{nodes} nodes in blocks of 2^{bits}"
            )));
        }
        let seeds = source.seeds()?;
        if let Some(&s) = seeds.iter().find(|&&s| s >= nodes) {
            return Err(Error::BadGraph(format!("seed {s} outside 0..{nodes}")));
        }
        let dir = tempfile::Builder::new()
            .prefix("ferret-blocked-")
            .tempdir_in(&budget.scratch)
            .map_err(|e| Error::Write {
                path: budget.scratch.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            nodes,
            bits,
            nb,
            seeds,
            dir,
        })
    }
}

/// Rows per parallel window.
const WINDOW: usize = 4096;

#[cfg(test)]
thread_local! {
    /// A deliberate fault, for proving the tests catch a broken sweep: 1 skips every chunk
    /// from the block just before the destination, 2 reads each chunk's source block one
    /// block off.
    pub(crate) static FAULT: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

fn fault() -> u8 {
    #[cfg(test)]
    return FAULT.with(|f| f.get());
    #[cfg(not(test))]
    0
}

/// Runs the propagation over `source`'s chunks within `budget`, on the CPU.
pub fn propagate(source: &mut dyn ChunkSource, opts: &Options, budget: &Budget) -> Result<Blocked> {
    propagate_on(&crate::device::Backend::Cpu, source, opts, budget)
}

/// [`propagate`] with the row sums on `backend`: on a GPU each destination block's sums
/// live on the device and each chunk it reads is streamed there, in dispatches that fit
/// the adapter's binding limit; the result is the CPU's, bit for bit.
pub fn propagate_on(
    backend: &crate::device::Backend,
    source: &mut dyn ChunkSource,
    opts: &Options,
    budget: &Budget,
) -> Result<Blocked> {
    propagate_with(backend, source, opts, budget, None)
}

/// [`propagate_on`]; `gpu_max_edges` caps the edges per GPU dispatch (tests force it
/// small so that chunks are split).
pub(crate) fn propagate_with(
    backend: &crate::device::Backend,
    source: &mut dyn ChunkSource,
    opts: &Options,
    budget: &Budget,
    gpu_max_edges: Option<usize>,
) -> Result<Blocked> {
    let gpu = match backend {
        crate::device::Backend::Cpu => None,
        crate::device::Backend::Gpu(g) => {
            let mut k = gpu::GpuAccumulate::new(g)?;
            if let Some(m) = gpu_max_edges {
                k.max_edges = k.max_edges.min(m.max(1));
            }
            Some((g, k))
        }
    };
    let Layout {
        nodes,
        bits,
        nb,
        seeds,
        dir,
    } = Layout::of(source, budget)?;
    let block_nodes = |b: u32| block_len(nodes, bits, b);
    // Half the budget for node state, half for chunks.
    let mut state: Pager<BlockState> = Pager::new(dir.path().join("state"), budget.mem_bytes / 2)?;
    let mut chunks: Pager<Chunk> = Pager::new(dir.path().join("chunks"), budget.mem_bytes / 2)?;
    let mut stats = Stats::default();

    // Generation 0: the seeds.
    let mut generation = 0u32;
    let mut live = vec![false; nb as usize];
    let mut i = 0;
    while i < seeds.len() {
        let b = (seeds[i] >> bits) as u32;
        let mut st = BlockState::empty(block_nodes(b));
        while i < seeds.len() && (seeds[i] >> bits) as u32 == b {
            let v = (seeds[i] - (u64::from(b) << bits)) as usize;
            st.fraction[v] = 1.0;
            st.hop[v] = 0;
            i += 1;
        }
        live[b as usize] = true;
        state.put((generation, b), Arc::new(st))?;
    }

    let limit = opts
        .max_hops
        .unwrap_or_else(|| u32::try_from(nodes.saturating_add(1)).unwrap_or(u32::MAX));
    let bar = crate::progress::bar(opts.max_hops.map(u64::from), "taint steps (blocked)");
    let mut sources: Vec<Option<Vec<u32>>> = vec![None; nb as usize];
    for k in 1..=limit {
        bar.inc(1);
        let next = generation ^ 1;
        let mut next_live = vec![false; nb as usize];
        let mut changed = false;
        for d in 0..nb {
            if sources[d as usize].is_none() {
                sources[d as usize] = Some(source.sources(d)?);
            }
            let all = sources[d as usize].as_deref().unwrap_or(&[]);
            let used: Vec<u32> = all
                .iter()
                .copied()
                .filter(|&s| s == SEED_BLOCK || live.get(s as usize).copied().unwrap_or(false))
                .collect();
            stats.chunks_skipped += (all.len() - used.len()) as u64;
            let old = state.get((generation, d))?;
            if used.is_empty() {
                // Nothing flows in: the block keeps its state (zero, or seeds at 1).
                if let Some(o) = old {
                    next_live[d as usize] = o.any_taint();
                    state.put((next, d), o)?;
                }
                continue;
            }
            let n = block_nodes(d);
            let mut acc = match gpu {
                None => vec![0f32; n],
                Some(_) => Vec::new(),
            };
            let sums = match &gpu {
                Some((g, k)) => Some(k.start(g, n)?),
                None => None,
            };
            for &s in &used {
                if fault() == 1 && s != SEED_BLOCK && s + 1 == d {
                    continue;
                }
                let chunk = match chunks.get((d, s))? {
                    Some(c) => c,
                    None => {
                        let t0 = std::time::Instant::now();
                        let c = source.load(d, s)?;
                        stats.load_secs += t0.elapsed().as_secs_f64();
                        let src_nodes = if s == SEED_BLOCK { 0 } else { block_nodes(s) };
                        if s != SEED_BLOCK && s >= nb {
                            return Err(Error::BadGraph(format!(
                                "chunk ({d}, {s}) from a block outside 0..{nb}"
                            )));
                        }
                        c.check(d, s, n, src_nodes)?;
                        stats.chunk_loads += 1;
                        let c = Arc::new(c);
                        chunks.put((d, s), Arc::clone(&c))?;
                        c
                    }
                };
                stats.chunks_swept += 1;
                stats.edges_swept += chunk.len() as u64;
                let src_state = if s == SEED_BLOCK {
                    None
                } else if fault() == 2 && s + 1 < nb {
                    state
                        .get((generation, s + 1))?
                        .filter(|b| b.fraction.len() == block_nodes(s))
                } else {
                    state.get((generation, s))?
                };
                if s != SEED_BLOCK && src_state.is_none() {
                    continue;
                }
                let t0 = std::time::Instant::now();
                match (&gpu, &sums) {
                    (Some((g, k)), Some(sums)) => {
                        k.add(g, sums, &chunk, src_state.as_deref(), opts.min_value)?
                    }
                    _ => accumulate(&mut acc, &chunk, src_state.as_deref(), opts.min_value),
                }
                stats.sum_secs += t0.elapsed().as_secs_f64();
                stats.peak_cached_bytes = stats
                    .peak_cached_bytes
                    .max(chunks.mem_bytes() + state.mem_bytes());
            }
            let t0 = std::time::Instant::now();
            if let (Some((g, k)), Some(sums)) = (&gpu, sums) {
                acc = k.finish(g, sums)?;
            }
            let mut st = match &old {
                Some(o) => BlockState::clone(o),
                None => BlockState::empty(n),
            };
            let f_old = old.as_ref().map(|o| o.fraction.as_slice());
            let block_changed = finish_rows(&mut st, &acc, f_old, k);
            stats.sum_secs += t0.elapsed().as_secs_f64();
            changed |= block_changed;
            if st.is_blank() {
                continue;
            }
            next_live[d as usize] = st.any_taint();
            state.put((next, d), Arc::new(st))?;
        }
        // The previous generation is no longer needed.
        for d in 0..nb {
            state.remove((generation, d));
        }
        generation = next;
        live = next_live;
        stats.steps = k;
        if !changed {
            break;
        }
    }
    bar.finish_and_clear();
    tracing::debug!(?stats, nodes, bits, "blocked propagation");
    Ok(Blocked::finish(nodes, bits, state, dir, generation, stats))
}

/// Adds one chunk's contributions to the row sums, rows in parallel windows; each row's
/// edges in chunk order (ascending source).
fn accumulate(acc: &mut [f32], c: &Chunk, src: Option<&BlockState>, min_value: f32) {
    let value = |e: usize| match src {
        None => 1.0f32,
        Some(s) => s.fraction[c.src[e] as usize],
    };
    let window = |(w, rows): (usize, &mut [f32])| {
        let r0 = (w * WINDOW) as u32;
        let lo = c.dst.partition_point(|&d| d < r0);
        let hi = c.dst.partition_point(|&d| d < r0 + rows.len() as u32);
        if min_value > 0.0 {
            for e in lo..hi {
                let fs = value(e);
                if fs > 0.0 && fs * c.gate[e] >= min_value {
                    rows[(c.dst[e] - r0) as usize] += c.weight[e] * fs;
                }
            }
        } else {
            for e in lo..hi {
                rows[(c.dst[e] - r0) as usize] += c.weight[e] * value(e);
            }
        }
    };
    if acc.len() <= WINDOW {
        window((0, acc));
    } else {
        acc.par_chunks_mut(WINDOW).enumerate().for_each(window);
    }
}

/// Turns row sums into the block's new fractions and hops (as the in-memory step does);
/// returns whether any fraction changed.
fn finish_rows(st: &mut BlockState, acc: &[f32], f_old: Option<&[f32]>, iter: u32) -> bool {
    let row = |(v, ((out, h), &a)): (usize, ((&mut f32, &mut u32), &f32))| {
        if *h == 0 {
            *out = 1.0;
            return false;
        }
        let f = if a < 1e-30 { 0.0 } else { a.min(1.0) };
        *out = f;
        if f > 0.0 && *h == UNREACHED {
            *h = iter;
        }
        f != f_old.map_or(0.0, |o| o[v])
    };
    if acc.len() <= WINDOW {
        return st
            .fraction
            .iter_mut()
            .zip(st.hop.iter_mut())
            .zip(acc)
            .enumerate()
            .map(row)
            .fold(false, |a, b| a | b);
    }
    st.fraction
        .par_iter_mut()
        .zip(st.hop.par_iter_mut())
        .zip(acc.par_iter())
        .enumerate()
        .with_min_len(WINDOW)
        .map(row)
        .reduce(|| false, |a, b| a | b)
}

/// A problem held in memory as chunks (tests, and graphs lowered in one piece).
pub struct MemSource {
    pub nodes: u64,
    pub bits: u32,
    pub chunks: std::collections::BTreeMap<(u32, u32), Chunk>,
    pub seeds: Vec<u64>,
}

impl MemSource {
    /// Cuts an in-memory problem into blocks of 2^bits nodes.
    pub fn from_propagation(g: &crate::propagate::Propagation, bits: u32) -> Result<Self> {
        g.validate()?;
        let mut chunks: std::collections::BTreeMap<(u32, u32), Chunk> = Default::default();
        let mask = (1u32 << bits).wrapping_sub(1);
        for v in 0..g.nodes() {
            let (lo, hi) = (
                g.row_ptr[v as usize] as usize,
                g.row_ptr[v as usize + 1] as usize,
            );
            for e in lo..hi {
                let s = g.src[e];
                let (sb, sl) = if s == crate::propagate::SEED_SOURCE {
                    (SEED_BLOCK, 0)
                } else {
                    (s >> bits, s & mask)
                };
                let c = chunks.entry((v >> bits, sb)).or_default();
                c.dst.push(v & mask);
                c.src.push(sl);
                c.weight.push(g.weight[e]);
                c.gate.push(g.gate[e]);
            }
        }
        for c in chunks.values_mut() {
            c.sort();
        }
        let mut seeds: Vec<u64> = g.seeds.iter().map(|&s| u64::from(s)).collect();
        seeds.sort_unstable();
        seeds.dedup();
        Ok(Self {
            nodes: u64::from(g.nodes()),
            bits,
            chunks,
            seeds,
        })
    }
}

impl ChunkSource for MemSource {
    fn nodes(&self) -> u64 {
        self.nodes
    }
    fn bits(&self) -> u32 {
        self.bits
    }
    fn sources(&mut self, d: u32) -> Result<Vec<u32>> {
        Ok(self
            .chunks
            .range((d, 0)..=(d, u32::MAX))
            .map(|(&(_, s), _)| s)
            .collect())
    }
    fn load(&mut self, d: u32, s: u32) -> Result<Chunk> {
        self.chunks
            .get(&(d, s))
            .cloned()
            .ok_or_else(|| Error::BadGraph(format!("no chunk ({d}, {s})")))
    }
    fn seeds(&mut self) -> Result<Vec<u64>> {
        Ok(self.seeds.clone())
    }
}
