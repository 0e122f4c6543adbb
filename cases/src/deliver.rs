//! Alerts out of the warehouse, exactly once per sink: the outbox pattern.
//!
//! A run's alerts are committed with the run, so an alert exists exactly when its run
//! does. Delivery is separate: each sink (a JSON-lines file, a webhook) has a cursor,
//! `results/cases/{case}/_delivery/{sink}/cursor-{seq}.json`, written create-only after
//! each delivery, holding how many of the case's alerts (in commit order, then `seq`)
//! the sink has. A delivery resumes from it, so a crash loses nothing.
//!
//! - **JSON lines**: before appending, the file's last complete line is read back; an
//!   alert written there but not yet in the cursor (a crash between the write and the
//!   cursor) moves the cursor past it, and a torn last line (a crash mid-write) is cut
//!   off. So no alert is written twice, nor lost.
//! - **Webhook**: one POST per alert, JSON, with `Idempotency-Key: {alert_id}`; retried
//!   with exponential backoff on connection errors, timeouts, 408, 429 and 5xx; the
//!   cursor moves after each 2xx. A crash after the receiver's 2xx and before the cursor
//!   write sends that one alert again, with the same id: a receiver that keeps the ids
//!   it saw never acts twice. No HTTP sender can do better (the 2xx can always be lost).
//!   A 4xx other than 408/429 stops delivery with an error naming the alert; the cursor
//!   stays before it.
//!
//! A sink is named by its target (the file path, the URL), so a new target starts from
//! the case's first alert.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use ferret_schemas::Warehouse;
use ferret_schemas::cases::case_job;

use crate::file::Case;
use crate::{Error, Result};

/// Where alerts go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    Jsonl(PathBuf),
    Webhook(String),
}

impl Sink {
    /// The sinks a case names.
    pub fn of(case: &Case) -> Vec<Sink> {
        let mut out = Vec::new();
        if let Some(p) = &case.alerts.jsonl {
            out.push(Sink::Jsonl(p.clone()));
        }
        if let Some(u) = &case.alerts.webhook {
            out.push(Sink::Webhook(u.clone()));
        }
        out
    }

    fn target(&self) -> String {
        match self {
            Sink::Jsonl(p) => format!(
                "jsonl:{}",
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
            ),
            Sink::Webhook(u) => format!("webhook:{u}"),
        }
    }

    /// The cursor's directory name: the kind and a hash of the target.
    fn key(&self) -> String {
        let h = Sha256::digest(self.target().as_bytes());
        let kind = match self {
            Sink::Jsonl(_) => "jsonl",
            Sink::Webhook(_) => "webhook",
        };
        format!(
            "{kind}-{}",
            h[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }

    fn describe(&self) -> String {
        match self {
            Sink::Jsonl(p) => format!("JSON lines file {}", p.display()),
            // Scheme and host only: a URL's path or query may hold a token.
            Sink::Webhook(u) => match reqwest::Url::parse(u) {
                Ok(url) => format!(
                    "webhook {}://{}{}/…",
                    url.scheme(),
                    url.host_str().unwrap_or(""),
                    url.port().map(|p| format!(":{p}")).unwrap_or_default()
                ),
                Err(_) => "webhook".into(),
            },
        }
    }
}

/// How hard a webhook delivery tries.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Tries per alert, the first included.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Per request.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 8,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(15),
        }
    }
}

/// What one sink got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub sink: String,
    /// Alerts delivered now.
    pub sent: u64,
    /// The case's alerts the sink has in all.
    pub total: u64,
    /// Webhook requests retried.
    pub retries: u64,
}

/// One alert as delivered (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertJson {
    pub alert_id: String,
    pub case: String,
    pub run_id: String,
    pub seq: i64,
    pub kind: String,
    pub chain: String,
    pub address: String,
    pub amount: Option<f64>,
    pub asset: Option<String>,
    pub txid: Option<String>,
    pub height: Option<i64>,
    /// RFC 3339, UTC.
    pub first_seen: String,
    pub detail: String,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    delivered: u64,
    last_alert_id: Option<String>,
    sink: String,
}

/// Every alert of the case, in delivery order (runs in commit order, then `seq`).
pub async fn case_alerts(wh: &Warehouse, case: &str) -> Result<Vec<AlertJson>> {
    match wh.latest_run(&case_job(case, "alerts")).await? {
        Some(run) => alerts_in(wh, case, &run).await,
        None => Ok(Vec::new()),
    }
}

/// The alerts of the case's `alerts` job as the results head listed it.
async fn alerts_in(
    wh: &Warehouse,
    case: &str,
    run: &ferret_schemas::results::LatestRun,
) -> Result<Vec<AlertJson>> {
    let mut out = Vec::new();
    for f in &run.files {
        let mut rows = Vec::new();
        for b in wh.read_file(f).await? {
            alerts_of(&b, &mut rows).map_err(|reason| Error::Damaged {
                case: case.to_string(),
                reason: format!("{f}: {reason}"),
            })?;
        }
        rows.sort_by_key(|a| a.seq);
        out.extend(rows);
    }
    Ok(out)
}

fn alerts_of(b: &RecordBatch, out: &mut Vec<AlertJson>) -> std::result::Result<(), String> {
    let s = |n: &str| {
        b.column_by_name(n)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| format!("no text column `{n}`"))
    };
    let (case, run, id, kind, chain, addr, asset, txid, detail) = (
        s("case")?,
        s("run_id")?,
        s("alert_id")?,
        s("kind")?,
        s("chain")?,
        s("address")?,
        s("asset")?,
        s("txid")?,
        s("detail")?,
    );
    let int = |n: &str| {
        b.column_by_name(n)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| format!("no integer column `{n}`"))
    };
    let (seq, height) = (int("seq")?, int("height")?);
    let amount = b
        .column_by_name("amount")
        .and_then(|c| c.as_primitive_opt::<Float64Type>())
        .ok_or("no column `amount`")?;
    let seen = b
        .column_by_name("first_seen")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or("no column `first_seen`")?;
    let opt =
        |a: &arrow::array::StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    for i in 0..b.num_rows() {
        out.push(AlertJson {
            alert_id: id.value(i).into(),
            case: case.value(i).into(),
            run_id: run.value(i).into(),
            seq: seq.value(i),
            kind: kind.value(i).into(),
            chain: chain.value(i).into(),
            address: addr.value(i).into(),
            amount: amount.is_valid(i).then(|| amount.value(i)),
            asset: opt(asset, i),
            txid: opt(txid, i),
            height: height.is_valid(i).then(|| height.value(i)),
            first_seen: chrono::DateTime::from_timestamp_micros(seen.value(i))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .unwrap_or_default(),
            detail: detail.value(i).into(),
        });
    }
    Ok(())
}

fn cursor_dir(wh: &Warehouse, case: &str, sink: &Sink) -> object_store::path::Path {
    ferret_schemas::results::job_dir(wh.root(), &format!("cases/{case}/_delivery/{}", sink.key()))
}

fn cursor_name(seq: u64) -> String {
    format!("cursor-{seq:020}.json")
}

/// The newest cursor: its sequence number, how many alerts it says were delivered and the
/// last one's id (0, 0 and none when there is no cursor).
async fn read_cursor(
    wh: &Warehouse,
    dir: &object_store::path::Path,
) -> Result<(u64, u64, Option<String>)> {
    let listed: Vec<_> = wh
        .store()
        .list(Some(dir))
        .try_collect()
        .await
        .map_err(|e| store_err(dir, e))?;
    let Some(seq) = listed
        .iter()
        .filter_map(|m| {
            m.location
                .filename()?
                .strip_prefix("cursor-")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .max()
    else {
        return Ok((0, 0, None));
    };
    let path = dir.clone().join(cursor_name(seq));
    let bytes = wh
        .store()
        .get(&path)
        .await
        .map_err(|e| store_err(&path, e))?
        .bytes()
        .await
        .map_err(|e| store_err(&path, e))?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|e| Error::Damaged {
        case: String::new(),
        reason: format!("delivery cursor {path}: {e}"),
    })?;
    Ok((seq, c.delivered, c.last_alert_id))
}

fn store_err(path: &object_store::path::Path, e: object_store::Error) -> Error {
    Error::Warehouse(ferret_schemas::Error::store(path, e))
}

/// Records that the sink has the first `delivered` alerts: the next cursor, create-only
/// (two deliverers cannot both move it), then older cursors removed.
async fn write_cursor(
    wh: &Warehouse,
    dir: &object_store::path::Path,
    seq: u64,
    delivered: u64,
    last: Option<&str>,
    sink: &Sink,
) -> Result<u64> {
    let next = seq + 1;
    let path = dir.clone().join(cursor_name(next));
    let body = serde_json::to_vec(&Cursor {
        delivered,
        last_alert_id: last.map(str::to_string),
        sink: sink.describe(),
    })
    .unwrap_or_default();
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    wh.store()
        .put_opts(&path, PutPayload::from(Bytes::from(body)), opts)
        .await
        .map_err(|e| store_err(&path, e))?;
    if seq > 0 {
        let old = dir.clone().join(cursor_name(seq));
        if let Err(e) = wh.store().delete(&old).await {
            tracing::warn!(path = %old, error = %e, "could not delete a superseded delivery cursor");
        }
    }
    Ok(next)
}

/// Delivers the case's undelivered alerts to every sink it names, under the case's
/// lease.
pub async fn deliver(wh: &Warehouse, case: &Case, retry: &Retry) -> Result<Vec<Delivered>> {
    let sinks = Sink::of(case);
    if sinks.is_empty() {
        return Ok(Vec::new());
    }
    // Nothing pending (every cursor at the case's alert count): done without the lease
    // or reading an alert.
    let alerts_run = wh.latest_run(&case_job(&case.name, "alerts")).await?;
    let total = alerts_run.as_ref().map_or(0, |r| r.rows);
    let mut pending = false;
    for sink in &sinks {
        let (_, done, _) = read_cursor(wh, &cursor_dir(wh, &case.name, sink)).await?;
        pending |= done != total;
    }
    if !pending {
        return Ok(sinks
            .iter()
            .map(|s| Delivered {
                sink: s.describe(),
                sent: 0,
                total,
                retries: 0,
            })
            .collect());
    }
    let lease = wh.case_lease(&case.name).await?;
    // The alerts as the head listed them above: a run committed since is delivered next
    // time.
    let alerts = match &alerts_run {
        Some(run) => alerts_in(wh, &case.name, run).await?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for sink in &sinks {
        let d = deliver_to(wh, &case.name, sink, &alerts, retry, &lease).await?;
        out.push(d);
    }
    lease.release().await;
    Ok(out)
}

async fn deliver_to(
    wh: &Warehouse,
    case: &str,
    sink: &Sink,
    alerts: &[AlertJson],
    retry: &Retry,
    lease: &ferret_schemas::WriterLease,
) -> Result<Delivered> {
    let dir = cursor_dir(wh, case, sink);
    let (mut seq, mut done, last) = read_cursor(wh, &dir).await?;
    let err = |reason: String| Error::Delivery {
        case: case.to_string(),
        sink: sink.describe(),
        reason,
    };
    if done > alerts.len() as u64 {
        return Err(err(format!(
            "the cursor says {done} alerts were delivered, and the case has {}: its history was changed",
            alerts.len()
        )));
    }
    // The cursor names the last alert it delivered: it must be the case's alert at that
    // place, or the history changed under it (a restored results head) and positions
    // no longer mean the same alerts.
    if done > 0 {
        let at = &alerts[done as usize - 1].alert_id;
        if last.as_deref().is_some_and(|l| l != at) {
            return Err(err(format!(
                "the cursor's last delivered alert is {}, and the case's alert number {done} is {at}: its history changed; nothing was sent",
                last.unwrap_or_default()
            )));
        }
    }
    let mut report = Delivered {
        sink: sink.describe(),
        ..Default::default()
    };
    match sink {
        Sink::Jsonl(path) => {
            let (have, file) =
                reconcile_jsonl(path, case, alerts).map_err(|e| err(e.to_string()))?;
            if have > done {
                lease.check().await?;
                seq = write_cursor(
                    wh,
                    &dir,
                    seq,
                    have,
                    alerts.get(have as usize - 1).map(|a| a.alert_id.as_str()),
                    sink,
                )
                .await?;
                done = have;
            }
            let rest = &alerts[done as usize..];
            if !rest.is_empty() {
                let mut file = file;
                let mut text = String::new();
                for a in rest {
                    text.push_str(&serde_json::to_string(a).unwrap_or_default());
                    text.push('\n');
                }
                file.write_all(text.as_bytes())
                    .map_err(|e| err(e.to_string()))?;
                file.sync_all().map_err(|e| err(e.to_string()))?;
                ferret_schemas::failpoint::hit("after-alerts-jsonl");
                lease.check().await?;
                write_cursor(
                    wh,
                    &dir,
                    seq,
                    alerts.len() as u64,
                    rest.last().map(|a| a.alert_id.as_str()),
                    sink,
                )
                .await?;
                report.sent = rest.len() as u64;
            }
        }
        Sink::Webhook(url) => {
            // No redirects: a client following a 301/302/303 would turn the POST into a
            // GET without the alert, and a 200 to that would lose it.
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(retry.timeout)
                .build()
                .map_err(|e| err(e.to_string()))?;
            for (i, a) in alerts.iter().enumerate().skip(done as usize) {
                report.retries += post(&client, url, a, retry).await.map_err(&err)?;
                ferret_schemas::failpoint::hit("after-webhook-post");
                lease.check().await?;
                seq = write_cursor(wh, &dir, seq, i as u64 + 1, Some(&a.alert_id), sink).await?;
                report.sent += 1;
            }
        }
    }
    report.total = alerts.len() as u64;
    Ok(report)
}

/// Opens the JSON-lines file for appending, locked (`flock`) against other deliverers
/// until it is dropped, after cutting a torn last line (only one that starts like a
/// Ferret alert: anything else is an error, never cut); returns how many of `alerts` it
/// already holds: the position of its last line of this case (0 when none).
fn reconcile_jsonl(
    path: &Path,
    case: &str,
    alerts: &[AlertJson],
) -> std::io::Result<(u64, std::fs::File)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    f.lock()?;
    let len = f.metadata()?.len();
    // The last 1 MiB holds the last lines.
    let tail_from = len.saturating_sub(1 << 20);
    f.seek(SeekFrom::Start(tail_from))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    if !tail.is_empty() && tail.last() != Some(&b'\n') {
        let cut = tail.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        if !tail[cut..].starts_with(b"{\"alert_id\":") {
            return Err(std::io::Error::other(format!(
                "{} does not end in a line break, and its last line is not a Ferret alert: not cutting it (is this the alerts file?)",
                path.display()
            )));
        }
        let keep = tail_from + cut as u64;
        tracing::warn!(path = %path.display(), bytes = len - keep, "cutting a torn last line of the alerts file");
        f.set_len(keep)?;
        tail.truncate(cut);
    }
    // The last line of this case (several cases may share a file).
    let have = tail
        .split(|&b| b == b'\n')
        .rev()
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<AlertJson>(l).ok())
        .find(|a| a.case == case)
        .and_then(|a| alerts.iter().position(|x| x.alert_id == a.alert_id))
        .map_or(0, |p| p as u64 + 1);
    Ok((have, f))
}

/// POSTs one alert until a 2xx; returns the retries it took.
async fn post(
    client: &reqwest::Client,
    url: &str,
    a: &AlertJson,
    retry: &Retry,
) -> std::result::Result<u64, String> {
    let body = serde_json::to_vec(a).unwrap_or_default();
    let mut backoff = retry.first_backoff;
    let mut last = String::new();
    for attempt in 0..retry.attempts.max(1) {
        if attempt > 0 {
            tracing::info!(alert = %a.alert_id, attempt, error = %last, "retrying the webhook");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(retry.max_backoff);
        }
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", &a.alert_id)
            .header("x-ferret-case", &a.case)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(u64::from(attempt)),
            Ok(r) => {
                let s = r.status();
                last = format!("HTTP {s}");
                if s.is_redirection() {
                    return Err(format!(
                        "alert {} not accepted: {last} (redirects are not followed: give the final URL)",
                        a.alert_id
                    ));
                }
                if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 {
                    return Err(format!("alert {} refused: {last}", a.alert_id));
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "alert {} not accepted after {} tries: {last}",
        a.alert_id, retry.attempts
    ))
}
