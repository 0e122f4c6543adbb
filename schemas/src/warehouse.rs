//! Opening a warehouse from a URL and the commit protocol on top of `object_store`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::manifest::{manifest_name, parse_manifest_name};
use crate::{Chain, Error, Manifest, Result, layout};

/// In-memory stores by name, so `memory://name` means the same store within a process.
static MEMORY_STORES: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> =
    LazyLock::new(Default::default);

/// A warehouse: an object store and the root path inside it.
#[derive(Clone, Debug)]
pub struct Warehouse {
    store: Arc<dyn ObjectStore>,
    /// `scheme://authority/` of the store, as DataFusion registers object stores.
    base_url: Url,
    root: Path,
    display: String,
    /// The directory of a local warehouse (for cleaning up upload staging files).
    local_dir: Option<std::path::PathBuf>,
}

impl Warehouse {
    /// Opens a warehouse from a URL: a bare path or `file://` (created if missing),
    /// `memory://[name]`, `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    /// Cloud credentials and endpoints come from the environment (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`), as the object_store builders read them.
    pub fn open(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        if !url.contains("://") || url.starts_with("file://") {
            let path = url.strip_prefix("file://").unwrap_or(url);
            let path = if path.is_empty() { "." } else { path };
            std::fs::create_dir_all(path).map_err(|source| Error::Io {
                path: path.to_string(),
                source,
            })?;
            let canonical = std::fs::canonicalize(path).map_err(|source| Error::Io {
                path: path.to_string(),
                source,
            })?;
            let root = Path::from_absolute_path(&canonical).map_err(|e| invalid(e.to_string()))?;
            let store = LocalFileSystem::new().with_automatic_cleanup(true);
            return Ok(Self {
                store: Arc::new(store),
                base_url: Url::parse("file:///").expect("static url is valid"),
                root,
                display: canonical.display().to_string(),
                local_dir: Some(canonical),
            });
        }
        let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        let root =
            Path::parse(parsed.path().trim_matches('/')).map_err(|e| invalid(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "memory" => {
                let mut stores = MEMORY_STORES.lock().unwrap_or_else(|p| p.into_inner());
                stores
                    .entry(bucket.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone()
            }
            "s3" | "s3a" => Arc::new(
                AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            "az" | "abfs" | "abfss" | "azure" => Arc::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            other => {
                return Err(invalid(format!(
                    "unsupported scheme `{other}` (use a path, file://, memory://, s3://, gs:// or az://)"
                )));
            }
        };
        let base_url = Url::parse(&format!("{}://{}/", parsed.scheme(), bucket))
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            store,
            base_url,
            root,
            display: url.to_string(),
            local_dir: None,
        })
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Root path of the warehouse inside the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `scheme://authority/` of the store (what DataFusion's object store registry keys on).
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Full URL of an object, for readers that take URLs.
    pub fn object_url(&self, path: &Path) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Reads the named (top-level) columns of one committed Parquet file, in the order
    /// given.
    pub async fn read_columns(
        &self,
        path: &str,
        columns: &[&str],
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        self.read_parquet(path, Some(columns)).await
    }

    /// Reads every column of one committed Parquet file.
    pub async fn read_file(&self, path: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        self.read_parquet(path, None).await
    }

    /// Reads one Parquet file: the named columns in the order given, or all of them.
    async fn read_parquet(
        &self,
        path: &str,
        columns: Option<&[&str]>,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
        let corrupt = |reason: String| Error::CorruptFile {
            path: path.to_string(),
            reason,
        };
        // The object_store reader is deprecated upstream in favour of hand-written readers;
        // it is still the simplest correct way to stream a committed file.
        #[allow(deprecated)]
        let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
            Arc::clone(&self.store),
            Path::from(path),
        );
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| corrupt(e.to_string()))?;
        let Some(columns) = columns else {
            return builder
                .build()
                .map_err(|e| corrupt(e.to_string()))?
                .try_collect()
                .await
                .map_err(|e| corrupt(e.to_string()));
        };
        let schema = builder.parquet_schema();
        let indices: Vec<usize> = columns
            .iter()
            .map(|c| {
                schema
                    .columns()
                    .iter()
                    .position(|col| col.path().string() == *c)
                    .ok_or_else(|| corrupt(format!("missing column {c}")))
            })
            .collect::<Result<_>>()?;
        let mask = ProjectionMask::leaves(schema, indices);
        let stream = builder
            .with_projection(mask)
            .build()
            .map_err(|e| corrupt(e.to_string()))?;
        let batches: Vec<arrow::array::RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| corrupt(e.to_string()))?;
        // The reader yields columns in file order; callers get them in the order asked.
        batches
            .into_iter()
            .map(|b| {
                let order = columns
                    .iter()
                    .map(|c| b.schema().index_of(c).map_err(|e| corrupt(e.to_string())))
                    .collect::<Result<Vec<_>>>()?;
                b.project(&order).map_err(|e| corrupt(e.to_string()))
            })
            .collect()
    }

    /// The latest run of a kernel job (`clusters`, …), if any.
    pub async fn latest_run(&self, job: &str) -> Result<Option<crate::results::LatestRun>> {
        let path = crate::results::latest_path(&self.root, job);
        match self.store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| Error::store(&path, e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| Error::CorruptManifest { path, source })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(&path, e)),
        }
    }

    /// Writes `batches` as a new run of `job` (one Parquet file) and points the job's
    /// plain table at it. Returns the run id. A reader sees the old run or the new one,
    /// never a half-written one.
    pub async fn write_run(
        &self,
        job: &str,
        schema: arrow::datatypes::SchemaRef,
        batches: &[arrow::array::RecordBatch],
        params: Option<serde_json::Value>,
    ) -> Result<String> {
        let run_id = crate::results::new_run_id();
        self.write_run_as(job, &run_id, schema, batches, params)
            .await?;
        Ok(run_id)
    }

    /// [`Warehouse::write_run`] with a run id chosen by the caller (whose rows carry it).
    pub async fn write_run_as(
        &self,
        job: &str,
        run_id: &str,
        schema: arrow::datatypes::SchemaRef,
        batches: &[arrow::array::RecordBatch],
        params: Option<serde_json::Value>,
    ) -> Result<()> {
        use parquet::arrow::AsyncArrowWriter;
        let path = crate::results::job_dir(&self.root, job)
            .join(format!("run={run_id}"))
            .join("part-0.parquet");
        let write_err = |e: parquet::errors::ParquetError| Error::CorruptFile {
            path: path.to_string(),
            reason: format!("writing: {e}"),
        };
        let out = object_store::buffered::BufWriter::new(Arc::clone(&self.store), path.clone());
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut w = AsyncArrowWriter::try_new(out, schema, Some(props)).map_err(write_err)?;
        let mut rows = 0u64;
        for b in batches {
            rows += b.num_rows() as u64;
            w.write(b).await.map_err(write_err)?;
        }
        w.close().await.map_err(write_err)?;
        self.commit_latest_run(
            job,
            &crate::results::LatestRun {
                run_id: run_id.to_string(),
                files: vec![path.to_string()],
                rows,
                params,
            },
        )
        .await
    }

    /// Reads every column of a job's latest run (empty when there is none).
    pub async fn read_latest(&self, job: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        let Some(run) = self.latest_run(job).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for f in &run.files {
            out.extend(self.read_parquet(f, None).await?);
        }
        Ok(out)
    }

    /// Points a job's plain table at `run` (one atomic PUT, after the run's files).
    pub async fn commit_latest_run(
        &self,
        job: &str,
        run: &crate::results::LatestRun,
    ) -> Result<()> {
        let path = crate::results::latest_path(&self.root, job);
        let body = serde_json::to_vec_pretty(run).expect("serialises");
        self.store
            .put(&path, PutPayload::from(Bytes::from(body)))
            .await
            .map_err(|e| Error::store(&path, e))?;
        Ok(())
    }

    /// Lists the manifests of a chain, newest last.
    async fn manifest_seqs(&self, chain: Chain) -> Result<Vec<u64>> {
        let dir = layout::state_dir(&self.root, chain);
        let listed: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| Error::store(&dir, e))?;
        let mut seqs: Vec<u64> = listed
            .iter()
            .filter_map(|m| m.location.filename().and_then(parse_manifest_name))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The latest committed manifest of a chain, if any.
    pub async fn load_manifest(&self, chain: Chain) -> Result<Option<Manifest>> {
        // A manifest may be deleted between the listing and the read when a writer commits
        // concurrently; retry on a fresh listing then.
        for _ in 0..5 {
            let Some(&seq) = self.manifest_seqs(chain).await?.last() else {
                return Ok(None);
            };
            let path = layout::state_dir(&self.root, chain)
                .clone()
                .join(manifest_name(seq));
            let bytes = match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map_err(|e| Error::store(&path, e))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(Error::store(&path, e)),
            };
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|source| Error::CorruptManifest {
                    path: path.clone(),
                    source,
                })?;
            if manifest.schema_version != crate::SCHEMA_VERSION {
                return Err(Error::SchemaVersion {
                    path,
                    found: manifest.schema_version,
                    expected: crate::SCHEMA_VERSION,
                });
            }
            return Ok(Some(manifest));
        }
        Ok(None)
    }

    /// Commits `manifest` as the next sequence number: one create-only PUT, the atomic
    /// commit point. Older manifests are removed afterwards.
    pub async fn commit_manifest(&self, chain: Chain, manifest: &mut Manifest) -> Result<()> {
        manifest.seq += 1;
        let dir = layout::state_dir(&self.root, chain);
        let path = dir.clone().join(manifest_name(manifest.seq));
        let body = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(Bytes::from(body)), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                manifest.seq -= 1;
                return Err(Error::CommitConflict { path });
            }
            Err(e) => {
                manifest.seq -= 1;
                return Err(Error::store(&path, e));
            }
        }
        for seq in self.manifest_seqs(chain).await? {
            if seq < manifest.seq {
                let old = dir.clone().join(manifest_name(seq));
                if let Err(e) = self.store.delete(&old).await {
                    tracing::warn!(path = %old, error = %e, "could not delete superseded manifest");
                }
            }
        }
        Ok(())
    }

    /// Deletes every object under the chain's prefix that the manifest does not list
    /// (files of an interrupted run, superseded files, old manifests). Returns how many.
    pub async fn collect_garbage(&self, chain: Chain, manifest: &Manifest) -> Result<usize> {
        let prefix = self.root.clone().join(chain.as_str());
        let mut keep: HashSet<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
        if manifest.seq > 0 {
            keep.insert(
                layout::state_dir(&self.root, chain)
                    .join(manifest_name(manifest.seq))
                    .to_string(),
            );
        }
        let listed: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store(&prefix, e))?;
        let mut deleted = 0;
        for meta in listed {
            let is_newer_manifest = meta
                .location
                .filename()
                .and_then(parse_manifest_name)
                .is_some_and(|s| s > manifest.seq);
            if keep.contains(meta.location.as_ref()) || is_newer_manifest {
                continue;
            }
            self.store
                .delete(&meta.location)
                .await
                .map_err(|e| Error::store(&meta.location, e))?;
            tracing::debug!(path = %meta.location, "deleted uncommitted object");
            deleted += 1;
        }
        if let Some(dir) = &self.local_dir {
            deleted += remove_staging_files(&dir.join(chain.as_str()))?;
        }
        Ok(deleted)
    }
}

/// A local multipart upload writes `{name}#{n}` and renames it on completion; a killed
/// writer leaves the staging file behind, invisible to `list`. Removes them under `dir`.
fn remove_staging_files(dir: &std::path::Path) -> Result<usize> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let mut deleted = 0;
    for entry in entries {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if entry.file_type().map_err(io)?.is_dir() {
            deleted += remove_staging_files(&path)?;
            continue;
        }
        let name = entry.file_name();
        let is_staging = name
            .to_str()
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_staging {
            std::fs::remove_file(&path).map_err(io)?;
            tracing::debug!(path = %path.display(), "deleted staging file of an interrupted upload");
            deleted += 1;
        }
    }
    Ok(deleted)
}

impl std::fmt::Display for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn conformance(wh: Warehouse, extra_garbage: usize) {
        assert!(wh.load_manifest(Chain::Btc).await.expect("load").is_none());
        let mut m = Manifest::empty("btc", "regtest");
        let data = wh
            .root()
            .clone()
            .join("btc")
            .join("blocks")
            .join("part-0-0.parquet");
        let junk = wh
            .root()
            .clone()
            .join("btc")
            .join("blocks")
            .join("part-1-1.parquet");
        for p in [&data, &junk] {
            wh.store()
                .put(p, PutPayload::from_static(b"x"))
                .await
                .expect("put");
        }
        m.files.push(crate::FileEntry {
            table: "blocks".into(),
            path: data.to_string(),
            first_height: 0,
            last_height: 0,
            rows: 1,
            bytes: 1,
        });
        wh.commit_manifest(Chain::Btc, &mut m)
            .await
            .expect("commit 1");
        wh.commit_manifest(Chain::Btc, &mut m)
            .await
            .expect("commit 2");
        let loaded = wh
            .load_manifest(Chain::Btc)
            .await
            .expect("load")
            .expect("committed");
        assert_eq!(loaded, m);
        assert_eq!(loaded.seq, 2);
        // A second writer holding the old sequence number conflicts instead of overwriting.
        let mut stale = m.clone();
        stale.seq = 1;
        let err = wh
            .commit_manifest(Chain::Btc, &mut stale)
            .await
            .expect_err("conflict");
        assert!(matches!(err, Error::CommitConflict { .. }), "{err}");
        assert_eq!(
            wh.collect_garbage(Chain::Btc, &m).await.expect("gc"),
            1 + extra_garbage
        );
        assert!(wh.store().head(&junk).await.is_err());
        assert!(wh.store().head(&data).await.is_ok());
    }

    #[tokio::test]
    async fn runs_read_back_with_columns_in_the_order_asked() {
        use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
        let wh = Warehouse::open("memory://schemas-read-order").expect("open");
        let schema = crate::results::exits_schema();
        assert!(wh.read_latest("exits").await.expect("none").is_empty());
        let s = |v: &str| Arc::new(StringArray::from(vec![v])) as arrow::array::ArrayRef;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                s("btc"),
                s("1Addr"),
                s("exchange-1"),
                s("exchange"),
                Arc::new(Int64Array::from(vec![42])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(arrow::array::Int32Array::from(vec![3])),
                Arc::new(Int64Array::from(vec![50])),
                Arc::new(Int64Array::from(vec![0])),
                s("run"),
            ],
        )
        .expect("batch");
        let run = wh
            .write_run("exits", schema, &[batch], None)
            .await
            .expect("write");
        let latest = wh.latest_run("exits").await.expect("read").expect("run");
        assert_eq!(latest.run_id, run);
        assert_eq!(latest.rows, 1);
        // Asked out of file order: the batch follows the request.
        let b = &wh
            .read_columns(&latest.files[0], &["tainted_value", "address"])
            .await
            .expect("read")[0];
        assert_eq!(b.schema().field(0).name(), "tainted_value");
        assert_eq!(b.column(1).as_string::<i32>().value(0), "1Addr");
        let err = wh
            .read_columns(&latest.files[0], &["nope"])
            .await
            .expect_err("missing column");
        assert!(err.to_string().contains("missing column nope"), "{err}");
    }

    #[tokio::test]
    async fn memory_conformance() {
        conformance(
            Warehouse::open("memory://schemas-conformance").expect("open"),
            0,
        )
        .await;
    }

    #[tokio::test]
    async fn local_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::open(dir.path().to_str().expect("utf8")).expect("open");
        assert!(wh.base_url().as_str().starts_with("file:///"));
        let staging = dir.path().join("btc/outputs/part-1-2.parquet#7");
        std::fs::create_dir_all(staging.parent().expect("parent")).expect("mkdir");
        std::fs::write(&staging, b"half an upload").expect("write");
        conformance(wh, 1).await;
        assert!(
            !staging.exists(),
            "staging file of a killed upload is collected"
        );
    }

    #[test]
    fn bad_scheme_is_a_clear_error() {
        let err = Warehouse::open("ftp://x/y").expect_err("unsupported");
        assert!(
            err.to_string().contains("unsupported scheme `ftp`"),
            "{err}"
        );
    }
}
