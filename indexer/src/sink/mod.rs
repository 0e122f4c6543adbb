//! Writing tables to Parquet on object storage: sorted files with page statistics (and so
//! the page index), bloom filters on the address and hash columns, zstd. Each file is
//! streamed through a multipart upload that becomes visible only when complete.

use std::sync::Arc;

use arrow::array::RecordBatch;
use ferret_schemas::{FileEntry, TableDef, Warehouse};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::{Error, Result};

/// Rows per row group: the unit of statistics pruning and of bloom filters.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

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
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("ferret {}", env!("CARGO_PKG_VERSION")));
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
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
    first_height: u64,
    last_height: u64,
}

impl TableWriter {
    /// Starts the file of `table` for heights `first..=last`.
    pub fn create(
        wh: &Warehouse,
        table: &'static TableDef,
        first_height: u64,
        last_height: u64,
    ) -> Result<Self> {
        let path = ferret_schemas::layout::data_file(wh.root(), table, first_height, last_height);
        let out = BufWriter::new(Arc::clone(wh.store()), path.clone());
        let writer = AsyncArrowWriter::try_new(out, table.schema(), Some(writer_properties(table)))
            .map_err(|source| Error::Parquet {
                path: path.to_string(),
                source,
            })?;
        Ok(Self {
            table,
            path,
            writer,
            rows: 0,
            first_height,
            last_height,
        })
    }

    /// Appends a batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
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
            path: path.to_string(),
            first_height: self.first_height,
            last_height: self.last_height,
            rows: self.rows,
            bytes: meta.size,
        })
    }
}
