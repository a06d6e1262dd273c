//! Per-output-channel symmetric int8 quantisation of float weights.
//!
//! `scale_f = max_i |w_fi| / 127`, `q = clamp(round(w / scale_f), -127, 127)`.
//! The range is symmetric (-128 is never produced), so a weight and its
//! negation quantise alike. An all-zero channel gets scale 1 and zero codes.
//! The scales are kept for requantisation: `w ~ q * scale_f`.

use ndarray::{Array2, ArrayView2};

use crate::CompileError;

/// An int8 weight matrix (outputs x inputs) with one scale per output channel.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    /// Quantised weights, outputs x inputs, in [-127, 127].
    pub weights: Array2<i8>,
    /// Per-output-channel scale: float weight ~ code * scale.
    pub scales: Vec<f32>,
}

/// Quantises `w` (outputs x inputs) per output channel.
///
/// # Errors
/// [`CompileError::EmptyMatrix`] for a matrix without rows or columns,
/// [`CompileError::NonFiniteWeight`] naming the first NaN or infinite weight.
pub fn quantize_per_channel(w: ArrayView2<'_, f32>) -> Result<QuantizedMatrix, CompileError> {
    let (outputs, inputs) = w.dim();
    if outputs == 0 || inputs == 0 {
        return Err(CompileError::EmptyMatrix { outputs, inputs });
    }
    if let Some(((row, col), &value)) = w.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(CompileError::NonFiniteWeight { row, col, value });
    }
    let mut weights = Array2::<i8>::zeros((outputs, inputs));
    let mut scales = Vec::with_capacity(outputs);
    for (f, row) in w.rows().into_iter().enumerate() {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        for (i, &v) in row.iter().enumerate() {
            // Clamped to [-127, 127] first, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
            weights[[f, i]] = q;
        }
        scales.push(scale);
    }
    Ok(QuantizedMatrix { weights, scales })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn per_channel_scales() {
        let w = array![[0.5f32, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -0.01]];
        let q = quantize_per_channel(w.view()).unwrap();
        assert_eq!(q.weights.row(0).to_vec(), vec![64, -127, 32]);
        assert_eq!(q.weights.row(1).to_vec(), vec![0, 0, 0]);
        assert_eq!(q.weights.row(2).to_vec(), vec![127, 64, -1]);
        assert_eq!(q.scales[1], 1.0);
        assert!((q.scales[2] - 2.0 / 127.0).abs() < 1e-9);
    }

    #[test]
    fn nan_is_named() {
        let w = array![[0.5f32, 1.0], [f32::NAN, 0.0]];
        let e = quantize_per_channel(w.view()).unwrap_err();
        assert!(matches!(
            e,
            CompileError::NonFiniteWeight { row: 1, col: 0, .. }
        ));
        assert!(e.to_string().contains("output 1, input 0"));
    }
}
