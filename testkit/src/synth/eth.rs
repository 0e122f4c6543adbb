//! `ferret synth eth`: a scenario driver that populates a real local node (anvil) with a
//! realistic economy and writes the ground truth beside it, like the Bitcoin generator.
//!
//! The economy: users paying each other in ETH and in a USDT-like stablecoin (FerretUSD,
//! 6 decimals), some through a splitter contract (internal transfers); exchanges with hot
//! wallets, a deposit address per customer swept into the hot wallet a few blocks after
//! each deposit, and withdrawals; some reverted transactions; and scam operations: victims
//! pay scam addresses, the operator layers the proceeds through fresh intermediaries over
//! several hops (splits through the operator's own splitter contract, merges), in ETH and in
//! the stablecoin, and cashes out at deposit addresses of exchange accounts it controls.
//!
//! It needs anvil's test methods (`anvil_setBalance`, `anvil_autoImpersonateAccount`,
//! `evm_setAutomine`, `evm_mine`). Transactions of a block go in JSON-RPC batches; after each
//! block every receipt is checked against the plan (a planned revert must fail, everything
//! else succeed), so the truth files describe exactly what the chain holds.
//!
//! Truth (`DIR/truth/`): `labels.csv` (address,label,category: scam addresses and exchange
//! hot wallets), `entities.csv` (address,entity_id: the real owner of every address the
//! scenario used), `cashouts.csv` (scam,exit,asset,amount,hops: each planted flow from a scam
//! address to the deposit address it cashed out at, amount in base units, hops in
//! transfers), `typologies.csv` (pattern,address,first_block,last_block,txids: every scam
//! address victims paid as `victim_collection` with the payments; with `typologies`, each
//! phishing spender as `approval_phishing` with its drains, and each look-alike address as
//! `address_poisoning` with its zero-value transfer).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use alloy::primitives::{Address, B256, Bytes, U64, U256};
use alloy::sol_types::SolCall;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::contracts::{
    IFerretUSD, IMixer, IPool, IRouter, ISplitter, ferret_usd, mixer, pool, router, splitter,
};
use ferret_indexer::eth::rpc::{RetryPolicy, Rpc};
use ferret_indexer::{Error, Result};

const ETH: u128 = 1_000_000_000_000_000_000;
/// One FerretUSD (6 decimals).
const USD: u128 = 1_000_000;

/// What to generate.
#[derive(Clone, Debug)]
pub struct EthSynthConfig {
    pub seed: u64,
    /// Blocks of regular activity (the set-up and the scam add a few).
    pub blocks: usize,
    pub txs_per_block: usize,
    pub users: usize,
    pub exchanges: usize,
    pub scam_operations: usize,
    /// Victims paying each scam operation.
    pub victims: usize,
    /// Cash-out flows per scam operation and asset.
    pub flows: usize,
    /// Plant approval phishing and address poisoning, with their look-alikes (a payment
    /// router users approve and pay through, zero-value transfers between strangers);
    /// `truth/typologies.csv` lists the plants and every scam address victims paid.
    pub typologies: bool,
}

impl Default for EthSynthConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            blocks: 40,
            txs_per_block: 30,
            users: 120,
            exchanges: 3,
            scam_operations: 2,
            victims: 12,
            flows: 3,
            typologies: false,
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, Default)]
pub struct EthSynthSummary {
    pub blocks: u64,
    pub transactions: u64,
    pub reverted: u64,
    pub cashouts: usize,
    pub first_block: u64,
    pub last_block: u64,
}

/// A planned transaction.
#[derive(Clone, Debug)]
struct Tx {
    from: Address,
    to: Option<Address>,
    value: u128,
    data: Bytes,
    /// Planned to revert.
    reverts: bool,
}

impl Tx {
    fn pay(from: Address, to: Address, value: u128) -> Self {
        Self {
            from,
            to: Some(to),
            value,
            data: Bytes::new(),
            reverts: false,
        }
    }
    /// A FerretUSD transfer of `value` base units.
    fn usd(usd: Address, from: Address, to: Address, value: u128) -> Self {
        Self::call(
            from,
            usd,
            0,
            IFerretUSD::transferCall {
                to,
                value: U256::from(value),
            }
            .abi_encode(),
        )
    }
    fn call(from: Address, to: Address, value: u128, data: Vec<u8>) -> Self {
        Self {
            from,
            to: Some(to),
            value,
            data: data.into(),
            reverts: false,
        }
    }
}

struct Gen {
    rpc: Rpc,
    /// Next nonce of every sender (a batch of one sender's transactions needs them
    /// explicit: the node would give them all the same one).
    nonces: HashMap<Address, u64>,
    rng: ChaCha8Rng,
    entities: Vec<(Address, String)>,
    labels: Vec<(Address, String, &'static str)>,
    summary: EthSynthSummary,
    /// The hashes of the last block's transactions, in plan order.
    last_hashes: Vec<B256>,
}

fn hexq(v: u128) -> String {
    format!("{v:#x}")
}

impl Gen {
    fn fresh(&mut self, entity: &str) -> Address {
        let mut b = [0u8; 20];
        self.rng.fill(&mut b);
        // Keep clear of precompiles and the zero address.
        b[0] |= 0x10;
        let a = Address::from(b);
        self.entities.push((a, entity.to_string()));
        a
    }

    /// A fresh address with ETH for gas (a balance set outside any transfer, as if from
    /// before the indexed range).
    async fn fresh_funded(&mut self, entity: &str) -> Result<Address> {
        let a = self.fresh(entity);
        self.fund(&[a], 10 * ETH).await?;
        Ok(a)
    }

    async fn fund(&self, who: &[Address], wei: u128) -> Result<()> {
        let params: Vec<(Address, String)> = who.iter().map(|a| (*a, hexq(wei))).collect();
        let _: Vec<Value> = self.rpc.batch("anvil_setBalance", &params).await?;
        Ok(())
    }

    /// Sends `txs` in one block and checks every receipt against the plan. Returns the
    /// receipts' contract addresses.
    async fn block(&mut self, txs: &[Tx]) -> Result<Vec<Option<Address>>> {
        if txs.is_empty() {
            return Ok(Vec::new());
        }
        let mut unknown: Vec<Address> = txs
            .iter()
            .map(|t| t.from)
            .filter(|a| !self.nonces.contains_key(a))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        let params: Vec<(Address, &str)> = unknown.iter().map(|a| (*a, "latest")).collect();
        let counts: Vec<U64> = self.rpc.batch("eth_getTransactionCount", &params).await?;
        for (a, n) in unknown.into_iter().zip(counts) {
            self.nonces.insert(a, n.to());
        }
        let params: Vec<(Value,)> = txs
            .iter()
            .map(|t| {
                let nonce = self.nonces.get_mut(&t.from).expect("fetched above");
                // 500,000 gas covers every call and the small contracts' creation; a
                // creation code over 2 KiB (the pool's) stores more and gets 2,000,000.
                let gas = if t.to.is_none() && t.data.len() > 2048 {
                    "0x1e8480"
                } else {
                    "0x7a120"
                };
                let mut j = json!({"from": t.from, "value": hexq(t.value), "input": t.data, "gas": gas, "nonce": format!("{:#x}", *nonce)});
                *nonce += 1;
                if let Some(to) = t.to {
                    j["to"] = json!(to);
                }
                (j,)
            })
            .collect();
        let hashes: Vec<B256> = self.rpc.batch("eth_sendTransaction", &params).await?;
        self.last_hashes = hashes.clone();
        let _: Value = self.rpc.call("evm_mine", ()).await?;
        let receipts: Vec<Option<Value>> = self
            .rpc
            .batch(
                "eth_getTransactionReceipt",
                &hashes.iter().map(|h| (*h,)).collect::<Vec<_>>(),
            )
            .await?;
        let mut out = Vec::with_capacity(txs.len());
        let mut block = None;
        for ((t, r), h) in txs.iter().zip(receipts).zip(&hashes) {
            let r = r.ok_or_else(|| Error::Internal {
                what: format!("synth: transaction {h} was not mined"),
            })?;
            let ok = r["status"].as_str() == Some("0x1");
            if ok == t.reverts {
                return Err(Error::Internal {
                    what: format!(
                        "synth: transaction {h} from {} {} but was planned to {}",
                        t.from,
                        if ok { "succeeded" } else { "reverted" },
                        if t.reverts { "revert" } else { "succeed" }
                    ),
                });
            }
            if !ok {
                self.summary.reverted += 1;
            }
            let b: U64 =
                serde_json::from_value(r["blockNumber"].clone()).map_err(|e| Error::Internal {
                    what: format!("synth: receipt of {h}: {e}"),
                })?;
            if block.is_some_and(|x| x != b) {
                return Err(Error::Internal {
                    what: "synth: a planned block was mined as several".into(),
                });
            }
            block = Some(b);
            out.push(
                r["contractAddress"]
                    .as_str()
                    .and_then(|a| a.parse::<Address>().ok()),
            );
        }
        let b = block.map(|b| b.to::<u64>()).unwrap_or_default();
        if self.summary.blocks == 0 {
            self.summary.first_block = b;
        }
        self.summary.last_block = b;
        self.summary.blocks += 1;
        self.summary.transactions += txs.len() as u64;
        Ok(out)
    }
}

/// A planned cash-out flow.
struct Flow {
    scam: Address,
    asset: String,
    amount: u128,
    /// Transfers from the scam address to the deposit address, as sent, hop by hop.
    hops: Vec<Vec<Tx>>,
    exit: Address,
    hop_count: u32,
    /// The deposit address's sweep into the hot wallet.
    sweep: Tx,
}

/// Populates the node at `url` and writes the truth under `out/truth`.
pub async fn generate(url: &str, cfg: &EthSynthConfig, out: &Path) -> Result<EthSynthSummary> {
    if cfg.users < 4 || cfg.exchanges == 0 || cfg.blocks == 0 {
        return Err(Error::BadArguments {
            what: "synth eth needs at least 4 users, 1 exchange and 1 block".into(),
        });
    }
    let rpc = Rpc::connect(url, RetryPolicy::default()).await?;
    let mut g = Gen {
        rpc,
        nonces: HashMap::new(),
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        entities: Vec::new(),
        labels: Vec::new(),
        summary: EthSynthSummary::default(),
        last_hashes: Vec::new(),
    };
    let set = |m: &'static str, p: Value| (m, p);
    for (m, p) in [
        set("anvil_autoImpersonateAccount", json!([true])),
        set("evm_setAutomine", json!([false])),
        // Block times from the genesis time in steps of 12 s: on a node started with a fixed
        // `--timestamp`, the same seed gives the same chain, hashes and all.
        set("anvil_setBlockTimestampInterval", json!([12])),
    ] {
        let _: Value = g.rpc.call(m, p).await.map_err(|e| Error::Internal {
            what: format!("synth eth needs anvil's {m}: {e}"),
        })?;
    }

    // The cast.
    let deployer = g.fresh("deployer");
    let hot: Vec<Address> = (0..cfg.exchanges)
        .map(|i| {
            let a = g.fresh(&format!("exchange-{i}"));
            g.labels.push((a, format!("exchange-{i}-hot"), "exchange"));
            a
        })
        .collect();
    // Users: some with two wallets; each a customer of one exchange with a deposit address.
    struct User {
        wallets: Vec<Address>,
        exchange: usize,
        deposit: Address,
    }
    let mut users = Vec::new();
    for i in 0..cfg.users {
        let entity = format!("user-{i}");
        let n = if g.rng.random_bool(0.25) { 2 } else { 1 };
        let wallets: Vec<Address> = (0..n).map(|_| g.fresh(&entity)).collect();
        let exchange = g.rng.random_range(0..cfg.exchanges);
        let deposit = g.fresh(&entity);
        users.push(User {
            wallets,
            exchange,
            deposit,
        });
    }
    let all: Vec<Address> = g.entities.iter().map(|e| e.0).collect();
    g.fund(&all, 10_000 * ETH).await?;

    // Contracts, and the stablecoin in everybody's wallets.
    let created = g
        .block(&[
            Tx {
                from: deployer,
                to: None,
                value: 0,
                data: ferret_usd(),
                reverts: false,
            },
            Tx {
                from: deployer,
                to: None,
                value: 0,
                data: splitter(),
                reverts: false,
            },
        ])
        .await?;
    let (Some(usd), Some(split)) = (created[0], created[1]) else {
        return Err(Error::Internal {
            what: "synth: contract deployment returned no address".into(),
        });
    };
    g.entities.push((usd, "contract-ferretusd".into()));
    g.entities.push((split, "contract-splitter".into()));
    let mint: Vec<Tx> = users
        .iter()
        .flat_map(|u| u.wallets.iter())
        .map(|&w| {
            Tx::call(
                deployer,
                usd,
                0,
                IFerretUSD::mintCall {
                    to: w,
                    value: U256::from(100_000 * USD),
                }
                .abi_encode(),
            )
        })
        .collect();
    for chunk in mint.chunks(200) {
        g.block(chunk).await?;
    }
    let mut ty = if cfg.typologies {
        Some(
            Typologies::set_up(
                &mut g,
                cfg,
                usd,
                deployer,
                &users.iter().map(|u| u.wallets[0]).collect::<Vec<_>>(),
            )
            .await?,
        )
    } else {
        None
    };

    // Scam operations: victims pay in the first blocks.
    struct Op {
        scam: Vec<Address>,
        // Ordered maps: the plan must not depend on hashing (same seed, same chain).
        got_eth: BTreeMap<Address, u128>,
        got_usd: BTreeMap<Address, u128>,
        entity: String,
    }
    let mut ops = Vec::new();
    for k in 0..cfg.scam_operations {
        let entity = format!("scam-{k}");
        let scam: Vec<Address> = (0..2).map(|_| g.fresh(&entity)).collect();
        for (i, s) in scam.iter().enumerate() {
            g.labels.push((*s, format!("scam-{k}-{i}"), "scam"));
        }
        ops.push(Op {
            scam,
            got_eth: BTreeMap::new(),
            got_usd: BTreeMap::new(),
            entity,
        });
    }

    // Regular activity, with the scam's steps interleaved.
    let mut pending_sweeps: Vec<(usize, Tx)> = Vec::new();
    // Every scam address victims paid: first and last block, the payments.
    let mut collections: BTreeMap<Address, (u64, u64, Vec<B256>)> = BTreeMap::new();
    let mut flows: Vec<Flow> = Vec::new();
    let layering_from = cfg.blocks / 3;
    let mut victim_seq = vec![0usize; cfg.scam_operations];
    for b in 0..cfg.blocks {
        let mut txs: Vec<Tx> = Vec::new();
        let mut marks: Vec<(usize, Mark)> = Vec::new();
        // Sweeps due now.
        let (due, later): (Vec<_>, Vec<_>) =
            pending_sweeps.into_iter().partition(|(at, _)| *at <= b);
        pending_sweeps = later;
        txs.extend(due.into_iter().map(|(_, t)| t));
        if b < layering_from {
            // Victims pay the scam.
            for (k, op) in ops.iter_mut().enumerate() {
                let n = cfg.victims.div_ceil(layering_from.max(1));
                for _ in 0..n {
                    // Planting, every victim of an operation is a different user (as
                    // many as there are).
                    let at = if cfg.typologies {
                        victim_seq[k] += 1;
                        (k * 7919 + victim_seq[k]) % users.len()
                    } else {
                        g.rng.random_range(0..users.len())
                    };
                    let u = &users[at];
                    let from = u.wallets[0];
                    let to = op.scam[g.rng.random_range(0..op.scam.len())];
                    if g.rng.random_bool(0.5) {
                        let v = g.rng.random_range(1..=20) as u128 * ETH;
                        *op.got_eth.entry(to).or_default() += v;
                        txs.push(Tx::pay(from, to, v));
                    } else {
                        let v = g.rng.random_range(100..=5_000) as u128 * USD;
                        *op.got_usd.entry(to).or_default() += v;
                        txs.push(Tx::usd(usd, from, to, v));
                    }
                    marks.push((txs.len() - 1, Mark::Victim(to)));
                }
            }
        }
        if b == layering_from {
            // Plan every flow now; their hops go out one block after another.
            for op in &ops {
                for (assets, eth) in [(&op.got_eth, true), (&op.got_usd, false)] {
                    for (&scam, &total) in assets {
                        let per = total / (cfg.flows as u128 + 1);
                        for _ in 0..cfg.flows {
                            // Even amounts so splits in two are exact.
                            let amount = per - per % 2;
                            if amount == 0 {
                                continue;
                            }
                            let exchange = g.rng.random_range(0..cfg.exchanges);
                            let exit = g.fresh_funded(&op.entity).await?;
                            let depth = g.rng.random_range(2..=5usize);
                            let f = plan_flow(
                                &mut g,
                                &op.entity,
                                scam,
                                amount,
                                depth,
                                exit,
                                eth,
                                usd,
                                hot[exchange],
                            )
                            .await?;
                            flows.push(f);
                        }
                    }
                }
            }
        }
        if b >= layering_from {
            txs.extend(flow_step(&flows, b - layering_from));
        }
        if b == layering_from + 1
            && b + 3 < cfg.blocks
            && let Some(t) = ty.as_mut()
        {
            // Part of what each collection address kept in ETH is swapped into the
            // stablecoin: by the address itself, or by a relay it pays first.
            // Each operation's first collection address with ETH mixes 2 ETH; three users
            // mix 1 ETH each (privacy, no scam).
            if b + 5 < cfg.blocks {
                for op in &ops {
                    if let Some((&scam, _)) = op.got_eth.iter().next() {
                        t.plant_mixing(&mut g, scam, &op.entity, 2, b);
                    }
                }
                for i in [3usize, 17, 42] {
                    let u = &users[i % users.len()];
                    let entity = format!("user-{}", i % users.len());
                    t.plant_mixing(&mut g, u.wallets[0], &entity, 1, b);
                }
            }
            // Each operation structures once; an employer pays a payroll just under 1,000.
            if b + 8 < cfg.blocks {
                for op in &ops {
                    t.plant_structuring(&mut g, &op.entity, b, false).await?;
                }
                t.plant_structuring(&mut g, "employer-0", b, true).await?;
            }
            let mut k = 0usize;
            // Part of what each collection address kept in the stablecoin is layered
            // through a chain of 3–5 single-use relays to an exchange (their gas paid
            // by the operation's gas wallet, or given outside any transfer), another
            // part peeled off along a chain of 5–7 steps.
            // An airdrop farmer's daisy chain looks like a peel chain (a peel chain's
            // look-alike).
            if b + 8 < cfg.blocks {
                t.daisy_chain(&mut g, split, users[0].wallets[0], b).await?;
            }
            for op in &ops {
                let station = g.fresh_funded(&op.entity).await?;
                g.fund(&[station], 1000 * ETH).await?;
                for (&scam, &total) in &op.got_usd {
                    let value = total / (cfg.flows as u128 + 1) / 4;
                    let hops = 3 + (k % 3);
                    let gas = k.is_multiple_of(2).then_some(station);
                    if value >= 100 * USD && b + hops + 1 < cfg.blocks {
                        let hot_x = hot[k % hot.len()];
                        t.plant_relays(&mut g, scam, value, &op.entity, b, hops, hot_x, gas)
                            .await?;
                    }
                    let steps = 5 + (k % 3);
                    if value >= 100 * USD && b + steps + 1 < cfg.blocks {
                        let hot_x = hot[(k + 1) % hot.len()];
                        t.plant_peel(&mut g, scam, value, &op.entity, b, steps, hot_x, gas)
                            .await?;
                    }
                    k += 1;
                }
            }
            for op in &ops {
                for (&scam, &total) in &op.got_eth {
                    let value = total / (cfg.flows as u128 + 1) / 2;
                    if value >= ETH {
                        let hot_x = hot[k % hot.len()];
                        let pool = t.pools[(k / 2) % 2];
                        t.plant_swap(&mut g, scam, value, &op.entity, b, k % 2 == 1, hot_x, pool)
                            .await?;
                        k += 1;
                    }
                }
            }
        }
        // Everyday economy.
        while txs.len() < cfg.txs_per_block {
            let i = g.rng.random_range(0..users.len());
            let j = (i + g.rng.random_range(1..users.len())) % users.len();
            let from = users[i].wallets[g.rng.random_range(0..users[i].wallets.len())];
            let to = users[j].wallets[0];
            match g.rng.random_range(0..100) {
                0..=34 => txs.push(Tx::pay(
                    from,
                    to,
                    g.rng.random_range(1..=500) as u128 * ETH / 1000,
                )),
                35..=59 => {
                    let v = g.rng.random_range(1..=300) as u128 * USD;
                    txs.push(Tx::usd(usd, from, to, v));
                }
                60..=74 => {
                    // A deposit to the user's own exchange account, swept a few blocks later.
                    let u = &users[i];
                    let eth = g.rng.random_bool(0.6);
                    let v = if eth {
                        g.rng.random_range(1..=2000) as u128 * ETH / 1000
                    } else {
                        g.rng.random_range(10..=2000) as u128 * USD
                    };
                    let (dep, sweep) = if eth {
                        (
                            Tx::pay(from, u.deposit, v),
                            Tx::pay(u.deposit, hot[u.exchange], v),
                        )
                    } else {
                        (
                            Tx::usd(usd, from, u.deposit, v),
                            Tx::usd(usd, u.deposit, hot[u.exchange], v),
                        )
                    };
                    txs.push(dep);
                    pending_sweeps.push((b + g.rng.random_range(1..=4), sweep));
                }
                75..=84 => {
                    // A withdrawal.
                    let x = g.rng.random_range(0..hot.len());
                    txs.push(Tx::pay(
                        hot[x],
                        to,
                        g.rng.random_range(1..=3000) as u128 * ETH / 1000,
                    ));
                }
                85..=94 => {
                    // A multisend through the splitter: internal transfers.
                    let k = g.rng.random_range(2..=4usize);
                    let to: Vec<Address> = (0..k)
                        .map(|_| users[g.rng.random_range(0..users.len())].wallets[0])
                        .collect();
                    let share = g.rng.random_range(1..=100) as u128 * ETH / 1000;
                    txs.push(Tx::call(
                        from,
                        split,
                        share * k as u128,
                        ISplitter::splitCall { to }.abi_encode(),
                    ));
                }
                _ => {
                    // A reverted transfer: more stablecoin than anybody has.
                    let mut t = Tx::usd(usd, from, to, u128::MAX / 2);
                    t.reverts = true;
                    txs.push(t);
                }
            }
        }
        if let Some(t) = ty.as_mut() {
            t.block(&mut g, b, &mut txs, &mut marks).await?;
        }
        g.block(&txs).await?;
        let height = g.summary.last_block;
        for (i, m) in marks {
            let hash = g.last_hashes[i];
            match (m, ty.as_mut()) {
                (Mark::Victim(to), _) => {
                    let e = collections
                        .entry(to)
                        .or_insert_with(|| (height, height, Vec::new()));
                    e.1 = height;
                    e.2.push(hash);
                }
                (m, Some(t)) => t.record(m, hash, height),
                (_, None) => {}
            }
        }
    }
    // Flows that did not finish within the blocks, and the last sweeps.
    let mut step = cfg.blocks.saturating_sub(layering_from);
    loop {
        let mut txs = flow_step(&flows, step);
        txs.extend(pending_sweeps.drain(..).map(|(_, t)| t));
        if txs.is_empty() {
            break;
        }
        g.block(&txs).await?;
        step += 1;
    }
    let _: Value = g.rpc.call("evm_setAutomine", json!([true])).await?;

    // Truth.
    let dir = out.join("truth");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut labels = String::from("address,label,category\n");
    for (a, l, c) in &g.labels {
        let _ = writeln!(labels, "{a:#x},{l},{c}");
    }
    let mut entities = String::from("address,entity_id\n");
    for (a, e) in &g.entities {
        let _ = writeln!(entities, "{a:#x},{e}");
    }
    let mut cashouts = String::from("scam,exit,asset,amount,hops\n");
    for f in &flows {
        let _ = writeln!(
            cashouts,
            "{:#x},{:#x},{},{},{}",
            f.scam, f.exit, f.asset, f.amount, f.hop_count
        );
    }
    let mut plants = String::from("pattern,address,first_block,last_block,txids\n");
    for (a, (first, last, hashes)) in &collections {
        let list: Vec<String> = hashes.iter().map(|h| format!("{h:#x}")).collect();
        let _ = writeln!(
            plants,
            "victim_collection,{a:#x},{first},{last},{}",
            list.join(" ")
        );
    }
    if let Some(t) = &ty {
        t.write(&mut plants);
    }
    for (name, body) in [
        ("labels.csv", labels),
        ("entities.csv", entities),
        ("cashouts.csv", cashouts),
        ("typologies.csv", plants),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| Error::io(&p, e))?;
    }
    g.summary.cashouts = flows.len();
    Ok(g.summary)
}

/// The transactions of every flow's `step`-th hop (the step after the last is the sweep).
fn flow_step(flows: &[Flow], step: usize) -> Vec<Tx> {
    let mut txs = Vec::new();
    for f in flows {
        if let Some(h) = f.hops.get(step) {
            txs.extend(h.iter().cloned());
        }
        if step == f.hops.len() {
            txs.push(f.sweep.clone());
        }
    }
    txs
}

/// Plans one layering flow of `amount` from `scam` to the deposit address `exit` over
/// `depth` hops of fresh intermediaries (ETH: one hop goes through a fresh splitter
/// contract of the operator's, two halves that merge again; the stablecoin: a split into
/// two wallets that merge), then a sweep into the hot wallet.
#[allow(clippy::too_many_arguments)]
async fn plan_flow(
    g: &mut Gen,
    entity: &str,
    scam: Address,
    amount: u128,
    depth: usize,
    exit: Address,
    eth: bool,
    usd: Address,
    hot: Address,
) -> Result<Flow> {
    let send = |from: Address, to: Address, v: u128| {
        if eth {
            Tx::pay(from, to, v)
        } else {
            Tx::usd(usd, from, to, v)
        }
    };
    let mut hops: Vec<Vec<Tx>> = Vec::new();
    let mut cur = scam;
    let mut hop_count = 0u32;
    // The middle of the path splits in two and merges again: 2 extra transfers deep.
    let split_at = if depth >= 3 { Some(1usize) } else { None };
    let mut i = 0usize;
    while i < depth {
        let last = i + 1 == depth;
        let next = if last {
            exit
        } else {
            g.fresh_funded(entity).await?
        };
        if split_at == Some(i) && !last {
            let a = g.fresh_funded(entity).await?;
            let b = g.fresh_funded(entity).await?;
            if eth {
                // A splitter contract of the operator's own: cur → splitter → a, b.
                let created = g
                    .block(&[Tx {
                        from: cur,
                        to: None,
                        value: 0,
                        data: splitter(),
                        reverts: false,
                    }])
                    .await?;
                let sp = created[0].ok_or_else(|| Error::Internal {
                    what: "synth: splitter deployment returned no address".into(),
                })?;
                g.entities.push((sp, entity.to_string()));
                hops.push(vec![Tx::call(
                    cur,
                    sp,
                    amount,
                    ISplitter::splitCall { to: vec![a, b] }.abi_encode(),
                )]);
                hop_count += 2;
            } else {
                hops.push(vec![send(cur, a, amount / 2), send(cur, b, amount / 2)]);
                hop_count += 1;
            }
            hops.push(vec![send(a, next, amount / 2), send(b, next, amount / 2)]);
            hop_count += 1;
            i += 2;
        } else {
            hops.push(vec![send(cur, next, amount)]);
            hop_count += 1;
            i += 1;
        }
        cur = next;
    }
    if cur != exit {
        hops.push(vec![send(cur, exit, amount)]);
        hop_count += 1;
    }
    Ok(Flow {
        scam,
        asset: if eth {
            "ETH".into()
        } else {
            format!("{usd:#x}")
        },
        amount,
        hops,
        exit,
        hop_count,
        sweep: send(exit, hot, amount),
    })
}

/// A transaction of a block the truth names.
enum Mark {
    Victim(Address),
    /// A drain by phishing operation k.
    Drain(usize),
    /// A poisoning transfer to this look-alike.
    Poison(Address),
    /// Evidence of a finding of this pattern about this address: a swap into the
    /// stablecoin, a relay's forward (the chain's first relay), a structuring payment, a
    /// mixer deposit.
    Plant(&'static str, Address),
}

/// A phishing operation: a spender that victims approve and that then drains them.
struct Phisher {
    spender: Address,
    collector: Address,
    /// (victim, block it approves at, block it is drained at).
    victims: Vec<(Address, usize, usize)>,
    drains: Vec<(B256, u64)>,
}

/// The Ethereum typologies a run plants, and their look-alikes.
struct Typologies {
    usd: Address,
    router: Address,
    /// Users who approved the router and pay through it.
    router_users: Vec<Address>,
    wallets: Vec<Address>,
    phishers: Vec<Phisher>,
    poisoners: Vec<Address>,
    /// Payments whose payer will be poisoned: (due block, victim, counterparty).
    to_poison: Vec<(usize, Address, Address)>,
    /// Poisoning plants: look-alike, the transaction, its block.
    poisons: Vec<(Address, B256, u64)>,
    /// The ETH/stablecoin pools: one logged as a Uniswap V2 pair, one as a Curve pool.
    pools: [Address; 2],
    /// Users who approved the pool and sell the stablecoin on it too.
    dex_users: Vec<Address>,
    /// Transactions due in a later block, with what the truth calls them.
    pending: Vec<(usize, Tx, Option<Mark>)>,
    /// The stablecoin's minter (cash-ins of the structurers).
    minter: Address,
    /// The mixer (labelled `mixer`) and the relayer paying its withdrawals.
    mixer: Address,
    relayer: Address,
    /// Per (pattern, address) planted: the evidence transactions and their blocks.
    plants: BTreeMap<(&'static str, Address), Vec<(B256, u64)>>,
}

const MAX_APPROVAL: U256 = U256::MAX;

impl Typologies {
    async fn set_up(
        g: &mut Gen,
        cfg: &EthSynthConfig,
        usd: Address,
        minter: Address,
        wallets: &[Address],
    ) -> Result<Self> {
        let deployer = g.fresh_funded("router-deployer").await?;
        let relayer = g.fresh_funded("mixer-relayer").await?;
        let created = g
            .block(&[
                Tx {
                    from: deployer,
                    to: None,
                    value: 0,
                    data: mixer(ETH, relayer),
                    reverts: false,
                },
                Tx {
                    from: deployer,
                    to: None,
                    value: 0,
                    data: router(),
                    reverts: false,
                },
                Tx {
                    from: deployer,
                    to: None,
                    value: 0,
                    data: pool(usd, false),
                    reverts: false,
                },
                Tx {
                    from: deployer,
                    to: None,
                    value: 0,
                    data: pool(usd, true),
                    reverts: false,
                },
            ])
            .await?;
        let (Some(Some(mixer)), Some(Some(router)), Some(Some(pool)), Some(Some(curve))) = (
            created.first().copied(),
            created.get(1).copied(),
            created.get(2).copied(),
            created.get(3).copied(),
        ) else {
            return Err(Error::Internal {
                what: "synth: the router's or pools' deployment returned no address".into(),
            });
        };
        let pools = [pool, curve];
        g.entities.push((router, "contract-router".into()));
        g.entities.push((pool, "contract-pool".into()));
        g.entities.push((curve, "contract-curve-pool".into()));
        g.entities.push((mixer, "contract-mixer".into()));
        g.labels.push((mixer, "mixer-0".into(), "mixer"));
        // Liquidity: 1,000 ETH against 2,000,000 of the stablecoin (2,000 a coin), each.
        g.fund(&pools, 1_000 * ETH).await?;
        let liquidity: Vec<Tx> = pools
            .iter()
            .map(|&p| {
                Tx::call(
                    minter,
                    usd,
                    0,
                    IFerretUSD::mintCall {
                        to: p,
                        value: U256::from(2_000_000 * USD),
                    }
                    .abi_encode(),
                )
            })
            .collect();
        g.block(&liquidity).await?;
        // A tenth of the users approve the router once, without limit (as wallets do).
        let router_users: Vec<Address> = wallets.iter().step_by(10).copied().collect();
        let approvals: Vec<Tx> = router_users
            .iter()
            .map(|&w| {
                Tx::call(
                    w,
                    usd,
                    0,
                    IFerretUSD::approveCall {
                        spender: router,
                        value: MAX_APPROVAL,
                    }
                    .abi_encode(),
                )
            })
            .collect();
        g.block(&approvals).await?;
        // A tenth of the users (others than the router's) approve the pools, to sell.
        let dex_users: Vec<Address> = wallets.iter().skip(5).step_by(10).copied().collect();
        let approvals: Vec<Tx> = dex_users
            .iter()
            .flat_map(|&w| {
                pools.map(|p| {
                    Tx::call(
                        w,
                        usd,
                        0,
                        IFerretUSD::approveCall {
                            spender: p,
                            value: MAX_APPROVAL,
                        }
                        .abi_encode(),
                    )
                })
            })
            .collect();
        g.block(&approvals).await?;
        let mut phishers = Vec::new();
        let span = cfg.blocks.saturating_sub(4).max(1);
        let mut taken: std::collections::BTreeSet<Address> = router_users.iter().copied().collect();
        for k in 0..2 {
            let entity = format!("phisher-{k}");
            let spender = g.fresh_funded(&entity).await?;
            // Funded: it sells part of the drained stablecoin for ETH on the pool.
            let collector = g.fresh_funded(&entity).await?;
            let n = g.rng.random_range(5..=8usize);
            let mut victims = Vec::new();
            while victims.len() < n && taken.len() < wallets.len() {
                let v = wallets[g.rng.random_range(0..wallets.len())];
                if !taken.insert(v) {
                    continue;
                }
                let at = g.rng.random_range(0..span);
                let drain = at + g.rng.random_range(1..=3usize);
                victims.push((v, at, drain));
            }
            phishers.push(Phisher {
                spender,
                collector,
                victims,
                drains: Vec::new(),
            });
        }
        let mut poisoners = Vec::new();
        for k in 0..2 {
            poisoners.push(g.fresh_funded(&format!("poisoner-{k}")).await?);
        }
        Ok(Self {
            usd,
            router,
            router_users,
            wallets: wallets.to_vec(),
            phishers,
            poisoners,
            to_poison: Vec::new(),
            poisons: Vec::new(),
            pools,
            dex_users,
            pending: Vec::new(),
            plants: BTreeMap::new(),
            minter,
            mixer,
            relayer,
        })
    }

    /// Plants `n` deposits of 1 ETH into the mixer by `depositor` from block `b`, one a
    /// block, and their withdrawals by the relayer to fresh addresses of `entity` two
    /// blocks after each.
    fn plant_mixing(&mut self, g: &mut Gen, depositor: Address, entity: &str, n: usize, b: usize) {
        for k in 0..n {
            let mut commitment = [0u8; 32];
            g.rng.fill(&mut commitment);
            self.pending.push((
                b + k,
                Tx::call(
                    depositor,
                    self.mixer,
                    ETH,
                    IMixer::depositCall {
                        commitment: commitment.into(),
                    }
                    .abi_encode(),
                ),
                Some(Mark::Plant("coinjoin", depositor)),
            ));
            let to = g.fresh(entity);
            let mut nullifier = [0u8; 32];
            g.rng.fill(&mut nullifier);
            self.pending.push((
                b + k + 2,
                Tx::call(
                    self.relayer,
                    self.mixer,
                    0,
                    IMixer::withdrawCall {
                        to,
                        nullifierHash: nullifier.into(),
                    }
                    .abi_encode(),
                ),
                None,
            ));
        }
    }

    /// Plants structuring from block `b`: a fresh address of `entity` is cashed in (the
    /// stablecoin minted to it) and pays 12–16 fresh addresses 955–999.99 each (just
    /// under 1,000), four a block. With `payroll`, the look-alike instead: an employer
    /// pays 10 fresh employees the same 995 in one block and again five blocks later.
    async fn plant_structuring(
        &mut self,
        g: &mut Gen,
        entity: &str,
        b: usize,
        payroll: bool,
    ) -> Result<()> {
        // Gas given outside any transfer: the cash-in is its first transfer.
        let source = g.fresh_funded(entity).await?;
        let n = if payroll {
            10
        } else {
            g.rng.random_range(12..=16usize)
        };
        let to: Vec<Address> = (0..n).map(|_| g.fresh(entity)).collect();
        self.pending.push((
            b,
            Tx::call(
                self.minter,
                self.usd,
                0,
                IFerretUSD::mintCall {
                    to: source,
                    value: U256::from(40_000 * USD),
                }
                .abi_encode(),
            ),
            None,
        ));
        for (k, &r) in to.iter().enumerate() {
            if payroll {
                for again in [0, 5] {
                    self.pending.push((
                        b + 1 + again,
                        Tx::usd(self.usd, source, r, 995 * USD),
                        None,
                    ));
                }
            } else {
                let cents = g.rng.random_range(95_500..=99_999u128);
                self.pending.push((
                    b + 1 + k / 4,
                    Tx::usd(self.usd, source, r, cents * USD / 100),
                    Some(Mark::Plant("fan_out", source)),
                ));
            }
        }
        Ok(())
    }

    /// `n` fresh addresses of `entity` for a chain's hops: bare when a gas wallet will pay
    /// their gas (`by_wallet`), else with gas given outside any transfer.
    async fn hop_addresses(
        g: &mut Gen,
        entity: &str,
        n: usize,
        by_wallet: bool,
    ) -> Result<Vec<Address>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(if by_wallet {
                g.fresh(entity)
            } else {
                g.fresh_funded(entity).await?
            });
        }
        Ok(out)
    }

    /// Plants a layering chain: the collection address pays `value` of the stablecoin to
    /// the first of `hops` fresh relays of the operation, each forwarding it whole to the
    /// next a block later, the last to an exchange. Every relay has one transfer of the
    /// stablecoin in and one out. With `gas`, that wallet pays each relay 0.08 ETH for
    /// gas the block the chain starts (the second's through a fresh address that passes
    /// on 0.086 of the 0.09 ETH it got); without, the gas is given outside any transfer.
    #[allow(clippy::too_many_arguments)]
    async fn plant_relays(
        &mut self,
        g: &mut Gen,
        scam: Address,
        value: u128,
        entity: &str,
        b: usize,
        hops: usize,
        exchange: Address,
        gas: Option<Address>,
    ) -> Result<()> {
        let relays = Self::hop_addresses(g, entity, hops, gas.is_some()).await?;
        if let Some(station) = gas {
            // The second relay's gas goes through a fresh address of the operation,
            // which passes on nearly all it got a block later: an ETH hop beside the
            // token chain, no part of it.
            let via = g.fresh(entity);
            self.pending
                .push((b, Tx::pay(station, via, 9 * ETH / 100), None));
            for (i, &r) in relays.iter().enumerate() {
                if i == 1 {
                    self.pending
                        .push((b + 1, Tx::pay(via, r, 86 * ETH / 1000), None));
                } else {
                    self.pending
                        .push((b, Tx::pay(station, r, 8 * ETH / 100), None));
                }
            }
        }
        let first = relays[0];
        self.pending
            .push((b, Tx::usd(self.usd, scam, first, value), None));
        for (i, &r) in relays.iter().enumerate() {
            let next = relays.get(i + 1).copied().unwrap_or(exchange);
            self.pending.push((
                b + 1 + i,
                Tx::usd(self.usd, r, next, value),
                Some(Mark::Plant("pass_through", first)),
            ));
        }
        Ok(())
    }

    /// Plants a peel chain: the collection address pays `value` of the stablecoin to the
    /// first of `steps` fresh addresses of the operation; a block later each pays one or
    /// two peels of 3–12% of what it received (to fresh addresses of the operation, or
    /// an exchange's hot wallet) and the rest to the next, the last the rest to the
    /// exchange. With `gas`, that wallet of the operation pays each step 0.08 ETH for
    /// gas the block the chain starts (as operations do); without, the steps' gas is
    /// given outside any transfer.
    #[allow(clippy::too_many_arguments)]
    async fn plant_peel(
        &mut self,
        g: &mut Gen,
        scam: Address,
        value: u128,
        entity: &str,
        b: usize,
        steps: usize,
        exchange: Address,
        gas: Option<Address>,
    ) -> Result<()> {
        let hops = Self::hop_addresses(g, entity, steps, gas.is_some()).await?;
        let first = hops[0];
        if let Some(station) = gas {
            for &h in &hops {
                self.pending
                    .push((b, Tx::pay(station, h, 8 * ETH / 100), None));
            }
        }
        self.pending
            .push((b, Tx::usd(self.usd, scam, first, value), None));
        let mut have = value;
        for (i, &h) in hops.iter().enumerate() {
            let mut left = have;
            for _ in 0..g.rng.random_range(1..=2usize) {
                let pct = g.rng.random_range(3..=12u128);
                let peel = have / 100 * pct;
                let to = if g.rng.random_bool(0.3) {
                    exchange
                } else {
                    g.fresh(entity)
                };
                self.pending.push((
                    b + 1 + i,
                    Tx::usd(self.usd, h, to, peel),
                    Some(Mark::Plant("peel_chain", first)),
                ));
                left -= peel;
            }
            let next = hops.get(i + 1).copied().unwrap_or(exchange);
            self.pending.push((
                b + 1 + i,
                Tx::usd(self.usd, h, next, left),
                Some(Mark::Plant("peel_chain", first)),
            ));
            have = left;
        }
        Ok(())
    }

    /// A look-alike of a peel chain: an airdrop farmer's daisy chain. Its main wallet pays
    /// 3 ETH to the first of 6 fresh wallets; a block after being paid, each uses a
    /// contract (a multisend of 0.5–1% of what it got through the splitter, to `payee`)
    /// and passes the rest, less 0.01 ETH kept for gas, to the next wallet (the last
    /// back to the main one).
    async fn daisy_chain(
        &mut self,
        g: &mut Gen,
        split: Address,
        payee: Address,
        b: usize,
    ) -> Result<()> {
        let main = g.fresh_funded("farmer-0").await?;
        let wallets: Vec<Address> = (0..6).map(|_| g.fresh("farmer-0")).collect();
        let mut have = 3 * ETH;
        self.pending
            .push((b, Tx::pay(main, wallets[0], have), None));
        for (i, &w) in wallets.iter().enumerate() {
            let fee = have / 1000 * g.rng.random_range(5..=10u128);
            self.pending.push((
                b + 1 + i,
                Tx::call(
                    w,
                    split,
                    fee,
                    ISplitter::splitCall { to: vec![payee] }.abi_encode(),
                ),
                None,
            ));
            let rest = have - fee - ETH / 100;
            let next = wallets.get(i + 1).copied().unwrap_or(main);
            self.pending.push((b + 1 + i, Tx::pay(w, next, rest), None));
            have = rest;
        }
        Ok(())
    }

    /// Plants a swap of `value` wei of scam money into the stablecoin, starting at block
    /// `b`. Directly: the collection address sells it for itself. Through a relay: the
    /// collection address pays a fresh address of the operation, which buys a round sum
    /// (an exact-output swap) a block later and sends it to an exchange the block after.
    /// The round sum is what 70% of the money buys at the pool's price now, in whole
    /// thousands (the rest covers the price's moves until the swap; the pool refunds
    /// what it does not use); none when that is under a thousand.
    #[allow(clippy::too_many_arguments)]
    async fn plant_swap(
        &mut self,
        g: &mut Gen,
        scam: Address,
        value: u128,
        entity: &str,
        b: usize,
        relay: bool,
        exchange: Address,
        pool: Address,
    ) -> Result<()> {
        if !relay {
            self.pending.push((
                b,
                Tx::call(
                    scam,
                    pool,
                    value,
                    IPool::swapExactETHForTokensCall {
                        to: scam,
                        minOut: U256::ZERO,
                    }
                    .abi_encode(),
                ),
                Some(Mark::Plant("stablecoin_swap", scam)),
            ));
            return Ok(());
        }
        let r0: U256 = g
            .rpc
            .call("eth_getBalance", json!([pool, "latest"]))
            .await?;
        let r0 = u128::try_from(r0).unwrap_or(u128::MAX);
        let r1 = Self::balance(g, self.usd, pool).await?;
        let spend = value.saturating_sub(ETH / 10) / 10 * 7;
        // The pool's exact-input price: out = in·997·r1 / (r0·1000 + in·997).
        let bought = U256::from(spend) * U256::from(997u32) * U256::from(r1)
            / (U256::from(r0) * U256::from(1000u32) + U256::from(spend) * U256::from(997u32))
                .max(U256::from(1u32));
        let bought = u128::try_from(bought).unwrap_or(0);
        let round = bought / (1_000 * USD) * (1_000 * USD);
        if round == 0 {
            return Ok(());
        }
        let r = g.fresh(entity);
        self.pending.push((b, Tx::pay(scam, r, value), None));
        self.pending.push((
            b + 1,
            Tx::call(
                r,
                pool,
                value - ETH / 10,
                IPool::swapETHForExactTokensCall {
                    out: U256::from(round),
                    to: r,
                }
                .abi_encode(),
            ),
            Some(Mark::Plant("stablecoin_swap", r)),
        ));
        self.pending
            .push((b + 2, Tx::usd(self.usd, r, exchange, round), None));
        Ok(())
    }

    /// An address whose first four and last four hex digits are `c`'s (what a victim
    /// glances at), the rest random; owned by poisoner `k`.
    fn look_alike(g: &mut Gen, c: Address, k: usize) -> Address {
        let mut b = [0u8; 20];
        g.rng.fill(&mut b);
        b[..2].copy_from_slice(&c[..2]);
        b[18..].copy_from_slice(&c[18..]);
        let a = Address::from(b);
        g.entities.push((a, format!("poisoner-{k}")));
        a
    }

    async fn balance(g: &Gen, token: Address, who: Address) -> Result<u128> {
        let data: Bytes = IFerretUSD::balanceOfCall { who }.abi_encode().into();
        let out: Bytes = g
            .rpc
            .call("eth_call", json!([{"to": token, "input": data}, "latest"]))
            .await?;
        let v = U256::try_from_be_slice(&out).unwrap_or_default();
        Ok(u128::try_from(v).unwrap_or(u128::MAX))
    }

    /// This block's typology transactions.
    async fn block(
        &mut self,
        g: &mut Gen,
        b: usize,
        txs: &mut Vec<Tx>,
        marks: &mut Vec<(usize, Mark)>,
    ) -> Result<()> {
        let usd = self.usd;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.0 <= b);
        self.pending = later;
        for (_, t, m) in due {
            txs.push(t);
            if let Some(m) = m {
                marks.push((txs.len() - 1, m));
            }
        }
        // DEX users: buy the stablecoin with ETH (some a round sum, with an exact-output
        // swap), or sell it for ETH. Most of the pool's swaps, none of them scam money.
        for _ in 0..g.rng.random_range(0..=2usize) {
            let pool = self.pools[g.rng.random_range(0..2usize)];
            match g.rng.random_range(0..10) {
                0..=4 => {
                    let from = self.wallets[g.rng.random_range(0..self.wallets.len())];
                    let value = g.rng.random_range(50..=5_000u128) * ETH / 1000;
                    txs.push(Tx::call(
                        from,
                        pool,
                        value,
                        IPool::swapExactETHForTokensCall {
                            to: from,
                            minOut: U256::ZERO,
                        }
                        .abi_encode(),
                    ));
                }
                5..=6 => {
                    let from = self.wallets[g.rng.random_range(0..self.wallets.len())];
                    let out = g.rng.random_range(1..=50u128) * 100 * USD;
                    // Twice what it costs at 2,000 a coin; the pool refunds the rest.
                    txs.push(Tx::call(
                        from,
                        pool,
                        out / USD * ETH / 1000,
                        IPool::swapETHForExactTokensCall {
                            out: U256::from(out),
                            to: from,
                        }
                        .abi_encode(),
                    ));
                }
                _ => {
                    let from = self.dex_users[g.rng.random_range(0..self.dex_users.len())];
                    let amount = g.rng.random_range(10..=500u128) * USD;
                    txs.push(Tx::call(
                        from,
                        pool,
                        0,
                        IPool::swapExactTokensForETHCall {
                            amountIn: U256::from(amount),
                            to: from,
                        }
                        .abi_encode(),
                    ));
                }
            }
        }
        // Payments through the router: the owner's own transaction pulls its tokens.
        for _ in 0..g.rng.random_range(0..=2usize) {
            let from = self.router_users[g.rng.random_range(0..self.router_users.len())];
            let to = self.wallets[g.rng.random_range(0..self.wallets.len())];
            let value = U256::from(g.rng.random_range(1..=300u128) * USD);
            txs.push(Tx::call(
                from,
                self.router,
                0,
                IRouter::payCall {
                    token: usd,
                    to,
                    value,
                }
                .abi_encode(),
            ));
        }
        // Zero-value transfers between strangers (airdrop claims and wallet tests do
        // this): zero transfers that are no poisoning.
        if g.rng.random_bool(0.3) {
            let from = self.wallets[g.rng.random_range(0..self.wallets.len())];
            let to = self.wallets[g.rng.random_range(0..self.wallets.len())];
            txs.push(Tx::usd(usd, from, to, 0));
        }
        // A phishing collector sells half of what it drained for ETH, two blocks after
        // the last drain: a swap *out of* the stablecoin by scam money, no purchase.
        for (k, p) in self.phishers.iter().enumerate() {
            let Some(last) = p.victims.iter().map(|v| v.2).max() else {
                continue;
            };
            let pool = self.pools[k % 2];
            if b == last + 1 {
                txs.push(Tx::call(
                    p.collector,
                    usd,
                    0,
                    IFerretUSD::approveCall {
                        spender: pool,
                        value: MAX_APPROVAL,
                    }
                    .abi_encode(),
                ));
            } else if b == last + 2 {
                let bal = Self::balance(g, usd, p.collector).await?;
                if bal >= 2 {
                    txs.push(Tx::call(
                        p.collector,
                        pool,
                        0,
                        IPool::swapExactTokensForETHCall {
                            amountIn: U256::from(bal / 2),
                            to: p.collector,
                        }
                        .abi_encode(),
                    ));
                }
            }
        }
        // Phishing: approvals, then drains of 90% of the balance (the rest keeps the
        // victim's own payments in the same block from failing).
        for k in 0..self.phishers.len() {
            let p = &self.phishers[k];
            let (spender, collector) = (p.spender, p.collector);
            let due: Vec<(Address, usize, usize)> = p
                .victims
                .iter()
                .copied()
                .filter(|v| v.1 == b || v.2 == b)
                .collect();
            for (victim, at, drain) in due {
                if at == b {
                    txs.push(Tx::call(
                        victim,
                        usd,
                        0,
                        IFerretUSD::approveCall {
                            spender,
                            value: MAX_APPROVAL,
                        }
                        .abi_encode(),
                    ));
                }
                if drain == b {
                    let bal = Self::balance(g, usd, victim).await?;
                    txs.push(Tx::call(
                        spender,
                        usd,
                        0,
                        IFerretUSD::transferFromCall {
                            from: victim,
                            to: collector,
                            value: U256::from(bal / 10 * 9),
                        }
                        .abi_encode(),
                    ));
                    marks.push((txs.len() - 1, Mark::Drain(k)));
                }
            }
        }
        // Poisoning: a victim pays a counterparty; one or two blocks later a poisoner
        // moves zero tokens from the victim to a look-alike of the counterparty.
        if g.rng.random_bool(0.4) {
            let v = self.wallets[g.rng.random_range(0..self.wallets.len())];
            let c = self.wallets[g.rng.random_range(0..self.wallets.len())];
            if v != c {
                txs.push(Tx::usd(usd, v, c, g.rng.random_range(50..=3000u128) * USD));
                self.to_poison
                    .push((b + g.rng.random_range(1..=2usize), v, c));
            }
        }
        let due: Vec<(usize, Address, Address)> = self
            .to_poison
            .iter()
            .copied()
            .filter(|p| p.0 == b)
            .collect();
        self.to_poison.retain(|p| p.0 != b);
        for (_, victim, mimicked) in due {
            let k = g.rng.random_range(0..self.poisoners.len());
            let fake = Self::look_alike(g, mimicked, k);
            txs.push(Tx::call(
                self.poisoners[k],
                usd,
                0,
                IFerretUSD::transferFromCall {
                    from: victim,
                    to: fake,
                    value: U256::ZERO,
                }
                .abi_encode(),
            ));
            marks.push((txs.len() - 1, Mark::Poison(fake)));
        }
        Ok(())
    }

    fn record(&mut self, m: Mark, hash: B256, height: u64) {
        match m {
            Mark::Drain(k) => self.phishers[k].drains.push((hash, height)),
            Mark::Poison(fake) => self.poisons.push((fake, hash, height)),
            Mark::Plant(pattern, who) => self
                .plants
                .entry((pattern, who))
                .or_default()
                .push((hash, height)),
            Mark::Victim(_) => {}
        }
    }

    fn write(&self, out: &mut String) {
        for p in &self.phishers {
            if p.drains.is_empty() {
                continue;
            }
            let first = p.drains.iter().map(|d| d.1).min().unwrap_or_default();
            let last = p.drains.iter().map(|d| d.1).max().unwrap_or_default();
            let list: Vec<String> = p.drains.iter().map(|d| format!("{:#x}", d.0)).collect();
            let _ = writeln!(
                out,
                "approval_phishing,{:#x},{first},{last},{}",
                p.spender,
                list.join(" ")
            );
        }
        for ((pattern, who), list) in &self.plants {
            let lo = list.iter().map(|s| s.1).min().unwrap_or_default();
            let hi = list.iter().map(|s| s.1).max().unwrap_or_default();
            let hashes: Vec<String> = list.iter().map(|s| format!("{:#x}", s.0)).collect();
            let _ = writeln!(out, "{pattern},{who:#x},{lo},{hi},{}", hashes.join(" "));
        }
        for (fake, hash, height) in &self.poisons {
            let _ = writeln!(
                out,
                "address_poisoning,{fake:#x},{height},{height},{hash:#x}"
            );
        }
    }
}
