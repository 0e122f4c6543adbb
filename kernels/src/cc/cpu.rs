//! The rayon twin of `cc.wgsl`: a concurrent union-find whose roots are always the
//! smallest id of their set (a union links the larger root under the smaller with a
//! compare-and-swap), so the labels equal the GPU's exactly.

use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

fn find(parent: &[AtomicU32], mut x: u32) -> u32 {
    loop {
        let p = parent[x as usize].load(Ordering::Relaxed);
        if p == x {
            return x;
        }
        let gp = parent[p as usize].load(Ordering::Relaxed);
        // Path halving; a lost race only leaves a longer (still valid) path.
        let _ =
            parent[x as usize].compare_exchange_weak(p, gp, Ordering::Relaxed, Ordering::Relaxed);
        x = gp;
    }
}

fn union(parent: &[AtomicU32], a: u32, b: u32) {
    let (mut a, mut b) = (a, b);
    loop {
        a = find(parent, a);
        b = find(parent, b);
        if a == b {
            return;
        }
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        if parent[hi as usize]
            .compare_exchange(hi, lo, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// Component labels: for each node, the smallest node id of its component.
pub fn connected_components(n: u32, edges: &[(u32, u32)]) -> Vec<u32> {
    let parent: Vec<AtomicU32> = (0..n).map(AtomicU32::new).collect();
    edges
        .par_iter()
        .with_min_len(4096)
        .for_each(|&(u, v)| union(&parent, u, v));
    (0..n).into_par_iter().map(|i| find(&parent, i)).collect()
}
