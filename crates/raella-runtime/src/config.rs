//! How inputs are applied: fixed input slicing, or speculation with or
//! without recovery; plus the ADC, read noise and seed of a run.

use raella_compiler::Slicing;
use raella_device::{Adc, ColumnNoise};

use crate::RuntimeError;

/// Widest input slice the pulse-train DACs apply in one cycle.
pub const MAX_INPUT_SLICE_BITS: u32 = 4;

/// How 8-bit inputs are applied to the crossbars.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InputMode {
    /// Every slice is converted and shift-added, saturated or not (`1x8` is ISAAC's).
    Fixed(Slicing),
    /// RAELLA's dynamic input slicing: the slices are converted, a column whose
    /// code saturates is flagged; with `recovery`, each flagged column-slice of `b`
    /// bits is re-run as `b` 1-bit slices converting only the flagged columns.
    /// Without recovery, flagged values are kept clamped (so saturation shows).
    Speculative {
        /// Speculative slice widths, MSB first (default `4-2-2`).
        slicing: Slicing,
        /// Re-run flagged column-slices at 1 bit.
        recovery: bool,
    },
}

impl InputMode {
    /// RAELLA's default: speculation `4-2-2` with recovery.
    #[must_use]
    pub fn raella() -> Self {
        Self::Speculative {
            slicing: Slicing::parse("4-2-2").expect("valid"),
            recovery: true,
        }
    }

    /// Plain 1-bit inputs (`1x8`).
    #[must_use]
    pub fn one_bit() -> Self {
        Self::Fixed(Slicing::parse("1x8").expect("valid"))
    }

    /// The slices applied in the first (speculative or only) pass.
    #[must_use]
    pub fn slicing(&self) -> &Slicing {
        match self {
            Self::Fixed(s) | Self::Speculative { slicing: s, .. } => s,
        }
    }

    /// True for speculation with recovery.
    #[must_use]
    pub fn recovers(&self) -> bool {
        matches!(self, Self::Speculative { recovery: true, .. })
    }

    /// Checks the slices fit the DACs.
    ///
    /// # Errors
    /// [`RuntimeError::InputSliceTooWide`].
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let width = self.slicing().max_width();
        if width > MAX_INPUT_SLICE_BITS {
            return Err(RuntimeError::InputSliceTooWide {
                slicing: self.slicing().to_string(),
                width,
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for InputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(s) => write!(f, "fixed {s}"),
            Self::Speculative {
                slicing,
                recovery: true,
            } => write!(f, "speculative {slicing} + recovery"),
            Self::Speculative {
                slicing,
                recovery: false,
            } => write!(f, "speculative {slicing}, no recovery"),
        }
    }
}

/// Everything about a run that is not the programmed weights.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Column ADC.
    pub adc: Adc,
    /// Input application.
    pub input: InputMode,
    /// Read noise on column sums (off by default).
    pub column_noise: ColumnNoise,
    /// Seed of the read-noise streams (one stream per pass, crossbar, vector and
    /// input slice; in recovery, per column too).
    pub seed: u64,
}

impl RunConfig {
    /// RAELLA: 7-bit signed ADC, speculation `4-2-2` with recovery, no noise.
    #[must_use]
    pub fn raella() -> Self {
        Self {
            adc: Adc::RAELLA,
            input: InputMode::raella(),
            column_noise: ColumnNoise::default(),
            seed: 0,
        }
    }

    /// ISAAC-8b: 8-bit unsigned ADC, 1-bit inputs, no noise.
    #[must_use]
    pub fn isaac() -> Self {
        Self {
            adc: Adc::ISAAC,
            input: InputMode::one_bit(),
            column_noise: ColumnNoise::default(),
            seed: 0,
        }
    }
}
