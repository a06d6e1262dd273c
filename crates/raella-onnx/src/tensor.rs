//! N-dimensional tensors of the ONNX data types the simulator runs.
//!
//! Storage is one of two kinds: every floating type (float32, float16,
//! bfloat16, float64) is held as `f32` values, rounded to the type's own
//! precision where it is narrower (so a float16 model computes what float16
//! would store); every integer type and bool is held as `i64` values, wrapped
//! to the type's range. The dtype tag says which ONNX type a tensor is.
//! float64 is the one type held with less precision than it has (`f32`); the
//! models the simulator targets use it only for a few shape computations.

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

use crate::OpError;

/// Most elements any tensor may hold: 2^28 (1 GiB of `f32`). Every operator
/// that allocates checks its output against it, so a model cannot ask for
/// petabytes through a shape it computes.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// An ONNX element type the simulator supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
    /// float64 (held as f32).
    F64,
    /// int64.
    I64,
    /// int32.
    I32,
    /// int16.
    I16,
    /// int8.
    I8,
    /// uint64 (held as i64: values above 2^63 wrap).
    U64,
    /// uint32.
    U32,
    /// uint16.
    U16,
    /// uint8.
    U8,
    /// bool.
    Bool,
}

impl DType {
    /// From an ONNX `TensorProto.DataType` code.
    #[must_use]
    pub fn from_onnx(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::F32,
            2 => Self::U8,
            3 => Self::I8,
            4 => Self::U16,
            5 => Self::I16,
            6 => Self::I32,
            7 => Self::I64,
            9 => Self::Bool,
            10 => Self::F16,
            11 => Self::F64,
            12 => Self::U32,
            13 => Self::U64,
            16 => Self::BF16,
            _ => return None,
        })
    }

    /// The ONNX `TensorProto.DataType` code.
    #[must_use]
    pub fn onnx_code(self) -> i32 {
        match self {
            Self::F32 => 1,
            Self::U8 => 2,
            Self::I8 => 3,
            Self::U16 => 4,
            Self::I16 => 5,
            Self::I32 => 6,
            Self::I64 => 7,
            Self::Bool => 9,
            Self::F16 => 10,
            Self::F64 => 11,
            Self::U32 => 12,
            Self::U64 => 13,
            Self::BF16 => 16,
        }
    }

    /// The name of an ONNX type code, for messages (also for unsupported ones).
    #[must_use]
    pub fn onnx_name(code: i32) -> &'static str {
        match code {
            0 => "undefined",
            1 => "float32",
            2 => "uint8",
            3 => "int8",
            4 => "uint16",
            5 => "int16",
            6 => "int32",
            7 => "int64",
            8 => "string",
            9 => "bool",
            10 => "float16",
            11 => "float64",
            12 => "uint32",
            13 => "uint64",
            14 => "complex64",
            15 => "complex128",
            16 => "bfloat16",
            17..=20 => "float8",
            21 | 22 => "4-bit integer",
            23 => "float4e2m1",
            24 => "float8e8m0",
            25 | 26 => "2-bit integer",
            _ => "unknown",
        }
    }

    /// The name, as ONNX spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        Self::onnx_name(self.onnx_code())
    }

    /// A floating-point type.
    #[must_use]
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16 | Self::F64)
    }

    /// Bytes per element in an ONNX file's raw data.
    #[must_use]
    pub fn size_bytes(self) -> usize {
        match self {
            Self::F64 | Self::I64 | Self::U64 => 8,
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F16 | Self::BF16 | Self::I16 | Self::U16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// `v` wrapped to this integer type's range (two's complement), or 0/1 for bool.
    #[must_use]
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )]
    pub fn wrap(self, v: i64) -> i64 {
        match self {
            Self::I32 => i64::from(v as i32),
            Self::I16 => i64::from(v as i16),
            Self::I8 => i64::from(v as i8),
            Self::U32 => i64::from(v as u32),
            Self::U16 => i64::from(v as u16),
            Self::U8 => i64::from(v as u8),
            Self::Bool => i64::from(v != 0),
            _ => v,
        }
    }

    /// `v` rounded to this float type's precision (f32 and f64 unchanged).
    #[must_use]
    pub fn round_float(self, v: f32) -> f32 {
        match self {
            Self::F16 => f16::from_f32(v).to_f32(),
            Self::BF16 => bf16::from_f32(v).to_f32(),
            _ => v,
        }
    }
}

/// The values of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Floating-point values.
    Float(ArrayD<f32>),
    /// Integer and bool values.
    Int(ArrayD<i64>),
}

/// A tensor: a dtype and its values, always in standard (row-major) layout, so
/// kernels may reshape and slice its memory directly.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    data: Data,
}

/// The number of elements of `shape`, checked against overflow and
/// [`MAX_ELEMENTS`].
///
/// # Errors
/// Overflow or too many elements.
pub fn checked_numel(shape: &[usize]) -> Result<usize, OpError> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| OpError(format!("the element count of shape {shape:?} overflows")))?;
    if n > MAX_ELEMENTS {
        return Err(OpError(format!(
            "shape {shape:?} has {n} elements, more than the limit of {MAX_ELEMENTS}"
        )));
    }
    Ok(n)
}

impl Tensor {
    /// A float32 tensor.
    #[must_use]
    pub fn f32(a: ArrayD<f32>) -> Self {
        Self {
            dtype: DType::F32,
            data: Data::Float(standard(a)),
        }
    }

    /// A float tensor of type `dtype` (values rounded to its precision).
    ///
    /// # Panics
    /// If `dtype` is not a float type.
    #[must_use]
    pub fn float(mut a: ArrayD<f32>, dtype: DType) -> Self {
        assert!(dtype.is_float(), "{} is not a float type", dtype.name());
        if matches!(dtype, DType::F16 | DType::BF16) {
            a.mapv_inplace(|v| dtype.round_float(v));
        }
        Self {
            dtype,
            data: Data::Float(standard(a)),
        }
    }

    /// An int64 tensor.
    #[must_use]
    pub fn i64(a: ArrayD<i64>) -> Self {
        Self {
            dtype: DType::I64,
            data: Data::Int(standard(a)),
        }
    }

    /// An integer or bool tensor of type `dtype` (values wrapped to its range).
    ///
    /// # Panics
    /// If `dtype` is a float type.
    #[must_use]
    pub fn int(mut a: ArrayD<i64>, dtype: DType) -> Self {
        assert!(!dtype.is_float(), "{} is a float type", dtype.name());
        if dtype != DType::I64 && dtype != DType::U64 {
            a.mapv_inplace(|v| dtype.wrap(v));
        }
        Self {
            dtype,
            data: Data::Int(standard(a)),
        }
    }

    /// A bool tensor.
    #[must_use]
    pub fn bool(a: ArrayD<bool>) -> Self {
        Self {
            dtype: DType::Bool,
            data: Data::Int(standard(a.mapv(i64::from))),
        }
    }

    /// A 1-D int64 tensor.
    #[must_use]
    pub fn i64_vec(v: Vec<i64>) -> Self {
        let n = v.len();
        Self::i64(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"))
    }

    /// A scalar float32 tensor.
    #[must_use]
    pub fn scalar_f32(v: f32) -> Self {
        Self::f32(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// The element type.
    #[must_use]
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The values.
    #[must_use]
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The values, owned.
    #[must_use]
    pub fn into_data(self) -> Data {
        self.data
    }

    /// The shape.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        match &self.data {
            Data::Float(a) => a.shape(),
            Data::Int(a) => a.shape(),
        }
    }

    /// The number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        match &self.data {
            Data::Float(a) => a.len(),
            Data::Int(a) => a.len(),
        }
    }

    /// True when the tensor has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The float values.
    ///
    /// # Errors
    /// An integer tensor.
    pub fn floats(&self) -> Result<&ArrayD<f32>, OpError> {
        match &self.data {
            Data::Float(a) => Ok(a),
            Data::Int(_) => Err(OpError(format!(
                "expected a float tensor, got {}",
                self.dtype.name()
            ))),
        }
    }

    /// The integer values.
    ///
    /// # Errors
    /// A float tensor.
    pub fn ints(&self) -> Result<&ArrayD<i64>, OpError> {
        match &self.data {
            Data::Int(a) => Ok(a),
            Data::Float(_) => Err(OpError(format!(
                "expected an integer tensor, got {}",
                self.dtype.name()
            ))),
        }
    }

    /// The float values, owned.
    ///
    /// # Errors
    /// An integer tensor.
    pub fn into_floats(self) -> Result<ArrayD<f32>, OpError> {
        match self.data {
            Data::Float(a) => Ok(a),
            Data::Int(_) => Err(OpError(format!(
                "expected a float tensor, got {}",
                self.dtype.name()
            ))),
        }
    }

    /// The values as `f32`, converting integers.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn to_f32(&self) -> ArrayD<f32> {
        match &self.data {
            Data::Float(a) => a.clone(),
            Data::Int(a) => a.mapv(|v| v as f32),
        }
    }

    /// The values as a flat `i64` list (integer tensors only), e.g. a shape input.
    ///
    /// # Errors
    /// A float tensor.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, OpError> {
        Ok(self.ints()?.iter().copied().collect())
    }

    /// This tensor converted to `dtype` with ONNX `Cast` semantics: floats to
    /// integers truncate toward zero (saturating at the integer type's range),
    /// anything to bool is `!= 0`, integers wrap to a narrower type, floats round
    /// to a narrower float's precision.
    #[must_use]
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    pub fn cast(&self, dtype: DType) -> Self {
        if dtype == self.dtype {
            return self.clone();
        }
        match (&self.data, dtype.is_float()) {
            (Data::Float(a), true) => Self::float(a.clone(), dtype),
            (Data::Int(a), true) => Self::float(a.mapv(|v| v as f32), dtype),
            (Data::Float(a), false) if dtype == DType::Bool => Self::bool(a.mapv(|v| v != 0.0)),
            (Data::Float(a), false) => {
                let (lo, hi) = int_range(dtype);
                Self::int(
                    a.mapv(|v| {
                        if v.is_nan() {
                            0
                        } else {
                            // f64 holds every i64 bound used here closely enough to clamp.
                            f64::from(v).trunc().clamp(lo as f64, hi as f64) as i64
                        }
                    }),
                    dtype,
                )
            }
            (Data::Int(a), false) => Self::int(a.clone(), dtype),
        }
    }
}

/// `a` in standard layout (a copy only when it is not).
fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// The range of an integer type, as `i64` (uint64's upper half does not fit).
#[must_use]
pub fn int_range(dtype: DType) -> (i64, i64) {
    match dtype {
        DType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        DType::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        DType::I8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
        DType::U32 => (0, i64::from(u32::MAX)),
        DType::U16 => (0, i64::from(u16::MAX)),
        DType::U8 => (0, i64::from(u8::MAX)),
        DType::U64 => (0, i64::MAX),
        DType::Bool => (0, 1),
        _ => (i64::MIN, i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn casts_follow_onnx() {
        let t = Tensor::f32(arr1(&[-1.7f32, 0.2, 2.9, 300.0, f32::NAN]).into_dyn());
        let i = t.cast(DType::I8);
        assert_eq!(i.to_i64_vec().unwrap(), vec![-1, 0, 2, 127, 0]);
        let u = t.cast(DType::U8);
        assert_eq!(u.to_i64_vec().unwrap(), vec![0, 0, 2, 255, 0]);
        let b = t.cast(DType::Bool);
        assert_eq!(b.to_i64_vec().unwrap(), vec![1, 1, 1, 1, 1]);
        let h = Tensor::f32(arr1(&[1.0f32 / 3.0]).into_dyn()).cast(DType::F16);
        assert_eq!(h.floats().unwrap()[0], f16::from_f32(1.0 / 3.0).to_f32());
        assert_ne!(h.floats().unwrap()[0], 1.0 / 3.0);
        let w = Tensor::i64(arr1(&[300i64, -129]).into_dyn()).cast(DType::I8);
        assert_eq!(w.to_i64_vec().unwrap(), vec![44, 127]);
    }

    #[test]
    fn tensors_are_always_standard_layout() {
        // A transposed (column-major) array is copied into row-major order, so
        // kernels may reshape any tensor's memory (Conv of a Transpose output
        // once failed on this).
        let a = ndarray::Array2::from_shape_vec((2, 3), vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0])
            .unwrap()
            .reversed_axes()
            .into_dyn();
        assert!(!a.is_standard_layout());
        let t = Tensor::f32(a);
        assert!(t.floats().unwrap().is_standard_layout());
        assert_eq!(t.floats().unwrap()[[2, 1]], 5.0);
    }

    #[test]
    fn numel_is_checked() {
        assert_eq!(checked_numel(&[2, 3, 4]).unwrap(), 24);
        assert!(checked_numel(&[usize::MAX, 2]).is_err());
        assert!(checked_numel(&[1 << 20, 1 << 20]).is_err());
    }
}
