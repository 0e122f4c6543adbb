//! SQL over a Ferret warehouse with Apache DataFusion.
//!
//! [`session`] registers every committed table under a schema per chain (`btc.blocks`,
//! `btc.transactions`, `btc.inputs`, `btc.outputs`), reading exactly the files the chain's
//! manifest lists. The CLI, the tests and (later) the servers all build sessions here.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let wh = ferret_schemas::Warehouse::open("./warehouse")?;
//! let ctx = ferret_query::session(&wh).await?;
//! let batches = ferret_query::run_sql(&ctx, "SELECT count(*) FROM btc.blocks").await?;
//! # Ok(()) }
//! ```

mod functions;
pub mod output;
mod provider;
pub mod typologies;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;
use ferret_schemas::Warehouse;

pub use datafusion::prelude::CsvReadOptions;
pub use functions::{KernelOptions, register_functions, register_functions_with};
pub use provider::register_warehouse;

/// A DataFusion session over `wh`, with every committed table registered (the kernel
/// functions run as the environment says: [`KernelOptions::from_env`]).
pub async fn session(wh: &Warehouse) -> Result<SessionContext> {
    session_with(wh, KernelOptions::from_env()?).await
}

/// [`session`] with the kernel functions' options given.
pub async fn session_with(wh: &Warehouse, kernels: KernelOptions) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("ferret", "public")
        .with_create_default_catalog_and_schema(true)
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    register_warehouse(&ctx, wh).await?;
    functions::register_functions_with(&ctx, wh, kernels).await?;
    Ok(ctx)
}

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Schema of the result (known even when there are no rows).
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

/// Runs one or more `;`-separated read-only statements; returns the result of each.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<QueryResult>> {
    let statements = DFParser::parse_sql(sql)?;
    if statements.is_empty() {
        return plan_err!("no SQL statement given");
    }
    let options = datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false);
    let mut results = Vec::with_capacity(statements.len());
    for statement in statements {
        let state = ctx.state();
        let plan = state.statement_to_plan(statement).await?;
        options.verify_plan(&plan).map_err(|e| match e {
            DataFusionError::Plan(msg) => {
                DataFusionError::Plan(format!("{msg} (the warehouse is read-only through SQL)"))
            }
            other => other,
        })?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        results.push(QueryResult {
            schema,
            batches: df.collect().await?,
        });
    }
    Ok(results)
}
