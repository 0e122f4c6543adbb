//! `ferret typologies btc`: a run of the `typologies` table. The walks along spends
//! (peel chains, pass-through), structuring and CoinJoin use come from the kernels'
//! chain-order pass ([`ferret_kernels::typology::btc`]); victim collection is an
//! aggregate over payments and runs here as SQL over `btc.inputs` and `btc.outputs`,
//! joined with `clusters`. Rules and thresholds: docs/typologies.md.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use ferret_kernels::typology::btc::{BtcRules, Scan, ScanState, exchange_ids, scan_btc};
use ferret_kernels::typology::{Finding, Pattern, coefficient_of_variation, just_under_round, r4};
use ferret_schemas::Chain;
use ferret_schemas::Warehouse;
use serde_json::{Map, json};

fn kernel_err(e: ferret_kernels::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn wh_err(e: ferret_schemas::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Victim collection's thresholds (docs/typologies.md gives the reasoning).
#[derive(Clone, Debug, PartialEq)]
pub struct VictimRules {
    /// The fewest distinct payers (payer clusters where clustered).
    pub min_payers: usize,
    /// The smallest median payment (sats).
    pub min_median: i64,
    /// Blocks within which a payment counts as forwarded when it is spent.
    pub forward_blocks: i64,
    /// The smallest share of the collected value forwarded within `forward_blocks`.
    pub min_forwarded: f64,
    /// The smallest share of payers that paid more than once.
    pub min_repeat_share: f64,
    /// Label categories that make an address a service, never a finding.
    pub service_categories: Vec<String>,
}

impl Default for VictimRules {
    fn default() -> Self {
        Self {
            min_payers: 20,
            min_median: 200_000,
            forward_blocks: 1008,
            min_forwarded: 0.5,
            min_repeat_share: 0.0,
            service_categories: [
                "exchange",
                "mining",
                "mining_pool",
                "mixer",
                "service",
                "merchant",
                "payment_processor",
                "gambling",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl VictimRules {
    fn check(&self) -> Result<()> {
        let share = |name: &str, v: f64| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(DataFusionError::Plan(format!(
                    "typologies: {name} must be in [0, 1], not {v}"
                )))
            }
        };
        share("victim min_forwarded", self.min_forwarded)?;
        share("victim min_repeat_share", self.min_repeat_share)?;
        if self.min_payers < 2 || self.forward_blocks < 0 || self.min_median < 0 {
            return Err(DataFusionError::Plan(
                "typologies: victim min_payers must be at least 2, forward_blocks and min_median at least 0".into(),
            ));
        }
        Ok(())
    }
}

/// What a typology run is asked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypologyOptions {
    pub btc: BtcRules,
    pub victim: VictimRules,
    /// Only these patterns (all when empty).
    pub patterns: Vec<Pattern>,
    /// Read every block even when the last run's state would let this run read only the
    /// new ones.
    pub full: bool,
    /// Walk peel chains and pass-through chains on the spend graph, ranked on this device
    /// (`ferret_kernels::typology::walk`), instead of linking them in the chain-order
    /// pass. Reads every block; the findings and the kept state are the same either way.
    pub walk: Option<ferret_kernels::device::DeviceChoice>,
}

/// What a run committed.
#[derive(Clone, Debug)]
pub struct TypologyRun {
    pub run_id: String,
    pub transactions: u64,
    /// Findings per pattern name.
    pub counts: BTreeMap<&'static str, usize>,
    pub findings: Vec<Finding>,
    /// How the pass ran: `incremental above height H`, or `full: why`.
    pub mode: String,
}

/// Runs the Bitcoin typologies over every committed block and commits one run of
/// `typologies`.
pub async fn run_btc(wh: &Warehouse, opts: &TypologyOptions) -> Result<TypologyRun> {
    opts.victim.check()?;
    opts.btc.check().map_err(kernel_err)?;
    let m = wh
        .load_manifest(Chain::Btc)
        .await
        .map_err(wh_err)?
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{wh}: no Bitcoin blocks are committed here (run `ferret index btc` first)"
            ))
        })?;
    let labels = ferret_kernels::taint::job::btc_labels(wh)
        .await
        .map_err(kernel_err)?;
    let exchanges: Vec<&str> = labels
        .iter()
        .filter(|l| l.2 == "exchange")
        .map(|l| l.0.as_str())
        .collect();
    let ids = exchange_ids(wh, &m, &exchanges).await.map_err(kernel_err)?;
    let labels_run = wh
        .latest_run("labels")
        .await
        .map_err(wh_err)?
        .map(|r| r.run_id);
    let backend = match opts.walk {
        Some(d) => Some(ferret_kernels::device::select(d).map_err(kernel_err)?),
        None => None,
    };
    let (scan, from_tx, mode) = resume_plan(wh, &m, opts, ids, &labels_run).await?;
    let pass = scan_btc(wh, &m, scan, from_tx, backend.as_ref())
        .await
        .map_err(kernel_err)?;
    let transactions = pass.read;
    let run_id = ferret_schemas::results::new_run_id();
    let state_file = write_state(wh, &m, &labels_run, &pass, &run_id).await?;
    let mut findings = pass.findings;
    let ctx = crate::session(wh).await?;
    let services: HashSet<&str> = labels
        .iter()
        .filter(|l| opts.victim.service_categories.contains(&l.2))
        .map(|l| l.0.as_str())
        .collect();
    if opts.patterns.is_empty() || opts.patterns.contains(&Pattern::VictimCollection) {
        findings.extend(victim_collection(&ctx, &opts.victim, opts.btc.since, &services).await?);
    }
    if !opts.patterns.is_empty() {
        findings.retain(|f| opts.patterns.contains(&f.pattern));
    }
    let addresses: Vec<String> = findings
        .iter()
        .filter_map(|f| f.address.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let clusters = cluster_ids(&ctx, "clusters", "btc", addresses).await?;
    let params = json!({
        "chain": "btc",
        "since": opts.btc.since,
        "patterns": opts.patterns.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "tip_height": m.tip.as_ref().map(|t| t.height),
        "tip_hash": m.tip.as_ref().map(|t| t.hash.clone()),
        "rules": format!("{:?}", opts.btc),
        "victim_rules": format!("{:?}", opts.victim),
        "mode": mode,
        "walk": backend.as_ref().map(|b| b.describe()),
    });
    let mut run = commit(
        wh,
        "btc",
        findings,
        &clusters,
        params,
        transactions,
        Some(state_file),
        run_id,
    )
    .await?;
    run.mode = mode;
    Ok(run)
}

/// The job keeping the Bitcoin pass's state between runs.
const STATE_JOB: &str = "typologies_state";

/// Where the kept state stopped, and the pass's state.
#[derive(serde::Serialize, serde::Deserialize)]
struct StateMeta {
    tip_height: u64,
    tip_hash: String,
    next_tx: u64,
    labels_run: Option<String>,
    state: ScanState,
}

fn state_schema() -> datafusion::arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("part", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("data", DataType::Binary, false),
    ]))
}

fn damaged(path: &str, why: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!(
        "typologies: the kept state {path} is damaged ({why}); `ferret typologies btc --full` starts over"
    ))
}

/// The kept state of the last Bitcoin pass, if any: its meta and the two counters.
async fn load_state(wh: &Warehouse) -> Result<Option<(StateMeta, Vec<u8>, Vec<u8>)>> {
    let Some(run) = wh.latest_run(STATE_JOB).await.map_err(wh_err)? else {
        return Ok(None);
    };
    let mut meta: Option<Vec<u8>> = None;
    let mut parts: BTreeMap<(String, i64), Vec<u8>> = BTreeMap::new();
    let path = run.files.join(", ");
    if run.checks.len() != run.files.len() {
        return Err(damaged(&path, "its run records no checksums"));
    }
    for (f, want) in run.files.iter().zip(&run.checks) {
        wh.check_run_file(f, want)
            .await
            .map_err(|e| damaged(f, e))?;
    }
    for f in &run.files {
        for b in wh.read_file(f).await.map_err(wh_err)? {
            let part = b
                .column_by_name("part")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| damaged(f, "no text column part"))?;
            let seq = b
                .column_by_name("seq")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| damaged(f, "no integer column seq"))?;
            let data = b
                .column_by_name("data")
                .and_then(|c| c.as_binary_opt::<i32>())
                .ok_or_else(|| damaged(f, "no binary column data"))?;
            for i in 0..b.num_rows() {
                let (p, q) = (part.value(i).to_string(), seq.value(i));
                if p == "meta" {
                    if meta.replace(data.value(i).to_vec()).is_some() {
                        return Err(damaged(f, "two meta rows"));
                    }
                } else if parts
                    .insert((p.clone(), q), data.value(i).to_vec())
                    .is_some()
                {
                    return Err(damaged(f, format!("part {p} chunk {q} twice")));
                }
            }
        }
    }
    let meta = meta.ok_or_else(|| damaged(&path, "no meta row"))?;
    let meta: StateMeta =
        serde_json::from_slice(&meta).map_err(|e| damaged(&path, format!("meta: {e}")))?;
    let mut counters = [Vec::new(), Vec::new()];
    for ((p, q), data) in parts {
        let k = match p.as_str() {
            "received" => 0,
            "spent" => 1,
            other => return Err(damaged(&path, format!("unknown part {other}"))),
        };
        let expected = counters[k].len() / STATE_CHUNK;
        if q != expected as i64 || (counters[k].len() % STATE_CHUNK != 0) {
            return Err(damaged(&path, format!("{p} chunk {q} out of sequence")));
        }
        counters[k].extend_from_slice(&data);
    }
    let [received, spent] = counters;
    Ok(Some((meta, received, spent)))
}

/// Counters are kept in chunks of this many bytes.
const STATE_CHUNK: usize = 8 << 20;

/// Whether this run can go on from the kept state (same rules, same labels, its last
/// block still on the chain), and the scan to run.
async fn resume_plan(
    wh: &Warehouse,
    m: &ferret_schemas::Manifest,
    opts: &TypologyOptions,
    exchanges: HashSet<u64>,
    labels_run: &Option<String>,
) -> Result<(Scan, u64, String)> {
    let fresh = |why: &str| -> Result<(Scan, u64, String)> {
        let scan = Scan::new(opts.btc.clone(), exchanges.clone(), m.next_address_id)
            .map_err(kernel_err)?;
        Ok((scan, 0, format!("full: {why}")))
    };
    if opts.full {
        return fresh("--full");
    }
    if opts.walk.is_some() {
        return fresh("the graph walk reads every block");
    }
    let Some((meta, received, spent)) = load_state(wh).await? else {
        return fresh("no earlier run kept a state");
    };
    if meta.state.rules != format!("{:?}", opts.btc) {
        return fresh("the rules differ from the last run's");
    }
    if &meta.labels_run != labels_run {
        return fresh("the labels changed since the last run");
    }
    let hash = ferret_kernels::blocks::block_hash_in(wh, m, Chain::Btc, meta.tip_height)
        .await
        .map_err(kernel_err)?;
    if hash.as_deref() != Some(meta.tip_hash.as_str()) || m.next_tx_index < meta.next_tx {
        return fresh("the last run's block is no longer on the chain");
    }
    let from = meta.next_tx;
    let mode = format!("incremental above height {}", meta.tip_height);
    let scan = Scan::resume(
        opts.btc.clone(),
        exchanges,
        meta.state,
        received,
        spent,
        m.next_address_id,
    )
    .map_err(kernel_err)?;
    Ok((scan, from, mode))
}

/// Writes the pass's state as a run file of the state job (committed with the findings).
async fn write_state(
    wh: &Warehouse,
    m: &ferret_schemas::Manifest,
    labels_run: &Option<String>,
    pass: &ferret_kernels::typology::btc::BtcPass,
    run_id: &str,
) -> Result<(String, ferret_schemas::warehouse::WrittenRunFile)> {
    let tip = m.tip.as_ref().ok_or_else(|| {
        DataFusionError::Plan("typologies: the Bitcoin manifest has no tip".into())
    })?;
    // A `StateMeta`'s JSON, the pass's state spliced in as written (not parsed and
    // copied again).
    let head = serde_json::to_vec(&json!({
        "tip_height": tip.height,
        "tip_hash": tip.hash,
        "next_tx": m.next_tx_index,
        "labels_run": labels_run,
    }))
    .map_err(|e| DataFusionError::Execution(format!("typologies state: {e}")))?;
    let mut json = Vec::with_capacity(head.len() + pass.state_json.len() + 16);
    json.extend_from_slice(&head[..head.len() - 1]);
    json.extend_from_slice(b",\"state\":");
    json.extend_from_slice(&pass.state_json);
    json.push(b'}');
    let schema = state_schema();
    let mut w = wh
        .run_writer(STATE_JOB, run_id, schema.clone())
        .map_err(wh_err)?;
    let batch = |part: &str, seq: i64, data: &[u8]| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![part])) as Arc<dyn Array>,
                Arc::new(Int64Array::from(vec![seq])),
                Arc::new(datafusion::arrow::array::BinaryArray::from(vec![data])),
            ],
        )
    };
    w.write(&batch("meta", 0, &json)?).await.map_err(wh_err)?;
    for (part, bytes) in [("received", &pass.received), ("spent", &pass.spent)] {
        for (i, chunk) in bytes.chunks(STATE_CHUNK).enumerate() {
            w.write(&batch(part, i as i64, chunk)?)
                .await
                .map_err(wh_err)?;
        }
    }
    let file = w.finish().await.map_err(wh_err)?;
    Ok((STATE_JOB.to_string(), file))
}

/// Commits a run of `typologies`: this chain's findings, and the other chains' rows of
/// the run it replaces (carried forward, so one table holds every chain). Fails, writing
/// nothing visible, when another run was committed since that run was read.
#[allow(clippy::too_many_arguments)]
async fn commit(
    wh: &Warehouse,
    chain: &'static str,
    findings: Vec<Finding>,
    clusters: &HashMap<String, i64>,
    params: serde_json::Value,
    transactions: u64,
    state: Option<(String, ferret_schemas::warehouse::WrittenRunFile)>,
    run_id: String,
) -> Result<TypologyRun> {
    let previous = wh.latest_run("typologies").await.map_err(wh_err)?;
    let previous_state = match &state {
        Some((job, _)) => Some((
            job.clone(),
            wh.latest_run(job).await.map_err(wh_err)?.map(|r| r.run_id),
        )),
        None => None,
    };
    let schema = ferret_schemas::results::typologies_schema();
    let mut w = wh
        .run_writer("typologies", &run_id, schema.clone())
        .map_err(wh_err)?;
    // In slices: one batch of a whole chain's findings would double their memory.
    for slice in findings.chunks(WRITE_ROWS) {
        w.write(&to_batch(slice, chain, clusters, &run_id)?)
            .await
            .map_err(wh_err)?;
    }
    if let Some(prev) = &previous {
        for f in &prev.files {
            for b in wh.read_file(f).await.map_err(wh_err)? {
                let c = datafusion::arrow::compute::cast(
                    b.column_by_name("chain").ok_or_else(|| {
                        DataFusionError::Execution(format!("{f}: no column chain"))
                    })?,
                    &DataType::Utf8,
                )?;
                let c = c.as_string::<i32>();
                let keep = datafusion::arrow::array::BooleanArray::from_iter(
                    (0..c.len()).map(|i| Some(c.is_null(i) || c.value(i) != chain)),
                );
                let kept = datafusion::arrow::compute::filter_record_batch(&b, &keep)?;
                if kept.num_rows() == 0 {
                    continue;
                }
                // The carried rows name this run.
                let mut cols = kept.columns().to_vec();
                let last = cols.len() - 1;
                cols[last] = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    run_id.as_str(),
                    kept.num_rows(),
                )));
                w.write(&RecordBatch::try_new(schema.clone(), cols)?)
                    .await
                    .map_err(wh_err)?;
            }
        }
    }
    let file = w.finish().await.map_err(wh_err)?;
    let to_run = |file: ferret_schemas::warehouse::WrittenRunFile, run_id: &str| {
        ferret_schemas::results::LatestRun {
            run_id: run_id.to_string(),
            files: vec![file.0],
            rows: file.1,
            params: Some(params.clone()),
            checks: vec![file.2],
        }
    };
    let mut runs = vec![("typologies".to_string(), to_run(file, &run_id))];
    let mut expect = vec![(
        "typologies".to_string(),
        previous.as_ref().map(|p| p.run_id.clone()),
    )];
    if let (Some((job, file)), Some(prev)) = (state, previous_state) {
        runs.push((job.clone(), to_run(file, &run_id)));
        expect.push(prev);
    }
    wh.commit_runs_expecting(runs, &expect)
        .await
        .map_err(wh_err)?;
    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.pattern.name()).or_default() += 1;
    }
    Ok(TypologyRun {
        run_id,
        transactions,
        counts,
        findings,
        mode: String::new(),
    })
}

/// One payment to a candidate collection address.
struct Payment {
    payer_group: String,
    payer: String,
    value: i64,
    height: i64,
    txid: String,
    forwarded: bool,
}

/// Victim collection: many otherwise unrelated payers (distinct clusters), victims'
/// amounts, repeat payers, the money forwarded on. The SQL keeps the addresses with
/// enough distinct payers; the features are computed per address from their payments.
async fn victim_collection(
    ctx: &SessionContext,
    rules: &VictimRules,
    since: Option<i64>,
    services: &HashSet<&str>,
) -> Result<Vec<Finding>> {
    let since = since.unwrap_or(i64::MIN);
    let sql = format!(
        "WITH payer AS (
            SELECT tx_index, address AS payer FROM btc.inputs
            WHERE vin = 0 AND address IS NOT NULL AND height >= {since}
        ),
        pay AS (
            SELECT o.address, o.output_id, o.value, o.height, o.tx_index, o.txid, p.payer
            FROM btc.outputs o JOIN payer p ON o.tx_index = p.tx_index
            WHERE o.address IS NOT NULL AND o.address <> p.payer AND o.height >= {since}
        ),
        grouped AS (
            SELECT pay.*, coalesce(CAST(c.cluster_id AS VARCHAR), pay.payer) AS payer_group
            FROM pay LEFT JOIN clusters c ON c.address = pay.payer AND c.chain = 'btc'
        ),
        cand AS (
            SELECT address FROM grouped GROUP BY address
            HAVING count(DISTINCT payer_group) >= {min}
        )
        SELECT g.address, g.payer_group, g.payer, g.value, g.height, g.txid,
               s.height AS spent_height
        FROM grouped g JOIN cand ON g.address = cand.address
        LEFT JOIN btc.inputs s ON s.spent_output_id = g.output_id
        ORDER BY g.address, g.tx_index, g.output_id",
        min = rules.min_payers
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut by_addr: BTreeMap<String, Vec<Payment>> = BTreeMap::new();
    for b in &batches {
        // Text may come as Utf8View: read every text column as Utf8.
        let text: Vec<Arc<dyn Array>> = [0, 1, 2, 5]
            .into_iter()
            .map(|i| datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let n = |i: usize| b.column(i).as_primitive_opt::<Int64Type>();
        let wrong =
            || DataFusionError::Execution("victim collection: unexpected column types".into());
        let (addr, group, payer, txid) = (
            text[0].as_string::<i32>(),
            text[1].as_string::<i32>(),
            text[2].as_string::<i32>(),
            text[3].as_string::<i32>(),
        );
        let (value, height, spent) = (
            n(3).ok_or_else(wrong)?,
            n(4).ok_or_else(wrong)?,
            n(6).ok_or_else(wrong)?,
        );
        for r in 0..b.num_rows() {
            let h = height.value(r);
            by_addr
                .entry(addr.value(r).to_string())
                .or_default()
                .push(Payment {
                    payer_group: group.value(r).to_string(),
                    payer: payer.value(r).to_string(),
                    value: value.value(r),
                    height: h,
                    txid: txid.value(r).to_string(),
                    forwarded: !spent.is_null(r) && spent.value(r) - h <= rules.forward_blocks,
                });
        }
    }
    let mut out = Vec::new();
    for (address, pays) in by_addr {
        if services.contains(address.as_str()) {
            continue;
        }
        if let Some(f) = judge_collection(rules, address, &pays) {
            out.push(f);
        }
    }
    Ok(out)
}

fn judge_collection(rules: &VictimRules, address: String, pays: &[Payment]) -> Option<Finding> {
    let mut per_payer: HashMap<&str, Vec<i64>> = HashMap::new();
    for p in pays {
        per_payer.entry(&p.payer_group).or_default().push(p.value);
    }
    let groups: HashSet<&str> = pays.iter().map(|p| p.payer_group.as_str()).collect();
    let payers = pays
        .iter()
        .map(|p| p.payer.as_str())
        .collect::<HashSet<_>>()
        .len();
    let repeat: Vec<&Vec<i64>> = per_payer.values().filter(|v| v.len() >= 2).collect();
    let repeat_share = repeat.len() as f64 / per_payer.len().max(1) as f64;
    let escalating = repeat
        .iter()
        .filter(|v| v.windows(2).all(|w| w[1] >= w[0]) && v[v.len() - 1] > v[0])
        .count();
    let escalating_share = escalating as f64 / repeat.len().max(1) as f64;
    let total: i64 = pays.iter().map(|p| p.value).sum();
    let forwarded: i64 = pays.iter().filter(|p| p.forwarded).map(|p| p.value).sum();
    let forwarded_share = forwarded as f64 / total.max(1) as f64;
    let mut values: Vec<i64> = pays.iter().map(|p| p.value).collect();
    values.sort_unstable();
    let median = values[values.len() / 2];
    if groups.len() < rules.min_payers
        || median < rules.min_median
        || forwarded_share < rules.min_forwarded
        || repeat_share < rules.min_repeat_share
    {
        return None;
    }
    let first = pays.iter().map(|p| p.height).min()?;
    let last = pays.iter().map(|p| p.height).max()?;
    let spread = coefficient_of_variation(&values.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let count_part =
        ((groups.len() - rules.min_payers) as f64 / (2 * rules.min_payers) as f64).min(1.0);
    let score = (0.5 + 0.5 * count_part) * (0.6 + 0.4 * escalating_share);
    let mut txids: Vec<String> = Vec::new();
    for p in pays {
        if txids.last() != Some(&p.txid) {
            txids.push(p.txid.clone());
        }
    }
    let mut f = Map::new();
    f.insert("payments".into(), json!(pays.len()));
    f.insert("payers".into(), json!(payers));
    f.insert("payer_clusters".into(), json!(groups.len()));
    f.insert("repeat_payer_share".into(), json!(r4(repeat_share)));
    f.insert("escalating_share".into(), json!(r4(escalating_share)));
    f.insert("median_payment".into(), json!(median));
    f.insert("payment_cv".into(), json!(r4(spread)));
    f.insert("forwarded_share".into(), json!(r4(forwarded_share)));
    f.insert("active_blocks".into(), json!(last - first));
    Some(Finding {
        pattern: Pattern::VictimCollection,
        address_id: None,
        address: Some(address),
        txids,
        first_height: first,
        last_height: last,
        amount: total as f64,
        score: r4(score),
        features: f,
    })
}

/// The clusters (latest run of `table`: `clusters`, `eth_clusters`) of the given
/// addresses, by a join in SQL.
async fn cluster_ids(
    ctx: &SessionContext,
    table: &str,
    chain: &str,
    addresses: Vec<String>,
) -> Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    if addresses.is_empty() {
        return Ok(out);
    }
    let schema = Arc::new(Schema::new(vec![Field::new(
        "address",
        DataType::Utf8,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(addresses)) as Arc<dyn Array>],
    )?;
    ctx.register_table(
        "typology_addresses",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
    )?;
    let rows = ctx
        .sql(&format!(
            "SELECT a.address, c.cluster_id FROM typology_addresses a
             JOIN {table} c ON c.address = a.address AND c.chain = '{chain}'"
        ))
        .await?
        .collect()
        .await;
    ctx.deregister_table("typology_addresses")?;
    for b in rows? {
        let a = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let a = a.as_string::<i32>();
        let c = b
            .column(1)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| DataFusionError::Execution("clusters.cluster_id is not Int64".into()))?;
        for r in 0..b.num_rows() {
            out.insert(a.value(r).to_string(), c.value(r));
        }
    }
    Ok(out)
}

/// Findings per batch written.
const WRITE_ROWS: usize = 65_536;

/// The findings as one batch of the `typologies` schema.
pub fn to_batch(
    findings: &[Finding],
    chain: &str,
    clusters: &HashMap<String, i64>,
    run_id: &str,
) -> Result<RecordBatch> {
    let n = findings.len();
    let mut txids = ListBuilder::new(StringBuilder::new());
    for f in findings {
        for t in &f.txids {
            txids.values().append_value(t);
        }
        txids.append(true);
    }
    let columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from_iter_values(
            findings.iter().map(|f| f.pattern.name()),
        )),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(chain, n))),
        Arc::new(StringArray::from_iter(
            findings.iter().map(|f| f.address.as_deref()),
        )),
        Arc::new(Int64Array::from_iter(findings.iter().map(|f| {
            f.address.as_ref().and_then(|a| clusters.get(a).copied())
        }))),
        Arc::new(txids.finish()),
        Arc::new(Int64Array::from_iter_values(
            findings.iter().map(|f| f.first_height),
        )),
        Arc::new(Int64Array::from_iter_values(
            findings.iter().map(|f| f.last_height),
        )),
        Arc::new(Float64Array::from_iter_values(
            findings.iter().map(|f| f.amount),
        )),
        Arc::new(Float64Array::from_iter_values(
            findings.iter().map(|f| f.score),
        )),
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| {
            // A map of JSON values always serialises.
            serde_json::to_string(&f.features).unwrap_or_default()
        }))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            run_id, n,
        ))),
    ];
    Ok(RecordBatch::try_new(
        ferret_schemas::results::typologies_schema(),
        columns,
    )?)
}

/// The Ethereum typologies' thresholds (docs/typologies.md gives the reasoning).
#[derive(Clone, Debug, PartialEq)]
pub struct EthRules {
    /// Approval phishing: the fewest owners one spender drains.
    pub phishing_min_owners: usize,
    /// Approval phishing: the most blocks from an approval to the pull that drains it.
    pub phishing_max_delay: i64,
    /// Address poisoning: leading hex digits (after `0x`) the look-alike shares.
    pub poison_prefix: usize,
    /// Address poisoning: trailing hex digits the look-alike shares.
    pub poison_suffix: usize,
    /// Address poisoning: the largest token amount (base units) that counts as dust.
    pub poison_max_value: u64,
    /// Address poisoning: the most blocks from the victim's payment to the poisoning.
    pub poison_max_delay: i64,
    /// Victim collection: the fewest distinct payers (payer clusters where clustered).
    pub victim_min_payers: usize,
    /// Victim collection: blocks within which outflow counts as forwarding.
    pub victim_forward_blocks: i64,
    /// Victim collection: the smallest share forwarded.
    pub victim_min_forwarded: f64,
    /// Victim collection: the smallest share of the addresses it paid that it was the
    /// first to pay (its own layering and cash-out addresses, not people it pays).
    pub victim_min_new_recipients: f64,
    /// Stablecoin swaps: the stablecoins, as (lowercase contract address, decimals).
    pub stablecoins: Vec<(String, u32)>,
    /// Stablecoin swaps: the most blocks from the scam money's arrival to the swap.
    pub swap_max_delay: i64,
    /// Pass-through: the fewest hops.
    pub pass_min_hops: usize,
    /// Pass-through: the most blocks a hop holds the money.
    pub pass_max_wait: i64,
    /// Pass-through: the least share of what came in that a hop passes on.
    pub pass_min_kept: f64,
    /// Pass-through and peel chains: the most ETH (wei) a token hop may receive besides
    /// its one transfer of the token (the gas it spends to pass the token on).
    pub hop_max_gas: u128,
    /// Peel chains: the fewest steps.
    pub peel_min_steps: usize,
    /// Peel chains: the largest share of a step's input one peel may take.
    pub peel_max_share: f64,
    /// Peel chains: the most blocks from a step's input to its last payment.
    pub peel_max_gap: i64,
    /// Fan-out: the fewest just-under payments to fresh addresses.
    pub fan_min_outputs: usize,
    /// Fan-out: how far under a round sum, as a share of it.
    pub fan_band: f64,
    /// Fan-out: the largest coefficient of variation of the amounts under one sum.
    pub fan_max_cv: f64,
    /// Only blocks from this one on.
    pub since: Option<i64>,
}

/// Ethereum mainnet's largest stablecoins: USDT, USDC, DAI (contract, decimals).
pub const MAINNET_STABLECOINS: [(&str, u32); 3] = [
    ("0xdac17f958d2ee523a2206206994597c13d831ec7", 6),
    ("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", 6),
    ("0x6b175474e89094c44da98b954eedeac495271d0f", 18),
];

/// The topic0 of Uniswap V2's `Swap(address,uint256,uint256,uint256,uint256,address)`
/// (its forks, SushiSwap's among them, emit the same).
pub const SWAP_V2_TOPIC: &str =
    "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822";

/// The topic0 of Uniswap V3's
/// `Swap(address,address,int256,int256,uint160,uint128,int24)`.
pub const SWAP_V3_TOPIC: &str =
    "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67";

/// The topic0 of Curve's stableswap pools' and metapools'
/// `TokenExchange(address,int128,uint256,int128,uint256)`.
pub const CURVE_EXCHANGE_TOPIC: &str =
    "0x8b3e96f2b889fa771c53c981b40daf005f63f637f1869f707052d15a3dd97140";

/// The topic0 of Curve's crypto pools' `TokenExchange(address,uint256,uint256,uint256,uint256)`.
pub const CURVE_CRYPTO_EXCHANGE_TOPIC: &str =
    "0xb2e76ae99761dc136e598d4a629bb347eccb9532a5f8bbd72e18467c3c34cc98";

/// The topic0 of Curve metapools'
/// `TokenExchangeUnderlying(address,int128,uint256,int128,uint256)`.
pub const CURVE_UNDERLYING_TOPIC: &str =
    "0xd013ca23e77a65003c2c659c5442c00c805371b7fc1ebd4c206c41d1536bd90b";

/// The topic0 of Balancer V2's Vault `Swap(bytes32,address,address,uint256,uint256)`
/// (the Vault holds every pool's tokens and pays them out).
pub const BALANCER_SWAP_TOPIC: &str =
    "0x2170c741c41531aec20e7c107c24eecfdd15e69c9bb0a8dd37b1840b9e0b207b";

/// The swap events read: the emitter of one in a transaction is a pool of that
/// transaction, which the swapped tokens leave and enter.
pub const DEX_SWAP_TOPICS: [&str; 6] = [
    SWAP_V2_TOPIC,
    SWAP_V3_TOPIC,
    CURVE_EXCHANGE_TOPIC,
    CURVE_CRYPTO_EXCHANGE_TOPIC,
    CURVE_UNDERLYING_TOPIC,
    BALANCER_SWAP_TOPIC,
];

impl Default for EthRules {
    fn default() -> Self {
        Self {
            phishing_min_owners: 3,
            phishing_max_delay: 7200,
            poison_prefix: 4,
            poison_suffix: 4,
            poison_max_value: 1000,
            poison_max_delay: 7200,
            victim_min_payers: 20,
            victim_forward_blocks: 50_400,
            victim_min_forwarded: 0.5,
            victim_min_new_recipients: 0.5,
            stablecoins: MAINNET_STABLECOINS
                .iter()
                .map(|(a, d)| (a.to_string(), *d))
                .collect(),
            swap_max_delay: 7200,
            pass_min_hops: 3,
            pass_max_wait: 7200,
            pass_min_kept: 0.95,
            hop_max_gas: 100_000_000_000_000_000,
            peel_min_steps: 5,
            peel_max_share: 0.2,
            peel_max_gap: 50_400,
            fan_min_outputs: 10,
            fan_band: 0.05,
            fan_max_cv: 0.1,
            since: None,
        }
    }
}

impl EthRules {
    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(DataFusionError::Plan(format!("typologies: {what}")));
        if self.phishing_min_owners < 2 {
            return bad(format!(
                "phishing_min_owners must be at least 2, not {}",
                self.phishing_min_owners
            ));
        }
        if !(1..=20).contains(&self.poison_prefix) || !(1..=20).contains(&self.poison_suffix) {
            return bad(format!(
                "poison_prefix and poison_suffix must be 1–20 hex digits, not {} and {}",
                self.poison_prefix, self.poison_suffix
            ));
        }
        if self.fan_min_outputs < 2 {
            return bad(format!(
                "fan_min_outputs must be at least 2, not {}",
                self.fan_min_outputs
            ));
        }
        for (name, v) in [("fan_band", self.fan_band), ("fan_max_cv", self.fan_max_cv)] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return bad(format!("{name} must be in [0, 1), not {v}"));
            }
        }
        if self.pass_min_hops < 2 {
            return bad(format!(
                "pass_min_hops must be at least 2, not {}",
                self.pass_min_hops
            ));
        }
        if !(self.pass_min_kept.is_finite() && (0.0..=1.0).contains(&self.pass_min_kept)) {
            return bad(format!(
                "pass_min_kept must be in [0, 1], not {}",
                self.pass_min_kept
            ));
        }
        if self.peel_min_steps < 2 {
            return bad(format!(
                "peel_min_steps must be at least 2, not {}",
                self.peel_min_steps
            ));
        }
        if !(self.peel_max_share.is_finite()
            && self.peel_max_share > 0.0
            && self.peel_max_share < 0.5)
        {
            return bad(format!(
                "peel_max_share must be in (0, 0.5), not {}",
                self.peel_max_share
            ));
        }
        if self.victim_min_payers < 2 {
            return bad(format!(
                "victim_min_payers must be at least 2, not {}",
                self.victim_min_payers
            ));
        }
        for (name, v) in [
            ("phishing_max_delay", self.phishing_max_delay),
            ("poison_max_delay", self.poison_max_delay),
            ("victim_forward_blocks", self.victim_forward_blocks),
            ("swap_max_delay", self.swap_max_delay),
            ("pass_max_wait", self.pass_max_wait),
            ("peel_max_gap", self.peel_max_gap),
        ] {
            if v < 0 {
                return bad(format!("{name} must be at least 0, not {v}"));
            }
        }
        for (a, d) in &self.stablecoins {
            let hex = a.strip_prefix("0x").unwrap_or("");
            if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!(
                    "stablecoin {a:?} is no address (0x and 40 hex digits)"
                ));
            }
            if *d > 36 {
                return bad(format!("stablecoin {a}: {d} decimals (at most 36)"));
            }
        }
        if !(self.victim_min_new_recipients.is_finite()
            && (0.0..=1.0).contains(&self.victim_min_new_recipients))
        {
            return bad(format!(
                "victim_min_new_recipients must be in [0, 1], not {}",
                self.victim_min_new_recipients
            ));
        }
        if !(self.victim_min_forwarded.is_finite()
            && (0.0..=1.0).contains(&self.victim_min_forwarded))
        {
            return bad(format!(
                "victim_min_forwarded must be in [0, 1], not {}",
                self.victim_min_forwarded
            ));
        }
        Ok(())
    }
}

/// The topic0 of ERC-20's `Approval(address,address,uint256)`.
pub const APPROVAL_TOPIC: &str =
    "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925";

/// Runs the Ethereum typologies over the committed blocks and commits one run of
/// `typologies` (the Bitcoin rows of the run it replaces are kept). Peel chains and
/// pass-through chains are ranked by the `chainrank` kernel on `walk`.
pub async fn run_eth(
    wh: &Warehouse,
    rules: &EthRules,
    patterns: &[Pattern],
    full: bool,
    walk: &ferret_kernels::device::Backend,
) -> Result<TypologyRun> {
    rules.check()?;
    let m = wh
        .load_manifest(Chain::Eth)
        .await
        .map_err(wh_err)?
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{wh}: no Ethereum blocks are committed here (run `ferret index eth` first)"
            ))
        })?;
    let tip = m.tip.clone().ok_or_else(|| {
        DataFusionError::Plan("typologies: the Ethereum manifest has no tip".into())
    })?;
    let labels = ferret_kernels::taint::job::chain_labels(wh, "eth")
        .await
        .map_err(kernel_err)?;
    let services: HashSet<String> = labels
        .iter()
        .filter(|l| VictimRules::default().service_categories.contains(&l.2))
        .map(|l| l.0.to_lowercase())
        .collect();
    // Mixers: the addresses labelled `mixer`, and Tornado Cash's ETH pools.
    let mut mixers: BTreeMap<String, String> = TORNADO_ETH_POOLS
        .iter()
        .map(|(a, l)| (a.to_string(), l.to_string()))
        .collect();
    for l in labels.iter().filter(|l| l.2 == "mixer") {
        mixers.insert(l.0.to_lowercase(), l.1.clone());
    }
    let mut names: Vec<String> = patterns.iter().map(|p| p.name().to_string()).collect();
    names.sort();
    names.dedup();
    let keyed = EthStateMeta {
        format: ETH_STATE_FORMAT,
        tip_height: tip.height,
        tip_hash: tip.hash.clone(),
        rules: format!("{rules:?}"),
        patterns: names,
        labels_run: latest_run_id(wh, "labels").await?,
        clusters_run: latest_run_id(wh, "eth_clusters").await?,
        phishing: Vec::new(),
        poisoning: Vec::new(),
        collection: Vec::new(),
        collection_amounts: Vec::new(),
    };
    let (mut prev, mode) = eth_resume(wh, &m, &keyed, full).await?;
    let ctx = crate::session(wh).await?;
    let since = rules.since.unwrap_or(i64::MIN);
    // Every query stops at the tip read above (the state records it), whatever the
    // indexer commits meanwhile.
    let upto = i64::try_from(tip.height).unwrap_or(i64::MAX);
    // Blocks this run reads for the windowed patterns: all of them, or those above the
    // last run's.
    let from = prev
        .as_ref()
        .map(|p| since.max(p.tip_height as i64 + 1))
        .unwrap_or(since);
    let mut state = keyed;
    let mut findings = Vec::new();
    let wanted = |p: Pattern| patterns.is_empty() || patterns.contains(&p);
    // Stablecoin swaps follow the money the other patterns find: they need all three.
    let swaps = wanted(Pattern::StablecoinSwap);
    let mut receivers = BTreeSet::new();
    if wanted(Pattern::ApprovalPhishing) || swaps {
        // A pull in the new blocks joins approvals up to `phishing_max_delay` before it;
        // the rows of older pulls do not change.
        let mut rows = prev
            .as_mut()
            .map(|p| std::mem::take(&mut p.phishing))
            .unwrap_or_default();
        rows.extend(
            phishing_rows(
                &ctx,
                rules,
                since.max(from.saturating_sub(rules.phishing_max_delay)),
                from,
                upto,
            )
            .await?,
        );
        let (found, to) = judge_phishing(rules, &mut rows);
        state.phishing = rows;
        findings.extend(found);
        receivers = to;
    }
    if wanted(Pattern::AddressPoisoning) || swaps {
        // A small transfer matches counterparties first paid before it: those of the
        // older ones are all known.
        let mut rows = prev
            .as_mut()
            .map(|p| std::mem::take(&mut p.poisoning))
            .unwrap_or_default();
        rows.extend(poisoning_rows(&ctx, rules, from, upto).await?);
        findings.extend(judge_poisoning(rules, &mut rows));
        state.poisoning = rows;
    }
    if wanted(Pattern::VictimCollection) || swaps {
        let mut found = match &prev {
            None => eth_victim_collection(&ctx, rules, &services, None, upto).await?,
            Some(p) => {
                // Only the addresses the new blocks touch (paid, paying, or made
                // contracts) can change; the others' findings stand.
                let touched = text_rows(
                    &ctx,
                    &format!(
                        "SELECT lower(to_address) FROM eth.transfers
                               WHERE block_number > {t} AND block_number <= {upto}
                         UNION SELECT lower(from_address) FROM eth.transfers
                               WHERE block_number > {t} AND block_number <= {upto}
                         UNION SELECT lower(contract_address) FROM eth.transactions
                               WHERE block_number > {t} AND block_number <= {upto}
                                 AND contract_address IS NOT NULL
                         UNION SELECT lower(to_address) FROM eth.traces
                               WHERE block_number > {t} AND block_number <= {upto}
                                 AND call_type IN ('create', 'create2')
                                 AND to_address IS NOT NULL",
                        t = p.tip_height
                    ),
                )
                .await?;
                let touched: BTreeSet<String> =
                    touched.into_iter().filter_map(|r| r[0].clone()).collect();
                let mut found: Vec<Finding> = p
                    .collection
                    .iter()
                    .filter(|f| f.address.as_ref().is_some_and(|a| !touched.contains(a)))
                    .cloned()
                    .collect();
                let table = "typology_touched";
                ctx.register_batch(
                    table,
                    RecordBatch::try_new(
                        Arc::new(Schema::new(vec![Field::new(
                            "address",
                            DataType::Utf8,
                            false,
                        )])),
                        vec![Arc::new(StringArray::from(
                            touched.into_iter().collect::<Vec<_>>(),
                        ))],
                    )?,
                )?;
                let fresh = eth_victim_collection(&ctx, rules, &services, Some(table), upto).await;
                ctx.deregister_table(table)?;
                found.extend(fresh?);
                found
            }
        };
        found.sort_by(|a, b| a.address.cmp(&b.address));
        state.collection_amounts = found.iter().map(|f| f.amount.to_bits()).collect();
        state.collection = found.clone();
        findings.extend(found);
    }
    if wanted(Pattern::FanOut) || swaps {
        findings.extend(eth_fan_out(&ctx, rules, &services, upto).await?);
    }
    if wanted(Pattern::PassThrough) || swaps {
        // Over every transfer each run: a new transfer to a hop ends its being one.
        findings.extend(eth_pass_through(&ctx, rules, &services, upto, walk).await?);
    }
    if wanted(Pattern::PeelChain) || swaps {
        // Likewise.
        let exchanges: HashSet<String> = labels
            .iter()
            .filter(|l| l.2 == "exchange")
            .map(|l| l.0.to_lowercase())
            .collect();
        findings.extend(eth_peel_chains(&ctx, rules, &services, &exchanges, upto, walk).await?);
    }
    if swaps {
        let mut sources: BTreeMap<String, &'static str> = BTreeMap::new();
        for f in &findings {
            if let Some(a) = &f.address {
                sources.entry(a.clone()).or_insert(f.pattern.name());
            }
        }
        for r in receivers {
            sources.entry(r).or_insert(Pattern::ApprovalPhishing.name());
        }
        let found = stablecoin_swaps(&ctx, rules, &sources, &services, upto).await?;
        findings.retain(|f| wanted(f.pattern));
        findings.extend(found);
    }
    if wanted(Pattern::CoinJoin) {
        // Last: a mixer's users are no sources of scam money (most are not scammers).
        let mut found = mixer_use(&ctx, rules, &mixers, &services, upto).await?;
        let mut other: HashMap<&str, BTreeSet<&'static str>> = HashMap::new();
        for f in &findings {
            if let Some(a) = &f.address {
                other
                    .entry(a.as_str())
                    .or_default()
                    .insert(f.pattern.name());
            }
        }
        for f in &mut found {
            let also = f
                .address
                .as_deref()
                .and_then(|a| other.get(a))
                .cloned()
                .unwrap_or_default();
            f.score = r4(f.score + if also.is_empty() { 0.0 } else { 0.25 });
            f.features.insert("other_patterns".into(), json!(also));
        }
        findings.extend(found);
    }
    let addresses: Vec<String> = findings
        .iter()
        .filter_map(|f| f.address.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let clusters = cluster_ids(&ctx, "eth_clusters", "eth", addresses).await?;
    let params = json!({
        "chain": "eth",
        "since": rules.since,
        "patterns": patterns.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "tip_height": tip.height,
        "tip_hash": tip.hash,
        "rules": format!("{rules:?}"),
        "mode": mode,
    });
    let run_id = ferret_schemas::results::new_run_id();
    let state_file = write_eth_state(wh, &state, &run_id).await?;
    let transactions = m.totals.transactions;
    let mut run = commit(
        wh,
        "eth",
        findings,
        &clusters,
        params,
        transactions,
        Some(state_file),
        run_id,
    )
    .await?;
    run.mode = mode;
    Ok(run)
}

/// The job keeping the Ethereum run's state between runs.
const ETH_STATE_JOB: &str = "typologies_eth_state";

/// What an Ethereum run keeps for the next: where it stopped, what it ran with, and the
/// rows and findings of the patterns the next run goes on from.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct EthStateMeta {
    /// [`ETH_STATE_FORMAT`] when written; another is started over from.
    #[serde(default)]
    format: u32,
    tip_height: u64,
    tip_hash: String,
    rules: String,
    patterns: Vec<String>,
    labels_run: Option<String>,
    clusters_run: Option<String>,
    /// Approval phishing: every approval-pull row so far.
    phishing: Vec<Vec<Option<String>>>,
    /// Address poisoning: every matching row so far.
    poisoning: Vec<Vec<Option<String>>>,
    /// Victim collection: the findings (before `--pattern` keeps some).
    collection: Vec<Finding>,
    /// Their amounts' bits: JSON numbers need not read back to the same f64.
    #[serde(default)]
    collection_amounts: Vec<u64>,
}

/// The layout of [`EthStateMeta`] and of the rows it keeps (the columns of
/// `phishing_rows` and `poisoning_rows`): changed with either.
const ETH_STATE_FORMAT: u32 = 1;

async fn latest_run_id(wh: &Warehouse, job: &str) -> Result<Option<String>> {
    Ok(wh.latest_run(job).await.map_err(wh_err)?.map(|r| r.run_id))
}

fn eth_damaged(path: &str, why: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!(
        "typologies: the kept state {path} is damaged ({why}); `ferret typologies eth --full` starts over"
    ))
}

/// The last Ethereum run's state when this run can go on from it (same rules, patterns,
/// labels and clusters, its last block still on the chain), and the mode to report.
async fn eth_resume(
    wh: &Warehouse,
    m: &ferret_schemas::Manifest,
    now: &EthStateMeta,
    full: bool,
) -> Result<(Option<EthStateMeta>, String)> {
    let fresh = |why: &str| Ok((None, format!("full: {why}")));
    if full {
        return fresh("--full");
    }
    let Some(run) = wh.latest_run(ETH_STATE_JOB).await.map_err(wh_err)? else {
        return fresh("no earlier run kept a state");
    };
    let path = run.files.join(", ");
    if run.checks.len() != run.files.len() {
        return Err(eth_damaged(&path, "its run records no checksums"));
    }
    let mut chunks: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    for (f, want) in run.files.iter().zip(&run.checks) {
        wh.check_run_file(f, want)
            .await
            .map_err(|e| eth_damaged(f, e))?;
        for b in wh.read_file(f).await.map_err(wh_err)? {
            let (Some(part), Some(seq), Some(data)) = (
                b.column_by_name("part")
                    .and_then(|c| c.as_string_opt::<i32>()),
                b.column_by_name("seq")
                    .and_then(|c| c.as_primitive_opt::<Int64Type>()),
                b.column_by_name("data")
                    .and_then(|c| c.as_binary_opt::<i32>()),
            ) else {
                return Err(eth_damaged(f, "not the state's columns"));
            };
            for i in 0..b.num_rows() {
                if part.value(i) != "meta" {
                    return Err(eth_damaged(f, format!("unknown part {}", part.value(i))));
                }
                if chunks
                    .insert(seq.value(i), data.value(i).to_vec())
                    .is_some()
                {
                    return Err(eth_damaged(f, format!("chunk {} twice", seq.value(i))));
                }
            }
        }
    }
    if chunks.keys().copied().ne(0..chunks.len() as i64) {
        return Err(eth_damaged(&path, "chunks missing"));
    }
    let bytes: Vec<u8> = chunks.into_values().flatten().collect();
    let mut prev: EthStateMeta =
        serde_json::from_slice(&bytes).map_err(|e| eth_damaged(&path, format!("meta: {e}")))?;
    if prev.format != ETH_STATE_FORMAT {
        return fresh("the last run's state has another format");
    }
    if prev.collection_amounts.len() != prev.collection.len() {
        return Err(eth_damaged(&path, "collection amounts missing"));
    }
    for (f, bits) in prev.collection.iter_mut().zip(&prev.collection_amounts) {
        f.amount = f64::from_bits(*bits);
    }
    if prev.rules != now.rules {
        return fresh("the rules differ from the last run's");
    }
    if prev.patterns != now.patterns {
        return fresh("the patterns differ from the last run's");
    }
    if prev.labels_run != now.labels_run {
        return fresh("the labels changed since the last run");
    }
    if prev.clusters_run != now.clusters_run {
        return fresh("the clusters changed since the last run");
    }
    let hash = ferret_kernels::blocks::block_hash_in(wh, m, Chain::Eth, prev.tip_height)
        .await
        .map_err(kernel_err)?;
    if hash.as_deref() != Some(prev.tip_hash.as_str()) || now.tip_height < prev.tip_height {
        return fresh("the last run's block is no longer on the chain");
    }
    let mode = format!("incremental above block {}", prev.tip_height);
    Ok((Some(prev), mode))
}

/// Writes the Ethereum state as a run file of its job (committed with the findings).
async fn write_eth_state(
    wh: &Warehouse,
    state: &EthStateMeta,
    run_id: &str,
) -> Result<(String, ferret_schemas::warehouse::WrittenRunFile)> {
    let json = serde_json::to_vec(state)
        .map_err(|e| DataFusionError::Execution(format!("typologies state: {e}")))?;
    let schema = state_schema();
    let mut w = wh
        .run_writer(ETH_STATE_JOB, run_id, schema.clone())
        .map_err(wh_err)?;
    for (i, chunk) in json.chunks(STATE_CHUNK).enumerate() {
        w.write(&RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["meta"])) as Arc<dyn Array>,
                Arc::new(Int64Array::from(vec![i as i64])),
                Arc::new(datafusion::arrow::array::BinaryArray::from(vec![chunk])),
            ],
        )?)
        .await
        .map_err(wh_err)?;
    }
    let file = w.finish().await.map_err(wh_err)?;
    Ok((ETH_STATE_JOB.to_string(), file))
}

/// The rows of a query, every column as text (NULL as None).
async fn text_rows(ctx: &SessionContext, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let cols: Vec<Arc<dyn Array>> = b
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let c = c.as_string::<i32>();
                        (!c.is_null(r)).then(|| c.value(r).to_string())
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

fn int(v: &Option<String>) -> i64 {
    v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn num(v: &Option<String>) -> f64 {
    v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0.0)
}

fn median_of(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Approval phishing: owners approve a spender; tokens then leave the owners in
/// transactions the owners did not send, sent by the spender or to it (a drainer
/// contract), within `phishing_max_delay` blocks. A spender draining at least
/// `phishing_min_owners` owners is a finding. Routers and bridges pull in the owner's
/// own transaction, which is what separates them.
async fn phishing_rows(
    ctx: &SessionContext,
    rules: &EthRules,
    approvals_from: i64,
    pulls_from: i64,
    upto: i64,
) -> Result<Vec<Vec<Option<String>>>> {
    let sql = format!(
        "WITH appr AS (
            SELECT block_number AS approved_at, address AS token,
                   lower(concat('0x', substr(topic1, 27, 40))) AS owner,
                   lower(concat('0x', substr(topic2, 27, 40))) AS spender,
                   encode(data, 'hex') AS amount_hex
            FROM eth.logs
            WHERE topic0 = '{APPROVAL_TOPIC}' AND topic1 IS NOT NULL AND topic2 IS NOT NULL
              AND block_number >= {approvals_from} AND block_number <= {upto}
        ),
        pulls AS (
            SELECT tt.block_number, tt.transaction_hash, tt.token_address, tt.from_address,
                   tt.to_address, tt.value_string, t.from_address AS sender, t.to_address AS called
            FROM eth.token_transfers tt
            JOIN eth.transactions t ON t.transaction_hash = tt.transaction_hash
            WHERE t.from_address <> tt.from_address AND tt.block_number >= {pulls_from}
              AND tt.block_number <= {upto}
        )
        SELECT a.spender, a.owner, a.token, a.approved_at, a.amount_hex,
               p.block_number, p.transaction_hash, p.to_address, p.value_string
        FROM appr a JOIN pulls p
          ON p.token_address = a.token AND p.from_address = a.owner
         AND (p.sender = a.spender OR p.called = a.spender)
        WHERE p.block_number >= a.approved_at
          AND p.block_number - a.approved_at <= {delay}",
        delay = rules.phishing_max_delay
    );
    text_rows(ctx, &sql).await
}

/// Rows in one order whatever produced them: by `key` (then the block, a number, at
/// `block`), then the whole row. Incremental and full runs judge the same rows alike.
fn sort_rows(rows: &mut [Vec<Option<String>>], key: usize, block: usize, tx: usize) {
    rows.sort_by(|a, b| {
        (&a[key], int(&a[block]), &a[tx], a).cmp(&(&b[key], int(&b[block]), &b[tx], b))
    });
}

/// Judges the approval-pull rows (`phishing_rows`): the findings, and every address the
/// drains paid.
fn judge_phishing(
    rules: &EthRules,
    rows: &mut [Vec<Option<String>>],
) -> (Vec<Finding>, BTreeSet<String>) {
    sort_rows(rows, 0, 5, 6);
    let mut by_spender: BTreeMap<String, Vec<&Vec<Option<String>>>> = BTreeMap::new();
    for r in rows.iter() {
        let Some(s) = r[0].clone() else { continue };
        by_spender.entry(s).or_default().push(r);
    }
    let mut out = Vec::new();
    let mut all_receivers = BTreeSet::new();
    for (spender, rows) in by_spender {
        // One pull per (transaction, owner): an approval seen twice joins twice.
        let mut seen = HashSet::new();
        let rows: Vec<&Vec<Option<String>>> = rows
            .iter()
            .copied()
            .filter(|r| seen.insert((r[6].clone(), r[1].clone())))
            .collect();
        let owners: HashSet<&str> = rows.iter().filter_map(|r| r[1].as_deref()).collect();
        if owners.len() < rules.phishing_min_owners {
            continue;
        }
        let unlimited = rows
            .iter()
            .filter(|r| {
                r[4].as_deref()
                    .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c == 'f'))
            })
            .count() as f64
            / rows.len() as f64;
        let delays: Vec<f64> = rows
            .iter()
            .map(|r| (int(&r[5]) - int(&r[3])) as f64)
            .collect();
        let receivers: HashSet<&str> = rows.iter().filter_map(|r| r[7].as_deref()).collect();
        all_receivers.extend(receivers.iter().map(|r| r.to_lowercase()));
        let drained: f64 = rows.iter().map(|r| num(&r[8])).sum();
        let mut txids: Vec<String> = Vec::new();
        for r in &rows {
            if let Some(t) = &r[6]
                && txids.last() != Some(t)
            {
                txids.push(t.clone());
            }
        }
        let count_part = ((owners.len() - rules.phishing_min_owners) as f64
            / rules.phishing_min_owners as f64)
            .min(1.0);
        let score = (0.5 + 0.5 * count_part) * (0.7 + 0.3 * unlimited);
        let mut f = Map::new();
        f.insert("owners_drained".into(), json!(owners.len()));
        f.insert("pulls".into(), json!(rows.len()));
        f.insert("unlimited_approval_share".into(), json!(r4(unlimited)));
        let max_delay = delays.iter().copied().fold(0.0, f64::max);
        f.insert("median_delay_blocks".into(), json!(median_of(delays)));
        f.insert("max_delay_blocks".into(), json!(max_delay));
        f.insert("receivers".into(), json!(receivers.len()));
        f.insert(
            "tokens".into(),
            json!(
                rows.iter()
                    .filter_map(|r| r[2].clone())
                    .collect::<std::collections::BTreeSet<_>>()
            ),
        );
        out.push(Finding {
            pattern: Pattern::ApprovalPhishing,
            address_id: None,
            address: Some(spender),
            txids,
            first_height: rows.iter().map(|r| int(&r[5])).min().unwrap_or(0),
            last_height: rows.iter().map(|r| int(&r[5])).max().unwrap_or(0),
            amount: drained,
            score: r4(score),
            features: f,
        });
    }
    (out, all_receivers)
}

/// Address poisoning: a zero or dust token transfer between a victim and an address
/// that shares the first `poison_prefix` and last `poison_suffix` hex digits of one of
/// the victim's real counterparties (an address the victim paid more than dust before),
/// without being it. Either direction counts: `transferFrom(victim, look-alike, 0)` puts
/// the look-alike in the victim's outgoing history; a dust payment from it, in the
/// incoming. One finding per look-alike address.
async fn poisoning_rows(
    ctx: &SessionContext,
    rules: &EthRules,
    from: i64,
    upto: i64,
) -> Result<Vec<Vec<Option<String>>>> {
    let (k1, k2) = (rules.poison_prefix, rules.poison_suffix);
    let sql = format!(
        "WITH small AS (
            SELECT block_number, transaction_hash, token_address,
                   lower(from_address) AS a, lower(to_address) AS b
            FROM eth.token_transfers
            WHERE (value IS NULL OR value <= {dust}) AND block_number >= {from}
              AND block_number <= {upto}
        ),
        cand AS (
            SELECT block_number, transaction_hash, a AS victim, b AS lookalike FROM small
            UNION ALL
            SELECT block_number, transaction_hash, b AS victim, a AS lookalike FROM small
        ),
        paid AS (
            SELECT lower(from_address) AS v, lower(to_address) AS c,
                   min(block_number) AS first_paid, max(block_number) AS last_paid
            FROM eth.transfers
            WHERE value > {dust} AND lower(from_address) IN (SELECT victim FROM cand)
              AND block_number <= {upto}
            GROUP BY 1, 2
        )
        SELECT x.lookalike, x.victim, p.c, x.block_number, x.transaction_hash, p.first_paid
        FROM cand x JOIN paid p
          ON p.v = x.victim
         AND substr(p.c, 3, {k1}) = substr(x.lookalike, 3, {k1})
         AND right(p.c, {k2}) = right(x.lookalike, {k2})
        WHERE p.c <> x.lookalike
          AND p.first_paid <= x.block_number
          AND x.block_number - p.first_paid <= {delay}",
        dust = rules.poison_max_value,
        delay = rules.poison_max_delay
    );
    text_rows(ctx, &sql).await
}

/// Judges the poisoning rows (`poisoning_rows`): one finding per look-alike.
fn judge_poisoning(rules: &EthRules, rows: &mut [Vec<Option<String>>]) -> Vec<Finding> {
    let (k1, k2) = (rules.poison_prefix, rules.poison_suffix);
    sort_rows(rows, 0, 3, 4);
    let mut by_fake: BTreeMap<String, Vec<&Vec<Option<String>>>> = BTreeMap::new();
    for r in rows.iter() {
        let Some(s) = r[0].clone() else { continue };
        by_fake.entry(s).or_default().push(r);
    }
    let common = |a: &str, b: &str, from_end: bool| -> usize {
        let (a, b) = (
            a.trim_start_matches("0x").as_bytes(),
            b.trim_start_matches("0x").as_bytes(),
        );
        if from_end {
            a.iter()
                .rev()
                .zip(b.iter().rev())
                .take_while(|(x, y)| x == y)
                .count()
        } else {
            a.iter().zip(b).take_while(|(x, y)| x == y).count()
        }
    };
    let mut out = Vec::new();
    for (fake, rows) in by_fake {
        let victims: HashSet<&str> = rows.iter().filter_map(|r| r[1].as_deref()).collect();
        let mimicked: std::collections::BTreeSet<&str> =
            rows.iter().filter_map(|r| r[2].as_deref()).collect();
        let best = mimicked
            .iter()
            .map(|c| (common(c, &fake, false), common(c, &fake, true)))
            .max_by_key(|&(p, s)| p + s)
            .unwrap_or((0, 0));
        let delays: Vec<f64> = rows
            .iter()
            .map(|r| (int(&r[3]) - int(&r[5])) as f64)
            .collect();
        let txids = distinct_in_order(rows.iter().filter_map(|r| r[4].as_ref()));
        // Random addresses match k hex digits with odds 16^-k: more shared digits, a
        // surer finding.
        let digits = (best.0 + best.1) as f64;
        let score = (0.5 + 0.05 * (digits - (k1 + k2) as f64)).clamp(0.5, 1.0);
        let mut f = Map::new();
        f.insert("victims".into(), json!(victims.len()));
        f.insert("mimicked".into(), json!(mimicked));
        f.insert("prefix_digits".into(), json!(best.0));
        f.insert("suffix_digits".into(), json!(best.1));
        f.insert("median_delay_blocks".into(), json!(median_of(delays)));
        f.insert("transfers".into(), json!(txids.len()));
        out.push(Finding {
            pattern: Pattern::AddressPoisoning,
            address_id: None,
            address: Some(fake),
            txids,
            first_height: rows.iter().map(|r| int(&r[3])).min().unwrap_or(0),
            last_height: rows.iter().map(|r| int(&r[3])).max().unwrap_or(0),
            amount: 0.0,
            score: r4(score),
            features: f,
        });
    }
    out
}

/// Whether `value` (base units of a token with `decimals`) is a whole multiple of 100
/// coins: what an exact-output swap for a round sum buys.
fn round_sum(value: &str, decimals: u32) -> bool {
    let Ok(v) = value.parse::<u128>() else {
        return false;
    };
    let unit = 10u128
        .checked_pow(decimals)
        .and_then(|u| u.checked_mul(100));
    matches!(unit, Some(u) if v > 0 && v % u == 0)
}

/// Mainnet WETH: ETH enters pools wrapped, so a payment in ETH and a swap of WETH are
/// one asset.
const WETH: &str = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2";

/// The contracts created up to block `upto` (SQL: one `address` column).
fn contracts_sql(upto: i64) -> String {
    format!(
        "SELECT lower(contract_address) AS address FROM eth.transactions
         WHERE contract_address IS NOT NULL AND block_number <= {upto}
         UNION
         SELECT lower(to_address) AS address FROM eth.traces
         WHERE call_type IN ('create', 'create2') AND to_address IS NOT NULL
           AND block_number <= {upto}"
    )
}

/// The single-use addresses of the pass-through and peel-chain hops, as SQL CTEs over
/// `t` (the transfers) ending in `hops(a, asset)`: an address that received exactly one
/// transfer of `asset` and sent `out` (`n_out = 1`, `n_out >= 2`) of it, and had no
/// other transfers but ETH received totalling at most `gas` wei when `asset` is a token
/// (the gas to pass it on); contracts are none.
fn single_use_sql(upto: i64, gas: u128, out: &str) -> String {
    format!(
        "per_asset AS (
            SELECT a, asset, sum(n_in) AS n_in, sum(n_out) AS n_out, sum(v_in) AS v_in
            FROM (
                SELECT r AS a, asset, 1 AS n_in, 0 AS n_out, CAST(v AS DOUBLE) AS v_in FROM t
                UNION ALL
                SELECT f AS a, asset, 0 AS n_in, 1 AS n_out, 0.0 AS v_in FROM t
            ) x
            GROUP BY a, asset
        ),
        single AS (
            SELECT a FROM per_asset
            GROUP BY a
            HAVING sum(CASE WHEN n_in = 1 AND {out} THEN 1 ELSE 0 END) = 1
               AND sum(CASE WHEN n_in = 1 AND {out} THEN 0
                            WHEN asset = 'eth' AND n_out = 0 AND v_in <= {gas} THEN 0
                            ELSE 1 END) = 0
        ),
        contracts AS ({contracts}),
        hops AS (
            SELECT p.a, p.asset FROM per_asset p JOIN single s ON s.a = p.a
            WHERE p.n_in = 1 AND p.{out} AND p.a NOT IN (SELECT address FROM contracts)
        )",
        contracts = contracts_sql(upto),
    )
}

/// One transfer of a hop or peel step, seen from it: the other side, the asset, the
/// value, its place (block, index, ordinal), its transaction, and (outgoing) whether
/// it paid a contract.
struct HopLeg {
    other: String,
    asset: String,
    value: u128,
    at: (i64, i64, i64),
    tx: String,
    to_contract: bool,
}

/// Each address's incoming and outgoing legs, from rows `('in' | 'out', address, other,
/// asset, value, block, index, ordinal, hash[, to_contract])`. A value that is no
/// number (beyond 128 bits) is damage the engine let through: the leg is left out, so
/// its address is no hop.
fn hop_legs(rows: Vec<Vec<Option<String>>>) -> HashMap<String, (Vec<HopLeg>, Vec<HopLeg>)> {
    let mut legs: HashMap<String, (Vec<HopLeg>, Vec<HopLeg>)> = HashMap::new();
    for r in rows {
        let Some(a) = r[1].clone() else { continue };
        let Some(value) = r[4].as_deref().and_then(|v| v.parse::<u128>().ok()) else {
            continue;
        };
        let leg = HopLeg {
            other: r[2].clone().unwrap_or_default(),
            asset: r[3].clone().unwrap_or_default(),
            value,
            at: (int(&r[5]), int(&r[6]), int(&r[7])),
            tx: r[8].clone().unwrap_or_default(),
            to_contract: r.get(9).is_some_and(|v| int(v) == 1),
        };
        let e = legs.entry(a).or_default();
        if r[0].as_deref() == Some("in") {
            e.0.push(leg);
        } else {
            e.1.push(leg);
        }
    }
    legs
}

/// The chains `next` links through `nodes`, ranked by the `chainrank` kernel on `walk`:
/// each starts at a node that no node's `next` names and follows `next` while it names a
/// node; in the order of their first nodes' addresses. The steps and hops are
/// single-use addresses, so no two name the same next one and no chain closes on
/// itself; if that ever fails, the chains are walked link by link instead
/// ([`walk_chains_in_order`], the kernel's oracle in the tests) and a warning says so.
fn walk_chains<'a, T>(
    nodes: &'a HashMap<String, T>,
    next: impl Fn(&str) -> Option<&'a String>,
    walk: &ferret_kernels::device::Backend,
) -> Result<Vec<Vec<(&'a String, &'a T)>>> {
    use ferret_kernels::chainrank::{NONE, rank_chains};
    let mut keys: Vec<&'a String> = nodes.keys().collect();
    keys.sort();
    let index: HashMap<&str, u32> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i as u32))
        .collect();
    let mut pred = vec![NONE; keys.len()];
    let mut list = true;
    for (i, k) in keys.iter().enumerate() {
        if let Some(&j) = next(k).and_then(|n| index.get(n.as_str())) {
            if pred[j as usize] != NONE || j as usize == i {
                list = false;
                break;
            }
            pred[j as usize] = i as u32;
        }
    }
    let ranked = if list {
        match rank_chains(walk, &pred) {
            Ok(r) => Some(r),
            Err(ferret_kernels::Error::BadGraph(why)) => {
                tracing::warn!(%why, "typologies: links that are not chains; walked link by link");
                None
            }
            Err(e) => return Err(kernel_err(e)),
        }
    } else {
        tracing::warn!("typologies: two nodes link to one; walked link by link");
        None
    };
    let Some(ranked) = ranked else {
        return Ok(walk_chains_in_order(nodes, next));
    };
    // Heads in address order, each chain's members by rank.
    let mut members: Vec<(u32, u32, u32)> = (0..keys.len() as u32)
        .map(|i| (ranked.head[i as usize], ranked.rank[i as usize], i))
        .collect();
    members.sort_unstable();
    let mut out: Vec<Vec<(&'a String, &'a T)>> = Vec::new();
    for (h, r, i) in members {
        let k = keys[i as usize];
        let node = (k, &nodes[k.as_str()]);
        if r == 0 {
            debug_assert_eq!(h, i);
            out.push(vec![node]);
        } else if let Some(c) = out.last_mut() {
            c.push(node);
        }
    }
    Ok(out)
}

/// [`walk_chains`] link by link: each chain starts at a node that no node's `next`
/// names and follows `next` while it names a node (a cycle ends where it closes).
fn walk_chains_in_order<'a, T>(
    nodes: &'a HashMap<String, T>,
    next: impl Fn(&str) -> Option<&'a String>,
) -> Vec<Vec<(&'a String, &'a T)>> {
    let followed: HashSet<&String> = nodes.keys().filter_map(|a| next(a)).collect();
    let mut heads: Vec<&String> = nodes.keys().filter(|a| !followed.contains(a)).collect();
    heads.sort();
    heads
        .into_iter()
        .map(|head| {
            let mut chain = Vec::new();
            let mut seen = HashSet::new();
            let mut cur = Some(head);
            while let Some(a) = cur {
                let Some(node) = nodes.get_key_value(a) else {
                    break;
                };
                if !seen.insert(a) {
                    break;
                }
                chain.push(node);
                cur = next(a);
            }
            chain
        })
        .collect()
}

/// Every transfer of more than zero between two addresses up to block `upto`, in short
/// names: `f`rom, `r`ecipient, `asset`, `v`alue (text), `b`lock, `i`ndex, `o`rdinal,
/// `h`ash.
fn transfers_sql(upto: i64) -> String {
    format!(
        "SELECT lower(from_address) AS f, lower(to_address) AS r, lower(asset) AS asset,
                value_string AS v, block_number AS b, transaction_index AS i,
                ordinal AS o, transaction_hash AS h
         FROM eth.transfers
         WHERE value > 0 AND block_number <= {upto}
           AND lower(from_address) <> lower(to_address)"
    )
}

/// Each text once, in the order first seen.
fn distinct_in_order<'a>(it: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut seen = HashSet::new();
    it.into_iter()
        .filter(|t| seen.insert(t.as_str()))
        .cloned()
        .collect()
}

/// A table of addresses registered for a query, dropped when done.
fn address_table(v: impl IntoIterator<Item = String>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "address",
            DataType::Utf8,
            false,
        )])),
        vec![Arc::new(StringArray::from(
            v.into_iter().collect::<Vec<_>>(),
        ))],
    )?)
}

/// Swaps of scam money into stablecoins.
///
/// A *purchase* is, per transaction and stablecoin, what left the transaction's pools
/// (addresses emitting one of [`DEX_SWAP_TOPICS`] in it) less what went back into them:
/// the middle leg of a route (pool to pool, or pool to router to pool) nets to nothing.
/// The *swapper* is the transaction's sender. A purchase is scam money's when the
/// swapper is itself a *source* (a finding address of this run: collection address,
/// phishing spender or receiver of its drains, poisoner's look-alike; no pool, contract
/// or labelled service), or a source paid it more than dust, in an asset that this
/// swap sold (net into its pools; ETH and WETH as one), in an earlier transaction at most
/// `swap_max_delay` blocks before. One finding per swapper; labelled services are none.
/// Only blocks up to `upto` are read.
async fn stablecoin_swaps(
    ctx: &SessionContext,
    rules: &EthRules,
    sources: &BTreeMap<String, &'static str>,
    services: &HashSet<String>,
    upto: i64,
) -> Result<Vec<Finding>> {
    if rules.stablecoins.is_empty() || sources.is_empty() {
        return Ok(Vec::new());
    }
    let since = rules.since.unwrap_or(i64::MIN);
    let decimals: HashMap<String, u32> = rules
        .stablecoins
        .iter()
        .map(|(a, d)| (a.to_lowercase(), *d))
        .collect();
    let list = decimals
        .keys()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let topics = DEX_SWAP_TOPICS
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let (src_t, swp_t) = ("typology_swap_sources", "typology_swappers");
    ctx.register_batch(
        src_t,
        address_table(sources.keys().filter(|a| !services.contains(*a)).cloned())?,
    )?;
    let result = async {
        // The sources that are no pool or contract, and what they paid whom.
        let valid: BTreeSet<String> = text_rows(
            ctx,
            &format!(
                "SELECT address FROM {src_t}
                 WHERE address NOT IN (SELECT lower(address) FROM eth.logs
                                       WHERE topic0 IN ({topics}) AND block_number <= {upto})
                   AND address NOT IN ({contracts})",
                contracts = contracts_sql(upto)
            ),
        )
        .await?
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
        if valid.is_empty() {
            return Ok(None);
        }
        ctx.deregister_table(src_t)?;
        ctx.register_batch(src_t, address_table(valid.iter().cloned())?)?;
        let paid = text_rows(
            ctx,
            &format!(
                "SELECT lower(tr.to_address), lower(tr.from_address), tr.block_number,
                        tr.transaction_index,
                        CASE WHEN lower(tr.asset) = '{WETH}' THEN 'eth' ELSE lower(tr.asset) END
                 FROM eth.transfers tr JOIN {src_t} s ON s.address = lower(tr.from_address)
                 WHERE tr.value > {dust} AND tr.block_number <= {upto}
                   AND lower(tr.to_address) <> lower(tr.from_address)",
                dust = rules.poison_max_value
            ),
        )
        .await?;
        // Per swapper: (block, index, source, asset) of each payment from a source.
        let mut paid_by: HashMap<String, Vec<(i64, i64, String, String)>> = HashMap::new();
        for r in paid {
            if let (Some(to), Some(from)) = (r[0].clone(), r[1].clone()) {
                paid_by.entry(to).or_default().push((
                    int(&r[2]),
                    int(&r[3]),
                    from,
                    r[4].clone().unwrap_or_default(),
                ));
            }
        }
        let swappers: BTreeSet<String> = valid
            .iter()
            .cloned()
            .chain(paid_by.keys().cloned())
            .collect();
        ctx.register_batch(
            swp_t,
            address_table(swappers.into_iter().filter(|a| !services.contains(a)))?,
        )?;
        // The swappers' transactions with a swap: their stablecoin legs touching a pool,
        // and what went into the pools.
        let rows = text_rows(
            ctx,
            &format!(
                "WITH pools AS (
                    SELECT DISTINCT transaction_hash, lower(address) AS pool FROM eth.logs
                    WHERE topic0 IN ({topics}) AND block_number >= {since}
                      AND block_number <= {upto}
                ),
                txs AS (
                    SELECT t.transaction_hash, lower(t.from_address) AS sender, t.block_number,
                           t.transaction_index
                    FROM eth.transactions t JOIN {swp_t} w ON w.address = lower(t.from_address)
                    WHERE t.block_number >= {since} AND t.block_number <= {upto}
                      AND t.transaction_hash IN (SELECT transaction_hash FROM pools)
                )
                SELECT 'leg', x.sender, x.block_number, x.transaction_index, x.transaction_hash,
                       lower(tt.token_address), lower(tt.from_address), lower(tt.to_address),
                       tt.value_string, p1.pool IS NOT NULL, p2.pool IS NOT NULL
                FROM txs x
                JOIN eth.token_transfers tt ON tt.transaction_hash = x.transaction_hash
                LEFT JOIN pools p1 ON p1.transaction_hash = tt.transaction_hash
                                  AND p1.pool = lower(tt.from_address)
                LEFT JOIN pools p2 ON p2.transaction_hash = tt.transaction_hash
                                  AND p2.pool = lower(tt.to_address)
                WHERE lower(tt.token_address) IN ({list})
                  AND (p1.pool IS NOT NULL OR p2.pool IS NOT NULL)
                UNION ALL
                SELECT 'flow', NULL, NULL, NULL, x.transaction_hash,
                       CASE WHEN lower(tr.asset) = '{WETH}' THEN 'eth' ELSE lower(tr.asset) END,
                       NULL, NULL, tr.value_string, po.pool IS NOT NULL, pi.pool IS NOT NULL
                FROM txs x
                JOIN eth.transfers tr ON tr.transaction_hash = x.transaction_hash
                LEFT JOIN pools po ON po.transaction_hash = tr.transaction_hash
                                  AND po.pool = lower(tr.from_address)
                LEFT JOIN pools pi ON pi.transaction_hash = tr.transaction_hash
                                  AND pi.pool = lower(tr.to_address)
                WHERE po.pool IS NOT NULL OR pi.pool IS NOT NULL"
            ),
        )
        .await?;
        Ok::<_, DataFusionError>(Some((valid, paid_by, rows)))
    }
    .await;
    let _ = ctx.deregister_table(src_t);
    let _ = ctx.deregister_table(swp_t);
    let Some((valid, paid_by, rows)) = result? else {
        return Ok(Vec::new());
    };
    // Per (transaction, stablecoin): out of the pools, back into them, who got it, from
    // which pools.
    #[derive(Default)]
    struct Leg {
        swapper: String,
        height: i64,
        index: i64,
        out: u128,
        back: u128,
        recipients: BTreeSet<String>,
        pools: BTreeSet<String>,
    }
    let mut legs: BTreeMap<(String, String), Leg> = BTreeMap::new();
    // Per transaction and asset: what went into its pools, and what came out of them.
    let mut flows: HashMap<String, BTreeMap<String, (u128, u128)>> = HashMap::new();
    for r in rows {
        let tx = r[4].clone().unwrap_or_default();
        if r[0].as_deref() == Some("flow") {
            let v = r[8]
                .as_deref()
                .and_then(|v| v.parse::<u128>().ok())
                .unwrap_or(0);
            let e = flows
                .entry(tx)
                .or_default()
                .entry(r[5].clone().unwrap_or_default())
                .or_default();
            if r[10].as_deref() == Some("true") {
                e.0 = e.0.saturating_add(v);
            }
            if r[9].as_deref() == Some("true") {
                e.1 = e.1.saturating_add(v);
            }
            continue;
        }
        let token = r[5].clone().unwrap_or_default();
        let l = legs.entry((tx, token)).or_default();
        l.swapper = r[1].clone().unwrap_or_default();
        l.height = int(&r[2]);
        l.index = int(&r[3]);
        let v = r[8]
            .as_deref()
            .and_then(|v| v.parse::<u128>().ok())
            .unwrap_or(0);
        let (from_pool, to_pool) = (
            r[9].as_deref() == Some("true"),
            r[10].as_deref() == Some("true"),
        );
        if from_pool && !to_pool {
            l.out = l.out.saturating_add(v);
            l.recipients.insert(r[7].clone().unwrap_or_default());
            l.pools.insert(r[6].clone().unwrap_or_default());
        } else if to_pool && !from_pool {
            l.back = l.back.saturating_add(v);
        }
    }
    // What each transaction sold: the assets more of which went into its pools than came
    // out (a route's middle legs go in and out again).
    let assets_in: HashMap<String, BTreeSet<String>> = flows
        .into_iter()
        .map(|(tx, per)| {
            let sold = per
                .into_iter()
                .filter(|(_, (i, o))| i > o)
                .map(|(a, _)| a)
                .collect();
            (tx, sold)
        })
        .collect();
    struct Swap {
        tx: String,
        token: String,
        height: i64,
        bought: u128,
        leg: Leg,
        source: String,
        delay: i64,
    }
    let mut by: BTreeMap<String, Vec<Swap>> = BTreeMap::new();
    for ((tx, token), leg) in legs {
        let Some(bought) = leg.out.checked_sub(leg.back).filter(|v| *v > 0) else {
            continue;
        };
        let s = &leg.swapper;
        let link = if valid.contains(s) {
            Some((s.clone(), 0))
        } else {
            let put_in = assets_in.get(&tx);
            paid_by.get(s).and_then(|p| {
                p.iter()
                    .filter(|(h, i, _, asset)| {
                        (*h, *i) < (leg.height, leg.index)
                            && leg.height - *h <= rules.swap_max_delay
                            && put_in.is_some_and(|a| a.contains(asset))
                    })
                    .max_by(|a, b| (a.0, a.1, &b.2).cmp(&(b.0, b.1, &a.2)))
                    .map(|(h, _, from, _)| (from.clone(), leg.height - h))
            })
        };
        if let Some((source, delay)) = link {
            by.entry(s.clone()).or_default().push(Swap {
                tx,
                token,
                height: leg.height,
                bought,
                leg,
                source,
                delay,
            });
        }
    }
    let mut out = Vec::new();
    for (swapper, mut list) in by {
        list.sort_by(|a, b| {
            (a.height, a.leg.index, &a.tx, &a.token).cmp(&(b.height, b.leg.index, &b.tx, &b.token))
        });
        let mut per_token: BTreeMap<&str, (u128, usize)> = BTreeMap::new();
        let mut round = 0usize;
        for s in &list {
            let e = per_token.entry(s.token.as_str()).or_default();
            e.0 = e.0.saturating_add(s.bought);
            e.1 += 1;
            if round_sum(
                &s.bought.to_string(),
                decimals.get(&s.token).copied().unwrap_or(6),
            ) {
                round += 1;
            }
        }
        let (main, (main_total, _)) = per_token
            .iter()
            .max_by_key(|(_, v)| v.1)
            .map(|(k, v)| (k.to_string(), *v))
            .unwrap_or_default();
        let txids = distinct_in_order(list.iter().map(|s| &s.tx));
        let n = txids.len();
        let round_share = round as f64 / list.len() as f64;
        let srcs: BTreeMap<&str, &str> = list
            .iter()
            .map(|s| {
                (
                    s.source.as_str(),
                    sources.get(&s.source).copied().unwrap_or(""),
                )
            })
            .collect();
        let delays: Vec<f64> = list.iter().map(|s| s.delay as f64).collect();
        let own = list.iter().filter(|s| s.source == swapper).count();
        let assets: BTreeSet<&str> = list
            .iter()
            .filter_map(|s| assets_in.get(&s.tx))
            .flatten()
            .map(String::as_str)
            .collect();
        let score = 0.6 + 0.2 * (n as f64 / 3.0).min(1.0) + 0.2 * round_share;
        let mut f = Map::new();
        f.insert("swaps".into(), json!(n));
        f.insert("stablecoin".into(), json!(main));
        f.insert(
            "bought".into(),
            json!(
                per_token
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.0.to_string()))
                    .collect::<BTreeMap<_, _>>()
            ),
        );
        f.insert("assets_in".into(), json!(assets));
        f.insert("sources".into(), json!(srcs));
        f.insert("own_money_swaps".into(), json!(own));
        f.insert("median_delay_blocks".into(), json!(median_of(delays)));
        f.insert("round_sum_swaps".into(), json!(round));
        f.insert("round_sum_share".into(), json!(r4(round_share)));
        f.insert(
            "pools".into(),
            json!(
                list.iter()
                    .flat_map(|s| s.leg.pools.iter().map(String::as_str))
                    .collect::<BTreeSet<_>>()
            ),
        );
        f.insert(
            "paid_to_others".into(),
            json!(
                list.iter()
                    .filter(|s| s.leg.recipients.iter().any(|r| r != &swapper))
                    .count()
            ),
        );
        out.push(Finding {
            pattern: Pattern::StablecoinSwap,
            address_id: None,
            address: Some(swapper),
            txids,
            first_height: list.first().map(|s| s.height).unwrap_or(0),
            last_height: list.last().map(|s| s.height).unwrap_or(0),
            amount: main_total as f64,
            score: r4(score),
            features: f,
        });
    }
    Ok(out)
}

/// Fan-out structuring on Ethereum, in the stablecoins (whose coins are dollars) and ETH.
/// A payment is *just under* when its amount in coins is within `fan_band` under a round
/// sum (1, 2 or 5 × 10^k coins) and at least 500 coins (stablecoins) or 0.1 ETH; it goes
/// to a *fresh* address when it is that address's first incoming transfer. A source (the
/// payer; no contract, no labelled service) is a finding when, per asset:
/// - it made at least `fan_min_outputs` just-under payments to fresh addresses;
/// - they are at least half its payments of that asset from the first to the last;
/// - under each round sum their amounts vary by at most `fan_max_cv`;
/// - fewer than half of those recipients were paid by it again (a payroll pays the same
///   people every month).
async fn eth_fan_out(
    ctx: &SessionContext,
    rules: &EthRules,
    services: &HashSet<String>,
    upto: i64,
) -> Result<Vec<Finding>> {
    let since = rules.since.unwrap_or(i64::MIN);
    // Asset → (decimals, the scale the round-sum test counts in, the smallest amount).
    let mut assets: HashMap<String, (u32, u32, f64)> = HashMap::new();
    assets.insert("eth".into(), (18, 14, 0.1));
    for (a, d) in &rules.stablecoins {
        assets.insert(a.to_lowercase(), (*d, d.saturating_sub(2), 500.0));
    }
    let list = assets
        .keys()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // The scale of each asset's round-sum test, for the loose test in SQL.
    let scales = assets
        .iter()
        .map(|(a, (_, sc, _))| format!("WHEN '{a}' THEN {sc}"))
        .collect::<Vec<_>>()
        .join(" ");
    let b = rules.fan_band;
    let (lo2, lo5, lo10) = (
        2.0 * (1.0 - b) - 1e-6,
        5.0 * (1.0 - b) - 1e-6,
        10.0 * (1.0 - b) - 1e-6,
    );
    // First the payments to fresh addresses whose amount is loosely just under a round
    // sum (the leading digits of its amount in the test's units, in floating point; the
    // exact test follows): on a whole chain, a small share of all payments.
    let sql = format!(
        "WITH t AS ({transfers}),
        first_in AS (
            SELECT r, min(b * 1000000000 + i * 100000 + o) AS k FROM t GROUP BY r
        ),
        scaled AS (
            SELECT t.*,
                   CAST(t.v AS DOUBLE) / power(10.0, CASE t.asset {scales} END) AS x
            FROM t
            WHERE t.asset IN ({list}) AND t.b >= {since} AND t.f NOT IN ({contracts})
        ),
        cand AS (
            SELECT *, x / power(10.0, floor(log10(x))) AS m FROM scaled WHERE x >= 1
        )
        SELECT c.f, c.asset, c.v, c.h, c.o
        FROM cand c JOIN first_in fi
          ON fi.r = c.r AND fi.k = c.b * 1000000000 + c.i * 100000 + c.o
        WHERE (c.m >= {lo2} AND c.m < 2.000001) OR (c.m >= {lo5} AND c.m < 5.000001)
           OR c.m >= {lo10} OR c.m < 1.000001",
        contracts = contracts_sql(upto),
        transfers = transfers_sql(upto),
    );
    // The exact test: per (payer, asset), its just-under payments to fresh addresses.
    let under_of = |asset: &str, value: u128| -> Option<i64> {
        let &(dec, scale, min) = assets.get(asset)?;
        let coins = value as f64 / 10f64.powi(dec as i32);
        let units = i64::try_from(value / 10u128.pow(scale)).ok()?;
        (coins >= min).then_some(())?;
        just_under_round(units, rules.fan_band)
    };
    let mut fresh_under: HashSet<(String, String)> = HashSet::new();
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for r in text_rows(ctx, &sql).await? {
        let (Some(f), Some(asset)) = (r[0].clone(), r[1].clone()) else {
            continue;
        };
        let Some(value) = r[2].as_deref().and_then(|v| v.parse::<u128>().ok()) else {
            continue;
        };
        if services.contains(&f) || under_of(&asset, value).is_none() {
            continue;
        }
        fresh_under.insert((
            r[3].clone().unwrap_or_default(),
            r[4].clone().unwrap_or_default(),
        ));
        *counts.entry((f, asset)).or_default() += 1;
    }
    let groups: HashSet<(String, String)> = counts
        .into_iter()
        .filter(|(_, n)| *n >= rules.fan_min_outputs)
        .map(|(k, _)| k)
        .collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    // Then every payment of those payers in those assets.
    let table = "typology_fan_sources";
    ctx.register_batch(
        table,
        address_table(groups.iter().map(|g| g.0.clone()).collect::<BTreeSet<_>>())?,
    )?;
    let rows = text_rows(
        ctx,
        &format!(
            "SELECT lower(tr.from_address), lower(tr.to_address), lower(tr.asset),
                    tr.value_string, tr.block_number, tr.transaction_index, tr.ordinal,
                    tr.transaction_hash
             FROM eth.transfers tr JOIN {table} s ON s.address = lower(tr.from_address)
             WHERE tr.value > 0 AND tr.block_number <= {upto} AND tr.block_number >= {since}
               AND lower(tr.from_address) <> lower(tr.to_address)
               AND lower(tr.asset) IN ({list})"
        ),
    )
    .await;
    ctx.deregister_table(table)?;
    struct Pay {
        to: String,
        coins: f64,
        under: Option<i64>,
        value: u128,
        at: (i64, i64, i64),
        tx: String,
        fresh: bool,
    }
    let mut by: BTreeMap<(String, String), Vec<Pay>> = BTreeMap::new();
    for r in rows? {
        let (Some(f), Some(asset)) = (r[0].clone(), r[2].clone()) else {
            continue;
        };
        let key = (f, asset);
        if !groups.contains(&key) {
            continue;
        }
        let Some(&(dec, _, _)) = assets.get(&key.1) else {
            continue;
        };
        let Some(value) = r[3].as_deref().and_then(|v| v.parse::<u128>().ok()) else {
            continue;
        };
        let tx = r[7].clone().unwrap_or_default();
        let fresh = fresh_under.contains(&(tx.clone(), r[6].clone().unwrap_or_default()));
        by.entry(key.clone()).or_default().push(Pay {
            to: r[1].clone().unwrap_or_default(),
            coins: value as f64 / 10f64.powi(dec as i32),
            under: under_of(&key.1, value),
            value,
            at: (int(&r[4]), int(&r[5]), int(&r[6])),
            tx,
            fresh,
        });
    }
    let mut out = Vec::new();
    for ((source, asset), mut pays) in by {
        pays.sort_by(|a, b| (a.at, &a.tx).cmp(&(b.at, &b.tx)));
        let under: Vec<&Pay> = pays
            .iter()
            .filter(|p| p.fresh && p.under.is_some())
            .collect();
        if under.len() < rules.fan_min_outputs {
            continue;
        }
        let (lo, hi) = (under[0].at, under[under.len() - 1].at);
        let all = pays.iter().filter(|p| p.at >= lo && p.at <= hi).count();
        let share = under.len() as f64 / all.max(1) as f64;
        let mut by_round: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for p in &under {
            by_round
                .entry(p.under.unwrap_or(0))
                .or_default()
                .push(p.coins);
        }
        let cv = by_round
            .values()
            .map(|v| coefficient_of_variation(v))
            .fold(0.0, f64::max);
        let recipients: HashSet<&str> = under.iter().map(|p| p.to.as_str()).collect();
        let mut paid: HashMap<&str, usize> = HashMap::new();
        for p in &pays {
            if recipients.contains(p.to.as_str()) {
                *paid.entry(p.to.as_str()).or_default() += 1;
            }
        }
        let again = paid.values().filter(|&&n| n >= 2).count() as f64 / recipients.len() as f64;
        if share < 0.5 || cv > rules.fan_max_cv || again >= 0.5 {
            continue;
        }
        let (dec, scale, _) = assets[&asset];
        let thresholds: Vec<f64> = by_round
            .keys()
            .map(|r| *r as f64 * 10f64.powi(scale as i32 - dec as i32))
            .collect();
        let distance: f64 = under
            .iter()
            .map(|p| {
                let r = p.under.unwrap_or(0) as f64 * 10f64.powi(scale as i32 - dec as i32);
                (r - p.coins) / r.max(f64::MIN_POSITIVE)
            })
            .sum::<f64>()
            / under.len() as f64;
        let n = under.len();
        let score = (0.5 + 0.5 * (n as f64 / 20.0).min(1.0))
            * (1.0 - cv / (2.0 * rules.fan_max_cv.max(1e-9))).clamp(0.5, 1.0);
        let txids = distinct_in_order(under.iter().map(|p| &p.tx));
        let total: u128 = under
            .iter()
            .map(|p| p.value)
            .fold(0u128, u128::saturating_add);
        let mut f = Map::new();
        f.insert("outputs".into(), json!(n));
        f.insert("payments".into(), json!(all));
        f.insert("just_under_share".into(), json!(r4(share)));
        f.insert("amount_cv".into(), json!(r4(cv)));
        f.insert("mean_distance_under".into(), json!(r4(distance)));
        f.insert("thresholds".into(), json!(thresholds));
        f.insert("asset".into(), json!(asset));
        f.insert("recipients_paid_again".into(), json!(r4(again)));
        out.push(Finding {
            pattern: Pattern::FanOut,
            address_id: None,
            address: Some(source),
            txids,
            first_height: lo.0,
            last_height: hi.0,
            amount: total as f64,
            score: r4(score),
            features: f,
        });
    }
    Ok(out)
}

/// Tornado Cash's ETH pools (0.1, 1, 10 and 100 ETH), all on OFAC's list of sanctioned
/// addresses.
pub const TORNADO_ETH_POOLS: [(&str, &str); 4] = [
    (
        "0x12d66f87a04a9e220743712ce6d9bb1b5616b8fc",
        "tornado-cash-0.1-eth",
    ),
    (
        "0x47ce0c6ed5b0ce3d3a51fdb1c52dc66a7c3c2936",
        "tornado-cash-1-eth",
    ),
    (
        "0x910cbd523d972eb0a6f4cae4618ad62622b39dbf",
        "tornado-cash-10-eth",
    ),
    (
        "0xa160cdab225685da1d56aa342ad8841c3b53f291",
        "tornado-cash-100-eth",
    ),
];

/// Mixer use on Ethereum: the addresses that paid a mixer (ETH or a token, more than
/// zero) in transactions they sent themselves. One finding per depositor. Mixers are the
/// addresses labelled `mixer` and Tornado Cash's ETH pools.
async fn mixer_use(
    ctx: &SessionContext,
    rules: &EthRules,
    mixers: &BTreeMap<String, String>,
    services: &HashSet<String>,
    upto: i64,
) -> Result<Vec<Finding>> {
    if mixers.is_empty() {
        return Ok(Vec::new());
    }
    let since = rules.since.unwrap_or(i64::MIN);
    let table = "typology_mixers";
    ctx.register_batch(table, address_table(mixers.keys().cloned())?)?;
    let rows = text_rows(
        ctx,
        &format!(
            "SELECT lower(tr.from_address), lower(tr.to_address), lower(tr.asset),
                    tr.value_string, tr.block_number, tr.transaction_index, tr.transaction_hash
             FROM eth.transfers tr
             JOIN {table} m ON m.address = lower(tr.to_address)
             JOIN eth.transactions x ON x.transaction_hash = tr.transaction_hash
                                    AND lower(x.from_address) = lower(tr.from_address)
             WHERE tr.value > 0 AND tr.block_number >= {since} AND tr.block_number <= {upto}"
        ),
    )
    .await;
    ctx.deregister_table(table)?;
    struct Deposit {
        mixer: String,
        asset: String,
        value: u128,
        at: (i64, i64),
        tx: String,
    }
    let mut by: BTreeMap<String, Vec<Deposit>> = BTreeMap::new();
    for r in rows? {
        let Some(from) = r[0].clone() else { continue };
        if services.contains(&from) || mixers.contains_key(&from) {
            continue;
        }
        by.entry(from).or_default().push(Deposit {
            mixer: r[1].clone().unwrap_or_default(),
            asset: r[2].clone().unwrap_or_default(),
            value: r[3].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
            at: (int(&r[4]), int(&r[5])),
            tx: r[6].clone().unwrap_or_default(),
        });
    }
    let mut out = Vec::new();
    for (depositor, mut list) in by {
        list.sort_by(|a, b| (a.at, &a.tx).cmp(&(b.at, &b.tx)));
        let mut per_asset: BTreeMap<&str, (u128, usize)> = BTreeMap::new();
        for d in &list {
            let e = per_asset.entry(d.asset.as_str()).or_default();
            e.0 = e.0.saturating_add(d.value);
            e.1 += 1;
        }
        let (main, (main_total, _)) = per_asset
            .iter()
            .max_by_key(|(_, v)| v.1)
            .map(|(k, v)| (k.to_string(), *v))
            .unwrap_or_default();
        let txids = distinct_in_order(list.iter().map(|d| &d.tx));
        let used: BTreeMap<&str, &str> = list
            .iter()
            .map(|d| {
                (
                    d.mixer.as_str(),
                    mixers.get(&d.mixer).map(String::as_str).unwrap_or(""),
                )
            })
            .collect();
        let mut f = Map::new();
        f.insert("deposits".into(), json!(txids.len()));
        f.insert("mixers".into(), json!(used));
        f.insert("asset".into(), json!(main));
        f.insert(
            "sent".into(),
            json!(
                per_asset
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.0.to_string()))
                    .collect::<BTreeMap<_, _>>()
            ),
        );
        let score = 0.5 + 0.25 * (txids.len() as f64 / 4.0).min(1.0);
        out.push(Finding {
            pattern: Pattern::CoinJoin,
            address_id: None,
            address: Some(depositor),
            txids,
            first_height: list.first().map(|d| d.at.0).unwrap_or(0),
            last_height: list.last().map(|d| d.at.0).unwrap_or(0),
            amount: main_total as f64,
            score: r4(score),
            features: f,
        });
    }
    Ok(out)
}

/// Rapid pass-through on Ethereum. A *hop* is an address (no contract, no labelled
/// service) whose whole history up to `upto` is one incoming and one outgoing transfer
/// of more than zero (ETH, internal or token), of the same asset, the outgoing after the
/// incoming, within `pass_max_wait` blocks, keeping at least `pass_min_kept` of it. A hop
/// whose outgoing transfer pays another hop continues to it; a run of `pass_min_hops`
/// hops is a finding about its first hop. Only hops paid at or after `since` count.
async fn eth_pass_through(
    ctx: &SessionContext,
    rules: &EthRules,
    services: &HashSet<String>,
    upto: i64,
    walk: &ferret_kernels::device::Backend,
) -> Result<Vec<Finding>> {
    let since = rules.since.unwrap_or(i64::MIN);
    let sql = format!(
        "WITH t AS ({transfers}),
        {single_use},
        -- The hop tests, loosely (floating point; the exact ones follow in Rust): on a
        -- whole chain single-use addresses are many, hops of a chain few.
        legs AS (
            SELECT hops.a, hops.asset, i.f AS src, o.r AS dst
            FROM hops JOIN t i ON i.r = hops.a AND i.asset = hops.asset
                      JOIN t o ON o.f = hops.a AND o.asset = hops.asset
            WHERE i.b >= {since}
              AND (o.b > i.b OR (o.b = i.b AND (o.i > i.i OR (o.i = i.i AND o.o > i.o))))
              AND o.b - i.b <= {wait}
              AND CAST(o.v AS DOUBLE) >= {kept} * CAST(i.v AS DOUBLE) * 0.999999
        ),
        -- Only hops next to another hop can be in a chain of two or more.
        linked AS (
            SELECT a, asset FROM legs
            WHERE src IN (SELECT a FROM legs) OR dst IN (SELECT a FROM legs)
        )
        SELECT 'in', t.r, t.f, t.asset, t.v, t.b, t.i, t.o, t.h
        FROM t JOIN linked ON linked.a = t.r AND linked.asset = t.asset
        UNION ALL
        SELECT 'out', t.f, t.r, t.asset, t.v, t.b, t.i, t.o, t.h
        FROM t JOIN linked ON linked.a = t.f AND linked.asset = t.asset",
        single_use = single_use_sql(upto, rules.hop_max_gas, "n_out = 1"),
        transfers = transfers_sql(upto),
        wait = rules.pass_max_wait,
        kept = rules.pass_min_kept,
    );
    let legs = hop_legs(text_rows(ctx, &sql).await?);
    // The hops: the rule's tests on each address's two transfers of the asset (an
    // address with more of them is none).
    let kept_ok = |i: u128, o: u128| (o as f64) >= rules.pass_min_kept * (i as f64);
    let hops: HashMap<String, (HopLeg, HopLeg)> = legs
        .into_iter()
        .filter_map(|(a, (mut i, mut o))| {
            if i.len() != 1 || o.len() != 1 {
                return None;
            }
            Some((a, (i.pop()?, o.pop()?)))
        })
        .filter(|(a, (i, o))| {
            !services.contains(a)
                && i.asset == o.asset
                && i.at < o.at
                && i.at.0 >= since
                && o.at.0 - i.at.0 <= rules.pass_max_wait
                && i.value > 0
                && kept_ok(i.value, o.value)
        })
        .collect();
    // A hop's successor: the hop its forward paid, with that forward as its input (so
    // a chain never joins a hop that only got gas from it).
    let next = |a: &str| -> Option<&String> {
        let fwd = &hops.get(a)?.1;
        let (i, _) = hops.get(&fwd.other)?;
        (i.tx == fwd.tx && i.at == fwd.at && i.other == a).then_some(&fwd.other)
    };
    let mut out = Vec::new();
    for chain in walk_chains(&hops, next, walk)? {
        let head = chain[0].0;
        if chain.len() < rules.pass_min_hops {
            continue;
        }
        let first = chain[0].1;
        let last = chain[chain.len() - 1].1;
        let waits: Vec<f64> = chain
            .iter()
            .map(|(_, (i, o))| (o.at.0 - i.at.0) as f64)
            .collect();
        let max_wait = waits.iter().copied().fold(0.0, f64::max);
        let first_value = first.0.value;
        let last_value = last.1.value;
        let kept = last_value as f64 / first_value.max(1) as f64;
        let n = chain.len();
        let score = (0.5 + 0.5 * ((n - rules.pass_min_hops) as f64 / 3.0).min(1.0))
            * (1.0 - max_wait / (2.0 * rules.pass_max_wait.max(1) as f64)).clamp(0.5, 1.0);
        let mut f = Map::new();
        f.insert("hops".into(), json!(n));
        f.insert("asset".into(), json!(first.0.asset));
        f.insert("first_value".into(), json!(first_value.to_string()));
        f.insert("last_value".into(), json!(last_value.to_string()));
        f.insert("value_kept".into(), json!(r4(kept)));
        f.insert("median_wait_blocks".into(), json!(median_of(waits)));
        f.insert("max_wait_blocks".into(), json!(max_wait));
        f.insert("exit".into(), json!(last.1.other));
        out.push(Finding {
            pattern: Pattern::PassThrough,
            address_id: None,
            address: Some(head.clone()),
            txids: chain.iter().map(|(_, (_, o))| o.tx.clone()).collect(),
            first_height: first.0.at.0,
            last_height: last.1.at.0,
            amount: first_value as f64,
            score: r4(score),
            features: f,
        });
    }
    Ok(out)
}

/// Peel chains on Ethereum: a balance paid out a little at a time while the rest moves
/// on to a fresh address, again and again.
///
/// A *step* is a single-use address (see [`single_use_sql`]: one transfer of the asset
/// in, nothing else but gas) that paid two or more transfers of the asset, all after its
/// input and within `peel_max_gap` blocks of it: the largest is the *remainder* (a tie
/// for the largest is no step) and at least half the input, every other one a *peel*
/// of at most `peel_max_share` of the input to an address that is no contract, and
/// together no more than the input. A step continues the step whose
/// remainder was its input. Chains of `peel_min_steps` or more are findings, about the
/// first step's address. No contract or labelled service is a step. Only blocks up to
/// `upto` are read.
async fn eth_peel_chains(
    ctx: &SessionContext,
    rules: &EthRules,
    services: &HashSet<String>,
    exchanges: &HashSet<String>,
    upto: i64,
    walk: &ferret_kernels::device::Backend,
) -> Result<Vec<Finding>> {
    let since = rules.since.unwrap_or(i64::MIN);
    let sql = format!(
        "WITH t AS ({transfers}),
        {single_use},
        steps AS (
            SELECT hops.a, hops.asset, i.f AS src
            FROM hops JOIN t i ON i.r = hops.a AND i.asset = hops.asset
            WHERE i.b >= {since}
        ),
        -- Only steps next to another step can be in a chain of two or more.
        linked AS (
            SELECT a, asset FROM steps
            WHERE src IN (SELECT a FROM steps) OR a IN (SELECT src FROM steps)
        )
        SELECT 'in', t.r, t.f, t.asset, t.v, t.b, t.i, t.o, t.h, 0
        FROM t JOIN linked ON linked.a = t.r AND linked.asset = t.asset
        UNION ALL
        SELECT 'out', t.f, t.r, t.asset, t.v, t.b, t.i, t.o, t.h,
               CASE WHEN c.address IS NULL THEN 0 ELSE 1 END
        FROM t JOIN linked ON linked.a = t.f AND linked.asset = t.asset
        LEFT JOIN contracts c ON c.address = t.r",
        single_use = single_use_sql(upto, rules.hop_max_gas, "n_out >= 2"),
        transfers = transfers_sql(upto),
    );
    let legs = hop_legs(text_rows(ctx, &sql).await?);
    struct Step {
        input: HopLeg,
        /// Peels, then the remainder last; in chain order within each.
        outs: Vec<HopLeg>,
    }
    let mut steps: HashMap<String, Step> = HashMap::new();
    for (a, (mut ins, mut outs)) in legs {
        if ins.len() != 1 || outs.len() < 2 || services.contains(&a) {
            continue;
        }
        let Some(input) = ins.pop() else { continue };
        outs.sort_by_key(|x| x.at);
        let (Some(first), Some(last)) = (outs.first(), outs.last()) else {
            continue;
        };
        if input.value == 0
            || first.at <= input.at
            || input.at.0 < since
            || last.at.0 - input.at.0 > rules.peel_max_gap
        {
            continue;
        }
        // The remainder: the one largest payment.
        let Some(top) = outs.iter().map(|o| o.value).max() else {
            continue;
        };
        if outs.iter().filter(|o| o.value == top).count() != 1 {
            continue;
        }
        let total = outs
            .iter()
            .try_fold(0u128, |acc, o| acc.checked_add(o.value));
        let peel_ok = |v: u128| (v as f64) <= rules.peel_max_share * (input.value as f64);
        // Most of the money moves on (a split many ways is no peel); a payment to a
        // contract is a use of it (a fee, a mint, a swap), no payout.
        if total.is_none_or(|t| t > input.value)
            || top.saturating_mul(2) < input.value
            || !outs
                .iter()
                .filter(|o| o.value != top)
                .all(|o| peel_ok(o.value) && !o.to_contract)
        {
            continue;
        }
        if let Some(k) = outs.iter().position(|o| o.value == top) {
            let rem = outs.remove(k);
            outs.push(rem);
        }
        steps.insert(a, Step { input, outs });
    }
    // A step's successor: the step its remainder paid, with that payment as its input.
    let next = |a: &str| -> Option<&String> {
        let rem = steps.get(a)?.outs.last()?;
        let n = steps.get(&rem.other)?;
        (n.input.tx == rem.tx && n.input.other == a && n.input.at == rem.at).then_some(&rem.other)
    };
    let mut out = Vec::new();
    for chain in walk_chains(&steps, next, walk)? {
        let head = chain[0].0;
        let n = chain.len();
        if n < rules.peel_min_steps {
            continue;
        }
        let first = chain[0].1;
        let last = chain[n - 1].1;
        let peels: Vec<&HopLeg> = chain
            .iter()
            .flat_map(|(_, s)| &s.outs[..s.outs.len() - 1])
            .collect();
        let peeled: u128 = peels.iter().map(|p| p.value).sum();
        let shares: Vec<f64> = chain
            .iter()
            .map(|(_, s)| {
                let p: u128 = s.outs[..s.outs.len() - 1].iter().map(|o| o.value).sum();
                p as f64 / s.input.value as f64
            })
            .collect();
        let gaps: Vec<f64> = chain
            .iter()
            .map(|(_, s)| {
                let end = s.outs.iter().map(|o| o.at.0).max().unwrap_or(s.input.at.0);
                (end - s.input.at.0) as f64
            })
            .collect();
        let max_gap = gaps.iter().copied().fold(0.0, f64::max);
        let to_exchanges = peels
            .iter()
            .filter(|p| exchanges.contains(&p.other))
            .count();
        let recipients: HashSet<&str> = peels.iter().map(|p| p.other.as_str()).collect();
        let remainder = last.outs.last().map(|o| o.value).unwrap_or(0);
        let length_part =
            ((n - rules.peel_min_steps) as f64 / rules.peel_min_steps as f64).min(1.0);
        let score = 0.5 + 0.5 * length_part;
        let mut f = Map::new();
        f.insert("steps".into(), json!(n));
        f.insert("asset".into(), json!(first.input.asset));
        f.insert("total_peeled".into(), json!(peeled.to_string()));
        f.insert("start_value".into(), json!(first.input.value.to_string()));
        f.insert("end_remainder".into(), json!(remainder.to_string()));
        f.insert("peels".into(), json!(peels.len()));
        f.insert("peel_recipients".into(), json!(recipients.len()));
        f.insert("peels_to_exchanges".into(), json!(to_exchanges));
        f.insert("median_peel_share".into(), json!(r4(median_of(shares))));
        f.insert("median_step_blocks".into(), json!(median_of(gaps)));
        f.insert("max_step_blocks".into(), json!(max_gap));
        f.insert(
            "exit".into(),
            json!(last.outs.last().map(|o| o.other.clone())),
        );
        let mut txs: Vec<(&(i64, i64, i64), &String)> = chain
            .iter()
            .flat_map(|(_, s)| s.outs.iter().map(|o| (&o.at, &o.tx)))
            .collect();
        txs.sort();
        out.push(Finding {
            pattern: Pattern::PeelChain,
            address_id: None,
            address: Some(head.clone()),
            txids: distinct_in_order(txs.into_iter().map(|(_, t)| t)),
            first_height: first.outs.iter().map(|o| o.at.0).min().unwrap_or(0),
            // A step may pay a peel after its remainder, so later than the next steps.
            last_height: chain
                .iter()
                .flat_map(|(_, s)| s.outs.iter().map(|o| o.at.0))
                .max()
                .unwrap_or(0),
            amount: peeled as f64,
            score: r4(score),
            features: f,
        });
    }
    Ok(out)
}

/// Victim collection over `eth.transfers` (ETH and tokens): many distinct payers (payer
/// clusters from `eth_clusters` where clustered), most of the money moved on within
/// `victim_forward_blocks`, not a labelled service, not a contract (a multisend, router
/// or pool is called by many, and is no wallet victims are told to pay).
async fn eth_victim_collection(
    ctx: &SessionContext,
    rules: &EthRules,
    services: &HashSet<String>,
    only: Option<&str>,
    upto: i64,
) -> Result<Vec<Finding>> {
    let since = rules.since.unwrap_or(i64::MIN);
    // An incremental run judges only the addresses the new blocks touched (`only`, a
    // registered table of addresses).
    let only = only
        .map(|t| format!("AND address IN (SELECT address FROM {t})"))
        .unwrap_or_default();
    let sql = format!(
        "WITH pay AS (
            SELECT lower(to_address) AS address, lower(from_address) AS payer, asset,
                   CAST(value AS DOUBLE) AS v, block_number, transaction_hash
            FROM eth.transfers
            WHERE value > 0 AND from_address <> to_address AND block_number >= {since}
              AND block_number <= {upto}
        ),
        grouped AS (
            SELECT pay.*, coalesce(CAST(c.cluster_id AS VARCHAR), pay.payer) AS payer_group
            FROM pay LEFT JOIN eth_clusters c ON lower(c.address) = pay.payer
        ),
        contracts AS ({contracts}),
        cand AS (
            SELECT address FROM grouped
            WHERE address NOT IN (SELECT address FROM contracts) {only}
            GROUP BY address
            HAVING count(DISTINCT payer_group) >= {min}
        ),
        outflow AS (
            SELECT lower(t.from_address) AS address, lower(t.to_address) AS r, t.asset,
                   CAST(t.value AS DOUBLE) AS v, t.block_number
            FROM eth.transfers t JOIN cand ON lower(t.from_address) = cand.address
            WHERE t.value > 0 AND t.block_number <= {upto}
              AND t.from_address <> t.to_address
        ),
        -- Who paid each recipient first.
        firstin AS (
            SELECT r, f FROM (
                SELECT lower(to_address) AS r, lower(from_address) AS f,
                       row_number() OVER (PARTITION BY lower(to_address)
                                          ORDER BY block_number, transaction_index, ordinal) AS k
                FROM eth.transfers
                WHERE value > 0 AND block_number <= {upto} AND from_address <> to_address
                  AND lower(to_address) IN (SELECT r FROM outflow)
            ) x
            WHERE k = 1
        )
        SELECT 'in', g.address, g.payer_group, g.payer, g.asset, g.v, g.block_number,
               g.transaction_hash
        FROM grouped g JOIN cand ON g.address = cand.address
        UNION ALL
        SELECT 'out', o.address, o.r, CASE WHEN fi.f = o.address THEN '1' ELSE '0' END,
               o.asset, o.v, o.block_number, NULL
        FROM outflow o LEFT JOIN firstin fi ON fi.r = o.r",
        min = rules.victim_min_payers,
        contracts = contracts_sql(upto)
    );
    let rows = text_rows(ctx, &sql).await?;
    #[derive(Default)]
    struct Addr {
        payments: Vec<(String, String, String, f64, i64, String)>,
        out: Vec<(String, f64, i64)>,
        /// Each address it paid, and whether it was the first to pay it.
        recipients: HashMap<String, bool>,
    }
    let mut by: BTreeMap<String, Addr> = BTreeMap::new();
    for r in rows {
        let Some(a) = r[1].clone() else { continue };
        let e = by.entry(a).or_default();
        let asset = r[4].clone().unwrap_or_default();
        if r[0].as_deref() == Some("in") {
            e.payments.push((
                r[2].clone().unwrap_or_default(),
                r[3].clone().unwrap_or_default(),
                asset,
                num(&r[5]),
                int(&r[6]),
                r[7].clone().unwrap_or_default(),
            ));
        } else {
            e.out.push((asset, num(&r[5]), int(&r[6])));
            if let Some(to) = r[2].clone() {
                *e.recipients.entry(to).or_default() |= r[3].as_deref() == Some("1");
            }
        }
    }
    let mut out = Vec::new();
    for (address, mut a) in by {
        if services.contains(&address) || a.payments.is_empty() {
            continue;
        }
        a.payments.sort_by(|x, y| (x.4, &x.5).cmp(&(y.4, &y.5)));
        let groups: HashSet<&str> = a.payments.iter().map(|p| p.0.as_str()).collect();
        let payers: HashSet<&str> = a.payments.iter().map(|p| p.1.as_str()).collect();
        let first = a.payments.iter().map(|p| p.4).min().unwrap_or(0);
        let last = a.payments.iter().map(|p| p.4).max().unwrap_or(0);
        // Forwarded, per asset: what left within the window of the payments, as a share
        // of what came in (capped at 1), weighted by the asset's payments.
        let mut assets: BTreeMap<&str, (f64, f64, usize)> = BTreeMap::new();
        for p in &a.payments {
            let e = assets.entry(p.2.as_str()).or_default();
            e.0 += p.3;
            e.2 += 1;
        }
        for (asset, v, h) in &a.out {
            if let Some(e) = assets.get_mut(asset.as_str())
                && *h >= first
                && *h <= last + rules.victim_forward_blocks
            {
                e.1 += v;
            }
        }
        let n = a.payments.len() as f64;
        let forwarded: f64 = assets
            .values()
            .map(|(i, o, c)| (o / i.max(1.0)).min(1.0) * *c as f64 / n)
            .sum();
        let new_recipients = a.recipients.values().filter(|&&n| n).count();
        let new_share = new_recipients as f64 / a.recipients.len().max(1) as f64;
        if groups.len() < rules.victim_min_payers
            || forwarded < rules.victim_min_forwarded
            || new_share < rules.victim_min_new_recipients
        {
            continue;
        }
        let (main, (main_in, _, _)) = assets
            .iter()
            .max_by_key(|(_, v)| v.2)
            .map(|(k, v)| (k.to_string(), *v))
            .unwrap_or_default();
        let mut per_payer: HashMap<&str, usize> = HashMap::new();
        for p in &a.payments {
            *per_payer.entry(p.0.as_str()).or_default() += 1;
        }
        let repeat = per_payer.values().filter(|&&c| c >= 2).count() as f64 / groups.len() as f64;
        let count_part = ((groups.len() - rules.victim_min_payers) as f64
            / (2 * rules.victim_min_payers) as f64)
            .min(1.0);
        let score = (0.5 + 0.5 * count_part) * (0.5 + 0.5 * forwarded);
        let mut txids: Vec<String> = Vec::new();
        for p in &a.payments {
            if txids.last() != Some(&p.5) {
                txids.push(p.5.clone());
            }
        }
        let mut f = Map::new();
        f.insert("payments".into(), json!(a.payments.len()));
        f.insert("payers".into(), json!(payers.len()));
        f.insert("payer_clusters".into(), json!(groups.len()));
        f.insert("repeat_payer_share".into(), json!(r4(repeat)));
        f.insert("forwarded_share".into(), json!(r4(forwarded)));
        f.insert("recipients".into(), json!(a.recipients.len()));
        f.insert("new_recipient_share".into(), json!(r4(new_share)));
        f.insert("main_asset".into(), json!(main));
        f.insert(
            "assets".into(),
            json!(
                assets
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.2))
                    .collect::<BTreeMap<_, _>>()
            ),
        );
        f.insert("active_blocks".into(), json!(last - first));
        out.push(Finding {
            pattern: Pattern::VictimCollection,
            address_id: None,
            address: Some(address),
            txids,
            first_height: first,
            last_height: last,
            amount: main_in,
            score: r4(score),
            features: f,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferret_schemas::results::new_run_id;

    /// The chains as address lists.
    fn names<T>(chains: &[Vec<(&String, &T)>]) -> Vec<Vec<String>> {
        chains
            .iter()
            .map(|c| c.iter().map(|(a, _)| (*a).clone()).collect())
            .collect()
    }

    /// Ranked by the kernel (CPU twin and, where there is one, the GPU), the chains are
    /// those walked link by link: random single-use chains, and links that are not
    /// chains (two nodes naming one, a cycle), which fall back to the walk.
    #[test]
    fn ranked_chains_are_the_walked_chains() {
        use ferret_kernels::device::{Backend, DeviceChoice, select};
        let mut backends = vec![Backend::Cpu];
        if let Ok(g @ Backend::Gpu(_)) = select(DeviceChoice::Gpu) {
            backends.push(g);
        }
        // Deterministic pseudo-random chains over shuffled addresses, some links leaving
        // the nodes (a forward to a non-hop).
        let mut x: u64 = 7;
        let mut rnd = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        let n = 3000usize;
        let mut order: Vec<String> = (0..n)
            .map(|i| format!("0x{:040x}", i * 7919 % 10007))
            .collect();
        for i in (1..n).rev() {
            order.swap(i, rnd(i as u64 + 1) as usize);
        }
        let mut succ: HashMap<String, String> = HashMap::new();
        let mut at = 0;
        while at < n {
            let len = (1 + rnd(12) as usize).min(n - at);
            for k in 0..len - 1 {
                succ.insert(order[at + k].clone(), order[at + k + 1].clone());
            }
            if rnd(3) == 0 {
                succ.insert(order[at + len - 1].clone(), "0xoutside".to_string());
            }
            at += len;
        }
        let nodes: HashMap<String, usize> = order.iter().cloned().zip(0..).collect();
        let want = names(&walk_chains_in_order(&nodes, |a| succ.get(a)));
        assert!(want.iter().filter(|c| c.len() >= 5).count() >= 50);
        for b in &backends {
            let got = walk_chains(&nodes, |a| succ.get(a), b).expect("ranks");
            assert_eq!(names(&got), want, "{}", b.describe());
        }
        // Not chains: two nodes forward to one, and a cycle beside a chain.
        let s = |v: &[(&str, &str)]| -> HashMap<String, String> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        for links in [
            s(&[("a", "c"), ("b", "c"), ("c", "d")]),
            s(&[("a", "b"), ("b", "a"), ("c", "d")]),
        ] {
            let nodes: HashMap<String, usize> = ["a", "b", "c", "d"]
                .iter()
                .map(|k| k.to_string())
                .zip(0..)
                .collect();
            let want = names(&walk_chains_in_order(&nodes, |a| links.get(a)));
            for b in &backends {
                let got = walk_chains(&nodes, |a| links.get(a), b).expect("falls back");
                assert_eq!(names(&got), want, "{links:?}");
            }
        }
    }

    fn finding(p: Pattern, addr: &str) -> Finding {
        Finding {
            pattern: p,
            address_id: None,
            address: Some(addr.into()),
            txids: vec!["t1".into(), "t2".into()],
            first_height: 1,
            last_height: 2,
            amount: 5.0,
            score: 0.5,
            features: Map::new(),
        }
    }

    async fn rows(wh: &Warehouse) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for b in wh.read_latest("typologies").await.expect("read") {
            let s = |n: &str| {
                datafusion::arrow::compute::cast(b.column_by_name(n).expect(n), &DataType::Utf8)
                    .expect("cast")
            };
            let (c, a, r) = (s("chain"), s("address"), s("run_id"));
            for i in 0..b.num_rows() {
                out.push((
                    c.as_string::<i32>().value(i).to_string(),
                    a.as_string::<i32>().value(i).to_string(),
                    r.as_string::<i32>().value(i).to_string(),
                ));
            }
        }
        out.sort();
        out
    }

    /// One table holds every chain: a run of one chain keeps the other chains' rows of
    /// the run it replaces and replaces its own.
    #[tokio::test]
    async fn a_run_keeps_the_other_chains_rows() {
        let wh = Warehouse::open("memory://typologies-carry").expect("open");
        let none = HashMap::new();
        let btc = commit(
            &wh,
            "btc",
            vec![finding(Pattern::PeelChain, "b1")],
            &none,
            json!({}),
            0,
            None,
            new_run_id(),
        )
        .await
        .expect("btc");
        let eth = commit(
            &wh,
            "eth",
            vec![
                finding(Pattern::AddressPoisoning, "e1"),
                finding(Pattern::ApprovalPhishing, "e2"),
            ],
            &none,
            json!({}),
            0,
            None,
            new_run_id(),
        )
        .await
        .expect("eth");
        assert_ne!(btc.run_id, eth.run_id);
        let r = rows(&wh).await;
        assert_eq!(
            r.iter()
                .map(|x| (x.0.as_str(), x.1.as_str()))
                .collect::<Vec<_>>(),
            [("btc", "b1"), ("eth", "e1"), ("eth", "e2")]
        );
        // Every row names the run it is in.
        assert!(r.iter().all(|x| x.2 == eth.run_id));
        commit(
            &wh,
            "eth",
            vec![finding(Pattern::AddressPoisoning, "e3")],
            &none,
            json!({}),
            0,
            None,
            new_run_id(),
        )
        .await
        .expect("eth again");
        let r = rows(&wh).await;
        assert_eq!(
            r.iter()
                .map(|x| (x.0.as_str(), x.1.as_str()))
                .collect::<Vec<_>>(),
            [("btc", "b1"), ("eth", "e3")]
        );
    }
}
