//! Sweep specs and architecture presets: parsed from TOML (unknown keys are
//! errors), then validated into runnable configurations. Every error names the
//! file, the entry and the field.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use raella_compiler::{
    AdaptiveSlicing, Budget, CenterRule, CompileConfig, Encoding, ErrorMetric, NormalisedMaxAbs,
    RelativeRms, Slicing,
};
use raella_cost::{CostArch, DacKind, DigitalCorrection, Tiles};
use raella_data::DataError;
use raella_data::files::{FileKind, check_file};
use raella_device::{Adc, CellKind, ColumnNoise, CrossbarGeometry, DeviceNoise};
use raella_network::ArchConfig;
use raella_runtime::{InputMode, RunConfig, calibration_run};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::names::{check_folder_name, check_name, file_component};

/// Most designs a spec may define (grid points included).
pub const MAX_DESIGNS: usize = 10_000;
/// Most seeds a spec may list.
pub const MAX_SEEDS: usize = 1_000;
/// Most points (models x designs x seeds) of a spec.
pub const MAX_POINTS: usize = 100_000;
/// Most inferences per batch of a workload.
pub const MAX_BATCH: usize = 1_000_000;

/// A rejected spec or preset file.
#[derive(Debug, Error)]
pub enum SpecError {
    /// Unreadable file (missing, not a regular file, too large, not UTF-8);
    /// the message names it.
    #[error("{0}")]
    Read(DataError),
    /// Malformed TOML, a mistyped value or an unknown key (the parser's message
    /// names the key and position).
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field with an impossible value.
    #[error("{path}: {entry}: `{field}` = {value}: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// Which entry (`arch "raella"`, `model "mnist_cnn"`, ...).
        entry: String,
        /// The field.
        field: String,
        /// The value, as written.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
}

/// Every knob of a design. In presets and in spec entries alike, a missing
/// knob inherits (entry <- preset <- RAELLA defaults).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchKnobs {
    /// The preset this entry starts from (spec entries only).
    pub preset: Option<String>,
    /// Name of the design in results (defaults to the preset's name).
    pub name: Option<String>,
    /// One line describing the design.
    pub description: Option<String>,
    /// Crossbar rows.
    pub rows: Option<usize>,
    /// Crossbar columns.
    pub cols: Option<usize>,
    /// `1T1R` or `2T2R`.
    pub cell: Option<String>,
    /// Bits per device, 1-4.
    pub bits_per_device: Option<u32>,
    /// `center_offset`, `zero_offset` or `unsigned_offset`.
    pub encoding: Option<String>,
    /// `mean`, `median` or `search` (Center+Offset).
    pub center_rule: Option<String>,
    /// ISAAC's per-column bit flip (unsigned offset).
    pub bit_flip: Option<bool>,
    /// Weight slicing, or the fallback when adaptive.
    pub weight_slicing: Option<String>,
    /// Adaptive weight slicing on.
    pub adaptive: Option<bool>,
    /// Adaptive slicing candidates.
    pub adaptive_candidates: Option<Vec<String>>,
    /// Adaptive slicing error budget: a number, or `"auto"` (per layer, from
    /// calibration data: `raella_compiler::Budget::Auto`).
    pub adaptive_budget: Option<BudgetKnob>,
    /// `relative_rms` or `normalised_max_abs`.
    pub adaptive_metric: Option<String>,
    /// Slicing forced on the last layer when adaptive.
    pub last_layer_slicing: Option<String>,
    /// `fixed` or `speculative`.
    pub input: Option<String>,
    /// Input slicing (speculative widths when speculative).
    pub input_slicing: Option<String>,
    /// Recovery of speculation failures.
    pub recovery: Option<bool>,
    /// Signed inputs: `two_pass` (positive parts and negative magnitudes) or
    /// `offset` (cast to unsigned by adding 128, one pass, the offset's product
    /// subtracted digitally).
    pub signed_inputs: Option<String>,
    /// ADC resolution, 1-24 bits.
    pub adc_bits: Option<u32>,
    /// Signed ADC codes.
    pub adc_signed: Option<bool>,
    /// Read noise E (`sigma = E sqrt(N+ + N-)`).
    pub noise_e: Option<f64>,
    /// Relative programming variation of device levels.
    pub programming_sigma: Option<f64>,
    /// Probability a device is stuck at 0.
    pub stuck_at_zero: Option<f64>,
    /// Probability a device is stuck at its maximum.
    pub stuck_at_max: Option<f64>,
    /// ON/OFF conductance ratio: `G_off = G_on / ratio` (0: an ideal OFF state).
    pub on_off_ratio: Option<f64>,
    /// Level-dependent programming error: a CSV table (`level,sigma[,mean]`,
    /// in level steps) replacing `programming_sigma`; `""`: none.
    pub programming_noise: Option<String>,
    /// Mean drift exponent `nu` of `G(t) = G(t0) (t / t0)^-nu`.
    pub drift_nu: Option<f64>,
    /// Device-to-device sigma of `nu`.
    pub drift_nu_sigma: Option<f64>,
    /// Seconds after programming of the reads (`t0` = 20 s: no drift).
    pub drift_t_seconds: Option<f64>,
    /// `none` or `global` (one gain per layer from a reference read).
    pub drift_compensation: Option<String>,
    /// Wire resistance per cell segment along rows and columns, ohm (IR drop).
    pub ir_drop_wire_ohm: Option<f64>,
    /// Per-ADC offset sigma, LSB.
    pub adc_offset_lsb_sigma: Option<f64>,
    /// Per-ADC relative gain sigma.
    pub adc_gain_sigma: Option<f64>,
    /// Per-ADC integral nonlinearity peak, LSB.
    pub adc_inl_lsb: Option<f64>,
    /// Read noise per device: each device's current `G (1 + N(0, s))` per read.
    pub read_noise_device_sigma: Option<f64>,
    // --- Organisation: what the cost model needs beyond the simulation's knobs.
    /// ADCs per crossbar (they share its columns).
    pub adcs_per_crossbar: Option<usize>,
    /// Row drivers: `one_bit` (ISAAC's 1-bit DAC) or `pulse_train` (RAELLA's).
    pub dac: Option<String>,
    /// Crossbars per macro (ISAAC: per IMA).
    pub crossbars_per_macro: Option<usize>,
    /// Macros per tile.
    pub macros_per_tile: Option<usize>,
    /// Tiles per chip: a number, or `"iso_area"` for as many as fit in the
    /// iso-area reference's chip.
    pub tiles: Option<TilesKnob>,
    /// Tiles sharing one router.
    pub tiles_per_router: Option<usize>,
    /// Crossbar cycle (one input slice), ns.
    pub cycle_ns: Option<f64>,
    /// Device area, F^2 per device.
    pub cell_area_f2: Option<f64>,
    /// Device ON resistance, ohm.
    pub r_on_ohm: Option<f64>,
}

/// The `adaptive_budget` knob: a number or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum BudgetKnob {
    /// A fixed budget for every layer.
    Value(f64),
    /// `"auto"`: the per-layer rule.
    Named(AutoWord),
}

impl std::fmt::Display for BudgetKnob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(b) => write!(f, "{b}"),
            Self::Named(AutoWord::Auto) => f.write_str("auto"),
        }
    }
}

/// The one word the `adaptive_budget` knob accepts besides a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoWord {
    /// The per-layer rule.
    Auto,
}

/// The `tiles` knob: a fixed count or `"iso_area"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TilesKnob {
    /// A fixed number of tiles.
    Count(usize),
    /// `"iso_area"`: as many as fit in the reference design's chip area.
    Named(IsoArea),
}

/// The one word the `tiles` knob accepts besides a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IsoArea {
    /// As many tiles as fit.
    IsoArea,
}

/// Knobs that only the cost model reads: changing one changes no simulated
/// result (the point cache ignores them, and typical statistics measured for a
/// preset stay valid).
pub const COST_ONLY_KNOBS: [&str; 9] = [
    "adcs_per_crossbar",
    "dac",
    "crossbars_per_macro",
    "macros_per_tile",
    "tiles",
    "tiles_per_router",
    "cycle_ns",
    "cell_area_f2",
    "r_on_ohm",
];

macro_rules! overlay {
    ($dst:ident, $src:ident, $($f:ident),*) => { $( if $src.$f.is_some() { $dst.$f = $src.$f.clone(); } )* };
}

impl ArchKnobs {
    /// RAELLA's defaults (every knob set).
    #[must_use]
    pub fn raella_defaults() -> Self {
        Self {
            preset: None,
            name: None,
            description: None,
            rows: Some(512),
            cols: Some(512),
            cell: Some("2T2R".into()),
            bits_per_device: Some(4),
            encoding: Some("center_offset".into()),
            center_rule: Some("mean".into()),
            bit_flip: Some(true),
            weight_slicing: Some("4-2-2".into()),
            adaptive: Some(false),
            adaptive_candidates: Some(
                raella_compiler::DEFAULT_CANDIDATES
                    .iter()
                    .map(|s| (*s).to_string())
                    .collect(),
            ),
            adaptive_budget: Some(BudgetKnob::Named(AutoWord::Auto)),
            adaptive_metric: Some("relative_rms".into()),
            last_layer_slicing: Some("1x8".into()),
            input: Some("speculative".into()),
            input_slicing: Some("4-2-2".into()),
            recovery: Some(true),
            signed_inputs: Some("two_pass".into()),
            adc_bits: Some(7),
            adc_signed: Some(true),
            noise_e: Some(0.0),
            programming_sigma: Some(0.0),
            stuck_at_zero: Some(0.0),
            stuck_at_max: Some(0.0),
            on_off_ratio: Some(0.0),
            programming_noise: Some(String::new()),
            drift_nu: Some(0.0),
            drift_nu_sigma: Some(0.0),
            drift_t_seconds: Some(raella_device::DRIFT_T0_SECONDS),
            drift_compensation: Some("none".into()),
            ir_drop_wire_ohm: Some(0.0),
            adc_offset_lsb_sigma: Some(0.0),
            adc_gain_sigma: Some(0.0),
            adc_inl_lsb: Some(0.0),
            read_noise_device_sigma: Some(0.0),
            adcs_per_crossbar: Some(4),
            dac: Some("pulse_train".into()),
            crossbars_per_macro: Some(4),
            macros_per_tile: Some(8),
            tiles: Some(TilesKnob::Named(IsoArea::IsoArea)),
            tiles_per_router: Some(4),
            cycle_ns: Some(100.0),
            cell_area_f2: Some(5.49),
            r_on_ohm: Some(1333.0),
        }
    }

    /// `self` with every knob `over` sets replaced.
    #[must_use]
    pub fn overlaid(&self, over: &Self) -> Self {
        let mut out = self.clone();
        overlay!(
            out,
            over,
            preset,
            name,
            description,
            rows,
            cols,
            cell,
            bits_per_device,
            encoding,
            center_rule,
            bit_flip,
            weight_slicing,
            adaptive,
            adaptive_candidates,
            adaptive_budget,
            adaptive_metric,
            last_layer_slicing,
            input,
            input_slicing,
            recovery,
            signed_inputs,
            adc_bits,
            adc_signed,
            noise_e,
            programming_sigma,
            stuck_at_zero,
            stuck_at_max,
            on_off_ratio,
            programming_noise,
            drift_nu,
            drift_nu_sigma,
            drift_t_seconds,
            drift_compensation,
            ir_drop_wire_ohm,
            adc_offset_lsb_sigma,
            adc_gain_sigma,
            adc_inl_lsb,
            read_noise_device_sigma,
            adcs_per_crossbar,
            dac,
            crossbars_per_macro,
            macros_per_tile,
            tiles,
            tiles_per_router,
            cycle_ns,
            cell_area_f2,
            r_on_ohm
        );
        out
    }
}

/// A validated design.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    /// Name in results.
    pub name: String,
    /// The fully resolved knobs (every field set).
    pub knobs: ArchKnobs,
    /// The resolved knobs of the preset it starts from (RAELLA defaults
    /// overlaid with the preset), when it has one.
    pub base: Option<ArchKnobs>,
}

/// A contiguous range of images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRange {
    /// First image.
    pub start: usize,
    /// Number of images.
    pub count: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    onnx: Option<PathBuf>,
    images: Option<PathBuf>,
    bert: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    max_tokens: Option<usize>,
    lee50: Option<PathBuf>,
    texts: Option<PathBuf>,
    labels: Option<PathBuf>,
    class_folders: Option<bool>,
    input_shape: Option<Vec<usize>>,
    output: Option<String>,
    scale: Option<f32>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    calibration: ImageRange,
    evaluation: ImageRange,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCost {
    components: PathBuf,
    iso_area_reference: Option<String>,
    recovery_timing: Option<String>,
    recovery_floor_ns: Option<f64>,
    pack_replicas: Option<bool>,
    first_layer_inputs: Option<String>,
    offset_signed_inputs: Option<String>,
    typical_slicing: Option<String>,
    calibration: PathBuf,
    typical: PathBuf,
    paper_ablation: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: String,
    file: PathBuf,
    batch: usize,
    stats_dir: Option<PathBuf>,
    paper_efficiency_vs_isaac: Option<f64>,
    paper_throughput_vs_isaac: Option<f64>,
}

/// The cost model's mapping and timing assumptions (`[cost]` keys; defaults: the
/// published model, `docs/COST.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostOptions {
    /// Recovery timing and replica packing.
    pub mapping: raella_cost::MappingOptions,
    /// A shape-only CNN's first layer reads signed (normalised) inputs in two
    /// passes; `false`: unsigned 8-bit pixels, one pass.
    pub first_layer_signed: bool,
    /// Offset-encoded designs (ISAAC) read a transformer's signed inputs cast to
    /// unsigned in one pass (the public artifact); `false`: two passes like the others.
    pub offset_signed_one_pass: bool,
    /// Adaptive designs give depthwise and first layers of at most 64 rows two
    /// weight slices (4-4), as the artifact's slicing did; `false`: 4-2-2 everywhere.
    pub few_row_layers_two_slices: bool,
}

impl Default for CostOptions {
    fn default() -> Self {
        Self {
            mapping: raella_cost::MappingOptions::default(),
            first_layer_signed: true,
            offset_signed_one_pass: true,
            few_row_layers_two_slices: true,
        }
    }
}

/// The cost model's input files, resolved against the spec's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct CostFiles {
    /// Component tables.
    pub components: PathBuf,
    /// The design whose chip area every other design gets (a preset with a
    /// fixed `tiles`; default `isaac8b`), resolved from the presets.
    pub iso_area_reference: Arch,
    /// Calibrated coefficients.
    pub calibration: PathBuf,
    /// Typical statistics for shape-only workloads.
    pub typical: PathBuf,
    /// The paper's published ablation energies (for calibration and comparison).
    pub paper_ablation: Option<PathBuf>,
    /// Mapping and timing assumptions.
    pub options: CostOptions,
}

/// A workload given only as layer shapes, costed with typical statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// Name in results (`dnn` column).
    pub name: String,
    /// The layer-shape table.
    pub file: PathBuf,
    /// Inferences per batch (energy is reported per batch).
    pub batch: usize,
    /// Per-layer statistics files, `<stats_dir>/<design>/<layer>.txt` (else typical values).
    pub stats_dir: Option<PathBuf>,
    /// The paper's energy-efficiency ratio vs ISAAC (RAELLA rows only).
    pub paper_efficiency_vs_isaac: Option<f64>,
    /// The paper's throughput ratio vs ISAAC.
    pub paper_throughput_vs_isaac: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    cost: Option<RawCost>,
    #[serde(default)]
    workload: Vec<RawWorkload>,
    name: Option<String>,
    description: Option<String>,
    presets: Option<PathBuf>,
    seeds: Option<Vec<u64>>,
    archs: Option<Vec<String>>,
    #[serde(default)]
    arch: Vec<ArchKnobs>,
    #[serde(default)]
    grid: Vec<toml::Table>,
    #[serde(default)]
    model: Vec<RawModel>,
}

/// A model of a sweep: files (resolved against the spec's directory), preprocessing and split.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Name in results.
    pub name: String,
    /// ONNX file.
    pub onnx: PathBuf,
    /// IDX images, or a folder of PNG/JPEG photographs (resized to the model's
    /// input); empty for a text model.
    pub images: PathBuf,
    /// IDX labels (required for IDX images), or a labels CSV for a photo folder.
    pub labels: Option<PathBuf>,
    /// A photo folder in the ImageFolder layout: one sub-folder per class.
    pub class_folders: bool,
    /// The input's shape per item (batch excluded), fixing its dynamic dimensions.
    pub input_shape: Option<Vec<usize>>,
    /// The graph output evaluated (top-1, agreement, embeddings); default the first.
    pub output: Option<String>,
    /// Pixel scale (`x = pixel * scale`), default 1/255.
    pub scale: f32,
    /// Per-channel mean subtracted after scaling (default 0).
    pub mean: Vec<f32>,
    /// Per-channel divisor after the mean (default 1).
    pub std: Vec<f32>,
    /// Calibration images (activation scales, adaptive slicing).
    pub calibration: ImageRange,
    /// Evaluation images, disjoint from calibration (for a text encoder:
    /// Lee-50 documents).
    pub evaluation: ImageRange,
    /// A text encoder's inputs (`images` is then empty): calibration indexes
    /// the lines of `texts`, evaluation the Lee-50 documents.
    pub text: Option<TextFiles>,
}

/// The text inputs of a text-encoder model of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct TextFiles {
    /// The Hugging Face `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Truncation length in tokens.
    pub max_tokens: usize,
    /// Folder with Lee-50's `lee.cor` and `similarities0-1.txt`.
    pub lee50: PathBuf,
    /// Calibration texts, one per line (disjoint from Lee-50).
    pub texts: PathBuf,
}

/// Default truncation of text inputs: sentence-transformers' `max_seq_length`
/// for all-MiniLM-L6-v2 (no Lee-50 document is longer than 154 tokens).
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// A validated sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The spec's name (results go to `results/<name>/` by default).
    pub name: String,
    /// Description for the report.
    pub description: String,
    /// The spec file.
    pub path: PathBuf,
    /// Models.
    pub models: Vec<ModelSpec>,
    /// Designs.
    pub archs: Vec<Arch>,
    /// Seeds (read noise, device programming).
    pub seeds: Vec<u64>,
    /// The cost model's files, when the spec asks for costs.
    pub cost: Option<CostFiles>,
    /// The presets, each resolved over the RAELLA defaults.
    pub presets: BTreeMap<String, ArchKnobs>,
    /// Shape-only workloads (costed, not simulated).
    pub workloads: Vec<WorkloadSpec>,
}

fn read(path: &Path) -> Result<String, SpecError> {
    raella_data::files::read_text(path, FileKind::Toml).map_err(SpecError::Read)
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, SpecError> {
    toml::from_str(text).map_err(|e| SpecError::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Reads a presets file: a table of named [`ArchKnobs`].
///
/// # Errors
/// Unreadable or malformed file, or an invalid preset.
pub fn load_presets(path: &Path) -> Result<BTreeMap<String, ArchKnobs>, SpecError> {
    parse_presets(path, &read(path)?)
}

/// Parses presets text, e.g. a copy of `fixtures/presets.toml` compiled into a
/// program (`path` only names the source in messages).
///
/// # Errors
/// As [`load_presets`].
pub fn parse_presets(path: &Path, text: &str) -> Result<BTreeMap<String, ArchKnobs>, SpecError> {
    let presets: BTreeMap<String, ArchKnobs> = parse_toml(path, text)?;
    for (name, k) in &presets {
        if k.preset.is_some() {
            return Err(field(
                path,
                &format!("preset \"{name}\""),
                "preset",
                "…",
                "presets cannot refer to other presets",
            ));
        }
        let resolved = ArchKnobs::raella_defaults().overlaid(k);
        validate_knobs(path, &format!("preset \"{name}\""), &resolved)?;
    }
    Ok(presets)
}

/// The presets of a presets file as designs (RAELLA defaults overlaid with each
/// preset), by name: the one definition the sweep, the cost model and the demo share.
///
/// # Errors
/// As [`load_presets`].
pub fn load_designs(path: &Path) -> Result<BTreeMap<String, Arch>, SpecError> {
    Ok(designs(load_presets(path)?))
}

/// Presets as designs (see [`load_designs`]).
#[must_use]
pub fn designs(presets: BTreeMap<String, ArchKnobs>) -> BTreeMap<String, Arch> {
    presets
        .into_iter()
        .map(|(name, k)| {
            let knobs = ArchKnobs::raella_defaults().overlaid(&ArchKnobs {
                preset: Some(name.clone()),
                ..k
            });
            let arch = Arch {
                name: name.clone(),
                base: Some(knobs.clone()),
                knobs,
            };
            (name, arch)
        })
        .collect()
}

/// One design: preset `preset` of the presets file `presets` with `overrides`
/// (knob name -> TOML value, e.g. from `--set adc_bits=6`), validated as a
/// spec's `[[arch]]` entry would be; `origin` names where the overrides came
/// from in errors.
///
/// # Errors
/// An unknown preset or knob, a mistyped value, or an impossible design.
pub fn resolve_design(
    presets: &Path,
    preset: &str,
    overrides: &toml::Table,
    origin: &Path,
) -> Result<Arch, SpecError> {
    resolve_design_in(&load_designs(presets)?, preset, overrides, origin)
}

/// As [`resolve_design`], among designs already loaded ([`load_designs`],
/// [`designs`]).
///
/// # Errors
/// As [`resolve_design`].
pub fn resolve_design_in(
    designs: &BTreeMap<String, Arch>,
    preset: &str,
    overrides: &toml::Table,
    origin: &Path,
) -> Result<Arch, SpecError> {
    let base = designs.get(preset).ok_or_else(|| {
        field(
            origin,
            "design",
            "preset",
            format!("\"{preset}\""),
            format!(
                "unknown preset (known: {})",
                designs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let over: ArchKnobs =
        toml::Value::Table(overrides.clone())
            .try_into()
            .map_err(|e: toml::de::Error| SpecError::Toml {
                path: origin.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
    let knobs = base.knobs.overlaid(&over);
    let name = if overrides.is_empty() {
        preset.to_string()
    } else {
        format!(
            "{preset}[{}]",
            overrides
                .iter()
                .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    validate_knobs(origin, &format!("design {name:?}"), &knobs)?;
    Ok(Arch {
        name,
        knobs,
        base: base.base.clone(),
    })
}

/// Expands one `[[grid]]` table: `archs = [...]` (preset names) times the
/// product of every other key's list of values (knob names, as in presets).
/// Points are named `<preset>[knob=value,...]`, knobs in name order.
fn expand_grid(path: &Path, index: usize, g: &toml::Table) -> Result<Vec<ArchKnobs>, SpecError> {
    let entry = format!("grid #{}", index + 1);
    let archs = match g.get("archs") {
        Some(toml::Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| field(path, &entry, "archs", v, "expected preset names"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => {
            return Err(field(
                path,
                &entry,
                "archs",
                v,
                "expected a non-empty list of preset names",
            ));
        }
        None => {
            return Err(field(
                path,
                &entry,
                "archs",
                "(none)",
                "a grid needs `archs = [...]`",
            ));
        }
    };
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for (k, v) in g {
        if k == "archs" {
            continue;
        }
        if matches!(k.as_str(), "preset" | "name" | "description") {
            return Err(field(path, &entry, k, v, "not a grid axis"));
        }
        match v {
            toml::Value::Array(vals) if !vals.is_empty() => axes.push((k.clone(), vals.clone())),
            other => {
                return Err(field(
                    path,
                    &entry,
                    k,
                    other,
                    "a grid axis is a non-empty list of values",
                ));
            }
        }
    }
    let mut points: Vec<Vec<(String, toml::Value)>> = vec![vec![]];
    for (k, vals) in &axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                vals.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((k.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for a in &archs {
        for p in &points {
            let label = p
                .iter()
                .map(|(k, v)| format!("{k}={}", label_value(v)))
                .collect::<Vec<_>>()
                .join(",");
            let name = if label.is_empty() {
                a.clone()
            } else {
                format!("{a}[{label}]")
            };
            let mut t = toml::Table::new();
            t.insert("preset".into(), toml::Value::String(a.clone()));
            t.insert("name".into(), toml::Value::String(name.clone()));
            for (k, v) in p {
                t.insert(k.clone(), v.clone());
            }
            let knobs: ArchKnobs =
                toml::Value::Table(t)
                    .try_into()
                    .map_err(|e: toml::de::Error| {
                        field(
                            path,
                            &format!("{entry} point {name}"),
                            "(knobs)",
                            label.clone(),
                            e.to_string().trim_end().to_string(),
                        )
                    })?;
            out.push(knobs);
        }
    }
    Ok(out)
}

/// Why `full` cannot be read as a `kind` file (missing, a folder, a FIFO, a
/// device, too large), or `None` when it can.
fn file_problem(full: &Path, kind: FileKind) -> Option<String> {
    match check_file(full, kind) {
        Ok(_) => None,
        Err(DataError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Some(missing(full))
        }
        Err(e) => Some(e.to_string()),
    }
}

/// Why `full` is not a folder, or `None` when it is.
fn folder_problem(full: &Path) -> Option<String> {
    match std::fs::metadata(full) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(format!("{} is not a folder", full.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(missing(full)),
        Err(e) => Some(format!("{}: {e}", full.display())),
    }
}

/// A grid value as it appears in a point's name: strings unquoted, lists as
/// `[a;b]` (no quotes or spaces, so the name passes [`check_name`]).
fn label_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(label_value).collect::<Vec<_>>().join(";")
        ),
        other => other.to_string(),
    }
}

/// "no such file", pointing at the fetch command for the git-ignored cache.
fn missing(full: &Path) -> String {
    if full.components().any(|c| c.as_os_str() == ".cache") {
        format!(
            "no such file ({}); models and data under .cache/ come from `cargo xtask fetch-models`",
            full.display()
        )
    } else {
        format!("no such file ({})", full.display())
    }
}

/// Validates a text-encoder model entry (`onnx`, `tokenizer`, `lee50`, `texts`).
fn text_model(
    path: &Path,
    dir: &Path,
    entry: &str,
    tokenizer: &Path,
    m: &RawModel,
) -> Result<ModelSpec, SpecError> {
    if let Some((f, _)) = [
        ("images", m.images.is_some()),
        ("labels", m.labels.is_some()),
        ("class_folders", m.class_folders.is_some()),
        ("scale", m.scale.is_some()),
        ("mean", m.mean.is_some()),
        ("std", m.std.is_some()),
        ("input_shape", m.input_shape.is_some()),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    {
        return Err(field(
            path,
            entry,
            f,
            "(set)",
            "a text model (with `tokenizer`) reads text: drop the image fields",
        ));
    }
    let need = |f: &str, v: &Option<PathBuf>| {
        v.clone().ok_or_else(|| {
            field(
                path,
                entry,
                f,
                "(none)",
                "a text model needs `onnx`, `tokenizer`, `lee50` (documents and scores) and `texts` (calibration)",
            )
        })
    };
    let (onnx, lee50, texts) = (
        need("onnx", &m.onnx)?,
        need("lee50", &m.lee50)?,
        need("texts", &m.texts)?,
    );
    for (f, p, kind) in [
        ("onnx", &onnx, Some(FileKind::Onnx)),
        (
            "tokenizer",
            &tokenizer.to_path_buf(),
            Some(FileKind::Tokenizer),
        ),
        ("lee50", &lee50, None),
        ("texts", &texts, Some(FileKind::Text)),
    ] {
        let full = dir.join(p);
        let problem = match kind {
            None => folder_problem(&full),
            Some(k) => file_problem(&full, k),
        };
        if let Some(reason) = problem {
            return Err(field(
                path,
                entry,
                f,
                format!("\"{}\"", p.display()),
                reason,
            ));
        }
    }
    let max_tokens = m.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if !(2..=raella_data::MAX_TOKENS_LIMIT).contains(&max_tokens) {
        return Err(field(
            path,
            entry,
            "max_tokens",
            max_tokens,
            format!("must be in 2..={}", raella_data::MAX_TOKENS_LIMIT),
        ));
    }
    check_ranges(path, entry, m.calibration, m.evaluation)?;
    Ok(ModelSpec {
        name: m.name.clone(),
        onnx: dir.join(onnx),
        images: PathBuf::new(),
        labels: None,
        class_folders: false,
        input_shape: None,
        output: m.output.clone(),
        scale: 1.0,
        mean: vec![],
        std: vec![],
        calibration: m.calibration,
        evaluation: m.evaluation,
        text: Some(TextFiles {
            tokenizer: dir.join(tokenizer),
            max_tokens,
            lee50: dir.join(lee50),
            texts: dir.join(texts),
        }),
    })
}

fn field(
    path: &Path,
    entry: &str,
    field: &str,
    value: impl ToString,
    reason: impl Into<String>,
) -> SpecError {
    SpecError::Field {
        path: path.to_path_buf(),
        entry: entry.to_string(),
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Checks a name ([`check_name`]) and that neither it nor its file-name
/// component ([`file_component`], which names its `stats/` folder and plots) is
/// taken by an earlier one of the spec's `what` (plural).
fn check_unique(
    path: &Path,
    entry: &str,
    name: &str,
    names: &mut HashSet<String>,
    files: &mut HashMap<String, String>,
    what: &str,
) -> Result<(), SpecError> {
    check_name(name).map_err(|reason| field(path, entry, "name", format!("{name:?}"), reason))?;
    if !names.insert(name.to_string()) {
        return Err(field(
            path,
            entry,
            "name",
            format!("{name:?}"),
            format!("two {what} share this name (their rows would be mixed up)"),
        ));
    }
    let component = file_component(name);
    if let Some(other) = files.insert(component.clone(), name.to_string()) {
        return Err(field(
            path,
            entry,
            "name",
            format!("{name:?}"),
            format!("{other:?} has the same file name `{component}`; rename one"),
        ));
    }
    Ok(())
}

/// Checks a model's calibration and evaluation ranges: each holds at least one
/// item and ends before `usize::MAX`.
fn check_ranges(
    path: &Path,
    entry: &str,
    calibration: ImageRange,
    evaluation: ImageRange,
) -> Result<(), SpecError> {
    for (f, r) in [("calibration", calibration), ("evaluation", evaluation)] {
        if r.count == 0 {
            return Err(field(
                path,
                entry,
                &format!("{f}.count"),
                0,
                "must be at least 1",
            ));
        }
        if r.start.checked_add(r.count).is_none() {
            return Err(field(
                path,
                entry,
                f,
                format!("{{ start = {}, count = {} }}", r.start, r.count),
                "start + count overflows",
            ));
        }
    }
    Ok(())
}

fn slicing(path: &Path, entry: &str, name: &str, text: &str) -> Result<Slicing, SpecError> {
    Slicing::parse(text).map_err(|e| field(path, entry, name, format!("\"{text}\""), e.to_string()))
}

/// Checks every knob and builds the design's configuration.
fn validate_knobs(path: &Path, entry: &str, k: &ArchKnobs) -> Result<ArchConfig, SpecError> {
    // Upper bounds (the constructors below check the lower ones): past them a
    // design is no longer a ReRAM crossbar accelerator, and the simulation would
    // only exhaust memory or time. (knob, value, most, why)
    let sizes = [
        ("rows", k.rows, 8192, "8x the largest published crossbar"),
        ("cols", k.cols, 8192, "8x the largest published crossbar"),
        (
            "adaptive_candidates",
            k.adaptive_candidates.as_ref().map(Vec::len),
            64,
            "candidates, each simulated",
        ),
    ];
    for (f, v, most, why) in sizes {
        if let Some(v) = v.filter(|v| *v > most) {
            return Err(field(
                path,
                entry,
                f,
                v,
                format!("must be at most {most} ({why})"),
            ));
        }
    }
    let fractions = [
        ("noise_e", k.noise_e, 1.0, "read noise of 100%"),
        (
            "programming_sigma",
            k.programming_sigma,
            1.0,
            "variation of 100%",
        ),
    ];
    for (f, v, most, why) in fractions {
        if let Some(v) = v.filter(|v| *v > most) {
            return Err(field(
                path,
                entry,
                f,
                format!("{v:?}"),
                format!("must be at most {most} ({why})"),
            ));
        }
    }
    let get = |v: Option<u32>| v.unwrap_or(0);
    let cell = match k.cell.as_deref().unwrap_or("") {
        "1T1R" => CellKind::OneT1R,
        "2T2R" => CellKind::TwoT2R,
        other => {
            return Err(field(
                path,
                entry,
                "cell",
                format!("\"{other}\""),
                "expected \"1T1R\" or \"2T2R\"",
            ));
        }
    };
    let rows = k.rows.unwrap_or(0);
    let cols = k.cols.unwrap_or(0);
    let bits = get(k.bits_per_device);
    let geometry = CrossbarGeometry::new(rows, cols, cell, bits).map_err(|e| {
        let (f, v) = if rows == 0 {
            ("rows", rows.to_string())
        } else if cols == 0 {
            ("cols", cols.to_string())
        } else {
            ("bits_per_device", bits.to_string())
        };
        field(path, entry, f, v, e.to_string())
    })?;
    let rule = match k.center_rule.as_deref().unwrap_or("") {
        "mean" => CenterRule::Mean,
        "median" => CenterRule::Median,
        "search" => CenterRule::Search,
        other => {
            return Err(field(
                path,
                entry,
                "center_rule",
                format!("\"{other}\""),
                "expected \"mean\", \"median\" or \"search\"",
            ));
        }
    };
    let encoding = match k.encoding.as_deref().unwrap_or("") {
        "center_offset" => Encoding::CenterOffset(rule),
        "zero_offset" => Encoding::ZeroOffset,
        "unsigned_offset" => Encoding::UnsignedOffset {
            bit_flip: k.bit_flip.unwrap_or(true),
        },
        other => {
            return Err(field(
                path,
                entry,
                "encoding",
                format!("\"{other}\""),
                "expected \"center_offset\", \"zero_offset\" or \"unsigned_offset\"",
            ));
        }
    };
    if encoding.cell_kind() != cell {
        return Err(field(
            path,
            entry,
            "encoding",
            format!("\"{}\"", k.encoding.as_deref().unwrap_or("")),
            format!(
                "needs {} cells, but cell = \"{}\"",
                encoding.cell_kind(),
                k.cell.as_deref().unwrap_or("")
            ),
        ));
    }
    let ws_text = k.weight_slicing.clone().unwrap_or_default();
    let weight_slicing = slicing(path, entry, "weight_slicing", &ws_text)?;
    weight_slicing.check_device(bits).map_err(|e| {
        field(
            path,
            entry,
            "weight_slicing",
            format!("\"{ws_text}\""),
            e.to_string(),
        )
    })?;
    let compile = CompileConfig {
        geometry,
        encoding,
        weight_slicing,
    };
    let adc_bits = get(k.adc_bits);
    let adc = Adc::new(adc_bits, k.adc_signed.unwrap_or(true))
        .map_err(|e| field(path, entry, "adc_bits", adc_bits, e.to_string()))?;
    let is_text = k.input_slicing.clone().unwrap_or_default();
    let is = slicing(path, entry, "input_slicing", &is_text)?;
    let input = match k.input.as_deref().unwrap_or("") {
        "fixed" => InputMode::Fixed(is),
        "speculative" => InputMode::Speculative {
            slicing: is,
            recovery: k.recovery.unwrap_or(true),
        },
        other => {
            return Err(field(
                path,
                entry,
                "input",
                format!("\"{other}\""),
                "expected \"fixed\" or \"speculative\"",
            ));
        }
    };
    input.validate().map_err(|e| {
        field(
            path,
            entry,
            "input_slicing",
            format!("\"{is_text}\""),
            e.to_string(),
        )
    })?;
    let e = k.noise_e.unwrap_or(0.0);
    let ds = k.read_noise_device_sigma.unwrap_or(0.0);
    let column_noise = ColumnNoise::new(e)
        .map_err(|err| field(path, entry, "noise_e", e, err.to_string()))?
        .with_device_sigma(ds)
        .map_err(|err| field(path, entry, "read_noise_device_sigma", ds, err.to_string()))?;
    let (ps, s0, s1) = (
        k.programming_sigma.unwrap_or(0.0),
        k.stuck_at_zero.unwrap_or(0.0),
        k.stuck_at_max.unwrap_or(0.0),
    );
    let device_noise = DeviceNoise::new(ps, s0, s1).map_err(|err| {
        let (f, v) = match &err {
            raella_device::DeviceError::NoiseParameter { field, value, .. } => (*field, *value),
            _ => ("programming_sigma", ps),
        };
        field(path, entry, f, v, err.to_string())
    })?;
    let device_noise = realism(path, entry, k, device_noise, geometry.max_level())?;
    let run = RunConfig {
        adc,
        input,
        column_noise,
        seed: 0,
    };
    let adaptive = if k.adaptive.unwrap_or(false) {
        let cands: Vec<Slicing> = k
            .adaptive_candidates
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|c| slicing(path, entry, "adaptive_candidates", c))
            .collect::<Result<_, _>>()?;
        if !cands.iter().any(|c| c.max_width() <= bits) {
            return Err(field(
                path,
                entry,
                "adaptive_candidates",
                format!("{:?}", k.adaptive_candidates.clone().unwrap_or_default()),
                format!("no candidate fits a {bits}-bit device"),
            ));
        }
        let metric: Box<dyn ErrorMetric> = match k.adaptive_metric.as_deref().unwrap_or("") {
            "relative_rms" => Box::new(RelativeRms),
            "normalised_max_abs" => Box::new(NormalisedMaxAbs),
            other => {
                return Err(field(
                    path,
                    entry,
                    "adaptive_metric",
                    format!("\"{other}\""),
                    "expected \"relative_rms\" or \"normalised_max_abs\"",
                ));
            }
        };
        let (budget, shown) = match k.adaptive_budget {
            Some(BudgetKnob::Value(b)) => (Budget::Fixed(b), b.to_string()),
            Some(BudgetKnob::Named(AutoWord::Auto)) | None => (Budget::Auto, "\"auto\"".into()),
        };
        let policy = AdaptiveSlicing::new(cands, budget, metric)
            .map_err(|e| field(path, entry, "adaptive_budget", shown, e.to_string()))?;
        Some((policy, calibration_run(&run)))
    } else {
        None
    };
    let force_last = match (&adaptive, k.last_layer_slicing.as_deref()) {
        (Some(_), Some(t)) if !t.is_empty() => {
            let s = slicing(path, entry, "last_layer_slicing", t)?;
            s.check_device(bits).map_err(|e| {
                field(
                    path,
                    entry,
                    "last_layer_slicing",
                    format!("\"{t}\""),
                    e.to_string(),
                )
            })?;
            Some(s)
        }
        _ => None,
    };
    cost_arch(k).map_err(|e| match e {
        raella_cost::CostError::Knob {
            field: f,
            value,
            reason,
        } => field(path, entry, f, value, reason),
        other => field(path, entry, "(cost)", "", other.to_string()),
    })?;
    let signed_offset = match k.signed_inputs.as_deref() {
        None | Some("two_pass") => false,
        Some("offset") => true,
        Some(other) => {
            return Err(field(
                path,
                entry,
                "signed_inputs",
                format!("\"{other}\""),
                "expected \"two_pass\" or \"offset\"",
            ));
        }
    };
    Ok(ArchConfig {
        compile,
        adaptive,
        force_last,
        run,
        device_noise: (!device_noise.is_ideal()).then_some(device_noise),
        signed_offset,
    })
}

/// The device non-idealities beyond programming variation and stuck cells
/// (`docs/DEVICES.md`), each checked and named on error.
fn realism(
    path: &Path,
    entry: &str,
    k: &ArchKnobs,
    noise: DeviceNoise,
    max_level: u8,
) -> Result<DeviceNoise, SpecError> {
    use raella_device::{AdcVariation, DeviceError, Drift, DriftCompensation, IrDropModel};
    let named = |err: DeviceError, default: &'static str, v: f64| {
        let (f, v) = match &err {
            DeviceError::NoiseParameter { field, value, .. } => (*field, *value),
            _ => (default, v),
        };
        field(path, entry, f, format!("{v:?}"), err.to_string())
    };
    let mut noise = noise;
    let ratio = k.on_off_ratio.unwrap_or(0.0);
    if ratio != 0.0 {
        noise = noise.with_on_off_ratio(ratio).map_err(|_| {
            field(
                path,
                entry,
                "on_off_ratio",
                format!("{ratio:?}"),
                "must be above 1 (or 0 for an ideal OFF state)",
            )
        })?;
    }
    if let Some(file) = k.programming_noise.as_deref().filter(|f| !f.is_empty()) {
        let fpath = Path::new(file);
        let text = raella_data::files::read_text(fpath, FileKind::Text).map_err(|e| {
            field(
                path,
                entry,
                "programming_noise",
                format!("\"{file}\""),
                e.to_string(),
            )
        })?;
        let table = raella_device::ProgrammingTable::parse(&text).map_err(|e| {
            field(
                path,
                entry,
                "programming_noise",
                format!("\"{file}\""),
                format!("{}: {e}", fpath.display()),
            )
        })?;
        table.check_device(max_level).map_err(|reason| {
            field(
                path,
                entry,
                "programming_noise",
                format!("\"{file}\""),
                format!("{}: {reason}", fpath.display()),
            )
        })?;
        noise = noise.with_table(std::sync::Arc::new(table));
    }
    let compensation = match k.drift_compensation.as_deref().unwrap_or("none") {
        "none" => DriftCompensation::None,
        "global" => DriftCompensation::Global,
        other => {
            return Err(field(
                path,
                entry,
                "drift_compensation",
                format!("\"{other}\""),
                "expected \"none\" or \"global\"",
            ));
        }
    };
    let t = k.drift_t_seconds.unwrap_or(raella_device::DRIFT_T0_SECONDS);
    let drift = Drift::new(
        k.drift_nu.unwrap_or(0.0),
        k.drift_nu_sigma.unwrap_or(0.0),
        t,
        compensation,
    )
    .map_err(|e| named(e, "drift_nu", 0.0))?;
    noise = noise.with_drift(drift);
    let wire = k.ir_drop_wire_ohm.unwrap_or(0.0);
    let r_on = k.r_on_ohm.unwrap_or(1333.0);
    if !wire.is_finite() || !(0.0..=100.0).contains(&wire) {
        return Err(field(
            path,
            entry,
            "ir_drop_wire_ohm",
            format!("{wire:?}"),
            "must be in [0, 100] ohm per cell segment",
        ));
    }
    let ir = IrDropModel::new(wire, r_on).map_err(|e| named(e, "ir_drop_wire_ohm", wire))?;
    noise = noise.with_ir_drop(ir);
    let adc = AdcVariation::new(
        k.adc_offset_lsb_sigma.unwrap_or(0.0),
        k.adc_gain_sigma.unwrap_or(0.0),
        k.adc_inl_lsb.unwrap_or(0.0),
    )
    .map_err(|e| named(e, "adc_offset_lsb_sigma", 0.0))?;
    Ok(noise.with_adc(adc))
}

/// The cost model's view of a design, from the same knobs as the simulation.
fn cost_arch(k: &ArchKnobs) -> Result<CostArch, raella_cost::CostError> {
    let knob = |field: &'static str, value: String, reason: &str| raella_cost::CostError::Knob {
        field,
        value,
        reason: reason.to_string(),
    };
    let dac = match k.dac.as_deref().unwrap_or("") {
        "one_bit" => DacKind::OneBit,
        "pulse_train" => DacKind::PulseTrain,
        other => {
            return Err(knob(
                "dac",
                format!("\"{other}\""),
                "expected \"one_bit\" or \"pulse_train\"",
            ));
        }
    };
    let correction = match k.encoding.as_deref().unwrap_or("") {
        "unsigned_offset" => DigitalCorrection::Offset,
        "zero_offset" => DigitalCorrection::None,
        _ => DigitalCorrection::Center,
    };
    let bits = k.bits_per_device.unwrap_or(0).min(16);
    let a = CostArch {
        rows: k.rows.unwrap_or(0),
        cols: k.cols.unwrap_or(0),
        devices_per_cell: if k.cell.as_deref() == Some("2T2R") {
            2
        } else {
            1
        },
        cell_area_f2: k.cell_area_f2.unwrap_or(0.0),
        r_on_ohm: k.r_on_ohm.unwrap_or(0.0),
        max_level: (1u32 << bits) - 1,
        adc_bits: k.adc_bits.unwrap_or(0),
        adcs_per_crossbar: k.adcs_per_crossbar.unwrap_or(0),
        dac,
        crossbars_per_macro: k.crossbars_per_macro.unwrap_or(0),
        macros_per_tile: k.macros_per_tile.unwrap_or(0),
        tiles: match k.tiles {
            Some(TilesKnob::Count(n)) => Tiles::Fixed(n),
            _ => Tiles::IsoArea,
        },
        tiles_per_router: k.tiles_per_router.unwrap_or(0),
        cycle_ns: k.cycle_ns.unwrap_or(0.0),
        correction,
    };
    a.validate()?;
    Ok(a)
}

impl Arch {
    /// The design as the cost model sees it, built from the same resolved
    /// knobs as [`Arch::config`] (validated when the spec was loaded).
    ///
    /// # Panics
    /// Never for an `Arch` from [`Spec::load`].
    #[must_use]
    pub fn cost_arch(&self) -> CostArch {
        cost_arch(&self.knobs).expect("validated at load")
    }

    /// The first knob (in name order) whose value differs from the
    /// preset's and that the simulation reads (cost-only knobs, name and
    /// description excluded): `(knob, this design's value, the preset's)`.
    /// `None` when the design simulates exactly as its preset.
    #[must_use]
    pub fn simulation_override(&self) -> Option<(String, String, String)> {
        let base = self.base.as_ref()?;
        let mine = serde_json::to_value(&self.knobs).ok()?;
        let theirs = serde_json::to_value(base).ok()?;
        let (mine, theirs) = (mine.as_object()?, theirs.as_object()?);
        mine.iter().find_map(|(k, v)| {
            // The ON resistance sets IR drop's scale when IR drop is on.
            let ir_drop = self.knobs.ir_drop_wire_ohm.unwrap_or(0.0) > 0.0;
            let skip = matches!(k.as_str(), "preset" | "name" | "description")
                || (COST_ONLY_KNOBS.contains(&k.as_str()) && !(ir_drop && k == "r_on_ohm"));
            let w = theirs.get(k).unwrap_or(&serde_json::Value::Null);
            (!skip && v != w).then(|| (k.clone(), v.to_string(), w.to_string()))
        })
    }

    /// The runnable configuration (validated when the spec was loaded).
    ///
    /// # Panics
    /// Never for an `Arch` from [`Spec::load`].
    #[must_use]
    pub fn config(&self) -> ArchConfig {
        validate_knobs(Path::new("<validated>"), &self.name, &self.knobs)
            .expect("validated at load")
    }

    /// Speculation is on.
    #[must_use]
    pub fn speculative(&self) -> bool {
        self.knobs.input.as_deref() == Some("speculative")
    }
}

/// The presets a spec uses when it names no presets file of its own.
#[derive(Debug, Clone, Copy)]
enum DefaultPresets<'a> {
    /// A presets file.
    File(&'a Path),
    /// Presets text and the name it goes by in messages.
    Text(&'a Path, &'a str),
}

impl Spec {
    /// Reads and validates a sweep spec; `default_presets` is used unless the
    /// spec names its own presets file.
    ///
    /// # Errors
    /// Any problem with the spec, the presets, or a referenced file's existence.
    pub fn load(path: &Path, default_presets: &Path) -> Result<Self, SpecError> {
        Self::from_text(path, &read(path)?, default_presets)
    }

    /// As [`Spec::load`], with presets text (e.g. `fixtures/presets.toml`
    /// compiled into a program) as the default presets; `presets_name` names
    /// them in messages.
    ///
    /// # Errors
    /// As [`Spec::load`].
    pub fn load_with_presets_text(
        path: &Path,
        presets_name: &Path,
        presets_text: &str,
    ) -> Result<Self, SpecError> {
        Self::parse(
            path,
            &read(path)?,
            DefaultPresets::Text(presets_name, presets_text),
        )
    }

    /// Parses and validates spec text as if read from `path` (relative paths
    /// resolve against its folder). Used by [`Spec::load`] and the fuzz target.
    ///
    /// # Errors
    /// As [`Spec::load`].
    pub fn from_text(path: &Path, text: &str, default_presets: &Path) -> Result<Self, SpecError> {
        Self::parse(path, text, DefaultPresets::File(default_presets))
    }

    fn parse(
        path: &Path,
        text: &str,
        default_presets: DefaultPresets<'_>,
    ) -> Result<Self, SpecError> {
        let raw: RawSpec = parse_toml(path, text)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let presets = match (&raw.presets, default_presets) {
            (Some(p), _) => load_presets(&dir.join(p))?,
            (None, DefaultPresets::File(p)) => load_presets(p)?,
            (None, DefaultPresets::Text(name, text)) => parse_presets(name, text)?,
        };
        let name = raw.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "sweep".into(), |s| s.to_string_lossy().into_owned())
        });
        if let Err(reason) = check_folder_name(&name) {
            return Err(field(path, "spec", "name", format!("{name:?}"), reason));
        }
        let mut entries: Vec<ArchKnobs> = raw
            .archs
            .unwrap_or_default()
            .into_iter()
            .map(|p| ArchKnobs {
                preset: Some(p),
                ..ArchKnobs::default()
            })
            .collect();
        entries.extend(raw.arch);
        for (gi, g) in raw.grid.iter().enumerate() {
            // The size first: a grid of a million points is refused, not built.
            let points = g
                .iter()
                .map(|(_, v)| v.as_array().map_or(1, Vec::len))
                .try_fold(1usize, usize::checked_mul)
                .and_then(|n| n.checked_add(entries.len()));
            if points.is_none_or(|n| n > MAX_DESIGNS) {
                return Err(field(
                    path,
                    &format!("grid #{}", gi + 1),
                    "(axes)",
                    points.map_or_else(|| "too many".into(), |n| format!("{n} designs")),
                    format!(
                        "a spec may define at most {MAX_DESIGNS} designs; split the grid over several specs"
                    ),
                ));
            }
            entries.extend(expand_grid(path, gi, g)?);
        }
        if entries.len() > MAX_DESIGNS {
            return Err(field(
                path,
                "spec",
                "archs",
                format!("{} designs", entries.len()),
                format!("a spec may define at most {MAX_DESIGNS} designs"),
            ));
        }
        if entries.is_empty() {
            return Err(field(
                path,
                "spec",
                "archs",
                "[]",
                "name at least one design (`archs = [...]` or `[[arch]]`)",
            ));
        }
        let mut archs = Vec::new();
        let mut arch_names = HashSet::new();
        let mut arch_files: HashMap<String, String> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let entry = format!(
                "arch #{} ({})",
                i + 1,
                e.name
                    .clone()
                    .or_else(|| e.preset.clone())
                    .unwrap_or_else(|| "inline".into())
            );
            let base = match &e.preset {
                Some(p) => presets.get(p).ok_or_else(|| {
                    field(
                        path,
                        &entry,
                        "preset",
                        format!("\"{p}\""),
                        format!(
                            "unknown preset (known: {})",
                            presets.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?,
                None => &ArchKnobs::default(),
            };
            let mut knobs = ArchKnobs::raella_defaults().overlaid(base).overlaid(e);
            // A programming table is named relative to the spec.
            if let Some(f) = knobs
                .programming_noise
                .as_mut()
                .filter(|f| !f.is_empty() && Path::new(f.as_str()).is_relative())
            {
                *f = dir.join(f.as_str()).to_string_lossy().into_owned();
            }
            let name = e.name.clone().or_else(|| e.preset.clone()).ok_or_else(|| {
                field(
                    path,
                    &entry,
                    "name",
                    "(none)",
                    "an inline design needs a name",
                )
            })?;
            validate_knobs(path, &entry, &knobs)?;
            let base = e
                .preset
                .as_ref()
                .map(|_| ArchKnobs::raella_defaults().overlaid(base));
            check_unique(
                path,
                &entry,
                &name,
                &mut arch_names,
                &mut arch_files,
                "designs",
            )?;
            archs.push(Arch { name, knobs, base });
        }
        let seeds = raw.seeds.unwrap_or_else(|| vec![1]);
        if seeds.is_empty() {
            return Err(field(path, "spec", "seeds", "[]", "give at least one seed"));
        }
        if seeds.len() > MAX_SEEDS {
            return Err(field(
                path,
                "spec",
                "seeds",
                format!("{} seeds", seeds.len()),
                format!("a spec may list at most {MAX_SEEDS} seeds"),
            ));
        }
        let mut seen = HashSet::new();
        if let Some(s) = seeds.iter().find(|s| !seen.insert(**s)) {
            return Err(field(
                path,
                "spec",
                "seeds",
                s,
                "listed twice (its rows would be duplicated)",
            ));
        }
        let points = raw
            .model
            .len()
            .checked_mul(archs.len())
            .and_then(|n| n.checked_mul(seeds.len()));
        if points.is_none_or(|n| n > MAX_POINTS) {
            return Err(field(
                path,
                "spec",
                "(models x designs x seeds)",
                format!("{} x {} x {}", raw.model.len(), archs.len(), seeds.len()),
                format!("a spec may have at most {MAX_POINTS} points"),
            ));
        }
        if raw.model.is_empty() && raw.workload.is_empty() {
            return Err(field(
                path,
                "spec",
                "model",
                "(none)",
                "name at least one model (`[[model]]`) or workload (`[[workload]]`)",
            ));
        }
        let cost = match raw.cost {
            None => None,
            Some(c) => {
                let reference = c.iso_area_reference.unwrap_or_else(|| "isaac8b".into());
                let entry = "cost";
                let knobs = presets.get(&reference).ok_or_else(|| {
                    field(
                        path,
                        entry,
                        "iso_area_reference",
                        format!("\"{reference}\""),
                        format!(
                            "not a preset (known: {})",
                            presets.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
                let knobs = ArchKnobs::raella_defaults().overlaid(knobs);
                if !matches!(knobs.tiles, Some(TilesKnob::Count(_))) {
                    return Err(field(
                        path,
                        entry,
                        "iso_area_reference",
                        format!("\"{reference}\""),
                        "the reference design needs a fixed number of `tiles` (its chip sets the area budget)",
                    ));
                }
                let mut options = CostOptions::default();
                match c.recovery_timing.as_deref() {
                    None | Some("fixed") => {}
                    Some("adc_bound") => {
                        let floor_ns = c.recovery_floor_ns.unwrap_or(1.0);
                        if !floor_ns.is_finite() || floor_ns < 0.0 {
                            return Err(field(
                                path,
                                entry,
                                "recovery_floor_ns",
                                floor_ns,
                                "must be a number >= 0",
                            ));
                        }
                        options.mapping.recovery =
                            raella_cost::RecoveryTiming::AdcBound { floor_ns };
                    }
                    Some(other) => {
                        return Err(field(
                            path,
                            entry,
                            "recovery_timing",
                            format!("\"{other}\""),
                            "expected \"fixed\" or \"adc_bound\"",
                        ));
                    }
                }
                if c.recovery_floor_ns.is_some()
                    && !matches!(
                        options.mapping.recovery,
                        raella_cost::RecoveryTiming::AdcBound { .. }
                    )
                {
                    return Err(field(
                        path,
                        entry,
                        "recovery_floor_ns",
                        c.recovery_floor_ns.unwrap_or_default(),
                        "only with recovery_timing = \"adc_bound\"",
                    ));
                }
                if let Some(p) = c.pack_replicas {
                    options.mapping.pack_replicas = p;
                }
                options.first_layer_signed = match c.first_layer_inputs.as_deref() {
                    Some("unsigned") => false,
                    None | Some("signed") => true,
                    Some(other) => {
                        return Err(field(
                            path,
                            entry,
                            "first_layer_inputs",
                            format!("\"{other}\""),
                            "expected \"unsigned\" or \"signed\"",
                        ));
                    }
                };
                options.offset_signed_one_pass = match c.offset_signed_inputs.as_deref() {
                    None | Some("one_pass") => true,
                    Some("two_passes") => false,
                    Some(other) => {
                        return Err(field(
                            path,
                            entry,
                            "offset_signed_inputs",
                            format!("\"{other}\""),
                            "expected \"one_pass\" or \"two_passes\"",
                        ));
                    }
                };
                options.few_row_layers_two_slices = match c.typical_slicing.as_deref() {
                    None | Some("artifact") => true,
                    Some("uniform") => false,
                    Some(other) => {
                        return Err(field(
                            path,
                            entry,
                            "typical_slicing",
                            format!("\"{other}\""),
                            "expected \"artifact\" or \"uniform\"",
                        ));
                    }
                };
                let files = CostFiles {
                    options,
                    components: dir.join(c.components),
                    iso_area_reference: Arch {
                        name: reference,
                        base: Some(knobs.clone()),
                        knobs,
                    },
                    calibration: dir.join(c.calibration),
                    typical: dir.join(c.typical),
                    paper_ablation: c.paper_ablation.map(|p| dir.join(p)),
                };
                for (f, p) in [
                    ("cost.components", &files.components),
                    ("cost.calibration", &files.calibration),
                    ("cost.typical", &files.typical),
                ]
                .into_iter()
                .chain(
                    files
                        .paper_ablation
                        .as_ref()
                        .map(|p| ("cost.paper_ablation", p)),
                ) {
                    if let Some(reason) = file_problem(p, FileKind::Toml) {
                        return Err(field(
                            path,
                            "spec",
                            f,
                            format!("\"{}\"", p.display()),
                            reason,
                        ));
                    }
                }
                Some(files)
            }
        };
        if !raw.workload.is_empty() && cost.is_none() {
            return Err(field(
                path,
                "spec",
                "cost",
                "(none)",
                "workloads are costed: add a [cost] section",
            ));
        }
        let mut workloads = Vec::new();
        // Models and workloads share the `dnn` column of the energy files and the plots.
        let mut dnn_names = HashSet::new();
        let mut dnn_files: HashMap<String, String> = HashMap::new();
        for w in raw.workload {
            let entry = format!("workload {:?}", w.name);
            check_unique(
                path,
                &entry,
                &w.name,
                &mut dnn_names,
                &mut dnn_files,
                "models or workloads",
            )?;
            let file = dir.join(&w.file);
            if let Some(reason) = file_problem(&file, FileKind::Toml) {
                return Err(field(
                    path,
                    &entry,
                    "file",
                    format!("\"{}\"", w.file.display()),
                    reason,
                ));
            }
            if !(1..=MAX_BATCH).contains(&w.batch) {
                return Err(field(
                    path,
                    &entry,
                    "batch",
                    w.batch,
                    format!("must be in 1..={MAX_BATCH}"),
                ));
            }
            workloads.push(WorkloadSpec {
                name: w.name,
                file,
                batch: w.batch,
                stats_dir: match w.stats_dir {
                    // A mistyped folder would silently fall back to typical values.
                    Some(d) => match folder_problem(&dir.join(&d)) {
                        None => Some(dir.join(d)),
                        Some(reason) => {
                            return Err(field(
                                path,
                                &entry,
                                "stats_dir",
                                format!("\"{}\"", d.display()),
                                reason,
                            ));
                        }
                    },
                    None => None,
                },
                paper_efficiency_vs_isaac: w.paper_efficiency_vs_isaac,
                paper_throughput_vs_isaac: w.paper_throughput_vs_isaac,
            });
        }
        let mut models = Vec::new();
        for m in raw.model {
            let entry = format!("model {:?}", m.name);
            check_unique(
                path,
                &entry,
                &m.name,
                &mut dnn_names,
                &mut dnn_files,
                "models or workloads",
            )?;
            if let Some(b) = &m.bert {
                return Err(field(
                    path,
                    &entry,
                    "bert",
                    format!("\"{}\"", b.display()),
                    "BERT folders are no longer read directly: give the encoder as ONNX \
                     (`onnx`, e.g. .cache/models/onnx/minilm.onnx from `cargo xtask fetch-models`) \
                     and its `tokenizer` (tokenizer.json)",
                ));
            }
            if let Some(t) = &m.tokenizer {
                models.push(text_model(path, &dir, &entry, t, &m)?);
                continue;
            }
            let (Some(onnx), Some(images)) = (m.onnx.clone(), m.images.clone()) else {
                return Err(field(
                    path,
                    &entry,
                    if m.onnx.is_none() { "onnx" } else { "images" },
                    "(none)",
                    "a model needs `onnx` and `images` (or, for a text model, `onnx`, `tokenizer`, `lee50` and `texts`)",
                ));
            };
            if let Some((f, _)) = [
                ("lee50", m.lee50.is_some()),
                ("texts", m.texts.is_some()),
                ("max_tokens", m.max_tokens.is_some()),
            ]
            .into_iter()
            .find(|(_, v)| *v)
            {
                return Err(field(
                    path,
                    &entry,
                    f,
                    "(set)",
                    "only a text model (with `tokenizer`) takes Lee-50 documents and calibration texts",
                ));
            }
            if let Some(shape) = &m.input_shape
                && (shape.is_empty()
                    || shape.len() > 8
                    || shape.iter().any(|&d| d == 0 || d > 1 << 16))
            {
                return Err(field(
                    path,
                    &entry,
                    "input_shape",
                    format!("{shape:?}"),
                    "1 to 8 dimensions of 1..=65536 each (the input's shape per item, without the batch)",
                ));
            }
            // The model and the images must exist before anything is said about
            // labels: a photo folder that was never fetched is a missing folder, not
            // "IDX images without labels".
            for (f, p) in [("onnx", &onnx), ("images", &images)] {
                let full = dir.join(p);
                if !full.exists() {
                    return Err(field(
                        path,
                        &entry,
                        f,
                        format!("\"{}\"", p.display()),
                        if f == "images" {
                            missing(&full).replacen("no such file", "no such file or folder", 1)
                        } else {
                            missing(&full)
                        },
                    ));
                }
            }
            let images_dir = std::fs::metadata(dir.join(&images)).is_ok_and(|m| m.is_dir());
            let mut files: Vec<(&str, &PathBuf)> = vec![("onnx", &onnx)];
            if !images_dir {
                files.push(("images", &images));
            }
            let class_folders = m.class_folders.unwrap_or(false);
            match (&m.labels, images_dir, class_folders) {
                (Some(l), false, false) => files.push(("labels", l)),
                (None, false, false) => {
                    return Err(field(
                        path,
                        &entry,
                        "labels",
                        "(none)",
                        "IDX images need a labels file",
                    ));
                }
                (_, false, true) => {
                    return Err(field(
                        path,
                        &entry,
                        "class_folders",
                        "true",
                        "only a folder of photographs has class sub-folders",
                    ));
                }
                (Some(l), true, true) => {
                    return Err(field(
                        path,
                        &entry,
                        "labels",
                        format!("\"{}\"", l.display()),
                        "give either class sub-folders (`class_folders = true`) or a labels CSV, not both",
                    ));
                }
                // A labels CSV for a photo folder (`file,label` lines).
                (Some(l), true, false) => files.push(("labels", l)),
                (None, true, _) => {}
            }
            for (f, p) in files {
                let full = dir.join(p);
                let kind = match f {
                    "onnx" => FileKind::Onnx,
                    "labels" if images_dir => FileKind::Text,
                    _ => FileKind::Idx,
                };
                if let Some(reason) = file_problem(&full, kind) {
                    return Err(field(
                        path,
                        &entry,
                        f,
                        format!("\"{}\"", p.display()),
                        reason,
                    ));
                }
            }
            let scale = m.scale.unwrap_or(1.0 / 255.0);
            if !scale.is_finite() || scale <= 0.0 {
                return Err(field(
                    path,
                    &entry,
                    "scale",
                    scale,
                    "must be a positive number",
                ));
            }
            let std = m.std.unwrap_or_else(|| vec![1.0]);
            if let Some(s) = std.iter().find(|s| !s.is_finite() || **s <= 0.0) {
                return Err(field(
                    path,
                    &entry,
                    "std",
                    s,
                    "every std must be a positive number",
                ));
            }
            let mean = m.mean.unwrap_or_else(|| vec![0.0]);
            if let Some(v) = mean.iter().find(|v| !v.is_finite()) {
                return Err(field(path, &entry, "mean", v, "must be finite"));
            }
            // Pixels 0 and 255 must preprocess to finite inputs.
            let pick = |v: &[f32], c: usize| v.get(c).or(v.first()).copied().unwrap_or(0.0);
            for c in 0..mean.len().max(std.len()) {
                let (mu, sd) = (pick(&mean, c), pick(&std, c));
                if [0.0, 255.0 * scale]
                    .iter()
                    .any(|x| !((x - mu) / sd).is_finite())
                {
                    return Err(field(
                        path,
                        &entry,
                        "scale",
                        scale,
                        format!(
                            "(pixel * scale - {mu}) / {sd} overflows for pixels 0..=255 (channel {c})"
                        ),
                    ));
                }
            }
            check_ranges(path, &entry, m.calibration, m.evaluation)?;
            let (c, e) = (m.calibration, m.evaluation);
            if c.start < e.start + e.count && e.start < c.start + c.count {
                return Err(field(
                    path,
                    &entry,
                    "evaluation",
                    format!("{{ start = {}, count = {} }}", e.start, e.count),
                    format!(
                        "overlaps calibration {{ start = {}, count = {} }}; the two must be disjoint",
                        c.start, c.count
                    ),
                ));
            }
            models.push(ModelSpec {
                name: m.name,
                onnx: dir.join(onnx),
                images: dir.join(images),
                labels: m.labels.map(|l| dir.join(l)),
                class_folders,
                input_shape: m.input_shape.clone(),
                output: m.output.clone(),
                scale,
                mean,
                std,
                calibration: c,
                evaluation: e,
                text: None,
            });
        }
        Ok(Self {
            name,
            description: raw.description.unwrap_or_default(),
            path: path.to_path_buf(),
            models,
            archs,
            seeds,
            cost,
            workloads,
            presets: presets
                .iter()
                .map(|(n, k)| (n.clone(), ArchKnobs::raella_defaults().overlaid(k)))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/PRESETS.md` lists every knob with the default the code uses: the
    /// table's default column, parsed as TOML values, equals
    /// [`ArchKnobs::raella_defaults`] knob for knob.
    #[test]
    fn presets_doc_lists_the_code_defaults() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PRESETS.md"),
        )
        .unwrap();
        let knobs = &doc[doc.find("## Knobs").unwrap()..doc.find("## Presets").unwrap()];
        let mut text = String::new();
        for line in knobs.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() > 3 && cells[1].starts_with('`') && cells[1].ends_with('`') {
                let knob = cells[1].trim_matches('`');
                if knob
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    text.push_str(&format!("{knob} = {}\n", cells[2]));
                }
            }
        }
        let documented: ArchKnobs = toml::from_str(&text).unwrap();
        let code = ArchKnobs::raella_defaults();
        assert_eq!(
            documented, code,
            "docs/PRESETS.md's defaults differ from the code's"
        );
    }
}
