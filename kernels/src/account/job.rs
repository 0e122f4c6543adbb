//! An Ethereum taint run over the warehouse: the transfer graph of one asset from
//! `eth.transfers`, seeds and stops from addresses and label categories, results as the
//! `eth_taint` and `eth_exits` tables.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{Int32Type, Int64Type};
use ferret_schemas::results::{eth_exits_schema, eth_taint_schema};
use ferret_schemas::{Chain, Warehouse};

use super::{Options, PoolOptions, TransferGraph, UNREACHED, flags, poison, pool};
use crate::device::Backend;
use crate::taint::{Direction, job::chain_labels, job::check_categories};
use crate::{Error, Result};

/// How taint divides on accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountPolicy {
    /// Earliest tainted arrival; every later transfer of a tainted address is tainted.
    Poison,
    /// Each address a pool; a transfer carries the pool's tainted share.
    Haircut,
}

impl std::str::FromStr for AccountPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "poison" => Ok(Self::Poison),
            "haircut" | "pool" => Ok(Self::Haircut),
            other => Err(format!(
                "unknown policy `{other}` for accounts (poison, haircut)"
            )),
        }
    }
}

impl AccountPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poison => "poison",
            Self::Haircut => "haircut",
        }
    }
}

/// What to trace. Default: haircut, forward, ETH, no limits.
#[derive(Clone, Debug)]
pub struct EthTaintJob {
    pub policy: AccountPolicy,
    pub direction: Direction,
    /// `ETH`, a token contract address, or `*` (every asset; poison only).
    pub asset: String,
    pub max_hops: Option<u32>,
    /// In the asset's base unit.
    pub min_value: f64,
    pub seed_addresses: Vec<String>,
    pub seed_categories: Vec<String>,
    pub stop_categories: Vec<String>,
}

impl Default for EthTaintJob {
    fn default() -> Self {
        Self {
            policy: AccountPolicy::Haircut,
            direction: Direction::Forward,
            asset: "ETH".into(),
            max_hops: None,
            min_value: 0.0,
            seed_addresses: Vec::new(),
            seed_categories: Vec::new(),
            stop_categories: Vec::new(),
        }
    }
}

impl EthTaintJob {
    /// The job as recorded with its run.
    pub fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "policy": self.policy.as_str(),
            "direction": match self.direction { Direction::Forward => "forward", Direction::Backward => "backward" },
            "asset": self.asset,
            "max_hops": self.max_hops,
            "min_value": self.min_value,
            "seed_addresses": self.seed_addresses,
            "seed_categories": self.seed_categories,
            "stop_categories": self.stop_categories,
        })
    }
}

/// Transfers of one asset in chain order, with their addresses.
#[derive(Clone, Debug, Default)]
pub struct EthTransfers {
    pub graph: TransferGraph,
    /// Address of each node id.
    pub addresses: Vec<String>,
    pub block: Vec<i64>,
    pub tx_index: Vec<i32>,
    pub tx_hash: Vec<String>,
    /// Amounts as f64 (the graph holds them exactly in `units`, and scaled into f32's
    /// range in `amount` for poison).
    pub value: Vec<f64>,
    /// graph.amount = value · scale.
    pub scale: f64,
}

impl EthTransfers {
    /// Reads `eth.transfers` of `asset` (`*`: all) from the committed files, in chain
    /// order.
    pub async fn load(wh: &Warehouse, asset: &str) -> Result<Self> {
        let wh_err = |e: ferret_schemas::Error| Error::Warehouse(Box::new(e));
        let Some(manifest) = wh.load_manifest(Chain::Eth).await.map_err(wh_err)? else {
            return Err(Error::BadQuery(
                "the warehouse holds no Ethereum data: run `ferret index eth` first".into(),
            ));
        };
        let mut files: Vec<_> = manifest.files_of("transfers").collect();
        files.sort_by_key(|f| f.first_height);
        let mut rows: Vec<(i64, i32, i32, String, String, String, super::frac::U256)> = Vec::new();
        for f in files {
            let batches = wh
                .read_columns(&f.path, &TRANSFER_COLUMNS)
                .await
                .map_err(wh_err)?;
            for_each_transfer(&batches, &f.path, asset, &mut |t| {
                rows.push((
                    t.block,
                    t.txi,
                    t.ordinal,
                    t.hash.to_string(),
                    t.from.to_string(),
                    t.to.to_string(),
                    t.value,
                ));
                Ok(())
            })?;
        }
        rows.sort_by_key(|r| (r.0, r.1, r.2));
        let max = rows
            .iter()
            .map(|r| super::frac::to_f64(&r.6))
            .fold(0.0f64, f64::max);
        // Amounts into f32's range with room for sums: the largest at most 2^100.
        let scale = amount_scale(max);
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut t = EthTransfers {
            scale,
            ..Default::default()
        };
        let mut id = |a: String, t: &mut EthTransfers| -> u32 {
            *ids.entry(a).or_insert_with_key(|k| {
                t.addresses.push(k.clone());
                (t.addresses.len() - 1) as u32
            })
        };
        for (block, txi, _, hash, from, to, v) in rows {
            let s = id(from, &mut t);
            let d = id(to, &mut t);
            t.graph.src.push(s);
            t.graph.dst.push(d);
            let exact = super::frac::to_f64(&v);
            t.graph.amount.push((exact * scale) as f32);
            t.graph.units.push(v);
            t.block.push(block);
            t.tx_index.push(txi);
            t.tx_hash.push(hash);
            t.value.push(exact);
        }
        t.graph.nodes = u32::try_from(t.addresses.len())
            .map_err(|_| Error::TooLarge("more than 2^32 addresses".into()))?;
        Ok(t)
    }

    fn id_of(&self) -> HashMap<&str, u32> {
        self.addresses
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), i as u32))
            .collect()
    }
}

/// The columns of `eth.transfers` the account kernels read, in [`for_each_transfer`]'s
/// order.
pub(crate) const TRANSFER_COLUMNS: [&str; 8] = [
    "block_number",
    "transaction_index",
    "ordinal",
    "transaction_hash",
    "asset",
    "from_address",
    "to_address",
    "value_string",
];

/// One row of `eth.transfers` as read.
pub(crate) struct TransferRow<'a> {
    pub block: i64,
    pub txi: i32,
    pub ordinal: i32,
    pub hash: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub value: super::frac::U256,
}

/// Calls `f` on each row of `asset` (`*`: all) in `batches` (read from `path` with
/// [`TRANSFER_COLUMNS`]), in file order; a column of the wrong type or an amount that is
/// not a `uint256` is an error naming the file.
pub(crate) fn for_each_transfer(
    batches: &[RecordBatch],
    path: &str,
    asset: &str,
    f: &mut dyn FnMut(TransferRow<'_>) -> Result<()>,
) -> Result<()> {
    let want = asset.to_ascii_lowercase();
    let bad = |c: &str| Error::BadGraph(format!("{path}: column {c} has the wrong type"));
    for b in batches {
        let block = b
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad("block_number"))?;
        let txi = b
            .column(1)
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| bad("transaction_index"))?;
        let ord = b
            .column(2)
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| bad("ordinal"))?;
        let s = |i: usize, c: &str| b.column(i).as_string_opt::<i32>().ok_or_else(|| bad(c));
        let (hash, a, from, to, value) = (
            s(3, "transaction_hash")?,
            s(4, "asset")?,
            s(5, "from_address")?,
            s(6, "to_address")?,
            s(7, "value_string")?,
        );
        for r in 0..b.num_rows() {
            if want != "*" && a.value(r).to_ascii_lowercase() != want {
                continue;
            }
            let v = super::frac::parse_decimal(value.value(r)).ok_or_else(|| {
                Error::BadGraph(format!(
                    "{path}: value_string `{}` is not an integer from 0 to 2^256 − 1",
                    value.value(r)
                ))
            })?;
            f(TransferRow {
                block: block.value(r),
                txi: txi.value(r),
                ordinal: ord.value(r),
                hash: hash.value(r),
                from: from.value(r),
                to: to.value(r),
                value: v,
            })?;
        }
    }
    Ok(())
}

/// The factor that brings amounts into f32's range with room for sums (poison compares
/// them as f32): the largest at most 2^100.
pub(crate) fn amount_scale(max: f64) -> f64 {
    if max > 2f64.powi(100) {
        2f64.powi(100) / max
    } else {
        1.0
    }
}

/// The error of a run none of whose seeds has a transfer of `asset`.
pub(crate) fn no_seeds(asset: &str, unknown: &[String]) -> Error {
    Error::BadQuery(format!(
        "no seed has a transfer of asset {asset}{}",
        if unknown.is_empty() {
            String::new()
        } else {
            format!(" (unknown: {})", unknown.join(", "))
        }
    ))
}

/// Exits in report order: by tainted value, largest first, then by address.
pub(crate) fn sort_exits(exits: &mut [EthExit]) {
    exits.sort_by(|a, b| {
        b.tainted_value
            .total_cmp(&a.tainted_value)
            .then_with(|| a.address.cmp(&b.address))
    });
}

/// One address a run reached.
#[derive(Clone, Debug, PartialEq)]
pub struct TaintedAddress {
    pub address: String,
    pub hop: u32,
    /// The transfer that first brought taint (None for seeds).
    pub first: Option<usize>,
    pub tainted_value: f64,
    pub tainted_transfers: u64,
}

/// One labelled stop address a run reached.
#[derive(Clone, Debug, PartialEq)]
pub struct EthExit {
    pub address: String,
    pub label: String,
    pub category: String,
    pub tainted_value: f64,
    pub tainted_transfers: u64,
    pub min_hop: u32,
    pub first_block: Option<i64>,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct EthTaintRun {
    pub job: EthTaintJob,
    pub transfers: EthTransfers,
    pub addresses: Vec<TaintedAddress>,
    /// By tainted value, largest first.
    pub exits: Vec<EthExit>,
    /// Per transfer (chain order): the tainted amount it carried, in the asset's unit.
    pub tainted: Vec<f64>,
    pub unknown_seeds: Vec<String>,
    pub steps: u32,
    pub device: String,
}

/// Loads the transfers and runs `job` on `backend`.
pub async fn taint_eth(
    wh: &Warehouse,
    backend: &Backend,
    job: &EthTaintJob,
) -> Result<EthTaintRun> {
    let labels = chain_labels(wh, "eth").await?;
    check_categories(
        &labels,
        job.seed_categories.iter().chain(&job.stop_categories),
    )?;
    if job.asset == "*" && job.policy != AccountPolicy::Poison {
        return Err(Error::BadQuery(
            "asset `*` mixes units: only poison runs over every asset; name one (`ETH` or a token contract)".into(),
        ));
    }
    let t = EthTransfers::load(wh, &job.asset).await?;
    run_on_transfers(t, backend, job, &labels)
}

/// Runs `job` on loaded transfers with the given labels (address, label, category).
pub fn run_on_transfers(
    t: EthTransfers,
    backend: &Backend,
    job: &EthTaintJob,
    labels: &[(String, String, String)],
) -> Result<EthTaintRun> {
    let ids = t.id_of();
    let mut unknown = Vec::new();
    let mut seeds = Vec::new();
    for a in &job.seed_addresses {
        match ids.get(a.to_ascii_lowercase().as_str()) {
            Some(&i) => seeds.push(i),
            None => unknown.push(a.clone()),
        }
    }
    let mut stop_labels: HashMap<u32, (&str, &str)> = HashMap::new();
    for (address, label, category) in labels {
        let Some(&i) = ids.get(address.as_str()) else {
            continue;
        };
        if job.seed_categories.contains(category) {
            seeds.push(i);
        }
        if job.stop_categories.contains(category) {
            stop_labels.entry(i).or_insert((label, category));
        }
    }
    seeds.sort_unstable();
    seeds.dedup();
    if seeds.is_empty() {
        return Err(no_seeds(&job.asset, &unknown));
    }
    let stops: Vec<u32> = stop_labels.keys().copied().collect();
    let node_flags = flags(t.graph.nodes, &seeds, &stops)?;
    let backward = job.direction == Direction::Backward;
    // Forward runs on the loaded graph itself; backward on its reversed copy.
    let g: std::borrow::Cow<'_, TransferGraph> = if backward {
        std::borrow::Cow::Owned(t.graph.reversed())
    } else {
        std::borrow::Cow::Borrowed(&t.graph)
    };
    let m = g.src.len();
    // Edge `e` of the run's graph is transfer `orig(e)`.
    let orig = |e: usize| if backward { m - 1 - e } else { e };
    let opts = Options {
        max_hops: job.max_hops,
        min_value: (job.min_value * t.scale) as f32,
    };
    let device = backend.describe();
    let (hop, carried, steps) = match job.policy {
        AccountPolicy::Poison => {
            let r = poison(backend, &g, &node_flags, &opts)?;
            // A transfer carries taint when its sender was tainted before it.
            let carried: Vec<f64> = (0..m)
                .map(|e| {
                    let s = g.src[e] as usize;
                    let ok = r.arrival[s] != UNREACHED
                        && r.arrival[s] < e as u32 + 1
                        && (node_flags[s] & super::STOP == 0)
                        && g.amount[e] >= opts.min_value
                        && (r.arrival[g.dst[e] as usize] <= e as u32 + 1);
                    if ok { t.value[orig(e)] } else { 0.0 }
                })
                .collect();
            (r.hop, carried, r.steps)
        }
        AccountPolicy::Haircut => {
            let popts = PoolOptions {
                max_hops: job.max_hops,
                min_value: super::frac::Frac::from_f64(job.min_value),
            };
            let r = pool(backend, &g, &node_flags, &popts)?;
            // The tainted share of the exact amount: a wholly tainted transfer reports its
            // amount as the chain has it.
            let carried = r.tainted(&g);
            (r.hop, carried, r.steps)
        }
    };
    let mut tainted = vec![0.0f64; m];
    let mut per_node: Vec<(f64, u64, Option<usize>)> = vec![(0.0, 0, None); t.graph.nodes as usize];
    // `e` indexes the graph's edge arrays and `carried` alike.
    #[allow(clippy::needless_range_loop)]
    for e in 0..m {
        if carried[e] <= 0.0 {
            continue;
        }
        let o = orig(e);
        tainted[o] = carried[e];
        let d = g.dst[e] as usize;
        let slot = &mut per_node[d];
        slot.0 += carried[e];
        slot.1 += 1;
        if slot.2.is_none() {
            slot.2 = Some(o);
        }
    }
    let mut addresses = Vec::new();
    for (v, &h) in hop.iter().enumerate() {
        if h == UNREACHED {
            continue;
        }
        let (value, n, first) = per_node[v];
        addresses.push(TaintedAddress {
            address: t.addresses[v].clone(),
            hop: h,
            first: if h == 0 { None } else { first },
            tainted_value: value,
            tainted_transfers: n,
        });
    }
    let mut exits: Vec<EthExit> = stop_labels
        .iter()
        .filter(|(v, _)| hop[**v as usize] != UNREACHED)
        .map(|(&v, (label, category))| {
            let (value, n, first) = per_node[v as usize];
            EthExit {
                address: t.addresses[v as usize].clone(),
                label: label.to_string(),
                category: category.to_string(),
                tainted_value: value,
                tainted_transfers: n,
                min_hop: hop[v as usize],
                first_block: first.map(|o| t.block[o]),
            }
        })
        .collect();
    sort_exits(&mut exits);
    Ok(EthTaintRun {
        job: job.clone(),
        transfers: t,
        addresses,
        exits,
        tainted,
        unknown_seeds: unknown,
        steps,
        device,
    })
}

/// One `eth_taint` row: an address a run reached.
#[derive(Clone, Debug, PartialEq)]
pub struct EthTaintRow {
    pub address: String,
    pub hop: u32,
    /// The transfer that first brought taint (block, transaction index, transaction
    /// hash); None for seeds.
    pub first: Option<(i64, i32, String)>,
    pub tainted_value: f64,
    pub tainted_transfers: u64,
}

/// The `eth_taint` rows of a run.
pub fn eth_taint_batch(run: &EthTaintRun, run_id: &str) -> Result<RecordBatch> {
    let t = &run.transfers;
    let rows: Vec<EthTaintRow> = run
        .addresses
        .iter()
        .map(|x| EthTaintRow {
            address: x.address.clone(),
            hop: x.hop,
            first: x
                .first
                .map(|o| (t.block[o], t.tx_index[o], t.tx_hash[o].clone())),
            tainted_value: x.tainted_value,
            tainted_transfers: x.tainted_transfers,
        })
        .collect();
    eth_taint_rows_batch(&rows, &run.job.asset, run_id)
}

/// `eth_taint` rows as a batch of its schema.
pub fn eth_taint_rows_batch(
    rows: &[EthTaintRow],
    asset: &str,
    run_id: &str,
) -> Result<RecordBatch> {
    let a = rows;
    let n = a.len();
    let str_col = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as Arc<dyn Array>;
    RecordBatch::try_new(
        eth_taint_schema(),
        vec![
            str_col(vec![Some("eth".into()); n]),
            str_col(a.iter().map(|x| Some(x.address.clone())).collect()),
            str_col(vec![Some(asset.to_string()); n]),
            Arc::new(Int32Array::from_iter_values(a.iter().map(|x| x.hop as i32))),
            Arc::new(Int64Array::from(
                a.iter()
                    .map(|x| x.first.as_ref().map(|f| f.0))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                a.iter()
                    .map(|x| x.first.as_ref().map(|f| f.1))
                    .collect::<Vec<_>>(),
            )),
            str_col(
                a.iter()
                    .map(|x| x.first.as_ref().map(|f| f.2.clone()))
                    .collect(),
            ),
            Arc::new(Float64Array::from_iter_values(
                a.iter().map(|x| x.tainted_value),
            )),
            Arc::new(Int64Array::from_iter_values(
                a.iter().map(|x| x.tainted_transfers as i64),
            )),
            str_col(vec![Some(run_id.to_string()); n]),
        ],
    )
    .map_err(|e| Error::BadGraph(format!("eth_taint batch: {e}")))
}

/// The `eth_exits` rows of a run.
pub fn eth_exits_batch(run: &EthTaintRun, run_id: &str) -> Result<RecordBatch> {
    eth_exits_rows_batch(&run.exits, &run.job.asset, run_id)
}

/// Exits as a batch of `eth_exits`'s schema.
pub fn eth_exits_rows_batch(x: &[EthExit], asset: &str, run_id: &str) -> Result<RecordBatch> {
    let n = x.len();
    let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as Arc<dyn Array>;
    RecordBatch::try_new(
        eth_exits_schema(),
        vec![
            s(vec!["eth".into(); n]),
            s(x.iter().map(|e| e.address.clone()).collect()),
            s(x.iter().map(|e| e.label.clone()).collect()),
            s(x.iter().map(|e| e.category.clone()).collect()),
            s(vec![asset.to_string(); n]),
            Arc::new(Float64Array::from_iter_values(
                x.iter().map(|e| e.tainted_value),
            )),
            Arc::new(Int64Array::from_iter_values(
                x.iter().map(|e| e.tainted_transfers as i64),
            )),
            Arc::new(Int32Array::from_iter_values(
                x.iter().map(|e| e.min_hop as i32),
            )),
            Arc::new(Int64Array::from(
                x.iter().map(|e| e.first_block).collect::<Vec<_>>(),
            )),
            s(vec![run_id.to_string(); n]),
        ],
    )
    .map_err(|e| Error::BadGraph(format!("eth_exits batch: {e}")))
}

/// Writes a run as the latest `eth_taint` and `eth_exits`; returns the run id.
pub async fn write_eth_taint(wh: &Warehouse, run: &EthTaintRun) -> Result<String> {
    let run_id = ferret_schemas::results::new_run_id();
    let wh_err = |e: ferret_schemas::Error| Error::Warehouse(Box::new(e));
    let params = Some(run.job.params());
    wh.write_runs_as(
        &run_id,
        &[
            (
                "eth_taint",
                eth_taint_schema(),
                &[eth_taint_batch(run, &run_id)?],
            ),
            (
                "eth_exits",
                eth_exits_schema(),
                &[eth_exits_batch(run, &run_id)?],
            ),
        ],
        params,
    )
    .await
    .map_err(wh_err)?;
    Ok(run_id)
}

impl EthTaintRun {
    /// The run as pictures show it: tainted amounts between addresses, aggregated per pair,
    /// in gwei shown as ETH (tokens: base units, scaled down by a power of ten only if the
    /// largest would not fit 64 bits).
    pub fn trace_run(&self) -> crate::taint::trace::TraceRun {
        use crate::taint::job::Flow;
        use crate::taint::trace::{TraceExit, TraceRun, Unit};
        use std::collections::BTreeMap;

        let t = &self.transfers;
        let eth = self.job.asset == "ETH";
        let max = self.tainted.iter().copied().fold(0.0f64, f64::max);
        let (div, unit) = if eth {
            (
                1e9,
                Unit {
                    name: "ETH".into(),
                    decimals: 9,
                },
            )
        } else {
            let mut k = 0u32;
            while max / 10f64.powi(k as i32) > 9e18 {
                k += 1;
            }
            let name = if k == 0 {
                format!("units of {}", self.job.asset)
            } else {
                format!("×10^{k} units of {}", self.job.asset)
            };
            (10f64.powi(k as i32), Unit { name, decimals: 0 })
        };
        let hop: HashMap<&str, u32> = self
            .addresses
            .iter()
            .map(|a| (a.address.as_str(), a.hop))
            .collect();
        let backward = self.job.direction == Direction::Backward;
        let mut pairs: BTreeMap<(u32, u32), (f64, u32)> = BTreeMap::new();
        for (e, &v) in self.tainted.iter().enumerate() {
            if v <= 0.0 {
                continue;
            }
            let (s, d) = (t.graph.src[e], t.graph.dst[e]);
            // The far end from the seeds: the receiver forward, the sender backward.
            let far = if backward { s } else { d };
            let h = hop
                .get(t.addresses[far as usize].as_str())
                .copied()
                .unwrap_or(u32::MAX);
            let slot = pairs.entry((s, d)).or_insert((0.0, h));
            slot.0 += v;
            slot.1 = slot.1.min(h);
        }
        let flows = pairs
            .into_iter()
            .map(|((s, d), (v, h))| Flow {
                from: t.addresses[s as usize].clone(),
                to: t.addresses[d as usize].clone(),
                tainted_value: (v / div).round() as i64,
                hop: h,
                coinjoin: None,
            })
            .collect();
        TraceRun {
            title: format!(
                "Ferret trace: {} {} of {} from {} seed address(es)",
                self.job.policy.as_str(),
                if backward { "backward" } else { "forward" },
                if eth { "ETH" } else { self.job.asset.as_str() },
                self.addresses.iter().filter(|a| a.hop == 0).count()
            ),
            backward,
            seeds: self
                .addresses
                .iter()
                .filter(|a| a.hop == 0)
                .map(|a| a.address.clone())
                .collect(),
            exits: self
                .exits
                .iter()
                .map(|e| TraceExit {
                    address: e.address.clone(),
                    label: e.label.clone(),
                    category: e.category.clone(),
                    value: (e.tainted_value / div).round() as i64,
                    count: e.tainted_transfers,
                    min_hop: e.min_hop,
                    all_paths: None,
                    coinjoin: None,
                })
                .collect(),
            flows,
            unit,
            reached: format!("{} addresses reached", self.addresses.len()),
            count_name: "transfers",
        }
    }
}
