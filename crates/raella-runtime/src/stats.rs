//! Per-layer execution statistics: the ADC-range ladder, speculation
//! failures, conversions per MAC, and the device activity behind them.

use std::ops::AddAssign;

use raella_device::Activity;

/// What happened while a layer ran. Counts add across chunks and passes.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LayerStats {
    /// Input vectors processed (a signed vector counts once, though it takes two passes).
    pub vectors: u64,
    /// Logical 8b x 8b MACs (`vectors x outputs x inputs`).
    pub macs: u64,
    /// Input passes (1 for unsigned inputs, 2 for signed).
    pub passes: u64,
    /// Primary column-slice conversions (speculative or fixed-slice), i.e. column sums.
    pub column_sums: u64,
    /// Of those, sums inside the ADC's code range (the "ladder").
    pub column_sums_in_range: u64,
    /// Speculative conversions flagged as saturated (speculation failures).
    pub flagged: u64,
    /// Flagged conversions per speculative slice, MSB first.
    pub flagged_by_slice: Vec<u64>,
    /// 1-bit recovery conversions (only flagged columns convert).
    pub recovery_conversions: u64,
    /// Recovery conversions whose sum lay outside the code range.
    pub recovery_out_of_range: u64,
    /// Column-slices whose contributed value was clipped, so inexact.
    pub inexact_column_slices: u64,
    /// Device events.
    pub activity: Activity,
    /// Crossbars per pass (for per-crossbar rates).
    pub crossbars: u64,
    /// Simulated work: used rows x used columns x vectors x primary input
    /// slices, summed over crossbars and passes (recovery not counted). The
    /// unit of the throughput benchmarks.
    pub slice_macs: u64,
    /// Squared error of sampled outputs against exact integer MACs on the same
    /// inputs (filled by callers that check, e.g. the network backend; the
    /// layer's own error, not what earlier layers passed on).
    pub check_err_sq: f64,
    /// Squared exact outputs of the same samples (the denominator).
    pub check_ref_sq: f64,
}

impl LayerStats {
    /// Relative RMS error of the checked outputs against exact MACs
    /// (`sqrt(check_err_sq / check_ref_sq)`; 0 when nothing was checked).
    #[must_use]
    pub fn checked_rel_err(&self) -> f64 {
        if self.check_ref_sq > 0.0 {
            (self.check_err_sq / self.check_ref_sq).sqrt()
        } else {
            0.0
        }
    }

    /// Fraction of column sums inside the ADC range.
    #[must_use]
    pub fn in_range_fraction(&self) -> f64 {
        ratio(self.column_sums_in_range, self.column_sums)
    }

    /// Fraction of column-slices that contributed their exact value (after recovery).
    #[must_use]
    pub fn exact_fraction(&self) -> f64 {
        1.0 - ratio(self.inexact_column_slices, self.column_sums)
    }

    /// Speculation failure rate: flagged / speculative conversions (0 without speculation).
    #[must_use]
    pub fn recovery_rate(&self) -> f64 {
        if self.flagged_by_slice.is_empty() {
            return 0.0;
        }
        ratio(self.flagged, self.column_sums)
    }

    /// ADC conversions per logical 8b x 8b MAC.
    #[must_use]
    pub fn converts_per_mac(&self) -> f64 {
        ratio(self.activity.conversions, self.macs)
    }

    /// ADC conversions relative to plain 1-bit input slicing on the same mapping
    /// (the RAELLA artifact's `ADC_ACTION_SHARE`), for `input_slices` slices per pass.
    #[must_use]
    pub fn adc_action_share(&self, input_slices: usize) -> f64 {
        if self.column_sums == 0 || input_slices == 0 {
            return 0.0;
        }
        self.activity.conversions as f64 / (self.column_sums as f64 * 8.0 / input_slices as f64)
    }

    /// Crossbar cycles per input vector and crossbar.
    #[must_use]
    pub fn cycles_per_vector(&self) -> f64 {
        ratio(
            self.activity.crossbar_cycles,
            self.vectors * self.crossbars.max(1),
        )
    }

    /// Average normalised cell value seen by reads.
    #[must_use]
    pub fn average_cell_value(&self) -> f64 {
        self.activity.average_cell_value()
    }

    /// Average normalised input pulses per row drive.
    #[must_use]
    pub fn average_input_pulses(&self) -> f64 {
        self.activity.average_input_pulses()
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl AddAssign<&LayerStats> for LayerStats {
    fn add_assign(&mut self, o: &LayerStats) {
        self.vectors += o.vectors;
        self.macs += o.macs;
        self.passes = self.passes.max(o.passes);
        self.column_sums += o.column_sums;
        self.column_sums_in_range += o.column_sums_in_range;
        self.flagged += o.flagged;
        if self.flagged_by_slice.len() < o.flagged_by_slice.len() {
            self.flagged_by_slice.resize(o.flagged_by_slice.len(), 0);
        }
        for (a, b) in self.flagged_by_slice.iter_mut().zip(&o.flagged_by_slice) {
            *a += b;
        }
        self.recovery_conversions += o.recovery_conversions;
        self.recovery_out_of_range += o.recovery_out_of_range;
        self.inexact_column_slices += o.inexact_column_slices;
        self.activity += o.activity;
        self.crossbars = self.crossbars.max(o.crossbars);
        self.slice_macs += o.slice_macs;
        self.check_err_sq += o.check_err_sq;
        self.check_ref_sq += o.check_ref_sq;
    }
}
