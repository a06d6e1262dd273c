//! A crossbar of integer device levels, and its programmed (possibly
//! non-ideal) conductance image that inputs are applied to.
//!
//! [`Crossbar`] holds the target levels exactly as a compiler asked for them.
//! [`Crossbar::program`] writes them to devices, applying programming
//! variation and stuck cells when a [`DeviceNoise`] is given, and yields a
//! [`ProgrammedCrossbar`]. Only the used region (the rows and columns a
//! mapping occupies) is stored: unused cells are OFF and draw no current.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, linalg::general_mat_mul};
use rand::RngExt;

use crate::packed::PackedLevels;
use crate::{CellKind, CrossbarGeometry, DeviceError, DeviceNoise, Xoshiro256PlusPlus};

/// Target device levels of one crossbar's used region, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossbar {
    geometry: CrossbarGeometry,
    used_rows: usize,
    used_cols: usize,
    pos: Vec<u8>,
    neg: Vec<u8>,
}

impl Crossbar {
    /// Builds a crossbar whose top-left `used_rows x used_cols` cells hold
    /// `pos` (and, for 2T2R, `neg`) levels, row-major.
    ///
    /// # Errors
    /// A region larger than the geometry, arrays of the wrong length, a level
    /// above the device maximum, or negative levels on 1T1R.
    pub fn new(
        geometry: CrossbarGeometry,
        used_rows: usize,
        used_cols: usize,
        pos: Vec<u8>,
        neg: Option<Vec<u8>>,
    ) -> Result<Self, DeviceError> {
        if used_rows > geometry.rows() || used_cols > geometry.cols() {
            return Err(DeviceError::RegionTooLarge {
                used_rows,
                used_cols,
                rows: geometry.rows(),
                cols: geometry.cols(),
            });
        }
        let n = used_rows * used_cols;
        let check = |what: &'static str, v: &[u8]| -> Result<(), DeviceError> {
            if v.len() != n {
                return Err(DeviceError::ShapeMismatch {
                    what,
                    expected: n,
                    got: v.len(),
                    rows: used_rows,
                    cols: used_cols,
                });
            }
            let max = geometry.max_level();
            if let Some(i) = v.iter().position(|&l| l > max) {
                return Err(DeviceError::LevelTooLarge {
                    row: i / used_cols,
                    col: i % used_cols,
                    level: v[i],
                    max,
                });
            }
            Ok(())
        };
        check("positive levels", &pos)?;
        let neg = match (geometry.cell(), neg) {
            (CellKind::OneT1R, Some(neg)) => {
                if neg.iter().any(|&l| l != 0) {
                    return Err(DeviceError::NegativeOn1T1R);
                }
                Vec::new()
            }
            (CellKind::OneT1R, None) => Vec::new(),
            (CellKind::TwoT2R, Some(neg)) => {
                check("negative levels", &neg)?;
                neg
            }
            (CellKind::TwoT2R, None) => vec![0; n],
        };
        Ok(Self {
            geometry,
            used_rows,
            used_cols,
            pos,
            neg,
        })
    }

    /// The physical geometry.
    #[must_use]
    pub fn geometry(&self) -> CrossbarGeometry {
        self.geometry
    }

    /// Rows in use.
    #[must_use]
    pub fn used_rows(&self) -> usize {
        self.used_rows
    }

    /// Columns in use.
    #[must_use]
    pub fn used_cols(&self) -> usize {
        self.used_cols
    }

    /// Target `(positive, negative)` levels of a used cell (negative is 0 on 1T1R).
    #[must_use]
    pub fn levels(&self, row: usize, col: usize) -> (u8, u8) {
        let i = row * self.used_cols + col;
        (self.pos[i], self.neg.get(i).copied().unwrap_or(0))
    }

    /// Sum of all target levels over both devices of every used cell.
    #[must_use]
    pub fn level_sum(&self) -> u64 {
        self.pos
            .iter()
            .chain(self.neg.iter())
            .map(|&l| u64::from(l))
            .sum()
    }

    /// Exact noise-free column sums for one vector of per-row pulse counts:
    /// `sum_r pulses[r] * (pos[r][c] - neg[r][c])`. Slow and obviously correct;
    /// the reference the fast path is tested against.
    ///
    /// # Panics
    /// If `pulses.len() != used_rows`.
    #[must_use]
    pub fn column_sums_exact(&self, pulses: &[u8]) -> Vec<i64> {
        assert_eq!(pulses.len(), self.used_rows, "one pulse count per used row");
        (0..self.used_cols)
            .map(|c| {
                (0..self.used_rows)
                    .map(|r| {
                        let (p, n) = self.levels(r, c);
                        i64::from(pulses[r]) * (i64::from(p) - i64::from(n))
                    })
                    .sum()
            })
            .collect()
    }

    /// Programs the devices. With `noise` absent or ideal, the conductances are
    /// exactly the target levels and `rng` is not touched.
    #[must_use]
    pub fn program(
        &self,
        noise: Option<&DeviceNoise>,
        rng: &mut Xoshiro256PlusPlus,
    ) -> ProgrammedCrossbar {
        let (r, c) = (self.used_rows, self.used_cols);
        let max = f32::from(self.geometry.max_level());
        let noisy = noise.filter(|n| !n.is_ideal());
        let mut write = |level: u8| -> (f32, bool) {
            let Some(n) = noisy else {
                return (f32::from(level), false);
            };
            let u: f64 = rng.random();
            if u < n.stuck_at_zero() {
                return (0.0, true);
            }
            if u < n.stuck_at_zero() + n.stuck_at_max() {
                return (max, true);
            }
            if level == 0 || n.programming_sigma() == 0.0 {
                return (f32::from(level), false);
            }
            let z: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng);
            #[allow(clippy::cast_possible_truncation)]
            let g = (f64::from(level) * (1.0 + n.programming_sigma() * z)) as f32;
            (g.clamp(0.0, max), false)
        };
        let mut diff = Array2::<f32>::zeros((r, c));
        let mut magnitude = Array2::<f32>::zeros((r, c));
        let mut stuck = 0usize;
        for row in 0..r {
            for col in 0..c {
                let (p, n) = self.levels(row, col);
                let (gp, sp) = write(p);
                let (gn, sn) = if self.geometry.cell() == CellKind::TwoT2R {
                    write(n)
                } else {
                    (0.0, false)
                };
                stuck += usize::from(sp) + usize::from(sn);
                diff[[row, col]] = gp - gn;
                magnitude[[row, col]] = gp + gn;
            }
        }
        ProgrammedCrossbar::from_matrices(self.geometry, diff, magnitude, stuck)
    }
}

/// The conductance image of a programmed crossbar, laid out for batched
/// matrix products (`pulses x diff`) and for single-column reads (recovery).
#[derive(Debug, Clone)]
pub struct ProgrammedCrossbar {
    geometry: CrossbarGeometry,
    diff: Array2<f32>,
    diff_t: Array2<f32>,
    level_planes: Option<LevelPlanes>,
    /// Ideal devices only: `G+ - G-` and `G+ + G-` packed for integer batches.
    packed: Option<(PackedLevels, PackedLevels)>,
    magnitude: Array2<f32>,
    magnitude_t: Array2<f32>,
    row_magnitude: Vec<f32>,
    level_sum: f64,
    stuck_devices: usize,
}

impl ProgrammedCrossbar {
    fn from_matrices(
        geometry: CrossbarGeometry,
        diff: Array2<f32>,
        magnitude: Array2<f32>,
        stuck_devices: usize,
    ) -> Self {
        let diff_t = diff.t().as_standard_layout().into_owned();
        let level_planes = LevelPlanes::new(geometry, &diff, &magnitude);
        // Integer levels (ideal programming) also get the packed integer layout.
        #[allow(clippy::cast_possible_truncation)]
        let pack =
            |g: &Array2<f32>| PackedLevels::new(g.nrows(), g.ncols(), |r, c| g[[r, c]] as i32);
        let packed = level_planes
            .as_ref()
            .and_then(|_| Some((pack(&diff)?, pack(&magnitude)?)));
        let magnitude_t = magnitude.t().as_standard_layout().into_owned();
        let row_magnitude = magnitude
            .rows()
            .into_iter()
            .map(|r| r.sum())
            .collect::<Vec<_>>();
        let level_sum = magnitude.iter().map(|&g| f64::from(g)).sum();
        Self {
            geometry,
            diff,
            diff_t,
            level_planes,
            packed,
            magnitude,
            magnitude_t,
            row_magnitude,
            level_sum,
            stuck_devices,
        }
    }

    /// The physical geometry.
    #[must_use]
    pub fn geometry(&self) -> CrossbarGeometry {
        self.geometry
    }

    /// Rows in use.
    #[must_use]
    pub fn used_rows(&self) -> usize {
        self.diff.nrows()
    }

    /// Columns in use.
    #[must_use]
    pub fn used_cols(&self) -> usize {
        self.diff.ncols()
    }

    /// Devices stuck at 0 or at the maximum level.
    #[must_use]
    pub fn stuck_devices(&self) -> usize {
        self.stuck_devices
    }

    /// Sum of programmed conductances over all devices (level units).
    #[must_use]
    pub fn level_sum(&self) -> f64 {
        self.level_sum
    }

    /// Per used row, the summed conductance of both devices over the used columns.
    #[must_use]
    pub fn row_magnitudes(&self) -> &[f32] {
        &self.row_magnitude
    }

    /// Column sums of a batch: `out = pulses (batch x rows) . (G+ - G-)`.
    /// Exact for integer levels while sums stay below 2^24. Computed vector by
    /// vector over the non-zero pulses only (a sparse-dense product: high input
    /// slices are mostly zero), in a fixed order, so programmed (real-valued)
    /// conductances give the same result on every run.
    ///
    /// # Panics
    /// On shape mismatch.
    #[inline(always)]
    pub fn column_sums(&self, pulses: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        product(pulses, &self.diff, out);
    }

    /// Whether the conductances are integer levels (ideal programming; stuck
    /// cells at 0 or the maximum level keep them integers): then
    /// [`Self::column_sums_int`] and [`Self::column_magnitudes_int`] apply.
    #[must_use]
    pub fn is_ideal(&self) -> bool {
        self.packed.is_some()
    }

    /// Values per pulse vector of [`Self::column_sums_int`]: the used rows
    /// rounded up to a multiple of 4 (the padding pulses must be zero).
    #[must_use]
    pub fn pulse_stride(&self) -> usize {
        self.used_rows().div_ceil(4) * 4
    }

    /// Exact integer column sums of a batch of ideal devices:
    /// `out[v][c] = sum_r pulses[v][r] * (G+ - G-)[r][c]`, pulse vectors of
    /// [`Self::pulse_stride`] counts, `out` of `vectors x used_cols`. The same
    /// integers as [`Self::column_sums`], several times faster (`u8 x i8`
    /// products in `i32`, by the [`crate::Kernel`] chosen at run time).
    ///
    /// # Panics
    /// If the crossbar is not ideal ([`Self::is_ideal`]) or on shape mismatch.
    pub fn column_sums_int(&self, pulses: &[u8], out: &mut [i32]) {
        self.packed
            .as_ref()
            .expect("integer column sums need ideal devices")
            .0
            .column_sums(pulses, out);
    }

    /// [`Self::column_magnitudes`] as exact integers, for ideal devices (see
    /// [`Self::column_sums_int`] for the layout).
    ///
    /// # Panics
    /// If the crossbar is not ideal ([`Self::is_ideal`]) or on shape mismatch.
    pub fn column_magnitudes_int(&self, pulses: &[u8], out: &mut [i32]) {
        self.packed
            .as_ref()
            .expect("integer magnitudes need ideal devices")
            .1
            .column_sums(pulses, out);
    }

    /// `N+ + N-` of a batch: `out = pulses . (G+ + G-)`, the noise magnitude.
    ///
    /// # Panics
    /// On shape mismatch.
    #[inline(always)]
    pub fn column_magnitudes(&self, pulses: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        product(pulses, &self.magnitude, out);
    }

    /// `G+ - G-` of one used column, over the used rows (contiguous).
    #[must_use]
    pub fn diff_column(&self, col: usize) -> &[f32] {
        self.diff_t.row(col).to_slice().expect("standard layout")
    }

    /// The column sum of one used column under a 1-bit input slice given as a
    /// row bitset (`row_bits[r / 64] >> (r % 64) & 1`, at least
    /// `used_rows.div_ceil(64)` words, bits past the used rows zero).
    ///
    /// Ideal crossbars answer exactly from per-level bit-planes of the column
    /// (`sum_l 2^l (popcount(x & P_l) - popcount(x & N_l))`); after programming
    /// noise the conductances are real-valued and the sum is a dot product.
    #[must_use]
    #[inline(always)]
    pub fn column_sum_bits(&self, col: usize, row_bits: &[u64]) -> f32 {
        if let Some(p) = &self.level_planes {
            // Exact: |sum| <= rows x 15 < 2^24.
            #[allow(clippy::cast_precision_loss)]
            return p.column_sum(col, row_bits) as f32;
        }
        bits_dot(row_bits, self.diff_column(col))
    }

    /// Words of a row bitset of `rows` rows as [`Self::column_sum_bits`] reads
    /// it fastest: `rows / 64` rounded up to whole blocks of 8 words (512
    /// rows), the padding zero. Shorter bitsets (at least `rows / 64` rounded
    /// up) give the same sums.
    #[must_use]
    pub fn row_bit_words(rows: usize) -> usize {
        rows.div_ceil(64 * PLANE_BLOCK) * PLANE_BLOCK
    }

    /// The exact integer column sum under a 1-bit input slice (see
    /// [`Self::column_sum_bits`]), or `None` after programming noise.
    #[must_use]
    #[inline(always)]
    pub fn column_sum_bits_exact(&self, col: usize, row_bits: &[u64]) -> Option<i32> {
        self.level_planes
            .as_ref()
            .map(|p| p.column_sum(col, row_bits))
    }

    /// `N+ + N-` of one used column under a 1-bit input slice (see [`Self::column_sum_bits`]).
    /// Ideal crossbars answer exactly from the level bit-planes.
    #[must_use]
    #[inline(always)]
    pub fn column_magnitude_bits(&self, col: usize, row_bits: &[u64]) -> f32 {
        if let Some(p) = &self.level_planes {
            // Exact: sum <= rows x 30 < 2^24.
            #[allow(clippy::cast_precision_loss)]
            return p.column_sum_signed(col, row_bits, 1) as f32;
        }
        bits_dot(row_bits, self.magnitude_column(col))
    }

    /// `G+ + G-` of one used column, over the used rows (contiguous).
    #[must_use]
    pub fn magnitude_column(&self, col: usize) -> &[f32] {
        self.magnitude_t
            .row(col)
            .to_slice()
            .expect("standard layout")
    }
}

/// `sum_r bit_r * w_r` for a row bitset, added in row order. Visits the set
/// bits only: 1-bit input planes are mostly empty.
#[inline(always)]
fn bits_dot(row_bits: &[u64], w: &[f32]) -> f32 {
    let mut sum = 0f32;
    for (wi, &word) in w.chunks(64).zip(row_bits) {
        // Bits past the used rows are zero (see `column_sum_bits`).
        let mut word = word & (u64::MAX >> (64 - wi.len()));
        while word != 0 {
            sum += wi[word.trailing_zeros() as usize];
            word &= word - 1;
        }
    }
    sum
}

/// Bit-planes of an ideal crossbar's integer levels, per used column: for each
/// level bit `l` and sign, the bitset of rows whose level has bit `l` set.
/// Layout: `[((col * bits + l) * 2 + sign) * words + word]`; `col_bits[col]` is
/// the number of level bits the column actually uses (its widest level).
#[derive(Debug, Clone)]
struct LevelPlanes {
    blocks: usize,
    bits: usize,
    col_bits: Vec<usize>,
    data: Vec<[u64; PLANE_BLOCK]>,
}

/// Words per block of a level plane: 512 rows, one 512-bit register, so the
/// fixed-size loops of [`LevelPlanes::column_sum`] vectorise whole.
const PLANE_BLOCK: usize = 8;

impl LevelPlanes {
    /// `None` unless every conductance is an integer level (ideal programming).
    fn new(
        geometry: CrossbarGeometry,
        diff: &Array2<f32>,
        magnitude: &Array2<f32>,
    ) -> Option<Self> {
        let (rows, cols) = diff.dim();
        let max = f32::from(geometry.max_level());
        let integral = |g: f32| g == g.trunc() && g.abs() <= max;
        if !diff.iter().chain(magnitude.iter()).all(|&g| integral(g)) {
            return None;
        }
        let words = rows.div_ceil(64);
        let blocks = words.div_ceil(PLANE_BLOCK);
        let bits = geometry.bits_per_device() as usize;
        let mut data = vec![[0u64; PLANE_BLOCK]; cols * bits * 2 * blocks];
        let mut col_bits = vec![0usize; cols];
        for r in 0..rows {
            let (word, bit) = (r / 64, r % 64);
            let (block, lane) = (word / PLANE_BLOCK, word % PLANE_BLOCK);
            for c in 0..cols {
                // One device of a pair is 0 for compiled weights, but programming may
                // drive both; recover each from the sum and difference.
                let (d, m) = (diff[[r, c]], magnitude[[r, c]]);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let (pos, neg) = (((m + d) / 2.0) as u32, ((m - d) / 2.0) as u32);
                for (sign, level) in [(0, pos), (1, neg)] {
                    col_bits[c] = col_bits[c].max((32 - level.leading_zeros()) as usize);
                    for l in 0..bits {
                        if (level >> l) & 1 == 1 {
                            data[((c * bits + l) * 2 + sign) * blocks + block][lane] |= 1u64 << bit;
                        }
                    }
                }
            }
        }
        Some(Self {
            blocks,
            bits,
            col_bits,
            data,
        })
    }

    /// `sum_r bit_r * (G+ - G-)[r][col]`.
    #[inline(always)]
    fn column_sum(&self, col: usize, row_bits: &[u64]) -> i32 {
        self.column_sum_signed(col, row_bits, -1)
    }

    /// `sum_r bit_r * (G+ + neg_sign * G-)[r][col]`, `neg_sign` = -1 (the column
    /// sum) or 1 (the magnitude `N+ + N-`).
    #[inline(always)]
    fn column_sum_signed(&self, col: usize, row_bits: &[u64], neg_sign: i64) -> i32 {
        // Whole blocks when the caller padded its bitset (see `row_bit_words`).
        let x = &row_bits[..(self.blocks * PLANE_BLOCK).min(row_bits.len())];
        let nb = self.blocks;
        let mut sum = 0i64;
        for (bi, xw) in x.chunks(PLANE_BLOCK).enumerate() {
            // Whole blocks are read in place (a copy into a local array would
            // stall the vector load behind the scalar stores).
            let xb: [u64; PLANE_BLOCK] = match <&[u64; PLANE_BLOCK]>::try_from(xw) {
                Ok(full) => *full,
                Err(_) => std::array::from_fn(|k| xw.get(k).copied().unwrap_or(0)),
            };
            // Per-lane sums over all level bits; one reduction at the end.
            let mut lanes = [0i64; PLANE_BLOCK];
            for l in 0..self.col_bits[col] {
                let base = ((col * self.bits + l) * 2) * nb + bi;
                let (p, n) = (&self.data[base], &self.data[base + nb]);
                for k in 0..PLANE_BLOCK {
                    let d = i64::from((xb[k] & p[k]).count_ones())
                        + neg_sign * i64::from((xb[k] & n[k]).count_ones());
                    lanes[k] += d << l;
                }
            }
            sum += lanes.iter().sum::<i64>();
        }
        // |sum| <= rows x 30, far below 2^31.
        #[allow(clippy::cast_possible_truncation)]
        let sum = sum as i32;
        sum
    }
}

/// `out = pulses . g` (`g` in standard layout).
#[inline(always)]
fn product(pulses: ArrayView2<'_, f32>, g: &Array2<f32>, mut out: ArrayViewMut2<'_, f32>) {
    let (r, c) = g.dim();
    match (pulses.as_slice(), g.as_slice(), out.as_slice_mut()) {
        (Some(p), Some(g), Some(o)) if r > 0 && c > 0 => {
            assert_eq!(p.len() / r, o.len() / c, "pulses x rows, output shape");
            if c < 8 {
                // A few columns (depthwise groups): plain loops, skipping zero pulses.
                for (prow, orow) in p.chunks_exact(r).zip(o.chunks_exact_mut(c)) {
                    orow.fill(0.0);
                    for (&pk, grow) in prow.iter().zip(g.chunks_exact(c)) {
                        if pk != 0.0 {
                            for (y, &w) in orow.iter_mut().zip(grow) {
                                *y += pk * w;
                            }
                        }
                    }
                }
                return;
            }
            // Row by row over the non-zero pulses only (most are zero in the
            // high input slices), four weight rows per pass over the output.
            let mut nz: Vec<(f32, usize)> = Vec::with_capacity(r);
            for (prow, orow) in p.chunks_exact(r).zip(o.chunks_exact_mut(c)) {
                nz.clear();
                nz.extend(
                    prow.iter()
                        .enumerate()
                        .filter(|&(_, &v)| v != 0.0)
                        .map(|(k, &v)| (v, k * c)),
                );
                orow.fill(0.0);
                let quads = nz.chunks_exact(4);
                let rest = quads.remainder();
                for q in quads {
                    let (g0, g1) = (&g[q[0].1..q[0].1 + c], &g[q[1].1..q[1].1 + c]);
                    let (g2, g3) = (&g[q[2].1..q[2].1 + c], &g[q[3].1..q[3].1 + c]);
                    let (a0, a1, a2, a3) = (q[0].0, q[1].0, q[2].0, q[3].0);
                    for ((((y, &w0), &w1), &w2), &w3) in
                        orow.iter_mut().zip(g0).zip(g1).zip(g2).zip(g3)
                    {
                        *y += (a0 * w0 + a1 * w1) + (a2 * w2 + a3 * w3);
                    }
                }
                for &(a, k) in rest {
                    for (y, &w) in orow.iter_mut().zip(&g[k..k + c]) {
                        *y += a * w;
                    }
                }
            }
        }
        _ => general_mat_mul(1.0, &pulses, g, 0.0, &mut out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_rng;
    use ndarray::array;

    /// The sparse product equals the dense GEMM: exactly on integer levels,
    /// to rounding on real-valued (programmed) ones; both column-count paths.
    #[test]
    fn sparse_product_equals_the_dense_gemm() {
        let mut rng = stream_rng(5, &[]);
        for &(b, r, c) in &[(7, 9, 3), (33, 40, 8), (50, 130, 21), (3, 1, 1)] {
            // Pulses 0..15, zero half the time; integer levels -15..15.
            let p = Array2::from_shape_fn((b, r), |_| {
                let u: u32 = rng.random_range(0..32);
                if u < 16 { 0.0 } else { (u - 16) as f32 }
            });
            let gi = Array2::from_shape_fn((r, c), |_| rng.random_range(-15i32..=15) as f32);
            let gr = gi.mapv(|v| v * 1.013 + 0.1);
            for (g, exact) in [(&gi, true), (&gr, false)] {
                let mut want = Array2::<f32>::zeros((b, c));
                general_mat_mul(1.0, &p, g, 0.0, &mut want);
                let mut got = Array2::<f32>::from_elem((b, c), f32::NAN);
                product(p.view(), g, got.view_mut());
                for (x, y) in got.iter().zip(&want) {
                    if exact {
                        assert_eq!(x, y, "{b}x{r}x{c}");
                    } else {
                        assert!((x - y).abs() <= 1e-3 * y.abs().max(1.0), "{x} vs {y}");
                    }
                }
            }
        }
    }

    /// 1-bit column sums from the level planes equal the plain sum, for row
    /// counts of one and several 512-row blocks, with unpadded and padded bitsets.
    #[test]
    fn bit_plane_sums_equal_the_plain_sum() {
        let mut rng = stream_rng(9, &[]);
        for &(rows, cols) in &[(5usize, 3usize), (100, 7), (512, 4), (700, 5)] {
            let g = CrossbarGeometry::new(rows, cols, CellKind::TwoT2R, 4).unwrap();
            let levels: Vec<i32> = (0..rows * cols)
                .map(|_| rng.random_range(-15..=15))
                .collect();
            let pos = levels
                .iter()
                .map(|&l| u8::try_from(l.max(0)).unwrap())
                .collect();
            let neg = levels
                .iter()
                .map(|&l| u8::try_from((-l).max(0)).unwrap())
                .collect();
            let p = Crossbar::new(g, rows, cols, pos, Some(neg))
                .unwrap()
                .program(None, &mut stream_rng(0, &[]));
            let active: Vec<bool> = (0..rows).map(|_| rng.random_range(0..3) == 0).collect();
            let mut bits = vec![0u64; ProgrammedCrossbar::row_bit_words(rows)];
            for (r, _) in active.iter().enumerate().filter(|(_, a)| **a) {
                bits[r / 64] |= 1 << (r % 64);
            }
            for c in 0..cols {
                let want: i32 = (0..rows)
                    .filter(|&r| active[r])
                    .map(|r| levels[r * cols + c])
                    .sum();
                assert_eq!(
                    p.column_sum_bits_exact(c, &bits),
                    Some(want),
                    "{rows} rows padded"
                );
                let short = &bits[..rows.div_ceil(64)];
                assert_eq!(p.column_sum_bits_exact(c, short), Some(want), "{rows} rows");
                assert_eq!(p.column_sum_bits(c, short), want as f32);
                let mag: i32 = (0..rows)
                    .filter(|&r| active[r])
                    .map(|r| levels[r * cols + c].abs())
                    .sum();
                assert_eq!(
                    p.column_magnitude_bits(c, &bits),
                    mag as f32,
                    "{rows} rows magnitude"
                );
                assert_eq!(p.column_magnitude_bits(c, short), mag as f32);
            }
        }
    }

    /// After programming variation, a 1-bit column sum is the f32 sum of the
    /// active rows' conductances in row order, bit for bit (so the recovery
    /// reads of programmed crossbars never depend on how the bits are visited);
    /// bits past the used rows are ignored.
    #[test]
    fn programmed_bit_sums_add_the_active_rows_in_order() {
        let mut rng = stream_rng(13, &[]);
        for &(rows, cols) in &[(1usize, 1usize), (70, 3), (512, 2), (700, 4)] {
            let g = CrossbarGeometry::new(rows, cols, CellKind::TwoT2R, 4).unwrap();
            let pos = (0..rows * cols).map(|_| rng.random_range(0..=15)).collect();
            let neg = (0..rows * cols).map(|_| rng.random_range(0..=15)).collect();
            let noise = DeviceNoise::new(0.1, 0.0, 0.0).unwrap();
            let p = Crossbar::new(g, rows, cols, pos, Some(neg))
                .unwrap()
                .program(Some(&noise), &mut stream_rng(1, &[]));
            assert!(!p.is_ideal());
            let words = rows.div_ceil(64);
            let mut bits: Vec<u64> = (0..words).map(|_| rng.random()).collect();
            let active: Vec<usize> = (0..rows)
                .filter(|&r| (bits[r / 64] >> (r % 64)) & 1 == 1)
                .collect();
            // Garbage past the last row.
            if rows % 64 != 0 {
                bits[words - 1] |= u64::MAX << (rows % 64);
            }
            for c in 0..cols {
                let (d, m) = (p.diff_column(c), p.magnitude_column(c));
                let want = active.iter().fold(0f32, |s, &r| s + d[r]);
                let want_m = active.iter().fold(0f32, |s, &r| s + m[r]);
                assert_eq!(p.column_sum_bits(c, &bits).to_bits(), want.to_bits());
                assert_eq!(
                    p.column_magnitude_bits(c, &bits).to_bits(),
                    want_m.to_bits()
                );
            }
        }
    }

    fn small() -> Crossbar {
        let g = CrossbarGeometry::new(4, 4, CellKind::TwoT2R, 2).unwrap();
        Crossbar::new(
            g,
            3,
            2,
            vec![1, 0, 3, 2, 0, 0],
            Some(vec![0, 2, 0, 0, 1, 3]),
        )
        .unwrap()
    }

    #[test]
    fn exact_sums_are_positive_minus_negative() {
        let xb = small();
        // col 0: 2*1 + 1*3 + 4*(-1) = 1 ; col 1: 2*(-2) + 1*2 + 4*(-3) = -14
        assert_eq!(xb.column_sums_exact(&[2, 1, 4]), vec![1, -14]);
    }

    #[test]
    fn ideal_programming_matches_exact_sums() {
        let xb = small();
        let p = xb.program(None, &mut stream_rng(0, &[]));
        let mut out = Array2::zeros((1, 2));
        p.column_sums(array![[2.0f32, 1.0, 4.0]].view(), out.view_mut());
        assert_eq!(out, array![[1.0f32, -14.0]]);
        assert_eq!(p.diff_column(1), &[-2.0, 2.0, -3.0]);
        assert_eq!(p.row_magnitudes(), &[3.0, 5.0, 4.0]);
        // Rows 0 and 2 driven with one pulse: col 0 = 1 - 1 = 0, col 1 = -2 - 3 = -5.
        assert_eq!(p.column_sum_bits(0, &[0b101]), 0.0);
        assert_eq!(p.column_sum_bits(1, &[0b101]), -5.0);
        let noisy = xb.program(
            Some(&DeviceNoise::new(1e-9, 0.0, 0.0).unwrap()),
            &mut stream_rng(0, &[]),
        );
        assert!((noisy.column_sum_bits(1, &[0b101]) + 5.0).abs() < 1e-3);
    }

    #[test]
    fn levels_are_validated() {
        let g = CrossbarGeometry::new(4, 4, CellKind::OneT1R, 2).unwrap();
        assert!(matches!(
            Crossbar::new(g, 1, 2, vec![1, 4], None),
            Err(DeviceError::LevelTooLarge {
                level: 4,
                max: 3,
                ..
            })
        ));
        assert!(matches!(
            Crossbar::new(g, 5, 1, vec![0; 5], None),
            Err(DeviceError::RegionTooLarge { .. })
        ));
        assert!(matches!(
            Crossbar::new(g, 1, 1, vec![1], Some(vec![1])),
            Err(DeviceError::NegativeOn1T1R)
        ));
    }

    #[test]
    fn stuck_everything_at_max() {
        let xb = small();
        let noise = DeviceNoise::new(0.0, 0.0, 1.0).unwrap();
        let p = xb.program(Some(&noise), &mut stream_rng(3, &[]));
        assert_eq!(p.stuck_devices(), 12);
        assert_eq!(p.diff_column(0), &[0.0, 0.0, 0.0]);
    }
}
