// One Jacobi step of time-respecting poison over a CSR of in-edges (transfers into each
// address, in any order):
//
//   arr_new[v] = min(arr_old[v], min{ time[e] : e into v, arr_old[src[e]] < time[e],
//                                               src[e] not a stop, amount[e] >= min_value })
//
// Times are the transfers' ranks in chain order, from 1; seeds arrive at 0. hop[v] records
// the first step at which v has an arrival. After H steps arr is the earliest arrival over
// time-respecting paths of at most H transfers. The rayon twin is cpu.rs.

struct Params {
    nodes: u32,
    iter: u32,
    min_value: f32,
    pad: u32,
}

const UNREACHED: u32 = 0xffffffffu;
const WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> row_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<u32>;
@group(0) @binding(3) var<storage, read> time: array<u32>;
@group(0) @binding(4) var<storage, read> amount: array<f32>;
@group(0) @binding(5) var<storage, read> flags: array<u32>;
@group(0) @binding(6) var<storage, read> arr_old: array<u32>;
@group(0) @binding(7) var<storage, read_write> arr_new: array<u32>;
@group(0) @binding(8) var<storage, read_write> hop: array<u32>;
@group(0) @binding(9) var<storage, read_write> changed: atomic<u32>;

const STOP: u32 = 2u;

@compute @workgroup_size(256)
fn step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let v = (wg.y * nwg.x + wg.x) * WORKGROUP_SIZE + lid;
    if (v >= params.nodes) {
        return;
    }
    var best = arr_old[v];
    for (var e = row_ptr[v]; e < row_ptr[v + 1u]; e = e + 1u) {
        let s = src[e];
        let a = arr_old[s];
        let t = time[e];
        if (a != UNREACHED && a < t && t < best && (flags[s] & STOP) == 0u
            && amount[e] >= params.min_value) {
            best = t;
        }
    }
    arr_new[v] = best;
    if (best != UNREACHED && hop[v] == UNREACHED) {
        hop[v] = params.iter;
    }
    if (best != arr_old[v]) {
        atomicStore(&changed, 1u);
    }
}
