//! Layer-shape tables of workloads given only as shapes (`fixtures/workloads/*.toml`,
//! generated from the public architectures) and typical per-design statistics
//! (`fixtures/cost/typical_stats.toml`) for costing them without weights.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::CostError;
use crate::work::{LayerShape, LayerStatistics};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    name: String,
    kind: String,
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    groups: usize,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    vectors: usize,
    rows: usize,
    cols: usize,
    macs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: String,
    source: String,
    input: String,
    batch_default: usize,
    note: Option<String>,
    layer: Vec<RawLayer>,
}

/// A workload's crossbar layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Name.
    pub name: String,
    /// Where the shapes come from.
    pub source: String,
    /// Layers in order.
    pub layers: Vec<LayerShape>,
    /// Layer kinds (`conv` / `linear`), parallel to `layers`.
    pub kinds: Vec<String>,
}

impl Workload {
    /// Reads and checks a workload table (MACs must equal `vectors x groups x rows x cols`).
    ///
    /// # Errors
    /// Unreadable or malformed file, or an inconsistent layer.
    pub fn load(path: &Path) -> Result<Self, CostError> {
        let text = std::fs::read_to_string(path).map_err(|source| CostError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: RawWorkload = toml::from_str(&text).map_err(|e| CostError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let _ = (&raw.input, raw.batch_default, &raw.note);
        if raw.layer.is_empty() {
            return Err(CostError::Missing(format!("{}: no layers", path.display())));
        }
        let mut layers = Vec::new();
        let mut kinds = Vec::new();
        for l in raw.layer {
            let bad = |f: &str, v: String, r: &str| CostError::Field {
                path: path.to_path_buf(),
                entry: format!("layer `{}`", l.name),
                field: f.into(),
                value: v,
                reason: r.into(),
            };
            // Every size at least 1: a zero-size layer would cost 0 / 0 = NaN.
            for (f, v) in [
                ("in_channels", l.in_channels),
                ("out_channels", l.out_channels),
                ("kernel", l.kernel[0].min(l.kernel[1])),
                ("stride", l.stride[0].min(l.stride[1])),
                ("groups", l.groups),
                ("in_hw", l.in_hw[0].min(l.in_hw[1])),
                ("out_hw", l.out_hw[0].min(l.out_hw[1])),
                ("vectors", l.vectors),
                ("rows", l.rows),
                ("cols", l.cols),
            ] {
                if v == 0 {
                    return Err(bad(f, "0".into(), "every size must be at least 1"));
                }
            }
            if l.kind != "conv" && l.kind != "linear" {
                return Err(bad(
                    "kind",
                    l.kind.clone(),
                    "expected \"conv\" or \"linear\"",
                ));
            }
            if !l.in_channels.is_multiple_of(l.groups) || !l.out_channels.is_multiple_of(l.groups) {
                return Err(bad(
                    "groups",
                    l.groups.to_string(),
                    "must divide in_channels and out_channels",
                ));
            }
            if Some(l.rows)
                != (l.in_channels / l.groups)
                    .checked_mul(l.kernel[0])
                    .and_then(|v| v.checked_mul(l.kernel[1]))
                || l.cols != l.out_channels / l.groups
            {
                return Err(bad(
                    "rows",
                    l.rows.to_string(),
                    "rows/cols disagree with channels, groups and kernel",
                ));
            }
            let macs = [l.groups, l.rows, l.cols]
                .iter()
                .try_fold(l.vectors as u64, |a, &d| a.checked_mul(d as u64));
            if macs != Some(l.macs) {
                return Err(bad(
                    "macs",
                    l.macs.to_string(),
                    &macs.map_or_else(
                        || "vectors x groups x rows x cols overflows".into(),
                        |m| format!("vectors x groups x rows x cols = {m}"),
                    ),
                ));
            }
            let _ = l.stride;
            layers.push(LayerShape {
                name: l.name.clone(),
                vectors: l.vectors as f64,
                groups: l.groups,
                rows: l.rows,
                filters: l.cols,
                in_elems: l.in_channels as f64 * l.in_hw[0] as f64 * l.in_hw[1] as f64,
                out_elems: l.out_channels as f64 * l.out_hw[0] as f64 * l.out_hw[1] as f64,
            });
            kinds.push(l.kind);
        }
        Ok(Self {
            name: raw.name,
            source: raw.source,
            layers,
            kinds,
        })
    }

    /// MACs per inference.
    #[must_use]
    pub fn macs(&self) -> f64 {
        self.layers.iter().map(LayerShape::macs).sum()
    }
}

/// Typical statistics of a design, for workloads without weights.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypicalStats {
    /// Average normalised cell value seen by reads.
    pub average_weight_value: f64,
    /// Average normalised input pulses per row drive.
    pub average_input_value: f64,
    /// Conversions relative to 1-bit inputs.
    pub adc_action_share: f64,
}

impl TypicalStats {
    /// The statistics of one layer of a shape-only workload: these typical
    /// values with the layer's weight slices and speculation.
    #[must_use]
    pub fn for_layer(&self, cim_units_per_weight: usize, speculation: bool) -> LayerStatistics {
        LayerStatistics {
            average_weight_value: self.average_weight_value,
            average_input_value: self.average_input_value,
            adc_action_share: self.adc_action_share,
            cim_units_per_weight,
            speculation_enabled: speculation,
        }
    }
}

/// Reads `fixtures/cost/typical_stats.toml`: a table of [`TypicalStats`] by design name.
///
/// # Errors
/// Unreadable or malformed file, or values outside [0, 1] (shares up to 1.0).
pub fn load_typical(path: &Path) -> Result<BTreeMap<String, TypicalStats>, CostError> {
    let text = std::fs::read_to_string(path).map_err(|source| CostError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_typical(path, &text)
}

/// Parses typical-statistics text (`path` only names the source in messages).
///
/// # Errors
/// As [`load_typical`].
pub fn parse_typical(path: &Path, text: &str) -> Result<BTreeMap<String, TypicalStats>, CostError> {
    let t: BTreeMap<String, TypicalStats> = toml::from_str(text).map_err(|e| CostError::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    for (name, s) in &t {
        for (f, v) in [
            ("average_weight_value", s.average_weight_value),
            ("average_input_value", s.average_input_value),
            ("adc_action_share", s.adc_action_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(CostError::Field {
                    path: path.to_path_buf(),
                    entry: format!("[{name}]"),
                    field: f.into(),
                    value: v.to_string(),
                    reason: "must be in [0, 1]".into(),
                });
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_size_and_overflowing_layers_are_named_errors() {
        let layer = |vectors: &str, rows: &str, macs: &str| {
            format!(
                "name = \"w\"\nsource = \"s\"\ninput = \"i\"\nbatch_default = 1\n[[layer]]\nname = \"l0\"\nkind = \"linear\"\n\
                in_channels = {rows}\nout_channels = 2\nkernel = [1, 1]\nstride = [1, 1]\ngroups = 1\nin_hw = [1, 1]\n\
                out_hw = [1, 1]\nvectors = {vectors}\nrows = {rows}\ncols = 2\nmacs = {macs}\n"
            )
        };
        let path = std::env::temp_dir().join(format!("raella-wl-{}.toml", std::process::id()));
        std::fs::write(&path, layer("3", "4", "24")).unwrap();
        assert_eq!(Workload::load(&path).unwrap().macs(), 24.0);
        for (text, want) in [
            (layer("0", "4", "0"), "`vectors` = 0"),
            (layer("4611686018427387904", "4", "0"), "overflows"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Workload::load(&path).unwrap_err().to_string();
            assert!(
                e.contains("raella-wl") && e.contains("l0") && e.contains(want),
                "{e}"
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
}
