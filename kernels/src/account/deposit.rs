//! Exchange deposit-address clustering for Ethereum (after Victor, "Address clustering
//! heuristics for Ethereum", FC 2020), opt-in.
//!
//! Exchanges give each customer a deposit address and sweep it into their hot wallets. An
//! address is taken for a **deposit address** when
//! - it is not labelled itself (with any category: a `scam`-labelled collection address
//!   that victims pay and that then sweeps into an exchange is the operation's, not a
//!   customer's deposit address, and its victims must never be joined to it),
//! - everything it sends goes to addresses labelled with the exchange category (the hot
//!   wallets), at least once, and
//! - each of those sweeps follows a transfer into it by at most `max_delay_blocks` blocks.
//!
//! Every address that sent to a deposit address (other than a hot wallet) is then the same
//! entity as the deposit address: one customer, provided the deposit address has at most
//! `max_senders` distinct senders. A customer pays in from a few wallets of their own;
//! an address that many unrelated payers fund (victim collection, a merchant, a payroll
//! target) is taken for a deposit address but its senders are not linked. Clusters are connected components over
//! those links (the `cc` kernel, on the GPU or the CPU), cluster id = the smallest address
//! id, as for Bitcoin. Only addresses in some link are listed; every other address is its
//! own cluster. Known weakness, as in the paper: a contract or service paying many
//! customers' deposit addresses joins them; `max_delay_blocks` and the labels bound it.

use std::collections::HashSet;

use ferret_schemas::Warehouse;

use super::job::EthTransfers;
use crate::cc;
use crate::cluster::Clusters;
use crate::device::Backend;
use crate::taint::job::{chain_labels, check_categories};
use crate::{Error, Result};

/// The heuristic's parameters.
#[derive(Clone, Debug)]
pub struct DepositRule {
    /// Label category of exchange hot wallets.
    pub exchange_category: String,
    /// A sweep must follow a transfer into the deposit address within this many blocks.
    pub max_delay_blocks: i64,
    /// A deposit address with more distinct senders than this links none of them.
    pub max_senders: usize,
}

impl Default for DepositRule {
    fn default() -> Self {
        Self {
            exchange_category: "exchange".into(),
            max_delay_blocks: 1000,
            max_senders: 8,
        }
    }
}

/// Clusters and what the heuristic found.
#[derive(Clone, Debug)]
pub struct DepositClusters {
    pub clusters: Clusters,
    /// The addresses taken for deposit addresses.
    pub deposit_addresses: Vec<String>,
}

/// Finds deposit addresses in `t` and links their senders; `hot` marks hot wallets,
/// `labelled` every address with a label of any category.
pub fn deposit_links(
    t: &EthTransfers,
    hot: &[bool],
    labelled: &[bool],
    rule: &DepositRule,
) -> (Vec<u32>, Vec<(u32, u32)>) {
    let n = t.graph.nodes as usize;
    let g = &t.graph;
    // Per address: last block it received in (scanning in chain order), and whether every
    // transfer out went to a hot wallet soon enough.
    let mut last_in: Vec<Option<i64>> = vec![None; n];
    let mut sweeps = vec![0u32; n];
    let mut disqualified = vec![false; n];
    for e in 0..g.src.len() {
        let (s, d) = (g.src[e] as usize, g.dst[e] as usize);
        let block = t.block[e];
        if !hot[s] {
            let in_time = last_in[s].is_some_and(|b| block - b <= rule.max_delay_blocks);
            if hot[d] && in_time {
                sweeps[s] += 1;
            } else {
                disqualified[s] = true;
            }
        }
        last_in[d] = Some(block);
    }
    let deposits: Vec<u32> = (0..n)
        .filter(|&v| !hot[v] && !labelled[v] && sweeps[v] > 0 && !disqualified[v])
        .map(|v| v as u32)
        .collect();
    let is_deposit: HashSet<u32> = deposits.iter().copied().collect();
    let mut links: Vec<(u32, u32)> = (0..g.src.len())
        .filter(|&e| {
            is_deposit.contains(&g.dst[e]) && !hot[g.src[e] as usize] && g.src[e] != g.dst[e]
        })
        .map(|e| (g.src[e], g.dst[e]))
        .collect();
    links.sort_unstable();
    links.dedup();
    // Links are sorted by sender; count senders per deposit address.
    let mut senders: std::collections::HashMap<u32, usize> = Default::default();
    for &(_, d) in &links {
        *senders.entry(d).or_default() += 1;
    }
    links.retain(|&(_, d)| senders[&d] <= rule.max_senders);
    (deposits, links)
}

/// Clusters the warehouse's Ethereum addresses (every asset) by deposit addresses.
pub async fn cluster_eth(
    wh: &Warehouse,
    backend: &Backend,
    rule: &DepositRule,
) -> Result<DepositClusters> {
    let labels = chain_labels(wh, "eth").await?;
    check_categories(&labels, std::iter::once(&rule.exchange_category))?;
    let t = EthTransfers::load(wh, "*").await?;
    let hot_set: HashSet<&str> = labels
        .iter()
        .filter(|l| l.2 == rule.exchange_category)
        .map(|l| l.0.as_str())
        .collect();
    let hot: Vec<bool> = t
        .addresses
        .iter()
        .map(|a| hot_set.contains(a.as_str()))
        .collect();
    let labelled_set: HashSet<&str> = labels.iter().map(|l| l.0.as_str()).collect();
    let labelled: Vec<bool> = t
        .addresses
        .iter()
        .map(|a| labelled_set.contains(a.as_str()))
        .collect();
    let (deposits, links) = deposit_links(&t, &hot, &labelled, rule);
    // Only the linked addresses, renumbered in address-id order so the smallest id leads.
    let mut members: Vec<u32> = links.iter().flat_map(|&(a, b)| [a, b]).collect();
    members.sort_unstable();
    members.dedup();
    let index = |v: u32| members.binary_search(&v).map(|i| i as u32);
    let local: Vec<(u32, u32)> = links
        .iter()
        .map(|&(a, b)| Ok((index(a).map_err(|_| bad())?, index(b).map_err(|_| bad())?)))
        .collect::<Result<_>>()?;
    let n = u32::try_from(members.len())
        .map_err(|_| Error::TooLarge("address ids beyond u32".into()))?;
    let cluster_id = cc::connected_components(backend, n, &local)?;
    let cluster_size = crate::cluster::cluster_sizes(&cluster_id);
    tracing::info!(
        deposit_addresses = deposits.len(),
        links = links.len(),
        device = %backend.describe(),
        "clustered by deposit addresses"
    );
    Ok(DepositClusters {
        clusters: Clusters {
            chain: "eth",
            addresses: members
                .iter()
                .map(|&v| t.addresses[v as usize].clone())
                .collect(),
            cluster_id,
            cluster_size,
            coinjoins_skipped: 0,
            linked_transactions: links.len() as u64,
        },
        deposit_addresses: deposits
            .iter()
            .map(|&v| t.addresses[v as usize].clone())
            .collect(),
    })
}

fn bad() -> Error {
    Error::BadGraph("a linked address is missing from the members".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::TransferGraph;

    fn transfers(edges: &[(u32, u32, i64)], nodes: u32) -> EthTransfers {
        EthTransfers {
            graph: TransferGraph {
                nodes,
                src: edges.iter().map(|e| e.0).collect(),
                dst: edges.iter().map(|e| e.1).collect(),
                amount: vec![1.0; edges.len()],
                ..Default::default()
            },
            addresses: (0..nodes).map(|i| format!("a{i}")).collect(),
            block: edges.iter().map(|e| e.2).collect(),
            tx_index: vec![0; edges.len()],
            tx_hash: vec![String::new(); edges.len()],
            value: vec![1.0; edges.len()],
            scale: 1.0,
        }
    }

    #[test]
    fn senders_to_one_deposit_address_are_linked() {
        // 0 is the hot wallet. 1 and 2 pay deposit address 3, swept to 0 soon after; 4 pays 5,
        // which also pays 6 (not a deposit address); 7 pays 8, swept too late.
        let t = transfers(
            &[
                (1, 3, 10),
                (2, 3, 11),
                (3, 0, 12),
                (4, 5, 10),
                (5, 0, 11),
                (5, 6, 12),
                (7, 8, 10),
                (8, 0, 5000),
            ],
            9,
        );
        let mut hot = vec![false; 9];
        hot[0] = true;
        let none = vec![false; 9];
        let (deposits, links) = deposit_links(&t, &hot, &none, &DepositRule::default());
        assert_eq!(deposits, [3]);
        assert_eq!(links, [(1, 3), (2, 3)]);
        // A labelled address (say `scam`) is never a deposit address: its payers stay apart.
        let mut labelled = none.clone();
        labelled[3] = true;
        let (deposits, links) = deposit_links(&t, &hot, &labelled, &DepositRule::default());
        assert!(deposits.is_empty() && links.is_empty());
        // Nor are the many payers of one address (a collection address nobody labelled).
        let few = DepositRule {
            max_senders: 1,
            ..Default::default()
        };
        let (deposits, links) = deposit_links(&t, &hot, &none, &few);
        assert_eq!(deposits, [3]);
        assert!(links.is_empty(), "{links:?}");
        // A withdrawal from the hot wallet does not make its receiver a deposit address.
        let t = transfers(&[(0, 1, 1), (1, 0, 2)], 2);
        let (deposits, _) = deposit_links(&t, &[true, false], &[false; 2], &DepositRule::default());
        assert_eq!(deposits, [1]);
        let (_, links) = deposit_links(&t, &[true, false], &[false; 2], &DepositRule::default());
        assert!(links.is_empty(), "a hot wallet is nobody's customer");
    }
}
