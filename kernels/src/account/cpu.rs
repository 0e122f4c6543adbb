//! The rayon twins of `poison.wgsl` and `pool.wgsl`: the same Jacobi steps, address by
//! address in parallel, in f32 in the shaders' order.

use rayon::prelude::*;

use super::{
    Arrivals, OUT, Options, Pooled, SEED, STOP, TransferGraph, UNREACHED, start_hops, step_limit,
};

/// Time-respecting poison, step by step as `poison.wgsl`.
pub fn poison(g: &TransferGraph, flags: &[u32], opts: &Options) -> Arrivals {
    let mut hop = start_hops(flags);
    let mut arr: Vec<u32> = hop
        .iter()
        .map(|&h| if h == 0 { 0 } else { UNREACHED })
        .collect();
    let (ptr, edges) = g.in_csr();
    let mut next = arr.clone();
    let mut steps = 0;
    let bar = crate::progress::bar(None, "poison steps (cpu)");
    for k in 1..=step_limit(g, opts) {
        bar.inc(1);
        let changed = next
            .par_iter_mut()
            .zip(hop.par_iter_mut())
            .enumerate()
            .with_min_len(1024)
            .map(|(v, (out, h))| {
                let mut best = arr[v];
                for &e in &edges[ptr[v] as usize..ptr[v + 1] as usize] {
                    let s = g.src[e as usize] as usize;
                    let a = arr[s];
                    let t = e + 1;
                    if a != UNREACHED
                        && a < t
                        && t < best
                        && flags[s] & STOP == 0
                        && g.amount[e as usize] >= opts.min_value
                    {
                        best = t;
                    }
                }
                *out = best;
                if best != UNREACHED && *h == UNREACHED {
                    *h = k;
                }
                best != arr[v]
            })
            .reduce(|| false, |a, b| a | b);
        std::mem::swap(&mut arr, &mut next);
        steps = k;
        if !changed {
            break;
        }
    }
    bar.finish_and_clear();
    Arrivals {
        arrival: arr,
        hop,
        steps,
    }
}

/// The haircut pool, step by step as `pool.wgsl`.
pub fn pool(g: &TransferGraph, flags: &[u32], opts: &Options) -> Pooled {
    use std::sync::atomic::{AtomicU32, Ordering};

    let m = g.src.len();
    let hop: Vec<AtomicU32> = start_hops(flags).into_iter().map(AtomicU32::new).collect();
    let (ptr, ev) = g.events();
    let mut x_old = vec![0f32; m];
    // Each edge is written by its sender only: the senders' threads write disjoint slots.
    let x_new: Vec<AtomicU32> = (0..m).map(|_| AtomicU32::new(0)).collect();
    let mut steps = 0;
    let bar = crate::progress::bar(None, "pool steps (cpu)");
    for k in 1..=step_limit(g, opts) {
        bar.inc(1);
        let changed = (0..g.nodes as usize)
            .into_par_iter()
            .with_min_len(1024)
            .map(|v| {
                let seed = flags[v] & SEED != 0;
                let stop = flags[v] & STOP != 0;
                let mut b = 0f32;
                let mut t = 0f32;
                let mut changed = false;
                for &w in &ev[ptr[v] as usize..ptr[v + 1] as usize] {
                    let e = (w & !OUT) as usize;
                    let a = g.amount[e];
                    if w & OUT == 0 {
                        b += a;
                        if seed {
                            t = b;
                        } else {
                            t += x_old[e];
                        }
                    } else {
                        if b < a {
                            b = a;
                            if seed {
                                t = b;
                            }
                        }
                        let mut x = 0f32;
                        if seed {
                            x = a;
                        } else if !stop && t > 0.0 {
                            x = a.min(a * (t / b));
                        }
                        if x < opts.min_value || x < 1e-30 {
                            x = 0.0;
                        }
                        x_new[e].store(x.to_bits(), Ordering::Relaxed);
                        if x > 0.0 {
                            hop[g.dst[e] as usize].fetch_min(k, Ordering::Relaxed);
                        }
                        if x != x_old[e] {
                            changed = true;
                        }
                        b -= a;
                        t = (t - x).max(0.0).min(b);
                    }
                }
                changed
            })
            .reduce(|| false, |a, b| a | b);
        for (o, n) in x_old.iter_mut().zip(&x_new) {
            *o = f32::from_bits(n.load(Ordering::Relaxed));
        }
        steps = k;
        if !changed {
            break;
        }
    }
    bar.finish_and_clear();
    Pooled {
        tainted: x_old,
        hop: hop.into_iter().map(AtomicU32::into_inner).collect(),
        steps,
    }
}
