//! How good a clustering is, against known owners: pairwise precision (of the address
//! pairs put in one cluster, the share with one owner), pairwise recall against what
//! common-input ownership can recover when every true CoinJoin is left out, CoinJoins
//! whose participants still ended up in one cluster, and the CoinJoin detectors'
//! precision and recall per protocol.
//!
//! The truth is two CSV files, as `ferret synth btc` writes them (and as any labelled
//! data set can be put): `entities.csv` (`address,entity_id`) and `coinjoins.csv`
//! (`txid,protocol[,…]`; protocol `whirlpool_tx0` is not a mix).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ferret_schemas::Warehouse;

use super::{BtcClusters, ClusterOptions, build_cio_graph, cluster_graph};
use crate::coinjoin::Protocol;
use crate::device::Backend;
use crate::taint::graph::hex_encode;
use crate::{Error, Result};

/// Known owners and CoinJoins.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    /// Address → owner.
    pub owners: HashMap<String, String>,
    /// Txid → protocol.
    pub coinjoins: HashMap<String, String>,
}

fn read_csv(path: &Path) -> Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::BadQuery(format!("reading {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect())
}

impl Truth {
    /// Reads `entities.csv` and `coinjoins.csv` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Truth> {
        let mut t = Truth::default();
        for (i, row) in read_csv(&dir.join("entities.csv"))?.into_iter().enumerate() {
            let [a, e] = &row[..] else {
                return Err(Error::BadQuery(format!(
                    "{}: line {}: expected address,entity_id",
                    dir.join("entities.csv").display(),
                    i + 2
                )));
            };
            t.owners.insert(a.clone(), e.clone());
        }
        for (i, row) in read_csv(&dir.join("coinjoins.csv"))?
            .into_iter()
            .enumerate()
        {
            let (Some(txid), Some(p)) = (row.first(), row.get(1)) else {
                return Err(Error::BadQuery(format!(
                    "{}: line {}: expected txid,protocol",
                    dir.join("coinjoins.csv").display(),
                    i + 2
                )));
            };
            t.coinjoins.insert(txid.clone(), p.clone());
        }
        Ok(t)
    }

    /// Txids of the true mixes (tx0s are not).
    pub fn mixes(&self) -> HashSet<String> {
        self.coinjoins
            .iter()
            .filter(|(_, p)| p.as_str() != "whirlpool_tx0")
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// One protocol's detector figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DetectorScore {
    /// Planted transactions of the protocol.
    pub planted: u64,
    /// Of them, detected as this protocol.
    pub named: u64,
    /// Of them, detected as any mix (skipped by clustering); for tx0s: detected as tx0.
    pub caught: u64,
    /// Detections naming this protocol.
    pub detected: u64,
    /// Of those, truly of this protocol.
    pub detected_right: u64,
}

/// The figures of one clustering against the truth.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accuracy {
    pub precision: f64,
    pub recall: f64,
    /// Clusters holding addresses of more than one owner.
    pub mixed_clusters: u64,
    /// True mixes with two participants' input addresses in one cluster.
    pub merged_coinjoins: u64,
    /// True mixes with at least two owners' input addresses.
    pub coinjoins_checked: u64,
    /// Detections that are not CoinJoins (or tx0s) at all.
    pub false_detections: u64,
    pub detections: u64,
    /// Per protocol name.
    pub protocols: BTreeMap<String, DetectorScore>,
    pub held: u64,
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Pairwise (same-cluster pairs in `a` that are same-group in `b`) / (pairs in `a`),
/// over the ids where both are known.
fn pair_share(a: &[Option<u32>], b: &[Option<u32>]) -> f64 {
    let mut joint: HashMap<(u32, u32), u64> = HashMap::new();
    let mut left: HashMap<u32, u64> = HashMap::new();
    for (x, y) in a.iter().zip(b) {
        if let (Some(x), Some(y)) = (x, y) {
            *joint.entry((*x, *y)).or_default() += 1;
            *left.entry(*x).or_default() += 1;
        }
    }
    let all: u64 = left.values().map(|&n| pairs(n)).sum();
    let both: u64 = joint.values().map(|&n| pairs(n)).sum();
    if all == 0 {
        1.0
    } else {
        both as f64 / all as f64
    }
}

/// Clusters the warehouse with `opts` and measures the result against `truth`.
pub async fn evaluate(
    wh: &Warehouse,
    backend: &Backend,
    opts: &ClusterOptions,
    truth: &Truth,
) -> Result<(BtcClusters, Accuracy)> {
    let labels = crate::taint::job::btc_labels(wh).await?;
    let mixes = truth.mixes();
    // One read of the warehouse. The ideal is common-input ownership with exactly the
    // true mixes left out and no guards; the same graph's transactions serve the
    // merged-CoinJoin check.
    let g = build_cio_graph(wh, &opts.detectors).await?;
    let mut ideal_graph = g.clone();
    for t in &mut ideal_graph.txs {
        t.mix = mixes.contains(&hex_encode(&t.txid));
    }
    let ideal = cluster_graph(
        ideal_graph,
        &[],
        backend,
        &ClusterOptions {
            label_guard: false,
            collapse_min_size: 0,
            ..opts.clone()
        },
    )?;
    let run = cluster_graph(g, &labels, backend, opts)?;
    let c = &run.clusters;
    if ideal.clusters.addresses != c.addresses {
        return Err(Error::BadGraph(
            "address ids differ between graph builds".into(),
        ));
    }

    let mut owner_ids: HashMap<&str, u32> = HashMap::new();
    let owner: Vec<Option<u32>> = c
        .addresses
        .iter()
        .map(|a| {
            truth.owners.get(a).map(|o| {
                let next = u32::try_from(owner_ids.len()).unwrap_or(u32::MAX);
                *owner_ids.entry(o.as_str()).or_insert(next)
            })
        })
        .collect();
    let pred: Vec<Option<u32>> = c.cluster_id.iter().map(|&x| Some(x)).collect();
    let ideal_ids: Vec<Option<u32>> = ideal.clusters.cluster_id.iter().map(|&x| Some(x)).collect();
    // Recall over addresses with a known owner, as precision is.
    let known = |v: &[Option<u32>]| -> Vec<Option<u32>> {
        v.iter().zip(&owner).map(|(x, o)| o.and(*x)).collect()
    };
    let mut acc = Accuracy {
        precision: pair_share(&pred, &owner),
        recall: pair_share(&known(&ideal_ids), &known(&pred)),
        held: run.guarded.holds.len() as u64,
        ..Default::default()
    };
    let mut owners_per_cluster: HashMap<u32, HashSet<u32>> = HashMap::new();
    for (p, o) in pred.iter().zip(&owner) {
        if let (Some(p), Some(o)) = (p, o) {
            owners_per_cluster.entry(*p).or_default().insert(*o);
        }
    }
    acc.mixed_clusters = owners_per_cluster.values().filter(|s| s.len() > 1).count() as u64;

    for t in &run.txs {
        if !mixes.contains(&hex_encode(&t.txid)) {
            continue;
        }
        let members = &run.members[t.start..t.end];
        let owned: Vec<(u32, u32)> = members
            .iter()
            .filter_map(|&m| owner[m as usize].map(|o| (o, c.cluster_id[m as usize])))
            .collect();
        if owned.iter().any(|x| x.0 != owned[0].0) {
            acc.coinjoins_checked += 1;
            let merged = owned
                .iter()
                .any(|x| owned.iter().any(|y| x.0 != y.0 && x.1 == y.1));
            acc.merged_coinjoins += u64::from(merged);
        }
    }

    let detected: HashMap<String, Protocol> = run
        .coinjoins
        .iter()
        .map(|r| (hex_encode(&r.txid), r.detection.protocol))
        .collect();
    for (txid, p) in &truth.coinjoins {
        let s = acc.protocols.entry(p.clone()).or_default();
        s.planted += 1;
        if let Some(d) = detected.get(txid) {
            s.named += u64::from(d.name() == p);
            s.caught += u64::from(if p == "whirlpool_tx0" {
                *d == Protocol::WhirlpoolTx0
            } else {
                d.is_mix()
            });
        }
    }
    for (txid, d) in &detected {
        acc.detections += 1;
        let s = acc.protocols.entry(d.name().to_string()).or_default();
        s.detected += 1;
        match truth.coinjoins.get(txid) {
            Some(p) => s.detected_right += u64::from(p == d.name()),
            None => acc.false_detections += 1,
        }
    }
    Ok((run, acc))
}

impl std::fmt::Display for Accuracy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "pairwise precision {:.4}, recall {:.4} (of what common-input ownership recovers without the true CoinJoins); {} clusters mix owners; {} of {} CoinJoins have participants merged; {} merges held for review",
            self.precision,
            self.recall,
            self.mixed_clusters,
            self.merged_coinjoins,
            self.coinjoins_checked,
            self.held
        )?;
        writeln!(
            f,
            "detections: {} ({} not CoinJoins at all)",
            self.detections, self.false_detections
        )?;
        writeln!(
            f,
            "{:<14} {:>8} {:>8} {:>10} {:>9} {:>10}",
            "protocol", "planted", "caught", "named", "detected", "precision"
        )?;
        for (p, s) in &self.protocols {
            let ratio = |a: u64, b: u64| {
                if b == 0 {
                    "-".to_string()
                } else {
                    format!("{:.3}", a as f64 / b as f64)
                }
            };
            writeln!(
                f,
                "{:<14} {:>8} {:>8} {:>10} {:>9} {:>10}",
                p,
                s.planted,
                s.caught,
                format!("{} ({})", s.named, ratio(s.named, s.planted)),
                s.detected,
                ratio(s.detected_right, s.detected)
            )?;
        }
        Ok(())
    }
}
