//! Component tables (`fixtures/cost/components.toml`): per-action energies and
//! areas, each entry with its source in the file. Entries from another node are
//! scaled to the table's node: energy linearly, area quadratically in the
//! feature size (a first-order rule, documented in `docs/COST.md`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::CostError;

/// ADC energy and area by resolution.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdcTable {
    /// pJ per conversion, keyed by bits.
    pub energy_pj: BTreeMap<String, f64>,
    /// um^2, keyed by bits.
    pub area_um2: BTreeMap<String, f64>,
    /// Conversions per ns per ADC.
    pub sample_rate_gsps: f64,
}

/// An energy-per-access memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edram {
    /// pJ per 256-bit access.
    pub energy_pj_per_256b: f64,
    /// um^2 per instance.
    pub area_um2: f64,
    /// Capacity.
    pub kilobytes: f64,
}

/// The eDRAM bus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bus {
    /// pJ per bit moved.
    pub energy_pj_per_bit: f64,
    /// um^2 per bit of width.
    pub area_um2_per_bit_width: f64,
    /// Width.
    pub width_bits: f64,
}

/// The on-chip router.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// pJ per 256-bit transfer.
    pub energy_pj_per_256b: f64,
    /// um^2 per router.
    pub area_um2: f64,
}

/// A component charged per read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerRead {
    /// pJ per read.
    pub energy_pj_per_read: f64,
    /// um^2.
    pub area_um2: f64,
}

/// The requantisation unit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requant {
    /// pJ per 8-bit output.
    pub energy_pj_per_output: f64,
    /// um^2.
    pub area_um2: f64,
}

/// An arithmetic unit from a table at `node_nm`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arith {
    /// pJ per op at `node_nm`.
    pub energy_pj: f64,
    /// um^2 at `node_nm`.
    pub area_um2: f64,
    /// The table's node.
    pub node_nm: f64,
}

/// ISAAC's 1-bit DAC.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dac1b {
    /// pJ per row drive.
    pub energy_pj_per_drive: f64,
    /// um^2 per row.
    pub area_um2: f64,
}

/// The shift-and-add unit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftAdd {
    /// pJ per op.
    pub energy_pj_per_op: f64,
    /// um^2 per unit.
    pub area_um2: f64,
}

/// First-order ReRAM read parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellParams {
    /// Read voltage.
    pub read_voltage_v: f64,
    /// Pulse length.
    pub pulse_ns: f64,
    /// OFF resistance.
    pub r_off_ohm: f64,
}

/// All component tables.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Components {
    /// The node every energy and area is expressed at.
    pub technology_nm: f64,
    /// ADCs.
    pub adc: AdcTable,
    /// Tile eDRAM.
    pub edram: Edram,
    /// eDRAM bus.
    pub bus: Bus,
    /// Router.
    pub router: Router,
    /// Column analog buffer.
    pub column_buffer: PerRead,
    /// Requantisation.
    pub requantisation: Requant,
    /// 32-bit adder.
    pub adder32: Arith,
    /// 32x32 multiplier.
    pub multiplier32: Arith,
    /// 1-bit DAC.
    pub dac_1b: Dac1b,
    /// Shift-and-add.
    pub shift_add: ShiftAdd,
    /// Cell read.
    pub cell: CellParams,
}

impl Components {
    /// Reads and validates a component table.
    ///
    /// # Errors
    /// Unreadable or malformed file, negative or non-finite numbers.
    pub fn load(path: &Path) -> Result<Self, CostError> {
        let text = std::fs::read_to_string(path).map_err(|source| CostError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses a component table (`path` only names the source in messages).
    ///
    /// # Errors
    /// As [`Components::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, CostError> {
        let c: Self = toml::from_str(text).map_err(|e| CostError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let bad = |entry: &str, field: &str, v: f64| CostError::Field {
            path: path.to_path_buf(),
            entry: entry.to_string(),
            field: field.to_string(),
            value: v.to_string(),
            reason: "must be a finite, non-negative number".into(),
        };
        let checks: [(&str, &str, f64); 12] = [
            ("", "technology_nm", c.technology_nm),
            ("adc", "sample_rate_gsps", c.adc.sample_rate_gsps),
            ("edram", "energy_pj_per_256b", c.edram.energy_pj_per_256b),
            ("bus", "energy_pj_per_bit", c.bus.energy_pj_per_bit),
            ("router", "energy_pj_per_256b", c.router.energy_pj_per_256b),
            (
                "column_buffer",
                "energy_pj_per_read",
                c.column_buffer.energy_pj_per_read,
            ),
            (
                "requantisation",
                "energy_pj_per_output",
                c.requantisation.energy_pj_per_output,
            ),
            ("adder32", "energy_pj", c.adder32.energy_pj),
            ("multiplier32", "energy_pj", c.multiplier32.energy_pj),
            (
                "dac_1b",
                "energy_pj_per_drive",
                c.dac_1b.energy_pj_per_drive,
            ),
            (
                "shift_add",
                "energy_pj_per_op",
                c.shift_add.energy_pj_per_op,
            ),
            ("cell", "read_voltage_v", c.cell.read_voltage_v),
        ];
        for (e, f, v) in checks {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(e, f, v));
            }
        }
        for (k, v) in c.adc.energy_pj.iter().chain(c.adc.area_um2.iter()) {
            if k.parse::<u32>().is_err() || !v.is_finite() || *v < 0.0 {
                return Err(bad("adc", k, *v));
            }
        }
        Ok(c)
    }

    /// ADC energy per conversion at `bits`.
    ///
    /// # Errors
    /// [`CostError::Missing`] when the table has no such resolution.
    pub fn adc_energy_pj(&self, bits: u32) -> Result<f64, CostError> {
        self.adc
            .energy_pj
            .get(&bits.to_string())
            .copied()
            .ok_or_else(|| {
                CostError::Missing(format!(
                    "the ADC table has no {bits}-bit entry (has {:?})",
                    self.adc.energy_pj.keys()
                ))
            })
    }

    /// ADC area at `bits`.
    ///
    /// # Errors
    /// [`CostError::Missing`] when the table has no such resolution.
    pub fn adc_area_um2(&self, bits: u32) -> Result<f64, CostError> {
        self.adc
            .area_um2
            .get(&bits.to_string())
            .copied()
            .ok_or_else(|| {
                CostError::Missing(format!(
                    "the ADC table has no {bits}-bit area entry (has {:?})",
                    self.adc.area_um2.keys()
                ))
            })
    }

    fn node_energy(&self, a: &Arith) -> f64 {
        self.technology_nm / a.node_nm
    }

    /// Energy of a `bits`-bit add, scaled linearly from the 32-bit adder and to this node.
    #[must_use]
    pub fn add_pj(&self, bits: f64) -> f64 {
        self.adder32.energy_pj * bits / 32.0 * self.node_energy(&self.adder32)
    }

    /// Area of a `bits`-bit adder.
    #[must_use]
    pub fn add_area_um2(&self, bits: f64) -> f64 {
        self.adder32.area_um2 * bits / 32.0 * self.node_energy(&self.adder32).powi(2)
    }

    /// Energy of an `a x b`-bit multiply, scaled by the product of widths and to this node.
    #[must_use]
    pub fn mul_pj(&self, a: f64, b: f64) -> f64 {
        self.multiplier32.energy_pj * a * b / 1024.0 * self.node_energy(&self.multiplier32)
    }

    /// Energy of one digital 8-bit multiply-accumulate, pJ: an 8 x 8 multiplier and a
    /// 24-bit accumulating adder. Operand movement is not included.
    #[must_use]
    pub fn digital_mac_pj(&self) -> f64 {
        self.mul_pj(8.0, 8.0) + self.add_pj(24.0)
    }

    /// Energy of `macs` digital 8-bit multiply-accumulates, mJ.
    #[must_use]
    pub fn digital_energy_mj(&self, macs: f64) -> f64 {
        macs * self.digital_mac_pj() * 1e-9
    }

    /// Area of an `a x b`-bit multiplier.
    #[must_use]
    pub fn mul_area_um2(&self, a: f64, b: f64) -> f64 {
        self.multiplier32.area_um2 * a * b / 1024.0 * self.node_energy(&self.multiplier32).powi(2)
    }

    /// eDRAM / buffer energy per bit.
    #[must_use]
    pub fn buffer_pj_per_bit(&self) -> f64 {
        self.edram.energy_pj_per_256b / 256.0
    }

    /// First-order read energy of one pulse through one device at conductance `1 / r_ohm`.
    #[must_use]
    pub fn cell_pulse_pj(&self, r_ohm: f64) -> f64 {
        // V^2 / R [W] * t [ns] = J * 1e-9; in pJ: * 1e3.
        self.cell.read_voltage_v.powi(2) / r_ohm * self.cell.pulse_ns * 1e3
    }
}
