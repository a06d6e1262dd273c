//! A text-encoder model through the whole sweep: the committed tiny BERT as
//! ONNX (`fixtures/tiny_bert/`, seeded random weights, not a trained model) on five
//! Lee-50-style documents, under noise-free isaac8b (which must equal the
//! 8-bit digital reference exactly) and raella, with the cost model; the
//! result files carry the text metrics and the shape-only cost comparison.

use raella_data::{Lee50, TextEncoder};
use raella_sweep::{Spec, run, write_results};

mod common;
use common::root;

const SPEC: &str = r#"
name = "tiny-text"
archs = ["isaac8b", "raella"]
[cost]
components = "FX/cost/components.toml"
calibration = "FX/cost/calibration.toml"
typical = "FX/cost/typical_stats.toml"
[[model]]
name = "tiny_bert"
onnx = "FX/tiny_bert/model.onnx"
tokenizer = "FX/tiny_bert/model/tokenizer.json"
output = "sentence_embedding"
lee50 = "FX/tiny_bert/lee50"
texts = "FX/tiny_bert/calibration.txt"
calibration = { start = 0, count = 4 }
evaluation = { start = 0, count = 5 }
"#;

#[test]
fn a_text_model_runs_end_to_end_with_its_metrics() {
    let fixtures = root().join("fixtures");
    let out = std::env::temp_dir().join(format!("raella-text-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("spec.toml");
    std::fs::write(&path, SPEC.replace("FX", &fixtures.display().to_string())).unwrap();
    let spec = Spec::load(&path, &fixtures.join("presets.toml")).unwrap();
    let out = out.join("results");
    let res = run(&spec, |_| {}).unwrap();
    assert_eq!(res.rows.len(), 2);
    let summary = &res.models[0];
    let c = summary
        .correlations
        .as_ref()
        .expect("reference correlations");
    // The float32 correlations are the model's on the evaluation documents
    // (here all five), recomputed from a plain float32 run of the ONNX graph.
    let graph = raella_onnx::import_file(&fixtures.join("tiny_bert/model.onnx")).unwrap();
    let enc = TextEncoder::load(&fixtures.join("tiny_bert/model/tokenizer.json"), 256).unwrap();
    let lee = Lee50::load(&fixtures.join("tiny_bert/lee50")).unwrap();
    assert_eq!(lee.documents.len(), 5);
    let emb: Vec<f32> = lee
        .documents
        .iter()
        .flat_map(|d| {
            let e = enc.encode(d).unwrap();
            let t = |v: &Vec<i64>| {
                raella_onnx::Tensor::i64(
                    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, v.len()]), v.clone())
                        .unwrap(),
                )
            };
            let y = raella_onnx::run(
                &graph,
                vec![t(&e.ids), t(&e.mask), t(&e.type_ids)],
                &raella_onnx::FloatRunner,
                0,
            )
            .unwrap();
            y[1].floats().unwrap().iter().copied().collect::<Vec<f32>>()
        })
        .collect();
    let emb = ndarray::Array2::from_shape_vec((5, emb.len() / 5), emb).unwrap();
    let want = lee.correlations(emb.view()).unwrap();
    assert_eq!(
        (c.pearson_fp32, c.spearman_fp32),
        (want.pearson, want.spearman)
    );
    assert!(summary.top1_fp32.is_none() && summary.macs_per_image > 0);
    // Attention's digital products: per layer Q K^T and A V, each
    // S x S x hidden (heads x head width = 16) for a document of S tokens;
    // two layers; the mean over the documents.
    let s2: usize = lee
        .documents
        .iter()
        .map(|d| enc.encode(d).unwrap().ids.len().pow(2))
        .sum();
    assert_eq!(
        summary.digital_macs_per_image,
        (2 * 2 * 16 * s2 / 5) as u64,
        "digital MACs per document"
    );
    assert!(summary.feature_cosine_int8_fp32 > 0.9);
    let isaac = &res.rows[0];
    assert_eq!(isaac.arch, "isaac8b");
    // Noise-free ISAAC is the 8-bit reference, bit for bit.
    assert_eq!(isaac.output_rel_err_int8, 0.0);
    assert_eq!(isaac.feature_cosine_int8, 1.0);
    assert_eq!(isaac.agreement_int8, 1.0);
    assert_eq!(isaac.pearson, Some(c.pearson_int8));
    assert_eq!(isaac.spearman, Some(c.spearman_int8));
    assert_eq!(isaac.layers.len(), 12, "2 encoder layers x 6 linear layers");
    assert!(
        isaac
            .layers
            .iter()
            .all(|l| l.layer_rel_err == 0.0 && l.passes == 2.0)
    );
    let raella = &res.rows[1];
    assert!(raella.top1.is_none() && raella.pearson.is_some());
    assert!(raella.converts_per_mac < isaac.converts_per_mac);
    // The embeddings differ from the 8-bit reference's exactly when some
    // column-slice did not contribute its exact value (the runtime's exactness
    // invariant), and the cosine moves with them.
    assert_eq!(
        raella.output_rel_err_int8 > 0.0,
        raella.exact_fraction < 1.0,
        "{raella:?}"
    );
    assert_eq!(
        raella.feature_cosine_int8 < 1.0,
        raella.output_rel_err_int8 > 0.0,
        "{raella:?}"
    );
    // Costs from the simulated activity and the shape-only estimate of the same network.
    for dnn in ["tiny_bert", "tiny_bert (shape-only)"] {
        assert_eq!(
            res.energy.iter().filter(|e| e.dnn == dnn).count(),
            2,
            "{dnn}: one energy row per design"
        );
    }
    // The digital products are costed apart, the same for every design.
    for e in res.energy.iter().filter(|e| e.dnn == "tiny_bert") {
        assert_eq!(
            e.digital_macs_per_inference,
            summary.digital_macs_per_image as f64
        );
        assert!(e.digital_energy_mj > 0.0 && e.digital_energy_mj < e.energy_mj);
    }
    write_results(&spec, &res, &out).unwrap();
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .contains("feature_cosine_int8,feature_cosine_fp32,pearson,spearman")
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Lee-50 correlation") && report.contains("Text encoder"));
    let stats: Vec<_> = std::fs::read_dir(out.join("stats/tiny_bert/raella"))
        .unwrap()
        .collect();
    assert_eq!(stats.len(), 12, "one statistics file per weight layer");
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}
