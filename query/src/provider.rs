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

/// Registers the warehouse's object store and every table of every chain in `ctx`.
/// A chain with nothing committed gets empty tables, so queries still plan.
pub async fn register_warehouse(ctx: &SessionContext, wh: &Warehouse) -> Result<()> {
    ctx.register_object_store(wh.base_url(), Arc::clone(wh.store()));
    let catalog = ctx
        .catalog("ferret")
        .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
    for &chain in Chain::all() {
        let schema_provider = Arc::new(MemorySchemaProvider::new());
        let manifest = wh.load_manifest(chain).await.map_err(external)?;
        for t in tables_of(chain) {
            let schema = t.schema();
            let files: Vec<ListingTableUrl> = manifest
                .iter()
                .flat_map(|m| m.files_of(t.name))
                .map(|f| {
                    ListingTableUrl::parse(
                        wh.object_url(&object_store::path::Path::from(f.path.as_str())),
                    )
                })
                .collect::<Result<_>>()?;
            let provider: Arc<dyn datafusion::catalog::TableProvider> = if files.is_empty() {
                Arc::new(MemTable::try_new(schema, vec![vec![]])?)
            } else {
                let sort: Vec<SortExpr> = t
                    .sort_key
                    .iter()
                    .map(|c| col(*c).sort(true, false))
                    .collect();
                let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                    .with_file_extension(".parquet")
                    .with_file_sort_order(vec![sort]);
                let config = ListingTableConfig::new_with_multi_paths(files)
                    .with_listing_options(options)
                    .with_schema(schema);
                Arc::new(ListingTable::try_new(config)?)
            };
            schema_provider.register_table(t.name.to_string(), provider)?;
        }
        catalog.register_schema(chain.as_str(), schema_provider)?;
    }
    // Kernel results under their plain names (the latest run).
    let public = catalog
        .schema("public")
        .ok_or_else(|| DataFusionError::Internal("default schema missing".into()))?;
    let schema = ferret_schemas::results::clusters_schema();
    let provider: Arc<dyn datafusion::catalog::TableProvider> =
        match wh.latest_run("clusters").await.map_err(external)? {
            Some(run) => {
                let files = run
                    .files
                    .iter()
                    .map(|f| {
                        ListingTableUrl::parse(
                            wh.object_url(&object_store::path::Path::from(f.as_str())),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                    .with_file_extension(".parquet");
                Arc::new(ListingTable::try_new(
                    ListingTableConfig::new_with_multi_paths(files)
                        .with_listing_options(options)
                        .with_schema(schema),
                )?)
            }
            None => Arc::new(MemTable::try_new(schema, vec![vec![]])?),
        };
    public.register_table("clusters".into(), provider)?;
    Ok(())
}
