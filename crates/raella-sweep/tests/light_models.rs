//! The ONNX reference architectures of onnx's backend test data (`light_*`: AlexNet,
//! DenseNet-121, Inception v1 and v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512)
//! end to end: imported, the float32 forward checked against onnx's stored output,
//! quantised to 8 bits, and run on the simulated RAELLA design (`fixtures/presets.toml`).
//! Their weights are constant patterns, not trained: good for coverage (every layer kind of
//! these families reaches the crossbars), meaningless for fidelity. So the test checks
//! shapes, finiteness and that every crossbar layer ran, and prints the cosine to float32.
//! Skips, saying why, when the data is absent (`bash scripts/fetch/onnx_backend.sh`).

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use prost::Message;
use raella_network::{CrossbarBackend, ExactBackend, QuantModel, mean_row_cosine};
use raella_onnx::{Dim, FloatRunner, Tensor, proto};

mod common;
use common::root;

/// onnx's runner input for a model: each element `i` of `n` holds `i / n`.
fn input(shape: &[usize]) -> Tensor {
    let n = shape.iter().product::<usize>();
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let x: Vec<f32> = (0..n).map(|i| (i as f64 / n as f64) as f32).collect();
    Tensor::f32(ArrayD::from_shape_vec(IxDyn(shape), x).unwrap())
}

fn run_one(path: &Path, arch: &raella_sweep::Arch) -> String {
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let graph = raella_onnx::import_file(path).unwrap_or_else(|e| panic!("{stem}: {e}"));
    assert!(!graph.layers.is_empty(), "{stem}: no crossbar layer");
    let shape: Vec<usize> = graph.values[graph.inputs[0]]
        .shape
        .iter()
        .flatten()
        .map(|d| match d {
            Dim::Fixed(n) if *n > 0 => *n,
            _ => 1,
        })
        .collect();
    let x = input(&shape);
    // Float32 against onnx's stored output.
    let float = raella_onnx::run(&graph, vec![x.clone()], &FloatRunner, 0).unwrap();
    let want_bytes = std::fs::read(path.with_file_name(format!("{stem}_output_0.pb"))).unwrap();
    let want = raella_onnx::tensor_from_proto(&proto::TensorProto::decode(&*want_bytes).unwrap())
        .unwrap()
        .to_f32();
    let got = float[0].to_f32();
    assert_eq!(got.shape(), want.shape(), "{stem}: float output shape");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let err = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    assert!(err <= 1e-4, "{stem}: float32 error {err:e}");
    // 8-bit reference and the simulated design, calibrated on the input itself.
    let layers = graph.layers.len();
    let cal = vec![x.clone()];
    let model = QuantModel::calibrate(graph, std::slice::from_ref(&cal)).unwrap();
    let int8 = model
        .run(cal.clone(), &ExactBackend::new(&model), 0)
        .unwrap();
    let captured = model.capture_inputs(std::slice::from_ref(&cal)).unwrap();
    let backend = CrossbarBackend::build(&model, &arch.config(), &captured, 1)
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
    let sim = model
        .run(cal, &backend, 0)
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
    let (q, s) = (int8.outputs[0].to_f32(), sim.outputs[0].to_f32());
    assert_eq!(s.shape(), want.shape(), "{stem}: simulated output shape");
    assert!(
        s.iter().all(|v| v.is_finite()),
        "{stem}: non-finite simulated output"
    );
    let ran = sim.stats.iter().flatten().filter(|st| st.macs > 0).count();
    assert_eq!(ran, layers, "{stem}: crossbar layers that ran");
    let macs: u64 = sim.stats.iter().flatten().map(|st| st.macs).sum();
    // Cosine of the whole output (one row) to float32.
    let row = |a: &ArrayD<f32>| {
        ndarray::Array2::from_shape_vec((1, a.len()), a.iter().copied().collect()).unwrap()
    };
    let (g, q, s) = (row(&got), row(&q), row(&s));
    format!(
        "{stem}: {layers} crossbar layers, {:.2} G MACs; float32 error {err:.1e}; cosine to float32: int8 {:.4}, raella {:.4}",
        macs as f64 / 1e9,
        mean_row_cosine(q.view(), g.view()),
        mean_row_cosine(s.view(), g.view())
    )
}

#[test]
fn light_reference_architectures_run_end_to_end() {
    let dir = root().join(".cache/onnx-backend/light");
    if !dir.is_dir() {
        eprintln!(
            "skipped: {} is not there (run `bash scripts/fetch/onnx_backend.sh`)",
            dir.display()
        );
        return;
    }
    let arch = raella_sweep::resolve_design(
        &root().join("fixtures/presets.toml"),
        "raella",
        &toml::Table::new(),
        Path::new("light_models.rs"),
    )
    .unwrap();
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    models.sort();
    assert_eq!(models.len(), 9, "onnx 1.23.2 ships nine light_* models");
    for m in &models {
        eprintln!("{}", run_one(m, &arch));
    }
}
