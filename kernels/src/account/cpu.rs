//! The rayon twins of `poison.wgsl` and `pool.wgsl`: the same Jacobi steps, address by
//! address in parallel, in f32 in the shaders' order.

use rayon::prelude::*;

use super::{
    Arrivals, OUT, Options, Pooled, SEED, STOP, TransferGraph, UNREACHED, start_hops, step_limit,
};

/// Time-respecting poison in one pass over the transfers in chain order: an address is
/// tainted from its first tainted arrival, and its hop is the fewest transfers over the
/// paths that reached it so far (a transfer passes taint on when its sender's hop so far
/// is below the limit). The same arrivals and hops as the Jacobi steps of `poison.wgsl`
/// (tested against [`poison_jacobi`]), in one walk instead of one walk per step; `steps`
/// is 1.
pub fn poison(g: &TransferGraph, flags: &[u32], opts: &Options) -> Arrivals {
    let mut hop = start_hops(flags);
    let mut arrival: Vec<u32> = hop
        .iter()
        .map(|&h| if h == 0 { 0 } else { UNREACHED })
        .collect();
    let limit = opts.max_hops.unwrap_or(UNREACHED);
    for e in 0..g.src.len() {
        let s = g.src[e] as usize;
        let h = hop[s];
        if h == UNREACHED || h >= limit || flags[s] & STOP != 0 || g.amount[e] < opts.min_value {
            continue;
        }
        let d = g.dst[e] as usize;
        if arrival[d] == UNREACHED {
            arrival[d] = e as u32 + 1;
        }
        hop[d] = hop[d].min(h + 1);
    }
    Arrivals {
        arrival,
        hop,
        steps: 1,
    }
}

/// Time-respecting poison, step by step exactly as `poison.wgsl`.
pub fn poison_jacobi(g: &TransferGraph, flags: &[u32], opts: &Options) -> Arrivals {
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
