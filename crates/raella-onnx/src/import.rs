//! ONNX bytes to a runnable [`Graph`]: initializers and `Constant` nodes become
//! constants, every node gets its kernel, subgraphs that depend only on
//! constants are folded, BatchNormalization and bias additions after weight
//! layers are folded into them, and the remaining Conv, ConvTranspose, Gemm and
//! MatMul nodes with a constant matrix become weight layers.

use std::collections::HashMap;

use ndarray::{Array2, ArrayD, Axis, Ix2, IxDyn};
use prost::Message;

use crate::attrs::Attrs;
use crate::graph::{Dim, Graph, LayerKind, Node, NodeKind, ValueId, ValueInfo, WeightLayer};
use crate::ops::{self, Ctx};
use crate::proto;
use crate::tensor::{DType, Tensor, checked_numel};
use crate::{OnnxError, OpError};

/// The newest default-domain opset supported (onnx 1.23's): the conformance
/// test runs every node case up to it.
pub const MAX_OPSET: i64 = 28;

/// Most nodes a model may have.
pub const MAX_NODES: usize = 1 << 20;

/// Decodes a `TensorProto` (inline data only).
///
/// # Errors
/// An unsupported type, external data, or data that does not match the shape.
#[allow(clippy::too_many_lines)]
pub fn tensor_from_proto(t: &proto::TensorProto) -> Result<Tensor, OpError> {
    let code = t.data_type();
    let dtype = DType::from_onnx(code).ok_or_else(|| {
        OpError(format!(
            "data type {} ({code}) is not supported",
            DType::onnx_name(code)
        ))
    })?;
    if t.data_location() == proto::tensor_proto::DataLocation::External {
        return Err(OpError(
            "external data is not supported: save the model with all tensors inline".into(),
        ));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| OpError(format!("dimension {d} is negative"))))
        .collect::<Result<_, _>>()?;
    let n = checked_numel(&dims)?;
    let raw = t.raw_data();
    let size = dtype.size_bytes();
    let shape = IxDyn(&dims);
    let count = |got: usize| -> Result<(), OpError> {
        if got != n {
            return Err(OpError(format!(
                "holds {got} values for dimensions {dims:?} ({n}): truncated or corrupt"
            )));
        }
        Ok(())
    };
    if !raw.is_empty() {
        if raw.len() != n.saturating_mul(size) {
            return Err(OpError(format!(
                "has {} bytes of raw data for {n} {} values ({} bytes): truncated or corrupt",
                raw.len(),
                dtype.name(),
                n.saturating_mul(size)
            )));
        }
        let b = raw.chunks_exact(size);
        return Ok(match dtype {
            DType::F32 => Tensor::f32(
                ArrayD::from_shape_vec(
                    shape,
                    b.map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                )
                .expect("shape"),
            ),
            DType::F16 => Tensor::float(
                ArrayD::from_shape_vec(
                    shape,
                    b.map(|c| half::f16::from_le_bytes(c.try_into().expect("2 bytes")).to_f32())
                        .collect(),
                )
                .expect("shape"),
                dtype,
            ),
            DType::BF16 => Tensor::float(
                ArrayD::from_shape_vec(
                    shape,
                    b.map(|c| half::bf16::from_le_bytes(c.try_into().expect("2 bytes")).to_f32())
                        .collect(),
                )
                .expect("shape"),
                dtype,
            ),
            #[allow(clippy::cast_possible_truncation)]
            DType::F64 => Tensor::float(
                ArrayD::from_shape_vec(
                    shape,
                    b.map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                        .collect(),
                )
                .expect("shape"),
                dtype,
            ),
            _ => {
                let v: Vec<i64> = b
                    .map(|c| match dtype {
                        DType::I64 => i64::from_le_bytes(c.try_into().expect("8")),
                        #[allow(clippy::cast_possible_wrap)]
                        DType::U64 => u64::from_le_bytes(c.try_into().expect("8")) as i64,
                        DType::I32 => i64::from(i32::from_le_bytes(c.try_into().expect("4"))),
                        DType::U32 => i64::from(u32::from_le_bytes(c.try_into().expect("4"))),
                        DType::I16 => i64::from(i16::from_le_bytes(c.try_into().expect("2"))),
                        DType::U16 => i64::from(u16::from_le_bytes(c.try_into().expect("2"))),
                        DType::I8 => i64::from(i8::from_le_bytes([c[0]])),
                        DType::U8 => i64::from(c[0]),
                        _ => i64::from(c[0] != 0),
                    })
                    .collect();
                Tensor::int(ArrayD::from_shape_vec(shape, v).expect("shape"), dtype)
            }
        });
    }
    Ok(match dtype {
        DType::F32 => {
            count(t.float_data.len())?;
            Tensor::f32(ArrayD::from_shape_vec(shape, t.float_data.clone()).expect("shape"))
        }
        #[allow(clippy::cast_possible_truncation)]
        DType::F64 => {
            count(t.double_data.len())?;
            Tensor::float(
                ArrayD::from_shape_vec(shape, t.double_data.iter().map(|&v| v as f32).collect())
                    .expect("shape"),
                dtype,
            )
        }
        DType::F16 | DType::BF16 => {
            count(t.int32_data.len())?;
            let v = t
                .int32_data
                .iter()
                .map(|&bits| {
                    let b = u16::try_from(bits & 0xffff).expect("16 bits");
                    if dtype == DType::F16 {
                        half::f16::from_bits(b).to_f32()
                    } else {
                        half::bf16::from_bits(b).to_f32()
                    }
                })
                .collect();
            Tensor::float(ArrayD::from_shape_vec(shape, v).expect("shape"), dtype)
        }
        DType::I64 => {
            count(t.int64_data.len())?;
            Tensor::i64(ArrayD::from_shape_vec(shape, t.int64_data.clone()).expect("shape"))
        }
        #[allow(clippy::cast_possible_wrap)]
        DType::U64 | DType::U32 => {
            count(t.uint64_data.len())?;
            Tensor::int(
                ArrayD::from_shape_vec(shape, t.uint64_data.iter().map(|&v| v as i64).collect())
                    .expect("shape"),
                dtype,
            )
        }
        _ => {
            count(t.int32_data.len())?;
            Tensor::int(
                ArrayD::from_shape_vec(shape, t.int32_data.iter().map(|&v| i64::from(v)).collect())
                    .expect("shape"),
                dtype,
            )
        }
    })
}

fn value_info(v: &proto::ValueInfoProto) -> ValueInfo {
    let mut info = ValueInfo {
        name: v.name().to_string(),
        dtype: None,
        shape: None,
    };
    if let Some(proto::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    {
        info.dtype = DType::from_onnx(t.elem_type());
        info.shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                        usize::try_from(*v).map_or_else(|_| Dim::Named("?".into()), Dim::Fixed)
                    }
                    Some(proto::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                        Dim::Named(p.clone())
                    }
                    _ => Dim::Named("?".into()),
                })
                .collect()
        });
    }
    info
}

/// The node's name for messages.
fn node_label(n: &proto::NodeProto, i: usize) -> String {
    if n.name().is_empty() {
        format!("#{i}")
    } else {
        n.name().to_string()
    }
}

struct Builder {
    values: Vec<ValueInfo>,
    ids: HashMap<String, ValueId>,
    constants: Vec<Option<Tensor>>,
}

impl Builder {
    fn id(&mut self, name: &str) -> ValueId {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.values.len();
        self.values.push(ValueInfo {
            name: name.to_string(),
            dtype: None,
            shape: None,
        });
        self.constants.push(None);
        self.ids.insert(name.to_string(), i);
        i
    }
}

/// Imports an ONNX model from its bytes. `source` names it in errors.
///
/// # Errors
/// Malformed protobuf, unsupported ops or types, inconsistent graphs.
#[allow(clippy::too_many_lines)]
pub fn import_bytes(bytes: &[u8], source: &str) -> Result<Graph, OnnxError> {
    import_inner(bytes, source).map_err(|e| match e {
        e @ OnnxError::File { .. } => e,
        other => OnnxError::File {
            path: source.to_string(),
            message: other.to_string(),
        },
    })
}

#[allow(clippy::too_many_lines)]
fn import_inner(bytes: &[u8], source: &str) -> Result<Graph, OnnxError> {
    let file_err = |message: String| OnnxError::File {
        path: source.to_string(),
        message,
    };
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| file_err(format!("not an ONNX model (protobuf decode failed: {e})")))?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| file_err("the model has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(proto::OperatorSetIdProto::version)
        .ok_or_else(|| {
            let domains: Vec<&str> = model.opset_import.iter().map(|o| o.domain()).collect();
            file_err(format!(
                "the model imports no default-domain opset, only {domains:?}: other domains are not supported"
            ))
        })?;
    if !(1..=MAX_OPSET).contains(&opset) {
        return Err(file_err(format!(
            "opset {opset} is not supported (1 to {MAX_OPSET} are)"
        )));
    }
    if g.node.len() > MAX_NODES {
        return Err(file_err(format!(
            "{} nodes (at most {MAX_NODES})",
            g.node.len()
        )));
    }
    build_graph(g, opset, &[])
}

/// The names a graph reads from its enclosing scopes: inputs of its nodes (and
/// of theirs subgraphs', recursively) that it does not define itself, in order
/// of first use.
#[must_use]
pub fn outer_names(g: &proto::GraphProto) -> Vec<String> {
    let mut defined: std::collections::HashSet<&str> = g
        .input
        .iter()
        .map(proto::ValueInfoProto::name)
        .chain(g.initializer.iter().map(proto::TensorProto::name))
        .collect();
    let mut free: Vec<String> = Vec::new();
    let mut add = |name: &str, defined: &std::collections::HashSet<&str>| {
        if !name.is_empty() && !defined.contains(name) && !free.iter().any(|f| f == name) {
            free.push(name.to_string());
        }
    };
    for n in &g.node {
        for i in &n.input {
            add(i, &defined);
        }
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                for f in outer_names(sub) {
                    add(&f, &defined);
                }
            }
        }
        for o in &n.output {
            defined.insert(o);
        }
    }
    // A body may return an outer value as it is.
    for o in &g.output {
        add(o.name(), &defined);
    }
    free
}

/// Builds the graph `g`; `outer` names values of enclosing graphs it reads
/// (a control-flow body's): they become its last inputs.
fn build_graph(g: &proto::GraphProto, opset: i64, outer: &[String]) -> Result<Graph, OnnxError> {
    let mut b = Builder {
        values: Vec::new(),
        ids: HashMap::new(),
        constants: Vec::new(),
    };
    for init in &g.initializer {
        let name = init.name();
        if b.ids.contains_key(name) {
            return Err(OnnxError::Tensor {
                name: name.to_string(),
                message: "defined twice".into(),
            });
        }
        let t = tensor_from_proto(init).map_err(|e| OnnxError::Tensor {
            name: name.to_string(),
            message: e.0,
        })?;
        let id = b.id(name);
        b.constants[id] = Some(t);
    }
    let mut inputs = Vec::new();
    for v in &g.input {
        let id = b.id(v.name());
        let info = value_info(v);
        b.values[id].dtype = info.dtype;
        b.values[id].shape = info.shape;
        if b.constants[id].is_none() {
            inputs.push(id);
        }
    }
    for v in g.value_info.iter().chain(&g.output) {
        let id = b.id(v.name());
        let info = value_info(v);
        if b.values[id].dtype.is_none() {
            b.values[id].dtype = info.dtype;
            b.values[id].shape = info.shape;
        }
    }
    for name in outer {
        if !b.ids.contains_key(name.as_str()) {
            let id = b.id(name);
            inputs.push(id);
        }
    }
    let mut produced: Vec<bool> = b.constants.iter().map(Option::is_some).collect();
    for &i in &inputs {
        produced[i] = true;
    }
    let mut nodes = Vec::with_capacity(g.node.len());
    for (i, n) in g.node.iter().enumerate() {
        let label = node_label(n, i);
        let op = n.op_type().to_string();
        let node_err = |message: String| OnnxError::Node {
            node: label.clone(),
            op: op.clone(),
            message,
        };
        if !matches!(n.domain(), "" | "ai.onnx") {
            return Err(node_err(format!(
                "domain `{}` is not supported",
                n.domain()
            )));
        }
        let mut ins: Vec<Option<ValueId>> = n
            .input
            .iter()
            .map(|s| (!s.is_empty()).then(|| b.id(s)))
            .collect();
        // Control flow: the bodies' reads of this scope become extra inputs.
        let bodies: Vec<&proto::GraphProto> = n
            .attribute
            .iter()
            .flat_map(|a| a.g.iter().chain(&a.graphs))
            .collect();
        let mut free: Vec<String> = Vec::new();
        for sub in &bodies {
            for f in outer_names(sub) {
                if !free.contains(&f) {
                    free.push(f);
                }
            }
        }
        let mut names: Vec<&str> = n.input.iter().map(String::as_str).collect();
        for f in &free {
            ins.push(Some(b.id(f)));
            names.push(f);
        }
        for (k, v) in ins.iter().enumerate() {
            if let Some(v) = v
                && !produced.get(*v).copied().unwrap_or(false)
            {
                return Err(node_err(format!(
                    "input {k} `{}` is produced by no earlier node, initializer or graph input",
                    names[k]
                )));
            }
        }
        let outs: Vec<Option<ValueId>> = n
            .output
            .iter()
            .map(|s| (!s.is_empty()).then(|| b.id(s)))
            .collect();
        produced.resize(b.values.len(), false);
        for (k, o) in outs.iter().enumerate() {
            if let Some(o) = o {
                if produced[*o] {
                    return Err(node_err(format!(
                        "output `{}` is already defined by another node or initializer",
                        n.output[k]
                    )));
                }
                produced[*o] = true;
            }
        }
        let attrs = Attrs::new(&n.attribute);
        if op == "Constant" {
            let t = constant_value(&attrs).map_err(|e| node_err(e.0))?;
            let Some(Some(o)) = outs.first() else {
                return Err(node_err("no output".into()));
            };
            b.constants[*o] = Some(t);
            continue;
        }
        let kernel = if op == "Conv" || op == "ConvTranspose" {
            ops::nn::conv_kernel(&n.attribute, op == "ConvTranspose")
        } else if !bodies.is_empty() && matches!(op.as_str(), "If" | "Loop" | "Scan") {
            let mut subs = Vec::new();
            for a in &n.attribute {
                if let Some(sub) = &a.g {
                    let reads = outer_names(sub);
                    let idx = reads
                        .iter()
                        .map(|r| free.iter().position(|f| f == r).expect("collected above"))
                        .collect();
                    let graph = build_graph(sub, opset, &reads)
                        .map_err(|e| node_err(format!("body `{}`: {e}", a.name())))?;
                    subs.push((a.name().to_string(), ops::control::Body::new(graph, idx)));
                }
            }
            ops::control::build(&op, &attrs, subs, free.len(), opset).map_err(|e| node_err(e.0))?
        } else {
            ops::build(
                &op,
                &attrs,
                Ctx {
                    opset,
                    outputs: outs.len(),
                },
            )
            .map_err(|e| node_err(e.0))?
        };
        // After the kernel, so that an unsupported op without inputs (SequenceEmpty)
        // is reported as unsupported.
        if n.input.iter().all(String::is_empty)
            && !matches!(op.as_str(), "Constant" | "RandomNormal" | "RandomUniform")
        {
            return Err(node_err("has no inputs".into()));
        }
        nodes.push((
            Node {
                name: label,
                op_type: op,
                inputs: ins,
                outputs: outs,
                kind: NodeKind::Digital(kernel),
            },
            n.attribute.clone(),
        ));
    }
    let mut outputs = Vec::new();
    for v in &g.output {
        let id = *b.ids.get(v.name()).expect("registered");
        if !produced.get(id).copied().unwrap_or(false) {
            return Err(OnnxError::Model(format!(
                "graph output `{}` is never computed",
                v.name()
            )));
        }
        outputs.push(id);
    }
    if outputs.is_empty() {
        return Err(OnnxError::Model("the graph has no outputs".into()));
    }
    let mut graph = Graph {
        values: b.values,
        constants: b.constants,
        inputs,
        outputs,
        nodes: Vec::new(),
        layers: Vec::new(),
        opset,
        folded: Vec::new(),
    };
    fold_constants(&mut graph, nodes)?;
    fold_into_layers(&mut graph)?;
    Ok(graph)
}

fn constant_value(a: &Attrs<'_>) -> Result<Tensor, OpError> {
    if let Some(t) = a.tensor("value")? {
        return Ok(t);
    }
    if let Some(v) = a.float("value_float")? {
        return Ok(Tensor::scalar_f32(v));
    }
    if let Some(v) = a.floats("value_floats")? {
        let n = v.len();
        return Ok(Tensor::f32(
            ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"),
        ));
    }
    if let Some(v) = a.int("value_int")? {
        return Ok(Tensor::i64(ArrayD::from_elem(IxDyn(&[]), v)));
    }
    if let Some(v) = a.ints("value_ints")? {
        return Ok(Tensor::i64_vec(v));
    }
    Err(OpError(format!(
        "a Constant needs `value`, `value_float(s)` or `value_int(s)` (has {:?})",
        a.names()
    )))
}

/// Runs every node whose inputs are all constants (once, at import) and keeps
/// its outputs as constants; the rest become the graph's nodes. Then weight
/// layers are recognised: Conv / ConvTranspose / Gemm / MatMul with a
/// constant matrix.
fn fold_constants(
    g: &mut Graph,
    nodes: Vec<(Node, Vec<proto::AttributeProto>)>,
) -> Result<(), OnnxError> {
    let mut folded: std::collections::BTreeMap<String, usize> = Default::default();
    for (node, attrs) in nodes {
        let all_const = node
            .inputs
            .iter()
            .flatten()
            .all(|&v| g.constants[v].is_some());
        let NodeKind::Digital(kernel) = &node.kind else {
            unreachable!("weight layers are made below");
        };
        if all_const && kernel.deterministic() && node.inputs.iter().flatten().next().is_some() {
            let ins: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|v| v.and_then(|v| g.constants[v].as_ref()))
                .collect();
            let outs = kernel.eval(&ins).map_err(|e| OnnxError::Node {
                node: node.name.clone(),
                op: node.op_type.clone(),
                message: format!("while folding constants: {}", e.0),
            })?;
            for (o, t) in node.outputs.iter().zip(outs) {
                if let Some(o) = o {
                    g.constants[*o] = Some(t);
                }
            }
            *folded.entry(node.op_type.clone()).or_default() += 1;
            continue;
        }
        let layer = weight_layer(g, &node, &attrs).map_err(|e| OnnxError::Node {
            node: node.name.clone(),
            op: node.op_type.clone(),
            message: e.0,
        })?;
        match layer {
            Some(l) => {
                let idx = g.layers.len();
                g.layers.push(l);
                g.nodes.push(Node {
                    kind: NodeKind::Weight(idx),
                    ..node
                });
            }
            None => g.nodes.push(node),
        }
    }
    g.folded = folded.into_iter().collect();
    Ok(())
}

fn const_of(g: &Graph, v: Option<ValueId>) -> Option<&Tensor> {
    v.and_then(|v| g.constants[v].as_ref())
}

/// A weight layer for a node whose matrix is constant, or `None`.
fn weight_layer(
    g: &Graph,
    n: &Node,
    attrs: &[proto::AttributeProto],
) -> Result<Option<WeightLayer>, OpError> {
    let a = Attrs::new(attrs);
    let input = |i: usize| n.inputs.get(i).copied().flatten();
    let finite = |t: &Tensor, what: &str| -> Result<ArrayD<f32>, OpError> {
        let f = t.to_f32();
        if let Some((i, v)) = f.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(OpError(format!(
                "{what} value {i} is {v}: weights must be finite"
            )));
        }
        Ok(f)
    };
    match n.op_type.as_str() {
        "Conv" | "ConvTranspose" => {
            let transpose = n.op_type == "ConvTranspose";
            let (Some(w), true) = (const_of(g, input(1)), const_of(g, input(0)).is_none()) else {
                return Ok(None);
            };
            let bias = match input(2) {
                None => None,
                Some(v) => match g.constants[v].as_ref() {
                    Some(b) => Some(finite(b, "bias")?.iter().copied().collect::<Vec<f32>>()),
                    None => return Ok(None), // an activation bias: keep it digital
                },
            };
            let geom = ops::nn::conv_geom(&a, w.shape(), transpose)?;
            let wf = finite(w, "weight")?;
            let k = geom.kernel[0] * geom.kernel[1];
            let gcount = geom.groups;
            let (cg, mg) = (geom.in_channels / gcount, geom.out_channels / gcount);
            if let Some(b) = &bias
                && b.len() != geom.out_channels
            {
                return Err(OpError(format!(
                    "bias has {} values for {} output channels",
                    b.len(),
                    geom.out_channels
                )));
            }
            let matrices: Vec<Array2<f32>> = if transpose {
                // [C, M/g, k] -> per group (M/g * k) x (C/g).
                let w2 = wf
                    .into_shape_with_order((geom.in_channels, mg * k))
                    .map_err(|e| OpError(e.to_string()))?;
                (0..gcount)
                    .map(|gi| {
                        w2.slice(ndarray::s![gi * cg..(gi + 1) * cg, ..])
                            .t()
                            .to_owned()
                    })
                    .collect()
            } else {
                let w2 = wf
                    .into_shape_with_order((geom.out_channels, cg * k))
                    .map_err(|e| OpError(e.to_string()))?;
                (0..gcount)
                    .map(|gi| w2.slice(ndarray::s![gi * mg..(gi + 1) * mg, ..]).to_owned())
                    .collect()
            };
            Ok(Some(WeightLayer {
                name: n.name.clone(),
                op_type: n.op_type.clone(),
                kind: if transpose {
                    LayerKind::ConvTranspose(geom)
                } else {
                    LayerKind::Conv(geom)
                },
                matrices,
                bias,
                addend: None,
            }))
        }
        "MatMul" => {
            let (x, w) = (const_of(g, input(0)), const_of(g, input(1)));
            match (x, w) {
                (None, Some(w)) if w.shape().len() == 2 => {
                    let wf = finite(w, "weight")?
                        .into_dimensionality::<Ix2>()
                        .expect("2-D");
                    Ok(Some(WeightLayer {
                        name: n.name.clone(),
                        op_type: n.op_type.clone(),
                        kind: LayerKind::Right,
                        matrices: vec![wf.t().to_owned()],
                        bias: None,
                        addend: None,
                    }))
                }
                (Some(w), None) if w.shape().len() == 2 => {
                    let wf = finite(w, "weight")?
                        .into_dimensionality::<Ix2>()
                        .expect("2-D");
                    Ok(Some(WeightLayer {
                        name: n.name.clone(),
                        op_type: n.op_type.clone(),
                        kind: LayerKind::Left,
                        matrices: vec![wf],
                        bias: None,
                        addend: None,
                    }))
                }
                // Two activations (attention), or a batched constant: digital.
                _ => Ok(None),
            }
        }
        "Gemm" => {
            let (Some(w), None) = (const_of(g, input(1)), const_of(g, input(0))) else {
                return Ok(None);
            };
            let ga = ops::nn::gemm_attrs(&a)?;
            let wf = finite(w, "weight")?
                .into_dimensionality::<Ix2>()
                .map_err(|_| OpError(format!("Gemm's B must be 2-D, got {:?}", w.shape())))?;
            // Matrix rows are outputs: B [K, N] -> N x K (or B^T given as [N, K]).
            let m = if ga.trans_b { wf } else { wf.t().to_owned() };
            let m = m.mapv(|v| v * ga.alpha);
            let (mut bias, mut addend) = (None, None);
            if let Some(c) = input(2) {
                let Some(ct) = g.constants[c].as_ref() else {
                    return Ok(None);
                };
                let cf = finite(ct, "C")?.mapv(|v| v * ga.beta);
                let nout = m.nrows();
                if cf.len() == nout && (cf.ndim() == 1 || (cf.ndim() == 2 && cf.shape()[0] == 1)) {
                    bias = Some(cf.iter().copied().collect());
                } else if cf.len() == 1 {
                    bias = Some(vec![cf.iter().copied().next().unwrap_or(0.0); nout]);
                } else {
                    addend = Some(cf);
                }
            }
            Ok(Some(WeightLayer {
                name: n.name.clone(),
                op_type: n.op_type.clone(),
                kind: if ga.trans_a {
                    LayerKind::RightTransposedInput
                } else {
                    LayerKind::Right
                },
                matrices: vec![m],
                bias,
                addend,
            }))
        }
        _ => Ok(None),
    }
}

/// Folds a `BatchNormalization` that alone reads a Conv/ConvTranspose/Gemm/
/// MatMul layer's output into that layer's matrix and bias, and a constant
/// per-output bias `Add` after a layer into its bias (the int8 practice: the
/// quantised weights then absorb the scale).
fn fold_into_layers(g: &mut Graph) -> Result<(), OnnxError> {
    loop {
        let mut readers = vec![0usize; g.values.len()];
        for n in &g.nodes {
            for v in n.inputs.iter().flatten() {
                readers[*v] += 1;
            }
        }
        for &o in &g.outputs {
            readers[o] += 1;
        }
        let mut changed = false;
        for i in 0..g.nodes.len() {
            let NodeKind::Weight(li) = g.nodes[i].kind else {
                continue;
            };
            let Some(out) = g.nodes[i].outputs.first().copied().flatten() else {
                continue;
            };
            if readers[out] != 1 {
                continue;
            }
            let Some(j) = g
                .nodes
                .iter()
                .position(|n| n.inputs.iter().flatten().any(|&v| v == out))
            else {
                continue;
            };
            let next = &g.nodes[j];
            let consts: Vec<Option<&Tensor>> =
                next.inputs.iter().map(|v| const_of(g, *v)).collect();
            let layer = &g.layers[li];
            // Where the layer's outputs sit in its output tensor: the channel axis of a
            // conv, the last axis of a right product. Left products are not folded.
            let conv_one_d = match &layer.kind {
                LayerKind::Conv(c) | LayerKind::ConvTranspose(c) => Some(c.one_d),
                _ => None,
            };
            let nout = match &layer.kind {
                LayerKind::Conv(c) | LayerKind::ConvTranspose(c) => c.out_channels,
                _ => layer.outputs_per_group() * layer.groups(),
            };
            let right = matches!(
                layer.kind,
                LayerKind::Right | LayerKind::RightTransposedInput
            );
            let fold: Option<(Vec<f32>, Vec<f32>)> = match next.op_type.as_str() {
                // BatchNormalization normalises axis 1: a conv's channels, or a Gemm's outputs.
                "BatchNormalization"
                    if next.inputs[0] == Some(out)
                        && consts.len() >= 5
                        && consts[1..5].iter().all(Option::is_some)
                        && (conv_one_d.is_some() || layer.op_type == "Gemm") =>
                {
                    let NodeKind::Digital(k) = &next.kind else {
                        unreachable!("only weight nodes are layers")
                    };
                    // BN(x) = x * s + t per channel, read off the kernel at 0 and 1.
                    let probe = |x: f32| -> Result<Vec<f32>, OpError> {
                        let xt = Tensor::f32(ArrayD::from_elem(IxDyn(&[1, nout]), x));
                        let ins: Vec<Option<&Tensor>> = std::iter::once(Some(&xt))
                            .chain(consts[1..].iter().copied())
                            .collect();
                        Ok(k.eval(&ins)?[0].to_f32().iter().copied().collect())
                    };
                    // The slope is read at a large x: at x = 1, BN(1) - BN(0) loses the
                    // slope's digits when the shift dwarfs it (a real DBNet has slopes of
                    // 3e-4 beside shifts of 0.2: 5e-5 relative error). At 2^20 the
                    // difference is exact to f32 rounding of BN(2^20) itself; a slope
                    // so large that BN(2^20) overflows is read at 1.
                    // NaN or infinite slopes at 1 go on to the error below.
                    let slope = |y0: &[f32], x: f32, finite: bool| -> Option<Vec<f32>> {
                        let y1 = probe(x).ok()?;
                        (y1.len() == nout && (!finite || y1.iter().all(|v| v.is_finite()))).then(
                            || {
                                y1.iter()
                                    .zip(y0)
                                    .map(|(a, b)| {
                                        #[allow(clippy::cast_possible_truncation)]
                                        // f64 difference of two f32 values, rounded once.
                                        let s =
                                            ((f64::from(*a) - f64::from(*b)) / f64::from(x)) as f32;
                                        s
                                    })
                                    .collect()
                            },
                        )
                    };
                    match probe(0.0) {
                        Ok(y0) if y0.len() == nout => slope(&y0, 1_048_576.0, true)
                            .or_else(|| slope(&y0, 1.0, false))
                            .map(|s| (s, y0)),
                        _ => None,
                    }
                }
                "Add" if next.inputs.len() == 2 => {
                    let other = usize::from(next.inputs[0] == Some(out));
                    match consts[other] {
                        Some(b) if bias_shape_ok(b.shape(), nout, conv_one_d, right) => {
                            Some((vec![1.0; nout], b.to_f32().iter().copied().collect()))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            let Some((scale, shift)) = fold else {
                continue;
            };
            if scale.iter().chain(&shift).any(|v| !v.is_finite()) {
                return Err(OnnxError::Node {
                    node: g.nodes[j].name.clone(),
                    op: g.nodes[j].op_type.clone(),
                    message: format!(
                        "folding {} `{}` into weight layer `{}` gives NaN or infinite weights",
                        g.nodes[j].op_type, g.nodes[j].name, g.nodes[i].name
                    ),
                });
            }
            let next_out = g.nodes[j].outputs.first().copied().flatten();
            let layer = &mut g.layers[li];
            apply_affine(layer, &scale, &shift, nout);
            // The layer now writes the folded node's output.
            g.nodes[i].outputs[0] = next_out;
            g.nodes.remove(j);
            changed = true;
            break;
        }
        if !changed {
            return Ok(());
        }
    }
}

/// A per-output bias shape: `[N]` or `[1, N]` after a right product (the last
/// axis); `[N, 1, 1]` or `[1, N, 1, 1]` after a 2-D conv (`[N, 1]`, `[1, N, 1]` 1-D).
fn bias_shape_ok(shape: &[usize], n: usize, conv_one_d: Option<bool>, right: bool) -> bool {
    let non1: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
    if non1 != [n] && !(n == 1 && non1.is_empty()) {
        return false;
    }
    match conv_one_d {
        Some(one_d) => {
            let spatial = if one_d { 1 } else { 2 };
            shape.len() > spatial
                && shape.len() <= spatial + 2
                && shape[shape.len() - 1 - spatial] == n
        }
        None => right && shape.len() <= 2 && shape.last() == Some(&n),
    }
}

/// `y' = y * scale + shift` per output, folded into the layer.
fn apply_affine(layer: &mut WeightLayer, scale: &[f32], shift: &[f32], nout: usize) {
    match &layer.kind {
        LayerKind::ConvTranspose(c) => {
            // Rows are (co, kh, kw) per group.
            let k = c.kernel[0] * c.kernel[1];
            let mg = c.out_channels / c.groups;
            for (gi, m) in layer.matrices.iter_mut().enumerate() {
                for (r, mut row) in m.axis_iter_mut(Axis(0)).enumerate() {
                    row *= scale[gi * mg + r / k];
                }
            }
        }
        _ => {
            let per = layer.outputs_per_group();
            for (gi, m) in layer.matrices.iter_mut().enumerate() {
                for (r, mut row) in m.axis_iter_mut(Axis(0)).enumerate() {
                    row *= scale[gi * per + r];
                }
            }
        }
    }
    let b = layer.bias.get_or_insert_with(|| vec![0.0; nout]);
    for ((bv, &s), &t) in b.iter_mut().zip(scale).zip(shift) {
        *bv = *bv * s + t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        op: &str,
        ins: &[&str],
        outs: &[&str],
        body: Option<proto::GraphProto>,
    ) -> proto::NodeProto {
        proto::NodeProto {
            op_type: Some(op.into()),
            input: ins.iter().map(|s| (*s).to_string()).collect(),
            output: outs.iter().map(|s| (*s).to_string()).collect(),
            attribute: body
                .map(|g| proto::AttributeProto {
                    name: Some("then_branch".into()),
                    g: Some(g),
                    r#type: Some(5),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn outer_names_see_through_nested_bodies() {
        // inner reads `a` (defined by the body) and `z` (outer); the body returns `w` (outer).
        let inner = proto::GraphProto {
            node: vec![node("Add", &["a", "z"], &["b"], None)],
            ..Default::default()
        };
        let body = proto::GraphProto {
            node: vec![
                node("Neg", &["x"], &["a"], None),
                node("If", &["c"], &["d"], Some(inner)),
            ],
            output: vec![proto::ValueInfoProto {
                name: Some("w".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(outer_names(&body), vec!["x", "c", "z", "w"]);
    }
}
