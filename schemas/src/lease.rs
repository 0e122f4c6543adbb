//! Writer leases: at most one writer at a time per scope (a chain's tables). A second
//! writer (an overlapping CronJob run, a second shell) is refused before it touches
//! anything, so it can never delete or overwrite the first one's in-flight files; only the
//! lease holder collects garbage.
//!
//! - **Local warehouses**: an exclusive advisory lock (`flock`) on
//!   `{scope}/_state/writer.lock`, held by the open file: the kernel releases it when the
//!   process exits or is killed, so a killed writer never blocks the next one. The file
//!   holds who took it, for the refusal message; it is never deleted.
//! - **Object stores**: a lease object `{scope}/_state/lease.json` (owner, expiry) taken
//!   with a create-only PUT, renewed every third of its time to live by a background task
//!   and released at the end. An expired lease (its writer was killed) is taken over with a
//!   conditional PUT on its version where the store supports one, else by delete and
//!   create (a narrow race two takers could both win; the create-only manifest commit
//!   still lets only one of them commit). A writer checks it still holds its lease just
//!   before each commit, and stops with [`Error::LeaseLost`] if it was taken over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How long an object-store lease lives without renewal (`FERRET_LEASE_TTL_SECS`, default
/// 60 s): how long a killed writer blocks the next one.
pub fn lease_ttl() -> Duration {
    std::env::var("FERRET_LEASE_TTL_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Who holds a lease.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// The writer's attempt id (also in the names of the files it writes).
    pub attempt: String,
    pub host: String,
    pub pid: u32,
    /// Milliseconds since the epoch.
    pub acquired_ms: u64,
    /// Milliseconds since the epoch (object stores; 0 for local locks).
    pub expires_ms: u64,
}

impl Holder {
    fn new(attempt: &str, ttl: Option<Duration>) -> Self {
        let now = now_ms();
        Self {
            attempt: attempt.to_string(),
            host: std::env::var("HOSTNAME")
                .or_else(|_| std::fs::read_to_string("/etc/hostname").map(|s| s.trim().into()))
                .unwrap_or_default(),
            pid: std::process::id(),
            acquired_ms: now,
            expires_ms: ttl.map_or(0, |t| now + t.as_millis() as u64),
        }
    }

    fn describe(&self) -> String {
        format!(
            "attempt {} of pid {} on {}",
            self.attempt,
            self.pid,
            if self.host.is_empty() {
                "an unnamed host"
            } else {
                &self.host
            }
        )
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A held writer lease. Dropping it releases a local lock at once and stops renewing an
/// object-store lease (which then expires); [`WriterLease::release`] deletes it.
#[derive(Debug)]
pub struct WriterLease {
    scope: String,
    attempt: String,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Local {
        _file: std::fs::File,
    },
    Remote {
        lease: Arc<Remote>,
        renew: tokio::task::JoinHandle<()>,
    },
}

/// An object-store lease as its holder knows it.
#[derive(Debug)]
struct Remote {
    store: Arc<dyn ObjectStore>,
    path: Path,
    attempt: String,
    ttl: Duration,
    /// Set once the lease is known to be someone else's.
    lost: AtomicBool,
    /// Renewals, by the background task or a writer whose lease time ran out, one at a time.
    state: tokio::sync::Mutex<RenewState>,
}

#[derive(Debug)]
struct RenewState {
    /// The version of the lease object this writer last wrote.
    version: Option<UpdateVersion>,
    /// Until the store says it has no conditional update.
    conditional: bool,
    /// The expiry this writer last wrote (epoch milliseconds): by its own clock it may act
    /// until then; after that another writer may have taken over.
    valid_until_ms: u64,
}

impl Remote {
    fn body(h: &Holder) -> PutPayload {
        PutPayload::from(Bytes::from(serde_json::to_vec(h).expect("json")))
    }

    /// Writes the lease again with a later expiry, conditionally on it still being the
    /// version this writer wrote last (or, without conditional updates, on it still naming
    /// this writer). Returns whether this writer still holds it.
    async fn renew(&self, st: &mut RenewState) -> bool {
        for _ in 0..2 {
            if self.lost.load(Ordering::SeqCst) {
                return false;
            }
            let me = Holder::new(&self.attempt, Some(self.ttl));
            let mode = match st.version.clone() {
                Some(v) if st.conditional && (v.e_tag.is_some() || v.version.is_some()) => {
                    PutMode::Update(v)
                }
                _ => {
                    // No conditional update: overwrite only while it is still ours.
                    let ours = match self.store.get(&self.path).await {
                        Ok(r) => r
                            .bytes()
                            .await
                            .ok()
                            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok()),
                        Err(_) => None,
                    }
                    .is_some_and(|h| h.attempt == self.attempt);
                    if !ours {
                        self.lost.store(true, Ordering::SeqCst);
                        return false;
                    }
                    PutMode::Overwrite
                }
            };
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            match self.store.put_opts(&self.path, Self::body(&me), opts).await {
                Ok(r) => {
                    st.version = Some(UpdateVersion {
                        e_tag: r.e_tag,
                        version: r.version,
                    });
                    st.valid_until_ms = me.expires_ms;
                    return true;
                }
                Err(object_store::Error::Precondition { .. }) => {
                    self.lost.store(true, Ordering::SeqCst);
                    return false;
                }
                Err(
                    object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. },
                ) => st.conditional = false,
                Err(e) => {
                    tracing::warn!(lease = %self.path, error = %e, "could not renew the writer lease");
                    return true;
                }
            }
        }
        true
    }
}

impl WriterLease {
    /// Takes the lock file `dir/writer.lock` (creating `dir`).
    pub(crate) fn local(scope: &str, dir: &std::path::Path, attempt: &str) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        let io = |source| Error::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join("writer.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = serde_json::from_str::<Holder>(&text)
                    .map(|h| h.describe())
                    .unwrap_or_else(|_| "a running writer".into());
                return Err(Error::LeaseHeld {
                    scope: scope.to_string(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let body = serde_json::to_vec(&Holder::new(attempt, None)).expect("serialises");
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(&body).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self {
            scope: scope.to_string(),
            attempt: attempt.to_string(),
            inner: Inner::Local { _file: file },
        })
    }

    /// Takes the lease object at `path`.
    pub(crate) async fn remote(
        scope: &str,
        store: Arc<dyn ObjectStore>,
        path: Path,
        attempt: &str,
    ) -> Result<Self> {
        Self::remote_ttl(scope, store, path, attempt, lease_ttl()).await
    }

    async fn remote_ttl(
        scope: &str,
        store: Arc<dyn ObjectStore>,
        path: Path,
        attempt: &str,
        ttl: Duration,
    ) -> Result<Self> {
        let body = Remote::body;
        let mut version: Option<UpdateVersion> = None;
        let mut valid_until_ms = 0;
        let mut taken = false;
        for _ in 0..4 {
            let me = Holder::new(attempt, Some(ttl));
            let create = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match store.put_opts(&path, body(&me), create).await {
                Ok(r) => {
                    version = Some(UpdateVersion {
                        e_tag: r.e_tag,
                        version: r.version,
                    });
                    valid_until_ms = me.expires_ms;
                    taken = true;
                    break;
                }
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(Error::store(&path, e)),
            }
            let current = match store.get(&path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(Error::store(&path, e)),
            };
            let (e_tag, ver) = (current.meta.e_tag.clone(), current.meta.version.clone());
            let modified_ms = current.meta.last_modified.timestamp_millis().max(0) as u64;
            let bytes = current.bytes().await.map_err(|e| Error::store(&path, e))?;
            // An unreadable lease counts from when it was written.
            let holder = serde_json::from_slice::<Holder>(&bytes).ok();
            let expires = holder
                .as_ref()
                .map_or(modified_ms + ttl.as_millis() as u64, |h| h.expires_ms);
            if expires > now_ms() {
                return Err(Error::LeaseHeld {
                    scope: scope.to_string(),
                    holder: holder.map_or_else(|| "an unreadable lease".into(), |h| h.describe()),
                });
            }
            tracing::warn!(scope, lease = %path, "taking over an expired writer lease");
            let update = PutOptions {
                mode: PutMode::Update(UpdateVersion {
                    e_tag,
                    version: ver,
                }),
                ..Default::default()
            };
            match store.put_opts(&path, body(&me), update).await {
                Ok(r) => {
                    version = Some(UpdateVersion {
                        e_tag: r.e_tag,
                        version: r.version,
                    });
                    valid_until_ms = me.expires_ms;
                    taken = true;
                    break;
                }
                // Someone else took it first: look again.
                Err(object_store::Error::Precondition { .. }) => continue,
                Err(object_store::Error::NotImplemented { .. })
                | Err(object_store::Error::NotSupported { .. }) => {
                    // No conditional update here: delete the expired lease and create.
                    match store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(Error::store(&path, e)),
                    }
                }
                Err(e) => return Err(Error::store(&path, e)),
            }
        }
        if !taken {
            return Err(Error::LeaseHeld {
                scope: scope.to_string(),
                holder: "writers racing for an expired lease".into(),
            });
        }
        let lease = Arc::new(Remote {
            store,
            path,
            attempt: attempt.to_string(),
            ttl,
            lost: AtomicBool::new(false),
            state: tokio::sync::Mutex::new(RenewState {
                version,
                conditional: true,
                valid_until_ms,
            }),
        });
        let renew = {
            let lease = Arc::clone(&lease);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease.ttl / 3).await;
                    let mut st = lease.state.lock().await;
                    if !lease.renew(&mut st).await {
                        return;
                    }
                }
            })
        };
        Ok(Self {
            scope: scope.to_string(),
            attempt: attempt.to_string(),
            inner: Inner::Remote { lease, renew },
        })
    }

    /// The attempt id: unique to this writer, part of every file name it writes.
    pub fn attempt(&self) -> &str {
        &self.attempt
    }

    /// Fails when this writer no longer holds its lease (it was taken over after
    /// expiring); called before every commit.
    pub async fn check(&self) -> Result<()> {
        let Inner::Remote { lease, .. } = &self.inner else {
            return Ok(());
        };
        let (store, path, lost) = (&lease.store, &lease.path, &lease.lost);
        let holder = match store.get(path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| Error::store(path, e))?;
                serde_json::from_slice::<Holder>(&bytes).ok()
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(Error::store(path, e)),
        };
        match holder {
            Some(h) if h.attempt == self.attempt && !lost.load(Ordering::SeqCst) => Ok(()),
            other => Err(Error::LeaseLost {
                scope: self.scope.clone(),
                holder: other
                    .map_or_else(|| "nobody (the lease was removed)".into(), |h| h.describe()),
            }),
        }
    }

    /// Fails unless this writer may still act by its own clock: its lease expires later
    /// than a third of its time to live from now. When that time has run out (the process
    /// was paused or frozen past its renewals), it renews first, conditionally on the
    /// lease being unchanged since its own last write, and fails when another writer has
    /// taken it over. Called, without a round trip in the common case, right before every
    /// manifest PUT and every deletion of garbage, so a writer that wakes up stale does no
    /// harm. (Clocks of writers must agree within a third of the time to live.)
    pub async fn ensure_valid(&self) -> Result<()> {
        let Inner::Remote { lease, .. } = &self.inner else {
            return Ok(());
        };
        let margin = lease.ttl.as_millis() as u64 / 3;
        let mut st = lease.state.lock().await;
        let lapsed = now_ms() + margin >= st.valid_until_ms;
        if lapsed && !(lease.renew(&mut st).await && now_ms() + margin < st.valid_until_ms) {
            lease.lost.store(true, Ordering::SeqCst);
        }
        if lease.lost.load(Ordering::SeqCst) {
            drop(st);
            return Err(match self.check().await {
                Err(e) => e,
                Ok(()) => Error::LeaseLost {
                    scope: self.scope.clone(),
                    holder: "nobody it could confirm (its time ran out and renewing failed)".into(),
                },
            });
        }
        Ok(())
    }

    /// Gives the lease up.
    pub async fn release(self) {
        if let Inner::Remote { lease, .. } = &self.inner
            && self.check().await.is_ok()
            && let Err(e) = lease.store.delete(&lease.path).await
        {
            tracing::warn!(lease = %lease.path, error = %e, "could not release the writer lease");
        }
    }
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        if let Inner::Remote { renew, .. } = &self.inner {
            renew.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_is_renewed_while_held_and_taken_over_once_expired() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("btc/_state/lease.json");
        let ttl = Duration::from_millis(600);
        let a = WriterLease::remote_ttl("btc", Arc::clone(&store), path.clone(), "a", ttl)
            .await
            .expect("a");
        // Held past its time to live: renewed, still refused to others.
        tokio::time::sleep(ttl * 2).await;
        a.check().await.expect("still held");
        let err = WriterLease::remote_ttl("btc", Arc::clone(&store), path.clone(), "b", ttl)
            .await
            .expect_err("held");
        assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
        // Its writer stops renewing (killed, or paused): once expired, another takes over,
        // and the first can no longer commit.
        let Inner::Remote { renew, .. } = &a.inner else {
            panic!("remote");
        };
        renew.abort();
        tokio::time::sleep(ttl * 2).await;
        let b = WriterLease::remote_ttl("btc", Arc::clone(&store), path.clone(), "b", ttl)
            .await
            .expect("taken over");
        let err = a.check().await.expect_err("lost");
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
        b.check().await.expect("b holds it");
        // Releasing a lost lease leaves the new holder's alone.
        a.release().await;
        b.check().await.expect("b still holds it");
        b.release().await;
        assert!(store.head(&path).await.is_err(), "released");
    }

    #[tokio::test]
    async fn a_writer_paused_past_its_lease_acts_again_only_if_nobody_took_over() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("btc/_state/lease.json");
        let ttl = Duration::from_millis(600);
        let a = WriterLease::remote_ttl("btc", Arc::clone(&store), path.clone(), "a", ttl)
            .await
            .expect("a");
        a.ensure_valid().await.expect("fresh");
        // Paused (no renewals) past its time: nobody took over, so it renews and acts.
        let Inner::Remote { renew, .. } = &a.inner else {
            panic!("remote");
        };
        renew.abort();
        tokio::time::sleep(ttl * 2).await;
        a.ensure_valid().await.expect("renewed after the pause");
        // Paused again, and this time taken over meanwhile: it must not act.
        tokio::time::sleep(ttl * 2).await;
        let b = WriterLease::remote_ttl("btc", Arc::clone(&store), path.clone(), "b", ttl)
            .await
            .expect("taken over");
        let err = a.ensure_valid().await.expect_err("stale");
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
        assert!(err.to_string().contains("attempt b"), "{err}");
        b.ensure_valid().await.expect("b may act");
        b.check().await.expect("b still holds it");
    }
}
