//! One model under one design on the caller's own tensors, without a spec:
//! what `cargo xtask run-onnx` runs and what the Python bindings
//! (`crates/raella-py`) run, so both give the same outputs and statistics bit
//! for bit. Calibration is the caller's tensors (activation scales and
//! adaptive slicing alike); one run is one batch (batch index 0 of the noise
//! streams), so the same inputs, design and seed always give the same result.

use std::slice;

use raella_network::{CrossbarBackend, ExactBackend, QuantModel, batch_items};
use raella_onnx::{FloatRunner, Graph, Tensor};
use raella_runtime::LayerStats;
use serde::Serialize;

use crate::cost::{CostModel, EnergyRow, cost_measured};
use crate::run::{LayerRow, layer_rows};
use crate::spec::Arch;

/// A digital reference computation of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// float32 throughout.
    Fp32,
    /// The 8-bit digital reference: int8 weights, 8-bit activations, exact
    /// integer MACs.
    Int8,
}

/// Runs a digital reference of `graph` on `inputs` (one tensor per graph
/// input, in graph order). The 8-bit reference calibrates its activation
/// scales on `calibration`, or on the inputs themselves when it is `None`.
///
/// # Errors
/// Inputs that do not fit the model, or a run error naming the node.
pub fn reference(
    graph: Graph,
    inputs: Vec<Tensor>,
    kind: Reference,
    calibration: Option<Vec<Tensor>>,
) -> anyhow::Result<Vec<Tensor>> {
    Ok(match kind {
        Reference::Fp32 => raella_onnx::run(&graph, inputs, &FloatRunner, 0)?,
        Reference::Int8 => {
            let cal = calibration.unwrap_or_else(|| inputs.clone());
            let model = QuantModel::calibrate(graph, slice::from_ref(&cal))?;
            model.run(inputs, &ExactBackend::new(&model), 0)?.outputs
        }
    })
}

/// A model quantised and mapped onto one design's crossbars, ready to run.
#[derive(Debug)]
pub struct Simulation {
    /// The quantised model.
    pub model: QuantModel,
    /// The design.
    pub arch: Arch,
    /// The model's crossbars, compiled, adaptively sliced and programmed.
    pub backend: CrossbarBackend,
    /// Seed of the programming and read-noise streams.
    pub seed: u64,
}

/// One run of a [`Simulation`].
#[derive(Debug, Clone)]
pub struct SimulationRun {
    /// The graph outputs, in graph order.
    pub outputs: Vec<Tensor>,
    /// Per weight layer, the run's statistics (groups summed).
    pub stats: Vec<Option<LayerStats>>,
    /// Items in the batch (the first input's leading dimension).
    pub items: usize,
    /// Multiply-accumulates of digital matrix products in the run (attention's
    /// activation-by-activation products).
    pub digital_macs: u64,
}

/// One weight layer's statistics of a run: `run-onnx`'s `stats.json` `layers`
/// entries (fields in the file's alphabetical order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    /// ADC conversions.
    pub conversions: u64,
    /// ADC conversions per 8b x 8b MAC.
    pub converts_per_mac: f64,
    /// Share of column-slices that contributed their exact value.
    pub exact_fraction: f64,
    /// Groups of the layer.
    pub groups: usize,
    /// Share of column sums inside the ADC range.
    pub in_range_fraction: f64,
    /// Input activation scale (real value = code x scale).
    pub input_scale: f32,
    /// `Conv`, `ConvTranspose` or `Linear`.
    pub kind: String,
    /// Node name.
    pub layer: String,
    /// The layer's own output error: relative RMS error of sampled outputs
    /// against exact integer MACs on the same 8-bit inputs.
    pub layer_rel_err: f64,
    /// 8b x 8b MACs.
    pub macs: u64,
    /// One group's matrix, `outputs x inputs`.
    pub matrix: String,
    /// Speculation failures per speculative conversion.
    pub recovery_rate: f64,
    /// Signed (int8) inputs, run in two passes.
    pub signed_input: bool,
    /// Input vectors.
    pub vectors: u64,
    /// Weight slicing used.
    pub weight_slicing: String,
}

impl Simulation {
    /// Quantises `graph` with activation scales from the `calibration`
    /// batches (each one tensor per graph input) and builds `arch`'s
    /// crossbars, adaptive slicing calibrated on the same batches.
    ///
    /// # Errors
    /// Calibration tensors that do not fit the model, or a design that cannot
    /// map it.
    pub fn build(
        graph: Graph,
        calibration: &[Vec<Tensor>],
        arch: Arch,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let model = QuantModel::calibrate(graph, calibration)?;
        Self::new(model, calibration, arch, seed)
    }

    /// As [`Simulation::build`] for a model already quantised on `calibration`.
    ///
    /// # Errors
    /// As [`Simulation::build`].
    pub fn new(
        model: QuantModel,
        calibration: &[Vec<Tensor>],
        arch: Arch,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let captured = model.capture_inputs(calibration)?;
        let backend = CrossbarBackend::build(&model, &arch.config(), &captured, seed)?;
        Ok(Self {
            model,
            arch,
            backend,
            seed,
        })
    }

    /// Runs `inputs` (one tensor per graph input, in graph order) as one batch.
    ///
    /// # Errors
    /// Inputs that do not fit the model, or a run error naming the node.
    pub fn run(&self, inputs: Vec<Tensor>) -> anyhow::Result<SimulationRun> {
        let items = batch_items(&inputs);
        let r = self.model.run(inputs, &self.backend, 0)?;
        Ok(SimulationRun {
            outputs: r.outputs,
            stats: r.stats,
            items,
            digital_macs: r.times.digital_macs,
        })
    }

    /// Per weight layer, the statistics of a run (`run-onnx`'s `stats.json`).
    #[must_use]
    pub fn layer_stats(&self, run: &SimulationRun) -> Vec<LayerReport> {
        self.model
            .layers
            .iter()
            .zip(&run.stats)
            .zip(self.backend.slicings())
            .map(|((l, s), slicing)| {
                let s = s.clone().unwrap_or_default();
                let w = &l.groups[0].weights;
                LayerReport {
                    conversions: s.activity.conversions,
                    converts_per_mac: s.converts_per_mac(),
                    exact_fraction: s.exact_fraction(),
                    groups: l.groups.len(),
                    in_range_fraction: s.in_range_fraction(),
                    input_scale: l.input_scale,
                    kind: l.info.kind.to_string(),
                    layer: l.name.clone(),
                    layer_rel_err: s.checked_rel_err(),
                    macs: s.macs,
                    matrix: format!("{} x {}", w.nrows(), w.ncols()),
                    recovery_rate: s.recovery_rate(),
                    signed_input: l.signed_input,
                    vectors: s.vectors,
                    weight_slicing: slicing.clone(),
                }
            })
            .collect()
    }

    /// Per weight layer, a run's statistics per item as a sweep reports them
    /// (`results.json` layer rows: the activity the cost model reads).
    #[must_use]
    pub fn layer_rows(&self, run: &SimulationRun) -> Vec<LayerRow> {
        layer_rows(
            &self.model,
            &self.backend,
            &run.stats,
            run.items,
            &self.arch,
        )
        .0
    }

    /// Energy, area and throughput of the design on this model from the
    /// activity `run` measured, per inference (an item of the run), as a
    /// sweep's `[cost]` section costs a simulated model ([`cost_measured`]).
    ///
    /// # Errors
    /// A design the component tables cannot cost, or a network that does not fit.
    pub fn cost(
        &self,
        cm: &CostModel,
        run: &SimulationRun,
        dnn: &str,
    ) -> anyhow::Result<EnergyRow> {
        // Whole MACs per item, as a sweep's model summary counts them.
        #[allow(clippy::cast_precision_loss)]
        let digital = (run.digital_macs / run.items.max(1) as u64) as f64;
        cost_measured(cm, &self.arch, dnn, &self.layer_rows(run), digital)
    }
}
