//! `cargo xtask inspect-onnx` and `cargo xtask run-onnx`: check any ONNX model,
//! and run it on any tensors (`.npy`) under float32, the 8-bit digital
//! reference or a simulated design, writing the outputs as `.npy` so they can
//! be compared with the user's own framework.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::ArrayD;
use raella_network::QuantModel;
use raella_onnx::{DType, Dim, Graph, Tensor};
use raella_sweep::{Reference, Simulation, reference};

/// Reads a `.npy` as the model input `name` of type `dtype`.
fn read_input(path: &Path, name: &str, dtype: DType) -> Result<Tensor> {
    let shown = path.display();
    let t = if dtype.is_float() {
        match ndarray_npy::read_npy::<_, ArrayD<f32>>(path) {
            Ok(a) => Tensor::float(a, dtype),
            Err(_) => {
                let a: ArrayD<f64> = ndarray_npy::read_npy(path).with_context(|| {
                    format!("input `{name}`: {shown}: not a float32 or float64 .npy file")
                })?;
                #[allow(clippy::cast_possible_truncation)]
                Tensor::float(a.mapv(|v| v as f32), dtype)
            }
        }
    } else {
        match ndarray_npy::read_npy::<_, ArrayD<i64>>(path) {
            Ok(a) => Tensor::int(a, dtype),
            Err(_) => {
                let a: ArrayD<i32> = ndarray_npy::read_npy(path).with_context(|| {
                    format!("input `{name}`: {shown}: not an int64 or int32 .npy file")
                })?;
                Tensor::int(a.mapv(i64::from), dtype)
            }
        }
    };
    Ok(t)
}

/// `NAME=FILE.npy` pairs in the graph's input order.
fn inputs(graph: &Graph, pairs: &[(String, PathBuf)], what: &str) -> Result<Vec<Tensor>> {
    for (n, _) in pairs {
        if !graph.inputs.iter().any(|&i| graph.name(i) == n) {
            bail!(
                "{what} `{n}`: the model has no such input (inputs: {})",
                input_names(graph)
            );
        }
    }
    graph
        .inputs
        .iter()
        .map(|&i| {
            let name = graph.name(i);
            let (_, p) = pairs.iter().find(|(n, _)| n == name).with_context(|| {
                format!(
                    "no {what} for the model's input `{name}` (give `--{what} {name}=FILE.npy`)"
                )
            })?;
            read_input(p, name, graph.values[i].dtype.unwrap_or(DType::F32))
        })
        .collect()
}

fn input_names(graph: &Graph) -> String {
    graph
        .inputs
        .iter()
        .map(|&i| graph.name(i).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A declared shape as `[N, 3, 224, 224]`, symbolic dimensions by name (`?` unnamed).
fn shape_text(shape: Option<&[Dim]>) -> String {
    shape.map_or_else(
        || "(no declared shape)".to_string(),
        |d| {
            let dims: Vec<String> = d
                .iter()
                .map(|x| match x {
                    Dim::Fixed(n) => n.to_string(),
                    Dim::Named(n) => n.clone(),
                })
                .collect();
            format!("[{}]", dims.join(", "))
        },
    )
}

/// `cargo xtask inspect-onnx MODEL.onnx`.
///
/// # Errors
/// The model cannot be imported.
pub fn inspect(path: &Path) -> Result<String> {
    let graph = raella_onnx::import_file(path)?;
    let mut out = String::new();
    writeln!(out, "{}: opset {}", path.display(), graph.opset)?;
    for &i in &graph.inputs {
        let v = &graph.values[i];
        let dynamic = v
            .shape
            .as_ref()
            .is_none_or(|d| d.iter().skip(1).any(|x| matches!(x, Dim::Named(_))));
        writeln!(
            out,
            "input `{}`: {} {}{}",
            v.name,
            v.dtype.map_or("?", DType::name),
            shape_text(v.shape.as_deref()),
            match (dynamic, v.dtype) {
                (true, Some(DType::I64 | DType::I32)) => {
                    " (token ids? a text model's [[model]] names its `tokenizer`, which sets the length)"
                }
                (true, _) => {
                    " (dynamic after the batch: a sweep needs `input_shape` in its [[model]])"
                }
                (false, _) => "",
            }
        )?;
    }
    for &o in &graph.outputs {
        let v = &graph.values[o];
        writeln!(
            out,
            "output `{}`: {} {}",
            v.name,
            v.dtype.map_or("?", DType::name),
            shape_text(v.shape.as_deref())
        )?;
    }
    let counts = |c: &[(String, usize)]| {
        c.iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(out, "nodes after folding: {}", counts(&graph.op_counts()))?;
    writeln!(out, "folded at import: {}", counts(&graph.folded))?;
    writeln!(
        out,
        "weight layers (run on crossbars): {}",
        graph.layers.len()
    )?;
    for l in &graph.layers {
        writeln!(
            out,
            "  {} ({}): {} x {}{}",
            l.name,
            l.op_type,
            l.outputs_per_group(),
            l.inputs(),
            if l.groups() > 1 {
                format!(" x {} groups", l.groups())
            } else {
                String::new()
            }
        )?;
    }
    Ok(out)
}

/// The options of `run-onnx`.
#[derive(Debug, Default)]
pub struct RunArgs {
    /// The model.
    pub model: PathBuf,
    /// `NAME=FILE.npy`.
    pub inputs: Vec<(String, PathBuf)>,
    /// Calibration inputs (default: the inputs themselves).
    pub calibration: Vec<(String, PathBuf)>,
    /// `fp32`, `int8` or a preset name.
    pub design: String,
    /// Knob overrides for a preset.
    pub set: toml::Table,
    /// Seed of noise streams.
    pub seed: u64,
    /// Output folder.
    pub out: PathBuf,
}

/// Parses `run-onnx` arguments.
///
/// # Errors
/// Malformed arguments.
pub fn parse_args(args: &[String], absolute: impl Fn(&str) -> Result<String>) -> Result<RunArgs> {
    let mut r = RunArgs {
        seed: 1,
        ..RunArgs::default()
    };
    let pair = |v: &str, flag: &str| -> Result<(String, PathBuf)> {
        let (n, f) = v
            .split_once('=')
            .with_context(|| format!("{flag} takes NAME=FILE.npy, got `{v}`"))?;
        Ok((n.to_string(), PathBuf::from(absolute(f)?)))
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--input" => r.inputs.push(pair(val()?, "--input")?),
            "--calibration" => r.calibration.push(pair(val()?, "--calibration")?),
            "--design" => r.design = val()?.clone(),
            "--seed" => {
                let v = val()?;
                r.seed = v
                    .parse()
                    .with_context(|| format!("--seed `{v}` is not a number"))?;
            }
            "--out" => r.out = PathBuf::from(absolute(val()?)?),
            "--set" => {
                let v = val()?;
                let (k, x) = v
                    .split_once('=')
                    .with_context(|| format!("--set takes knob=value, got `{v}`"))?;
                // A value is TOML (6, 0.04, true, "4-2-2"); a bare word is a string.
                let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {x}"))
                    .ok()
                    .and_then(|t| t.get("v").cloned())
                    .unwrap_or_else(|| toml::Value::String(x.to_string()));
                r.set.insert(k.to_string(), parsed);
            }
            s if s.starts_with('-') => bail!("unknown option `{s}` for run-onnx"),
            s if r.model.as_os_str().is_empty() => r.model = PathBuf::from(absolute(s)?),
            s => bail!("unexpected argument `{s}` for run-onnx"),
        }
    }
    if r.model.as_os_str().is_empty() {
        bail!("run-onnx needs MODEL.onnx");
    }
    if r.design.is_empty() {
        bail!("run-onnx needs --design fp32|int8|PRESET");
    }
    if r.out.as_os_str().is_empty() {
        bail!("run-onnx needs --out DIR");
    }
    if !r.set.is_empty() && matches!(r.design.as_str(), "fp32" | "int8") {
        bail!("--set applies to a preset design, not `{}`", r.design);
    }
    Ok(r)
}

/// Runs `run-onnx`; returns what it prints.
///
/// # Errors
/// Any import, input, design or run error.
pub fn run(root: &Path, a: &RunArgs) -> Result<String> {
    let graph = raella_onnx::import_file(&a.model)?;
    let x = inputs(&graph, &a.inputs, "input")?;
    let mut note = String::new();
    let (ys, stats) = match a.design.as_str() {
        "fp32" => (reference(graph, x, Reference::Fp32, None)?, None),
        design => {
            let cal = if a.calibration.is_empty() {
                writeln!(
                    note,
                    "note: no --calibration given: the inputs calibrate themselves (activation scales and adaptive slicing from the data being evaluated)"
                )?;
                x.clone()
            } else {
                inputs(&graph, &a.calibration, "calibration")?
            };
            if design == "int8" {
                (reference(graph, x, Reference::Int8, Some(cal))?, None)
            } else {
                let model = QuantModel::calibrate(graph, std::slice::from_ref(&cal))?;
                let arch = raella_sweep::resolve_design(
                    &root.join("fixtures/presets.toml"),
                    design,
                    &a.set,
                    Path::new("run-onnx --design/--set"),
                )?;
                let sim = Simulation::new(model, std::slice::from_ref(&cal), arch, a.seed)?;
                let r = sim.run(x)?;
                let stats = serde_json::json!({
                    "model": a.model.display().to_string(),
                    "design": sim.arch.name,
                    "seed": a.seed,
                    "calibration": if a.calibration.is_empty() { "the inputs" } else { "--calibration" },
                    "layers": sim.layer_stats(&r),
                });
                (r.outputs, Some(stats))
            }
        }
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut printed = note;
    for (i, y) in ys.iter().enumerate() {
        let p = a.out.join(format!("output_{i}.npy"));
        ndarray_npy::write_npy(&p, &y.to_f32())
            .with_context(|| format!("writing {}", p.display()))?;
        writeln!(printed, "wrote {} {:?}", p.display(), y.shape())?;
    }
    if let Some(s) = stats {
        let p = a.out.join("stats.json");
        std::fs::write(&p, serde_json::to_string_pretty(&s)?)
            .with_context(|| format!("writing {}", p.display()))?;
        writeln!(printed, "wrote {}", p.display())?;
    }
    Ok(printed)
}
