//! IR drop: the resistance of the wires that carry a crossbar's row drives
//! and column currents, as effective conductances.
//!
//! # The network
//!
//! A crossbar of `R x C` cells (`R = rows`, `C = cols`); every wire segment
//! has the same resistance `r`.
//!
//! ```text
//!  V_i ─r─ (i,0) ─r─ (i,1) ─r─ ··· ─r─ (i,C-1)      row line i (2T2R: also a line at -V_i)
//!            │         │                  │
//!          G_i0      G_i1              G_i,C-1       one device per line per cell
//!            │         │                  │
//!  column j: (0,j) ─r─ (1,j) ─r─ ··· ─r─ (R-1,j) ─r─ sense (virtual ground, 0 V) → I_j
//! ```
//!
//! * Row line `i` is driven at its column-0 end by `V_i`: one segment between
//!   the driver and node `(i,0)`, one between `(i,j-1)` and `(i,j)`; its far
//!   end is open.
//! * Column line `j` is sensed at its bottom end: one segment between `(i,j)`
//!   and `(i+1,j)`, one between `(R-1,j)` and the sense node at 0 V; its top
//!   end is open. The output is the current `I_j` into the sense node.
//! * 1T1R: one linear device `G+_ij` between row node `(i,j)` and column node `(i,j)`.
//! * 2T2R: row `i` has two lines, each with its own segments: a positive line
//!   driven at `+V_i` holding the `G+` devices and a negative line driven at
//!   `-V_i` holding the `G-` devices. Both devices of a cell meet the same
//!   column node, so the column carries the net current `V (G+ - G-)`: the
//!   subtraction is analog.
//!
//! With `r = 0` the column currents are the ideal `I_j = Σ_m V_m (G+_mj - G-_mj)`.
//! The network is linear, so for any `r` there is an effective matrix `D` with
//!
//! ```text
//!   I_j = Σ_m V_m D_mj        exactly,   D = G+ - G-  when r = 0.
//! ```
//!
//! # First order in `r` ([`first_order`])
//!
//! To zeroth order every row node sits at its driver voltage and every column
//! node at 0 V; the first-order correction is what those zeroth-order device
//! currents do to the wire voltages. The two effects add at first order.
//!
//! **Row lines.** On the positive line of row `i` the segment before node `k`
//! carries the current of every device at or beyond it,
//! `Σ_{m≥k} G+_im V_i`, so node `j` sits at `V_i (1 - r A+_ij)` with
//!
//! ```text
//!   A+_ij = Σ_{k=0..j} Σ_{m≥k} G+_im = Σ_m G+_im (min(j, m) + 1).
//! ```
//!
//! The negative line is the mirror image (driven at `-V_i`, its node `j` sits
//! at `-V_i (1 - r A-_ij)`, `A-` from `G-`).
//!
//! **Column lines.** Cell `m` injects the net current `(G+ - G-)_mj V_m` into
//! column `j`; it flows down through the segments below nodes `m, m+1, …, R-1`
//! and raises node `i` by `r (R - max(i, m)) (G+ - G-)_mj V_m`. A raised column
//! node `d_ij` takes `(G+ + G-)_ij d_ij` from the current of cell `i` (both
//! devices of a 2T2R pair see the same node). Summing over the cells `i` of
//! the column, the column current loses, per volt on row `m`,
//!
//! ```text
//!   r (G+ - G-)_mj B_mj,   B_mj = Σ_{l=m..R-1} Σ_{i≤l} (G+ + G-)_ij
//!                               = Σ_i (G+ + G-)_ij (R - max(i, m)).
//! ```
//!
//! **Result.** The loss `r (G+ - G-)_mj B_mj` is proportional to the currents
//! the two devices inject, so it splits between them; that keeps `D = P+ - P-`:
//!
//! ```text
//!   P+_mj = G+_mj (1 - r A+_mj - r B_mj)
//!   P-_mj = G-_mj (1 - r A-_mj - r B_mj)
//!   D_mj  = P+_mj - P-_mj + O(r²)
//! ```
//!
//! `A` and `B` are prefix sums, so [`first_order`] is `O(R C)`. A 1x1 cell is
//! the check: exactly `I = V / (1/g + 2r) = V g (1 - 2 r g + O((r g)²))`, and
//! `A = B = g`.
//!
//! **Range.** The neglected terms are of relative size `(r (A + B))²`; the
//! largest `c = r (A + B)` over all devices is [`max_correction`]. The module
//! tests measure, on random arrays at RAELLA's `R_on = 1333 Ω` (levels 0..15,
//! OFF at `G_on / 20`), that the IR-drop effect `|D - D0| / |D0|` is about
//! `0.45-0.7 c` and the first-order error relative to that effect about
//! `0.55-0.72 c`: below `c ≈ 0.15` first order captures the effect to about
//! 10%. Past `c = 1` it is meaningless (it predicts negative conductances);
//! use [`exact_effective`] there.
//!
//! | array, `r` per segment | kind | effect | first-order error / effect | `c`  |
//! |------------------------|------|--------|----------------------------|------|
//! | 16x16, 1 Ω             | 1T1R | 7.6%   | 8.8%                       | 0.14 |
//! | 64x64, 0.1 Ω           | 1T1R | 10.7%  | 12.5%                      | 0.19 |
//! | 64x64, 1 Ω             | 1T1R | 54.5%  | 126%                       | 1.95 |
//! | 64x64, 1 Ω             | 2T2R | 52.7%  | 94%                        | 1.63 |
//! | 64x64, 2.5 Ω           | 1T1R | 74.7%  | 312%                       | 4.88 |
//! | 64x64, 2.5 Ω           | 2T2R | 75.2%  | 239%                       | 4.06 |
//!
//! (The same correction resummed, `g / (1 + c)` in place of `g (1 - c)`, errs
//! by 6-10% of the effect on the 64x64 arrays; it is measured, not derived.)
//!
//! Those segment resistances are typical of 32-22 nm interconnect: for a 4F²
//! cell the segment is `2F` long and `F` wide, so with aspect ratio 2 its
//! resistance is `ρ 2F / (F · 2F) = ρ / F`, which for copper's size-affected
//! resistivity (`ρ ≈ 4-5.5 µΩ·cm` at these widths) is about 1.2 Ω at 32 nm
//! and 2.5 Ω at 22 nm.
//!
//! # The exact solve ([`exact_effective`])
//!
//! Nodal analysis: every row-line node (one or two lines) and every
//! column-line node is an unknown voltage; drivers and the sense node are
//! fixed-voltage boundaries. Kirchhoff's current law at every node gives
//! `G x = b` where `G` is a conductance Laplacian (`1/r` per segment, the
//! device conductances, the boundary segments on the diagonal): symmetric
//! positive definite. Numbering the unknowns cell by cell, the shorter
//! dimension varying fastest, makes `G` banded with half-bandwidth `(lines + 1) · min(R, C)`;
//! it is factored once by a banded Cholesky and solved once per row `m` with
//! `+1 V` on that row (and `-1 V` on its negative line): column `j`'s sense
//! current, `x[(R-1, j)] / r`, is `D_mj`. The cost is `O(n w²)` for `n`
//! unknowns of half-bandwidth `w`: a 64x64 2T2R array (12 288 unknowns,
//! `w = 192`) takes well under a second.

/// First-order effective conductances of a crossbar with resistive wires
/// (see the module docs), row-major `rows x cols`, in siemens.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// `D = P+ - P-`: the column current is `I_j = Σ_m V_m diff[m * cols + j]`.
    pub diff: Vec<f64>,
    /// `P+`: the positive devices' effective conductances, with their share
    /// of the column-line loss.
    pub pos: Vec<f64>,
    /// `P-`: the negative devices' effective conductances (2T2R only).
    pub neg: Option<Vec<f64>>,
}

/// Panics unless the arrays are `rows x cols`, the conductances finite and
/// non-negative and `r` finite and non-negative.
fn check(gp: &[f64], gn: Option<&[f64]>, rows: usize, cols: usize, r: f64) {
    let n = rows * cols;
    assert_eq!(gp.len(), n, "gp must hold rows x cols = {n} conductances");
    if let Some(gn) = gn {
        assert_eq!(gn.len(), n, "gn must hold rows x cols = {n} conductances");
    }
    assert!(
        r.is_finite() && r >= 0.0,
        "wire resistance must be finite and non-negative, got {r}"
    );
    assert!(
        gp.iter()
            .chain(gn.unwrap_or(&[]))
            .all(|g| g.is_finite() && *g >= 0.0),
        "conductances must be finite and non-negative"
    );
}

/// `A_ij = Σ_{k≤j} Σ_{m≥k} g_im`: the row-line load of every node, per ohm.
fn row_load(g: &[f64], cols: usize) -> Vec<f64> {
    let mut a = vec![0.0; g.len()];
    for (grow, arow) in g.chunks_exact(cols).zip(a.chunks_exact_mut(cols)) {
        // Suffix sums: the current through the segment before node k.
        let mut s = 0.0;
        for (x, &gk) in arow.iter_mut().zip(grow).rev() {
            s += gk;
            *x = s;
        }
        // Prefix sums of those: the drop accumulated up to node j.
        let mut acc = 0.0;
        for x in arow.iter_mut() {
            acc += *x;
            *x = acc;
        }
    }
    a
}

/// `B_mj = Σ_{l≥m} Σ_{i≤l} (gp + gn)_ij`: the column-line load, per ohm.
fn column_load(gp: &[f64], gn: Option<&[f64]>, rows: usize, cols: usize) -> Vec<f64> {
    let mut b = vec![0.0; rows * cols];
    // Prefix sums down each column: the device conductance above each segment.
    let mut p = vec![0.0; cols];
    for l in 0..rows {
        for j in 0..cols {
            let k = l * cols + j;
            p[j] += gp[k] + gn.map_or(0.0, |gn| gn[k]);
            b[k] = p[j];
        }
    }
    // Suffix sums of those, from the sense end up.
    for m in (0..rows - 1).rev() {
        let (upper, lower) = b.split_at_mut((m + 1) * cols);
        for (x, y) in upper[m * cols..].iter_mut().zip(&lower[..cols]) {
            *x += y;
        }
    }
    b
}

/// First-order (in `r`) effective conductances of a crossbar whose wire
/// segments each have resistance `r` ohm; `gp` (and, for 2T2R, `gn`) are the
/// device conductances in siemens, row-major `rows x cols`. `O(rows x cols)`.
///
/// With `r = 0` the result is exactly `gp` (and `gn`, `gp - gn`). See the
/// module docs for the model and [`max_correction`] for its range.
///
/// # Panics
/// If an array is not `rows x cols`, a conductance is negative or not finite,
/// or `r` is negative or not finite.
#[must_use]
pub fn first_order(gp: &[f64], gn: Option<&[f64]>, rows: usize, cols: usize, r: f64) -> Effective {
    check(gp, gn, rows, cols, r);
    if rows == 0 || cols == 0 {
        return Effective {
            diff: Vec::new(),
            pos: Vec::new(),
            neg: gn.map(|_| Vec::new()),
        };
    }
    let b = column_load(gp, gn, rows, cols);
    let scale = |g: &[f64]| -> Vec<f64> {
        let a = row_load(g, cols);
        g.iter()
            .zip(a.iter().zip(&b))
            .map(|(&g, (&a, &b))| g * (1.0 - r * (a + b)))
            .collect()
    };
    let pos = scale(gp);
    let neg = gn.map(scale);
    let diff = match &neg {
        Some(neg) => pos.iter().zip(neg).map(|(p, n)| p - n).collect(),
        None => pos.clone(),
    };
    Effective { diff, pos, neg }
}

/// The first-order correction resummed: each device's `g (1 - c)` of
/// [`first_order`] becomes `g / (1 + c)`, the same `c = r (A + B)`. Equal to
/// first order in `r`, it stays positive and, measured against
/// [`exact_effective`] (module tests), errs by 6-15% of the IR-drop effect on
/// 64x64 arrays at 1-2.5 ohm per segment where [`first_order`] errs by more
/// than the effect itself. The whole-network model (`Crossbar::program`).
///
/// # Panics
/// As [`first_order`].
#[must_use]
pub fn resummed(gp: &[f64], gn: Option<&[f64]>, rows: usize, cols: usize, r: f64) -> Effective {
    let eff = first_order(gp, gn, rows, cols, r);
    // g (1 - c) -> g / (1 + c): g / (1 + (g - p) / g) = g^2 / (2g - p).
    let resum = |g: &[f64], p: &[f64]| -> Vec<f64> {
        g.iter()
            .zip(p)
            .map(|(&g, &p)| if g > 0.0 { g * g / (2.0 * g - p) } else { 0.0 })
            .collect()
    };
    let pos = resum(gp, &eff.pos);
    let neg = gn.zip(eff.neg.as_deref()).map(|(g, n)| resum(g, n));
    let diff = match &neg {
        Some(neg) => pos.iter().zip(neg).map(|(p, n)| p - n).collect(),
        None => pos.clone(),
    };
    Effective { diff, pos, neg }
}

/// The largest relative first-order correction `|g - P| / g` over all
/// devices with `g > 0` (that is, the largest `r (A + B)` of the module docs).
///
/// The first-order model neglects terms of relative size about its square:
/// it is accurate while this is well below 1 and meaningless past 1, where it
/// predicts negative conductances; then use [`exact_effective`].
///
/// # Panics
/// If `gp` / `gn` are not the arrays `eff` was computed from in shape, or
/// `gn` and `eff.neg` do not both exist or both not.
#[must_use]
pub fn max_correction(eff: &Effective, gp: &[f64], gn: Option<&[f64]>) -> f64 {
    fn largest(g: &[f64], p: &[f64]) -> f64 {
        assert_eq!(
            g.len(),
            p.len(),
            "conductances and effective conductances differ in size"
        );
        g.iter()
            .zip(p)
            .filter(|(g, _)| **g > 0.0)
            .map(|(g, p)| ((g - p) / g).abs())
            .fold(0.0, f64::max)
    }
    let pos = largest(gp, &eff.pos);
    match (gn, &eff.neg) {
        (Some(gn), Some(neg)) => pos.max(largest(gn, neg)),
        (None, None) => pos,
        _ => panic!("gn and eff.neg must both be given (2T2R) or both absent (1T1R)"),
    }
}

/// The exact effective matrix `D` (row-major `rows x cols`, siemens) of a
/// crossbar whose wire segments each have resistance `r` ohm, by nodal
/// analysis: `I_j = Σ_m V_m D_mj` for every input vector `V`.
///
/// A banded Cholesky factorisation and one solve per row (see the module
/// docs): `O(n w²)` for `n = (lines + 1) rows cols` unknowns and
/// half-bandwidth `w = (lines + 1) min(rows, cols)`. For tests and for
/// measuring the error of [`first_order`]; `r = 0` returns `gp - gn`.
///
/// # Panics
/// If an array is not `rows x cols`, a conductance is negative or not finite,
/// or `r` is negative or not finite.
#[must_use]
pub fn exact_effective(
    gp: &[f64],
    gn: Option<&[f64]>,
    rows: usize,
    cols: usize,
    r: f64,
) -> Vec<f64> {
    check(gp, gn, rows, cols, r);
    if r == 0.0 || rows == 0 || cols == 0 {
        return ideal(gp, gn);
    }
    Ladder::new(gp, gn, rows, cols, r, cols <= rows).effective()
}

/// `gp - gn`.
fn ideal(gp: &[f64], gn: Option<&[f64]>) -> Vec<f64> {
    match gn {
        Some(gn) => gp.iter().zip(gn).map(|(p, n)| p - n).collect(),
        None => gp.to_vec(),
    }
}

/// A factored nodal system of the crossbar.
struct Ladder {
    rows: usize,
    cols: usize,
    /// Row lines per row: 1 (1T1R) or 2 (2T2R).
    lines: usize,
    /// Cells numbered along rows (`i * cols + j`) or along columns.
    row_major: bool,
    /// `1 / r`.
    g_wire: f64,
    /// The Cholesky factor of `G`.
    band: Band,
}

impl Ladder {
    /// Builds and factors `G`.
    fn new(
        gp: &[f64],
        gn: Option<&[f64]>,
        rows: usize,
        cols: usize,
        r: f64,
        row_major: bool,
    ) -> Self {
        let lines = if gn.is_some() { 2 } else { 1 };
        let per = lines + 1;
        let w = per * if row_major { cols } else { rows };
        let mut ladder = Self {
            rows,
            cols,
            lines,
            row_major,
            g_wire: 1.0 / r,
            band: Band::zeros(per * rows * cols, w),
        };
        let g_wire = ladder.g_wire;
        for i in 0..rows {
            for j in 0..cols {
                let c = ladder.col_node(i, j);
                for line in 0..lines {
                    let g = match (line, gn) {
                        (1, Some(gn)) => gn,
                        _ => gp,
                    };
                    let a = ladder.row_node(i, j, line);
                    // The segment towards the driver.
                    let towards = (j > 0).then(|| ladder.row_node(i, j - 1, line));
                    ladder.band.link(a, towards, g_wire);
                    ladder.band.link(a, Some(c), g[i * cols + j]);
                }
                // The segment towards the sense node.
                let towards = (i + 1 < rows).then(|| ladder.col_node(i + 1, j));
                ladder.band.link(c, towards, g_wire);
            }
        }
        ladder.band.factor();
        ladder
    }

    fn cell(&self, i: usize, j: usize) -> usize {
        if self.row_major {
            i * self.cols + j
        } else {
            j * self.rows + i
        }
    }

    fn row_node(&self, i: usize, j: usize, line: usize) -> usize {
        self.cell(i, j) * (self.lines + 1) + line
    }

    fn col_node(&self, i: usize, j: usize) -> usize {
        self.cell(i, j) * (self.lines + 1) + self.lines
    }

    /// Node voltages for row drives `v` (the negative lines at `-v`).
    fn voltages(&self, v: &[f64]) -> Vec<f64> {
        let mut x = vec![0.0; self.band.n];
        for (i, &vi) in v.iter().enumerate() {
            x[self.row_node(i, 0, 0)] = self.g_wire * vi;
            if self.lines == 2 {
                x[self.row_node(i, 0, 1)] = -self.g_wire * vi;
            }
        }
        self.band.solve(&mut x);
        x
    }

    /// `D`, one solve per row.
    fn effective(&self) -> Vec<f64> {
        let mut d = vec![0.0; self.rows * self.cols];
        let mut unit = vec![0.0; self.rows];
        for m in 0..self.rows {
            unit[m] = 1.0;
            let x = self.voltages(&unit);
            unit[m] = 0.0;
            for j in 0..self.cols {
                d[m * self.cols + j] = x[self.col_node(self.rows - 1, j)] * self.g_wire;
            }
        }
        d
    }
}

/// A symmetric band matrix, lower half stored row by row: entry `(k, p)`,
/// `k - w <= p <= k`, at `a[(k + 1) w + p]`; factored in place to its
/// Cholesky factor `L` (`G = L Lᵀ`).
struct Band {
    n: usize,
    w: usize,
    a: Vec<f64>,
}

impl Band {
    fn zeros(n: usize, w: usize) -> Self {
        Self {
            n,
            w,
            a: vec![0.0; n * (w + 1)],
        }
    }

    fn at(&self, k: usize, p: usize) -> usize {
        debug_assert!(p <= k && k - p <= self.w, "({k}, {p}) outside the band");
        (k + 1) * self.w + p
    }

    /// Stamps a conductance `g` between node `a` and node `b`, or between
    /// `a` and a fixed-voltage node when `b` is `None`.
    fn link(&mut self, a: usize, b: Option<usize>, g: f64) {
        let ia = self.at(a, a);
        self.a[ia] += g;
        if let Some(b) = b {
            let ib = self.at(b, b);
            self.a[ib] += g;
            let off = self.at(a.max(b), a.min(b));
            self.a[off] -= g;
        }
    }

    /// In-place banded Cholesky, `L_kj = (G_kj - Σ_p L_kp L_jp) / L_jj`.
    fn factor(&mut self) {
        let w = self.w;
        for k in 0..self.n {
            let k0 = k.saturating_sub(w);
            for j in k0..=k {
                // Both rows start at k0 within the band of row k.
                let dot = dot(
                    &self.a[(k + 1) * w + k0..(k + 1) * w + j],
                    &self.a[(j + 1) * w + k0..(j + 1) * w + j],
                );
                let s = self.a[(k + 1) * w + j] - dot;
                self.a[(k + 1) * w + j] = if j < k {
                    s / self.a[(j + 1) * w + j]
                } else {
                    assert!(s > 0.0, "nodal matrix not positive definite at {k}");
                    s.sqrt()
                };
            }
        }
    }

    /// Solves `L Lᵀ x = b` in place.
    fn solve(&self, x: &mut [f64]) {
        let w = self.w;
        // Forward, L y = b; the leading zeros of b stay zero.
        let start = x.iter().position(|&v| v != 0.0).unwrap_or(self.n);
        for k in start..self.n {
            let k0 = k.saturating_sub(w).max(start);
            let s = dot(&self.a[(k + 1) * w + k0..(k + 1) * w + k], &x[k0..k]);
            x[k] = (x[k] - s) / self.a[(k + 1) * w + k];
        }
        // Backward, Lᵀ x = y, by columns of Lᵀ (rows of L).
        for k in (0..self.n).rev() {
            x[k] /= self.a[(k + 1) * w + k];
            let xk = x[k];
            let k0 = k.saturating_sub(w);
            for (xp, l) in x[k0..k]
                .iter_mut()
                .zip(&self.a[(k + 1) * w + k0..(k + 1) * w + k])
            {
                *xp -= l * xk;
            }
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_rng;
    use rand::RngExt;
    use std::time::Instant;

    /// RAELLA's ON resistance, 1333 Ω.
    const G_ON: f64 = 1.0 / 1333.0;
    /// The OFF conductance, `G_ON / 20`.
    const G_OFF: f64 = G_ON / 20.0;

    fn norm(v: &[f64]) -> f64 {
        v.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| x - y).collect()
    }

    /// `V^T D`.
    fn currents(v: &[f64], d: &[f64], cols: usize) -> Vec<f64> {
        let mut out = vec![0.0; cols];
        for (vm, row) in v.iter().zip(d.chunks_exact(cols)) {
            for (o, x) in out.iter_mut().zip(row) {
                *o += vm * x;
            }
        }
        out
    }

    fn random_g(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
        let mut rng = stream_rng(seed, &[]);
        (0..rows * cols)
            .map(|_| G_OFF + G_ON * rng.random::<f64>())
            .collect()
    }

    #[test]
    fn zero_resistance_is_ideal() {
        let (rows, cols) = (3, 5);
        let gp = random_g(rows, cols, 1);
        let gn = random_g(rows, cols, 2);
        for gn in [None, Some(gn.as_slice())] {
            let ideal = ideal(&gp, gn);
            let eff = first_order(&gp, gn, rows, cols, 0.0);
            assert_eq!(eff.diff, ideal);
            assert_eq!(eff.pos, gp);
            assert_eq!(eff.neg.as_deref(), gn);
            assert_eq!(max_correction(&eff, &gp, gn), 0.0);
            assert_eq!(exact_effective(&gp, gn, rows, cols, 0.0), ideal);
        }
    }

    #[test]
    fn one_cell_matches_its_closed_form() {
        let g = G_ON;
        for r in [0.01, 0.1, 1.0, 10.0] {
            let exact = g / (1.0 + 2.0 * r * g); // V / (1/g + 2r), V = 1
            let d = exact_effective(&[g], None, 1, 1, r)[0];
            assert!((d - exact).abs() <= 1e-12 * exact, "r {r}: {d} vs {exact}");
            let eff = first_order(&[g], None, 1, 1, r);
            let x = 2.0 * r * g;
            assert!((eff.diff[0] - g * (1.0 - x)).abs() <= 1e-15 * g);
            assert!((max_correction(&eff, &[g], None) - x).abs() <= 1e-9 * x);
            let rel = (eff.diff[0] - exact).abs() / exact;
            assert!(
                rel <= 1.01 * x * x,
                "r {r}: first-order error {rel}, (2rg)² {}",
                x * x
            );
            // 2T2R with an empty negative device is the same cell; with equal
            // devices the currents cancel exactly.
            let d2 = exact_effective(&[g], Some(&[0.0]), 1, 1, r)[0];
            assert!((d2 - exact).abs() <= 1e-12 * exact);
            assert!(exact_effective(&[g], Some(&[g]), 1, 1, r)[0].abs() <= 1e-15 * g);
        }
    }

    #[test]
    fn a_row_and_a_column_match_their_closed_forms() {
        let r = 3.0;
        let (g0, g1) = (G_ON, 0.3 * G_ON);
        let h0 = 1.0 / (r + 1.0 / g0);
        let h1 = 1.0 / (r + 1.0 / g1);
        // One row, two columns: driver ─r─ n0 ─r─ n1, each node through its
        // device and one column segment to ground.
        let y = h0 + 1.0 / (r + 1.0 / h1);
        let v0 = 1.0 / (1.0 + r * y);
        let want = [h0 * v0, h1 * v0 / (1.0 + r * h1)];
        let got = exact_effective(&[g0, g1], None, 1, 2, r);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-12 * w, "{got:?} vs {want:?}");
        }
        // Two rows, one column, 1 V on row 0: the top column node feeds one
        // segment down to the bottom node, which goes to ground through a
        // segment and through row 1's branch.
        let below = 1.0 / (1.0 / r + h1);
        let i = 1.0 / (1.0 / h0 + r + below);
        let want = i * below / r;
        let got = exact_effective(&[g0, g1], None, 2, 1, r)[0];
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    }

    #[test]
    fn both_numberings_agree_and_current_is_conserved() {
        let (rows, cols, r) = (5, 7, 2.0);
        let gp = random_g(rows, cols, 3);
        let gn = random_g(rows, cols, 4);
        for gn in [None, Some(gn.as_slice())] {
            let a = Ladder::new(&gp, gn, rows, cols, r, true);
            let b = Ladder::new(&gp, gn, rows, cols, r, false);
            let (da, db) = (a.effective(), b.effective());
            assert!(norm(&sub(&da, &db)) <= 1e-12 * norm(&da));
            // What the drivers deliver reaches the sense nodes.
            let v: Vec<f64> = (0..rows).map(|i| 0.1 * (i + 1) as f64).collect();
            let x = a.voltages(&v);
            let mut driven = 0.0;
            for (i, vi) in v.iter().enumerate() {
                driven += (vi - x[a.row_node(i, 0, 0)]) / r;
                if gn.is_some() {
                    driven += (-vi - x[a.row_node(i, 0, 1)]) / r;
                }
            }
            let sensed: f64 = currents(&v, &da, cols).iter().sum();
            assert!(
                (driven - sensed).abs() <= 1e-12 * driven.abs(),
                "{driven} vs {sensed}"
            );
        }
    }

    /// The first-order model is right to first order: its error relative to
    /// the effect shrinks in proportion to `r` (an index or sign mistake in
    /// `A` or `B` would leave an `O(1)` share).
    #[test]
    fn first_order_error_is_second_order() {
        let (rows, cols) = (6, 9);
        let gp = random_g(rows, cols, 5);
        let gn = random_g(rows, cols, 6);
        for gn in [None, Some(gn.as_slice())] {
            let share = |r: f64| {
                let exact = exact_effective(&gp, gn, rows, cols, r);
                let first = first_order(&gp, gn, rows, cols, r).diff;
                norm(&sub(&first, &exact)) / norm(&sub(&exact, &ideal(&gp, gn)))
            };
            let (coarse, fine) = (share(0.1), share(0.01));
            eprintln!(
                "2T2R {}: first-order error share {coarse:.3e} at 0.1 Ω, {fine:.3e} at 0.01 Ω",
                gn.is_some()
            );
            assert!(coarse < 0.05, "{coarse}");
            let ratio = coarse / fine;
            assert!((7.0..14.0).contains(&ratio), "share ratio {ratio}");
        }
    }

    /// One array's measured IR drop.
    struct Measured {
        /// `|D_exact - D0| / |D0|`.
        effect: f64,
        /// `|D_first - D_exact| / |D_exact - D0|`.
        share: f64,
        /// The same two for column currents, worst over the input vectors.
        vector_effect: f64,
        vector_share: f64,
        /// `|D_sat - D_exact| / |D_exact - D0|` for the resummed `g / (1 + r(A+B))`.
        resummed_share: f64,
        /// [`max_correction`].
        correction: f64,
        /// The largest column-node voltage, worst over the input vectors.
        rise: f64,
        /// Wall time of [`exact_effective`].
        seconds: f64,
    }

    fn measure(
        gp: &[f64],
        gn: Option<&[f64]>,
        rows: usize,
        cols: usize,
        r: f64,
        inputs: &[Vec<f64>],
    ) -> Measured {
        let ideal = ideal(gp, gn);
        let t = Instant::now();
        let exact = exact_effective(gp, gn, rows, cols, r);
        let seconds = t.elapsed().as_secs_f64();
        let eff = first_order(gp, gn, rows, cols, r);
        let effect_d = norm(&sub(&exact, &ideal));
        let sat = resummed(gp, gn, rows, cols, r).diff;
        let ladder = Ladder::new(gp, gn, rows, cols, r, cols <= rows);
        let (mut vector_effect, mut vector_share, mut rise) = (0.0_f64, 0.0_f64, 0.0_f64);
        for v in inputs {
            let (i0, ie, i1) = (
                currents(v, &ideal, cols),
                currents(v, &exact, cols),
                currents(v, &eff.diff, cols),
            );
            vector_effect = vector_effect.max(norm(&sub(&i0, &ie)) / norm(&i0));
            vector_share = vector_share.max(norm(&sub(&i1, &ie)) / norm(&sub(&i0, &ie)));
            let x = ladder.voltages(v);
            for i in 0..rows {
                for j in 0..cols {
                    rise = rise.max(x[ladder.col_node(i, j)].abs());
                }
            }
        }
        Measured {
            effect: effect_d / norm(&ideal),
            share: norm(&sub(&eff.diff, &exact)) / effect_d,
            vector_effect,
            vector_share,
            resummed_share: norm(&sub(&sat, &exact)) / effect_d,
            correction: max_correction(&eff, gp, gn),
            rise,
            seconds,
        }
    }

    /// A random `rows x cols` array at RAELLA's scale: levels 0..=15 at
    /// `G_OFF + level / 15 G_ON`; the 1T1R array, and the 2T2R pair holding
    /// the same level on a random one of its two devices (the other OFF).
    /// Also four input vectors, uniform in 0..1 V.
    fn raella_arrays(
        rows: usize,
        cols: usize,
        seed: u64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
        let mut rng = stream_rng(seed, &[rows as u64, cols as u64]);
        let on = |l: u32| G_OFF + f64::from(l) / 15.0 * G_ON;
        let (mut g1, mut gp, mut gn) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rows * cols {
            let g = on(rng.random_range(0..=15));
            let positive = rng.random_bool(0.5);
            g1.push(g);
            gp.push(if positive { g } else { G_OFF });
            gn.push(if positive { G_OFF } else { g });
        }
        let inputs = (0..4)
            .map(|_| (0..rows).map(|_| rng.random::<f64>()).collect())
            .collect();
        (g1, gp, gn, inputs)
    }

    fn report(kind: &str, rows: usize, cols: usize, r: f64, m: &Measured) {
        eprintln!(
            "{kind} {rows}x{cols} r = {r} Ω: effect {:.4} (column currents {:.4}); first-order error / effect {:.4} \
             (column currents {:.4}); resummed g/(1+c) error / effect {:.4}; max correction c {:.3}; \
             largest column-node voltage {:.4} V; exact solve {:.3} s",
            m.effect,
            m.vector_effect,
            m.share,
            m.vector_share,
            m.resummed_share,
            m.correction,
            m.rise,
            m.seconds,
        );
    }

    /// A 64x64 array at RAELLA's scale (`R_on` = 1333 Ω, OFF = `G_ON / 20`)
    /// with 1 and 2.5 Ω per segment: the IR drop is large, and the
    /// first-order model is out of its range (`max_correction` above 1).
    #[test]
    fn measured_on_a_64x64_array() {
        let (rows, cols) = (64, 64);
        let (g1, gp, gn, inputs) = raella_arrays(rows, cols, 2024);
        let mut rise = [[0.0; 2]; 2];
        for (k, (p, n)) in [(&g1, None), (&gp, Some(gn.as_slice()))]
            .into_iter()
            .enumerate()
        {
            let kind = if n.is_some() { "2T2R" } else { "1T1R" };
            for (ri, r) in [1.0, 2.5].into_iter().enumerate() {
                let m = measure(p, n, rows, cols, r, &inputs);
                report(kind, rows, cols, r, &m);
                rise[k][ri] = m.rise;
                // The effect is a large fraction of the signal ...
                let (lo, hi) = if ri == 0 { (0.4, 0.7) } else { (0.6, 0.9) };
                assert!(
                    (lo..hi).contains(&m.effect),
                    "{kind} r {r}: effect {}",
                    m.effect
                );
                assert!(
                    (lo..hi).contains(&m.vector_effect),
                    "{kind} r {r}: {}",
                    m.vector_effect
                );
                // ... and first order misses it by about its own size or more,
                // as max_correction warns.
                assert!(
                    m.correction > 1.0,
                    "{kind} r {r}: correction {}",
                    m.correction
                );
                assert!(
                    m.share > 0.6 && m.vector_share > 0.6,
                    "{kind} r {r}: share {}",
                    m.share
                );
                // The same correction resummed, g / (1 + c), stays within 15%.
                assert!(
                    m.resummed_share < 0.15,
                    "{kind} r {r}: resummed {}",
                    m.resummed_share
                );
                assert!(m.seconds < 10.0, "exact solve took {} s", m.seconds);
            }
        }
        // The net 2T2R current raises the column lines less than the 1T1R
        // current of the same magnitudes.
        eprintln!(
            "largest column-node voltage: 1T1R {:?} V, 2T2R {:?} V",
            rise[0], rise[1]
        );
        for ri in 0..2 {
            assert!(rise[1][ri] < 0.6 * rise[0][ri], "{rise:?}");
        }
    }

    /// Where the first-order model holds: smaller wire resistance or smaller
    /// arrays, at the same device scale.
    #[test]
    fn first_order_range_at_raella_scale() {
        let mut cases = vec![(64, 0.03), (64, 0.1), (64, 0.3)];
        cases.extend([(8, 1.0), (16, 1.0), (32, 1.0)]);
        for (size, r) in cases {
            let (g1, gp, gn, inputs) = raella_arrays(size, size, 7);
            for (p, n) in [(&g1, None), (&gp, Some(gn.as_slice()))] {
                let kind = if n.is_some() { "2T2R" } else { "1T1R" };
                let m = measure(p, n, size, size, r, &inputs);
                report(kind, size, size, r, &m);
                // The effect and the first-order error relative to it both
                // track max_correction c (measured: 0.45-0.68 c and 0.55-0.72 c).
                assert!(
                    m.correction < 1.0,
                    "{kind} {size} r {r}: c {}",
                    m.correction
                );
                let c = m.correction;
                assert!(
                    (0.35 * c..0.8 * c).contains(&m.effect),
                    "{kind} {size} r {r}: {}",
                    m.effect
                );
                assert!(
                    (0.4 * c..0.85 * c).contains(&m.share),
                    "{kind} {size} r {r}: {}",
                    m.share
                );
                // The resummed g / (1 + c) errs a third as much or less.
                assert!(
                    m.resummed_share < 0.35 * m.share,
                    "{kind} {size} r {r}: {}",
                    m.resummed_share
                );
            }
        }
    }
}
