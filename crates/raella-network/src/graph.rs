//! The network graph: a topologically ordered list of nodes over tensors of
//! static per-image shapes (the batch dimension is implicit).
//!
//! Crossbar layers are [`Op::Conv`] and [`Op::Linear`]; everything else is
//! digital. Batch tensors are `Array2<f32>` of shape `(batch, product(shape))`,
//! each row one image in C-major (NCHW without N) order.

use ndarray::{Array2, Array4};

/// Per-image tensor shape, batch excluded (`[C, H, W]` or `[F]`).
pub type Shape = Vec<usize>;

/// A 2-D convolution (cross-correlation, as ONNX and PyTorch define it).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    /// Weights `(M, C / groups, KH, KW)`.
    pub weight: Array4<f32>,
    /// One bias per output channel.
    pub bias: Vec<f32>,
    /// Strides `(h, w)`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Dilations `(h, w)`.
    pub dilation: [usize; 2],
    /// Groups (`C` for depthwise).
    pub groups: usize,
}

impl ConvSpec {
    /// Output channels.
    #[must_use]
    pub fn out_channels(&self) -> usize {
        self.weight.dim().0
    }

    /// Input channels.
    #[must_use]
    pub fn in_channels(&self) -> usize {
        self.weight.dim().1 * self.groups
    }

    /// Kernel `(KH, KW)`.
    #[must_use]
    pub fn kernel(&self) -> (usize, usize) {
        (self.weight.dim().2, self.weight.dim().3)
    }

    /// Output spatial size for an `h x w` input, or `None` if the kernel does
    /// not fit (or a size overflows; the importer rejects both).
    #[must_use]
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (kh, kw) = self.kernel();
        let dim = |n: usize, k: usize, d: usize, p0: usize, p1: usize, s: usize| {
            let e = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
            let p = n.checked_add(p0)?.checked_add(p1)?;
            Some(p.checked_sub(e)?.checked_div(s)? + 1)
        };
        Some((
            dim(
                h,
                kh,
                self.dilation[0],
                self.pads[0],
                self.pads[2],
                self.stride[0],
            )?,
            dim(
                w,
                kw,
                self.dilation[1],
                self.pads[1],
                self.pads[3],
                self.stride[1],
            )?,
        ))
    }

    /// The weight matrix of group `g`: `(M / groups) x (C / groups * KH * KW)`,
    /// rows in im2col order `(c, kh, kw)`.
    #[must_use]
    pub fn group_matrix(&self, g: usize) -> Array2<f32> {
        let (m, cg, kh, kw) = self.weight.dim();
        let mg = m / self.groups;
        let w = self
            .weight
            .slice(ndarray::s![g * mg..(g + 1) * mg, .., .., ..]);
        w.to_shape((mg, cg * kh * kw))
            .expect("contiguous")
            .to_owned()
    }
}

/// A fully connected layer `y = W x + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSpec {
    /// Weights `(outputs, inputs)`.
    pub weight: Array2<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
}

/// A pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    /// Window `(h, w)`.
    pub kernel: [usize; 2],
    /// Strides `(h, w)`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Dilations `(h, w)` (max pooling only).
    pub dilation: [usize; 2],
    /// Output size rounds up instead of down.
    pub ceil_mode: bool,
    /// Average pooling divides by the full window, padding included.
    pub count_include_pad: bool,
}

impl PoolSpec {
    /// Output spatial size for an `h x w` input.
    #[must_use]
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let dim = |n: usize, k: usize, s: usize, p0: usize, p1: usize, d: usize| -> Option<usize> {
            let e = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
            let padded = n.checked_add(p0)?.checked_add(p1)?;
            let span = padded.checked_sub(e)?;
            if s == 0 {
                return None;
            }
            let mut o = if self.ceil_mode {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            };
            // ONNX/PyTorch: the last window must start inside the input or left
            // padding (a start past usize::MAX is past it too).
            if self.ceil_mode && (o - 1).checked_mul(s).is_none_or(|st| st >= n + p0) {
                o -= 1;
            }
            Some(o)
        };
        Some((
            dim(
                h,
                self.kernel[0],
                self.stride[0],
                self.pads[0],
                self.pads[2],
                self.dilation[0],
            )?,
            dim(
                w,
                self.kernel[1],
                self.stride[1],
                self.pads[1],
                self.pads[3],
                self.dilation[1],
            )?,
        ))
    }
}

/// A graph operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Convolution (crossbar layer; BatchNormalization already folded in).
    Conv(ConvSpec),
    /// Fully connected (crossbar layer; from Gemm or MatMul [+ Add]).
    Linear(LinearSpec),
    /// Element-wise sum of two tensors of the same shape.
    Add,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (ReLU6 is `Clip(0, 6)`).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// Max pooling.
    MaxPool(PoolSpec),
    /// Average pooling.
    AvgPool(PoolSpec),
    /// Mean over the spatial dimensions, keeping `[C, 1, 1]`.
    GlobalAvgPool,
    /// To `[product(shape)]`.
    Flatten,
    /// To the given per-image shape (same element count, same order).
    Reshape(Shape),
    /// Concatenation along a per-image axis (0 = channels).
    Concat(usize),
    /// Softmax along a per-image axis.
    Softmax(usize),
}

impl Op {
    /// Short name, as in reports.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conv(_) => "Conv",
            Self::Linear(_) => "Linear",
            Self::Add => "Add",
            Self::Relu => "Relu",
            Self::Clip { .. } => "Clip",
            Self::MaxPool(_) => "MaxPool",
            Self::AvgPool(_) => "AveragePool",
            Self::GlobalAvgPool => "GlobalAveragePool",
            Self::Flatten => "Flatten",
            Self::Reshape(_) => "Reshape",
            Self::Concat(_) => "Concat",
            Self::Softmax(_) => "Softmax",
        }
    }

    /// True for layers that run on crossbars.
    #[must_use]
    pub fn is_crossbar(&self) -> bool {
        matches!(self, Self::Conv(_) | Self::Linear(_))
    }
}

/// One operation: reads tensors, writes one.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name (from the model, or generated).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Input tensor ids.
    pub inputs: Vec<usize>,
    /// Output tensor id.
    pub output: usize,
}

/// A tensor's name and per-image shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name in the model.
    pub name: String,
    /// Per-image shape.
    pub shape: Shape,
}

/// A validated, shape-inferred graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// All tensors; ids index this.
    pub tensors: Vec<TensorInfo>,
    /// The graph input tensor.
    pub input: usize,
    /// The graph output tensor.
    pub output: usize,
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Elements per image of a tensor.
    #[must_use]
    pub fn numel(&self, tensor: usize) -> usize {
        self.tensors[tensor].shape.iter().product()
    }

    /// Node indices of the crossbar layers, in order.
    #[must_use]
    pub fn crossbar_layers(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].op.is_crossbar())
            .collect()
    }

    /// Index of the last node reading each tensor (`None` if never read).
    #[must_use]
    pub fn last_use(&self) -> Vec<Option<usize>> {
        let mut last = vec![None; self.tensors.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &t in &n.inputs {
                last[t] = Some(i);
            }
        }
        last
    }

    /// Multiply-accumulates per image of the crossbar layers.
    #[must_use]
    pub fn macs_per_image(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(c) => {
                    let out = &self.tensors[n.output].shape;
                    let (kh, kw) = c.kernel();
                    out.iter()
                        .chain(&[c.weight.dim().1, kh, kw])
                        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                        .unwrap_or(u64::MAX)
                }
                Op::Linear(l) => l.weight.len() as u64,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add)
    }
}
