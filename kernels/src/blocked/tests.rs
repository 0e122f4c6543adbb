use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::propagate::{ChainOrder, Propagation, SEED_SOURCE, propagate_jacobi_cpu};

/// A random problem whose rows list their edges by ascending source (seed outputs last),
/// the order the taint lowering gives every row.
fn random(seed: u64, n: u32, m: usize, dag: bool, unit: bool) -> Propagation {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows: Vec<Vec<(u32, f32, f32)>> = vec![Vec::new(); n as usize];
    for _ in 0..m {
        if n == 0 {
            break;
        }
        let d = rng.random_range(0..n);
        let s = if rng.random_ratio(1, 20) {
            SEED_SOURCE
        } else if dag {
            if d == 0 {
                continue;
            }
            // Mostly recent sources, as spends are: a banded chunk matrix.
            let back = if rng.random_ratio(3, 4) { d.min(8) } else { d };
            d - rng.random_range(1..=back)
        } else {
            rng.random_range(0..n)
        };
        let w = if unit {
            1.0
        } else {
            rng.random_range(0.0..0.7f32)
        };
        rows[d as usize].push((s, w, rng.random_range(0..100_000u32) as f32));
    }
    let seeds = (0..n).filter(|_| rng.random_ratio(1, 40)).collect();
    from_rows(rows, seeds)
}

/// A problem from its rows of (source, weight, gate), each row sorted by source (seed
/// outputs last).
fn from_rows(rows: Vec<Vec<(u32, f32, f32)>>, seeds: Vec<u32>) -> Propagation {
    let mut p = Propagation {
        row_ptr: vec![0],
        seeds,
        ..Default::default()
    };
    for mut row in rows {
        row.sort_by_key(|e| e.0);
        for (s, w, g) in row {
            p.src.push(s);
            p.weight.push(w);
            p.gate.push(g);
        }
        p.row_ptr.push(p.src.len() as u32);
    }
    p
}

fn run_blocked(
    p: &Propagation,
    bits: u32,
    opts: &Options,
    mem: usize,
) -> (Vec<f32>, Vec<u32>, Stats) {
    let mut src = MemSource::from_propagation(p, bits).expect("cut");
    let scratch = tempfile::tempdir().expect("scratch");
    let budget = Budget {
        mem_bytes: mem,
        scratch: scratch.path().to_path_buf(),
    };
    let mut r = propagate(&mut src, opts, &budget).expect("blocked run");
    let (f, h) = r.to_vecs().expect("read back");
    (f, h, r.stats.clone())
}

fn options() -> Vec<Options> {
    vec![
        Options::default(),
        Options {
            max_hops: Some(3),
            min_value: 0.0,
        },
        Options {
            max_hops: None,
            min_value: 20_000.0,
        },
        Options {
            max_hops: Some(1),
            min_value: 5_000.0,
        },
    ]
}

/// The blocked path equals the in-memory one bit for bit (fractions, hops, steps), for
/// every block size from one node up and with budgets that force every block and chunk
/// through the scratch files.
#[test]
fn equals_the_in_memory_path_for_every_block_size_and_budget() {
    let mut spilled = 0;
    for seed in 0..12u64 {
        let dag = seed % 4 != 3;
        let n = [0u32, 1, 7, 300, 1000, 3000][seed as usize % 6];
        // With cycles, weighted taint takes up to n + 1 steps to settle: keep those small.
        let n = if dag { n } else { n.min(200) };
        let p = random(seed, n, n as usize * 3, dag, seed % 3 == 0);
        for opts in options() {
            let want = propagate_jacobi_cpu(&p, &opts);
            for bits in [0u32, 2, 5, 8, 12] {
                // Blocks of one node over thousands of nodes only make the test slow.
                if n >= 1000 && bits < 2 {
                    continue;
                }
                for mem in [8usize << 10, 64 << 20] {
                    // Paging blocks of a few nodes through files is slow and adds nothing.
                    if mem < 1 << 20 && n > 300 && bits < 5 {
                        continue;
                    }
                    let (f, h, stats) = run_blocked(&p, bits, &opts, mem);
                    let what = format!("seed {seed}, n {n}, bits {bits}, mem {mem}, {opts:?}");
                    assert_eq!(h, want.hop, "hops: {what}");
                    let fb: Vec<u32> = f.iter().map(|x| x.to_bits()).collect();
                    let wb: Vec<u32> = want.fraction.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(fb, wb, "fractions: {what}");
                    assert_eq!(stats.steps, want.steps, "steps: {what}");
                    spilled += stats.blocks_spilled;
                }
            }
        }
    }
    assert!(spilled > 0, "the zero budget must page blocks out");
}

/// `n` nodes in a line, each spending the one before with `weight`; one seed.
fn line(n: u32, seed: u32, weight: f32) -> Propagation {
    from_rows(
        (0..n)
            .map(|v| {
                if v == 0 {
                    vec![]
                } else {
                    vec![(v - 1, weight, 1.0)]
                }
            })
            .collect(),
        vec![seed],
    )
}

/// A step reads only the chunks out of blocks that carry taint: a seed at the end of a
/// long chain of blocks leaves the earlier ones unread.
#[test]
fn chunks_from_untainted_blocks_are_skipped() {
    // 4096 nodes in a line, each spending the one before; one seed near the end.
    let p = line(4096, 4000, 1.0);
    let opts = Options::default();
    let (_, h, stats) = run_blocked(&p, 6, &opts, 64 << 20);
    assert_eq!(h, propagate_jacobi_cpu(&p, &opts).hop);
    // 64 blocks, 63 off-diagonal chunks and 64 diagonal ones; taint lives in the last 2.
    assert!(stats.chunk_loads <= 6, "{stats:?}");
    assert!(stats.chunks_skipped > stats.chunks_swept * 10, "{stats:?}");
}

/// The tests above fail on a broken sweep: a skipped chunk, and a source read one block
/// off.
#[test]
fn a_broken_sweep_fails_the_comparison() {
    for fault in [1u8, 2] {
        let mut caught = false;
        for seed in 0..6u64 {
            let p = random(seed, 2000, 6000, true, seed % 2 == 0);
            let opts = Options::default();
            let want = propagate_jacobi_cpu(&p, &opts);
            FAULT.with(|f| f.set(fault));
            let (f, h, _) = run_blocked(&p, 4, &opts, 64 << 20);
            FAULT.with(|f| f.set(0));
            if h != want.hop || f != want.fraction {
                caught = true;
                break;
            }
        }
        assert!(caught, "fault {fault} went unnoticed");
    }
}

/// Damaged chunks are errors that say which chunk, never a wrong answer.
#[test]
fn a_malformed_chunk_is_an_error() {
    let p = random(3, 64, 200, true, false);
    let mut src = MemSource::from_propagation(&p, 3).expect("cut");
    let key = *src
        .chunks
        .keys()
        .find(|k| k.1 != SEED_BLOCK)
        .expect("a chunk");
    src.chunks.get_mut(&key).expect("chunk").src[0] = 99;
    // Its source block is all seeds, so the chunk is read at the first step.
    src.seeds = (u64::from(key.1) * 8..u64::from(key.1) * 8 + 8).collect();
    let scratch = tempfile::tempdir().expect("scratch");
    let budget = Budget {
        mem_bytes: 1 << 20,
        scratch: scratch.path().to_path_buf(),
    };
    let e = propagate(&mut src, &Options::default(), &budget)
        .err()
        .expect("a source node outside its block is refused");
    assert!(
        e.to_string()
            .contains(&format!("chunk ({}, {})", key.0, key.1)),
        "{e}"
    );
}

/// On a GPU (lavapipe in CI) the blocked engine gives the CPU's bits: fractions, hops and
/// steps, with tiny blocks so that every run crosses many chunks, and with dispatches
/// capped at a few edges so that every chunk is split into row ranges. A broken sweep
/// (fault 1) fails the comparison on the GPU too.
#[test]
fn the_gpu_sums_equal_the_cpu_sums() {
    let Some(g) = crate::testing::gpu() else {
        return;
    };
    let backend = crate::device::Backend::Gpu(g);
    let run_on = |p: &Propagation, bits: u32, opts: &Options, cap: Option<usize>| {
        let mut src = MemSource::from_propagation(p, bits).expect("cut");
        let scratch = tempfile::tempdir().expect("scratch");
        let budget = Budget {
            mem_bytes: 1 << 20,
            scratch: scratch.path().to_path_buf(),
        };
        let mut r = propagate_with(&backend, &mut src, opts, &budget, cap).expect("gpu run");
        let (f, h) = r.to_vecs().expect("read back");
        (f, h, r.stats.steps)
    };
    let mut runs = 0;
    for seed in 0..6u64 {
        let n = [7u32, 300, 1000, 2500][seed as usize % 4];
        let p = random(seed, n, n as usize * 3, true, seed % 3 == 0);
        for opts in options() {
            let want = propagate_jacobi_cpu(&p, &opts);
            for (bits, cap) in [(3u32, Some(5usize)), (6, Some(64)), (8, None)] {
                // Five-edge dispatches over thousands of rows only make the test slow.
                if n > 300 && cap == Some(5) {
                    runs += 1;
                    continue;
                }
                let (f, h, steps) = run_on(&p, bits, &opts, cap);
                let what = format!("seed {seed}, n {n}, bits {bits}, cap {cap:?}, {opts:?}");
                assert_eq!(h, want.hop, "hops: {what}");
                let fb: Vec<u32> = f.iter().map(|x| x.to_bits()).collect();
                let wb: Vec<u32> = want.fraction.iter().map(|x| x.to_bits()).collect();
                assert_eq!(fb, wb, "fractions: {what}");
                assert_eq!(steps, want.steps, "steps: {what}");
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 72);
    let p = random(1, 2000, 6000, true, false);
    let want = propagate_jacobi_cpu(&p, &Options::default());
    FAULT.with(|f| f.set(1));
    let (f, h, _) = run_on(&p, 4, &Options::default(), Some(256));
    FAULT.with(|f| f.set(0));
    assert!(
        h != want.hop || f != want.fraction,
        "a skipped chunk went unnoticed on the GPU"
    );
}

/// The node ids reversed: an ascending DAG becomes a descending one (backward taint's
/// shape), each row still by ascending source, seeds last.
fn reversed(p: &Propagation) -> Propagation {
    let n = p.nodes();
    let flip = |v: u32| if v == SEED_SOURCE { v } else { n - 1 - v };
    let rows = (0..n)
        .rev()
        .map(|v| {
            let (lo, hi) = (
                p.row_ptr[v as usize] as usize,
                p.row_ptr[v as usize + 1] as usize,
            );
            (lo..hi)
                .map(|e| (flip(p.src[e]), p.weight[e], p.gate[e]))
                .collect()
        })
        .collect();
    let mut seeds: Vec<u32> = p.seeds.iter().map(|&s| flip(s)).collect();
    seeds.sort_unstable();
    from_rows(rows, seeds)
}

fn run_fixpoint(
    p: &Propagation,
    bits: u32,
    min_value: f32,
    mem: usize,
    order: ChainOrder,
) -> Result<(Vec<f32>, Vec<u32>, Stats)> {
    let mut src = MemSource::from_propagation(p, bits)?;
    let scratch = tempfile::tempdir().expect("scratch");
    let budget = Budget {
        mem_bytes: mem,
        scratch: scratch.path().to_path_buf(),
    };
    let mut r = fixpoint(&mut src, min_value, &budget, order)?;
    let (f, h) = r.to_vecs()?;
    Ok((f, h, r.stats.clone()))
}

/// An independent reading of the pass's hops: relaxed until nothing changes, in no
/// particular order, from the final fractions: a seed is at 0, a tainted node at 1 + the
/// smallest hop among the sources whose edge carries taint into it (a product above zero
/// that passes the gate).
fn hops_oracle(p: &Propagation, f: &[f32], min_value: f32) -> Vec<u32> {
    let n = p.nodes() as usize;
    let mut h = vec![UNREACHED; n];
    for &s in &p.seeds {
        h[s as usize] = 0;
    }
    loop {
        let mut changed = false;
        for v in 0..n {
            if h[v] == 0 || f[v] == 0.0 {
                continue;
            }
            let mut best = UNREACHED;
            for e in p.row_ptr[v] as usize..p.row_ptr[v + 1] as usize {
                let (fs, hs) = match p.src[e] {
                    SEED_SOURCE => (1.0, 0),
                    s => (f[s as usize], h[s as usize]),
                };
                let passes = min_value <= 0.0 || (fs > 0.0 && fs * p.gate[e] >= min_value);
                if passes && p.weight[e] * fs > 0.0 && hs != UNREACHED {
                    best = best.min(hs + 1);
                }
            }
            if best != h[v] {
                h[v] = best;
                changed = true;
            }
        }
        if !changed {
            return h;
        }
    }
}

/// Without a hop limit the one pass in chain order gives the Jacobi fixpoint's fractions
/// bit for bit, in memory and blocked (every block size, budgets that page every block),
/// forward and backward; its hops are Jacobi's without a minimum value and, with one,
/// the independent oracle's (never more than Jacobi's).
#[test]
fn the_pass_in_chain_order_gives_the_jacobi_fixpoint() {
    use crate::propagate::fixpoint_in_order;
    let (mut differed, mut reached, mut spilled) = (0usize, 0usize, 0u64);
    for seed in 0..10u64 {
        let n = [0u32, 1, 7, 300, 1000, 3000][seed as usize % 6];
        let up = random(seed, n, n as usize * 3, true, seed % 3 == 0);
        for (p, order) in [
            (up.clone(), ChainOrder::Ascending),
            (reversed(&up), ChainOrder::Descending),
        ] {
            for min_value in [0.0f32, 5_000.0, 20_000.0] {
                let opts = Options {
                    max_hops: None,
                    min_value,
                };
                let jacobi = propagate_jacobi_cpu(&p, &opts);
                let pass = fixpoint_in_order(&p, min_value, order).expect("pass");
                let what = format!("seed {seed}, n {n}, {order:?}, min {min_value}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&pass.fraction), bits(&jacobi.fraction), "{what}");
                assert_eq!(pass.steps, 1);
                if min_value == 0.0 {
                    assert_eq!(pass.hop, jacobi.hop, "{what}");
                } else {
                    assert_eq!(
                        pass.hop,
                        hops_oracle(&p, &pass.fraction, min_value),
                        "{what}"
                    );
                    assert!(
                        pass.hop.iter().zip(&jacobi.hop).all(|(a, b)| a <= b),
                        "{what}"
                    );
                    differed += pass
                        .hop
                        .iter()
                        .zip(&jacobi.hop)
                        .filter(|(a, b)| a != b)
                        .count();
                }
                reached += pass
                    .hop
                    .iter()
                    .filter(|&&h| h != 0 && h != UNREACHED)
                    .count();
                for bits_ in [0u32, 2, 5, 8, 12] {
                    if n >= 1000 && bits_ < 2 {
                        continue;
                    }
                    for mem in [8usize << 10, 64 << 20] {
                        if mem < 1 << 20 && n > 300 && bits_ < 5 {
                            continue;
                        }
                        let (f, h, stats) =
                            run_fixpoint(&p, bits_, min_value, mem, order).expect("blocked pass");
                        let what = format!("{what}, bits {bits_}, mem {mem}");
                        assert_eq!(h, pass.hop, "hops: {what}");
                        assert_eq!(bits(&f), bits(&pass.fraction), "fractions: {what}");
                        assert_eq!(stats.steps, 1, "{what}");
                        spilled += stats.blocks_spilled;
                    }
                }
            }
        }
    }
    assert!(
        reached > 5_000,
        "the runs must reach well beyond their seeds: {reached}"
    );
    assert!(
        differed > 0,
        "some run must show the gate read at the final fraction"
    );
    assert!(spilled > 0, "the small budget must page blocks out");
}

/// The blocked pass fails the comparison when its sweep is broken (a skipped chunk, a
/// source read one block off), and reads no chunk out of a block no taint reached.
#[test]
fn a_broken_pass_is_caught_and_untainted_blocks_are_skipped() {
    use crate::propagate::fixpoint_in_order;
    for fault in [1u8, 2] {
        let mut caught = false;
        for seed in 0..6u64 {
            let p = random(seed, 2000, 6000, true, seed % 2 == 0);
            let want = fixpoint_in_order(&p, 0.0, ChainOrder::Ascending).expect("pass");
            FAULT.with(|f| f.set(fault));
            let got = run_fixpoint(&p, 4, 0.0, 64 << 20, ChainOrder::Ascending);
            FAULT.with(|f| f.set(0));
            let (f, h, _) = got.expect("a broken pass still runs");
            if h != want.hop || f != want.fraction {
                caught = true;
                break;
            }
        }
        assert!(caught, "fault {fault} went unnoticed");
    }
    // A line of 4096 nodes, one seed near the end: only the last blocks are read.
    let p = line(4096, 4000, 0.5);
    let (_, h, stats) = run_fixpoint(&p, 6, 0.0, 64 << 20, ChainOrder::Ascending).expect("pass");
    assert_eq!(h[4095], 95);
    assert_eq!(h[3999], UNREACHED);
    assert!(stats.chunk_loads <= 4, "{stats:?}");
}

/// An edge against the chain order (a cycle, damaged ids) is an error in both passes,
/// never an answer read from a source that was not final.
#[test]
fn an_edge_against_the_chain_order_is_an_error() {
    use crate::propagate::fixpoint_in_order;
    let up = random(5, 300, 900, true, false);
    // Read the wrong way round, every edge runs against the order.
    let e = fixpoint_in_order(&up, 0.0, ChainOrder::Descending).expect_err("refused");
    assert!(e.to_string().contains("against the chain order"), "{e}");
    for bits in [3u32, 12] {
        let e = run_fixpoint(&up, bits, 0.0, 1 << 20, ChainOrder::Descending)
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("against the chain order"),
            "bits {bits}: {e}"
        );
    }
    // One edge pointing forward in an otherwise ascending graph: a cycle.
    let mut cyc = up.clone();
    let v = (0..cyc.nodes())
        .find(|&v| cyc.row_ptr[v as usize + 1] > cyc.row_ptr[v as usize] && v < 100)
        .expect("a row");
    let e0 = cyc.row_ptr[v as usize] as usize;
    cyc.src[e0] = 250;
    cyc.weight[e0] = 0.5;
    let e = fixpoint_in_order(&cyc, 0.0, ChainOrder::Ascending).expect_err("refused");
    assert!(
        e.to_string()
            .contains(&format!("from node 250 into node {v}")),
        "{e}"
    );
    let e = run_fixpoint(&cyc, 12, 0.0, 1 << 20, ChainOrder::Ascending)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("against the chain order"), "{e}");
}
