//! Fuzzes the ONNX importer: any bytes must give a graph or an error, never a
//! panic; an imported graph must also survive a float forward pass.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = raella_network::import_onnx_bytes(data, Path::new("fuzz.onnx")) {
        let n = g.numel(g.input);
        if n <= 1 << 16 && g.macs_per_image() <= 1 << 24 {
            let x = ndarray::Array2::<f32>::zeros((1, n));
            let _ = raella_network::eval_float(&g, x.view());
        }
    }
});
