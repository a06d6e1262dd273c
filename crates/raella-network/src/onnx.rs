//! ONNX import: a `ModelProto` (decoded by prost from the vendored schema) into
//! a validated, shape-inferred [`Graph`].
//!
//! Supported: Conv (groups/depthwise, strides, pads, auto_pad, dilations), Gemm,
//! MatMul (+ a bias Add), Add, Relu, Clip (ReLU6), MaxPool, AveragePool,
//! GlobalAveragePool, Flatten, Reshape, Concat, BatchNormalization (folded into
//! the preceding Conv or Gemm/MatMul), Softmax; Constant, Identity and Dropout
//! are resolved at import. Anything else is an error naming the op and node.
//! Tensors have a leading batch dimension, kept implicit in the graph.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array2, Array4};
use prost::Message;

use crate::NetworkError;
use crate::graph::{ConvSpec, Graph, LinearSpec, Node, Op, PoolSpec, Shape, TensorInfo};
use crate::proto;

/// The operators the importer accepts.
pub const SUPPORTED_OPS: &str = "Conv, Gemm, MatMul, Add, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, \
     Flatten, Reshape, Concat, BatchNormalization, Softmax, Constant, Identity, Dropout";

/// An initializer or constant.
#[derive(Debug, Clone)]
enum Const {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<i64>),
}

/// A float constant: dimensions and values.
type F32Const = (Vec<usize>, Vec<f32>);

/// Most elements one image's tensor may hold (64 MiB as f32; a batch of 64
/// images is 4 GiB). Every shape the importer infers is checked against it, so
/// a model cannot ask for petabytes through its padding or dimensions.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 24;
/// Most elements of one image's im2col matrix of one convolution group
/// (`output positions x C/groups * KH * KW`; VGG16's largest is 28.9 M).
pub const MAX_IM2COL_ELEMENTS: usize = 1 << 25;
/// Most crossbar multiply-accumulates per image (InceptionV3 has 5.7e9).
pub const MAX_MACS_PER_IMAGE: u64 = 1 << 40;
/// Most constant values the nodes of one model may read in total: as many as
/// the largest ONNX file holds (2 GiB of float32). Each node owns a copy of its
/// weights, so a model that names one large initializer in many nodes would
/// otherwise multiply it in memory.
pub const MAX_CONSTANT_USES: usize = 1 << 29;

/// The product of `dims`, or `None` on overflow.
fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn tensor_const(t: &proto::TensorProto) -> Result<Const, NetworkError> {
    let name = t.name().to_string();
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                NetworkError::BadModel(format!("initializer `{name}` has dimension {d}"))
            })
        })
        .collect::<Result<_, _>>()?;
    let n = checked_numel(&dims).ok_or_else(|| {
        NetworkError::BadModel(format!(
            "initializer `{name}` has dimensions {dims:?} whose product overflows"
        ))
    })?;
    let raw = t.raw_data();
    let elem = match t.data_type() {
        FLOAT => 4,
        INT64 => 8,
        _ => 1,
    };
    if !raw.len().is_multiple_of(elem) {
        return Err(NetworkError::BadModel(format!(
            "initializer `{name}` has {} bytes of raw data, not a multiple of its {elem}-byte elements: truncated or corrupt",
            raw.len()
        )));
    }
    match t.data_type() {
        FLOAT => {
            let data: Vec<f32> = if raw.is_empty() {
                t.float_data.clone()
            } else {
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            };
            if data.len() != n {
                return Err(NetworkError::BadModel(format!(
                    "initializer `{name}` has {} values for dimensions {dims:?} ({n}): truncated or corrupt",
                    data.len()
                )));
            }
            if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(NetworkError::NonFiniteWeight { name, index, value });
            }
            Ok(Const::F32(dims, data))
        }
        INT64 => {
            let data: Vec<i64> = if raw.is_empty() {
                t.int64_data.clone()
            } else {
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect()
            };
            if data.len() != n {
                return Err(NetworkError::BadModel(format!(
                    "initializer `{name}` has {} values for dimensions {dims:?} ({n}): truncated or corrupt",
                    data.len()
                )));
            }
            Ok(Const::I64(data))
        }
        other => Err(NetworkError::BadModel(format!(
            "initializer `{name}` has data type {other}; only float32 (1) and int64 (7) are supported"
        ))),
    }
}

/// Reads an ONNX file.
///
/// # Errors
/// Unreadable file, invalid protobuf, unsupported op, or an inconsistent graph.
pub fn import_onnx_file(path: &Path) -> Result<Graph, NetworkError> {
    let bytes = crate::files::read_file(path, crate::files::FileKind::Onnx)?;
    import_onnx_bytes(&bytes, path)
}

/// Imports ONNX bytes; `path` is only used in messages (every error names it).
/// Sizes computed from the file use checked arithmetic and are bounded by
/// [`MAX_TENSOR_ELEMENTS`], [`MAX_IM2COL_ELEMENTS`], [`MAX_MACS_PER_IMAGE`] and
/// [`MAX_CONSTANT_USES`]; weights must be finite after folding.
///
/// # Errors
/// As [`import_onnx_file`].
pub fn import_onnx_bytes(bytes: &[u8], path: &Path) -> Result<Graph, NetworkError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| NetworkError::OnnxDecode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let graph = model.graph.ok_or_else(|| NetworkError::OnnxDecode {
        path: path.to_path_buf(),
        reason: "the model has no graph".into(),
    })?;
    Importer::new(&graph)
        .and_then(|imp| imp.run(&graph))
        .map_err(|e| NetworkError::Onnx {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
}

struct Importer {
    consts: HashMap<String, Const>,
    ids: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    nodes: Vec<Node>,
    producer: HashMap<usize, usize>,
    consumers: HashMap<String, usize>,
    input: usize,
    /// Constant values read by nodes so far (see [`MAX_CONSTANT_USES`]).
    constant_uses: usize,
}

fn node_err(node: &proto::NodeProto, reason: impl Into<String>) -> NetworkError {
    NetworkError::BadNode {
        node: node_name(node),
        op: node.op_type().to_string(),
        reason: reason.into(),
    }
}

fn node_name(node: &proto::NodeProto) -> String {
    if node.name().is_empty() {
        format!(
            "<unnamed {} -> {}>",
            node.op_type(),
            node.output.first().map_or("?", String::as_str)
        )
    } else {
        node.name().to_string()
    }
}

fn attr<'a>(node: &'a proto::NodeProto, name: &str) -> Option<&'a proto::AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn attr_int(node: &proto::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i())
}

fn attr_float(node: &proto::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f())
}

fn attr_ints(node: &proto::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_str(node: &proto::NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(a.s()).into_owned())
}

/// A window attribute's values (kernel, strides, dilations, pads) as sizes:
/// non-negative and at most [`MAX_TENSOR_ELEMENTS`] (no image side is longer),
/// so no window arithmetic can overflow.
fn usizes(node: &proto::NodeProto, name: &str, v: &[i64]) -> Result<Vec<usize>, NetworkError> {
    v.iter()
        .map(|&x| {
            usize::try_from(x)
                .ok()
                .filter(|&u| u <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| {
                    node_err(
                        node,
                        format!(
                            "attribute `{name}` has value {x}, outside 0..={MAX_TENSOR_ELEMENTS}"
                        ),
                    )
                })
        })
        .collect()
}

/// Reads a 2-D window attribute (`kernel_shape`, `strides`, `dilations`), default `d`.
fn pair(node: &proto::NodeProto, name: &str, d: usize) -> Result<[usize; 2], NetworkError> {
    match attr_ints(node, name) {
        None => Ok([d, d]),
        Some(v) if v.len() == 2 => {
            let u = usizes(node, name, &v)?;
            if u.contains(&0) {
                return Err(node_err(
                    node,
                    format!("attribute `{name}` = {v:?} contains 0"),
                ));
            }
            Ok([u[0], u[1]])
        }
        Some(v) => Err(node_err(
            node,
            format!("attribute `{name}` = {v:?}: only 2-D windows are supported"),
        )),
    }
}

/// Padding `[top, left, bottom, right]` from `pads`/`auto_pad`.
fn pads(
    node: &proto::NodeProto,
    (h, w): (usize, usize),
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<[usize; 4], NetworkError> {
    let auto = attr_str(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    match auto.as_str() {
        "NOTSET" => match attr_ints(node, "pads") {
            None => Ok([0; 4]),
            Some(v) if v.len() == 4 => {
                let u = usizes(node, "pads", &v)?;
                Ok([u[0], u[1], u[2], u[3]])
            }
            Some(v) => Err(node_err(
                node,
                format!("attribute `pads` = {v:?}: expected 4 values"),
            )),
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let total = |n: usize, k: usize, s: usize, d: usize| {
                let out = n.div_ceil(s);
                (out.saturating_sub(1))
                    .checked_mul(s)?
                    .checked_add(k.checked_sub(1)?.checked_mul(d)?)?
                    .checked_add(1)
                    .map(|e| e.saturating_sub(n))
            };
            let overflow = || node_err(node, "the SAME padding overflows");
            let (th, tw) = (
                total(h, kernel[0], stride[0], dilation[0]).ok_or_else(overflow)?,
                total(w, kernel[1], stride[1], dilation[1]).ok_or_else(overflow)?,
            );
            let split = |t: usize| {
                if auto == "SAME_UPPER" {
                    (t / 2, t - t / 2)
                } else {
                    (t - t / 2, t / 2)
                }
            };
            let ((t, b), (l, r)) = (split(th), split(tw));
            Ok([t, l, b, r])
        }
        other => Err(node_err(
            node,
            format!("attribute `auto_pad` = `{other}` is not a valid value"),
        )),
    }
}

/// An ONNX axis (counting the batch; negative from the end) of a tensor with
/// `rank` per-image dimensions, as a per-image axis; the batch axis is an error.
fn per_image_axis(node: &proto::NodeProto, axis: i64, rank: usize) -> Result<usize, NetworkError> {
    let full = i64::try_from(rank).unwrap_or(0) + 1;
    let a = if axis < 0 { axis + full } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| (1..=rank).contains(&a))
        .map(|a| a - 1)
        .ok_or_else(|| {
            node_err(
                node,
                format!("axis {axis} must be a non-batch axis of a rank-{full} tensor"),
            )
        })
}

fn value_shape(v: &proto::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    let t = v.r#type.as_ref()?;
    let proto::type_proto::Value::TensorType(tt) = t.value.as_ref()? else {
        return None;
    };
    Some(
        tt.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(*v),
                _ => None,
            })
            .collect(),
    )
}

impl Importer {
    fn new(g: &proto::GraphProto) -> Result<Self, NetworkError> {
        let mut consts = HashMap::new();
        for t in &g.initializer {
            if consts
                .insert(t.name().to_string(), tensor_const(t)?)
                .is_some()
            {
                return Err(NetworkError::BadModel(format!(
                    "two initializers are named `{}`",
                    t.name()
                )));
            }
        }
        let inputs: Vec<&proto::ValueInfoProto> = g
            .input
            .iter()
            .filter(|v| !consts.contains_key(v.name()))
            .collect();
        let [inp] = inputs.as_slice() else {
            return Err(NetworkError::BadModel(format!(
                "expected exactly one graph input that is not an initializer, found {} ({})",
                inputs.len(),
                inputs
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let dims = value_shape(inp).ok_or_else(|| {
            NetworkError::BadModel(format!("graph input `{}` has no tensor shape", inp.name()))
        })?;
        if dims.len() < 2 {
            return Err(NetworkError::BadModel(format!(
                "graph input `{}` has rank {}; expected [batch, ...]",
                inp.name(),
                dims.len()
            )));
        }
        let shape: Shape = dims[1..]
            .iter()
            .map(|d| match d {
                Some(v) if *v > 0 => usize::try_from(*v).map_err(|_| NetworkError::BadModel("dimension overflow".into())),
                _ => Err(NetworkError::BadModel(format!(
                    "graph input `{}` has a non-batch dimension that is not a fixed positive size: {dims:?}",
                    inp.name()
                ))),
            })
            .collect::<Result<_, _>>()?;
        let mut consumers: HashMap<String, usize> = HashMap::new();
        for n in &g.node {
            for i in &n.input {
                *consumers.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &g.output {
            *consumers.entry(o.name().to_string()).or_default() += 1;
        }
        let mut imp = Self {
            consts,
            ids: HashMap::new(),
            tensors: Vec::new(),
            nodes: Vec::new(),
            producer: HashMap::new(),
            consumers,
            input: 0,
            constant_uses: 0,
        };
        if checked_numel(&shape).is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
            return Err(NetworkError::BadModel(format!(
                "graph input `{}` has shape {dims:?}: more than {MAX_TENSOR_ELEMENTS} values per image",
                inp.name()
            )));
        }
        imp.input = imp.new_tensor(inp.name(), shape);
        Ok(imp)
    }

    fn new_tensor(&mut self, name: &str, shape: Shape) -> usize {
        let id = self.tensors.len();
        self.tensors.push(TensorInfo {
            name: name.to_string(),
            shape,
        });
        self.ids.insert(name.to_string(), id);
        id
    }

    fn act(&self, node: &proto::NodeProto, k: usize) -> Result<usize, NetworkError> {
        let name = node
            .input
            .get(k)
            .ok_or_else(|| node_err(node, format!("missing input {k}")))?;
        self.ids.get(name).copied().ok_or_else(|| {
            if self.consts.contains_key(name) {
                node_err(
                    node,
                    format!("input `{name}` is a constant; a computed tensor is expected here"),
                )
            } else {
                node_err(
                    node,
                    format!("input `{name}` is not produced before this node"),
                )
            }
        })
    }

    fn constant(&self, node: &proto::NodeProto, k: usize) -> Result<Option<&Const>, NetworkError> {
        match node.input.get(k) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(n) => self.consts.get(n).map(Some).ok_or_else(|| {
                node_err(
                    node,
                    format!("input `{n}` must be an initializer or Constant"),
                )
            }),
        }
    }

    /// Counts `n` constant values read by `node` against [`MAX_CONSTANT_USES`].
    fn use_constant(&mut self, node: &proto::NodeProto, n: usize) -> Result<(), NetworkError> {
        self.constant_uses = self
            .constant_uses
            .checked_add(n)
            .filter(|&u| u <= MAX_CONSTANT_USES)
            .ok_or_else(|| {
                node_err(
                    node,
                    format!(
                        "the nodes read more than {MAX_CONSTANT_USES} constant values in total (one initializer named by many nodes?)"
                    ),
                )
            })?;
        Ok(())
    }

    fn f32_const(
        &mut self,
        node: &proto::NodeProto,
        k: usize,
    ) -> Result<Option<F32Const>, NetworkError> {
        let n = match self.constant(node, k)? {
            None => return Ok(None),
            Some(Const::F32(_, v)) => v.len(),
            Some(Const::I64(..)) => {
                return Err(node_err(node, format!("input {k} must be float32")));
            }
        };
        self.use_constant(node, n)?;
        match self.constant(node, k)? {
            Some(Const::F32(d, v)) => Ok(Some((d.clone(), v.clone()))),
            _ => Ok(None),
        }
    }

    /// Fails unless `name` is a new, non-empty tensor name (ONNX graphs are in
    /// single-assignment form; a reused name would silently rebind a tensor).
    fn check_new(&self, node: &proto::NodeProto, name: &str) -> Result<(), NetworkError> {
        if name.is_empty() {
            return Err(node_err(node, "the output name is empty"));
        }
        if self.ids.contains_key(name) || self.consts.contains_key(name) {
            return Err(node_err(
                node,
                format!(
                    "output `{name}` is already defined by an earlier node, input or initializer"
                ),
            ));
        }
        Ok(())
    }

    fn push(
        &mut self,
        node: &proto::NodeProto,
        op: Op,
        inputs: Vec<usize>,
        shape: Shape,
    ) -> Result<(), NetworkError> {
        let out = node
            .output
            .first()
            .ok_or_else(|| node_err(node, "no output"))?;
        self.check_new(node, out)?;
        if shape.contains(&0) {
            return Err(node_err(
                node,
                format!("output shape {shape:?} (batch excluded) holds no values"),
            ));
        }
        if checked_numel(&shape).is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
            return Err(node_err(
                node,
                format!(
                    "output shape {shape:?} (batch excluded) holds more than {MAX_TENSOR_ELEMENTS} values per image"
                ),
            ));
        }
        let id = self.new_tensor(out, shape);
        self.producer.insert(id, self.nodes.len());
        self.nodes.push(Node {
            name: node_name(node),
            op,
            inputs,
            output: id,
        });
        Ok(())
    }

    /// The crossbar node producing `t` (read under the name `name`), if that
    /// name is read only by the current node.
    fn foldable_producer(&self, t: usize, name: &str) -> Option<usize> {
        let p = *self.producer.get(&t)?;
        let single = self.consumers.get(name).copied().unwrap_or(0) == 1;
        (single && self.nodes[p].op.is_crossbar()).then_some(p)
    }

    fn alias(&mut self, node: &proto::NodeProto) -> Result<(), NetworkError> {
        let src = self.act(node, 0)?;
        let out = node
            .output
            .first()
            .ok_or_else(|| node_err(node, "no output"))?;
        self.check_new(node, out)?;
        self.ids.insert(out.clone(), src);
        Ok(())
    }

    fn run(mut self, g: &proto::GraphProto) -> Result<Graph, NetworkError> {
        for node in &g.node {
            self.node(node)?;
        }
        let out = g
            .output
            .first()
            .ok_or_else(|| NetworkError::BadModel("the graph has no output".into()))?;
        let output = *self.ids.get(out.name()).ok_or_else(|| {
            NetworkError::BadModel(format!("graph output `{}` is never computed", out.name()))
        })?;
        if self.nodes.is_empty() {
            return Err(NetworkError::BadModel("the graph has no nodes".into()));
        }
        for n in &self.nodes {
            let (w, b) = match &n.op {
                Op::Conv(c) => (c.weight.as_slice(), &c.bias),
                Op::Linear(l) => (l.weight.as_slice(), &l.bias),
                _ => continue,
            };
            let w = w.unwrap_or_default();
            for (what, v) in [("weight", w), ("bias", b.as_slice())] {
                if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                    return Err(NetworkError::BadNode {
                        node: n.name.clone(),
                        op: n.op.kind().to_string(),
                        reason: format!(
                            "{what} element {i} is {x} after import (folded BatchNormalization, bias Add or Gemm alpha/beta)"
                        ),
                    });
                }
            }
        }
        let graph = Graph {
            tensors: self.tensors,
            input: self.input,
            output,
            nodes: self.nodes,
        };
        let macs = graph.macs_per_image();
        if macs > MAX_MACS_PER_IMAGE {
            return Err(NetworkError::BadModel(format!(
                "{macs} crossbar multiply-accumulates per image, more than the limit of {MAX_MACS_PER_IMAGE}"
            )));
        }
        Ok(graph)
    }

    #[allow(clippy::too_many_lines)]
    fn node(&mut self, node: &proto::NodeProto) -> Result<(), NetworkError> {
        let op = node.op_type();
        match op {
            "Identity" | "Dropout" => self.alias(node),
            "Constant" => {
                let a = attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| {
                        node_err(
                            node,
                            "only Constant with a tensor `value` attribute is supported",
                        )
                    })?;
                let c = tensor_const(a)?;
                let out = node
                    .output
                    .first()
                    .ok_or_else(|| node_err(node, "no output"))?;
                self.check_new(node, out)?;
                self.consts.insert(out.clone(), c);
                Ok(())
            }
            "Conv" => self.conv(node),
            "Gemm" => {
                if attr_int(node, "transA", 0) != 0 {
                    return Err(node_err(node, "transA = 1 is not supported"));
                }
                let a = self.act(node, 0)?;
                let (bd, b) = self
                    .f32_const(node, 1)?
                    .ok_or_else(|| node_err(node, "B must be an initializer"))?;
                let [k, n] = bd[..] else {
                    return Err(node_err(node, format!("B has shape {bd:?}; expected 2-D")));
                };
                let alpha = attr_float(node, "alpha", 1.0);
                let beta = attr_float(node, "beta", 1.0);
                let bm = Array2::from_shape_vec((k, n), b).expect("length checked");
                let weight = if attr_int(node, "transB", 0) != 0 {
                    bm
                } else {
                    bm.t().to_owned()
                } * alpha;
                let (outs, ins) = weight.dim();
                self.check_features(node, a, ins)?;
                let bias = match self.f32_const(node, 2)? {
                    None => vec![0.0; outs],
                    Some((_, c)) if c.len() == outs => c.iter().map(|v| v * beta).collect(),
                    Some((_, c)) if c.len() == 1 => vec![c[0] * beta; outs],
                    Some((d, _)) => {
                        return Err(node_err(
                            node,
                            format!("C has shape {d:?}; expected [{outs}] or a scalar"),
                        ));
                    }
                };
                self.push(
                    node,
                    Op::Linear(LinearSpec { weight, bias }),
                    vec![a],
                    vec![outs],
                )
            }
            "MatMul" => {
                let a = self.act(node, 0)?;
                let (bd, b) = self
                    .f32_const(node, 1)?
                    .ok_or_else(|| node_err(node, "the second input must be an initializer"))?;
                let [k, n] = bd[..] else {
                    return Err(node_err(node, format!("B has shape {bd:?}; expected 2-D")));
                };
                self.check_features(node, a, k)?;
                let weight = Array2::from_shape_vec((k, n), b)
                    .expect("length checked")
                    .t()
                    .to_owned();
                self.push(
                    node,
                    Op::Linear(LinearSpec {
                        weight,
                        bias: vec![0.0; n],
                    }),
                    vec![a],
                    vec![n],
                )
            }
            "Add" => {
                let consts = (
                    self.constant(node, 0).ok().flatten().is_some(),
                    self.constant(node, 1).ok().flatten().is_some(),
                );
                match consts {
                    (false, false) => {
                        let (a, b) = (self.act(node, 0)?, self.act(node, 1)?);
                        if self.tensors[a].shape != self.tensors[b].shape {
                            return Err(node_err(
                                node,
                                format!(
                                    "operand shapes {:?} and {:?} differ; broadcasting Add is only supported as a bias",
                                    self.tensors[a].shape, self.tensors[b].shape
                                ),
                            ));
                        }
                        let s = self.tensors[a].shape.clone();
                        self.push(node, Op::Add, vec![a, b], s)
                    }
                    (true, true) => Err(node_err(node, "Add of two constants is not supported")),
                    (c0, _) => {
                        let (ai, ci) = if c0 { (1, 0) } else { (0, 1) };
                        let a = self.act(node, ai)?;
                        let (_, c) = self
                            .f32_const(node, ci)?
                            .ok_or_else(|| node_err(node, "the constant operand is missing"))?;
                        self.fold_bias(node, a, &node.input[ai], &c)
                    }
                }
            }
            "Relu" => self.unary(node, Op::Relu),
            "Clip" => {
                let mut min = attr_float(node, "min", f32::NEG_INFINITY);
                let mut max = attr_float(node, "max", f32::INFINITY);
                if let Some((_, v)) = self.f32_const(node, 1)? {
                    min = *v.first().ok_or_else(|| node_err(node, "empty min"))?;
                }
                if let Some((_, v)) = self.f32_const(node, 2)? {
                    max = *v.first().ok_or_else(|| node_err(node, "empty max"))?;
                }
                if min.is_nan() || max.is_nan() || min > max {
                    return Err(node_err(
                        node,
                        format!("min {min} and max {max} are not an interval"),
                    ));
                }
                self.unary(node, Op::Clip { min, max })
            }
            "MaxPool" | "AveragePool" => {
                let a = self.act(node, 0)?;
                let [c, h, w] = self.chw(node, a)?;
                let kernel = pair(node, "kernel_shape", 0)?;
                if attr_ints(node, "kernel_shape").is_none() {
                    return Err(node_err(node, "attribute `kernel_shape` is required"));
                }
                let stride = pair(node, "strides", 1)?;
                let dilation = pair(node, "dilations", 1)?;
                if op == "AveragePool" && dilation != [1, 1] {
                    return Err(node_err(node, "dilated AveragePool is not supported"));
                }
                if attr_int(node, "storage_order", 0) != 0 {
                    return Err(node_err(node, "storage_order = 1 is not supported"));
                }
                if node.output.len() > 1 {
                    return Err(node_err(node, "the Indices output is not supported"));
                }
                let spec = PoolSpec {
                    kernel,
                    stride,
                    pads: pads(node, (h, w), kernel, stride, dilation)?,
                    dilation,
                    ceil_mode: attr_int(node, "ceil_mode", 0) != 0,
                    count_include_pad: attr_int(node, "count_include_pad", 0) != 0,
                };
                let (oh, ow) = spec.out_hw(h, w).ok_or_else(|| {
                    node_err(
                        node,
                        format!(
                            "window {kernel:?} (dilations {dilation:?}) does not fit the input {h}x{w} padded by {:?}",
                            spec.pads
                        ),
                    )
                })?;
                if checked_numel(&[c, oh, ow, kernel[0], kernel[1]])
                    .is_none_or(|n| n > MAX_IM2COL_ELEMENTS)
                {
                    return Err(node_err(
                        node,
                        format!(
                            "{c}x{oh}x{ow} windows of {}x{} values: more than {MAX_IM2COL_ELEMENTS} reads per image",
                            kernel[0], kernel[1]
                        ),
                    ));
                }
                let op = if op == "MaxPool" {
                    Op::MaxPool(spec)
                } else {
                    Op::AvgPool(spec)
                };
                self.push(node, op, vec![a], vec![c, oh, ow])
            }
            "GlobalAveragePool" => {
                let a = self.act(node, 0)?;
                let [c, _, _] = self.chw(node, a)?;
                self.push(node, Op::GlobalAvgPool, vec![a], vec![c, 1, 1])
            }
            "Flatten" => {
                let a = self.act(node, 0)?;
                let axis = attr_int(node, "axis", 1);
                if axis != 1 {
                    return Err(node_err(
                        node,
                        format!("axis = {axis}: only axis 1 (keep the batch) is supported"),
                    ));
                }
                // Bounded by MAX_TENSOR_ELEMENTS when the input was pushed.
                let n = self.tensors[a].shape.iter().product();
                self.push(node, Op::Flatten, vec![a], vec![n])
            }
            "Reshape" => {
                let a = self.act(node, 0)?;
                let Some(Const::I64(target)) = self.constant(node, 1)? else {
                    return Err(node_err(
                        node,
                        "the shape input must be an int64 initializer or Constant",
                    ));
                };
                let target = target.clone();
                self.use_constant(node, target.len())?;
                let shape = self.reshape(node, a, &target)?;
                self.push(node, Op::Reshape(shape.clone()), vec![a], shape)
            }
            "Concat" => {
                let ins: Vec<usize> = (0..node.input.len())
                    .map(|k| self.act(node, k))
                    .collect::<Result<_, _>>()?;
                let Some(&in0) = ins.first() else {
                    return Err(node_err(node, "no inputs to concatenate"));
                };
                let rank = self.tensors[in0].shape.len();
                let axis = attr(node, "axis")
                    .map(proto::AttributeProto::i)
                    .ok_or_else(|| node_err(node, "attribute `axis` is required"))?;
                let ax = per_image_axis(node, axis, rank)?;
                let axis = ax + 1;
                let first = self.tensors[in0].shape.clone();
                let mut shape = first.clone();
                shape[ax] = 0;
                for &t in &ins {
                    let s = &self.tensors[t].shape;
                    if s.len() != rank
                        || s.iter().enumerate().any(|(i, &d)| i != ax && d != first[i])
                    {
                        return Err(node_err(
                            node,
                            format!(
                                "operand shapes {first:?} and {s:?} do not concatenate on axis {axis}"
                            ),
                        ));
                    }
                    shape[ax] = shape[ax]
                        .checked_add(s[ax])
                        .ok_or_else(|| node_err(node, "the concatenated size overflows"))?;
                }
                self.push(node, Op::Concat(ax), ins, shape)
            }
            "BatchNormalization" => self.batch_norm(node),
            "Softmax" => {
                let a = self.act(node, 0)?;
                let rank = self.tensors[a].shape.len();
                let ax = per_image_axis(node, attr_int(node, "axis", -1), rank)?;
                let s = self.tensors[a].shape.clone();
                self.push(node, Op::Softmax(ax), vec![a], s)
            }
            _ => Err(NetworkError::UnsupportedOp {
                op: op.to_string(),
                node: node_name(node),
                supported: SUPPORTED_OPS,
            }),
        }
    }

    fn unary(&mut self, node: &proto::NodeProto, op: Op) -> Result<(), NetworkError> {
        let a = self.act(node, 0)?;
        let s = self.tensors[a].shape.clone();
        self.push(node, op, vec![a], s)
    }

    fn chw(&self, node: &proto::NodeProto, t: usize) -> Result<[usize; 3], NetworkError> {
        match self.tensors[t].shape[..] {
            [c, h, w] => Ok([c, h, w]),
            ref s => Err(node_err(
                node,
                format!("input shape {s:?} (batch excluded): expected [C, H, W]"),
            )),
        }
    }

    fn check_features(
        &self,
        node: &proto::NodeProto,
        t: usize,
        k: usize,
    ) -> Result<(), NetworkError> {
        match self.tensors[t].shape[..] {
            [f] if f == k => Ok(()),
            ref s => Err(node_err(
                node,
                format!("input shape {s:?} (batch excluded) does not match {k} weight rows"),
            )),
        }
    }

    fn reshape(
        &self,
        node: &proto::NodeProto,
        t: usize,
        target: &[i64],
    ) -> Result<Shape, NetworkError> {
        let src = &self.tensors[t].shape;
        let n: usize = src.iter().product();
        let Some((&first, rest)) = target.split_first() else {
            return Err(node_err(node, "empty target shape"));
        };
        if first != 0 && first != -1 && first != 1 {
            return Err(node_err(
                node,
                format!("target {target:?}: the first dimension must keep the batch (0, -1 or 1)"),
            ));
        }
        let mut out: Vec<Option<usize>> = Vec::with_capacity(rest.len());
        for (i, &d) in rest.iter().enumerate() {
            out.push(match d {
                0 => Some(*src.get(i).ok_or_else(|| {
                    node_err(
                        node,
                        format!("target {target:?}: 0 copies a missing dimension"),
                    )
                })?),
                -1 => None,
                d if d > 0 => Some(usize::try_from(d).unwrap_or(0)),
                d => {
                    return Err(node_err(
                        node,
                        format!("target {target:?}: invalid dimension {d}"),
                    ));
                }
            });
        }
        if first == -1 && rest.contains(&-1) {
            return Err(node_err(
                node,
                format!("target {target:?}: more than one -1"),
            ));
        }
        let known = out
            .iter()
            .flatten()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| node_err(node, format!("target {target:?}: the product overflows")))?;
        let unknown = out.iter().filter(|d| d.is_none()).count();
        let shape: Shape = match unknown {
            0 if known == n => out.into_iter().flatten().collect(),
            1 if known > 0 && n.is_multiple_of(known) => {
                out.into_iter().map(|d| d.unwrap_or(n / known)).collect()
            }
            _ => {
                return Err(node_err(
                    node,
                    format!("cannot reshape {src:?} ({n} values per image) to {target:?}"),
                ));
            }
        };
        Ok(shape)
    }

    fn conv(&mut self, node: &proto::NodeProto) -> Result<(), NetworkError> {
        let a = self.act(node, 0)?;
        let [c, h, w] = self.chw(node, a)?;
        let (wd, wv) = self
            .f32_const(node, 1)?
            .ok_or_else(|| node_err(node, "W must be an initializer"))?;
        let [m, cg, kh, kw] = wd[..] else {
            return Err(node_err(
                node,
                format!("W has shape {wd:?}; only 2-D convolutions are supported"),
            ));
        };
        let groups = usize::try_from(attr_int(node, "group", 1))
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| node_err(node, "group must be >= 1"))?;
        if [m, cg, kh, kw].contains(&0) {
            return Err(node_err(
                node,
                format!("W has shape {wd:?}; every dimension must be at least 1"),
            ));
        }
        if cg.checked_mul(groups) != Some(c) || !m.is_multiple_of(groups) {
            return Err(node_err(
                node,
                format!("W {wd:?} with group {groups} does not fit {c} input channels"),
            ));
        }
        if let Some(ks) = attr_ints(node, "kernel_shape")
            && usizes(node, "kernel_shape", &ks)? != [kh, kw]
        {
            return Err(node_err(
                node,
                format!("kernel_shape {ks:?} disagrees with W {wd:?}"),
            ));
        }
        let stride = pair(node, "strides", 1)?;
        let dilation = pair(node, "dilations", 1)?;
        let bias = match self.f32_const(node, 2)? {
            None => vec![0.0; m],
            Some((_, b)) if b.len() == m => b,
            Some((d, _)) => {
                return Err(node_err(node, format!("B has shape {d:?}; expected [{m}]")));
            }
        };
        let spec = ConvSpec {
            weight: Array4::from_shape_vec((m, cg, kh, kw), wv).expect("length checked"),
            bias,
            stride,
            pads: pads(node, (h, w), [kh, kw], stride, dilation)?,
            dilation,
            groups,
        };
        let (oh, ow) = spec.out_hw(h, w).ok_or_else(|| {
            node_err(
                node,
                format!(
                    "kernel {kh}x{kw} (dilations {dilation:?}) does not fit the input {h}x{w} padded by {:?}",
                    spec.pads
                ),
            )
        })?;
        if checked_numel(&[oh, ow, cg, kh, kw]).is_none_or(|n| n > MAX_IM2COL_ELEMENTS) {
            return Err(node_err(
                node,
                format!(
                    "{oh}x{ow} output positions of {cg}x{kh}x{kw} inputs each: an im2col matrix of more than {MAX_IM2COL_ELEMENTS} values per image"
                ),
            ));
        }
        self.push(node, Op::Conv(spec), vec![a], vec![m, oh, ow])
    }

    /// `crossbar output + constant`: folded into the bias.
    fn fold_bias(
        &mut self,
        node: &proto::NodeProto,
        a: usize,
        name: &str,
        c: &[f32],
    ) -> Result<(), NetworkError> {
        let p = self.foldable_producer(a, name).ok_or_else(|| {
            node_err(node, "Add with a constant operand is only supported as the bias of a Conv, Gemm or MatMul whose output it alone reads")
        })?;
        let out = node
            .output
            .first()
            .ok_or_else(|| node_err(node, "no output"))?
            .clone();
        self.check_new(node, &out)?;
        let shape = self.tensors[a].shape.clone();
        let bias = match &mut self.nodes[p].op {
            Op::Linear(l) => &mut l.bias,
            Op::Conv(cv) => &mut cv.bias,
            _ => unreachable!("foldable producers are crossbar layers"),
        };
        let chans = bias.len();
        let per_elem: usize = shape.iter().product();
        if c.len() == chans {
            for (b, v) in bias.iter_mut().zip(c) {
                *b += v;
            }
        } else if c.len() == 1 {
            for b in bias.iter_mut() {
                *b += c[0];
            }
        } else {
            return Err(node_err(
                node,
                format!(
                    "constant of {} values cannot be a per-channel bias of {chans} channels ({per_elem} values)",
                    c.len()
                ),
            ));
        }
        // The Add's output is the (updated) producer's output.
        self.ids.insert(out, a);
        Ok(())
    }

    fn batch_norm(&mut self, node: &proto::NodeProto) -> Result<(), NetworkError> {
        let a = self.act(node, 0)?;
        let mut get = |k: usize, what: &str| -> Result<Vec<f32>, NetworkError> {
            self.f32_const(node, k)?
                .map(|(_, v)| v)
                .ok_or_else(|| node_err(node, format!("{what} must be an initializer")))
        };
        let (gamma, beta, mean, var) = (
            get(1, "scale")?,
            get(2, "B")?,
            get(3, "mean")?,
            get(4, "var")?,
        );
        let eps = attr_float(node, "epsilon", 1e-5);
        if node.output.len() > 1 && node.output[1..].iter().any(|o| !o.is_empty()) {
            return Err(node_err(node, "training-mode outputs are not supported"));
        }
        let p = self.foldable_producer(a, &node.input[0]).ok_or_else(|| {
            node_err(node, "BatchNormalization must directly follow a Conv, Gemm or MatMul whose output it alone reads (it is folded into that layer)")
        })?;
        let out = node
            .output
            .first()
            .ok_or_else(|| node_err(node, "no output"))?
            .clone();
        self.check_new(node, &out)?;
        let n = gamma.len();
        if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != n) {
            return Err(node_err(node, "scale, B, mean and var differ in length"));
        }
        let factor: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        match &mut self.nodes[p].op {
            Op::Conv(c) if c.out_channels() == n => {
                for (f, mut wf) in c.weight.outer_iter_mut().enumerate() {
                    wf.mapv_inplace(|v| v * factor[f]);
                    c.bias[f] = (c.bias[f] - mean[f]) * factor[f] + beta[f];
                }
            }
            Op::Linear(l) if l.weight.nrows() == n => {
                for (f, mut wf) in l.weight.outer_iter_mut().enumerate() {
                    wf.mapv_inplace(|v| v * factor[f]);
                    l.bias[f] = (l.bias[f] - mean[f]) * factor[f] + beta[f];
                }
            }
            _ => {
                return Err(node_err(
                    node,
                    format!("{n} channels do not match the preceding layer"),
                ));
            }
        }
        self.ids.insert(out, a);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_read_by_many_nodes_are_bounded() {
        let g = proto::GraphProto {
            initializer: vec![proto::TensorProto {
                name: Some("w".into()),
                dims: vec![20],
                data_type: Some(FLOAT),
                float_data: vec![1.0; 20],
                ..Default::default()
            }],
            input: vec![proto::ValueInfoProto {
                name: Some("x".into()),
                r#type: Some(proto::TypeProto {
                    value: Some(proto::type_proto::Value::TensorType(
                        proto::type_proto::Tensor {
                            elem_type: Some(FLOAT),
                            shape: Some(proto::TensorShapeProto {
                                dim: [None, Some(20)]
                                    .iter()
                                    .map(|d| proto::tensor_shape_proto::Dimension {
                                        value: d.map(
                                            proto::tensor_shape_proto::dimension::Value::DimValue,
                                        ),
                                        ..Default::default()
                                    })
                                    .collect(),
                            }),
                        },
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut imp = Importer::new(&g).unwrap();
        let n = proto::NodeProto {
            name: Some("user".into()),
            op_type: Some("MatMul".into()),
            input: vec!["x".into(), "w".into()],
            ..Default::default()
        };
        imp.constant_uses = MAX_CONSTANT_USES - 20;
        assert!(imp.f32_const(&n, 1).unwrap().is_some());
        let e = imp.f32_const(&n, 1).unwrap_err().to_string();
        assert!(e.contains("`user`") && e.contains("constant values"), "{e}");
    }
}
