// List ranking by pointer jumping (Wyllie). Nodes form disjoint paths: pred[i] is the
// node before i on its path, or i itself at a path's head. After round k every node
// points 2^k steps back (or at its head) and holds its distance to where it points, so
// after ceil(log2(longest path)) rounds: anc[i] = the head of i's path, dist[i] = i's
// position on it. Each round reads one pair of arrays and writes the other (no node
// sees a half-updated neighbour), so the answer is exact and the same as the rayon twin
// (cpu.rs).

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> anc_in: array<u32>;
@group(0) @binding(2) var<storage, read> dist_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> anc_out: array<u32>;
@group(0) @binding(4) var<storage, read_write> dist_out: array<u32>;
@group(0) @binding(5) var<storage, read_write> changed: atomic<u32>;

const WORKGROUP_SIZE: u32 = 256u;

// 2-D dispatch: more than 65,535 workgroups per dimension spill into y.
fn global_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WORKGROUP_SIZE + lid;
}

@compute @workgroup_size(256)
fn jump(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = global_index(wg, nwg, lid);
    if (i >= params.n) {
        return;
    }
    let a = anc_in[i];
    let aa = anc_in[a];
    // A head points at itself with distance 0, so nodes already at their head keep
    // their distance.
    dist_out[i] = dist_in[i] + dist_in[a];
    anc_out[i] = aa;
    if (aa != a) {
        atomicStore(&changed, 1u);
    }
}
