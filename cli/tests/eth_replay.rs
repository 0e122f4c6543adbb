//! Ethereum mainnet through the real client: recorded JSON-RPC answers (2015–2016 blocks,
//! receipts, token transfers, traces) served by the replay server, indexed by
//! `ferret index eth`, read back with SQL and compared with what the recordings say. Faults
//! real endpoints show (rate limits, timeouts, truncated bodies, a wrong chain) are
//! retried or refused with a clear error, never half-committed.

mod common;

use std::path::Path;
use std::time::Duration;

use ferret_indexer::eth::{EthOptions, Source, TraceMode, index_eth};
use ferret_schemas::{Chain, Warehouse};
use ferret_testkit::replay::{Fault, ReplayServer};
use serde_json::Value;

const BLOCK: u64 = 0x76250; // 483,920: four transactions, two ERC-20 transfers

fn recording(dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(format!("web3_response.{name}.json")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str::<Value>(&text).expect("json")["result"].clone()
}

fn hex_u128(v: &Value) -> u128 {
    u128::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("hex")
}

fn opts(url: &str) -> EthOptions {
    let mut o = EthOptions::new(url);
    o.from = BLOCK;
    o.to = Some(BLOCK);
    o.traces = TraceMode::Off;
    o.retry.initial_backoff = Duration::from_millis(5);
    o.retry.timeout = Duration::from_secs(2);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mainnet_block_decodes_as_recorded() {
    let Some(dir) = common::eth_rpc_fixtures() else {
        return;
    };
    let server = ReplayServer::start(&dir, 1).await.expect("replay");
    let tmp = tempfile::tempdir().expect("tmp");
    let wh_url = tmp.path().join("wh");
    let wh_url = wh_url.to_str().expect("utf8");
    let out = common::ferret(&[
        "index",
        "eth",
        "--rpc",
        server.url(),
        "--warehouse",
        wh_url,
        "--from",
        &BLOCK.to_string(),
        "--to",
        &BLOCK.to_string(),
        "--traces",
        "off",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("indexed chain 1 blocks 483920..=483920"),
        "{summary}"
    );
    // eth_getBlockReceipts is not in the recording: the indexer fell back to one receipt
    // per transaction.
    let calls = server.calls();
    assert!(
        calls.iter().any(|c| c == "eth_getBlockReceipts"),
        "{calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "eth_getTransactionReceipt")
            .count(),
        4
    );

    let wh = Warehouse::open(wh_url).expect("open");
    let block = recording(&dir, "eth_getBlockByNumber_0x76250_true");
    let row = common::scalar(
        &wh,
        "SELECT block_number, block_hash, parent_hash, miner, gas_used, transaction_count, size, \
         CAST(timestamp AS BIGINT) FROM eth.blocks",
    )
    .await;
    assert_eq!(
        row,
        format!(
            "{BLOCK}|{}|{}|{}|{}|4|{}|{}",
            block["hash"].as_str().expect("hash"),
            block["parentHash"].as_str().expect("parent"),
            block["miner"].as_str().expect("miner"),
            hex_u128(&block["gasUsed"]),
            hex_u128(&block["size"]),
            hex_u128(&block["timestamp"]),
        )
    );

    // Transactions: every field against the recorded transaction and its receipt.
    let rows = common::query(
        &wh,
        "SELECT transaction_index, transaction_hash, nonce, from_address, to_address, \
         CAST(value AS VARCHAR), CAST(gas_price AS VARCHAR), gas_limit, transaction_type, \
         success, gas_used, cumulative_gas_used, CAST(effective_gas_price AS VARCHAR) \
         FROM eth.transactions ORDER BY transaction_index",
    )
    .await;
    let txs = block["transactions"].as_array().expect("txs");
    assert_eq!(rows.len(), txs.len());
    for (row, tx) in rows.iter().zip(txs) {
        let hash = tx["hash"].as_str().expect("hash");
        let r = recording(&dir, &format!("eth_getTransactionReceipt_{hash}"));
        let expected = format!(
            "{}|{hash}|{}|{}|{}|{}|{}|{}|0|NULL|{}|{}|{}",
            hex_u128(&tx["transactionIndex"]),
            hex_u128(&tx["nonce"]),
            tx["from"].as_str().expect("from"),
            tx["to"].as_str().expect("to"),
            hex_u128(&tx["value"]),
            hex_u128(&tx["gasPrice"]),
            hex_u128(&tx["gas"]),
            hex_u128(&r["gasUsed"]),
            hex_u128(&r["cumulativeGasUsed"]),
            hex_u128(&r["effectiveGasPrice"]),
        );
        // Pre-Byzantium receipts carry a state root, not a status: success is unknown.
        assert!(r["status"].is_null() && r["root"].is_string());
        assert_eq!(row, &expected);
    }
    assert!(
        summary.contains("without a known status (pre-Byzantium, no traces): 4"),
        "{summary}"
    );

    // Logs and the ERC-20 transfers decoded from them.
    let mut expected_logs = Vec::new();
    let mut expected_tokens = Vec::new();
    for tx in txs {
        let r = recording(
            &dir,
            &format!(
                "eth_getTransactionReceipt_{}",
                tx["hash"].as_str().expect("h")
            ),
        );
        for l in r["logs"].as_array().expect("logs") {
            let topics: Vec<&str> = l["topics"]
                .as_array()
                .expect("t")
                .iter()
                .map(|t| t.as_str().expect("t"))
                .collect();
            expected_logs.push(format!(
                "{}|{}|{}|{}",
                hex_u128(&l["logIndex"]),
                l["address"].as_str().expect("a"),
                topics[0],
                l["data"].as_str().expect("d").trim_start_matches("0x"),
            ));
            let addr = |t: &str| format!("0x{}", &t[26..]);
            expected_tokens.push(format!(
                "{}|{}|{}|{}|erc20|{}",
                hex_u128(&l["logIndex"]),
                l["address"].as_str().expect("a"),
                addr(topics[1]),
                addr(topics[2]),
                hex_u128(&l["data"]),
            ));
        }
    }
    assert_eq!(
        expected_tokens.len(),
        2,
        "the recording holds two Transfer events"
    );
    let logs = common::query(
        &wh,
        "SELECT log_index, address, topic0, encode(data, 'hex') FROM eth.logs ORDER BY log_index",
    )
    .await;
    assert_eq!(logs, expected_logs);
    let tokens = common::query(
        &wh,
        "SELECT log_index, token_address, from_address, to_address, standard, value_string \
         FROM eth.token_transfers ORDER BY log_index",
    )
    .await;
    assert_eq!(tokens, expected_tokens);

    // The unified transfers: two ETH payments and the two token transfers, with the exact
    // amounts usable in arithmetic.
    let transfers = common::query(
        &wh,
        "SELECT transaction_index, ordinal, kind, asset, CAST(value AS VARCHAR) FROM eth.transfers \
         ORDER BY transaction_index, ordinal",
    )
    .await;
    let token = "0xf4eced2f682ce333f96f2d8966c613ded8fc95dd";
    assert_eq!(
        transfers,
        [
            format!("0|0|token|{token}|100000"),
            format!("1|0|token|{token}|200000"),
            "2|0|transaction|ETH|11000440000000000".to_string(),
            "3|0|transaction|ETH|1530219620000000000".to_string(),
        ]
    );
    assert_eq!(
        common::scalar(
            &wh,
            "SELECT CAST(SUM(value) AS VARCHAR) FROM eth.transfers WHERE asset = 'ETH'"
        )
        .await,
        "1541220060000000000"
    );

    // A rerun has nothing new and changes nothing.
    let before = common::dump_chain(&wh, Chain::Eth).await;
    let again = index_eth(&wh, &opts(server.url()), None)
        .await
        .expect("rerun");
    assert_eq!(again.heights, None);
    assert_eq!(common::dump_chain(&wh, Chain::Eth).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mainnet_traces_agree_between_tracers_and_with_the_recording() {
    let Some(dir) = common::eth_rpc_fixtures() else {
        return;
    };
    let server = ReplayServer::start(&dir, 1).await.expect("replay");
    let rpc = ferret_indexer::eth::Rpc::connect(server.url(), Default::default())
        .await
        .expect("connect");
    let source = Source::new(rpc, TraceMode::Off);
    let geth = source
        .traces(TraceMode::CallTracer, &[1_000_000])
        .await
        .expect("callTracer")
        .remove(0);
    let parity = source
        .traces(TraceMode::Parity, &[1_000_000])
        .await
        .expect("trace_block")
        .remove(0);
    // For CALLCODE, callTracer names the code's account and parity the executing one; the
    // value stays with the caller either way.
    let key = |t: &ferret_indexer::eth::source::Trace| {
        let to = if t.call_type == "callcode" {
            None
        } else {
            t.to
        };
        format!(
            "{}|{:?}|{}|{:#x}|{:?}|{}|{}|{}",
            t.tx_pos,
            t.trace_address,
            t.call_type,
            t.from,
            to,
            t.value,
            t.reverted,
            t.moves_value()
        )
    };
    let g: Vec<String> = geth.iter().map(key).collect();
    let p: Vec<String> = parity.iter().map(key).collect();
    // The block reward trace_block adds is issuance, not a call: both give the same calls.
    assert_eq!(g, p);
    let rec = recording(&dir, "debug_traceBlockByNumber_0xf4240_tracer_calltracer");
    let top = &rec[0]["result"];
    assert_eq!(g.len(), 3, "{g:?}");
    assert_eq!(
        geth[0].value.to_string(),
        hex_u128(&top["value"]).to_string()
    );
    assert_eq!(
        format!("{:#x}", geth[0].from),
        top["from"].as_str().expect("from")
    );
    assert_eq!(geth[1].call_type, "callcode");
    assert_eq!(geth[1].trace_address, [0]);
    // CALLCODE runs the callee's code in the caller's account: no value leaves it.
    assert!(!geth[1].moves_value());
    assert_eq!(geth[2].tx_pos, 1);
    assert_eq!(
        geth[2].value.to_string(),
        hex_u128(&rec[1]["result"]["value"]).to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_blocks_decode_and_link() {
    let Some(dir) = common::eth_rpc_fixtures() else {
        return;
    };
    let server = ReplayServer::start(&dir, 1).await.expect("replay");
    let rpc = ferret_indexer::eth::Rpc::connect(server.url(), Default::default())
        .await
        .expect("connect");
    let source = Source::new(rpc, TraceMode::Off);
    let a = source.header(0xb872).await.expect("a").expect("recorded");
    let b = source.header(0xb873).await.expect("b").expect("recorded");
    assert_eq!(b.parent_hash, a.hash);
    assert_eq!(
        format!("{:#x}", a.hash),
        recording(&dir, "eth_getBlockByNumber_0xb872_true")["hash"]
            .as_str()
            .expect("h")
    );
    // A block the node does not have is a clear error, not an empty block.
    assert!(source.header(0xb874).await.expect("answer").is_none());
    let err = source.blocks(&[0xb874]).await.expect_err("missing block");
    assert!(
        err.to_string()
            .contains("block 47220: the node does not have this block"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_give_the_same_tables() {
    let Some(dir) = common::eth_rpc_fixtures() else {
        return;
    };
    let clean_server = ReplayServer::start(&dir, 1).await.expect("replay");
    let clean = Warehouse::open("memory://eth-faults-clean").expect("wh");
    index_eth(&clean, &opts(clean_server.url()), None)
        .await
        .expect("clean run");

    let server = ReplayServer::start(&dir, 1).await.expect("replay");
    server.inject([
        Fault::Http(429),
        Fault::RpcError(-32005, "limit exceeded".into()),
        Fault::Truncate,
        Fault::Delay(Duration::from_secs(3)),
        Fault::Close,
        Fault::Http(503),
        Fault::RpcError(429, "Too Many Requests".into()),
    ]);
    let wh = Warehouse::open("memory://eth-faults").expect("wh");
    let s = index_eth(&wh, &opts(server.url()), None)
        .await
        .expect("retried to success");
    assert_eq!(s.counts.transactions, 4);
    assert!(server.requests() >= clean_server.requests() + 7);
    assert_eq!(
        common::dump_chain(&wh, Chain::Eth).await,
        common::dump_chain(&clean, Chain::Eth).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_another_block_are_read_again() {
    let Some(dir) = common::eth_rpc_fixtures() else {
        return;
    };
    let clean_server = ReplayServer::start(&dir, 1).await.expect("replay");
    let clean = Warehouse::open("memory://eth-moved-clean").expect("wh");
    index_eth(&clean, &opts(clean_server.url()), None)
        .await
        .expect("clean run");
    // The receipts answer names another block, as when the node's chain moves between
    // the block request and the receipts request: the chunk is read again, not committed
    // half-consistent, and not an error.
    let server = ReplayServer::start(&dir, 1).await.expect("replay");
    let block_hash = "0x246edb4b351d93c27926f4649bcf6c24366e2a7c7c718dc9158eea20c03bc6ae";
    let other = format!("0x{}", "ab".repeat(32));
    server.rewrite_once("eth_getTransactionReceipt", block_hash, &other);
    let wh = Warehouse::open("memory://eth-moved").expect("wh");
    let mut o = opts(server.url());
    o.poll = Duration::from_millis(10);
    index_eth(&wh, &o, None).await.expect("read again");
    let receipts = server
        .calls()
        .iter()
        .filter(|c| *c == "eth_getTransactionReceipt")
        .count();
    assert_eq!(receipts, 8, "the four receipts were read twice");
    assert_eq!(
        common::dump_chain(&wh, Chain::Eth).await,
        common::dump_chain(&clean, Chain::Eth).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_rate_limits_and_wrong_chains_fail_clearly_and_commit_nothing() {
    let Some(dir) = common::eth_rpc_fixtures() else {
        return;
    };
    let server = ReplayServer::start(&dir, 1).await.expect("replay");
    let wh = Warehouse::open("memory://eth-refusals").expect("wh");
    let mut o = opts(server.url());
    o.retry.max_retries = 2;
    // The chain id passes; every later request is rate limited.
    server.inject(
        std::iter::once(Fault::Delay(Duration::ZERO))
            .chain(std::iter::repeat_n(Fault::Http(429), 100)),
    );
    let err = index_eth(&wh, &o, None).await.expect_err("gives up");
    let msg = err.to_string();
    assert!(
        msg.contains(server.url())
            && msg.contains("HTTP 429")
            && msg.contains("gave up after 3 attempts"),
        "{msg}"
    );
    assert!(wh.load_manifest(Chain::Eth).await.expect("load").is_none());

    // Truncated answers forever: the error says the answer was undecodable.
    let server = ReplayServer::start(&dir, 1).await.expect("replay");
    server.inject(
        std::iter::once(Fault::Delay(Duration::ZERO))
            .chain(std::iter::repeat_n(Fault::Truncate, 100)),
    );
    let mut o = opts(server.url());
    o.retry.max_retries = 1;
    let err = index_eth(&wh, &o, None).await.expect_err("gives up");
    assert!(err.to_string().contains("undecodable response"), "{err}");
    assert!(wh.load_manifest(Chain::Eth).await.expect("load").is_none());

    // Index for real, then point the same warehouse at a node of another chain.
    let server = ReplayServer::start(&dir, 1).await.expect("replay");
    index_eth(&wh, &opts(server.url()), None)
        .await
        .expect("index");
    let before = common::dump_chain(&wh, Chain::Eth).await;
    server.set_chain_id(5);
    let err = index_eth(&wh, &opts(server.url()), None)
        .await
        .expect_err("other chain");
    assert!(
        err.to_string()
            .contains("chain id 5 but the warehouse holds chain id 1"),
        "{err}"
    );
    // --chain-id refuses a node on another chain before anything is read.
    let mut o = opts(server.url());
    o.chain_id = Some(1);
    let err = index_eth(
        &Warehouse::open("memory://eth-refusals-2").expect("wh"),
        &o,
        None,
    )
    .await
    .expect_err("--chain-id");
    assert!(err.to_string().contains("chain id 5"), "{err}");
    assert_eq!(common::dump_chain(&wh, Chain::Eth).await, before);

    // A method the node does not serve is named, not retried.
    let mut o = opts(server.url());
    o.traces = TraceMode::CallTracer;
    server.set_chain_id(1);
    let wh2 = Warehouse::open("memory://eth-refusals-3").expect("wh");
    let err = index_eth(&wh2, &o, None)
        .await
        .expect_err("no trace recorded");
    assert!(
        err.to_string()
            .contains("debug_traceBlockByNumber(\"0x76250\""),
        "{err}"
    );
    assert!(wh2.load_manifest(Chain::Eth).await.expect("load").is_none());

    // Bad arguments through the CLI: a clear message, exit non-zero.
    let out = common::ferret(&[
        "index",
        "eth",
        "--rpc",
        server.url(),
        "--warehouse",
        "memory://x",
        "--traces",
        "bogus",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown trace source `bogus`"));
    let out = common::ferret(&[
        "index",
        "eth",
        "--rpc",
        "http://127.0.0.1:1",
        "--warehouse",
        "memory://x",
        "--retries",
        "0",
        "--timeout-secs",
        "2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http://127.0.0.1:1") && err.contains("eth_chainId"),
        "{err}"
    );
}
