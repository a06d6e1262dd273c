//! Adaptive weight slicing driven by simulation: each candidate slicing is
//! compiled, run on calibration inputs on ideal crossbars, and compared with
//! the exact integer result under the policy's metric.
//!
//! The caller chooses the run configuration of the calibration. The
//! recommended one ([`calibration_run`]) is the layer's ADC with plain 1-bit
//! inputs: in RAELLA's ablation adaptive slicing comes before speculation, and
//! with speculation + recovery every flagged column-slice contributes exactly
//! its 1-bit result, so an error bound measured at 1-bit inputs carries over
//! to the speculative design. (Calibrating under speculation *with* recovery
//! would call every candidate exact; *without* recovery it charges clamped
//! 4-bit slices that recovery would repair, and picks `1x8` everywhere.)

use ndarray::{Array2, ArrayView2, Axis, s};
use raella_compiler::{AdaptiveSlicing, CompileConfig, Slicing, SlicingChoice, compile};
use raella_device::ExactMatrix;
use rayon::prelude::*;

use crate::{ProgrammedLayer, RunConfig, RuntimeError};

/// The recommended calibration run for a layer run with `run`: the same ADC,
/// plain 1-bit inputs, no noise.
#[must_use]
pub fn calibration_run(run: &RunConfig) -> RunConfig {
    RunConfig {
        input: crate::InputMode::one_bit(),
        column_noise: raella_device::ColumnNoise::default(),
        ..run.clone()
    }
}

/// Chooses the weight slicing of one layer (`weights`: outputs x inputs),
/// calibrating with `run` (noise switched off; see [`calibration_run`]).
///
/// Candidates wider than the crossbar's devices are skipped. `force` (e.g. `1x8`
/// for a network's last layer) bypasses the search.
///
/// # Errors
/// No candidate fits the device, calibration inputs of the wrong shape, or a
/// configuration the compiler rejects.
pub fn choose_weight_slicing(
    weights: ArrayView2<'_, i8>,
    base: &CompileConfig,
    policy: &AdaptiveSlicing,
    force: Option<&Slicing>,
    calibration: ArrayView2<'_, u8>,
    run: &RunConfig,
) -> Result<SlicingChoice, RuntimeError> {
    choose_weight_slicing_layer(weights, base, policy, force, calibration, run).map(|(c, _)| c)
}

/// [`choose_weight_slicing`], also giving the chosen candidate's layer as it
/// was compiled (without calibration) and programmed on ideal devices for
/// its run, when the chosen candidate was the last one run (the first within
/// budget, as usual): a caller building that same layer need not compile and
/// program it again.
///
/// # Errors
/// As [`choose_weight_slicing`].
pub fn choose_weight_slicing_layer(
    weights: ArrayView2<'_, i8>,
    base: &CompileConfig,
    policy: &AdaptiveSlicing,
    force: Option<&Slicing>,
    calibration: ArrayView2<'_, u8>,
    run: &RunConfig,
) -> Result<(SlicingChoice, Option<ProgrammedLayer>), RuntimeError> {
    let w = weights.as_standard_layout();
    let packed = ExactMatrix::new(w.as_slice().expect("standard layout"), w.nrows(), w.ncols());
    choose_weight_slicing_layer_packed(weights, &packed, base, policy, force, calibration, run)
}

/// [`choose_weight_slicing_layer`] with `weights` already packed for exact
/// products (`packed`, made by [`ExactMatrix::new`] from the same weights): the
/// calibration's exact outputs are its products (the same integers as
/// [`crate::reference::exact_outputs`]). A simulated design's build packs each
/// layer's weights once, for this and for its sampled check.
///
/// # Errors
/// As [`choose_weight_slicing`].
///
/// # Panics
/// If `packed` is not `weights`' shape.
pub fn choose_weight_slicing_layer_packed(
    weights: ArrayView2<'_, i8>,
    packed: &ExactMatrix,
    base: &CompileConfig,
    policy: &AdaptiveSlicing,
    force: Option<&Slicing>,
    calibration: ArrayView2<'_, u8>,
    run: &RunConfig,
) -> Result<(SlicingChoice, Option<ProgrammedLayer>), RuntimeError> {
    assert_eq!(
        (packed.outputs(), packed.cols()),
        weights.dim(),
        "packed weights of the layer's shape"
    );
    if let Some(f) = force {
        f.check_device(base.geometry.bits_per_device())?;
    }
    let bits = base.geometry.bits_per_device();
    if !policy.candidates().iter().any(|c| c.max_width() <= bits) {
        return Err(raella_compiler::CompileError::Adaptive(format!(
            "no candidate slicing fits a {bits}-bit device"
        ))
        .into());
    }
    if calibration.ncols() != weights.ncols() {
        return Err(RuntimeError::InputShape {
            expected: weights.ncols(),
            got: calibration.ncols(),
        });
    }
    let exact = by_parts(calibration, |part| {
        let part = part.as_standard_layout();
        let mut y = Array2::zeros((part.nrows(), packed.outputs()));
        packed.products(
            part.as_slice().expect("standard layout"),
            y.as_slice_mut().expect("standard layout"),
        );
        Ok(y)
    })?;
    let cal_run = RunConfig {
        column_noise: raella_device::ColumnNoise::default(),
        ..run.clone()
    };
    let budget = policy.budget_for(exact.view());
    let mut last: Option<(Slicing, ProgrammedLayer)> = None;
    let choice = policy.select(force, budget, |cand| {
        if cand.max_width() > bits {
            return Ok(f64::INFINITY);
        }
        let cfg = CompileConfig {
            weight_slicing: cand.clone(),
            ..base.clone()
        };
        let layer = ProgrammedLayer::ideal(compile(weights, &cfg, None)?);
        let sim = by_parts(calibration, |part| {
            Ok(layer.run(part, &cal_run)?.outputs.mapv(i64::from))
        })?;
        last = Some((cand.clone(), layer));
        Ok::<f64, RuntimeError>(policy.metric().error(exact.view(), sim.view()))
    })?;
    let layer = last
        .filter(|(s, _)| !choice.forced && *s == choice.chosen)
        .map(|(_, l)| l);
    Ok((choice, layer))
}

/// `f` on consecutive row ranges of `inputs`, one per thread, the results
/// stacked in order. A layer with few calibration vectors (a fully connected
/// layer sees one per image) would otherwise run them as one chunk on one
/// thread. Each vector's outputs depend on that vector alone (the
/// calibration run draws no noise), so the parts give the same rows as one
/// call.
fn by_parts(
    inputs: ArrayView2<'_, u8>,
    f: impl Fn(ArrayView2<'_, u8>) -> Result<Array2<i64>, RuntimeError> + Sync,
) -> Result<Array2<i64>, RuntimeError> {
    // At least this many vectors per part: fewer are not worth a task.
    const MIN_PART: usize = 8;
    let n = inputs.nrows();
    let parts = rayon::current_num_threads().min(n / MIN_PART).max(1);
    if parts == 1 {
        return f(inputs);
    }
    let size = n.div_ceil(parts);
    let starts: Vec<usize> = (0..n).step_by(size).collect();
    let outs: Vec<Array2<i64>> = starts
        .into_par_iter()
        .map(|a| f(inputs.slice(s![a..(a + size).min(n), ..])))
        .collect::<Result<_, _>>()?;
    let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
    Ok(ndarray::concatenate(Axis(0), &views).expect("parts of one width"))
}
