//! The rayon twin of `chainrank.wgsl`: the same rounds of pointer jumping, each reading
//! one pair of arrays and writing the other, so the result equals the GPU's exactly.

use rayon::prelude::*;

/// One round: every node jumps to its pointer's pointer. Returns whether any pointer
/// moved.
pub(crate) fn round(anc: &[u32], dist: &[u32], anc_out: &mut [u32], dist_out: &mut [u32]) -> bool {
    anc_out
        .par_iter_mut()
        .zip(dist_out.par_iter_mut())
        .enumerate()
        .map(|(i, (ao, d))| {
            let a = anc[i] as usize;
            let aa = anc[a];
            // Wrapping as WGSL does: only a cycle (refused after) can overflow.
            *d = dist[i].wrapping_add(dist[a]);
            *ao = aa;
            aa as usize != a
        })
        .reduce(|| false, |x, y| x || y)
}
