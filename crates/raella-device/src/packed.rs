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
//! Four implementations give the same integers ([`Kernel`], chosen at run
//! time): AMX-INT8 tiles (for crossbars of at least 64 rows, AVX-512 VNNI for
//! the others), AVX-512 VNNI, AVX2 (`vpmaddubsw` then `vpmaddwd`, exact for
//! levels in `[-64, 64]`, which is why [`PackedLevels::from_row_major`] refuses
//! others) and a portable loop. Integer arithmetic is exact, so the choice
//! never changes a result.
//!
//! The blocks are AMX's layout too: a `tdpbusd` right-hand tile is 16 rows of
//! 64 bytes, row `i` holding rows `4 i .. 4 i + 4` of 16 columns, so 16
//! consecutive row groups of one column tile (`tiles` blocks apart) are one
//! tile, loaded with a stride. The blocks are therefore allocated for a whole
//! number of 16-group tiles, the extra groups zero.

use crate::Kernel;

/// The largest level magnitude packed. AVX2's `vpmaddubsw` adds two `u8 x i8`
/// products in a saturating `i16`: `2 x 255 x 64 = 32,640 <= 32,767`, so with
/// levels in `[-64, 64]` it never saturates. Device levels are at most 15 and
/// a pair's magnitude `G+ + G-` at most 30.
pub(crate) const MAX_LEVEL: i32 = 64;

/// Levels packed for [`PackedLevels::column_sums`].
#[derive(Debug, Clone)]
pub(crate) struct PackedLevels {
    rows: usize,
    cols: usize,
    groups: usize,
    tiles: usize,
    /// `[group][tile]` blocks, for `groups` rounded up to a multiple of 16
    /// (the blocks past `groups` zero).
    data: Vec<[i8; 64]>,
}

impl PackedLevels {
    /// Packs row-major integer levels (`rows x cols`); `None` if one is
    /// outside `[-MAX_LEVEL, MAX_LEVEL]`.
    #[cfg(test)]
    pub(crate) fn new(
        rows: usize,
        cols: usize,
        level: impl Fn(usize, usize) -> i32,
    ) -> Option<Self> {
        Self::from_rows(rows, cols, |r, out| {
            for (c, o) in out.iter_mut().enumerate() {
                *o = level(r, c);
            }
        })
    }

    /// All-zero blocks for `rows x cols` levels, for a packer to fill.
    #[inline(always)]
    fn zeroed(rows: usize, cols: usize) -> Self {
        let (groups, tiles) = (rows.div_ceil(4), cols.div_ceil(16));
        Self {
            rows,
            cols,
            groups,
            tiles,
            data: vec![[0i8; 64]; groups.div_ceil(16) * 16 * tiles],
        }
    }

    /// Packs integer levels given a row at a time: `fill(r, out)` writes row
    /// `r`'s `cols` levels. `None` if one is outside `[-MAX_LEVEL, MAX_LEVEL]`.
    /// (The layout's plain definition, the reference the faster packings are
    /// tested against.)
    #[cfg(test)]
    #[inline(always)]
    pub(crate) fn from_rows(
        rows: usize,
        cols: usize,
        mut fill: impl FnMut(usize, &mut [i32]),
    ) -> Option<Self> {
        let mut packed = Self::zeroed(rows, cols);
        let tiles = packed.tiles;
        let data = &mut packed.data;
        // A row's levels, narrowed (the loops vectorise), then spread over its
        // tiles; the range is checked once at the end.
        let mut top = 0u32;
        let mut wide = vec![0i32; cols];
        let mut row = vec![0i8; tiles * 16];
        for r in 0..rows {
            fill(r, &mut wide);
            for (b, &l) in row.iter_mut().zip(&wide) {
                top = top.max(l.unsigned_abs());
                // In range when `top` is; otherwise the result is discarded.
                #[allow(clippy::cast_possible_truncation)]
                let l = l as i8;
                *b = l;
            }
            let (g, t) = (r / 4, r % 4);
            for (block, ls) in data[g * tiles..][..tiles]
                .iter_mut()
                .zip(row.chunks_exact(16))
            {
                for (k, &l) in ls.iter().enumerate() {
                    block[4 * k + t] = l;
                }
            }
        }
        if top > MAX_LEVEL.unsigned_abs() {
            return None;
        }
        Some(packed)
    }

    /// Packs row-major `i8` levels (`rows x cols`): the same blocks as
    /// [`Self::from_rows`], four rows at a time, each column's four bytes
    /// written as one word. `None` if a level is outside `[-MAX_LEVEL,
    /// MAX_LEVEL]`.
    ///
    /// # Panics
    /// If `levels.len() != rows * cols`.
    #[inline(always)]
    pub(crate) fn from_row_major(levels: &[i8], rows: usize, cols: usize) -> Option<Self> {
        assert_eq!(levels.len(), rows * cols, "level shape");
        // The range first (the fold vectorises).
        let top = levels.iter().fold(0u8, |t, &l| t.max(l.unsigned_abs()));
        if u32::from(top) > MAX_LEVEL.unsigned_abs() {
            return None;
        }
        let mut packed = Self::zeroed(rows, cols);
        let (groups, tiles) = (packed.groups, packed.tiles);
        let data = &mut packed.data;
        let zeros = vec![0i8; cols];
        for (g, blocks) in data.chunks_exact_mut(tiles.max(1)).take(groups).enumerate() {
            // Rows `4 g .. 4 g + 4`, zero past the last.
            let row = |t: usize| levels.get((4 * g + t) * cols..(4 * g + t + 1) * cols);
            let quad: [&[i8]; 4] = std::array::from_fn(|t| row(t).unwrap_or(&zeros));
            for (j, block) in blocks.iter_mut().enumerate() {
                let c0 = 16 * j;
                if c0 + 16 <= cols {
                    // A whole tile: fixed-size rows (the interleave vectorises).
                    let q: [&[i8; 16]; 4] = std::array::from_fn(|t| {
                        quad[t][c0..c0 + 16].try_into().expect("16 levels")
                    });
                    let mut words = [0u32; 16];
                    for (k, w) in words.iter_mut().enumerate() {
                        *w = u32::from_le_bytes([
                            q[0][k].cast_unsigned(),
                            q[1][k].cast_unsigned(),
                            q[2][k].cast_unsigned(),
                            q[3][k].cast_unsigned(),
                        ]);
                    }
                    for (b, w) in block.chunks_exact_mut(4).zip(words) {
                        b.copy_from_slice(&w.to_le_bytes().map(u8::cast_signed));
                    }
                } else {
                    for (k, b) in block.chunks_exact_mut(4).take(cols - c0).enumerate() {
                        let c = c0 + k;
                        b.copy_from_slice(&[quad[0][c], quad[1][c], quad[2][c], quad[3][c]]);
                    }
                }
            }
        }
        Some(packed)
    }

    /// Packs integer levels given a column at a time: `fill(c, out)` writes
    /// column `c`'s `rows` levels. The same blocks as [`Self::from_rows`] on
    /// the same levels, for levels held column by column (a weight matrix's
    /// rows are an [`ExactMatrix`]'s columns): sixteen columns are gathered,
    /// then each block is written whole. `None` if a level is outside
    /// `[-MAX_LEVEL, MAX_LEVEL]`.
    #[inline(always)]
    pub(crate) fn from_cols(
        rows: usize,
        cols: usize,
        mut fill: impl FnMut(usize, &mut [i8]),
    ) -> Option<Self> {
        let mut packed = Self::zeroed(rows, cols);
        let (groups, tiles) = (packed.groups, packed.tiles);
        let data = &mut packed.data;
        // Sixteen columns' levels, `pr` apart (the rows past `rows` stay zero).
        let pr = groups * 4;
        let mut scratch = vec![0i8; 16 * pr];
        let mut top = 0u8;
        for j in 0..tiles {
            for (k, col) in scratch.chunks_exact_mut(pr.max(1)).enumerate() {
                let col = &mut col[..rows];
                if 16 * j + k < cols {
                    fill(16 * j + k, col);
                    // The range is checked once at the end.
                    top = col.iter().fold(top, |t, &l| t.max(l.unsigned_abs()));
                } else {
                    // Padding columns of the last tile.
                    col.fill(0);
                }
            }
            for g in 0..groups {
                let block = &mut data[g * tiles + j];
                for (k, b) in block.chunks_exact_mut(4).enumerate() {
                    b.copy_from_slice(&scratch[k * pr + 4 * g..][..4]);
                }
            }
        }
        if i32::from(top) > MAX_LEVEL {
            return None;
        }
        Some(packed)
    }

    /// Rows of a pulse vector: the used rows rounded up to a multiple of 4.
    pub(crate) fn padded_rows(&self) -> usize {
        self.groups * 4
    }

    /// `out[v][c] = sum_r pulses[v][r] * level[r][c]` for pulse vectors of
    /// [`Self::padded_rows`] values (the padding zero) and `out` of
    /// `vectors x cols`, by the process's kernel ([`Kernel::selected`]).
    /// Exact: `|sum| <= rows x 255 x 64 < 2^31`.
    ///
    /// # Panics
    /// If the lengths do not match, or [`crate::KERNEL_ENV`] is invalid (callers
    /// check [`Kernel::selected`] first, where it is an error).
    pub(crate) fn column_sums(&self, pulses: &[u8], out: &mut [i32]) {
        let kernel = Kernel::selected().unwrap_or_else(|e| panic!("{e}"));
        self.column_sums_with(kernel, pulses, out);
    }

    /// [`Self::column_sums`] by a given kernel.
    ///
    /// # Panics
    /// If the lengths do not match, or the CPU cannot run `kernel`.
    pub(crate) fn column_sums_with(&self, kernel: Kernel, pulses: &[u8], out: &mut [i32]) {
        let prow = self.padded_rows();
        assert!(self.rows <= prow && self.rows < (1 << 16), "row count");
        assert_eq!(pulses.len() % prow.max(1), 0, "pulse vectors");
        let vectors = pulses.len().checked_div(prow).unwrap_or(0);
        assert_eq!(out.len(), vectors * self.cols, "output shape");
        assert!(
            kernel.supported(),
            "this CPU cannot run the {kernel} kernel"
        );
        if self.cols == 0 {
            return;
        }
        match kernel {
            Kernel::Portable => self.column_sums_portable(pulses, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx | Kernel::Avx512Vnni | Kernel::Avx2 => {
                x86::column_sums(kernel, self, pulses, out);
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Amx | Kernel::Avx512Vnni | Kernel::Avx2 => {
                unreachable!("not supported off x86-64")
            }
        }
    }

    /// The row groups where any of the vectors `v0 .. v0 + nv` (at most
    /// `VECTORS`) has a pulse, and their pulse words (four `u8` as one
    /// little-endian `i32` per vector, zero past `nv`), in `groups[..n]` and
    /// `words[..n]` (each [`Self::groups`] long): the other groups add
    /// nothing. Returns `n`.
    ///
    /// Branch-free: every group is written at the next free place and the
    /// count advances by whether it is active (which groups are is data, so a
    /// branch per group would often be mispredicted). Inlined into each
    /// kernel, so it compiles for the kernel's instruction set.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    fn active_groups<const VECTORS: usize>(
        &self,
        pulses: &[u8],
        v0: usize,
        nv: usize,
        groups: &mut [usize],
        words: &mut [[i32; VECTORS]],
    ) -> usize {
        let prow = self.padded_rows();
        let (groups, words) = (&mut groups[..self.groups], &mut words[..self.groups]);
        let mut n = 0;
        if nv == VECTORS {
            // Every vector present: each one's row of pulses, four bytes per
            // group, read without per-byte indexing.
            let rows: [&[u8]; VECTORS] =
                std::array::from_fn(|k| &pulses[(v0 + k) * prow..(v0 + k + 1) * prow]);
            for g in 0..self.groups {
                let w: [i32; VECTORS] = std::array::from_fn(|k| {
                    let b = &rows[k][4 * g..4 * g + 4];
                    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
                });
                groups[n] = g;
                words[n] = w;
                n += usize::from(w != [0; VECTORS]);
            }
        } else {
            for g in 0..self.groups {
                let mut w = [0i32; VECTORS];
                for (k, wk) in w.iter_mut().enumerate().take(nv) {
                    let o = (v0 + k) * prow + 4 * g;
                    let bytes = [pulses[o], pulses[o + 1], pulses[o + 2], pulses[o + 3]];
                    *wk = i32::from_le_bytes(bytes);
                }
                groups[n] = g;
                words[n] = w;
                n += usize::from(w != [0; VECTORS]);
            }
        }
        n
    }

    /// The portable implementation of [`Self::column_sums`], one vector at a
    /// time, skipping row groups without a pulse. Per column tile it keeps 32
    /// partial sums, one per pair of block bytes (rows `t, t + 1` of column `k`
    /// at `4 k + t`), and adds each column's two at the end: the inner loop
    /// runs straight through the block with `i16` products summed in pairs
    /// into `i32` (`pmaddwd` on any x86-64; `|255 x 64| < 2^15`).
    pub(crate) fn column_sums_portable(&self, pulses: &[u8], out: &mut [i32]) {
        let prow = self.padded_rows();
        let mut acc = vec![[0i32; 32]; self.tiles];
        for (p, o) in pulses
            .chunks_exact(prow)
            .zip(out.chunks_exact_mut(self.cols))
        {
            acc.fill([0; 32]);
            for (g, word) in p.chunks_exact(4).enumerate() {
                if word == [0; 4] {
                    continue;
                }
                let pw: [i16; 64] = std::array::from_fn(|b| i16::from(word[b % 4]));
                let blocks = &self.data[g * self.tiles..(g + 1) * self.tiles];
                for (block, a) in blocks.iter().zip(acc.iter_mut()) {
                    let l: [i16; 64] = std::array::from_fn(|b| i16::from(block[b]));
                    for ((y, l2), p2) in a.iter_mut().zip(l.chunks_exact(2)).zip(pw.chunks_exact(2))
                    {
                        *y += i32::from(p2[0]) * i32::from(l2[0])
                            + i32::from(p2[1]) * i32::from(l2[1]);
                    }
                }
            }
            for (c, y) in o.iter_mut().enumerate() {
                let a = &acc[c / 16];
                *y = a[2 * (c % 16)] + a[2 * (c % 16) + 1];
            }
        }
    }
}

/// Rows per packed block of an [`ExactMatrix`]: `|sum| <= 2^14 x 255 x 64 < 2^31`
/// (and [`PackedLevels::column_sums_with`]'s limit of `2^16` rows).
const EXACT_BLOCK_ROWS: usize = 1 << 14;

/// Exact integer products of an `i8` matrix (`outputs x cols`, row-major, as
/// quantised weights are held) with `u8` or `i8` input vectors, on the
/// process's integer kernel ([`Kernel::selected`], the portable one when
/// [`crate::KERNEL_ENV`] is invalid): every kernel gives the same integers.
///
/// Each block of 2^14 inputs is packed as two halves, `h = w >> 1` and `w -
/// h`, both in `[-64, 64]` (the packed levels' range, where AVX2's pairwise
/// `i16` sums cannot saturate), their `i32` sums added in `i64`. Signed inputs
/// are read as `x + 128` and `128 sum_c w[o][c]` taken off.
#[derive(Debug, Clone)]
pub struct ExactMatrix {
    outputs: usize,
    cols: usize,
    /// Per block of inputs: its first input and the two packed halves.
    blocks: Vec<(usize, [PackedLevels; 2])>,
    /// `sum_c w[o][c]` per output.
    sums: Vec<i64>,
}

impl ExactMatrix {
    /// Packs `weights` (`outputs x cols`, row-major).
    ///
    /// # Panics
    /// If `weights.len() != outputs * cols`.
    #[must_use]
    pub fn new(weights: &[i8], outputs: usize, cols: usize) -> Self {
        assert_eq!(weights.len(), outputs * cols, "weight shape");
        let mut blocks = Vec::new();
        for r0 in (0..cols).step_by(EXACT_BLOCK_ROWS) {
            let rows = (cols - r0).min(EXACT_BLOCK_ROWS);
            // Row `r` of a half holds input `r0 + r` of every output: column
            // `o` is output `o`'s contiguous weights.
            let half = |upper: bool| {
                PackedLevels::from_cols(rows, outputs, |o, out| {
                    for (l, &w) in out.iter_mut().zip(&weights[o * cols + r0..][..rows]) {
                        *l = if upper { w >> 1 } else { w - (w >> 1) };
                    }
                })
                .expect("halves of an i8 lie in [-64, 64]")
            };
            blocks.push((r0, [half(true), half(false)]));
        }
        let sums = (0..outputs)
            .map(|o| {
                weights[o * cols..(o + 1) * cols]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum()
            })
            .collect();
        Self {
            outputs,
            cols,
            blocks,
            sums,
        }
    }

    /// Outputs (rows of the matrix).
    #[must_use]
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Inputs per vector (columns of the matrix).
    #[must_use]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `sum_c w[o][c]` per output `o`.
    #[must_use]
    pub fn sums(&self) -> &[i64] {
        &self.sums
    }

    /// `out[v][o] = sum_c x[v][c] w[o][c]` for `x` of `vectors x cols` values
    /// and `out` of `vectors x outputs`.
    ///
    /// # Panics
    /// If the lengths do not match.
    pub fn products(&self, x: &[u8], out: &mut [i64]) {
        self.products_with(x, |b| b, out);
    }

    /// [`Self::products`] of signed inputs.
    ///
    /// # Panics
    /// If the lengths do not match.
    pub fn products_signed(&self, x: &[i8], out: &mut [i64]) {
        self.products_with(x, |b| b.cast_unsigned() ^ 0x80, out);
        for row in out.chunks_exact_mut(self.outputs.max(1)) {
            for (o, &s) in row.iter_mut().zip(&self.sums) {
                *o -= 128 * s;
            }
        }
    }

    fn products_with<T: Copy>(&self, x: &[T], code: impl Fn(T) -> u8, out: &mut [i64]) {
        let cols = self.cols.max(1);
        assert_eq!(x.len() % cols, 0, "input vectors");
        let vectors = x.len() / cols;
        assert_eq!(out.len(), vectors * self.outputs, "output shape");
        out.fill(0);
        let kernel = Kernel::selected().unwrap_or(Kernel::Portable);
        let mut sums = vec![0i32; vectors * self.outputs];
        for (r0, halves) in &self.blocks {
            let prow = halves[0].padded_rows();
            let rows = halves[0].rows;
            let mut pulses = vec![0u8; vectors * prow];
            for (p, xv) in pulses.chunks_exact_mut(prow).zip(x.chunks_exact(cols)) {
                for (d, &s) in p.iter_mut().zip(&xv[*r0..r0 + rows]) {
                    *d = code(s);
                }
            }
            for half in halves {
                half.column_sums_with(kernel, &pulses, &mut sums);
                for (o, &s) in out.iter_mut().zip(&sums) {
                    *o += i64::from(s);
                }
            }
        }
    }
}

/// The x86-64 kernels. Both keep four input vectors' accumulators in
/// registers so each level load serves four vectors, and skip row groups
/// where none of the four has a pulse.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256i, __m512i, _mm256_add_epi32, _mm256_madd_epi16, _mm256_maddubs_epi16,
        _mm256_set1_epi16, _mm256_set1_epi32, _mm256_setzero_si256, _mm512_dpbusd_epi32,
        _mm512_mask_permutexvar_epi32, _mm512_set1_epi32, _mm512_setzero_si512,
        _mm512_shuffle_i32x4, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi32,
        _mm512_unpacklo_epi64,
    };

    use super::PackedLevels;
    use crate::Kernel;

    /// Vectors computed together (their accumulators share each level load).
    const VECTORS: usize = 4;

    /// Runs an x86 kernel; the caller has checked [`Kernel::supported`].
    pub(super) fn column_sums(
        kernel: Kernel,
        levels: &PackedLevels,
        pulses: &[u8],
        out: &mut [i32],
    ) {
        assert!(kernel.supported());
        // One of the workspace's target-feature unsafe blocks (the others are
        // `Kernel::dispatch` and the calls in `blocks.rs`): calling a function
        // compiled for CPU features the baseline target lacks, after detecting
        // them.
        #[allow(unsafe_code)]
        // SAFETY: `kernel.supported()` detected the kernel's features on this
        // CPU at run time (AVX-512F, AVX-512BW and AVX-512 VNNI for `vnni`, AVX2
        // for `avx2`; for `amx` those of `vnni`, AMX-TILE, AMX-INT8 and the
        // operating system's permission). `vnni` and `avx2` use no unsafe
        // code: their loads are bounds-checked slice reads and `bytemuck`
        // casts; `amx::column_sums` states its own.
        unsafe {
            match kernel {
                // Tiles of 16 row groups: at least 64 rows.
                Kernel::Amx if levels.groups >= 16 => super::amx::column_sums(levels, pulses, out),
                Kernel::Amx | Kernel::Avx512Vnni => vnni(levels, pulses, out),
                Kernel::Avx2 => avx2(levels, pulses, out),
                Kernel::Portable => unreachable!("not an x86 kernel"),
            }
        }
    }

    /// A tile's 16 column sums into `o` (16 columns, or the last tile's
    /// fewer): a whole tile by a fixed-size copy, one vector store, where a
    /// copy of variable length calls `memcpy` (per tile and vector).
    #[inline(always)]
    fn store_lanes(o: &mut [i32], lanes: &[i32; 16]) {
        if let Ok(whole) = <&mut [i32; 16]>::try_from(&mut *o) {
            *whole = *lanes;
        } else {
            for (d, &l) in o.iter_mut().zip(lanes) {
                *d = l;
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn vnni(levels: &PackedLevels, pulses: &[u8], out: &mut [i32]) {
        if levels.tiles == 1 && levels.groups <= NARROW_GROUPS {
            vnni_narrow(levels, pulses, out);
            return;
        }
        let vectors = pulses.len() / levels.padded_rows();
        let mut groups = vec![0usize; levels.groups];
        let mut words = vec![[0i32; VECTORS]; levels.groups];
        for v0 in (0..vectors).step_by(VECTORS) {
            let nv = (vectors - v0).min(VECTORS);
            let n = levels.active_groups(pulses, v0, nv, &mut groups, &mut words);
            let (groups, words) = (&groups[..n], &words[..n]);
            let out = &mut out[v0 * levels.cols..(v0 + nv) * levels.cols];
            let mut t = 0;
            while t < levels.tiles {
                let nt = (levels.tiles - t).min(4);
                match nt {
                    4 => vnni_tiles::<4>(levels, t, groups, words, nv, out),
                    3 => vnni_tiles::<3>(levels, t, groups, words, nv, out),
                    2 => vnni_tiles::<2>(levels, t, groups, words, nv, out),
                    _ => vnni_tiles::<1>(levels, t, groups, words, nv, out),
                }
                t += nt;
            }
        }
    }

    /// Row groups of the narrowest crossbars, [`vnni_narrow`]'s.
    const NARROW_GROUPS: usize = 8;

    /// Columns up to which [`vnni_narrow`] lays its sums out by permutes
    /// (`cols^2` of them) rather than a 16 x 16 transpose (64 shuffles and a
    /// store per vector).
    const INTERLEAVED_COLS: usize = 8;

    /// Narrow crossbars (one column tile, at most [`NARROW_GROUPS`] row
    /// groups: a depthwise convolution's group of 9 or 25 rows and a few
    /// columns), sixteen vectors at a time, one per lane: per column and row
    /// group one `vpdpbusd` adds four rows of sixteen vectors, where the
    /// column-tile kernel adds one vector into a tile of mostly unused
    /// columns. The same integers: each lane's sum is its vector's.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn vnni_narrow(levels: &PackedLevels, pulses: &[u8], out: &mut [i32]) {
        let (prow, cols, ng) = (levels.padded_rows(), levels.cols, levels.groups);
        // Each column's four levels of each row group as one word.
        let mut lw = [[0i32; 16]; NARROW_GROUPS];
        // (x86 is little-endian: column `c`'s bytes `4 c .. 4 c + 4` are word `c`).
        for (w, block) in lw.iter_mut().zip(&levels.data[..ng]) {
            *w = bytemuck::cast::<[i8; 64], [i32; 16]>(*block);
        }
        let zero = _mm512_setzero_si512();
        let vectors = pulses.len() / prow;
        // Sixteen vectors' pulses are `16 ng` words, vector-major (word
        // `k ng + g` is vector `k`'s row group `g`): register `j` holds words
        // `16 j .. 16 j + 16`. Row group `g`'s sixteen lanes are gathered from
        // them by masked permutes: lane `k` takes word `q = k ng + g`, at
        // position `q % 16` of register `q / 16`. The indices and masks depend
        // on the shape alone.
        let mut index = [zero; NARROW_GROUPS];
        let mut masks = [[0u16; NARROW_GROUPS]; NARROW_GROUPS];
        for (g, (ix, mg)) in index.iter_mut().zip(masks.iter_mut()).enumerate().take(ng) {
            let mut lanes = [0i32; 16];
            for (k, lane) in lanes.iter_mut().enumerate() {
                let q = k * ng + g;
                *lane = i32::try_from(q % 16).expect("a lane");
                mg[q / 16] |= 1 << k;
            }
            *ix = bytemuck::cast::<[i32; 16], __m512i>(lanes);
        }
        // Up to [`INTERLEAVED_COLS`] columns, the block's sums are laid out by
        // masked permutes, the mirror of the pulses' above: output register
        // `j` (words `16 j .. 16 j + 16` of the block's `16 cols`) takes word
        // `q = 16 j + i` from lane `q / cols` of column `q % cols`'s sums.
        // `cols^2` permutes and `cols` whole stores, where the transpose takes
        // 64 shuffles and a store per vector.
        let interleaved = cols <= INTERLEAVED_COLS;
        let mut out_index = [zero; INTERLEAVED_COLS];
        let mut out_masks = [[0u16; INTERLEAVED_COLS]; INTERLEAVED_COLS];
        if interleaved {
            for (j, (ix, mj)) in out_index
                .iter_mut()
                .zip(out_masks.iter_mut())
                .enumerate()
                .take(cols)
            {
                let mut lanes = [0i32; 16];
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let q = 16 * j + i;
                    *lane = i32::try_from(q / cols).expect("a lane");
                    mj[q % cols] |= 1 << i;
                }
                *ix = bytemuck::cast::<[i32; 16], __m512i>(lanes);
            }
        }
        // `[column][lane]`: a block's sums before they are laid out per vector
        // (columns past `cols` stay zero).
        let mut sums = [zero; 16];
        for v0 in (0..vectors).step_by(16) {
            let nv = (vectors - v0).min(16);
            let block = &pulses[v0 * prow..(v0 + nv) * prow];
            // The block's words (x86 is little-endian: bytes `4 q .. 4 q + 4`
            // are word `q`), zero past the last vector. A whole block is `ng`
            // registers read in place (where a copy of variable length into a
            // zeroed buffer calls `memcpy`, per sixteen vectors).
            let regs = if nv == 16 {
                std::array::from_fn(|j| {
                    block.get(64 * j..64 * j + 64).map_or(zero, |r| {
                        let r: [u8; 64] = r.try_into().expect("64 bytes");
                        bytemuck::cast::<[u8; 64], __m512i>(r)
                    })
                })
            } else {
                let mut raw = [[0i32; 16]; NARROW_GROUPS];
                bytemuck::cast_slice_mut::<[i32; 16], u8>(&mut raw)[..block.len()]
                    .copy_from_slice(block);
                raw.map(bytemuck::cast::<[i32; 16], __m512i>)
            };
            // Per row group, each vector's four pulses as one word (zero in
            // lanes past the last vector).
            let mut words = [zero; NARROW_GROUPS];
            for ((wg, &ix), mg) in words.iter_mut().zip(&index).zip(&masks).take(ng) {
                let mut w = zero;
                for (&m, &r) in mg.iter().zip(&regs).take(ng) {
                    w = _mm512_mask_permutexvar_epi32(w, m, ix, r);
                }
                *wg = w;
            }
            for (s, c) in sums.iter_mut().zip(0..cols) {
                let mut a = zero;
                for (&wg, l) in words.iter().zip(&lw).take(ng) {
                    a = _mm512_dpbusd_epi32(a, wg, _mm512_set1_epi32(l[c]));
                }
                *s = a;
            }
            let region = &mut out[v0 * cols..vectors * cols];
            if interleaved {
                for (j, (&ix, mj)) in out_index.iter().zip(&out_masks).enumerate().take(cols) {
                    let mut w = zero;
                    for (&m, &sc) in mj.iter().zip(&sums).take(cols) {
                        w = _mm512_mask_permutexvar_epi32(w, m, ix, sc);
                    }
                    let words = bytemuck::cast::<__m512i, [i32; 16]>(w);
                    // A whole block's `cols` registers are whole; a last
                    // block's end within one.
                    let at = 16 * j;
                    let end = (at + 16).min(nv * cols);
                    if at >= end {
                        break;
                    }
                    store_lanes(&mut region[at..end], &words);
                }
                continue;
            }
            // `[lane][column]`: each vector's sums, laid out. Whole rows of 16
            // words, vector after vector: a row's words past `cols` (zero)
            // land where the next vectors' rows go, and are overwritten by
            // them, in this block or the next. Only the output's last
            // vectors, with no room for a whole row, store `cols` words
            // (where a store of `cols` words for every vector calls `memcpy`).
            let rows = transpose16(&sums);
            for (k, r) in rows.iter().enumerate().take(nv) {
                let lanes = bytemuck::cast::<__m512i, [i32; 16]>(*r);
                match region.get_mut(k * cols..k * cols + 16) {
                    Some(whole) => {
                        let whole: &mut [i32; 16] = whole.try_into().expect("16 words");
                        *whole = lanes;
                    }
                    None => store_lanes(&mut region[k * cols..(k + 1) * cols], &lanes),
                }
            }
        }
    }

    /// The transpose of a 16 x 16 matrix of `i32` (register `i` is row `i`):
    /// pairs of rows interleaved by words, then by double words, then 128-bit
    /// blocks exchanged twice.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: &[__m512i; 16]) -> [__m512i; 16] {
        // Rows `2i, 2i + 1` interleaved: within each 128-bit block `L`, the
        // words `4L, 4L + 1` (low) or `4L + 2, 4L + 3` (high) of both rows.
        let mut t = [r[0]; 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // Per four rows `4q ..`: register `4q + j` holds, in block `L`,
        // column `4L + j` of those four rows.
        let mut u = [r[0]; 16];
        for q in 0..4 {
            let b = 4 * q;
            u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
            u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
            u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
            u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
        }
        // Blocks 0 and 2 (0x88) or 1 and 3 (0xdd) of two four-row groups.
        let mut v = [r[0]; 16];
        for h in 0..2 {
            for j in 0..4 {
                let (a, b) = (u[8 * h + j], u[8 * h + 4 + j]);
                v[8 * h + j] = _mm512_shuffle_i32x4::<0x88>(a, b);
                v[8 * h + 4 + j] = _mm512_shuffle_i32x4::<0xdd>(a, b);
            }
        }
        // Column `c`: rows 0-7's and rows 8-15's halves joined.
        let mut out = [r[0]; 16];
        for j in 0..8 {
            out[j] = _mm512_shuffle_i32x4::<0x88>(v[j], v[8 + j]);
            out[8 + j] = _mm512_shuffle_i32x4::<0xdd>(v[j], v[8 + j]);
        }
        out
    }

    /// Column tiles `t0 .. t0 + NT` of up to [`VECTORS`] vectors.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn vnni_tiles<const NT: usize>(
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
                store_lanes(&mut o[c0..c0 + n], &lanes);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    fn avx2(levels: &PackedLevels, pulses: &[u8], out: &mut [i32]) {
        if levels.tiles == 1 && levels.groups <= NARROW_GROUPS {
            avx2_narrow(levels, pulses, out);
            return;
        }
        let vectors = pulses.len() / levels.padded_rows();
        let mut groups = vec![0usize; levels.groups];
        let mut words = vec![[0i32; VECTORS]; levels.groups];
        for v0 in (0..vectors).step_by(VECTORS) {
            let nv = (vectors - v0).min(VECTORS);
            let n = levels.active_groups(pulses, v0, nv, &mut groups, &mut words);
            let (groups, words) = (&groups[..n], &words[..n]);
            let out = &mut out[v0 * levels.cols..(v0 + nv) * levels.cols];
            for t in 0..levels.tiles {
                avx2_tile(levels, t, groups, words, nv, out);
            }
        }
    }

    /// [`vnni_narrow`]'s crossbars (one column tile, at most
    /// [`NARROW_GROUPS`] row groups) under AVX2: eight vectors at a time, one
    /// per lane. Per column and row group, `vpmaddubsw` multiplies each
    /// vector's four pulses by the column's four levels (broadcast) and
    /// `vpmaddwd` by ones adds them into the lane, as [`avx2_tile`] does for
    /// a tile of columns: the same integers, without a tile of mostly unused
    /// columns per vector.
    #[target_feature(enable = "avx2")]
    fn avx2_narrow(levels: &PackedLevels, pulses: &[u8], out: &mut [i32]) {
        let (prow, cols, ng) = (levels.padded_rows(), levels.cols, levels.groups);
        // Each column's four levels of each row group as one word (column
        // `c`'s bytes `4 c .. 4 c + 4` of the block are word `c`).
        let mut lw = [[0i32; 16]; NARROW_GROUPS];
        for (w, block) in lw.iter_mut().zip(&levels.data[..ng]) {
            *w = bytemuck::cast::<[i8; 64], [i32; 16]>(*block);
        }
        let ones = _mm256_set1_epi16(1);
        let vectors = pulses.len() / prow;
        for v0 in (0..vectors).step_by(8) {
            let nv = (vectors - v0).min(8);
            // Row group `g`'s pulses of the eight vectors, lane `k` vector
            // `v0 + k`'s four (zero past the last vector).
            let mut pw = [[0i32; 8]; NARROW_GROUPS];
            for k in 0..nv {
                let row = &pulses[(v0 + k) * prow..(v0 + k + 1) * prow];
                for (g, word) in row.chunks_exact(4).take(ng).enumerate() {
                    pw[g][k] = i32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                }
            }
            let p = pw.map(bytemuck::cast::<[i32; 8], __m256i>);
            let mut sums = [[0i32; 8]; 16];
            for (c, sc) in sums.iter_mut().enumerate().take(cols) {
                let mut acc = _mm256_setzero_si256();
                for (pg, lg) in p.iter().zip(&lw).take(ng) {
                    let pairs = _mm256_maddubs_epi16(*pg, _mm256_set1_epi32(lg[c]));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
                }
                *sc = bytemuck::cast::<__m256i, [i32; 8]>(acc);
            }
            for (k, o) in out[v0 * cols..(v0 + nv) * cols]
                .chunks_exact_mut(cols)
                .enumerate()
            {
                for (d, sc) in o.iter_mut().zip(&sums) {
                    *d = sc[k];
                }
            }
        }
    }

    /// Column tile `t` (two 8-column halves) of up to [`VECTORS`] vectors.
    /// Per half and vector: `vpmaddubsw` multiplies the four pulses (`u8`) by
    /// each column's four levels (`i8`) and adds adjacent pairs into `i16`,
    /// exact because levels lie in `[-64, 64]` (see [`super::MAX_LEVEL`]);
    /// `vpmaddwd` by ones adds the two pairs into the column's `i32` lane:
    /// the lane `vpdpbusd` computes.
    #[target_feature(enable = "avx2")]
    fn avx2_tile(
        levels: &PackedLevels,
        t: usize,
        groups: &[usize],
        words: &[[i32; VECTORS]],
        nv: usize,
        out: &mut [i32],
    ) {
        let zero = _mm256_setzero_si256();
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[zero; 2]; VECTORS];
        for (&g, w) in groups.iter().zip(words) {
            let b = bytemuck::cast::<[i8; 64], [__m256i; 2]>(levels.data[g * levels.tiles + t]);
            for (av, &wv) in acc.iter_mut().zip(w) {
                let a = _mm256_set1_epi32(wv);
                for (ak, &bk) in av.iter_mut().zip(&b) {
                    let pairs = _mm256_maddubs_epi16(a, bk);
                    *ak = _mm256_add_epi32(*ak, _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        let cols = levels.cols;
        let c0 = t * 16;
        let n = (cols - c0).min(16);
        for (av, o) in acc.iter().zip(out.chunks_exact_mut(cols)).take(nv) {
            let lanes = bytemuck::cast::<[__m256i; 2], [i32; 16]>(*av);
            store_lanes(&mut o[c0..c0 + n], &lanes);
        }
    }
}

/// Whether this process can run AMX-INT8 tiles: the CPU has AMX-TILE and
/// AMX-INT8 (CPUID leaf 7), and Linux granted the process the tile data
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked once; a
/// kernel without AMX support refuses it). Elsewhere `false`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn amx_permitted() -> bool {
    static PERMITTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PERMITTED.get_or_init(|| {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        // CPUID is safe to execute on x86-64 (an `unsafe fn` before Rust 1.94).
        #[allow(unused_unsafe, unsafe_code)]
        // SAFETY: every x86-64 CPU has CPUID. Leaf 7 is read only when leaf
        // 0 reports it (a leaf past the maximum returns another leaf's data
        // on Intel CPUs, not zeros).
        let leaf7 = unsafe { (__cpuid(0).eax >= 7).then(|| __cpuid_count(7, 0)) };
        let (tile, int8) = leaf7.map_or((false, false), |l| {
            ((l.edx >> 24) & 1 == 1, (l.edx >> 25) & 1 == 1)
        });
        tile && int8 && amx::request_tile_data()
    })
}

/// The AMX-INT8 kernel: `tdpbusd` on 16 x 64-byte tiles of pulses and
/// [`PackedLevels`] blocks, in inline assembly (Rust's AMX intrinsics are not
/// stable). Tile registers: `tmm0..tmm3` the sums of two blocks of 16 vectors
/// times two column tiles, `tmm4`/`tmm5` the two vector blocks' pulses,
/// `tmm6`/`tmm7` the two column tiles' levels, 64 rows (16 row groups) per
/// step: two pulse and two level loads per four products.
#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::asm;

    use super::PackedLevels;

    /// Asks Linux for the tile data (`arch_prctl` is system call 158 on
    /// x86-64; `ARCH_REQ_XCOMP_PERM` = 0x1023, `XFEATURE_XTILEDATA` = 18);
    /// `true` when granted. Other systems: `false`.
    pub(super) fn request_tile_data() -> bool {
        #[cfg(target_os = "linux")]
        {
            let ret: i64;
            #[allow(unsafe_code)]
            // SAFETY: the system call reads its two integer arguments and
            // writes only the process's extended-state permissions; it clobbers
            // `rcx` and `r11`, as declared, and touches no memory of ours.
            unsafe {
                asm!(
                    "syscall",
                    inlateout("rax") 158i64 => ret,
                    in("rdi") 0x1023i64,
                    in("rsi") 18i64,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            ret == 0
        }
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// `ldtilecfg`'s 64-byte operand (palette 1).
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        /// Bytes per row of each tile register.
        colsb: [u16; 16],
        /// Rows of each tile register.
        rows: [u8; 16],
    }

    /// `tdpbusd tmm{c}, tmm{a}, tmm{b}`: `C[m][n] += sum_k A[m][k] B[k / 4][4 n + k % 4]`
    /// (`u8` by `i8` in `i32`, wrapping; the sums here are exact, below 2^31).
    macro_rules! tdpbusd {
        ($c:literal, $a:literal, $b:literal) => {
            asm!(
                concat!("tdpbusd tmm", $c, ", tmm", $a, ", tmm", $b),
                options(nostack)
            )
        };
    }

    /// `tilestored` of sum tile `q` (0 to 3): its 16 rows of 16 sums to
    /// `out[at + i * stride ..][..16]`, row `i`.
    ///
    /// # Panics
    /// If a row would leave `out`.
    #[allow(unsafe_code)]
    fn store(q: usize, out: &mut [i32], at: usize, stride: usize) {
        assert!(at + 15 * stride + 16 <= out.len(), "rows inside the output");
        let p = out[at..].as_mut_ptr().cast::<u8>();
        let s = stride * 4;
        // SAFETY: writes 16 rows of 64 bytes (16 `i32`), `4 stride` bytes
        // apart, from `out[at]`: the last ends at `out[at + 15 stride + 16]`,
        // inside `out` (asserted). The tiles were configured (16 x 64 bytes)
        // by `column_sums`.
        unsafe {
            match q {
                0 => {
                    asm!("tilestored [{p} + {s}], tmm0", p = in(reg) p, s = in(reg) s, options(nostack))
                }
                1 => {
                    asm!("tilestored [{p} + {s}], tmm1", p = in(reg) p, s = in(reg) s, options(nostack))
                }
                2 => {
                    asm!("tilestored [{p} + {s}], tmm2", p = in(reg) p, s = in(reg) s, options(nostack))
                }
                _ => {
                    asm!("tilestored [{p} + {s}], tmm3", p = in(reg) p, s = in(reg) s, options(nostack))
                }
            }
        }
    }

    /// [`PackedLevels::column_sums`] on AMX tiles, 32 vectors by two column
    /// tiles at a time. The last 64-row step may extend past a vector's row
    /// (rows are padded to 4, not 64): those bytes multiply the zero level
    /// blocks past `groups`, and the last 32 vectors are read from a copy
    /// with 64 bytes of zeros after it, so no read leaves its buffer.
    ///
    /// # Panics
    /// If this process cannot run AMX ([`super::amx_permitted`]), or the
    /// shapes do not match.
    #[allow(unsafe_code)]
    pub(super) fn column_sums(levels: &PackedLevels, pulses: &[u8], out: &mut [i32]) {
        assert!(super::amx_permitted(), "AMX tiles are not available");
        let prow = levels.padded_rows();
        let (tiles, cols) = (levels.tiles, levels.cols);
        let steps = levels.groups.div_ceil(16);
        assert!(
            levels.data.len() >= steps * 16 * tiles,
            "blocks for whole tiles"
        );
        let vectors = pulses.len() / prow;
        assert_eq!(out.len(), vectors * cols, "output shape");
        let mut cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        cfg.colsb[..8].fill(64);
        cfg.rows[..8].fill(16);
        let mut tail = vec![0u8; 32 * prow + 64];
        let mut c = [[0i32; 16]; 16];
        let level_stride = tiles * 64;
        // SAFETY: AMX is enabled for this process (asserted above); the
        // configuration is a valid palette-1 operand of 64 bytes.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) &raw const cfg, options(nostack));
        }
        for v0 in (0..vectors).step_by(32) {
            let nv = (vectors - v0).min(32);
            // 32 rows of pulses and 64 bytes of slack past them.
            let block: &[u8] = if (v0 + 32) * prow + 64 <= pulses.len() {
                &pulses[v0 * prow..(v0 + 32) * prow + 64]
            } else {
                tail[..nv * prow].copy_from_slice(&pulses[v0 * prow..(v0 + nv) * prow]);
                tail[nv * prow..].fill(0);
                &tail
            };
            let (a0, a1) = (block.as_ptr(), block[16 * prow..].as_ptr());
            let data = levels.data.as_ptr().cast::<u8>();
            for t0 in (0..tiles).step_by(2) {
                let two = t0 + 1 < tiles;
                // SAFETY: pulse loads read 16 rows of 64 bytes from offset
                // `64 k` (`k < steps`, so `64 k < prow`) of rows `prow` apart,
                // starting at row 0 or 16 of `block`: at most `31 prow + 64 k +
                // 64 <= 32 prow + 64` bytes, `block`'s length. Level loads read
                // 16 blocks `tiles` apart from block `16 k tiles + t0 (+ 1)`:
                // the last is block `(16 k + 15) tiles + t0 + 1 < steps * 16 *
                // tiles` (asserted). Stores are `store`'s.
                unsafe {
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack)
                    );
                    for k in 0..steps {
                        asm!("tileloadd tmm4, [{a} + {s}]", a = in(reg) a0.add(64 * k), s = in(reg) prow, options(nostack));
                        asm!("tileloadd tmm5, [{a} + {s}]", a = in(reg) a1.add(64 * k), s = in(reg) prow, options(nostack));
                        let b = data.add((16 * k * tiles + t0) * 64);
                        asm!("tileloadd tmm6, [{b} + {s}]", b = in(reg) b, s = in(reg) level_stride, options(nostack));
                        tdpbusd!("0", "4", "6");
                        tdpbusd!("2", "5", "6");
                        if two {
                            asm!("tileloadd tmm7, [{b} + {s}]", b = in(reg) b.add(64), s = in(reg) level_stride, options(nostack));
                            tdpbusd!("1", "4", "7");
                            tdpbusd!("3", "5", "7");
                        }
                    }
                }
                // Sum tile `q`: vector block `q / 2`, column tile `t0 + q % 2`.
                for q in 0..4 {
                    let (half, j) = (q / 2, q % 2);
                    let rows = nv.saturating_sub(16 * half).min(16);
                    if rows == 0 || (j == 1 && !two) {
                        continue;
                    }
                    let (v, c0) = (v0 + 16 * half, (t0 + j) * 16);
                    let n = (cols - c0).min(16);
                    if rows == 16 && n == 16 {
                        // A whole tile: straight into the output's rows.
                        store(q, out, v * cols + c0, cols);
                        continue;
                    }
                    store(q, c.as_flattened_mut(), 0, 16);
                    for (k, row) in c.iter().enumerate().take(rows) {
                        out[(v + k) * cols + c0..][..n].copy_from_slice(&row[..n]);
                    }
                }
            }
        }
        // SAFETY: releases the tile state configured above.
        unsafe {
            asm!("tilerelease", options(nostack));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_rng;
    use rand::RngExt;

    /// Every kernel this CPU runs equals the plain triple loop, integer for
    /// integer, on every shape class (padding rows and columns, 1..3 tile
    /// remainders, vector remainders of the four-vector blocks) and at the
    /// extremes: pulses of 255 against levels of +-64, where AVX2's pairwise
    /// `i16` sums come closest to saturating.
    #[test]
    fn every_kernel_equals_the_plain_product() {
        let kernels = Kernel::supported_kernels();
        println!("kernels: {kernels:?}");
        let mut rng = stream_rng(11, &[]);
        for &(b, r, c, extreme) in &[
            (1, 1, 1, false),
            (5, 9, 3, false),
            (7, 64, 16, true),
            (9, 130, 33, false),
            (4, 512, 200, true),
            (13, 77, 64, false),
            (6, 300, 512, false),
            (3, 1030, 47, true),
            // AMX tiles (at least 64 rows): whole and partial 32-vector
            // blocks, odd column tiles, rows past the last whole 64.
            (40, 300, 70, false),
            (33, 64, 16, true),
            (70, 130, 33, false),
            (32, 512, 48, true),
            // The narrow kernel: one column tile, at most 8 row groups,
            // whole and partial sixteen-vector blocks.
            (37, 9, 4, false),
            (16, 32, 16, true),
            (33, 25, 7, false),
            (18, 12, 1, true),
            (50, 33, 16, false),
            // One, two and five row groups.
            (21, 4, 5, false),
            (17, 7, 9, true),
            (19, 20, 3, false),
            // Sums laid out by permutes (up to 8 columns): blocks without a
            // tail, a tail of one vector, fewer words than a register.
            (48, 9, 3, false),
            (65, 9, 2, true),
            (3, 9, 5, false),
            (40, 9, 8, true),
            (35, 18, 6, false),
            // By the transpose (9-16 columns), whole 16-word rows stored past
            // a vector's columns: spills across blocks, a last block whose
            // rows do not all fit.
            (40, 9, 12, false),
            (33, 25, 10, true),
        ] {
            let levels: Vec<i32> = (0..r * c)
                .map(|_| match (extreme, rng.random_range(0u32..4)) {
                    (true, 0) => MAX_LEVEL,
                    (true, 1) => -MAX_LEVEL,
                    (true, _) => rng.random_range(-MAX_LEVEL..=MAX_LEVEL),
                    (false, _) => rng.random_range(-15..=15),
                })
                .collect();
            let packed = PackedLevels::new(r, c, |i, j| levels[i * c + j]).unwrap();
            let pr = packed.padded_rows();
            let mut pulses = vec![0u8; b * pr];
            for v in 0..b {
                for i in 0..r {
                    // Mostly zero, some 255s (the extreme product); all 255 when extreme.
                    let u: u32 = rng.random_range(0..8);
                    pulses[v * pr + i] = match (extreme, u) {
                        (true, _) | (_, 4) => 255,
                        (_, 0..=3) => 0,
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
            for &k in &kernels {
                let mut got = vec![i32::MIN; b * c];
                packed.column_sums_with(k, &pulses, &mut got);
                assert_eq!(got, want, "{b}x{r}x{c}, {k}");
            }
            let mut got = vec![i32::MIN; b * c];
            packed.column_sums(&pulses, &mut got);
            assert_eq!(got, want, "{b}x{r}x{c}, selected kernel");
        }
    }

    /// Exact products equal the plain `i64` loop for unsigned and signed inputs
    /// at the extremes (weights of -128 and 127, inputs of 255 and -128),
    /// across shapes with padding, and across a block boundary of inputs.
    #[test]
    fn exact_matrix_equals_the_plain_product() {
        let mut rng = stream_rng(12, &[]);
        for &(b, outputs, cols) in &[
            (1, 1, 1),
            (3, 5, 9),
            (64, 40, 300),
            (33, 17, 130),
            (2, 3, EXACT_BLOCK_ROWS + 37),
        ] {
            let w: Vec<i8> = (0..outputs * cols)
                .map(|_| match rng.random_range(0u32..4) {
                    0 => -128,
                    1 => 127,
                    _ => rng.random_range(-128..=127),
                })
                .collect();
            let xu: Vec<u8> = (0..b * cols)
                .map(|_| match rng.random_range(0u32..3) {
                    0 => 255,
                    _ => rng.random_range(0..=255),
                })
                .collect();
            let xs: Vec<i8> = (0..b * cols)
                .map(|_| match rng.random_range(0u32..3) {
                    0 => -128,
                    _ => rng.random_range(-128..=127),
                })
                .collect();
            let plain = |x: &dyn Fn(usize) -> i64| -> Vec<i64> {
                (0..b * outputs)
                    .map(|i| {
                        let (v, o) = (i / outputs, i % outputs);
                        (0..cols)
                            .map(|c| x(v * cols + c) * i64::from(w[o * cols + c]))
                            .sum()
                    })
                    .collect()
            };
            let m = ExactMatrix::new(&w, outputs, cols);
            assert_eq!((m.outputs(), m.cols()), (outputs, cols));
            let sums: Vec<i64> = (0..outputs)
                .map(|o| (0..cols).map(|c| i64::from(w[o * cols + c])).sum())
                .collect();
            assert_eq!(m.sums(), sums, "{outputs}x{cols} sums");
            let mut got = vec![i64::MIN; b * outputs];
            m.products(&xu, &mut got);
            assert_eq!(got, plain(&|i| i64::from(xu[i])), "{b}x{outputs}x{cols}");
            m.products_signed(&xs, &mut got);
            assert_eq!(
                got,
                plain(&|i| i64::from(xs[i])),
                "{b}x{outputs}x{cols} signed"
            );
        }
    }

    #[test]
    fn levels_outside_the_packed_range_are_refused() {
        for bad in [MAX_LEVEL + 1, -MAX_LEVEL - 1, 128, -128] {
            assert!(PackedLevels::new(1, 1, |_, _| bad).is_none(), "{bad}");
        }
        for good in [MAX_LEVEL, -MAX_LEVEL, 0] {
            assert!(PackedLevels::new(1, 1, |_, _| good).is_some(), "{good}");
        }
        // Column by column: a bad level anywhere, including the last column
        // of a partial tile.
        for bad in [MAX_LEVEL + 1, -MAX_LEVEL - 1, 127, -128] {
            let at = |c: usize, out: &mut [i8]| {
                out.fill(1);
                if c == 16 {
                    #[allow(clippy::cast_possible_truncation)]
                    let b = bad as i8;
                    out[6] = b;
                }
            };
            assert!(PackedLevels::from_cols(7, 17, at).is_none(), "{bad}");
        }
        let edge = |_: usize, out: &mut [i8]| out.fill(-64);
        assert!(PackedLevels::from_cols(7, 17, edge).is_some());
        for (bad, ok) in [(65i8, true), (-65, true), (64, false), (-64, false)] {
            let mut levels = vec![3i8; 7 * 17];
            levels[6 * 17 + 16] = bad;
            assert_eq!(
                PackedLevels::from_row_major(&levels, 7, 17).is_none(),
                ok,
                "{bad}"
            );
        }
    }

    /// Packing column by column, or four rows at a time, lays out the same
    /// blocks as row by row, on
    /// shapes with partial row groups, partial column tiles and a 16-group
    /// tail (the zero blocks past the used groups).
    #[test]
    fn packing_by_columns_equals_packing_by_rows() {
        let mut rng = stream_rng(12, &[]);
        for &(r, c) in &[
            (1, 1),
            (3, 5),
            (4, 16),
            (9, 17),
            (64, 33),
            (130, 48),
            (257, 100),
        ] {
            let levels: Vec<i8> = (0..r * c)
                .map(|_| rng.random_range(-MAX_LEVEL..=MAX_LEVEL))
                .map(|l| i8::try_from(l).unwrap())
                .collect();
            let rows = PackedLevels::from_rows(r, c, |i, out| {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = i32::from(levels[i * c + j]);
                }
            })
            .unwrap();
            let cols = PackedLevels::from_cols(r, c, |j, out| {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = levels[i * c + j];
                }
            })
            .unwrap();
            let major = PackedLevels::from_row_major(&levels, r, c).unwrap();
            for other in [&cols, &major] {
                assert_eq!(
                    (rows.rows, rows.cols, rows.groups, rows.tiles),
                    (other.rows, other.cols, other.groups, other.tiles)
                );
                assert!(rows.data == other.data, "{r} x {c}");
            }
        }
    }
}
