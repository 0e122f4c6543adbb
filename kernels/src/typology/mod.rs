//! Scam typologies: shapes of scam-compound money found on a whole chain before any
//! label exists (issue 15). Each pattern's rule, features and thresholds, and where
//! each threshold comes from, are in docs/typologies.md.
//!
//! - [`btc`]: one chain-order pass over the committed transactions finds peel chains,
//!   rapid pass-through chains, fan-out structuring and CoinJoin use. What it holds is
//!   the chains still open (bounded by the rules' time windows), two one-byte activity
//!   counters per address, and the findings.
//! - Victim collection is an aggregate over payments: it runs as SQL (the query crate's
//!   `typologies` module), joined with the clusters and labels.

pub mod btc;
pub mod walk;

use serde_json::{Map, Value};

/// A typology.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Pattern {
    PeelChain,
    VictimCollection,
    PassThrough,
    FanOut,
    CoinJoin,
    AddressPoisoning,
    ApprovalPhishing,
    StablecoinSwap,
}

impl Pattern {
    /// Every pattern, in the order the table lists them.
    pub const ALL: [Pattern; 8] = [
        Pattern::PeelChain,
        Pattern::VictimCollection,
        Pattern::PassThrough,
        Pattern::FanOut,
        Pattern::CoinJoin,
        Pattern::AddressPoisoning,
        Pattern::ApprovalPhishing,
        Pattern::StablecoinSwap,
    ];

    /// The name in the `pattern` column.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::PeelChain => "peel_chain",
            Pattern::VictimCollection => "victim_collection",
            Pattern::PassThrough => "pass_through",
            Pattern::FanOut => "fan_out",
            Pattern::CoinJoin => "coinjoin",
            Pattern::AddressPoisoning => "address_poisoning",
            Pattern::ApprovalPhishing => "approval_phishing",
            Pattern::StablecoinSwap => "stablecoin_swap",
        }
    }

    /// The pattern named `s` (as in the `pattern` column).
    pub fn from_name(s: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// One finding: a pattern seen on the chain, with its evidence.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub pattern: Pattern,
    /// The address the finding is about, as an address id (Bitcoin) until it is named.
    pub address_id: Option<u64>,
    /// The address, once named.
    pub address: Option<String>,
    /// The evidence transactions, in chain order.
    pub txids: Vec<String>,
    pub first_height: i64,
    pub last_height: i64,
    /// The pattern's amount in base units.
    pub amount: f64,
    /// 0–1.
    pub score: f64,
    /// The features behind the finding.
    pub features: Map<String, Value>,
}

/// `x` rounded to 4 decimals (features are for people; the rounding keeps the JSON
/// short and the same on every platform).
pub fn r4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The coefficient of variation (standard deviation / mean) of `xs`; 0 for fewer than
/// two values or a zero mean.
pub fn coefficient_of_variation(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if mean == 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    var.sqrt() / mean.abs()
}

/// The round threshold `v` sits just under: the smallest `R` of the form 1, 2 or 5 ×
/// 10^k (k ≥ 0) with `R · (1 − band) ≤ v < R`, if any.
pub fn just_under_round(v: i64, band: f64) -> Option<i64> {
    if v <= 0 {
        return None;
    }
    // The smallest R above v, then whether v is within the band under it.
    let mut unit: i64 = 1;
    loop {
        for m in [1i64, 2, 5] {
            let r = unit.checked_mul(m)?;
            if r > v {
                return ((r as f64) * (1.0 - band) <= v as f64).then_some(r);
            }
        }
        unit = unit.checked_mul(10)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn just_under_round_thresholds() {
        assert_eq!(just_under_round(990_000, 0.05), Some(1_000_000));
        assert_eq!(just_under_round(9_900, 0.05), Some(10_000));
        assert_eq!(just_under_round(4_800_000, 0.05), Some(5_000_000));
        assert_eq!(just_under_round(1_950_000, 0.05), Some(2_000_000));
        assert_eq!(just_under_round(1_000_000, 0.05), None);
        assert_eq!(just_under_round(940_000, 0.05), None);
        assert_eq!(just_under_round(1_234_567, 0.05), None);
        assert_eq!(just_under_round(0, 0.05), None);
        assert_eq!(just_under_round(i64::MAX, 0.05), None);
    }

    #[test]
    fn patterns_round_trip() {
        for p in Pattern::ALL {
            assert_eq!(Pattern::from_name(p.name()), Some(p));
        }
        assert_eq!(Pattern::from_name("peel"), None);
    }

    #[test]
    fn cv() {
        assert_eq!(coefficient_of_variation(&[5.0, 5.0, 5.0]), 0.0);
        assert!((coefficient_of_variation(&[1.0, 3.0]) - 0.5).abs() < 1e-12);
    }
}
