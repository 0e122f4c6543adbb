//! UTXO taint out of core, on the committed spend graph (`btc.spends`): poison and
//! haircut, forward and backward, within a memory budget, by the `blocked` engine.
//!
//! Nothing here holds the chain in memory. The graph is read a (destination block, source
//! block) row group at a time and lowered to the same edges as the in-memory lowering
//! ([`super::run`]): the same weights, gates, seeds, stops and blocked transactions, each
//! row in ascending source order, so the results are the same bits. Seeds are outputs,
//! found through the Bloom filters of `btc.outputs`; results are joined back to txids,
//! vouts and addresses by reading only the row groups of `btc.outputs` that hold tainted
//! outputs.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use ferret_schemas::{Chain, Manifest, Warehouse};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::statistics::Statistics;
use std::sync::Arc;
use tokio::runtime::Handle;

use super::{Direction, Policy, decimal};
use crate::blocked::{self, Budget, Chunk, ChunkSource, SEED_BLOCK};
use crate::propagate::{Options, UNREACHED};
use crate::{Error, Result};

pub(super) fn wh_err(e: ferret_schemas::Error) -> Error {
    Error::Warehouse(Box::new(e))
}

fn bad(path: &str, what: impl std::fmt::Display) -> Error {
    Error::BadGraph(format!("{path}: {what}"))
}

/// One row group: (file, row group, (min, max) of each column asked for).
pub type RowGroupRanges = (usize, usize, Vec<(i64, i64)>);

/// The row groups of a table's committed files with the range each holds of some Int64
/// (or Int32) columns, from the files' footers (each read once).
#[derive(Clone, Debug, Default)]
pub struct RowGroups {
    pub files: Vec<String>,
    metas: Vec<ArrowReaderMetadata>,
    pub groups: Vec<RowGroupRanges>,
    /// Rows of each of `groups`.
    pub rows: Vec<u64>,
}

fn stat_range(s: Option<&Statistics>) -> Option<(i64, i64)> {
    match s? {
        Statistics::Int64(v) => Some((*v.min_opt()?, *v.max_opt()?)),
        Statistics::Int32(v) => Some((i64::from(*v.min_opt()?), i64::from(*v.max_opt()?))),
        _ => None,
    }
}

impl RowGroups {
    /// Reads the footers of `table`'s committed files.
    pub async fn open(wh: &Warehouse, m: &Manifest, table: &str, columns: &[&str]) -> Result<Self> {
        let mut files: Vec<_> = m.files_of(table).collect();
        files.sort_by_key(|f| f.first_height);
        let mut out = Self::default();
        for f in files {
            let reader_meta = wh.reader_metadata(&f.path).await.map_err(wh_err)?;
            let meta = Arc::clone(reader_meta.metadata());
            let fi = out.files.len();
            out.files.push(f.path.clone());
            out.metas.push(reader_meta);
            let schema = meta.file_metadata().schema_descr();
            let cols = columns
                .iter()
                .map(|c| {
                    schema
                        .columns()
                        .iter()
                        .position(|col| col.path().string() == *c)
                        .ok_or_else(|| bad(&f.path, format!("no column {c}")))
                })
                .collect::<Result<Vec<_>>>()?;
            for (ri, rg) in meta.row_groups().iter().enumerate() {
                if rg.num_rows() == 0 {
                    continue;
                }
                let ranges = cols
                    .iter()
                    .zip(columns)
                    .map(|(&c, name)| {
                        stat_range(rg.column(c).statistics()).ok_or_else(|| {
                            bad(&f.path, format!("row group {ri} has no {name} range"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                out.groups.push((fi, ri, ranges));
                out.rows.push(u64::try_from(rg.num_rows()).unwrap_or(0));
            }
        }
        Ok(out)
    }

    /// Reads `columns` of the row groups (by index into `groups`), file by file.
    pub async fn read(
        &self,
        wh: &Warehouse,
        which: &[usize],
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        let at: Vec<(usize, usize)> = which
            .iter()
            .map(|&g| (self.groups[g].0, self.groups[g].1))
            .collect();
        self.read_at(wh, &at, columns).await
    }

    /// Reads `columns` of the given (file, row group)s, file by file.
    async fn read_at(
        &self,
        wh: &Warehouse,
        at: &[(usize, usize)],
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        let mut by_file: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(f, rg) in at {
            by_file.entry(f).or_default().push(rg);
        }
        let mut out = Vec::new();
        for (f, rgs) in by_file {
            out.extend(
                wh.read_row_groups_with(&self.files[f], &self.metas[f], columns, rgs)
                    .await
                    .map_err(wh_err)?,
            );
        }
        Ok(out)
    }
}

/// The committed spend graph's index: which row groups hold each (destination block,
/// source block) pair.
#[derive(Clone, Debug)]
pub struct SpendEdges {
    pub bits: u32,
    /// Transactions (nodes) in the graph.
    pub transactions: u64,
    groups: RowGroups,
    pairs: BTreeMap<(u32, u32), Vec<(usize, usize)>>,
    /// Edges of each pair.
    pair_rows: BTreeMap<(u32, u32), u64>,
}

/// Columns a lowering reads from `btc.spends`.
const EDGE_COLUMNS: &[&str] = &[
    "tx_index",
    "vin",
    "spent_tx_index",
    "spent_output_id",
    "value",
    "input_total",
    "address_id",
];

impl SpendEdges {
    pub async fn open(wh: &Warehouse, m: &Manifest) -> Result<Self> {
        let bits = m.graph_block_bits.ok_or_else(|| {
            Error::BadQuery(
                "this warehouse has no spend graph (indexed before btc.spends existed): index it again into a new warehouse".into(),
            )
        })?;
        let groups = RowGroups::open(wh, m, "spends", &["dst_block", "src_block"]).await?;
        let mut pairs: BTreeMap<(u32, u32), Vec<(usize, usize)>> = BTreeMap::new();
        let mut pair_rows: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for (gi, (fi, ri, ranges)) in groups.groups.iter().enumerate() {
            let one = |(lo, hi): (i64, i64)| (lo == hi).then(|| u32::try_from(lo).ok()).flatten();
            let (Some(d), Some(s)) = (one(ranges[0]), one(ranges[1])) else {
                return Err(bad(
                    &groups.files[*fi],
                    format!("row group {ri} does not hold one (dst_block, src_block) pair"),
                ));
            };
            pairs.entry((d, s)).or_default().push((*fi, *ri));
            *pair_rows.entry((d, s)).or_default() += groups.rows[gi];
        }
        Ok(Self {
            bits,
            transactions: m.next_tx_index,
            groups,
            pairs,
            pair_rows,
        })
    }

    /// Edges of the pair (`d`, `s`), from the footers.
    pub fn edges_of(&self, d: u32, s: u32) -> u64 {
        self.pair_rows.get(&(d, s)).copied().unwrap_or(0)
    }

    /// Source blocks with edges into `d`, ascending.
    pub fn sources_of(&self, d: u32) -> Vec<u32> {
        self.pairs
            .range((d, 0)..=(d, u32::MAX))
            .map(|(&(_, s), _)| s)
            .collect()
    }

    /// Destination blocks with edges out of `s`, ascending.
    pub fn destinations_of(&self, s: u32) -> Vec<u32> {
        self.pairs
            .keys()
            .filter(|&&(_, src)| src == s)
            .map(|&(d, _)| d)
            .collect()
    }

    /// The row groups holding the pair (`d`, `s`), in file order.
    pub fn groups_of(&self, d: u32, s: u32) -> &[(usize, usize)] {
        self.pairs.get(&(d, s)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The rows of one of the pair's row groups ([`SpendEdges::groups_of`]).
    pub async fn read_group(&self, wh: &Warehouse, at: (usize, usize)) -> Result<Vec<RecordBatch>> {
        self.groups.read_at(wh, &[at], EDGE_COLUMNS).await
    }

    /// Only `columns` of the pair (`d`, `s`), in file order.
    pub async fn read_columns(
        &self,
        wh: &Warehouse,
        d: u32,
        s: u32,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        let Some(groups) = self.pairs.get(&(d, s)) else {
            return Ok(Vec::new());
        };
        self.groups.read_at(wh, groups, columns).await
    }

    /// The rows of the pair (`d`, `s`), in file order: by (tx_index, vin).
    pub async fn read(&self, wh: &Warehouse, d: u32, s: u32) -> Result<Vec<RecordBatch>> {
        let Some(groups) = self.pairs.get(&(d, s)) else {
            return Ok(Vec::new());
        };
        self.groups.read_at(wh, groups, EDGE_COLUMNS).await
    }
}

/// Calls `f` on every edge of the pair (`d`, `s`), a row group at a time.
pub(super) fn each_edge(
    wh: &Warehouse,
    rt: &Handle,
    edges: &SpendEdges,
    d: u32,
    s: u32,
    f: &mut dyn FnMut(Edge) -> Result<()>,
) -> Result<()> {
    for &at in edges.groups_of(d, s) {
        let batches = rt.block_on(edges.read_group(wh, at))?;
        for_each_edge(batches, "btc.spends", &mut *f)?;
    }
    Ok(())
}

/// One edge row of `btc.spends`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Edge {
    pub(super) tx: u64,
    pub(super) vin: i32,
    pub(super) spent_tx: u64,
    pub(super) spent_output: u64,
    pub(super) value: i64,
    pub(super) input_total: i64,
    /// u64::MAX for none.
    pub(super) address: u64,
}

/// Calls `f` on every edge row of `batches`, dropping each batch once read.
fn for_each_edge(
    batches: Vec<RecordBatch>,
    path: &str,
    mut f: impl FnMut(Edge) -> Result<()>,
) -> Result<()> {
    for b in batches {
        let i64c = |i: usize| {
            b.column(i).as_primitive_opt::<Int64Type>().ok_or_else(|| {
                bad(
                    path,
                    format!("column {} has the wrong type", EDGE_COLUMNS[i]),
                )
            })
        };
        let (tx, spent_tx, spent_out, value, total, addr) =
            (i64c(0)?, i64c(2)?, i64c(3)?, i64c(4)?, i64c(5)?, i64c(6)?);
        let vin = b
            .column(1)
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| bad(path, "column vin has the wrong type"))?;
        let id = |a: &Int64Array, r: usize, what: &str| {
            u64::try_from(a.value(r)).map_err(|_| bad(path, format!("negative {what}")))
        };
        for r in 0..b.num_rows() {
            f(Edge {
                tx: id(tx, r, "tx_index")?,
                vin: vin.value(r),
                spent_tx: id(spent_tx, r, "spent_tx_index")?,
                spent_output: id(spent_out, r, "spent_output_id")?,
                value: value.value(r).max(0),
                input_total: total.value(r).max(0),
                address: if addr.is_null(r) {
                    u64::MAX
                } else {
                    id(addr, r, "address_id")?
                },
            })?;
        }
    }
    Ok(())
}

/// A seed output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeedOutput {
    pub output_id: u64,
    pub tx_index: u64,
    pub value: i64,
}

/// A taint query on committed ids.
#[derive(Clone, Debug)]
pub struct StoredQuery {
    pub policy: Policy,
    pub direction: Direction,
    pub max_hops: Option<u32>,
    pub min_value: i64,
    pub seeds: Vec<SeedOutput>,
    /// `address_id`s whose outputs receive taint but pass none on.
    pub stop_addresses: HashSet<u64>,
    /// Transactions that pass no taint through.
    pub blocked_txs: HashSet<u64>,
}

/// One tainted output, joined back to the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTainted {
    pub output_id: u64,
    /// The transaction that created it.
    pub tx_index: u64,
    pub txid: String,
    pub vout: u32,
    pub address: Option<String>,
    pub value: i64,
    pub hop: u32,
    pub fraction: f32,
    pub tainted_value: i64,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct StoredResult {
    pub rows: Vec<StoredTainted>,
    pub steps: u32,
    pub stats: blocked::Stats,
}

fn share(poison: bool, v: i64, total: i64) -> f32 {
    // As the in-memory lowering: in f64, then to f32.
    (if poison {
        1.0
    } else if total > 0 {
        v as f64 / total as f64
    } else {
        0.0
    }) as f32
}

/// A lowered edge: destination and source (local to their blocks), the tiebreak among
/// equal sources (the in-memory lowering's push order), weight and gate.
pub(super) type Lowered = (u32, u32, u64, f32, f32);

/// Sorts lowered edges into a chunk.
pub(super) fn chunk_of(mut e: Vec<Lowered>) -> Chunk {
    // The keys are unique (the tiebreak is a vin or an output id), so an unstable sort
    // gives the one order, without a merge buffer.
    e.sort_unstable_by_key(|x| (x.0, x.1, x.2));
    Chunk {
        dst: e.iter().map(|x| x.0).collect(),
        src: e.iter().map(|x| x.1).collect(),
        weight: e.iter().map(|x| x.3).collect(),
        gate: e.iter().map(|x| x.4).collect(),
    }
}

/// A forward edge from `src` (local; 0 for a seed output) into the spender of `e`.
fn forward_edge(e: &Edge, src: u32, mask: u64, poison: bool) -> Lowered {
    (
        (e.tx & mask) as u32,
        src,
        e.vin as u64,
        share(poison, e.value, e.input_total),
        e.value as f32,
    )
}

/// The lowering of one query onto the committed graph.
struct Lowering<'a> {
    wh: &'a Warehouse,
    manifest: &'a Manifest,
    rt: Handle,
    edges: &'a SpendEdges,
    q: &'a StoredQuery,
    seeds: HashSet<u64>,
    seed_chunks: BTreeMap<u32, Chunk>,
    /// Backward: `output_value` by transaction, for the blocks lowered last.
    out_totals: Option<(u32, Vec<i64>)>,
    tx_groups: Option<RowGroups>,
}

impl Lowering<'_> {
    fn mask(&self) -> u64 {
        (1u64 << self.edges.bits) - 1
    }

    fn block_of(&self, tx: u64) -> u32 {
        u32::try_from(tx >> self.edges.bits).unwrap_or(u32::MAX)
    }

    /// Calls `f` on every edge of the stored pair (`d`, `s`), in file order, reading a
    /// row group at a time (a pair spans a row group per commit file).
    fn each(&self, d: u32, s: u32, mut f: impl FnMut(Edge) -> Result<()>) -> Result<()> {
        each_edge(self.wh, &self.rt, self.edges, d, s, &mut f)
    }

    /// Backward: every transaction's total output value in block `b`.
    fn out_totals(&mut self, b: u32) -> Result<&[i64]> {
        if self.out_totals.as_ref().is_none_or(|(ob, _)| *ob != b) {
            if self.tx_groups.is_none() {
                self.tx_groups = Some(self.rt.block_on(RowGroups::open(
                    self.wh,
                    self.manifest,
                    "transactions",
                    &["tx_index"],
                ))?);
            }
            let groups = self.tx_groups.as_ref().expect("opened above");
            let lo = i64::from(b) << self.edges.bits;
            let hi = lo + (1i64 << self.edges.bits) - 1;
            let which: Vec<usize> = (0..groups.groups.len())
                .filter(|&g| groups.groups[g].2[0].0 <= hi && groups.groups[g].2[0].1 >= lo)
                .collect();
            let batches =
                self.rt
                    .block_on(groups.read(self.wh, &which, &["tx_index", "output_value"]))?;
            let mut totals = vec![-1i64; 1usize << self.edges.bits];
            for batch in &batches {
                let (Some(t), Some(v)) = (
                    batch.column(0).as_primitive_opt::<Int64Type>(),
                    batch.column(1).as_primitive_opt::<Int64Type>(),
                ) else {
                    return Err(Error::BadGraph(
                        "btc.transactions: tx_index or output_value has the wrong type".into(),
                    ));
                };
                for r in 0..batch.num_rows() {
                    let tx = t.value(r);
                    if (lo..=hi).contains(&tx) {
                        totals[(tx - lo) as usize] = v.value(r).max(0);
                    }
                }
            }
            self.out_totals = Some((b, totals));
        }
        Ok(&self.out_totals.as_ref().expect("set above").1)
    }

    fn total_out(&mut self, tx: u64) -> Result<i64> {
        let b = self.block_of(tx);
        let local = (tx & self.mask()) as usize;
        let t = self.out_totals(b)?[local];
        if t < 0 {
            return Err(Error::BadGraph(format!(
                "transaction {tx} is in btc.spends but not in btc.transactions"
            )));
        }
        Ok(t)
    }

    /// Forward: the seed edges (inputs spending seed outputs), by destination block.
    /// Backward: an edge from a constant 1 into each seed's transaction.
    fn build_seed_chunks(&mut self) -> Result<()> {
        let poison = self.q.policy == Policy::Poison;
        let mut by_block: BTreeMap<u32, Vec<Lowered>> = BTreeMap::new();
        match self.q.direction {
            Direction::Forward => {
                let mut creators: Vec<u32> = self
                    .q
                    .seeds
                    .iter()
                    .map(|s| self.block_of(s.tx_index))
                    .collect();
                creators.sort_unstable();
                creators.dedup();
                let mask = self.mask();
                for s in creators {
                    for d in self.edges.destinations_of(s) {
                        let into = by_block.entry(d).or_default();
                        self.each(d, s, |e| {
                            if self.seeds.contains(&e.spent_output)
                                && !self.q.blocked_txs.contains(&e.tx)
                            {
                                into.push(forward_edge(&e, 0, mask, poison));
                            }
                            Ok(())
                        })?;
                    }
                }
                by_block.retain(|_, e| !e.is_empty());
            }
            Direction::Backward => {
                let seeds = self.q.seeds.clone();
                for s in seeds {
                    if self.q.blocked_txs.contains(&s.tx_index) {
                        continue;
                    }
                    let total = self.total_out(s.tx_index)?;
                    let v = s.value.max(0);
                    by_block
                        .entry(self.block_of(s.tx_index))
                        .or_default()
                        .push((
                            (s.tx_index & self.mask()) as u32,
                            0,
                            s.output_id,
                            share(poison, v, total),
                            v as f32,
                        ));
                }
            }
        }
        self.seed_chunks = by_block
            .into_iter()
            .map(|(d, e)| (d, chunk_of(e)))
            .collect();
        Ok(())
    }
}

impl ChunkSource for Lowering<'_> {
    fn nodes(&self) -> u64 {
        self.edges.transactions
    }

    fn bits(&self) -> u32 {
        self.edges.bits
    }

    fn sources(&mut self, d: u32) -> Result<Vec<u32>> {
        let mut s = match self.q.direction {
            Direction::Forward => self.edges.sources_of(d),
            Direction::Backward => self.edges.destinations_of(d),
        };
        if self.seed_chunks.contains_key(&d) {
            s.push(SEED_BLOCK);
        }
        Ok(s)
    }

    fn load(&mut self, d: u32, s: u32) -> Result<Chunk> {
        if s == SEED_BLOCK {
            return Ok(self.seed_chunks.get(&d).cloned().unwrap_or_default());
        }
        let poison = self.q.policy == Policy::Poison;
        let mask = self.mask();
        // Sized from the footers: no doubling of the largest buffer a lowering holds.
        let stored = match self.q.direction {
            Direction::Forward => self.edges.edges_of(d, s),
            Direction::Backward => self.edges.edges_of(s, d),
        };
        let mut out = Vec::with_capacity(usize::try_from(stored).unwrap_or(0));
        match self.q.direction {
            Direction::Forward => {
                let q = self.q;
                let seeds = &self.seeds;
                self.each(d, s, |e| {
                    if !(q.blocked_txs.contains(&e.tx)
                        || seeds.contains(&e.spent_output)
                        || q.stop_addresses.contains(&e.address))
                    {
                        out.push(forward_edge(&e, (e.spent_tx & mask) as u32, mask, poison));
                    }
                    Ok(())
                })?;
            }
            Direction::Backward => {
                // Destination: the creating transaction (all in block d, whose output
                // totals are read first); source: the spending one.
                let totals = self.out_totals(d)?.to_vec();
                let q = self.q;
                let seeds = &self.seeds;
                let bits = self.edges.bits;
                self.each(s, d, |e| {
                    if q.blocked_txs.contains(&e.spent_tx)
                        || seeds.contains(&e.spent_output)
                        || q.stop_addresses.contains(&e.address)
                    {
                        return Ok(());
                    }
                    let local = (e.spent_tx & mask) as usize;
                    let total = match totals.get(local) {
                        Some(&t) if t >= 0 && (e.spent_tx >> bits) == u64::from(d) => t,
                        _ => {
                            return Err(Error::BadGraph(format!(
                                "transaction {} is in btc.spends but not in btc.transactions",
                                e.spent_tx
                            )));
                        }
                    };
                    out.push((
                        local as u32,
                        (e.tx & mask) as u32,
                        e.spent_output,
                        share(poison, e.value, total),
                        e.value as f32,
                    ));
                    Ok(())
                })?;
            }
        }
        Ok(chunk_of(out))
    }

    fn seeds(&mut self) -> Result<Vec<u64>> {
        // Transaction nodes have no fixed seeds: seed outputs are edges from a constant 1.
        Ok(Vec::new())
    }
}

/// Runs `q` on the committed graph within `budget` and returns the tainted outputs
/// (call from a blocking thread inside a tokio runtime: the graph is read through the
/// runtime). [`run_stored_with`] hands them over a row group at a time instead.
pub fn run_stored(wh: &Warehouse, q: &StoredQuery, budget: &Budget) -> Result<StoredResult> {
    let mut rows = Vec::new();
    let (steps, stats) = run_stored_with(wh, q, budget, &mut |r| {
        rows.extend(r);
        Ok(())
    })?;
    Ok(StoredResult { rows, steps, stats })
}

/// [`run_stored`], giving the tainted outputs to `on_rows` as they are joined, in
/// `output_id` order, one row group of `btc.outputs` at a time: what the run holds is its
/// budget, one block's working set and one row group, whatever the number of results
/// (backward runs also hold the ids of the tainted outputs, 24 bytes each).
pub fn run_stored_with(
    wh: &Warehouse,
    q: &StoredQuery,
    budget: &Budget,
    on_rows: &mut dyn FnMut(Vec<StoredTainted>) -> Result<()>,
) -> Result<(u32, blocked::Stats)> {
    run_stored_on(&crate::device::Backend::Cpu, wh, q, budget, on_rows)
}

/// [`run_stored_with`] with the row sums on `backend` (see [`blocked::run_on`]: without a
/// hop limit, one pass in chain order on the CPU).
pub fn run_stored_on(
    backend: &crate::device::Backend,
    wh: &Warehouse,
    q: &StoredQuery,
    budget: &Budget,
    on_rows: &mut dyn FnMut(Vec<StoredTainted>) -> Result<()>,
) -> Result<(u32, blocked::Stats)> {
    if q.policy == Policy::Fifo {
        return super::stored_fifo::run_fifo(backend, wh, q, budget, on_rows);
    }
    let rt = Handle::current();
    let m = rt
        .block_on(wh.load_manifest(Chain::Btc))
        .map_err(wh_err)?
        .ok_or(Error::NothingIndexed { chain: "btc" })?;
    let edges = rt.block_on(SpendEdges::open(wh, &m))?;
    let mut low = Lowering {
        wh,
        manifest: &m,
        rt: rt.clone(),
        edges: &edges,
        q,
        seeds: q.seeds.iter().map(|s| s.output_id).collect(),
        seed_chunks: BTreeMap::new(),
        out_totals: None,
        tx_groups: None,
    };
    if let Some(s) = q.seeds.iter().find(|s| s.tx_index >= edges.transactions) {
        return Err(Error::BadGraph(format!(
            "seed output {} of transaction {} outside the graph",
            s.output_id, s.tx_index
        )));
    }
    low.build_seed_chunks()?;
    let opts = Options {
        max_hops: q.max_hops,
        min_value: q.min_value.max(0) as f32,
    };
    let mut res = blocked::run_on(backend, &mut low, &opts, budget, q.direction.order())?;
    drop(low);
    report(wh, &rt, &m, &edges, q, &mut res, on_rows)?;
    Ok((res.stats.steps, res.stats.clone()))
}

/// The tainted outputs, joined to `btc.outputs`.
fn report(
    wh: &Warehouse,
    rt: &Handle,
    m: &Manifest,
    edges: &SpendEdges,
    q: &StoredQuery,
    res: &mut blocked::Blocked,
    on_rows: &mut dyn FnMut(Vec<StoredTainted>) -> Result<()>,
) -> Result<()> {
    let poison = q.policy == Policy::Poison;
    let bits = edges.bits;
    // Backward: output id → (hop, fraction) of the outputs reached transactions spent.
    // Forward: an output takes its creating transaction's state, read block by block
    // through the pager; here only which blocks have any reached node.
    let mut wanted: BTreeMap<u64, (u32, f32)> = BTreeMap::new();
    let mut reached = vec![false; res.blocks() as usize];
    for b in 0..res.blocks() {
        let Some(st) = res.block(b)? else { continue };
        if st.hop.iter().all(|&h| h == UNREACHED) {
            continue;
        }
        reached[b as usize] = true;
        if q.direction == Direction::Backward {
            for s in edges.sources_of(b) {
                each_edge(wh, rt, edges, b, s, &mut |e| {
                    let local = (e.tx - (u64::from(b) << bits)) as usize;
                    let h = st.hop[local];
                    if h != UNREACHED {
                        let f = if poison { 1.0 } else { st.fraction[local] };
                        wanted.insert(e.spent_output, (h, f));
                    }
                    Ok(())
                })?;
            }
        }
    }
    let forward = q.direction == Direction::Forward;
    for s in &q.seeds {
        wanted.insert(s.output_id, (0, 1.0));
    }
    // The row groups of btc.outputs holding a wanted output or, forward, an output of a
    // transaction in a reached block.
    let by_id = rt.block_on(RowGroups::open(
        wh,
        m,
        "outputs",
        &["output_id", "tx_index"],
    ))?;
    for g in 0..by_id.groups.len() {
        let ((lo, hi), (tlo, thi)) = (by_id.groups[g].2[0], by_id.groups[g].2[1]);
        let any_wanted = wanted
            .range(u64::try_from(lo).unwrap_or(0)..=u64::try_from(hi).unwrap_or(0))
            .next()
            .is_some();
        let any_reached = forward
            && (tlo >> bits..=thi >> bits)
                .any(|b| reached.get(b as usize).copied().unwrap_or(false));
        if !any_wanted && !any_reached {
            continue;
        }
        let batches = rt.block_on(by_id.read(
            wh,
            &[g],
            &["output_id", "tx_index", "txid", "vout", "address", "value"],
        ))?;
        let rows = collect_rows(&batches, &wanted, forward, res, bits, poison)?;
        if !rows.is_empty() {
            on_rows(rows)?;
        }
    }
    Ok(())
}

/// The tainted outputs among `batches` of `btc.outputs`.
fn collect_rows(
    batches: &[RecordBatch],
    wanted: &BTreeMap<u64, (u32, f32)>,
    forward: bool,
    res: &mut blocked::Blocked,
    bits: u32,
    poison: bool,
) -> Result<Vec<StoredTainted>> {
    let mut states = BlockStates::default();
    tainted_rows(batches, |o, t| match wanted.get(&o) {
        Some(&hf) => Ok(Some(hf)),
        None if forward => Ok(states
            .get(res, bits, t)?
            .map(|(h, f)| (h, if poison { 1.0 } else { f }))),
        None => Ok(None),
    })
}

/// Reads nodes' states through a run's pager, keeping the block last looked at (rows
/// come in chain order, so mostly one block after another).
#[derive(Default)]
pub(super) struct BlockStates {
    current: Option<(u32, Option<Arc<blocked::BlockState>>)>,
}

impl BlockStates {
    /// (hop, fraction) of `node`, if it was reached.
    pub(super) fn get(
        &mut self,
        res: &mut blocked::Blocked,
        bits: u32,
        node: u64,
    ) -> Result<Option<(u32, f32)>> {
        let blk = u32::try_from(node >> bits)
            .map_err(|_| Error::BadGraph(format!("node {node} outside the graph")))?;
        if self.current.as_ref().is_none_or(|c| c.0 != blk) {
            self.current = Some((blk, res.block(blk)?));
        }
        let Some((_, Some(st))) = self.current.as_ref() else {
            return Ok(None);
        };
        let local = (node - (u64::from(blk) << bits)) as usize;
        Ok(st
            .hop
            .get(local)
            .filter(|&&h| h != UNREACHED)
            .map(|&h| (h, st.fraction[local])))
    }
}

/// The rows of `batches` of `btc.outputs` (columns `output_id`, `tx_index`, `txid`,
/// `vout`, `address`, `value`) that `hit` (given the output id and its transaction)
/// finds tainted, with their hop and fraction.
pub(super) fn tainted_rows(
    batches: &[RecordBatch],
    mut hit: impl FnMut(u64, u64) -> Result<Option<(u32, f32)>>,
) -> Result<Vec<StoredTainted>> {
    let wrong = || Error::BadGraph("btc.outputs: a column has the wrong type".into());
    let mut rows = Vec::new();
    for b in batches {
        let i64c = |i: usize| {
            b.column(i)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(wrong)
        };
        let (id, tx, value) = (i64c(0)?, i64c(1)?, i64c(5)?);
        let txid = b.column(2).as_string_opt::<i32>().ok_or_else(wrong)?;
        let vout = b
            .column(3)
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(wrong)?;
        let addr = b.column(4).as_string_opt::<i32>().ok_or_else(wrong)?;
        for r in 0..b.num_rows() {
            let o = u64::try_from(id.value(r)).map_err(|_| wrong())?;
            let t = u64::try_from(tx.value(r)).map_err(|_| wrong())?;
            let Some((hop, fraction)) = hit(o, t)? else {
                continue;
            };
            let v = value.value(r).max(0);
            rows.push(StoredTainted {
                output_id: o,
                tx_index: t,
                txid: txid.value(r).to_string(),
                vout: u32::try_from(vout.value(r)).map_err(|_| wrong())?,
                address: (!addr.is_null(r)).then(|| addr.value(r).to_string()),
                value: v,
                hop,
                fraction,
                tainted_value: (decimal(fraction) * v as f64).round() as i64,
            });
        }
    }
    Ok(rows)
}

/// The seed outputs: every output paying one of `addresses` and every output of one of
/// `txids`, found through the Bloom filters of `btc.outputs` (only the row groups whose
/// filter may hold one are read).
pub async fn resolve_seeds(
    wh: &Warehouse,
    m: &Manifest,
    addresses: &[String],
    txids: &[String],
) -> Result<Vec<SeedOutput>> {
    Ok(resolve_seeds_found(wh, m, addresses, txids).await?.0)
}

/// [`resolve_seeds`], also giving the txids found (to report the others).
pub async fn resolve_seeds_found(
    wh: &Warehouse,
    m: &Manifest,
    addresses: &[String],
    txids: &[String],
) -> Result<(Vec<SeedOutput>, HashSet<String>)> {
    let mut out = Vec::new();
    let mut found = HashSet::new();
    if addresses.is_empty() && txids.is_empty() {
        return Ok((out, found));
    }
    let addr_set: HashSet<&str> = addresses.iter().map(String::as_str).collect();
    let txid_set: HashSet<&str> = txids.iter().map(String::as_str).collect();
    let mut files: Vec<_> = m.files_of("outputs").collect();
    files.sort_by_key(|f| f.first_height);
    for f in files {
        let meta = wh.parquet_metadata(&f.path).await.map_err(wh_err)?;
        let all: Vec<usize> = (0..meta.num_row_groups()).collect();
        let mut rgs = Vec::new();
        if !addresses.is_empty() {
            let a: Vec<&str> = addr_set.iter().copied().collect();
            rgs.extend(
                wh.bloom_candidates(&f.path, "address", &all, &a)
                    .await
                    .map_err(wh_err)?,
            );
        }
        if !txids.is_empty() {
            let t: Vec<&str> = txid_set.iter().copied().collect();
            rgs.extend(
                wh.bloom_candidates(&f.path, "txid", &all, &t)
                    .await
                    .map_err(wh_err)?,
            );
        }
        rgs.sort_unstable();
        rgs.dedup();
        if rgs.is_empty() {
            continue;
        }
        // One row group at a time: a file of a large commit holds millions of outputs.
        let meta = wh.reader_metadata(&f.path).await.map_err(wh_err)?;
        for rg in rgs {
            for b in wh
                .read_row_groups_with(
                    &f.path,
                    &meta,
                    &["output_id", "tx_index", "value", "address", "txid"],
                    vec![rg],
                )
                .await
                .map_err(wh_err)?
            {
                let wrong = || bad(&f.path, "a column has the wrong type");
                let id = b
                    .column(0)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(wrong)?;
                let tx = b
                    .column(1)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(wrong)?;
                let value = b
                    .column(2)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(wrong)?;
                let addr = b.column(3).as_string_opt::<i32>().ok_or_else(wrong)?;
                let txid = b.column(4).as_string_opt::<i32>().ok_or_else(wrong)?;
                for r in 0..b.num_rows() {
                    let by_txid = txid_set.contains(txid.value(r));
                    if by_txid {
                        found.insert(txid.value(r).to_string());
                    }
                    if by_txid || (!addr.is_null(r) && addr_set.contains(addr.value(r))) {
                        out.push(SeedOutput {
                            output_id: u64::try_from(id.value(r)).map_err(|_| wrong())?,
                            tx_index: u64::try_from(tx.value(r)).map_err(|_| wrong())?,
                            value: value.value(r),
                        });
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok((out, found))
}

/// The `address_id`s of `addresses` (those on the chain), found through the Bloom
/// filters of `btc.addresses`: no map of every address.
pub async fn lookup_address_ids(
    wh: &Warehouse,
    m: &Manifest,
    addresses: &[&str],
) -> Result<std::collections::HashMap<String, u64>> {
    let mut out = std::collections::HashMap::new();
    if addresses.is_empty() {
        return Ok(out);
    }
    let wanted: HashSet<&str> = addresses.iter().copied().collect();
    let list: Vec<&str> = wanted.iter().copied().collect();
    for f in m.files_of("addresses") {
        let meta = wh.parquet_metadata(&f.path).await.map_err(wh_err)?;
        let all: Vec<usize> = (0..meta.num_row_groups()).collect();
        let rgs = wh
            .bloom_candidates(&f.path, "address", &all, &list)
            .await
            .map_err(wh_err)?;
        if rgs.is_empty() {
            continue;
        }
        let meta = wh.reader_metadata(&f.path).await.map_err(wh_err)?;
        for rg in rgs {
            for b in wh
                .read_row_groups_with(&f.path, &meta, &["address", "address_id"], vec![rg])
                .await
                .map_err(wh_err)?
            {
                let wrong = || bad(&f.path, "a column has the wrong type");
                let a = b.column(0).as_string_opt::<i32>().ok_or_else(wrong)?;
                let id = b
                    .column(1)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(wrong)?;
                for r in 0..b.num_rows() {
                    if wanted.contains(a.value(r)) {
                        let id = u64::try_from(id.value(r)).map_err(|_| wrong())?;
                        out.insert(a.value(r).to_string(), id);
                    }
                }
            }
        }
    }
    Ok(out)
}
