//! Architecture descriptions (`fixtures/cost/archs.toml`): chip -> tiles ->
//! macros -> crossbars (+ ADCs, DACs, buffers), and the model's two calibrated
//! coefficients (`fixtures/cost/calibration.toml`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::CostError;
use crate::tables::Components;

/// How rows are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DacKind {
    /// ISAAC's 1-bit DAC: its published energy per drive, spent on drives of a `1`.
    OneBit,
    /// RAELLA's pulse-train DAC: energy per pulse (a calibrated coefficient).
    PulseTrain,
}

/// One design's organisation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Tiles per chip; absent: as many as fit the iso-area budget.
    pub tiles: Option<usize>,
    /// Tiles sharing one router.
    pub tiles_per_router: usize,
    /// Crossbar cycle (one input slice), ns.
    pub cycle_ns: f64,
    /// Center+Offset's digital center multiply-add per output.
    pub center_correction: bool,
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

// No deny_unknown_fields here: it does not combine with `flatten`; every design
// table is parsed strictly as a `CostArch` below.
#[derive(Deserialize)]
struct RawArchs {
    iso_area_reference: String,
    #[serde(flatten)]
    archs: BTreeMap<String, toml::Value>,
}

/// All designs of an architecture file.
#[derive(Debug, Clone, PartialEq)]
pub struct CostArchs {
    /// The design whose chip area is the iso-area budget.
    pub iso_area_reference: String,
    /// Designs by name.
    pub archs: BTreeMap<String, CostArch>,
}

fn field(path: &Path, entry: &str, field: &str, value: impl ToString, reason: &str) -> CostError {
    CostError::Field {
        path: path.to_path_buf(),
        entry: entry.to_string(),
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl CostArchs {
    /// Reads and validates an architecture file.
    ///
    /// # Errors
    /// Unreadable or malformed file, impossible organisations, or a reference
    /// design that is missing or has no fixed tile count.
    pub fn load(path: &Path, components: &Components) -> Result<Self, CostError> {
        let text = std::fs::read_to_string(path).map_err(|source| CostError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let toml_err = |e: toml::de::Error| CostError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        };
        let raw: RawArchs = toml::from_str(&text).map_err(toml_err)?;
        let mut archs = BTreeMap::new();
        for (name, v) in raw.archs {
            let a: CostArch = v.try_into().map_err(|e: toml::de::Error| CostError::Toml {
                path: path.to_path_buf(),
                message: format!("[{name}]: {}", e.to_string().trim_end()),
            })?;
            let entry = format!("[{name}]");
            for (f, v) in [
                ("rows", a.rows),
                ("cols", a.cols),
                ("devices_per_cell", a.devices_per_cell),
                ("adcs_per_crossbar", a.adcs_per_crossbar),
                ("crossbars_per_macro", a.crossbars_per_macro),
                ("macros_per_tile", a.macros_per_tile),
                ("tiles_per_router", a.tiles_per_router),
            ] {
                if v == 0 {
                    return Err(field(path, &entry, f, 0, "must be at least 1"));
                }
            }
            if a.tiles == Some(0) {
                return Err(field(path, &entry, "tiles", 0, "must be at least 1"));
            }
            for (f, v) in [
                ("cell_area_f2", a.cell_area_f2),
                ("r_on_ohm", a.r_on_ohm),
                ("cycle_ns", a.cycle_ns),
            ] {
                if !v.is_finite() || v <= 0.0 {
                    return Err(field(path, &entry, f, v, "must be a positive number"));
                }
            }
            if a.max_level == 0 {
                return Err(field(path, &entry, "max_level", 0, "must be at least 1"));
            }
            components
                .adc_energy_pj(a.adc_bits)
                .map_err(|e| field(path, &entry, "adc_bits", a.adc_bits, &e.to_string()))?;
            archs.insert(name, a);
        }
        match archs.get(&raw.iso_area_reference) {
            Some(a) if a.tiles.is_some() => {}
            Some(_) => {
                return Err(field(
                    path,
                    "",
                    "iso_area_reference",
                    &raw.iso_area_reference,
                    "the reference design needs a fixed `tiles`",
                ));
            }
            None => {
                return Err(field(
                    path,
                    "",
                    "iso_area_reference",
                    &raw.iso_area_reference,
                    "no such design in this file",
                ));
            }
        }
        Ok(Self {
            iso_area_reference: raw.iso_area_reference,
            archs,
        })
    }

    /// A design by name.
    ///
    /// # Errors
    /// [`CostError::Missing`] naming the known designs.
    pub fn get(&self, name: &str) -> Result<&CostArch, CostError> {
        self.archs.get(name).ok_or_else(|| {
            CostError::Missing(format!(
                "no cost architecture `{name}` (known: {})",
                self.archs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
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
        let c: Self = toml::from_str(&text).map_err(|e| CostError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for (f, v) in [
            ("cell_scale", c.cell_scale),
            ("pulse_dac_pj", c.pulse_dac_pj),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(field(
                    path,
                    "",
                    f,
                    v,
                    "must be a finite, non-negative number",
                ));
            }
        }
        Ok(c)
    }
}
