//! `Erf` and the exact `Gelu` over whole tensors: the values of
//! [`libm::erff`] (FreeBSD's `s_erff.c` and `e_expf.c` as the `libm` crate
//! ports them), bit for bit, computed sixteen values at a time.
//!
//! `libm::erff` picks one of six formulas by the argument's magnitude, and
//! the largest of them calls `expf` twice: a branch and a call per value,
//! which no compiler vectorises (17-18 ns a value on the Intel machine of
//! 2026-12-06, 4.5% of a MiniLM profile through its six `Erf` nodes). Here every formula is computed for
//! every value of a block, in the same operations and order as the port
//! (Rust never contracts `a * b + c` into a fused multiply-add, so each
//! rounding is the same), and the formula `erff` would have taken is
//! selected per lane: a branch-free loop that the instruction set chosen by
//! [`raella_device::Kernel::dispatch_selected`] vectorises. The values are
//! `erff`'s on every `f32` (checked against it on all 2^32 inputs once, and
//! on a sample of 2^24 and every formula's boundaries by the tests).

// The port's constants, written as it writes them.
#![allow(clippy::excessive_precision, clippy::unreadable_literal)]

/// Values per block.
const LANES: usize = 16;

const ERX: f32 = 8.4506291151e-01;
const EFX8: f32 = 1.0270333290e+00;
const PP: [f32; 5] = [
    1.2837916613e-01,
    -3.2504209876e-01,
    -2.8481749818e-02,
    -5.7702702470e-03,
    -2.3763017452e-05,
];
const QQ: [f32; 5] = [
    3.9791721106e-01,
    6.5022252500e-02,
    5.0813062117e-03,
    1.3249473704e-04,
    -3.9602282413e-06,
];
const PA: [f32; 7] = [
    -2.3621185683e-03,
    4.1485610604e-01,
    -3.7220788002e-01,
    3.1834661961e-01,
    -1.1089469492e-01,
    3.5478305072e-02,
    -2.1663755178e-03,
];
const QA: [f32; 6] = [
    1.0642088205e-01,
    5.4039794207e-01,
    7.1828655899e-02,
    1.2617121637e-01,
    1.3637083583e-02,
    1.1984500103e-02,
];
const RA: [f32; 8] = [
    -9.8649440333e-03,
    -6.9385856390e-01,
    -1.0558626175e+01,
    -6.2375331879e+01,
    -1.6239666748e+02,
    -1.8460508728e+02,
    -8.1287437439e+01,
    -9.8143291473e+00,
];
const SA: [f32; 8] = [
    1.9651271820e+01,
    1.3765776062e+02,
    4.3456588745e+02,
    6.4538726807e+02,
    4.2900814819e+02,
    1.0863500214e+02,
    6.5702495575e+00,
    -6.0424413532e-02,
];
const RB: [f32; 7] = [
    -9.8649431020e-03,
    -7.9928326607e-01,
    -1.7757955551e+01,
    -1.6063638306e+02,
    -6.3756646729e+02,
    -1.0250950928e+03,
    -4.8351919556e+02,
];
const SB: [f32; 7] = [
    3.0338060379e+01,
    3.2579251099e+02,
    1.5367296143e+03,
    3.1998581543e+03,
    2.5530502930e+03,
    4.7452853394e+02,
    -2.2440952301e+01,
];

// `e_expf.c`'s constants.
const LN2_HI: f32 = 6.9314575195e-01;
const LN2_LO: f32 = 1.4286067653e-06;
const INV_LN2: f32 = 1.4426950216e+00;
const P1: f32 = 1.6666625440e-1;
const P2: f32 = -2.7667332906e-3;

/// `libm::expf(x)` for `|x| < 87.3` (`erff` calls it on `[-37, 1]`), as its
/// port computes it, without a branch. Other arguments give some value.
#[inline(always)]
fn expf(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits >> 31;
    let hx = bits & 0x7fff_ffff;
    // The argument reduction's multiple of ln 2: rounded for |x| > 1.5 ln 2,
    // +-1 above 0.5 ln 2, none below.
    let half = if sign == 0 { 0.5 } else { -0.5 };
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let k = if hx > 0x3f85_1592 {
        (INV_LN2 * x + half) as i32
    } else if hx > 0x3eb1_7218 {
        1 - 2 * sign as i32
    } else {
        0
    };
    #[allow(clippy::cast_precision_loss)]
    let kf = k as f32;
    // With k = 0: hi = x, lo = 0 and xr = x, as the port's middle case.
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let xr = hi - lo;
    let xx = xr * xr;
    let c = xr - xx * (P1 + xx * P2);
    let y = 1.0 + (xr * c / (2.0 - c) - lo + hi);
    // `scalbnf(y, k)` for k in the normal exponents: one exact product.
    #[allow(clippy::cast_sign_loss)]
    let scale = f32::from_bits(((k.clamp(-126, 127) + 127) as u32) << 23);
    if hx > 0x3900_0000 { y * scale } else { 1.0 + x }
}

/// `libm::erff(x)`, every formula computed and the one `erff` takes kept.
#[inline(always)]
#[allow(clippy::many_single_char_names)]
fn erf(x: f32) -> f32 {
    let bits = x.to_bits();
    let negative = bits >> 31 != 0;
    let ix = bits & 0x7fff_ffff;
    let ax = f32::from_bits(ix);
    // |x| < 2^-28.
    let tiny = 0.125 * (8.0 * x + EFX8 * x);
    // |x| < 0.84375.
    let z = x * x;
    let r = PP[0] + z * (PP[1] + z * (PP[2] + z * (PP[3] + z * PP[4])));
    let s = 1.0 + z * (QQ[0] + z * (QQ[1] + z * (QQ[2] + z * (QQ[3] + z * QQ[4]))));
    let small = x + x * (r / s);
    // |x| < 1.25: 1 - erfc1(x).
    let s1 = ax - 1.0;
    let p = PA[0]
        + s1 * (PA[1] + s1 * (PA[2] + s1 * (PA[3] + s1 * (PA[4] + s1 * (PA[5] + s1 * PA[6])))));
    let q =
        1.0 + s1 * (QA[0] + s1 * (QA[1] + s1 * (QA[2] + s1 * (QA[3] + s1 * (QA[4] + s1 * QA[5])))));
    let near = 1.0 - (1.0 - ERX - p / q);
    // |x| < 6: 1 - erfc2(x), over 1/x^2 with one of two rational fits.
    let t = 1.0 / (ax * ax);
    let ra = RA[0]
        + t * (RA[1]
            + t * (RA[2] + t * (RA[3] + t * (RA[4] + t * (RA[5] + t * (RA[6] + t * RA[7]))))));
    let sa = 1.0
        + t * (SA[0]
            + t * (SA[1]
                + t * (SA[2] + t * (SA[3] + t * (SA[4] + t * (SA[5] + t * (SA[6] + t * SA[7])))))));
    let rb =
        RB[0] + t * (RB[1] + t * (RB[2] + t * (RB[3] + t * (RB[4] + t * (RB[5] + t * RB[6])))));
    let sb = 1.0
        + t * (SB[0]
            + t * (SB[1] + t * (SB[2] + t * (SB[3] + t * (SB[4] + t * (SB[5] + t * SB[6]))))));
    let (rr, ss) = if ix < 0x4036_db6d { (ra, sa) } else { (rb, sb) };
    let zz = f32::from_bits(ix & 0xffff_e000);
    let far = 1.0 - expf(-zz * zz - 0.5625) * expf((zz - ax) * (zz + ax) + rr / ss) / ax;
    // |x| >= 6.
    let flat = 1.0 - f32::from_bits(0x0380_0000);
    let y = if ix < 0x3fa0_0000 {
        near
    } else if ix < 0x40c0_0000 {
        far
    } else {
        flat
    };
    let signed = if negative { -y } else { y };
    // NaN stays NaN; +-inf gives +-1.
    let special = 1.0 - 2.0 * f32::from(u8::from(negative)) + 1.0 / x;
    if ix < 0x3180_0000 {
        tiny
    } else if ix < 0x3f58_0000 {
        small
    } else if ix < 0x7f80_0000 {
        signed
    } else {
        special
    }
}

/// `f` over every value in place, [`LANES`] at a time (the rest one by one),
/// on the instruction set [`raella_device::Kernel::dispatch_selected`] picks.
/// A macro, not a function taking `f`: a function passed in that way was
/// called per value, not inlined, and nothing vectorised.
macro_rules! in_blocks {
    ($v:expr, |$x:ident| $f:expr) => {
        raella_device::Kernel::dispatch_selected(
            #[inline(always)]
            || {
                let mut parts = $v.chunks_exact_mut(LANES);
                for block in &mut parts {
                    for $x in block.iter_mut() {
                        *$x = $f;
                    }
                }
                for $x in parts.into_remainder() {
                    *$x = $f;
                }
            },
        )
    };
}

/// `libm::erff` of every value, in place (sixteen at a time, vectorised).
pub(crate) fn erf_in_place(v: &mut [f32]) {
    in_blocks!(v, |x| erf(*x));
}

/// ONNX's exact `Gelu` (`0.5 x (1 + erf(x / sqrt 2))`, with `libm::erff`)
/// of every value, in place, as [`erf_in_place`].
pub(crate) fn gelu_in_place(v: &mut [f32]) {
    in_blocks!(v, |x| 0.5
        * *x
        * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first input whose two results differ, if any.
    fn first_difference(inputs: impl Iterator<Item = u32>) -> Option<(f32, f32, f32)> {
        let xs: Vec<f32> = inputs.map(f32::from_bits).collect();
        let mut got = xs.clone();
        erf_in_place(&mut got);
        xs.iter()
            .zip(&got)
            .map(|(&x, &g)| (x, g, libm::erff(x)))
            .find(|&(_, g, want)| g.to_bits() != want.to_bits() && !(g.is_nan() && want.is_nan()))
    }

    #[test]
    fn erf_is_libm_erff_on_a_sample_and_every_boundary() {
        // A stride through all 2^32 patterns (every exponent, both signs).
        assert_eq!(
            first_difference((0..1u32 << 24).map(|i| i.wrapping_mul(257))),
            None
        );
        // 4,096 patterns either side of each of erff's thresholds.
        let edges: [u32; 6] = [
            0x3180_0000,
            0x3f58_0000,
            0x3fa0_0000,
            0x4036_db6d,
            0x40c0_0000,
            0x7f80_0000,
        ];
        for e in edges {
            let near = (e - 4096..e + 4096).flat_map(|b| [b, b | 0x8000_0000]);
            assert_eq!(first_difference(near), None, "around {e:#x}");
        }
        // Specials.
        for x in [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
        ] {
            assert_eq!(first_difference(std::iter::once(x.to_bits())), None, "{x}");
        }
    }

    /// The branch-free `expf` is `libm::expf` where `erff` calls it
    /// (`[-37, 1]`): a stride through that range and 4,096 patterns either
    /// side of each of expf's own thresholds (as arguments, both signs).
    #[test]
    fn expf_is_libm_expf_where_erf_calls_it() {
        let same = |b: u32| {
            let x = f32::from_bits(b);
            !(-37.0..=1.0).contains(&x) || expf(x).to_bits() == libm::expf(x).to_bits()
        };
        let stride = (0..1u32 << 22).map(|i| i.wrapping_mul(1021));
        let edges = [0x3900_0000u32, 0x3eb1_7218, 0x3f85_1592]
            .into_iter()
            .flat_map(|e| (e - 4096..e + 4096).flat_map(|b| [b, b | 0x8000_0000]));
        if let Some(b) = stride.chain(edges).find(|&b| !same(b)) {
            let x = f32::from_bits(b);
            panic!("expf({x}) = {}, libm {}", expf(x), libm::expf(x));
        }
    }

    #[test]
    fn gelu_is_the_scalar_formula() {
        let xs: Vec<f32> = (0..1u32 << 20)
            .map(|i| f32::from_bits(i.wrapping_mul(4099)))
            .chain((-4000..4000).map(|i| i as f32 / 500.0))
            .collect();
        let mut got = xs.clone();
        gelu_in_place(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "gelu({x}) = {g}, want {want}"
            );
        }
    }

    /// All 2^32 inputs (about five minutes on one core in release; run with
    /// `cargo test --release -p raella-onnx -- --ignored erf_is_libm`).
    #[test]
    #[ignore = "exhaustive: every f32"]
    fn erf_is_libm_erff_on_every_f32() {
        let step = 1u64 << 24;
        for start in (0..1u64 << 32).step_by(1 << 24) {
            let range = (start..start + step).map(|b| u32::try_from(b).expect("below 2^32"));
            assert_eq!(first_difference(range), None);
        }
    }
}
