use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::propagate::{Propagation, SEED_SOURCE, propagate_jacobi_cpu};

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
    let mut p = Propagation {
        row_ptr: vec![0],
        seeds: (0..n).filter(|_| rng.random_ratio(1, 40)).collect(),
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

/// A step reads only the chunks out of blocks that carry taint: a seed at the end of a
/// long chain of blocks leaves the earlier ones unread.
#[test]
fn chunks_from_untainted_blocks_are_skipped() {
    // 4096 nodes in a line, each spending the one before; one seed near the end.
    let n = 4096u32;
    let mut p = Propagation {
        row_ptr: vec![0, 0],
        seeds: vec![4000],
        ..Default::default()
    };
    for v in 1..n {
        p.src.push(v - 1);
        p.weight.push(1.0);
        p.gate.push(1.0);
        p.row_ptr.push(v);
    }
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
