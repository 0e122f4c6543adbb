//! Kernels from SQL.
//!
//! - `taint(seeds [, policy [, hops [, direction [, stop_at [, min_value]]]]])`: a taint
//!   run over the Bitcoin tables, one row per tainted output (the `taint` table's
//!   columns, `run_id` = `sql`). `seeds` is a comma-separated list of addresses, txids
//!   and `category:NAME` entries (every address labelled NAME); `policy` is `poison`,
//!   `haircut` (default) or `fifo`; `hops` NULL for no limit; `direction` `forward`
//!   (default) or `backward`; `stop_at` comma-separated label categories; `min_value` in
//!   sats.
//! - `eth_taint(seeds [, policy [, asset [, hops [, direction [, stop_at [, min_value]]]]]])`:
//!   an account taint run over `eth.transfers`, one row per address reached (the
//!   `eth_taint` table's columns, `run_id` = `sql`). `seeds`: addresses and
//!   `category:NAME` entries; `policy` `haircut` (default) or `poison`; `asset` `ETH`
//!   (default), a token contract or `*` (poison only); `min_value` in the asset's base unit.
//! - `clusters([coinjoin_rule])`: common-input-ownership clusters computed now (the
//!   `clusters` table's columns); `clusters(false)` links CoinJoin inputs too.
//! - `typology(pattern)`: the findings of one pattern (`peel_chain`, `victim_collection`,
//!   `pass_through`, `fan_out`, `coinjoin`, …) in the latest `typologies` run (written by
//!   `ferret typologies`); the plain `typologies` table holds every pattern.
//! - `cluster_of(address)`: the cluster id of an address in the stored `clusters` table
//!   (its latest run), NULL when the address is not in it.
//!
//! The kernels run where `FERRET_DEVICE` says (`auto`, the default; `gpu`; `cpu`).
//! With a memory budget ([`KernelOptions::mem_mb`]: `ferret sql --mem-mb N`, or
//! `FERRET_MEM_MB`) `taint`, `eth_taint` and `clusters` run out of core (on the committed
//! graph; `eth_taint` on partitions of `eth.transfers`), as `ferret taint btc|eth --mem-mb`
//! and `ferret cluster btc --mem-mb` do, and stream their
//! rows to the query as they are made (spilling to `FERRET_SCRATCH` or the temporary
//! directory); a scan of such a table runs the kernel each time.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Builder, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::{MemTable, TableType};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use ferret_kernels::device::{Backend, DeviceChoice, select};
use ferret_kernels::taint::job::{TaintJob, taint_btc};
use ferret_schemas::Warehouse;
use ferret_schemas::results::{clusters_schema, taint_schema};

/// How the kernel functions run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelOptions {
    /// Out of core within this many MiB (None: in memory).
    pub mem_mb: Option<usize>,
    /// Where out-of-core runs spill (None: the temporary directory).
    pub scratch: Option<std::path::PathBuf>,
}

impl KernelOptions {
    /// From `FERRET_MEM_MB` and `FERRET_SCRATCH`.
    pub fn from_env() -> Result<Self> {
        let mem_mb = match std::env::var("FERRET_MEM_MB") {
            Err(_) => None,
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 && n.checked_mul(1 << 20).is_some() => Some(n),
                _ => {
                    return Err(DataFusionError::Configuration(format!(
                        "FERRET_MEM_MB: `{v}` is not a number of MiB from 1 to what this machine can address"
                    )));
                }
            },
        };
        Ok(Self {
            mem_mb,
            scratch: std::env::var_os("FERRET_SCRATCH").map(Into::into),
        })
    }
}

fn kernel_err(e: ferret_kernels::Error) -> DataFusionError {
    DataFusionError::Execution(e.to_string())
}

fn backend() -> Result<Backend> {
    let choice: DeviceChoice = std::env::var("FERRET_DEVICE")
        .unwrap_or_else(|_| "auto".into())
        .parse()
        .map_err(|e: String| DataFusionError::Configuration(format!("FERRET_DEVICE: {e}")))?;
    select(choice).map_err(kernel_err)
}

/// A literal argument as a string, or None for NULL / absent.
fn text_arg(f: &str, args: &[Expr], i: usize, name: &str) -> Result<Option<String>> {
    match args.get(i) {
        None | Some(Expr::Literal(ScalarValue::Null, _)) => Ok(None),
        Some(Expr::Literal(
            ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v),
            _,
        )) => Ok(v.clone()),
        Some(other) => plan_err!(
            "{f}: argument {} ({name}) must be a text literal, got {other}",
            i + 1
        ),
    }
}

fn int_arg(f: &str, args: &[Expr], i: usize, name: &str) -> Result<Option<i64>> {
    match args.get(i) {
        None | Some(Expr::Literal(ScalarValue::Null, _)) => Ok(None),
        Some(Expr::Literal(v, _)) => match v.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(x)) => Ok(x),
            _ => plan_err!(
                "{f}: argument {} ({name}) must be an integer, got {v}",
                i + 1
            ),
        },
        Some(other) => plan_err!(
            "{f}: argument {} ({name}) must be an integer literal, got {other}",
            i + 1
        ),
    }
}

/// When an argument is a parameter (`$1`) not yet bound, a table with the function's
/// columns that refuses to run: a client may prepare the statement (and learn its
/// columns) before binding; `ferret serve` puts the bound values in as literals before it
/// runs the statement.
fn unbound(f: &str, args: &[Expr], schema: SchemaRef) -> Option<Arc<dyn TableProvider>> {
    let p = args.iter().find_map(|a| match a {
        Expr::Placeholder(p) => Some(p.id.clone()),
        _ => None,
    })?;
    Some(Arc::new(Unbound {
        schema,
        message: format!(
            "{f}: its argument {p} is a parameter that was not bound to a value: table functions take literals, or parameters bound by a client of `ferret serve`"
        ),
    }))
}

/// See [`unbound`].
#[derive(Debug)]
struct Unbound {
    schema: SchemaRef,
    message: String,
}

#[async_trait]
impl TableProvider for Unbound {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan_err!("{}", self.message)
    }
}

/// A hop limit argument: NULL for none.
fn hops_arg(f: &str, args: &[Expr], i: usize) -> Result<Option<u32>> {
    int_arg(f, args, i, "hops")?
        .map(|h| {
            u32::try_from(h).map_err(|_| {
                DataFusionError::Plan(format!("{f}: hops must be between 0 and 2^32 - 1, got {h}"))
            })
        })
        .transpose()
}

/// A direction argument (`forward`, `backward`): NULL for the default.
fn direction_arg(
    f: &str,
    args: &[Expr],
    i: usize,
) -> Result<Option<ferret_kernels::taint::Direction>> {
    text_arg(f, args, i, "direction")?
        .map(|d| {
            d.parse()
                .map_err(|e: String| DataFusionError::Plan(format!("{f}: {e}")))
        })
        .transpose()
}

fn split(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `taint(...)`.
#[derive(Debug)]
struct TaintFunction {
    wh: Warehouse,
    opts: KernelOptions,
}

impl TableFunctionImpl for TaintFunction {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        const F: &str = "taint(seeds, policy, hops, direction, stop_at, min_value)";
        if args.is_empty() || args.len() > 6 {
            return plan_err!("{F} takes 1 to 6 arguments, got {}", args.len());
        }
        if let Some(t) = unbound(F, args, taint_schema()) {
            return Ok(t);
        }
        let Some(seeds) = text_arg(F, args, 0, "seeds")? else {
            return plan_err!("{F}: seeds must not be NULL");
        };
        let mut job = TaintJob::default();
        for s in split(&seeds) {
            if let Some(c) = s.strip_prefix("category:") {
                job.seed_categories.push(c.to_string());
            } else if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                job.seed_txids.push(s.to_ascii_lowercase());
            } else {
                job.seed_addresses.push(s);
            }
        }
        if job.seed_addresses.is_empty()
            && job.seed_txids.is_empty()
            && job.seed_categories.is_empty()
        {
            return plan_err!("{F}: no seeds in `{seeds}`");
        }
        if let Some(p) = text_arg(F, args, 1, "policy")? {
            job.policy = p
                .parse()
                .map_err(|e: String| DataFusionError::Plan(format!("{F}: {e}")))?;
        }
        if let Some(h) = hops_arg(F, args, 2)? {
            job.max_hops = Some(h);
        }
        if let Some(d) = direction_arg(F, args, 3)? {
            job.direction = d;
        }
        if let Some(s) = text_arg(F, args, 4, "stop_at")? {
            job.stop_categories = split(&s).collect();
        }
        if let Some(m) = int_arg(F, args, 5, "min_value")? {
            if m < 0 {
                return plan_err!("{F}: min_value must be ≥ 0 sats, got {m}");
            }
            job.min_value = m;
        }
        Ok(Arc::new(
            KernelTable::new(&self.wh, taint_schema(), Kind::Taint(job)).out_of_core(&self.opts),
        ))
    }
}

/// `eth_taint(...)`.
#[derive(Debug)]
struct EthTaintFunction {
    wh: Warehouse,
}

impl TableFunctionImpl for EthTaintFunction {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        use ferret_kernels::account::job::EthTaintJob;
        const F: &str = "eth_taint(seeds, policy, asset, hops, direction, stop_at, min_value)";
        if args.is_empty() || args.len() > 7 {
            return plan_err!("{F} takes 1 to 7 arguments, got {}", args.len());
        }
        if let Some(t) = unbound(F, args, ferret_schemas::results::eth_taint_schema()) {
            return Ok(t);
        }
        let Some(seeds) = text_arg(F, args, 0, "seeds")? else {
            return plan_err!("{F}: seeds must not be NULL");
        };
        let mut job = EthTaintJob::default();
        for s in split(&seeds) {
            match s.strip_prefix("category:") {
                Some(c) => job.seed_categories.push(c.to_string()),
                None => job.seed_addresses.push(s.to_ascii_lowercase()),
            }
        }
        if job.seed_addresses.is_empty() && job.seed_categories.is_empty() {
            return plan_err!("{F}: no seeds in `{seeds}`");
        }
        let parse_err = |e: String| DataFusionError::Plan(format!("{F}: {e}"));
        if let Some(p) = text_arg(F, args, 1, "policy")? {
            job.policy = p.parse().map_err(parse_err)?;
        }
        if let Some(a) = text_arg(F, args, 2, "asset")? {
            job.asset = if a == "*" || a.eq_ignore_ascii_case("eth") {
                a.to_ascii_uppercase()
            } else {
                a.to_ascii_lowercase()
            };
        }
        if let Some(h) = hops_arg(F, args, 3)? {
            job.max_hops = Some(h);
        }
        if let Some(d) = direction_arg(F, args, 4)? {
            job.direction = d;
        }
        if let Some(s) = text_arg(F, args, 5, "stop_at")? {
            job.stop_categories = split(&s).collect();
        }
        if let Some(m) = int_arg(F, args, 6, "min_value")? {
            if m < 0 {
                return plan_err!("{F}: min_value must be ≥ 0, got {m}");
            }
            job.min_value = m as f64;
        }
        Ok(Arc::new(KernelTable::new(
            &self.wh,
            ferret_schemas::results::eth_taint_schema(),
            Kind::EthTaint(job),
        )))
    }
}

/// `typology(pattern)`: the findings of one pattern in the latest `typologies` run.
#[derive(Debug)]
struct TypologyFunction {
    wh: Warehouse,
}

impl TableFunctionImpl for TypologyFunction {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let schema = ferret_schemas::results::typologies_schema();
        if let Some(t) = unbound("typology(pattern)", args, schema.clone()) {
            return Ok(t);
        }
        let names = || {
            ferret_kernels::typology::Pattern::ALL
                .map(|p| p.name())
                .join(", ")
        };
        if args.len() != 1 {
            return plan_err!("typology(pattern) takes one pattern: {}", names());
        }
        let Some(pattern) = text_arg("typology", args, 0, "pattern")? else {
            return plan_err!("typology(pattern): the pattern is NULL; one of {}", names());
        };
        if ferret_kernels::typology::Pattern::from_name(&pattern).is_none() {
            return plan_err!(
                "typology: unknown pattern {pattern:?}; the patterns are {}",
                names()
            );
        }
        Ok(Arc::new(TypologyTable {
            wh: self.wh.clone(),
            schema,
            pattern,
        }))
    }
}

/// The latest `typologies` run's rows of one pattern, read when the query runs.
#[derive(Debug)]
struct TypologyTable {
    wh: Warehouse,
    schema: SchemaRef,
    pattern: String,
}

#[async_trait]
impl TableProvider for TypologyTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self
            .wh
            .read_latest("typologies")
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut kept = Vec::with_capacity(batches.len());
        for b in batches {
            let col = b
                .column_by_name("pattern")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| {
                    DataFusionError::Execution("typologies: no text column `pattern`".into())
                })?;
            let mask = arrow::array::BooleanArray::from_iter(
                (0..col.len()).map(|i| Some(!col.is_null(i) && col.value(i) == self.pattern)),
            );
            let b = arrow::compute::filter_record_batch(&b, &mask)?;
            // The run's file may carry the schema's metadata differently: take the columns.
            kept.push(RecordBatch::try_new(
                self.schema.clone(),
                b.columns().to_vec(),
            )?);
        }
        let mem = MemTable::try_new(self.schema.clone(), vec![kept])?;
        mem.scan(state, projection, filters, limit).await
    }
}

/// `clusters(...)`.
#[derive(Debug)]
struct ClustersFunction {
    wh: Warehouse,
    opts: KernelOptions,
}

impl TableFunctionImpl for ClustersFunction {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        if let Some(t) = unbound("clusters([coinjoin_rule])", args, clusters_schema()) {
            return Ok(t);
        }
        let enabled = match args {
            [] => true,
            [Expr::Literal(ScalarValue::Boolean(Some(b)), _)] => *b,
            _ => {
                return plan_err!(
                    "clusters([coinjoin_rule BOOLEAN]) takes one optional TRUE/FALSE"
                );
            }
        };
        Ok(Arc::new(
            KernelTable::new(&self.wh, clusters_schema(), Kind::Clusters(enabled))
                .out_of_core(&self.opts),
        ))
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Taint(TaintJob),
    EthTaint(ferret_kernels::account::job::EthTaintJob),
    /// With the CoinJoin rule on?
    Clusters(bool),
}

/// A table whose rows a kernel computes when the query is planned, once however often
/// the query scans it (a self-join runs the kernel once).
#[derive(Debug)]
struct KernelTable {
    wh: Warehouse,
    schema: SchemaRef,
    kind: Kind,
    rows: tokio::sync::OnceCell<RecordBatch>,
    /// Out of core: (MiB, scratch base).
    budget: Option<(usize, std::path::PathBuf)>,
}

impl KernelTable {
    fn new(wh: &Warehouse, schema: SchemaRef, kind: Kind) -> Self {
        Self {
            wh: wh.clone(),
            schema,
            kind,
            rows: tokio::sync::OnceCell::new(),
            budget: None,
        }
    }

    fn out_of_core(mut self, o: &KernelOptions) -> Self {
        self.budget = o
            .mem_mb
            .map(|mb| (mb, o.scratch.clone().unwrap_or_else(std::env::temp_dir)));
        self
    }

    async fn compute(&self) -> Result<RecordBatch> {
        let backend = backend()?;
        match &self.kind {
            Kind::Taint(job) => {
                let run = taint_btc(&self.wh, &backend, job)
                    .await
                    .map_err(kernel_err)?;
                ferret_kernels::taint::job::taint_batch(&run, "sql").map_err(kernel_err)
            }
            Kind::EthTaint(job) => {
                use ferret_kernels::account::job::{eth_taint_batch, taint_eth};
                let run = taint_eth(&self.wh, &backend, job)
                    .await
                    .map_err(kernel_err)?;
                eth_taint_batch(&run, "sql").map_err(kernel_err)
            }
            Kind::Clusters(enabled) => {
                use ferret_kernels::cluster::{ClusterOptions, cluster_btc, clusters_batch};
                let mut opts = ClusterOptions::default();
                opts.detectors.enabled = *enabled;
                let c = cluster_btc(&self.wh, &backend, &opts)
                    .await
                    .map_err(kernel_err)?;
                clusters_batch(&c.clusters, "sql").map_err(kernel_err)
            }
        }
    }
}

#[async_trait]
impl TableProvider for KernelTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some((mb, scratch)) = &self.budget {
            let part = StoredStream {
                wh: self.wh.clone(),
                schema: self.schema.clone(),
                kind: self.kind.clone(),
                mem_mb: *mb,
                scratch: scratch.clone(),
            };
            let table = datafusion::catalog::streaming::StreamingTable::try_new(
                self.schema.clone(),
                vec![Arc::new(part)],
            )?;
            return table.scan(state, projection, filters, limit).await;
        }
        let batch = self.rows.get_or_try_init(|| self.compute()).await?.clone();
        let mem = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
        mem.scan(state, projection, filters, limit).await
    }
}

/// An out-of-core kernel run streaming its rows: the run starts when the scan is
/// executed, on a blocking thread, and stops when the query stops reading.
#[derive(Debug)]
struct StoredStream {
    wh: Warehouse,
    schema: SchemaRef,
    kind: Kind,
    mem_mb: usize,
    scratch: std::path::PathBuf,
}

impl datafusion::physical_plan::streaming::PartitionStream for StoredStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(
        &self,
        _ctx: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::execution::SendableRecordBatchStream {
        use datafusion::physical_plan::stream::RecordBatchReceiverStream;
        let mut b = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let tx = b.tx();
        let (wh, kind, mb, scratch) = (
            self.wh.clone(),
            self.kind.clone(),
            self.mem_mb,
            self.scratch.clone(),
        );
        b.spawn_blocking(move || {
            let dir = tempfile::Builder::new()
                .prefix("ferret-scratch-")
                .tempdir_in(&scratch)
                .map_err(|e| {
                    DataFusionError::Execution(format!(
                        "making a scratch directory in {}: {e}",
                        scratch.display()
                    ))
                })?;
            let budget = ferret_kernels::blocked::Budget {
                mem_bytes: mb.saturating_mul(1 << 20),
                scratch: dir.path().to_path_buf(),
            };
            let mut send = |batch: RecordBatch| -> ferret_kernels::Result<()> {
                tx.blocking_send(Ok(batch)).map_err(|_| {
                    ferret_kernels::Error::BadQuery("the query stopped reading".into())
                })
            };
            match kind {
                Kind::Taint(job) => ferret_kernels::taint::stored_job::stored_taint_rows(
                    &backend()?,
                    &wh,
                    &job,
                    &budget,
                    "sql",
                    &mut send,
                )
                .map(|_| ()),
                Kind::Clusters(enabled) => {
                    let mut opts = ferret_kernels::cluster::ClusterOptions::default();
                    opts.detectors.enabled = enabled;
                    ferret_kernels::cluster::stored::stored_cluster_rows(
                        &wh, &opts, &budget, &mut send,
                    )
                    .map(|_| ())
                }
                Kind::EthTaint(job) => ferret_kernels::account::stored::stored_eth_taint_rows(
                    &wh, &job, &budget, None, "sql", &mut send,
                )
                .map(|_| ()),
            }
            .map_err(kernel_err)
        });
        b.build()
    }
}

/// `cluster_of(address)`: looked up in the stored clusters, loaded on the first call
/// (about 50 bytes an address), so sessions that never call it pay nothing.
#[derive(Debug)]
struct ClusterOf {
    signature: Signature,
    wh: Warehouse,
    ids: std::sync::OnceLock<std::result::Result<Arc<HashMap<String, i64>>, String>>,
}

impl PartialEq for ClusterOf {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for ClusterOf {}
impl std::hash::Hash for ClusterOf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.wh.to_string().hash(state);
    }
}

impl ClusterOf {
    /// The id map, loading it once. UDFs are called synchronously inside the query's
    /// runtime: on a multi-threaded runtime the load runs there (so cloud clients stay
    /// on their runtime); otherwise on a helper thread with its own.
    fn ids(&self) -> Result<Arc<HashMap<String, i64>>> {
        let loaded = self.ids.get_or_init(|| {
            let load = || async { cluster_ids(&self.wh).await.map(Arc::new) };
            let res = match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| h.block_on(load()))
                }
                _ => std::thread::scope(|s| {
                    s.spawn(|| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| DataFusionError::Execution(e.to_string()))?
                            .block_on(load())
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(DataFusionError::Execution(
                            "loading the clusters table failed".into(),
                        ))
                    })
                }),
            };
            res.map_err(|e| e.to_string())
        });
        loaded
            .clone()
            .map_err(|e| DataFusionError::Execution(format!("cluster_of: {e}")))
    }
}

impl ScalarUDFImpl for ClusterOf {
    fn name(&self) -> &str {
        "cluster_of"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("cluster_of(address) takes one argument");
        };
        let ids = self.ids()?;
        match arg {
            ColumnarValue::Scalar(v) => {
                let id = match v.cast_to(&DataType::Utf8)? {
                    ScalarValue::Utf8(Some(a)) => ids.get(&a).copied(),
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Int64(id)))
            }
            ColumnarValue::Array(arr) => {
                let arr = arrow::compute::cast(arr, &DataType::Utf8)?;
                let s = arr.as_string::<i32>();
                let mut out = Int64Builder::with_capacity(s.len());
                for i in 0..s.len() {
                    out.append_option(if s.is_null(i) {
                        None
                    } else {
                        ids.get(s.value(i)).copied()
                    });
                }
                Ok(ColumnarValue::Array(
                    Arc::new(out.finish()) as Arc<dyn Array>
                ))
            }
        }
    }
}

async fn cluster_ids(wh: &Warehouse) -> Result<HashMap<String, i64>> {
    let clusters = ferret_kernels::cluster::load_clusters(wh)
        .await
        .map_err(kernel_err)?;
    Ok(clusters.into_iter().map(|(a, (id, _))| (a, id)).collect())
}

/// Registers `taint`, `eth_taint`, `clusters` (table functions) and `cluster_of` in `ctx`.
/// The kernels run as [`KernelOptions::from_env`] says.
pub async fn register_functions(ctx: &SessionContext, wh: &Warehouse) -> Result<()> {
    register_functions_with(ctx, wh, KernelOptions::from_env()?).await
}

/// [`register_functions`] with the kernels' options given.
pub async fn register_functions_with(
    ctx: &SessionContext,
    wh: &Warehouse,
    opts: KernelOptions,
) -> Result<()> {
    ctx.register_udtf(
        "taint",
        Arc::new(TaintFunction {
            wh: wh.clone(),
            opts: opts.clone(),
        }),
    );
    ctx.register_udtf("eth_taint", Arc::new(EthTaintFunction { wh: wh.clone() }));
    ctx.register_udtf("typology", Arc::new(TypologyFunction { wh: wh.clone() }));
    ctx.register_udtf(
        "clusters",
        Arc::new(ClustersFunction {
            wh: wh.clone(),
            opts,
        }),
    );
    ctx.register_udf(ScalarUDF::new_from_impl(ClusterOf {
        signature: Signature::string(1, Volatility::Stable),
        wh: wh.clone(),
        ids: std::sync::OnceLock::new(),
    }));
    Ok(())
}
