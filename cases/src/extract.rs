//! `ferret extract`: one run of a case as a self-contained Parquet dataset for notebooks
//! and other tools, partitioned by chain (Hive style, `chain=btc/`), committed like the
//! warehouse: every file is written first, then `_extract.json` (create-only) lists them
//! with their sizes and SHA-256. An extract without `_extract.json` is incomplete (a
//! crash); a second extract to the same place is refused. Schemas: docs/extract.md.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use ferret_schemas::Warehouse;

use crate::{Error, Result};

/// The name of the commit object.
pub const COMMIT: &str = "_extract.json";

fn f(name: &str, t: DataType, nullable: bool) -> Field {
    Field::new(name, t, nullable)
}

/// The tables of an extract and their schemas (the same on every chain).
pub fn extract_tables() -> &'static [(&'static str, SchemaRef)] {
    static T: LazyLock<Vec<(&'static str, SchemaRef)>> = LazyLock::new(|| {
        use DataType::{Boolean, Float64, Int32, Int64, Utf8};
        vec![
            (
                "transactions",
                Arc::new(Schema::new(vec![
                    f("txid", Utf8, false),
                    f("height", Int64, false),
                    f("tx_index", Int64, true),
                    f("input_value", Int64, true),
                    f("output_value", Int64, true),
                    f("fee", Int64, true),
                    f("transfers", Int64, true),
                ])),
            ),
            (
                "flows",
                Arc::new(Schema::new(vec![
                    f("from_address", Utf8, false),
                    f("to_address", Utf8, false),
                    f("asset", Utf8, false),
                    f("tainted_value", Float64, false),
                    f("hop", Int32, false),
                    f("transfers", Int64, true),
                    f("coinjoin", Utf8, true),
                ])),
            ),
            (
                "addresses",
                Arc::new(Schema::new(vec![
                    f("address", Utf8, false),
                    f("label", Utf8, true),
                    f("category", Utf8, true),
                    f("cluster_id", Int64, true),
                    f("cluster_size", Int64, true),
                    f("tainted_value", Float64, true),
                    f("min_hop", Int32, true),
                    f("is_seed", Boolean, false),
                    f("in_seed_cluster", Boolean, false),
                    f("is_exit", Boolean, false),
                ])),
            ),
            (
                "exits",
                Arc::new(Schema::new(vec![
                    f("address", Utf8, false),
                    f("label", Utf8, false),
                    f("category", Utf8, false),
                    f("asset", Utf8, false),
                    f("tainted_value", Float64, false),
                    f("min_hop", Int32, false),
                    f("outputs", Int64, false),
                    f("all_paths_value", Float64, true),
                ])),
            ),
            (
                "paths",
                Arc::new(Schema::new(vec![
                    f("exit", Utf8, false),
                    f("step", Int32, false),
                    f("txid", Utf8, false),
                    f("from_address", Utf8, true),
                    f("to_address", Utf8, false),
                    f("tainted_value", Float64, false),
                    f("hop", Int32, false),
                    f("height", Int64, true),
                ])),
            ),
        ]
    });
    &T
}

/// One written file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractFile {
    pub table: String,
    pub chain: String,
    /// Relative to the extract's root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The commit object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractManifest {
    pub format: u32,
    pub case: String,
    pub run_id: String,
    pub created: String,
    pub ferret_version: String,
    pub files: Vec<ExtractFile>,
}

/// The queries of one chain's tables; `{c}` and `{r}` are the case and run.
fn queries(chain: &str) -> Vec<(&'static str, String)> {
    let w = |t: &str| format!("FROM {t} WHERE \"case\" = '{{c}}' AND run_id = '{{r}}'");
    if chain == "btc" {
        vec![
            (
                "transactions",
                format!(
                    "SELECT txid, height, tx_index, input_value, output_value, fee, CAST(NULL AS BIGINT) AS transfers \
                 FROM btc.transactions WHERE txid IN (SELECT DISTINCT txid {}) ORDER BY height, tx_index",
                    w("case_taint")
                ),
            ),
            (
                "flows",
                format!(
                    "SELECT from_address, to_address, asset, tainted_value, hop, transfers, coinjoin {} AND chain = 'btc' \
                 ORDER BY hop, from_address, to_address",
                    w("case_flows")
                ),
            ),
            (
                "exits",
                format!(
                    "SELECT address, label, category, 'BTC' AS asset, CAST(tainted_value AS DOUBLE) AS tainted_value, min_hop, outputs, \
                 CAST(all_paths_value AS DOUBLE) AS all_paths_value {} ORDER BY tainted_value DESC, address",
                    w("case_exits")
                ),
            ),
            (
                "paths",
                format!(
                    "WITH p AS (SELECT exit, step, txid, from_address, to_address, tainted_value, hop {} AND chain = 'btc') \
                 SELECT p.exit, p.step, p.txid, p.from_address, p.to_address, p.tainted_value, p.hop, t.height \
                 FROM p LEFT JOIN (SELECT txid, height FROM btc.transactions WHERE txid IN (SELECT txid FROM p)) t ON p.txid = t.txid \
                 ORDER BY p.exit, p.step",
                    w("case_paths")
                ),
            ),
            (
                "addresses",
                format!(
                    "WITH t AS (SELECT address, CAST(sum(tainted_value) AS DOUBLE) AS tv, min(hop) AS hop {} AND address IS NOT NULL GROUP BY address), \
                 m AS (SELECT address, min(seed) AS seed, min(cluster_id) AS cid {} AND chain = 'btc' GROUP BY address), \
                 e AS (SELECT DISTINCT address {}), \
                 a AS (SELECT address FROM t UNION SELECT address FROM m UNION SELECT address FROM e), \
                 l AS (SELECT address, min(label) AS label, min(category) AS category FROM labels WHERE chain = 'btc' GROUP BY address), \
                 c AS (SELECT address, cluster_id, cluster_size FROM clusters WHERE address IN (SELECT address FROM a)) \
                 SELECT a.address, l.label, l.category, coalesce(c.cluster_id, m.cid) AS cluster_id, c.cluster_size, t.tv AS tainted_value, t.hop AS min_hop, \
                 coalesce(a.address = m.seed, false) AS is_seed, m.address IS NOT NULL AS in_seed_cluster, e.address IS NOT NULL AS is_exit \
                 FROM a LEFT JOIN t ON a.address = t.address LEFT JOIN m ON a.address = m.address LEFT JOIN e ON a.address = e.address \
                 LEFT JOIN l ON a.address = l.address LEFT JOIN c ON a.address = c.address ORDER BY a.address",
                    w("case_taint"),
                    w("case_members"),
                    w("case_exits")
                ),
            ),
        ]
    } else {
        vec![
            (
                "transactions",
                format!(
                    "WITH x AS (SELECT txid {} AND chain = 'eth' UNION SELECT first_transaction_hash {} AND first_transaction_hash IS NOT NULL) \
                 SELECT transaction_hash AS txid, min(block_number) AS height, CAST(min(transaction_index) AS BIGINT) AS tx_index, \
                 CAST(NULL AS BIGINT) AS input_value, CAST(NULL AS BIGINT) AS output_value, CAST(NULL AS BIGINT) AS fee, count(*) AS transfers \
                 FROM eth.transfers WHERE transaction_hash IN (SELECT txid FROM x) GROUP BY transaction_hash ORDER BY 2, 3",
                    w("case_paths"),
                    w("case_eth_taint")
                ),
            ),
            (
                "flows",
                format!(
                    "SELECT from_address, to_address, asset, tainted_value, hop, transfers, coinjoin {} AND chain = 'eth' \
                 ORDER BY hop, from_address, to_address",
                    w("case_flows")
                ),
            ),
            (
                "exits",
                format!(
                    "SELECT address, label, category, asset, tainted_value, min_hop, tainted_transfers AS outputs, \
                 CAST(NULL AS DOUBLE) AS all_paths_value {} ORDER BY tainted_value DESC, address",
                    w("case_eth_exits")
                ),
            ),
            (
                "paths",
                format!(
                    "SELECT exit, step, txid, from_address, to_address, tainted_value, hop, height {} AND chain = 'eth' ORDER BY exit, step",
                    w("case_paths")
                ),
            ),
            (
                "addresses",
                format!(
                    "WITH t AS (SELECT address, tainted_value AS tv, hop {}), \
                 m AS (SELECT address, min(seed) AS seed, min(cluster_id) AS cid {} AND chain = 'eth' GROUP BY address), \
                 e AS (SELECT DISTINCT address {}), \
                 a AS (SELECT address FROM t UNION SELECT address FROM m UNION SELECT address FROM e), \
                 l AS (SELECT address, min(label) AS label, min(category) AS category FROM labels WHERE chain = 'eth' GROUP BY address), \
                 c AS (SELECT address, cluster_id, cluster_size FROM eth_clusters WHERE address IN (SELECT address FROM a)) \
                 SELECT a.address, l.label, l.category, coalesce(c.cluster_id, m.cid) AS cluster_id, c.cluster_size, t.tv AS tainted_value, t.hop AS min_hop, \
                 coalesce(a.address = m.seed, false) AS is_seed, m.address IS NOT NULL AS in_seed_cluster, e.address IS NOT NULL AS is_exit \
                 FROM a LEFT JOIN t ON a.address = t.address LEFT JOIN m ON a.address = m.address LEFT JOIN e ON a.address = e.address \
                 LEFT JOIN l ON a.address = l.address LEFT JOIN c ON a.address = c.address ORDER BY a.address",
                    w("case_eth_taint"),
                    w("case_members"),
                    w("case_eth_exits")
                ),
            ),
        ]
    }
}

/// `batches` cast to `schema` (names and types; the queries give them in order).
fn conform(batches: &[RecordBatch], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .iter()
        .map(|b| {
            if b.num_columns() != schema.fields().len() {
                return Err(Error::Query(format!(
                    "extract: {} columns, the schema has {}",
                    b.num_columns(),
                    schema.fields().len()
                )));
            }
            let cols = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
        })
        .collect()
}

fn parquet_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(props))
        .map_err(|e| Error::Query(e.to_string()))?;
    for b in batches {
        w.write(b).map_err(|e| Error::Query(e.to_string()))?;
    }
    w.into_inner().map_err(|e| Error::Query(e.to_string()))
}

/// Writes one run of `case` (default: its latest) to `out` (a URL or path the
/// warehouse would take).
pub async fn extract(
    wh: &Warehouse,
    case: &str,
    run: Option<&str>,
    out: &str,
) -> Result<ExtractManifest> {
    let refused = |reason: String| Error::Refused {
        case: case.to_string(),
        reason,
    };
    let run_id = crate::run::CaseRun::resolve(wh, case, run).await?.run_id;
    let ctx = ferret_query::session(wh).await?;
    let chains_of_run = ctx
        .sql(&format!(
            "SELECT chains FROM case_runs WHERE \"case\" = '{case}' AND run_id = '{run_id}'"
        ))
        .await?
        .collect()
        .await?;
    let chains: Vec<String> = chains_of_run
        .iter()
        .filter_map(|b| {
            use arrow::array::AsArray;
            b.column(0).as_string_opt::<i32>().map(|c| {
                (0..b.num_rows())
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
        })
        .flatten()
        .flat_map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();

    let dest = Warehouse::open(out)?;
    let store = dest.store();
    let commit = dest.root().clone().join(COMMIT);
    match store.head(&commit).await {
        Ok(_) => {
            return Err(refused(format!(
                "{out} already holds an extract: choose another --out"
            )));
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(Error::Warehouse(ferret_schemas::Error::store(&commit, e))),
    }
    let mut files = Vec::new();
    for chain in &chains {
        for (table, sql) in queries(chain) {
            let sql = sql.replace("{c}", case).replace("{r}", &run_id);
            let schema = extract_tables()
                .iter()
                .find(|(t, _)| *t == table)
                .map(|(_, s)| Arc::clone(s))
                .ok_or_else(|| Error::Query(format!("no extract table {table}")))?;
            let batches = ctx.sql(&sql).await?.collect().await?;
            let batches = conform(&batches, &schema)?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let bytes = parquet_bytes(&schema, &batches)?;
            let rel = format!("{table}/chain={chain}/part-0.parquet");
            let path = rel.split('/').fold(dest.root().clone(), |p, s| p.join(s));
            let sha = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let len = bytes.len() as u64;
            store
                .put(&path, PutPayload::from(Bytes::from(bytes)))
                .await
                .map_err(|e| Error::Warehouse(ferret_schemas::Error::store(&path, e)))?;
            ferret_schemas::failpoint::hit("extract-file");
            files.push(ExtractFile {
                table: table.to_string(),
                chain: chain.clone(),
                path: rel,
                rows: rows as u64,
                bytes: len,
                sha256: sha,
            });
        }
    }
    let manifest = ExtractManifest {
        format: 1,
        case: case.to_string(),
        run_id,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ferret_version: env!("CARGO_PKG_VERSION").to_string(),
        files,
    };
    let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&commit, PutPayload::from(Bytes::from(body)), opts)
        .await
        .map_err(|e| match e {
            object_store::Error::AlreadyExists { .. } => {
                refused(format!("{out}: another extract committed there first"))
            }
            e => Error::Warehouse(ferret_schemas::Error::store(&commit, e)),
        })?;
    Ok(manifest)
}
