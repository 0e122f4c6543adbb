// One Jacobi step of the haircut pool over each address's transfers in chain order. Every
// address is a pool (balance b, tainted part t). Walking its events in order, an incoming
// transfer adds its amount to b and the taint it carried in the previous step (x_old) to
// t; an outgoing transfer carries x_new = amount · t / b (a shortfall — funds the tables
// do not show arriving — counts as clean). Seeds are wholly tainted pools; stops receive
// but pass nothing on; below min_value a transfer carries nothing. hop[v] is the first
// step at which a transfer into v carried taint (an atomic min of the same step number, so
// the order of threads does not matter). After H steps x is the taint along paths of at most H
// transfers; at the fixpoint it equals one sequential pass in chain order. The rayon twin
// is cpu.rs; both use f32 in the same order.

struct Params {
    nodes: u32,
    iter: u32,
    min_value: f32,
    pad: u32,
}

const UNREACHED: u32 = 0xffffffffu;
const WORKGROUP_SIZE: u32 = 256u;
const OUT: u32 = 0x80000000u;
const SEED: u32 = 1u;
const STOP: u32 = 2u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ev_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> ev: array<u32>;
@group(0) @binding(3) var<storage, read> amount: array<f32>;
@group(0) @binding(4) var<storage, read> dst: array<u32>;
@group(0) @binding(5) var<storage, read> flags: array<u32>;
@group(0) @binding(6) var<storage, read> x_old: array<f32>;
@group(0) @binding(7) var<storage, read_write> x_new: array<f32>;
@group(0) @binding(8) var<storage, read_write> hop: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read_write> changed: atomic<u32>;

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
    let seed = (flags[v] & SEED) != 0u;
    let stop = (flags[v] & STOP) != 0u;
    var b = 0.0;
    var t = 0.0;
    for (var i = ev_ptr[v]; i < ev_ptr[v + 1u]; i = i + 1u) {
        let w = ev[i];
        let e = w & ~OUT;
        let a = amount[e];
        if ((w & OUT) == 0u) {
            b = b + a;
            if (seed) {
                t = b;
            } else {
                t = t + x_old[e];
            }
        } else {
            if (b < a) {
                b = a;
                if (seed) {
                    t = b;
                }
            }
            var x = 0.0;
            if (seed) {
                x = a;
            } else if (!stop && t > 0.0) {
                x = min(a, a * (t / b));
            }
            // Below 1e-30 counts as nothing: GPUs may flush denormals, the CPU does not.
            if (x < params.min_value || x < 1e-30) {
                x = 0.0;
            }
            x_new[e] = x;
            if (x > 0.0) {
                atomicMin(&hop[dst[e]], params.iter);
            }
            if (x != x_old[e]) {
                atomicStore(&changed, 1u);
            }
            b = b - a;
            t = min(max(t - x, 0.0), b);
        }
    }
}
