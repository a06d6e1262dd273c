//! Errors at the runtime's boundary (input shapes, configurations). Once a
//! layer runs, saturation, speculation misses and stuck cells are counted.

use raella_compiler::CompileError;
use raella_device::DeviceError;
use thiserror::Error;

/// Why a run was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RuntimeError {
    /// Input vectors whose length is not the layer's input count.
    #[error("input vectors have {got} values, the layer has {expected} inputs")]
    InputShape {
        /// Layer inputs.
        expected: usize,
        /// Values per vector given.
        got: usize,
    },
    /// Speculative input slices wider than the 4-bit pulse-train DACs.
    #[error(
        "input slicing `{slicing}` has a {width}-bit slice; the DACs apply at most 4 bits per cycle"
    )]
    InputSliceTooWide {
        /// The slicing.
        slicing: String,
        /// The widest slice.
        width: u32,
    },
    /// A compile-time problem (during adaptive slicing).
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A device-model problem.
    #[error(transparent)]
    Device(#[from] DeviceError),
}
