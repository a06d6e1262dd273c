//! Activity counters: the events the energy model charges for.
//!
//! Counters are plain sums, so activity from parallel chunks, crossbars,
//! layers and input passes is combined with `+=`.

use std::ops::AddAssign;

/// Events counted while executing on crossbars.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Activity {
    /// ADC conversions (speculative, fixed-slice and recovery alike).
    pub conversions: u64,
    /// Conversions whose code was flagged as saturated.
    pub saturated_conversions: u64,
    /// Crossbar cycles: one input slice applied to one crossbar.
    pub crossbar_cycles: u64,
    /// Row drives: one row driven for one crossbar cycle (used rows only).
    pub row_drives: u64,
    /// Input pulses summed over row drives.
    pub input_pulses: u64,
    /// The largest possible `input_pulses` for the same row drives
    /// (`2^b - 1` per drive of a `b`-bit slice).
    pub input_pulse_capacity: u64,
    /// Cell reads: one used weight-slice cell under one row drive.
    pub cell_reads: u64,
    /// Cell reads weighted by the cell's level (both devices of a 2T2R cell).
    pub cell_level_reads: f64,
    /// Cell reads weighted by level and by pulses: the charge drawn, in
    /// pulse x level units (the quantity cell read energy scales with).
    pub cell_charge: f64,
    /// Largest level a cell can hold, for normalising `cell_level_reads`.
    pub max_level: u8,
}

impl Activity {
    /// Average normalised cell value seen by reads, in [0, 1]:
    /// `cell_level_reads / (cell_reads * max_level)`.
    #[must_use]
    pub fn average_cell_value(&self) -> f64 {
        if self.cell_reads == 0 || self.max_level == 0 {
            return 0.0;
        }
        self.cell_level_reads / (self.cell_reads as f64 * f64::from(self.max_level))
    }

    /// Average normalised input pulses per row drive, in [0, 1].
    #[must_use]
    pub fn average_input_pulses(&self) -> f64 {
        if self.input_pulse_capacity == 0 {
            return 0.0;
        }
        self.input_pulses as f64 / self.input_pulse_capacity as f64
    }
}

impl AddAssign for Activity {
    fn add_assign(&mut self, o: Self) {
        self.conversions += o.conversions;
        self.saturated_conversions += o.saturated_conversions;
        self.crossbar_cycles += o.crossbar_cycles;
        self.row_drives += o.row_drives;
        self.input_pulses += o.input_pulses;
        self.input_pulse_capacity += o.input_pulse_capacity;
        self.cell_reads += o.cell_reads;
        self.cell_level_reads += o.cell_level_reads;
        self.cell_charge += o.cell_charge;
        self.max_level = self.max_level.max(o.max_level);
    }
}
