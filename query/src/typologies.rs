//! `ferret typologies btc`: a run of the `typologies` table. The walks along spends
//! (peel chains, pass-through), structuring and CoinJoin use come from the kernels'
//! chain-order pass ([`ferret_kernels::typology::btc`]); victim collection is an
//! aggregate over payments and runs here as SQL over `btc.inputs` and `btc.outputs`,
//! joined with `clusters`. Rules and thresholds: docs/typologies.md.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use ferret_kernels::typology::btc::{BtcRules, scan_btc};
use ferret_kernels::typology::{Finding, Pattern, coefficient_of_variation};
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
}

/// What a run committed.
#[derive(Clone, Debug)]
pub struct TypologyRun {
    pub run_id: String,
    pub transactions: u64,
    /// Findings per pattern name.
    pub counts: BTreeMap<&'static str, usize>,
    pub findings: Vec<Finding>,
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
    let (mut findings, transactions) = scan_btc(wh, &m, opts.btc.clone(), &exchanges)
        .await
        .map_err(kernel_err)?;
    let ctx = crate::session(wh).await?;
    let services: HashSet<&str> = labels
        .iter()
        .filter(|l| opts.victim.service_categories.contains(&l.2))
        .map(|l| l.0.as_str())
        .collect();
    findings.extend(victim_collection(&ctx, &opts.victim, opts.btc.since, &services).await?);
    if !opts.patterns.is_empty() {
        findings.retain(|f| opts.patterns.contains(&f.pattern));
    }
    let addresses: Vec<String> = findings
        .iter()
        .filter_map(|f| f.address.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let clusters = cluster_ids(&ctx, addresses).await?;
    let run_id = ferret_schemas::results::new_run_id();
    let batch = to_batch(&findings, "btc", &clusters, &run_id)?;
    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.pattern.name()).or_default() += 1;
    }
    let params = json!({
        "chain": "btc",
        "since": opts.btc.since,
        "patterns": opts.patterns.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "tip_height": m.tip.as_ref().map(|t| t.height),
        "tip_hash": m.tip.as_ref().map(|t| t.hash.clone()),
        "rules": format!("{:?}", opts.btc),
        "victim_rules": format!("{:?}", opts.victim),
    });
    wh.write_run_as(
        "typologies",
        &run_id,
        ferret_schemas::results::typologies_schema(),
        &[batch],
        Some(params),
    )
    .await
    .map_err(wh_err)?;
    Ok(TypologyRun {
        run_id,
        transactions,
        counts,
        findings,
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
    let r4 = |x: f64| (x * 10_000.0).round() / 10_000.0;
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

/// The clusters (latest `clusters` run) of the given addresses, by a join in SQL.
async fn cluster_ids(ctx: &SessionContext, addresses: Vec<String>) -> Result<HashMap<String, i64>> {
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
        .sql(
            "SELECT a.address, c.cluster_id FROM typology_addresses a
             JOIN clusters c ON c.address = a.address AND c.chain = 'btc'",
        )
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
            serde_json::Value::Object(f.features.clone()).to_string()
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
