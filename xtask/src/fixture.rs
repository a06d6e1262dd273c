//! Reading the committed MNIST CNN fixture (safetensors): real float32
//! weights and real 8-bit per-layer input vectors.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use ndarray::Array2;
use safetensors::{Dtype, SafeTensors};

/// One weight layer of the MNIST CNN with its real input vectors.
pub struct FixtureLayer {
    /// Layer name as in the PyTorch state dict (`features.0`, ...).
    pub name: String,
    /// Float weights, outputs x inputs (convs flattened as C*KH*KW, the im2col row order).
    pub weights: Array2<f32>,
    /// Input vectors, vectors x inputs; signed layers hold i8 values widened to i16.
    pub inputs: Inputs,
}

/// Unsigned (post-ReLU) or signed (normalised image) input vectors.
pub enum Inputs {
    /// uint8 activations.
    Unsigned(Array2<u8>),
    /// int8 activations.
    Signed(Array2<i8>),
}

/// The layers of the fixture, in network order.
pub const LAYERS: [&str; 4] = ["features.0", "features.3", "classifier.0", "classifier.2"];

/// Path of the fixture directory under the workspace root.
pub fn fixture_dir(root: &Path) -> PathBuf {
    root.join("fixtures").join("mnist_cnn")
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn tensor<'a>(
    st: &'a SafeTensors<'a>,
    path: &Path,
    name: &str,
) -> Result<safetensors::tensor::TensorView<'a>> {
    st.tensor(name)
        .with_context(|| format!("{}: tensor `{name}` missing", path.display()))
}

/// Loads all four layers.
pub fn load(root: &Path) -> Result<Vec<FixtureLayer>> {
    let dir = fixture_dir(root);
    let wpath = dir.join("mnist_cnn.safetensors");
    let xpath = dir.join("mnist_cnn_layer_inputs.safetensors");
    let wbytes = read(&wpath)?;
    let xbytes = read(&xpath)?;
    let ws = SafeTensors::deserialize(&wbytes)
        .with_context(|| format!("{}: not a valid safetensors file", wpath.display()))?;
    let xs = SafeTensors::deserialize(&xbytes)
        .with_context(|| format!("{}: not a valid safetensors file", xpath.display()))?;
    let mut layers = Vec::new();
    for name in LAYERS {
        let wname = format!("{name}.weight");
        let w = tensor(&ws, &wpath, &wname)?;
        ensure!(
            w.dtype() == Dtype::F32,
            "{}: `{wname}` has dtype {:?}, expected F32",
            wpath.display(),
            w.dtype()
        );
        let shape = w.shape().to_vec();
        ensure!(
            !shape.is_empty(),
            "{}: `{wname}` is a scalar",
            wpath.display()
        );
        let outputs = shape[0];
        let inputs: usize = shape[1..].iter().product();
        let vals: Vec<f32> = w
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        ensure!(
            vals.len() == outputs * inputs,
            "{}: `{wname}` is truncated",
            wpath.display()
        );
        if let Some((i, v)) = vals.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            bail!(
                "{}: `{wname}` element {i} is not finite ({v})",
                wpath.display()
            );
        }
        let weights = Array2::from_shape_vec((outputs, inputs), vals)?;
        let xname = format!("{name}.inputs");
        let x = tensor(&xs, &xpath, &xname)?;
        let xshape = x.shape().to_vec();
        ensure!(
            xshape.len() == 2 && xshape[1] == inputs,
            "{}: `{xname}` has shape {xshape:?}, expected [vectors, {inputs}]",
            xpath.display()
        );
        let data = x.data().to_vec();
        let inputs = match x.dtype() {
            Dtype::U8 => Inputs::Unsigned(Array2::from_shape_vec((xshape[0], xshape[1]), data)?),
            Dtype::I8 => Inputs::Signed(Array2::from_shape_vec(
                (xshape[0], xshape[1]),
                data.into_iter().map(|b| i8::from_ne_bytes([b])).collect(),
            )?),
            other => bail!(
                "{}: `{xname}` has dtype {other:?}, expected U8 or I8",
                xpath.display()
            ),
        };
        layers.push(FixtureLayer {
            name: name.to_string(),
            weights,
            inputs,
        });
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace")
            .to_path_buf()
    }

    #[test]
    fn committed_fixture_loads_with_expected_shapes() {
        let layers = load(&root()).expect("fixture loads");
        let dims: Vec<(usize, usize)> = layers.iter().map(|l| l.weights.dim()).collect();
        assert_eq!(dims, vec![(32, 9), (64, 288), (128, 3136), (10, 128)]);
        assert!(matches!(layers[0].inputs, Inputs::Signed(_)));
        assert!(matches!(layers[1].inputs, Inputs::Unsigned(_)));
    }

    #[test]
    fn truncated_fixture_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("raella-fixture-test-{}", std::process::id()));
        let fdir = fixture_dir(&dir);
        std::fs::create_dir_all(&fdir).unwrap();
        let good = std::fs::read(fixture_dir(&root()).join("mnist_cnn.safetensors")).unwrap();
        std::fs::write(fdir.join("mnist_cnn.safetensors"), &good[..good.len() / 2]).unwrap();
        std::fs::copy(
            fixture_dir(&root()).join("mnist_cnn_layer_inputs.safetensors"),
            fdir.join("mnist_cnn_layer_inputs.safetensors"),
        )
        .unwrap();
        let err = format!("{:#}", load(&dir).err().expect("truncated file rejected"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("mnist_cnn.safetensors") && err.contains("not a valid safetensors"),
            "{err}"
        );
    }
}
