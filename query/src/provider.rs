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
    Ok(())
}
