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
            // A branch-free maximum first (it vectorises); the position only on error.
            if v.iter().fold(0, |a, &l| a.max(l)) > max {
                let i = v
                    .iter()
                    .position(|&l| l > max)
                    .expect("a level above the maximum");
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
                if neg.iter().fold(0, |a, &l| a | l) != 0 {
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

    /// [`Self::new`] with the levels given column by column: `pos` (and
    /// `neg`) hold `used_cols x used_rows` levels, column-major, as a compiler
    /// that works a column at a time produces them.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn from_columns(
        geometry: CrossbarGeometry,
        used_rows: usize,
        used_cols: usize,
        pos: &[u8],
        neg: Option<&[u8]>,
    ) -> Result<Self, DeviceError> {
        let n = used_rows * used_cols;
        let rows = |v: &[u8]| {
            if v.len() != n {
                // The wrong length: `new` names it.
                return v.to_vec();
            }
            let mut out = vec![0u8; n];
            // Compiled for the process's vector set (the eight-block path
            // vectorises).
            crate::Kernel::dispatch_selected(
                #[inline(always)]
                || transpose_bytes(v, used_cols, used_rows, &mut out, used_cols),
            );
            out
        };
        Self::new(geometry, used_rows, used_cols, rows(pos), neg.map(rows))
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

    /// The integer levels a run may read in place of `programmed` (this
    /// crossbar programmed under `noise`) when `noise` adds only a finite OFF
    /// state ([`DeviceNoise::levels_exact_above_off`]): every device is its
    /// level plus the same OFF conductance `G_off`.
    ///
    /// - 2T2R: a pair's OFF currents cancel in its analog subtraction, so
    ///   `G+ - G-` is exactly the levels' difference (the `f32` difference of
    ///   `L+ + G_off` and `L- + G_off` in `programmed` carries rounding
    ///   residues of a few ulps that the analog subtraction does not have).
    /// - 1T1R: each column carries its levels' sum plus `G_off` per pulse:
    ///   the returned crossbar keeps [`ProgrammedCrossbar::off_per_pulse`],
    ///   which the reader adds before the ADC (exactly: `S + G_off P`).
    ///
    /// The crossbar returned has the ideal levels (the integer kernels and
    /// exact reads) and `programmed`'s cell activity (its row magnitudes and
    /// level sum, which count the OFF conductances). Its own magnitudes `G+ +
    /// G-` leave the OFF conductances out: read noise, which scales with
    /// them, reads `programmed`. `None` otherwise (any other non-ideality,
    /// no OFF conductance (`programmed` is then ideal itself), or levels
    /// whose pairs do not pack).
    #[must_use]
    pub fn exact_off(
        &self,
        noise: &DeviceNoise,
        programmed: &ProgrammedCrossbar,
    ) -> Option<ProgrammedCrossbar> {
        if !noise.levels_exact_above_off() || programmed.stuck_devices != 0 || programmed.is_ideal()
        {
            return None;
        }
        // Ideal programming draws nothing.
        let mut ideal = crate::Kernel::dispatch_selected(
            #[inline(always)]
            || self.program(None, &mut crate::stream_rng(0, &[])),
        );
        if !ideal.is_ideal() {
            return None;
        }
        ideal.row_magnitude.clone_from(&programmed.row_magnitude);
        ideal.level_sum = programmed.level_sum;
        ideal.off_per_pulse = programmed.off_per_pulse;
        Some(ideal)
    }

    /// Programs the devices. With `noise` absent or with exact levels
    /// ([`DeviceNoise::levels_exact`]), the conductances are exactly the target
    /// levels and `rng` is not touched.
    ///
    /// Otherwise, per device in row-major order (positive then negative device
    /// of a cell): a uniform draw decides a stuck device (stuck at OFF or at
    /// the maximum), else the programming error is drawn (the table's
    /// level-dependent sigma and mean, or the relative `programming_sigma`);
    /// then, over all devices in the same order, each device's drift exponent;
    /// then IR drop turns the device conductances into the effective matrix the
    /// rows see ([`crate::ir_drop`]). Conductances are in level steps; a finite
    /// OFF state adds [`DeviceNoise::off_level`] to every device.
    #[must_use]
    #[inline(always)]
    pub fn program(
        &self,
        noise: Option<&DeviceNoise>,
        rng: &mut Xoshiro256PlusPlus,
    ) -> ProgrammedCrossbar {
        let (r, c) = (self.used_rows, self.used_cols);
        let two = self.geometry.cell() == CellKind::TwoT2R;
        let Some(n) = noise.filter(|n| !n.levels_exact()) else {
            return self.exact_levels(&self.pos, &self.neg, 0);
        };
        let max = self.geometry.max_level();
        let off = n.off_level(max);
        // A device at level `l`: `l` plus the OFF conductance, rounded once.
        #[allow(clippy::cast_possible_truncation)]
        let level = |l: u8| (f64::from(l) + off) as f32;
        let (off32, gmax32) = (level(0), level(max));
        // A device's uniform decides whether it is stuck, and at which level.
        let (zero, either) = (n.stuck_at_zero(), n.stuck_at_zero() + n.stuck_at_max());
        let stuck_level = |u: f64| {
            if u < zero {
                Some(0)
            } else if u < either {
                Some(max)
            } else {
                None
            }
        };
        let normal = |rng: &mut Xoshiro256PlusPlus| -> f64 {
            rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
        };
        // One device's write (a macro: the loop below inlines it, where a
        // closure called twice per cell stayed a function of its own).
        let (table, relative) = (n.table(), n.programming_sigma());
        macro_rules! write {
            ($l:expr) => {{
                let l: u8 = $l;
                let u: f64 = rng.random();
                if let Some(s) = stuck_level(u) {
                    (level(s), true)
                } else {
                    let target = f64::from(l) + off;
                    #[allow(clippy::cast_possible_truncation)]
                    if let Some(t) = table {
                        let (sigma, mean) = t.error(l);
                        let z = if sigma > 0.0 { normal(rng) } else { 0.0 };
                        (
                            ((target + mean + sigma * z) as f32).clamp(0.0, gmax32),
                            false,
                        )
                    } else if target == 0.0 || relative == 0.0 {
                        (target as f32, false)
                    } else {
                        (
                            ((target * (1.0 + relative * normal(rng))) as f32).clamp(0.0, gmax32),
                            false,
                        )
                    }
                }
            }};
        }
        let len = r * c;
        let (mut gp, mut gn) = (vec![0f32; len], vec![0f32; if two { len } else { 0 }]);
        let mut stuck_mask = vec![false; len * if two { 2 } else { 1 }];
        let mut stuck = 0usize;
        if table.is_none() && either == 0.0 && relative != 0.0 {
            // Relative programming error, nothing stuck: `write!`'s draws
            // (a device's uniform, read by nothing here, then its normal when
            // its target is not zero) made in device order into a block,
            // then the block's conductances from them without branches (a
            // device at target zero has `z = 0` and `target (1 + 0) = 0`).
            program_relative(
                (&self.pos, two.then_some(self.neg.as_slice())),
                off,
                relative,
                gmax32,
                rng,
                (&mut gp, &mut gn),
            );
        } else if table.is_some() || relative != 0.0 {
            // Programming error: each device's uniform, then its normals.
            for i in 0..len {
                let (p, q) = (self.pos[i], self.neg.get(i).copied().unwrap_or(0));
                let (g, sp) = write!(p);
                gp[i] = g;
                stuck_mask[if two { 2 * i } else { i }] = sp;
                stuck += usize::from(sp);
                if two {
                    let (g, sn) = write!(q);
                    gn[i] = g;
                    stuck_mask[i * 2 + 1] = sn;
                    stuck += usize::from(sn);
                }
            }
        } else {
            // No normals in the writes: a device is its level, or stuck. The
            // uniforms, one per device in device order as `write!` draws them,
            // are drawn first where anything reads the stream (stuck devices,
            // or drift's normals after them); without that, nothing draws.
            let picked;
            let (pos, neg): (&[u8], &[u8]) = if either > 0.0 {
                let uniforms: Vec<f64> = (0..stuck_mask.len()).map(|_| rng.random()).collect();
                let per = if two { 2 } else { 1 };
                let mut pick = |i: usize, l: u8| match stuck_level(uniforms[i]) {
                    Some(s) => {
                        stuck_mask[i] = true;
                        s
                    }
                    None => l,
                };
                let pos: Vec<u8> = (self.pos.iter().enumerate())
                    .map(|(i, &p)| pick(per * i, p))
                    .collect();
                let neg: Vec<u8> = (self.neg.iter().enumerate())
                    .map(|(i, &q)| pick(2 * i + 1, q))
                    .collect();
                picked = (pos, neg);
                (&picked.0, &picked.1)
            } else {
                if n.drift().is_some_and(|d| d.nu_sigma() > 0.0) {
                    // Nothing can be stuck, but drift's normals follow
                    // the uniforms in the stream: drawn and dropped.
                    for _ in 0..stuck_mask.len() {
                        let _: f64 = rng.random();
                    }
                }
                (&self.pos, &self.neg)
            };
            stuck = stuck_mask.iter().filter(|&&m| m).count();
            if off == 0.0 && n.ir_drop().is_none() && n.drift().is_none() {
                // OFF at level 0 and nothing after: every device at an
                // integer level, so the crossbar is the exact one of them.
                return self.exact_levels(pos, neg, stuck);
            }
            // The loops vectorise (a finite OFF state or IR drop alone).
            for (g, &p) in gp.iter_mut().zip(pos) {
                *g = level(p);
            }
            for (g, &q) in gn.iter_mut().zip(neg) {
                *g = level(q);
            }
        }
        let ir = n.ir_drop().map(|ir| {
            // One level step in siemens: the maximum level plus OFF is G_on.
            let lsb = 1.0 / (ir.r_on_ohm() * (f64::from(max) + off));
            (ir.wire_ohm(), lsb)
        });
        let mut reference_t0 = None;
        if let Some(drift) = n.drift() {
            if drift.compensation() == crate::DriftCompensation::Global {
                reference_t0 = Some(match ir {
                    // `G+ - G-` summed as `effective` would give it, without
                    // the matrices.
                    None => reference_read(&gp, two.then_some(gn.as_slice()), c),
                    Some(ir) => {
                        let (d, _) = ir_effective(&gp, two.then_some(gn.as_slice()), r, c, ir);
                        reference_read(&d, None, c)
                    }
                });
            }
            let per = if two { 2 } else { 1 };
            if drift.nu_sigma() <= 0.0 {
                // One exponent for every device (nothing drawn): its factor
                // once. A device at exactly zero (level 0, OFF at zero) stays
                // there.
                let factor = drift.factor(drift.nu_mean());
                for (d, g) in gp.iter_mut().enumerate() {
                    if !stuck_mask[per * d] && *g != 0.0 {
                        #[allow(clippy::cast_possible_truncation)]
                        let v = (f64::from(*g) * factor) as f32;
                        *g = v;
                    }
                }
                for (d, g) in gn.iter_mut().enumerate() {
                    if !stuck_mask[2 * d + 1] && *g != 0.0 {
                        #[allow(clippy::cast_possible_truncation)]
                        let v = (f64::from(*g) * factor) as f32;
                        *g = v;
                    }
                }
            } else {
                // One exponent per device, drawn in device order (`G+` before
                // `G-`, stuck devices too), 256 cells at a time: the block's
                // normals in one loop (one call site, inlined), then the
                // exponents of each device of a cell.
                let (mut pos_nu, mut neg_nu) = ([0f64; 256], [0f64; 256]);
                let (mut pos_stuck, mut neg_stuck) = ([false; 256], [false; 256]);
                let mut z = [0f64; 512];
                let (mean, sigma) = (drift.nu_mean(), drift.nu_sigma());
                for c0 in (0..len).step_by(256) {
                    let n = (len - c0).min(256);
                    for z in &mut z[..per * n] {
                        *z = normal(rng);
                    }
                    if two {
                        for (j, z) in z[..2 * n].chunks_exact(2).enumerate() {
                            (pos_nu[j], neg_nu[j]) = (mean + sigma * z[0], mean + sigma * z[1]);
                        }
                        for (j, s) in stuck_mask[2 * c0..2 * (c0 + n)].chunks_exact(2).enumerate() {
                            (pos_stuck[j], neg_stuck[j]) = (s[0], s[1]);
                        }
                    } else {
                        for (nu, z) in pos_nu.iter_mut().zip(&z[..n]) {
                            *nu = mean + sigma * z;
                        }
                        pos_stuck[..n].copy_from_slice(&stuck_mask[c0..c0 + n]);
                    }
                    let cells = c0..c0 + n;
                    drift.drift_devices(&mut gp[cells.clone()], &pos_nu[..n], &pos_stuck[..n]);
                    if two {
                        drift.drift_devices(&mut gn[cells], &neg_nu[..n], &neg_stuck[..n]);
                    }
                }
            }
        }
        let (diff, magnitude) = effective(gp, two.then_some(gn), r, c, ir);
        let diff = Array2::from_shape_vec((r, c), diff).expect("shape");
        let magnitude = Array2::from_shape_vec((r, c), magnitude).expect("shape");
        let mut px = ProgrammedCrossbar::from_matrices(self.geometry, diff, magnitude, stuck);
        // 1T1R: every device's OFF current reaches the column; the digital side
        // subtracts its nominal value. 2T2R pairs cancel it.
        px.off_per_pulse = if two { 0.0 } else { off32 };
        px.reference_t0 = reference_t0;
        px
    }

    /// Devices at exact integer levels `pos` (and `neg` on 2T2R; empty on
    /// 1T1R), `stuck` of them stuck: `G+ - G-` lies in `[-max, max]` and
    /// `G+ + G-` is integral too, in range when no pair sums above the
    /// maximum. The integers are kept as bytes; the `f32` matrices are made on
    /// first use (integer runs and exact reads never need them). The same
    /// crossbar as the `f32` matrices of these levels give
    /// ([`ProgrammedCrossbar::from_matrices`]).
    fn exact_levels(&self, pos: &[u8], neg: &[u8], stuck: usize) -> ProgrammedCrossbar {
        let (r, c) = (self.used_rows, self.used_cols);
        // Levels of at most 4 bits (`CrossbarGeometry`): the casts are exact.
        #[allow(clippy::cast_possible_wrap)]
        let (diff, magnitude): (Vec<i8>, Vec<i8>) = if neg.is_empty() {
            let g: Vec<i8> = pos.iter().map(|&p| p as i8).collect();
            (g.clone(), g)
        } else {
            let pairs = || pos.iter().zip(neg);
            (
                pairs().map(|(&p, &q)| p as i8 - q as i8).collect(),
                pairs().map(|(&p, &q)| (p + q) as i8).collect(),
            )
        };
        let max = self.geometry.max_level();
        #[allow(clippy::cast_sign_loss)]
        let pair_max = magnitude.iter().fold(0u8, |a, &m| a.max(m as u8));
        let ints = IntLevels { diff, magnitude };
        if pair_max <= max {
            return ProgrammedCrossbar::assemble(self.geometry, r, c, Some(ints), None, stuck);
        }
        let (d, m) = (
            int_matrix(&ints.diff, r, c),
            int_matrix(&ints.magnitude, r, c),
        );
        ProgrammedCrossbar::assemble(self.geometry, r, c, None, Some((d, m)), stuck)
    }
}

/// [`Crossbar::program`] with a relative programming error and nothing
/// stuck: per device in device order (`G+` before `G-`), the uniform of its
/// stuck test (read by nothing here), then a normal `z` when its target
/// `l + off` is not zero; the conductance `(l + off) (1 + relative z)`
/// rounded to `f32` and clamped to `[0, gmax]`. The draws of 256 cells are
/// made first, in one loop whose one call site inlines the normal, and their
/// conductances after, without branches: a device at target zero has `z = 0`
/// and `0 (1 + 0) = 0`, which is its target, as [`Crossbar::program`]'s
/// per-device write gives it.
fn program_relative(
    (pos, neg): (&[u8], Option<&[u8]>),
    off: f64,
    relative: f64,
    gmax: f32,
    rng: &mut Xoshiro256PlusPlus,
    (gp, gn): (&mut [f32], &mut [f32]),
) {
    const CELLS: usize = 256;
    let per = if neg.is_some() { 2 } else { 1 };
    let (mut levels, mut z, mut g) = ([0u8; 2 * CELLS], [0f64; 2 * CELLS], [0f32; 2 * CELLS]);
    for c0 in (0..pos.len()).step_by(CELLS) {
        let m = (pos.len() - c0).min(CELLS);
        let cells = c0..c0 + m;
        match neg {
            Some(neg) => {
                for ((l, &p), &q) in levels
                    .chunks_exact_mut(2)
                    .zip(&pos[cells.clone()])
                    .zip(&neg[cells.clone()])
                {
                    (l[0], l[1]) = (p, q);
                }
            }
            None => levels[..m].copy_from_slice(&pos[cells.clone()]),
        }
        for (z, &l) in z[..per * m].iter_mut().zip(&levels[..per * m]) {
            let _: f64 = rng.random();
            *z = if l != 0 || off != 0.0 {
                rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
            } else {
                0.0
            };
        }
        // The conductances in device order, then to their matrices.
        for ((g, &l), &z) in g[..per * m]
            .iter_mut()
            .zip(&levels[..per * m])
            .zip(&z[..per * m])
        {
            let target = f64::from(l) + off;
            #[allow(clippy::cast_possible_truncation)]
            let v = (target * (1.0 + relative * z)) as f32;
            *g = v.clamp(0.0, gmax);
        }
        match neg {
            Some(_) => {
                for ((p, q), g) in gp[cells.clone()]
                    .iter_mut()
                    .zip(&mut gn[cells])
                    .zip(g.chunks_exact(2))
                {
                    (*p, *q) = (g[0], g[1]);
                }
            }
            None => gp[cells].copy_from_slice(&g[..m]),
        }
    }
}

/// `(G+ - G-, G+ + G-)` as the rows see them: the device conductances, or with
/// IR drop `(wire ohm, siemens per level step)` the first-order effective
/// matrices ([`crate::ir_drop::resummed`]), back in level steps.
fn effective(
    mut gp: Vec<f32>,
    gn: Option<Vec<f32>>,
    rows: usize,
    cols: usize,
    ir: Option<(f64, f64)>,
) -> (Vec<f32>, Vec<f32>) {
    let Some((wire, lsb)) = ir else {
        // The devices' buffers become the two matrices (no more memory).
        return match gn {
            Some(mut gn) => {
                for (p, q) in gp.iter_mut().zip(&mut gn) {
                    (*p, *q) = (*p - *q, *p + *q);
                }
                (gp, gn)
            }
            None => (gp.clone(), gp),
        };
    };
    ir_effective(&gp, gn.as_deref(), rows, cols, (wire, lsb))
}

/// [`effective`] with IR drop `(wire ohm, siemens per level step)`: reads the
/// devices (the matrices are new), so a caller may keep them.
fn ir_effective(
    gp: &[f32],
    gn: Option<&[f32]>,
    rows: usize,
    cols: usize,
    (wire, lsb): (f64, f64),
) -> (Vec<f32>, Vec<f32>) {
    let siemens = |g: &[f32]| g.iter().map(|&v| f64::from(v) * lsb).collect::<Vec<f64>>();
    let (sp, sn) = (siemens(gp), gn.map(siemens));
    let eff = crate::ir_drop::resummed(&sp, sn.as_deref(), rows, cols, wire);
    #[allow(clippy::cast_possible_truncation)]
    let steps = |v: f64| (v / lsb) as f32;
    let diff = eff.diff.iter().map(|&v| steps(v)).collect();
    let magnitude = match &eff.neg {
        Some(neg) => eff
            .pos
            .iter()
            .zip(neg)
            .map(|(&a, &b)| steps(a + b))
            .collect(),
        None => eff.pos.iter().map(|&a| steps(a)).collect(),
    };
    (diff, magnitude)
}

/// `sum_j |sum_i G[i][j]|`, the column currents of an all-ones reference
/// read, of `G = gp - gn` (each difference an `f32`, as [`effective`] makes it
/// without IR drop), or of `gp` alone: a matrix's read is `reference_read(m,
/// None, cols)`.
fn reference_read(gp: &[f32], gn: Option<&[f32]>, cols: usize) -> f64 {
    let mut col = vec![0f64; cols];
    let width = cols.max(1);
    match gn {
        Some(gn) => {
            for (rp, rn) in gp.chunks_exact(width).zip(gn.chunks_exact(width)) {
                for ((a, &p), &q) in col.iter_mut().zip(rp).zip(rn) {
                    *a += f64::from(p - q);
                }
            }
        }
        None => {
            for row in gp.chunks_exact(width) {
                for (a, &p) in col.iter_mut().zip(row) {
                    *a += f64::from(p);
                }
            }
        }
    }
    col.iter().map(|v| v.abs()).sum()
}

/// Which conductance matrix [`ProgrammedCrossbar::bit_rows_sum`] sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitRows {
    /// `G+ - G-`: column sums.
    Diff,
    /// `G+ + G-`: the lumped read noise's magnitudes.
    Magnitude,
    /// `G+^2 + G-^2`: the per-device read noise's squares.
    Squares,
}

/// Integer levels of integrally programmed devices (every conductance an
/// integer level in `[-max, max]`), row-major `rows x cols`.
#[derive(Debug, Clone)]
struct IntLevels {
    /// `G+ - G-`.
    diff: Vec<i8>,
    /// `G+ + G-`.
    magnitude: Vec<i8>,
}

/// Integer levels (row-major `rows x cols`) as an `f32` matrix.
fn int_matrix(levels: &[i8], rows: usize, cols: usize) -> Array2<f32> {
    let v = levels.iter().map(|&l| f32::from(l)).collect();
    Array2::from_shape_vec((rows, cols), v).expect("shape")
}

/// The conductance image of a programmed crossbar, laid out for batched
/// matrix products (`pulses x diff`) and for single-column reads (recovery).
#[derive(Debug, Clone)]
pub struct ProgrammedCrossbar {
    geometry: CrossbarGeometry,
    rows: usize,
    cols: usize,
    /// Integer levels (ideal programming), from which the integer layouts
    /// (packed levels, level and value planes) are built.
    ints: Option<IntLevels>,
    /// `G+ - G-` as `f32`: given for real-valued conductances, made from
    /// `ints` on first use for integer levels.
    diff: std::sync::OnceLock<Array2<f32>>,
    /// The transposes and the level planes are built on first use: adaptive
    /// slicing's candidate runs and layers without recovery never read them.
    diff_t: std::sync::OnceLock<Array2<f32>>,
    level_planes: std::sync::OnceLock<Option<LevelPlanes>>,
    /// `G+ - G-` as unsigned bit-planes, for exact 1-bit reads (recovery).
    diff_planes: std::sync::OnceLock<Option<DiffPlanes>>,
    /// Ideal devices only: `G+ - G-` and (on first use) `G+ + G-` packed for
    /// integer batches.
    packed: Option<(PackedLevels, std::sync::OnceLock<PackedLevels>)>,
    /// `G+ + G-` as `f32` (as `diff`).
    magnitude: std::sync::OnceLock<Array2<f32>>,
    magnitude_t: std::sync::OnceLock<Array2<f32>>,
    row_magnitude: Vec<f32>,
    level_sum: f64,
    stuck_devices: usize,
    /// Nominal OFF current per pulse and row that reaches a column (1T1R with
    /// a finite OFF state), subtracted digitally after conversion.
    off_per_pulse: f32,
    /// The all-ones reference read right after programming (drift with global
    /// compensation).
    reference_t0: Option<f64>,
    /// `G+^2 + G-^2` and its transpose, built on first use (per-device read noise).
    squares: std::sync::OnceLock<(Array2<f32>, Array2<f32>)>,
    /// `G+^2 + G-^2` as unsigned bit-planes, for exact 1-bit reads of the
    /// squares (integer levels whose squares fit a byte; built on first use).
    square_planes: std::sync::OnceLock<Option<DiffPlanes>>,
    /// `G+^2 + G-^2` packed for integer batches when it has square planes:
    /// its low six bits, the rest over 64 (the kernels' level range), and
    /// the largest column total.
    squares_packed: std::sync::OnceLock<Option<(PackedLevels, Option<PackedLevels>, u64)>>,
    /// The largest column sum of `G+ - G-` (integer levels), on first use.
    largest_column: std::sync::OnceLock<Option<i64>>,
}

impl ProgrammedCrossbar {
    /// From real-valued matrices: their integer levels are kept too when
    /// every conductance is an integer level in range ([`levels_integral`]).
    fn from_matrices(
        geometry: CrossbarGeometry,
        diff: Array2<f32>,
        magnitude: Array2<f32>,
        stuck_devices: usize,
    ) -> Self {
        let (rows, cols) = diff.dim();
        let integral = levels_integral(geometry, &diff) && levels_integral(geometry, &magnitude);
        // Integers in `[-max, max]`, at most 4 bits: the casts are exact.
        #[allow(clippy::cast_possible_truncation)]
        let bytes = |m: &Array2<f32>| m.iter().map(|&g| small_int(g) as i8).collect();
        let ints = integral.then(|| IntLevels {
            diff: bytes(&diff),
            magnitude: bytes(&magnitude),
        });
        Self::assemble(
            geometry,
            rows,
            cols,
            ints,
            Some((diff, magnitude)),
            stuck_devices,
        )
    }

    /// From the integer levels (integral devices), the `f32` matrices
    /// (`G+ - G-`, `G+ + G-`), or both (the same values); at least one.
    #[inline(always)]
    fn assemble(
        geometry: CrossbarGeometry,
        rows: usize,
        cols: usize,
        ints: Option<IntLevels>,
        matrices: Option<(Array2<f32>, Array2<f32>)>,
        stuck_devices: usize,
    ) -> Self {
        // Integer levels (ideal programming) also get the packed integer layout
        // (their magnitudes, within the device maximum, always fit it).
        let packed = ints
            .as_ref()
            .and_then(|i| pack_ints(&i.diff, rows, cols))
            .map(|p| (p, std::sync::OnceLock::new()));
        let (row_magnitude, level_sum) = match (&ints, &matrices) {
            (Some(i), _) => {
                // Integer sums: the values the `f32` row sums and the
                // sequential `f64` total give (every partial sum an integer
                // below 2^24), without a latency chain.
                let sums: Vec<i32> = (0..rows)
                    .map(|r| {
                        let row = &i.magnitude[r * cols..(r + 1) * cols];
                        row.iter().map(|&m| i32::from(m)).sum::<i32>()
                    })
                    .collect();
                #[allow(clippy::cast_precision_loss)]
                let rm: Vec<f32> = sums.iter().map(|&s| s as f32).collect();
                // The rows' integer sums added: the sum over every level.
                #[allow(clippy::cast_precision_loss)]
                let total = sums.iter().map(|&s| i64::from(s)).sum::<i64>() as f64;
                (rm, total)
            }
            (None, Some((_, magnitude))) => (
                magnitude.rows().into_iter().map(|r| r.sum()).collect(),
                match magnitude.as_slice() {
                    Some(m) => sequential_sum(m),
                    None => magnitude.iter().map(|&g| f64::from(g)).sum(),
                },
            ),
            (None, None) => unreachable!("integer levels or matrices"),
        };
        let (diff, magnitude) = match matrices {
            Some((d, m)) => (std::sync::OnceLock::from(d), std::sync::OnceLock::from(m)),
            None => (std::sync::OnceLock::new(), std::sync::OnceLock::new()),
        };
        Self {
            geometry,
            rows,
            cols,
            ints,
            diff,
            diff_t: std::sync::OnceLock::new(),
            level_planes: std::sync::OnceLock::new(),
            diff_planes: std::sync::OnceLock::new(),
            packed,
            magnitude,
            magnitude_t: std::sync::OnceLock::new(),
            row_magnitude,
            level_sum,
            stuck_devices,
            off_per_pulse: 0.0,
            reference_t0: None,
            squares: std::sync::OnceLock::new(),
            square_planes: std::sync::OnceLock::new(),
            squares_packed: std::sync::OnceLock::new(),
            largest_column: std::sync::OnceLock::new(),
        }
    }

    /// Builds now what a run will read and is otherwise built on first use,
    /// so that a design's build time includes it and its first evaluation
    /// does not: with `exact`, the value planes of exact 1-bit reads (the
    /// engine's exact recoveries); when anything perturbs the reads
    /// (`perturbed`: read noise, ADC variation, programmed conductances), the
    /// level planes and packed magnitudes (integer levels), or the transposes
    /// (real-valued conductances; the magnitudes' only with `magnitudes`,
    /// when read noise scales with them). A noise-free run without recovery
    /// reads none.
    pub fn prepare_reads(&self, exact: bool, perturbed: bool, magnitudes: bool) {
        if exact {
            let _ = self.exact_bits();
        }
        if perturbed {
            // Integer levels are read through the planes; the transposes
            // serve real-valued conductances.
            let _ = self.planes();
            if self.ints.is_none() {
                let _ = self.diff_t();
                if magnitudes {
                    let _ = self.magnitude_t();
                }
            }
            let _ = self.packed_magnitudes();
        }
    }

    /// `G+ - G-` (`rows x cols`), made from the integer levels on first use.
    fn diff(&self) -> &Array2<f32> {
        self.diff.get_or_init(|| {
            let i = self.ints.as_ref().expect("integer levels or the matrix");
            int_matrix(&i.diff, self.rows, self.cols)
        })
    }

    /// `G+ + G-` (`rows x cols`), made from the integer levels on first use.
    fn magnitude(&self) -> &Array2<f32> {
        self.magnitude.get_or_init(|| {
            let i = self.ints.as_ref().expect("integer levels or the matrix");
            int_matrix(&i.magnitude, self.rows, self.cols)
        })
    }

    /// `G+ + G-` packed for integer batches (ideal devices), made on first use.
    fn packed_magnitudes(&self) -> Option<&PackedLevels> {
        let (_, m) = self.packed.as_ref()?;
        let i = self.ints.as_ref().expect("packed levels are integers");
        Some(m.get_or_init(|| {
            pack_ints(&i.magnitude, self.rows, self.cols).expect("magnitudes within the maximum")
        }))
    }

    /// `G+ - G-` transposed (`cols x rows`).
    fn diff_t(&self) -> &Array2<f32> {
        self.diff_t.get_or_init(|| transposed(self.diff()))
    }

    /// `G+ + G-` transposed (`cols x rows`).
    fn magnitude_t(&self) -> &Array2<f32> {
        self.magnitude_t
            .get_or_init(|| transposed(self.magnitude()))
    }

    /// Whether the conductances are integer levels (ideal programming, or
    /// stuck cells at 0 or the maximum level): their reads are exact integers
    /// ([`Self::exact_bits`]). Otherwise they are real-valued.
    #[must_use]
    pub fn is_integral(&self) -> bool {
        self.ints.is_some()
    }

    /// Exact 1-bit column reads, for integer levels (ideal programming):
    /// what recovery reads, several input bits of a column per call.
    #[must_use]
    #[inline(always)]
    pub fn exact_bits(&self) -> Option<ExactBits<'_>> {
        self.diff_planes
            .get_or_init(|| {
                self.ints.as_ref().map(|i| {
                    // Compiled for the engine's instruction set (`dispatch`
                    // inlines it): every design's build makes these.
                    crate::Kernel::dispatch_selected(
                        #[inline(always)]
                        || DiffPlanes::new(self.rows, self.cols, &i.diff, i32::from),
                    )
                })
            })
            .as_ref()
            .map(|planes| ExactBits { planes })
    }

    /// The level planes, for integer levels.
    #[inline(always)]
    fn planes(&self) -> Option<&LevelPlanes> {
        self.level_planes
            .get_or_init(|| {
                self.ints.as_ref().map(|i| {
                    LevelPlanes::new(self.geometry, self.rows, self.cols, &i.diff, &i.magnitude)
                })
            })
            .as_ref()
    }

    /// The largest sum of `G+ - G-` over the rows of any column, for integer
    /// levels (a column's largest 1-bit read when every level is
    /// non-negative, as on 1T1R); built on first use.
    #[must_use]
    pub fn largest_column_sum(&self) -> Option<i64> {
        *self.largest_column.get_or_init(|| {
            let i = self.ints.as_ref()?;
            let mut sums = vec![0i64; self.cols];
            for row in i.diff.chunks_exact(self.cols.max(1)) {
                for (s, &d) in sums.iter_mut().zip(row) {
                    *s += i64::from(d);
                }
            }
            Some(sums.into_iter().max().unwrap_or(0))
        })
    }

    /// Nominal OFF current per pulse and row reaching each column, in level
    /// steps: the OFF conductance on 1T1R with a finite OFF state, else 0.
    #[must_use]
    pub fn off_per_pulse(&self) -> f32 {
        self.off_per_pulse
    }

    /// `(at programming, now)` of an all-ones reference read (`sum_j |I_j|`),
    /// when drift with global compensation is on.
    #[must_use]
    pub fn reference_reads(&self) -> Option<(f64, f64)> {
        let diff = self.diff().as_slice().expect("standard layout");
        self.reference_t0
            .map(|t0| (t0, reference_read(diff, None, self.used_cols())))
    }

    /// This crossbar read through a gain `alpha` (drift compensation applied as
    /// the ADC's gain): every conductance, and the OFF correction, scaled; a
    /// copy ([`Self::into_scaled`] scales in place).
    #[must_use]
    pub fn scaled(&self, alpha: f64) -> Self {
        self.clone().into_scaled(alpha)
    }

    /// [`Self::scaled`], reusing this crossbar's matrices.
    #[must_use]
    pub fn into_scaled(mut self, alpha: f64) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let a = alpha as f32;
        // Made from the integer levels first where they are kept lazily.
        let _ = (self.diff(), self.magnitude());
        let (Some(mut diff), Some(mut magnitude)) = (self.diff.take(), self.magnitude.take())
        else {
            unreachable!("both matrices were made above")
        };
        diff.mapv_inplace(|g| g * a);
        magnitude.mapv_inplace(|g| g * a);
        let mut px = Self::from_matrices(self.geometry, diff, magnitude, self.stuck_devices);
        px.off_per_pulse = self.off_per_pulse * a;
        px.reference_t0 = self.reference_t0;
        px
    }

    fn squares(&self) -> &(Array2<f32>, Array2<f32>) {
        self.squares.get_or_init(|| {
            // G+ = (m + d) / 2, G- = (m - d) / 2, so G+^2 + G-^2 = (m^2 + d^2) / 2.
            let sq = ndarray::Zip::from(self.magnitude())
                .and(self.diff())
                .map_collect(|&m, &d| 0.5 * (m * m + d * d));
            let sq_t = transposed(&sq);
            (sq, sq_t)
        })
    }

    /// `sum_r p_r^2 (G+^2 + G-^2)` of a batch, given the squared pulses: the
    /// per-device read noise's variance (over `s^2`).
    ///
    /// # Panics
    /// On shape mismatch.
    pub fn column_squares(&self, pulses_sq: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        product(pulses_sq, &self.squares().0, out);
    }

    /// [`Self::column_squares`] of one column under a 1-bit input slice
    /// (the bitset as [`Self::column_sum_bits`]'s).
    ///
    /// Integer levels whose squares fit a byte (every 2T2R pair of 4-bit
    /// devices with one device at 0, as Center+Offset programs them) read
    /// the squares' bit-planes by popcounts when `row_bits` has
    /// [`Self::row_bit_words`] words: the sum is an integer below `rows x
    /// 2^8 < 2^24`, so it is the value the rows' `f32` squares add to in any
    /// order. Otherwise the set rows' squares are added in order.
    #[must_use]
    #[inline(always)]
    pub fn column_square_bits(&self, col: usize, row_bits: &[u64]) -> f32 {
        if let Some(planes) = self.square_planes()
            && row_bits.len() == planes.words
        {
            let ones: u32 = row_bits.iter().map(|w| w.count_ones()).sum();
            let mut sum = [0i32];
            ExactBits { planes }.column_sums(col, row_bits, &[ones], &mut sum);
            // Exact: 0 <= sum < rows x 2^8 < 2^24.
            #[allow(clippy::cast_precision_loss)]
            return sum[0] as f32;
        }
        let sq_t = &self.squares().1;
        bits_dot(row_bits, sq_t.row(col).to_slice().expect("standard layout"))
    }

    /// Exact 1-bit reads of the squares `G+^2 + G-^2`, several input bits of
    /// a column per call ([`ExactBits::column_sums`]; its `safe_rows` and
    /// `read_bounds` are the squares'): integer levels whose squares fit a
    /// byte, as for [`Self::column_square_bits`]'s planes. Each read is an
    /// integer below `rows x 2^8 < 2^24`, the value the ordered `f32` sum
    /// gives.
    #[must_use]
    #[inline(always)]
    pub fn exact_square_bits(&self) -> Option<ExactBits<'_>> {
        self.square_planes().map(|planes| ExactBits { planes })
    }

    /// The largest column total `sum_r (G+^2 + G-^2)` when
    /// [`Self::column_squares_int`] applies (integer levels whose squares fit
    /// a byte, as for [`Self::column_square_bits`]'s planes). A batch whose
    /// squared pulses are at most `p` has exact `f32` squares
    /// ([`Self::column_squares`], every partial sum an integer) when `p x`
    /// this is below `2^24`; then the integers are the same values.
    #[must_use]
    pub fn squares_int_limit(&self) -> Option<u64> {
        self.squares_packed().map(|p| p.2)
    }

    /// [`Self::column_squares`] as exact integers, squared pulses as `u8`
    /// (the layout of [`Self::column_sums_int`]).
    ///
    /// # Panics
    /// Without [`Self::squares_int_limit`], or on shape mismatch.
    pub fn column_squares_int(&self, pulses_sq: &[u8], out: &mut [i32]) {
        let (low, high, _) = self
            .squares_packed()
            .expect("integer squares need integer levels whose squares fit a byte");
        low.column_sums(pulses_sq, out);
        if let Some(high) = high {
            let mut rest = vec![0i32; out.len()];
            high.column_sums(pulses_sq, &mut rest);
            for (o, &r) in out.iter_mut().zip(&rest) {
                *o += r << 6;
            }
        }
    }

    #[inline(always)]
    fn squares_packed(&self) -> Option<&(PackedLevels, Option<PackedLevels>, u64)> {
        self.squares_packed
            .get_or_init(|| {
                self.square_planes()?;
                let sq = &self.squares().0;
                // Integers in [0, 255] (the square planes exist): the parts
                // are exact bytes.
                #[allow(clippy::cast_possible_truncation)]
                let part = |f: fn(i32) -> i32| -> Vec<i8> {
                    sq.iter().map(|&q| f(small_int(q)) as i8).collect()
                };
                let low = pack_ints(&part(|q| q % 64), self.rows, self.cols)?;
                let high = part(|q| q / 64);
                let high = if high.iter().any(|&h| h > 0) {
                    Some(pack_ints(&high, self.rows, self.cols)?)
                } else {
                    None
                };
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let limit = sq
                    .columns()
                    .into_iter()
                    .map(|c| c.iter().map(|&q| q as u64).sum::<u64>())
                    .max()
                    .unwrap_or(0);
                Some((low, high, limit))
            })
            .as_ref()
    }

    /// The squares' bit-planes ([`Self::column_square_bits`]): integer levels
    /// only, and only when every `G+^2 + G-^2` is at most 255.
    #[inline(always)]
    fn square_planes(&self) -> Option<&DiffPlanes> {
        self.square_planes
            .get_or_init(|| {
                let sq = &self.squares().0;
                (self.ints.is_some() && sq.iter().all(|&q| q <= 255.0)).then(|| {
                    let all = sq.as_slice().expect("standard layout");
                    crate::Kernel::dispatch_selected(
                        #[inline(always)]
                        || DiffPlanes::new(self.rows, self.cols, all, small_int),
                    )
                })
            })
            .as_ref()
    }

    /// The physical geometry.
    #[must_use]
    pub fn geometry(&self) -> CrossbarGeometry {
        self.geometry
    }

    /// Rows in use.
    #[must_use]
    pub fn used_rows(&self) -> usize {
        self.rows
    }

    /// Columns in use.
    #[must_use]
    pub fn used_cols(&self) -> usize {
        self.cols
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
        product(pulses, self.diff(), out);
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
        self.packed_magnitudes()
            .expect("integer magnitudes need ideal devices")
            .column_sums(pulses, out);
    }

    /// `N+ + N-` of a batch: `out = pulses . (G+ + G-)`, the noise magnitude.
    ///
    /// # Panics
    /// On shape mismatch.
    #[inline(always)]
    pub fn column_magnitudes(&self, pulses: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        product(pulses, self.magnitude(), out);
    }

    /// `G+ - G-` of one used column, over the used rows (contiguous).
    #[must_use]
    pub fn diff_column(&self, col: usize) -> &[f32] {
        self.diff_t().row(col).to_slice().expect("standard layout")
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
        if let Some(p) = self.planes() {
            // Exact: |sum| <= rows x 15 < 2^24.
            #[allow(clippy::cast_precision_loss)]
            return p.column_sum(col, row_bits) as f32;
        }
        bits_dot(row_bits, self.diff_column(col))
    }

    /// Words of a row bitset of `rows` rows as [`Self::column_sum_bits`] reads
    /// it fastest: one word up to 64 rows (narrow crossbars such as depthwise
    /// groups), else `rows / 64` rounded up to whole blocks of 8 words (512
    /// rows), the padding zero. Shorter bitsets (at least `rows / 64` rounded
    /// up) give the same sums.
    #[must_use]
    pub fn row_bit_words(rows: usize) -> usize {
        if rows <= 64 {
            1
        } else {
            rows.div_ceil(64 * PLANE_BLOCK) * PLANE_BLOCK
        }
    }

    /// The exact integer column sum under a 1-bit input slice (see
    /// [`Self::column_sum_bits`]), or `None` after programming noise.
    #[must_use]
    #[inline(always)]
    pub fn column_sum_bits_exact(&self, col: usize, row_bits: &[u64]) -> Option<i32> {
        self.planes().map(|p| p.column_sum(col, row_bits))
    }

    /// `N+ + N-` of one used column under a 1-bit input slice (see [`Self::column_sum_bits`]).
    /// Ideal crossbars answer exactly from the level bit-planes.
    #[must_use]
    #[inline(always)]
    pub fn column_magnitude_bits(&self, col: usize, row_bits: &[u64]) -> f32 {
        if let Some(p) = self.planes() {
            // Exact: sum <= rows x 30 < 2^24.
            #[allow(clippy::cast_precision_loss)]
            return p.column_sum_signed(col, row_bits, 1) as f32;
        }
        bits_dot(row_bits, self.magnitude_column(col))
    }

    /// [`Self::column_sum_and_magnitude_bits`] as exact integers (ideal
    /// devices: integer levels) under each of the row
    /// bitsets `bits[t * words..(t + 1) * words]` (`words` =
    /// [`Self::row_bit_words`] of the used rows), `out[t]` for `t <
    /// out.len()` (at most 8), in one call (one reduction per bitset for
    /// both sums).
    ///
    /// # Panics
    /// If the crossbar's levels are not integers (programming noise), or
    /// `bits` holds fewer than `out.len()` bitsets.
    #[inline(always)]
    pub fn column_sums_and_magnitudes_bits_int(
        &self,
        col: usize,
        bits: &[u64],
        out: &mut [(i32, i32)],
    ) {
        self.planes()
            .expect("integer 1-bit reads need integer levels")
            .column_sums_and_magnitudes(col, bits, out);
    }

    /// [`Self::column_sum_bits`] and [`Self::column_magnitude_bits`] in one
    /// read of the column (ideal crossbars: one pass over the level planes).
    #[must_use]
    #[inline(always)]
    pub fn column_sum_and_magnitude_bits(&self, col: usize, row_bits: &[u64]) -> (f32, f32) {
        if let Some(p) = self.planes() {
            let (s, m) = p.column_sum_and_magnitude(col, row_bits);
            // Exact: |sum|, magnitude <= rows x 30 < 2^24.
            #[allow(clippy::cast_precision_loss)]
            return (s as f32, m as f32);
        }
        (
            self.column_sum_bits(col, row_bits),
            self.column_magnitude_bits(col, row_bits),
        )
    }

    /// Every used column's sum of one matrix over the rows set in a 1-bit
    /// input slice (see [`Self::column_sum_bits`] for the bitset): `out[c] =
    /// sum_{r set} M[r][c]`, adding the rows in ascending order to a sum that
    /// starts at zero, so each column gets the value its single-column read
    /// gives ([`Self::column_sum_bits`], [`Self::column_magnitude_bits`],
    /// [`Self::column_square_bits`] on programmed crossbars), row by row
    /// across all columns.
    ///
    /// # Panics
    /// If `out` is shorter than the used columns.
    #[inline(always)]
    pub fn bit_rows_sum(&self, which: BitRows, row_bits: &[u64], out: &mut [f32]) {
        let m = match which {
            BitRows::Diff => self.diff(),
            BitRows::Magnitude => self.magnitude(),
            BitRows::Squares => &self.squares().0,
        };
        let (rows, cols) = m.dim();
        let out = &mut out[..cols];
        let g = m.as_slice().expect("standard layout");
        // Blocks of columns whose sums stay in registers over all the set
        // rows (128 at a time, then one each of 64, 32 and 16 as they fit),
        // the last few columns in memory.
        let mut c0 = 0;
        macro_rules! block {
            ($n:literal) => {{
                rows_block::<$n>(g, rows, cols, c0, row_bits, &mut out[c0..c0 + $n]);
                c0 += $n;
            }};
        }
        while cols - c0 >= 128 {
            block!(128);
        }
        if cols - c0 >= 64 {
            block!(64);
        }
        if cols - c0 >= 32 {
            block!(32);
        }
        if cols - c0 >= 16 {
            block!(16);
        }
        let narrow = c0;
        let tail = &mut out[narrow..];
        tail.fill(0.0);
        for_set_rows(row_bits, rows, |r| {
            for (o, &x) in tail.iter_mut().zip(&g[r * cols + narrow..(r + 1) * cols]) {
                *o += x;
            }
        });
    }

    /// `G+ + G-` of one used column, over the used rows (contiguous).
    #[must_use]
    pub fn magnitude_column(&self, col: usize) -> &[f32] {
        self.magnitude_t()
            .row(col)
            .to_slice()
            .expect("standard layout")
    }
}

/// Calls `f` with each row set in a row bitset, in ascending order, below `rows`.
#[inline(always)]
fn for_set_rows(row_bits: &[u64], rows: usize, mut f: impl FnMut(usize)) {
    for (wi, &word) in row_bits.iter().enumerate().take(rows.div_ceil(64)) {
        let mut word = word;
        while word != 0 {
            let r = wi * 64 + word.trailing_zeros() as usize;
            if r >= rows {
                break;
            }
            f(r);
            word &= word - 1;
        }
    }
}

/// Columns `c0 .. c0 + N` of [`ProgrammedCrossbar::bit_rows_sum`] (`g`
/// row-major `rows x cols`): each sum starts at zero and adds the set rows
/// in ascending order, held in a fixed-size array (registers) until the end.
#[inline(always)]
fn rows_block<const N: usize>(
    g: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    row_bits: &[u64],
    out: &mut [f32],
) {
    let mut acc = [0f32; N];
    for_set_rows(row_bits, rows, |r| {
        let src: &[f32; N] = g[r * cols + c0..][..N].try_into().expect("N columns");
        for (a, &x) in acc.iter_mut().zip(src) {
            *a += x;
        }
    });
    out.copy_from_slice(&acc);
}

/// `sum_r bit_r * w_r` for a row bitset, added in row order. Visits the set
/// bits only: 1-bit input planes are mostly empty.
#[inline(always)]
fn bits_dot(row_bits: &[u64], w: &[f32]) -> f32 {
    let mut sum = 0f32;
    for_set_rows(row_bits, w.len(), |r| sum += w[r]);
    sum
}

/// Bit-planes of an ideal crossbar's integer levels, per used column: for each
/// level bit `l` and sign, the bitset of rows whose level has bit `l` set.
/// Layout: `[((col * bits + l) * 2 + sign) * words + word]`; `col_bits[col]` is
/// the number of level bits the column actually uses (its widest level).
#[derive(Debug, Clone)]
struct LevelPlanes {
    blocks: usize,
    /// At most 64 rows: callers' bitsets are one word
    /// ([`ProgrammedCrossbar::row_bit_words`]).
    one_word: bool,
    bits: usize,
    col_bits: Vec<usize>,
    data: Vec<[u64; PLANE_BLOCK]>,
}

/// Words per block of a level plane: 512 rows, one 512-bit register, so the
/// fixed-size loops of [`LevelPlanes::column_sum`] vectorise whole.
const PLANE_BLOCK: usize = 8;

impl LevelPlanes {
    /// For integer levels only (ideal programming: the caller has checked
    /// [`levels_integral`]), from the `rows x cols` matrices: each device's
    /// level as a byte (devices have at most 4 bits, `CrossbarGeometry`),
    /// row-major (the loop vectorises), transposed 8 x 8
    /// ([`transpose_bytes`]), then each column's bit planes
    /// ([`crate::bit_planes`]).
    fn new(
        geometry: CrossbarGeometry,
        rows: usize,
        cols: usize,
        d_all: &[i8],
        m_all: &[i8],
    ) -> Self {
        let bits = geometry.bits_per_device() as usize;
        let words = rows.div_ceil(64);
        let blocks = words.div_ceil(PLANE_BLOCK);
        let pr = blocks * PLANE_BLOCK * 64;
        // Row-major device levels; one device of a pair is 0 for compiled
        // weights, but programming may drive both: each from the sum and
        // difference (`(m + d) / 2`, `(m - d) / 2`, exact on integers).
        let (mut pos, mut neg) = (vec![0u8; rows * cols], vec![0u8; rows * cols]);
        let mut any = vec![0u8; cols];
        for (((prow, nrow), drow), mrow) in pos
            .chunks_exact_mut(cols.max(1))
            .zip(neg.chunks_exact_mut(cols.max(1)))
            .zip(d_all.chunks_exact(cols.max(1)))
            .zip(m_all.chunks_exact(cols.max(1)))
        {
            for ((((p, n), &d), &m), a) in
                prow.iter_mut().zip(nrow).zip(drow).zip(mrow).zip(&mut any)
            {
                let (d, m) = (i32::from(d), i32::from(m));
                // Levels of at most 4 bits.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let (pv, nv) = (((m + d) >> 1) as u8, ((m - d) >> 1) as u8);
                (*p, *n) = (pv, nv);
                *a |= pv | nv;
            }
        }
        let (mut pos_t, mut neg_t) = (vec![0u8; cols * pr], vec![0u8; cols * pr]);
        transpose_bytes(&pos, rows, cols, &mut pos_t, pr);
        transpose_bytes(&neg, rows, cols, &mut neg_t, pr);
        let mut data = vec![[0u64; PLANE_BLOCK]; cols * bits * 2 * blocks];
        // A column's eight bit planes ([`crate::bit_planes`]: one mask
        // instruction per 64 bytes and plane where AVX-512 runs), `pr / 64`
        // words each, of which it keeps its device's bits.
        let plane_words = pr / 64;
        let mut eight = vec![0u64; 8 * plane_words];
        for c in 0..cols {
            for (sign, t) in [&pos_t, &neg_t].into_iter().enumerate() {
                eight.fill(0);
                crate::bit_planes(&t[c * pr..][..pr], &mut eight);
                for l in 0..bits {
                    let plane = &eight[l * plane_words..][..plane_words];
                    for (block, ws) in plane.chunks_exact(PLANE_BLOCK).enumerate() {
                        data[((c * bits + l) * 2 + sign) * blocks + block].copy_from_slice(ws);
                    }
                }
            }
        }
        Self {
            blocks,
            one_word: rows <= 64,
            bits,
            // The widest level's bit count (that of the OR of all levels).
            col_bits: any
                .iter()
                .map(|&a| 8 - a.leading_zeros() as usize)
                .collect(),
            data,
        }
    }

    /// `sum_r bit_r * (G+ - G-)[r][col]`.
    #[inline(always)]
    fn column_sum(&self, col: usize, row_bits: &[u64]) -> i32 {
        self.column_sum_signed(col, row_bits, -1)
    }

    /// `(sum, magnitude)` = `(G+ - G-, G+ + G-)` under the row bitset, from one
    /// pass over the planes.
    #[inline(always)]
    fn column_sum_and_magnitude(&self, col: usize, row_bits: &[u64]) -> (i32, i32) {
        let (pos, neg) = self.column_pos_neg(col, row_bits);
        // Both <= rows x 15, far below 2^31.
        #[allow(clippy::cast_possible_truncation)]
        let out = ((pos - neg) as i32, (pos + neg) as i32);
        out
    }

    /// [`Self::column_sum_and_magnitude`] under each of `out.len()` (at most
    /// 8) row bitsets of [`ProgrammedCrossbar::row_bit_words`] words each,
    /// consecutive in `bits`, in one call; each bitset's two sums share one
    /// 512-bit accumulator and one reduction (`G+` in the low and
    /// `G-` in the high 32 bits of each lane: both are at most `rows x 15`,
    /// far below 2^32, so neither carries into the other).
    #[inline(always)]
    fn column_sums_and_magnitudes(&self, col: usize, bits: &[u64], out: &mut [(i32, i32)]) {
        let n = out.len();
        assert!(n <= 8, "at most 8 bitsets");
        let (nb, cb) = (self.blocks, self.col_bits[col]);
        let words = if self.one_word { 1 } else { nb * PLANE_BLOCK };
        assert!(bits.len() >= n * words, "one bitset per output");
        // Both sums of bitset `t`, packed as above.
        let mut packed = [0u64; 8];
        if words == 1 {
            // One word (at most 64 rows): lane 0 of each plane.
            for l in 0..cb {
                let base = ((col * self.bits + l) * 2) * nb;
                let (p, q) = (self.data[base][0], self.data[base + nb][0]);
                for (a, &x) in packed.iter_mut().zip(&bits[..n]) {
                    *a += (u64::from((x & p).count_ones())
                        | (u64::from((x & q).count_ones()) << 32))
                        << l;
                }
            }
        } else if nb == 1 {
            // One block (65 to 512 rows): the column's level pairs in one
            // slice, added from the highest level by doubling the lanes (the
            // same sums as the shifts below), with no index to check.
            let (pairs, _) = self.data[col * self.bits * 2..][..2 * cb].as_chunks::<2>();
            let (xs, _) = bits.as_chunks::<PLANE_BLOCK>();
            for (a, xb) in packed[..n].iter_mut().zip(xs) {
                let mut lanes = [0u64; PLANE_BLOCK];
                for [p, q] in pairs.iter().rev() {
                    double_and_add(&mut lanes, xb, p, q);
                }
                *a = lanes.iter().sum();
            }
        } else {
            // The column's planes, level by level, each level's `G+` then
            // `G-` blocks: per block, the levels from the highest by
            // doubling, as above.
            let levels = &self.data[col * self.bits * 2 * nb..][..2 * cb * nb];
            for (t, a) in packed[..n].iter_mut().enumerate() {
                let (xs, _) = bits[t * words..][..words].as_chunks::<PLANE_BLOCK>();
                // Per-lane sums; one reduction per bitset.
                let mut lanes = [0u64; PLANE_BLOCK];
                for (bi, xb) in xs.iter().enumerate() {
                    let mut block = [0u64; PLANE_BLOCK];
                    for level in levels.chunks_exact(2 * nb).rev() {
                        double_and_add(&mut block, xb, &level[bi], &level[nb + bi]);
                    }
                    for (l, b) in lanes.iter_mut().zip(block) {
                        *l += b;
                    }
                }
                *a = lanes.iter().sum();
            }
        }
        for (o, &a) in out.iter_mut().zip(&packed) {
            // Each half at most rows x 15, far below 2^31.
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
            let (pos, neg) = ((a & 0xffff_ffff) as i32, (a >> 32) as i32);
            *o = (pos - neg, pos + neg);
        }
    }

    /// `sum_r bit_r * G+[r][col]` and `sum_r bit_r * G-[r][col]`.
    #[inline(always)]
    fn column_pos_neg(&self, col: usize, row_bits: &[u64]) -> (i64, i64) {
        if let [xw] = row_bits {
            // One word (at most 64 rows: see `row_bit_words`); lane 0 only.
            let (mut pos, mut neg) = (0i64, 0i64);
            for l in 0..self.col_bits[col] {
                let base = ((col * self.bits + l) * 2) * self.blocks;
                pos += i64::from((xw & self.data[base][0]).count_ones()) << l;
                neg += i64::from((xw & self.data[base + self.blocks][0]).count_ones()) << l;
            }
            return (pos, neg);
        }
        // Whole blocks when the caller padded its bitset (see `row_bit_words`).
        let x = &row_bits[..(self.blocks * PLANE_BLOCK).min(row_bits.len())];
        let nb = self.blocks;
        let (mut pos, mut neg) = (0i64, 0i64);
        for (bi, xw) in x.chunks(PLANE_BLOCK).enumerate() {
            // Whole blocks are read in place (a copy into a local array would
            // stall the vector load behind the scalar stores).
            let xb: [u64; PLANE_BLOCK] = match <&[u64; PLANE_BLOCK]>::try_from(xw) {
                Ok(full) => *full,
                Err(_) => std::array::from_fn(|k| xw.get(k).copied().unwrap_or(0)),
            };
            // Per-lane sums over all level bits; one reduction at the end.
            // Separate loops for the two devices: each is one 512-bit
            // and-popcount-shift-add (interleaved, they vectorise 128 bits wide).
            let mut lp = [0i64; PLANE_BLOCK];
            let mut ln = [0i64; PLANE_BLOCK];
            for l in 0..self.col_bits[col] {
                let base = ((col * self.bits + l) * 2) * nb + bi;
                let p = &self.data[base];
                for k in 0..PLANE_BLOCK {
                    lp[k] += i64::from((xb[k] & p[k]).count_ones()) << l;
                }
            }
            for l in 0..self.col_bits[col] {
                let base = ((col * self.bits + l) * 2) * nb + bi;
                let n = &self.data[base + nb];
                for k in 0..PLANE_BLOCK {
                    ln[k] += i64::from((xb[k] & n[k]).count_ones()) << l;
                }
            }
            pos += lp.iter().sum::<i64>();
            neg += ln.iter().sum::<i64>();
        }
        (pos, neg)
    }

    /// `sum_r bit_r * (G+ + neg_sign * G-)[r][col]`, `neg_sign` = -1 (the column
    /// sum) or 1 (the magnitude `N+ + N-`).
    #[inline(always)]
    fn column_sum_signed(&self, col: usize, row_bits: &[u64], neg_sign: i64) -> i32 {
        let (pos, neg) = self.column_pos_neg(col, row_bits);
        // |sum| <= rows x 30, far below 2^31.
        #[allow(clippy::cast_possible_truncation)]
        let sum = (pos + neg_sign * neg) as i32;
        sum
    }
}

/// `d - min_c` of every column's `G+ - G-` (`d`, integer levels) as unsigned
/// bit-planes, `min_c` the column's smallest difference: a 1-bit read is
/// `sum_l 2^l popcount(x & U_l) + min_c popcount(x)`, `bits(max_c - min_c)`
/// popcounts per word where the device-level planes take two per level bit
/// (Center+Offset's small signed offsets need one plane fewer than a device
/// has bits; one-device columns half as many).
#[derive(Debug, Clone)]
struct DiffPlanes {
    /// Words per row bitset ([`ProgrammedCrossbar::row_bit_words`]).
    words: usize,
    /// Planes per column in `data` (the most any column needs).
    stride: usize,
    /// Planes column `c` needs.
    planes: Vec<usize>,
    min: Vec<i32>,
    /// `[(col * stride + l) * words + word]`.
    data: Vec<u64>,
    /// Column `c`'s rows per difference `min_c + i`: `counts[starts[c] + i]`.
    counts: Vec<u32>,
    starts: Vec<usize>,
    /// The most negative and the most positive 1-bit read of any column
    /// (its negative and its positive differences, all active).
    reads: (i64, i64),
}

impl DiffPlanes {
    /// From the differences (`rows x cols`, row-major, integer levels read
    /// by `int`).
    #[inline(always)]
    fn new<T: Copy>(rows: usize, cols: usize, all: &[T], int: impl Fn(T) -> i32) -> Self {
        let words = ProgrammedCrossbar::row_bit_words(rows);
        let pr = words * 64;
        // Row by row (the loop vectorises): each column's extremes.
        let (mut min, mut max) = (vec![i32::MAX; cols], vec![i32::MIN; cols]);
        for drow in all.chunks_exact(cols.max(1)) {
            for ((&d, lo), hi) in drow.iter().zip(&mut min).zip(&mut max) {
                let x = int(d);
                *lo = (*lo).min(x);
                *hi = (*hi).max(x);
            }
        }
        if rows == 0 {
            min.fill(0);
            max.fill(0);
        }
        #[allow(clippy::cast_sign_loss)]
        let planes: Vec<usize> = min
            .iter()
            .zip(&max)
            .map(|(&lo, &hi)| (32 - ((hi - lo) as u32).leading_zeros()) as usize)
            .collect();
        let stride = planes.iter().copied().max().unwrap_or(0);
        let mut data = vec![0u64; cols * stride * words];
        let mut starts = Vec::with_capacity(cols + 1);
        let mut counts = Vec::new();
        // Values `d - min_c` fit a byte: devices have at most 4 bits
        // (`CrossbarGeometry`), so a pair's difference spans at most 30.
        // Row-major bytes, transposed eight by eight into columns (zero past
        // the used rows, `pr` per column); per column its histogram, then
        // its bit planes.
        debug_assert!(stride <= 8, "a difference spans more than a byte");
        let mut rowmajor = vec![0u8; rows * cols];
        for (vrow, drow) in rowmajor
            .chunks_exact_mut(cols.max(1))
            .zip(all.chunks_exact(cols.max(1)))
        {
            for ((v, &d), &lo) in vrow.iter_mut().zip(drow).zip(&min) {
                // In range (above).
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let u = (int(d) - lo) as u8;
                *v = u;
            }
        }
        let mut values = vec![0u8; cols * pr];
        transpose_bytes(&rowmajor, rows, cols, &mut values, pr);
        let mut hists = [[0u32; 256]; 4];
        // A column's eight bit planes ([`crate::bit_planes`]: one mask
        // instruction per 64 bytes and plane where AVX-512 runs), of which
        // it keeps its own.
        let mut eight = vec![0u64; 8 * words];
        for (c, u) in values.chunks_exact(pr).take(cols).enumerate() {
            starts.push(counts.len());
            histogram(&u[..rows], planes[c], &mut hists, &mut counts);
            eight.fill(0);
            crate::bit_planes(u, &mut eight);
            data[c * stride * words..][..planes[c] * words]
                .copy_from_slice(&eight[..planes[c] * words]);
        }
        starts.push(counts.len());
        let mut reads = (0i64, 0i64);
        for (c, &lo) in min.iter().enumerate() {
            let (mut neg, mut pos) = (0i64, 0i64);
            for (d, &n) in (i64::from(lo)..).zip(&counts[starts[c]..starts[c + 1]]) {
                if d < 0 {
                    neg += d * i64::from(n);
                } else {
                    pos += d * i64::from(n);
                }
            }
            reads = (reads.0.min(neg), reads.1.max(pos));
        }
        Self {
            words,
            stride,
            planes,
            min,
            data,
            counts,
            starts,
            reads,
        }
    }
}

/// Appends the counts of `0 .. 2^planes` among `values` (each below
/// `2^planes`) to `counts`, through four interleaved histograms in `scratch`
/// (consecutive equal values would otherwise wait on each other's
/// increments), indexed by the byte itself so no index is bounds-checked.
#[inline(always)]
fn histogram(values: &[u8], planes: usize, scratch: &mut [[u32; 256]; 4], counts: &mut Vec<u32>) {
    let nv = 1usize << planes;
    debug_assert!(
        values.iter().all(|&x| usize::from(x) < nv),
        "a value past the planes"
    );
    for h in scratch.iter_mut() {
        h[..nv].fill(0);
    }
    let quads = values.chunks_exact(4);
    for (t, &x) in quads.remainder().iter().enumerate() {
        scratch[t][usize::from(x)] += 1;
    }
    for q in quads {
        for (h, &x) in scratch.iter_mut().zip(q) {
            h[usize::from(x)] += 1;
        }
    }
    counts.extend((0..nv).map(|i| scratch.iter().map(|h| h[i]).sum::<u32>()));
}

/// One level of [`LevelPlanes::column_sums_and_magnitudes`]' sums, added
/// from the highest level down: each lane doubled, plus the rows of `xb` set
/// in the level's `G+` plane `p` (low 32 bits) and `G-` plane `q` (high).
#[inline(always)]
fn double_and_add(
    lanes: &mut [u64; PLANE_BLOCK],
    xb: &[u64; PLANE_BLOCK],
    p: &[u64; PLANE_BLOCK],
    q: &[u64; PLANE_BLOCK],
) {
    for k in 0..PLANE_BLOCK {
        lanes[k] = 2 * lanes[k]
            + (u64::from((xb[k] & p[k]).count_ones())
                | (u64::from((xb[k] & q[k]).count_ones()) << 32));
    }
}

/// `dst[j * stride + i] = src[i * cols + j]` for the `rows x cols` bytes of
/// `src`: 8 x 8 blocks transposed in registers (three rounds of masked
/// swaps), eight neighbouring blocks at once where 64 columns remain (one
/// 64-byte load per row, the swaps on eight lanes, so they vectorise), the
/// edges byte by byte.
#[inline(always)]
pub(crate) fn transpose_bytes(src: &[u8], rows: usize, cols: usize, dst: &mut [u8], stride: usize) {
    let (r8, c8, c64) = (rows / 8 * 8, cols / 8 * 8, cols / 64 * 64);
    // Down the source's rows within each 64 columns: the 64 destination rows
    // fill in order, each line completed while it is in cache.
    for j0 in (0..c64).step_by(64) {
        for i0 in (0..r8).step_by(8) {
            transpose_blocks::<8>(src, cols, (i0, j0), dst, stride);
        }
    }
    for j0 in (c64..c8).step_by(8) {
        for i0 in (0..r8).step_by(8) {
            transpose_blocks::<1>(src, cols, (i0, j0), dst, stride);
        }
    }
    for i in 0..rows {
        let edge = if i < r8 { c8 } else { 0 };
        for j in edge..cols {
            dst[j * stride + i] = src[i * cols + j];
        }
    }
}

/// [`transpose_bytes`] of the `N` neighbouring 8 x 8 blocks whose first
/// element is `(i0, j0)`: lane `b` of `a[k]` holds row `k` of block `b`
/// (byte `j` of it is element `(k, j)`), and 1-, 2-, then 4-byte sub-blocks
/// are swapped across the diagonal in every lane.
#[inline(always)]
fn transpose_blocks<const N: usize>(
    src: &[u8],
    cols: usize,
    (i0, j0): (usize, usize),
    dst: &mut [u8],
    stride: usize,
) {
    let mut a = [[0u64; N]; 8];
    for (k, x) in a.iter_mut().enumerate() {
        let row = &src[(i0 + k) * cols + j0..][..8 * N];
        for (w, b) in x.iter_mut().zip(row.chunks_exact(8)) {
            *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
    }
    for (shift, mask, step) in [
        (8, 0x00FF_00FF_00FF_00FF_u64, 1),
        (16, 0x0000_FFFF_0000_FFFF, 2),
        (32, 0x0000_0000_FFFF_FFFF, 4),
    ] {
        // Rows `i` with bit `step` clear, against row `i + step` (a loop of
        // constant trip count, unrolled: the rows stay in registers).
        for i in 0..8 {
            if i & step == 0 {
                for b in 0..N {
                    let t = ((a[i][b] >> shift) ^ a[i + step][b]) & mask;
                    a[i + step][b] ^= t;
                    a[i][b] ^= t << shift;
                }
            }
        }
    }
    // One bounds check for all 8 N stores.
    let last = (j0 + 8 * N - 1) * stride + i0 + 8;
    let dst = &mut dst[..last];
    for b in 0..N {
        for (k, x) in a.iter().enumerate() {
            dst[(j0 + 8 * b + k) * stride + i0..][..8].copy_from_slice(&x[b].to_le_bytes());
        }
    }
}

/// Exact 1-bit column reads of an ideal crossbar
/// ([`ProgrammedCrossbar::exact_bits`]).
#[derive(Debug, Clone, Copy)]
pub struct ExactBits<'a> {
    planes: &'a DiffPlanes,
}

impl ExactBits<'_> {
    /// Words per row bitset that [`Self::column_sums`] reads
    /// ([`ProgrammedCrossbar::row_bit_words`] of the used rows).
    #[must_use]
    pub fn words(&self) -> usize {
        self.planes.words
    }

    /// The most negative and the most positive 1-bit read of any column, over
    /// every input: every column's [`Self::safe_rows`] is `u32::MAX` exactly
    /// when these lie strictly between `above` and `below`.
    #[must_use]
    pub fn read_bounds(&self) -> (i64, i64) {
        self.planes.reads
    }

    /// The most active rows `k` for which every 1-bit read of column `col`
    /// lies strictly between `above` and `below`, whichever `k` rows are
    /// active: the `k` largest differences sum below `below` and the `k`
    /// smallest above `above` (needs `above < 0 < below`). A read with at most
    /// that many bits set needs no popcounts to know it is in a range.
    #[must_use]
    pub fn safe_rows(&self, col: usize, below: i32, above: i32) -> u32 {
        let p = self.planes;
        let counts = &p.counts[p.starts[col]..p.starts[col + 1]];
        let min = p.min[col];
        // Rows taken from the largest positive (or most negative) difference on
        // while the partial sum stays inside the bound.
        let take = |values: &mut dyn Iterator<Item = (i32, u32)>, room: i64| -> u32 {
            let (mut k, mut sum) = (0u32, 0i64);
            // `values` holds non-zero differences only.
            for (d, n) in values {
                let d = i64::from(d.unsigned_abs());
                let fit = u32::try_from(((room - sum) / d).max(0)).unwrap_or(u32::MAX);
                if fit < n {
                    return k + fit;
                }
                k += n;
                sum += d * i64::from(n);
            }
            u32::MAX
        };
        let value = |i: usize| min + i32::try_from(i).unwrap_or(i32::MAX);
        let mut pos = (0..counts.len())
            .rev()
            .map(|i| (value(i), counts[i]))
            .take_while(|&(d, _)| d > 0);
        let mut neg = (0..counts.len())
            .map(|i| (value(i), counts[i]))
            .take_while(|&(d, _)| d < 0);
        let kp = take(&mut pos, i64::from(below) - 1);
        let kn = take(&mut neg, -i64::from(above) - 1);
        kp.min(kn)
    }

    /// `out[t] = sum_r bit_r(x_t) (G+ - G-)[r][col]` for the row bitsets
    /// `x_t = bits[t * words .. (t + 1) * words]` (`words` = [`Self::words`],
    /// bits past the used rows zero), `ones[t]` their set bits: a column's
    /// reads under several input bits, exact. Each read is `min * ones[t]`
    /// plus the popcounts of `x_t` with the column's planes of `d - min`.
    ///
    /// # Panics
    /// In debug builds, if `ones[t]` is not the popcount of `x_t`.
    #[inline(always)]
    pub fn column_sums(&self, col: usize, bits: &[u64], ones: &[u32], out: &mut [i32]) {
        let p = self.planes;
        let (n, min) = (p.planes[col], i64::from(p.min[col]));
        let u = &p.data[col * p.stride * p.words..][..n * p.words];
        debug_assert!(
            bits.chunks_exact(p.words).zip(ones).all(|(x, &k)| x
                .iter()
                .map(|w| w.count_ones())
                .sum::<u32>()
                == k),
            "ones are the bitsets' popcounts"
        );
        // |sum| <= rows x 30, far below 2^31.
        #[allow(clippy::cast_possible_truncation)]
        if p.words == 1 {
            // One word (at most 64 rows): scalar popcounts.
            for ((o, &x), &k) in out.iter_mut().zip(bits).zip(ones) {
                let mut s = min * i64::from(k);
                for (l, &w) in u.iter().enumerate() {
                    s += i64::from((x & w).count_ones()) << l;
                }
                *o = s as i32;
            }
        } else if p.words == PLANE_BLOCK {
            // One block (65 to 512 rows): each bitset's block in registers,
            // the planes from the highest, doubling the lanes between them
            // (an add, where a shift by `l` moves `l` into a vector register
            // first), with no index to check.
            let (planes, _) = u.as_chunks::<PLANE_BLOCK>();
            let (xs, _) = bits.as_chunks::<PLANE_BLOCK>();
            for ((o, x), &k) in out.iter_mut().zip(xs).zip(ones) {
                let mut lanes = [0u64; PLANE_BLOCK];
                for w in planes.iter().rev() {
                    for j in 0..PLANE_BLOCK {
                        lanes[j] = 2 * lanes[j] + u64::from((x[j] & w[j]).count_ones());
                    }
                }
                *o = (min * i64::from(k) + lanes.iter().sum::<u64>().cast_signed()) as i32;
            }
        } else {
            // Indexed, not `chunks_exact(words)`: that divides by `words`
            // (a 64-bit division per read).
            let words = p.words;
            for (t, (o, &k)) in out.iter_mut().zip(ones).enumerate() {
                let x = &bits[t * words..][..words];
                // Per-lane sums over 512-bit blocks; one reduction per bitset.
                let mut lanes = [0i64; PLANE_BLOCK];
                for bi in 0..words / PLANE_BLOCK {
                    let xb: &[u64; PLANE_BLOCK] = x[bi * PLANE_BLOCK..][..PLANE_BLOCK]
                        .try_into()
                        .expect("whole blocks");
                    for l in 0..n {
                        let w: &[u64; PLANE_BLOCK] = u[l * words + bi * PLANE_BLOCK..]
                            [..PLANE_BLOCK]
                            .try_into()
                            .expect("whole blocks");
                        for k in 0..PLANE_BLOCK {
                            lanes[k] += i64::from((xb[k] & w[k]).count_ones()) << l;
                        }
                    }
                }
                *o = (min * i64::from(k) + lanes.iter().sum::<i64>()) as i32;
            }
        }
    }
}

/// `values` summed in order as `f64` (`values.iter().map(f64::from).sum()`),
/// bit for bit: [`exact_sum`] where it applies, else that sum itself.
fn sequential_sum(values: &[f32]) -> f64 {
    exact_sum(values).unwrap_or_else(|| values.iter().map(|&g| f64::from(g)).sum::<f64>())
}

/// The sum of `values` as `f64` when every partial sum, in any order, is
/// exact, without the in-order sum's latency chain: each non-zero `f32` is
/// an integer multiple of its `ulp`, so all of them are multiples of the
/// smallest, `q`; while `n max|v| < 2^53 q` every partial sum is such a
/// multiple below `2^53 q`, an `f64` exactly, and the in-order sum is the
/// exact sum that eight interleaved accumulators give too. `None` otherwise,
/// for a non-finite value, and for a zero total (whose sign the order
/// decides).
fn exact_sum(values: &[f32]) -> Option<f64> {
    // Fewer values than this: a product `n max|v|` exact in `f64`.
    if values.len() >= 1 << 29 {
        return None;
    }
    // Eight lanes of each: a fixed shape the compiler vectorises. A NaN or
    // an infinity makes the total non-finite.
    let (mut acc, mut his, mut los) = ([0f64; 8], [0f32; 8], [f32::INFINITY; 8]);
    let mut lane = |j: usize, g: f32| {
        acc[j] += f64::from(g);
        let a = g.abs();
        his[j] = if a > his[j] { a } else { his[j] };
        // Zeros kept out of the smallest magnitude.
        let a = if a == 0.0 { f32::INFINITY } else { a };
        los[j] = if a < los[j] { a } else { los[j] };
    };
    let blocks = values.chunks_exact(8);
    for (j, &g) in blocks.remainder().iter().enumerate() {
        lane(j, g);
    }
    for block in blocks {
        for (j, &g) in block.iter().enumerate() {
            lane(j, g);
        }
    }
    let total = acc.iter().sum::<f64>();
    let (hi, lo) = (
        his.into_iter().fold(0f32, f32::max),
        los.into_iter().fold(f32::INFINITY, f32::min),
    );
    if !total.is_finite() || lo == f32::INFINITY {
        return None;
    }
    // The ulp of the smallest magnitude's binade: `2^(field - 150)`.
    let q_exp = i32::try_from((lo.to_bits() >> 23).max(1)).expect("an exponent field") - 150;
    #[allow(clippy::cast_precision_loss)]
    let bound = values.len() as f64 * f64::from(hi);
    if bound >= 2f64.powi(53 + q_exp) {
        return None;
    }
    (total != 0.0).then_some(total)
}

/// Whether every conductance is an integer level in `[-max, max]` (what
/// [`LevelPlanes::new`] requires). The casts are exact in range (levels <
/// 2^16) and a NaN fails; no `trunc`, a library call on the baseline target.
fn levels_integral(geometry: CrossbarGeometry, g: &Array2<f32>) -> bool {
    let max = f32::from(geometry.max_level());
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let ok = |g: f32| g.abs() <= max && (g as i32) as f32 == g;
    match g.as_slice() {
        // Branch-free within blocks (`fold` with `&`: no early exit to
        // vectorise around); programmed conductances fail in the first.
        Some(s) => s
            .chunks(1024)
            .all(|b| b.iter().fold(true, |a, &g| a & ok(g))),
        None => g.iter().all(|&g| ok(g)),
    }
}

/// The integer `d` holds, for integral `|d| < 2^22` (levels): adding
/// `1.5 x 2^23` puts it in the low mantissa bits, read back as an integer.
/// Exact in that range (other values give an unspecified integer, never a
/// panic), and unlike the saturating `as i32` it vectorises on every target.
#[inline(always)]
fn small_int(d: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    // Two's complement: the mantissa's offset from `MAGIC`'s is the integer.
    #[allow(clippy::cast_possible_wrap)]
    let v = (d + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    v
}

/// Integer levels (row-major `rows x cols` bytes) packed for
/// [`PackedLevels::column_sums`]; `None` beyond its range.
#[inline(always)]
fn pack_ints(levels: &[i8], rows: usize, cols: usize) -> Option<PackedLevels> {
    PackedLevels::from_row_major(levels, rows, cols)
}

/// `a` transposed, in standard layout, copied in 16 x 16 tiles (an
/// element-wise strided copy misses the cache on every read).
fn transposed(a: &Array2<f32>) -> Array2<f32> {
    const T: usize = 16;
    let (r, c) = a.dim();
    let a = a.as_standard_layout();
    let src = a.as_slice().expect("standard layout");
    let mut out = vec![0f32; r * c];
    for i0 in (0..r).step_by(T) {
        for j0 in (0..c).step_by(T) {
            for i in i0..(i0 + T).min(r) {
                for j in j0..(j0 + T).min(c) {
                    out[j * r + i] = src[i * c + j];
                }
            }
        }
    }
    Array2::from_shape_vec((c, r), out).expect("shape")
}

/// Vectors per block of [`narrow_lanes`].
const LANES: usize = 16;

/// [`product`]'s narrow case (`C` columns, fewer than 8) for [`LANES`]
/// vectors at once, one per lane: per row, each lane's pulse times the row's
/// conductances added to its column sums, in row order from zero. The same
/// values as the loop over one vector's non-zero pulses: a zero pulse adds
/// `+-0.0`, which changes no sum (a sum that starts at `+0.0` and adds finite
/// products in round-to-nearest is never `-0.0`); a separate multiply and
/// add each (no fused multiply-add), as there.
#[inline(always)]
fn narrow_lanes<const C: usize>(p: &[f32], g: &[f32], out: &mut [f32]) {
    let r = p.len() / LANES;
    let mut acc = [[0f32; LANES]; C];
    for (k, grow) in g.chunks_exact(C).enumerate().take(r) {
        let mut pk = [0f32; LANES];
        for (l, x) in pk.iter_mut().enumerate() {
            *x = p[l * r + k];
        }
        for (a, &w) in acc.iter_mut().zip(grow) {
            for (y, &x) in a.iter_mut().zip(&pk) {
                *y += x * w;
            }
        }
    }
    for (l, orow) in out.chunks_exact_mut(C).enumerate() {
        for (o, a) in orow.iter_mut().zip(&acc) {
            *o = a[l];
        }
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
                // A few columns (depthwise groups): sixteen vectors at a
                // time, one per lane ([`narrow_lanes`]), then the rest in
                // plain loops, skipping zero pulses.
                let whole = p.len() / r / LANES * LANES;
                let (p16, p_rest) = p.split_at(whole * r);
                let (o16, o_rest) = o.split_at_mut(whole * c);
                for (pb, ob) in p16
                    .chunks_exact(LANES * r)
                    .zip(o16.chunks_exact_mut(LANES * c))
                {
                    match c {
                        1 => narrow_lanes::<1>(pb, g, ob),
                        2 => narrow_lanes::<2>(pb, g, ob),
                        3 => narrow_lanes::<3>(pb, g, ob),
                        4 => narrow_lanes::<4>(pb, g, ob),
                        5 => narrow_lanes::<5>(pb, g, ob),
                        6 => narrow_lanes::<6>(pb, g, ob),
                        _ => narrow_lanes::<7>(pb, g, ob),
                    }
                }
                for (prow, orow) in p_rest.chunks_exact(r).zip(o_rest.chunks_exact_mut(c)) {
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
            // The non-zero pulses listed branch-free: every row written, the
            // count advanced by whether it is non-zero (zeros are common and
            // unpredictable in the low input slices).
            let mut slots: Vec<(f32, usize)> = vec![(0.0, 0); r];
            for (prow, orow) in p.chunks_exact(r).zip(o.chunks_exact_mut(c)) {
                let mut n = 0;
                for (k, &v) in prow.iter().enumerate() {
                    slots[n] = (v, k * c);
                    n += usize::from(v != 0.0);
                }
                let nz = &slots[..n];
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

    /// A `b x r` batch of pulses: `u` uniform in `0..32`, zero below `zero_below`
    /// (at least 16), else `u - 16`.
    fn random_pulses(
        rng: &mut Xoshiro256PlusPlus,
        (b, r): (usize, usize),
        zero_below: u32,
    ) -> Array2<f32> {
        Array2::from_shape_fn((b, r), |_| {
            let u: u32 = rng.random_range(0..32);
            if u < zero_below { 0.0 } else { (u - 16) as f32 }
        })
    }

    /// The sparse product equals the dense GEMM: exactly on integer levels,
    /// to rounding on real-valued (programmed) ones; both column-count paths.
    #[test]
    fn sparse_product_equals_the_dense_gemm() {
        let mut rng = stream_rng(5, &[]);
        for &(b, r, c) in &[(7, 9, 3), (33, 40, 8), (50, 130, 21), (3, 1, 1)] {
            // Pulses 0..15, zero half the time; integer levels -15..15.
            let p = random_pulses(&mut rng, (b, r), 16);
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

    /// On real-valued conductances the product adds, per column, the non-zero
    /// pulses' rows four at a time (`(a0 w0 + a1 w1) + (a2 w2 + a3 w3)`),
    /// then the rest one by one, from zero (8 columns and more; fewer, one
    /// by one): the order programmed devices' results depend on, bit for bit.
    #[test]
    fn sparse_product_adds_in_the_stated_order() {
        let mut rng = stream_rng(6, &[]);
        // Narrow cases of 16 vectors and more run sixteen at a time; with
        // small integer conductances their sums cancel to zero often (they
        // must come out `+0.0`, as the one-vector loop's do).
        let cases = [
            (6, 40, 5, false),
            (5, 70, 8, false),
            (4, 130, 21, false),
            (3, 150, 510, false),
            (37, 9, 3, false),
            (16, 25, 1, false),
            (50, 9, 7, false),
            (35, 9, 2, true),
            (70, 4, 4, true),
        ];
        for &(b, r, c, small) in &cases {
            let p = random_pulses(&mut rng, (b, r), 20);
            let g = Array2::from_shape_fn((r, c), |_| {
                if small {
                    rng.random_range(-2i32..=2) as f32
                } else {
                    rng.random::<f32>() * 30.0 - 15.0
                }
            });
            let mut got = Array2::<f32>::from_elem((b, c), f32::NAN);
            product(p.view(), &g, got.view_mut());
            for v in 0..b {
                let nz: Vec<usize> = (0..r).filter(|&k| p[[v, k]] != 0.0).collect();
                for j in 0..c {
                    let t = |k: usize| p[[v, k]] * g[[k, j]];
                    let mut y = 0f32;
                    let quads = if c < 8 { 0 } else { nz.len() / 4 * 4 };
                    for q in nz[..quads].chunks_exact(4) {
                        y += (t(q[0]) + t(q[1])) + (t(q[2]) + t(q[3]));
                    }
                    for &k in &nz[quads..] {
                        y += t(k);
                    }
                    assert_eq!(got[[v, j]].to_bits(), y.to_bits(), "{b}x{r}x{c} [{v}, {j}]");
                }
            }
        }
    }

    /// `n` random row sets of `rows` rows (each row active with probability
    /// `1 / one_in`) and their bitsets, [`ProgrammedCrossbar::row_bit_words`]
    /// words each, consecutive.
    fn random_bitsets(
        rng: &mut Xoshiro256PlusPlus,
        n: usize,
        rows: usize,
        one_in: u32,
    ) -> (Vec<Vec<bool>>, Vec<u64>) {
        let words = ProgrammedCrossbar::row_bit_words(rows);
        let active: Vec<Vec<bool>> = (0..n)
            .map(|_| {
                (0..rows)
                    .map(|_| rng.random_range(0..one_in) == 0)
                    .collect()
            })
            .collect();
        let mut bits = vec![0u64; n * words];
        for (t, a) in active.iter().enumerate() {
            for r in (0..rows).filter(|&r| a[r]) {
                bits[t * words + r / 64] |= 1 << (r % 64);
            }
        }
        (active, bits)
    }

    /// An ideally programmed 2T2R crossbar (4-bit devices) holding signed
    /// levels (`rows x cols`, row-major) as `G+ - G-`.
    fn ideal_crossbar(rows: usize, cols: usize, levels: &[i32]) -> ProgrammedCrossbar {
        let g = CrossbarGeometry::new(rows, cols, CellKind::TwoT2R, 4).unwrap();
        let device = |l: i32| u8::try_from(l.max(0)).unwrap();
        let pos = levels.iter().map(|&l| device(l)).collect();
        let neg = levels.iter().map(|&l| device(-l)).collect();
        Crossbar::new(g, rows, cols, pos, Some(neg))
            .unwrap()
            .program(None, &mut stream_rng(0, &[]))
    }

    /// Ideal programming keeps the levels as bytes and builds every integer
    /// layout from them; the same crossbar given as `f32` matrices builds
    /// them from the matrices. Both give the same reads, sums and matrices,
    /// on 2T2R (compiled pairs with one device at 0, and free pairs whose
    /// sums pass the maximum: no integer layouts) and 1T1R, one word to
    /// several blocks of rows.
    #[test]
    fn integer_levels_and_matrices_build_the_same_crossbar() {
        let mut rng = stream_rng(11, &[]);
        for (case, &(rows, cols, cell, free)) in [
            (3, 2, CellKind::TwoT2R, false),
            (70, 9, CellKind::TwoT2R, false),
            (600, 40, CellKind::TwoT2R, false),
            (70, 9, CellKind::TwoT2R, true),
            (130, 17, CellKind::OneT1R, false),
        ]
        .iter()
        .enumerate()
        {
            let g = CrossbarGeometry::new(rows.max(64), cols.max(8), cell, 4).unwrap();
            let n = rows * cols;
            let mut pos: Vec<u8> = (0..n).map(|_| rng.random_range(0..16)).collect();
            let neg: Vec<u8> = (0..n)
                .map(|i| match (cell, free) {
                    (CellKind::OneT1R, _) => 0,
                    (_, true) => rng.random_range(0..16),
                    // Compiled pairs: one device at 0.
                    (_, false) if rng.random_range(0..2) == 0 => {
                        let q = pos[i];
                        pos[i] = 0;
                        q
                    }
                    _ => 0,
                })
                .collect();
            let two = cell == CellKind::TwoT2R;
            let xb = Crossbar::new(g, rows, cols, pos.clone(), two.then(|| neg.clone())).unwrap();
            let a = xb.program(None, &mut stream_rng(0, &[]));
            let d: Vec<f32> = pos
                .iter()
                .zip(&neg)
                .map(|(&p, &q)| f32::from(p) - f32::from(q))
                .collect();
            let m: Vec<f32> = pos
                .iter()
                .zip(&neg)
                .map(|(&p, &q)| f32::from(p) + f32::from(q))
                .collect();
            let shape = |v| Array2::from_shape_vec((rows, cols), v).unwrap();
            let b = ProgrammedCrossbar::from_matrices(g, shape(d), shape(m), 0);
            assert_eq!(a.is_ideal(), !free, "case {case}");
            assert_eq!(b.is_ideal(), !free, "case {case}");
            assert_eq!(a.diff(), b.diff(), "case {case}");
            assert_eq!(a.magnitude(), b.magnitude(), "case {case}");
            assert_eq!(a.row_magnitudes(), b.row_magnitudes(), "case {case}");
            assert_eq!(
                a.level_sum().to_bits(),
                b.level_sum().to_bits(),
                "case {case}"
            );
            assert_eq!(a.exact_bits().is_some(), !free, "case {case}");
            if !free {
                let stride = a.pulse_stride();
                let pulses: Vec<u8> = (0..3 * stride)
                    .map(|i| {
                        if i % stride < rows {
                            rng.random_range(0..16)
                        } else {
                            0
                        }
                    })
                    .collect();
                // The plain sums over the devices' levels.
                let plain = |v: usize, c: usize, sign: i32| -> i32 {
                    (0..rows)
                        .map(|r| {
                            let (p, q) =
                                (i32::from(pos[r * cols + c]), i32::from(neg[r * cols + c]));
                            i32::from(pulses[v * stride + r]) * (p + sign * q)
                        })
                        .sum()
                };
                let (mut sa, mut sb) = (vec![0i32; 3 * cols], vec![0i32; 3 * cols]);
                a.column_sums_int(&pulses, &mut sa);
                b.column_sums_int(&pulses, &mut sb);
                assert_eq!(sa, sb, "case {case}");
                for (i, &x) in sa.iter().enumerate() {
                    assert_eq!(x, plain(i / cols, i % cols, -1), "case {case} sum {i}");
                }
                a.column_magnitudes_int(&pulses, &mut sa);
                b.column_magnitudes_int(&pulses, &mut sb);
                assert_eq!(sa, sb, "case {case}");
                for (i, &x) in sa.iter().enumerate() {
                    assert_eq!(x, plain(i / cols, i % cols, 1), "case {case} magnitude {i}");
                }
                let (ea, eb) = (a.exact_bits().unwrap(), b.exact_bits().unwrap());
                assert_eq!(ea.read_bounds(), eb.read_bounds(), "case {case}");
                let (active, bits) = random_bitsets(&mut rng, 1, rows, 3);
                let ones: u32 = bits.iter().map(|w| w.count_ones()).sum();
                for c in 0..cols {
                    let (mut ra, mut rb) = ([0i32], [0i32]);
                    ea.column_sums(c, &bits, &[ones], &mut ra);
                    eb.column_sums(c, &bits, &[ones], &mut rb);
                    assert_eq!(ra, rb, "case {case} column {c}");
                    let want: i32 = (0..rows)
                        .filter(|&r| active[0][r])
                        .map(|r| i32::from(pos[r * cols + c]) - i32::from(neg[r * cols + c]))
                        .sum();
                    assert_eq!(ra[0], want, "case {case} column {c}");
                }
            }
            let (active, bits) = random_bitsets(&mut rng, 1, rows, 3);
            for c in 0..cols {
                let (x, y) = (
                    a.column_sum_and_magnitude_bits(c, &bits),
                    b.column_sum_and_magnitude_bits(c, &bits),
                );
                assert_eq!(x, y, "case {case} column {c}");
                let level = |r: usize| (f32::from(pos[r * cols + c]), f32::from(neg[r * cols + c]));
                let want = (0..rows)
                    .filter(|&r| active[0][r])
                    .fold((0f32, 0f32), |(s, m), r| {
                        let (p, q) = level(r);
                        (s + (p - q), m + (p + q))
                    });
                assert_eq!(x, want, "case {case} column {c}");
            }
        }
    }

    /// `small_int` reads every integer of its range exactly.
    #[test]
    fn build_helpers_are_exact() {
        for v in (-(1i32 << 22)..(1 << 22))
            .step_by(997)
            .chain([-1, 0, 1, 255, -255])
        {
            #[allow(clippy::cast_precision_loss)]
            let f = v as f32;
            assert_eq!(small_int(f), v);
        }
    }

    /// `transpose_bytes` on every shape up to 19 x 19 (whole 8 x 8 blocks
    /// and edges), into a padded stride; `from_columns` equals `new` on the
    /// transposed levels.
    #[test]
    fn byte_transposes_are_exact() {
        // Every shape up to 19 x 19, and wide ones that take the eight-block
        // path (64 columns and more) with and without edges.
        let shapes = (0..20).flat_map(|r| (0..20).map(move |c| (r, c))).chain(
            [0, 7, 8, 9, 16, 17, 23].into_iter().flat_map(|r| {
                [63, 64, 65, 72, 127, 128, 136, 200]
                    .into_iter()
                    .map(move |c| (r, c))
            }),
        );
        for (rows, cols) in shapes {
            #[allow(clippy::cast_possible_truncation)]
            let src: Vec<u8> = (0..rows * cols).map(|i| (i * 7 + 3) as u8).collect();
            let stride = rows + 3;
            let mut dst = vec![0u8; cols * stride];
            transpose_bytes(&src, rows, cols, &mut dst, stride);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(dst[j * stride + i], src[i * cols + j], "{rows}x{cols}");
                }
            }
        }
        let g = CrossbarGeometry::new(16, 16, CellKind::TwoT2R, 4).unwrap();
        let (r, c) = (11, 13);
        #[allow(clippy::cast_possible_truncation)]
        let pos: Vec<u8> = (0..r * c).map(|i| (i % 16) as u8).collect();
        #[allow(clippy::cast_possible_truncation)]
        let neg: Vec<u8> = (0..r * c).map(|i| ((i * 5) % 16) as u8).collect();
        let t = |v: &[u8]| -> Vec<u8> { (0..c * r).map(|k| v[(k % r) * c + k / r]).collect() };
        let a = Crossbar::new(g, r, c, pos.clone(), Some(neg.clone())).unwrap();
        let b = Crossbar::from_columns(g, r, c, &t(&pos), Some(&t(&neg))).unwrap();
        assert_eq!(a, b);
        assert!(Crossbar::from_columns(g, r, c, &pos[1..], None).is_err());
    }

    /// Several 1-bit reads of a column at once ([`ExactBits::column_sums`])
    /// equal the plain sums: one-word and multi-block row counts; signed,
    /// non-negative (one device used), constant and all-zero columns.
    #[test]
    fn exact_bit_reads_equal_the_plain_sum() {
        let mut rng = stream_rng(11, &[]);
        for &(rows, cols) in &[
            (1usize, 2usize),
            (9, 6),
            (64, 5),
            (65, 4),
            (288, 6),
            (700, 3),
        ] {
            // Column c: random signed (c % 3 == 0), non-negative (1), constant (2);
            // the last column all zero.
            let level = |rng: &mut Xoshiro256PlusPlus, c: usize| match c % 3 {
                _ if c == cols - 1 => 0,
                0 => rng.random_range(-15..=15),
                1 => rng.random_range(0..=9),
                _ => -3,
            };
            let levels: Vec<i32> = (0..rows * cols)
                .map(|i| level(&mut rng, i % cols))
                .collect();
            let p = ideal_crossbar(rows, cols, &levels);
            let reader = p.exact_bits().expect("ideal programming");
            let words = reader.words();
            assert_eq!(words, ProgrammedCrossbar::row_bit_words(rows));
            let n = 3;
            let (active, bits) = random_bitsets(&mut rng, n, rows, 2);
            for c in 0..cols {
                let mut got = vec![i32::MIN; n];
                let ones: Vec<u32> = bits
                    .chunks_exact(words)
                    .map(|x| x.iter().map(|w| w.count_ones()).sum())
                    .collect();
                reader.column_sums(c, &bits, &ones, &mut got);
                for (t, a) in active.iter().enumerate() {
                    let want: i32 = (0..rows)
                        .filter(|&r| a[r])
                        .map(|r| levels[r * cols + c])
                        .sum();
                    assert_eq!(got[t], want, "{rows} rows, column {c}, bit {t}");
                }
            }
        }
    }

    /// The level planes' reads of several bitsets at once equal each
    /// bitset's plain sums of `G+ - G-` and `G+ + G-` (both devices of a
    /// pair programmed, their levels summing to at most 15), at every row count
    /// the planes' layout distinguishes and for 1 to 8 bitsets.
    #[test]
    fn level_plane_reads_of_several_bitsets_equal_the_plain_sums() {
        let mut rng = stream_rng(13, &[]);
        for &(rows, cols) in &[
            (1usize, 2usize),
            (9, 5),
            (64, 3),
            (65, 4),
            (288, 5),
            (512, 2),
            (700, 3),
            (1100, 2),
        ] {
            let g = CrossbarGeometry::new(rows, cols, CellKind::TwoT2R, 4).unwrap();
            let pos: Vec<u8> = (0..rows * cols).map(|_| rng.random_range(0..=9)).collect();
            // Column 1's negative devices all off: narrower planes than the rest.
            let neg: Vec<u8> = (0..rows * cols)
                .map(|i| {
                    if i % cols == 1 {
                        0
                    } else {
                        rng.random_range(0..=6)
                    }
                })
                .collect();
            let p = Crossbar::new(g, rows, cols, pos.clone(), Some(neg.clone()))
                .unwrap()
                .program(None, &mut stream_rng(0, &[]));
            let words = ProgrammedCrossbar::row_bit_words(rows);
            for n in [1usize, 3, 8] {
                let (active, bits) = random_bitsets(&mut rng, n, rows, 3);
                for c in 0..cols {
                    let mut got = vec![(i32::MIN, i32::MIN); n];
                    p.column_sums_and_magnitudes_bits_int(c, &bits, &mut got);
                    for (t, a) in active.iter().enumerate() {
                        let (sp, sn) =
                            (0..rows).filter(|&r| a[r]).fold((0i32, 0i32), |(x, y), r| {
                                (
                                    x + i32::from(pos[r * cols + c]),
                                    y + i32::from(neg[r * cols + c]),
                                )
                            });
                        assert_eq!(
                            got[t],
                            (sp - sn, sp + sn),
                            "{rows} rows, column {c}, bitset {t} of {n}"
                        );
                        #[allow(clippy::cast_precision_loss)]
                        let got_f = (got[t].0 as f32, got[t].1 as f32);
                        let one = p.column_sum_and_magnitude_bits(c, &bits[t * words..][..words]);
                        assert_eq!(
                            got_f, one,
                            "{rows} rows, column {c}, bitset {t}: one at a time"
                        );
                    }
                }
            }
        }
    }

    /// The squares' 1-bit reads from their bit-planes equal the set rows'
    /// `f32` squares added in order, at every row count the planes' layout
    /// distinguishes; squares past a byte keep the ordered sum.
    #[test]
    fn square_bits_from_planes_equal_the_ordered_sum() {
        let mut rng = stream_rng(31, &[]);
        for &(rows, cols, spread) in &[
            (9usize, 5usize, 15i32),
            (64, 4, 15),
            (65, 3, 11),
            (288, 6, 15),
            (700, 3, 15),
        ] {
            let levels: Vec<i32> = (0..rows * cols)
                .map(|_| rng.random_range(-spread..=spread))
                .collect();
            let p = ideal_crossbar(rows, cols, &levels);
            assert!(
                p.square_planes().is_some(),
                "one device per pair at most 15"
            );
            let words = ProgrammedCrossbar::row_bit_words(rows);
            for _ in 0..4 {
                let mut bits = vec![0u64; words];
                let active: Vec<usize> =
                    (0..rows).filter(|_| rng.random_range(0..3) == 0).collect();
                for &r in &active {
                    bits[r / 64] |= 1 << (r % 64);
                }
                for c in 0..cols {
                    let want = bits_dot(&bits, p.squares().1.row(c).to_slice().unwrap());
                    let exact: i32 = active.iter().map(|&r| levels[r * cols + c].pow(2)).sum();
                    let got = p.column_square_bits(c, &bits);
                    assert_eq!(got.to_bits(), want.to_bits(), "{rows} rows, column {c}");
                    #[allow(clippy::cast_precision_loss)]
                    let exact = exact as f32;
                    assert_eq!(got, exact, "{rows} rows, column {c}");
                }
            }
        }
        // Both devices of a pair programmed: squares up to 450, past a byte.
        let g = CrossbarGeometry::new(70, 2, CellKind::TwoT2R, 4).unwrap();
        let pos: Vec<u8> = (0..140).map(|i| u8::try_from(i % 16).unwrap()).collect();
        let neg: Vec<u8> = (0..140)
            .map(|i| u8::try_from((i * 7) % 16).unwrap())
            .collect();
        let p = Crossbar::new(g, 70, 2, pos, Some(neg))
            .unwrap()
            .program(None, &mut stream_rng(0, &[]));
        assert!(p.square_planes().is_none());
        let bits = vec![u64::MAX, 0b11_1111, 0, 0, 0, 0, 0, 0];
        let want = bits_dot(&bits, p.squares().1.row(1).to_slice().unwrap());
        assert_eq!(p.column_square_bits(1, &bits), want);
    }

    /// Integer squares ([`ProgrammedCrossbar::column_squares_int`], the low
    /// six bits and the rest in two products) equal the `f32` squares, and
    /// the limit is the largest column total; squares past a byte have none.
    #[test]
    fn integer_squares_equal_the_f32_squares() {
        let mut rng = stream_rng(32, &[]);
        for &(rows, cols, spread) in &[(9usize, 5usize, 7i32), (130, 20, 15), (288, 6, 15)] {
            let levels: Vec<i32> = (0..rows * cols)
                .map(|_| rng.random_range(-spread..=spread))
                .collect();
            let p = ideal_crossbar(rows, cols, &levels);
            let total = (0..cols)
                .map(|c| (0..rows).map(|r| levels[r * cols + c].pow(2)).sum::<i32>())
                .max()
                .unwrap();
            assert_eq!(p.squares_int_limit(), Some(u64::try_from(total).unwrap()));
            let stride = p.pulse_stride();
            let vectors = 7;
            let mut pulses = vec![0u8; vectors * stride];
            for v in 0..vectors {
                for r in 0..rows {
                    pulses[v * stride + r] = rng.random_range(0..16u8).pow(2);
                }
            }
            let mut got = vec![0i32; vectors * cols];
            p.column_squares_int(&pulses, &mut got);
            let pf =
                Array2::from_shape_fn((vectors, rows), |(v, r)| f32::from(pulses[v * stride + r]));
            let mut want = Array2::<f32>::zeros((vectors, cols));
            p.column_squares(pf.view(), want.view_mut());
            for (g, w) in got.iter().zip(&want) {
                #[allow(clippy::cast_precision_loss)]
                let g = *g as f32;
                assert_eq!(g, *w, "{rows} x {cols}");
            }
        }
        let g = CrossbarGeometry::new(8, 1, CellKind::TwoT2R, 4).unwrap();
        let p = Crossbar::new(g, 8, 1, vec![15; 8], Some(vec![15; 8]))
            .unwrap()
            .program(None, &mut stream_rng(0, &[]));
        assert_eq!(p.squares_int_limit(), None, "450 per cell");
    }

    /// [`ExactBits::safe_rows`] is sound (every read of at most that many
    /// rows lies inside the bounds) and tight (the worst `k + 1` rows leave).
    #[test]
    fn safe_rows_are_sound_and_tight() {
        let mut rng = stream_rng(12, &[]);
        for &(rows, spread) in &[(9usize, 15i32), (40, 3), (288, 7), (600, 15)] {
            let cols = 6;
            let levels: Vec<i32> = (0..rows * cols)
                .map(|i| match i % cols {
                    // Non-negative, non-positive, all zero, signed.
                    1 => rng.random_range(0..=spread),
                    2 => -rng.random_range(0..=spread),
                    3 => 0,
                    _ => rng.random_range(-spread..=spread),
                })
                .collect();
            let p = ideal_crossbar(rows, cols, &levels);
            let reader = p.exact_bits().unwrap();
            // The extreme reads: every negative, every positive difference.
            let (lo, hi) = reader.read_bounds();
            let levels_ref = &levels;
            let sums = |keep: fn(i32) -> bool| {
                (0..cols).map(move |c| {
                    (0..rows)
                        .map(|r| levels_ref[r * cols + c])
                        .filter(|&d| keep(d))
                        .map(i64::from)
                        .sum::<i64>()
                })
            };
            assert_eq!(lo, sums(|d| d < 0).min().unwrap_or(0), "{rows} rows");
            assert_eq!(hi, sums(|d| d > 0).max().unwrap_or(0), "{rows} rows");
            for &(below, above) in &[(64, -65), (64, -1), (8, -9), (9000, -9001)] {
                // Every column unbounded exactly when the extremes lie inside.
                assert_eq!(
                    (0..cols).all(|c| reader.safe_rows(c, below, above) == u32::MAX),
                    lo > i64::from(above) && hi < i64::from(below),
                    "{rows} rows, ({below}, {above})"
                );
                for c in 0..cols {
                    let col: Vec<i32> = (0..rows).map(|r| levels[r * cols + c]).collect();
                    let k = reader.safe_rows(c, below, above);
                    let inside = |s: i32| above < s && s < below;
                    // Sound: random sets of at most k rows.
                    let kmax = usize::try_from(k).unwrap_or(usize::MAX).min(rows);
                    for _ in 0..200 {
                        let n = rng.random_range(0..=kmax);
                        let mut idx: Vec<usize> = (0..rows).collect();
                        for i in 0..n {
                            let j = rng.random_range(i..rows);
                            idx.swap(i, j);
                        }
                        let s: i32 = idx[..n].iter().map(|&r| col[r]).sum();
                        assert!(inside(s), "{rows} rows col {c}: {n} <= {k} rows sum {s}");
                    }
                    // Tight: the k + 1 largest or smallest differences leave.
                    if kmax < rows {
                        let mut sorted = col.clone();
                        sorted.sort_unstable();
                        let low: i32 = sorted[..=kmax].iter().sum();
                        let high: i32 = sorted[rows - kmax - 1..].iter().sum();
                        assert!(
                            !inside(low) || !inside(high),
                            "{rows} rows col {c}: k = {k}"
                        );
                    } else {
                        assert_eq!(k, u32::MAX, "every row fits: unbounded");
                    }
                }
            }
        }
    }

    /// The level planes also hold cells whose two devices are both on (ideal,
    /// `G+ + G-` within a device's range) and one-device (1T1R) cells: sums
    /// and magnitudes under a 1-bit read equal the plain ones.
    #[test]
    fn level_planes_hold_both_devices_and_1t1r() {
        let mut rng = stream_rng(21, &[]);
        for &(rows, cols, cell) in &[
            (5usize, 3usize, CellKind::TwoT2R),
            (130, 9, CellKind::TwoT2R),
            (700, 4, CellKind::TwoT2R),
            (70, 5, CellKind::OneT1R),
        ] {
            let g = CrossbarGeometry::new(rows, cols, cell, 4).unwrap();
            let pos: Vec<u8> = (0..rows * cols).map(|_| rng.random_range(0..=15)).collect();
            let neg: Vec<u8> = match cell {
                CellKind::TwoT2R => pos.iter().map(|&p| rng.random_range(0..=15 - p)).collect(),
                CellKind::OneT1R => vec![0; rows * cols],
            };
            let p = Crossbar::new(g, rows, cols, pos.clone(), Some(neg.clone()))
                .unwrap()
                .program(None, &mut stream_rng(0, &[]));
            let mut bits = vec![0u64; ProgrammedCrossbar::row_bit_words(rows)];
            for r in (0..rows).filter(|_| rng.random_range(0..2) == 0) {
                bits[r / 64] |= 1 << (r % 64);
            }
            for c in 0..cols {
                let on = |r: usize| (bits[r / 64] >> (r % 64)) & 1 == 1;
                let (mut s, mut m) = (0i32, 0i32);
                for r in (0..rows).filter(|&r| on(r)) {
                    let (a, b) = (i32::from(pos[r * cols + c]), i32::from(neg[r * cols + c]));
                    (s, m) = (s + a - b, m + a + b);
                }
                #[allow(clippy::cast_precision_loss)]
                let want = (s as f32, m as f32);
                assert_eq!(
                    p.column_sum_and_magnitude_bits(c, &bits),
                    want,
                    "{rows} {cell:?}"
                );
            }
        }
    }

    /// 1-bit column sums from the level planes equal the plain sum, for row
    /// counts of one and several 512-row blocks, with unpadded and padded bitsets.
    #[test]
    fn bit_plane_sums_equal_the_plain_sum() {
        let mut rng = stream_rng(9, &[]);
        for &(rows, cols) in &[(5usize, 3usize), (100, 7), (512, 4), (700, 5)] {
            let levels: Vec<i32> = (0..rows * cols)
                .map(|_| rng.random_range(-15..=15))
                .collect();
            let p = ideal_crossbar(rows, cols, &levels);
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

    #[test]
    fn tiled_transpose_equals_the_view() {
        for (r, c) in [(1, 1), (3, 40), (17, 16), (33, 70), (512, 510)] {
            #[allow(clippy::cast_precision_loss)]
            let a = Array2::from_shape_fn((r, c), |(i, j)| (i * 1000 + j) as f32);
            assert_eq!(transposed(&a), a.t(), "{r} x {c}");
        }
    }

    /// `bit_rows_sum` gives every column the value of its single-column read,
    /// bit for bit, on programmed (real-valued) conductances, for sums,
    /// magnitudes and squares, partial last words included.
    #[test]
    fn bit_rows_sum_equals_the_column_reads() {
        // 21 columns: one block of 16 and five in memory; 300: two blocks of
        // 128, one of 32 and twelve; 510: three of 128, 64, 32, 16 and 14.
        for cols in [21, 300, 510] {
            bit_rows_sums_of(cols);
        }
    }

    fn bit_rows_sums_of(cols: usize) {
        let xb = levels_xbar(CellKind::TwoT2R, 150, cols);
        let noise = DeviceNoise::new(0.03, 0.0, 0.0).unwrap();
        let px = xb.program(Some(&noise), &mut stream_rng(8, &[]));
        assert!(!px.is_ideal());
        let mut rng = stream_rng(9, &[]);
        let words = ProgrammedCrossbar::row_bit_words(150);
        for density in [0.0f64, 0.02, 0.3, 0.9] {
            let mut bits = vec![0u64; words];
            for r in 0..150 {
                if rng.random::<f64>() < density {
                    bits[r / 64] |= 1 << (r % 64);
                }
            }
            // Every column is written, whatever `out` held.
            let mut out = vec![f32::NAN; cols];
            for (which, read) in [
                (
                    BitRows::Diff,
                    ProgrammedCrossbar::column_sum_bits as fn(&_, _, &_) -> f32,
                ),
                (
                    BitRows::Magnitude,
                    ProgrammedCrossbar::column_magnitude_bits,
                ),
                (BitRows::Squares, ProgrammedCrossbar::column_square_bits),
            ] {
                px.bit_rows_sum(which, &bits, &mut out);
                for (c, &o) in out.iter().enumerate() {
                    assert_eq!(
                        o.to_bits(),
                        read(&px, c, &bits).to_bits(),
                        "{which:?} col {c} of {cols}"
                    );
                }
            }
        }
    }

    /// Mean and standard deviation.
    fn mean_sd(x: &[f64]) -> (f64, f64) {
        #[allow(clippy::cast_precision_loss)]
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        (
            m,
            (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt(),
        )
    }

    /// A `rows x cols` crossbar whose cell `(r, c)` holds level `(7r + c) % 16`
    /// (4-bit devices): on 2T2R, on the positive device of even columns and
    /// the negative device of odd ones.
    fn levels_xbar(cell: CellKind, rows: usize, cols: usize) -> Crossbar {
        let g = CrossbarGeometry::new(rows, cols, cell, 4).unwrap();
        let level = |i: usize| u8::try_from((7 * (i / cols) + i % cols) % 16).unwrap();
        let n = rows * cols;
        let pos: Vec<u8> = (0..n)
            .map(|i| {
                if cell == CellKind::OneT1R || i % 2 == 0 {
                    level(i)
                } else {
                    0
                }
            })
            .collect();
        let neg = (cell == CellKind::TwoT2R).then(|| {
            (0..n)
                .map(|i| if i % 2 == 1 { level(i) } else { 0 })
                .collect()
        });
        Crossbar::new(g, rows, cols, pos, neg).unwrap()
    }

    /// Programmed conductances of the 1T1R cells at `level`.
    fn at_level(xb: &Crossbar, px: &ProgrammedCrossbar, level: u8) -> Vec<f64> {
        let mut out = Vec::new();
        for r in 0..xb.used_rows() {
            for c in 0..xb.used_cols() {
                if xb.levels(r, c).0 == level {
                    out.push(f64::from(px.diff()[[r, c]]));
                }
            }
        }
        out
    }

    #[test]
    fn a_finite_off_state_has_the_stated_statistics() {
        // ratio 16 on 4-bit devices: G_off = 15 / 15 = 1 level step.
        let xb = levels_xbar(CellKind::OneT1R, 256, 64);
        let noise = DeviceNoise::new(0.1, 0.0, 0.0)
            .unwrap()
            .with_on_off_ratio(16.0)
            .unwrap();
        assert!((noise.off_level(15) - 1.0).abs() < 1e-12);
        let px = xb.program(Some(&noise), &mut stream_rng(5, &[]));
        assert!((px.off_per_pulse() - 1.0).abs() < 1e-6);
        // Every level, OFF included, is target + G_off with relative sigma 0.1
        // (levels up to 10: far from the clamp at G_on = 16).
        for level in [0u8, 1, 5, 10] {
            let g = at_level(&xb, &px, level);
            let (m, sd) = mean_sd(&g);
            let want = f64::from(level) + 1.0;
            #[allow(clippy::cast_precision_loss)]
            let se = 0.1 * want / (g.len() as f64).sqrt();
            assert!((m - want).abs() < 5.0 * se, "level {level}: mean {m}");
            assert!(
                (sd / (0.1 * want) - 1.0).abs() < 0.1,
                "level {level}: sd {sd}"
            );
        }
        // 2T2R: the pair's OFF currents cancel on average; each device varies.
        let xb2 = levels_xbar(CellKind::TwoT2R, 256, 64);
        let px2 = xb2.program(Some(&noise), &mut stream_rng(5, &[]));
        assert_eq!(px2.off_per_pulse(), 0.0);
        let mut zero_diff = Vec::new();
        let mut zero_mag = Vec::new();
        for r in 0..256 {
            for c in 0..64 {
                if xb2.levels(r, c) == (0, 0) {
                    zero_diff.push(f64::from(px2.diff()[[r, c]]));
                    zero_mag.push(f64::from(px2.magnitude()[[r, c]]));
                }
            }
        }
        let (m, sd) = mean_sd(&zero_diff);
        assert!(m.abs() < 0.02, "{m}");
        assert!((sd / (0.1 * 2f64.sqrt()) - 1.0).abs() < 0.1, "{sd}");
        assert!((mean_sd(&zero_mag).0 - 2.0).abs() < 0.02);
        // Without variation, exactly target + G_off.
        let exact = DeviceNoise::default().with_on_off_ratio(16.0).unwrap();
        let px = xb.program(Some(&exact), &mut stream_rng(5, &[]));
        assert!(at_level(&xb, &px, 3).iter().all(|&g| g == 4.0));
    }

    #[test]
    fn an_exact_off_state_reads_the_integer_levels() {
        // Ratio 15 on 4-bit devices: G_off = 15 / 14, fractional.
        let off = DeviceNoise::default().with_on_off_ratio(15.0).unwrap();
        let xb = levels_xbar(CellKind::TwoT2R, 200, 48);
        let px = xb.program(Some(&off), &mut stream_rng(5, &[]));
        assert!(!px.is_integral());
        let c = xb.exact_off(&off, &px).expect("2T2R, OFF state alone");
        let ideal = xb.program(None, &mut stream_rng(5, &[]));
        assert!(c.is_ideal());
        // The ideal levels' differences, within a few ulps of the programmed ones.
        assert_eq!(c.diff(), ideal.diff());
        let err = (c.diff() - px.diff()).mapv(f32::abs);
        assert!(err.iter().all(|&e| e < 1e-5), "{}", err.sum());
        // The programmed activity: every device's OFF conductance counted.
        assert_eq!(c.row_magnitudes(), px.row_magnitudes());
        assert_eq!(c.level_sum().to_bits(), px.level_sum().to_bits());
        let g_off = 15.0 / 14.0;
        #[allow(clippy::cast_precision_loss)]
        let want = ideal.level_sum() + 2.0 * g_off * (200 * 48) as f64;
        assert!((px.level_sum() / want - 1.0).abs() < 1e-6);
        // 1T1R: the levels, and the OFF current per pulse the column carries.
        let xb1 = levels_xbar(CellKind::OneT1R, 200, 48);
        let px1 = xb1.program(Some(&off), &mut stream_rng(5, &[]));
        let c1 = xb1.exact_off(&off, &px1).expect("1T1R, OFF state alone");
        assert!(c1.is_ideal());
        assert_eq!(c1.diff(), xb1.program(None, &mut stream_rng(5, &[])).diff());
        assert_eq!(c1.off_per_pulse(), px1.off_per_pulse());
        assert!((f64::from(c1.off_per_pulse()) - g_off).abs() < 1e-6);
        assert_eq!(c1.level_sum().to_bits(), px1.level_sum().to_bits());
        // Not with any variation, nor without an OFF conductance.
        let varied = DeviceNoise::new(0.02, 0.0, 0.0)
            .unwrap()
            .with_on_off_ratio(15.0)
            .unwrap();
        let pv = xb.program(Some(&varied), &mut stream_rng(5, &[]));
        assert!(xb.exact_off(&varied, &pv).is_none());
        let adc_only =
            DeviceNoise::default().with_adc(crate::AdcVariation::new(0.5, 0.0, 0.0).unwrap());
        assert!(xb.exact_off(&adc_only, &ideal).is_none());
    }

    #[test]
    fn a_programming_table_sets_each_levels_error() {
        let mut text = String::from("level,sigma,mean\n");
        for l in 0..16 {
            text += &format!(
                "{l},{},{}\n",
                0.1 + 0.01 * f64::from(l),
                -0.02 * f64::from(l)
            );
        }
        let table = std::sync::Arc::new(crate::ProgrammingTable::parse(&text).unwrap());
        let noise = DeviceNoise::default().with_table(table);
        let xb = levels_xbar(CellKind::OneT1R, 256, 64);
        let px = xb.program(Some(&noise), &mut stream_rng(6, &[]));
        for level in [1u8, 4, 10] {
            let g = at_level(&xb, &px, level);
            let (m, sd) = mean_sd(&g);
            let l = f64::from(level);
            let (want_m, want_sd) = (l - 0.02 * l, 0.1 + 0.01 * l);
            #[allow(clippy::cast_precision_loss)]
            let se = want_sd / (g.len() as f64).sqrt();
            assert!((m - want_m).abs() < 5.0 * se, "level {level}: mean {m}");
            assert!((sd / want_sd - 1.0).abs() < 0.1, "level {level}: sd {sd}");
        }
    }

    #[test]
    fn drift_follows_the_power_law_and_compensation_restores_the_reference() {
        use crate::{Drift, DriftCompensation};
        let t = 20.0 * 1e4;
        let drift = Drift::new(0.06, 0.02, t, DriftCompensation::Global).unwrap();
        let noise = DeviceNoise::default().with_drift(drift);
        let xb = levels_xbar(CellKind::OneT1R, 256, 64);
        let px = xb.program(Some(&noise), &mut stream_rng(8, &[]));
        // nu = -ln(G(t) / G(t0)) / ln(t / t0), per device: N(0.06, 0.02).
        let mut nus = Vec::new();
        for r in 0..256 {
            for c in 0..64 {
                let level = xb.levels(r, c).0;
                if level > 0 {
                    let g = f64::from(px.diff()[[r, c]]);
                    nus.push(-(g / f64::from(level)).ln() / 1e4f64.ln());
                }
            }
        }
        let (m, sd) = mean_sd(&nus);
        assert!((m - 0.06).abs() < 0.001, "nu mean {m}");
        assert!((sd / 0.02 - 1.0).abs() < 0.05, "nu sd {sd}");
        // Global compensation: one gain brings the reference read back.
        let (t0, now) = px.reference_reads().unwrap();
        assert!(now < 0.7 * t0, "drift lowered the read: {now} vs {t0}");
        let comp = px.scaled(t0 / now);
        let (_, after) = comp.reference_reads().unwrap();
        assert!((after / t0 - 1.0).abs() < 1e-5, "{after} vs {t0}");
    }

    /// Asserts that `px` holds, bit for bit, the devices `device` gives for
    /// `xb`'s levels, called cell by cell in row-major order (`G+` before
    /// `G-`): `G+ - G-` and `G+ + G-` (1T1R: the device for both).
    fn assert_devices(
        xb: &Crossbar,
        px: &ProgrammedCrossbar,
        label: &str,
        mut device: impl FnMut(u8) -> f32,
    ) {
        let two = xb.geometry().cell() == CellKind::TwoT2R;
        for r in 0..xb.used_rows() {
            for c in 0..xb.used_cols() {
                let (p, q) = xb.levels(r, c);
                let gp = device(p);
                let (d, m) = if two {
                    let gn = device(q);
                    (gp - gn, gp + gn)
                } else {
                    (gp, gp)
                };
                assert_eq!(
                    px.diff()[[r, c]].to_bits(),
                    d.to_bits(),
                    "{label} ({r}, {c})"
                );
                assert_eq!(
                    px.magnitude()[[r, c]].to_bits(),
                    m.to_bits(),
                    "{label} ({r}, {c})"
                );
            }
        }
    }

    /// The exact sum is the in-order `f64` sum bit for bit wherever it
    /// applies, and applies to programmed conductances.
    #[test]
    fn exact_sum_is_the_in_order_sum() {
        let in_order = |v: &[f32]| v.iter().map(|&g| f64::from(g)).sum::<f64>();
        let mut rng = stream_rng(8, &[]);
        let mut applied = 0;
        for case in 0..48usize {
            let n = 1 + case * 997;
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    let u: f32 = rng.random();
                    match case % 6 {
                        // Programmed-like: levels with relative errors.
                        0 => f32::from(u8::try_from(i % 16).unwrap()) * (1.0 + 0.05 * (u - 0.5)),
                        // Signed, spread over eight binades.
                        1 => (u - 0.5) * 2f32.powi(i32::try_from(i % 8).unwrap()),
                        // Tiny and large together: the bound fails.
                        2 => {
                            if i % 3 == 0 {
                                u * 1e-30
                            } else {
                                u * 1e10
                            }
                        }
                        // Subnormals and zeros of both signs.
                        3 => match i % 3 {
                            0 => f32::from_bits(rng.random::<u32>() & 0x007f_ffff),
                            1 => -0.0,
                            _ => 0.0,
                        },
                        4 => -0.0,
                        // One large value first, then values each below half
                        // its `f64` ulp: in order they vanish, together not.
                        _ => {
                            if i == 0 {
                                2f32.powi(40)
                            } else {
                                0.75 * 2f32.powi(-13)
                            }
                        }
                    }
                })
                .collect();
            let want = in_order(&v);
            assert_eq!(sequential_sum(&v).to_bits(), want.to_bits(), "case {case}");
            if let Some(s) = exact_sum(&v) {
                assert_eq!(s.to_bits(), want.to_bits(), "case {case}");
                applied += 1;
            }
            if case % 6 == 0 && n > 1 {
                assert!(exact_sum(&v).is_some(), "case {case}: programmed-like");
            }
            if case % 6 == 4 {
                assert!(exact_sum(&v).is_none(), "case {case}: a zero total");
            }
            if case % 6 == 5 && n > 1 {
                assert_eq!(want, 2f64.powi(40), "case {case}: the small values vanish");
            }
        }
        assert!(applied >= 16, "applied {applied}");
        for bad in [f32::NAN, f32::INFINITY] {
            assert!(exact_sum(&[1.0, bad]).is_none());
            assert!(sequential_sum(&[1.0, bad]).to_bits() == in_order(&[1.0, bad]).to_bits());
        }
    }

    #[test]
    fn draw_free_programming_scaling_and_reference_reads_equal_their_general_forms() {
        use crate::{Drift, DriftCompensation};
        // A finite OFF state alone draws nothing: every device is its level
        // plus the OFF conductance, rounded to `f32` once, whatever the seed.
        let noise = DeviceNoise::default().with_on_off_ratio(15.0).unwrap();
        let off = noise.off_level(15);
        #[allow(clippy::cast_possible_truncation)]
        let g = |l: u8| (f64::from(l) + off) as f32;
        for cell in [CellKind::OneT1R, CellKind::TwoT2R] {
            let xb = levels_xbar(cell, 64, 32);
            let px = xb.program(Some(&noise), &mut stream_rng(1, &[]));
            let other = xb.program(Some(&noise), &mut stream_rng(2, &[]));
            assert_eq!(px.diff(), other.diff(), "{cell:?}: no draw");
            assert_devices(&xb, &px, &format!("{cell:?}"), g);
        }
        // Stuck devices alone: one uniform per device from the crossbar's
        // stream, device by device (`G+` before `G-`), decides each one; with
        // OFF at level 0 every device is at an integer level (1T1R: within the
        // maximum, so integer sums; 2T2R pairs may sum above it).
        let stuck_only = DeviceNoise::new(0.0, 0.2, 0.1).unwrap();
        let with_off = stuck_only.clone().with_on_off_ratio(15.0).unwrap();
        for (noise, off) in [(with_off, off), (stuck_only, 0.0)] {
            #[allow(clippy::cast_possible_truncation)]
            let g = |l: u8| (f64::from(l) + off) as f32;
            let (goff, gmax) = (g(0), g(15));
            for cell in [CellKind::OneT1R, CellKind::TwoT2R] {
                let xb = levels_xbar(cell, 64, 32);
                let px = xb.program(Some(&noise), &mut stream_rng(5, &[]));
                let mut rng = stream_rng(5, &[]);
                let mut stuck = 0;
                let mut device = |l: u8| {
                    let u: f64 = rng.random();
                    stuck += usize::from(u < 0.3);
                    if u < 0.2 {
                        goff
                    } else if u < 0.2 + 0.1 {
                        gmax
                    } else {
                        g(l)
                    }
                };
                assert_devices(&xb, &px, &format!("{cell:?} off {off}"), &mut device);
                assert_eq!(px.stuck_devices(), stuck, "{cell:?} off {off}");
                if off == 0.0 && cell == CellKind::OneT1R {
                    assert!(px.is_ideal(), "integer levels within the maximum");
                }
            }
        }
        // A relative programming error and nothing stuck: per device, one
        // uniform (dropped: nothing can be stuck), then, for a target `l +
        // off` other than zero, one normal; the device is `target (1 + s z)`
        // rounded to `f32` and clamped to `[0, gmax]` (s = 0.5 clamps some).
        // Sizes of whole and partial blocks of cells.
        for (sigma, ratio, (rows, cols)) in [
            (0.05, None, (64, 32)),
            (0.5, None, (37, 19)),
            (0.05, Some(15.0), (37, 19)),
            (0.5, Some(15.0), (64, 32)),
        ] {
            let mut noise = DeviceNoise::new(sigma, 0.0, 0.0).unwrap();
            if let Some(ratio) = ratio {
                noise = noise.with_on_off_ratio(ratio).unwrap();
            }
            let off = noise.off_level(15);
            #[allow(clippy::cast_possible_truncation)]
            let gmax = (15.0 + off) as f32;
            for cell in [CellKind::OneT1R, CellKind::TwoT2R] {
                let xb = levels_xbar(cell, rows, cols);
                let px = xb.program(Some(&noise), &mut stream_rng(7, &[]));
                let mut rng = stream_rng(7, &[]);
                let mut clamped = 0;
                let device = |l: u8| {
                    let _: f64 = rng.random();
                    let target = f64::from(l) + off;
                    if target == 0.0 {
                        return 0.0;
                    }
                    let z: f64 =
                        rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
                    #[allow(clippy::cast_possible_truncation)]
                    let g = (target * (1.0 + sigma * z)) as f32;
                    clamped += usize::from(!(0.0..=gmax).contains(&g));
                    g.clamp(0.0, gmax)
                };
                let label = format!("sigma {sigma} off {off} {cell:?} {rows}x{cols}");
                assert_devices(&xb, &px, &label, device);
                assert_eq!(px.stuck_devices(), 0, "{label}");
                assert!(
                    sigma < 0.1 || clamped > 0,
                    "{label}: sigma 0.5 clamps devices"
                );
            }
        }
        // Drift with per-device exponents and nothing stuck: the stream gives
        // one uniform per device (dropped: nothing can be stuck), then one
        // normal per device for its exponent, in device order; a device keeps
        // `(g (t / t0)^-nu)` rounded to `f32` (a device at zero stays zero).
        let drift = Drift::new(0.06, 0.02, 2e5, DriftCompensation::None).unwrap();
        for ratio in [None, Some(15.0)] {
            let mut noise = DeviceNoise::default().with_drift(drift);
            if let Some(ratio) = ratio {
                noise = noise.with_on_off_ratio(ratio).unwrap();
            }
            let off = noise.off_level(15);
            for cell in [CellKind::OneT1R, CellKind::TwoT2R] {
                let xb = levels_xbar(cell, 64, 32);
                let px = xb.program(Some(&noise), &mut stream_rng(6, &[]));
                let mut rng = stream_rng(6, &[]);
                let per = if cell == CellKind::TwoT2R { 2 } else { 1 };
                for _ in 0..64 * 32 * per {
                    let _: f64 = rng.random();
                }
                let device = |l: u8| {
                    let z: f64 =
                        rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
                    #[allow(clippy::cast_possible_truncation)]
                    let g = (f64::from(l) + off) as f32;
                    let factor = (2e5 / crate::DRIFT_T0_SECONDS).powf(-(0.06 + 0.02 * z).max(0.0));
                    #[allow(clippy::cast_possible_truncation)]
                    let drifted = (f64::from(g) * factor) as f32;
                    drifted
                };
                assert_devices(&xb, &px, &format!("drift {cell:?} off {off}"), device);
            }
        }
        // The reference read from the devices is the one from `effective`'s
        // matrix, bit for bit (sums of values of every magnitude).
        let mut rng = stream_rng(3, &[]);
        let (rows, cols) = (37, 19);
        let gp: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random::<f32>() * 15.0)
            .collect();
        let gn: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random::<f32>() * 1e-3)
            .collect();
        for neg in [Some(gn.as_slice()), None] {
            let (d, _) = effective(gp.clone(), neg.map(<[f32]>::to_vec), rows, cols, None);
            assert_eq!(
                reference_read(&gp, neg, cols).to_bits(),
                reference_read(&d, None, cols).to_bits()
            );
        }
        // Scaling: every conductance and the OFF correction times the gain
        // (as `f32`), the reference read at programming kept.
        let drift = Drift::new(0.06, 0.02, 2e5, DriftCompensation::Global).unwrap();
        let noise = DeviceNoise::default()
            .with_on_off_ratio(20.0)
            .unwrap()
            .with_drift(drift);
        #[allow(clippy::cast_possible_truncation)]
        let a = 1.37f64 as f32;
        for cell in [CellKind::OneT1R, CellKind::TwoT2R] {
            let px = levels_xbar(cell, 64, 32).program(Some(&noise), &mut stream_rng(4, &[]));
            let b = px.clone().into_scaled(1.37);
            assert_eq!(b.diff(), px.diff().mapv(|g| g * a));
            assert_eq!(b.magnitude(), px.magnitude().mapv(|g| g * a));
            assert_eq!(
                b.off_per_pulse().to_bits(),
                (px.off_per_pulse() * a).to_bits()
            );
            assert_eq!(
                b.reference_reads().unwrap().0,
                px.reference_reads().unwrap().0
            );
        }
    }

    #[test]
    fn ir_drop_uses_the_resummed_model_and_draws_nothing() {
        use crate::IrDropModel;
        let noise = DeviceNoise::default().with_ir_drop(IrDropModel::new(1.0, 1333.0).unwrap());
        let xb = levels_xbar(CellKind::TwoT2R, 64, 32);
        let px = xb.program(Some(&noise), &mut stream_rng(1, &[]));
        let other = xb.program(Some(&noise), &mut stream_rng(2, &[]));
        assert_eq!(px.diff(), other.diff(), "IR drop depends on no draw");
        let lsb = 1.0 / (1333.0 * 15.0);
        let siemens = |v: Vec<u8>| v.iter().map(|&l| f64::from(l) * lsb).collect::<Vec<f64>>();
        let eff = crate::ir_drop::resummed(
            &siemens(xb.pos.clone()),
            Some(&siemens(xb.neg.clone())),
            64,
            32,
            1.0,
        );
        for (i, &d) in px.diff().iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            let want = (eff.diff[i] / lsb) as f32;
            assert_eq!(d, want);
            // Every device loses current: |D| < the level.
            let (p, n) = (xb.pos[i], xb.neg[i]);
            assert!(d.abs() <= f32::from(p.max(n)), "{d} {p} {n}");
        }
    }

    #[test]
    fn every_non_ideality_is_reproducible_and_changes_with_the_seed() {
        use crate::{Drift, DriftCompensation, IrDropModel};
        let all = DeviceNoise::new(0.05, 1e-3, 1e-3)
            .unwrap()
            .with_on_off_ratio(30.0)
            .unwrap()
            .with_drift(Drift::new(0.05, 0.01, 1e4, DriftCompensation::None).unwrap())
            .with_ir_drop(IrDropModel::new(0.5, 1333.0).unwrap());
        let one = [
            DeviceNoise::default().with_on_off_ratio(30.0).unwrap(),
            DeviceNoise::new(0.05, 0.0, 0.0)
                .unwrap()
                .with_on_off_ratio(30.0)
                .unwrap(),
            DeviceNoise::default()
                .with_drift(Drift::new(0.05, 0.01, 1e4, DriftCompensation::None).unwrap()),
            all,
        ];
        let xb = levels_xbar(CellKind::TwoT2R, 64, 32);
        for (k, noise) in one.iter().enumerate() {
            let a = xb.program(Some(noise), &mut stream_rng(11, &[]));
            let b = xb.program(Some(noise), &mut stream_rng(11, &[]));
            let c = xb.program(Some(noise), &mut stream_rng(12, &[]));
            assert_eq!(a.diff(), b.diff(), "case {k}: same seed");
            assert_eq!(a.magnitude(), b.magnitude(), "case {k}: same seed");
            // The OFF state alone draws nothing; every other case differs.
            if k == 0 {
                assert_eq!(a.diff(), c.diff());
            } else {
                assert_ne!(a.diff(), c.diff(), "case {k}: another seed");
            }
        }
    }
}
