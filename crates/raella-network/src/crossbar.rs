//! Running a quantised network's crossbar layers on simulated crossbars.

use ndarray::Array2;
use raella_compiler::{
    AdaptiveSlicing, Calibration, CompileConfig, QuantizedMatrix, Slicing, compile,
};
use raella_device::{DeviceNoise, ExactMatrix};
use raella_onnx::PARALLEL_VALUES;
use raella_runtime::{LayerStats, ProgrammedLayer, RunConfig, choose_weight_slicing_layer_packed};
use rayon::prelude::*;

use crate::NetworkError;
use crate::quant::{MacBackend, QInput, QuantModel, offset_code};

/// Vectors per backend call whose outputs are checked against exact integer
/// MACs (evenly spaced; all of them when fewer): the per-layer error.
pub const CHECKED_VECTORS: usize = 64;

/// Calibration vectors kept per layer and group for adaptive slicing and the
/// `search` center rule (evenly spaced over what the calibration images produce).
pub const CALIBRATION_VECTORS: usize = 256;

/// Everything that defines a simulated design, for a whole network.
#[derive(Debug)]
pub struct ArchConfig {
    /// Crossbar geometry, encoding and (fixed, or starting) weight slicing.
    pub compile: CompileConfig,
    /// Adaptive weight slicing: the policy and the run it is calibrated with.
    pub adaptive: Option<(AdaptiveSlicing, RunConfig)>,
    /// Slicing forced on the last crossbar layer when adaptive (`1x8` in RAELLA).
    pub force_last: Option<Slicing>,
    /// ADC, input mode, read noise; its seed is replaced per layer, group and batch.
    pub run: RunConfig,
    /// Programming non-idealities, if any.
    pub device_noise: Option<DeviceNoise>,
    /// Signed inputs cast to unsigned (`x + 128`) and read in one pass, the
    /// offset's product `128 sum(w)` subtracted digitally per filter (ISAAC's
    /// treatment in the public artifact); `false`: two passes, the positive parts
    /// and the negative magnitudes.
    pub signed_offset: bool,
}

impl ArchConfig {
    /// A design with fixed weight slicing and ideal devices (no adaptive
    /// slicing, no programming noise): `compile` and `run` as given.
    #[must_use]
    pub fn fixed(compile: CompileConfig, run: RunConfig) -> Self {
        Self {
            compile,
            adaptive: None,
            force_last: None,
            run,
            device_noise: None,
            signed_offset: false,
        }
    }
}

/// The programmed crossbars of every layer and group of a network.
#[derive(Debug)]
pub struct CrossbarBackend {
    layers: Vec<Vec<ProgrammedLayer>>,
    /// The int8 weights per layer and group, for checking sampled outputs.
    weights: Vec<Vec<ExactMatrix>>,
    slicings: Vec<String>,
    run: RunConfig,
    seed: u64,
    /// [`ArchConfig::signed_offset`], and per layer and group `128 sum(w)` per filter.
    signed_offset: bool,
    offset_terms: Vec<Vec<Vec<i64>>>,
}

fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for &p in parts {
        h = (h ^ p).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    }
    h
}

impl CrossbarBackend {
    /// Compiles and programs every crossbar layer of `model` for `arch`.
    /// `calibration` holds each layer's and group's 8-bit input vectors from the
    /// calibration images ([`QuantModel::capture_inputs`]); `seed` drives device
    /// programming noise and read noise.
    ///
    /// # Errors
    /// An invalid configuration for some layer.
    pub fn build(
        model: &QuantModel,
        arch: &ArchConfig,
        calibration: &[Vec<QInput>],
        seed: u64,
    ) -> Result<Self, NetworkError> {
        let layers: Vec<(&str, &[QuantizedMatrix])> = model
            .layers
            .iter()
            .map(|l| (l.name.as_str(), l.groups.as_slice()))
            .collect();
        Self::build_layers(&layers, arch, calibration, seed)
    }

    /// As [`build`](Self::build), for any list of crossbar layers: each a name
    /// and its int8 weights per group, in execution order (the last one gets
    /// [`ArchConfig::force_last`]). `calibration[l][g]` holds layer `l`, group
    /// `g`'s 8-bit input vectors. Layers are compiled in parallel; the result
    /// does not depend on the thread count.
    ///
    /// # Errors
    /// An invalid configuration for some layer, or calibration data that do not
    /// match the layers.
    pub fn build_layers(
        layers: &[(&str, &[QuantizedMatrix])],
        arch: &ArchConfig,
        calibration: &[Vec<QInput>],
        seed: u64,
    ) -> Result<Self, NetworkError> {
        let nl = layers.len();
        if calibration.len() != nl
            || calibration
                .iter()
                .zip(layers)
                .any(|(c, l)| c.len() != l.1.len())
        {
            return Err(NetworkError::BadInput(format!(
                "calibration data for {} layers do not match the {nl} crossbar layers",
                calibration.len()
            )));
        }
        // Per layer: its groups' programmed layers, their weights packed for
        // the sampled check (and adaptive slicing's exact reference), and the
        // chosen slicings.
        type Built = (Vec<ProgrammedLayer>, Vec<ExactMatrix>, String);
        let built: Vec<Built> = layers
            .par_iter()
            .enumerate()
            .map(|(l, &(name, groups))| {
                let mut per_group = Vec::with_capacity(groups.len());
                let mut checks = Vec::with_capacity(groups.len());
                let mut chosen = Vec::new();
                for (g, qm) in groups.iter().enumerate() {
                    let cal = calibration[l][g]
                        .sampled_crossbar_vectors(arch.signed_offset, CALIBRATION_VECTORS);
                    let mut cfg = arch.compile.clone();
                    let err = |e| NetworkError::Runtime {
                        layer: name.to_string(),
                        source: e,
                    };
                    // The chosen candidate's layer as adaptive slicing built it:
                    // the same levels as compiling again when the center rule
                    // needs no calibration (kept when programming is ideal,
                    // its mapping programmed on the design's devices otherwise).
                    let mut candidate = None;
                    let check = check_weights(&qm.weights);
                    if let Some((policy, cal_run)) = &arch.adaptive {
                        let force = if l + 1 == nl {
                            arch.force_last.as_ref()
                        } else {
                            None
                        };
                        let (choice, layer) = choose_weight_slicing_layer_packed(
                            qm.weights.view(),
                            &check,
                            &cfg,
                            policy,
                            force,
                            cal.view(),
                            cal_run,
                        )
                        .map_err(err)?;
                        cfg.weight_slicing = choice.chosen;
                        candidate = layer;
                    }
                    let s = cfg.weight_slicing.to_string();
                    if !chosen.contains(&s) {
                        chosen.push(s);
                    }
                    let noise = arch.device_noise.as_ref().filter(|n| !n.is_ideal());
                    let reusable = !cfg.encoding.reads_calibration();
                    let layer = match candidate.filter(|_| reusable) {
                        Some(layer) if noise.is_none() => layer,
                        candidate => {
                            let mapped = match candidate {
                                Some(layer) => layer.into_mapped(),
                                None => {
                                    let c = Calibration {
                                        inputs: cal.view(),
                                        input_slicing: arch.run.input.slicing(),
                                    };
                                    compile(qm.weights.view(), &cfg, Some(c)).map_err(|e| {
                                        NetworkError::Compile {
                                            layer: name.to_string(),
                                            source: e,
                                        }
                                    })?
                                }
                            };
                            match noise {
                                Some(n) => ProgrammedLayer::program(
                                    mapped,
                                    n,
                                    mix(seed, &[1, l as u64, g as u64]),
                                ),
                                None => ProgrammedLayer::ideal(mapped),
                            }
                        }
                    };
                    layer.prepare_reads(&arch.run);
                    per_group.push(layer);
                    checks.push(check);
                }
                Ok((per_group, checks, chosen.join("/")))
            })
            .collect::<Result<_, NetworkError>>()?;
        let (mut programmed, mut weights, mut slicings) = (
            Vec::with_capacity(nl),
            Vec::with_capacity(nl),
            Vec::with_capacity(nl),
        );
        for (p, w, s) in built {
            programmed.push(p);
            weights.push(w);
            slicings.push(s);
        }
        // `128 sum_c w[o][c]` per output (the packed weights' row sums).
        let offset_terms = weights
            .iter()
            .map(|g: &Vec<ExactMatrix>| {
                g.iter()
                    .map(|m| m.sums().iter().map(|&s| 128 * s).collect())
                    .collect()
            })
            .collect();
        Ok(Self {
            layers: programmed,
            weights,
            slicings,
            run: arch.run.clone(),
            seed,
            signed_offset: arch.signed_offset,
            offset_terms,
        })
    }

    /// The weight slicing of each crossbar layer (`a/b` when groups differ).
    #[must_use]
    pub fn slicings(&self) -> &[String] {
        &self.slicings
    }

    /// The programmed layers (per crossbar layer, per group).
    #[must_use]
    pub fn layers(&self) -> &[Vec<ProgrammedLayer>] {
        &self.layers
    }
}

impl MacBackend for CrossbarBackend {
    fn mac(
        &self,
        layer: usize,
        group: usize,
        x: &QInput,
        batch_index: u64,
    ) -> Result<(Array2<i64>, Option<LayerStats>), NetworkError> {
        let pl = &self.layers[layer][group];
        let cfg = RunConfig {
            seed: mix(self.seed, &[2, layer as u64, group as u64, batch_index]),
            ..self.run.clone()
        };
        let err = |e| NetworkError::Runtime {
            layer: format!("#{layer}"),
            source: e,
        };
        let (outputs, mut stats) = match x {
            QInput::Unsigned(v) => pl.run_wide(v.view(), &cfg).map_err(err)?,
            QInput::Signed(v) if self.signed_offset => {
                let (mut y, stats) = pl.run_wide(v.mapv(offset_code).view(), &cfg).map_err(err)?;
                let terms = &self.offset_terms[layer][group];
                for mut row in y.rows_mut() {
                    row.iter_mut().zip(terms).for_each(|(v, t)| *v -= t);
                }
                (y, stats)
            }
            QInput::Signed(v) => pl.run_signed_wide(v.view(), &cfg).map_err(err)?,
        };
        let (e, r) = check_sample(&self.weights[layer][group], x, &outputs);
        stats.check_err_sq += e;
        stats.check_ref_sq += r;
        Ok((outputs, Some(stats)))
    }
}

/// Vectors per parallel item of the check (the AMX kernel's block).
const CHECK_VECTORS_PER_ITEM: usize = 32;

/// A group's int8 weights packed for the sampled check.
fn check_weights(w: &Array2<i8>) -> ExactMatrix {
    let w = w.as_standard_layout();
    let ws = w.as_slice().expect("standard layout");
    ExactMatrix::new(ws, w.nrows(), w.ncols())
}

/// Squared error and squared reference of up to [`CHECKED_VECTORS`] evenly
/// spaced vectors' outputs against exact integer MACs, made by the integer
/// kernel on weights packed at build ([`ExactMatrix`]: integer sums, so the
/// same values on every instruction set), blocks of vectors on all threads
/// (merged into one item when small: a depthwise group's few weights). The
/// squares are added in one fixed order.
fn check_sample(m: &ExactMatrix, x: &QInput, y: &Array2<i64>) -> (f64, f64) {
    let n = x.nrows();
    let k = n.min(CHECKED_VECTORS);
    let (outputs, cols) = (m.outputs().max(1), m.cols().max(1));
    let mut exact = vec![0i64; k * m.outputs()];
    let min_len = PARALLEL_VALUES / (CHECK_VECTORS_PER_ITEM * outputs * cols);
    let items = exact
        .par_chunks_mut(CHECK_VECTORS_PER_ITEM * outputs)
        .with_min_len(min_len.max(1));
    match x {
        QInput::Unsigned(a) => {
            let xs = sampled_rows(a, k);
            items
                .zip(xs.par_chunks(CHECK_VECTORS_PER_ITEM * cols))
                .for_each(|(e, xv)| m.products(xv, e));
        }
        QInput::Signed(a) => {
            let xs = sampled_rows(a, k);
            items
                .zip(xs.par_chunks(CHECK_VECTORS_PER_ITEM * cols))
                .for_each(|(e, xv)| m.products_signed(xv, e));
        }
    }
    let (mut err, mut reference) = (0f64, 0f64);
    for (i, e) in exact.chunks(outputs).enumerate() {
        for (&e, &got) in e.iter().zip(y.row(i * n / k)) {
            // Integer MAC results far below 2^53: exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let (d, r) = ((got - e) as f64, e as f64);
            err += d * d;
            reference += r * r;
        }
    }
    (err, reference)
}

/// Rows `i n / k` of `a` (`n` rows) for `i < k`, one after another.
fn sampled_rows<T: Copy>(a: &Array2<T>, k: usize) -> Vec<T> {
    let n = a.nrows();
    let mut out = Vec::with_capacity(k * a.ncols());
    for i in 0..k {
        let row = a.row(i * n / k);
        match row.as_slice() {
            Some(r) => out.extend_from_slice(r),
            None => out.extend(row.iter().copied()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use raella_compiler::RelativeRms;
    use raella_runtime::calibration_run;

    /// A fixed scramble of `i` (weights, inputs and perturbations for tests).
    fn scramble(i: usize, salt: u64) -> u64 {
        let mut z = (i as u64)
            .wrapping_add(salt)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 29;
        z.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32
    }

    /// A design with programming noise and adaptive slicing builds each layer
    /// as the chosen slicing compiled with the calibration and programmed on
    /// the design's devices with the layer's seed: the same crossbars whether
    /// the build reuses the chosen candidate's mapping (budgets at which it was
    /// the last one run) or compiles it again (a slicing forced on the last
    /// layer: no candidate run).
    #[test]
    fn noisy_builds_program_the_chosen_slicing() {
        let (outputs, cols) = (24, 700);
        #[allow(clippy::cast_possible_truncation)]
        let w = Array2::from_shape_fn((outputs, cols), |(o, c)| {
            ((scramble(o * cols + c, 5) % 255) as i16 - 127) as i8
        });
        let qm = QuantizedMatrix {
            weights: w,
            scales: vec![1.0; outputs],
        };
        #[allow(clippy::cast_possible_truncation)]
        let x = QInput::Unsigned(Array2::from_shape_fn((40, cols), |(v, c)| {
            scramble(v * cols + c, 6) as u8
        }));
        let cands: Vec<Slicing> = ["4-4", "4-2-2", "2x4"]
            .iter()
            .map(|s| Slicing::parse(s).unwrap())
            .collect();
        let noise = DeviceNoise::new(0.02, 0.01, 0.0).unwrap();
        let mut slicings = Vec::new();
        let forced = Slicing::parse("1x8").unwrap();
        let cases = [
            (0.0, None),
            (1e-6, None),
            (0.05, None),
            (10.0, None),
            (0.05, Some(forced)),
        ];
        for (budget, force_last) in cases {
            let policy = AdaptiveSlicing::new(
                cands.clone(),
                raella_compiler::Budget::Fixed(budget),
                Box::new(RelativeRms),
            )
            .unwrap();
            let arch = ArchConfig {
                adaptive: Some((policy, calibration_run(&RunConfig::raella()))),
                device_noise: Some(noise.clone()),
                force_last,
                ..ArchConfig::fixed(CompileConfig::raella(), RunConfig::raella())
            };
            let seed = 9;
            let built = CrossbarBackend::build_layers(
                &[("fc", std::slice::from_ref(&qm))],
                &arch,
                &[vec![x.clone()]],
                seed,
            )
            .unwrap();
            let cfg = CompileConfig {
                weight_slicing: Slicing::parse(&built.slicings()[0]).unwrap(),
                ..CompileConfig::raella()
            };
            let cal = x.sampled_crossbar_vectors(false, CALIBRATION_VECTORS);
            let c = Calibration {
                inputs: cal.view(),
                input_slicing: arch.run.input.slicing(),
            };
            let want = ProgrammedLayer::program(
                compile(qm.weights.view(), &cfg, Some(c)).unwrap(),
                &noise,
                mix(seed, &[1, 0, 0]),
            );
            let got = &built.layers()[0][0];
            assert_eq!(got.mapped(), want.mapped(), "{budget}");
            for (a, b) in got.crossbars().iter().zip(want.crossbars()) {
                assert!(!a.is_integral(), "programming noise");
                for col in 0..a.used_cols() {
                    let bits = |px: &raella_device::ProgrammedCrossbar| {
                        px.diff_column(col)
                            .iter()
                            .map(|g| g.to_bits())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(bits(a), bits(b), "{budget}, column {col}");
                }
                assert_eq!(a.stuck_devices(), b.stuck_devices(), "{budget}");
            }
            slicings.push(built.slicings()[0].clone());
        }
        // Budgets that stop at different candidates, and the forced one.
        slicings.sort();
        slicings.dedup();
        assert!(slicings.len() > 2, "{slicings:?}");
    }

    /// The check's squared error and reference equal those of the plain
    /// `i64` products of the sampled rows (`i n / k`, with more vectors than
    /// are checked and fewer), for unsigned and signed inputs, on a layer of
    /// 70 x 130 weights and a depthwise-sized one of 1 x 9, with outputs
    /// perturbed so the error is not 0.
    #[test]
    fn check_equals_the_plain_products() {
        for (outputs, cols) in [(70, 130), (1, 9)] {
            let w = Array2::from_shape_fn((outputs, cols), |(o, c)| {
                #[allow(clippy::cast_possible_truncation)]
                (scramble(o * cols + c, 1) as u8).cast_signed()
            });
            let m = check_weights(&w);
            for n in [5, 64, 100, 201] {
                #[allow(clippy::cast_possible_truncation)]
                let xu = Array2::from_shape_fn((n, cols), |(v, c)| scramble(v * cols + c, 2) as u8);
                let xs = xu.mapv(u8::cast_signed);
                for x in [QInput::Unsigned(xu.clone()), QInput::Signed(xs)] {
                    let input = |v: usize, c: usize| match &x {
                        QInput::Unsigned(a) => i64::from(a[(v, c)]),
                        QInput::Signed(a) => i64::from(a[(v, c)]),
                    };
                    let exact = Array2::from_shape_fn((n, outputs), |(v, o)| {
                        (0..cols)
                            .map(|c| input(v, c) * i64::from(w[(o, c)]))
                            .sum::<i64>()
                    });
                    #[allow(clippy::cast_possible_wrap)]
                    let y = Array2::from_shape_fn((n, outputs), |(v, o)| {
                        exact[(v, o)] + (scramble(v * outputs + o, 3) % 7) as i64 - 3
                    });
                    let k = n.min(CHECKED_VECTORS);
                    let (mut want_e, mut want_r) = (0f64, 0f64);
                    for i in 0..k {
                        for o in 0..outputs {
                            let (e, got) = (exact[(i * n / k, o)], y[(i * n / k, o)]);
                            #[allow(clippy::cast_precision_loss)]
                            let (d, r) = ((got - e) as f64, e as f64);
                            want_e += d * d;
                            want_r += r * r;
                        }
                    }
                    let (e, r) = check_sample(&m, &x, &y);
                    assert!(want_e > 0.0 && want_r > 0.0, "{outputs}x{cols}, {n}");
                    assert_eq!(
                        (e.to_bits(), r.to_bits()),
                        (want_e.to_bits(), want_r.to_bits()),
                        "{outputs}x{cols}, {n}"
                    );
                }
            }
        }
    }
}
