//! Bit slicing of unsigned values, MSB first: how an 8-bit weight magnitude
//! is spread over columns, and how an 8-bit input is spread over cycles.
//!
//! A slicing is a list of widths, most significant first, summing to the
//! value's bits. Text forms: `4-2-2`, `4-4`, and `WxN` for N slices of W bits
//! (`1x8` = eight 1-bit slices, `2x4` = `2-2-2-2`).

use std::fmt;
use std::str::FromStr;

use crate::CompileError;

/// Bits of the values sliced: 8-bit weight magnitudes and 8-bit inputs.
pub const VALUE_BITS: u32 = 8;

/// Slice widths, MSB first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slicing {
    widths: Vec<u32>,
    shifts: Vec<u32>,
}

impl Slicing {
    /// Builds a slicing of `total_bits`-bit values.
    ///
    /// # Errors
    /// [`CompileError::BadSlicing`] for an empty list or a zero width,
    /// [`CompileError::SliceWidthsSum`] when the widths do not sum to `total_bits`.
    pub fn new(widths: Vec<u32>, total_bits: u32) -> Result<Self, CompileError> {
        let text = join(&widths);
        if widths.is_empty() {
            return Err(CompileError::BadSlicing {
                text,
                reason: "no slices".into(),
            });
        }
        if widths.contains(&0) {
            return Err(CompileError::BadSlicing {
                text,
                reason: "a slice of 0 bits".into(),
            });
        }
        let sum: u32 = widths.iter().sum();
        if sum != total_bits {
            return Err(CompileError::SliceWidthsSum {
                slicing: text,
                sum,
                expected: total_bits,
            });
        }
        let mut shifts = Vec::with_capacity(widths.len());
        let mut rest = total_bits;
        for &w in &widths {
            rest -= w;
            shifts.push(rest);
        }
        Ok(Self { widths, shifts })
    }

    /// Parses a slicing of 8-bit values (`4-2-2`, `1x8`, ...).
    ///
    /// # Errors
    /// As [`Slicing::new`], or [`CompileError::BadSlicing`] for text that does not parse.
    pub fn parse(text: &str) -> Result<Self, CompileError> {
        let bad = |reason: &str| CompileError::BadSlicing {
            text: text.to_string(),
            reason: reason.into(),
        };
        let t = text.trim();
        let widths = if let Some((w, n)) = t.split_once('x') {
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| bad("width before `x` is not a number"))?;
            let n: usize = n
                .trim()
                .parse()
                .map_err(|_| bad("count after `x` is not a number"))?;
            if n == 0 || n > 64 {
                return Err(bad("slice count must be in 1..=64"));
            }
            vec![w; n]
        } else {
            t.split('-')
                .map(|p| {
                    p.trim()
                        .parse::<u32>()
                        .map_err(|_| bad("a width is not a number"))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        if widths.iter().any(|&w| w > VALUE_BITS) {
            return Err(bad("a slice is wider than 8 bits"));
        }
        Self::new(widths, VALUE_BITS)
    }

    /// The widths, MSB first.
    #[must_use]
    pub fn widths(&self) -> &[u32] {
        &self.widths
    }

    /// Left shift of each slice when recombining (`sum of the widths after it`).
    #[must_use]
    pub fn shifts(&self) -> &[u32] {
        &self.shifts
    }

    /// Number of slices.
    #[must_use]
    pub fn len(&self) -> usize {
        self.widths.len()
    }

    /// Always false: a slicing has at least one slice.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The widest slice.
    #[must_use]
    pub fn max_width(&self) -> u32 {
        self.widths.iter().copied().max().unwrap_or(0)
    }

    /// Bits of the values sliced.
    #[must_use]
    pub fn total_bits(&self) -> u32 {
        self.widths.iter().sum()
    }

    /// Checks every slice fits a device of `bits_per_device` bits.
    ///
    /// # Errors
    /// [`CompileError::SliceWiderThanDevice`].
    pub fn check_device(&self, bits_per_device: u32) -> Result<(), CompileError> {
        let width = self.max_width();
        if width > bits_per_device {
            return Err(CompileError::SliceWiderThanDevice {
                slicing: self.to_string(),
                width,
                bits_per_device,
            });
        }
        Ok(())
    }

    /// Slice `k` of `value`: `(value >> shift_k) & (2^width_k - 1)`.
    #[must_use]
    #[inline]
    pub fn slice(&self, value: u32, k: usize) -> u32 {
        (value >> self.shifts[k]) & ((1u32 << self.widths[k]) - 1)
    }

    /// All slices of `value`, MSB first.
    #[must_use]
    pub fn split(&self, value: u32) -> Vec<u32> {
        (0..self.len()).map(|k| self.slice(value, k)).collect()
    }

    /// Recombines slices (shift-add).
    #[must_use]
    pub fn join(&self, slices: &[u32]) -> u32 {
        slices
            .iter()
            .zip(&self.shifts)
            .map(|(&s, &sh)| s << sh)
            .sum()
    }
}

fn join(widths: &[u32]) -> String {
    widths
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("-")
}

impl fmt::Display for Slicing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.widths[0];
        if self.widths.len() > 2 && self.widths.iter().all(|&x| x == w) {
            write!(f, "{w}x{}", self.widths.len())
        } else {
            f.write_str(&join(&self.widths))
        }
    }
}

impl FromStr for Slicing {
    type Err = CompileError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for (text, widths, shown) in [
            ("4-2-2", vec![4, 2, 2], "4-2-2"),
            ("4-4", vec![4, 4], "4-4"),
            ("1x8", vec![1; 8], "1x8"),
            ("2x4", vec![2; 4], "2x4"),
            ("2-2-2-2", vec![2; 4], "2x4"),
            ("8", vec![8], "8"),
        ] {
            let s = Slicing::parse(text).unwrap();
            assert_eq!(s.widths(), widths.as_slice(), "{text}");
            assert_eq!(s.to_string(), shown);
        }
        assert_eq!(Slicing::parse("4-2-2").unwrap().shifts(), &[4, 2, 0]);
    }

    #[test]
    fn bad_slicings_are_named() {
        let e = Slicing::parse("4-2").unwrap_err();
        assert_eq!(
            e,
            CompileError::SliceWidthsSum {
                slicing: "4-2".into(),
                sum: 6,
                expected: 8
            }
        );
        assert!(matches!(
            Slicing::parse("4-a-2"),
            Err(CompileError::BadSlicing { .. })
        ));
        assert!(matches!(
            Slicing::parse("4-0-4"),
            Err(CompileError::BadSlicing { .. })
        ));
        assert!(matches!(
            Slicing::parse(""),
            Err(CompileError::BadSlicing { .. })
        ));
        let e = Slicing::parse("4-4").unwrap().check_device(2).unwrap_err();
        assert!(
            e.to_string()
                .contains("4-bit slice, wider than a 2-bit device"),
            "{e}"
        );
    }

    #[test]
    fn split_join_example() {
        let s = Slicing::parse("4-2-2").unwrap();
        assert_eq!(s.split(0b1011_0110), vec![0b1011, 0b01, 0b10]);
        assert_eq!(s.join(&[0b1011, 0b01, 0b10]), 0b1011_0110);
    }
}
