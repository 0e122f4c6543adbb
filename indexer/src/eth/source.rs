//! Reading blocks from a node: the block with its transactions, the receipts (one
//! `eth_getBlockReceipts` per block, or per-transaction receipts where the node lacks it)
//! and the internal calls (geth's `callTracer` or parity's `trace_block`), checked against
//! each other before anything is written.

use std::sync::atomic::{AtomicU8, Ordering};

use alloy::network::AnyRpcBlock;
use alloy::primitives::{Address, B256, Bytes, U64, U128, U256};
use alloy::rpc::types::Log;
use alloy::rpc::types::trace::geth::CallFrame;
use alloy::rpc::types::trace::parity::{Action, CallType, LocalizedTransactionTrace, TraceOutput};
use serde::Deserialize;
use serde_json::json;

use super::rpc::Rpc;
use crate::{Error, Result};

/// Where internal calls come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// `callTracer` if the node serves it, else `trace_block`, else none (with a warning).
    Auto,
    /// geth's `debug_traceBlockByNumber` with `callTracer`.
    CallTracer,
    /// parity/erigon/reth `trace_block`.
    Parity,
    /// No internal calls: `eth.traces` stays empty and `eth.transfers` lacks internal
    /// transfers.
    Off,
}

impl std::str::FromStr for TraceMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "calltracer" | "call-tracer" | "geth" => Ok(Self::CallTracer),
            "parity" | "trace_block" => Ok(Self::Parity),
            "off" | "none" => Ok(Self::Off),
            _ => Err(format!(
                "unknown trace source `{s}` (auto, callTracer, parity or off)"
            )),
        }
    }
}

impl std::fmt::Display for TraceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::CallTracer => "callTracer",
            Self::Parity => "parity",
            Self::Off => "off",
        })
    }
}

/// A receipt, read tolerantly: nodes before 2017 send no `status` (pre-Byzantium receipts
/// carry a state root instead), older ones no `effectiveGasPrice`, `from` or `to`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub transaction_hash: B256,
    #[serde(default)]
    pub transaction_index: Option<U64>,
    #[serde(default)]
    pub block_hash: Option<B256>,
    #[serde(default)]
    pub status: Option<U64>,
    pub gas_used: U64,
    pub cumulative_gas_used: U64,
    #[serde(default)]
    pub effective_gas_price: Option<U128>,
    #[serde(default)]
    pub contract_address: Option<Address>,
    #[serde(default)]
    pub blob_gas_used: Option<U64>,
    #[serde(default)]
    pub blob_gas_price: Option<U128>,
    pub logs: Vec<Log>,
}

/// One internal call (or the top call of a transaction), from either tracer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Position of the transaction in the block.
    pub tx_pos: usize,
    /// Position in the call tree (empty for the top call).
    pub trace_address: Vec<usize>,
    /// call, delegatecall, staticcall, callcode, create, create2, selfdestruct.
    pub call_type: String,
    pub from: Address,
    pub to: Option<Address>,
    pub value: U256,
    pub gas: Option<u64>,
    pub gas_used: Option<u64>,
    pub input: Bytes,
    pub output: Option<Bytes>,
    pub error: Option<String>,
    /// The call or one of its ancestors failed.
    pub reverted: bool,
}

impl Trace {
    /// Whether ETH moved from `from` to `to` in this call and stayed moved.
    pub fn moves_value(&self) -> bool {
        !self.reverted
            && !self.value.is_zero()
            && self.to.is_some()
            && matches!(
                self.call_type.as_str(),
                "call" | "create" | "create2" | "selfdestruct"
            )
    }
}

/// Everything read for one block.
#[derive(Clone, Debug)]
pub struct BlockData {
    pub block: AnyRpcBlock,
    pub receipts: Vec<Receipt>,
    /// `None` when traces are off.
    pub traces: Option<Vec<Trace>>,
}

impl BlockData {
    pub fn number(&self) -> u64 {
        self.block.header.inner.number
    }
    pub fn hash(&self) -> B256 {
        self.block.header.hash
    }
    pub fn parent_hash(&self) -> B256 {
        self.block.header.inner.parent_hash
    }
}

/// A block header's identity, for reorg checks.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderId {
    pub number: U64,
    pub hash: B256,
    pub parent_hash: B256,
}

/// One entry of `debug_traceBlockByNumber`'s answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GethTraceEntry {
    #[serde(default)]
    tx_hash: Option<B256>,
    #[serde(default)]
    result: Option<CallFrame>,
    #[serde(default)]
    error: Option<String>,
}

const RECEIPTS_UNKNOWN: u8 = 0;
const RECEIPTS_BLOCK: u8 = 1;
const RECEIPTS_PER_TX: u8 = 2;

/// Reads blocks from one endpoint.
#[derive(Debug)]
pub struct Source {
    rpc: Rpc,
    traces: TraceMode,
    receipts: AtomicU8,
}

fn qty(n: u64) -> String {
    format!("{n:#x}")
}

impl Source {
    /// A source reading traces as `traces` says (`Auto` is resolved by [`Source::resolve`]).
    pub fn new(rpc: Rpc, traces: TraceMode) -> Self {
        Self {
            rpc,
            traces,
            receipts: AtomicU8::new(RECEIPTS_UNKNOWN),
        }
    }

    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The trace source in use.
    pub fn trace_mode(&self) -> TraceMode {
        self.traces
    }

    /// The node's chain id.
    pub async fn chain_id(&self) -> Result<u64> {
        let id: U64 = self.rpc.call("eth_chainId", ()).await?;
        Ok(id.to())
    }

    /// The node's latest block number.
    pub async fn head(&self) -> Result<u64> {
        let n: U64 = self.rpc.call("eth_blockNumber", ()).await?;
        Ok(n.to())
    }

    /// Hash and parent of the canonical block at `n`, if the node has it.
    pub async fn header(&self, n: u64) -> Result<Option<HeaderId>> {
        self.rpc.call("eth_getBlockByNumber", (qty(n), false)).await
    }

    /// Settles `Auto` by asking the node for the traces of `probe_block`.
    pub async fn resolve(&mut self, probe_block: u64) -> Result<TraceMode> {
        if self.traces != TraceMode::Auto {
            return Ok(self.traces);
        }
        for mode in [TraceMode::CallTracer, TraceMode::Parity] {
            match self.raw_traces(mode, &[probe_block]).await {
                Ok(_) => {
                    self.traces = mode;
                    tracing::info!(traces = %mode, "trace source");
                    return Ok(mode);
                }
                Err(Error::RpcUnsupported { method, .. }) => {
                    tracing::debug!(method, "trace method not served");
                }
                Err(e) => return Err(e),
            }
        }
        tracing::warn!(
            url = self.rpc.url(),
            "the node serves neither debug_traceBlockByNumber nor trace_block: internal calls are not indexed and eth.transfers lacks internal ETH transfers"
        );
        self.traces = TraceMode::Off;
        Ok(TraceMode::Off)
    }

    /// Reads the blocks `numbers` (consecutive or not) with receipts and traces, in batches.
    /// A block the node does not have yet is an error.
    pub async fn blocks(&self, numbers: &[u64]) -> Result<Vec<BlockData>> {
        let params: Vec<(String, bool)> = numbers.iter().map(|&n| (qty(n), true)).collect();
        let blocks: Vec<Option<AnyRpcBlock>> =
            self.rpc.batch("eth_getBlockByNumber", &params).await?;
        let blocks: Vec<AnyRpcBlock> = blocks
            .into_iter()
            .zip(numbers)
            .map(|(b, &n)| {
                let b = b.ok_or_else(|| Error::ChainMoved {
                    url: self.rpc.url().to_string(),
                    block: n,
                    what: "the node does not have this block (null answer)".into(),
                })?;
                if b.header.inner.number != n {
                    return Err(Error::RpcData {
                        url: self.rpc.url().to_string(),
                        block: n,
                        what: format!("asked for block {n}, got {}", b.header.inner.number),
                    });
                }
                Ok(b)
            })
            .collect::<Result<_>>()?;
        let receipts = self.receipts(&blocks).await?;
        let traces = match self.traces {
            TraceMode::Off | TraceMode::Auto => None,
            mode => Some(self.raw_traces(mode, numbers).await?),
        };
        let mut out = Vec::with_capacity(blocks.len());
        let mut traces = traces.map(Vec::into_iter);
        for (block, receipts) in blocks.into_iter().zip(receipts) {
            let traces = traces.as_mut().map(|t| t.next().expect("one per block"));
            let data = BlockData {
                block,
                receipts,
                traces: None,
            };
            let traces = match traces {
                Some(raw) => Some(self.check_traces(&data, raw)?),
                None => None,
            };
            out.push(BlockData { traces, ..data });
        }
        Ok(out)
    }

    /// The internal calls of blocks `numbers` from the given tracer, without the checks
    /// against the blocks' transactions that [`Source::blocks`] makes.
    pub async fn traces(&self, mode: TraceMode, numbers: &[u64]) -> Result<Vec<Vec<Trace>>> {
        let raw = self.raw_traces(mode, numbers).await?;
        Ok(raw
            .into_iter()
            .map(|r| match r {
                RawTraces::Geth(entries) => {
                    let mut out = Vec::new();
                    for (pos, e) in entries.iter().enumerate() {
                        if let Some(f) = &e.result {
                            flatten_frame(pos, f, &mut Vec::new(), false, &mut out);
                        }
                    }
                    out
                }
                RawTraces::Parity(ts) => {
                    let mut out: Vec<Trace> = ts
                        .into_iter()
                        .filter_map(|t| {
                            let pos = usize::try_from(t.transaction_position?).ok()?;
                            from_parity(pos, t)
                        })
                        .collect();
                    mark_reverted(&mut out);
                    out
                }
            })
            .collect())
    }

    fn moved(&self, block: u64, what: String) -> Error {
        Error::ChainMoved {
            url: self.rpc.url().to_string(),
            block,
            what,
        }
    }

    fn data_err(&self, block: u64, what: String) -> Error {
        Error::RpcData {
            url: self.rpc.url().to_string(),
            block,
            what,
        }
    }

    async fn receipts(&self, blocks: &[AnyRpcBlock]) -> Result<Vec<Vec<Receipt>>> {
        let mut mode = self.receipts.load(Ordering::Relaxed);
        if mode != RECEIPTS_PER_TX {
            let params: Vec<(String,)> = blocks
                .iter()
                .map(|b| (qty(b.header.inner.number),))
                .collect();
            match self
                .rpc
                .batch::<_, Option<Vec<Receipt>>>("eth_getBlockReceipts", &params)
                .await
            {
                Ok(r) => {
                    self.receipts.store(RECEIPTS_BLOCK, Ordering::Relaxed);
                    return blocks
                        .iter()
                        .zip(r)
                        .map(|(b, r)| {
                            let n = b.header.inner.number;
                            let r = r.ok_or_else(|| {
                                self.data_err(n, "eth_getBlockReceipts answered null".into())
                            })?;
                            self.check_receipts(b, r)
                        })
                        .collect();
                }
                Err(Error::RpcUnsupported { .. }) if mode == RECEIPTS_UNKNOWN => {
                    tracing::info!(
                        url = self.rpc.url(),
                        "eth_getBlockReceipts is not served: reading receipts per transaction"
                    );
                    self.receipts.store(RECEIPTS_PER_TX, Ordering::Relaxed);
                    mode = RECEIPTS_PER_TX;
                }
                Err(e) => return Err(e),
            }
        }
        debug_assert_eq!(mode, RECEIPTS_PER_TX);
        let hashes: Vec<(B256,)> = blocks
            .iter()
            .flat_map(|b| b.transactions.hashes().map(|h| (h,)))
            .collect();
        let mut all: Vec<Option<Receipt>> =
            self.rpc.batch("eth_getTransactionReceipt", &hashes).await?;
        let mut out = Vec::with_capacity(blocks.len());
        let mut rest = all.drain(..);
        for b in blocks {
            let n = b.header.inner.number;
            let mut rs = Vec::with_capacity(b.transactions.len());
            for h in b.transactions.hashes() {
                rs.push(
                    rest.next()
                        .flatten()
                        .ok_or_else(|| self.data_err(n, format!("no receipt for {h}")))?,
                );
            }
            out.push(self.check_receipts(b, rs)?);
        }
        Ok(out)
    }

    /// Receipts must be the block's, one per transaction, in order.
    fn check_receipts(&self, b: &AnyRpcBlock, rs: Vec<Receipt>) -> Result<Vec<Receipt>> {
        let n = b.header.inner.number;
        if rs.len() != b.transactions.len() {
            return Err(self.data_err(
                n,
                format!(
                    "{} receipts for {} transactions",
                    rs.len(),
                    b.transactions.len()
                ),
            ));
        }
        for (i, (r, h)) in rs.iter().zip(b.transactions.hashes()).enumerate() {
            if r.transaction_hash != h {
                return Err(self.data_err(
                    n,
                    format!(
                        "receipt {i} is for {} but transaction {i} is {h}",
                        r.transaction_hash
                    ),
                ));
            }
            if let Some(bh) = r.block_hash
                && bh != b.header.hash
            {
                return Err(self.moved(
                    n,
                    format!(
                        "receipt of {h} is from block {bh}, not {} (the chain moved while reading)",
                        b.header.hash
                    ),
                ));
            }
        }
        Ok(rs)
    }

    async fn raw_traces(&self, mode: TraceMode, numbers: &[u64]) -> Result<Vec<RawTraces>> {
        match mode {
            TraceMode::CallTracer => {
                let params: Vec<_> = numbers
                    .iter()
                    .map(|&n| (qty(n), json!({"tracer": "callTracer"})))
                    .collect();
                let r: Vec<Vec<GethTraceEntry>> =
                    self.rpc.batch("debug_traceBlockByNumber", &params).await?;
                Ok(r.into_iter().map(RawTraces::Geth).collect())
            }
            TraceMode::Parity => {
                let params: Vec<(String,)> = numbers.iter().map(|&n| (qty(n),)).collect();
                let r: Vec<Option<Vec<LocalizedTransactionTrace>>> =
                    self.rpc.batch("trace_block", &params).await?;
                Ok(r.into_iter()
                    .map(|t| RawTraces::Parity(t.unwrap_or_default()))
                    .collect())
            }
            TraceMode::Off | TraceMode::Auto => Ok(Vec::new()),
        }
    }

    fn check_traces(&self, d: &BlockData, raw: RawTraces) -> Result<Vec<Trace>> {
        let n = d.number();
        let hashes: Vec<B256> = d.block.transactions.hashes().collect();
        let traces = match raw {
            RawTraces::Geth(entries) => {
                if entries.len() != hashes.len() {
                    return Err(self.data_err(
                        n,
                        format!(
                            "callTracer returned {} traces for {} transactions",
                            entries.len(),
                            hashes.len()
                        ),
                    ));
                }
                let mut out = Vec::new();
                for (pos, e) in entries.into_iter().enumerate() {
                    if let Some(h) = e.tx_hash
                        && h != hashes[pos]
                    {
                        return Err(self.data_err(
                            n,
                            format!(
                                "trace {pos} is for {h}, transaction {pos} is {}",
                                hashes[pos]
                            ),
                        ));
                    }
                    let frame = e.result.ok_or_else(|| {
                        self.data_err(
                            n,
                            format!(
                                "callTracer failed on {}: {}",
                                hashes[pos],
                                e.error.unwrap_or_default()
                            ),
                        )
                    })?;
                    flatten_frame(pos, &frame, &mut Vec::new(), false, &mut out);
                }
                out
            }
            RawTraces::Parity(ts) => {
                let mut out = Vec::new();
                for t in ts {
                    if let Some(bh) = t.block_hash
                        && bh != d.hash()
                    {
                        return Err(self.moved(
                            n,
                            format!("trace_block answered for block {bh} (the chain moved while reading)"),
                        ));
                    }
                    // Block and uncle rewards are issuance, not calls.
                    let Some(pos) = t.transaction_position else {
                        continue;
                    };
                    let pos = usize::try_from(pos).unwrap_or(usize::MAX);
                    if pos >= hashes.len() || t.transaction_hash.is_some_and(|h| h != hashes[pos]) {
                        return Err(self.data_err(
                            n,
                            format!("trace_block names transaction position {pos} that does not match the block"),
                        ));
                    }
                    if let Some(tr) = from_parity(pos, t) {
                        out.push(tr);
                    }
                }
                mark_reverted(&mut out);
                out
            }
        };
        // The top call of every transaction is its own from, to and value.
        for (pos, h) in hashes.iter().enumerate() {
            let Some(top) = traces
                .iter()
                .find(|t| t.tx_pos == pos && t.trace_address.is_empty())
            else {
                return Err(self.data_err(n, format!("no top-level trace for {h}")));
            };
            let tx = d
                .block
                .transactions
                .txns()
                .nth(pos)
                .expect("full transactions");
            use alloy::consensus::Transaction as _;
            use alloy::network::TransactionResponse;
            if top.from != tx.from() || top.value != tx.value() {
                return Err(self.data_err(
                    n,
                    format!("the trace of {h} does not match the transaction (from or value)"),
                ));
            }
        }
        Ok(traces)
    }
}

enum RawTraces {
    Geth(Vec<GethTraceEntry>),
    Parity(Vec<LocalizedTransactionTrace>),
}

fn flatten_frame(
    pos: usize,
    f: &CallFrame,
    path: &mut Vec<usize>,
    parent_reverted: bool,
    out: &mut Vec<Trace>,
) {
    let reverted = parent_reverted || f.error.is_some();
    out.push(Trace {
        tx_pos: pos,
        trace_address: path.clone(),
        call_type: f.typ.to_ascii_lowercase(),
        from: f.from,
        to: f.to,
        value: f.value.unwrap_or_default(),
        gas: Some(f.gas.to()),
        gas_used: Some(f.gas_used.to()),
        input: f.input.clone(),
        output: f.output.clone(),
        error: f.error.clone(),
        reverted,
    });
    for (i, c) in f.calls.iter().enumerate() {
        path.push(i);
        flatten_frame(pos, c, path, reverted, out);
        path.pop();
    }
}

fn from_parity(pos: usize, t: LocalizedTransactionTrace) -> Option<Trace> {
    let tt = t.trace;
    let (gas_used, output, created) = match &tt.result {
        Some(TraceOutput::Call(c)) => (Some(c.gas_used), Some(c.output.clone()), None),
        Some(TraceOutput::Create(c)) => (Some(c.gas_used), Some(c.code.clone()), Some(c.address)),
        None => (None, None, None),
    };
    let (call_type, from, to, value, gas, input) = match tt.action {
        Action::Call(c) => {
            let ty = match c.call_type {
                CallType::Call | CallType::None => "call",
                CallType::CallCode => "callcode",
                CallType::DelegateCall => "delegatecall",
                CallType::StaticCall => "staticcall",
                CallType::AuthCall => "authcall",
            };
            (
                ty.to_string(),
                c.from,
                Some(c.to),
                c.value,
                Some(c.gas),
                c.input,
            )
        }
        Action::Create(c) => {
            let ty = match c.creation_method {
                alloy::rpc::types::trace::parity::CreationMethod::Create2 => "create2",
                _ => "create",
            };
            (
                ty.to_string(),
                c.from,
                created,
                c.value,
                Some(c.gas),
                c.init,
            )
        }
        Action::Selfdestruct(s) => (
            "selfdestruct".to_string(),
            s.address,
            Some(s.refund_address),
            s.balance,
            None,
            Bytes::new(),
        ),
        Action::Reward(_) => return None,
    };
    Some(Trace {
        tx_pos: pos,
        trace_address: tt.trace_address,
        call_type,
        from,
        to,
        value,
        gas,
        gas_used,
        input,
        output,
        error: tt.error,
        reverted: false,
    })
}

/// Parity reports an error only on the call that failed; its descendants were reverted too.
fn mark_reverted(traces: &mut [Trace]) {
    let failed: Vec<(usize, Vec<usize>)> = traces
        .iter()
        .filter(|t| t.error.is_some())
        .map(|t| (t.tx_pos, t.trace_address.clone()))
        .collect();
    for t in traces.iter_mut() {
        t.reverted = failed
            .iter()
            .any(|(pos, a)| *pos == t.tx_pos && t.trace_address.starts_with(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pos: usize, addr: &[usize], error: bool) -> Trace {
        Trace {
            tx_pos: pos,
            trace_address: addr.to_vec(),
            call_type: "call".into(),
            from: Address::ZERO,
            to: Some(Address::ZERO),
            value: U256::from(1),
            gas: None,
            gas_used: None,
            input: Bytes::new(),
            output: None,
            error: error.then(|| "Reverted".into()),
            reverted: false,
        }
    }

    #[test]
    fn a_failed_call_reverts_its_subtree_only() {
        let mut ts = vec![
            t(0, &[], false),
            t(0, &[0], true),
            t(0, &[0, 0], false),
            t(0, &[1], false),
            t(1, &[0, 0], false),
        ];
        mark_reverted(&mut ts);
        let r: Vec<bool> = ts.iter().map(|t| t.reverted).collect();
        assert_eq!(r, [false, true, true, false, false]);
        assert!(!ts[2].moves_value() && ts[3].moves_value());
    }

    #[test]
    fn trace_modes_parse() {
        assert_eq!("callTracer".parse::<TraceMode>(), Ok(TraceMode::CallTracer));
        assert_eq!("parity".parse::<TraceMode>(), Ok(TraceMode::Parity));
        assert!("x".parse::<TraceMode>().is_err());
    }
}
