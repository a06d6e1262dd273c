//! Vectorised blocks of the engine's inner loops: converting exact integer
//! column sums on an ideal ADC, with or without read noise (code, flags and
//! shift-add in one pass), and splitting input vectors into bit-planes.
//!
//! Each has a portable implementation and two for x86-64: with AVX-512 (F and
//! BW), one in mask registers, where a comparison gives sixteen (or
//! sixty-four) flags as one mask; with AVX2 (and POPCNT), one eight sums (or
//! thirty-two bytes) at a time, the flags gathered by `movemask`. The
//! portable loop builds them a bit at a time (and, compiled for the
//! baseline target, rounds `f32` by a call to `truncf`). Integer arithmetic
//! is exact and the `f32` steps are the same operations in the same order,
//! so all three give the same integers (tested byte for byte); which runs
//! follows [`crate::Kernel::selected`]: the AVX-512 loops under the `amx` and
//! `avx512vnni` kernels, the AVX2 loops under `avx2` (the kernel of CPUs
//! without AVX-512 VNNI, or forced), and `RAELLA_KERNEL=portable` runs the
//! portable loops everywhere.

/// `f::<SIGNED, DROP>(args)` for a conversion's signedness and whether it
/// drops flagged codes: the loops take both as constants.
macro_rules! by_flags {
    ($conv:expr, $f:ident, ($($arg:expr),* $(,)?)) => {
        match ($conv.signed, $conv.drop_flagged) {
            (false, false) => $f::<false, false>($($arg),*),
            (false, true) => $f::<false, true>($($arg),*),
            (true, false) => $f::<true, false>($($arg),*),
            (true, true) => $f::<true, true>($($arg),*),
        }
    };
}

/// An ideal ADC converting exact integer sums, and what is done with the
/// codes: [`convert_int_sums`]'s settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntConversion {
    /// The lowest code.
    pub lo: i32,
    /// The highest code.
    pub hi: i32,
    /// Signed codes: the lowest code is an extreme (flagged) too.
    pub signed: bool,
    /// Flagged codes are left out of the sums (recovery replaces them).
    pub drop_flagged: bool,
    /// A dropped code is replaced by its exact sum here (recovery known to
    /// give the sum itself), and no flags are listed.
    pub in_place: bool,
    /// The slice's shift: each kept value is added as `value << shift`.
    pub shift: u32,
    /// The accumulators hold nothing yet (a chunk's first input slice): each
    /// kept value is written, `value << shift`, over whatever they hold,
    /// instead of added (so they need no zeroing first).
    pub write: bool,
}

/// Counts of one ADC pass ([`convert_int_sums`], [`convert_noisy_sums`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntCounts {
    /// Sums inside the code range (the code is the sum).
    pub in_range: u64,
    /// Codes at an extreme (flagged).
    pub saturated: u64,
    /// Kept codes that differ from their sum.
    pub inexact: u64,
}

impl IntCounts {
    /// Adds one block's `u32` counters (blocks keep them from overflowing).
    pub fn add(&mut self, in_range: u32, saturated: u32, inexact: u32) {
        self.in_range += u64::from(in_range);
        self.saturated += u64::from(saturated);
        self.inexact += u64::from(inexact);
    }
}

/// Converts every sum: `code = clamp(sum, lo, hi)`, flagged at `hi` (and at
/// `lo` when signed), and adds the kept value `<< shift` to `acc` (same
/// length as `sums`). With `drop_flagged` and not `in_place`, `flags` gets one
/// word per 64 sums, bit `i` of word `k` set when sum `64 k + i` is flagged;
/// otherwise it is left empty.
///
/// # Panics
/// If `acc` and `sums` differ in length.
pub fn convert_int_sums(
    conv: &IntConversion,
    sums: &[i32],
    acc: &mut [i64],
    flags: &mut Vec<u64>,
) -> IntCounts {
    assert_eq!(sums.len(), acc.len(), "one accumulator per sum");
    flags.clear();
    if conv.drop_flagged && !conv.in_place {
        flags.resize(sums.len().div_ceil(64), 0);
    }
    #[cfg(target_arch = "x86_64")]
    if x86::usable() {
        return x86::convert_int_sums(conv, sums, acc, flags);
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        return avx2::convert_int_sums(conv, sums, acc, flags);
    }
    convert_portable(conv, sums, acc, flags)
}

/// Read noise on exact integer sums, then [`convert_int_sums`]'s conversion
/// in `f32`, as [`crate::Adc::convert`] makes it: `y = s + (e sqrt(max(m, 0)))
/// z` per sum (`s`, `m` exact in `f32`: below `2^24`), rounded half away
/// from zero and clamped to `lo ..= hi`; flagged, kept and shift-added as
/// there (`in_place` must be false: a noisy sum is never its own recovery).
/// `mags` and `z` have one value per sum.
///
/// # Panics
/// If the lengths differ, or `conv.in_place`.
pub fn convert_noisy_sums(
    conv: &IntConversion,
    (sums, mags, z, e): (&[i32], &[i32], &[f32], f32),
    acc: &mut [i64],
    flags: &mut Vec<u64>,
) -> IntCounts {
    let n = sums.len();
    assert!(
        mags.len() == n && z.len() == n && acc.len() == n,
        "one magnitude, draw and accumulator per sum"
    );
    assert!(!conv.in_place, "noisy sums are recovered by reads");
    flags.clear();
    if conv.drop_flagged {
        flags.resize(n.div_ceil(64), 0);
    }
    #[cfg(target_arch = "x86_64")]
    if x86::usable() {
        return x86::convert_noisy_sums(conv, (sums, mags, z, e), acc, flags);
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        return avx2::convert_noisy_sums(conv, (sums, mags, z, e), acc, flags);
    }
    noisy_portable(conv, (sums, mags, z, e), acc, flags)
}

/// One input vector's bit-planes: `out` (zeroed, a multiple of 8 words)
/// becomes `8 x words` row bitsets, `out[bit * words + w]` bit `k` set when
/// bit `bit` of `bytes[64 w + k]` is (`bytes` at most `64 x words` long).
///
/// # Panics
/// If `out` is not a multiple of 8 words, or `bytes` does not fit.
pub fn bit_planes(bytes: &[u8], out: &mut [u64]) {
    assert_eq!(out.len() % 8, 0, "eight planes");
    assert!(bytes.len() <= out.len() / 8 * 64, "rows fit the planes");
    #[cfg(target_arch = "x86_64")]
    if x86::usable() {
        x86::bit_planes(bytes, out);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        avx2::bit_planes(bytes, out);
        return;
    }
    bit_planes_portable(bytes, out);
}

/// Runs `block` over each 64-sum range of `n` sums (one flag word each),
/// adding its counts and storing its flag word where `flags` has one.
fn by_blocks(
    n: usize,
    flags: &mut [u64],
    mut block: impl FnMut(std::ops::Range<usize>) -> (u32, u32, u32, u64),
) -> IntCounts {
    let mut total = IntCounts::default();
    for (k, start) in (0..n).step_by(64).enumerate() {
        let (in_range, saturated, inexact, word) = block(start..(start + 64).min(n));
        total.add(in_range, saturated, inexact);
        if let Some(f) = flags.get_mut(k) {
            *f = word;
        }
    }
    total
}

/// The portable [`convert_int_sums`], a block of 64 sums (one flag word) at a time.
fn convert_portable(
    conv: &IntConversion,
    sums: &[i32],
    acc: &mut [i64],
    flags: &mut [u64],
) -> IntCounts {
    by_blocks(sums.len(), flags, |r| {
        by_flags!(conv, block, (conv, &sums[r.clone()], &mut acc[r]))
    })
}

/// Up to 64 sums of [`convert_portable`]: the counts and the flag word. The
/// ADC's signedness and whether flagged codes are dropped are constants, so
/// the loop tests neither per sum.
#[inline(always)]
fn block<const SIGNED: bool, const DROP: bool>(
    conv: &IntConversion,
    sums: &[i32],
    acc: &mut [i64],
) -> (u32, u32, u32, u64) {
    let (lo, hi, shift, in_place) = (conv.lo, conv.hi, conv.shift, conv.in_place);
    let (mut in_range, mut saturated, mut inexact) = (0u32, 0u32, 0u32);
    let mut word = 0u64;
    for (i, (&sum, a)) in sums.iter().zip(acc.iter_mut()).enumerate() {
        let code = sum.clamp(lo, hi);
        let ok = sum == code;
        let sat = code == hi || (SIGNED && code == lo);
        let keep = !(DROP && sat);
        in_range += u32::from(ok);
        saturated += u32::from(sat);
        inexact += u32::from(keep && !ok);
        if DROP {
            word |= u64::from(sat) << i;
        }
        let kept = if keep {
            code
        } else if in_place {
            sum
        } else {
            0
        };
        let base = if conv.write { 0 } else { *a };
        *a = base + (i64::from(kept) << shift);
    }
    (in_range, saturated, inexact, word)
}

/// The portable [`convert_noisy_sums`], a block of 64 sums at a time.
fn noisy_portable(
    conv: &IntConversion,
    (sums, mags, z, e): (&[i32], &[i32], &[f32], f32),
    acc: &mut [i64],
    flags: &mut [u64],
) -> IntCounts {
    by_blocks(sums.len(), flags, |r| {
        let inputs = (&sums[r.clone()], &mags[r.clone()], &z[r.clone()], e);
        by_flags!(conv, noisy_block, (conv, inputs, &mut acc[r]))
    })
}

/// Up to 64 sums of [`convert_noisy_sums`] (portable): the counts and the
/// flag word.
#[inline(always)]
fn noisy_block<const SIGNED: bool, const DROP: bool>(
    conv: &IntConversion,
    (sums, mags, z, e): (&[i32], &[i32], &[f32], f32),
    acc: &mut [i64],
) -> (u32, u32, u32, u64) {
    #[allow(clippy::cast_precision_loss)]
    let (lo, hi) = (conv.lo as f32, conv.hi as f32);
    let (mut in_range, mut saturated, mut inexact) = (0u32, 0u32, 0u32);
    let mut word = 0u64;
    for (i, (((&s, &m), &z), a)) in sums.iter().zip(mags).zip(z).zip(acc.iter_mut()).enumerate() {
        // Exact: |s|, m < 2^24.
        #[allow(clippy::cast_precision_loss)]
        let (s, m) = (s as f32, m as f32);
        let y = s + e * m.max(0.0).sqrt() * z;
        let r = (y + 0.5f32.copysign(y)).trunc();
        let code = r.clamp(lo, hi);
        let ok = r == code;
        let sat = code == hi || (SIGNED && code == lo);
        let keep = !(DROP && sat);
        in_range += u32::from(ok);
        saturated += u32::from(sat);
        inexact += u32::from(keep && !ok);
        if DROP {
            word |= u64::from(sat) << i;
        }
        // A code: an integer inside the ADC's range.
        #[allow(clippy::cast_possible_truncation)]
        let kept = if keep { code as i64 } else { 0 };
        let base = if conv.write { 0 } else { *a };
        *a = base + (kept << conv.shift);
    }
    (in_range, saturated, inexact, word)
}

/// The portable [`bit_planes`]: eight bytes at a time, each bit moved to its
/// byte's place by one multiplication.
fn bit_planes_portable(bytes: &[u8], out: &mut [u64]) {
    let words = out.len() / 8;
    for (wi, group) in bytes.chunks(64).enumerate() {
        for (bi, eight) in group.chunks(8).enumerate() {
            let mut q = [0u8; 8];
            q[..eight.len()].copy_from_slice(eight);
            let q = u64::from_le_bytes(q);
            for bit in 0..8 {
                // Bit `bit` of byte `k` moves to bit `k` of the top byte:
                // the products of the mask's set bits never overlap.
                let lsbs = (q >> bit) & 0x0101_0101_0101_0101;
                let packed = lsbs.wrapping_mul(0x0102_0408_1020_4080) >> 56;
                out[bit * words + wi] |= packed << (8 * bi);
            }
        }
    }
}

/// One vector's masks (in range, saturated, kept; `LANES` bits each) added
/// to `counts`; when flagged sums are dropped, the saturation mask into its
/// place in the flag words (`i` counts vectors of `LANES` sums, a divisor of
/// 64).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tally<const DROP: bool, const LANES: usize>(
    counts: &mut IntCounts,
    (ok, sat, keep): (u32, u32, u32),
    i: usize,
    flags: &mut [u64],
) {
    counts.in_range += u64::from(ok.count_ones());
    counts.saturated += u64::from(sat.count_ones());
    counts.inexact += u64::from((keep & !ok).count_ones());
    if DROP && let Some(f) = flags.get_mut(i * LANES / 64) {
        *f |= u64::from(sat) << (LANES * i % 64);
    }
}

/// `counts` with the portable block's counts and flag word for the sums
/// from `whole` (a multiple of a vector's lanes) on.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn with_tail<const DROP: bool>(
    mut counts: IntCounts,
    (in_range, saturated, inexact, word): (u32, u32, u32, u64),
    whole: usize,
    flags: &mut [u64],
) -> IntCounts {
    if DROP && let Some(f) = flags.get_mut(whole / 64) {
        *f |= word << (whole % 64);
    }
    counts.add(in_range, saturated, inexact);
    counts
}

/// The AVX-512 implementations.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m512, __m512i, _CMP_EQ_OQ, _MM_FROUND_NO_EXC, _MM_FROUND_TO_ZERO,
        _mm_cvtsi32_si128, _mm512_add_epi64, _mm512_add_ps, _mm512_and_si512, _mm512_castps_si512,
        _mm512_castsi512_ps, _mm512_castsi512_si256, _mm512_cmp_ps_mask, _mm512_cmpeq_epi32_mask,
        _mm512_cvtepi32_epi64, _mm512_cvtepi32_ps, _mm512_extracti64x4_epi64,
        _mm512_mask_blend_epi32, _mm512_maskz_cvttps_epi32, _mm512_max_epi32, _mm512_max_ps,
        _mm512_min_epi32, _mm512_min_ps, _mm512_mul_ps, _mm512_or_si512, _mm512_roundscale_ps,
        _mm512_set1_epi8, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_setzero_si512, _mm512_sll_epi64, _mm512_sqrt_ps, _mm512_test_epi8_mask,
    };
    use std::sync::OnceLock;

    use super::{IntConversion, IntCounts};
    use crate::Kernel;

    /// Whether the AVX-512 blocks run: the process's kernel is the AVX-512
    /// one (not forced to another) and the CPU has AVX-512 F and BW, and
    /// POPCNT (the conversions count their masks' bits; without the feature
    /// in their list, `count_ones` compiles to a table-lookup popcount that
    /// cost as much as the conversion itself).
    pub(super) fn usable() -> bool {
        static USABLE: OnceLock<bool> = OnceLock::new();
        *USABLE.get_or_init(|| {
            Kernel::selected().is_ok_and(|k| k.loop_set() == crate::kernel::LoopSet::Avx512)
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("popcnt")
        })
    }

    pub(super) fn convert_int_sums(
        conv: &IntConversion,
        sums: &[i32],
        acc: &mut [i64],
        flags: &mut [u64],
    ) -> IntCounts {
        assert!(usable());
        // The workspace's target-feature unsafe blocks (with
        // `Kernel::dispatch` and the column-sum kernels; one per function
        // here): calling functions compiled for CPU features the baseline
        // target lacks, after detecting them.
        #[allow(unsafe_code)]
        // SAFETY: `usable()` detected AVX-512 F and BW and POPCNT on this CPU at run
        // time. The functions use no unsafe code: loads and stores are
        // bounds-checked slice copies and `bytemuck` casts.
        unsafe {
            by_flags!(conv, convert, (conv, sums, acc, flags))
        }
    }

    pub(super) fn convert_noisy_sums(
        conv: &IntConversion,
        inputs: (&[i32], &[i32], &[f32], f32),
        acc: &mut [i64],
        flags: &mut [u64],
    ) -> IntCounts {
        assert!(usable());
        #[allow(unsafe_code)]
        // SAFETY: as in `convert_int_sums`.
        unsafe {
            by_flags!(conv, noisy, (conv, inputs, acc, flags))
        }
    }

    pub(super) fn bit_planes(bytes: &[u8], out: &mut [u64]) {
        assert!(usable());
        #[allow(unsafe_code)]
        // SAFETY: as in `convert_int_sums`.
        unsafe {
            planes(bytes, out);
        }
    }

    /// Sixteen sums at a time: clamp, the flags as masks, the kept values
    /// widened to `i64`, shifted and added; the counts are the masks'
    /// popcounts. The tail (fewer than 16) by the portable block.
    #[target_feature(enable = "avx512f,avx512bw,popcnt")]
    fn convert<const SIGNED: bool, const DROP: bool>(
        conv: &IntConversion,
        sums: &[i32],
        acc: &mut [i64],
        flags: &mut [u64],
    ) -> IntCounts {
        let (lo, hi) = (_mm512_set1_epi32(conv.lo), _mm512_set1_epi32(conv.hi));
        let shift = _mm_cvtsi32_si128(i32::try_from(conv.shift).unwrap_or(i32::MAX));
        let zero = _mm512_setzero_si512();
        let mut counts = IntCounts::default();
        let whole = sums.len() / 16 * 16;
        for (i, (s16, a16)) in sums[..whole]
            .chunks_exact(16)
            .zip(acc[..whole].chunks_exact_mut(16))
            .enumerate()
        {
            let s16: [i32; 16] = s16.try_into().expect("16 sums");
            let s = bytemuck::cast::<[i32; 16], __m512i>(s16);
            let code = _mm512_max_epi32(_mm512_min_epi32(s, hi), lo);
            let ok = _mm512_cmpeq_epi32_mask(s, code);
            let mut sat = _mm512_cmpeq_epi32_mask(code, hi);
            if SIGNED {
                sat |= _mm512_cmpeq_epi32_mask(code, lo);
            }
            let keep = if DROP { !sat } else { u16::MAX };
            let dropped = if conv.in_place { s } else { zero };
            let kept = _mm512_mask_blend_epi32(keep, dropped, code);
            let masks = (u32::from(ok), u32::from(sat), u32::from(keep));
            super::tally::<DROP, 16>(&mut counts, masks, i, flags);
            shift_add(kept, shift, a16, conv.write);
        }
        let tail = super::block::<SIGNED, DROP>(conv, &sums[whole..], &mut acc[whole..]);
        super::with_tail::<DROP>(counts, tail, whole, flags)
    }

    /// The kept values (`i32`, sixteen) widened to `i64`, shifted and added
    /// to sixteen accumulators (written over them with `write`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn shift_add(kept: __m512i, shift: __m128i, a16: &mut [i64], write: bool) {
        let low = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(kept));
        let high = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(kept));
        for (half, wide) in a16.chunks_exact_mut(8).zip([low, high]) {
            let a = if write {
                _mm512_setzero_si512()
            } else {
                let a: [i64; 8] = (&*half).try_into().expect("8 accumulators");
                bytemuck::cast::<[i64; 8], __m512i>(a)
            };
            let sum = _mm512_add_epi64(a, _mm512_sll_epi64(wide, shift));
            half.copy_from_slice(&bytemuck::cast::<__m512i, [i64; 8]>(sum));
        }
    }

    /// [`convert`] with read noise, sixteen sums at a time in `f32` (the
    /// portable loop's operations in its order; no fused multiply-add).
    #[target_feature(enable = "avx512f,avx512bw,popcnt")]
    fn noisy<const SIGNED: bool, const DROP: bool>(
        conv: &IntConversion,
        (sums, mags, z, e): (&[i32], &[i32], &[f32], f32),
        acc: &mut [i64],
        flags: &mut [u64],
    ) -> IntCounts {
        #[allow(clippy::cast_precision_loss)]
        let (lo, hi) = (
            _mm512_set1_ps(conv.lo as f32),
            _mm512_set1_ps(conv.hi as f32),
        );
        let shift = _mm_cvtsi32_si128(i32::try_from(conv.shift).unwrap_or(i32::MAX));
        let (ev, half, sign) = (
            _mm512_set1_ps(e),
            _mm512_set1_ps(0.5),
            _mm512_set1_epi32(i32::MIN),
        );
        let zero = _mm512_setzero_ps();
        let mut counts = IntCounts::default();
        let whole = sums.len() / 16 * 16;
        for (i, (((s16, m16), z16), a16)) in sums[..whole]
            .chunks_exact(16)
            .zip(mags[..whole].chunks_exact(16))
            .zip(z[..whole].chunks_exact(16))
            .zip(acc[..whole].chunks_exact_mut(16))
            .enumerate()
        {
            let s: [i32; 16] = s16.try_into().expect("16 sums");
            let m: [i32; 16] = m16.try_into().expect("16 magnitudes");
            let zv: [f32; 16] = z16.try_into().expect("16 draws");
            let s = _mm512_cvtepi32_ps(bytemuck::cast::<[i32; 16], __m512i>(s));
            let m = _mm512_cvtepi32_ps(bytemuck::cast::<[i32; 16], __m512i>(m));
            let zv = bytemuck::cast::<[f32; 16], __m512>(zv);
            let t = _mm512_mul_ps(
                _mm512_mul_ps(ev, _mm512_sqrt_ps(_mm512_max_ps(m, zero))),
                zv,
            );
            let y = _mm512_add_ps(s, t);
            // `0.5` with `y`'s sign, then truncation: round half away from zero.
            let signed_half = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_and_si512(_mm512_castps_si512(y), sign),
                _mm512_castps_si512(half),
            ));
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(
                _mm512_add_ps(y, signed_half),
            );
            let code = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
            let ok = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(r, code);
            let mut sat = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(code, hi);
            if SIGNED {
                sat |= _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(code, lo);
            }
            let keep = if DROP { !sat } else { u16::MAX };
            let kept = _mm512_maskz_cvttps_epi32(keep, code);
            let masks = (u32::from(ok), u32::from(sat), u32::from(keep));
            super::tally::<DROP, 16>(&mut counts, masks, i, flags);
            shift_add(kept, shift, a16, conv.write);
        }
        let tail = super::noisy_block::<SIGNED, DROP>(
            conv,
            (&sums[whole..], &mags[whole..], &z[whole..], e),
            &mut acc[whole..],
        );
        super::with_tail::<DROP>(counts, tail, whole, flags)
    }

    /// Sixty-four bytes at a time: one byte test per bit gives the plane's
    /// word directly. Whole groups are read as they lie; only the last,
    /// partial one is copied into a zeroed block (a copy of variable length
    /// for every group was a `memcpy` call each).
    #[target_feature(enable = "avx512f,avx512bw")]
    fn planes(bytes: &[u8], out: &mut [u64]) {
        let words = out.len() / 8;
        let (whole, rest) = bytes.as_chunks::<64>();
        for (wi, &group) in whole.iter().enumerate() {
            plane_words(group, wi, words, out);
        }
        if !rest.is_empty() {
            let mut b = [0u8; 64];
            b[..rest.len()].copy_from_slice(rest);
            plane_words(b, whole.len(), words, out);
        }
    }

    /// Group `wi`'s 64 bytes into word `wi` of each of the 8 planes.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn plane_words(b: [u8; 64], wi: usize, words: usize, out: &mut [u64]) {
        let x = bytemuck::cast::<[u8; 64], __m512i>(b);
        for bit in 0..8 {
            let m = _mm512_set1_epi8(1 << bit);
            out[bit * words + wi] |= _mm512_test_epi8_mask(x, m);
        }
    }
}

/// The AVX2 implementations: eight sums (or thirty-two bytes) per vector,
/// each comparison's lanes gathered into a mask by `movemask`, then counted
/// and stored as the AVX-512 loops do.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m128i, __m256i, _CMP_EQ_OQ, _MM_FROUND_NO_EXC, _MM_FROUND_TO_ZERO, _mm_cvtsi32_si128,
        _mm256_add_epi64, _mm256_add_ps, _mm256_and_ps, _mm256_andnot_si256, _mm256_blendv_epi8,
        _mm256_castps_si256, _mm256_castsi256_ps, _mm256_castsi256_si128, _mm256_cmp_ps,
        _mm256_cmpeq_epi32, _mm256_cvtepi32_epi64, _mm256_cvtepi32_ps, _mm256_cvttps_epi32,
        _mm256_extracti128_si256, _mm256_max_epi32, _mm256_max_ps, _mm256_min_epi32, _mm256_min_ps,
        _mm256_movemask_epi8, _mm256_movemask_ps, _mm256_mul_ps, _mm256_or_ps, _mm256_or_si256,
        _mm256_round_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_setzero_si256, _mm256_sll_epi16, _mm256_sll_epi64, _mm256_sqrt_ps,
    };
    use std::sync::OnceLock;

    use super::{IntConversion, IntCounts};
    use crate::Kernel;
    use crate::kernel::LoopSet;

    /// Whether the CPU has the features these loops are compiled for.
    pub(super) fn cpu_has() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt")
    }

    /// Whether the AVX2 blocks may run: the process's kernel is not forced to
    /// the portable one and the CPU has AVX2 and POPCNT. The public functions
    /// ask `x86::usable` first, so these run only where the AVX-512 blocks do
    /// not.
    pub(super) fn usable() -> bool {
        static USABLE: OnceLock<bool> = OnceLock::new();
        *USABLE.get_or_init(|| {
            Kernel::selected().is_ok_and(|k| k.loop_set() != LoopSet::Baseline) && cpu_has()
        })
    }

    pub(super) fn convert_int_sums(
        conv: &IntConversion,
        sums: &[i32],
        acc: &mut [i64],
        flags: &mut [u64],
    ) -> IntCounts {
        assert!(cpu_has());
        #[allow(unsafe_code)]
        // SAFETY: `cpu_has()` detected AVX2 and POPCNT on this CPU at run
        // time. The functions use no unsafe code: loads and stores are
        // bounds-checked slice copies and `bytemuck` casts.
        unsafe {
            by_flags!(conv, convert, (conv, sums, acc, flags))
        }
    }

    pub(super) fn convert_noisy_sums(
        conv: &IntConversion,
        inputs: (&[i32], &[i32], &[f32], f32),
        acc: &mut [i64],
        flags: &mut [u64],
    ) -> IntCounts {
        assert!(cpu_has());
        #[allow(unsafe_code)]
        // SAFETY: as in `convert_int_sums`.
        unsafe {
            by_flags!(conv, noisy, (conv, inputs, acc, flags))
        }
    }

    pub(super) fn bit_planes(bytes: &[u8], out: &mut [u64]) {
        assert!(cpu_has());
        #[allow(unsafe_code)]
        // SAFETY: as in `convert_int_sums`.
        unsafe {
            planes(bytes, out);
        }
    }

    /// The sign bits of eight 32-bit lanes (all ones or all zeros each).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn mask8(v: __m256i) -> u8 {
        _mm256_movemask_ps(_mm256_castsi256_ps(v)).to_le_bytes()[0]
    }

    /// Eight sums at a time: clamp, the flags as lane masks, the kept values
    /// widened to `i64`, shifted and added; the counts are the masks'
    /// popcounts. The tail (fewer than 8) by the portable block.
    #[target_feature(enable = "avx2,popcnt")]
    fn convert<const SIGNED: bool, const DROP: bool>(
        conv: &IntConversion,
        sums: &[i32],
        acc: &mut [i64],
        flags: &mut [u64],
    ) -> IntCounts {
        let (lo, hi) = (_mm256_set1_epi32(conv.lo), _mm256_set1_epi32(conv.hi));
        let shift = _mm_cvtsi32_si128(i32::try_from(conv.shift).unwrap_or(i32::MAX));
        let mut counts = IntCounts::default();
        let whole = sums.len() / 8 * 8;
        for (i, (s8, a8)) in sums[..whole]
            .chunks_exact(8)
            .zip(acc[..whole].chunks_exact_mut(8))
            .enumerate()
        {
            let s8: [i32; 8] = s8.try_into().expect("8 sums");
            let s = bytemuck::cast::<[i32; 8], __m256i>(s8);
            let code = _mm256_max_epi32(_mm256_min_epi32(s, hi), lo);
            let ok = mask8(_mm256_cmpeq_epi32(s, code));
            let mut sat_v = _mm256_cmpeq_epi32(code, hi);
            if SIGNED {
                sat_v = _mm256_or_si256(sat_v, _mm256_cmpeq_epi32(code, lo));
            }
            let sat = mask8(sat_v);
            let (keep, kept) = match (DROP, conv.in_place) {
                (false, _) => (u8::MAX, code),
                (true, true) => (!sat, _mm256_blendv_epi8(code, s, sat_v)),
                (true, false) => (!sat, _mm256_andnot_si256(sat_v, code)),
            };
            let masks = (u32::from(ok), u32::from(sat), u32::from(keep));
            super::tally::<DROP, 8>(&mut counts, masks, i, flags);
            shift_add(kept, shift, a8, conv.write);
        }
        let tail = super::block::<SIGNED, DROP>(conv, &sums[whole..], &mut acc[whole..]);
        super::with_tail::<DROP>(counts, tail, whole, flags)
    }

    /// The kept values (`i32`, eight) widened to `i64`, shifted and added to
    /// eight accumulators (written over them with `write`).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn shift_add(kept: __m256i, shift: __m128i, a8: &mut [i64], write: bool) {
        let low = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(kept));
        let high = _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(kept));
        for (half, wide) in a8.chunks_exact_mut(4).zip([low, high]) {
            let a = if write {
                _mm256_setzero_si256()
            } else {
                let a: [i64; 4] = (&*half).try_into().expect("4 accumulators");
                bytemuck::cast::<[i64; 4], __m256i>(a)
            };
            let sum = _mm256_add_epi64(a, _mm256_sll_epi64(wide, shift));
            half.copy_from_slice(&bytemuck::cast::<__m256i, [i64; 4]>(sum));
        }
    }

    /// [`convert`] with read noise, eight sums at a time in `f32` (the
    /// portable loop's operations in its order; no fused multiply-add).
    #[target_feature(enable = "avx2,popcnt")]
    fn noisy<const SIGNED: bool, const DROP: bool>(
        conv: &IntConversion,
        (sums, mags, z, e): (&[i32], &[i32], &[f32], f32),
        acc: &mut [i64],
        flags: &mut [u64],
    ) -> IntCounts {
        #[allow(clippy::cast_precision_loss)]
        let (lo, hi) = (
            _mm256_set1_ps(conv.lo as f32),
            _mm256_set1_ps(conv.hi as f32),
        );
        let shift = _mm_cvtsi32_si128(i32::try_from(conv.shift).unwrap_or(i32::MAX));
        let (ev, half, sign) = (_mm256_set1_ps(e), _mm256_set1_ps(0.5), _mm256_set1_ps(-0.0));
        let zero = _mm256_setzero_ps();
        let mut counts = IntCounts::default();
        let whole = sums.len() / 8 * 8;
        for (i, (((s8, m8), z8), a8)) in sums[..whole]
            .chunks_exact(8)
            .zip(mags[..whole].chunks_exact(8))
            .zip(z[..whole].chunks_exact(8))
            .zip(acc[..whole].chunks_exact_mut(8))
            .enumerate()
        {
            let s: [i32; 8] = s8.try_into().expect("8 sums");
            let m: [i32; 8] = m8.try_into().expect("8 magnitudes");
            let zv: [f32; 8] = z8.try_into().expect("8 draws");
            let s = _mm256_cvtepi32_ps(bytemuck::cast::<[i32; 8], __m256i>(s));
            let m = _mm256_cvtepi32_ps(bytemuck::cast::<[i32; 8], __m256i>(m));
            let zv = bytemuck::cast::<[f32; 8], _>(zv);
            let t = _mm256_mul_ps(
                _mm256_mul_ps(ev, _mm256_sqrt_ps(_mm256_max_ps(m, zero))),
                zv,
            );
            let y = _mm256_add_ps(s, t);
            // `0.5` with `y`'s sign, then truncation: round half away from zero.
            let signed_half = _mm256_or_ps(_mm256_and_ps(y, sign), half);
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_add_ps(
                y,
                signed_half,
            ));
            let code = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
            let ok = mask8(_mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(r, code)));
            let mut sat_v = _mm256_cmp_ps::<_CMP_EQ_OQ>(code, hi);
            if SIGNED {
                sat_v = _mm256_or_ps(sat_v, _mm256_cmp_ps::<_CMP_EQ_OQ>(code, lo));
            }
            let sat_v = _mm256_castps_si256(sat_v);
            let sat = mask8(sat_v);
            // A code: an integer inside the ADC's range, so the truncating
            // conversion is exact.
            let code = _mm256_cvttps_epi32(code);
            let (keep, kept) = if DROP {
                (!sat, _mm256_andnot_si256(sat_v, code))
            } else {
                (u8::MAX, code)
            };
            let masks = (u32::from(ok), u32::from(sat), u32::from(keep));
            super::tally::<DROP, 8>(&mut counts, masks, i, flags);
            shift_add(kept, shift, a8, conv.write);
        }
        let tail = super::noisy_block::<SIGNED, DROP>(
            conv,
            (&sums[whole..], &mags[whole..], &z[whole..], e),
            &mut acc[whole..],
        );
        super::with_tail::<DROP>(counts, tail, whole, flags)
    }

    /// Sixty-four bytes at a time, as two vectors of 32: per bit, a 16-bit
    /// left shift brings it to each byte's top bit (a byte's own lower bits
    /// move up within it; the bits shifted in from the low byte of a pair
    /// stop below the high byte's top bit), and `movemask` gathers the top
    /// bits. Only the last, partial group is copied into a zeroed block.
    #[target_feature(enable = "avx2")]
    fn planes(bytes: &[u8], out: &mut [u64]) {
        let words = out.len() / 8;
        let (whole, rest) = bytes.as_chunks::<64>();
        for (wi, &group) in whole.iter().enumerate() {
            plane_words(group, wi, words, out);
        }
        if !rest.is_empty() {
            let mut b = [0u8; 64];
            b[..rest.len()].copy_from_slice(rest);
            plane_words(b, whole.len(), words, out);
        }
    }

    /// Group `wi`'s 64 bytes into word `wi` of each of the 8 planes.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn plane_words(b: [u8; 64], wi: usize, words: usize, out: &mut [u64]) {
        let [x0, x1] = bytemuck::cast::<[u8; 64], [__m256i; 2]>(b);
        for (bit, up) in (0..8).zip((0..8).rev()) {
            let count = _mm_cvtsi32_si128(up);
            out[bit * words + wi] |=
                u64::from(top_bits(x0, count)) | u64::from(top_bits(x1, count)) << 32;
        }
    }

    /// The top bit of each of 32 bytes after a left shift of `count` bits
    /// (in 16-bit lanes): bit `7 - count` of each byte.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn top_bits(x: __m256i, count: __m128i) -> u32 {
        u32::from_le_bytes(_mm256_movemask_epi8(_mm256_sll_epi16(x, count)).to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::{Xoshiro256PlusPlus, stream_rng};
    use rand::RngExt;

    fn random_sums(rng: &mut Xoshiro256PlusPlus, n: usize, spread: i32) -> Vec<i32> {
        (0..n).map(|_| rng.random_range(-spread..=spread)).collect()
    }

    /// Every setting and length, AVX-512 and AVX2 (where the CPU runs them)
    /// against the portable loop: the same accumulators, counts and flags.
    #[test]
    fn conversions_agree_with_the_portable_loop() {
        let mut rng = stream_rng(7, &[1]);
        for n in [0, 1, 15, 16, 17, 63, 64, 65, 130, 1000] {
            for signed in [false, true] {
                for drop_flagged in [false, true] {
                    for (in_place, write) in [(false, false), (true, false), (false, true)] {
                        let (lo, hi) = if signed { (-64, 63) } else { (0, 127) };
                        let conv = IntConversion {
                            lo,
                            hi,
                            signed,
                            drop_flagged,
                            in_place,
                            shift: rng.random_range(0..9),
                            write,
                        };
                        let sums = random_sums(&mut rng, n, 200);
                        let start: Vec<i64> =
                            (0..n).map(|_| rng.random_range(-1000..1000)).collect();
                        let (mut a, mut fa) = (start.clone(), Vec::new());
                        let got = convert_int_sums(&conv, &sums, &mut a, &mut fa);
                        let (mut b, mut fb) = (start.clone(), vec![0; fa.len()]);
                        let want = convert_portable(&conv, &sums, &mut b, &mut fb);
                        assert_eq!((got, &a, &fa), (want, &b, &fb), "{conv:?} n={n}");
                        // The AVX2 loop too, where the CPU has it (the call
                        // above ran the AVX-512 one on a CPU with both).
                        #[cfg(target_arch = "x86_64")]
                        if avx2::cpu_has() {
                            let (mut c, mut fc) = (start.clone(), vec![0; fa.len()]);
                            let avx = avx2::convert_int_sums(&conv, &sums, &mut c, &mut fc);
                            assert_eq!((avx, &c, &fc), (want, &b, &fb), "AVX2 {conv:?} n={n}");
                        }
                        // The definition, sum by sum (written over the
                        // accumulators with `write`).
                        let mut exp = if write { vec![0; n] } else { start.clone() };
                        for (k, (&s, e)) in sums.iter().zip(&mut exp).enumerate() {
                            let code = s.clamp(lo, hi);
                            let sat = code == hi || (signed && code == lo);
                            let kept = match (drop_flagged && sat, in_place) {
                                (false, _) => code,
                                (true, true) => s,
                                (true, false) => 0,
                            };
                            *e += i64::from(kept) << conv.shift;
                            if drop_flagged && !in_place {
                                assert_eq!(fa[k / 64] >> (k % 64) & 1 == 1, sat);
                            }
                        }
                        assert_eq!(a, exp);
                        let in_range = sums.iter().filter(|&&s| (lo..=hi).contains(&s)).count();
                        assert_eq!(got.in_range, in_range as u64);
                    }
                }
            }
        }
    }

    /// Read noise, every setting and length: AVX-512 and AVX2 (where the CPU
    /// runs them) against the portable loop, and both against [`crate::Adc::convert`]
    /// of the perturbed sum, including ties, sums far outside the range and
    /// zero magnitudes.
    #[test]
    fn noisy_conversions_agree_with_the_adc() {
        let mut rng = stream_rng(7, &[3]);
        for n in [0, 1, 15, 16, 17, 64, 65, 300] {
            for signed in [false, true] {
                for (drop_flagged, write) in [(false, false), (true, false), (true, true)] {
                    let adc = crate::Adc::new(7, signed).unwrap();
                    let conv = IntConversion {
                        lo: adc.min_code(),
                        hi: adc.max_code(),
                        signed,
                        drop_flagged,
                        in_place: false,
                        shift: rng.random_range(0..9),
                        write,
                    };
                    let sums = random_sums(&mut rng, n, 300);
                    let mags: Vec<i32> = (0..n).map(|_| rng.random_range(0..=3000)).collect();
                    let mut z: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0..4.0)).collect();
                    // Exact halves: `e sqrt(m) z = 0.5` for m = 1, e = 0.5, z = 1.
                    let e = if n % 2 == 0 { 0.5 } else { 0.08 };
                    for (k, zk) in z.iter_mut().enumerate().filter(|(k, _)| k % 7 == 0) {
                        *zk = if k % 2 == 0 { 1.0 } else { -1.0 };
                    }
                    let mags: Vec<i32> = mags
                        .iter()
                        .enumerate()
                        .map(|(k, &m)| match k % 7 {
                            0 => 1,
                            3 => 0,
                            _ => m,
                        })
                        .collect();
                    let start: Vec<i64> = (0..n).map(|_| rng.random_range(-1000..1000)).collect();
                    let (mut a, mut fa) = (start.clone(), Vec::new());
                    let got = convert_noisy_sums(&conv, (&sums, &mags, &z, e), &mut a, &mut fa);
                    let (mut b, mut fb) = (start.clone(), vec![0; fa.len()]);
                    let portable = noisy_portable(&conv, (&sums, &mags, &z, e), &mut b, &mut fb);
                    assert_eq!((portable, &b, &fb), (got, &a, &fa), "{conv:?} n={n}");
                    #[cfg(target_arch = "x86_64")]
                    if avx2::cpu_has() {
                        let (mut c, mut fc) = (start.clone(), vec![0; fa.len()]);
                        let inputs = (&sums[..], &mags[..], &z[..], e);
                        let avx = avx2::convert_noisy_sums(&conv, inputs, &mut c, &mut fc);
                        assert_eq!((avx, &c, &fc), (portable, &b, &fb), "AVX2 {conv:?} n={n}");
                    }
                    let mut exp = if write { vec![0; n] } else { start.clone() };
                    let mut want = IntCounts::default();
                    for (k, e_k) in exp.iter_mut().enumerate() {
                        #[allow(clippy::cast_precision_loss)]
                        let y = sums[k] as f32 + e * (mags[k] as f32).sqrt() * z[k];
                        let c = adc.convert(y);
                        let keep = !(drop_flagged && c.saturated);
                        want.in_range += u64::from(c.in_range);
                        want.saturated += u64::from(c.saturated);
                        want.inexact += u64::from(keep && !c.in_range);
                        *e_k += i64::from(if keep { c.code } else { 0 }) << conv.shift;
                        if drop_flagged {
                            assert_eq!(fa[k / 64] >> (k % 64) & 1 == 1, c.saturated);
                        }
                    }
                    assert_eq!((got, &a), (want, &exp), "{conv:?} n={n}");
                }
            }
        }
    }

    #[test]
    fn bit_planes_agree_with_the_portable_loop() {
        let mut rng = stream_rng(7, &[2]);
        for (rows, words) in [
            (0, 1),
            (1, 1),
            (9, 1),
            (63, 1),
            (64, 1),
            (65, 2),
            (288, 5),
            (512, 8),
        ] {
            let bytes: Vec<u8> = (0..rows).map(|_| rng.random()).collect();
            let mut got = vec![0u64; 8 * words];
            bit_planes(&bytes, &mut got);
            let mut want = vec![0u64; 8 * words];
            bit_planes_portable(&bytes, &mut want);
            assert_eq!(got, want, "rows {rows}");
            #[cfg(target_arch = "x86_64")]
            if avx2::cpu_has() {
                let mut avx = vec![0u64; 8 * words];
                avx2::bit_planes(&bytes, &mut avx);
                assert_eq!(avx, want, "AVX2, rows {rows}");
            }
            for (r, &x) in bytes.iter().enumerate() {
                for bit in 0..8 {
                    let set = got[bit * words + r / 64] >> (r % 64) & 1 == 1;
                    assert_eq!(set, x >> bit & 1 == 1);
                }
            }
        }
    }
}
