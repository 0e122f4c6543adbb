//! `ferret cluster btc --mem-mb N`: clustering out of core on the committed tables.
//!
//! The same clusters, links, holds and CoinJoins as [`super::cluster_btc`] (tested row for
//! row), without the address map or the link graph in memory:
//!
//! 1. one pass over the transactions in chain order ([`crate::txstream`]) runs the
//!    CoinJoin detectors and the guards; the union-find is a paged forest (parent, size
//!    and smallest member per address id, 12 bytes each) whose pages beyond the budget
//!    live in a scratch file; admitted links go to a scratch file as they are found;
//! 2. `btc.addresses`, read in id order, gives each address its cluster (the smallest
//!    address id of its tree) and size, written into the `clusters` run file, and leaves
//!    an on-disk dictionary id → address;
//! 3. the links are read back and written with both addresses and their final cluster.
//!
//! Held beyond the budget: the label sets of labelled clusters, the detected CoinJoins
//! and held transactions (one row each), one row group of each table, and the Parquet
//! writers' row-group buffers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use ferret_schemas::results::{
    cluster_holds_schema, cluster_links_schema, clusters_schema, coinjoins_schema,
};
use ferret_schemas::{Chain, Warehouse};
use tokio::runtime::Handle;

use super::guard::{Forest, Guard, Verdict, label_sets};
use super::{ClusterOptions, CoinJoinRow, Hold, HoldReason, HoldRow, LinkRow};
use crate::blocked::Budget;
use crate::coinjoin::TxShape;
use crate::taint::graph::hex_decode;
use crate::taint::stored::{RowGroups, lookup_address_ids};
use crate::txstream::for_each_tx_from;
use crate::{Error, Result};

fn wh_err(e: ferret_schemas::Error) -> Error {
    Error::Warehouse(Box::new(e))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Write {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// Addresses per page of the forest, at most (2^15: 384 KiB pages); a forest has at
/// least 64 pages, or pages of 64 addresses, so that a budget pages a small chain too.
const MAX_PAGE_BITS: u32 = 15;
const MIN_PAGE_BITS: u32 = 6;
/// parent, size, smallest member.
const ENTRY: usize = 12;

struct Page {
    data: Vec<[u32; 3]>,
    dirty: bool,
    tick: u64,
}

/// The union-find of the guards, paged: at most `max_pages` pages in memory, the least
/// recently used written to a scratch file (at a fixed offset per page) and read back on
/// use. Fresh pages start as singletons.
pub(crate) struct PagedForest {
    n: u32,
    page_bits: u32,
    pages: HashMap<u32, Page>,
    lru: std::collections::BTreeMap<u64, u32>,
    tick: u64,
    max_pages: usize,
    file: File,
    path: std::path::PathBuf,
    on_disk: Vec<bool>,
    pub(crate) spilled: u64,
    pub(crate) reloaded: u64,
}

impl PagedForest {
    pub(crate) fn new(n: u32, mem_bytes: usize, dir: &Path) -> Result<Self> {
        let path = dir.join("forest.bin");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err("creating the forest's scratch file", &path, e))?;
        let page_bits = (u64::from(n) / 64)
            .max(1)
            .ilog2()
            .clamp(MIN_PAGE_BITS, MAX_PAGE_BITS);
        let page = 1usize << page_bits;
        let pages = (n as usize).div_ceil(page);
        Ok(Self {
            n,
            page_bits,
            pages: HashMap::new(),
            lru: Default::default(),
            tick: 0,
            max_pages: (mem_bytes / (page * ENTRY)).max(2),
            file,
            path,
            on_disk: vec![false; pages],
            spilled: 0,
            reloaded: 0,
        })
    }

    fn page(&mut self, x: u32) -> Result<&mut [u32; 3]> {
        if x >= self.n {
            return Err(Error::BadGraph(format!(
                "address id {x} beyond the {} addresses of btc.addresses",
                self.n
            )));
        }
        let p = x >> self.page_bits;
        let page = 1usize << self.page_bits;
        self.tick += 1;
        let tick = self.tick;
        if !self.pages.contains_key(&p) {
            if self.pages.len() >= self.max_pages {
                self.evict()?;
            }
            let data = if self.on_disk[p as usize] {
                let mut raw = vec![0u8; page * ENTRY];
                self.file
                    .read_exact_at(&mut raw, p as u64 * (page * ENTRY) as u64)
                    .map_err(|e| io_err("reading a forest page", &self.path, e))?;
                self.reloaded += 1;
                raw.chunks_exact(ENTRY)
                    .map(|c| {
                        let w = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                        [w(0), w(4), w(8)]
                    })
                    .collect()
            } else {
                let base = p << self.page_bits;
                (0..page as u32).map(|i| [base + i, 1, base + i]).collect()
            };
            self.pages.insert(
                p,
                Page {
                    data,
                    dirty: false,
                    tick,
                },
            );
        } else if let Some(pg) = self.pages.get(&p) {
            self.lru.remove(&pg.tick);
        }
        self.lru.insert(tick, p);
        let pg = self.pages.get_mut(&p).expect("made resident above");
        pg.tick = tick;
        Ok(&mut pg.data[(x as usize) & (page - 1)])
    }

    fn evict(&mut self) -> Result<()> {
        let Some((_, p)) = self.lru.pop_first() else {
            return Ok(());
        };
        let Some(pg) = self.pages.remove(&p) else {
            return Ok(());
        };
        if pg.dirty {
            let page = 1usize << self.page_bits;
            let mut raw = Vec::with_capacity(page * ENTRY);
            for e in &pg.data {
                for w in e {
                    raw.extend_from_slice(&w.to_le_bytes());
                }
            }
            self.file
                .write_all_at(&raw, p as u64 * (page * ENTRY) as u64)
                .map_err(|e| io_err("writing a forest page", &self.path, e))?;
            self.on_disk[p as usize] = true;
            self.spilled += 1;
        }
        Ok(())
    }

    fn set(&mut self, x: u32, v: [u32; 3]) -> Result<()> {
        self.update(x, |e| *e = v)
    }

    fn get(&mut self, x: u32) -> Result<[u32; 3]> {
        Ok(*self.page(x)?)
    }

    fn update(&mut self, x: u32, f: impl FnOnce(&mut [u32; 3])) -> Result<()> {
        f(self.page(x)?);
        let p = x >> self.page_bits;
        if let Some(pg) = self.pages.get_mut(&p) {
            pg.dirty = true;
        }
        Ok(())
    }

    /// The smallest address id in `x`'s cluster, and the cluster's size.
    pub(crate) fn cluster_of(&mut self, x: u32) -> Result<(u32, u32)> {
        let r = self.find(x)?;
        let e = self.get(r)?;
        Ok((e[2], e[1]))
    }
}

impl Forest for PagedForest {
    fn parent(&mut self, x: u32) -> Result<u32> {
        Ok(self.get(x)?[0])
    }
    fn set_parent(&mut self, x: u32, p: u32) -> Result<()> {
        self.update(x, |e| e[0] = p)
    }
    fn size(&mut self, x: u32) -> Result<u32> {
        Ok(self.get(x)?[1])
    }
    fn set_size(&mut self, x: u32, s: u32) -> Result<()> {
        self.update(x, |e| e[1] = s)
    }
    fn min(&mut self, x: u32) -> Result<u32> {
        Ok(self.get(x)?[2])
    }
    fn joined(&mut self, big: u32, small: u32) -> Result<()> {
        let m = self.get(small)?[2];
        self.update(big, |e| e[2] = e[2].min(m))
    }
}

/// What a stored clustering wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredClusters {
    pub run_id: String,
    pub addresses: u64,
    pub clusters: u64,
    pub largest: u64,
    pub linked_transactions: u64,
    pub coinjoins_skipped: u64,
    pub links: u64,
    /// The run's summary lines (CoinJoins per protocol, held merges).
    pub summary: String,
    /// The run continued the last one from this transaction (None: from the first).
    pub continued_from: Option<u64>,
    /// Forest pages written to scratch and read back.
    pub pages_spilled: u64,
    pub pages_reloaded: u64,
}

/// One admitted link in the scratch file: address ids, height, txid.
const LINK: usize = 4 + 4 + 8 + 32;

/// Rows per batch written to a run file.
const BATCH: usize = 64 * 1024;

/// The caller's parameters with the run's incremental state beside them.
fn params_with_state(
    params: serde_json::Value,
    state: super::incremental::State,
) -> serde_json::Value {
    let mut obj = match params {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Null => serde_json::Map::new(),
        other => {
            let mut o = serde_json::Map::new();
            o.insert("params".into(), other);
            o
        }
    };
    obj.insert(
        super::incremental::KEY.into(),
        serde_json::to_value(state).unwrap_or(serde_json::Value::Null),
    );
    serde_json::Value::Object(obj)
}

fn to_u32(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge(format!("{what} {v} beyond u32")))
}

/// Clusters the committed chain within `budget` and writes the `coinjoins`,
/// `cluster_links`, `cluster_holds` and `clusters` tables as one run (what
/// [`super::write_btc_clusters`] writes for the in-memory run). Call from a blocking
/// thread inside a tokio runtime.
///
/// With `incremental`, a run continues the last stored run where it stopped when that
/// is exact (see [`super::incremental`]): only the new transactions are read.
pub fn cluster_btc_stored(
    wh: &Warehouse,
    opts: &ClusterOptions,
    budget: &Budget,
    params: serde_json::Value,
    incremental: bool,
) -> Result<StoredClusters> {
    run(wh, opts, budget, Target::Run(params), incremental)
}

/// The `clusters` rows of a stored clustering (`run_id` `sql`), given to `on_batch` as
/// they are made, nothing written: what the SQL function `clusters()` streams.
pub fn stored_cluster_rows(
    wh: &Warehouse,
    opts: &ClusterOptions,
    budget: &Budget,
    on_batch: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<StoredClusters> {
    run(wh, opts, budget, Target::Rows(on_batch), false)
}

/// Where a stored clustering goes.
enum Target<'a> {
    /// A run of the four tables, with these parameters.
    Run(serde_json::Value),
    /// Only the `clusters` rows, to a caller.
    Rows(&'a mut dyn FnMut(RecordBatch) -> Result<()>),
}

fn run(
    wh: &Warehouse,
    opts: &ClusterOptions,
    budget: &Budget,
    mut target: Target<'_>,
    incremental: bool,
) -> Result<StoredClusters> {
    let rt = Handle::current();
    let m = rt
        .block_on(wh.load_manifest(Chain::Btc))
        .map_err(wh_err)?
        .ok_or(Error::NothingIndexed { chain: "btc" })?;
    let n = to_u32(m.next_address_id, "address count")?;
    let labels = rt.block_on(crate::taint::job::btc_labels(wh))?;
    let labels_run = rt
        .block_on(wh.latest_run("labels"))
        .map_err(wh_err)?
        .map(|r| r.run_id);
    let options = format!("{opts:?}");
    let prior = if incremental {
        rt.block_on(super::incremental::previous(wh, &m, &labels_run, &options))?
    } else {
        None
    };
    let scratch = tempfile::Builder::new()
        .prefix("cluster-")
        .tempdir_in(&budget.scratch)
        .map_err(|e| io_err("making a scratch directory", &budget.scratch, e))?;
    let mut forest = PagedForest::new(n, budget.mem_bytes, scratch.path())?;
    // Continuing: the stored partition is the forest (each address's cluster id its root).
    if let Some((state, runs)) = &prior {
        let mut next = 0u64;
        super::incremental::each_row_group(
            wh,
            &runs[0],
            &["address_id", "cluster_id", "cluster_size"],
            |b| {
                let wrong = || Error::BadGraph("clusters: a column has the wrong type".into());
                let (id, c, size) = (
                    b.column(0)
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(wrong)?,
                    b.column(1)
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(wrong)?,
                    b.column(2)
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(wrong)?,
                );
                for r in 0..b.num_rows() {
                    if id.value(r) != next as i64 || c.value(r) > id.value(r) {
                        return Err(Error::BadGraph(format!(
                            "the stored clusters run is not dense at address {next}"
                        )));
                    }
                    let x = to_u32(next, "address id")?;
                    let root = to_u32(c.value(r) as u64, "cluster id")?;
                    let size = to_u32(size.value(r).max(1) as u64, "cluster size")?;
                    forest.set(x, [root, size, root])?;
                    next += 1;
                }
                Ok(())
            },
        )?;
        if next != state.next_address_id {
            return Err(Error::BadGraph(format!(
                "the stored clusters run holds {next} addresses, its state says {}",
                state.next_address_id
            )));
        }
    }
    let sets = if opts.label_guard && !labels.is_empty() {
        let names: Vec<&str> = labels.iter().map(|l| l.0.as_str()).collect();
        let ids = rt.block_on(lookup_address_ids(wh, &m, &names))?;
        let per_address = label_sets(&labels, |a| ids.get(a).and_then(|&i| u32::try_from(i).ok()));
        // Each cluster's labels on its root.
        let mut by_id: Vec<_> = per_address.into_iter().collect();
        by_id.sort_unstable_by_key(|x| x.0);
        let mut sets: HashMap<u32, super::guard::LabelSet> = HashMap::new();
        for (id, set) in by_id {
            let root = forest.find(id)?;
            sets.entry(root).or_default().absorb(set);
        }
        sets
    } else {
        HashMap::new()
    };
    let mut guard = Guard::new(forest, sets, opts);
    let from_tx = prior.as_ref().map_or(0, |p| p.0.next_tx_index);
    let links_path = scratch.path().join("links.bin");
    let mut links =
        BufWriter::new(File::create(&links_path).map_err(|e| io_err("creating", &links_path, e))?);
    let mut link_count = 0u64;
    let mut coinjoins: Vec<CoinJoinRow> = Vec::new();
    let mut holds: Vec<(String, i64, Hold)> = Vec::new();
    let (mut linked, mut skipped) = prior
        .as_ref()
        .map_or((0, 0), |p| (p.0.linked_transactions, p.0.coinjoins_skipped));
    let mut members: Vec<u32> = Vec::new();
    let (mut values, mut out_values, mut nulldata) = (Vec::new(), Vec::new(), Vec::new());
    let mut link_err: Option<Error> = None;
    rt.block_on(for_each_tx_from(
        wh,
        &m,
        from_tx,
        true,
        "clustering",
        |tx| {
            // Transactions without inputs (coinbases) link nothing and are no CoinJoin.
            if tx.inputs.is_empty() {
                return Ok(());
            }
            members.clear();
            values.clear();
            let mut addressless = 0;
            for i in &tx.inputs {
                values.push(i.value);
                match i.address_id {
                    Some(a) => members.push(to_u32(a, "address id")?),
                    None => addressless += 1,
                }
            }
            members.sort_unstable();
            members.dedup();
            out_values.clear();
            out_values.extend(tx.outputs.iter().map(|o| o.value));
            nulldata.clear();
            nulldata.extend(tx.outputs.iter().map(|o| o.nulldata));
            let shape = TxShape {
                input_values: &values,
                distinct_input_addresses: members.len() + addressless,
                output_values: &out_values,
                output_nulldata: &nulldata,
            };
            let txid_hex = tx.txid.as_deref().ok_or_else(|| {
                Error::BadGraph(format!("transaction {} without a txid", tx.tx_index))
            })?;
            let mut txid = [0u8; 32];
            hex_decode(txid_hex, &mut txid).map_err(|e| {
                Error::BadGraph(format!("btc.outputs: tx_index {}: {e}", tx.tx_index))
            })?;
            let tx_index = i64::try_from(tx.tx_index).unwrap_or(i64::MAX);
            let mut mix = false;
            if out_values.len() >= 2
                && let Some(d) = opts.detectors.detect(&shape)
            {
                mix = d.protocol.is_mix();
                coinjoins.push(CoinJoinRow {
                    txid,
                    height: tx.height,
                    tx_index,
                    inputs: u32::try_from(values.len()).unwrap_or(u32::MAX),
                    outputs: u32::try_from(out_values.len()).unwrap_or(u32::MAX),
                    detection: d,
                });
            }
            if members.len() < 2 {
                return Ok(());
            }
            if mix {
                skipped += 1;
                return Ok(());
            }
            match guard.offer(&members)? {
                Verdict::Hold(h) => holds.push((txid_hex.to_string(), tx.height, h)),
                Verdict::Admit => {
                    linked += 1;
                    for &b in &members[1..] {
                        let mut rec = [0u8; LINK];
                        rec[0..4].copy_from_slice(&members[0].to_le_bytes());
                        rec[4..8].copy_from_slice(&b.to_le_bytes());
                        rec[8..16].copy_from_slice(&tx.height.to_le_bytes());
                        rec[16..48].copy_from_slice(&txid);
                        if let Err(e) = links.write_all(&rec) {
                            link_err.get_or_insert(io_err("writing", &links_path, e));
                        }
                        link_count += 1;
                    }
                }
            }
            Ok(())
        },
    ))?;
    if let Some(e) = link_err {
        return Err(e);
    }
    links
        .flush()
        .map_err(|e| io_err("writing", &links_path, e))?;
    drop(links);
    let mut forest = guard.uf;

    let run_id = match target {
        Target::Run(_) => ferret_schemas::results::new_run_id(),
        Target::Rows(_) => "sql".to_string(),
    };
    let evidence = matches!(target, Target::Run(_));
    // 2. The clusters, address by address in id order, and the id → address dictionary.
    let dict_idx = scratch.path().join("addresses.idx");
    let dict_blob = scratch.path().join("addresses.blob");
    let mut idx =
        BufWriter::new(File::create(&dict_idx).map_err(|e| io_err("creating", &dict_idx, e))?);
    let mut blob =
        BufWriter::new(File::create(&dict_blob).map_err(|e| io_err("creating", &dict_blob, e))?);
    let mut blob_len = 0u64;
    let mut clusters_w = match target {
        Target::Run(_) => Some(
            wh.run_writer("clusters", &run_id, clusters_schema())
                .map_err(wh_err)?,
        ),
        Target::Rows(_) => None,
    };
    let groups = rt.block_on(RowGroups::open(wh, &m, "addresses", &["address_id"]))?;
    let mut order: Vec<usize> = (0..groups.groups.len()).collect();
    order.sort_by_key(|&g| groups.groups[g].2[0].0);
    let (mut next, mut count, mut largest) = (0u32, 0u64, 0u64);
    let mut pending: (Vec<String>, Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
    let flush = |p: &mut (Vec<String>, Vec<i64>, Vec<i64>, Vec<i64>),
                 w: &mut Option<ferret_schemas::warehouse::RunWriter>,
                 t: &mut Target<'_>|
     -> Result<()> {
        if p.0.is_empty() {
            return Ok(());
        }
        let k = p.0.len();
        let batch = RecordBatch::try_new(
            clusters_schema(),
            vec![
                std::sync::Arc::new(StringArray::from_iter_values(std::iter::repeat_n("btc", k))),
                std::sync::Arc::new(StringArray::from_iter_values(p.0.iter())),
                std::sync::Arc::new(Int64Array::from(std::mem::take(&mut p.1))),
                std::sync::Arc::new(Int64Array::from(std::mem::take(&mut p.2))),
                std::sync::Arc::new(Int64Array::from(std::mem::take(&mut p.3))),
                std::sync::Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    run_id.as_str(),
                    k,
                ))),
            ],
        )
        .map_err(|e| Error::Write {
            path: "clusters".into(),
            reason: e.to_string(),
        })?;
        p.0.clear();
        match (w, t) {
            (Some(w), _) => Handle::current().block_on(w.write(&batch)).map_err(wh_err),
            (None, Target::Rows(f)) => f(batch),
            (None, Target::Run(_)) => unreachable!("a run has its writer"),
        }
    };
    for g in order {
        for b in rt.block_on(groups.read(wh, &[g], &["address", "address_id"]))? {
            let wrong = || Error::BadGraph("btc.addresses: a column has the wrong type".into());
            let a = b.column(0).as_string_opt::<i32>().ok_or_else(wrong)?;
            let id = b
                .column(1)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(wrong)?;
            for r in 0..b.num_rows() {
                if id.value(r) != i64::from(next) {
                    return Err(Error::BadGraph(format!(
                        "btc.addresses: address_id {} where {next} was expected (ids must be dense)",
                        id.value(r)
                    )));
                }
                let (c, size) = forest.cluster_of(next)?;
                if c == next {
                    count += 1;
                }
                largest = largest.max(u64::from(size));
                let s = a.value(r);
                if evidence {
                    blob.write_all(s.as_bytes())
                        .map_err(|e| io_err("writing", &dict_blob, e))?;
                    blob_len += s.len() as u64;
                    idx.write_all(&blob_len.to_le_bytes())
                        .map_err(|e| io_err("writing", &dict_idx, e))?;
                }
                pending.0.push(s.to_string());
                pending.1.push(i64::from(next));
                pending.2.push(i64::from(c));
                pending.3.push(i64::from(size));
                if pending.0.len() >= BATCH {
                    flush(&mut pending, &mut clusters_w, &mut target)?;
                }
                next += 1;
            }
        }
    }
    flush(&mut pending, &mut clusters_w, &mut target)?;
    if next != n {
        return Err(Error::BadGraph(format!(
            "btc.addresses holds {next} addresses, the manifest {n}"
        )));
    }
    idx.flush().map_err(|e| io_err("writing", &dict_idx, e))?;
    blob.flush().map_err(|e| io_err("writing", &dict_blob, e))?;
    drop((idx, blob));
    let held = |r: HoldReason| holds.iter().filter(|h| h.2.reason == r).count();
    let mut out = StoredClusters {
        run_id: run_id.clone(),
        addresses: u64::from(n),
        clusters: count,
        largest,
        linked_transactions: linked,
        coinjoins_skipped: skipped,
        links: prior.as_ref().map_or(0, |p| p.0.links) + link_count,
        continued_from: prior.as_ref().map(|p| p.0.next_tx_index),
        summary: super::summary_of(
            &coinjoins,
            held(HoldReason::LabelConflict),
            held(HoldReason::Collapse),
        ),
        pages_spilled: forest.spilled,
        pages_reloaded: forest.reloaded,
    };
    let (Some(clusters_w), Target::Run(params)) = (clusters_w, target) else {
        return Ok(out);
    };
    let clusters_file = rt.block_on(clusters_w.finish()).map_err(wh_err)?;
    let state = super::incremental::State {
        rules: super::incremental::RULES,
        next_tx_index: m.next_tx_index,
        next_address_id: m.next_address_id,
        tip_height: m.tip.as_ref().map_or(0, |t| t.height),
        tip_hash: m.tip.as_ref().map_or_else(String::new, |t| t.hash.clone()),
        labels_run,
        options,
        linked_transactions: linked,
        coinjoins_skipped: skipped,
        links: out.links,
    };

    // 3. The links, with both addresses and the final cluster.
    let idx = File::open(&dict_idx).map_err(|e| io_err("opening", &dict_idx, e))?;
    let blob = File::open(&dict_blob).map_err(|e| io_err("opening", &dict_blob, e))?;
    let address = |id: u32| -> Result<String> {
        let mut ends = [0u8; 16];
        let (start, end) = if id == 0 {
            idx.read_exact_at(&mut ends[8..], 0)
                .map_err(|e| io_err("reading", &dict_idx, e))?;
            (
                0,
                u64::from_le_bytes(ends[8..].try_into().expect("8 bytes")),
            )
        } else {
            idx.read_exact_at(&mut ends, (u64::from(id) - 1) * 8)
                .map_err(|e| io_err("reading", &dict_idx, e))?;
            (
                u64::from_le_bytes(ends[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(ends[8..].try_into().expect("8 bytes")),
            )
        };
        let mut s = vec![0u8; usize::try_from(end.saturating_sub(start)).unwrap_or(0)];
        blob.read_exact_at(&mut s, start)
            .map_err(|e| io_err("reading", &dict_blob, e))?;
        String::from_utf8(s).map_err(|_| Error::BadGraph(format!("address {id} is not UTF-8")))
    };
    let mut links_w = wh
        .run_writer("cluster_links", &run_id, cluster_links_schema())
        .map_err(wh_err)?;
    let mut reader =
        BufReader::new(File::open(&links_path).map_err(|e| io_err("opening", &links_path, e))?);
    let mut rows: Vec<(String, String, String, i64, i64)> =
        Vec::with_capacity(BATCH.min(link_count as usize));
    let write_links = |rows: &mut Vec<(String, String, String, i64, i64)>,
                       w: &mut ferret_schemas::warehouse::RunWriter|
     -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let view: Vec<LinkRow<'_>> = rows
            .iter()
            .map(|r| (r.0.as_str(), r.1.as_str(), r.2.clone(), r.3, r.4))
            .collect();
        let batch = super::links_batch(&view, &run_id)?;
        rows.clear();
        Handle::current().block_on(w.write(&batch)).map_err(wh_err)
    };
    // The last run's links first (they came first in the chain), with today's clusters:
    // a link row's cluster id is one of its cluster's addresses.
    if let Some((_, runs)) = &prior {
        let cols: Vec<String> = cluster_links_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
        super::incremental::each_row_group(wh, &runs[2], &cols, |b| {
            let mut remap = |c: i64| -> Result<i64> {
                Ok(i64::from(
                    forest.cluster_of(to_u32(c.max(0) as u64, "cluster id")?)?.0,
                ))
            };
            let b = super::incremental::rewrite(&b, &run_id, Some(&mut remap))?;
            Handle::current()
                .block_on(links_w.write(&b))
                .map_err(wh_err)
        })?;
    }
    let mut rec = [0u8; LINK];
    for _ in 0..link_count {
        reader
            .read_exact(&mut rec)
            .map_err(|e| io_err("reading", &links_path, e))?;
        let a = u32::from_le_bytes(rec[0..4].try_into().expect("4 bytes"));
        let b = u32::from_le_bytes(rec[4..8].try_into().expect("4 bytes"));
        let height = i64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
        let txid: [u8; 32] = rec[16..48].try_into().expect("32 bytes");
        let (c, _) = forest.cluster_of(a)?;
        rows.push((
            address(a)?,
            address(b)?,
            crate::taint::graph::hex_encode(&txid),
            height,
            i64::from(c),
        ));
        if rows.len() >= BATCH {
            write_links(&mut rows, &mut links_w)?;
        }
    }
    write_links(&mut rows, &mut links_w)?;
    let links_file = rt.block_on(links_w.finish()).map_err(wh_err)?;

    // The CoinJoins and holds (one row each, held in memory), the last run's first.
    let mut cj_w = wh
        .run_writer("coinjoins", &run_id, coinjoins_schema())
        .map_err(wh_err)?;
    let mut holds_w = wh
        .run_writer("cluster_holds", &run_id, cluster_holds_schema())
        .map_err(wh_err)?;
    let mut per: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut conflicts, mut collapses) = (0usize, 0usize);
    if let Some((_, runs)) = &prior {
        for (run, w, schema) in [
            (&runs[1], &mut cj_w, coinjoins_schema()),
            (&runs[3], &mut holds_w, cluster_holds_schema()),
        ] {
            let cols: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
            super::incremental::each_row_group(wh, run, &cols, |b| {
                let text = |name: &str| {
                    b.column_by_name(name)
                        .and_then(|c| c.as_string_opt::<i32>())
                        .map(|c| {
                            (0..b.num_rows())
                                .map(|i| c.value(i).to_string())
                                .collect::<Vec<_>>()
                        })
                };
                if let Some(p) = text("protocol") {
                    for x in p {
                        *per.entry(x).or_default() += 1;
                    }
                }
                if let Some(r) = text("reason") {
                    for x in r {
                        match x.as_str() {
                            "label_conflict" => conflicts += 1,
                            "collapse" => collapses += 1,
                            _ => {}
                        }
                    }
                }
                let b = super::incremental::rewrite(&b, &run_id, None)?;
                Handle::current().block_on(w.write(&b)).map_err(wh_err)
            })?;
        }
    }
    for c in &coinjoins {
        *per.entry(c.detection.protocol.name().to_string())
            .or_default() += 1;
    }
    for h in &holds {
        match h.2.reason {
            HoldReason::LabelConflict => conflicts += 1,
            HoldReason::Collapse => collapses += 1,
        }
    }
    out.summary = super::summary_counts(&per, conflicts, collapses);
    for chunk in coinjoins.chunks(BATCH) {
        let batch = super::coinjoins_batch(chunk, &run_id)?;
        rt.block_on(cj_w.write(&batch)).map_err(wh_err)?;
    }
    if coinjoins.is_empty() {
        let batch = super::coinjoins_batch(&[], &run_id)?;
        rt.block_on(cj_w.write(&batch)).map_err(wh_err)?;
    }
    let cj_file = rt.block_on(cj_w.finish()).map_err(wh_err)?;
    let hold_rows: Vec<HoldRow<'_>> = holds.iter().map(|(t, h, x)| (t.clone(), *h, x)).collect();
    let batch = super::holds_batch(&hold_rows, &run_id)?;
    rt.block_on(holds_w.write(&batch)).map_err(wh_err)?;
    let holds_file = rt.block_on(holds_w.finish()).map_err(wh_err)?;

    // One commit for the four tables, as the in-memory run.
    rt.block_on(wh.commit_run_files(
        &run_id,
        vec![
            ("coinjoins".into(), cj_file),
            ("cluster_links".into(), links_file),
            ("cluster_holds".into(), holds_file),
            ("clusters".into(), clusters_file),
        ],
        Some(params_with_state(params, state)),
    ))
    .map_err(wh_err)?;
    out.pages_spilled = forest.spilled;
    out.pages_reloaded = forest.reloaded;
    tracing::info!(
        addresses = out.addresses,
        clusters = out.clusters,
        links = out.links,
        coinjoins_skipped = out.coinjoins_skipped,
        held = holds.len(),
        pages_spilled = out.pages_spilled,
        "clustered out of core"
    );
    Ok(out)
}
