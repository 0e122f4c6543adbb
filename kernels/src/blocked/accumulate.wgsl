// One chunk's contribution to a destination block's row sums (the blocked engine's
// `accumulate`, on the GPU):
//
//   acc[row0 + i] += Σ_{e in row i, chunk order} weight[e] · f_src[src[e]]
//
// over the rows of one dispatch (a row range of one chunk whose arrays fit a binding).
// With a minimum tainted value, an edge whose source carries f · gate[e] below it (or no
// taint) adds nothing. seed == 1: every source is a constant 1 (seed outputs). Each row
// is one thread and adds its edges in order onto the sum the earlier chunks left, as the
// CPU twin (`accumulate` in mod.rs) does, so both give the same bits.

struct Params {
    row0: u32,       // first row (in the destination block) of this dispatch
    rows: u32,       // rows in this dispatch
    min_value: f32,  // minimum tainted value (sats); 0 for none
    seed: u32,       // 1: sources are constant 1
}

const WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> row_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<u32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> gate: array<f32>;
@group(0) @binding(5) var<storage, read> f_src: array<f32>;
@group(0) @binding(6) var<storage, read_write> acc: array<f32>;

@compute @workgroup_size(256)
fn add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * WORKGROUP_SIZE + lid;
    if (i >= params.rows) {
        return;
    }
    let v = params.row0 + i;
    var a = acc[v];
    for (var e = row_ptr[i]; e < row_ptr[i + 1u]; e = e + 1u) {
        var fs = 1.0;
        if (params.seed == 0u) {
            fs = f_src[src[e]];
        }
        if (params.min_value > 0.0) {
            if (fs > 0.0 && fs * gate[e] >= params.min_value) {
                a = a + weight[e] * fs;
            }
        } else {
            a = a + weight[e] * fs;
        }
    }
    acc[v] = a;
}
