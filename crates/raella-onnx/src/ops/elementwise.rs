//! Element-wise operators: activations and other unary maps, broadcasting
//! arithmetic and comparisons, logic, `Where`, variadic `Max/Min/Sum/Mean`,
//! `Clip`, `Cast`, and the identities (`Identity`, `Dropout` at inference).

use ndarray::{ArrayD, IxDyn, Zip};

use super::{
    Ctx, Kernel, arg, broadcast_shape, like, opt, par_in_place, par_map, same_type, zip_f32,
    zip_i64,
};
use crate::attrs::Attrs;
use crate::tensor::{DType, Data, Tensor};
use crate::{OpError, op_bail};

/// The ops of this family.
pub const OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BitCast",
    "BitShift",
    "BitwiseAnd",
    "BitwiseNot",
    "BitwiseOr",
    "BitwiseXor",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "IsInf",
    "IsNaN",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "Max",
    "Mean",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pow",
    "PRelu",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Sub",
    "Sum",
    "SwiGLU",
    "Swish",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Where",
    "Xor",
];

/// A float map applied to every element.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unary {
    Abs,
    Acos,
    Acosh,
    Asin,
    Asinh,
    Atan,
    Atanh,
    Ceil,
    Celu(f32),
    Cos,
    Cosh,
    Elu(f32),
    Erf,
    Exp,
    Floor,
    Gelu { tanh: bool },
    HardSigmoid(f32, f32),
    HardSwish,
    LeakyRelu(f32),
    Log,
    Mish,
    Neg,
    Reciprocal,
    Relu,
    Round,
    Selu(f32, f32),
    Shrink(f32, f32),
    Sigmoid,
    Sign,
    Sin,
    Sinh,
    Softplus,
    Softsign,
    Sqrt,
    Swish(f32),
    Tan,
    Tanh,
    ThresholdedRelu(f32),
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    x.max(0.0)
}

fn softplus(x: f32) -> f32 {
    // ln(1 + e^x) without overflow for large x.
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

impl Unary {
    #[allow(clippy::many_single_char_names)]
    fn apply(self, x: f32) -> f32 {
        match self {
            Self::Abs => x.abs(),
            Self::Acos => x.acos(),
            Self::Acosh => x.acosh(),
            Self::Asin => x.asin(),
            Self::Asinh => x.asinh(),
            Self::Atan => x.atan(),
            Self::Atanh => x.atanh(),
            Self::Ceil => x.ceil(),
            Self::Celu(a) => x.max(0.0) + (a * ((x / a).exp() - 1.0)).min(0.0),
            Self::Cos => x.cos(),
            Self::Cosh => x.cosh(),
            Self::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Self::Erf => libm::erff(x),
            Self::Exp => x.exp(),
            Self::Floor => x.floor(),
            Self::Gelu { tanh: false } => {
                0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
            }
            Self::Gelu { tanh: true } => {
                let c = (2.0 / std::f32::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
            }
            Self::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Self::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Self::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Self::Log => x.ln(),
            Self::Mish => x * softplus(x).tanh(),
            Self::Neg => -x,
            Self::Reciprocal => 1.0 / x,
            Self::Relu => relu(x),
            // Round half to even, as ONNX specifies.
            Self::Round => x.round_ties_even(),
            Self::Selu(a, g) => {
                if x > 0.0 {
                    g * x
                } else {
                    g * a * (x.exp() - 1.0)
                }
            }
            Self::Shrink(bias, lambd) => {
                if x < -lambd {
                    x + bias
                } else if x > lambd {
                    x - bias
                } else {
                    0.0
                }
            }
            Self::Sigmoid => {
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            Self::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x
                }
            }
            Self::Sin => x.sin(),
            Self::Sinh => x.sinh(),
            Self::Softplus => softplus(x),
            Self::Softsign => x / (1.0 + x.abs()),
            Self::Sqrt => x.sqrt(),
            Self::Swish(a) => x * Self::Sigmoid.apply(a * x),
            Self::Tan => x.tan(),
            Self::Tanh => x.tanh(),
            Self::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
        }
    }

    /// The integer version, where ONNX defines one for integer inputs.
    fn apply_int(self, x: i64) -> Option<i64> {
        match self {
            Self::Abs => Some(x.wrapping_abs()),
            Self::Neg => Some(x.wrapping_neg()),
            Self::Relu => Some(x.max(0)),
            Self::Sign => Some(x.signum()),
            Self::Ceil | Self::Floor | Self::Round => Some(x),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct UnaryKernel(Unary);

impl Kernel for UnaryKernel {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let f = self.0;
        Ok(vec![match x.data() {
            // Relu, between most CNN layers, as its own loop (it vectorises;
            // the general one calls the operator's match per element): the
            // function `Unary::Relu` applies, inlined.
            Data::Float(a) if f == Unary::Relu => Tensor::float(par_map(a, relu), x.dtype()),
            // Erf and the exact Gelu (transformers' activation): `libm::erff`'s
            // values, computed sixteen at a time without its branches.
            Data::Float(a) if f == Unary::Erf => {
                Tensor::float(par_in_place(a, super::erf::erf_in_place), x.dtype())
            }
            Data::Float(a) if f == (Unary::Gelu { tanh: false }) => {
                Tensor::float(par_in_place(a, super::erf::gelu_in_place), x.dtype())
            }
            Data::Float(a) => Tensor::float(par_map(a, |v| f.apply(v)), x.dtype()),
            Data::Int(a) => {
                if f.apply_int(0).is_none() {
                    op_bail!("{f:?} takes a float tensor, got {}", x.dtype().name());
                }
                Tensor::int(a.mapv(|v| f.apply_int(v).unwrap_or(0)), x.dtype())
            }
        }])
    }
}

/// A broadcasting binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Mod { fmod: bool },
    Max,
    Min,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    BitShift { left: bool },
    BitAnd,
    BitOr,
    BitXor,
}

impl Binary {
    fn is_compare(self) -> bool {
        matches!(
            self,
            Self::Equal | Self::Less | Self::LessOrEqual | Self::Greater | Self::GreaterOrEqual
        )
    }

    fn is_logic(self) -> bool {
        matches!(self, Self::And | Self::Or | Self::Xor)
    }

    fn float(self, x: f32, y: f32) -> f32 {
        match self {
            Self::Add => x + y,
            Self::Sub => x - y,
            Self::Mul => x * y,
            Self::Div => x / y,
            Self::Pow => x.powf(y),
            Self::Mod { fmod: true } => x % y,
            // fmod = 0 (floats from opset 28): the sign of the divisor, as numpy's mod.
            Self::Mod { fmod: false } => {
                let r = x % y;
                if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                    r + y
                } else {
                    r
                }
            }
            Self::Max => {
                if x.is_nan() || y.is_nan() {
                    f32::NAN
                } else {
                    x.max(y)
                }
            }
            Self::Min => {
                if x.is_nan() || y.is_nan() {
                    f32::NAN
                } else {
                    x.min(y)
                }
            }
            _ => unreachable!("not a float arithmetic op"),
        }
    }

    fn int(self, x: i64, y: i64) -> Result<i64, OpError> {
        Ok(match self {
            Self::Add => x.wrapping_add(y),
            Self::Sub => x.wrapping_sub(y),
            Self::Mul => x.wrapping_mul(y),
            Self::Div => {
                if y == 0 {
                    op_bail!("integer division by zero");
                }
                // ONNX integer Div truncates toward zero (as C does).
                x.wrapping_div(y)
            }
            Self::Pow => {
                if y < 0 {
                    op_bail!("integer Pow with a negative exponent {y}");
                }
                x.wrapping_pow(u32::try_from(y).unwrap_or(u32::MAX))
            }
            Self::Mod { fmod } => {
                if y == 0 {
                    op_bail!("integer Mod by zero");
                }
                if fmod {
                    x.wrapping_rem(y)
                } else {
                    // The sign of the divisor, as Python's %.
                    let r = x.wrapping_rem(y);
                    if r != 0 && ((r < 0) != (y < 0)) {
                        r + y
                    } else {
                        r
                    }
                }
            }
            Self::Max => x.max(y),
            Self::Min => x.min(y),
            Self::BitShift { .. } => unreachable!("shifted in BinaryKernel::eval"),
            Self::BitAnd => x & y,
            Self::BitOr => x | y,
            Self::BitXor => x ^ y,
            _ => unreachable!("not an integer arithmetic op"),
        })
    }

    fn compare_f(self, x: f32, y: f32) -> bool {
        match self {
            Self::Equal => x == y,
            Self::Less => x < y,
            Self::LessOrEqual => x <= y,
            Self::Greater => x > y,
            Self::GreaterOrEqual => x >= y,
            _ => unreachable!(),
        }
    }

    fn compare_i(self, x: i64, y: i64) -> bool {
        match self {
            Self::Equal => x == y,
            Self::Less => x < y,
            Self::LessOrEqual => x <= y,
            Self::Greater => x > y,
            Self::GreaterOrEqual => x >= y,
            Self::And => x != 0 && y != 0,
            Self::Or => x != 0 || y != 0,
            Self::Xor => (x != 0) != (y != 0),
            _ => unreachable!(),
        }
    }
}

#[derive(Debug)]
struct BinaryKernel(Binary);

impl Kernel for BinaryKernel {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let op = self.0;
        // Pow may raise a float to an integer power (and vice versa): the result takes the base's type.
        if op == Binary::Pow && a.dtype() != b.dtype() {
            let out = match a.data() {
                Data::Float(x) => {
                    Tensor::float(zip_f32(x, &b.to_f32(), |p, q| p.powf(q))?, a.dtype())
                }
                Data::Int(x) => {
                    let e = b.cast(DType::I64);
                    Tensor::int(
                        zip_i64(x, e.ints()?, |p, q| {
                            p.wrapping_pow(u32::try_from(q.max(0)).unwrap_or(u32::MAX))
                        })?,
                        a.dtype(),
                    )
                }
            };
            return Ok(vec![out]);
        }
        let (da, db) = same_type(a, b)?;
        if let (Binary::BitShift { left }, Data::Int(x), Data::Int(y)) = (op, da, db) {
            let d = a.dtype();
            return Ok(vec![Tensor::int(
                zip_i64(x, y, |p, q| bit_shift(p, q, left, d))?,
                d,
            )]);
        }
        Ok(vec![match (da, db) {
            (Data::Float(x), Data::Float(y)) if op.is_compare() => {
                let shape = broadcast_shape(x.shape(), y.shape())?;
                let (xv, yv) = (
                    x.broadcast(IxDyn(&shape)).expect("broadcast"),
                    y.broadcast(IxDyn(&shape)).expect("broadcast"),
                );
                Tensor::bool(
                    Zip::from(&xv)
                        .and(&yv)
                        .map_collect(|&p, &q| op.compare_f(p, q)),
                )
            }
            (Data::Float(_), Data::Float(_)) if op.is_logic() => {
                op_bail!("{op:?} takes bool inputs, got {}", a.dtype().name())
            }
            (Data::Float(x), Data::Float(y)) => {
                if matches!(
                    op,
                    Binary::BitShift { .. } | Binary::BitAnd | Binary::BitOr | Binary::BitXor
                ) {
                    op_bail!("{op:?} takes integers, got {}", a.dtype().name());
                }
                // The four arithmetic operators as loops of their own (the
                // general one calls the operator's match per value).
                let z = match op {
                    Binary::Add => zip_f32(x, y, |p, q| p + q)?,
                    Binary::Sub => zip_f32(x, y, |p, q| p - q)?,
                    Binary::Mul => zip_f32(x, y, |p, q| p * q)?,
                    Binary::Div => zip_f32(x, y, |p, q| p / q)?,
                    _ => zip_f32(x, y, |p, q| op.float(p, q))?,
                };
                Tensor::float(z, a.dtype())
            }
            (Data::Int(x), Data::Int(y)) if op.is_compare() || op.is_logic() => {
                Tensor::bool(zip_i64(x, y, |p, q| op.compare_i(p, q))?)
            }
            (Data::Int(x), Data::Int(y)) => {
                let r: ArrayD<Result<i64, OpError>> = zip_i64(x, y, |p, q| op.int(p, q))?;
                let mut vals = Vec::with_capacity(r.len());
                for v in r.iter() {
                    vals.push(v.clone()?);
                }
                Tensor::int(
                    ArrayD::from_shape_vec(r.raw_dim(), vals).expect("same shape"),
                    a.dtype(),
                )
            }
            _ => unreachable!("same_type checked"),
        }])
    }
}

/// `x << y` or `x >> y` in the integer type `d` (opset 28's definition, which
/// earlier opsets leave open): right shifts of signed types are arithmetic; a
/// shift by a negative amount or by the type's width or more leaves only the
/// sign fill (-1 for a right shift of a negative value, else 0).
#[allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)]
fn bit_shift(x: i64, y: i64, left: bool, d: DType) -> i64 {
    let bits = i64::try_from(d.size_bytes() * 8).expect("small");
    if y < 0 || y >= bits {
        return if !left && x < 0 && d != DType::U64 {
            -1
        } else {
            0
        };
    }
    let s = u32::try_from(y).expect("in range");
    if left {
        x.wrapping_shl(s)
    } else if d == DType::U64 {
        ((x as u64) >> s) as i64
    } else {
        // Signed values are stored sign-extended, unsigned ones non-negative.
        x >> s
    }
}

/// `Max`, `Min`, `Sum`, `Mean` over any number of inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variadic {
    Max,
    Min,
    Sum,
    Mean,
}

#[derive(Debug)]
struct VariadicKernel(Variadic);

impl Kernel for VariadicKernel {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let present: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
        let Some(first) = present.first() else {
            op_bail!("no inputs");
        };
        let bin = match self.0 {
            Variadic::Max => Binary::Max,
            Variadic::Min => Binary::Min,
            Variadic::Sum | Variadic::Mean => Binary::Add,
        };
        let mut acc = (*first).clone();
        for t in &present[1..] {
            acc = BinaryKernel(bin)
                .eval(&[Some(&acc), Some(t)])?
                .pop()
                .expect("one output");
        }
        if self.0 == Variadic::Mean {
            #[allow(clippy::cast_precision_loss)]
            let n = present.len() as f32;
            let f = acc.floats()?.mapv(|v| v / n);
            acc = Tensor::float(f, acc.dtype());
        }
        Ok(vec![acc])
    }
}

#[derive(Debug)]
struct PRelu {
    /// Opset < 7: a 1-D slope of one value per channel applies along axis 1.
    channel_slope: bool,
}

impl Kernel for PRelu {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, s) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let mut slope = s.floats()?.clone();
        let xs = x.shape();
        if self.channel_slope && slope.ndim() == 1 && slope.len() > 1 && xs.len() >= 2 {
            let mut shape = vec![slope.len()];
            shape.extend(std::iter::repeat_n(1, xs.len() - 2));
            slope = slope
                .into_shape_with_order(IxDyn(&shape))
                .map_err(|e| OpError(e.to_string()))?;
        }
        let y = zip_f32(x.floats()?, &slope, |v, a| if v < 0.0 { a * v } else { v })?;
        Ok(vec![Tensor::float(y, x.dtype())])
    }
}

#[derive(Debug)]
struct Where;

impl Kernel for Where {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (c, x, y) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let c = c.ints()?;
        let shape = broadcast_shape(&broadcast_shape(c.shape(), x.shape())?, y.shape())?;
        let cv = c.broadcast(IxDyn(&shape)).expect("broadcast");
        let out = match same_type(x, y)? {
            (Data::Float(a), Data::Float(b)) => {
                let (av, bv) = (
                    a.broadcast(IxDyn(&shape)).expect("broadcast"),
                    b.broadcast(IxDyn(&shape)).expect("broadcast"),
                );
                Data::Float(
                    Zip::from(&cv)
                        .and(&av)
                        .and(&bv)
                        .map_collect(|&c, &p, &q| if c != 0 { p } else { q }),
                )
            }
            (Data::Int(a), Data::Int(b)) => {
                let (av, bv) = (
                    a.broadcast(IxDyn(&shape)).expect("broadcast"),
                    b.broadcast(IxDyn(&shape)).expect("broadcast"),
                );
                Data::Int(
                    Zip::from(&cv)
                        .and(&av)
                        .and(&bv)
                        .map_collect(|&c, &p, &q| if c != 0 { p } else { q }),
                )
            }
            _ => unreachable!(),
        };
        Ok(vec![like(x.dtype(), out)])
    }
}

#[derive(Debug)]
struct Not;

impl Kernel for Not {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        Ok(vec![Tensor::bool(x.ints()?.mapv(|v| v == 0))])
    }
}

/// `BitCast` (opset 26): the same bits as another type of the same width.
/// float64 sources are held as f32, so their bits are not available.
#[derive(Debug)]
struct BitCast(DType);

impl BitCast {
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    fn bits(d: DType, f: f32, i: i64) -> u64 {
        match d {
            DType::F32 => u64::from(f.to_bits()),
            DType::F16 => u64::from(half::f16::from_f32(f).to_bits()),
            DType::BF16 => u64::from(half::bf16::from_f32(f).to_bits()),
            _ => (i as u64) & (u64::MAX >> (64 - 8 * d.size_bytes())),
        }
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_precision_loss
    )]
    fn from_bits(d: DType, b: u64) -> (f32, i64) {
        match d {
            DType::F32 => (f32::from_bits(b as u32), 0),
            DType::F16 => (half::f16::from_bits(b as u16).to_f32(), 0),
            DType::BF16 => (half::bf16::from_bits(b as u16).to_f32(), 0),
            DType::F64 => (f64::from_bits(b) as f32, 0),
            // Sign-extended for the signed types by the tensor's wrap.
            _ => (0.0, b as i64),
        }
    }
}

impl Kernel for BitCast {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let (from, to) = (x.dtype(), self.0);
        if from.size_bytes() != to.size_bytes() {
            op_bail!(
                "BitCast from {} to {}: widths differ",
                from.name(),
                to.name()
            );
        }
        if from == DType::F64 {
            op_bail!("BitCast from float64 is not supported (held as float32)");
        }
        let bits: Vec<u64> = match x.data() {
            Data::Float(a) => a.iter().map(|&v| Self::bits(from, v, 0)).collect(),
            Data::Int(a) => a.iter().map(|&v| Self::bits(from, 0.0, v)).collect(),
        };
        let shape = IxDyn(x.shape());
        Ok(vec![if to.is_float() {
            let v = bits.iter().map(|&b| Self::from_bits(to, b).0).collect();
            Tensor::float(ArrayD::from_shape_vec(shape, v).expect("shape"), to)
        } else {
            let v = bits.iter().map(|&b| Self::from_bits(to, b).1).collect();
            Tensor::int(ArrayD::from_shape_vec(shape, v).expect("shape"), to)
        }])
    }
}

/// `SwiGLU` (opset 28): `a * sigmoid(alpha * a) * b`, shapes equal.
#[derive(Debug)]
struct SwiGlu(f32);

impl Kernel for SwiGlu {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (arg(inputs, 0)?, arg(inputs, 1)?);
        if a.shape() != b.shape() {
            op_bail!(
                "A {:?} and B {:?} must have the same shape",
                a.shape(),
                b.shape()
            );
        }
        let alpha = self.0;
        let y = zip_f32(a.floats()?, b.floats()?, |x, g| {
            x * Unary::Sigmoid.apply(alpha * x) * g
        })?;
        Ok(vec![Tensor::float(y, a.dtype())])
    }
}

#[derive(Debug)]
struct BitwiseNot;

impl Kernel for BitwiseNot {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        if x.dtype() == DType::Bool {
            op_bail!("BitwiseNot takes integers, got bool");
        }
        Ok(vec![Tensor::int(x.ints()?.mapv(|v| !v), x.dtype())])
    }
}

#[derive(Debug)]
struct IsNan;

impl Kernel for IsNan {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![Tensor::bool(
            arg(inputs, 0)?.floats()?.mapv(f32::is_nan),
        )])
    }
}

#[derive(Debug)]
struct IsInf {
    neg: bool,
    pos: bool,
}

impl Kernel for IsInf {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (n, p) = (self.neg, self.pos);
        Ok(vec![Tensor::bool(arg(inputs, 0)?.floats()?.mapv(|v| {
            (p && v == f32::INFINITY) || (n && v == f32::NEG_INFINITY)
        }))])
    }
}

/// `Clip`: bounds from attributes (opset < 11) or optional inputs.
#[derive(Debug)]
struct Clip {
    min: Option<f32>,
    max: Option<f32>,
}

impl Kernel for Clip {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?;
        let scalar = |i: usize| -> Result<Option<&Tensor>, OpError> {
            let t = opt(inputs, i);
            if let Some(t) = t
                && t.len() != 1
            {
                op_bail!("bound {i} must be a scalar, has shape {:?}", t.shape());
            }
            Ok(t)
        };
        let (lo, hi) = (scalar(1)?, scalar(2)?);
        Ok(vec![match x.data() {
            Data::Float(a) => {
                let lo = lo
                    .map(|t| {
                        t.to_f32()
                            .iter()
                            .copied()
                            .next()
                            .unwrap_or(f32::NEG_INFINITY)
                    })
                    .or(self.min);
                let hi = hi
                    .map(|t| t.to_f32().iter().copied().next().unwrap_or(f32::INFINITY))
                    .or(self.max);
                let (lo, hi) = (lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY));
                Tensor::float(
                    a.mapv(|v| if v.is_nan() { v } else { v.max(lo).min(hi) }),
                    x.dtype(),
                )
            }
            Data::Int(a) => {
                let get = |t: Option<&Tensor>, d: i64| -> Result<i64, OpError> {
                    Ok(match t {
                        Some(t) => t.ints()?.iter().copied().next().unwrap_or(d),
                        None => d,
                    })
                };
                let (lo, hi) = (get(lo, i64::MIN)?, get(hi, i64::MAX)?);
                Tensor::int(a.mapv(|v| v.max(lo).min(hi)), x.dtype())
            }
        }])
    }
}

#[derive(Debug)]
struct Cast(DType);

impl Kernel for Cast {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![arg(inputs, 0)?.cast(self.0)])
    }
}

#[derive(Debug)]
struct CastLike;

impl Kernel for CastLike {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![arg(inputs, 0)?.cast(arg(inputs, 1)?.dtype())])
    }
}

/// `Identity`, and `Dropout` at inference (its mask output all true).
#[derive(Debug)]
struct Identity {
    dropout: bool,
}

impl Kernel for Identity {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = arg(inputs, 0)?.clone();
        if self.dropout {
            // Opset 12+: `ratio` and `training_mode` inputs; training drops at random.
            let training = opt(inputs, 2)
                .map(|t| t.to_f32().iter().any(|&v| v != 0.0))
                .unwrap_or(false);
            let ratio =
                opt(inputs, 1).map_or(0.0, |t| t.to_f32().iter().copied().next().unwrap_or(0.0));
            if training && ratio != 0.0 {
                op_bail!("Dropout in training mode (random) is not supported");
            }
            let mask = Tensor::bool(ArrayD::from_elem(IxDyn(x.shape()), true));
            return Ok(vec![x, mask]);
        }
        Ok(vec![x])
    }
}

/// An opset < 7 binary op with `broadcast = 1` and `axis`: B's dimensions are
/// aligned with A's from `axis` on (instead of at the end, as numpy does).
#[derive(Debug)]
struct LegacyBroadcast {
    inner: Box<dyn Kernel>,
    axis: i64,
}

impl Kernel for LegacyBroadcast {
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (arg(inputs, 0)?, arg(inputs, 1)?);
        let (ra, rb) = (a.shape().len(), b.shape().len());
        let ax = super::axis(self.axis, ra.max(1))?;
        if ax + rb > ra {
            op_bail!(
                "B of shape {:?} does not fit A of shape {:?} from axis {ax}",
                b.shape(),
                a.shape()
            );
        }
        let mut shape = b.shape().to_vec();
        shape.extend(std::iter::repeat_n(1, ra - ax - rb));
        let b2 = super::reshape(b, &shape)?;
        self.inner.eval(&[Some(a), Some(&b2)])
    }
}

/// A type's name in `TensorProto.DataType` (Cast's `to` before opset 6).
fn legacy_type_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "FLOAT",
        DType::U8 => "UINT8",
        DType::I8 => "INT8",
        DType::U16 => "UINT16",
        DType::I16 => "INT16",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::Bool => "BOOL",
        DType::F16 => "FLOAT16",
        DType::F64 => "DOUBLE",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::BF16 => "BFLOAT16",
    }
}

/// Builds a kernel of this family.
///
/// # Errors
/// Bad attributes.
#[allow(clippy::too_many_lines)]
pub fn build(op: &str, a: &Attrs<'_>, ctx: Ctx) -> Result<Option<Box<dyn Kernel>>, OpError> {
    let opset = ctx.opset;
    let u = |x: Unary| -> Result<Option<Box<dyn Kernel>>, OpError> {
        Ok(Some(Box::new(UnaryKernel(x))))
    };
    let b = |x: Binary| -> Result<Option<Box<dyn Kernel>>, OpError> {
        Ok(Some(Box::new(BinaryKernel(x))))
    };
    let v = |x: Variadic| -> Result<Option<Box<dyn Kernel>>, OpError> {
        Ok(Some(Box::new(VariadicKernel(x))))
    };
    // Before opset 7 these broadcast only with `broadcast = 1`, B aligned at `axis`.
    if opset < 7
        && matches!(
            op,
            "Add"
                | "Sub"
                | "Mul"
                | "Div"
                | "Pow"
                | "And"
                | "Or"
                | "Xor"
                | "Equal"
                | "Greater"
                | "Less"
        )
        && a.int_or("broadcast", 0)? != 0
        && let Some(axis) = a.int("axis")?
        && let Some(inner) = build(op, &Attrs::new(&[]), Ctx { opset: 7, ..ctx })?
    {
        return Ok(Some(Box::new(LegacyBroadcast { inner, axis })));
    }
    match op {
        "Abs" => u(Unary::Abs),
        "Acos" => u(Unary::Acos),
        "Acosh" => u(Unary::Acosh),
        "Asin" => u(Unary::Asin),
        "Asinh" => u(Unary::Asinh),
        "Atan" => u(Unary::Atan),
        "Atanh" => u(Unary::Atanh),
        "Ceil" => u(Unary::Ceil),
        "Celu" => u(Unary::Celu(a.float_or("alpha", 1.0)?)),
        "Cos" => u(Unary::Cos),
        "Cosh" => u(Unary::Cosh),
        "Elu" => u(Unary::Elu(a.float_or("alpha", 1.0)?)),
        "Erf" => u(Unary::Erf),
        "Exp" => u(Unary::Exp),
        "Floor" => u(Unary::Floor),
        "Gelu" => match a.string_or("approximate", "none")?.as_str() {
            "none" => u(Unary::Gelu { tanh: false }),
            "tanh" => u(Unary::Gelu { tanh: true }),
            other => {
                op_bail!("attribute `approximate` = \"{other}\": expected \"none\" or \"tanh\"")
            }
        },
        "HardSigmoid" => u(Unary::HardSigmoid(
            a.float_or("alpha", 0.2)?,
            a.float_or("beta", 0.5)?,
        )),
        "HardSwish" => u(Unary::HardSwish),
        "LeakyRelu" => u(Unary::LeakyRelu(a.float_or("alpha", 0.01)?)),
        "Log" => u(Unary::Log),
        "Mish" => u(Unary::Mish),
        "Neg" => u(Unary::Neg),
        "Reciprocal" => u(Unary::Reciprocal),
        "Relu" => u(Unary::Relu),
        "Round" => u(Unary::Round),
        "Selu" => u(Unary::Selu(
            a.float_or("alpha", 1.673_263_2)?,
            a.float_or("gamma", 1.050_701)?,
        )),
        "Shrink" => u(Unary::Shrink(
            a.float_or("bias", 0.0)?,
            a.float_or("lambd", 0.5)?,
        )),
        "Sigmoid" => u(Unary::Sigmoid),
        "Sign" => u(Unary::Sign),
        "Sin" => u(Unary::Sin),
        "Sinh" => u(Unary::Sinh),
        "Softplus" => u(Unary::Softplus),
        "Softsign" => u(Unary::Softsign),
        "Sqrt" => u(Unary::Sqrt),
        "Swish" => u(Unary::Swish(a.float_or("alpha", 1.0)?)),
        "SwiGLU" => Ok(Some(Box::new(SwiGlu(a.float_or("alpha", 1.0)?)))),
        "Tan" => u(Unary::Tan),
        "Tanh" => u(Unary::Tanh),
        "ThresholdedRelu" => u(Unary::ThresholdedRelu(a.float_or("alpha", 1.0)?)),
        "Add" => b(Binary::Add),
        "Sub" => b(Binary::Sub),
        "Mul" => b(Binary::Mul),
        "Div" => b(Binary::Div),
        "Pow" => b(Binary::Pow),
        "Mod" => b(Binary::Mod {
            fmod: a.int_or("fmod", 0)? != 0,
        }),
        "Equal" => b(Binary::Equal),
        "Less" => b(Binary::Less),
        "LessOrEqual" => b(Binary::LessOrEqual),
        "Greater" => b(Binary::Greater),
        "GreaterOrEqual" => b(Binary::GreaterOrEqual),
        "And" => b(Binary::And),
        "Or" => b(Binary::Or),
        "Xor" => b(Binary::Xor),
        "BitShift" => match a.string("direction")?.as_deref() {
            Some("LEFT") => b(Binary::BitShift { left: true }),
            Some("RIGHT") => b(Binary::BitShift { left: false }),
            other => op_bail!("attribute `direction` = {other:?}: expected \"LEFT\" or \"RIGHT\""),
        },
        "BitwiseAnd" => b(Binary::BitAnd),
        "BitwiseOr" => b(Binary::BitOr),
        "BitwiseXor" => b(Binary::BitXor),
        "BitwiseNot" => Ok(Some(Box::new(BitwiseNot))),
        "Max" => v(Variadic::Max),
        "Min" => v(Variadic::Min),
        "Sum" => v(Variadic::Sum),
        "Mean" => v(Variadic::Mean),
        "PRelu" => Ok(Some(Box::new(PRelu {
            channel_slope: opset < 7,
        }))),
        "Where" => Ok(Some(Box::new(Where))),
        "Not" => Ok(Some(Box::new(Not))),
        "IsNaN" => Ok(Some(Box::new(IsNan))),
        "IsInf" => Ok(Some(Box::new(IsInf {
            neg: a.int_or("detect_negative", 1)? != 0,
            pos: a.int_or("detect_positive", 1)? != 0,
        }))),
        "Clip" => {
            let (min, max) = if opset < 11 {
                (a.float("min")?, a.float("max")?)
            } else {
                if let Some(n) = ["min", "max"].into_iter().find(|n| a.has(n)) {
                    op_bail!(
                        "attribute `{n}`: from opset 11 Clip takes its bounds as inputs, not attributes"
                    );
                }
                (None, None)
            };
            if let Some(v) = min.iter().chain(max.iter()).find(|v| v.is_nan()) {
                op_bail!("a Clip bound is {v} (NaN)");
            }
            Ok(Some(Box::new(Clip { min, max })))
        }
        "Cast" => {
            // Before opset 6 `to` is the type's name.
            let to = if opset < 6
                && let Some(name) = a.string("to").ok().flatten()
            {
                (1..=16)
                    .find(|&c| {
                        let n = DType::from_onnx(c).map(legacy_type_name);
                        n == Some(name.as_str())
                    })
                    .map_or(-1, i64::from)
            } else {
                a.int("to")?
                    .ok_or_else(|| OpError("Cast needs the attribute `to`".into()))?
            };
            let code = i32::try_from(to).unwrap_or(-1);
            let d = DType::from_onnx(code).ok_or_else(|| {
                OpError(format!(
                    "Cast to {} (type {to}) is not supported",
                    DType::onnx_name(code)
                ))
            })?;
            Ok(Some(Box::new(Cast(d))))
        }
        "CastLike" => Ok(Some(Box::new(CastLike))),
        "BitCast" => {
            let to = a
                .int("to")?
                .ok_or_else(|| OpError("BitCast needs the attribute `to`".into()))?;
            let code = i32::try_from(to).unwrap_or(-1);
            let d = DType::from_onnx(code).ok_or_else(|| {
                OpError(format!(
                    "BitCast to {} (type {to}) is not supported",
                    DType::onnx_name(code)
                ))
            })?;
            Ok(Some(Box::new(BitCast(d))))
        }
        "Identity" => Ok(Some(Box::new(Identity { dropout: false }))),
        "Dropout" => Ok(Some(Box::new(Identity { dropout: true }))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AttributeProto;
    use ndarray::{ArrayD, IxDyn, arr1};

    fn kernel(op: &str, attrs: &[AttributeProto], opset: i64) -> Box<dyn Kernel> {
        build(op, &Attrs::new(attrs), Ctx { opset, outputs: 1 })
            .unwrap()
            .unwrap()
    }

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            i: Some(v),
            r#type: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn bit_shifts_follow_opset_28() {
        // Arithmetic right shifts; out-of-range amounts leave the sign fill.
        assert_eq!(bit_shift(-8, 1, false, DType::I8), -4);
        assert_eq!(bit_shift(-8, -1, false, DType::I8), -1);
        assert_eq!(bit_shift(8, 9, false, DType::I8), 0);
        assert_eq!(bit_shift(-8, 8, true, DType::I8), 0);
        assert_eq!(bit_shift(1, 7, true, DType::I8), 128); // wrapped to -128 by the tensor
        assert_eq!(bit_shift(-1, 63, false, DType::U64), 1);
    }

    #[test]
    fn legacy_broadcast_aligns_at_axis() {
        // Opset 6: Add(A [2, 3, 2], B [3], broadcast=1, axis=1) adds B along axis 1.
        let k = kernel("Add", &[int_attr("broadcast", 1), int_attr("axis", 1)], 6);
        let a = Tensor::f32(ArrayD::zeros(IxDyn(&[2, 3, 2])));
        let b = Tensor::f32(arr1(&[1.0f32, 2.0, 3.0]).into_dyn());
        let y = k.eval(&[Some(&a), Some(&b)]).unwrap().remove(0);
        let v = y.floats().unwrap();
        assert_eq!(v[[1, 2, 1]], 3.0);
        assert_eq!(v[[0, 0, 0]], 1.0);
    }

    #[test]
    fn float_mod_takes_the_divisors_sign() {
        let k = kernel("Mod", &[], 28);
        let a = Tensor::f32(arr1(&[-4.3f32, 4.3]).into_dyn());
        let b = Tensor::f32(arr1(&[2.0f32, -2.0]).into_dyn());
        let y = k.eval(&[Some(&a), Some(&b)]).unwrap().remove(0);
        let v: Vec<f32> = y.floats().unwrap().iter().copied().collect();
        assert!(
            (v[0] - 1.7).abs() < 1e-5 && (v[1] + 1.7).abs() < 1e-5,
            "{v:?}"
        );
    }

    #[test]
    fn old_prelu_slopes_are_per_channel() {
        let k = kernel("PRelu", &[], 6);
        let x = Tensor::f32(ArrayD::from_elem(IxDyn(&[1, 2, 3]), -1.0));
        let s = Tensor::f32(arr1(&[0.5f32, 0.25]).into_dyn());
        let y = k.eval(&[Some(&x), Some(&s)]).unwrap().remove(0);
        assert_eq!(y.floats().unwrap()[[0, 1, 2]], -0.25);
    }
}
