//! The arithmetic of the haircut pool, shared bit for bit by `pool.wgsl` and its rayon
//! twin: exact 256-bit balances ([`U256`], eight little-endian u32 limbs, the range of
//! Ethereum's `uint256`) and tainted shares as [`Frac`], a 32-bit integer mantissa with a
//! 32-bit exponent. Only integer operations, so the GPU and the CPU agree exactly, and no
//! share is ever computed by subtraction, so a pool that forwarded everything keeps no
//! rounding residue (its balance is exactly zero and its share is reset).
//!
//! A share's relative error is at most 2^-31 per operation (truncation); the exponent
//! reaches shares far below f32's or f64's range (1 unit of taint in a pool of 2^256 − 1).

/// A non-negative integer below 2^256, little-endian u32 limbs.
pub type U256 = [u32; 8];

pub const U256_ZERO: U256 = [0; 8];

/// `a + b`, saturating at 2^256 − 1 (only reachable on chains whose observed inflows
/// exceed any token's supply).
pub fn add(a: &U256, b: &U256) -> U256 {
    let mut out = [0u32; 8];
    let mut carry = 0u64;
    for i in 0..8 {
        let s = u64::from(a[i]) + u64::from(b[i]) + carry;
        out[i] = s as u32;
        carry = s >> 32;
    }
    if carry != 0 { [u32::MAX; 8] } else { out }
}

/// `a − b`; `a ≥ b`.
pub fn sub(a: &U256, b: &U256) -> U256 {
    let mut out = [0u32; 8];
    let mut borrow = 0u32;
    for i in 0..8 {
        let (d1, o1) = a[i].overflowing_sub(b[i]);
        let (d2, o2) = d1.overflowing_sub(borrow);
        out[i] = d2;
        borrow = u32::from(o1 || o2);
    }
    out
}

pub fn lt(a: &U256, b: &U256) -> bool {
    for i in (0..8).rev() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    false
}

pub fn is_zero(a: &U256) -> bool {
    a.iter().all(|&l| l == 0)
}

/// A decimal string (at most 2^256 − 1) as limbs.
pub fn parse_decimal(s: &str) -> Option<U256> {
    if s.is_empty() || s.len() > 78 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut out = U256_ZERO;
    for c in s.bytes() {
        let mut carry = u64::from(c - b'0');
        for limb in &mut out {
            let v = u64::from(*limb) * 10 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(out)
}

/// The nearest-below f64 of limbs (for reports).
pub fn to_f64(a: &U256) -> f64 {
    a.iter()
        .rev()
        .fold(0.0f64, |acc, &l| acc * 4_294_967_296.0 + f64::from(l))
}

/// An integer as limbs (amounts of the f32 test graphs).
pub fn from_u128(v: u128) -> U256 {
    let mut out = U256_ZERO;
    for (i, limb) in out.iter_mut().take(4).enumerate() {
        *limb = (v >> (32 * i)) as u32;
    }
    out
}

/// `m · 2^(e − 32)`: zero when `m` is 0, else `m ≥ 2^31`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Frac {
    pub m: u32,
    pub e: i32,
}

pub const ZERO: Frac = Frac { m: 0, e: 0 };
pub const ONE: Frac = Frac {
    m: 0x8000_0000,
    e: 1,
};

impl Frac {
    pub fn is_zero(self) -> bool {
        self.m == 0
    }

    /// The shader's storage form: (mantissa, exponent bits).
    pub fn to_words(self) -> [u32; 2] {
        [self.m, self.e as u32]
    }

    pub fn from_words(w: [u32; 2]) -> Self {
        Self {
            m: w[0],
            e: w[1] as i32,
        }
    }

    pub fn to_f64(self) -> f64 {
        if self.m == 0 {
            return 0.0;
        }
        // Two factors, so neither over- nor underflows before the product does.
        let e = i64::from(self.e) - 32;
        let half = (e / 2) as i32;
        f64::from(self.m) * 2f64.powi(half) * 2f64.powi((e - i64::from(half)) as i32)
    }

    /// The largest Frac not above `v` (v ≥ 0, finite).
    pub fn from_f64(v: f64) -> Self {
        if v.is_nan() || v <= 0.0 || v.is_infinite() {
            return ZERO;
        }
        let (mut m, mut e) = (v, 32i32);
        while m >= 4_294_967_296.0 {
            m /= 2.0;
            e += 1;
        }
        while m < 2_147_483_648.0 {
            m *= 2.0;
            e -= 1;
        }
        Frac { m: m as u32, e }
    }
}

/// `a · b`, truncated.
pub fn mul(a: Frac, b: Frac) -> Frac {
    if a.m == 0 || b.m == 0 {
        return ZERO;
    }
    let p = u64::from(a.m) * u64::from(b.m);
    if p >> 63 != 0 {
        Frac {
            m: (p >> 32) as u32,
            e: a.e + b.e,
        }
    } else {
        Frac {
            m: (p >> 31) as u32,
            e: a.e + b.e - 1,
        }
    }
}

/// `a + b`, truncated.
pub fn plus(a: Frac, b: Frac) -> Frac {
    if a.m == 0 {
        return b;
    }
    if b.m == 0 {
        return a;
    }
    let (hi, lo) = if b.e > a.e { (b, a) } else { (a, b) };
    let d = (hi.e - lo.e) as u32;
    if d >= 32 {
        return hi;
    }
    let (s, carry) = hi.m.overflowing_add(lo.m >> d);
    if carry {
        Frac {
            m: (s >> 1) | 0x8000_0000,
            e: hi.e + 1,
        }
    } else {
        Frac { m: s, e: hi.e }
    }
}

/// `x / y` (y non-zero), truncated: restoring division of the mantissas, bit by bit as
/// the shader does it.
pub fn div(x: Frac, y: Frac) -> Frac {
    if x.m == 0 || y.m == 0 {
        return ZERO;
    }
    let (mut r, mut q, rounds, e) = if x.m >= y.m {
        (x.m - y.m, 1u32, 31, x.e - y.e + 1)
    } else {
        (x.m, 0u32, 32, x.e - y.e)
    };
    for _ in 0..rounds {
        let top = r >> 31;
        let mut r2 = r << 1;
        q <<= 1;
        if top == 1 || r2 >= y.m {
            r2 = r2.wrapping_sub(y.m);
            q |= 1;
        }
        r = r2;
    }
    Frac { m: q, e }
}

pub fn less(a: Frac, b: Frac) -> bool {
    match (a.m == 0, b.m == 0) {
        (true, _) => b.m != 0,
        (false, true) => false,
        _ => a.e < b.e || (a.e == b.e && a.m < b.m),
    }
}

/// At most one.
pub fn min_one(a: Frac) -> Frac {
    if less(ONE, a) { ONE } else { a }
}

/// An integer as a Frac (its top 32 bits, truncated).
pub fn of(a: &U256) -> Frac {
    let Some(k) = (0..8).rev().find(|&i| a[i] != 0) else {
        return ZERO;
    };
    let hi = a[k];
    let lo = if k > 0 { a[k - 1] } else { 0 };
    let lz = hi.leading_zeros();
    let mut w = hi << lz;
    if lz > 0 {
        w |= lo >> (32 - lz);
    }
    Frac {
        m: w,
        e: 32 * k as i32 - lz as i32 + 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs())
    }

    #[test]
    fn frac_arithmetic_is_near_exact() {
        let vals = [1.0, 0.5, 0.75, 1e-30, 3.0, 1e20, 0.123456789];
        for &a in &vals {
            for &b in &vals {
                let (fa, fb) = (Frac::from_f64(a), Frac::from_f64(b));
                assert!(close(fa.to_f64(), a, 1e-9));
                assert!(close(mul(fa, fb).to_f64(), a * b, 1e-9), "{a}·{b}");
                assert!(close(plus(fa, fb).to_f64(), a + b, 1e-9), "{a}+{b}");
                assert!(close(div(fa, fb).to_f64(), a / b, 1e-9), "{a}/{b}");
                assert_eq!(less(fa, fb), a < b, "{a} < {b}");
            }
        }
        assert_eq!(ONE.to_f64(), 1.0);
        assert_eq!(mul(ONE, ONE), ONE);
        assert_eq!(div(ONE, ONE), ONE);
        assert_eq!(min_one(Frac::from_f64(1.5)), ONE);
    }

    #[test]
    fn u256_limbs() {
        let max = parse_decimal(
            "115792089237316195423570985008687907853269984665640564039457584007913129639935",
        )
        .unwrap();
        assert_eq!(max, [u32::MAX; 8]);
        assert!(
            parse_decimal(
                "115792089237316195423570985008687907853269984665640564039457584007913129639936"
            )
            .is_none()
        );
        assert!(parse_decimal("12a").is_none() && parse_decimal("").is_none());
        let one = from_u128(1);
        assert_eq!(add(&max, &one), max, "saturates");
        assert_eq!(sub(&max, &max), U256_ZERO);
        assert_eq!(sub(&from_u128(1 << 40), &one), from_u128((1 << 40) - 1));
        assert!(lt(&one, &max) && !lt(&max, &one) && !lt(&one, &one));
        assert!(close(to_f64(&max), 2f64.powi(256), 1e-15));
        assert!(close(of(&max).to_f64(), 2f64.powi(256), 1e-9));
        assert_eq!(of(&one), ONE);
        assert_eq!(of(&from_u128(12345)).to_f64(), 12345.0);
        let r = div(of(&one), of(&max));
        assert!(close(r.to_f64(), 2f64.powi(-256), 1e-9));
    }
}
