//! Runs a model in float32 on `.npy` inputs and writes the outputs as `.npy`:
//! `cargo run --release -p raella-onnx --example float_run -- MODEL.onnx OUTDIR IN0.npy [IN1.npy ...]`
//! (inputs in the model's input order; float32, int64 or int32 .npy files).

use ndarray::ArrayD;
use raella_onnx::{DType, FloatRunner, Tensor, import_file, run};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, out) = (&args[0], std::path::Path::new(&args[1]));
    let t0 = std::time::Instant::now();
    let g = import_file(std::path::Path::new(model))?;
    eprintln!(
        "imported in {:.2} s: {} nodes, {} weight layers, folded {:?}",
        t0.elapsed().as_secs_f64(),
        g.nodes.len(),
        g.layers.len(),
        g.folded
    );
    let mut inputs = Vec::new();
    for (k, p) in args[2..].iter().enumerate() {
        let want = g.values[g.inputs[k]].dtype.unwrap_or(DType::F32);
        let t = if want.is_float() {
            let a: ArrayD<f32> = ndarray_npy::read_npy(p)?;
            Tensor::float(a, want)
        } else {
            let a: ArrayD<i64> = ndarray_npy::read_npy(p)?;
            Tensor::int(a, want)
        };
        inputs.push(t);
    }
    let t0 = std::time::Instant::now();
    let ys = run(&g, inputs, &FloatRunner, 0)?;
    eprintln!("ran in {:.3} s", t0.elapsed().as_secs_f64());
    std::fs::create_dir_all(out)?;
    for (i, y) in ys.iter().enumerate() {
        ndarray_npy::write_npy(out.join(format!("output_{i}.npy")), &y.to_f32())?;
    }
    Ok(())
}
