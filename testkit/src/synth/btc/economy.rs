//! The actors of the synthetic economy and the transactions they make.
//!
//! Every actor keeps a compact wallet (a `Vec` of its unspent outputs); every
//! transaction spends outputs of one entity only, except CoinJoins. All amounts are
//! drawn with integer arithmetic from the seeded RNG so that output is reproducible
//! on every platform.
//!
//! Actors:
//! - mining pools: coinbases to one reused payout address, batched payouts to users;
//! - users: payments (1–3 inputs, payee + change), deposits to their own deposit
//!   address at an exchange, self-consolidations, occasional OP_RETURN data, and
//!   long-running peel chains;
//! - exchanges: per-user deposit addresses, sweeps of many deposits into a reused hot
//!   wallet address, batched withdrawals to users;
//! - CoinJoins as the real tools build them (module `mixing`): Whirlpool tx0s and 5×5
//!   mixes with remixes, Wasabi 1.x and Wasabi 2 rounds, JoinMarket, and a coordinator
//!   of its own kind (equal outputs, changes, a fee output); plus exchange batch payouts
//!   of equal round amounts, which look alike but are one owner's;
//! - scam operations: victims pay published deposit addresses, the operation layers
//!   the money through fresh addresses (splits, merges, forwards) and cashes out to
//!   deposit addresses at exchanges once it is 2–6 hops away from the victims.
//!
//! Simplification: coinbase outputs become spendable in the next block (Core's
//! 100-block maturity is not modelled, so that short test chains have an economy).

use bitcoin::absolute::LockTime;
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::Builder;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Wtxid,
};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::script::{Kind, Material};

mod mixing;
pub(crate) use mixing::CoinJoinTruth;
use mixing::WhirlpoolQueue;

/// Smallest non-OP_RETURN output value the generator creates.
pub(crate) const DUST: u64 = 546;
/// "No address" marker in a `u32` address slot.
const NONE: u32 = u32::MAX;

/// The address appears in an output of a best-chain transaction.
const SEEN: u8 = 1;
const LABEL_SCAM: u8 = 2;
const LABEL_EXCHANGE: u8 = 4;
const LABEL_MIXER: u8 = 8;

/// CoinJoin denominations (sats); never 546 or 2730.
const DENOMINATIONS: [u64; 5] = [100_000, 1_000_000, 5_000_000, 20_000_000, 50_000_000];

#[derive(Clone, Copy, Debug)]
struct Utxo {
    outpoint: OutPoint,
    value: u64,
    addr: u32,
}

/// Taint bookkeeping of a scam-controlled output.
#[derive(Clone, Copy, Debug)]
struct Taint {
    /// Hop number: 0 for victim payments, min over inputs + 1 afterwards.
    hop: u32,
    /// Sequence number of the earliest victim payment on the path.
    seed_seq: u64,
    /// The scam deposit address that victim payment paid.
    seed_addr: u32,
}

impl Taint {
    /// Taint of the outputs of a transaction spending outputs with these taints.
    fn next(taints: impl IntoIterator<Item = Taint>) -> Option<Taint> {
        let mut out: Option<Taint> = None;
        for t in taints {
            out = Some(match out {
                None => Taint {
                    hop: t.hop + 1,
                    ..t
                },
                Some(o) => {
                    let (seed_seq, seed_addr) = if t.seed_seq < o.seed_seq {
                        (t.seed_seq, t.seed_addr)
                    } else {
                        (o.seed_seq, o.seed_addr)
                    };
                    Taint {
                        hop: o.hop.min(t.hop + 1),
                        seed_seq,
                        seed_addr,
                    }
                }
            });
        }
        out
    }
}

#[derive(Clone, Copy, Debug)]
struct ScamUtxo {
    utxo: Utxo,
    taint: Taint,
    /// The end of a relay (a relay starts from anything else, so that two relays are
    /// never one chain).
    relayed: bool,
}

#[derive(Clone, Copy, Debug)]
struct AddrInfo {
    owner: u32,
    kind: Kind,
    flags: u8,
}

/// Where an output's value goes in the generator's books.
#[derive(Clone, Copy, Debug)]
enum Dest {
    User(u32),
    Deposit(u32),
    Hot(u32),
    Pool(u32),
    Scam(u32, Taint),
    /// Owned and recorded, but never spent by the generator (coordinator fees,
    /// peel-chain links held outside the wallet).
    Untracked,
    /// An OP_RETURN output carrying this many data bytes.
    OpReturn(u8),
    /// A Whirlpool premix output of (pool, owning user).
    Premix(u32, u32),
    /// A Whirlpool postmix output waiting to be remixed in (pool, owning user).
    Postmix(u32, u32),
}

#[derive(Clone, Copy, Debug)]
struct Out {
    addr: u32,
    value: u64,
    dest: Dest,
}

impl Out {
    fn to(addr: u32, dest: Dest) -> Self {
        Out {
            addr,
            value: 0,
            dest,
        }
    }
}

struct User {
    utxos: Vec<Utxo>,
    /// Receive addresses handed out more than once (address reuse).
    receive: Vec<u32>,
    kind: Kind,
}

struct Exchange {
    hot: Vec<u32>,
    hot_utxos: Vec<Utxo>,
    deposit_utxos: Vec<Utxo>,
    /// Deposit address of each user at this exchange, `NONE` until first used.
    user_deposit: Vec<u32>,
    deposit_kind: Kind,
    /// Share of the money supply (percent) the exchange keeps in its hot wallet
    /// before it pays withdrawals at full pace.
    reserve_pct: u64,
}

struct Pool {
    addr: u32,
    utxos: Vec<Utxo>,
    weight: u32,
}

struct ScamOp {
    deposits: Vec<u32>,
    utxos: Vec<ScamUtxo>,
    /// Cash-out deposit addresses per exchange.
    exits: Vec<Vec<u32>>,
    min_hops: u32,
    max_hops: u32,
    kind: Kind,
}

struct Mixer {
    fee_addrs: Vec<u32>,
}

#[derive(Clone)]
struct Peel {
    user: u32,
    utxo: Utxo,
    steps_left: u32,
    /// The address of the output the chain began by spending.
    start_addr: u32,
    /// The chain's transactions so far, and the height of its first.
    txids: Vec<Txid>,
    first_height: u32,
}

/// A planted typology, as it goes into `typologies.csv`.
#[derive(Clone, Debug)]
pub(crate) struct Plant {
    pub(crate) pattern: &'static str,
    pub(crate) addr: u32,
    pub(crate) txids: Vec<Txid>,
    pub(crate) first_height: u32,
    pub(crate) last_height: u32,
}

/// A scam operation's rapid pass-through: one output forwarded whole through fresh
/// addresses, a hop every 1–6 blocks.
#[derive(Clone, Copy)]
struct Relay {
    op: u32,
    utxo: ScamUtxo,
    hops_left: u32,
    due: u32,
    plant: usize,
}

/// A merchant: one reused address many customers pay small amounts, swept to the
/// merchant's exchange deposit address.
#[derive(Clone, Copy)]
struct Merchant {
    user: u32,
    addr: u32,
}

/// An employer paying the same employees the same salary every 100–200 blocks.
#[derive(Clone)]
struct Employer {
    user: u32,
    payees: Vec<u32>,
    salary: u64,
    due: u32,
}

/// One scam cash-out output, as it goes into `cashouts.csv`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cashout {
    pub(crate) op: u32,
    pub(crate) seed_addr: u32,
    pub(crate) exit_addr: u32,
    pub(crate) amount: u64,
    pub(crate) hops: u32,
    pub(crate) txid: Txid,
}

/// The non-coinbase transactions of one block, in block order.
#[derive(Default)]
pub(crate) struct BlockBody {
    pub(crate) txs: Vec<Transaction>,
    pub(crate) txids: Vec<Txid>,
    pub(crate) wtxids: Vec<Wtxid>,
    pub(crate) fees: Vec<u64>,
}

/// Entity id ranges: miners, exchanges, scam operations, mixers, then users.
#[derive(Clone, Copy)]
struct Layout {
    miners: u32,
    exchanges: u32,
    scams: u32,
    mixers: u32,
}

impl Layout {
    fn miner(&self, i: u32) -> u32 {
        i
    }
    fn exchange(&self, i: u32) -> u32 {
        self.miners + i
    }
    fn scam(&self, i: u32) -> u32 {
        self.miners + self.exchanges + i
    }
    fn mixer(&self, i: u32) -> u32 {
        self.miners + self.exchanges + self.scams + i
    }
    fn user(&self, i: u32) -> u32 {
        self.miners + self.exchanges + self.scams + self.mixers + i
    }
    /// Entity names are 1-based: `miner-1`, `exchange-2`, `scam-op-1`, `mixer-1`, `user-17`.
    fn name(&self, id: u32) -> String {
        let mut i = id;
        for (prefix, n) in [
            ("miner", self.miners),
            ("exchange", self.exchanges),
            ("scam-op", self.scams),
            ("mixer", self.mixers),
        ] {
            if i < n {
                return format!("{prefix}-{}", i + 1);
            }
            i -= n;
        }
        format!("user-{}", i + 1)
    }
}

const ACTIONS: usize = 21;

#[derive(Clone, Copy, Debug)]
enum Action {
    Payment,
    Deposit,
    Withdrawal,
    Sweep,
    PoolPayout,
    CoinJoin,
    Peel,
    Victim,
    Scam,
    Consolidate,
    Tx0,
    WhirlpoolMix,
    Wasabi1,
    Wasabi2,
    JoinMarket,
    EqualBatch,
    Relay,
    Structure,
    MerchantSale,
    MerchantSweep,
    Salary,
}

/// Value held per actor class, for progress logs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Holdings {
    pub(crate) users: u64,
    pub(crate) exchanges: u64,
    pub(crate) pools: u64,
    pub(crate) scams: u64,
    pub(crate) utxos: u64,
}

pub(crate) struct Economy {
    rng: ChaCha8Rng,
    mat: Material,
    network: Network,
    layout: Layout,
    addrs: Vec<AddrInfo>,
    users: Vec<User>,
    exchanges: Vec<Exchange>,
    pools: Vec<Pool>,
    scams: Vec<ScamOp>,
    mixers: Vec<Mixer>,
    peels: Vec<Peel>,
    victim_seq: u64,
    /// Sum of all subsidies paid so far.
    supply: u64,
    /// Transactions made per action, for progress logs.
    made: [u64; ACTIONS],
    /// Fee rate of the block being built, sat/vB.
    rate: u64,
    body: BlockBody,
    cashouts: Vec<Cashout>,
    /// Whirlpool's premix and postmix queues, one per pool.
    whirlpool: Vec<WhirlpoolQueue>,
    /// CoinJoins (and tx0s) made since the last `take_coinjoins`.
    coinjoins: Vec<CoinJoinTruth>,
    /// Plant the typologies beyond the peel chains users make anyway (relays,
    /// structuring, repeat victims) and their look-alikes (merchants, salaries).
    typologies: bool,
    /// Height of the block being built.
    height: u32,
    /// Typologies finished since the last `take_plants`; relays under way.
    plants: Vec<Plant>,
    open_plants: Vec<Option<Plant>>,
    relays: Vec<Relay>,
    /// Per scam operation: victims who pay again, with their last payment.
    victims: Vec<Vec<(u32, u64)>>,
    merchants: Vec<Merchant>,
    employers: Vec<Employer>,
    /// Every scam deposit address victims paid, with the payments.
    collections: std::collections::BTreeMap<u32, Plant>,
    /// Where planted peel chains ended.
    peel_ends: std::collections::HashSet<OutPoint>,
}

fn sum(utxos: &[Utxo]) -> u64 {
    utxos.iter().map(|u| u.value).sum()
}

/// Removes `k` random outputs from `v`.
fn take_random(v: &mut Vec<Utxo>, k: usize, rng: &mut ChaCha8Rng) -> Vec<Utxo> {
    let mut out = Vec::with_capacity(k);
    for _ in 0..k.min(v.len()) {
        let i = rng.random_range(0..v.len());
        out.push(v.swap_remove(i));
    }
    out
}

/// Weight units of one input spending `kind` (non-witness bytes × 4 + witness bytes).
fn input_weight(kind: Kind) -> u64 {
    match kind {
        Kind::P2pkh => 588,
        Kind::P2wpkh => 271,
        Kind::P2shP2wpkh => 363,
        Kind::P2shMultisig => 1172,
        Kind::P2wsh => 417,
        Kind::P2tr => 230,
        Kind::P2pk => 452,
        Kind::BareMultisig => 456,
    }
}

fn script_len(kind: Kind) -> u64 {
    match kind {
        Kind::P2pkh => 25,
        Kind::P2shP2wpkh | Kind::P2shMultisig => 23,
        Kind::P2wpkh => 22,
        Kind::P2wsh | Kind::P2tr => 34,
        Kind::P2pk => 35,
        Kind::BareMultisig => 71,
    }
}

impl Economy {
    /// Sets up the actors for a chain of about `expected_txs` transactions.
    pub(crate) fn new(seed: u64, network: Network, expected_txs: u64, typologies: bool) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n_users = u32::try_from((expected_txs / 25).clamp(50, 1_000_000))
            .expect("clamped to at most 1e6");
        let layout = Layout {
            miners: rng.random_range(3..=5),
            exchanges: rng.random_range(3..=5),
            scams: rng.random_range(2..=5),
            mixers: rng.random_range(1..=2),
        };
        let mut econ = Economy {
            rng,
            mat: Material::new(seed),
            network,
            layout,
            addrs: Vec::new(),
            users: Vec::new(),
            exchanges: Vec::new(),
            pools: Vec::new(),
            scams: Vec::new(),
            mixers: Vec::new(),
            peels: Vec::new(),
            victim_seq: 0,
            supply: 0,
            made: [0; ACTIONS],
            rate: 1,
            body: BlockBody::default(),
            cashouts: Vec::new(),
            whirlpool: (0..4).map(|_| WhirlpoolQueue::default()).collect(),
            coinjoins: Vec::new(),
            typologies,
            height: 0,
            plants: Vec::new(),
            open_plants: Vec::new(),
            relays: Vec::new(),
            victims: Vec::new(),
            merchants: Vec::new(),
            employers: Vec::new(),
            collections: std::collections::BTreeMap::new(),
            peel_ends: std::collections::HashSet::new(),
        };
        // Pool 1 pays its coinbases to bare p2pk like the early chain did.
        const POOL_KINDS: [Kind; 5] = [
            Kind::P2pk,
            Kind::P2pkh,
            Kind::P2wpkh,
            Kind::P2shP2wpkh,
            Kind::P2tr,
        ];
        for i in 0..layout.miners {
            let kind = POOL_KINDS[i as usize % POOL_KINDS.len()];
            let addr = econ.new_addr(layout.miner(i), kind, 0);
            let weight = econ.rng.random_range(1..=10);
            econ.pools.push(Pool {
                addr,
                utxos: Vec::new(),
                weight,
            });
        }
        const HOT_KINDS: [Kind; 5] = [
            Kind::P2wsh,
            Kind::P2shMultisig,
            Kind::P2wpkh,
            Kind::P2wsh,
            Kind::P2pkh,
        ];
        const DEPOSIT_KINDS: [Kind; 5] = [
            Kind::P2wpkh,
            Kind::P2shP2wpkh,
            Kind::P2pkh,
            Kind::P2wpkh,
            Kind::P2tr,
        ];
        for i in 0..layout.exchanges {
            let owner = layout.exchange(i);
            let n_hot = econ.rng.random_range(1..=2);
            let hot = (0..n_hot)
                .map(|_| econ.new_addr(owner, HOT_KINDS[i as usize % 5], LABEL_EXCHANGE))
                .collect();
            econ.exchanges.push(Exchange {
                hot,
                hot_utxos: Vec::new(),
                deposit_utxos: Vec::new(),
                user_deposit: vec![NONE; n_users as usize],
                deposit_kind: DEPOSIT_KINDS[i as usize % 5],
                reserve_pct: econ.rng.random_range(3..=10),
            });
        }
        for i in 0..layout.scams {
            let owner = layout.scam(i);
            let kind = [Kind::P2wpkh, Kind::P2pkh, Kind::P2tr][econ.rng.random_range(0..3)];
            let n_dep = econ.rng.random_range(2..=4);
            let deposits = (0..n_dep)
                .map(|_| econ.new_addr(owner, kind, LABEL_SCAM))
                .collect();
            let min_hops = econ.rng.random_range(2..=3);
            let max_hops = econ.rng.random_range(min_hops + 1..=6);
            econ.scams.push(ScamOp {
                deposits,
                utxos: Vec::new(),
                exits: vec![Vec::new(); layout.exchanges as usize],
                min_hops,
                max_hops,
                kind,
            });
        }
        for i in 0..layout.mixers {
            let owner = layout.mixer(i);
            let fee_addrs = (0..2)
                .map(|_| econ.new_addr(owner, Kind::P2wpkh, LABEL_MIXER))
                .collect();
            econ.mixers.push(Mixer { fee_addrs });
        }
        for _ in 0..n_users {
            let kind = Kind::draw(&mut econ.rng);
            econ.users.push(User {
                utxos: Vec::new(),
                receive: Vec::new(),
                kind,
            });
        }
        econ.victims = vec![Vec::new(); econ.scams.len()];
        if typologies {
            // Look-alikes: merchants (many unrelated payers) and employers (equal
            // payments to many addresses), one of each per 200 users, at least two.
            let n = (n_users / 200).max(2);
            for i in 0..n {
                let user = i * 7 % n_users;
                let addr = econ.user_fresh(user);
                econ.merchants.push(Merchant { user, addr });
            }
            for i in 0..n {
                let user = (i * 11 + 3) % n_users;
                let k = econ.rng.random_range(10..=25);
                let payees = (0..k)
                    .map(|_| {
                        let v = econ.random_user();
                        econ.user_fresh(v)
                    })
                    .collect();
                // One employer in four pays just under a round sum (the worst case
                // for the structuring rule); the others an ordinary amount.
                let salary = if econ.rng.random_ratio(1, 4) {
                    4_800_000 + econ.rng.random_range(0..100_000)
                } else {
                    econ.rng.random_range(1_000_000..=9_000_000)
                };
                let due = econ.rng.random_range(20..=120);
                econ.employers.push(Employer {
                    user,
                    payees,
                    salary,
                    due,
                });
            }
        }
        econ
    }

    fn new_addr(&mut self, owner: u32, kind: Kind, flags: u8) -> u32 {
        let id = u32::try_from(self.addrs.len())
            .expect("generate() caps the chain size so that address ids fit in u32");
        self.addrs.push(AddrInfo { owner, kind, flags });
        id
    }

    fn user_fresh(&mut self, u: u32) -> u32 {
        let user_kind = self.users[u as usize].kind;
        let kind = if self.rng.random_ratio(85, 100) {
            user_kind
        } else {
            Kind::draw(&mut self.rng)
        };
        self.new_addr(self.layout.user(u), kind, 0)
    }

    /// A receive address of `u`: often one handed out before.
    fn user_receive(&mut self, u: u32) -> u32 {
        let n = self.users[u as usize].receive.len();
        if n > 0 && self.rng.random_ratio(1, 2) {
            let i = self.rng.random_range(0..n);
            return self.users[u as usize].receive[i];
        }
        let addr = self.user_fresh(u);
        let receive = &mut self.users[u as usize].receive;
        if receive.len() < 3 {
            receive.push(addr);
        } else {
            let i = self.rng.random_range(0..receive.len());
            receive[i] = addr;
        }
        addr
    }

    /// A change address of `u`: mostly fresh, sometimes a reused receive address.
    fn user_change(&mut self, u: u32) -> u32 {
        let n = self.users[u as usize].receive.len();
        if n > 0 && self.rng.random_ratio(1, 5) {
            let i = self.rng.random_range(0..n);
            return self.users[u as usize].receive[i];
        }
        self.user_fresh(u)
    }

    /// The deposit address of user `u` at exchange `e`, created on first use.
    fn user_deposit(&mut self, u: u32, e: u32) -> u32 {
        let existing = self.exchanges[e as usize].user_deposit[u as usize];
        if existing != NONE {
            return existing;
        }
        let flags = if self.rng.random_ratio(1, 4) {
            LABEL_EXCHANGE
        } else {
            0
        };
        let kind = self.exchanges[e as usize].deposit_kind;
        let addr = self.new_addr(self.layout.exchange(e), kind, flags);
        self.exchanges[e as usize].user_deposit[u as usize] = addr;
        addr
    }

    fn random_user(&mut self) -> u32 {
        let n = u32::try_from(self.users.len()).expect("at most 1e6 users");
        self.rng.random_range(0..n)
    }

    fn other_user(&mut self, u: u32) -> u32 {
        let v = self.random_user();
        if v == u {
            (v + 1) % u32::try_from(self.users.len()).expect("at most 1e6 users")
        } else {
            v
        }
    }

    fn funded_user(&mut self, min_utxos: usize) -> Option<u32> {
        for _ in 0..16 {
            let u = self.random_user();
            if self.users[u as usize].utxos.len() >= min_utxos {
                return Some(u);
            }
        }
        None
    }

    fn input_count(&mut self, available: usize) -> usize {
        let k = match self.rng.random_range(0..100) {
            0..60 => 1,
            60..85 => 2,
            _ => 3,
        };
        k.min(available)
    }

    /// A fee rate (sat/vB) around the block's rate.
    fn tx_rate(&mut self) -> u64 {
        (self.rate * self.rng.random_range(80..=120) / 100).max(1)
    }

    /// Estimated fee of a transaction with these inputs and outputs at `rate`.
    fn fee(&self, inputs: &[Utxo], outs: &[Out], rate: u64) -> u64 {
        let mut weight = 40u64;
        let mut segwit = false;
        for u in inputs {
            let kind = self.addrs[u.addr as usize].kind;
            segwit |= kind.is_segwit();
            weight += input_weight(kind);
        }
        if segwit {
            weight += 2;
        }
        for o in outs {
            let len = match o.dest {
                Dest::OpReturn(n) => 2 + u64::from(n),
                _ => script_len(self.addrs[o.addr as usize].kind),
            };
            weight += (9 + len) * 4;
        }
        weight.div_ceil(4) * rate
    }

    /// A log-uniform amount in `[lo, hi]` (integer-only); with `round`, often
    /// rounded down to two significant digits the way people pay. Batched payouts
    /// are not rounded, so that they do not look like CoinJoins (equal outputs).
    fn amount(&mut self, lo: u64, hi: u64, round: bool) -> u64 {
        if hi <= lo {
            return hi;
        }
        let (lo_e, hi_e) = (lo.max(1).ilog10(), hi.ilog10());
        let e = self.rng.random_range(lo_e..=hi_e);
        let a = lo.max(10u64.pow(e));
        let b = hi.min(10u64.saturating_pow(e + 1) - 1);
        let mut v = if a < b {
            self.rng.random_range(a..=b)
        } else {
            a
        };
        if round && e >= 2 && self.rng.random_ratio(3, 10) {
            let unit = 10u64.pow(e - 1);
            v = (v / unit * unit).max(lo);
        }
        v
    }

    /// Builds, records and credits one transaction; returns its txid.
    fn emit(&mut self, inputs: &[Utxo], outs: &[Out]) -> Txid {
        let sequence = if self.rng.random_ratio(7, 10) {
            Sequence::ENABLE_RBF_NO_LOCKTIME
        } else {
            Sequence::MAX
        };
        let mut input = Vec::with_capacity(inputs.len());
        for u in inputs {
            let kind = self.addrs[u.addr as usize].kind;
            let (script_sig, witness) = self.mat.spend(u.addr, kind, &mut self.rng);
            input.push(TxIn {
                previous_output: u.outpoint,
                script_sig,
                sequence,
                witness,
            });
        }
        let mut output = Vec::with_capacity(outs.len());
        for o in outs {
            let script_pubkey = match o.dest {
                Dest::OpReturn(n) => {
                    let mut data = vec![0u8; usize::from(n)];
                    self.rng.fill_bytes(&mut data);
                    let push = <&bitcoin::script::PushBytes>::try_from(&data[..])
                        .expect("at most 255 bytes of data");
                    Builder::new()
                        .push_opcode(OP_RETURN)
                        .push_slice(push)
                        .into_script()
                }
                _ => self
                    .mat
                    .script_pubkey(o.addr, self.addrs[o.addr as usize].kind),
            };
            output.push(TxOut {
                value: Amount::from_sat(o.value),
                script_pubkey,
            });
        }
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input,
            output,
        };
        let txid = tx.compute_txid();
        let wtxid = if tx.input.iter().any(|i| !i.witness.is_empty()) {
            tx.compute_wtxid()
        } else {
            Wtxid::from_raw_hash(txid.to_raw_hash())
        };
        for (vout, o) in outs.iter().enumerate() {
            let utxo = Utxo {
                outpoint: OutPoint {
                    txid,
                    vout: u32::try_from(vout).expect("few outputs"),
                },
                value: o.value,
                addr: o.addr,
            };
            if !matches!(o.dest, Dest::OpReturn(_)) {
                self.addrs[o.addr as usize].flags |= SEEN;
            }
            match o.dest {
                Dest::User(u) => self.users[u as usize].utxos.push(utxo),
                Dest::Deposit(e) => self.exchanges[e as usize].deposit_utxos.push(utxo),
                Dest::Hot(e) => self.exchanges[e as usize].hot_utxos.push(utxo),
                Dest::Pool(p) => self.pools[p as usize].utxos.push(utxo),
                Dest::Scam(op, taint) => self.scams[op as usize].utxos.push(ScamUtxo {
                    utxo,
                    taint,
                    relayed: false,
                }),
                Dest::Premix(p, owner) => self.whirlpool[p as usize]
                    .premix
                    .push(mixing::Queued { owner, utxo }),
                Dest::Postmix(p, owner) => self.whirlpool[p as usize]
                    .postmix
                    .push(mixing::Queued { owner, utxo }),
                Dest::Untracked | Dest::OpReturn(_) => {}
            }
        }
        let out_value: u64 = outs.iter().map(|o| o.value).sum();
        debug_assert!(
            sum(inputs) > out_value,
            "every transaction pays a positive fee"
        );
        let fee = sum(inputs).saturating_sub(out_value);
        self.body.txs.push(tx);
        self.body.txids.push(txid);
        self.body.wtxids.push(wtxid);
        self.body.fees.push(fee);
        txid
    }

    /// Makes about `slots` transactions for the block at `height`.
    pub(crate) fn build_block(&mut self, slots: u32) -> BlockBody {
        self.height += 1;
        self.rate = match self.rng.random_range(0..10) {
            0..5 => self.rng.random_range(1..=5),
            5..8 => self.rng.random_range(5..=20),
            _ => self.rng.random_range(20..=80),
        };
        if self.typologies {
            self.advance_relays();
            self.pay_salaries();
        }
        // Wasabi rounds are rare and large: at most one of each per block.
        if slots > 0 && self.rng.random_ratio(1, 8) && self.act_wasabi2() {
            self.made[Action::Wasabi2 as usize] += 1;
        }
        if slots > 0 && self.rng.random_ratio(1, 10) && self.act_wasabi1() {
            self.made[Action::Wasabi1 as usize] += 1;
        }
        for _ in 0..slots {
            for _attempt in 0..8 {
                let action = self.pick_action();
                let done = match action {
                    Action::Payment => self.act_payment(),
                    Action::Deposit => self.act_deposit(),
                    Action::Withdrawal => self.act_withdrawal(),
                    Action::Sweep => self.act_sweep(),
                    Action::PoolPayout => self.act_pool_payout(),
                    Action::CoinJoin => self.act_coinjoin(),
                    Action::Peel => self.act_peel(),
                    Action::Victim => self.act_victim(),
                    Action::Scam => self.act_scam(),
                    Action::Consolidate => self.act_consolidate(),
                    Action::Tx0 => self.act_tx0(),
                    Action::WhirlpoolMix => self.act_whirlpool_mix(),
                    Action::Wasabi1 => self.act_wasabi1(),
                    Action::Wasabi2 => self.act_wasabi2(),
                    Action::JoinMarket => self.act_joinmarket(),
                    Action::EqualBatch => self.act_equal_batch(),
                    Action::Relay => self.act_relay(),
                    Action::Structure => self.act_structure(),
                    Action::MerchantSale => self.act_merchant_sale(),
                    Action::MerchantSweep => self.act_merchant_sweep(),
                    Action::Salary => false,
                };
                if done {
                    self.made[action as usize] += 1;
                    break;
                }
            }
        }
        std::mem::take(&mut self.body)
    }

    fn pick_action(&mut self) -> Action {
        let pool_utxos: usize = self.pools.iter().map(|p| p.utxos.len()).sum();
        let scam_utxos: usize = self.scams.iter().map(|s| s.utxos.len()).sum();
        let hot = self.exchanges.iter().any(|e| !e.hot_utxos.is_empty());
        let sweepable = self.exchanges.iter().any(|e| e.deposit_utxos.len() >= 5);
        let weights = [
            (Action::Payment, 50),
            (Action::Deposit, 12),
            (Action::Withdrawal, if hot { 10 } else { 0 }),
            (Action::Sweep, if sweepable { 3 } else { 0 }),
            (
                Action::PoolPayout,
                if pool_utxos > 0 {
                    2 + pool_utxos.min(20)
                } else {
                    0
                },
            ),
            (Action::CoinJoin, 2),
            (Action::Peel, 5),
            (Action::Victim, if self.scams.is_empty() { 0 } else { 2 }),
            (Action::Scam, scam_utxos.min(20)),
            (Action::Consolidate, 3),
            (Action::Tx0, 1),
            (
                Action::WhirlpoolMix,
                if self.whirlpool.iter().any(|q| q.premix.len() >= 2) {
                    4
                } else {
                    0
                },
            ),
            (Action::JoinMarket, 1),
            (Action::EqualBatch, if hot { 2 } else { 0 }),
            (
                Action::Relay,
                if self.typologies {
                    scam_utxos.min(2)
                } else {
                    0
                },
            ),
            (
                Action::Structure,
                if self.typologies {
                    scam_utxos.min(1)
                } else {
                    0
                },
            ),
            (Action::MerchantSale, if self.typologies { 4 } else { 0 }),
            (Action::MerchantSweep, if self.typologies { 1 } else { 0 }),
        ];
        let total: usize = weights.iter().map(|w| w.1).sum();
        let mut x = self.rng.random_range(0..total);
        for (action, w) in weights {
            if x < w {
                return action;
            }
            x -= w;
        }
        Action::Payment
    }

    fn act_payment(&mut self) -> bool {
        let Some(u) = self.funded_user(1) else {
            return false;
        };
        let k = self.input_count(self.users[u as usize].utxos.len());
        let inputs = take_random(&mut self.users[u as usize].utxos, k, &mut self.rng);
        let total = sum(&inputs);
        let payee = self.other_user(u);
        let to = self.user_receive(payee);
        let mut outs = vec![Out::to(to, Dest::User(payee))];
        let spend_all = self.rng.random_ratio(1, 12);
        if !spend_all {
            let change = self.user_change(u);
            outs.push(Out::to(change, Dest::User(u)));
        }
        if self.rng.random_ratio(1, 50) {
            let n = self.rng.random_range(20..=40);
            outs.push(Out {
                addr: NONE,
                value: 0,
                dest: Dest::OpReturn(n),
            });
        }
        let rate = self.tx_rate();
        let fee = self.fee(&inputs, &outs, rate);
        let reserve = if spend_all { 0 } else { DUST };
        let spendable = total.saturating_sub(fee + reserve);
        if spendable < 2 * DUST {
            self.users[u as usize].utxos.extend(inputs);
            return false;
        }
        let pay = if spend_all {
            spendable
        } else {
            self.amount(10_000.min(spendable), spendable, true)
        };
        outs[0].value = pay;
        if !spend_all {
            outs[1].value = total - fee - pay;
            if self.rng.random_ratio(1, 2) {
                outs.swap(0, 1);
            }
        }
        self.emit(&inputs, &outs);
        true
    }

    fn act_deposit(&mut self) -> bool {
        let Some(u) = self.funded_user(1) else {
            return false;
        };
        let n_ex = u32::try_from(self.exchanges.len()).expect("at most 5 exchanges");
        let e = self.rng.random_range(0..n_ex);
        let dep = self.user_deposit(u, e);
        let k = self.input_count(self.users[u as usize].utxos.len());
        let inputs = take_random(&mut self.users[u as usize].utxos, k, &mut self.rng);
        let total = sum(&inputs);
        let spend_all = self.rng.random_ratio(3, 10);
        let mut outs = vec![Out::to(dep, Dest::Deposit(e))];
        if !spend_all {
            let change = self.user_change(u);
            outs.push(Out::to(change, Dest::User(u)));
        }
        let rate = self.tx_rate();
        let fee = self.fee(&inputs, &outs, rate);
        let reserve = if spend_all { 0 } else { DUST };
        let spendable = total.saturating_sub(fee + reserve);
        if spendable < 10_000 {
            self.users[u as usize].utxos.extend(inputs);
            return false;
        }
        let pay = if spend_all {
            spendable
        } else {
            (spendable * self.rng.random_range(20..=95) / 100).max(DUST)
        };
        outs[0].value = pay;
        if !spend_all {
            outs[1].value = total - fee - pay;
            if self.rng.random_ratio(1, 2) {
                outs.swap(0, 1);
            }
        }
        self.emit(&inputs, &outs);
        true
    }

    fn act_withdrawal(&mut self) -> bool {
        let n_ex = self.exchanges.len();
        let start = self.rng.random_range(0..n_ex);
        let Some(e) = (0..n_ex)
            .map(|i| (start + i) % n_ex)
            .find(|&e| !self.exchanges[e].hot_utxos.is_empty())
        else {
            return false;
        };
        // Below its reserve target an exchange slows its withdrawals down, so that
        // hot wallets hold a realistic share of the money.
        let balance = sum(&self.exchanges[e].hot_utxos);
        let target = self.supply / 100 * self.exchanges[e].reserve_pct;
        if balance < target && self.rng.random_range(0..target) >= balance {
            return false;
        }
        let k = self.rng.random_range(1..=3);
        let inputs = take_random(&mut self.exchanges[e].hot_utxos, k, &mut self.rng);
        let total = sum(&inputs);
        let n = if self.rng.random_ratio(1, 2) {
            1
        } else {
            self.rng.random_range(2..=12)
        };
        let mut outs = Vec::with_capacity(n + 1);
        for _ in 0..n {
            let u = self.random_user();
            let addr = self.user_receive(u);
            outs.push(Out::to(addr, Dest::User(u)));
        }
        let hot = self.exchanges[e].hot[self.rng.random_range(0..self.exchanges[e].hot.len())];
        let e32 = u32::try_from(e).expect("at most 5 exchanges");
        outs.push(Out::to(hot, Dest::Hot(e32)));
        let rate = self.tx_rate();
        let fee = self.fee(&inputs, &outs, rate);
        let budget = total.saturating_sub(fee + DUST);
        let per = budget / (n as u64 + 1);
        if per < 20_000 {
            self.exchanges[e].hot_utxos.extend(inputs);
            return false;
        }
        let mut paid = 0;
        for o in outs.iter_mut().take(n) {
            o.value = self.amount(20_000, per.min(500_000_000), false);
            paid += o.value;
        }
        outs[n].value = total - fee - paid;
        outs.shuffle(&mut self.rng);
        self.emit(&inputs, &outs);
        true
    }

    fn act_sweep(&mut self) -> bool {
        let n_ex = self.exchanges.len();
        let start = self.rng.random_range(0..n_ex);
        let Some(e) = (0..n_ex)
            .map(|i| (start + i) % n_ex)
            .find(|&e| self.exchanges[e].deposit_utxos.len() >= 5)
        else {
            return false;
        };
        let n = self.exchanges[e]
            .deposit_utxos
            .len()
            .min(self.rng.random_range(5..=120));
        // Oldest deposits first, as exchanges sweep them.
        let inputs: Vec<Utxo> = self.exchanges[e].deposit_utxos.drain(..n).collect();
        let total = sum(&inputs);
        let hot = self.exchanges[e].hot[self.rng.random_range(0..self.exchanges[e].hot.len())];
        let e32 = u32::try_from(e).expect("at most 5 exchanges");
        let mut outs = vec![Out::to(hot, Dest::Hot(e32))];
        let rate = (self.rate / 2).max(1);
        let fee = self.fee(&inputs, &outs, rate);
        if total < fee + DUST {
            self.exchanges[e].deposit_utxos.extend(inputs);
            return false;
        }
        outs[0].value = total - fee;
        self.emit(&inputs, &outs);
        true
    }

    fn act_pool_payout(&mut self) -> bool {
        let n_pools = self.pools.len();
        let start = self.rng.random_range(0..n_pools);
        let Some(p) = (0..n_pools)
            .map(|i| (start + i) % n_pools)
            .find(|&p| !self.pools[p].utxos.is_empty())
        else {
            return false;
        };
        let k = self.rng.random_range(1..=3);
        let inputs = take_random(&mut self.pools[p].utxos, k, &mut self.rng);
        let total = sum(&inputs);
        let n = self.rng.random_range(5..=40usize);
        let mut outs = Vec::with_capacity(n + 1);
        for _ in 0..n {
            let u = self.random_user();
            let addr = self.user_receive(u);
            outs.push(Out::to(addr, Dest::User(u)));
        }
        let p32 = u32::try_from(p).expect("at most 5 pools");
        outs.push(Out::to(self.pools[p].addr, Dest::Pool(p32)));
        let rate = self.tx_rate();
        let fee = self.fee(&inputs, &outs, rate);
        let budget = total.saturating_sub(fee + DUST);
        let per = budget * 6 / 10 / n as u64;
        if per < 10_000 {
            self.pools[p].utxos.extend(inputs);
            return false;
        }
        let mut paid = 0;
        for o in outs.iter_mut().take(n) {
            o.value = per / 2 + self.rng.random_range(0..=per);
            paid += o.value;
        }
        outs[n].value = total - fee - paid;
        outs.shuffle(&mut self.rng);
        self.emit(&inputs, &outs);
        true
    }

    fn act_coinjoin(&mut self) -> bool {
        let d = DENOMINATIONS[self.rng.random_range(0..DENOMINATIONS.len())];
        let p = self.rng.random_range(3..=10usize);
        let coord_fee = d * 3 / 1000;
        let rate = self.tx_rate();
        // Each participant pays the miner fee of its own inputs and two outputs.
        let mut parts: Vec<(u32, Vec<Utxo>, u64)> = Vec::with_capacity(p);
        for _ in 0..4 * p {
            if parts.len() == p {
                break;
            }
            let u = self.random_user();
            if parts.iter().any(|(v, _, _)| *v == u) || self.users[u as usize].utxos.is_empty() {
                continue;
            }
            let mut mine = take_random(&mut self.users[u as usize].utxos, 1, &mut self.rng);
            let share =
                |econ: &Self, mine: &[Utxo]| econ.fee(mine, &[], rate) + (2 * 31 - 10) * rate;
            if sum(&mine) < d + coord_fee + share(self, &mine) {
                mine.extend(take_random(
                    &mut self.users[u as usize].utxos,
                    1,
                    &mut self.rng,
                ));
            }
            let fee_share = share(self, &mine);
            if sum(&mine) < d + coord_fee + fee_share {
                self.users[u as usize].utxos.extend(mine);
                continue;
            }
            parts.push((u, mine, fee_share));
        }
        if parts.len() < 3 {
            for (u, mine, _) in parts {
                self.users[u as usize].utxos.extend(mine);
            }
            return false;
        }
        let mut inputs = Vec::new();
        let mut outs = Vec::new();
        for (u, mine, fee_share) in &parts {
            let u = *u;
            let mixed = self.user_fresh(u);
            outs.push(Out {
                addr: mixed,
                value: d,
                dest: Dest::User(u),
            });
            let mut c = sum(mine) - d - coord_fee - fee_share;
            if c == d {
                c -= 1;
            }
            if c >= DUST {
                let change = self.user_fresh(u);
                outs.push(Out {
                    addr: change,
                    value: c,
                    dest: Dest::User(u),
                });
            }
            inputs.extend_from_slice(mine);
        }
        // A coordinator of its own kind: equal outputs, changes and the coordinator's fee.
        let fees = coord_fee * parts.len() as u64;
        if fees >= DUST {
            let mixer = &self.mixers[self.rng.random_range(0..self.mixers.len())];
            let addr = mixer.fee_addrs[self.rng.random_range(0..mixer.fee_addrs.len())];
            outs.push(Out {
                addr,
                value: fees,
                dest: Dest::Untracked,
            });
        }
        let n = parts.len();
        self.emit_round(inputs, outs, "generic", n);
        true
    }

    fn act_peel(&mut self) -> bool {
        let max_chains = 2 + self.users.len() / 1000;
        if self.peels.len() < max_chains && (self.peels.is_empty() || self.rng.random_ratio(1, 4)) {
            self.start_peel();
        }
        if self.peels.is_empty() {
            return false;
        }
        let i = self.rng.random_range(0..self.peels.len());
        let chain = self.peels[i].clone();
        let (to, dest) = if self.rng.random_ratio(1, 5) {
            let u = self.random_user();
            let n_ex = u32::try_from(self.exchanges.len()).expect("at most 5 exchanges");
            let e = self.rng.random_range(0..n_ex);
            (self.user_deposit(u, e), Dest::Deposit(e))
        } else {
            let u = self.other_user(chain.user);
            (self.user_receive(u), Dest::User(u))
        };
        let change = self.user_fresh(chain.user);
        let mut outs = vec![Out::to(to, dest), Out::to(change, Dest::Untracked)];
        let rate = self.tx_rate();
        let fee = self.fee(&[chain.utxo], &outs, rate);
        let value = chain.utxo.value;
        let max_pay = (value / 10).min(50_000_000);
        if max_pay < 100_000 || value < fee + max_pay + 1_000_000 {
            let chain = self.peels.swap_remove(i);
            self.users[chain.user as usize].utxos.push(chain.utxo);
            if self.typologies {
                self.peel_ends.insert(chain.utxo.outpoint);
            }
            self.end_peel(chain);
            return false;
        }
        let pay = self.amount(100_000, max_pay, true);
        let change_value = value - fee - pay;
        let last = chain.steps_left <= 1 || change_value < 5_000_000;
        outs[0].value = pay;
        outs[1].value = change_value;
        if last {
            outs[1].dest = Dest::User(chain.user);
        }
        let change_vout: u32 = if self.rng.random_ratio(1, 2) {
            outs.swap(0, 1);
            0
        } else {
            1
        };
        let txid = self.emit(&[chain.utxo], &outs);
        let p = &mut self.peels[i];
        if p.txids.is_empty() {
            p.first_height = self.height;
        }
        p.txids.push(txid);
        if last {
            let chain = self.peels.swap_remove(i);
            self.end_peel(chain);
            if self.typologies {
                self.peel_ends.insert(OutPoint {
                    txid,
                    vout: change_vout,
                });
            }
        } else {
            p.utxo = Utxo {
                outpoint: OutPoint {
                    txid,
                    vout: change_vout,
                },
                value: change_value,
                addr: change,
            };
            p.steps_left -= 1;
        }
        true
    }

    /// Records a peel chain that made at least one step.
    fn end_peel(&mut self, chain: Peel) {
        if !chain.txids.is_empty() {
            self.plants.push(Plant {
                pattern: "peel_chain",
                addr: chain.start_addr,
                txids: chain.txids,
                first_height: chain.first_height,
                last_height: self.height,
            });
        }
    }

    fn start_peel(&mut self) {
        let Some(u) = self.funded_user(1) else { return };
        let utxos = &mut self.users[u as usize].utxos;
        // Planting, a chain never starts where another ended (it would be one chain).
        let ends = &self.peel_ends;
        let Some((i, _)) = utxos
            .iter()
            .enumerate()
            .filter(|(_, x)| !ends.contains(&x.outpoint))
            .max_by_key(|(i, x)| (x.value, usize::MAX - i))
        else {
            return;
        };
        if utxos[i].value < 50_000_000 {
            return;
        }
        let utxo = utxos.swap_remove(i);
        let steps_left = self.rng.random_range(5..=30);
        self.peels.push(Peel {
            user: u,
            utxo,
            steps_left,
            start_addr: utxo.addr,
            txids: Vec::new(),
            first_height: 0,
        });
    }

    fn act_victim(&mut self) -> bool {
        let (op, u, again) = if self.typologies {
            let op = self.rng.random_range(0..self.scams.len());
            // Pig-butchering: a victim already paying pays again, more each time.
            let again = (!self.victims[op].is_empty() && self.rng.random_ratio(3, 5))
                .then(|| {
                    let j = self.rng.random_range(0..self.victims[op].len());
                    (j, self.victims[op][j])
                })
                .filter(|(_, (v, _))| !self.users[*v as usize].utxos.is_empty());
            let u = again.map(|(_, (v, _))| v).or_else(|| self.funded_user(1));
            (op, u, again)
        } else {
            // The draws in the order of the chains generated before typologies existed.
            let Some(u) = self.funded_user(1) else {
                return false;
            };
            (self.rng.random_range(0..self.scams.len()), Some(u), None)
        };
        let Some(u) = u else {
            return false;
        };
        let deposits = &self.scams[op].deposits;
        let dep = deposits[self.rng.random_range(0..deposits.len())];
        let k = self.input_count(self.users[u as usize].utxos.len());
        let inputs = take_random(&mut self.users[u as usize].utxos, k, &mut self.rng);
        let total = sum(&inputs);
        let taint = Taint {
            hop: 0,
            seed_seq: self.victim_seq,
            seed_addr: dep,
        };
        let op32 = u32::try_from(op).expect("at most 5 scam operations");
        let change = self.user_change(u);
        let mut outs = vec![
            Out::to(dep, Dest::Scam(op32, taint)),
            Out::to(change, Dest::User(u)),
        ];
        let rate = self.tx_rate();
        let fee = self.fee(&inputs, &outs, rate);
        let spendable = total.saturating_sub(fee + DUST);
        if spendable < 100_000 {
            self.users[u as usize].utxos.extend(inputs);
            return false;
        }
        self.victim_seq += 1;
        outs[0].value = spendable * self.rng.random_range(30..=95) / 100;
        if self.typologies {
            let last = again.map_or(0, |(_, (_, last))| last);
            let want = if last == 0 {
                self.rng.random_range(300_000..=3_000_000)
            } else {
                last * self.rng.random_range(120..=200) / 100
            };
            outs[0].value = want.min(spendable);
            match again {
                Some((j, _)) => self.victims[op][j].1 = outs[0].value,
                None if self.victims[op].len() < 40 => self.victims[op].push((u, outs[0].value)),
                None => {}
            }
        }
        outs[1].value = total - fee - outs[0].value;
        if self.rng.random_ratio(1, 2) {
            outs.swap(0, 1);
        }
        let txid = self.emit(&inputs, &outs);
        let height = self.height;
        let c = self.collections.entry(dep).or_insert_with(|| Plant {
            pattern: "victim_collection",
            addr: dep,
            txids: Vec::new(),
            first_height: height,
            last_height: height,
        });
        c.txids.push(txid);
        c.last_height = height;
        true
    }

    /// Starts a relay: a scam output of at least 0.01 BTC forwarded whole through 4–9
    /// fresh addresses. The first hop moves it off its (possibly busy) address; the
    /// plant is the hops after it, each from an address that receives once and spends
    /// once.
    fn act_relay(&mut self) -> bool {
        let n_ops = self.scams.len();
        let op = self.rng.random_range(0..n_ops);
        let Some(j) = self.scams[op]
            .utxos
            .iter()
            .position(|x| x.utxo.value >= 1_000_000 && !x.relayed)
        else {
            return false;
        };
        let utxo = self.scams[op].utxos.swap_remove(j);
        let hops = self.rng.random_range(4..=9);
        self.open_plants.push(Some(Plant {
            pattern: "pass_through",
            addr: NONE,
            txids: Vec::new(),
            first_height: 0,
            last_height: 0,
        }));
        self.relays.push(Relay {
            op: u32::try_from(op).expect("at most 5 scam operations"),
            utxo,
            hops_left: hops,
            due: self.height,
            plant: self.open_plants.len() - 1,
        });
        self.relay_hop(self.relays.len() - 1)
    }

    /// Moves the relays due at this height one hop on.
    fn advance_relays(&mut self) {
        let mut i = 0;
        while i < self.relays.len() {
            if self.relays[i].due <= self.height {
                if !self.relay_hop(i) {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
    }

    /// One hop of relay `i`; false when it stays (and keeps its index).
    fn relay_hop(&mut self, i: usize) -> bool {
        let r = self.relays[i];
        let op = r.op as usize;
        let to = self.scam_fresh(op);
        let mut outs = vec![Out::to(to, Dest::Untracked)];
        let fee = self.fee(&[r.utxo.utxo], &outs, 2);
        if r.utxo.utxo.value < fee + 100_000 {
            self.relays.swap_remove(i);
            self.scams[op].utxos.push(r.utxo);
            self.end_relay(r.plant);
            return true;
        }
        outs[0].value = r.utxo.utxo.value - fee;
        let txid = self.emit(&[r.utxo.utxo], &outs);
        let taint = Taint::next([r.utxo.taint]).expect("one input");
        let next = ScamUtxo {
            relayed: true,
            utxo: Utxo {
                outpoint: OutPoint { txid, vout: 0 },
                value: outs[0].value,
                addr: to,
            },
            taint,
        };
        let height = self.height;
        if let Some(p) = self.open_plants[r.plant].as_mut() {
            // The first hop leaves the source address; the plant starts at the next.
            if p.addr == NONE {
                p.addr = to;
            } else {
                if p.txids.is_empty() {
                    p.first_height = height;
                }
                p.txids.push(txid);
                p.last_height = height;
            }
        }
        if r.hops_left <= 1 {
            self.relays.swap_remove(i);
            self.scams[op].utxos.push(next);
            self.end_relay(r.plant);
            return true;
        }
        let wait = self.rng.random_range(1..=6);
        self.relays[i] = Relay {
            utxo: next,
            hops_left: r.hops_left - 1,
            due: height + wait,
            ..r
        };
        false
    }

    fn end_relay(&mut self, plant: usize) {
        if let Some(p) = self.open_plants[plant].take()
            && !p.txids.is_empty()
        {
            self.plants.push(p);
        }
    }

    /// Structuring: a scam operation splits one output into 10–40 near-equal payments
    /// just under a round sum, each to a fresh address, with change to another.
    fn act_structure(&mut self) -> bool {
        let n_ops = self.scams.len();
        let op = self.rng.random_range(0..n_ops);
        const ROUNDS: [u64; 5] = [500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000];
        let Some((j, value)) = self.scams[op]
            .utxos
            .iter()
            .enumerate()
            .map(|(j, x)| (j, x.utxo.value))
            .max_by_key(|&(j, v)| (v, usize::MAX - j))
        else {
            return false;
        };
        let fits: Vec<u64> = ROUNDS.into_iter().filter(|r| r * 12 <= value).collect();
        if fits.is_empty() {
            return false;
        }
        let round = fits[self.rng.random_range(0..fits.len())];
        let src = self.scams[op].utxos.swap_remove(j);
        let op32 = u32::try_from(op).expect("at most 5 scam operations");
        let taint = Taint::next([src.taint]).expect("one input");
        let most = (src.utxo.value * 9 / 10 / round).min(40);
        let n = self.rng.random_range(10..=most.max(10));
        let mut outs = Vec::with_capacity(n as usize + 1);
        // 0.2–4% under the round sum, the same for the whole batch give or take 0.3%.
        let under = self.rng.random_range(20..=400);
        for _ in 0..n {
            let addr = self.scam_fresh(op);
            let jitter = self.rng.random_range(0..=30);
            let v = round - round * (under + jitter) / 10_000;
            let mut o = Out::to(addr, Dest::Scam(op32, taint));
            o.value = v;
            outs.push(o);
        }
        let change = self.scam_fresh(op);
        outs.push(Out::to(change, Dest::Scam(op32, taint)));
        let fee = self.fee(&[src.utxo], &outs, 2);
        let paid: u64 = outs.iter().map(|o| o.value).sum();
        if src.utxo.value < paid + fee + DUST {
            self.scams[op].utxos.push(src);
            return false;
        }
        let last = outs.len() - 1;
        outs[last].value = src.utxo.value - paid - fee;
        let txid = self.emit(&[src.utxo], &outs);
        self.plants.push(Plant {
            pattern: "fan_out",
            addr: src.utxo.addr,
            txids: vec![txid],
            first_height: self.height,
            last_height: self.height,
        });
        true
    }

    /// A customer pays a merchant a small amount (look-alike of victim collection:
    /// many unrelated payers).
    fn act_merchant_sale(&mut self) -> bool {
        if self.merchants.is_empty() {
            return false;
        }
        let m = self.merchants[self.rng.random_range(0..self.merchants.len())];
        let Some(u) = self.funded_user(1) else {
            return false;
        };
        if u == m.user {
            return false;
        }
        let k = self.input_count(self.users[u as usize].utxos.len());
        let inputs = take_random(&mut self.users[u as usize].utxos, k, &mut self.rng);
        let total = sum(&inputs);
        let change = self.user_change(u);
        let mut outs = vec![
            Out::to(m.addr, Dest::User(m.user)),
            Out::to(change, Dest::User(u)),
        ];
        let rate = self.tx_rate();
        let fee = self.fee(&inputs, &outs, rate);
        let price = self.amount(5_000, 400_000, true);
        if total < price + fee + DUST {
            self.users[u as usize].utxos.extend(inputs);
            return false;
        }
        outs[0].value = price;
        outs[1].value = total - price - fee;
        if self.rng.random_ratio(1, 2) {
            outs.swap(0, 1);
        }
        self.emit(&inputs, &outs);
        true
    }

    /// A merchant sweeps what its address received to its exchange deposit address.
    fn act_merchant_sweep(&mut self) -> bool {
        if self.merchants.is_empty() {
            return false;
        }
        let m = self.merchants[self.rng.random_range(0..self.merchants.len())];
        let utxos = &mut self.users[m.user as usize].utxos;
        let mut inputs = Vec::new();
        let mut i = 0;
        while i < utxos.len() {
            if utxos[i].addr == m.addr {
                inputs.push(utxos.swap_remove(i));
            } else {
                i += 1;
            }
        }
        if inputs.len() < 3 {
            self.users[m.user as usize].utxos.extend(inputs);
            return false;
        }
        let e = m.user % u32::try_from(self.exchanges.len()).expect("at most 5 exchanges");
        let dep = self.user_deposit(m.user, e);
        let total = sum(&inputs);
        let mut outs = vec![Out::to(dep, Dest::Deposit(e))];
        let fee = self.fee(&inputs, &outs, 2);
        if total < fee + DUST {
            self.users[m.user as usize].utxos.extend(inputs);
            return false;
        }
        outs[0].value = total - fee;
        self.emit(&inputs, &outs);
        true
    }

    /// Employers due pay their employees (equal amounts to the same addresses).
    fn pay_salaries(&mut self) {
        for i in 0..self.employers.len() {
            if self.employers[i].due > self.height {
                continue;
            }
            let e = self.employers[i].clone();
            self.employers[i].due = self.height + self.rng.random_range(100..=200);
            let need = e.salary * e.payees.len() as u64;
            let have = sum(&self.users[e.user as usize].utxos);
            if have < need + 1_000_000 {
                // Topped up by its bank (an exchange withdrawal, as far as the chain
                // shows): skipped this time.
                continue;
            }
            let k = self.users[e.user as usize].utxos.len().min(5);
            let mut inputs = Vec::new();
            // The largest outputs first, until the payroll is covered.
            self.users[e.user as usize]
                .utxos
                .sort_by_key(|x| std::cmp::Reverse(x.value));
            for _ in 0..k {
                if sum(&inputs) >= need + 1_000_000 {
                    break;
                }
                inputs.push(self.users[e.user as usize].utxos.remove(0));
            }
            let total = sum(&inputs);
            if total < need + 1_000_000 {
                self.users[e.user as usize].utxos.extend(inputs);
                continue;
            }
            let mut outs: Vec<Out> = e
                .payees
                .iter()
                .map(|&a| {
                    let owner = self.addrs[a as usize].owner;
                    let u = owner - self.layout.user(0);
                    let mut o = Out::to(a, Dest::User(u));
                    o.value = e.salary;
                    o
                })
                .collect();
            let change = self.user_change(e.user);
            outs.push(Out::to(change, Dest::User(e.user)));
            let fee = self.fee(&inputs, &outs, 2);
            let last = outs.len() - 1;
            outs[last].value = total - need - fee;
            self.emit(&inputs, &outs);
            self.made[Action::Salary as usize] += 1;
        }
    }

    /// Plants finished since the last call.
    pub(crate) fn take_plants(&mut self) -> Vec<Plant> {
        std::mem::take(&mut self.plants)
    }

    /// What is still open at the end of the chain: peel chains and relays under way,
    /// and every collection address with its victims' payments.
    pub(crate) fn final_plants(&mut self) -> Vec<Plant> {
        for chain in std::mem::take(&mut self.peels) {
            self.end_peel(chain);
        }
        for r in std::mem::take(&mut self.relays) {
            self.end_relay(r.plant);
        }
        let mut out = std::mem::take(&mut self.plants);
        out.extend(std::mem::take(&mut self.collections).into_values());
        out
    }

    fn scam_fresh(&mut self, op: usize) -> u32 {
        let kind = if self.rng.random_ratio(85, 100) {
            self.scams[op].kind
        } else {
            Kind::draw(&mut self.rng)
        };
        self.new_addr(
            self.layout
                .scam(u32::try_from(op).expect("at most 5 scam operations")),
            kind,
            0,
        )
    }

    fn act_scam(&mut self) -> bool {
        let n_ops = self.scams.len();
        if n_ops == 0 {
            return false;
        }
        let start = self.rng.random_range(0..n_ops);
        let Some(op) = (0..n_ops)
            .map(|i| (start + i) % n_ops)
            .find(|&o| !self.scams[o].utxos.is_empty())
        else {
            return false;
        };
        let op32 = u32::try_from(op).expect("at most 5 scam operations");
        let first = {
            let utxos = &mut self.scams[op].utxos;
            let i = self.rng.random_range(0..utxos.len());
            utxos.swap_remove(i)
        };
        let (min_hops, max_hops) = (self.scams[op].min_hops, self.scams[op].max_hops);
        let out_hop = first.taint.hop + 1;
        // Layering pays low fees.
        let rate = self.tx_rate().min(4);
        let mut spent = vec![first];
        let cash_out = out_hop >= min_hops && (out_hop >= max_hops || self.rng.random_ratio(2, 5));
        if cash_out {
            // Sometimes merge in a second output that is also far enough along.
            if self.rng.random_ratio(3, 10) && !self.scams[op].utxos.is_empty() {
                let j = self.rng.random_range(0..self.scams[op].utxos.len());
                if self.scams[op].utxos[j].taint.hop + 1 >= min_hops {
                    spent.push(self.scams[op].utxos.swap_remove(j));
                }
            }
            let taint = Taint::next(spent.iter().map(|s| s.taint)).expect("at least one input");
            let inputs: Vec<Utxo> = spent.iter().map(|s| s.utxo).collect();
            let total = sum(&inputs);
            let n_exits = if total >= 2_000_000 && self.rng.random_ratio(1, 5) {
                2
            } else {
                1
            };
            let mut outs = Vec::with_capacity(n_exits);
            for _ in 0..n_exits {
                let n_ex = u32::try_from(self.exchanges.len()).expect("at most 5 exchanges");
                let e = self.rng.random_range(0..n_ex);
                let exit = self.scam_exit(op, e);
                outs.push(Out::to(exit, Dest::Deposit(e)));
            }
            let fee = self.fee(&inputs, &outs, rate);
            if total < fee + 2 * DUST * n_exits as u64 {
                self.scams[op].utxos.extend(spent);
                return false;
            }
            let net = total - fee;
            if n_exits == 2 {
                outs[0].value = net * self.rng.random_range(30..=70) / 100;
                outs[1].value = net - outs[0].value;
            } else {
                outs[0].value = net;
            }
            let txid = self.emit(&inputs, &outs);
            for o in &outs {
                self.cashouts.push(Cashout {
                    op: op32,
                    seed_addr: taint.seed_addr,
                    exit_addr: o.addr,
                    amount: o.value,
                    hops: taint.hop,
                    txid,
                });
            }
            return true;
        }
        let merge = !self.scams[op].utxos.is_empty() && self.rng.random_ratio(45, 100);
        if merge {
            let extra = self
                .rng
                .random_range(1..=2usize)
                .min(self.scams[op].utxos.len());
            for _ in 0..extra {
                let j = self.rng.random_range(0..self.scams[op].utxos.len());
                spent.push(self.scams[op].utxos.swap_remove(j));
            }
        }
        let taint = Taint::next(spent.iter().map(|s| s.taint)).expect("at least one input");
        let inputs: Vec<Utxo> = spent.iter().map(|s| s.utxo).collect();
        let total = sum(&inputs);
        let mut n_out = match (merge, self.rng.random_range(0..10)) {
            (true, _) => 1,
            (false, 0..2) => {
                if self.typologies {
                    2
                } else {
                    1
                }
            }
            (false, 2..8) => 2,
            (false, _) => 3,
        };
        if total < 200_000 * n_out as u64 {
            if self.typologies && !merge {
                // Planting, the only single-output forwards are the relays (so that
                // every pass-through chain is a plant): a small output waits for a
                // merge or the cash-out instead.
                self.scams[op].utxos.extend(spent);
                return false;
            }
            n_out = 1;
        }
        let mut outs = Vec::with_capacity(n_out);
        for _ in 0..n_out {
            let addr = self.scam_fresh(op);
            outs.push(Out::to(addr, Dest::Scam(op32, taint)));
        }
        let fee = self.fee(&inputs, &outs, rate);
        if total < fee + DUST * n_out as u64 {
            // Too small to move: the operation abandons it.
            return false;
        }
        let mut left = total - fee;
        for (i, o) in outs.iter_mut().enumerate() {
            let v = if i + 1 == n_out {
                left
            } else {
                let share = left * self.rng.random_range(20..=60) / 100;
                share.max(DUST)
            };
            o.value = v;
            left -= v;
        }
        self.emit(&inputs, &outs);
        true
    }

    /// A deposit address the operation controls an account behind at exchange `e`.
    fn scam_exit(&mut self, op: usize, e: u32) -> u32 {
        let n = self.scams[op].exits[e as usize].len();
        if n > 0 && self.rng.random_ratio(3, 5) {
            let i = self.rng.random_range(0..n);
            return self.scams[op].exits[e as usize][i];
        }
        let kind = self.exchanges[e as usize].deposit_kind;
        let addr = self.new_addr(self.layout.exchange(e), kind, LABEL_EXCHANGE);
        self.scams[op].exits[e as usize].push(addr);
        addr
    }

    fn act_consolidate(&mut self) -> bool {
        let Some(u) = self.funded_user(10) else {
            return false;
        };
        let n = self.rng.random_range(6..=25);
        let inputs = take_random(&mut self.users[u as usize].utxos, n, &mut self.rng);
        let total = sum(&inputs);
        let to = self.user_fresh(u);
        let mut outs = vec![Out::to(to, Dest::User(u))];
        let rate = (self.rate / 2).max(1);
        let fee = self.fee(&inputs, &outs, rate);
        if total < fee + DUST {
            self.users[u as usize].utxos.extend(inputs);
            return false;
        }
        outs[0].value = total - fee;
        self.emit(&inputs, &outs);
        true
    }

    /// Picks the pool that finds the next block, weighted by hash rate.
    pub(crate) fn pick_pool(&mut self) -> u32 {
        let total: u32 = self.pools.iter().map(|p| p.weight).sum();
        let mut x = self.rng.random_range(0..total);
        for (i, p) in self.pools.iter().enumerate() {
            if x < p.weight {
                return u32::try_from(i).expect("at most 5 pools");
            }
            x -= p.weight;
        }
        0
    }

    /// A pool other than `p` (for the competing block of a stale fork).
    pub(crate) fn rival_pool(&mut self, p: u32) -> u32 {
        let n = u32::try_from(self.pools.len()).expect("at most 5 pools");
        (p + self.rng.random_range(1..n)) % n
    }

    pub(crate) fn pool_script(&self, p: u32) -> ScriptBuf {
        let addr = self.pools[p as usize].addr;
        self.mat.script_pubkey(addr, self.addrs[addr as usize].kind)
    }

    /// Records the best-chain coinbase output of pool `p`.
    pub(crate) fn credit_coinbase(&mut self, p: u32, txid: Txid, value: u64, subsidy: u64) {
        self.supply += subsidy;
        let addr = self.pools[p as usize].addr;
        self.addrs[addr as usize].flags |= SEEN;
        if value >= DUST {
            let outpoint = OutPoint { txid, vout: 0 };
            self.pools[p as usize].utxos.push(Utxo {
                outpoint,
                value,
                addr,
            });
        }
    }

    pub(crate) fn take_cashouts(&mut self) -> Vec<Cashout> {
        std::mem::take(&mut self.cashouts)
    }

    /// The address string of `addr` (every address the truth files name has one).
    pub(crate) fn address(&self, addr: u32) -> String {
        self.mat
            .address(addr, self.addrs[addr as usize].kind, self.network)
            .unwrap_or_default()
    }

    pub(crate) fn scam_name(&self, op: u32) -> String {
        self.layout.name(self.layout.scam(op))
    }

    /// Calls `f(address, entity)` for every address seen on the best chain that has
    /// an address encoding, in address-id order.
    pub(crate) fn for_each_entity(
        &self,
        mut f: impl FnMut(&str, &str) -> std::io::Result<()>,
    ) -> std::io::Result<u64> {
        let mut rows = 0;
        for (id, info) in self.addrs.iter().enumerate() {
            if info.flags & SEEN == 0 {
                continue;
            }
            let id = u32::try_from(id).expect("address ids fit in u32");
            if let Some(address) = self.mat.address(id, info.kind, self.network) {
                f(&address, &self.layout.name(info.owner))?;
                rows += 1;
            }
        }
        Ok(rows)
    }

    /// Calls `f(address, label, category)` for every labelled address seen on the best chain.
    pub(crate) fn for_each_label(
        &self,
        mut f: impl FnMut(&str, &str, &str) -> std::io::Result<()>,
    ) -> std::io::Result<u64> {
        let mut rows = 0;
        for (id, info) in self.addrs.iter().enumerate() {
            if info.flags & SEEN == 0 {
                continue;
            }
            let category = if info.flags & LABEL_SCAM != 0 {
                "scam"
            } else if info.flags & LABEL_EXCHANGE != 0 {
                "exchange"
            } else if info.flags & LABEL_MIXER != 0 {
                "mixer"
            } else {
                continue;
            };
            let id = u32::try_from(id).expect("address ids fit in u32");
            if let Some(address) = self.mat.address(id, info.kind, self.network) {
                f(&address, &self.layout.name(info.owner), category)?;
                rows += 1;
            }
        }
        Ok(rows)
    }

    /// Transactions made so far per kind, as `kind=count` pairs.
    pub(crate) fn made(&self) -> String {
        const ALL: [Action; ACTIONS] = [
            Action::Payment,
            Action::Deposit,
            Action::Withdrawal,
            Action::Sweep,
            Action::PoolPayout,
            Action::CoinJoin,
            Action::Peel,
            Action::Victim,
            Action::Scam,
            Action::Consolidate,
            Action::Tx0,
            Action::WhirlpoolMix,
            Action::Wasabi1,
            Action::Wasabi2,
            Action::JoinMarket,
            Action::EqualBatch,
            Action::Relay,
            Action::Structure,
            Action::MerchantSale,
            Action::MerchantSweep,
            Action::Salary,
        ];
        let parts: Vec<String> = ALL
            .iter()
            .map(|a| format!("{a:?}={}", self.made[*a as usize]))
            .collect();
        parts.join(" ")
    }

    pub(crate) fn holdings(&self) -> Holdings {
        let mut h = Holdings::default();
        for u in &self.users {
            h.users += sum(&u.utxos);
            h.utxos += u.utxos.len() as u64;
        }
        for p in &self.peels {
            h.users += p.utxo.value;
        }
        for e in &self.exchanges {
            h.exchanges += sum(&e.hot_utxos) + sum(&e.deposit_utxos);
            h.utxos += (e.hot_utxos.len() + e.deposit_utxos.len()) as u64;
        }
        for p in &self.pools {
            h.pools += sum(&p.utxos);
            h.utxos += p.utxos.len() as u64;
        }
        for s in &self.scams {
            h.scams += s.utxos.iter().map(|x| x.utxo.value).sum::<u64>();
            h.utxos += s.utxos.len() as u64;
        }
        h
    }

    pub(crate) fn address_count(&self) -> usize {
        self.addrs.len()
    }
}
