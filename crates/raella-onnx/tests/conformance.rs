//! ONNX backend conformance: every case of onnx's own backend test data
//! (`node`, `simple`, `pytorch-converted`, `pytorch-operator`, and the `light_*`
//! reference architectures), imported and run in float32 and compared with the
//! expected outputs.
//!
//! The data is not committed: `bash scripts/fetch/onnx_backend.sh` fetches it
//! into `.cache/onnx-backend/` (or set `RAELLA_ONNX_BACKEND` to another folder).
//! Without it this test prints how to fetch it and passes.
//!
//! Each case ends one of three ways:
//! Each node case with several inputs runs a second time as `node-const`, its
//! inputs but the first turned into initializers (constant folding and the
//! weight-layer path of the executor).
//!
//! - PASSED: every output matches (below);
//! - SKIPPED: it needs something the crate does not support and says so (an
//!   unsupported op, data type, attribute or opset; sequence, optional or map
//!   values); the reason is recorded;
//! - FAILED: any other import or run error, a panic, or a mismatch.
//!
//! The test fails on any failure not in [`ALLOWED_FAILURES`], never on skips.
//! It writes `target/conformance-report.md` (per suite, per op type, every
//! failure and the skip reasons grouped) and prints a summary.
//! `RAELLA_CONFORMANCE_FILTER=substring` runs only the cases whose
//! `suite/name` contains it.
//!
//! Matching, per output: the same shape and element type; integers and bools
//! exactly; floats per element `|got - want| <= tol * max(1, |want|)`, NaN equal
//! to NaN and infinities to themselves, with `tol` = 1e-4 for float32 and
//! float64 (float64 is computed in float32), and two units in the last place of
//! the narrower types (float16 `2^-9`, bfloat16 `2^-6`), whose own rounding of a
//! correct float32 result can differ by one unit from the reference's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use prost::Message;
use raella_onnx::{DType, Data, FloatRunner, Tensor, import_bytes, proto, run, tensor_from_proto};
use rayon::prelude::*;

/// Cases that fail for a reason not fixed here, with the reason. Keep it short
/// and honest: a listed case that passes fails the test (remove it then).
const ALLOWED_FAILURES: &[(&str, &str)] = &[];

/// The suites stored as `SUITE/CASE/{model.onnx, test_data_set_N/}`.
const SUITES: [&str; 4] = ["node", "simple", "pytorch-converted", "pytorch-operator"];

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
    /// Failed, and listed in [`ALLOWED_FAILURES`].
    Allowed(String),
}

#[derive(Debug)]
struct CaseResult {
    suite: String,
    name: String,
    ops: Vec<String>,
    outcome: Outcome,
}

/// One set of inputs and expected outputs, as protobuf bytes.
struct DataSet {
    inputs: Vec<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
}

/// An error message that says the case needs something unsupported.
fn is_unsupported(message: &str) -> bool {
    message.contains("not supported") || message.contains("unsupported")
}

fn classify(message: String) -> Outcome {
    if is_unsupported(&message) {
        Outcome::Skipped(message)
    } else {
        Outcome::Failed(message)
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `prefix_N.pb` files of a folder, by N.
fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix(prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn decode_tensor(bytes: &[u8], what: &str) -> Result<Tensor, Outcome> {
    let t = proto::TensorProto::decode(bytes)
        .map_err(|e| Outcome::Failed(format!("{what}: not a TensorProto ({e})")))?;
    tensor_from_proto(&t).map_err(|e| classify(format!("{what}: {e}")))
}

/// The tolerance of a float type (module docs).
fn tolerance(d: DType) -> f32 {
    match d {
        DType::F16 => 2.0 * 2f32.powi(-10),
        DType::BF16 => 2.0 * 2f32.powi(-7),
        _ => 1e-4,
    }
}

fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!(
            "type {}, expected {}",
            got.dtype().name(),
            want.dtype().name()
        ));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let (mut bad, mut first) = (0usize, None);
    match (got.data(), want.data()) {
        (Data::Float(g), Data::Float(w)) => {
            let tol = tolerance(want.dtype());
            for (i, (&a, &b)) in g.iter().zip(w.iter()).enumerate() {
                let ok =
                    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * b.abs().max(1.0);
                if !ok {
                    bad += 1;
                    first.get_or_insert(format!("element {i}: {a}, expected {b}"));
                }
            }
        }
        (Data::Int(g), Data::Int(w)) => {
            for (i, (&a, &b)) in g.iter().zip(w.iter()).enumerate() {
                if a != b {
                    bad += 1;
                    first.get_or_insert(format!("element {i}: {a}, expected {b}"));
                }
            }
        }
        _ => unreachable!("same dtype"),
    }
    match first {
        None => Ok(()),
        Some(f) => Err(format!("{bad} of {} elements differ; {f}", want.len())),
    }
}

/// Why a graph's declared inputs or outputs cannot be run, if so.
fn non_tensor_values(g: &proto::GraphProto) -> Option<String> {
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    for v in g
        .input
        .iter()
        .filter(|v| !inits.contains(&v.name()))
        .chain(&g.output)
    {
        use proto::type_proto::Value;
        let kind = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Value::TensorType(_)) | None => continue,
            Some(Value::SequenceType(_)) => "sequence",
            Some(Value::OptionalType(_)) => "optional",
            Some(Value::MapType(_)) => "map",
            Some(Value::SparseTensorType(_)) => "sparse tensor",
            Some(_) => "non-tensor",
        };
        return Some(format!(
            "value `{}`: {kind} values are not supported",
            v.name()
        ));
    }
    None
}

fn run_case(model: &[u8], label: &str, sets: &[DataSet]) -> Outcome {
    let Ok(mp) = proto::ModelProto::decode(model) else {
        return Outcome::Failed("model.onnx is not a ModelProto".into());
    };
    if let Some(why) = mp.graph.as_ref().and_then(non_tensor_values) {
        return Outcome::Skipped(why);
    }
    let graph = match import_bytes(model, label) {
        Ok(g) => g,
        Err(e) => return classify(e.to_string()),
    };
    for (k, set) in sets.iter().enumerate() {
        let mut inputs = Vec::new();
        for (j, b) in set.inputs.iter().enumerate() {
            match decode_tensor(b, &format!("input {j}")) {
                Ok(t) => inputs.push(t),
                Err(o) => return o,
            }
        }
        let outs = match run(&graph, inputs, &FloatRunner, 0) {
            Ok(o) => o,
            Err(e) => return classify(e.to_string()),
        };
        for (j, b) in set.outputs.iter().enumerate() {
            let want = match decode_tensor(b, &format!("expected output {j}")) {
                Ok(t) => t,
                Err(o) => return o,
            };
            let Some(got) = outs.get(j) else {
                return Outcome::Failed(format!("output {j} missing"));
            };
            if let Err(e) = compare(got, &want) {
                return Outcome::Failed(format!("data set {k}, output {j}: {e}"));
            }
        }
    }
    Outcome::Passed
}

fn op_types(model: &[u8]) -> Vec<String> {
    let mut ops: Vec<String> = proto::ModelProto::decode(model)
        .ok()
        .and_then(|m| m.graph)
        .map(|g| g.node.iter().map(|n| n.op_type().to_string()).collect())
        .unwrap_or_default();
    ops.sort();
    ops.dedup();
    ops
}

/// A case: where it is, its model, its data.
struct Job {
    suite: String,
    name: String,
    model: Vec<u8>,
    sets: Vec<DataSet>,
}

/// The `node-const` variant of a node case: every input but the first becomes
/// an initializer holding its test value, so the importer folds what depends
/// only on them and turns Conv/ConvTranspose/Gemm/MatMul with a constant
/// matrix into weight layers, run by the executor's im2col/col2im path on the
/// float runner. `None` for cases with one input or non-tensor values.
fn const_variant(job: &Job) -> Option<Job> {
    let mut m = proto::ModelProto::decode(job.model.as_slice()).ok()?;
    let g = m.graph.as_mut()?;
    let [set] = job.sets.as_slice() else {
        return None;
    };
    if g.input.len() < 2 || set.inputs.len() != g.input.len() || non_tensor_values(g).is_some() {
        return None;
    }
    for (vi, bytes) in g.input.iter().zip(&set.inputs).skip(1) {
        let mut t = proto::TensorProto::decode(bytes.as_slice()).ok()?;
        t.name = Some(vi.name().to_string());
        g.initializer.push(t);
    }
    g.input.truncate(1);
    Some(Job {
        suite: "node-const".into(),
        name: job.name.clone(),
        model: m.encode_to_vec(),
        sets: vec![DataSet {
            inputs: vec![set.inputs[0].clone()],
            outputs: set.outputs.clone(),
        }],
    })
}

fn suite_jobs(root: &Path, suite: &str) -> Vec<Job> {
    subdirs(&root.join(suite))
        .into_iter()
        .filter(|d| d.join("model.onnx").is_file())
        .map(|d| {
            let sets = subdirs(&d)
                .into_iter()
                .filter(|s| {
                    s.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("test_data_set_"))
                })
                .map(|s| DataSet {
                    inputs: numbered(&s, "input_").iter().map(|p| read(p)).collect(),
                    outputs: numbered(&s, "output_").iter().map(|p| read(p)).collect(),
                })
                .collect();
            Job {
                suite: suite.to_string(),
                name: d.file_name().unwrap().to_string_lossy().into_owned(),
                model: read(&d.join("model.onnx")),
                sets,
            }
        })
        .collect()
}

/// The `light_*` models: inputs as onnx's runner makes them (each float input,
/// unknown dims as 1, holding `i / n` for element `i` of `n`), the expected
/// output stored beside the model.
fn light_jobs(root: &Path) -> Vec<Job> {
    let dir = root.join("light");
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    models.sort();
    models
        .into_iter()
        .map(|p| {
            let model = read(&p);
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let mp = proto::ModelProto::decode(model.as_slice()).expect("a ModelProto");
            let g = mp.graph.expect("a graph");
            let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
            let inputs =
                g.input
                    .iter()
                    .filter(|v| !inits.contains(&v.name()))
                    .map(|v| {
                        use proto::type_proto::Value;
                        let Some(Value::TensorType(t)) =
                            v.r#type.as_ref().and_then(|t| t.value.as_ref())
                        else {
                            panic!("{stem}: input `{}` is not a tensor", v.name());
                        };
                        let shape: Vec<usize> =
                            t.shape
                                .iter()
                                .flat_map(|s| &s.dim)
                                .map(|d| match d.value {
                                    Some(
                                        proto::tensor_shape_proto::dimension::Value::DimValue(n),
                                    ) if n > 0 => usize::try_from(n).unwrap(),
                                    _ => 1,
                                })
                                .collect();
                        let n = shape.iter().product::<usize>();
                        // numpy: (arange(n) / n) in float64, then float32.
                        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
                        let x: Vec<f32> = (0..n).map(|i| (i as f64 / n as f64) as f32).collect();
                        let tp = proto::TensorProto {
                            dims: shape.iter().map(|&d| i64::try_from(d).unwrap()).collect(),
                            data_type: Some(DType::F32.onnx_code()),
                            float_data: x,
                            ..Default::default()
                        };
                        tp.encode_to_vec()
                    })
                    .collect();
            let outputs = (0..g.output.len())
                .map(|i| read(&dir.join(format!("{stem}_output_{i}.pb"))))
                .collect();
            Job {
                suite: "light".into(),
                name: stem,
                model,
                sets: vec![DataSet { inputs, outputs }],
            }
        })
        .collect()
}

/// A skip reason without what names one case (node names, paths, op lists).
fn reason_key(reason: &str, label: &str) -> String {
    let mut r = reason.to_string();
    if let Some(i) = r.find(" (supported: ") {
        r.truncate(i);
    }
    // `node `NAME` (Op): message` -> `(Op): message`.
    if let Some(rest) = r.strip_prefix("node `")
        && let Some(i) = rest.find("` (")
    {
        r = rest[i + 2..].to_string();
    }
    // `suite/case: message` of model-level errors.
    if let Some(rest) = r.strip_prefix(label).and_then(|t| t.strip_prefix(": ")) {
        r = rest.to_string();
    }
    for word in ["value", "tensor"] {
        let open = format!("{word} `");
        if let Some(i) = r.find(&open)
            && let Some(j) = r[i + open.len()..].find('`')
        {
            r.replace_range(i..i + open.len() + j + 1, word);
        }
    }
    r
}

/// A coarse kind of skip reason, for the summary.
fn skip_kind(reason: &str) -> &'static str {
    if reason.contains("control flow") {
        "control flow (If, Loop, Scan)"
    } else if reason.contains("sequence")
        || reason.contains("optional")
        || reason.contains("Sequence")
        || reason.contains("Optional")
    {
        "sequence and optional values"
    } else if reason.contains("data type")
        || reason.contains("Cast to")
        || reason.contains("BitCast from")
    {
        "data types (float8, 4-/2-bit integers, strings; float64 bits)"
    } else if reason.contains("3-D windows") {
        "3-D convolution and pooling"
    } else if reason.contains("domain") {
        "other domains (ai.onnx.ml, training, preview)"
    } else if reason.contains("unsupported op") {
        "operators not implemented"
    } else {
        "attributes or modes not supported"
    }
}

fn report(results: &[CaseResult], secs: f64) -> String {
    let mut s = String::new();
    let count = |rs: &[&CaseResult]| {
        let mut c = [0usize; 4];
        for r in rs {
            c[match r.outcome {
                Outcome::Passed => 0,
                Outcome::Skipped(_) => 1,
                Outcome::Failed(_) => 2,
                Outcome::Allowed(_) => 3,
            }] += 1;
        }
        c
    };
    let _ = writeln!(
        s,
        "# ONNX backend conformance\n\nonnx 1.23.2 backend test data, float32 forward \
         (crates/raella-onnx/tests/conformance.rs); {} cases in {secs:.1} s.\n",
        results.len()
    );
    let _ = writeln!(
        s,
        "| suite | passed | skipped | failed | allowed failures |\n|---|---:|---:|---:|---:|"
    );
    let mut suites: Vec<&str> = results.iter().map(|r| r.suite.as_str()).collect();
    suites.dedup();
    for suite in suites.iter().chain(std::iter::once(&"total")) {
        let rs: Vec<&CaseResult> = results
            .iter()
            .filter(|r| *suite == "total" || r.suite == *suite)
            .collect();
        let c = count(&rs);
        let _ = writeln!(s, "| {suite} | {} | {} | {} | {} |", c[0], c[1], c[2], c[3]);
    }
    let _ = writeln!(s, "\n## Failures\n");
    if !results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Failed(_) | Outcome::Allowed(_)))
    {
        let _ = writeln!(s, "None.");
    }
    for r in results {
        if let Outcome::Failed(m) | Outcome::Allowed(m) = &r.outcome {
            let tag = if matches!(r.outcome, Outcome::Allowed(_)) {
                " (allowed)"
            } else {
                ""
            };
            let _ = writeln!(s, "- `{}/{}`{tag}: {m}", r.suite, r.name);
        }
    }
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in results {
        if let Outcome::Skipped(m) = &r.outcome {
            reasons
                .entry(reason_key(m, &format!("{}/{}", r.suite, r.name)))
                .or_default()
                .push(format!("{}/{}", r.suite, r.name));
        }
    }
    let mut reasons: Vec<(String, Vec<String>)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, v) in &reasons {
        *kinds.entry(skip_kind(k)).or_default() += v.len();
    }
    let _ = writeln!(s, "\n## Skips by kind\n\n| cases | kind |\n|---:|---|");
    let mut kinds: Vec<(&str, usize)> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    for (k, n) in kinds {
        let _ = writeln!(s, "| {n} | {k} |");
    }
    let _ = writeln!(
        s,
        "\n## Skip reasons\n\n| cases | reason | e.g. |\n|---:|---|---|"
    );
    for (k, v) in &reasons {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` |",
            v.len(),
            k.replace('|', "\\|"),
            v[0]
        );
    }
    let mut per_op: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for r in results {
        for op in &r.ops {
            per_op.entry(op).or_default().push(r);
        }
    }
    let _ = writeln!(
        s,
        "\n## Per op type\n\nA case counts once for every op type in its graph.\n\n\
         | op | passed | skipped | failed |\n|---|---:|---:|---:|"
    );
    for (op, rs) in &per_op {
        let c = count(rs);
        let _ = writeln!(s, "| {op} | {} | {} | {} |", c[0], c[1], c[2] + c[3]);
    }
    s
}

#[test]
fn onnx_backend_conformance() {
    let root = std::env::var_os("RAELLA_ONNX_BACKEND").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/onnx-backend"),
        PathBuf::from,
    );
    if !root.join("light").is_dir() {
        println!(
            "conformance: no ONNX backend test data in {}: skipped. Fetch it with \
             `bash scripts/fetch/onnx_backend.sh` (about 20 s, PyPI).",
            root.display()
        );
        return;
    }
    let filter = std::env::var("RAELLA_CONFORMANCE_FILTER").unwrap_or_default();
    let t0 = Instant::now();
    let mut jobs: Vec<Job> = SUITES.iter().flat_map(|s| suite_jobs(&root, s)).collect();
    let consts: Vec<Job> = jobs
        .iter()
        .filter(|j| j.suite == "node")
        .filter_map(const_variant)
        .collect();
    jobs.extend(consts);
    jobs.extend(light_jobs(&root));
    jobs.retain(|j| format!("{}/{}", j.suite, j.name).contains(&filter));
    // Panics are failures of their case: keep their messages out of the log.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let done = Mutex::new(0usize);
    let mut results: Vec<CaseResult> = jobs
        .par_iter()
        .map(|j| {
            let label = format!("{}/{}", j.suite, j.name);
            let outcome = std::panic::catch_unwind(|| run_case(&j.model, &label, &j.sets))
                .unwrap_or_else(|p| {
                    let m = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                        .unwrap_or_default();
                    Outcome::Failed(format!("panic: {m}"))
                });
            let outcome = match (outcome, ALLOWED_FAILURES.iter().find(|a| a.0 == label)) {
                (Outcome::Failed(m), Some(_)) => Outcome::Allowed(m),
                (o, _) => o,
            };
            *done.lock().unwrap() += 1;
            CaseResult {
                suite: j.suite.clone(),
                name: j.name.clone(),
                ops: op_types(&j.model),
                outcome,
            }
        })
        .collect();
    std::panic::set_hook(hook);
    results.sort_by(|a, b| (&a.suite, &a.name).cmp(&(&b.suite, &b.name)));
    let secs = t0.elapsed().as_secs_f64();
    let text = report(&results, secs);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("conformance-report.md");
    std::fs::write(&target, &text).expect("write the report");
    // The summary table and the failures.
    let summary: String = text
        .split("\n## Skip reasons\n")
        .next()
        .unwrap_or_default()
        .to_string();
    println!("{summary}\nfull report: {}", target.display());
    let failed: Vec<&CaseResult> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .collect();
    let stale: Vec<&str> = ALLOWED_FAILURES
        .iter()
        .filter(|a| {
            results
                .iter()
                .any(|r| format!("{}/{}", r.suite, r.name) == a.0 && r.outcome == Outcome::Passed)
        })
        .map(|a| a.0)
        .collect();
    assert!(
        stale.is_empty(),
        "allow-listed cases now pass (remove them from ALLOWED_FAILURES): {stale:?}"
    );
    assert!(
        failed.is_empty(),
        "{} conformance failures (see {})",
        failed.len(),
        target.display()
    );
}
