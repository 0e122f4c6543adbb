//! `ferret jobs run`: every case of a directory whose cron schedule is due, one after
//! another, each under its lease; once, or in a loop (`--watch`).
//!
//! A case is due when its schedule names a minute after its last committed run started
//! (a case never run is due at once). A run that failed committed nothing, so the case
//! stays due and the next pass tries again. A case another process is running (its lease
//! is held) is skipped, not failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferret_kernels::device::Backend;
use ferret_schemas::Warehouse;
use ferret_schemas::cases::case_job;

use crate::deliver::{Delivered, Retry, deliver};
use crate::file::Case;
use crate::{Error, Result, run_case};

/// The cases of a directory: every `*.toml`, `*.yaml` and `*.yml` in it (not below), by
/// file name. A file that
/// does not load is an error naming it; two files naming one case are refused.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            (p.extension().is_some_and(|x| x == "toml") || crate::file::is_yaml(p)) && p.is_file()
        })
        .collect();
    paths.sort();
    let mut cases: Vec<Case> = Vec::new();
    for p in paths {
        let c = crate::file::load(&p)?;
        if let Some(other) = cases.iter().find(|o| o.name == c.name) {
            return Err(Error::CaseFile {
                path: p,
                line: 1,
                column: 1,
                reason: format!(
                    "case `{}` is also defined by {}",
                    c.name,
                    other.path.display()
                ),
            });
        }
        cases.push(c);
    }
    Ok(cases)
}

/// The results head's runs (`Warehouse::latest_runs`), read once per pass.
type Runs = std::collections::BTreeMap<String, ferret_schemas::results::LatestRun>;

/// When the case last started a committed run.
pub fn last_started(heads: &Runs, case: &str) -> Result<Option<DateTime<Utc>>> {
    let Some(run) = heads.get(&case_job(case, "runs")) else {
        return Ok(None);
    };
    let started = run
        .params
        .as_ref()
        .and_then(|p| p.get("started_at")?.as_str().map(str::to_string));
    match started {
        Some(s) => Ok(Some(
            DateTime::parse_from_rfc3339(&s)
                .map_err(|e| Error::Damaged {
                    case: case.to_string(),
                    reason: format!("the last run's start `{s}`: {e}"),
                })?
                .with_timezone(&Utc),
        )),
        None => Err(Error::Damaged {
            case: case.to_string(),
            reason: format!("run {} has no start time", run.run_id),
        }),
    }
}

/// When a case is next due: `None` for a case without a schedule (run by hand only) or
/// one whose schedule names no time.
pub fn next_due(heads: &Runs, case: &Case) -> Result<Option<DateTime<Utc>>> {
    let Some(cron) = &case.schedule else {
        return Ok(None);
    };
    Ok(match last_started(heads, &case.name)? {
        None => Some(DateTime::<Utc>::MIN_UTC),
        Some(t) => cron.next_after(t),
    })
}

/// Cases whose last attempt failed wait before the next: 30 s, doubling to an hour (a
/// case with a typo in a seed category, or a webhook that is down, is not retried every
/// second by `--watch`). Kept by the loop across passes.
#[derive(Debug, Default)]
pub struct Backoff {
    failing: std::collections::HashMap<String, (u32, DateTime<Utc>)>,
}

impl Backoff {
    /// Whether `case` may be tried at `now`.
    pub fn ready(&self, case: &str, now: DateTime<Utc>) -> bool {
        self.failing.get(case).is_none_or(|(_, at)| *at <= now)
    }

    /// Records a failure at `now`.
    pub fn failed(&mut self, case: &str, now: DateTime<Utc>) {
        let e = self.failing.entry(case.to_string()).or_insert((0, now));
        e.0 += 1;
        let secs = 30u64.saturating_mul(1 << (e.0 - 1).min(7)).min(3600);
        e.1 = now + chrono::Duration::seconds(secs as i64);
    }

    pub fn succeeded(&mut self, case: &str) {
        self.failing.remove(case);
    }

    /// When `case` may next be tried, if it is held back.
    pub fn until(&self, case: &str) -> Option<DateTime<Utc>> {
        self.failing.get(case).map(|(_, at)| *at)
    }
}

/// What happened to one case in a pass.
#[derive(Debug)]
pub enum Outcome {
    Ran {
        case: String,
        run_id: String,
        alerts: usize,
        delivered: Vec<Delivered>,
    },
    /// Not due, but alerts left undelivered by an earlier failure went out.
    Delivered {
        case: String,
        delivered: Vec<Delivered>,
    },
    /// Another process holds the case's lease.
    Busy {
        case: String,
        reason: String,
    },
    Failed {
        case: String,
        error: Error,
    },
}

/// One pass: runs every due case of `cases` (at `now`), then delivers its alerts; a case
/// not due gets its undelivered alerts (from a delivery that failed) delivered.
pub async fn run_due(
    wh: &Warehouse,
    cases: &[Case],
    backend: &Backend,
    retry: &Retry,
    now: DateTime<Utc>,
    backoff: &mut Backoff,
) -> Result<Vec<Outcome>> {
    // When each case last ran, from one read of the results head (a case's own run
    // changes only its own entry).
    let heads = wh.latest_runs().await?;
    let mut out = Vec::new();
    for case in cases {
        if !backoff.ready(&case.name, now) {
            tracing::debug!(case = %case.name, "held back after a failure");
            continue;
        }
        let before = out.len();
        run_one(wh, &heads, case, backend, retry, now, &mut out).await?;
        match out.get(before) {
            Some(Outcome::Failed { .. }) => backoff.failed(&case.name, now),
            Some(_) => backoff.succeeded(&case.name),
            None => {}
        }
    }
    Ok(out)
}

/// One case's part of a pass.
async fn run_one(
    wh: &Warehouse,
    heads: &Runs,
    case: &Case,
    backend: &Backend,
    retry: &Retry,
    now: DateTime<Utc>,
    out: &mut Vec<Outcome>,
) -> Result<()> {
    {
        let Some(due) = next_due(heads, case)? else {
            return Ok(());
        };
        if due > now {
            tracing::debug!(case = %case.name, %due, "not due");
            // Alerts a failed delivery left behind go out now, not at the next run.
            match deliver(wh, case, retry).await {
                Ok(d) if d.iter().any(|x| x.sent > 0) => out.push(Outcome::Delivered {
                    case: case.name.clone(),
                    delivered: d,
                }),
                Ok(_) => {}
                Err(Error::Warehouse(e @ ferret_schemas::Error::LeaseHeld { .. })) => {
                    out.push(Outcome::Busy {
                        case: case.name.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => out.push(Outcome::Failed {
                    case: case.name.clone(),
                    error: e,
                }),
            }
            return Ok(());
        }
        tracing::info!(case = %case.name, "running a due case");
        match run_case(wh, case, backend).await {
            Ok(r) => {
                let delivered = match deliver(wh, case, retry).await {
                    Ok(d) => d,
                    Err(e) => {
                        out.push(Outcome::Failed {
                            case: case.name.clone(),
                            error: e,
                        });
                        return Ok(());
                    }
                };
                out.push(Outcome::Ran {
                    case: case.name.clone(),
                    run_id: r.run_id,
                    alerts: r.alerts.len(),
                    delivered,
                });
            }
            Err(Error::Warehouse(e @ ferret_schemas::Error::LeaseHeld { .. })) => {
                out.push(Outcome::Busy {
                    case: case.name.clone(),
                    reason: e.to_string(),
                });
            }
            Err(e) => out.push(Outcome::Failed {
                case: case.name.clone(),
                error: e,
            }),
        }
    }
    Ok(())
}

/// How long `--watch` sleeps before the next pass: until the soonest due case (or held
/// back case's retry), at most
/// `max` (the directory is read again each pass, so new and changed cases are seen).
pub async fn until_next(
    wh: &Warehouse,
    cases: &[Case],
    now: DateTime<Utc>,
    max: Duration,
    backoff: &Backoff,
) -> Result<Duration> {
    let heads = wh.latest_runs().await?;
    let mut wait = max;
    for c in cases {
        if let Some(due) = next_due(&heads, c)? {
            // A case held back after a failure is next tried when its wait is over.
            let due = backoff.until(&c.name).map_or(due, |b| b.max(due));
            let d = (due - now).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(d);
        }
    }
    Ok(wait.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_to_an_hour() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let mut b = Backoff::default();
        assert!(b.ready("c", t0));
        let mut waits = Vec::new();
        for _ in 0..10 {
            b.failed("c", t0);
            waits.push((b.until("c").expect("held") - t0).num_seconds());
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert!(!b.ready("c", t0) && b.ready("other", t0));
        assert!(b.ready("c", t0 + chrono::Duration::seconds(3600)));
        b.succeeded("c");
        assert!(b.ready("c", t0));
    }

    #[test]
    fn a_directory_with_two_files_for_one_case_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = "name = \"same\"\nchains = [\"btc\"]\n[seeds]\ncategories = [\"scam\"]\n";
        std::fs::write(dir.path().join("a.toml"), body).expect("write");
        assert_eq!(load_dir(dir.path()).expect("one case").len(), 1);
        std::fs::write(dir.path().join("b.toml"), body).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a case").expect("write");
        let err = load_dir(dir.path()).expect_err("two").to_string();
        assert!(
            err.contains("b.toml") && err.contains("also defined by"),
            "{err}"
        );
    }
}
