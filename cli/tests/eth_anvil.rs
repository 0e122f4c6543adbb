//! Ethereum against a real node: anvil on 127.0.0.1, driven through a scenario with plain
//! payments, an ERC-20 stablecoin and an ERC-721, internal transfers through a splitter
//! contract (one of them reverted inside a successful transaction) and reverted
//! transactions. The tables must be exactly what the scenario did, from both tracers; a
//! reorganisation during follow mode must leave exactly the final chain.

mod common;

use std::time::Duration;

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use ferret_indexer::eth::{EthOptions, TraceMode, index_eth};
use ferret_schemas::{Chain, Warehouse};
use ferret_testkit::anvil::Driver;
use ferret_testkit::contracts::{
    IFerretNFT, IFerretUSD, ISplitter, ferret_nft, ferret_usd, splitter,
};

const ETH: u128 = 1_000_000_000_000_000_000;

fn eth(milli: u128) -> U256 {
    U256::from(milli * ETH / 1000)
}

fn hex(a: Address) -> String {
    format!("{a:#x}")
}

/// What the scenario did: the addresses involved.
struct Scenario {
    a: Vec<Address>,
    usd: Address,
    nft: Address,
    split: Address,
}

async fn run_scenario(d: &Driver) -> Scenario {
    let a = d.accounts.clone();
    let none = Bytes::new();
    let usd = d.deploy(a[0], ferret_usd()).await.expect("usd"); // block 1
    let split = d.deploy(a[0], splitter()).await.expect("splitter"); // 2
    let nft = d.deploy(a[0], ferret_nft()).await.expect("nft"); // 3
    let ok = |s: ferret_testkit::anvil::Sent| assert!(s.success, "{s:?}");
    ok(d.exec(a[0], Some(a[1]), eth(1000), none.clone(), None)
        .await
        .expect("pay")); // 4
    let mint = IFerretUSD::mintCall {
        to: a[2],
        value: U256::from(1_000_000u64),
    }
    .abi_encode();
    ok(d.exec(a[0], Some(usd), U256::ZERO, mint.into(), None)
        .await
        .expect("mint")); // 5
    let xfer = IFerretUSD::transferCall {
        to: a[3],
        value: U256::from(250_000u64),
    }
    .abi_encode();
    ok(d.exec(a[2], Some(usd), U256::ZERO, xfer.into(), None)
        .await
        .expect("transfer")); // 6
    let s = ISplitter::splitCall {
        to: vec![a[4], a[5], a[6]],
    }
    .abi_encode();
    ok(d.exec(a[1], Some(split), eth(900), s.into(), None)
        .await
        .expect("split")); // 7
    let f = ISplitter::forwardAndTryCall {
        to: a[7],
        other: a[8],
    }
    .abi_encode();
    ok(d.exec(a[1], Some(split), eth(1000), f.into(), None)
        .await
        .expect("forward")); // 8
    // Block 9: two reverted transactions, one of them carrying ETH.
    d.set_automine(false).await.expect("automine off");
    let too_much = IFerretUSD::transferCall {
        to: a[4],
        value: U256::from(10_000_000u64),
    }
    .abi_encode();
    let r1 = d
        .send(a[3], Some(usd), U256::ZERO, too_much.into(), Some(100_000))
        .await
        .expect("r1");
    let empty = ISplitter::splitCall { to: vec![] }.abi_encode();
    let r2 = d
        .send(a[1], Some(split), eth(1000), empty.into(), Some(100_000))
        .await
        .expect("r2");
    d.mine().await.expect("mine 9");
    for h in [r1, r2] {
        let s = d.wait(h).await.expect("mined");
        assert!(!s.success && s.block == 9, "{s:?}");
    }
    // Block 10: three transactions in one block, of three types: a legacy payment (type 0),
    // an access-list NFT mint (type 1) and an EIP-1559 NFT move (type 2).
    let legacy = serde_json::json!({"from": a[0], "to": a[9], "value": eth(2000), "gasPrice": "0x77359400", "type": "0x0"});
    let p: alloy::primitives::B256 = d
        .rpc()
        .call("eth_sendTransaction", (legacy,))
        .await
        .expect("legacy pay");
    let m = IFerretNFT::mintCall {
        to: a[5],
        tokenId: U256::from(7),
    }
    .abi_encode();
    let with_list = serde_json::json!({"from": a[0], "to": nft, "input": Bytes::from(m), "gas": "0x30d40",
        "gasPrice": "0x77359400", "accessList": [{"address": nft, "storageKeys": []}], "type": "0x1"});
    let m: alloy::primitives::B256 = d
        .rpc()
        .call("eth_sendTransaction", (with_list,))
        .await
        .expect("nft mint");
    let t = IFerretNFT::transferFromCall {
        from: a[5],
        to: a[6],
        tokenId: U256::from(7),
    }
    .abi_encode();
    let t = d
        .send(a[5], Some(nft), U256::ZERO, t.into(), Some(200_000))
        .await
        .expect("nft move");
    d.mine().await.expect("mine 10");
    for h in [p, m, t] {
        let s = d.wait(h).await.expect("mined");
        assert!(s.success && s.block == 10, "{s:?}");
    }
    d.set_automine(true).await.expect("automine on");
    Scenario { a, usd, nft, split }
}

fn options(url: &str, traces: TraceMode) -> EthOptions {
    let mut o = EthOptions::new(url);
    o.traces = traces;
    o.batch_blocks = 3;
    o.commit_blocks = 4;
    o.poll = Duration::from_millis(100);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_tables_are_exactly_what_happened() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let d = node.driver().await.expect("driver");
    let s = run_scenario(&d).await;
    let a = |i: usize| hex(s.a[i]);

    let tmp = tempfile::tempdir().expect("tmp");
    let wh_path = tmp.path().join("wh");
    let wh_url = wh_path.to_str().expect("utf8");
    let out = common::ferret(&[
        "index",
        "eth",
        "--rpc",
        node.url(),
        "--warehouse",
        wh_url,
        "--commit-blocks",
        "4",
        "--batch",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("indexed chain 31337 blocks 0..=10"),
        "{summary}"
    );
    assert!(
        summary.contains("traces callTracer"),
        "auto picks callTracer on anvil: {summary}"
    );
    let wh = Warehouse::open(wh_url).expect("open");

    assert_eq!(
        common::scalar(&wh, "SELECT COUNT(*) FROM eth.blocks").await,
        "11"
    );
    assert_eq!(
        common::query(&wh, "SELECT block_number, COUNT(*), COUNT(success) FILTER (WHERE NOT success) FROM eth.transactions GROUP BY 1 ORDER BY 1").await,
        ["1|1|0", "2|1|0", "3|1|0", "4|1|0", "5|1|0", "6|1|0", "7|1|0", "8|1|0", "9|2|2", "10|3|0"]
    );
    assert_eq!(
        common::query(
            &wh,
            "SELECT transaction_type, gas_price IS NOT NULL, max_fee_per_gas IS NOT NULL FROM eth.transactions \
             WHERE block_number = 10 ORDER BY transaction_index"
        )
        .await,
        ["0|true|false", "1|true|false", "2|false|true"]
    );
    assert_eq!(
        common::query(&wh, "SELECT contract_address FROM eth.transactions WHERE to_address IS NULL ORDER BY block_number").await,
        [hex(s.usd), hex(s.split), hex(s.nft)]
    );

    let transfers = common::query(
        &wh,
        "SELECT block_number, ordinal, kind, asset, from_address, to_address, value_string \
         FROM eth.transfers ORDER BY block_number, transaction_index, ordinal",
    )
    .await;
    let usd = hex(s.usd);
    let sp = hex(s.split);
    let zero = hex(Address::ZERO);
    let e = |m: u128| (m * ETH / 1000).to_string();
    assert_eq!(
        transfers,
        [
            format!("4|0|transaction|ETH|{}|{}|{}", a(0), a(1), e(1000)),
            format!("5|0|token|{usd}|{zero}|{}|1000000", a(2)),
            format!("6|0|token|{usd}|{}|{}|250000", a(2), a(3)),
            format!("7|0|transaction|ETH|{}|{sp}|{}", a(1), e(900)),
            format!("7|1|internal|ETH|{sp}|{}|{}", a(4), e(300)),
            format!("7|2|internal|ETH|{sp}|{}|{}", a(5), e(300)),
            format!("7|3|internal|ETH|{sp}|{}|{}", a(6), e(300)),
            format!("8|0|transaction|ETH|{}|{sp}|{}", a(1), e(1000)),
            format!("8|1|internal|ETH|{sp}|{}|{}", a(7), e(500)),
            format!("10|0|transaction|ETH|{}|{}|{}", a(0), a(9), e(2000)),
        ]
    );
    // The reverted internal calls are in eth.traces, marked, with their values. (Whether a
    // tracer lists the calls made inside a reverted call varies; any it lists are reverted.)
    assert_eq!(
        common::query(
            &wh,
            "SELECT trace_address, call_type, from_address, to_address, CAST(value AS VARCHAR), reverted, error IS NOT NULL \
             FROM eth.traces WHERE block_number = 8 AND trace_address IN ('', '0', '1') ORDER BY trace_index",
        )
        .await,
        [
            format!("|call|{}|{sp}|{}|false|false", a(1), e(1000)),
            format!("0|call|{sp}|{}|{}|false|false", a(7), e(500)),
            format!("1|call|{sp}|{sp}|{}|true|true", e(500)),
        ]
    );
    assert_eq!(
        common::scalar(&wh, "SELECT COUNT(*) FROM eth.traces WHERE block_number = 8 AND trace_address LIKE '1%' AND NOT reverted").await,
        "0"
    );
    assert_eq!(
        common::scalar(
            &wh,
            "SELECT COUNT(*) FROM eth.traces WHERE block_number = 9 AND NOT reverted"
        )
        .await,
        "0"
    );
    assert_eq!(
        common::query(
            &wh,
            "SELECT block_number, token_address, standard, from_address, to_address, value_string \
             FROM eth.token_transfers ORDER BY block_number, log_index",
        )
        .await,
        [
            format!("5|{usd}|erc20|{zero}|{}|1000000", a(2)),
            format!("6|{usd}|erc20|{}|{}|250000", a(2), a(3)),
            format!("10|{}|erc721|{zero}|{}|7", hex(s.nft), a(5)),
            format!("10|{}|erc721|{}|{}|7", hex(s.nft), a(5), a(6)),
        ]
    );
    // Balances from eth.transfers equal the node's, exactly, for the accounts that only
    // received (the senders also paid gas).
    // Account 8 was only the target of the reverted internal send: it got nothing.
    for i in [4usize, 6, 7, 8, 9] {
        let node_balance: U256 = d
            .rpc()
            .call("eth_getBalance", (s.a[i], "latest"))
            .await
            .expect("balance");
        let received = common::scalar(
            &wh,
            &format!("SELECT CAST(COALESCE(SUM(value), 0) AS VARCHAR) FROM eth.transfers WHERE asset = 'ETH' AND to_address = '{}'", a(i)),
        )
        .await;
        // anvil funds each account with 10,000 ETH.
        assert_eq!(
            node_balance - U256::from(10_000u128 * ETH),
            received.parse::<U256>().expect("u256"),
            "account {i}"
        );
    }

    // Taint from the scammer (a1) to the exchange (a7): a1's pool is wholly tainted, so the
    // splitter's pool is too, and the exchange's 0.5 ETH is all tainted; the reverted send
    // to a8 carried nothing.
    let labels = tmp.path().join("labels.csv");
    std::fs::write(
        &labels,
        format!(
            "address,label,category\n{},scammer,scam\n{},exchange-hot,exchange\n",
            a(1),
            a(7)
        ),
    )
    .expect("labels");
    let out = common::ferret(&[
        "labels",
        "import",
        "--warehouse",
        wh_url,
        labels.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for policy in ["haircut", "poison"] {
        let out = common::ferret(&[
            "taint",
            "eth",
            "--warehouse",
            wh_url,
            "--seed-category",
            "scam",
            "--stop-at",
            "exchange",
            "--policy",
            policy,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains(&a(7)) && report.contains("exchange-hot"),
            "{report}"
        );
        assert_eq!(
            common::query(&wh, "SELECT address, category, CAST(ROUND(tainted_value / 1e12) AS BIGINT), tainted_transfers, min_hop, first_block FROM eth_exits").await,
            // In micro-ETH: the pools compute in f32 (7 digits).
            [format!("{}|exchange|500000|1|2|8", a(7))],
            "{policy}"
        );
        assert_eq!(
            common::query(
                &wh,
                "SELECT address, hop FROM eth_taint WHERE hop > 0 ORDER BY hop, address"
            )
            .await,
            {
                let mut want = vec![format!("{sp}|1")];
                let mut two: Vec<String> = [4, 5, 6, 7]
                    .iter()
                    .map(|&i| format!("{}|2", a(i)))
                    .collect();
                two.sort();
                want.extend(two);
                want
            },
            "{policy}"
        );
    }
    // The picture: seed → splitter → recipients and the exchange, amounts in ETH.
    let prefix = tmp.path().join("trace");
    let line = common::ok(common::ferret(&[
        "trace",
        "eth",
        "--warehouse",
        wh_url,
        "--seed-category",
        "scam",
        "--stop-at",
        "exchange",
        "--out",
        prefix.to_str().expect("utf8"),
    ]));
    assert!(line.contains("exits"), "{line}");
    let html = std::fs::read_to_string(prefix.with_extension("html")).expect("html");
    assert!(
        html.contains("exchange-hot") && html.contains("0.500000000"),
        "{html}"
    );
    assert!(html.contains("tainted ETH") && html.contains("transfers"));
    let dot = std::fs::read_to_string(prefix.with_extension("dot")).expect("dot");
    assert!(dot.contains("scammer") && dot.contains("->"), "{dot}");
    assert!(prefix.with_extension("svg").is_file());

    // Backward from the exchange deposit: the splitter, then a1, who funded it.
    let out = common::ferret(&[
        "taint",
        "eth",
        "--warehouse",
        wh_url,
        "--seed",
        &a(7),
        "--direction",
        "backward",
        "--hops",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        common::query(&wh, "SELECT address, hop FROM eth_taint ORDER BY hop").await,
        [
            format!("{}|0", a(7)),
            format!("{sp}|1"),
            format!("{}|2", a(1))
        ]
    );

    // parity-style traces give the same tables but for gas accounting.
    let parity = Warehouse::open("memory://eth-anvil-parity").expect("wh");
    index_eth(&parity, &options(node.url(), TraceMode::Parity), None)
        .await
        .expect("parity");
    for sql in [
        "SELECT * FROM eth.transfers ORDER BY block_number, transaction_index, ordinal",
        "SELECT block_number, transaction_index, trace_index, trace_address, call_type, from_address, to_address, value, reverted, error IS NULL FROM eth.traces ORDER BY 1, 2, 3",
    ] {
        assert_eq!(
            common::query(&parity, sql).await,
            common::query(&wh, sql).await,
            "{sql}"
        );
    }
    // Over WebSocket: the same tables.
    let ws = Warehouse::open("memory://eth-anvil-ws").expect("wh");
    let ws_url = node.url().replace("http://", "ws://");
    index_eth(&ws, &options(&ws_url, TraceMode::Auto), None)
        .await
        .expect("websocket");
    assert_eq!(
        common::dump_chain(&ws, Chain::Eth).await,
        common::dump_chain(&wh, Chain::Eth).await
    );
    // Without traces there are no internal transfers, and the summary says so.
    let off = Warehouse::open("memory://eth-anvil-off").expect("wh");
    let sum = index_eth(&off, &options(node.url(), TraceMode::Off), None)
        .await
        .expect("off");
    assert_eq!(sum.counts.traces, 0);
    assert_eq!(
        common::scalar(
            &off,
            "SELECT COUNT(*) FROM eth.transfers WHERE kind = 'internal'"
        )
        .await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_mode_survives_a_reorganisation() {
    let Some(node) = common::anvil(&[]).await else {
        return;
    };
    let d = node.driver().await.expect("driver");
    let a = d.accounts.clone();
    let pay = |from: usize, to: usize, milli: u128| {
        let d = &d;
        let (f, t) = (a[from], a[to]);
        async move {
            d.exec(f, Some(t), eth(milli), Bytes::new(), None)
                .await
                .expect("pay")
        }
    };
    for i in 0..5 {
        pay(0, 1 + i % 3, 100 + i as u128).await;
    }
    let snap = d.snapshot().await.expect("snapshot"); // at block 5
    for i in 0..3 {
        pay(1, 4, 10 + i).await; // blocks 6..=8 of the branch that will be dropped
    }

    let wh = Warehouse::open("memory://eth-anvil-follow").expect("wh");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut o = options(node.url(), TraceMode::Auto);
    o.follow = true;
    // Commits of 4 blocks: the reorganisation at 5 cuts through the file of 4..=7, which is
    // rewritten without its last blocks.
    o.commit_blocks = 4;
    let follower = {
        let wh = wh.clone();
        tokio::spawn(async move { index_eth(&wh, &o, Some(stop_rx)).await })
    };
    let tip_of = |wh: Warehouse| async move {
        wh.load_manifest(Chain::Eth)
            .await
            .expect("load")
            .and_then(|m| m.tip)
    };
    let wait_for = |height: u64| {
        let wh = wh.clone();
        async move {
            for _ in 0..200 {
                if tip_of(wh.clone()).await.is_some_and(|t| t.height == height) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("follow mode did not reach block {height}");
        }
    };
    wait_for(8).await;
    let dropped_hash = tip_of(wh.clone()).await.expect("tip").hash;

    // The chain goes back to block 5 and grows a longer, different branch.
    assert!(d.revert(snap).await.expect("revert"));
    for i in 0..5 {
        pay(2, 5 + i % 2, 20 + i as u128).await; // blocks 6..=10
    }
    wait_for(10).await;
    stop_tx.send(true).expect("stop");
    let summary = follower.await.expect("join").expect("follow");
    assert!(summary.reorgs >= 1, "{summary}");
    assert!(summary.unwound_blocks >= 3, "{summary}");
    let m = wh
        .load_manifest(Chain::Eth)
        .await
        .expect("load")
        .expect("manifest");
    assert!(
        m.files_of("transactions")
            .any(|f| f.first_height == 4 && f.last_height == 5),
        "the file across the fork point was cut at it: {:?}",
        m.files_of("transactions").collect::<Vec<_>>()
    );
    let tip = tip_of(wh.clone()).await.expect("tip");
    let node_tip = d
        .rpc()
        .call::<_, serde_json::Value>("eth_getBlockByNumber", ("0xa", false))
        .await
        .expect("block");
    assert_eq!(tip.hash, node_tip["hash"].as_str().expect("hash"));
    assert_ne!(
        common::scalar(
            &wh,
            "SELECT block_hash FROM eth.blocks WHERE block_number = 8"
        )
        .await,
        dropped_hash
    );

    // Exactly what a fresh index of the final chain holds: no row of the dropped branch.
    let fresh = Warehouse::open("memory://eth-anvil-follow-fresh").expect("wh");
    index_eth(&fresh, &options(node.url(), TraceMode::Auto), None)
        .await
        .expect("fresh");
    assert_eq!(
        common::dump_chain(&wh, Chain::Eth).await,
        common::dump_chain(&fresh, Chain::Eth).await
    );
    assert_eq!(
        common::scalar(
            &wh,
            &format!(
                "SELECT COUNT(*) FROM eth.transfers WHERE to_address = '{}'",
                hex(a[4])
            )
        )
        .await,
        "0"
    );

    // The CLI in follow mode: SIGTERM (a container stop) ends it cleanly after its commit.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("wh");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "index",
            "eth",
            "--rpc",
            node.url(),
            "--warehouse",
            dir.to_str().expect("utf8"),
            "--follow",
            "--poll-secs",
            "0.1",
        ])
        .env("FERRET_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let cli_wh = Warehouse::open(dir.to_str().expect("utf8")).expect("open");
    for _ in 0..200 {
        if tip_of(cli_wh.clone()).await.is_some_and(|t| t.height == 10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("indexed chain 31337 blocks 0..=10"),
        "{stdout}"
    );

    // --confirmations: only blocks that deep.
    let deep = Warehouse::open("memory://eth-anvil-confirmations").expect("wh");
    let mut o = options(node.url(), TraceMode::Auto);
    o.confirmations = 3;
    let s = index_eth(&deep, &o, None).await.expect("confirmations");
    assert_eq!(s.tip.expect("tip").height, 7);
}
