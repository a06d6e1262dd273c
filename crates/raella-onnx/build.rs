//! Compiles the vendored ONNX schema (`proto/onnx.proto`) into Rust types with
//! prost, using protox (a pure-Rust protobuf compiler, so no `protoc` is needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
