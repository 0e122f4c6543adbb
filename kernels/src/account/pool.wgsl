// One Jacobi step of the haircut pool over each address's transfers in chain order. Every
// address is a pool: an exact balance b (256 bits, eight u32 limbs, Ethereum's uint256)
// and the tainted share f of it. Walking its events in order, an incoming transfer of a
// carrying share phi (from the previous step, x_old) makes f = f·b/(b+a) + phi·a/(b+a)
// and b = b + a; an outgoing transfer carries x_new = f (a shortfall, funds the tables do
// not show arriving, counts as clean: f = f·b/a first), then b = b − a, and a pool left
// at exactly zero forgets its share: no rounding residue survives an emptied pool. Seeds
// are wholly tainted pools; stops receive but pass nothing on; a transfer whose tainted
// amount a·f is below min_value carries nothing (the pool keeps that taint). hop[v] is the
// first step at which a transfer into v carried taint (an atomic min of the same step
// number, so the order of threads does not matter). After H steps x is the taint along
// paths of at most H transfers; at the fixpoint it equals one sequential pass in chain
// order.
//
// Shares are Frac: m · 2^(e − 32) with a u32 mantissa (m ≥ 2^31, or 0 for nothing) and an
// i32 exponent, in integer arithmetic only (truncating), so the rayon twin (cpu.rs,
// frac.rs) computes the same bits. No share is ever a difference of two others.

struct Params {
    nodes: u32,
    iter: u32,
    min_m: u32,
    min_e: i32,
}

struct Frac {
    m: u32,
    e: i32,
}

const UNREACHED: u32 = 0xffffffffu;
const WORKGROUP_SIZE: u32 = 256u;
const OUT: u32 = 0x80000000u;
const SEED: u32 = 1u;
const STOP: u32 = 2u;
const TOP: u32 = 0x80000000u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ev_ptr: array<u32>;
@group(0) @binding(2) var<storage, read> ev: array<u32>;
// Eight little-endian limbs per transfer.
@group(0) @binding(3) var<storage, read> amount: array<u32>;
@group(0) @binding(4) var<storage, read> dst: array<u32>;
@group(0) @binding(5) var<storage, read> flags: array<u32>;
// (mantissa, exponent bits) per transfer.
@group(0) @binding(6) var<storage, read> x_old: array<vec2<u32>>;
@group(0) @binding(7) var<storage, read_write> x_new: array<vec2<u32>>;
@group(0) @binding(8) var<storage, read_write> hop: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read_write> changed: atomic<u32>;

fn zero_frac() -> Frac {
    return Frac(0u, 0);
}

fn one_frac() -> Frac {
    return Frac(TOP, 1);
}

fn same(a: Frac, b: Frac) -> bool {
    return a.m == b.m && a.e == b.e;
}

// The high 32 bits of a · b.
fn mul_hi(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let lo = (ll & 0xffffu) | (mid << 16u);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

fn mul(a: Frac, b: Frac) -> Frac {
    if (a.m == 0u || b.m == 0u) {
        return zero_frac();
    }
    let p = mul_hi(a.m, b.m);
    if ((p.y & TOP) != 0u) {
        return Frac(p.y, a.e + b.e);
    }
    return Frac((p.y << 1u) | (p.x >> 31u), a.e + b.e - 1);
}

fn plus(a: Frac, b: Frac) -> Frac {
    if (a.m == 0u) {
        return b;
    }
    if (b.m == 0u) {
        return a;
    }
    var hi = a;
    var lo = b;
    if (b.e > a.e) {
        hi = b;
        lo = a;
    }
    let d = u32(hi.e - lo.e);
    if (d >= 32u) {
        return hi;
    }
    let s = hi.m + (lo.m >> d);
    if (s < hi.m) {
        return Frac((s >> 1u) | TOP, hi.e + 1);
    }
    return Frac(s, hi.e);
}

fn div(x: Frac, y: Frac) -> Frac {
    if (x.m == 0u || y.m == 0u) {
        return zero_frac();
    }
    var r = x.m;
    var q = 0u;
    var rounds = 32u;
    var e = x.e - y.e;
    if (x.m >= y.m) {
        r = x.m - y.m;
        q = 1u;
        rounds = 31u;
        e = e + 1;
    }
    for (var i = 0u; i < rounds; i = i + 1u) {
        let top = r >> 31u;
        var r2 = r << 1u;
        q = q << 1u;
        if (top == 1u || r2 >= y.m) {
            r2 = r2 - y.m;
            q = q | 1u;
        }
        r = r2;
    }
    return Frac(q, e);
}

fn less(a: Frac, b: Frac) -> bool {
    if (a.m == 0u) {
        return b.m != 0u;
    }
    if (b.m == 0u) {
        return false;
    }
    return a.e < b.e || (a.e == b.e && a.m < b.m);
}

fn min_one(a: Frac) -> Frac {
    if (less(one_frac(), a)) {
        return one_frac();
    }
    return a;
}

fn load(e: u32) -> array<u32, 8> {
    var a: array<u32, 8>;
    for (var i = 0u; i < 8u; i = i + 1u) {
        a[i] = amount[8u * e + i];
    }
    return a;
}

fn add256(a_in: array<u32, 8>, b_in: array<u32, 8>) -> array<u32, 8> {
    var a = a_in;
    var b = b_in;
    var out: array<u32, 8>;
    var carry = 0u;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let s = a[i] + b[i];
        let c1 = select(0u, 1u, s < a[i]);
        let s2 = s + carry;
        let c2 = select(0u, 1u, s2 < s);
        out[i] = s2;
        carry = c1 + c2;
    }
    if (carry != 0u) {
        for (var i = 0u; i < 8u; i = i + 1u) {
            out[i] = 0xffffffffu;
        }
    }
    return out;
}

fn sub256(a_in: array<u32, 8>, b_in: array<u32, 8>) -> array<u32, 8> {
    var a = a_in;
    var b = b_in;
    var out: array<u32, 8>;
    var borrow = 0u;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let d1 = a[i] - b[i];
        let o1 = a[i] < b[i];
        let d2 = d1 - borrow;
        let o2 = d1 < borrow;
        out[i] = d2;
        borrow = select(0u, 1u, o1 || o2);
    }
    return out;
}

fn lt256(a_in: array<u32, 8>, b_in: array<u32, 8>) -> bool {
    var a = a_in;
    var b = b_in;
    for (var j = 0u; j < 8u; j = j + 1u) {
        let i = 7u - j;
        if (a[i] != b[i]) {
            return a[i] < b[i];
        }
    }
    return false;
}

fn zero256(a_in: array<u32, 8>) -> bool {
    var a = a_in;
    var any = 0u;
    for (var i = 0u; i < 8u; i = i + 1u) {
        any = any | a[i];
    }
    return any == 0u;
}

// The top 32 bits of an integer, truncated.
fn frac_of(a_in: array<u32, 8>) -> Frac {
    var a = a_in;
    var k = -1;
    for (var j = 0; j < 8; j = j + 1) {
        let i = 7 - j;
        if (a[i] != 0u) {
            k = i;
            break;
        }
    }
    if (k < 0) {
        return zero_frac();
    }
    let hi = a[k];
    var lo = 0u;
    if (k > 0) {
        lo = a[k - 1];
    }
    let lz = countLeadingZeros(hi);
    var w = hi << lz;
    if (lz > 0u) {
        w = w | (lo >> (32u - lz));
    }
    return Frac(w, 32 * k - i32(lz) + 32);
}

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
    let min_value = Frac(params.min_m, params.min_e);
    var b: array<u32, 8>;
    var f = zero_frac();
    for (var i = ev_ptr[v]; i < ev_ptr[v + 1u]; i = i + 1u) {
        let w = ev[i];
        let e = w & ~OUT;
        let a = load(e);
        if ((w & OUT) == 0u) {
            let s = add256(b, a);
            if (seed) {
                f = one_frac();
            } else if (!zero256(s)) {
                let old = x_old[e];
                let phi = Frac(old.x, bitcast<i32>(old.y));
                if (!same(phi, f)) {
                    let fs = frac_of(s);
                    f = min_one(plus(mul(f, div(frac_of(b), fs)), mul(phi, div(frac_of(a), fs))));
                }
            }
            b = s;
        } else {
            if (lt256(b, a)) {
                if (!seed) {
                    f = mul(f, div(frac_of(b), frac_of(a)));
                }
                b = a;
            }
            var phi = f;
            if (seed) {
                phi = one_frac();
            } else if (stop) {
                phi = zero_frac();
            }
            if (zero256(a)) {
                phi = zero_frac();
            }
            if (phi.m != 0u && min_value.m != 0u && less(mul(frac_of(a), phi), min_value)) {
                phi = zero_frac();
            }
            x_new[e] = vec2<u32>(phi.m, bitcast<u32>(phi.e));
            if (phi.m != 0u) {
                atomicMin(&hop[dst[e]], params.iter);
            }
            let old = x_old[e];
            if (phi.m != old.x || bitcast<u32>(phi.e) != old.y) {
                atomicStore(&changed, 1u);
            }
            let nb = sub256(b, a);
            if (!seed) {
                if (zero256(nb)) {
                    f = zero_frac();
                } else if (phi.m == 0u && f.m != 0u && !stop) {
                    // Held back by the minimum: the pool keeps that taint.
                    f = min_one(mul(f, div(frac_of(b), frac_of(nb))));
                }
            }
            b = nb;
        }
    }
}
