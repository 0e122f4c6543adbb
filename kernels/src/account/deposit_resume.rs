//! Deposit-address clustering ([`super::deposit`]) that resumes over only the transfers of
//! new blocks, and equals a run over every transfer.
//!
//! The rule is not monotone: a later transfer out of a deposit address to anything but a
//! hot wallet disqualifies it and drops its senders' links, and more senders than
//! `max_senders` drop them too, so clusters cannot just absorb new links. What carries
//! over is the scan: per address (numbered in first-seen order, as the run from scratch
//! numbers them) the last block it received in, its sweeps and whether it is
//! disqualified; and every distinct (sender, receiver) pair whose receiver may still be a
//! deposit address (not a hot wallet, not labelled, not disqualified; a disqualified
//! address never qualifies again). A resumed run continues the scan over the new
//! transfers, then takes the deposit addresses, the links into them and the connected
//! components afresh from that state: the links are few beside the transfers.

use std::collections::{BTreeSet, HashMap, HashSet};

use ferret_schemas::{Chain, Warehouse};

use super::deposit::{DepositClusters, DepositRule};
use super::job::{TRANSFER_COLUMNS, for_each_transfer};
use crate::cc;
use crate::cluster::Clusters;
use crate::device::Backend;
use crate::taint::job::{chain_labels, check_categories};
use crate::{Error, Result};

/// What a deposit clustering run leaves for the next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DepositState {
    /// The last block read.
    pub height: Option<i64>,
    /// Addresses by id (first-seen order over every asset's transfers in chain order).
    pub addresses: Vec<String>,
    /// Per address: the last block it received in.
    pub last_in: Vec<Option<i64>>,
    /// Per address: sweeps into hot wallets, and whether anything else disqualified it.
    pub sweeps: Vec<u32>,
    pub disqualified: Vec<bool>,
    /// Distinct (sender, receiver) pairs whose receiver may still be a deposit address.
    pub pairs: BTreeSet<(u32, u32)>,
}

struct Row {
    block: i64,
    txi: i32,
    ord: i32,
    from: String,
    to: String,
}

/// Clusters the warehouse's Ethereum addresses by deposit addresses, continuing from
/// `prev` (every transfer without it). The labels and the rule must be the ones `prev` was
/// made with (the caller checks: it records them with the run).
pub async fn cluster_eth_resumed(
    wh: &Warehouse,
    backend: &Backend,
    rule: &DepositRule,
    prev: Option<&DepositState>,
) -> Result<(DepositClusters, DepositState)> {
    let labels = chain_labels(wh, "eth").await?;
    check_categories(&labels, std::iter::once(&rule.exchange_category))?;
    let wh_err = |e: ferret_schemas::Error| Error::Warehouse(Box::new(e));
    let Some(manifest) = wh.load_manifest(Chain::Eth).await.map_err(wh_err)? else {
        return Err(Error::BadQuery(
            "the warehouse holds no Ethereum data: run `ferret index eth` first".into(),
        ));
    };
    let mut st = prev.cloned().unwrap_or_default();
    let after = st.height;
    let mut files: Vec<_> = manifest
        .files_of("transfers")
        .filter(|f| after.is_none_or(|a| f.last_height as i64 > a))
        .collect();
    files.sort_by_key(|f| f.first_height);
    let mut rows: Vec<Row> = Vec::new();
    for f in files {
        let batches = wh
            .read_columns(&f.path, &TRANSFER_COLUMNS)
            .await
            .map_err(wh_err)?;
        for_each_transfer(&batches, &f.path, "*", &mut |t| {
            if after.is_none_or(|a| t.block > a) {
                rows.push(Row {
                    block: t.block,
                    txi: t.txi,
                    ord: t.ordinal,
                    from: t.from.to_string(),
                    to: t.to.to_string(),
                });
            }
            Ok(())
        })?;
    }
    rows.sort_by_key(|r| (r.block, r.txi, r.ord));
    if let Some(tip) = manifest.tip.as_ref() {
        st.height = Some(
            st.height
                .map_or(tip.height as i64, |h| h.max(tip.height as i64)),
        );
    }

    let hot_set: HashSet<&str> = labels
        .iter()
        .filter(|l| l.2 == rule.exchange_category)
        .map(|l| l.0.as_str())
        .collect();
    let labelled_set: HashSet<&str> = labels.iter().map(|l| l.0.as_str()).collect();
    let mut ids: HashMap<String, u32> = st
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), i as u32))
        .collect();
    let mut hot: Vec<bool> = st
        .addresses
        .iter()
        .map(|a| hot_set.contains(a.as_str()))
        .collect();
    let mut labelled: Vec<bool> = st
        .addresses
        .iter()
        .map(|a| labelled_set.contains(a.as_str()))
        .collect();
    let mut id = |a: &str, st: &mut DepositState, hot: &mut Vec<bool>, labelled: &mut Vec<bool>| {
        if let Some(&i) = ids.get(a) {
            return i;
        }
        let i = st.addresses.len() as u32;
        st.addresses.push(a.to_string());
        st.last_in.push(None);
        st.sweeps.push(0);
        st.disqualified.push(false);
        hot.push(hot_set.contains(a));
        labelled.push(labelled_set.contains(a));
        ids.insert(a.to_string(), i);
        i
    };
    // The scan of `deposit_links`, continued.
    for r in &rows {
        let s = id(&r.from, &mut st, &mut hot, &mut labelled) as usize;
        let d = id(&r.to, &mut st, &mut hot, &mut labelled) as usize;
        if !hot[s] {
            let in_time = st.last_in[s].is_some_and(|b| r.block - b <= rule.max_delay_blocks);
            if hot[d] && in_time {
                st.sweeps[s] += 1;
            } else {
                st.disqualified[s] = true;
            }
        }
        st.last_in[d] = Some(r.block);
        if !hot[s] && s != d && !hot[d] && !labelled[d] && !st.disqualified[d] {
            st.pairs.insert((s as u32, d as u32));
        }
    }
    let disq = &st.disqualified;
    st.pairs.retain(|&(_, d)| !disq[d as usize]);

    let n = st.addresses.len();
    let deposits: Vec<u32> = (0..n)
        .filter(|&v| !hot[v] && !labelled[v] && st.sweeps[v] > 0 && !st.disqualified[v])
        .map(|v| v as u32)
        .collect();
    let is_deposit: HashSet<u32> = deposits.iter().copied().collect();
    let mut links: Vec<(u32, u32)> = st
        .pairs
        .iter()
        .copied()
        .filter(|(_, d)| is_deposit.contains(d))
        .collect();
    let mut senders: HashMap<u32, usize> = HashMap::new();
    for &(_, d) in &links {
        *senders.entry(d).or_default() += 1;
    }
    links.retain(|&(_, d)| senders[&d] <= rule.max_senders);
    let mut members: Vec<u32> = links.iter().flat_map(|&(a, b)| [a, b]).collect();
    members.sort_unstable();
    members.dedup();
    let index = |v: u32| {
        members
            .binary_search(&v)
            .map(|i| i as u32)
            .map_err(|_| Error::BadGraph("a linked address is missing from the members".into()))
    };
    let local: Vec<(u32, u32)> = links
        .iter()
        .map(|&(a, b)| Ok((index(a)?, index(b)?)))
        .collect::<Result<_>>()?;
    let m = u32::try_from(members.len())
        .map_err(|_| Error::TooLarge("address ids beyond u32".into()))?;
    let cluster_id = cc::connected_components(backend, m, &local)?;
    let cluster_size = crate::cluster::cluster_sizes(&cluster_id);
    tracing::info!(
        from = ?after,
        to = ?st.height,
        transfers = rows.len(),
        deposit_addresses = deposits.len(),
        links = links.len(),
        "clustered by deposit addresses (resumed)"
    );
    let out = DepositClusters {
        clusters: Clusters {
            chain: "eth",
            addresses: members
                .iter()
                .map(|&v| st.addresses[v as usize].clone())
                .collect(),
            cluster_id,
            cluster_size,
            coinjoins_skipped: 0,
            linked_transactions: links.len() as u64,
        },
        deposit_addresses: deposits
            .iter()
            .map(|&v| st.addresses[v as usize].clone())
            .collect(),
    };
    Ok((out, st))
}

/// The version of the state's layout.
pub const DEPOSIT_STATE_FORMAT: u64 = 1;

fn state_schemas() -> (arrow::datatypes::SchemaRef, arrow::datatypes::SchemaRef) {
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    (
        Arc::new(Schema::new(vec![
            Field::new("address", DataType::Utf8, false),
            Field::new("last_in", DataType::Int64, true),
            Field::new("sweeps", DataType::Int64, false),
            Field::new("disqualified", DataType::Boolean, false),
        ])),
        Arc::new(Schema::new(vec![
            Field::new("sender", DataType::Int64, false),
            Field::new("receiver", DataType::Int64, false),
        ])),
    )
}

/// The hash of the Ethereum block at `height`, if the warehouse has it.
async fn eth_hash(wh: &Warehouse, height: Option<i64>) -> Result<Option<String>> {
    match height.and_then(|h| u64::try_from(h).ok()) {
        Some(h) => crate::blocks::block_hash(wh, Chain::Eth, h).await,
        None => Ok(None),
    }
}

/// What `ferret cluster eth` did.
pub struct DepositJob {
    pub clusters: DepositClusters,
    pub run_id: String,
    /// `incremental: blocks above height H` or `full: why`.
    pub mode: String,
}

/// `ferret cluster eth` (in memory): resumes from the latest `eth_clusters` run's state
/// when it still holds (the same labels run and rule, its tip still on the chain; `full`
/// never), else reads every transfer; commits the clusters with the new state in one
/// results head (`eth_clusters`, `eth_cluster_state`, `eth_cluster_pairs`).
pub async fn cluster_eth_job(
    wh: &Warehouse,
    backend: &Backend,
    rule: &DepositRule,
    full: bool,
) -> Result<DepositJob> {
    use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let wh_err = |e: ferret_schemas::Error| Error::Warehouse(Box::new(e));
    let heads = wh.latest_runs().await.map_err(wh_err)?;
    let labels_run = heads.get("labels").map(|r| r.run_id.clone());
    let rule_json = serde_json::json!({
        "exchange_category": rule.exchange_category,
        "max_delay_blocks": rule.max_delay_blocks,
        "max_senders": rule.max_senders,
    });
    // Whether the latest run's state holds, and why not.
    let mut why = String::new();
    let mut prev: Option<DepositState> = None;
    let last = heads.get("eth_clusters");
    let inc = last
        .and_then(|r| r.params.as_ref())
        .and_then(|p| p.get("incremental"));
    if full {
        why = "asked for (--full)".into();
    } else if let (Some(r), Some(inc)) = (last, inc) {
        let height = inc.get("height").and_then(|v| v.as_i64());
        let hash = inc.get("hash").and_then(|v| v.as_str());
        if inc.get("format").and_then(|v| v.as_u64()) != Some(DEPOSIT_STATE_FORMAT) {
            why = "the last run's state is of another format".into();
        } else if inc.get("labels_run").and_then(|v| v.as_str()) != labels_run.as_deref() {
            why = "the labels changed".into();
        } else if inc.get("rule") != Some(&rule_json) {
            why = "the rule changed".into();
        } else if height.is_none()
            || hash.is_none()
            || eth_hash(wh, height).await?.as_deref() != hash
        {
            why = "a reorg replaced the last run's tip".into();
        } else {
            let damaged = |what: String| {
                Error::BadGraph(format!(
                    "eth_clusters run {}: its state {what} (run with --full)",
                    r.run_id
                ))
            };
            let files = |job: &str| -> Result<Vec<String>> {
                match heads.get(job) {
                    Some(s) if s.run_id == r.run_id => Ok(s.files.clone()),
                    _ => Err(damaged(format!("has no `{job}` of its run"))),
                }
            };
            let mut st = DepositState {
                height,
                ..Default::default()
            };
            for f in files("eth_cluster_state")? {
                for b in wh.read_file(&f).await.map_err(wh_err)? {
                    let bad = || damaged(format!("file {f} is not a state table"));
                    let a = b.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
                    let l = b
                        .column(1)
                        .as_primitive_opt::<arrow::datatypes::Int64Type>()
                        .ok_or_else(bad)?;
                    let s = b
                        .column(2)
                        .as_primitive_opt::<arrow::datatypes::Int64Type>()
                        .ok_or_else(bad)?;
                    let q = b.column(3).as_boolean_opt().ok_or_else(bad)?;
                    for i in 0..b.num_rows() {
                        st.addresses.push(a.value(i).to_string());
                        st.last_in.push((!l.is_null(i)).then(|| l.value(i)));
                        st.sweeps
                            .push(u32::try_from(s.value(i)).map_err(|_| bad())?);
                        st.disqualified.push(q.value(i));
                    }
                }
            }
            let n = st.addresses.len() as i64;
            for f in files("eth_cluster_pairs")? {
                for b in wh.read_file(&f).await.map_err(wh_err)? {
                    let bad = || damaged(format!("file {f} is not a pairs table"));
                    let s = b
                        .column(0)
                        .as_primitive_opt::<arrow::datatypes::Int64Type>()
                        .ok_or_else(bad)?;
                    let d = b
                        .column(1)
                        .as_primitive_opt::<arrow::datatypes::Int64Type>()
                        .ok_or_else(bad)?;
                    for i in 0..b.num_rows() {
                        let (x, y) = (s.value(i), d.value(i));
                        if !(0..n).contains(&x) || !(0..n).contains(&y) {
                            return Err(damaged(format!("pair ({x}, {y}) names no address")));
                        }
                        st.pairs.insert((x as u32, y as u32));
                    }
                }
            }
            for (k, got) in [("addresses", st.addresses.len()), ("pairs", st.pairs.len())] {
                if inc.get(k).and_then(|v| v.as_u64()) != Some(got as u64) {
                    return Err(damaged(format!(
                        "holds {got} {k}, its run recorded another count"
                    )));
                }
            }
            prev = Some(st);
        }
    } else {
        why = "no earlier run kept a state".into();
    }
    let from = prev.as_ref().and_then(|p| p.height);
    let (clusters, st) = cluster_eth_resumed(wh, backend, rule, prev.as_ref()).await?;
    let tip_hash = match st.height {
        Some(h) => eth_hash(wh, Some(h)).await?,
        None => None,
    };
    let params = serde_json::json!({
        "rule": rule_json,
        "incremental": {
            "format": DEPOSIT_STATE_FORMAT,
            "height": st.height,
            "hash": tip_hash,
            "labels_run": labels_run,
            "rule": rule_json,
            "addresses": st.addresses.len(),
            "pairs": st.pairs.len(),
        },
    });
    let run_id = ferret_schemas::results::new_run_id();
    let (state_schema, pairs_schema) = state_schemas();
    let state = RecordBatch::try_new(
        state_schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(&st.addresses)),
            Arc::new(Int64Array::from(st.last_in.clone())),
            Arc::new(Int64Array::from_iter_values(
                st.sweeps.iter().map(|&s| i64::from(s)),
            )),
            Arc::new(BooleanArray::from(st.disqualified.clone())),
        ],
    )
    .map_err(|e| Error::BadGraph(format!("state batch: {e}")))?;
    let pairs = RecordBatch::try_new(
        pairs_schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                st.pairs.iter().map(|p| i64::from(p.0)),
            )),
            Arc::new(Int64Array::from_iter_values(
                st.pairs.iter().map(|p| i64::from(p.1)),
            )),
        ],
    )
    .map_err(|e| Error::BadGraph(format!("pairs batch: {e}")))?;
    let batch = crate::cluster::clusters_batch(&clusters.clusters, &run_id)?;
    wh.write_runs_as(
        &run_id,
        &[
            (
                "eth_clusters",
                ferret_schemas::results::clusters_schema(),
                &[batch],
            ),
            ("eth_cluster_state", state_schema, &[state]),
            ("eth_cluster_pairs", pairs_schema, &[pairs]),
        ],
        Some(params),
    )
    .await
    .map_err(wh_err)?;
    let mode = match (&prev, from) {
        (Some(_), Some(h)) => format!("incremental: blocks above height {h}"),
        (Some(_), None) => "incremental".into(),
        (None, _) => format!("full: {why}"),
    };
    Ok(DepositJob {
        clusters,
        run_id,
        mode,
    })
}
