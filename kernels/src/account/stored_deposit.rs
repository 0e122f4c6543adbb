//! Deposit-address clustering out of core (`ferret cluster eth --mem-mb N`): the same
//! `eth_clusters` rows as [`super::deposit::cluster_eth`] (tested row for row) without the
//! transfers or an address map in memory.
//!
//! 1. The events of every asset's transfers, cut into address partitions and sorted per
//!    address in chain order (`stored.rs`'s first pass).
//! 2. A walk per address decides, exactly as `deposit_links` does in its one pass over
//!    the chain, whether the address is a deposit address (its sweeps into hot wallets
//!    and the delay since its last arrival), and collects its distinct senders (at most
//!    `max_senders + 1`: beyond that none is linked). Each link (sender, deposit address)
//!    goes to the sender's partition; each deposit address, with the chain position of
//!    its first transfer, to the members file.
//! 3. A second walk gives each linked sender the position of its first transfer. The
//!    members sorted by that position are numbered: the in-memory run's address ids, in
//!    first-appearance order, so the cluster ids (the smallest member id) are the same.
//! 4. The links, translated to member numbers by two sort-merge joins, are joined in the
//!    paged union-find of the Bitcoin clustering (`cluster/stored.rs`), 12 bytes a member
//!    within the budget, the rest on scratch; the rows are written in member order.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use ferret_schemas::Warehouse;
use ferret_schemas::results::clusters_schema;
use rayon::prelude::*;
use tokio::runtime::Handle;

use super::deposit::DepositRule;
use super::records::{Records, Spill, io_err, sort_file};
use super::stored::{
    ARRIVE, Addr, Ctx, DEPART, EV, addr_of, edge_of, ev_block, hex, parse_hex, part_of,
    transfer_files, wh_err,
};
use crate::blocked::Budget;
use crate::cluster::guard::Forest;
use crate::cluster::stored::PagedForest;
use crate::taint::job::{chain_labels, check_categories};
use crate::{Error, Result};

/// A link: sender, deposit address.
const LINK: usize = 40;
/// A member: position of its first transfer (edge big-endian, then 0 as sender, 1 as
/// receiver), address.
const MEMBER: usize = 29;
/// A member by address: address, number.
const BY_ADDR: usize = 24;
/// A half-translated link: deposit address, sender's number.
const HALF: usize = 24;

/// What an out-of-core deposit clustering found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredDepositClusters {
    pub run_id: String,
    pub deposit_addresses: u64,
    /// Linked addresses (rows).
    pub addresses: u64,
    pub clusters: u64,
    pub largest: u64,
    pub links: u64,
    pub partitions: usize,
}

/// Clusters by deposit addresses within `budget` and writes `eth_clusters`; call from a
/// blocking thread inside a tokio runtime. `parts` forces the number of address
/// partitions (tests).
pub fn cluster_eth_stored(
    wh: &Warehouse,
    rule: &DepositRule,
    budget: &Budget,
    parts: Option<usize>,
) -> Result<StoredDepositClusters> {
    let rt = Handle::current();
    let labels = rt.block_on(chain_labels(wh, "eth"))?;
    check_categories(&labels, std::iter::once(&rule.exchange_category))?;
    let (files, parts) = transfer_files(wh, &rt, parts)?;
    let hot: HashSet<Addr> = labels
        .iter()
        .filter(|l| l.2 == rule.exchange_category)
        .filter_map(|l| parse_hex::<20>(&l.0))
        .collect();
    let labelled: HashSet<Addr> = labels
        .iter()
        .filter_map(|l| parse_hex::<20>(&l.0))
        .collect();
    let dir = tempfile::Builder::new()
        .prefix("ferret-eth-cluster-")
        .tempdir_in(&budget.scratch)
        .map_err(|e| io_err(&budget.scratch, e))?;
    let ctx = Ctx {
        dir: dir.path().to_path_buf(),
        parts,
        mem: budget.mem_bytes,
        backward: false,
    };
    ctx.build(wh, &rt, &files, "*", &HashSet::new())?;

    // 2. Deposit addresses and their links.
    let links = ctx.spill("links");
    let members_raw = dir.path().join("members.raw");
    let members = Spill::new(vec![members_raw.clone()], 1 << 20);
    let deposits: u64 = (0..parts)
        .into_par_iter()
        .map(|q| walk_deposits(&ctx, q, &hot, &labelled, rule, &links, &members))
        .collect::<Result<Vec<u64>>>()?
        .into_iter()
        .sum();
    links.flush()?;

    // 3. The senders' first transfers.
    (0..parts)
        .into_par_iter()
        .map(|q| {
            let raw = ctx.raw("links", q);
            if !raw.exists() {
                return Ok(());
            }
            let sorted = ctx.sorted("links", q);
            sort_file::<LINK>(&raw, &sorted, None, ctx.sort_mem(), &|_| {})?;
            let mut ev = Records::<EV>::open(&ctx.events(q))?;
            let mut l = Records::<LINK>::open(&sorted)?;
            while let Some(r) = l.peek() {
                let sender = addr_of(r);
                // The sender's first event: skip the addresses before it.
                while ev.peek().is_some_and(|e| addr_of(e) < sender) {
                    ev.pop()?;
                }
                let Some(e) = ev.peek().filter(|e| addr_of(*e) == sender) else {
                    return Err(Error::Write {
                        path: l.path().display().to_string(),
                        reason: format!("sender {} has no transfer: scratch damaged", hex(&sender)),
                    });
                };
                members.push(0, &member(e))?;
                while l.peek().is_some_and(|r| addr_of(r) == sender) {
                    l.pop()?;
                }
            }
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;
    members.flush()?;

    // Members numbered in first-appearance order; and by address.
    let by_key = dir.path().join("members");
    // A deposit address that also sends to another one is listed twice: the same record.
    let n = sort_file::<MEMBER>(&members_raw, &by_key, Some(MEMBER), ctx.sort_mem(), &|_| {})?;
    let n32 = u32::try_from(n).map_err(|_| Error::TooLarge(format!("{n} linked addresses")))?;
    let by_addr_raw = dir.path().join("by-addr.raw");
    {
        let mut w = writer(&by_addr_raw)?;
        let mut r = Records::<MEMBER>::open(&by_key)?;
        let mut i = 0u32;
        while let Some(m) = r.pop()? {
            let mut rec = [0u8; BY_ADDR];
            rec[..20].copy_from_slice(&m[9..29]);
            rec[20..24].copy_from_slice(&i.to_be_bytes());
            w.write_all(&rec).map_err(|e| io_err(&by_addr_raw, e))?;
            i += 1;
        }
        w.flush().map_err(|e| io_err(&by_addr_raw, e))?;
    }
    let by_addr = dir.path().join("by-addr");
    sort_file::<BY_ADDR>(&by_addr_raw, &by_addr, None, ctx.sort_mem(), &|_| {})?;

    // 4. Links as member numbers, joined in the paged forest.
    let half_raw = dir.path().join("half.raw");
    {
        let mut w = writer(&half_raw)?;
        for q in 0..parts {
            // Each partition's links are sorted by sender.
            let mut l = Records::<LINK>::open(&ctx.sorted("links", q))?;
            let mut m = Records::<BY_ADDR>::open(&by_addr)?;
            while let Some(r) = l.pop()? {
                let id = number_of(&mut m, &addr_of(&r), &by_addr)?;
                let mut rec = [0u8; HALF];
                rec[..20].copy_from_slice(&r[20..40]);
                rec[20..24].copy_from_slice(&id.to_be_bytes());
                w.write_all(&rec).map_err(|e| io_err(&half_raw, e))?;
            }
        }
        w.flush().map_err(|e| io_err(&half_raw, e))?;
    }
    let half = dir.path().join("half");
    let links_n = sort_file::<HALF>(&half_raw, &half, None, ctx.sort_mem(), &|_| {})?;
    let mut forest = PagedForest::new(n32, budget.mem_bytes / 2, dir.path())?;
    {
        let mut h = Records::<HALF>::open(&half)?;
        let mut m = Records::<BY_ADDR>::open(&by_addr)?;
        while let Some(r) = h.pop()? {
            let deposit: Addr = r[..20].try_into().expect("20 bytes");
            let d = number_of(&mut m, &deposit, &by_addr)?;
            let s = u32::from_be_bytes(r[20..24].try_into().expect("4 bytes"));
            union(&mut forest, s, d)?;
        }
    }

    // The rows, in member order.
    let run_id = ferret_schemas::results::new_run_id();
    let mut out = wh
        .run_writer("eth_clusters", &run_id, clusters_schema())
        .map_err(wh_err)?;
    let mut stats = StoredDepositClusters {
        deposit_addresses: deposits,
        addresses: n,
        links: links_n,
        partitions: parts,
        ..Default::default()
    };
    let mut r = Records::<MEMBER>::open(&by_key)?;
    let mut i = 0u32;
    let mut batch: (Vec<String>, Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
    let mut flush = |b: &mut (Vec<String>, Vec<i64>, Vec<i64>, Vec<i64>)| -> Result<()> {
        if b.0.is_empty() {
            return Ok(());
        }
        let batch = rows_batch(b, &run_id)?;
        rt.block_on(out.write(&batch)).map_err(wh_err)?;
        *b = Default::default();
        Ok(())
    };
    while let Some(m) = r.pop()? {
        let (min, size) = forest.cluster_of(i)?;
        if min == i {
            stats.clusters += 1;
        }
        stats.largest = stats.largest.max(u64::from(size));
        batch.0.push(hex(&m[9..29]));
        batch.1.push(i64::from(i));
        batch.2.push(i64::from(min));
        batch.3.push(i64::from(size));
        if batch.0.len() >= 65_536 {
            flush(&mut batch)?;
        }
        i += 1;
    }
    flush(&mut batch)?;
    let file = rt.block_on(out.finish()).map_err(wh_err)?;
    rt.block_on(wh.commit_run_files(
        &run_id,
        vec![("eth_clusters".into(), file)],
        Some(serde_json::json!({
            "exchange_category": rule.exchange_category,
            "max_delay_blocks": rule.max_delay_blocks,
            "max_senders": rule.max_senders,
            "mem_mb": budget.mem_bytes >> 20,
        })),
    ))
    .map_err(wh_err)?;
    stats.run_id = run_id;
    tracing::info!(
        deposit_addresses = stats.deposit_addresses,
        links = stats.links,
        addresses = stats.addresses,
        "clustered eth by deposit addresses out of core"
    );
    Ok(stats)
}

fn writer(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    let f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    Ok(std::io::BufWriter::with_capacity(64 << 10, f))
}

/// A member record from an address's first event.
fn member(e: &[u8; EV]) -> [u8; MEMBER] {
    let mut m = [0u8; MEMBER];
    m[..8].copy_from_slice(&edge_of(e).to_be_bytes());
    // Its first event is a departure: it appeared as the sender.
    m[8] = u8::from(e[28] != DEPART);
    m[9..29].copy_from_slice(&e[..20]);
    m
}

/// The number of `a` from the members by address (read forward: `a` must not be before
/// the last one asked).
fn number_of(m: &mut Records<BY_ADDR>, a: &Addr, path: &Path) -> Result<u32> {
    while m.peek().is_some_and(|r| addr_of(r) < *a) {
        m.pop()?;
    }
    match m.peek() {
        Some(r) if addr_of(r) == *a => {
            Ok(u32::from_be_bytes(r[20..24].try_into().expect("4 bytes")))
        }
        _ => Err(Error::Write {
            path: path.display().to_string(),
            reason: format!("linked address {} is not a member: scratch damaged", hex(a)),
        }),
    }
}

/// Union by size; the root keeps the smaller id on ties (the in-memory union-find's
/// choice is irrelevant: clusters are reported by their smallest member).
fn union(f: &mut PagedForest, a: u32, b: u32) -> Result<()> {
    let (ra, rb) = (f.find(a)?, f.find(b)?);
    if ra == rb {
        return Ok(());
    }
    let (sa, sb) = (f.size(ra)?, f.size(rb)?);
    let (big, small) = if sa > sb || (sa == sb && ra < rb) {
        (ra, rb)
    } else {
        (rb, ra)
    };
    f.set_parent(small, big)?;
    f.set_size(big, sa + sb)?;
    f.joined(big, small)
}

/// Walks partition `q`'s addresses as `deposit_links` walks the chain: returns the
/// deposit addresses found, their links sent to the senders' partitions and themselves
/// to the members.
fn walk_deposits(
    ctx: &Ctx,
    q: usize,
    hot: &HashSet<Addr>,
    labelled: &HashSet<Addr>,
    rule: &DepositRule,
    links: &Spill,
    members: &Spill,
) -> Result<u64> {
    let mut ev = Records::<EV>::open(&ctx.events(q))?;
    let mut found = 0u64;
    while let Some(first) = ev.peek() {
        let a = addr_of(first);
        let first_member = member(first);
        let is_hot = hot.contains(&a);
        let mut last_in: Option<i64> = None;
        let (mut sweeps, mut disqualified) = (0u64, false);
        let mut senders: Vec<Addr> = Vec::new();
        while ev.peek().is_some_and(|r| addr_of(r) == a) {
            let r = ev.pop()?.expect("peeked");
            let block = ev_block(&r);
            let peer: Addr = r[29..49].try_into().expect("20 bytes");
            if r[28] == DEPART {
                if !is_hot {
                    let in_time = last_in.is_some_and(|b| block - b <= rule.max_delay_blocks);
                    if hot.contains(&peer) && in_time {
                        sweeps += 1;
                    } else {
                        disqualified = true;
                    }
                }
            } else if r[28] == ARRIVE {
                last_in = Some(block);
                if !hot.contains(&peer)
                    && peer != a
                    && senders.len() <= rule.max_senders
                    && !senders.contains(&peer)
                {
                    senders.push(peer);
                }
            }
        }
        if is_hot || labelled.contains(&a) || sweeps == 0 || disqualified {
            continue;
        }
        found += 1;
        if senders.is_empty() || senders.len() > rule.max_senders {
            continue;
        }
        members.push(0, &first_member)?;
        for s in &senders {
            let mut rec = [0u8; LINK];
            rec[..20].copy_from_slice(s);
            rec[20..].copy_from_slice(&a);
            links.push(part_of(s, ctx.parts), &rec)?;
        }
    }
    Ok(found)
}

fn rows_batch(
    b: &(Vec<String>, Vec<i64>, Vec<i64>, Vec<i64>),
    run_id: &str,
) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let n = b.0.len();
    RecordBatch::try_new(
        clusters_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("eth", n))),
            Arc::new(StringArray::from_iter_values(b.0.iter())),
            Arc::new(Int64Array::from(b.1.clone())),
            Arc::new(Int64Array::from(b.2.clone())),
            Arc::new(Int64Array::from(b.3.clone())),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                run_id, n,
            ))),
        ],
    )
    .map_err(|e| Error::Write {
        path: "eth_clusters".into(),
        reason: e.to_string(),
    })
}
