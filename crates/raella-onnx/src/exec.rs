//! Running a graph: digital nodes here, the products of weight layers on a
//! [`LayerRunner`] (float here; 8-bit digital or simulated crossbars in
//! `raella-network`). Around each product the executor does what the hardware's
//! digital side does: it quantises the layer's input (when the runner asks),
//! unfolds convolutions (im2col), scatters transposed convolutions (col2im),
//! adds the bias and lays the result out as the model expects.

use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix3, IxDyn, linalg::general_mat_mul, s};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::graph::{Graph, LayerKind, NodeKind, WeightLayer};
use crate::ops::nn::{col2im, conv_transpose_out, im2col_into, nchw};
use crate::ops::par_map;
use crate::tensor::{DType, Tensor, checked_numel};
use crate::{OnnxError, OpError};

/// A weight layer's input vectors, one per row, as the runner asked for them.
#[derive(Debug, Clone, PartialEq)]
pub enum Vectors {
    /// Float values.
    F32(Array2<f32>),
    /// uint8 codes (`x = code * scale`).
    U8(Array2<u8>),
    /// int8 codes (`x = code * scale`).
    I8(Array2<i8>),
}

impl Vectors {
    /// Number of vectors.
    #[must_use]
    pub fn nrows(&self) -> usize {
        match self {
            Self::F32(x) => x.nrows(),
            Self::U8(x) => x.nrows(),
            Self::I8(x) => x.nrows(),
        }
    }
}

/// How a layer's input is quantised before its product: `x_code =
/// clamp(round(x / scale))` to `[0, 255]`, or `[-127, 127]` when `signed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputQuant {
    /// Real value of one code.
    pub scale: f32,
    /// int8 codes (two crossbar passes) instead of uint8.
    pub signed: bool,
}

/// Computes the products of weight layers.
pub trait LayerRunner: Sync {
    /// How layer `index`'s input should be quantised; `None`: float vectors.
    fn input_quant(&self, index: usize) -> Option<InputQuant> {
        let _ = index;
        None
    }

    /// Sees layer `index`'s whole input tensor, in float, before anything else
    /// (calibration records ranges here; feature capture keeps the last one).
    fn observe_input(&self, index: usize, x: &ArrayD<f32>) {
        let _ = (index, x);
    }

    /// Sees layer `index`'s output tensor (bias and addend included).
    fn observe_output(&self, index: usize, y: &ArrayD<f32>) {
        let _ = (index, y);
    }

    /// `x M^T` for group `group` of layer `index` (`M` = `layer.matrices[group]`,
    /// outputs x inputs): vectors x outputs, in float, without the bias.
    /// `batch` identifies the batch (noise streams).
    ///
    /// # Errors
    /// The runner's own failure, as a message.
    fn matmul(
        &self,
        index: usize,
        layer: &WeightLayer,
        group: usize,
        x: Vectors,
        batch: u64,
    ) -> Result<Array2<f32>, String>;
}

/// Exact float products: the float32 reference.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloatRunner;

impl LayerRunner for FloatRunner {
    fn matmul(
        &self,
        _index: usize,
        layer: &WeightLayer,
        group: usize,
        x: Vectors,
        _batch: u64,
    ) -> Result<Array2<f32>, String> {
        let Vectors::F32(x) = x else {
            return Err("the float runner takes float vectors".into());
        };
        let m = &layer.matrices[group];
        let mut y = Array2::<f32>::zeros((x.nrows(), m.nrows()));
        general_mat_mul(1.0, &x, &m.t(), 0.0, &mut y);
        Ok(y)
    }
}

/// A layer's input tensor, float or quantised.
enum Codes {
    F32(ArrayD<f32>),
    U8(ArrayD<u8>),
    I8(ArrayD<i8>),
}

/// `x.round().clamp(lo, hi) as i32` (round half away from zero; NaN gives 0)
/// for integral `lo <= 0 <= hi` with `|lo|, |hi| < 2^22`, in operations that
/// vectorise on every target (`f32::round` is a library call on baseline
/// x86-64, and the saturating cast is scalar): clamped first (the same
/// result: rounding is monotonic and the bounds are integers), rounded half
/// to even by adding and subtracting `1.5 x 2^23`, ties moved away from
/// zero, and the integer read from the mantissa.
#[inline(always)]
fn round_clamp(x: f32, lo: f32, hi: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let c = x.max(lo).min(hi);
    let even = (c + MAGIC) - MAGIC;
    let d = c - even;
    let r =
        even + f32::from(u8::from(d == 0.5 && c > 0.0)) - f32::from(u8::from(d == -0.5 && c < 0.0));
    let r = if x.is_nan() { 0.0 } else { r };
    // Two's complement: the mantissa's offset from `MAGIC`'s is the integer.
    #[allow(clippy::cast_possible_wrap)]
    let v = (r + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    v
}

fn quantise(x: &ArrayD<f32>, q: Option<InputQuant>) -> Codes {
    match q {
        None => Codes::F32(x.clone()),
        // Clamped, so the casts are exact; round half away from zero.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(InputQuant {
            scale,
            signed: true,
        }) => Codes::I8(par_map(x, move |v| {
            round_clamp(v / scale, -127.0, 127.0) as i8
        })),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(InputQuant {
            scale,
            signed: false,
        }) => Codes::U8(par_map(x, move |v| {
            round_clamp(v / scale, 0.0, 255.0) as u8
        })),
    }
}

/// Applies generic code to the codes, whatever their type.
macro_rules! with_codes {
    ($c:expr, |$a:ident| $body:expr) => {
        match $c {
            Codes::F32($a) => Vectors::F32($body),
            Codes::U8($a) => Vectors::U8($body),
            Codes::I8($a) => Vectors::I8($body),
        }
    };
}

fn rows_2d<T: Clone>(a: &ArrayD<T>, rows: usize, cols: usize) -> Array2<T> {
    a.as_standard_layout()
        .into_owned()
        .into_shape_with_order((rows, cols))
        .expect("sizes checked")
}

fn run_layer(
    index: usize,
    layer: &WeightLayer,
    x: &Tensor,
    runner: &dyn LayerRunner,
    batch: u64,
    products: &mut Duration,
) -> Result<Tensor, OpError> {
    // One group's product and the time it took (groups of a convolution may
    // run concurrently, so the caller adds the times up).
    let timed = |gi: usize, vectors: Vectors| {
        let t = Instant::now();
        let r = runner.matmul(index, layer, gi, vectors, batch);
        (r, t.elapsed())
    };
    let mut matmul = |gi: usize, vectors: Vectors| {
        let (r, took) = timed(gi, vectors);
        *products += took;
        r
    };
    let dtype = x.dtype();
    if !dtype.is_float() {
        return Err(OpError(format!(
            "a weight layer's input must be float, got {}",
            dtype.name()
        )));
    }
    let xf = x.floats()?;
    runner.observe_input(index, xf);
    let codes = quantise(xf, runner.input_quant(index));
    let k = layer.inputs();
    let err = |e: String| OpError(e);
    let y: ArrayD<f32> = match &layer.kind {
        LayerKind::Right | LayerKind::RightTransposedInput | LayerKind::Left => {
            let shape = xf.shape().to_vec();
            let transposed = matches!(layer.kind, LayerKind::RightTransposedInput);
            let left = matches!(layer.kind, LayerKind::Left);
            if transposed && shape.len() != 2 {
                return Err(OpError(format!("Gemm input must be 2-D, got {shape:?}")));
            }
            // The axis that holds the K inputs of a vector.
            let kaxis = if transposed || left {
                shape
                    .len()
                    .checked_sub(2)
                    .ok_or_else(|| OpError(format!("input {shape:?} has too few axes")))?
            } else {
                shape
                    .len()
                    .checked_sub(1)
                    .ok_or_else(|| OpError("a scalar input".into()))?
            };
            if shape[kaxis] != k {
                return Err(OpError(format!(
                    "input of shape {shape:?} has {} values on its product axis, the weights {k}",
                    shape[kaxis]
                )));
            }
            let nout = layer.outputs_per_group();
            // Move the K axis last: vectors are then the rows of a contiguous matrix.
            let mut perm: Vec<usize> = (0..shape.len()).filter(|&a| a != kaxis).collect();
            perm.push(kaxis);
            let rows = xf.len() / k.max(1);
            let vectors = with_codes!(&codes, |a| rows_2d(
                &a.view().permuted_axes(IxDyn(&perm)).to_owned(),
                rows,
                k
            ));
            let y = matmul(0, vectors).map_err(err)?;
            let mut y = add_bias_rows(y, layer.bias.as_deref());
            // Back to the model's layout: the output axis where K was.
            let mut moved: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
            *moved.last_mut().expect("rank >= 1") = nout;
            let out = y
                .view_mut()
                .into_shape_with_order(IxDyn(&moved))
                .expect("same size")
                .to_owned();
            if transposed {
                // Gemm with transA: the output is [M, N] as it stands.
                return finish(layer, out, dtype);
            }
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            out.permuted_axes(IxDyn(&inv))
                .as_standard_layout()
                .into_owned()
        }
        LayerKind::Conv(g) => {
            let [n, c, h, w] = nchw(xf.shape(), g.one_d)?;
            if c != g.in_channels {
                return Err(OpError(format!(
                    "input has {c} channels, the weights expect {}",
                    g.in_channels
                )));
            }
            let win = g.window();
            let (oh, ow, pads) = win.out_hw(h, w)?;
            let cg = c / g.groups;
            let mg = g.out_channels / g.groups;
            checked_numel(&[n, g.out_channels, oh, ow])?;
            checked_numel(&[n * oh * ow, k])?;
            let mut y = ArrayD::<f32>::zeros(IxDyn(&[n, g.out_channels, oh * ow]));
            // Each group's vectors and product; groups run on all threads (a
            // depthwise layer has hundreds of small ones). Each product is a
            // function of its group alone, so the order they run in changes nothing.
            let group = |gi: usize| {
                // Every image's vectors of this group in one product.
                let vectors = with_codes!(&codes, |a| {
                    let a4 = a
                        .view()
                        .into_shape_with_order(IxDyn(&[n, c, h, w]))
                        .expect("nchw");
                    let mut all = vec![Default::default(); n * oh * ow * k];
                    // An image per item, on all threads (several per item when small).
                    let per_image = (oh * ow * k).max(1);
                    all.par_chunks_exact_mut(per_image)
                        .with_min_len(PARALLEL_VALUES.div_ceil(per_image))
                        .enumerate()
                        .for_each(|(i, dst)| {
                            let img = a4
                                .index_axis(Axis(0), i)
                                .into_dimensionality::<Ix3>()
                                .expect("3-D");
                            im2col_into(img, gi * cg, cg, &win, (oh, ow), pads, dst);
                        });
                    Array2::from_shape_vec((n * oh * ow, k), all).expect("shape")
                });
                timed(gi, vectors)
            };
            // Waves of a few groups per thread: each wave's outputs are laid
            // out before the next starts, so at most a wave's are held besides `y`.
            let wave = 4 * rayon::current_num_threads();
            for first in (0..g.groups).step_by(wave) {
                let last = (first + wave).min(g.groups);
                let results: Vec<_> = if last - first == 1 {
                    vec![group(first)]
                } else {
                    (first..last).into_par_iter().map(group).collect()
                };
                for (gi, (r, took)) in (first..).zip(results) {
                    *products += took;
                    let r = r.map_err(err)?;
                    let bias = layer.bias.as_deref().map(|b| &b[gi * mg..(gi + 1) * mg]);
                    let y = y.as_slice_mut().expect("standard layout");
                    channels_into(&r, bias, (gi * mg, g.out_channels, oh * ow), y);
                }
            }
            let shape: Vec<usize> = if g.one_d {
                vec![n, g.out_channels, ow]
            } else {
                vec![n, g.out_channels, oh, ow]
            };
            y.into_shape_with_order(IxDyn(&shape)).expect("same size")
        }
        LayerKind::ConvTranspose(g) => {
            let [n, c, h, w] = nchw(xf.shape(), g.one_d)?;
            if c != g.in_channels {
                return Err(OpError(format!(
                    "input has {c} channels, the weights expect {}",
                    g.in_channels
                )));
            }
            let (oh, ow, pads) = conv_transpose_out(g, h, w)?;
            let cg = c / g.groups;
            let mg = g.out_channels / g.groups;
            checked_numel(&[n, g.out_channels, oh, ow])?;
            let win = g.window();
            let mut y = ArrayD::<f32>::zeros(IxDyn(&[n, g.out_channels, oh, ow]));
            for gi in 0..g.groups {
                // Vectors: every input position of every image, its group's channels.
                let vectors = with_codes!(&codes, |a| {
                    let a3 = a
                        .view()
                        .into_shape_with_order(IxDyn(&[n, c, h * w]))
                        .expect("nchw");
                    let mut all = Array2::from_elem((n * h * w, cg), Default::default());
                    for i in 0..n {
                        all.slice_mut(s![i * h * w..(i + 1) * h * w, ..])
                            .assign(&a3.slice(s![i, gi * cg..(gi + 1) * cg, ..]).t());
                    }
                    all
                });
                let r = matmul(gi, vectors).map_err(err)?;
                for i in 0..n {
                    let part = col2im(
                        r.slice(s![i * h * w..(i + 1) * h * w, ..]),
                        (h, w),
                        mg,
                        &win,
                        (oh, ow),
                        pads,
                    );
                    y.slice_mut(s![i, gi * mg..(gi + 1) * mg, .., ..])
                        .assign(&part);
                }
            }
            if let Some(b) = &layer.bias {
                for (mut plane, &bv) in y.axis_iter_mut(Axis(1)).zip(b) {
                    plane += bv;
                }
            }
            if g.one_d {
                y.into_shape_with_order(IxDyn(&[n, g.out_channels, ow]))
                    .expect("same size")
            } else {
                y
            }
        }
    };
    finish(layer, y, dtype)
}

/// Adds Gemm's addend, if any, and gives the result the input's float type.
fn finish(layer: &WeightLayer, y: ArrayD<f32>, dtype: DType) -> Result<Tensor, OpError> {
    let y = match &layer.addend {
        Some(c) => crate::ops::zip_f32(&y, c, |p, q| p + q)?,
        None => y,
    };
    Ok(Tensor::float(
        y,
        if dtype == DType::F64 {
            DType::F32
        } else {
            dtype
        },
    ))
}

fn add_bias_rows(mut y: Array2<f32>, bias: Option<&[f32]>) -> Array2<f32> {
    if let Some(b) = bias {
        for mut row in y.rows_mut() {
            for (v, bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
    y
}

/// Values below which a parallel loop's items are merged (one item runs on
/// the calling thread): a depthwise group's few values are not worth a task.
/// The digital side's loops here and in `raella-network` share it.
pub const PARALLEL_VALUES: usize = 1 << 15;

/// One group's product `r` (`n x positions` rows, position-major, one column
/// per channel of the group) into its channels `first..first + r.ncols()` of
/// `y` (`n x channels x positions`, channel-major), plus the group's bias: a
/// transposition in tiles (both sides read and written a cache line at a
/// time), on all threads, one item per image and block of channels (merged
/// up to [`PARALLEL_VALUES`]). Each
/// value is `r` or `r + bias`, as assigning and then adding the bias gives.
fn channels_into(
    r: &Array2<f32>,
    bias: Option<&[f32]>,
    (first, channels, positions): (usize, usize, usize),
    y: &mut [f32],
) {
    const CHANNELS: usize = 32;
    const POSITIONS: usize = 64;
    let mg = r.ncols();
    if mg == 0 || positions == 0 {
        return;
    }
    let r = r.as_standard_layout();
    let src = r.as_slice().expect("standard layout");
    let items: Vec<(usize, usize, &mut [f32])> = y
        .chunks_exact_mut(channels * positions)
        .enumerate()
        .flat_map(|(i, image)| {
            image[first * positions..(first + mg) * positions]
                .chunks_mut(CHANNELS * positions)
                .enumerate()
                .map(move |(b, dst)| (i, b * CHANNELS, dst))
        })
        .collect();
    let per_item = CHANNELS.min(mg) * positions;
    let items = items
        .into_par_iter()
        .with_min_len(PARALLEL_VALUES.div_ceil(per_item));
    items.for_each(|(i, c0, dst)| {
        let rows = &src[i * positions * mg..(i + 1) * positions * mg];
        let nc = dst.len() / positions;
        for p0 in (0..positions).step_by(POSITIONS) {
            let p1 = (p0 + POSITIONS).min(positions);
            // Whole 8 x 8 tiles: eight positions' rows of eight channels
            // read whole, written as eight channels' runs of eight positions.
            let (tc, tp) = (nc / 8 * 8, p0 + (p1 - p0) / 8 * 8);
            for c in (0..tc).step_by(8) {
                for p in (p0..tp).step_by(8) {
                    let mut t = [[0f32; 8]; 8];
                    for (k, row) in t.iter_mut().enumerate() {
                        let at = (p + k) * mg + c0 + c;
                        *row = rows[at..at + 8].try_into().expect("8 values");
                    }
                    for j in 0..8 {
                        let run: &mut [f32; 8] = (&mut dst[(c + j) * positions + p..][..8])
                            .try_into()
                            .expect("8 values");
                        match bias {
                            Some(b) => {
                                let bc = b[c0 + c + j];
                                for (d, row) in run.iter_mut().zip(&t) {
                                    *d = row[j] + bc;
                                }
                            }
                            None => {
                                for (d, row) in run.iter_mut().zip(&t) {
                                    *d = row[j];
                                }
                            }
                        }
                    }
                }
            }
            // The rest value by value: the positions past the whole tiles of
            // the tiled channels, then the channels past them.
            for (c, plane) in (c0..).zip(dst.chunks_exact_mut(positions)) {
                let start = if c - c0 < tc { tp } else { p0 };
                if start >= p1 {
                    continue;
                }
                let values = rows[start * mg + c..].iter().step_by(mg);
                let d = &mut plane[start..p1];
                match bias {
                    Some(b) => d.iter_mut().zip(values).for_each(|(d, &v)| *d = v + b[c]),
                    None => d.iter_mut().zip(values).for_each(|(d, &v)| *d = v),
                }
            }
        }
    });
}

/// The inputs a run takes, checked against what the model declares.
fn check_inputs(graph: &Graph, inputs: &[Tensor]) -> Result<(), OnnxError> {
    if inputs.len() != graph.inputs.len() {
        return Err(OnnxError::Model(format!(
            "the model takes {} inputs ({}), {} given",
            graph.inputs.len(),
            graph
                .inputs
                .iter()
                .map(|&i| graph.name(i).to_string())
                .collect::<Vec<_>>()
                .join(", "),
            inputs.len()
        )));
    }
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        let info = &graph.values[id];
        let bad = |message: String| OnnxError::Input {
            name: info.name.clone(),
            message,
        };
        if let Some(d) = info.dtype
            && d != t.dtype()
        {
            return Err(bad(format!(
                "the model declares {}, got {}",
                d.name(),
                t.dtype().name()
            )));
        }
        if let Some(shape) = &info.shape {
            if shape.len() != t.shape().len() {
                return Err(bad(format!(
                    "the model declares rank {}, got shape {:?}",
                    shape.len(),
                    t.shape()
                )));
            }
            for (i, (d, &got)) in shape.iter().zip(t.shape()).enumerate() {
                if let crate::graph::Dim::Fixed(want) = d
                    && *want != got
                {
                    return Err(bad(format!(
                        "dimension {i} is {want} in the model, {got} given (shape {:?})",
                        t.shape()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Runs the graph on `inputs` (one tensor per graph input, in order), the
/// weight layers' products on `runner`. Returns the graph outputs in order.
///
/// # Errors
/// Inputs that do not match the model, a node that fails (named), or a runner error.
pub fn run(
    graph: &Graph,
    inputs: Vec<Tensor>,
    runner: &dyn LayerRunner,
    batch: u64,
) -> Result<Vec<Tensor>, OnnxError> {
    run_timed(graph, inputs, runner, batch).map(|(y, _)| y)
}

/// Where one run's time went (wall clock on the thread that runs the graph, per kind of
/// work; a kernel's own worker threads are inside its node's time), and the
/// multiply-accumulates done digitally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunProfile {
    /// Multiply-accumulates of digital matrix products: `MatMul`/`Gemm` of two
    /// activations (attention's `Q K^T` and `A V`) and convolutions whose
    /// weights are not constant. Other digital ops are not counted as MACs.
    pub digital_macs: u64,
    /// Digital nodes (everything but weight layers).
    pub digital: Duration,
    /// The runner's products of weight layers (on simulated crossbars: the
    /// simulation itself). A grouped convolution's groups run concurrently
    /// and count as the sum of their own times.
    pub products: Duration,
    /// The rest of weight layers: quantising inputs, im2col / col2im, bias,
    /// layout.
    pub layer_glue: Duration,
    /// Wall time of grouped weight layers (`groups > 1`: depthwise
    /// convolutions), products and the rest together; inside `products` and
    /// `layer_glue`, which count their groups' products as summed thread time.
    pub grouped_wall: Duration,
}

impl RunProfile {
    /// The sum of the three.
    #[must_use]
    pub fn total(&self) -> Duration {
        self.digital + self.products + self.layer_glue
    }
}

impl std::ops::AddAssign for RunProfile {
    fn add_assign(&mut self, o: Self) {
        self.digital_macs += o.digital_macs;
        self.digital += o.digital;
        self.products += o.products;
        self.layer_glue += o.layer_glue;
        self.grouped_wall += o.grouped_wall;
    }
}

/// [`run`], also saying where the time went.
///
/// The whole run executes on a thread of rayon's pool (`rayon::scope`; inline
/// when the caller is one already). Called from outside the pool, every
/// parallel loop of the run would otherwise be injected into the pool and
/// the calling thread blocked until a worker woke and finished it: a
/// depthwise convolution runs one such loop per wave of a few groups
/// (hundreds per layer), and on MobileNetV2 (6 photographs, one thread)
/// those hand-offs cost about a fifth of the depthwise layers' time. The
/// results do not depend on where the loops run.
///
/// # Errors
/// As [`run`].
pub fn run_timed(
    graph: &Graph,
    inputs: Vec<Tensor>,
    runner: &dyn LayerRunner,
    batch: u64,
) -> Result<(Vec<Tensor>, RunProfile), OnnxError> {
    rayon::scope(|_| run_in_pool(graph, inputs, runner, batch))
}

/// [`run_timed`]'s body, on a thread of the pool.
fn run_in_pool(
    graph: &Graph,
    inputs: Vec<Tensor>,
    runner: &dyn LayerRunner,
    batch: u64,
) -> Result<(Vec<Tensor>, RunProfile), OnnxError> {
    let mut times = RunProfile::default();
    check_inputs(graph, &inputs)?;
    let last = graph.last_use();
    let mut live: Vec<Option<Tensor>> = vec![None; graph.values.len()];
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        live[id] = Some(t);
    }
    let keep: Vec<bool> = {
        let mut k = vec![false; graph.values.len()];
        for &o in &graph.outputs {
            k[o] = true;
        }
        k
    };
    for (i, node) in graph.nodes.iter().enumerate() {
        let fail = |e: OpError| OnnxError::Node {
            node: node.name.clone(),
            op: node.op_type.clone(),
            message: e.0,
        };
        let ins: Vec<Option<&Tensor>> = node
            .inputs
            .iter()
            .map(|v| v.and_then(|v| live[v].as_ref().or(graph.constants[v].as_ref())))
            .collect();
        for (k, (v, t)) in node.inputs.iter().zip(&ins).enumerate() {
            if v.is_some() && t.is_none() {
                return Err(fail(OpError(format!("input {k} was not computed"))));
            }
        }
        let start = Instant::now();
        let outs: Vec<Tensor> = match &node.kind {
            NodeKind::Digital(k) => {
                let y = k.eval(&ins).map_err(fail)?;
                times.digital += start.elapsed();
                times.digital_macs += digital_macs(&node.op_type, &ins, &y);
                y
            }
            NodeKind::Weight(li) => {
                let x = ins
                    .first()
                    .copied()
                    .flatten()
                    .ok_or_else(|| fail(OpError("no input".into())))?;
                let mut products = Duration::ZERO;
                let y = run_layer(*li, &graph.layers[*li], x, runner, batch, &mut products)
                    .map_err(|e| OnnxError::Layer {
                        layer: node.name.clone(),
                        message: e.0,
                    })?;
                if let Ok(f) = y.floats() {
                    runner.observe_output(*li, f);
                }
                let wall = start.elapsed();
                times.products += products;
                times.layer_glue += wall.saturating_sub(products);
                if graph.layers[*li].groups() > 1 {
                    times.grouped_wall += wall;
                }
                vec![y]
            }
        };
        for (o, t) in node.outputs.iter().zip(outs) {
            if let Some(o) = o {
                live[*o] = Some(t);
            }
        }
        for v in node.inputs.iter().flatten() {
            if last[*v] == Some(i) && !keep[*v] {
                live[*v] = None;
            }
        }
    }
    let outputs = graph
        .outputs
        .iter()
        .enumerate()
        .map(|(k, &o)| {
            // A value listed twice among the outputs is cloned for all but its last listing.
            let again = graph.outputs[k + 1..].contains(&o);
            (if again {
                live[o].clone()
            } else {
                live[o].take()
            })
            .or_else(|| graph.constants[o].clone())
            .ok_or_else(|| OnnxError::Model(format!("output `{}` was not computed", graph.name(o))))
        })
        .collect::<Result<_, _>>()?;
    Ok((outputs, times))
}

/// Multiply-accumulates of a digital node that is a matrix product or a
/// convolution (its operands are activations), from its operands' and
/// output's shapes; 0 for any other op.
fn digital_macs(op: &str, ins: &[Option<&Tensor>], outs: &[Tensor]) -> u64 {
    let shape = |i: usize| ins.get(i).copied().flatten().map(Tensor::shape);
    let out = outs.first().map_or(0, Tensor::len) as u64;
    let k = match op {
        // K is A's last axis (a 1-D A is a row vector).
        "MatMul" | "MatMulInteger" => shape(0).and_then(|s| s.last().copied()),
        "QLinearMatMul" => shape(0).and_then(|s| s.last().copied()),
        // A is [M, K] or, with transA, [K, M]; the output is [M, N].
        "Gemm" => match (shape(0), outs.first().map(Tensor::shape)) {
            (Some(a), Some(&[m, _])) if m > 0 => Some(a.iter().product::<usize>() / m),
            _ => None,
        },
        // W is [M, C/g, k...]: every output sums C/g x kernel products.
        "Conv" | "ConvInteger" => shape(1).map(|s| s[1..].iter().product()),
        "QLinearConv" => shape(3).map(|s| s[1..].iter().product()),
        // W is [C, M/g, k...]: every input value meets M/g x kernel weights.
        "ConvTranspose" => {
            return match (shape(0), shape(1)) {
                (Some(x), Some(w)) => (x.iter().product::<usize>() as u64)
                    .saturating_mul(w[1..].iter().product::<usize>() as u64),
                _ => 0,
            };
        }
        _ => None,
    };
    k.map_or(0, |k| out.saturating_mul(k as u64))
}

/// The float vectors of a 2-D view, owned (a helper for runners).
#[must_use]
pub fn owned_f32(x: ArrayView2<'_, f32>) -> Array2<f32> {
    x.to_owned()
}

#[cfg(test)]
mod tests {
    use super::{channels_into, round_clamp};
    use ndarray::Array2;

    /// `channels_into` writes `y[i][first + c][p] = r[i * positions + p][c]`
    /// (plus `bias[c]`), the naive transposition, and leaves every other
    /// channel alone: group widths around its 32-channel blocks, positions
    /// around its 64-position tiles, one and several images, a group in the
    /// middle of the channels, and sizes on both sides of the parallel
    /// threshold.
    #[test]
    fn channels_into_is_the_transposition_plus_bias() {
        for &(images, channels, first, mg, positions) in &[
            (1usize, 3usize, 0usize, 3usize, 1usize),
            (2, 8, 3, 4, 9),
            (3, 40, 0, 40, 65),
            (2, 96, 31, 33, 64),
            (1, 64, 0, 64, 1_000),
            (4, 70, 5, 64, 130),
        ] {
            #[allow(clippy::cast_precision_loss)]
            let r = Array2::from_shape_fn((images * positions, mg), |(q, c)| {
                (q * 1_000 + c) as f32 * 0.5 - 3.0
            });
            #[allow(clippy::cast_precision_loss)]
            let bias: Vec<f32> = (0..mg).map(|c| c as f32 * 0.25 + 0.125).collect();
            for with_bias in [false, true] {
                let mut y = vec![f32::NAN; images * channels * positions];
                channels_into(
                    &r,
                    with_bias.then_some(bias.as_slice()),
                    (first, channels, positions),
                    &mut y,
                );
                for i in 0..images {
                    for ch in 0..channels {
                        for p in 0..positions {
                            let got = y[(i * channels + ch) * positions + p];
                            if (first..first + mg).contains(&ch) {
                                let c = ch - first;
                                let v = r[[i * positions + p, c]];
                                let want = if with_bias { v + bias[c] } else { v };
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{images}x{channels}x{positions}, group {first}+{mg}: image {i} channel {ch} position {p}"
                                );
                            } else {
                                assert!(got.is_nan(), "channel {ch} outside the group written");
                            }
                        }
                    }
                }
            }
        }
    }

    /// `round_clamp` gives the saturating cast of `f32::round` clamped, for
    /// both input ranges: ties, their neighbours, the range edges, the
    /// specials, and a stride through every bit pattern.
    #[test]
    fn round_clamp_is_the_rounded_clamped_cast() {
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            0.499_999_97,
            -0.499_999_97,
        ];
        for k in -600..600 {
            #[allow(clippy::cast_precision_loss)]
            let t = k as f32 * 0.5;
            xs.extend([t, t.next_up(), t.next_down()]);
        }
        xs.extend((0..=u32::MAX).step_by(997).map(f32::from_bits));
        for &x in &xs {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let (u, i) = (
                i32::from(x.round().clamp(0.0, 255.0) as u8),
                i32::from(x.round().clamp(-127.0, 127.0) as i8),
            );
            assert_eq!(round_clamp(x, 0.0, 255.0), u, "{x:e} unsigned");
            assert_eq!(round_clamp(x, -127.0, 127.0), i, "{x:e} signed");
        }
    }
}
