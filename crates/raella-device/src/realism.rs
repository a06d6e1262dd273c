//! Device non-idealities beyond programming variation and stuck cells: a
//! finite OFF state, level-dependent programming error from a measured table,
//! power-law conductance drift with global compensation, IR drop along the
//! wires, and per-instance ADC offset, gain and integral nonlinearity.
//!
//! Each is off by default; its equation and source are in `docs/DEVICES.md`.
//! They are fixed when the crossbar is programmed (or, for the ADCs, when the
//! chip is made): draws come from [`crate::stream_rng`] streams keyed by the
//! programming seed, never from the run's read-noise streams.

use crate::DeviceError;

/// Drift's reference time `t0` (seconds after programming at which the
/// programmed conductances are the targets): aihwkit's `t_0 = 20 s`.
pub const DRIFT_T0_SECONDS: f64 = 20.0;

/// The relative distance from a drifted conductance within which
/// [`Drift::drift_devices`] checks that rounding to `f32` is settled: `2^-40`,
/// against at most about `2^-44` between [`exp_neg`]'s product and `pow`'s
/// (`exp_neg` within `2^-50` of `exp`; the exponent `nu ln(t / t0)`, at most
/// 64, rounded twice: `64 * 2^-51`; `pow` and the products within `2^-52`).
const DRIFT_CHECK: f64 = 1.0 / 1_099_511_627_776.0;

/// `exp(-x)` for `0 <= x <= 64` (within `2^-50` of it, relative), infinity
/// beyond that range or for NaN: `2^-k exp(r)` with `k` the nearest integer to
/// `x / ln 2` and `r = k ln 2 - x` (Cody and Waite's two-part `ln 2`, `|r| <=
/// ln 2 / 2`), `exp(r)` by its Taylor series to `r^12` (the remainder below
/// `2^-52`), `2^-k` from its exponent bits. Plain `f64` arithmetic, branch
/// free: the same bits on every machine, and it vectorises.
#[must_use]
#[inline(always)]
fn exp_neg(x: f64) -> f64 {
    // 1.5 * 2^52: adding it rounds to an integer and leaves that integer in
    // the low bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    // fdlibm's split of ln 2: `k * LN2_HI` is exact for |k| < 2^20.
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let shifted = x * std::f64::consts::LOG2_E + SHIFT;
    let k = shifted - SHIFT;
    let r = (k * LN2_HI - x) + k * LN2_LO;
    // 1/12!, 1/11!, ..., 1/2!, 1, 1 (Horner's scheme).
    const C: [f64; 13] = [
        2.087_675_698_786_81e-9,
        2.505_210_838_544_172e-8,
        2.755_731_922_398_589e-7,
        2.755_731_922_398_589_3e-6,
        2.480_158_730_158_73e-5,
        1.984_126_984_126_984e-4,
        1.388_888_888_888_889e-3,
        8.333_333_333_333_333e-3,
        4.166_666_666_666_666_4e-2,
        0.166_666_666_666_666_66,
        0.5,
        1.0,
        1.0,
    ];
    let mut p = C[0];
    for &c in &C[1..] {
        p = p * r + c;
    }
    // 2^-k: `k` is in the low bits of `shifted` (two's complement).
    let k_bits = shifted.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f64::from_bits((1023u64.wrapping_sub(k_bits)) << 52);
    if (0.0..=64.0).contains(&x) {
        p * scale
    } else {
        f64::INFINITY
    }
}

/// Level-dependent programming error, as measured-device data is published:
/// for each target level, the standard deviation (and optionally the mean) of
/// the programmed conductance's error, in units of one level step.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgrammingTable {
    sigma: Vec<f64>,
    mean: Vec<f64>,
}

/// A line of a programming table that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field} = {value:?}: {reason}")]
pub struct TableError {
    /// 1-based line number.
    pub line: usize,
    /// Column (or `header`, `levels`).
    pub field: String,
    /// The offending text.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl ProgrammingTable {
    /// Parses CSV text: a header `level,sigma` or `level,sigma,mean`, then one
    /// row per target level `0, 1, ..., max` in order (blank lines and lines
    /// starting with `#` ignored). `sigma >= 0` and `mean` are finite, in level
    /// steps.
    ///
    /// # Errors
    /// A [`TableError`] naming the line, column and value.
    pub fn parse(text: &str) -> Result<Self, TableError> {
        let err = |line: usize, field: &str, value: &str, reason: &str| TableError {
            line,
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let mut rows = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((hl, header)) = rows.next() else {
            return Err(err(1, "header", "", "the table is empty"));
        };
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let with_mean = match names.as_slice() {
            ["level", "sigma"] => false,
            ["level", "sigma", "mean"] => true,
            _ => {
                return Err(err(
                    hl,
                    "header",
                    header,
                    "expected `level,sigma` or `level,sigma,mean`",
                ));
            }
        };
        let (mut sigma, mut mean) = (Vec::new(), Vec::new());
        for (ln, line) in rows {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != names.len() {
                return Err(err(
                    ln,
                    "row",
                    line,
                    &format!("expected {} values", names.len()),
                ));
            }
            let level: usize = cells[0]
                .parse()
                .map_err(|_| err(ln, "level", cells[0], "not a whole number"))?;
            if level != sigma.len() {
                return Err(err(
                    ln,
                    "level",
                    cells[0],
                    &format!(
                        "levels must be 0, 1, 2, ... in order; expected {}",
                        sigma.len()
                    ),
                ));
            }
            let num = |field: &str, s: &str| -> Result<f64, TableError> {
                match s.parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(v),
                    _ => Err(err(ln, field, s, "not a finite number")),
                }
            };
            let s = num("sigma", cells[1])?;
            if s < 0.0 {
                return Err(err(ln, "sigma", cells[1], "must be >= 0"));
            }
            sigma.push(s);
            mean.push(if with_mean {
                num("mean", cells[2])?
            } else {
                0.0
            });
        }
        if sigma.len() > 256 {
            return Err(err(
                hl,
                "levels",
                &sigma.len().to_string(),
                "more than 256 levels",
            ));
        }
        Ok(Self { sigma, mean })
    }

    /// Levels the table covers (`max + 1`).
    #[must_use]
    pub fn levels(&self) -> usize {
        self.sigma.len()
    }

    /// Checks the table covers exactly the device's levels `0..=max_level`.
    ///
    /// # Errors
    /// A message naming both counts.
    pub fn check_device(&self, max_level: u8) -> Result<(), String> {
        let want = usize::from(max_level) + 1;
        if self.levels() == want {
            Ok(())
        } else {
            Err(format!(
                "the table has {} levels (0..={}), but the device holds {want} (0..={max_level})",
                self.levels(),
                self.levels().saturating_sub(1),
            ))
        }
    }

    /// `(sigma, mean)` of a level's error, in level steps.
    #[must_use]
    pub fn error(&self, level: u8) -> (f64, f64) {
        let l = usize::from(level);
        (
            self.sigma.get(l).copied().unwrap_or(0.0),
            self.mean.get(l).copied().unwrap_or(0.0),
        )
    }
}

/// How drift is compensated at read time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriftCompensation {
    /// Not at all.
    #[default]
    None,
    /// aihwkit's global compensation: one scale per layer, `alpha = sum_j |I_j(t0)|
    /// / sum_j |I_j(t)|` from a reference read of all-ones inputs, applied as the
    /// ADC's gain (so read noise is scaled with the signal).
    Global,
}

/// Power-law conductance drift `G(t) = G(t0) (t / t0)^-nu`, `nu` drawn per
/// device from `N(nu_mean, nu_sigma)` and clamped at 0 (drift never raises a
/// conductance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    nu_mean: f64,
    nu_sigma: f64,
    t_seconds: f64,
    compensation: DriftCompensation,
}

impl Drift {
    /// Builds a drift model read `t_seconds` after programming.
    ///
    /// # Errors
    /// [`DeviceError::NoiseParameter`] for a negative or non-finite `nu` or
    /// sigma, or `t_seconds` below [`DRIFT_T0_SECONDS`].
    pub fn new(
        nu_mean: f64,
        nu_sigma: f64,
        t_seconds: f64,
        compensation: DriftCompensation,
    ) -> Result<Self, DeviceError> {
        for (field, value) in [("drift_nu", nu_mean), ("drift_nu_sigma", nu_sigma)] {
            if !value.is_finite() || !(0.0..=1.0).contains(&value) {
                return Err(DeviceError::NoiseParameter {
                    field,
                    range: "[0, 1]",
                    value,
                });
            }
        }
        if !t_seconds.is_finite() || t_seconds < DRIFT_T0_SECONDS {
            return Err(DeviceError::NoiseParameter {
                field: "drift_t_seconds",
                range: "[20, inf) (t0 = 20 s)",
                value: t_seconds,
            });
        }
        Ok(Self {
            nu_mean,
            nu_sigma,
            t_seconds,
            compensation,
        })
    }

    /// Mean drift exponent.
    #[must_use]
    pub fn nu_mean(&self) -> f64 {
        self.nu_mean
    }

    /// Device-to-device sigma of the exponent.
    #[must_use]
    pub fn nu_sigma(&self) -> f64 {
        self.nu_sigma
    }

    /// Seconds after programming of the read.
    #[must_use]
    pub fn t_seconds(&self) -> f64 {
        self.t_seconds
    }

    /// The compensation.
    #[must_use]
    pub fn compensation(&self) -> DriftCompensation {
        self.compensation
    }

    /// The factor `(t / t0)^-nu` for one device's exponent.
    #[must_use]
    pub fn factor(&self, nu: f64) -> f64 {
        (self.t_seconds / DRIFT_T0_SECONDS).powf(-nu.max(0.0))
    }

    /// A device's conductance `g` after drift with exponent `nu`:
    /// `g (t / t0)^-nu` ([`Drift::factor`]) rounded to `f32` once.
    #[must_use]
    pub fn drifted(&self, g: f32, nu: f64) -> f32 {
        #[allow(clippy::cast_possible_truncation)]
        let v = (f64::from(g) * self.factor(nu)) as f32;
        v
    }

    /// [`Drift::drifted`] for many devices, the same `f32` bit for bit: device
    /// `i` (where `skip[i]` is false) with conductance `g[i]` and exponent
    /// `nus[i]`. The factors `exp(-nu ln(t / t0))` come from a polynomial
    /// that vectorises (within `2^-50` of `exp`), in place of a `pow` per
    /// device; each product is kept where every value within `2^-40` of it,
    /// relative (far more than the two forms' combined error, about `2^-44`:
    /// the polynomial's and `pow`'s, and the exponent's rounding), rounds to
    /// the same `f32`, so `pow`'s product rounds to it too; elsewhere (about
    /// one device in 40,000) and for exponents `nu ln(t / t0)` above 64, the
    /// device takes [`Drift::drifted`]. `docs/DEVICES.md` has the argument.
    ///
    /// # Panics
    /// If `g`, `nus` and `skip` differ in length.
    pub fn drift_devices(&self, g: &mut [f32], nus: &[f64], skip: &[bool]) {
        assert!(
            g.len() == nus.len() && g.len() == skip.len(),
            "one exponent per device"
        );
        let log_ratio = (self.t_seconds / DRIFT_T0_SECONDS).ln();
        let mut unsettled = [false; 256];
        for ((g, nus), skip) in g.chunks_mut(256).zip(nus.chunks(256)).zip(skip.chunks(256)) {
            let unsettled = &mut unsettled[..g.len()];
            // Compiled for the process's vector set: the loop vectorises.
            crate::Kernel::dispatch_selected(
                #[inline(always)]
                || {
                    for (((g, &nu), &skip), u) in
                        g.iter_mut().zip(nus).zip(skip).zip(&mut *unsettled)
                    {
                        let v = f64::from(*g) * exp_neg(nu.max(0.0) * log_ratio);
                        #[allow(clippy::cast_possible_truncation)]
                        let (lo, hi) = ((v - v * DRIFT_CHECK) as f32, (v + v * DRIFT_CHECK) as f32);
                        let keep = skip || *g == 0.0;
                        // Unsettled devices keep their conductance for `pow`.
                        *u = !keep && (lo != hi || !v.is_finite());
                        *g = if keep || *u { *g } else { lo };
                    }
                },
            );
            for ((g, &nu), _) in g.iter_mut().zip(nus).zip(&*unsettled).filter(|(_, u)| **u) {
                *g = self.drifted(*g, nu);
            }
        }
    }

    /// True when drift changes nothing.
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.t_seconds == DRIFT_T0_SECONDS || (self.nu_mean == 0.0 && self.nu_sigma == 0.0)
    }
}

/// IR drop: wire resistance per cell segment along rows and columns
/// (`crate::ir_drop` has the model), with the device ON resistance that sets
/// the scale of one level step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IrDropModel {
    wire_ohm: f64,
    r_on_ohm: f64,
}

impl IrDropModel {
    /// Builds the model.
    ///
    /// # Errors
    /// [`DeviceError::NoiseParameter`] for a negative or non-finite resistance,
    /// or an ON resistance of 0.
    pub fn new(wire_ohm: f64, r_on_ohm: f64) -> Result<Self, DeviceError> {
        if !wire_ohm.is_finite() || wire_ohm < 0.0 {
            return Err(DeviceError::NoiseParameter {
                field: "ir_drop_wire_ohm",
                range: "[0, inf)",
                value: wire_ohm,
            });
        }
        if !r_on_ohm.is_finite() || r_on_ohm <= 0.0 {
            return Err(DeviceError::NoiseParameter {
                field: "r_on_ohm",
                range: "(0, inf)",
                value: r_on_ohm,
            });
        }
        Ok(Self { wire_ohm, r_on_ohm })
    }

    /// Wire resistance per cell segment, ohm.
    #[must_use]
    pub fn wire_ohm(&self) -> f64 {
        self.wire_ohm
    }

    /// Device ON resistance, ohm.
    #[must_use]
    pub fn r_on_ohm(&self) -> f64 {
        self.r_on_ohm
    }
}

/// Per-instance ADC non-idealities, drawn per ADC from the programming seed:
/// offset `N(0, offset_lsb_sigma)` LSB, gain error `N(0, gain_sigma)`, and an
/// integral nonlinearity bow of peak `inl_lsb * u`, `u ~ U[-1, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AdcVariation {
    offset_lsb_sigma: f64,
    gain_sigma: f64,
    inl_lsb: f64,
}

impl AdcVariation {
    /// Builds the model.
    ///
    /// # Errors
    /// [`DeviceError::NoiseParameter`] for a negative or non-finite value, or a
    /// gain sigma above 0.5.
    pub fn new(offset_lsb_sigma: f64, gain_sigma: f64, inl_lsb: f64) -> Result<Self, DeviceError> {
        for (field, value, most, range) in [
            ("adc_offset_lsb_sigma", offset_lsb_sigma, 64.0, "[0, 64]"),
            ("adc_gain_sigma", gain_sigma, 0.5, "[0, 0.5]"),
            ("adc_inl_lsb", inl_lsb, 64.0, "[0, 64]"),
        ] {
            if !value.is_finite() || !(0.0..=most).contains(&value) {
                return Err(DeviceError::NoiseParameter {
                    field,
                    range,
                    value,
                });
            }
        }
        Ok(Self {
            offset_lsb_sigma,
            gain_sigma,
            inl_lsb,
        })
    }

    /// True when every ADC is ideal.
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.offset_lsb_sigma == 0.0 && self.gain_sigma == 0.0 && self.inl_lsb == 0.0
    }

    /// Offset sigma, LSB.
    #[must_use]
    pub fn offset_lsb_sigma(&self) -> f64 {
        self.offset_lsb_sigma
    }

    /// Relative gain sigma.
    #[must_use]
    pub fn gain_sigma(&self) -> f64 {
        self.gain_sigma
    }

    /// Peak INL, LSB.
    #[must_use]
    pub fn inl_lsb(&self) -> f64 {
        self.inl_lsb
    }

    /// Draws one ADC instance.
    pub fn draw(&self, rng: &mut crate::Xoshiro256PlusPlus) -> AdcInstance {
        use rand::RngExt;
        let normal = |rng: &mut crate::Xoshiro256PlusPlus| -> f64 {
            rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
        };
        let offset = self.offset_lsb_sigma * normal(rng);
        let gain = 1.0 + self.gain_sigma * normal(rng);
        let u: f64 = rng.random_range(-1.0..=1.0);
        #[allow(clippy::cast_possible_truncation)]
        AdcInstance {
            gain: gain as f32,
            offset: offset as f32,
            inl: (self.inl_lsb * u) as f32,
        }
    }
}

/// One ADC's drawn non-idealities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdcInstance {
    /// Gain (1 is ideal).
    pub gain: f32,
    /// Offset, LSB.
    pub offset: f32,
    /// Peak of the INL bow, LSB (signed).
    pub inl: f32,
}

impl AdcInstance {
    /// The input the ideal quantiser sees for analog input `sum`, for an ADC
    /// whose codes span `[lo, hi]`: `gain * sum + offset + inl * (1 - x^2)`,
    /// `x` the clamped position of `sum` in the range (-1 at `lo`, 1 at `hi`):
    /// a bow, zero at both ends, peak `inl` at mid-scale.
    #[must_use]
    #[inline(always)]
    pub fn transfer(&self, sum: f32, lo: f32, hi: f32) -> f32 {
        let half = 0.5 * (hi - lo);
        let x = ((sum - (lo + half)) / half).clamp(-1.0, 1.0);
        self.gain * sum + self.offset + self.inl * (1.0 - x * x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_rng;

    #[test]
    fn tables_parse_and_reject_with_the_line() {
        let t = ProgrammingTable::parse("level,sigma,mean\n0,0.1,0.05\n1,0.2,0\n# c\n2,0.3,-0.1\n")
            .unwrap();
        assert_eq!(t.levels(), 3);
        assert_eq!(t.error(2), (0.3, -0.1));
        assert!(t.check_device(2).is_ok());
        assert!(t.check_device(3).unwrap_err().contains("0..=3"));
        let e = ProgrammingTable::parse("level,sigma\n0,0.1\n2,0.2\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "level"));
        let e = ProgrammingTable::parse("level,sigma\n0,-1\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "sigma"));
        let e = ProgrammingTable::parse("level,sigma\n0,NaN\n").unwrap_err();
        assert_eq!(e.field, "sigma");
        assert!(ProgrammingTable::parse("lvl,s\n").is_err());
        assert!(ProgrammingTable::parse("").is_err());
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(Drift::new(0.05, 0.01, 10.0, DriftCompensation::None).is_err());
        assert!(Drift::new(-0.05, 0.0, 100.0, DriftCompensation::None).is_err());
        assert!(Drift::new(f64::NAN, 0.0, 100.0, DriftCompensation::None).is_err());
        assert!(AdcVariation::new(-1.0, 0.0, 0.0).is_err());
        assert!(AdcVariation::new(0.0, 0.7, 0.0).is_err());
        assert!(IrDropModel::new(1.0, 0.0).is_err());
        assert!(IrDropModel::new(f64::INFINITY, 1333.0).is_err());
    }

    #[test]
    fn drift_factor_is_the_power_law() {
        let d = Drift::new(0.05, 0.0, 2000.0, DriftCompensation::None).unwrap();
        assert!((d.factor(0.05) - 100f64.powf(-0.05)).abs() < 1e-12);
        assert!((d.factor(-0.2) - 1.0).abs() < 1e-12, "clamped at 0");
        assert!(
            Drift::new(0.05, 0.0, 20.0, DriftCompensation::None)
                .unwrap()
                .is_off()
        );
    }

    /// `exp_neg` is within `2^-50` of `exp` over its range (16 times inside
    /// what `DRIFT_CHECK` allows for), and infinite outside it; the devices
    /// it drifts are `Drift::drifted`'s (`pow`'s) bit for bit, a conductance
    /// at zero or a skipped device untouched, with `pow` taken for few of
    /// them.
    #[test]
    fn fast_drift_is_pow_bit_for_bit() {
        use rand::RngExt;
        let mut rng = stream_rng(9, &[]);
        let mut worst = 0f64;
        for i in 0..200_000 {
            let x = if i < 1000 {
                f64::from(i) * 0.064
            } else {
                rng.random::<f64>() * 64.0
            };
            let (got, want) = (exp_neg(x), (-x).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2f64.powi(-50), "relative error {worst:e}");
        assert_eq!(exp_neg(0.0).to_bits(), 1f64.to_bits());
        for x in [64.001, 1e6, f64::INFINITY, f64::NAN, -0.5] {
            assert_eq!(exp_neg(x), f64::INFINITY, "{x}");
        }
        let mut fallbacks = 0usize;
        let mut devices = 0usize;
        for t in [21.0, 86_400.0, 31_536_000.0, 3e12, 1e300] {
            let d = Drift::new(0.3, 0.2, t, DriftCompensation::None).unwrap();
            let n = 100_000;
            let g: Vec<f32> = (0..n)
                .map(|i| match i % 7 {
                    0 => 0.0,
                    1 => f32::from(u8::try_from(i % 16).unwrap()),
                    _ => rng.random::<f32>() * 16.0,
                })
                .collect();
            // Exponents in [-0.3, 2.9]: clamped at 0, and past `exp_neg`'s
            // range for the longest times.
            let nus: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 3.2 - 0.3).collect();
            let mut fast = g.clone();
            let skip: Vec<bool> = (0..n).map(|i| i % 11 == 3).collect();
            d.drift_devices(&mut fast, &nus, &skip);
            for i in 0..n {
                let want = if i % 11 == 3 || g[i] == 0.0 {
                    g[i]
                } else {
                    d.drifted(g[i], nus[i])
                };
                assert_eq!(
                    fast[i].to_bits(),
                    want.to_bits(),
                    "t {t} g {} nu {}",
                    g[i],
                    nus[i]
                );
                let v = f64::from(g[i]) * exp_neg(nus[i].max(0.0) * (t / DRIFT_T0_SECONDS).ln());
                #[allow(clippy::cast_possible_truncation)]
                let settled = (v - v * DRIFT_CHECK) as f32 == (v + v * DRIFT_CHECK) as f32;
                if i % 11 != 3 && g[i] != 0.0 && t < 1e12 {
                    devices += 1;
                    fallbacks += usize::from(!settled);
                }
            }
        }
        // At most about one device in 10,000 (a product within 2^-40 of an
        // `f32` rounding boundary, or a factor below about 1e-28).
        assert!(fallbacks * 10_000 < devices * 2, "{fallbacks} of {devices}");
    }

    #[test]
    fn adc_instances_have_the_stated_statistics() {
        let v = AdcVariation::new(0.5, 0.02, 1.0).unwrap();
        let mut rng = stream_rng(3, &[1]);
        let n = 20_000;
        let draws: Vec<AdcInstance> = (0..n).map(|_| v.draw(&mut rng)).collect();
        let stats = |f: &dyn Fn(&AdcInstance) -> f64| {
            let m = draws.iter().map(f).sum::<f64>() / f64::from(n);
            let var = draws.iter().map(|d| (f(d) - m).powi(2)).sum::<f64>() / f64::from(n);
            (m, var.sqrt())
        };
        let (m, s) = stats(&|d| f64::from(d.offset));
        assert!(m.abs() < 0.02 && (s - 0.5).abs() < 0.02, "offset {m} {s}");
        let (m, s) = stats(&|d| f64::from(d.gain));
        assert!(
            (m - 1.0).abs() < 0.001 && (s - 0.02).abs() < 0.001,
            "gain {m} {s}"
        );
        // U[-1, 1]: mean 0, sd 1/sqrt(3).
        let (m, s) = stats(&|d| f64::from(d.inl));
        assert!(
            m.abs() < 0.02 && (s - 3f64.sqrt().recip()).abs() < 0.01,
            "inl {m} {s}"
        );
        // The bow: zero at both ends, peak at mid-scale.
        let a = AdcInstance {
            gain: 1.0,
            offset: 0.0,
            inl: 2.0,
        };
        assert_eq!(a.transfer(-64.0, -64.0, 63.0), -64.0);
        assert_eq!(a.transfer(63.0, -64.0, 63.0), 63.0);
        assert!((a.transfer(-0.5, -64.0, 63.0) - 1.5).abs() < 1e-6);
        // Reproducible for a seed, different for another.
        assert_eq!(
            v.draw(&mut stream_rng(9, &[])),
            v.draw(&mut stream_rng(9, &[]))
        );
        assert_ne!(
            v.draw(&mut stream_rng(9, &[])),
            v.draw(&mut stream_rng(10, &[]))
        );
    }
}
