//! Exact integer column sums of an ideal crossbar: `u8` pulse counts times
//! `i8` levels, summed in `i32`, the layout of x86's AVX-512 VNNI `vpdpbusd`
//! (64 multiply-adds per instruction, against 16 for an f32 FMA).
//!
//! Levels are packed in blocks of 4 rows x 16 columns (`[i8; 64]`, column-major
//! within the block: byte `4 k + t` is row `4 g + t` of column `16 j + k`), so
//! one instruction adds four rows of one input vector into sixteen column
//! sums. Rows are padded to a multiple of 4 and columns to a multiple of 16
//! with zero levels.
//!
//! Two implementations give the same integers: the AVX-512 VNNI kernel, used
//! when the CPU has it (detected at run time), and a portable one. Integer
//! arithmetic is exact, so the choice never changes a result.

/// Levels packed for [`PackedLevels::column_sums`].
#[derive(Debug, Clone)]
pub(crate) struct PackedLevels {
    rows: usize,
    cols: usize,
    groups: usize,
    tiles: usize,
    /// `[group][tile]` blocks.
    data: Vec<[i8; 64]>,
}

impl PackedLevels {
    /// Packs row-major integer levels (`rows x cols`); `None` if one is outside `i8`.
    pub(crate) fn new(
        rows: usize,
        cols: usize,
        level: impl Fn(usize, usize) -> i32,
    ) -> Option<Self> {
        let (groups, tiles) = (rows.div_ceil(4), cols.div_ceil(16));
        let mut data = vec![[0i8; 64]; groups * tiles];
        for r in 0..rows {
            for c in 0..cols {
                let block = &mut data[(r / 4) * tiles + c / 16];
                block[4 * (c % 16) + r % 4] = i8::try_from(level(r, c)).ok()?;
            }
        }
        Some(Self {
            rows,
            cols,
            groups,
            tiles,
            data,
        })
    }

    /// Rows of a pulse vector: the used rows rounded up to a multiple of 4.
    pub(crate) fn padded_rows(&self) -> usize {
        self.groups * 4
    }

    /// `out[v][c] = sum_r pulses[v][r] * level[r][c]` for pulse vectors of
    /// [`Self::padded_rows`] values (the padding zero) and `out` of
    /// `vectors x cols`. Exact: `|sum| <= rows x 255 x 127 < 2^31`.
    ///
    /// # Panics
    /// If the lengths do not match.
    pub(crate) fn column_sums(&self, pulses: &[u8], out: &mut [i32]) {
        let prow = self.padded_rows();
        assert!(self.rows <= prow && self.rows < (1 << 16), "row count");
        assert_eq!(pulses.len() % prow.max(1), 0, "pulse vectors");
        let vectors = pulses.len().checked_div(prow).unwrap_or(0);
        assert_eq!(out.len(), vectors * self.cols, "output shape");
        if self.cols == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if vnni::available() {
            vnni::column_sums(self, pulses, out);
            return;
        }
        self.column_sums_portable(pulses, out);
    }

    /// The portable implementation of [`Self::column_sums`].
    pub(crate) fn column_sums_portable(&self, pulses: &[u8], out: &mut [i32]) {
        let prow = self.padded_rows();
        let mut acc = vec![0i32; self.tiles * 16];
        for (p, o) in pulses
            .chunks_exact(prow)
            .zip(out.chunks_exact_mut(self.cols))
        {
            acc.fill(0);
            for (g, word) in p.chunks_exact(4).enumerate() {
                if word == [0; 4] {
                    continue;
                }
                let blocks = &self.data[g * self.tiles..(g + 1) * self.tiles];
                for (block, a) in blocks.iter().zip(acc.chunks_exact_mut(16)) {
                    for (k, y) in a.iter_mut().enumerate() {
                        let w = &block[4 * k..4 * k + 4];
                        *y += i32::from(word[0]) * i32::from(w[0])
                            + i32::from(word[1]) * i32::from(w[1])
                            + i32::from(word[2]) * i32::from(w[2])
                            + i32::from(word[3]) * i32::from(w[3]);
                    }
                }
            }
            o.copy_from_slice(&acc[..self.cols]);
        }
    }
}

/// The AVX-512 VNNI kernel.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::{
        __m512i, _mm512_dpbusd_epi32, _mm512_set1_epi32, _mm512_setzero_si512,
    };
    use std::sync::OnceLock;

    use super::PackedLevels;

    /// Vectors computed together (their accumulators share each level load).
    const VECTORS: usize = 4;

    /// Whether this CPU runs the kernel (checked once).
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }

    /// Runs the kernel; the caller has checked [`available`].
    pub(super) fn column_sums(levels: &PackedLevels, pulses: &[u8], out: &mut [i32]) {
        debug_assert!(available());
        // The one unsafe operation of the workspace: calling a function compiled
        // for CPU features the baseline target lacks.
        #[allow(unsafe_code)]
        // SAFETY: `available()` detected AVX-512F, AVX-512BW and AVX-512 VNNI
        // on this CPU at run time. The function itself uses no unsafe code: its
        // loads are bounds-checked slice reads and `bytemuck` casts.
        unsafe {
            kernel(levels, pulses, out);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn kernel(levels: &PackedLevels, pulses: &[u8], out: &mut [i32]) {
        let prow = levels.padded_rows();
        let vectors = pulses.len() / prow;
        let mut groups: Vec<usize> = Vec::with_capacity(levels.groups);
        let mut words: Vec<[i32; VECTORS]> = Vec::with_capacity(levels.groups);
        for v0 in (0..vectors).step_by(VECTORS) {
            let nv = (vectors - v0).min(VECTORS);
            // Row groups where any of these vectors has a pulse: the others add nothing.
            groups.clear();
            words.clear();
            for g in 0..levels.groups {
                let mut w = [0i32; VECTORS];
                for (k, wk) in w.iter_mut().enumerate().take(nv) {
                    let o = (v0 + k) * prow + 4 * g;
                    let bytes = [pulses[o], pulses[o + 1], pulses[o + 2], pulses[o + 3]];
                    *wk = i32::from_le_bytes(bytes);
                }
                if w != [0; VECTORS] {
                    groups.push(g);
                    words.push(w);
                }
            }
            let out = &mut out[v0 * levels.cols..(v0 + nv) * levels.cols];
            let mut t = 0;
            while t < levels.tiles {
                let nt = (levels.tiles - t).min(4);
                match nt {
                    4 => tile_block::<4>(levels, t, &groups, &words, nv, out),
                    3 => tile_block::<3>(levels, t, &groups, &words, nv, out),
                    2 => tile_block::<2>(levels, t, &groups, &words, nv, out),
                    _ => tile_block::<1>(levels, t, &groups, &words, nv, out),
                }
                t += nt;
            }
        }
    }

    /// Column tiles `t0 .. t0 + NT` of up to [`VECTORS`] vectors.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn tile_block<const NT: usize>(
        levels: &PackedLevels,
        t0: usize,
        groups: &[usize],
        words: &[[i32; VECTORS]],
        nv: usize,
        out: &mut [i32],
    ) {
        let zero = _mm512_setzero_si512();
        let mut acc = [[zero; NT]; VECTORS];
        for (&g, w) in groups.iter().zip(words) {
            let base = g * levels.tiles + t0;
            let mut b = [zero; NT];
            for (bk, block) in b.iter_mut().zip(&levels.data[base..base + NT]) {
                *bk = bytemuck::cast::<[i8; 64], __m512i>(*block);
            }
            for (av, &wv) in acc.iter_mut().zip(w) {
                let a = _mm512_set1_epi32(wv);
                for (ak, &bk) in av.iter_mut().zip(&b) {
                    *ak = _mm512_dpbusd_epi32(*ak, a, bk);
                }
            }
        }
        let cols = levels.cols;
        for (av, o) in acc.iter().zip(out.chunks_exact_mut(cols)).take(nv) {
            for (k, &ak) in av.iter().enumerate() {
                let c0 = (t0 + k) * 16;
                let n = (cols - c0).min(16);
                let lanes = bytemuck::cast::<__m512i, [i32; 16]>(ak);
                o[c0..c0 + n].copy_from_slice(&lanes[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_rng;
    use rand::RngExt;

    /// Both implementations equal the plain triple loop, on every shape class
    /// (padding rows and columns, 1..3 tile remainders, vector remainders).
    #[test]
    fn packed_sums_equal_the_plain_product() {
        let mut rng = stream_rng(11, &[]);
        for &(b, r, c) in &[
            (1, 1, 1),
            (5, 9, 3),
            (7, 64, 16),
            (9, 130, 33),
            (4, 512, 200),
            (13, 77, 64),
            (6, 300, 512),
        ] {
            let levels: Vec<i32> = (0..r * c).map(|_| rng.random_range(-15..=15)).collect();
            let packed = PackedLevels::new(r, c, |i, j| levels[i * c + j]).unwrap();
            let pr = packed.padded_rows();
            let mut pulses = vec![0u8; b * pr];
            for v in 0..b {
                for i in 0..r {
                    // Mostly zero, some 255s (the extreme product).
                    let u: u32 = rng.random_range(0..8);
                    pulses[v * pr + i] = match u {
                        0..=3 => 0,
                        4 => 255,
                        _ => rng.random_range(1..16),
                    };
                }
            }
            let mut want = vec![0i32; b * c];
            for v in 0..b {
                for j in 0..c {
                    want[v * c + j] = (0..r)
                        .map(|i| i32::from(pulses[v * pr + i]) * levels[i * c + j])
                        .sum();
                }
            }
            let mut got = vec![i32::MIN; b * c];
            packed.column_sums(&pulses, &mut got);
            assert_eq!(got, want, "{b}x{r}x{c}");
            let mut portable = vec![i32::MIN; b * c];
            packed.column_sums_portable(&pulses, &mut portable);
            assert_eq!(portable, want, "{b}x{r}x{c} portable");
        }
    }

    #[test]
    fn levels_outside_i8_are_refused() {
        assert!(PackedLevels::new(1, 1, |_, _| 128).is_none());
        assert!(PackedLevels::new(1, 1, |_, _| -128).is_some());
    }
}
