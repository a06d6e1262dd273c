//! The analog device model of a ReRAM processing-in-memory crossbar.
//!
//! This crate knows cells, column sums, converters and device non-idealities;
//! it knows nothing of DNNs, weight encodings, slicing or energy.
//!
//! * [`CrossbarGeometry`] / [`CellKind`]: `R x C` cells, 1T1R or 2T2R, 1-4 bits per device.
//! * [`Crossbar`]: integer target levels; [`ProgrammedCrossbar`]: the programmed
//!   conductances inputs are applied to (column sums in units of one pulse x one level).
//! * [`Adc`]: resolution, signed or unsigned codes, clamping and saturation flags.
//! * [`DeviceNoise`], [`ColumnNoise`]: programming variation, stuck cells and
//!   read noise (`sigma = E * sqrt(N+ + N-)`, and per device); programming draws
//!   from seeded [`stream_rng`] streams, read noise from [`normal`]'s
//!   counter-based streams. [`realism`]: finite OFF state, programming tables,
//!   drift, IR drop settings, ADC instances; [`ir_drop`]: the IR-drop models.
//! * [`first_order`], [`exact_effective`]: IR drop on the row and column wires as
//!   effective conductances, to first order in the wire resistance or exactly.
//! * [`Activity`]: conversions, cycles, row drives and cell reads for the cost model.
//! * [`Kernel`]: the implementation of exact integer column sums (AVX-512 VNNI,
//!   AVX2 or portable), chosen at run time or forced by [`KERNEL_ENV`].
//!
//! ```
//! use raella_device::{Adc, CellKind, Crossbar, CrossbarGeometry, stream_rng};
//!
//! // A 2T2R crossbar with 2-bit devices; two rows and one column used.
//! let geometry = CrossbarGeometry::new(512, 512, CellKind::TwoT2R, 2)?;
//! let xbar = Crossbar::new(geometry, 2, 1, vec![3, 0], Some(vec![0, 2]))?;
//! // 4 pulses on row 0, 5 on row 1: 4*3 - 5*2 = 2.
//! assert_eq!(xbar.column_sums_exact(&[4, 5]), vec![2]);
//!
//! let programmed = xbar.program(None, &mut stream_rng(42, &[]));
//! assert_eq!(programmed.diff_column(0), &[3.0, -2.0]);
//!
//! let adc = Adc::new(7, true)?; // codes -64..=63
//! let c = adc.convert(100.0);
//! assert_eq!((c.code, c.saturated, c.in_range), (63, true, false));
//! # Ok::<(), raella_device::DeviceError>(())
//! ```

mod activity;
mod adc;
mod blocks;
mod crossbar;
mod error;
mod geometry;
pub mod ir_drop;
mod kernel;
mod noise;
pub mod normal;
mod packed;
pub mod realism;

pub use activity::Activity;
pub use adc::{Adc, Conversion};
pub use blocks::{IntConversion, IntCounts, bit_planes, convert_int_sums, convert_noisy_sums};
pub use crossbar::{BitRows, Crossbar, ExactBits, ProgrammedCrossbar};
pub use error::DeviceError;
pub use geometry::{CellKind, CrossbarGeometry};
pub use ir_drop::{Effective, exact_effective, first_order, max_correction, resummed};
pub use kernel::{KERNEL_ENV, Kernel};
pub use noise::{ColumnNoise, DeviceNoise, Xoshiro256PlusPlus, stream_rng};
pub use packed::ExactMatrix;
pub use realism::{
    AdcInstance, AdcVariation, DRIFT_T0_SECONDS, Drift, DriftCompensation, IrDropModel,
    ProgrammingTable,
};
