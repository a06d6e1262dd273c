//! `raella_sim.Simulator`: one ONNX model mapped onto one design
//! (`raella_sweep::Simulation`, the engine of `cargo xtask run-onnx`), run on
//! NumPy arrays with the GIL released; the last run's per-layer statistics and
//! its cost.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyImportError, PyRuntimeError, PyUserWarning};
use pyo3::prelude::*;
use raella_onnx::{DType, Graph, Tensor};
use raella_sweep::{LayerReport, Simulation, SimulationRun};

use crate::convert::{graph_inputs, graph_outputs, outputs_to_py, read_inputs, to_py};
use crate::design::Design;
use crate::{embedded, import_model, value_error};

/// What `run-onnx` prints when no calibration is given.
const SELF_CALIBRATION_NOTE: &str = "no calibration given: the inputs calibrate themselves (activation scales and adaptive slicing from the data being evaluated)";

/// The model, built or waiting for its calibration.
enum State {
    /// No calibration was given: the first run's inputs calibrate the model.
    /// `None` after a failed build (the graph is imported again).
    Waiting(Option<Graph>),
    /// Quantised, mapped and programmed.
    Built(Arc<Simulation>),
}

/// The last run's statistics (its outputs went to the caller).
struct LastRun {
    sim: Arc<Simulation>,
    run: SimulationRun,
    layers: Vec<LayerReport>,
}

/// An ONNX model on a simulated design.
#[pyclass(frozen, subclass, name = "_Simulator", module = "raella_sim._native")]
pub struct Simulator {
    model: PathBuf,
    design: Design,
    seed: u64,
    inputs: Vec<(String, DType)>,
    outputs: Vec<String>,
    state: Mutex<State>,
    last: Mutex<Option<Arc<LastRun>>>,
}

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("a simulation panicked in another thread; make a new Simulator")
}

impl Simulator {
    /// The built simulation, and whether it was built now, calibrated on
    /// `inputs` (no calibration was given).
    fn built(&self, inputs: &[Tensor]) -> PyResult<(Arc<Simulation>, bool)> {
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        match &mut *state {
            State::Built(s) => Ok((Arc::clone(s), false)),
            State::Waiting(graph) => {
                let graph = match graph.take() {
                    Some(g) => g,
                    None => import_model(&self.model)?,
                };
                let sim = Simulation::build(
                    graph,
                    &[inputs.to_vec()],
                    self.design.arch.clone(),
                    self.seed,
                )
                .map_err(value_error)?;
                let sim = Arc::new(sim);
                *state = State::Built(Arc::clone(&sim));
                Ok((sim, true))
            }
        }
    }

    fn last(&self, py: Python<'_>) -> PyResult<Arc<LastRun>> {
        py.detach(|| self.last.lock().map_err(|_| poisoned()).map(|l| l.clone()))?
            .ok_or_else(|| PyRuntimeError::new_err("no run yet: call Simulator.run(x) first"))
    }
}

#[pymethods]
impl Simulator {
    /// Imports `model` (an ONNX file), quantises it with activation scales
    /// and adaptive slicing calibrated on `calibration` (an array, or a dict
    /// of arrays by input name) and programs `design`'s crossbars with
    /// `seed`. Without `calibration`, the first `run`'s inputs calibrate it,
    /// as `run-onnx` does without `--calibration` (with a warning).
    #[new]
    #[pyo3(signature = (model, design, calibration = None, seed = 1))]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        design: &Bound<'_, PyAny>,
        calibration: Option<&Bound<'_, PyAny>>,
        seed: u64,
    ) -> PyResult<Self> {
        let design = Design::from_py(design)?;
        let graph = py.detach(|| import_model(&model))?;
        let inputs = graph_inputs(&graph);
        let outputs = graph_outputs(&graph);
        let state = match calibration {
            None => State::Waiting(Some(graph)),
            Some(c) => {
                let cal = read_inputs("calibration", &inputs, c)?;
                let arch = design.arch.clone();
                let sim = py
                    .detach(|| Simulation::build(graph, std::slice::from_ref(&cal), arch, seed))
                    .map_err(value_error)?;
                State::Built(Arc::new(sim))
            }
        };
        Ok(Self {
            model,
            design,
            seed,
            inputs,
            outputs,
            state: Mutex::new(state),
            last: Mutex::new(None),
        })
    }

    /// Runs `x` (an array, or a dict of arrays by input name) through the
    /// simulated design as one batch: one array for a model with one output,
    /// else a dict by output name. The same inputs, design and seed always
    /// give the same result, bit for bit that of `run-onnx`.
    fn run(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let x = read_inputs("input", &self.inputs, x)?;
        // Every lock is taken with the GIL released: a thread building the
        // model holds `state` for a while and must not stall Python.
        let (outputs, self_calibrated) = py.detach(|| -> PyResult<_> {
            let (sim, self_calibrated) = self.built(&x)?;
            let mut run = sim.run(x).map_err(value_error)?;
            let outputs = std::mem::take(&mut run.outputs);
            let layers = sim.layer_stats(&run);
            *self.last.lock().map_err(|_| poisoned())? =
                Some(Arc::new(LastRun { sim, run, layers }));
            Ok((outputs, self_calibrated))
        })?;
        if self_calibrated {
            let note = std::ffi::CString::new(SELF_CALIBRATION_NOTE).expect("no NUL");
            PyErr::warn(py, py.get_type::<PyUserWarning>().as_any(), &note, 1)?;
        }
        outputs_to_py(py, &self.outputs, outputs)
    }

    /// Per weight layer, the last run's statistics (the fields of
    /// `run-onnx`'s `stats.json`): a list of dicts, or a pandas DataFrame
    /// with `as_frame=True`.
    #[pyo3(signature = (as_frame = false))]
    fn stats(&self, py: Python<'_>, as_frame: bool) -> PyResult<Py<PyAny>> {
        let last = self.last(py)?;
        let rows = to_py(py, &last.layers)?;
        if !as_frame {
            return Ok(rows);
        }
        let pandas = py.import("pandas").map_err(|_| {
            PyImportError::new_err(
                "Simulator.stats(as_frame=True) needs pandas, which is not installed: pip install pandas (or call stats() for a list of dicts)",
            )
        })?;
        Ok(pandas.getattr("DataFrame")?.call1((rows,))?.unbind())
    }

    /// Energy, area and throughput per inference of the design on this model,
    /// from the activity the last run measured (one inference per item of its
    /// batch), by the cost model a sweep's `[cost]` section uses with the
    /// shipped tables (`energy.csv`'s columns, the energy breakdown by
    /// category and per-layer costs): a dict.
    fn cost(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let last = self.last(py)?;
        let dnn = self
            .model
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        let row = py
            .detach(|| {
                let cm = embedded::cost_model()?;
                last.sim.cost(&cm, &last.run, &dnn)
            })
            .map_err(value_error)?;
        to_py(py, &row)
    }

    /// The design.
    #[getter]
    fn design(&self) -> Design {
        self.design.clone()
    }

    /// The seed of the programming and read-noise streams.
    #[getter]
    fn seed(&self) -> u64 {
        self.seed
    }

    /// The model file.
    #[getter]
    fn model(&self) -> PathBuf {
        self.model.clone()
    }

    /// The graph inputs' names, in order.
    #[getter]
    fn inputs(&self) -> Vec<String> {
        self.inputs.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The graph outputs' names, in order.
    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.outputs.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Simulator({:?}, design={:?}, seed={})",
            self.model.display().to_string(),
            self.design.arch.name,
            self.seed
        )
    }
}
