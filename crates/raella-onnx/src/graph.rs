//! The imported graph: values, constants, and nodes in execution order. A node
//! is either a digital kernel or a weight layer (a matrix product with a
//! constant matrix: Conv, ConvTranspose, Gemm, MatMul) whose product the
//! caller's [`crate::LayerRunner`] computes.

use ndarray::{Array2, ArrayD};

use crate::ops::Kernel;
use crate::tensor::{DType, Tensor};

/// Index of a value (a named tensor) in [`Graph::values`].
pub type ValueId = usize;

/// A dimension as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic or unknown size (`batch`, `sequence`, `?`).
    Named(String),
}

/// A named value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    /// The name in the model.
    pub name: String,
    /// The declared element type, when the model declares it.
    pub dtype: Option<DType>,
    /// The declared shape, when the model declares it.
    pub shape: Option<Vec<Dim>>,
}

/// The geometry of a convolution (1-D or 2-D; 1-D runs as 2-D with height 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvGeom {
    /// Kernel `(h, w)`.
    pub kernel: [usize; 2],
    /// Strides `(h, w)`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Dilations `(h, w)`.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// `auto_pad` (`SAME_UPPER`, `SAME_LOWER`): padding computed from the input size.
    pub auto_pad: Option<String>,
    /// A 1-D convolution (inputs `[N, C, L]`).
    pub one_d: bool,
    /// ConvTranspose: extra output size `(h, w)` added at the end.
    pub output_padding: [usize; 2],
    /// ConvTranspose: an explicit output shape `(h, w)`.
    pub output_shape: Option<[usize; 2]>,
}

/// How a weight layer reads its input and lays out its output.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    /// `y = x W + b` over the last axis: `x [..., K]`, `W [K, N]` (MatMul, or Gemm
    /// without `transA`, `alpha` folded into the matrix).
    Right,
    /// Gemm with `transA = 1`: `x [K, M]` is read transposed.
    RightTransposedInput,
    /// `y = W x`: `x [..., K, N]`, `W [M, K]`, `y [..., M, N]` (MatMul with a
    /// constant first operand).
    Left,
    /// Convolution.
    Conv(ConvGeom),
    /// Transposed convolution: each input position's `C_out x KH x KW` outputs
    /// are a product, scattered and summed digitally (col2im).
    ConvTranspose(ConvGeom),
}

/// A layer whose matrix is constant: the products run on the caller's runner
/// (a crossbar, the 8-bit reference, or float), everything around them here.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightLayer {
    /// Node name.
    pub name: String,
    /// The op type in the model (`Conv`, `Gemm`, ...).
    pub op_type: String,
    /// How the input and output are laid out.
    pub kind: LayerKind,
    /// One matrix per group, `outputs x inputs` (rows are filters).
    pub matrices: Vec<Array2<f32>>,
    /// One bias per output (all groups), added after the product.
    pub bias: Option<Vec<f32>>,
    /// A constant added after the product and bias (Gemm's `beta * C` when it is
    /// not a per-output vector), broadcast to the output.
    pub addend: Option<ArrayD<f32>>,
}

impl WeightLayer {
    /// Groups (1 unless a grouped convolution).
    #[must_use]
    pub fn groups(&self) -> usize {
        self.matrices.len()
    }

    /// Inputs per vector (the matrix width).
    #[must_use]
    pub fn inputs(&self) -> usize {
        self.matrices.first().map_or(0, Array2::ncols)
    }

    /// Outputs of one group (the matrix height).
    #[must_use]
    pub fn outputs_per_group(&self) -> usize {
        self.matrices.first().map_or(0, Array2::nrows)
    }
}

/// What a node computes.
#[derive(Debug)]
pub enum NodeKind {
    /// A digital operator.
    Digital(Box<dyn Kernel>),
    /// A weight layer: index into [`Graph::layers`].
    Weight(usize),
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Node name (or `#index` when the model leaves it empty).
    pub name: String,
    /// The op type in the model.
    pub op_type: String,
    /// Input values (`None` for an omitted optional input); for If, Loop and
    /// Scan, followed by the outer-scope values their bodies read.
    pub inputs: Vec<Option<ValueId>>,
    /// Output values (`None` for an unused optional output).
    pub outputs: Vec<Option<ValueId>>,
    /// What it computes.
    pub kind: NodeKind,
}

/// A model ready to run.
#[derive(Debug)]
pub struct Graph {
    /// Every value.
    pub values: Vec<ValueInfo>,
    /// The constants (initializers and folded subgraphs), by value.
    pub constants: Vec<Option<Tensor>>,
    /// Graph inputs that are not constants, in the model's order.
    pub inputs: Vec<ValueId>,
    /// Graph outputs, in the model's order.
    pub outputs: Vec<ValueId>,
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
    /// The weight layers, in execution order.
    pub layers: Vec<WeightLayer>,
    /// The default-domain opset the model declares.
    pub opset: i64,
    /// Ops removed by constant folding, by type (for reports).
    pub folded: Vec<(String, usize)>,
}

impl Graph {
    /// The value of `name`.
    #[must_use]
    pub fn value(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// The name of value `id`.
    #[must_use]
    pub fn name(&self, id: ValueId) -> &str {
        &self.values[id].name
    }

    /// Counts of node op types (weight layers included), sorted by name.
    #[must_use]
    pub fn op_counts(&self) -> Vec<(String, usize)> {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for n in &self.nodes {
            *m.entry(n.op_type.clone()).or_default() += 1;
        }
        m.into_iter().collect()
    }

    /// For each value, the index of the last node that reads it.
    #[must_use]
    pub fn last_use(&self) -> Vec<Option<usize>> {
        let mut last = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                last[*v] = Some(i);
            }
        }
        last
    }
}
