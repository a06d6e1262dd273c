//! The real all-MiniLM-L6-v2 ONNX export (from `cargo xtask fetch-models`)
//! against `fixtures/minilm/reference_embeddings.tsv`, embeddings computed by
//! an independent numpy implementation (`scripts/bert_reference.py`), and the
//! 8-bit reference against float32. Skips, saying why, when the model cache is
//! absent (CI without the fetch step).

use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use raella_data::TextEncoder;
use raella_network::{ExactBackend, QuantModel, eval_float, eval_quant};
use raella_onnx::Tensor;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cache() -> PathBuf {
    std::env::var_os("RAELLA_MODELS").map_or_else(|| root().join(".cache/models"), PathBuf::from)
}

fn inputs(enc: &TextEncoder, text: &str) -> Vec<Tensor> {
    let e = enc.encode(text).unwrap();
    let t = |v: Vec<i64>| Tensor::i64(ArrayD::from_shape_vec(IxDyn(&[1, v.len()]), v).unwrap());
    vec![t(e.ids), t(e.mask), t(e.type_ids)]
}

#[test]
fn real_minilm_export_matches_the_numpy_reference() {
    let (model, tok) = (
        cache().join("onnx/minilm.onnx"),
        cache().join("minilm/tokenizer.json"),
    );
    if !model.is_file() || !tok.is_file() {
        eprintln!(
            "skipped: {} or {} is not there (run `cargo xtask fetch-models`)",
            model.display(),
            tok.display()
        );
        return;
    }
    let graph = raella_onnx::import_file(&model).unwrap();
    let names: Vec<&str> = graph.inputs.iter().map(|&i| graph.name(i)).collect();
    assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
    let out = graph
        .outputs
        .iter()
        .position(|&o| graph.name(o) == "sentence_embedding")
        .unwrap();
    let enc = TextEncoder::load(&tok, 256).unwrap();
    let tsv =
        std::fs::read_to_string(root().join("fixtures/minilm/reference_embeddings.tsv")).unwrap();
    let rows: Vec<(String, Vec<f32>)> = tsv
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            let s = f.next().unwrap().to_string();
            (s, f.map(|v| v.parse().unwrap()).collect())
        })
        .collect();
    assert_eq!(rows.len(), 3);
    let batches: Vec<Vec<Tensor>> = rows.iter().map(|(s, _)| inputs(&enc, s)).collect();
    let float = eval_float(&graph, &batches).unwrap();
    let got = float.output_rows(out).unwrap();
    let mut worst = 0f32;
    for (i, (_, want)) in rows.iter().enumerate() {
        assert_eq!(want.len(), 384);
        for (a, b) in got.row(i).iter().zip(want) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("float32 vs numpy reference: max abs difference {worst:.2e}");
    assert!(worst < 1e-5, "max abs difference {worst}");

    let cal: Vec<Vec<Tensor>> =
        std::fs::read_to_string(root().join("fixtures/minilm/calibration.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| inputs(&enc, l))
            .collect();
    let q = QuantModel::calibrate(graph, &cal).unwrap();
    assert_eq!(q.layers.len(), 36, "6 layers x (Q, K, V, O, FFN1, FFN2)");
    let int8 = eval_quant(&q, &ExactBackend::new(&q), &batches).unwrap();
    let cos = raella_network::mean_row_cosine(got.view(), int8.output_rows(out).unwrap().view());
    eprintln!("int8 vs float32 embedding cosine: mean {cos:.4}");
    assert!(cos > 0.97, "mean cosine {cos}");
}
