//! A design's organisation as the cost model sees it: chip -> tiles -> macros
//! -> crossbars (+ ADCs, DACs, buffers), and the model's two calibrated
//! coefficients (`fixtures/cost/calibration.toml`).
//!
//! A `CostArch` is not read from a file of its own: the sweep builds it from
//! the same resolved design knobs that configure the simulation
//! (`fixtures/presets.toml`), so a design overridden in a spec (ADC bits, rows,
//! cells, ...) is costed as it was simulated.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::CostError;
use crate::tables::Components;

/// How rows are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DacKind {
    /// ISAAC's 1-bit DAC: its published energy per drive, spent on drives of a `1`.
    OneBit,
    /// RAELLA's pulse-train DAC: energy per pulse (a calibrated coefficient).
    PulseTrain,
}

/// The digital correction every output needs, set by the weight encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DigitalCorrection {
    /// Center+Offset: a running sum of the inputs and one center multiply-add per output.
    Center,
    /// ISAAC's unsigned offset: `-128 * sum(x)`, one add per output.
    Offset,
    /// Zero+Offset (center 0): nothing.
    None,
}

/// Tiles per chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Tiles {
    /// A fixed count (ISAAC's chip: 168).
    Fixed(usize),
    /// As many as fit in the iso-area budget.
    IsoArea,
}

/// One design's organisation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostArch {
    /// Crossbar rows.
    pub rows: usize,
    /// Crossbar columns.
    pub cols: usize,
    /// Devices per weight-slice cell (1 for 1T1R, 2 for 2T2R).
    pub devices_per_cell: usize,
    /// Device area in F^2.
    pub cell_area_f2: f64,
    /// ON resistance (the level-`max_level` conductance).
    pub r_on_ohm: f64,
    /// Largest device level.
    pub max_level: u32,
    /// ADC resolution.
    pub adc_bits: u32,
    /// ADCs per crossbar.
    pub adcs_per_crossbar: usize,
    /// Row drivers.
    pub dac: DacKind,
    /// Crossbars per macro (ISAAC: per IMA).
    pub crossbars_per_macro: usize,
    /// Macros per tile.
    pub macros_per_tile: usize,
    /// Tiles per chip.
    pub tiles: Tiles,
    /// Tiles sharing one router.
    pub tiles_per_router: usize,
    /// Crossbar cycle (one input slice), ns.
    pub cycle_ns: f64,
    /// The encoding's digital correction per output.
    pub correction: DigitalCorrection,
}

impl CostArch {
    /// Checks that every field is possible.
    ///
    /// # Errors
    /// [`CostError::Knob`] naming the field and its value.
    pub fn validate(&self) -> Result<(), CostError> {
        let knob = |field: &'static str, value: String, reason: String| CostError::Knob {
            field,
            value,
            reason,
        };
        for (f, v) in [
            ("rows", self.rows),
            ("cols", self.cols),
            ("devices_per_cell", self.devices_per_cell),
            ("adcs_per_crossbar", self.adcs_per_crossbar),
            ("crossbars_per_macro", self.crossbars_per_macro),
            ("macros_per_tile", self.macros_per_tile),
            ("tiles_per_router", self.tiles_per_router),
        ] {
            if v == 0 {
                return Err(knob(f, "0".into(), "must be at least 1".into()));
            }
        }
        if self.tiles == Tiles::Fixed(0) {
            return Err(knob("tiles", "0".into(), "must be at least 1".into()));
        }
        if self.adcs_per_crossbar > self.cols {
            return Err(knob(
                "adcs_per_crossbar",
                self.adcs_per_crossbar.to_string(),
                format!("more ADCs than the crossbar's {} columns", self.cols),
            ));
        }
        for (f, v) in [
            ("cell_area_f2", self.cell_area_f2),
            ("r_on_ohm", self.r_on_ohm),
            ("cycle_ns", self.cycle_ns),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(knob(f, v.to_string(), "must be a positive number".into()));
            }
        }
        if self.max_level == 0 {
            return Err(knob(
                "bits_per_device",
                "0".into(),
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Checks that the component tables can cost this design (an ADC
    /// resolution the table has).
    ///
    /// # Errors
    /// [`CostError::Knob`] naming the field and its value.
    pub fn check_tables(&self, components: &Components) -> Result<(), CostError> {
        for r in [
            components.adc_energy_pj(self.adc_bits),
            components.adc_area_um2(self.adc_bits),
        ] {
            r.map_err(|e| CostError::Knob {
                field: "adc_bits",
                value: self.adc_bits.to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// The calibrated coefficients (at most two, fitted on one DNN; see `docs/COST.md`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Multiplier on the first-order cell read energy.
    pub cell_scale: f64,
    /// Pulse-train DAC energy per pulse, pJ.
    pub pulse_dac_pj: f64,
}

impl Calibration {
    /// Reads the calibration file.
    ///
    /// # Errors
    /// Unreadable or malformed file, or non-positive coefficients.
    pub fn load(path: &Path) -> Result<Self, CostError> {
        let text = std::fs::read_to_string(path).map_err(|source| CostError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses calibration text (`path` only names the source in messages).
    ///
    /// # Errors
    /// As [`Calibration::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, CostError> {
        let c: Self = toml::from_str(text).map_err(|e| CostError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for (f, v) in [
            ("cell_scale", c.cell_scale),
            ("pulse_dac_pj", c.pulse_dac_pj),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(CostError::Field {
                    path: path.to_path_buf(),
                    entry: String::new(),
                    field: f.to_string(),
                    value: v.to_string(),
                    reason: "must be a finite, non-negative number".into(),
                });
            }
        }
        Ok(c)
    }
}
