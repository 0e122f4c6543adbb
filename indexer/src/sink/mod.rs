//! Writing tables to Parquet on object storage: sorted files with page statistics (and so
//! the page index), bloom filters on the address and hash columns, zstd. Each file is
//! streamed through a multipart upload that becomes visible only when complete.

use std::sync::Arc;

use arrow::array::RecordBatch;
use ferret_schemas::{FileEntry, TableDef, Warehouse};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::{ArrowSchemaConverter, AsyncArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::{Error, Result};

/// Rows per row group: the unit of statistics pruning and of bloom filters.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Columns nobody filters on: no statistics, and no compression for the ones that are
/// mostly signatures and keys (incompressible).
const BLOB_COLUMNS: &[&str] = &["script", "script_sig", "witness"];
const INCOMPRESSIBLE_COLUMNS: &[&str] = &["script_sig", "witness"];

/// Columns with few distinct values, worth a dictionary.
const DICTIONARY_COLUMNS: &[&str] = &["script_type"];

/// Writer properties of a table: sort order, statistics, bloom filters, compression.
pub fn writer_properties(t: &TableDef) -> WriterProperties {
    let schema = t.schema();
    let sorting = t
        .sort_key
        .iter()
        .map(|c| SortingColumn {
            column_idx: i32::try_from(
                schema
                    .index_of(c)
                    .expect("sort key checked by registry test"),
            )
            .expect("few columns"),
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut b = WriterProperties::builder()
        // zstd level 1: most of zstd's ratio on this data at a fraction of level 3's cost.
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        // No dictionaries: hashes, addresses and amounts are near-unique, and dictionary
        // encoding measured slower and larger on them (it gives up per page and falls back).
        // The one low-cardinality string column gets one.
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("ferret {}", env!("CARGO_PKG_VERSION")));
    let parquet_schema = ArrowSchemaConverter::new()
        .convert(&schema)
        .expect("registry schemas convert to parquet");
    for leaf in parquet_schema.columns() {
        let path = leaf.path().clone();
        let top = path.parts()[0].as_str();
        if matches!(
            leaf.physical_type(),
            parquet::basic::Type::INT32 | parquet::basic::Type::INT64
        ) {
            b = b.set_column_encoding(path.clone(), Encoding::DELTA_BINARY_PACKED);
        }
        if DICTIONARY_COLUMNS.contains(&top) {
            b = b.set_column_dictionary_enabled(path.clone(), true);
        }
        if BLOB_COLUMNS.contains(&top) {
            b = b.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
        }
        if INCOMPRESSIBLE_COLUMNS.contains(&top) {
            b = b.set_column_compression(path.clone(), Compression::UNCOMPRESSED);
        }
    }
    for c in t.bloom_columns {
        let col = ColumnPath::from(*c);
        b = b
            .set_column_bloom_filter_enabled(col.clone(), true)
            .set_column_bloom_filter_fpp(col.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(col, ROW_GROUP_ROWS as u64);
    }
    b.build()
}

/// One Parquet file being written.
pub struct TableWriter {
    table: &'static TableDef,
    path: Path,
    writer: AsyncArrowWriter<ferret_schemas::checksum::HashingWriter<BufWriter>>,
    digest: ferret_schemas::checksum::Digest,
    rows: u64,
    first_height: u64,
    last_height: u64,
    /// The `row_groups_by` values of the last row written.
    group: Option<Vec<i32>>,
}

impl TableWriter {
    /// Starts the file of `table` for heights `first..=last` at `path`.
    pub fn create_at(
        wh: &Warehouse,
        table: &'static TableDef,
        path: Path,
        first_height: u64,
        last_height: u64,
    ) -> Result<Self> {
        let (out, digest) = ferret_schemas::checksum::HashingWriter::new(BufWriter::new(
            Arc::clone(wh.store()),
            path.clone(),
        ));
        let writer = AsyncArrowWriter::try_new(out, table.schema(), Some(writer_properties(table)))
            .map_err(|source| Error::Parquet {
                path: path.to_string(),
                source,
            })?;
        Ok(Self {
            table,
            path,
            writer,
            digest,
            rows: 0,
            first_height,
            last_height,
            group: None,
        })
    }

    /// Appends a batch (for a table with `row_groups_by`, a new row group starts wherever
    /// those columns change, within the batch or from the last one).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.table.row_groups_by.is_empty() {
            return self.write_rows(batch).await;
        }
        let keys = self
            .table
            .row_groups_by
            .iter()
            .map(|c| {
                batch
                    .column_by_name(c)
                    .and_then(|a| a.as_any().downcast_ref::<arrow::array::Int32Array>())
                    .ok_or_else(|| Error::Internal {
                        what: format!("{}: no Int32 column {c}", self.table.qualified_name()),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let key_at = |r: usize| keys.iter().map(|k| k.value(r)).collect::<Vec<i32>>();
        let mut start = 0;
        while start < batch.num_rows() {
            let key = key_at(start);
            let mut end = start + 1;
            while end < batch.num_rows() && keys.iter().zip(&key).all(|(k, &v)| k.value(end) == v) {
                end += 1;
            }
            if self.group.as_ref().is_some_and(|g| *g != key) && self.writer.in_progress_rows() > 0
            {
                self.writer.flush().await.map_err(|source| Error::Parquet {
                    path: self.path.to_string(),
                    source,
                })?;
            }
            self.write_rows(&batch.slice(start, end - start)).await?;
            self.group = Some(key);
            start = end;
        }
        Ok(())
    }

    async fn write_rows(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|source| Error::Parquet {
                path: self.path.to_string(),
                source,
            })
    }

    /// Finishes the file (footer, upload completion) and describes it for the manifest.
    pub async fn close(self, wh: &Warehouse) -> Result<FileEntry> {
        let path = self.path;
        self.writer.close().await.map_err(|source| Error::Parquet {
            path: path.to_string(),
            source,
        })?;
        ferret_schemas::failpoint::hit("data-file-written");
        let meta = wh
            .store()
            .head(&path)
            .await
            .map_err(|source| Error::Store {
                path: path.to_string(),
                source,
            })?;
        Ok(FileEntry {
            table: self.table.name.to_string(),
            path: wh.relative(&path),
            first_height: self.first_height,
            last_height: self.last_height,
            rows: self.rows,
            bytes: meta.size,
            sha256: Some(self.digest.hex()),
        })
    }
}

/// The files of one commit chunk, one per table, each encoded and uploaded by its own task
/// so Parquet encoding runs beside the transform instead of taking turns with it.
pub struct ChunkSinks {
    senders: Vec<tokio::sync::mpsc::Sender<RecordBatch>>,
    handles: Vec<tokio::task::JoinHandle<Result<FileEntry>>>,
}

impl ChunkSinks {
    /// Starts one writer task per table for heights `first..=last`, the files named after
    /// the writer's attempt and the commit that will list them
    /// ([`ferret_schemas::layout::data_file`]).
    pub fn open(
        wh: &Warehouse,
        tables: &[&'static TableDef],
        first_height: u64,
        last_height: u64,
        attempt: &str,
        commit: u64,
    ) -> Result<Self> {
        let mut senders = Vec::with_capacity(tables.len());
        let mut handles = Vec::with_capacity(tables.len());
        for t in tables {
            let path = ferret_schemas::layout::data_file(
                wh.root(),
                t,
                first_height,
                last_height,
                attempt,
                commit,
            );
            let mut w = TableWriter::create_at(wh, t, path, first_height, last_height)?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
            let wh = wh.clone();
            handles.push(tokio::spawn(async move {
                while let Some(batch) = rx.recv().await {
                    w.write(&batch).await?;
                }
                w.close(&wh).await
            }));
            senders.push(tx);
        }
        Ok(Self { senders, handles })
    }

    /// Hands one batch per table (in the order given to [`ChunkSinks::open`]) to the writers.
    /// Sends `batch` to the file of table `i` (registry order).
    pub async fn send_to(&mut self, i: usize, batch: RecordBatch) -> Result<()> {
        let mut batches = vec![RecordBatch::new_empty(batch.schema()); i];
        batches.push(batch);
        self.send(batches).await
    }

    pub async fn send(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for (i, batch) in batches.into_iter().enumerate() {
            if batch.num_rows() == 0 {
                continue;
            }
            if self.senders[i].send(batch).await.is_err() {
                // The writer stopped early: its own error says why.
                let handle = self.handles.remove(i);
                return Err(join(handle.await).err().unwrap_or_else(|| Error::Internal {
                    what: "a table writer stopped without an error".into(),
                }));
            }
        }
        Ok(())
    }

    /// Closes every file and returns their manifest entries, in table order.
    pub async fn finish(mut self) -> Result<Vec<FileEntry>> {
        self.senders.clear();
        let mut entries = Vec::with_capacity(self.handles.len());
        for handle in std::mem::take(&mut self.handles) {
            entries.push(join(handle.await)?);
        }
        Ok(entries)
    }
}

impl Drop for ChunkSinks {
    fn drop(&mut self) {
        // A failed chunk: stop its uploads; what they wrote is never committed and the next
        // run collects it.
        for h in &self.handles {
            h.abort();
        }
    }
}

fn join(r: std::result::Result<Result<FileEntry>, tokio::task::JoinError>) -> Result<FileEntry> {
    r.map_err(|e| Error::Internal {
        what: format!("table writer task: {e}"),
    })?
}

/// Rewrites a committed file keeping only rows whose height (the table's height column) is at most
/// `ancestor`, under a new name of this writer's attempt and commit `seq` (the old file
/// stays for readers of the older manifest until garbage collection). Returns the new
/// entry and the rows it dropped (a reorganisation's few blocks).
pub async fn truncate_committed(
    wh: &Warehouse,
    chain: ferret_schemas::Chain,
    f: &FileEntry,
    ancestor: u64,
    attempt: &str,
    seq: u64,
) -> Result<(FileEntry, Vec<RecordBatch>)> {
    let table = ferret_schemas::table(chain, &f.table).ok_or_else(|| Error::CorruptCommitted {
        path: f.path.clone(),
        reason: format!("unknown table {}", f.table),
    })?;
    let schema = table.schema();
    let height_column = table.height_column;
    let batches = wh.read_file(&f.path).await?;
    let path =
        ferret_schemas::layout::data_file(wh.root(), table, f.first_height, ancestor, attempt, seq);
    let mut w = TableWriter::create_at(wh, table, path, f.first_height, ancestor)?;
    let limit = arrow::array::Int64Array::new_scalar(i64::try_from(ancestor).unwrap_or(i64::MAX));
    let arrow_err = |source| Error::Arrow {
        table: table.qualified_name(),
        source,
    };
    let mut dropped = Vec::new();
    for b in batches {
        let b = RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(arrow_err)?;
        let height = b
            .column_by_name(height_column)
            .ok_or_else(|| Error::CorruptCommitted {
                path: f.path.clone(),
                reason: format!("no {height_column} column"),
            })?;
        let keep = arrow::compute::kernels::cmp::lt_eq(height, &limit).map_err(arrow_err)?;
        let kept = arrow::compute::filter_record_batch(&b, &keep).map_err(arrow_err)?;
        let gone = arrow::compute::filter_record_batch(
            &b,
            &arrow::compute::not(&keep).map_err(arrow_err)?,
        )
        .map_err(arrow_err)?;
        if kept.num_rows() > 0 {
            w.write(&kept).await?;
        }
        if gone.num_rows() > 0 {
            dropped.push(gone);
        }
    }
    Ok((w.close(wh).await?, dropped))
}

/// Deletes the files an unwind commit dropped: readers of the new manifest never see them;
/// deleting them now rather than at the next run keeps tools that glob the directories
/// (DuckDB) from seeing them either. A failed delete is left to garbage collection.
pub async fn delete_unwound(wh: &Warehouse, dropped: Vec<String>) -> Result<()> {
    for p in dropped {
        let path = wh.resolve(&p)?;
        if let Err(e) = wh.store().delete(&path).await {
            tracing::warn!(path = %p, error = %e, "could not delete an unwound file");
        }
    }
    Ok(())
}
