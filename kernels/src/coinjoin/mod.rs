//! CoinJoin detection, one detector per protocol, each with a confidence.
//!
//! Common-input ownership is wrong for a CoinJoin: its inputs belong to many people. A
//! missed CoinJoin merges strangers (and spreads a `scam` label to them), so every
//! transaction any detector flags is kept out of clustering. BlockSci's 2017 rule (the
//! most common output value appears exactly ⌈outputs/2⌉ times) only fits JoinMarket-like
//! shapes; Whirlpool (5 inputs, 5 equal outputs, no change) and Wasabi 2 (hundreds of
//! outputs over a set of standard denominations) fail it. Like GraphSense, Ferret runs
//! one detector per protocol, the most specific first:
//!
//! | protocol | shape | source |
//! |---|---|---|
//! | `whirlpool` | 5–8 inputs, as many outputs, all equal to a pool denomination (0.001, 0.01, 0.05, 0.5 BTC); every input between the denomination and the denomination plus a premix fee allowance (remixes bring exactly the denomination) | Samourai Whirlpool documentation (pools, 5-party cycles, free remixes) |
//! | `whirlpool_tx0` | one OP_RETURN output (the coordinator's payload), premix outputs of one value just above a pool denomination, the pool fee output and change | Samourai Whirlpool documentation (tx0 and pool fees) |
//! | `wasabi1` | ≥ 10 equal outputs of a base denomination near 0.1 BTC, optional mixing levels (the base × 2^k), change and a coordinator fee output | ZeroLink (nopara73, 2017); Wasabi 1.0/1.1 documentation |
//! | `wasabi2` | ≥ 10 inputs (from ≥ 5 addresses), at least half the outputs exactly standard denominations (2^n, 3^n, 2·3^n, 10^n, 2·10^n, 5·10^n sats, ≥ 5,000 sats) with some repeated | WabiSabi (Ficsór et al., 2021); Wasabi 2 client's denomination set |
//! | `joinmarket` | e ≥ 2 equal outputs of any value, at most e other outputs (maker/taker change), ≥ e inputs from ≥ e addresses | JoinMarket documentation; BlockSci's rule (Kalodner et al., 2017) is its e = ⌈outputs/2⌉ case |
//! | `generic` | ≥ 3 equal outputs paid for by at least as many distinct input addresses | fail-safe catch-all |
//!
//! `whirlpool_tx0` is reported but not skipped: a tx0 is one user's transaction, its
//! inputs really are one owner's. Every other detection is a mix and is skipped. Output
//! values listed in [`Detectors::ignored_values`] (dust) never count as equal outputs.
//! An ordinary batch payout of equal amounts is paid from one wallet, usually one or two
//! addresses, so the rules that need ≥ e distinct input addresses leave it alone.

use std::collections::HashMap;

/// The protocols the detectors know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Whirlpool,
    WhirlpoolTx0,
    Wasabi1,
    Wasabi2,
    JoinMarket,
    Generic,
}

impl Protocol {
    /// Every protocol, in detection order.
    pub const ALL: [Protocol; 6] = [
        Protocol::Whirlpool,
        Protocol::WhirlpoolTx0,
        Protocol::Wasabi1,
        Protocol::Wasabi2,
        Protocol::JoinMarket,
        Protocol::Generic,
    ];

    /// The name in the `coinjoins` table.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Whirlpool => "whirlpool",
            Protocol::WhirlpoolTx0 => "whirlpool_tx0",
            Protocol::Wasabi1 => "wasabi1",
            Protocol::Wasabi2 => "wasabi2",
            Protocol::JoinMarket => "joinmarket",
            Protocol::Generic => "generic",
        }
    }

    /// Parses a name of [`Protocol::name`].
    pub fn from_name(s: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Whether the transaction mixes several people's coins (its inputs must not be
    /// linked). A Whirlpool tx0 is one user's premix transaction.
    pub fn is_mix(self) -> bool {
        self != Protocol::WhirlpoolTx0
    }
}

/// One detected CoinJoin (or tx0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub protocol: Protocol,
    /// 0–1: how sure the detector is that this is the protocol's transaction.
    pub confidence: f64,
    /// The equal-output value (the pool or base denomination; for Wasabi 2 the most
    /// repeated standard denomination), sats.
    pub denomination: i64,
    /// Outputs of that value.
    pub equal_outputs: u32,
    /// Participants, estimated: Whirlpool one per input, JoinMarket and Wasabi 1 one per
    /// equal output, Wasabi 2 at most the distinct input addresses (an upper bound).
    pub participants: u32,
}

/// A transaction as the detectors see it.
#[derive(Clone, Copy, Debug)]
pub struct TxShape<'a> {
    /// Values of the spent outputs, in input order; `None` where unknown (spent before a
    /// pruned start).
    pub input_values: &'a [Option<i64>],
    /// Distinct input addresses; inputs without an address each count as one.
    pub distinct_input_addresses: usize,
    /// Output values, in output order.
    pub output_values: &'a [i64],
    /// Per output: an OP_RETURN (`nulldata`) output.
    pub output_nulldata: &'a [bool],
}

/// Whirlpool's pool denominations, sats (0.001 BTC pool since 2021).
pub const WHIRLPOOL_POOLS: [i64; 4] = [100_000, 1_000_000, 5_000_000, 50_000_000];

/// Whirlpool's coordinator fee per pool (the tx0 fee output without a discount code):
/// 5% of the 0.001 and 0.01 BTC pools, 3.5% of the 0.05 and 0.5 BTC pools.
pub fn whirlpool_pool_fee(pool: i64) -> i64 {
    if pool <= 1_000_000 {
        pool / 20
    } else {
        pool * 35 / 1000
    }
}

/// The most a premix output may carry above its pool denomination (the miner fee the
/// premixer pays in the mix).
pub fn whirlpool_premix_allowance(pool: i64) -> i64 {
    (pool / 5).max(200_000)
}

/// Whether `v` is one of Wasabi 2's standard denominations (≥ 5,000 sats): 2^n, 3^n,
/// 2·3^n, 10^n, 2·10^n or 5·10^n.
pub fn is_wasabi2_denomination(v: i64) -> bool {
    if v < 5_000 {
        return false;
    }
    let pow_of = |mut x: i64, b: i64| {
        while x % b == 0 {
            x /= b;
        }
        x == 1
    };
    pow_of(v, 2)
        || pow_of(v, 3)
        || (v % 2 == 0 && pow_of(v / 2, 3))
        || pow_of(v, 10)
        || (v % 2 == 0 && pow_of(v / 2, 10))
        || (v % 5 == 0 && pow_of(v / 5, 10))
}

/// The detectors and their parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Detectors {
    /// Off: nothing is detected and every multi-input transaction links its inputs.
    pub enabled: bool,
    /// Output values that never count as an equal output (dust).
    pub ignored_values: Vec<i64>,
    /// Wasabi 2: the fewest inputs of a round.
    pub wasabi2_min_inputs: usize,
    /// The generic rule: the fewest equal outputs.
    pub generic_min_equal: usize,
}

impl Default for Detectors {
    fn default() -> Self {
        Self {
            enabled: true,
            ignored_values: vec![546, 2730],
            wasabi2_min_inputs: 10,
            generic_min_equal: 3,
        }
    }
}

/// The most common output value (ignored values and OP_RETURNs left out; ties go to the
/// larger value) and its count.
fn mode(shape: &TxShape<'_>, ignored: &[i64]) -> Option<(i64, usize)> {
    let counted = |i: usize, v: i64| {
        !(shape.output_nulldata.get(i).copied().unwrap_or(false) || ignored.contains(&v))
    };
    let values = shape.output_values;
    // Most transactions have a few outputs: count them in place, without a map.
    if values.len() <= 32 {
        let mut best: Option<(i64, usize)> = None;
        for (i, &v) in values.iter().enumerate() {
            if !counted(i, v)
                || values[..i]
                    .iter()
                    .enumerate()
                    .any(|(j, &w)| w == v && counted(j, w))
            {
                continue;
            }
            let c = values[i..]
                .iter()
                .enumerate()
                .filter(|&(k, &w)| w == v && counted(i + k, w))
                .count();
            if best.is_none_or(|(bv, bc)| (c, v) > (bc, bv)) {
                best = Some((v, c));
            }
        }
        return best;
    }
    mode_by_map(shape, ignored)
}

/// [`mode`] with a map: for many outputs, and the reference the in-place count equals.
fn mode_by_map(shape: &TxShape<'_>, ignored: &[i64]) -> Option<(i64, usize)> {
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for (i, &v) in shape.output_values.iter().enumerate() {
        if shape.output_nulldata.get(i).copied().unwrap_or(false) || ignored.contains(&v) {
            continue;
        }
        *counts.entry(v).or_default() += 1;
    }
    counts.into_iter().max_by_key(|&(v, c)| (c, v))
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Detectors {
    /// The first detector that recognises the transaction, if any.
    pub fn detect(&self, shape: &TxShape<'_>) -> Option<Detection> {
        if !self.enabled || shape.output_values.is_empty() {
            return None;
        }
        self.whirlpool(shape)
            .or_else(|| self.whirlpool_tx0(shape))
            .or_else(|| self.equal_output_rules(shape))
    }

    fn whirlpool(&self, s: &TxShape<'_>) -> Option<Detection> {
        let n = s.output_values.len();
        if !(5..=8).contains(&n) || s.input_values.len() != n || s.distinct_input_addresses < n {
            return None;
        }
        let d = s.output_values[0];
        if !WHIRLPOOL_POOLS.contains(&d) || s.output_values.iter().any(|&v| v != d) {
            return None;
        }
        let hi = d + whirlpool_premix_allowance(d);
        let mut above = 0;
        for v in s.input_values {
            let v = (*v)?;
            if v < d || v > hi {
                return None;
            }
            above += usize::from(v > d);
        }
        // Someone pays the miner: at least one premix input above the denomination.
        if above == 0 {
            return None;
        }
        Some(Detection {
            protocol: Protocol::Whirlpool,
            confidence: if n == 5 { 0.99 } else { 0.95 },
            denomination: d,
            equal_outputs: u32_of(n),
            participants: u32_of(n),
        })
    }

    fn whirlpool_tx0(&self, s: &TxShape<'_>) -> Option<Detection> {
        if s.output_nulldata.iter().filter(|&&x| x).count() != 1 {
            return None;
        }
        let (v, e) = mode(s, &self.ignored_values)?;
        let pool = WHIRLPOOL_POOLS
            .iter()
            .copied()
            .find(|&d| v > d && v <= d + whirlpool_premix_allowance(d))?;
        let others = s.output_values.len() - 1 - e;
        let fee_paid = s.output_values.contains(&whirlpool_pool_fee(pool));
        // Premixes, the fee output, change (and sometimes a second change).
        if others > 3 || (!fee_paid && e < 2) {
            return None;
        }
        Some(Detection {
            protocol: Protocol::WhirlpoolTx0,
            confidence: if fee_paid { 0.95 } else { 0.7 },
            denomination: pool,
            equal_outputs: u32_of(e),
            participants: 1,
        })
    }

    fn equal_output_rules(&self, s: &TxShape<'_>) -> Option<Detection> {
        let n_in = s.input_values.len();
        let n_out = s.output_values.len();
        let distinct = s.distinct_input_addresses;
        let (v, e) = mode(s, &self.ignored_values).unwrap_or((0, 0));
        let paid_by_many = |k: usize| n_in >= k && distinct >= k;

        let mut std_counts: HashMap<i64, usize> = HashMap::new();
        for &x in s.output_values {
            if is_wasabi2_denomination(x) {
                *std_counts.entry(x).or_default() += 1;
            }
        }
        let standard: usize = std_counts.values().sum();

        // Wasabi 1.x: one dominant base denomination near 0.1 BTC (its mixing levels are
        // the base × 2^k), change and the coordinator's fee; anonymity sets of 10 and
        // more (a JoinMarket round near 0.1 BTC has fewer, 2–9 makers and a taker). In a Wasabi 2 round a
        // standard 0.1 BTC output is one denomination among many.
        if (9_500_000..=10_500_000).contains(&v) && e >= 10 && paid_by_many(e) && 2 * e >= standard
        {
            return Some(Detection {
                protocol: Protocol::Wasabi1,
                confidence: if e >= 20 { 0.95 } else { 0.85 },
                denomination: v,
                equal_outputs: u32_of(e),
                participants: u32_of(e),
            });
        }

        // Wasabi 2: many inputs, outputs mostly standard denominations, some repeated.
        if n_in >= self.wasabi2_min_inputs && distinct >= self.wasabi2_min_inputs / 2 {
            let repeated = std_counts.values().filter(|&&c| c >= 2).count();
            if standard * 2 >= n_out && repeated >= 1 {
                let (d, c) = std_counts
                    .iter()
                    .max_by_key(|&(&d, &c)| (c, d))
                    .map(|(&d, &c)| (d, c))
                    .unwrap_or((0, 0));
                let share = standard as f64 / n_out as f64;
                return Some(Detection {
                    protocol: Protocol::Wasabi2,
                    confidence: (0.5 + share / 2.0).min(0.99),
                    denomination: d,
                    equal_outputs: u32_of(c),
                    participants: u32_of(distinct.min(n_out)),
                });
            }
        }

        // JoinMarket: e equal outputs and at most e changes (BlockSci's rule is e =
        // ⌈outputs/2⌉).
        if e >= 2 && n_out <= 2 * e && n_out >= 3 && paid_by_many(e) {
            return Some(Detection {
                protocol: Protocol::JoinMarket,
                confidence: match e {
                    2 => 0.5,
                    3..=4 => 0.8,
                    _ => 0.9,
                },
                denomination: v,
                equal_outputs: u32_of(e),
                participants: u32_of(e),
            });
        }

        // Anything else with several equal outputs paid for by as many addresses.
        if e >= self.generic_min_equal && paid_by_many(e) {
            return Some(Detection {
                protocol: Protocol::Generic,
                confidence: 0.6,
                denomination: v,
                equal_outputs: u32_of(e),
                participants: u32_of(e),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape<'a>(
        ins: &'a [Option<i64>],
        distinct: usize,
        outs: &'a [i64],
        nulldata: &'a [bool],
    ) -> TxShape<'a> {
        TxShape {
            input_values: ins,
            distinct_input_addresses: distinct,
            output_values: outs,
            output_nulldata: nulldata,
        }
    }

    /// The in-place mode equals the map's on every small shape: values drawn from a few,
    /// OP_RETURNs and ignored values among them, ties included.
    #[test]
    fn the_in_place_mode_equals_the_maps() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let pool = [546i64, 2730, 1_000, 5_000, 100_000, 100_000, 7];
        for _ in 0..20_000 {
            let n = next(33) as usize;
            let outs: Vec<i64> = (0..n).map(|_| pool[next(7) as usize]).collect();
            let nulldata: Vec<bool> = (0..n).map(|_| next(5) == 0).collect();
            let s = shape(&[], 0, &outs, &nulldata);
            for ignored in [&[][..], &[546, 2730][..]] {
                assert_eq!(
                    mode(&s, ignored),
                    mode_by_map(&s, ignored),
                    "{outs:?} {nulldata:?}"
                );
            }
        }
    }

    fn detect(ins: &[i64], distinct: usize, outs: &[i64]) -> Option<Protocol> {
        let ins: Vec<Option<i64>> = ins.iter().map(|&v| Some(v)).collect();
        let nulldata = vec![false; outs.len()];
        Detectors::default()
            .detect(&shape(&ins, distinct, outs, &nulldata))
            .map(|d| d.protocol)
    }

    #[test]
    fn wasabi2_denominations() {
        for v in [
            5_000,
            8_192,
            6_561,
            13_122,
            10_000,
            20_000,
            50_000,
            1_048_576,
            4_782_969,
            100_000_000,
            200_000_000,
        ] {
            assert!(is_wasabi2_denomination(v), "{v}");
        }
        for v in [4_096, 5_001, 12_000, 30_000, 70_000, 1_000_001, 150_000] {
            assert!(!is_wasabi2_denomination(v), "{v}");
        }
    }

    #[test]
    fn whirlpool_mixes_and_tx0() {
        let d = 1_000_000;
        // Two premixes (denomination + fee allowance) and three free remixes.
        let ins = [d + 1_170, d + 1_170, d, d, d];
        assert_eq!(detect(&ins, 5, &[d; 5]), Some(Protocol::Whirlpool));
        // All remixes: nobody pays the miner, not a Whirlpool mix (still caught).
        assert_eq!(detect(&[d; 5], 5, &[d; 5]), Some(Protocol::JoinMarket));
        // Not a pool denomination: still equal outputs from five addresses.
        assert_eq!(detect(&ins, 5, &[d + 1; 5]), Some(Protocol::JoinMarket));
        // Seven equal outputs and change paid by seven addresses.
        let outs = [
            d + 1,
            d + 1,
            d + 1,
            d + 1,
            d + 1,
            d + 1,
            d + 1,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
        ];
        assert_eq!(detect(&[2 * d; 7], 7, &outs), Some(Protocol::Generic));
        // tx0: OP_RETURN, premixes, the 0.01 pool's fee (50,000) and change.
        let outs = [0, 50_000, d + 1_170, d + 1_170, d + 1_170, 123_456];
        let nulldata = [true, false, false, false, false, false];
        let ins = [Some(3_300_000)];
        let t = Detectors::default()
            .detect(&shape(&ins, 1, &outs, &nulldata))
            .expect("tx0");
        assert_eq!(t.protocol, Protocol::WhirlpoolTx0);
        assert!(!t.protocol.is_mix());
        assert_eq!((t.denomination, t.equal_outputs), (d, 3));
    }

    #[test]
    fn wasabi_and_joinmarket() {
        // Wasabi 1.1: 12 participants at ~0.1 BTC, two at the 0.2 level, change, fee.
        let base = 10_012_345;
        let mut outs = vec![base; 12];
        outs.extend([2 * base, 2 * base, 77_000, 1_234_567, 5_432_100, 31_337]);
        let ins = vec![30_000_000; 15];
        assert_eq!(detect(&ins, 15, &outs), Some(Protocol::Wasabi1));
        // Wasabi 2: 60 inputs, standard denominations plus some change.
        let mut outs = Vec::new();
        for d in [5_000_000, 2_000_000, 1_048_576, 531_441, 200_000, 100_000] {
            outs.extend(std::iter::repeat_n(d, 12));
        }
        outs.extend((0..20).map(|i| 123_457 + i * 1_001));
        assert_eq!(
            detect(&vec![3_000_000; 60], 60, &outs),
            Some(Protocol::Wasabi2)
        );
        // JoinMarket: 4 equal outputs of an arbitrary amount, 3 changes (taker swept).
        let outs = [
            27_391_017, 27_391_017, 27_391_017, 27_391_017, 1_234, 98_765, 4_321,
        ];
        assert_eq!(
            detect(&[30_000_000; 5], 5, &outs),
            Some(Protocol::JoinMarket)
        );
        // BlockSci's case: 3 equal, 2 changes.
        assert_eq!(
            detect(&[2_000; 3], 3, &[1_000, 1_000, 1_000, 37, 52]),
            Some(Protocol::JoinMarket)
        );
    }

    #[test]
    fn ordinary_payments_are_left_alone() {
        // A payment with change.
        assert_eq!(detect(&[5_000, 2_000], 2, &[5_500, 1_200]), None);
        // A batch payout of equal amounts from a one-address hot wallet.
        assert_eq!(detect(&[90_000_000; 3], 1, &[1_000_000; 10]), None);
        // A sweep of 100 deposit addresses into one.
        assert_eq!(detect(&[50_000; 100], 100, &[4_990_000]), None);
        // Dust outputs don't make a denomination.
        assert_eq!(detect(&[9_000; 3], 3, &[546, 546, 546, 10, 20]), None);
        // The same shape paid from 2 addresses only.
        assert_eq!(detect(&[2_000; 3], 2, &[1_000, 1_000, 1_000, 37, 52]), None);
        // Off means off.
        let off = Detectors {
            enabled: false,
            ..Default::default()
        };
        let ins = [Some(2_000); 3];
        assert!(
            off.detect(&shape(&ins, 3, &[1_000, 1_000, 1_000, 37, 52], &[false; 5]))
                .is_none()
        );
    }
}
