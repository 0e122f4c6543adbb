//! Account taint against independent oracles (one sequential pass in chain order) and the
//! GPU against the CPU, on random and adversarial transfer graphs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use num_bigint::BigUint;

use super::*;
use crate::device::Backend;

fn random_graph(seed: u64, nodes: u32, transfers: usize) -> TransferGraph {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut g = TransferGraph {
        nodes,
        ..Default::default()
    };
    for _ in 0..transfers {
        g.src.push(r.random_range(0..nodes));
        g.dst.push(r.random_range(0..nodes));
        // Amounts over many orders of magnitude, some zero.
        let a = if r.random_bool(0.05) {
            0.0
        } else {
            10f32.powf(r.random_range(0.0..12.0)).round()
        };
        g.amount.push(a);
    }
    g
}

/// Poison by one pass in chain order: an address is tainted from its first tainted
/// arrival; `hop_now` is the fewest transfers over paths that arrived so far.
fn poison_oracle(
    g: &TransferGraph,
    seeds: &[u32],
    stops: &[u32],
    opts: &Options,
) -> (Vec<u32>, Vec<u32>) {
    let n = g.nodes as usize;
    let mut arrival = vec![UNREACHED; n];
    let mut hop = vec![UNREACHED; n];
    for &s in seeds {
        arrival[s as usize] = 0;
        hop[s as usize] = 0;
    }
    let limit = opts.max_hops.unwrap_or(u32::MAX);
    for e in 0..g.src.len() {
        let (s, d) = (g.src[e] as usize, g.dst[e] as usize);
        if hop[s] == UNREACHED || (stops.contains(&(s as u32)) && !seeds.contains(&(s as u32))) {
            continue;
        }
        if g.amount[e] < opts.min_value || hop[s] + 1 > limit {
            continue;
        }
        if arrival[d] == UNREACHED {
            arrival[d] = e as u32 + 1;
        }
        hop[d] = hop[d].min(hop[s] + 1);
    }
    (arrival, hop)
}

/// The pool by one pass in chain order, no hop limit: exact balances (big integers) and
/// each pool's tainted share in f64, never computed by subtraction.
fn pool_oracle(
    units: &[BigUint],
    src: &[u32],
    dst: &[u32],
    nodes: u32,
    seeds: &[u32],
    stops: &[u32],
    min_value: f64,
) -> Vec<f64> {
    let n = nodes as usize;
    let mut b = vec![BigUint::ZERO; n];
    let mut f = vec![0f64; n];
    let seed = |v: usize| seeds.contains(&(v as u32));
    let stop = |v: usize| stops.contains(&(v as u32)) && !seed(v);
    let ratio = |x: &BigUint, y: &BigUint| {
        if *y == BigUint::ZERO {
            0.0
        } else {
            big_f64(x) / big_f64(y)
        }
    };
    let mut out = vec![0f64; src.len()];
    for e in 0..src.len() {
        let (s, d, a) = (src[e] as usize, dst[e] as usize, &units[e]);
        if b[s] < *a {
            f[s] *= ratio(&b[s], a);
            b[s] = a.clone();
        }
        let mut share = if seed(s) {
            1.0
        } else if stop(s) {
            0.0
        } else {
            f[s]
        };
        if *a == BigUint::ZERO || big_f64(a) * share < min_value {
            share = 0.0;
        }
        out[e] = big_f64(a) * share;
        let nb = &b[s] - a;
        if nb == BigUint::ZERO {
            f[s] = 0.0;
        } else if share == 0.0 && !stop(s) {
            f[s] = (f[s] * ratio(&b[s], &nb)).min(1.0);
        }
        b[s] = nb;
        let sum = &b[d] + a;
        if sum != BigUint::ZERO {
            f[d] = (f[d] * ratio(&b[d], &sum) + share * ratio(a, &sum)).min(1.0);
        }
        b[d] = sum;
        if seed(s) {
            f[s] = 1.0;
        }
        if seed(d) {
            f[d] = 1.0;
        }
    }
    out
}

fn big_f64(x: &BigUint) -> f64 {
    x.to_u64_digits()
        .iter()
        .rev()
        .fold(0.0, |acc, &d| acc * 18_446_744_073_709_551_616.0 + d as f64)
}

fn big(u: &frac::U256) -> BigUint {
    BigUint::from_slice(u)
}

fn f32_oracle(g: &TransferGraph, seeds: &[u32], stops: &[u32], min_value: f64) -> Vec<f64> {
    let units: Vec<BigUint> = g.pool_units().iter().map(big).collect();
    pool_oracle(&units, &g.src, &g.dst, g.nodes, seeds, stops, min_value)
}

fn pool_opts(max_hops: Option<u32>, min_value: f64) -> PoolOptions {
    PoolOptions {
        max_hops,
        min_value: frac::Frac::from_f64(min_value),
    }
}

/// Within 1e-6 relative: what `ferret taint eth` promises for haircut amounts.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

#[test]
fn poison_equals_the_sequential_pass() {
    for seed in 0..40u64 {
        let g = random_graph(seed, 30 + seed as u32, 200);
        let seeds = [0u32, 7];
        let stops = [3u32, 4, 7];
        for opts in [
            Options::default(),
            Options {
                max_hops: Some(2),
                min_value: 0.0,
            },
            Options {
                max_hops: None,
                min_value: 1e6,
            },
            Options {
                max_hops: Some(1),
                min_value: 100.0,
            },
        ] {
            let f = flags(g.nodes, &seeds, &stops).expect("flags");
            let (arrival, hop) = poison_oracle(&g, &seeds, &stops, &opts);
            // Both CPU paths: the one-pass walk and the step-by-step twin of the shader.
            let (one_pass, steps) = (poison_cpu(&g, &f, &opts), poison_jacobi_cpu(&g, &f, &opts));
            for r in [&one_pass, &steps] {
                assert_eq!(r.arrival, arrival, "graph {seed} {opts:?}");
                // Hop-limited runs stop at the limit; reached addresses keep their hops.
                assert_eq!(r.hop, hop, "graph {seed} {opts:?}");
            }
            // The one pass reports the steps the Jacobi iteration takes.
            assert_eq!(one_pass.steps, steps.steps, "graph {seed} {opts:?}");
        }
    }
}

#[test]
fn taint_never_travels_back_in_time() {
    // 0 → 1 at time 1, 1 → 2 at time 2, then 2 → 3 before 3's sender was tainted? No: a
    // transfer 3 → 4 happens first, then 0 → 3: 4 stays clean.
    let g = TransferGraph {
        nodes: 5,
        src: vec![3, 0, 1, 0],
        dst: vec![4, 1, 2, 3],
        amount: vec![5.0; 4],
        ..Default::default()
    };
    let f = flags(5, &[0], &[]).expect("flags");
    let r = poison_cpu(&g, &f, &Options::default());
    assert_eq!(r.arrival, [0, 2, 3, 4, UNREACHED]);
    assert_eq!(r.hop, [0, 1, 2, 1, UNREACHED]);
    let p = pool_cpu(&g, &f, &PoolOptions::default());
    assert_eq!(p.tainted(&g), [0.0, 5.0, 5.0, 5.0]);
}

#[test]
fn pool_equals_the_sequential_pass() {
    for seed in 0..40u64 {
        let g = random_graph(100 + seed, 25 + seed as u32, 300);
        let seeds = [1u32, 2];
        let stops = [5u32, 2];
        for min_value in [0.0f64, 1e5] {
            let f = flags(g.nodes, &seeds, &stops).expect("flags");
            let r = pool_cpu(&g, &f, &pool_opts(None, min_value));
            let got = r.tainted(&g);
            let want = f32_oracle(&g, &seeds, &stops, min_value);
            for e in 0..g.src.len() {
                // Near the minimum the two passes may fall on either side of it.
                let near_min = (want[e] - min_value).abs() < 1e-6 * want[e].max(1.0);
                assert!(
                    near_min || close(got[e], want[e]),
                    "graph {seed} min {min_value} transfer {e}: {} vs {}",
                    got[e],
                    want[e]
                );
            }
        }
    }
}

#[test]
fn pool_shares_follow_the_pool() {
    // 0 (seed) pays 1 ten; 9 pays 1 thirty (clean); 1 pays 2 twenty: a quarter tainted.
    let g = TransferGraph {
        nodes: 10,
        src: vec![0, 9, 1, 1],
        dst: vec![1, 1, 2, 3],
        amount: vec![10.0, 30.0, 20.0, 100.0],
        ..Default::default()
    };
    let f = flags(10, &[0], &[]).expect("flags");
    let p = pool_cpu(&g, &f, &PoolOptions::default());
    let x = p.tainted(&g);
    assert_eq!(x[..3], [10.0, 0.0, 5.0]);
    // 1 holds 20 with 5 tainted; paying 100 (80 more than the tables show arriving) takes
    // the 5 along, the rest clean.
    assert!(close(x[3], 5.0), "{}", x[3]);
    assert_eq!(
        p.hop,
        [
            0, 1, 2, 2, UNREACHED, UNREACHED, UNREACHED, UNREACHED, UNREACHED, UNREACHED
        ]
    );
    // One hop: only the seed's own transfers.
    let one = pool_cpu(&g, &f, &pool_opts(Some(1), 0.0));
    assert_eq!(one.tainted(&g), [10.0, 0.0, 0.0, 0.0]);
    // Backward from 2: reversed graph, 1 then 0 and 9 funded it in proportion.
    let r = g.reversed();
    let back = pool_cpu(
        &r,
        &flags(10, &[2], &[]).expect("flags"),
        &PoolOptions::default(),
    )
    .tainted(&r);
    // Reversed edges: [3→1 (100), 2→1 (20), 1→9 (30), 1→0 (10)]: 1 held 120, 20 of it
    // tainted, when it paid 9 and 0.
    assert_eq!(back[1], 20.0);
    assert!(
        close(back[2], 5.0) && close(back[3], 10.0 / 6.0),
        "{back:?}"
    );
}

fn gpu_backend() -> Option<Backend> {
    crate::testing::gpu().map(Backend::Gpu)
}

#[test]
fn gpu_equals_cpu() {
    let Some(gpu) = gpu_backend() else {
        return;
    };
    let mut cases: Vec<TransferGraph> = (0..12)
        .map(|s| random_graph(500 + s, 40 + 20 * s as u32, 2_000))
        .collect();
    // Adversarial: empty, a single self-loop, a long chain, a star.
    cases.push(TransferGraph {
        nodes: 3,
        ..Default::default()
    });
    cases.push(TransferGraph {
        nodes: 1,
        src: vec![0],
        dst: vec![0],
        amount: vec![1.0],
        ..Default::default()
    });
    let chain = 300u32;
    cases.push(TransferGraph {
        nodes: chain + 1,
        src: (0..chain).collect(),
        dst: (1..=chain).collect(),
        amount: vec![3.0; chain as usize],
        ..Default::default()
    });
    cases.push(TransferGraph {
        nodes: 500,
        src: (0..2000)
            .map(|i| if i % 2 == 0 { 0 } else { 1 + i % 499 })
            .collect(),
        dst: (0..2000)
            .map(|i| if i % 2 == 0 { 1 + i % 499 } else { 0 })
            .collect(),
        amount: (0..2000).map(|i| 1.0 + i as f32).collect(),
        ..Default::default()
    });
    cases.extend((0..4).map(|s| u256_graph(900 + s, 30, 400)));
    for (i, g) in cases.iter().enumerate() {
        let seeds: Vec<u32> = (0..g.nodes.min(2)).collect();
        let stops: Vec<u32> = (0..g.nodes).filter(|v| v % 11 == 5).collect();
        let f = flags(g.nodes, &seeds, &stops).expect("flags");
        for opts in [
            Options::default(),
            Options {
                max_hops: Some(3),
                min_value: 0.0,
            },
            Options {
                max_hops: None,
                min_value: 1e4,
            },
        ] {
            for graph in [g.clone(), g.reversed()] {
                let a = poison(&gpu, &graph, &f, &opts).expect("gpu poison");
                let c = poison_jacobi_cpu(&graph, &f, &opts);
                assert_eq!(a, c, "case {i} {opts:?}");
                let one_pass = poison_cpu(&graph, &f, &opts);
                assert_eq!(
                    (&a.arrival, &a.hop),
                    (&one_pass.arrival, &one_pass.hop),
                    "case {i} {opts:?}"
                );
                let popts = pool_opts(opts.max_hops, f64::from(opts.min_value));
                let p = pool(&gpu, &graph, &f, &popts).expect("gpu pool");
                let c = pool_cpu(&graph, &f, &popts);
                // The same integer arithmetic: the same bits.
                assert_eq!(p, c, "case {i} {opts:?}");
            }
        }
    }
}

#[test]
fn bad_graphs_are_refused() {
    let g = TransferGraph {
        nodes: 2,
        src: vec![0],
        dst: vec![5],
        amount: vec![1.0],
        ..Default::default()
    };
    let f = vec![0; 2];
    let err = poison(&Backend::Cpu, &g, &f, &Options::default()).expect_err("bad id");
    assert!(err.to_string().contains("outside 0..2"), "{err}");
    let g = TransferGraph {
        nodes: 2,
        src: vec![0],
        dst: vec![1],
        amount: vec![f32::NAN],
        ..Default::default()
    };
    assert!(pool(&Backend::Cpu, &g, &f, &PoolOptions::default()).is_err());
    let g = TransferGraph {
        nodes: 2,
        src: vec![0],
        dst: vec![1],
        amount: vec![1.0],
        units: vec![frac::U256_ZERO; 2],
    };
    assert!(pool(&Backend::Cpu, &g, &f, &PoolOptions::default()).is_err());
    assert!(flags(2, &[3], &[]).is_err());
}

/// Amounts from 1 to 2^246 (bit lengths uniform), some zero: a chain where one transfer
/// dwarfs another by 2^240 (a meme token's supply next to a dust payment).
fn u256_graph(seed: u64, nodes: u32, transfers: usize) -> TransferGraph {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut g = TransferGraph {
        nodes,
        ..Default::default()
    };
    for _ in 0..transfers {
        g.src.push(r.random_range(0..nodes));
        g.dst.push(r.random_range(0..nodes));
        let mut u = frac::U256_ZERO;
        if !r.random_bool(0.03) {
            let bits = r.random_range(1..=246u32);
            for (i, limb) in u.iter_mut().enumerate() {
                let lo = 32 * i as u32;
                if lo < bits {
                    let keep = (bits - lo).min(32);
                    *limb = r.random::<u32>() & (u32::MAX >> (32 - keep));
                }
            }
            u[((bits - 1) / 32) as usize] |= 1 << ((bits - 1) % 32);
        }
        g.amount.push(1.0);
        g.units.push(u);
    }
    g
}

#[test]
fn haircut_is_exact_over_the_whole_uint256_range() {
    for seed in 0..30u64 {
        let g = u256_graph(seed, 12 + seed as u32, 250);
        let seeds = [0u32, 1];
        let stops = [4u32];
        let f = flags(g.nodes, &seeds, &stops).expect("flags");
        let r = pool_cpu(&g, &f, &PoolOptions::default());
        let got = r.tainted(&g);
        let units: Vec<BigUint> = g.units.iter().map(big).collect();
        let want = pool_oracle(&units, &g.src, &g.dst, g.nodes, &seeds, &stops, 0.0);
        for e in 0..g.src.len() {
            // Tainted or not exactly as the oracle says, the amount within 1e-6.
            assert_eq!(got[e] > 0.0, want[e] > 0.0, "graph {seed} transfer {e}");
            assert!(
                close(got[e], want[e]),
                "graph {seed} transfer {e}: {:e} vs {:e}",
                got[e],
                want[e]
            );
        }
        // The reached set is the oracle's: every address a tainted transfer entered.
        let mut reached: Vec<bool> =
            seeds
                .iter()
                .fold(vec![false; g.nodes as usize], |mut v, &s| {
                    v[s as usize] = true;
                    v
                });
        for e in 0..g.src.len() {
            if want[e] > 0.0 {
                reached[g.dst[e] as usize] = true;
            }
        }
        let hop_reached: Vec<bool> = r.hop.iter().map(|&h| h != UNREACHED).collect();
        assert_eq!(hop_reached, reached, "graph {seed}");
    }
}

#[test]
fn dust_beside_a_huge_transfer_keeps_its_taint() {
    // 0 (seed) pays 2 seven units; 1 (clean) pays 3 2^256 − 1; 3 pays 4 a thousand: the
    // huge clean amount must not squash the small tainted one, nor taint 4.
    let max = [u32::MAX; 8];
    let g = TransferGraph {
        nodes: 5,
        src: vec![0, 1, 3, 2],
        dst: vec![2, 3, 4, 4],
        amount: vec![1.0; 4],
        units: vec![
            frac::from_u128(7),
            max,
            frac::from_u128(1000),
            frac::from_u128(7),
        ],
    };
    let f = flags(5, &[0], &[]).expect("flags");
    let r = pool_cpu(&g, &f, &PoolOptions::default());
    assert_eq!(r.tainted(&g), [7.0, 0.0, 0.0, 7.0]);
    assert_eq!(r.hop, [0, UNREACHED, 1, UNREACHED, 2]);
    // One unit of taint in a pool of 2^256 − 1: the pool forwards all of it, and the unit
    // arrives (the share is 2^-256, far below f32's and f64's smallest normal).
    let mut almost = max;
    almost[0] -= 1;
    let g = TransferGraph {
        nodes: 4,
        src: vec![0, 1, 2],
        dst: vec![2, 2, 3],
        amount: vec![1.0; 3],
        units: vec![frac::from_u128(1), almost, max],
    };
    let r = pool_cpu(&g, &f[..4], &PoolOptions::default());
    let x = r.tainted(&g);
    assert!(close(x[2], 1.0), "{x:?}");
}

#[test]
fn an_emptied_pool_keeps_no_residue() {
    // A multi-send contract (1) receives 3 · 333_333_333_333_333_333 from the seed and
    // forwards it in three payments of different sizes; then a clean employer (2) pays
    // it a payroll it forwards to 20 employees: none of them is tainted.
    let big = 333_333_333_333_333_333u128;
    let (mut src, mut dst, mut units) =
        (vec![0, 0, 0], vec![1, 1, 1], vec![frac::from_u128(big); 3]);
    for (to, v) in [(3, big / 7), (4, big * 2), (5, 3 * big - big / 7 - big * 2)] {
        src.push(1);
        dst.push(to);
        units.push(frac::from_u128(v));
    }
    src.push(2);
    dst.push(1);
    units.push(frac::from_u128(20 * 1_000_003));
    for k in 0..20 {
        src.push(1);
        dst.push(6 + k);
        units.push(frac::from_u128(1_000_003));
    }
    let g = TransferGraph {
        nodes: 26,
        amount: vec![1.0; src.len()],
        src,
        dst,
        units,
    };
    let f = flags(26, &[0], &[]).expect("flags");
    for backend in [Some(Backend::Cpu), gpu_backend()].into_iter().flatten() {
        let r = pool(&backend, &g, &f, &PoolOptions::default()).expect("pool");
        let reached: Vec<u32> = (0..26)
            .filter(|&v| r.hop[v as usize] != UNREACHED)
            .collect();
        assert_eq!(reached, [0, 1, 3, 4, 5], "{}", backend.describe());
        let x = r.tainted(&g);
        assert!(x[7..].iter().all(|&v| v == 0.0), "{x:?}");
        assert!(close(x[3] + x[4] + x[5], 3.0 * big as f64), "{x:?}");
    }
}
