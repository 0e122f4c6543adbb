//! Taint against independent oracles written straight from the definitions on a toy
//! chain: poison against a plain BFS, haircut against a sequential per-transaction pass
//! in chain order, fifo against a sequential satoshi-range pass. Hop-limited runs are
//! checked against the same passes repeated per hop budget.

use std::collections::{BTreeMap, HashSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::testing::gpu;

#[derive(Clone, Debug)]
struct ToyTx {
    /// (tx, vout) spent.
    inputs: Vec<(usize, usize)>,
    /// (value, address).
    outputs: Vec<(i64, Option<usize>)>,
}

struct Toy {
    txs: Vec<ToyTx>,
    addresses: usize,
}

fn toy(seed: u64, n: usize, addresses: usize) -> Toy {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut utxos: Vec<(usize, usize, i64)> = Vec::new();
    let mut txs = Vec::with_capacity(n);
    for t in 0..n {
        let coinbase = utxos.len() < 4 || rng.random_ratio(1, 12);
        let mut inputs = Vec::new();
        let mut total = 0;
        if coinbase {
            total = rng.random_range(100_000..100_000_000i64);
        } else {
            for _ in 0..rng.random_range(1..=4usize).min(utxos.len()) {
                let (tx, vout, v) = utxos.swap_remove(rng.random_range(0..utxos.len()));
                inputs.push((tx, vout));
                total += v;
            }
        }
        let fee = if coinbase {
            0
        } else {
            rng.random_range(0..=total.min(5_000))
        };
        let mut left = total - fee;
        let k = rng.random_range(1..=4usize);
        let mut outputs = Vec::with_capacity(k);
        for i in 0..k {
            let v = if i + 1 == k {
                left
            } else {
                rng.random_range(0..=left)
            };
            left -= v;
            // Now and then a data output: no address, no value.
            let out = if rng.random_ratio(1, 25) {
                (0, None)
            } else {
                (v, Some(rng.random_range(0..addresses)))
            };
            left += v - out.0;
            outputs.push(out);
        }
        for (vout, &(v, a)) in outputs.iter().enumerate() {
            if a.is_some() {
                utxos.push((t, vout, v));
            }
        }
        txs.push(ToyTx { inputs, outputs });
    }
    Toy { txs, addresses }
}

fn graph(toy: &Toy) -> SpendGraph {
    let names: Vec<String> = (0..toy.addresses).map(|a| format!("addr{a}")).collect();
    let mut g = SpendGraph::new();
    for (t, tx) in toy.txs.iter().enumerate() {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(t as u64).to_be_bytes());
        let outs: Vec<(i64, Option<&str>)> = tx
            .outputs
            .iter()
            .map(|&(v, a)| (v, a.map(|a| names[a].as_str())))
            .collect();
        let ins: Vec<Option<(u32, u32)>> = tx
            .inputs
            .iter()
            .map(|&(s, v)| Some((s as u32, v as u32)))
            .collect();
        g.push_tx(id, &outs, &ins).expect("valid toy chain");
    }
    g
}

/// Output ids of the toy chain, as the graph numbers them.
fn out_ids(toy: &Toy) -> Vec<Vec<u32>> {
    let mut next = 0u32;
    toy.txs
        .iter()
        .map(|tx| {
            let ids: Vec<u32> = (next..next + tx.outputs.len() as u32).collect();
            next += tx.outputs.len() as u32;
            ids
        })
        .collect()
}

struct Case {
    seeds: HashSet<(usize, usize)>,
    stops: HashSet<usize>,
    max_hops: Option<u32>,
    min_value: i64,
}

/// Oracle result: (tx, vout) → (hop, tainted sats as f64).
type Expect = BTreeMap<(usize, usize), (u32, f64)>;

fn value(toy: &Toy, (t, v): (usize, usize)) -> i64 {
    toy.txs[t].outputs[v].0
}

fn passes(toy: &Toy, c: &Case, o: (usize, usize)) -> bool {
    c.seeds.contains(&o)
        || toy.txs[o.0].outputs[o.1]
            .1
            .is_none_or(|a| !c.stops.contains(&a))
}

/// Poison forward: BFS over spends from the seed outputs.
fn bfs_forward(toy: &Toy, c: &Case) -> Expect {
    let mut spender = BTreeMap::new();
    for (t, tx) in toy.txs.iter().enumerate() {
        for &o in &tx.inputs {
            spender.insert(o, t);
        }
    }
    let mut out = Expect::new();
    let mut q = VecDeque::new();
    let mut seeds: Vec<_> = c.seeds.iter().copied().collect();
    seeds.sort();
    for o in seeds {
        out.insert(o, (0, value(toy, o) as f64));
        q.push_back(o);
    }
    let limit = c.max_hops.unwrap_or(u32::MAX);
    let mut tx_hop = vec![u32::MAX; toy.txs.len()];
    while let Some(o) = q.pop_front() {
        let hop = out[&o].0;
        if hop >= limit || !passes(toy, c, o) || value(toy, o) < c.min_value {
            continue;
        }
        let Some(&t) = spender.get(&o) else { continue };
        if tx_hop[t] != u32::MAX {
            continue;
        }
        tx_hop[t] = hop + 1;
        for (v, &(val, _)) in toy.txs[t].outputs.iter().enumerate() {
            out.entry((t, v)).or_insert_with(|| {
                q.push_back((t, v));
                (hop + 1, val as f64)
            });
        }
    }
    out
}

/// Haircut forward, one pass in chain order per hop budget k (k = 1..=H; without a
/// limit, until nothing changes): f_k(t) = min(1, Σ value(in)/total · f_{k-1}(in)).
fn haircut_forward(toy: &Toy, c: &Case, poison: bool) -> Expect {
    let n = toy.txs.len();
    // Fraction of each output under budget k-1 and k; seeds are 1 under every budget.
    let frac = |prev: &[f64], o: (usize, usize)| {
        if c.seeds.contains(&o) { 1.0 } else { prev[o.0] }
    };
    let mut prev = vec![0.0f64; n];
    let mut hop = vec![u32::MAX; n];
    let limit = c.max_hops.unwrap_or(u32::MAX);
    let mut k = 0;
    while k < limit {
        k += 1;
        let mut next = vec![0.0f64; n];
        for (t, tx) in toy.txs.iter().enumerate() {
            let total: i64 = tx.inputs.iter().map(|&o| value(toy, o)).sum();
            let mut acc = 0.0;
            for &o in &tx.inputs {
                let f = frac(&prev, o);
                if f > 0.0 && passes(toy, c, o) && f * value(toy, o) as f64 >= c.min_value as f64 {
                    let w = if poison {
                        1.0
                    } else if total > 0 {
                        value(toy, o) as f64 / total as f64
                    } else {
                        0.0
                    };
                    acc += w * f;
                }
            }
            next[t] = acc.min(1.0);
            if next[t] > 0.0 && hop[t] == u32::MAX {
                hop[t] = k;
            }
        }
        let done = next == prev;
        prev = next;
        if done {
            break;
        }
    }
    let mut out = Expect::new();
    for (t, tx) in toy.txs.iter().enumerate() {
        for (v, &(val, _)) in tx.outputs.iter().enumerate() {
            if c.seeds.contains(&(t, v)) {
                out.insert((t, v), (0, val as f64));
            } else if hop[t] != u32::MAX {
                out.insert((t, v), (hop[t], prev[t] * val as f64));
            }
        }
    }
    out
}

/// Fifo forward, satoshi ranges: input i covers [a_i, a_i + v_i) of the line, output j
/// covers [b_j, b_j + u_j); output j gets Σ_i tainted_i · |overlap| / v_i.
fn fifo_forward(toy: &Toy, c: &Case) -> Expect {
    let ids: Vec<(usize, usize)> = toy
        .txs
        .iter()
        .enumerate()
        .flat_map(|(t, tx)| (0..tx.outputs.len()).map(move |v| (t, v)))
        .collect();
    let index: BTreeMap<(usize, usize), usize> =
        ids.iter().enumerate().map(|(i, &o)| (o, i)).collect();
    let seed_sats = |o: (usize, usize)| value(toy, o) as f64;
    let mut prev: Vec<f64> = ids
        .iter()
        .map(|&o| {
            if c.seeds.contains(&o) {
                seed_sats(o)
            } else {
                0.0
            }
        })
        .collect();
    let mut hop: Vec<u32> = ids
        .iter()
        .map(|o| if c.seeds.contains(o) { 0 } else { u32::MAX })
        .collect();
    let limit = c.max_hops.unwrap_or(u32::MAX);
    let mut k = 0;
    while k < limit {
        k += 1;
        let mut next = prev.clone();
        for (t, tx) in toy.txs.iter().enumerate() {
            let mut a = 0i64;
            let ins: Vec<(i64, i64, f64)> = tx
                .inputs
                .iter()
                .map(|&o| {
                    let v = value(toy, o);
                    let tainted = prev[index[&o]];
                    let carries =
                        passes(toy, c, o) && tainted > 0.0 && tainted >= c.min_value as f64;
                    let r = (a, a + v, if carries { tainted } else { 0.0 });
                    a += v;
                    r
                })
                .collect();
            let mut b = 0i64;
            for (v, &(u, _)) in tx.outputs.iter().enumerate() {
                let (lo, hi) = (b, b + u);
                b += u;
                let o = (t, v);
                if c.seeds.contains(&o) {
                    continue;
                }
                let mut sum = 0.0;
                for &(s, e, tainted) in &ins {
                    let overlap = (hi.min(e) - lo.max(s)).max(0);
                    if overlap > 0 && tainted > 0.0 {
                        sum += tainted * overlap as f64 / (e - s) as f64;
                    }
                }
                let i = index[&o];
                next[i] = sum.min(u as f64);
                if next[i] > 0.0 && hop[i] == u32::MAX {
                    hop[i] = k;
                }
            }
        }
        let done = next == prev;
        prev = next;
        if done {
            break;
        }
    }
    ids.iter()
        .enumerate()
        .filter(|&(i, _)| hop[i] != u32::MAX)
        .map(|(i, &o)| (o, (hop[i], prev[i])))
        .collect()
}

/// Haircut (or poison) backward, in reverse chain order per budget:
/// b_k(t) = min(1, Σ_outputs value/total_out · B_{k-1}(output)), B(seed) = 1,
/// B(output) = b(spender).
fn haircut_backward(toy: &Toy, c: &Case, poison: bool) -> Expect {
    let n = toy.txs.len();
    let mut spender = BTreeMap::new();
    for (t, tx) in toy.txs.iter().enumerate() {
        for &o in &tx.inputs {
            spender.insert(o, t);
        }
    }
    let mut prev = vec![0.0f64; n];
    let mut hop = vec![u32::MAX; n];
    let limit = c.max_hops.unwrap_or(u32::MAX);
    let mut k = 0;
    while k < limit {
        k += 1;
        let mut next = vec![0.0f64; n];
        for t in (0..n).rev() {
            let tx = &toy.txs[t];
            let total: i64 = tx.outputs.iter().map(|o| o.0).sum();
            let mut acc = 0.0;
            for (v, &(u, _)) in tx.outputs.iter().enumerate() {
                let o = (t, v);
                let b = if c.seeds.contains(&o) {
                    1.0
                } else if !passes(toy, c, o) {
                    0.0
                } else {
                    spender.get(&o).map_or(0.0, |&s| prev[s])
                };
                if b > 0.0 && b * u as f64 >= c.min_value as f64 {
                    let w = if poison {
                        1.0
                    } else if total > 0 {
                        u as f64 / total as f64
                    } else {
                        0.0
                    };
                    acc += w * b;
                }
            }
            next[t] = acc.min(1.0);
            if next[t] > 0.0 && hop[t] == u32::MAX {
                hop[t] = k;
            }
        }
        let done = next == prev;
        prev = next;
        if done {
            break;
        }
    }
    let mut out = Expect::new();
    for (t, tx) in toy.txs.iter().enumerate() {
        if hop[t] != u32::MAX {
            for &o in &tx.inputs {
                out.insert(o, (hop[t], prev[t] * value(toy, o) as f64));
            }
        }
    }
    for &o in &c.seeds {
        out.insert(o, (0, value(toy, o) as f64));
    }
    out
}

/// Fifo backward: an input's stretch sends back the tainted share of the outputs it
/// overlaps: B(in_i) = Σ_j |overlap_ij| / v_i · B(out_j).
fn fifo_backward(toy: &Toy, c: &Case) -> Expect {
    let mut prev: BTreeMap<(usize, usize), f64> = c.seeds.iter().map(|&o| (o, 1.0)).collect();
    let mut hop: BTreeMap<(usize, usize), u32> = c.seeds.iter().map(|&o| (o, 0)).collect();
    let limit = c.max_hops.unwrap_or(u32::MAX);
    let mut k = 0;
    while k < limit {
        k += 1;
        let mut next = prev.clone();
        for (t, tx) in toy.txs.iter().enumerate().rev() {
            let mut b = 0i64;
            let outs: Vec<(i64, i64, f64)> = tx
                .outputs
                .iter()
                .enumerate()
                .map(|(v, &(u, _))| (v, u))
                .map(|(v, u)| {
                    let o = (t, v);
                    let f = prev.get(&o).copied().unwrap_or(0.0);
                    let carries =
                        passes(toy, c, o) && f > 0.0 && f * u as f64 >= c.min_value as f64;
                    let r = (b, b + u, if carries { f } else { 0.0 });
                    b += u;
                    r
                })
                .collect();
            let mut a = 0i64;
            for &o in &tx.inputs {
                let v = value(toy, o);
                let (lo, hi) = (a, a + v);
                a += v;
                if c.seeds.contains(&o) {
                    continue;
                }
                let mut sum = 0.0;
                for &(s, e, f) in &outs {
                    let overlap = (hi.min(e) - lo.max(s)).max(0);
                    if overlap > 0 && f > 0.0 {
                        sum += f * overlap as f64 / v as f64;
                    }
                }
                if sum > 0.0 {
                    next.insert(o, sum.min(1.0));
                    hop.entry(o).or_insert(k);
                }
            }
        }
        let done = next == prev;
        prev = next;
        if done {
            break;
        }
    }
    prev.iter()
        .filter(|&(_, &f)| f > 0.0)
        .map(|(&o, &f)| (o, (hop[&o], f * value(toy, o) as f64)))
        .collect()
}

fn oracle(toy: &Toy, c: &Case, policy: Policy, dir: Direction) -> Expect {
    match (policy, dir) {
        (Policy::Poison, Direction::Forward) => bfs_forward(toy, c),
        (Policy::Poison, Direction::Backward) => haircut_backward(toy, c, true),
        (Policy::Haircut, Direction::Forward) => haircut_forward(toy, c, false),
        (Policy::Haircut, Direction::Backward) => haircut_backward(toy, c, false),
        (Policy::Fifo, Direction::Forward) => fifo_forward(toy, c),
        (Policy::Fifo, Direction::Backward) => fifo_backward(toy, c),
    }
}

fn query(toy: &Toy, g: &SpendGraph, c: &Case, policy: Policy, direction: Direction) -> Query {
    let ids = out_ids(toy);
    let mut seed_outputs: Vec<u32> = c.seeds.iter().map(|&(t, v)| ids[t][v]).collect();
    seed_outputs.sort_unstable();
    Query {
        policy,
        direction,
        max_hops: c.max_hops,
        min_value: c.min_value,
        seed_outputs,
        stop_addresses: c
            .stops
            .iter()
            .filter_map(|a| g.address_id(&format!("addr{a}")))
            .collect(),
        blocked_txs: HashSet::new(),
    }
}

fn compare(name: &str, toy: &Toy, got: &TaintResult, expect: &Expect) {
    let ids = out_ids(toy);
    let by_id: BTreeMap<u32, (usize, usize)> = ids
        .iter()
        .enumerate()
        .flat_map(|(t, v)| v.iter().enumerate().map(move |(j, &id)| (id, (t, j))))
        .collect();
    let got: Expect = got
        .rows
        .iter()
        .map(|r| (by_id[&r.output], (r.hop, r.tainted_value as f64)))
        .collect();
    let keys = |m: &Expect| m.iter().map(|(k, v)| (*k, v.0)).collect::<Vec<_>>();
    assert_eq!(keys(&got), keys(expect), "{name}: tainted outputs and hops");
    for (o, (_, want)) in expect {
        let have = got[o].1;
        assert!(
            (have - want).abs() <= 1.0 + 1e-5 * want.abs(),
            "{name}: output {o:?}: tainted {have}, oracle {want}"
        );
    }
}

fn cases(toy: &Toy, rng: &mut ChaCha8Rng) -> Vec<(String, Case)> {
    let outputs: Vec<(usize, usize)> = toy
        .txs
        .iter()
        .enumerate()
        .flat_map(|(t, tx)| (0..tx.outputs.len()).map(move |v| (t, v)))
        .collect();
    let mut pick = |k: usize, upto: usize| -> HashSet<(usize, usize)> {
        (0..k)
            .map(|_| outputs[rng.random_range(0..upto.min(outputs.len()))])
            .collect()
    };
    let early = pick(6, 40);
    let spread = pick(20, outputs.len());
    let stops: HashSet<usize> = (0..toy.addresses).step_by(9).collect();
    vec![
        (
            "early seeds".into(),
            Case {
                seeds: early.clone(),
                stops: HashSet::new(),
                max_hops: None,
                min_value: 0,
            },
        ),
        (
            "spread seeds, 3 hops".into(),
            Case {
                seeds: spread.clone(),
                stops: HashSet::new(),
                max_hops: Some(3),
                min_value: 0,
            },
        ),
        (
            "stop addresses".into(),
            Case {
                seeds: early.clone(),
                stops: stops.clone(),
                max_hops: None,
                min_value: 0,
            },
        ),
        (
            "min value, 8 hops".into(),
            Case {
                seeds: spread,
                stops,
                max_hops: Some(8),
                min_value: 250_000,
            },
        ),
        (
            "zero hops".into(),
            Case {
                seeds: early,
                stops: HashSet::new(),
                max_hops: Some(0),
                min_value: 0,
            },
        ),
        (
            "no seeds".into(),
            Case {
                seeds: HashSet::new(),
                stops: HashSet::new(),
                max_hops: None,
                min_value: 0,
            },
        ),
    ]
}

const POLICIES: [Policy; 3] = [Policy::Poison, Policy::Haircut, Policy::Fifo];
const DIRECTIONS: [Direction; 2] = [Direction::Forward, Direction::Backward];

#[test]
fn every_policy_matches_its_oracle_on_the_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut covered = 0usize;
    for (seed, n, addrs) in [(1u64, 60usize, 20usize), (2, 400, 150), (3, 1500, 200)] {
        let toy = toy(seed, n, addrs);
        let g = graph(&toy);
        for (name, c) in cases(&toy, &mut rng) {
            for policy in POLICIES {
                for dir in DIRECTIONS {
                    let q = query(&toy, &g, &c, policy, dir);
                    let got = run(&Backend::Cpu, &g, &q).expect("runs");
                    let label = format!("chain {seed}, {name}, {policy:?} {dir:?}");
                    let expect = oracle(&toy, &c, policy, dir);
                    compare(&label, &toy, &got, &expect);
                    // Taint must actually travel: rows beyond the seeds, and at hop ≥ 2.
                    let beyond = expect.values().filter(|(h, _)| *h >= 2).count();
                    // (Backward from the earliest outputs there is nowhere to go.)
                    let travels = dir == Direction::Forward || name.starts_with("spread");
                    if seed >= 2 && travels && c.max_hops != Some(0) && !c.seeds.is_empty() {
                        assert!(beyond > 0, "{label}: nothing beyond hop 1");
                    }
                    covered += expect.len();
                }
            }
        }
    }
    assert!(covered > 10_000, "only {covered} tainted outputs checked");
}

#[test]
fn every_policy_agrees_on_gpu_and_cpu() {
    let Some(gpu) = gpu() else { return };
    let backend = Backend::Gpu(gpu);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let toy = toy(5, 1200, 300);
    let g = graph(&toy);
    for (name, c) in cases(&toy, &mut rng) {
        for policy in POLICIES {
            for dir in DIRECTIONS {
                let q = query(&toy, &g, &c, policy, dir);
                let cpu = run(&Backend::Cpu, &g, &q).expect("cpu");
                let on_gpu = run(&backend, &g, &q).expect("gpu");
                let label = format!("{name}, {policy:?} {dir:?}");
                assert_eq!(cpu.rows.len(), on_gpu.rows.len(), "{label}");
                for (a, b) in cpu.rows.iter().zip(&on_gpu.rows) {
                    assert_eq!((a.output, a.hop), (b.output, b.hop), "{label}");
                    let tol = 1e-5 * a.fraction.max(b.fraction) + 1e-6;
                    assert!(
                        (a.fraction - b.fraction).abs() <= tol,
                        "{label}: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn fifo_takes_stretches_in_order_and_fees_take_the_tail() {
    // Inputs 60 (tainted) and 40 (clean); outputs 50, 30, fee 20.
    let mut g = SpendGraph::new();
    g.push_tx([1; 32], &[(60, Some("dirty"))], &[]).expect("tx");
    g.push_tx([2; 32], &[(40, Some("clean"))], &[]).expect("tx");
    g.push_tx(
        [3; 32],
        &[(50, Some("a")), (30, Some("b"))],
        &[Some((0, 0)), Some((1, 0))],
    )
    .expect("tx");
    let seeds = seed_outputs(&g, &[g.address_id("dirty").expect("id")], &[]);
    let q = |policy| Query {
        policy,
        direction: Direction::Forward,
        max_hops: None,
        min_value: 0,
        seed_outputs: seeds.clone(),
        stop_addresses: HashSet::new(),
        blocked_txs: HashSet::new(),
    };
    let fifo = run(&Backend::Cpu, &g, &q(Policy::Fifo)).expect("fifo");
    let values: Vec<(u32, u32, i64)> = fifo
        .rows
        .iter()
        .map(|r| (r.output, r.hop, r.tainted_value))
        .collect();
    // The 50 output is wholly within the first 60; the 30 gets the remaining 10.
    assert_eq!(values, [(0, 0, 60), (2, 1, 50), (3, 1, 10)]);
    let haircut = run(&Backend::Cpu, &g, &q(Policy::Haircut)).expect("haircut");
    let values: Vec<(u32, i64)> = haircut
        .rows
        .iter()
        .map(|r| (r.output, r.tainted_value))
        .collect();
    // 60% of each output.
    assert_eq!(values, [(0, 60), (2, 30), (3, 18)]);
}

#[test]
fn unknown_inputs_and_wholly_tainted_merges() {
    // tx0, tx1, tx2: three seeds (1, 2 and 3 BTC); tx3 merges them into one output: its
    // shares 1/6 + 2/6 + 3/6 round to f32 one by one, and the output is still wholly
    // tainted. tx4 spends tx3's output after an input from before the indexed range
    // (unknown value): haircut leaves the unknown input out of the shares, fifo gives
    // it no stretch.
    let mut g = SpendGraph::new();
    for (i, v) in [100_000_000i64, 200_000_000, 300_000_000]
        .into_iter()
        .enumerate()
    {
        g.push_tx([i as u8; 32], &[(v, Some("scam"))], &[])
            .expect("tx");
    }
    g.push_tx(
        [3; 32],
        &[(599_990_000, Some("layer"))],
        &[Some((0, 0)), Some((1, 0)), Some((2, 0))],
    )
    .expect("tx");
    g.push_tx(
        [4; 32],
        &[(500_000_000, Some("a")), (99_980_000, Some("b"))],
        &[None, Some((3, 0))],
    )
    .expect("tx");
    let seeds = seed_outputs(&g, &[g.address_id("scam").expect("id")], &[]);
    for policy in POLICIES {
        let q = Query {
            policy,
            direction: Direction::Forward,
            max_hops: None,
            min_value: 0,
            seed_outputs: seeds.clone(),
            stop_addresses: HashSet::new(),
            blocked_txs: HashSet::new(),
        };
        let r = run(&Backend::Cpu, &g, &q).expect("runs");
        let rows: Vec<(u32, u32, f32, i64)> = r
            .rows
            .iter()
            .map(|t| (t.output, t.hop, t.fraction, t.tainted_value))
            .collect();
        let merged = rows.iter().find(|t| t.0 == 3).expect("merge output");
        assert_eq!(merged.3, 599_990_000, "{policy:?}: wholly tainted");
        assert_eq!(decimal(merged.2), 1.0, "{policy:?}");
        let a = rows.iter().find(|t| t.0 == 4).expect("output a");
        let b = rows.iter().find(|t| t.0 == 5).expect("output b");
        assert_eq!((a.1, b.1), (2, 2), "{policy:?}: hops");
        // Haircut and poison: the unknown input is left out, so both outputs are wholly
        // tainted. Fifo: the known input's stretch starts the line, so output a
        // (500 M) is tainted and b takes the remaining 99.99 M.
        assert_eq!((a.3, b.3), (500_000_000, 99_980_000), "{policy:?}");
    }
}

#[test]
fn denormal_fractions_count_as_nothing_on_both_paths() {
    // A chain of 1/1000 shares: after 13 hops the fraction is 1e-39 (a denormal).
    let n = 16u32;
    let mut p = Propagation {
        row_ptr: vec![0, 0],
        seeds: vec![0],
        ..Default::default()
    };
    for _ in 1..n {
        let v = p.row_ptr.len() as u32 - 2;
        p.src.push(v);
        p.weight.push(1e-3);
        p.gate.push(1.0);
        p.row_ptr.push(p.src.len() as u32);
    }
    let opts = crate::propagate::Options::default();
    let cpu = crate::propagate::propagate_cpu(&p, &opts);
    // 1e-30 and below is nothing: nodes 11.. stay unreached.
    assert!(
        cpu.hop[10] == 10 && cpu.hop[11] == crate::propagate::UNREACHED,
        "{:?}",
        cpu.hop
    );
    if let Some(g) = gpu() {
        let on_gpu = crate::propagate::propagate(&Backend::Gpu(g), &p, &opts).expect("gpu");
        assert_eq!(on_gpu.hop, cpu.hop);
    }
}

/// A hop-limited run must not hide money: an exchange reached within the limit through a
/// Whirlpool mix (a fifth of one premix tainted) also receives, along a longer peel
/// chain, nearly all of the seed's main coin. The exit reports both amounts, and the part
/// that arrived only through the mix.
#[test]
fn exits_report_every_path_and_the_coinjoin_share() {
    let mut g = SpendGraph::new();
    let id = |n: u8| [n; 32];
    // tx0: the scam's premix output and four users' premix outputs (0.01 BTC pool plus
    // the mix's miner fee), and the scam's main coin.
    let mut outs: Vec<(i64, Option<&str>)> = vec![(1_000_100, Some("scam_premix"))];
    let users = ["u1", "u2", "u3", "u4"];
    outs.extend(users.iter().map(|u| (1_000_100, Some(*u))));
    outs.push((50_000_000, Some("scam_main")));
    g.push_tx(id(0), &outs, &[None]).expect("tx0");
    // tx1: the mix, five inputs, five equal outputs to fresh addresses.
    let mixed = ["m0", "m1", "m2", "m3", "m4"];
    let mix_outs: Vec<(i64, Option<&str>)> = mixed.iter().map(|m| (1_000_000, Some(*m))).collect();
    let ins: Vec<Option<(u32, u32)>> = (0..5).map(|v| Some((0, v))).collect();
    g.push_tx(id(1), &mix_outs, &ins).expect("mix");
    // tx2: one postmix output pays the exchange (hop 2).
    g.push_tx(id(2), &[(999_000, Some("exchange"))], &[Some((1, 0))])
        .expect("postmix");
    // tx3..tx6: a peel chain from the main coin; tx7 pays the exchange at hop 5.
    let mut prev = (0u32, 5u32);
    let mut left = 50_000_000i64;
    for k in 0..4u8 {
        left -= 1_000_000;
        let next = format!("peel{k}");
        let shop = format!("shop{k}");
        g.push_tx(
            id(3 + k),
            &[(left, Some(&next)), (990_000, Some(&shop))],
            &[Some(prev)],
        )
        .expect("peel");
        prev = (3 + u32::from(k), 0);
    }
    g.push_tx(id(7), &[(left - 10_000, Some("exchange"))], &[Some(prev)])
        .expect("cash-out");
    let mixes = job::coinjoin_mixes(&g, &crate::coinjoin::Detectors::default());
    assert_eq!(
        mixes.keys().copied().collect::<Vec<_>>(),
        [1],
        "the mix is detected"
    );
    let labels = vec![(
        "exchange".to_string(),
        "Exchange A".to_string(),
        "exchange".to_string(),
    )];
    let job = |hops: Option<u32>| job::TaintJob {
        max_hops: hops,
        with_flows: true,
        seed_addresses: vec!["scam_premix".into(), "scam_main".into()],
        ..Default::default()
    };
    let limited = job::run_on_graph(&g, &Backend::Cpu, &job(Some(3)), &labels).expect("run");
    let full = job::run_on_graph(&g, &Backend::Cpu, &job(None), &labels).expect("run");
    let (e, f) = (&limited.exits[0], &full.exits[0]);
    assert_eq!(e.address, "exchange");
    // Within three hops only the mix's fifth arrived; along every path the peel chain's
    // coin too, as the unlimited run says.
    let fifth = (999_000f64 * 0.2).round() as i64;
    assert!((e.tainted_value - fifth).abs() <= 1, "{e:?}");
    assert_eq!(e.all_paths_value, f.tainted_value, "{e:?} vs {f:?}");
    assert_eq!(f.all_paths_value, f.tainted_value);
    assert!(e.all_paths_value > 45_000_000, "{e:?}");
    assert_eq!(
        e.coinjoin_value, e.tainted_value,
        "only the mix's share came through it"
    );
    assert_eq!((e.min_hop, e.outputs), (2, 1), "{e:?}");
    assert_eq!(limited.coinjoins_passed, 1);
    // The postmix output and its flow are marked as moved by the mix.
    let postmix = limited
        .outputs
        .iter()
        .find(|o| o.address.as_deref() == Some("m0"))
        .expect("m0 tainted");
    assert_eq!(postmix.coinjoin, Some("whirlpool"));
    assert!(
        limited
            .flows
            .iter()
            .any(|f| f.to == "m0" && f.coinjoin == Some("whirlpool")),
        "{:?}",
        limited.flows
    );
    // An exit reached only beyond the limit is still listed, with nothing within it.
    let two = job::run_on_graph(&g, &Backend::Cpu, &job(Some(1)), &labels).expect("run");
    let x = &two.exits[0];
    assert_eq!((x.tainted_value, x.outputs), (0, 0), "{x:?}");
    assert_eq!(x.all_paths_value, f.tainted_value);
}
