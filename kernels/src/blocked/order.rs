//! The fixpoint of a blocked problem in one pass over the blocks in chain order (see
//! [`crate::propagate::fixpoint_in_order`]): the answer of a run without a hop limit.
//!
//! Forward, a destination block reads only itself and earlier blocks; backward, only
//! itself and later ones. Visiting the blocks in that order, every other source block is
//! final when it is read, so each chunk from one is read once: its edges that carry taint
//! become fixed contributions (the product and the source's hop; the others add exactly
//! nothing), and the source block's state can go. The block's own chunk (the diagonal) is
//! read from the block's state as its rows are computed, in order. Each row sums its
//! entries in the engine's order (ascending source block, the seed chunk last), so the
//! fractions are the in-memory pass's bits, and its hops too, whatever the block size.
//!
//! A chunk from a block on the wrong side, or a diagonal edge against the order, is an
//! error (a cycle or damaged ids): the pass would otherwise read a source not yet final.
//!
//! **Memory.** The final states (8 bytes a node) are paged within the budget; what one
//! block needs at once (its state, its diagonal chunk, the contributions of its other
//! chunks: 12 bytes an edge that carries taint, one source block's state) is the fixed
//! overhead on top of it. Chunks are not cached: each is read once.

use std::sync::Arc;

use super::pager::Pager;
use super::{
    BlockState, Blocked, Budget, Chunk, ChunkSource, Layout, SEED_BLOCK, Stats, block_len, fault,
};
use crate::propagate::{ChainOrder, RowSum, against};
use crate::{Error, Result};

/// One chunk's part of a block's rows.
enum Part {
    /// Edges from a final source: only those that carry taint, with what they carry.
    Fixed {
        dst: Vec<u32>,
        product: Vec<f32>,
        hop: Vec<u32>,
    },
    /// The block's own chunk, read as the rows are computed.
    Diagonal(Chunk),
}

impl Part {
    fn dst(&self) -> &[u32] {
        match self {
            Part::Fixed { dst, .. } => dst,
            Part::Diagonal(c) => &c.dst,
        }
    }
}

/// A chunk's edges from a final source block (`None`: the seed chunk, a constant 1 at
/// hop 0) that carry taint, as the Jacobi step gates and multiplies them.
fn fixed(c: &Chunk, src: Option<&BlockState>, min_value: f32) -> Part {
    let (mut dst, mut product, mut hop) = (Vec::new(), Vec::new(), Vec::new());
    for e in 0..c.len() {
        let (fs, hs) = match src {
            None => (1.0f32, 0),
            Some(s) => (s.fraction[c.src[e] as usize], s.hop[c.src[e] as usize]),
        };
        if min_value > 0.0 && !(fs > 0.0 && fs * c.gate[e] >= min_value) {
            continue;
        }
        let p = c.weight[e] * fs;
        // A product of zero adds +0.0 to a non-negative sum: no bit changes.
        if p > 0.0 {
            dst.push(c.dst[e]);
            product.push(p);
            hop.push(hs);
        }
    }
    Part::Fixed { dst, product, hop }
}

/// Runs `source`'s problem to its fixpoint in one pass in `order`, within `budget`, on
/// the CPU. `stats.steps` is 1.
pub fn fixpoint(
    source: &mut dyn ChunkSource,
    min_value: f32,
    budget: &Budget,
    order: ChainOrder,
) -> Result<Blocked> {
    let Layout {
        nodes,
        bits,
        nb,
        seeds,
        dir,
    } = Layout::of(source, budget)?;
    let block_nodes = |b: u32| block_len(nodes, bits, b);
    let mut state: Pager<BlockState> = Pager::new(dir.path().join("state"), budget.mem_bytes)?;
    let mut stats = Stats::default();
    // Whether each finished block carries taint: known when it is stored, so deciding
    // which chunks to read needs no state read back.
    let mut carries_taint = vec![false; nb as usize];
    let order_of_blocks: Box<dyn Iterator<Item = u32>> = match order {
        ChainOrder::Ascending => Box::new(0..nb),
        ChainOrder::Descending => Box::new((0..nb).rev()),
    };
    let bar = crate::progress::bar(Some(u64::from(nb)), "taint to the fixpoint (blocks)");
    for d in order_of_blocks {
        bar.inc(1);
        let n = block_nodes(d);
        let start = u64::from(d) << bits;
        let lo = seeds.partition_point(|&s| s < start);
        let hi = seeds.partition_point(|&s| s < start + n as u64);
        let block_seeds = &seeds[lo..hi];
        let all = source.sources(d)?;
        for &s in &all {
            if s == SEED_BLOCK {
                continue;
            }
            if s >= nb {
                return Err(Error::BadGraph(format!(
                    "chunk ({d}, {s}) from a block outside 0..{nb}"
                )));
            }
            if s != d && !order.runs(u64::from(s), u64::from(d)) {
                return Err(Error::BadGraph(format!(
                    "chunk ({d}, {s}) runs against the chain order: the spend graph has a \
                     cycle or damaged ids"
                )));
            }
        }
        // Which source blocks carry taint (final: they come earlier in the order).
        let mut live = Vec::with_capacity(all.len());
        for &s in &all {
            let carries = if s == SEED_BLOCK {
                true
            } else if s == d || (fault() == 1 && (s + 1 == d || d + 1 == s)) {
                false
            } else {
                carries_taint[s as usize]
            };
            live.push(carries);
        }
        if block_seeds.is_empty() && !live.iter().any(|&l| l) {
            // Nothing reaches the block (its own chunk only moves taint it already has).
            stats.chunks_skipped += all.len() as u64;
            continue;
        }
        let mut parts: Vec<Part> = Vec::with_capacity(all.len());
        for (&s, &carries) in all.iter().zip(&live) {
            if s != d && !carries {
                stats.chunks_skipped += 1;
                continue;
            }
            let t0 = std::time::Instant::now();
            let c = source.load(d, s)?;
            stats.load_secs += t0.elapsed().as_secs_f64();
            let src_nodes = if s == SEED_BLOCK { 0 } else { block_nodes(s) };
            c.check(d, s, n, src_nodes)?;
            stats.chunk_loads += 1;
            stats.chunks_swept += 1;
            stats.edges_swept += c.len() as u64;
            let t0 = std::time::Instant::now();
            if s == d {
                parts.push(Part::Diagonal(c));
            } else if s == SEED_BLOCK {
                parts.push(fixed(&c, None, min_value));
            } else {
                let read = if fault() == 2 && s + 1 < nb && block_nodes(s + 1) == block_nodes(s) {
                    s + 1
                } else {
                    s
                };
                let src = state.get((0, read))?;
                match src {
                    Some(b) => parts.push(fixed(&c, Some(&b), min_value)),
                    None => continue,
                }
            }
            stats.sum_secs += t0.elapsed().as_secs_f64();
        }
        let t0 = std::time::Instant::now();
        let mut st = BlockState::empty(n);
        for &s in block_seeds {
            let v = (s - start) as usize;
            st.fraction[v] = 1.0;
            st.hop[v] = 0;
        }
        rows_in_order(&mut st, &parts, min_value, order, start)?;
        stats.sum_secs += t0.elapsed().as_secs_f64();
        let extra: usize = parts
            .iter()
            .map(|p| match p {
                Part::Fixed { dst, .. } => dst.len() * 12,
                Part::Diagonal(c) => c.bytes(),
            })
            .sum();
        stats.peak_cached_bytes = stats.peak_cached_bytes.max(state.mem_bytes() + extra);
        drop(parts);
        if !st.is_blank() {
            carries_taint[d as usize] = st.any_taint();
            state.put((0, d), Arc::new(st))?;
        }
    }
    bar.finish_and_clear();
    stats.steps = 1;
    tracing::debug!(?stats, nodes, bits, "blocked fixpoint");
    Ok(Blocked::finish(nodes, bits, state, dir, 0, stats))
}

/// Computes the block's rows in `order`, each summing its parts' edges in part order.
fn rows_in_order(
    st: &mut BlockState,
    parts: &[Part],
    min_value: f32,
    order: ChainOrder,
    start: u64,
) -> Result<()> {
    let n = st.fraction.len();
    // Per part: the end of the edges not yet visited on the side the rows come from.
    let mut cursor: Vec<usize> = parts
        .iter()
        .map(|p| match order {
            ChainOrder::Ascending => 0,
            ChainOrder::Descending => p.dst().len(),
        })
        .collect();
    let row_at = |v: usize, st: &mut BlockState, cursor: &mut [usize]| -> Result<()> {
        let seed = st.hop[v] == 0;
        let mut row = RowSum::new();
        for (p, c) in parts.iter().zip(cursor.iter_mut()) {
            let dst = p.dst();
            let (lo, hi) = match order {
                ChainOrder::Ascending => {
                    let mut hi = *c;
                    while hi < dst.len() && dst[hi] as usize == v {
                        hi += 1;
                    }
                    let r = (*c, hi);
                    *c = hi;
                    r
                }
                ChainOrder::Descending => {
                    let mut lo = *c;
                    while lo > 0 && dst[lo - 1] as usize == v {
                        lo -= 1;
                    }
                    let r = (lo, *c);
                    *c = lo;
                    r
                }
            };
            if seed {
                continue;
            }
            match p {
                Part::Fixed { product, hop, .. } => {
                    for e in lo..hi {
                        row.add(product[e], hop[e]);
                    }
                }
                Part::Diagonal(ch) => {
                    for e in lo..hi {
                        let s = ch.src[e] as usize;
                        if !order.runs(s as u64, v as u64) {
                            return Err(against(order, start + s as u64, start + v as u64));
                        }
                        row.edge(
                            ch.weight[e],
                            ch.gate[e],
                            st.fraction[s],
                            st.hop[s],
                            min_value,
                        );
                    }
                }
            }
        }
        if seed {
            st.fraction[v] = 1.0;
        } else {
            let (f, h) = row.finish();
            st.fraction[v] = f;
            st.hop[v] = h;
        }
        Ok(())
    };
    match order {
        ChainOrder::Ascending => {
            for v in 0..n {
                row_at(v, st, &mut cursor)?;
            }
        }
        ChainOrder::Descending => {
            for v in (0..n).rev() {
                row_at(v, st, &mut cursor)?;
            }
        }
    }
    // Every edge was visited: a part whose edges point past the block's rows is damaged.
    for (p, c) in parts.iter().zip(&cursor) {
        let done = match order {
            ChainOrder::Ascending => *c == p.dst().len(),
            ChainOrder::Descending => *c == 0,
        };
        if !done {
            return Err(Error::BadGraph(
                "a chunk's edges are not sorted by destination".into(),
            ));
        }
    }
    Ok(())
}

/// Runs `source`'s problem as `opts` asks: `max_hops` steps of the engine, or, without a
/// hop limit, its fixpoint in one pass in `order` (on the CPU whatever `backend`).
pub fn run_on(
    backend: &crate::device::Backend,
    source: &mut dyn ChunkSource,
    opts: &crate::propagate::Options,
    budget: &Budget,
    order: ChainOrder,
) -> Result<Blocked> {
    match opts.max_hops {
        Some(_) => super::propagate_on(backend, source, opts, budget),
        None => fixpoint(source, opts.min_value, budget, order),
    }
}
