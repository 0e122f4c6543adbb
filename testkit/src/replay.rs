//! A JSON-RPC server on 127.0.0.1 that answers from recorded responses, and can misbehave
//! on purpose: the tests drive the real client (alloy, batching, retries) against real
//! mainnet answers and against the faults real endpoints show (rate limits, timeouts,
//! truncated bodies, dropped connections, a wrong chain).
//!
//! Recordings are files named `web3_response.{method}_{params}.json` (the convention of
//! ethereum-etl's test resources): the parameters flattened with `_`, objects as
//! `key_value`, all lowercase. `eth_chainId` and `eth_blockNumber` are answered from the
//! options when not recorded; a method with no recording at all is "method not found".

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use ferret_indexer::{Error, Result};

/// One misbehaviour, applied to one HTTP request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this HTTP status (429, 503, …) and no JSON-RPC body.
    Http(u16),
    /// Answer every call of the request with this JSON-RPC error.
    RpcError(i64, String),
    /// Wait this long before answering.
    Delay(Duration),
    /// Send only the first half of the body.
    Truncate,
    /// Close the connection without answering.
    Close,
}

/// Recorded answers: method → flattened parameters → the JSON-RPC `result`.
#[derive(Debug, Default)]
struct Recordings {
    answers: HashMap<(String, String), Value>,
    methods: HashSet<String>,
}

fn flatten(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.to_ascii_lowercase()),
        Value::Bool(b) => out.push(b.to_string()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Null => out.push("null".into()),
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        Value::Object(m) => {
            for (k, x) in m {
                out.push(k.to_ascii_lowercase());
                flatten(x, out);
            }
        }
    }
}

/// The recording key of a call's parameters.
pub fn params_key(params: &Value) -> String {
    let mut parts = Vec::new();
    flatten(params, &mut parts);
    parts.join("_")
}

struct State {
    rec: Recordings,
    chain_id: Mutex<u64>,
    head: u64,
    faults: Mutex<VecDeque<Fault>>,
    /// (method, text, replacement): applied once to the next answer to a request that
    /// calls `method`.
    rewrites: Mutex<Vec<(String, String, String)>>,
    requests: AtomicUsize,
    calls: Mutex<Vec<String>>,
}

/// A running replay server. Dropping it stops the server.
pub struct ReplayServer {
    url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReplayServer {
    /// Serves the recordings in `dir` on a free port of 127.0.0.1, answering `eth_chainId`
    /// with `chain_id` and `eth_blockNumber` with the highest recorded block.
    pub async fn start(dir: &Path, chain_id: u64) -> Result<Self> {
        let mut rec = Recordings::default();
        let mut head = 0;
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(stem) = name
                .strip_prefix("web3_response.")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let text =
                std::fs::read_to_string(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            let body: Value = serde_json::from_str(&text).map_err(|e| Error::Internal {
                what: format!("recording {}: {e}", entry.path().display()),
            })?;
            let result = body.get("result").cloned().unwrap_or(Value::Null);
            // Method names hold no `_` after their namespace (`eth_getBlockByNumber`,
            // `trace_block`): the first `_` past it starts the parameters.
            let (method, key) = match stem.match_indices('_').nth(1) {
                Some((i, _)) => (&stem[..i], stem[i + 1..].to_ascii_lowercase()),
                None => (stem, String::new()),
            };
            if method == "eth_getBlockByNumber"
                && let Some(n) = result.get("number").and_then(Value::as_str)
                && let Ok(n) = u64::from_str_radix(n.trim_start_matches("0x"), 16)
            {
                head = head.max(n);
            }
            rec.methods.insert(method.to_string());
            rec.answers.insert((method.to_string(), key), result);
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        let state = Arc::new(State {
            rec,
            chain_id: Mutex::new(chain_id),
            head,
            faults: Mutex::new(VecDeque::new()),
            rewrites: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let _ = serve(stream, st).await;
                });
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            state,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queues faults for the next HTTP requests, one each.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(faults);
    }

    /// Replaces `text` by `with` in the next answer to a request calling `method` (once):
    /// e.g. receipts that name another block, as a node answers when its chain moves
    /// between two requests.
    pub fn rewrite_once(&self, method: &str, text: &str, with: &str) {
        self.state
            .rewrites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((method.into(), text.into(), with.into()));
    }

    /// Changes the chain id answered from now on.
    pub fn set_chain_id(&self, id: u64) {
        *self
            .state
            .chain_id
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = id;
    }

    /// HTTP requests received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Methods called so far, in order (a batch adds each of its calls).
    pub fn calls(&self) -> Vec<String> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn answer(st: &State, call: &Value) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call.get("method").and_then(Value::as_str).unwrap_or("");
    let params = call.get("params").cloned().unwrap_or(Value::Array(vec![]));
    st.calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(method.to_string());
    let key = params_key(&params);
    if let Some(r) = st.rec.answers.get(&(method.to_string(), key.clone())) {
        return json!({"jsonrpc": "2.0", "id": id, "result": r});
    }
    // A block without its transactions' bodies is the recorded full block with only the
    // hashes.
    if method == "eth_getBlockByNumber"
        && let Some(short) = key.strip_suffix("_false")
        && let Some(full) = st
            .rec
            .answers
            .get(&(method.to_string(), format!("{short}_true")))
    {
        let mut b = full.clone();
        if let Some(txs) = b.get_mut("transactions").and_then(Value::as_array_mut) {
            for t in txs.iter_mut() {
                *t = t.get("hash").cloned().unwrap_or(Value::Null);
            }
        }
        return json!({"jsonrpc": "2.0", "id": id, "result": b});
    }
    let result = match method {
        "eth_chainId" => json!(format!(
            "{:#x}",
            *st.chain_id.lock().unwrap_or_else(|p| p.into_inner())
        )),
        "eth_blockNumber" => json!(format!("{:#x}", st.head)),
        // A block the recording does not have: what a node says of a future block.
        "eth_getBlockByNumber" => Value::Null,
        m if st.rec.methods.contains(m) => {
            return json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": -32000, "message": format!("no recorded response for {m}({key})")}});
        }
        m => {
            return json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": -32601, "message": format!("the method {m} does not exist/is not available")}});
        }
    };
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

async fn serve(stream: TcpStream, st: Arc<State>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        // Request line and headers.
        let mut len = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        st.requests.fetch_add(1, Ordering::Relaxed);
        let fault = st
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut status = 200;
        let out = match (&fault, &req) {
            (Some(Fault::Close), _) => return Ok(()),
            (Some(Fault::Http(s)), _) => {
                status = *s;
                Value::Null
            }
            (Some(Fault::RpcError(code, msg)), Value::Array(calls)) => Value::Array(
                calls
                    .iter()
                    .map(|c| json!({"jsonrpc": "2.0", "id": c.get("id"), "error": {"code": code, "message": msg}}))
                    .collect(),
            ),
            (Some(Fault::RpcError(code, msg)), c) => {
                json!({"jsonrpc": "2.0", "id": c.get("id"), "error": {"code": code, "message": msg}})
            }
            (_, Value::Array(calls)) => Value::Array(calls.iter().map(|c| answer(&st, c)).collect()),
            (_, c) => answer(&st, c),
        };
        if let Some(Fault::Delay(d)) = &fault {
            tokio::time::sleep(*d).await;
        }
        let mut bytes = if status == 200 {
            serde_json::to_vec(&out).unwrap_or_default()
        } else {
            b"Too Many Requests".to_vec()
        };
        let calls_method = |m: &str| match &req {
            Value::Array(calls) => calls
                .iter()
                .any(|c| c.get("method").and_then(Value::as_str) == Some(m)),
            c => c.get("method").and_then(Value::as_str) == Some(m),
        };
        let rewrite = {
            let mut rw = st.rewrites.lock().unwrap_or_else(|p| p.into_inner());
            rw.iter()
                .position(|(m, _, _)| calls_method(m))
                .map(|i| rw.remove(i))
        };
        if let Some((_, text, with)) = rewrite {
            bytes = String::from_utf8_lossy(&bytes)
                .replace(&text, &with)
                .into_bytes();
        }
        if matches!(fault, Some(Fault::Truncate)) {
            bytes.truncate(bytes.len() / 2);
        }
        let reason = if status == 200 { "OK" } else { "Error" };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            bytes.len()
        );
        w.write_all(head.as_bytes()).await?;
        w.write_all(&bytes).await?;
        w.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_recording_names() {
        assert_eq!(params_key(&json!(["0xB872", true])), "0xb872_true");
        assert_eq!(
            params_key(&json!(["0xf4240", {"tracer": "callTracer"}])),
            "0xf4240_tracer_calltracer"
        );
        assert_eq!(params_key(&json!([])), "");
    }
}
