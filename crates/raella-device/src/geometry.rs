//! Crossbar geometry and cell technology: how many rows and columns, how
//! many devices per cell, how many bits per device.

use crate::DeviceError;

/// How a weight-slice cell is built from ReRAM devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// One device per cell holding an unsigned level (ISAAC).
    OneT1R,
    /// A positive and a negative device per cell; the column current is
    /// the sum of positive minus the sum of negative contributions (RAELLA).
    TwoT2R,
}

impl CellKind {
    /// Devices per weight-slice cell.
    #[must_use]
    pub fn devices_per_cell(self) -> usize {
        match self {
            Self::OneT1R => 1,
            Self::TwoT2R => 2,
        }
    }
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OneT1R => "1T1R",
            Self::TwoT2R => "2T2R",
        })
    }
}

/// Physical organisation of one crossbar: `rows x cols` weight-slice cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CrossbarGeometry {
    rows: usize,
    cols: usize,
    cell: CellKind,
    bits_per_device: u32,
}

impl CrossbarGeometry {
    /// RAELLA's default array: 512 x 512 2T2R cells of up to 4 bits per device.
    pub const RAELLA: Self = Self {
        rows: 512,
        cols: 512,
        cell: CellKind::TwoT2R,
        bits_per_device: 4,
    };
    /// ISAAC-8b's array: 128 x 128 1T1R cells of 2 bits.
    pub const ISAAC: Self = Self {
        rows: 128,
        cols: 128,
        cell: CellKind::OneT1R,
        bits_per_device: 2,
    };

    /// Validates and builds a geometry.
    ///
    /// # Errors
    /// [`DeviceError::ZeroDimension`] for zero rows or columns,
    /// [`DeviceError::BitsPerDevice`] outside 1..=4.
    pub fn new(
        rows: usize,
        cols: usize,
        cell: CellKind,
        bits_per_device: u32,
    ) -> Result<Self, DeviceError> {
        if rows == 0 {
            return Err(DeviceError::ZeroDimension {
                field: "rows",
                value: rows,
            });
        }
        if cols == 0 {
            return Err(DeviceError::ZeroDimension {
                field: "cols",
                value: cols,
            });
        }
        if !(1..=4).contains(&bits_per_device) {
            return Err(DeviceError::BitsPerDevice(bits_per_device));
        }
        Ok(Self {
            rows,
            cols,
            cell,
            bits_per_device,
        })
    }

    /// Rows (inputs) per crossbar.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (weight slices) per crossbar.
    #[must_use]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The cell technology.
    #[must_use]
    pub fn cell(&self) -> CellKind {
        self.cell
    }

    /// Bits one device holds.
    #[must_use]
    pub fn bits_per_device(&self) -> u32 {
        self.bits_per_device
    }

    /// The largest level one device holds, `2^bits - 1`.
    #[must_use]
    pub fn max_level(&self) -> u8 {
        // bits_per_device <= 4 by construction.
        (1u8 << self.bits_per_device) - 1
    }
}

impl Default for CrossbarGeometry {
    fn default() -> Self {
        Self::RAELLA
    }
}
