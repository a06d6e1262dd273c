//! Errors raised when a device configuration is impossible.
//!
//! Only construction validates; once a crossbar is programmed, applying inputs
//! cannot fail (saturation and stuck cells are counted, not errors).

use thiserror::Error;

/// An impossible device configuration, naming the field and the offending value.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DeviceError {
    /// A crossbar dimension was zero.
    #[error("crossbar {field} must be at least 1, got {value}")]
    ZeroDimension {
        /// `rows` or `cols`.
        field: &'static str,
        /// The value given.
        value: usize,
    },
    /// Bits per device outside 1..=4.
    #[error("bits_per_device must be in 1..=4, got {0}")]
    BitsPerDevice(u32),
    /// ADC resolution outside 1..=24.
    #[error("ADC resolution must be in 1..=24 bits, got {0}")]
    AdcBits(u32),
    /// A level larger than a device can hold.
    #[error("level {level} at (row {row}, col {col}) exceeds the device maximum {max}")]
    LevelTooLarge {
        /// Row of the cell.
        row: usize,
        /// Column of the cell.
        col: usize,
        /// The level requested.
        level: u8,
        /// The largest level the device holds.
        max: u8,
    },
    /// A level array whose length does not match the used region.
    #[error("{what}: expected {expected} levels ({rows} x {cols}), got {got}")]
    ShapeMismatch {
        /// Which array.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
        /// Used rows.
        rows: usize,
        /// Used columns.
        cols: usize,
    },
    /// The used region is larger than the crossbar.
    #[error("used region {used_rows} x {used_cols} does not fit a {rows} x {cols} crossbar")]
    RegionTooLarge {
        /// Rows in use.
        used_rows: usize,
        /// Columns in use.
        used_cols: usize,
        /// Crossbar rows.
        rows: usize,
        /// Crossbar columns.
        cols: usize,
    },
    /// 1T1R cells have no negative device.
    #[error("a 1T1R crossbar has no negative devices, but negative levels were given")]
    NegativeOn1T1R,
    /// The kernel-forcing environment variable names no kernel.
    #[error(
        "{variable}={value:?} names no kernel; use avx512vnni, avx2, portable, or auto (the fastest this CPU runs)"
    )]
    UnknownKernel {
        /// The environment variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// The kernel-forcing environment variable names a kernel this CPU cannot run.
    #[error("{variable}={kernel} forces a kernel this CPU cannot run; it runs: {supported}")]
    KernelUnsupported {
        /// The environment variable.
        variable: &'static str,
        /// The kernel named.
        kernel: &'static str,
        /// The kernels this CPU runs, comma-separated.
        supported: String,
    },
    /// A noise parameter that is negative, NaN, or a probability above 1.
    #[error("noise parameter {field} must be a finite value in {range}, got {value}")]
    NoiseParameter {
        /// The field.
        field: &'static str,
        /// The allowed range, in words.
        range: &'static str,
        /// The value given.
        value: f64,
    },
}
