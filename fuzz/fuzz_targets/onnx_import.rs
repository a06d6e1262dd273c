//! Fuzzes the ONNX importer: any bytes must give a graph or an error, never a
//! panic; an imported graph whose inputs all have small fixed shapes must also
//! survive a float forward pass on zeros (an error is fine, a panic is not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use raella_onnx::{DType, Dim, FloatRunner, Tensor};

fuzz_target!(|data: &[u8]| {
    let Ok(g) = raella_onnx::import_bytes(data, "fuzz.onnx") else {
        return;
    };
    let mut inputs = Vec::new();
    for &id in &g.inputs {
        let info = &g.values[id];
        let Some(dims) = &info.shape else { return };
        let mut shape = Vec::new();
        for d in dims {
            match d {
                Dim::Fixed(n) if *n <= 4096 => shape.push(*n),
                _ => return,
            }
        }
        if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|n| n > 1 << 16) {
            return;
        }
        let zeros = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&shape));
        let t = match info.dtype.unwrap_or(DType::F32) {
            d if d.is_float() => Tensor::float(zeros, d),
            DType::Bool => Tensor::bool(zeros.mapv(|_| false)),
            d => Tensor::int(zeros.mapv(|_| 0), d),
        };
        inputs.push(t);
    }
    let _ = raella_onnx::run(&g, inputs, &FloatRunner, 1);
});
