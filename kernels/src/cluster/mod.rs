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
use crate::device::Backend;
use crate::{Error, Result};

/// BlockSci's CoinJoin heuristic, with its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoinJoinRule {
    /// Turn the rule off (every multi-input transaction links its inputs).
    pub enabled: bool,
    pub min_inputs: usize,
    pub min_outputs: usize,
    /// Output values that never count as the equal CoinJoin denomination.
    pub ignored_values: Vec<i64>,
}

impl Default for CoinJoinRule {
    fn default() -> Self {
        Self {
            enabled: true,
            min_inputs: 2,
            min_outputs: 3,
            ignored_values: vec![546, 2730],
        }
    }
}

impl CoinJoinRule {
    /// Whether a transaction looks like a CoinJoin: ≥ 2 inputs, ≥ 3 outputs,
    /// p = (outputs + 1) / 2 ≤ inputs and ≤ distinct input addresses, and the most common
    /// output value (dust values ignored) appears exactly p times. Inputs without an
    /// address (bare multisig, non-standard) count as distinct addresses.
    pub fn is_coinjoin(
        &self,
        inputs: usize,
        distinct_input_addresses: usize,
        output_values: &[i64],
    ) -> bool {
        if !self.enabled || inputs < self.min_inputs || output_values.len() < self.min_outputs {
            return false;
        }
        let p = output_values.len().div_ceil(2);
        if p > inputs || p > distinct_input_addresses {
            return false;
        }
        let mut counts: HashMap<i64, usize> = HashMap::new();
        for v in output_values
            .iter()
            .filter(|v| !self.ignored_values.contains(v))
        {
            *counts.entry(*v).or_default() += 1;
        }
        counts.values().copied().max() == Some(p)
    }
}

/// The common-input-ownership graph.
#[derive(Debug, Default)]
pub struct CioGraph {
    /// Addresses by id.
    pub addresses: Vec<String>,
    /// Links between address ids.
    pub edges: Vec<(u32, u32)>,
    /// Transactions skipped as CoinJoins.
    pub coinjoins_skipped: u64,
    /// Multi-address transactions whose inputs were linked.
    pub linked_transactions: u64,
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

/// Builds the graph from the committed Bitcoin tables.
pub async fn build_cio_graph(wh: &Warehouse, rule: &CoinJoinRule) -> Result<CioGraph> {
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
        let mut values: HashMap<i64, Vec<i64>> = HashMap::new();
        for b in wh
            .read_columns(&out_file.path, &["tx_index", "value", "address"])
            .await
            .map_err(store_err)?
        {
            let p = out_file.path.as_str();
            let tx = crate::taint::graph::i64_col(&b, "tx_index", p)?;
            let value = crate::taint::graph::i64_col(&b, "value", p)?;
            let addr = crate::taint::graph::str_col(&b, "address", p)?;
            for r in 0..b.num_rows() {
                values.entry(tx.value(r)).or_default().push(value.value(r));
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
        let mut current: Option<i64> = None;
        let mut members: Vec<u32> = Vec::new();
        let mut input_count = 0usize;
        let flush = |tx: i64, members: &mut Vec<u32>, input_count: usize, g: &mut CioGraph| {
            // Inputs without an address (bare multisig, non-standard) still belong to
            // someone: for the CoinJoin rule each counts as a distinct input address.
            let addressless = input_count - members.len();
            members.sort_unstable();
            members.dedup();
            if members.len() >= 2 {
                let outs = values.get(&tx).map_or(&[][..], Vec::as_slice);
                if rule.is_coinjoin(input_count, members.len() + addressless, outs) {
                    g.coinjoins_skipped += 1;
                } else {
                    g.linked_transactions += 1;
                    g.edges
                        .extend(members[1..].iter().map(|&m| (members[0], m)));
                }
            }
            members.clear();
        };
        for b in wh
            .read_columns(&in_file.path, &["tx_index", "address"])
            .await
            .map_err(store_err)?
        {
            let p = in_file.path.as_str();
            let tx = crate::taint::graph::i64_col(&b, "tx_index", p)?;
            let addr = crate::taint::graph::str_col(&b, "address", p)?;
            for r in 0..b.num_rows() {
                let t = tx.value(r);
                if current != Some(t) {
                    if let Some(prev) = current {
                        flush(prev, &mut members, input_count, &mut g);
                    }
                    current = Some(t);
                    input_count = 0;
                }
                input_count += 1;
                if !addr.is_null(r) {
                    members.push(ids.id(addr.value(r))?);
                }
            }
        }
        if let Some(prev) = current {
            flush(prev, &mut members, input_count, &mut g);
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

/// Builds the graph and labels its components on `backend`.
pub async fn cluster_btc(
    wh: &Warehouse,
    backend: &Backend,
    rule: &CoinJoinRule,
) -> Result<Clusters> {
    let g = build_cio_graph(wh, rule).await?;
    let n = u32::try_from(g.addresses.len())
        .map_err(|_| Error::TooLarge("address ids beyond u32".into()))?;
    let cluster_id = cc::connected_components(backend, n, &g.edges)?;
    let cluster_size = cluster_sizes(&cluster_id);
    tracing::info!(
        addresses = n,
        links = g.edges.len(),
        coinjoins_skipped = g.coinjoins_skipped,
        device = %backend.describe(),
        "clustered"
    );
    Ok(Clusters {
        chain: "btc",
        addresses: g.addresses,
        cluster_id,
        cluster_size,
        coinjoins_skipped: g.coinjoins_skipped,
        linked_transactions: g.linked_transactions,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocksci_coinjoin_rule() {
        let r = CoinJoinRule::default();
        // 3 participants: 3 equal outputs + 2 change, 3 inputs from 3 addresses.
        assert!(r.is_coinjoin(3, 3, &[1000, 1000, 1000, 37, 52]));
        // The same shape paid from 2 addresses only.
        assert!(!r.is_coinjoin(3, 2, &[1000, 1000, 1000, 37, 52]));
        // A payment with change.
        assert!(!r.is_coinjoin(2, 2, &[5000, 1200]));
        // Dust outputs don't make a denomination.
        assert!(!r.is_coinjoin(3, 3, &[546, 546, 546, 10, 20]));
        // Off means off.
        assert!(
            !CoinJoinRule {
                enabled: false,
                ..r
            }
            .is_coinjoin(3, 3, &[1000, 1000, 1000, 37, 52])
        );
    }
}
