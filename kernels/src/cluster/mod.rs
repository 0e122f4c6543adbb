//! Address clustering by common-input ownership: all input addresses of a transaction
//! belong to one entity, except in transactions that look like CoinJoins.
//!
//! Building the graph streams the committed `outputs` and `inputs` files range by range
//! (they share ranges and are sorted by `tx_index`). Memory: the address → id map
//! (~60 bytes plus the address string per address), one range's transactions, and 8
//! bytes per link (a transaction with k distinct input addresses adds k − 1 links).
//! Address ids are dense `u32`s in order of first appearance in an output (or input, for
//! addresses first seen spending from before a pruned start).

use std::collections::HashMap;

use arrow::array::Array;
use ferret_schemas::{Chain, Warehouse};

use crate::cc;
use crate::coinjoin::{Detection, Detectors, TxShape};
use crate::device::Backend;

pub mod accuracy;
pub(crate) mod guard;
pub mod incremental;
pub mod stored;
use crate::{Error, Result};
pub use guard::{Guarded, Hold, HoldReason, guard_links};

/// How clustering decides what to link.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterOptions {
    /// The CoinJoin detectors (every detected mix is left unlinked).
    pub detectors: Detectors,
    /// Hold back a transaction that would merge clusters carrying conflicting labels
    /// (no owner name in common, or an exchange with a scam).
    pub label_guard: bool,
    /// Hold back a transaction that would join two clusters of at least this many
    /// addresses each (cluster collapse, Möser & Narayanan 2022); 0 turns it off.
    pub collapse_min_size: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            detectors: Detectors::default(),
            label_guard: true,
            collapse_min_size: 1_000,
        }
    }
}

/// A transaction spending from two or more addresses: its distinct input address ids
/// are `members[start..end]` of the graph, sorted. A mix is never linked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTx {
    pub tx_index: i64,
    pub height: i64,
    pub txid: [u8; 32],
    pub start: usize,
    pub end: usize,
    /// A detector took it for a CoinJoin.
    pub mix: bool,
}

/// A detected CoinJoin (or Whirlpool tx0).
#[derive(Clone, Debug, PartialEq)]
pub struct CoinJoinRow {
    pub txid: [u8; 32],
    pub height: i64,
    pub tx_index: i64,
    pub inputs: u32,
    pub outputs: u32,
    pub detection: Detection,
}

/// The common-input-ownership graph.
#[derive(Clone, Debug, Default)]
pub struct CioGraph {
    /// Addresses by id.
    pub addresses: Vec<String>,
    /// Transactions spending from two or more addresses, mixes included, in chain order.
    pub txs: Vec<LinkTx>,
    /// Address ids of those transactions (see [`LinkTx`]).
    pub members: Vec<u32>,
    /// Everything the detectors recognised, in chain order.
    pub coinjoins: Vec<CoinJoinRow>,
}

impl CioGraph {
    /// The member address ids of a multi-address transaction.
    pub fn members_of(&self, t: &LinkTx) -> &[u32] {
        &self.members[t.start..t.end]
    }

    /// Multi-address transactions left unlinked as mixes.
    pub fn coinjoins_skipped(&self) -> u64 {
        self.txs.iter().filter(|t| t.mix).count() as u64
    }
}

#[derive(Default)]
struct Ids {
    by_address: HashMap<String, u32>,
    addresses: Vec<String>,
}

impl Ids {
    fn id(&mut self, a: &str) -> Result<u32> {
        if let Some(&id) = self.by_address.get(a) {
            return Ok(id);
        }
        let id = u32::try_from(self.addresses.len())
            .map_err(|_| Error::TooLarge("more than 2^32 addresses: partition the graph".into()))?;
        self.by_address.insert(a.to_string(), id);
        self.addresses.push(a.to_string());
        Ok(id)
    }
}

fn store_err(e: ferret_schemas::Error) -> Error {
    Error::Warehouse(Box::new(e))
}

/// Output values and OP_RETURN flags of one transaction.
#[derive(Default)]
struct TxOutputs {
    values: Vec<i64>,
    nulldata: Vec<bool>,
}

/// The inputs of the transaction being read.
#[derive(Default)]
struct TxInputs {
    tx_index: i64,
    height: i64,
    txid: [u8; 32],
    values: Vec<Option<i64>>,
    members: Vec<u32>,
    /// Inputs without an address (bare multisig, non-standard).
    addressless: usize,
}

/// Builds the graph from the committed Bitcoin tables, running the detectors on every
/// transaction.
pub async fn build_cio_graph(wh: &Warehouse, detectors: &Detectors) -> Result<CioGraph> {
    use crate::taint::graph::{hex_decode, i64_col, str_col};
    let manifest = wh
        .load_manifest(Chain::Btc)
        .await
        .map_err(store_err)?
        .ok_or(Error::NothingIndexed { chain: "btc" })?;
    let mut ids = Ids::default();
    let mut g = CioGraph::default();
    let inputs: Vec<_> = manifest.files_of("inputs").collect();
    for out_file in manifest.files_of("outputs") {
        // Output values per transaction of this range, and first appearances.
        let mut outputs: HashMap<i64, TxOutputs> = HashMap::new();
        for b in wh
            .read_columns(
                &out_file.path,
                &["tx_index", "value", "address", "script_type"],
            )
            .await
            .map_err(store_err)?
        {
            let p = out_file.path.as_str();
            let tx = i64_col(&b, "tx_index", p)?;
            let value = i64_col(&b, "value", p)?;
            let addr = str_col(&b, "address", p)?;
            let kind = str_col(&b, "script_type", p)?;
            for r in 0..b.num_rows() {
                let o = outputs.entry(tx.value(r)).or_default();
                o.values.push(value.value(r));
                o.nulldata.push(kind.value(r) == "nulldata");
                if !addr.is_null(r) {
                    ids.id(addr.value(r))?;
                }
            }
        }
        let Some(in_file) = inputs
            .iter()
            .find(|f| f.first_height == out_file.first_height)
        else {
            continue;
        };
        let mut cur: Option<TxInputs> = None;
        let flush = |t: TxInputs, g: &mut CioGraph| {
            let TxInputs {
                tx_index,
                height,
                txid,
                values,
                mut members,
                addressless,
            } = t;
            members.sort_unstable();
            members.dedup();
            let empty = TxOutputs::default();
            let outs = outputs.get(&tx_index).unwrap_or(&empty);
            let shape = TxShape {
                input_values: &values,
                distinct_input_addresses: members.len() + addressless,
                output_values: &outs.values,
                output_nulldata: &outs.nulldata,
            };
            let mut mix = false;
            if outs.values.len() >= 2
                && let Some(d) = detectors.detect(&shape)
            {
                mix = d.protocol.is_mix();
                g.coinjoins.push(CoinJoinRow {
                    txid,
                    height,
                    tx_index,
                    inputs: u32::try_from(values.len()).unwrap_or(u32::MAX),
                    outputs: u32::try_from(outs.values.len()).unwrap_or(u32::MAX),
                    detection: d,
                });
            }
            if members.len() >= 2 {
                let start = g.members.len();
                g.members.extend_from_slice(&members);
                g.txs.push(LinkTx {
                    tx_index,
                    height,
                    txid,
                    start,
                    end: g.members.len(),
                    mix,
                });
            }
        };
        for b in wh
            .read_columns(
                &in_file.path,
                &["height", "tx_index", "txid", "value", "address"],
            )
            .await
            .map_err(store_err)?
        {
            let p = in_file.path.as_str();
            let height = i64_col(&b, "height", p)?;
            let tx = i64_col(&b, "tx_index", p)?;
            let txid = str_col(&b, "txid", p)?;
            let value = i64_col(&b, "value", p)?;
            let addr = str_col(&b, "address", p)?;
            for r in 0..b.num_rows() {
                let t = tx.value(r);
                if cur.as_ref().is_none_or(|c| c.tx_index != t) {
                    if let Some(prev) = cur.take() {
                        flush(prev, &mut g);
                    }
                    let mut id = [0u8; 32];
                    hex_decode(txid.value(r), &mut id)
                        .map_err(|e| Error::BadGraph(format!("{p}: tx_index {t}: {e}")))?;
                    cur = Some(TxInputs {
                        tx_index: t,
                        height: height.value(r),
                        txid: id,
                        ..Default::default()
                    });
                }
                let Some(c) = cur.as_mut() else {
                    unreachable!("set just above")
                };
                c.values.push((!value.is_null(r)).then(|| value.value(r)));
                if addr.is_null(r) {
                    c.addressless += 1;
                } else {
                    c.members.push(ids.id(addr.value(r))?);
                }
            }
        }
        if let Some(prev) = cur.take() {
            flush(prev, &mut g);
        }
    }
    g.addresses = ids.addresses;
    Ok(g)
}

/// One address's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clusters {
    /// `btc` or `eth`: the table the clusters go to (`clusters`, `eth_clusters`).
    pub chain: &'static str,
    pub addresses: Vec<String>,
    /// Per address id: the smallest address id of its cluster.
    pub cluster_id: Vec<u32>,
    /// Per address id: the number of addresses in its cluster.
    pub cluster_size: Vec<u32>,
    pub coinjoins_skipped: u64,
    pub linked_transactions: u64,
}

/// A Bitcoin clustering run: the clusters and what stands behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct BtcClusters {
    pub clusters: Clusters,
    /// Everything the CoinJoin detectors recognised.
    pub coinjoins: Vec<CoinJoinRow>,
    /// The multi-address transactions (the graph's, in chain order).
    pub txs: Vec<LinkTx>,
    /// Their member address ids (see [`LinkTx`]).
    pub members: Vec<u32>,
    /// Admitted links and held transactions.
    pub guarded: Guarded,
}

/// Builds the graph, runs the guards (labels from the warehouse) and labels the
/// components of the admitted links on `backend`.
pub async fn cluster_btc(
    wh: &Warehouse,
    backend: &Backend,
    opts: &ClusterOptions,
) -> Result<BtcClusters> {
    let labels = crate::taint::job::btc_labels(wh).await?;
    let g = build_cio_graph(wh, &opts.detectors).await?;
    cluster_graph(g, &labels, backend, opts)
}

/// [`cluster_btc`] on a built graph.
pub fn cluster_graph(
    g: CioGraph,
    labels: &[(String, String, String)],
    backend: &Backend,
    opts: &ClusterOptions,
) -> Result<BtcClusters> {
    let guarded = guard_links(&g, labels, opts)?;
    let n = u32::try_from(g.addresses.len())
        .map_err(|_| Error::TooLarge("address ids beyond u32".into()))?;
    let cluster_id = cc::connected_components(backend, n, &guarded.edges)?;
    let cluster_size = cluster_sizes(&cluster_id);
    let coinjoins_skipped = g.coinjoins_skipped();
    tracing::info!(
        addresses = n,
        links = guarded.edges.len(),
        coinjoins_skipped,
        held = guarded.holds.len(),
        device = %backend.describe(),
        "clustered"
    );
    Ok(BtcClusters {
        clusters: Clusters {
            chain: "btc",
            addresses: g.addresses,
            cluster_id,
            cluster_size,
            coinjoins_skipped,
            linked_transactions: guarded.linked_transactions,
        },
        coinjoins: g.coinjoins,
        txs: g.txs,
        members: g.members,
        guarded,
    })
}

/// Per address: the number of addresses sharing its cluster id.
pub(crate) fn cluster_sizes(cluster_id: &[u32]) -> Vec<u32> {
    let mut sizes = vec![0u32; cluster_id.len()];
    for &c in cluster_id {
        sizes[c as usize] += 1;
    }
    cluster_id.iter().map(|&c| sizes[c as usize]).collect()
}

impl Clusters {
    /// The number of clusters (each has one root: the address whose id is its cluster id).
    pub fn count(&self) -> usize {
        self.cluster_id
            .iter()
            .enumerate()
            .filter(|&(i, &id)| id as usize == i)
            .count()
    }
}

/// The stored `clusters` table (its latest run): address → (cluster id, cluster size);
/// empty when no run exists.
pub async fn load_clusters(wh: &Warehouse) -> Result<HashMap<String, (i64, i64)>> {
    load_clusters_of(wh, "clusters").await
}

/// A stored clusters table (`clusters`, `eth_clusters`; its latest run): address →
/// (cluster id, cluster size); empty when no run exists.
pub async fn load_clusters_of(wh: &Warehouse, job: &str) -> Result<HashMap<String, (i64, i64)>> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let mut out = HashMap::new();
    for b in wh.read_latest(job).await.map_err(store_err)? {
        let (Some(addr), Some(id), Some(size)) = (
            b.column_by_name("address")
                .and_then(|c| c.as_string_opt::<i32>()),
            b.column_by_name("cluster_id")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
            b.column_by_name("cluster_size")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
        ) else {
            return Err(Error::BadGraph(
                "the clusters table has unexpected columns".into(),
            ));
        };
        for i in 0..b.num_rows() {
            out.insert(addr.value(i).to_string(), (id.value(i), size.value(i)));
        }
    }
    Ok(out)
}

/// Clusters as rows of the `clusters` table.
pub fn clusters_batch(c: &Clusters, run_id: &str) -> Result<arrow::array::RecordBatch> {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use ferret_schemas::results::clusters_schema;

    let n = c.addresses.len();
    let as_i64 = |v: &[u32]| Int64Array::from_iter_values(v.iter().map(|&x| i64::from(x)));
    RecordBatch::try_new(
        clusters_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                c.chain, n,
            ))),
            Arc::new(StringArray::from_iter_values(c.addresses.iter())),
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            Arc::new(as_i64(&c.cluster_id)),
            Arc::new(as_i64(&c.cluster_size)),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                run_id, n,
            ))),
        ],
    )
    .map_err(|e| Error::Write {
        path: "clusters".into(),
        reason: e.to_string(),
    })
}

/// The results table of a chain's clusters.
pub fn clusters_job(chain: &str) -> &'static str {
    if chain == "btc" {
        "clusters"
    } else {
        "eth_clusters"
    }
}

/// Writes `clusters` as a new run of the chain's clusters table (`clusters`,
/// `eth_clusters`) and points the plain table at it. Returns the run id.
pub async fn write_clusters(wh: &Warehouse, c: &Clusters) -> Result<String> {
    let run_id = ferret_schemas::results::new_run_id();
    let batch = clusters_batch(c, &run_id)?;
    wh.write_run_as(
        clusters_job(c.chain),
        &run_id,
        ferret_schemas::results::clusters_schema(),
        &[batch],
        None,
    )
    .await
    .map_err(store_err)?;
    Ok(run_id)
}

/// One `cluster_links` row: address, linked address, txid, height, cluster id.
pub type LinkRow<'a> = (&'a str, &'a str, String, i64, i64);

/// One `cluster_holds` row: the held transaction's txid and height, and the hold.
pub type HoldRow<'a> = (String, i64, &'a Hold);

fn batch_err(what: &str, e: arrow::error::ArrowError) -> Error {
    Error::Write {
        path: what.into(),
        reason: e.to_string(),
    }
}

fn repeat_str(s: &str, n: usize) -> std::sync::Arc<arrow::array::StringArray> {
    std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
        std::iter::repeat_n(s, n),
    ))
}

fn i32s(v: impl Iterator<Item = u32>) -> arrow::array::Int32Array {
    arrow::array::Int32Array::from_iter_values(v.map(|x| i32::try_from(x).unwrap_or(i32::MAX)))
}

/// Rows of the `coinjoins` table.
pub fn coinjoins_batch(cj: &[CoinJoinRow], run_id: &str) -> Result<arrow::array::RecordBatch> {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
    use ferret_schemas::results::coinjoins_schema;

    use crate::taint::graph::hex_encode;
    let n = cj.len();
    RecordBatch::try_new(
        coinjoins_schema(),
        vec![
            repeat_str("btc", n),
            Arc::new(StringArray::from_iter_values(
                cj.iter().map(|r| hex_encode(&r.txid)),
            )),
            Arc::new(Int64Array::from_iter_values(cj.iter().map(|r| r.height))),
            Arc::new(Int64Array::from_iter_values(cj.iter().map(|r| r.tx_index))),
            Arc::new(StringArray::from_iter_values(
                cj.iter().map(|r| r.detection.protocol.name()),
            )),
            Arc::new(Float64Array::from_iter_values(
                cj.iter().map(|r| r.detection.confidence),
            )),
            Arc::new(BooleanArray::from_iter(
                cj.iter().map(|r| Some(r.detection.protocol.is_mix())),
            )),
            Arc::new(Int64Array::from_iter_values(
                cj.iter().map(|r| r.detection.denomination),
            )),
            Arc::new(i32s(cj.iter().map(|r| r.detection.equal_outputs))),
            Arc::new(i32s(cj.iter().map(|r| r.detection.participants))),
            Arc::new(i32s(cj.iter().map(|r| r.inputs))),
            Arc::new(i32s(cj.iter().map(|r| r.outputs))),
            repeat_str(run_id, n),
        ],
    )
    .map_err(|e| batch_err("coinjoins", e))
}

/// Rows of the `cluster_links` table.
pub fn links_batch(rows: &[LinkRow<'_>], run_id: &str) -> Result<arrow::array::RecordBatch> {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use ferret_schemas::results::cluster_links_schema;
    let n = rows.len();
    RecordBatch::try_new(
        cluster_links_schema(),
        vec![
            repeat_str("btc", n),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.2.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
            repeat_str(run_id, n),
        ],
    )
    .map_err(|e| batch_err("cluster_links", e))
}

/// Rows of the `cluster_holds` table.
pub fn holds_batch(h: &[HoldRow<'_>], run_id: &str) -> Result<arrow::array::RecordBatch> {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use ferret_schemas::results::cluster_holds_schema;
    let n = h.len();
    RecordBatch::try_new(
        cluster_holds_schema(),
        vec![
            repeat_str("btc", n),
            Arc::new(StringArray::from_iter_values(
                h.iter().map(|x| x.0.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(h.iter().map(|x| x.1))),
            Arc::new(StringArray::from_iter_values(
                h.iter().map(|x| x.2.reason.name()),
            )),
            Arc::new(i32s(h.iter().map(|x| x.2.clusters))),
            Arc::new(Int64Array::from_iter_values(
                h.iter()
                    .map(|x| i64::try_from(x.2.largest).unwrap_or(i64::MAX)),
            )),
            Arc::new(Int64Array::from_iter_values(
                h.iter()
                    .map(|x| i64::try_from(x.2.second).unwrap_or(i64::MAX)),
            )),
            Arc::new(StringArray::from_iter_values(
                h.iter().map(|x| x.2.labels.as_str()),
            )),
            repeat_str(run_id, n),
        ],
    )
    .map_err(|e| batch_err("cluster_holds", e))
}

/// The `coinjoins`, `cluster_links` and `cluster_holds` rows of a run.
pub fn evidence_batches(c: &BtcClusters, run_id: &str) -> Result<[arrow::array::RecordBatch; 3]> {
    use crate::taint::graph::hex_encode;

    let coinjoins = coinjoins_batch(&c.coinjoins, run_id)?;
    let g = &c.guarded;
    let addr = |id: u32| c.clusters.addresses[id as usize].as_str();
    let rows: Vec<LinkRow<'_>> = g
        .edges
        .iter()
        .zip(&g.edge_tx)
        .map(|(e, &t)| {
            let tx = &c.txs[t as usize];
            (
                addr(e.0),
                addr(e.1),
                hex_encode(&tx.txid),
                tx.height,
                i64::from(c.clusters.cluster_id[e.0 as usize]),
            )
        })
        .collect();
    let links = links_batch(&rows, run_id)?;
    let holds: Vec<HoldRow<'_>> = g
        .holds
        .iter()
        .map(|x| (hex_encode(&c.txs[x.tx].txid), c.txs[x.tx].height, x))
        .collect();
    let holds = holds_batch(&holds, run_id)?;
    Ok([coinjoins, links, holds])
}

/// Writes a Bitcoin clustering run: `coinjoins`, `cluster_links`, `cluster_holds` and
/// `clusters` under one run id, committed together. Returns the run id.
pub async fn write_btc_clusters(
    wh: &Warehouse,
    c: &BtcClusters,
    params: serde_json::Value,
) -> Result<String> {
    use ferret_schemas::results::{
        cluster_holds_schema, cluster_links_schema, clusters_schema, coinjoins_schema,
    };
    let run_id = ferret_schemas::results::new_run_id();
    let [coinjoins, links, holds] = evidence_batches(c, &run_id)?;
    let clusters = clusters_batch(&c.clusters, &run_id)?;
    // One commit for the four tables: the evidence always belongs to the clusters shown.
    wh.write_runs_as(
        &run_id,
        &[
            ("coinjoins", coinjoins_schema(), &[coinjoins]),
            ("cluster_links", cluster_links_schema(), &[links]),
            ("cluster_holds", cluster_holds_schema(), &[holds]),
            ("clusters", clusters_schema(), &[clusters]),
        ],
        Some(params),
    )
    .await
    .map_err(store_err)?;
    Ok(run_id)
}

/// The path of co-spends joining two addresses in the stored `cluster_links`: each step
/// (address, linked address, txid, height), or `None` when they are not in one cluster.
pub async fn cluster_path(
    wh: &Warehouse,
    from: &str,
    to: &str,
) -> Result<Option<Vec<(String, String, String, i64)>>> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use std::collections::VecDeque;

    let mut adj: HashMap<String, Vec<(String, usize)>> = HashMap::new();
    let mut edges: Vec<(String, i64)> = Vec::new();
    for b in wh.read_latest("cluster_links").await.map_err(store_err)? {
        let col = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| Error::BadGraph(format!("cluster_links: no text column `{name}`")))
        };
        let (a, l, t) = (col("address")?, col("linked_address")?, col("txid")?);
        let h = b
            .column_by_name("height")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| Error::BadGraph("cluster_links: no height column".into()))?;
        for r in 0..b.num_rows() {
            let e = edges.len();
            edges.push((t.value(r).to_string(), h.value(r)));
            adj.entry(a.value(r).to_string())
                .or_default()
                .push((l.value(r).to_string(), e));
            adj.entry(l.value(r).to_string())
                .or_default()
                .push((a.value(r).to_string(), e));
        }
    }
    if from == to {
        return Ok(adj.contains_key(from).then(Vec::new));
    }
    // Breadth-first: the fewest co-spends.
    let mut prev: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(x) = queue.pop_front() {
        if x == to {
            break;
        }
        for (y, e) in adj.get(x).map(Vec::as_slice).unwrap_or(&[]) {
            if y != from && !prev.contains_key(y.as_str()) {
                prev.insert(y.as_str(), (x, *e));
                queue.push_back(y.as_str());
            }
        }
    }
    if !prev.contains_key(to) {
        return Ok(None);
    }
    let mut steps = Vec::new();
    let mut cur = to;
    while cur != from {
        let (p, e) = prev[cur];
        steps.push((
            p.to_string(),
            cur.to_string(),
            edges[e].0.clone(),
            edges[e].1,
        ));
        cur = p;
    }
    steps.reverse();
    Ok(Some(steps))
}

/// What a clustering run found beside the clusters: CoinJoins per protocol and held
/// merges, one line each.
pub fn summary(c: &BtcClusters) -> String {
    let held = |r: HoldReason| c.guarded.holds.iter().filter(|h| h.reason == r).count();
    summary_of(
        &c.coinjoins,
        held(HoldReason::LabelConflict),
        held(HoldReason::Collapse),
    )
}

/// [`summary`] from its parts: the CoinJoins and the counts of held merges.
pub fn summary_of(coinjoins: &[CoinJoinRow], label_conflicts: usize, collapses: usize) -> String {
    let mut per: std::collections::BTreeMap<String, u64> = Default::default();
    for r in coinjoins {
        *per.entry(r.detection.protocol.name().to_string())
            .or_default() += 1;
    }
    summary_counts(&per, label_conflicts, collapses)
}

/// [`summary`] from counts: CoinJoins per protocol, held merges per reason.
pub fn summary_counts(
    per: &std::collections::BTreeMap<String, u64>,
    label_conflicts: usize,
    collapses: usize,
) -> String {
    use std::fmt::Write;
    let total: u64 = per.values().sum();
    let mut out = String::new();
    let list: Vec<String> = per.iter().map(|(p, n)| format!("{p} {n}")).collect();
    let _ = writeln!(
        out,
        "CoinJoins detected: {total} ({}); table coinjoins",
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "merges held for review: {label_conflicts} label conflicts, {collapses} cluster collapses; table cluster_holds"
    );
    out
}
