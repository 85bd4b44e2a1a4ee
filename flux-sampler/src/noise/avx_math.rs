//! One lane of the AVX2 `log` and `sincos` that PyTorch's float normal kernel uses on AVX2 CPUs.
//!
//! Torch builds its AVX2 kernels with a vectorised Box-Muller whose `log` and `sincos` are
//! Cephes-style polynomials (`ATen/native/cpu/avx_mathfun.h`, after Julien Pommier's
//! `sse_mathfun`). Every vector instruction there works lane by lane, so one lane in scalar
//! `f32` arithmetic gives the same bits, provided each operation is the same IEEE operation.
//! The released wheels are compiled by GCC with FMA enabled and floating-point contraction on,
//! so a multiply whose only use is an add is fused: `madd` marks those places. The pattern was
//! read from the disassembly of torch 2.15's `libtorch_cpu.so` (the AVX2 `normal_kernel`) and is
//! confirmed by the bit-exact fixtures; without the fusions a few values per thousand differ.

// The constants as the kernel holds them: its decimal literals rounded to `f32` (spelled as bit
// patterns, so no decimal re-rounding can change them).
// Cephes `logf`: sqrt(1/2) and the polynomial 7.0376836292e-2 ... 3.3333331174e-1.
const SQRT_HALF: f32 = f32::from_bits(0x3f35_04f3);
const LOG_P: [f32; 9] = [
    f32::from_bits(0x3d90_21bb),
    f32::from_bits(0xbdeb_d1b8),
    f32::from_bits(0x3def_251a),
    f32::from_bits(0xbdfe_5d4f),
    f32::from_bits(0x3e11_e9bf),
    f32::from_bits(0xbe2a_ae50),
    f32::from_bits(0x3e4c_ceac),
    f32::from_bits(0xbe7f_fffc),
    f32::from_bits(0x3eaa_aaaa),
];
/// ln 2 split in two: -2.12194440e-4 and 0.693359375.
const LOG_Q1: f32 = f32::from_bits(0xb95e_8083);
const LOG_Q2: f32 = f32::from_bits(0x3f31_8000);

// Cephes `sinf`/`cosf`: 4/pi, pi/4 split in three (negated), the two polynomials.
const FOUR_OVER_PI: f32 = f32::from_bits(0x3fa2_f983);
const MINUS_DP1: f32 = f32::from_bits(0xbf49_0000);
const MINUS_DP2: f32 = f32::from_bits(0xb97d_a000);
const MINUS_DP3: f32 = f32::from_bits(0xb322_2169);
const SIN_P: [f32; 3] = [
    f32::from_bits(0xb94c_a1f9),
    f32::from_bits(0x3c08_839e),
    f32::from_bits(0xbe2a_aaa3),
];
const COS_P: [f32; 3] = [
    f32::from_bits(0x37cc_f5ce),
    f32::from_bits(0xbab6_061a),
    f32::from_bits(0x3d2a_aaa5),
];

/// `a * b + c` with one rounding, as the compiler's contraction emits it.
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// Natural logarithm of a positive normal `x` (the kernel only passes values in (0, 1]).
pub fn log(x: f32) -> f32 {
    let x = x.max(f32::from_bits(0x0080_0000));
    let bits = x.to_bits();
    // Exponent and a mantissa scaled into [0.5, 1).
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let below = m < SQRT_HALF;
    let tmp = if below { m } else { 0.0 };
    m -= 1.0;
    e -= if below { 1.0 } else { 0.0 };
    m += tmp;
    let z = m * m;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = madd(y, m, p);
    }
    y *= m;
    // y * z + e * q1: the first product is the fused one.
    y = madd(y, z, e * LOG_Q1);
    // y - z * 0.5
    y = madd(-z, 0.5, y);
    // (m + y) + e * q2
    madd(e, LOG_Q2, m + y)
}

/// `(sin x, cos x)` for `x` in [0, 2pi) (the kernel's range; the reduction assumes |x| < 8192).
pub fn sincos(x: f32) -> (f32, f32) {
    let sign_in = x.to_bits() & 0x8000_0000;
    let x = x.abs();
    let scaled = x * FOUR_OVER_PI;
    // Truncate, then round the octant up to even (Cephes' `j = (j + 1) & ~1`).
    let j = ((scaled as i32).wrapping_add(1)) & !1;
    let y = j as f32;
    let sin_swap = ((j & 4) as u32) << 29;
    let use_sin_poly = j & 2 == 0;
    // Extended-precision reduction x - y * pi/4 in three parts.
    let mut r = madd(y, MINUS_DP1, x);
    r = madd(y, MINUS_DP2, r);
    r = madd(y, MINUS_DP3, r);
    let cos_sign = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;
    let sin_sign = sign_in ^ sin_swap;

    let z = r * r;
    // cos polynomial: ((c0 z + c1) z + c2) z z - z/2 + 1
    let mut c = madd(COS_P[0], z, COS_P[1]);
    c = madd(c, z, COS_P[2]);
    c *= z;
    c = madd(c, z, -(z * 0.5));
    c += 1.0;
    // sin polynomial: ((s0 z + s1) z + s2) z x + x
    let mut s = madd(SIN_P[0], z, SIN_P[1]);
    s = madd(s, z, SIN_P[2]);
    s *= z;
    s = madd(s, r, r);

    // The kernel blends the two polynomials with masks and additions of +0.0 (which turn a -0.0
    // into +0.0); the same additions keep the zero signs identical.
    let (sin_v, cos_v) = if use_sin_poly {
        (0.0 + s, c + 0.0)
    } else {
        (c + 0.0, 0.0 + s)
    };
    (
        f32::from_bits(sin_v.to_bits() ^ sin_sign),
        f32::from_bits(cos_v.to_bits() ^ cos_sign),
    )
}
