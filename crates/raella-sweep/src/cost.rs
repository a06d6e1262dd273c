//! Costing a sweep's designs with the cost model: shape-only workloads with
//! typical statistics, and simulated models with the activity the functional
//! simulation measured (accuracy and cost from one run).

use std::collections::BTreeMap;

use anyhow::Context;
use raella_compiler::Slicing;
use raella_cost::{
    Calibration, Components, CostArch, Energy, InputScheme, LayerShape, LayerStatistics, LayerWork,
    Tiles, TypicalStats, Workload, layer_energy, load_typical, map_network, tile_area,
};
use serde::Serialize;

use crate::run::{LayerRow, ModelSummary, ResultRow};
use crate::spec::{Arch, CostFiles, CostOptions, Spec, SpecError};

/// The paper's published ablation energies (mJ per batch) by workload and design.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PaperAblation {
    /// The one workload the coefficients are calibrated on.
    pub calibrate_on: String,
    /// `workload -> (key -> mJ)`; keys are design names and `adc_<design>`.
    pub energies: BTreeMap<String, BTreeMap<String, f64>>,
}

impl PaperAblation {
    fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}: malformed TOML", path.display()))?;
        let mut out = Self::default();
        for (k, val) in v {
            match (k.as_str(), val) {
                ("calibrate_on", toml::Value::String(s)) => out.calibrate_on = s,
                (w, toml::Value::Table(t)) => {
                    let mut m = BTreeMap::new();
                    for (key, x) in t {
                        let f = match x {
                            toml::Value::Float(f) => f,
                            toml::Value::Integer(i) => i as f64,
                            other => anyhow::bail!(
                                "{}: [{w}] `{key}` = {other}: expected a number",
                                path.display()
                            ),
                        };
                        m.insert(key, f);
                    }
                    out.energies.insert(w.to_string(), m);
                }
                (other, v) => {
                    anyhow::bail!("{}: `{other}` = {v}: unexpected entry", path.display())
                }
            }
        }
        anyhow::ensure!(
            out.energies.contains_key(&out.calibrate_on),
            "{}: calibrate_on = \"{}\" has no table",
            path.display(),
            out.calibrate_on
        );
        Ok(out)
    }

    /// The published energy of `design` on `workload`, mJ per batch.
    #[must_use]
    pub fn energy(&self, workload: &str, design: &str) -> Option<f64> {
        self.energies
            .get(workload)
            .and_then(|m| m.get(design))
            .copied()
    }
}

/// The cost model's inputs, loaded.
#[derive(Debug, Clone)]
pub struct CostModel {
    /// The published ablation, if given.
    pub paper: Option<PaperAblation>,
    /// Component tables.
    pub components: Components,
    /// The iso-area reference design.
    pub reference: Arch,
    /// Calibrated coefficients.
    pub calibration: Calibration,
    /// Typical statistics by design.
    pub typical: BTreeMap<String, TypicalStats>,
    /// Mapping and timing assumptions.
    pub options: crate::spec::CostOptions,
}

/// Where a design's typical statistics (for shape-only workloads) come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TypicalSource<'a> {
    /// The design's own entry, or its preset's when it simulates exactly as its preset.
    Found(&'a str, &'a TypicalStats),
    /// None applies; the reason says which knob differs or which entry is missing.
    Missing(String),
}

impl CostModel {
    /// Loads every file.
    ///
    /// # Errors
    /// Any file error, naming the file.
    pub fn load(f: &CostFiles) -> anyhow::Result<Self> {
        let components = Components::load(&f.components)?;
        let paper = f
            .paper_ablation
            .as_deref()
            .map(PaperAblation::load)
            .transpose()?;
        Ok(Self {
            options: f.options,
            reference: f.iso_area_reference.clone(),
            calibration: Calibration::load(&f.calibration)?,
            typical: load_typical(&f.typical)?,
            components,
            paper,
        })
    }

    /// Checks that the component tables can cost every design of the spec (and
    /// the iso-area reference) as it is configured.
    ///
    /// # Errors
    /// [`SpecError::Field`] naming the spec, the design and the knob.
    pub fn check(&self, spec: &Spec) -> Result<(), SpecError> {
        for a in spec.archs.iter().chain(std::iter::once(&self.reference)) {
            a.cost_arch()
                .check_tables(&self.components)
                .map_err(|e| match e {
                    raella_cost::CostError::Knob {
                        field,
                        value,
                        reason,
                    } => SpecError::Field {
                        path: spec.path.clone(),
                        entry: format!("design \"{}\"", a.name),
                        field: field.to_string(),
                        value,
                        reason: format!("cannot be costed: {reason}"),
                    },
                    other => SpecError::Field {
                        path: spec.path.clone(),
                        entry: format!("design \"{}\"", a.name),
                        field: "(cost)".into(),
                        value: String::new(),
                        reason: other.to_string(),
                    },
                })?;
        }
        Ok(())
    }

    /// The typical statistics a shape-only workload uses for design `a`: its
    /// own entry, else its preset's when `a` simulates exactly as the preset
    /// (only cost-only knobs differ). A design that changes a simulation knob
    /// (ADC bits, rows, noise, ...) would change the statistics, so the
    /// preset's are refused.
    #[must_use]
    pub fn typical_for<'a>(&'a self, a: &'a Arch) -> TypicalSource<'a> {
        if let Some((n, t)) = self.typical.get_key_value(&a.name) {
            return TypicalSource::Found(n, t);
        }
        let Some(preset) = a.knobs.preset.as_deref() else {
            return TypicalSource::Missing(format!(
                "no typical statistics for `{}` in the typical-statistics file",
                a.name
            ));
        };
        match (self.typical.get_key_value(preset), a.simulation_override()) {
            (None, _) => TypicalSource::Missing(format!(
                "no typical statistics for `{}` or its preset `{preset}`",
                a.name
            )),
            (Some(_), Some((knob, mine, theirs))) => TypicalSource::Missing(format!(
                "`{knob}` = {mine} differs from preset `{preset}` ({theirs}), whose typical \
                 statistics were measured without it"
            )),
            (Some((n, t)), None) => TypicalSource::Found(n, t),
        }
    }
}

/// Energy, area and throughput of one design on one workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyRow {
    /// Workload or model name.
    pub dnn: String,
    /// Design.
    pub arch: String,
    /// Inferences per batch.
    pub batch: usize,
    /// Energy per batch, mJ.
    pub energy_mj: f64,
    /// Energy per MAC, fJ.
    pub fj_per_mac: f64,
    /// 8b x 8b ops per second per watt (2 ops per MAC), TOPS/W.
    pub tops_per_w: f64,
    /// ISAAC's energy / this design's, per batch (empty without an ISAAC row).
    pub energy_efficiency_vs_isaac: Option<f64>,
    /// Pipelined inferences per second at the iso-area budget.
    pub inferences_per_s: f64,
    /// This design's throughput / ISAAC's.
    pub throughput_vs_isaac: Option<f64>,
    /// Chip area used, mm^2.
    pub area_mm2: f64,
    /// Tiles.
    pub tiles: usize,
    /// Crossbars holding one copy of the network.
    pub crossbars: usize,
    /// ADC conversions per inference.
    pub conversions_per_inference: f64,
    /// ADC energy (converter, shift-add, column buffer) per conversion, pJ.
    pub adc_pj_per_conversion: f64,
    /// Multiply-accumulates per inference of digital matrix products
    /// (attention's activation-by-activation products), simulated models only.
    pub digital_macs_per_inference: f64,
    /// Their energy per batch, mJ, at `raella_cost::Components::digital_mac_pj`; not in
    /// `energy_mj` (the paper's comparisons leave this work out; it is the same
    /// for every design).
    pub digital_energy_mj: f64,
    /// Where the per-layer statistics came from.
    pub stats_source: String,
    /// The paper's energy-efficiency ratio (RAELLA rows).
    pub paper_efficiency_vs_isaac: Option<f64>,
    /// The paper's throughput ratio (RAELLA rows).
    pub paper_throughput_vs_isaac: Option<f64>,
    /// The paper's energy per batch for this design (published ablation), mJ.
    pub paper_energy_mj: Option<f64>,
    /// Energy per batch by category, pJ.
    pub breakdown: Energy,
    /// Per layer, per inference.
    pub layers: Vec<LayerCost>,
}

/// One layer's cost per inference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    /// Layer name.
    pub layer: String,
    /// Energy, pJ.
    pub energy_pj: f64,
    /// By category, pJ.
    pub breakdown: Energy,
    /// Crossbars of one copy.
    pub crossbars: usize,
    /// Copies.
    pub replicas: usize,
    /// Time per inference with those copies, ns.
    pub time_ns: f64,
    /// Cell utilisation of one copy.
    pub utilisation: f64,
    /// Where its statistics came from.
    pub stats_source: String,
}

/// The most rows a layer may have for `typical_slicing = "artifact"` to give it
/// 4-4: the artifact's 2-slice layers have 9 or 27 rows, its 3-slice first layers 147;
/// any cut between 28 and 146 reads the same evidence.
const FEW_ROWS: usize = 64;

fn slicing_len(text: Option<&String>) -> usize {
    text.and_then(|t| Slicing::parse(t).ok())
        .map_or(8, |s| s.len())
}

/// Input scheme and weight slices of layer `i` (of shape `shape`) of `n` for a
/// design (shape-only workloads), under the `[cost]` options.
fn scheme(
    a: &Arch,
    i: usize,
    n: usize,
    shape: &LayerShape,
    all_linear: bool,
    o: &CostOptions,
) -> (usize, InputScheme) {
    let k = &a.knobs;
    let slices = if k.adaptive == Some(true) {
        // The typical adaptive choice (4-2-2), the last layer forced. With
        // `typical_slicing = "artifact"`, layers of few rows take 4-4: the public
        // artifact's adaptive slicing chose 2 slices on all 36 depthwise layers (9
        // rows) and on the 27-row first layers of MobileNetV2, ShuffleNetV2 and
        // InceptionV3, and 3 on the 147-row first layers of ResNet18/50 and GoogLeNet
        // (docs/ARTIFACT.md Q2). Pointwise layers keep 4-2-2, the artifact's majority.
        if i + 1 == n {
            slicing_len(k.last_layer_slicing.as_ref())
        } else if o.few_row_layers_two_slices
            && (shape.groups > 1 || i == 0)
            && shape.rows <= FEW_ROWS
        {
            2
        } else {
            3
        }
    } else {
        slicing_len(k.weight_slicing.as_ref())
    };
    let widths = k
        .input_slicing
        .as_ref()
        .and_then(|t| Slicing::parse(t).ok())
        .map_or_else(|| vec![1; 8], |s| s.widths().to_vec());
    let recovery = k.input.as_deref() == Some("speculative") && k.recovery == Some(true);
    // A transformer's LayerNorm/GELU outputs are signed; a CNN's first layer is, if
    // it reads the normalised image rather than unsigned pixels (`first_layer_inputs`).
    // A design whose weights are offset-encoded with a digital offset correction
    // (ISAAC) can read a transformer's signed activations cast to unsigned in one
    // pass and subtract the offset's product digitally: the public artifact charges
    // ISAAC one pass on BERT, the Center+Offset designs two (`offset_signed_inputs`,
    // docs/COST.md). A CNN's first layer is treated alike on every design
    // (`first_layer_inputs`): the calibration on ResNet18 fits with two passes there.
    // A design set to `signed_inputs = "offset"` reads every signed input so.
    let cast = k.signed_inputs.as_deref() == Some("offset")
        || (all_linear
            && o.offset_signed_one_pass
            && k.encoding.as_deref() == Some("unsigned_offset"));
    let passes = if ((i == 0 && o.first_layer_signed) || all_linear) && !cast {
        2.0
    } else {
        1.0
    };
    (
        slices,
        InputScheme {
            slice_widths: widths,
            recovery,
            passes,
        },
    )
}

/// A shape-only costing refused: `(design on workload, why)`.
pub type NotCosted = (String, String);

/// One design's work on one network: the design, its cost organisation (from
/// the same knobs as its simulation) and its layers' event counts.
struct DesignWork<'a> {
    arch: &'a Arch,
    cost: CostArch,
    layers: Vec<LayerWork>,
}

/// The preset a design is exactly (every knob but its name and description
/// equal to the preset's): the key of published figures for it.
fn exact_preset(a: &Arch) -> Option<&str> {
    let base = a.base.as_ref()?;
    let strip = |k: &crate::spec::ArchKnobs| crate::spec::ArchKnobs {
        name: None,
        description: None,
        preset: None,
        ..k.clone()
    };
    (strip(&a.knobs) == strip(base))
        .then_some(a.knobs.preset.as_deref())
        .flatten()
}

/// The iso-area budget on a network of `shapes`: the reference design's chip
/// area (its fixed tiles, times the chips one copy of the network needs on it),
/// and that number of chips.
fn iso_area_budget(
    cm: &CostModel,
    shapes: &[LayerShape],
    all_linear: bool,
) -> anyhow::Result<(f64, usize)> {
    let r = &cm.reference;
    let ra = r.cost_arch();
    let Tiles::Fixed(tiles) = ra.tiles else {
        anyhow::bail!(
            "the iso-area reference `{}` has no fixed tile count",
            r.name
        );
    };
    let n = shapes.len();
    let crossbars: usize = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let slices = scheme(r, i, n, s, all_linear, &cm.options).0;
            raella_cost::layer_crossbars(&ra, s, slices)
        })
        .sum();
    let per_chip = tiles * ra.macros_per_tile * ra.crossbars_per_macro;
    let chips = crossbars.div_ceil(per_chip).max(1);
    let area = tile_area(&ra, &cm.components)?.total_um2() * (tiles * chips) as f64;
    Ok((area, chips))
}

fn perf_rows(
    cm: &CostModel,
    dnn: &str,
    batch: usize,
    macs: f64,
    all_linear: bool,
    works: &[DesignWork<'_>],
    paper: (Option<f64>, Option<f64>),
) -> anyhow::Result<Vec<EnergyRow>> {
    let Some(first) = works.first() else {
        return Ok(Vec::new());
    };
    let shapes: Vec<LayerShape> = first.layers.iter().map(|w| w.shape.clone()).collect();
    let (budget_um2, chips) = iso_area_budget(cm, &shapes, all_linear)?;
    let mut rows = Vec::new();
    for w in works {
        let (name, arch, ws) = (&w.arch.name, &w.cost, &w.layers);
        let mut e = Energy::default();
        let mut per_layer = Vec::with_capacity(ws.len());
        for l in ws {
            let le = layer_energy(l, arch, &cm.components, &cm.calibration)?;
            e += le;
            per_layer.push(le);
        }
        let tiles = match arch.tiles {
            Tiles::Fixed(t) => t * chips,
            Tiles::IsoArea => {
                let t = tile_area(arch, &cm.components)?.total_um2();
                // Flooring a finite positive ratio of areas.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let n = (budget_um2 / t).floor() as usize;
                n.max(1)
            }
        };
        let perf = map_network(ws, arch, &cm.components, tiles, &cm.options.mapping)
            .with_context(|| format!("{dnn} on {name}"))?;
        let per_inf = e.total_pj();
        let breakdown = e;
        let b = batch as f64;
        let scaled = breakdown.scaled(b);
        let preset = exact_preset(w.arch);
        let is_raella = preset == Some("raella");
        let conversions: f64 = ws.iter().map(|l| l.conversions).sum();
        rows.push(EnergyRow {
            dnn: dnn.to_string(),
            arch: name.clone(),
            batch,
            energy_mj: per_inf * b * 1e-9,
            fj_per_mac: breakdown.fj_per_mac(macs),
            tops_per_w: breakdown.tops_per_w(macs),
            energy_efficiency_vs_isaac: None,
            inferences_per_s: perf.inferences_per_s,
            throughput_vs_isaac: None,
            area_mm2: perf.area_mm2,
            tiles,
            crossbars: perf.layers.iter().map(|p| p.crossbars).sum(),
            conversions_per_inference: conversions,
            adc_pj_per_conversion: breakdown.adc_pj / conversions.max(f64::MIN_POSITIVE),
            digital_macs_per_inference: 0.0,
            digital_energy_mj: 0.0,
            stats_source: {
                let mut src: Vec<&str> = ws.iter().map(|w| w.stats_source.as_str()).collect();
                src.sort_unstable();
                src.dedup();
                src.join("+")
            },
            layers: ws
                .iter()
                .zip(&per_layer)
                .zip(&perf.layers)
                .map(|((w, le), p)| LayerCost {
                    layer: w.shape.name.clone(),
                    energy_pj: le.total_pj(),
                    breakdown: *le,
                    crossbars: p.crossbars,
                    replicas: p.replicas,
                    time_ns: p.time_ns,
                    utilisation: p.utilisation,
                    stats_source: w.stats_source.clone(),
                })
                .collect(),
            paper_efficiency_vs_isaac: if is_raella { paper.0 } else { None },
            paper_throughput_vs_isaac: if is_raella { paper.1 } else { None },
            paper_energy_mj: preset.and_then(|p| cm.paper.as_ref().and_then(|x| x.energy(dnn, p))),
            breakdown: scaled,
        });
    }
    // Ratios against the reference design as it is (not an overridden copy).
    if let Some(r) = works
        .iter()
        .position(|w| exact_preset(w.arch) == Some(cm.reference.name.as_str()))
    {
        let (re, rt) = (rows[r].energy_mj, rows[r].inferences_per_s);
        for row in &mut rows {
            row.energy_efficiency_vs_isaac = Some(re / row.energy_mj);
            row.throughput_vs_isaac = Some(row.inferences_per_s / rt);
        }
    }
    Ok(rows)
}

/// A shape-only workload's layers on design `a` with typical statistics (or a
/// statistics file per layer), or why the design cannot be costed on it.
fn shape_only_layers(
    cm: &CostModel,
    a: &Arch,
    cost: &CostArch,
    shapes: &[LayerShape],
    all_linear: bool,
    stats_dir: Option<&std::path::Path>,
) -> anyhow::Result<Result<Vec<LayerWork>, String>> {
    let n = shapes.len();
    let typ = cm.typical_for(a);
    let mut ws: Vec<LayerWork> = Vec::with_capacity(n);
    for (i, shape) in shapes.iter().enumerate() {
        let (slices, sch) = scheme(a, i, n, shape, all_linear, &cm.options);
        // A statistics file `<stats_dir>/<design>/<layer>.txt` (the format the sweep
        // exports) wins over the typical values.
        let file = stats_dir.map(|d| d.join(&a.name).join(format!("{}.txt", shape.name)));
        let (stats, source) = match (file.filter(|f| f.is_file()), &typ) {
            (Some(f), _) => {
                let text = raella_data::files::read_text(&f, raella_data::files::FileKind::Text)?;
                (LayerStatistics::parse(&f, &text)?, "statistics")
            }
            (None, TypicalSource::Found(_, t)) => (t.for_layer(slices, sch.recovery), "typical"),
            (None, TypicalSource::Missing(why)) => return Ok(Err(why.clone())),
        };
        ws.push(LayerWork::estimate(
            shape.clone(),
            cost,
            &stats,
            &sch,
            source,
        ));
    }
    Ok(Ok(ws))
}

/// Costs the spec's shape-only workloads on every design with typical
/// statistics for its configuration; the others are listed in the returned
/// notes (design, reason).
///
/// # Errors
/// Unreadable workload files, or a network that does not fit.
pub fn cost_workloads(
    spec: &Spec,
    cm: &CostModel,
) -> anyhow::Result<(Vec<EnergyRow>, Vec<NotCosted>)> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for w in &spec.workloads {
        let wl = Workload::load(&w.file)?;
        let all_linear = wl.kinds.iter().all(|k| k == "linear");
        let mut works = Vec::new();
        for a in &spec.archs {
            let cost = a.cost_arch();
            match shape_only_layers(cm, a, &cost, &wl.layers, all_linear, w.stats_dir.as_deref())? {
                Ok(layers) => works.push(DesignWork {
                    arch: a,
                    cost,
                    layers,
                }),
                Err(why) => skipped.push((format!("{} on {}", a.name, w.name), why)),
            }
        }
        out.extend(perf_rows(
            cm,
            &w.name,
            w.batch,
            wl.macs(),
            all_linear,
            &works,
            (w.paper_efficiency_vs_isaac, w.paper_throughput_vs_isaac),
        )?);
    }
    Ok((out, skipped))
}

/// Design `a`'s event counts per inference on a simulated network, from the
/// per-layer rows its simulation measured.
fn measured_work(a: &Arch, layers: &[LayerRow]) -> Vec<LayerWork> {
    let k = &a.knobs;
    let ns = k
        .input_slicing
        .as_ref()
        .and_then(|t| Slicing::parse(t).ok())
        .map_or(8, |s| s.len()) as f64;
    let rec = if k.input.as_deref() == Some("speculative") && k.recovery == Some(true) {
        k.input_slicing
            .as_ref()
            .and_then(|t| Slicing::parse(t).ok())
            .map_or(8.0, |s| f64::from(s.total_bits()))
    } else {
        0.0
    };
    layers
        .iter()
        .map(|l| LayerWork {
            shape: LayerShape {
                name: l.layer.clone(),
                vectors: l.vectors_per_image,
                groups: l.groups,
                rows: l.rows,
                filters: l.filters,
                in_elems: l.in_elems,
                out_elems: l.out_elems,
            },
            weight_slices: l.cim_units_per_weight,
            passes: l.passes,
            cycles_per_vector: ns + rec,
            recovery_cycles_per_vector: rec,
            speculation: l.speculation,
            conversions: l.conversions_per_image,
            row_drives: l.row_drives_per_image,
            input_pulses: l.input_pulses_per_image,
            cell_charge: l.cell_charge_per_image,
            stats_source: "simulation".into(),
        })
        .collect()
}

/// Costs one design on one simulated network `dnn` from the per-layer rows
/// its simulation measured (per inference; one inference per batch), as
/// [`cost_simulated`] costs each design of a sweep: the iso-area budget is the
/// reference design's chip on the same layer shapes. The ratios against the
/// reference are set only when `arch` is the reference preset itself.
///
/// # Errors
/// A network that does not fit, or a design the component tables cannot cost.
pub fn cost_measured(
    cm: &CostModel,
    arch: &Arch,
    dnn: &str,
    layers: &[LayerRow],
    digital_macs_per_inference: f64,
) -> anyhow::Result<EnergyRow> {
    let work = DesignWork {
        arch,
        cost: arch.cost_arch(),
        layers: measured_work(arch, layers),
    };
    work.cost
        .check_tables(&cm.components)
        .with_context(|| format!("design \"{}\" cannot be costed", arch.name))?;
    let macs = work.layers.iter().map(|w| w.shape.macs()).sum();
    let all_linear = layers.iter().all(|l| l.kind == "Linear");
    let mut row = perf_rows(cm, dnn, 1, macs, all_linear, &[work], (None, None))?
        .pop()
        .context("one design costed")?;
    row.digital_macs_per_inference = digital_macs_per_inference;
    row.digital_energy_mj = cm.components.digital_energy_mj(digital_macs_per_inference);
    Ok(row)
}

/// Costs the simulated models with the activity their simulation measured
/// (first seed), one inference per batch; beside them, each model's layer
/// shapes costed with typical statistics (`<model> (shape-only)`) where the
/// design has them.
///
/// # Errors
/// A network that does not fit.
pub fn cost_simulated(
    spec: &Spec,
    cm: &CostModel,
    rows: &[ResultRow],
    models: &[ModelSummary],
) -> anyhow::Result<Vec<EnergyRow>> {
    let mut out = Vec::new();
    let first = spec.seeds[0];
    for m in &spec.models {
        let mut works = Vec::new();
        let mut shape_only = Vec::new();
        let mut macs = 0.0;
        let mut all_linear = false;
        for a in &spec.archs {
            let Some(r) = rows
                .iter()
                .find(|r| r.model == m.name && r.arch == a.name && r.seed == first)
            else {
                continue;
            };
            let cost = a.cost_arch();
            let ws = measured_work(a, &r.layers);
            macs = ws.iter().map(|w| w.shape.macs()).sum();
            all_linear = r.layers.iter().all(|l| l.kind == "Linear");
            // The same network's shape-only estimate: its layer shapes with the
            // design's typical statistics, as for a `[[workload]]`.
            let shapes: Vec<LayerShape> = ws.iter().map(|w| w.shape.clone()).collect();
            if let Ok(est) = shape_only_layers(cm, a, &cost, &shapes, all_linear, None)? {
                shape_only.push(DesignWork {
                    arch: a,
                    cost: cost.clone(),
                    layers: est,
                });
            }
            works.push(DesignWork {
                arch: a,
                cost,
                layers: ws,
            });
        }
        let mut simulated = perf_rows(cm, &m.name, 1, macs, all_linear, &works, (None, None))?;
        #[allow(clippy::cast_precision_loss)]
        let digital = models
            .iter()
            .find(|s| s.model == m.name)
            .map_or(0.0, |s| s.digital_macs_per_image as f64);
        for r in &mut simulated {
            r.digital_macs_per_inference = digital;
            r.digital_energy_mj = cm.components.digital_energy_mj(digital);
        }
        out.extend(simulated);
        let name = format!("{} (shape-only)", m.name);
        out.extend(perf_rows(
            cm,
            &name,
            1,
            macs,
            all_linear,
            &shape_only,
            (None, None),
        )?);
    }
    Ok(out)
}

/// Costs a finished sweep: its simulated models from their measured activity,
/// then its shape-only workloads. Returns the rows and the shape-only
/// costings refused (design on workload, why).
///
/// # Errors
/// As [`cost_simulated`] and [`cost_workloads`].
pub fn cost_sweep(
    spec: &Spec,
    cm: &CostModel,
    rows: &[ResultRow],
    models: &[ModelSummary],
) -> anyhow::Result<(Vec<EnergyRow>, Vec<NotCosted>)> {
    let mut energy = cost_simulated(spec, cm, rows, models)?;
    let (shape_only, skipped) = cost_workloads(spec, cm)?;
    energy.extend(shape_only);
    Ok((energy, skipped))
}

/// `(design, paper mJ, base mJ, mJ per unit cell_scale, mJ per pJ of pulse_dac_pj)`.
type CalibrationTerm = (String, f64, f64, f64, f64);

/// `(design, paper mJ, fitted mJ)`.
pub type FitPoint = (String, f64, f64);

/// Energies per batch (mJ) of each design of the calibration workload, split
/// into the part the two coefficients do not touch and the two parts they
/// scale: `E = base + cell_scale * cells + pulse_dac_pj * pulses`.
fn calibration_terms(
    spec: &Spec,
    cm: &CostModel,
    workload: &str,
) -> anyhow::Result<Vec<CalibrationTerm>> {
    let mut out = Vec::new();
    let paper = cm
        .paper
        .as_ref()
        .context("the spec's [cost] section has no paper_ablation file")?;
    let at = |a: f64, b: f64| -> anyhow::Result<Vec<EnergyRow>> {
        let mut m = cm.clone();
        m.calibration = Calibration {
            cell_scale: a,
            pulse_dac_pj: b,
        };
        let mut s = spec.clone();
        s.workloads.retain(|w| w.name == workload);
        anyhow::ensure!(
            !s.workloads.is_empty(),
            "the spec has no workload `{workload}`"
        );
        Ok(cost_workloads(&s, &m)?.0)
    };
    let (r0, rc, rp) = (at(0.0, 0.0)?, at(1.0, 0.0)?, at(0.0, 1.0)?);
    for ((a, c), p) in r0.iter().zip(&rc).zip(&rp) {
        let Some(name) = spec
            .archs
            .iter()
            .find(|x| x.name == a.arch)
            .and_then(exact_preset)
        else {
            continue;
        };
        if let Some(target) = paper.energy(workload, name) {
            out.push((
                a.arch.clone(),
                target,
                a.energy_mj,
                c.energy_mj - a.energy_mj,
                p.energy_mj - a.energy_mj,
            ));
        }
    }
    Ok(out)
}

/// The least-squares fit (in log energy) of the two coefficients on the
/// paper's ablation energies of the `calibrate_on` workload: a deterministic
/// grid search, `cell_scale` in 0.05..50 (log-spaced), `pulse_dac_pj` in 0..3.
///
/// # Errors
/// No paper ablation, or the calibration workload is not in the spec.
pub fn calibrate(spec: &Spec, cm: &CostModel) -> anyhow::Result<(Calibration, Vec<FitPoint>)> {
    let w = cm
        .paper
        .as_ref()
        .context("no paper_ablation file")?
        .calibrate_on
        .clone();
    let terms = calibration_terms(spec, cm, &w)?;
    anyhow::ensure!(
        !terms.is_empty(),
        "no design of the spec has a published energy for `{w}`"
    );
    let loss = |a: f64, b: f64| {
        terms
            .iter()
            .map(|(_, t, e0, c, p)| ((e0 + a * c + b * p) / t).ln().powi(2))
            .sum::<f64>()
    };
    let mut best = (f64::INFINITY, 1.0, 0.0);
    for i in 0..=400 {
        let a = 0.05 * 1000f64.powf(f64::from(i) / 400.0);
        for j in 0..=400 {
            let b = 3.0 * f64::from(j) / 400.0;
            let l = loss(a, b);
            if l < best.0 {
                best = (l, a, b);
            }
        }
    }
    let cal = Calibration {
        cell_scale: best.1,
        pulse_dac_pj: best.2,
    };
    let fit = terms
        .iter()
        .map(|(n, t, e0, c, p)| {
            (
                n.clone(),
                *t,
                e0 + cal.cell_scale * c + cal.pulse_dac_pj * p,
            )
        })
        .collect();
    Ok((cal, fit))
}
