//! Errors raised while compiling weights onto crossbars. Each names the
//! offending field and value; after compilation nothing on the hot path fails.

use raella_device::{CellKind, DeviceError};
use thiserror::Error;

/// Why a weight matrix or a compile configuration was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CompileError {
    /// A NaN or infinite weight.
    #[error("weight at (output {row}, input {col}) is not finite: {value}")]
    NonFiniteWeight {
        /// Output channel.
        row: usize,
        /// Input index.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A matrix with no outputs or no inputs.
    #[error("weight matrix must have at least one output and one input, got {outputs} x {inputs}")]
    EmptyMatrix {
        /// Outputs.
        outputs: usize,
        /// Inputs.
        inputs: usize,
    },
    /// A slicing string that does not parse.
    #[error(
        "slicing `{text}` is malformed: {reason} (expected e.g. `4-2-2`, `4-4`, `2x4` or `1x8`)"
    )]
    BadSlicing {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Slice widths that do not add up to the value's bits.
    #[error("slicing `{slicing}` has widths summing to {sum}, but the values have {expected} bits")]
    SliceWidthsSum {
        /// The slicing.
        slicing: String,
        /// Sum of the widths.
        sum: u32,
        /// Bits expected.
        expected: u32,
    },
    /// A slice wider than one device can hold.
    #[error(
        "slicing `{slicing}` has a {width}-bit slice, wider than a {bits_per_device}-bit device"
    )]
    SliceWiderThanDevice {
        /// The slicing.
        slicing: String,
        /// The widest slice.
        width: u32,
        /// Bits per device.
        bits_per_device: u32,
    },
    /// An encoding used with the wrong cell technology.
    #[error("encoding {encoding} needs {needs} cells, but the crossbar has {cell} cells")]
    EncodingCell {
        /// Encoding name.
        encoding: String,
        /// Cell kind the encoding needs.
        needs: CellKind,
        /// Cell kind of the crossbar.
        cell: CellKind,
    },
    /// The `search` center rule was asked for without calibration inputs.
    #[error("center rule `search` needs calibration inputs")]
    SearchNeedsCalibration,
    /// Calibration vectors of the wrong length.
    #[error("calibration inputs have {got} values per vector, the layer has {expected} inputs")]
    CalibrationShape {
        /// Layer inputs.
        expected: usize,
        /// Values per calibration vector.
        got: usize,
    },
    /// An adaptive-slicing configuration without candidates or with a bad budget.
    #[error("adaptive slicing: {0}")]
    Adaptive(String),
    /// An impossible device configuration.
    #[error(transparent)]
    Device(#[from] DeviceError),
}
