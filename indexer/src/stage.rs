//! The write path both chains share, in the spirit of reth's stages.
//!
//! A [`Stage`] knows its source: what it holds beyond the committed tip ([`Stage::poll`]),
//! how to turn a range of its blocks into table rows ([`Stage::execute`]), and which of its
//! own manifest fields an unwind changes ([`Stage::unwound`]). The [`Runner`] owns
//! everything else, once for both chains: the writer lease, the committed manifest, a
//! chunk's files ([`Runner::open_chunk`]), the commit ([`Runner::commit_chunk`]), garbage
//! collection, the unwind of a reorganisation ([`Runner::unwind`]), the clean-up after a
//! failed run, and the follow loop ([`drive`]). The Bitcoin and Ethereum pipelines are its
//! two users, so a change to the commit protocol is made in one place.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::RecordBatch;
use ferret_schemas::{Chain, Checkpoint, Manifest, TableDef, Warehouse, WriterLease, tables_of};

use crate::sink::ChunkSinks;
use crate::{Error, Result};

/// A stop signal: indexing ends cleanly after the current commit when it turns true.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// Whether the stop signal has been given.
pub fn stopped(stop: &Option<Stop>) -> bool {
    stop.as_ref().is_some_and(|s| *s.borrow())
}

/// What a stage's source holds beyond the committed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Blocks `from..=to` are ready to be indexed.
    Execute { from: u64, to: u64 },
    /// The committed tip has left the source's chain: unwind to this ancestor (`None`:
    /// no committed block is on it any more).
    Unwind(Option<Checkpoint>),
    /// Nothing new now; a following run waits and asks again.
    Idle,
    /// The run's target is reached.
    Done,
}

/// One chain's pipeline, as the [`Runner`] drives it.
pub(crate) trait Stage {
    /// Looks at the source again and says what comes next after the committed state.
    async fn poll(&mut self, run: &Runner<'_>) -> Result<Next>;
    /// Indexes (some of) `from..=to`, each chunk through [`Runner::open_chunk`] and
    /// [`Runner::commit_chunk`]; stops early, between commits, when `stop` is given.
    async fn execute(
        &mut self,
        run: &mut Runner<'_>,
        from: u64,
        to: u64,
        stop: &Option<Stop>,
    ) -> Result<()>;
    /// The stage's own manifest fields after an unwind removed `removed` (the runner has
    /// already set the files, the tip and, when nothing is left, the first block).
    fn unwound(&mut self, m: &mut Manifest, removed: &Removed);
}

/// Rows an unwind removed.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    rows: BTreeMap<String, u64>,
    /// The removed rows themselves, per table (of truncated files always; of dropped
    /// files when the unwind was asked to read them).
    pub batches: Vec<(String, Vec<RecordBatch>)>,
}

impl Removed {
    /// Rows removed from `table`.
    pub fn rows(&self, table: &str) -> u64 {
        self.rows.get(table).copied().unwrap_or(0)
    }

    fn add_batches(&mut self, table: &str, batches: Vec<RecordBatch>) {
        let n: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        *self.rows.entry(table.to_string()).or_default() += n;
        if n > 0 {
            self.batches.push((table.to_string(), batches));
        }
    }
}

/// The committed state of one chain and the lease to change it.
pub(crate) struct Runner<'w> {
    wh: &'w Warehouse,
    chain: Chain,
    lease: WriterLease,
    tables: Vec<&'static TableDef>,
    /// The committed manifest.
    pub manifest: Manifest,
    /// Commits made by this run (chunks and unwinds).
    pub commits: u64,
    /// Bytes of data files committed by this run.
    pub bytes_written: u64,
    /// Whether [`Runner::load`] read the committed manifest (and collected garbage).
    loaded: bool,
}

impl<'w> Runner<'w> {
    /// Takes the chain's writer lease: an overlapping run is refused before it touches
    /// anything.
    pub async fn start(wh: &'w Warehouse, chain: Chain) -> Result<Self> {
        let lease = wh.writer_lease(chain).await?;
        Ok(Self {
            wh,
            chain,
            lease,
            tables: tables_of(chain).collect(),
            manifest: Manifest::empty(chain.as_str(), ""),
            commits: 0,
            bytes_written: 0,
            loaded: false,
        })
    }

    /// Loads the committed manifest (an empty one for `network` when nothing is committed),
    /// refusing one of another network with `mismatch(committed network)`, and collects
    /// what an interrupted run left behind.
    pub async fn load(
        &mut self,
        network: &str,
        mismatch: impl FnOnce(String) -> Error,
    ) -> Result<()> {
        self.manifest = match self.wh.load_manifest(self.chain).await? {
            Some(m) if m.network != network => return Err(mismatch(m.network)),
            Some(m) => m,
            None => Manifest::empty(self.chain.as_str(), network),
        };
        self.loaded = true;
        let garbage = self
            .wh
            .collect_garbage(self.chain, &self.manifest, &self.lease)
            .await?;
        if garbage > 0 {
            tracing::info!(garbage, "removed objects of an interrupted run");
        }
        Ok(())
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &'w Warehouse {
        self.wh
    }

    /// The files of the chunk `first..=last` (one partition), one writer per table, named
    /// after this writer's attempt and the commit that will list them.
    pub fn open_chunk(&self, first: u64, last: u64) -> Result<ChunkSinks> {
        ChunkSinks::open(
            self.wh,
            &self.tables,
            first,
            last,
            self.lease.attempt(),
            self.manifest.seq + 1,
        )
    }

    /// Closes a chunk's files and commits them: they join the manifest, the tip moves to
    /// `tip`, the first block is recorded on a first commit, and `fields` updates the
    /// stage's own fields, all in one manifest PUT.
    pub async fn commit_chunk(
        &mut self,
        sinks: ChunkSinks,
        first: Checkpoint,
        tip: Checkpoint,
        fields: impl FnOnce(&mut Manifest),
    ) -> Result<()> {
        let entries = sinks.finish().await?;
        let m = &mut self.manifest;
        for e in entries {
            self.bytes_written += e.bytes;
            m.files.push(e);
        }
        if m.first_height.is_none() {
            m.first_height = Some(first.height);
            m.first_hash = Some(first.hash);
        }
        m.tip = Some(tip);
        fields(m);
        self.wh.commit_manifest(self.chain, m, &self.lease).await?;
        self.commits += 1;
        tracing::debug!(
            chain = self.chain.as_str(),
            first = first.height,
            tip = m.tip.as_ref().map(|t| t.height),
            seq = m.seq,
            "committed"
        );
        Ok(())
    }

    /// Removes every committed row above `ancestor` (every row for `None`) in one commit:
    /// files wholly above it leave the manifest, files across it are rewritten without
    /// those rows under new names. `read_dropped` also reads the rows of dropped files
    /// (for stages that count something in them); `fields` sets the stage's own manifest
    /// fields before the commit. Returns what was removed.
    pub async fn unwind(
        &mut self,
        ancestor: Option<Checkpoint>,
        read_dropped: bool,
        fields: impl FnOnce(&mut Manifest, &Removed),
    ) -> Result<Removed> {
        let seq = self.manifest.seq + 1;
        let height = ancestor.as_ref().map(|a| a.height);
        let mut removed = Removed::default();
        let mut kept = Vec::with_capacity(self.manifest.files.len());
        let mut dropped = Vec::new();
        for f in std::mem::take(&mut self.manifest.files) {
            match height {
                Some(a) if f.last_height <= a => kept.push(f),
                Some(a) if f.first_height <= a => {
                    let (entry, gone) = crate::sink::truncate_committed(
                        self.wh,
                        self.chain,
                        &f,
                        a,
                        self.lease.attempt(),
                        seq,
                    )
                    .await?;
                    removed.add_batches(&f.table, gone);
                    kept.push(entry);
                    dropped.push(f.path);
                }
                _ => {
                    if read_dropped {
                        let gone = self.wh.read_file(&f.path).await?;
                        removed.add_batches(&f.table, gone);
                    } else {
                        *removed.rows.entry(f.table.clone()).or_default() += f.rows;
                    }
                    dropped.push(f.path);
                }
            }
        }
        let m = &mut self.manifest;
        m.files = kept;
        if ancestor.is_none() {
            m.first_height = None;
            m.first_hash = None;
        }
        m.tip = ancestor;
        fields(m, &removed);
        ferret_schemas::failpoint::hit("unwind-files-written");
        self.wh.commit_manifest(self.chain, m, &self.lease).await?;
        self.commits += 1;
        crate::sink::delete_unwound(self.wh, dropped).await?;
        Ok(removed)
    }

    /// Ends the run: after a failure, deletes what it wrote and never committed (so tools
    /// that glob the directories see those files only briefly); releases the lease.
    pub async fn finish<T>(self, r: Result<T>) -> Result<T> {
        // Only a run that got as far as loading the manifest can have written anything, and
        // what is kept is what the store says is committed, read again: never the
        // in-memory manifest (a placeholder before the load, possibly ahead of the store
        // after a failed commit).
        if r.is_err() && self.loaded {
            let committed = match self.wh.load_manifest(self.chain).await {
                Ok(m) => m.unwrap_or_else(|| Manifest::empty(self.chain.as_str(), "")),
                Err(e) => {
                    tracing::warn!(error = %e, "not removing the failed run's files: the manifest is unreadable");
                    self.lease.release().await;
                    return r;
                }
            };
            match self
                .wh
                .collect_garbage(self.chain, &committed, &self.lease)
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(deleted = n, "removed the failed run's uncommitted files")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove the failed run's files"),
            }
        }
        self.lease.release().await;
        r
    }
}

/// Runs `stage` until its source has nothing new (or, with `follow`, until `stop` is
/// given, asking the source again every `follow` interval): unwinds what left the source's
/// chain, then indexes what is new, one commit at a time.
pub(crate) async fn drive<S: Stage>(
    stage: &mut S,
    run: &mut Runner<'_>,
    follow: Option<Duration>,
    read_dropped: bool,
    stop: &Option<Stop>,
) -> Result<()> {
    loop {
        if stopped(stop) {
            return Ok(());
        }
        match stage.poll(run).await? {
            Next::Execute { from, to } => stage.execute(run, from, to, stop).await?,
            Next::Unwind(ancestor) => {
                run.unwind(ancestor, read_dropped, |m, removed| {
                    stage.unwound(m, removed)
                })
                .await?;
            }
            Next::Done => return Ok(()),
            Next::Idle => {
                let Some(poll) = follow else {
                    return Ok(());
                };
                wait(poll, stop).await;
            }
        }
    }
}

/// Sleeps `d`, or until the stop signal.
pub(crate) async fn wait(d: Duration, stop: &Option<Stop>) {
    let sleep = tokio::time::sleep(d);
    match stop.clone() {
        Some(mut s) => {
            tokio::select! {
                _ = sleep => {}
                _ = s.changed() => {}
            }
        }
        None => sleep.await,
    }
}
