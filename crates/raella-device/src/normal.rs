//! Fast, counter-based standard normal draws for read noise.
//!
//! A read-noise stream is a 64-bit key (from the seed and the stream path, as
//! [`crate::stream_rng`]); its `i`-th pair of normals comes from the SplitMix64
//! output `mix(key + (i + 1) * GAMMA)` alone: SplitMix64 itself with a hashed
//! starting state, so each stream has SplitMix64's statistical quality, and
//! any draw can be made without the ones before it. Each 64-bit output gives
//! two 24-bit uniforms `u1` in (0, 1] and `u2` in [0, 1), and the Box-Muller
//! transform two independent normals `sqrt(-2 ln u1) (cos 2 pi u2, sin 2 pi u2)`.
//! `ln`, `cos` and `sin` are branch-free polynomials (relative error below
//! 2e-7), so whole rows of draws vectorise. The tails end at
//! `sqrt(2 ln 2^24) = 5.77` sigma (a two-sided probability of 8e-9 is cut).
//!
//! Tested in this module: mean, variance, kurtosis, tail fractions,
//! Kolmogorov-Smirnov distance to the normal CDF, and the independence of the
//! two halves of a pair and of neighbouring draws.

/// SplitMix64's increment.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of one stream: the seed and the stream path mixed as
/// [`crate::stream_rng`] mixes them (a different domain constant, so the keys
/// are not the programming streams' seeds).
#[must_use]
#[inline]
pub fn stream_key(seed: u64, stream: &[u64]) -> u64 {
    stream.iter().fold(
        mix(seed.wrapping_add(GAMMA) ^ 0x5241_454c_4c41_0002),
        |h, &s| stream_child(h, s),
    )
}

/// The key of the stream one step below `key`:
/// `stream_child(stream_key(seed, path), s) == stream_key(seed, path ++ [s])`,
/// so a caller drawing many streams under one path hashes the path once.
#[must_use]
#[inline(always)]
pub fn stream_child(key: u64, s: u64) -> u64 {
    stream_child_of(key, child_hash(s))
}

/// The part of [`stream_child`] that depends on the step `s` alone:
/// `stream_child_of(key, child_hash(s)) == stream_child(key, s)`.
#[must_use]
#[inline(always)]
pub fn child_hash(s: u64) -> u64 {
    mix(s.wrapping_add(GAMMA))
}

/// [`stream_child`] from the step's [`child_hash`], for a caller that takes
/// the same steps under many keys (a crossbar's columns under every vector).
#[must_use]
#[inline(always)]
pub fn stream_child_of(key: u64, hashed: u64) -> u64 {
    mix(key.wrapping_add(GAMMA) ^ hashed)
}

/// [`stream_child`] for a caller that takes small steps (a crossbar's
/// columns, a layer's slices) under many keys: the steps' halves of the hash
/// come from a table made once per process (`child_hash(s)` for `s` below
/// 1,024), larger steps are hashed as usual. The same keys.
#[derive(Clone, Copy)]
pub struct ChildSteps(&'static [u64]);

impl ChildSteps {
    /// The process's table.
    #[must_use]
    pub fn new() -> Self {
        static TABLE: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
        Self(TABLE.get_or_init(|| (0..1024).map(child_hash).collect()))
    }

    /// `stream_child(key, s)`.
    #[must_use]
    #[inline(always)]
    pub fn child(self, key: u64, s: usize) -> u64 {
        stream_child_of(key, self.hash(s))
    }

    /// `child_hash(s)`, from the table when `s` is below 1,024: for a caller
    /// that takes the step `s` under many keys, [`stream_child_of`]`(key,
    /// self.hash(s)) == self.child(key, s)` with the lookup out of its loop.
    #[must_use]
    #[inline(always)]
    pub fn hash(self, s: usize) -> u64 {
        match self.0.get(s) {
            Some(&h) => h,
            None => child_hash(s as u64),
        }
    }
}

impl Default for ChildSteps {
    fn default() -> Self {
        Self::new()
    }
}

/// `ln x` for `x` in (0, 1], branch-free: `x = m 2^e`, `m` in [sqrt(1/2),
/// sqrt(2)), `ln m = 2 atanh((m - 1) / (m + 1))` by its series to `t^9`.
#[inline(always)]
fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    #[allow(clippy::cast_possible_wrap)]
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += i32::from(big);
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let p = 1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0))));
    #[allow(clippy::cast_precision_loss)]
    let ef = e as f32;
    2.0 * t * p + ef * std::f32::consts::LN_2
}

/// `x / d` for a constant `d` (the polynomials' factorial steps), without a
/// division: `q = x (1/d)`, then one correction by the fused multiply-adds
/// `e = x - q d` (exact) and `q + e (1/d)`. The same value as `x / d` for
/// every `f32` `x` in a binade, hence in all (a power of two scales both
/// sides alike while nothing is subnormal): `the_divisions_are_exact` checks
/// every mantissa for each `d` used, and every angle the draws can take. A
/// vector division issues once per several cycles on some CPUs, where this is
/// three fully pipelined operations; the divisions were most of the draws'
/// time.
#[inline(always)]
fn div_exact(x: f32, d: f32) -> f32 {
    let r = 1.0 / d;
    let q = x * r;
    let e = (-q).mul_add(d, x);
    e.mul_add(r, q)
}

/// `(cos 2 pi u, sin 2 pi u)` for `u` in [0, 1), branch-free: the quadrant
/// from `4u`, Taylor polynomials on [0, pi/2). Each `p2 / k` is a division,
/// or with `FUSED` [`div_exact`] (the same values; see [`fused`]).
#[inline(always)]
fn cos_sin_turn<const FUSED: bool>(u: f32) -> (f32, f32) {
    let q4 = 4.0 * u;
    let q = q4.floor();
    let phi = (q4 - q) * std::f32::consts::FRAC_PI_2;
    let p2 = phi * phi;
    let d = |k: f32| if FUSED { div_exact(p2, k) } else { p2 / k };
    let s = phi
        * (1.0 - d(6.0) * (1.0 - d(20.0) * (1.0 - d(42.0) * (1.0 - d(72.0) * (1.0 - d(110.0))))));
    let c = 1.0
        - p2 / 2.0
            * (1.0
                - d(12.0) * (1.0 - d(30.0) * (1.0 - d(56.0) * (1.0 - d(90.0) * (1.0 - d(132.0))))));
    // Rotate by the quadrant: q = 0: (c, s); 1: (-s, c); 2: (-c, -s); 3: (s, -c).
    // Float tests of `q` (0, 1, 2 or 3, exact), not an integer conversion:
    // the selects then vectorise.
    let swap = q == 1.0 || q == 3.0;
    let (x, y) = if swap { (s, c) } else { (c, s) };
    let neg_x = q == 1.0 || q == 2.0;
    let neg_y = q >= 2.0;
    (if neg_x { -x } else { x }, if neg_y { -y } else { y })
}

/// The pair of normals number `i` of the stream `key`.
#[inline(always)]
#[must_use]
pub fn normal_pair(key: u64, i: u64) -> (f32, f32) {
    let r = mix(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)));
    // 24-bit uniforms: exact in f32.
    #[allow(clippy::cast_precision_loss)]
    let u1 = ((r >> 40) + 1) as f32 * (1.0 / 16_777_216.0);
    #[allow(clippy::cast_precision_loss)]
    let u2 = ((r >> 16) & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0);
    let radius = (-2.0 * ln(u1)).sqrt();
    let (c, s) = cos_sin_turn::<false>(u2);
    (radius * c, radius * s)
}

/// Pairs per block of [`fill_normals`] and [`normal_pairs`] while at least
/// that many remain: several vectors of independent draws per block, so the
/// long chain of each (hash, `ln`, square root, polynomials) overlaps with the
/// others'.
const BLOCK: usize = 64;

/// Pairs per block for the rest (and the shortest stream drawn in blocks is
/// `2 x SMALL` normals).
const SMALL: usize = 16;

/// Pairs `first..first + B` of the stream `key` into `c`, `s` (the radius
/// already multiplied in): the same values as [`normal_pair`], in separate
/// fixed-size loops so each vectorises.
#[inline(always)]
fn block_pairs<const B: usize, const FUSED: bool>(
    key: u64,
    first: u64,
    c: &mut [f32; B],
    s: &mut [f32; B],
) {
    let mut r = [0u64; B];
    for (k, r) in (first..).zip(r.iter_mut()) {
        *r = mix(key.wrapping_add(k.wrapping_add(1).wrapping_mul(GAMMA)));
    }
    polar::<B, FUSED>(&r, c, s);
}

/// The pairs of normals of `B` SplitMix64 outputs (`(a[k], b[k])` from
/// `r[k]`, as [`normal_pair`]), in fixed-size loops.
#[inline(always)]
fn polar<const B: usize, const FUSED: bool>(r: &[u64; B], a: &mut [f32; B], b: &mut [f32; B]) {
    let mut u1 = [0f32; B];
    let mut u2 = [0f32; B];
    for ((x, y), &r) in u1.iter_mut().zip(u2.iter_mut()).zip(r) {
        #[allow(clippy::cast_precision_loss)]
        let (p, q) = (((r >> 40) + 1) as f32, ((r >> 16) & 0x00ff_ffff) as f32);
        *x = p * (1.0 / 16_777_216.0);
        *y = q * (1.0 / 16_777_216.0);
    }
    let mut radius = [0f32; B];
    for (rad, &u) in radius.iter_mut().zip(&u1) {
        *rad = (-2.0 * ln(u)).sqrt();
    }
    for (((x, y), &rad), &u) in a.iter_mut().zip(b.iter_mut()).zip(&radius).zip(&u2) {
        let (c, s) = cos_sin_turn::<FUSED>(u);
        *x = rad * c;
        *y = rad * s;
    }
}

/// Whether the draws' polynomials use [`div_exact`]: when the engine's kernel
/// is one of the x86 vector sets, which have fused multiply-adds (the
/// portable kernel's baseline target would call a library routine for each).
/// Either way the same values.
fn fused() -> bool {
    static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FUSED.get_or_init(|| {
        crate::Kernel::selected().is_ok_and(|k| k.loop_set() != crate::kernel::LoopSet::Baseline)
    })
}

/// Fills `out` with the stream's normals `0, 1, 2, ...` (pair `i` gives draws
/// `2i` and `2i + 1`): the same values as [`normal_pair`], computed a block of
/// pairs at a time (`block_pairs`).
#[inline(always)]
pub fn fill_normals(key: u64, out: &mut [f32]) {
    if out.len() < 2 * SMALL {
        // A short stream (a recovered column's few bits): pair by pair, not a
        // whole block of which most would be thrown away.
        for (i, p) in (0u64..).zip(out.chunks_mut(2)) {
            let (a, b) = normal_pair(key, i);
            p[0] = a;
            if let Some(q) = p.get_mut(1) {
                *q = b;
            }
        }
        return;
    }
    if fused() {
        crate::Kernel::dispatch_selected(
            #[inline(always)]
            || fill_blocks::<true>(key, out),
        );
    } else {
        fill_blocks::<false>(key, out);
    }
}

/// [`fill_normals`] of at least `2 x SMALL` normals, in blocks.
#[inline(always)]
fn fill_blocks<const FUSED: bool>(key: u64, out: &mut [f32]) {
    let mut big = out.chunks_exact_mut(2 * BLOCK);
    let mut first = 0u64;
    for whole in &mut big {
        let (mut c, mut s) = ([0f32; BLOCK], [0f32; BLOCK]);
        block_pairs::<_, FUSED>(key, first, &mut c, &mut s);
        // Fixed-size interleaving stores vectorise.
        for k in 0..BLOCK {
            whole[2 * k] = c[k];
            whole[2 * k + 1] = s[k];
        }
        first += BLOCK as u64;
    }
    for block in big.into_remainder().chunks_mut(2 * SMALL) {
        let (mut c, mut s) = ([0f32; SMALL], [0f32; SMALL]);
        block_pairs::<_, FUSED>(key, first, &mut c, &mut s);
        if let Ok(whole) = <&mut [f32; 2 * SMALL]>::try_from(&mut *block) {
            for k in 0..SMALL {
                whole[2 * k] = c[k];
                whole[2 * k + 1] = s[k];
            }
        } else {
            let half = block.len() / 2;
            let mut pairs = block.chunks_exact_mut(2);
            for ((p, &c), &s) in (&mut pairs).zip(&c).zip(&s) {
                p[0] = c;
                p[1] = s;
            }
            if let Some(last) = pairs.into_remainder().first_mut() {
                *last = c[half];
            }
        }
        first += SMALL as u64;
    }
}

/// Pair `i` of many streams at once: `(a[k], b[k]) == normal_pair(keys[k], i)`,
/// the same values, computed a block of streams at a time so the arithmetic
/// vectorises across streams (recovery draws a few normals from each of many
/// column streams).
///
/// # Panics
/// If `a` or `b` is shorter than `keys`.
#[inline(always)]
pub fn normal_pairs(keys: &[u64], i: u64, a: &mut [f32], b: &mut [f32]) {
    assert!(a.len() >= keys.len() && b.len() >= keys.len(), "outputs");
    if fused() {
        crate::Kernel::dispatch_selected(
            #[inline(always)]
            || pairs_of::<true>(keys, i, a, b),
        );
    } else {
        pairs_of::<false>(keys, i, a, b);
    }
}

/// [`normal_pairs`], the outputs checked.
#[inline(always)]
fn pairs_of<const FUSED: bool>(keys: &[u64], i: u64, a: &mut [f32], b: &mut [f32]) {
    let step = i.wrapping_add(1).wrapping_mul(GAMMA);
    let n = keys.len();
    let whole = n - n % BLOCK;
    for ((kb, ab), bb) in keys[..whole]
        .chunks_exact(BLOCK)
        .zip(a.chunks_exact_mut(BLOCK))
        .zip(b.chunks_exact_mut(BLOCK))
    {
        let kb: &[u64; BLOCK] = kb.try_into().expect("whole block");
        let mut r = [0u64; BLOCK];
        for (r, &key) in r.iter_mut().zip(kb) {
            *r = mix(key.wrapping_add(step));
        }
        let ab: &mut [f32; BLOCK] = ab.try_into().expect("whole block");
        let bb: &mut [f32; BLOCK] = bb.try_into().expect("whole block");
        polar::<BLOCK, FUSED>(&r, ab, bb);
    }
    for ((kb, ab), bb) in keys[whole..]
        .chunks(SMALL)
        .zip(a[whole..n].chunks_mut(SMALL))
        .zip(b[whole..n].chunks_mut(SMALL))
    {
        // Padded to a whole block (its extra draws are dropped): the hash
        // loop then has a fixed length and vectorises too.
        let mut r = [0u64; SMALL];
        for (r, &key) in r.iter_mut().zip(kb) {
            *r = mix(key.wrapping_add(step));
        }
        let (mut c, mut s) = ([0f32; SMALL], [0f32; SMALL]);
        polar::<SMALL, FUSED>(&r, &mut c, &mut s);
        ab.copy_from_slice(&c[..ab.len()]);
        bb.copy_from_slice(&s[..bb.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(n: usize) -> Vec<f64> {
        let mut v = vec![0f32; n];
        fill_normals(stream_key(3, &[1, 2]), &mut v);
        v.into_iter().map(f64::from).collect()
    }

    /// Every angle a draw can take (`u2`: the 2^24 multiples of 2^-24 in
    /// [0, 1)) gives the same cosine and sine, bit for bit, with
    /// [`div_exact`] as with the `f32` divisions: both kernels' draws are the
    /// same.
    #[test]
    fn the_divisions_are_exact() {
        // Blocks of angles in parallel threads (16.7 M angles; a debug build).
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let per = (1usize << 24).div_ceil(threads);
        let bad: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        (t * per..((t + 1) * per).min(1 << 24))
                            .filter(|&k| {
                                #[allow(clippy::cast_precision_loss)]
                                let u = k as f32 * (1.0 / 16_777_216.0);
                                let (a, b) = (cos_sin_turn::<true>(u), cos_sin_turn::<false>(u));
                                a.0.to_bits() != b.0.to_bits() || a.1.to_bits() != b.1.to_bits()
                            })
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(bad, 0, "angles whose cosine or sine changed");
        // And the quotient itself over every mantissa of one binade (scaling
        // by a power of two changes neither side), for each divisor used.
        for d in [
            6.0f32, 20.0, 42.0, 72.0, 110.0, 12.0, 30.0, 56.0, 90.0, 132.0,
        ] {
            let bad = (0u32..1 << 23)
                .map(|m| f32::from_bits(0x3f80_0000 | m))
                .filter(|&x| div_exact(x, d).to_bits() != (x / d).to_bits())
                .count();
            assert_eq!(bad, 0, "divisor {d}");
        }
    }

    #[test]
    fn the_polynomials_are_accurate() {
        for k in 1..=100_000u32 {
            #[allow(clippy::cast_precision_loss)]
            let x = k as f32 / 100_000.0;
            let want = f64::from(x).ln();
            assert!(
                (f64::from(ln(x)) - want).abs() <= 2e-7 * want.abs().max(1.0),
                "ln {x}"
            );
            let (c, s) = cos_sin_turn::<false>(x.min(0.999_999));
            let a = std::f64::consts::TAU * f64::from(x.min(0.999_999));
            assert!((f64::from(c) - a.cos()).abs() < 5e-7, "cos {x}");
            assert!((f64::from(s) - a.sin()).abs() < 5e-7, "sin {x}");
        }
    }

    #[test]
    fn draws_are_standard_normal() {
        let n = 1 << 20;
        let z = draws(n);
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        let mean = z.iter().sum::<f64>() / nf;
        let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / nf;
        let kurt = z.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / nf / (var * var);
        // Standard errors at n = 2^20: mean 0.001, variance 0.0014, kurtosis 0.0048.
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((var - 1.0).abs() < 0.007, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.025, "kurtosis {kurt}");
        for (k, p) in [(1.0, 0.317_310_5), (2.0, 0.045_500_26), (3.0, 0.002_699_8)] {
            #[allow(clippy::cast_precision_loss)]
            let f = z.iter().filter(|x| x.abs() > k).count() as f64 / nf;
            let se = (p * (1.0 - p) / nf).sqrt();
            assert!((f - p).abs() < 5.0 * se, "P(|z| > {k}) = {f}, want {p}");
        }
        // Kolmogorov-Smirnov: the 0.1% critical value is 1.95 / sqrt(n) = 0.0019.
        let mut s = z.clone();
        s.sort_by(f64::total_cmp);
        let d = s
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
                #[allow(clippy::cast_precision_loss)]
                let (lo, hi) = (i as f64 / nf, (i + 1) as f64 / nf);
                (cdf - lo).abs().max((hi - cdf).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / nf.sqrt(), "KS distance {d}");
    }

    #[test]
    fn draws_are_independent() {
        let z = draws(1 << 20);
        let corr = |pairs: &mut dyn Iterator<Item = (f64, f64)>| {
            let (mut n, mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0, 0.0);
            for (x, y) in pairs {
                n += 1.0;
                sxy += x * y;
                sxx += x * x;
                syy += y * y;
            }
            (sxy / (sxx * syy).sqrt(), n)
        };
        // The two halves of a pair, and draws 1, 2, 3 apart; squares too (a
        // radius shared by a pair would correlate them).
        for lag in [1usize, 2, 3] {
            let (r, n) = corr(&mut z.iter().zip(&z[lag..]).map(|(&a, &b)| (a, b)));
            assert!(r.abs() < 5.0 / f64::sqrt(n), "lag {lag}: {r}");
            let (r, n) = corr(
                &mut z
                    .iter()
                    .zip(&z[lag..])
                    .map(|(&a, &b)| (a * a - 1.0, b * b - 1.0)),
            );
            assert!(r.abs() < 5.0 / f64::sqrt(n) * 2.0, "lag {lag} squares: {r}");
        }
        // The blocked fill gives normal_pair's values, any length.
        for len in [1usize, 2, 31, 32, 33, 100] {
            let mut v = vec![0f32; len];
            fill_normals(99, &mut v);
            for (k, &x) in v.iter().enumerate() {
                let (a, b) = normal_pair(99, (k / 2) as u64);
                assert_eq!(x, if k % 2 == 0 { a } else { b }, "len {len} draw {k}");
            }
        }
        // Streams differ; a stream is reproducible.
        let mut a = vec![0f32; 64];
        let mut b = vec![0f32; 64];
        fill_normals(stream_key(3, &[1, 2]), &mut a);
        fill_normals(stream_key(3, &[1, 3]), &mut b);
        assert_ne!(a, b);
        fill_normals(stream_key(3, &[1, 2]), &mut b);
        assert_eq!(a, b);
        // Many streams' pair `i` at once: normal_pair's values.
        let keys: Vec<u64> = (0..37).map(|k| stream_key(5, &[k])).collect();
        let (mut za, mut zb) = (vec![0f32; 37], vec![0f32; 37]);
        for i in [0u64, 1, 3] {
            normal_pairs(&keys, i, &mut za, &mut zb);
            for (k, &key) in keys.iter().enumerate() {
                assert_eq!((za[k], zb[k]), normal_pair(key, i), "stream {k} pair {i}");
            }
        }
        // A child key is the longer path's key.
        assert_eq!(
            stream_child(stream_key(3, &[1, 2]), 5),
            stream_key(3, &[1, 2, 5])
        );
        assert_eq!(stream_child(stream_key(3, &[]), 1), stream_key(3, &[1]));
        // The tabulated steps give the same children, inside the table and past it.
        let steps = ChildSteps::new();
        for s in (0..1030).chain([4096, 1 << 20]) {
            for &key in &keys[..3] {
                assert_eq!(steps.child(key, s), stream_child(key, s as u64), "step {s}");
                assert_eq!(
                    stream_child_of(key, steps.hash(s)),
                    stream_child(key, s as u64),
                    "step {s} hashed once"
                );
            }
        }
    }
}
