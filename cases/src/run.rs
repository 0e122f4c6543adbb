//! One run of a case: the taint of each of its chains, the clusters of its seeds, and
//! what is new against the previous run (alerts), committed as one run of the case's
//! tables with the record of what it read. Runs of one case never overlap (a lease), and
//! a run commits only on top of the run it diffed against.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Float64Type, Int64Type};
use chrono::{DateTime, Utc};
use ferret_kernels::device::Backend;
use ferret_schemas::cases::{case_job, case_table_schema};
use ferret_schemas::results::{LatestRun, new_run_id};
use ferret_schemas::{Chain, Warehouse};
use sha2::{Digest, Sha256};

use crate::file::Case;
use crate::{Error, Result};

/// One alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub alert_id: String,
    pub seq: i64,
    /// `new_exit`, `exit_increase`, `new_member`, `watchlist`, `typology`.
    pub kind: &'static str,
    pub chain: String,
    pub address: String,
    pub amount: Option<f64>,
    pub asset: Option<String>,
    pub txid: Option<String>,
    pub height: Option<i64>,
    pub detail: String,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub case: String,
    pub run_id: String,
    pub previous_run: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Per chain: tip height and hash read.
    pub tips: BTreeMap<String, (Option<u64>, Option<String>)>,
    pub taint_rows: u64,
    pub exits: u64,
    pub members: u64,
    pub alerts: Vec<Alert>,
    /// Seeds the chains do not have.
    pub unknown_seeds: Vec<String>,
    /// Seed clusters too large to expand into members.
    pub held_clusters: Vec<HeldCluster>,
    /// Per chain traced: how its taint ran (`incremental above height H`, or `full: why`).
    pub taint_modes: BTreeMap<String, String>,
}

/// An exit as the diff sees it.
#[derive(Clone, Debug, PartialEq)]
struct ExitRow {
    chain: String,
    address: String,
    asset: String,
    label: String,
    category: String,
    value: f64,
    min_hop: i64,
    /// The tainted outputs paying it (Bitcoin): txid, vout, tainted value.
    outputs: Vec<(String, i32, f64)>,
    /// The transaction that first brought it taint, and its block (Ethereum).
    first: Option<(String, Option<i64>)>,
}

/// A member of a seed's cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Member {
    chain: String,
    address: String,
    cluster_id: Option<i64>,
    seed: String,
}

/// What one chain's part of a run produced.
#[derive(Default)]
struct ChainPart {
    taint: Option<RecordBatch>,
    exits_batch: Option<RecordBatch>,
    exits: Vec<ExitRow>,
    members: Vec<Member>,
    unknown_seeds: Vec<String>,
    tip: (Option<u64>, Option<String>),
    seq: Option<u64>,
    clusters_run: Option<String>,
    flows: Vec<crate::evidence::FlowRow>,
    paths: Vec<crate::evidence::PathStep>,
    held: Vec<HeldCluster>,
    /// How the taint ran (the record's `{chain}_taint`), and the state it leaves.
    resume: Option<serde_json::Value>,
    mode: Option<String>,
    /// The resume state's tables (`state`, `state_exits`, `state_meta`).
    state: Vec<(&'static str, RecordBatch)>,
}

fn chain_of(name: &str) -> Result<Chain> {
    Chain::all()
        .iter()
        .copied()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| Error::Query(format!("unknown chain `{name}`")))
}

/// The manifest sequence of each of the case's chains (what a run read, to check nothing
/// moved under it).
async fn manifest_seqs(wh: &Warehouse, case: &Case) -> Result<Vec<Option<u64>>> {
    let heads = wh.heads().await?;
    Ok(case
        .chains
        .iter()
        .map(|c| {
            Chain::all()
                .iter()
                .position(|x| x.as_str() == c)
                .and_then(|i| heads.chains.get(i).copied().flatten())
        })
        .collect())
}

/// Runs `case` once and commits the run; returns what it did. Refused while another run
/// of the case holds its lease.
pub async fn run_case(wh: &Warehouse, case: &Case, backend: &Backend) -> Result<RunReport> {
    run_case_with(wh, case, backend, false).await
}

/// [`run_case`]; with `full`, Bitcoin taint runs from scratch even where the previous
/// run's state would let it resume.
pub async fn run_case_with(
    wh: &Warehouse,
    case: &Case,
    backend: &Backend,
    full: bool,
) -> Result<RunReport> {
    let lease = wh.case_lease(&case.name).await?;
    let started_at = Utc::now();
    let run_id = new_run_id();
    let runs_job = case_job(&case.name, "runs");
    let heads = wh.latest_runs().await?;
    let previous = heads.get(&runs_job).map(|r| r.run_id.clone());
    let labels_run = heads.get("labels").map(|r| r.run_id.clone());
    // Each chain's labels, read once: the seed categories are checked against them
    // and each chain's part uses its own.
    let mut labels = BTreeMap::new();
    for chain in &case.chains {
        labels.insert(
            chain.clone(),
            ferret_kernels::taint::job::chain_labels(wh, chain).await?,
        );
    }
    check_seed_categories(case, &labels)?;

    // The chains must not move under the run: their manifests before and after match,
    // else the run is done again on the newer ones.
    let mut parts = BTreeMap::new();
    let mut attempts = 0;
    loop {
        let before = manifest_seqs(wh, case).await?;
        parts.clear();
        for chain in &case.chains {
            let part = match chain.as_str() {
                "btc" => {
                    btc_part(
                        wh,
                        case,
                        backend,
                        &run_id,
                        &labels[chain],
                        &heads,
                        labels_run.as_deref(),
                        full,
                    )
                    .await?
                }
                _ => {
                    eth_part(
                        wh,
                        case,
                        backend,
                        &run_id,
                        &labels[chain],
                        &heads,
                        labels_run.as_deref(),
                        full,
                    )
                    .await?
                }
            };
            parts.insert(chain.clone(), part);
        }
        let after = manifest_seqs(wh, case).await?;
        if before == after {
            break;
        }
        attempts += 1;
        if attempts >= 3 {
            return Err(Error::Refused {
                case: case.name.clone(),
                reason: "the chains moved during three runs in a row (an indexer is committing): try again".into(),
            });
        }
        tracing::info!(case = %case.name, "a chain moved during the run; running again on it");
    }

    // The previous run's exits and members, and every watchlist alert so far.
    let prev = match &previous {
        Some(p) => Some(Previous::load(wh, &heads, &case.name, p).await?),
        None => None,
    };
    let mut alerts = Vec::new();
    let exits: Vec<&ExitRow> = parts.values().flat_map(|p| &p.exits).collect();
    diff_exits(case, prev.as_ref(), &exits, &mut alerts);
    let members: Vec<&Member> = parts.values().flat_map(|p| &p.members).collect();
    diff_members(prev.as_ref(), &members, &mut alerts);
    watchlist(wh, case, prev.as_ref(), &parts, &mut alerts).await?;
    typology_alerts(wh, case, prev.as_ref(), &parts, &mut alerts).await?;
    for (i, a) in alerts.iter_mut().enumerate() {
        a.seq = i as i64;
        a.alert_id = alert_id(&case.name, &run_id, a);
    }
    let finished_at = Utc::now();

    let tips: BTreeMap<String, (Option<u64>, Option<String>)> = parts
        .iter()
        .map(|(c, p)| (c.clone(), p.tip.clone()))
        .collect();
    let report = RunReport {
        case: case.name.clone(),
        run_id: run_id.clone(),
        previous_run: previous.clone(),
        started_at,
        finished_at,
        tips,
        taint_rows: parts
            .values()
            .filter_map(|p| p.taint.as_ref())
            .map(|b| b.num_rows() as u64)
            .sum(),
        exits: exits.len() as u64,
        members: members.len() as u64,
        alerts,
        unknown_seeds: parts
            .values()
            .flat_map(|p| p.unknown_seeds.iter().cloned())
            .collect(),
        held_clusters: parts
            .values()
            .flat_map(|p| p.held.iter().cloned())
            .collect(),
        taint_modes: parts
            .iter()
            .filter_map(|(c, p)| p.mode.clone().map(|m| (c.clone(), m)))
            .collect(),
    };

    // The run's tables: one file each, appended to the case's history in one commit.
    let mut tables: Vec<(&str, RecordBatch)> = Vec::new();
    if let Some(p) = parts.get("btc") {
        tables.push(("taint", with_case(&case.name, "taint", p.taint.as_ref())?));
        tables.push((
            "exits",
            with_case(&case.name, "exits", p.exits_batch.as_ref())?,
        ));
    }
    if let Some(p) = parts.get("eth") {
        tables.push((
            "eth_taint",
            with_case(&case.name, "eth_taint", p.taint.as_ref())?,
        ));
        tables.push((
            "eth_exits",
            with_case(&case.name, "eth_exits", p.exits_batch.as_ref())?,
        ));
    }
    // The chains' resume states; `state_meta` gets one file with both chains' rows.
    let mut state_tables: BTreeMap<&str, Vec<RecordBatch>> = BTreeMap::new();
    for p in parts.values() {
        for (t, b) in &p.state {
            state_tables.entry(t).or_default().push(b.clone());
        }
    }
    for (t, batches) in state_tables {
        let schema =
            case_table_schema(t).ok_or_else(|| Error::Query(format!("no case table {t}")))?;
        tables.push((t, arrow::compute::concat_batches(&schema, &batches)?));
    }
    tables.push(("members", members_batch(&case.name, &run_id, &members)?));
    let flows: Vec<_> = parts.values().flat_map(|p| &p.flows).collect();
    tables.push((
        "flows",
        crate::evidence::flows_batch(&case.name, &run_id, &flows)?,
    ));
    let paths: Vec<_> = parts.values().flat_map(|p| &p.paths).collect();
    tables.push((
        "paths",
        crate::evidence::paths_batch(&case.name, &run_id, &paths)?,
    ));
    tables.push((
        "alerts",
        alerts_batch(&case.name, &run_id, &report.alerts, finished_at)?,
    ));
    let record = record(case, &report, &parts, labels_run.as_deref());
    tables.push((
        "runs",
        runs_batch(case, &report, &parts, labels_run.as_deref())?,
    ));

    let mut commit = Vec::new();
    let mut written: Vec<String> = Vec::new();
    let staged: Result<()> = async {
        for (table, batch) in &tables {
            let job = case_job(&case.name, table);
            let schema = case_table_schema(table)
                .ok_or_else(|| Error::Query(format!("no case table {table}")))?;
            let mut w = wh.run_writer(&job, &run_id, schema)?;
            w.write(batch).await?;
            let (file, rows, check) = w.finish().await?;
            written.push(file.clone());
            let mut entry = match heads.get(&job) {
                Some(old) => {
                    if old.checks.len() != old.files.len() {
                        return Err(Error::Damaged {
                            case: case.name.clone(),
                            reason: format!(
                                "{job} lists {} files and {} checks",
                                old.files.len(),
                                old.checks.len()
                            ),
                        });
                    }
                    old.clone()
                }
                None => LatestRun {
                    run_id: String::new(),
                    files: Vec::new(),
                    rows: 0,
                    params: None,
                    checks: Vec::new(),
                },
            };
            entry.run_id = run_id.clone();
            entry.files.push(file);
            entry.checks.push(check);
            entry.rows += rows;
            entry.params = (*table == "runs").then(|| record.clone());
            commit.push((job, entry));
        }
        // Still this run's lease.
        lease.check().await?;
        Ok(())
    }
    .await;
    if let Err(e) = staged {
        remove_uncommitted(wh, &written).await;
        return Err(e);
    }
    // Still on top of the run it diffed against.
    match wh
        .commit_runs_expecting(commit, &[(runs_job, previous)])
        .await
    {
        Ok(()) => {}
        Err(ferret_schemas::Error::CommitConflict { .. }) => {
            // Definitely not committed: its files are nobody's.
            remove_uncommitted(wh, &written).await;
            return Err(Error::Refused {
                case: case.name.clone(),
                reason: "another run of the case committed first (its lease had expired under this one): nothing was committed; run again".into(),
            });
        }
        // Maybe committed (a store error after the PUT): the files stay.
        Err(other) => return Err(Error::Warehouse(other)),
    }
    lease.release().await;
    Ok(report)
}

/// Deletes the files of a run that will never be committed (best effort: a file left
/// behind is listed by no table).
async fn remove_uncommitted(wh: &Warehouse, files: &[String]) {
    for f in files {
        match wh.resolve(f) {
            Ok(path) => {
                if let Err(e) = object_store::ObjectStoreExt::delete(wh.store(), &path).await {
                    tracing::warn!(file = %f, error = %e, "could not delete a file of an uncommitted case run");
                }
            }
            Err(e) => tracing::warn!(file = %f, error = %e, "not a warehouse path"),
        }
    }
}

/// The run's record, kept as the `runs` job's params (what `cases` shows).
fn record(
    case: &Case,
    r: &RunReport,
    parts: &BTreeMap<String, ChainPart>,
    labels_run: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "run_id": r.run_id,
        "chains": case.chains,
        "description": case.description,
        "schedule": case.schedule.as_ref().map(ToString::to_string),
        "started_at": r.started_at.to_rfc3339(),
        "finished_at": r.finished_at.to_rfc3339(),
        "previous_run": r.previous_run,
        "tips": parts.iter().map(|(c, p)| (c.clone(), serde_json::json!({"height": p.tip.0, "hash": p.tip.1, "manifest_seq": p.seq}))).collect::<serde_json::Map<_, _>>(),
        "labels_run": labels_run,
        "case_sha256": case.sha256,
        "ferret_version": env!("CARGO_PKG_VERSION"),
        "taint_rows": r.taint_rows,
        "exits": r.exits,
        "members": r.members,
        "alerts": r.alerts.len(),
        "held_clusters": r.held_clusters.iter().map(|h| serde_json::json!({"chain": h.chain, "seed": h.seed, "cluster_id": h.cluster_id, "size": h.size})).collect::<Vec<_>>(),
        "btc_taint": parts.get("btc").and_then(|p| p.resume.clone()),
        "eth_taint": parts.get("eth").and_then(|p| p.resume.clone()),
    })
}

/// The deterministic id of an alert: a receiver that saw it discards it.
fn alert_id(case: &str, run_id: &str, a: &Alert) -> String {
    let mut h = Sha256::new();
    for part in [
        case,
        run_id,
        a.kind,
        &a.chain,
        a.asset.as_deref().unwrap_or(""),
        &a.address,
        a.txid.as_deref().unwrap_or(""),
        &a.detail,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A kernel batch with the case column in front (an empty one when `batch` is None).
fn with_case(case: &str, table: &str, batch: Option<&RecordBatch>) -> Result<RecordBatch> {
    let schema =
        case_table_schema(table).ok_or_else(|| Error::Query(format!("no case table {table}")))?;
    let Some(b) = batch else {
        return Ok(RecordBatch::new_empty(schema));
    };
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(case, b.num_rows()),
    ))];
    cols.extend(b.columns().iter().cloned());
    Ok(RecordBatch::try_new(schema, cols)?)
}

fn members_batch(case: &str, run_id: &str, m: &[&Member]) -> Result<RecordBatch> {
    let n = m.len();
    Ok(RecordBatch::try_new(
        ferret_schemas::cases::case_members_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(case, n))),
            Arc::new(StringArray::from_iter_values(
                m.iter().map(|x| x.chain.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                m.iter().map(|x| x.address.as_str()),
            )),
            Arc::new(Int64Array::from_iter(m.iter().map(|x| x.cluster_id))),
            Arc::new(StringArray::from_iter_values(
                m.iter().map(|x| x.seed.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                run_id, n,
            ))),
        ],
    )?)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn alerts_batch(case: &str, run_id: &str, a: &[Alert], at: DateTime<Utc>) -> Result<RecordBatch> {
    let n = a.len();
    Ok(RecordBatch::try_new(
        ferret_schemas::cases::case_alerts_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(case, n))),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                run_id, n,
            ))),
            Arc::new(StringArray::from_iter_values(
                a.iter().map(|x| x.alert_id.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(a.iter().map(|x| x.seq))),
            Arc::new(StringArray::from_iter_values(a.iter().map(|x| x.kind))),
            Arc::new(StringArray::from_iter_values(
                a.iter().map(|x| x.chain.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                a.iter().map(|x| x.address.as_str()),
            )),
            Arc::new(Float64Array::from_iter(a.iter().map(|x| x.amount))),
            Arc::new(StringArray::from_iter(a.iter().map(|x| x.asset.as_deref()))),
            Arc::new(StringArray::from_iter(a.iter().map(|x| x.txid.as_deref()))),
            Arc::new(Int64Array::from_iter(a.iter().map(|x| x.height))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(micros(at), n))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                a.iter().map(|x| x.detail.as_str()),
            )),
        ],
    )?)
}

fn runs_batch(
    case: &Case,
    r: &RunReport,
    parts: &BTreeMap<String, ChainPart>,
    labels_run: Option<&str>,
) -> Result<RecordBatch> {
    let tip = |c: &str| parts.get(c).map(|p| &p.tip);
    let one_str = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let one_int = |v: Option<i64>| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
    let ts = |t: DateTime<Utc>| {
        Arc::new(TimestampMicrosecondArray::from(vec![micros(t)]).with_timezone("UTC")) as ArrayRef
    };
    let params = serde_json::to_string(&case.params()).unwrap_or_default();
    Ok(RecordBatch::try_new(
        ferret_schemas::cases::case_runs_schema(),
        vec![
            one_str(Some(&case.name)),
            one_str(Some(&r.run_id)),
            ts(r.started_at),
            ts(r.finished_at),
            one_str(Some(&case.chains.join(","))),
            one_int(tip("btc").and_then(|t| t.0).map(|h| h as i64)),
            one_str(tip("btc").and_then(|t| t.1.as_deref())),
            one_int(parts.get("btc").and_then(|p| p.seq).map(|s| s as i64)),
            one_int(tip("eth").and_then(|t| t.0).map(|h| h as i64)),
            one_str(tip("eth").and_then(|t| t.1.as_deref())),
            one_int(parts.get("eth").and_then(|p| p.seq).map(|s| s as i64)),
            one_str(labels_run),
            one_str(parts.get("btc").and_then(|p| p.clusters_run.as_deref())),
            one_str(parts.get("eth").and_then(|p| p.clusters_run.as_deref())),
            one_str(Some(&case.sha256)),
            one_str(Some(&params)),
            one_str(Some(env!("CARGO_PKG_VERSION"))),
            one_str(r.previous_run.as_deref()),
            one_int(Some(r.taint_rows as i64)),
            one_int(Some(r.exits as i64)),
            one_int(Some(r.members as i64)),
            one_int(Some(r.alerts.len() as i64)),
        ],
    )?)
}

/// The chain's tip and manifest sequence, or an error when it was never indexed.
async fn tip(
    wh: &Warehouse,
    case: &Case,
    chain: &str,
) -> Result<((Option<u64>, Option<String>), Option<u64>)> {
    let m = wh
        .load_manifest(chain_of(chain)?)
        .await?
        .ok_or_else(|| Error::Refused {
            case: case.name.clone(),
            reason: format!(
                "the warehouse has no {chain} chain: index it first (`ferret index {chain}`)"
            ),
        })?;
    Ok((
        (
            m.tip.as_ref().map(|t| t.height),
            m.tip.as_ref().map(|t| t.hash.clone()),
        ),
        Some(m.seq),
    ))
}

/// The categories of `wanted` that some label of the chain has; an error when one is on
/// none of the case's chains is raised by the caller.
fn present(labels: &[(String, String, String)], wanted: &[String]) -> Vec<String> {
    let have: HashSet<&str> = labels.iter().map(|l| l.2.as_str()).collect();
    wanted
        .iter()
        .filter(|c| have.contains(c.as_str()))
        .cloned()
        .collect()
}

/// Every seed category must be on at least one of the case's chains (a typo would seed
/// nothing).
fn check_seed_categories(
    case: &Case,
    labels: &BTreeMap<String, Vec<(String, String, String)>>,
) -> Result<()> {
    let have: HashSet<&str> = labels.values().flatten().map(|l| l.2.as_str()).collect();
    for c in &case.seeds.categories {
        if !have.contains(c.as_str()) {
            return Err(Error::Refused {
                case: case.name.clone(),
                reason: format!(
                    "no address on {} is labelled with category `{c}`: import labels first (`ferret labels import`)",
                    case.chains.join(" or ")
                ),
            });
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn btc_part(
    wh: &Warehouse,
    case: &Case,
    backend: &Backend,
    run_id: &str,
    labels: &[(String, String, String)],
    heads: &BTreeMap<String, LatestRun>,
    labels_run: Option<&str>,
    full: bool,
) -> Result<ChainPart> {
    use ferret_kernels::taint::job::{TaintJob, TaintRun};
    use ferret_kernels::taint::resume::{merge_flows, resume_btc};
    let (tip, seq) = tip(wh, case, "btc").await?;
    let t = &case.taint;
    let job = TaintJob {
        policy: t.btc_policy,
        direction: t.direction,
        max_hops: t.hops,
        min_value: t.min_value as i64,
        seed_addresses: case.seeds.btc_addresses.clone(),
        seed_txids: case.seeds.txids.clone(),
        seed_categories: present(labels, &case.seeds.categories),
        stop_categories: present(labels, &t.stop_at),
        with_flows: true,
    };
    let mut part = ChainPart {
        tip,
        seq,
        ..Default::default()
    };
    let seeds = seed_addresses(&case.seeds.btc_addresses, labels, &job.seed_categories);
    if job.seed_addresses.is_empty() && job.seed_txids.is_empty() && job.seed_categories.is_empty()
    {
        tracing::info!(case = %case.name, "no Bitcoin seeds: nothing to trace on btc");
    } else if job.direction == ferret_kernels::taint::Direction::Forward {
        // Forward: resumed from the previous run's state where it still holds.
        let plan = resume_plan(wh, case, heads, labels_run, full, "btc").await?;
        let state = match &plan.meta {
            Some(m) => {
                let files = |t: &str| run_files(heads, &case.name, t, &m.run_id);
                Some(
                    crate::state::load(
                        wh,
                        &case.name,
                        &m.state,
                        &files("state"),
                        &files("state_exits"),
                    )
                    .await?,
                )
            }
            None => None,
        };
        let resumed = resume_btc(wh, state.as_ref(), &job, labels).await?;
        let mut run: TaintRun = resumed.run;
        if let Some(prev) = plan.previous() {
            let mut outputs =
                crate::state::taint_rows(wh, &run_files(heads, &case.name, "taint", prev)).await?;
            let old_walk = state.as_ref().map_or(0, |s| s.walk.len());
            if outputs.len() != old_walk {
                return Err(Error::Damaged {
                    case: case.name.clone(),
                    reason: format!(
                        "run {prev} has {} taint rows and its state {old_walk}: run with --full",
                        outputs.len()
                    ),
                });
            }
            outputs.append(&mut run.outputs);
            run.outputs = outputs;
            let mut flows =
                crate::state::btc_flows(wh, &run_files(heads, &case.name, "flows", prev)).await?;
            merge_flows(&mut flows, std::mem::take(&mut run.flows));
            run.flows = flows;
        }
        part.paths =
            crate::evidence::btc_paths(&run.outputs, &resumed.state.walk, &run.exits, true)?;
        let (state, state_exits) = crate::state::batches(&case.name, run_id, &resumed.state)?;
        let meta = crate::state::meta_batch(
            &case.name,
            run_id,
            "btc",
            (part.tip.0, part.tip.1.as_deref()),
            labels_run,
            &case.sha256,
            &crate::state::meta(&resumed.state),
        )?;
        part.state = vec![
            ("state", state),
            ("state_exits", state_exits),
            ("state_meta", meta),
        ];
        let latest = heads
            .get(&case_job(&case.name, "runs"))
            .map(|r| r.run_id.as_str());
        let (line, json) = plan.mode(resumed.from.map(|h| h as i64), latest);
        part.mode = Some(line);
        part.resume = Some(json);
        finish_btc(&mut part, &run, run_id)?;
    } else {
        // Backward: new blocks change what earlier outputs came from; from scratch.
        let g = ferret_kernels::taint::SpendGraph::from_warehouse(wh).await?;
        let run = ferret_kernels::taint::job::run_on_graph(&g, backend, &job, labels)?;
        drop(g);
        part.mode = Some("full: backward taint".into());
        part.resume = Some(serde_json::json!({"mode": "full", "why": "backward taint"}));
        finish_btc(&mut part, &run, run_id)?;
    }
    let (members, clusters_run) = members(
        wh,
        "btc",
        heads.get("clusters"),
        &seeds,
        case.seeds.max_cluster_size,
        &mut part.held,
    )
    .await?;
    part.members = members;
    part.clusters_run = clusters_run;
    Ok(part)
}

/// A Bitcoin run's rows into the part: taint, exits, flows, unknown seeds.
fn finish_btc(
    part: &mut ChainPart,
    run: &ferret_kernels::taint::job::TaintRun,
    run_id: &str,
) -> Result<()> {
    use ferret_kernels::taint::job::{exits_batch, taint_batch};
    part.flows = crate::evidence::btc_flows(run);
    part.taint = Some(taint_batch(run, run_id)?);
    part.exits_batch = Some(exits_batch(run, run_id)?);
    let mut paying: HashMap<&str, Vec<(String, i32, f64)>> = run
        .exits
        .iter()
        .map(|e| (e.address.as_str(), Vec::new()))
        .collect();
    for o in &run.outputs {
        if let Some(v) = o.address.as_deref().and_then(|a| paying.get_mut(a)) {
            v.push((o.txid.clone(), o.vout as i32, o.tainted_value as f64));
        }
    }
    part.exits = run
        .exits
        .iter()
        .map(|e| ExitRow {
            outputs: paying.remove(e.address.as_str()).unwrap_or_default(),
            first: None,
            chain: "btc".into(),
            address: e.address.clone(),
            asset: "BTC".into(),
            label: e.label.clone(),
            category: e.category.clone(),
            value: e.tainted_value as f64,
            min_hop: i64::from(e.min_hop),
        })
        .collect();
    part.unknown_seeds = run.unknown_seeds.clone();
    Ok(())
}

/// Whether a chain's taint resumes: the earlier run to resume from, or why not.
struct ResumePlan {
    meta: Option<crate::state::MetaRow>,
    why: String,
}

impl ResumePlan {
    fn previous(&self) -> Option<&str> {
        self.meta.as_ref().map(|m| m.run_id.as_str())
    }

    /// How the run traced, for `case run` and the record.
    fn mode(&self, from: Option<i64>, latest: Option<&str>) -> (String, serde_json::Value) {
        let line = match (self.previous(), from) {
            (Some(p), Some(h)) if Some(p) == latest => {
                format!("incremental: blocks above height {h}")
            }
            (Some(p), Some(h)) => format!(
                "incremental: blocks above height {h}, from run {p} ({})",
                self.why
            ),
            (Some(_), None) => "incremental: every block".into(),
            (None, _) => format!("full: {}", self.why),
        };
        let json = serde_json::json!({
            "mode": if self.meta.is_some() { "incremental" } else { "full" },
            "from_height": from,
            "from_run": self.previous(),
            "why": (!self.why.is_empty()).then_some(self.why.as_str()),
        });
        (line, json)
    }
}

/// The newest earlier run of the case whose `chain` state still holds: the same case
/// file and labels, a state of this build's format, its tip still on the chain.
async fn resume_plan(
    wh: &Warehouse,
    case: &Case,
    heads: &BTreeMap<String, LatestRun>,
    labels_run: Option<&str>,
    full: bool,
    chain: &str,
) -> Result<ResumePlan> {
    let no = |why: String| Ok(ResumePlan { meta: None, why });
    if full {
        return no("asked for (--full)".into());
    }
    let format = match chain {
        "btc" => ferret_kernels::taint::resume::STATE_FORMAT,
        _ => ferret_kernels::account::resume::ETH_STATE_FORMAT,
    };
    let Some(kept) = heads.get(&case_job(&case.name, "state_meta")) else {
        return no(if heads.contains_key(&case_job(&case.name, "runs")) {
            format!("no earlier run kept a {chain} state")
        } else {
            "the case's first run".into()
        });
    };
    let mut why: Option<String> = None;
    let mut hashes: HashMap<u64, Option<String>> = HashMap::new();
    for f in kept.files.iter().rev() {
        for m in crate::state::read_meta(wh, &case.name, f).await? {
            if m.chain != chain {
                continue;
            }
            let reason = if m.case_sha256 != case.sha256 {
                Some("the case file changed")
            } else if m.labels_run.as_deref() != labels_run {
                Some("the labels changed")
            } else if m.state.get("format").and_then(|v| v.as_u64()) != Some(u64::from(format)) {
                Some("its state is of another format")
            } else {
                match (m.height, &m.hash) {
                    (Some(h), Some(hash)) => {
                        let on_chain = match hashes.get(&h) {
                            Some(x) => x.clone(),
                            None => {
                                let x = block_hash(wh, chain, h).await?;
                                hashes.insert(h, x.clone());
                                x
                            }
                        };
                        (on_chain.as_deref() != Some(hash.as_str()))
                            .then_some("a reorg replaced its tip")
                    }
                    _ => Some("it read no tip"),
                }
            };
            if let Some(r) = reason {
                why.get_or_insert_with(|| format!("run {}: {r}", m.run_id));
                continue;
            }
            let at = m.state.get("height").and_then(|v| v.as_i64());
            if at.map(|h| h as u64) != m.height {
                return Err(Error::Damaged {
                    case: case.name.clone(),
                    reason: format!(
                        "run {}: its {chain} state is not at its tip (run with --full)",
                        m.run_id
                    ),
                });
            }
            return Ok(ResumePlan {
                meta: Some(m),
                why: why.unwrap_or_default(),
            });
        }
    }
    no(why.unwrap_or_else(|| format!("no earlier run kept a {chain} state")))
}

/// The hash of the block at `height` on the indexed `chain`, if it has one.
async fn block_hash(wh: &Warehouse, chain: &str, height: u64) -> Result<Option<String>> {
    Ok(ferret_kernels::blocks::block_hash(wh, chain_of(chain)?, height).await?)
}

#[allow(clippy::too_many_arguments)]
async fn eth_part(
    wh: &Warehouse,
    case: &Case,
    backend: &Backend,
    run_id: &str,
    labels: &[(String, String, String)],
    heads: &BTreeMap<String, LatestRun>,
    labels_run: Option<&str>,
    full: bool,
) -> Result<ChainPart> {
    use ferret_kernels::account::job::{EthTaintJob, eth_exits_batch, eth_taint_batch, taint_eth};
    let (tip, seq) = tip(wh, case, "eth").await?;
    let t = &case.taint;
    let job = EthTaintJob {
        policy: t.eth_policy,
        direction: t.direction,
        asset: t.asset.clone(),
        max_hops: t.hops,
        min_value: t.min_value,
        seed_addresses: case.seeds.eth_addresses.clone(),
        seed_categories: present(labels, &case.seeds.categories),
        stop_categories: present(labels, &t.stop_at),
    };
    let mut part = ChainPart {
        tip,
        seq,
        ..Default::default()
    };
    let seeds = seed_addresses(&case.seeds.eth_addresses, labels, &job.seed_categories);
    if job.seed_addresses.is_empty() && job.seed_categories.is_empty() {
        tracing::info!(case = %case.name, "no Ethereum seeds: nothing to trace on eth");
    } else {
        let run = if job.direction == ferret_kernels::taint::Direction::Forward {
            // Forward: resumed from an earlier run's state where one still holds.
            use ferret_kernels::account::resume::resume_eth;
            let mut plan = resume_plan(wh, case, heads, labels_run, full, "eth").await?;
            let state = match &plan.meta {
                Some(m) => {
                    let files = |t: &str| run_files(heads, &case.name, t, &m.run_id);
                    Some(
                        crate::state::load_eth(
                            wh,
                            &case.name,
                            &m.state,
                            &files("eth_state"),
                            &files("eth_state_edges"),
                        )
                        .await?,
                    )
                }
                None => None,
            };
            let resumed = match resume_eth(wh, state.as_ref(), &job, labels).await? {
                Ok(r) => r,
                Err(why) => {
                    plan = ResumePlan {
                        meta: None,
                        why: why.clone(),
                    };
                    resume_eth(wh, None, &job, labels)
                        .await?
                        .map_err(Error::Query)?
                }
            };
            let latest = heads
                .get(&case_job(&case.name, "runs"))
                .map(|r| r.run_id.as_str());
            let (line, json) = plan.mode(resumed.from, latest);
            part.mode = Some(line);
            part.resume = Some(json);
            part.state = crate::state::eth_batches(
                &case.name,
                run_id,
                &resumed.state,
                (part.tip.0, part.tip.1.as_deref()),
                labels_run,
                &case.sha256,
            )?
            .into_iter()
            .zip(["eth_state", "eth_state_edges", "state_meta"])
            .map(|(b, t)| (t, b))
            .collect();
            resumed.run
        } else {
            part.mode = Some("full: backward taint".into());
            part.resume = Some(serde_json::json!({"mode": "full", "why": "backward taint"}));
            taint_eth(wh, backend, &job).await?
        };
        part.flows = crate::evidence::eth_flows(&run);
        part.paths = crate::evidence::eth_paths(&run);
        let taint = eth_taint_batch(&run, run_id)?;
        // The transfer that first brought each address taint, from the table's rows.
        let mut first: HashMap<String, (String, Option<i64>)> = HashMap::new();
        {
            let col = |n: &str| {
                taint
                    .column_by_name(n)
                    .ok_or_else(|| Error::Query(format!("eth_taint: no `{n}`")))
            };
            let a = col("address")?.as_string::<i32>();
            let h = col("first_transaction_hash")?.as_string::<i32>();
            let b = col("first_block")?.as_primitive::<Int64Type>();
            for i in 0..taint.num_rows() {
                if h.is_valid(i) {
                    first.insert(
                        a.value(i).to_string(),
                        (h.value(i).to_string(), b.is_valid(i).then(|| b.value(i))),
                    );
                }
            }
        }
        part.taint = Some(taint);
        part.exits_batch = Some(eth_exits_batch(&run, run_id)?);
        part.exits = run
            .exits
            .iter()
            .map(|e| ExitRow {
                outputs: Vec::new(),
                first: first.get(&e.address).cloned(),
                chain: "eth".into(),
                address: e.address.clone(),
                asset: job.asset.clone(),
                label: e.label.clone(),
                category: e.category.clone(),
                value: e.tainted_value,
                min_hop: i64::from(e.min_hop),
            })
            .collect();
        part.unknown_seeds = run.unknown_seeds.clone();
    }
    let (members, clusters_run) = members(
        wh,
        "eth",
        heads.get("eth_clusters"),
        &seeds,
        case.seeds.max_cluster_size,
        &mut part.held,
    )
    .await?;
    part.members = members;
    part.clusters_run = clusters_run;
    Ok(part)
}

/// The seed addresses: named ones and those labelled with a seed category.
fn seed_addresses(
    named: &[String],
    labels: &[(String, String, String)],
    categories: &[String],
) -> BTreeSet<String> {
    let cats: HashSet<&str> = categories.iter().map(String::as_str).collect();
    named
        .iter()
        .cloned()
        .chain(
            labels
                .iter()
                .filter(|l| cats.contains(l.2.as_str()))
                .map(|l| l.0.clone()),
        )
        .collect()
}

/// The addresses in the seeds' clusters (from the chain's latest clustering; each seed
/// is a member of its own cluster) and the clustering run read.
/// A seed cluster too large to expand (above the case's `max_cluster_size`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCluster {
    pub chain: String,
    pub seed: String,
    pub cluster_id: i64,
    pub size: i64,
}

async fn members(
    wh: &Warehouse,
    chain: &str,
    run: Option<&LatestRun>,
    seeds: &BTreeSet<String>,
    max_size: i64,
    held: &mut Vec<HeldCluster>,
) -> Result<(Vec<Member>, Option<String>)> {
    // Seed → cluster, then every address of those clusters, a file at a time.
    let mut cluster_of: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut out = Vec::new();
    if let Some(run) = run {
        for f in &run.files {
            for b in wh
                .read_columns(f, &["address", "cluster_id", "cluster_size"])
                .await?
            {
                let (addr, cid) = address_cluster(&b)?;
                let size = b.column(2).as_primitive_opt::<Int64Type>().ok_or_else(|| {
                    Error::Query("clusters: cluster_size is not an integer".into())
                })?;
                for i in 0..b.num_rows() {
                    if let Some(s) = seeds.get(addr.value(i)) {
                        cluster_of.insert(s.as_str(), (cid.value(i), size.value(i)));
                    }
                }
            }
        }
        let mut seed_of: HashMap<i64, &str> = HashMap::new();
        for (s, (c, size)) in &cluster_of {
            if *size > max_size {
                // Only the seed itself: its cluster is an exchange's or a service's size.
                tracing::warn!(chain, seed = %s, cluster = c, size, max_size, "a seed's cluster is too large to expand into members");
                held.push(HeldCluster {
                    chain: chain.to_string(),
                    seed: s.to_string(),
                    cluster_id: *c,
                    size: *size,
                });
                out.push(Member {
                    chain: chain.into(),
                    address: s.to_string(),
                    cluster_id: Some(*c),
                    seed: s.to_string(),
                });
                continue;
            }
            seed_of.entry(*c).or_insert(s);
        }
        if !seed_of.is_empty() {
            for f in &run.files {
                for b in wh.read_columns(f, &["address", "cluster_id"]).await? {
                    let (addr, cid) = address_cluster(&b)?;
                    for i in 0..b.num_rows() {
                        let c = cid.value(i);
                        if let Some(s) = seed_of.get(&c) {
                            let a = addr.value(i);
                            // A seed is its own seed, whichever seed named the cluster.
                            let seed = if seeds.contains(a) { a } else { s };
                            out.push(Member {
                                chain: chain.into(),
                                address: a.to_string(),
                                cluster_id: Some(c),
                                seed: seed.to_string(),
                            });
                        }
                    }
                }
            }
        }
    }
    for s in seeds {
        if !cluster_of.contains_key(s.as_str()) {
            out.push(Member {
                chain: chain.into(),
                address: s.clone(),
                cluster_id: None,
                seed: s.clone(),
            });
        }
    }
    out.sort();
    out.dedup();
    Ok((out, run.map(|r| r.run_id.clone())))
}

fn address_cluster(
    b: &RecordBatch,
) -> Result<(&StringArray, &arrow::array::PrimitiveArray<Int64Type>)> {
    let bad = || Error::Query("clusters: unexpected column types".into());
    let addr = b.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
    let cid = b
        .column(1)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(bad)?;
    Ok((addr, cid))
}

/// What the previous run found, and every watchlist alert of the case so far.
struct Previous {
    exits: HashMap<(String, String, String), f64>,
    /// Tainted outputs that paid an exit (Bitcoin): txid, vout.
    exit_outputs: HashSet<(String, i32)>,
    members: HashSet<(String, String)>,
    watched: HashSet<(String, String, String, String)>,
    /// Typology findings alerted so far: (chain, address, pattern).
    typed: HashSet<(String, String, String)>,
    /// Per exit (chain, address, asset): whether a `new_exit` alert was raised, and the
    /// tainted value the alerts so far add up to (the baseline of the next increase).
    alerted: HashMap<(String, String, String), (bool, f64)>,
    tips: HashMap<String, (i64, String)>,
}

impl Previous {
    async fn load(
        wh: &Warehouse,
        heads: &BTreeMap<String, LatestRun>,
        case: &str,
        run_id: &str,
    ) -> Result<Self> {
        let files = |table: &str| run_files(heads, case, table, run_id);
        let mut p = Previous {
            exits: HashMap::new(),
            exit_outputs: HashSet::new(),
            members: HashSet::new(),
            watched: HashSet::new(),
            typed: HashSet::new(),
            alerted: HashMap::new(),
            tips: HashMap::new(),
        };
        for f in files("exits") {
            for b in wh.read_columns(&f, &["address", "tainted_value"]).await? {
                let a = b.column(0).as_string::<i32>();
                let v = b.column(1).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    p.exits.insert(
                        ("btc".into(), a.value(i).into(), "BTC".into()),
                        v.value(i) as f64,
                    );
                }
            }
        }
        for f in files("taint") {
            for b in wh.read_columns(&f, &["address", "txid", "vout"]).await? {
                let a = b.column(0).as_string::<i32>();
                let t = b.column(1).as_string::<i32>();
                let v = b.column(2).as_primitive::<arrow::datatypes::Int32Type>();
                for i in 0..b.num_rows() {
                    let key = ("btc".to_string(), a.value(i).to_string(), "BTC".to_string());
                    if a.is_valid(i) && p.exits.contains_key(&key) {
                        p.exit_outputs.insert((t.value(i).to_string(), v.value(i)));
                    }
                }
            }
        }
        for f in files("eth_exits") {
            for b in wh
                .read_columns(&f, &["address", "asset", "tainted_value"])
                .await?
            {
                let a = b.column(0).as_string::<i32>();
                let s = b.column(1).as_string::<i32>();
                let v = b.column(2).as_primitive::<Float64Type>();
                for i in 0..b.num_rows() {
                    p.exits.insert(
                        ("eth".into(), a.value(i).into(), s.value(i).into()),
                        v.value(i),
                    );
                }
            }
        }
        for f in files("members") {
            for b in wh.read_columns(&f, &["chain", "address"]).await? {
                let c = b.column(0).as_string::<i32>();
                let a = b.column(1).as_string::<i32>();
                for i in 0..b.num_rows() {
                    p.members.insert((c.value(i).into(), a.value(i).into()));
                }
            }
        }
        for f in files("runs") {
            for b in wh
                .read_columns(
                    &f,
                    &[
                        "btc_tip_height",
                        "btc_tip_hash",
                        "eth_tip_height",
                        "eth_tip_hash",
                    ],
                )
                .await?
            {
                for (chain, h, x) in [("btc", 0, 1), ("eth", 2, 3)] {
                    let hs = b.column(h).as_primitive::<Int64Type>();
                    let xs = b.column(x).as_string::<i32>();
                    if b.num_rows() > 0 && hs.is_valid(0) && xs.is_valid(0) {
                        p.tips
                            .insert(chain.into(), (hs.value(0), xs.value(0).into()));
                    }
                }
            }
        }
        // Watchlist alerts of every run: a transaction is reported once.
        if let Some(r) = heads.get(&case_job(case, "alerts")) {
            for f in &r.files {
                for b in wh
                    .read_columns(
                        f,
                        &[
                            "kind", "chain", "address", "txid", "detail", "amount", "asset",
                        ],
                    )
                    .await?
                {
                    let k = b.column(0).as_string::<i32>();
                    let c = b.column(1).as_string::<i32>();
                    let a = b.column(2).as_string::<i32>();
                    let t = b.column(3).as_string::<i32>();
                    let d = b.column(4).as_string::<i32>();
                    let v = b.column(5).as_primitive::<Float64Type>();
                    let s = b.column(6).as_string::<i32>();
                    for i in 0..b.num_rows() {
                        let kind = k.value(i);
                        if (kind == "new_exit" || kind == "exit_increase") && s.is_valid(i) {
                            let e = p
                                .alerted
                                .entry((c.value(i).into(), a.value(i).into(), s.value(i).into()))
                                .or_insert((false, 0.0));
                            e.0 |= kind == "new_exit";
                            e.1 += if v.is_valid(i) { v.value(i) } else { 0.0 };
                        }
                        if kind == "typology" {
                            let pattern = d.value(i).split(' ').next().unwrap_or_default();
                            p.typed
                                .insert((c.value(i).into(), a.value(i).into(), pattern.into()));
                        }
                        if kind == "watchlist" {
                            p.watched.insert((
                                c.value(i).into(),
                                a.value(i).into(),
                                t.value(i).into(),
                                d.value(i).into(),
                            ));
                        }
                    }
                }
            }
        }
        Ok(p)
    }
}

fn diff_exits(case: &Case, prev: Option<&Previous>, exits: &[&ExitRow], out: &mut Vec<Alert>) {
    for e in exits {
        let key = (e.chain.clone(), e.address.clone(), e.asset.clone());
        // Against what the alerts so far reported, not only the previous run: growth in
        // steps each below `min_increase` adds up until it is worth an alert.
        let before = prev
            .and_then(|p| p.alerted.get(&key))
            .filter(|(announced, _)| *announced)
            .map(|(_, sum)| *sum);
        // The evidence: the largest tainted output paying it that the previous run did
        // not have (Bitcoin), or the transfer that first brought it taint (Ethereum).
        let fresh: Vec<&(String, i32, f64)> = e
            .outputs
            .iter()
            .filter(|(t, v, _)| !prev.is_some_and(|p| p.exit_outputs.contains(&(t.clone(), *v))))
            .collect();
        let (txid, height) = match (fresh.iter().max_by(|a, b| a.2.total_cmp(&b.2)), &e.first) {
            (Some((t, _, _)), _) => (Some(t.clone()), None),
            (None, Some((t, h))) => (Some(t.clone()), *h),
            (None, None) => (None, None),
        };
        let outputs = if e.chain == "btc" {
            format!(", {} new tainted outputs", fresh.len())
        } else {
            String::new()
        };
        let (kind, amount, detail) = match before {
            None => (
                "new_exit",
                e.value,
                format!(
                    "{} ({}) received taint, min hop {}{outputs}",
                    e.label, e.category, e.min_hop
                ),
            ),
            Some(b) => {
                let delta = e.value - b;
                // Float sums of Ethereum haircut amounts: ignore changes in the last digits.
                let noise = b.abs() * 1e-9;
                if delta <= case.alerts.min_increase.max(noise) || delta <= 0.0 {
                    continue;
                }
                (
                    "exit_increase",
                    delta,
                    format!(
                        "{} ({}) received more taint: {b} reported before, {} now{outputs}",
                        e.label, e.category, e.value
                    ),
                )
            }
        };
        if kind == "new_exit" && amount < case.alerts.min_increase {
            continue;
        }
        out.push(Alert {
            alert_id: String::new(),
            seq: 0,
            kind,
            chain: e.chain.clone(),
            address: e.address.clone(),
            amount: Some(amount),
            asset: Some(e.asset.clone()),
            txid,
            height,
            detail,
        });
    }
}

fn diff_members(prev: Option<&Previous>, members: &[&Member], out: &mut Vec<Alert>) {
    for m in members {
        if m.address == m.seed {
            continue;
        }
        if prev.is_some_and(|p| p.members.contains(&(m.chain.clone(), m.address.clone()))) {
            continue;
        }
        out.push(Alert {
            alert_id: String::new(),
            seq: 0,
            kind: "new_member",
            chain: m.chain.clone(),
            address: m.address.clone(),
            amount: None,
            asset: None,
            txid: None,
            height: None,
            detail: format!(
                "joined the cluster of seed {}{}",
                m.seed,
                m.cluster_id
                    .map(|c| format!(" (cluster {c})"))
                    .unwrap_or_default()
            ),
        });
    }
}

/// SQL text of a list of (validated, normalised) addresses.
fn sql_list(addrs: &[String]) -> String {
    addrs
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Transactions of watched addresses in the blocks the previous run did not see (all
/// blocks for a first run, or when the previous run's tip is no longer on the chain),
/// not reported before.
async fn watchlist(
    wh: &Warehouse,
    case: &Case,
    prev: Option<&Previous>,
    parts: &BTreeMap<String, ChainPart>,
    out: &mut Vec<Alert>,
) -> Result<()> {
    if case.alerts.watch_btc.is_empty() && case.alerts.watch_eth.is_empty() {
        return Ok(());
    }
    let ctx = ferret_query::session(wh).await?;
    let one = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&sql).await?.collect().await?;
            Ok::<_, Error>(batches)
        }
    };
    for (chain, watch, blocks, height_col, hash_col) in [
        (
            "btc",
            &case.alerts.watch_btc,
            "btc.blocks",
            "height",
            "hash",
        ),
        (
            "eth",
            &case.alerts.watch_eth,
            "eth.blocks",
            "block_number",
            "block_hash",
        ),
    ] {
        if watch.is_empty() {
            continue;
        }
        let Some(part) = parts.get(chain) else {
            continue;
        };
        let tip = part.tip.0.map_or(-1, |h| h as i64);
        // From the previous tip when it is still on the chain.
        let mut from = -1i64;
        if let Some((h, hash)) = prev.and_then(|p| p.tips.get(chain)) {
            let b = one(format!(
                "SELECT {hash_col} FROM {blocks} WHERE {height_col} = {h}"
            ))
            .await?;
            let still = b.iter().any(|b| {
                b.num_rows() > 0
                    && b.column(0)
                        .as_string_opt::<i32>()
                        .is_some_and(|c| c.value(0) == hash)
            });
            if still {
                from = *h;
            } else {
                tracing::info!(case = %case.name, chain, height = h, "the previous run's tip is no longer on the chain: the watchlist is checked from the first block");
            }
        }
        let list = sql_list(watch);
        let sql = if chain == "btc" {
            format!(
                "SELECT address, txid, height, CAST(value AS DOUBLE) AS amount, 'received' AS what, 'BTC' AS asset FROM btc.outputs \
                 WHERE address IN ({list}) AND height > {from} AND height <= {tip} \
                 UNION ALL SELECT address, txid, height, CAST(value AS DOUBLE), 'spent', 'BTC' FROM btc.inputs \
                 WHERE address IN ({list}) AND height > {from} AND height <= {tip} \
                 ORDER BY height, txid, what, address"
            )
        } else {
            format!(
                "SELECT to_address AS address, transaction_hash, block_number, CAST(value_string AS DOUBLE), 'received' AS what, asset FROM eth.transfers \
                 WHERE to_address IN ({list}) AND block_number > {from} AND block_number <= {tip} \
                 UNION ALL SELECT from_address, transaction_hash, block_number, CAST(value_string AS DOUBLE), 'sent', asset FROM eth.transfers \
                 WHERE from_address IN ({list}) AND block_number > {from} AND block_number <= {tip} \
                 ORDER BY 3, 2, 5, 1"
            )
        };
        // One alert per (address, transaction, direction, asset), amounts summed.
        let mut found: BTreeMap<(i64, String, String, String, String), f64> = BTreeMap::new();
        for b in one(sql).await? {
            let a = b.column(0).as_string::<i32>();
            let t = b.column(1).as_string::<i32>();
            let h = b.column(2).as_primitive::<Int64Type>();
            let v = b.column(3).as_primitive::<Float64Type>();
            let w = b.column(4).as_string::<i32>();
            let s = b.column(5).as_string::<i32>();
            for i in 0..b.num_rows() {
                let amount = if v.is_valid(i) { v.value(i) } else { 0.0 };
                *found
                    .entry((
                        h.value(i),
                        t.value(i).into(),
                        w.value(i).into(),
                        a.value(i).into(),
                        s.value(i).into(),
                    ))
                    .or_default() += amount;
            }
        }
        for ((height, txid, what, address, asset), amount) in found {
            let detail = format!("watched address {what} {asset}");
            let key = (
                chain.to_string(),
                address.clone(),
                txid.clone(),
                detail.clone(),
            );
            if prev.is_some_and(|p| p.watched.contains(&key)) {
                continue;
            }
            out.push(Alert {
                alert_id: String::new(),
                seq: 0,
                kind: "watchlist",
                chain: chain.into(),
                address,
                amount: Some(amount),
                asset: Some(asset),
                txid: Some(txid),
                height: Some(height),
                detail,
            });
        }
    }
    Ok(())
}

/// Findings of the subscribed typology patterns (the latest `typologies` run) whose
/// address this run found a member of a seed's cluster, an exit, or tainted: one alert per
/// (chain, address, pattern) over the case's life.
async fn typology_alerts(
    wh: &Warehouse,
    case: &Case,
    prev: Option<&Previous>,
    parts: &BTreeMap<String, ChainPart>,
    out: &mut Vec<Alert>,
) -> Result<()> {
    if case.alerts.typologies.is_empty() {
        return Ok(());
    }
    // Ethereum addresses compare without case (checksummed or not); Bitcoin's base58
    // addresses are case-sensitive.
    let norm = |chain: &str, a: &str| {
        if chain == "eth" {
            a.to_lowercase()
        } else {
            a.to_string()
        }
    };
    // What the case touches, per chain, and how.
    let mut touched: HashMap<(String, String), &'static str> = HashMap::new();
    for (chain, part) in parts {
        if let Some(t) = &part.taint
            && let Some(c) = t.column_by_name("address")
        {
            let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
                .map_err(|e| Error::Query(format!("taint addresses: {e}")))?;
            let c = c.as_string::<i32>();
            for i in 0..c.len() {
                if c.is_valid(i) {
                    touched.insert((chain.clone(), norm(chain, c.value(i))), "tainted");
                }
            }
        }
        for e in &part.exits {
            touched.insert((chain.clone(), norm(chain, &e.address)), "an exit");
        }
        for m in &part.members {
            touched.insert(
                (chain.clone(), norm(chain, &m.address)),
                "a member of a seed's cluster",
            );
        }
    }
    let wanted: HashSet<&str> = case.alerts.typologies.iter().map(String::as_str).collect();
    let batches = wh.read_latest("typologies").await?;
    // Findings the case does not touch may still pay it: a collection address that later
    // pays a member of a seed's cluster. Not a poisoner's look-alike (paying dust to
    // victims is what it does) nor a CoinJoin user (a mix pays everyone in it); nor a
    // finding alerted before.
    let mut untouched: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for b in &batches {
        let (Some(p), Some(ch), Some(a)) = (
            b.column_by_name("pattern"),
            b.column_by_name("chain"),
            b.column_by_name("address"),
        ) else {
            continue;
        };
        let (Some(p), Some(ch), Some(a)) = (
            p.as_string_opt::<i32>(),
            ch.as_string_opt::<i32>(),
            a.as_string_opt::<i32>(),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            if p.is_valid(i)
                && ch.is_valid(i)
                && a.is_valid(i)
                && wanted.contains(p.value(i))
                && !matches!(p.value(i), "address_poisoning" | "coinjoin")
            {
                let (chain, addr) = (ch.value(i), norm(ch.value(i), a.value(i)));
                let key = (chain.to_string(), addr.clone(), p.value(i).to_string());
                if !touched.contains_key(&(chain.to_string(), addr.clone()))
                    && !prev.is_some_and(|x| x.typed.contains(&key))
                {
                    untouched.entry(chain.to_string()).or_default().insert(addr);
                }
            }
        }
    }
    let mut pays: HashMap<(String, String), String> = HashMap::new();
    for (chain, addrs) in &untouched {
        let Some(part) = parts.get(chain) else {
            continue;
        };
        let members: BTreeSet<String> = part
            .members
            .iter()
            .map(|m| norm(chain, &m.address))
            .collect();
        if members.is_empty() {
            continue;
        }
        for (payer, txid) in payments_to(wh, chain, addrs, &members).await? {
            pays.insert((chain.clone(), payer), txid);
        }
    }
    let mut found: BTreeMap<(String, String, String), Alert> = BTreeMap::new();
    for b in &batches {
        let col = |n: &str| -> Result<arrow::array::ArrayRef> {
            let c = b
                .column_by_name(n)
                .ok_or_else(|| Error::Query(format!("typologies: no column {n}")))?;
            arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
                .map_err(|e| Error::Query(format!("typologies.{n}: {e}")))
        };
        let (pattern, chain, address, last, amount, score) = (
            col("pattern")?,
            col("chain")?,
            col("address")?,
            col("last_height")?,
            col("amount")?,
            col("score")?,
        );
        let txids = b
            .column_by_name("txids")
            .and_then(|c| c.as_list_opt::<i32>())
            .ok_or_else(|| Error::Query("typologies: no list column txids".into()))?;
        let s = |c: &arrow::array::ArrayRef, i: usize| {
            let c = c.as_string::<i32>();
            c.is_valid(i).then(|| c.value(i).to_string())
        };
        for i in 0..b.num_rows() {
            let (Some(p), Some(ch), Some(a)) = (s(&pattern, i), s(&chain, i), s(&address, i))
            else {
                continue;
            };
            if !wanted.contains(p.as_str()) {
                continue;
            }
            let a = norm(&ch, &a);
            let how = match touched.get(&(ch.clone(), a.clone())) {
                Some(how) => how.to_string(),
                None => match pays.get(&(ch.clone(), a.clone())) {
                    Some(txid) => {
                        format!("paying a member of a seed's cluster (transaction {txid})")
                    }
                    None => continue,
                },
            };
            let key = (ch.clone(), a.clone(), p.clone());
            if prev.is_some_and(|x| x.typed.contains(&key)) {
                continue;
            }
            let evidence = txids.value(i);
            let evidence = evidence.as_string_opt::<i32>();
            let first_txid = evidence.and_then(|e| (!e.is_empty()).then(|| e.value(0).to_string()));
            found.insert(
                key,
                Alert {
                    alert_id: String::new(),
                    seq: 0,
                    kind: "typology",
                    chain: ch.clone(),
                    address: a.clone(),
                    amount: s(&amount, i).and_then(|v| v.parse().ok()),
                    asset: Some(if ch == "btc" {
                        "BTC".into()
                    } else {
                        String::new()
                    })
                    .filter(|x| !x.is_empty()),
                    txid: first_txid,
                    height: s(&last, i).and_then(|v| v.parse().ok()),
                    detail: if how.starts_with("paying") {
                        format!(
                            "{p} (score {}): the finding's address is {how}",
                            s(&score, i).unwrap_or_default()
                        )
                    } else {
                        format!(
                            "{p} (score {}): the finding's address is {how} in this case",
                            s(&score, i).unwrap_or_default()
                        )
                    },
                },
            );
        }
    }
    out.extend(found.into_values());
    Ok(())
}

/// Which of `payers` paid one of `members` on `chain`, each with the first such
/// transaction (in chain order). Bitcoin: a transaction spending a payer's output with an
/// output to a member; Ethereum: a transfer of ETH or a token of more than 1,000 base
/// units (dust is what poisoners send) in a transaction the payer sent (a token contract
/// can log a `Transfer` from anyone).
async fn payments_to(
    wh: &Warehouse,
    chain: &str,
    payers: &BTreeSet<String>,
    members: &BTreeSet<String>,
) -> Result<Vec<(String, String)>> {
    let ctx = ferret_query::session(wh).await?;
    let table = |v: &BTreeSet<String>| {
        RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("address", arrow::datatypes::DataType::Utf8, false),
            ])),
            vec![Arc::new(StringArray::from(
                v.iter().cloned().collect::<Vec<_>>(),
            ))],
        )
        .map_err(|e| Error::Query(format!("typology payers: {e}")))
    };
    ctx.register_batch("alert_payers", table(payers)?)?;
    ctx.register_batch("alert_members", table(members)?)?;
    let sql = if chain == "btc" {
        "SELECT x.payer, first_value(x.txid ORDER BY x.height, x.tx_index) FROM (
            SELECT DISTINCT i.address AS payer, i.txid, i.height, i.tx_index
            FROM btc.inputs i JOIN alert_payers p ON p.address = i.address
        ) x JOIN btc.outputs o ON o.txid = x.txid
        JOIN alert_members m ON m.address = o.address
        WHERE o.address <> x.payer
        GROUP BY x.payer"
    } else {
        "SELECT lower(t.from_address) AS payer,
                first_value(t.transaction_hash ORDER BY t.block_number, t.transaction_index)
        FROM eth.transfers t
        JOIN alert_payers p ON p.address = lower(t.from_address)
        JOIN alert_members m ON m.address = lower(t.to_address)
        JOIN eth.transactions x ON x.transaction_hash = t.transaction_hash
                               AND lower(x.from_address) = lower(t.from_address)
        WHERE t.value > 1000 AND lower(t.to_address) <> lower(t.from_address)
        GROUP BY 1"
    };
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let (p, t) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            if p.is_valid(i) && t.is_valid(i) {
                out.push((p.value(i).to_string(), t.value(i).to_string()));
            }
        }
    }
    Ok(out)
}

/// The files of one run of a case's table, from a results head's runs.
pub(crate) fn run_files(
    heads: &BTreeMap<String, LatestRun>,
    case: &str,
    table: &str,
    run_id: &str,
) -> Vec<String> {
    let marker = format!("/run={run_id}/");
    heads
        .get(&case_job(case, table))
        .map(|r| {
            r.files
                .iter()
                .filter(|f| f.contains(&marker))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// One committed run of a case (what `--case` and `--run` name), resolved against the
/// current results head.
pub struct CaseRun {
    pub case: String,
    pub run_id: String,
    pub heads: BTreeMap<String, LatestRun>,
}

impl CaseRun {
    /// The run `run` of `case` (default: its latest); an error naming what is missing.
    pub async fn resolve(wh: &Warehouse, case: &str, run: Option<&str>) -> Result<Self> {
        let refused = |reason: String| Error::Refused {
            case: case.to_string(),
            reason,
        };
        if !ferret_schemas::cases::valid_case_name(case) {
            return Err(refused("not a case name".into()));
        }
        let heads = wh.latest_runs().await?;
        let Some(runs) = heads.get(&case_job(case, "runs")) else {
            return Err(refused(
                "no such case in this warehouse (`ferret case list`)".into(),
            ));
        };
        let run_id = run.map_or_else(|| runs.run_id.clone(), str::to_string);
        // Run ids are digits, a dash and hex: anything else is not one (and never
        // reaches SQL).
        if !run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || run_files(&heads, case, "runs", &run_id).is_empty()
        {
            return Err(refused(format!("no run `{run_id}`")));
        }
        Ok(Self {
            case: case.to_string(),
            run_id,
            heads,
        })
    }

    /// The run's files of one of the case's tables.
    pub fn files(&self, table: &str) -> Vec<String> {
        run_files(&self.heads, &self.case, table, &self.run_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(min_increase: f64) -> Case {
        crate::file::parse(
            std::path::Path::new("/c.toml"),
            &format!(
                "name = \"c\"\nchains = [\"btc\"]\n[seeds]\ncategories = [\"scam\"]\n[alerts]\nmin_increase = {min_increase}\n"
            ),
        )
        .expect("case")
    }

    fn exit(value: f64) -> ExitRow {
        ExitRow {
            chain: "btc".into(),
            address: "a".into(),
            asset: "BTC".into(),
            label: "x".into(),
            category: "exchange".into(),
            value,
            min_hop: 1,
            outputs: Vec::new(),
            first: None,
        }
    }

    fn previous(announced: bool, sum: f64) -> Previous {
        Previous {
            exits: HashMap::new(),
            exit_outputs: HashSet::new(),
            members: HashSet::new(),
            watched: HashSet::new(),
            typed: HashSet::new(),
            tips: HashMap::new(),
            alerted: [(("btc".into(), "a".into(), "BTC".into()), (announced, sum))]
                .into_iter()
                .collect(),
        }
    }

    fn alerts(c: &Case, prev: Option<&Previous>, value: f64) -> Vec<(&'static str, Option<f64>)> {
        let mut out = Vec::new();
        diff_exits(c, prev, &[&exit(value)], &mut out);
        out.into_iter().map(|a| (a.kind, a.amount)).collect()
    }

    #[test]
    fn increases_add_up_against_what_was_reported() {
        let c = case(10.0);
        // First seen, below the threshold: nothing yet; above it: a new exit.
        assert_eq!(alerts(&c, None, 5.0), []);
        assert_eq!(
            alerts(&c, Some(&previous(false, 0.0)), 15.0),
            [("new_exit", Some(15.0))]
        );
        // Reported at 100: +5 is below the threshold, and stays unreported...
        assert_eq!(alerts(&c, Some(&previous(true, 100.0)), 105.0), []);
        // ...until the growth since the last report passes it, whatever the step.
        assert_eq!(
            alerts(&c, Some(&previous(true, 100.0)), 112.0),
            [("exit_increase", Some(12.0))]
        );
        // A decrease (a reorg) raises nothing.
        assert_eq!(alerts(&c, Some(&previous(true, 100.0)), 50.0), []);
        let zero = case(0.0);
        assert_eq!(
            alerts(&zero, Some(&previous(true, 100.0)), 100.5),
            [("exit_increase", Some(0.5))]
        );
        assert_eq!(alerts(&zero, Some(&previous(true, 100.0)), 100.0), []);
    }
}
