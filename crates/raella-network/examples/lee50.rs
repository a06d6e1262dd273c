//! all-MiniLM-L6-v2 on Lee-50: float32 and 8-bit digital reference.
//!
//! ```text
//! cargo run --release -p raella-network --example lee50 -- [--max-tokens N] [--dump FILE] [--isaac-docs N]
//! ```
//!
//! Reads the model and data from `$RAELLA_MODELS` (default `<workspace>/.cache/models`,
//! filled by `cargo xtask fetch-models`): `minilm/` and `lee50/`. Activation
//! scales are calibrated on `fixtures/minilm/calibration.txt` (disjoint from
//! Lee-50). Prints Pearson/Spearman of both paths, the int8 embeddings' cosine to
//! the float ones, MACs and milliseconds per document. `--dump FILE` writes the
//! float32 embeddings as TSV for `scripts/bert_reference.py --compare FILE`.
//! `--isaac-docs N` also runs the first N documents on noise-free `isaac8b`
//! crossbars and checks that they equal the 8-bit reference bit for bit.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use raella_compiler::CompileConfig;
use raella_network::lee50::row_cosines;
use raella_network::{ArchConfig, BertModel, CrossbarBackend, Lee50};
use raella_runtime::RunConfig;

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let models =
        std::env::var_os("RAELLA_MODELS").map_or_else(|| root.join(".cache/models"), PathBuf::from);
    let mut max_tokens = raella_network::bert::MAX_TOKENS;
    let mut dump = None;
    let mut isaac_docs = 0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--max-tokens" => {
                max_tokens = args.next().context("--max-tokens N")?.parse()?;
            }
            "--isaac-docs" => {
                isaac_docs = args.next().context("--isaac-docs N")?.parse()?;
            }
            "--dump" => dump = Some(PathBuf::from(args.next().context("--dump FILE")?)),
            other => anyhow::bail!("unknown argument `{other}`"),
        }
    }
    let model = BertModel::load_with_max_tokens(&models.join("minilm"), max_tokens)?;
    let lee = Lee50::load(&models.join("lee50"))?;
    let cal_path = root.join("fixtures/minilm/calibration.txt");
    let calibration: Vec<String> = std::fs::read_to_string(&cal_path)
        .with_context(|| format!("{}", cal_path.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let ndocs = lee.documents.len();
    #[allow(clippy::cast_precision_loss)]
    let per_doc_ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3 / ndocs as f64;

    let t = Instant::now();
    let float = model.embed_float(&lee.documents)?;
    let float_ms = per_doc_ms(t);
    let fc = lee.correlations(float.view())?;

    let q = model.quantize(&calibration)?;
    let exact = q.exact_backend();
    let t = Instant::now();
    let int8 = q.embed(&exact, &lee.documents)?;
    let int8_ms = per_doc_ms(t);
    let ic = lee.correlations(int8.embeddings.view())?;
    let cos = row_cosines(int8.embeddings.view(), float.view())?;
    #[allow(clippy::cast_precision_loss)]
    let mean_cos = cos.iter().sum::<f64>() / cos.len() as f64;
    let min_cos = cos.iter().copied().fold(f64::INFINITY, f64::min);
    let tokens: usize = int8.tokens.iter().sum();
    let signed = q.layers.iter().filter(|l| l.signed_input).count();

    println!(
        "all-MiniLM-L6-v2 on Lee-50 ({ndocs} documents, {} pairs), truncation {max_tokens} tokens",
        lee.pairs.len()
    );
    println!(
        "tokens per document: mean {:.1}, max {}",
        tokens as f64 / ndocs as f64,
        int8.tokens.iter().max().unwrap_or(&0)
    );
    println!(
        "crossbar MACs per token {}, per document {:.3e}; digital attention MACs per document {:.3e}",
        model.crossbar_macs_per_token(),
        (model.crossbar_macs_per_token() * tokens as u64) as f64 / ndocs as f64,
        int8.tokens
            .iter()
            .map(|&n| model.attention_macs(n))
            .sum::<u64>() as f64
            / ndocs as f64
    );
    println!(
        "crossbar layers: {} ({signed} with signed int8 inputs)",
        q.layers.len()
    );
    println!(
        "float32: Pearson {:.4} Spearman {:.4}  ({float_ms:.1} ms/document)",
        fc.pearson, fc.spearman
    );
    println!(
        "int8 reference: Pearson {:.4} Spearman {:.4}  ({int8_ms:.1} ms/document)",
        ic.pearson, ic.spearman
    );
    println!("int8 vs float32 embedding cosine: mean {mean_cos:.5}, min {min_cos:.5}");
    if isaac_docs > 0 {
        let docs = &lee.documents[..isaac_docs.min(ndocs)];
        let t = Instant::now();
        let cal = q.capture_inputs(&calibration)?;
        let arch = ArchConfig::fixed(CompileConfig::isaac(), RunConfig::isaac());
        let xb = CrossbarBackend::build_layers(&q.crossbar_layers(), &arch, &cal, 1)?;
        let build_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let sim = q.embed(&xb, docs)?;
        #[allow(clippy::cast_precision_loss)]
        let sim_ms = t.elapsed().as_secs_f64() * 1e3 / docs.len() as f64;
        let equal = sim.embeddings == int8.embeddings.slice(ndarray::s![..docs.len(), ..]);
        let in_range = sim
            .layer_stats
            .iter()
            .flatten()
            .all(|s| s.in_range_fraction() == 1.0);
        println!(
            "isaac8b (noise-free) on {} documents: equal to the 8-bit reference: {equal}, \
             every ADC conversion in range: {in_range} (build {build_s:.1} s, {sim_ms:.0} ms/document)",
            docs.len()
        );
    }
    if let Some(path) = dump {
        let text: String = float
            .rows()
            .into_iter()
            .map(|r| {
                let v: Vec<String> = r.iter().map(|x| format!("{x:.9e}")).collect();
                v.join("\t") + "\n"
            })
            .collect();
        std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
        println!("float32 embeddings written to {}", path.display());
    }
    Ok(())
}
