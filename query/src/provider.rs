//! Tables from manifests: a listing table over exactly the committed files of each table.

use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::{SortExpr, col};
use datafusion::prelude::SessionContext;
use ferret_schemas::{Chain, Warehouse, tables_of};

fn external(e: ferret_schemas::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A table over exactly `files` (object paths in the warehouse), or an empty table of
/// `schema` when there are none, so queries still plan.
fn table_over<'a>(
    wh: &Warehouse,
    files: impl Iterator<Item = &'a str>,
    schema: arrow::datatypes::SchemaRef,
    sort_key: &[&str],
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let urls = files
        .map(|f| ListingTableUrl::parse(wh.object_url(&wh.resolve(f).map_err(external)?)))
        .collect::<Result<Vec<_>>>()?;
    if urls.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let mut options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    if !sort_key.is_empty() {
        let sort: Vec<SortExpr> = sort_key.iter().map(|c| col(*c).sort(true, false)).collect();
        options = options.with_file_sort_order(vec![sort]);
    }
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Registers the warehouse's object store, every table of every chain (from the chain's
/// manifest) and the kernels' result tables (their latest runs) in `ctx`.
pub async fn register_warehouse(ctx: &SessionContext, wh: &Warehouse) -> Result<()> {
    ctx.register_object_store(wh.base_url(), Arc::clone(wh.store()));
    let catalog = ctx
        .catalog("ferret")
        .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
    for &chain in Chain::all() {
        let schema_provider = Arc::new(MemorySchemaProvider::new());
        let manifest = wh.load_manifest(chain).await.map_err(external)?;
        for t in tables_of(chain) {
            let files = manifest
                .iter()
                .flat_map(|m| m.files_of(t.name))
                .map(|f| f.path.as_str());
            let provider = table_over(wh, files, t.schema(), t.sort_key)?;
            schema_provider.register_table(t.name.to_string(), provider)?;
        }
        catalog.register_schema(chain.as_str(), schema_provider)?;
    }
    // Kernel results under their plain names (the latest run).
    let public = catalog
        .schema("public")
        .ok_or_else(|| DataFusionError::Internal("default schema missing".into()))?;
    // One results head: every result table from the same snapshot.
    let mut runs = wh.latest_runs().await.map_err(external)?;
    for (job, schema) in ferret_schemas::results::result_tables() {
        let run = runs.remove(job);
        let files = run.iter().flat_map(|r| r.files.iter().map(String::as_str));
        let provider = table_over(wh, files, schema, &[])?;
        public.register_table(job.into(), provider)?;
    }
    register_cases(wh, public.as_ref(), &runs)?;
    ctx.sql(REPEAT_OFFENDERS).await?.collect().await?;
    Ok(())
}

/// `repeat_offenders`: over the latest run of every case, what recurs across cases —
/// an exit address two cases' money reached (`exit`, per asset: `amount` adds up one unit), a cluster holding two cases' seeds
/// or members (`cluster`), and an address one case tainted that is in another case's
/// seed clusters (`meets_cluster`: one case's money meets another's operator).
const REPEAT_OFFENDERS: &str = r#"CREATE VIEW ferret.public.repeat_offenders AS
WITH latest AS (SELECT "case", latest_run AS run_id FROM ferret.public.cases),
ex AS (
  SELECT e."case", e.chain, e.address, e.label, 'BTC' AS asset, CAST(e.tainted_value AS DOUBLE) AS amount
    FROM ferret.public.case_exits e JOIN latest l ON e."case" = l."case" AND e.run_id = l.run_id
  UNION ALL
  SELECT e."case", e.chain, e.address, e.label, e.asset, e.tainted_value
    FROM ferret.public.case_eth_exits e JOIN latest l ON e."case" = l."case" AND e.run_id = l.run_id),
mem AS (
  SELECT m."case", m.chain, m.address, m.cluster_id
    FROM ferret.public.case_members m JOIN latest l ON m."case" = l."case" AND m.run_id = l.run_id),
tainted AS (
  SELECT DISTINCT t."case", t.chain, t.address
    FROM ferret.public.case_taint t JOIN latest l ON t."case" = l."case" AND t.run_id = l.run_id
    WHERE t.address IS NOT NULL
  UNION
  SELECT DISTINCT t."case", t.chain, t.address
    FROM ferret.public.case_eth_taint t JOIN latest l ON t."case" = l."case" AND t.run_id = l.run_id)
SELECT 'exit' AS kind, chain, address AS key, count(DISTINCT "case") AS n_cases,
       array_to_string(array_sort(array_agg(DISTINCT "case")), ',') AS cases,
       sum(amount) AS amount, max(label) || ' (' || asset || ')' AS detail
  FROM ex GROUP BY chain, address, asset HAVING count(DISTINCT "case") > 1
UNION ALL
SELECT 'cluster', chain, CAST(cluster_id AS VARCHAR), count(DISTINCT "case"),
       array_to_string(array_sort(array_agg(DISTINCT "case")), ','),
       CAST(NULL AS DOUBLE), CAST(count(DISTINCT address) AS VARCHAR) || ' addresses'
  FROM mem WHERE cluster_id IS NOT NULL GROUP BY chain, cluster_id HAVING count(DISTINCT "case") > 1
UNION ALL
SELECT 'meets_cluster', t.chain, t.address, CAST(2 AS BIGINT), t."case" || ',' || m."case",
       CAST(NULL AS DOUBLE), 'tainted by ' || t."case" || '; in the seed clusters of ' || m."case"
  FROM tainted t JOIN mem m ON t.chain = m.chain AND t.address = m.address AND t."case" <> m."case""#;

/// The case tables over every case (`case_runs`, `case_taint`, …: each the union of
/// every run of every case, from the same results head as the rest) and `cases`, one row
/// per case from its latest run's record.
fn register_cases(
    wh: &Warehouse,
    public: &dyn SchemaProvider,
    runs: &std::collections::BTreeMap<String, ferret_schemas::results::LatestRun>,
) -> Result<()> {
    use ferret_schemas::cases::{case_tables, parse_case_job};
    for (table, schema) in case_tables() {
        let files = runs
            .iter()
            .filter(|(job, _)| parse_case_job(job).is_some_and(|(_, t)| t == table))
            .flat_map(|(_, r)| r.files.iter().map(String::as_str));
        let provider = table_over(wh, files, schema, &[])?;
        public.register_table(format!("case_{table}"), provider)?;
    }
    public.register_table("cases".into(), Arc::new(cases_table(runs)?))?;
    Ok(())
}

/// Schema of `cases`.
pub fn cases_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("case", DataType::Utf8, false),
        Field::new("runs", DataType::Int64, false),
        Field::new("latest_run", DataType::Utf8, false),
        Field::new("chains", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("started_at", DataType::Utf8, true),
        Field::new("finished_at", DataType::Utf8, true),
        Field::new("exits", DataType::Int64, true),
        Field::new("alerts", DataType::Int64, true),
    ]))
}

/// `cases` from the results head: each case's `runs` job counts its runs, and its params
/// hold the latest run's record.
fn cases_table(
    runs: &std::collections::BTreeMap<String, ferret_schemas::results::LatestRun>,
) -> Result<MemTable> {
    use arrow::array::{Int64Array, StringArray};
    let mut rows: Vec<(&str, &ferret_schemas::results::LatestRun)> = Vec::new();
    for (job, run) in runs {
        if let Some((case, "runs")) = ferret_schemas::cases::parse_case_job(job) {
            rows.push((case, run));
        }
    }
    let text = |key: &str| -> StringArray {
        rows.iter()
            .map(|(_, r)| {
                let v = r.params.as_ref().and_then(|p| p.get(key))?;
                Some(match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    serde_json::Value::Null => return None,
                    other => other.to_string(),
                })
            })
            .collect()
    };
    let int = |key: &str| -> Int64Array {
        rows.iter()
            .map(|(_, r)| r.params.as_ref().and_then(|p| p.get(key)?.as_i64()))
            .collect()
    };
    let batch = arrow::array::RecordBatch::try_new(
        cases_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(c, _)| *c))),
            // One row (and one file) per run.
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, r)| r.files.len() as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, r)| r.run_id.as_str()),
            )),
            Arc::new(text("chains")),
            Arc::new(text("description")),
            Arc::new(text("schedule")),
            Arc::new(text("started_at")),
            Arc::new(text("finished_at")),
            Arc::new(int("exits")),
            Arc::new(int("alerts")),
        ],
    )?;
    MemTable::try_new(cases_schema(), vec![vec![batch]])
}
