//! A JSON-RPC client for real endpoints: alloy's client (HTTP or WebSocket, chosen by the
//! URL) with batching, a timeout on every request, and retries with exponential backoff and
//! jitter on what a busy or flaky endpoint answers (HTTP 429/5xx, JSON-RPC -32005 and the
//! other rate-limit codes, dropped connections, truncated or garbled responses). Errors
//! that retrying cannot fix (unsupported method, bad parameters) fail at once and say which
//! method, which parameters and which endpoint.

use std::borrow::Cow;
use std::time::Duration;

use alloy::rpc::client::{ClientBuilder, RpcClient};
use alloy::rpc::json_rpc::{RpcRecv, RpcSend};
use alloy::transports::{RpcError, TransportError, TransportErrorKind};
use rand::Rng;

use crate::{Error, Result};

/// How requests are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled each time, with ±50 % jitter.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
    /// Limit of one request (or one batch) from send to the last byte of the answer.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 8,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What went wrong with one attempt, and whether another may help.
#[derive(Debug)]
enum Failure {
    /// Rate limits, timeouts, connection trouble, garbled answers: try again.
    Transient(String),
    /// The endpoint does not serve the method.
    Unsupported(String),
    /// Anything else the endpoint said; trying again will not change it.
    Fatal(String),
}

/// JSON-RPC error codes and messages meaning "this method is not served here".
fn is_unsupported(code: i64, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == -32601
        || m.contains("method not found")
        || m.contains("not supported")
        || m.contains("does not exist")
        || m.contains("not available")
        || m.contains("unsupported method")
}

fn classify(e: &TransportError) -> Failure {
    match e {
        RpcError::ErrorResp(p) => {
            if p.is_retry_err()
                || p.message.to_ascii_lowercase().contains("rate limit")
                || p.message.to_ascii_lowercase().contains("too many requests")
            {
                Failure::Transient(format!("rate limited ({}: {})", p.code, p.message))
            } else if is_unsupported(p.code, &p.message) {
                Failure::Unsupported(format!("{}: {}", p.code, p.message))
            } else if p.code == -32603 || p.code == -32000 && p.message.contains("timeout") {
                Failure::Transient(format!("server error {}: {}", p.code, p.message))
            } else {
                Failure::Fatal(format!("error {}: {}", p.code, p.message))
            }
        }
        RpcError::Transport(kind) => match kind {
            TransportErrorKind::HttpError(h)
            | TransportErrorKind::HttpErrorWithRetryAfter { error: h, .. } => {
                if h.status == 429 || h.status == 408 || h.status >= 500 {
                    Failure::Transient(format!("HTTP {}", h.status))
                } else if h.status == 405 || h.status == 404 {
                    Failure::Unsupported(format!("HTTP {}: {}", h.status, short(&h.body)))
                } else {
                    Failure::Fatal(format!("HTTP {}: {}", h.status, short(&h.body)))
                }
            }
            other => Failure::Transient(other.to_string()),
        },
        // A truncated or garbled body: the next attempt usually gets a whole one.
        RpcError::DeserError { err, text } => {
            Failure::Transient(format!("undecodable response ({err}): {}", short(text)))
        }
        RpcError::NullResp => Failure::Transient("null response".into()),
        other => Failure::Fatal(other.to_string()),
    }
}

fn short(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// A connected endpoint.
#[derive(Clone, Debug)]
pub struct Rpc {
    client: RpcClient,
    url: String,
    policy: RetryPolicy,
}

impl Rpc {
    /// Connects to `url` (`http(s)://` or `ws(s)://`).
    pub async fn connect(url: &str, policy: RetryPolicy) -> Result<Self> {
        let client = tokio::time::timeout(policy.timeout, ClientBuilder::default().connect(url))
            .await
            .map_err(|_| Error::Rpc {
                url: url.to_string(),
                what: "connect".into(),
                reason: format!("no connection within {:?}", policy.timeout),
            })?
            .map_err(|e| Error::Rpc {
                url: url.to_string(),
                what: "connect".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            url: url.to_string(),
            policy,
        })
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .policy
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.policy.max_backoff);
        base.mul_f64(rand::rng().random_range(0.5..1.5))
    }

    fn give_up(&self, what: &str, failure: Failure, attempts: u32) -> Error {
        match failure {
            Failure::Unsupported(reason) => Error::RpcUnsupported {
                url: self.url.clone(),
                method: what.to_string(),
                reason,
            },
            Failure::Transient(reason) => Error::Rpc {
                url: self.url.clone(),
                what: what.to_string(),
                reason: format!("{reason} (gave up after {attempts} attempts)"),
            },
            Failure::Fatal(reason) => Error::Rpc {
                url: self.url.clone(),
                what: what.to_string(),
                reason,
            },
        }
    }

    /// One call, retried as the policy says.
    pub async fn call<P, R>(&self, method: &'static str, params: P) -> Result<R>
    where
        P: RpcSend + Clone,
        R: RpcRecv,
    {
        let what = || describe(method, &params);
        let mut attempt = 0;
        loop {
            let fut = self.client.request::<P, R>(method, params.clone());
            let failure = match tokio::time::timeout(self.policy.timeout, fut).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => classify(&e),
                Err(_) => Failure::Transient(format!("timed out after {:?}", self.policy.timeout)),
            };
            match failure {
                Failure::Transient(reason) if attempt < self.policy.max_retries => {
                    let wait = self.backoff(attempt);
                    tracing::warn!(url = %self.url, call = %what(), %reason, ?wait, attempt, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                f => return Err(self.give_up(&what(), f, attempt + 1)),
            }
        }
    }

    /// Many calls of one method in one JSON-RPC batch, answers in the order of `params`. A
    /// batch is retried whole when any of its answers is transient trouble.
    pub async fn batch<P, R>(&self, method: &'static str, params: &[P]) -> Result<Vec<R>>
    where
        P: RpcSend,
        R: RpcRecv,
    {
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempt = 0;
        loop {
            let mut batch = self.client.new_batch();
            let mut waiters = Vec::with_capacity(params.len());
            for p in params {
                waiters.push(
                    batch
                        .add_call::<&P, R>(Cow::Borrowed(method), &p)
                        .map_err(|e| Error::Rpc {
                            url: self.url.clone(),
                            what: describe(method, p),
                            reason: e.to_string(),
                        })?,
                );
            }
            let run = async {
                batch.send().await?;
                let mut out = Vec::with_capacity(waiters.len());
                let mut first_err = None;
                for w in waiters {
                    match w.await {
                        Ok(r) => out.push(Some(r)),
                        Err(e) => {
                            out.push(None);
                            first_err.get_or_insert(e);
                        }
                    }
                }
                Ok::<_, TransportError>((out, first_err))
            };
            let (failure, which) = match tokio::time::timeout(self.policy.timeout, run).await {
                Ok(Ok((out, None))) => {
                    return Ok(out.into_iter().map(|r| r.expect("all answered")).collect());
                }
                Ok(Ok((out, Some(e)))) => {
                    let i = out.iter().position(Option::is_none).unwrap_or(0);
                    (classify(&e), describe(method, &params[i]))
                }
                Ok(Err(e)) => (classify(&e), describe_batch(method, params)),
                Err(_) => (
                    Failure::Transient(format!("timed out after {:?}", self.policy.timeout)),
                    describe_batch(method, params),
                ),
            };
            match failure {
                Failure::Transient(reason) if attempt < self.policy.max_retries => {
                    let wait = self.backoff(attempt);
                    tracing::warn!(url = %self.url, call = %which, %reason, ?wait, attempt, "retrying batch");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                f => return Err(self.give_up(&which, f, attempt + 1)),
            }
        }
    }
}

fn describe<P: RpcSend>(method: &str, params: &P) -> String {
    let p = serde_json::to_string(params).unwrap_or_else(|_| "?".into());
    format!(
        "{method}({})",
        short(p.trim_start_matches('[').trim_end_matches(']'))
    )
}

fn describe_batch<P: RpcSend>(method: &str, params: &[P]) -> String {
    match (params.first(), params.last()) {
        (Some(a), Some(b)) if params.len() > 1 => format!(
            "a batch of {} {method} calls ({} … {})",
            params.len(),
            describe(method, a),
            describe(method, b)
        ),
        (Some(a), _) => describe(method, a),
        _ => format!("an empty batch of {method}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::rpc::json_rpc::ErrorPayload;

    fn resp(code: i64, message: &'static str) -> TransportError {
        RpcError::ErrorResp(ErrorPayload {
            code,
            message: message.into(),
            data: None,
        })
    }

    #[test]
    fn rate_limits_retry_and_missing_methods_do_not() {
        assert!(matches!(
            classify(&resp(-32005, "limit exceeded")),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&resp(429, "Too Many Requests")),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&resp(
                -32601,
                "the method eth_getBlockReceipts does not exist"
            )),
            Failure::Unsupported(_)
        ));
        assert!(matches!(
            classify(&resp(-32602, "invalid argument 0")),
            Failure::Fatal(_)
        ));
        let http = |status| {
            RpcError::Transport(TransportErrorKind::HttpError(
                alloy::transports::HttpError {
                    status,
                    body: String::new(),
                },
            ))
        };
        assert!(matches!(classify(&http(429)), Failure::Transient(_)));
        assert!(matches!(classify(&http(502)), Failure::Transient(_)));
        assert!(matches!(classify(&http(401)), Failure::Fatal(_)));
    }

    #[test]
    fn long_answers_are_shortened_on_char_boundaries() {
        let s = "é".repeat(300);
        let t = short(&s);
        assert!(t.len() < 300 && t.ends_with("(600 bytes)"), "{t}");
    }
}
