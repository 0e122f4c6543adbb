//! Opening a warehouse from a URL and the commit protocol on top of `object_store`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::lease::WriterLease;
use crate::manifest::{manifest_name, parse_manifest_name};
use crate::{Chain, Error, Manifest, Result, layout};

/// The per-request timeout of object stores (default 30 s; `--store-timeout`).
static STORE_TIMEOUT: LazyLock<Mutex<std::time::Duration>> =
    LazyLock::new(|| Mutex::new(std::time::Duration::from_secs(30)));

/// Sets the object stores' per-request timeout for warehouses opened afterwards: connects
/// get a fifth of it (at most 10 s) and retries stop after three times it, so an endpoint
/// that never answers fails in bounded time, naming the path.
pub fn set_store_timeout(t: std::time::Duration) {
    *STORE_TIMEOUT.lock().unwrap_or_else(|p| p.into_inner()) = t;
}

/// The timeouts as client settings (applied over what the builders read from the
/// environment, so `*_ALLOW_HTTP` and the rest still count), and the retry bound.
fn client_settings() -> (
    [(object_store::ClientConfigKey, String); 2],
    object_store::RetryConfig,
) {
    let t = *STORE_TIMEOUT.lock().unwrap_or_else(|p| p.into_inner());
    let connect = (t / 5).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(10),
    );
    let keys = [
        (
            object_store::ClientConfigKey::Timeout,
            format!("{}ms", t.as_millis()),
        ),
        (
            object_store::ClientConfigKey::ConnectTimeout,
            format!("{}ms", connect.as_millis()),
        ),
    ];
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: t * 3,
        ..Default::default()
    };
    (keys, retry)
}

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
        let (client, retry) = client_settings();
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
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env().with_url(url).with_retry(retry);
                for (k, v) in client {
                    b = b.with_config(object_store::aws::AmazonS3ConfigKey::Client(k), v);
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry);
                for (k, v) in client {
                    b = b.with_config(object_store::gcp::GoogleConfigKey::Client(k), v);
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
            "az" | "abfs" | "abfss" | "azure" => {
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry);
                for (k, v) in client {
                    b = b.with_config(object_store::azure::AzureConfigKey::Client(k), v);
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
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

    /// Opens a warehouse that must already exist: for a local path, a missing directory is
    /// an error (a typo must not read as an empty warehouse); for object stores as
    /// [`Warehouse::open`].
    pub fn open_existing(url: &str) -> Result<Self> {
        if !url.contains("://") || url.starts_with("file://") {
            let path = url.strip_prefix("file://").unwrap_or(url);
            let path = if path.is_empty() { "." } else { path };
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::NoWarehouse {
                        url: url.to_string(),
                        reason: "not a directory".into(),
                    });
                }
                Err(e) => {
                    return Err(Error::NoWarehouse {
                        url: url.to_string(),
                        reason: format!("{e} (index a chain into it first: `ferret index`)"),
                    });
                }
            }
        }
        Self::open(url)
    }

    /// The object path of a warehouse-relative path (as manifests and run pointers hold
    /// them), refusing paths that climb out of the warehouse.
    pub fn resolve(&self, relative: &str) -> Result<Path> {
        let rel = Path::parse(relative).map_err(|e| Error::Damaged {
            what: format!("the manifest lists `{relative}`, not a path inside the warehouse: {e}"),
        })?;
        if rel.as_ref().is_empty() {
            return Err(Error::Damaged {
                what: "the manifest lists an empty path".into(),
            });
        }
        Ok(self.root.parts().chain(rel.parts()).collect())
    }

    /// `path` relative to the warehouse root.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// Takes the writer lease of a chain's tables ([`crate::lease`]): at most one writer
    /// at a time, refused otherwise.
    pub async fn writer_lease(&self, chain: Chain) -> Result<WriterLease> {
        let attempt = crate::results::new_run_id();
        match &self.local_dir {
            Some(dir) => WriterLease::local(
                chain.as_str(),
                &dir.join(chain.as_str()).join("_state"),
                &attempt,
            ),
            None => {
                WriterLease::remote(
                    chain.as_str(),
                    Arc::clone(&self.store),
                    layout::state_dir(&self.root, chain).join(LEASE_OBJECT),
                    &attempt,
                )
                .await
            }
        }
    }

    /// Takes the lease of one case (`results/cases/{case}/_state`): two runs of a case
    /// never overlap (a scheduled run and a manual one, two schedulers).
    pub async fn case_lease(&self, case: &str) -> Result<WriterLease> {
        let attempt = crate::results::new_run_id();
        let scope = format!("cases/{case}");
        let state = crate::results::job_dir(&self.root, &scope).join("_state");
        match &self.local_dir {
            Some(dir) => WriterLease::local(
                &scope,
                &dir.join("results").join("cases").join(case).join("_state"),
                &attempt,
            ),
            None => {
                WriterLease::remote(
                    &scope,
                    Arc::clone(&self.store),
                    state.join(LEASE_OBJECT),
                    &attempt,
                )
                .await
            }
        }
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

    /// The Parquet footer (row groups and their statistics) of a committed file.
    pub async fn parquet_metadata(
        &self,
        path: &str,
    ) -> Result<Arc<parquet::file::metadata::ParquetMetaData>> {
        Ok(Arc::clone(self.parquet_builder(path).await?.metadata()))
    }

    /// The named columns of some row groups of a committed file, in the order given.
    pub async fn read_row_groups(
        &self,
        path: &str,
        columns: &[&str],
        row_groups: Vec<usize>,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        self.read_parquet_groups(path, Some(columns), Some(row_groups), None)
            .await
    }

    /// A committed file's footer, decoded once for many [`Warehouse::read_row_groups_with`].
    pub async fn reader_metadata(
        &self,
        path: &str,
    ) -> Result<parquet::arrow::arrow_reader::ArrowReaderMetadata> {
        let meta = self.parquet_metadata(path).await?;
        parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(meta, Default::default())
            .map_err(|e| Error::CorruptFile {
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// [`Warehouse::read_row_groups`] with the file's footer already decoded.
    pub async fn read_row_groups_with(
        &self,
        path: &str,
        meta: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
        columns: &[&str],
        row_groups: Vec<usize>,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        self.read_parquet_groups(path, Some(columns), Some(row_groups), Some(meta))
            .await
    }

    /// The row groups among `row_groups` of a committed file whose Bloom filter on
    /// `column` may hold one of `values` (all of them when the column has no filter).
    pub async fn bloom_candidates(
        &self,
        path: &str,
        column: &str,
        row_groups: &[usize],
        values: &[&str],
    ) -> Result<Vec<usize>> {
        let mut b = self.parquet_builder(path).await?;
        let corrupt = |reason: String| Error::CorruptFile {
            path: path.to_string(),
            reason,
        };
        let col = b
            .parquet_schema()
            .columns()
            .iter()
            .position(|c| c.path().string() == column)
            .ok_or_else(|| corrupt(format!("missing column {column}")))?;
        let mut out = Vec::new();
        for &rg in row_groups {
            if rg >= b.metadata().num_row_groups() {
                return Err(corrupt(format!("no row group {rg}")));
            }
            let keep = match b
                .get_row_group_column_bloom_filter(rg, col)
                .await
                .map_err(|e| corrupt(e.to_string()))?
            {
                Some(f) => values.iter().any(|v| f.check(*v)),
                None => true,
            };
            if keep {
                out.push(rg);
            }
        }
        Ok(out)
    }

    #[allow(deprecated)]
    async fn parquet_builder(
        &self,
        path: &str,
    ) -> Result<
        parquet::arrow::ParquetRecordBatchStreamBuilder<
            parquet::arrow::async_reader::ParquetObjectReader,
        >,
    > {
        // The object_store reader is deprecated upstream in favour of hand-written readers;
        // it is still the simplest correct way to stream a committed file.
        let object = self.resolve(path)?;
        #[allow(deprecated)]
        let reader =
            parquet::arrow::async_reader::ParquetObjectReader::new(Arc::clone(&self.store), object);
        parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| Error::CorruptFile {
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// Reads one Parquet file: the named columns in the order given, or all of them.
    async fn read_parquet(
        &self,
        path: &str,
        columns: Option<&[&str]>,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        self.read_parquet_groups(path, columns, None, None).await
    }

    async fn read_parquet_groups(
        &self,
        path: &str,
        columns: Option<&[&str]>,
        row_groups: Option<Vec<usize>>,
        meta: Option<&parquet::arrow::arrow_reader::ArrowReaderMetadata>,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        use parquet::arrow::ProjectionMask;
        let corrupt = |reason: String| Error::CorruptFile {
            path: path.to_string(),
            reason,
        };
        let mut builder = match meta {
            Some(m) => {
                let object = self.resolve(path)?;
                #[allow(deprecated)]
                let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
                    Arc::clone(&self.store),
                    object,
                );
                parquet::arrow::ParquetRecordBatchStreamBuilder::new_with_metadata(
                    reader,
                    m.clone(),
                )
            }
            None => self.parquet_builder(path).await?,
        };
        if let Some(rgs) = row_groups {
            let n = builder.metadata().num_row_groups();
            if let Some(rg) = rgs.iter().find(|&&rg| rg >= n) {
                return Err(corrupt(format!("no row group {rg} (the file has {n})")));
            }
            builder = builder.with_row_groups(rgs);
        }
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
        Ok(self.latest_runs().await?.remove(job))
    }

    /// The run every job's plain table shows, from one results head: one consistent
    /// snapshot (a taint run's `taint` and `exits` are always the same run). Before the
    /// first head was written, the per-job `_latest.json` pointers of older versions.
    /// Fails closed like a chain's manifest: a run's file that is missing, or whose size
    /// differs from the recorded one, is an error naming it.
    pub async fn latest_runs(&self) -> Result<BTreeMap<String, crate::results::LatestRun>> {
        let runs = match self.results_head().await? {
            Some(h) => h.runs,
            None => self.legacy_latest_runs().await?,
        };
        for (job, run) in &runs {
            // A job that keeps every run (a case's history) lists a file per run: only
            // the newest run's are checked here, so opening the warehouse does not slow
            // down as cases age (`ferret verify` still reads every file).
            let marker = format!("/run={}/", run.run_id);
            let history = crate::results::keeps_history(job);
            for (i, f) in run.files.iter().enumerate() {
                if history && !f.contains(&marker) {
                    continue;
                }
                let path = self.resolve(f)?;
                let meta = match self.store.head(&path).await {
                    Ok(m) => m,
                    Err(object_store::Error::NotFound { .. }) => {
                        return Err(Error::Damaged {
                            what: format!(
                                "result file `{f}` of {job} run {} is missing",
                                run.run_id
                            ),
                        });
                    }
                    Err(e) => return Err(Error::store(&path, e)),
                };
                if let Some(c) = run.checks.get(i)
                    && c.bytes != meta.size
                {
                    return Err(Error::Damaged {
                        what: format!(
                            "result file `{f}` of {job} run {} is {} bytes; the results head recorded {}",
                            run.run_id, meta.size, c.bytes
                        ),
                    });
                }
            }
        }
        Ok(runs)
    }

    /// Reads every file of every job's current run whole and checks it against its
    /// recorded SHA-256 (runs written before hashes were recorded count as unchecked).
    pub async fn verify_results(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for (job, run) in self.latest_runs().await? {
            for (i, f) in run.files.iter().enumerate() {
                let Some(want) = run.checks.get(i) else {
                    report.unchecked += 1;
                    continue;
                };
                let (got, len) = self.sha256_of(f).await?;
                if got != want.sha256 {
                    return Err(Error::Damaged {
                        what: format!(
                            "result file `{f}` of {job} run {} has SHA-256 {got}; the results head recorded {} (its bytes changed after it was written)",
                            run.run_id, want.sha256
                        ),
                    });
                }
                report.files += 1;
                report.bytes += len;
            }
        }
        Ok(report)
    }

    /// The newest results head, if any (fail closed like manifests: listed but unreadable
    /// is an error).
    async fn results_head(&self) -> Result<Option<ResultsHead>> {
        let dir = crate::results::head_dir(&self.root);
        let mut found = None;
        for attempt in 0..=EMPTY_LISTING_RETRIES {
            found = self
                .newest_of(
                    &dir,
                    crate::results::parse_head_name,
                    crate::results::head_name,
                    "results head",
                )
                .await?;
            // No head listed while results exist: a listing that raced a commit (the new
            // head created and the old one deleted while the directory was read) can
            // miss both. Look again before reading it as "no runs".
            if found.is_some()
                || !self
                    .any_object_under(&self.root.clone().join("results"))
                    .await?
            {
                break;
            }
            if attempt < EMPTY_LISTING_RETRIES {
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
            }
        }
        let Some((path, bytes)) = found else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::CorruptManifest { path, source })
    }

    /// What a reader would see now, cheaply: the newest manifest sequence of each chain
    /// and of the results head (listings only, nothing read). Two calls that return the
    /// same value name the same committed snapshot, because commits are create-only
    /// objects with increasing sequence numbers; a server compares it before each
    /// statement and reloads the catalog only when it changed.
    pub async fn heads(&self) -> Result<Heads> {
        let mut chains = Vec::with_capacity(Chain::all().len());
        for &chain in Chain::all() {
            let dir = layout::state_dir(&self.root, chain);
            chains.push(
                self.seqs_in(&dir, parse_manifest_name)
                    .await?
                    .last()
                    .copied(),
            );
        }
        Ok(Heads {
            chains,
            results: self.head_seqs().await?.last().copied(),
        })
    }

    async fn head_seqs(&self) -> Result<Vec<u64>> {
        self.seqs_in(
            &crate::results::head_dir(&self.root),
            crate::results::parse_head_name,
        )
        .await
    }

    /// Whether anything is stored under `prefix` (one listed object is enough).
    async fn any_object_under(&self, prefix: &Path) -> Result<bool> {
        let mut listed = self.store.list(Some(prefix));
        match listed.next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(Error::store(prefix, e)),
        }
    }

    /// The sequence numbers of the objects in `dir` whose names `parse` reads, ascending.
    async fn seqs_in(&self, dir: &Path, parse: fn(&str) -> Option<u64>) -> Result<Vec<u64>> {
        let listed: Vec<_> = self
            .store
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|e| Error::store(dir, e))?;
        let mut seqs: Vec<u64> = listed
            .iter()
            .filter_map(|m| m.location.filename().and_then(parse))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The newest sequenced object in `dir` (manifests, results heads) and its bytes;
    /// `None` when there is none. One may be deleted between the listing and the read when
    /// a writer commits concurrently: retried on a fresh listing, and listed but unreadable
    /// five times is damage, never "none".
    async fn newest_of(
        &self,
        dir: &Path,
        parse: fn(&str) -> Option<u64>,
        name: fn(u64) -> String,
        what: &str,
    ) -> Result<Option<(Path, Bytes)>> {
        let mut unreadable = None;
        for _ in 0..5 {
            let Some(&seq) = self.seqs_in(dir, parse).await?.last() else {
                return Ok(None);
            };
            let path = dir.clone().join(name(seq));
            match self.store.get(&path).await {
                Ok(r) => {
                    let bytes = r.bytes().await.map_err(|e| Error::store(&path, e))?;
                    return Ok(Some((path, bytes)));
                }
                Err(object_store::Error::NotFound { .. }) => unreadable = Some(path),
                Err(e) => return Err(Error::store(&path, e)),
            }
        }
        Err(Error::Damaged {
            what: format!(
                "{}: the newest {what} was listed but could not be read in five tries",
                unreadable.map_or_else(|| dir.to_string(), |p| p.to_string())
            ),
        })
    }

    /// The `results/{job}/_latest.json` pointers older versions wrote.
    async fn legacy_latest_runs(&self) -> Result<BTreeMap<String, crate::results::LatestRun>> {
        let prefix = self.root.clone().join("results");
        crate::failpoint::hit("gc-listing");
        let listed: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store(&prefix, e))?;
        let mut out = BTreeMap::new();
        for meta in listed {
            if meta.location.filename() != Some("_latest.json") {
                continue;
            }
            let rel = self.relative(&meta.location);
            let Some(job) = rel
                .split('/')
                .nth(1)
                .filter(|_| rel.split('/').count() == 3)
            else {
                continue;
            };
            let path = meta.location.clone();
            let bytes = self
                .store
                .get(&path)
                .await
                .map_err(|e| Error::store(&path, e))?
                .bytes()
                .await
                .map_err(|e| Error::store(&path, e))?;
            let mut run: crate::results::LatestRun = serde_json::from_slice(&bytes)
                .map_err(|source| Error::CorruptManifest { path, source })?;
            // Pointers written before paths were warehouse-relative held object paths.
            for f in &mut run.files {
                if let Some(rel) = self.relative_of_legacy(f, "results") {
                    *f = rel;
                }
            }
            out.insert(job.to_string(), run);
        }
        Ok(out)
    }

    /// A legacy (format 1) object path as a warehouse-relative one: the root stripped, or
    /// (a moved warehouse) everything from the first segment named `top`.
    fn relative_of_legacy(&self, p: &str, top: &str) -> Option<String> {
        let root = self.root.as_ref();
        if !root.is_empty()
            && let Some(rest) = p.strip_prefix(root).and_then(|r| r.strip_prefix('/'))
        {
            return Some(rest.to_string());
        }
        let parts: Vec<&str> = p.split('/').collect();
        let at = parts.iter().position(|s| *s == top)?;
        (at > 0).then(|| parts[at..].join("/"))
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
        self.write_runs_as(run_id, &[(job, schema, batches)], params)
            .await
    }

    /// Writes one run of several jobs (a taint run's `taint` and `exits`, a clustering's
    /// four tables) and points every job's plain table at it in one commit: a reader sees
    /// all of them old or all of them new.
    pub async fn write_runs_as(
        &self,
        run_id: &str,
        parts: &[(
            &str,
            arrow::datatypes::SchemaRef,
            &[arrow::array::RecordBatch],
        )],
        params: Option<serde_json::Value>,
    ) -> Result<()> {
        let mut runs = Vec::with_capacity(parts.len());
        for (job, schema, batches) in parts {
            let (file, rows, check) = self
                .write_run_file(job, run_id, schema.clone(), batches)
                .await?;
            runs.push((
                job.to_string(),
                crate::results::LatestRun {
                    run_id: run_id.to_string(),
                    files: vec![file],
                    rows,
                    params: params.clone(),
                    checks: vec![check],
                },
            ));
        }
        self.commit_runs(runs).await
    }

    /// One run's Parquet file of a job; returns its warehouse-relative path, rows, size
    /// and SHA-256.
    async fn write_run_file(
        &self,
        job: &str,
        run_id: &str,
        schema: arrow::datatypes::SchemaRef,
        batches: &[arrow::array::RecordBatch],
    ) -> Result<(String, u64, crate::results::FileCheck)> {
        let mut w = self.run_writer(job, run_id, schema)?;
        for b in batches {
            w.write(b).await?;
        }
        w.finish().await
    }

    /// A streaming writer of one run's file of `job`: rows are written as they come (a
    /// run whose results outgrow memory), and nothing is visible until
    /// [`Warehouse::commit_run_files`] points the job at the finished file.
    pub fn run_writer(
        &self,
        job: &str,
        run_id: &str,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<RunWriter> {
        let path = crate::results::job_dir(&self.root, job)
            .join(format!("run={run_id}"))
            .join("part-0.parquet");
        let (out, digest) = crate::checksum::HashingWriter::new(
            object_store::buffered::BufWriter::new(Arc::clone(&self.store), path.clone()),
        );
        // Row groups of 64 Ki rows: the writer buffers one, so a streamed run's memory
        // stays small whatever its size (and readers can skip by statistics).
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .set_max_row_group_row_count(Some(64 * 1024))
            .build();
        let w = parquet::arrow::AsyncArrowWriter::try_new(out, schema, Some(props))
            .map_err(|e| run_write_err(&path, e))?;
        Ok(RunWriter {
            relative: self.relative(&path),
            path,
            writer: w,
            digest,
            rows: 0,
        })
    }

    /// Commits streamed run files (from [`Warehouse::run_writer`]), one per job, as one
    /// run: every job's plain table moves to it in one commit.
    pub async fn commit_run_files(
        &self,
        run_id: &str,
        files: Vec<(String, WrittenRunFile)>,
        params: Option<serde_json::Value>,
    ) -> Result<()> {
        let runs = files
            .into_iter()
            .map(|(job, f)| {
                (
                    job,
                    crate::results::LatestRun {
                        run_id: run_id.to_string(),
                        files: vec![f.0],
                        rows: f.1,
                        params: params.clone(),
                        checks: vec![f.2],
                    },
                )
            })
            .collect();
        self.commit_runs(runs).await
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

    /// Points the given jobs at their runs in one commit: the next results head, a
    /// create-only PUT carrying every other job's pointer forward (retried on a fresh
    /// head when another writer committed first, so concurrent jobs never lose each
    /// other's runs). Then older heads and runs beyond retention are removed.
    pub async fn commit_runs(&self, runs: Vec<(String, crate::results::LatestRun)>) -> Result<()> {
        self.commit_runs_expecting(runs, &[]).await
    }

    /// [`Warehouse::commit_runs`], only while each job of `expect` still points at the
    /// given run (`None`: no run yet): a writer that built on a job's current run (a
    /// case appending to its history) never overwrites a run committed meanwhile by
    /// another (a run that outlived its lease). Fails with [`Error::CommitConflict`]
    /// naming the job otherwise, committing nothing.
    pub async fn commit_runs_expecting(
        &self,
        runs: Vec<(String, crate::results::LatestRun)>,
        expect: &[(String, Option<String>)],
    ) -> Result<()> {
        crate::failpoint::hit("before-results-commit");
        let dir = crate::results::head_dir(&self.root);
        for _ in 0..32 {
            let (seq, mut all) = match self.results_head().await? {
                Some(h) => (h.seq, h.runs),
                None => (0, self.legacy_latest_runs().await?),
            };
            for (job, want) in expect {
                let have = all.get(job).map(|r| &r.run_id);
                if have != want.as_ref() {
                    return Err(Error::CommitConflict {
                        path: crate::results::job_dir(&self.root, job),
                    });
                }
            }
            for (job, run) in &runs {
                all.insert(job.clone(), run.clone());
            }
            let head = ResultsHead {
                format: 1,
                seq: seq + 1,
                runs: all,
            };
            let path = dir.clone().join(crate::results::head_name(head.seq));
            let body = serde_json::to_vec_pretty(&head).expect("serialises");
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&path, PutPayload::from(Bytes::from(body)), opts)
                .await
            {
                Ok(_) => {
                    crate::failpoint::hit("after-results-commit");
                    self.after_results_commit(&head).await;
                    return Ok(());
                }
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(Error::store(&path, e)),
            }
        }
        Err(Error::CommitConflict {
            path: dir.join("head"),
        })
    }

    /// Best effort after a results commit: older heads, and runs beyond retention
    /// ([`crate::results::keep_runs`] per job besides the current one, and only those
    /// older than [`crate::results::RUN_GRACE`], which no reader can still be on).
    async fn after_results_commit(&self, head: &ResultsHead) {
        let dir = crate::results::head_dir(&self.root);
        if let Ok(seqs) = self.head_seqs().await {
            for seq in seqs.into_iter().filter(|&s| s < head.seq) {
                let old = dir.clone().join(crate::results::head_name(seq));
                if let Err(e) = self.store.delete(&old).await {
                    tracing::warn!(path = %old, error = %e, "could not delete a superseded results head");
                }
            }
        }
        let keep = crate::results::keep_runs();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        for (job, current) in &head.runs {
            if crate::results::keeps_history(job) {
                continue;
            }
            let prefix = crate::results::job_dir(&self.root, job);
            let Ok(listed) = self.store.list(Some(&prefix)).try_collect::<Vec<_>>().await else {
                continue;
            };
            // run id → its objects; run ids start with their milliseconds.
            let mut by_run: BTreeMap<String, Vec<Path>> = BTreeMap::new();
            for meta in listed {
                let rel = self.relative(&meta.location);
                if let Some(run) = rel
                    .split('/')
                    .find_map(|seg| seg.strip_prefix("run="))
                    .map(str::to_string)
                {
                    by_run.entry(run).or_default().push(meta.location);
                }
            }
            let mut older: Vec<&String> = by_run.keys().filter(|r| **r != current.run_id).collect();
            // Newest first (ids sort by time).
            older.sort_by(|a, b| b.cmp(a));
            for run in older.into_iter().skip(keep) {
                let started: u64 = run
                    .split('-')
                    .next()
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(u64::MAX);
                if now_ms.saturating_sub(started) < crate::results::RUN_GRACE.as_millis() as u64 {
                    continue;
                }
                for p in &by_run[run] {
                    if let Err(e) = self.store.delete(p).await {
                        tracing::warn!(path = %p, error = %e, "could not delete an old run");
                    }
                }
                tracing::debug!(job, run, "deleted a run beyond retention");
            }
        }
    }

    /// Lists the manifests of a chain, newest last.
    async fn manifest_seqs(&self, chain: Chain) -> Result<Vec<u64>> {
        self.seqs_in(&layout::state_dir(&self.root, chain), parse_manifest_name)
            .await
    }

    /// The latest committed manifest of a chain, if any, verified against the store: every
    /// file it lists must exist with the size it recorded. Fails closed: an unreadable
    /// newest manifest, an unknown format, a missing or resized file, or data files
    /// without a manifest after a first commit are errors naming what is wrong, never an
    /// empty chain.
    pub async fn load_manifest(&self, chain: Chain) -> Result<Option<Manifest>> {
        let dir = layout::state_dir(&self.root, chain);
        let mut attempt = 0;
        let (path, bytes) = loop {
            if let Some(found) = self
                .newest_of(&dir, parse_manifest_name, manifest_name, "manifest")
                .await?
            {
                break found;
            }
            match self.check_never_committed(chain).await {
                Ok(()) => return Ok(None),
                // A listing that raced a commit (the new manifest created and the old
                // one deleted while the directory was read) can miss both: look again
                // before calling it damage.
                Err(_) if attempt < EMPTY_LISTING_RETRIES => {
                    tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let mut manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| Error::CorruptManifest {
                path: path.clone(),
                source,
            })?;
        if manifest.format == 0 || manifest.format > crate::manifest::MANIFEST_FORMAT {
            return Err(Error::ManifestFormat {
                path,
                found: manifest.format,
            });
        }
        if manifest.schema_version != crate::SCHEMA_VERSION {
            return Err(Error::SchemaVersion {
                path,
                found: manifest.schema_version,
                expected: crate::SCHEMA_VERSION,
            });
        }
        if manifest.format == 1 {
            // Object paths (the warehouse's location at the time) → relative ones.
            for f in &mut manifest.files {
                f.path = self
                    .relative_of_legacy(&f.path, chain.as_str())
                    .ok_or_else(|| Error::Damaged {
                        what: format!("{path}: lists `{}`, outside the {chain} tables", f.path),
                    })?;
            }
            manifest.format = crate::manifest::MANIFEST_FORMAT;
        }
        self.verify_files(chain, &manifest).await?;
        Ok(Some(manifest))
    }

    /// Reads every committed file of `chain` whole and checks its SHA-256 against the
    /// manifest (after the sizes, which every read checks). Returns what was checked; a
    /// mismatch is a [`Error::Damaged`] naming the file.
    pub async fn verify_checksums(&self, chain: Chain) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let Some(m) = self.load_manifest(chain).await? else {
            return Ok(report);
        };
        for f in &m.files {
            let Some(want) = &f.sha256 else {
                report.unchecked += 1;
                continue;
            };
            let (got, len) = self.sha256_of(&f.path).await?;
            if &got != want {
                return Err(Error::Damaged {
                    what: format!(
                        "committed file `{}` has SHA-256 {got}; the manifest recorded {want} (its bytes changed after it was written)",
                        f.path
                    ),
                });
            }
            report.files += 1;
            report.bytes += len;
        }
        Ok(report)
    }

    /// Checks a run's file against the size and SHA-256 recorded when it was written (for
    /// state a run goes on from, where silent damage would carry into every later run).
    pub async fn check_run_file(&self, rel: &str, want: &crate::results::FileCheck) -> Result<()> {
        let (got, len) = self.sha256_of(rel).await?;
        if got != want.sha256 || len != want.bytes {
            return Err(Error::CorruptFile {
                path: rel.to_string(),
                reason: format!(
                    "{len} bytes with SHA-256 {got}; written as {} bytes with SHA-256 {}",
                    want.bytes, want.sha256
                ),
            });
        }
        Ok(())
    }

    /// SHA-256 (lowercase hex) and length of the warehouse-relative file `rel`, read whole.
    async fn sha256_of(&self, rel: &str) -> Result<(String, u64)> {
        let path = self.resolve(rel)?;
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(|e| Error::store(&path, e))?
            .bytes()
            .await
            .map_err(|e| Error::store(&path, e))?;
        Ok((crate::checksum::sha256_hex(&bytes), bytes.len() as u64))
    }

    /// Every file the manifest lists exists with its recorded size (one listing).
    async fn verify_files(&self, chain: Chain, manifest: &Manifest) -> Result<()> {
        if manifest.files.is_empty() {
            return Ok(());
        }
        let prefix = self.root.clone().join(chain.as_str());
        let sizes: HashMap<String, u64> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .map_err(|e| Error::store(&prefix, e))?;
        for f in &manifest.files {
            let object = self.resolve(&f.path)?;
            match sizes.get(object.as_ref()) {
                None => {
                    return Err(Error::Damaged {
                        what: format!(
                            "committed file `{}` ({} rows of {}.{}) is missing",
                            f.path, f.rows, chain, f.table
                        ),
                    });
                }
                Some(&n) if n != f.bytes => {
                    return Err(Error::Damaged {
                        what: format!(
                            "committed file `{}` is {n} bytes; the manifest recorded {}",
                            f.path, f.bytes
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// No manifest: fine for a chain never committed (files of an interrupted first run
    /// are garbage), damage once the chain's first commit left its marker.
    async fn check_never_committed(&self, chain: Chain) -> Result<()> {
        let state = layout::state_dir(&self.root, chain);
        // `_state` replaced by a file reads as "no manifests" too.
        if self.store.head(&state).await.is_ok() {
            return Err(Error::Damaged {
                what: format!("{state} is a file, not the directory of manifests"),
            });
        }
        let marker = state.clone().join(COMMITTED_MARKER);
        match self.store.head(&marker).await {
            Ok(_) => Err(Error::Damaged {
                what: format!(
                    "{chain} was committed before ({marker} exists) but has no readable manifest in {state}: restore the manifest, or delete `{chain}/` to index it again"
                ),
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(&marker, e)),
        }
    }

    /// Commits `manifest` as the next sequence number: one create-only PUT, the atomic
    /// commit point, by the holder of the chain's writer lease (checked first). Older
    /// manifests are removed afterwards.
    pub async fn commit_manifest(
        &self,
        chain: Chain,
        manifest: &mut Manifest,
        lease: &WriterLease,
    ) -> Result<()> {
        lease.check().await?;
        crate::failpoint::hit("before-manifest-put");
        lease.ensure_valid().await?;
        manifest.seq += 1;
        manifest.format = crate::manifest::MANIFEST_FORMAT;
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
            Ok(_) => crate::failpoint::hit("after-manifest-put"),
            Err(object_store::Error::AlreadyExists { .. }) => {
                manifest.seq -= 1;
                return Err(Error::CommitConflict { path });
            }
            Err(e) => {
                manifest.seq -= 1;
                return Err(Error::store(&path, e));
            }
        }
        if manifest.seq == 1
            || self
                .store
                .head(&dir.clone().join(COMMITTED_MARKER))
                .await
                .is_err()
        {
            // From now on a missing manifest is damage, not an empty chain.
            let marker = dir.clone().join(COMMITTED_MARKER);
            self.store
                .put(&marker, PutPayload::from_static(b"committed\n"))
                .await
                .map_err(|e| Error::store(&marker, e))?;
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
    /// (files of an interrupted or overlapped run, superseded files, old manifests), by
    /// the holder of the chain's writer lease: while it holds the lease no other writer
    /// can have files in flight. Returns how many.
    pub async fn collect_garbage(
        &self,
        chain: Chain,
        manifest: &Manifest,
        lease: &WriterLease,
    ) -> Result<usize> {
        lease.check().await?;
        let prefix = self.root.clone().join(chain.as_str());
        let state = layout::state_dir(&self.root, chain);
        let mut keep: HashSet<String> = manifest
            .files
            .iter()
            .map(|f| self.resolve(&f.path).map(|p| p.to_string()))
            .collect::<Result<_>>()?;
        for name in [LEASE_OBJECT, LOCK_FILE, COMMITTED_MARKER] {
            keep.insert(state.clone().join(name).to_string());
        }
        if manifest.seq > 0 {
            keep.insert(state.clone().join(manifest_name(manifest.seq)).to_string());
        }
        crate::failpoint::hit("gc-listing");
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
            crate::failpoint::hit("gc-deleting");
            // A writer paused past its lease (and perhaps taken over) deletes nothing.
            lease.ensure_valid().await?;
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

/// The committed heads of a warehouse ([`Warehouse::heads`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heads {
    /// The newest manifest sequence of each chain, in [`Chain::all`] order.
    pub chains: Vec<Option<u64>>,
    /// The newest results head.
    pub results: Option<u64>,
}

/// What [`Warehouse::verify_checksums`] checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files whose SHA-256 matched.
    pub files: u64,
    /// Files written before checksums were recorded (their sizes were checked).
    pub unchecked: u64,
    pub bytes: u64,
}

/// Which run every job's plain table shows: `results/_state/head-{seq:020}.json`, committed
/// with a create-only PUT like a chain's manifest.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct ResultsHead {
    format: u32,
    seq: u64,
    runs: BTreeMap<String, crate::results::LatestRun>,
}

/// The object-store writer lease of a chain, in its `_state`.
const LEASE_OBJECT: &str = "lease.json";
/// The local writer lock of a chain, in its `_state` (never deleted: the lock is on it).
const LOCK_FILE: &str = "writer.lock";
/// Written at a chain's first commit: from then on a missing manifest is damage.
const COMMITTED_MARKER: &str = "committed";

/// How many times a reader lists again (after 10, 20, 40, 80 ms) when a directory of
/// sequenced objects lists empty though something was committed. Directory listings are
/// not snapshots: one taken while a writer creates the next manifest and deletes the
/// previous one can return neither.
const EMPTY_LISTING_RETRIES: u32 = 4;

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

fn run_write_err(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::CorruptFile {
        path: path.to_string(),
        reason: format!("writing: {e}"),
    }
}

/// A finished run file: warehouse-relative path, rows, size and SHA-256.
pub type WrittenRunFile = (String, u64, crate::results::FileCheck);

/// One run file being written (see [`Warehouse::run_writer`]).
pub struct RunWriter {
    path: Path,
    relative: String,
    writer: parquet::arrow::AsyncArrowWriter<
        crate::checksum::HashingWriter<object_store::buffered::BufWriter>,
    >,
    digest: crate::checksum::Digest,
    rows: u64,
}

impl RunWriter {
    /// Appends rows.
    pub async fn write(&mut self, batch: &arrow::array::RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|e| run_write_err(&self.path, e))
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the file (still invisible to readers until committed).
    pub async fn finish(self) -> Result<WrittenRunFile> {
        self.writer
            .close()
            .await
            .map_err(|e| run_write_err(&self.path, e))?;
        crate::failpoint::hit("run-file-written");
        let check = crate::results::FileCheck {
            bytes: self.digest.bytes(),
            sha256: self.digest.hex(),
        };
        Ok((self.relative, self.rows, check))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn result_runs_commit_together_keep_each_other_and_expire() {
        let wh = Warehouse::open("memory://schemas-results-head").expect("open");
        let run = |id: &str, job: &str| crate::results::LatestRun {
            run_id: id.into(),
            files: vec![format!("results/{job}/run={id}/part-0.parquet")],
            rows: 1,
            params: None,
            checks: Vec::new(),
        };
        // Readers check that a run's files exist: write them.
        let touch = |r: &crate::results::LatestRun| {
            let (wh, files) = (wh.clone(), r.files.clone());
            async move {
                for f in files {
                    let p = wh.resolve(&f).expect("p");
                    wh.store()
                        .put(&p, PutPayload::from_static(b"x"))
                        .await
                        .expect("put");
                }
            }
        };
        // A pointer of the older layout is read, and carried into the first head.
        let legacy = crate::results::latest_path(wh.root(), "labels");
        let mut old = run("5-aa", "labels");
        old.files = vec![format!("some/where/results/labels/run=5-aa/part-0.parquet")];
        wh.store()
            .put(
                &legacy,
                PutPayload::from(serde_json::to_vec(&old).expect("json")),
            )
            .await
            .expect("put");
        let missing = wh
            .latest_run("labels")
            .await
            .expect_err("its file is missing");
        assert!(missing.to_string().contains("is missing"), "{missing}");
        touch(&run("5-aa", "labels")).await;
        let labels = wh
            .latest_run("labels")
            .await
            .expect("read")
            .expect("legacy");
        assert_eq!(labels.files, ["results/labels/run=5-aa/part-0.parquet"]);
        // Concurrent commits of different jobs: none loses the other's pointer.
        let mut tasks = Vec::new();
        for k in 0..8 {
            let wh = wh.clone();
            tasks.push(tokio::spawn(async move {
                let job = format!("job{k}");
                let r = run(&format!("{k}-x"), &job);
                let p = wh.resolve(&r.files[0]).expect("p");
                wh.store()
                    .put(&p, PutPayload::from_static(b"x"))
                    .await
                    .expect("put");
                wh.commit_runs(vec![(job.clone(), r)]).await
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("commit");
        }
        let all = wh.latest_runs().await.expect("runs");
        assert_eq!(all.len(), 9, "{all:?}");
        assert_eq!(all["labels"].run_id, "5-aa");
        // Two jobs in one commit show the same run.
        touch(&run("10-t", "taint")).await;
        touch(&run("10-t", "exits")).await;
        wh.commit_runs(vec![
            ("taint".into(), run("10-t", "taint")),
            ("exits".into(), run("10-t", "exits")),
        ])
        .await
        .expect("commit");
        let all = wh.latest_runs().await.expect("runs");
        assert_eq!(
            (all["taint"].run_id.as_str(), all["exits"].run_id.as_str()),
            ("10-t", "10-t")
        );
        assert_eq!(
            wh.head_seqs().await.expect("heads").len(),
            1,
            "older heads removed"
        );
        // Retention: beyond the newest five older runs (and the grace period), runs go.
        for k in 0..8u64 {
            let p = wh
                .resolve(&format!("results/taint/run={k}-old/part-0.parquet"))
                .expect("p");
            wh.store()
                .put(&p, PutPayload::from_static(b"x"))
                .await
                .expect("put");
        }
        wh.commit_runs(vec![("taint".into(), run("10-t", "taint"))])
            .await
            .expect("commit");
        let left: Vec<_> = wh
            .store()
            .list(Some(&wh.resolve("results/taint").expect("p")))
            .try_collect()
            .await
            .expect("list");
        // The current run's file and the newest five older runs' files.
        assert_eq!(left.len(), 6, "{left:?}");
        assert!(
            left.iter()
                .all(|m| !m.location.as_ref().contains("run=0-old"))
        );
    }

    #[test]
    fn paths_stay_inside_the_warehouse() {
        let wh = Warehouse::open("memory://schemas-paths").expect("open");
        assert!(wh.resolve("../../etc/passwd").is_err());
        assert!(wh.resolve("").is_err());
        assert!(wh.resolve("btc/x.parquet").is_ok());
    }

    #[test]
    fn a_missing_local_warehouse_is_not_created_for_readers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let typo = dir.path().join("typo");
        let err = Warehouse::open_existing(typo.to_str().expect("utf8")).expect_err("missing");
        assert!(err.to_string().contains("no warehouse at"), "{err}");
        assert!(!typo.exists());
    }

    /// A directory listing is no snapshot: one taken while a writer commits (creates the
    /// next head or manifest, deletes the previous) can miss both. Readers look again
    /// before reading "no runs" or "damage"; gone for good is still damage.
    #[tokio::test]
    async fn a_listing_that_raced_a_commit_is_looked_at_again() {
        let wh = Warehouse::open("memory://schemas-listing-race").expect("open");
        let run = crate::results::LatestRun {
            run_id: "1-aa".into(),
            files: vec!["results/taint/run=1-aa/part-0.parquet".into()],
            rows: 1,
            params: None,
            checks: Vec::new(),
        };
        let file = wh.resolve(&run.files[0]).expect("p");
        wh.store()
            .put(&file, PutPayload::from_static(b"x"))
            .await
            .expect("put");
        wh.commit_runs(vec![("taint".into(), run)])
            .await
            .expect("commit");
        // Each object is away for 25 ms, as if between a listing's two halves.
        async fn away(wh: Warehouse, path: Path) -> tokio::task::JoinHandle<()> {
            let body = wh
                .store()
                .get(&path)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes");
            wh.store().delete(&path).await.expect("delete");
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                wh.store()
                    .put(&path, PutPayload::from(body))
                    .await
                    .expect("put back");
            })
        }
        let seqs = wh.head_seqs().await.expect("heads");
        let head = crate::results::head_dir(wh.root())
            .join(crate::results::head_name(*seqs.last().expect("a head")));
        let back = away(wh.clone(), head).await;
        let runs = wh.latest_runs().await.expect("runs");
        assert_eq!(runs["taint"].run_id, "1-aa", "{runs:?}");
        back.await.expect("join");

        let lease = wh.writer_lease(Chain::Btc).await.expect("lease");
        let mut m = crate::Manifest::empty("btc", "regtest");
        wh.commit_manifest(Chain::Btc, &mut m, &lease)
            .await
            .expect("commit");
        let newest = layout::state_dir(wh.root(), Chain::Btc).join(manifest_name(m.seq));
        let back = away(wh.clone(), newest.clone()).await;
        let loaded = wh
            .load_manifest(Chain::Btc)
            .await
            .expect("read while away")
            .expect("committed");
        assert_eq!(loaded.seq, m.seq);
        back.await.expect("join");
        // Gone for good: damage, after the second looks.
        wh.store().delete(&newest).await.expect("delete");
        let err = wh.load_manifest(Chain::Btc).await.expect_err("gone");
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        lease.release().await;
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

    #[test]
    fn bad_scheme_is_a_clear_error() {
        let err = Warehouse::open("ftp://x/y").expect_err("unsupported");
        assert!(
            err.to_string().contains("unsupported scheme `ftp`"),
            "{err}"
        );
    }
}
