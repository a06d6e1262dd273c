//! One document through the encoder. The linear layers go through a
//! [`Linears`] implementation (float, calibration recorder, or quantised on a
//! `MacBackend`); everything else is digital f32 here.

use ndarray::{Array1, Array2, ArrayView2, Axis, s};

use super::{BertModel, LayerNorm, Tokens};
use crate::NetworkError;

/// Computes crossbar layer `layer` (index into [`BertModel::linears`]) on `x`
/// (tokens x inputs), bias included.
pub(crate) trait Linears {
    fn linear(&self, layer: usize, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, NetworkError>;
}

/// The float32 reference.
pub(crate) struct FloatLinears<'a>(pub(crate) &'a BertModel);

impl Linears for FloatLinears<'_> {
    fn linear(&self, layer: usize, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, NetworkError> {
        Ok(float_linear(self.0, layer, x))
    }
}

pub(crate) fn float_linear(model: &BertModel, layer: usize, x: ArrayView2<'_, f32>) -> Array2<f32> {
    let l = &model.linears[layer];
    let mut y = x.dot(&l.weight.t());
    add_bias(&mut y, &l.bias);
    y
}

pub(crate) fn add_bias(y: &mut Array2<f32>, bias: &[f32]) {
    for mut row in y.rows_mut() {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

fn layer_norm(x: &mut Array2<f32>, ln: &LayerNorm, eps: f32) {
    #[allow(clippy::cast_precision_loss)]
    let n = x.ncols() as f32;
    for mut row in x.rows_mut() {
        let mean = row.sum() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&ln.gamma).zip(&ln.beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// The exact (erf) GELU, in f64 for the error function.
fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    #[allow(clippy::cast_possible_truncation)]
    let y = (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32;
    y
}

fn softmax_rows(x: &mut Array2<f32>) {
    for mut row in x.rows_mut() {
        let max = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
}

/// The L2-normalised mean-pooled embedding of one document.
pub(crate) fn encode(
    model: &BertModel,
    tok: &Tokens,
    lin: &impl Linears,
) -> Result<Array1<f32>, NetworkError> {
    let c = &model.config;
    let n = tok.ids.len();
    let (hidden, heads, d) = (c.hidden_size, c.num_attention_heads, c.head_dim());
    #[allow(clippy::cast_possible_truncation)]
    let eps = c.layer_norm_eps as f32;
    if tok.type_ids.len() != n
        || tok
            .type_ids
            .iter()
            .any(|&t| t as usize >= c.type_vocab_size)
    {
        return Err(NetworkError::BadInput(format!(
            "token type ids {:?} do not match {n} tokens or {} types",
            tok.type_ids, c.type_vocab_size
        )));
    }
    let mut h = Array2::<f32>::zeros((n, hidden));
    for (p, mut row) in h.rows_mut().into_iter().enumerate() {
        row.assign(&model.word.row(tok.ids[p] as usize));
        row += &model.position.row(p);
        row += &model.token_type.row(tok.type_ids[p] as usize);
    }
    layer_norm(&mut h, &model.emb_ln, eps);
    #[allow(clippy::cast_precision_loss)]
    let scale = (d as f32).sqrt();
    for (l, (ln_attn, ln_ffn)) in model.norms.iter().enumerate() {
        let base = 6 * l;
        let q = lin.linear(base, h.view())?;
        let k = lin.linear(base + 1, h.view())?;
        let v = lin.linear(base + 2, h.view())?;
        let mut ctx = Array2::<f32>::zeros((n, hidden));
        for head in 0..heads {
            let cols = s![.., head * d..(head + 1) * d];
            let mut scores = q.slice(cols).dot(&k.slice(cols).t());
            scores.mapv_inplace(|x| x / scale);
            softmax_rows(&mut scores);
            ctx.slice_mut(cols).assign(&scores.dot(&v.slice(cols)));
        }
        let mut a = lin.linear(base + 3, ctx.view())?;
        a += &h;
        layer_norm(&mut a, ln_attn, eps);
        let mut f = lin.linear(base + 4, a.view())?;
        f.mapv_inplace(gelu);
        let mut o = lin.linear(base + 5, f.view())?;
        o += &a;
        layer_norm(&mut o, ln_ffn, eps);
        h = o;
    }
    let mut m = h.mean_axis(Axis(0)).expect("at least one token");
    let norm = m.dot(&m).sqrt();
    if norm > 0.0 {
        m.mapv_inplace(|v| v / norm);
    }
    Ok(m)
}
