//! Analog-to-digital conversion of column sums: resolution, signed or
//! unsigned code range, clamping, and the saturation flag.
//!
//! One LSB is one unit of column sum: one input pulse through one device
//! level. Codes are exact integers; a sum outside the code range is clamped.

use crate::DeviceError;

/// A column ADC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Adc {
    bits: u32,
    signed: bool,
    min_code: i32,
    max_code: i32,
}

/// The result of one conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    /// The output code, clamped to the ADC's range.
    pub code: i32,
    /// True when the code is an extreme that may hide clipping (see [`Adc::convert`]).
    pub saturated: bool,
    /// True when the (rounded) input lay inside the code range, so the code is exact.
    pub in_range: bool,
}

impl Adc {
    /// RAELLA's ADC: signed 7-bit, codes -64..=63.
    pub const RAELLA: Self = Self {
        bits: 7,
        signed: true,
        min_code: -64,
        max_code: 63,
    };
    /// ISAAC-8b's ADC: unsigned 8-bit, codes 0..=255.
    pub const ISAAC: Self = Self {
        bits: 8,
        signed: false,
        min_code: 0,
        max_code: 255,
    };

    /// Builds an ADC of `bits` resolution.
    ///
    /// # Errors
    /// [`DeviceError::AdcBits`] unless `1 <= bits <= 24` (f32 column sums are exact
    /// integers below 2^24, so wider converters would not be bit-accurate).
    pub fn new(bits: u32, signed: bool) -> Result<Self, DeviceError> {
        if !(1..=24).contains(&bits) {
            return Err(DeviceError::AdcBits(bits));
        }
        let (min_code, max_code) = if signed {
            (-(1i32 << (bits - 1)), (1i32 << (bits - 1)) - 1)
        } else {
            (0, (1i32 << bits) - 1)
        };
        Ok(Self {
            bits,
            signed,
            min_code,
            max_code,
        })
    }

    /// Resolution in bits.
    #[must_use]
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Whether the code range is signed.
    #[must_use]
    pub fn signed(&self) -> bool {
        self.signed
    }

    /// Smallest code.
    #[must_use]
    pub fn min_code(&self) -> i32 {
        self.min_code
    }

    /// Largest code.
    #[must_use]
    pub fn max_code(&self) -> i32 {
        self.max_code
    }

    /// Converts one analog column sum (in LSB units).
    ///
    /// The sum is rounded to the nearest integer (ties away from zero; noise-free
    /// sums are already integers) and clamped to the code range. `saturated` is
    /// what the hardware can see: the code is the maximum, or (signed ADCs only)
    /// the minimum. It is conservative: a sum exactly equal to an extreme is
    /// flagged too, since the ADC cannot tell it from a clipped one. An unsigned
    /// ADC's zero code is never flagged: it reads a non-negative current.
    #[must_use]
    #[inline]
    pub fn convert(&self, sum: f32) -> Conversion {
        // Round half away from zero by truncating `sum +- 0.5`: a plain conversion
        // instruction, where `f32::round` is a library call on baseline x86-64.
        // `as` saturates at the i32 range, far beyond any code range (<= 24 bits).
        #[allow(clippy::cast_possible_truncation)]
        let r = (sum + 0.5f32.copysign(sum)) as i32;
        let code = r.clamp(self.min_code, self.max_code);
        let in_range = r == code;
        let saturated = code == self.max_code || (self.signed && code == self.min_code);
        Conversion {
            code,
            saturated,
            in_range,
        }
    }
}

impl Adc {
    /// Converts an exact integer column sum (noise-free paths): as
    /// [`Adc::convert`] without the rounding.
    #[must_use]
    #[inline]
    pub fn convert_exact(&self, sum: i32) -> Conversion {
        let code = sum.clamp(self.min_code, self.max_code);
        let saturated = code == self.max_code || (self.signed && code == self.min_code);
        Conversion {
            code,
            saturated,
            in_range: code == sum,
        }
    }
}

impl Default for Adc {
    fn default() -> Self {
        Self::RAELLA
    }
}

impl std::fmt::Display for Adc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-bit {}",
            self.bits,
            if self.signed { "signed" } else { "unsigned" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raella_adc_range_and_flags() {
        let adc = Adc::new(7, true).unwrap();
        assert_eq!(adc, Adc::RAELLA);
        assert_eq!(
            adc.convert(3.0),
            Conversion {
                code: 3,
                saturated: false,
                in_range: true
            }
        );
        assert_eq!(
            adc.convert(63.0),
            Conversion {
                code: 63,
                saturated: true,
                in_range: true
            }
        );
        assert_eq!(
            adc.convert(64.0),
            Conversion {
                code: 63,
                saturated: true,
                in_range: false
            }
        );
        assert_eq!(
            adc.convert(-65.0),
            Conversion {
                code: -64,
                saturated: true,
                in_range: false
            }
        );
        assert_eq!(
            adc.convert(-63.4),
            Conversion {
                code: -63,
                saturated: false,
                in_range: true
            }
        );
    }

    #[test]
    fn exact_and_float_conversions_agree() {
        for adc in [
            Adc::RAELLA,
            Adc::ISAAC,
            Adc::new(3, true).unwrap(),
            Adc::new(1, false).unwrap(),
        ] {
            for s in -300..300 {
                #[allow(clippy::cast_precision_loss)]
                let f = s as f32;
                assert_eq!(adc.convert_exact(s), adc.convert(f), "{adc} {s}");
            }
        }
    }

    #[test]
    fn unsigned_zero_is_not_saturation() {
        let adc = Adc::new(8, false).unwrap();
        assert_eq!(adc, Adc::ISAAC);
        assert!(!adc.convert(0.0).saturated);
        assert!(adc.convert(300.0).saturated);
        assert_eq!(adc.convert(300.0).code, 255);
    }

    #[test]
    fn zero_bit_adc_is_rejected() {
        assert_eq!(Adc::new(0, true), Err(DeviceError::AdcBits(0)));
        assert_eq!(Adc::new(25, false), Err(DeviceError::AdcBits(25)));
    }
}
