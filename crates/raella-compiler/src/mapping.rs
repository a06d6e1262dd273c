//! Mapping an encoded, sliced weight matrix onto crossbars.
//!
//! Inputs go down the rows, `R` per crossbar ("row blocks"; a layer with more
//! than `R` inputs spills over several crossbars whose partial sums are added
//! digitally). Columns are `(filter, weight slice)` pairs in filter-major
//! order (`global column = filter * S + slice`), `C` per crossbar ("column
//! blocks"). Crossbar `(rb, cb)` holds rows of block `rb` and columns of block
//! `cb`; there are `row_blocks x col_blocks` of them.

use ndarray::{Array2, ArrayView2};
use raella_device::{CellKind, Crossbar, CrossbarGeometry};
use rayon::prelude::*;

use crate::encoding::{Calibration, Encoding, centers};
use crate::{CompileError, Slicing};

/// What to compile a layer into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompileConfig {
    /// Crossbar organisation.
    pub geometry: CrossbarGeometry,
    /// Weight encoding.
    pub encoding: Encoding,
    /// Weight slicing of the 8-bit offset magnitude, MSB first.
    pub weight_slicing: Slicing,
}

impl CompileConfig {
    /// RAELLA's defaults: 512 x 512 2T2R, 4-bit devices, Center+Offset (mean), `4-2-2`.
    #[must_use]
    pub fn raella() -> Self {
        Self {
            geometry: CrossbarGeometry::RAELLA,
            encoding: Encoding::default(),
            weight_slicing: Slicing::parse("4-2-2").expect("valid"),
        }
    }

    /// ISAAC-8b: 128 x 128 1T1R, 2-bit devices, unsigned offset with bit flip, `2x4`.
    #[must_use]
    pub fn isaac() -> Self {
        Self {
            geometry: CrossbarGeometry::ISAAC,
            encoding: Encoding::UnsignedOffset { bit_flip: true },
            weight_slicing: Slicing::parse("2x4").expect("valid"),
        }
    }

    /// Checks the slicing fits the devices and the encoding fits the cells.
    ///
    /// # Errors
    /// [`CompileError::SliceWiderThanDevice`], [`CompileError::EncodingCell`],
    /// [`CompileError::SliceWidthsSum`].
    pub fn validate(&self) -> Result<(), CompileError> {
        if self.weight_slicing.total_bits() != crate::VALUE_BITS {
            return Err(CompileError::SliceWidthsSum {
                slicing: self.weight_slicing.to_string(),
                sum: self.weight_slicing.total_bits(),
                expected: crate::VALUE_BITS,
            });
        }
        self.weight_slicing
            .check_device(self.geometry.bits_per_device())?;
        let needs = self.encoding.cell_kind();
        if needs != self.geometry.cell() {
            return Err(CompileError::EncodingCell {
                encoding: self.encoding.to_string(),
                needs,
                cell: self.geometry.cell(),
            });
        }
        Ok(())
    }
}

/// One crossbar of a mapped layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedCrossbar {
    /// Row block index.
    pub row_block: usize,
    /// Column block index.
    pub col_block: usize,
    /// First layer input on row 0.
    pub row_start: usize,
    /// First global column on column 0.
    pub col_start: usize,
    /// The target levels.
    pub crossbar: Crossbar,
    /// Per used column: stored inverted (ISAAC bit flip), corrected digitally as
    /// `mask * sum(pulses) - measured`.
    pub flipped: Vec<bool>,
}

/// Static properties of a mapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MappingStats {
    /// Crossbars used.
    pub crossbars: usize,
    /// Weight-slice cells holding a weight slice (`inputs x outputs x slices`).
    pub cells_used: usize,
    /// Weight-slice cells on those crossbars (`crossbars x R x C`).
    pub cells_capacity: usize,
    /// `cells_used / cells_capacity`.
    pub utilisation: f64,
    /// Mean stored level over used cells, normalised by the device maximum.
    pub average_cell_value: f64,
}

/// A weight matrix compiled onto crossbars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedLayer {
    outputs: usize,
    inputs: usize,
    config: CompileConfig,
    centers: Vec<i32>,
    row_blocks: usize,
    col_blocks: usize,
    crossbars: Vec<MappedCrossbar>,
}

/// Compiles `weights` (outputs x inputs, int8) onto crossbars.
///
/// A pure function of its arguments: no randomness, no IO. `calibration` is
/// needed only by the `search` center rule.
///
/// # Errors
/// An invalid configuration, an empty matrix, or `search` without calibration.
pub fn compile(
    weights: ArrayView2<'_, i8>,
    config: &CompileConfig,
    calibration: Option<Calibration<'_>>,
) -> Result<MappedLayer, CompileError> {
    config.validate()?;
    let (outputs, inputs) = weights.dim();
    if outputs == 0 || inputs == 0 {
        return Err(CompileError::EmptyMatrix { outputs, inputs });
    }
    let g = config.geometry;
    let slicing = &config.weight_slicing;
    let ns = slicing.len();
    let centers = centers(weights, config.encoding, slicing, g.rows(), calibration)?;
    let total_cols = outputs * ns;
    let row_blocks = inputs.div_ceil(g.rows());
    let col_blocks = total_cols.div_ceil(g.cols());
    let two_t2r = g.cell() == CellKind::TwoT2R;
    let bit_flip = matches!(
        config.encoding,
        crate::Encoding::UnsignedOffset { bit_flip: true }
    );
    // Rows of the weights as contiguous slices (a borrow when already so).
    let weights = weights.as_standard_layout();
    let w = weights.as_slice().expect("standard layout");
    // One crossbar per task, in mapping order (a pure function of the inputs:
    // the order of work does not change a level).
    let crossbars = (0..row_blocks * col_blocks)
        .into_par_iter()
        .map(|i| {
            let (rb, cb) = (i / col_blocks, i % col_blocks);
            let row_start = rb * g.rows();
            let rows = g.rows().min(inputs - row_start);
            let col_start = cb * g.cols();
            let cols = g.cols().min(total_cols - col_start);
            // Column by column over the filter's contiguous weights (the loops
            // vectorise), into column-major levels that `from_columns`
            // transposes. `|o| <= 255` (centers and weights both in
            // [-128, 127]), so a slice of it fits a `u8`.
            let mut pos = vec![0u8; rows * cols];
            let mut neg = vec![0u8; if two_t2r { rows * cols } else { 0 }];
            let mut flipped = vec![false; cols];
            // Compiled for the process's vector set (a design's build compiles
            // every layer, each candidate slicing of adaptive slicing too).
            raella_device::Kernel::dispatch_selected(
                #[inline(always)]
                || {
                    for (lc, cp) in pos.chunks_exact_mut(rows).enumerate() {
                        let gc = col_start + lc;
                        let (f, k) = (gc / ns, gc % ns);
                        let (center, shift) = (centers[f], slicing.shifts()[k]);
                        let mask = (1u32 << slicing.widths()[k]) - 1;
                        let wrow = &w[f * inputs + row_start..][..rows];
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let level = |wi: i8| {
                            let o = i32::from(wi) - center;
                            // Branch-free (signs are random): all ones when negative.
                            let m = (o >> 31) as u8;
                            (((o.unsigned_abs() >> shift) & mask) as u8, m)
                        };
                        if two_t2r {
                            let cn = &mut neg[lc * rows..][..rows];
                            for ((p, n), &wi) in cp.iter_mut().zip(cn.iter_mut()).zip(wrow) {
                                let (l, m) = level(wi);
                                (*p, *n) = (l & !m, l & m);
                            }
                        } else {
                            // 1T1R encodings leave no negative offset (`validate`).
                            for (p, &wi) in cp.iter_mut().zip(wrow) {
                                let (l, m) = level(wi);
                                *p = l & !m;
                            }
                        }
                        if bit_flip {
                            let sum: u32 = cp.iter().map(|&l| u32::from(l)).sum();
                            // ISAAC: invert a column whose levels exceed half
                            // the column's maximum, so no column sum of 1-bit
                            // inputs exceeds rows * mask / 2.
                            if 2 * sum > mask * u32::try_from(rows).unwrap_or(u32::MAX) {
                                flipped[lc] = true;
                                let m = u8::try_from(mask).unwrap_or(u8::MAX);
                                for l in cp.iter_mut() {
                                    *l = m - *l;
                                }
                            }
                        }
                    }
                },
            );
            let crossbar =
                Crossbar::from_columns(g, rows, cols, &pos, two_t2r.then_some(neg.as_slice()))?;
            Ok(MappedCrossbar {
                row_block: rb,
                col_block: cb,
                row_start,
                col_start,
                crossbar,
                flipped,
            })
        })
        .collect::<Result<Vec<_>, CompileError>>()?;
    Ok(MappedLayer {
        outputs,
        inputs,
        config: config.clone(),
        centers,
        row_blocks,
        col_blocks,
        crossbars,
    })
}

impl MappedLayer {
    /// Output channels (filters).
    #[must_use]
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Inputs per filter.
    #[must_use]
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The configuration compiled with.
    #[must_use]
    pub fn config(&self) -> &CompileConfig {
        &self.config
    }

    /// The weight slicing.
    #[must_use]
    pub fn weight_slicing(&self) -> &Slicing {
        &self.config.weight_slicing
    }

    /// Per-filter digital centers (`-128` for the unsigned encoding, 0 for Zero+Offset).
    #[must_use]
    pub fn centers(&self) -> &[i32] {
        &self.centers
    }

    /// Number of row blocks (crossbars down the inputs).
    #[must_use]
    pub fn row_blocks(&self) -> usize {
        self.row_blocks
    }

    /// Number of column blocks (crossbars across the filter slices).
    #[must_use]
    pub fn col_blocks(&self) -> usize {
        self.col_blocks
    }

    /// All crossbars, row-block major.
    #[must_use]
    pub fn crossbars(&self) -> &[MappedCrossbar] {
        &self.crossbars
    }

    /// `(filter, weight slice)` held by a global column.
    #[must_use]
    pub fn column_role(&self, global_col: usize) -> (usize, usize) {
        let ns = self.config.weight_slicing.len();
        (global_col / ns, global_col % ns)
    }

    /// Static mapping statistics.
    #[must_use]
    pub fn stats(&self) -> MappingStats {
        let g = self.config.geometry;
        let crossbars = self.crossbars.len();
        let cells_used = self.inputs * self.outputs * self.config.weight_slicing.len();
        let cells_capacity = crossbars * g.rows() * g.cols();
        let level_sum: u64 = self.crossbars.iter().map(|x| x.crossbar.level_sum()).sum();
        MappingStats {
            crossbars,
            cells_used,
            cells_capacity,
            utilisation: cells_used as f64 / cells_capacity as f64,
            average_cell_value: level_sum as f64
                / (cells_used as f64 * f64::from(g.max_level())).max(1.0),
        }
    }

    /// Decodes the stored levels back to weights (`center + sum_k 2^shift_k * level_k`,
    /// undoing bit flips). Equals the compiled weights exactly; used by tests.
    #[must_use]
    pub fn decode(&self) -> Array2<i32> {
        let s = &self.config.weight_slicing;
        let mut w = Array2::<i32>::zeros((self.outputs, self.inputs));
        for (f, &c) in self.centers.iter().enumerate() {
            w.row_mut(f).fill(c);
        }
        for x in &self.crossbars {
            for lc in 0..x.crossbar.used_cols() {
                let (f, k) = self.column_role(x.col_start + lc);
                let mask = (1i32 << s.widths()[k]) - 1;
                for r in 0..x.crossbar.used_rows() {
                    let (p, n) = x.crossbar.levels(r, lc);
                    let mut v = i32::from(p) - i32::from(n);
                    if x.flipped[lc] {
                        v = mask - v;
                    }
                    w[[f, x.row_start + r]] += v << s.shifts()[k];
                }
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CenterRule;
    use ndarray::Array2;

    fn weights(o: usize, i: usize) -> Array2<i8> {
        Array2::from_shape_fn((o, i), |(f, j)| {
            i8::try_from((f * 37 + j * 11) % 255)
                .unwrap_or(0)
                .wrapping_sub(60)
        })
    }

    #[test]
    fn spill_over_rows_and_columns() {
        let g = CrossbarGeometry::new(8, 6, CellKind::TwoT2R, 4).unwrap();
        let cfg = CompileConfig {
            geometry: g,
            encoding: Encoding::CenterOffset(CenterRule::Mean),
            weight_slicing: Slicing::parse("4-2-2").unwrap(),
        };
        let w = weights(5, 20);
        let m = compile(w.view(), &cfg, None).unwrap();
        // 20 inputs over 8 rows -> 3 row blocks; 5 filters x 3 slices = 15 columns over 6 -> 3.
        assert_eq!(
            (m.row_blocks(), m.col_blocks(), m.crossbars().len()),
            (3, 3, 9)
        );
        let last = &m.crossbars()[8];
        assert_eq!(
            (last.crossbar.used_rows(), last.crossbar.used_cols()),
            (4, 3)
        );
        assert_eq!(m.decode(), w.mapv(i32::from));
        let st = m.stats();
        assert_eq!(st.cells_used, 300);
        assert_eq!(st.cells_capacity, 9 * 48);
    }

    #[test]
    fn isaac_bit_flip_bounds_column_sums() {
        let cfg = CompileConfig::isaac();
        let w = Array2::from_elem((2, 128), 100i8); // w + 128 = 228 = 0b11_10_01_00
        let m = compile(w.view(), &cfg, None).unwrap();
        let x = &m.crossbars()[0];
        assert_eq!(
            x.flipped,
            vec![true, true, false, false, true, true, false, false]
        );
        for lc in 0..x.crossbar.used_cols() {
            let s: u32 = (0..128)
                .map(|r| u32::from(x.crossbar.levels(r, lc).0))
                .sum();
            assert!(s <= 128 * 3 / 2);
        }
        assert_eq!(m.decode(), w.mapv(i32::from));
    }

    #[test]
    fn configuration_errors() {
        let mut cfg = CompileConfig::raella();
        cfg.geometry = CrossbarGeometry::new(512, 512, CellKind::TwoT2R, 2).unwrap();
        assert!(matches!(
            cfg.validate(),
            Err(CompileError::SliceWiderThanDevice { width: 4, .. })
        ));
        let mut cfg = CompileConfig::isaac();
        cfg.encoding = Encoding::ZeroOffset;
        assert!(matches!(
            cfg.validate(),
            Err(CompileError::EncodingCell { .. })
        ));
    }
}
