//! `raella_sim.Design`: a named preset with knobs overridden, resolved and
//! validated by the resolver `cargo xtask run-onnx --design/--set` uses
//! (`raella_sweep::resolve_design_in`), over the presets compiled into the
//! wheel.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use raella_sweep::Arch;

use crate::convert::{knobs_table, to_py};
use crate::{embedded, value_error};

/// A simulated design: a preset of `fixtures/presets.toml`, knobs overridden.
#[pyclass(frozen, module = "raella_sim")]
#[derive(Debug, Clone)]
pub struct Design {
    pub(crate) arch: Arch,
}

impl Design {
    /// Preset `name` with `overrides`, as `run-onnx --design NAME --set ...`
    /// resolves it; errors name the preset or knob and the value.
    pub(crate) fn resolve(name: &str, overrides: &toml::Table) -> PyResult<Self> {
        let designs = embedded::designs().map_err(value_error)?;
        let arch =
            raella_sweep::resolve_design_in(&designs, name, overrides, Path::new("Design.preset"))
                .map_err(value_error)?;
        Ok(Self { arch })
    }

    /// A `Design`, or a preset name for one with no knob changed.
    pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(d) = obj.cast::<Self>() {
            return Ok(d.get().clone());
        }
        if let Ok(name) = obj.extract::<String>() {
            return Self::resolve(&name, &toml::Table::new());
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "design: expected a raella_sim.Design or a preset name, got {}",
            crate::convert::type_name(obj)
        )))
    }
}

#[pymethods]
impl Design {
    /// Preset `name` with any knob overridden (`adc_bits=6`, `noise_e=0.04`,
    /// `weight_slicing="4-2-2"`, ...; `docs/PRESETS.md` lists them).
    #[staticmethod]
    #[pyo3(signature = (name, /, **knobs))]
    fn preset(name: &str, knobs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Self::resolve(name, &knobs_table(knobs)?)
    }

    /// The preset names.
    #[staticmethod]
    fn presets() -> PyResult<Vec<String>> {
        Ok(embedded::designs()
            .map_err(value_error)?
            .into_keys()
            .collect())
    }

    /// The design's name in results: the preset, then the knobs changed
    /// (`raella[adc_bits=6]`).
    #[getter]
    fn name(&self) -> String {
        self.arch.name.clone()
    }

    /// The preset it starts from.
    #[getter]
    fn preset_name(&self) -> Option<String> {
        self.arch.knobs.preset.clone()
    }

    /// The preset's one-line description.
    #[getter]
    fn description(&self) -> Option<String> {
        self.arch.knobs.description.clone()
    }

    /// Every knob, resolved (a dict).
    #[getter]
    fn knobs(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.arch.knobs)
    }

    fn __repr__(&self) -> String {
        format!("Design({:?})", self.arch.name)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Self>()
            .is_ok_and(|o| o.get().arch == self.arch)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.arch.name.hash(&mut h);
        h.finish()
    }
}
