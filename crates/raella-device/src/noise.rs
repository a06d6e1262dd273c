//! Device non-idealities, all off by default and seeded when on.
//!
//! * Column noise: Gaussian on each analog column sum with
//!   `sigma = E * sqrt(N+ + N-)`, where `N+` / `N-` are the summed positive and
//!   negative device contributions (pulses x level) in LSB units.
//! * Programming variation: each programmed device level is multiplied by
//!   `1 + N(0, programming_sigma)` (a relative, per-device error; an OFF device
//!   stays OFF), then clamped to `[0, max_level]`.
//! * Stuck cells: each device is independently stuck at 0 or at the maximum level.
//!
//! * Read noise per device (`read_noise_device_sigma`): each device's current
//!   during one read is `G (1 + N(0, s))`, so a conversion's sum gets Gaussian
//!   noise of variance `s^2 sum_r p_r^2 (G+^2 + G-^2)` (the sum of independent
//!   Gaussians, drawn as one). Both read-noise models may be on at once; their
//!   variances add.
//! * The rest (finite OFF state, programming tables, drift, IR drop, ADC
//!   instances) is in [`crate::realism`].
//!
//! Read-noise draws come from counter-based SplitMix64 streams
//! ([`crate::normal`]): each conversion's draw is a function of its stream key
//! and column alone. Every other draw comes from [`Xoshiro256PlusPlus`], a
//! named, portable generator,
//! seeded through [`stream_rng`] so results never depend on thread scheduling.

use rand::SeedableRng;
pub use rand_xoshiro::Xoshiro256PlusPlus;

use std::sync::Arc;

use crate::DeviceError;
use crate::realism::{AdcVariation, Drift, IrDropModel, ProgrammingTable};

/// Programming-time non-idealities of the devices (and of the ADC instances,
/// fixed when the chip is made).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceNoise {
    programming_sigma: f64,
    stuck_at_zero: f64,
    stuck_at_max: f64,
    on_off_ratio: f64,
    table: Option<Arc<ProgrammingTable>>,
    drift: Option<Drift>,
    ir_drop: Option<IrDropModel>,
    adc: AdcVariation,
}

impl Default for DeviceNoise {
    fn default() -> Self {
        Self {
            programming_sigma: 0.0,
            stuck_at_zero: 0.0,
            stuck_at_max: 0.0,
            on_off_ratio: f64::INFINITY,
            table: None,
            drift: None,
            ir_drop: None,
            adc: AdcVariation::default(),
        }
    }
}

impl DeviceNoise {
    /// Validates and builds a device-noise model.
    ///
    /// # Errors
    /// [`DeviceError::NoiseParameter`] for a negative or non-finite sigma, or a
    /// probability outside [0, 1] (or the two stuck probabilities summing past 1).
    pub fn new(
        programming_sigma: f64,
        stuck_at_zero: f64,
        stuck_at_max: f64,
    ) -> Result<Self, DeviceError> {
        if !programming_sigma.is_finite() || programming_sigma < 0.0 {
            return Err(DeviceError::NoiseParameter {
                field: "programming_sigma",
                range: "[0, inf)",
                value: programming_sigma,
            });
        }
        for (field, value) in [
            ("stuck_at_zero", stuck_at_zero),
            ("stuck_at_max", stuck_at_max),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(DeviceError::NoiseParameter {
                    field,
                    range: "[0, 1]",
                    value,
                });
            }
        }
        if stuck_at_zero + stuck_at_max > 1.0 {
            return Err(DeviceError::NoiseParameter {
                field: "stuck_at_zero + stuck_at_max",
                range: "[0, 1]",
                value: stuck_at_zero + stuck_at_max,
            });
        }
        Ok(Self {
            programming_sigma,
            stuck_at_zero,
            stuck_at_max,
            ..Self::default()
        })
    }

    /// With a finite OFF state: `G_off = G_on / ratio` (infinite: OFF draws no
    /// current, the default).
    ///
    /// # Errors
    /// [`DeviceError::NoiseParameter`] unless `ratio > 1` (or infinite).
    pub fn with_on_off_ratio(mut self, ratio: f64) -> Result<Self, DeviceError> {
        if ratio.is_nan() || ratio <= 1.0 {
            return Err(DeviceError::NoiseParameter {
                field: "on_off_ratio",
                range: "(1, inf]",
                value: ratio,
            });
        }
        self.on_off_ratio = ratio;
        Ok(self)
    }

    /// With level-dependent programming error from a table (replaces
    /// `programming_sigma` for every device).
    #[must_use]
    pub fn with_table(mut self, table: Arc<ProgrammingTable>) -> Self {
        self.table = Some(table);
        self
    }

    /// With conductance drift.
    #[must_use]
    pub fn with_drift(mut self, drift: Drift) -> Self {
        self.drift = (!drift.is_off()).then_some(drift);
        self
    }

    /// With IR drop along the wires.
    #[must_use]
    pub fn with_ir_drop(mut self, ir: IrDropModel) -> Self {
        self.ir_drop = (ir.wire_ohm() > 0.0).then_some(ir);
        self
    }

    /// With per-instance ADC non-idealities.
    #[must_use]
    pub fn with_adc(mut self, adc: AdcVariation) -> Self {
        self.adc = adc;
        self
    }

    /// The ON/OFF conductance ratio (infinite: ideal OFF).
    #[must_use]
    pub fn on_off_ratio(&self) -> f64 {
        self.on_off_ratio
    }

    /// The OFF conductance in level steps for devices of `max_level`:
    /// `G_off = G_on / ratio` with `G_on = G_off + max_level` steps, so
    /// `G_off = max_level / (ratio - 1)`; 0 for an ideal OFF state.
    #[must_use]
    pub fn off_level(&self, max_level: u8) -> f64 {
        if self.on_off_ratio.is_infinite() {
            0.0
        } else {
            f64::from(max_level) / (self.on_off_ratio - 1.0)
        }
    }

    /// The programming table, if any.
    #[must_use]
    pub fn table(&self) -> Option<&ProgrammingTable> {
        self.table.as_deref()
    }

    /// The drift model, if drift is on.
    #[must_use]
    pub fn drift(&self) -> Option<&Drift> {
        self.drift.as_ref()
    }

    /// The IR-drop model, if on.
    #[must_use]
    pub fn ir_drop(&self) -> Option<&IrDropModel> {
        self.ir_drop.as_ref()
    }

    /// The ADC instances' variation.
    #[must_use]
    pub fn adc(&self) -> &AdcVariation {
        &self.adc
    }

    /// True when programmed conductances are exactly the target levels (the
    /// ADCs may still be non-ideal).
    #[must_use]
    pub fn levels_exact(&self) -> bool {
        self.on_off_ratio.is_infinite() && self.levels_exact_above_off()
    }

    /// True when every programmed conductance is its target level plus the
    /// same OFF conductance ([`Self::off_level`], possibly zero): no
    /// variation, stuck cells, drift or IR drop. A 2T2R pair's OFF currents
    /// then cancel exactly in its analog subtraction.
    #[must_use]
    pub fn levels_exact_above_off(&self) -> bool {
        self.programming_sigma == 0.0
            && self.stuck_at_zero == 0.0
            && self.stuck_at_max == 0.0
            && self.table.is_none()
            && self.drift.is_none()
            && self.ir_drop.is_none()
    }

    /// Relative standard deviation of programmed levels.
    #[must_use]
    pub fn programming_sigma(&self) -> f64 {
        self.programming_sigma
    }

    /// Probability a device is stuck at level 0.
    #[must_use]
    pub fn stuck_at_zero(&self) -> f64 {
        self.stuck_at_zero
    }

    /// Probability a device is stuck at its maximum level.
    #[must_use]
    pub fn stuck_at_max(&self) -> f64 {
        self.stuck_at_max
    }

    /// True when the model changes nothing.
    #[must_use]
    pub fn is_ideal(&self) -> bool {
        self.levels_exact() && self.adc.is_off()
    }
}

/// Read-time Gaussian noise on each column sum: lumped, `sigma = E * sqrt(N+ +
/// N-)`, and per device, `sigma^2 = s^2 sum_r p_r^2 (G+^2 + G-^2)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ColumnNoise {
    e: f64,
    device_sigma: f64,
}

impl ColumnNoise {
    /// Builds column noise of relative magnitude `e` (0.04 is "E = 4%").
    ///
    /// # Errors
    /// [`DeviceError::NoiseParameter`] for a negative or non-finite `e`.
    pub fn new(e: f64) -> Result<Self, DeviceError> {
        if !e.is_finite() || e < 0.0 {
            return Err(DeviceError::NoiseParameter {
                field: "noise_e",
                range: "[0, inf)",
                value: e,
            });
        }
        Ok(Self {
            e,
            device_sigma: 0.0,
        })
    }

    /// With per-device read noise of relative sigma `s` per read.
    ///
    /// # Errors
    /// [`DeviceError::NoiseParameter`] for a negative or non-finite `s`.
    pub fn with_device_sigma(mut self, s: f64) -> Result<Self, DeviceError> {
        if !s.is_finite() || s < 0.0 {
            return Err(DeviceError::NoiseParameter {
                field: "read_noise_device_sigma",
                range: "[0, inf)",
                value: s,
            });
        }
        self.device_sigma = s;
        Ok(self)
    }

    /// The per-device relative read sigma.
    #[must_use]
    pub fn device_sigma(&self) -> f64 {
        self.device_sigma
    }

    /// True when the lumped model needs `N+ + N-`.
    #[must_use]
    pub fn needs_magnitude(&self) -> bool {
        self.e > 0.0
    }

    /// True when the per-device model needs `sum p^2 (G+^2 + G-^2)`.
    #[must_use]
    pub fn needs_squares(&self) -> bool {
        self.device_sigma > 0.0
    }

    /// The relative magnitude `E`.
    #[must_use]
    pub fn e(&self) -> f64 {
        self.e
    }

    /// True when no noise is added.
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.e == 0.0 && self.device_sigma == 0.0
    }

    /// The standard deviation of one conversion's noise, given `magnitude =
    /// N+ + N-` (lumped) and `squares = sum_r p_r^2 (G+^2 + G-^2)` (per
    /// device): `sqrt(E^2 magnitude + s^2 squares)`.
    #[inline(always)]
    #[must_use]
    pub fn sigma(&self, magnitude: f32, squares: f32) -> f32 {
        #[allow(clippy::cast_possible_truncation)]
        let (e, s) = (self.e as f32, self.device_sigma as f32);
        (e * e * magnitude.max(0.0) + s * s * squares.max(0.0)).sqrt()
    }

    /// Adds `sigma * z` to every sum of a row, `z` the row's standard normal
    /// draws ([`crate::normal::fill_normals`]); `magnitudes` / `squares` as
    /// [`Self::sigma`] (empty when the model needing them is off). Branch-free.
    #[inline(always)]
    pub fn perturb_row(&self, sums: &mut [f32], magnitudes: &[f32], squares: &[f32], z: &[f32]) {
        match (magnitudes.is_empty(), squares.is_empty()) {
            (false, true) => {
                #[allow(clippy::cast_possible_truncation)]
                let e = self.e as f32;
                for ((s, &m), &z) in sums.iter_mut().zip(magnitudes).zip(z) {
                    *s += e * m.max(0.0).sqrt() * z;
                }
            }
            (true, false) => {
                #[allow(clippy::cast_possible_truncation)]
                let d = self.device_sigma as f32;
                for ((s, &q), &z) in sums.iter_mut().zip(squares).zip(z) {
                    *s += d * q.max(0.0).sqrt() * z;
                }
            }
            (false, false) => {
                for (((s, &m), &q), &z) in sums.iter_mut().zip(magnitudes).zip(squares).zip(z) {
                    *s += self.sigma(m, q) * z;
                }
            }
            (true, true) => {}
        }
    }
}

/// A generator for one independent stream, derived from a seed and a stream
/// path (e.g. `[layer, crossbar, vector]`) by SplitMix64 mixing.
///
/// The same `(seed, stream)` always gives the same sequence on every platform;
/// different streams are statistically independent.
#[must_use]
pub fn stream_rng(seed: u64, stream: &[u64]) -> Xoshiro256PlusPlus {
    let mut h = splitmix64(seed ^ 0x5241_454c_4c41_0001);
    for &s in stream {
        h = splitmix64(h ^ splitmix64(s.wrapping_add(0x9e37_79b9_7f4a_7c15)));
    }
    Xoshiro256PlusPlus::seed_from_u64(h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a = stream_rng(7, &[1, 2]).next_u64();
        assert_eq!(a, stream_rng(7, &[1, 2]).next_u64());
        assert_ne!(a, stream_rng(7, &[2, 1]).next_u64());
        assert_ne!(a, stream_rng(8, &[1, 2]).next_u64());
    }

    #[test]
    fn bad_noise_parameters_are_rejected() {
        assert!(DeviceNoise::new(-0.1, 0.0, 0.0).is_err());
        assert!(DeviceNoise::new(0.1, 1.5, 0.0).is_err());
        assert!(DeviceNoise::new(0.1, 0.6, 0.6).is_err());
        assert!(ColumnNoise::new(f64::NAN).is_err());
        assert!(ColumnNoise::new(0.04).is_ok());
    }

    #[test]
    fn column_noise_has_the_stated_sigma() {
        let noise = ColumnNoise::new(0.1).unwrap();
        let n = 20_000;
        let mut sums = vec![0f32; n];
        let mut z = vec![0f32; n];
        crate::normal::fill_normals(crate::normal::stream_key(1, &[]), &mut z);
        noise.perturb_row(&mut sums, &vec![400.0; n], &[], &z);
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &d in &sums {
            let d = f64::from(d);
            s1 += d;
            s2 += d * d;
        }
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        let mean = s1 / nf;
        let sd = (s2 / nf - mean * mean).sqrt();
        // sigma = 0.1 * sqrt(400) = 2; the sample sd of 20k draws is within 3% of it
        // with overwhelming probability, and the seed is fixed.
        assert!((sd - 2.0).abs() < 0.06, "sd {sd}");
        assert!(mean.abs() < 0.05, "mean {mean}");
    }
}
