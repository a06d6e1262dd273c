//! The RAELLA simulator as a Python extension (`raella_sim`, built by maturin
//! into an abi3 wheel for CPython 3.9+; `pyproject.toml` at the workspace
//! root). Nothing is implemented twice: designs resolve through
//! `raella_sweep::resolve_design_in` over the presets compiled in
//! (`embedded`), a `Simulator` is `raella_sweep::Simulation` (what
//! `cargo xtask run-onnx` runs), `reference` is `raella_sweep::reference`,
//! `cost` is the sweep's cost model and `sweep` calls `raella_sweep` as the
//! `raella-sweep` binary does. This crate only converts between Python and
//! the engine, releases the GIL while the engine works, and maps errors to
//! exceptions with the command line's messages: `ValueError` for bad values
//! (an unknown preset or knob, a wrong shape, a malformed file), `TypeError`
//! for a wrong type or dtype, `FileNotFoundError` for a missing file.
//!
//! `raella_sim/__init__.py` (in `python/`) adds what is pure Python:
//! `Simulator.from_torch` and `stats(as_frame=True)`'s pandas import.

mod convert;
mod design;
mod embedded;
mod simulator;

use std::path::{Path, PathBuf};

use pyo3::exceptions::{PyFileNotFoundError, PyUserWarning, PyValueError};
use pyo3::prelude::*;
use raella_onnx::Graph;
use raella_sweep::{Reference, RunOptions, Spec};

use crate::convert::{graph_inputs, graph_outputs, outputs_to_py, read_inputs};

/// The global allocator (see `mimalloc` in the workspace's `Cargo.toml`):
/// glibc's returns large freed blocks to the kernel and faults them in again on
/// the next layer; mimalloc keeps them ([`raella_sweep::keep_freed_memory`]
/// turns off its delayed return of freed memory too). No result depends on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An engine error as `ValueError`, with the message the command line prints
/// (the whole chain of causes).
pub fn value_error(e: impl Into<anyhow::Error>) -> PyErr {
    PyValueError::new_err(format!("{:#}", e.into()))
}

/// `FileNotFoundError` if nothing is at `path`.
fn check_exists(path: &Path, what: &str) -> PyResult<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PyFileNotFoundError::new_err(
            format!("{what} {}: no such file or folder", path.display()),
        )),
        _ => Ok(()),
    }
}

/// Imports an ONNX model.
pub(crate) fn import_model(path: &Path) -> PyResult<Graph> {
    check_exists(path, "model")?;
    raella_onnx::import_file(path).map_err(value_error)
}

fn warn(py: Python<'_>, message: &str) -> PyResult<()> {
    let message = std::ffi::CString::new(message).map_err(value_error)?;
    PyErr::warn(py, py.get_type::<PyUserWarning>().as_any(), &message, 1)
}

/// Runs a digital reference of `model` on `x`: `kind="fp32"` (float32
/// throughout) or `"int8"` (int8 weights, 8-bit activations calibrated on
/// `calibration`, or on `x` itself when it is `None`, exact integer MACs).
/// `x` and `calibration` as for `Simulator`; `calibration` is read by `int8`
/// only. Returns what `Simulator.run` returns.
#[pyfunction]
#[pyo3(signature = (model, x, kind = "fp32", calibration = None))]
fn reference(
    py: Python<'_>,
    model: PathBuf,
    x: &Bound<'_, PyAny>,
    kind: &str,
    calibration: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let kind = match kind {
        "fp32" => Reference::Fp32,
        "int8" => Reference::Int8,
        other => {
            return Err(PyValueError::new_err(format!(
                "kind `{other}`: expected \"fp32\" or \"int8\" (simulated designs run through Simulator)"
            )));
        }
    };
    let graph = py.detach(|| import_model(&model))?;
    let (inputs, outputs) = (graph_inputs(&graph), graph_outputs(&graph));
    let x = read_inputs("input", &inputs, x)?;
    let cal = match (kind, calibration) {
        (Reference::Int8, Some(c)) => Some(read_inputs("calibration", &inputs, c)?),
        _ => None,
    };
    if kind == Reference::Int8 && cal.is_none() {
        warn(
            py,
            "no calibration given: the inputs calibrate the 8-bit reference's activation scales themselves",
        )?;
    }
    let ys = py
        .detach(|| raella_sweep::reference(graph, x, kind, cal))
        .map_err(value_error)?;
    outputs_to_py(py, &outputs, ys)
}

/// Runs the sweep `spec` (a TOML spec, as `cargo xtask sweep SPEC --out
/// DIR`) and writes its result files to `out` (default `results/<spec
/// name>`, relative to the working folder), the same files the command line
/// writes; finished points are cached under `out/.cache` unless `cache` is
/// false. `presets` replaces the built-in presets file (a spec may also name
/// its own); `shard=(k, n)` runs the k-th of n disjoint slices of the points.
/// Progress goes to `sys.stderr` unless `progress` is false. Returns `out`.
#[pyfunction]
#[pyo3(signature = (spec, out = None, *, presets = None, shard = None, cache = true, progress = true))]
fn sweep(
    py: Python<'_>,
    spec: PathBuf,
    out: Option<PathBuf>,
    presets: Option<PathBuf>,
    shard: Option<(usize, usize)>,
    cache: bool,
    progress: bool,
) -> PyResult<PathBuf> {
    check_exists(&spec, "spec")?;
    if let Some(p) = &presets {
        check_exists(p, "presets")?;
    }
    if let Some((k, n)) = shard
        && (n == 0 || k == 0 || k > n)
    {
        return Err(PyValueError::new_err(format!(
            "shard ({k}, {n}): need 1 <= k <= n"
        )));
    }
    let spec = match &presets {
        Some(p) => Spec::load(&spec, p),
        None => Spec::load_with_presets_text(
            &spec,
            Path::new(embedded::PRESETS_NAME),
            embedded::PRESETS,
        ),
    }
    .map_err(value_error)?;
    let out = out.unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    // Before any model loads, as the command line does.
    raella_sweep::check_output_folder(&out)
        .map_err(|e| value_error(anyhow::Error::new(e).context("out")))?;
    let say = |m: &str| {
        if progress {
            Python::attach(|py| {
                if let Ok(err) = py.import("sys").and_then(|s| s.getattr("stderr")) {
                    let _ = err.call_method1("write", (format!("{m}\n"),));
                }
            });
        }
    };
    let opts = RunOptions {
        shard,
        cache_dir: cache.then(|| out.join(".cache")),
        progress_bar: false,
    };
    py.detach(|| -> anyhow::Result<()> {
        say(&raella_sweep::banner(&spec, shard, &out));
        let results = raella_sweep::run_with(&spec, &opts, |m| say(&format!("  {m}")))?;
        for w in raella_sweep::write_results(&spec, &results, &out)? {
            say(&format!("wrote {}", w.display()));
        }
        Ok(())
    })
    .map_err(value_error)?;
    Ok(out)
}

/// The compiled part of `raella_sim`; import `raella_sim`, not this.
#[pymodule]
mod _native {
    #[pymodule_export]
    use super::design::Design;
    #[pymodule_export]
    use super::reference;
    #[pymodule_export]
    use super::simulator::Simulator;
    #[pymodule_export]
    use super::sweep;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        raella_sweep::keep_freed_memory();
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
