//! The ONNX importer (accepted ops, BatchNorm folding, bias folding, rejected
//! ops, corrupt files), the quantiser and the references, on small models
//! built here from the protobuf types.

#![allow(clippy::cast_precision_loss)]

use std::path::Path;

use ndarray::{Array2, Array4};
use prost::Message;
use raella_compiler::{CompileConfig, Slicing};
use raella_device::Adc;
use raella_network::graph::{ConvSpec, Op};
use raella_network::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use raella_network::{
    ArchConfig, CrossbarBackend, ExactBackend, NetworkError, QuantModel, eval_float,
    eval_float_features, eval_quant, import_onnx_bytes, mean_row_cosine, ops,
};
use raella_runtime::{InputMode, RunConfig};

fn t32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(1),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn t64(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![i64::try_from(data.len()).unwrap()],
        data_type: Some(7),
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(2),
        i: Some(v),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(1),
        f: Some(v),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| (*s).to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut dim = vec![tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam("N".into())),
        ..Default::default()
    }];
    dim.extend(dims.iter().map(|&d| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
        ..Default::default()
    }));
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(input: &[i64], nodes: Vec<NodeProto>, inits: Vec<TensorProto>, output: &str) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(GraphProto {
            name: Some("test".into()),
            node: nodes,
            initializer: inits,
            input: vec![value("x", input)],
            output: vec![ValueInfoProto {
                name: Some(output.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn seq(n: usize, k: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * k) % 17) as f32 - 8.0) * scale)
        .collect()
}

/// A CNN with most supported ops: Conv(groups 2, stride 2, pad 1) + BN + Relu,
/// depthwise Conv + Clip(0,6), MaxPool, AveragePool, Concat, GlobalAveragePool,
/// Flatten, Gemm, MatMul + Add bias, Add, Reshape, Softmax.
fn cnn() -> Vec<u8> {
    let nodes = vec![
        node(
            "Conv",
            "conv1",
            &["x", "w1", "b1"],
            "c1",
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                int("group", 2),
            ],
        ),
        node(
            "BatchNormalization",
            "bn1",
            &["c1", "g", "be", "mu", "var"],
            "n1",
            vec![float("epsilon", 1e-5)],
        ),
        node("Relu", "relu1", &["n1"], "r1", vec![]),
        node(
            "Conv",
            "dw",
            &["r1", "w2"],
            "c2",
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("pads", &[1, 1, 1, 1]),
                int("group", 4),
            ],
        ),
        node("Clip", "relu6", &["c2", "lo", "hi"], "r2", vec![]),
        node(
            "MaxPool",
            "mp",
            &["r2"],
            "p1",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        node(
            "AveragePool",
            "ap",
            &["r2"],
            "p2",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        node("Concat", "cat", &["p1", "p2"], "cc", vec![int("axis", 1)]),
        node("GlobalAveragePool", "gap", &["cc"], "gp", vec![]),
        node("Flatten", "flat", &["gp"], "f", vec![int("axis", 1)]),
        node(
            "Gemm",
            "fc1",
            &["f", "w3", "b3"],
            "h",
            vec![int("transB", 1)],
        ),
        node("MatMul", "fc2", &["h", "w4"], "m", vec![]),
        node("Add", "bias2", &["m", "b4"], "mb", vec![]),
        node("Add", "res", &["mb", "h"], "s", vec![]),
        node("Reshape", "rs", &["s", "shape"], "z", vec![]),
        node("Softmax", "sm", &["z"], "y", vec![int("axis", -1)]),
    ];
    let inits = vec![
        t32("w1", &[4, 1, 3, 3], &seq(36, 5, 0.1)),
        t32("b1", &[4], &[0.1, -0.2, 0.05, 0.0]),
        t32("g", &[4], &[1.0, 0.5, 2.0, 1.5]),
        t32("be", &[4], &[0.0, 0.1, -0.1, 0.2]),
        t32("mu", &[4], &[0.1, 0.0, -0.2, 0.3]),
        t32("var", &[4], &[1.0, 0.25, 4.0, 0.5]),
        t32("w2", &[4, 1, 3, 3], &seq(36, 7, 0.08)),
        t32("lo", &[], &[0.0]),
        t32("hi", &[], &[6.0]),
        t32("w3", &[6, 8], &seq(48, 3, 0.05)),
        t32("b3", &[6], &[0.1; 6]),
        t32("w4", &[6, 6], &seq(36, 11, 0.07)),
        t32("b4", &[6], &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5]),
        t64("shape", &[0, -1]),
    ];
    model(&[2, 8, 8], nodes, inits, "y")
}

fn images(n: usize, numel: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, numel), |(i, j)| {
        (((i * 31 + j * 7) % 23) as f32 - 9.0) / 7.0
    })
}

#[test]
fn imports_every_supported_op_with_shapes() {
    let g = import_onnx_bytes(&cnn(), Path::new("cnn.onnx")).unwrap();
    let kinds: Vec<&str> = g.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(
        kinds,
        [
            "Conv",
            "Relu",
            "Conv",
            "Clip",
            "MaxPool",
            "AveragePool",
            "Concat",
            "GlobalAveragePool",
            "Flatten",
            "Linear",
            "Linear",
            "Add",
            "Reshape",
            "Softmax"
        ]
    );
    assert_eq!(g.tensors[g.output].shape, vec![6]);
    let probs = eval_float(&g, images(3, 128).view()).unwrap();
    for row in probs.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn batch_norm_is_folded_exactly() {
    let g = import_onnx_bytes(&cnn(), Path::new("cnn.onnx")).unwrap();
    let Op::Conv(folded) = &g.nodes[0].op else {
        panic!("first node is the conv")
    };
    let raw = ConvSpec {
        weight: Array4::from_shape_vec((4, 1, 3, 3), seq(36, 5, 0.1)).unwrap(),
        bias: vec![0.1, -0.2, 0.05, 0.0],
        stride: [2, 2],
        pads: [1; 4],
        dilation: [1, 1],
        groups: 2,
    };
    let x = images(2, 128);
    let a = ops::conv_f32(x.view(), (2, 8, 8), folded);
    let mut b = ops::conv_f32(x.view(), (2, 8, 8), &raw);
    let (g_, be, mu, var) = (
        [1.0f32, 0.5, 2.0, 1.5],
        [0.0f32, 0.1, -0.1, 0.2],
        [0.1f32, 0.0, -0.2, 0.3],
        [1.0f32, 0.25, 4.0, 0.5],
    );
    for mut row in b.rows_mut() {
        for (i, v) in row.iter_mut().enumerate() {
            let c = i / 16;
            *v = (*v - mu[c]) / (var[c] + 1e-5).sqrt() * g_[c] + be[c];
        }
    }
    for (p, q) in a.iter().zip(b.iter()) {
        assert!((p - q).abs() < 1e-5, "{p} vs {q}");
    }
}

#[test]
fn unsupported_op_names_op_and_node() {
    let nodes = vec![node("LSTM", "the_lstm", &["x"], "y", vec![])];
    let err = import_onnx_bytes(&model(&[4], nodes, vec![], "y"), Path::new("m.onnx")).unwrap_err();
    assert!(
        matches!(err.inner(), NetworkError::UnsupportedOp { op, node, .. } if op == "LSTM" && node == "the_lstm"),
        "{err}"
    );
    let e = err.to_string();
    assert!(
        e.contains("m.onnx") && e.contains("`LSTM`") && e.contains("`the_lstm`"),
        "{e}"
    );
}

#[test]
fn truncated_and_nan_models_are_rejected() {
    let bytes = cnn();
    let err = import_onnx_bytes(&bytes[..bytes.len() / 2], Path::new("cut.onnx")).unwrap_err();
    assert!(matches!(err, NetworkError::OnnxDecode { .. }), "{err}");
    assert!(err.to_string().contains("cut.onnx"));
    let nodes = vec![node(
        "Gemm",
        "fc",
        &["x", "w", "b"],
        "y",
        vec![int("transB", 1)],
    )];
    let inits = vec![
        t32("w", &[2, 2], &[1.0, f32::NAN, 0.0, 1.0]),
        t32("b", &[2], &[0.0, 0.0]),
    ];
    let err =
        import_onnx_bytes(&model(&[2], nodes, inits, "y"), Path::new("nan.onnx")).unwrap_err();
    assert!(
        matches!(err.inner(), NetworkError::NonFiniteWeight { name, index: 1, .. } if name == "w"),
        "{err}"
    );
}

#[test]
fn degenerate_shapes_are_errors_not_panics() {
    let nodes = vec![node("Conv", "c0", &["x", "w"], "y", vec![])];
    let err = import_onnx_bytes(
        &model(&[1, 4, 4], nodes, vec![t32("w", &[2, 1, 0, 3], &[])], "y"),
        Path::new("m.onnx"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`c0`") && err.to_string().contains("at least 1"),
        "{err}"
    );
    let nodes = vec![node("Gemm", "g0", &["x", "w"], "y", vec![int("transB", 1)])];
    // A zero-output layer is refused at import, naming the node.
    let err = import_onnx_bytes(
        &model(&[3], nodes, vec![t32("w", &[0, 3], &[])], "y"),
        Path::new("m.onnx"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("g0") && err.contains("no values"), "{err}");
}

#[test]
fn misused_supported_ops_are_named() {
    // Add with a constant that is not a bias of a crossbar layer.
    let nodes = vec![
        node("Relu", "r", &["x"], "a", vec![]),
        node("Add", "plus", &["a", "c"], "y", vec![]),
    ];
    let err = import_onnx_bytes(
        &model(&[2], nodes, vec![t32("c", &[2], &[1.0, 2.0])], "y"),
        Path::new("m.onnx"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`plus`"), "{err}");
    // BatchNormalization not after a conv.
    let nodes = vec![
        node("Relu", "r", &["x"], "a", vec![]),
        node(
            "BatchNormalization",
            "bn",
            &["a", "s", "b", "m", "v"],
            "y",
            vec![],
        ),
    ];
    let inits = ["s", "b", "m", "v"]
        .iter()
        .map(|n| t32(n, &[2], &[1.0, 1.0]))
        .collect();
    let err =
        import_onnx_bytes(&model(&[2, 1, 1], nodes, inits, "y"), Path::new("m.onnx")).unwrap_err();
    assert!(
        err.to_string().contains("`bn`") && err.to_string().contains("folded"),
        "{err}"
    );
    // Flatten on another axis.
    let nodes = vec![node("Flatten", "fl", &["x"], "y", vec![int("axis", 2)])];
    let err =
        import_onnx_bytes(&model(&[2, 3, 3], nodes, vec![], "y"), Path::new("m.onnx")).unwrap_err();
    assert!(err.to_string().contains("axis = 2"), "{err}");
}

/// The hostile models (no panic, no abort, no silent acceptance): each is an
/// error naming the file and the node or initializer.
#[test]
fn hostile_models_are_named_errors() {
    let p = Path::new("hostile.onnx");
    let check = |bytes: Vec<u8>, want: &[&str]| {
        let e = import_onnx_bytes(&bytes, p).unwrap_err().to_string();
        assert!(e.contains("hostile.onnx"), "{e}");
        for w in want {
            assert!(e.contains(w), "`{w}` missing: {e}");
        }
    };
    let gemm = |inits: Vec<TensorProto>| {
        model(
            &[2],
            vec![node("Gemm", "fc", &["x", "w"], "y", vec![int("transB", 1)])],
            inits,
            "y",
        )
    };
    // Declared dimensions whose product wraps around (2^32 x 2^32 = 0 mod 2^64).
    check(
        gemm(vec![t32("w", &[1 << 32, 1 << 32], &[])]),
        &["`w`", "overflows"],
    );
    // An input shape whose product wraps around.
    check(
        model(
            &[1 << 32, 1 << 32],
            vec![node("Relu", "r", &["x"], "y", vec![])],
            vec![],
            "y",
        ),
        &["`x`", "values per image"],
    );
    // Raw data that is not a whole number of elements.
    let mut w = t32("w", &[2, 2], &[1.0; 4]);
    w.raw_data.as_mut().unwrap().push(0);
    check(gemm(vec![w]), &["`w`", "17 bytes", "multiple"]);
    // Two initializers of one name (the second would silently win).
    check(
        gemm(vec![
            t32("w", &[2, 2], &[1.0; 4]),
            t32("w", &[2, 2], &[2.0; 4]),
        ]),
        &["two initializers", "`w`"],
    );
    // A node output that rebinds an existing tensor.
    check(
        model(
            &[2],
            vec![
                node("Relu", "r1", &["x"], "a", vec![]),
                node("Relu", "r2", &["a"], "a", vec![]),
            ],
            vec![],
            "a",
        ),
        &["`r2`", "`a`", "already defined"],
    );
    // An op with an empty input list.
    check(
        model(
            &[2],
            vec![node("Concat", "cat", &[], "y", vec![int("axis", 1)])],
            vec![],
            "y",
        ),
        &["`cat`", "no inputs"],
    );
    // Padding that asks for petabytes, and padding past any image side.
    let conv = |pads: &[i64]| {
        model(
            &[1, 4, 4],
            vec![node(
                "Conv",
                "c",
                &["x", "w"],
                "y",
                vec![ints("pads", pads)],
            )],
            vec![t32("w", &[1, 1, 1, 1], &[1.0])],
            "y",
        )
    };
    check(
        conv(&[1 << 23, 1 << 23, 1 << 23, 1 << 23]),
        &["`c`", "values per image"],
    );
    check(conv(&[i64::MAX, 0, 0, 0]), &["`c`", "`pads`", "outside"]);
    // A huge dilation or SAME padding that would overflow.
    check(
        model(
            &[1, 4, 4],
            vec![node(
                "MaxPool",
                "mp",
                &["x"],
                "y",
                vec![
                    ints("kernel_shape", &[2, 2]),
                    ints("dilations", &[1 << 40, 1]),
                    AttributeProto {
                        name: Some("auto_pad".into()),
                        r#type: Some(3),
                        s: Some(b"SAME_UPPER".to_vec()),
                        ..Default::default()
                    },
                ],
            )],
            vec![],
            "y",
        ),
        &["`mp`", "`dilations`"],
    );
    // A Clip whose bound is NaN (f32::clamp would panic at run time).
    check(
        model(
            &[2],
            vec![node(
                "Clip",
                "clip",
                &["x"],
                "y",
                vec![float("min", f32::NAN)],
            )],
            vec![],
            "y",
        ),
        &["`clip`", "NaN"],
    );
    // BatchNormalization folding that makes the weights NaN (var + eps < 0).
    check(
        model(
            &[2],
            vec![
                node("Gemm", "fc", &["x", "w"], "h", vec![int("transB", 1)]),
                node(
                    "BatchNormalization",
                    "bn",
                    &["h", "s", "b", "m", "v"],
                    "y",
                    vec![float("epsilon", 0.0)],
                ),
            ],
            vec![
                t32("w", &[2, 2], &[1.0; 4]),
                t32("s", &[2], &[1.0; 2]),
                t32("b", &[2], &[0.0; 2]),
                t32("m", &[2], &[0.0; 2]),
                t32("v", &[2], &[-1.0; 2]),
            ],
            "y",
        ),
        &["`fc`", "NaN", "BatchNormalization"],
    );
}

fn quant() -> (QuantModel, Array2<f32>) {
    let g = import_onnx_bytes(&cnn(), Path::new("cnn.onnx")).unwrap();
    let cal = images(16, 128);
    let eval = images(40, 128).mapv(|v| v * 0.9 + 0.05);
    (QuantModel::calibrate(g, cal.view()).unwrap(), eval)
}

#[test]
fn int8_reference_tracks_float() {
    let (q, x) = quant();
    // First layer sees a signed image; the others post-ReLU tensors.
    assert!(q.layers[0].signed_input);
    assert!(!q.layers[1].signed_input);
    let f = eval_float(&q.graph, x.view()).unwrap();
    let i = eval_quant(&q, &ExactBackend::new(&q), x.view()).unwrap();
    let num: f32 = (&f - &i.outputs).mapv(|v| v * v).sum();
    let den: f32 = f.mapv(|v| v * v).sum();
    assert!(
        (num / den).sqrt() < 0.05,
        "relative error {}",
        (num / den).sqrt()
    );
    assert!(i.layer_stats.iter().all(Option::is_none));
}

#[test]
fn isaac_and_wide_adc_raella_equal_the_int8_reference_bit_for_bit() {
    let (q, x) = quant();
    let cal = q
        .capture_inputs(x.slice(ndarray::s![..8, ..]).to_owned())
        .unwrap();
    let int8 = eval_quant(&q, &ExactBackend::new(&q), x.view()).unwrap();
    let isaac = CrossbarBackend::build(
        &q,
        &ArchConfig::fixed(CompileConfig::isaac(), RunConfig::isaac()),
        &cal,
        1,
    )
    .unwrap();
    let y = eval_quant(&q, &isaac, x.view()).unwrap();
    assert_eq!(y.outputs, int8.outputs);
    let st = y.layer_stats.iter().flatten().collect::<Vec<_>>();
    assert_eq!(st.len(), q.layers.len());
    assert!(st.iter().all(|s| s.in_range_fraction() == 1.0));
    let mut run = RunConfig::raella();
    run.adc = Adc::new(20, true).unwrap();
    let wide = CrossbarBackend::build(
        &q,
        &ArchConfig::fixed(CompileConfig::raella(), run),
        &cal,
        1,
    )
    .unwrap();
    assert_eq!(
        eval_quant(&q, &wide, x.view()).unwrap().outputs,
        int8.outputs
    );
    // A 2-bit ADC without recovery does lose information.
    let mut run = RunConfig::raella();
    run.adc = Adc::new(2, true).unwrap();
    run.input = InputMode::Fixed(Slicing::parse("4-2-2").unwrap());
    let tiny = CrossbarBackend::build(
        &q,
        &ArchConfig::fixed(CompileConfig::raella(), run),
        &cal,
        1,
    )
    .unwrap();
    let lossy = eval_quant(&q, &tiny, x.view()).unwrap();
    assert_ne!(lossy.outputs, int8.outputs);
    // The per-layer check against exact MACs sees it (and sees nothing on ISAAC).
    assert!(
        st.iter()
            .all(|s| s.check_ref_sq > 0.0 && s.checked_rel_err() == 0.0)
    );
    let errs: Vec<f64> = lossy
        .layer_stats
        .iter()
        .flatten()
        .map(raella_runtime::LayerStats::checked_rel_err)
        .collect();
    assert!(errs.iter().any(|&e| e > 1e-3), "{errs:?}");
    // Penultimate features: the last layer's input per image.
    let last = q.layers.last().unwrap();
    assert_eq!(
        y.features.dim(),
        (x.nrows(), last.groups[0].weights.ncols())
    );
    assert_eq!(y.features, int8.features);
    assert_eq!(
        mean_row_cosine(y.features.view(), int8.features.view()),
        1.0
    );
    // The mean row cosine of different features, against the definition.
    let c = mean_row_cosine(lossy.features.view(), int8.features.view());
    let rows: Vec<f64> = lossy
        .features
        .rows()
        .into_iter()
        .zip(int8.features.rows())
        .map(|(a, b)| {
            let dot = |u: ndarray::ArrayView1<'_, f32>, v: ndarray::ArrayView1<'_, f32>| {
                u.iter()
                    .zip(v)
                    .map(|(&p, &q)| f64::from(p) * f64::from(q))
                    .sum::<f64>()
            };
            let (ab, aa, bb) = (dot(a, b), dot(a, a), dot(b, b));
            assert!(aa > 0.0 && bb > 0.0, "no zero feature row");
            ab / (aa * bb).sqrt()
        })
        .collect();
    let want = rows.iter().sum::<f64>() / rows.len() as f64;
    assert!((c - want).abs() < 1e-9 && c < 1.0, "{c} vs {want}");
    let (f, ff) = eval_float_features(&q.graph, x.view()).unwrap();
    assert_eq!(f, eval_float(&q.graph, x.view()).unwrap());
    assert!(mean_row_cosine(int8.features.view(), ff.view()) > 0.99);
}
