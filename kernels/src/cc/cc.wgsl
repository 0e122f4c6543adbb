// Connected components by hooking with atomic min plus pointer jumping.
// parent[] starts as the identity; every write lowers a value, and every value points to a
// node of the same component, so the fixpoint labels each node with its component's
// smallest id: the same answer as the CPU union-find (cpu.rs).

struct Params {
    n: u32,      // nodes
    count: u32,  // edges in this chunk
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> parent: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read> src: array<u32>;
@group(0) @binding(3) var<storage, read> dst: array<u32>;
@group(0) @binding(4) var<storage, read_write> changed: atomic<u32>;

const WORKGROUP_SIZE: u32 = 256u;

// 2-D dispatch: more than 65,535 workgroups per dimension spill into y.
fn global_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WORKGROUP_SIZE + lid;
}

fn find(x: u32) -> u32 {
    var p = atomicLoad(&parent[x]);
    loop {
        let gp = atomicLoad(&parent[p]);
        if (gp == p) {
            break;
        }
        p = gp;
    }
    return p;
}

@compute @workgroup_size(256)
fn hook(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = global_index(wg, nwg, lid);
    if (e >= params.count) {
        return;
    }
    let ru = find(src[e]);
    let rv = find(dst[e]);
    if (ru != rv) {
        // Hook the larger root under the smaller one. A concurrent hook may have lowered
        // it further; then this edge is seen again in the next round.
        atomicMin(&parent[max(ru, rv)], min(ru, rv));
        atomicStore(&changed, 1u);
    }
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
    loop {
        let p = atomicLoad(&parent[i]);
        let gp = atomicLoad(&parent[p]);
        if (p == gp) {
            break;
        }
        atomicMin(&parent[i], gp);
    }
}
