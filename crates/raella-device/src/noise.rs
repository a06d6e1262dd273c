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
//! Every draw comes from [`Xoshiro256PlusPlus`], a named, portable generator,
//! seeded through [`stream_rng`] so results never depend on thread scheduling.

use rand::SeedableRng;
pub use rand_xoshiro::Xoshiro256PlusPlus;

use crate::DeviceError;

/// Programming-time non-idealities of the devices.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DeviceNoise {
    programming_sigma: f64,
    stuck_at_zero: f64,
    stuck_at_max: f64,
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
        })
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
        self.programming_sigma == 0.0 && self.stuck_at_zero == 0.0 && self.stuck_at_max == 0.0
    }
}

/// Read-time Gaussian noise on each column sum, `sigma = E * sqrt(N+ + N-)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ColumnNoise {
    e: f64,
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
        Ok(Self { e })
    }

    /// The relative magnitude `E`.
    #[must_use]
    pub fn e(&self) -> f64 {
        self.e
    }

    /// True when no noise is added.
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.e == 0.0
    }

    /// Adds one noise draw to `sum`, given `magnitude = N+ + N-`.
    #[inline]
    pub fn perturb(&self, sum: f32, magnitude: f32, rng: &mut Xoshiro256PlusPlus) -> f32 {
        if self.e == 0.0 || magnitude <= 0.0 {
            return sum;
        }
        let z: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng);
        // Column sums are < 2^24, so the narrowing keeps every bit that matters.
        #[allow(clippy::cast_possible_truncation)]
        let noisy = (f64::from(sum) + self.e * f64::from(magnitude).sqrt() * z) as f32;
        noisy
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
        let mut rng = stream_rng(1, &[]);
        let n = 20_000;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for _ in 0..n {
            let d = f64::from(noise.perturb(0.0, 400.0, &mut rng));
            s1 += d;
            s2 += d * d;
        }
        let mean = s1 / f64::from(n);
        let sd = (s2 / f64::from(n) - mean * mean).sqrt();
        // sigma = 0.1 * sqrt(400) = 2; the sample sd of 20k draws is within 3% of it
        // with overwhelming probability, and the seed is fixed.
        assert!((sd - 2.0).abs() < 0.06, "sd {sd}");
        assert!(mean.abs() < 0.05, "mean {mean}");
    }
}
