//! The BERT encoder on a tiny random BERT written here (config.json,
//! model.safetensors and a WordPiece tokenizer.json in a temporary folder):
//! loading, shapes, float vs 8-bit reference, noise-free ISAAC = 8-bit
//! reference, rejected files; the Lee-50 loader and statistics on hand-made
//! data; and, only when the cached all-MiniLM-L6-v2 is present, the float path
//! against the independent numpy embeddings in `fixtures/minilm/`.

#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raella_compiler::CompileConfig;
use raella_network::lee50::{average_ranks, pearson, row_cosines, spearman};
use raella_network::{ArchConfig, BertModel, CrossbarBackend, Lee50, NetworkError};
use raella_runtime::RunConfig;
use safetensors::{Dtype, tensor::TensorView};

const HIDDEN: usize = 16;
const HEADS: usize = 2;
const LAYERS: usize = 2;
const FFN: usize = 32;
const MAX_POS: usize = 32;
const WORDS: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "dog", "sat", "ran", "on", "mat", "a",
    "cross", "##bar", "##s", "computes", "product", "in", "one", "step", ".", ",", "-", "matrix",
    "vector", "fire", "burned", "near", "city",
];

const TEXTS: &[&str] = &[
    "The cat sat on the mat.",
    "A dog ran near the city, a fire burned.",
    "Crossbars compute a matrix-vector product in one step.",
    "the dogs sat on one mat",
];

/// SplitMix64: a fixed, portable stream for the random weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.next()).collect()
    }
}

fn tensors(seed: u64) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut r = Rng(seed);
    let mut t = BTreeMap::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32, r: &mut Rng| {
        let n = shape.iter().product();
        t.insert(name, (shape, r.vec(n, scale, offset)));
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        vec![WORDS.len(), HIDDEN],
        1.0,
        0.0,
        &mut r,
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![MAX_POS, HIDDEN],
        0.3,
        0.0,
        &mut r,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
        0.1,
        0.0,
        &mut r,
    );
    put(
        "embeddings.LayerNorm.weight".into(),
        vec![HIDDEN],
        0.2,
        1.0,
        &mut r,
    );
    put(
        "embeddings.LayerNorm.bias".into(),
        vec![HIDDEN],
        0.1,
        0.0,
        &mut r,
    );
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", FFN, HIDDEN),
            ("output.dense", HIDDEN, FFN),
        ] {
            let s = 1.0 / (inp as f32).sqrt();
            put(format!("{p}.{name}.weight"), vec![out, inp], s, 0.0, &mut r);
            put(format!("{p}.{name}.bias"), vec![out], 0.1, 0.0, &mut r);
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            put(format!("{p}.{ln}.weight"), vec![HIDDEN], 0.2, 1.0, &mut r);
            put(format!("{p}.{ln}.bias"), vec![HIDDEN], 0.1, 0.0, &mut r);
        }
    }
    t
}

fn safetensors_bytes(t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(k, (s, v))| {
            (
                k.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"],
        "hidden_act": "gelu",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": MAX_POS,
        "model_type": "bert",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "vocab_size": WORDS.len()
    })
}

fn tokenizer_json() -> serde_json::Value {
    let special = |id: usize| {
        serde_json::json!({"id": id, "content": WORDS[id], "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let vocab: serde_json::Map<String, serde_json::Value> = WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| ((*w).to_string(), serde_json::json!(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": {"max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [special(0), special(1), special(2), special(3)],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// A fresh temporary folder (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "raella-bert-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_model(tag: &str, t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> TempDir {
    let d = TempDir::new(tag);
    std::fs::write(d.0.join("config.json"), config_json().to_string()).unwrap();
    std::fs::write(d.0.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    std::fs::write(d.0.join("model.safetensors"), safetensors_bytes(t)).unwrap();
    d
}

fn tiny(tag: &str) -> (TempDir, BertModel) {
    let d = write_model(tag, &tensors(7));
    let m = BertModel::load(&d.0).unwrap();
    (d, m)
}

#[test]
fn tiny_bert_loads_tokenizes_and_embeds_unit_vectors() {
    let (_d, m) = tiny("load");
    assert_eq!(m.config.hidden_size, HIDDEN);
    assert_eq!(m.config.head_dim(), HIDDEN / HEADS);
    assert_eq!(m.linears.len(), 6 * LAYERS);
    let names: Vec<&str> = m.linears.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        &names[..6],
        [
            "layer0.q",
            "layer0.k",
            "layer0.v",
            "layer0.o",
            "layer0.ffn1",
            "layer0.ffn2"
        ]
    );
    assert_eq!(names[11], "layer1.ffn2");
    // Lowercased, punctuation split, WordPiece continuation, [CLS] ... [SEP], no padding.
    let t = m.tokenize("The crossbars.").unwrap();
    assert_eq!(t.ids, [2, 4, 12, 13, 14, 20, 3]);
    assert_eq!(t.type_ids, [0; 7]);
    assert_eq!(m.tokenize("zebra").unwrap().ids, [2, 1, 3]);
    let e = m.embed_float(TEXTS).unwrap();
    assert_eq!(e.dim(), (TEXTS.len(), HIDDEN));
    for r in e.rows() {
        assert!((r.dot(&r) - 1.0).abs() < 1e-5);
    }
    // Distinct texts, distinct embeddings; the same text, the same one.
    assert!(
        row_cosines(
            e.slice(ndarray::s![0..1, ..]),
            e.slice(ndarray::s![1..2, ..])
        )
        .unwrap()[0]
            < 0.999
    );
    let again = m.embed_float(&[TEXTS[0]]).unwrap();
    assert_eq!(again.row(0), e.row(0));
    assert_eq!(
        m.crossbar_macs_per_token(),
        (LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN)) as u64
    );
    assert_eq!(m.attention_macs(3), (2 * 9 * HIDDEN * LAYERS) as u64);
}

#[test]
fn truncation_keeps_cls_and_sep() {
    let d = write_model("trunc", &tensors(7));
    let m = BertModel::load_with_max_tokens(&d.0, 4).unwrap();
    assert_eq!(
        m.tokenize("the cat sat on the mat").unwrap().ids,
        [2, 4, 5, 3]
    );
    assert!(matches!(
        BertModel::load_with_max_tokens(&d.0, MAX_POS + 1),
        Err(NetworkError::BadInput(_))
    ));
}

#[test]
fn int8_reference_is_close_to_float() {
    let (_d, m) = tiny("int8");
    let q = m.quantize(TEXTS).unwrap();
    assert_eq!(q.layers.len(), 6 * LAYERS);
    // LayerNorm and GELU outputs go negative: every input is signed int8.
    assert!(q.layers.iter().all(|l| l.signed_input));
    let float = m.embed_float(TEXTS).unwrap();
    let int8 = q.embed(&q.exact_backend(), TEXTS).unwrap();
    assert!(int8.layer_stats.iter().all(Option::is_none));
    let tokens: Vec<usize> = TEXTS
        .iter()
        .map(|t| m.tokenize(t).unwrap().ids.len())
        .collect();
    assert_eq!(int8.tokens, tokens);
    let cos = row_cosines(int8.embeddings.view(), float.view()).unwrap();
    assert!(cos.iter().all(|&c| c > 0.99), "{cos:?}");
    assert!(
        int8.embeddings != float,
        "int8 differs from float somewhere"
    );
}

#[test]
fn noise_free_isaac_equals_the_int8_reference_bit_for_bit() {
    let (_d, m) = tiny("isaac");
    let q = m.quantize(&TEXTS[..2]).unwrap();
    let cal = q.capture_inputs(&TEXTS[..2]).unwrap();
    assert_eq!(cal.len(), q.layers.len());
    let n0 = m.tokenize(TEXTS[0]).unwrap().ids.len() + m.tokenize(TEXTS[1]).unwrap().ids.len();
    assert!(cal.iter().all(|l| l.len() == 1 && l[0].nrows() == n0));
    let arch = ArchConfig::fixed(CompileConfig::isaac(), RunConfig::isaac());
    let xb = CrossbarBackend::build_layers(&q.crossbar_layers(), &arch, &cal, 3).unwrap();
    let sim = q.embed(&xb, TEXTS).unwrap();
    let int8 = q.embed(&q.exact_backend(), TEXTS).unwrap();
    assert_eq!(sim.embeddings, int8.embeddings);
    let st: Vec<_> = sim.layer_stats.iter().flatten().collect();
    assert_eq!(st.len(), q.layers.len());
    assert!(st.iter().all(|s| s.in_range_fraction() == 1.0));
    // Calibration data that do not match the layers are rejected.
    assert!(matches!(
        CrossbarBackend::build_layers(&q.crossbar_layers(), &arch, &cal[1..], 3),
        Err(NetworkError::BadInput(_))
    ));
}

#[test]
fn statistics_match_hand_computed_values() {
    assert!((pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 6.0, 8.0]).unwrap() - 1.0).abs() < 1e-12);
    let (x, y) = ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]);
    assert!((pearson(&x, &y).unwrap() - 0.8).abs() < 1e-12);
    assert!((spearman(&x, &y).unwrap() - 0.8).abs() < 1e-12);
    assert_eq!(
        average_ranks(&[10.0, 20.0, 20.0, 30.0]),
        [1.0, 2.5, 2.5, 4.0]
    );
    // Ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5).
    let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert!((r - 4.5 / 22.5_f64.sqrt()).abs() < 1e-12, "{r}");
    assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).is_none());
    assert!(pearson(&[1.0], &[1.0]).is_none());
    assert!(spearman(&[1.0, 2.0], &[1.0]).is_none());
}

#[test]
fn lee50_parses_and_scores_hand_made_data() {
    let (cor, sims) = (Path::new("lee.cor"), Path::new("sims.txt"));
    // A Latin-1 pound sign (not UTF-8), CRLF line ends, no final newline.
    let docs = b"first doc\r\nsecond \xa33,000\r\nthird";
    let matrix = b"1\t0.9\t0.5\n0\t1\t0.4\n0\t0\t1\n";
    let lee = Lee50::parse(docs, matrix, cor, sims).unwrap();
    assert_eq!(lee.documents, ["first doc", "second \u{a3}3,000", "third"]);
    assert_eq!(lee.pairs, [(0, 1, 0.9), (0, 2, 0.5), (1, 2, 0.4)]);
    // Cosines (1, 0.6, 0.6) against (0.9, 0.5, 0.4).
    let e = ndarray::arr2(&[[1.0_f32, 0.0], [2.0, 0.0], [0.6, 0.8]]);
    let c = lee.correlations(e.view()).unwrap();
    assert!(
        (c.pearson - 0.12 / (0.32_f64 / 3.0 * 0.14).sqrt()).abs() < 1e-6,
        "{c:?}"
    );
    assert!((c.spearman - 1.5 / 3.0_f64.sqrt()).abs() < 1e-6, "{c:?}");
    assert!(lee.correlations(e.slice(ndarray::s![..2, ..])).is_err());
    let err = |docs: &[u8], m: &[u8]| Lee50::parse(docs, m, cor, sims).unwrap_err().to_string();
    assert_eq!(err(b"a\n\nb\nc", matrix), "lee.cor:2: empty document");
    assert_eq!(
        err(docs, b"1\t0.9\t0.5\n0\t1\n0\t0\t1\n"),
        "sims.txt:2: 2 values, expected 3"
    );
    assert_eq!(
        err(docs, b"1\tx\t0.5\n0\t1\t0.4\n0\t0\t1\n"),
        "sims.txt:1: column 2: `x` is not a number"
    );
    assert_eq!(
        err(docs, b"1\t1.5\t0.5\n0\t1\t0.4\n0\t0\t1\n"),
        "sims.txt:1: column 2: 1.5 is outside [0, 1]"
    );
    assert_eq!(
        err(docs, b"1\t0.9\t0.5\n"),
        "sims.txt:2: 1 matrix rows for 3 documents"
    );
    // A million one-letter documents and as many one-value rows (4 MB): an
    // error on the first row, not a request for 5 x 10^11 pairs.
    let many = b"a\n".repeat(1_000_000);
    let rows = b"0\n".repeat(1_000_000);
    assert_eq!(err(&many, &rows), "sims.txt:1: 1 values, expected 1000000");
    let missing = Lee50::load(Path::new("/nonexistent/lee50"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("/nonexistent/lee50/lee.cor")
            && missing.contains("cargo xtask fetch-models"),
        "{missing}"
    );
}

#[test]
fn bad_model_folders_are_rejected_with_the_file_and_tensor_named() {
    let e = BertModel::load(Path::new("/nonexistent/minilm"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/minilm") && e.contains("cargo xtask fetch-models"),
        "{e}"
    );

    let d = write_model("nofile", &tensors(7));
    std::fs::remove_file(d.0.join("tokenizer.json")).unwrap();
    let e = BertModel::load(&d.0).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not found"),
        "{e}"
    );

    let mut t = tensors(7);
    t.get_mut("encoder.layer.1.intermediate.dense.weight")
        .unwrap()
        .1[5] = f32::NAN;
    let d = write_model("nan", &t);
    let e = BertModel::load(&d.0).unwrap_err();
    assert!(
        matches!(&e, NetworkError::Tensor { tensor, .. } if tensor == "encoder.layer.1.intermediate.dense.weight"),
        "{e}"
    );
    assert!(
        e.to_string().contains("element 5 is not finite (NaN)"),
        "{e}"
    );

    let mut t = tensors(7);
    t.insert(
        "encoder.layer.0.attention.self.key.weight".into(),
        (vec![HIDDEN, HIDDEN + 1], vec![0.0; HIDDEN * (HIDDEN + 1)]),
    );
    let d = write_model("shape", &t);
    let e = BertModel::load(&d.0).unwrap_err().to_string();
    assert!(e.contains("model.safetensors: tensor `encoder.layer.0.attention.self.key.weight`: shape [16, 17], expected [16, 16]"), "{e}");

    let mut t = tensors(7);
    t.remove("encoder.layer.1.output.LayerNorm.bias");
    let d = write_model("missing", &t);
    let e = BertModel::load(&d.0).unwrap_err().to_string();
    assert!(
        e.ends_with("tensor `encoder.layer.1.output.LayerNorm.bias`: missing"),
        "{e}"
    );

    let d = write_model("trunc", &tensors(7));
    let p = d.0.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = BertModel::load(&d.0).unwrap_err();
    assert!(
        matches!(&e, NetworkError::ModelFile { path, .. } if path == &p),
        "{e}"
    );
    assert!(
        e.to_string().contains("not a valid safetensors file"),
        "{e}"
    );

    let d = write_model("cfg", &tensors(7));
    let mut c = config_json();
    c["num_attention_heads"] = serde_json::json!(3);
    std::fs::write(d.0.join("config.json"), c.to_string()).unwrap();
    let e = BertModel::load(&d.0).unwrap_err().to_string();
    assert!(
        e.contains("config.json")
            && e.contains("`hidden_size` 16 is not a multiple of `num_attention_heads` 3"),
        "{e}"
    );
    c["num_attention_heads"] = serde_json::json!(HEADS);
    c["hidden_act"] = serde_json::json!("relu");
    std::fs::write(d.0.join("config.json"), c.to_string()).unwrap();
    let e = BertModel::load(&d.0).unwrap_err().to_string();
    assert!(e.contains("`hidden_act` `relu` is not supported"), "{e}");
    // Hostile sizes are refused before anything is sized by them (a layer
    // count of 2^62 used to overflow a capacity and abort).
    c["hidden_act"] = serde_json::json!("gelu");
    for (field, v) in [
        ("num_hidden_layers", serde_json::json!(1u64 << 62)),
        ("vocab_size", serde_json::json!(u64::MAX)),
        ("hidden_size", serde_json::json!(0)),
    ] {
        let mut h = c.clone();
        h[field] = v.clone();
        std::fs::write(d.0.join("config.json"), h.to_string()).unwrap();
        let e = BertModel::load(&d.0).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains(field) && e.contains(&v.to_string()),
            "{e}"
        );
    }
}

/// Error budget of the comparison with the independent numpy implementation:
/// 1e-5 per component. Observed: 1.7e-7 over the 50 Lee documents (both f32,
/// different summation orders); a real bug (e.g. tanh GELU, a missing
/// LayerNorm, pad tokens) moves components by 1e-3 or more.
const NUMPY_TOLERANCE: f32 = 1e-5;

#[test]
fn real_minilm_matches_the_independent_numpy_embeddings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let models =
        std::env::var_os("RAELLA_MODELS").map_or_else(|| root.join(".cache/models"), PathBuf::from);
    let dir = models.join("minilm");
    if !dir.join("model.safetensors").exists() {
        println!(
            "skipped: no cached all-MiniLM-L6-v2 at {} (cargo xtask fetch-models)",
            dir.display()
        );
        return;
    }
    let m = BertModel::load(&dir).unwrap();
    let fixture =
        std::fs::read_to_string(root.join("fixtures/minilm/reference_embeddings.tsv")).unwrap();
    let (texts, reference): (Vec<&str>, Vec<Vec<f32>>) = fixture
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            let text = f.next().unwrap();
            (text, f.map(|v| v.parse().unwrap()).collect())
        })
        .unzip();
    let e = m.embed_float(&texts).unwrap();
    for (row, r) in e.rows().into_iter().zip(&reference) {
        assert_eq!(row.len(), r.len());
        let d = row
            .iter()
            .zip(r)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0_f32, f32::max);
        assert!(d < NUMPY_TOLERANCE, "max abs difference {d}");
    }
}

/// `fixtures/tiny_bert/`: the tiny model above (seed 7) with five Lee-50-style
/// documents and ratings, committed for the sweep's end-to-end test of text
/// models. This test checks that the committed files are exactly what the
/// generator here writes; `RAELLA_BLESS=1` rewrites them.
#[test]
fn committed_tiny_fixture_is_the_generated_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny_bert");
    let docs = [
        "The cat sat on the mat.",
        "A dog ran near the city.",
        "A fire burned near the city, the dog ran.",
        "Crossbars compute a matrix-vector product in one step.",
        "One crossbar computes the product of a matrix and a vector.",
    ];
    // Mean "human" ratings: the pairs about the same topic rate high.
    let sims = [
        [1.0, 0.4, 0.2, 0.0, 0.1],
        [0.4, 1.0, 0.7, 0.0, 0.0],
        [0.2, 0.7, 1.0, 0.1, 0.0],
        [0.0, 0.0, 0.1, 1.0, 0.9],
        [0.1, 0.0, 0.0, 0.9, 1.0],
    ];
    let matrix: String = sims
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| format!("{v}"))
                .collect::<Vec<_>>()
                .join("\t")
                + "\n"
        })
        .collect();
    let files: Vec<(PathBuf, Vec<u8>)> = vec![
        (
            root.join("model/config.json"),
            config_json().to_string().into_bytes(),
        ),
        (
            root.join("model/tokenizer.json"),
            tokenizer_json().to_string().into_bytes(),
        ),
        (
            root.join("model/model.safetensors"),
            safetensors_bytes(&tensors(7)),
        ),
        (
            root.join("lee50/lee.cor"),
            (docs.join("\n") + "\n").into_bytes(),
        ),
        (root.join("lee50/similarities0-1.txt"), matrix.into_bytes()),
        (
            root.join("calibration.txt"),
            (TEXTS.join("\n") + "\n").into_bytes(),
        ),
    ];
    let bless = std::env::var("RAELLA_BLESS").is_ok_and(|v| v == "1");
    for (path, bytes) in &files {
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            &got == bytes,
            "{} differs from the generator (re-bless with RAELLA_BLESS=1)",
            path.display()
        );
    }
    // And it loads and scores.
    let m = BertModel::load(&root.join("model")).unwrap();
    let lee = Lee50::load(&root.join("lee50")).unwrap();
    assert_eq!(lee.pairs.len(), 10);
    let e = m.embed_float(&lee.documents).unwrap();
    assert!(lee.correlations(e.view()).is_ok());
}
