//! CoinJoins the way the real tools build them, and payments that merely look alike.
//!
//! - Whirlpool (Samourai): a user's tx0 splits coins into premix outputs of a pool's
//!   denomination plus a miner-fee allowance, pays the pool fee to the coordinator and
//!   announces it in an OP_RETURN; mixes take 5 inputs (2 new premixes paying the miner,
//!   3 free remixes of earlier postmix outputs) to 5 outputs of exactly the denomination.
//! - Wasabi 1.x (ZeroLink): equal outputs of a base denomination just under 0.1 BTC,
//!   mixing levels at 2× and 4× the base for those who bring more, change, and one
//!   coordinator fee output.
//! - Wasabi 2 (WabiSabi): 50–400 inputs; every participant's amount is decomposed into
//!   standard denominations (2^n, 3^n, 2·3^n, 10^n, 2·10^n, 5·10^n sats), the rest is change.
//! - JoinMarket: a taker and 2–8 makers; one equal output each at the taker's amount,
//!   each maker's change carries its fee; a taker who sweeps has no change.
//! - Look-alikes that are not CoinJoins: exchange batch payouts of equal round amounts
//!   from its hot wallet.
//!
//! Scam operations join Wasabi and JoinMarket rounds with their layered coins; their
//! mixed outputs stay with the operation but are not followed further (cash-outs in the
//! truth files come from unmixed money only). Every mix and tx0 goes to
//! `truth/coinjoins.csv`.

use std::sync::LazyLock;

use rand::Rng;
use rand::seq::SliceRandom;

use super::*;

/// Whirlpool pools (sats) and their tx0 fees.
const WHIRLPOOL: [(u64, u64); 4] = [
    (100_000, 5_000),
    (1_000_000, 50_000),
    (5_000_000, 175_000),
    (50_000_000, 1_750_000),
];

/// Wasabi 2's standard denominations from 5,000 sats to 43 BTC, largest first.
static WASABI2: LazyLock<Vec<u64>> = LazyLock::new(|| {
    let max = 4_300_000_000u64;
    let mut v = Vec::new();
    for (base, factors) in [(2u64, &[1u64][..]), (3, &[1, 2]), (10, &[1, 2, 5])] {
        let mut p = 1u64;
        while p <= max {
            for f in factors {
                let d = p * f;
                if (5_000..=max).contains(&d) {
                    v.push(d);
                }
            }
            p *= base;
        }
    }
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.dedup();
    v
});

/// A participant of a round: who, their coins, and the taints of a scam operation's.
type Part = (Who, Vec<Utxo>, Vec<Taint>);

/// Who brings coins to a round.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    User(u32),
    Scam(usize),
}

/// A premix or postmix output waiting for a Whirlpool mix, with its owner.
#[derive(Clone, Copy)]
pub(super) struct Queued {
    pub(super) owner: u32,
    pub(super) utxo: Utxo,
}

/// The Whirlpool coordinator's queues of one pool.
#[derive(Default)]
pub(super) struct WhirlpoolQueue {
    pub(super) premix: Vec<Queued>,
    pub(super) postmix: Vec<Queued>,
}

/// One row of `truth/coinjoins.csv`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoinJoinTruth {
    pub(crate) txid: Txid,
    pub(crate) protocol: &'static str,
    pub(crate) participants: u32,
}

impl Economy {
    fn fresh_for(&mut self, who: Who) -> (u32, Dest) {
        match who {
            Who::User(u) => {
                let kind = if self.rng.random_ratio(7, 10) {
                    Kind::P2wpkh
                } else {
                    Kind::P2tr
                };
                (self.new_addr(self.layout.user(u), kind, 0), Dest::User(u))
            }
            Who::Scam(op) => (self.scam_fresh(op), Dest::Untracked),
        }
    }

    fn give_back_all(&mut self, parts: Vec<Part>) {
        for (who, coins, taints) in parts {
            self.give_back(who, coins, taints);
        }
    }

    /// An output of `value` to a fresh address of `who`.
    fn pay_fresh(&mut self, who: Who, value: u64, outs: &mut Vec<Out>) {
        let (addr, dest) = self.fresh_for(who);
        outs.push(Out { addr, value, dest });
    }

    /// Shuffles a round's inputs and outputs, emits it and records it in the truth.
    pub(super) fn emit_round(
        &mut self,
        mut inputs: Vec<Utxo>,
        mut outs: Vec<Out>,
        protocol: &'static str,
        participants: usize,
    ) {
        inputs.shuffle(&mut self.rng);
        outs.shuffle(&mut self.rng);
        let txid = self.emit(&inputs, &outs);
        self.record_coinjoin(txid, protocol, participants);
    }

    fn give_back(&mut self, who: Who, coins: Vec<Utxo>, taints: Vec<Taint>) {
        match who {
            Who::User(u) => self.users[u as usize].utxos.extend(coins),
            Who::Scam(op) => {
                for (utxo, taint) in coins.into_iter().zip(taints) {
                    self.scams[op].utxos.push(ScamUtxo {
                        utxo,
                        taint,
                        relayed: false,
                    });
                }
            }
        }
    }

    /// Up to `max_inputs` coins of a user not in `taken` worth at least `need`.
    fn user_coins(
        &mut self,
        need: u64,
        max_inputs: usize,
        taken: &[Who],
    ) -> Option<(Who, Vec<Utxo>)> {
        for _ in 0..12 {
            let u = self.random_user();
            if taken.contains(&Who::User(u)) || self.users[u as usize].utxos.is_empty() {
                continue;
            }
            let k = self.rng.random_range(1..=max_inputs);
            let mine = take_random(&mut self.users[u as usize].utxos, k, &mut self.rng);
            if sum(&mine) >= need {
                return Some((Who::User(u), mine));
            }
            self.users[u as usize].utxos.extend(mine);
        }
        None
    }

    /// A scam operation's coins (1–3 outputs) worth at least `need`.
    fn scam_coins(&mut self, need: u64, taken: &[Who]) -> Option<Part> {
        let n_ops = self.scams.len();
        if n_ops == 0 {
            return None;
        }
        let op = self.rng.random_range(0..n_ops);
        if taken.contains(&Who::Scam(op)) || self.scams[op].utxos.is_empty() {
            return None;
        }
        let k = self.rng.random_range(1..=3).min(self.scams[op].utxos.len());
        let mut coins = Vec::new();
        let mut taints = Vec::new();
        for _ in 0..k {
            let i = self.rng.random_range(0..self.scams[op].utxos.len());
            let s = self.scams[op].utxos.swap_remove(i);
            coins.push(s.utxo);
            taints.push(s.taint);
        }
        if sum(&coins) >= need {
            Some((Who::Scam(op), coins, taints))
        } else {
            self.give_back(Who::Scam(op), coins, taints);
            None
        }
    }

    pub(super) fn record_coinjoin(
        &mut self,
        txid: Txid,
        protocol: &'static str,
        participants: usize,
    ) {
        self.coinjoins.push(CoinJoinTruth {
            txid,
            protocol,
            participants: u32::try_from(participants).unwrap_or(u32::MAX),
        });
    }

    pub(crate) fn take_coinjoins(&mut self) -> Vec<CoinJoinTruth> {
        std::mem::take(&mut self.coinjoins)
    }

    /// A fee share for `inputs` and `outputs` outputs at `rate`.
    fn share(&self, inputs: &[Utxo], outputs: u64, rate: u64) -> u64 {
        self.fee(inputs, &[], rate) + outputs * 31 * rate
    }

    /// Whirlpool tx0: a user's coins into premixes of one pool.
    pub(super) fn act_tx0(&mut self) -> bool {
        let (pool_i, (d, pool_fee)) = {
            let i = self.rng.random_range(0..WHIRLPOOL.len());
            (i, WHIRLPOOL[i])
        };
        let rate = self.tx_rate();
        let premix = d + 200 + rate * 120;
        let Some((Who::User(u), inputs)) = self.user_coins(premix + pool_fee + 20_000, 3, &[])
        else {
            return false;
        };
        let total = sum(&inputs);
        let n = ((total - pool_fee - 20_000) / premix).clamp(1, 12);
        let mut outs = vec![Out {
            addr: NONE,
            value: 0,
            dest: Dest::OpReturn(46),
        }];
        let fee_addr = {
            let m = &self.mixers[0];
            m.fee_addrs[0]
        };
        outs.push(Out {
            addr: fee_addr,
            value: pool_fee,
            dest: Dest::Untracked,
        });
        for _ in 0..n {
            let addr = self.new_addr(self.layout.user(u), Kind::P2wpkh, 0);
            outs.push(Out {
                addr,
                value: premix,
                dest: Dest::Premix(u32::try_from(pool_i).expect("4 pools"), u),
            });
        }
        let change = self.user_change(u);
        outs.push(Out::to(change, Dest::User(u)));
        let fee = self.fee(&inputs, &outs, rate);
        let paid = pool_fee + n * premix;
        if total < paid + fee + DUST {
            self.users[u as usize].utxos.extend(inputs);
            return false;
        }
        let last = outs.len() - 1;
        outs[last].value = total - paid - fee;
        outs[1..].shuffle(&mut self.rng);
        let txid = self.emit(&inputs, &outs);
        self.record_coinjoin(txid, "whirlpool_tx0", 1);
        true
    }

    /// A Whirlpool mix: 5 inputs of distinct owners (premixes pay the miner, remixes are
    /// free) to 5 outputs of exactly the pool denomination.
    pub(super) fn act_whirlpool_mix(&mut self) -> bool {
        let Some(p) = (0..WHIRLPOOL.len())
            .filter(|&i| self.whirlpool[i].premix.len() >= 2)
            .max_by_key(|&i| self.whirlpool[i].premix.len())
        else {
            return false;
        };
        let d = WHIRLPOOL[p].0;
        let mut chosen: Vec<Queued> = Vec::new();
        // Distinct owners only: the coordinator never puts one wallet twice in a mix.
        let take = |q: &mut Vec<Queued>, k: usize, chosen: &mut Vec<Queued>| {
            let goal = chosen.len() + k;
            let mut i = 0;
            while chosen.len() < goal && i < q.len() {
                if chosen.iter().any(|c| c.owner == q[i].owner) {
                    i += 1;
                } else {
                    chosen.push(q.swap_remove(i));
                }
            }
        };
        let queue = &mut self.whirlpool[p];
        take(&mut queue.premix, 2, &mut chosen);
        take(&mut queue.postmix, 5 - chosen.len(), &mut chosen);
        take(&mut queue.premix, 5 - chosen.len(), &mut chosen);
        if chosen.len() < 5 || !chosen.iter().any(|c| c.utxo.value > d) {
            for c in chosen {
                let q = if c.utxo.value > d {
                    &mut self.whirlpool[p].premix
                } else {
                    &mut self.whirlpool[p].postmix
                };
                q.push(c);
            }
            return false;
        }
        let mut outs = Vec::with_capacity(5);
        for c in &chosen {
            let addr = self.new_addr(self.layout.user(c.owner), Kind::P2wpkh, 0);
            // Half the postmix outputs wait for remixes; the others go back to the wallet.
            let dest = if self.rng.random_ratio(1, 2) {
                Dest::Postmix(u32::try_from(p).expect("4 pools"), c.owner)
            } else {
                Dest::User(c.owner)
            };
            outs.push(Out {
                addr,
                value: d,
                dest,
            });
        }
        let inputs: Vec<Utxo> = chosen.iter().map(|c| c.utxo).collect();
        self.emit_round(inputs, outs, "whirlpool", 5);
        // Long-unmixed postmix coins go back to their wallets.
        while self.whirlpool[p].postmix.len() > 40 {
            let q = self.whirlpool[p].postmix.remove(0);
            self.users[q.owner as usize].utxos.push(q.utxo);
        }
        true
    }

    /// A Wasabi 1.x round around a base denomination just under 0.1 BTC.
    pub(super) fn act_wasabi1(&mut self) -> bool {
        let base = 10_000_000 - self.rng.random_range(0..=150_000u64);
        let coord = base * 3 / 1000;
        let rate = self.tx_rate();
        let want = self.rng.random_range(10..=50usize);
        let mut parts: Vec<Part> = Vec::new();
        let need = base + coord + 20_000;
        for _ in 0..3 * want {
            if parts.len() == want {
                break;
            }
            let taken: Vec<Who> = parts.iter().map(|p| p.0).collect();
            if self.rng.random_ratio(1, 12) {
                if let Some(p) = self.scam_coins(need, &taken) {
                    parts.push(p);
                }
            } else if let Some((w, c)) = self.user_coins(need, 3, &taken) {
                parts.push((w, c, Vec::new()));
            }
        }
        if parts.len() < 10 {
            self.give_back_all(parts);
            return false;
        }
        let mut inputs = Vec::new();
        let mut outs = Vec::new();
        let mut fees = 0;
        let n = parts.len();
        for (who, coins, _) in &parts {
            let mut left = sum(coins).saturating_sub(self.share(coins, 3, rate));
            let mut level = base;
            let mut first = true;
            // The base denomination, then mixing levels while the coins allow.
            while left >= level + coord + DUST
                && (first || self.rng.random_ratio(1, 2))
                && level <= 4 * base
            {
                self.pay_fresh(*who, level, &mut outs);
                left -= level + coord;
                fees += coord;
                level *= 2;
                first = false;
            }
            if left >= DUST {
                self.pay_fresh(*who, left, &mut outs);
            }
            inputs.extend_from_slice(coins);
        }
        let addr = self.mixers[self.mixers.len() - 1].fee_addrs[1];
        outs.push(Out {
            addr,
            value: fees,
            dest: Dest::Untracked,
        });
        self.emit_round(inputs, outs, "wasabi1", n);
        true
    }

    /// A Wasabi 2 round: 50–400 inputs (fewer on small chains), outputs decomposed into
    /// standard denominations.
    pub(super) fn act_wasabi2(&mut self) -> bool {
        let max_inputs = (self.users.len() / 3).clamp(30, 400);
        let target = self.rng.random_range(max_inputs.min(50)..=max_inputs);
        let rate = self.tx_rate();
        let mut parts: Vec<Part> = Vec::new();
        let mut n_in = 0;
        for _ in 0..3 * target {
            if n_in >= target {
                break;
            }
            let taken: Vec<Who> = parts.iter().map(|p| p.0).collect();
            let got = if self.rng.random_ratio(1, 15) {
                self.scam_coins(60_000, &taken)
            } else {
                self.user_coins(60_000, 4, &taken)
                    .map(|(w, c)| (w, c, Vec::new()))
            };
            if let Some(p) = got {
                n_in += p.1.len();
                parts.push(p);
            }
        }
        if n_in < 20 {
            self.give_back_all(parts);
            return false;
        }
        let mut inputs = Vec::new();
        let mut outs = Vec::new();
        let n = parts.len();
        for (who, coins, _) in &parts {
            let mut left = sum(coins).saturating_sub(self.share(coins, 6, rate));
            let max_outs = self.rng.random_range(1..=8);
            let mut made = 0;
            while made < max_outs {
                let candidates: Vec<u64> = WASABI2
                    .iter()
                    .copied()
                    .filter(|&d| d <= left)
                    .take(3)
                    .collect();
                if candidates.is_empty() {
                    break;
                }
                // Mostly the largest denomination that fits, sometimes the next ones.
                let pick = match self.rng.random_range(0..100) {
                    0..60 => 0,
                    60..85 => 1,
                    _ => 2,
                };
                let d = candidates[pick.min(candidates.len() - 1)];
                self.pay_fresh(*who, d, &mut outs);
                left -= d;
                made += 1;
            }
            if left >= 5_000 {
                self.pay_fresh(*who, left, &mut outs);
            }
            inputs.extend_from_slice(coins);
        }
        self.emit_round(inputs, outs, "wasabi2", n);
        true
    }

    /// A JoinMarket round: a taker and 2–8 makers.
    pub(super) fn act_joinmarket(&mut self) -> bool {
        let rate = self.tx_rate();
        let taker = if self.rng.random_ratio(1, 6) {
            self.scam_coins(300_000, &[])
        } else {
            self.user_coins(300_000, 3, &[])
                .map(|(w, c)| (w, c, Vec::new()))
        };
        let Some(taker) = taker else {
            return false;
        };
        let taker_total = sum(&taker.1);
        let sweep = self.rng.random_ratio(1, 4);
        let makers_n = self.rng.random_range(2..=8usize);
        let cjfees: Vec<u64> = (0..makers_n)
            .map(|_| self.rng.random_range(250..=3_000))
            .collect();
        let all_fees: u64 = cjfees.iter().sum();
        let miner = self.share(&taker.1, 2, rate) + makers_n as u64 * 300 * rate;
        let Some(spendable) = taker_total.checked_sub(all_fees + miner + DUST) else {
            self.give_back(taker.0, taker.1, taker.2);
            return false;
        };
        let amount = if sweep {
            spendable + DUST
        } else {
            self.amount(100_000.min(spendable), spendable, false)
        };
        let mut parts = vec![taker];
        for _ in 0..3 * makers_n {
            if parts.len() == makers_n + 1 {
                break;
            }
            let taken: Vec<Who> = parts.iter().map(|p| p.0).collect();
            if let Some((w, c)) = self.user_coins(amount + DUST + 5_000, 3, &taken) {
                parts.push((w, c, Vec::new()));
            }
        }
        if parts.len() < 3 {
            self.give_back_all(parts);
            return false;
        }
        let mut inputs = Vec::new();
        let mut outs = Vec::new();
        let paid_fees: u64 = cjfees[..parts.len() - 1].iter().sum();
        let n = parts.len();
        for (i, (who, coins, _)) in parts.iter().enumerate() {
            self.pay_fresh(*who, amount, &mut outs);
            let change = if i == 0 {
                taker_total - amount - paid_fees - miner
            } else {
                sum(coins) - amount + cjfees[i - 1]
            };
            if change >= DUST && change != amount {
                self.pay_fresh(*who, change, &mut outs);
            }
            inputs.extend_from_slice(coins);
        }
        self.emit_round(inputs, outs, "joinmarket", n);
        true
    }

    /// Not a CoinJoin: an exchange pays several users the same round amount from its hot
    /// wallet (one or two addresses).
    pub(super) fn act_equal_batch(&mut self) -> bool {
        let n_ex = self.exchanges.len();
        let e = self.rng.random_range(0..n_ex);
        if self.exchanges[e].hot_utxos.is_empty() {
            return false;
        }
        let amount =
            [100_000u64, 200_000, 500_000, 1_000_000, 2_000_000][self.rng.random_range(0..5)];
        let n = self.rng.random_range(3..=15usize);
        let k = self.rng.random_range(1..=3);
        let inputs = take_random(&mut self.exchanges[e].hot_utxos, k, &mut self.rng);
        let mut outs = Vec::with_capacity(n + 1);
        for _ in 0..n {
            let u = self.random_user();
            let addr = self.user_receive(u);
            outs.push(Out {
                addr,
                value: amount,
                dest: Dest::User(u),
            });
        }
        let hot = self.exchanges[e].hot[0];
        let e32 = u32::try_from(e).expect("at most 5 exchanges");
        outs.push(Out::to(hot, Dest::Hot(e32)));
        let rate = self.tx_rate();
        let fee = self.fee(&inputs, &outs, rate);
        let total = sum(&inputs);
        let paid = amount * n as u64;
        if total < paid + fee + DUST {
            self.exchanges[e].hot_utxos.extend(inputs);
            return false;
        }
        outs[n].value = total - paid - fee;
        outs.shuffle(&mut self.rng);
        self.emit(&inputs, &outs);
        true
    }
}
