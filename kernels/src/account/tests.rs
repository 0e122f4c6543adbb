//! Account taint against independent oracles (one sequential pass in chain order) and the
//! GPU against the CPU, on random and adversarial transfer graphs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
            10f32.powf(r.random_range(0.0..12.0))
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

/// The pool by one pass in chain order (f64), no hop limit.
fn pool_oracle(g: &TransferGraph, seeds: &[u32], stops: &[u32], min_value: f64) -> Vec<f64> {
    let n = g.nodes as usize;
    let mut b = vec![0f64; n];
    let mut t = vec![0f64; n];
    let seed = |v: usize| seeds.contains(&(v as u32));
    let stop = |v: usize| stops.contains(&(v as u32)) && !seed(v);
    let mut out = vec![0f64; g.src.len()];
    for e in 0..g.src.len() {
        let (s, d, a) = (g.src[e] as usize, g.dst[e] as usize, f64::from(g.amount[e]));
        if b[s] < a {
            b[s] = a;
        }
        if seed(s) {
            t[s] = b[s];
        }
        let mut x = if seed(s) {
            a
        } else if stop(s) || t[s] <= 0.0 {
            0.0
        } else {
            (a * t[s] / b[s]).min(a)
        };
        if x < min_value {
            x = 0.0;
        }
        out[e] = x;
        b[s] -= a;
        t[s] = (t[s] - x).max(0.0).min(b[s]);
        b[d] += a;
        t[d] += x;
        if seed(d) {
            t[d] = b[d];
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()) + 1e-3
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
            for r in [poison_cpu(&g, &f, &opts), poison_jacobi_cpu(&g, &f, &opts)] {
                assert_eq!(r.arrival, arrival, "graph {seed} {opts:?}");
                // Hop-limited runs stop at the limit; reached addresses keep their hops.
                assert_eq!(r.hop, hop, "graph {seed} {opts:?}");
            }
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
    };
    let f = flags(5, &[0], &[]).expect("flags");
    let r = poison_cpu(&g, &f, &Options::default());
    assert_eq!(r.arrival, [0, 2, 3, 4, UNREACHED]);
    assert_eq!(r.hop, [0, 1, 2, 1, UNREACHED]);
    let p = pool_cpu(&g, &f, &Options::default());
    assert_eq!(p.tainted, [0.0, 5.0, 5.0, 5.0]);
}

#[test]
fn pool_equals_the_sequential_pass() {
    for seed in 0..40u64 {
        let g = random_graph(100 + seed, 25 + seed as u32, 300);
        let seeds = [1u32, 2];
        let stops = [5u32, 2];
        for min_value in [0.0f32, 1e5] {
            let f = flags(g.nodes, &seeds, &stops).expect("flags");
            let opts = Options {
                max_hops: None,
                min_value,
            };
            let r = pool_cpu(&g, &f, &opts);
            let want = pool_oracle(&g, &seeds, &stops, f64::from(min_value));
            for e in 0..g.src.len() {
                // Near the minimum the f32 and f64 passes may fall on either side of it.
                let near_min = (want[e] - f64::from(min_value)).abs() < 1e-3 * want[e].max(1.0);
                assert!(
                    near_min || close(f64::from(r.tainted[e]), want[e]),
                    "graph {seed} min {min_value} transfer {e}: {} vs {}",
                    r.tainted[e],
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
    };
    let f = flags(10, &[0], &[]).expect("flags");
    let p = pool_cpu(&g, &f, &Options::default());
    assert_eq!(p.tainted[..3], [10.0, 0.0, 5.0]);
    // 1 holds 20 with 5 tainted; paying 100 (80 more than the tables show arriving) takes
    // the 5 along, the rest clean.
    assert_eq!(p.tainted[3], 5.0);
    assert_eq!(
        p.hop,
        [
            0, 1, 2, 2, UNREACHED, UNREACHED, UNREACHED, UNREACHED, UNREACHED, UNREACHED
        ]
    );
    // One hop: only the seed's own transfers.
    let one = pool_cpu(
        &g,
        &f,
        &Options {
            max_hops: Some(1),
            min_value: 0.0,
        },
    );
    assert_eq!(one.tainted, [10.0, 0.0, 0.0, 0.0]);
    // Backward from 2: reversed graph, 1 then 0 and 9 funded it in proportion.
    let r = g.reversed();
    let back = pool_cpu(
        &r,
        &flags(10, &[2], &[]).expect("flags"),
        &Options::default(),
    );
    // Reversed edges: [3→1 (100), 2→1 (20), 1→9 (30), 1→0 (10)]: 1 held 120, 20 of it
    // tainted, when it paid 9 and 0.
    assert_eq!(back.tainted[1], 20.0);
    assert!(back.tainted[2] > 0.0 && back.tainted[3] > 0.0);
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
    });
    let chain = 300u32;
    cases.push(TransferGraph {
        nodes: chain + 1,
        src: (0..chain).collect(),
        dst: (1..=chain).collect(),
        amount: vec![3.0; chain as usize],
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
    });
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
                let p = pool(&gpu, &graph, &f, &opts).expect("gpu pool");
                let c = pool_cpu(&graph, &f, &opts);
                assert_eq!(p.hop, c.hop, "case {i} {opts:?}");
                for e in 0..graph.src.len() {
                    let (x, y) = (f64::from(p.tainted[e]), f64::from(c.tainted[e]));
                    assert!(
                        (x - y).abs() <= 1e-5 * x.abs().max(y.abs()) + 1e-30,
                        "case {i} {opts:?} transfer {e}: gpu {x} cpu {y}"
                    );
                }
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
    };
    let f = vec![0; 2];
    let err = poison(&Backend::Cpu, &g, &f, &Options::default()).expect_err("bad id");
    assert!(err.to_string().contains("outside 0..2"), "{err}");
    let g = TransferGraph {
        nodes: 2,
        src: vec![0],
        dst: vec![1],
        amount: vec![f32::NAN],
    };
    assert!(pool(&Backend::Cpu, &g, &f, &Options::default()).is_err());
    assert!(flags(2, &[3], &[]).is_err());
}
