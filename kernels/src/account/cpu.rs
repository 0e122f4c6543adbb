//! The rayon twins of `poison.wgsl` and `pool.wgsl`: the same Jacobi steps, address by
//! address in parallel, in the shaders' arithmetic and order.

use rayon::prelude::*;

use super::frac::{self, Frac, ONE, U256_ZERO, ZERO, div, less, min_one, mul, plus};
use super::{
    Arrivals, OUT, Options, PoolOptions, PoolShares, SEED, STOP, TransferGraph, UNREACHED,
    start_hops, step_limit, step_limit_of,
};

/// Time-respecting poison in one pass over the transfers in chain order: an address is
/// tainted from its first tainted arrival, and its hop is the fewest transfers over the
/// paths that reached it so far (a transfer passes taint on when its sender's hop so far
/// is below the limit). The same arrivals and hops as the Jacobi steps of `poison.wgsl`
/// (tested against [`poison_jacobi`]), in one walk instead of one walk per step; `steps`
/// is the number of steps the Jacobi iteration runs (also tested equal).
pub fn poison(g: &TransferGraph, flags: &[u32], opts: &Options) -> Arrivals {
    let mut hop = start_hops(flags);
    let mut arrival: Vec<u32> = hop
        .iter()
        .map(|&h| if h == 0 { 0 } else { UNREACHED })
        .collect();
    let limit = opts.max_hops.unwrap_or(UNREACHED);
    // The most transfers on the path that set an address's final arrival: the Jacobi
    // steps stop changing after that many, and report one more step (the one that saw
    // no change) unless the hop limit came first.
    let mut last_change = 0u32;
    for e in 0..g.src.len() {
        let s = g.src[e] as usize;
        let h = hop[s];
        if h == UNREACHED || h >= limit || flags[s] & STOP != 0 || g.amount[e] < opts.min_value {
            continue;
        }
        let d = g.dst[e] as usize;
        if arrival[d] == UNREACHED {
            arrival[d] = e as u32 + 1;
            last_change = last_change.max(h + 1);
        }
        hop[d] = hop[d].min(h + 1);
    }
    Arrivals {
        arrival,
        hop,
        steps: step_limit(g, opts).min(last_change.saturating_add(1)),
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

/// The haircut pool, step by step as `pool.wgsl`, in the same integer arithmetic
/// ([`super::frac`]): per address an exact balance and a tainted share; per transfer the
/// share it carried.
pub fn pool(g: &TransferGraph, flags: &[u32], opts: &PoolOptions) -> PoolShares {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    let m = g.src.len();
    if m == 0 || g.nodes == 0 {
        return PoolShares {
            share: Vec::new(),
            hop: start_hops(flags),
            steps: 0,
        };
    }
    let units = g.pool_units();
    let hop: Vec<AtomicU32> = start_hops(flags).into_iter().map(AtomicU32::new).collect();
    let (ptr, ev) = g.events();
    let mut x_old = vec![ZERO; m];
    // Each edge is written by its sender only: the senders' threads write disjoint slots.
    let x_new: Vec<AtomicU64> = (0..m).map(|_| AtomicU64::new(0)).collect();
    let pack = |f: Frac| u64::from(f.m) | (u64::from(f.e as u32) << 32);
    let unpack = |w: u64| Frac {
        m: w as u32,
        e: (w >> 32) as u32 as i32,
    };
    let mut steps = 0;
    let bar = crate::progress::bar(None, "pool steps (cpu)");
    for k in 1..=step_limit_of(m, opts.max_hops) {
        bar.inc(1);
        let changed = (0..g.nodes as usize)
            .into_par_iter()
            .with_min_len(1024)
            .map(|v| {
                let mut walk = PoolWalk::new(flags[v], opts.min_value);
                let mut changed = false;
                for &w in &ev[ptr[v] as usize..ptr[v + 1] as usize] {
                    let e = (w & !OUT) as usize;
                    if w & OUT == 0 {
                        walk.arrive(&units[e], x_old[e]);
                    } else {
                        let phi = walk.depart(&units[e]);
                        x_new[e].store(pack(phi), Ordering::Relaxed);
                        if !phi.is_zero() {
                            hop[g.dst[e] as usize].fetch_min(k, Ordering::Relaxed);
                        }
                        if phi != x_old[e] {
                            changed = true;
                        }
                    }
                }
                changed
            })
            .reduce(|| false, |a, b| a | b);
        for (o, n) in x_old.iter_mut().zip(&x_new) {
            *o = unpack(n.load(Ordering::Relaxed));
        }
        steps = k;
        if !changed {
            break;
        }
    }
    bar.finish_and_clear();
    PoolShares {
        share: x_old,
        hop: hop.into_iter().map(AtomicU32::into_inner).collect(),
        steps,
    }
}

/// One address's walk over its transfers in chain order at one pool step, in
/// `pool.wgsl`'s arithmetic: an exact balance and a tainted share. Shared by the
/// in-memory step ([`pool`]) and the out-of-core one (`stored.rs`), so both compute the
/// same bits.
pub(super) struct PoolWalk {
    b: frac::U256,
    f: Frac,
    seed: bool,
    stop: bool,
    min: Frac,
}

impl PoolWalk {
    /// For an address with node `flags` ([`SEED`], [`STOP`]).
    pub(super) fn new(flags: u32, min: Frac) -> Self {
        Self {
            b: U256_ZERO,
            f: ZERO,
            seed: flags & SEED != 0,
            stop: flags & STOP != 0,
            min,
        }
    }

    /// A walk resumed from a balance and share (a resumed run's address state).
    pub(super) fn resumed(flags: u32, min: Frac, b: frac::U256, f: Frac) -> Self {
        let mut w = Self::new(flags, min);
        w.b = b;
        w.f = f;
        w
    }

    /// The balance and share now.
    pub(super) fn state(&self) -> (frac::U256, Frac) {
        (self.b, self.f)
    }

    /// A transfer of `a` in, carrying the tainted share `phi` (the last step's).
    pub(super) fn arrive(&mut self, a: &frac::U256, phi: Frac) {
        let s = frac::add(&self.b, a);
        if self.seed {
            self.f = ONE;
        } else if !frac::is_zero(&s) && phi != self.f {
            let fs = frac::of(&s);
            self.f = min_one(plus(
                mul(self.f, div(frac::of(&self.b), fs)),
                mul(phi, div(frac::of(a), fs)),
            ));
        }
        self.b = s;
    }

    /// A transfer of `a` out: the tainted share it carries.
    pub(super) fn depart(&mut self, a: &frac::U256) -> Frac {
        let (seed, stop) = (self.seed, self.stop);
        if frac::lt(&self.b, a) {
            if !seed {
                self.f = mul(self.f, div(frac::of(&self.b), frac::of(a)));
            }
            self.b = *a;
        }
        let mut phi = if seed {
            ONE
        } else if stop {
            ZERO
        } else {
            self.f
        };
        if frac::is_zero(a) {
            phi = ZERO;
        }
        if !phi.is_zero() && !self.min.is_zero() && less(mul(frac::of(a), phi), self.min) {
            phi = ZERO;
        }
        let nb = frac::sub(&self.b, a);
        if !seed {
            if frac::is_zero(&nb) {
                self.f = ZERO;
            } else if phi.is_zero() && !self.f.is_zero() && !stop {
                // Held back by the minimum: the pool keeps that taint.
                self.f = min_one(mul(self.f, div(frac::of(&self.b), frac::of(&nb))));
            }
        }
        self.b = nb;
        phi
    }
}
