//! Quantisation and execution of an imported model: the 8-bit reference tracks
//! float32, noise-free ISAAC and a wide-ADC RAELLA equal the 8-bit reference
//! bit for bit, a starved ADC does not (and the per-layer check sees it), and
//! the penultimate features are the last weight layer's input.

#![allow(clippy::cast_precision_loss)]

use ndarray::{ArrayD, IxDyn};
use raella_compiler::{CompileConfig, Slicing};
use raella_device::Adc;
use raella_network::{
    ArchConfig, CrossbarBackend, ExactBackend, QuantModel, eval_float, eval_quant, mean_row_cosine,
};
use raella_onnx::build::{int, ints, model, node, t32, t64};
use raella_onnx::{Tensor, import_bytes};
use raella_runtime::{InputMode, RunConfig};

fn seq(n: usize, k: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * k) % 17) as f32 - 8.0) * scale)
        .collect()
}

/// Conv (2 groups, stride 2) + Relu, depthwise Conv + Relu, pooling, Gemm,
/// a MatMul with a bias, Softmax: weight layers of every kind but the transposed.
fn cnn() -> Vec<u8> {
    let nodes = vec![
        node(
            "Conv",
            "conv1",
            &["x", "w1", "b1"],
            "c1",
            vec![
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                int("group", 2),
            ],
        ),
        node("Relu", "relu1", &["c1"], "r1", vec![]),
        node(
            "Conv",
            "dw",
            &["r1", "w2"],
            "c2",
            vec![ints("pads", &[1, 1, 1, 1]), int("group", 4)],
        ),
        node("Relu", "relu2", &["c2"], "r2", vec![]),
        node("GlobalAveragePool", "gap", &["r2"], "gp", vec![]),
        node("Flatten", "flat", &["gp"], "f", vec![]),
        node(
            "Gemm",
            "fc1",
            &["f", "w3", "b3"],
            "h",
            vec![int("transB", 1)],
        ),
        node("MatMul", "fc2", &["h", "w4"], "m", vec![]),
        node("Add", "bias2", &["m", "b4"], "z", vec![]),
        node("Reshape", "rs", &["z", "shape"], "zz", vec![]),
        node("Softmax", "sm", &["zz"], "y", vec![int("axis", -1)]),
    ];
    let inits = vec![
        t32("w1", &[4, 1, 3, 3], &seq(36, 5, 0.1)),
        t32("b1", &[4], &[0.1, -0.2, 0.05, 0.0]),
        t32("w2", &[4, 1, 3, 3], &seq(36, 7, 0.08)),
        t32("w3", &[6, 4], &seq(24, 3, 0.05)),
        t32("b3", &[6], &[0.1; 6]),
        t32("w4", &[6, 5], &seq(30, 11, 0.07)),
        t32("b4", &[5], &[0.0, 0.1, 0.2, 0.3, 0.4]),
        t64("shape", &[0, -1]),
    ];
    model(&[2, 8, 8], nodes, inits, "y")
}

fn batch(n: usize, offset: usize) -> Vec<Tensor> {
    vec![Tensor::f32(ArrayD::from_shape_fn(
        IxDyn(&[n, 2, 8, 8]),
        |p| {
            let (i, j) = (p[0] + offset, p[1] * 64 + p[2] * 8 + p[3]);
            (((i * 31 + j * 7) % 23) as f32 - 9.0) / 7.0
        },
    ))]
}

fn quant() -> (QuantModel, Vec<Vec<Tensor>>) {
    let g = import_bytes(&cnn(), "cnn.onnx").unwrap();
    let cal = vec![batch(16, 100)];
    (
        QuantModel::calibrate(g, &cal).unwrap(),
        vec![batch(24, 0), batch(16, 24)],
    )
}

#[test]
fn int8_reference_tracks_float() {
    let (q, x) = quant();
    // The first layer sees a signed image; the others post-ReLU tensors.
    assert!(q.layers[0].signed_input);
    assert!(!q.layers[1].signed_input);
    assert_eq!(q.layers[1].info.kind, "Conv");
    assert_eq!(q.layers[3].info.kind, "Linear");
    // Per image: 16 output positions of conv1 (8x8 at stride 2) and of the
    // depthwise conv on its 4x4 output; one vector per image for the linears.
    assert_eq!(q.layers[0].info.vectors_per_item, 16.0);
    assert_eq!(q.layers[1].info.vectors_per_item, 16.0);
    assert_eq!(q.layers[2].info.vectors_per_item, 1.0);
    assert_eq!(q.layers[0].info.in_elems, 128.0);
    assert_eq!(q.layers[0].info.out_elems, 64.0);
    let f = eval_float(&q.graph, &x).unwrap().output_rows(0).unwrap();
    let i = eval_quant(&q, &ExactBackend::new(&q), &x).unwrap();
    assert!(i.layer_stats.iter().all(Option::is_none));
    let i = i.output_rows(0).unwrap();
    assert_eq!(f.dim(), (40, 5));
    let num: f32 = (&f - &i).mapv(|v| v * v).sum();
    let den: f32 = f.mapv(|v| v * v).sum();
    assert!(
        (num / den).sqrt() < 0.05,
        "relative error {}",
        (num / den).sqrt()
    );
    assert!(num > 0.0, "8-bit rounding changes something");
}

#[test]
fn isaac_and_wide_adc_raella_equal_the_int8_reference_bit_for_bit() {
    let (q, x) = quant();
    let cal = q.capture_inputs(&[batch(8, 100)]).unwrap();
    let int8 = eval_quant(&q, &ExactBackend::new(&q), &x).unwrap();
    let build = |compile: CompileConfig, run: RunConfig| {
        CrossbarBackend::build(&q, &ArchConfig::fixed(compile, run), &cal, 1).unwrap()
    };
    let isaac = eval_quant(&q, &build(CompileConfig::isaac(), RunConfig::isaac()), &x).unwrap();
    assert_eq!(isaac.outputs, int8.outputs);
    let st: Vec<_> = isaac.layer_stats.iter().flatten().collect();
    assert_eq!(st.len(), q.layers.len());
    assert!(st.iter().all(|s| s.in_range_fraction() == 1.0));
    assert!(
        st.iter()
            .all(|s| s.check_ref_sq > 0.0 && s.checked_rel_err() == 0.0)
    );
    // Signed inputs cast to unsigned (x + 128) in one pass, the offset's product
    // subtracted digitally: still the int8 reference bit for bit, with one pass and
    // half the conversions on the signed first layer, and denser input pulses.
    let offset = eval_quant(
        &q,
        &CrossbarBackend::build(
            &q,
            &ArchConfig {
                signed_offset: true,
                ..ArchConfig::fixed(CompileConfig::isaac(), RunConfig::isaac())
            },
            &cal,
            1,
        )
        .unwrap(),
        &x,
    )
    .unwrap();
    assert_eq!(offset.outputs, int8.outputs);
    let (two, one) = (
        isaac.layer_stats[0].as_ref().unwrap(),
        offset.layer_stats[0].as_ref().unwrap(),
    );
    assert_eq!((two.passes, one.passes), (2, 1));
    assert_eq!(2 * one.column_sums, two.column_sums);
    assert!(one.checked_rel_err() == 0.0 && one.check_ref_sq > 0.0);
    for (l, (a, b)) in offset
        .layer_stats
        .iter()
        .zip(&isaac.layer_stats)
        .enumerate()
    {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        let want = if q.layers[l].signed_input {
            b.column_sums / 2
        } else {
            b.column_sums
        };
        assert_eq!(a.column_sums, want, "layer {l}");
    }
    let mut run = RunConfig::raella();
    run.adc = Adc::new(20, true).unwrap();
    let wide = eval_quant(&q, &build(CompileConfig::raella(), run), &x).unwrap();
    assert_eq!(wide.outputs, int8.outputs);
    // A 2-bit ADC without recovery loses information, and the per-layer check sees it.
    let mut run = RunConfig::raella();
    run.adc = Adc::new(2, true).unwrap();
    run.input = InputMode::Fixed(Slicing::parse("4-2-2").unwrap());
    let lossy = eval_quant(&q, &build(CompileConfig::raella(), run), &x).unwrap();
    assert_ne!(lossy.outputs, int8.outputs);
    let errs: Vec<f64> = lossy
        .layer_stats
        .iter()
        .flatten()
        .map(raella_runtime::LayerStats::checked_rel_err)
        .collect();
    assert!(errs.iter().any(|&e| e > 1e-3), "{errs:?}");
    // The penultimate features: the last weight layer's input, one row per image.
    let (fi, fy) = (int8.feature_rows().unwrap(), isaac.feature_rows().unwrap());
    assert_eq!(fi.dim(), (40, 6));
    assert_eq!(fi, fy);
    assert_eq!(mean_row_cosine(fy.view(), fi.view()), 1.0);
    let fl = lossy.feature_rows().unwrap();
    let c = mean_row_cosine(fl.view(), fi.view());
    assert!(c < 1.0, "{c}");
}

/// A grouped layer's groups run concurrently; the result must not depend on
/// it: on one thread (groups in order) and on four, read noise on, the
/// outputs and every statistic (float sums included) are bit-identical.
#[test]
fn concurrent_groups_give_the_serial_result() {
    let (q, x) = quant();
    let cal = q.capture_inputs(&[batch(8, 100)]).unwrap();
    let mut run = RunConfig::raella();
    run.column_noise = raella_device::ColumnNoise::new(0.08).unwrap();
    let backend = CrossbarBackend::build(
        &q,
        &ArchConfig::fixed(CompileConfig::raella(), run),
        &cal,
        7,
    )
    .unwrap();
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| eval_quant(&q, &backend, &x).unwrap())
    };
    let (serial, parallel) = (on(1), on(4));
    assert_eq!(serial.outputs, parallel.outputs);
    assert_eq!(serial.layer_stats, parallel.layer_stats);
    // The grouped layers' statistics sum both groups (and count vectors once).
    let st = serial.layer_stats[1].as_ref().unwrap();
    assert_eq!(st.vectors, 40 * 16);
    assert!(st.check_ref_sq > 0.0);
}

/// The calibration sample converts only the rows it keeps: the same rows as
/// subsampling every converted vector (signed inputs split in two passes,
/// or offset), whether or not there are more than `max`.
#[test]
fn sampled_crossbar_vectors_equal_subsampled_conversions() {
    use ndarray::Array2;
    use raella_network::QInput;
    let codes = |n: usize| {
        Array2::from_shape_fn((n, 5), |(i, j)| {
            u8::try_from((i * 37 + j * 11) % 256).unwrap()
        })
    };
    for n in [1, 7, 100, 301] {
        let unsigned = QInput::Unsigned(codes(n));
        let signed = QInput::Signed(codes(n).mapv(u8::cast_signed));
        for x in [&unsigned, &signed] {
            for offset in [false, true] {
                let all = x.crossbar_vectors_as(offset);
                for max in [1, 3, 64, 256, 1000] {
                    let k = all.nrows();
                    let want = if k <= max {
                        all.clone()
                    } else {
                        let idx: Vec<usize> = (0..max).map(|i| i * k / max).collect();
                        all.select(ndarray::Axis(0), &idx)
                    };
                    assert_eq!(
                        x.sampled_crossbar_vectors(offset, max),
                        want,
                        "{n} rows, offset {offset}, max {max}"
                    );
                }
            }
        }
    }
}
