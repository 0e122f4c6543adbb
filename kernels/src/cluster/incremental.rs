//! Incremental clustering: a stored clustering run records where it stopped (the
//! transactions it took, the block it ended on, the labels and options it ran with). The
//! next stored run, when the chain still holds that block, the labels and options are the
//! same, and the previous run's four tables are all there, starts from the stored
//! partition (the `clusters` table: every address's cluster id is its root) and takes
//! only the new transactions. The guards decide on clusters alone (see
//! [`super::guard`]), so the result equals a run from the first block, row for row
//! (tested); anything else (a reorg below the old tip, new labels, other options) runs
//! from the first block.

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use ferret_schemas::results::LatestRun;
use ferret_schemas::{Manifest, Warehouse};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::{Error, Result};

fn wh_err(e: ferret_schemas::Error) -> Error {
    Error::Warehouse(Box::new(e))
}

/// The clustering's rules (detectors, guards, their order): a run continues only one made
/// under the same rules. Bump on any change to what a run decides.
pub const RULES: u32 = 1;

/// Where a stored clustering stopped: kept in its run's parameters (`incremental`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`RULES`] of the run (0: before it was recorded).
    #[serde(default)]
    pub rules: u32,
    /// Transactions taken: ids below this.
    pub next_tx_index: u64,
    /// Addresses clustered: ids below this.
    pub next_address_id: u64,
    /// The block the run ended on.
    pub tip_height: u64,
    pub tip_hash: String,
    /// The `labels` run the guards used (None: no labels).
    pub labels_run: Option<String>,
    /// The options, as `Debug` prints them.
    pub options: String,
    pub linked_transactions: u64,
    pub coinjoins_skipped: u64,
    pub links: u64,
}

/// The key of the state in a run's parameters.
pub const KEY: &str = "incremental";

/// The previous stored run to continue from, when one may be continued: its state and
/// its four tables' runs (clusters, coinjoins, cluster_links, cluster_holds).
pub(crate) async fn previous(
    wh: &Warehouse,
    m: &Manifest,
    labels_run: &Option<String>,
    options: &str,
) -> Result<Option<(State, [LatestRun; 4])>> {
    let mut runs = wh.latest_runs().await.map_err(wh_err)?;
    let tables = ["clusters", "coinjoins", "cluster_links", "cluster_holds"];
    let mut four = Vec::new();
    for t in tables {
        match runs.remove(t) {
            Some(r) => four.push(r),
            None => return Ok(None),
        }
    }
    if four.iter().any(|r| r.run_id != four[0].run_id) {
        tracing::info!("clustering from the first block: the last run's tables are not one run");
        return Ok(None);
    }
    let Some(state) = four[0]
        .params
        .as_ref()
        .and_then(|p| p.get(KEY))
        .and_then(|s| serde_json::from_value::<State>(s.clone()).ok())
    else {
        return Ok(None);
    };
    let why = if state.rules != RULES {
        Some("the clustering rules changed since")
    } else if state.options != options {
        Some("other options")
    } else if &state.labels_run != labels_run {
        Some("the labels changed")
    } else if state.next_tx_index > m.next_tx_index || state.next_address_id > m.next_address_id {
        Some("the chain is shorter than the last run's")
    } else if crate::blocks::block_hash_in(wh, m, ferret_schemas::Chain::Btc, state.tip_height)
        .await?
        .as_deref()
        != Some(state.tip_hash.as_str())
    {
        Some("a reorganisation replaced the last run's tip")
    } else {
        None
    };
    if let Some(why) = why {
        tracing::info!(
            run = %four[0].run_id,
            "clustering from the first block: {why}"
        );
        return Ok(None);
    }
    let four: [LatestRun; 4] = four
        .try_into()
        .map_err(|_| Error::BadGraph("four runs expected".into()))?;
    Ok(Some((state, four)))
}

/// Calls `f` on each row group of a run's files, in order (one row group held at a time).
pub(crate) fn each_row_group(
    wh: &Warehouse,
    run: &LatestRun,
    columns: &[&str],
    mut f: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let rt = Handle::current();
    for path in &run.files {
        let meta = rt.block_on(wh.reader_metadata(path)).map_err(wh_err)?;
        let groups = meta.metadata().num_row_groups();
        for rg in 0..groups {
            for b in rt
                .block_on(wh.read_row_groups_with(path, &meta, columns, vec![rg]))
                .map_err(wh_err)?
            {
                f(b)?;
            }
        }
    }
    Ok(())
}

/// `batch` with its `run_id` column set to `run_id` and, when given, its `cluster_id`
/// column mapped through `remap`.
pub(crate) fn rewrite(
    batch: &RecordBatch,
    run_id: &str,
    mut remap: Option<&mut dyn FnMut(i64) -> Result<i64>>,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut cols = Vec::with_capacity(batch.num_columns());
    for (i, field) in schema.fields().iter().enumerate() {
        let c = batch.column(i);
        cols.push(match field.name().as_str() {
            "run_id" => std::sync::Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                run_id,
                batch.num_rows(),
            ))) as std::sync::Arc<dyn Array>,
            "cluster_id" if remap.is_some() => {
                let f = remap.as_mut().expect("checked");
                let ids = c.as_primitive_opt::<Int64Type>().ok_or_else(|| {
                    Error::BadGraph("cluster_links: cluster_id has the wrong type".into())
                })?;
                let mut out = Vec::with_capacity(ids.len());
                for r in 0..ids.len() {
                    out.push(f(ids.value(r))?);
                }
                std::sync::Arc::new(Int64Array::from(out))
            }
            _ => c.clone(),
        });
    }
    RecordBatch::try_new(schema, cols).map_err(|e| Error::Write {
        path: "cluster run".into(),
        reason: e.to_string(),
    })
}
