//! The importer and executor on small models built here: the ops of a CNN,
//! BatchNorm and bias folding into weight layers (against the unfolded
//! computation), digital fallbacks, unsupported ops, and hostile files (every
//! one a named error, never a panic).

#![allow(clippy::cast_precision_loss)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};
use raella_onnx::build::{float, int, ints, model, node, string, t32, t64};
use raella_onnx::proto::TensorProto;
use raella_onnx::{
    FloatRunner, LayerKind, LayerRunner, NodeKind, Tensor, Vectors, WeightLayer, import_bytes, run,
    run_timed,
};

fn seq(n: usize, k: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * k) % 17) as f32 - 8.0) * scale)
        .collect()
}

/// A CNN with most CNN ops: Conv(groups 2, stride 2, pad 1) + BN + Relu,
/// depthwise Conv + Clip(0,6), MaxPool, AveragePool, Concat, GlobalAveragePool,
/// Flatten, Gemm, MatMul + Add bias, Add, Reshape, Softmax.
fn cnn(bn: bool) -> Vec<u8> {
    let mut nodes = vec![node(
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
    )];
    if bn {
        nodes.push(node(
            "BatchNormalization",
            "bn1",
            &["c1", "g", "be", "mu", "var"],
            "n1",
            vec![float("epsilon", 1e-5)],
        ));
    } else {
        nodes.push(node("Identity", "id", &["c1"], "n1", vec![]));
    }
    nodes.extend([
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
    ]);
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

fn images(n: usize) -> Tensor {
    Tensor::f32(ArrayD::from_shape_fn(IxDyn(&[n, 2, 8, 8]), |p| {
        let (i, j) = (p[0], p[1] * 64 + p[2] * 8 + p[3]);
        (((i * 31 + j * 7) % 23) as f32 - 9.0) / 7.0
    }))
}

#[test]
fn a_cnn_imports_folds_and_runs() {
    let g = import_bytes(&cnn(true), "cnn.onnx").unwrap();
    // BatchNorm and the MatMul's bias Add are folded into weight layers.
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
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
            "Gemm",
            "MatMul",
            "Add",
            "Reshape",
            "Softmax"
        ]
    );
    assert_eq!(g.layers.len(), 4);
    assert!(matches!(g.layers[0].kind, LayerKind::Conv(_)));
    assert_eq!(g.layers[0].groups(), 2);
    assert_eq!(g.layers[1].groups(), 4);
    assert!(g.layers[3].bias.is_some(), "the Add bias folded into fc2");
    let y = run(&g, vec![images(3)], &FloatRunner, 0).unwrap();
    assert_eq!(y[0].shape(), &[3, 6]);
    for row in y[0].floats().unwrap().rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

/// Every product of a run executes on a thread of rayon's pool, also when the
/// run is started from outside it (this test's thread): `run_timed` enters
/// the pool once, so the executor's parallel loops are not each handed over
/// to the pool while the caller blocks. The Gemm and MatMul layers call the
/// runner directly, so without that they run on the caller's thread and this
/// fails; the results are the same either way.
#[test]
fn runs_execute_in_the_pool() {
    #[derive(Default)]
    struct Where {
        calls: AtomicUsize,
        outside: AtomicUsize,
    }
    impl LayerRunner for Where {
        fn matmul(
            &self,
            index: usize,
            layer: &WeightLayer,
            group: usize,
            x: Vectors,
            batch: u64,
        ) -> Result<ndarray::Array2<f32>, String> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if rayon::current_thread_index().is_none() {
                self.outside.fetch_add(1, Ordering::Relaxed);
            }
            FloatRunner.matmul(index, layer, group, x, batch)
        }
    }
    assert!(
        rayon::current_thread_index().is_none(),
        "the test's own thread is outside the pool"
    );
    let g = import_bytes(&cnn(true), "cnn.onnx").unwrap();
    let w = Where::default();
    let y = run(&g, vec![images(3)], &w, 0).unwrap();
    // Two groups, four groups, the Gemm, the MatMul.
    assert_eq!(w.calls.load(Ordering::Relaxed), 2 + 4 + 1 + 1);
    assert_eq!(w.outside.load(Ordering::Relaxed), 0);
    assert_eq!(y, run(&g, vec![images(3)], &FloatRunner, 0).unwrap());
}

/// `run_timed` reports the grouped layers' wall time apart
/// (`RunProfile::grouped_wall`): the runner sleeps 15 ms in every group of the
/// two grouped convolutions (their groups run concurrently, so each layer
/// takes at least 15 ms) and 40 ms in each of the two ungrouped layers (Gemm,
/// MatMul), which must not be counted.
#[test]
fn grouped_layers_wall_time_is_reported_apart() {
    struct Slow;
    impl LayerRunner for Slow {
        fn matmul(
            &self,
            index: usize,
            layer: &WeightLayer,
            group: usize,
            x: Vectors,
            batch: u64,
        ) -> Result<ndarray::Array2<f32>, String> {
            let ms = if layer.groups() > 1 { 15 } else { 40 };
            std::thread::sleep(Duration::from_millis(ms));
            FloatRunner.matmul(index, layer, group, x, batch)
        }
    }
    let g = import_bytes(&cnn(true), "cnn.onnx").unwrap();
    let t0 = Instant::now();
    let (_, t) = run_timed(&g, vec![images(3)], &Slow, 0).unwrap();
    let wall = t0.elapsed();
    assert!(t.grouped_wall >= Duration::from_millis(30), "{t:?}");
    assert!(
        t.grouped_wall + Duration::from_millis(80) <= wall,
        "{t:?} in {wall:?}"
    );
}

/// The folded BatchNorm gives what the unfolded conv followed by the BN formula gives.
#[test]
fn batch_norm_is_folded_exactly() {
    let folded = import_bytes(&cnn(true), "cnn.onnx").unwrap();
    let plain = import_bytes(&cnn(false), "cnn.onnx").unwrap();
    let y = |g: &raella_onnx::Graph| {
        // The first Relu's input: cut the graph there by running and reading the conv output.
        let NodeKind::Weight(_) = g.nodes[0].kind else {
            panic!("the conv is a weight layer")
        };
        run(g, vec![images(2)], &FloatRunner, 0).unwrap()[0].clone()
    };
    let (a, b) = (y(&folded), y(&plain));
    // The two models differ by the BN: outputs differ, so compare conv outputs directly.
    let conv = |g: &raella_onnx::Graph| {
        let l = &g.layers[0];
        (l.matrices.clone(), l.bias.clone().unwrap())
    };
    let ((mf, bf), (mp, bp)) = (conv(&folded), conv(&plain));
    let (gm, be, mu, var) = (
        [1.0f32, 0.5, 2.0, 1.5],
        [0.0f32, 0.1, -0.1, 0.2],
        [0.1f32, 0.0, -0.2, 0.3],
        [1.0f32, 0.25, 4.0, 0.5],
    );
    for c in 0..4 {
        let s = gm[c] / (var[c] + 1e-5).sqrt();
        let (g, r) = (c / 2, c % 2);
        for (p, q) in mf[g].row(r).iter().zip(mp[g].row(r)) {
            assert!((p - q * s).abs() < 1e-6, "{p} vs {}", q * s);
        }
        assert!((bf[c] - ((bp[c] - mu[c]) * s + be[c])).abs() < 1e-6);
    }
    assert_ne!(a, b);
}

#[test]
fn digital_fallbacks_run() {
    // A constant Add that is no layer's bias, a BatchNormalization after a Relu,
    // and Flatten on another axis run digitally.
    let nodes = vec![
        node("Relu", "r", &["x"], "a", vec![]),
        node("Add", "plus", &["a", "c"], "b", vec![]),
        node(
            "BatchNormalization",
            "bn",
            &["b", "s", "be", "m", "v"],
            "n",
            vec![],
        ),
        node("Flatten", "fl", &["n"], "y", vec![int("axis", 2)]),
    ];
    let mut inits: Vec<TensorProto> = ["s", "be", "m", "v"]
        .iter()
        .map(|n| t32(n, &[2], &[1.0, 1.0]))
        .collect();
    inits.push(t32("c", &[2, 1, 1], &[1.0, 2.0]));
    let g = import_bytes(&model(&[2, 1, 3], nodes, inits, "y"), "m.onnx").unwrap();
    assert!(g.layers.is_empty());
    let x = Tensor::f32(ArrayD::from_elem(IxDyn(&[1, 2, 1, 3]), -1.0));
    let y = run(&g, vec![x], &FloatRunner, 0).unwrap();
    assert_eq!(y[0].shape(), &[2, 3]);
    // relu(-1) + c = c; BN with mean 1, var 1, scale 1, bias 1: (c - 1) / sqrt(1 + eps) + 1.
    let got = y[0].floats().unwrap();
    assert!((got[[0, 0]] - 1.0).abs() < 1e-5 && (got[[1, 2]] - 1.999_995).abs() < 1e-5);
}

#[test]
fn unsupported_op_names_op_and_node() {
    // Sequences are not supported (SplitToSequence makes one).
    let nodes = vec![node("SplitToSequence", "the_split", &["x"], "y", vec![])];
    let e = import_bytes(&model(&[4], nodes, vec![], "y"), "m.onnx")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`the_split`") && e.contains("SplitToSequence") && e.contains("unsupported op"),
        "{e}"
    );
}

#[test]
fn truncated_and_nan_models_are_rejected() {
    let bytes = cnn(true);
    let e = import_bytes(&bytes[..bytes.len() / 2], "cut.onnx")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cut.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );
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
    let e = import_bytes(&model(&[2], nodes, inits, "y"), "nan.onnx")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`fc`") && e.contains("NaN"), "{e}");
}

/// Hostile models: each is an error naming the node or tensor, never a panic.
#[test]
fn hostile_models_are_named_errors() {
    let check = |bytes: Vec<u8>, want: &[&str]| {
        let e = import_bytes(&bytes, "hostile.onnx")
            .and_then(|g| {
                let x = Tensor::f32(ArrayD::zeros(IxDyn(&[1, 1, 4, 4])));
                run(&g, vec![x], &FloatRunner, 0).map(|_| g)
            })
            .map(|_| ())
            .unwrap_err()
            .to_string();
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
        &["hostile.onnx", "`w`", "overflows"],
    );
    // Raw data that is not a whole number of elements.
    let mut w = t32("w", &[2, 2], &[1.0; 4]);
    w.raw_data.as_mut().unwrap().push(0);
    check(gemm(vec![w]), &["`w`", "17 bytes", "truncated or corrupt"]);
    // Two initializers of one name (the second would silently win).
    check(
        gemm(vec![
            t32("w", &[2, 2], &[1.0; 4]),
            t32("w", &[2, 2], &[2.0; 4]),
        ]),
        &["`w`", "defined twice"],
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
    // Padding that asks for petabytes.
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
        &["`c`", "`pads`"],
    );
    check(conv(&[i64::MAX, 0, 0, 0]), &["`c`", "`pads`"]);
    // A huge dilation with SAME padding.
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
                    string("auto_pad", "SAME_UPPER"),
                ],
            )],
            vec![],
            "y",
        ),
        &["`mp`", "`dilations`"],
    );
    // A Clip bound as an attribute where opset 13 takes inputs, and NaN.
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
        &["`clip`", "`min`"],
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
    // A reshape or expand to an absurd size at run time is refused, not allocated.
    check(
        model(
            &[1, 4, 4],
            vec![node("Expand", "ex", &["x", "big"], "y", vec![])],
            vec![t64("big", &[1 << 20, 1 << 20, 4, 4])],
            "y",
        ),
        &["`ex`", "elements"],
    );
}
