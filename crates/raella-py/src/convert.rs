//! Between Python and the engine: NumPy arrays and the engine's tensors,
//! keyword arguments and design knobs (TOML values, as `--set` gives them),
//! and the engine's serialisable results as plain Python objects. Each
//! rejected value raises an exception naming the input, knob or type.

use numpy::{
    IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use raella_onnx::{DType, Data, Graph, Tensor};

/// The Python type name of `obj`, for messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

/// The graph inputs' names and declared element types, in graph order.
pub fn graph_inputs(graph: &Graph) -> Vec<(String, DType)> {
    graph
        .inputs
        .iter()
        .map(|&i| {
            (
                graph.name(i).to_string(),
                graph.values[i].dtype.unwrap_or(DType::F32),
            )
        })
        .collect()
}

/// The graph outputs' names, in graph order.
pub fn graph_outputs(graph: &Graph) -> Vec<String> {
    graph
        .outputs
        .iter()
        .map(|&o| graph.name(o).to_string())
        .collect()
}

/// Reads one array as the model input `name` of type `dtype`. The accepted
/// element types are those `run-onnx` accepts in `.npy` files: float32 or
/// float64 for a float input (float64 rounded to float32, as there), int64 or
/// int32 for an integer input, and also bool for a bool input. A float32 or
/// int64 array is read in place and copied once, into the engine's tensor.
pub fn read_array(
    what: &str,
    name: &str,
    obj: &Bound<'_, PyAny>,
    dtype: DType,
) -> PyResult<Tensor> {
    let arr = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} `{name}`: expected a numpy.ndarray, got {}",
            type_name(obj)
        ))
    })?;
    let py = obj.py();
    let got = arr.dtype();
    let is = |d: Bound<'_, numpy::PyArrayDescr>| got.is_equiv_to(&d);
    let wrong = |expected: &str| {
        PyTypeError::new_err(format!(
            "{what} `{name}`: the model's input is {}; expected a {expected} array, got {got}",
            dtype.name(),
        ))
    };
    let borrow = |e: numpy::BorrowError| PyValueError::new_err(format!("{what} `{name}`: {e}"));
    if dtype.is_float() {
        if is(numpy::dtype::<f32>(py)) {
            let a = arr
                .cast::<PyArrayDyn<f32>>()?
                .try_readonly()
                .map_err(borrow)?;
            Ok(Tensor::float(
                a.as_array().as_standard_layout().into_owned(),
                dtype,
            ))
        } else if is(numpy::dtype::<f64>(py)) {
            let a = arr
                .cast::<PyArrayDyn<f64>>()?
                .try_readonly()
                .map_err(borrow)?;
            // As run-onnx reads a float64 .npy: rounded to the engine's f32.
            #[allow(clippy::cast_possible_truncation)]
            let a = a.as_array().mapv(|v| v as f32);
            Ok(Tensor::float(a, dtype))
        } else {
            Err(wrong("float32 or float64"))
        }
    } else if is(numpy::dtype::<i64>(py)) {
        let a = arr
            .cast::<PyArrayDyn<i64>>()?
            .try_readonly()
            .map_err(borrow)?;
        Ok(Tensor::int(
            a.as_array().as_standard_layout().into_owned(),
            dtype,
        ))
    } else if is(numpy::dtype::<i32>(py)) {
        let a = arr
            .cast::<PyArrayDyn<i32>>()?
            .try_readonly()
            .map_err(borrow)?;
        Ok(Tensor::int(a.as_array().mapv(i64::from), dtype))
    } else if dtype == DType::Bool && is(numpy::dtype::<bool>(py)) {
        let a = arr
            .cast::<PyArrayDyn<bool>>()?
            .try_readonly()
            .map_err(borrow)?;
        Ok(Tensor::bool(a.as_array().to_owned()))
    } else if dtype == DType::Bool {
        Err(wrong("bool, int64 or int32"))
    } else {
        Err(wrong("int64 or int32"))
    }
}

/// Reads `x` as the graph's inputs, in graph order: a dict of arrays keyed by
/// input name, or one array for a model with one input. `what` (`input`,
/// `calibration`) names the argument in messages.
pub fn read_inputs(
    what: &str,
    inputs: &[(String, DType)],
    x: &Bound<'_, PyAny>,
) -> PyResult<Vec<Tensor>> {
    let names = || {
        inputs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Ok(d) = x.cast::<PyDict>() else {
        if let [(name, dtype)] = inputs {
            return Ok(vec![read_array(what, name, x, *dtype)?]);
        }
        return Err(PyTypeError::new_err(format!(
            "{what}: the model takes {} inputs ({}): give a dict of arrays keyed by input name, got {}",
            inputs.len(),
            names(),
            type_name(x)
        )));
    };
    for (k, _) in d.iter() {
        let k: String = k.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "{what}: dict keys are input names (str), got {}",
                type_name(&k)
            ))
        })?;
        if !inputs.iter().any(|(n, _)| *n == k) {
            return Err(PyValueError::new_err(format!(
                "{what} `{k}`: the model has no such input (inputs: {})",
                names()
            )));
        }
    }
    inputs
        .iter()
        .map(|(name, dtype)| {
            let v = d.get_item(name)?.ok_or_else(|| {
                PyValueError::new_err(format!(
                    "{what}: no array for the model's input `{name}` (inputs: {})",
                    names()
                ))
            })?;
            read_array(what, name, &v, *dtype)
        })
        .collect()
}

/// A tensor as a NumPy array, without a copy: float types as float32 (the
/// engine's precision), bool as bool, every other integer type as int64.
pub fn tensor_to_py(py: Python<'_>, t: Tensor) -> Py<PyAny> {
    let bool_typed = t.dtype() == DType::Bool;
    match t.into_data() {
        Data::Float(a) => a.into_pyarray(py).into_any().unbind(),
        Data::Int(a) if bool_typed => a.mapv(|v| v != 0).into_pyarray(py).into_any().unbind(),
        Data::Int(a) => a.into_pyarray(py).into_any().unbind(),
    }
}

/// Outputs as Python returns them: one array for a model with one output,
/// else a dict keyed by output name (graph order).
pub fn outputs_to_py(py: Python<'_>, names: &[String], ys: Vec<Tensor>) -> PyResult<Py<PyAny>> {
    if ys.len() == 1 && names.len() == 1 {
        let y = ys.into_iter().next().expect("one output");
        return Ok(tensor_to_py(py, y));
    }
    let d = PyDict::new(py);
    for (n, y) in names.iter().zip(ys) {
        d.set_item(n, tensor_to_py(py, y))?;
    }
    Ok(d.into_any().unbind())
}

/// A knob's Python value as the TOML value `--set knob=VALUE` would give.
fn knob_value(knob: &str, v: &Bound<'_, PyAny>) -> PyResult<toml::Value> {
    let unsupported = || {
        PyTypeError::new_err(format!(
            "knob `{knob}`: expected a bool, int, float, str or list, got {}",
            type_name(v)
        ))
    };
    if v.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        let i: i64 = v.extract().map_err(|_| {
            PyValueError::new_err(format!("knob `{knob}`: {v} does not fit in 64 bits"))
        })?;
        return Ok(toml::Value::Integer(i));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(v.extract()?));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(v.extract()?));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        return v
            .try_iter()?
            .map(|x| knob_value(knob, &x?))
            .collect::<PyResult<Vec<_>>>()
            .map(toml::Value::Array);
    }
    // NumPy scalars: integers through `__index__`, floats through `__float__`.
    if v.hasattr("__index__")? {
        return Ok(toml::Value::Integer(
            v.extract().map_err(|_| unsupported())?,
        ));
    }
    if v.hasattr("__float__")? && !v.hasattr("__len__")? {
        return Ok(toml::Value::Float(v.extract().map_err(|_| unsupported())?));
    }
    Err(unsupported())
}

/// Keyword arguments as knob overrides (knob name -> TOML value).
pub fn knobs_table(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<toml::Table> {
    let mut t = toml::Table::new();
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let k: String = k.extract()?;
            let value = knob_value(&k, &v)?;
            t.insert(k, value);
        }
    }
    Ok(t)
}

/// A JSON value as the equivalent Python object (`null` as `None`: the
/// engine's non-finite figures, as `stats.json` writes them).
pub fn json_to_py(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any().unbind(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any().unbind(),
            _ => n
                .as_f64()
                .unwrap_or(f64::NAN)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| json_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any().unbind()
        }
    })
}

/// Any serialisable value of the engine as plain Python objects.
pub fn to_py(py: Python<'_>, v: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let json = serde_json::to_value(v).map_err(|e| PyValueError::new_err(e.to_string()))?;
    json_to_py(py, &json)
}
