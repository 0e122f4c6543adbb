//! A local anvil node and a driver that sends transactions from its unlocked accounts: for
//! scenarios (`ferret synth eth`), tests and benchmarks.
//!
//! anvil comes from the npm package `@foundry-rs/anvil-linux-amd64` (see
//! `scripts/test.sh`); it is found through `FERRET_ANVIL`, then `PATH`, then the test
//! script's cache (`~/.cache/ferret/npm/node_modules/.bin/anvil`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U64, U256};
use serde::Deserialize;
use serde_json::json;

use ferret_indexer::eth::rpc::{RetryPolicy, Rpc};
use ferret_indexer::{Error, Result};

/// Where anvil is, if anywhere.
pub fn find_anvil() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERRET_ANVIL") {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("anvil");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let cache = std::env::var_os("FERRET_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferret")))?;
    let p = cache.join("npm/node_modules/.bin/anvil");
    p.is_file().then_some(p)
}

/// A running anvil on 127.0.0.1, killed on drop.
pub struct Anvil {
    child: Child,
    url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Anvil {
    /// Starts anvil with `extra` arguments on a free port and waits until it answers.
    pub async fn start(extra: &[&str]) -> Result<Self> {
        let bin = find_anvil().ok_or_else(|| Error::Internal {
            what: "anvil not found (set FERRET_ANVIL or run scripts/test.sh, which installs it)"
                .into(),
        })?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| Error::io("127.0.0.1:0", e))?;
            l.local_addr()
                .map_err(|e| Error::io("127.0.0.1:0", e))?
                .port()
        };
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(&bin, e))?;
        let anvil = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(Error::Internal {
                    what: format!("anvil did not open port {port} within 20 s"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(anvil)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A driver for this node.
    pub async fn driver(&self) -> Result<Driver> {
        Driver::connect(&self.url).await
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MiniReceipt {
    status: Option<U64>,
    contract_address: Option<Address>,
    block_number: Option<U64>,
}

/// Sends transactions from a node's unlocked accounts.
pub struct Driver {
    rpc: Rpc,
    /// The node's unlocked accounts.
    pub accounts: Vec<Address>,
}

/// A mined transaction.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub hash: B256,
    pub block: u64,
    pub success: bool,
    pub contract: Option<Address>,
}

impl Driver {
    /// Connects and lists the unlocked accounts.
    pub async fn connect(url: &str) -> Result<Self> {
        let rpc = Rpc::connect(url, RetryPolicy::default()).await?;
        let accounts: Vec<Address> = rpc.call("eth_accounts", ()).await?;
        Ok(Self { rpc, accounts })
    }

    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// Sends a transaction; with `gas` it is mined even if it reverts (no estimate).
    pub async fn send(
        &self,
        from: Address,
        to: Option<Address>,
        value: U256,
        data: Bytes,
        gas: Option<u64>,
    ) -> Result<B256> {
        let mut tx = json!({"from": from, "value": value, "input": data});
        if let Some(to) = to {
            tx["to"] = json!(to);
        }
        if let Some(g) = gas {
            tx["gas"] = json!(format!("{g:#x}"));
        }
        self.rpc.call("eth_sendTransaction", (tx,)).await
    }

    /// Waits for the receipt of `hash` (mined by automine or [`Driver::mine`]).
    pub async fn wait(&self, hash: B256) -> Result<Sent> {
        for _ in 0..400 {
            let r: Option<MiniReceipt> =
                self.rpc.call("eth_getTransactionReceipt", (hash,)).await?;
            if let Some(r) = r {
                return Ok(Sent {
                    hash,
                    block: r.block_number.map(|b| b.to()).unwrap_or_default(),
                    success: r.status.is_some_and(|s| !s.is_zero()),
                    contract: r.contract_address,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(Error::Internal {
            what: format!("transaction {hash} was not mined within 10 s"),
        })
    }

    /// Sends and waits (automine on).
    pub async fn exec(
        &self,
        from: Address,
        to: Option<Address>,
        value: U256,
        data: Bytes,
        gas: Option<u64>,
    ) -> Result<Sent> {
        let h = self.send(from, to, value, data, gas).await?;
        self.wait(h).await
    }

    /// Deploys creation code from `from`; returns the contract's address.
    pub async fn deploy(&self, from: Address, code: Bytes) -> Result<Address> {
        let s = self.exec(from, None, U256::ZERO, code, None).await?;
        s.contract
            .filter(|_| s.success)
            .ok_or_else(|| Error::Internal {
                what: format!("deployment {} failed", s.hash),
            })
    }

    /// Mines one block now.
    pub async fn mine(&self) -> Result<()> {
        let _: serde_json::Value = self.rpc.call("evm_mine", ()).await?;
        Ok(())
    }

    /// Turns automine (a block per transaction) on or off.
    pub async fn set_automine(&self, on: bool) -> Result<()> {
        let _: serde_json::Value = self.rpc.call("evm_setAutomine", (on,)).await?;
        Ok(())
    }

    /// Snapshots the chain; [`Driver::revert`] goes back to it.
    pub async fn snapshot(&self) -> Result<U256> {
        self.rpc.call("evm_snapshot", ()).await
    }

    /// Reverts the chain to a snapshot.
    pub async fn revert(&self, id: U256) -> Result<bool> {
        self.rpc.call("evm_revert", (id,)).await
    }

    /// The latest block number.
    pub async fn head(&self) -> Result<u64> {
        let n: U64 = self.rpc.call("eth_blockNumber", ()).await?;
        Ok(n.to())
    }
}
